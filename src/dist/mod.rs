//! Data-parallel training over processes started by MPI (docs/distributed.md).
//!
//! `mpirun -np N gadms pretrain …` (or `srun --mpi=pmix …`) starts N copies of the program. A
//! `gadms` binary built with the `mpi` feature hands [`init`] its way of joining the job (MPI
//! itself is in the binary, `src/mpi.rs`, so that the feature does not change this library);
//! [`world`] is then the job's communicator, and a plain run (no launcher) has the one-process
//! world [`Single`], whose collectives return their input. The training step
//! ([`crate::train::accum`]) calls only these collectives, so every recipe runs data-parallel
//! through the same code:
//!
//! * each rank's loader builds its equal share of the global batch (one global order per
//!   epoch, `gadms_data::loader::Part`);
//! * pass 1 of the exact accumulation scheme encodes the rank's micro-batches without a tape
//!   and [`Collective::all_gather_f32`] gives every rank the features of the whole global
//!   batch; pass 2 computes the global batch's loss with the rank's own rows live, so the
//!   gradient reaches only the parameters through the rows this rank made (open_clip's
//!   `gather_with_grad` with the full loss on every rank, `src/open_clip/loss.py`,
//!   `gather_features`);
//! * the parameter gradients are summed over the ranks ([`grads::all_reduce_grads`]), and every
//!   rank applies the same update to the same weights;
//! * GA-DMS's GASS scores of the whole global batch are gathered and written into every rank's
//!   score table, so the tables stay identical.
//!
//! Rank 0 alone writes the run directory and prints; the other ranks' standard output is
//! discarded. An error on any rank ends the whole job (`MPI_Abort`), and a rank that dies
//! (kill -9) makes the launcher end the others.
//!
//! On the CPU the collectives are MPI's; on CUDA the gradients are summed by NCCL on the
//! device ([`Collective::all_reduce_device`]; the binary's `src/nccl.rs`, MPI only broadcasts
//! NCCL's unique id).

pub mod grads;

use anyhow::{Result, bail};
use std::any::Any;
use std::sync::OnceLock;

/// A group of processes training one model: collectives over host buffers. Every rank must
/// make the same calls in the same order, with buffers of the same length.
pub trait Collective: Send + Sync {
    /// This process's rank, `0..size`.
    fn rank(&self) -> usize;
    /// Processes in the job.
    fn size(&self) -> usize;
    /// The ranks' `local` buffers (all of one length) concatenated in rank order.
    fn all_gather_f32(&self, local: &[f32]) -> Vec<f32>;
    /// As [`Collective::all_gather_f32`].
    fn all_gather_f64(&self, local: &[f64]) -> Vec<f64>;
    /// As [`Collective::all_gather_f32`].
    fn all_gather_u64(&self, local: &[u64]) -> Vec<u64>;
    /// Element-wise sum over the ranks, in place.
    fn all_reduce_f32(&self, buf: &mut [f32]);
    /// As [`Collective::all_reduce_f32`].
    fn all_reduce_f64(&self, buf: &mut [f64]);
    /// Waits for every rank.
    fn barrier(&self);
    /// Ends every process of the job with exit code `code` (after an error on this rank).
    fn abort(&self, code: i32) -> !;
    /// Leaves the job cleanly (`MPI_Finalize`); nothing may be called afterwards.
    fn finish(&self);
    /// Element-wise sum over the ranks, in place, of one gradient buffer on a device (`buf` is
    /// the device's storage, e.g. CUDA's `CudaSlice<f32>`). By default an error: only a world
    /// that has device collectives (NCCL in a binary with the `mpi` and `cuda` features) can.
    ///
    /// # Errors
    /// A buffer this world cannot sum, or the collective failing.
    fn all_reduce_device(&self, buf: &mut dyn Any) -> Result<()> {
        let _ = buf;
        bail!(
            "data-parallel training on this device needs a gadms built with the `mpi` and `cuda` \
             features"
        )
    }
}

/// The one-process world: every collective returns its input.
#[derive(Debug, Default)]
pub struct Single;

impl Collective for Single {
    fn rank(&self) -> usize {
        0
    }
    fn size(&self) -> usize {
        1
    }
    fn all_gather_f32(&self, local: &[f32]) -> Vec<f32> {
        local.to_vec()
    }
    fn all_gather_f64(&self, local: &[f64]) -> Vec<f64> {
        local.to_vec()
    }
    fn all_gather_u64(&self, local: &[u64]) -> Vec<u64> {
        local.to_vec()
    }
    fn all_reduce_f32(&self, _buf: &mut [f32]) {}
    fn all_reduce_f64(&self, _buf: &mut [f64]) {}
    fn barrier(&self) {}
    fn abort(&self, code: i32) -> ! {
        std::process::exit(code)
    }
    fn finish(&self) {}
}

