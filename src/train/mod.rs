//! Training: one loop, [`run`], for the three ways of training (recipes,
//! [`recipe::Recipe`]): [`sdm`] (CLIP towers, SDM loss), [`gadms`] (GASS → dual masks → SDM +
//! β·MTP) and [`irra`] (fine-tuning: SDM + ID + MLM). A recipe supplies its step and its
//! files; the loop does the rest: learning rate, batches, NaN stop, the log, evaluation and
//! `best.safetensors`, checkpoints and resume ([`run_dir`]).
//!
//! Beside it: the optimiser ([`optim`]), the learning-rate schedule ([`schedule`]), `--init`
//! ([`init`]), the run's data ([`data`]), the per-preset model types ([`model`]) and exact
//! gradient accumulation over micro-batches ([`accum`], `--accum-steps`).

pub mod accum;
pub mod data;
pub mod gadms;
pub mod gadms_accum;
pub mod init;
pub mod irra;
pub mod irra_accum;
pub mod log;
pub mod model;
pub mod optim;
pub mod recipe;
pub mod run_dir;
pub mod schedule;
pub mod score_report;
pub mod sdm;
pub mod tensorboard;

pub use model::TrainModel;
pub use recipe::{Recipe, StepOut};

use crate::eval::{EvalSet, RankMetrics};
use anyhow::{Context, Result, bail};
use data::NamedEval;
use dfdx::prelude::Device;
use gadms_data::loader::Loader;
use log::{StepReport, TrainLog};
use run_dir::{BEST_FILE, EvalLine, Jsonl, LAST_FILE, TrainState};
use std::path::{Path, PathBuf};
use std::time::Instant;

/// What the loop needs to know of a run besides its recipe and its data.
pub struct Plan {
    /// `pretrain` or `finetune` (recorded in checkpoints; `--resume` checks it).
    pub command: &'static str,
    /// The command's arguments as JSON (recorded in checkpoints for `--resume`).
    pub args: serde_json::Value,
    /// The run directory.
    pub out: PathBuf,
    /// The run's seed.
    pub seed: u64,
    /// Epochs.
    pub epochs: usize,
    /// Peak learning rate.
    pub lr: f64,
    /// Warm-up epochs.
    pub warmup: usize,
    /// Step the schedule after every optimiser step instead of once per epoch.
    pub schedule_per_step: bool,
    /// Evaluate every N epochs (0: only after the last).
    pub eval_every: usize,
    /// Checkpoint every N steps (0: none, not even at the end).
    pub save_every: usize,
    /// A text log line every N steps when stdout is not a terminal, and in train.log (0: none).
    pub log_every: usize,
    /// Where the starting weights came from, for the first table (`random init`, …).
    pub start: &'static str,
    /// When the command started (for the total time).
    pub t0: Instant,
}

/// A subset of the training identities, evaluated after training to measure the fit.
pub struct Probe {
    /// The set.
    pub set: EvalSet,
    /// The training data's directory.
    pub dir: String,
}

/// Where training stands.
#[derive(Clone, Copy, Debug, Default)]
struct Progress {
    step: usize,
    /// Best R1 on the first evaluation set and its epoch.
    best: Option<(f64, usize)>,
    evaluated_epoch: usize,
}

