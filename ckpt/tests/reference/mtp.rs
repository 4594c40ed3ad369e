//! The MTP decoder (IRRA `cross_former` + `mlm_head`) and its masked cross-entropy against
//! PyTorch (`fixtures/mtp/make.py`: IRRA's modules verbatim, float64 reference):
//! logits, loss and the gradient of every parameter and of both inputs.

use crate::common::*;
use dfdx::prelude::*;
use gadms_ckpt::bridge::{grads_to_map, map_to_module, module_to_map};
use gadms_ckpt::layout::{native_to_openai, openai_to_native};
use gadms_ckpt::{Array, TensorMap};
use gadms_nn::MtpDecoder;
use gadms_nn::fast::with_fused;
use gadms_nn::loss::{masked_rows_ce, masked_token_ce};

const FILE: &str = "mtp/ref_mtp.safetensors";
const TOL: f64 = 1e-4;

/// The fixture decoder: width 64, 2 heads of 32, MLP 256, 2 blocks, vocabulary 128.
type Fx = MtpDecoder<64, 2, 32, 256, 2, 128, f32, Cpu>;
type Text = Tensor<(usize, Const<77>, Const<64>), f32, Cpu>;
type Image = Tensor<(usize, Const<9>, Const<64>), f32, Cpu>;

fn load(dev: &Cpu) -> Fx {
    let mut params = section(FILE, "param.");
    params.origin = fixture(FILE);
    let native = openai_to_native(params).expect("layout");
    let mut m = Fx::build(dev);
    map_to_module(&native, &mut m).expect("load");
    m
}

fn inputs(dev: &Cpu) -> (Text, Image, Vec<u32>) {
    let t = tensor(FILE, "input.text_tokens");
    let i = tensor(FILE, "input.image_tokens");
    let b = t.shape[0];
    let text = dev.tensor_from_vec(t.data, (b, Const, Const));
    let image = dev.tensor_from_vec(i.data, (b, Const, Const));
    let labels: Vec<u32> = id_rows(FILE, "input.labels")
        .into_iter()
        .flatten()
        .collect();
    (text, image, labels)
}

fn arr<S: Shape>(t: &Tensor<S, f32, Cpu>) -> Array {
    Array::new(t.shape().concrete().into(), t.as_vec())
}

/// Reference parameter gradients (IRRA names), without the input gradients.
fn want_grads() -> TensorMap {
    let want = section(FILE, "grad.");
    TensorMap {
        tensors: want
            .tensors
            .into_iter()
            .filter(|(k, _)| !k.starts_with("input."))
            .collect(),
        ..Default::default()
    }
}

fn check_grads(what: &str, model: &Fx, grads: &Gradients<f32, Cpu>, text: &Text, image: &Image) {
    for (name, got) in [
        ("text_tokens", grads.get(text).as_vec()),
        ("image_tokens", grads.get(image).as_vec()),
    ] {
        let want = tensor(FILE, &format!("grad.input.{name}"));
        let e = rel_err(&got, &want.data);
        eprintln!("{what}: grad.input.{name} relative error {e:.2e}");
    }
    assert_close(
        &format!("{what}: grad.input.text_tokens"),
        &arr(&grads.get(text)),
        &tensor(FILE, "grad.input.text_tokens"),
        TOL,
    );
    assert_close(
        &format!("{what}: grad.input.image_tokens"),
        &arr(&grads.get(image)),
        &tensor(FILE, "grad.input.image_tokens"),
        TOL,
    );
    let got = native_to_openai(&grads_to_map(model, grads), 16, 0.0);
    assert_maps_close(what, &got, &want_grads(), &["logit_scale"], TOL);
}

fn check_loss(what: &str, got: f32) {
    let want = tensor(FILE, "out.loss").data[0];
    let e = ((got - want) / want).abs();
    eprintln!("{what}: loss {got} vs {want} (relative error {e:.2e})");
    assert!(e < TOL as f32, "{what}: loss {got} vs {want}");
}

/// Both paths: the fused CPU kernels and the plain dfdx composition (CUDA's path).
#[test]
fn logits_loss_and_all_gradients_match_irra() {
    with_fused(true, full_logits_match_irra);
    with_fused(false, full_logits_match_irra);
}

fn full_logits_match_irra() {
    let dev = Cpu::default();
    let model = load(&dev);
    let (text, image, labels) = inputs(&dev);
    let logits = model.forward(text.leaky_trace(), image.leaky_trace());
    let want = tensor(FILE, "out.logits");
    let got = arr(&logits.retaped::<NoneTape>());
    eprintln!(
        "logits: relative error {:.2e}",
        rel_err(&got.data, &want.data)
    );
    assert_close("logits", &got, &want, TOL);
    let loss = masked_token_ce(logits, &labels);
    check_loss("full", loss.array());
    let grads = loss.backward();
    check_grads("full-logit grads", &model, &grads, &text, &image);
}

