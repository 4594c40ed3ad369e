//! Manifest checks: shard file names confined to the dataset directory, no shard twice.

use crate::shard::config;
use gadms_data::manifest::{Dataset, Manifest};
use gadms_data::shard::{SampleIn, ShardInfo, ShardWriter};
use std::path::{Path, PathBuf};

fn tmpdir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("gadms-manifest-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn write(path: &Path) -> ShardInfo {
    let mut w = ShardWriter::create(path, &config()).unwrap();
    let mut ids = [0u32; 77];
    ids[..3].copy_from_slice(&[49406, 320, 49407]);
    w.push(&SampleIn {
        image: b"img",
        ids: &ids,
        caption: "a person",
        path: "img/0.jpg",
        pid: 0,
        image_id: 0,
        caption_idx: 0,
    })
    .unwrap();
    w.finish().unwrap()
}

/// Writes a manifest listing `files` (each a copy of `info` under that name) and returns the
/// error of opening the dataset.
fn open_error(dir: &Path, info: &ShardInfo, files: &[&str]) -> String {
    let shards = files
        .iter()
        .map(|f| ShardInfo {
            file: f.to_string(),
            ..info.clone()
        })
        .collect();
    Manifest::new(config(), shards, 1, 1, 0).write(dir).unwrap();
    let e = Dataset::open(dir, None)
        .err()
        .expect("open fails")
        .to_string();
    assert!(e.contains("manifest.json"), "{e}");
    assert!(Manifest::read(dir).is_err());
    e
}

#[test]
fn shard_listed_twice_is_an_error() {
    let dir = tmpdir("twice");
    let info = write(&dir.join("a.gshard"));
    let e = open_error(&dir, &info, &["a.gshard", "a.gshard"]);
    assert!(e.contains("'a.gshard' is listed twice"), "{e}");
    std::fs::create_dir_all(dir.join("sub")).unwrap();
    let sub = ShardInfo {
        file: "sub/b.gshard".into(),
        ..write(&dir.join("sub/b.gshard"))
    };
    let e = open_error(&dir, &sub, &["sub/b.gshard", "sub//b.gshard"]);
    assert!(e.contains("listed twice"), "{e}");
    // Both once: fine (a subdirectory is inside the dataset directory).
    Manifest::new(config(), vec![info, sub], 2, 1, 0)
        .write(&dir)
        .unwrap();
    assert_eq!(Dataset::open(&dir, None).unwrap().len(), 2);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn shard_files_outside_the_directory_are_errors() {
    let root = tmpdir("escape");
    let dir = root.join("ds");
    std::fs::create_dir_all(&dir).unwrap();
    // A real shard outside the dataset directory: reachable only by escaping it.
    let info = write(&root.join("outside.gshard"));
    let abs = root.join("outside.gshard").display().to_string();
    for file in [
        "../outside.gshard",
        abs.as_str(),
        "./outside.gshard",
        "",
        "sub/../../outside.gshard",
    ] {
        let e = open_error(&dir, &info, &[file]);
        assert!(e.contains("not a plain relative name"), "{file}: {e}");
    }
    std::fs::remove_dir_all(&root).unwrap();
}
