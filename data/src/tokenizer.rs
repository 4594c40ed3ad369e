//! CLIP byte-level BPE tokenizer with the IRRA/GA-DMS `<|mask|>` convention.
//!
//! References (Python): open_clip `open_clip/tokenizer.py` (`SimpleTokenizer`, `tokenize`,
//! open-clip-torch 3.3.0) and IRRA `utils/simple_tokenizer.py` (+ `datasets/bases.py tokenize`),
//! which GA-DMS inherits.
//!
//! Pipeline of [`ClipTokenizer::encode`]:
//! 1. clean-up ([`crate::text_clean::clean_caption`]): ftfy `fix_text`, `html.unescape` twice,
//!    strip, whitespace collapse, lower-case;
//! 2. split with open_clip's regex
//!    `<start_of_text>|<end_of_text>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+`
//!    (case-insensitive);
//! 3. map each piece's UTF-8 bytes to CLIP's printable byte alphabet (`bytes_to_unicode`) and run
//!    byte-level BPE (the merges of `bpe_simple_vocab_16e6.txt.gz`, `</w>` marking a word end);
//! 4. `[SOT] + ids + [EOT]`, zero-padded to 77; when longer, cut to 77 and the last id forced to
//!    EOT (open_clip `tokenize`: `tokens = tokens[:context_length]; tokens[-1] = eot_token`).
//!
//! # Vocabulary (49,408 ids)
//! `0..256` the 256 byte characters (in `bytes_to_unicode` order, so id 0 is `!`), `256..512` the
//! same with `</w>`, `512..49405` the merge results in merge order, [`MASK`] = 49405 `<|mask|>`,
//! [`SOT`] = 49406, [`EOT`] = 49407.
//!
//! # Deviations from open_clip (both deliberate, both rare)
//! * **The dropped merge.** IRRA builds the vocabulary, then `vocab.pop(-1)` removes the last
//!   merge result `jekyll</w>` (merge `jeky` + `ll</w>`, CLIP id 49405) and appends `<|mask|>`
//!   there. It keeps the merge in `bpe_ranks`, so in IRRA the word "jekyll" raises `KeyError`;
//!   open_clip encodes it as 49405, which under this vocabulary would be the mask token. Here the
//!   merge is removed as well ([`DROPPED_MERGE`]), so "jekyll" becomes `jeky` `ll</w>`
//!   (`[49406, 43893, 865, 49407]` instead of open_clip's `[49406, 49405, 49407]`) and text
//!   never produces id 49405. No other word changes: it was the lowest-priority merge and no
//!   later merge uses its result.
//! * None otherwise: the ids equal open_clip's, including its handling of special strings. The
//!   literal strings `<start_of_text>` / `<end_of_text>` in a caption become SOT / EOT ids (as in
//!   open_clip; so such a caption has an EOT before the final one and [`ClipTokenizer::eos_index`]
//!   finds that first one), while IRRA/OpenAI's `<|startoftext|>`, `<|endoftext|>` and
//!   `<|mask|>` are ordinary text for open_clip and here (`<|`, `startoftext`, `|>`), so captions
//!   cannot inject a mask token.

use std::io::Read;

use regex::Regex;
use thiserror::Error;
use tokenizers::Model;
use tokenizers::models::bpe::{BPE, Vocab};

use crate::text_clean::clean_caption;

/// Sequence length of CLIP's text tower: `[SOT] + 75 word pieces + [EOT]`.
pub const CONTEXT_LEN: usize = 77;
/// Vocabulary size (rows of the token embedding): 256 + 256 + 48,893 merges + 3 specials.
pub const VOCAB_SIZE: usize = 49408;
/// Start-of-text id (`<|startoftext|>` in IRRA, `<start_of_text>` in open_clip).
pub const SOT: u32 = 49406;
/// End-of-text id (`<|endoftext|>` / `<end_of_text>`); it is the largest id, so the EOS position
/// of a sequence is its argmax (see [`ClipTokenizer::eos_index`]).
pub const EOT: u32 = 49407;
/// IRRA's `<|mask|>` id, used by masked-language-model corruption; never produced by encoding text.
pub const MASK: u32 = 49405;
/// Padding id after EOT. It is also the id of the byte token `!`, so only zeros after the EOT
/// are padding.
pub const PAD: u32 = 0;
/// Number of BPE merges used from the merges file: CLIP's 48,894 minus the dropped last one.
pub const NUM_MERGES: usize = 48_893;
/// The last CLIP merge, dropped to make room for `<|mask|>` (IRRA `vocab.pop(-1)`); its result
/// `jekyll</w>` had id 49405 in CLIP.
pub const DROPPED_MERGE: (&str, &str) = ("jeky", "ll</w>");

