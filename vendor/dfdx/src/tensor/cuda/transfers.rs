//! Host↔device copy counters (gadms patch, see gadms' vendor/README.md).
//!
//! Every copy between host memory and a [super::Cuda] device that dfdx makes (a tensor built
//! from a host `Vec`, a tensor read back, the shapes and strides a kernel is given) adds one to
//! these process-wide counters, with its size in bytes. Code outside dfdx that copies through
//! cudarc itself counts its copies with [count_to_device] and [count_to_host]. A copy to the
//! host makes the host wait for the GPU, so `to_host` is the number of such waits.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

static TO_DEVICE: AtomicU64 = AtomicU64::new(0);
static TO_DEVICE_BYTES: AtomicU64 = AtomicU64::new(0);
static TO_HOST: AtomicU64 = AtomicU64::new(0);
static TO_HOST_BYTES: AtomicU64 = AtomicU64::new(0);

/// Copies made so far (since the process started), or between two readings with [Transfers::since].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Transfers {
    /// Host-to-device copies.
    pub to_device: u64,
    /// Bytes of the host-to-device copies.
    pub to_device_bytes: u64,
    /// Device-to-host copies (each one a wait for the GPU).
    pub to_host: u64,
    /// Bytes of the device-to-host copies.
    pub to_host_bytes: u64,
}

impl Transfers {
    /// The copies made between `earlier` and `self`.
    pub fn since(self, earlier: Transfers) -> Transfers {
        Transfers {
            to_device: self.to_device - earlier.to_device,
            to_device_bytes: self.to_device_bytes - earlier.to_device_bytes,
            to_host: self.to_host - earlier.to_host,
            to_host_bytes: self.to_host_bytes - earlier.to_host_bytes,
        }
    }
}

/// The counters now.
pub fn transfers() -> Transfers {
    Transfers {
        to_device: TO_DEVICE.load(Relaxed),
        to_device_bytes: TO_DEVICE_BYTES.load(Relaxed),
        to_host: TO_HOST.load(Relaxed),
        to_host_bytes: TO_HOST_BYTES.load(Relaxed),
    }
}

/// Counts one host-to-device copy of `bytes` bytes.
pub fn count_to_device(bytes: usize) {
    TO_DEVICE.fetch_add(1, Relaxed);
    TO_DEVICE_BYTES.fetch_add(bytes as u64, Relaxed);
}

/// Counts one device-to-host copy of `bytes` bytes.
pub fn count_to_host(bytes: usize) {
    TO_HOST.fetch_add(1, Relaxed);
    TO_HOST_BYTES.fetch_add(bytes as u64, Relaxed);
}
