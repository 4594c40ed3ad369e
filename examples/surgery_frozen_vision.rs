//! Model surgery experiment on the `Tiny` preset: see
//! [`gadms::surgery::experiments::frozen_vision`] (README "Model surgery").
//!
//! `cargo run --release --example surgery_frozen_vision [OUT_DIR]` (default `runs/surgery_frozen_vision`).

use gadms::surgery::experiments::{Settings, frozen_vision, out_dir, print};

fn main() -> anyhow::Result<()> {
    let outcome = frozen_vision(&Settings::new(out_dir("surgery_frozen_vision")))?;
    print(&outcome);
    Ok(())
}
