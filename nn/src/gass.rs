//! GASS, the Gradient-Attention Similarity Score of GA-DMS: one importance score in `[0, 1]` per
//! caption token, computed from the *clean* caption and its image. The scores drive the next
//! epoch's dual masking.
//!
//! This module implements the algorithm that the official code computes
//! (docs/method.md §3.2; official `model/build.py`: `clip_encode_text_dense`,
//! `attention_layer`, `multi_scale_pooling`, `enhanced_sim_qk`, `grad_eclip_enhanced_batched`).
//! That code adapts Grad-ECLIP's text explanation (Zhao et al., "Gradient-based Visual
//! Explanation for Transformer-based CLIP", ICML 2024; `Cyang-Zhao/Grad-Eclip`
//! `generate_emap.py`) to batches, with multi-scale pooling (MSP) and attention modulation.
//! Symbols: B = batch, S = `CTX` (77), W = text width, n = re-run layers, `eos_b` = argmax of
//! row b's ids.
//!
//! **A. Surrogate forward pass.**
//! 1. `h = token_embedding(ids) + positional_embedding`. Blocks `0..L−n` run normally: causal,
//!    `H` heads. This part has no tape.
//! 2. A fresh **leaky** tape starts at `h` [B, S, W]. Blocks `L−n..L` are re-run by hand with
//!    **one attention head over all W dims**:
//!    `x = ln_1(h)`, `q, k, v = x·W_{q,k,v}ᵀ + b` [B, S, W],
//!    `A = softmax(q·kᵀ/√W + causal)` [B, S, S], `o_l = A·v` [B, S, W] (pre-`out_proj`, kept
//!    with `retaped::<NoneTape>()`), `h = h + out_proj(o_l)`, `h = h + mlp(ln_2(h))`.
//! 3. `t = normalize(ln_final(h)[eos_b]·P)` [B, EMBED] and `v̂ = normalize(image_cls)`.
//!    `C = v̂·tᵀ`, and a single backward of `trace(C) = Σ_b v̂_b·t_b` gives every
//!    `G_l = ∂trace(C)/∂o_l`. Text b depends only on row b, so this equals the official
//!    `autograd.grad(C, o_l, grad_outputs=I_B)`. Take `g_b = G_l[b, eos_b]` [W].
//!
//! **B. Per-layer maps.** These are computed on the host in f64. Per layer l and sample b:
//! * `w_b[n] = cos(MSP(q)[eos_b], MSP(k)[n])` for all n. MSP runs over the sequence axis,
//!   padding included (see [`multi_scale_pool`]). Then a per-sample min–max over all S
//!   positions: `(w − min)/(max − min + 1e-8)`.
//! * `r_b[n] = Σ_d g_b[d]·v[b,n,d]·w_b[n]` (raw importance); `m_b[n] = [0 < n < eos_b]`;
//!   `a_b[n] = A[b, eos_b, n]`.
//! * `M_l[b,n] = (r·m)·(a·m) / (Z_b + 1e-8)`. [`GassNorm::Official`] takes
//!   `Z_b = Σ_{n'<S} r_b[n']`, the sum of raw importance over *all* positions, as shipped; a
//!   negative sum flips the sign of the layer map. [`GassNorm::Paper`] takes
//!   `Z_b = Σ_n a_b[n]·m_b[n]`: paper Eq. 3, and also what the code's own comment
//!   ("Normalize attention weights over relevant tokens") says it intends.
//!
//! **C. Aggregation.** `E = ReLU(Σ_l M_l)·m`, then `S = (E − min E)/(max E − min E)` with min and
//! max over the whole B×S batch, or all zeros when `max = min`. The scores are relative to the
//! most important token of the batch.
//!
//! **Gradients.** The image CLS feature is a constant here, and no gradient reaches the vision
//! tower. In the official code `autograd.grad` reads only `o_l`, so the GASS pass never updates
//! vision (or any) parameters. The pass records a tape of its own (a fresh leaky `Gradients`, no
//! `alloc_grads`), which is dropped before returning. It never touches an optimiser's
//! gradients. dfdx has no `requires_grad = false`, so the backward still computes the
//! parameter gradients of the n re-run blocks and discards them. Blocks `0..L−n` and the
//! embeddings run without a tape, so they cost no backward work.
//!
//! **Differences from the official code.** It runs in f32/f64 where the official code uses
//! fp16 autocast. `n > L` is clamped to `L`, like Python's `resblocks[-n:]`. `n = 0` is an
//! error, because the official code's `[-0:]` would silently re-run every block.

