//! Operation counts of the benchmarked workloads and this CPU's peak, for `gadms bench model`'s
//! GFLOP/s column. Counts are `2 × multiply-adds` of the matrix products (projections, MLP,
//! `q·kᵀ`, `P·v`, patch embedding, output projection); elementwise work is left out.
//! Backward = 2 × forward. The gallery embedding is counted as a full forward (the work a
//! PyTorch `encode_image` does), so its rate is "model GFLOP/s", not the multiply-adds run.

use crate::preset::Preset;

/// GFLOP per call of each workload.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Flops {
    pub vision_fwd_bwd: f64,
    pub text_fwd_bwd: f64,
    pub vision_fwd: f64,
    pub vision_embed: f64,
}

/// Multiply-adds of `layers` pre-LN blocks over `s` tokens of width `w`, MLP width `f`.
fn blocks(layers: usize, s: usize, w: usize, f: usize) -> f64 {
    let (s, w, f) = (s as f64, w as f64, f as f64);
    layers as f64 * (4.0 * s * w * w + 2.0 * s * w * f + 2.0 * s * s * w)
}

/// Forward multiply-adds of one image and of one 77-token caption.
fn per_sample(p: Preset) -> (f64, f64) {
    let spec = p.spec();
    let (v, t) = (spec.vision, spec.text);
    let patches = (v.image_h / v.patch) * (v.image_w / v.patch);
    let s = patches + 1;
    let pd = (3 * v.patch * v.patch) as f64;
    let embed = spec.embed() as f64;
    let vision = patches as f64 * pd * v.width as f64
        + blocks(v.layers, s, v.width, v.mlp)
        + s as f64 * v.width as f64 * embed;
    let text = blocks(t.layers, t.ctx, t.width, t.mlp) + (t.ctx * t.width) as f64 * embed;
    (vision, text)
}

/// The counts for batch `b` and gallery batch `eb`.
pub fn model_flops(p: Preset, b: usize, eb: usize) -> Flops {
    let (v, t) = per_sample(p);
    let g = |macs: f64, n: usize| 2.0 * macs * n as f64 / 1e9;
    Flops {
        vision_fwd_bwd: 3.0 * g(v, b),
        text_fwd_bwd: 3.0 * g(t, b),
        vision_fwd: g(v, b),
        vision_embed: g(v, eb),
    }
}

/// This CPU's f32 peak on `threads` cores, GFLOP/s: 2 FMA pipes × 8 lanes × 2 with AVX2+FMA
/// (Zen 2/3, Haswell and later without AVX-512), else 2 × 4 × 2, at the clock /proc/cpuinfo
/// reports. `None` where that is not readable.
pub fn peak_gflops(threads: usize) -> Option<f64> {
    let info = std::fs::read_to_string("/proc/cpuinfo").ok()?;
    let mhz: f64 = info
        .lines()
        .find(|l| l.starts_with("cpu MHz"))?
        .split(':')
        .nth(1)?
        .trim()
        .parse()
        .ok()?;
    let per_cycle = if gadms_nn::fast::gemm::has_avx2_fma() {
        32.0
    } else {
        16.0
    };
    Some(threads as f64 * per_cycle * mhz / 1e3)
}

/// Prints the peak line under the table.
pub fn print_peak(threads: usize) {
    match peak_gflops(threads) {
        Some(p) => println!(
            "CPU f32 peak on {threads} threads: {p:.0} GFLOP/s (FMA pipes x lanes x 2 x clock \
             from /proc/cpuinfo)"
        ),
        None => println!("CPU peak: /proc/cpuinfo has no clock on this machine"),
    }
}
