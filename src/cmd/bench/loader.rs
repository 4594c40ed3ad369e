//! `gadms bench loader`: decoded + augmented images/s of the training loader (method spec §6.3
//! transforms, `gadms_data::loader`), total and per worker, optionally next to the equivalent
//! PyTorch `DataLoader` + PIL + torchvision pipeline (`benches/loader_torch.py`) over the same
//! image bytes in the same invocation.
//!
//! Without `--data` a temporary dataset of 512 procedurally drawn 384×128 JPEGs (quality 95,
//! like `gadms pack`) is generated. With `--torch PYTHON` the images are exported as files for
//! the Python script, which runs with the same worker count and batch size.

use super::args::BenchArgs;
use anyhow::{Context, Result, bail};
use gadms_data::loader::{Loader, LoaderConfig, Masking, epoch_order};
use gadms_data::manifest::{Dataset, Manifest};
use gadms_data::shard::{SampleIn, ShardConfig, ShardWriter};
use rayon::prelude::*;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

/// Images in the generated dataset.
const GENERATED: usize = 512;
/// Generated image size (IRRA/GA-DMS input, §6.3).
const GEN_H: u32 = 384;
const GEN_W: u32 = 128;

/// One measurement.
#[derive(Debug, Clone, serde::Serialize)]
pub struct LoaderTiming {
    /// Workers (threads or processes).
    pub workers: usize,
    /// Images timed.
    pub images: usize,
    /// Seconds.
    pub seconds: f64,
    /// Images per second.
    pub images_per_s: f64,
    /// Images per second per worker.
    pub images_per_s_per_worker: f64,
}

/// Runs the loader benchmark (`gadms bench loader`).
pub fn run(a: &BenchArgs) -> Result<()> {
    if a.workers == 0 || a.images == 0 || a.batch == 0 {
        bail!("--workers, --images and --batch must be at least 1");
    }
    let workers = crate::cmd::cap_workers(a.workers);
    let tmp = std::env::temp_dir().join(format!("gadms-bench-loader-{}", std::process::id()));
    let res = run_in(a, workers, &tmp);
    let _ = std::fs::remove_dir_all(&tmp);
    res
}

/// The benchmark with `workers` threads (`--workers`, capped at the core count).
fn run_in(a: &BenchArgs, workers: usize, tmp: &Path) -> Result<()> {
    let dir = match &a.data {
        Some(d) => d.clone(),
        None => {
            let d = tmp.join("dataset");
            let t = Instant::now();
            generate(&d, GENERATED)?;
            eprintln!(
                "gadms: generated {GENERATED} JPEG images at {GEN_H}x{GEN_W} in {:.1} s",
                t.elapsed().as_secs_f64()
            );
            d
        }
    };
    let ds =
        Arc::new(Dataset::open(&dir, None).with_context(|| format!("opening {}", dir.display()))?);
    let (h, w) = (
        ds.manifest.config.image_h as usize,
        ds.manifest.config.image_w as usize,
    );
    eprintln!(
        "gadms: {} samples in {} shards ({}x{}), {} workers, batch {}, timing {} images",
        ds.len(),
        ds.shards.len(),
        h,
        w,
        workers,
        a.batch,
        a.images
    );

    let lens: Vec<usize> = ds.shards.iter().map(|s| s.len()).collect();
    let t = Instant::now();
    let _ = epoch_order(&lens, 0, 0, true, 10_000);
    let order_this = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let _ = epoch_order(&vec![10_000; 1_000], 0, 0, true, 10_000);
    let order_10m = t.elapsed().as_secs_f64();

    let ours = bench_ours(ds.clone(), a, workers)?;
    let torch = match &a.torch {
        Some(py) => {
            let img_dir = tmp.join("images");
            let n = export_images(&ds, &img_dir, GENERATED)?;
            eprintln!(
                "gadms: exported {n} images to {} for the PyTorch pipeline",
                img_dir.display()
            );
            Some(run_torch(py, &img_dir, a, workers, h, w)?)
        }
        None => None,
    };

    println!("| pipeline | workers | images | s | images/s | images/s per worker |");
    println!("|---|---|---|---|---|---|");
    let row = |name: &str, t: &LoaderTiming| {
        println!(
            "| {name} | {} | {} | {:.2} | {:.1} | {:.1} |",
            t.workers, t.images, t.seconds, t.images_per_s, t.images_per_s_per_worker
        )
    };
    row("gadms loader", &ours);
    if let Some(t) = &torch {
        row("PyTorch DataLoader", t);
        println!(
            "gadms / PyTorch per core: {:.2}x",
            ours.images_per_s_per_worker / t.images_per_s_per_worker
        );
    }
    println!(
        "epoch order (shard shuffle + 10k shuffle buffer): {:.2} ms for these {} samples, {:.0} ms for 10M",
        order_this * 1e3,
        ds.len(),
        order_10m * 1e3
    );
    if let Some(p) = &a.json {
        let v = serde_json::json!({"data": a.data, "samples": ds.len(), "batch": a.batch,
            "gadms": ours, "torch": torch, "epoch_order_10m_s": order_10m});
        std::fs::write(p, serde_json::to_string_pretty(&v)?)
            .with_context(|| format!("{}", p.display()))?;
    }
    Ok(())
}

