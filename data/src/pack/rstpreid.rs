//! RSTPReid (docs/method.md §9.4, IRRA `datasets/rstpreid.py`).
//!
//! `--src` is `data_captions.json` or its directory; images are read from `imgs/<img_path>`.
//! Rows: `{"id": int, "img_path": str, "captions": [str, str], "split": "train"|"val"|"test"}`
//! (the key is `img_path`, not `file_path`).
//!
//! * pid = `id` in every split (train ids should be contiguous from 0; a warning says so when
//!   the packed ones are not).
//! * Each caption is one sample; `caption_idx` is its index in `captions`.
//! * `image_id` = index of the image among the split's usable rows, in file order.

use super::PackError;
use super::bench_json::{BenchSource, BenchSpec};
use std::path::Path;

/// File name of the RSTPReid caption file.
pub const FILE: &str = "data_captions.json";

const SPEC: BenchSpec = BenchSpec {
    file: FILE,
    path_key: "img_path",
    train_id_offset: 0,
    name: "RSTPReid",
};

pub(crate) fn open(src: &Path, split: &str) -> Result<BenchSource, PackError> {
    BenchSource::open(src, split, &SPEC)
}
