//! `gadms pretrain`: trains a CLIP model (by default the `Tiny` preset from random init) and
//! evaluates zero-shot text→image retrieval ([`eval`], CLIP towers only) on held-out
//! identities before and after training.
//!
//! **Presets** (`--preset`): `tiny` (default; images `[3, 64, 32]`, embed 32) or `vit-b-16`
//! (CLIP ViT-B/16, images `[3, 384, 128]`, embed 512). [`run`] resolves `--resume` first (the
//! checkpoint's arguments fix the preset; `--preset` naming another one is refused), then
//! dispatches once on (preset, device) to `run_on::<D, M>`, `M` the preset's GA-DMS model type
//! ([`GaDmsTiny`] or [`crate::gadms_step::GaDmsViTB16`], a
//! [`TrainModel`](crate::train_model::TrainModel)); the loop itself is the same for both.
//! The training and evaluation packs must be stored at the preset's image size
//! ([`data::open_packed_for`]); the embedded synthetic set is 64×32, so `vit-b-16` needs
//! `--data`. `config.json` records `preset` and `image_hw`.
//!
//! **Objectives** (`--objective`):
//! * `sdm` (default): the two CLIP towers with the SDM loss only (shared/ga-dms-method.md
//!   §5.1) on the clean captions, with dfdx's Adam. No caption masking, no GASS, no decoder.
//! * `ga-dms`: the full GA-DMS step ([`crate::gadms_step::train_step`]): CLIP plus the MTP
//!   decoder ([`crate::gadms_step::GaDms`]: `GaDmsTiny` or `GaDmsViTB16`), GASS scores of
//!   each batch's clean captions written into a per-caption [`ScoreTable`] (one row per
//!   training caption, 0.85 at the start), the loader in dual-masking mode (noise-masked captions → SDM, informative-masked
//!   captions → MTP, masks of epoch `e + 1` drawn from the scores of epoch `e`), loss
//!   `L_sdm + β·L_mtp`, and [`crate::optim::Adam`] with the same hyper-parameters. Flags
//!   `--beta`, `--gass-norm`, `--gass-layers`, `--alpha-n`, `--alpha-i`, `--mask-lambda`. It
//!   costs (Tiny) about 0.7–1 s per step at batch 32 on 2 cores (GASS re-runs the text tower with a
//!   backward, and the text tower runs three times), about 13× an SDM step (measured: 2 epochs,
//!   86 steps, in 102 s against 8 s for `sdm`).
//!
//! **Data.** By default the run uses the synthetic person set `fixtures/synth-pedes`, written by
//! [`gadms_data::synth`] in CUHK-PEDES form. It is embedded in the binary by `build.rs`, unpacked into
//! `RUN_DIR/data/synth-pedes` and packed with `gadms_data::pack` into `RUN_DIR/data/{train,test}`
//! ([`data`]; a rerun reuses the shards). `--data DIR` trains on any `gadms pack` output
//! stored at the preset's size (64×32 for `tiny`, 384×128 for `vit-b-16`), and `--eval-data
//! DIR` evaluates on one. Batches come from
//! `gadms_data::loader::Loader`: a deterministic order and per-sample augmentation, and with
//! `ga-dms` the dual caption masking.
//!
//! **Outputs.** `RUN_DIR/config.json`, `metrics.jsonl` (one line per step: `loss`, `loss_sdm`,
//! `lr`, `pairs_per_s`, and with `ga-dms` also `loss_mtp`, `masked_tokens`, `grad_norm`; one
//! line per evaluation) and `last.safetensors` (the CLIP weights, for `embed`, `export`,
//! `inspect`). With `ga-dms` also `gadms_model.safetensors` (CLIP and decoder,
//! [`crate::gadms_step::save_gadms`]) and `scores.f32` (the score table).
//!
//! Choices that differ from the paper, and why:
//! * **pids = identities.** GA-DMS pretraining gives every caption its own pid (q = I). Here the
//!   identity is the pid, so the other captions and images of the same person in a batch become
//!   positives. That gives more signal per step on a small dataset.
//! * **lr 1e-3.** The paper's 1e-5 (code) / 1e-4 (paper) fine-tunes a *pretrained* ViT-B/16. A
//!   64-wide model from random init needs a much larger step: 3e-3 and 1e-2 were measured to
//!   stay stuck at the collapsed, uniform-similarity solution. Adam ε = 1e-3, β = (0.9, 0.999)
//!   and coupled L2 weight decay 4e-5 are the paper's (§6.1).
//! * **Warm-up** for `min(5, epochs/4)` epochs from 0.1× (see [`schedule::default_warmup`]),
//!   which is the paper's 5 for the default 24 epochs. Then a cosine to 0, stepped once per
//!   epoch, as in the paper.
//! * **Batch 32, 24 epochs** over the 1400 training captions: 43 steps per epoch, 1032 steps in
//!   80–100 s on 2 cores. Test R1 goes from 1 to 56 at seed 0 and to 48 at seed 1 (chance 1)
//!   with dfdx's Adam; with the checkpointable [`crate::optim::Adam`] (same update, other
//!   rounding) 1 to 47.75 at seed 0 (107 s of CPU time); with the fused CPU kernels
//!   (`gadms_nn::fast`) 1 to 45.75 in 82 s.
//!   From random init the towers first collapse to identical features (loss ≈ 27.9 at batch 64)
//!   and need a few hundred steps to leave that plateau. The number of steps therefore matters
//!   more than the number of negatives per batch.
//! * **Augmentation: flip 0.5 and a 1-pixel pad + random crop, no random erasing.** §6.3 pads
//!   10 pixels, a third of a 64×32 image's width. With it test R1 collapsed to 6. Erasing
//!   (p 0.5) with a 2-pixel pad slowed learning: test R1 35 against 43–46 without it. The
//!   measurements are in fixtures/synth-pedes/README.md. `--aug-flip`, `--aug-pad` and
//!   `--aug-erase` change the settings.
//! * The text tower runs on the first `max EOS + 1` positions of each batch
//!   ([`text_features_trimmed`]). This is exact under the causal mask and 3× faster.

pub mod data;
pub mod schedule;

use crate::checkpoint;
use crate::device::{BuildDevice, DeviceChoice};
use crate::eval::{self, EvalSet, RankMetrics as Metrics};
use crate::gadms_step::{GaDmsTiny, StepConfig, load_gadms, save_gadms, train_step};
use crate::optim::{
    Adam as OptAdam, AdamConfig as OptAdamConfig, Group, WeightDecay as OptWeightDecay,
};
use crate::preset::{Dev, Preset};
use crate::train_model::TrainModel;
use anyhow::{Context, Result, bail};
use argh::FromArgs;
use dfdx::nn::ZeroGrads;
use dfdx::nn::tensor_collection::TensorCollection;
use dfdx::prelude::*;
use gadms_data::TokenIds;
use gadms_data::augment::AugmentConfig;
use gadms_data::loader::{Loader, LoaderConfig, Masking};
use gadms_data::masking::MaskingConfig;
use gadms_data::scores::ScoreTable;
use gadms_nn::gass::{GassConfig, GassNorm};
use gadms_nn::loss::SDM_LOGIT_SCALE;
use gadms_nn::{ClipSpec, HasClipSpec, Tiny};
use indicatif::{ProgressBar, ProgressStyle};
use serde::{Deserialize, Serialize};
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

