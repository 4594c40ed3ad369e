//! Slice kernels of the fused element-wise ops: QuickGELU forward/backward, the row
//! softmax of attention and the exponential sums of the cross entropy, generic (`num_traits::Float`) and for `f32` with a vectorisable `exp`
//! (Cephes `expf` polynomial, within 2 ulp on the range used) compiled once for AVX2+FMA and
//! once for the baseline, chosen at run time. A leaf module (see [`super::micro`]).

use num_traits::Float;

/// QuickGELU's gate constant.
pub(crate) const GELU_K: f64 = 1.702;

/// `y = x·σ(1.702x)` (generic `exp`).
pub(crate) fn gelu_fwd_generic<R: Float>(x: &[R], y: &mut [R]) {
    let k = R::from(GELU_K).unwrap();
    for (o, &v) in y.iter_mut().zip(x) {
        *o = v / (R::one() + (-k * v).exp());
    }
}

/// `dx += dy·(s + 1.702·x·s·(1 − s))`, `s = σ(1.702x)` (generic `exp`).
pub(crate) fn gelu_bwd_generic<R: Float>(x: &[R], dy: &[R], dx: &mut [R]) {
    let k = R::from(GELU_K).unwrap();
    for ((g, &v), &d) in dx.iter_mut().zip(x).zip(dy) {
        let s = R::one() / (R::one() + (-k * v).exp());
        *g = *g + d * (s + k * v * s * (R::one() - s));
    }
}

/// One attention row in place: `p = softmax(s·scale + mask)`; `−∞` entries give exactly 0.
pub(crate) fn softmax_row_generic<R: Float>(s: &mut [R], scale: R, mask: Option<&[R]>) {
    if let Some(m) = mask {
        s.iter_mut().zip(m).for_each(|(v, &m)| *v = *v * scale + m);
    } else {
        s.iter_mut().for_each(|v| *v = *v * scale);
    }
    let max = s.iter().copied().fold(R::neg_infinity(), R::max);
    let mut sum = R::zero();
    for v in s.iter_mut() {
        *v = (*v - max).exp();
        sum = sum + *v;
    }
    let inv = sum.recip();
    s.iter_mut().for_each(|v| *v = *v * inv);
}

/// `Σ exp(z − m)` of a row of logits, accumulated in f64 (generic `exp`).
pub(crate) fn exp_sum_generic<R: Float>(z: &[R], m: R) -> f64 {
    z.iter().map(|&v| (v - m).exp().to_f64().unwrap()).sum()
}

/// `g += coef·exp(z − m)` over a row (generic `exp`).
pub(crate) fn add_exp_generic<R: Float>(g: &mut [R], z: &[R], m: R, coef: R) {
    g.iter_mut()
        .zip(z)
        .for_each(|(g, &v)| *g = *g + coef * (v - m).exp());
}

/// `exp(x)` for `f32` without a libm call, so loops over it vectorise (Cephes `expf`).
/// Below −87.3 it returns 0 (`exp(−∞) = 0` for masked scores).
#[inline(always)]
#[allow(clippy::excessive_precision)] // Cephes' coefficients as published
fn exp_f32(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    let xc = x.clamp(-87.3, 88.7);
    let n = (xc * LOG2E + 0.5).floor();
    let r = xc - n * 0.693_359_4 + n * 2.121_944_4e-4;
    let z = r * r;
    let p = ((((1.987_569_1e-4 * r + 1.398_199_9e-3) * r + 8.333_352e-3) * r + 4.166_579_6e-2) * r
        + 1.666_666_5e-1)
        * r
        + 5.000_000_1e-1;
    let e = p * z + r + 1.0;
    // 2^n from the bits of `(n + 127) + 2^23`, whose low mantissa bits are the integer
    // n + 127 ∈ [1, 255]: float adds and integer shifts vectorise, while `n as i32` (a
    // saturating, NaN-checking cast) compiled to eight scalar conversions per vector.
    let biased = (n + 127.0 + 8_388_608.0)
        .to_bits()
        .wrapping_sub(0x4B00_0000);
    let scale = f32::from_bits(biased << 23);
    if x < -87.3 { 0.0 } else { e * scale }
}

