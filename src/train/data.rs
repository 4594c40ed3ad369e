//! The data of `gadms pretrain` and `gadms finetune`: the embedded default dataset
//! (`fixtures/synth-pedes`, built into the binary; 64×32 images, so the `Tiny` preset only),
//! its unpacking and packing into a run directory, and the checks on a packed dataset given
//! with `--data` / `--eval-data` (packed at the preset's image size: 64×32 for `tiny`,
//! 384×128 for `vit-b-16`), the evaluation sets of a run and its training loader.

use crate::eval::EvalSet;
use crate::preset::Preset;
use anyhow::{Context, Result, bail};
use gadms_data::augment::AugmentConfig;
use gadms_data::loader::{Loader, LoaderConfig, Masking, Part};
use gadms_data::manifest::Dataset;
use gadms_data::pack::{Format, NoProgress, PackOptions, PackReport, pack};
use gadms_data::synth::{IMG_H, IMG_W};
use gadms_data::tokenizer_hash;
use gadms_nn::ClipSpec;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

mod embedded {
    include!(concat!(env!("OUT_DIR"), "/synth_pedes.rs"));
}

/// The embedded `fixtures/synth-pedes`: `(path relative to it, bytes)`, sorted by path
/// (`imgs/test/…`, `imgs/train/…`, `reid_raw.json`).
pub fn fixture_files() -> &'static [(&'static str, &'static [u8])] {
    embedded::FILES
}

/// Writes the embedded fixture into `dir` (`dir/reid_raw.json`, `dir/imgs/…`). A file that
/// already holds the same bytes is left alone. Returns the number of files written.
pub fn unpack_fixture(dir: &Path) -> Result<usize> {
    let files = fixture_files();
    if files.is_empty() {
        bail!(
            "this build has no embedded dataset: fixtures/synth-pedes was missing when it was \
             compiled; regenerate it with `cargo run --release --example make_synth_pedes -- \
             fixtures/synth-pedes` and rebuild, or pass --data"
        );
    }
    let mut written = 0;
    for (rel, bytes) in files {
        let path = dir.join(rel);
        if std::fs::read(&path).is_ok_and(|old| old == *bytes) {
            continue;
        }
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("cannot create {}", parent.display()))?;
        }
        std::fs::write(&path, bytes).with_context(|| format!("cannot write {}", path.display()))?;
        written += 1;
    }
    Ok(written)
}

/// Packs split `split` of the CUHK-PEDES-form dataset in `src` into `out` at the Tiny size
/// (64×32, PNG; the fixture fits in one shard). A rerun reuses finished shards.
pub fn pack_split(src: &Path, split: &str, out: &Path) -> Result<PackReport> {
    let opts = PackOptions {
        split: split.into(),
        image_h: IMG_H as u32,
        image_w: IMG_W as u32,
        workers: 0,
        lossless: true,
        ..PackOptions::new(Format::CuhkPedes, src, out)
    };
    pack(&opts, &NoProgress)
        .with_context(|| format!("packing the {split} split of {}", src.display()))
}

/// The default data, ready to load: the embedded fixture unpacked into `root/synth-pedes`
/// and its train and test splits packed into `root/train` and `root/test`.
#[derive(Clone, Debug)]
pub struct DefaultData {
    /// Packed training split.
    pub train: PathBuf,
    /// Packed test split.
    pub test: PathBuf,
    /// Files unpacked now (0 when `root` already held the fixture).
    pub unpacked: usize,
    /// Shards reused from an earlier run (of 2).
    pub reused_shards: usize,
}

/// Unpacks and packs the default dataset below `root` (e.g. `RUN_DIR/data`).
pub fn prepare_default(root: &Path) -> Result<DefaultData> {
    let raw = root.join("synth-pedes");
    let unpacked = unpack_fixture(&raw)?;
    let (train, test) = (root.join("train"), root.join("test"));
    let a = pack_split(&raw, "train", &train)?;
    let b = pack_split(&raw, "test", &test)?;
    Ok(DefaultData {
        train,
        test,
        unpacked,
        reused_shards: a.reused_shards + b.reused_shards,
    })
}

