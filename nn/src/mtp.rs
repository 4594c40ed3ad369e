//! The MTP (masked token prediction) decoder of GA-DMS, which is IRRA's IRR module
//! (docs/method.md §2.2; IRRA `model/build.py`: `cross_attn`, `cross_modal_transformer`,
//! `ln_pre_t`, `ln_pre_i`, `ln_post`, `mlm_head`, `cross_former`):
//!
//! ```text
//! q     = ln_pre_t(text_tokens)          [B, Sq, W]  masked caption, after ln_final @ text_projection
//! kv    = ln_pre_i(image_tokens)         [B, Sk, W]  all image tokens, after ln_post @ proj
//! x     = cross_attn(q, kv, kv)          one multi-head attention, no residual
//! x     = cross_modal_transformer(x)     L CLIP pre-LN blocks (QuickGELU MLP), no mask
//! x     = ln_post(x)
//! logits = mlm_head(x) = fc(ln(QuickGELU(dense(x))))   [B, Sq, V]
//! ```
//!
//! Parameter names are IRRA's `state_dict` keys with the fused `in_proj_weight` / `in_proj_bias`
//! split into `q_proj`/`k_proj`/`v_proj` (the native layout; `gadms_ckpt::layout`'s
//! `openai_to_native` / `native_to_openai` convert any key ending in `attn.in_proj_*`, so
//! `cross_attn.*` too):
//!
//! | native (this module) | IRRA |
//! |---|---|
//! | `cross_attn.{q,k,v}_proj.{weight,bias}` | `cross_attn.in_proj_{weight,bias}` |
//! | `cross_attn.out_proj.{weight,bias}` | same |
//! | `cross_modal_transformer.resblocks.N.{ln_1,attn.*,ln_2,mlp.c_fc,mlp.c_proj}.*` | same (attn fused) |
//! | `ln_pre_t.*`, `ln_pre_i.*`, `ln_post.*` | same |
//! | `mlm_head.dense.*`, `mlm_head.ln.*`, `mlm_head.fc.*` | same (`mlm_head.gelu` has no parameters) |
//!
//! # Initialisation (`build` / `reset_params`), IRRA's
//!
//! With `scale = W^-1/2`: every `in_proj` (q, k, v of `cross_attn` and of each block) ~
//! N(0, scale²); every `out_proj` and `mlp.c_proj` weight ~ N(0, (scale·(2L)^-1/2)²); `c_fc` ~
//! N(0, (2W)^-1); `mlm_head.dense` ~ N(0, (2W)^-1); `mlm_head.fc` ~ N(0, (scale·(2L)^-1/2)²).
//! Biases are PyTorch's defaults: zero for everything inside `nn.MultiheadAttention`
//! (`in_proj_bias`, `out_proj.bias`), U(±1/√fan_in) for the `nn.Linear`s (`c_fc`, `c_proj`,
//! `dense`, `fc`); LayerNorms are ones / zeros. To get this from dfdx's `build`/`reset_params`
//! the collection lists the decoder's tensors itself (with dotted names, so the keys are the
//! same as if the sub-modules were visited) instead of delegating to `Attention`/`Linear`,
//! whose own resets are dfdx's uniform ones.
//!
//! # Cost
//!
//! The vocabulary projection dominates: at ViT-B/16 size the full-logit [`MtpDecoder::forward`]
//! makes a `[B, 77, 49408]` tensor (1.9 GB in f32 at B = 128). [`MtpDecoder::forward_masked`]
//! runs the head only on the labelled positions, which gives the same loss and the same
//! gradients (ln_post and the head act per token and unlabelled positions do not enter the loss).

use crate::attention::Attention;
use crate::block::{ResBlock, Transformer};
use crate::layers::{Float, LayerNorm, Mlp, normal_fill, quick_gelu, width_scaled_init};
use dfdx::nn::modules::{Linear, Repeated};
use dfdx::nn::tensor_collection::*;
use dfdx::prelude::*;

