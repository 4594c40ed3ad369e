//! `gadms pack`: turns a public dataset (WebPerson parquet or JSON, CUHK-PEDES, ICFG-PEDES,
//! RSTPReid) into shards plus a manifest.
//!
//! * Every source image is decoded once, resized to the target size (bilinear / `Triangle`, as
//!   [`crate::image_prep`]) and re-encoded (JPEG quality 95, or PNG with `lossless`); every
//!   caption is tokenized once ([`ClipTokenizer::encode`]; over-long captions are truncated and
//!   counted).
//! * The source images are cut into fixed chunks of `shard_size` images; chunk `k` becomes
//!   `part-{k:05}.gshard`, whatever the number of workers, so the output is deterministic.
//!   Chunks run in parallel on a pool of `workers` threads; within a chunk the images are
//!   decoded in parallel batches and written in source order.
//! * Restartable: after its shard is renamed into place a chunk writes a sidecar
//!   `part-{k:05}.json` (shard info, images, rejects). A rerun skips every chunk whose shard
//!   opens cleanly with the expected config and whose sidecar matches the same source, chunk
//!   and settings. The old manifest is removed first and the new one written last (atomically),
//!   so a crashed run leaves no manifest.
//! * Rejects (missing or corrupt image, empty caption, row with a missing or mistyped field) are
//!   skipped, counted and listed in `rejects.jsonl`, one JSON object a line. A source that is not
//!   the expected structure at all is a hard error naming the file and what is wrong.
//!
//! Per-format conventions (pid, image id, caption index) are documented in the format modules:
//! [`webperson_parquet`], [`webperson_json`], [`cuhk_pedes`], [`icfg_pedes`], [`rstpreid`].

mod bench_json;
mod common;
pub mod cuhk_pedes;
pub mod icfg_pedes;
pub mod rstpreid;
pub mod webperson_json;
pub mod webperson_parquet;

pub use common::{Reject, reencode};

use crate::manifest::{MANIFEST_FILE, Manifest};
use crate::shard::{Shard, ShardConfig, ShardError, ShardInfo, ShardWriter};
use crate::tokenizer::{ClipTokenizer, TokenizerError, tokenizer_hash};
use common::{ChunkRecord, Item, Prepared, Source};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// File name of the reject list inside the output directory.
pub const REJECTS_FILE: &str = "rejects.jsonl";
/// Default number of source images per shard.
pub const DEFAULT_SHARD_SIZE: u64 = 5000;
/// Source images decoded together (in parallel) before being written in order.
const BATCH: usize = 64;

/// A source format `gadms pack` reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// Hugging Face WebPerson release: `data/train-*.parquet`, columns `image` {bytes, path},
    /// `image_path`, `caption1`, `caption2`.
    WebpersonParquet,
    /// GA-DMS training JSON: a list of one-key dicts `{rel_path: {caption1, caption2}}` plus
    /// `images/<rel_path>`.
    WebpersonJson,
    /// CUHK-PEDES `reid_raw.json` plus `imgs/<file_path>`.
    CuhkPedes,
    /// ICFG-PEDES `ICFG-PEDES.json` plus `imgs/<file_path>`.
    IcfgPedes,
    /// RSTPReid `data_captions.json` plus `imgs/<img_path>`.
    Rstpreid,
}

impl Format {
    /// Every format, in CLI order.
    pub const ALL: [Format; 5] = [
        Format::WebpersonParquet,
        Format::WebpersonJson,
        Format::CuhkPedes,
        Format::IcfgPedes,
        Format::Rstpreid,
    ];

    /// The CLI name (`webperson-parquet`, …).
    pub fn name(self) -> &'static str {
        match self {
            Format::WebpersonParquet => "webperson-parquet",
            Format::WebpersonJson => "webperson-json",
            Format::CuhkPedes => "cuhk-pedes",
            Format::IcfgPedes => "icfg-pedes",
            Format::Rstpreid => "rstpreid",
        }
    }

    /// The dataset name written into the shard config (`webperson` for both WebPerson formats).
    pub fn dataset(self) -> &'static str {
        match self {
            Format::WebpersonParquet | Format::WebpersonJson => "webperson",
            other => other.name(),
        }
    }

    /// True for the WebPerson formats, which only have a `train` split.
    pub fn is_webperson(self) -> bool {
        matches!(self, Format::WebpersonParquet | Format::WebpersonJson)
    }
}

