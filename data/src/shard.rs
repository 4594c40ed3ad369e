//! The shard format: many samples in one file, read through `memmap2` without copying bodies.
//!
//! ```text
//! [0, 32)            header: magic "GADMSHD1" | version u32 | reserved u32 | count u64 | config_len u64
//! [32, 32+config_len) config: ShardConfig as JSON (dataset, split, image size, encoding, tokenizer hash)
//! bodies             per sample: image bytes | 77 × u32 token ids | caption UTF-8 | source path UTF-8
//! index              count × 48-byte entries (little endian):
//!                    body_offset u64 | image_len u32 | caption_len u32 | path_len u32 |
//!                    caption_idx u32 | pid u64 | image_id u64 | body_crc u32 | entry_crc u32
//! footer (24 bytes)  index_offset u64 | count u64 | magic "GSHDEND1"
//! ```
//! The index has fixed-size entries, so opening a shard reads 56 bytes plus the config no matter
//! how many samples it holds. Version 2 added the two checksums, CRC-32 (IEEE, the
//! `crc32fast` crate): `body_crc` of the sample's body bytes, `entry_crc` of the entry's first 44
//! bytes. Version 3 (this one) stores the config as JSON instead of bincode 1 (an unmaintained
//! crate); version 2 shards are still read, their config decoded by [`config_from_bincode1`].
//! [`Shard::pid`] and [`Shard::image_id`] check `entry_crc`; [`Shard::sample`] checks
//! both, so a flipped byte is an error instead of a wrong person id or caption. Writers write a temporary sibling and rename it into place when complete,
//! so a crash never leaves a truncated shard under its final name.

use crate::tokenizer::{EOT, SOT, VOCAB_SIZE};
use memmap2::Mmap;
use serde::{Deserialize, Serialize};
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

/// First 8 bytes of every shard.
pub const SHARD_MAGIC: [u8; 8] = *b"GADMSHD1";
/// Last 8 bytes of every shard.
pub const FOOTER_MAGIC: [u8; 8] = *b"GSHDEND1";
/// Shard format version.
pub const SHARD_VERSION: u32 = 3;
/// The previous version: the same layout with the config in bincode 1's encoding.
pub const SHARD_VERSION_BINCODE: u32 = 2;
/// Tokens per caption.
pub const CTX: usize = 77;
const HEADER_LEN: usize = 32;
const ENTRY_LEN: usize = 48;
/// Bytes of an index entry covered by its own checksum (all but the checksum).
const ENTRY_SUMMED: usize = ENTRY_LEN - 4;
const FOOTER_LEN: usize = 24;
const IDS_BYTES: usize = CTX * 4;

/// What every sample of a shard shares.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardConfig {
    /// Source dataset (`webperson`, `cuhk-pedes`, …).
    pub dataset: String,
    /// Split (`train`, `test`, `val`).
    pub split: String,
    /// Stored image height in pixels.
    pub image_h: u32,
    /// Stored image width in pixels.
    pub image_w: u32,
    /// Image encoding (`jpeg95`, `png`).
    pub encoding: String,
    /// Fingerprint of the tokenizer that produced the ids.
    pub tokenizer_hash: String,
}

/// The config as a version-3 shard stores it (JSON).
fn config_bytes(config: &ShardConfig) -> Vec<u8> {
    serde_json::to_vec(config).expect("a ShardConfig serialises")
}

/// Decodes the config of a version-2 shard: `bincode::serialize` (bincode 1, its default
/// options) of [`ShardConfig`], i.e. the fields in order, each string as a little-endian u64
/// byte length and its UTF-8 bytes, each u32 as 4 little-endian bytes, nothing after the last.
/// Every length is checked against the bytes left before anything is allocated.
pub fn config_from_bincode1(b: &[u8]) -> Result<ShardConfig, String> {
    let mut r = Bincode1 { b, at: 0 };
    let c = ShardConfig {
        dataset: r.string("dataset")?,
        split: r.string("split")?,
        image_h: r.u32("image_h")?,
        image_w: r.u32("image_w")?,
        encoding: r.string("encoding")?,
        tokenizer_hash: r.string("tokenizer_hash")?,
    };
    if r.at != b.len() {
        return Err(format!("{} bytes after the last field", b.len() - r.at));
    }
    Ok(c)
}

/// A cursor over bincode-1 bytes.
struct Bincode1<'a> {
    b: &'a [u8],
    at: usize,
}

