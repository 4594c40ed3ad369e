//! Shard and manifest round trip, and the errors for damaged files.

use gadms_data::manifest::{Dataset, Manifest};
use gadms_data::shard::{SampleIn, Shard, ShardConfig, ShardWriter};
use std::path::PathBuf;

fn tmpdir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("gadms-shard-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn config() -> ShardConfig {
    ShardConfig {
        dataset: "test".into(),
        split: "train".into(),
        image_h: 4,
        image_w: 2,
        encoding: "png".into(),
        tokenizer_hash: "abc".into(),
    }
}

fn write(dir: &std::path::Path, name: &str, n: usize) -> gadms_data::shard::ShardInfo {
    let mut w = ShardWriter::create(&dir.join(name), &config()).unwrap();
    for i in 0..n {
        let mut ids = [0u32; 77];
        ids[0] = 49406;
        ids[1] = i as u32 + 1;
        ids[2] = 49407;
        let img = vec![i as u8; 10 + i];
        let cap = format!("caption {i} café");
        w.push(&SampleIn {
            image: &img,
            ids: &ids,
            caption: &cap,
            path: &format!("img/{i}.jpg"),
            pid: i as u64 / 2,
            image_id: i as u64,
            caption_idx: (i % 2) as u32,
        })
        .unwrap();
    }
    w.finish().unwrap()
}

#[test]
fn round_trip_through_manifest() {
    let dir = tmpdir("rt");
    let a = write(&dir, "a.gshard", 5);
    let b = write(&dir, "b.gshard", 3);
    Manifest::new(config(), vec![a, b], 8, 4, 0)
        .write(&dir)
        .unwrap();
    let ds = Dataset::open(&dir, Some("abc")).unwrap();
    assert_eq!(ds.len(), 8);
    assert_eq!(ds.locate(6), Some((1, 1)));
    let s = ds.shards[1].sample(2).unwrap();
    assert_eq!(s.image, &vec![2u8; 12][..]);
    assert_eq!(s.caption, "caption 2 café");
    assert_eq!(s.path, "img/2.jpg");
    assert_eq!((s.pid, s.image_id, s.caption_idx), (1, 2, 0));
    assert_eq!(&s.ids[..3], &[49406, 3, 49407]);
    let err = Dataset::open(&dir, Some("other"))
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("tokenizer mismatch"), "{err}");
    assert!(!dir.join("a.gshard.tmp").exists());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn damaged_files_give_clear_errors() {
    let dir = tmpdir("bad");
    let info = write(&dir, "a.gshard", 4);
    let path = dir.join("a.gshard");
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(dir.join("trunc.gshard"), &bytes[..bytes.len() - 10]).unwrap();
    let e = Shard::open(&dir.join("trunc.gshard"))
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("trunc.gshard") && e.contains("truncated"), "{e}");
    std::fs::write(
        dir.join("foreign.gshard"),
        b"PK\x03\x04 definitely a zip file, not a shard....",
    )
    .unwrap();
    let e = Shard::open(&dir.join("foreign.gshard"))
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("foreign.gshard") && e.contains("magic"), "{e}");
    let mut wrong = info.clone();
    wrong.count = 9;
    Manifest::new(config(), vec![wrong], 4, 2, 0)
        .write(&dir)
        .unwrap();
    let e = Dataset::open(&dir, None).err().unwrap().to_string();
    assert!(e.contains("manifest/shard mismatch"), "{e}");
    let e = Shard::open(&path)
        .unwrap()
        .sample(4)
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("out of range"), "{e}");
    std::fs::remove_dir_all(&dir).unwrap();
}
