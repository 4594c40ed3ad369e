//! Run-time choice of the dfdx device (`--device cpu|cuda[:N]`).
//!
//! Every model, loss, GASS and optimiser path is generic over `D: Device<f32>`; a command
//! picks the concrete device once with [`with_device!`](crate::with_device). CUDA exists only
//! in binaries built with the `cuda` cargo feature (`scripts/build-cuda.sh`); asking for it in
//! a CPU build is a clear error, as is asking for a GPU that is not there.

use crate::precision::Precision;
use anyhow::{Result, bail};
use std::fmt;
use std::str::FromStr;

/// A device named on the command line.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum DeviceChoice {
    /// dfdx's `Cpu` (threads: `RAYON_NUM_THREADS`).
    #[default]
    Cpu,
    /// dfdx's `Cuda` on GPU ordinal `N` (`cuda` = `cuda:0`).
    Cuda(usize),
}

impl FromStr for DeviceChoice {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim().to_ascii_lowercase();
        match s.as_str() {
            "cpu" => Ok(DeviceChoice::Cpu),
            "cuda" | "gpu" => Ok(DeviceChoice::Cuda(0)),
            _ => match s.strip_prefix("cuda:").map(str::parse::<usize>) {
                Some(Ok(n)) => Ok(DeviceChoice::Cuda(n)),
                _ => Err(format!(
                    "unknown device '{s}': use cpu, cuda or cuda:N (N = GPU ordinal)"
                )),
            },
        }
    }
}

impl fmt::Display for DeviceChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeviceChoice::Cpu => write!(f, "cpu"),
            DeviceChoice::Cuda(n) => write!(f, "cuda:{n}"),
        }
    }
}

impl serde::Serialize for DeviceChoice {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> serde::Deserialize<'de> for DeviceChoice {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// A dfdx device that a command can build from a [`DeviceChoice`] and an RNG seed: `Cpu`,
/// and `Cuda` in a `cuda` build. Training commands are generic over it
/// (`run_on::<D: BuildDevice>`), dispatched once by [`dispatch!`](crate::dispatch).
pub trait BuildDevice: dfdx::prelude::Device<f32> + 'static {
    /// The device for `choice` (which must name this kind), seeded with `seed`.
    fn create(choice: DeviceChoice, seed: u64) -> Result<Self>;
    /// Makes the device's matrix products use `precision` ([`crate::precision`]); an error
    /// where the device has no such mode.
    fn set_precision(&self, precision: Precision) -> Result<()>;
}

impl BuildDevice for dfdx::prelude::Cpu {
    fn create(_: DeviceChoice, seed: u64) -> Result<Self> {
        Ok(dfdx::prelude::Cpu::seed_from_u64(seed))
    }
    fn set_precision(&self, precision: Precision) -> Result<()> {
        Precision::resolve(Some(precision), DeviceChoice::Cpu).map(|_| ())
    }
}

#[cfg(feature = "cuda")]
impl BuildDevice for dfdx::prelude::Cuda {
    fn create(choice: DeviceChoice, seed: u64) -> Result<Self> {
        match choice {
            // In a data-parallel job each process of a node takes its own GPU: `cuda:N` is
            // GPU N + the process's local rank (docs/distributed.md).
            DeviceChoice::Cuda(n) if crate::dist::world().size() > 1 => {
                cuda(n + crate::dist::local_rank(), seed)
            }
            DeviceChoice::Cuda(n) => cuda(n, seed),
            DeviceChoice::Cpu => bail!("internal: a CUDA run was asked for the CPU"),
        }
    }
    fn set_precision(&self, precision: Precision) -> Result<()> {
        use dfdx::tensor::MatmulPrecision as M;
        self.set_matmul_precision(match precision {
            Precision::F32 => M::F32,
            Precision::Tf32 => M::Tf32,
            Precision::Bf16 => M::Bf16,
        });
        Ok(())
    }
}

