//! Model surgery experiment on the `Tiny` preset: see
//! [`gadms::surgery::experiments::reinit_projection`] (README "Model surgery").
//!
//! `cargo run --release --example surgery_reinit_projection [OUT_DIR]` (default `runs/surgery_reinit_projection`).

use gadms::surgery::experiments::{Settings, out_dir, print, reinit_projection};

fn main() -> anyhow::Result<()> {
    let outcome = reinit_projection(&Settings::new(out_dir("surgery_reinit_projection")))?;
    print(&outcome);
    Ok(())
}
