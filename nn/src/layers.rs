//! Small building blocks shared by every tower: LayerNorm with PyTorch names, QuickGELU, the MLP.

use dfdx::nn::modules::Linear;
use dfdx::nn::tensor_collection::*;
use dfdx::prelude::*;

/// Element type of every model: `f32` in production, `f64` in the gradient checks.
pub trait Float: Dtype + num_traits::Float + rand_distr::uniform::SampleUniform {}
impl<T: Dtype + num_traits::Float + rand_distr::uniform::SampleUniform> Float for T {}

/// LayerNorm over the last dimension, ε = 1e-5 (PyTorch `nn.LayerNorm(M)` default).
///
/// Parameters `weight` [M] and `bias` [M], the PyTorch names (dfdx's own `LayerNorm1D`
/// calls them `gamma`/`beta` and saves a scalar epsilon, which no CLIP checkpoint has).
#[derive(Clone, Debug)]
pub struct LayerNorm<const M: usize, E: Dtype, D: Storage<E>> {
    /// Scale γ, [M], initialised to ones.
    pub weight: Tensor<Rank1<M>, E, D>,
    /// Shift β, [M], initialised to zeros.
    pub bias: Tensor<Rank1<M>, E, D>,
}

/// The LayerNorm epsilon of CLIP (PyTorch default).
pub const LN_EPS: f64 = 1e-5;

impl<const M: usize, E: Dtype, D: Device<E>> TensorCollection<E, D> for LayerNorm<M, E, D> {
    type To<E2: Dtype, D2: Device<E2>> = LayerNorm<M, E2, D2>;
    fn iter_tensors<V: ModuleVisitor<Self, E, D>>(
        visitor: &mut V,
    ) -> Result<Option<Self::To<V::E2, V::D2>>, V::Err> {
        visitor.visit_fields(
            (
                Self::tensor(
                    "weight",
                    |s| &s.weight,
                    |s| &mut s.weight,
                    TensorOptions::reset_to_ones(),
                ),
                Self::tensor(
                    "bias",
                    |s| &s.bias,
                    |s| &mut s.bias,
                    TensorOptions::reset_to_zeros(),
                ),
            ),
            |(weight, bias)| LayerNorm { weight, bias },
        )
    }
}

impl<const M: usize, E: Dtype, D: Device<E>> LayerNorm<M, E, D> {
    /// `x` [B, S, M] → [B, S, M]: `(x − mean) / sqrt(var + ε) · weight + bias` per token.
    pub fn forward3<B: Dim, S: Dim, T: Tape<E, D>>(
        &self,
        x: Tensor<(B, S, Const<M>), E, D, T>,
    ) -> Tensor<(B, S, Const<M>), E, D, T> {
        let x = match crate::fast::layer_norm(x, &self.weight, &self.bias, LN_EPS) {
            Ok(y) => return y,
            Err(x) => x,
        };
        let shape = *x.shape();
        let w = self.weight.retaped::<T>().broadcast_like(&shape);
        let b = self.bias.retaped::<T>().broadcast_like(&shape);
        x.normalize::<Axis<2>>(LN_EPS)
            .try_mul(w)
            .unwrap()
            .try_add(b)
            .unwrap()
    }

    /// `x` [B, M] → [B, M]: the same normalisation for pooled features.
    pub fn forward2<B: Dim, T: Tape<E, D>>(
        &self,
        x: Tensor<(B, Const<M>), E, D, T>,
    ) -> Tensor<(B, Const<M>), E, D, T> {
        let x = match crate::fast::layer_norm(x, &self.weight, &self.bias, LN_EPS) {
            Ok(y) => return y,
            Err(x) => x,
        };
        let shape = *x.shape();
        let w = self.weight.retaped::<T>().broadcast_like(&shape);
        let b = self.bias.retaped::<T>().broadcast_like(&shape);
        x.normalize::<Axis<1>>(LN_EPS)
            .try_mul(w)
            .unwrap()
            .try_add(b)
            .unwrap()
    }
}

/// QuickGELU, `x · σ(1.702 x)` (OpenAI CLIP `QuickGELU`); fused on the CPU ([`crate::fast`]).
pub fn quick_gelu<S: dfdx::shapes::Shape, E: Float, D: Device<E>, T: Tape<E, D>>(
    x: Tensor<S, E, D, T>,
) -> Tensor<S, E, D, T> {
    let x = match crate::fast::quick_gelu(x) {
        Ok(y) => return y,
        Err(x) => x,
    };
    let gate = (x.with_empty_tape() * E::from_f64(1.702).unwrap()).sigmoid();
    x * gate
}

