//! Everything a training run reads and writes in its run directory, in one place.
//!
//! # Layout
//!
//! ```text
//! RUN_DIR/config.json                      the run's settings (written by the command)
//! RUN_DIR/metrics.jsonl                    one JSON line per step and per evaluation (Jsonl)
//! RUN_DIR/last.safetensors                 CLIP weights at the end (and at every checkpoint)
//! RUN_DIR/best.safetensors                 CLIP weights of the epoch with the best R1
//! RUN_DIR/gadms_model.safetensors          the full model (CLIP + decoder [+ classifier])
//! RUN_DIR/checkpoint.json                  pointer: {"dir": "checkpoints/step-00000040", "step": 40}
//! RUN_DIR/checkpoints/step-00000040/
//!     model.safetensors                    every trained tensor, native (open_clip) names, f32
//!     adam.safetensors                     Adam step count, config and moments (optim::Adam::save)
//!     scores.f32                           GA-DMS score table (pretrain --objective ga-dms only)
//!     state.json                           TrainState: step, epoch, loader position, RNG, args, best R1
//! ```
//!
//! **Atomicity.** Every file is written to a temporary sibling (`NAME.tmp.PID.N`) and renamed. A checkpoint is complete
//! once all its files are in its own directory; only then is `checkpoint.json` replaced (again
//! temp + rename) to point at it, and only after that are older checkpoint directories
//! removed. A run killed at any moment therefore leaves `checkpoint.json` pointing at a
//! complete checkpoint (or no pointer at all before the first one); a half-written directory
//! is never referenced and is removed by the next save.
//!
//! **RNG state.** The device RNG is drawn only to initialise the model; every random choice of
//! training (sample order, augmentation, masking) is a pure function of `(seed, epoch, sample
//! index)` in the loader (`gadms_data::loader`), so the seed and the loader position are the
//! whole RNG state, and both are stored.
//!
//! **Resume** (`--resume RUN_DIR`, [`resolve_args`]): the run's own arguments come back from
//! its latest checkpoint; only the device and the precision may change.

use crate::device::DeviceChoice;
use crate::eval::RankMetrics;
use crate::preset::Preset;
use anyhow::{Context, Result, bail};
use dfdx::nn::tensor_collection::TensorCollection;
use dfdx::prelude::Device;
use gadms_ckpt::Array;
use gadms_data::loader::LoaderState;
use gadms_nn::HasClipSpec;
use serde::{Deserialize, Serialize};
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

/// The pointer file in the run directory.
pub const POINTER: &str = "checkpoint.json";
/// The directory below the run directory that holds the checkpoints.
pub const CKPT_DIR: &str = "checkpoints";
/// Model weights inside a checkpoint.
pub const MODEL_FILE: &str = "model.safetensors";
/// Optimiser state inside a checkpoint.
pub const ADAM_FILE: &str = "adam.safetensors";
/// Score table inside a checkpoint.
pub const SCORES_FILE: &str = "scores.f32";
/// Scalar state inside a checkpoint.
pub const STATE_FILE: &str = "state.json";

/// The scalar training state of a checkpoint.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct TrainState {
    /// `pretrain` or `finetune`.
    pub command: String,
    /// Optimiser steps done.
    pub step: u64,
    /// 1-based epoch the last step belonged to.
    pub epoch: usize,
    /// Where the loader continues (the batch after the last step).
    pub loader: LoaderState,
    /// Seed of the run (initialisation, order, augmentation, masking).
    pub seed: u64,
    /// The RNG state beyond the seed (see the module docs: none is needed).
    pub rng: String,
    /// Best evaluation R1 so far and its epoch (for `best.safetensors`).
    pub best_r1: Option<(f64, usize)>,
    /// Last epoch whose end-of-epoch evaluation ran.
    pub evaluated_epoch: usize,
    /// The command's arguments (JSON), used by `--resume`.
    pub args: serde_json::Value,
    /// The training samples `--skip-corrupt` left out, when any: a resumed run must leave out
    /// the same ones (its batches would differ otherwise).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub skipped: Option<Skipped>,
}

