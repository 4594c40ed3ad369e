//! The choice-valued flags of `gadms pretrain` (`--objective`, `--pids`, `--gass-norm`) and the
//! defaults of its other flags.

use gadms_nn::gass::GassNorm;
use serde::{Deserialize, Serialize};

/// `--pids`: which identities SDM's matching distribution uses (docs/method.md §5.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum PidMode {
    /// Every caption is its own identity (`pid = sample index`; GA-DMS pretraining: q = I).
    #[serde(rename = "caption")]
    Caption,
    /// The dataset's person ids (IRRA fine-tuning; more positives per batch).
    #[serde(rename = "identity")]
    Identity,
}

impl std::str::FromStr for PidMode {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "caption" => Ok(PidMode::Caption),
            "identity" | "person" => Ok(PidMode::Identity),
            _ => Err(format!("unknown pid mode '{s}': use caption or identity")),
        }
    }
}

/// `--objective`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Objective {
    /// CLIP towers, SDM loss only.
    #[serde(rename = "sdm")]
    Sdm,
    /// Full GA-DMS: GASS, dual masking, SDM + β·MTP.
    #[serde(rename = "ga-dms")]
    GaDms,
}

impl std::str::FromStr for Objective {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "sdm" => Ok(Objective::Sdm),
            "ga-dms" | "gadms" | "ga_dms" => Ok(Objective::GaDms),
            _ => Err(format!("unknown objective '{s}': use sdm or ga-dms")),
        }
    }
}

/// `--gass-norm`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum GassNormArg {
    /// [`GassNorm::Paper`].
    #[serde(rename = "paper")]
    Paper,
    /// [`GassNorm::Official`].
    #[serde(rename = "official")]
    Official,
}

impl std::str::FromStr for GassNormArg {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "paper" => Ok(GassNormArg::Paper),
            "official" => Ok(GassNormArg::Official),
            _ => Err(format!(
                "unknown GASS normalisation '{s}': use paper or official"
            )),
        }
    }
}

impl From<GassNormArg> for GassNorm {
    fn from(n: GassNormArg) -> GassNorm {
        match n {
            GassNormArg::Paper => GassNorm::Paper,
            GassNormArg::Official => GassNorm::Official,
        }
    }
}

/// Default `--epochs`.
pub const DEFAULT_EPOCHS: usize = 24;
/// Default `--batch-size`.
pub const DEFAULT_BATCH: usize = 32;
/// Default `--lr`.
pub const DEFAULT_LR: f64 = 1e-3;
/// Default `--out`.
pub const DEFAULT_OUT: &str = "runs/pretrain-tiny";
/// Default `--aug-flip`.
pub const DEFAULT_AUG_FLIP: f64 = 0.5;
/// Default `--aug-pad`.
pub const DEFAULT_AUG_PAD: usize = 1;
/// Default `--aug-erase`.
pub const DEFAULT_AUG_ERASE: f64 = 0.0;
/// Default `--beta`.
pub const DEFAULT_BETA: f64 = 0.4;
/// Default `--gass-layers`.
pub const DEFAULT_GASS_LAYERS: usize = 8;
/// Default `--alpha-n`.
pub const DEFAULT_ALPHA_N: f64 = 0.2;
/// Default `--alpha-i`.
pub const DEFAULT_ALPHA_I: f64 = 0.3;
/// Default `--mask-lambda`.
pub const DEFAULT_MASK_LAMBDA: f64 = 20.0;
