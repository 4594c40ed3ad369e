//! Text→image retrieval evaluation (IRRA protocol, docs/method.md §7): one evaluation for the
//! training loops (`gadms pretrain`/`finetune` after each epoch) and `gadms eval`.
//!
//! * [`split`]: reading a split's queries and gallery from a packed dataset.
//! * [`set`]: an evaluation set ([`EvalSet`]): gallery pixels, captions, person ids.
//! * [`features`]: encoding a set with a model ([`encode_set`]), the row L2 normalisation.
//! * [`rank`]: similarity ([`similarity_par`]) and the metrics ([`rank_metrics`]: R1/R5/R10,
//!   mAP, mINP, ties by ascending gallery index).

pub mod features;
pub mod rank;
pub mod set;
pub mod split;

pub use features::{
    Features, check_finite_rows, check_finite_sims, encode_captions, encode_images, encode_set,
    l2_normalize_rows, with_progress,
};
pub use rank::{RankError, RankMetrics, rank_metrics, similarity_on, similarity_par};
pub use set::{EvalSet, Gallery};

use anyhow::Result;
use dfdx::prelude::Device;
use gadms_nn::ClipInference;

/// Zero-shot text→image retrieval on `set`: queries = captions (EOS features), gallery =
/// images (CLS features), relevant = same pid; `batch` items per forward pass.
pub fn evaluate<D, M>(model: &M, set: &EvalSet, batch: usize) -> Result<RankMetrics>
where
    D: Device<f32>,
    M: ClipInference<f32, D>,
{
    let sim = encode_set(model, set, batch)?.text_to_image()?;
    Ok(rank_metrics(&sim, &set.caption_pid, &set.image_pid)?)
}
