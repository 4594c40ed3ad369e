//! `--precision f32|tf32|bf16`: how a training run's matrix products use the GPU.
//!
//! Only the matrix products change; every other operation stays in `f32` (master weights,
//! gradients, Adam's moments, LayerNorm's statistics, softmax, GASS and the losses):
//!
//! * `f32`: exact `f32` products and sums (`cublasSgemm`); the only choice on the CPU.
//! * `tf32`: the products' inputs are rounded to TF32 (10-bit mantissa) on the tensor cores,
//!   the sums are `f32` (cuBLAS `CUBLAS_COMPUTE_32F_FAST_TF32`, what PyTorch's
//!   `torch.backends.cuda.matmul.allow_tf32 = True` selects).
//! * `bf16`: the products' inputs are rounded to bf16 on the tensor cores, the sums are `f32`
//!   (`CUBLAS_COMPUTE_32F_FAST_16BF`): the arithmetic of a matrix product under PyTorch's
//!   `torch.autocast(dtype=torch.bfloat16)`, which leaves LayerNorm, softmax and the losses in
//!   `f32` as well. As under autocast, the backward pass keeps bf16 copies of the linear
//!   layers' and QuickGELU's inputs; the products' outputs, LayerNorm's inputs and the
//!   attention core's tensors stay `f32` (docs/gpu.md).
//!
//! The CUDA default is `bf16`, as open_clip's training default is mixed precision (its
//! `--precision amp`, in `open_clip_train/params.py`; its `precision.py` notes that bf16 is the
//! more stable of the two autocast types for CLIP training). The CPU default, and the CPU's
//! only choice, is `f32`.

use crate::device::DeviceChoice;
use anyhow::{Result, bail};
use std::fmt;
use std::str::FromStr;

/// A `--precision` value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Precision {
    /// Exact `f32` matrix products.
    F32,
    /// TF32 tensor-core matrix products with `f32` sums.
    Tf32,
    /// bf16 tensor-core matrix products with `f32` sums (mixed precision).
    Bf16,
}

impl Precision {
    /// The precision a run uses on `device` when `--precision` is not given.
    pub fn default_for(device: DeviceChoice) -> Precision {
        match device {
            DeviceChoice::Cpu => Precision::F32,
            DeviceChoice::Cuda(_) => Precision::Bf16,
        }
    }

    /// `asked`, or the device's default; an error for a reduced precision on the CPU.
    pub fn resolve(asked: Option<Precision>, device: DeviceChoice) -> Result<Precision> {
        let p = asked.unwrap_or(Precision::default_for(device));
        if device == DeviceChoice::Cpu && p != Precision::F32 {
            bail!(
                "--precision {p} needs a GPU (--device cuda): on the CPU every matrix product is \
                 f32; drop --precision or use --precision f32"
            );
        }
        Ok(p)
    }
}

impl Precision {
    /// The precision of an inference command (`eval`, `embed`, `search`, `explain`): `asked`,
    /// or `f32` on every device (exact, so a checkpoint's metrics do not depend on the card);
    /// an error for a reduced precision on the CPU.
    pub fn for_inference(asked: Option<Precision>, device: DeviceChoice) -> Result<Precision> {
        Precision::resolve(Some(asked.unwrap_or(Precision::F32)), device)
    }
}

impl FromStr for Precision {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "f32" | "fp32" => Ok(Precision::F32),
            "tf32" => Ok(Precision::Tf32),
            "bf16" | "amp-bf16" | "amp_bf16" => Ok(Precision::Bf16),
            other => Err(format!(
                "unknown precision '{other}': use f32, tf32 or bf16"
            )),
        }
    }
}

impl fmt::Display for Precision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Precision::F32 => "f32",
            Precision::Tf32 => "tf32",
            Precision::Bf16 => "bf16",
        })
    }
}

impl serde::Serialize for Precision {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> serde::Deserialize<'de> for Precision {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_defaults() {
        assert_eq!("TF32".parse::<Precision>(), Ok(Precision::Tf32));
        assert_eq!("amp_bf16".parse::<Precision>(), Ok(Precision::Bf16));
        assert!(
            "fp16"
                .parse::<Precision>()
                .unwrap_err()
                .contains("f32, tf32 or bf16")
        );
        assert_eq!(
            Precision::default_for(DeviceChoice::Cuda(1)),
            Precision::Bf16
        );
        let cpu = DeviceChoice::Cpu;
        assert_eq!(Precision::resolve(None, cpu).unwrap(), Precision::F32);
        let e = Precision::resolve(Some(Precision::Bf16), cpu).unwrap_err();
        assert!(e.to_string().contains("needs a GPU"), "{e}");
    }
}