/// Calls `$f::<D>($args…)` with `D` the device type of `$choice` (a `BuildDevice`); a CUDA
/// choice in a CPU build is the clear error of [`check_available`].
#[macro_export]
macro_rules! dispatch {
    ($choice:expr, $f:ident($($arg:expr),*)) => {{
        let choice: $crate::device::DeviceChoice = $choice;
        $crate::device::check_available(choice)?;
        match choice {
            $crate::device::DeviceChoice::Cpu => $f::<dfdx::prelude::Cpu>($($arg),*),
            $crate::device::DeviceChoice::Cuda(_) => $crate::__dispatch_cuda!($f($($arg),*)),
        }
    }};
}

/// The CUDA arm of [`dispatch!`] (a CUDA build).
#[cfg(feature = "cuda")]
#[doc(hidden)]
#[macro_export]
macro_rules! __dispatch_cuda {
    ($f:ident($($arg:expr),*)) => {
        $f::<dfdx::prelude::Cuda>($($arg),*)
    };
}

/// The CUDA arm of [`dispatch!`] (a CPU build: `check_available` already refused).
#[cfg(not(feature = "cuda"))]
#[doc(hidden)]
#[macro_export]
macro_rules! __dispatch_cuda {
    ($f:ident($($arg:expr),*)) => {
        Err(anyhow::anyhow!("CUDA is not built in"))
    };
}

/// True when this binary was built with CUDA support.
pub const CUDA_BUILT: bool = cfg!(feature = "cuda");

/// Fails with a clear message when `choice` names CUDA and this binary has none.
pub fn check_available(choice: DeviceChoice) -> Result<()> {
    if let DeviceChoice::Cuda(_) = choice
        && !CUDA_BUILT
    {
        bail!(
            "--device {choice}: this gadms binary was built without CUDA. Build one with \
                 `scripts/build-cuda.sh` (cargo feature `cuda`), or use --device cpu"
        );
    }
    Ok(())
}

/// Builds the CUDA device on `ordinal` with RNG `seed`, with a clear error when there is none.
#[cfg(feature = "cuda")]
pub fn cuda(ordinal: usize, seed: u64) -> Result<dfdx::prelude::Cuda> {
    use cudarc::driver::result;
    // dfdx (cudarc 0.9) unwraps both of these; check them first for a clear error.
    result::init().map_err(|e| {
        anyhow::anyhow!(
            "--device cuda:{ordinal}: the CUDA driver did not initialise ({:?}); check \
             `nvidia-smi`, or use --device cpu",
            e.0
        )
    })?;
    let count = result::device::get_count()
        .map_err(|e| {
            anyhow::anyhow!(
                "--device cuda:{ordinal}: cannot count CUDA devices ({:?})",
                e.0
            )
        })?
        .max(0) as usize;
    if ordinal >= count {
        bail!(
            "--device cuda:{ordinal}: this machine has {count} CUDA device(s); use cuda:0..cuda:{}",
            count.saturating_sub(1)
        );
    }
    dfdx::prelude::Cuda::try_build(ordinal, seed).map_err(|e| {
        // Driver errors as their code: cudarc's `Debug` asks the driver for a description.
        let why = match &e {
            dfdx::tensor::CudaError::Driver(d) => format!("{:?}", d.0),
            other => format!("{other:?}"),
        };
        anyhow::anyhow!(
            "--device cuda:{ordinal}: no usable CUDA device ({why}). Check `nvidia-smi`, the \
             ordinal, and that libcuda.so.1, libcublas and libnvrtc of the build's CUDA version \
             are on LD_LIBRARY_PATH (scripts/gpu-env.sh shows how)"
        )
    })
}

