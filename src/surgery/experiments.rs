//! The bodies of the `examples/surgery_*.rs` experiments, on the `Tiny` preset (seconds each).
//!
//! Each one starts from a "pretrained" Tiny model (random initialisation plus a few SDM steps
//! on synthetic batches, saved to `OUT/base.safetensors` like a real checkpoint), applies one
//! surgery, trains a few SDM steps ([`sdm_step`]) on synthetic batches
//! ([`gadms_data::synth::synthetic_batch`]: N(0,1) images, random captions, one identity
//! per pair) and saves the result with [`gadms_ckpt::save_clip`] (the standard OpenAI/open_clip
//! layout with gadms metadata):
//!
//! | experiment | surgery | saved type | `gadms embed` / `gadms export` |
//! |---|---|---|---|
//! | [`frozen_vision`] | vision tower copied from the checkpoint, grafted onto a fresh text tower and frozen | `Tiny` | accepted (preset `tiny`) |
//! | [`shallow_text`] | keep 1 of 2 text blocks; vision tower copied from the checkpoint | custom (`custom` preset) | clear error: no preset; exported from Rust instead (`OUT/open_clip/`) |
//! | [`new_projection`] | fresh projections of joint width 48 (was 32) on both towers | custom | as above |
//!
//! The command line instantiates only the preset types (`with_preset!`), so a surgically
//! changed shape cannot be run by `gadms embed` / `gadms export`; they refuse it with an error
//! that says so, and the experiment itself writes the open_clip export through the generic
//! [`gadms_ckpt::export_open_clip`] (which works for any CLIP type).

use super::*;
use crate::train::optim::{Adam, AdamConfig};
use anyhow::{Context, Result};
use dfdx::nn::BuildModule;
use gadms_ckpt::surgery::load_vision_tower;
use gadms_ckpt::{export_open_clip, module_to_map, save_clip};
use gadms_data::synth::synthetic_batch;
use gadms_nn::{ClipSpec, HasClipSpec, Tiny, TinyText, TinyVision};
use std::path::{Path, PathBuf};

/// The base preset.
pub type TinyModel = Tiny<f32, Dev>;
/// Tiny's text tower with one block instead of two.
pub type ShallowText = TextTower<49408, 77, 64, 2, 32, 256, 1, 32, f32, Dev>;
/// Tiny with a one-block text tower (a custom shape).
pub type ShallowTiny = Clip<TinyVision<f32, Dev>, ShallowText>;
/// Tiny's vision tower projecting to 48.
pub type Vision48 = VisionTower<64, 32, 16, 768, 9, 64, 2, 32, 256, 2, 48, f32, Dev>;
/// Tiny's text tower projecting to 48.
pub type Text48 = TextTower<49408, 77, 64, 2, 32, 256, 2, 48, f32, Dev>;
/// Tiny with a joint width of 48 (a custom shape).
pub type Tiny48 = Clip<Vision48, Text48>;
/// Tiny with its vision tower frozen.
pub type TinyFrozenVision = Clip<Frozen<TinyVision<f32, Dev>>, TinyText<f32, Dev>>;

/// Experiment settings.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Output directory (created).
    pub out: PathBuf,
    /// SDM steps of the "pretraining" that makes the base checkpoint.
    pub base_steps: usize,
    /// SDM steps after the surgery.
    pub steps: usize,
    /// Pairs per batch.
    pub batch: usize,
    /// Learning rate.
    pub lr: f32,
    /// Seed of the model initialisation and of the batches.
    pub seed: u64,
}

impl Settings {
    /// Defaults that run in seconds: 2 base steps, 4 steps, batch 8, lr 1e-3, seed 0.
    pub fn new(out: impl Into<PathBuf>) -> Self {
        Settings {
            out: out.into(),
            base_steps: 2,
            steps: 4,
            batch: 8,
            lr: 1e-3,
            seed: 0,
        }
    }
}

/// What an experiment did.
#[derive(Clone, Debug)]
pub struct Outcome {
    /// The model's sizes (`spec.name` is `tiny` or `custom`).
    pub spec: ClipSpec,
    /// SDM loss of each step after the surgery.
    pub losses: Vec<f32>,
    /// The base checkpoint the surgery started from.
    pub base: PathBuf,
    /// The trained model (`save_clip` layout).
    pub checkpoint: PathBuf,
    /// The open_clip export written from Rust (custom shapes only).
    pub export_dir: Option<PathBuf>,
    /// Parameter tensors the optimiser holds state for.
    pub tracked: usize,
    /// Parameter tensors of the model.
    pub tensors: usize,
    /// For [`frozen_vision`]: the vision tower is bit-identical to the checkpoint's after
    /// training.
    pub frozen_unchanged: Option<bool>,
}

