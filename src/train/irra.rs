//! The IRRA fine-tuning recipe (`gadms finetune`; docs/method.md §5.4 and §6.2: "fine-tuning
//! with the IRRA").
//!
//! # The step ([`IrraStep::finetune_step`])
//!
//! ```text
//! tokens_v = visual(images)                          [B, SEQ, EMBED]  tape: model.alloc_grads()
//! v        = tokens_v[:, 0]                          [B, EMBED]       CLS (projected)
//! t        = eos(text(ids_clean))                    [B, EMBED]       EOS (projected)
//! L_sdm    = SDM(v, t, person ids, 1/τ = 50)                           (§5.1)
//! L_id     = (CE(W v + b, pid) + CE(W t + b, pid)) / 2                 (§5.3; W [C, EMBED], C = train ids)
//! t_mlm    = text(ids_mlm)                           [B, 77, EMBED]   uniform 15 % MLM (§4.4)
//! L_mlm    = CE(decoder(t_mlm, tokens_v)[masked], original ids)        (§5.2, the MTP decoder)
//! L        = L_sdm + w_id·L_id + w_mlm·L_mlm          (IRRA: all weights 1)
//! Adam (0.9, 0.999), ε 1e-3, coupled L2 4e-5, IRRA parameter groups (below)
//! ```
//!
//! **Parameter groups** (IRRA `solver/build.py`, applied by name in this order): names with
//! `cross` get 5× lr; names with `bias` get 2× lr and no weight decay; `classifier` and
//! `mlm_head` get 5× lr (keeping the bias rule's decay). Everything else: 1× lr, wd 4e-5.
//!
//! **Identities.** SDM uses the person ids (several captions and images of one person are
//! positives), the ID classifier has one class per training pid (`max pid + 1`).
//!
//! **Captions.** SDM and ID read the clean captions. (IRRA's dataset masks the caption tensor
//! in place while building the MLM copy, so the released code actually feeds the masked ids
//! to SDM/ID as well; gadms follows the method as described.)
//!
//! **Files.** The model file (a checkpoint's `model.safetensors`, the run's
//! `gadms_model.safetensors`) holds CLIP, the decoder and `classifier.weight` [C, EMBED] /
//! `classifier.bias` [C] (native names); Adam's state includes the classifier's moments.

use super::accum::global;
use super::gadms::mtp_loss;
use super::irra_accum::{IrraAccum, finetune_step_accum};
use super::optim::{Adam, Group, adam_config};
use super::recipe::{ModelParts, Recipe, StepOut};
use super::run_dir::{self, GADMS_MODEL_FILE, LAST_FILE};
use super::sdm::ctx_row;
use anyhow::{Context, Result, bail};
use dfdx::nn::tensor_collection::TensorCollection;
use dfdx::prelude::*;
use gadms_ckpt::Array;
use gadms_data::loader::Batch;
use gadms_nn::loss::{SDM_EPS, SDM_LOGIT_SCALE, sdm_loss};
use gadms_nn::{
    Clip, GaDms, IdClassifier, IdGrads, MtpDecoder, MtpTiny, TextTower, Tiny, VisionTower,
    cls_token, tape_with, text_features_trimmed,
};
use serde::Serialize;
use std::path::{Path, PathBuf};

/// The fine-tuned model: GA-DMS (CLIP + MTP decoder) at Tiny size on device `D`.
pub type FtModel<D> = GaDms<Tiny<f32, D>, MtpTiny<f32, D>>;
/// The ID classifier at Tiny's joint width.
pub type FtClassifier<D> = IdClassifier<32, f32, D>;

/// IRRA's parameter groups (`solver/build.py build_optimizer`; docs/method.md §6.2):
/// `cross` → 5× lr; `bias` → 2× lr, no weight decay; `classifier` / `mlm_head` → 5× lr.
pub fn irra_group(name: &str) -> Group {
    let mut g = Group::PLAIN;
    if name.contains("cross") {
        g.lr_mult = 5.0;
    }
    if name.contains("bias") {
        g.lr_mult = 2.0;
        g.wd_mult = 0.0;
    }
    if name.contains("classifier") || name.contains("mlm_head") {
        g.lr_mult = 5.0;
    }
    g
}

/// Loss weights of the step.
#[derive(Clone, Copy, Debug)]
pub struct FtWeights {
    /// ID loss weight.
    pub id: f64,
    /// MLM loss weight.
    pub mlm: f64,
}

/// What one fine-tuning step did.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct FtReport {
    /// Total loss (before the update).
    pub loss: f32,
    /// SDM.
    pub loss_sdm: f32,
    /// ID.
    pub loss_id: f32,
    /// MLM.
    pub loss_mlm: f32,
    /// Masked tokens of the MLM branch.
    pub masked_tokens: usize,
    /// Global gradient norm of the model's tensors.
    pub grad_norm: f32,
    /// False when the loss was not finite: nothing was updated.
    pub applied: bool,
}

