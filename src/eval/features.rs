//! Encoding with a model: image CLS and caption EOS features, L2-normalised (IRRA normalises
//! the features before the cosine similarity, docs/method.md §7).

use super::rank::similarity_par;
use super::set::EvalSet;
use anyhow::{Result, bail};
use dfdx::prelude::Device;
use gadms_data::TokenIds;
use gadms_nn::ClipInference;
use std::ops::Range;

/// Divides each row of a flat [N, d] buffer by its L2 norm (`torch.nn.functional.normalize`:
/// the norm is clamped below at 1e-12, so an all-zero row stays zero). The one row
/// normalisation of gadms: evaluation, `gadms embed` and `gadms search` use it.
pub fn l2_normalize_rows(mut v: Vec<f32>, d: usize) -> Vec<f32> {
    for row in v.chunks_exact_mut(d) {
        let n = row.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
        row.iter_mut().for_each(|x| *x /= n);
    }
    v
}

/// Refuses NaN or ±Inf in a flat [N, d] embedding buffer: names the first bad row as
/// `{what} {index}` (e.g. "image 3", "caption 17") and how many rows are affected, instead of
/// letting NaN rank as the lowest score and give plausible-looking metrics.
pub fn check_finite_rows(v: &[f32], d: usize, what: &str) -> Result<()> {
    let bad: Vec<usize> = v
        .chunks_exact(d.max(1))
        .enumerate()
        .filter(|(_, r)| r.iter().any(|x| !x.is_finite()))
        .map(|(i, _)| i)
        .collect();
    if let Some(&first) = bad.first() {
        bail!(
            "the embedding of {what} {first} is not finite (NaN or Inf; {} of {} {what} embeddings \
             are): the model produces non-finite features (diverged or damaged weights?)",
            bad.len(),
            v.len() / d.max(1)
        );
    }
    Ok(())
}

/// Refuses NaN or ±Inf in a row-major [Q, G] similarity matrix, naming the first bad entry
/// (`{query} q` × `{gallery} g`).
pub fn check_finite_sims(sim: &[f32], g: usize, query: &str, gallery: &str) -> Result<()> {
    if let Some(i) = sim.iter().position(|x| !x.is_finite()) {
        let n = sim.iter().filter(|x| !x.is_finite()).count();
        bail!(
            "the similarity of {query} {} and {gallery} {} is not finite ({n} entries are); \
             refusing to rank",
            i / g.max(1),
            i % g.max(1)
        );
    }
    Ok(())
}

thread_local! {
    static PROGRESS: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Runs `f` with a progress bar on stderr for each encoding it does ([`encode_images`],
/// [`encode_captions`]): the inference commands (`eval`, `embed`, `search`) do; the evaluations
/// inside a training run, which has its own progress line, do not. The bar shows only when
/// stderr is a terminal.
pub fn with_progress<R>(f: impl FnOnce() -> R) -> R {
    let old = PROGRESS.with(|c| c.replace(true));
    let out = f();
    PROGRESS.with(|c| c.set(old));
    out
}

/// A bar over `n` items (hidden outside [`with_progress`]).
fn progress_bar(n: usize, what: &str) -> indicatif::ProgressBar {
    if !PROGRESS.with(|c| c.get()) {
        return indicatif::ProgressBar::hidden();
    }
    let pb = indicatif::ProgressBar::new(n as u64);
    if let Ok(style) = indicatif::ProgressStyle::with_template(
        "{msg} {bar:30} {pos}/{len} [{elapsed_precise} < {eta}] {per_sec}",
    ) {
        pb.set_style(style);
    }
    pb.set_message(format!("encoding {what}"));
    pb
}

/// Image features of `n` images, `batch` per forward pass, L2-normalised [n, D]: `pixels(r)`
/// gives the CLIP-normalised pixels of images `r` (`r.len() × [3, H, W]`).
pub fn encode_images<D, M>(
    model: &M,
    n: usize,
    batch: usize,
    mut pixels: impl FnMut(Range<usize>) -> Result<Vec<f32>>,
) -> Result<Vec<f32>>
where
    D: Device<f32>,
    M: ClipInference<f32, D>,
{
    let d = model.spec().embed();
    let batch = batch.max(1);
    let mut out = Vec::with_capacity(n * d);
    let pb = progress_bar(n, "images");
    for start in (0..n).step_by(batch) {
        let end = (start + batch).min(n);
        out.extend(model.image_features(pixels(start..end)?, end - start));
        pb.inc((end - start) as u64);
    }
    pb.finish_and_clear();
    Ok(l2_normalize_rows(out, d))
}

/// Text features (EOS) of `captions`, `batch` per forward pass, L2-normalised [n, D].
pub fn encode_captions<D, M>(model: &M, captions: &[TokenIds], batch: usize) -> Vec<f32>
where
    D: Device<f32>,
    M: ClipInference<f32, D>,
{
    let d = model.spec().embed();
    let mut out = Vec::with_capacity(captions.len() * d);
    let pb = progress_bar(captions.len(), "captions");
    for chunk in captions.chunks(batch.max(1)) {
        out.extend(model.text_features(chunk.as_flattened(), chunk.len()));
        pb.inc(chunk.len() as u64);
    }
    pb.finish_and_clear();
    l2_normalize_rows(out, d)
}

/// The L2-normalised features of an evaluation set.
#[derive(Clone, Debug, Default)]
pub struct Features {
    /// Caption (query) features [n_captions, dim].
    pub text: Vec<f32>,
    /// Gallery image features [n_images, dim].
    pub image: Vec<f32>,
    /// Feature width (the model's embedding size).
    pub dim: usize,
}

impl Features {
    /// Text→image cosine similarities [n_captions, n_images], checked finite.
    pub fn text_to_image(&self) -> Result<Vec<f32>> {
        let s = similarity_par(&self.text, &self.image, self.dim);
        check_finite_sims(&s, self.image.len() / self.dim.max(1), "caption", "image")?;
        Ok(s)
    }
    /// Image→text cosine similarities [n_images, n_captions], checked finite.
    pub fn image_to_text(&self) -> Result<Vec<f32>> {
        let s = similarity_par(&self.image, &self.text, self.dim);
        check_finite_sims(&s, self.text.len() / self.dim.max(1), "image", "caption")?;
        Ok(s)
    }
}

/// Encodes `set` with `model`, `batch` images or captions per forward pass: the gallery's
/// image CLS features and the queries' EOS features, both L2-normalised. A non-finite
/// embedding is an error naming the image or caption index ([`check_finite_rows`]).
pub fn encode_set<D, M>(model: &M, set: &EvalSet, batch: usize) -> Result<Features>
where
    D: Device<f32>,
    M: ClipInference<f32, D>,
{
    let image = encode_images(model, set.n_images(), batch, |r| set.pixels(r.start, r.end))?;
    let d = model.spec().embed();
    check_finite_rows(&image, d, "image")?;
    let text = encode_captions(model, &set.tokens, batch);
    check_finite_rows(&text, d, "caption")?;
    Ok(Features {
        text,
        image,
        dim: model.spec().embed(),
    })
}
