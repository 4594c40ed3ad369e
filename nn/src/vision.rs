//! CLIP vision tower, IRRA variant (OpenAI `VisionTransformer` with a non-square grid and
//! `ln_post` + `proj` applied to every token, `model/clip_model.py` in IRRA / GA-DMS).

use crate::block::Transformer;
use crate::layers::{Float, LayerNorm, width_scaled_init};
// Re-exported so `gadms_nn::vision::cls_token` keeps working.
pub use crate::pool::cls_token;
use dfdx::nn::modules::UnbiasedLinear;
use dfdx::nn::tensor_collection::*;
use dfdx::prelude::*;

/// Vision transformer on `IMG_H × IMG_W` RGB images cut into `PATCH × PATCH` patches.
///
/// Derived sizes are separate const parameters checked at compile time (stable Rust has no
/// `generic_const_exprs`): `PATCH_DIM = 3·PATCH²`, `SEQ = (IMG_H/PATCH)·(IMG_W/PATCH) + 1`,
/// `W = H·HD`. `F` is the MLP width, `L` the depth and `EMBED` the joint embedding width.
#[derive(Clone, Debug)]
pub struct VisionTower<
    const IMG_H: usize,
    const IMG_W: usize,
    const PATCH: usize,
    const PATCH_DIM: usize,
    const SEQ: usize,
    const W: usize,
    const H: usize,
    const HD: usize,
    const F: usize,
    const L: usize,
    const EMBED: usize,
    E: Dtype,
    D: Storage<E>,
> {
    /// Patch embedding `conv1` (no bias), stored as [W, 3·P·P] = `conv1.weight.reshape(W, -1)`.
    pub conv1: UnbiasedLinear<PATCH_DIM, W, E, D>,
    /// Class token, [W].
    pub class_embedding: Tensor<Rank1<W>, E, D>,
    /// Positional embedding, [SEQ, W] (row 0 is the CLS position, then the grid row-major).
    pub positional_embedding: Tensor<Rank2<SEQ, W>, E, D>,
    /// LayerNorm before the blocks.
    pub ln_pre: LayerNorm<W, E, D>,
    /// The residual blocks.
    pub transformer: Transformer<W, H, HD, F, L, E, D>,
    /// LayerNorm applied to every output token.
    pub ln_post: LayerNorm<W, E, D>,
    /// Projection to the joint space, [W, EMBED] (used as `x @ proj`).
    pub proj: Tensor<Rank2<W, EMBED>, E, D>,
}

impl<
    const IMG_H: usize,
    const IMG_W: usize,
    const PATCH: usize,
    const PATCH_DIM: usize,
    const SEQ: usize,
    const W: usize,
    const H: usize,
    const HD: usize,
    const F: usize,
    const L: usize,
    const EMBED: usize,
    E: Dtype,
    D: Storage<E>,
> VisionTower<IMG_H, IMG_W, PATCH, PATCH_DIM, SEQ, W, H, HD, F, L, EMBED, E, D>
{
    /// Patch-grid height, `IMG_H / PATCH`.
    pub const GRID_H: usize = IMG_H / PATCH;
    /// Patch-grid width, `IMG_W / PATCH`.
    pub const GRID_W: usize = IMG_W / PATCH;
    /// Compile-time consistency of the derived sizes.
    pub const SHAPE_OK: () = {
        assert!(
            PATCH > 0 && IMG_H.is_multiple_of(PATCH) && IMG_W.is_multiple_of(PATCH),
            "vision: image size must be a multiple of the patch size"
        );
        assert!(
            PATCH_DIM == 3 * PATCH * PATCH,
            "vision: PATCH_DIM must be 3 * PATCH * PATCH"
        );
        assert!(
            SEQ == (IMG_H / PATCH) * (IMG_W / PATCH) + 1,
            "vision: SEQ must be (IMG_H / PATCH) * (IMG_W / PATCH) + 1"
        );
        assert!(
            W == H * HD,
            "vision: the head count must divide the width (WIDTH must equal HEADS * HEAD_DIM)"
        );
    };
}

impl<
    const IMG_H: usize,
    const IMG_W: usize,
    const PATCH: usize,
    const PATCH_DIM: usize,
    const SEQ: usize,
    const W: usize,
    const H: usize,
    const HD: usize,
    const F: usize,
    const L: usize,
    const EMBED: usize,
    E: Float,
    D: Device<E>,
> TensorCollection<E, D>
    for VisionTower<IMG_H, IMG_W, PATCH, PATCH_DIM, SEQ, W, H, HD, F, L, EMBED, E, D>