use crate::layers::Float;
use crate::loss::l2_normalize;
use crate::text::{TextInput, TextTower};
use dfdx::prelude::*;

/// How each layer map is normalised (docs/method.md §3.2, "layer map").
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum GassNorm {
    /// Divide by the masked EOS-attention sum `Σ_n a·m + 1e-8` (paper Eq. 3). Default.
    #[default]
    Paper,
    /// Divide by the sum of raw importance over all positions, `Σ_n r + 1e-8`, as the official
    /// code ships it (for parity).
    Official,
}

/// GASS settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GassConfig {
    /// Number of final text blocks re-run with single-head attention (GA-DMS: 8). Values
    /// above the tower depth are clamped, like Python's `resblocks[-n:]`. Must be ≥ 1.
    pub layers: usize,
    /// MSP pooling scales (GA-DMS: `[1, 2]`). Each must be ≥ 1; 1 is the identity.
    pub scales: Vec<usize>,
    /// Layer-map normalisation.
    pub norm: GassNorm,
    /// Keep the per-layer intermediates in [`GassOutput::per_layer`] (for `explain` and tests).
    pub keep_layers: bool,
}

impl Default for GassConfig {
    fn default() -> Self {
        GassConfig {
            layers: 8,
            scales: vec![1, 2],
            norm: GassNorm::Paper,
            keep_layers: false,
        }
    }
}

/// Intermediates of one re-run layer, row-major over the batch.
#[derive(Clone, Debug, PartialEq)]
pub struct GassLayer {
    /// Index of the block in the tower (`L−n..L`).
    pub block: usize,
    /// `g_b = ∂trace(C)/∂o_l` at the EOS row, [B·W].
    pub g: Vec<f32>,
    /// Min–max-normalised MSP q–k cosine, [B·CTX].
    pub w: Vec<f32>,
    /// Raw importance `Σ_d g·v·w`, [B·CTX].
    pub r: Vec<f32>,
    /// EOS attention row of the single-head map, [B·CTX].
    pub a: Vec<f32>,
    /// Layer map `M_l` under the configured normalisation, [B·CTX].
    pub map: Vec<f32>,
}

/// GASS result for a batch.
#[derive(Clone, Debug, PartialEq)]
pub struct GassOutput {
    /// Batch size B.
    pub batch: usize,
    /// Context length S (= `CTX`).
    pub ctx: usize,
    /// Number of re-run blocks actually used (`min(cfg.layers, L)`).
    pub layers: usize,
    /// Scores in `[0, 1]`, [B·CTX] row-major. Zero outside `1..eos_b`.
    pub scores: Vec<f32>,
    /// `E = ReLU(Σ_l M_l)·m` before the batch min–max, [B·CTX].
    pub emap: Vec<f32>,
    /// `C[b,b]`, the cosine of image b and the surrogate text feature b, [B].
    pub cos: Vec<f32>,
    /// The surrogate text feature before normalisation, [B·EMBED].
    pub text_features: Vec<f32>,
    /// Per-layer intermediates when [`GassConfig::keep_layers`] is set, first re-run block first.
    pub per_layer: Option<Vec<GassLayer>>,
}

impl GassOutput {
    /// The scores of caption `b`, `CTX` values.
    pub fn row(&self, b: usize) -> &[f32] {
        &self.scores[b * self.ctx..(b + 1) * self.ctx]
    }

    /// The scores as one slice per caption.
    pub fn rows(&self) -> impl Iterator<Item = &[f32]> {
        self.scores.chunks_exact(self.ctx)
    }
}

/// Why GASS could not run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GassError {
    /// The image and caption batches differ in size.
    BatchMismatch {
        /// Rows of `image_cls`.
        images: usize,
        /// Rows of the caption ids.
        texts: usize,
    },
    /// `cfg.layers` is 0.
    NoLayers,
    /// `cfg.scales` is empty or holds a 0.
    BadScales(Vec<usize>),
    /// An EOS index is not inside the context.
    EosOutOfRange {
        /// Caption row.
        row: usize,
        /// Its EOS index.
        eos: usize,
    },
}

