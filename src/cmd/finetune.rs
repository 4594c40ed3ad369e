//! `gadms finetune`: IRRA fine-tuning of a pretrained model on a CUHK-PEDES-style split
//! (docs/method.md §5.4 and §6.2: "fine-tuning with the IRRA"). The step, the parameter
//! groups and the files are the IRRA recipe's ([`crate::train::irra`]); the loop is
//! [`crate::train::run`].
//!
//! **Schedule**: 5 warm-up epochs from 0.1× then cosine to 0, once per epoch
//! (`--schedule-per-step` to step it per iteration). **Defaults**: 60 epochs, batch 64,
//! lr 1e-5 (IRRA's). `--accum-steps K` makes a step of K micro-batches of `--batch-size`
//! ([`crate::train::accum`]).
//!
//! **Evaluation** every `--eval-every` epochs (default 1, IRRA's per-epoch evaluation) on each
//! `--eval-data` set; `best.safetensors` follows the first set's R1. IRRA selects on the
//! **test** split; the log says so when the evaluation set is a test split.
//!
//! **Presets** as `pretrain`: `--preset tiny` (default, `[3, 64, 32]` images, EMBED 32) or
//! `vit-b-16` (`[3, 384, 128]`, EMBED 512; needs `--data` packed at 384×128). The run is
//! generic over the preset's GA-DMS model type `M` ([`crate::train::irra::FtModel`] =
//! `GaDmsTiny`, or `GaDmsViTB16`) and its classifier `IdClassifier<EMBED>`
//! ([`TrainModel`]), chosen once per command.

use crate::device::{BuildDevice, DeviceChoice};
use crate::precision::Precision;
use crate::preset::{Preset, de_preset, ser_preset};
use crate::train::data::{self, open_run, train_loader};
use crate::train::irra::{Classes, FtWeights, IrraRecipe};
use crate::train::log::{DEFAULT_LOG_EVERY, default_log_every};
use crate::train::optim::adam_config;
use crate::train::run_dir::{self, RunArgs, TrainState, resolve_args};
use crate::train::{Plan, TrainModel, accum, init, schedule};
use anyhow::{Context, Result, bail};
use argh::FromArgs;
use gadms_data::augment::AugmentConfig;
use gadms_data::loader::Masking;
use gadms_nn::HasClipSpec;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::time::Instant;