/// The ID classifier of a preset, behind a size-free interface (build, save, load).
pub trait IdHead<D: Device<f32>>: Sized {
    /// A fresh classifier over `classes` identities (IRRA's init from `dev`'s RNG).
    fn create(dev: &D, classes: usize) -> Self;
    /// Number of classes `C`.
    fn num_classes(&self) -> usize;
    /// Feature width `EMBED`.
    fn width(&self) -> usize;
    /// (`classifier.weight` [C·EMBED] row-major, `classifier.bias` [C]).
    fn to_vecs(&self) -> (Vec<f32>, Vec<f32>);
    /// Overwrites the weights; the lengths must be `C·EMBED` and `C`.
    fn copy_from_vecs(&mut self, weight: &[f32], bias: &[f32]);
}

impl<const EMBED: usize, D: Device<f32>> IdHead<D> for IdClassifier<EMBED, f32, D> {
    fn create(dev: &D, classes: usize) -> Self {
        IdClassifier::new(dev, classes)
    }
    fn num_classes(&self) -> usize {
        self.classes()
    }
    fn width(&self) -> usize {
        EMBED
    }
    fn to_vecs(&self) -> (Vec<f32>, Vec<f32>) {
        (self.weight.as_vec(), self.bias.as_vec())
    }
    fn copy_from_vecs(&mut self, weight: &[f32], bias: &[f32]) {
        self.weight.copy_from(weight);
        self.bias.copy_from(bias);
    }
}

/// A GA-DMS model that can take an IRRA fine-tuning step. Implemented for every
/// `GaDms<Clip<VisionTower, TextTower>, MtpDecoder>` whose decoder width is the joint
/// embedding width (both presets).
pub trait IrraStep<D: Device<f32>>: TensorCollection<f32, D> {
    /// The ID classifier over the joint embedding `[C, EMBED]`.
    type Classifier: IdHead<D>;

    /// One IRRA fine-tuning step (module docs) on a batch from a loader with
    /// `Masking::Mlm`: images `B × [3, H, W]` at the preset's size, `batch.pids` the person
    /// ids (each `< classifier.num_classes()`).
    ///
    /// # Panics
    /// On a batch that does not fit the model (image size, missing MLM copy) or a pid outside
    /// the classifier.
    fn finetune_step(
        &mut self,
        classifier: &mut Self::Classifier,
        opt: &mut Adam,
        batch: &Batch,
        w: FtWeights,
        lr: f32,
    ) -> FtReport;
}

