//! NCCL on CUDA (the `gadms` binary's features `mpi` and `cuda`): the gradients of a
//! data-parallel CUDA run are summed on the devices by NCCL; MPI only carries NCCL's unique id
//! from rank 0 to the others, the pattern of NCCL's own examples ("Example 2: one device per process") and of
//! llm.c's `multi_gpu_config_init`.
//!
//! The communicator is made on the first call, on the device of the first gradient, and kept
//! for the thread (training calls its collectives from one thread). It runs on the stream of
//! dfdx's device (cudarc's `CudaDevice`), so it is ordered after the backward pass's kernels
//! and before the optimiser's.

use crate::mpi::MpiWorld;
use anyhow::Result;
use cudarc::driver::{CudaSlice, DeviceSlice};
use cudarc::nccl::{Comm, Id, ReduceOp};
use gadms::dist::Collective;
use std::cell::RefCell;

thread_local! {
    static COMM: RefCell<Option<Comm>> = const { RefCell::new(None) };
}

/// The NCCL unique id of rank 0, on every rank (broadcast by MPI).
fn shared_id(w: &MpiWorld) -> Result<Id> {
    let mut bytes = [0u8; 128];
    if w.rank() == 0 {
        let id = Id::new().map_err(|e| anyhow::anyhow!("ncclGetUniqueId: {e:?}"))?;
        for (b, c) in bytes.iter_mut().zip(id.internal()) {
            *b = *c as u8;
        }
    }
    w.broadcast_from_root(&mut bytes);
    Ok(Id::uninit(bytes.map(|b| b as std::ffi::c_char)))
}

/// Sums the device buffer `v` over the ranks of `w` in place (NCCL all-reduce on dfdx's
/// stream).
///
/// # Errors
/// NCCL or CUDA failing (the message names the call).
pub fn all_reduce_sum(w: &MpiWorld, v: &mut CudaSlice<f32>) -> Result<()> {
    COMM.with(|c| {
        let mut c = c.borrow_mut();
        if c.is_none() {
            let dev = v.device();
            dev.bind_to_thread()
                .map_err(|e| anyhow::anyhow!("binding the CUDA context: {e:?}"))?;
            let (rank, size) = (w.rank(), w.size());
            let comm = Comm::from_rank(dev, rank, size, shared_id(w)?)
                .map_err(|e| anyhow::anyhow!("ncclCommInitRank (rank {rank} of {size}): {e:?}"))?;
            *c = Some(comm);
        }
        let comm = c.as_ref().expect("made above");
        if v.len() == 0 {
            return Ok(());
        }
        let send = v
            .try_clone()
            .map_err(|e| anyhow::anyhow!("copying a gradient for NCCL: {e:?}"))?;
        comm.all_reduce(&send, v, &ReduceOp::Sum)
            .map_err(|e| anyhow::anyhow!("ncclAllReduce: {e:?}"))?;
        Ok(())
    })
}