/// Fine-tune a pretrained model with the IRRA recipe (SDM with person ids + ID loss over the
/// training identities + 15% MLM through the MTP decoder; IRRA parameter groups; warm-up +
/// cosine), evaluating text->image retrieval every epoch. With no --data it uses the embedded
/// synthetic CUHK-PEDES-form set (train split; test split for evaluation). Writes
/// RUN_DIR/config.json, metrics.jsonl, last.safetensors, best.safetensors and
/// gadms_model.safetensors (CLIP + decoder + classifier).
#[derive(FromArgs, Debug, Clone, Serialize, Deserialize)]
#[argh(subcommand, name = "finetune")]
pub struct FinetuneArgs {
    /// pretrained weights: a `gadms pretrain` run directory, a gadms weight file or an
    /// OpenAI/open_clip/HF CLIP safetensors (required unless --resume)
    #[argh(option)]
    pub init: Option<PathBuf>,
    /// training data: a `gadms pack` output at the preset's size (tiny 64x32, vit-b-16
    /// 384x128) with person ids (default, tiny only: the embedded
    /// synthetic set's train split)
    #[argh(option)]
    pub data: Option<PathBuf>,
    /// evaluation data (repeatable; best.safetensors follows the first) (default: the
    /// embedded set's test split without --data, none with it)
    #[argh(option)]
    pub eval_data: Vec<PathBuf>,
    /// epochs (default 60, IRRA)
    #[argh(option, default = "60")]
    pub epochs: usize,
    /// image-caption pairs per micro-batch; a step takes batch-size x accum-steps pairs
    /// (default 64, IRRA)
    #[argh(option, default = "64")]
    pub batch_size: usize,
    /// micro-batches per optimiser step (gradient accumulation, exact for SDM: trains as
    /// --batch-size B*N would, holding the activations of B pairs) (default 1)
    #[argh(option, default = "accum::default_steps()")]
    #[serde(default = "accum::default_steps")]
    pub accum_steps: usize,
    /// base learning rate (default 1e-5, IRRA)
    #[argh(option, default = "1e-5")]
    pub lr: f64,
    /// warm-up epochs from 0.1x lr (default min(5, epochs/4): IRRA's 5 from 20 epochs on)
    #[argh(option)]
    pub warmup_epochs: Option<usize>,
    /// step the schedule after every optimiser step instead of once per epoch
    #[argh(switch)]
    pub schedule_per_step: bool,
    /// weight of the ID loss (default 1)
    #[argh(option, default = "1.0")]
    pub id_weight: f64,
    /// weight of the MLM loss (default 1)
    #[argh(option, default = "1.0")]
    pub mlm_weight: f64,
    /// seed of the classifier init, the order, augmentation and masking (default 0)
    #[argh(option, default = "0")]
    pub seed: u64,
    /// device: cpu or cuda[:N] (default cpu; cuda needs a build with the `cuda` feature,
    /// scripts/build-cuda.sh). A resumed run may change it.
    #[argh(option, default = "Default::default()")]
    #[serde(default)]
    pub device: DeviceChoice,
    /// precision of the matrix products: f32, tf32 or bf16 (mixed: bf16 products with f32
    /// sums, everything else f32) (default bf16 on CUDA, f32 on the CPU, its only choice;
    /// docs/gpu.md). A resumed run may change it.
    #[argh(option)]
    #[serde(default)]
    pub precision: Option<Precision>,
    /// run directory (default runs/finetune-PRESET)
    #[argh(option, default = "PathBuf::from(DEFAULT_OUT)")]
    pub out: PathBuf,
    /// write a resumable checkpoint every N optimiser steps (default 0: only at the end)
    #[argh(option, default = "0")]
    pub save_every: usize,
    /// when stdout is not a terminal, print a progress line every N steps (also appended to
    /// RUN_DIR/train.log; default 50; 0: none)
    #[argh(option, default = "DEFAULT_LOG_EVERY")]
    #[serde(default = "default_log_every")]
    pub log_every: usize,
    /// evaluate every N epochs (default 1)
    #[argh(option, default = "1")]
    pub eval_every: usize,
    /// continue the run in RUN_DIR from its latest checkpoint (give no other flags)
    #[argh(option)]
    pub resume: Option<PathBuf>,
    /// replace the run in a non-empty --out: its files are deleted first (only a directory
    /// holding a gadms run's config.json is ever cleared)
    #[argh(switch)]
    #[serde(skip)]
    pub overwrite: bool,
    /// augmentation: horizontal flip probability (default 0.5)
    #[argh(option, default = "0.5")]
    pub aug_flip: f64,
    /// augmentation: padding before the random crop (default 1; IRRA's 10 is for 384x128)
    #[argh(option, default = "1")]
    pub aug_pad: usize,
    /// augmentation: random erasing probability (default 0; IRRA's is 0.5)
    #[argh(option, default = "0.0")]
    pub aug_erase: f64,
    /// model preset: tiny (64x32 images) or vit-b-16 (CLIP ViT-B/16, 384x128; needs --data)
    /// (default tiny)
    #[argh(option, default = "Preset::Tiny")]
    #[serde(serialize_with = "ser_preset", deserialize_with = "de_preset")]
    pub preset: Preset,
    /// verify every sample of --data and --eval-data first and leave the damaged ones out
    /// (listed on stderr and in RUN_DIR/config.json) instead of stopping at the first one
    #[argh(switch)]
    #[serde(default)]
    pub skip_corrupt: bool,
    /// activation checkpointing: keep only each transformer block's input in the forward
    /// pass and run the block again in the backward pass (less memory, one more forward)
    #[argh(switch)]
    #[serde(default)]
    pub grad_checkpointing: bool,
}

