//! The fused CUDA kernels (`nn/kernels/fused.cu`: QuickGELU, LayerNorm, linear layers, the
//! masked-token cross entropy, the SDM loss, the attention core) against the CPU's fused kernels, and the
//! CUDA composition (the switch off) against the CPU, outputs and every input gradient; and
//! the reduced-precision matrix products (`--precision tf32|bf16`) against the CPU product
//! of inputs rounded the way the tensor cores round them; and the bf16 copies that the
//! backward keeps under `--precision bf16`.

use super::{Report, TOL, cuda, rel_err};
use dfdx::nn::ToDevice;
use dfdx::nn::modules::Linear;
use dfdx::prelude::*;
use dfdx::tensor::MatmulPrecision;
use gadms_nn::LayerNorm;
use gadms_nn::fast::with_fused;

/// The storage of a CUDA tensor, read in place.
fn data(t: &Tensor<(usize,), f32, Cuda>) -> &gadms_nn::fast::CudaVec {
    dfdx::tensor::Tensorlike::data(t).expect("a tensor has data")
}

/// Deterministic values in about [−2, 2].
fn values(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 4.0 - 2.0
        })
        .collect()
}

/// `(y, [gradients])` of `Σ y·w` for `op` applied on device `dev` to `xs` (each input traced).
type Run = (Vec<f32>, Vec<Vec<f32>>);

const ROWS: usize = 37;
const WIDTH: usize = 768;

fn gelu<D: Device<f32>>(dev: &D, fused: bool) -> Run {
    gelu_of(dev, fused, values(ROWS * WIDTH, 1))
}

/// QuickGELU of `x` [ROWS, WIDTH]: output and the input gradient of `Σ y·w`.
fn gelu_of<D: Device<f32>>(dev: &D, fused: bool, x: Vec<f32>) -> Run {
    with_fused(fused, || {
        let x = dev.tensor_from_vec(x, (ROWS, Const::<WIDTH>));
        let w = dev.tensor_from_vec(values(ROWS * WIDTH, 2), (ROWS, Const::<WIDTH>));
        let y = gadms_nn::quick_gelu(x.leaky_trace());
        let out = y.retaped::<NoneTape>().as_vec();
        let g = (y * w).sum().backward();
        (out, vec![g.get(&x).as_vec()])
    })
}

fn layer_norm<D: Device<f32>>(dev: &D, ln: &LayerNorm<WIDTH, f32, D>, fused: bool) -> Run {
    with_fused(fused, || {
        let shape = (3usize, 13usize, Const::<WIDTH>);
        let x = dev.tensor_from_vec(values(3 * 13 * WIDTH, 3), shape);
        let x = x * 3.0 + 0.5;
        let w = dev.tensor_from_vec(values(3 * 13 * WIDTH, 4), shape);
        let y = ln.forward3(x.trace(ln.alloc_grads()));
        let out = y.retaped::<NoneTape>().as_vec();
        let g = (y * w).sum().backward();
        let (gx, gw, gb) = (g.get(&x), g.get(&ln.weight), g.get(&ln.bias));
        (out, vec![gx.as_vec(), gw.as_vec(), gb.as_vec()])
    })
}

/// A linear layer 768 → 512 on `[3, 13, 768]`: output and the gradients of x, W, b.
fn linear<D: Device<f32>>(dev: &D, lin: &Linear<WIDTH, 512, f32, D>, fused: bool) -> Run {
    with_fused(fused, || {
        let shape = (3usize, 13usize, Const::<WIDTH>);
        let x = dev.tensor_from_vec(values(3 * 13 * WIDTH, 13), shape);
        let w = dev.tensor_from_vec(values(3 * 13 * 512, 14), (3usize, 13usize, Const::<512>));
        let y = gadms_nn::fast::linear(lin, x.trace(lin.alloc_grads()));
        let out = y.retaped::<NoneTape>().as_vec();
        let g = (y * w).sum().backward();
        let (gx, gw, gb) = (g.get(&x), g.get(&lin.weight), g.get(&lin.bias));
        (out, vec![gx.as_vec(), gw.as_vec(), gb.as_vec()])
    })
}

