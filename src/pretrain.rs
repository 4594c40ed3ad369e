//! Placeholder until the pretraining loop lands (being written now).
use argh::FromArgs;
/// Pretrain (placeholder).
#[derive(FromArgs)]
#[argh(subcommand, name = "pretrain")]
pub struct PretrainArgs {}
/// Runs pretraining.
pub fn run(_a: PretrainArgs) -> anyhow::Result<()> {
    anyhow::bail!("pretrain is not built yet")
}
