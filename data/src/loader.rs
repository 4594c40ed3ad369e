//! The training/evaluation loader: streams batches from a packed [`Dataset`] with decoding,
//! augmentation (docs/method.md §6.3, [`crate::augment`]) and caption masking (§4,
//! [`crate::masking`]) on a
//! pool of worker threads.
//!
//! **Order.** The order of epoch `e` is a pure function of `(seed, e)` ([`epoch_order`]): the
//! shard order is shuffled, the shards are streamed in that order (each front to back, which
//! keeps reads of the memory-mapped files local), and a bounded shuffle buffer of
//! `shuffle_buffer` sample indices permutes the stream — simulated on indices only when the
//! epoch starts (tens of ms for 10M samples). An element leaves the buffer fewer than
//! `shuffle_buffer` positions before its stream position. Batch `k` is the `k`-th consecutive
//! chunk of `batch_size` indices (the last partial one dropped when `drop_last`). A loader
//! for one rank of a data-parallel run ([`LoaderConfig::part`]) walks the same order and builds
//! only its equal share of each batch's rows.
//!
//! **Per-sample randomness.** Augmentation and masking of global sample `i` in epoch `e` draw
//! from [`SampleRng::for_sample`]`(seed, e, i, stream)`, so batches are bit-identical whatever
//! the worker count or thread timing, and [`Loader::resume`] from a saved [`LoaderState`]
//! continues exactly.
//!
//! **Pipeline.** `workers` threads claim whole batches in order from a shared counter, at most
//! `prefetch` (≥ `workers`) batches ahead of the consumer; the consumer reorders, so batches come
//! out in order. A bad sample (corrupt image or shard body) turns into a
//! [`LoaderError::Sample`] naming the shard file and the sample's index; a panic inside a
//! worker is caught and returned as [`LoaderError::WorkerPanic`] — the consumer never hangs.
//! After an error the pipeline is torn down and the position stays at the failed batch.
//!
//! **Left-out samples** (`--skip-corrupt`, [`Dataset::skip_damaged`]): the epoch order is
//! [`epoch_order`] minus the samples the dataset leaves out, and batches per epoch count the
//! others; global indices (score-table rows) are unchanged. With none left out, nothing differs.
//!
//! **Score table contract (GA-DMS dual masking, §4.2, §11.4).** A caption's masks are drawn
//! from its score row when its batch is prepared, possibly while the trainer still works on
//! earlier batches. Since each caption occurs once per epoch and the loader never prefetches
//! across an epoch boundary, masks of epoch `e + 1` see exactly the scores written in epoch `e`
//! (and earlier), provided the trainer (1) writes only the rows of the batch it received
//! (`Batch::sample_index` = score row) and (2) does so before requesting the next batch at an
//! epoch boundary — the natural "get batch, step, update scores" loop. For an exact resume, save
//! the table with the checkpoint ([`crate::scores::ScoreTable::save_copy`]) and restore it.

use crate::augment;
use crate::manifest::Dataset;
use crate::masking::{self, SampleRng};
use std::collections::HashMap;
use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;

mod config;
pub use config::{
    Batch, LoaderConfig, LoaderError, LoaderState, Masking, Part, STREAM_AUGMENT, STREAM_MASK,
    STREAM_ORDER,
};

/// Shuffled shard order of an epoch (Fisher–Yates from `(seed, epoch)`); identity when
/// `shuffle` is false.
pub fn shard_order(n_shards: usize, seed: u64, epoch: u64, shuffle: bool) -> Vec<usize> {
    let mut v: Vec<usize> = (0..n_shards).collect();
    if shuffle {
        let mut rng = SampleRng::for_sample(seed, epoch, u64::MAX, STREAM_ORDER);
        fisher_yates(&mut v, &mut rng);
    }
    v
}

fn fisher_yates<T>(v: &mut [T], rng: &mut SampleRng) {
    for i in (1..v.len()).rev() {
        let j = rng.below(i as u64 + 1) as usize;
        v.swap(i, j);
    }
}

