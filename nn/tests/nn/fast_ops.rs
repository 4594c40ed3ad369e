//! The fused CPU kernels (`gadms_nn::fast`) against the plain dfdx composition (forward and
//! every gradient, f64 and f32) and against central finite differences (f64). The towers'
//! fused path is checked against PyTorch in `ckpt/tests/reference/parity.rs` (the `*_fused_*` tests).

use dfdx::nn::modules::Linear;
use dfdx::prelude::*;
use gadms_nn::fast::{set_fused, with_fused};
use gadms_nn::*;

type Dev = Cpu;

use crate::common::*;

macro_rules! linear_case {
    ($E:ty, $tol:expr) => {
        fused_matches_plain($tol, || {
            let dev = Dev::seed_from_u64(3);
            let lin = Linear::<7, 11, $E, Dev>::build(&dev);
            let x: Tensor<(usize, usize, Const<7>), $E, Dev> =
                dev.sample_normal_like(&(2, 5, Const));
            let r: Tensor<(usize, usize, Const<11>), $E, Dev> =
                dev.sample_normal_like(&(2, 5, Const));
            let y = fast::linear(&lin, x.leaky_trace());
            let out = to64(y.retaped::<NoneTape>().as_vec());
            let g = (y * r).sum::<(), _>().backward();
            vec![
                ("y", out),
                ("dx", to64(g.get(&x).as_vec())),
                ("dW", to64(g.get(&lin.weight).as_vec())),
                ("db", to64(g.get(&lin.bias).as_vec())),
            ]
        })
    };
}

#[test]
fn linear_fused_equals_plain() {
    linear_case!(f64, 1e-12);
    linear_case!(f32, 1e-5);
}

#[test]
fn linear_gradients_match_finite_differences() {
    let dev = Dev::seed_from_u64(4);
    let lin = Linear::<9, 13, f64, Dev>::build(&dev);
    let x: Tensor<(usize, usize, Const<9>), f64, Dev> = dev.sample_normal_like(&(3, 4, Const));
    let r: Tensor<(usize, usize, Const<13>), f64, Dev> = dev.sample_normal_like(&(3, 4, Const));
    let dx: Tensor<(usize, usize, Const<9>), f64, Dev> = dev.sample_normal_like(&(3, 4, Const));
    let dw: Tensor<Rank2<13, 9>, f64, Dev> = dev.sample_normal();
    let g = (fast::linear(&lin, x.leaky_trace()) * r.clone())
        .sum::<(), _>()
        .backward();
    let loss = |e: f64| {
        let mut l2 = lin.clone();
        l2.weight = lin.weight.clone() + dw.clone() * e;
        let y = fast::linear(&l2, x.clone() + dx.clone() * e);
        (y * r.clone()).sum::<(), _>().array()
    };
    let analytic =
        dot(&g.get(&x).as_vec(), &dx.as_vec()) + dot(&g.get(&lin.weight).as_vec(), &dw.as_vec());
    fd_check("linear", loss, analytic);
}

macro_rules! ln_case {
    ($E:ty, $tol:expr) => {
        fused_matches_plain($tol, || {
            let dev = Dev::seed_from_u64(5);
            let mut ln = LayerNorm::<24, $E, Dev>::build(&dev);
            ln.weight = dev.sample_normal();
            ln.bias = dev.sample_normal();
            let x: Tensor<(usize, usize, Const<24>), $E, Dev> =
                dev.sample_normal_like(&(3, 5, Const));
            let x = x * 3.0 + 1.5;
            let r: Tensor<(usize, usize, Const<24>), $E, Dev> =
                dev.sample_normal_like(&(3, 5, Const));
            let y = ln.forward3(x.leaky_trace());
            let out = to64(y.retaped::<NoneTape>().as_vec());
            let g = (y * r).sum::<(), _>().backward();
            let x2: Tensor<(usize, Const<24>), $E, Dev> = dev.sample_normal_like(&(4, Const));
            let y2 = ln
                .forward2(x2.leaky_trace())
                .square()
                .sum::<(), _>()
                .backward();
            vec![
                ("y", out),
                ("dx", to64(g.get(&x).as_vec())),
                ("dgamma", to64(g.get(&ln.weight).as_vec())),
                ("dbeta", to64(g.get(&ln.bias).as_vec())),
                ("dx 2-D", to64(y2.get(&x2).as_vec())),
            ]
        })
    };
}

