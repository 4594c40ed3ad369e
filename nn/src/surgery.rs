//! Type-checked model surgery: functions that turn a model into a *related type* and carry the
//! weights across, so that an architecture change (fewer text layers, another joint width, a
//! grafted or frozen tower) is a type change the compiler checks.
//!
//! Every function here moves tensors, it never copies data through the host, and every size
//! relation it relies on is a compile-time assertion whose message names the mistake in words
//! (`const { assert!(…, "surgery: …") }`, evaluated when the function is instantiated). The
//! README section "Model surgery" shows what the compiler prints for each mistake, and
//! `tests/compile_fail/*.rs` (run by `tests/surgery_compile_fail.rs` with `trybuild`) checks it.
//!
//! | operation | function | type change |
//! |---|---|---|
//! | keep the first K blocks | [`keep_layers`], [`keep_text_layers`], [`keep_vision_layers`] | `L → K`, `K <= L` checked |
//! | fresh projection of another joint width | [`replace_text_projection`], [`replace_vision_projection`], [`with_embed`] | `EMBED → NEW` |
//! | a given projection matrix | [`with_text_projection`], [`with_vision_projection`] | `[PW, NEW]`, `PW == WIDTH` checked |
//! | put two towers together | [`assemble`], [`graft_vision`], [`graft_text`] | vision and text `EMBED` equal, checked |
//! | check a decoder against the towers | [`check_decoder`] | decoder width == `EMBED`, vocabularies equal |
//! | freeze a tower | [`Frozen`], [`freeze_vision`], [`freeze_text`], [`thaw`] | `M → Frozen<M>` |
//!
//! Copying one tower from a *checkpoint* of another preset is in `gadms_ckpt::surgery`
//! (`load_text_tower`, `load_vision_tower`): a checkpoint's shapes are only known at run time, so
//! a mismatch there is a run-time error naming the key and both shapes.
//!
//! Reference for the pieces: OpenAI CLIP `model.py` (`VisionTransformer.proj`,
//! `CLIP.text_projection`, both `[width, embed_dim]` initialised N(0, width^-1/2)), IRRA
//! `model/clip_model.py`; the joint width must agree between the towers because the SDM loss
//! compares image and text features by cosine (docs/method.md §3.1).

use crate::block::{ResBlock, Transformer};
use crate::clip::Clip;
use crate::layers::{Float, normal_fill};
use crate::mtp::MtpDecoder;
use crate::text::TextTower;
use crate::vision::VisionTower;
use dfdx::nn::modules::Repeated;
use dfdx::prelude::*;

mod frozen;
pub use frozen::{Frozen, Tower, freeze_text, freeze_vision, thaw};

// ---------------------------------------------------------------------------------------------
// Depth
// ---------------------------------------------------------------------------------------------

/// The first `K` blocks of a stack of `L` (`resblocks.0 … resblocks.{K-1}`, weights moved, not
/// copied). `K <= L` is checked at compile time:
/// `"surgery: cannot keep more layers (K) than the tower has (L)"`.
///
/// Shapes are unchanged: `[B, S, W] → [B, S, W]`.
pub fn keep_layers<
    const K: usize,
    const W: usize,
    const H: usize,
    const HD: usize,
    const F: usize,
    const L: usize,
    E: Dtype,
    D: Storage<E>,
>(
    t: Transformer<W, H, HD, F, L, E, D>,
) -> Transformer<W, H, HD, F, K, E, D> {
    const {
        assert!(
            K <= L,
            "surgery: cannot keep more layers (K) than the tower has (L)"
        )
    };
    let mut modules: Vec<ResBlock<W, H, HD, F, E, D>> = t.resblocks.modules;
    modules.truncate(K);
    Transformer {
        resblocks: Repeated { modules },
    }
}

