//! `gadms-ckpt`: safetensors (and PyTorch checkpoint) weights for gadms.
//!
//! - [`tensors`]: a host name → f32 array map; reading (F32/F16/BF16/F64, upcast to f32) and
//!   atomic writing (temp file + rename, `{"format": "pt"}` metadata);
//! - [`torch`], [`pickle`]: PyTorch zip checkpoints (`torch.save`) read into the same map by a
//!   pickle reader that runs no code;
//! - [`bridge`]: copying between dfdx modules and that map, strictly checked;
//! - [`layout`]: OpenAI/open_clip and Hugging Face `CLIPModel` key layouts;
//! - [`resize`]: the ViT position-grid resize (14×14 → 24×8, as IRRA);
//! - [`clip_io`]: whole-model load / save / export and preset inference;
//! - [`surgery`]: copying one tower out of a checkpoint (run-time-checked shapes).

// `CkptError` names the file, the key and both shapes of a mismatch; it is built once, on a
// failed load or save, so its size (over clippy's 128 bytes) costs nothing.
#![allow(clippy::result_large_err)]

pub mod bridge;
pub mod clip_io;
pub mod error;
pub mod layout;
pub mod native;
pub mod pickle;
pub mod resize;
pub mod surgery;
pub mod tensors;
pub mod torch;

pub use bridge::{map_to_module, module_to_map};
pub use clip_io::{
    ExportReport, LoadReport, Weights, export_hf, export_open_clip, infer_preset, load_clip,
    load_clip_weights, read_weights, save_clip,
};
pub use error::{CkptError, Result};
pub use layout::Layout;
pub use tensors::{Array, TensorMap};
