//! `gadms pretrain`: trains a CLIP model (by default the `Tiny` preset from random init) and
//! evaluates zero-shot text→image retrieval ([`crate::eval`], CLIP towers only) on held-out
//! identities before and after training.
//!
//! **Presets** (`--preset`): `tiny` (default; images `[3, 64, 32]`, embed 32) or `vit-b-16`
//! (CLIP ViT-B/16, images `[3, 384, 128]`, embed 512). [`run`] resolves `--resume` first (the
//! checkpoint's arguments fix the preset; `--preset` naming another one is refused), then
//! dispatches once on (preset, device) to `run_on::<D, M>`, `M` the preset's GA-DMS model type
//! ([`gadms_nn::GaDmsTiny`] or [`gadms_nn::GaDmsViTB16`], a [`TrainModel`]); the loop
//! itself, [`crate::train::run`], is the same for both.
//! The training and evaluation packs must be stored at the preset's image size
//! ([`crate::train::data::open_packed_for`]); the embedded synthetic set is 64×32, so `vit-b-16` needs
//! `--data`. `config.json` records `preset` and `image_hw`.
//!
//! **Objectives** (`--objective`):
//! * `sdm`: the two CLIP towers with the SDM loss only (docs/method.md §5.1) on the clean
//!   captions, with dfdx's Adam. No caption masking, no GASS, no decoder.
//! * `ga-dms` (default): the full GA-DMS step ([`crate::train::gadms::GaDmsRecipe`]): CLIP plus the MTP
//!   decoder ([`gadms_nn::GaDms`]: `GaDmsTiny` or `GaDmsViTB16`), GASS scores of
//!   each batch's clean captions written into a per-caption [`ScoreTable`] (one row per
//!   training caption, 0.85 at the start), the loader in dual-masking mode (noise-masked captions → SDM, informative-masked
//!   captions → MTP, masks of epoch `e + 1` drawn from the scores of epoch `e`), loss
//!   `L_sdm + β·L_mtp`, and [`crate::train::optim::Adam`] with the same hyper-parameters. Flags
//!   `--beta`, `--gass-norm`, `--gass-layers`, `--alpha-n`, `--alpha-i`, `--mask-lambda`.
//!
//! **Data.** By default the run uses the synthetic person set `fixtures/synth-pedes`, written by
//! [`gadms_data::synth`] in CUHK-PEDES form. It is embedded in the binary by `build.rs`, unpacked into
//! `RUN_DIR/data/synth-pedes` and packed with `gadms_data::pack` into `RUN_DIR/data/{train,test}`
//! ([`crate::train::data`]; a rerun reuses the shards). `--data DIR` trains on any `gadms pack` output
//! stored at the preset's size (64×32 for `tiny`, 384×128 for `vit-b-16`), and `--eval-data
//! DIR` evaluates on one. Batches come from
//! `gadms_data::loader::Loader`: a deterministic order and per-sample augmentation, and with
//! `ga-dms` the dual caption masking. `--accum-steps K` makes a step of K micro-batches of
//! `--batch-size` from one loader batch of `B·K` ([`crate::train::accum`]).
//!
//! **Outputs.** `RUN_DIR/config.json`, `metrics.jsonl` (one line per step: `loss`, `loss_sdm`,
//! `lr`, `pairs_per_s`, and with `ga-dms` also `loss_mtp`, `masked_tokens`, `grad_norm`; one
//! line per evaluation) and `last.safetensors` (the CLIP weights, for `embed`, `export`,
//! `inspect`). With `ga-dms` also `gadms_model.safetensors` (CLIP and decoder,
//! [`crate::train::run_dir::save_model_file`]) and `scores.f32` (the score table).
//!
//! Choices of the default run that differ from the paper (pids = identities, lr 1e-3,
//! warm-up, batch 32 × 24 epochs, augmentation, the trimmed text pass), and why, are in
//! docs/method.md §12.1.

