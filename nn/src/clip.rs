//! The two-tower CLIP model, its runtime description and the presets.

use crate::layers::Float;
use crate::pool::{cls_token, eos_token};
use crate::text::{TextInput, TextTower};
use crate::vision::VisionTower;
use dfdx::nn::tensor_collection::*;
use dfdx::prelude::*;

/// CLIP: a vision tower `V` and a text tower `T`.
///
/// Saved with the OpenAI/open_clip names: the vision tower under `visual.` and the text tower
/// at the top level (`token_embedding.weight`, `transformer.resblocks.0…`, `ln_final`, …).
/// The temperature is fixed (GA-DMS: 1/τ = 50), so there is no `logit_scale` parameter.
#[derive(Clone, Debug)]
pub struct Clip<V, T> {
    /// Image encoder.
    pub visual: V,
    /// Text encoder.
    pub text: T,
}

impl<E: Dtype, D: Device<E>, V: TensorCollection<E, D>, T: TensorCollection<E, D>>
    TensorCollection<E, D> for Clip<V, T>
{
    type To<E2: Dtype, D2: Device<E2>> = Clip<V::To<E2, D2>, T::To<E2, D2>>;
    fn iter_tensors<Vis: ModuleVisitor<Self, E, D>>(
        visitor: &mut Vis,
    ) -> Result<Option<Self::To<Vis::E2, Vis::D2>>, Vis::Err> {
        visitor.visit_fields(
            (
                Self::module("visual", |s| &s.visual, |s| &mut s.visual),
                // Empty name: the text tower's keys sit at the top level, as in OpenAI CLIP.
                Self::module("", |s| &s.text, |s| &mut s.text),
            ),
            |(visual, text)| Clip { visual, text },
        )
    }
}

/// Sizes of a vision tower, known at run time (for configs, checkpoint checks, messages).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VisionSpec {
    /// Input height in pixels.
    pub image_h: usize,
    /// Input width in pixels.
    pub image_w: usize,
    /// Patch side.
    pub patch: usize,
    /// Residual width.
    pub width: usize,
    /// Attention heads.
    pub heads: usize,
    /// MLP width.
    pub mlp: usize,
    /// Number of blocks.
    pub layers: usize,
    /// Joint embedding width.
    pub embed: usize,
}

impl VisionSpec {
    /// Patch grid (rows, columns).
    pub fn grid(&self) -> (usize, usize) {
        (self.image_h / self.patch, self.image_w / self.patch)
    }
    /// Token count including CLS.
    pub fn seq(&self) -> usize {
        let (h, w) = self.grid();
        h * w + 1
    }
}

/// Sizes of a text tower, known at run time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TextSpec {
    /// Vocabulary size.
    pub vocab: usize,
    /// Context length.
    pub ctx: usize,
    /// Residual width.
    pub width: usize,
    /// Attention heads.
    pub heads: usize,
    /// MLP width.
    pub mlp: usize,
    /// Number of blocks.
    pub layers: usize,
    /// Joint embedding width.
    pub embed: usize,
}

/// Sizes of a whole CLIP model.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClipSpec {
    /// Preset name (`vit-b-16`, `tiny`, or `custom`).
    pub name: &'static str,
    /// Vision tower sizes.
    pub vision: VisionSpec,
    /// Text tower sizes.
    pub text: TextSpec,
}

impl ClipSpec {
    /// The joint embedding width (both towers agree by construction).
    pub fn embed(&self) -> usize {
        self.vision.embed
    }
}