#[test]
fn layer_norm_fused_equals_plain() {
    ln_case!(f64, 1e-12);
    ln_case!(f32, 1e-5);
}

#[test]
fn layer_norm_gradients_match_finite_differences() {
    let dev = Dev::seed_from_u64(6);
    let mut ln = LayerNorm::<16, f64, Dev>::build(&dev);
    ln.weight = dev.sample_normal();
    ln.bias = dev.sample_normal();
    let x: Tensor<(usize, usize, Const<16>), f64, Dev> = dev.sample_normal_like(&(2, 3, Const));
    let r: Tensor<(usize, usize, Const<16>), f64, Dev> = dev.sample_normal_like(&(2, 3, Const));
    let dx: Tensor<(usize, usize, Const<16>), f64, Dev> = dev.sample_normal_like(&(2, 3, Const));
    let dwt: Tensor<Rank1<16>, f64, Dev> = dev.sample_normal();
    let g = (ln.forward3(x.leaky_trace()) * r.clone())
        .sum::<(), _>()
        .backward();
    let loss = |e: f64| {
        let mut l2 = ln.clone();
        l2.weight = ln.weight.clone() + dwt.clone() * e;
        l2.bias = ln.bias.clone() + dwt.clone() * (2.0 * e);
        (l2.forward3(x.clone() + dx.clone() * e) * r.clone())
            .sum::<(), _>()
            .array()
    };
    let analytic = dot(&g.get(&x).as_vec(), &dx.as_vec())
        + dot(&g.get(&ln.weight).as_vec(), &dwt.as_vec())
        + 2.0 * dot(&g.get(&ln.bias).as_vec(), &dwt.as_vec());
    fd_check("layer_norm", loss, analytic);
}

macro_rules! gelu_case {
    ($E:ty, $tol:expr) => {
        fused_matches_plain($tol, || {
            let dev = Dev::seed_from_u64(7);
            // Wide range: the f32 exp polynomial and its clamp at both ends.
            let x: Tensor<(usize, Const<40>), $E, Dev> = dev.sample_normal_like(&(50, Const));
            let x = x * 5.0;
            let r: Tensor<(usize, Const<40>), $E, Dev> = dev.sample_normal_like(&(50, Const));
            let y = quick_gelu(x.leaky_trace());
            let out = to64(y.retaped::<NoneTape>().as_vec());
            let g = (y * r).sum::<(), _>().backward();
            vec![("y", out), ("dx", to64(g.get(&x).as_vec()))]
        })
    };
}

#[test]
fn quick_gelu_fused_equals_plain() {
    gelu_case!(f64, 1e-12);
    gelu_case!(f32, 1e-6);
}

#[test]
fn quick_gelu_gradient_matches_finite_differences() {
    let dev = Dev::seed_from_u64(8);
    let x: Tensor<(usize, Const<10>), f64, Dev> = dev.sample_normal_like(&(6, Const));
    let r: Tensor<(usize, Const<10>), f64, Dev> = dev.sample_normal_like(&(6, Const));
    let dx: Tensor<(usize, Const<10>), f64, Dev> = dev.sample_normal_like(&(6, Const));
    let g = (quick_gelu(x.leaky_trace()) * r.clone())
        .sum::<(), _>()
        .backward();
    let loss = |e: f64| {
        (quick_gelu(x.clone() + dx.clone() * e) * r.clone())
            .sum::<(), _>()
            .array()
    };
    fd_check("quick_gelu", loss, dot(&g.get(&x).as_vec(), &dx.as_vec()));
}