/// IRRA's `mlm_head`: `Linear(W, W)` → QuickGELU → `LayerNorm(W)` → `Linear(W, V)`.
#[derive(Clone, Debug)]
pub struct MlmHead<const W: usize, const V: usize, E: Dtype, D: Storage<E>> {
    /// `mlm_head.dense`, [W, W].
    pub dense: Linear<W, W, E, D>,
    /// `mlm_head.ln`.
    pub ln: LayerNorm<W, E, D>,
    /// `mlm_head.fc`, [V, W] + [V]: the vocabulary logits.
    pub fc: Linear<W, V, E, D>,
}

impl<const W: usize, const V: usize, E: Float, D: Device<E>> MlmHead<W, V, E, D> {
    /// `x` [B, S, W] → logits [B, S, V].
    pub fn forward3<B: Dim, S: Dim, T: Tape<E, D>>(
        &self,
        x: Tensor<(B, S, Const<W>), E, D, T>,
    ) -> Tensor<(B, S, Const<V>), E, D, T> {
        let h = quick_gelu(crate::fast::linear(&self.dense, x));
        crate::fast::linear(&self.fc, self.ln.forward3(h))
    }

    /// `x` [N, W] → logits [N, V] (tokens already gathered).
    pub fn forward2<N: Dim, T: Tape<E, D>>(
        &self,
        x: Tensor<(N, Const<W>), E, D, T>,
    ) -> Tensor<(N, Const<V>), E, D, T> {
        crate::fast::linear2(&self.fc, self.hidden2(x))
    }

    /// `x` [N, W] → the input of `fc`, `ln(QuickGELU(dense(x)))` [N, W].
    pub fn hidden2<N: Dim, T: Tape<E, D>>(
        &self,
        x: Tensor<(N, Const<W>), E, D, T>,
    ) -> Tensor<(N, Const<W>), E, D, T> {
        let h = quick_gelu(crate::fast::linear2(&self.dense, x));
        self.ln.forward2(h)
    }
}

/// The cross-modal MTP decoder: width `W` (= the joint embedding, `E` in docs/method.md),
/// `H` heads of `HD` dims, MLP width `F`, `L` blocks (`cmt_depth`), vocabulary `V`.
#[derive(Clone, Debug)]
pub struct MtpDecoder<
    const W: usize,
    const H: usize,
    const HD: usize,
    const F: usize,
    const L: usize,
    const V: usize,
    E: Dtype,
    D: Storage<E>,
> {
    /// Text-queries-image cross-attention (`nn.MultiheadAttention(W, H, batch_first=True)`).
    pub cross_attn: Attention<W, H, HD, E, D>,
    /// `L` CLIP residual blocks, no attention mask.
    pub cross_modal_transformer: Transformer<W, H, HD, F, L, E, D>,
    /// LayerNorm on the text tokens (queries).
    pub ln_pre_t: LayerNorm<W, E, D>,
    /// LayerNorm on the image tokens (keys and values).
    pub ln_pre_i: LayerNorm<W, E, D>,
    /// LayerNorm after the blocks.
    pub ln_post: LayerNorm<W, E, D>,
    /// Token classifier.
    pub mlm_head: MlmHead<W, V, E, D>,
}

/// The decoder at GA-DMS / IRRA ViT-B/16 size: 512 wide, 8 heads, MLP 2048, 4 layers
/// (`cmt_depth`), CLIP vocabulary (49408).
pub type MtpViTB16<E, D> = MtpDecoder<512, 8, 64, 2048, 4, 49408, E, D>;

