//! Multi-head scaled-dot-product attention with an additive mask and optional access to the
//! attention probabilities (GASS and the MTP decoder need them).
//!
//! Reference: PyTorch `nn.MultiheadAttention` as used by OpenAI CLIP's
//! `ResidualAttentionBlock` (fused `in_proj_weight` [3W, W] = cat(q, k, v)); here the three
//! projections are separate `Linear<W, W>` and the checkpoint code splits / fuses them.

use crate::layers::Float;
use dfdx::nn::modules::Linear;
use dfdx::nn::tensor_collection::*;
use dfdx::prelude::*;

/// Attention probabilities, [B, HEADS, Sq, Sk].
pub type Probs<B, const H: usize, Sq, Sk, E, D> = Tensor<(B, Const<H>, Sq, Sk), E, D>;

/// Multi-head attention over width `W` with `H` heads of `HD` dims each.
///
/// `W == H * HD` is checked at compile time (stable Rust cannot compute `W / H` in a type).
#[derive(Clone, Debug)]
pub struct Attention<const W: usize, const H: usize, const HD: usize, E: Dtype, D: Storage<E>> {
    /// Query projection, weight [W, W] (rows 0..W of `in_proj_weight`).
    pub q_proj: Linear<W, W, E, D>,
    /// Key projection (rows W..2W of `in_proj_weight`).
    pub k_proj: Linear<W, W, E, D>,
    /// Value projection (rows 2W..3W of `in_proj_weight`).
    pub v_proj: Linear<W, W, E, D>,
    /// Output projection `out_proj`, [W, W].
    pub out_proj: Linear<W, W, E, D>,
}

impl<const W: usize, const H: usize, const HD: usize, E: Dtype, D: Storage<E>>
    Attention<W, H, HD, E, D>
{
    /// Compile-time check that the heads tile the width exactly.
    pub const SHAPE_OK: () = assert!(
        W == H * HD && H > 0,
        "attention: the head count must divide the width (WIDTH must equal HEADS * HEAD_DIM)"
    );
}

impl<const W: usize, const H: usize, const HD: usize, E: Float, D: Device<E>> TensorCollection<E, D>
    for Attention<W, H, HD, E, D>
{
    type To<E2: Dtype, D2: Device<E2>> = Attention<W, H, HD, E2, D2>;
    fn iter_tensors<V: ModuleVisitor<Self, E, D>>(
        visitor: &mut V,
    ) -> Result<Option<Self::To<V::E2, V::D2>>, V::Err> {
        #[allow(clippy::let_unit_value)]
        let () = Self::SHAPE_OK;
        visitor.visit_fields(
            (
                Self::module("q_proj", |s| &s.q_proj, |s| &mut s.q_proj),
                Self::module("k_proj", |s| &s.k_proj, |s| &mut s.k_proj),
                Self::module("v_proj", |s| &s.v_proj, |s| &mut s.v_proj),
                Self::module("out_proj", |s| &s.out_proj, |s| &mut s.out_proj),
            ),
            |(q_proj, k_proj, v_proj, out_proj)| Attention {
                q_proj,
                k_proj,
                v_proj,
                out_proj,
            },
        )
    }
}

