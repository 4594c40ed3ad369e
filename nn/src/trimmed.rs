//! Text features on the trimmed context: the text tower run on the first `max EOS + 1`
//! positions of a batch only.

use crate::{Float, TextTower, eos_index};
use dfdx::prelude::*;

/// Text features (projected EOS tokens) [B, EMBED] computed on the first `max EOS + 1`
/// positions of `rows` [B, CTX] only.
///
/// Exactly equal to `eos_token(text.forward(ids), eos)` (the full 77-token forward) because
/// the attention is causal and LayerNorm/projection act per token: nothing after a row's EOS
/// can reach it. Captions are about 20–35 tokens, so this runs the text tower on a third of
/// the context (the training step's largest cost).
pub fn text_features_trimmed<
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
    T: Tape<E, D>,
>(
    text: &TextTower<VOCAB, CTX, W, H, HD, F, L, EMBED, E, D>,
    dev: &D,
    rows: &[[u32; CTX]],
    tape: T,
) -> Tensor<(usize, Const<EMBED>), E, D, T> {
    let b = rows.len();
    let eos: Vec<usize> = rows.iter().map(|r| eos_index(r)).collect();
    let len = eos.iter().copied().max().unwrap_or(0) + 1;
    let flat: Vec<usize> = rows
        .iter()
        .flat_map(|r| r[..len].iter().map(|&t| t as usize))
        .collect();
    let ids = dev.tensor_from_vec(flat, (b, len));
    let x = text.token_embedding.forward(ids.put_tape(tape));
    let shape = *x.shape();
    // `gather` (not `slice`): dfdx 0.13's CPU slice backward overwrites instead of adding.
    let rows_idx = dev.tensor_from_vec((0..len).collect::<Vec<usize>>(), (len,));
    let pos = text
        .positional_embedding
        .retaped::<T>()
        .gather(rows_idx)
        .broadcast_like::<_, Axis<0>>(&shape);
    let x = x + pos;
    let mask: Tensor<(usize, usize), E, D> = dev.upper_tri_like(&(len, len), E::neg_infinity(), 1);
    let x = text.transformer.forward(x, Some(&mask), None);
    let pooled = x.select(dev.tensor_from_vec(eos, (b,)));
    text.ln_final
        .forward2(pooled)
        .matmul(text.text_projection.retaped::<T>())
}
