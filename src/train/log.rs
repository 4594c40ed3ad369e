//! What a run tells its user while it trains, in the forms people already read:
//!
//! * `metrics.jsonl` (one JSON line per step and per evaluation; [`run_dir::Jsonl`]), with the
//!   data-wait and step times of every step (`data_s`, `step_s`);
//! * a progress bar with an ETA when stdout is a terminal, and otherwise (nohup, SLURM, a pipe)
//!   one line every `--log-every` steps in open_clip's spirit: epoch, steps and samples done
//!   (%), the mean loss since the last line, data and batch time, pairs/s, lr and ETA;
//! * `RUN_DIR/train.log`: the same lines and the epoch lines, appended (also on resume);
//! * TensorBoard event files under `RUN_DIR/tensorboard` ([`super::tensorboard`]): every loss
//!   part, lr and pairs/s per step, R1/R5/R10/mAP/mINP per evaluation set.

use super::recipe::StepOut;
use super::run_dir::{EvalLine, Jsonl};
use super::tensorboard::EventWriter;
use anyhow::{Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;
use std::collections::BTreeMap;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// The text log of a run.
pub const TRAIN_LOG: &str = "train.log";
/// `--log-every` default: steps between two log lines.
pub const DEFAULT_LOG_EVERY: usize = 50;

/// [`DEFAULT_LOG_EVERY`], for serde (runs recorded before the flag existed).
pub fn default_log_every() -> usize {
    DEFAULT_LOG_EVERY
}

/// One step line of metrics.jsonl: `step`, `epoch`, `loss`, `loss_NAME` for each part, `lr`,
/// `pairs_per_s`, `data_s` (waiting for the batch), `step_s` (the step itself), and
/// `masked_tokens` / `grad_norm` when the recipe reports them.
#[derive(Serialize)]
struct StepLine<'a> {
    step: usize,
    epoch: usize,
    loss: f32,
    #[serde(flatten)]
    parts: &'a BTreeMap<String, f32>,
    lr: f64,
    pairs_per_s: f64,
    data_s: f64,
    step_s: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    masked_tokens: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    grad_norm: Option<f32>,
}

/// What the loop reports of one step.
pub struct StepReport<'a> {
    /// Steps done, this one included.
    pub step: usize,
    /// Its epoch (1-based) and the run's epochs.
    pub epoch: (usize, usize),
    /// The recipe's result.
    pub out: &'a StepOut,
    /// Learning rate used.
    pub lr: f64,
    /// Pairs in the batch.
    pub pairs: usize,
    /// Seconds waiting for the batch, and computing the step.
    pub data_s: f64,
    /// Seconds of the step itself.
    pub step_s: f64,
}

/// Sums since the last text line.
#[derive(Default)]
struct Window {
    steps: usize,
    loss: f64,
    data_s: f64,
    step_s: f64,
    pairs: usize,
}

/// The run's log: metrics.jsonl, train.log, TensorBoard and the terminal.
pub struct TrainLog {
    jsonl: Jsonl,
    text: File,
    tb: EventWriter,
    pb: ProgressBar,
    every: usize,
    total_steps: usize,
    first_step: usize,
    started: Instant,
    window: Window,
}

impl TrainLog {
    /// Opens the logs of the run in `out`: `jsonl` (already opened and cut back on resume),
    /// `train.log` (appended), a new TensorBoard event file, and the progress bar at
    /// `first_step` of `total_steps`. A text line every `every` steps when the bar is hidden
    /// (0: none).
    pub fn open(
        out: &Path,
        jsonl: Jsonl,
        every: usize,
        first_step: usize,
        total_steps: usize,
    ) -> Result<Self> {
        let path = out.join(TRAIN_LOG);
        let text = File::options()
            .create(true)
            .append(true)
            .open(&path)
            .with_context(|| format!("cannot open {}", path.display()))?;
        Ok(TrainLog {
            jsonl,
            text,
            tb: EventWriter::create(out)?,
            pb: progress_bar(total_steps, first_step),
            every,
            total_steps,
            first_step,
            started: Instant::now(),
            window: Window::default(),
        })
    }

    /// The TensorBoard event file.
    pub fn event_file(&self) -> PathBuf {
        self.tb.path().to_path_buf()
    }

    /// Logs a step: metrics.jsonl, TensorBoard, the bar, and every `every` steps a text line.
    pub fn step(&mut self, r: &StepReport) -> Result<()> {
        let rate = r.pairs as f64 / (r.data_s + r.step_s).max(1e-9);
        let parts: BTreeMap<String, f32> = r
            .out
            .parts
            .iter()
            .map(|(n, v)| (format!("loss_{n}"), *v))
            .collect();
        let (epoch, epochs) = r.epoch;
        self.jsonl.write(&StepLine {
            step: r.step,
            epoch,
            loss: r.out.loss,
            parts: &parts,
            lr: r.lr,
            pairs_per_s: rate,
            data_s: r.data_s,
            step_s: r.step_s,
            masked_tokens: r.out.masked_tokens,
            grad_norm: r.out.grad_norm,
        })?;
        let mut tb: Vec<(String, f64)> = vec![("train/loss".into(), r.out.loss as f64)];
        tb.extend(parts.iter().map(|(n, v)| (format!("train/{n}"), *v as f64)));
        tb.push(("train/lr".into(), r.lr));
        tb.push(("train/pairs_per_s".into(), rate));
        let tb: Vec<(&str, f64)> = tb.iter().map(|(n, v)| (n.as_str(), *v)).collect();
        self.tb.scalars(r.step, &tb)?;

        let w = &mut self.window;
        w.steps += 1;
        w.loss += r.out.loss as f64;
        w.data_s += r.data_s;
        w.step_s += r.step_s;
        w.pairs += r.pairs;
        self.pb.set_position(r.step as u64);
        self.pb
            .set_message(bar_message(r.out, epoch, epochs, r.lr, rate));
        if self.every > 0 && r.step.is_multiple_of(self.every) {
            let line = self.window_line(r, epoch, epochs);
            self.window = Window::default();
            if self.pb.is_hidden() {
                println!("{line}");
            }
            self.append(&line)?;
        }
        Ok(())
    }