/// A text tower with only its first `K` of `L` blocks (`TextTower<…, L, …> → TextTower<…, K, …>`),
/// every other weight (embeddings, `ln_final`, `text_projection`) carried over exactly.
/// `K <= L` is checked at compile time. Output shape unchanged: `[B, CTX, EMBED]`.
pub fn keep_text_layers<
    const K: usize,
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
>(
    t: TextTower<VOCAB, CTX, W, H, HD, F, L, EMBED, E, D>,
) -> TextTower<VOCAB, CTX, W, H, HD, F, K, EMBED, E, D> {
    TextTower {
        token_embedding: t.token_embedding,
        positional_embedding: t.positional_embedding,
        transformer: keep_layers::<K, W, H, HD, F, L, E, D>(t.transformer),
        ln_final: t.ln_final,
        text_projection: t.text_projection,
    }
}

/// A vision tower with only its first `K` of `L` blocks; everything else carried over exactly.
/// `K <= L` is checked at compile time. Output shape unchanged: `[B, SEQ, EMBED]`.
pub fn keep_vision_layers<
    const K: usize,
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
>(
    v: VisionTower<IMG_H, IMG_W, PATCH, PATCH_DIM, SEQ, W, H, HD, F, L, EMBED, E, D>,
) -> VisionTower<IMG_H, IMG_W, PATCH, PATCH_DIM, SEQ, W, H, HD, F, K, EMBED, E, D> {
    VisionTower {
        conv1: v.conv1,
        class_embedding: v.class_embedding,
        positional_embedding: v.positional_embedding,
        ln_pre: v.ln_pre,
        transformer: keep_layers::<K, W, H, HD, F, L, E, D>(v.transformer),
        ln_post: v.ln_post,
        proj: v.proj,
    }
}

// ---------------------------------------------------------------------------------------------
// Projection / joint width
// ---------------------------------------------------------------------------------------------

/// A fresh `[W, NEW]` projection, N(0, W^-1/2) as OpenAI CLIP initialises `proj` and
/// `text_projection` (`scale = width ** -0.5`), drawn from `dev`'s RNG.
pub fn fresh_projection<const W: usize, const NEW: usize, E: Float, D: Device<E>>(
    dev: &D,
) -> Tensor<Rank2<W, NEW>, E, D>
where
    rand_distr::StandardNormal: rand_distr::Distribution<E>,
{
    let mut p: Tensor<Rank2<W, NEW>, E, D> = dev.zeros();
    normal_fill(&mut p, (W as f64).powf(-0.5)).unwrap_or_else(|_| unreachable!("host fill"));
    p
}

/// The text tower with `proj` `[PW, NEW]` as its `text_projection`
/// (`TextTower<…, EMBED, …> → TextTower<…, NEW, …>`); the rest carried over exactly.
///
/// The projection's input width must be the tower's residual width: `PW == W` is checked at
/// compile time (`"surgery: the projection's input width (rows) must equal the text tower's
/// WIDTH"`). Output `[B, CTX, NEW]`.
pub fn with_text_projection<
    const PW: usize,
    const NEW: usize,
    const VOCAB: usize,
    const CTX: usize,
    const W: usize,
    const H: usize,
    const HD: usize,
    const F: usize,
    const L: usize,
    const EMBED: usize,
    E: Dtype,
    D: Device<E>,
>(
    t: TextTower<VOCAB, CTX, W, H, HD, F, L, EMBED, E, D>,
    proj: Tensor<Rank2<PW, NEW>, E, D>,
) -> TextTower<VOCAB, CTX, W, H, HD, F, L, NEW, E, D> {
    const {
        assert!(
            PW == W,
            "surgery: the projection's input width (rows) must equal the text tower's WIDTH"
        )
    };
    TextTower {
        token_embedding: t.token_embedding,
        positional_embedding: t.positional_embedding,
        transformer: t.transformer,
        ln_final: t.ln_final,
        // `PW == W` was asserted above; the reshape only renames the const dimension.
        text_projection: proj.reshape::<Rank2<W, NEW>>(),
    }
}

/// The vision tower with `proj` `[PW, NEW]` as its `proj`; `PW == W` checked at compile time
/// (`"surgery: the projection's input width (rows) must equal the vision tower's WIDTH"`).
/// Output `[B, SEQ, NEW]`.
pub fn with_vision_projection<
    const PW: usize,
    const NEW: usize,
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
    D: Device<E>,
