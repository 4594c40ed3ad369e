//! The GA-DMS model: CLIP and the MTP decoder side by side (docs/method.md §2.2).

use crate::{MtpTiny, MtpViTB16, Tiny, ViTB16};
use dfdx::nn::tensor_collection::*;
use dfdx::prelude::*;

/// The GA-DMS model: CLIP (`clip`) and the MTP decoder (`mtp`, docs/method.md §2.2).
///
/// Tensor names (native layout, `gadms_ckpt::bridge`): CLIP's as in [`crate::Clip`] (text
/// tower at the top level: `token_embedding.weight`, `transformer.resblocks.N.*`,
/// `ln_final.*`, `text_projection`; vision tower under `visual.`), and the decoder's at the
/// top level too, as IRRA's `state_dict` has them (`cross_attn.*`, `cross_modal_transformer.*`,
/// `ln_pre_t.*`, `ln_pre_i.*`, `ln_post.*`, `mlm_head.*`). The two sets are disjoint (CLIP's
/// `ln_post` is `visual.ln_post`).
#[derive(Clone, Debug)]
pub struct GaDms<C, M> {
    /// The CLIP backbone.
    pub clip: C,
    /// The MTP decoder.
    pub mtp: M,
}

impl<E: Dtype, D: Device<E>, C: TensorCollection<E, D>, M: TensorCollection<E, D>>
    TensorCollection<E, D> for GaDms<C, M>
{
    type To<E2: Dtype, D2: Device<E2>> = GaDms<C::To<E2, D2>, M::To<E2, D2>>;
    fn iter_tensors<V: ModuleVisitor<Self, E, D>>(
        visitor: &mut V,
    ) -> Result<Option<Self::To<V::E2, V::D2>>, V::Err> {
        visitor.visit_fields(
            (
                // Empty names: both parts' keys sit at the top level (IRRA's layout).
                Self::module("", |s| &s.clip, |s| &mut s.clip),
                Self::module("", |s| &s.mtp, |s| &mut s.mtp),
            ),
            |(clip, mtp)| GaDms { clip, mtp },
        )
    }
}

/// GA-DMS at `Tiny` size (tests, the embedded default run).
pub type GaDmsTiny<E, D> = GaDms<Tiny<E, D>, MtpTiny<E, D>>;
/// GA-DMS at the paper's size: CLIP ViT-B/16 (384×128) and the 512-wide, 4-block decoder.
pub type GaDmsViTB16<E, D> = GaDms<ViTB16<E, D>, MtpViTB16<E, D>>;
