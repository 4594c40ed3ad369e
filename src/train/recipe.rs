//! What a way of training gives the loop ([`super::run`]): its step and its files.
//!
//! The three recipes are [`super::sdm::SdmRecipe`] (CLIP towers, SDM loss),
//! [`super::gadms::GaDmsRecipe`] (GASS → dual masks → SDM + β·MTP) and
//! [`super::irra::IrraRecipe`] (fine-tuning: SDM + ID + MLM). Everything else (learning
//! rate, batches, NaN stop, logging, evaluation, best/last files, checkpoints, resume) is the
//! loop's.

use anyhow::Result;
use dfdx::nn::BuildModule;
use dfdx::nn::tensor_collection::TensorCollection;
use dfdx::prelude::*;
use gadms_data::loader::Batch;
use gadms_data::manifest::Dataset;
use gadms_nn::{ClipInference, GaDms, HasClipSpec};
use std::path::{Path, PathBuf};

/// What one step reports.
#[derive(Clone, Debug)]
pub struct StepOut {
    /// The total loss before the update. Not finite: nothing was updated and the run stops.
    pub loss: f32,
    /// The loss terms, by name (`sdm`, `mtp`, `id`, `mlm`), logged as `loss_NAME`.
    pub parts: Vec<(&'static str, f32)>,
    /// Masked tokens of the MTP / MLM branch, when the recipe has one.
    pub masked_tokens: Option<usize>,
    /// Global gradient norm before the update, when the recipe measures it.
    pub grad_norm: Option<f32>,
}

/// A way of training a model whose CLIP towers are `Self::Clip`.
pub trait Recipe<D: Device<f32>> {
    /// The CLIP towers (what is evaluated and saved as `last.safetensors` / `best.safetensors`).
    type Clip: ClipInference<f32, D> + HasClipSpec + TensorCollection<f32, D>;

    /// The CLIP towers.
    fn clip(&self) -> &Self::Clip;

    /// One optimiser step on `batch` at learning rate `lr`. A non-finite loss changes
    /// nothing (model, optimiser and recipe state are kept) and is reported in
    /// [`StepOut::loss`].
    fn step(&mut self, batch: Batch, lr: f64) -> Result<StepOut>;

    /// Writes what resumes the recipe exactly (model, optimiser, recipe state) into the fresh
    /// checkpoint directory `dir` ([`super::run_dir::save_checkpoint`]).
    fn save_checkpoint(&self, dir: &Path) -> Result<()>;

    /// Restores what [`Recipe::save_checkpoint`] wrote.
    fn load_checkpoint(&mut self, dir: &Path) -> Result<()>;

    /// Writes the run's final files into the run directory `out` (at least
    /// `last.safetensors`); returns their paths.
    fn save_final(&self, out: &Path) -> Result<Vec<PathBuf>>;

    /// What the recipe's own state says about the run, printed at its end (GA-DMS: how the
    /// score table moved over the training captions `data`); `None` by default.
    fn report(&self, data: &Dataset) -> Result<Option<String>> {
        let _ = data;
        Ok(None)
    }
}

/// A GA-DMS model (CLIP + MTP decoder) split into its parts.
pub trait ModelParts<D: Device<f32>> {
    /// The CLIP towers.
    type Clip: ClipInference<f32, D>
        + HasClipSpec
        + BuildModule<D, f32>
        + TensorCollection<f32, D>
        + 'static;
    /// The MTP decoder.
    type Mtp: TensorCollection<f32, D> + 'static;

    /// The CLIP part.
    fn clip(&self) -> &Self::Clip;

    /// Both parts, mutably (for `--init`).
    fn parts_mut(&mut self) -> (&mut Self::Clip, &mut Self::Mtp);
}

impl<D: Device<f32>, C, M> ModelParts<D> for GaDms<C, M>
where
    C: ClipInference<f32, D> + HasClipSpec + BuildModule<D, f32> + TensorCollection<f32, D>,
    C: 'static,
    M: TensorCollection<f32, D> + 'static,
{
    type Clip = C;
    type Mtp = M;

    fn clip(&self) -> &C {
        &self.clip
    }

    fn parts_mut(&mut self) -> (&mut C, &mut M) {
        (&mut self.clip, &mut self.mtp)
    }
}
