//! The small packed dataset most run tests train on.

use gadms::train::data::pack_split;
use gadms_data::synth::{self, FIXTURE, SynthConfig};
use std::path::{Path, PathBuf};

/// 4 train ids and 3 test ids of the synthetic set, packed into `dir/train` and `dir/test`
/// (16 training captions).
pub fn tiny_packed(dir: &Path) -> (PathBuf, PathBuf) {
    let cfg = SynthConfig {
        train_ids: 4,
        test_ids: 3,
        ..FIXTURE
    };
    synth::write_cuhk_pedes(&dir.join("raw"), &cfg).unwrap();
    let (train, test) = (dir.join("train"), dir.join("test"));
    pack_split(&dir.join("raw"), "train", &train).unwrap();
    pack_split(&dir.join("raw"), "test", &test).unwrap();
    (train, test)
}