/// A tower whose sizes are known as a constant.
pub trait HasVisionSpec {
    /// The sizes.
    const SPEC: VisionSpec;
}
/// A tower whose sizes are known as a constant.
pub trait HasTextSpec {
    /// The sizes.
    const SPEC: TextSpec;
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
> HasVisionSpec for VisionTower<IMG_H, IMG_W, PATCH, PATCH_DIM, SEQ, W, H, HD, F, L, EMBED, E, D>
{
    const SPEC: VisionSpec = VisionSpec {
        image_h: IMG_H,
        image_w: IMG_W,
        patch: PATCH,
        width: W,
        heads: H,
        mlp: F,
        layers: L,
        embed: EMBED,
    };
}

impl<
    const VOCAB: usize,
    const CTX: usize,
    const W: usize,
    const H: usize,
    const HD: usize,
    const F: usize,
    const L: usize,
    const EMBED: usize,
    E: Dtype,
    D: Storage<E>,
> HasTextSpec for TextTower<VOCAB, CTX, W, H, HD, F, L, EMBED, E, D>
{
    const SPEC: TextSpec = TextSpec {
        vocab: VOCAB,
        ctx: CTX,
        width: W,
        heads: H,
        mlp: F,
        layers: L,
        embed: EMBED,
    };
}

/// Run-time-shaped inference interface, so preset-agnostic code (CLI, evaluation) can drive any
/// CLIP type. Inputs are host buffers; outputs are un-normalised features [B, EMBED].
pub trait ClipInference<E: Float, D: Device<E>>: TensorCollection<E, D> {
    /// The model's sizes.
    fn spec(&self) -> ClipSpec;
    /// Images as a flat CLIP-normalised buffer [B, 3, H, W] (row-major) → features [B, EMBED].
    /// Panics if `pixels.len()` is not `B·3·H·W` (callers check sizes first).
    fn image_features(&self, pixels: Vec<E>, batch: usize) -> Vec<E>;
    /// Token ids, flat [B, CTX] → features [B, EMBED].
    fn text_features(&self, ids: &[u32], batch: usize) -> Vec<E>;
}

impl<
    const IMG_H: usize,
    const IMG_W: usize,
    const PATCH: usize,
    const PATCH_DIM: usize,
    const SEQ: usize,
    const VW: usize,
    const VH: usize,
    const VHD: usize,
    const VF: usize,
    const VL: usize,
    const VOCAB: usize,
    const CTX: usize,
    const TW: usize,
    const TH: usize,
    const THD: usize,
    const TF: usize,
    const TL: usize,
    const EMBED: usize,
    E: Float,
    D: Device<E>,
> ClipInference<E, D>
    for Clip<
        VisionTower<IMG_H, IMG_W, PATCH, PATCH_DIM, SEQ, VW, VH, VHD, VF, VL, EMBED, E, D>,
        TextTower<VOCAB, CTX, TW, TH, THD, TF, TL, EMBED, E, D>,
    >
where
    rand_distr::StandardNormal: rand_distr::Distribution<E>,
{
    fn spec(&self) -> ClipSpec {
        spec_of::<Self>()
    }

    fn image_features(&self, pixels: Vec<E>, batch: usize) -> Vec<E> {
        let dev = self.visual.proj.device().clone();
        let shape = (batch, Const::<3>, Const::<IMG_H>, Const::<IMG_W>);
        let images = dev.tensor_from_vec(pixels, shape);
        cls_token(self.visual.forward(images, None)).as_vec()
    }

    fn text_features(&self, ids: &[u32], batch: usize) -> Vec<E> {
        assert_eq!(
            ids.len(),
            batch * CTX,
            "text_features: ids must be [B, CTX]"
        );
        let dev = self.text.text_projection.device().clone();
        let rows: Vec<[u32; CTX]> = ids
            .chunks_exact(CTX)
            .map(|c| c.try_into().expect("chunk of CTX"))
            .collect();
        let input = TextInput::new(&dev, &rows);
        eos_token(self.text.forward(input.ids, NoneTape, None), input.eos).as_vec()
    }
}

/// A CLIP type whose sizes are constants.
pub trait HasClipSpec {
    /// The sizes.
    const SPEC: ClipSpec;
}

impl<V: HasVisionSpec, T: HasTextSpec> HasClipSpec for Clip<V, T> {
    const SPEC: ClipSpec = ClipSpec {
        name: preset_name(V::SPEC, T::SPEC),
        vision: V::SPEC,
        text: T::SPEC,
    };
}

/// The spec of a CLIP type.
pub fn spec_of<M: HasClipSpec>() -> ClipSpec {
    M::SPEC
}

const fn preset_name(v: VisionSpec, t: TextSpec) -> &'static str {
    if spec_eq(v, t, VITB16_SPEC) {
        "vit-b-16"
    } else if spec_eq(v, t, TINY_SPEC) {
        "tiny"
    } else {
        "custom"
    }
}

