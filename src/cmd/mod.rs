//! One module per subcommand.

pub mod bench;
pub mod bench_loader;
pub mod bench_open;
pub mod embed;
pub mod eval;
pub mod export;
pub mod inspect;
pub mod pack;
pub mod tokenize;