impl std::fmt::Display for GassError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            GassError::BatchMismatch { images, texts } => write!(
                f,
                "GASS: {images} image features but {texts} captions (they must pair up)"
            ),
            GassError::NoLayers => write!(f, "GASS: the number of re-run layers must be ≥ 1"),
            GassError::BadScales(s) => {
                write!(f, "GASS: MSP scales must be non-empty and ≥ 1, got {s:?}")
            }
            GassError::EosOutOfRange { row, eos } => {
                write!(
                    f,
                    "GASS: caption {row} has EOS index {eos} outside the context"
                )
            }
        }
    }
}

impl std::error::Error for GassError {}

/// Host copies of one re-run layer's tensors.
struct Saved<E> {
    q: Vec<E>,
    k: Vec<E>,
    v: Vec<E>,
}

/// `A·v` with `A = softmax(q·kᵀ/√W + mask)`, one head over all W dims: `q`, `k`, `v`
/// [B, S, W] → [B, S, W] (official `attention_layer`). The fused core where it applies,
/// else the dfdx composition, which scales q before the product as the official code does.
fn single_head_attention<B: Dim, S: Dim, const W: usize, E: Float, D: Device<E>, T>(
    q: Tensor<(B, S, Const<W>), E, D, T>,
    k: Tensor<(B, S, Const<W>), E, D, T>,
    v: Tensor<(B, S, Const<W>), E, D, T>,
    mask: &Tensor<(S, S), E, D>,
) -> Tensor<(B, S, Const<W>), E, D, T>
where
    T: Tape<E, D> + Merge<T>,
{
    let (q, k, v) = match crate::fast::attention((q, k, v), Some(mask), 1) {
        Ok(o) => return o,
        Err(qkv) => qkv,
    };
    let scale = E::from_f64(1.0 / (W as f64).sqrt()).unwrap();
    let scores = (q * scale).matmul(k.permute::<_, Axes3<0, 2, 1>>()); // [B, S, S]
    let sh = *scores.shape();
    let scores = scores + mask.clone().broadcast_like(&sh);
    // contiguous input (dfdx 0.13's softmax backward is wrong only on permuted inputs)
    scores.softmax::<Axis<2>>().matmul(v)
}

/// Row `e` of one sample's single-head attention, `softmax_n(q_e·k_n/√W)` over the causal
/// keys `n ≤ e` (0 beyond), in f64; `q`, `k` are that sample's [S, W].
fn eos_attention_row<E: Float>(q: &[E], k: &[E], e: usize, s: usize, w: usize) -> Vec<f64> {
    let f = |x: E| x.to_f64().unwrap();
    let qe = &q[e * w..(e + 1) * w];
    let scale = 1.0 / (w as f64).sqrt();
    let logits: Vec<f64> = (0..=e)
        .map(|n| {
            let kn = &k[n * w..(n + 1) * w];
            qe.iter().zip(kn).map(|(&a, &b)| f(a) * f(b)).sum::<f64>() * scale
        })
        .collect();
    let top = logits.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let ex: Vec<f64> = logits.iter().map(|&l| (l - top).exp()).collect();
    let z: f64 = ex.iter().sum();
    let mut row = vec![0.0; s];
    for (dst, x) in row.iter_mut().zip(&ex) {
        *dst = x / z;
    }
    row
}

/// GASS scores for a batch of (image, clean caption) pairs; see the module docs for the
/// algorithm.
///
/// * `text`: the text tower, read only.
/// * `image_cls`: the image CLS features [B, EMBED], un-normalised (`cls_token` of the vision
///   tower's output). They are a constant here, so no gradient flows into the vision tower.
/// * `ids`: the clean (unmasked) caption ids [B, CTX] and their EOS positions.
///
/// The result is [B·CTX] scores in `[0, 1]`, zero outside `1..eos_b`, with the batch maximum at
/// 1 unless every score is 0.
pub fn gass_scores<
    const VOCAB: usize,
    const CTX: usize,
    const W: usize,
    const H: usize,
    const HD: usize,
    const F: usize,
    const L: usize,
    const EMBED: usize,
    E: Float,
    D: Device<E>,
