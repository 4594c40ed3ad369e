//! Training checkpoints for exact resume (`pretrain --resume`, `finetune --resume`; issue 4
//! item 7, shared/DESIGN.md "Checkpoints").
//!
//! # Layout
//!
//! ```text
//! RUN_DIR/checkpoint.json                  pointer: {"dir": "checkpoints/step-00000040", "step": 40}
//! RUN_DIR/checkpoints/step-00000040/
//!     model.safetensors                    every trained tensor, native (open_clip) names, f32
//!     adam.safetensors                     Adam step count, config and moments (optim::Adam::save)
//!     scores.f32                           GA-DMS score table (pretrain --objective ga-dms only)
//!     state.json                           TrainState: step, epoch, loader position, RNG, args, best R1
//! ```
//!
//! **Atomicity.** Every file is written to `NAME.tmp` and renamed. A checkpoint is complete
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

use anyhow::{Context, Result, bail};
use gadms_data::loader::LoaderState;
use serde::{Deserialize, Serialize};
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
pub fn save(
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
