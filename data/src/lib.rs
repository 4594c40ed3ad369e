//! `gadms-data`: data-side pieces of gadms.
//!
//! * [`tokenizer`]: the CLIP BPE tokenizer ([`ClipTokenizer`]) with open_clip-identical ids and
//!   IRRA's `<|mask|>` = 49405 convention; captions become `[u32; 77]` ([`TokenIds`]).
//! * [`text_clean`]: the caption clean-up that precedes BPE (ports of `ftfy.fix_text`,
//!   `html.unescape` and CLIP's whitespace clean-up).

#![warn(missing_docs)]

pub mod augment;
pub mod image_prep;
pub mod loader;
pub mod manifest;
pub mod masking;
pub mod pack;
pub mod scores;
pub mod shard;
pub mod synth;
pub mod text_clean;
pub mod tokenizer;

pub use tokenizer::{
    CONTEXT_LEN, ClipTokenizer, EOT, MASK, PAD, SOT, TokenIds, TokenizerError, VOCAB_SIZE,
    tokenizer_hash,
};
