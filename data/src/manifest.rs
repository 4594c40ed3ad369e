//! A dataset = a directory with `manifest.json` and its shards.

use crate::shard::{Fnv64, Shard, ShardConfig, ShardError, ShardInfo};
use serde::{Deserialize, Serialize};
use std::path::{Component, Path, PathBuf};

/// Magic string of a manifest.
pub const MANIFEST_MAGIC: &str = "gadms-manifest";
/// Manifest format version.
pub const MANIFEST_VERSION: u32 = 1;
/// File name of the manifest inside a dataset directory.
pub const MANIFEST_FILE: &str = "manifest.json";

/// Counts and provenance of a packed dataset.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// Always [`MANIFEST_MAGIC`].
    pub magic: String,
    /// Always [`MANIFEST_VERSION`].
    pub version: u32,
    /// Shared config of every shard (dataset, split, image size, encoding, tokenizer hash).
    pub config: ShardConfig,
    /// The shards, in order.
    pub shards: Vec<ShardInfo>,
    /// Total samples (captions).
    pub samples: u64,
    /// Distinct images.
    pub images: u64,
    /// Distinct person ids.
    pub identities: u64,
    /// Rows skipped at pack time (listed in `rejects.jsonl`).
    pub rejects: u64,
    /// FNV-1a 64 over the shard hashes in order.
    pub content_hash: String,
}

/// A problem with a dataset directory.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    /// Cannot read or parse the manifest.
    #[error("{path}: {what}")]
    Bad {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        what: String,
    },
    /// A shard problem.
    #[error(transparent)]
    Shard(#[from] ShardError),
}

impl Manifest {
    /// Builds a manifest from written shards.
    pub fn new(
        config: ShardConfig,
        shards: Vec<ShardInfo>,
        images: u64,
        identities: u64,
        rejects: u64,
    ) -> Self {
        let mut h = Fnv64::default();
        for s in &shards {
            h.update(s.hash.as_bytes());
        }
        Manifest {
            magic: MANIFEST_MAGIC.into(),
            version: MANIFEST_VERSION,
            samples: shards.iter().map(|s| s.count).sum(),
            config,
            shards,
            images,
            identities,
            rejects,
            content_hash: h.hex(),
        }
    }

    /// Reads `dir/manifest.json` and checks magic and version.
    pub fn read(dir: &Path) -> Result<Self, ManifestError> {
        let path = dir.join(MANIFEST_FILE);
        let bad = |what: String| ManifestError::Bad {
            path: path.clone(),
            what,
        };
        let raw = std::fs::read(&path).map_err(|e| {
            bad(format!(
                "cannot read manifest ({e}); is this a `gadms pack` output directory?"
            ))
        })?;
        let m: Manifest =
            serde_json::from_slice(&raw).map_err(|e| bad(format!("not a gadms manifest: {e}")))?;
        if m.magic != MANIFEST_MAGIC {
            return Err(bad(format!(
                "magic '{}' is not '{MANIFEST_MAGIC}'",
                m.magic
            )));
        }
        if m.version != MANIFEST_VERSION {
            return Err(bad(format!(
                "manifest version {} (this build reads {MANIFEST_VERSION})",
                m.version
            )));
        }
        m.check_shard_files().map_err(bad)?;
        Ok(m)
    }

    /// Every shard `file` is a relative path of plain names (no `..`, `.`, root or prefix), so
    /// it lies inside the dataset directory, and no shard is listed twice (which would count
    /// and train on its samples twice).
    pub fn check_shard_files(&self) -> Result<(), String> {
        let mut seen = std::collections::HashSet::new();
        for info in &self.shards {
            let p = Path::new(&info.file);
            let plain = p.components().next().is_some()
                && p.components().all(|c| matches!(c, Component::Normal(_)));
            if !plain {
                return Err(format!(
                    "shard file '{}' is not a plain relative name inside the dataset directory",
                    info.file
                ));
            }
            if !seen.insert(p.components().collect::<PathBuf>()) {
                return Err(format!("shard file '{}' is listed twice", info.file));
            }
        }
        Ok(())
    }

    /// Writes `dir/manifest.json` atomically.
    pub fn write(&self, dir: &Path) -> std::io::Result<()> {
        let path = dir.join(MANIFEST_FILE);
        let tmp = crate::temp_path(&dir.join(MANIFEST_FILE));
        std::fs::write(&tmp, serde_json::to_vec_pretty(self).expect("json"))?;
        std::fs::rename(tmp, path)
    }
}

/// A sample [`Dataset::skip_damaged`] found damaged and left out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DamagedSample {
    /// Global sample index (= score-table row; caption ids of the other samples keep theirs).
    pub global: usize,
    /// The shard file.
    pub shard: PathBuf,
    /// Index of the sample within its shard.
    pub index: usize,
    /// What is wrong (as [`ShardError::BadSample`] says it).
    pub what: String,
}

