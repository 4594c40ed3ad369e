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

/// A temporary sibling of `path` for write-then-rename, unique to this process and call
/// (`NAME.tmp.PID.N`): two writers of one file (two runs or packs into one directory) never
/// share a temporary, so each rename puts a whole file in place.
pub fn temp_path(path: &std::path::Path) -> std::path::PathBuf {
    static CALLS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let mut name = path.as_os_str().to_owned();
    name.push(format!(".tmp.{}.{n}", std::process::id()));
    std::path::PathBuf::from(name)
}

pub use tokenizer::{
    CONTEXT_LEN, ClipTokenizer, EOT, MASK, PAD, SOT, TokenIds, TokenizerError, VOCAB_SIZE,
    tokenizer_hash,
};
