//! Adam with PyTorch semantics, parameter groups, gradient-norm clipping and a saveable state
//! (for exact resume). dfdx's own `Adam` keeps its moments private, so it cannot be
//! checkpointed; this one keeps them per parameter name.
//!
//! Update (`torch.optim.Adam`, coupled L2 as GA-DMS uses): `g ← g + wd·p`,
//! `m ← β₁m + (1−β₁)g`, `v ← β₂v + (1−β₂)g²`, `p ← p − lr/(1−β₁ᵗ) · m / (√v/√(1−β₂ᵗ) + ε)`.
//! Decoupled (`AdamW`): `p ← p·(1 − lr·wd)` first, no L2 term in `g`.
//!
//! # Where the arithmetic runs
//! * **Host path** (dfdx `Cpu`, the default there): parameters, gradients and moments as
//!   `f32` slices, one fused loop per tensor, split across threads in fixed chunks. For `f32`
//!   it runs on the parameter's own storage and reads the gradient in place (no copies: a
//!   ViT-B/16 GA-DMS model has about 200 M parameters); other element types are converted.
//! * **Tensor path** (dfdx `Cuda`, always; `Cpu` with [`Adam::tensor_path`]): the same update as
//!   dfdx tensor ops on the parameter's device, moments kept there as tensors of the
//!   parameter's shape, the parameter written in place (`axpy`, so its id and buffer stay).
//!   Nothing crosses to the host but one scalar per tensor for the gradient norm. On CUDA
//!   with the fused kernels on, one kernel launch for the norm of every gradient and one for
//!   the update of every tensor instead (`optim_cuda.rs`), and one copy for the whole norm.
//!   The paths agree to rounding (`tests/optim.rs`, and CPU vs CUDA in `tests/cuda.rs`).
//!   Checkpoints ([`Adam::save`]) copy device moments to the host; a loaded state moves to the
//!   device on first use.

use anyhow::{Context, Result};
use dfdx::nn::tensor_collection::*;
use dfdx::prelude::*;
use gadms_ckpt::tensors::{read_file, write_file};
use gadms_ckpt::{Array, TensorMap};
use gadms_nn::Float;
use std::any::{Any, TypeId};
use std::collections::BTreeMap;
use std::path::Path;

#[cfg(feature = "cuda")]
#[path = "optim_cuda.rs"]
mod cuda;

/// The CUDA updates gathered during one walk over the model, launched at its end.
#[cfg(feature = "cuda")]
type Batch = gadms_nn::fast::AdamBatch;
#[cfg(not(feature = "cuda"))]
type Batch = ();

/// How weight decay enters the update.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum WeightDecay {
    /// Added to the gradient (`torch.optim.Adam(weight_decay=…)`), GA-DMS' choice.
    L2(f32),
    /// Applied to the weights (`torch.optim.AdamW`).
    Decoupled(f32),
}

/// Adam hyper-parameters (the learning rate is given per step by the schedule).
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct AdamConfig {
    /// (β₁, β₂); GA-DMS: (0.9, 0.999).
    pub betas: [f32; 2],
    /// ε; GA-DMS: 1e-3.
    pub eps: f32,
    /// Weight decay; GA-DMS: L2(4e-5).
    pub weight_decay: WeightDecay,
    /// Clip the global gradient L2 norm to this value first (`clip_grad_norm_`).
    pub clip_norm: Option<f32>,
}

impl Default for AdamConfig {
    fn default() -> Self {
        AdamConfig {
            betas: [0.9, 0.999],
            eps: 1e-3,
            weight_decay: WeightDecay::L2(4e-5),
            clip_norm: None,
        }
    }
}

/// Per-parameter multipliers (IRRA parameter groups: e.g. 5× lr for `cross`, no decay on biases).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Group {
    /// Learning-rate multiplier.
    pub lr_mult: f32,
    /// Weight-decay multiplier.
    pub wd_mult: f32,
}

impl Group {
    /// Multipliers of 1.
    pub const PLAIN: Group = Group {
        lr_mult: 1.0,
        wd_mult: 1.0,
    };
}

/// First and second moments of one parameter, on the host.
#[derive(Clone, Debug, Default, PartialEq)]
struct Moments {
    m: Vec<f32>,
    v: Vec<f32>,
}