/// Self-attention with a causal mask over 7 tokens and cross-attention 5 → 9 tokens, 3 heads.
macro_rules! attn_case {
    ($E:ty, $tol:expr) => {
        fused_matches_plain($tol, || {
            let dev = Dev::seed_from_u64(9);
            let attn = Attention::<12, 3, 4, $E, Dev>::build(&dev);
            let x: Tensor<(usize, usize, Const<12>), $E, Dev> =
                dev.sample_normal_like(&(2, 7, Const));
            let mask: Tensor<(usize, usize), $E, Dev> =
                dev.upper_tri_like(&(7, 7), <$E>::NEG_INFINITY, 1);
            let r: Tensor<(usize, usize, Const<12>), $E, Dev> =
                dev.sample_normal_like(&(2, 7, Const));
            let y = attn.forward(x.leaky_trace(), Some(&mask), None);
            let out = to64(y.retaped::<NoneTape>().as_vec());
            let g = (y * r).sum::<(), _>().backward();
            let xq: Tensor<(usize, usize, Const<12>), $E, Dev> =
                dev.sample_normal_like(&(2, 5, Const));
            let xkv: Tensor<(usize, usize, Const<12>), $E, Dev> =
                dev.sample_normal_like(&(2, 9, Const));
            let y2 = attn.forward_cross(xq.leaky_trace(), xkv.leaky_trace(), None, None);
            let out2 = to64(y2.retaped::<NoneTape>().as_vec());
            let g2 = y2.square().sum::<(), _>().backward();
            vec![
                ("y", out),
                ("dx", to64(g.get(&x).as_vec())),
                ("dWq", to64(g.get(&attn.q_proj.weight).as_vec())),
                ("dbk", to64(g.get(&attn.k_proj.weight).as_vec())),
                ("dWv", to64(g.get(&attn.v_proj.weight).as_vec())),
                ("dWo", to64(g.get(&attn.out_proj.weight).as_vec())),
                ("cross y", out2),
                ("cross dxq", to64(g2.get(&xq).as_vec())),
                ("cross dxkv", to64(g2.get(&xkv).as_vec())),
            ]
        })
    };
}

#[test]
fn attention_fused_equals_plain() {
    attn_case!(f64, 1e-12);
    attn_case!(f32, 1e-5);
}

#[test]
fn attention_gradients_match_finite_differences() {
    let dev = Dev::seed_from_u64(10);
    let attn = Attention::<8, 2, 4, f64, Dev>::build(&dev);
    let x: Tensor<(usize, usize, Const<8>), f64, Dev> = dev.sample_normal_like(&(2, 5, Const));
    let r: Tensor<(usize, usize, Const<8>), f64, Dev> = dev.sample_normal_like(&(2, 5, Const));
    let dx: Tensor<(usize, usize, Const<8>), f64, Dev> = dev.sample_normal_like(&(2, 5, Const));
    let mask: Tensor<(usize, usize), f64, Dev> = dev.upper_tri_like(&(5, 5), f64::NEG_INFINITY, 1);
    let g = (attn.forward(x.leaky_trace(), Some(&mask), None) * r.clone())
        .sum::<(), _>()
        .backward();
    let loss = |e: f64| {
        let y = attn.forward(x.clone() + dx.clone() * e, Some(&mask), None);
        (y * r.clone()).sum::<(), _>().array()
    };
    fd_check("attention", loss, dot(&g.get(&x).as_vec(), &dx.as_vec()));
}

/// A small f32 text tower end to end: every parameter gradient, fused against plain.
#[test]
fn text_tower_fused_equals_plain_f32() {
    type T = TextTower<60, 77, 32, 4, 8, 64, 2, 16, f32, Dev>;
    fused_matches_plain(1e-4, || {
        let dev = Dev::seed_from_u64(11);
        let m = T::build(&dev);
        let rows: Vec<[u32; 77]> = (0..3)
            .map(|b| {
                let mut r = [0u32; 77];
                r[0] = 57;
                (1..6 + 3 * b).for_each(|j| r[j] = ((j * 5 + b) % 50 + 1) as u32);
                r[6 + 3 * b] = 58;
                r
            })
            .collect();
        let input = TextInput::new(&dev, &rows);
        let f = m.forward_features(&input, tape_with(&dev, m.alloc_grads()));
        let out = to64(f.retaped::<NoneTape>().as_vec());
        let g = f.square().sum::<(), _>().backward();
        let b0 = &m.transformer.resblocks.modules[0];
        vec![
            ("features", out),
            ("d ln_1", to64(g.get(&b0.ln_1.weight).as_vec())),
            ("d q_proj", to64(g.get(&b0.attn.q_proj.weight).as_vec())),
            ("d c_fc", to64(g.get(&b0.mlp.c_fc.weight).as_vec())),
            (
                "d token_embedding",
                to64(g.get(&m.token_embedding.weight).as_vec()),
            ),
        ]
    });
}

