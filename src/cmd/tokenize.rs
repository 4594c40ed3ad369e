//! `gadms tokenize`: CLIP BPE ids of each caption line, as JSON.

use anyhow::{Context, Result, bail};
use argh::FromArgs;
use gadms_data::ClipTokenizer;
use std::path::PathBuf;

/// Print the 77 CLIP token ids of every line of a caption file as one JSON array per line
/// ([SOT] … [EOT], zero-padded; over-long captions are truncated with EOT kept last).
#[derive(FromArgs)]
#[argh(subcommand, name = "tokenize")]
pub struct TokenizeArgs {
    /// caption file, one caption per line (UTF-8)
    #[argh(option)]
    pub texts: PathBuf,
}

/// Reads a caption file: one caption per non-empty line; an empty file, a blank line or
/// invalid UTF-8 is an error naming the file and line.
pub fn read_captions(path: &std::path::Path) -> Result<Vec<String>> {
    let raw = std::fs::read(path)
        .with_context(|| format!("{}: cannot read caption file", path.display()))?;
    let text = String::from_utf8(raw).map_err(|e| {
        anyhow::anyhow!(
            "{}: not UTF-8 text (byte {})",
            path.display(),
            e.utf8_error().valid_up_to()
        )
    })?;
    let lines: Vec<&str> = text.lines().collect();
    let lines = match lines.last() {
        Some(l) if l.trim().is_empty() && lines.len() > 1 => &lines[..lines.len() - 1],
        _ => &lines[..],
    };
    if lines.is_empty() || lines.iter().all(|l| l.trim().is_empty()) {
        bail!(
            "{}: caption file is empty; write one caption per line",
            path.display()
        );
    }
    if let Some(i) = lines.iter().position(|l| l.trim().is_empty()) {
        bail!(
            "{}:{}: empty caption line; remove it or write a caption",
            path.display(),
            i + 1
        );
    }
    Ok(lines.iter().map(|l| l.to_string()).collect())
}

/// Runs the command.
pub fn run(a: TokenizeArgs) -> Result<()> {
    let caps = read_captions(&a.texts)?;
    let tok = ClipTokenizer::new()?;
    let mut out = String::new();
    for (i, c) in caps.iter().enumerate() {
        let ids = tok
            .encode(c)
            .with_context(|| format!("{}:{}", a.texts.display(), i + 1))?;
        out.push_str(&serde_json::to_string(&ids.to_vec())?);
        out.push('\n');
    }
    print!("{out}");
    Ok(())
}