/// Fails, saying what to do, when `preset` has no embedded default data and `--data` is
/// missing: the embedded synthetic set is drawn at 64×32, the `tiny` size.
pub fn check_default_data(preset: Preset, has_data: bool) -> Result<()> {
    let v = preset.spec().vision;
    if has_data || (v.image_h, v.image_w) == (IMG_H, IMG_W) {
        return Ok(());
    }
    bail!(
        "--preset {}: needs --data DIR (a `gadms pack` output at {h}x{w}): the embedded \
         synthetic dataset is {IMG_H}x{IMG_W}, for the tiny preset only. Pack your data with \
         `gadms pack --format F --src PATH --out DIR --image-size {h}x{w}` (the synthetic set, \
         fixtures/synth-pedes in the repository, packs with --format cuhk-pedes), and pass \
         --eval-data DIR2 (packed with --split test) to evaluate",
        preset.spec().name,
        h = v.image_h,
        w = v.image_w
    )
}

/// Opens a packed dataset for the Tiny preset ([`open_packed_for`] at 64×32).
pub fn open_packed(dir: &Path, flag: &str) -> Result<Dataset> {
    open_packed_for(dir, flag, &Preset::Tiny.spec())
}

/// Opens a packed dataset for a model of sizes `spec`: checks the manifest, the tokenizer and
/// that the images were packed at the preset's H×W (a pack of another size is a clear error
/// naming the `gadms pack --image-size` to repack with).
pub fn open_packed_for(dir: &Path, flag: &str, spec: &ClipSpec) -> Result<Dataset> {
    let ds = Dataset::open(dir, Some(&tokenizer_hash()))
        .with_context(|| format!("{flag} {}: not a usable `gadms pack` output", dir.display()))?;
    let c = &ds.manifest.config;
    let (h, w) = (spec.vision.image_h, spec.vision.image_w);
    if (c.image_h as usize, c.image_w as usize) != (h, w) {
        bail!(
            "{flag} {}: the images were packed at {}x{} (HxW), but the {} preset takes \
             {h}x{w}; repack with `gadms pack ... --image-size {h}x{w}`",
            dir.display(),
            c.image_h,
            c.image_w,
            spec.name
        );
    }
    if ds.is_empty() {
        bail!("{flag} {}: the dataset holds no samples", dir.display());
    }
    Ok(ds)
}

/// `--skip-corrupt`: verifies every sample of `ds` ([`Dataset::skip_damaged`]) and leaves
/// the damaged ones out; prints `warning: --skip-corrupt: skipped N damaged samples of FLAG
/// DIR: SHARD sample i, …` (stderr) when there are any. Fails when no sample is left.
pub fn skip_damaged(ds: &mut Dataset, flag: &str) -> Result<()> {
    ds.skip_damaged();
    if let Some(line) = skip_line(ds, flag) {
        eprintln!("warning: {line}");
    }
    if ds.usable() == 0 {
        bail!(
            "{flag} {}: --skip-corrupt: every one of its {} samples is damaged; re-run gadms pack",
            ds.dir.display(),
            ds.len()
        );
    }
    Ok(())
}

/// Damaged samples named on the `--skip-corrupt` line (the rest are counted).
const SKIP_LISTED: usize = 10;

/// The line saying which damaged samples `ds` leaves out, `None` when none.
pub fn skip_line(ds: &Dataset, flag: &str) -> Option<String> {
    let d = ds.damaged();
    if d.is_empty() {
        return None;
    }
    let mut names: Vec<String> = d
        .iter()
        .take(SKIP_LISTED)
        .map(|s| format!("{} sample {}", s.shard.display(), s.index))
        .collect();
    if d.len() > SKIP_LISTED {
        names.push(format!("and {} more", d.len() - SKIP_LISTED));
    }
    Some(format!(
        "--skip-corrupt: skipped {} damaged sample{} of {flag} {} ({} of {} left): {}",
        d.len(),
        if d.len() == 1 { "" } else { "s" },
        ds.dir.display(),
        ds.usable(),
        ds.len(),
        names.join(", ")
    ))
}

/// Damaged samples described one by one in a run's `config.json` (the rest are counted and
/// fingerprinted).
const SKIP_RECORDED: usize = 100;