/// One encoded caption: `[SOT, pieces.., EOT, 0, 0, ..]`, exactly [`CONTEXT_LEN`] ids.
pub type TokenIds = [u32; CONTEXT_LEN];

/// The CLIP merges file `bpe_simple_vocab_16e6.txt.gz` (MIT, Copyright (c) 2021 OpenAI; see
/// `assets/LICENSE-CLIP-BPE.txt`), embedded so the binary needs no data files.
static BPE_GZ: &[u8] = include_bytes!("../../assets/bpe_simple_vocab_16e6.txt.gz");

/// open_clip's pre-tokenizer regex. The `(?i)` applies only where case matters after
/// lower-casing; U+0345 (which folds to a letter) is excluded from the last class because
/// Python's `regex` with `IGNORECASE` matches it with no alternative, so it is dropped there.
const SPLIT_PATTERN: &str = r"(?i:<start_of_text>|<end_of_text>|'s|'t|'re|'ve|'m|'ll|'d)|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}\x{345}]+";

/// Everything that can go wrong while building the tokenizer or encoding a caption.
#[derive(Debug, Error)]
pub enum TokenizerError {
    /// The embedded merges file could not be read (corrupt build).
    #[error(
        "embedded CLIP BPE vocabulary (assets/bpe_simple_vocab_16e6.txt.gz) is unreadable: {0}"
    )]
    Vocab(String),
    /// The `tokenizers` BPE model or the split regex could not be built.
    #[error("could not build the CLIP BPE model: {0}")]
    Build(String),
    /// The caption has no word pieces after clean-up (empty, whitespace or control characters
    /// only). Training on `[SOT, EOT]` would be meaningless, so this is an error.
    #[error(
        "caption is empty after clean-up (ftfy, HTML unescape, whitespace collapse): {input:?}; \
         refusing to encode an empty caption"
    )]
    EmptyCaption {
        /// The caption as given.
        input: String,
    },
    /// Only from [`ClipTokenizer::encode_strict`]: the caption does not fit in 77 ids.
    #[error(
        "caption has {count} tokens, more than {CONTEXT_LEN} (75 word pieces + SOT/EOT); \
         encode() would truncate it: {input:?}"
    )]
    TooLong {
        /// Length of the untruncated `[SOT] + pieces + [EOT]` sequence.
        count: usize,
        /// The caption as given.
        input: String,
    },
    /// The BPE model failed on a piece (should not happen: every byte is in the vocabulary).
    #[error("BPE failed on piece {piece:?}: {message}")]
    Bpe {
        /// The byte-mapped piece given to the BPE model.
        piece: String,
        /// The model's message.
        message: String,
    },
    /// A caption of a batch failed; `index` is its position in the batch.
    #[error("caption {index} of the batch: {source}")]
    Batch {
        /// Position of the failing caption in the slice given to `encode_batch`.
        index: usize,
        /// What went wrong with it.
        #[source]
        source: Box<TokenizerError>,
    },
}

/// CLIP's `bytes_to_unicode`: byte -> printable stand-in character. Returns the table indexed by
/// byte, and the bytes in vocabulary order (the dict insertion order, which defines ids 0..256).
fn bytes_to_unicode() -> ([char; 256], [u8; 256]) {
    let mut printable: Vec<u8> = (b'!'..=b'~').collect();
    printable.extend(0xA1u8..=0xAC);
    printable.extend(0xAEu8..=0xFF);
    let mut table = ['\0'; 256];
    for &b in &printable {
        table[b as usize] = b as char;
    }
    let mut order = printable.clone();
    let mut n = 0u32;
    for b in 0..=255u8 {
        if !printable.contains(&b) {
            table[b as usize] = char::from_u32(256 + n).expect("valid char");
            order.push(b);
            n += 1;
        }
    }
    (table, order.try_into().expect("256 bytes"))
}