/// The order of global sample indices for an epoch over shards of `shard_lens` samples: shards
/// in [`shard_order`], each streamed front to back through a shuffle buffer of `buffer` slots
/// (once full, each arriving index replaces a uniformly chosen slot whose index is emitted; the
/// rest is shuffled at the end). Invariant: an index whose stream position is `q` is emitted at
/// a position `p > q − buffer`. Identity order when `shuffle` is false.
pub fn epoch_order(
    shard_lens: &[usize],
    seed: u64,
    epoch: u64,
    shuffle: bool,
    buffer: usize,
) -> Vec<u32> {
    let total: usize = shard_lens.iter().sum();
    assert!(total <= u32::MAX as usize, "more than 2^32 samples");
    if !shuffle {
        return (0..total as u32).collect();
    }
    let mut starts = Vec::with_capacity(shard_lens.len());
    let mut acc = 0usize;
    for &l in shard_lens {
        starts.push(acc);
        acc += l;
    }
    let cap = buffer.max(1);
    let mut rng = SampleRng::for_sample(seed, epoch, u64::MAX - 1, STREAM_ORDER);
    let mut buf: Vec<u32> = Vec::with_capacity(cap.min(total));
    let mut out: Vec<u32> = Vec::with_capacity(total);
    for s in shard_order(shard_lens.len(), seed, epoch, true) {
        for i in starts[s]..starts[s] + shard_lens[s] {
            if buf.len() < cap {
                buf.push(i as u32);
            } else {
                let j = rng.below(cap as u64) as usize;
                out.push(buf[j]);
                buf[j] = i as u32;
            }
        }
    }
    fisher_yates(&mut buf, &mut rng);
    out.extend_from_slice(&buf);
    out
}

/// Streams batches of a dataset; see the module docs. Also an endless [`Iterator`] of
/// `Result<Batch, LoaderError>` across epochs.
pub struct Loader {
    dataset: Arc<Dataset>,
    cfg: LoaderConfig,
    height: usize,
    width: usize,
    batches: u64,
    state: LoaderState,
    order: Option<(u64, Arc<Vec<u32>>)>,
    pipeline: Option<Pipeline>,
}

impl std::fmt::Debug for Loader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Loader")
            .field("dataset", &self.dataset.dir)
            .field("cfg", &self.cfg)
            .field("state", &self.state)
            .finish()
    }
}

impl Loader {
    /// A loader at epoch 0, batch 0. Checks the settings, the image size and, for
    /// [`Masking::Dual`], that the score table has one row per sample. No thread starts
    /// before the first [`Loader::next_batch`].
    pub fn new(dataset: Arc<Dataset>, cfg: LoaderConfig) -> Result<Self, LoaderError> {
        let bad = |m: String| Err(LoaderError::Config(m));
        let n = dataset.len();
        // Samples left out by `Dataset::skip_damaged` are not in the epoch order.
        let usable = dataset.usable();
        if cfg.batch_size == 0 || cfg.workers == 0 {
            return bad("batch_size and workers must be at least 1".into());
        }
        let Part { index, count } = cfg.part;
        if count == 0 || index >= count || !cfg.batch_size.is_multiple_of(count) {
            return bad(format!(
                "part {index} of {count}: a batch of {} does not split into {count} equal parts",
                cfg.batch_size
            ));
        }
        if count > 1 && !cfg.drop_last {
            return bad("a loader that builds one part of every batch needs drop_last".into());
        }
        if n > u32::MAX as usize {
            return bad(format!("{n} samples: more than 2^32 are not supported"));
        }
        let (height, width) = cfg.image_size.unwrap_or((
            dataset.manifest.config.image_h as usize,
            dataset.manifest.config.image_w as usize,
        ));
        if height == 0 || width == 0 {
            return bad(format!("image size {height}x{width}"));
        }
        let batches = if cfg.drop_last {
            usable / cfg.batch_size
        } else {
            usable.div_ceil(cfg.batch_size)
        } as u64;
        if batches == 0 {
            let left_out = match n - usable {
                0 => String::new(),
                k => format!(" ({k} damaged ones left out)"),
            };
            return bad(format!(
                "{}: {usable} samples{left_out} give no batch of {}",
                dataset.dir.display(),
                cfg.batch_size
            ));
        }
        if let Masking::Dual { scores, .. } = &cfg.masking
            && scores.rows() != n
        {
            return bad(format!(
                "score table has {} rows but {} holds {n} captions",
                scores.rows(),
                dataset.dir.display()
            ));
        }
        Ok(Loader {
            dataset,
            cfg,
            height,
            width,
            batches,
            state: LoaderState::default(),
            order: None,
            pipeline: None,
        })
    }

