//! `gadms finetune`: IRRA fine-tuning of a pretrained model on a CUHK-PEDES-style split
//! (shared/ga-dms-method.md §5.4 and §6.2: "fine-tuning with the IRRA").
//!
//! # The step ([`finetune_step`])
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
//! **Schedule**: 5 warm-up epochs from 0.1× then cosine to 0, once per epoch
//! (`--schedule-per-step` to step it per iteration). **Defaults**: 60 epochs, batch 64,
//! lr 1e-5 (IRRA's).
//!
//! **Identities.** SDM uses the person ids (several captions and images of one person are
//! positives), the ID classifier has one class per training pid (`max pid + 1`).
//!
//! **Captions.** SDM and ID read the clean captions. (IRRA's dataset masks the caption tensor
//! in place while building the MLM copy, so the released code actually feeds the masked ids
//! to SDM/ID as well; gadms follows the method as described.)
//!
//! **Evaluation** every `--eval-every` epochs (default 1, IRRA's per-epoch evaluation) on each
//! `--eval-data` set; `best.safetensors` follows the first set's R1. IRRA selects on the
//! **test** split; the log says so when the evaluation set is a test split.
//!
//! **Checkpoints** as `pretrain` ([`crate::checkpoint`]): the model file holds CLIP, the
//! decoder and `classifier.weight` [C, EMBED] / `classifier.bias` [C] (native names); Adam's
//! state includes the classifier's moments.
//!
//! **Presets** as `pretrain`: `--preset tiny` (default, `[3, 64, 32]` images, EMBED 32) or
//! `vit-b-16` (`[3, 384, 128]`, EMBED 512; needs `--data` packed at 384×128). The run is
//! generic over the preset's GA-DMS model type `M` ([`FtModel`] = `GaDmsTiny`, or
//! `GaDmsViTB16`) and its classifier `IdClassifier<EMBED>`
//! ([`TrainModel`](crate::train_model::TrainModel)), chosen once per command.

use crate::checkpoint;
use crate::device::{BuildDevice, DeviceChoice};
use crate::eval::{self, EvalSet, RankMetrics as Metrics};
use crate::gadms_step::{GADMS_MAGIC, GaDms};
use crate::optim::{Adam, Group};
use crate::preset::Preset;
use crate::pretrain::{
    BEST_FILE, EvalLine, Jsonl, LAST_FILE, NamedEval, RunArgs, adam_config, data, de_preset,
    decoder_name, last_eval, metrics_from_json, print_table, resolve_args, save, schedule,
    ser_preset, write_file,
};
use crate::train_model::{IdHead, TrainModel};
use anyhow::{Context, Result, bail};
use argh::FromArgs;
use dfdx::prelude::*;
use gadms_ckpt::bridge::{map_to_module, module_to_map};
use gadms_ckpt::tensors::{read_file, write_file as write_tensors};
use gadms_ckpt::{Array, TensorMap};
use gadms_data::augment::AugmentConfig;
use gadms_data::loader::{Batch, Loader, LoaderConfig, Masking};
use gadms_nn::{HasClipSpec, IdClassifier, MtpTiny, Tiny};
use indicatif::{ProgressBar, ProgressStyle};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
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
    /// image-caption pairs per step (default 64, IRRA)
    #[argh(option, default = "64")]
    pub batch_size: usize,
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
    /// run directory (default runs/finetune-PRESET)
    #[argh(option, default = "PathBuf::from(DEFAULT_OUT)")]
    pub out: PathBuf,
    /// write a resumable checkpoint every N optimiser steps (default 0: only at the end)
    #[argh(option, default = "0")]
    pub save_every: usize,
    /// evaluate every N epochs (default 1)
    #[argh(option, default = "1")]
    pub eval_every: usize,
    /// continue the run in RUN_DIR from its latest checkpoint (give no other flags)
    #[argh(option)]
    pub resume: Option<PathBuf>,
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
    /// test hook: make the batch of this step (1-based) non-finite
    #[argh(option, hidden_help)]
    #[serde(skip)]
    pub debug_nan_at_step: Option<u64>,
    /// test hook: sleep this many milliseconds after every step
    #[argh(option, hidden_help, default = "0")]
    #[serde(skip)]
    pub debug_step_delay_ms: u64,
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
            lr: 1e-5,
            warmup_epochs: None,
            schedule_per_step: false,
            id_weight: 1.0,
            mlm_weight: 1.0,
            seed: 0,
            device: DeviceChoice::Cpu,
            out: PathBuf::from(DEFAULT_OUT),
            save_every: 0,
            eval_every: 1,
            resume: None,
            aug_flip: 0.5,
            aug_pad: 1,
            aug_erase: 0.0,
            preset: Preset::Tiny,
            debug_nan_at_step: None,
            debug_step_delay_ms: 0,
        }
    }
}