/// The decoder for the `Tiny` preset: Tiny's joint width 32, 2 heads of 16, MLP 4× = 128,
/// 1 block (IRRA's `cmt_depth` is 4; scaled down with the rest of `Tiny`: at width 32 and 77
/// tokens each block cost about 13 ms of a 200 ms GA-DMS step on 2 cores, docs/performance.md),
/// full CLIP vocabulary (Tiny's text tower uses it).
pub type MtpTiny<E, D> = MtpDecoder<32, 2, 16, 128, 1, 49408, E, D>;

impl<
    const W: usize,
    const H: usize,
    const HD: usize,
    const F: usize,
    const L: usize,
    const V: usize,
    E: Dtype,
    D: Storage<E>,
> MtpDecoder<W, H, HD, F, L, V, E, D>
{
    /// Compile-time consistency of the sizes.
    pub const SHAPE_OK: () = {
        assert!(
            W == H * HD && H > 0,
            "mtp: the head count must divide the width (WIDTH must equal HEADS * HEAD_DIM)"
        );
        assert!(L > 0, "mtp: at least one cross-modal block");
        assert!(
            V > 1,
            "mtp: the vocabulary needs the ignored id 0 and one more"
        );
    };
}

/// N(0, W^-1 · (2L)^-1): IRRA's `proj_std` (`out_proj`, `c_proj`, `mlm_head.fc`).
fn proj_std_init<S: ConstShape, E: Float, D: Device<E>, const W: usize, const L: usize>(
    t: &mut Tensor<S, E, D>,
) -> Result<(), D::Err>
where
    rand_distr::StandardNormal: rand_distr::Distribution<E>,
{
    normal_fill(t, (W as f64).powf(-0.5) * ((2 * L) as f64).powf(-0.5))
}

/// N(0, (2W)^-1): IRRA's `fc_std` (`c_fc`, `mlm_head.dense`).
fn fc_std_init<S: ConstShape, E: Float, D: Device<E>, const W: usize>(
    t: &mut Tensor<S, E, D>,
) -> Result<(), D::Err>
where
    rand_distr::StandardNormal: rand_distr::Distribution<E>,
{
    normal_fill(t, ((2 * W) as f64).powf(-0.5))
}

/// U(−1/√fan_in, 1/√fan_in): PyTorch's `nn.Linear` bias default.
fn linear_bias_init<S: ConstShape, E: Float, D: Device<E>, const FAN_IN: usize>(
    t: &mut Tensor<S, E, D>,
) -> Result<(), D::Err> {
    let b = E::from_f64(1.0 / (FAN_IN as f64).sqrt()).unwrap();
    t.try_fill_with_distr(rand_distr::Uniform::new(-b, b))
}

/// Native key suffixes of one block, in visiting order (see `iter_tensors`).
const BLOCK_KEYS: [&str; 16] = [
    "ln_1.weight",
    "ln_1.bias",
    "attn.q_proj.weight",
    "attn.q_proj.bias",
    "attn.k_proj.weight",
    "attn.k_proj.bias",
    "attn.v_proj.weight",
    "attn.v_proj.bias",
    "attn.out_proj.weight",
    "attn.out_proj.bias",
    "ln_2.weight",
    "ln_2.bias",
    "mlp.c_fc.weight",
    "mlp.c_fc.bias",
    "mlp.c_proj.weight",
    "mlp.c_proj.bias",
];

/// `Self::tensor(name, |s| &s.<path>, |s| &mut s.<path>, options)`.
macro_rules! field {
    ($name:expr, [$($path:tt)+], $opts:expr) => {
        Self::tensor(
            $name,
            move |s| &s.$($path)+,
            move |s| &mut s.$($path)+,
            $opts,
        )
    };
}

impl<
    const W: usize,
    const H: usize,
    const HD: usize,
    const F: usize,
    const L: usize,
    const V: usize,
    E: Float,
    D: Device<E>,