impl std::str::FromStr for Format {
    type Err = PackError;
    fn from_str(s: &str) -> Result<Self, PackError> {
        Format::ALL
            .into_iter()
            .find(|f| f.name() == s)
            .ok_or_else(|| {
                let names: Vec<&str> = Format::ALL.iter().map(|f| f.name()).collect();
                PackError::Options(format!(
                    "unknown format '{s}'; expected one of: {}",
                    names.join(", ")
                ))
            })
    }
}

impl std::fmt::Display for Format {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Normalises a split name as IRRA's loaders do: `train` and `test` stay, anything else is `val`.
pub fn normalize_split(s: &str) -> &'static str {
    match s {
        "train" => "train",
        "test" => "test",
        _ => "val",
    }
}

/// The split names `--split` accepts.
pub const SPLITS: [&str; 3] = ["train", "val", "test"];

/// Parses the `--split` option: one of [`SPLITS`]; anything else is an error listing them
/// (rows of a dataset file with other split names are still `val`, [`normalize_split`]).
pub fn parse_split(s: &str) -> Result<&'static str, PackError> {
    SPLITS.into_iter().find(|n| *n == s).ok_or_else(|| {
        PackError::Options(format!(
            "unknown split '{s}'; expected one of: {}",
            SPLITS.join(", ")
        ))
    })
}

/// Parses an image size `HxW` (height first, e.g. `384x128`).
pub fn parse_image_size(s: &str) -> Result<(u32, u32), PackError> {
    let bad = || {
        PackError::Options(format!(
            "bad image size '{s}': write HEIGHTxWIDTH, e.g. 384x128"
        ))
    };
    let (h, w) = s.split_once(['x', 'X']).ok_or_else(bad)?;
    let h: u32 = h.trim().parse().map_err(|_| bad())?;
    let w: u32 = w.trim().parse().map_err(|_| bad())?;
    if h == 0 || w == 0 || h > 8192 || w > 8192 {
        return Err(bad());
    }
    Ok((h, w))
}

/// What to pack and how.
#[derive(Clone, Debug)]
pub struct PackOptions {
    /// Source format.
    pub format: Format,
    /// Source: the JSON file or its directory; for parquet a directory holding
    /// `data/train-*.parquet` (or `*.parquet`), or one parquet file.
    pub src: PathBuf,
    /// Output directory (created if missing; a rerun into it resumes).
    pub out: PathBuf,
    /// Split to pack (`train`, `test`; anything else means `val`). WebPerson: `train` only.
    pub split: String,
    /// Stored image height.
    pub image_h: u32,
    /// Stored image width.
    pub image_w: u32,
    /// Worker threads (0 = all cores).
    pub workers: usize,
    /// Store PNG instead of JPEG quality 95.
    pub lossless: bool,
    /// Source images per shard.
    pub shard_size: u64,
    /// Read images through symbolic links that lead outside the dataset root (by default such
    /// an image is rejected as outside the root).
    pub follow_symlinks: bool,
}

impl PackOptions {
    /// Options with the defaults: split `train`, 384×128, all cores, JPEG 95,
    /// [`DEFAULT_SHARD_SIZE`] images per shard.
    pub fn new(format: Format, src: impl Into<PathBuf>, out: impl Into<PathBuf>) -> Self {
        PackOptions {
            format,
            src: src.into(),
            out: out.into(),
            split: "train".into(),
            image_h: 384,
            image_w: 128,
            workers: 0,
            lossless: false,
            shard_size: DEFAULT_SHARD_SIZE,
            follow_symlinks: false,
        }
    }

    /// The image encoding name stored in the shard config (`jpeg95` or `png`).
    pub fn encoding(&self) -> &'static str {
        if self.lossless { "png" } else { "jpeg95" }
    }
}

/// Receives progress while packing (called from worker threads).
pub trait Progress: Sync {
    /// Packing starts: `total` source images (rows) will be processed.
    fn start(&self, _total: u64) {}
    /// `n` more source images are done (packed, rejected, or in a reused shard).
    fn advance(&self, _n: u64) {}
}

/// A [`Progress`] that ignores everything.
pub struct NoProgress;
impl Progress for NoProgress {}

/// Result of a successful pack.
#[derive(Clone, Debug)]
pub struct PackReport {
    /// The manifest that was written.
    pub manifest: Manifest,
    /// The output directory.
    pub out: PathBuf,
    /// Chunks whose shard was reused from an earlier run.
    pub reused_shards: usize,
    /// Chunks in total (including chunks whose every image was rejected).
    pub chunks: usize,
    /// Packed captions longer than 77 tokens (truncated, EOT kept last).
    pub truncated: u64,
    /// Warnings (e.g. train pids not contiguous from 0).
    pub warnings: Vec<String>,
}

