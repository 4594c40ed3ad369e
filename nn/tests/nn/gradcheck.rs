//! f64 finite-difference checks of the towers' gradients (independent of PyTorch), and the
//! preset sizes. Central differences along a random direction of one parameter tensor.

use dfdx::prelude::*;
use gadms_nn::*;

type SmallText = TextTower<50, 77, 16, 2, 8, 32, 2, 8, f64, Cpu>;
type SmallVision = VisionTower<32, 16, 16, 768, 3, 16, 2, 8, 32, 2, 8, f64, Cpu>;

fn rows() -> Vec<[u32; 77]> {
    (0..3)
        .map(|b| {
            let mut r = [0u32; 77];
            r[0] = 48;
            for (j, x) in r.iter_mut().enumerate().take(4 + 5 * b).skip(1) {
                *x = ((j * 7 + b * 3) % 47 + 1) as u32;
            }
            r[4 + 5 * b] = 49;
            r
        })
        .collect()
}

fn text_loss(
    m: &SmallText,
    input: &TextInput<77, Cpu>,
    r: &Tensor<(usize, Const<8>), f64, Cpu>,
) -> f64 {
    let f = m.forward_features(input, NoneTape);
    (f * r.clone()).sum::<(), _>().array()
}

#[test]
fn text_tower_gradient_matches_finite_differences() {
    let dev = Cpu::seed_from_u64(1);
    let mut m = SmallText::build(&dev);
    let input = TextInput::new(&dev, &rows());
    let r: Tensor<(usize, Const<8>), f64, Cpu> = dev.sample_normal_like(&(3, Const));
    let f = m.forward_features(&input, tape_with(&dev, m.alloc_grads()));
    let grads = (f * r.clone()).sum::<(), _>().backward();
    // Directional derivative along a random direction of the last block's q/k weights,
    // which reach the loss only through the causal softmax.
    let dir: Tensor<Rank2<16, 16>, f64, Cpu> = dev.sample_normal();
    for which in ["q", "k"] {
        let (g, w) = {
            let a = &m.transformer.resblocks.modules[1].attn;
            let l = if which == "q" { &a.q_proj } else { &a.k_proj };
            (grads.get(&l.weight), l.weight.clone())
        };
        let analytic = (g * dir.clone()).sum::<(), _>().array();
        let eps = 1e-6;
        let set = |m: &mut SmallText, delta: f64| {
            let a = &mut m.transformer.resblocks.modules[1].attn;
            let l = if which == "q" {
                &mut a.q_proj
            } else {
                &mut a.k_proj
            };
            l.weight = w.clone() + dir.clone() * delta;
        };
        set(&mut m, eps);
        let plus = text_loss(&m, &input, &r);
        set(&mut m, -eps);
        let minus = text_loss(&m, &input, &r);
        set(&mut m, 0.0);
        let numeric = (plus - minus) / (2.0 * eps);
        let rel = (analytic - numeric).abs() / numeric.abs().max(1e-8);
        assert!(
            rel < 1e-6,
            "{which}: analytic {analytic} vs numeric {numeric}"
        );
    }
}

#[test]
fn vision_tower_gradient_matches_finite_differences() {
    let dev = Cpu::seed_from_u64(2);
    let mut m = SmallVision::build(&dev);
    let images: Tensor<(usize, Const<3>, Const<32>, Const<16>), f64, Cpu> =
        dev.sample_normal_like(&(2, Const, Const, Const));
    let r: Tensor<(usize, Const<3>, Const<8>), f64, Cpu> =
        dev.sample_normal_like(&(2, Const, Const));
    let loss = |m: &SmallVision| {
        (m.forward(images.clone(), None) * r.clone())
            .sum::<(), _>()
            .array()
    };
    let tok = m.forward(images.clone().trace(m.alloc_grads()), None);
    let grads = (tok * r.clone()).sum::<(), _>().backward();
    let dir: Tensor<Rank2<16, 768>, f64, Cpu> = dev.sample_normal();
    let analytic = (grads.get(&m.conv1.weight) * dir.clone())
        .sum::<(), _>()
        .array();
    let w = m.conv1.weight.clone();
    let eps = 1e-6;
    m.conv1.weight = w.clone() + dir.clone() * eps;
    let plus = loss(&m);
    m.conv1.weight = w.clone() - dir.clone() * eps;
    let minus = loss(&m);
    let numeric = (plus - minus) / (2.0 * eps);
    assert!(
        (analytic - numeric).abs() / numeric.abs() < 1e-6,
        "{analytic} vs {numeric}"
    );
}

#[test]
fn attention_probabilities_are_causal_and_normalised() {
    let dev = Cpu::seed_from_u64(3);
    let m = SmallText::build(&dev);
    let input = TextInput::new(&dev, &rows());
    let mut probs = Vec::new();
    let _ = m.forward(input.ids.clone(), NoneTape, Some(&mut probs));
    assert_eq!(probs.len(), 2);
    let p = probs[0].as_vec();
    for (i, row) in p.chunks_exact(77).enumerate() {
        let q = i % 77;
        assert!((row.iter().sum::<f64>() - 1.0).abs() < 1e-12);
        assert!(
            row[q + 1..].iter().all(|&x| x == 0.0),
            "key after query {q} is visible"
        );
    }
}

#[test]
fn presets_have_their_names_and_sizes() {
    assert_eq!(spec_of::<Tiny<f32, Cpu>>(), TINY_SPEC);
    assert_eq!(spec_of::<ViTB16<f32, Cpu>>(), VITB16_SPEC);
    assert_eq!(VITB16_SPEC.vision.seq(), 193);
    assert_eq!(TINY_SPEC.vision.grid(), (4, 2));
    assert_eq!(spec_of::<Clip<SmallVision, SmallText>>().name, "custom");
}

#[test]
fn cls_token_gradient_adds_to_other_uses_of_the_tokens() {
    // Regression: dfdx 0.13's CPU `slice` backward overwrites the source gradient; cls_token
    // must add (d/dtokens of Σ cls·r1 + Σ tokens·r2 at position 0 is r1 + r2[:, 0]).
    let dev = Cpu::seed_from_u64(4);
    let tokens: Tensor<(usize, Const<3>, Const<4>), f64, Cpu> =
        dev.sample_normal_like(&(2, Const, Const));
    let r1: Tensor<(usize, Const<4>), f64, Cpu> = dev.sample_normal_like(&(2, Const));
    let r2: Tensor<(usize, Const<3>, Const<4>), f64, Cpu> =
        dev.sample_normal_like(&(2, Const, Const));
    let t = tokens.leaky_trace();
    let cls = cls_token(t.with_empty_tape());
    let loss = (t * r2.clone()).sum::<(), _>() + (cls * r1.clone()).sum::<(), _>();
    let g = loss.backward().get(&tokens).as_vec();
    let (r1, r2) = (r1.as_vec(), r2.as_vec());
    for b in 0..2 {
        for c in 0..4 {
            let want = r1[b * 4 + c] + r2[b * 12 + c];
            assert!(
                (g[b * 12 + c] - want).abs() < 1e-12,
                "b{b} c{c}: {} vs {want}",
                g[b * 12 + c]
            );
        }
    }
}