> TensorCollection<E, D> for MtpDecoder<W, H, HD, F, L, V, E, D>
where
    rand_distr::StandardNormal: rand_distr::Distribution<E>,
{
    type To<E2: Dtype, D2: Device<E2>> = MtpDecoder<W, H, HD, F, L, V, E2, D2>;
    fn iter_tensors<Vis: ModuleVisitor<Self, E, D>>(
        visitor: &mut Vis,
    ) -> Result<Option<Self::To<Vis::E2, Vis::D2>>, Vis::Err> {
        #[allow(clippy::let_unit_value)]
        let () = Self::SHAPE_OK;
        // Options per tensor kind (macros: each use has its own shape).
        macro_rules! zeros {
            () => {
                TensorOptions::reset_to_zeros()
            };
        }
        macro_rules! ones {
            () => {
                TensorOptions::reset_to_ones()
            };
        }
        macro_rules! attn_w {
            () => {
                TensorOptions::reset_with(width_scaled_init::<_, E, D, W>)
            };
        }
        macro_rules! proj_w {
            () => {
                TensorOptions::reset_with(proj_std_init::<_, E, D, W, L>)
            };
        }
        macro_rules! fc_w {
            () => {
                TensorOptions::reset_with(fc_std_init::<_, E, D, W>)
            };
        }
        macro_rules! bias_u {
            ($fan_in:expr) => {
                TensorOptions::reset_with(linear_bias_init::<_, E, D, $fan_in>)
            };
        }

        let names: Vec<Vec<String>> = (0..L)
            .map(|i| {
                BLOCK_KEYS
                    .iter()
                    .map(|k| format!("cross_modal_transformer.resblocks.{i}.{k}"))
                    .collect()
            })
            .collect();
        let blocks = names
            .iter()
            .enumerate()
            .map(|(i, n)| {
                (
                    (
                        field!(
                            &n[0],
                            [cross_modal_transformer.resblocks.modules[i].ln_1.weight],
                            ones!()
                        ),
                        field!(
                            &n[1],
                            [cross_modal_transformer.resblocks.modules[i].ln_1.bias],
                            zeros!()
                        ),
                    ),
                    (
                        field!(
                            &n[2],
                            [cross_modal_transformer.resblocks.modules[i]
                                .attn
                                .q_proj
                                .weight],
                            attn_w!()
                        ),
                        field!(
                            &n[3],
                            [cross_modal_transformer.resblocks.modules[i]
                                .attn
                                .q_proj
                                .bias],
                            zeros!()
                        ),
                        field!(
                            &n[4],
                            [cross_modal_transformer.resblocks.modules[i]
                                .attn
                                .k_proj
                                .weight],
                            attn_w!()
                        ),
                        field!(
                            &n[5],
                            [cross_modal_transformer.resblocks.modules[i]
                                .attn
                                .k_proj
                                .bias],
                            zeros!()
                        ),
                    ),
                    (
                        field!(
                            &n[6],
                            [cross_modal_transformer.resblocks.modules[i]
                                .attn
                                .v_proj
                                .weight],
                            attn_w!()
                        ),
                        field!(
                            &n[7],
                            [cross_modal_transformer.resblocks.modules[i]
                                .attn
                                .v_proj
                                .bias],
                            zeros!()
                        ),
                        field!(
                            &n[8],
                            [cross_modal_transformer.resblocks.modules[i]
                                .attn
                                .out_proj
                                .weight],
                            proj_w!()
                        ),
                        field!(
                            &n[9],
                            [cross_modal_transformer.resblocks.modules[i]
                                .attn
                                .out_proj
                                .bias],
                            zeros!()
                        ),
                    ),
                    (
                        field!(
                            &n[10],
                            [cross_modal_transformer.resblocks.modules[i].ln_2.weight],
                            ones!()
                        ),
                        field!(
                            &n[11],
                            [cross_modal_transformer.resblocks.modules[i].ln_2.bias],
                            zeros!()
                        ),
                    ),
                    (
                        field!(
                            &n[12],
                            [cross_modal_transformer.resblocks.modules[i].mlp.c_fc.weight],
                            fc_w!()
                        ),
                        field!(
                            &n[13],
                            [cross_modal_transformer.resblocks.modules[i].mlp.c_fc.bias],
                            bias_u!(W)
                        ),
                        field!(
                            &n[14],
                            [cross_modal_transformer.resblocks.modules[i]
                                .mlp
                                .c_proj
                                .weight],
                            proj_w!()
                        ),
                        field!(
                            &n[15],
                            [cross_modal_transformer.resblocks.modules[i].mlp.c_proj.bias],
                            bias_u!(F)
                        ),
                    ),
                )
            })
            .collect::<Vec<_>>();

        visitor.visit_fields(
            (
                (
                    (
                        field!(
                            "cross_attn.q_proj.weight",
                            [cross_attn.q_proj.weight],
                            attn_w!()
                        ),
                        field!("cross_attn.q_proj.bias", [cross_attn.q_proj.bias], zeros!()),
                        field!(
                            "cross_attn.k_proj.weight",
                            [cross_attn.k_proj.weight],
                            attn_w!()
                        ),
                        field!("cross_attn.k_proj.bias", [cross_attn.k_proj.bias], zeros!()),
                    ),
                    (
                        field!(
                            "cross_attn.v_proj.weight",
                            [cross_attn.v_proj.weight],
                            attn_w!()
                        ),
                        field!("cross_attn.v_proj.bias", [cross_attn.v_proj.bias], zeros!()),
                        field!(
                            "cross_attn.out_proj.weight",
                            [cross_attn.out_proj.weight],
                            proj_w!()
                        ),
                        field!(
                            "cross_attn.out_proj.bias",
                            [cross_attn.out_proj.bias],
                            zeros!()
                        ),
                    ),
                ),
                blocks,
                Self::module("ln_pre_t", |s| &s.ln_pre_t, |s| &mut s.ln_pre_t),
                Self::module("ln_pre_i", |s| &s.ln_pre_i, |s| &mut s.ln_pre_i),
                Self::module("ln_post", |s| &s.ln_post, |s| &mut s.ln_post),
                (
                    field!("mlm_head.dense.weight", [mlm_head.dense.weight], fc_w!()),
                    field!("mlm_head.dense.bias", [mlm_head.dense.bias], bias_u!(W)),
                    Self::module("mlm_head.ln", |s| &s.mlm_head.ln, |s| &mut s.mlm_head.ln),
                    field!("mlm_head.fc.weight", [mlm_head.fc.weight], proj_w!()),
                    field!("mlm_head.fc.bias", [mlm_head.fc.bias], bias_u!(W)),
                ),
            ),
            |(((qw, qb, kw, kb), (vw, vb, ow, ob)), blocks, ln_pre_t, ln_pre_i, ln_post, head)| {
                let modules = blocks
                    .into_iter()
                    .map(
                        |(
                            (l1w, l1b),
                            (qw, qb, kw, kb),
                            (vw, vb, ow, ob),
                            (l2w, l2b),
                            (fw, fb, pw, pb),
                        )| ResBlock {
                            ln_1: LayerNorm {
                                weight: l1w,
                                bias: l1b,
                            },
                            attn: attention(qw, qb, kw, kb, vw, vb, ow, ob),
                            ln_2: LayerNorm {
                                weight: l2w,
                                bias: l2b,
                            },
                            mlp: Mlp {
                                c_fc: Linear {
                                    weight: fw,
                                    bias: fb,
                                },
                                c_proj: Linear {
                                    weight: pw,
                                    bias: pb,
                                },
                            },
                        },
                    )
                    .collect();
                let (dw, db, ln, fw, fb) = head;
                MtpDecoder {
                    cross_attn: attention(qw, qb, kw, kb, vw, vb, ow, ob),
                    cross_modal_transformer: Transformer {
                        resblocks: Repeated { modules },
                    },
                    ln_pre_t,
                    ln_pre_i,
                    ln_post,
                    mlm_head: MlmHead {
                        dense: Linear {
                            weight: dw,
                            bias: db,
                        },
                        ln,
                        fc: Linear {
                            weight: fw,
                            bias: fb,
                        },
                    },
                }
            },
        )
    }
}

