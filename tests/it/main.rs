//! The root crate's integration tests, as one test binary (one link instead of one per file):
//! the `gadms` command line run as a user runs it, the training loop and its recipes, resume,
//! retrieval metrics, reports, damaged shards (and `--skip-corrupt`) and model surgery. Tests of `gadms-nn`, `gadms-data` and
//! `gadms-ckpt` alone live in those crates; the CUDA tests are `tests/cuda.rs`.

mod common;

mod accum;
mod advisories;
mod checkpointing;
mod cli;
mod corrupt;
mod distributed;
mod finetune;
mod gadms_step;
mod logs;
mod optim;
mod packed;
mod preset_train;
mod pretrain;
mod rank;
mod reports;
mod resume;
mod run_dir;
mod score_report;
mod search;
mod skip_corrupt;
mod surgery;
