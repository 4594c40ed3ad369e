//! `gadms bench train`: throughput of the full GA-DMS pretraining step
//! ([`crate::train::gadms::train_step`]: GASS, dual-masked SDM + β·MTP, backward, Adam) on
//! synthetic batches, on the CPU or a GPU (`--device`), optionally next to the PyTorch step of
//! `benches/torch_gadms_step.py` run in the same invocation with the same sizes.
//!
//! Reported: mean seconds per step over `--iters` steps after `--warmup`, pairs/s (`batch /
//! step`), and the GASS fraction (the time of `gass_scores` alone on the same batch over the
//! step time). One JSON line per implementation on stdout, in the format the PyTorch script
//! writes, then a table.

use super::args::BenchArgs;
use crate::device::{BuildDevice, Copies, DeviceChoice};
use crate::dist::grads::comm_seconds;
use crate::precision::Precision;
use crate::preset::Preset;
use crate::train::accum::global;
use crate::train::gadms::{GaDmsForward, GaDmsTiny, GaDmsViTB16, StepConfig, train_step};
use crate::train::gadms_accum::{GaDmsAccum, train_step_accum};
use crate::train::optim::{Adam, AdamConfig};
use anyhow::{Context, Result, bail};
use dfdx::prelude::*;
use gadms_data::scores::ScoreTable;
use gadms_data::synth::synthetic_batch;
use serde_json::{Value, json};
use std::path::Path;
use std::time::Instant;

/// Runs `gadms bench train`.
pub fn run(a: &BenchArgs) -> Result<()> {
    if a.batch == 0 || a.iters == 0 || a.accum_steps == 0 {
        bail!("--batch, --iters and --accum-steps must be at least 1");
    }
    let precision = Precision::resolve(a.precision, a.device)?;
    let ours = crate::with_device!(a.device, 0, D, dev => {
        dev.set_precision(precision)?;
        match a.preset {
            Preset::Tiny => bench::<D, GaDmsTiny<f32, D>>(&dev, a, precision)?,
            Preset::VitB16 => bench::<D, GaDmsViTB16<f32, D>>(&dev, a, precision)?,
        }
    })?;
    println!("{ours}");
    let mut rows = vec![ours];
    if let Some(py) = &a.torch {
        rows.extend(run_torch(py, a)?);
    }
    print_table(&rows);
    if let Some(p) = &a.json {
        std::fs::write(p, serde_json::to_string_pretty(&rows)?)
            .with_context(|| format!("writing {}", p.display()))?;
    }
    Ok(())
}