fn bench_ours(ds: Arc<Dataset>, a: &BenchArgs, workers: usize) -> Result<LoaderTiming> {
    let cfg = LoaderConfig {
        batch_size: a.batch.min(ds.len()),
        seed: 0,
        workers,
        prefetch: 2 * workers,
        train: true,
        masking: Masking::None,
        drop_last: true,
        ..LoaderConfig::default()
    };
    let mut l = Loader::new(ds, cfg)?;
    // Warm-up: one batch per worker (thread start, page-in of the first shard).
    for _ in 0..workers {
        l.next_batch()?;
    }
    let t = Instant::now();
    let mut n = 0usize;
    let mut check = 0f32;
    while n < a.images {
        let b = l.next_batch()?;
        n += b.len();
        check += b.images[0];
    }
    let s = t.elapsed().as_secs_f64();
    std::hint::black_box(check);
    Ok(LoaderTiming {
        workers,
        images: n,
        seconds: s,
        images_per_s: n as f64 / s,
        images_per_s_per_worker: n as f64 / s / workers as f64,
    })
}

/// A procedural 384×128 "pedestrian": graded background, head, torso, legs, with mild
/// texture noise so the JPEG has photo-like entropy.
fn draw(i: usize) -> image::RgbImage {
    let hash = |x: u32, y: u32| -> i32 {
        let mut z = (x as u64) << 32 | y as u64 ^ (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        ((z >> 59) as i32) - 16
    };
    let pal = |k: usize| -> [i32; 3] {
        let c = [
            [200, 40, 40],
            [40, 60, 180],
            [30, 30, 30],
            [230, 230, 220],
            [60, 140, 60],
            [220, 190, 60],
        ];
        c[(i * 7 + k * 3) % c.len()]
    };
    let (top, bottom) = (pal(0), pal(1));
    let skin = [210, 170, 140];
    image::RgbImage::from_fn(GEN_W, GEN_H, |x, y| {
        let (xf, yf) = (x as f32, y as f32);
        let cx = 64.0 + ((i % 9) as f32 - 4.0) * 3.0;
        let base = if ((xf - cx) / 18.0).powi(2) + ((yf - 55.0) / 24.0).powi(2) < 1.0 {
            skin
        } else if (yf > 80.0 && yf < 220.0) && (xf - cx).abs() < 34.0 - (yf - 80.0) * 0.02 {
            top
        } else if (220.0..370.0).contains(&yf)
            && (xf - cx).abs() < 28.0
            && (xf - cx).abs() > 3.0 + (yf - 220.0) * 0.03
        {
            bottom
        } else {
            let g = 90 + (y * 100 / GEN_H) as i32 + ((i * 13) % 40) as i32;
            [g, g - 5 + (x as i32 % 32) / 4, g - 20]
        };
        let n = hash(x, y);
        let px = |c: i32| (c + n).clamp(0, 255) as u8;
        image::Rgb([px(base[0]), px(base[1]), px(base[2])])
    })
}

fn generate(dir: &Path, n: usize) -> Result<()> {
    std::fs::create_dir_all(dir)?;
    let jpegs: Vec<Vec<u8>> = (0..n)
        .into_par_iter()
        .map(|i| -> Result<Vec<u8>, image::ImageError> {
            let mut buf = Vec::new();
            image::codecs::jpeg::JpegEncoder::new_with_quality(&mut buf, 95)
                .encode_image(&draw(i))?;
            Ok(buf)
        })
        .collect::<Result<_, _>>()?;
    let cfg = ShardConfig {
        dataset: "bench".into(),
        split: "train".into(),
        image_h: GEN_H,
        image_w: GEN_W,
        encoding: "jpeg95".into(),
        tokenizer_hash: "bench".into(),
    };
    let mut infos = Vec::new();
    for (s, chunk) in jpegs.chunks(128).enumerate() {
        let mut w = ShardWriter::create(&dir.join(format!("bench-{s:03}.gshard")), &cfg)?;
        for (k, jpg) in chunk.iter().enumerate() {
            let i = s * 128 + k;
            let mut ids = [0u32; 77];
            ids[..4].copy_from_slice(&[49406, 320, 2533, 49407]);
            w.push(&SampleIn {
                image: jpg,
                ids: &ids,
                caption: "a person",
                path: &format!("{i:05}.jpg"),
                pid: i as u64,
                image_id: i as u64,
                caption_idx: 0,
            })?;
        }
        infos.push(w.finish()?);
    }
    Manifest::new(cfg, infos, n as u64, n as u64, 0).write(dir)?;
    Ok(())
}

/// Writes up to `max` distinct images of the dataset as files (their stored bytes).
fn export_images(ds: &Dataset, dir: &Path, max: usize) -> Result<usize> {
    std::fs::create_dir_all(dir)?;
    let mut seen = std::collections::HashSet::new();
    let mut n = 0;
    'outer: for shard in &ds.shards {
        for i in 0..shard.len() {
            let s = shard.sample(i)?;
            if !seen.insert(s.image_id) {
                continue;
            }
            let ext = if s.image.starts_with(&[0x89, b'P', b'N', b'G']) {
                "png"
            } else {
                "jpg"
            };
            std::fs::write(dir.join(format!("{n:05}.{ext}")), s.image)?;
            n += 1;
            if n >= max {
                break 'outer;
            }
        }
    }
    Ok(n)
}

fn run_torch(
    py: &PathBuf,
    dir: &Path,
    a: &BenchArgs,
    workers: usize,
    h: usize,
    w: usize,
) -> Result<LoaderTiming> {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("benches/loader_torch.py");
    let out = dir.with_extension("torch.json");
    let status = std::process::Command::new(py)
        .arg(&script)
        .arg("--data-dir")
        .arg(dir)
        .args(["--workers", &workers.to_string()])
        .args(["--images", &a.images.to_string()])
        .args(["--batch", &a.batch.to_string()])
        .args(["--height", &h.to_string(), "--width", &w.to_string()])
        .arg("--json")
        .arg(&out)
        .status()
        .with_context(|| format!("cannot run {}", py.display()))?;
    if !status.success() {
        bail!("{} {} failed ({status})", py.display(), script.display());
    }
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&out)?)?;
    let get = |k: &str| {
        v[k].as_f64()
            .with_context(|| format!("loader_torch.py JSON lacks {k}"))
    };
    Ok(LoaderTiming {
        workers: get("workers")? as usize,
        images: get("images")? as usize,
        seconds: get("seconds")?,
        images_per_s: get("images_per_s")?,
        images_per_s_per_worker: get("images_per_s_per_worker")?,
    })
}
