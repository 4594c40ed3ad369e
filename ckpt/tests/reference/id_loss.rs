//! IRRA's identity classifier and ID loss (`gadms_nn::id`, docs/method.md §5.3)
//! against PyTorch autograd (`fixtures/id/make.py` → `fixtures/id/ref_id.safetensors`):
//! logits, loss, the gradients w.r.t. both feature batches (through dfdx's tape) and the
//! classifier's closed-form gradients, at 1e-4 relative; plus a finite-difference check in
//! f64 and the IRRA initialisation.

use crate::common::{assert_close, fixture, tensor};
use dfdx::prelude::*;
use gadms_ckpt::Array;
use gadms_ckpt::tensors::read_ints;
use gadms_nn::IdClassifier;

const REF: &str = "id/ref_id.safetensors";

fn check_case<const E: usize>(case: &str) {
    let dev = Cpu::default();
    let t = |k: &str| tensor(REF, &format!("{case}.{k}"));
    let (img, txt, w, b) = (t("image_feats"), t("text_feats"), t("weight"), t("bias"));
    let (_, pids) = read_ints(&fixture(REF), &format!("{case}.pids")).unwrap();
    let pids: Vec<usize> = pids.iter().map(|&p| p as usize).collect();
    let n = pids.len();
    let c = b.data.len();
    let cls = IdClassifier::<E, f32, Cpu>::from_vecs(&dev, w.data.clone(), b.data.clone());
    assert_eq!(cls.classes(), c);

    // Logits.
    let fi = dev.tensor_from_vec(img.data.clone(), (n, Const::<E>));
    let logits = cls.logits(fi.clone());
    let got = Array::new(vec![n, c], logits.as_vec());
    assert_close(&format!("{case} logits"), &got, &t("logits_img"), 1e-4);

    // Loss and gradients: one tape through both feature batches.
    let fi = dev.tensor_from_vec(img.data.clone(), (n, Const::<E>));
    let ft = dev.tensor_from_vec(txt.data.clone(), (n, Const::<E>));
    let grads = Gradients::leaky();
    let (loss, cg) = cls.loss(fi.trace(grads), ft.retaped::<OwnedTape<f32, Cpu>>(), &pids);
    let got_loss = Array::new(vec![], loss.as_vec());
    assert_close(&format!("{case} loss"), &got_loss, &t("loss"), 1e-4);
    let g = loss.backward();
    let gi = Array::new(vec![n, E], g.get(&fi).as_vec());
    let gt = Array::new(vec![n, E], g.get(&ft).as_vec());
    assert_close(&format!("{case} grad image"), &gi, &t("grad_image"), 1e-4);
    assert_close(&format!("{case} grad text"), &gt, &t("grad_text"), 1e-4);
    let gw = Array::new(vec![c, E], cg.weight.clone());
    let gb = Array::new(vec![c], cg.bias.clone());
    assert_close(&format!("{case} grad weight"), &gw, &t("grad_weight"), 1e-4);
    assert_close(&format!("{case} grad bias"), &gb, &t("grad_bias"), 1e-4);
}

#[test]
fn id_loss_matches_pytorch_small() {
    check_case::<16>("small");
}

#[test]
fn id_loss_matches_pytorch_at_tiny_size_with_350_classes() {
    check_case::<32>("tiny");
}

#[test]
fn id_loss_matches_pytorch_at_irra_init() {
    check_case::<32>("init");
}