    /// `epoch 3/24  step 120/1032 (11.6%)  samples 3840/33024  loss 3.2100  data 0.002 s
    /// batch 0.130 s  246 pairs/s  lr 1.00e-03  ETA 2m05s` (loss, times and rate: means over
    /// the steps since the last line).
    fn window_line(&self, r: &StepReport, epoch: usize, epochs: usize) -> String {
        let w = &self.window;
        let n = w.steps.max(1) as f64;
        let done = r.step - self.first_step;
        let eta = self.started.elapsed().as_secs_f64() / done.max(1) as f64
            * (self.total_steps.saturating_sub(r.step)) as f64;
        format!(
            "epoch {epoch}/{epochs}  step {}/{} ({:.1}%)  samples {}/{}  loss {:.4}  data {:.3} s  \
             batch {:.3} s  {:.0} pairs/s  lr {:.2e}  ETA {}",
            r.step,
            self.total_steps,
            100.0 * r.step as f64 / self.total_steps.max(1) as f64,
            r.step * r.pairs,
            self.total_steps * r.pairs,
            w.loss / n,
            w.data_s / n,
            w.step_s / n,
            w.pairs as f64 / (w.data_s + w.step_s).max(1e-9),
            r.lr,
            duration(eta)
        )
    }

    /// Logs an evaluation: metrics.jsonl and TensorBoard (`eval/NAME/r1`, …, NAME the set's
    /// directory name, or `train-subset`).
    pub fn eval(&mut self, e: &EvalLine) -> Result<()> {
        self.jsonl.write(e)?;
        let name = match e.split {
            "train-subset" => "train-subset".to_string(),
            _ => Path::new(e.data)
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| e.split.to_string()),
        };
        let m = &e.m;
        let tags: Vec<(String, f64)> = [
            ("r1", m.r1),
            ("r5", m.r5),
            ("r10", m.r10),
            ("map", m.map),
            ("minp", m.minp),
        ]
        .into_iter()
        .map(|(k, v)| (format!("eval/{name}/{k}"), v))
        .collect();
        let tags: Vec<(&str, f64)> = tags.iter().map(|(n, v)| (n.as_str(), *v)).collect();
        self.tb.scalars(e.step, &tags)?;
        self.tb.flush()
    }

    /// Prints `line` (above the bar when it shows) and appends it to train.log.
    pub fn say(&mut self, line: &str) -> Result<()> {
        if self.pb.is_hidden() {
            println!("{line}");
        } else {
            self.pb.println(line);
        }
        self.append(line)
    }

    /// Removes the bar and writes what is buffered.
    pub fn finish(&mut self) -> Result<()> {
        self.pb.finish_and_clear();
        self.tb.flush()
    }

    /// Removes the bar (before an error message).
    pub fn clear(&self) {
        self.pb.finish_and_clear();
    }

    fn append(&mut self, line: &str) -> Result<()> {
        writeln!(self.text, "{line}").with_context(|| format!("writing {TRAIN_LOG}"))
    }
}

/// `1h02m`, `2m05s` or `7s`.
fn duration(secs: f64) -> String {
    let s = secs.max(0.0).round() as u64;
    match (s / 3600, s / 60 % 60, s % 60) {
        (0, 0, s) => format!("{s}s"),
        (0, m, s) => format!("{m}m{s:02}s"),
        (h, m, _) => format!("{h}h{m:02}m"),
    }
}

fn progress_bar(len: usize, pos: usize) -> ProgressBar {
    let pb = ProgressBar::new(len as u64);
    pb.set_style(
        ProgressStyle::with_template(
            "{spinner} [{elapsed_precise} ETA {eta}] {bar:30.cyan/blue} {pos}/{len} steps {msg}",
        )
        .expect("valid template")
        .progress_chars("=> "),
    );
    pb.set_position(pos as u64);
    pb
}

fn bar_message(out: &StepOut, epoch: usize, epochs: usize, lr: f64, rate: f64) -> String {
    let parts = if out.parts.len() > 1 {
        let p: Vec<String> = out
            .parts
            .iter()
            .map(|(n, v)| format!("{n} {v:.3}"))
            .collect();
        format!(" ({})", p.join(" "))
    } else {
        String::new()
    };
    format!(
        "epoch {epoch}/{epochs} loss {:.4}{parts} lr {lr:.2e} {rate:.0} pairs/s",
        out.loss
    )
}
