//! Reading an evaluation split from a packed dataset (a `gadms pack` output): the queries
//! (every caption) and the gallery (every distinct image), each with its person id, and the
//! decoding of gallery images (test transform) for the image tower.

use anyhow::{Result, bail};
use gadms_data::TokenIds;
use gadms_data::augment::{decode_rgb8, test_transform};
use gadms_data::manifest::Dataset;
use rayon::prelude::*;
use std::collections::HashSet;

/// A packed split's queries and gallery, without pixels: each distinct image once (by
/// `image_id`, its first sample), every caption as a query, in dataset order.
#[derive(Clone, Debug, Default)]
pub struct Split {
    /// (shard, index) of each gallery image's sample.
    pub images: Vec<(usize, usize)>,
    /// Person id of each gallery image.
    pub image_pid: Vec<u64>,
    /// Token ids of every caption.
    pub tokens: Vec<TokenIds>,
    /// Person id of every caption.
    pub caption_pid: Vec<u64>,
}

/// Reads the index of a packed split (no image is decoded). With `max_ids`, only the samples
/// of the first `max_ids` distinct pids (in dataset order) are read (a probe of a large
/// training set). Samples the dataset leaves out ([`Dataset::skip_damaged`], `--skip-corrupt`)
/// are neither queries nor gallery images. Errors if no sample is left.
pub fn read_split(ds: &Dataset, max_ids: Option<usize>) -> Result<Split> {
    let mut sp = Split::default();
    let mut pids: HashSet<u64> = HashSet::new();
    let mut seen: HashSet<u64> = HashSet::new();
    for (si, shard) in ds.shards.iter().enumerate() {
        for i in 0..shard.len() {
            if ds.is_skipped_at(si, i) {
                continue;
            }
            if let Some(m) = max_ids {
                let pid = shard.pid(i)?;
                if !pids.contains(&pid) {
                    if pids.len() >= m {
                        continue;
                    }
                    pids.insert(pid);
                }
            }
            let s = shard.sample(i)?;
            if seen.insert(s.image_id) {
                sp.images.push((si, i));
                sp.image_pid.push(s.pid);
            }
            sp.tokens.push(s.ids);
            sp.caption_pid.push(s.pid);
        }
    }
    if sp.images.is_empty() {
        bail!("{}: no samples to evaluate on", ds.dir.display());
    }
    Ok(sp)
}

/// Decodes the images of the samples `images` ((shard, index) pairs) in parallel, resized
/// (bilinear) to `h`×`w` when packed at another size and test-transformed (CLIP
/// normalisation): `images.len() × [3, h, w]` floats, in order.
pub fn decode_images(
    ds: &Dataset,
    images: &[(usize, usize)],
    h: usize,
    w: usize,
) -> Result<Vec<f32>> {
    let px: Vec<Vec<f32>> = images
        .par_iter()
        .map(|&(si, i)| {
            let shard = &ds.shards[si];
            let s = shard.sample(i)?;
            let rgb = decode_rgb8(s.image, h, w).map_err(|msg| {
                anyhow::anyhow!(
                    "{} sample {i}: cannot decode the image ({msg})",
                    shard.path().display()
                )
            })?;
            let mut out = vec![0.0; 3 * h * w];
            test_transform(&rgb, h, w, &mut out);
            Ok(out)
        })
        .collect::<Result<_>>()?;
    Ok(px.concat())
}