/// What `config.json` records of the samples `ds` leaves out: `count`, `fingerprint`
/// ([`Dataset::skip_hash`]) and the first ones as `SHARD sample i: what`.
pub fn skip_json(ds: &Dataset) -> serde_json::Value {
    let d = ds.damaged();
    let samples: Vec<String> = d
        .iter()
        .take(SKIP_RECORDED)
        .map(|s| format!("{} sample {}: {}", s.shard.display(), s.index, s.what))
        .collect();
    serde_json::json!({ "count": d.len(), "fingerprint": ds.skip_hash(), "samples": samples })
}

/// Loader threads (decoding 64×32 images is cheap next to a training step).
pub const LOADER_WORKERS: usize = 1;
/// Samples in the training loader's shuffle buffer.
pub const SHUFFLE_BUFFER: usize = 10_000;

/// An evaluation set of a run.
pub struct NamedEval {
    /// Its directory (as given).
    pub dir: String,
    /// The manifest's split (`test`, `val`, `train`).
    pub split: String,
    /// The dataset name of the manifest.
    pub dataset: String,
    /// Its images, captions and identities.
    pub set: EvalSet,
    /// What `--skip-corrupt` left out of it ([`skip_json`]).
    pub skipped: serde_json::Value,
}

impl NamedEval {
    /// Opens a packed set for evaluation by a model of sizes `spec` (its image size must be
    /// the preset's, [`open_packed_for`]); with `skip_corrupt`, without its damaged samples
    /// ([`skip_damaged`]).
    pub fn open(dir: &Path, flag: &str, spec: &ClipSpec, skip_corrupt: bool) -> Result<NamedEval> {
        let mut ds = open_packed_for(dir, flag, spec)?;
        if skip_corrupt {
            skip_damaged(&mut ds, flag)?;
        }
        let set = EvalSet::from_dataset(&ds, None)?;
        Ok(NamedEval {
            dir: dir.display().to_string(),
            split: ds.manifest.config.split.clone(),
            dataset: ds.manifest.config.dataset.clone(),
            set,
            skipped: skip_json(&ds),
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
                 data, as IRRA and GA-DMS do (docs/method.md §6.1-6.2); such numbers \
                 are optimistic",
                self.dir, self.dataset
            )
        })
    }
}

/// The data of a run: the packed training split and the evaluation splits.
pub struct RunData {
    /// The packed training split.
    pub train: Arc<Dataset>,
    /// Its directory.
    pub train_dir: PathBuf,
    /// The evaluation sets (`--eval-data`, or the embedded test split).
    pub evals: Vec<NamedEval>,
    /// Where the data came from (`embedded fixtures/synth-pedes` or `--data`).
    pub source: &'static str,
}

/// `--data`, opened before a run writes anything: its directory and dataset.
pub type GivenData = Option<(PathBuf, Arc<Dataset>)>;

/// Opens `--data` and checks `--eval-data` before a run writes anything: each must be a packed
/// set at the preset's image size ([`open_packed_for`]; reads manifests only). With
/// `skip_corrupt`, every training sample is verified and the damaged ones are left out
/// ([`skip_damaged`]). The opened training set goes on to [`open_run_data`].
pub fn check_packed(
    data: Option<&Path>,
    eval_data: &[PathBuf],
    spec: &ClipSpec,
    skip_corrupt: bool,
) -> Result<GivenData> {
    let given = match data {
        Some(d) => {
            let mut ds = open_packed_for(d, "--data", spec)?;
            if skip_corrupt {
                skip_damaged(&mut ds, "--data")?;
            }
            Some((d.to_path_buf(), Arc::new(ds)))
        }
        None => None,
    };
    for d in eval_data {
        open_packed_for(d, "--eval-data", spec)?;
    }
    Ok(given)
}