/// [`IrraStep::finetune_step`] as a function.
pub fn finetune_step<D: Device<f32>, M: IrraStep<D>>(
    model: &mut M,
    classifier: &mut M::Classifier,
    opt: &mut Adam,
    batch: &Batch,
    w: FtWeights,
    lr: f32,
) -> FtReport {
    model.finetune_step(classifier, opt, batch, w, lr)
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
> IrraStep<D>
    for GaDms<
        Clip<
            VisionTower<IMG_H, IMG_W, PATCH, PATCH_DIM, SEQ, VW, VH, VHD, VF, VL, EMBED, f32, D>,
            TextTower<VOCAB, CTX, TW, TH, THD, TF, TL, EMBED, f32, D>,
        >,
        MtpDecoder<EMBED, MH, MHD, MF, ML, VOCAB, f32, D>,
    >
{
    type Classifier = IdClassifier<EMBED, f32, D>;

    fn finetune_step(
        &mut self,
        classifier: &mut Self::Classifier,
        opt: &mut Adam,
        batch: &Batch,
        w: FtWeights,
        lr: f32,
    ) -> FtReport {
        let b = batch.len();
        assert!(b > 0, "finetune_step: empty batch");
        assert_eq!(batch.ids_info.len(), b, "finetune_step: no MLM captions");
        let text = &self.clip.text;
        let dev = text.text_projection.device().clone();
        let pids: Vec<usize> = batch.pids.iter().map(|&p| p as usize).collect();
        let images = dev.tensor_from_vec(
            batch.images.clone(),
            (b, Const::<3>, Const::<IMG_H>, Const::<IMG_W>),
        );
        let grads = self.alloc_grads();
        // Image tokens carry the parameter gradients into the MLM branch; the CLS row (a
        // second use, empty tape, same id) feeds SDM and ID.
        let tokens = self.clip.visual.forward(images.traced(grads), None);
        let v = cls_token(tokens.with_empty_tape());
        let clean: Vec<[u32; CTX]> = batch.ids_clean.iter().map(ctx_row).collect();
        let t = text_features_trimmed(text, &dev, &clean, tape_with(&dev, Gradients::leaky()));
        let l_sdm = sdm_loss(
            v.with_empty_tape(),
            t.with_empty_tape(),
            &pids,
            SDM_LOGIT_SCALE,
            SDM_EPS,
        );
        let (l_id, id_grads) = classifier.loss(v, t, &pids);
        let (l_mlm, masked) = mtp_loss(text, &self.mtp, batch, tokens, None);
        let (s, i, m) = (l_sdm.as_vec()[0], l_id.as_vec()[0], l_mlm.as_vec()[0]);
        let loss = l_sdm + l_id * (w.id as f32) + l_mlm * (w.mlm as f32);
        // The total for the log from the parts already read (the device's operations in order).
        let total = s + i * (w.id as f32) + m * (w.mlm as f32);
        let mut report = FtReport {
            loss: total,
            loss_sdm: s,
            loss_id: i,
            loss_mlm: m,
            masked_tokens: masked,
            grad_norm: 0.0,
            applied: false,
        };
        if !total.is_finite() {
            return report;
        }
        let grads = loss.backward();
        report.grad_norm = update(self, classifier, opt, &grads, &id_grads, w.id as f32, lr);
        report.applied = true;
        report
    }
}

/// The Adam update of a fine-tuning step at learning rate `lr`, IRRA's groups: the model from
/// `grads` (its tape's store), then the classifier from its host gradients `id` times the ID
/// weight `w_id`. Returns the model's global gradient norm.
pub(crate) fn update<D: Device<f32>, M: TensorCollection<f32, D>, C: IdHead<D>>(
    model: &mut M,
    classifier: &mut C,
    opt: &mut Adam,
    grads: &Gradients<f32, D>,
    id: &IdGrads,
    w_id: f32,
    lr: f32,
) -> f32 {
    let stats = opt.update(model, grads, lr, &irra_group);
    let (mut weight, mut bias) = classifier.to_vecs();
    let g: Vec<f32> = id.weight.iter().map(|x| x * w_id).collect();
    let name = "classifier.weight";
    opt.update_slice(name, &mut weight, &g, lr, irra_group(name));
    let g: Vec<f32> = id.bias.iter().map(|x| x * w_id).collect();
    let name = "classifier.bias";
    opt.update_slice(name, &mut bias, &g, lr, irra_group(name));
    classifier.copy_from_vecs(&weight, &bias);
    stats.grad_norm
}

/// Saves model + classifier as a native full-model file (`classifier.weight` [C, EMBED],
/// `classifier.bias` [C] beside the model's tensors), atomically.
pub fn save_model<D: Device<f32>, M: IrraStep<D>>(
    model: &M,
    classifier: &M::Classifier,
    path: &Path,
) -> Result<()> {
    let (c, e) = (classifier.num_classes(), classifier.width());
    let (weight, bias) = classifier.to_vecs();
    let extra = vec![
        ("classifier.weight", Array::new(vec![c, e], weight)),
        ("classifier.bias", Array::new(vec![c], bias)),
    ];
    run_dir::save_model_file(model, extra, path)
}

/// Loads what [`save_model`] wrote (strict; the class count and width must match).
pub fn load_model<D: Device<f32>, M: IrraStep<D>>(
    model: &mut M,
    classifier: &mut M::Classifier,
    path: &Path,
) -> Result<()> {
    let mut rest = run_dir::load_model_file(model, path)?;
    let w = rest.tensors.remove("classifier.weight");
    let b = rest.tensors.remove("classifier.bias");
    let (Some(w), Some(b)) = (w, b) else {
        bail!("{}: no classifier.weight / classifier.bias", path.display());
    };
    if !rest.tensors.is_empty() {
        let keys: Vec<&String> = rest.tensors.keys().collect();
        bail!("{}: unexpected tensors {keys:?}", path.display());
    }
    let (c, e) = (classifier.num_classes(), classifier.width());
    if w.shape != vec![c, e] || b.shape != vec![c] {
        bail!(
            "{}: classifier.weight is {:?}, the run has {c} classes (expected [{c}, {e}])",
            path.display(),
            w.shape
        );
    }
    classifier.copy_from_vecs(&w.data, &b.data);
    Ok(())
}

/// The ID classes of a training set: its distinct person ids in ascending order, class `c`
/// being the `c`-th. Dense whatever the ids are (a pid of 10^18 is class 0 of a one-id set);
/// IRRA's pids are contiguous from 0, where class = pid.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Classes {
    pids: Vec<u64>,
}

impl Classes {
    /// The distinct pids of every sample of `ds` (but those it leaves out, `--skip-corrupt`).
    pub fn of(ds: &gadms_data::manifest::Dataset) -> Result<Classes> {
        let mut pids = Vec::new();
        for (si, shard) in ds.shards.iter().enumerate() {
            for i in (0..shard.len()).filter(|&i| !ds.is_skipped_at(si, i)) {
                pids.push(shard.pid(i)?);
            }
        }
        Ok(Classes::from_pids(pids))
    }

