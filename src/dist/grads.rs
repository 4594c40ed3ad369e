//! Summing the parameter gradients over the ranks of a data-parallel job.
//!
//! dfdx 0.13 runs a backward pass as one call, so the gradients are summed after it, not in
//! buckets while it runs. On the CPU every trainable tensor's gradient is copied into one flat
//! buffer (in the model's tensor order, the same on every rank), summed by one MPI all-reduce
//! (in chunks of 2^26 values) and copied back. On CUDA each gradient is summed in place on the
//! device by NCCL ([`super::Collective::all_reduce_device`]). The time spent is added to [`comm_seconds`].

use super::world;
use anyhow::Result;
use dfdx::nn::tensor_collection::*;
use dfdx::prelude::*;
use std::any::Any;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

static COMM_NANOS: AtomicU64 = AtomicU64::new(0);

/// Seconds this process has spent in gradient and feature collectives so far.
pub fn comm_seconds() -> f64 {
    COMM_NANOS.load(Ordering::Relaxed) as f64 * 1e-9
}

/// Runs `f`, adding its time to [`comm_seconds`].
pub fn timed<T>(f: impl FnOnce() -> T) -> T {
    let t = Instant::now();
    let r = f();
    COMM_NANOS.fetch_add(t.elapsed().as_nanos() as u64, Ordering::Relaxed);
    r
}

/// Sums `grads` (every trainable tensor of `model`) over the ranks, in place; nothing in a
/// one-process world.
///
/// # Errors
/// A device other than the CPU and CUDA, or NCCL failing.
pub fn all_reduce_grads<D: Device<f32>, M: TensorCollection<f32, D>>(
    model: &M,
    grads: &mut Gradients<f32, D>,
) -> Result<()> {
    if world().size() == 1 {
        return Ok(());
    }
    timed(|| {
        let mut pass = Pass {
            grads,
            host: Vec::new(),
            phase: Phase::Collect,
            at: 0,
            failed: None,
        };
        walk(model, &mut pass);
        if pass.phase == Phase::Collect && !pass.host.is_empty() {
            world().all_reduce_f32(&mut pass.host);
            (pass.phase, pass.at) = (Phase::Scatter, 0);
            walk(model, &mut pass);
        }
        match pass.failed {
            Some(e) => Err(e),
            None => Ok(()),
        }
    })
}

fn walk<D: Device<f32>, M: TensorCollection<f32, D>>(model: &M, pass: &mut Pass<'_, D>) {
    let walked = M::iter_tensors(&mut RecursiveWalker { m: model, f: pass });
    if let Err(e) = walked {
        pass.failed
            .get_or_insert(anyhow::anyhow!("gradient all-reduce: {e:?}"));
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Copy every CPU gradient into `host` (CUDA gradients are summed on the spot).
    Collect,
    /// Copy the summed `host` back.
    Scatter,
}

struct Pass<'a, D: Storage<f32>> {
    grads: &'a mut Gradients<f32, D>,
    host: Vec<f32>,
    phase: Phase,
    at: usize,
    failed: Option<anyhow::Error>,
}

impl<D: Device<f32>> TensorVisitor<f32, D> for Pass<'_, D> {
    type Viewer = ViewTensorRef;
    type Err = D::Err;
    type E2 = f32;
    type D2 = D;
    fn visit<S: Shape>(
        &mut self,
        opts: TensorOptions<S, f32, D>,
        t: &Tensor<S, f32, D>,
    ) -> Result<Option<Tensor<S, f32, D>>, D::Err> {
        if !opts.do_gradient_update || self.failed.is_some() {
            return Ok(None);
        }
        let g: &mut dyn Any = self.grads.get_or_alloc_mut(t)?;
        if let Some(v) = g.downcast_mut::<<Cpu as Storage<f32>>::Vec>() {
            let n = v.len();
            match self.phase {
                Phase::Collect => self.host.extend_from_slice(&v[..]),
                Phase::Scatter => v.copy_from_slice(&self.host[self.at..self.at + n]),
            }
            self.at += n;
            return Ok(None);
        }
        if let Err(e) = world().all_reduce_device(g) {
            self.failed = Some(e);
        }
        Ok(None)
    }
}