#[test]
fn masked_positions_only_path_gives_the_same_loss_and_gradients() {
    with_fused(true, masked_rows_match_irra);
    with_fused(false, masked_rows_match_irra);
}

fn masked_rows_match_irra() {
    let dev = Cpu::default();
    let model = load(&dev);
    let (text, image, labels) = inputs(&dev);
    let (logits, targets) = model.forward_masked(text.leaky_trace(), image.leaky_trace(), &labels);
    let n = labels.iter().filter(|&&l| l != 0).count();
    assert_eq!(logits.shape().0, n);
    assert!(targets.iter().all(|&t| t != 0));
    // the gathered rows are the reference logits at the labelled positions, in order
    let want = tensor(FILE, "out.logits");
    let rows: Vec<f32> = labels
        .iter()
        .enumerate()
        .filter(|(_, l)| **l != 0)
        .flat_map(|(i, _)| want.data[i * 128..(i + 1) * 128].to_vec())
        .collect();
    assert_close(
        "gathered logits",
        &arr(&logits.retaped::<NoneTape>()),
        &Array::new(vec![n, 128], rows),
        TOL,
    );
    let loss = masked_rows_ce(logits, &targets);
    check_loss("masked-only", loss.array());
    let grads = loss.backward();
    check_grads("masked-only grads", &model, &grads, &text, &image);
}

#[test]
fn irra_key_names_round_trip_exactly() {
    let dev = Cpu::default();
    let model = load(&dev);
    let back = native_to_openai(&module_to_map(&model), 16, 0.0);
    let orig = section(FILE, "param.");
    assert_maps_close("irra round trip", &back, &orig, &["logit_scale"], 0.0);
    for k in [
        "cross_attn.in_proj_weight",
        "cross_attn.in_proj_bias",
        "cross_attn.out_proj.weight",
        "cross_modal_transformer.resblocks.1.attn.in_proj_weight",
        "cross_modal_transformer.resblocks.1.mlp.c_proj.bias",
        "ln_pre_t.weight",
        "ln_pre_i.bias",
        "ln_post.weight",
        "mlm_head.dense.weight",
        "mlm_head.ln.weight",
        "mlm_head.fc.bias",
    ] {
        assert!(back.tensors.contains_key(k), "{k} missing");
    }
}

#[test]
fn masked_ce_ignores_label_zero_positions() {
    const V: usize = 11;
    let dev = Cpu::default();
    let labels: Vec<u32> = vec![0, 3, 0, 10, 1, 0, 0, 7];
    let base: Vec<f64> = (0..labels.len() * V)
        .map(|i| ((i * 37 % 23) as f64 - 11.0) * 0.3)
        .collect();
    let run = |data: Vec<f64>, labels: &[u32]| {
        let x: Tensor<(usize, usize, Const<V>), f64, Cpu> =
            dev.tensor_from_vec(data, (2, 4, Const));
        let loss = masked_token_ce(x.leaky_trace(), labels);
        let v = loss.array();
        let g = loss.backward().get(&x).as_vec();
        (v, g)
    };
    let (l0, g0) = run(base.clone(), &labels);
    // hand computation: mean over the labelled rows of logsumexp(row) − row[label]
    let mut want = 0.0;
    let mut n = 0;
    for (r, &l) in labels.iter().enumerate() {
        if l == 0 {
            continue;
        }
        let row = &base[r * V..(r + 1) * V];
        let m = row.iter().cloned().fold(f64::MIN, f64::max);
        let lse = m + row.iter().map(|x| (x - m).exp()).sum::<f64>().ln();
        want += lse - row[l as usize];
        n += 1;
    }
    want /= n as f64;
    assert!((l0 - want).abs() < 1e-12, "{l0} vs {want}");
    // changing the logits at the ignored positions changes neither the loss nor any gradient
    let mut moved = base.clone();
    for (r, &l) in labels.iter().enumerate() {
        if l == 0 {
            for (j, x) in moved[r * V..(r + 1) * V].iter_mut().enumerate() {
                *x += 5.0 * (j as f64 - 4.0) + 100.0 * r as f64;
            }
        }
    }
    let (l1, g1) = run(moved, &labels);
    assert_eq!(l0, l1);
    assert_eq!(g0, g1);
    for (r, &l) in labels.iter().enumerate() {
        let row = &g0[r * V..(r + 1) * V];
        if l == 0 {
            assert!(
                row.iter().all(|&g| g == 0.0),
                "row {r}: ignored row has a gradient"
            );
        } else {
            // d/dlogits = (softmax − onehot) / n: sums to 0, negative only at the label
            assert!(row.iter().sum::<f64>().abs() < 1e-12);
            assert!(row[l as usize] < 0.0);
        }
    }
    // no labelled position at all: 0 (PyTorch would give NaN), zero gradients
    let (l2, g2) = run(base, &[0; 8]);
    assert_eq!(l2, 0.0);
    assert!(g2.iter().all(|&g| g == 0.0));
}

