//! The GA-DMS recipe (`gadms pretrain --objective ga-dms`; docs/method.md §3.2, §4, §5, §6.1,
//! §11 item 5): one pretraining step of the model `GaDms = CLIP + MTP decoder`.
//!
//! # The step ([`train_step`])
//!
//! ```text
//! tokens_v = visual(images)                        [B, SEQ, EMBED]  tape: model.alloc_grads()
//! cls      = tokens_v[:, 0]                        [B, EMBED]       second use: empty tape
//! S        = GASS(text, cls detached, ids_clean)   [B, 77]          own leaky tape, dropped (§3.2)
//! scores[sample_index[b]] ← S[b]                                    drives epoch e+1's masks (§3.2 D, §4)
//! t_noise  = eos(text(ids_noise))  (trimmed)      [B, EMBED]       tape: tape_with(leaky)
//! L_sdm    = SDM(cls, t_noise, pids, 1/τ = 50)                      (§5.1)
//! t_info   = text(ids_info)                        [B, 77, EMBED]   tape: tape_with(leaky)
//! L_mtp    = CE(decoder(t_info, tokens_v)[labelled], info_labels)   (§5.2)
//! L        = L_sdm + β·L_mtp,  β = 0.4                              (§5.4)
//! backward(L); Adam update (ε 1e-3, coupled L2 4e-5; §6.1)
//! ```
//!
//! * The EOS positions of both masked copies are those of `ids_clean`: the masking never
//!   touches EOT and every replacement id is below it (§4.3).
//! * `pids` are the batch's person ids. In GA-DMS pretraining every caption has its own pid
//!   (§5.1; `gadms pack` gives WebPerson captions `pid = 2·image_id + caption_idx`), so the SDM
//!   target is the identity.
//! * **Tapes.** dfdx records a graph per [`OwnedTape`]; two tapes merge when a binary op sees
//!   both (their gradient maps are united, their operations appended and run in id order), so
//!   every branch must end up in the loss exactly once. The vision input carries the
//!   `alloc_grads()` tape (which holds every parameter's gradient buffer and marks them as the
//!   leaves to keep); the image tokens take that tape into the MTP branch, the CLS row gets
//!   an empty tape (`with_empty_tape`, same id, so its gradient still reaches the tokens) for
//!   SDM; the two text passes each start from an empty leaky tape (`tape_with`). The SDM and
//!   MTP losses merge them all in `L_sdm + β·L_mtp`. The test `tests/it/gadms_step.rs` checks that
//!   the gradient of `L` equals the sum of the gradients of `L_sdm` and `β·L_mtp` computed on
//!   separate graphs ([`loss_grads`] with [`Branches`]).
//! * **dfdx `slice` pitfall.** dfdx 0.13's CPU `slice` backward *assigns* into the source's
//!   gradient instead of adding, so a slice-based CLS pick overwrote the MTP gradient at the
//!   CLS position (the test above failed at 9e-3 relative error); `gadms_nn::cls_token` uses
//!   a batched `select`, which accumulates (~5e-6).
//! * **Score table (data/src/loader.rs, "Score table contract").** The step writes only the
//!   rows of the batch it was given (`Batch::sample_index`), and returns before the caller
//!   asks the loader for the next batch, so masks of epoch `e + 1` see exactly the scores of
//!   epoch `e` whatever the worker count or timing.
//! * **Non-finite loss.** If `L` is NaN or ±∞, nothing is changed (no update, no score write,
//!   the optimiser step count is kept) and [`StepReport::applied`] is false; the caller stops
//!   the run with its last good checkpoint intact.
//!
//! # The recipe ([`GaDmsRecipe`])
//!
//! The model, its optimiser and the score table. A checkpoint holds the full model
//! (`model.safetensors`), Adam's state and the score table (`scores.f32`); with the loader's
//! `LoaderState` this resumes a run bit-exactly (tested). The final files are
//! `last.safetensors` (CLIP), `gadms_model.safetensors` (CLIP + decoder) and `scores.f32`.

