//! `gadms pretrain`: trains the `Tiny` model from random init and evaluates zero-shot
//! text→image retrieval ([`eval`], CLIP towers only) on held-out identities before and after
//! training.
//!
//! **Objectives** (`--objective`):
//! * `sdm` (default): the two CLIP towers with the SDM loss only (shared/ga-dms-method.md
//!   §5.1) on the clean captions, with dfdx's Adam. No caption masking, no GASS, no decoder.
//! * `ga-dms`: the full GA-DMS step ([`crate::gadms_step::train_step`]): CLIP plus the MTP
//!   decoder ([`crate::gadms_step::GaDmsTiny`]), GASS scores of each batch's clean captions
//!   written into a per-caption [`ScoreTable`] (one row per training caption, 0.85 at the
//!   start), the loader in dual-masking mode (noise-masked captions → SDM, informative-masked
//!   captions → MTP, masks of epoch `e + 1` drawn from the scores of epoch `e`), loss
//!   `L_sdm + β·L_mtp`, and [`crate::optim::Adam`] with the same hyper-parameters. Flags
//!   `--beta`, `--gass-norm`, `--gass-layers`, `--alpha-n`, `--alpha-i`, `--mask-lambda`. It
//!   costs about 0.7–1 s per step at batch 32 on 2 cores (GASS re-runs the text tower with a
//!   backward, and the text tower runs three times), about 13× an SDM step (measured: 2 epochs,
//!   86 steps, in 102 s against 8 s for `sdm`).
//!
//! **Data.** By default the run uses the synthetic person set `fixtures/synth-pedes`, written by
//! [`synth`] in CUHK-PEDES form. It is embedded in the binary by `build.rs`, unpacked into
//! `RUN_DIR/data/synth-pedes` and packed with `gadms_data::pack` into `RUN_DIR/data/{train,test}`
//! ([`data`]; a rerun reuses the shards). `--data DIR` trains on any `gadms pack` output
//! stored at 64×32, and `--eval-data DIR` evaluates on one. Batches come from
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
//!   80–100 s on 2 cores. Test R1 goes from 1 to 56 at seed 0 and to 48 at seed 1 (chance 1).
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
pub mod eval;
pub mod schedule;
pub mod synth;

use crate::gadms_step::{GaDmsTiny, StepConfig, save_gadms, train_step};
use crate::preset::{Dev, Preset};
use anyhow::{Context, Result, bail};
use argh::FromArgs;
use dfdx::nn::ZeroGrads;
use dfdx::optim::{Adam, AdamConfig, Optimizer, WeightDecay};
use dfdx::prelude::*;
use eval::{EvalSet, Metrics};
use gadms_data::TokenIds;
use gadms_data::augment::AugmentConfig;
use gadms_data::loader::{Loader, LoaderConfig, Masking};
use gadms_data::masking::MaskingConfig;
use gadms_data::scores::ScoreTable;
use gadms_nn::gass::{GassConfig, GassNorm};
use gadms_nn::loss::{SDM_EPS, SDM_LOGIT_SCALE, sdm_loss};
use gadms_nn::{HasClipSpec, Tiny, cls_token};
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;
use synth::{IMG_H, IMG_LEN, IMG_W};

/// Pretrain the Tiny model from random init, evaluating zero-shot text->image retrieval
/// (CLIP towers) before and after. --objective sdm (default): the CLIP towers with the SDM
/// loss only. --objective ga-dms: full GA-DMS (CLIP + MTP decoder, GASS token scores, dual
/// noise/informative caption masking, loss SDM + beta*MTP), about 13x slower per step. With no
/// flags it uses the synthetic person dataset embedded in the binary (fixtures/synth-pedes,
/// CUHK-PEDES form), packed into RUN_DIR/data; --data trains on any `gadms pack` output at
/// 64x32. Writes RUN_DIR/config.json, metrics.jsonl and last.safetensors (CLIP weights); with
/// ga-dms also gadms_model.safetensors (CLIP + decoder) and scores.f32.
#[derive(FromArgs, Debug, Clone, Serialize)]
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
    /// run directory (default runs/pretrain-tiny); existing files in it are overwritten
    #[argh(option, default = "PathBuf::from(DEFAULT_OUT)")]
    pub out: PathBuf,
    /// training data: a `gadms pack` output packed at 64x32 (default: the embedded synthetic
    /// set, unpacked and packed into RUN_DIR/data)
    #[argh(option)]
    pub data: Option<PathBuf>,
    /// evaluation data: a `gadms pack` output at 64x32 (default: the embedded set's test split
    /// without --data, none with it)
    #[argh(option)]
    pub eval_data: Option<PathBuf>,
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
    /// also save RUN_DIR/last.safetensors every N epochs (default 0: only at the end)
    #[argh(option, default = "0")]
    pub save_every: usize,
    /// evaluate every N epochs (default 0: only before and after)
    #[argh(option, default = "0")]
    pub eval_every: usize,
    /// model preset; only tiny is supported (default tiny)
    #[argh(option, default = "Preset::Tiny")]
    #[serde(serialize_with = "ser_preset")]
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

