//! Caption masking (docs/method.md §4): GA-DMS's score-driven dual masking for pretraining
//! (§4.1 probability curves, §4.2 BERT-style sampling and replacement, §4.3 the two copies) and
//! IRRA's uniform 15 % MLM masking for fine-tuning (§4.4); plus [`SampleRng`], the small
//! counter-seeded generator that the loader derives per sample from (seed, epoch, index) so that
//! every draw is independent of worker count and timing.

use crate::tokenizer::{CONTEXT_LEN, MASK, TokenIds};

/// Highest id a random replacement can take (§4.2: uniform integer in `[1, 49404]`; the code's
/// `range(1, len(encoder) - 3)`).
pub const MAX_RANDOM_ID: u32 = MASK - 1;
/// IRRA's uniform MLM selection probability for fine-tuning (§4.4).
pub const MLM_PROB: f64 = 0.15;

/// SplitMix64's output function: a bijective 64-bit mixer with full avalanche.
#[inline]
pub fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

const GOLDEN: u64 = 0x9e37_79b9_7f4a_7c15;

/// A small, fast, portable generator (SplitMix64: 64-bit state, passes BigCrush) whose stream
/// is fixed by this file and by nothing else — unlike `rand`'s `SmallRng`, whose algorithm may
/// change between versions. The loader seeds one per sample and purpose with
/// [`SampleRng::for_sample`], i.e. a counter-based scheme: the draws for sample `i` of epoch `e`
/// are a pure function of `(seed, e, i, stream)`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SampleRng {
    state: u64,
}

impl SampleRng {
    /// A generator from a 64-bit seed.
    pub fn new(seed: u64) -> Self {
        SampleRng {
            state: mix64(seed ^ 0x6a09_e667_f3bc_c908),
        }
    }

    /// The generator for `(seed, epoch, index, stream)`: each key part is mixed in turn, so
    /// neighbouring indices or epochs give unrelated streams. `stream` separates purposes
    /// (augmentation, noise mask, informative mask, epoch order).
    pub fn for_sample(seed: u64, epoch: u64, index: u64, stream: u64) -> Self {
        let mut h = mix64(seed ^ 0x510e_527f_ade6_82d1);
        h = mix64(h ^ epoch.wrapping_mul(GOLDEN));
        h = mix64(h ^ index.wrapping_add(0x1f83_d9ab_fb41_bd6b));
        h = mix64(h ^ stream.wrapping_mul(0xbb67_ae85_84ca_a73b));
        SampleRng { state: h }
    }

    /// Next 64 random bits.
    #[inline]
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(GOLDEN);
        mix64(self.state)
    }

    /// Uniform in `[0, 1)` with 53 random bits (like Python's `random.random()`).
    #[inline]
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Uniform in `[lo, hi)`.
    #[inline]
    pub fn uniform(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * self.next_f64()
    }

    /// Uniform integer in `[0, n)` (Lemire's multiply-shift; bias < n / 2^64). `n` must be > 0.
    #[inline]
    pub fn below(&mut self, n: u64) -> u64 {
        debug_assert!(n > 0);
        ((self.next_u64() as u128 * n as u128) >> 64) as u64
    }

    /// True with probability `p`.
    #[inline]
    pub fn chance(&mut self, p: f64) -> bool {
        self.next_f64() < p
    }
}

/// The dual-masking constants (§4.1, CODE values; the paper gives only the caps).
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct MaskingConfig {
    /// Cap of the noise curve, α_n (paper §5.3: 0.2).
    pub alpha_n: f64,
    /// Cap of the informative curve, α_i (paper §5.3: 0.3).
    pub alpha_i: f64,
    /// Steepness λ of both sigmoids (code: 20).
    pub lambda: f64,
    /// Threshold of the informative curve, applied to `s` (code: 0.1).
    pub gamma_info: f64,
    /// Threshold of the noise curve, applied to `1 − s` (code: 0.9).
    pub gamma_noise: f64,
}

impl Default for MaskingConfig {
    fn default() -> Self {
        MaskingConfig {
            alpha_n: 0.2,
            alpha_i: 0.3,
            lambda: 20.0,
            gamma_info: 0.1,
            gamma_noise: 0.9,
        }
    }
}

fn sigmoid(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

impl MaskingConfig {
    /// §4.1 Eq. 9: `p_info(s) = α_i · σ(λ (s − γ_info))` — the informative (MTP) copy masks
    /// high-score tokens (0.036 at s = 0, 0.15 at 0.1, 0.3 at 0.85).
    pub fn p_info(&self, s: f32) -> f64 {
        self.alpha_i * sigmoid(self.lambda * (s as f64 - self.gamma_info))
    }

    /// §4.1 Eq. 5: `p_noise(s) = α_n · σ(λ ((1 − s) − γ_noise))` — the noise (SDM) copy masks
    /// low-score tokens (0.176 at s = 0, 0.1 at 0.1, 6e-8 at 0.85).
    pub fn p_noise(&self, s: f32) -> f64 {
        self.alpha_n * sigmoid(self.lambda * ((1.0 - s as f64) - self.gamma_noise))
    }
}

/// Which selection probability [`mask_caption`] uses per position.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Curve {
    /// `p_info(s_i)` of the config (§4.1 Eq. 9).
    Info(MaskingConfig),
    /// `p_noise(s_i)` of the config (§4.1 Eq. 5).
    Noise(MaskingConfig),
    /// The same probability everywhere, scores ignored (§4.4 fine-tuning MLM: 0.15).
    Uniform(f64),
}