/// Default `--out` (of the tiny preset; `runs/finetune-vit-b-16` for vit-b-16).
pub const DEFAULT_OUT: &str = "runs/finetune-tiny";

impl Default for FinetuneArgs {
    fn default() -> Self {
        FinetuneArgs {
            init: None,
            data: None,
            eval_data: Vec::new(),
            epochs: 60,
            batch_size: 64,
            accum_steps: 1,
            lr: 1e-5,
            warmup_epochs: None,
            schedule_per_step: false,
            id_weight: 1.0,
            mlm_weight: 1.0,
            seed: 0,
            device: DeviceChoice::Cpu,
            precision: None,
            out: PathBuf::from(DEFAULT_OUT),
            save_every: 0,
            log_every: DEFAULT_LOG_EVERY,
            eval_every: 1,
            resume: None,
            overwrite: false,
            aug_flip: 0.5,
            aug_pad: 1,
            aug_erase: 0.0,
            preset: Preset::Tiny,
            skip_corrupt: false,
            grad_checkpointing: false,
        }
    }
}

impl FinetuneArgs {
    /// The loader's augmentation: IRRA's (§6.3) with these flip, pad and erasing settings.
    pub fn augment(&self) -> AugmentConfig {
        AugmentConfig {
            flip_p: self.aug_flip,
            pad: self.aug_pad,
            erase_p: self.aug_erase,
            ..AugmentConfig::default()
        }
    }

    /// Checks the flags; returns the warm-up length.
    pub fn validate(&self) -> Result<usize> {
        data::check_default_data(self.preset, self.data.is_some())?;
        Precision::resolve(self.precision, self.device)?;
        if self.init.is_none() && self.resume.is_none() {
            bail!(
                "finetune starts from pretrained weights: pass --init RUN_DIR|WEIGHTS (e.g. a \
                 `gadms pretrain` run directory)"
            );
        }
        if let Some(p) = &self.init {
            init::resolve(p)?;
        }
        if self.epochs == 0 {
            bail!("--epochs must be at least 1");
        }
        accum::loader_batch(self.batch_size, self.accum_steps)?;
        if !(self.lr.is_finite() && self.lr > 0.0) {
            bail!("--lr must be a positive number, got {}", self.lr);
        }
        for (flag, w) in [
            ("--id-weight", self.id_weight),
            ("--mlm-weight", self.mlm_weight),
        ] {
            if !(w.is_finite() && w >= 0.0) {
                bail!("{flag} must be a finite number >= 0, got {w}");
            }
        }
        for (flag, p) in [
            ("--aug-flip", self.aug_flip),
            ("--aug-erase", self.aug_erase),
        ] {
            if !(0.0..=1.0).contains(&p) {
                bail!("{flag} must be a probability in [0, 1], got {p}");
            }
        }
        let image_w = self.preset.spec().vision.image_w;
        if self.aug_pad >= image_w {
            bail!(
                "--aug-pad {} must be smaller than the image width {image_w}",
                self.aug_pad
            );
        }
        let warmup = self
            .warmup_epochs
            .unwrap_or_else(|| schedule::default_warmup(self.epochs));
        if warmup >= self.epochs {
            bail!(
                "--warmup-epochs {warmup} must be smaller than --epochs {}",
                self.epochs
            );
        }
        Ok(warmup)
    }
}

impl RunArgs for FinetuneArgs {
    fn preset(&self) -> Preset {
        self.preset
    }
    fn validate(&self) -> Result<usize> {
        FinetuneArgs::validate(self)
    }
    fn invocation(&mut self) -> (&mut DeviceChoice, &mut PathBuf, &mut Option<PathBuf>) {
        (&mut self.device, &mut self.out, &mut self.resume)
    }
    fn precision_mut(&mut self) -> &mut Option<Precision> {
        &mut self.precision
    }
}