#[test]
fn switch_is_per_thread() {
    set_fused(false);
    assert!(!fast::fused_enabled());
    let other = std::thread::spawn(fast::fused_enabled).join().unwrap();
    assert_eq!(
        other,
        std::env::var("GADMS_FUSED").map_or(true, |v| v != "0")
    );
    set_fused(true);
    assert!(fast::fused_enabled());
}

/// `forward_features` (last block for the CLS token only) against the CLS token of the full
/// forward: the feature and every parameter gradient, fused and plain.
#[test]
fn cls_only_last_block_equals_full_forward() {
    type V = VisionTower<32, 16, 16, 768, 3, 16, 2, 8, 32, 2, 8, f64, Dev>;
    for fused in [true, false] {
        with_fused(fused, || {
            let dev = Dev::seed_from_u64(12);
            let m = V::build(&dev);
            let img: Tensor<(usize, Const<3>, Const<32>, Const<16>), f64, Dev> =
                dev.sample_normal_like(&(3, Const, Const, Const));
            let r: Tensor<(usize, Const<8>), f64, Dev> = dev.sample_normal_like(&(3, Const));
            let run = |cls_only: bool| {
                let x = img.clone().trace(m.alloc_grads());
                let f = match cls_only {
                    true => m.forward_features(x),
                    false => cls_token(m.forward(x, None)),
                };
                let out = f.retaped::<NoneTape>().as_vec();
                let g = (f * r.clone()).sum::<(), _>().backward();
                let last = &m.transformer.resblocks.modules[1];
                vec![
                    ("feature", out),
                    ("d conv1", g.get(&m.conv1.weight).as_vec()),
                    ("d last q_proj", g.get(&last.attn.q_proj.weight).as_vec()),
                    ("d last k_proj", g.get(&last.attn.k_proj.weight).as_vec()),
                    ("d last c_proj", g.get(&last.mlp.c_proj.weight).as_vec()),
                    ("d ln_post", g.get(&m.ln_post.weight).as_vec()),
                ]
            };
            for ((name, a), (_, b)) in run(true).iter().zip(&run(false)) {
                let e = rel(a, b);
                assert!(e < 1e-12, "{name} (fused {fused}): {e:.2e}");
            }
        });
    }
}

/// Gradients are bit-identical from run to run (training and resume depend on it), here for
/// LayerNorm, whose `dγ`, `dβ` sum per-thread partials: enough rows for many parallel chunks.
#[test]
fn layer_norm_gradients_repeat_bit_for_bit() {
    let dev = Dev::seed_from_u64(13);
    let ln = LayerNorm::<64, f32, Dev>::build(&dev);
    let x: Tensor<(usize, usize, Const<64>), f32, Dev> = dev.sample_normal_like(&(8, 300, Const));
    let r: Tensor<(usize, usize, Const<64>), f32, Dev> = dev.sample_normal_like(&(8, 300, Const));
    let run = || {
        let g = (ln.forward3(x.leaky_trace()) * r.clone())
            .sum::<(), _>()
            .backward();
        let bits = |v: Vec<f32>| v.into_iter().map(f32::to_bits).collect::<Vec<_>>();
        (
            bits(g.get(&ln.weight).as_vec()),
            bits(g.get(&ln.bias).as_vec()),
        )
    };
    let first = run();
    for _ in 0..10 {
        assert!(
            run() == first,
            "LayerNorm gradients changed between identical runs"
        );
    }
}