impl Curve {
    /// Selection probability of a token with score `s`.
    pub fn prob(&self, s: f32) -> f64 {
        match self {
            Curve::Info(c) => c.p_info(s),
            Curve::Noise(c) => c.p_noise(s),
            Curve::Uniform(p) => *p,
        }
    }
}

/// True for ids the masking may touch (§4.2: `0 < id < 49405`, i.e. real word pieces; pad/"!"
/// (0), `<|mask|>` (49405), SOT (49406) and EOT (49407) are never selected or replaced).
#[inline]
pub fn is_maskable(id: u32) -> bool {
    id > 0 && id < MASK
}

/// Masks one caption as §4.2 (BERT style, identical for both GA-DMS copies and for MLM):
/// for every maskable position `i` draw `u ~ U(0,1)`; the token is selected when `u < p(s_i)`;
/// then `u' = u / p(s_i)` (the same draw reused) gives `[MASK]` when `u' < 0.8`, a uniform
/// random id in `[1, 49404]` when `u' < 0.9`, otherwise the token is kept; its label is the
/// original id. Unselected positions get label 0 (ignored by the loss). If nothing was selected,
/// position 1 — the first word piece after SOT — is masked and labelled ("at least mask 1");
/// unlike the Python code, which does this unconditionally, it is skipped when position 1 is not
/// maskable (an empty caption, whose position 1 is EOT), so EOT is never touched.
///
/// Returns `(masked ids, labels)`. `scores` are indexed by token position (§4.2).
pub fn mask_caption(
    ids: &TokenIds,
    scores: &[f32; CONTEXT_LEN],
    curve: Curve,
    rng: &mut SampleRng,
) -> (TokenIds, TokenIds) {
    let mut out = *ids;
    let mut labels = [0u32; CONTEXT_LEN];
    let mut any = false;
    for i in 0..CONTEXT_LEN {
        let id = ids[i];
        if !is_maskable(id) {
            continue;
        }
        let p = curve.prob(scores[i]);
        let u = rng.next_f64();
        if u < p {
            let u2 = u / p;
            if u2 < 0.8 {
                out[i] = MASK;
            } else if u2 < 0.9 {
                out[i] = 1 + rng.below(MAX_RANDOM_ID as u64) as u32;
            }
            labels[i] = id;
            any = true;
        }
    }
    if !any && is_maskable(ids[1]) {
        labels[1] = ids[1];
        out[1] = MASK;
    }
    (out, labels)
}

/// Uniform MLM masking for fine-tuning (§4.4): [`mask_caption`] with `p = 0.15` everywhere.
/// Note IRRA's quirk (§4.4): its "clean" caption for SDM/ID is this masked copy; the loader keeps
/// both and the trainer chooses.
pub fn mlm_mask(ids: &TokenIds, rng: &mut SampleRng) -> (TokenIds, TokenIds) {
    mask_caption(ids, &[0.0; CONTEXT_LEN], Curve::Uniform(MLM_PROB), rng)
}

/// The three captions GA-DMS pretraining feeds per sample (§4.3).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DualMasked {
    /// Original ids, used only for GASS (§4.2 `caption_ids_ori`).
    pub clean: TokenIds,
    /// Noise-masked copy (`p_noise`), for SDM; its labels are discarded (§4.3).
    pub noise_masked: TokenIds,
    /// Informative-masked copy (`p_info`), input of the MTP decoder (§4.3).
    pub info_masked: TokenIds,
    /// MTP targets: original id at selected positions, 0 elsewhere.
    pub info_labels: TokenIds,
}

/// GA-DMS dual masking (§4.2): the noise copy and then the informative copy, each drawn
/// independently (fresh draws from `rng`) from the same clean ids and scores, so one token may
/// be masked in both.
pub fn dual_mask(
    ids: &TokenIds,
    scores: &[f32; CONTEXT_LEN],
    cfg: &MaskingConfig,
    rng: &mut SampleRng,
) -> DualMasked {
    let (noise_masked, _) = mask_caption(ids, scores, Curve::Noise(*cfg), rng);
    let (info_masked, info_labels) = mask_caption(ids, scores, Curve::Info(*cfg), rng);
    DualMasked {
        clean: *ids,
        noise_masked,
        info_masked,
        info_labels,
    }
}