/// Trains `recipe` on `loader` for `plan.epochs` epochs, from the checkpoint `resume` when
/// given; evaluates on `evals` before training, at epoch ends and after; writes
/// `metrics.jsonl`, `best.safetensors`, checkpoints and the recipe's final files into
/// `plan.out`.
pub fn run<D: Device<f32>, C>(
    plan: &Plan,
    recipe: &mut dyn Recipe<D, Clip = C>,
    mut loader: Loader,
    evals: &[NamedEval],
    probe: Option<&Probe>,
    resume: Option<(PathBuf, TrainState)>,
) -> Result<()>
where
    C: gadms_nn::ClipInference<f32, D> + gadms_nn::HasClipSpec,
    C: dfdx::nn::tensor_collection::TensorCollection<f32, D>,
{
    // In a data-parallel job every rank trains; rank 0 alone evaluates, logs and writes.
    let root = crate::dist::is_root();
    let metrics_path = plan.out.join(run_dir::METRICS_FILE);
    let (jsonl, old_lines) = match root {
        true => {
            let (j, l) = Jsonl::open(&metrics_path, resume.as_ref().map(|(_, s)| s.step))?;
            (Some(j), l)
        }
        false => (None, Vec::new()),
    };
    let mut at = Progress::default();
    let steps_per_epoch = loader.batches_per_epoch() as usize;
    if let Some((dir, st)) = &resume {
        let skipped = run_dir::Skipped::of(loader.dataset());
        run_dir::check_skipped(st.skipped.as_ref(), skipped.as_ref())
            .and_then(|_| run_dir::check_state(st, steps_per_epoch, plan.epochs, plan.seed))
            .with_context(|| format!("--resume {}", plan.out.display()))?;
        recipe.load_checkpoint(dir)?;
        loader
            .resume(st.loader)
            .with_context(|| format!("resuming the loader from {}", dir.display()))?;
        at = Progress {
            step: st.step as usize,
            best: st.best_r1,
            evaluated_epoch: st.evaluated_epoch,
        };
    }
    let total = steps_per_epoch * plan.epochs;
    let mut log = match jsonl {
        Some(j) => Some(TrainLog::open(
            &plan.out,
            j,
            plan.log_every,
            at.step,
            total,
        )?),
        None => None,
    };
    let before = match (&mut log, &resume) {
        (None, _) => Vec::new(),
        (Some(log), None) => evaluate_before(plan, recipe.clip(), evals, log)?,
        (Some(_), Some(_)) => before_from_log(evals, &old_lines),
    };

    let mut last_ckpt: Option<PathBuf> = resume.map(|(d, _)| d);
    let mut clock = Clock::default();
    let start = loader.state();
    for epoch in (start.epoch as usize + 1)..=plan.epochs {
        let first = if epoch == start.epoch as usize + 1 {
            start.next_batch as usize
        } else {
            0
        };
        let (mut loss_sum, mut steps, mut pairs) = (0.0f64, 0usize, 0usize);
        let epoch_start = Instant::now();
        for _ in first..steps_per_epoch {
            let lr = plan.lr
                * schedule::lr_factor_at(
                    at.step,
                    steps_per_epoch,
                    plan.epochs,
                    plan.warmup,
                    plan.schedule_per_step,
                );
            let t = Instant::now();
            let mut batch = loader.next_batch().context("loading a batch")?;
            let waited = t.elapsed().as_secs_f64();
            test_hooks::poison(&mut batch.images, at.step + 1);
            let b = batch.len();
            let world = crate::dist::world().size();
            let tc = Instant::now();
            let out = recipe.step(batch, lr)?;
            if !out.loss.is_finite() {
                log.iter().for_each(TrainLog::clear);
                bail!(
                    "{}",
                    nan_message(&out, at.step + 1, epoch, last_ckpt.as_deref())
                );
            }
            let computed = tc.elapsed().as_secs_f64();
            at.step += 1;
            pairs += b * world;
            loss_sum += out.loss as f64;
            steps += 1;
            clock.data_wait += waited;
            clock.compute += computed;
            let Some(log) = log.as_mut() else {
                // Another rank than 0 of a data-parallel job: only the step.
                test_hooks::delay();
                continue;
            };
            log.step(&StepReport {
                step: at.step,
                epoch: (epoch, plan.epochs),
                out: &out,
                lr,
                pairs: b * world,
                data_s: waited,
                step_s: computed,
            })?;
            test_hooks::delay();
            let epoch_end = loader.state().next_batch == 0;
            if epoch_end {
                // Evaluation (every --eval-every epochs and after the last) and
                // best.safetensors, before any checkpoint of this step.
                clock.pairs += pairs;
                let mut line = format!(
                    "epoch {epoch:>3}/{}  mean loss {:.4}  lr {lr:.2e}  {:.0} pairs/s",
                    plan.epochs,
                    loss_sum / steps.max(1) as f64,
                    pairs as f64 / epoch_start.elapsed().as_secs_f64()
                );
                let due =
                    (plan.eval_every > 0 && epoch % plan.eval_every == 0) || epoch == plan.epochs;
                if due {
                    line += &evaluate_epoch(plan, recipe.clip(), evals, log, &mut at, epoch)?;
                }
                log.say(&line)?;
            }
            let last = epoch == plan.epochs && epoch_end;
            if plan.save_every > 0 && at.step % plan.save_every == 0 && !last {
                let state = train_state(plan, &at, epoch, &loader)?;
                let dir =
                    run_dir::save_checkpoint(&plan.out, &state, |d| recipe.save_checkpoint(d))?;
                run_dir::save_clip(recipe.clip(), &plan.out.join(LAST_FILE))?;
                last_ckpt = Some(dir);
            }
        }
    }
    let Some(mut log) = log else {
        return test_hooks::save_rank(|d| recipe.save_checkpoint(d));
    };
    log.finish()?;
    let train_secs = clock.start.elapsed().as_secs_f64();

    // After training: the last epoch's evaluation (read back from metrics.jsonl: a resumed
    // run may have evaluated before its restart), and the fit on the training identities.
    let after: Vec<Option<RankMetrics>> = evals
        .iter()
        .map(|e| run_dir::last_eval(&metrics_path, &e.dir, plan.epochs))
        .collect();
    let fit = match probe {
        Some(p) => {
            let m = evaluate(recipe.clip(), &p.set)?;
            log.eval(&EvalLine {
                step: at.step,
                epoch: plan.epochs,
                split: "train-subset",
                data: &p.dir,
                m,
            })?;
            Some(m)
        }
        None => None,
    };
    // The final state, as a checkpoint too (so --init RUN_DIR and --resume find it).
    if plan.save_every > 0 {
        let state = train_state(plan, &at, plan.epochs, &loader)?;
        run_dir::save_checkpoint(&plan.out, &state, |d| recipe.save_checkpoint(d))?;
    }
    let files = recipe.save_final(&plan.out)?;

    let world = crate::dist::world();
    let collectives = match world.size() {
        1 => String::new(),
        n => format!(
            "; {n} processes, of the compute {:.1} s in collectives on rank 0",
            crate::dist::grads::comm_seconds()
        ),
    };
    println!(
        "trained {} steps ({} epochs) in {train_secs:.1} s ({:.0} pairs/s; data wait {:.1} s, \
         compute {:.1} s{collectives})",
        at.step,
        plan.epochs,
        clock.pairs as f64 / train_secs,
        clock.data_wait,
        clock.compute
    );
    if let Some(report) = recipe.report(loader.dataset())? {
        println!("{report}");
    }
    print_summary(plan, evals, &before, &after, fit, at.best);
    let files: Vec<String> = files.iter().map(|p| p.display().to_string()).collect();
    println!(
        "wrote {} , {} , {}  (total {:.1} s)",
        plan.out.join(run_dir::CONFIG_FILE).display(),
        metrics_path.display(),
        files.join(" , "),
        plan.t0.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Retrieval metrics of `model` on `set` (text→image, [`crate::eval::evaluate`]).
fn evaluate<D: Device<f32>, C: gadms_nn::ClipInference<f32, D>>(
    model: &C,
    set: &EvalSet,
) -> Result<RankMetrics> {
    crate::eval::evaluate(model, set, 128)
}

/// Evaluates every set before training, logs the results and prints the first one.
fn evaluate_before<D: Device<f32>, C: gadms_nn::ClipInference<f32, D>>(
    plan: &Plan,
    model: &C,
    evals: &[NamedEval],
    log: &mut TrainLog,
) -> Result<Vec<Option<RankMetrics>>> {
    let mut before = Vec::new();
    for e in evals {
        let m = evaluate(model, &e.set)?;
        log.eval(&EvalLine {
            step: 0,
            epoch: 0,
            split: &e.split,
            data: &e.dir,
            m,
        })?;
        before.push(Some(m));
    }
    if let Some(Some(m)) = before.first() {
        println!("text->image retrieval before training ({}):", plan.start);
        print_table(&[(evals[0].label(evals.len() > 1).as_str(), m)]);
    }
    Ok(before)
}

/// The before-training results of a resumed run, read back from its log.
fn before_from_log(
    evals: &[NamedEval],
    old_lines: &[serde_json::Value],
) -> Vec<Option<RankMetrics>> {
    evals
        .iter()
        .map(|e| {
            old_lines
                .iter()
                .find(|l| l["step"] == 0 && l["data"] == e.dir.as_str() && l.get("r1").is_some())
                .and_then(run_dir::metrics_from_json)
        })
        .collect()
}

/// The end-of-epoch evaluation: logs every set, keeps `best.safetensors` by the first set's
/// R1; returns the text for the epoch line.
fn evaluate_epoch<D: Device<f32>, C>(
    plan: &Plan,
    model: &C,
    evals: &[NamedEval],
    log: &mut TrainLog,
    at: &mut Progress,
    epoch: usize,
) -> Result<String>
where
    C: gadms_nn::ClipInference<f32, D> + gadms_nn::HasClipSpec,
    C: dfdx::nn::tensor_collection::TensorCollection<f32, D>,
{
    let mut line = String::new();
    for (i, e) in evals.iter().enumerate() {
        let m = evaluate(model, &e.set)?;
        log.eval(&EvalLine {
            step: at.step,
            epoch,
            split: &e.split,
            data: &e.dir,
            m,
        })?;
        line += &format!(
            "  {} R1 {:.2} mAP {:.2}",
            e.label(evals.len() > 1),
            m.r1,
            m.map
        );
        if i == 0 && at.best.is_none_or(|(r, _)| m.r1 > r) {
            at.best = Some((m.r1, epoch));
            run_dir::save_clip(model, &plan.out.join(BEST_FILE))?;
            line += " (best)";
        }
    }
    at.evaluated_epoch = epoch;
    Ok(line)
}

/// The checkpoint state after `at.step` steps in `epoch`.
fn train_state(plan: &Plan, at: &Progress, epoch: usize, loader: &Loader) -> Result<TrainState> {
    Ok(TrainState {
        command: plan.command.into(),
        step: at.step as u64,
        epoch,
        loader: loader.state(),
        seed: plan.seed,
        rng: run_dir::RNG_NOTE.into(),
        best_r1: at.best,
        evaluated_epoch: at.evaluated_epoch,
        args: plan.args.clone(),
        skipped: run_dir::Skipped::of(loader.dataset()),
    })
}

/// Why the run stopped at a non-finite loss, and what is left of it.
fn nan_message(out: &StepOut, step: usize, epoch: usize, last_ckpt: Option<&Path>) -> String {
    let good = match last_ckpt {
        Some(d) => format!(
            "the last good checkpoint {} is intact (to continue, start a new run with a smaller \
             --lr and --init {}; --resume would reach this step again)",
            d.display(),
            d.join(run_dir::MODEL_FILE).display()
        ),
        None => "no checkpoint was written yet (--save-every N writes one every N steps)".into(),
    };
    let parts: Vec<String> = out
        .parts
        .iter()
        .map(|(n, v)| format!("{} {v}", n.to_uppercase()))
        .collect();
    format!(
        "step {step} (epoch {epoch}): the loss became {} ({}); the run stopped without applying \
         this step; {good}; try a smaller --lr",
        out.loss,
        parts.join(", ")
    )
}

/// Time spent waiting for data and computing, and pairs trained, since training started.
struct Clock {
    start: Instant,
    data_wait: f64,
    compute: f64,
    pairs: usize,
}

impl Default for Clock {
    fn default() -> Self {
        Clock {
            start: Instant::now(),
            data_wait: 0.0,
            compute: 0.0,
            pairs: 0,
        }
    }
}

/// The before/after table, the chance level and the best epoch.
fn print_summary(
    plan: &Plan,
    evals: &[NamedEval],
    before: &[Option<RankMetrics>],
    after: &[Option<RankMetrics>],
    fit: Option<RankMetrics>,
    best: Option<(f64, usize)>,
) {
    let several = evals.len() > 1;
    let mut rows: Vec<(String, RankMetrics)> = Vec::new();
    for (i, e) in evals.iter().enumerate() {
        if let Some(b) = before[i] {
            rows.push((format!("{}, before", e.label(several)), b));
        }
        if let Some(a) = after[i] {
            rows.push((format!("{}, after", e.label(several)), a));
        }
    }
    if let Some(f) = fit {
        rows.push(("train subset, after".into(), f));
    }
    if !rows.is_empty() {
        println!(
            "text->image retrieval (queries = captions, gallery = images, relevant = same identity):"
        );
        let rows: Vec<(&str, &RankMetrics)> = rows.iter().map(|(n, m)| (n.as_str(), m)).collect();
        print_table(&rows);
    }
    if let (Some(Some(b)), Some(Some(a))) = (before.first(), after.first()) {
        println!(
            "{} chance R1 = {:.2} (random ranking); R1 {:.2} -> {:.2}",
            evals[0].split, a.chance_r1, b.r1, a.r1
        );
    }
    if let Some((r, e)) = best {
        println!(
            "best R1 {r:.2} on {} at epoch {e}: {}",
            evals[0].dir,
            plan.out.join(BEST_FILE).display()
        );
    }
}

/// Prints retrieval metrics as a table, one row per `(name, metrics)`.
pub fn print_table(rows: &[(&str, &RankMetrics)]) {
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

/// Test hooks, read from the environment by debug (test) builds only; a release build has
/// none and nothing of them reaches a run's saved arguments.
///
/// * `GADMS_TEST_NAN_AT_STEP=N`: the images of step N (1-based) become NaN.
/// * `GADMS_TEST_STEP_DELAY_MS=N`: sleep N ms after every step (so a test can kill a run).
/// * `GADMS_TEST_RANK_DIR=DIR`: the other ranks of a data-parallel job save their final state.
mod test_hooks {
    #[cfg(debug_assertions)]
    fn var(name: &str) -> Option<u64> {
        std::env::var(name).ok()?.parse().ok()
    }

    /// Makes `images` NaN at the step `GADMS_TEST_NAN_AT_STEP` names.
    pub fn poison(images: &mut [f32], step: usize) {
        #[cfg(debug_assertions)]
        if var("GADMS_TEST_NAN_AT_STEP") == Some(step as u64) {
            images.iter_mut().for_each(|x| *x = f32::NAN);
        }
        let _ = (images, step);
    }

    /// With `GADMS_TEST_RANK_DIR=DIR`, a rank other than 0 of a data-parallel job writes its
    /// final state with `save` into `DIR/rankR` (so a test can compare it with rank 0's).
    pub fn save_rank(
        save: impl FnOnce(&std::path::Path) -> anyhow::Result<()>,
    ) -> anyhow::Result<()> {
        #[cfg(debug_assertions)]
        if let Some(dir) = std::env::var_os("GADMS_TEST_RANK_DIR") {
            let dir =
                std::path::Path::new(&dir).join(format!("rank{}", crate::dist::world().rank()));
            std::fs::create_dir_all(&dir)?;
            return save(&dir);
        }
        let _ = save;
        Ok(())
    }

    /// Sleeps `GADMS_TEST_STEP_DELAY_MS` milliseconds.
    pub fn delay() {
        #[cfg(debug_assertions)]
        if let Some(ms) = var("GADMS_TEST_STEP_DELAY_MS") {
            std::thread::sleep(std::time::Duration::from_millis(ms));
        }
    }
}
