//! Model surgery experiment on the `Tiny` preset: see
//! [`gadms::surgery::experiments::shallow_text`] (README "Model surgery").
//!
//! `cargo run --release --example surgery_shallow_text [OUT_DIR]` (default `runs/surgery_shallow_text`).

use gadms::surgery::experiments::{Settings, out_dir, print, shallow_text};

fn main() -> anyhow::Result<()> {
    let outcome = shallow_text(&Settings::new(out_dir("surgery_shallow_text")))?;
    print(&outcome);
    Ok(())
}