/// The training samples a run leaves out (`--skip-corrupt`), as a checkpoint records them.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Skipped {
    /// How many.
    pub count: usize,
    /// Their fingerprint (`Dataset::skip_hash`).
    pub fingerprint: String,
}

impl Skipped {
    /// The samples `ds` leaves out; `None` when none.
    pub fn of(ds: &gadms_data::manifest::Dataset) -> Option<Skipped> {
        (!ds.damaged().is_empty()).then(|| Skipped {
            count: ds.damaged().len(),
            fingerprint: ds.skip_hash(),
        })
    }
}

/// Checks that a resumed run leaves out the training samples its checkpoint's run left out
/// (`recorded`), no more and no fewer (`now`).
pub fn check_skipped(recorded: Option<&Skipped>, now: Option<&Skipped>) -> Result<()> {
    if recorded == now {
        return Ok(());
    }
    let say = |s: Option<&Skipped>| match s {
        None => "no damaged training sample".to_string(),
        Some(s) => format!("{} (fingerprint {})", s.count, s.fingerprint),
    };
    bail!(
        "the checkpoint's run left out {} damaged training samples with --skip-corrupt, but the \
         training data now has {}: the training data changed since, so the batches would \
         differ; restore the data (or re-run gadms pack) and start a new run",
        say(recorded),
        say(now)
    )
}

/// What the RNG field says.
pub const RNG_NOTE: &str = "device RNG drawn only at initialisation; sample order, augmentation and masking are functions of (seed, epoch, sample index), i.e. of `seed` and `loader`";

#[derive(Serialize, Deserialize)]
struct Pointer {
    dir: String,
    step: u64,
}

/// Writes a checkpoint for `state` into `run_dir`: `write_files(dir)` writes the tensor files
/// into the fresh checkpoint directory `dir`, then `state.json` is added, the pointer switched
/// and older checkpoints removed. Returns the checkpoint directory.
pub fn save_checkpoint(
    run_dir: &Path,
    state: &TrainState,
    write_files: impl FnOnce(&Path) -> Result<()>,
) -> Result<PathBuf> {
    let rel = format!("{CKPT_DIR}/step-{:08}", state.step);
    let dir = run_dir.join(&rel);
    if dir.exists() {
        std::fs::remove_dir_all(&dir).with_context(|| format!("cannot clear {}", dir.display()))?;
    }
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    write_files(&dir)?;
    write_json(&dir.join(STATE_FILE), state)?;
    write_json(
        &run_dir.join(POINTER),
        &Pointer {
            dir: rel.clone(),
            step: state.step,
        },
    )?;
    // Older (or unreferenced, half-written) checkpoints go only now.
    if let Ok(entries) = std::fs::read_dir(run_dir.join(CKPT_DIR)) {
        for e in entries.flatten() {
            if e.path() != dir {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
    }
    Ok(dir)
}

/// The latest complete checkpoint of `run_dir`: its directory and state.
pub fn latest(run_dir: &Path) -> Result<(PathBuf, TrainState)> {
    let ptr = run_dir.join(POINTER);
    if !run_dir.is_dir() {
        bail!("--resume {}: no such run directory", run_dir.display());
    }
    let bytes = std::fs::read(&ptr).with_context(|| {
        format!(
            "--resume {}: no checkpoint in this run directory ({} is missing; checkpoints are \
             written every --save-every steps)",
            run_dir.display(),
            ptr.display()
        )
    })?;
    let p: Pointer = serde_json::from_slice(&bytes)
        .with_context(|| format!("{}: not a gadms checkpoint pointer", ptr.display()))?;
    // The pointer names a checkpoint of this run directory, nothing else.
    let name = p.dir.strip_prefix(&format!("{CKPT_DIR}/")).unwrap_or("");
    let plain = name.starts_with("step-") && name[5..].bytes().all(|b| b.is_ascii_digit());
    if !plain || name.len() <= 5 {
        bail!(
            "{}: names {:?}, not a checkpoint directory {CKPT_DIR}/step-N of this run",
            ptr.display(),
            p.dir
        );
    }
    let dir = run_dir.join(&p.dir);
    let sp = dir.join(STATE_FILE);
    let bytes = std::fs::read(&sp).with_context(|| format!("cannot read {}", sp.display()))?;
    let state: TrainState = serde_json::from_slice(&bytes)
        .with_context(|| format!("{}: not a gadms training state", sp.display()))?;
    if state.step != p.step {
        bail!(
            "{}: step {} disagrees with {} (step {})",
            sp.display(),
            state.step,
            ptr.display(),
            p.step
        );
    }
    Ok((dir, state))
}

/// Serialises `v` as pretty JSON to `path`, atomically.
pub fn write_json<T: Serialize>(path: &Path, v: &T) -> Result<()> {
    let bytes = serde_json::to_vec_pretty(v)?;
    gadms_ckpt::tensors::write_atomic(path, &bytes)
        .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))
}