/// `residual + lin(x)` (a block's output projection), 768 → 768 on `[3, 13, 768]`: output and
/// the gradients of x, the residual, W and b.
fn linear_residual<D: Device<f32>>(
    dev: &D,
    lin: &Linear<WIDTH, WIDTH, f32, D>,
    fused: bool,
) -> Run {
    with_fused(fused, || {
        let shape = (3usize, 13usize, Const::<WIDTH>);
        let x = dev.tensor_from_vec(values(3 * 13 * WIDTH, 18), shape);
        let res = dev.tensor_from_vec(values(3 * 13 * WIDTH, 19), shape);
        let w = dev.tensor_from_vec(values(3 * 13 * WIDTH, 20), shape);
        let y = gadms_nn::fast::linear_residual(lin, x.trace(lin.alloc_grads()), res.leaky_trace());
        let out = y.retaped::<NoneTape>().as_vec();
        let g = (y * w).sum().backward();
        let (gx, gr) = (g.get(&x).as_vec(), g.get(&res).as_vec());
        (
            out,
            vec![
                gx,
                gr,
                g.get(&lin.weight).as_vec(),
                g.get(&lin.bias).as_vec(),
            ],
        )
    })
}

/// The SDM loss at batch 32, 512-wide features, identities in pairs: loss and both input
/// gradients.
fn sdm<D: Device<f32>>(dev: &D, fused: bool) -> Run {
    with_fused(fused, || {
        let (b, k) = (32usize, 512usize);
        let img = dev.tensor_from_vec(values(b * k, 23), (b, k));
        let txt = dev.tensor_from_vec(values(b * k, 24), (b, k));
        let pids: Vec<usize> = (0..b).map(|i| i / 2).collect();
        let scale = gadms_nn::loss::SDM_LOGIT_SCALE;
        let loss = gadms_nn::sdm_loss(
            img.leaky_trace(),
            txt.leaky_trace(),
            &pids,
            scale,
            gadms_nn::loss::SDM_EPS,
        );
        let out = loss.retaped::<NoneTape>().as_vec();
        let g = loss.backward();
        (out, vec![g.get(&img).as_vec(), g.get(&txt).as_vec()])
    })
}

/// The masked-token cross entropy over the 49,408-way vocabulary: 37 rows, every third row
/// unlabelled (weight 0), the rest weighted 1/25 as `masked_rows_ce` does.
fn cross_entropy<D: Device<f32>>(dev: &D, fused: bool) -> Run {
    const V: usize = 49_408;
    with_fused(fused, || {
        let n = ROWS;
        let z = dev.tensor_from_vec(values(n * V, 17), (n, Const::<V>)) * 3.0;
        let labels: Vec<u32> = (0..n)
            .map(|i| if i % 3 == 0 { 0 } else { (i * 7919 % V) as u32 })
            .collect();
        let loss = gadms_nn::loss::masked_rows_ce(z.leaky_trace(), &labels);
        let out = loss.retaped::<NoneTape>().as_vec();
        let g = loss.backward();
        (out, vec![g.get(&z).as_vec()])
    })
}

/// The attention core on `[2, S, W]` with `H` heads, causal mask when `causal`.
fn attention<const S: usize, const W: usize, D: Device<f32>>(
    dev: &D,
    heads: usize,
    causal: bool,
    fused: bool,
) -> Run {
    with_fused(fused, || {
        let shape = (2usize, Const::<S>, Const::<W>);
        let n = 2 * S * W;
        let q = dev.tensor_from_vec(values(n, 5), shape);
        let k = dev.tensor_from_vec(values(n, 6), shape);
        let v = dev.tensor_from_vec(values(n, 7), shape);
        let w = dev.tensor_from_vec(values(n, 8), shape);
        let mask: Option<Tensor<(Const<S>, Const<S>), f32, D>> = causal.then(|| {
            let m: Vec<f32> = (0..S * S)
                .map(|t| {
                    if t % S > t / S {
                        f32::NEG_INFINITY
                    } else {
                        0.0
                    }
                })
                .collect();
            dev.tensor_from_vec(m, (Const::<S>, Const::<S>))
        });
        let tape = (q.leaky_trace(), k.leaky_trace(), v.leaky_trace());
        let y = match gadms_nn::fast::attention(tape, mask.as_ref(), heads) {
            Ok(y) => y,
            Err((q, k, v)) => composed(q, k, v, mask.as_ref(), heads),
        };
        let out = y.retaped::<NoneTape>().as_vec();
        let g = (y * w).sum().backward();
        (
            out,
            vec![g.get(&q).as_vec(), g.get(&k).as_vec(), g.get(&v).as_vec()],
        )
    })
}

