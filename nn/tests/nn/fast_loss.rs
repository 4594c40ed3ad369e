//! The fused losses (`gadms_nn::fast::loss`: SDM and the row-wise cross entropy behind
//! `masked_rows_ce`, `masked_token_ce` and `ce_rows`) against the plain dfdx composition
//! (value and every input gradient, f64 and f32), against central finite differences (f64),
//! on the edge cases (no labelled row, duplicated pids, a batch of 1) and run against run
//! (identical bits).

use dfdx::prelude::*;
use gadms_nn::fast::with_fused;
use gadms_nn::loss::{SDM_EPS, masked_rows_ce, masked_token_ce, sdm_loss};
use gadms_nn::*;

type Dev = Cpu;

use crate::common::*;

/// SDM loss and both feature gradients; the loss is scaled by 1.7 before the backward so the
/// upstream gradient is not 1, and the image features also feed a second term, so the fused
/// backward must add to a gradient that is already there.
macro_rules! sdm_case {
    ($E:ty, $b:expr, $pids:expr, $seed:expr) => {{
        let dev = Dev::seed_from_u64($seed);
        let img: Tensor<(usize, Const<12>), $E, Dev> = dev.sample_normal_like(&($b, Const));
        let txt: Tensor<(usize, Const<12>), $E, Dev> = dev.sample_normal_like(&($b, Const));
        let txt = txt * 0.5 + img.clone() * 0.3;
        let it = img.leaky_trace();
        let i2 = it.with_empty_tape();
        let loss = sdm_loss(it, txt.leaky_trace(), $pids, 50.0, SDM_EPS);
        let value = to64(vec![loss.array()]);
        // Recorded after the loss, so its backward runs first.
        let extra = i2.square().sum() * 0.01;
        let g = (loss * 1.7 + extra).backward();
        vec![
            ("loss", value),
            ("d image", to64(g.get(&img).as_vec())),
            ("d text", to64(g.get(&txt).as_vec())),
        ]
    }};
}

const PIDS_UNIQUE: [usize; 6] = [4, 9, 1, 7, 3, 0];
const PIDS_DUP: [usize; 7] = [5, 2, 5, 8, 2, 5, 1];

#[test]
fn sdm_fused_equals_plain() {
    fused_matches_plain(1e-12, || sdm_case!(f64, 6, &PIDS_UNIQUE, 1));
    fused_matches_plain(1e-12, || sdm_case!(f64, 7, &PIDS_DUP, 2));
    fused_matches_plain(1e-5, || sdm_case!(f32, 6, &PIDS_UNIQUE, 1));
    fused_matches_plain(1e-5, || sdm_case!(f32, 7, &PIDS_DUP, 2));
}

/// A batch of one: p = q = 1, so the loss is −ln(1 + ε) and its gradients vanish (the image
/// gradient is only that of the second term of `sdm_case`, `0.02·x`).
#[test]
fn sdm_batch_of_one() {
    let dev = Dev::seed_from_u64(3);
    let img: Tensor<(usize, Const<12>), f64, Dev> = dev.sample_normal_like(&(1, Const));
    let extra: Vec<f64> = img.as_vec().iter().map(|x| 0.02 * x).collect();
    for fused in [true, false] {
        let got = with_fused(fused, || sdm_case!(f64, 1, &[3], 3));
        let want = -2.0 * (1.0 + SDM_EPS).ln();
        assert!((got[0].1[0] - want).abs() < 1e-15, "fused {fused}: {got:?}");
        assert!(rel(&got[1].1, &extra) < 1e-12, "d image (fused {fused})");
        assert!(
            got[2].1.iter().all(|x| x.abs() < 1e-12),
            "d text (fused {fused})"
        );
    }
}

/// Features [B, K] and directions for them, in f64.
fn sdm_fd_case(pids: &[usize], seed: u64) {
    let dev = Dev::seed_from_u64(seed);
    let b = pids.len();
    let draw = || -> Tensor<(usize, Const<9>), f64, Dev> { dev.sample_normal_like(&(b, Const)) };
    let (img, txt, di, dt) = (draw(), draw() * 0.5 + draw() * 0.5, draw(), draw());
    let g = sdm_loss(img.leaky_trace(), txt.leaky_trace(), pids, 50.0, SDM_EPS).backward();
    let analytic =
        dot(&g.get(&img).as_vec(), &di.as_vec()) + dot(&g.get(&txt).as_vec(), &dt.as_vec());
    let at = |e: f64| {
        let (i, t) = (img.clone() + di.clone() * e, txt.clone() + dt.clone() * e);
        sdm_loss(i, t, pids, 50.0, SDM_EPS).array()
    };
    fd_check("sdm", at, analytic);
}