/// CLIP BPE tokenizer (open_clip-compatible ids, IRRA vocabulary with `<|mask|>` = 49405).
///
/// Build it once ([`ClipTokenizer::new`], tens of milliseconds) and share it; it is `Send + Sync`
/// and all methods take `&self`.
pub struct ClipTokenizer {
    bpe: BPE,
    split: Regex,
    byte_encoder: [char; 256],
    /// Inverse of `byte_encoder` for the 512 chars in use (indexed by char code, < 512).
    byte_decoder: Vec<Option<u8>>,
    /// id -> token string, `VOCAB_SIZE` entries.
    vocab: Vec<String>,
    /// The [`NUM_MERGES`] merges, in rank order.
    merges: Vec<(String, String)>,
}

impl std::fmt::Debug for ClipTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClipTokenizer")
            .field("vocab_size", &self.vocab.len())
            .finish()
    }
}

impl ClipTokenizer {
    /// Build the tokenizer from the embedded merges file (no JSON, no files on disk).
    ///
    /// Vocabulary as in IRRA `SimpleTokenizer.__init__`: byte chars, byte chars + `</w>`, the
    /// first 48,894 merges of the file (`lines[1:49152-256-2+1]`) minus the last one, then
    /// `<|mask|>`, `<|startoftext|>`, `<|endoftext|>`.
    pub fn new() -> Result<Self, TokenizerError> {
        let mut text = String::new();
        flate2::read::GzDecoder::new(BPE_GZ)
            .read_to_string(&mut text)
            .map_err(|e| TokenizerError::Vocab(e.to_string()))?;
        let merges_all: Vec<(String, String)> = text
            .split('\n')
            .skip(1)
            .take(NUM_MERGES + 1)
            .map(|line| {
                let mut it = line.split_whitespace();
                match (it.next(), it.next(), it.next()) {
                    (Some(a), Some(b), None) => Ok((a.to_string(), b.to_string())),
                    _ => Err(TokenizerError::Vocab(format!("bad merge line {line:?}"))),
                }
            })
            .collect::<Result<_, _>>()?;
        if merges_all.len() != NUM_MERGES + 1 {
            return Err(TokenizerError::Vocab(format!(
                "expected {} merges, found {}",
                NUM_MERGES + 1,
                merges_all.len()
            )));
        }
        let last = &merges_all[NUM_MERGES];
        if (last.0.as_str(), last.1.as_str()) != DROPPED_MERGE {
            return Err(TokenizerError::Vocab(format!(
                "unexpected last merge {last:?}"
            )));
        }
        let merges: Vec<(String, String)> = merges_all[..NUM_MERGES].to_vec();

        let (byte_encoder, order) = bytes_to_unicode();
        let mut vocab: Vec<String> = Vec::with_capacity(VOCAB_SIZE);
        vocab.extend(order.iter().map(|&b| byte_encoder[b as usize].to_string()));
        vocab.extend(
            order
                .iter()
                .map(|&b| format!("{}</w>", byte_encoder[b as usize])),
        );
        vocab.extend(merges.iter().map(|(a, b)| format!("{a}{b}")));
        vocab.push("<|mask|>".to_string());
        vocab.push("<|startoftext|>".to_string());
        vocab.push("<|endoftext|>".to_string());
        if vocab.len() != VOCAB_SIZE {
            return Err(TokenizerError::Vocab(format!(
                "vocabulary has {} entries",
                vocab.len()
            )));
        }
        let vmap: Vocab = vocab
            .iter()
            .enumerate()
            .map(|(i, t)| (t.clone(), i as u32))
            .collect();
        if vmap.len() != VOCAB_SIZE {
            return Err(TokenizerError::Vocab(
                "duplicate vocabulary entries".to_string(),
            ));
        }
        let bpe = BPE::builder()
            .vocab_and_merges(vmap, merges.clone())
            .end_of_word_suffix("</w>".to_string())
            .unk_token("<|endoftext|>".to_string())
            .build()
            .map_err(|e| TokenizerError::Build(e.to_string()))?;
        let split = Regex::new(SPLIT_PATTERN).map_err(|e| TokenizerError::Build(e.to_string()))?;
        let mut byte_decoder = vec![None; 512];
        for (b, &c) in byte_encoder.iter().enumerate() {
            byte_decoder[c as usize] = Some(b as u8);
        }
        Ok(Self {
            bpe,
            split,
            byte_encoder,
            byte_decoder,
            vocab,
            merges,
        })
    }