/// Pretrain a model (default: the Tiny preset from random init), evaluating zero-shot
/// text->image retrieval (CLIP towers) before and after. --objective sdm (default): the CLIP
/// towers with the SDM loss only. --objective ga-dms: full GA-DMS (CLIP + MTP decoder, GASS
/// token scores, dual noise/informative caption masking, loss SDM + beta*MTP), about 13x slower
/// per step. With no flags it uses the synthetic person dataset embedded in the binary
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
    /// image-caption pairs per step (default 32)
    #[argh(option, default = "DEFAULT_BATCH")]
    pub batch_size: usize,
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
    /// step the warm-up + cosine schedule after every optimiser step instead of once per
    /// epoch (the reference)
    #[argh(switch)]
    pub schedule_per_step: bool,
    /// SDM identities: caption (every caption its own pid, GA-DMS pretraining §5.1) or
    /// identity (the dataset's person ids) (default: identity for sdm, caption for ga-dms)
    #[argh(option)]
    pub pids: Option<PidMode>,
    /// test hook: make the batch of this step (1-based) non-finite
    #[argh(option, hidden_help)]
    #[serde(skip)]
    pub debug_nan_at_step: Option<u64>,
    /// test hook: sleep this many milliseconds after every step
    #[argh(option, hidden_help, default = "0")]
    #[serde(skip)]
    pub debug_step_delay_ms: u64,
    /// model preset: tiny (64x32 images) or vit-b-16 (CLIP ViT-B/16, 384x128; needs --data)
    /// (default tiny)
    #[argh(option, default = "Preset::Tiny")]
    #[serde(serialize_with = "ser_preset", deserialize_with = "de_preset")]
    pub preset: Preset,
    /// training objective: sdm (CLIP towers, SDM loss only) or ga-dms (GASS + dual masking +
    /// MTP decoder, loss SDM + beta*MTP) (default sdm)
    #[argh(option, default = "Objective::Sdm")]
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
}

/// `--pids`: which identities SDM's matching distribution uses (shared/ga-dms-method.md §5.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum PidMode {
    /// Every caption is its own identity (`pid = sample index`; GA-DMS pretraining: q = I).
    #[serde(rename = "caption")]
    Caption,
    /// The dataset's person ids (IRRA fine-tuning; more positives per batch).
    #[serde(rename = "identity")]
    Identity,
}

impl std::str::FromStr for PidMode {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "caption" => Ok(PidMode::Caption),
            "identity" | "person" => Ok(PidMode::Identity),
            _ => Err(format!("unknown pid mode '{s}': use caption or identity")),
        }
    }
}

/// `--objective`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Objective {
    /// CLIP towers, SDM loss only.
    #[serde(rename = "sdm")]
    Sdm,
    /// Full GA-DMS: GASS, dual masking, SDM + β·MTP.
    #[serde(rename = "ga-dms")]
    GaDms,
}

impl std::str::FromStr for Objective {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "sdm" => Ok(Objective::Sdm),
            "ga-dms" | "gadms" | "ga_dms" => Ok(Objective::GaDms),
            _ => Err(format!("unknown objective '{s}': use sdm or ga-dms")),
        }
    }
}

/// `--gass-norm`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum GassNormArg {
    /// [`GassNorm::Paper`].
    #[serde(rename = "paper")]
    Paper,
    /// [`GassNorm::Official`].
    #[serde(rename = "official")]
    Official,
}

impl std::str::FromStr for GassNormArg {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "paper" => Ok(GassNormArg::Paper),
            "official" => Ok(GassNormArg::Official),
            _ => Err(format!(
                "unknown GASS normalisation '{s}': use paper or official"
            )),
        }
    }
}

impl From<GassNormArg> for GassNorm {
    fn from(n: GassNormArg) -> GassNorm {
        match n {
            GassNormArg::Paper => GassNorm::Paper,
            GassNormArg::Official => GassNorm::Official,
        }
    }
}

/// Serialises a preset as its name (`tiny`, `vit-b-16`).
pub fn ser_preset<S: serde::Serializer>(p: &Preset, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(p.spec().name)
}

/// Reads a preset name back.
pub fn de_preset<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Preset, D::Error> {
    let name = String::deserialize(d)?;
    name.parse().map_err(serde::de::Error::custom)
}

/// Default `--epochs`.
pub const DEFAULT_EPOCHS: usize = 24;
/// Default `--batch-size`.
pub const DEFAULT_BATCH: usize = 32;
/// Default `--lr`.
pub const DEFAULT_LR: f64 = 1e-3;
/// Default `--out`.
pub const DEFAULT_OUT: &str = "runs/pretrain-tiny";
/// Default `--aug-flip`.
pub const DEFAULT_AUG_FLIP: f64 = 0.5;
/// Default `--aug-pad`.
pub const DEFAULT_AUG_PAD: usize = 1;
/// Default `--aug-erase`.
pub const DEFAULT_AUG_ERASE: f64 = 0.0;
/// Default `--beta`.
pub const DEFAULT_BETA: f64 = 0.4;
/// Default `--gass-layers`.
pub const DEFAULT_GASS_LAYERS: usize = 8;
/// Default `--alpha-n`.
pub const DEFAULT_ALPHA_N: f64 = 0.2;
/// Default `--alpha-i`.
pub const DEFAULT_ALPHA_I: f64 = 0.3;
/// Default `--mask-lambda`.
pub const DEFAULT_MASK_LAMBDA: f64 = 20.0;
/// Loader threads (decoding 64×32 images is cheap next to a training step).
pub const LOADER_WORKERS: usize = 1;

