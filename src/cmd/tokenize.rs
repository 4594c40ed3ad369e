//! `gadms tokenize`: CLIP BPE ids of each caption line, as JSON.

use anyhow::{Context, Result, bail};
use argh::FromArgs;
use gadms_data::ClipTokenizer;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

/// Print the 77 CLIP token ids of every line of a caption file as one JSON array per line
/// ([SOT] … [EOT], zero-padded; over-long captions are truncated with EOT kept last).
#[derive(FromArgs)]
#[argh(subcommand, name = "tokenize")]
pub struct TokenizeArgs {
    /// caption file, one caption per line (UTF-8)
    #[argh(option)]
    pub texts: PathBuf,
}

/// The longest caption line read (bytes, without the newline): a caption is at most 77 tokens,
/// so a longer line is a wrong file (a binary, a JSON dump), refused by line number without
/// echoing it.
pub const MAX_LINE: usize = 64 * 1024;

/// Reads a caption file, streamed line by line (never the whole file at once): one caption per
/// non-empty line; an empty file, a blank line (one trailing blank line excepted), a line over
/// [`MAX_LINE`] bytes or invalid UTF-8 is an error naming the file and line.
pub fn read_captions(path: &Path) -> Result<Vec<String>> {
    let f = std::fs::File::open(path)
        .with_context(|| format!("{}: cannot read caption file", path.display()))?;
    let mut r = BufReader::new(f);
    let (mut caps, mut blanks) = (Vec::new(), Vec::new());
    let (mut buf, mut line, mut offset) = (Vec::new(), 0usize, 0u64);
    loop {
        buf.clear();
        let n = (&mut r)
            .take(MAX_LINE as u64 + 2)
            .read_until(b'\n', &mut buf)
            .with_context(|| format!("{}: cannot read caption file", path.display()))?;
        if n == 0 {
            break;
        }
        line += 1;
        if buf.last() == Some(&b'\n') {
            buf.pop();
            if buf.last() == Some(&b'\r') {
                buf.pop();
            }
        }
        if buf.len() > MAX_LINE {
            bail!(
                "{}:{line}: line longer than {} KiB; a caption file holds one caption (at most 77 \
                 tokens) per line",
                path.display(),
                MAX_LINE / 1024
            );
        }
        let text = std::str::from_utf8(&buf).map_err(|e| {
            anyhow::anyhow!(
                "{}:{line}: not UTF-8 text (byte {})",
                path.display(),
                offset + e.valid_up_to() as u64
            )
        })?;
        offset += n as u64;
        if text.trim().is_empty() {
            blanks.push(line);
        } else {
            if let Some(&b) = blanks.first() {
                bail!(
                    "{}:{b}: empty caption line; remove it or write a caption",
                    path.display()
                );
            }
            caps.push(text.to_string());
        }
    }
    if caps.is_empty() {
        bail!(
            "{}: caption file is empty; write one caption per line",
            path.display()
        );
    }
    if blanks.len() > 1 {
        bail!(
            "{}:{}: empty caption line; remove it or write a caption",
            path.display(),
            blanks[0]
        );
    }
    Ok(caps)
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