    /// BPE ids of a caption without SOT/EOT (after clean-up), untruncated.
    ///
    /// Equivalent of open_clip `SimpleTokenizer.encode(text)` (except for [`DROPPED_MERGE`]).
    /// Returns an empty vector when the caption has no content.
    pub fn encode_pieces(&self, text: &str) -> Result<Vec<u32>, TokenizerError> {
        let cleaned = clean_caption(text);
        let mut ids = Vec::new();
        let mut mapped = String::new();
        for m in self.split.find_iter(&cleaned) {
            let piece = m.as_str();
            match piece {
                "<start_of_text>" => ids.push(SOT),
                "<end_of_text>" => ids.push(EOT),
                _ => {
                    mapped.clear();
                    mapped.extend(piece.bytes().map(|b| self.byte_encoder[b as usize]));
                    let toks = self
                        .bpe
                        .tokenize(&mapped)
                        .map_err(|e| TokenizerError::Bpe {
                            piece: mapped.clone(),
                            message: e.to_string(),
                        })?;
                    ids.extend(toks.iter().map(|t| t.id));
                }
            }
        }
        Ok(ids)
    }

    /// Encode one caption into [`CONTEXT_LEN`] ids: `[SOT] + pieces + [EOT]` zero-padded; a longer
    /// sequence is cut to 77 ids with the last one set to [`EOT`] (as open_clip's `tokenize`).
    ///
    /// Errors: [`TokenizerError::EmptyCaption`] when the caption has no word pieces.
    pub fn encode(&self, text: &str) -> Result<TokenIds, TokenizerError> {
        let pieces = self.encode_pieces(text)?;
        if pieces.is_empty() {
            return Err(TokenizerError::EmptyCaption {
                input: text.to_string(),
            });
        }
        let mut ids = [PAD; CONTEXT_LEN];
        ids[0] = SOT;
        let n = pieces.len().min(CONTEXT_LEN - 1);
        ids[1..1 + n].copy_from_slice(&pieces[..n]);
        if 1 + n < CONTEXT_LEN {
            ids[1 + n] = EOT;
        } else {
            ids[CONTEXT_LEN - 1] = EOT;
        }
        Ok(ids)
    }

    /// Like [`ClipTokenizer::encode`] but a caption longer than 77 ids is an error
    /// ([`TokenizerError::TooLong`], naming the count) instead of being truncated.
    pub fn encode_strict(&self, text: &str) -> Result<TokenIds, TokenizerError> {
        let pieces = self.encode_pieces(text)?;
        let count = pieces.len() + 2;
        if count > CONTEXT_LEN {
            return Err(TokenizerError::TooLong {
                count,
                input: text.to_string(),
            });
        }
        self.encode(text)
    }

    /// Length of the untruncated `[SOT] + pieces + [EOT]` sequence of a caption (2 for an empty
    /// caption; more than [`CONTEXT_LEN`] means [`ClipTokenizer::encode`] truncates).
    pub fn token_count(&self, text: &str) -> usize {
        // encode_pieces only fails if the BPE model fails, which cannot happen with a vocabulary
        // holding every byte; count such a piece as nothing rather than panic.
        self.encode_pieces(text).map(|p| p.len()).unwrap_or(0) + 2
    }

    /// Encode several captions; shape `[texts.len()][CONTEXT_LEN]`. The first failing caption
    /// gives [`TokenizerError::Batch`] with its index.
    pub fn encode_batch(&self, texts: &[&str]) -> Result<Vec<TokenIds>, TokenizerError> {
        texts
            .iter()
            .enumerate()
            .map(|(index, t)| {
                self.encode(t).map_err(|e| TokenizerError::Batch {
                    index,
                    source: Box::new(e),
                })
            })
            .collect()
    }

