//! Freezing a tower: [`Frozen`], the functions that wrap or unwrap a CLIP model's towers, and
//! the [`Tower`] trait that sees through the wrapper.

use crate::clip::Clip;
use crate::text::TextTower;
use crate::vision::VisionTower;
use dfdx::nn::tensor_collection::*;
use dfdx::prelude::*;
use num_traits::NumCast;

/// A tower type, possibly wrapped in [`Frozen`]; gives the plain tower back for running it.
pub trait Tower {
    /// The unwrapped tower type (`VisionTower<…>` or `TextTower<…>`).
    type Plain;
    /// The tower to run (`model.visual.plain().forward(…)`).
    fn plain(&self) -> &Self::Plain;
    /// The tower without any [`Frozen`] wrapper.
    fn into_plain(self) -> Self::Plain;
}

impl<
    const IMG_H: usize,
    const IMG_W: usize,
    const PATCH: usize,
    const PATCH_DIM: usize,
    const SEQ: usize,
    const W: usize,
    const H: usize,
    const HD: usize,
    const F: usize,
    const L: usize,
    const EMBED: usize,
    E: Dtype,
    D: Storage<E>,
> Tower for VisionTower<IMG_H, IMG_W, PATCH, PATCH_DIM, SEQ, W, H, HD, F, L, EMBED, E, D>
{
    type Plain = Self;
    fn plain(&self) -> &Self {
        self
    }
    fn into_plain(self) -> Self {
        self
    }
}

impl<
    const VOCAB: usize,
    const CTX: usize,
    const W: usize,
    const H: usize,
    const HD: usize,
    const F: usize,
    const L: usize,
    const EMBED: usize,
    E: Dtype,
    D: Storage<E>,
> Tower for TextTower<VOCAB, CTX, W, H, HD, F, L, EMBED, E, D>
{
    type Plain = Self;
    fn plain(&self) -> &Self {
        self
    }
    fn into_plain(self) -> Self {
        self
    }
}

impl<M: Tower> Tower for Frozen<M> {
    type Plain = M::Plain;
    fn plain(&self) -> &M::Plain {
        self.0.plain()
    }
    fn into_plain(self) -> M::Plain {
        self.0.into_plain()
    }
}

/// A module whose parameters are not trained: its [`TensorCollection`] reports every tensor
/// with `do_gradient_update = false` (dfdx's `TensorOptions::detached`), so
///
/// - `alloc_grads()` allocates no gradient for it (dfdx's `ZeroGrads` skips such tensors, and
///   `backward()` drops their temporary gradients),
/// - `gadms::optim::Adam::update` (and dfdx's optimisers) skip it and keep no moments for it
///   (`Adam::tracked()` does not count it),
/// - `num_trainable_params()` does not count it.
///
/// Tensor names are unchanged (the wrapper adds no key component), so a model with a frozen
/// tower saves, loads and exports exactly like the plain one. Run it through `Deref`
/// (`frozen.forward(…)`) or [`Tower::plain`]. `#[repr(transparent)]`: `&M` and `&Frozen<M>`
/// have the same layout, which the visitor relies on.
#[derive(Clone, Debug)]
#[repr(transparent)]
pub struct Frozen<M>(pub M);

impl<M> Frozen<M> {
    /// Views `&M` as `&Frozen<M>` (same layout).
    pub fn from_ref(m: &M) -> &Self {
        // SAFETY: `Frozen<M>` is `#[repr(transparent)]` over `M`.
        unsafe { &*(m as *const M as *const Frozen<M>) }
    }
    /// Views `&mut M` as `&mut Frozen<M>` (same layout).
    pub fn from_mut(m: &mut M) -> &mut Self {
        // SAFETY: `Frozen<M>` is `#[repr(transparent)]` over `M`.
        unsafe { &mut *(m as *mut M as *mut Frozen<M>) }
    }
    /// The module, trainable again.
    pub fn into_inner(self) -> M {
        self.0
    }
}

impl<M> std::ops::Deref for Frozen<M> {
    type Target = M;
    fn deref(&self) -> &M {
        &self.0
    }
}

impl<M> std::ops::DerefMut for Frozen<M> {
    fn deref_mut(&mut self) -> &mut M {
        &mut self.0
    }
}

/// Forwards a visit of `Frozen<M>` to `M`'s fields, marking every tensor non-trainable and
/// wrapping every sub-module in `Frozen` so that the marking reaches the leaves.
struct Freezer<'v, V>(&'v mut V);

