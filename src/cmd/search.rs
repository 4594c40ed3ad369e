//! `gadms search`: ranks a gallery (a `gadms pack` output or a folder of images) for one
//! sentence, prints the top K and optionally writes a self-contained HTML page. Gallery
//! embeddings are cached on disk so that repeated queries encode only the sentence.

use crate::eval::rank::top_k;
use crate::eval::{check_finite_rows, check_finite_sims, encode_captions, encode_images};
use crate::preset::{Dev, Preset};
use crate::report::{check_query, data_uri, escape, page};
use crate::weights::{build_loaded, read_with_preset};
use crate::with_preset;
use anyhow::{Context, Result, bail};
use argh::FromArgs;
use gadms_ckpt::tensors::write_atomic;
use gadms_data::ClipTokenizer;
use gadms_data::augment::{decode_rgb8, test_transform};
use gadms_data::manifest::{Dataset, MANIFEST_FILE};
use gadms_data::shard::Fnv64;
use gadms_data::tokenizer::tokenizer_hash;
use rayon::prelude::*;
use std::collections::HashSet;
use std::io::Read;
use std::path::{Path, PathBuf};

/// Text→image search: ranks the gallery images by cosine similarity to the sentence.
#[derive(FromArgs)]
#[argh(subcommand, name = "search")]
pub struct SearchArgs {
    /// weight file (OpenAI/open_clip, HF CLIPModel or gadms safetensors)
    #[argh(option)]
    pub weights: PathBuf,
    /// model preset (vit-b-16 or tiny); inferred from the tensor shapes when omitted
    #[argh(option)]
    pub preset: Option<Preset>,
    /// the gallery: a `gadms pack` output or a folder of JPEG/PNG images
    #[argh(option)]
    pub gallery: PathBuf,
    /// the sentence describing the person
    #[argh(option)]
    pub query: String,
    /// the query's person id, to mark results right (green) or wrong (red); taken from the
    /// gallery when the query is one of its captions
    #[argh(option)]
    pub query_pid: Option<u64>,
    /// how many results to list (default 10)
    #[argh(option, default = "10")]
    pub top: usize,
    /// write a self-contained HTML page of the results
    #[argh(option)]
    pub html: Option<PathBuf>,
    /// directory of the gallery embedding cache (default $XDG_CACHE_HOME/gadms or
    /// ~/.cache/gadms)
    #[argh(option)]
    pub cache_dir: Option<PathBuf>,
    /// do not read or write the embedding cache
    #[argh(switch)]
    pub no_cache: bool,
    /// images per forward pass (default 64)
    #[argh(option, default = "64")]
    pub batch_size: usize,
    /// packed gallery: verify every sample first and leave the damaged ones out (listed on
    /// stderr) instead of stopping at the first one
    #[argh(switch)]
    pub skip_corrupt: bool,
}

/// Where a gallery item's image comes from.
#[derive(Clone, Debug)]
enum Source {
    /// A file of a folder gallery.
    File(PathBuf),
    /// Sample `index` of shard `shard` of a packed gallery.
    Packed { shard: usize, index: usize },
}

/// One gallery image.
#[derive(Clone, Debug)]
struct Item {
    /// Displayed name (file path or source path in the pack).
    name: String,
    /// Person id, when known.
    pid: Option<u64>,
    src: Source,
}

/// A gallery: its items, the dataset when packed, and a content hash.
struct Gallery {
    items: Vec<Item>,
    ds: Option<Dataset>,
    /// FNV-1a over the gallery content.
    hash: u64,
    /// Captions with their pid (packed galleries), for taking the query's pid.
    captions: Vec<(String, u64)>,
}

const IMAGE_EXTS: &[&str] = &["jpg", "jpeg", "png"];