impl<'a> Bincode1<'a> {
    fn take(&mut self, n: usize, field: &str) -> Result<&'a [u8], String> {
        let end = self.at.checked_add(n).filter(|&e| e <= self.b.len());
        let end = end.ok_or_else(|| format!("{field}: runs past the end of the config"))?;
        let out = &self.b[self.at..end];
        self.at = end;
        Ok(out)
    }

    fn u32(&mut self, field: &str) -> Result<u32, String> {
        Ok(u32::from_le_bytes(self.take(4, field)?.try_into().unwrap()))
    }

    fn string(&mut self, field: &str) -> Result<String, String> {
        let n = u64::from_le_bytes(self.take(8, field)?.try_into().unwrap());
        let n = usize::try_from(n).map_err(|_| format!("{field}: length {n}"))?;
        let bytes = self.take(n, field)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| format!("{field}: not UTF-8"))
    }
}

/// A problem with a shard file.
#[derive(Debug, thiserror::Error)]
pub enum ShardError {
    /// I/O failure.
    #[error("{path}: {what}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What was being done.
        what: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// Wrong magic, version, truncation or inconsistent offsets.
    #[error("{path}: not a valid gadms shard: {what}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        what: String,
    },
    /// A sample whose index entry or body is damaged: a range outside the body region, text
    /// that is not UTF-8, or token ids that are not a well-formed CLIP sequence.
    #[error(
        "{path}: sample {index} is damaged: {what} (re-run gadms pack; pretrain, finetune, eval \
         and search take --skip-corrupt to leave damaged samples out)"
    )]
    BadSample {
        /// The file.
        path: PathBuf,
        /// The sample's index within the shard.
        index: usize,
        /// What is wrong.
        what: String,
    },
    /// A sample index past the end.
    #[error("{path}: sample {index} out of range (shard holds {count})")]
    OutOfRange {
        /// The file.
        path: PathBuf,
        /// Requested index.
        index: usize,
        /// Samples in the shard.
        count: usize,
    },
}

/// One sample to write.
#[derive(Clone, Debug)]
pub struct SampleIn<'a> {
    /// Encoded image (JPEG/PNG bytes).
    pub image: &'a [u8],
    /// Token ids, `[SOT] … [EOT]` zero-padded.
    pub ids: &'a [u32; CTX],
    /// The caption text.
    pub caption: &'a str,
    /// Source path of the image (relative to the dataset root).
    pub path: &'a str,
    /// Person id (training: contiguous from 0; pretraining: one per caption).
    pub pid: u64,
    /// Image id (one per image; shared by the captions of one image).
    pub image_id: u64,
    /// Index of the caption within its image (0, 1, …).
    pub caption_idx: u32,
}

/// One sample read from a mapped shard; borrows the mapping.
#[derive(Clone, Debug)]
pub struct SampleRef<'a> {
    /// Encoded image bytes.
    pub image: &'a [u8],
    /// Token ids.
    pub ids: [u32; CTX],
    /// Caption text.
    pub caption: &'a str,
    /// Source path.
    pub path: &'a str,
    /// Person id.
    pub pid: u64,
    /// Image id.
    pub image_id: u64,
    /// Caption index within the image.
    pub caption_idx: u32,
}

/// Summary of a written shard (goes into the manifest).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardInfo {
    /// File name relative to the manifest's directory.
    pub file: String,
    /// Samples.
    pub count: u64,
    /// Bytes.
    pub bytes: u64,
    /// FNV-1a 64 of the whole file, hex.
    pub hash: String,
}

/// 64-bit FNV-1a, a stable content hash (not cryptographic).
#[derive(Clone, Copy, Debug)]
pub struct Fnv64(pub u64);

impl Default for Fnv64 {
    fn default() -> Self {
        Fnv64(0xcbf2_9ce4_8422_2325)
    }
}

impl Fnv64 {
    /// Feeds bytes.
    pub fn update(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 ^ b as u64).wrapping_mul(0x0100_0000_01b3);
        }
    }
    /// The hash as 16 hex digits.
    pub fn hex(&self) -> String {
        format!("{:016x}", self.0)
    }
}

/// Streams samples into a temporary sibling ([`crate::temp_path`]); [`ShardWriter::finish`]
/// writes the index and renames.
pub struct ShardWriter {
    path: PathBuf,
    tmp: PathBuf,
    out: BufWriter<File>,
    hash: Fnv64,
    pos: u64,
    index: Vec<u8>,
    count: u64,
}