/// A device tensor behind `dyn Any` (moments of the tensor path), with what is needed to clone
/// it and read it back without knowing its type.
struct AnyTensor {
    val: Box<dyn Any>,
    clone: fn(&dyn Any) -> Box<dyn Any>,
    host: fn(&dyn Any) -> Vec<f32>,
}

impl Clone for AnyTensor {
    fn clone(&self) -> Self {
        AnyTensor {
            val: (self.clone)(self.val.as_ref()),
            clone: self.clone,
            host: self.host,
        }
    }
}

impl AnyTensor {
    fn new<S: Shape, D: Device<f32>>(t: Tensor<S, f32, D>) -> Self {
        AnyTensor {
            val: Box::new(t),
            clone: |a| Box::new(a.downcast_ref::<Tensor<S, f32, D>>().unwrap().clone()),
            host: |a| a.downcast_ref::<Tensor<S, f32, D>>().unwrap().as_vec(),
        }
    }
}

/// Moments of one parameter: on the host, or as device tensors (tensor path).
#[derive(Clone)]
enum State {
    Host(Moments),
    Device { m: AnyTensor, v: AnyTensor },
}

impl State {
    fn to_host(&self) -> Moments {
        match self {
            State::Host(h) => h.clone(),
            State::Device { m, v } => Moments {
                m: (m.host)(m.val.as_ref()),
                v: (v.host)(v.val.as_ref()),
            },
        }
    }
}

impl std::fmt::Debug for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            State::Host(h) => write!(f, "Host({} values)", h.m.len()),
            State::Device { .. } => write!(f, "Device"),
        }
    }
}

/// The optimiser: config, step count and moments by parameter name.
#[derive(Clone, Debug)]
pub struct Adam {
    /// Hyper-parameters.
    pub cfg: AdamConfig,
    /// Steps taken.
    pub step: u64,
    /// Run the update as device tensor ops even on `Cpu` (always on other devices).
    pub tensor_path: bool,
    moments: BTreeMap<String, State>,
}

/// What one update saw.
#[derive(Clone, Copy, Debug)]
pub struct UpdateStats {
    /// Global gradient L2 norm before clipping.
    pub grad_norm: f32,
}

struct NormPass<'a, E: Dtype, D: Storage<E>> {
    grads: &'a Gradients<E, D>,
    sq: f64,
    on_device: bool,
    #[cfg(feature = "cuda")]
    cuda: cuda::NormGrads<'a>,
}

impl<E: Float, D: Device<E>> TensorVisitor<E, D> for NormPass<'_, E, D> {
    type Viewer = ViewTensorRef;
    type Err = D::Err;
    type E2 = E;
    type D2 = D;
    fn visit<S: Shape>(
        &mut self,
        opts: TensorOptions<S, E, D>,
        t: &Tensor<S, E, D>,
    ) -> Result<Option<Tensor<S, E, D>>, D::Err> {
        if !opts.do_gradient_update {
            return Ok(None);
        }
        #[cfg(feature = "cuda")]
        if self.on_device && self.cuda.take(self.grads, t) {
            return Ok(None);
        }
        self.sq += if self.on_device {
            let g = self.grads.get(t);
            let n = g.shape().num_elements();
            g.reshape_like(&(n,)).square().sum::<Rank0, _>().as_vec()[0]
                .to_f64()
                .unwrap()
        } else if let Some(g) = host_grad(self.grads, t) {
            sum_squares(g)
        } else {
            sum_squares(&self.grads.get(t).as_vec())
        };
        Ok(None)
    }
}

struct UpdatePass<'a, E: Dtype, D: Storage<E>> {
    opt: &'a mut Adam,
    grads: &'a Gradients<E, D>,
    lr: f32,
    scale: f32,
    rule: &'a dyn Fn(&str) -> Group,
    batch: Batch,
}