#[inline(always)]
fn gelu_fwd_body(x: &[f32], y: &mut [f32]) {
    for (o, &v) in y.iter_mut().zip(x) {
        *o = v / (1.0 + exp_f32(-1.702 * v));
    }
}

#[inline(always)]
fn gelu_bwd_body(x: &[f32], dy: &[f32], dx: &mut [f32]) {
    for ((g, &v), &d) in dx.iter_mut().zip(x).zip(dy) {
        let s = 1.0 / (1.0 + exp_f32(-1.702 * v));
        *g += d * (s + 1.702 * v * s * (1.0 - s));
    }
}

/// Eight f64 partial sums in a fixed order (lane `j` takes elements `j, j + 8, …` in index
/// order, so the result is the same on every run), added up at the end. The exponentials of a
/// block go through an `f32` buffer first: a loop that both exponentiates and widens into the
/// f64 lanes stayed scalar (measured 7 ns an element, against under 1 vectorised).
#[inline(always)]
fn exp_sum_body(z: &[f32], m: f32) -> f64 {
    const BLOCK: usize = 64;
    let mut acc = [0f64; 8];
    let mut e = [0f32; BLOCK];
    let blocks = z.chunks_exact(BLOCK);
    let rest = blocks.remainder();
    for b in blocks {
        for (o, &v) in e.iter_mut().zip(b) {
            *o = exp_f32(v - m);
        }
        for c in e.chunks_exact(8) {
            for (a, &x) in acc.iter_mut().zip(c) {
                *a += x as f64;
            }
        }
    }
    for (i, &v) in rest.iter().enumerate() {
        acc[i % 8] += exp_f32(v - m) as f64;
    }
    acc.iter().sum()
}

#[inline(always)]
fn add_exp_body(g: &mut [f32], z: &[f32], m: f32, coef: f32) {
    for (g, &v) in g.iter_mut().zip(z) {
        *g += coef * exp_f32(v - m);
    }
}

#[inline(always)]
fn softmax_body(s: &mut [f32], scale: f32, mask: Option<&[f32]>) {
    if let Some(m) = mask {
        s.iter_mut().zip(m).for_each(|(v, &m)| *v = *v * scale + m);
    } else {
        s.iter_mut().for_each(|v| *v *= scale);
    }
    let max = s.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    // Exponentiate first, then sum in index order: one loop doing both stays scalar.
    s.iter_mut().for_each(|v| *v = exp_f32(*v - max));
    let sum: f32 = s.iter().fold(0.0, |a, &v| a + v);
    let inv = 1.0 / sum;
    s.iter_mut().for_each(|v| *v *= inv);
}

/// Runs `$body(args)` through an AVX2+FMA-compiled copy when the CPU has it.
macro_rules! multiversion {
    ($name:ident, $avx:ident, $body:ident, ($($a:ident: $t:ty),*)) => {
        multiversion!($name, $avx, $body, ($($a: $t),*) -> ());
    };
    ($name:ident, $avx:ident, $body:ident, ($($a:ident: $t:ty),*) -> $r:ty) => {
        #[cfg(target_arch = "x86_64")]
        #[target_feature(enable = "avx2,fma")]
        unsafe fn $avx($($a: $t),*) -> $r {
            $body($($a),*)
        }
        pub(crate) fn $name($($a: $t),*) -> $r {
            #[cfg(target_arch = "x86_64")]
            if super::micro::has_avx2_fma() {
                // SAFETY: the CPU has AVX2 and FMA (checked at run time).
                return unsafe { $avx($($a),*) };
            }
            $body($($a),*)
        }
    };
}

multiversion!(gelu_fwd_f32, gelu_fwd_avx2, gelu_fwd_body, (x: &[f32], y: &mut [f32]));
multiversion!(gelu_bwd_f32, gelu_bwd_avx2, gelu_bwd_body, (x: &[f32], dy: &[f32], dx: &mut [f32]));
multiversion!(softmax_row_f32, softmax_avx2, softmax_body, (s: &mut [f32], scale: f32, mask: Option<&[f32]>));
multiversion!(exp_sum_f32, exp_sum_avx2, exp_sum_body, (z: &[f32], m: f32) -> f64);
multiversion!(add_exp_f32, add_exp_avx2, add_exp_body, (g: &mut [f32], z: &[f32], m: f32, coef: f32));
