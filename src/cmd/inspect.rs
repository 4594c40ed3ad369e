//! `gadms inspect`: what a weight file holds. A diagnosis tool: a file holding NaN or ±Inf
//! (which every loading command refuses) is reported, key by key, not refused; the exit status
//! is 0 whenever the file could be read.

use anyhow::Result;
use argh::FromArgs;
use gadms_ckpt::clip_io::sizes;
use gadms_ckpt::infer_preset;
use gadms_ckpt::layout::to_native;
use gadms_ckpt::tensors::read_file;
use std::path::PathBuf;

/// Show a weight file's layout, preset, parameter count, dtypes and metadata, and which
/// tensors hold non-finite values (NaN or Inf), if any (exit status 0 either way).
#[derive(FromArgs)]
#[argh(subcommand, name = "inspect")]
pub struct InspectArgs {
    /// weight file (safetensors or a torch.save .pt/.pth/.bin checkpoint)
    #[argh(positional)]
    pub weights: PathBuf,
}

/// Runs the command.
pub fn run(a: InspectArgs) -> Result<()> {
    let file = read_file(&crate::weights::weight_file(&a.weights)?)?;
    // Counted under the file's own keys, before the conversion to native names.
    let non_finite: Vec<(String, usize)> = file
        .tensors
        .iter()
        .map(|(k, t)| (k.clone(), t.data.iter().filter(|x| !x.is_finite()).count()))
        .filter(|(_, n)| *n > 0)
        .collect();
    let tensors = file.tensors.len();
    let (layout, native) = to_native(file)?;
    let w = gadms_ckpt::Weights { layout, native };
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
    if non_finite.is_empty() {
        println!("finite:     yes (no NaN or Inf)");
    } else {
        println!(
            "finite:     no, {} of {tensors} tensors hold NaN or Inf; the loading commands \
             (embed, eval, search, explain, export, --init) refuse this file",
            non_finite.len()
        );
        for (k, n) in &non_finite {
            println!("non-finite: {k} holds {n} non-finite values");
        }
    }
    Ok(())
}