fn open_gallery(dir: &Path, skip_corrupt: bool) -> Result<Gallery> {
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
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("--gallery {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.is_file()
                && p.extension()
                    .and_then(|e| e.to_str())
                    .is_some_and(|e| IMAGE_EXTS.contains(&e.to_ascii_lowercase().as_str()))
        })
        .collect();
    files.sort();
    if files.is_empty() {
        bail!(
            "--gallery {}: empty gallery (no .jpg/.jpeg/.png files and no manifest.json)",
            dir.display()
        );
    }
    let mut h = Fnv64::default();
    let mut buf = Vec::new();
    for f in &files {
        h.update(f.file_name().unwrap_or_default().as_encoded_bytes());
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
    fn bytes(&self, i: usize) -> Result<Vec<u8>> {
        match &self.items[i].src {
            Source::File(p) => std::fs::read(p).with_context(|| format!("{}", p.display())),
            Source::Packed { shard, index } => {
                let ds = self.ds.as_ref().expect("packed gallery has a dataset");
                Ok(ds.shards[*shard].sample(*index)?.image.to_vec())
            }
        }
    }

    /// CLIP-normalised pixels [3, h, w] of item `i`.
    fn pixels(&self, i: usize, h: usize, w: usize) -> Result<Vec<f32>> {
        let bytes = self.bytes(i)?;
        let rgb = decode_rgb8(&bytes, h, w).map_err(|m| {
            anyhow::anyhow!("{}: cannot decode the image ({m})", self.items[i].name)
        })?;
        let mut px = vec![0.0; 3 * h * w];
        test_transform(&rgb, h, w, &mut px);
        Ok(px)
    }
}

/// Magic of an embedding cache file.
pub const CACHE_MAGIC: &[u8; 8] = b"GADMSEMB";
/// Version of the cache format (2: with a payload checksum).
pub const CACHE_VERSION: u32 = 2;
/// Header bytes before the embeddings.
const CACHE_HEADER: usize = 44;

/// What reading the cache found.
enum Cached {
    /// No cache file for this key (or one of another format version): encode.
    Miss,
    /// Embeddings whose checksum matched.
    Hit(Vec<f32>),
    /// A cache file for this key that cannot be trusted (why): encode again and rewrite it.
    Damaged(String),
}

/// Cache file: `magic | version u32 | key u64 | n u64 | d u64 | checksum u64 | n·d f32`, little
/// endian; the checksum is FNV-1a 64 of the embedding bytes. A file of this key whose sizes,
/// length, checksum or values (NaN/Inf) are wrong is [`Cached::Damaged`], never used.
fn read_cache(path: &Path, key: u64, n: usize, d: usize) -> Cached {
    let Ok(b) = std::fs::read(path) else {
        return Cached::Miss;
    };
    if b.len() < 12 || &b[..8] != CACHE_MAGIC {
        return Cached::Damaged("not an embedding cache file".into());
    }
    if u32::from_le_bytes(b[8..12].try_into().unwrap()) != CACHE_VERSION {
        return Cached::Miss;
    }
    if b.len() < CACHE_HEADER {
        return Cached::Damaged(format!("truncated header ({} bytes)", b.len()));
    }
    let u64_at = |o: usize| u64::from_le_bytes(b[o..o + 8].try_into().unwrap());
    if u64_at(12) != key || u64_at(20) != n as u64 || u64_at(28) != d as u64 {
        return Cached::Damaged("its key or sizes do not match this gallery and model".into());
    }
    if b.len() != CACHE_HEADER + 4 * n * d {
        return Cached::Damaged(format!(
            "{} bytes, expected {}",
            b.len(),
            CACHE_HEADER + 4 * n * d
        ));
    }
    let mut h = Fnv64::default();
    h.update(&b[CACHE_HEADER..]);
    if h.0 != u64_at(36) {
        return Cached::Damaged("checksum mismatch".into());
    }
    let emb: Vec<f32> = b[CACHE_HEADER..]
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect();
    if emb.iter().any(|x| !x.is_finite()) {
        return Cached::Damaged("non-finite values".into());
    }
    Cached::Hit(emb)
}