/// Runs `$body` with the type `$D` bound to the device chosen by `$choice` and `$dev` a value
/// of it built with RNG seed `$seed`. Evaluates to `anyhow::Result<_>` of the body's value;
/// a CUDA choice in a CPU build, or a missing GPU, is an `Err`.
#[macro_export]
macro_rules! with_device {
    // With the device's matrix products set to `$precision` first (an error where it has none).
    ($choice:expr, $seed:expr, precision = $precision:expr, $D:ident, $dev:ident => $body:expr) => {{
        let precision: $crate::precision::Precision = $precision;
        $crate::with_device!($choice, $seed, $D, $dev => {
            match $crate::device::BuildDevice::set_precision(&$dev, precision) {
                Ok(()) => Ok($body),
                Err(e) => Err(e),
            }
        })
        .and_then(|r| r)
    }};
    ($choice:expr, $seed:expr, $D:ident, $dev:ident => $body:expr) => {{
        let choice: $crate::device::DeviceChoice = $choice;
        match $crate::device::check_available(choice) {
            Err(e) => Err(e),
            Ok(()) => match choice {
                $crate::device::DeviceChoice::Cpu => {
                    #[allow(dead_code)]
                    type $D = dfdx::prelude::Cpu;
                    let $dev = dfdx::prelude::Cpu::seed_from_u64($seed);
                    Ok($body)
                }
                #[allow(unused_variables)]
                $crate::device::DeviceChoice::Cuda(ordinal) => {
                    $crate::__cuda_arm!(ordinal, $seed, $D, $dev, $body)
                }
            },
        }
    }};
}

/// The CUDA arm of [`with_device!`] (a CUDA build).
#[cfg(feature = "cuda")]
#[doc(hidden)]
#[macro_export]
macro_rules! __cuda_arm {
    ($ordinal:expr, $seed:expr, $D:ident, $dev:ident, $body:expr) => {{
        #[allow(dead_code)]
        type $D = dfdx::prelude::Cuda;
        match $crate::device::cuda($ordinal, $seed) {
            Ok($dev) => Ok($body),
            Err(e) => Err(e),
        }
    }};
}

/// The CUDA arm of [`with_device!`] (a CPU build: unreachable, `check_available` refused).
#[cfg(not(feature = "cuda"))]
#[doc(hidden)]
#[macro_export]
macro_rules! __cuda_arm {
    ($ordinal:expr, $seed:expr, $D:ident, $dev:ident, $body:expr) => {{
        let _ = ($ordinal, $seed);
        Err(anyhow::anyhow!("CUDA is not built in"))
    }};
}

/// The CUDA stream-ordered allocator's high-water marks on `dev`'s GPU, in bytes: `(reserved,
/// used)`, the memory the pool held from the driver and the memory in live buffers, since
/// the last [`reset_pool_high_water`]; their difference is the allocator's cache. `None` on
/// the CPU or when the driver does not report them.
pub fn pool_high_water<D: 'static>(dev: &D) -> Option<(u64, u64)> {
    #[cfg(feature = "cuda")]
    if let Some(pool) = mem_pool(dev) {
        use cudarc::driver::sys::{CUmemPool_attribute as A, cuMemPoolGetAttribute};
        let read = |attr| {
            let mut v = 0u64;
            // SAFETY: both attributes are u64 values written into `v`.
            let r = unsafe { cuMemPoolGetAttribute(pool, attr, &mut v as *mut u64 as *mut _) };
            (r == cudarc::driver::sys::CUresult::CUDA_SUCCESS).then_some(v)
        };
        return Some((
            read(A::CU_MEMPOOL_ATTR_RESERVED_MEM_HIGH)?,
            read(A::CU_MEMPOOL_ATTR_USED_MEM_HIGH)?,
        ));
    }
    let _ = dev;
    None
}

