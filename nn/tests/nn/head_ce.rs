//! The fused vocabulary head + cross entropy (`gadms_nn::fast::linear_cross_entropy`, behind
//! `loss::masked_rows_linear_ce_over` and `MtpDecoder::masked_loss`) against the plain
//! composition `linear2` + `masked_rows_ce_over` (value and the gradients of the hidden rows,
//! the weight and the bias; f64 and f32), against central finite differences (f64), at the
//! real vocabulary size, with no labelled row, and run against run (identical bits).

use dfdx::nn::modules::Linear;
use dfdx::prelude::*;
use gadms_nn::fast::{self, with_fused};
use gadms_nn::loss::masked_rows_linear_ce_over;

type Dev = Cpu;

use crate::common::*;

/// 2,500 columns: two whole blocks of 1,024 and a partial one.
const V: usize = 2500;
const I: usize = 12;
/// Row labels: 0 (unlabelled), one in each block, the first and the last column.
const LABELS: [u32; 7] = [3, 0, 1500, 2499, 1, 1024, 0];

/// Loss (scaled by 1.7, plus a second use of `x`, so the upstream gradient is not 1 and the
/// fused backward adds to a gradient already there) and the three gradients.
macro_rules! head_case {
    ($E:ty, $count:expr) => {{
        let dev = Dev::seed_from_u64(21);
        let mut fc: Linear<I, V, $E, Dev> =
            dev.build_module::<dfdx::nn::builders::Linear<I, V>, $E>();
        fc.bias = dev.sample_normal::<Rank1<V>>() * 0.3;
        let x: Tensor<(usize, Const<I>), $E, Dev> = dev.sample_normal_like(&(7, Const));
        let x = x * 2.0;
        let xt = x.leaky_trace();
        let x2 = xt.with_empty_tape();
        let l = masked_rows_linear_ce_over(xt, &fc, &LABELS, $count);
        let value = to64(vec![l.array()]);
        let g = (l * 1.7 + x2.square().sum() * 0.01).backward();
        vec![
            ("loss", value),
            ("d x", to64(g.get(&x).as_vec())),
            ("d weight", to64(g.get(&fc.weight).as_vec())),
            ("d bias", to64(g.get(&fc.bias).as_vec())),
        ]
    }};
}

#[test]
fn linear_cross_entropy_fused_equals_plain() {
    fused_matches_plain(1e-12, || head_case!(f64, 5));
    fused_matches_plain(1e-5, || head_case!(f32, 5));
    // A micro-batch's part of a larger batch's mean.
    fused_matches_plain(1e-12, || head_case!(f64, 11));
}

#[test]
fn linear_cross_entropy_matches_finite_differences() {
    let dev = Dev::seed_from_u64(22);
    let fc: Linear<I, V, f64, Dev> = dev.build_module::<dfdx::nn::builders::Linear<I, V>, f64>();
    let x: Tensor<(usize, Const<I>), f64, Dev> = dev.sample_normal_like(&(7, Const));
    let dx: Tensor<(usize, Const<I>), f64, Dev> = dev.sample_normal_like(&(7, Const));
    let dw: Tensor<Rank2<V, I>, f64, Dev> = dev.sample_normal();
    let db: Tensor<Rank1<V>, f64, Dev> = dev.sample_normal();
    with_fused(true, || {
        let g = masked_rows_linear_ce_over(x.leaky_trace(), &fc, &LABELS, 5).backward();
        let at = |e: f64| {
            let xe = x.clone() + dx.clone() * e;
            masked_rows_linear_ce_over(xe, &fc, &LABELS, 5).array()
        };
        fd_check("d x", at, dot(&g.get(&x).as_vec(), &dx.as_vec()));
        let at = |e: f64| {
            let mut f = fc.clone();
            f.weight = f.weight + dw.clone() * e;
            f.bias = f.bias + db.clone() * e;
            masked_rows_linear_ce_over(x.clone(), &f, &LABELS, 5).array()
        };
        let analytic = dot(&g.get(&fc.weight).as_vec(), &dw.as_vec())
            + dot(&g.get(&fc.bias).as_vec(), &db.as_vec());
        fd_check("d weight, d bias", at, analytic);
    });
}