impl ShardWriter {
    /// Starts a shard at `path` (written under a temporary name until finished).
    pub fn create(path: &Path, config: &ShardConfig) -> Result<Self, ShardError> {
        let tmp = crate::temp_path(path);
        let io = |what: &str| {
            let (p, w) = (tmp.clone(), what.to_string());
            move |source| ShardError::Io {
                path: p,
                what: w,
                source,
            }
        };
        let file = File::create(&tmp).map_err(io("cannot create shard"))?;
        let cfg = config_bytes(config);
        let mut w = ShardWriter {
            path: path.to_path_buf(),
            tmp: tmp.clone(),
            out: BufWriter::with_capacity(1 << 20, file),
            hash: Fnv64::default(),
            pos: 0,
            index: Vec::new(),
            count: 0,
        };
        let mut header = Vec::with_capacity(HEADER_LEN);
        header.extend_from_slice(&SHARD_MAGIC);
        header.extend_from_slice(&SHARD_VERSION.to_le_bytes());
        header.extend_from_slice(&0u32.to_le_bytes());
        header.extend_from_slice(&0u64.to_le_bytes()); // count: the footer is authoritative
        header.extend_from_slice(&(cfg.len() as u64).to_le_bytes());
        w.put(&header).map_err(io("cannot write shard"))?;
        w.put(&cfg).map_err(io("cannot write shard"))?;
        Ok(w)
    }

    fn put(&mut self, b: &[u8]) -> std::io::Result<()> {
        self.hash.update(b);
        self.pos += b.len() as u64;
        self.out.write_all(b)
    }

    /// Appends one sample.
    pub fn push(&mut self, s: &SampleIn<'_>) -> Result<(), ShardError> {
        let offset = self.pos;
        let ids: Vec<u8> = s.ids.iter().flat_map(|x| x.to_le_bytes()).collect();
        let mut crc = crc32fast::Hasher::new();
        for part in [s.image, &ids, s.caption.as_bytes(), s.path.as_bytes()] {
            crc.update(part);
        }
        let res = self
            .put(s.image)
            .and_then(|_| self.put(&ids))
            .and_then(|_| self.put(s.caption.as_bytes()))
            .and_then(|_| self.put(s.path.as_bytes()));
        res.map_err(|source| ShardError::Io {
            path: self.tmp.clone(),
            what: "cannot write shard".into(),
            source,
        })?;
        let mut e = Vec::with_capacity(ENTRY_LEN);
        e.extend_from_slice(&offset.to_le_bytes());
        e.extend_from_slice(&(s.image.len() as u32).to_le_bytes());
        e.extend_from_slice(&(s.caption.len() as u32).to_le_bytes());
        e.extend_from_slice(&(s.path.len() as u32).to_le_bytes());
        e.extend_from_slice(&s.caption_idx.to_le_bytes());
        e.extend_from_slice(&s.pid.to_le_bytes());
        e.extend_from_slice(&s.image_id.to_le_bytes());
        e.extend_from_slice(&crc.finalize().to_le_bytes());
        seal_entry(&mut e);
        self.index.extend_from_slice(&e);
        self.count += 1;
        Ok(())
    }

    /// Samples pushed so far.
    pub fn len(&self) -> u64 {
        self.count
    }

    /// True when nothing was pushed.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Writes index and footer, syncs, and renames the file into place.
    pub fn finish(mut self) -> Result<ShardInfo, ShardError> {
        let io = |p: &Path, what: &str, source| ShardError::Io {
            path: p.to_path_buf(),
            what: what.into(),
            source,
        };
        let index_offset = self.pos;
        let index = std::mem::take(&mut self.index);
        let mut footer = Vec::with_capacity(FOOTER_LEN);
        footer.extend_from_slice(&index_offset.to_le_bytes());
        footer.extend_from_slice(&self.count.to_le_bytes());
        footer.extend_from_slice(&FOOTER_MAGIC);
        self.put(&index)
            .and_then(|_| self.put(&footer))
            .and_then(|_| self.out.flush())
            .and_then(|_| self.out.get_ref().sync_all())
            .map_err(|e| io(&self.tmp, "cannot finish shard", e))?;
        std::fs::rename(&self.tmp, &self.path)
            .map_err(|e| io(&self.path, "cannot rename shard", e))?;
        Ok(ShardInfo {
            file: self
                .path
                .file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned(),
            count: self.count,
            bytes: self.pos,
            hash: self.hash.hex(),
        })
    }
}

/// A memory-mapped shard.
pub struct Shard {
    path: PathBuf,
    map: Mmap,
    config: ShardConfig,
    count: usize,
    index_offset: usize,
    bodies_start: usize,
}

/// Appends the checksum of the first [`ENTRY_SUMMED`] bytes of an index entry.
fn seal_entry(e: &mut Vec<u8>) {
    let crc = crc32fast::hash(&e[..ENTRY_SUMMED]);
    e.extend_from_slice(&crc.to_le_bytes());
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}
fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