/// Resets [`pool_high_water`]'s marks to the current values (nothing on the CPU).
pub fn reset_pool_high_water<D: 'static>(dev: &D) {
    #[cfg(feature = "cuda")]
    if let Some(pool) = mem_pool(dev) {
        use cudarc::driver::sys::{CUmemPool_attribute as A, cuMemPoolSetAttribute};
        for attr in [
            A::CU_MEMPOOL_ATTR_RESERVED_MEM_HIGH,
            A::CU_MEMPOOL_ATTR_USED_MEM_HIGH,
        ] {
            let mut zero = 0u64;
            // SAFETY: setting a high-water mark takes a u64 0, which resets it.
            unsafe { cuMemPoolSetAttribute(pool, attr, &mut zero as *mut u64 as *mut _) };
        }
    }
    let _ = dev;
}

/// Host↔device copies counted since the process started (every copy dfdx and gadms-nn's CUDA
/// kernels make; docs/gpu.md). All zero in a build without CUDA.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Copies {
    /// Host-to-device copies and their bytes.
    pub to_device: (u64, u64),
    /// Device-to-host copies (each a wait for the GPU) and their bytes.
    pub to_host: (u64, u64),
}

impl Copies {
    /// The counters now.
    pub fn now() -> Copies {
        #[cfg(feature = "cuda")]
        {
            let t = dfdx::tensor::transfers();
            Copies {
                to_device: (t.to_device, t.to_device_bytes),
                to_host: (t.to_host, t.to_host_bytes),
            }
        }
        #[cfg(not(feature = "cuda"))]
        Copies::default()
    }

    /// The copies made since `earlier`, per step of `steps` (`steps` ≥ 1).
    pub fn per_step_since(self, earlier: Copies, steps: usize) -> (f64, f64, f64, f64) {
        let per = |now: u64, then: u64| (now - then) as f64 / steps.max(1) as f64;
        (
            per(self.to_device.0, earlier.to_device.0),
            per(self.to_device.1, earlier.to_device.1),
            per(self.to_host.0, earlier.to_host.0),
            per(self.to_host.1, earlier.to_host.1),
        )
    }
}

/// The default memory pool of a `Cuda` device's GPU (where cudarc's async allocations go).
#[cfg(feature = "cuda")]
fn mem_pool<D: 'static>(dev: &D) -> Option<cudarc::driver::sys::CUmemoryPool> {
    let cuda = (dev as &dyn std::any::Any).downcast_ref::<dfdx::prelude::Cuda>()?;
    let mut pool = std::ptr::null_mut();
    let gpu = *cuda.cuda_device().cu_device();
    // SAFETY: `gpu` is a valid device handle of a live context; `pool` receives a handle.
    let r = unsafe { cudarc::driver::sys::cuDeviceGetDefaultMemPool(&mut pool, gpu) };
    (r == cudarc::driver::sys::CUresult::CUDA_SUCCESS).then_some(pool)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_device_names() {
        assert_eq!("cpu".parse(), Ok(DeviceChoice::Cpu));
        assert_eq!("CUDA".parse(), Ok(DeviceChoice::Cuda(0)));
        assert_eq!("cuda:3".parse(), Ok(DeviceChoice::Cuda(3)));
        assert!("cuda:x".parse::<DeviceChoice>().is_err());
        assert!("tpu".parse::<DeviceChoice>().is_err());
        assert_eq!(DeviceChoice::Cuda(1).to_string(), "cuda:1");
    }

    #[cfg(not(feature = "cuda"))]
    #[test]
    fn cuda_in_a_cpu_build_is_a_clear_error() {
        let e = check_available(DeviceChoice::Cuda(0))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("built without CUDA") && e.contains("build-cuda.sh"),
            "{e}"
        );
        let r: Result<usize> = crate::with_device!(DeviceChoice::Cuda(0), 0, D, dev => {
            let _ = &dev;
            1
        });
        assert!(r.is_err());
        let r: Result<usize> = crate::with_device!(DeviceChoice::Cpu, 0, D, dev => {
            let _: &D = &dev;
            2
        });
        assert_eq!(r.unwrap(), 2);
    }
}