/// The defaults of every flag (what `gadms pretrain` with no flags uses).
impl Default for PretrainArgs {
    fn default() -> Self {
        PretrainArgs {
            epochs: DEFAULT_EPOCHS,
            batch_size: DEFAULT_BATCH,
            lr: DEFAULT_LR,
            warmup_epochs: None,
            seed: 0,
            device: DeviceChoice::Cpu,
            out: PathBuf::from(DEFAULT_OUT),
            data: None,
            eval_data: Vec::new(),
            aug_flip: DEFAULT_AUG_FLIP,
            aug_pad: DEFAULT_AUG_PAD,
            aug_erase: DEFAULT_AUG_ERASE,
            save_every: 0,
            eval_every: 0,
            init: None,
            resume: None,
            schedule_per_step: false,
            pids: None,
            debug_nan_at_step: None,
            debug_step_delay_ms: 0,
            preset: Preset::Tiny,
            objective: Objective::Sdm,
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
        if self.epochs == 0 {
            bail!("--epochs must be at least 1");
        }
        if let Some(p) = &self.init {
            crate::init::resolve(p)?;
        }
        if self.batch_size < 2 {
            bail!("--batch-size must be at least 2 (SDM contrasts the pairs of a batch)");
        }
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

    /// `--pids`, or the objective's default (identity for sdm, caption for ga-dms).
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

/// The CLIP model of the default (`Tiny`) preset.
pub type Model<D = Dev> = Tiny<f32, D>;

/// One SDM training step's worth of state: the CLIP towers of preset model `M`
/// ([`TrainModel::Clip`]; default Tiny), Adam ([`crate::optim::Adam`], PyTorch semantics,
/// saveable for exact resume) and the gradient buffers.
pub struct Trainer<D: Device<f32> = Dev, M: TrainModel<D> = GaDmsTiny<f32, D>> {
    /// The model.
    pub model: M::Clip,
    opt: OptAdam,
    lr: f64,
    grads: Option<Gradients<f32, D>>,
}

/// Adam as in GA-DMS §6.1: β = (0.9, 0.999), ε = 1e-3, coupled L2 weight decay 4e-5.
pub fn adam_config() -> OptAdamConfig {
    OptAdamConfig {
        betas: [0.9, 0.999],
        eps: 1e-3,
        weight_decay: OptWeightDecay::L2(4e-5),
        clip_norm: None,
    }
}

impl<D: Device<f32>> Trainer<D> {
    /// A randomly initialised Tiny model (from `dev`'s RNG) with a fresh optimizer.
    pub fn new(dev: &D, lr: f64) -> Self {
        Self::build(dev, lr)
    }
}

impl<D: Device<f32>, M: TrainModel<D>> Trainer<D, M> {
    /// A randomly initialised model of `M`'s preset (from `dev`'s RNG) with a fresh optimizer.
    pub fn build(dev: &D, lr: f64) -> Self {
        let model = <M::Clip as dfdx::nn::BuildModule<D, f32>>::build(dev);
        let grads = Some(model.alloc_grads());
        Trainer {
            model,
            opt: OptAdam::new(adam_config()),
            lr,
            grads,
        }
    }

    /// Sets the learning rate of the next steps.
    pub fn set_lr(&mut self, lr: f64) {
        self.lr = lr;
    }

    /// The current learning rate.
    pub fn lr(&self) -> f64 {
        self.lr
    }

    /// The optimiser (step count, moments).
    pub fn optimizer(&self) -> &OptAdam {
        &self.opt
    }

    /// One step on a batch: `pixels` are `B × [3, H, W]` CLIP-normalised images (the
    /// preset's H×W: 64×32 for Tiny, 384×128 for ViT-B/16), `rows` the paired captions' ids,
    /// `pids` their identities. Returns the SDM loss before the update. A non-finite loss is
    /// returned without any update (the model and optimiser are unchanged); the caller stops
    /// the run.
    pub fn step(&mut self, pixels: Vec<f32>, rows: &[TokenIds], pids: &[usize]) -> Result<f32> {
        let b = rows.len();
        let v = M::Clip::SPEC.vision;
        let img_len = 3 * v.image_h * v.image_w;
        if pixels.len() != b * img_len || pids.len() != b || b == 0 {
            bail!(
                "step: batch sizes disagree ({} images of {}x{}, {b} captions, {} pids)",
                pixels.len() / img_len,
                v.image_h,
                v.image_w,
                pids.len()
            );
        }
        let mut grads = self
            .grads
            .take()
            .expect("gradients are returned after every step");
        self.model.zero_grads(&mut grads);
        let loss = M::sdm_loss(&self.model, pixels, rows, pids, grads);
        let value = loss.as_vec()[0];
        let grads = loss.backward();
        if value.is_finite() {
            self.opt
                .update(&mut self.model, &grads, self.lr as f32, &|_| Group::PLAIN);
        }
        self.grads = Some(grads);
        Ok(value)
    }
}

/// Text features (projected EOS tokens) [B, EMBED] computed on the first `max EOS + 1`
/// positions only.
///
/// Exactly equal to `eos_token(text.forward(ids), eos)` (the full 77-token forward) because
/// the attention is causal and LayerNorm/projection act per token: nothing after a row's EOS
/// can reach it. Captions here are about 20–35 tokens, so this runs the text tower on a
/// third of the context (the training step's largest cost).
pub fn text_features_trimmed<
    const VOCAB: usize,
    const CTX: usize,
    const W: usize,
    const H: usize,
    const HD: usize,
    const F: usize,
    const L: usize,
    const EMBED: usize,
    E: gadms_nn::Float,
    D: Device<E>,
    T: Tape<E, D>,
>(
    text: &gadms_nn::TextTower<VOCAB, CTX, W, H, HD, F, L, EMBED, E, D>,
    dev: &D,
    rows: &[[u32; CTX]],
    tape: T,
) -> Tensor<(usize, Const<EMBED>), E, D, T> {
    let b = rows.len();
    let eos: Vec<usize> = rows.iter().map(|r| gadms_nn::eos_index(r)).collect();
    let len = eos.iter().copied().max().unwrap_or(0) + 1;
    let flat: Vec<usize> = rows
        .iter()
        .flat_map(|r| r[..len].iter().map(|&t| t as usize))
        .collect();
    let ids = dev.tensor_from_vec(flat, (b, len));
    let x = text.token_embedding.forward(ids.put_tape(tape));
    let shape = *x.shape();
    // `gather` (not `slice`): dfdx 0.13's CPU slice backward overwrites instead of adding.
    let rows_idx = dev.tensor_from_vec((0..len).collect::<Vec<usize>>(), (len,));
    let pos = text
        .positional_embedding
        .retaped::<T>()
        .gather(rows_idx)
        .broadcast_like::<_, Axis<0>>(&shape);
    let x = x + pos;
    let mask: Tensor<(usize, usize), E, D> = dev.upper_tri_like(&(len, len), E::neg_infinity(), 1);
    let x = text.transformer.forward(x, Some(&mask), None);
    let pooled = x.select(dev.tensor_from_vec(eos, (b,)));
    text.ln_final
        .forward2(pooled)
        .matmul(text.text_projection.retaped::<T>())
}

/// One JSON line of metrics.jsonl.
#[derive(Serialize)]
struct StepLine {
    step: usize,
    epoch: usize,
    loss: f32,
    loss_sdm: f32,
    lr: f64,
    pairs_per_s: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    loss_mtp: Option<f32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    masked_tokens: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    grad_norm: Option<f32>,
}

/// What one training step of either objective reports.
struct StepOut {
    loss: f32,
    loss_sdm: f32,
    loss_mtp: Option<f32>,
    masked_tokens: Option<usize>,
    grad_norm: Option<f32>,
}

/// The full GA-DMS model of the default (`Tiny`) preset.
pub type GaDmsModel<D = Dev> = GaDmsTiny<f32, D>;

/// The training state of a run of preset model `M`: the SDM [`Trainer`] (CLIP towers only),
/// or the GA-DMS model (CLIP + decoder), its optimiser and score table.
enum Runner<D: Device<f32>, M: TrainModel<D>> {
    Sdm(Box<Trainer<D, M>>),
    GaDms {
        model: Box<M>,
        opt: OptAdam,
        scores: Arc<ScoreTable>,
        cfg: StepConfig,
        lr: f64,
    },
}

impl<D: Device<f32>, M: TrainModel<D>> Runner<D, M> {
    fn new(a: &PretrainArgs, dev: &D, scores: Option<Arc<ScoreTable>>) -> Result<Self> {
        Ok(match a.objective {
            Objective::Sdm => Runner::Sdm(Box::new(Trainer::build(dev, a.lr))),
            Objective::GaDms => {
                let cfg = a.step_config();
                cfg.validate().map_err(anyhow::Error::msg)?;
                let model = <M as dfdx::nn::BuildModule<D, f32>>::build(dev);
                Runner::GaDms {
                    model: Box::new(model),
                    opt: OptAdam::new(adam_config()),
                    scores: scores.context("ga-dms needs a score table")?,
                    cfg,
                    lr: a.lr,
                }
            }
        })
    }

    /// The CLIP towers (what is evaluated and saved as last.safetensors).
    fn clip(&self) -> &M::Clip {
        match self {
            Runner::Sdm(t) => &t.model,
            Runner::GaDms { model, .. } => model.clip(),
        }
    }

    /// `--init`: CLIP weights (and, for GA-DMS, the decoder when the file has one).
    fn init(&mut self, path: &Path) -> Result<String> {
        let spec = M::Clip::SPEC;
        let r = match self {
            Runner::Sdm(t) => {
                crate::init::load_init::<D, M::Clip, M::Mtp>(&mut t.model, &spec, None, path)?
            }
            Runner::GaDms { model, .. } => {
                let (clip, mtp) = model.parts_mut();
                crate::init::load_init(clip, &spec, Some(mtp), path)?
            }
        };
        Ok(r.summary)
    }

    fn set_lr(&mut self, new: f64) {
        match self {
            Runner::Sdm(t) => t.set_lr(new),
            Runner::GaDms { lr, .. } => *lr = new,
        }
    }

    /// One step. A non-finite loss changes nothing and is reported in `StepOut::loss`.
    fn step(&mut self, batch: gadms_data::loader::Batch) -> Result<StepOut> {
        match self {
            Runner::Sdm(t) => {
                let pids: Vec<usize> = batch.pids.iter().map(|&p| p as usize).collect();
                let loss = t.step(batch.images, &batch.ids_clean, &pids)?;
                Ok(StepOut {
                    loss,
                    loss_sdm: loss,
                    loss_mtp: None,
                    masked_tokens: None,
                    grad_norm: None,
                })
            }
            Runner::GaDms {
                model,
                opt,
                scores,
                cfg,
                lr,
            } => {
                let r = train_step(model.as_mut(), opt, &batch, scores, cfg, *lr as f32);
                debug_assert_eq!(r.applied, r.loss.is_finite());
                Ok(StepOut {
                    loss: r.loss,
                    loss_sdm: r.loss_sdm,
                    loss_mtp: Some(r.loss_mtp),
                    masked_tokens: Some(r.masked_tokens),
                    grad_norm: Some(r.grad_norm),
                })
            }
        }
    }

    /// Saves `dir/last.safetensors` (CLIP) and, for GA-DMS, `dir/gadms_model.safetensors` and
    /// `dir/scores.f32`. Returns the paths written.
    fn save(&self, dir: &Path) -> Result<Vec<PathBuf>> {
        let mut out = vec![save(self.clip(), &dir.join(LAST_FILE))?];
        if let Runner::GaDms { model, scores, .. } = self {
            let path = dir.join(GADMS_MODEL_FILE);
            save_gadms(model.as_ref(), &path)?;
            out.push(path);
            let path = dir.join(gadms_data::scores::SCORE_FILE);
            scores
                .save_copy(&path)
                .map_err(|e| anyhow::anyhow!("saving {}: {e}", path.display()))?;
            out.push(path);
        }
        Ok(out)
    }

    /// Writes the resumable state into a fresh checkpoint directory ([`checkpoint`]).
    fn save_checkpoint(&self, dir: &Path) -> Result<()> {
        let model_path = dir.join(checkpoint::MODEL_FILE);
        let adam_path = dir.join(checkpoint::ADAM_FILE);
        match self {
            Runner::Sdm(t) => {
                save_gadms(&t.model, &model_path)?;
                t.opt.save(&adam_path)?;
            }
            Runner::GaDms {
                model, opt, scores, ..
            } => {
                save_gadms(model.as_ref(), &model_path)?;
                opt.save(&adam_path)?;
                let p = dir.join(checkpoint::SCORES_FILE);
                scores
                    .save_copy(&p)
                    .map_err(|e| anyhow::anyhow!("saving {}: {e}", p.display()))?;
            }
        }
        Ok(())
    }

    /// Restores what [`Runner::save_checkpoint`] wrote.
    fn load_checkpoint(&mut self, dir: &Path) -> Result<()> {
        let model_path = dir.join(checkpoint::MODEL_FILE);
        let adam_path = dir.join(checkpoint::ADAM_FILE);
        match self {
            Runner::Sdm(t) => {
                load_gadms(&mut t.model, &model_path)?;
                t.opt = OptAdam::load(&adam_path)?;
            }
            Runner::GaDms {
                model, opt, scores, ..
            } => {
                load_gadms(model.as_mut(), &model_path)?;
                *opt = OptAdam::load(&adam_path)?;
                let p = dir.join(checkpoint::SCORES_FILE);
                let saved = ScoreTable::open(&p, Some(scores.rows()))
                    .map_err(|e| anyhow::anyhow!("{}: {e}", p.display()))?;
                scores
                    .copy_from(&saved)
                    .map_err(|e| anyhow::anyhow!("{}: {e}", p.display()))?;
            }
        }
        Ok(())
    }
}

/// The full GA-DMS model of a `--objective ga-dms` run (CLIP + decoder, `save_gadms`).
pub const GADMS_MODEL_FILE: &str = "gadms_model.safetensors";
/// The CLIP weights at the end of the run (and at every checkpoint), open_clip layout.
pub const LAST_FILE: &str = "last.safetensors";
/// The CLIP weights of the epoch with the best R1 on the first evaluation set.
pub const BEST_FILE: &str = "best.safetensors";

/// The name of a preset's MTP decoder type (for config.json).
pub(crate) fn decoder_name(preset: Preset) -> &'static str {
    match preset {
        Preset::Tiny => "MtpTiny",
        Preset::VitB16 => "MtpViTB16",
    }
}

/// One evaluation line of metrics.jsonl.
#[derive(Serialize)]
pub(crate) struct EvalLine<'a> {
    pub step: usize,
    pub epoch: usize,
    /// The split of the packed set (`test`, `train`, …) or `train-subset`.
    pub split: &'a str,
    /// The directory of the packed set.
    pub data: &'a str,
    #[serde(flatten)]
    pub m: Metrics,
}

/// Writes one JSON value per line, flushing each (so a killed run keeps its metrics).
pub(crate) struct Jsonl(BufWriter<File>);

impl Jsonl {
    /// Opens `path`: a new file, or on resume the old one cut back to the lines of steps up to
    /// `keep_upto` (lines written after the checkpoint by the killed process are dropped).
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
        let f = File::create(path).with_context(|| format!("cannot create {}", path.display()))?;
        let mut j = Jsonl(BufWriter::new(f));
        for v in &kept {
            j.write(v)?;
        }
        Ok((j, kept))
    }