    /// Position of the EOS token: the argmax of `ids`, first occurrence (IRRA/CLIP
    /// `text.argmax(dim=-1)`; EOT = 49407 is the largest id). 0 for an empty slice.
    pub fn eos_index(ids: &[u32]) -> usize {
        let mut best = 0;
        for (i, &id) in ids.iter().enumerate() {
            if id > ids[best] {
                best = i;
            }
        }
        best
    }

    /// The raw vocabulary string of an id (byte-level alphabet, `</w>` kept), e.g. `"woman</w>"`;
    /// `None` when `id >= VOCAB_SIZE`.
    pub fn vocab_token(&self, id: u32) -> Option<&str> {
        self.vocab.get(id as usize).map(String::as_str)
    }

    /// The [`NUM_MERGES`] BPE merges in rank order, as `(left, right)` vocabulary strings
    /// (a Hugging Face `merges.txt` is these, one `left right` per line).
    pub fn merges(&self) -> &[(String, String)] {
        &self.merges
    }

    /// The UTF-8 bytes a token stands for and whether it ends a word (`</w>`).
    fn token_bytes(&self, id: u32) -> Option<(Vec<u8>, bool)> {
        if id >= MASK {
            return None;
        }
        let tok = self.vocab.get(id as usize)?;
        let (body, word_end) = match tok.strip_suffix("</w>") {
            Some(b) => (b, true),
            None => (tok.as_str(), false),
        };
        let bytes = body
            .chars()
            .map(|c| self.byte_decoder.get(c as usize).copied().flatten())
            .collect::<Option<Vec<u8>>>()?;
        Some((bytes, word_end))
    }

    /// Readable text of a sequence: skips [`SOT`], stops at the first [`EOT`] (so padding is
    /// ignored), writes [`MASK`] as `<|mask|>`, turns `</w>` into a space, decodes the bytes as
    /// UTF-8 (invalid bytes become U+FFFD, like open_clip's `errors="replace"`) and trims the
    /// trailing space. Ids outside the vocabulary become U+FFFD.
    ///
    /// `decode(&encode(s)?)` equals the cleaned caption for simple text, with spaces around
    /// punctuation (`"a woman in a red coat ."`).
    pub fn decode(&self, ids: &[u32]) -> String {
        let mut bytes: Vec<u8> = Vec::new();
        for &id in ids {
            match id {
                SOT => continue,
                EOT => break,
                MASK => bytes.extend_from_slice(b"<|mask|> "),
                _ => match self.token_bytes(id) {
                    Some((b, word_end)) => {
                        bytes.extend_from_slice(&b);
                        if word_end {
                            bytes.push(b' ');
                        }
                    }
                    None => bytes.extend_from_slice("\u{fffd}".as_bytes()),
                },
            }
        }
        String::from_utf8_lossy(&bytes).trim_end().to_string()
    }

    /// One readable string per id, same length as `ids`, for visualising per-token scores:
    /// `<|startoftext|>`, `<|endoftext|>`, `<|mask|>` for the specials, `""` for padding (a
    /// [`PAD`] after the first EOT), otherwise the token's text without `</w>` (a token holding
    /// part of a multi-byte character shows U+FFFD), U+FFFD for ids outside the vocabulary.
    pub fn token_strings(&self, ids: &[u32]) -> Vec<String> {
        let mut seen_eot = false;
        ids.iter()
            .map(|&id| match id {
                SOT => "<|startoftext|>".to_string(),
                EOT => {
                    seen_eot = true;
                    "<|endoftext|>".to_string()
                }
                MASK => "<|mask|>".to_string(),
                PAD if seen_eot => String::new(),
                _ => match self.token_bytes(id) {
                    Some((b, _)) => String::from_utf8_lossy(&b).into_owned(),
                    None => "\u{fffd}".to_string(),
                },
            })
            .collect()
    }
}

/// Fingerprint of this tokenizer (BPE file, dropped merge, special ids), written into shard
/// configs so a dataset packed with another tokenizer is refused. 16 hex digits.
pub fn tokenizer_hash() -> String {
    let mut h = crate::shard::Fnv64::default();
    h.update(BPE_GZ);
    h.update(
        format!("{DROPPED_MERGE:?} mask={MASK} sot={SOT} eot={EOT} ctx={CONTEXT_LEN}").as_bytes(),
    );
    h.hex()
}