    /// The settings.
    pub fn config(&self) -> &LoaderConfig {
        &self.cfg
    }

    /// The dataset.
    pub fn dataset(&self) -> &Arc<Dataset> {
        &self.dataset
    }

    /// Output `(height, width)`.
    pub fn image_size(&self) -> (usize, usize) {
        (self.height, self.width)
    }

    /// Batches per epoch.
    pub fn batches_per_epoch(&self) -> u64 {
        self.batches
    }

    /// The position of the next batch. After the last batch of epoch `e` it is `(e + 1, 0)`.
    pub fn state(&self) -> LoaderState {
        self.state
    }

    /// Moves to `state` (from [`Loader::state`], e.g. of a checkpoint): the following batches
    /// are exactly those the original run got from that position on. Stops any prefetching.
    pub fn resume(&mut self, state: LoaderState) -> Result<(), LoaderError> {
        if state.next_batch > self.batches {
            return Err(LoaderError::Config(format!(
                "state {state:?} is past the {} batches of an epoch (another dataset or batch size?)",
                self.batches
            )));
        }
        self.pipeline = None;
        self.state = if state.next_batch == self.batches {
            LoaderState {
                epoch: state.epoch + 1,
                next_batch: 0,
            }
        } else {
            state
        };
        Ok(())
    }

    /// Shard order of `epoch` ([`shard_order`]).
    pub fn shard_order(&self, epoch: u64) -> Vec<usize> {
        shard_order(
            self.dataset.shards.len(),
            self.cfg.seed,
            epoch,
            self.cfg.shuffle,
        )
    }

    /// Sample order of `epoch` ([`epoch_order`]), cached for the current epoch. Samples the
    /// dataset leaves out ([`Dataset::skip_damaged`]) are removed from it; the others keep
    /// their relative order, so with none left out the order is exactly [`epoch_order`].
    pub fn epoch_order(&mut self, epoch: u64) -> Arc<Vec<u32>> {
        if let Some((e, o)) = &self.order
            && *e == epoch
        {
            return o.clone();
        }
        let lens: Vec<usize> = self.dataset.shards.iter().map(|s| s.len()).collect();
        let mut order = epoch_order(
            &lens,
            self.cfg.seed,
            epoch,
            self.cfg.shuffle,
            self.cfg.shuffle_buffer,
        );
        if !self.dataset.damaged().is_empty() {
            order.retain(|&i| !self.dataset.is_skipped(i as usize));
        }
        let o = Arc::new(order);
        self.order = Some((epoch, o.clone()));
        o
    }

    /// The next batch (in order, across epochs). Starts the worker pool at the beginning of
    /// each epoch (no prefetch across epochs; see the module docs). On error the position
    /// stays at the failed batch.
    pub fn next_batch(&mut self) -> Result<Batch, LoaderError> {
        let LoaderState { epoch, next_batch } = self.state;
        if self
            .pipeline
            .as_ref()
            .is_none_or(|p| p.shared.epoch != epoch)
        {
            let order = self.epoch_order(epoch);
            self.pipeline = None;
            self.pipeline = Some(Pipeline::start(
                Shared {
                    dataset: self.dataset.clone(),
                    cfg: self.cfg.clone(),
                    height: self.height,
                    width: self.width,
                    epoch,
                    order,
                    batches: self.batches,
                    ctrl: Mutex::new(Ctrl {
                        next_claim: next_batch,
                        consumer_next: next_batch,
                        stop: false,
                    }),
                    cv: Condvar::new(),
                },
                self.cfg.workers,
            )?);
        }
        let p = self.pipeline.as_mut().expect("started above");
        match p.take(next_batch) {
            Ok(b) => {
                self.state.next_batch += 1;
                if self.state.next_batch == self.batches {
                    self.pipeline = None;
                    self.state = LoaderState {
                        epoch: epoch + 1,
                        next_batch: 0,
                    };
                }
                Ok(b)
            }
            Err(e) => {
                self.pipeline = None;
                Err(e)
            }
        }
    }
}

