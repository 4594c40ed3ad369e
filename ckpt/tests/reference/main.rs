//! Reference tests of the model and checkpoint crates against PyTorch fixtures (`fixtures/<topic>/`,
//! each written by the `make.py` beside it), in one test binary: CLIP tower parity with open_clip
//! and Hugging Face (`parity`), the positional-embedding resize (`posresize`), the SDM loss
//! (`sdm`), PyTorch zip checkpoints against safetensors (`pytorch`), the MTP decoder (`mtp`), GASS (`gass`), the ID loss (`id_loss`), and the CLIP
//! normalisation constants shared by `gadms-data` and `gadms-ckpt` (`constants`).
//!
//! They live in `gadms-ckpt` because they read the fixtures through its safetensors reader and
//! layout maps; they use only the library crates, not the `gadms` binary.

#[path = "../../../tests/it/common.rs"]
mod common;

mod constants;
mod gass;
mod id_loss;
mod mtp;
mod parity;
mod posresize;
mod pytorch;
mod sdm;