const fn spec_eq(v: VisionSpec, t: TextSpec, s: ClipSpec) -> bool {
    v.image_h == s.vision.image_h
        && v.image_w == s.vision.image_w
        && v.patch == s.vision.patch
        && v.width == s.vision.width
        && v.heads == s.vision.heads
        && v.mlp == s.vision.mlp
        && v.layers == s.vision.layers
        && v.embed == s.vision.embed
        && t.vocab == s.text.vocab
        && t.ctx == s.text.ctx
        && t.width == s.text.width
        && t.heads == s.text.heads
        && t.mlp == s.text.mlp
        && t.layers == s.text.layers
        && t.embed == s.text.embed
}

/// Vision tower of OpenAI CLIP ViT-B/16 at IRRA's 384×128 input (24×8 grid + CLS = 193 tokens).
pub type ViTB16Vision<E, D> = VisionTower<384, 128, 16, 768, 193, 768, 12, 64, 3072, 12, 512, E, D>;
/// Text tower of OpenAI CLIP ViT-B/16 (512 wide, 12 layers, 8 heads, 77 tokens).
pub type ViTB16Text<E, D> = TextTower<49408, 77, 512, 8, 64, 2048, 12, 512, E, D>;
/// CLIP ViT-B/16, the GA-DMS backbone.
pub type ViTB16<E, D> = Clip<ViTB16Vision<E, D>, ViTB16Text<E, D>>;

/// Tiny vision tower: 64×32 input (4×2 grid + CLS = 9 tokens), 64 wide, 2 layers, 2 heads.
pub type TinyVision<E, D> = VisionTower<64, 32, 16, 768, 9, 64, 2, 32, 256, 2, 32, E, D>;
/// Tiny text tower: full CLIP vocabulary and context, 64 wide, 2 layers, 2 heads.
pub type TinyText<E, D> = TextTower<49408, 77, 64, 2, 32, 256, 2, 32, E, D>;
/// The `Tiny` preset: the ViT-B/16 structure at toy size, for tests and the embedded default.
pub type Tiny<E, D> = Clip<TinyVision<E, D>, TinyText<E, D>>;

/// Sizes of [`ViTB16`].
pub const VITB16_SPEC: ClipSpec = ClipSpec {
    name: "vit-b-16",
    vision: VisionSpec {
        image_h: 384,
        image_w: 128,
        patch: 16,
        width: 768,
        heads: 12,
        mlp: 3072,
        layers: 12,
        embed: 512,
    },
    text: TextSpec {
        vocab: 49408,
        ctx: 77,
        width: 512,
        heads: 8,
        mlp: 2048,
        layers: 12,
        embed: 512,
    },
};

/// Sizes of [`Tiny`].
pub const TINY_SPEC: ClipSpec = ClipSpec {
    name: "tiny",
    vision: VisionSpec {
        image_h: 64,
        image_w: 32,
        patch: 16,
        width: 64,
        heads: 2,
        mlp: 256,
        layers: 2,
        embed: 32,
    },
    text: TextSpec {
        vocab: 49408,
        ctx: 77,
        width: 64,
        heads: 2,
        mlp: 256,
        layers: 2,
        embed: 32,
    },
};

/// The named presets, for `--preset` parsing and shape inference.
pub const PRESETS: [ClipSpec; 2] = [VITB16_SPEC, TINY_SPEC];
