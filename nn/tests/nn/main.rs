//! gadms-nn's integration tests, in one test binary: the fused CPU kernels against the plain
//! dfdx path and finite differences (`fast_ops`, `fast_loss`), the model's gradient checks
//! (`gradcheck`), and the backward pass's early freeing of dead gradients (`backward_memory`). The trybuild compile-fail tests of model surgery are their own binary
//! (`tests/surgery_compile_fail.rs`): trybuild builds every case with cargo.

mod common;

mod backward_memory;
mod fast_loss;
mod fast_ops;
mod gradcheck;
mod head_ce;
