//! `gadms bench model`: forward+backward timing of the CLIP towers, optionally next to the
//! PyTorch baseline (`benches/torch_baseline.py`) run in the same invocation.
//! `gadms bench loader`: see [`crate::cmd::bench_loader`].

use crate::preset::{Dev, Preset};
use crate::with_preset;
use anyhow::{Context, Result, bail};
use argh::FromArgs;
use dfdx::prelude::*;
use gadms_nn::TextInput;
use std::path::PathBuf;
use std::time::Instant;

/// Time the vision and text towers (forward+backward of sum(tokens·r), and vision forward
/// only) on random weights and inputs; with `--torch PYTHON` also run the PyTorch baseline with
/// the same sizes and thread count and print the ratio. Threads: RAYON_NUM_THREADS.
/// `gadms bench train` times the full GA-DMS training step (GASS, SDM, MTP, Adam) on
/// synthetic batches, on `--device cpu|cuda`, with `--torch` next to
/// benches/torch_gadms_step.py (eager f32, AMP bf16, TF32 on a GPU).
/// `gadms bench loader` instead times the data loader (decode + §6.3 augmentation, images/s
/// total and per worker), with `--torch` next to benches/loader_torch.py over the same images.
#[derive(FromArgs)]
#[argh(subcommand, name = "bench")]
pub struct BenchArgs {
    /// what to benchmark: model, loader or open
    #[argh(positional)]
    pub what: String,
    /// model preset (default vit-b-16)
    #[argh(option, default = "Preset::VitB16")]
    pub preset: Preset,
    /// batch size (default 4)
    #[argh(option, default = "4")]
    pub batch: usize,
    /// timed iterations after one warm-up (default 3)
    #[argh(option, default = "3")]
    pub iters: usize,
    /// python interpreter with torch: also run the PyTorch baseline (model:
    /// benches/torch_baseline.py, vit-b-16 only; loader: benches/loader_torch.py)
    #[argh(option)]
    pub torch: Option<PathBuf>,
    /// write the results as JSON here
    #[argh(option)]
    pub json: Option<PathBuf>,
    /// open: samples in the simulated manifest (default 10000000)
    #[argh(option, default = "10_000_000")]
    pub samples: u64,
    /// loader: packed dataset directory (default: a generated set of 512 384x128 JPEGs)
    #[argh(option)]
    pub data: Option<PathBuf>,
    /// loader: decoding/augmentation worker threads, and PyTorch workers (default 2)
    #[argh(option, default = "2")]
    pub workers: usize,
    /// loader: images decoded+augmented in the timed run (default 2048)
    #[argh(option, default = "2048")]
    pub images: usize,
    /// model/train: device, cpu or cuda[:N] (default cpu; cuda needs a `cuda` build)
    #[argh(option, default = "Default::default()")]
    pub device: crate::device::DeviceChoice,
    /// train: untimed warm-up steps (default 1)
    #[argh(option, default = "1")]
    pub warmup: usize,
    /// train: PyTorch modes to run with --torch (default eager-f32,amp-bf16,tf32; CPU runs
    /// eager-f32 only)
    #[argh(option, default = "String::from(\"eager-f32,amp-bf16,tf32\")")]
    pub torch_modes: String,
}

/// Median seconds per iteration of each measurement.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Timings {
    vision_fwd_bwd: f64,
    text_fwd_bwd: f64,
    vision_fwd: f64,
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

/// Runs the command.
pub fn run(a: BenchArgs) -> Result<()> {
    if a.what == "loader" {
        return crate::cmd::bench_loader::run(&a);
    }
    if a.what == "train" {
        return crate::cmd::bench_train::run(&a);
    }
    if a.what == "open" {
        return crate::cmd::bench_open::run(a.samples, 5000);
    }
    if a.what != "model" {
        bail!(
            "unknown benchmark '{}': use `gadms bench model`, `train`, `loader` or `open`",
            a.what
        );
    }
    if a.batch == 0 || a.iters == 0 {
        bail!("--batch and --iters must be at least 1");
    }
    let threads = rayon::current_num_threads();
    eprintln!(
        "gadms: preset {:?}, batch {}, {} threads, {} iterations",
        a.preset, a.batch, threads, a.iters
    );
    let ours = with_preset!(a.preset, M => bench_model!(M, a.batch, a.iters));
    let torch = match &a.torch {
        Some(py) if a.preset == Preset::VitB16 => Some(run_torch(py, threads, a.batch, a.iters)?),
        Some(_) => bail!("--torch needs --preset vit-b-16 (the baseline builds ViT-B/16)"),
        None => None,
    };
    print_table(&ours, torch.as_ref(), a.batch);
    if let Some(p) = &a.json {
        let v = serde_json::json!({"preset": format!("{:?}", a.preset), "batch": a.batch,
            "threads": threads, "iters": a.iters, "gadms": ours, "torch": torch});
        std::fs::write(p, serde_json::to_string_pretty(&v)?)
            .with_context(|| format!("{}", p.display()))?;
    }
    Ok(())
}

/// Times one preset; a macro because tower fields are only reachable on the concrete type.
macro_rules! bench_model {
    ($M:ty, $batch:expr, $iters:expr) => {{
        let dev = Dev::seed_from_u64(0);
        let m = <$M as dfdx::nn::BuildModule<Dev, f32>>::build(&dev);
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
        });
        let text_fwd_bwd = timed($iters, || {
            let tape = gadms_nn::tape_with(&dev, m.text.alloc_grads());
            let tok = m.text.forward(text.ids.clone(), tape, None);
            let _ = (tok * r_txt.clone()).sum::<(), _>().backward();
        });
        let vision_fwd = timed($iters, || {
            let _ = m.visual.forward(images.clone(), None).as_vec();
        });
        Timings {
            vision_fwd_bwd,
            text_fwd_bwd,
            vision_fwd,
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

fn run_torch(py: &PathBuf, threads: usize, batch: usize, iters: usize) -> Result<Timings> {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("benches/torch_baseline.py");
    let out = std::env::temp_dir().join(format!("gadms-torch-{}.json", std::process::id()));
    let status = std::process::Command::new(py)
        .arg(&script)
        .args([
            "--threads",
            &threads.to_string(),
            "--batch",
            &batch.to_string(),
        ])
        .args(["--iters", &iters.to_string(), "--json"])
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
    })
}

fn print_table(ours: &Timings, torch: Option<&Timings>, batch: usize) {
    println!("| workload (batch {batch}) | gadms s/iter | PyTorch s/iter | gadms / PyTorch |");
    println!("|---|---|---|---|");
    let rows = [
        (
            "vision fwd+bwd",
            ours.vision_fwd_bwd,
            torch.map(|t| t.vision_fwd_bwd),
        ),
        (
            "text fwd+bwd",
            ours.text_fwd_bwd,
            torch.map(|t| t.text_fwd_bwd),
        ),
        ("vision fwd", ours.vision_fwd, torch.map(|t| t.vision_fwd)),
    ];
    for (name, g, t) in rows {
        match t {
            Some(t) => println!("| {name} | {g:.3} | {t:.3} | {:.2} |", g / t),
            None => println!("| {name} | {g:.3} | – | – |"),
        }
    }
}
