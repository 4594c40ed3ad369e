//! Bilinear resampling of a ViT positional-embedding grid (IRRA `resize_pos_embed`:
//! `F.interpolate(mode='bilinear', align_corners=False)`, the CLS row kept as is).

use crate::tensors::Array;

/// Source coordinate of output index `i` for PyTorch linear interpolation with
/// `align_corners=False`: `max(0, (i + 0.5)·in/out − 0.5)`, and its two neighbours + weight.
fn taps(i: usize, n_in: usize, n_out: usize) -> (usize, usize, f64) {
    let scale = n_in as f64 / n_out as f64;
    let src = ((i as f64 + 0.5) * scale - 0.5).max(0.0);
    let i0 = (src.floor() as usize).min(n_in - 1);
    let i1 = (i0 + 1).min(n_in - 1);
    (i0, i1, src - i0 as f64)
}

/// Resizes `pos` [1 + old_h·old_w, W] to [1 + new_h·new_w, W]; row 0 (CLS) is copied.
pub fn resize_pos_embed(pos: &Array, old: (usize, usize), new: (usize, usize)) -> Array {
    let w = pos.shape[1];
    assert_eq!(
        pos.shape[0],
        1 + old.0 * old.1,
        "resize_pos_embed: grid does not match rows"
    );
    let cell = |y: usize, x: usize, c: usize| pos.data[(1 + y * old.1 + x) * w + c] as f64;
    let mut out = Vec::with_capacity((1 + new.0 * new.1) * w);
    out.extend_from_slice(&pos.data[..w]);
    for oy in 0..new.0 {
        let (y0, y1, ly) = taps(oy, old.0, new.0);
        for ox in 0..new.1 {
            let (x0, x1, lx) = taps(ox, old.1, new.1);
            for c in 0..w {
                let top = cell(y0, x0, c) * (1.0 - lx) + cell(y0, x1, c) * lx;
                let bot = cell(y1, x0, c) * (1.0 - lx) + cell(y1, x1, c) * lx;
                out.push((top * (1.0 - ly) + bot * ly) as f32);
            }
        }
    }
    Array::new(vec![1 + new.0 * new.1, w], out)
}

/// The grid of a positional embedding with `rows` rows when nothing else is known: a square
/// (as in every released CLIP), else `None`.
pub fn square_grid(rows: usize) -> Option<(usize, usize)> {
    let n = rows.checked_sub(1)?;
    let s = (n as f64).sqrt().round() as usize;
    (s * s == n && s > 0).then_some((s, s))
}