use crate::device::{BuildDevice, DeviceChoice};
use crate::eval::EvalSet;
use crate::precision::Precision;
use crate::preset::{Preset, de_preset, ser_preset};
use crate::train::data::{self, LOADER_WORKERS, SHUFFLE_BUFFER, open_run, train_loader};
use crate::train::gadms::{GaDmsRecipe, StepConfig};
use crate::train::log::{DEFAULT_LOG_EVERY, default_log_every};
use crate::train::optim::adam_config;
use crate::train::recipe::Recipe;
use crate::train::run_dir::{self, RunArgs, TrainState, resolve_args};
use crate::train::sdm::{SdmRecipe, Trainer};
use crate::train::{Plan, Probe, TrainModel, accum, init, schedule};
use anyhow::{Context, Result, bail};
use argh::FromArgs;
use dfdx::nn::BuildModule;
use gadms_data::augment::AugmentConfig;
use gadms_data::loader::Masking;
use gadms_data::masking::MaskingConfig;
use gadms_data::scores::{INIT_SCORE, ScoreTable};
use gadms_nn::HasClipSpec;
use gadms_nn::gass::GassConfig;
use gadms_nn::loss::SDM_LOGIT_SCALE;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

mod options;
pub use options::*;

/// Pretrain a model (default: the Tiny preset from random init), evaluating zero-shot
/// text->image retrieval (CLIP towers) before and after. --objective ga-dms (default): full
/// GA-DMS (CLIP + MTP decoder, GASS token scores, dual noise/informative caption masking, loss
/// SDM + beta*MTP). --objective sdm: the CLIP towers with the SDM loss only (no masking, no
/// decoder; about 6x faster per step on the tiny preset). With no flags it uses the synthetic person dataset embedded in the binary
/// (fixtures/synth-pedes, CUHK-PEDES form, 64x32), packed into RUN_DIR/data; --data trains on
/// any `gadms pack` output at the preset's image size (tiny 64x32, vit-b-16 384x128; vit-b-16
/// needs --data). Writes RUN_DIR/config.json, metrics.jsonl and last.safetensors (CLIP
/// weights); with ga-dms also gadms_model.safetensors (CLIP + decoder) and scores.f32.
#[derive(FromArgs, Debug, Clone, Serialize, Deserialize)]
#[argh(subcommand, name = "pretrain")]
pub struct PretrainArgs {
    /// training epochs (default 24)
    #[argh(option, default = "DEFAULT_EPOCHS")]
    pub epochs: usize,
    /// image-caption pairs per micro-batch; a step takes batch-size x accum-steps pairs
    /// (default 32)
    #[argh(option, default = "DEFAULT_BATCH")]
    pub batch_size: usize,
    /// micro-batches per optimiser step (gradient accumulation, exact for SDM: trains as
    /// --batch-size B*N would, holding the activations of B pairs) (default 1)
    #[argh(option, default = "accum::default_steps()")]
    #[serde(default = "accum::default_steps")]
    pub accum_steps: usize,
    /// peak learning rate (default 1e-3; the paper's 1e-5 is for a pretrained ViT-B/16)
    #[argh(option, default = "DEFAULT_LR")]
    pub lr: f64,
    /// warm-up epochs from 0.1x lr (default min(5, epochs/4))
    #[argh(option)]
    pub warmup_epochs: Option<usize>,
    /// seed of the initialisation, the batch order and the augmentation (default 0)
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
    /// run directory (default runs/pretrain-PRESET); existing files in it are overwritten
    #[argh(option, default = "PathBuf::from(DEFAULT_OUT)")]
    pub out: PathBuf,
    /// training data: a `gadms pack` output packed at the preset's size (tiny 64x32, vit-b-16
    /// 384x128) (default, tiny only: the embedded synthetic set, packed into RUN_DIR/data)
    #[argh(option)]
    pub data: Option<PathBuf>,
    /// evaluation data: a `gadms pack` output at the preset's size; repeat the flag for
    /// several sets (best.safetensors follows the first one's R1) (default: the embedded set's
    /// test split without --data, none with it)
    #[argh(option)]
    pub eval_data: Vec<PathBuf>,
    /// augmentation: horizontal flip probability (default 0.5)
    #[argh(option, default = "DEFAULT_AUG_FLIP")]
    pub aug_flip: f64,
    /// augmentation: zero padding in pixels before the random crop (default 1; IRRA's 10 is
    /// for 384x128)
    #[argh(option, default = "DEFAULT_AUG_PAD")]
    pub aug_pad: usize,
    /// augmentation: random erasing probability (default 0; IRRA's is 0.5)
    #[argh(option, default = "DEFAULT_AUG_ERASE")]
    pub aug_erase: f64,
    /// write a resumable checkpoint (RUN_DIR/checkpoints, RUN_DIR/checkpoint.json) and
    /// last.safetensors every N optimiser steps (default 0: only at the end)
    #[argh(option, default = "0")]
    pub save_every: usize,
    /// when stdout is not a terminal, print a progress line every N steps (also appended to
    /// RUN_DIR/train.log; default 50; 0: none)
    #[argh(option, default = "DEFAULT_LOG_EVERY")]
    #[serde(default = "default_log_every")]
    pub log_every: usize,
    /// evaluate every N epochs and keep RUN_DIR/best.safetensors by R1 (default 0: only before
    /// and after training)
    #[argh(option, default = "0")]
    pub eval_every: usize,
    /// start from these weights: an OpenAI/open_clip/HF CLIP safetensors, a gadms weight file
    /// or a gadms run directory (default: random init)
    #[argh(option)]
    pub init: Option<PathBuf>,
    /// continue the run in RUN_DIR from its latest checkpoint, exactly (takes every other
    /// setting from the run; give no other flags)
    #[argh(option)]
    pub resume: Option<PathBuf>,
    /// replace the run in a non-empty --out: its files are deleted first (only a directory
    /// holding a gadms run's config.json is ever cleared)
    #[argh(switch)]
    #[serde(skip)]
    pub overwrite: bool,
    /// step the warm-up + cosine schedule after every optimiser step instead of once per
    /// epoch (the reference)
    #[argh(switch)]
    pub schedule_per_step: bool,
    /// SDM identities: identity (the dataset's person ids; a WebPerson pack gives every
    /// caption its own pid, so there this is GA-DMS pretraining's one pid per caption, §5.1) or
    /// caption (every caption its own pid on any dataset) (default identity)
    #[argh(option)]
    pub pids: Option<PidMode>,
    /// model preset: tiny (64x32 images) or vit-b-16 (CLIP ViT-B/16, 384x128; needs --data)
    /// (default tiny)
    #[argh(option, default = "Preset::Tiny")]
    #[serde(serialize_with = "ser_preset", deserialize_with = "de_preset")]
    pub preset: Preset,
    /// training objective: ga-dms (GASS + dual masking + MTP decoder, loss SDM + beta*MTP)
    /// or sdm (CLIP towers, SDM loss only) (default ga-dms)
    #[argh(option, default = "Objective::GaDms")]
    pub objective: Objective,
    /// ga-dms: weight beta of the MTP loss (default 0.4; the official script uses 0.3)
    #[argh(option, default = "DEFAULT_BETA")]
    pub beta: f64,
    /// ga-dms: GASS layer-map normalisation, paper or official (default paper)
    #[argh(option, default = "GassNormArg::Paper")]
    pub gass_norm: GassNormArg,
    /// ga-dms: final text blocks GASS re-runs (default 8; clamped to the tower depth)
    #[argh(option, default = "DEFAULT_GASS_LAYERS")]
    pub gass_layers: usize,
    /// ga-dms: cap alpha_n of the noise-masking curve (default 0.2)
    #[argh(option, default = "DEFAULT_ALPHA_N")]
    pub alpha_n: f64,
    /// ga-dms: cap alpha_i of the informative-masking curve (default 0.3)
    #[argh(option, default = "DEFAULT_ALPHA_I")]
    pub alpha_i: f64,
    /// ga-dms: steepness lambda of both masking curves (default 20)
    #[argh(option, default = "DEFAULT_MASK_LAMBDA")]
    pub mask_lambda: f64,
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

/// The defaults of every flag (what `gadms pretrain` with no flags uses).
impl Default for PretrainArgs {
    fn default() -> Self {
        PretrainArgs {
            epochs: DEFAULT_EPOCHS,
            batch_size: DEFAULT_BATCH,
            accum_steps: 1,
            lr: DEFAULT_LR,
            warmup_epochs: None,
            seed: 0,
            device: DeviceChoice::Cpu,
            precision: None,
            out: PathBuf::from(DEFAULT_OUT),
            data: None,
            eval_data: Vec::new(),
            aug_flip: DEFAULT_AUG_FLIP,
            aug_pad: DEFAULT_AUG_PAD,
            aug_erase: DEFAULT_AUG_ERASE,
            save_every: 0,
            log_every: DEFAULT_LOG_EVERY,
            eval_every: 0,
            init: None,
            resume: None,
            overwrite: false,
            schedule_per_step: false,
            pids: None,
            preset: Preset::Tiny,
            skip_corrupt: false,
            grad_checkpointing: false,
            objective: Objective::GaDms,
            beta: DEFAULT_BETA,
            gass_norm: GassNormArg::Paper,
            gass_layers: DEFAULT_GASS_LAYERS,
            alpha_n: DEFAULT_ALPHA_N,
            alpha_i: DEFAULT_ALPHA_I,
            mask_lambda: DEFAULT_MASK_LAMBDA,
        }
    }
}

impl PretrainArgs {
    /// Checks the flags; returns the warm-up length to use.
    pub fn validate(&self) -> Result<usize> {
        data::check_default_data(self.preset, self.data.is_some())?;
        Precision::resolve(self.precision, self.device)?;
        if self.epochs == 0 {
            bail!("--epochs must be at least 1");
        }
        if let Some(p) = &self.init {
            init::resolve(p)?;
        }
        accum::loader_batch(self.batch_size, self.accum_steps)?;
        if !(self.lr.is_finite() && self.lr > 0.0) {
            bail!("--lr must be a positive number, got {}", self.lr);
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
        if !(self.beta.is_finite() && self.beta >= 0.0) {
            bail!("--beta must be a finite number >= 0, got {}", self.beta);
        }
        if self.gass_layers == 0 {
            bail!("--gass-layers must be at least 1");
        }
        for (flag, p) in [("--alpha-n", self.alpha_n), ("--alpha-i", self.alpha_i)] {
            if !(0.0..=1.0).contains(&p) {
                bail!("{flag} must be a probability in [0, 1], got {p}");
            }
        }
        if !(self.mask_lambda.is_finite() && self.mask_lambda >= 0.0) {
            bail!(
                "--mask-lambda must be a finite number >= 0, got {}",
                self.mask_lambda
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

    /// A note when a preset other than tiny runs with the tiny-tuned defaults of `--lr`,
    /// `--aug-pad` or `--aug-erase`.
    pub fn defaults_note(&self) -> Option<String> {
        let tiny_defaults = self.lr == DEFAULT_LR
            || self.aug_pad == DEFAULT_AUG_PAD
            || self.aug_erase == DEFAULT_AUG_ERASE;
        (self.preset != Preset::Tiny && tiny_defaults).then(|| {
            format!(
                "note: --lr {} --aug-pad {} --aug-erase {} (the defaults {DEFAULT_LR}, \
                 {DEFAULT_AUG_PAD}, {DEFAULT_AUG_ERASE} are tuned for tiny from random init; \
                 GA-DMS trains ViT-B/16 from CLIP weights with --lr 1e-5 --aug-pad 10 \
                 --aug-erase 0.5)",
                self.lr, self.aug_pad, self.aug_erase
            )
        })
    }

    /// The loader's augmentation: IRRA's (§6.3) with these flip, pad and erasing settings.
    pub fn augment(&self) -> AugmentConfig {
        AugmentConfig {
            flip_p: self.aug_flip,
            pad: self.aug_pad,
            erase_p: self.aug_erase,
            ..AugmentConfig::default()
        }
    }

    /// The GA-DMS step settings of these flags (`--beta`, `--gass-norm`, `--gass-layers`).
    pub fn step_config(&self) -> StepConfig {
        StepConfig {
            beta: self.beta,
            gass: GassConfig {
                layers: self.gass_layers,
                norm: self.gass_norm.into(),
                ..GassConfig::default()
            },
            logit_scale: SDM_LOGIT_SCALE,
        }
    }

    /// `--pids`. A new run records its mode ([`run`] fills in identity); a run recorded without
    /// one, from before identity was the default of both objectives, keeps the default it was
    /// trained with (identity for sdm, caption for ga-dms).
    pub fn pid_mode(&self) -> PidMode {
        self.pids.unwrap_or(match self.objective {
            Objective::Sdm => PidMode::Identity,
            Objective::GaDms => PidMode::Caption,
        })
    }

    /// The dual-masking curves of these flags (`--alpha-n`, `--alpha-i`, `--mask-lambda`).
    pub fn masking_config(&self) -> MaskingConfig {
        MaskingConfig {
            alpha_n: self.alpha_n,
            alpha_i: self.alpha_i,
            lambda: self.mask_lambda,
            ..MaskingConfig::default()
        }
    }
}

impl RunArgs for PretrainArgs {
    fn preset(&self) -> Preset {
        self.preset
    }
    fn validate(&self) -> Result<usize> {
        PretrainArgs::validate(self)
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
pub fn run(mut given: PretrainArgs) -> Result<()> {
    if given.resume.is_none() && given.pids.is_none() {
        given.pids = Some(PidMode::Identity);
    }
    let (a, resume, warmup) = resolve_args(given, "pretrain")?;
    crate::dispatch!(a.device, run_preset(a, resume, warmup))
}

/// [`run`] on the device type `D`: picks the preset's model type.
fn run_preset<D: BuildDevice>(
    a: PretrainArgs,
    resume: Option<(PathBuf, TrainState)>,
    warmup: usize,
) -> Result<()> {
    crate::with_train_model!(a.preset, D, run_on(a, resume, warmup))
}

/// [`run`] on the device type `D` (`--device`) with the preset's model type `M` (`--preset`).
fn run_on<D: BuildDevice, M: TrainModel<D>>(
    a: PretrainArgs,
    resume: Option<(PathBuf, TrainState)>,
    warmup: usize,
) -> Result<()> {
    let t0 = Instant::now();
    let spec = M::Clip::SPEC;
    let _checkpointing = gadms_nn::checkpoint::scoped(a.grad_checkpointing);
    print_header(&a, spec.name, resume.as_ref());

    // Every input is checked before anything is written: the packed sets, and the starting
    // weights (loaded into the freshly initialised model).
    let given = data::check_packed(a.data.as_deref(), &a.eval_data, &spec, a.skip_corrupt)?;
    let dev = D::create(a.device, a.seed)?;
    let precision = Precision::resolve(a.precision, a.device)?;
    dev.set_precision(precision)?;
    println!("matrix products: {precision} (--precision; docs/gpu.md)");
    let init_from = a.init.as_ref().filter(|_| resume.is_none());
    let start = match a.objective {
        Objective::Sdm => {
            let mut clip = M::Clip::build(&dev);
            if let Some(p) = init_from {
                let r = init::load_init(&mut clip, &spec, None::<&mut M::Mtp>, p)?;
                println!("{}", r.summary);
            }
            Start::Sdm(clip)
        }
        Objective::GaDms => {
            a.step_config().validate().map_err(anyhow::Error::msg)?;
            let mut model = M::build(&dev);
            if let Some(p) = init_from {
                let (clip, mtp) = model.parts_mut();
                println!("{}", init::load_init(clip, &spec, Some(mtp), p)?.summary);
            }
            Start::GaDms(model)
        }
    };

    // Run directory (locked for the run's life) and data.
    let fresh = (resume.is_none(), a.overwrite);
    let (_lock, d) = open_run(given, &a.eval_data, &a.out, &spec, a.skip_corrupt, fresh)?;
    print_data(&d);
    // The probe of the fit: the first identities of the training set, as many as the test has.
    let probe_ids = d.evals.first().map_or(100, |s| s.set.n_ids());
    let probe = Probe {
        set: EvalSet::from_dataset(&d.train, Some(probe_ids))?,
        dir: d.train.dir.display().to_string(),
    };
    // GA-DMS: one score row per training caption (row = sample index), 0.85 at the start.
    let scores = Arc::new(ScoreTable::in_memory(match start {
        Start::GaDms(_) => d.train.len(),
        Start::Sdm(_) => 0,
    }));
    let masking = match start {
        Start::GaDms(_) => Masking::Dual {
            scores: scores.clone(),
            config: a.masking_config(),
        },
        Start::Sdm(_) => Masking::None,
    };
    let pairs = accum::loader_batch(a.batch_size, a.accum_steps)?;
    let (loader, steps_per_epoch) =
        train_loader(d.train.clone(), pairs, a.seed, a.augment(), masking)?;
    // A resumed run leaves out the damaged samples its checkpoint's run did (checked before
    // config.json is rewritten; train::run checks again).
    if let Some((_, st)) = &resume {
        let now = run_dir::Skipped::of(&d.train);
        run_dir::check_skipped(st.skipped.as_ref(), now.as_ref())
            .with_context(|| format!("--resume {}", a.out.display()))?;
    }
    let config = config_json(&a, &d, warmup, steps_per_epoch, &spec);
    if crate::dist::is_root() {
        run_dir::write_json(&a.out.join(run_dir::CONFIG_FILE), &config)?;
    }

    // The recipe (with --resume, train::run then loads the checkpoint into it).
    let caption_pids = a.pid_mode() == PidMode::Caption;
    let mut recipe: Box<dyn Recipe<D, Clip = M::Clip>> = match start {
        Start::Sdm(clip) => Box::new(SdmRecipe {
            trainer: Trainer::from_model(clip, a.lr),
            caption_pids,
            accum_steps: a.accum_steps,
        }),
        Start::GaDms(model) => {
            let cfg = a.step_config();
            let mut r = GaDmsRecipe::new(model, scores, cfg, a.masking_config(), caption_pids);
            r.accum_steps = a.accum_steps;
            Box::new(r)
        }
    };
    let plan = Plan {
        command: "pretrain",
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
        start: if a.init.is_some() {
            "--init weights"
        } else {
            "random init"
        },
        t0,
    };
    crate::train::run(
        &plan,
        recipe.as_mut(),
        loader,
        &d.evals,
        Some(&probe),
        resume,
    )
}

/// The model a run starts from, before its recipe is built.
enum Start<C, M> {
    /// `--objective sdm`: the CLIP towers.
    Sdm(C),
    /// `--objective ga-dms`: CLIP and the MTP decoder.
    GaDms(M),
}

/// What the run will do, and from where it resumes.
fn print_header(a: &PretrainArgs, preset: &str, resume: Option<&(PathBuf, TrainState)>) {
    let pid_mode = a.pid_mode();
    match a.objective {
        Objective::Sdm => println!(
            "gadms pretrain --objective sdm: trains the two CLIP towers of the '{preset}' preset \
             with the SDM loss only (no masking, no MTP decoder; pids: {pid_mode:?})."
        ),
        Objective::GaDms => println!(
            "gadms pretrain --objective ga-dms: trains the '{preset}' preset (CLIP + MTP decoder) \
             with GA-DMS (docs/method.md): each step, GASS scores every token of the clean \
             captions (last {} text blocks, multi-scale pooling {:?}, {:?} norm; §3.2) into the \
             score table (all {INIT_SCORE} at the start); the next epoch's dual masking (§4.1) \
             masks low-score tokens in the SDM copy (alpha_n {}) and high-score tokens in the \
             MTP copy (alpha_i {}; lambda {}); loss = SDM (1/tau {SDM_LOGIT_SCALE}; §5.1) + \
             {} * MTP (§5.2, §5.4); pids: {pid_mode:?}.",
            a.gass_layers,
            GassConfig::default().scales,
            a.gass_norm,
            a.alpha_n,
            a.alpha_i,
            a.mask_lambda,
            a.beta
        ),
    }
    if let Some(n) = a.defaults_note() {
        println!("{n}");
    }
    if let Some((dir, st)) = resume {
        println!(
            "resuming {} from {} (step {}, epoch {}, loader at epoch {} batch {})",
            a.out.display(),
            dir.display(),
            st.step,
            st.epoch,
            st.loader.epoch + 1,
            st.loader.next_batch
        );
    }
}

/// The training and evaluation sets, and what to know about them.
fn print_data(d: &data::RunData) {
    let m = &d.train.manifest;
    let evals = &d.evals;
    println!(
        "train: {} ids / {} images / {} captions ({}){}",
        m.identities,
        m.images,
        m.samples,
        d.train.dir.display(),
        match evals.first() {
            Some(e) => format!(
                "; eval: {} ids / {} images / {} captions ({}){}",
                e.set.n_ids(),
                e.set.n_images(),
                e.set.n_captions(),
                e.dir,
                if evals.len() > 1 {
                    format!(" and {} more", evals.len() - 1)
                } else {
                    String::new()
                }
            ),
            None => "; no --eval-data: only the fit on the training identities is measured".into(),
        }
    );
    if m.config.split != "train" {
        println!(
            "note: {} is the '{}' split of {}",
            d.train.dir.display(),
            m.config.split,
            m.config.dataset
        );
    }
    for e in evals {
        if let Some(n) = e.selection_note() {
            println!("{n}");
        }
    }
}

/// `config.json` of a pretraining run.
fn config_json(
    a: &PretrainArgs,
    d: &data::RunData,
    warmup: usize,
    steps_per_epoch: usize,
    spec: &gadms_nn::ClipSpec,
) -> serde_json::Value {
    let m = &d.train.manifest;
    let mut source = serde_json::json!({
        "source": d.source,
        "train": {
            "dir": d.train_dir, "dataset": m.config.dataset, "split": m.config.split,
            "ids": m.identities, "images": m.images, "captions": m.samples,
        },
        "image_hw": [spec.vision.image_h, spec.vision.image_w],
    });
    if let Some(e) = d.evals.first() {
        source["eval"] = serde_json::json!({
            "dir": e.dir, "split": e.split, "ids": e.set.n_ids(), "images": e.set.n_images(),
            "captions": e.set.n_captions(),
        });
    }
    let mut evals: Vec<serde_json::Value> = d
        .evals
        .iter()
        .map(|e| serde_json::json!({"dir": e.dir, "split": e.split, "dataset": e.dataset}))
        .collect();
    if a.skip_corrupt {
        // What --skip-corrupt left out, beside each set.
        source["train"]["skipped"] = data::skip_json(&d.train);
        for (j, e) in evals.iter_mut().zip(&d.evals) {
            j["skipped"] = e.skipped.clone();
        }
    }
    source["evals"] = serde_json::json!(evals);
    let mut config = serde_json::json!({
        "args": a,
        "build": crate::build_info::json(),
        "preset": spec.name,
        "image_hw": [spec.vision.image_h, spec.vision.image_w],
        "warmup_epochs_used": warmup,
        "steps_per_epoch": steps_per_epoch,
        "accum_steps": a.accum_steps,
        "pairs_per_step": a.batch_size * a.accum_steps,
        "objective": a.objective,
        "loss": match a.objective {
            Objective::Sdm => "sdm",
            Objective::GaDms => "sdm(noise-masked) + beta * mtp(informative-masked)",
        },
        "logit_scale": SDM_LOGIT_SCALE,
        "pids": a.pid_mode(),
        "optimizer": { "name": "adam", "betas": [0.9, 0.999], "eps": 1e-3, "weight_decay_l2": 4e-5 },
        "schedule": if a.schedule_per_step {
            "per-step linear warm-up from 0.1x, then cosine to 0"
        } else {
            "per-epoch linear warm-up from 0.1x, then cosine to 0"
        },
        "augment": a.augment(),
        "loader": { "workers": LOADER_WORKERS, "shuffle_buffer": SHUFFLE_BUFFER, "drop_last": true },
        "model": gadms_ckpt::clip_io::open_clip_model_cfg(spec),
        "data": source,
    });
    if a.objective == Objective::GaDms {
        let sc = a.step_config();
        config["ga_dms"] = serde_json::json!({
            "beta": sc.beta,
            "gass": { "layers": sc.gass.layers, "scales": sc.gass.scales, "norm": a.gass_norm },
            "masking": a.masking_config(),
            "score_rows": d.train.len(),
            "optimizer": adam_config(),
            "decoder": crate::preset::decoder_name(a.preset),
        });
    }
    config
}
