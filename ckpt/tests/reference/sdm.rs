//! SDM loss (`gadms_nn::loss::sdm_loss`): parity with IRRA's PyTorch `compute_sdm`
//! (fixtures/sdm/ref_sdm.safetensors, made by fixtures/sdm/make.py), a finite-difference
//! gradient check in f64, and a demonstration that the check catches dfdx 0.13's
//! permuted-softmax gradient bug (docs/dfdx.md §1.4).

use crate::common::{fixture, rel_err, tensor};
use dfdx::prelude::*;
use gadms_ckpt::tensors::read_ints;
use gadms_nn::Float;
use gadms_nn::loss::{SDM_EPS, l2_normalize, sdm_loss, sdm_targets};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const FIXTURE: &str = "sdm/ref_sdm.safetensors";

/// Loss and gradients (w.r.t. image and text features) of `sdm_loss` computed in `E`.
fn sdm_with_grads<E: Float + Into<f64>>(
    img: &[f64],
    txt: &[f64],
    k: usize,
    pids: &[usize],
    scale: f64,
) -> (f64, Vec<f64>, Vec<f64>)
where
    Cpu: Device<E>,
{
    let dev = Cpu::default();
    let b = pids.len();
    let conv = |v: &[f64]| {
        v.iter()
            .map(|&x| E::from_f64(x).unwrap())
            .collect::<Vec<E>>()
    };
    let i0 = dev.tensor_from_vec(conv(img), (b, k));
    let t0 = dev.tensor_from_vec(conv(txt), (b, k));
    let loss = sdm_loss(i0.leaky_trace(), t0.leaky_trace(), pids, scale, SDM_EPS);
    let value: f64 = loss.array().into();
    let g = loss.backward();
    let back = |v: Vec<E>| v.into_iter().map(Into::into).collect::<Vec<f64>>();
    (value, back(g.get(&i0).as_vec()), back(g.get(&t0).as_vec()))
}

fn sdm_value(img: &[f64], txt: &[f64], k: usize, pids: &[usize], scale: f64) -> f64 {
    let dev = Cpu::default();
    let b = pids.len();
    let i = dev.tensor_from_vec(img.to_vec(), (b, k));
    let t = dev.tensor_from_vec(txt.to_vec(), (b, k));
    sdm_loss(i, t, pids, scale, SDM_EPS).array()
}

fn to_f64(v: &[f32]) -> Vec<f64> {
    v.iter().map(|&x| x as f64).collect()
}

fn to_f32(v: &[f64]) -> Vec<f32> {
    v.iter().map(|&x| x as f32).collect()
}

struct Case {
    img: Vec<f64>,
    txt: Vec<f64>,
    k: usize,
    pids: Vec<usize>,
    scale: f64,
    loss: f64,
    grad_img: Vec<f32>,
    grad_txt: Vec<f32>,
}

fn load_case(name: &str) -> Case {
    let img = tensor(FIXTURE, &format!("{name}.image_feats"));
    let txt = tensor(FIXTURE, &format!("{name}.text_feats"));
    let (_, pids) = read_ints(&fixture(FIXTURE), &format!("{name}.pids")).expect("pids");
    Case {
        k: img.shape[1],
        img: to_f64(&img.data),
        txt: to_f64(&txt.data),
        pids: pids.into_iter().map(|p| p as usize).collect(),
        scale: tensor(FIXTURE, &format!("{name}.logit_scale")).data[0] as f64,
        loss: tensor(FIXTURE, &format!("{name}.loss")).data[0] as f64,
        grad_img: tensor(FIXTURE, &format!("{name}.grad_image")).data,
        grad_txt: tensor(FIXTURE, &format!("{name}.grad_text")).data,
    }
}