impl Shard {
    /// Maps and validates a shard: magics, version, sizes and index bounds (O(1) in samples).
    pub fn open(path: &Path) -> Result<Self, ShardError> {
        let corrupt = |what: String| ShardError::Corrupt {
            path: path.to_path_buf(),
            what,
        };
        let file = File::open(path).map_err(|source| ShardError::Io {
            path: path.to_path_buf(),
            what: "cannot open shard".into(),
            source,
        })?;
        // SAFETY: shards are immutable once renamed into place; gadms never writes to a
        // finished shard, and a concurrent external writer is outside the contract.
        let map = unsafe { Mmap::map(&file) }.map_err(|source| ShardError::Io {
            path: path.to_path_buf(),
            what: "cannot map shard".into(),
            source,
        })?;
        let n = map.len();
        if n < HEADER_LEN + FOOTER_LEN || map[..8] != SHARD_MAGIC {
            return Err(corrupt(
                "missing GADMSHD1 magic (foreign or empty file)".into(),
            ));
        }
        let version = u32_at(&map, 8);
        if version == 1 {
            return Err(corrupt(format!(
                "format version 1, written by an older gadms; this build reads version \
                 {SHARD_VERSION} (per-sample checksums): repack the dataset with `gadms pack`"
            )));
        }
        if version != SHARD_VERSION && version != SHARD_VERSION_BINCODE {
            return Err(corrupt(format!(
                "format version {version}, this build reads {SHARD_VERSION_BINCODE} and \
                 {SHARD_VERSION}"
            )));
        }
        if map[n - 8..] != FOOTER_MAGIC {
            return Err(corrupt(
                "missing footer (truncated file: re-run gadms pack)".into(),
            ));
        }
        let cfg_len = u64_at(&map, 24) as usize;
        let index_offset = u64_at(&map, n - 24) as usize;
        let count = u64_at(&map, n - 16) as usize;
        let bodies_start = HEADER_LEN.checked_add(cfg_len).filter(|&e| e <= n);
        let Some(bodies_start) = bodies_start else {
            return Err(corrupt("config length runs past the end".into()));
        };
        let index_end = count
            .checked_mul(ENTRY_LEN)
            .and_then(|l| l.checked_add(index_offset));
        if index_offset < bodies_start || index_end != Some(n - FOOTER_LEN) {
            return Err(corrupt(format!(
                "index of {count} entries at {index_offset} does not fit a {n}-byte file"
            )));
        }
        let raw = &map[HEADER_LEN..bodies_start];
        let config = if version == SHARD_VERSION {
            serde_json::from_slice(raw).map_err(|e| e.to_string())
        } else {
            config_from_bincode1(raw)
        }
        .map_err(|e| corrupt(format!("unreadable config: {e}")))?;
        Ok(Shard {
            path: path.to_path_buf(),
            map,
            config,
            count,
            index_offset,
            bodies_start,
        })
    }