impl<E: Float, D: Device<E>> TensorVisitor<E, D> for UpdatePass<'_, E, D> {
    type Viewer = (ViewTensorMut, ViewTensorName);
    type Err = D::Err;
    type E2 = E;
    type D2 = D;
    fn visit<S: Shape>(
        &mut self,
        opts: TensorOptions<S, E, D>,
        (t, name): (&mut Tensor<S, E, D>, String),
    ) -> Result<Option<Tensor<S, E, D>>, D::Err> {
        if !opts.do_gradient_update {
            return Ok(None);
        }
        let group = (self.rule)(&name);
        let k = Coeffs::new(
            &self.opt.cfg,
            self.opt.step,
            self.lr * group.lr_mult,
            group.wd_mult,
            self.scale,
        );
        if tensor_update::<S, E, D>(self.opt, t, self.grads, &name, &k, &mut self.batch)
            || cpu_f32_update::<S, E, D>(self.opt, t, self.grads, &name, &k)
        {
            return Ok(None);
        }
        let g: Vec<f32> = self
            .grads
            .get(t)
            .as_vec()
            .iter()
            .map(|x| x.to_f32().unwrap())
            .collect();
        let mut p: Vec<f32> = t.as_vec().iter().map(|x| x.to_f32().unwrap()).collect();
        adam_update(&mut p, &g, host_moments(self.opt, &name, g.len()), &k);
        let back: Vec<E> = p.into_iter().map(|x| E::from_f32(x).unwrap()).collect();
        t.copy_from(&back);
        Ok(None)
    }
}

/// The scalars of one tensor's update.
struct Coeffs {
    b1: f32,
    b2: f32,
    eps: f32,
    /// `1 − β₁ᵗ`.
    bc1: f32,
    /// `√(1 − β₂ᵗ)`.
    bc2_sqrt: f32,
    /// Group learning rate.
    lr: f32,
    /// Coupled L2 coefficient (0 when decoupled).
    l2: f32,
    /// Decoupled decay coefficient (0 when coupled).
    decoupled: f32,
    /// Gradient scale from norm clipping.
    scale: f32,
}

impl Coeffs {
    fn new(cfg: &AdamConfig, step: u64, lr: f32, wd_mult: f32, scale: f32) -> Self {
        let [b1, b2] = cfg.betas;
        let (l2, decoupled) = match cfg.weight_decay {
            WeightDecay::L2(w) => (w * wd_mult, 0.0),
            WeightDecay::Decoupled(w) => (0.0, w * wd_mult),
        };
        Coeffs {
            b1,
            b2,
            eps: cfg.eps,
            bc1: 1.0 - b1.powi(step as i32),
            bc2_sqrt: (1.0 - b2.powi(step as i32)).sqrt(),
            lr,
            l2,
            decoupled,
            scale,
        }
    }
}

/// The moments of parameter `name` (`n` elements) on the host (zeros at first; device moments
/// are copied back).
fn host_moments<'a>(opt: &'a mut Adam, name: &str, n: usize) -> &'a mut Moments {
    let state = opt.moments.entry(name.to_string()).or_insert_with(|| {
        State::Host(Moments {
            m: vec![0.0; n],
            v: vec![0.0; n],
        })
    });
    if let State::Device { .. } = state {
        *state = State::Host(state.to_host());
    }
    let State::Host(mom) = state else {
        unreachable!("moved to the host above")
    };
    mom
}

/// Elements per parallel task of the host update and of the gradient norm.
const CHUNK: usize = 1 << 15;

/// The host update of one tensor, split across threads in fixed chunks (each element's update
/// is independent, so the split changes no bit).
fn adam_update(p: &mut [f32], g: &[f32], mom: &mut Moments, k: &Coeffs) {
    use rayon::prelude::*;
    assert_eq!(
        p.len(),
        g.len(),
        "adam: parameter and gradient sizes differ"
    );
    p.par_chunks_mut(CHUNK)
        .zip(g.par_chunks(CHUNK))
        .zip(mom.m.par_chunks_mut(CHUNK))
        .zip(mom.v.par_chunks_mut(CHUNK))
        .for_each(|(((p, g), m), v)| adam_chunk(p, g, (m, v), k));
}

fn adam_chunk(p: &mut [f32], g: &[f32], (m, v): (&mut [f32], &mut [f32]), k: &Coeffs) {
    for i in 0..p.len() {
        let gi = g[i] * k.scale + k.l2 * p[i];
        if k.decoupled != 0.0 {
            p[i] *= 1.0 - k.lr * k.decoupled;
        }
        m[i] = k.b1 * m[i] + (1.0 - k.b1) * gi;
        v[i] = k.b2 * v[i] + (1.0 - k.b2) * gi * gi;
        let denom = v[i].sqrt() / k.bc2_sqrt + k.eps;
        p[i] -= k.lr / k.bc1 * m[i] / denom;
    }
}