/// dfdx `sdm_loss` (f32 and f64) vs IRRA's `compute_sdm` in PyTorch: loss and both feature
/// gradients within 1e-4 relative (f64: 1e-6, the fixture's own f32 rounding).
#[test]
fn sdm_matches_pytorch_reference() {
    for name in ["ident", "pretrain", "close"] {
        let c = load_case(name);
        assert_eq!(c.scale, 50.0);
        for (label, (loss, gi, gt), tol) in [
            (
                "f32",
                sdm_with_grads::<f32>(&c.img, &c.txt, c.k, &c.pids, c.scale),
                1e-4,
            ),
            (
                "f64",
                sdm_with_grads::<f64>(&c.img, &c.txt, c.k, &c.pids, c.scale),
                1e-6,
            ),
        ] {
            let el = (loss - c.loss).abs() / c.loss.abs();
            let ei = rel_err(&to_f32(&gi), &c.grad_img);
            let et = rel_err(&to_f32(&gt), &c.grad_txt);
            eprintln!(
                "{name} {label}: loss {loss:.6} (ref {:.6}) rel {el:.1e}; grad img {ei:.1e} txt {et:.1e}",
                c.loss
            );
            assert!(el <= tol, "{name} {label}: loss rel err {el:.3e}");
            assert!(ei <= tol, "{name} {label}: d/d image rel err {ei:.3e}");
            assert!(et <= tol, "{name} {label}: d/d text rel err {et:.3e}");
        }
    }
}

/// Random features [b, k] with rows of different norms, a random direction, and pids with
/// repeats.
fn random_problem(seed: u64, b: usize, k: usize) -> (Vec<f64>, Vec<f64>, Vec<f64>, Vec<f64>) {
    let mut rng = StdRng::seed_from_u64(seed);
    let gen_m = |rng: &mut StdRng| -> Vec<f64> {
        (0..b)
            .flat_map(|_| {
                let s = rng.gen_range(0.5..2.5);
                (0..k)
                    .map(|_| s * rng.gen_range(-1.0..1.0))
                    .collect::<Vec<f64>>()
            })
            .collect()
    };
    let img = gen_m(&mut rng);
    let txt = gen_m(&mut rng);
    let di = gen_m(&mut rng);
    let dt = gen_m(&mut rng);
    (img, txt, di, dt)
}