/// `--objective`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
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
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
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

fn ser_preset<S: serde::Serializer>(p: &Preset, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(p.spec().name)
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
            out: PathBuf::from(DEFAULT_OUT),
            data: None,
            eval_data: None,
            aug_flip: DEFAULT_AUG_FLIP,
            aug_pad: DEFAULT_AUG_PAD,
            aug_erase: DEFAULT_AUG_ERASE,
            save_every: 0,
            eval_every: 0,
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
        if self.preset != Preset::Tiny {
            bail!(
                "--preset {}: pretraining supports only the tiny preset (64x32 images). ViT-B/16 \
                 costs about 1.7 s per image-caption pair forward+backward on a CPU \
                 (shared/dfdx-notes.md §3), so even the synthetic run would take hours; train \
                 tiny on real data with `gadms pack --image-size 64x32` and --data",
                self.preset.spec().name
            );
        }
        if self.epochs == 0 {
            bail!("--epochs must be at least 1");
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
        if self.aug_pad >= IMG_W {
            bail!(
                "--aug-pad {} must be smaller than the image width {IMG_W}",
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

/// The model trained here.
pub type Model = Tiny<f32, Dev>;

/// One SDM training step's worth of state: the model, Adam and the gradient buffers.
pub struct Trainer {
    /// The model.
    pub model: Model,
    opt: Adam<Model, f32, Dev>,
    grads: Option<Gradients<f32, Dev>>,
    dev: Dev,
}

/// Adam as in GA-DMS §6.1: β = (0.9, 0.999), ε = 1e-3, coupled L2 weight decay 4e-5.
pub fn adam_config(lr: f64) -> AdamConfig {
    AdamConfig {
        lr,
        betas: [0.9, 0.999],
        eps: 1e-3,
        weight_decay: Some(WeightDecay::L2(4e-5)),
    }
}

impl Trainer {
    /// A randomly initialised model (from `dev`'s RNG) with a fresh optimizer.
    pub fn new(dev: &Dev, lr: f64) -> Self {
        let model = <Model as dfdx::nn::BuildModule<Dev, f32>>::build(dev);
        let grads = Some(model.alloc_grads());
        let opt = Adam::new(&model, adam_config(lr));
        Trainer {
            model,
            opt,
            grads,
            dev: dev.clone(),
        }
    }

    /// Sets the learning rate of the next steps.
    pub fn set_lr(&mut self, lr: f64) {
        self.opt.cfg.lr = lr;
    }

    /// The current learning rate.
    pub fn lr(&self) -> f64 {
        self.opt.cfg.lr
    }

    /// One step on a batch: `pixels` are `B × [3, 64, 32]` CLIP-normalised images, `rows` the
    /// paired captions' ids, `pids` their identities. Returns the SDM loss before the update.
    pub fn step(&mut self, pixels: Vec<f32>, rows: &[TokenIds], pids: &[usize]) -> Result<f32> {
        let b = rows.len();
        if pixels.len() != b * IMG_LEN || pids.len() != b || b == 0 {
            bail!(
                "step: batch sizes disagree ({} images, {b} captions, {} pids)",
                pixels.len() / IMG_LEN,
                pids.len()
            );
        }
        let mut grads = self
            .grads
            .take()
            .expect("gradients are returned after every step");
        self.model.zero_grads(&mut grads);
        let images = self
            .dev
            .tensor_from_vec(pixels, (b, Const::<3>, Const::<IMG_H>, Const::<IMG_W>));
        // The image tape carries the model's gradient buffers; the text tape is merged into it.
        let img = cls_token(self.model.visual.forward(images.traced(grads), None));
        let txt = text_features_trimmed(&self.model.text, &self.dev, rows, OwnedTape::default());
        let loss = sdm_loss(img, txt, pids, SDM_LOGIT_SCALE, SDM_EPS);
        let value = loss.array();
        let grads = loss.backward();
        let res = self.opt.update(&mut self.model, &grads);
        self.grads = Some(grads);
        res.map_err(|e| anyhow::anyhow!("optimizer update failed: {e:?}"))?;
        if !value.is_finite() {
            bail!("the loss became {value}; try a smaller --lr");
        }
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

/// The full GA-DMS model trained by `--objective ga-dms`.
pub type GaDmsModel = GaDmsTiny<f32, Dev>;

/// The training state of a run: the SDM [`Trainer`], or the GA-DMS model, its optimiser and
/// score table.
enum Runner {
    Sdm(Box<Trainer>),
    GaDms {
        model: Box<GaDmsModel>,
        opt: crate::optim::Adam,
        scores: Arc<ScoreTable>,
        cfg: StepConfig,
        lr: f64,
    },
}

impl Runner {
    fn new(a: &PretrainArgs, dev: &Dev, scores: Option<Arc<ScoreTable>>) -> Result<Self> {
        Ok(match a.objective {
            Objective::Sdm => Runner::Sdm(Box::new(Trainer::new(dev, a.lr))),
            Objective::GaDms => {
                let cfg = a.step_config();
                cfg.validate().map_err(anyhow::Error::msg)?;
                let model = <GaDmsModel as dfdx::nn::BuildModule<Dev, f32>>::build(dev);
                Runner::GaDms {
                    model: Box::new(model),
                    opt: crate::optim::Adam::new(crate::optim::AdamConfig::default()),
                    scores: scores.context("ga-dms needs a score table")?,
                    cfg,
                    lr: a.lr,
                }
            }
        })
    }

    /// The CLIP towers (what is evaluated and saved as last.safetensors).
    fn clip(&self) -> &Model {
        match self {
            Runner::Sdm(t) => &t.model,
            Runner::GaDms { model, .. } => &model.clip,
        }
    }

    fn set_lr(&mut self, new: f64) {
        match self {
            Runner::Sdm(t) => t.set_lr(new),
            Runner::GaDms { lr, .. } => *lr = new,
        }
    }

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
                if !r.applied {
                    bail!(
                        "the loss became {} (SDM {}, MTP {}); try a smaller --lr",
                        r.loss,
                        r.loss_sdm,
                        r.loss_mtp
                    );
                }
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
        let mut out = vec![save(self.clip(), dir)?];
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
}

/// The full GA-DMS model of a `--objective ga-dms` run (CLIP + decoder, `save_gadms`).
pub const GADMS_MODEL_FILE: &str = "gadms_model.safetensors";

#[derive(Serialize)]
struct EvalLine<'a> {
    step: usize,
    epoch: usize,
    split: &'a str,
    #[serde(flatten)]
    m: Metrics,
}

/// Writes one JSON value per line, flushing each (so a killed run keeps its metrics).
struct Jsonl(BufWriter<File>);

impl Jsonl {
    fn write<T: Serialize>(&mut self, v: &T) -> Result<()> {
        serde_json::to_writer(&mut self.0, v)?;
        self.0.write_all(b"\n")?;
        self.0.flush()?;
        Ok(())
    }
}

/// The data of a run: the packed training split and, optionally, the evaluation split.
struct RunData {
    train: Arc<gadms_data::manifest::Dataset>,
    test: Option<EvalSet>,
    probe: EvalSet,
    source: serde_json::Value,
}

fn load_data(a: &PretrainArgs) -> Result<RunData> {
    let t = Instant::now();
    let (train_dir, eval_dir, source) = match &a.data {
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
            let eval = a.eval_data.clone().unwrap_or(d.test.clone());
            (d.train, Some(eval), "embedded fixtures/synth-pedes")
        }
        Some(dir) => (dir.clone(), a.eval_data.clone(), "--data"),
    };
    let train = Arc::new(data::open_packed(&train_dir, "--data")?);
    let test = match &eval_dir {
        Some(dir) => {
            let ds = data::open_packed(dir, "--eval-data")?;
            Some(EvalSet::from_dataset(&ds, None)?)
        }
        None => None,
    };
    // The probe of the fit: the first identities of the training set, as many as the test has.
    let probe_ids = test.as_ref().map_or(100, |s| s.n_ids());
    let probe = EvalSet::from_dataset(&train, Some(probe_ids))?;
    let m = &train.manifest;
    let mut source = serde_json::json!({
        "source": source,
        "train": {
            "dir": train_dir, "dataset": m.config.dataset, "split": m.config.split,
            "ids": m.identities, "images": m.images, "captions": m.samples,
        },
        "image_hw": [IMG_H, IMG_W],
    });
    if let (Some(dir), Some(s)) = (&eval_dir, &test) {
        source["eval"] = serde_json::json!({
            "dir": dir, "ids": s.n_ids(), "images": s.n_images(), "captions": s.n_captions(),
        });
    }
    Ok(RunData {
        train,
        test,
        probe,
        source,
    })
}

/// Runs the command.
pub fn run(a: PretrainArgs) -> Result<()> {
    let warmup = a.validate()?;
    let t0 = Instant::now();
    let spec = Model::SPEC;
    match a.objective {
        Objective::Sdm => println!(
            "gadms pretrain --objective sdm: trains the two CLIP towers of the '{}' preset from \
             random init with the SDM loss only (no masking, no MTP decoder).",
            spec.name
        ),
        Objective::GaDms => println!(
            "gadms pretrain --objective ga-dms: trains the '{}' preset (CLIP + MTP decoder) from \
             random init with GASS scores, dual noise/informative caption masking and loss \
             SDM + {}*MTP (GASS: {} layers, {:?} norm; masking alpha_n {} alpha_i {} lambda {}).",
            spec.name, a.beta, a.gass_layers, a.gass_norm, a.alpha_n, a.alpha_i, a.mask_lambda
        ),
    }

    // Run directory and data.
    std::fs::create_dir_all(&a.out)
        .with_context(|| format!("cannot create run directory {}", a.out.display()))?;
    let RunData {
        train,
        test,
        probe,
        source,
    } = load_data(&a)?;
    let m = &train.manifest;
    println!(
        "train: {} ids / {} images / {} captions ({}){}",
        m.identities,
        m.images,
        m.samples,
        train.dir.display(),
        match &test {
            Some(s) => format!(
                "; test: {} ids / {} images / {} captions (disjoint identities)",
                s.n_ids(),
                s.n_images(),
                s.n_captions()
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

    let config = serde_json::json!({
        "args": &a,
        "warmup_epochs_used": warmup,
        "steps_per_epoch": steps_per_epoch,
        "objective": a.objective,
        "loss": match a.objective {
            Objective::Sdm => "sdm",
            Objective::GaDms => "sdm(noise-masked) + beta * mtp(informative-masked)",
        },
        "logit_scale": SDM_LOGIT_SCALE,
        "pids": "identity",
        "optimizer": { "name": "adam", "betas": [0.9, 0.999], "eps": 1e-3, "weight_decay_l2": 4e-5 },
        "schedule": "per-epoch linear warm-up from 0.1x, then cosine to 0",
        "augment": a.augment(),
        "loader": { "workers": LOADER_WORKERS, "shuffle_buffer": 10_000, "drop_last": true },
        "model": gadms_ckpt::clip_io::open_clip_model_cfg(&spec),
        "data": source,
    });
    let mut config = config;
    if a.objective == Objective::GaDms {
        let sc = a.step_config();
        config["ga_dms"] = serde_json::json!({
            "beta": sc.beta,
            "gass": { "layers": sc.gass.layers, "scales": sc.gass.scales, "norm": a.gass_norm },
            "masking": a.masking_config(),
            "score_rows": train.len(),
            "optimizer": crate::optim::AdamConfig::default(),
            "decoder": "MtpTiny",
        });
    }
    write_file(
        &a.out.join("config.json"),
        &serde_json::to_vec_pretty(&config)?,
    )?;
    let metrics_path = a.out.join("metrics.jsonl");
    let mut jsonl = Jsonl(BufWriter::new(
        File::create(&metrics_path)
            .with_context(|| format!("cannot create {}", metrics_path.display()))?,
    ));

    // Model.
    let dev = Dev::seed_from_u64(a.seed);
    let mut tr = Runner::new(&a, &dev, scores)?;
    let evaluate = |model: &Model, set: &EvalSet| -> Result<Metrics> {
        eval::evaluate(model, set, 128).map_err(anyhow::Error::msg)
    };

    let before = match &test {
        Some(set) => {
            let m = evaluate(tr.clip(), set)?;
            jsonl.write(&EvalLine {
                step: 0,
                epoch: 0,
                split: "test",
                m,
            })?;
            println!("zero-shot text->image retrieval before training (random init):");
            print_table(&[("test", &m)]);
            Some(m)
        }
        None => None,
    };

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
    let say = |s: String| {
        if pb.is_hidden() {
            println!("{s}");
        } else {
            pb.println(s);
        }
    };
    let (mut step, mut pairs_done) = (0usize, 0usize);
    let train_start = Instant::now();
    for epoch in 1..=a.epochs {
        let lr = a.lr * schedule::lr_factor(epoch - 1, a.epochs, warmup);
        tr.set_lr(lr);
        let (mut sum, mut n, mut pairs) = (0.0f64, 0usize, 0usize);
        let epoch_start = Instant::now();
        for _ in 0..steps_per_epoch {
            let t = Instant::now();
            let batch = loader.next_batch().context("loading a batch")?;
            let b = batch.len();
            let out = tr.step(batch)?;
            let loss = out.loss;
            step += 1;
            pairs += b;
            let rate = b as f64 / t.elapsed().as_secs_f64();
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
                "epoch {epoch}/{} loss {loss:.4} lr {lr:.2e} {rate:.0} pairs/s",
                a.epochs
            ));
        }
        pairs_done += pairs;
        let mean = sum / n.max(1) as f64;
        let secs = epoch_start.elapsed().as_secs_f64();
        let mut line = format!(
            "epoch {epoch:>3}/{}  mean loss {mean:.4}  lr {lr:.2e}  {:.0} pairs/s",
            a.epochs,
            pairs as f64 / secs
        );
        if a.eval_every > 0
            && epoch % a.eval_every == 0
            && epoch != a.epochs
            && let Some(set) = &test
        {
            let m = evaluate(tr.clip(), set)?;
            jsonl.write(&EvalLine {
                step,
                epoch,
                split: "test",
                m,
            })?;
            line += &format!("  test R1 {:.2} mAP {:.2}", m.r1, m.map);
        }
        say(line);
        if a.save_every > 0 && epoch % a.save_every == 0 && epoch != a.epochs {
            tr.save(&a.out)?;
        }
    }
    pb.finish_and_clear();
    let train_secs = train_start.elapsed().as_secs_f64();

    let after = match &test {
        Some(set) => {
            let m = evaluate(tr.clip(), set)?;
            jsonl.write(&EvalLine {
                step,
                epoch: a.epochs,
                split: "test",
                m,
            })?;
            Some(m)
        }
        None => None,
    };
    let fit = evaluate(tr.clip(), &probe)?;
    jsonl.write(&EvalLine {
        step,
        epoch: a.epochs,
        split: "train-subset",
        m: fit,
    })?;
    let ckpts = tr.save(&a.out)?;

    println!(
        "trained {step} steps ({} epochs) in {train_secs:.1} s ({:.0} pairs/s)",
        a.epochs,
        pairs_done as f64 / train_secs
    );
    println!(
        "zero-shot text->image retrieval (queries = captions, gallery = images, relevant = same identity):"
    );
    let mut rows: Vec<(&str, &Metrics)> = Vec::new();
    if let (Some(b), Some(af)) = (&before, &after) {
        rows.push(("test, before", b));
        rows.push(("test, after", af));
    }
    rows.push(("train subset, after", &fit));
    print_table(&rows);
    if let (Some(b), Some(af)) = (&before, &after) {
        println!(
            "test chance R1 = {:.2} (random ranking); R1 {:.2} -> {:.2}",
            af.chance_r1, b.r1, af.r1
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

fn print_table(rows: &[(&str, &Metrics)]) {
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

fn write_file(path: &Path, bytes: &[u8]) -> Result<()> {
    std::fs::write(path, bytes).with_context(|| format!("cannot write {}", path.display()))
}

fn save(model: &Model, dir: &Path) -> Result<PathBuf> {
    let path = dir.join("last.safetensors");
    gadms_ckpt::save_clip(model, &Model::SPEC, &path)
        .with_context(|| format!("saving {}", path.display()))?;
    Ok(path)
}