/// The MTP vocabulary (49,408 columns, 49 blocks), f32, fused against the plain composition
/// in f64 on the same (f32-representable) inputs.
#[test]
fn linear_cross_entropy_at_vocabulary_size() {
    const VOCAB: usize = 49408;
    const W: usize = 32;
    let dev = Dev::seed_from_u64(23);
    let fc: Linear<W, VOCAB, f32, Dev> =
        dev.build_module::<dfdx::nn::builders::Linear<W, VOCAB>, f32>();
    let fc64: Linear<W, VOCAB, f64, Dev> = Linear {
        weight: dev.tensor_from_vec(to64(fc.weight.as_vec()), (Const, Const)),
        bias: dev.tensor_from_vec(to64(fc.bias.as_vec()), (Const,)),
    };
    let x: Tensor<(usize, Const<W>), f32, Dev> = dev.sample_normal_like(&(5, Const));
    let x = x * 3.0;
    let x64: Tensor<(usize, Const<W>), f64, Dev> =
        dev.tensor_from_vec(to64(x.as_vec()), (5, Const));
    let labels = [49407, 0, 1, 20000, 3];
    let l = with_fused(true, || {
        masked_rows_linear_ce_over(x.leaky_trace(), &fc, &labels, 4)
    });
    let v = l.array() as f64;
    let g = l.backward();
    let l64 = with_fused(false, || {
        masked_rows_linear_ce_over(x64.leaky_trace(), &fc64, &labels, 4)
    });
    let want = l64.array();
    let g64 = l64.backward();
    assert!(rel(&[v], &[want]) < 1e-6, "loss {v} vs {want}");
    for (name, a, b) in [
        ("d x", to64(g.get(&x).as_vec()), g64.get(&x64).as_vec()),
        (
            "d weight",
            to64(g.get(&fc.weight).as_vec()),
            g64.get(&fc64.weight).as_vec(),
        ),
        (
            "d bias",
            to64(g.get(&fc.bias).as_vec()),
            g64.get(&fc64.bias).as_vec(),
        ),
    ] {
        let e = rel(&a, &b);
        assert!(e < 1e-5, "{name}: rel err {e:.2e}");
    }
}

/// No labelled row: the loss is 0 and every gradient is 0, fused and plain.
#[test]
fn linear_cross_entropy_without_labels_is_zero() {
    for on in [true, false] {
        with_fused(on, || {
            let dev = Dev::seed_from_u64(24);
            let fc: Linear<I, V, f64, Dev> =
                dev.build_module::<dfdx::nn::builders::Linear<I, V>, f64>();
            let x: Tensor<(usize, Const<I>), f64, Dev> = dev.sample_normal_like(&(3, Const));
            let l = masked_rows_linear_ce_over(x.leaky_trace(), &fc, &[0, 0, 0], 0);
            assert_eq!(l.array(), 0.0, "fused {on}");
            let g = l.backward();
            assert!(g.get(&x).as_vec().iter().all(|&v| v == 0.0), "fused {on}");
            assert!(
                g.get(&fc.weight).as_vec().iter().all(|&v| v == 0.0),
                "fused {on}"
            );
        });
    }
}

/// The fused op applies on the CPU with the switch on and hands `x` back otherwise (so the
/// comparisons above compare two different computations); loss and gradients repeat bit for
/// bit with enough blocks for both threads.
#[test]
fn linear_cross_entropy_applies_and_repeats() {
    let dev = Dev::seed_from_u64(25);
    let fc: Linear<I, V, f32, Dev> = dev.build_module::<dfdx::nn::builders::Linear<I, V>, f32>();
    let x: Tensor<(usize, Const<I>), f32, Dev> = dev.sample_normal_like(&(40, Const));
    let labels: Vec<usize> = (0..40).map(|i| i * 61 % V).collect();
    let weights = vec![0.025; 40];
    let on = |s| {
        with_fused(s, || {
            fast::linear_cross_entropy(x.clone(), &fc, &labels, &weights).is_ok()
        })
    };
    assert!(on(true) && !on(false));
    let bits = |v: Vec<f32>| v.into_iter().map(f32::to_bits).collect::<Vec<_>>();
    let run = || {
        let l = fast::linear_cross_entropy(x.leaky_trace(), &fc, &labels, &weights)
            .unwrap_or_else(|_| panic!("fast path"));
        let v = bits(vec![l.array()]);
        let g = l.backward();
        (
            v,
            bits(g.get(&x).as_vec()),
            bits(g.get(&fc.weight).as_vec()),
            bits(g.get(&fc.bias).as_vec()),
        )
    };
    assert_eq!(run(), run());
}
