//! gadms-nn's integration tests, in one test binary: the fused CPU kernels against the plain
//! dfdx path and finite differences (`fast_ops`, `fast_loss`) and the model's gradient checks
//! (`gradcheck`). The trybuild compile-fail tests of model surgery are their own binary
//! (`tests/surgery_compile_fail.rs`): trybuild builds every case with cargo.

mod common;

mod fast_loss;
mod fast_ops;
mod gradcheck;
mod head_ce;
