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

/// The shard settings of the data tests (shared with `manifest` and `shard_v2`).
pub(crate) fn config() -> ShardConfig {
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
    let names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().to_string())
        .collect();
    assert!(!names.iter().any(|n| n.contains(".tmp")), "{names:?}");
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

/// Where a shard's parts lie: (index offset, entry length, bodies start).
fn layout(bytes: &[u8]) -> (usize, usize, usize) {
    let n = bytes.len();
    let u64_at = |at: usize| u64::from_le_bytes(bytes[at..at + 8].try_into().unwrap()) as usize;
    let (index_offset, count) = (u64_at(n - 24), u64_at(n - 16));
    (
        index_offset,
        (n - 24 - index_offset) / count,
        32 + u64_at(24),
    )
}

/// Recomputes sample `i`'s checksums after an edit (the body's when it lies inside the file,
/// then the entry's), so that the checks behind them are what a test reaches.
fn reseal(bytes: &mut [u8], i: usize) {
    let (index, entry, _) = layout(bytes);
    let at = index + i * entry;
    let u = |b: &[u8], at: usize| u32::from_le_bytes(b[at..at + 4].try_into().unwrap()) as u64;
    let off = u64::from_le_bytes(bytes[at..at + 8].try_into().unwrap());
    let len = u(bytes, at + 8) + 77 * 4 + u(bytes, at + 12) + u(bytes, at + 16);
    if let Some(end) = off.checked_add(len).filter(|&e| e <= index as u64) {
        let crc = crc32fast::hash(&bytes[off as usize..end as usize]);
        put_u32(bytes, at + 40, crc);
    }
    let crc = crc32fast::hash(&bytes[at..at + 44]);
    put_u32(bytes, at + 44, crc);
}

fn put_u64(bytes: &mut [u8], at: usize, v: u64) {
    bytes[at..at + 8].copy_from_slice(&v.to_le_bytes());
}

fn put_u32(bytes: &mut [u8], at: usize, v: u32) {
    bytes[at..at + 4].copy_from_slice(&v.to_le_bytes());
}

/// Writes `bytes` as `dir/name`, reads sample `i` and returns its error text (panics if the
/// read succeeds).
fn sample_error(dir: &std::path::Path, name: &str, bytes: &[u8], i: usize) -> String {
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    let shard = Shard::open(&path).unwrap();
    match shard.sample(i) {
        Ok(s) => panic!("sample {i} of {name} read as {s:?}"),
        Err(e) => e.to_string(),
    }
}

fn open_error(dir: &std::path::Path, name: &str, bytes: &[u8]) -> String {
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    Shard::open(&path).err().expect("open fails").to_string()
}

