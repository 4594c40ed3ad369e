//! GASS's per-layer maps on CUDA.

use super::*;
use cudarc::driver::{DevicePtrMut, DeviceRepr};

/// Most MSP scales the GASS kernel takes (`GASS_MAX_SCALES`).
pub(crate) const GASS_MAX_SCALES: usize = 4;

/// The GASS kernel's sizes (the `Gass` struct of `kernels/fused.cu`).
#[repr(C)]
#[derive(Clone, Copy)]
struct Gass {
    b: i32,
    s: i32,
    w: i32,
    nscales: i32,
    official: i32,
    scales: [i32; GASS_MAX_SCALES],
}

// SAFETY: a plain `repr(C)` struct of 4-byte fields, laid out as the kernel's `Gass`.
unsafe impl DeviceRepr for Gass {}

/// One re-run layer's device tensors for GASS: `q`, `k`, `v` and `g = ∂trace(C)/∂o_l`, each
/// `[B, S, W]`.
pub(crate) type GassLayerTensors<S, E, D> = [Tensor<S, E, D>; 4];

/// GASS step B on the device (nn/src/gass.rs, `gass_layer_map` in `kernels/fused.cu`): the sum
/// over `layers` of the per-layer maps, `[B·S]` in f64, the only copy back to the host; `None`
/// when a tensor is not contiguous. `eos` [B] must be `< s`, `scales` 1..=[`GASS_MAX_SCALES`]
/// values ≥ 1 (the caller checked).
pub(crate) fn gass_maps<S: Shape, E: Dtype, D: Device<E>>(
    layers: &[GassLayerTensors<S, E, D>],
    eos: &[usize],
    (s, w): (usize, usize),
    scales: &[usize],
    official: bool,
) -> Option<Vec<f64>> {
    let b = eos.len();
    if !layers
        .iter()
        .flatten()
        .all(|t| crate::fast::host::contiguous(t))
    {
        return None;
    }
    let Some(first) = layers.first() else {
        return Some(vec![0.0; b * s]);
    };
    let dev = cuda(first[0].dev()).clone();
    let eos32: Vec<i32> = eos.iter().map(|&e| e as i32).collect();
    let eos_dev = to_device(&dev, eos32, "GASS's EOS indices");
    let mut total = dev
        .cuda_device()
        .alloc_zeros::<f64>(b * s)
        .unwrap_or_else(|e| panic!("CUDA allocation of GASS's map: {}", code(&e)));
    let mut sc = [1i32; GASS_MAX_SCALES];
    sc.iter_mut().zip(scales).for_each(|(d, &c)| *d = c as i32);
    let p = Gass {
        b: b as i32,
        s: s as i32,
        w: w as i32,
        nscales: scales.len() as i32,
        official: i32::from(official),
        scales: sc,
    };
    let cfg = LaunchConfig {
        grid_dim: (b as u32, 1, 1),
        block_dim: (128, 1, 1),
        shared_mem_bytes: ((w + 3 * s) * 8) as u32,
    };
    let (ep, tp) = (*eos_dev.device_ptr(), *total.device_ptr_mut());
    for [q, k, v, g] in layers {
        let params = (p, ptr(q), ptr(k), ptr(v), ptr(g), ep, tp);
        launch(&dev, "gass_layer_map", cfg, params);
    }
    let total = to_host(&dev, &total, "GASS's map");
    Some(total)
}

/// Whether [`gass_maps`] takes this configuration on `(E, D)`.
pub(crate) fn gass_on_device<E: 'static, D: 'static>(scales: &[usize], keep_layers: bool) -> bool {
    is_cuda_f32::<E, D>()
        && crate::fast::fused_enabled()
        && !keep_layers
        && (1..=GASS_MAX_SCALES).contains(&scales.len())
}