/// Transformer MLP `c_proj(QuickGELU(c_fc(x)))` (OpenAI `ResidualAttentionBlock.mlp`):
/// `c_fc` [F, W] + [F], `c_proj` [W, F] + [W].
#[derive(Clone, Debug)]
pub struct Mlp<const W: usize, const F: usize, E: Dtype, D: Storage<E>> {
    /// Expansion W → F.
    pub c_fc: Linear<W, F, E, D>,
    /// Contraction F → W.
    pub c_proj: Linear<F, W, E, D>,
}

impl<const W: usize, const F: usize, E: Float, D: Device<E>> TensorCollection<E, D>
    for Mlp<W, F, E, D>
{
    type To<E2: Dtype, D2: Device<E2>> = Mlp<W, F, E2, D2>;
    fn iter_tensors<V: ModuleVisitor<Self, E, D>>(
        visitor: &mut V,
    ) -> Result<Option<Self::To<V::E2, V::D2>>, V::Err> {
        visitor.visit_fields(
            (
                Self::module("c_fc", |s| &s.c_fc, |s| &mut s.c_fc),
                Self::module("c_proj", |s| &s.c_proj, |s| &mut s.c_proj),
            ),
            |(c_fc, c_proj)| Mlp { c_fc, c_proj },
        )
    }
}

impl<const W: usize, const F: usize, E: Float, D: Device<E>> Mlp<W, F, E, D> {
    /// `x` [B, S, W] → [B, S, W].
    pub fn forward<B: Dim, S: Dim, T: Tape<E, D>>(
        &self,
        x: Tensor<(B, S, Const<W>), E, D, T>,
    ) -> Tensor<(B, S, Const<W>), E, D, T> {
        let h = quick_gelu(crate::fast::linear(&self.c_fc, x));
        crate::fast::linear(&self.c_proj, h)
    }

    /// `residual + forward(x)`: on CUDA the last bias and the residual are one kernel.
    pub fn forward_add<B: Dim, S: Dim, T: Tape<E, D>>(
        &self,
        x: Tensor<(B, S, Const<W>), E, D, T>,
        residual: Tensor<(B, S, Const<W>), E, D, T>,
    ) -> Tensor<(B, S, Const<W>), E, D, T> {
        let h = quick_gelu(crate::fast::linear(&self.c_fc, x));
        crate::fast::linear_residual(&self.c_proj, h, residual)
    }
}

/// Fills a tensor with N(0, std²) where `std = STD_MILLI / 1000` (a `fn` pointer for
/// `TensorOptions::reset_with`, which cannot capture).
pub fn normal_init<S: dfdx::shapes::ConstShape, E: Float, D: Device<E>, const STD_MILLI: usize>(
    t: &mut Tensor<S, E, D>,
) -> Result<(), D::Err>
where
    rand_distr::StandardNormal: rand_distr::Distribution<E>,
{
    normal_fill(t, STD_MILLI as f64 / 1000.0)
}

/// Fills a tensor with N(0, (W^-1/2)²), CLIP's default `scale = width ** -0.5`.
pub fn width_scaled_init<S: dfdx::shapes::ConstShape, E: Float, D: Device<E>, const W: usize>(
    t: &mut Tensor<S, E, D>,
) -> Result<(), D::Err>
where
    rand_distr::StandardNormal: rand_distr::Distribution<E>,
{
    normal_fill(t, (W as f64).powf(-0.5))
}

/// Overwrites `t` with N(0, std²) samples from the device RNG.
pub fn normal_fill<S: dfdx::shapes::Shape, E: Float, D: Device<E>>(
    t: &mut Tensor<S, E, D>,
    std: f64,
) -> Result<(), D::Err>
where
    rand_distr::StandardNormal: rand_distr::Distribution<E>,
{
    let dist = rand_distr::Normal::new(E::zero(), E::from_f64(std).unwrap()).unwrap();
    let n: Tensor<S, E, D> = t.device().try_sample_like(t.shape(), dist)?;
    t.copy_from(&n.as_vec());
    Ok(())
}

/// A gradient tape that accumulates into `grads` (e.g. from `model.alloc_grads()`), for
/// inputs that cannot carry a float tape themselves, such as the text tower's token ids.
pub fn tape_with<E: Dtype, D: Device<E>>(dev: &D, grads: Gradients<E, D>) -> OwnedTape<E, D> {
    let anchor: Tensor<Rank0, E, D> = dev.zeros();
    anchor.trace(grads).split_tape().1
}