#[test]
fn damaged_index_and_bodies_are_errors_naming_shard_and_sample() {
    let dir = tmpdir("ranges");
    write(&dir, "a.gshard", 4);
    let good = std::fs::read(dir.join("a.gshard")).unwrap();
    let (index, entry, _) = layout(&good);
    let at = |i: usize| index + i * entry;
    let named = |e: &str, name: &str, i: usize| {
        assert!(
            e.contains(name) && e.contains(&format!("sample {i}")),
            "{e}"
        );
    };

    // A body offset near 2^64: the end wraps without checked arithmetic.
    let mut b = good.clone();
    put_u64(&mut b, at(1), u64::MAX - 100);
    reseal(&mut b, 1);
    let e = sample_error(&dir, "wrap.gshard", &b, 1);
    named(&e, "wrap.gshard", 1);
    assert!(
        Shard::open(&dir.join("wrap.gshard"))
            .unwrap()
            .sample(0)
            .is_ok()
    );

    // A caption length past the end of the body region.
    let mut b = good.clone();
    put_u32(&mut b, at(3) + 12, 1 << 20);
    reseal(&mut b, 3);
    let e = sample_error(&dir, "long.gshard", &b, 3);
    named(&e, "long.gshard", 3);
    assert!(e.contains("outside the body region"), "{e}");

    // A body offset inside the header/config.
    let mut b = good.clone();
    put_u64(&mut b, at(0), 3);
    reseal(&mut b, 0);
    named(&sample_error(&dir, "low.gshard", &b, 0), "low.gshard", 0);

    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn bad_token_ids_and_text_are_errors() {
    let dir = tmpdir("ids");
    write(&dir, "a.gshard", 4);
    let good = std::fs::read(dir.join("a.gshard")).unwrap();
    let (index, entry, _) = layout(&good);
    let u = |b: &[u8], at: usize| u32::from_le_bytes(b[at..at + 4].try_into().unwrap()) as usize;
    // Body of sample 2: image (12 bytes) | ids | caption | path.
    let off = u64::from_le_bytes(good[index + 2 * entry..][..8].try_into().unwrap()) as usize;
    let ids = off + u(&good, index + 2 * entry + 8);
    let caption = ids + 77 * 4;

    let mut b = good.clone();
    put_u32(&mut b, ids + 4, 60000);
    reseal(&mut b, 2);
    let e = sample_error(&dir, "vocab.gshard", &b, 2);
    assert!(
        e.contains("vocab.gshard") && e.contains("sample 2") && e.contains("60000"),
        "{e}"
    );

    let mut b = good.clone();
    put_u32(&mut b, ids, 320);
    reseal(&mut b, 2);
    assert!(sample_error(&dir, "sot.gshard", &b, 2).contains("SOT"));

    let mut b = good.clone();
    put_u32(&mut b, ids + 8, 0);
    reseal(&mut b, 2);
    assert!(sample_error(&dir, "eot.gshard", &b, 2).contains("EOT"));

    let mut b = good.clone();
    b[caption] = 0xff;
    reseal(&mut b, 2);
    assert!(sample_error(&dir, "utf8.gshard", &b, 2).contains("caption is not UTF-8"));

    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn damaged_footer_and_header_fail_open() {
    let dir = tmpdir("footer");
    write(&dir, "a.gshard", 3);
    let good = std::fs::read(dir.join("a.gshard")).unwrap();
    let n = good.len();
    for (name, at, v) in [
        ("index.gshard", n - 24, u64::MAX - 7),
        ("count.gshard", n - 16, u64::MAX / 3),
        ("config.gshard", 24, u64::MAX - 16),
    ] {
        let mut b = good.clone();
        put_u64(&mut b, at, v);
        let e = open_error(&dir, name, &b);
        assert!(
            e.contains(name) && e.contains("not a valid gadms shard"),
            "{e}"
        );
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn checksums_catch_flips_and_version_1_is_refused() {
    let dir = tmpdir("crc");
    write(&dir, "a.gshard", 4);
    let good = std::fs::read(dir.join("a.gshard")).unwrap();
    let (index, entry, _) = layout(&good);
    let off = u64::from_le_bytes(good[index + entry..][..8].try_into().unwrap()) as usize;

    // One bit of sample 1's image: same length, valid ranges; only the checksum sees it.
    let mut b = good.clone();
    b[off + 3] ^= 0x04;
    let e = sample_error(&dir, "body.gshard", &b, 1);
    assert!(
        e.contains("body.gshard") && e.contains("sample 1") && e.contains("body checksum"),
        "{e}"
    );

    // One bit of sample 2's person id in the index: pid() and sample() refuse it.
    let mut b = good.clone();
    b[index + 2 * entry + 24] ^= 0x01;
    let e = sample_error(&dir, "pid.gshard", &b, 2);
    assert!(
        e.contains("sample 2") && e.contains("index entry checksum"),
        "{e}"
    );
    let shard = Shard::open(&dir.join("pid.gshard")).unwrap();
    assert!(shard.pid(2).is_err() && shard.image_id(2).is_err());
    assert_eq!(shard.pid(1).unwrap(), 0);

    // A version-1 shard (no checksums) is refused with what to do.
    let mut b = good.clone();
    put_u32(&mut b, 8, 1);
    let e = open_error(&dir, "v1.gshard", &b);
    assert!(
        e.contains("v1.gshard") && e.contains("version 1") && e.contains("gadms pack"),
        "{e}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Every single-byte flip of a small shard: opening and reading every sample never panics, and
/// a flip anywhere from the bodies to the end of the file is an error.
#[test]
fn no_byte_flip_panics() {
    let dir = tmpdir("flips");
    write(&dir, "a.gshard", 3);
    let good = std::fs::read(dir.join("a.gshard")).unwrap();
    let path = dir.join("f.gshard");
    let (_, _, bodies) = layout(&good);
    for at in 0..good.len() {
        for mask in [0x01u8, 0x80, 0xff] {
            let mut b = good.clone();
            b[at] ^= mask;
            std::fs::write(&path, &b).unwrap();
            let mut failed = false;
            match Shard::open(&path) {
                Ok(s) => {
                    for i in 0..s.len() {
                        failed |= s.sample(i).is_err();
                        failed |= s.pid(i).is_err() | s.image_id(i).is_err();
                    }
                }
                Err(_) => failed = true,
            }
            assert!(
                failed || at < bodies,
                "flip {mask:#x} at byte {at} went unnoticed"
            );
        }
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Read cost of the v2 checks (benches/RESULTS.md): `sample()` over 2000 samples of 20 kB
/// images (a 384×128 JPEG's size), against CRC-32 of the same bodies alone. Run with
/// `CARGO_PROFILE_DEV_PACKAGE_GADMS_DATA_OPT_LEVEL=3 cargo test -p gadms-data --test data
/// read_cost -- --ignored --nocapture`.
#[test]
#[ignore]
fn read_cost() {
    let dir = tmpdir("cost");
    let path = dir.join("cost.gshard");
    let (n, image_len, rounds) = (2000usize, 20_000usize, 5);
    let mut w = ShardWriter::create(&path, &config()).unwrap();
    let mut ids = [0u32; 77];
    ids[..4].copy_from_slice(&[49406, 320, 2533, 49407]);
    let mut x = 0x9e37_79b9u32;
    for i in 0..n {
        let img: Vec<u8> = (0..image_len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                x as u8
            })
            .collect();
        let cap = format!("a person in a red coat {i}");
        let p = format!("img/{i}.jpg");
        let s = SampleIn {
            image: &img,
            ids: &ids,
            caption: &cap,
            path: &p,
            pid: i as u64,
            image_id: i as u64,
            caption_idx: 0,
        };
        w.push(&s).unwrap();
    }
    w.finish().unwrap();
    let shard = Shard::open(&path).unwrap();
    let time = |f: &dyn Fn() -> usize| {
        let mut best = f64::MAX;
        let mut sink = 0;
        for _ in 0..rounds {
            let t = std::time::Instant::now();
            sink += f();
            best = best.min(t.elapsed().as_secs_f64());
        }
        (best, sink)
    };
    let (read, a) = time(&|| (0..n).map(|i| shard.sample(i).unwrap().image.len()).sum());
    let bodies: Vec<&[u8]> = (0..n).map(|i| shard.sample(i).unwrap().image).collect();
    let (crc, b) = time(&|| bodies.iter().map(|b| crc32fast::hash(b) as usize & 1).sum());
    let us = |s: f64| s * 1e6 / n as f64;
    println!(
        "| sample() with v2 checks | {:.2} µs/sample | {:.0} MB/s | CRC-32 of the images alone: {:.2} µs/sample ({:.0} MB/s) | ({a}, {b}) |",
        us(read),
        (n * image_len) as f64 / read / 1e6,
        us(crc),
        (n * image_len) as f64 / crc / 1e6
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
