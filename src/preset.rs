//! Run-time choice of a compile-time model type.

use gadms_nn::{ClipSpec, TINY_SPEC, VITB16_SPEC};
use std::str::FromStr;

/// The device every command runs on (CPU; CUDA comes with the `cuda` feature).
pub type Dev = dfdx::prelude::Cpu;

// The embedded synthetic person set (gadms_data::synth) is drawn at the Tiny preset's size.
const _: () = assert!(
    gadms_data::synth::IMG_H == TINY_SPEC.vision.image_h
        && gadms_data::synth::IMG_W == TINY_SPEC.vision.image_w
);

/// A named model preset.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Preset {
    /// CLIP ViT-B/16 at 384×128 (the GA-DMS backbone).
    VitB16,
    /// The toy preset (64×32 images, 64-wide, 2 layers) for tests and the embedded default.
    Tiny,
}

impl Preset {
    /// The preset's sizes.
    pub fn spec(self) -> ClipSpec {
        match self {
            Preset::VitB16 => VITB16_SPEC,
            Preset::Tiny => TINY_SPEC,
        }
    }

    /// The preset with these sizes.
    pub fn from_spec(spec: &ClipSpec) -> Option<Self> {
        [Preset::VitB16, Preset::Tiny]
            .into_iter()
            .find(|p| p.spec() == *spec)
    }
}

impl FromStr for Preset {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "vit-b-16" | "vit-b/16" | "vitb16" => Ok(Preset::VitB16),
            "tiny" => Ok(Preset::Tiny),
            _ => Err(format!("unknown preset '{s}': use vit-b-16 or tiny")),
        }
    }
}

/// Runs `$body` with `$M` bound to the model type of `$preset` (f32; on [`Dev`], or on the
/// device type `$D` with `with_preset!(preset, D, M => …)`).
#[macro_export]
macro_rules! with_preset {
    ($preset:expr, $M:ident => $body:expr) => {
        $crate::with_preset!($preset, $crate::preset::Dev, $M => $body)
    };
    ($preset:expr, $D:ty, $M:ident => $body:expr) => {
        match $preset {
            $crate::preset::Preset::VitB16 => {
                type $M = gadms_nn::ViTB16<f32, $D>;
                $body
            }
            $crate::preset::Preset::Tiny => {
                type $M = gadms_nn::Tiny<f32, $D>;
                $body
            }
        }
    };
}

/// Serialises a preset as its name (`tiny`, `vit-b-16`).
pub fn ser_preset<S: serde::Serializer>(p: &Preset, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(p.spec().name)
}

/// Reads a preset name back.
pub fn de_preset<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Preset, D::Error> {
    let name = <String as serde::Deserialize>::deserialize(d)?;
    name.parse().map_err(serde::de::Error::custom)
}

/// The name of a preset's MTP decoder type (for config.json).
pub fn decoder_name(preset: Preset) -> &'static str {
    match preset {
        Preset::Tiny => "MtpTiny",
        Preset::VitB16 => "MtpViTB16",
    }
}
