//! `gadms bench`: timings of the model ([`model`]), the GA-DMS training step ([`train`]), the
//! GEMM kernels ([`gemm`]), the data loader ([`loader`]) and manifest opening ([`open`]).
//! [`args`] holds the shared arguments, [`flops`] the operation counts; the benchmarks import
//! only those two leaves, never each other.

pub mod args;
pub mod flops;
pub mod gemm;
pub mod loader;
pub mod model;
pub mod open;
pub mod train;

pub use args::BenchArgs;

use anyhow::{Result, bail};

/// Runs the command.
pub fn run(a: BenchArgs) -> Result<()> {
    match a.what.as_str() {
        "model" => model::run(&a),
        "train" => train::run(&a),
        "loader" => loader::run(&a),
        "gemm" => gemm::run(a.iters.max(5)),
        "open" => open::run(a.samples, 5000),
        _ => bail!(
            "unknown benchmark '{}': use `gadms bench model`, `train`, `gemm`, `loader` or `open`",
            a.what
        ),
    }
}