>(
    text: &TextTower<VOCAB, CTX, W, H, HD, F, L, EMBED, E, D>,
    image_cls: Tensor<(usize, Const<EMBED>), E, D>,
    ids: &TextInput<CTX, D>,
    cfg: &GassConfig,
) -> Result<GassOutput, GassError> {
    let (mut out, emap) = gass_raw(text, image_cls, ids, cfg)?;
    out.scores = batch_min_max(&emap);
    Ok(out)
}

/// The un-normalised map `E = ReLU(Σ_l M_l)·m` of [`gass_scores`] (before step C's batch
/// min–max), [B·CTX] row-major, in f64. Every row depends on its own (image, caption) pair
/// only, so the maps of several parts of a batch, concatenated and passed to
/// [`batch_min_max`], give exactly the scores of [`gass_scores`] on the whole batch (gradient
/// accumulation over micro-batches).
pub fn gass_emap<
    const VOCAB: usize,
    const CTX: usize,
    const W: usize,
    const H: usize,
    const HD: usize,
    const F: usize,
    const L: usize,
    const EMBED: usize,
    E: Float,
    D: Device<E>,
>(
    text: &TextTower<VOCAB, CTX, W, H, HD, F, L, EMBED, E, D>,
    image_cls: Tensor<(usize, Const<EMBED>), E, D>,
    ids: &TextInput<CTX, D>,
    cfg: &GassConfig,
) -> Result<Vec<f64>, GassError> {
    Ok(gass_raw(text, image_cls, ids, cfg)?.1)
}

/// Step C's normalisation: `(E − min E)/(max E − min E)` with min and max over every entry of
/// `emap` (the whole B×S batch), or all zeros when `max = min`.
pub fn batch_min_max(emap: &[f64]) -> Vec<f32> {
    let lo = emap.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = emap.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if hi > lo {
        emap.iter()
            .map(|&x| ((x - lo) / (hi - lo)) as f32)
            .collect()
    } else {
        vec![0.0; emap.len()]
    }
}

/// [`gass_scores`] up to the map `E` (returned in f64); the output's `scores` are left empty.
fn gass_raw<
    const VOCAB: usize,
    const CTX: usize,
    const W: usize,
    const H: usize,
    const HD: usize,
    const F: usize,
    const L: usize,
    const EMBED: usize,
    E: Float,
    D: Device<E>,
