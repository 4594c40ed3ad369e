//! `gadms tokenize`: CLIP BPE ids of each caption line, as JSON.

use anyhow::{Context, Result, bail};
use argh::FromArgs;
use gadms_data::ClipTokenizer;
use std::io::{BufRead, BufReader, Read, Write};
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

/// Reads a caption file: one caption per non-empty line, as [`for_each_caption`] checks them.
pub fn read_captions(path: &Path) -> Result<Vec<String>> {
    let mut caps = Vec::new();
    for_each_caption(path, |_, c| {
        caps.push(c.to_string());
        Ok(())
    })?;
    Ok(caps)
}

/// Streams a caption file line by line (never the whole file at once), calling `f(line, text)`
/// for every caption (1-based line numbers): one caption per non-empty line; an empty file, a
/// blank line (one trailing blank line excepted), a line over [`MAX_LINE`] bytes or invalid
/// UTF-8 is an error naming the file and line. Returns the number of captions.
pub fn for_each_caption(
    path: &Path,
    mut each: impl FnMut(usize, &str) -> Result<()>,
) -> Result<usize> {
    let f = std::fs::File::open(path)
        .with_context(|| format!("{}: cannot read caption file", path.display()))?;
    let mut r = BufReader::new(f);
    let (mut caps, mut blanks, mut first_blank) = (0usize, 0usize, None);
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
            blanks += 1;
            first_blank.get_or_insert(line);
        } else {
            if let Some(b) = first_blank {
                bail!(
                    "{}:{b}: empty caption line; remove it or write a caption",
                    path.display()
                );
            }
            each(line, text)?;
            caps += 1;
        }
    }
    if caps == 0 {
        bail!(
            "{}: caption file is empty; write one caption per line",
            path.display()
        );
    }
    if let Some(b) = first_blank.filter(|_| blanks > 1) {
        bail!(
            "{}:{b}: empty caption line; remove it or write a caption",
            path.display()
        );
    }
    Ok(caps)
}

/// Runs the command: one JSON line per caption, written as the file is read (a caption file of
/// any length runs in constant memory; on an error the lines before it have been printed).
pub fn run(a: TokenizeArgs) -> Result<()> {
    let tok = ClipTokenizer::new()?;
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    for_each_caption(&a.texts, |line, c| {
        let ids = tok
            .encode(c)
            .with_context(|| format!("{}:{line}", a.texts.display()))?;
        serde_json::to_writer(&mut out, &ids.to_vec())?;
        out.write_all(b"\n")?;
        Ok(())
    })?;
    out.flush()?;
    Ok(())
}
