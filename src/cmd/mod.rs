//! One module per subcommand.

pub mod bench;
pub mod bench_flops;
pub mod bench_gemm;
pub mod bench_loader;
pub mod bench_open;
pub mod bench_train;
pub mod embed;
pub mod eval;
pub mod explain;
pub mod export;
pub mod finetune;
pub mod inspect;
pub mod pack;
pub mod plot;
pub mod pretrain;
pub mod search;
pub mod tokenize;