/// Builds the model on `dev`, runs the timed steps, returns the JSON line.
fn bench<D: Device<f32>, M>(dev: &D, a: &BenchArgs, precision: Precision) -> Result<Value>
where
    M: GaDmsForward<f32, D> + GaDmsAccum<D> + BuildModule<D, f32>,
{
    let spec = a.preset.spec();
    let threads = rayon::current_num_threads();
    eprintln!(
        "gadms: bench train, preset {:?}, batch {}, device {}, precision {precision}, {} warm-up + {} timed steps{}",
        a.preset,
        a.batch,
        a.device,
        a.warmup,
        a.iters,
        match a.device {
            DeviceChoice::Cpu => format!(", {threads} threads"),
            _ => String::new(),
        }
    );
    let _checkpointing = gadms_nn::checkpoint::scoped(a.grad_checkpointing);
    if a.grad_checkpointing {
        eprintln!("gadms: activation checkpointing on (every transformer block runs twice)");
    }
    let mut model = M::build(dev);
    let resting = cpu_peak_mib(a.device);
    let params = dfdx::nn::NumParams::num_trainable_params(&model);
    let mut opt = Adam::new(AdamConfig::default());
    // A step takes batch × accum-steps pairs, in accum-steps micro-batches of `batch`.
    let pairs = a.batch * a.accum_steps;
    let batch = synthetic_batch(pairs, spec.vision.image_h, spec.vision.image_w, 7);
    let scores = ScoreTable::in_memory(pairs);
    let cfg = StepConfig::default();
    let lr = 1e-5;
    // Under mpirun (feature `mpi`) every rank steps on `pairs` pairs of one global batch, and
    // the step is the data-parallel one (docs/distributed.md).
    let step = |model: &mut M, opt: &mut Adam| -> Result<f32> {
        Ok(if global::two_pass(a.accum_steps) {
            train_step_accum(model, opt, &batch, &scores, &cfg, lr, a.accum_steps)?.loss
        } else {
            train_step(model, opt, &batch, &scores, &cfg, lr).loss
        })
    };
    for _ in 0..a.warmup {
        step(&mut model, &mut opt)?;
    }
    crate::device::reset_pool_high_water(dev);
    let (t, comm0, copies0) = (Instant::now(), comm_seconds(), Copies::now());
    let mut last = f32::NAN;
    for _ in 0..a.iters {
        last = step(&mut model, &mut opt)?;
    }
    let copies = Copies::now().per_step_since(copies0, a.iters);
    sync(&model);
    let step_s = t.elapsed().as_secs_f64() / a.iters as f64;
    let comm_s = (comm_seconds() - comm0) / a.iters as f64;
    let ranks = crate::dist::world().size();
    if ranks > 1 {
        eprintln!(
            "gadms: {ranks} processes: {:.4} s of each {step_s:.4} s step in collectives \
             ({params} gradient values summed per step; rank 0)",
            comm_s
        );
    }

    // The CUDA allocator over the timed steps: what it held, what was live (MiB).
    let pool = crate::device::pool_high_water(dev)
        .map(|(r, u)| (r as f64 / 1048576.0, u as f64 / 1048576.0));
    if let Some((r, u)) = pool {
        eprintln!(
            "gadms: CUDA memory pool over the timed steps: {r:.0} MiB held at most, {u:.0} MiB \
             in live buffers at most ({:.0} MiB the allocator's cache)",
            r - u
        );
    }
    if !matches!(a.device, DeviceChoice::Cpu) {
        eprintln!(
            "gadms: host↔device copies per step: {:.0} to the device ({:.1} KiB), {:.0} to the \
             host ({:.1} KiB; each one a wait for the GPU)",
            copies.0,
            copies.1 / 1024.0,
            copies.2,
            copies.3 / 1024.0
        );
    }
    let gass_s = model.time_gass(&batch, &cfg, a.iters.min(3));
    let peak = cpu_peak_mib(a.device);
    // Gradients and Adam's two moments: three more copies of the parameters.
    let state_mib = 3.0 * params as f64 * 4.0 / 1048576.0;
    let step_mib = match (peak.as_f64(), resting.as_f64()) {
        (Some(p), Some(r)) => json!(p - r - state_mib),
        _ => Value::Null,
    };
    if let Some(m) = step_mib.as_f64() {
        eprintln!(
            "gadms: peak resident memory {:.0} MiB = {:.0} model + {state_mib:.0} gradients and Adam \
             moments + {m:.0} the step's activations and buffers",
            peak.as_f64().unwrap_or(0.0),
            resting.as_f64().unwrap_or(0.0)
        );
    }
    Ok(json!({
        "impl": "gadms", "mode": precision.to_string(), "preset": preset_name(a.preset), "batch": pairs,
        "accum_steps": a.accum_steps, "ranks": ranks, "collective_s": comm_s, "params": params,
        "steps": a.iters, "step_s": step_s, "pairs_per_s": pairs as f64 / step_s,
        "peak_mem_mib": peak, "step_mem_mib": step_mib, "gass_fraction": gass_s / step_s,
        "grad_checkpointing": a.grad_checkpointing,
        "pool_reserved_mib": pool.map(|p| p.0), "pool_used_mib": pool.map(|p| p.1),
        "device": a.device.to_string(), "threads": threads, "last_loss": last,
        "copies_to_device": copies.0, "bytes_to_device": copies.1,
        "copies_to_host": copies.2, "bytes_to_host": copies.3,
    }))
}

/// On the CPU, the process's peak resident memory so far in MiB (`getrusage`: the model, the
/// optimiser state and the largest step's activations); elsewhere null.
fn cpu_peak_mib(device: DeviceChoice) -> Value {
    if !matches!(device, DeviceChoice::Cpu) {
        return Value::Null;
    }
    // SAFETY: getrusage only writes the struct it is given.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) } != 0 {
        return Value::Null;
    }
    json!(u.ru_maxrss as f64 / 1024.0) // kilobytes on Linux
}

