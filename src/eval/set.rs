//! An evaluation set: the gallery images, the query captions and their person ids.

use super::split::{Split, decode_images, read_split};
use anyhow::Result;
use gadms_data::TokenIds;
use gadms_data::manifest::Dataset;
use std::collections::HashSet;
use std::sync::Arc;

/// Where the gallery's pixels come from.
#[derive(Clone)]
pub enum Gallery {
    /// Decoded once and held: `n_images × [3, H, W]` CLIP-normalised floats (training
    /// evaluates the same set every epoch).
    Decoded(Vec<f32>),
    /// Decoded from the packed split one batch at a time, so memory holds one batch of pixels,
    /// not the whole gallery (`gadms eval` on a large test split).
    Packed {
        /// The packed split.
        ds: Arc<Dataset>,
        /// (shard, index) of each gallery image's sample.
        images: Vec<(usize, usize)>,
    },
}

impl Default for Gallery {
    fn default() -> Self {
        Gallery::Decoded(Vec::new())
    }
}

impl std::fmt::Debug for Gallery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Gallery::Decoded(px) => write!(f, "Decoded({} floats)", px.len()),
            Gallery::Packed { ds, images } => {
                write!(f, "Packed({}, {} images)", ds.dir.display(), images.len())
            }
        }
    }
}

/// An evaluation split: the gallery (distinct images, test-transformed) and the queries
/// (captions), each with its person id.
#[derive(Clone, Debug, Default)]
pub struct EvalSet {
    /// Image height.
    pub height: usize,
    /// Image width.
    pub width: usize,
    /// The gallery's pixels.
    pub gallery: Gallery,
    /// Pid of every gallery image.
    pub image_pid: Vec<u64>,
    /// Token ids of every query caption.
    pub tokens: Vec<TokenIds>,
    /// Pid of every query caption.
    pub caption_pid: Vec<u64>,
}

impl EvalSet {
    /// Number of gallery images.
    pub fn n_images(&self) -> usize {
        self.image_pid.len()
    }
    /// Number of query captions.
    pub fn n_captions(&self) -> usize {
        self.caption_pid.len()
    }
    /// Number of distinct pids of the gallery.
    pub fn n_ids(&self) -> usize {
        self.image_pid.iter().collect::<HashSet<_>>().len()
    }

    /// Reads a packed split and decodes its gallery into memory: every caption is a query; the
    /// gallery holds each distinct `image_id` once (its first sample's image, test transform).
    /// With `max_ids`, only the samples of the first `max_ids` distinct pids (in dataset
    /// order) are used (a probe of a large training set).
    pub fn from_dataset(ds: &Dataset, max_ids: Option<usize>) -> Result<EvalSet> {
        let c = &ds.manifest.config;
        Self::from_dataset_at(ds, max_ids, c.image_h as usize, c.image_w as usize)
    }

    /// [`EvalSet::from_dataset`] with the images resized (bilinear) to `h`×`w` when the
    /// dataset was packed at another size.
    pub fn from_dataset_at(
        ds: &Dataset,
        max_ids: Option<usize>,
        h: usize,
        w: usize,
    ) -> Result<EvalSet> {
        let sp = read_split(ds, max_ids)?;
        let pixels = decode_images(ds, &sp.images, h, w)?;
        Ok(Self::with_gallery(sp, h, w, Gallery::Decoded(pixels)))
    }

    /// The whole packed split with its gallery decoded one batch at a time while encoding
    /// (resized to `h`×`w` when packed at another size).
    pub fn streamed(ds: Arc<Dataset>, h: usize, w: usize) -> Result<EvalSet> {
        let mut sp = read_split(&ds, None)?;
        let images = std::mem::take(&mut sp.images);
        Ok(Self::with_gallery(sp, h, w, Gallery::Packed { ds, images }))
    }

    fn with_gallery(sp: Split, height: usize, width: usize, gallery: Gallery) -> EvalSet {
        EvalSet {
            height,
            width,
            gallery,
            image_pid: sp.image_pid,
            tokens: sp.tokens,
            caption_pid: sp.caption_pid,
        }
    }

    /// The CLIP-normalised pixels of gallery images `start..end`, `(end − start) × [3, H, W]`.
    pub fn pixels(&self, start: usize, end: usize) -> Result<Vec<f32>> {
        let px = 3 * self.height * self.width;
        match &self.gallery {
            Gallery::Decoded(p) => Ok(p[start * px..end * px].to_vec()),
            Gallery::Packed { ds, images } => {
                decode_images(ds, &images[start..end], self.height, self.width)
            }
        }
    }
}