    /// The shard's config.
    pub fn config(&self) -> &ShardConfig {
        &self.config
    }
    /// Number of samples.
    pub fn len(&self) -> usize {
        self.count
    }
    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }
    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn entry(&self, i: usize) -> Result<&[u8], ShardError> {
        if i >= self.count {
            return Err(ShardError::OutOfRange {
                path: self.path.clone(),
                index: i,
                count: self.count,
            });
        }
        let at = self.index_offset + i * ENTRY_LEN;
        let e = &self.map[at..at + ENTRY_LEN];
        let (want, got) = (u32_at(e, ENTRY_SUMMED), crc32fast::hash(&e[..ENTRY_SUMMED]));
        if want != got {
            return Err(self.bad(
                i,
                format!("index entry checksum {got:08x} does not match the stored {want:08x}"),
            ));
        }
        Ok(e)
    }

    /// Person id of sample `i` (index only, its entry's checksum checked; the body is not
    /// touched).
    pub fn pid(&self, i: usize) -> Result<u64, ShardError> {
        Ok(u64_at(self.entry(i)?, 24))
    }

    /// Image id of sample `i` (index only, checksum checked).
    pub fn image_id(&self, i: usize) -> Result<u64, ShardError> {
        Ok(u64_at(self.entry(i)?, 32))
    }

    fn bad(&self, index: usize, what: String) -> ShardError {
        ShardError::BadSample {
            path: self.path.clone(),
            index,
            what,
        }
    }

    /// Sample `i`, borrowing the mapping (no copy of the image bytes). Checks, with checked
    /// arithmetic, that the body lies inside the body region, both checksums (entry and body),
    /// that caption and path are UTF-8 and that the ids are a CLIP sequence (every id < [`VOCAB_SIZE`], SOT first, an EOT);
    /// anything else is [`ShardError::BadSample`].
    pub fn sample(&self, i: usize) -> Result<SampleRef<'_>, ShardError> {
        let e = self.entry(i)?;
        let off = u64_at(e, 0);
        let (il, cl, pl) = (
            u32_at(e, 8) as u64,
            u32_at(e, 12) as u64,
            u32_at(e, 16) as u64,
        );
        let end = off
            .checked_add(il)
            .and_then(|x| x.checked_add(IDS_BYTES as u64))
            .and_then(|x| x.checked_add(cl))
            .and_then(|x| x.checked_add(pl));
        let (lo, hi) = (self.bodies_start as u64, self.index_offset as u64);
        let body = match end {
            Some(end) if off >= lo && end <= hi => &self.map[off as usize..end as usize],
            _ => {
                return Err(self.bad(
                    i,
                    format!(
                        "body at offset {off} of {il} + {IDS_BYTES} + {cl} + {pl} bytes lies outside the body region [{lo}, {hi})"
                    ),
                ));
            }
        };
        let (want, got) = (u32_at(e, 40), crc32fast::hash(body));
        if want != got {
            return Err(self.bad(
                i,
                format!("body checksum {got:08x} does not match the index's {want:08x}"),
            ));
        }
        let il = il as usize;
        let mut ids = [0u32; CTX];
        for (k, id) in ids.iter_mut().enumerate() {
            *id = u32_at(body, il + 4 * k);
            if *id as usize >= VOCAB_SIZE {
                return Err(self.bad(
                    i,
                    format!("token id {id} at position {k} is outside the CLIP vocabulary (< {VOCAB_SIZE})"),
                ));
            }
        }
        if ids[0] != SOT {
            return Err(self.bad(
                i,
                format!("token ids start with {}, not SOT ({SOT})", ids[0]),
            ));
        }
        if !ids.contains(&EOT) {
            return Err(self.bad(i, format!("token ids hold no EOT ({EOT})")));
        }
        let (cl, pl) = (cl as usize, pl as usize);
        let text = |from: usize, len: usize, what: &str| {
            std::str::from_utf8(&body[from..from + len])
                .map_err(|_| self.bad(i, format!("{what} is not UTF-8")))
        };
        Ok(SampleRef {
            image: &body[..il],
            ids,
            caption: text(il + IDS_BYTES, cl, "caption")?,
            path: text(il + IDS_BYTES + cl, pl, "path")?,
            pid: u64_at(e, 24),
            image_id: u64_at(e, 32),
            caption_idx: u32_at(e, 20),
        })
    }
}

/// Writes a shard of `count` samples whose bodies are one sparse hole of zeros (each sample:
/// no image, zero ids, empty caption and path). Only for measuring open time at scale: the
/// index is real, so opening and index reads ([`Shard::pid`]) cost what they cost on a real
/// shard of that size; [`Shard::sample`] refuses the zero ids.
pub fn write_sparse_shard(path: &Path, config: &ShardConfig, count: u64) -> std::io::Result<()> {
    use std::io::{Seek, SeekFrom};
    let cfg = config_bytes(config);
    let mut f = BufWriter::new(File::create(path)?);
    f.write_all(&SHARD_MAGIC)?;
    f.write_all(&SHARD_VERSION.to_le_bytes())?;
    f.write_all(&0u32.to_le_bytes())?;
    f.write_all(&0u64.to_le_bytes())?;
    f.write_all(&(cfg.len() as u64).to_le_bytes())?;
    f.write_all(&cfg)?;
    let bodies = (HEADER_LEN + cfg.len()) as u64;
    let index_offset = bodies + count * IDS_BYTES as u64;
    f.seek(SeekFrom::Start(index_offset))?;
    let body_crc = crc32fast::hash(&[0u8; IDS_BYTES]);
    for i in 0..count {
        let mut e = vec![0u8; ENTRY_SUMMED];
        e[..8].copy_from_slice(&(bodies + i * IDS_BYTES as u64).to_le_bytes());
        e[24..32].copy_from_slice(&i.to_le_bytes());
        e[32..40].copy_from_slice(&i.to_le_bytes());
        e[40..44].copy_from_slice(&body_crc.to_le_bytes());
        seal_entry(&mut e);
        f.write_all(&e)?;
    }
    f.write_all(&index_offset.to_le_bytes())?;
    f.write_all(&count.to_le_bytes())?;
    f.write_all(&FOOTER_MAGIC)?;
    f.flush()
}