>(
    v: VisionTower<IMG_H, IMG_W, PATCH, PATCH_DIM, SEQ, W, H, HD, F, L, EMBED, E, D>,
    proj: Tensor<Rank2<PW, NEW>, E, D>,
) -> VisionTower<IMG_H, IMG_W, PATCH, PATCH_DIM, SEQ, W, H, HD, F, L, NEW, E, D> {
    const {
        assert!(
            PW == W,
            "surgery: the projection's input width (rows) must equal the vision tower's WIDTH"
        )
    };
    VisionTower {
        conv1: v.conv1,
        class_embedding: v.class_embedding,
        positional_embedding: v.positional_embedding,
        ln_pre: v.ln_pre,
        transformer: v.transformer,
        ln_post: v.ln_post,
        proj: proj.reshape::<Rank2<W, NEW>>(),
    }
}

/// The text tower with a freshly initialised `text_projection` `[W, NEW]` (see
/// [`fresh_projection`]); output `[B, CTX, NEW]`.
pub fn replace_text_projection<
    const NEW: usize,
    const VOCAB: usize,
    const CTX: usize,
    const W: usize,
    const H: usize,
    const HD: usize,
    const F: usize,
    const L: usize,
    const EMBED: usize,
    E: Float,
    D: Device<E>,
>(
    t: TextTower<VOCAB, CTX, W, H, HD, F, L, EMBED, E, D>,
) -> TextTower<VOCAB, CTX, W, H, HD, F, L, NEW, E, D>
where
    rand_distr::StandardNormal: rand_distr::Distribution<E>,
{
    let p = fresh_projection::<W, NEW, E, D>(t.text_projection.device());
    with_text_projection(t, p)
}

/// The vision tower with a freshly initialised `proj` `[W, NEW]`; output `[B, SEQ, NEW]`.
pub fn replace_vision_projection<
    const NEW: usize,
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
>(
    v: VisionTower<IMG_H, IMG_W, PATCH, PATCH_DIM, SEQ, W, H, HD, F, L, EMBED, E, D>,
) -> VisionTower<IMG_H, IMG_W, PATCH, PATCH_DIM, SEQ, W, H, HD, F, L, NEW, E, D>
where
    rand_distr::StandardNormal: rand_distr::Distribution<E>,
{
    let p = fresh_projection::<W, NEW, E, D>(v.proj.device());
    with_vision_projection(v, p)
}

/// Both projections replaced by fresh ones of joint width `NEW`, so the two towers stay
/// consistent: `Clip<Vision<…, EMBED>, Text<…, EMBED>> → Clip<Vision<…, NEW>, Text<…, NEW>>`.
/// Image features become `[B, NEW]`, text features `[B, NEW]`; every other weight is kept.
pub fn with_embed<
    const NEW: usize,
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
>(
    clip: Clip<
        VisionTower<IMG_H, IMG_W, PATCH, PATCH_DIM, SEQ, VW, VH, VHD, VF, VL, EMBED, E, D>,
        TextTower<VOCAB, CTX, TW, TH, THD, TF, TL, EMBED, E, D>,
    >,
) -> Clip<
    VisionTower<IMG_H, IMG_W, PATCH, PATCH_DIM, SEQ, VW, VH, VHD, VF, VL, NEW, E, D>,
    TextTower<VOCAB, CTX, TW, TH, THD, TF, TL, NEW, E, D>,
>
where
    rand_distr::StandardNormal: rand_distr::Distribution<E>,
{
    Clip {
        visual: replace_vision_projection::<NEW, _, _, _, _, _, _, _, _, _, _, _, E, D>(
            clip.visual,
        ),
        text: replace_text_projection::<NEW, _, _, _, _, _, _, _, _, E, D>(clip.text),
    }
}

// ---------------------------------------------------------------------------------------------
// Putting towers together
// ---------------------------------------------------------------------------------------------

/// A CLIP model from a vision and a text tower (either may be [`Frozen`]). The two joint widths
/// must agree — the SDM loss compares the features by cosine — and that is checked at compile
/// time: `"surgery: the vision and text towers must project to the same joint width (EMBED)"`.
#[allow(clippy::type_complexity)]
pub fn assemble<
    V: Tower<Plain = VisionTower<IMG_H, IMG_W, PATCH, PATCH_DIM, SEQ, VW, VH, VHD, VF, VL, VE, E, D>>,
    T: Tower<Plain = TextTower<VOCAB, CTX, TW, TH, THD, TF, TL, TE, E, D>>,
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
    const VE: usize,
    const VOCAB: usize,
    const CTX: usize,
    const TW: usize,
    const TH: usize,
    const THD: usize,
    const TF: usize,
    const TL: usize,
    const TE: usize,
    E: Dtype,
    D: Storage<E>,
