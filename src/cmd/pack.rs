//! `gadms pack`: a public dataset → shards + manifest (see [`gadms_data::pack`]).

use anyhow::Result;
use argh::FromArgs;
use gadms_data::pack::{self, Format, PackOptions, Progress};
use indicatif::{ProgressBar, ProgressStyle};
use std::path::PathBuf;

/// Pack a dataset into shards (images resized and re-encoded once, captions tokenized once) plus
/// a manifest. Parallel, deterministic (same shards for any --workers) and restartable: a rerun
/// into the same --out skips finished shards. Skipped rows are listed in OUT/rejects.jsonl.
#[derive(FromArgs)]
#[argh(subcommand, name = "pack")]
pub struct PackArgs {
    /// source format: webperson-parquet, webperson-json, cuhk-pedes, icfg-pedes or rstpreid
    #[argh(option)]
    pub format: String,
    /// source: the caption JSON or its directory (images in images/ or imgs/ beside it); for
    /// webperson-parquet a directory with data/train-*.parquet, a directory of *.parquet, or a file
    #[argh(option)]
    pub src: PathBuf,
    /// output directory (created; rerunning into it resumes)
    #[argh(option)]
    pub out: PathBuf,
    /// split for the benchmark formats: train (default), val or test (anything else is an error)
    #[argh(option, default = "String::from(\"train\")")]
    pub split: String,
    /// stored image size HEIGHTxWIDTH (default 384x128)
    #[argh(option, default = "String::from(\"384x128\")")]
    pub image_size: String,
    /// worker threads (default: all cores; more than the cores is capped at the cores)
    #[argh(option, default = "0")]
    pub workers: usize,
    /// store images as PNG instead of JPEG quality 95
    #[argh(switch)]
    pub lossless: bool,
    /// source images per shard (default 5000)
    #[argh(option, default = "pack::DEFAULT_SHARD_SIZE")]
    pub shard_size: u64,
    /// read images through symbolic links that lead outside the dataset root (by default they
    /// are rejected)
    #[argh(switch)]
    pub follow_symlinks: bool,
}

struct Bar(ProgressBar);

impl Progress for Bar {
    fn start(&self, total: u64) {
        self.0.set_length(total);
        self.0.reset_eta();
    }
    fn advance(&self, n: u64) {
        self.0.inc(n);
    }
}

/// Runs the command: packs, then prints warnings (stderr) and the summary line (stdout).
pub fn run(a: PackArgs) -> Result<()> {
    let format: Format = a.format.parse()?;
    let (image_h, image_w) = pack::parse_image_size(&a.image_size)?;
    let workers = super::cap_workers(a.workers);
    let opts = PackOptions {
        split: a.split,
        image_h,
        image_w,
        workers,
        lossless: a.lossless,
        follow_symlinks: a.follow_symlinks,
        shard_size: a.shard_size,
        ..PackOptions::new(format, a.src, a.out)
    };
    let bar = ProgressBar::new(0);
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {wide_bar} {pos}/{len} images ({per_sec}, ETA {eta})",
        )
        .expect("valid template")
        .progress_chars("=> "),
    );
    let bar = Bar(bar);
    let res = pack::pack(&opts, &bar);
    bar.0.finish_and_clear();
    let report = res?;
    for w in &report.warnings {
        eprintln!("warning: {w}");
    }
    if report.reused_shards > 0 {
        eprintln!(
            "reused {} of {} shards finished by an earlier run",
            report.reused_shards, report.chunks
        );
    }
    println!("{}", report.summary_line());
    Ok(())
}