/// `Σ g²` in f64: per-chunk sums on the thread pool, added in chunk order (deterministic).
fn sum_squares<E: Float>(g: &[E]) -> f64 {
    use rayon::prelude::*;
    let parts: Vec<f64> = g
        .par_chunks(CHUNK)
        .map(|c| c.iter().map(|x| x.to_f64().unwrap().powi(2)).sum::<f64>())
        .collect();
    parts.iter().sum()
}

/// The gradient of `t` read in place where it is CPU memory (no copy), else `None`.
fn host_grad<'g, S: Shape, E: Dtype, D: Storage<E>>(
    grads: &'g Gradients<E, D>,
    t: &Tensor<S, E, D>,
) -> Option<&'g [E]> {
    let v = grads.get_ref_checked(t)?;
    let v = (v as &dyn Any).downcast_ref::<<Cpu as Storage<E>>::Vec>()?;
    Some(&v[..])
}

/// A dense CPU parameter's elements, writable in place (same id, same buffer); `None` for
/// another device or layout.
fn host_param_mut<S: Shape, E: Dtype, D: Storage<E>>(t: &mut Tensor<S, E, D>) -> Option<&mut [E]> {
    use dfdx::tensor::Tensorlike;
    let t = (t as &mut dyn Any).downcast_mut::<Tensor<S, E, Cpu>>()?;
    let n = t.shape().num_elements();
    if n == 0 || Tensorlike::len(t) != n || Tensorlike::strides(t) != t.shape().strides() {
        return None;
    }
    // `IndexMut` makes the buffer unique (`Arc::make_mut`) and returns element 0 of the
    // dense `n`-element vector.
    let first: *mut E = &mut t[Default::default()];
    // SAFETY: the buffer is a unique `Vec<E>` of `n` elements starting at `first`, and the
    // slice borrows `t` mutably for its whole life.
    Some(unsafe { std::slice::from_raw_parts_mut(first, n) })
}

/// The host path without copies for `f32` CPU parameters: the update runs on the tensor's
/// own storage and reads the gradient in place. `false` when it does not apply.
fn cpu_f32_update<S: Shape, E: Dtype, D: Storage<E>>(
    opt: &mut Adam,
    t: &mut Tensor<S, E, D>,
    grads: &Gradients<E, D>,
    name: &str,
    k: &Coeffs,
) -> bool {
    if TypeId::of::<E>() != TypeId::of::<f32>() {
        return false;
    }
    let (Some(g), Some(p)) = (host_grad(grads, t), host_param_mut(t)) else {
        return false;
    };
    // SAFETY: E is f32 (checked above), so both slices are f32 slices.
    let (g, p) = unsafe {
        (
            std::slice::from_raw_parts(g.as_ptr() as *const f32, g.len()),
            std::slice::from_raw_parts_mut(p.as_mut_ptr() as *mut f32, p.len()),
        )
    };
    adam_update(p, g, host_moments(opt, name, p.len()), k);
    true
}

/// The tensor path for one parameter when `(E, D)` is `(f32, Cpu)` with
/// [`Adam::tensor_path`] or `(f32, Cuda)`: `true` when done, `false` to take the host path.
fn tensor_update<S: Shape, E: Dtype, D: Device<E>>(
    opt: &mut Adam,
    t: &mut Tensor<S, E, D>,
    grads: &Gradients<E, D>,
    name: &str,
    k: &Coeffs,
    batch: &mut Batch,
) -> bool {
    if !uses_tensor_path::<E, D>(opt.tensor_path) {
        return false;
    }
    #[cfg(feature = "cuda")]
    if cuda::update(opt, t, grads, name, k, batch) {
        return true;
    }
    let _ = &batch;
    let g: Box<dyn Any> = Box::new(grads.get(t));
    let t: &mut dyn Any = t;
    device_step!(Cpu, opt, t, g, name, k);
    #[cfg(feature = "cuda")]
    device_step!(Cuda, opt, t, g, name, k);
    false
}

/// True when `(E, D)` takes the tensor path.
fn uses_tensor_path<E: 'static, D: 'static>(forced: bool) -> bool {
    if TypeId::of::<E>() != TypeId::of::<f32>() {
        return false;
    }
    if TypeId::of::<D>() == TypeId::of::<Cpu>() {
        return forced;
    }
    #[cfg(feature = "cuda")]
    if TypeId::of::<D>() == TypeId::of::<Cuda>() {
        return true;
    }
    false
}