    pub fn write<T: Serialize>(&mut self, v: &T) -> Result<()> {
        serde_json::to_writer(&mut self.0, v)?;
        self.0.write_all(b"\n")?;
        self.0.flush()?;
        Ok(())
    }
}

/// An evaluation set of a run.
pub(crate) struct NamedEval {
    /// Its directory (as given).
    pub dir: String,
    /// The manifest's split (`test`, `val`, `train`).
    pub split: String,
    /// The dataset name of the manifest.
    pub dataset: String,
    pub set: EvalSet,
}

impl NamedEval {
    /// Opens a packed set for evaluation by a model of sizes `spec` (its image size must be
    /// the preset's, [`data::open_packed_for`]).
    pub fn open(dir: &Path, flag: &str, spec: &ClipSpec) -> Result<NamedEval> {
        let ds = data::open_packed_for(dir, flag, spec)?;
        let set = EvalSet::from_dataset(&ds, None)?;
        Ok(NamedEval {
            dir: dir.display().to_string(),
            split: ds.manifest.config.split.clone(),
            dataset: ds.manifest.config.dataset.clone(),
            set,
        })
    }

    /// A label for tables: `test` or `test (DIR)` when there are several sets.
    pub fn label(&self, several: bool) -> String {
        if several {
            format!("{} ({})", self.split, self.dir)
        } else {
            self.split.clone()
        }
    }