type Mat<const W: usize, E, D> = Tensor<Rank2<W, W>, E, D>;
type Vct<const W: usize, E, D> = Tensor<Rank1<W>, E, D>;

/// Assembles an [`Attention`] from its eight tensors.
#[allow(clippy::too_many_arguments)]
fn attention<const W: usize, const H: usize, const HD: usize, E: Dtype, D: Storage<E>>(
    qw: Mat<W, E, D>,
    qb: Vct<W, E, D>,
    kw: Mat<W, E, D>,
    kb: Vct<W, E, D>,
    vw: Mat<W, E, D>,
    vb: Vct<W, E, D>,
    ow: Mat<W, E, D>,
    ob: Vct<W, E, D>,
) -> Attention<W, H, HD, E, D> {
    Attention {
        q_proj: Linear {
            weight: qw,
            bias: qb,
        },
        k_proj: Linear {
            weight: kw,
            bias: kb,
        },
        v_proj: Linear {
            weight: vw,
            bias: vb,
        },
        out_proj: Linear {
            weight: ow,
            bias: ob,
        },
    }
}

/// Flat `b·Sq + s` indices and labels of the positions with a non-zero label.
fn labelled(labels: &[u32]) -> (Vec<usize>, Vec<u32>) {
    labels
        .iter()
        .enumerate()
        .filter(|(_, l)| **l != 0)
        .map(|(i, l)| (i, *l))
        .unzip()
}

