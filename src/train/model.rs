//! The model types of one preset, for the training commands.
//!
//! A training command picks its preset at run time and calls code monomorphised for it:
//! `run_on::<D, M>` with `D` the device ([`crate::device::BuildDevice`]) and `M` the full
//! GA-DMS model type of the preset, [`GaDmsTiny`] or [`GaDmsViTB16`] (CLIP plus the matching
//! MTP decoder, `MtpTiny` / `MtpViTB16`), chosen once by [`with_train_model!`]. [`TrainModel`]
//! names everything the three recipes need of it:
//!
//! | item | Tiny | ViT-B/16 |
//! |---|---|---|
//! | `M::Clip` (image `[3, H, W]`) | `Tiny` (`[3, 64, 32]`) | `ViTB16` (`[3, 384, 128]`) |
//! | `M::Mtp` | `MtpTiny` (32 wide) | `MtpViTB16` (512 wide) |
//! | `M::Classifier` | `IdClassifier<32>` | `IdClassifier<512>` |
//!
//! Each capability is implemented once, generically over the sizes, in its recipe's file
//! ([`super::sdm::SdmLoss`], [`super::gadms::GaDmsForward`], [`super::irra::IrraStep`]) and
//! its micro-batch passes in their `_accum` files ([`super::gadms_accum::GaDmsAccum`],
//! [`super::irra_accum::IrraAccum`]), so both presets run exactly the same code.
//!
//! [`GaDmsTiny`]: gadms_nn::GaDmsTiny
//! [`GaDmsViTB16`]: gadms_nn::GaDmsViTB16

use super::gadms_accum::GaDmsAccum;
use super::irra_accum::IrraAccum;
use super::recipe::ModelParts;
use super::sdm::SdmLoss;
use dfdx::nn::BuildModule;
use dfdx::nn::tensor_collection::TensorCollection;
use dfdx::prelude::*;

/// The GA-DMS model type of a preset (CLIP + MTP decoder) with what every recipe needs: its
/// parts, the SDM loss of its CLIP towers, the GA-DMS forward pass and the IRRA step.
pub trait TrainModel<D: Device<f32>>:
    ModelParts<D, Clip: SdmLoss<D>>
    + GaDmsAccum<D>
    + IrraAccum<D>
    + BuildModule<D, f32>
    + TensorCollection<f32, D>
    + 'static
{
}

impl<D: Device<f32>, M> TrainModel<D> for M where
    M: ModelParts<D, Clip: SdmLoss<D>>
        + GaDmsAccum<D>
        + IrraAccum<D>
        + BuildModule<D, f32>
        + TensorCollection<f32, D>
        + 'static
{
}

/// Calls `$f::<$D, M>($args…)` with `M` the GA-DMS model type of `$preset` on device `$D`
/// ([`gadms_nn::GaDmsTiny`] or [`gadms_nn::GaDmsViTB16`], f32; a [`TrainModel`]).
#[macro_export]
macro_rules! with_train_model {
    ($preset:expr, $D:ty, $f:ident($($arg:expr),*)) => {
        match $preset {
            $crate::preset::Preset::Tiny => {
                $f::<$D, gadms_nn::GaDmsTiny<f32, $D>>($($arg),*)
            }
            $crate::preset::Preset::VitB16 => {
                $f::<$D, gadms_nn::GaDmsViTB16<f32, $D>>($($arg),*)
            }
        }
    };
}
