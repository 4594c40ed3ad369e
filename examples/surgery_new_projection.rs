//! Model surgery experiment on the `Tiny` preset: see
//! [`gadms::surgery::experiments::new_projection`] (README "Model surgery").
//!
//! `cargo run --release --example surgery_new_projection [OUT_DIR]` (default `runs/surgery_new_projection`).

use gadms::surgery::experiments::{Settings, new_projection, out_dir, print};

fn main() -> anyhow::Result<()> {
    let outcome = new_projection(&Settings::new(out_dir("surgery_new_projection")))?;
    print(&outcome);
    Ok(())
}