fn write_cache(path: &Path, key: u64, n: usize, d: usize, emb: &[f32]) -> Result<(), String> {
    let payload: Vec<u8> = emb.iter().flat_map(|x| x.to_le_bytes()).collect();
    let mut h = Fnv64::default();
    h.update(&payload);
    let mut b = Vec::with_capacity(CACHE_HEADER + payload.len());
    b.extend_from_slice(CACHE_MAGIC);
    b.extend_from_slice(&CACHE_VERSION.to_le_bytes());
    b.extend_from_slice(&key.to_le_bytes());
    b.extend_from_slice(&(n as u64).to_le_bytes());
    b.extend_from_slice(&(d as u64).to_le_bytes());
    b.extend_from_slice(&h.0.to_le_bytes());
    b.extend_from_slice(&payload);
    write_atomic(path, &b)
}

/// FNV-1a 64 of a file's bytes, streamed.
fn file_hash(path: &Path) -> Result<u64> {
    let mut f = std::fs::File::open(path).with_context(|| format!("{}", path.display()))?;
    let mut h = Fnv64::default();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(h.0)
}

fn default_cache_dir() -> Option<PathBuf> {
    std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .map(|p| p.join("gadms"))
}

/// One result line.
#[derive(Clone, Debug, serde::Serialize)]
struct Hit {
    rank: usize,
    score: f32,
    name: String,
    pid: Option<u64>,
    index: usize,
}

/// Runs the command.
pub fn run(a: SearchArgs) -> Result<()> {
    if let Some(w) = check_query(&a.query).map_err(|m| anyhow::anyhow!("--query: {m}"))? {
        eprintln!("warning: {w}");
    }
    if a.batch_size == 0 {
        bail!("--batch-size must be at least 1");
    }
    let tok = ClipTokenizer::new()?;
    let ids = tok.encode(&a.query).context("--query")?;
    let gallery = open_gallery(&a.gallery, a.skip_corrupt)?;
    let (w, preset) = read_with_preset(&a.weights, a.preset)?;
    let spec = preset.spec();
    let (h, wd, d) = (spec.vision.image_h, spec.vision.image_w, spec.embed());
    let n = gallery.items.len();

    let mut key = Fnv64::default();
    key.update(&file_hash(&a.weights)?.to_le_bytes());
    key.update(spec.name.as_bytes());
    key.update(&gallery.hash.to_le_bytes());
    let key = key.0;
    let cache_path = (!a.no_cache)
        .then(|| a.cache_dir.clone().or_else(default_cache_dir))
        .flatten()
        .map(|dir| dir.join(format!("{key:016x}.emb")));
    let cached = match cache_path.as_deref().map(|p| (p, read_cache(p, key, n, d))) {
        Some((_, Cached::Hit(e))) => Some(e),
        Some((p, Cached::Damaged(why))) => {
            eprintln!(
                "note: ignoring the damaged embedding cache {} ({why}); encoding the gallery again",
                p.display()
            );
            None
        }
        _ => None,
    };

    let dev = Dev::default();
    let t0 = std::time::Instant::now();
    let (q, img, encoded) = with_preset!(preset, M => {
        let m: M = build_loaded(&dev, w, &a.weights)?;
        let q = encode_captions(&m, &[ids], 1);
        check_finite_rows(&q, d, "query").context("--query")?;
        match cached {
            Some(e) => (q, e, false),
            None => {
                let img = encode_images(&m, n, a.batch_size, |r| {
                    let px: Vec<Vec<f32>> = r
                        .into_par_iter()
                        .map(|i| gallery.pixels(i, h, wd))
                        .collect::<Result<_>>()?;
                    Ok(px.concat())
                })?;
                check_finite_rows(&img, d, "gallery image")?;
                (q, img, true)
            }
        }
    });
    if encoded {
        eprintln!(
            "encoded {n} gallery images in {:.2} s",
            t0.elapsed().as_secs_f64()
        );
        if let Some(p) = &cache_path {
            match write_cache(p, key, n, d, &img) {
                Ok(()) => eprintln!("cached the gallery embeddings in {}", p.display()),
                Err(m) => eprintln!("warning: cannot write the cache {}: {m}", p.display()),
            }
        }
    } else if let Some(p) = &cache_path {
        eprintln!("gallery embeddings from the cache {}", p.display());
    }
    let scores: Vec<f32> = img
        .chunks_exact(d)
        .map(|g| g.iter().zip(&q).map(|(x, y)| x * y).sum())
        .collect();
    check_finite_sims(&scores, n, "the query", "gallery image")?;
    let qpid = a.query_pid.or_else(|| {
        let want = a.query.trim().to_lowercase();
        gallery
            .captions
            .iter()
            .find(|(c, _)| c.trim().to_lowercase() == want)
            .map(|&(_, p)| p)
    });
    let known = gallery.items.iter().all(|i| i.pid.is_some());
    let hits: Vec<Hit> = top_k(&scores, a.top)
        .into_iter()
        .enumerate()
        .map(|(r, i)| Hit {
            rank: r + 1,
            score: scores[i],
            name: gallery.items[i].name.clone(),
            pid: gallery.items[i].pid,
            index: i,
        })
        .collect();
    println!(
        "query {:?}{}: top {} of {n} gallery images (cosine; ties by gallery order)",
        a.query,
        qpid.map(|p| format!(" (person id {p})"))
            .unwrap_or_default(),
        hits.len()
    );
    for hit in &hits {
        let mark = match (qpid, hit.pid) {
            (Some(q), Some(p)) if known => {
                if q == p {
                    "  ✓"
                } else {
                    "  ✗"
                }
            }
            _ => "",
        };
        let pid = hit.pid.map(|p| format!("  pid {p}")).unwrap_or_default();
        println!("{:>4}  {:.4}  {}{pid}{mark}", hit.rank, hit.score, hit.name);
    }
    if let Some(p) = &a.html {
        let html = search_html(&a.query, qpid.filter(|_| known), &hits, &gallery)?;
        write_atomic(p, html.as_bytes()).map_err(|m| anyhow::anyhow!("{}: {m}", p.display()))?;
        println!("wrote {}", p.display());
    }
    Ok(())
}

