//! CLIP text tower (OpenAI `CLIP.encode_text`, IRRA variant returning every token):
//! token + positional embedding, causal pre-LN blocks, `ln_final` on all tokens,
//! `@ text_projection`, EOS pooling at `argmax(token id)`.

use crate::block::Transformer;
use crate::layers::{Float, LayerNorm, normal_init, width_scaled_init};
// Re-exported so `gadms_nn::text::{eos_index, eos_token}` keep working.
pub use crate::pool::{eos_index, eos_token};
use dfdx::nn::modules::Embedding;
use dfdx::nn::tensor_collection::*;
use dfdx::prelude::*;

/// Text transformer: vocabulary `VOCAB`, context `CTX`, width `W = H·HD`, MLP `F`, depth `L`,
/// joint embedding `EMBED`.
#[derive(Clone, Debug)]
pub struct TextTower<
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
> {
    /// Token embedding, [VOCAB, W]. Row 49405 is the learnable `<|mask|>` (IRRA convention).
    pub token_embedding: Embedding<VOCAB, W, E, D>,
    /// Positional embedding, [CTX, W].
    pub positional_embedding: Tensor<Rank2<CTX, W>, E, D>,
    /// Causal residual blocks.
    pub transformer: Transformer<W, H, HD, F, L, E, D>,
    /// Final LayerNorm, applied to every token.
    pub ln_final: LayerNorm<W, E, D>,
    /// Projection to the joint space, [W, EMBED] (used as `x @ text_projection`).
    pub text_projection: Tensor<Rank2<W, EMBED>, E, D>,
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
> TextTower<VOCAB, CTX, W, H, HD, F, L, EMBED, E, D>
{
    /// Compile-time consistency of the sizes.
    pub const SHAPE_OK: () = {
        assert!(
            W == H * HD,
            "text: the head count must divide the width (WIDTH must equal HEADS * HEAD_DIM)"
        );
        assert!(CTX >= 2, "text: the context must hold at least SOT and EOT");
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
    E: Float,
    D: Device<E>,
> TensorCollection<E, D> for TextTower<VOCAB, CTX, W, H, HD, F, L, EMBED, E, D>
where
    rand_distr::StandardNormal: rand_distr::Distribution<E>,
{
    type To<E2: Dtype, D2: Device<E2>> = TextTower<VOCAB, CTX, W, H, HD, F, L, EMBED, E2, D2>;
    fn iter_tensors<V: ModuleVisitor<Self, E, D>>(
        visitor: &mut V,
    ) -> Result<Option<Self::To<V::E2, V::D2>>, V::Err> {
        #[allow(clippy::let_unit_value)]
        let () = Self::SHAPE_OK;
        visitor.visit_fields(
            (
                Self::module(
                    "token_embedding",
                    |s| &s.token_embedding,
                    |s| &mut s.token_embedding,
                ),
                Self::tensor(
                    "positional_embedding",
                    |s| &s.positional_embedding,
                    |s| &mut s.positional_embedding,
                    TensorOptions::reset_with(normal_init::<_, E, D, 10>),
                ),
                Self::module("transformer", |s| &s.transformer, |s| &mut s.transformer),
                Self::module("ln_final", |s| &s.ln_final, |s| &mut s.ln_final),
                Self::tensor(
                    "text_projection",
                    |s| &s.text_projection,
                    |s| &mut s.text_projection,
                    TensorOptions::reset_with(width_scaled_init::<_, E, D, W>),
                ),
            ),
            |(token_embedding, positional_embedding, transformer, ln_final, text_projection)| {
                TextTower {
                    token_embedding,
                    positional_embedding,
                    transformer,
                    ln_final,
                    text_projection,
                }
            },
        )
    }
}

/// Token ids [B, CTX] with their EOS positions [B] (argmax of each row).
#[derive(Clone, Debug)]
pub struct TextInput<const CTX: usize, D: Storage<usize>> {
    /// Token ids, [B, CTX].
    pub ids: Tensor<(usize, Const<CTX>), usize, D>,
    /// EOS position per row, [B].
    pub eos: Tensor<(usize,), usize, D>,
}

impl<const CTX: usize, D: Storage<usize> + dfdx::tensor::TensorFromVec<usize>> TextInput<CTX, D> {
    /// Builds the ids and EOS tensors from host rows of exactly `CTX` ids.
    pub fn new(dev: &D, rows: &[[u32; CTX]]) -> Self {
        let b = rows.len();
        let flat: Vec<usize> = rows.iter().flatten().map(|&t| t as usize).collect();
        let eos: Vec<usize> = rows.iter().map(|r| eos_index(r)).collect();
        TextInput {
            ids: dev.tensor_from_vec(flat, (b, Const::<CTX>)),
            eos: dev.tensor_from_vec(eos, (b,)),
        }
    }

    /// Batch size.
    pub fn len(&self) -> usize {
        self.ids.shape().0
    }

    /// True for an empty batch.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
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
    E: Float,
    D: Device<E>,
> TextTower<VOCAB, CTX, W, H, HD, F, L, EMBED, E, D>
{
    /// Every projected token: ids [B, CTX] → [B, CTX, EMBED]. The gradient tape is given
    /// separately because the ids are integers. Ids must be `< VOCAB`.
    ///
    /// `probs_out`, when given, receives each layer's attention probabilities [B, H, CTX, CTX].
    pub fn forward<T: Tape<E, D>>(
        &self,
        ids: Tensor<(usize, Const<CTX>), usize, D>,
        tape: T,
        probs_out: Option<
            &mut Vec<crate::attention::Probs<usize, H, Const<CTX>, Const<CTX>, E, D>>,
        >,
    ) -> Tensor<(usize, Const<CTX>, Const<EMBED>), E, D, T> {
        let x = self.embed(ids, tape);
        let mask = self.causal_mask(x.device());
        let x = self.transformer.forward(x, Some(&mask), probs_out);
        let x = self.ln_final.forward3(x);
        x.matmul(self.text_projection.retaped::<T>())
    }

    /// The text feature (projected EOS token), [B, EMBED]; not L2-normalised.
    pub fn forward_features<T: Tape<E, D>>(
        &self,
        input: &TextInput<CTX, D>,
        tape: T,
    ) -> Tensor<(usize, Const<EMBED>), E, D, T>
    where
        D: Storage<usize>,
    {
        eos_token(
            self.forward(input.ids.clone(), tape, None),
            input.eos.clone(),
        )
    }

    /// Token + positional embedding: ids [B, CTX] → [B, CTX, W].
    pub fn embed<T: Tape<E, D>>(
        &self,
        ids: Tensor<(usize, Const<CTX>), usize, D>,
        tape: T,
    ) -> Tensor<(usize, Const<CTX>, Const<W>), E, D, T> {
        #[allow(clippy::let_unit_value)]
        let () = Self::SHAPE_OK;
        let x = self.token_embedding.forward(ids.put_tape(tape));
        let shape = *x.shape();
        x + self
            .positional_embedding
            .retaped::<T>()
            .broadcast_like(&shape)
    }

    /// Causal mask [CTX, CTX]: −∞ strictly above the diagonal, 0 elsewhere.
    pub fn causal_mask(&self, dev: &D) -> Tensor<Rank2<CTX, CTX>, E, D> {
        dev.upper_tri(E::neg_infinity(), 1)
    }
}
