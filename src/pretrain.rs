//! `gadms pretrain`: trains the `Tiny` CLIP towers from random init with the SDM loss on the
//! embedded synthetic person dataset ([`synth`]), with a zero-shot text→image retrieval
//! evaluation ([`eval`]) on held-out identities before and after training.
//!
//! This is the **stand-in for GA-DMS pretraining**: it trains the two towers with the SDM loss
//! only (shared/ga-dms-method.md §5.1). GASS, the dual (noise/informative) masking and the
//! MTP decoder come in a later stage.
//!
//! Choices that differ from the paper, and why:
//! * **pids = identities.** GA-DMS pretraining gives every caption its own pid (q = I). Here the
//!   synthetic identity is the pid: the other captions and images of the same person in a
//!   batch become positives, which gives more signal per step on a small dataset.
//! * **lr 1e-3.** The paper's 1e-5 (code) / 1e-4 (paper) fine-tunes a *pretrained* ViT-B/16; a
//!   64-wide random-init model needs a much larger step (3e-3 and 1e-2 were measured to stay
//!   stuck at the collapsed, uniform-similarity solution). Adam ε = 1e-3, β = (0.9, 0.999)
//!   and coupled L2 weight decay 4e-5 are the paper's (§6.1).
//! * **Warm-up** `min(5, epochs/4)` epochs from 0.1× (see [`schedule::default_warmup`]): the
//!   default 8-epoch run warms up for 2; from 20 epochs on it is the paper's 5. Then cosine to
//!   0, stepped once per epoch, as the paper.
//! * **Batch 32, 1000 training identities, 8 epochs** (1000 steps). From random init the towers
//!   first collapse to identical features (loss ≈ 27.9 at batch 64) and need a few hundred
//!   steps to leave that plateau, so the number of steps matters more than the number of
//!   negatives per batch. With 300 training identities the towers memorise them (train R1 72
//!   vs test R1 30 after 30 epochs); 1000 identities generalise to the held-out ones (test R1
//!   about 40–50, chance 1).
//! * The text tower runs on the first `max EOS + 1` positions of each batch
//!   ([`text_features_trimmed`]), which is exact under the causal mask and 3× faster.

pub mod eval;
pub mod schedule;
pub mod synth;

use crate::preset::{Dev, Preset};
use anyhow::{Context, Result, bail};
use argh::FromArgs;
use dfdx::nn::ZeroGrads;
use dfdx::optim::{Adam, AdamConfig, Optimizer, WeightDecay};
use dfdx::prelude::*;
use eval::Metrics;
use gadms_data::{ClipTokenizer, TokenIds};
use gadms_nn::loss::{SDM_EPS, SDM_LOGIT_SCALE, sdm_loss};
use gadms_nn::{HasClipSpec, Tiny, cls_token};
use indicatif::{ProgressBar, ProgressStyle};
use rand::SeedableRng;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use serde::Serialize;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;
use synth::{IMG_H, IMG_LEN, IMG_W, SynthConfig, SynthData};

/// Pretrain the Tiny CLIP towers from random init with the SDM loss on an embedded synthetic
/// person dataset (no downloads, no files), evaluating zero-shot text→image retrieval on
/// held-out identities before and after. This is the stand-in for GA-DMS pretraining: it
/// trains the two towers with the SDM loss only; GASS, dual masking and the MTP decoder come
/// later. Writes RUN_DIR/config.json, metrics.jsonl and last.safetensors.
#[derive(FromArgs, Debug, Clone, Serialize)]
#[argh(subcommand, name = "pretrain")]
pub struct PretrainArgs {
    /// training epochs (default 8)
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
    /// seed of the dataset, the initialisation and the shuffling (default 0)
    #[argh(option, default = "0")]
    pub seed: u64,
    /// run directory (default runs/pretrain-tiny); existing files in it are overwritten
    #[argh(option, default = "PathBuf::from(DEFAULT_OUT)")]
    pub out: PathBuf,
    /// also save RUN_DIR/last.safetensors every N epochs (default 0: only at the end)
    #[argh(option, default = "0")]
    pub save_every: usize,
    /// evaluate on the test split every N epochs (default 0: only before and after)
    #[argh(option, default = "0")]
    pub eval_every: usize,
    /// model preset; only tiny is supported on the synthetic data (default tiny)
    #[argh(option, default = "Preset::Tiny")]
    #[serde(serialize_with = "ser_preset")]
    pub preset: Preset,
    /// training identities (default 1000; 2 images and 4 captions each)
    #[argh(option, default = "DEFAULT_TRAIN_IDS")]
    pub train_ids: usize,
    /// held-out test identities (default 100; 2 images and 4 captions each)
    #[argh(option, default = "DEFAULT_TEST_IDS")]
    pub test_ids: usize,
}

