//! One module per subcommand.

pub mod bench;
pub mod bench_loader;
pub mod embed;
pub mod export;
pub mod inspect;
pub mod pack;
pub mod tokenize;