    /// The line saying, plainly, when model selection uses the test split.
    pub fn selection_note(&self) -> Option<String> {
        (self.split == "test").then(|| {
            format!(
                "note: the evaluation set {} is the TEST split of {}: evaluating on it during \
                 training and keeping best.safetensors by its R1 selects the model on test \
                 data, as IRRA and GA-DMS do (shared/ga-dms-method.md §6.1-6.2); such numbers \
                 are optimistic",
                self.dir, self.dataset
            )
        })
    }
}

/// The data of a run: the packed training split and the evaluation splits.
struct RunData {
    train: Arc<gadms_data::manifest::Dataset>,
    evals: Vec<NamedEval>,
    probe: EvalSet,
    source: serde_json::Value,
}

/// Opens (and, without `--data`, first unpacks and packs) the run's data for a model of sizes
/// `spec`.
fn load_data(a: &PretrainArgs, spec: &ClipSpec) -> Result<RunData> {
    let t = Instant::now();
    let (train_dir, eval_dirs, source) = match &a.data {
        None => {
            let root = a.out.join("data");
            let d = data::prepare_default(&root)?;
            println!(
                "data: the embedded synthetic person set (fixtures/synth-pedes, CUHK-PEDES form) \
                 unpacked into {} ({} files written) and packed into {} and {} ({} of 2 shards \
                 reused) in {:.1} s",
                root.join("synth-pedes").display(),
                d.unpacked,
                d.train.display(),
                d.test.display(),
                d.reused_shards,
                t.elapsed().as_secs_f64()
            );
            let eval = if a.eval_data.is_empty() {
                vec![d.test.clone()]
            } else {
                a.eval_data.clone()
            };
            (d.train, eval, "embedded fixtures/synth-pedes")
        }
        Some(dir) => (dir.clone(), a.eval_data.clone(), "--data"),
    };
    let train = Arc::new(data::open_packed_for(&train_dir, "--data", spec)?);
    let evals = eval_dirs
        .iter()
        .map(|d| NamedEval::open(d, "--eval-data", spec))
        .collect::<Result<Vec<_>>>()?;
    // The probe of the fit: the first identities of the training set, as many as the test has.
    let probe_ids = evals.first().map_or(100, |s| s.set.n_ids());
    let probe = EvalSet::from_dataset(&train, Some(probe_ids))?;
    let m = &train.manifest;
    let mut source = serde_json::json!({
        "source": source,
        "train": {
            "dir": train_dir, "dataset": m.config.dataset, "split": m.config.split,
            "ids": m.identities, "images": m.images, "captions": m.samples,
        },
        "image_hw": [spec.vision.image_h, spec.vision.image_w],
    });
    if let Some(e) = evals.first() {
        source["eval"] = serde_json::json!({
            "dir": e.dir, "split": e.split, "ids": e.set.n_ids(), "images": e.set.n_images(),
            "captions": e.set.n_captions(),
        });
    }
    source["evals"] = serde_json::json!(
        evals
            .iter()
            .map(|e| serde_json::json!({"dir": e.dir, "split": e.split, "dataset": e.dataset}))
            .collect::<Vec<_>>()
    );
    Ok(RunData {
        train,
        evals,
        probe,
        source,
    })
}

/// The arguments of a resumable run command (`pretrain`, `finetune`).
pub(crate) trait RunArgs: Serialize + serde::de::DeserializeOwned + Default {
    /// `--resume RUN_DIR`, if given.
    fn resume_dir(&self) -> Option<&Path>;
    /// `--preset`.
    fn preset(&self) -> Preset;
    /// Copies what belongs to this invocation rather than to the run (the run directory, the
    /// device, the hidden test hooks) from `given` into the run's arguments `self`.
    fn carry_over(&mut self, given: &Self, dir: &Path);
}

/// The arguments to run with: `given`, or with `--resume` the run's own (from its latest
/// checkpoint, [`resume_args`]) with this invocation's device and test hooks, and the
/// checkpoint directory and state to continue from.
pub(crate) type Resolved<A> = (A, Option<(PathBuf, checkpoint::TrainState)>);