use super::accum::global;
use super::gadms_accum::{GaDmsAccum, train_step_accum};
use super::optim::{Adam, Group, adam_config};
use super::recipe::{ModelParts, Recipe, StepOut};
use super::run_dir::{self, GADMS_MODEL_FILE, LAST_FILE};
use anyhow::Result;
use dfdx::nn::ZeroGrads;
use dfdx::nn::tensor_collection::*;
use dfdx::prelude::*;
use gadms_data::loader::Batch;
use gadms_data::manifest::Dataset;
use gadms_data::masking::MaskingConfig;
use gadms_data::scores::{SCORE_CTX, ScoreTable};
use gadms_nn::gass::{GassConfig, GassOutput, gass_scores};
use gadms_nn::loss::{SDM_EPS, SDM_LOGIT_SCALE, sdm_loss};
use gadms_nn::{
    Clip, Float, MtpDecoder, TextInput, TextTower, VisionTower, tape_with, text_features_trimmed,
};
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use gadms_nn::{GaDms, GaDmsTiny, GaDmsViTB16};

/// Step settings.
#[derive(Clone, Debug, PartialEq)]
pub struct StepConfig {
    /// MTP weight β (§5.4: paper 0.4, official script 0.3).
    pub beta: f64,
    /// GASS settings (§3.2).
    pub gass: GassConfig,
    /// SDM logit scale `1/τ` (§5: 50).
    pub logit_scale: f64,
}

impl Default for StepConfig {
    fn default() -> Self {
        StepConfig {
            beta: 0.4,
            gass: GassConfig::default(),
            logit_scale: SDM_LOGIT_SCALE,
        }
    }
}

impl StepConfig {
    /// Checks the settings [`train_step`] would otherwise panic on.
    pub fn validate(&self) -> std::result::Result<(), String> {
        if !self.beta.is_finite() || self.beta < 0.0 {
            return Err(format!("beta must be finite and ≥ 0, got {}", self.beta));
        }
        if !self.logit_scale.is_finite() || self.logit_scale <= 0.0 {
            return Err(format!(
                "the logit scale must be finite and > 0, got {}",
                self.logit_scale
            ));
        }
        if self.gass.layers == 0 {
            return Err("GASS needs at least 1 layer".into());
        }
        if self.gass.scales.is_empty() || self.gass.scales.contains(&0) {
            return Err(format!(
                "GASS scales must be non-empty and ≥ 1, got {:?}",
                self.gass.scales
            ));
        }
        Ok(())
    }
}

/// What one [`train_step`] did.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct StepReport {
    /// `L = L_sdm + β·L_mtp` (before the update).
    pub loss: f32,
    /// SDM loss on the noise-masked captions.
    pub loss_sdm: f32,
    /// MTP cross-entropy on the informative-masked captions (mean over masked tokens).
    pub loss_mtp: f32,
    /// Global L2 norm of the gradient (before any clipping); 0 when not applied.
    pub grad_norm: f32,
    /// Masked (labelled) tokens in the MTP branch.
    pub masked_tokens: usize,
    /// False when the loss was not finite: then nothing was updated or written.
    pub applied: bool,
}

/// Which loss terms [`loss_grads`] builds (each on its own graph).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Branches {
    /// `L_sdm + β·L_mtp`, the training loss (the graph [`train_step`] uses).
    All,
    /// `L_sdm` alone.
    Sdm,
    /// `β·L_mtp` alone.
    Mtp,
}

/// Loss values of a forward pass.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LossParts {
    /// The differentiated total (for [`Branches::Sdm`] / [`Branches::Mtp`]: that term only).
    pub loss: f32,
    /// `L_sdm` (NaN when not computed).
    pub sdm: f32,
    /// `L_mtp`, unweighted (NaN when not computed).
    pub mtp: f32,
    /// Labelled tokens of the MTP branch (0 when not computed).
    pub masked_tokens: usize,
}

/// A GA-DMS model that can run the pretraining forward pass. Implemented (in f32, on any
/// device) for every `GaDms<Clip<VisionTower, TextTower>, MtpDecoder>` whose decoder width is
/// the joint embedding width and whose vocabulary is the text tower's ([`GaDmsTiny`],
/// [`GaDmsViTB16`]).
pub trait GaDmsForward<E: Float, D: Device<E>>: TensorCollection<E, D> {
    /// The forward pass of §11 item 5 on `batch`, with gradients accumulating into `grads`
    /// (from `alloc_grads()`), returning the loss selected by `branches` (with its tape) and
    /// the parts; with `gass`, also the GASS scores of the clean captions.
    ///
    /// # Panics
    /// On a batch without dual-masked captions, with images or captions of the wrong size, or
    /// a GASS configuration error (see [`StepConfig::validate`]).
    fn forward_losses(
        &self,
        batch: &Batch,
        cfg: &StepConfig,
        branches: Branches,
        gass: bool,
        grads: Gradients<E, D>,
    ) -> Forward<E, D>;

