//! Synthetic data: the procedurally drawn person dataset behind `fixtures/synth-pedes`
//! ([`pedes`], `gadms pretrain`'s embedded default data) and synthetic training batches
//! ([`batch`], for benchmarks and tests).

pub mod batch;
pub mod pedes;

pub use batch::synthetic_batch;
pub use pedes::{
    FIXTURE, IMG_H, IMG_LEN, IMG_W, Record, SynthConfig, WriteSummary, generate, reid_raw_json,
    write_cuhk_pedes,
};