pub(crate) fn resolve_args<A: RunArgs>(given: A, command: &str) -> Result<Resolved<A>> {
    let Some(dir) = given.resume_dir().map(Path::to_path_buf) else {
        return Ok((given, None));
    };
    let (mut a, ckdir, state) = resume_args(&given, &dir, command, &["device", "preset"])?;
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
    a.carry_over(&given, &dir);
    Ok((a, Some((ckdir, state))))
}

impl RunArgs for PretrainArgs {
    fn resume_dir(&self) -> Option<&Path> {
        self.resume.as_deref()
    }
    fn preset(&self) -> Preset {
        self.preset
    }
    fn carry_over(&mut self, given: &Self, dir: &Path) {
        self.device = given.device;
        self.out = dir.to_path_buf();
        self.resume = Some(dir.to_path_buf());
        self.debug_nan_at_step = given.debug_nan_at_step;
        self.debug_step_delay_ms = given.debug_step_delay_ms;
    }
}

/// `--resume RUN_DIR`: the run's own arguments (from its checkpoint) and the checkpoint. Any
/// other flag given with `--resume` is an error (the run's settings are fixed), except the
/// hidden test hooks, which are kept.
pub(crate) fn resume_args<A: Serialize + serde::de::DeserializeOwned + Default>(
    given: &A,
    run_dir: &Path,
    command: &str,
    ignore: &[&str],
) -> Result<(A, PathBuf, checkpoint::TrainState)> {
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
    let (dir, state) = checkpoint::latest(run_dir)?;
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
            dir.join(checkpoint::STATE_FILE).display()
        )
    })?;
    Ok((args, dir, state))
}

/// Runs the command: resolves `--resume` (which fixes the preset), checks the flags, then
/// dispatches once on (`--preset`, `--device`) to [`run_on`].
pub fn run(given: PretrainArgs) -> Result<()> {
    let (mut a, resume) = resolve_args(given, "pretrain")?;
    let warmup = a.validate()?;
    if resume.is_none() && a.out == Path::new(DEFAULT_OUT) {
        a.out = PathBuf::from(format!("runs/pretrain-{}", a.preset.spec().name));
    }
    crate::dispatch!(a.device, run_preset(a, resume, warmup))
}

/// [`run`] on the device type `D`: picks the preset's model type.
fn run_preset<D: BuildDevice>(
    a: PretrainArgs,
    resume: Option<(PathBuf, checkpoint::TrainState)>,
    warmup: usize,
) -> Result<()> {
    crate::with_train_model!(a.preset, D, run_on(a, resume, warmup))
}