#[test]
fn init_follows_irra() {
    // W = 128, 2 heads, MLP 512, L = 4, V = 1024: scale = 128^-1/2, proj = scale·8^-1/2,
    // fc = 256^-1/2.
    type M = MtpDecoder<128, 2, 64, 512, 4, 1024, f32, Cpu>;
    let dev = Cpu::seed_from_u64(7);
    let m = M::build(&dev);
    let map = module_to_map(&m);
    let std = |a: &Array| {
        let n = a.data.len() as f64;
        let mean = a.data.iter().map(|&x| x as f64).sum::<f64>() / n;
        (a.data
            .iter()
            .map(|&x| (x as f64 - mean).powi(2))
            .sum::<f64>()
            / n)
            .sqrt()
    };
    let max_abs = |a: &Array| a.data.iter().fold(0.0f32, |m, x| m.max(x.abs())) as f64;
    let scale = 128f64.powf(-0.5);
    let proj = scale * 8f64.powf(-0.5);
    let fc = 256f64.powf(-0.5);
    let mut checked = 0;
    for (k, a) in &map.tensors {
        let expect_std = if k.ends_with("out_proj.weight")
            || k.ends_with("c_proj.weight")
            || k == "mlm_head.fc.weight"
        {
            Some(proj)
        } else if k.ends_with("_proj.weight") {
            Some(scale) // q, k, v (IRRA in_proj_weight)
        } else if k.ends_with("c_fc.weight") || k == "mlm_head.dense.weight" {
            Some(fc)
        } else {
            None
        };
        if let Some(s) = expect_std {
            let got = std(a);
            assert!(
                (got / s - 1.0).abs() < 0.05,
                "{k}: std {got:.4} vs IRRA {s:.4}"
            );
            checked += 1;
        } else if k.contains("attn.") && k.ends_with(".bias") {
            assert_eq!(max_abs(a), 0.0, "{k}: MHA biases start at 0");
        } else if k.contains("ln") && k.ends_with(".weight") {
            assert!(a.data.iter().all(|&x| x == 1.0), "{k}: LayerNorm weight 1");
        } else if k.contains("ln") && k.ends_with(".bias") {
            assert_eq!(max_abs(a), 0.0, "{k}: LayerNorm bias 0");
        } else if k.ends_with(".bias") {
            // nn.Linear default U(±1/sqrt(fan_in))
            let fan_in = if k.ends_with("c_proj.bias") {
                512.0
            } else {
                128.0
            };
            let bound = 1.0 / f64::sqrt(fan_in);
            assert!(max_abs(a) <= bound && max_abs(a) > 0.5 * bound, "{k}");
        } else {
            panic!("unexpected tensor {k}");
        }
    }
    // 4 (cross_attn) + 4 blocks × 6 + dense + fc
    assert_eq!(checked, 4 + 4 * 6 + 2);
}

/// Forward + backward time of the `Tiny` decoder at batch 32 (release:
/// `cargo test --release -p gadms-ckpt --test reference mtp:: -- --ignored --nocapture`).
#[test]
#[ignore]
fn tiny_batch32_timing() {
    use gadms_nn::MtpTiny;
    let dev = Cpu::seed_from_u64(1);
    let m = MtpTiny::<f32, Cpu>::build(&dev);
    let text: Tensor<(usize, Const<77>, Const<32>), f32, Cpu> =
        dev.sample_normal_like(&(32, Const, Const));
    let image: Tensor<(usize, Const<9>, Const<32>), f32, Cpu> =
        dev.sample_normal_like(&(32, Const, Const));
    let labels: Vec<u32> = (0..32 * 77)
        .map(|i: u32| {
            if i % 7 == 3 {
                1 + (i * 7919) % 49000
            } else {
                0
            }
        })
        .collect();
    for round in 0..3 {
        let t0 = std::time::Instant::now();
        let (logits, targets) = m.forward_masked(
            text.clone().leaky_trace(),
            image.clone().leaky_trace(),
            &labels,
        );
        let loss = masked_rows_ce(logits, &targets);
        let v = loss.array();
        let tf = t0.elapsed();
        let _g = loss.backward();
        let t1 = t0.elapsed();
        let t0 = std::time::Instant::now();
        let logits = m.forward(text.clone().leaky_trace(), image.clone().leaky_trace());
        let loss = masked_token_ce(logits, &labels);
        let v2 = loss.array();
        let _g = loss.backward();
        let t2 = t0.elapsed();
        eprintln!(
            "round {round}: masked-only {t1:?} (forward {tf:?}; loss {v}), full logits {t2:?} (loss {v2}), {} labelled",
            targets.len()
        );
    }
}
