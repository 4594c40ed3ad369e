//! Activation checkpointing of the transformer blocks (`--grad-checkpointing`): the forward pass
//! keeps only each block's input; the backward pass runs the block again and back-propagates
//! `sum(block(x) · g)` for the incoming gradient `g`, which gives the block's input and
//! parameter gradients (PyTorch's `torch.utils.checkpoint`, as open_clip's
//! `set_grad_checkpointing` applies it per residual block).
//!
//! ```text
//! forward:   y = block(x)                          no graph: the block's inner activations
//!                                                  (LayerNorm outputs, q/k/v, attention
//!                                                  probabilities, the 4W-wide MLP hidden layer)
//!                                                  are freed as soon as y exists
//! backward:  g = dL/dy
//!            y' = block(x) on a fresh tape         the same values as y (deterministic kernels)
//!            dx, dθ = ∂ sum(y' · g) / ∂(x, θ)      added into the run's gradients
//! ```
//!
//! The cost is one more forward pass of every block; the saving is every block's inner
//! activations, which dominate a ViT's training memory. The gradients are those of the plain
//! pass up to the order of float additions (`tests/it/checkpointing.rs`).
//!
//! The switch is per thread, like [`crate::fast::set_fused`]: [`set_checkpointing`] before
//! building a graph, or [`with_checkpointing`] around it.

use crate::block::ResBlock;
use crate::layers::Float;
use dfdx::nn::tensor_collection::*;
use dfdx::prelude::*;
use dfdx::tensor::Tensorlike;
use std::cell::Cell;

thread_local! {
    static ON: Cell<bool> = const { Cell::new(false) };
    static RECOMPUTED: Cell<usize> = const { Cell::new(0) };
}

/// How many block recomputations the backward passes run on this thread have made so far (a
/// diagnostic: the tests check that the switch reaches every tower).
pub fn recomputed_blocks() -> usize {
    RECOMPUTED.with(|c| c.get())
}

/// Whether graphs built on this thread checkpoint their transformer blocks (default off).
pub fn checkpointing() -> bool {
    ON.with(|c| c.get())
}

/// Turns block checkpointing on or off for graphs built on this thread from now on.
pub fn set_checkpointing(on: bool) {
    ON.with(|c| c.set(on));
}

/// Sets block checkpointing on this thread until the returned guard is dropped, which
/// restores the previous setting (for a command's whole run, even one that returns early).
#[must_use = "the setting is restored when the guard is dropped"]
pub fn scoped(on: bool) -> Scope {
    Scope(ON.with(|c| c.replace(on)))
}

/// The guard of [`scoped`].
pub struct Scope(bool);

impl Drop for Scope {
    fn drop(&mut self) {
        ON.with(|c| c.set(self.0));
    }
}

/// Runs `f` with block checkpointing on or off on this thread, then restores the setting.
pub fn with_checkpointing<R>(on: bool, f: impl FnOnce() -> R) -> R {
    let _scope = scoped(on);
    f()
}

/// `blk.forward(x, mask)` [B, S, W] → [B, S, W], keeping only `x` for the backward pass (see
/// the module docs). Without a tape to record on, the plain forward.
pub fn block_forward<
    const W: usize,
    const H: usize,
    const HD: usize,
    const F: usize,
    B: Dim,
    S: Dim,
    E: Float,
    D: Device<E>,
    T: Tape<E, D>,
>(
    blk: &ResBlock<W, H, HD, F, E, D>,
    x: Tensor<(B, S, Const<W>), E, D, T>,
    mask: Option<&Tensor<(S, S), E, D>>,
) -> Tensor<(B, S, Const<W>), E, D, T> {
    if !T::OWNS_TAPE {
        return blk.forward(x, mask, None);
    }
    let (x, mut tape) = x.split_tape();
    let y = blk.forward(x.clone(), mask, None);
    let (blk, mask, y_keep) = (blk.clone(), mask.cloned(), y.clone());
    tape.add_backward_op(move |grads| {
        grads.try_alloc_for(&y_keep)?;
        let g = grads.get(&y_keep);
        let y_again = blk.forward(x.leaky_trace(), mask.as_ref(), None);
        let part: Tensor<Rank0, E, D, OwnedTape<E, D>> = (y_again * g).sum();
        let inner = part.backward();
        RECOMPUTED.with(|c| c.set(c.get() + 1));
        add_grad(grads, &x, &inner)?;
        let mut adder = AddGrads {
            main: grads,
            inner: &inner,
        };
        ResBlock::iter_tensors(&mut RecursiveWalker {
            m: &blk,
            f: &mut adder,
        })?;
        Ok(())
    });
    y.put_tape(tape)
}

/// `main[t] += inner[t]` when `inner` holds a gradient for `t`.
fn add_grad<S: Shape, E: Dtype, D: Device<E>>(
    main: &mut Gradients<E, D>,
    t: &Tensor<S, E, D>,
    inner: &Gradients<E, D>,
) -> Result<(), D::Err> {
    if inner.get_ref_checked(t).is_none() {
        return Ok(());
    }
    main.try_alloc_for(t)?;
    let sum = main.get(t).try_add(inner.get(t))?;
    let data = Tensorlike::data(&sum).expect("a tensor always has data");
    *main.get_or_alloc_mut(t)? = data.clone();
    Ok(())
}

/// Adds the recomputed block's parameter gradients into the run's (trainable tensors only, so
/// a frozen block gets none, as without checkpointing).
struct AddGrads<'a, E: Dtype, D: Device<E>> {
    main: &'a mut Gradients<E, D>,
    inner: &'a Gradients<E, D>,
}

impl<E: Dtype, D: Device<E>> TensorVisitor<E, D> for AddGrads<'_, E, D> {
    type Viewer = ViewTensorRef;
    type Err = D::Err;
    type E2 = E;
    type D2 = D;

    fn visit<S: Shape>(
        &mut self,
        opts: TensorOptions<S, E, D>,
        t: &Tensor<S, E, D>,
    ) -> Result<Option<Tensor<S, E, D>>, Self::Err> {
        if opts.do_gradient_update {
            add_grad(self.main, t, self.inner)?;
        }
        Ok(None)
    }
}