/// The full model at the end of a run (CLIP + decoder, with `finetune` also the classifier).
pub const GADMS_MODEL_FILE: &str = "gadms_model.safetensors";
/// The CLIP weights at the end of the run (and at every checkpoint), open_clip layout.
pub const LAST_FILE: &str = "last.safetensors";
/// The CLIP weights of the epoch with the best R1 on the first evaluation set.
pub const BEST_FILE: &str = "best.safetensors";
/// The run's settings.
pub const CONFIG_FILE: &str = "config.json";
/// The run's log.
pub const METRICS_FILE: &str = "metrics.jsonl";

/// Saves the CLIP towers at `path` (open_clip layout, gadms metadata; atomic).
pub fn save_clip<D: Device<f32>, C: TensorCollection<f32, D> + HasClipSpec>(
    model: &C,
    path: &Path,
) -> Result<PathBuf> {
    gadms_ckpt::save_clip(model, &C::SPEC, path)
        .with_context(|| format!("saving {}", path.display()))?;
    Ok(path.to_path_buf())
}

/// Saves every tensor of `model` and the `extra` ones as a native full-model file
/// ([`gadms_ckpt::native`]), atomically.
pub fn save_model_file<D: Device<f32>, M: TensorCollection<f32, D>>(
    model: &M,
    extra: Vec<(&str, Array)>,
    path: &Path,
) -> Result<()> {
    let meta = crate::build_info::metadata();
    gadms_ckpt::native::save_model(model, extra, &meta, path)
        .with_context(|| format!("saving {}", path.display()))
}

/// Loads a native full-model file into `model` (strict); returns the tensors `model` does
/// not have (e.g. a classifier's), which the caller must use up.
pub fn load_model_file<D: Device<f32>, M: TensorCollection<f32, D>>(
    model: &mut M,
    path: &Path,
) -> Result<gadms_ckpt::TensorMap> {
    let map = gadms_ckpt::native::read_model(path)
        .with_context(|| format!("reading {}", path.display()))?;
    anyhow::ensure!(
        gadms_ckpt::native::is_native(&map),
        "{}: not a gadms training checkpoint (no `gadms.magic = {}`)",
        path.display(),
        gadms_ckpt::native::MODEL_MAGIC
    );
    gadms_ckpt::tensors::check_finite(&map)?;
    let (own, rest) = gadms_ckpt::native::split_for(map, model);
    gadms_ckpt::native::load_model(&own, model)
        .with_context(|| format!("loading {}", path.display()))?;
    Ok(rest)
}

/// One evaluation line of metrics.jsonl.
#[derive(Serialize)]
pub struct EvalLine<'a> {
    pub step: usize,
    pub epoch: usize,
    /// The split of the packed set (`test`, `train`, …) or `train-subset`.
    pub split: &'a str,
    /// The directory of the packed set.
    pub data: &'a str,
    #[serde(flatten)]
    pub m: RankMetrics,
}

/// Writes one JSON value per line, flushing each (so a killed run keeps its metrics).
pub struct Jsonl(BufWriter<File>);