#[test]
fn sdm_gradients_match_finite_differences() {
    with_fused(true, || {
        sdm_fd_case(&PIDS_UNIQUE, 4);
        sdm_fd_case(&PIDS_DUP, 5);
    });
}

const V: usize = 37;
const LABELS: [u32; 9] = [3, 0, 36, 1, 0, 0, 17, 3, 9];

/// `masked_rows_ce` (and the same through `masked_token_ce`), `ce_rows`: loss and logit
/// gradients; each logit tensor also feeds a small second term, so the fused backward must
/// add to a gradient that is already there.
macro_rules! ce_case {
    ($E:ty, $seed:expr) => {{
        let dev = Dev::seed_from_u64($seed);
        let x: Tensor<(usize, Const<V>), $E, Dev> = dev.sample_normal_like(&(9, Const));
        let x = x * 3.0;
        let xt = x.leaky_trace();
        let x2 = xt.with_empty_tape();
        let l1 = masked_rows_ce(xt, &LABELS);
        // Recorded after the loss, so its backward runs first.
        let extra = x2.square().sum() * 0.01;
        let v1 = to64(vec![l1.array()]);
        let g1 = (l1 * 1.7 + extra).backward();
        let x3: Tensor<(usize, usize, Const<V>), $E, Dev> = dev.sample_normal_like(&(3, 3, Const));
        let l3 = masked_token_ce(x3.leaky_trace(), &LABELS);
        let v3 = to64(vec![l3.array()]);
        let g3 = l3.backward();
        let y: Tensor<(usize, usize), $E, Dev> = dev.sample_normal_like(&(5, 350));
        let l2 = ce_rows(y.leaky_trace(), &[349, 0, 12, 12, 200]);
        let v2 = to64(vec![l2.array()]);
        let g2 = (l2 * -0.3).backward();
        vec![
            ("masked_rows_ce", v1),
            ("masked_rows_ce d logits", to64(g1.get(&x).as_vec())),
            ("masked_token_ce", v3),
            ("masked_token_ce d logits", to64(g3.get(&x3).as_vec())),
            ("ce_rows", v2),
            ("ce_rows d logits", to64(g2.get(&y).as_vec())),
        ]
    }};
}

#[test]
fn cross_entropy_fused_equals_plain() {
    fused_matches_plain(1e-12, || ce_case!(f64, 6));
    fused_matches_plain(1e-5, || ce_case!(f32, 6));
}

/// The MTP vocabulary (V = 49408), one row per parallel task, f32: fused and plain against the
/// plain composition in f64 on the same (f32-representable) logits. The fused kernel sums each
/// row's `exp` in f64, so it is the closer one; plain f32 sums 49408 terms in f32.
#[test]
fn cross_entropy_at_vocabulary_size() {
    const VOCAB: usize = 49408;
    let dev = Dev::seed_from_u64(7);
    let x: Tensor<(usize, Const<VOCAB>), f32, Dev> = dev.sample_normal_like(&(4, Const));
    let x = x * 4.0;
    let x64: Tensor<(usize, Const<VOCAB>), f64, Dev> =
        dev.tensor_from_vec(to64(x.as_vec()), (4, Const));
    let labels = [49407, 0, 1, 20000];
    let run32 = |on| {
        with_fused(on, || {
            let l = masked_rows_ce(x.leaky_trace(), &labels);
            let v = l.array() as f64;
            (v, to64(l.backward().get(&x).as_vec()))
        })
    };
    let l = with_fused(false, || masked_rows_ce(x64.leaky_trace(), &labels));
    let (want, want_g) = (l.array(), l.backward().get(&x64).as_vec());
    for on in [true, false] {
        let (v, g) = run32(on);
        let (ev, eg) = (rel(&[v], &[want]), rel(&g, &want_g));
        eprintln!("fused {on}: loss rel err {ev:.2e}, gradient rel err {eg:.2e}");
        if on {
            assert!(ev < 1e-6 && eg < 1e-6, "fused: {ev:.2e} {eg:.2e}");
        }
    }
}

#[test]
fn cross_entropy_gradients_match_finite_differences() {
    let dev = Dev::seed_from_u64(8);
    let x: Tensor<(usize, Const<V>), f64, Dev> = dev.sample_normal_like(&(9, Const));
    let dx: Tensor<(usize, Const<V>), f64, Dev> = dev.sample_normal_like(&(9, Const));
    let y: Tensor<(usize, usize), f64, Dev> = dev.sample_normal_like(&(4, 11));
    let dy: Tensor<(usize, usize), f64, Dev> = dev.sample_normal_like(&(4, 11));
    let labels = [10, 0, 3, 3];
    with_fused(true, || {
        let g = masked_rows_ce(x.leaky_trace() * 2.0, &LABELS).backward();
        let at = |e: f64| masked_rows_ce((x.clone() + dx.clone() * e) * 2.0, &LABELS).array();
        fd_check("masked_rows_ce", at, dot(&g.get(&x).as_vec(), &dx.as_vec()));
        let g = ce_rows(y.leaky_trace(), &labels).backward();
        let at = |e: f64| ce_rows(y.clone() + dy.clone() * e, &labels).array();
        fd_check("ce_rows", at, dot(&g.get(&y).as_vec(), &dy.as_vec()));
    });
}

