//! Text→image retrieval metrics (shared/ga-dms-method.md §7.2, IRRA `utils/metrics.py rank()`)
//! and the zero-shot evaluation of a model on a packed split.

use crate::rank::{rank_metrics, similarity_par};
use anyhow::{Context, Result, bail};
use dfdx::prelude::Device;
use gadms_data::TokenIds;
use gadms_data::augment::{decode_rgb8, test_transform};
use gadms_data::manifest::Dataset;
use gadms_nn::ClipInference;
use std::collections::HashSet;

/// R@1/5/10, mAP and mINP, all × 100, over the queries.
#[derive(Clone, Copy, Debug, Default, PartialEq, serde::Serialize)]
pub struct Metrics {
    /// Recall at 1.
    pub r1: f64,
    /// Recall at 5.
    pub r5: f64,
    /// Recall at 10.
    pub r10: f64,
    /// Mean average precision.
    pub map: f64,
    /// Mean inverse negative penalty.
    pub minp: f64,
    /// Expected R@1 of a random ranking: mean over queries of (#relevant / #gallery) × 100.
    pub chance_r1: f64,
    /// Number of queries.
    pub queries: usize,
    /// Gallery size.
    pub gallery: usize,
}

/// Retrieval metrics of a similarity matrix `sim` [Q, G] (row-major): query q ranks the whole
/// gallery by descending similarity, **ties broken by ascending gallery index** (a stable
/// sort; IRRA's `torch.argsort` leaves tie order unspecified). A gallery item is relevant iff
/// its id equals the query's id. NaN scores rank last.
///
/// ```text
/// hit[k] = gid[order[k]] == qid        cmc@K = any(hit[..K])
/// AP  = (1/n_rel) Σ_{k: hit[k]} (#hits in 0..=k)/(k+1)
/// INP = n_rel / (k_last + 1),  k_last = 0-based rank of the last relevant item
/// ```
///
/// Computed by counting, threaded ([`crate::rank::rank_metrics`]). Errors if the sizes
/// disagree, the gallery is empty, or a query has no relevant item.
pub fn retrieval_metrics(
    sim: &[f32],
    query_ids: &[usize],
    gallery_ids: &[usize],
) -> Result<Metrics, String> {
    let q: Vec<u64> = query_ids.iter().map(|&x| x as u64).collect();
    let g: Vec<u64> = gallery_ids.iter().map(|&x| x as u64).collect();
    let m = rank_metrics(sim, &q, &g).map_err(|e| e.to_string())?;
    Ok(Metrics {
        r1: m.r1,
        r5: m.r5,
        r10: m.r10,
        map: m.map,
        minp: m.minp,
        chance_r1: m.chance_r1,
        queries: m.queries,
        gallery: m.gallery,
    })
}

/// L2-normalises each row of a row-major [n, d] buffer in place (IRRA normalises the features
/// before the cosine similarity; an all-zero row stays zero).
pub fn normalize_rows(x: &mut [f32], d: usize) {
    for row in x.chunks_exact_mut(d) {
        let n = row.iter().map(|v| v * v).sum::<f32>().sqrt();
        if n > 0.0 {
            row.iter_mut().for_each(|v| *v /= n);
        }
    }
}

/// `a` [n, d] · `b` [m, d]ᵀ → [n, m].
pub fn similarity(a: &[f32], b: &[f32], d: usize) -> Vec<f32> {
    similarity_par(a, b, d)
}

/// An evaluation split in memory: the gallery (distinct images, test-transformed) and the
/// queries (captions), each with its pid.
#[derive(Clone, Debug, Default)]
pub struct EvalSet {
    /// Image height.
    pub height: usize,
    /// Image width.
    pub width: usize,
    /// CLIP-normalised gallery images, `n_images × [3, H, W]` flattened.
    pub pixels: Vec<f32>,
    /// Pid of every gallery image.
    pub image_pid: Vec<usize>,
    /// Token ids of every query caption.
    pub tokens: Vec<TokenIds>,
    /// Pid of every query caption.
    pub caption_pid: Vec<usize>,
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
    /// Number of distinct pids.
    pub fn n_ids(&self) -> usize {
        self.image_pid.iter().collect::<HashSet<_>>().len()
    }

    /// Reads a packed split: every caption is a query; the gallery holds each distinct
    /// `image_id` once (its first sample's image, test transform). With `max_ids`, only the
    /// samples of the first `max_ids` distinct pids (in dataset order) are used (a probe of a
    /// large training set).
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
        let px = 3 * h * w;
        let mut set = EvalSet {
            height: h,
            width: w,
            ..EvalSet::default()
        };
        let mut pids: HashSet<u64> = HashSet::new();
        let mut images: HashSet<u64> = HashSet::new();
        for shard in &ds.shards {
            for i in 0..shard.len() {
                let pid = shard.pid(i)?;
                if !pids.contains(&pid) {
                    if max_ids.is_some_and(|m| pids.len() >= m) {
                        continue;
                    }
                    pids.insert(pid);
                }
                let s = shard.sample(i)?;
                let pid = usize::try_from(pid).context("pid does not fit in usize")?;
                if images.insert(s.image_id) {
                    let rgb = decode_rgb8(s.image, h, w).map_err(|m| {
                        anyhow::anyhow!(
                            "{} sample {i}: cannot decode the image ({m})",
                            shard.path().display()
                        )
                    })?;
                    let start = set.pixels.len();
                    set.pixels.resize(start + px, 0.0);
                    test_transform(&rgb, h, w, &mut set.pixels[start..]);
                    set.image_pid.push(pid);
                }
                set.tokens.push(s.ids);
                set.caption_pid.push(pid);
            }
        }
        if set.n_images() == 0 {
            bail!("{}: no samples to evaluate on", ds.dir.display());
        }
        Ok(set)
    }
}

/// Encodes `set`: (text EOS features [n_captions, D], image CLS features [n_images, D]), both
/// L2-normalised, `batch` items per forward pass.
pub fn encode_set<D: Device<f32>, M: ClipInference<f32, D>>(
    model: &M,
    set: &EvalSet,
    batch: usize,
) -> (Vec<f32>, Vec<f32>) {
    let d = model.spec().embed();
    let batch = batch.max(1);
    let px = 3 * set.height * set.width;
    let mut img = Vec::with_capacity(set.n_images() * d);
    for start in (0..set.n_images()).step_by(batch) {
        let end = (start + batch).min(set.n_images());
        let pixels = set.pixels[start * px..end * px].to_vec();
        img.extend(model.image_features(pixels, end - start));
    }
    let mut txt = Vec::with_capacity(set.n_captions() * d);
    for start in (0..set.n_captions()).step_by(batch) {
        let end = (start + batch).min(set.n_captions());
        let ids: Vec<u32> = set.tokens[start..end].iter().flatten().copied().collect();
        txt.extend(model.text_features(&ids, end - start));
    }
    normalize_rows(&mut img, d);
    normalize_rows(&mut txt, d);
    (txt, img)
}

/// Zero-shot text→image retrieval on `set`: queries = captions (EOS features), gallery =
/// images (CLS features), relevant = same pid.
pub fn evaluate<D: Device<f32>, M: ClipInference<f32, D>>(
    model: &M,
    set: &EvalSet,
    batch: usize,
) -> Result<Metrics, String> {
    let d = model.spec().embed();
    let (txt, img) = encode_set(model, set, batch);
    let sim = similarity(&txt, &img, d);
    retrieval_metrics(&sim, &set.caption_pid, &set.image_pid)
}
