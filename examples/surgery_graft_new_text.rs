//! Model surgery experiment on the `Tiny` preset: see
//! [`gadms::surgery::experiments::graft_new_text`] (README "Model surgery").
//!
//! `cargo run --release --example surgery_graft_new_text [OUT_DIR]` (default `runs/surgery_graft_new_text`).

use gadms::surgery::experiments::{Settings, graft_new_text, out_dir, print};

fn main() -> anyhow::Result<()> {
    let outcome = graft_new_text(&Settings::new(out_dir("surgery_graft_new_text")))?;
    print(&outcome);
    Ok(())
}