/// The results page: the query and one card per hit with the image embedded as a data URI,
/// green/red borders when the query's person id is known.
fn search_html(query: &str, qpid: Option<u64>, hits: &[Hit], g: &Gallery) -> Result<String> {
    let mut b = String::new();
    b.push_str("<h1>gadms search</h1>\n");
    b.push_str(&format!(
        "<div class=\"q\">query: <b id=\"query\">{}</b>{}</div>\n<div class=\"grid\">\n",
        escape(query),
        qpid.map(|p| format!(" &middot; person id {p} (green = same person, red = other)"))
            .unwrap_or_default()
    ));
    for h in hits {
        let class = match (qpid, h.pid) {
            (Some(q), Some(p)) if q == p => "card hit",
            (Some(_), Some(_)) => "card miss",
            _ => "card",
        };
        let bytes = g.bytes(h.index)?;
        b.push_str(&format!(
            "<div class=\"{class}\" data-rank=\"{}\"><img alt=\"{}\" src=\"{}\"><br>#{} &middot; {:.4}<br>{}{}</div>\n",
            h.rank,
            escape(&h.name),
            data_uri(&bytes),
            h.rank,
            h.score,
            escape(Path::new(&h.name).file_name().and_then(|f| f.to_str()).unwrap_or(&h.name)),
            h.pid.map(|p| format!("<br>pid {p}")).unwrap_or_default()
        ));
    }
    b.push_str("</div>\n");
    Ok(page(&format!("gadms search: {query}"), &b))
}