/// The plain dfdx composition of the attention core (what `Attention` runs when the fused
/// path does not apply), written out for `heads` heads.
fn composed<const S: usize, const W: usize, D: Device<f32>, T: Tape<f32, D> + Merge<T>>(
    q: Tensor<(usize, Const<S>, Const<W>), f32, D, T>,
    k: Tensor<(usize, Const<S>, Const<W>), f32, D, T>,
    v: Tensor<(usize, Const<S>, Const<W>), f32, D, T>,
    mask: Option<&Tensor<(Const<S>, Const<S>), f32, D>>,
    heads: usize,
) -> Tensor<(usize, Const<S>, Const<W>), f32, D, T> {
    let b = q.shape().0;
    let hd = W / heads;
    let split = |t: Tensor<(usize, Const<S>, Const<W>), f32, D, T>| {
        t.reshape_like(&(b, Const::<S>, heads, hd))
            .permute::<_, Axes4<0, 2, 1, 3>>()
    };
    let (q, k, v) = (split(q), split(k), split(v));
    let scores = q.matmul(k.permute::<_, Axes4<0, 1, 3, 2>>()) * (1.0 / (hd as f64).sqrt()) as f32;
    let scores = match mask {
        Some(m) => {
            let sh = *scores.shape();
            scores + m.clone().broadcast_like(&sh)
        }
        None => scores,
    };
    scores
        .softmax::<Axis<3>>()
        .matmul(v)
        .permute::<_, Axes4<0, 2, 1, 3>>()
        .reshape_like(&(b, Const::<S>, Const::<W>))
}

fn compare(r: &mut Report, what: &str, gpu: &Run, cpu: &Run, names: &[&str]) {
    r.cmp(&format!("{what}: output"), &gpu.0, &cpu.0);
    for ((a, b), n) in gpu.1.iter().zip(&cpu.1).zip(names) {
        r.cmp(&format!("{what}: d{n}"), a, b);
    }
}

#[test]
fn fused_kernels_match_the_cpu() {
    let (cpu, gpu) = (Cpu::seed_from_u64(1), cuda());
    let mut r = Report::default();
    for fused in [true, false] {
        let how = if fused {
            "fused CUDA"
        } else {
            "CUDA composition"
        };
        let reference = gelu(&cpu, true);
        compare(
            &mut r,
            &format!("QuickGELU {how}"),
            &gelu(&gpu, fused),
            &reference,
            &["x"],
        );

        let mut ln = LayerNorm::<WIDTH, f32, Cpu>::build(&cpu);
        ln.weight = cpu.tensor_from_vec(values(WIDTH, 9), (Const::<WIDTH>,)) + 1.0;
        ln.bias = cpu.tensor_from_vec(values(WIDTH, 10), (Const::<WIDTH>,));
        let ln_gpu = ln.to_device(&gpu);
        let (a, b) = (
            layer_norm(&gpu, &ln_gpu, fused),
            layer_norm(&cpu, &ln, true),
        );
        compare(
            &mut r,
            &format!("LayerNorm {how}"),
            &a,
            &b,
            &["x", "γ", "β"],
        );

        let mut lin = Linear::<WIDTH, 512, f32, Cpu>::build(&cpu);
        lin.weight =
            cpu.tensor_from_vec(values(512 * WIDTH, 15), (Const::<512>, Const::<WIDTH>)) * 0.05;
        lin.bias = cpu.tensor_from_vec(values(512, 16), (Const::<512>,));
        let lin_gpu = lin.to_device(&gpu);
        let (a, b) = (linear(&gpu, &lin_gpu, fused), linear(&cpu, &lin, true));
        compare(
            &mut r,
            &format!("linear 768→512 {how}"),
            &a,
            &b,
            &["x", "W", "b"],
        );

        let mut proj = Linear::<WIDTH, WIDTH, f32, Cpu>::build(&cpu);
        proj.weight =
            cpu.tensor_from_vec(values(WIDTH * WIDTH, 21), (Const::<WIDTH>, Const::<WIDTH>)) * 0.05;
        proj.bias = cpu.tensor_from_vec(values(WIDTH, 22), (Const::<WIDTH>,));
        let proj_gpu = proj.to_device(&gpu);
        let (a, b) = (
            linear_residual(&gpu, &proj_gpu, fused),
            linear_residual(&cpu, &proj, true),
        );
        compare(
            &mut r,
            &format!("residual + linear 768→768 {how}"),
            &a,
            &b,
            &["x", "residual", "W", "b"],
        );

        let (a, b) = (sdm(&gpu, fused), sdm(&cpu, true));
        compare(
            &mut r,
            &format!("SDM, batch 32 × 512, {how}"),
            &a,
            &b,
            &["image", "text"],
        );

        let (a, b) = (cross_entropy(&gpu, fused), cross_entropy(&cpu, true));
        compare(
            &mut r,
            &format!("masked-token cross entropy, V = 49408, {how}"),
            &a,
            &b,
            &["z"],
        );

        let a = attention::<77, 512, _>(&gpu, 8, true, fused);
        let b = attention::<77, 512, _>(&cpu, 8, true, true);
        compare(
            &mut r,
            &format!("attention text 77×512/8 causal, {how}"),
            &a,
            &b,
            &["q", "k", "v"],
        );
        let a = attention::<193, 768, _>(&gpu, 12, false, fused);
        let b = attention::<193, 768, _>(&cpu, 12, false, true);
        compare(
            &mut r,
            &format!("attention vision 193×768/12, {how}"),
            &a,
            &b,
            &["q", "k", "v"],
        );
    }
    r.finish("fused kernels");
}

