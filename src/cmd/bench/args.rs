//! The arguments of `gadms bench` (shared by every benchmark).

use crate::preset::Preset;
use argh::FromArgs;
use std::path::PathBuf;

/// Time the vision and text towers (forward+backward of sum(tokens·r), and vision forward
/// only) on random weights and inputs; with `--torch PYTHON` also run the PyTorch baseline with
/// the same sizes and thread count and print the ratio. Threads: RAYON_NUM_THREADS.
/// `gadms bench train` times the full GA-DMS training step (GASS, SDM, MTP, Adam) on
/// synthetic batches, on `--device cpu|cuda`, with `--torch` next to
/// benches/torch_gadms_step.py (eager f32, AMP bf16, TF32 on a GPU).
/// `gadms bench gemm` times the fused kernels' matrix product against dfdx's on ViT-B/16's
/// shapes (GFLOP/s, % of this CPU's peak).
/// `gadms bench loader` instead times the data loader (decode + §6.3 augmentation, images/s
/// total and per worker), with `--torch` next to benches/loader_torch.py over the same images.
#[derive(FromArgs)]
#[argh(subcommand, name = "bench")]
pub struct BenchArgs {
    /// what to benchmark: model, train, gemm, loader or open
    #[argh(positional)]
    pub what: String,
    /// model preset (default vit-b-16)
    #[argh(option, default = "Preset::VitB16")]
    pub preset: Preset,
    /// batch size (default 4)
    #[argh(option, default = "4")]
    pub batch: usize,
    /// timed iterations after one warm-up (default 3)
    #[argh(option, default = "3")]
    pub iters: usize,
    /// python interpreter with torch: also run the PyTorch baseline (model:
    /// benches/torch_baseline.py, vit-b-16 only; loader: benches/loader_torch.py)
    #[argh(option)]
    pub torch: Option<PathBuf>,
    /// write the results as JSON here
    #[argh(option)]
    pub json: Option<PathBuf>,
    /// open: samples in the simulated manifest (default 10000000)
    #[argh(option, default = "10_000_000")]
    pub samples: u64,
    /// loader: packed dataset directory (default: a generated set of 512 384x128 JPEGs)
    #[argh(option)]
    pub data: Option<PathBuf>,
    /// loader: decoding/augmentation worker threads, and PyTorch workers (default 2)
    #[argh(option, default = "2")]
    pub workers: usize,
    /// loader: images decoded+augmented in the timed run (default 2048)
    #[argh(option, default = "2048")]
    pub images: usize,
    /// model/train: device, cpu or cuda[:N] (default cpu; cuda needs a `cuda` build)
    #[argh(option, default = "Default::default()")]
    pub device: crate::device::DeviceChoice,
    /// model/train: precision of the matrix products, f32, tf32 or bf16 (default bf16 on CUDA,
    /// f32 on the CPU; docs/gpu.md)
    #[argh(option)]
    pub precision: Option<crate::precision::Precision>,
    /// train: untimed warm-up steps (default 1)
    #[argh(option, default = "1")]
    pub warmup: usize,
    /// model: images per gallery-embedding call (the `vision embed` row; default 64)
    #[argh(option, default = "64")]
    pub embed_batch: usize,
    /// model: also time the plain dfdx composition (fused kernels off, `GADMS_FUSED=0`)
    #[argh(switch)]
    pub plain: bool,
    /// train: micro-batches per step (exact gradient accumulation; a step takes batch x
    /// accum-steps pairs) (default 1)
    #[argh(option, default = "1")]
    pub accum_steps: usize,
    /// train: activation checkpointing (keep only each transformer block's input; the
    /// `peak_mem_mib` column on the CPU is the process's peak resident memory)
    #[argh(switch)]
    pub grad_checkpointing: bool,
    /// train: PyTorch modes to run with --torch (default eager-f32,amp-bf16,tf32; CPU runs
    /// eager-f32 only)
    #[argh(option, default = "String::from(\"eager-f32,amp-bf16,tf32\")")]
    pub torch_modes: String,
}