impl PackReport {
    /// The one-line summary:
    /// `packed N samples (M images, K ids) into S shards; R rejected (see DIR/rejects.jsonl)`,
    /// followed by the number of truncated captions when there are any.
    pub fn summary_line(&self) -> String {
        let m = &self.manifest;
        let mut s = format!(
            "packed {} samples ({} images, {} ids) into {} shards; {} rejected (see {})",
            m.samples,
            m.images,
            m.identities,
            m.shards.len(),
            m.rejects,
            self.out.join(REJECTS_FILE).display()
        );
        if self.truncated > 0 {
            s.push_str(&format!(
                "; {} captions truncated to 77 tokens",
                self.truncated
            ));
        }
        s
    }
}

/// Why a pack failed.
#[derive(Debug, thiserror::Error)]
pub enum PackError {
    /// Bad options (format, split, image size, shard size).
    #[error("{0}")]
    Options(String),
    /// The source is not the expected structure (names the file and what is wrong).
    #[error("{path}: {what}")]
    Source {
        /// The offending file or directory.
        path: PathBuf,
        /// What is wrong.
        what: String,
    },
    /// An I/O failure on a file.
    #[error("{path}: {what}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What was being done.
        what: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// Writing a shard failed.
    #[error(transparent)]
    Shard(#[from] ShardError),
    /// The tokenizer could not be built.
    #[error(transparent)]
    Tokenizer(#[from] TokenizerError),
}

impl PackError {
    pub(crate) fn io(path: &Path, what: &str, source: std::io::Error) -> Self {
        PackError::Io {
            path: path.to_path_buf(),
            what: what.into(),
            source,
        }
    }
    pub(crate) fn source(path: &Path, what: impl Into<String>) -> Self {
        PackError::Source {
            path: path.to_path_buf(),
            what: what.into(),
        }
    }
}

/// Identifies what a chunk's shard was made from; a sidecar with another key is not reused.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ChunkKey {
    format: String,
    split: String,
    source: String,
    source_images: u64,
    shard_size: u64,
    chunk: u64,
    first: u64,
    end: u64,
}

/// File name of chunk `k`'s shard.
pub fn shard_file_name(k: u64) -> String {
    format!("part-{k:05}.gshard")
}

/// File name of chunk `k`'s sidecar.
pub fn sidecar_file_name(k: u64) -> String {
    format!("part-{k:05}.json")
}

struct Ctx<'a> {
    opts: &'a PackOptions,
    config: ShardConfig,
    source: &'a dyn Source,
    tok: &'a ClipTokenizer,
    progress: &'a dyn Progress,
    fingerprint: String,
}

/// What one chunk produced (fresh or reused).
struct ChunkDone {
    record: ChunkRecord,
    pids: Vec<u64>,
    reused: bool,
}

