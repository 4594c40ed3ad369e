//! Image augmentation (docs/method.md §6.3, IRRA/GA-DMS `build_transforms` with `--img_aug`):
//!
//! train: `Resize((H, W))` → `RandomHorizontalFlip(0.5)` → `Pad(10)` (zeros) →
//! `RandomCrop((H, W))` → `ToTensor` → `Normalize(CLIP mean, std)` →
//! `RandomErasing(p=0.5, scale=(0.02, 0.4), ratio=(0.3, 3.3), value=mean)`;
//! test: `Resize` → `ToTensor` → `Normalize`.
//!
//! **Quirk reproduced (§6.3):** the erasing fill is the *raw* CLIP mean triple
//! (0.481, 0.458, 0.408) written into the already-normalised tensor, not the normalised mean
//! (which would be 0).
//!
//! Written for speed: shards store images already at the target size, so resize is skipped
//! unless sizes differ; flip + pad + crop are one source-coordinate mapping; the u8 → f32
//! conversion and normalisation go through a 3 × 256 lookup table in a single pass over
//! interleaved RGB8 rows into a planar `[3, H, W]` output slice supplied by the caller (a slot
//! of the batch tensor), and the erasing rectangle, whose parameters do not depend on pixel
//! values, is drawn first and written during the same pass. No per-pixel allocation.
//!
//! Random draws, in this order, from the sample's [`SampleRng`]: flip, crop top, crop left,
//! erase coin, then per erase attempt area fraction, log-ratio (and on success top, left).

use crate::image_prep::{CLIP_MEAN, CLIP_STD};
use crate::masking::SampleRng;
use image::imageops::FilterType;

/// The augmentation constants (§6.3); [`Default`] gives the IRRA/GA-DMS values.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct AugmentConfig {
    /// Horizontal flip probability (0.5).
    pub flip_p: f64,
    /// Zero padding on each side before the random crop (10 px).
    pub pad: usize,
    /// Random erasing probability (0.5).
    pub erase_p: f64,
    /// Erased area fraction range (0.02, 0.4).
    pub erase_scale: (f64, f64),
    /// Erased aspect ratio range (0.3, 3.3), sampled log-uniformly.
    pub erase_ratio: (f64, f64),
    /// Erasing fill per channel, written into the normalised tensor: the raw CLIP mean (quirk).
    pub erase_value: [f32; 3],
}

impl Default for AugmentConfig {
    fn default() -> Self {
        AugmentConfig {
            flip_p: 0.5,
            pad: 10,
            erase_p: 0.5,
            erase_scale: (0.02, 0.4),
            erase_ratio: (0.3, 3.3),
            erase_value: CLIP_MEAN,
        }
    }
}

/// A rectangle of the output image (rows `top..top+h`, columns `left..left+w`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rect {
    /// First row.
    pub top: usize,
    /// First column.
    pub left: usize,
    /// Rows.
    pub h: usize,
    /// Columns.
    pub w: usize,
}

/// The random choices of one training transform.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AugmentParams {
    /// Mirror left–right.
    pub flip: bool,
    /// Crop offset in the padded image, rows (0 ..= 2·pad).
    pub crop_top: usize,
    /// Crop offset in the padded image, columns (0 ..= 2·pad).
    pub crop_left: usize,
    /// Erased rectangle, if erasing fired and one of its 10 attempts fit.
    pub erase: Option<Rect>,
}

impl AugmentParams {
    /// The identity (test transform).
    pub fn identity(pad: usize) -> Self {
        AugmentParams {
            flip: false,
            crop_top: pad,
            crop_left: pad,
            erase: None,
        }
    }
}

/// torchvision `RandomErasing.get_params`: up to 10 attempts of area `U(scale)·H·W` and aspect
/// ratio `exp(U(log ratio))`, `h = round(sqrt(area·r))`, `w = round(sqrt(area/r))` (Python's
/// round: ties to even); accepted when `h < H and w < W`, then top/left uniform. `None` when no
/// attempt fits (torchvision then leaves the image unchanged).
pub fn sample_erase(h: usize, w: usize, cfg: &AugmentConfig, rng: &mut SampleRng) -> Option<Rect> {
    let area = (h * w) as f64;
    let (lr0, lr1) = (cfg.erase_ratio.0.ln(), cfg.erase_ratio.1.ln());
    for _ in 0..10 {
        let ea = area * rng.uniform(cfg.erase_scale.0, cfg.erase_scale.1);
        let ar = rng.uniform(lr0, lr1).exp();
        let eh = (ea * ar).sqrt().round_ties_even() as usize;
        let ew = (ea / ar).sqrt().round_ties_even() as usize;
        if !(eh < h && ew < w) {
            continue;
        }
        let top = rng.below((h - eh + 1) as u64) as usize;
        let left = rng.below((w - ew + 1) as u64) as usize;
        return Some(Rect {
            top,
            left,
            h: eh,
            w: ew,
        });
    }
    None
}

/// Draws the parameters of one training transform for an `h × w` output (§6.3).
pub fn sample_params(
    h: usize,
    w: usize,
    cfg: &AugmentConfig,
    rng: &mut SampleRng,
) -> AugmentParams {
    let flip = rng.chance(cfg.flip_p);
    let crop_top = rng.below(2 * cfg.pad as u64 + 1) as usize;
    let crop_left = rng.below(2 * cfg.pad as u64 + 1) as usize;
    let erase = if rng.chance(cfg.erase_p) {
        sample_erase(h, w, cfg, rng)
    } else {
        None
    };
    AugmentParams {
        flip,
        crop_top,
        crop_left,
        erase,
    }
}