impl Jsonl {
    /// Opens `path`: a new file, or on resume the old one cut back to the lines of steps up to
    /// `keep_upto` (lines written after the checkpoint by the killed process are dropped),
    /// rewritten through a temporary file and a rename.
    pub fn open(path: &Path, keep_upto: Option<u64>) -> Result<(Jsonl, Vec<serde_json::Value>)> {
        let mut kept = Vec::new();
        if let Some(upto) = keep_upto {
            let old = std::fs::read_to_string(path).unwrap_or_default();
            for l in old.lines() {
                if let Ok(v) = serde_json::from_str::<serde_json::Value>(l)
                    && v.get("step").and_then(|s| s.as_u64()).unwrap_or(u64::MAX) <= upto
                {
                    kept.push(v);
                }
            }
        }
        // The kept lines replace the log atomically (a kill now leaves the old log or the new
        // one, never a truncated file); then the run appends.
        let mut text = Vec::new();
        for v in &kept {
            serde_json::to_writer(&mut text, v)?;
            text.push(b'\n');
        }
        gadms_ckpt::tensors::write_atomic(path, &text)
            .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))?;
        let f = std::fs::OpenOptions::new()
            .append(true)
            .open(path)
            .with_context(|| format!("cannot open {}", path.display()))?;
        Ok((Jsonl(BufWriter::new(f)), kept))
    }

    /// Appends `v` as one line and flushes.
    pub fn write<T: Serialize>(&mut self, v: &T) -> Result<()> {
        serde_json::to_writer(&mut self.0, v)?;
        self.0.write_all(b"\n")?;
        self.0.flush()?;
        Ok(())
    }
}

/// The last evaluation of `data` at `epoch` in metrics.jsonl.
pub fn last_eval(path: &Path, data: &str, epoch: usize) -> Option<RankMetrics> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .rfind(|v| v["data"] == data && v["epoch"] == epoch && v.get("r1").is_some())
        .and_then(|v| metrics_from_json(&v))
}

/// A [`RankMetrics`] back from its JSON line.
pub fn metrics_from_json(v: &serde_json::Value) -> Option<RankMetrics> {
    let f = |k: &str| v.get(k).and_then(|x| x.as_f64());
    let u = |k: &str| v.get(k).and_then(|x| x.as_u64()).map(|x| x as usize);
    Some(RankMetrics {
        r1: f("r1")?,
        r5: f("r5")?,
        r10: f("r10")?,
        map: f("map")?,
        minp: f("minp")?,
        chance_r1: f("chance_r1")?,
        queries: u("queries")?,
        gallery: u("gallery")?,
    })
}

/// The arguments of a resumable run command (`pretrain`, `finetune`).
pub trait RunArgs: Serialize + serde::de::DeserializeOwned + Default {
    /// `--preset`.
    fn preset(&self) -> Preset;
    /// Checks the flags; returns the warm-up epochs to use.
    fn validate(&self) -> Result<usize>;
    /// What belongs to the invocation rather than to the run: `--device`, `--out`, `--resume`.
    fn invocation(&mut self) -> (&mut DeviceChoice, &mut PathBuf, &mut Option<PathBuf>);
    /// `--precision`, which also belongs to the invocation (a resumed run may change it).
    fn precision_mut(&mut self) -> &mut Option<crate::precision::Precision>;
}

/// The arguments to run with, the checkpoint to resume from (with `--resume`) and the
/// warm-up epochs.
pub type Resolved<A> = (A, Option<(PathBuf, TrainState)>, usize);

