//! The learning-rate schedule of GA-DMS / IRRA (`solver/lr_scheduler.py`
//! `LRSchedulerWithWarmup`, mode `cosine`, warm-up method `linear`, warm-up factor 0.1), stepped
//! once per epoch (docs/method.md §6.1).

/// The paper's warm-up length in epochs.
pub const PAPER_WARMUP_EPOCHS: usize = 5;
/// The warm-up's starting factor.
pub const WARMUP_FACTOR: f64 = 0.1;

/// Multiplier of the base learning rate for 0-based `epoch` of `epochs`, with `warmup`
/// warm-up epochs:
///
/// * `epoch < warmup`: `0.1·(1 − e/W) + e/W` (0.1, 0.28, 0.46, 0.64, 0.82 for W = 5);
/// * otherwise: `0.5·(1 + cos(π·(e − W)/(E − W)))`, cosine from 1 towards 0 (end lr 0; the last
///   epoch still has a small positive rate).
pub fn lr_factor(epoch: usize, epochs: usize, warmup: usize) -> f64 {
    if epoch < warmup {
        let alpha = epoch as f64 / warmup as f64;
        return WARMUP_FACTOR * (1.0 - alpha) + alpha;
    }
    let span = epochs.saturating_sub(warmup).max(1) as f64;
    let ratio = (epoch - warmup) as f64 / span;
    0.5 * (1.0 + (std::f64::consts::PI * ratio).cos())
}

/// Warm-up length used when none is given: the paper's 5 epochs, but at most a quarter of a
/// short run (`min(5, epochs / 4)`), so that most epochs are spent at a useful rate. From 20
/// epochs on this is exactly the paper's schedule.
pub fn default_warmup(epochs: usize) -> usize {
    PAPER_WARMUP_EPOCHS.min(epochs / 4)
}

/// Multiplier for the optimiser step `step` (0-based, counted over the whole run) of a run of
/// `epochs` epochs of `steps_per_epoch` steps with `warmup` warm-up epochs.
///
/// * `per_step = false` (the reference, stepped once per epoch): [`lr_factor`] of the epoch
///   `⌊step / steps_per_epoch⌋` the step belongs to.
/// * `per_step = true`: the same curve evaluated at the fractional epoch
///   `e = step / steps_per_epoch`: `0.1·(1 − e/W) + e/W` for `e < W`, then
///   `0.5·(1 + cos(π·(e − W)/(E − W)))`. It agrees with the per-epoch schedule at the first step
///   of every epoch and moves smoothly in between (linear warm-up, cosine decay towards 0).
pub fn lr_factor_at(
    step: usize,
    steps_per_epoch: usize,
    epochs: usize,
    warmup: usize,
    per_step: bool,
) -> f64 {
    let spe = steps_per_epoch.max(1);
    if !per_step {
        return lr_factor(step / spe, epochs, warmup);
    }
    let e = step as f64 / spe as f64;
    let w = warmup as f64;
    if e < w {
        let alpha = e / w;
        return WARMUP_FACTOR * (1.0 - alpha) + alpha;
    }
    let span = epochs.saturating_sub(warmup).max(1) as f64;
    let ratio = ((e - w) / span).min(1.0);
    0.5 * (1.0 + (std::f64::consts::PI * ratio).cos())
}