/// The run's data: `data` (`--data`, from [`check_packed`]) and `eval_data` (`--eval-data`)
/// for a model of sizes `spec`; without `--data`, first unpacks and packs the embedded set into
/// `out/data` (a rerun reuses the shards) and evaluates on its test split unless `--eval-data`
/// is given. With `skip_corrupt`, the damaged samples of every set are left out
/// ([`skip_damaged`]).
pub fn open_run_data(
    data: GivenData,
    eval_data: &[PathBuf],
    out: &Path,
    spec: &ClipSpec,
    skip_corrupt: bool,
) -> Result<RunData> {
    let t = Instant::now();
    let (train_dir, train, eval_dirs, source) = match data {
        None => {
            let root = out.join("data");
            let d = prepare_default(&root)?;
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
            let eval = if eval_data.is_empty() {
                vec![d.test.clone()]
            } else {
                eval_data.to_vec()
            };
            let mut train = open_packed_for(&d.train, "--data", spec)?;
            if skip_corrupt {
                skip_damaged(&mut train, "--data")?;
            }
            (
                d.train,
                Arc::new(train),
                eval,
                "embedded fixtures/synth-pedes",
            )
        }
        Some((dir, train)) => (dir, train, eval_data.to_vec(), "--data"),
    };
    let evals = eval_dirs
        .iter()
        .map(|d| NamedEval::open(d, "--eval-data", spec, skip_corrupt))
        .collect::<Result<Vec<_>>>()?;
    Ok(RunData {
        train,
        train_dir,
        evals,
        source,
    })
}

/// The run directory `out` (made and locked for the run's life,
/// [`super::run_dir::open_run_dir`]) and the run's data ([`open_run_data`]). In a
/// data-parallel job ([`crate::dist`]) rank 0 does both (the embedded set is unpacked and
/// packed once) while the other ranks wait; they then open the same data, which they find
/// ready, and hold no lock.
///
/// # Errors
/// As [`super::run_dir::open_run_dir`] and [`open_run_data`].
pub fn open_run(
    data: GivenData,
    eval_data: &[PathBuf],
    out: &Path,
    spec: &ClipSpec,
    skip_corrupt: bool,
    (fresh, overwrite): (bool, bool),
) -> Result<(Option<super::run_dir::RunLock>, RunData)> {
    let world = crate::dist::world();
    if world.rank() == 0 {
        let lock = super::run_dir::open_run_dir(out, fresh, overwrite)?;
        println!("run directory: {}", out.display());
        let d = open_run_data(data, eval_data, out, spec, skip_corrupt)?;
        world.barrier();
        Ok((Some(lock), d))
    } else {
        world.barrier();
        Ok((
            None,
            open_run_data(data, eval_data, out, spec, skip_corrupt)?,
        ))
    }
}

/// The training loader of a run (deterministic order and per-sample augmentation from
/// `seed`, full batches only) and its batches per epoch; `batch_size` is a step's pairs on
/// this process (`--batch-size` × `--accum-steps`, [`super::accum::loader_batch`]). In a
/// data-parallel job ([`crate::dist`]) a step takes `batch_size` × ranks pairs in one global
/// order, and this rank's loader builds its part of them (rows `rank·batch_size..`).
pub fn train_loader(
    train: Arc<Dataset>,
    batch_size: usize,
    seed: u64,
    augment: AugmentConfig,
    masking: Masking,
) -> Result<(Loader, usize)> {
    let captions = train.len();
    let world = crate::dist::world();
    let part = Part {
        index: world.rank(),
        count: world.size(),
    };
    let Some(batch_size) = batch_size.checked_mul(part.count) else {
        bail!(
            "{batch_size} pairs x {} processes per step is too large",
            part.count
        );
    };
    let loader = Loader::new(
        train,
        LoaderConfig {
            batch_size,
            seed,
            workers: LOADER_WORKERS,
            prefetch: 4,
            shuffle: true,
            shuffle_buffer: SHUFFLE_BUFFER,
            train: true,
            augment,
            masking,
            drop_last: true,
            image_size: None,
            part,
            debug_panic_at_step: None,
        },
    )
    .context("building the loader")?;
    let steps_per_epoch = loader.batches_per_epoch() as usize;
    if steps_per_epoch == 0 {
        bail!(
            "a step's {batch_size} pairs (--batch-size x --accum-steps x processes) are more \
             than the {captions} training captions: no full batch"
        );
    }
    Ok((loader, steps_per_epoch))
}