/// Packs a dataset; see the module docs. Returns the report; the manifest is on disk.
pub fn pack(opts: &PackOptions, progress: &dyn Progress) -> Result<PackReport, PackError> {
    if opts.shard_size == 0 {
        return Err(PackError::Options("--shard-size must be at least 1".into()));
    }
    if opts.image_h == 0 || opts.image_w == 0 {
        return Err(PackError::Options("image size must be positive".into()));
    }
    let split = parse_split(&opts.split)?;
    if opts.format.is_webperson() && split != "train" {
        return Err(PackError::Options(format!(
            "{} has only a train split (got --split {})",
            opts.format, opts.split
        )));
    }
    let tok = ClipTokenizer::new()?;
    let source: Box<dyn Source> = match opts.format {
        Format::WebpersonParquet => Box::new(webperson_parquet::open(&opts.src)?),
        Format::WebpersonJson => Box::new(webperson_json::open(&opts.src)?),
        Format::CuhkPedes => Box::new(cuhk_pedes::open(&opts.src, split)?),
        Format::IcfgPedes => Box::new(icfg_pedes::open(&opts.src, split)?),
        Format::Rstpreid => Box::new(rstpreid::open(&opts.src, split)?),
    };
    let config = ShardConfig {
        dataset: opts.format.dataset().into(),
        split: split.into(),
        image_h: opts.image_h,
        image_w: opts.image_w,
        encoding: opts.encoding().into(),
        tokenizer_hash: tokenizer_hash(),
    };
    std::fs::create_dir_all(&opts.out)
        .map_err(|e| PackError::io(&opts.out, "cannot create output directory", e))?;
    let manifest_path = opts.out.join(MANIFEST_FILE);
    match std::fs::remove_file(&manifest_path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => {
            return Err(PackError::io(
                &manifest_path,
                "cannot remove old manifest",
                e,
            ));
        }
    }

    let total = source.len();
    let n_chunks = total.div_ceil(opts.shard_size);
    let ctx = Ctx {
        opts,
        config: config.clone(),
        source: source.as_ref(),
        tok: &tok,
        progress,
        fingerprint: source.fingerprint(),
    };
    progress.start(total);
    let workers = if opts.workers == 0 {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    } else {
        opts.workers
    };
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(workers)
        .thread_name(|i| format!("gadms-pack-{i}"))
        .build()
        .map_err(|e| PackError::Options(format!("cannot start {workers} workers: {e}")))?;
    let results: Vec<Result<ChunkDone, PackError>> = pool.install(|| {
        (0..n_chunks)
            .into_par_iter()
            .map(|k| run_chunk(&ctx, k))
            .collect()
    });
    let mut done = Vec::with_capacity(results.len());
    for r in results {
        done.push(r?);
    }

    // Rejects: the ones found while indexing the source plus each chunk's, in source order.
    let mut rejects: Vec<Reject> = source.early_rejects().to_vec();
    for d in &done {
        rejects.extend(d.record.rejects.iter().cloned());
    }
    rejects.sort_by(|a, b| (&a.source, a.row).cmp(&(&b.source, b.row)));
    write_rejects(&opts.out, &rejects)?;

    let mut pids: Vec<u64> = done.iter().flat_map(|d| d.pids.iter().copied()).collect();
    pids.sort_unstable();
    pids.dedup();
    let images: u64 = done.iter().map(|d| d.record.images).sum();
    let truncated: u64 = done.iter().map(|d| d.record.truncated).sum();
    let reused = done.iter().filter(|d| d.reused).count();
    let infos: Vec<ShardInfo> = done
        .iter()
        .filter(|d| d.record.info.count > 0)
        .map(|d| d.record.info.clone())
        .collect();
    let mut warnings = Vec::new();
    if split == "train"
        && let Some(mut w) = contiguity_warning(&pids)
    {
        if opts.format.is_webperson() {
            w.push_str(
                " (expected for WebPerson: pid = 2 × image_id + caption_idx keeps the numbers \
                     of rejected images; pretraining only compares pids, so this is harmless)",
            );
        }
        warnings.push(w);
    }
    let manifest = Manifest::new(
        config,
        infos,
        images,
        pids.len() as u64,
        rejects.len() as u64,
    );
    if manifest.samples == 0 {
        return Err(PackError::source(
            &opts.src,
            format!(
                "nothing to pack: all {total} images of split '{split}' were rejected (see {})",
                opts.out.join(REJECTS_FILE).display()
            ),
        ));
    }
    manifest
        .write(&opts.out)
        .map_err(|e| PackError::io(&manifest_path, "cannot write manifest", e))?;
    Ok(PackReport {
        manifest,
        out: opts.out.clone(),
        reused_shards: reused,
        chunks: n_chunks as usize,
        truncated,
        warnings,
    })
}

/// `None` when the sorted distinct `pids` are exactly `0..n`; otherwise a warning text.
fn contiguity_warning(pids: &[u64]) -> Option<String> {
    let n = pids.len() as u64;
    match pids.last() {
        None => None,
        Some(&max) if max + 1 == n => None,
        Some(&max) => {
            let mut missing = Vec::new();
            let mut expect = 0u64;
            for &p in pids {
                while expect < p && missing.len() < 5 {
                    missing.push(expect.to_string());
                    expect += 1;
                }
                expect = p + 1;
                if missing.len() >= 5 {
                    break;
                }
            }
            Some(format!(
                "train pids are not contiguous from 0: {n} distinct pids, largest {max} \
                 (missing: {}{}); an ID classifier would need {} classes",
                missing.join(", "),
                if (max + 1 - n) as usize > missing.len() {
                    ", …"
                } else {
                    ""
                },
                max + 1
            ))
        }
    }
}

fn write_rejects(out: &Path, rejects: &[Reject]) -> Result<(), PackError> {
    let path = out.join(REJECTS_FILE);
    let tmp = crate::temp_path(&path);
    let mut text = String::new();
    for r in rejects {
        text.push_str(&serde_json::to_string(r).expect("reject serialises"));
        text.push('\n');
    }
    std::fs::write(&tmp, text).map_err(|e| PackError::io(&tmp, "cannot write rejects", e))?;
    std::fs::rename(&tmp, &path).map_err(|e| PackError::io(&path, "cannot write rejects", e))
}