>(
    text: &TextTower<VOCAB, CTX, W, H, HD, F, L, EMBED, E, D>,
    image_cls: Tensor<(usize, Const<EMBED>), E, D>,
    ids: &TextInput<CTX, D>,
    cfg: &GassConfig,
) -> Result<(GassOutput, Vec<f64>), GassError> {
    let b = ids.len();
    if image_cls.shape().0 != b {
        return Err(GassError::BatchMismatch {
            images: image_cls.shape().0,
            texts: b,
        });
    }
    if cfg.layers == 0 {
        return Err(GassError::NoLayers);
    }
    if cfg.scales.is_empty() || cfg.scales.contains(&0) {
        return Err(GassError::BadScales(cfg.scales.clone()));
    }
    let eos: Vec<usize> = ids.eos.as_vec();
    if let Some((row, &e)) = eos.iter().enumerate().find(|(_, e)| **e >= CTX) {
        return Err(GassError::EosOutOfRange { row, eos: e });
    }
    let n = cfg.layers.min(L);
    let first = L - n;
    let blocks = &text.transformer.resblocks.modules;
    let dev = text.text_projection.device().clone();
    let mask = text.causal_mask(&dev);

    // ---- A.1: the first L−n blocks, normal multi-head attention, no tape.
    let mut h0 = text.embed(ids.ids.clone(), NoneTape);
    for blk in &blocks[..first] {
        h0 = blk.forward(h0, Some(&mask), None);
    }

    // ---- A.2: the last n blocks re-run with one head over all W dims, on a fresh leaky tape.
    let mut h = h0.leaky_traced();
    let mut qkv = Vec::with_capacity(n);
    let mut outs = Vec::with_capacity(n);
    for blk in &blocks[first..] {
        let x = blk.ln_1.forward3(h.with_empty_tape());
        let q = crate::fast::linear(&blk.attn.q_proj, x.with_empty_tape()); // [B, S, W]
        let k = crate::fast::linear(&blk.attn.k_proj, x.with_empty_tape());
        let v = crate::fast::linear(&blk.attn.v_proj, x);
        qkv.push([
            q.retaped::<NoneTape>(),
            k.retaped::<NoneTape>(),
            v.retaped::<NoneTape>(),
        ]);
        let o = single_head_attention(q, k, v, &mask); // o_l [B, S, W], pre-out_proj
        outs.push(o.retaped::<NoneTape>());
        h = h + crate::fast::linear(&blk.attn.out_proj, o);
        let x = blk.ln_2.forward3(h.with_empty_tape());
        h = h + blk.mlp.forward(x);
    }

    // ---- A.3: surrogate text feature, C = v̂·tᵀ, one backward of trace(C).
    let t = text
        .ln_final
        .forward2(h.select(ids.eos.clone()))
        .matmul(text.text_projection.retaped::<OwnedTape<E, D>>()); // [B, EMBED]
    let tv = t.as_vec();
    let img_hat = l2_normalize(image_cls); // constant, no tape
    let ihv = img_hat.as_vec();
    let objective = (l2_normalize(t) * img_hat).sum::<Rank0, _>();
    let grads = objective.backward();
    let g_layers: Vec<_> = outs.iter().map(|o| grads.get(o)).collect();
    drop(grads); // the whole GASS tape goes here: nothing reaches any optimiser

    // cos = C[b,b], for diagnostics
    let f = |x: E| x.to_f64().unwrap();
    let cos: Vec<f32> = (0..b)
        .map(|i| {
            let tr = &tv[i * EMBED..(i + 1) * EMBED];
            let nt = tr.iter().map(|&x| f(x) * f(x)).sum::<f64>().sqrt();
            let d: f64 = tr
                .iter()
                .zip(&ihv[i * EMBED..(i + 1) * EMBED])
                .map(|(&a, &c)| f(a) * f(c))
                .sum();
            (d / nt) as f32
        })
        .collect();

    // ---- B: per-layer maps, on the GPU where it can (fast::cuda), else on the host (f64).
    let s = CTX;
    let valid = |bi: usize, j: usize| j > 0 && j < eos[bi];
    let (total, per_layer) = match device_maps(&qkv, &g_layers, &eos, (CTX, W), cfg) {
        Some(total) => (total, None),
        None => host_maps(&qkv, &g_layers, &eos, first, (CTX, W), cfg),
    };

    // ---- C: ReLU of the layer sum and mask (the batch min–max is the caller's).
    let emap: Vec<f64> = total
        .iter()
        .enumerate()
        .map(|(i, &x)| if valid(i / s, i % s) { x.max(0.0) } else { 0.0 })
        .collect();
    let out = GassOutput {
        batch: b,
        ctx: s,
        layers: n,
        scores: Vec::new(),
        emap: emap.iter().map(|&x| x as f32).collect(),
        cos,
        text_features: tv.iter().map(|&x| f(x) as f32).collect(),
        per_layer,
    };
    Ok((out, emap))
}

/// One re-run layer's `q`, `k`, `v` [B, S, W] (no tape).
type LayerQkv<S, E, D> = [Tensor<S, E, D>; 3];