/// Waits for the device: reads one parameter back.
fn sync<D: Device<f32>, M: GaDmsForward<f32, D>>(model: &M) {
    let mut first = None;
    let _ = M::iter_tensors(&mut dfdx::nn::tensor_collection::RecursiveWalker {
        m: model,
        f: &mut FirstValue(&mut first),
    });
}

struct FirstValue<'a>(&'a mut Option<f32>);

impl<D: Device<f32>> dfdx::nn::tensor_collection::TensorVisitor<f32, D> for FirstValue<'_> {
    type Viewer = dfdx::nn::tensor_collection::ViewTensorRef;
    type Err = D::Err;
    type E2 = f32;
    type D2 = D;
    fn visit<S: Shape>(
        &mut self,
        _: dfdx::nn::tensor_collection::TensorOptions<S, f32, D>,
        t: &Tensor<S, f32, D>,
    ) -> Result<Option<Tensor<S, f32, D>>, D::Err> {
        if self.0.is_none() {
            *self.0 = t.as_vec().first().copied();
        }
        Ok(None)
    }
}

fn preset_name(p: Preset) -> &'static str {
    match p {
        Preset::VitB16 => "vit-b-16",
        Preset::Tiny => "tiny",
    }
}

/// Runs `benches/torch_gadms_step.py` with the same preset, batch, steps and device kind;
/// returns its JSON lines.
fn run_torch(py: &Path, a: &BenchArgs) -> Result<Vec<Value>> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/torch_gadms_step.py");
    let script = if script.exists() {
        script
    } else {
        Path::new("benches/torch_gadms_step.py").to_path_buf()
    };
    let device = match a.device {
        DeviceChoice::Cpu => "cpu".to_string(),
        DeviceChoice::Cuda(n) => format!("cuda:{n}"),
    };
    let out = std::process::Command::new(py)
        .arg(&script)
        .args(["--device", &device, "--preset", preset_name(a.preset)])
        .args([
            "--batch",
            // The same pairs per step (PyTorch's step is one batch of them).
            &(a.batch * a.accum_steps).to_string(),
            "--steps",
            &a.iters.to_string(),
        ])
        .args(["--warmup", &a.warmup.to_string()])
        .args(["--threads", &rayon::current_num_threads().to_string()])
        .args(["--modes", &a.torch_modes])
        .stderr(std::process::Stdio::inherit())
        .output()
        .with_context(|| format!("cannot run {}", py.display()))?;
    if !out.status.success() {
        bail!(
            "{} {} failed ({})",
            py.display(),
            script.display(),
            out.status
        );
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let mut rows = vec![];
    for line in text.lines().filter(|l| l.trim_start().starts_with('{')) {
        println!("{line}");
        rows.push(serde_json::from_str(line).with_context(|| format!("baseline line {line}"))?);
    }
    Ok(rows)
}

/// The comparison table: each row's pairs/s and its ratio to gadms (first row).
pub fn print_table(rows: &[Value]) {
    let base = rows[0]["pairs_per_s"].as_f64().unwrap_or(f64::NAN);
    println!(
        "| implementation | mode | device | batch | step s | pairs/s | gadms / this (pairs/s) | GASS fraction |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for r in rows {
        let s = |k: &str| r[k].as_str().unwrap_or("–").to_string();
        let f = |k: &str| r[k].as_f64();
        if let Some(e) = r.get("error") {
            println!(
                "| {} | {} | {} | {} | error: {e} | | | |",
                s("impl"),
                s("mode"),
                s("device"),
                r["batch"]
            );
            continue;
        }
        let pps = f("pairs_per_s").unwrap_or(f64::NAN);
        println!(
            "| {} | {} | {} | {} | {:.4} | {:.2} | {:.3} | {} |",
            s("impl"),
            s("mode"),
            s("device"),
            r["batch"],
            f("step_s").unwrap_or(f64::NAN),
            pps,
            base / pps,
            f("gass_fraction").map_or("–".into(), |g| format!("{g:.3}")),
        );
    }
}