/// `x` rounded to nearest-even with `keep` mantissa bits (bf16: 7, TF32: 10).
fn round_mantissa(x: f32, keep: u32) -> f32 {
    if keep >= 23 {
        return x;
    }
    let drop = 23 - keep;
    let b = x.to_bits();
    let lsb = (b >> drop) & 1;
    let half = (1u32 << (drop - 1)) - 1;
    f32::from_bits(b.wrapping_add(half + lsb) & !((1u32 << drop) - 1))
}

#[test]
fn reduced_precision_products_round_their_inputs() {
    const M: usize = 64;
    const K: usize = 768;
    const N: usize = 96;
    let (cpu, gpu) = (Cpu::seed_from_u64(1), cuda());
    let (a, b) = (values(M * K, 11), values(K * N, 12));
    let product = |a: &[f32], b: &[f32]| {
        let a = cpu.tensor_from_vec(a.to_vec(), (Const::<M>, Const::<K>));
        let b = cpu.tensor_from_vec(b.to_vec(), (Const::<K>, Const::<N>));
        a.matmul(b).as_vec()
    };
    let exact = product(&a, &b);
    let mut r = Report::default();
    for (p, keep, name) in [
        (MatmulPrecision::F32, 23, "f32"),
        (MatmulPrecision::Tf32, 10, "tf32"),
        (MatmulPrecision::Bf16, 7, "bf16"),
    ] {
        gpu.set_matmul_precision(p);
        let ag = gpu.tensor_from_vec(a.clone(), (Const::<M>, Const::<K>));
        let bg = gpu.tensor_from_vec(b.clone(), (Const::<K>, Const::<N>));
        let got = ag.matmul(bg.clone()).as_vec();
        // Batched with a broadcast right side: the folded [B·M, K] GEMM of linear layers.
        let ab = gpu.tensor_from_vec(a.clone(), (2usize, Const::<{ M / 2 }>, Const::<K>));
        let got_br = ab.matmul(bg).as_vec();
        let round = |v: &[f32]| {
            v.iter()
                .map(|&x| round_mantissa(x, keep))
                .collect::<Vec<_>>()
        };
        let rounded = product(&round(&a), &round(&b));
        r.cmp(
            &format!("{name} product vs CPU on rounded inputs"),
            &got,
            &rounded,
        );
        r.cmp(
            &format!("{name} batched product vs CPU on rounded inputs"),
            &got_br,
            &rounded,
        );
        if keep < 23 {
            // The reduced precision must show: farther from the exact product than TOL.
            let off = rel_err(&got, &exact);
            println!("[precision] {name}: {off:.3e} from the exact f32 product");
            assert!(
                off > TOL,
                "{name}: {off:.3e} from exact: the precision did not apply"
            );
        }
    }
    gpu.set_matmul_precision(MatmulPrecision::F32);
    r.finish("precision");
}