/// Step B on the host in f64: the sum over layers of the per-layer maps [B·S], and the
/// per-layer intermediates when `cfg.keep_layers` is set. `qkv` and `g_layers` (the
/// gradients of the `o_l`) are copied to the host one layer at a time.
fn host_maps<S: Shape, E: Float, D: Device<E>>(
    qkv: &[LayerQkv<S, E, D>],
    g_layers: &[Tensor<S, E, D>],
    eos: &[usize],
    first: usize,
    (s, w): (usize, usize),
    cfg: &GassConfig,
) -> (Vec<f64>, Option<Vec<GassLayer>>) {
    let f = |x: E| x.to_f64().unwrap();
    let b = eos.len();
    let valid = |bi: usize, j: usize| j > 0 && j < eos[bi];
    let mut total = vec![0.0f64; b * s];
    let mut per_layer = cfg.keep_layers.then(Vec::new);
    let mut qb = vec![0.0f64; s * w];
    let mut kb = vec![0.0f64; s * w];
    for (li, ([q, k, v], g)) in qkv.iter().zip(g_layers).enumerate() {
        let sv = Saved {
            q: q.as_vec(),
            k: k.as_vec(),
            v: v.as_vec(),
        };
        let gl = g.as_vec();
        let mut rec = cfg.keep_layers.then(|| GassLayer {
            block: first + li,
            g: Vec::with_capacity(b * w),
            w: Vec::with_capacity(b * s),
            r: Vec::with_capacity(b * s),
            a: Vec::with_capacity(b * s),
            map: Vec::with_capacity(b * s),
        });
        for bi in 0..b {
            let e = eos[bi];
            let base = bi * s * w;
            for (dst, src) in qb.iter_mut().zip(&sv.q[base..base + s * w]) {
                *dst = f(*src);
            }
            for (dst, src) in kb.iter_mut().zip(&sv.k[base..base + s * w]) {
                *dst = f(*src);
            }
            let qm = multi_scale_pool(&qb, s, w, &cfg.scales);
            let km = multi_scale_pool(&kb, s, w, &cfg.scales);
            let wj = enhanced_sim(&qm[e * w..(e + 1) * w], &km, s, w);
            let g: Vec<f64> = gl[base + e * w..base + (e + 1) * w]
                .iter()
                .map(|&x| f(x))
                .collect();
            let r: Vec<f64> = (0..s)
                .map(|j| {
                    let vrow = &sv.v[base + j * w..base + (j + 1) * w];
                    g.iter().zip(vrow).map(|(&gd, &vd)| gd * f(vd)).sum::<f64>() * wj[j]
                })
                .collect();
            let a = eos_attention_row(
                &sv.q[base..base + s * w],
                &sv.k[base..base + s * w],
                e,
                s,
                w,
            );
            let z = match cfg.norm {
                GassNorm::Official => r.iter().sum::<f64>(),
                GassNorm::Paper => (0..s).filter(|&j| valid(bi, j)).map(|j| a[j]).sum(),
            } + 1e-8;
            for j in 0..s {
                let m = if valid(bi, j) { r[j] * a[j] / z } else { 0.0 };
                total[bi * s + j] += m;
                if let Some(rec) = rec.as_mut() {
                    rec.map.push(m as f32);
                }
            }
            if let Some(rec) = rec.as_mut() {
                rec.g.extend(g.iter().map(|&x| x as f32));
                rec.w.extend(wj.iter().map(|&x| x as f32));
                rec.r.extend(r.iter().map(|&x| x as f32));
                rec.a.extend(a.iter().map(|&x| x as f32));
            }
        }
        if let (Some(all), Some(rec)) = (per_layer.as_mut(), rec) {
            all.push(rec);
        }
    }
    (total, per_layer)
}

/// Step B on the GPU ([`crate::fast`]'s CUDA arm) when it applies: `f32` on CUDA, fused
/// kernels on, no per-layer intermediates asked for, at most 4 MSP scales.
#[cfg(feature = "cuda")]
fn device_maps<S: Shape, E: Float, D: Device<E>>(
    qkv: &[LayerQkv<S, E, D>],
    g_layers: &[Tensor<S, E, D>],
    eos: &[usize],
    dims: (usize, usize),
    cfg: &GassConfig,
) -> Option<Vec<f64>> {
    use crate::fast::cuda;
    if !cuda::gass_on_device::<E, D>(&cfg.scales, cfg.keep_layers) {
        return None;
    }
    let layers: Vec<cuda::GassLayerTensors<S, E, D>> = qkv
        .iter()
        .zip(g_layers)
        .map(|([q, k, v], g)| [q.clone(), k.clone(), v.clone(), g.clone()])
        .collect();
    let official = cfg.norm == GassNorm::Official;
    cuda::gass_maps(&layers, eos, dims, &cfg.scales, official)
}

/// Step B on the GPU: not in a build without CUDA.
#[cfg(not(feature = "cuda"))]
fn device_maps<S: Shape, E: Float, D: Device<E>>(
    _: &[LayerQkv<S, E, D>],
    _: &[Tensor<S, E, D>],
    _: &[usize],
    _: (usize, usize),
    _: &GassConfig,
) -> Option<Vec<f64>> {
    None
}

