//! ICFG-PEDES (docs/method.md §9.3, IRRA `datasets/icfgpedes.py`).
//!
//! `--src` is `ICFG-PEDES.json` or its directory; images are read from `imgs/<file_path>`.
//! Rows: `{"split": "train"|"test", "file_path": str, "id": int, "captions": [str],
//! "processed_tokens": …}`.
//!
//! * pid = `id` in every split (train ids should be contiguous from 0; a warning says so when
//!   the packed ones are not).
//! * One caption per image (`caption_idx` 0); more are packed as further samples if present.
//! * `image_id` = index of the image among the split's usable rows, in file order.

use super::PackError;
use super::bench_json::{BenchSource, BenchSpec};
use std::path::Path;

/// File name of the ICFG-PEDES caption file (IRRA's README says `ICFG_PEDES.json`; its code
/// opens this one).
pub const FILE: &str = "ICFG-PEDES.json";

const SPEC: BenchSpec = BenchSpec {
    file: FILE,
    path_key: "file_path",
    train_id_offset: 0,
    name: "ICFG-PEDES",
};

pub(crate) fn open(src: &Path, split: &str) -> Result<BenchSource, PackError> {
    BenchSource::open(src, split, &SPEC)
}