impl Iterator for Loader {
    type Item = Result<Batch, LoaderError>;
    /// Never `None`: the stream runs across epochs; use `take` or [`Loader::batches_per_epoch`].
    fn next(&mut self) -> Option<Self::Item> {
        Some(self.next_batch())
    }
}

struct Ctrl {
    next_claim: u64,
    consumer_next: u64,
    stop: bool,
}

struct Shared {
    dataset: Arc<Dataset>,
    cfg: LoaderConfig,
    height: usize,
    width: usize,
    epoch: u64,
    order: Arc<Vec<u32>>,
    batches: u64,
    ctrl: Mutex<Ctrl>,
    cv: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Ctrl> {
        self.ctrl.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

type Msg = (u64, Result<Batch, LoaderError>);

struct Pipeline {
    shared: Arc<Shared>,
    rx: Receiver<Msg>,
    pending: HashMap<u64, Result<Batch, LoaderError>>,
    workers: Vec<JoinHandle<()>>,
}

/// Sends an error for the claimed batch if the worker unwinds outside `catch_unwind`, so the
/// consumer is never left waiting for a batch nobody builds.
struct ClaimGuard {
    tx: Sender<Msg>,
    epoch: u64,
    claimed: Option<u64>,
}

impl Drop for ClaimGuard {
    fn drop(&mut self) {
        if let Some(k) = self.claimed
            && std::thread::panicking()
        {
            let _ = self.tx.send((
                k,
                Err(LoaderError::WorkerPanic {
                    epoch: self.epoch,
                    step: k,
                    msg: "worker thread died".into(),
                }),
            ));
        }
    }
}

fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        s.to_string()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic payload".into()
    }
}

impl Pipeline {
    fn start(shared: Shared, workers: usize) -> Result<Self, LoaderError> {
        let shared = Arc::new(shared);
        let (tx, rx) = channel();
        let mut handles = Vec::with_capacity(workers);
        for w in 0..workers {
            let (sh, tx) = (shared.clone(), tx.clone());
            let h = std::thread::Builder::new()
                .name(format!("gadms-loader-{w}"))
                .spawn(move || worker(sh, tx))
                .map_err(|e| LoaderError::Config(format!("cannot start a loader thread: {e}")));
            match h {
                Ok(h) => handles.push(h),
                Err(e) => {
                    let p = Pipeline {
                        shared,
                        rx,
                        pending: HashMap::new(),
                        workers: handles,
                    };
                    drop(p); // stops and joins the ones already started
                    return Err(e);
                }
            }
        }
        Ok(Pipeline {
            shared,
            rx,
            pending: HashMap::new(),
            workers: handles,
        })
    }

    fn take(&mut self, k: u64) -> Result<Batch, LoaderError> {
        let res = loop {
            if let Some(r) = self.pending.remove(&k) {
                break r;
            }
            match self.rx.recv() {
                Ok((j, r)) => {
                    self.pending.insert(j, r);
                }
                Err(_) => {
                    break Err(LoaderError::WorkerPanic {
                        epoch: self.shared.epoch,
                        step: k,
                        msg: "all loader workers exited".into(),
                    });
                }
            }
        };
        let mut c = self.shared.lock();
        c.consumer_next = k + 1;
        drop(c);
        self.shared.cv.notify_all();
        res
    }
}

impl Drop for Pipeline {
    fn drop(&mut self) {
        self.shared.lock().stop = true;
        self.shared.cv.notify_all();
        for h in self.workers.drain(..) {
            let _ = h.join();
        }
    }
}

