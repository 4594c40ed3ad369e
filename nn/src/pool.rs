//! Pooling a token map to one feature per row: the CLS token (the vision tower and
//! `ResBlock::forward_cls`) and the EOS token (the text tower), plus the host-side EOS
//! position of a row of token ids. A leaf module: the towers and blocks import it, it imports
//! none of them.

use crate::layers::Float;
use dfdx::prelude::*;

/// Index of the EOS token: the first position holding the largest id (EOT 49407 is the
/// largest id in CLIP's vocabulary), as OpenAI's `text.argmax(dim=-1)`.
pub fn eos_index(ids: &[u32]) -> usize {
    let mut best = 0;
    for (i, &t) in ids.iter().enumerate() {
        if t > ids[best] {
            best = i;
        }
    }
    best
}

/// The EOS token of each row: tokens [B, S, EMBED], positions [B] → [B, EMBED].
///
/// To use both the tokens and the pooled feature in one loss, call it on
/// `tokens.with_empty_tape()` and keep `tokens` (it carries the tape).
pub fn eos_token<B: Dim, S: Dim, const EMBED: usize, E: Float, D: Device<E>, T: Tape<E, D>>(
    tokens: Tensor<(B, S, Const<EMBED>), E, D, T>,
    eos: Tensor<(B,), usize, D>,
) -> Tensor<(B, Const<EMBED>), E, D, T> {
    tokens.select(eos)
}

/// The CLS token of a token map: [B, S, EMBED] → [B, EMBED].
///
/// Implemented with a batched `select` of position 0, whose backward *adds* into the token
/// gradient. (dfdx 0.13's CPU `slice` backward overwrites the source gradient instead of adding,
/// which silently drops any other gradient reaching token 0 — e.g. the MTP decoder's.)
/// To use both the tokens and the CLS feature in one loss, call it on
/// `tokens.with_empty_tape()` and keep `tokens` (it carries the tape).
pub fn cls_token<B: Dim, S: Dim, const EMBED: usize, E: Float, D: Device<E>, T: Tape<E, D>>(
    tokens: Tensor<(B, S, Const<EMBED>), E, D, T>,
) -> Tensor<(B, Const<EMBED>), E, D, T> {
    let b = tokens.shape().0;
    let zeros: Tensor<(B,), usize, D> = tokens.device().tensor_from_vec(vec![0; b.size()], (b,));
    tokens.select(zeros)
}
