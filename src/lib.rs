//! `gadms`: the GA-DMS command-line program and its library: training ([`train`]: one loop,
//! three recipes), evaluation ([`eval`]) and the commands ([`cmd`]).
//!
//! The model lives in `gadms-nn`, data in `gadms-data`, checkpoints in `gadms-ckpt`.

pub mod build_info;
pub mod cmd;
pub mod device;
pub mod dist;
pub mod eval;
pub mod precision;
pub mod preset;
pub mod report;
pub mod screenshot;
pub mod surgery;
pub mod train;
pub mod weights;

pub use preset::{Dev, Preset};