fn add(x: &[f64], d: &[f64], h: f64) -> Vec<f64> {
    x.iter().zip(d).map(|(a, b)| a + h * b).collect()
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// Central-difference directional derivative of `f` at (img, txt) along (di, dt).
fn fd(f: impl Fn(&[f64], &[f64]) -> f64, img: &[f64], txt: &[f64], di: &[f64], dt: &[f64]) -> f64 {
    let h = 1e-6;
    (f(&add(img, di, h), &add(txt, dt, h)) - f(&add(img, di, -h), &add(txt, dt, -h))) / (2.0 * h)
}

const PIDS: [usize; 7] = [4, 0, 4, 1, 0, 2, 4];

/// Finite-difference check of both feature gradients in f64 (central differences, random
/// directions), separately for the image side, the text side and both at once.
///
/// Why this would fail with the permuted-softmax bug: IRRA computes `i2t = t2i.t()`. In dfdx
/// 0.13, `log_softmax` of that permuted view stores dL/d(i2t) under the id of the contiguous
/// `t2i` buffer *in logical (transposed) order*, so the i2t branch contributes
/// `(dL/d i2t)` where `(dL/d i2t)ᵀ` belongs. For a non-symmetric gradient matrix (any random
/// batch) the analytic directional derivative then differs from the finite difference — see
/// `naive_permuted_sdm_fails_the_same_check`, which builds exactly that variant and shows the
/// check rejects it while its forward value is unchanged.
#[test]
fn sdm_gradient_matches_finite_differences() {
    let (b, k) = (PIDS.len(), 8);
    let (img, txt, di, dt) = random_problem(7, b, k);
    let zero = vec![0.0; b * k];
    let f = |i: &[f64], t: &[f64]| sdm_value(i, t, k, &PIDS, 50.0);
    let (_, gi, gt) = sdm_with_grads::<f64>(&img, &txt, k, &PIDS, 50.0);
    for (what, dir_i, dir_t) in [
        ("image", &di, &zero),
        ("text", &zero, &dt),
        ("both", &di, &dt),
    ] {
        let analytic = dot(&gi, dir_i) + dot(&gt, dir_t);
        let numeric = fd(f, &img, &txt, dir_i, dir_t);
        let err = (analytic - numeric).abs() / numeric.abs().max(1e-3);
        eprintln!("{what}: analytic {analytic:.9e} finite-diff {numeric:.9e} rel {err:.1e}");
        assert!(
            err < 1e-6,
            "{what}: analytic {analytic} vs finite difference {numeric}"
        );
    }
}

/// `Σ_ij p_ij (log p_ij − log_q_ij)`, p = softmax over rows (as inside `sdm_loss`).
fn kl_rows<T: Tape<f64, Cpu>>(
    logits: Tensor<(usize, usize), f64, Cpu, T>,
    log_q: Tensor<(usize, usize), f64, Cpu>,
) -> Tensor<Rank0, f64, Cpu, T> {
    let log_p = logits.log_softmax::<Axis<1>>();
    let p = log_p.with_empty_tape().exp();
    (p * (log_p - log_q)).sum()
}

/// IRRA's formulation written naively in dfdx: `i2t = t2i.permute()` fed to `log_softmax`.
fn sdm_naive_permuted<T: Tape<f64, Cpu>>(
    img: Tensor<(usize, usize), f64, Cpu, T>,
    txt: Tensor<(usize, usize), f64, Cpu, T>,
    pids: &[usize],
    scale: f64,
) -> Tensor<Rank0, f64, Cpu, T> {
    let b = pids.len();
    let dev = Cpu::default();
    let t2i = l2_normalize(txt).matmul(l2_normalize(img).permute::<_, Axes2<1, 0>>()) * scale;
    let i2t = t2i.with_empty_tape().permute::<_, Axes2<1, 0>>(); // the bug trigger
    let log_q: Vec<f64> = sdm_targets(pids)
        .into_iter()
        .map(|q| (q + SDM_EPS).ln())
        .collect();
    let log_q = dev.tensor_from_vec(log_q, (b, b));
    let inv_b = 1.0 / b as f64;
    kl_rows(i2t, log_q.clone()) * inv_b + kl_rows(t2i, log_q) * inv_b
}

/// The naive transposed variant has the right value but a wrong gradient, and the
/// finite-difference check above rejects it. If this test ever fails because the gradients
/// agree, dfdx fixed the bug (docs/dfdx.md §1.4); the main implementation stays valid.
#[test]
fn naive_permuted_sdm_fails_the_same_check() {
    let (b, k) = (PIDS.len(), 8);
    let (img, txt, di, dt) = random_problem(7, b, k);
    let dev = Cpu::default();
    let i0 = dev.tensor_from_vec(img.clone(), (b, k));
    let t0 = dev.tensor_from_vec(txt.clone(), (b, k));
    let loss = sdm_naive_permuted(i0.leaky_trace(), t0.leaky_trace(), &PIDS, 50.0);
    let value = loss.array();
    let g = loss.backward();
    let analytic = dot(&g.get(&i0).as_vec(), &di) + dot(&g.get(&t0).as_vec(), &dt);
    let f = |i: &[f64], t: &[f64]| sdm_value(i, t, k, &PIDS, 50.0);
    let numeric = fd(f, &img, &txt, &di, &dt);
    let good = sdm_value(&img, &txt, k, &PIDS, 50.0);
    eprintln!(
        "naive: value {value:.12} (correct {good:.12}); analytic {analytic:.6e} vs finite-diff {numeric:.6e}"
    );
    assert!(
        (value - good).abs() < 1e-10 * good.abs(),
        "forward values must agree"
    );
    assert!(
        (analytic - numeric).abs() > 1e-2 * numeric.abs(),
        "the permuted-softmax gradient now matches: dfdx may have fixed the bug"
    );
}

#[test]
fn targets_are_row_normalised() {
    let pids = [3, 3, 7, 1, 7, 7];
    let q = sdm_targets(&pids);
    for i in 0..6 {
        let row = &q[i * 6..(i + 1) * 6];
        assert!((row.iter().sum::<f64>() - 1.0).abs() < 1e-12);
        for j in 0..6 {
            assert_eq!(row[j] > 0.0, pids[i] == pids[j]);
        }
    }
    assert_eq!(q[2 * 6 + 4], 1.0 / 3.0);
    let eye = sdm_targets(&[0, 1, 2]);
    assert_eq!(eye, vec![1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]);
}

/// Perfectly aligned, well-separated pairs with unique pids give a loss near 0; swapping the
/// captions gives a large one.
#[test]
fn aligned_pairs_have_small_loss() {
    let k = 4;
    let img = vec![1.0, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 2.0, 0.0];
    let pids = [0, 1, 2];
    let aligned = sdm_value(&img, &img, k, &pids, 50.0);
    let mut swapped = img.clone();
    swapped.rotate_left(k);
    let wrong = sdm_value(&img, &swapped, k, &pids, 50.0);
    assert!(aligned < 1e-6, "aligned loss {aligned}");
    assert!(wrong > 10.0, "misaligned loss {wrong}");
}