/// A linear layer 768 → 512 on `x` [3, 13, 768] with the output gradient `dy` given (the
/// weights of `Σ y·dy`): output and the gradients of x, W, b.
fn linear_of<D: Device<f32>>(
    dev: &D,
    lin: &Linear<WIDTH, 512, f32, D>,
    x: Vec<f32>,
    dy: Vec<f32>,
) -> Run {
    let shape = (3usize, 13usize, Const::<WIDTH>);
    let x = dev.tensor_from_vec(x, shape);
    let dy = dev.tensor_from_vec(dy, (3usize, 13usize, Const::<512>));
    let y = gadms_nn::fast::linear(lin, x.trace(lin.alloc_grads()));
    let out = y.retaped::<NoneTape>().as_vec();
    let g = (y * dy).sum().backward();
    let (gx, gw, gb) = (g.get(&x), g.get(&lin.weight), g.get(&lin.bias));
    (out, vec![gx.as_vec(), gw.as_vec(), gb.as_vec()])
}

/// Under `--precision bf16` a traced linear layer and QuickGELU keep bf16 copies of their
/// inputs for the backward (`nn/src/fast/cuda/bf16.rs`), as PyTorch's autocast does.
/// - The linear layer equals the CPU's on `x` and `W` rounded to bf16, every gradient
///   included: `dW = bf16(dy)ᵀ·bf16(x)` (`dy` is bf16-exact here, so `db` needs no rounding).
///   Its `dW` must differ from the exact `f32` one by more than the tolerance.
/// - QuickGELU's output equals the CPU's on the `f32` input, its input gradient the CPU's
///   derivative at `bf16(x)`; that gradient must differ from the one at `x` by more than the
///   tolerance, which shows that the bf16 copy is what the backward read.
#[test]
fn bf16_copies_for_the_backward_match_the_host() {
    let (cpu, gpu) = (Cpu::seed_from_u64(1), cuda());
    gpu.set_matmul_precision(MatmulPrecision::Bf16);
    let bf16 = |v: &[f32]| v.iter().map(|&x| round_mantissa(x, 7)).collect::<Vec<_>>();
    let mut r = Report::default();

    let (wv, bv) = (values(512 * WIDTH, 15), values(512, 16));
    let wv: Vec<f32> = wv.iter().map(|w| w * 0.05).collect();
    let layer = |w: Vec<f32>| {
        let mut lin = Linear::<WIDTH, 512, f32, Cpu>::build(&cpu);
        lin.weight = cpu.tensor_from_vec(w, (Const::<512>, Const::<WIDTH>));
        lin.bias = cpu.tensor_from_vec(bv.clone(), (Const::<512>,));
        lin
    };
    let (exact, rounded) = (layer(wv.clone()), layer(bf16(&wv)));
    let (x, dy) = (values(3 * 13 * WIDTH, 13), bf16(&values(3 * 13 * 512, 14)));
    let got = with_fused(true, || {
        linear_of(&gpu, &exact.to_device(&gpu), x.clone(), dy.clone())
    });
    let want = linear_of(&cpu, &rounded, bf16(&x), dy.clone());
    let far = linear_of(&cpu, &exact, x.clone(), dy);
    compare(
        &mut r,
        "linear 768→512, bf16 copies",
        &got,
        &want,
        &["x", "W", "b"],
    );
    let off = rel_err(&got.1[1], &far.1[1]);
    println!("[bf16 copies] linear dW: {off:.3e} from the exact f32 dW");
    assert!(
        off > TOL,
        "linear dW {off:.3e} from exact: no bf16 rounding"
    );

    let x = values(ROWS * WIDTH, 1);
    let got = gelu_of(&gpu, true, x.clone());
    let (at_x, at_bf16) = (
        gelu_of(&cpu, true, x.clone()),
        gelu_of(&cpu, true, bf16(&x)),
    );
    r.cmp("QuickGELU, bf16 copy: output", &got.0, &at_x.0);
    r.cmp(
        "QuickGELU, bf16 copy: dx at bf16(x)",
        &got.1[0],
        &at_bf16.1[0],
    );
    let off = rel_err(&got.1[0], &at_x.1[0]);
    println!("[bf16 copies] QuickGELU dx: {off:.3e} from the derivative at x");
    assert!(
        off > TOL,
        "QuickGELU dx {off:.3e} from exact: the f32 input was read"
    );

    gpu.set_matmul_precision(MatmulPrecision::F32);
    r.finish("bf16 copies");
}

