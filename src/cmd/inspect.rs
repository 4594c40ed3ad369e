//! `gadms inspect`: what a weight file holds.

use anyhow::Result;
use argh::FromArgs;
use gadms_ckpt::clip_io::sizes;
use gadms_ckpt::{infer_preset, read_weights};
use std::path::PathBuf;

/// Show a weight file's layout, preset, parameter count, dtypes and metadata.
#[derive(FromArgs)]
#[argh(subcommand, name = "inspect")]
pub struct InspectArgs {
    /// weight file (safetensors)
    #[argh(positional)]
    pub weights: PathBuf,
}

/// Runs the command.
pub fn run(a: InspectArgs) -> Result<()> {
    let w = read_weights(&a.weights)?;
    let n = w.native.numel();
    println!("file:       {}", a.weights.display());
    println!("layout:     {}", w.layout);
    match infer_preset(&w.native) {
        Ok(p) => println!("preset:     {}", p.name),
        Err(e) => println!("preset:     none ({e})"),
    }
    if let Ok(s) = sizes(&w.native) {
        println!(
            "vision:     width {} patch {} layers {} mlp {} positions {}",
            s.vision_width, s.patch, s.vision_layers, s.vision_mlp, s.vision_positions
        );
        println!(
            "text:       width {} layers {} mlp {} vocab {} context {} embed {}",
            s.text_width, s.text_layers, s.text_mlp, s.vocab, s.ctx, s.embed
        );
    }
    println!("parameters: {n} ({:.2} M)", n as f64 / 1e6);
    let dt: Vec<String> = w
        .native
        .dtypes
        .iter()
        .map(|(k, v)| format!("{k} x{v}"))
        .collect();
    println!("dtypes:     {}", dt.join(", "));
    for (k, v) in &w.native.metadata {
        let v = if v.len() > 120 {
            format!("{}…", &v[..120])
        } else {
            v.clone()
        };
        println!("meta:       {k} = {v}");
    }
    Ok(())
}