/// Multi-scale pooling over the sequence axis of one sample's features `x` [S, W] (row-major),
/// as the official `multi_scale_pooling`. For each scale c it takes the mean of each
/// non-overlapping window of c tokens; the `S mod c` leftover tokens are averaged into one
/// extra value, which gives `P = ⌈S/c⌉` values. It then resizes back to S with 1-D linear
/// interpolation, `align_corners = False` (PyTorch `F.interpolate(mode="linear")`):
/// `src = max(0, (j + ½)·P/S − ½)`, `i0 = ⌊src⌋`, `i1 = min(i0 + 1, P − 1)`. The result is the
/// mean over the scales. Scale 1 is the identity.
pub fn multi_scale_pool(x: &[f64], s: usize, w: usize, scales: &[usize]) -> Vec<f64> {
    assert_eq!(x.len(), s * w, "multi_scale_pool: x must be [S, W]");
    let mut out = vec![0.0; s * w];
    let inv_scales = 1.0 / scales.len() as f64;
    for &c in scales {
        assert!(c >= 1, "multi_scale_pool: scale 0");
        let full = s / c;
        let p = full + usize::from(!s.is_multiple_of(c));
        let mut pooled = vec![0.0; p * w];
        for i in 0..p {
            let (lo, hi) = if i < full {
                (i * c, (i + 1) * c)
            } else {
                (full * c, s)
            };
            let row = &mut pooled[i * w..(i + 1) * w];
            for t in lo..hi {
                for (r, &v) in row.iter_mut().zip(&x[t * w..(t + 1) * w]) {
                    *r += v;
                }
            }
            let inv = 1.0 / (hi - lo) as f64;
            row.iter_mut().for_each(|r| *r *= inv);
        }
        let ratio = p as f64 / s as f64;
        for j in 0..s {
            let src = ((j as f64 + 0.5) * ratio - 0.5).max(0.0);
            let i0 = (src.floor() as usize).min(p - 1);
            let i1 = (i0 + 1).min(p - 1);
            let lam = src - i0 as f64;
            let dst = &mut out[j * w..(j + 1) * w];
            for d in 0..w {
                let v = (1.0 - lam) * pooled[i0 * w + d] + lam * pooled[i1 * w + d];
                dst[d] += v * inv_scales;
            }
        }
    }
    out
}

/// `enhanced_sim_qk` for one sample: the cosine of the (pooled) EOS query `q_eos` [W] with
/// every pooled key `k` [S, W], then min–max over the S positions with ε = 1e-8.
/// `F.normalize` clamps the norms at 1e-12.
fn enhanced_sim(q_eos: &[f64], k: &[f64], s: usize, w: usize) -> Vec<f64> {
    let norm = |v: &[f64]| v.iter().map(|x| x * x).sum::<f64>().sqrt().max(1e-12);
    let nq = norm(q_eos);
    let cos: Vec<f64> = (0..s)
        .map(|j| {
            let kr = &k[j * w..(j + 1) * w];
            let d: f64 = q_eos.iter().zip(kr).map(|(a, b)| a * b).sum();
            d / (nq * norm(kr))
        })
        .collect();
    let lo = cos.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = cos.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    cos.iter().map(|&c| (c - lo) / (hi - lo + 1e-8)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn msp_scale_one_is_identity_and_scale_two_matches_hand_values() {
        let x: Vec<f64> = (0..5).map(|i| i as f64 * i as f64).collect(); // S=5, W=1
        assert_eq!(multi_scale_pool(&x, 5, 1, &[1]), x);
        // c=2: pooled [0.5, 6.5, 16] (P=3); src_j = (j+.5)·0.6 − .5 = [0, .4, 1, 1.6, 2.2]
        let y = multi_scale_pool(&x, 5, 1, &[2]);
        let want = [0.5, 0.5 + 0.4 * 6.0, 6.5, 6.5 + 0.6 * 9.5, 16.0];
        for (a, b) in y.iter().zip(want) {
            assert!((a - b).abs() < 1e-12, "{y:?}");
        }
    }
}
