//! Pre-LN residual block and the layer stack (OpenAI CLIP `ResidualAttentionBlock`, `Transformer`).

use crate::attention::{Attention, Probs};
use crate::layers::{Float, LayerNorm, Mlp};
use crate::pool::cls_token;
use dfdx::nn::modules::Repeated;
use dfdx::nn::tensor_collection::*;
use dfdx::prelude::*;

/// `x + attn(ln_1(x))`, then `x + mlp(ln_2(x))`; width `W`, `H` heads of `HD`, MLP width `F`.
#[derive(Clone, Debug)]
pub struct ResBlock<
    const W: usize,
    const H: usize,
    const HD: usize,
    const F: usize,
    E: Dtype,
    D: Storage<E>,
> {
    /// LayerNorm before attention.
    pub ln_1: LayerNorm<W, E, D>,
    /// Multi-head self-attention.
    pub attn: Attention<W, H, HD, E, D>,
    /// LayerNorm before the MLP.
    pub ln_2: LayerNorm<W, E, D>,
    /// QuickGELU MLP.
    pub mlp: Mlp<W, F, E, D>,
}

impl<const W: usize, const H: usize, const HD: usize, const F: usize, E: Float, D: Device<E>>
    TensorCollection<E, D> for ResBlock<W, H, HD, F, E, D>
{
    type To<E2: Dtype, D2: Device<E2>> = ResBlock<W, H, HD, F, E2, D2>;
    fn iter_tensors<V: ModuleVisitor<Self, E, D>>(
        visitor: &mut V,
    ) -> Result<Option<Self::To<V::E2, V::D2>>, V::Err> {
        visitor.visit_fields(
            (
                Self::module("ln_1", |s| &s.ln_1, |s| &mut s.ln_1),
                Self::module("attn", |s| &s.attn, |s| &mut s.attn),
                Self::module("ln_2", |s| &s.ln_2, |s| &mut s.ln_2),
                Self::module("mlp", |s| &s.mlp, |s| &mut s.mlp),
            ),
            |(ln_1, attn, ln_2, mlp)| ResBlock {
                ln_1,
                attn,
                ln_2,
                mlp,
            },
        )
    }
}

impl<const W: usize, const H: usize, const HD: usize, const F: usize, E: Float, D: Device<E>>
    ResBlock<W, H, HD, F, E, D>
{
    /// `x` [B, S, W] → [B, S, W]; `mask` [S, S] additive; `probs_out` receives [B, H, S, S].
    pub fn forward<B: Dim, S: Dim, T: Tape<E, D>>(
        &self,
        x: Tensor<(B, S, Const<W>), E, D, T>,
        mask: Option<&Tensor<(S, S), E, D>>,
        probs_out: Option<&mut Option<Probs<B, H, S, S, E, D>>>,
    ) -> Tensor<(B, S, Const<W>), E, D, T> {
        let h = self.ln_1.forward3(x.with_empty_tape());
        let x = self.attn.forward_add(h, x, mask, probs_out);
        let h = self.ln_2.forward3(x.with_empty_tape());
        self.mlp.forward_add(h, x)
    }

    /// Token 0 of [`Self::forward`]'s output only: `x` [B, S, W] → [B, W]. Keys and values
    /// come from every token; the query, output projection and MLP run for token 0 alone.
    pub fn forward_cls<B: Dim, S: Dim, T: Tape<E, D>>(
        &self,
        x: Tensor<(B, S, Const<W>), E, D, T>,
    ) -> Tensor<(B, Const<W>), E, D, T> {
        let b = x.shape().0;
        let one = (b, Const::<1>, Const::<W>);
        let h = self.ln_1.forward3(x.with_empty_tape());
        let hq = cls_token(h.with_empty_tape()).reshape_like(&one);
        let a = self.attn.forward_cross(hq, h, None, None);
        let x0 = cls_token(x) + a.reshape_like(&(b, Const::<W>));
        let h = self.ln_2.forward2(x0.with_empty_tape()).reshape_like(&one);
        x0 + self.mlp.forward(h).reshape_like(&(b, Const::<W>))
    }
}

/// A stack of `L` residual blocks (`transformer.resblocks.{0..L}`).
#[derive(Clone, Debug)]
pub struct Transformer<
    const W: usize,
    const H: usize,
    const HD: usize,
    const F: usize,
    const L: usize,
    E: Dtype,
    D: Storage<E>,
> {
    /// The blocks, saved as `resblocks.0`, `resblocks.1`, …
    pub resblocks: Repeated<ResBlock<W, H, HD, F, E, D>, L>,
}

impl<
    const W: usize,
    const H: usize,
    const HD: usize,
    const F: usize,
    const L: usize,
    E: Float,
    D: Device<E>,
> TensorCollection<E, D> for Transformer<W, H, HD, F, L, E, D>
{
    type To<E2: Dtype, D2: Device<E2>> = Transformer<W, H, HD, F, L, E2, D2>;
    fn iter_tensors<V: ModuleVisitor<Self, E, D>>(
        visitor: &mut V,
    ) -> Result<Option<Self::To<V::E2, V::D2>>, V::Err> {
        visitor.visit_fields(
            Self::module("resblocks", |s| &s.resblocks, |s| &mut s.resblocks),
            |resblocks| Transformer { resblocks },
        )
    }
}

impl<
    const W: usize,
    const H: usize,
    const HD: usize,
    const F: usize,
    const L: usize,
    E: Float,
    D: Device<E>,
> Transformer<W, H, HD, F, L, E, D>
{
    /// Runs all blocks. `probs_out`, when given, receives one [B, H, S, S] tensor per layer.
    /// With block checkpointing on ([`crate::checkpoint`]) and no `probs_out`, only each
    /// block's input is kept for the backward pass.
    pub fn forward<B: Dim, S: Dim, T: Tape<E, D>>(
        &self,
        mut x: Tensor<(B, S, Const<W>), E, D, T>,
        mask: Option<&Tensor<(S, S), E, D>>,
        mut probs_out: Option<&mut Vec<Probs<B, H, S, S, E, D>>>,
    ) -> Tensor<(B, S, Const<W>), E, D, T> {
        let checkpoint = probs_out.is_none() && crate::checkpoint::checkpointing();
        for blk in self.resblocks.modules.iter() {
            if checkpoint {
                x = crate::checkpoint::block_forward(blk, x, mask);
                continue;
            }
            let mut slot = None;
            let want = probs_out.is_some();
            x = blk.forward(x, mask, want.then_some(&mut slot));
            if let (Some(out), Some(p)) = (probs_out.as_deref_mut(), slot) {
                out.push(p);
            }
        }
        x
    }

    /// Token 0 of [`Self::forward`]'s output, [B, S, W] → [B, W], with the last block
    /// restricted to that token ([`ResBlock::forward_cls`]); no mask (the vision tower).
    pub fn forward_cls<B: Dim, S: Dim, T: Tape<E, D>>(
        &self,
        mut x: Tensor<(B, S, Const<W>), E, D, T>,
    ) -> Tensor<(B, Const<W>), E, D, T> {
        let Some((last, rest)) = self.resblocks.modules.split_last() else {
            return cls_token(x);
        };
        let checkpoint = crate::checkpoint::checkpointing();
        for blk in rest {
            x = if checkpoint {
                crate::checkpoint::block_forward(blk, x, None)
            } else {
                blk.forward(x, None, None)
            };
        }
        last.forward_cls(x)
    }
}
