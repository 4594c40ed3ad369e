//! Fused CPU kernels, added to dfdx as custom ops (each a forward over raw slices plus one
//! backward closure on the tape): linear layers on an own GEMM ([`gemm`]), LayerNorm,
//! QuickGELU, the attention core `softmax(q kᵀ/√d + mask) v` on per-head strided views, and the
//! SDM and cross-entropy losses ([`loss`]).
//!
//! On CUDA (feature `cuda`), QuickGELU, LayerNorm, linear layers (and a linear layer with a
//! residual), the attention core, the cross entropy and SDM have kernels of their own
//! (`kernels/fused.cu`, launched by `cuda/`; `tests/cuda/kernels.rs` checks them against these
//! CPU kernels); the fused linear cross entropy of the MTP head runs there as the linear layer
//! and then the cross entropy.
//!
//! The towers call these through small wrappers that fall back to the plain dfdx composition
//! when the fast path does not apply: a device without a kernel for the op, an element type
//! other than `f32`/`f64` (`f32` only on CUDA), a non-contiguous input, attention probabilities requested by the caller
//! (GASS, the MTP decoder), or the switch turned off ([`set_fused`], [`with_fused`], or the
//! environment variable `GADMS_FUSED=0`). Both paths compute the same function; the tests in
//! `nn/tests/nn/fast_ops.rs` and `nn/tests/nn/fast_loss.rs` compare them (forward and every
//! gradient) and check the fused backward against finite differences in `f64`.
//!
//! Why: on 2 AVX2 cores dfdx 0.13 spends about a third of a ViT-B/16 step outside GEMM
//! (LayerNorm ≈ 10 passes, broadcasts, the permute copies of attention, sigmoid through
//! `expf`) and its `gemm` crate reaches about 58 % of the FMA peak; see `benches/RESULTS.md`.

pub mod attn;
#[cfg(feature = "cuda")]
pub(crate) mod cuda;
pub mod elementwise;
pub mod gemm;
pub mod head_ce;
mod host;
pub mod linear;
pub mod loss;
mod micro;
pub mod norm;
mod real;
mod rowwise;
mod switch;

pub use attn::attention;
#[cfg(feature = "cuda")]
pub use cuda::{AdamBatch, AdamCoeffs, CudaVec, sum_squares};
pub use elementwise::quick_gelu;
pub use head_ce::linear_cross_entropy;
pub use linear::{linear, linear_residual, linear_unbiased, linear2};
pub use loss::{cross_entropy, sdm};
pub use norm::layer_norm;
pub use real::Real;
pub use switch::{fused_enabled, set_fused, with_fused};
