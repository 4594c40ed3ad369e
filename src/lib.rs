//! `gadms`: the GA-DMS command-line program and its library: training ([`train`]: one loop,
//! three recipes), evaluation ([`eval`]) and the commands ([`cmd`]).
//!
//! The model lives in `gadms-nn`, data in `gadms-data`, checkpoints in `gadms-ckpt`.

pub mod cmd;
pub mod device;
#[path = "pretrain/eval.rs"]
pub mod eval;
pub mod model_io;
pub mod preset;
pub mod rank;
pub mod report;
pub mod screenshot;
pub mod surgery;
#[path = "pretrain/synth.rs"]
pub mod synth;
pub mod train;

pub use preset::{Dev, Preset};