/// The update of one parameter (`$t: &mut dyn Any`, gradient `$g: Box<dyn Any>`) when both
/// are `Tensor<S, f32, $Dev>`; returns `true` from the enclosing function when it ran. A
/// macro because the in-place `axpy` is callable on concrete devices only (its kernel trait
/// is private to dfdx).
macro_rules! device_step {
    ($Dev:ty, $opt:expr, $t:expr, $g:expr, $name:expr, $k:expr) => {
        if let Some(t) = $t.downcast_mut::<Tensor<S, f32, $Dev>>() {
            let g = *$g
                .downcast::<Tensor<S, f32, $Dev>>()
                .expect("gradient on the parameter's device");
            let k: &Coeffs = $k;
            let (m, v) = moments_on_device::<S, $Dev>($opt, $name, t);
            let delta = adam_tensors(t, g, m, v, k);
            // p ← p·(1 − lr·wd_decoupled) − delta, in place (same id, same buffer).
            t.axpy(1.0 - k.lr * k.decoupled, &delta, -1.0);
            return true;
        }
    };
}
use device_step;

/// The moments of parameter `name` as device tensors of `t`'s shape (zeros at first; a host
/// state, e.g. just loaded, moves to the device).
fn moments_on_device<'a, S: Shape, D: Device<f32>>(
    opt: &'a mut Adam,
    name: &str,
    t: &Tensor<S, f32, D>,
) -> (&'a mut Tensor<S, f32, D>, &'a mut Tensor<S, f32, D>) {
    let n = t.shape().num_elements();
    let state = opt.moments.entry(name.to_string()).or_insert_with(|| {
        State::Host(Moments {
            m: vec![0.0; n],
            v: vec![0.0; n],
        })
    });
    if let State::Host(h) = state {
        let dev = t.device().clone();
        let up = |x: &[f32]| AnyTensor::new(dev.tensor_from_vec(x.to_vec(), *t.shape()));
        *state = State::Device {
            m: up(&h.m),
            v: up(&h.v),
        };
    }
    let State::Device { m, v } = state else {
        unreachable!("moved to the device above")
    };
    let what = "moments of the parameter's shape and device";
    (
        m.val.downcast_mut().expect(what),
        v.val.downcast_mut().expect(what),
    )
}

/// One Adam update as device ops (the host loop of [`adam_update`], same order of operations):
/// updates `m` and `v` and returns `lr/bc1 · m / (√v/√bc2 + ε)`, to be subtracted from `p`.
fn adam_tensors<S: Shape, D: Device<f32>>(
    p: &Tensor<S, f32, D>,
    g: Tensor<S, f32, D>,
    m: &mut Tensor<S, f32, D>,
    v: &mut Tensor<S, f32, D>,
    k: &Coeffs,
) -> Tensor<S, f32, D> {
    let gi = if k.l2 != 0.0 {
        g * k.scale + p.clone() * k.l2
    } else {
        g * k.scale
    };
    *m = m.clone() * k.b1 + gi.clone() * (1.0 - k.b1);
    *v = v.clone() * k.b2 + gi.square() * (1.0 - k.b2);
    let denom = v.clone().sqrt() / k.bc2_sqrt + k.eps;
    (m.clone() * (k.lr / k.bc1)) / denom
}

impl Adam {
    /// A fresh optimiser.
    pub fn new(cfg: AdamConfig) -> Self {
        Adam {
            cfg,
            step: 0,
            tensor_path: false,
            moments: BTreeMap::new(),
        }
    }

