//! Image decoding and CLIP preprocessing for inference: decode, convert to RGB, resize to the
//! model's input size with bilinear filtering, scale to [0, 1] and normalise with the CLIP
//! mean/std (torchvision `Resize((H, W))` + `ToTensor` + `Normalize`, IRRA's test transform).

use image::imageops::FilterType;
use std::path::{Path, PathBuf};

/// CLIP normalisation mean (RGB).
pub const CLIP_MEAN: [f32; 3] = [0.481_454_66, 0.457_827_5, 0.408_210_73];
/// CLIP normalisation std (RGB), written as OpenAI's CLIP and open_clip write it (the f32
/// value is the same with fewer digits).
#[allow(clippy::excessive_precision)]
pub const CLIP_STD: [f32; 3] = [0.268_629_54, 0.261_302_58, 0.275_777_11];

/// An image that could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// Missing or unreadable file.
    #[error("{path}: cannot read image")]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// Not a decodable image.
    #[error("{path}: not a readable image ({msg}); JPEG and PNG are supported")]
    Decode {
        /// The file.
        path: PathBuf,
        /// The decoder's message.
        msg: String,
    },
}

/// Decodes an image file and returns it CLIP-normalised as [3, height, width] (row-major).
pub fn load_normalized(path: &Path, height: usize, width: usize) -> Result<Vec<f32>, ImageError> {
    let bytes = std::fs::read(path).map_err(|source| ImageError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    decode_normalized(&bytes, height, width).map_err(|msg| ImageError::Decode {
        path: path.to_path_buf(),
        msg,
    })
}

/// Decodes encoded image bytes and returns them CLIP-normalised as [3, height, width].
pub fn decode_normalized(bytes: &[u8], height: usize, width: usize) -> Result<Vec<f32>, String> {
    let img = image::load_from_memory(bytes).map_err(|e| e.to_string())?;
    let rgb = img.to_rgb8();
    let rgb = if rgb.dimensions() == (width as u32, height as u32) {
        rgb
    } else {
        image::imageops::resize(&rgb, width as u32, height as u32, FilterType::Triangle)
    };
    Ok(normalize_rgb8(rgb.as_raw(), height, width))
}

/// Interleaved RGB8 [height, width, 3] → normalised planar [3, height, width].
pub fn normalize_rgb8(raw: &[u8], height: usize, width: usize) -> Vec<f32> {
    let n = height * width;
    let mut out = vec![0.0f32; 3 * n];
    for (i, px) in raw.chunks_exact(3).enumerate() {
        for c in 0..3 {
            out[c * n + i] = (px[c] as f32 / 255.0 - CLIP_MEAN[c]) / CLIP_STD[c];
        }
    }
    out
}
