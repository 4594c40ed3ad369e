//! Errors of the checkpoint crate: each names the file and, where it applies, the key.

use std::path::PathBuf;

/// Everything that can go wrong reading, converting or writing weights.
#[derive(Debug, thiserror::Error)]
pub enum CkptError {
    /// The file could not be opened or read.
    #[error("{path}: cannot read weight file")]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The bytes are not a safetensors file.
    #[error(
        "{path}: not a valid safetensors file ({msg}); expected a .safetensors weight file or a \
         PyTorch (torch.save) .pt/.pth/.bin checkpoint"
    )]
    Format {
        /// The file.
        path: PathBuf,
        /// What the parser said.
        msg: String,
    },
    /// A PyTorch checkpoint that cannot be read or is refused (`crate::torch`).
    #[error("{path}: {msg}")]
    Torch {
        /// The file.
        path: PathBuf,
        /// What is wrong, and what to do.
        msg: String,
    },
    /// A tensor has a dtype we cannot read as floats.
    #[error(
        "{path}: key '{key}' has dtype {dtype}; only F32, F16, BF16 and F64 weights can be loaded"
    )]
    Dtype {
        /// The file.
        path: PathBuf,
        /// The tensor name.
        key: String,
        /// Its dtype.
        dtype: String,
    },
    /// The key set matches no known layout.
    #[error(
        "{path}: unknown weight layout ({detail}); expected OpenAI/open_clip CLIP keys \
         (visual.conv1.weight, token_embedding.weight, …) or Hugging Face CLIPModel keys \
         (text_model.…, vision_model.…)"
    )]
    UnknownLayout {
        /// The file.
        path: PathBuf,
        /// What was found.
        detail: String,
    },
    /// A key the model needs is absent.
    #[error("{path}: missing key '{key}' (expected shape {expected:?}); {hint}")]
    Missing {
        /// The file.
        path: PathBuf,
        /// The tensor name.
        key: String,
        /// The shape the model wants.
        expected: Vec<usize>,
        /// What to do.
        hint: String,
    },
    /// Keys the model does not have.
    #[error("{path}: unexpected key(s) {keys:?}; the file holds tensors this model does not have")]
    Unexpected {
        /// The file.
        path: PathBuf,
        /// The names.
        keys: Vec<String>,
    },
    /// A tensor has the wrong shape: `found` in the file, `expected` by the model, both as the
    /// file's layout holds the tensor `key` (the file's name).
    #[error(
        "{path}: key '{key}' has shape {found:?} in the file, but the model expects {expected:?}{hint}"
    )]
    Shape {
        /// The file.
        path: PathBuf,
        /// The tensor name.
        key: String,
        /// Shape in the file.
        found: Vec<usize>,
        /// Shape the model wants.
        expected: Vec<usize>,
        /// Extra advice (e.g. which preset the file is).
        hint: String,
    },
    /// A tensor whose shape is not of the form its layout needs (before any model is known).
    #[error("{path}: key '{key}' has shape {found:?}, not of the form {form}")]
    Form {
        /// The file.
        path: PathBuf,
        /// The tensor name (as in the file).
        key: String,
        /// Its shape in the file.
        found: Vec<usize>,
        /// The form the layout needs, e.g. `[3W, W]`.
        form: String,
    },
    /// The file is a different preset from the one requested.
    #[error(
        "{path}: tensor shapes are those of a '{file_preset}' model, not '{model_preset}' \
         (key '{key}' has shape {found:?} in the file, the model expects {expected:?}); \
         pass --preset {file_preset} (or omit --preset to infer it)"
    )]
    WrongPreset {
        /// The file.
        path: PathBuf,
        /// The preset the tensors fit.
        file_preset: String,
        /// The preset asked for.
        model_preset: String,
        /// A key whose shape differs.
        key: String,
        /// Its shape in the file.
        found: Vec<usize>,
        /// The shape the model wants.
        expected: Vec<usize>,
    },
    /// The file's sizes fit none of the presets.
    #[error("{path}: the weights fit no preset: {detail}")]
    NoPreset {
        /// The file.
        path: PathBuf,
        /// The inferred sizes.
        detail: String,
    },
    /// A tensor holds NaN or ±Inf (a diverged or damaged checkpoint): refused on load rather
    /// than giving NaN embeddings and plausible-looking metrics.
    #[error(
        "{path}: {key} holds {count} non-finite values (NaN or Inf); the weights are damaged or from a diverged run"
    )]
    NonFinite {
        /// The file.
        path: PathBuf,
        /// The tensor name (as in the file).
        key: String,
        /// How many of its values are NaN or ±Inf.
        count: usize,
    },
    /// Writing failed (nothing is left at the destination).
    #[error("{path}: cannot write: {msg}")]
    Write {
        /// The destination.
        path: PathBuf,
        /// What failed.
        msg: String,
    },
}

/// Result alias.
pub type Result<T> = std::result::Result<T, CkptError>;