/// [`run`] on the device type `D` (`--device`) with the preset's model type `M` (`--preset`:
/// [`GaDmsTiny`] or [`crate::gadms_step::GaDmsViTB16`]).
fn run_on<D: BuildDevice, M: TrainModel<D>>(
    a: PretrainArgs,
    resume: Option<(PathBuf, checkpoint::TrainState)>,
    warmup: usize,
) -> Result<()> {
    let t0 = Instant::now();
    let spec = M::Clip::SPEC;
    let pid_mode = a.pid_mode();
    match a.objective {
        Objective::Sdm => println!(
            "gadms pretrain --objective sdm: trains the two CLIP towers of the '{}' preset with \
             the SDM loss only (no masking, no MTP decoder; pids: {pid_mode:?}).",
            spec.name
        ),
        Objective::GaDms => println!(
            "gadms pretrain --objective ga-dms: trains the '{}' preset (CLIP + MTP decoder) with \
             GASS scores, dual noise/informative caption masking and loss SDM + {}*MTP (GASS: \
             {} layers, {:?} norm; masking alpha_n {} alpha_i {} lambda {}; pids: {pid_mode:?}).",
            spec.name, a.beta, a.gass_layers, a.gass_norm, a.alpha_n, a.alpha_i, a.mask_lambda
        ),
    }
    if let Some(n) = a.defaults_note() {
        println!("{n}");
    }
    if let Some((dir, st)) = &resume {
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

    // Run directory and data.
    std::fs::create_dir_all(&a.out)
        .with_context(|| format!("cannot create run directory {}", a.out.display()))?;
    let RunData {
        train,
        evals,
        probe,
        source,
    } = load_data(&a, &spec)?;
    let m = &train.manifest;
    println!(
        "train: {} ids / {} images / {} captions ({}){}",
        m.identities,
        m.images,
        m.samples,
        train.dir.display(),
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
            train.dir.display(),
            m.config.split,
            m.config.dataset
        );
    }
    for e in &evals {
        if let Some(n) = e.selection_note() {
            println!("{n}");
        }
    }
    // GA-DMS: one score row per training caption (row = sample index), 0.85 at the start.
    let scores =
        (a.objective == Objective::GaDms).then(|| Arc::new(ScoreTable::in_memory(train.len())));
    let masking = match &scores {
        Some(s) => Masking::Dual {
            scores: s.clone(),
            config: a.masking_config(),
        },
        None => Masking::None,
    };
    let mut loader = Loader::new(
        train.clone(),
        LoaderConfig {
            batch_size: a.batch_size,
            seed: a.seed,
            workers: LOADER_WORKERS,
            prefetch: 4,
            shuffle: true,
            shuffle_buffer: 10_000,
            train: true,
            augment: a.augment(),
            masking,
            drop_last: true,
            image_size: None,
            debug_panic_at_step: None,
        },
    )
    .context("building the loader")?;
    let steps_per_epoch = loader.batches_per_epoch() as usize;
    if steps_per_epoch == 0 {
        bail!(
            "--batch-size {} is larger than the {} training captions: no full batch",
            a.batch_size,
            train.len()
        );
    }

    let mut config = serde_json::json!({
        "args": &a,
        "preset": spec.name,
        "image_hw": [spec.vision.image_h, spec.vision.image_w],
        "warmup_epochs_used": warmup,
        "steps_per_epoch": steps_per_epoch,
        "objective": a.objective,
        "loss": match a.objective {
            Objective::Sdm => "sdm",
            Objective::GaDms => "sdm(noise-masked) + beta * mtp(informative-masked)",
        },
        "logit_scale": SDM_LOGIT_SCALE,
        "pids": pid_mode,
        "optimizer": { "name": "adam", "betas": [0.9, 0.999], "eps": 1e-3, "weight_decay_l2": 4e-5 },
        "schedule": if a.schedule_per_step {
            "per-step linear warm-up from 0.1x, then cosine to 0"
        } else {
            "per-epoch linear warm-up from 0.1x, then cosine to 0"
        },
        "augment": a.augment(),
        "loader": { "workers": LOADER_WORKERS, "shuffle_buffer": 10_000, "drop_last": true },
        "model": gadms_ckpt::clip_io::open_clip_model_cfg(&spec),
        "data": source,
    });
    if a.objective == Objective::GaDms {
        let sc = a.step_config();
        config["ga_dms"] = serde_json::json!({
            "beta": sc.beta,
            "gass": { "layers": sc.gass.layers, "scales": sc.gass.scales, "norm": a.gass_norm },
            "masking": a.masking_config(),
            "score_rows": train.len(),
            "optimizer": adam_config(),
            "decoder": decoder_name(a.preset),
        });
    }
    write_file(
        &a.out.join("config.json"),
        &serde_json::to_vec_pretty(&config)?,
    )?;
    let metrics_path = a.out.join("metrics.jsonl");
    let (mut jsonl, old_lines) = Jsonl::open(&metrics_path, resume.as_ref().map(|(_, s)| s.step))?;

    // Model: random init, then --init, then (resume) the checkpoint.
    let dev = D::create(a.device, a.seed)?;
    let mut tr = Runner::<D, M>::new(&a, &dev, scores)?;
    if let Some(p) = &a.init
        && resume.is_none()
    {
        println!("{}", tr.init(p)?);
    }
    let (mut step, mut best, mut evaluated_epoch) = (0usize, None::<(f64, usize)>, 0usize);
    if let Some((dir, st)) = &resume {
        tr.load_checkpoint(dir)?;
        loader
            .resume(st.loader)
            .with_context(|| format!("resuming the loader from {}", dir.display()))?;
        step = st.step as usize;
        best = st.best_r1;
        evaluated_epoch = st.evaluated_epoch;
    }
    let evaluate =
        |model: &M::Clip, set: &EvalSet| -> Result<Metrics> { eval::evaluate(model, set, 128) };
    let several = evals.len() > 1;

    // Before training (a resumed run reads these lines back from metrics.jsonl).
    let mut before: Vec<Option<Metrics>> = vec![None; evals.len()];
    if resume.is_none() {
        for (i, e) in evals.iter().enumerate() {
            let m = evaluate(tr.clip(), &e.set)?;
            jsonl.write(&EvalLine {
                step: 0,
                epoch: 0,
                split: &e.split,
                data: &e.dir,
                m,
            })?;
            before[i] = Some(m);
        }
        if let Some(m) = before.first().copied().flatten() {
            println!(
                "zero-shot text->image retrieval before training ({}):",
                if a.init.is_some() {
                    "--init weights"
                } else {
                    "random init"
                }
            );
            print_table(&[(evals[0].label(several).as_str(), &m)]);
        }
    } else {
        for (i, e) in evals.iter().enumerate() {
            before[i] = old_lines
                .iter()
                .find(|l| l["step"] == 0 && l["data"] == e.dir.as_str() && l.get("r1").is_some())
                .and_then(|l| metrics_from_json(l));
        }
    }

    // Training.
    let total_steps = steps_per_epoch * a.epochs;
    let pb = ProgressBar::new(total_steps as u64);
    pb.set_style(
        ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {bar:30.cyan/blue} {pos}/{len} steps {msg}",
        )
        .expect("valid template")
        .progress_chars("=> "),
    );
    pb.set_position(step as u64);
    let say = |s: String| {
        if pb.is_hidden() {
            println!("{s}");
        } else {
            pb.println(s);
        }
    };
    let mut pairs_done = 0usize;
    let mut last_ckpt: Option<PathBuf> = resume.as_ref().map(|(d, _)| d.clone());
    let train_start = Instant::now();
    let start = loader.state();
    let (mut data_wait, mut compute) = (0.0f64, 0.0f64);
    for epoch in (start.epoch as usize + 1)..=a.epochs {
        let first = if epoch == start.epoch as usize + 1 {
            start.next_batch as usize
        } else {
            0
        };
        let (mut sum, mut n, mut pairs) = (0.0f64, 0usize, 0usize);
        let epoch_start = Instant::now();
        for _ in first..steps_per_epoch {
            let lr = a.lr
                * schedule::lr_factor_at(
                    step,
                    steps_per_epoch,
                    a.epochs,
                    warmup,
                    a.schedule_per_step,
                );
            tr.set_lr(lr);
            let t = Instant::now();
            let mut batch = loader.next_batch().context("loading a batch")?;
            let waited = t.elapsed().as_secs_f64();
            if a.debug_nan_at_step == Some(step as u64 + 1) {
                batch.images.iter_mut().for_each(|x| *x = f32::NAN);
            }
            if pid_mode == PidMode::Caption {
                batch.pids = batch.sample_index.clone();
            }
            let b = batch.len();
            let tc = Instant::now();
            let out = tr.step(batch)?;
            let loss = out.loss;
            if !loss.is_finite() {
                pb.finish_and_clear();
                let good = match &last_ckpt {
                    Some(d) => format!(
                        "the last good checkpoint {} is intact (to continue, start a new run with \
                         a smaller --lr and --init {}; --resume would reach this step again)",
                        d.display(),
                        d.join(checkpoint::MODEL_FILE).display()
                    ),
                    None => "no checkpoint was written yet (--save-every N writes one every N \
                             steps)"
                        .to_string(),
                };
                bail!(
                    "step {} (epoch {epoch}): the loss became {loss} (SDM {}{}); the run stopped \
                     without applying this step; {good}; try a smaller --lr",
                    step + 1,
                    out.loss_sdm,
                    out.loss_mtp
                        .map(|m| format!(", MTP {m}"))
                        .unwrap_or_default()
                );
            }
            step += 1;
            pairs += b;
            let secs = t.elapsed().as_secs_f64();
            data_wait += waited;
            compute += tc.elapsed().as_secs_f64();
            let rate = b as f64 / secs;
            sum += loss as f64;
            n += 1;
            jsonl.write(&StepLine {
                step,
                epoch,
                loss,
                loss_sdm: out.loss_sdm,
                lr,
                pairs_per_s: rate,
                loss_mtp: out.loss_mtp,
                masked_tokens: out.masked_tokens,
                grad_norm: out.grad_norm,
            })?;
            pb.set_position(step as u64);
            pb.set_message(format!(
                "epoch {epoch}/{} loss {loss:.4}{} lr {lr:.2e} {rate:.0} pairs/s data {:.0}% of time",
                a.epochs,
                out.loss_mtp
                    .map(|m| format!(" (sdm {:.3} mtp {m:.3})", out.loss_sdm))
                    .unwrap_or_default(),
                100.0 * data_wait / (data_wait + compute).max(1e-9)
            ));
            if a.debug_step_delay_ms > 0 {
                std::thread::sleep(std::time::Duration::from_millis(a.debug_step_delay_ms));
            }
            let epoch_end = loader.state().next_batch == 0;
            if epoch_end {
                // End of the epoch: evaluation (every --eval-every epochs and after the last)
                // and best.safetensors, before any checkpoint of this step.
                pairs_done += pairs;
                let mean = sum / n.max(1) as f64;
                let secs = epoch_start.elapsed().as_secs_f64();
                let mut line = format!(
                    "epoch {epoch:>3}/{}  mean loss {mean:.4}  lr {lr:.2e}  {:.0} pairs/s",
                    a.epochs,
                    pairs as f64 / secs
                );
                let due = (a.eval_every > 0 && epoch % a.eval_every == 0) || epoch == a.epochs;
                if due {
                    for (i, e) in evals.iter().enumerate() {
                        let m = evaluate(tr.clip(), &e.set)?;
                        jsonl.write(&EvalLine {
                            step,
                            epoch,
                            split: &e.split,
                            data: &e.dir,
                            m,
                        })?;
                        line += &format!("  {} R1 {:.2} mAP {:.2}", e.label(several), m.r1, m.map);
                        if i == 0 && best.is_none_or(|(r, _)| m.r1 > r) {
                            best = Some((m.r1, epoch));
                            save(tr.clip(), &a.out.join(BEST_FILE))?;
                            line += " (best)";
                        }
                    }
                    evaluated_epoch = epoch;
                }
                say(line);
            }
            let last = epoch == a.epochs && epoch_end;
            if a.save_every > 0 && step % a.save_every == 0 && !last {
                let st = checkpoint::TrainState {
                    command: "pretrain".into(),
                    step: step as u64,
                    epoch,
                    loader: loader.state(),
                    seed: a.seed,
                    rng: checkpoint::RNG_NOTE.into(),
                    best_r1: best,
                    evaluated_epoch,
                    args: serde_json::to_value(&a)?,
                };
                let d = checkpoint::save(&a.out, &st, |d| tr.save_checkpoint(d))?;
                save(tr.clip(), &a.out.join(LAST_FILE))?;
                last_ckpt = Some(d);
            }
        }
    }
    pb.finish_and_clear();
    let train_secs = train_start.elapsed().as_secs_f64();

    // After training: the last epoch's evaluation, and the fit on the training identities.
    // (Read back from metrics.jsonl: a resumed run may have evaluated before its restart.)
    let after: Vec<Option<Metrics>> = evals
        .iter()
        .map(|e| last_eval(&metrics_path, &e.dir, a.epochs))
        .collect();
    let fit = evaluate(tr.clip(), &probe)?;
    jsonl.write(&EvalLine {
        step,
        epoch: a.epochs,
        split: "train-subset",
        data: &train.dir.display().to_string(),
        m: fit,
    })?;
    // The final state, as a checkpoint too (so --init RUN_DIR and --resume find it).
    let st = checkpoint::TrainState {
        command: "pretrain".into(),
        step: step as u64,
        epoch: a.epochs,
        loader: loader.state(),
        seed: a.seed,
        rng: checkpoint::RNG_NOTE.into(),
        best_r1: best,
        evaluated_epoch,
        args: serde_json::to_value(&a)?,
    };
    if a.save_every > 0 {
        checkpoint::save(&a.out, &st, |d| tr.save_checkpoint(d))?;
    }
    let ckpts = tr.save(&a.out)?;

    println!(
        "trained {step} steps ({} epochs) in {train_secs:.1} s ({:.0} pairs/s; data wait {:.1} s, \
         compute {:.1} s)",
        a.epochs,
        pairs_done as f64 / train_secs,
        data_wait,
        compute
    );
    println!(
        "zero-shot text->image retrieval (queries = captions, gallery = images, relevant = same identity):"
    );
    let mut rows: Vec<(String, Metrics)> = Vec::new();
    for (i, e) in evals.iter().enumerate() {
        if let Some(b) = before[i] {
            rows.push((format!("{}, before", e.label(several)), b));
        }
        if let Some(af) = after[i] {
            rows.push((format!("{}, after", e.label(several)), af));
        }
    }
    rows.push(("train subset, after".into(), fit));
    let rows_ref: Vec<(&str, &Metrics)> = rows.iter().map(|(n, m)| (n.as_str(), m)).collect();
    print_table(&rows_ref);
    if let (Some(Some(b)), Some(Some(af))) = (before.first(), after.first()) {
        println!(
            "{} chance R1 = {:.2} (random ranking); R1 {:.2} -> {:.2}",
            evals[0].split, af.chance_r1, b.r1, af.r1
        );
    }
    if let Some((r, e)) = best {
        println!(
            "best R1 {r:.2} on {} at epoch {e}: {}",
            evals[0].dir,
            a.out.join(BEST_FILE).display()
        );
    }
    let ckpts: Vec<String> = ckpts.iter().map(|p| p.display().to_string()).collect();
    println!(
        "wrote {} , {} , {}  (total {:.1} s)",
        a.out.join("config.json").display(),
        metrics_path.display(),
        ckpts.join(" , "),
        t0.elapsed().as_secs_f64()
    );
    Ok(())
}

