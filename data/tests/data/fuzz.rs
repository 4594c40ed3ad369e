//! Property test of the shard reader: random shards with random byte flips never make
//! `Shard::open`, `sample`, `pid` or `image_id` panic, and a flip from the bodies on is always
//! reported (the CRC-32 of shard format v2, docs/data-format.md).

use gadms_data::shard::{SampleIn, Shard, ShardConfig, ShardWriter};
use proptest::prelude::*;

fn config() -> ShardConfig {
    ShardConfig {
        dataset: "fuzz".into(),
        split: "train".into(),
        image_h: 4,
        image_w: 2,
        encoding: "png".into(),
        tokenizer_hash: "f".into(),
    }
}

/// A valid shard of samples with the given image lengths and caption word counts.
fn shard_bytes(dir: &std::path::Path, samples: &[(usize, usize)]) -> Vec<u8> {
    let path = dir.join("src.gshard");
    let mut w = ShardWriter::create(&path, &config()).unwrap();
    for (i, &(image_len, words)) in samples.iter().enumerate() {
        let mut ids = [0u32; 77];
        ids[0] = 49406;
        for k in 0..words {
            ids[1 + k] = 320 + (i * 31 + k * 7) as u32 % 40000;
        }
        ids[1 + words] = 49407;
        let img: Vec<u8> = (0..image_len).map(|k| (k * 13 + i) as u8).collect();
        w.push(&SampleIn {
            image: &img,
            ids: &ids,
            caption: &"word ".repeat(words),
            path: &format!("img/{i}.png"),
            pid: i as u64,
            image_id: i as u64 * 3,
            caption_idx: (i % 2) as u32,
        })
        .unwrap();
    }
    w.finish().unwrap();
    std::fs::read(&path).unwrap()
}

/// Opens `bytes` and reads everything; true when any step reported an error.
fn read_all(path: &std::path::Path, bytes: &[u8]) -> bool {
    std::fs::write(path, bytes).unwrap();
    let Ok(s) = Shard::open(path) else {
        return true;
    };
    let mut failed = false;
    for i in 0..s.len() {
        failed |= s.sample(i).is_err();
        failed |= s.pid(i).is_err() | s.image_id(i).is_err();
    }
    failed
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn random_flips_never_panic(
        samples in prop::collection::vec((0usize..300, 0usize..75), 1..5),
        flips in prop::collection::vec((any::<prop::sample::Index>(), 1u8..=255), 1..6),
    ) {
        let dir = std::env::temp_dir().join(format!("gadms-fuzz-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let good = shard_bytes(&dir, &samples);
        let n = good.len();
        let bodies = 32 + u64::from_le_bytes(good[24..32].try_into().unwrap()) as usize;
        let mut bad = good.clone();
        for (at, mask) in &flips {
            bad[at.index(n)] ^= mask;
        }
        let failed = read_all(&dir.join("bad.gshard"), &bad);
        // One changed byte from the bodies to the end: always reported.
        let changed: Vec<usize> = (0..n).filter(|&k| bad[k] != good[k]).collect();
        if changed.len() == 1 && changed[0] >= bodies {
            prop_assert!(failed, "flip at byte {} of {n} went unnoticed", changed[0]);
        }
        prop_assert!(!read_all(&dir.join("good.gshard"), &good));
    }
}