    /// One update of every trainable tensor of `model` (tensors built `detached` are frozen
    /// and hold no state) from `grads` (from `model.alloc_grads()`), at learning rate `lr`,
    /// with per-name multipliers from `rule`.
    pub fn update<E: Float, D: Device<E>, M: TensorCollection<E, D>>(
        &mut self,
        model: &mut M,
        grads: &Gradients<E, D>,
        lr: f32,
        rule: &dyn Fn(&str) -> Group,
    ) -> UpdateStats {
        let mut norm = NormPass {
            grads,
            sq: 0.0,
            on_device: uses_tensor_path::<E, D>(self.tensor_path),
            #[cfg(feature = "cuda")]
            cuda: Default::default(),
        };
        let walked = M::iter_tensors(&mut RecursiveWalker {
            m: &*model,
            f: &mut norm,
        });
        walked.unwrap_or_else(|_| unreachable!("host reads cannot fail"));
        #[cfg(feature = "cuda")]
        {
            norm.sq += norm.cuda.sum();
        }
        let grad_norm = norm.sq.sqrt() as f32;
        let scale = match self.cfg.clip_norm {
            Some(max) => (max / (grad_norm + 1e-6)).min(1.0),
            None => 1.0,
        };
        self.step += 1;
        let mut pass = UpdatePass {
            opt: self,
            grads,
            lr,
            scale,
            rule,
            batch: Default::default(),
        };
        let walked = M::iter_tensors(&mut RecursiveWalker {
            m: (model, String::new()),
            f: &mut pass,
        });
        walked.unwrap_or_else(|_| unreachable!("host writes cannot fail"));
        // The gathered CUDA updates, while every gradient and parameter they point to lives.
        #[cfg(feature = "cuda")]
        pass.batch.launch();
        UpdateStats { grad_norm }
    }

    /// One update of a tensor kept outside the model's `TensorCollection` (e.g. the ID
    /// classifier, whose class count is only known at run time), with its state under `name`
    /// and the step count of the last [`Adam::update`] (call this right after it). Gradient
    /// clipping does not see this tensor.
    pub fn update_slice(&mut self, name: &str, p: &mut [f32], g: &[f32], lr: f32, group: Group) {
        let k = Coeffs::new(
            &self.cfg,
            self.step.max(1),
            lr * group.lr_mult,
            group.wd_mult,
            1.0,
        );
        adam_update(p, g, host_moments(self, name, p.len()), &k);
    }

    /// Saves step, config and moments to a safetensors file (atomic).
    pub fn save(&self, path: &Path) -> Result<()> {
        let mut map = TensorMap::default();
        for (k, state) in &self.moments {
            let mo = state.to_host();
            map.insert(format!("m.{k}"), Array::new(vec![mo.m.len()], mo.m.clone()));
            map.insert(format!("v.{k}"), Array::new(vec![mo.v.len()], mo.v.clone()));
        }
        let meta = BTreeMap::from([
            ("gadms.magic".to_string(), "gadms-adam".to_string()),
            ("gadms.version".to_string(), "1".to_string()),
            ("step".to_string(), self.step.to_string()),
            ("config".to_string(), serde_json::to_string(&self.cfg)?),
        ]);
        write_file(path, &map, &meta)?;
        Ok(())
    }

    /// Loads a state written by [`Adam::save`].
    pub fn load(path: &Path) -> Result<Self> {
        let map = read_file(path)?;
        let what = || format!("{}: not a gadms optimiser state", path.display());
        anyhow::ensure!(
            map.metadata.get("gadms.magic").map(String::as_str) == Some("gadms-adam"),
            what()
        );
        let step = map
            .metadata
            .get("step")
            .and_then(|s| s.parse().ok())
            .with_context(what)?;
        let cfg = serde_json::from_str(map.metadata.get("config").with_context(what)?)
            .with_context(what)?;
        let mut moments: BTreeMap<String, Moments> = BTreeMap::new();
        for (k, a) in map.tensors {
            let (which, name) = k.split_once('.').with_context(what)?;
            let e = moments.entry(name.to_string()).or_default();
            match which {
                "m" => e.m = a.data,
                "v" => e.v = a.data,
                _ => anyhow::bail!("{}: unexpected key {k}", path.display()),
            }
        }
        let moments = moments
            .into_iter()
            .map(|(k, m)| (k, State::Host(m)))
            .collect();
        Ok(Adam {
            cfg,
            step,
            tensor_path: false,
            moments,
        })
    }

    /// Number of parameter tensors with state (frozen tensors have none).
    pub fn tracked(&self) -> usize {
        self.moments.len()
    }
}

/// Adam as GA-DMS trains (docs/method.md §6.1): β = (0.9, 0.999), ε = 1e-3, coupled L2 weight
/// decay 4e-5. Every recipe uses it.
pub fn adam_config() -> AdamConfig {
    AdamConfig {
        betas: [0.9, 0.999],
        eps: 1e-3,
        weight_decay: WeightDecay::L2(4e-5),
        clip_norm: None,
    }
}
