//! `gadms-nn`: the GA-DMS model on dfdx 0.13 — CLIP vision and text towers with
//! compile-time-checked sizes (later: the MTP decoder, GASS and the losses).
//!
//! Every module is generic over the element type `E` and the dfdx device `D`, so the same
//! code runs on the CPU and, with dfdx's `cuda` feature, on a GPU. Batch is a run-time `usize`;
//! widths, depths, head counts and token counts are const generics checked when the type is
//! used (a mis-wired model fails to compile).

// Shapes are in the types: a forward pass over dfdx tensors with their tapes and const-generic
// sizes has a long signature by design, which a type alias would only hide.
#![allow(clippy::type_complexity)]

pub mod attention;
pub mod block;
pub mod checkpoint;
pub mod clip;
pub mod fast;
pub mod gadms;
pub mod gass;
pub mod id;
pub mod layers;
pub mod loss;
pub mod mtp;
pub mod pool;
pub mod surgery;
pub mod text;
pub mod trimmed;
pub mod vision;

pub use attention::{Attention, Probs};
pub use block::{ResBlock, Transformer};
pub use clip::{
    Clip, ClipInference, ClipSpec, HasClipSpec, PRESETS, TINY_SPEC, TextSpec, Tiny, TinyText,
    TinyVision, VITB16_SPEC, ViTB16, ViTB16Text, ViTB16Vision, VisionSpec, spec_of,
};
pub use gadms::{GaDms, GaDmsTiny, GaDmsViTB16};
pub use gass::{
    GassConfig, GassError, GassLayer, GassNorm, GassOutput, batch_min_max, gass_emap, gass_scores,
};
pub use id::{IdClassifier, IdGrads, ce_rows};
pub use layers::{Float, LayerNorm, Mlp, quick_gelu, tape_with};
pub use loss::{l2_normalize, sdm_loss};
pub use mtp::{MlmHead, MtpDecoder, MtpTiny, MtpViTB16};
pub use pool::{cls_token, eos_index, eos_token};
pub use surgery::{Frozen, Tower};
pub use text::{TextInput, TextTower};
pub use trimmed::text_features_trimmed;
pub use vision::VisionTower;
