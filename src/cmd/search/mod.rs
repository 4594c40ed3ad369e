//! `gadms search`: ranks a gallery (a `gadms pack` output or a folder of images, searched
//! recursively) for one sentence (`--query`) or many (`--queries FILE`, one per line, the
//! gallery encoded once), prints the top K as a table or JSON (`--json`) and optionally writes a
//! self-contained HTML page. Gallery embeddings are cached on disk so that repeated searches
//! encode only the sentences.

use crate::eval::rank::top_k;
use crate::eval::{check_finite_rows, check_finite_sims, encode_captions, encode_images};
use crate::preset::Preset;
use crate::report::{check_query, data_uri, escape, page};
use crate::weights::{build_loaded, read_with_preset};
use crate::with_preset;
use anyhow::{Context, Result, bail};
use argh::FromArgs;
use gadms_ckpt::tensors::write_atomic;
use gadms_data::ClipTokenizer;
use gadms_data::shard::Fnv64;
use rayon::prelude::*;
use std::io::Read;
use std::path::{Path, PathBuf};

mod gallery;
use gallery::{Gallery, open_gallery};

/// Text→image search: ranks the gallery images by cosine similarity to the sentence.
#[derive(FromArgs)]
#[argh(subcommand, name = "search")]
pub struct SearchArgs {
    /// device: cpu or cuda[:N] (default cpu; cuda needs a build with the `cuda` feature,
    /// scripts/build-cuda.sh)
    #[argh(option, default = "Default::default()")]
    pub device: crate::device::DeviceChoice,
    /// precision of the matrix products on CUDA: f32 (default), tf32 or bf16 (tensor cores
    /// with f32 sums; docs/gpu.md); the CPU computes in f32 only
    #[argh(option)]
    pub precision: Option<crate::precision::Precision>,
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
    pub query: Option<String>,
    /// a UTF-8 text file of queries, one sentence per line (instead of --query; the gallery
    /// is encoded once for all of them)
    #[argh(option)]
    pub queries: Option<PathBuf>,
    /// the query's person id, to mark results right (green) or wrong (red); taken from the
    /// gallery when the query is one of its captions (with --query only)
    #[argh(option)]
    pub query_pid: Option<u64>,
    /// print the results as one JSON document on stdout instead of the table
    #[argh(switch)]
    pub json: bool,
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

/// Largest `--queries` file read (a larger one is refused, not read).
const MAX_QUERIES_BYTES: u64 = 64 << 20;

/// The queries of the run: `--query`, or the lines of `--queries`, each checked (no words: an
/// error naming the line; only stopwords: a warning).
fn read_queries(a: &SearchArgs) -> Result<Vec<String>> {
    let lines: Vec<(String, String)> = match (&a.query, &a.queries) {
        (Some(q), None) => vec![("--query".into(), q.clone())],
        (None, Some(_)) if a.query_pid.is_some() => {
            bail!(
                "--query-pid goes with one --query (with --queries the pids come from the gallery)"
            )
        }
        (None, Some(f)) => {
            let where_ = f.display().to_string();
            let len = std::fs::metadata(f)
                .with_context(|| format!("--queries {where_}"))?
                .len();
            if len > MAX_QUERIES_BYTES {
                bail!("--queries {where_}: {len} bytes; the limit is {MAX_QUERIES_BYTES}");
            }
            let text = std::fs::read_to_string(f)
                .with_context(|| format!("--queries {where_}: not a UTF-8 text file"))?;
            text.lines()
                .enumerate()
                .map(|(i, l)| (format!("{where_}:{}", i + 1), l.to_string()))
                .collect()
        }
        (Some(_), Some(_)) => bail!("give --query or --queries, not both"),
        (None, None) => bail!("give the sentence to search for: --query TEXT or --queries FILE"),
    };
    if lines.is_empty() {
        bail!("--queries: the file holds no query");
    }
    let mut out = Vec::with_capacity(lines.len());
    for (at, q) in lines {
        if let Some(w) = check_query(&q).map_err(|m| anyhow::anyhow!("{at}: {m}"))? {
            eprintln!("warning: {at}: {w}");
        }
        out.push(q);
    }
    Ok(out)
}

/// The results of one query.
#[derive(Clone, Debug, serde::Serialize)]
struct Found {
    query: String,
    /// The query's person id, when known (`--query-pid` or a caption of the gallery).
    pid: Option<u64>,
    hits: Vec<Hit>,
}

/// Runs the command.
pub fn run(a: SearchArgs) -> Result<()> {
    let queries = read_queries(&a)?;
    if a.batch_size == 0 {
        bail!("--batch-size must be at least 1");
    }
    let tok = ClipTokenizer::new()?;
    let ids = queries
        .iter()
        .map(|q| tok.encode(q))
        .collect::<std::result::Result<Vec<_>, _>>()
        .context("tokenizing the queries")?;
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

    let t0 = std::time::Instant::now();
    let (q, img, encoded) = crate::with_device!(a.device, 0, precision = crate::precision::Precision::for_inference(a.precision, a.device)?, D, dev => with_preset!(preset, D, M => {
        let m: M = build_loaded(&dev, w, &a.weights)?;
        let q = encode_captions(&m, &ids, a.batch_size);
        check_finite_rows(&q, d, "query").context("the queries")?;
        match cached {
            Some(e) => (q, e, false),
            None => {
                let img = crate::eval::with_progress(|| encode_images(&m, n, a.batch_size, |r| {
                    let px: Vec<Vec<f32>> = r
                        .into_par_iter()
                        .map(|i| gallery.pixels(i, h, wd))
                        .collect::<Result<_>>()?;
                    Ok(px.concat())
                }))?;
                check_finite_rows(&img, d, "gallery image")?;
                (q, img, true)
            }
        }
    }))?;
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
    let known = gallery.items.iter().all(|i| i.pid.is_some());
    // Each gallery caption's pid by its normalised text (the first caption wins), built once
    // for all queries.
    let mut caption_pid = std::collections::HashMap::new();
    for (c, p) in &gallery.captions {
        caption_pid.entry(c.trim().to_lowercase()).or_insert(*p);
    }
    let found = queries
        .iter()
        .zip(q.chunks_exact(d))
        .map(|(text, qv)| rank_one(&a, &gallery, &caption_pid, &img, d, text, qv))
        .collect::<Result<Vec<_>>>()?;
    if a.json {
        let doc = serde_json::json!({
            "gallery": a.gallery.display().to_string(),
            "images": n,
            "pids_known": known,
            "results": found,
        });
        println!("{}", serde_json::to_string_pretty(&doc)?);
    } else {
        for f in &found {
            print_table(f, n, known);
        }
    }
    if let Some(p) = &a.html {
        let mut body = String::from("<h1>gadms search</h1>\n");
        for f in &found {
            body.push_str(&search_html(f, known, &gallery)?);
        }
        let title = match found.as_slice() {
            [one] => format!("gadms search: {}", one.query),
            many => format!("gadms search: {} queries", many.len()),
        };
        write_atomic(p, page(&title, &body).as_bytes())
            .map_err(|m| anyhow::anyhow!("{}: {m}", p.display()))?;
        if !a.json {
            println!("wrote {}", p.display());
        }
    }
    Ok(())
}

/// Ranks the gallery `img` [n, d] for the query feature `qv` [d]: the top `--top` hits and the
/// query's person id (`--query-pid`, or from `caption_pid`, the gallery captions' pids by their
/// trimmed, lower-cased text).
fn rank_one(
    a: &SearchArgs,
    gallery: &Gallery,
    caption_pid: &std::collections::HashMap<String, u64>,
    img: &[f32],
    d: usize,
    text: &str,
    qv: &[f32],
) -> Result<Found> {
    let n = gallery.items.len();
    let scores: Vec<f32> = img
        .chunks_exact(d)
        .map(|g| g.iter().zip(qv).map(|(x, y)| x * y).sum())
        .collect();
    check_finite_sims(&scores, n, "the query", "gallery image")?;
    let pid = a
        .query_pid
        .or_else(|| caption_pid.get(&text.trim().to_lowercase()).copied());
    let hits = top_k(&scores, a.top)
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
    Ok(Found {
        query: text.to_string(),
        pid,
        hits,
    })
}

/// The table of one query's results (✓/✗ when the pids are known).
fn print_table(f: &Found, n: usize, known: bool) {
    println!(
        "query {:?}{}: top {} of {n} gallery images (cosine; ties by gallery order)",
        f.query,
        f.pid
            .map(|p| format!(" (person id {p})"))
            .unwrap_or_default(),
        f.hits.len()
    );
    for hit in &f.hits {
        let mark = match (f.pid, hit.pid) {
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
}

/// One query's section of the results page: the query and one card per hit with the image
/// embedded as a data URI, green/red borders when the query's person id is known.
fn search_html(f: &Found, known: bool, g: &Gallery) -> Result<String> {
    let qpid = f.pid.filter(|_| known);
    let mut b = String::new();
    b.push_str(&format!(
        "<div class=\"q\">query: <b class=\"query\">{}</b>{}</div>\n<div class=\"grid\">\n",
        escape(&f.query),
        qpid.map(|p| format!(" &middot; person id {p} (green = same person, red = other)"))
            .unwrap_or_default()
    ));
    for h in &f.hits {
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
    Ok(b)
}