/// `v / 255` normalised with the CLIP mean/std, per channel, for every byte value.
fn lut() -> &'static [[f32; 256]; 3] {
    static LUT: std::sync::OnceLock<[[f32; 256]; 3]> = std::sync::OnceLock::new();
    LUT.get_or_init(|| {
        let mut t = [[0f32; 256]; 3];
        for (c, row) in t.iter_mut().enumerate() {
            for (v, x) in row.iter_mut().enumerate() {
                *x = (v as f32 / 255.0 - CLIP_MEAN[c]) / CLIP_STD[c];
            }
        }
        t
    })
}

/// Applies flip + pad + crop + ToTensor + Normalize + erase with fixed `params` to an
/// interleaved RGB8 image `rgb` of `h × w` (already at the output size), writing planar
/// `[3, h, w]` into `out` (length `3·h·w`). Pixels that come from the zero padding get the
/// normalised value of black, `(0 − mean)/std`, as torchvision's `Pad` + `Normalize` do.
pub fn apply(
    rgb: &[u8],
    h: usize,
    w: usize,
    pad: usize,
    params: &AugmentParams,
    erase_value: [f32; 3],
    out: &mut [f32],
) {
    assert_eq!(rgb.len(), 3 * h * w, "rgb buffer is not {h}x{w}x3");
    assert_eq!(out.len(), 3 * h * w, "output slot is not 3x{h}x{w}");
    let t = lut();
    let n = h * w;
    let (r_plane, rest) = out.split_at_mut(n);
    let (g_plane, b_plane) = rest.split_at_mut(n);
    let black = [t[0][0], t[1][0], t[2][0]];
    // Output column x reads padded column x + crop_left, i.e. source column
    // sx = x + crop_left − pad of the (possibly flipped) image.
    let dx = params.crop_left as isize - pad as isize;
    let x_lo = (-dx).clamp(0, w as isize) as usize; // first x with sx >= 0
    let x_hi = (w as isize - dx).clamp(0, w as isize) as usize; // first x with sx >= w
    for y in 0..h {
        let sy = y as isize + params.crop_top as isize - pad as isize;
        let o = y * w;
        let (ro, go, bo) = (
            &mut r_plane[o..o + w],
            &mut g_plane[o..o + w],
            &mut b_plane[o..o + w],
        );
        if sy < 0 || sy >= h as isize || x_lo >= x_hi {
            ro.fill(black[0]);
            go.fill(black[1]);
            bo.fill(black[2]);
            continue;
        }
        let src = &rgb[sy as usize * w * 3..(sy as usize + 1) * w * 3];
        for x in (0..x_lo).chain(x_hi..w) {
            ro[x] = black[0];
            go[x] = black[1];
            bo[x] = black[2];
        }
        let (lr, lg, lb) = (&t[0], &t[1], &t[2]);
        if params.flip {
            for x in x_lo..x_hi {
                let sx = w - 1 - (x as isize + dx) as usize;
                let p = &src[sx * 3..sx * 3 + 3];
                ro[x] = lr[p[0] as usize];
                go[x] = lg[p[1] as usize];
                bo[x] = lb[p[2] as usize];
            }
        } else {
            let s0 = (x_lo as isize + dx) as usize;
            let px = src[s0 * 3..(s0 + x_hi - x_lo) * 3].chunks_exact(3);
            for (x, p) in (x_lo..x_hi).zip(px) {
                ro[x] = lr[p[0] as usize];
                go[x] = lg[p[1] as usize];
                bo[x] = lb[p[2] as usize];
            }
        }
    }
    if let Some(e) = params.erase {
        for (c, plane) in [r_plane, g_plane, b_plane].into_iter().enumerate() {
            for y in e.top..e.top + e.h {
                plane[y * w + e.left..y * w + e.left + e.w].fill(erase_value[c]);
            }
        }
    }
}

/// The §6.3 training transform on an interleaved RGB8 `h × w` image: draws
/// [`sample_params`] from `rng` and [`apply`]s them into `out` (`3·h·w` floats, planar).
/// Returns the parameters used.
pub fn train_transform(
    rgb: &[u8],
    h: usize,
    w: usize,
    cfg: &AugmentConfig,
    rng: &mut SampleRng,
    out: &mut [f32],
) -> AugmentParams {
    let p = sample_params(h, w, cfg, rng);
    apply(rgb, h, w, cfg.pad, &p, cfg.erase_value, out);
    p
}

/// The §6.3 test transform (ToTensor + Normalize) of an interleaved RGB8 `h × w` image into
/// `out` (`3·h·w` floats, planar). Equals `image_prep::normalize_rgb8` without allocating.
pub fn test_transform(rgb: &[u8], h: usize, w: usize, out: &mut [f32]) {
    apply(rgb, h, w, 0, &AugmentParams::identity(0), [0.0; 3], out);
}

/// Decodes JPEG/PNG bytes to interleaved RGB8 and resizes to `h × w` (bilinear, as
/// torchvision's `Resize`) only if the stored size differs — packed shards are already at the
/// target size (§6.3 step 1 is done once at pack time).
pub fn decode_rgb8(bytes: &[u8], h: usize, w: usize) -> Result<Vec<u8>, String> {
    let img = image::load_from_memory(bytes).map_err(|e| e.to_string())?;
    let rgb = img.into_rgb8();
    if rgb.dimensions() == (w as u32, h as u32) {
        Ok(rgb.into_raw())
    } else {
        Ok(image::imageops::resize(&rgb, w as u32, h as u32, FilterType::Triangle).into_raw())
    }
}
