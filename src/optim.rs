//! Adam with PyTorch semantics, parameter groups, gradient-norm clipping and a saveable state
//! (for exact resume). dfdx's own `Adam` keeps its moments private, so it cannot be
//! checkpointed; this one keeps them per parameter name.
//!
//! Update (`torch.optim.Adam`, coupled L2 as GA-DMS uses): `g ← g + wd·p`,
//! `m ← β₁m + (1−β₁)g`, `v ← β₂v + (1−β₂)g²`, `p ← p − lr/(1−β₁ᵗ) · m / (√v/√(1−β₂ᵗ) + ε)`.
//! Decoupled (`AdamW`): `p ← p·(1 − lr·wd)` first, no L2 term in `g`.

use anyhow::{Context, Result};
use dfdx::nn::tensor_collection::*;
use dfdx::prelude::*;
use gadms_ckpt::tensors::{read_file, write_file};
use gadms_ckpt::{Array, TensorMap};
use gadms_nn::Float;
use std::collections::BTreeMap;
use std::path::Path;

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

/// First and second moments of one parameter.
#[derive(Clone, Debug, Default, PartialEq)]
struct Moments {
    m: Vec<f32>,
    v: Vec<f32>,
}

/// The optimiser: config, step count and moments by parameter name.
#[derive(Clone, Debug)]
pub struct Adam {
    /// Hyper-parameters.
    pub cfg: AdamConfig,
    /// Steps taken.
    pub step: u64,
    moments: BTreeMap<String, Moments>,
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
        if opts.do_gradient_update {
            let g = self.grads.get(t).as_vec();
            self.sq += g.iter().map(|x| x.to_f64().unwrap().powi(2)).sum::<f64>();
        }
        Ok(None)
    }
}

struct UpdatePass<'a, E: Dtype, D: Storage<E>> {
    opt: &'a mut Adam,
    grads: &'a Gradients<E, D>,
    lr: f32,
    scale: f32,
    rule: &'a dyn Fn(&str) -> Group,
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
        let g: Vec<f32> = self
            .grads
            .get(t)
            .as_vec()
            .iter()
            .map(|x| x.to_f32().unwrap())
            .collect();
        let mut p: Vec<f32> = t.as_vec().iter().map(|x| x.to_f32().unwrap()).collect();
        let group = (self.rule)(&name);
        let (cfg, step) = (self.opt.cfg, self.opt.step);
        let mom = self.opt.moments.entry(name).or_insert_with(|| Moments {
            m: vec![0.0; p.len()],
            v: vec![0.0; p.len()],
        });
        adam_update(
            &mut p,
            &g,
            mom,
            &cfg,
            step,
            self.lr * group.lr_mult,
            group.wd_mult,
            self.scale,
        );
        let back: Vec<E> = p.into_iter().map(|x| E::from_f32(x).unwrap()).collect();
        t.copy_from(&back);
        Ok(None)
    }
}

#[allow(clippy::too_many_arguments)]
fn adam_update(
    p: &mut [f32],
    g: &[f32],
    mom: &mut Moments,
    cfg: &AdamConfig,
    step: u64,
    lr: f32,
    wd_mult: f32,
    scale: f32,
) {
    let [b1, b2] = cfg.betas;
    let bc1 = 1.0 - b1.powi(step as i32);
    let bc2_sqrt = (1.0 - b2.powi(step as i32)).sqrt();
    let (l2, decoupled) = match cfg.weight_decay {
        WeightDecay::L2(w) => (w * wd_mult, 0.0),
        WeightDecay::Decoupled(w) => (0.0, w * wd_mult),
    };
    for i in 0..p.len() {
        let gi = g[i] * scale + l2 * p[i];
        if decoupled != 0.0 {
            p[i] *= 1.0 - lr * decoupled;
        }
        mom.m[i] = b1 * mom.m[i] + (1.0 - b1) * gi;
        mom.v[i] = b2 * mom.v[i] + (1.0 - b2) * gi * gi;
        let denom = mom.v[i].sqrt() / bc2_sqrt + cfg.eps;
        p[i] -= lr / bc1 * mom.m[i] / denom;
    }
}

impl Adam {
    /// A fresh optimiser.
    pub fn new(cfg: AdamConfig) -> Self {
        Adam {
            cfg,
            step: 0,
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
        let mut norm = NormPass { grads, sq: 0.0 };
        let walked = M::iter_tensors(&mut RecursiveWalker {
            m: &*model,
            f: &mut norm,
        });
        walked.unwrap_or_else(|_| unreachable!("host reads cannot fail"));
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
        };
        let walked = M::iter_tensors(&mut RecursiveWalker {
            m: (model, String::new()),
            f: &mut pass,
        });
        walked.unwrap_or_else(|_| unreachable!("host writes cannot fail"));
        UpdateStats { grad_norm }
    }

    /// One update of a tensor kept outside the model's `TensorCollection` (e.g. the ID
    /// classifier, whose class count is only known at run time), with its state under `name`
    /// and the step count of the last [`Adam::update`] (call this right after it). Gradient
    /// clipping does not see this tensor.
    pub fn update_slice(&mut self, name: &str, p: &mut [f32], g: &[f32], lr: f32, group: Group) {
        let (cfg, step) = (self.cfg, self.step.max(1));
        let mom = self
            .moments
            .entry(name.to_string())
            .or_insert_with(|| Moments {
                m: vec![0.0; p.len()],
                v: vec![0.0; p.len()],
            });
        adam_update(
            p,
            g,
            mom,
            &cfg,
            step,
            lr * group.lr_mult,
            group.wd_mult,
            1.0,
        );
    }

    /// Saves step, config and moments to a safetensors file (atomic).
    pub fn save(&self, path: &Path) -> Result<()> {
        let mut map = TensorMap::default();
        for (k, mo) in &self.moments {
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
        Ok(Adam { cfg, step, moments })
    }

    /// Number of parameter tensors with state (frozen tensors have none).
    pub fn tracked(&self) -> usize {
        self.moments.len()
    }
}