where
    rand_distr::StandardNormal: rand_distr::Distribution<E>,
{
    type To<E2: Dtype, D2: Device<E2>> =
        VisionTower<IMG_H, IMG_W, PATCH, PATCH_DIM, SEQ, W, H, HD, F, L, EMBED, E2, D2>;
    fn iter_tensors<V: ModuleVisitor<Self, E, D>>(
        visitor: &mut V,
    ) -> Result<Option<Self::To<V::E2, V::D2>>, V::Err> {
        #[allow(clippy::let_unit_value)]
        let () = Self::SHAPE_OK;
        visitor.visit_fields(
            (
                (
                    Self::module("conv1", |s| &s.conv1, |s| &mut s.conv1),
                    Self::tensor(
                        "class_embedding",
                        |s| &s.class_embedding,
                        |s| &mut s.class_embedding,
                        TensorOptions::reset_with(width_scaled_init::<_, E, D, W>),
                    ),
                    Self::tensor(
                        "positional_embedding",
                        |s| &s.positional_embedding,
                        |s| &mut s.positional_embedding,
                        TensorOptions::reset_with(width_scaled_init::<_, E, D, W>),
                    ),
                ),
                Self::module("ln_pre", |s| &s.ln_pre, |s| &mut s.ln_pre),
                Self::module("transformer", |s| &s.transformer, |s| &mut s.transformer),
                Self::module("ln_post", |s| &s.ln_post, |s| &mut s.ln_post),
                Self::tensor(
                    "proj",
                    |s| &s.proj,
                    |s| &mut s.proj,
                    TensorOptions::reset_with(width_scaled_init::<_, E, D, W>),
                ),
            ),
            |(
                (conv1, class_embedding, positional_embedding),
                ln_pre,
                transformer,
                ln_post,
                proj,
            )| {
                VisionTower {
                    conv1,
                    class_embedding,
                    positional_embedding,
                    ln_pre,
                    transformer,
                    ln_post,
                    proj,
                }
            },
        )
    }
}

/// Input images, [B, 3, IMG_H, IMG_W], CLIP-normalised.
pub type Images<B, const IMG_H: usize, const IMG_W: usize, E, D, T> =
    Tensor<(B, Const<3>, Const<IMG_H>, Const<IMG_W>), E, D, T>;

impl<
    const IMG_H: usize,
    const IMG_W: usize,
    const PATCH: usize,
    const PATCH_DIM: usize,
    const SEQ: usize,
    const W: usize,
    const H: usize,
    const HD: usize,
    const F: usize,
    const L: usize,
    const EMBED: usize,
    E: Float,
    D: Device<E>,
> VisionTower<IMG_H, IMG_W, PATCH, PATCH_DIM, SEQ, W, H, HD, F, L, EMBED, E, D>
{
    /// Every projected token: images [B, 3, IMG_H, IMG_W] → [B, SEQ, EMBED]; token 0 is CLS.
    ///
    /// `probs_out`, when given, receives each layer's attention probabilities [B, H, SEQ, SEQ].
    pub fn forward<B: Dim, T: Tape<E, D>>(
        &self,
        images: Images<B, IMG_H, IMG_W, E, D, T>,
        probs_out: Option<&mut Vec<crate::attention::Probs<B, H, Const<SEQ>, Const<SEQ>, E, D>>>,
    ) -> Tensor<(B, Const<SEQ>, Const<EMBED>), E, D, T> {
        let x = self.embed(images);
        let x = self.ln_pre.forward3(x);
        let x = self.transformer.forward(x, None, probs_out);
        let x = self.ln_post.forward3(x);
        x.matmul(self.proj.retaped::<T>())
    }

    /// The image feature (projected CLS token), [B, EMBED]; not L2-normalised.
    ///
    /// Equal to `cls_token(self.forward(images, None))`, but the last block runs its query,
    /// output projection and MLP for the CLS token only (keys and values still cover every
    /// token): nothing else reaches the feature, and that is about 1/14 of the tower's work.
    pub fn forward_features<B: Dim, T: Tape<E, D>>(
        &self,
        images: Images<B, IMG_H, IMG_W, E, D, T>,
    ) -> Tensor<(B, Const<EMBED>), E, D, T> {
        let x = self.embed(images);
        let x = self.ln_pre.forward3(x);
        let x = self.transformer.forward_cls(x);
        let x = self.ln_post.forward2(x);
        x.matmul(self.proj.retaped::<T>())
    }

    /// Patchify, patch embedding, CLS token and positional embedding: → [B, SEQ, W].
    fn embed<B: Dim, T: Tape<E, D>>(
        &self,
        images: Images<B, IMG_H, IMG_W, E, D, T>,
    ) -> Tensor<(B, Const<SEQ>, Const<W>), E, D, T> {
        #[allow(clippy::let_unit_value)]
        let () = Self::SHAPE_OK;
        let b = images.shape().0;
        let (gh, gw) = (Self::GRID_H, Self::GRID_W);
        // [B,3,gh·P,gw·P] → [B,3,gh,P,gw,P] → [B,gh,gw,3,P,P] → [B, gh·gw, 3·P·P]
        let patches = images
            .reshape_like(&(b, Const::<3>, gh, Const::<PATCH>, gw, Const::<PATCH>))
            .permute::<_, Axes6<0, 2, 4, 1, 3, 5>>()
            .reshape_like(&(b, gh * gw, Const::<PATCH_DIM>));
        let x = crate::fast::linear_unbiased(&self.conv1, patches);
        let cls = self
            .class_embedding
            .retaped::<T>()
            .broadcast_like(&(b, 1usize, Const::<W>));
        let x = (cls, x).concat_along(Axis::<1>);
        let x: Tensor<(B, Const<SEQ>, Const<W>), E, D, T> = match x.try_realize() {
            Ok(x) => x,
            Err(_) => unreachable!("SEQ == GRID_H * GRID_W + 1 is checked at compile time"),
        };
        let shape = *x.shape();
        x + self
            .positional_embedding
            .retaped::<T>()
            .broadcast_like(&shape)
    }
}