/// Runs the command: resolves `--resume` (which fixes the preset) and checks the flags, then
/// dispatches once on (`--preset`, `--device`) to [`run_on`].
pub fn run(given: FinetuneArgs) -> Result<()> {
    let (a, resume, warmup) = resolve_args(given, "finetune")?;
    crate::dispatch!(a.device, run_preset(a, resume, warmup))
}

/// [`run`] on the device type `D`: picks the preset's model type.
fn run_preset<D: BuildDevice>(
    a: FinetuneArgs,
    resume: Option<(PathBuf, TrainState)>,
    warmup: usize,
) -> Result<()> {
    crate::with_train_model!(a.preset, D, run_on(a, resume, warmup))
}

/// [`run`] on the device type `D` (`--device`) with the preset's GA-DMS model type `M`
/// (`--preset`: `GaDmsTiny` or `GaDmsViTB16`).
fn run_on<D: BuildDevice, M: TrainModel<D>>(
    a: FinetuneArgs,
    resume: Option<(PathBuf, TrainState)>,
    warmup: usize,
) -> Result<()> {
    let t0 = Instant::now();
    let spec = M::Clip::SPEC;
    let _checkpointing = gadms_nn::checkpoint::scoped(a.grad_checkpointing);
    println!(
        "gadms finetune: IRRA recipe on the '{}' preset: SDM (person ids) + {}*ID + {}*MLM \
         (15%, MTP decoder), Adam lr {:.1e} with IRRA groups (cross/classifier/mlm_head 5x, \
         bias 2x without decay), {} warm-up epochs then cosine, {} epochs of batch {}{}.",
        spec.name,
        a.id_weight,
        a.mlm_weight,
        a.lr,
        warmup,
        a.epochs,
        a.batch_size,
        match a.accum_steps {
            1 => String::new(),
            k => format!(" x {k} accumulated micro-batches"),
        }
    );
    if let Some((dir, st)) = &resume {
        println!(
            "resuming {} from {} (step {}, loader at epoch {} batch {})",
            a.out.display(),
            dir.display(),
            st.step,
            st.loader.epoch + 1,
            st.loader.next_batch
        );
    }

    // Every input is checked before anything is written: the packed sets, and the starting
    // weights (loaded into the freshly initialised model).
    let given = data::check_packed(a.data.as_deref(), &a.eval_data, &spec, a.skip_corrupt)?;
    let dev = D::create(a.device, a.seed)?;
    let precision = Precision::resolve(a.precision, a.device)?;
    dev.set_precision(precision)?;
    println!("matrix products: {precision} (--precision; docs/gpu.md)");
    let mut model = M::build(&dev);
    if resume.is_none() {
        let init = a.init.as_ref().expect("validated");
        let (clip, mtp) = model.parts_mut();
        let r = init::load_init(clip, &spec, Some(mtp), init)?;
        let note = if r.decoder {
            ""
        } else {
            " (the MTP decoder starts from its initialisation)"
        };
        println!("{}{note}", r.summary);
    }

    // Run directory (locked for the run's life) and data.
    let fresh = (resume.is_none(), a.overwrite);
    let (_lock, d) = open_run(given, &a.eval_data, &a.out, &spec, a.skip_corrupt, fresh)?;
    let classes = Classes::of(&d.train)?;
    print_data(&d, &classes);
    let (loader, steps_per_epoch) = train_loader(
        d.train.clone(),
        accum::loader_batch(a.batch_size, a.accum_steps)?,
        a.seed,
        a.augment(),
        Masking::Mlm,
    )?;
    // A resumed run leaves out the damaged samples its checkpoint's run did (checked before
    // config.json is rewritten; train::run checks again).
    if let Some((_, st)) = &resume {
        let now = run_dir::Skipped::of(&d.train);
        run_dir::check_skipped(st.skipped.as_ref(), now.as_ref())
            .with_context(|| format!("--resume {}", a.out.display()))?;
    }
    let config = config_json(&a, &d, warmup, steps_per_epoch, classes.len(), &spec);
    if crate::dist::is_root() {
        run_dir::write_json(&a.out.join(run_dir::CONFIG_FILE), &config)?;
    }

    // The recipe: the model and a new classifier (drawn after the model, as IRRA does); with
    // --resume, train::run then loads the checkpoint into it.
    let weights = FtWeights {
        id: a.id_weight,
        mlm: a.mlm_weight,
    };
    let mut recipe = IrraRecipe::<D, M>::new(model, &dev, classes, weights);
    recipe.accum_steps = a.accum_steps;
    let plan = Plan {
        command: "finetune",
        args: serde_json::to_value(&a)?,
        out: a.out.clone(),
        seed: a.seed,
        epochs: a.epochs,
        lr: a.lr,
        warmup,
        schedule_per_step: a.schedule_per_step,
        eval_every: a.eval_every,
        save_every: a.save_every,
        log_every: a.log_every,
        start: "--init weights",
        t0,
    };
    crate::train::run(&plan, &mut recipe, loader, &d.evals, None, resume)
}

