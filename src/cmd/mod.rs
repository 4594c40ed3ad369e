//! One module per subcommand.

pub mod bench;
pub mod embed;
pub mod eval;
pub mod explain;
pub mod export;
pub mod finetune;
pub mod hf_processor;
pub mod inspect;
pub mod pack;
pub mod plot;
pub mod pretrain;
pub mod search;
pub mod tokenize;

/// A `--workers N` flag capped at the number of cores, with a note on stderr when it was
/// higher (more threads than cores only contend, and an absurd N would try to start that
/// many threads).
pub fn cap_workers(workers: usize) -> usize {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    if workers > cores {
        eprintln!("note: --workers {workers} capped at {cores}, the number of cores");
        cores
    } else {
        workers
    }
}