/// Finite differences in f64 of the loss w.r.t. the classifier weight and bias (the closed
/// form) and w.r.t. the features (dfdx's tape), along random directions.
#[test]
fn id_loss_gradients_match_finite_differences() {
    const E: usize = 6;
    let dev = Cpu::seed_from_u64(3);
    let (n, c) = (5, 4);
    let pids = [0usize, 2, 2, 3, 1];
    let rnd = |len: usize, seed: u64| -> Vec<f64> {
        (0..len)
            .map(|i| ((i as u64 * 2654435761 + seed * 97) % 1000) as f64 / 500.0 - 1.0)
            .collect()
    };
    let (img, txt) = (rnd(n * E, 1), rnd(n * E, 2));
    let (w, b) = (rnd(c * E, 3), rnd(c, 4));
    let loss_of = |img: &[f64], txt: &[f64], w: &[f64], b: &[f64]| -> f64 {
        let cls = IdClassifier::<E, f64, Cpu>::from_vecs(&dev, w.to_vec(), b.to_vec());
        let fi = dev.tensor_from_vec(img.to_vec(), (n, Const::<E>));
        let ft = dev.tensor_from_vec(txt.to_vec(), (n, Const::<E>));
        cls.loss(fi, ft, &pids).0.array()
    };
    let cls = IdClassifier::<E, f64, Cpu>::from_vecs(&dev, w.clone(), b.clone());
    let fi = dev.tensor_from_vec(img.clone(), (n, Const::<E>));
    let ft = dev.tensor_from_vec(txt.clone(), (n, Const::<E>));
    let (loss, cg) = cls.loss(
        fi.trace(Gradients::leaky()),
        ft.retaped::<OwnedTape<f64, Cpu>>(),
        &pids,
    );
    let g = loss.backward();
    let (gi, gt) = (g.get(&fi).as_vec(), g.get(&ft).as_vec());
    let eps = 1e-6;
    let dirs = |len, s| rnd(len, s);
    let fd = |d_img: &[f64], d_txt: &[f64], d_w: &[f64], d_b: &[f64]| -> f64 {
        let add = |x: &[f64], d: &[f64], s: f64| -> Vec<f64> {
            x.iter().zip(d).map(|(a, b)| a + s * b).collect()
        };
        (loss_of(
            &add(&img, d_img, eps),
            &add(&txt, d_txt, eps),
            &add(&w, d_w, eps),
            &add(&b, d_b, eps),
        ) - loss_of(
            &add(&img, d_img, -eps),
            &add(&txt, d_txt, -eps),
            &add(&w, d_w, -eps),
            &add(&b, d_b, -eps),
        )) / (2.0 * eps)
    };
    let dot = |a: &[f64], b: &[f64]| a.iter().zip(b).map(|(x, y)| x * y).sum::<f64>();
    let (di, dt, dw, db) = (
        dirs(n * E, 11),
        dirs(n * E, 12),
        dirs(c * E, 13),
        dirs(c, 14),
    );
    let z = |len| vec![0.0; len];
    let cases = [
        ("image", fd(&di, &z(n * E), &z(c * E), &z(c)), dot(&gi, &di)),
        ("text", fd(&z(n * E), &dt, &z(c * E), &z(c)), dot(&gt, &dt)),
        (
            "weight",
            fd(&z(n * E), &z(n * E), &dw, &z(c)),
            dot(
                &cg.weight.iter().map(|&x| x as f64).collect::<Vec<_>>(),
                &dw,
            ),
        ),
        (
            "bias",
            fd(&z(n * E), &z(n * E), &z(c * E), &db),
            dot(&cg.bias.iter().map(|&x| x as f64).collect::<Vec<_>>(), &db),
        ),
    ];
    for (what, num, ana) in cases {
        // The classifier's gradients are returned as f32: compare at f32 precision.
        let tol = 1e-6 + 1e-5 * num.abs();
        assert!((num - ana).abs() < tol, "{what}: fd {num} vs {ana}");
    }
}

/// IRRA's init: weight std 0.001, bias 0.
#[test]
fn classifier_init_is_irra() {
    let dev = Cpu::seed_from_u64(0);
    let cls = IdClassifier::<32, f32, Cpu>::new(&dev, 350);
    let w = cls.weight.as_vec();
    assert_eq!(w.len(), 350 * 32);
    let std = (w.iter().map(|x| (*x as f64).powi(2)).sum::<f64>() / w.len() as f64).sqrt();
    assert!((std - 0.001).abs() < 5e-5, "std {std}");
    assert!(cls.bias.as_vec().iter().all(|&x| x == 0.0));
}