impl FinetuneArgs {
    /// Checks the flags; returns the warm-up length.
    pub fn validate(&self) -> Result<usize> {
        data::check_default_data(self.preset, self.data.is_some())?;
        if self.init.is_none() && self.resume.is_none() {
            bail!(
                "finetune starts from pretrained weights: pass --init RUN_DIR|WEIGHTS (e.g. a \
                 `gadms pretrain` run directory)"
            );
        }
        if let Some(p) = &self.init {
            crate::init::resolve(p)?;
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

/// The fine-tuned model: GA-DMS (CLIP + MTP decoder) at Tiny size on device `D`.
pub type FtModel<D> = GaDms<Tiny<f32, D>, MtpTiny<f32, D>>;
/// The ID classifier at Tiny's joint width.
pub type FtClassifier<D> = IdClassifier<32, f32, D>;

/// IRRA's parameter groups (`solver/build.py build_optimizer`; shared/ga-dms-method.md §6.2):
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

/// Loss weights of [`finetune_step`].
#[derive(Clone, Copy, Debug)]
pub struct FtWeights {
    /// ID loss weight.
    pub id: f64,
    /// MLM loss weight.
    pub mlm: f64,
}

/// What one [`finetune_step`] did.
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

/// One IRRA fine-tuning step (module docs) on a batch from a loader with [`Masking::Mlm`]:
/// images `B × [3, H, W]` at the preset's size, `batch.pids` the person ids (each
/// `< classifier.classes()`). `M` is the preset's GA-DMS model ([`FtModel`] for Tiny), the
/// classifier `[C, EMBED]` at its joint width. The work is [`TrainModel::finetune_step`].
///
/// # Panics
/// On a batch that does not fit the model (image size, missing MLM copy) or a pid outside the
/// classifier.
pub fn finetune_step<D: Device<f32>, M: TrainModel<D>>(
    model: &mut M,
    classifier: &mut M::Classifier,
    opt: &mut Adam,
    batch: &Batch,
    w: FtWeights,
    lr: f32,
) -> FtReport {
    model.finetune_step(classifier, opt, batch, w, lr)
}

/// Saves model + classifier (native names, `gadms.magic = gadms-model`; `classifier.weight`
/// [C, EMBED], `classifier.bias` [C]), atomically.
pub fn save_model<D: Device<f32>, M: TrainModel<D>>(
    model: &M,
    classifier: &M::Classifier,
    path: &Path,
) -> Result<()> {
    let mut map = module_to_map(model);
    let (c, e) = (classifier.num_classes(), classifier.width());
    let (weight, bias) = classifier.to_vecs();
    map.insert("classifier.weight", Array::new(vec![c, e], weight));
    map.insert("classifier.bias", Array::new(vec![c], bias));
    let meta = BTreeMap::from([
        ("gadms.magic".to_string(), GADMS_MAGIC.to_string()),
        ("gadms.layout".to_string(), "native".to_string()),
        ("gadms.classes".to_string(), c.to_string()),
    ]);
    write_tensors(path, &map, &meta).with_context(|| format!("saving {}", path.display()))
}

/// Loads what [`save_model`] wrote (strict; the class count and width must match).
pub fn load_model<D: Device<f32>, M: TrainModel<D>>(
    model: &mut M,
    classifier: &mut M::Classifier,
    path: &Path,
) -> Result<()> {
    let mut map: TensorMap =
        read_file(path).with_context(|| format!("reading {}", path.display()))?;
    let w = map.tensors.remove("classifier.weight");
    let b = map.tensors.remove("classifier.bias");
    let (Some(w), Some(b)) = (w, b) else {
        bail!("{}: no classifier.weight / classifier.bias", path.display());
    };
    let (c, e) = (classifier.num_classes(), classifier.width());
    if w.shape != vec![c, e] || b.shape != vec![c] {
        bail!(
            "{}: classifier.weight is {:?}, the run has {c} classes (expected [{c}, {e}])",
            path.display(),
            w.shape
        );
    }
    map_to_module(&map, model).with_context(|| format!("loading {}", path.display()))?;
    classifier.copy_from_vecs(&w.data, &b.data);
    Ok(())
}

/// Number of ID classes of a training set: `max pid + 1` (IRRA's pids are contiguous from 0).
pub fn num_classes(ds: &gadms_data::manifest::Dataset) -> Result<usize> {
    let mut max = 0u64;
    for shard in &ds.shards {
        for i in 0..shard.len() {
            max = max.max(shard.pid(i)?);
        }
    }
    usize::try_from(max + 1).context("pid too large")
}

/// One JSON line per step.
#[derive(Serialize)]
struct StepLine {
    step: usize,
    epoch: usize,
    loss: f32,
    loss_sdm: f32,
    loss_id: f32,
    loss_mlm: f32,
    masked_tokens: usize,
    grad_norm: f32,
    lr: f64,
    pairs_per_s: f64,
}

impl RunArgs for FinetuneArgs {
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

/// Runs the command: resolves `--resume` (which fixes the preset), checks the flags, then
/// dispatches once on (`--preset`, `--device`) to [`run_on`].
pub fn run(given: FinetuneArgs) -> Result<()> {
    let (mut a, resume) = resolve_args(given, "finetune")?;
    let warmup = a.validate()?;
    if resume.is_none() && a.out == Path::new(DEFAULT_OUT) {
        a.out = PathBuf::from(format!("runs/finetune-{}", a.preset.spec().name));
    }
    crate::dispatch!(a.device, run_preset(a, resume, warmup))
}

/// [`run`] on the device type `D`: picks the preset's model type.
fn run_preset<D: BuildDevice>(
    a: FinetuneArgs,
    resume: Option<(PathBuf, checkpoint::TrainState)>,
    warmup: usize,
) -> Result<()> {
    crate::with_train_model!(a.preset, D, run_on(a, resume, warmup))
}

/// [`run`] on the device type `D` (`--device`) with the preset's GA-DMS model type `M`
/// (`--preset`: [`FtModel`] = `GaDmsTiny`, or `GaDmsViTB16`).
fn run_on<D: BuildDevice, M: TrainModel<D>>(
    a: FinetuneArgs,
    resume: Option<(PathBuf, checkpoint::TrainState)>,
    warmup: usize,
) -> Result<()> {
    let t0 = Instant::now();
    let spec = M::Clip::SPEC;
    println!(
        "gadms finetune: IRRA recipe on the '{}' preset: SDM (person ids) + {}*ID + {}*MLM \
         (15%, MTP decoder), Adam lr {:.1e} with IRRA groups (cross/classifier/mlm_head 5x, \
         bias 2x without decay), {} warm-up epochs then cosine, {} epochs of batch {}.",
        spec.name, a.id_weight, a.mlm_weight, a.lr, warmup, a.epochs, a.batch_size
    );
    std::fs::create_dir_all(&a.out)
        .with_context(|| format!("cannot create run directory {}", a.out.display()))?;

    // Data.
    let (train_dir, eval_dirs) = match &a.data {
        None => {
            let d = data::prepare_default(&a.out.join("data"))?;
            println!(
                "data: the embedded synthetic CUHK-PEDES-form set, packed into {} and {}",
                d.train.display(),
                d.test.display()
            );
            let e = if a.eval_data.is_empty() {
                vec![d.test]
            } else {
                a.eval_data.clone()
            };
            (d.train, e)
        }
        Some(dir) => (dir.clone(), a.eval_data.clone()),
    };
    let train = Arc::new(data::open_packed_for(&train_dir, "--data", &spec)?);
    let evals = eval_dirs
        .iter()
        .map(|d| NamedEval::open(d, "--eval-data", &spec))
        .collect::<Result<Vec<_>>>()?;
    let classes = num_classes(&train)?;
    let m = &train.manifest;
    println!(
        "train: {} ids / {} images / {} captions ({}); ID classifier over {classes} classes",
        m.identities,
        m.images,
        m.samples,
        train.dir.display()
    );
    if classes as u64 != m.identities {
        println!(
            "note: the training pids are not contiguous from 0 ({} ids, max pid {}); the \
             classifier has max pid + 1 = {classes} classes",
            m.identities,
            classes - 1
        );
    }
    if evals.is_empty() {
        println!("note: no --eval-data: no evaluation during training");
    }
    for e in &evals {
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
    let augment = AugmentConfig {
        flip_p: a.aug_flip,
        pad: a.aug_pad,
        erase_p: a.aug_erase,
        ..AugmentConfig::default()
    };
    let mut loader = Loader::new(
        train.clone(),
        LoaderConfig {
            batch_size: a.batch_size,
            seed: a.seed,
            workers: crate::pretrain::LOADER_WORKERS,
            prefetch: 4,
            shuffle: true,
            shuffle_buffer: 10_000,
            train: true,
            augment: augment.clone(),
            masking: Masking::Mlm,
            drop_last: true,
            image_size: None,
            debug_panic_at_step: None,
        },
    )
    .context("building the loader")?;
    let spe = loader.batches_per_epoch() as usize;
    if spe == 0 {
        bail!(
            "--batch-size {} is larger than the {} training captions: no full batch",
            a.batch_size,
            train.len()
        );
    }
    let config = serde_json::json!({
        "args": &a,
        "preset": spec.name,
        "image_hw": [spec.vision.image_h, spec.vision.image_w],
        "decoder": decoder_name(a.preset),
        "warmup_epochs_used": warmup,
        "steps_per_epoch": spe,
        "loss": "sdm(person ids) + id_weight * id + mlm_weight * mlm(15%)",
        "classes": classes,
        "optimizer": adam_config(),
        "param_groups": "IRRA: cross 5x lr; bias 2x lr, wd 0; classifier/mlm_head 5x lr",
        "schedule": if a.schedule_per_step { "per-step" } else { "per-epoch" },
        "augment": augment,
        "model": gadms_ckpt::clip_io::open_clip_model_cfg(&spec),
        "train": { "dir": train_dir, "ids": m.identities, "captions": m.samples },
        "evals": evals.iter().map(|e| serde_json::json!({"dir": e.dir, "split": e.split})).collect::<Vec<_>>(),
    });
    write_file(
        &a.out.join("config.json"),
        &serde_json::to_vec_pretty(&config)?,
    )?;
    let metrics_path = a.out.join("metrics.jsonl");
    let (mut jsonl, old_lines) = Jsonl::open(&metrics_path, resume.as_ref().map(|(_, s)| s.step))?;

    // Model: random init, --init (CLIP + decoder when present), or the checkpoint.
    let dev = D::create(a.device, a.seed)?;
    let mut model = <M as dfdx::nn::BuildModule<D, f32>>::build(&dev);
    let mut classifier = M::Classifier::create(&dev, classes);
    let mut opt = Adam::new(adam_config());
    let (mut step, mut best, mut evaluated_epoch) = (0usize, None::<(f64, usize)>, 0usize);
    match &resume {
        None => {
            let init = a.init.as_ref().expect("validated");
            let (clip, mtp) = model.parts_mut();
            let r = crate::init::load_init(clip, &spec, Some(mtp), init)?;
            println!(
                "{}{}",
                r.summary,
                if r.decoder {
                    ""
                } else {
                    " (the MTP decoder starts from its initialisation)"
                }
            );
        }
        Some((dir, st)) => {
            println!(
                "resuming {} from {} (step {}, loader at epoch {} batch {})",
                a.out.display(),
                dir.display(),
                st.step,
                st.loader.epoch + 1,
                st.loader.next_batch
            );
            load_model(
                &mut model,
                &mut classifier,
                &dir.join(checkpoint::MODEL_FILE),
            )?;
            opt = Adam::load(&dir.join(checkpoint::ADAM_FILE))?;
            loader.resume(st.loader)?;
            step = st.step as usize;
            best = st.best_r1;
            evaluated_epoch = st.evaluated_epoch;
        }
    }
    let evaluate =
        |model: &M::Clip, set: &EvalSet| -> Result<Metrics> { eval::evaluate(model, set, 128) };
    let several = evals.len() > 1;
    let mut before: Vec<Option<Metrics>> = vec![None; evals.len()];
    for (i, e) in evals.iter().enumerate() {
        before[i] = if resume.is_none() {
            let m = evaluate(model.clip(), &e.set)?;
            jsonl.write(&EvalLine {
                step: 0,
                epoch: 0,
                split: &e.split,
                data: &e.dir,
                m,
            })?;
            Some(m)
        } else {
            old_lines
                .iter()
                .find(|l| l["step"] == 0 && l["data"] == e.dir.as_str() && l.get("r1").is_some())
                .and_then(metrics_from_json)
        };
    }
    if let (Some(Some(m)), None) = (before.first(), &resume) {
        println!("before fine-tuning (--init weights):");
        print_table(&[(evals[0].label(several).as_str(), m)]);
    }

    let pb = ProgressBar::new((spe * a.epochs) as u64);
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
    let weights = FtWeights {
        id: a.id_weight,
        mlm: a.mlm_weight,
    };
    let mut last_ckpt: Option<PathBuf> = resume.as_ref().map(|(d, _)| d.clone());
    let start = loader.state();
    let train_start = Instant::now();
    let (mut data_wait, mut compute) = (0.0f64, 0.0f64);
    let state_of = |step: usize, epoch: usize, loader: &Loader, best, evaluated_epoch| {
        Ok::<_, anyhow::Error>(checkpoint::TrainState {
            command: "finetune".into(),
            step: step as u64,
            epoch,
            loader: loader.state(),
            seed: a.seed,
            rng: checkpoint::RNG_NOTE.into(),
            best_r1: best,
            evaluated_epoch,
            args: serde_json::to_value(&a)?,
        })
    };
    for epoch in (start.epoch as usize + 1)..=a.epochs {
        let first = if epoch == start.epoch as usize + 1 {
            start.next_batch as usize
        } else {
            0
        };
        let (mut sum, mut n) = (0.0f64, 0usize);
        for _ in first..spe {
            let lr =
                a.lr * schedule::lr_factor_at(step, spe, a.epochs, warmup, a.schedule_per_step);
            let t = Instant::now();
            let mut batch = loader.next_batch().context("loading a batch")?;
            let waited = t.elapsed().as_secs_f64();
            if a.debug_nan_at_step == Some(step as u64 + 1) {
                batch.images.iter_mut().for_each(|x| *x = f32::NAN);
            }
            let tc = Instant::now();
            let r = finetune_step(
                &mut model,
                &mut classifier,
                &mut opt,
                &batch,
                weights,
                lr as f32,
            );
            if !r.applied {
                pb.finish_and_clear();
                let good = match &last_ckpt {
                    Some(d) => format!("the last good checkpoint {} is intact", d.display()),
                    None => "no checkpoint was written yet (--save-every N)".into(),
                };
                bail!(
                    "step {} (epoch {epoch}): the loss became {} (SDM {}, ID {}, MLM {}); the run \
                     stopped without applying this step; {good}; try a smaller --lr",
                    step + 1,
                    r.loss,
                    r.loss_sdm,
                    r.loss_id,
                    r.loss_mlm
                );
            }
            step += 1;
            data_wait += waited;
            compute += tc.elapsed().as_secs_f64();
            sum += r.loss as f64;
            n += 1;
            let rate = batch.len() as f64 / t.elapsed().as_secs_f64();
            jsonl.write(&StepLine {
                step,
                epoch,
                loss: r.loss,
                loss_sdm: r.loss_sdm,
                loss_id: r.loss_id,
                loss_mlm: r.loss_mlm,
                masked_tokens: r.masked_tokens,
                grad_norm: r.grad_norm,
                lr,
                pairs_per_s: rate,
            })?;
            pb.set_position(step as u64);
            pb.set_message(format!(
                "epoch {epoch}/{} loss {:.3} (sdm {:.3} id {:.3} mlm {:.3}) lr {lr:.2e} {rate:.0} pairs/s data {:.0}%",
                a.epochs,
                r.loss,
                r.loss_sdm,
                r.loss_id,
                r.loss_mlm,
                100.0 * data_wait / (data_wait + compute).max(1e-9)
            ));
            if a.debug_step_delay_ms > 0 {
                std::thread::sleep(std::time::Duration::from_millis(a.debug_step_delay_ms));
            }
            let epoch_end = loader.state().next_batch == 0;
            if epoch_end {
                let mut line = format!(
                    "epoch {epoch:>3}/{}  mean loss {:.4}  lr {lr:.2e}",
                    a.epochs,
                    sum / n.max(1) as f64
                );
                if (a.eval_every > 0 && epoch % a.eval_every == 0) || epoch == a.epochs {
                    for (i, e) in evals.iter().enumerate() {
                        let m = evaluate(model.clip(), &e.set)?;
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
                            save(model.clip(), &a.out.join(BEST_FILE))?;
                            line += " (best)";
                        }
                    }
                    evaluated_epoch = epoch;
                }
                say(line);
            }
            let last = epoch == a.epochs && epoch_end;
            if a.save_every > 0 && step % a.save_every == 0 && !last {
                let st = state_of(step, epoch, &loader, best, evaluated_epoch)?;
                let d = checkpoint::save(&a.out, &st, |d| {
                    save_model(&model, &classifier, &d.join(checkpoint::MODEL_FILE))?;
                    opt.save(&d.join(checkpoint::ADAM_FILE))
                })?;
                save(model.clip(), &a.out.join(LAST_FILE))?;
                last_ckpt = Some(d);
            }
        }
    }
    pb.finish_and_clear();
    let train_secs = train_start.elapsed().as_secs_f64();
    if a.save_every > 0 {
        let st = state_of(step, a.epochs, &loader, best, evaluated_epoch)?;
        checkpoint::save(&a.out, &st, |d| {
            save_model(&model, &classifier, &d.join(checkpoint::MODEL_FILE))?;
            opt.save(&d.join(checkpoint::ADAM_FILE))
        })?;
    }
    save(model.clip(), &a.out.join(LAST_FILE))?;
    let full = a.out.join(crate::pretrain::GADMS_MODEL_FILE);
    save_model(&model, &classifier, &full)?;
    println!(
        "fine-tuned {step} steps in {train_secs:.1} s (data wait {data_wait:.1} s, compute \
         {compute:.1} s)"
    );
    let mut rows: Vec<(String, Metrics)> = Vec::new();
    for (i, e) in evals.iter().enumerate() {
        if let Some(b) = before[i] {
            rows.push((format!("{}, before", e.label(several)), b));
        }
        if let Some(af) = last_eval(&metrics_path, &e.dir, a.epochs) {
            rows.push((format!("{}, after", e.label(several)), af));
        }
    }
    if !rows.is_empty() {
        println!("text->image retrieval:");
        let r: Vec<(&str, &Metrics)> = rows.iter().map(|(n, m)| (n.as_str(), m)).collect();
        print_table(&r);
    }
    if let Some((r, e)) = best {
        println!(
            "best R1 {r:.2} on {} at epoch {e}: {}",
            evals[0].dir,
            a.out.join(BEST_FILE).display()
        );
    }
    println!(
        "wrote {} , {} , {} , {}  (total {:.1} s)",
        a.out.join("config.json").display(),
        metrics_path.display(),
        a.out.join(LAST_FILE).display(),
        full.display(),
        t0.elapsed().as_secs_f64()
    );
    Ok(())
}
