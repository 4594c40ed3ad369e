//! `gadms bench model`: forward+backward timing of the CLIP towers, optionally next to the
//! PyTorch baseline (`benches/torch_baseline.py`) run in the same invocation.

use super::args::BenchArgs;
use super::flops::{Flops, model_flops, peak_gflops, print_peak};
use crate::device::BuildDevice;
use crate::precision::Precision;
use crate::preset::Preset;
use crate::with_preset;
use anyhow::{Context, Result, bail};
use dfdx::prelude::*;
use gadms_nn::TextInput;
use std::path::PathBuf;
use std::time::Instant;

/// Images (and captions) in ICFG-PEDES's test split.
const ICFG_TEST: usize = 19_848;

/// Median seconds per iteration of each measurement.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Timings {
    vision_fwd_bwd: f64,
    text_fwd_bwd: f64,
    vision_fwd: f64,
    vision_embed: f64,
    /// Captions of `--embed-batch` through the text tower (NaN where the baseline lacks it).
    text_embed: f64,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

fn timed(iters: usize, mut f: impl FnMut()) -> f64 {
    f(); // warm-up
    median(
        (0..iters)
            .map(|_| {
                let t = Instant::now();
                f();
                t.elapsed().as_secs_f64()
            })
            .collect(),
    )
}

/// Runs `gadms bench model`.
pub fn run(a: &BenchArgs) -> Result<()> {
    if a.batch == 0 || a.iters == 0 || a.embed_batch == 0 {
        bail!("--batch, --iters and --embed-batch must be at least 1");
    }
    let threads = rayon::current_num_threads();
    eprintln!(
        "gadms: preset {:?}, batch {}, {} threads, {} iterations",
        a.preset, a.batch, threads, a.iters
    );
    let (b, eb) = (a.batch, a.embed_batch);
    if a.torch.is_some() && a.device != crate::device::DeviceChoice::Cpu {
        bail!(
            "bench model --torch compares on the CPU (benches/torch_baseline.py); on a GPU use \
             `bench train --torch`"
        );
    }
    let precision = Precision::resolve(a.precision, a.device)?;
    eprintln!("gadms: device {}, matrix products {precision}", a.device);
    let on_device = || {
        crate::with_device!(a.device, 0, D, dev => {
            dev.set_precision(precision)?;
            with_preset!(a.preset, D, M => bench_model!(M, dev, b, eb, a.iters))
        })
    };
    let ours = on_device()?;
    let plain = match a.plain {
        true => Some(gadms_nn::fast::with_fused(false, on_device)?),
        false => None,
    };
    let torch = match &a.torch {
        Some(py) if a.preset == Preset::VitB16 => Some(run_torch(py, threads, a)?),
        Some(_) => bail!("--torch needs --preset vit-b-16 (the baseline builds ViT-B/16)"),
        None => None,
    };
    let flops = model_flops(a.preset, b, eb);
    print_table(&ours, plain.as_ref(), torch.as_ref(), &flops, (b, eb));
    print_peak(threads);
    // ICFG-PEDES's test split has 19,848 images and as many captions.
    let encode_s = ICFG_TEST as f64 * (ours.vision_embed + ours.text_embed) / eb as f64;
    println!(
        "ICFG-size evaluation: encoding {ICFG_TEST} images and {ICFG_TEST} captions at these \
         rates takes {encode_s:.1} s on {}, plus the ranking (benches/RESULTS.md: 1.6-2.4 s)",
        a.device
    );
    if let Some(p) = &a.json {
        let v = serde_json::json!({"preset": format!("{:?}", a.preset), "batch": a.batch,
            "device": a.device.to_string(), "precision": precision.to_string(),
            "embed_batch": eb, "threads": threads, "iters": a.iters, "gadms": ours,
            "gadms_plain": plain, "torch": torch, "gflop": flops,
            "peak_gflops": peak_gflops(threads), "icfg_encode_s": encode_s});
        std::fs::write(p, serde_json::to_string_pretty(&v)?)
            .with_context(|| format!("{}", p.display()))?;
    }
    Ok(())
}