fn ser_preset<S: serde::Serializer>(p: &Preset, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(p.spec().name)
}

/// Default `--epochs`.
pub const DEFAULT_EPOCHS: usize = 8;
/// Default `--batch-size`.
pub const DEFAULT_BATCH: usize = 32;
/// Default `--lr`.
pub const DEFAULT_LR: f64 = 1e-3;
/// Default `--out`.
pub const DEFAULT_OUT: &str = "runs/pretrain-tiny";
/// Default `--train-ids`.
pub const DEFAULT_TRAIN_IDS: usize = 1000;
/// Default `--test-ids`.
pub const DEFAULT_TEST_IDS: usize = 100;

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
            save_every: 0,
            eval_every: 0,
            preset: Preset::Tiny,
            train_ids: DEFAULT_TRAIN_IDS,
            test_ids: DEFAULT_TEST_IDS,
        }
    }
}

/// Most identities (train + test) accepted, to keep the in-memory dataset small
/// (10,000 identities are about 0.5 GB of images).
pub const MAX_IDS: usize = 10_000;

impl PretrainArgs {
    /// Checks the flags; returns the warm-up length to use.
    pub fn validate(&self) -> Result<usize> {
        if self.preset != Preset::Tiny {
            bail!(
                "--preset {}: pretraining on the embedded synthetic data supports only the tiny \
                 preset. ViT-B/16 costs about 1.7 s per image-caption pair forward+backward on a \
                 CPU (shared/dfdx-notes.md §3), so even this toy run would take hours; real \
                 pretraining data comes with `gadms pack` and needs a GPU build.",
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
        if self.train_ids < 2 {
            bail!("--train-ids must be at least 2");
        }
        if self.test_ids < 2 {
            bail!("--test-ids must be at least 2");
        }
        if self.train_ids + self.test_ids > MAX_IDS {
            bail!(
                "--train-ids + --test-ids = {} is more than the {MAX_IDS} identities the synthetic \
                 dataset allows",
                self.train_ids + self.test_ids
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
    let pos = text
        .positional_embedding
        .retaped::<T>()
        .slice((0..len, ..))
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
}

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

/// Runs the command.
pub fn run(a: PretrainArgs) -> Result<()> {
    let warmup = a.validate()?;
    let t0 = Instant::now();
    let spec = Model::SPEC;
    println!(
        "gadms pretrain: the stand-in for GA-DMS pretraining. It trains the two towers of the \
         '{}' preset from random init with the SDM loss only (GASS, dual masking and the MTP \
         decoder come later), on an embedded synthetic person dataset.",
        spec.name
    );

    // Run directory.
    std::fs::create_dir_all(&a.out)
        .with_context(|| format!("cannot create run directory {}", a.out.display()))?;

    // Data.
    let tok = ClipTokenizer::new().context("building the CLIP tokenizer")?;
    let data = SynthData::generate(
        &SynthConfig {
            seed: a.seed,
            train_ids: a.train_ids,
            test_ids: a.test_ids,
            ..SynthConfig::default()
        },
        &tok,
    )?;
    let (train, test) = (&data.train, &data.test);
    println!(
        "data: train {} ids / {} images / {} captions; test {} ids / {} images / {} captions \
         (disjoint identities; generated in {:.1} s)",
        train.persons.len(),
        train.n_images(),
        train.n_captions(),
        test.persons.len(),
        test.n_images(),
        test.n_captions(),
        t0.elapsed().as_secs_f64()
    );
    println!("  e.g. \"{}\"", train.captions[0]);

    // A last batch of a single pair is skipped (it has no negatives).
    let n_pairs = train.n_captions();
    let steps_per_epoch = n_pairs / a.batch_size + usize::from(n_pairs % a.batch_size >= 2);
    let config = serde_json::json!({
        "args": &a,
        "warmup_epochs_used": warmup,
        "steps_per_epoch": steps_per_epoch,
        "loss": "sdm",
        "logit_scale": SDM_LOGIT_SCALE,
        "pids": "identity",
        "optimizer": { "name": "adam", "betas": [0.9, 0.999], "eps": 1e-3, "weight_decay_l2": 4e-5 },
        "schedule": "per-epoch linear warm-up from 0.1x, then cosine to 0",
        "model": gadms_ckpt::clip_io::open_clip_model_cfg(&spec),
        "data": {
            "kind": "embedded synthetic persons",
            "image_hw": [IMG_H, IMG_W],
            "train": { "ids": train.persons.len(), "images": train.n_images(), "captions": train.n_captions() },
            "test": { "ids": test.persons.len(), "images": test.n_images(), "captions": test.n_captions() },
        },
    });
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
    let mut tr = Trainer::new(&dev, a.lr);
    let train_probe = train.head(a.test_ids.min(a.train_ids));

    let before = eval::evaluate(&tr.model, test, 128).map_err(anyhow::Error::msg)?;
    jsonl.write(&EvalLine {
        step: 0,
        epoch: 0,
        split: "test",
        m: before,
    })?;
    println!("zero-shot text->image retrieval before training (random init):");
    print_table(&[("test", &before)]);

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
    let mut rng = StdRng::seed_from_u64(a.seed ^ 0x5eed_5eed);
    let mut order: Vec<usize> = (0..train.n_captions()).collect();
    let (mut step, mut pairs_done) = (0usize, 0usize);
    let train_start = Instant::now();
    for epoch in 1..=a.epochs {
        let lr = a.lr * schedule::lr_factor(epoch - 1, a.epochs, warmup);
        tr.set_lr(lr);
        order.shuffle(&mut rng);
        let (mut sum, mut n) = (0.0f64, 0usize);
        let epoch_start = Instant::now();
        for chunk in order.chunks(a.batch_size) {
            if chunk.len() < 2 {
                continue; // a 1-pair batch has no negatives
            }
            let t = Instant::now();
            let mut px = Vec::with_capacity(chunk.len() * IMG_LEN);
            for &k in chunk {
                px.extend_from_slice(train.image(train.caption_image[k]));
            }
            let rows: Vec<TokenIds> = chunk.iter().map(|&k| train.tokens[k]).collect();
            let pids: Vec<usize> = chunk.iter().map(|&k| train.caption_pid[k]).collect();
            let loss = tr.step(px, &rows, &pids)?;
            step += 1;
            pairs_done += chunk.len();
            let rate = chunk.len() as f64 / t.elapsed().as_secs_f64();
            sum += loss as f64;
            n += 1;
            jsonl.write(&StepLine {
                step,
                epoch,
                loss,
                loss_sdm: loss,
                lr,
                pairs_per_s: rate,
            })?;
            pb.set_position(step as u64);
            pb.set_message(format!(
                "epoch {epoch}/{} loss {loss:.4} lr {lr:.2e} {rate:.0} pairs/s",
                a.epochs
            ));
        }
        let mean = sum / n.max(1) as f64;
        let secs = epoch_start.elapsed().as_secs_f64();
        let mut line = format!(
            "epoch {epoch:>3}/{}  mean loss {mean:.4}  lr {lr:.2e}  {:.0} pairs/s",
            a.epochs,
            train.n_captions() as f64 / secs
        );
        if a.eval_every > 0 && epoch % a.eval_every == 0 && epoch != a.epochs {
            let m = eval::evaluate(&tr.model, test, 128).map_err(anyhow::Error::msg)?;
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
            save(&tr.model, &a.out)?;
        }
    }
    pb.finish_and_clear();
    let train_secs = train_start.elapsed().as_secs_f64();

    let after = eval::evaluate(&tr.model, test, 128).map_err(anyhow::Error::msg)?;
    jsonl.write(&EvalLine {
        step,
        epoch: a.epochs,
        split: "test",
        m: after,
    })?;
    let fit = eval::evaluate(&tr.model, &train_probe, 128).map_err(anyhow::Error::msg)?;
    jsonl.write(&EvalLine {
        step,
        epoch: a.epochs,
        split: "train-subset",
        m: fit,
    })?;
    let ckpt = save(&tr.model, &a.out)?;

    println!(
        "trained {step} steps ({} epochs) in {train_secs:.1} s ({:.0} pairs/s)",
        a.epochs,
        pairs_done as f64 / train_secs
    );
    println!(
        "zero-shot text->image retrieval (queries = captions, gallery = images, relevant = same identity):"
    );
    print_table(&[
        ("test, before", &before),
        ("test, after", &after),
        ("train subset, after", &fit),
    ]);
    println!(
        "test chance R1 = {:.2} (random ranking); R1 {:.2} -> {:.2}",
        after.chance_r1, before.r1, after.r1
    );
    println!(
        "wrote {} , {} , {}  (total {:.1} s)",
        a.out.join("config.json").display(),
        metrics_path.display(),
        ckpt.display(),
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