    /// Seconds per call of the step's GASS part alone (`gass_scores` on the clean captions of
    /// `batch` against the image CLS features, computed once up front), over `iters` calls
    /// after one warm-up: the GASS overhead of a step (`gadms bench train`).
    fn time_gass(&self, batch: &Batch, cfg: &StepConfig, iters: usize) -> f64;
}

/// The result of [`GaDmsForward::forward_losses`].
pub struct Forward<E: Dtype, D: Storage<E>> {
    /// The selected loss, carrying the merged tape of every branch that feeds it.
    pub loss: Tensor<Rank0, E, D, OwnedTape<E, D>>,
    /// Its value and parts.
    pub parts: LossParts,
    /// GASS on the clean captions, when requested.
    pub gass: Option<GassOutput>,
}

/// The masked-token branch and its loss: the masked captions of `batch` (`ids_info` /
/// `info_labels`: GA-DMS's informative-masked copy for MTP, §4.3 and §5.2, or fine-tuning's MLM
/// copy, §4.4) through the text tower (all `CTX` tokens, a fresh leaky tape), the decoder over
/// `image_tokens` [B, SEQ, EMBED] and the vocabulary head with its cross entropy on the
/// labelled positions (fused, no [N, VOCAB] logits: `MtpDecoder::masked_loss`); the sum is
/// divided by `count` (`None`: this batch's labelled positions; `Some(c)`: a micro-batch's part
/// of a batch with `c`). Returns the loss and the number of labelled positions.
#[allow(clippy::type_complexity)]
pub(crate) fn mtp_loss<
    const VOCAB: usize,
    const CTX: usize,
    const TW: usize,
    const TH: usize,
    const THD: usize,
    const TF: usize,
    const TL: usize,
    const EMBED: usize,
    const MH: usize,
    const MHD: usize,
    const MF: usize,
    const ML: usize,
    const SEQ: usize,
    D: Device<f32>,
>(
    text: &TextTower<VOCAB, CTX, TW, TH, THD, TF, TL, EMBED, f32, D>,
    mtp: &MtpDecoder<EMBED, MH, MHD, MF, ML, VOCAB, f32, D>,
    batch: &Batch,
    image_tokens: Tensor<(usize, Const<SEQ>, Const<EMBED>), f32, D, OwnedTape<f32, D>>,
    count: Option<usize>,
) -> (Tensor<Rank0, f32, D, OwnedTape<f32, D>>, usize) {
    let b = batch.len();
    let dev = text.text_projection.device().clone();
    let info = rows::<CTX>("informative-masked", &batch.ids_info, b);
    let ids = TextInput::<CTX, D>::new(&dev, &info).ids;
    let labels: Vec<u32> = rows::<CTX>("label", &batch.info_labels, b)
        .into_iter()
        .flatten()
        .collect();
    let t = text.forward(ids, tape_with(&dev, Gradients::leaky()), None);
    mtp.masked_loss(t, image_tokens, &labels, count)
}

/// Caption rows of the batch as `[u32; CTX]` (the loader's are `[u32; 77]`).
pub(crate) fn rows<const CTX: usize>(what: &str, ids: &[[u32; 77]], b: usize) -> Vec<[u32; CTX]> {
    assert_eq!(
        ids.len(),
        b,
        "train_step: the batch has {} {what} captions for {b} images (dual masking on?)",
        ids.len()
    );
    ids.iter()
        .map(|r| {
            r.as_slice()
                .try_into()
                .unwrap_or_else(|_| panic!("train_step: the model's context is {CTX}, not 77"))
        })
        .collect()
}

impl<
    const IMG_H: usize,
    const IMG_W: usize,
    const PATCH: usize,
    const PATCH_DIM: usize,
    const SEQ: usize,
    const VW: usize,
    const VH: usize,
    const VHD: usize,
    const VF: usize,
    const VL: usize,
    const VOCAB: usize,
    const CTX: usize,
    const TW: usize,
    const TH: usize,
    const THD: usize,
    const TF: usize,
    const TL: usize,
    const EMBED: usize,
    const MH: usize,
    const MHD: usize,
    const MF: usize,
    const ML: usize,
    D: Device<f32>,