/// The arguments to run with: `given`, or with `--resume` the run's own (from its latest
/// checkpoint, [`resume_args`]) with this invocation's device and precision; checked. Without `--out`, a
/// fresh run goes to `runs/COMMAND-PRESET`.
pub fn resolve_args<A: RunArgs>(mut given: A, command: &str) -> Result<Resolved<A>> {
    let Some(dir) = given.invocation().2.clone() else {
        let warmup = given.validate()?;
        let default_out = A::default().invocation().1.clone();
        let preset = given.preset().spec().name;
        let out = given.invocation().1;
        if *out == default_out {
            *out = unused_dir(&format!("runs/{command}-{preset}"));
        }
        return Ok((given, None, warmup));
    };
    let out = given.invocation().1.clone();
    if out != *A::default().invocation().1 && out != dir {
        bail!(
            "--resume {} continues the run in its own directory; drop --out {}",
            dir.display(),
            out.display()
        );
    }
    let (mut a, ckdir, state) =
        resume_args(&given, &dir, command, &["device", "precision", "preset"])?;
    let (asked, stored) = (given.preset(), a.preset());
    if asked != A::default().preset() && asked != stored {
        bail!(
            "--resume {}: the checkpoint is of preset {}, not {} (--preset); a resumed run \
             keeps its own preset: drop --preset to continue it as a {} run, or start a new \
             {} run with --out",
            dir.display(),
            stored.spec().name,
            asked.spec().name,
            stored.spec().name,
            asked.spec().name
        );
    }
    let (device, out, resume) = a.invocation();
    *device = *given.invocation().0;
    *out = dir.clone();
    *resume = Some(dir);
    *a.precision_mut() = *given.precision_mut();
    let warmup = a.validate()?;
    Ok((a, Some((ckdir, state)), warmup))
}

/// `--resume RUN_DIR`: the run's own arguments (from its checkpoint) and the checkpoint. Any
/// other flag given with `--resume` is an error (the run's settings are fixed), except those
/// in `ignore`.
pub fn resume_args<A: Serialize + serde::de::DeserializeOwned + Default>(
    given: &A,
    run_dir: &Path,
    command: &str,
    ignore: &[&str],
) -> Result<(A, PathBuf, TrainState)> {
    let mut g = serde_json::to_value(given)?;
    let d = serde_json::to_value(A::default())?;
    let mut differ = Vec::new();
    if let (Some(g), Some(d)) = (g.as_object_mut(), d.as_object()) {
        for (k, v) in g.iter() {
            if ["resume", "out"].contains(&k.as_str()) || ignore.contains(&k.as_str()) {
                continue;
            }
            if d.get(k) != Some(v) {
                differ.push(format!("--{}", k.replace('_', "-")));
            }
        }
    }
    if !differ.is_empty() {
        bail!(
            "--resume {} continues the run with its own settings; drop {}",
            run_dir.display(),
            differ.join(", ")
        );
    }
    let (dir, state) = latest(run_dir)?;
    if state.command != command {
        bail!(
            "--resume {}: the checkpoint is of `gadms {}`, not `gadms {command}`",
            run_dir.display(),
            state.command
        );
    }
    let args: A = serde_json::from_value(state.args.clone()).with_context(|| {
        format!(
            "{}: the stored arguments do not parse",
            dir.join(STATE_FILE).display()
        )
    })?;
    Ok((args, dir, state))
}

/// `base`, or when that holds files already `base-2`, `base-3`, … : the first that is missing
/// or empty (so the default run directory never collides with an earlier run).
pub fn unused_dir(base: &str) -> PathBuf {
    let free = |p: &Path| std::fs::read_dir(p).map_or(true, |mut d| d.next().is_none());
    let mut n = 1;
    loop {
        let p = if n == 1 {
            PathBuf::from(base)
        } else {
            PathBuf::from(format!("{base}-{n}"))
        };
        if free(&p) {
            return p;
        }
        n += 1;
    }
}

/// The lock of a run directory: `RUN_DIR/lock` holds the pid of the process that runs in it,
/// for as long as it runs (removed on drop).
#[derive(Debug)]
pub struct RunLock {
    path: PathBuf,
}

/// The lock file's name.
pub const LOCK_FILE: &str = "lock";

impl RunLock {
    /// Takes the lock of `dir` (which must exist). Another live process holding it is an
    /// error naming its pid; a lock left by a process that is gone is taken over.
    pub fn acquire(dir: &Path) -> Result<RunLock> {
        let path = dir.join(LOCK_FILE);
        for _ in 0..2 {
            let created = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&path);
            match created {
                Ok(mut f) => {
                    write!(f, "{}", std::process::id())
                        .with_context(|| format!("cannot write {}", path.display()))?;
                    return Ok(RunLock { path });
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    let holder = std::fs::read_to_string(&path).unwrap_or_default();
                    let pid: Option<u32> = holder.trim().parse().ok();
                    if let Some(pid) = pid.filter(|&p| process_alive(p)) {
                        bail!(
                            "{} is in use by gadms process {pid} ({}); wait for it to finish, or \
                             delete the lock file if that process is not gadms",
                            dir.display(),
                            path.display()
                        );
                    }
                    // Stale (its process is gone): take it over.
                    let _ = std::fs::remove_file(&path);
                }
                Err(e) => bail!("cannot create {}: {e}", path.display()),
            }
        }
        bail!("cannot take the lock {}", path.display())
    }
}