/// The last evaluation of `data` at `epoch` in metrics.jsonl.
pub(crate) fn last_eval(path: &Path, data: &str, epoch: usize) -> Option<Metrics> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["data"] == data && v["epoch"] == epoch && v.get("r1").is_some())
        .last()
        .and_then(|v| metrics_from_json(&v))
}

/// A [`Metrics`] back from its JSON line.
pub(crate) fn metrics_from_json(v: &serde_json::Value) -> Option<Metrics> {
    let f = |k: &str| v.get(k).and_then(|x| x.as_f64());
    let u = |k: &str| v.get(k).and_then(|x| x.as_u64()).map(|x| x as usize);
    Some(Metrics {
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

pub(crate) fn print_table(rows: &[(&str, &Metrics)]) {
    println!(
        "  {:<22} {:>7} {:>7} {:>7} {:>7} {:>7} {:>9} {:>8}",
        "split", "R1", "R5", "R10", "mAP", "mINP", "chanceR1", "Q x G"
    );
    for (name, m) in rows {
        println!(
            "  {:<22} {:>7.2} {:>7.2} {:>7.2} {:>7.2} {:>7.2} {:>9.2} {:>8}",
            name,
            m.r1,
            m.r5,
            m.r10,
            m.map,
            m.minp,
            m.chance_r1,
            format!("{}x{}", m.queries, m.gallery)
        );
    }
}

pub(crate) fn write_file(path: &Path, bytes: &[u8]) -> Result<()> {
    std::fs::write(path, bytes).with_context(|| format!("cannot write {}", path.display()))
}

/// Saves the CLIP towers at `path` (open_clip layout, gadms metadata; atomic).
pub(crate) fn save<D: Device<f32>, C: TensorCollection<f32, D> + HasClipSpec>(
    model: &C,
    path: &Path,
) -> Result<PathBuf> {
    gadms_ckpt::save_clip(model, &C::SPEC, path)
        .with_context(|| format!("saving {}", path.display()))?;
    Ok(path.to_path_buf())
}