/// The single-launch Adam over several tensors (`AdamBatch`, kernel `adam_multi`) against the
/// host's update of `src/train/optim.rs` written out here (the same operations in the same
/// order; the GPU may fuse a multiply and an add, so within 1e-6 of max |p|, not bit for bit),
/// across tensor sizes that end mid-chunk, each with its own coefficients; and the one-launch
/// gradient norm (`sum_squares`) against the host's f64 sum of squares, to 1e-12.
#[test]
fn adam_in_one_launch_matches_the_host_update() {
    use gadms_nn::fast::{AdamBatch, AdamCoeffs, sum_squares};
    let dev = cuda();
    let sizes = [1usize, 4095, 4096, 4097, 70_001];
    let coeffs = |i: usize| AdamCoeffs {
        b1: 0.9,
        b2: 0.999,
        eps: 1e-3,
        bc1: 0.1 + 0.1 * i as f32,
        bc2_sqrt: 0.05 + 0.01 * i as f32,
        lr: 1e-3 * (i + 1) as f32,
        l2: if i.is_multiple_of(2) { 0.01 } else { 0.0 },
        decoupled: if i.is_multiple_of(2) { 0.0 } else { 0.05 },
        scale: 0.75,
    };
    // The host update of one element (src/train/optim.rs, `adam_chunk`).
    let host = |k: &AdamCoeffs, p: &mut f32, g: f32, m: &mut f32, v: &mut f32| {
        let gi = g * k.scale + k.l2 * *p;
        let mut pi = *p;
        if k.decoupled != 0.0 {
            pi *= 1.0 - k.lr * k.decoupled;
        }
        *m = k.b1 * *m + (1.0 - k.b1) * gi;
        *v = k.b2 * *v + (1.0 - k.b2) * gi * gi;
        *p = pi - k.lr / k.bc1 * *m / ((*v).sqrt() / k.bc2_sqrt + k.eps);
    };
    let mut batch = AdamBatch::default();
    let (mut on_gpu, mut expected, mut grads) = (Vec::new(), Vec::new(), Vec::new());
    for (i, &n) in sizes.iter().enumerate() {
        let s = 10 * i as u64;
        let (mut p, g, mut m) = (values(n, s), values(n, s + 1), values(n, s + 2));
        let mut v: Vec<f32> = values(n, s + 3).iter().map(|x| x * x).collect();
        let up = |x: &[f32]| dev.tensor_from_vec(x.to_vec(), (n,));
        let (mut pg, mut mg, mut vg, gg) = (up(&p), up(&m), up(&v), up(&g));
        batch
            .push(&mut pg, data(&gg), &mut mg, &mut vg, coeffs(i))
            .expect("dense");
        for j in 0..n {
            host(&coeffs(i), &mut p[j], g[j], &mut m[j], &mut v[j]);
        }
        on_gpu.push([pg, mg, vg]);
        expected.push([p, m, v]);
        grads.push(gg);
    }
    batch.launch();
    let mut worst = 0.0f64;
    for (got, want) in on_gpu.iter().zip(&expected) {
        for (a, b) in got.iter().zip(want) {
            worst = worst.max(rel_err(&a.as_vec(), b));
        }
    }
    assert!(
        worst <= 1e-6,
        "adam_multi against the host update: {worst:e}"
    );
    let refs: Vec<_> = grads.iter().map(data).collect();
    let sums = sum_squares(&dev, &refs);
    for (g, s) in grads.iter().zip(sums) {
        let host: f64 = g.as_vec().iter().map(|&x| (x as f64) * (x as f64)).sum();
        assert!(
            (s - host).abs() <= 1e-12 * host.max(1.0),
            "Σg² {s} vs host {host}"
        );
    }
    println!("[fused kernels] ok {worst:.3e}  adam_multi vs the host update; sum_squares = host");
}