impl<
    const W: usize,
    const H: usize,
    const HD: usize,
    const F: usize,
    const L: usize,
    const V: usize,
    E: Float,
    D: Device<E>,
> MtpDecoder<W, H, HD, F, L, V, E, D>
{
    /// IRRA's `cross_former`: text tokens [B, Sq, W] (queries) and image tokens [B, Sk, W]
    /// (keys = values) → `ln_post` output [B, Sq, W], before the head.
    ///
    /// Both inputs carry the same tape type; with two `OwnedTape`s the tapes are merged. If the
    /// image tokens are also used elsewhere (SDM), pass one copy with `with_empty_tape()`.
    pub fn forward_hidden<B: Dim, Sq: Dim, Sk: Dim, T: Tape<E, D>>(
        &self,
        text_tokens: Tensor<(B, Sq, Const<W>), E, D, T>,
        image_tokens: Tensor<(B, Sk, Const<W>), E, D, T>,
    ) -> Tensor<(B, Sq, Const<W>), E, D, T> {
        #[allow(clippy::let_unit_value)]
        let () = Self::SHAPE_OK;
        assert_eq!(
            text_tokens.shape().0.size(),
            image_tokens.shape().0.size(),
            "mtp: text and image batch sizes differ"
        );
        let q = self.ln_pre_t.forward3(text_tokens);
        // IRRA applies ln_pre_i twice (to k and to v) to the same tensor; one application
        // feeding both projections is the same function with the same gradients.
        let kv = self.ln_pre_i.forward3(image_tokens);
        let x = self.cross_attn.forward_cross(q, kv, None, None);
        let x = self.cross_modal_transformer.forward(x, None, None);
        self.ln_post.forward3(x)
    }

    /// Logits for every text position, [B, Sq, V] (IRRA `mlm_head(cross_former(t, i, i))`).
    pub fn forward<B: Dim, Sq: Dim, Sk: Dim, T: Tape<E, D>>(
        &self,
        text_tokens: Tensor<(B, Sq, Const<W>), E, D, T>,
        image_tokens: Tensor<(B, Sk, Const<W>), E, D, T>,
    ) -> Tensor<(B, Sq, Const<V>), E, D, T> {
        self.mlm_head
            .forward3(self.forward_hidden(text_tokens, image_tokens))
    }

    /// Logits only at the labelled positions: `labels` is [B·Sq] row-major (0 = not masked);
    /// returns logits [N, V] for the N positions with a non-zero label, in row-major order, and
    /// those N labels. `masked_rows_ce(logits, &targets)` then equals
    /// `masked_token_ce(self.forward(..), labels)` in value and gradients, without the
    /// [B, Sq, V] tensor.
    ///
    /// With no labelled position at all it returns the logits of position 0 with target 0, so
    /// the masked loss is 0 with a connected graph (PyTorch would give NaN).
    pub fn forward_masked<B: Dim, Sq: Dim, Sk: Dim, T: Tape<E, D>>(
        &self,
        text_tokens: Tensor<(B, Sq, Const<W>), E, D, T>,
        image_tokens: Tensor<(B, Sk, Const<W>), E, D, T>,
        labels: &[u32],
    ) -> (Tensor<(usize, Const<V>), E, D, T>, Vec<u32>) {
        let (rows, targets) = self.labelled_rows(text_tokens, image_tokens, labels);
        (self.mlm_head.forward2(rows), targets)
    }

    /// The decoder's output at the labelled positions, [N, W] (before `mlm_head`), and their
    /// targets (see [`Self::forward_masked`] for the case of no labelled position).
    fn labelled_rows<B: Dim, Sq: Dim, Sk: Dim, T: Tape<E, D>>(
        &self,
        text_tokens: Tensor<(B, Sq, Const<W>), E, D, T>,
        image_tokens: Tensor<(B, Sk, Const<W>), E, D, T>,
        labels: &[u32],
    ) -> (Tensor<(usize, Const<W>), E, D, T>, Vec<u32>) {
        let (b, sq, _) = *text_tokens.shape();
        let n = b.size() * sq.size();
        assert_eq!(labels.len(), n, "mtp: need one label per text position");
        let dev = text_tokens.device().clone();
        let (mut idx, mut targets) = labelled(labels);
        if idx.is_empty() {
            idx.push(0);
            targets.push(0);
        }
        let m = idx.len();
        let idx = dev.tensor_from_vec(idx, (m,));
        let hidden = self
            .forward_hidden(text_tokens, image_tokens)
            .reshape_like(&(n, Const::<W>));
        let rows = hidden.gather(idx); // [N, W]
        (rows, targets)
    }

    /// The masked-token loss without logits in memory: `masked_rows_ce_over` of the labelled
    /// positions' logits (as [`Self::forward_masked`] gives them), with the sum of the rows'
    /// cross entropies divided by `count` (`None`: by the number of labelled positions, the
    /// loss of this batch alone; `Some(c)`: this micro-batch's part of a batch with `c` labelled
    /// positions). Returns the loss and the number of labelled positions. The vocabulary
    /// projection and the cross entropy run as one fused op on the CPU
    /// ([`crate::loss::masked_rows_linear_ce_over`]).
    pub fn masked_loss<B: Dim, Sq: Dim, Sk: Dim, T: Tape<E, D>>(
        &self,
        text_tokens: Tensor<(B, Sq, Const<W>), E, D, T>,
        image_tokens: Tensor<(B, Sk, Const<W>), E, D, T>,
        labels: &[u32],
        count: Option<usize>,
    ) -> (Tensor<Rank0, E, D, T>, usize) {
        let (rows, targets) = self.labelled_rows(text_tokens, image_tokens, labels);
        let masked = targets.iter().filter(|&&l| l != 0).count();
        let h = self.mlm_head.hidden2(rows);
        let loss = crate::loss::masked_rows_linear_ce_over(
            h,
            &self.mlm_head.fc,
            &targets,
            count.unwrap_or(masked),
        );
        (loss, masked)
    }
}