fn chunk_key(ctx: &Ctx<'_>, k: u64) -> ChunkKey {
    let total = ctx.source.len();
    let first = k * ctx.opts.shard_size;
    ChunkKey {
        format: ctx.opts.format.name().into(),
        split: ctx.config.split.clone(),
        source: ctx.fingerprint.clone(),
        source_images: total,
        shard_size: ctx.opts.shard_size,
        chunk: k,
        first,
        end: (first + ctx.opts.shard_size).min(total),
    }
}

/// A finished chunk from an earlier run, if its sidecar and shard (every sample) check out.
fn try_reuse(ctx: &Ctx<'_>, k: u64, key: &ChunkKey) -> Option<ChunkDone> {
    let out = &ctx.opts.out;
    let raw = std::fs::read(out.join(sidecar_file_name(k))).ok()?;
    let record: ChunkRecord = serde_json::from_slice(&raw).ok()?;
    if record.key != *key || record.info.file != shard_file_name(k) {
        return None;
    }
    let path = out.join(&record.info.file);
    let bytes = std::fs::metadata(&path).ok()?.len();
    let shard = Shard::open(&path).ok()?;
    if *shard.config() != ctx.config
        || shard.len() as u64 != record.info.count
        || bytes != record.info.bytes
    {
        return None;
    }
    let pids = (0..shard.len())
        .map(|i| shard.pid(i))
        .collect::<Result<Vec<u64>, _>>()
        .ok()?;
    // Every sample's checksums (docs/data-format.md): a shard damaged since it was written is
    // packed again instead of being reused and failing every later read.
    if (0..shard.len()).any(|i| shard.sample(i).is_err()) {
        return None;
    }
    Some(ChunkDone {
        record,
        pids,
        reused: true,
    })
}

fn run_chunk(ctx: &Ctx<'_>, k: u64) -> Result<ChunkDone, PackError> {
    let key = chunk_key(ctx, k);
    if let Some(done) = try_reuse(ctx, k, &key) {
        ctx.progress.advance(key.end - key.first);
        return Ok(done);
    }
    let out = &ctx.opts.out;
    let sidecar = out.join(sidecar_file_name(k));
    match std::fs::remove_file(&sidecar) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(PackError::io(&sidecar, "cannot remove stale sidecar", e)),
    }
    let shard_path = out.join(shard_file_name(k));
    let mut writer = ShardWriter::create(&shard_path, &ctx.config)?;
    let mut rejects = Vec::new();
    let mut pids = Vec::new();
    let (mut images, mut truncated) = (0u64, 0u64);
    let mut batch: Vec<Item> = Vec::with_capacity(BATCH);
    let mut flush = |batch: &mut Vec<Item>| -> Result<(), PackError> {
        let n = batch.len() as u64;
        let prepared: Vec<Prepared> = std::mem::take(batch)
            .into_par_iter()
            .map(|item| common::prepare(item, ctx.tok, ctx.opts))
            .collect();
        for p in prepared {
            rejects.extend(p.rejects);
            truncated += p.truncated;
            let Some(img) = p.image else { continue };
            images += 1;
            for s in &p.samples {
                writer.push(&crate::shard::SampleIn {
                    image: &img,
                    ids: &s.ids,
                    caption: &s.text,
                    path: &p.path,
                    pid: s.pid,
                    image_id: p.image_id,
                    caption_idx: s.idx,
                })?;
                pids.push(s.pid);
            }
        }
        ctx.progress.advance(n);
        Ok(())
    };
    ctx.source.read(key.first, key.end, &mut |item| {
        batch.push(item);
        if batch.len() >= BATCH {
            flush(&mut batch)?;
        }
        Ok(())
    })?;
    flush(&mut batch)?;
    let info = writer.finish()?;
    let record = ChunkRecord {
        key,
        info,
        images,
        truncated,
        rejects,
    };
    let tmp = crate::temp_path(&sidecar);
    std::fs::write(
        &tmp,
        serde_json::to_vec_pretty(&record).expect("sidecar serialises"),
    )
    .map_err(|e| PackError::io(&tmp, "cannot write sidecar", e))?;
    std::fs::rename(&tmp, &sidecar)
        .map_err(|e| PackError::io(&sidecar, "cannot write sidecar", e))?;
    Ok(ChunkDone {
        record,
        pids,
        reused: false,
    })
}