/// Times one preset; a macro because tower fields are only reachable on the concrete type.
macro_rules! bench_model {
    ($M:ty, $dev:expr, $batch:expr, $embed_batch:expr, $iters:expr) => {{
        let dev = $dev;
        let m = <$M as dfdx::nn::BuildModule<_, f32>>::build(&dev);
        let b = $batch;
        let images = dev.sample_normal_like(&(b, Const, Const, Const));
        let r_img = dev.sample_normal_like(m.visual.forward(images.clone(), None).shape());
        let rows: Vec<[u32; 77]> = (0..b).map(|i| text_row(i)).collect();
        let text = TextInput::new(&dev, &rows);
        let r_txt =
            dev.sample_normal_like(m.text.forward(text.ids.clone(), NoneTape, None).shape());
        let vision_fwd_bwd = timed($iters, || {
            let g = m.visual.alloc_grads();
            let tok = m.visual.forward(images.clone().trace(g), None);
            let _ = (tok * r_img.clone()).sum::<(), _>().backward();
            dev.synchronize();
        });
        let text_fwd_bwd = timed($iters, || {
            let tape = gadms_nn::tape_with(&dev, m.text.alloc_grads());
            let tok = m.text.forward(text.ids.clone(), tape, None);
            let _ = (tok * r_txt.clone()).sum::<(), _>().backward();
            dev.synchronize();
        });
        let vision_fwd = timed($iters, || {
            let _ = m.visual.forward(images.clone(), None).as_vec();
        });
        let gallery = dev.sample_normal_like(&($embed_batch, Const, Const, Const));
        let vision_embed = timed($iters, || {
            let _ = m.visual.forward_features(gallery.clone()).as_vec();
        });
        let rows: Vec<[u32; 77]> = (0..$embed_batch).map(|i| text_row(i)).collect();
        let captions = TextInput::new(&dev, &rows);
        let text_embed = timed($iters, || {
            let tok = m.text.forward(captions.ids.clone(), NoneTape, None);
            let _ = gadms_nn::eos_token(tok, captions.eos.clone()).as_vec();
        });
        Timings {
            vision_fwd_bwd,
            text_fwd_bwd,
            vision_fwd,
            vision_embed,
            text_embed,
        }
    }};
}
use bench_model;

/// A caption-like row: SOT, 20 word ids, EOT, padding (the baseline uses the same lengths).
fn text_row(i: usize) -> [u32; 77] {
    let mut r = [0u32; 77];
    r[0] = 49406;
    for (j, x) in r.iter_mut().enumerate().take(21).skip(1) {
        *x = ((i * 7919 + j * 104_729) % 49_000 + 1) as u32;
    }
    r[21] = 49407;
    r
}

fn run_torch(py: &PathBuf, threads: usize, a: &BenchArgs) -> Result<Timings> {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("benches/torch_baseline.py");
    let out = std::env::temp_dir().join(format!("gadms-torch-{}.json", std::process::id()));
    let status = std::process::Command::new(py)
        .arg(&script)
        .args([
            "--threads",
            &threads.to_string(),
            "--batch",
            &a.batch.to_string(),
            "--embed-batch",
            &a.embed_batch.to_string(),
        ])
        .args(["--iters", &a.iters.to_string(), "--json"])
        .arg(&out)
        .status()
        .with_context(|| format!("cannot run {}", py.display()))?;
    if !status.success() {
        bail!("{} {} failed ({status})", py.display(), script.display());
    }
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&out)?)?;
    let _ = std::fs::remove_file(&out);
    let m = &v["median"];
    let get = |k: &str| {
        m[k].as_f64()
            .with_context(|| format!("baseline JSON lacks median.{k}"))
    };
    Ok(Timings {
        vision_fwd_bwd: get("vision_fwd_bwd")?,
        text_fwd_bwd: get("text_fwd_bwd")?,
        vision_fwd: get("vision_fwd")?,
        vision_embed: get("vision_embed")?,
        text_embed: m["text_embed"].as_f64().unwrap_or(f64::NAN),
    })
}

fn print_table(
    ours: &Timings,
    plain: Option<&Timings>,
    torch: Option<&Timings>,
    gflop: &Flops,
    (b, eb): (usize, usize),
) {
    println!(
        "| workload | gadms s/iter | model GFLOP/s | dfdx plain s/iter | PyTorch s/iter | gadms / PyTorch |"
    );
    println!("|---|---|---|---|---|---|");
    type Get = fn(&Timings) -> f64;
    let rows: [(String, Get, f64); 5] = [
        (
            format!("vision fwd+bwd, batch {b}"),
            |t| t.vision_fwd_bwd,
            gflop.vision_fwd_bwd,
        ),
        (
            format!("text fwd+bwd, batch {b}"),
            |t| t.text_fwd_bwd,
            gflop.text_fwd_bwd,
        ),
        (
            format!("vision fwd, batch {b}"),
            |t| t.vision_fwd,
            gflop.vision_fwd,
        ),
        (
            format!("gallery embedding, batch {eb}"),
            |t| t.vision_embed,
            gflop.vision_embed,
        ),
        (
            format!("caption embedding, batch {eb}"),
            |t| t.text_embed,
            f64::NAN,
        ),
    ];
    let cell = |v: Option<f64>| v.map_or("–".to_string(), |v| format!("{v:.3}"));
    for (name, get, fl) in rows {
        let g = get(ours);
        let t = torch.map(get);
        let ratio = t.map_or("–".to_string(), |t| format!("{:.2}", g / t));
        let gflops = match fl.is_nan() {
            true => "–".to_string(),
            false => format!("{:.0}", fl / g),
        };
        println!(
            "| {name} | {g:.3} | {gflops} | {} | {} | {ratio} |",
            cell(plain.map(get)),
            cell(t)
        );
    }
}