    /// The classes of these person ids (repeats allowed).
    pub fn from_pids(pids: impl IntoIterator<Item = u64>) -> Classes {
        let mut pids: Vec<u64> = pids.into_iter().collect();
        pids.sort_unstable();
        pids.dedup();
        Classes { pids }
    }

    /// Number of classes `C`.
    pub fn len(&self) -> usize {
        self.pids.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.pids.is_empty()
    }

    /// Whether class = pid (the pids are exactly `0..C`).
    pub fn is_identity(&self) -> bool {
        self.pids
            .last()
            .is_none_or(|&m| m as usize + 1 == self.pids.len())
    }

    /// The class of `pid`, if it is one of the training ids.
    pub fn class(&self, pid: u64) -> Option<usize> {
        self.pids.binary_search(&pid).ok()
    }
}

/// The IRRA recipe: model `M` (CLIP + decoder), its ID classifier, Adam with IRRA's groups,
/// and the loss weights.
pub struct IrraRecipe<D: Device<f32>, M: IrraStep<D>> {
    /// The model.
    pub model: Box<M>,
    /// The ID classifier `[C, EMBED]`.
    pub classifier: M::Classifier,
    /// Adam over the model and the classifier.
    pub opt: Adam,
    /// ID and MLM weights.
    pub weights: FtWeights,
    /// Person id → class of the classifier.
    pub classes: Classes,
    /// Micro-batches per step (`--accum-steps`; 1: [`IrraStep::finetune_step`], else
    /// [`super::irra_accum::finetune_step_accum`]).
    pub accum_steps: usize,
}

impl<D: Device<f32>, M: IrraStep<D>> IrraRecipe<D, M> {
    /// Trains `model` with a new classifier over the training ids `classes` (drawn from
    /// `dev`'s RNG: after the model's initialisation, as IRRA builds them) and a fresh
    /// optimiser.
    pub fn new(model: M, dev: &D, classes: Classes, weights: FtWeights) -> Self {
        let model = Box::new(model);
        let classifier = M::Classifier::create(dev, classes.len());
        IrraRecipe {
            model,
            classifier,
            opt: Adam::new(adam_config()),
            weights,
            classes,
            accum_steps: 1,
        }
    }
}

impl<D: Device<f32>, M: IrraAccum<D> + ModelParts<D>> Recipe<D> for IrraRecipe<D, M> {
    type Clip = M::Clip;

    fn clip(&self) -> &M::Clip {
        self.model.clip()
    }

    fn step(&mut self, mut batch: Batch, lr: f64) -> Result<StepOut> {
        // SDM compares ids for equality, ID needs classes: the dense class of every pid.
        for p in batch.pids.iter_mut() {
            let class = self
                .classes
                .class(*p)
                .context("a training pid outside the class map")?;
            *p = class as u64;
        }
        let (model, cl, opt) = (self.model.as_mut(), &mut self.classifier, &mut self.opt);
        let r = match self.accum_steps {
            k if global::two_pass(k) => {
                finetune_step_accum(model, cl, opt, &batch, self.weights, lr as f32, k)?
            }
            _ => model.finetune_step(cl, opt, &batch, self.weights, lr as f32),
        };
        debug_assert_eq!(r.applied, r.loss.is_finite());
        Ok(StepOut {
            loss: r.loss,
            parts: vec![("sdm", r.loss_sdm), ("id", r.loss_id), ("mlm", r.loss_mlm)],
            masked_tokens: Some(r.masked_tokens),
            grad_norm: Some(r.grad_norm),
        })
    }

    fn save_checkpoint(&self, dir: &Path) -> Result<()> {
        save_model(
            self.model.as_ref(),
            &self.classifier,
            &dir.join(run_dir::MODEL_FILE),
        )?;
        self.opt.save(&dir.join(run_dir::ADAM_FILE))
    }

    fn load_checkpoint(&mut self, dir: &Path) -> Result<()> {
        let path = dir.join(run_dir::MODEL_FILE);
        load_model(self.model.as_mut(), &mut self.classifier, &path)?;
        self.opt = Adam::load(&dir.join(run_dir::ADAM_FILE))?;
        Ok(())
    }

    fn save_final(&self, out: &Path) -> Result<Vec<PathBuf>> {
        let last = run_dir::save_clip(self.clip(), &out.join(LAST_FILE))?;
        let full = out.join(GADMS_MODEL_FILE);
        save_model(self.model.as_ref(), &self.classifier, &full)?;
        Ok(vec![last, full])
    }
}
