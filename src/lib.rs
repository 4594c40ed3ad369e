//! `gadms`: the GA-DMS command-line program and its loops (CLI, commands, schedules).
//!
//! The model lives in `gadms-nn`, data in `gadms-data`, checkpoints in `gadms-ckpt`.

pub mod checkpoint;
pub mod cmd;
pub mod device;
pub mod eval;
pub mod finetune;
pub mod gadms_step;
pub mod init;
pub mod optim;
pub mod preset;
pub mod pretrain;
pub mod report;
pub mod screenshot;
pub mod surgery;
pub mod train_model;
pub mod weights;

pub use preset::{Dev, Preset};