impl Drop for RunLock {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Whether a process with this pid runs (Linux: `/proc/PID` exists and is not a zombie, a
/// process that ended and whose parent has not collected it, e.g. a rank of a data-parallel
/// job killed by its launcher; elsewhere assumed alive, so a lock is never stolen from a
/// running process).
fn process_alive(pid: u32) -> bool {
    if cfg!(target_os = "linux") {
        match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
            // `pid (comm) STATE …`: the state follows the last ')'.
            Ok(stat) => {
                stat.rsplit(')')
                    .next()
                    .and_then(|r| r.split_whitespace().next())
                    != Some("Z")
            }
            Err(_) => Path::new(&format!("/proc/{pid}")).exists(),
        }
    } else {
        true
    }
}

/// Makes `out` the directory of a run and locks it. A resumed run takes its directory as it
/// is. A fresh run needs `out` missing or empty; with `overwrite` a directory holding an earlier
/// gadms run (its `config.json`) is cleared first. Nothing is deleted otherwise.
pub fn open_run_dir(out: &Path, fresh: bool, overwrite: bool) -> Result<RunLock> {
    let entries = |p: &Path| -> Vec<PathBuf> {
        std::fs::read_dir(p)
            .map(|d| d.flatten().map(|e| e.path()).collect())
            .unwrap_or_default()
    };
    let existing = entries(out);
    if fresh && !existing.is_empty() {
        if !overwrite {
            bail!(
                "--out {} is not empty; pass --overwrite to replace the run in it, --resume {} \
                 to continue it, or choose another --out",
                out.display(),
                out.display()
            );
        }
        if !out.join(CONFIG_FILE).is_file() {
            bail!(
                "--out {} --overwrite: the directory holds files but no {CONFIG_FILE}, so it is \
                 not a gadms run directory; refusing to clear it",
                out.display()
            );
        }
    }
    std::fs::create_dir_all(out)
        .with_context(|| format!("cannot create run directory {}", out.display()))?;
    let lock = RunLock::acquire(out)?;
    if fresh {
        for p in existing.iter().filter(|p| !p.ends_with(LOCK_FILE)) {
            let res = if p.is_dir() {
                std::fs::remove_dir_all(p)
            } else {
                std::fs::remove_file(p)
            };
            res.with_context(|| format!("--overwrite: cannot remove {}", p.display()))?;
        }
    }
    Ok(lock)
}

/// Checks a checkpoint's state against the run it resumes: its loader position and step count
/// must fit `steps_per_epoch` and `epochs`, its seed the run's.
pub fn check_state(
    st: &TrainState,
    steps_per_epoch: usize,
    epochs: usize,
    seed: u64,
) -> Result<()> {
    let (e, b) = (st.loader.epoch, st.loader.next_batch);
    let consumed = e
        .checked_mul(steps_per_epoch as u64)
        .and_then(|x| x.checked_add(b));
    let fits = b <= steps_per_epoch as u64
        && consumed == Some(st.step)
        && st.step <= (steps_per_epoch * epochs) as u64
        && st.epoch <= epochs
        && st.seed == seed;
    if !fits {
        bail!(
            "the checkpoint's state (step {}, epoch {}, loader at epoch {} batch {}, seed {}) \
             does not fit its run ({steps_per_epoch} steps per epoch, {epochs} epochs, seed \
             {seed}): the checkpoint or the training data changed",
            st.step,
            st.epoch,
            e + 1,
            b,
            st.seed
        );
    }
    Ok(())
}