fn train<M>(model: &mut M, opt: &mut Adam, s: &Settings, seed: u64, steps: usize) -> Vec<f32>
where
    M: SdmModel,
{
    (0..steps)
        .map(|i| {
            let batch = synthetic_batch(s.batch, 64, 32, seed.wrapping_mul(1000) + i as u64);
            let loss = model.step(opt, &batch, s.lr);
            assert!(loss.is_finite(), "the SDM loss became {loss}");
            loss
        })
        .collect()
}

/// The CLIP types the experiments train (a thin object-safe-free wrapper over [`sdm_step`]).
pub trait SdmModel {
    /// One SDM step.
    fn step(&mut self, opt: &mut Adam, batch: &Batch, lr: f32) -> f32;
}

macro_rules! sdm_model {
    ($($t:ty),*) => {$(
        impl SdmModel for $t {
            fn step(&mut self, opt: &mut Adam, batch: &Batch, lr: f32) -> f32 {
                sdm_step(self, opt, batch, lr, &|_| crate::train::optim::Group::PLAIN)
            }
        }
    )*};
}
sdm_model!(TinyModel, ShallowTiny, Tiny48, TinyFrozenVision);

/// Builds the base Tiny model, trains it `base_steps` steps and saves it to `OUT/base.safetensors`.
pub fn base_checkpoint(s: &Settings) -> Result<(TinyModel, PathBuf)> {
    std::fs::create_dir_all(&s.out).with_context(|| format!("creating {}", s.out.display()))?;
    let dev = Dev::seed_from_u64(s.seed);
    let mut model = TinyModel::build(&dev);
    let mut opt = Adam::new(AdamConfig::default());
    train(&mut model, &mut opt, s, s.seed, s.base_steps);
    let path = s.out.join("base.safetensors");
    save_clip(&model, &TinyModel::SPEC, &path)?;
    Ok((model, path))
}

fn n_tensors<M: TensorCollection<f32, Dev>>(m: &M) -> usize {
    module_to_map(m).tensors.len()
}

/// Keep the first text block of two: `TinyText → TextTower<…, 1, …>`; the vision tower is
/// copied from the base checkpoint *file* into the new model type (`load_vision_tower`, the
/// tower types match although the presets differ). Saves `OUT/shallow_text.safetensors`
/// (custom shape) and exports `OUT/open_clip/`.
pub fn shallow_text(s: &Settings) -> Result<Outcome> {
    let (base, base_path) = base_checkpoint(s)?;
    let dev = Dev::seed_from_u64(s.seed + 1);
    let text: ShallowText = keep_text_layers(base.text);
    let mut visual = TinyVision::<f32, Dev>::build(&dev);
    load_vision_tower(&mut visual, &base_path)?;
    let mut model: ShallowTiny = assemble(visual, text);
    let mut opt = Adam::new(AdamConfig::default());
    let losses = train(&mut model, &mut opt, s, s.seed + 1, s.steps);
    finish(model, opt, s, "shallow_text", base_path, losses, None)
}

/// Replace both projections by fresh ones of joint width 48 (`with_embed::<48>`); every other
/// weight is the base model's. Saves `OUT/new_projection.safetensors` (custom) and exports
/// `OUT/open_clip/`.
pub fn new_projection(s: &Settings) -> Result<Outcome> {
    let (base, base_path) = base_checkpoint(s)?;
    let mut model: Tiny48 =
        with_embed::<48, _, _, _, _, _, _, _, _, _, _, _, _, _, _, _, _, _, _, _, _>(base);
    let mut opt = Adam::new(AdamConfig::default());
    let losses = train(&mut model, &mut opt, s, s.seed + 2, s.steps);
    finish(model, opt, s, "new_projection", base_path, losses, None)
}

/// Graft the base checkpoint's vision tower (copied from the file) onto a freshly initialised
/// text tower, freeze it, and train the text tower only. The optimiser holds no state for the
/// vision tower and its weights stay bit-identical. The result is a `Tiny` model again
/// (`thaw`), saved as `OUT/frozen_vision.safetensors`, which `gadms embed` and `gadms export`
/// accept.
pub fn frozen_vision(s: &Settings) -> Result<Outcome> {
    let (_, base_path) = base_checkpoint(s)?;
    let dev = Dev::seed_from_u64(s.seed + 3);
    let mut visual = TinyVision::<f32, Dev>::build(&dev);
    load_vision_tower(&mut visual, &base_path)?;
    let before = module_to_map(&visual);
    let text = TinyText::<f32, Dev>::build(&dev);
    let mut model: TinyFrozenVision = freeze_vision(assemble(visual, text));
    let mut opt = Adam::new(AdamConfig::default());
    let losses = train(&mut model, &mut opt, s, s.seed + 3, s.steps);
    let unchanged = module_to_map(&model.visual.0).tensors == before.tensors;
    let model: TinyModel = thaw(model);
    finish(
        model,
        opt,
        s,
        "frozen_vision",
        base_path,
        losses,
        Some(unchanged),
    )
}

