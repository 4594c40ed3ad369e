//! `gadms` — GA-DMS text-based person retrieval: pretrain, finetune, embed, export, inspect,
//! bench, pack, eval, search, explain, plot.

use argh::FromArgs;
use gadms::cmd;

#[cfg(feature = "mpi")]
mod mpi;
#[cfg(all(feature = "mpi", feature = "cuda"))]
mod nccl;

/// How this binary joins a data-parallel job a launcher started (`gadms::dist::init`): MPI
/// when built with the `mpi` feature.
#[cfg(feature = "mpi")]
const JOIN: Option<gadms::dist::Join> = Some(mpi::join);
#[cfg(not(feature = "mpi"))]
const JOIN: Option<gadms::dist::Join> = None;

/// GA-DMS text-based person retrieval in Rust (CLIP on dfdx).
#[derive(FromArgs)]
struct Cli {
    #[argh(subcommand)]
    command: Command,
}

#[derive(FromArgs)]
#[argh(subcommand)]
enum Command {
    Pretrain(cmd::pretrain::PretrainArgs),
    Finetune(cmd::finetune::FinetuneArgs),
    Embed(cmd::embed::EmbedArgs),
    Tokenize(cmd::tokenize::TokenizeArgs),
    Export(cmd::export::ExportArgs),
    Inspect(cmd::inspect::InspectArgs),
    Bench(cmd::bench::BenchArgs),
    Pack(cmd::pack::PackArgs),
    Eval(cmd::eval::EvalArgs),
    Search(cmd::search::SearchArgs),
    Explain(cmd::explain::ExplainArgs),
    Plot(cmd::plot::PlotArgs),
}

fn main() {
    keep_freed_memory();
    if std::env::args().skip(1).eq(["--version"]) {
        println!("{}", gadms::build_info::version_line());
        return;
    }
    let cli: Cli = argh::from_env();
    // The main thread is worker 0 of rayon's global pool: serial code and the parallel kernels
    // share the RAYON_NUM_THREADS threads (a main thread outside the pool runs beside workers
    // that spin), and its allocations stay in glibc's main heap (a worker thread's own heap
    // maps and unmaps the large tensors: ~60 % more system time in the tower benchmarks).
    let res = match rayon::ThreadPoolBuilder::new()
        .use_current_thread()
        .build_global()
    {
        Ok(()) => dispatch(cli.command),
        Err(e) => Err(anyhow::anyhow!("cannot start the worker threads: {e}")),
    };
    // Leaves a data-parallel job cleanly, or ends all of its ranks after an error.
    gadms::dist::exit(res)
}

/// Tells glibc's malloc to keep freed memory: every step allocates and frees the same tensors,
/// and with glibc's defaults a large one (over 128 KiB to 32 MiB, e.g. the MTP logits, masked
/// tokens × 49,408) is mapped and unmapped each time and a shrinking heap is trimmed, so the
/// next step page-faults its pages in again, zeroed. Now every allocation comes from the heap
/// (no `mmap`) and the heap is never trimmed: the default-length `tiny` GA-DMS run spends 87 %
/// less time in the kernel and runs 25 % faster (docs/performance.md), at the same peak
/// memory. Other C libraries keep their own defaults.
fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets allocator parameters; it is called before any thread starts.
    unsafe {
        libc::mallopt(libc::M_MMAP_MAX, 0);
        libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX);
    }
}

fn dispatch(command: Command) -> anyhow::Result<()> {
    match command {
        // The training commands (and `bench train`) join the job's world when a launcher
        // started them.
        Command::Pretrain(a) => gadms::dist::init(JOIN).and_then(|_| cmd::pretrain::run(a)),
        Command::Finetune(a) => gadms::dist::init(JOIN).and_then(|_| cmd::finetune::run(a)),
        Command::Embed(a) => cmd::embed::run(a),
        Command::Tokenize(a) => cmd::tokenize::run(a),
        Command::Export(a) => cmd::export::run(a),
        Command::Inspect(a) => cmd::inspect::run(a),
        Command::Bench(a) => gadms::dist::init(JOIN).and_then(|_| cmd::bench::run(a)),
        Command::Pack(a) => cmd::pack::run(a),
        Command::Eval(a) => cmd::eval::run(a),
        Command::Search(a) => cmd::search::run(a),
        Command::Explain(a) => cmd::explain::run(a),
        Command::Plot(a) => cmd::plot::run(a),
    }
}