static JOINED: OnceLock<Box<dyn Collective>> = OnceLock::new();
static SINGLE: Single = Single;

/// The job's world: the one [`init`] joined, else [`Single`].
pub fn world() -> &'static dyn Collective {
    match JOINED.get() {
        Some(w) => w.as_ref(),
        None => &SINGLE,
    }
}

/// How a binary joins the job a launcher started (MPI's `MPI_Init_thread` and world), given
/// to [`init`]; `None` in a binary built without MPI.
pub type Join = fn() -> Result<Box<dyn Collective>>;

/// True on the rank that writes the run directory and prints (rank 0).
pub fn is_root() -> bool {
    world().rank() == 0
}

/// How many processes a launcher started and which environment variable says so, when this
/// process was started by one (`mpirun`/`mpiexec` of Open MPI or MPICH, `srun`).
pub fn launched_size() -> Option<(usize, &'static str)> {
    const VARS: [&str; 3] = ["OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_SIZE"];
    let from = |name: &'static str| {
        let n = std::env::var(name).ok()?.trim().parse().ok()?;
        Some((n, name))
    };
    VARS.into_iter().find_map(from).or_else(|| {
        // `srun --mpi=pmix` sets the PMIx rank but the size only in Slurm's own variable.
        std::env::var_os("PMIX_RANK").and_then(|_| from("SLURM_NTASKS"))
    })
}

/// This process's rank among those of its node (which GPU it takes), from the launcher.
pub fn local_rank() -> usize {
    [
        "OMPI_COMM_WORLD_LOCAL_RANK",
        "MPI_LOCALRANKID",
        "SLURM_LOCALID",
    ]
    .into_iter()
    .find_map(|v| std::env::var(v).ok()?.trim().parse().ok())
    .unwrap_or(0)
}

/// Joins the job's world when a launcher started this process (a training command). Without
/// a launcher nothing happens: the run is the one-process run. Started by a launcher, a binary
/// with MPI (`join`) initialises it and installs its world; one without refuses to train N
/// separate copies.
///
/// # Errors
/// A launcher with a binary built without the `mpi` feature (more than one process), or MPI
/// failing to start.
pub fn init(join: Option<Join>) -> Result<()> {
    let Some((n, var)) = launched_size() else {
        return Ok(());
    };
    if let Some(join) = join {
        let w = join()?;
        if w.size() != n {
            bail!(
                "the launcher says {n} processes but MPI's world has {}: was gadms started by \
                 another MPI's mpirun than the one it was built with?",
                w.size()
            );
        }
        if w.rank() != 0 {
            quiet_stdout();
        }
        return JOINED
            .set(w)
            .map_err(|_| anyhow::anyhow!("the process already joined a world"));
    }
    if n > 1 {
        bail!(
            "started by an MPI launcher as one of {n} processes ({var}={n}), but this gadms \
             was built without the `mpi` feature: the {n} copies would each train the same \
             model alone into the same run directory. Build with `cargo build --release \
             --features mpi` (needs Open MPI: apt-get install openmpi-bin libopenmpi-dev \
             libclang-dev; docs/distributed.md), or run without mpirun"
        );
    }
    Ok(())
}

/// Sends this process's standard output to /dev/null (every rank but 0: one copy of the
/// run's output). Errors still reach standard error.
fn quiet_stdout() {
    use std::os::fd::AsRawFd;
    if let Ok(null) = std::fs::OpenOptions::new().write(true).open("/dev/null") {
        // SAFETY: dup2 on two open descriptors; stdout (1) now refers to /dev/null.
        unsafe {
            libc::dup2(null.as_raw_fd(), 1);
        }
    }
}

/// Ends the program after `res`: leaves the job cleanly on success; on an error prints it
/// (with the rank when there are several) and ends every rank of the job.
pub fn exit(res: Result<()>) -> ! {
    use std::io::Write;
    let _ = std::io::stdout().flush();
    let w = world();
    match res {
        Ok(()) => {
            w.finish();
            std::process::exit(0)
        }
        Err(e) if w.size() > 1 => {
            eprintln!("error (rank {} of {}): {e:#}", w.rank(), w.size());
            eprintln!("gadms: ending every rank of the job (MPI_Abort)");
            w.abort(1)
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            w.finish();
            std::process::exit(1)
        }
    }
}