fn worker(sh: Arc<Shared>, tx: Sender<Msg>) {
    let prefetch = sh.cfg.prefetch.max(sh.cfg.workers).max(1) as u64;
    let mut guard = ClaimGuard {
        tx,
        epoch: sh.epoch,
        claimed: None,
    };
    loop {
        let k = {
            let mut c = sh.lock();
            loop {
                if c.stop || c.next_claim >= sh.batches {
                    return;
                }
                if c.next_claim < c.consumer_next + prefetch {
                    break;
                }
                c = sh.cv.wait(c).unwrap_or_else(PoisonError::into_inner);
            }
            c.next_claim += 1;
            c.next_claim - 1
        };
        guard.claimed = Some(k);
        let res = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| build_batch(&sh, k)))
            .unwrap_or_else(|p| {
                Err(LoaderError::WorkerPanic {
                    epoch: sh.epoch,
                    step: k,
                    msg: panic_message(p.as_ref()),
                })
            });
        guard.claimed = None;
        if guard.tx.send((k, res)).is_err() {
            return;
        }
    }
}

fn build_batch(sh: &Shared, k: u64) -> Result<Batch, LoaderError> {
    if sh.cfg.debug_panic_at_step == Some(k) {
        panic!("injected loader panic at step {k}");
    }
    let cfg = &sh.cfg;
    let (h, w) = (sh.height, sh.width);
    let start = k as usize * cfg.batch_size;
    let end = (start + cfg.batch_size).min(sh.order.len());
    // This loader's part of the batch (all of it unless data-parallel; drop_last then holds).
    let rows = cfg.part.rows(end - start);
    let idx = &sh.order[start + rows.start..start + rows.end];
    let b = idx.len();
    let px = 3 * h * w;
    let masked = !matches!(cfg.masking, Masking::None);
    let mut batch = Batch {
        epoch: sh.epoch,
        step: k,
        height: h,
        width: w,
        images: vec![0f32; b * px],
        ids_clean: Vec::with_capacity(b),
        ids_noise: Vec::with_capacity(if masked { b } else { 0 }),
        ids_info: Vec::with_capacity(if masked { b } else { 0 }),
        info_labels: Vec::with_capacity(if masked { b } else { 0 }),
        pids: Vec::with_capacity(b),
        image_ids: Vec::with_capacity(b),
        caption_idx: Vec::with_capacity(b),
        sample_index: Vec::with_capacity(b),
    };
    for (slot, &gi) in idx.iter().enumerate() {
        let gi = gi as usize;
        let (si, li) = sh
            .dataset
            .locate(gi)
            .expect("epoch order holds valid indices");
        let shard = &sh.dataset.shards[si];
        let err = |what: String| LoaderError::Sample {
            shard: shard.path().to_path_buf(),
            index: li,
            global: gi as u64,
            what,
        };
        let s = shard.sample(li).map_err(|e| err(e.to_string()))?;
        let rgb = augment::decode_rgb8(s.image, h, w)
            .map_err(|m| err(format!("cannot decode the image ({m})")))?;
        let out = &mut batch.images[slot * px..(slot + 1) * px];
        if cfg.train {
            let mut rng = SampleRng::for_sample(cfg.seed, sh.epoch, gi as u64, STREAM_AUGMENT);
            augment::train_transform(&rgb, h, w, &cfg.augment, &mut rng, out);
        } else {
            augment::test_transform(&rgb, h, w, out);
        }
        let mut rng = SampleRng::for_sample(cfg.seed, sh.epoch, gi as u64, STREAM_MASK);
        match &cfg.masking {
            Masking::None => {}
            Masking::Dual { scores, config } => {
                let d = masking::dual_mask(&s.ids, &scores.get(gi), config, &mut rng);
                batch.ids_noise.push(d.noise_masked);
                batch.ids_info.push(d.info_masked);
                batch.info_labels.push(d.info_labels);
            }
            Masking::Mlm => {
                let (m, l) = masking::mlm_mask(&s.ids, &mut rng);
                batch.ids_info.push(m);
                batch.info_labels.push(l);
            }
        }
        batch.ids_clean.push(s.ids);
        batch.pids.push(s.pid);
        batch.image_ids.push(s.image_id);
        batch.caption_idx.push(s.caption_idx);
        batch.sample_index.push(gi as u64);
    }
    Ok(batch)
}