> GaDmsForward<f32, D>
    for GaDms<
        Clip<
            VisionTower<IMG_H, IMG_W, PATCH, PATCH_DIM, SEQ, VW, VH, VHD, VF, VL, EMBED, f32, D>,
            TextTower<VOCAB, CTX, TW, TH, THD, TF, TL, EMBED, f32, D>,
        >,
        MtpDecoder<EMBED, MH, MHD, MF, ML, VOCAB, f32, D>,
    >
{
    fn forward_losses(
        &self,
        batch: &Batch,
        cfg: &StepConfig,
        branches: Branches,
        gass: bool,
        grads: Gradients<f32, D>,
    ) -> Forward<f32, D> {
        type E = f32;
        let b = batch.len();
        assert!(b > 0, "train_step: empty batch");
        assert_eq!(
            (batch.height, batch.width),
            (IMG_H, IMG_W),
            "train_step: the model takes {IMG_H}x{IMG_W} images"
        );
        assert_eq!(
            batch.images.len(),
            b * 3 * IMG_H * IMG_W,
            "train_step: image buffer size"
        );
        assert_eq!(batch.pids.len(), b, "train_step: one pid per sample");
        let text = &self.clip.text;
        let dev = text.text_projection.device().clone();

        // Clean captions: EOS positions for every copy (masking never moves EOT, §4.3).
        let clean = TextInput::<CTX, D>::new(&dev, &rows::<CTX>("clean", &batch.ids_clean, b));
        let pids: Vec<usize> = batch.pids.iter().map(|&p| p as usize).collect();

        // (a) image tokens, carrying the model's gradient buffers.
        let pixels: Vec<E> = batch.images.clone();
        let images = dev.tensor_from_vec(pixels, (b, Const::<3>, Const::<IMG_H>, Const::<IMG_W>));
        let tokens = self.clip.visual.forward(images.traced(grads), None);

        // (b) GASS on the clean captions with the CLS feature detached (§3.2).
        let gass_out = gass.then(|| {
            let cls = gadms_nn::cls_token(tokens.retaped::<NoneTape>());
            gass_scores(text, cls, &clean, &cfg.gass).unwrap_or_else(|e| panic!("train_step: {e}"))
        });

        let beta = cfg.beta as E;
        let nan = f32::NAN;
        // SDM branch: noise-masked captions → EOS → SDM against the image CLS (§4.3, §5.1).
        let sdm = |cls: Tensor<(usize, Const<EMBED>), E, D, OwnedTape<E, D>>| {
            // Only the EOS feature is used and the text attention is causal: the trimmed
            // pass (first `max EOS + 1` positions) is exactly the full one.
            let noise = rows::<CTX>("noise-masked", &batch.ids_noise, b);
            let tape = tape_with(&dev, Gradients::leaky());
            let t = text_features_trimmed(text, &dev, &noise, tape);
            sdm_loss(cls, t, &pids, cfg.logit_scale, SDM_EPS)
        };
        // MTP branch: informative-masked captions → all tokens → decoder over the image
        // tokens → CE on the labelled positions (§4.3, §5.2).
        let mtp =
            |image_tokens: Tensor<(usize, Const<SEQ>, Const<EMBED>), E, D, OwnedTape<E, D>>| {
                mtp_loss(text, &self.mtp, batch, image_tokens, None)
            };

        let (loss, parts) = match branches {
            Branches::All => {
                // The tokens' tape goes to MTP; the CLS row is a second use (empty tape).
                let cls = gadms_nn::cls_token(tokens.with_empty_tape());
                let l_sdm = sdm(cls);
                let (l_mtp, masked) = mtp(tokens);
                let (s, m) = (l_sdm.as_vec()[0], l_mtp.as_vec()[0]);
                let loss = l_sdm + l_mtp * beta;
                // The total for the log from the parts already read (the device's f32
                // operations in its order; on CUDA one wait for the GPU fewer per step).
                let parts = LossParts {
                    loss: s + m * beta,
                    sdm: s,
                    mtp: m,
                    masked_tokens: masked,
                };
                (loss, parts)
            }
            Branches::Sdm => {
                let l_sdm = sdm(gadms_nn::cls_token(tokens));
                let s = l_sdm.as_vec()[0];
                let parts = LossParts {
                    loss: s,
                    sdm: s,
                    mtp: nan,
                    masked_tokens: 0,
                };
                (l_sdm, parts)
            }
            Branches::Mtp => {
                let (l_mtp, masked) = mtp(tokens);
                let m = l_mtp.as_vec()[0];
                let loss = l_mtp * beta;
                let parts = LossParts {
                    loss: m * beta,
                    sdm: nan,
                    mtp: m,
                    masked_tokens: masked,
                };
                (loss, parts)
            }
        };
        Forward {
            loss,
            parts,
            gass: gass_out,
        }
    }

    fn time_gass(&self, batch: &Batch, cfg: &StepConfig, iters: usize) -> f64 {
        let b = batch.len();
        let dev = self.clip.text.text_projection.device().clone();
        let clean = TextInput::<CTX, D>::new(&dev, &rows::<CTX>("clean", &batch.ids_clean, b));
        let images = dev.tensor_from_vec(
            batch.images.clone(),
            (b, Const::<3>, Const::<IMG_H>, Const::<IMG_W>),
        );
        let cls = gadms_nn::cls_token(self.clip.visual.forward(images, None));
        let run = || {
            gass_scores(&self.clip.text, cls.clone(), &clean, &cfg.gass)
                .unwrap_or_else(|e| panic!("time_gass: {e}"))
        };
        run();
        let t = std::time::Instant::now();
        for _ in 0..iters.max(1) {
            run();
        }
        t.elapsed().as_secs_f64() / iters.max(1) as f64
    }
}

