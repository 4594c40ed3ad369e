//! CUHK-PEDES (docs/method.md §9.2, IRRA `datasets/cuhkpedes.py`).
//!
//! `--src` is `reid_raw.json` or its directory; images are read from `imgs/<file_path>` beside it.
//! Rows: `{"split": "train"|"val"|"test", "captions": [str, …], "file_path": str, "id": int,
//! "processed_tokens": …}` (`processed_tokens` is ignored). `--split` selects the rows; a split
//! that is neither `train` nor `test` is `val`.
//!
//! * Train pid = `id − 1` (ids start at 1; the packed train pids should be contiguous from 0,
//!   and a warning says so when they are not). Test and val pid = `id`.
//! * Each caption of an image is one sample; `caption_idx` is its index in `captions`.
//! * `image_id` = index of the image among the split's usable rows, in file order.
//! * The official `caption_all.json` has no `split` field; packing it is an error that says so.

use super::PackError;
use super::bench_json::{BenchSource, BenchSpec};
use std::path::Path;

/// File name of the CUHK-PEDES caption file.
pub const FILE: &str = "reid_raw.json";

const SPEC: BenchSpec = BenchSpec {
    file: FILE,
    path_key: "file_path",
    train_id_offset: 1,
    name: "CUHK-PEDES",
};

pub(crate) fn open(src: &Path, split: &str) -> Result<BenchSource, PackError> {
    BenchSource::open(src, split, &SPEC)
}