/// Graft the base checkpoint's vision tower (copied from the file) onto a freshly initialised
/// text tower and train both, the grafted tower at a tenth of the learning rate (an
/// [`crate::train::optim::Group`] rule on the `visual.` names). The result is a `Tiny` model, saved as
/// `OUT/graft_new_text.safetensors`, which `gadms eval`, `embed` and `export` accept.
pub fn graft_new_text(s: &Settings) -> Result<Outcome> {
    let (_, base_path) = base_checkpoint(s)?;
    let dev = Dev::seed_from_u64(s.seed + 4);
    let mut visual = TinyVision::<f32, Dev>::build(&dev);
    load_vision_tower(&mut visual, &base_path)?;
    let text = TinyText::<f32, Dev>::build(&dev);
    let mut model: TinyModel = assemble(visual, text);
    let mut opt = Adam::new(AdamConfig::default());
    let rule = |name: &str| crate::train::optim::Group {
        lr_mult: if name.starts_with("visual.") {
            0.1
        } else {
            1.0
        },
        wd_mult: 1.0,
    };
    let losses = (0..s.steps)
        .map(|i| {
            let batch = synthetic_batch(s.batch, 64, 32, (s.seed + 4) * 1000 + i as u64);
            let loss = sdm_step(&mut model, &mut opt, &batch, s.lr, &rule);
            assert!(loss.is_finite(), "the SDM loss became {loss}");
            loss
        })
        .collect();
    finish(model, opt, s, "graft_new_text", base_path, losses, None)
}

/// Replace both projections by fresh ones of the *same* joint width (`with_embed::<32>`: a
/// re-initialised joint space over the trained towers) and train. The result keeps the
/// `Tiny` shape, saved as `OUT/reinit_projection.safetensors`, which the CLI accepts.
pub fn reinit_projection(s: &Settings) -> Result<Outcome> {
    let (base, base_path) = base_checkpoint(s)?;
    let mut model: TinyModel =
        with_embed::<32, _, _, _, _, _, _, _, _, _, _, _, _, _, _, _, _, _, _, _, _>(base);
    let mut opt = Adam::new(AdamConfig::default());
    let losses = train(&mut model, &mut opt, s, s.seed + 5, s.steps);
    finish(model, opt, s, "reinit_projection", base_path, losses, None)
}

fn finish<M: TensorCollection<f32, Dev> + HasClipSpec>(
    model: M,
    opt: Adam,
    s: &Settings,
    name: &str,
    base: PathBuf,
    losses: Vec<f32>,
    frozen_unchanged: Option<bool>,
) -> Result<Outcome> {
    let spec = M::SPEC;
    let checkpoint = s.out.join(format!("{name}.safetensors"));
    save_clip(&model, &spec, &checkpoint)?;
    let export_dir = if spec.name == "custom" {
        let dir = s.out.join("open_clip");
        std::fs::create_dir_all(&dir)?;
        export_open_clip(&model, &spec, &dir)?;
        Some(dir)
    } else {
        None
    };
    Ok(Outcome {
        spec,
        losses,
        base,
        checkpoint,
        export_dir,
        tracked: opt.tracked(),
        tensors: n_tensors(&model),
        frozen_unchanged,
    })
}

/// Prints an outcome (the examples' output).
pub fn print(o: &Outcome) {
    println!("model: {} {:?}", o.spec.name, o.spec);
    for (i, l) in o.losses.iter().enumerate() {
        println!("step {i}: SDM loss {l:.4}");
    }
    println!(
        "optimiser state for {} of {} parameter tensors",
        o.tracked, o.tensors
    );
    if let Some(u) = o.frozen_unchanged {
        println!("frozen tower unchanged: {u}");
    }
    println!("base checkpoint: {}", o.base.display());
    println!("saved: {}", o.checkpoint.display());
    match &o.export_dir {
        Some(d) => println!(
            "custom shape: exported from Rust to {} (gadms embed/export run presets only)",
            d.display()
        ),
        None => println!(
            "preset '{}': try `gadms embed --weights {} --texts FILE --out E.safetensors`",
            o.spec.name,
            o.checkpoint.display()
        ),
    }
}

/// `Path` of an example's output directory: the first argument, else `runs/NAME`.
pub fn out_dir(name: &str) -> PathBuf {
    std::env::args()
        .nth(1)
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new("runs").join(name))
}
