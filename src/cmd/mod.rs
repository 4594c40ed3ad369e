//! One module per subcommand.

pub mod bench;
pub mod embed;
pub mod export;
pub mod inspect;
pub mod tokenize;
