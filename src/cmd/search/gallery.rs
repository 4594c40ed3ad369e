//! The gallery of `gadms search`: a `gadms pack` output, or a folder of JPEG/PNG images searched
//! recursively (sorted by path, so the order and the cache key do not depend on the file
//! system).

use anyhow::{Context, Result, bail};
use gadms_data::augment::{decode_rgb8, test_transform};
use gadms_data::manifest::{Dataset, MANIFEST_FILE};
use gadms_data::shard::Fnv64;
use gadms_data::tokenizer::tokenizer_hash;
use std::collections::HashSet;
use std::io::Read;
use std::path::{Path, PathBuf};

/// Where a gallery item's image comes from.
#[derive(Clone, Debug)]
pub(super) enum Source {
    /// A file of a folder gallery.
    File(PathBuf),
    /// Sample `index` of shard `shard` of a packed gallery.
    Packed { shard: usize, index: usize },
}

/// One gallery image.
#[derive(Clone, Debug)]
pub(super) struct Item {
    /// Displayed name (file path or source path in the pack).
    pub name: String,
    /// Person id, when known.
    pub pid: Option<u64>,
    pub src: Source,
}

/// A gallery: its items, the dataset when packed, and a content hash.
pub(super) struct Gallery {
    pub items: Vec<Item>,
    pub ds: Option<Dataset>,
    /// FNV-1a over the gallery content.
    pub hash: u64,
    /// Captions with their pid (packed galleries), for taking the query's pid.
    pub captions: Vec<(String, u64)>,
}

const IMAGE_EXTS: &[&str] = &["jpg", "jpeg", "png"];

pub(super) fn open_gallery(dir: &Path, skip_corrupt: bool) -> Result<Gallery> {
    if !dir.is_dir() {
        bail!("--gallery {}: not a directory", dir.display());
    }
    if dir.join(MANIFEST_FILE).exists() {
        let mut ds = Dataset::open(dir, Some(&tokenizer_hash())).with_context(|| {
            format!(
                "--gallery {}: not a usable `gadms pack` output",
                dir.display()
            )
        })?;
        if skip_corrupt {
            crate::train::data::skip_damaged(&mut ds, "--gallery")?;
        }
        let mut items = Vec::new();
        let mut seen = HashSet::new();
        let mut captions = Vec::new();
        for (si, shard) in ds.shards.iter().enumerate() {
            for i in (0..shard.len()).filter(|&i| !ds.is_skipped_at(si, i)) {
                let s = shard.sample(i)?;
                captions.push((s.caption.to_string(), s.pid));
                if seen.insert(s.image_id) {
                    items.push(Item {
                        name: s.path.to_string(),
                        pid: Some(s.pid),
                        src: Source::Packed {
                            shard: si,
                            index: i,
                        },
                    });
                }
            }
        }
        let mut hash = u64::from_str_radix(ds.manifest.content_hash.trim_start_matches("0x"), 16)
            .unwrap_or_else(|_| {
                let mut h = Fnv64::default();
                h.update(ds.manifest.content_hash.as_bytes());
                h.0
            });
        if !ds.damaged().is_empty() {
            // Another gallery than the whole pack: its own cache key.
            let mut h = Fnv64(hash);
            h.update(ds.skip_hash().as_bytes());
            hash = h.0;
        }
        if items.is_empty() {
            bail!(
                "--gallery {}: the packed gallery holds no images",
                dir.display()
            );
        }
        return Ok(Gallery {
            items,
            ds: Some(ds),
            hash,
            captions,
        });
    }
    let files = image_files(dir)?;
    if files.is_empty() {
        bail!(
            "--gallery {}: empty gallery (no .jpg/.jpeg/.png files in it or its subfolders, and \
             no manifest.json)",
            dir.display()
        );
    }
    let mut h = Fnv64::default();
    let mut buf = Vec::new();
    for f in &files {
        // The path below the gallery folder (the file name for a flat folder).
        let rel = f.strip_prefix(dir).unwrap_or(f);
        h.update(rel.as_os_str().as_encoded_bytes());
        buf.clear();
        std::fs::File::open(f)
            .and_then(|mut r| r.read_to_end(&mut buf))
            .with_context(|| format!("{}", f.display()))?;
        h.update(&(buf.len() as u64).to_le_bytes());
        h.update(&buf);
    }
    let items = files
        .into_iter()
        .map(|p| Item {
            name: p.display().to_string(),
            pid: None,
            src: Source::File(p),
        })
        .collect();
    Ok(Gallery {
        items,
        ds: None,
        hash: h.0,
        captions: Vec::new(),
    })
}

impl Gallery {
    /// The encoded image bytes of item `i`.
    pub(super) fn bytes(&self, i: usize) -> Result<Vec<u8>> {
        match &self.items[i].src {
            Source::File(p) => std::fs::read(p).with_context(|| format!("{}", p.display())),
            Source::Packed { shard, index } => {
                let ds = self.ds.as_ref().expect("packed gallery has a dataset");
                Ok(ds.shards[*shard].sample(*index)?.image.to_vec())
            }
        }
    }

    /// CLIP-normalised pixels [3, h, w] of item `i`.
    pub(super) fn pixels(&self, i: usize, h: usize, w: usize) -> Result<Vec<f32>> {
        let bytes = self.bytes(i)?;
        let rgb = decode_rgb8(&bytes, h, w).map_err(|m| {
            anyhow::anyhow!("{}: cannot decode the image ({m})", self.items[i].name)
        })?;
        let mut px = vec![0.0; 3 * h * w];
        test_transform(&rgb, h, w, &mut px);
        Ok(px)
    }
}

/// Folder depth [`image_files`] descends to.
const MAX_DEPTH: usize = 32;

/// The JPEG/PNG files under `dir` and its subfolders (symbolic links followed, each real
/// folder visited once, by the first path in name order that reaches it), sorted by path.
fn image_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    let mut seen = HashSet::new();
    walk(dir, 0, &mut seen, &mut files)?;
    files.sort();
    Ok(files)
}

fn walk(
    dir: &Path,
    depth: usize,
    seen: &mut HashSet<PathBuf>,
    files: &mut Vec<PathBuf>,
) -> Result<()> {
    let real = dir
        .canonicalize()
        .with_context(|| format!("--gallery {}", dir.display()))?;
    if !seen.insert(real) {
        return Ok(()); // a folder reached again through a link: its files are listed already
    }
    if depth > MAX_DEPTH {
        bail!(
            "--gallery: {} is more than {MAX_DEPTH} folders deep",
            dir.display()
        );
    }
    let mut entries = std::fs::read_dir(dir)
        .and_then(|es| {
            es.map(|e| e.map(|e| e.path()))
                .collect::<std::io::Result<Vec<_>>>()
        })
        .with_context(|| format!("--gallery {}", dir.display()))?;
    // In name order, so which path reaches a linked folder first does not depend on the file
    // system.
    entries.sort();
    for p in entries {
        if p.is_dir() {
            walk(&p, depth + 1, seen, files)?;
        } else if p.is_file()
            && p.extension()
                .and_then(|e| e.to_str())
                .is_some_and(|e| IMAGE_EXTS.contains(&e.to_ascii_lowercase().as_str()))
        {
            files.push(p);
        }
    }
    Ok(())
}
