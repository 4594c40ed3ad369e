//! The loader's settings, its saved position, the batch it yields and its errors. Section
//! numbers (§) are those of docs/method.md.

use crate::augment::AugmentConfig;
use crate::masking::MaskingConfig;
use crate::scores::ScoreTable;
use crate::tokenizer::TokenIds;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::sync::Arc;

/// RNG stream of the image augmentation of a sample.
pub const STREAM_AUGMENT: u64 = 1;
/// RNG stream of the caption masking of a sample.
pub const STREAM_MASK: u64 = 2;
/// RNG stream of the epoch order (index `u64::MAX`: shard order, `u64::MAX − 1`: buffer).
pub const STREAM_ORDER: u64 = 3;

/// Which caption masking the loader applies (§4).
#[derive(Clone, Debug)]
pub enum Masking {
    /// None: only `ids_clean` is filled (evaluation, GASS-free runs).
    None,
    /// GA-DMS pretraining (§4.1–4.3): noise- and informative-masked copies drawn from the
    /// caption's row of the shared score table (row = global sample index).
    Dual {
        /// The per-caption GASS scores; must have one row per sample of the dataset.
        scores: Arc<ScoreTable>,
        /// The curve constants.
        config: MaskingConfig,
    },
    /// Fine-tuning (§4.4): uniform 15 % MLM into `ids_info`/`info_labels`; `ids_clean` stays
    /// the original (to reproduce IRRA's published numbers, feed `ids_info` to SDM/ID too).
    Mlm,
}

/// Loader settings.
#[derive(Clone, Debug)]
pub struct LoaderConfig {
    /// Samples per batch.
    pub batch_size: usize,
    /// Seed of the order and of every sample's randomness.
    pub seed: u64,
    /// Decoding/augmentation threads (at least 1).
    pub workers: usize,
    /// Batches prepared ahead of the consumer (raised to `workers` if smaller).
    pub prefetch: usize,
    /// Shuffle the order (shard order + shuffle buffer); false streams samples in dataset order.
    pub shuffle: bool,
    /// Shuffle buffer size in samples (1 = shard-order shuffle only).
    pub shuffle_buffer: usize,
    /// Training augmentation (§6.3) when true, test transform (normalise only) when false.
    pub train: bool,
    /// Augmentation constants (§6.3 defaults).
    pub augment: AugmentConfig,
    /// Caption masking.
    pub masking: Masking,
    /// Drop the last partial batch of an epoch.
    pub drop_last: bool,
    /// Output `(height, width)`; `None` = the manifest's stored size (no resize).
    pub image_size: Option<(usize, usize)>,
    /// The part of every batch this loader builds (data-parallel training): batch `k` of
    /// `batch_size` samples is split into `part.count` equal runs of consecutive rows and only
    /// run `part.index` is decoded and returned. A sample's augmentation and masks depend on
    /// its global index only, so the parts of the `count` loaders concatenated in index order
    /// are the batch a whole (`Part::WHOLE`) loader returns, bit for bit.
    pub part: Part,
    /// Test hook: a worker panics while building this step (exercises panic handling).
    #[doc(hidden)]
    pub debug_panic_at_step: Option<u64>,
}

/// Which of `count` equal parts of every batch a loader builds ([`LoaderConfig::part`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Part {
    /// This part, `0..count`.
    pub index: usize,
    /// Parts per batch; `batch_size` must be a multiple of it.
    pub count: usize,
}

impl Part {
    /// The whole batch.
    pub const WHOLE: Part = Part { index: 0, count: 1 };

    /// Rows `lo..hi` of a batch of `n` rows that this part holds.
    pub fn rows(&self, n: usize) -> std::ops::Range<usize> {
        let b = n / self.count;
        self.index * b..(self.index + 1) * b
    }
}

impl Default for LoaderConfig {
    fn default() -> Self {
        LoaderConfig {
            batch_size: 64,
            seed: 0,
            workers: 2,
            prefetch: 4,
            shuffle: true,
            shuffle_buffer: 10_000,
            train: true,
            augment: AugmentConfig::default(),
            masking: Masking::None,
            drop_last: true,
            part: Part::WHOLE,
            image_size: None,
            debug_panic_at_step: None,
        }
    }
}

/// The loader's position: the next batch [`Loader::next_batch`] returns. Small and serde, for
/// checkpoints.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct LoaderState {
    /// Epoch.
    pub epoch: u64,
    /// Batch (step) within the epoch.
    pub next_batch: u64,
}

/// One batch. Caption fields hold one entry per sample; the masked ones are empty when the
/// masking does not produce them.
#[derive(Clone, Debug, PartialEq)]
pub struct Batch {
    /// Epoch of the batch.
    pub epoch: u64,
    /// Index of the batch within the epoch.
    pub step: u64,
    /// Image height.
    pub height: usize,
    /// Image width.
    pub width: usize,
    /// Images, `[B, 3, H, W]` row-major, CLIP-normalised (and augmented when training).
    pub images: Vec<f32>,
    /// Original token ids (GASS input in pretraining, §4.2).
    pub ids_clean: Vec<TokenIds>,
    /// Noise-masked ids (SDM input, §4.3); filled by [`Masking::Dual`] only.
    pub ids_noise: Vec<TokenIds>,
    /// Informative-masked ids (MTP input, §4.3) or MLM-masked ids (§4.4).
    pub ids_info: Vec<TokenIds>,
    /// Targets of `ids_info`: original id where selected, 0 elsewhere.
    pub info_labels: Vec<TokenIds>,
    /// Person ids.
    pub pids: Vec<u64>,
    /// Image ids.
    pub image_ids: Vec<u64>,
    /// Caption index within the image.
    pub caption_idx: Vec<u32>,
    /// Global sample indices (= score-table rows).
    pub sample_index: Vec<u64>,
}

impl Batch {
    /// Samples in the batch.
    pub fn len(&self) -> usize {
        self.sample_index.len()
    }
    /// True when empty (never for batches the loader returns).
    pub fn is_empty(&self) -> bool {
        self.sample_index.is_empty()
    }
}

/// A loader failure.
#[derive(Debug, Clone, thiserror::Error)]
pub enum LoaderError {
    /// A sample could not be read or decoded.
    #[error("shard {}: sample {index} (global sample {global}): {what}", shard.display())]
    Sample {
        /// The shard file.
        shard: PathBuf,
        /// Index of the sample within the shard.
        index: usize,
        /// Global sample index.
        global: u64,
        /// What went wrong.
        what: String,
    },
    /// A worker thread panicked while building a batch.
    #[error("loader worker panicked while building batch {step} of epoch {epoch}: {msg}")]
    WorkerPanic {
        /// Epoch.
        epoch: u64,
        /// Batch.
        step: u64,
        /// The panic message.
        msg: String,
    },
    /// Invalid settings, dataset or state.
    #[error("loader: {0}")]
    Config(String),
}