/// The training and evaluation sets, and what to know about them.
fn print_data(d: &data::RunData, classes: &Classes) {
    let m = &d.train.manifest;
    println!(
        "train: {} ids / {} images / {} captions ({}); ID classifier over {} classes",
        m.identities,
        m.images,
        m.samples,
        d.train.dir.display(),
        classes.len()
    );
    if !classes.is_identity() {
        println!(
            "note: the training pids are not 0..{}: the classifier's classes are the {} distinct \
             pids in ascending order",
            classes.len(),
            classes.len()
        );
    }
    if d.evals.is_empty() {
        println!("note: no --eval-data: no evaluation during training");
    }
    for e in &d.evals {
        println!(
            "eval: {} ids / {} images / {} captions ({}, split '{}')",
            e.set.n_ids(),
            e.set.n_images(),
            e.set.n_captions(),
            e.dir,
            e.split
        );
        if let Some(n) = e.selection_note() {
            println!("{n}");
        }
    }
}

/// `config.json` of a fine-tuning run.
fn config_json(
    a: &FinetuneArgs,
    d: &data::RunData,
    warmup: usize,
    steps_per_epoch: usize,
    classes: usize,
    spec: &gadms_nn::ClipSpec,
) -> serde_json::Value {
    let m = &d.train.manifest;
    let mut evals: Vec<serde_json::Value> = d
        .evals
        .iter()
        .map(|e| serde_json::json!({"dir": e.dir, "split": e.split}))
        .collect();
    let mut train =
        serde_json::json!({ "dir": d.train_dir, "ids": m.identities, "captions": m.samples });
    if a.skip_corrupt {
        // What --skip-corrupt left out, beside each set.
        train["skipped"] = data::skip_json(&d.train);
        for (j, e) in evals.iter_mut().zip(&d.evals) {
            j["skipped"] = e.skipped.clone();
        }
    }
    serde_json::json!({
        "args": a,
        "build": crate::build_info::json(),
        "preset": spec.name,
        "image_hw": [spec.vision.image_h, spec.vision.image_w],
        "decoder": crate::preset::decoder_name(a.preset),
        "warmup_epochs_used": warmup,
        "steps_per_epoch": steps_per_epoch,
        "accum_steps": a.accum_steps,
        "pairs_per_step": a.batch_size * a.accum_steps,
        "loss": "sdm(person ids) + id_weight * id + mlm_weight * mlm(15%)",
        "classes": classes,
        "optimizer": adam_config(),
        "param_groups": "IRRA: cross 5x lr; bias 2x lr, wd 0; classifier/mlm_head 5x lr",
        "schedule": if a.schedule_per_step { "per-step" } else { "per-epoch" },
        "augment": a.augment(),
        "model": gadms_ckpt::clip_io::open_clip_model_cfg(spec),
        "train": train,
        "evals": evals,
    })
}
