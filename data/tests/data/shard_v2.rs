//! Version-2 shards (config in bincode 1's encoding, written by gadms builds before the crate
//! was dropped) are still read: `fixtures/shard-v2` is such a pack, made by one of those builds
//! from the first two test images of `fixtures/synth-pedes`. New shards are version 3 with a
//! JSON config.

use gadms_data::manifest::Dataset;
use gadms_data::shard::{
    SHARD_VERSION, SampleIn, Shard, ShardConfig, ShardWriter, config_from_bincode1,
};
use gadms_data::tokenizer::tokenizer_hash;
use std::path::PathBuf;

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fixtures")
}

#[test]
fn a_version_2_pack_opens_and_reads() {
    let ds = Dataset::open(&fixtures().join("shard-v2"), Some(&tokenizer_hash())).unwrap();
    let shard = &ds.shards[0];
    let head = std::fs::read(fixtures().join("shard-v2/part-00000.gshard")).unwrap();
    assert_eq!(u32::from_le_bytes(head[8..12].try_into().unwrap()), 2);
    assert_eq!(
        shard.config(),
        &ShardConfig {
            dataset: "cuhk-pedes".into(),
            split: "test".into(),
            image_h: 64,
            image_w: 32,
            encoding: "jpeg95".into(),
            tokenizer_hash: tokenizer_hash(),
        }
    );
    let raw = std::fs::read_to_string(fixtures().join("synth-pedes/reid_raw.json")).unwrap();
    let v: serde_json::Value = serde_json::from_str(&raw).unwrap();
    let want: Vec<String> = v
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["split"] == "test")
        .take(2)
        .flat_map(|e| e["captions"].as_array().unwrap().clone())
        .map(|c| c.as_str().unwrap().to_string())
        .collect();
    assert_eq!(shard.len(), 4);
    for (i, w) in want.iter().enumerate() {
        let s = shard.sample(i).unwrap();
        assert_eq!(s.caption, w.as_str(), "sample {i}");
        assert!(!s.image.is_empty());
    }
}

/// The bincode-1 decoder on damaged configs: an error each, no panic, no allocation of a
/// length the bytes do not hold.
#[test]
fn damaged_version_2_configs_are_errors() {
    let good = {
        let b = std::fs::read(fixtures().join("shard-v2/part-00000.gshard")).unwrap();
        let len = u64::from_le_bytes(b[24..32].try_into().unwrap()) as usize;
        b[32..32 + len].to_vec()
    };
    assert_eq!(config_from_bincode1(&good).unwrap().split, "test");
    for cut in 0..good.len() {
        let e = config_from_bincode1(&good[..cut]).unwrap_err();
        assert!(e.contains("runs past the end"), "cut {cut}: {e}");
    }
    let mut huge = good.clone();
    huge[..8].copy_from_slice(&u64::MAX.to_le_bytes());
    assert!(config_from_bincode1(&huge).is_err());
    let mut trailing = good.clone();
    trailing.push(0);
    assert!(
        config_from_bincode1(&trailing)
            .unwrap_err()
            .contains("after the last field")
    );
    let mut bad_utf8 = good.clone();
    bad_utf8[8] = 0xff; // first byte of "cuhk-pedes"
    assert!(
        config_from_bincode1(&bad_utf8)
            .unwrap_err()
            .contains("not UTF-8")
    );
}

#[test]
fn new_shards_are_version_3_with_a_json_config() {
    let dir = std::env::temp_dir().join(format!("gadms-shard-v3-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let cfg = crate::shard::config();
    let path = dir.join("a.gshard");
    let mut w = ShardWriter::create(&path, &cfg).unwrap();
    let mut ids = [0u32; 77];
    (ids[0], ids[1], ids[2]) = (49406, 320, 49407);
    w.push(&SampleIn {
        image: b"img",
        ids: &ids,
        caption: "a",
        path: "p.png",
        caption_idx: 0,
        pid: 7,
        image_id: 1,
    })
    .unwrap();
    w.finish().unwrap();
    let b = std::fs::read(&path).unwrap();
    assert_eq!(
        u32::from_le_bytes(b[8..12].try_into().unwrap()),
        SHARD_VERSION
    );
    assert_eq!(SHARD_VERSION, 3);
    let len = u64::from_le_bytes(b[24..32].try_into().unwrap()) as usize;
    let json: ShardConfig = serde_json::from_slice(&b[32..32 + len]).unwrap();
    assert_eq!(json, cfg);
    let shard = Shard::open(&path).unwrap();
    assert_eq!(shard.config(), &cfg);
    assert_eq!(shard.sample(0).unwrap().pid, 7);
    std::fs::remove_dir_all(&dir).unwrap();
}