impl<M: TensorCollection<E, D>, E: Dtype, D: Device<E>, V: ModuleVisitor<Frozen<M>, E, D>>
    ModuleVisitor<M, E, D> for Freezer<'_, V>
{
    type Err = V::Err;
    type E2 = V::E2;
    type D2 = V::D2;

    fn visit_module<Field, GetRef, GetMut>(
        &mut self,
        name: &str,
        mut get_refs: GetRef,
        mut get_muts: GetMut,
    ) -> Result<Option<Field::To<Self::E2, Self::D2>>, Self::Err>
    where
        GetRef: FnMut(&M) -> &Field,
        GetMut: FnMut(&mut M) -> &mut Field,
        Field: TensorCollection<E, D>,
    {
        let out = self.0.visit_module::<Frozen<Field>, _, _>(
            name,
            |s| Frozen::from_ref(get_refs(&s.0)),
            |s| Frozen::from_mut(get_muts(&mut s.0)),
        )?;
        Ok(out.map(|f| f.0))
    }

    fn visit_tensor<S: Shape, GetRef, GetMut>(
        &mut self,
        name: &str,
        mut get_refs: GetRef,
        mut get_muts: GetMut,
        mut opts: TensorOptions<S, E, D>,
    ) -> Result<Option<Tensor<S, Self::E2, Self::D2>>, Self::Err>
    where
        GetRef: FnMut(&M) -> &Tensor<S, E, D>,
        GetMut: FnMut(&mut M) -> &mut Tensor<S, E, D>,
    {
        opts.do_gradient_update = false;
        self.0
            .visit_tensor(name, |s| get_refs(&s.0), |s| get_muts(&mut s.0), opts)
    }

    fn visit_scalar<N, GetRef, GetMut>(
        &mut self,
        name: &str,
        mut get_refs: GetRef,
        mut get_muts: GetMut,
        opts: ScalarOptions<N>,
    ) -> Result<Option<N>, Self::Err>
    where
        N: NumCast,
        GetRef: FnMut(&M) -> &N,
        GetMut: FnMut(&mut M) -> &mut N,
    {
        self.0
            .visit_scalar(name, |s| get_refs(&s.0), |s| get_muts(&mut s.0), opts)
    }

    fn visit_fields<Fs: ModuleFields<M, E, D>>(
        &mut self,
        fields: Fs,
        builder: impl FnOnce(Fs::Output<Self::E2, Self::D2>) -> M::To<Self::E2, Self::D2>,
    ) -> Result<Option<M::To<Self::E2, Self::D2>>, Self::Err> {
        let options = fields.visit_fields(self)?;
        Ok(Fs::handle_options(options).map(builder))
    }
}

impl<E: Dtype, D: Device<E>, M: TensorCollection<E, D>> TensorCollection<E, D> for Frozen<M> {
    type To<E2: Dtype, D2: Device<E2>> = Frozen<M::To<E2, D2>>;
    fn iter_tensors<V: ModuleVisitor<Self, E, D>>(
        visitor: &mut V,
    ) -> Result<Option<Self::To<V::E2, V::D2>>, V::Err> {
        Ok(M::iter_tensors(&mut Freezer(visitor))?.map(Frozen))
    }
}

/// `Clip<V, T> → Clip<Frozen<V>, T>`: the vision tower keeps its weights and stops training.
pub fn freeze_vision<V, T>(clip: Clip<V, T>) -> Clip<Frozen<V>, T> {
    Clip {
        visual: Frozen(clip.visual),
        text: clip.text,
    }
}

/// `Clip<V, T> → Clip<V, Frozen<T>>`: the text tower keeps its weights and stops training.
pub fn freeze_text<V, T>(clip: Clip<V, T>) -> Clip<V, Frozen<T>> {
    Clip {
        visual: clip.visual,
        text: Frozen(clip.text),
    }
}

/// Removes every [`Frozen`] wrapper: back to the plain `Clip<VisionTower, TextTower>` that the
/// rest of gadms (`ClipInference`, the CLI, the training step) works with.
pub fn thaw<V: Tower, T: Tower>(clip: Clip<V, T>) -> Clip<V::Plain, T::Plain> {
    Clip {
        visual: clip.visual.into_plain(),
        text: clip.text.into_plain(),
    }
}
