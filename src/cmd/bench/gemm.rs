//! `gadms bench gemm`: the matrix products of a ViT-B/16 step (batch 4, 193 tokens) through
//! the fused kernels' GEMM (`gadms_nn::fast::gemm`) and through dfdx's `matmul` (the `gemm`
//! crate), in GFLOP/s and as a fraction of this CPU's peak.

use super::flops::{peak_gflops, print_peak};
use anyhow::Result;
use dfdx::prelude::*;
use gadms_nn::fast::gemm::{MatRef, gemm};
use std::time::Instant;

/// (name, m, n, k, A transposed, B transposed): forward `x·Wᵀ`, backward `dy·W` and `dyᵀ·x`.
const SHAPES: [(&str, usize, usize, usize, bool, bool); 4] = [
    ("c_fc fwd  x·Wᵀ   772x3072x768", 772, 3072, 768, false, true),
    ("c_proj fwd x·Wᵀ  772x768x3072", 772, 768, 3072, false, true),
    (
        "c_fc dx   dy·W   772x768x3072",
        772,
        768,
        3072,
        false,
        false,
    ),
    ("c_fc dW   dyᵀ·x  3072x768x772", 3072, 768, 772, true, false),
];

fn best_of(iters: usize, mut f: impl FnMut()) -> f64 {
    f();
    (0..iters)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64()
        })
        .fold(f64::INFINITY, f64::min)
}

/// Runs the benchmark: best of `iters` per shape.
pub fn run(iters: usize) -> Result<()> {
    let threads = rayon::current_num_threads();
    let peak = peak_gflops(threads);
    let dev = Cpu::seed_from_u64(0);
    println!(
        "| product (m x n x k) | gadms GEMM GFLOP/s | dfdx matmul GFLOP/s | gadms % of peak |"
    );
    println!("|---|---|---|---|");
    for (name, m, n, k, ta, tb) in SHAPES {
        let a: Tensor<(usize, usize), f32, Cpu> = dev.sample_normal_like(&(m, k));
        let b: Tensor<(usize, usize), f32, Cpu> = dev.sample_normal_like(&(k, n));
        let (av, bv) = (a.as_vec(), b.as_vec());
        let mut c = vec![0f32; m * n];
        let ar = if ta {
            MatRef::cols(&av, 0, m)
        } else {
            MatRef::rows(&av, 0, k)
        };
        let br = if tb {
            MatRef::cols(&bv, 0, k)
        } else {
            MatRef::rows(&bv, 0, n)
        };
        let ours = best_of(iters, || gemm((m, n, k), ar, br, &mut c, 0, n, false));
        let theirs = best_of(iters, || {
            let _ = a.clone().matmul(b.clone());
        });
        let fl = 2.0 * (m * n * k) as f64 / 1e9;
        let pct = peak.map_or("–".into(), |p| format!("{:.0} %", 100.0 * fl / ours / p));
        println!("| {name} | {:.1} | {:.1} | {pct} |", fl / ours, fl / theirs);
    }
    print_peak(threads);
    Ok(())
}