/// The gradient of the loss selected by `branches` w.r.t. every parameter of `model` (a store
/// from `alloc_grads()`, leaves only), and the loss parts. No GASS, no update: for tests and
/// diagnostics.
pub fn loss_grads<E: Float, D: Device<E>, M: GaDmsForward<E, D>>(
    model: &M,
    batch: &Batch,
    cfg: &StepConfig,
    branches: Branches,
) -> (Gradients<E, D>, LossParts) {
    let f = model.forward_losses(batch, cfg, branches, false, model.alloc_grads());
    (f.loss.backward(), f.parts)
}

/// One GA-DMS pretraining step (module docs; §3.2, §4, §5, §11 item 5): GASS scores of the
/// clean captions into `scores` (rows `batch.sample_index`), then `L_sdm + β·L_mtp`, backward,
/// and `opt.update` at learning rate `lr` with every parameter in one group (GA-DMS uses one
/// lr and wd for all parameters, §6.1).
///
/// The batch must come from a loader with `Masking::Dual` over a dataset of the model's image
/// size; `scores` is the table that loader reads.
///
/// # Panics
/// On a batch that does not fit the model or lacks the masked copies, a GASS configuration
/// error (check [`StepConfig::validate`] at start-up), or a sample index outside the table.
pub fn train_step<E: Float, D: Device<E>, M: GaDmsForward<E, D>>(
    model: &mut M,
    opt: &mut Adam,
    batch: &Batch,
    scores: &ScoreTable,
    cfg: &StepConfig,
    lr: f32,
) -> StepReport {
    let Forward { loss, parts, gass } =
        model.forward_losses(batch, cfg, Branches::All, true, model.alloc_grads());
    let mut report = StepReport {
        loss: parts.loss,
        loss_sdm: parts.sdm,
        loss_mtp: parts.mtp,
        grad_norm: 0.0,
        masked_tokens: parts.masked_tokens,
        applied: false,
    };
    if !parts.loss.is_finite() {
        return report;
    }
    let gass = gass.expect("GASS was requested");
    assert_eq!(
        gass.ctx, SCORE_CTX,
        "train_step: GASS context vs score table"
    );
    for (row, s) in batch.sample_index.iter().zip(gass.rows()) {
        let s: &[f32; SCORE_CTX] = s.try_into().expect("a row of SCORE_CTX scores");
        scores.set(*row as usize, s);
    }
    let grads = loss.backward();
    let stats = opt.update(model, &grads, lr, &|_| Group::PLAIN);
    report.grad_norm = stats.grad_norm;
    report.applied = true;
    report
}

