//! `gadms bench open`: time to open a manifest of many samples (simulated with sparse shards
//! whose index is real), to show opening does not grow with the dataset beyond the index.

use anyhow::Result;
use gadms_data::manifest::{Dataset, Manifest};
use gadms_data::shard::{ShardConfig, ShardInfo, write_sparse_shard};
use std::time::Instant;

/// Builds a sparse dataset of `samples` samples in `shard_size` shards under a temp dir, then
/// times `Dataset::open` (median of 5) and reading the pid of every 1000th sample.
pub fn run(samples: u64, shard_size: u64) -> Result<()> {
    let dir = std::env::temp_dir().join(format!("gadms-bench-open-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let config = ShardConfig {
        dataset: "simulated".into(),
        split: "train".into(),
        image_h: 384,
        image_w: 128,
        encoding: "jpeg95".into(),
        tokenizer_hash: gadms_data::tokenizer_hash(),
    };
    let t = Instant::now();
    let mut infos = Vec::new();
    let mut left = samples;
    while left > 0 {
        let n = left.min(shard_size);
        let file = format!("part-{:05}.gshard", infos.len());
        write_sparse_shard(&dir.join(&file), &config, n)?;
        let bytes = std::fs::metadata(dir.join(&file))?.len();
        infos.push(ShardInfo {
            file,
            count: n,
            bytes,
            hash: String::new(),
        });
        left -= n;
    }
    Manifest::new(config, infos, samples, samples, 0).write(&dir)?;
    eprintln!(
        "built {samples} samples in {:.1}s",
        t.elapsed().as_secs_f64()
    );
    let mut times = Vec::new();
    let mut ds = None;
    for _ in 0..5 {
        let t = Instant::now();
        ds = Some(Dataset::open(&dir, None)?);
        times.push(t.elapsed().as_secs_f64());
    }
    times.sort_by(f64::total_cmp);
    let ds = ds.expect("opened");
    let t = Instant::now();
    let mut sum = 0u64;
    for i in (0..ds.len()).step_by(1000) {
        let (s, j) = ds.locate(i).expect("in range");
        sum = sum.wrapping_add(ds.shards[s].pid(j)?);
    }
    let scan = t.elapsed().as_secs_f64();
    println!(
        "| open manifest of {samples} samples ({} shards) | {:.1} ms (median of 5) | index reads for {} samples: {:.1} ms (checksum {sum}) |",
        ds.shards.len(),
        times[2] * 1e3,
        ds.len().div_ceil(1000),
        scan * 1e3
    );
    drop(ds);
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}