/// No labelled row: the loss is 0 and the logits' gradient is 0 (allocated), fused and plain.
#[test]
fn masked_rows_ce_without_labels_is_zero() {
    for fused in [true, false] {
        with_fused(fused, || {
            let dev = Dev::seed_from_u64(9);
            let x: Tensor<(usize, Const<V>), f64, Dev> = dev.sample_normal_like(&(3, Const));
            let l = masked_rows_ce(x.leaky_trace(), &[0, 0, 0]);
            assert_eq!(l.array(), 0.0, "fused {fused}");
            let g = l.backward();
            assert!(
                g.get(&x).as_vec().iter().all(|&v| v == 0.0),
                "fused {fused}"
            );
        });
    }
}

/// `ce_rows` of one row equals `logsumexp(z) − z[label]`.
#[test]
fn ce_rows_batch_of_one() {
    let z = [0.5f64, -1.0, 2.0, 0.0];
    let want = z.iter().map(|v| v.exp()).sum::<f64>().ln() - z[1];
    for fused in [true, false] {
        let dev = Dev::default();
        let l = with_fused(fused, || {
            ce_rows(dev.tensor_from_vec(z.to_vec(), (1, 4)), &[1])
        });
        assert!((l.array() - want).abs() < 1e-15, "fused {fused}");
    }
}

/// The fused ops apply on the CPU in f32/f64 with the switch on, and hand the inputs back
/// otherwise (so the comparisons above do compare two different computations).
#[test]
fn fused_ops_apply_only_when_on() {
    let dev = Dev::seed_from_u64(10);
    let x: Tensor<(usize, usize), f32, Dev> = dev.sample_normal_like(&(2, 5));
    let ce = |on| {
        with_fused(on, || {
            fast::cross_entropy(x.clone(), &[1, 4], &[0.5, 0.5]).is_ok()
        })
    };
    assert!(ce(true) && !ce(false));
    let v: Tensor<(usize, Const<4>), f64, Dev> = dev.sample_normal_like(&(3, Const));
    let t: Tensor<(usize, Const<4>), f64, Dev> = dev.sample_normal_like(&(3, Const));
    let sdm = |on| {
        with_fused(on, || {
            fast::sdm(v.clone(), t.clone(), &[0.0; 9], 50.0).is_ok()
        })
    };
    assert!(sdm(true) && !sdm(false));
    // Non-contiguous logits go the plain way.
    let xt = x.clone().permute::<_, Axes2<1, 0>>();
    assert!(fast::cross_entropy(xt, &[0, 1, 0, 1, 0], &[1.0; 5]).is_err());
}

/// Loss and gradients repeat bit for bit, with enough rows for several parallel tasks.
#[test]
fn fused_losses_repeat_bit_for_bit() {
    let dev = Dev::seed_from_u64(11);
    let img: Tensor<(usize, Const<32>), f32, Dev> = dev.sample_normal_like(&(96, Const));
    let txt: Tensor<(usize, Const<32>), f32, Dev> = dev.sample_normal_like(&(96, Const));
    let x: Tensor<(usize, Const<3000>), f32, Dev> = dev.sample_normal_like(&(80, Const));
    let pids: Vec<usize> = (0..96).map(|i| i % 40).collect();
    let labels: Vec<u32> = (0..80).map(|i| (i * 37 % 3000) as u32).collect();
    let bits = |v: Vec<f32>| v.into_iter().map(f32::to_bits).collect::<Vec<_>>();
    let run = || {
        let s = sdm_loss(img.leaky_trace(), txt.leaky_trace(), &pids, 50.0, SDM_EPS);
        let c = masked_rows_ce(x.leaky_trace(), &labels);
        let out = bits(vec![s.array(), c.array()]);
        let g = (s + c).backward();
        (
            out,
            bits(g.get(&img).as_vec()),
            bits(g.get(&txt).as_vec()),
            bits(g.get(&x).as_vec()),
        )
    };
    let first = with_fused(true, run);
    for _ in 0..5 {
        assert!(
            with_fused(true, run) == first,
            "fused losses changed between identical runs"
        );
    }
}
