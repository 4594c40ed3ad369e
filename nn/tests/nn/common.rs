//! Helpers shared by the fused-kernel tests (`fast_ops`, `fast_loss`): relative error,
//! the fused-vs-plain comparison and the central finite-difference check.
#![allow(dead_code)]

use dfdx::prelude::*;
use gadms_nn::fast::with_fused;

/// Max |a − b| / max |b|.
pub fn rel(a: &[f64], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len());
    let d = a
        .iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f64::max);
    d / b.iter().map(|y| y.abs()).fold(1e-30, f64::max)
}

pub fn to64<E: Dtype + Into<f64>>(v: Vec<E>) -> Vec<f64> {
    v.into_iter().map(Into::into).collect()
}

/// Runs `f` fused and unfused; each run returns named vectors (loss, gradients), which must
/// agree to `tol` (and not be all zero, so the comparison means something).
pub fn fused_matches_plain(tol: f64, f: impl Fn() -> Vec<(&'static str, Vec<f64>)>) {
    let fused = with_fused(true, &f);
    let plain = with_fused(false, &f);
    assert_eq!(fused.len(), plain.len());
    for ((name, a), (_, b)) in fused.iter().zip(&plain) {
        assert!(b.iter().any(|&x| x != 0.0), "{name}: reference is all zero");
        let e = rel(a, b);
        assert!(e < tol, "{name}: fused vs plain rel err {e:.3e} > {tol:e}");
    }
}

/// Central difference of `loss` along a direction against the analytic derivative.
pub fn fd_check(name: &str, loss: impl Fn(f64) -> f64, analytic: f64) {
    let eps = 1e-6;
    let numeric = (loss(eps) - loss(-eps)) / (2.0 * eps);
    let e = (numeric - analytic).abs() / analytic.abs().max(1e-8);
    assert!(
        e < 1e-6,
        "{name}: finite difference {numeric} vs analytic {analytic} ({e:.2e})"
    );
}

pub fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}