/// An opened dataset: the manifest and its mapped shards, checked against each other.
pub struct Dataset {
    /// The directory.
    pub dir: PathBuf,
    /// The manifest.
    pub manifest: Manifest,
    /// The shards, in manifest order.
    pub shards: Vec<Shard>,
    /// Cumulative sample counts (starts), for global indexing.
    starts: Vec<usize>,
    /// Samples left out ([`Dataset::skip_damaged`]), by ascending global index.
    damaged: Vec<DamagedSample>,
}

impl Dataset {
    /// Opens `dir`: reads the manifest, maps every shard and checks count and config agree.
    /// `tokenizer_hash`, when given, must equal the manifest's.
    pub fn open(dir: &Path, tokenizer_hash: Option<&str>) -> Result<Self, ManifestError> {
        let manifest = Manifest::read(dir)?;
        let mpath = dir.join(MANIFEST_FILE);
        if let Some(h) = tokenizer_hash
            && manifest.config.tokenizer_hash != h
        {
            return Err(ManifestError::Bad {
                path: mpath,
                what: format!(
                    "tokenizer mismatch: packed with tokenizer {}, this build's is {h}; re-run gadms pack",
                    manifest.config.tokenizer_hash
                ),
            });
        }
        let mut shards = Vec::with_capacity(manifest.shards.len());
        let mut starts = Vec::with_capacity(manifest.shards.len() + 1);
        let mut total = 0usize;
        for info in &manifest.shards {
            let shard = Shard::open(&dir.join(&info.file))?;
            if shard.len() as u64 != info.count || *shard.config() != manifest.config {
                return Err(ManifestError::Bad {
                    path: mpath,
                    what: format!(
                        "manifest/shard mismatch for {}: manifest says {} samples of {:?}, shard has {} of {:?}",
                        info.file,
                        info.count,
                        manifest.config,
                        shard.len(),
                        shard.config()
                    ),
                });
            }
            starts.push(total);
            total += shard.len();
            shards.push(shard);
        }
        starts.push(total);
        Ok(Dataset {
            dir: dir.to_path_buf(),
            manifest,
            shards,
            starts,
            damaged: Vec::new(),
        })
    }

    /// `--skip-corrupt`: reads every sample once ([`Shard::sample`]: both checksums, the body
    /// range, the token ids, UTF-8) and leaves the damaged ones out from then on:
    /// [`Dataset::is_skipped`] is true for them, [`Dataset::usable`] counts the others, and the
    /// loader's epoch order and the evaluation sets pass them over. Global indices (score-table
    /// rows, caption ids) of the other samples do not change. Without this call nothing is
    /// skipped: a damaged sample is an error where it is read. Returns the damaged samples,
    /// in order (the same ones on every call for the same files).
    pub fn skip_damaged(&mut self) -> &[DamagedSample] {
        let mut damaged = Vec::new();
        for (si, shard) in self.shards.iter().enumerate() {
            for i in 0..shard.len() {
                if let Err(e) = shard.sample(i) {
                    let what = match e {
                        ShardError::BadSample { what, .. } => what,
                        other => other.to_string(),
                    };
                    damaged.push(DamagedSample {
                        global: self.starts[si] + i,
                        shard: shard.path().to_path_buf(),
                        index: i,
                        what,
                    });
                }
            }
        }
        self.damaged = damaged;
        &self.damaged
    }

    /// The samples left out by [`Dataset::skip_damaged`] (none before it is called).
    pub fn damaged(&self) -> &[DamagedSample] {
        &self.damaged
    }

    /// Whether global sample `i` is left out ([`Dataset::skip_damaged`]).
    pub fn is_skipped(&self, i: usize) -> bool {
        !self.damaged.is_empty() && self.damaged.binary_search_by_key(&i, |d| d.global).is_ok()
    }

    /// Whether sample `index` of shard `shard` is left out.
    pub fn is_skipped_at(&self, shard: usize, index: usize) -> bool {
        self.starts
            .get(shard)
            .is_some_and(|s| self.is_skipped(s + index))
    }

    /// Samples that are not left out.
    pub fn usable(&self) -> usize {
        self.len() - self.damaged.len()
    }

    /// A fingerprint of the left-out samples (FNV-1a 64 of their global indices), to check
    /// that a resumed run leaves out the same ones.
    pub fn skip_hash(&self) -> String {
        let mut h = Fnv64::default();
        for d in &self.damaged {
            h.update(&(d.global as u64).to_le_bytes());
        }
        h.hex()
    }

    /// Total samples.
    pub fn len(&self) -> usize {
        *self.starts.last().unwrap_or(&0)
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// (shard, index within shard) of global sample `i`.
    pub fn locate(&self, i: usize) -> Option<(usize, usize)> {
        if i >= self.len() {
            return None;
        }
        let s = self.starts.partition_point(|&st| st <= i) - 1;
        Some((s, i - self.starts[s]))
    }
}
