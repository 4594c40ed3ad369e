//! One module per subcommand.

pub mod bench;
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