/// The GA-DMS recipe: model `M` (CLIP + decoder), Adam, the per-caption score table the
/// loader's dual masking reads, and the step settings.
pub struct GaDmsRecipe<D: Device<f32>, M> {
    /// The model.
    pub model: Box<M>,
    /// Its optimiser.
    pub opt: Adam,
    /// GASS scores, one row per training caption (row = sample index).
    pub scores: Arc<ScoreTable>,
    /// β, GASS and the logit scale.
    pub cfg: StepConfig,
    /// SDM identities = sample indices (every caption its own pid; docs/method.md §5.1).
    pub caption_pids: bool,
    /// The loader's dual-masking curves (for the end-of-run report).
    pub masking: MaskingConfig,
    /// Micro-batches per step (`--accum-steps`; 1: [`train_step`], else
    /// [`super::gadms_accum::train_step_accum`]).
    pub accum_steps: usize,
    _device: std::marker::PhantomData<D>,
}

impl<D: Device<f32>, M: GaDmsForward<f32, D>> GaDmsRecipe<D, M> {
    /// Trains `model` with a fresh optimiser, writing GASS scores into `scores` (which the
    /// loader's dual masking with curves `masking` reads).
    pub fn new(
        model: M,
        scores: Arc<ScoreTable>,
        cfg: StepConfig,
        masking: MaskingConfig,
        caption_pids: bool,
    ) -> Self {
        GaDmsRecipe {
            model: Box::new(model),
            opt: Adam::new(adam_config()),
            scores,
            cfg,
            caption_pids,
            masking,
            accum_steps: 1,
            _device: std::marker::PhantomData,
        }
    }
}

impl<D: Device<f32>, M: GaDmsAccum<D> + ModelParts<D>> Recipe<D> for GaDmsRecipe<D, M> {
    type Clip = M::Clip;

    fn clip(&self) -> &M::Clip {
        self.model.clip()
    }

    fn step(&mut self, mut batch: Batch, lr: f64) -> Result<StepOut> {
        if self.caption_pids {
            batch.pids = batch.sample_index.clone();
        }
        let (model, lr) = (self.model.as_mut(), lr as f32);
        let r = match self.accum_steps {
            k if global::two_pass(k) => {
                train_step_accum(model, &mut self.opt, &batch, &self.scores, &self.cfg, lr, k)?
            }
            _ => train_step(model, &mut self.opt, &batch, &self.scores, &self.cfg, lr),
        };
        debug_assert_eq!(r.applied, r.loss.is_finite());
        Ok(StepOut {
            loss: r.loss,
            parts: vec![("sdm", r.loss_sdm), ("mtp", r.loss_mtp)],
            masked_tokens: Some(r.masked_tokens),
            grad_norm: Some(r.grad_norm),
        })
    }

    fn save_checkpoint(&self, dir: &Path) -> Result<()> {
        run_dir::save_model_file(self.model.as_ref(), vec![], &dir.join(run_dir::MODEL_FILE))?;
        self.opt.save(&dir.join(run_dir::ADAM_FILE))?;
        save_scores(&self.scores, &dir.join(run_dir::SCORES_FILE))
    }

    fn load_checkpoint(&mut self, dir: &Path) -> Result<()> {
        run_dir::load_model_file(self.model.as_mut(), &dir.join(run_dir::MODEL_FILE))?;
        self.opt = Adam::load(&dir.join(run_dir::ADAM_FILE))?;
        let p = dir.join(run_dir::SCORES_FILE);
        let saved = ScoreTable::open(&p, Some(self.scores.rows()))
            .map_err(|e| anyhow::anyhow!("{}: {e}", p.display()))?;
        self.scores
            .copy_from(&saved)
            .map_err(|e| anyhow::anyhow!("{}: {e}", p.display()))
    }

    fn save_final(&self, out: &Path) -> Result<Vec<PathBuf>> {
        let last = run_dir::save_clip(self.clip(), &out.join(LAST_FILE))?;
        let full = out.join(GADMS_MODEL_FILE);
        run_dir::save_model_file(self.model.as_ref(), vec![], &full)?;
        let scores = out.join(gadms_data::scores::SCORE_FILE);
        save_scores(&self.scores, &scores)?;
        Ok(vec![last, full, scores])
    }

    fn report(&self, data: &Dataset) -> Result<Option<String>> {
        let r = super::score_report::score_report(data, &self.scores, &self.masking)?;
        Ok(Some(r.to_string()))
    }
}

/// Writes a copy of the score table to `path`.
fn save_scores(scores: &ScoreTable, path: &Path) -> Result<()> {
    scores
        .save_copy(path)
        .map_err(|e| anyhow::anyhow!("saving {}: {e}", path.display()))
}
