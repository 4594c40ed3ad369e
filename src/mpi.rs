//! The MPI world of the `gadms` binary (feature `mpi`): the `mpi` crate (rsmpi) over the
//! system's MPI, e.g. Open MPI from Debian's `openmpi-bin` and `libopenmpi-dev`, behind the
//! library's [`Collective`] (docs/distributed.md). It is part of the binary, not the library,
//! so that building with the feature compiles only the binary again. Large buffers go in
//! chunks of [`CHUNK`] values (MPI counts are C ints).

use anyhow::{Result, bail};
use gadms::dist::Collective;
use mpi::Threading;
use mpi::collective::SystemOperation;
use mpi::environment::Universe;
use mpi::topology::{Communicator, SimpleCommunicator};
use mpi::traits::*;
use std::sync::{Mutex, MutexGuard, PoisonError};

/// Elements per collective call (MPI counts are C ints; 2^26 f32 = 256 MiB per call).
const CHUNK: usize = 1 << 26;

/// The job's MPI world.
pub struct MpiWorld {
    /// MPI's state; dropping it finalises MPI ([`Collective::finish`]).
    universe: Mutex<Option<Universe>>,
    /// `MPI_COMM_WORLD`; calls are serialised by `lock`.
    comm: SimpleCommunicator,
    lock: Mutex<()>,
    rank: usize,
    size: usize,
}

// SAFETY: MPI is initialised with `Threading::Serialized` (any thread may call MPI, one at a
// time), and every call through `comm` holds `lock`; the communicator handle itself is a
// plain value that MPI's functions take.
unsafe impl Send for MpiWorld {}
// SAFETY: as above.
unsafe impl Sync for MpiWorld {}

/// Joins the job's MPI world (`gadms::dist::init` calls it when a launcher started gadms).
///
/// # Errors
/// As [`MpiWorld::init`].
pub fn join() -> Result<Box<dyn Collective>> {
    Ok(Box::new(MpiWorld::init()?))
}

impl MpiWorld {
    /// Initialises MPI (`MPI_Init_thread`, serialised threading).
    ///
    /// # Errors
    /// If MPI was initialised already or does not offer serialised threading.
    pub fn init() -> Result<Self> {
        let Some((universe, threading)) = mpi::initialize_with_threading(Threading::Serialized)
        else {
            bail!("MPI is initialised already");
        };
        if threading < Threading::Serialized {
            bail!(
                "this MPI offers thread level {threading:?}; gadms needs Serialized (its \
                 collectives may run on any thread, one at a time)"
            );
        }
        let comm = universe.world();
        let (rank, size) = (comm.rank() as usize, comm.size() as usize);
        Ok(MpiWorld {
            universe: Mutex::new(Some(universe)),
            comm,
            lock: Mutex::new(()),
            rank,
            size,
        })
    }

    fn guard(&self) -> MutexGuard<'_, ()> {
        self.lock.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn gather<T: Equivalence + Copy + Default>(&self, local: &[T]) -> Vec<T> {
        let _g = self.guard();
        let mut out = vec![T::default(); local.len() * self.size];
        if local.len() <= CHUNK {
            self.comm.all_gather_into(local, &mut out[..]);
        } else {
            // Large buffers in chunks: chunk c of every rank, then into rank order.
            for lo in (0..local.len()).step_by(CHUNK) {
                let hi = (lo + CHUNK).min(local.len());
                let mut part = vec![T::default(); (hi - lo) * self.size];
                self.comm.all_gather_into(&local[lo..hi], &mut part[..]);
                for (r, p) in part.chunks_exact(hi - lo).enumerate() {
                    out[r * local.len() + lo..r * local.len() + hi].copy_from_slice(p);
                }
            }
        }
        out
    }

    /// The element-wise sum over the ranks, in place, with the same bits on every rank: each
    /// block of the (zero-padded) buffer is summed on one rank (`MPI_Reduce_scatter_block`)
    /// and copied to all (`MPI_Allgather`). A plain `MPI_Allreduce` may sum in a different
    /// order on different ranks, and the ranks' weights would drift apart by rounding.
    fn reduce<T: Equivalence + Copy + Default>(&self, buf: &mut [T]) {
        let _g = self.guard();
        for part in buf.chunks_mut(CHUNK) {
            let block = part.len().div_ceil(self.size);
            let mut send = vec![T::default(); block * self.size];
            send[..part.len()].copy_from_slice(part);
            let mut mine = vec![T::default(); block];
            self.comm
                .reduce_scatter_block_into(&send[..], &mut mine[..], SystemOperation::sum());
            self.comm.all_gather_into(&mine[..], &mut send[..]);
            part.copy_from_slice(&send[..part.len()]);
        }
    }

    /// The communicator, for NCCL's unique-id broadcast (`nccl.rs`).
    #[cfg(feature = "cuda")]
    pub(crate) fn broadcast_from_root(&self, bytes: &mut [u8]) {
        let _g = self.guard();
        self.comm.process_at_rank(0).broadcast_into(bytes);
    }
}

impl Collective for MpiWorld {
    fn rank(&self) -> usize {
        self.rank
    }
    fn size(&self) -> usize {
        self.size
    }
    fn all_gather_f32(&self, local: &[f32]) -> Vec<f32> {
        self.gather(local)
    }
    fn all_gather_f64(&self, local: &[f64]) -> Vec<f64> {
        self.gather(local)
    }
    fn all_gather_u64(&self, local: &[u64]) -> Vec<u64> {
        self.gather(local)
    }
    fn all_reduce_f32(&self, buf: &mut [f32]) {
        self.reduce(buf)
    }
    fn all_reduce_f64(&self, buf: &mut [f64]) {
        self.reduce(buf)
    }
    fn barrier(&self) {
        let _g = self.guard();
        self.comm.barrier();
    }
    fn abort(&self, code: i32) -> ! {
        self.comm.abort(code)
    }
    fn finish(&self) {
        let _g = self.guard();
        let u = self
            .universe
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        drop(u);
    }
    #[cfg(feature = "cuda")]
    fn all_reduce_device(&self, buf: &mut dyn std::any::Any) -> Result<()> {
        match buf.downcast_mut::<cudarc::driver::CudaSlice<f32>>() {
            Some(v) => crate::nccl::all_reduce_sum(self, v),
            None => bail!("data-parallel training supports the CPU and CUDA devices only"),
        }
    }
}