impl<const W: usize, const H: usize, const HD: usize, E: Float, D: Device<E>>
    Attention<W, H, HD, E, D>
{
    /// Self-attention. `x` [B, S, W]; `mask` [S, S] is added to the scores (−∞ hides a key);
    /// when `probs_out` is given it receives the probabilities [B, H, S, S] (same tensor id as
    /// the graph's, so a leaky tape's gradient store can be queried with it).
    pub fn forward<B: Dim, S: Dim, T: Tape<E, D>>(
        &self,
        x: Tensor<(B, S, Const<W>), E, D, T>,
        mask: Option<&Tensor<(S, S), E, D>>,
        probs_out: Option<&mut Option<Probs<B, H, S, S, E, D>>>,
    ) -> Tensor<(B, S, Const<W>), E, D, T> {
        self.forward_cross(x.with_empty_tape(), x, mask, probs_out)
    }

    /// Cross-attention: queries from `xq` [B, Sq, W], keys and values from `xkv` [B, Sk, W];
    /// returns [B, Sq, W]. `mask` is [Sq, Sk].
    pub fn forward_cross<B: Dim, Sq: Dim, Sk: Dim, T: Tape<E, D>>(
        &self,
        xq: Tensor<(B, Sq, Const<W>), E, D, T>,
        xkv: Tensor<(B, Sk, Const<W>), E, D, T>,
        mask: Option<&Tensor<(Sq, Sk), E, D>>,
        probs_out: Option<&mut Option<Probs<B, H, Sq, Sk, E, D>>>,
    ) -> Tensor<(B, Sq, Const<W>), E, D, T> {
        let out = self.heads(xq, xkv, mask, probs_out);
        crate::fast::linear(&self.out_proj, out)
    }

    /// `residual + forward(x)` (the residual stream of a block): on CUDA the output
    /// projection's bias and the residual are added in one kernel.
    pub fn forward_add<B: Dim, S: Dim, T: Tape<E, D>>(
        &self,
        x: Tensor<(B, S, Const<W>), E, D, T>,
        residual: Tensor<(B, S, Const<W>), E, D, T>,
        mask: Option<&Tensor<(S, S), E, D>>,
        probs_out: Option<&mut Option<Probs<B, H, S, S, E, D>>>,
    ) -> Tensor<(B, S, Const<W>), E, D, T> {
        let out = self.heads(x.with_empty_tape(), x, mask, probs_out);
        crate::fast::linear_residual(&self.out_proj, out, residual)
    }

    /// Everything but the output projection: `softmax(q·kᵀ/√HD + mask)·v` for every head,
    /// [B, Sq, W].
    fn heads<B: Dim, Sq: Dim, Sk: Dim, T: Tape<E, D>>(
        &self,
        xq: Tensor<(B, Sq, Const<W>), E, D, T>,
        xkv: Tensor<(B, Sk, Const<W>), E, D, T>,
        mask: Option<&Tensor<(Sq, Sk), E, D>>,
        probs_out: Option<&mut Option<Probs<B, H, Sq, Sk, E, D>>>,
    ) -> Tensor<(B, Sq, Const<W>), E, D, T> {
        #[allow(clippy::let_unit_value)]
        let () = Self::SHAPE_OK;
        let (b, sq, _) = *xq.shape();
        let sk = xkv.shape().1;
        let q = crate::fast::linear(&self.q_proj, xq);
        let k = crate::fast::linear(&self.k_proj, xkv.with_empty_tape());
        let v = crate::fast::linear(&self.v_proj, xkv);
        let (q, k, v) = match probs_out {
            // The fused core keeps its probabilities to itself: GASS and the MTP decoder,
            // which read them (and their gradients), take the composed path below.
            Some(_) => (q, k, v),
            None => match crate::fast::attention((q, k, v), mask, H) {
                Ok(out) => return out,
                Err(qkv) => qkv,
            },
        };
        let q = q
            .reshape_like(&(b, sq, Const::<H>, Const::<HD>))
            .permute::<_, Axes4<0, 2, 1, 3>>();
        let k = k
            .reshape_like(&(b, sk, Const::<H>, Const::<HD>))
            .permute::<_, Axes4<0, 2, 3, 1>>();
        let v = v
            .reshape_like(&(b, sk, Const::<H>, Const::<HD>))
            .permute::<_, Axes4<0, 2, 1, 3>>();
        let scale = E::from_f64(1.0 / (HD as f64).sqrt()).unwrap();
        let scores = q.matmul(k) * scale; // [B, H, Sq, Sk], contiguous
        let scores = match mask {
            Some(m) => {
                let sh = *scores.shape();
                scores + m.clone().broadcast_like(&sh)
            }
            None => scores,
        };
        // Contiguous input: dfdx 0.13's softmax backward is only wrong on permuted inputs.
        let probs = scores.softmax::<Axis<3>>();
        if let Some(slot) = probs_out {
            *slot = Some(probs.retaped::<NoneTape>());
        }
        probs
            .matmul(v)
            .permute::<_, Axes4<0, 2, 1, 3>>()
            .reshape_like(&(b, sq, Const::<W>))
    }
}