>(
    visual: V,
    text: T,
) -> Clip<V, T> {
    const {
        assert!(
            VE == TE,
            "surgery: the vision and text towers must project to the same joint width (EMBED)"
        )
    };
    Clip { visual, text }
}

/// The (pretrained) vision tower of `donor` on a new text tower: `Clip<V, _> + T2 → Clip<V, T2>`,
/// vision weights carried over exactly; joint widths checked as in [`assemble`].
#[allow(clippy::type_complexity)]
pub fn graft_vision<
    V: Tower<Plain = VisionTower<IMG_H, IMG_W, PATCH, PATCH_DIM, SEQ, VW, VH, VHD, VF, VL, VE, E, D>>,
    T1,
    T2: Tower<Plain = TextTower<VOCAB, CTX, TW, TH, THD, TF, TL, TE, E, D>>,
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
    const VE: usize,
    const VOCAB: usize,
    const CTX: usize,
    const TW: usize,
    const TH: usize,
    const THD: usize,
    const TF: usize,
    const TL: usize,
    const TE: usize,
    E: Dtype,
    D: Storage<E>,
>(
    donor: Clip<V, T1>,
    text: T2,
) -> Clip<V, T2> {
    assemble(donor.visual, text)
}

/// The (pretrained) text tower of `donor` under a new vision tower: `V2 + Clip<_, T> →
/// Clip<V2, T>`; joint widths checked as in [`assemble`].
#[allow(clippy::type_complexity)]
pub fn graft_text<
    V2: Tower<Plain = VisionTower<IMG_H, IMG_W, PATCH, PATCH_DIM, SEQ, VW, VH, VHD, VF, VL, VE, E, D>>,
    V1,
    T: Tower<Plain = TextTower<VOCAB, CTX, TW, TH, THD, TF, TL, TE, E, D>>,
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
    const VE: usize,
    const VOCAB: usize,
    const CTX: usize,
    const TW: usize,
    const TH: usize,
    const THD: usize,
    const TF: usize,
    const TL: usize,
    const TE: usize,
    E: Dtype,
    D: Storage<E>,
>(
    visual: V2,
    donor: Clip<V1, T>,
) -> Clip<V2, T> {
    assemble(visual, donor.text)
}

/// Compile-time check that an MTP decoder fits a CLIP model: IRRA's cross-modal decoder reads
/// the *projected* tokens, so its width must be the joint width
/// (`"surgery: the MTP decoder's width must equal the towers' joint embedding width (EMBED)"`),
/// and it predicts the text tower's tokens (`"surgery: the MTP decoder's vocabulary must equal
/// the text tower's (VOCAB)"`). `gadms::surgery::attach_decoder` calls it before building the
/// GA-DMS model.
#[allow(clippy::type_complexity)]
pub fn check_decoder<
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
    const MW: usize,
    const MH: usize,
    const MHD: usize,
    const MF: usize,
    const ML: usize,
    const MV: usize,
    E: Dtype,
    D: Storage<E>,
>(
    _clip: &Clip<
        VisionTower<IMG_H, IMG_W, PATCH, PATCH_DIM, SEQ, VW, VH, VHD, VF, VL, EMBED, E, D>,
        TextTower<VOCAB, CTX, TW, TH, THD, TF, TL, EMBED, E, D>,
    >,
    _mtp: &MtpDecoder<MW, MH, MHD, MF, ML, MV, E, D>,
) {
    const {
        assert!(
            MW == EMBED,
            "surgery: the MTP decoder's width must equal the towers' joint embedding width (EMBED)"
        )
    };
    const {
        assert!(
            MV == VOCAB,
            "surgery: the MTP decoder's vocabulary must equal the text tower's (VOCAB)"
        )
    };
}
