//! A damaged shard through the binary (docs/cli.md, "Damaged shards"): `gadms eval` and
//! `gadms search` on a packed split with one flipped byte exit with status 1 and one `error:`
//! line naming the shard file and the sample, never a panic or a silently different result
//! (`--skip-corrupt`, which leaves such samples out, is tested in `skip_corrupt`).

use crate::common::fixture;
use gadms::train::data::pack_split;
use gadms_data::manifest::Manifest;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Index entry length of shard format v2 (docs/data-format.md).
const ENTRY_LEN: usize = 48;

/// The synthetic test split packed into a fresh `dir/tag`; returns it and its first shard.
pub(crate) fn packed(tag: &str) -> (PathBuf, PathBuf) {
    let dir = std::env::temp_dir().join(format!("gadms-corrupt-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    pack_split(&fixture("synth-pedes"), "test", &dir).unwrap();
    let m = Manifest::read(&dir).unwrap();
    assert!(m.shards[0].count > 3, "{m:?}");
    let shard = dir.join(&m.shards[0].file);
    (dir, shard)
}

pub(crate) fn u64_at(b: &[u8], at: usize) -> usize {
    u64::from_le_bytes(b[at..at + 8].try_into().unwrap()) as usize
}

/// Byte offset of sample `i`'s index entry.
pub(crate) fn entry_at(b: &[u8], i: usize) -> usize {
    u64_at(b, b.len() - 24) + i * ENTRY_LEN
}

pub(crate) fn flip(shard: &Path, at: impl Fn(&[u8]) -> usize) {
    let mut b = std::fs::read(shard).unwrap();
    let k = at(&b);
    b[k] ^= 0x10;
    std::fs::write(shard, &b).unwrap();
}

/// Runs gadms and asserts: status 1, no panic, exactly one `error:` line, naming the shard
/// file and `sample {i}`.
pub(crate) fn fails_on(args: &[&str], shard: &Path, i: usize) {
    let o = Command::new(env!("CARGO_BIN_EXE_gadms"))
        .args(args)
        .output()
        .expect("cannot start the gadms binary");
    let se = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "gadms {args:?}:\n{se}");
    assert!(!se.contains("panicked"), "panic instead of an error:\n{se}");
    let errors: Vec<&str> = se.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(errors.len(), 1, "{se}");
    let name = shard.file_name().unwrap().to_string_lossy();
    let line = errors[0];
    assert!(
        line.contains(name.as_ref()) && line.contains(&format!("sample {i}")),
        "{line}"
    );
    assert!(line.contains("checksum"), "{line}");
}

pub(crate) fn weights() -> String {
    let w = fixture("embed").join("tiny_openclip_f16.safetensors");
    w.display().to_string()
}

#[test]
fn eval_on_a_flipped_image_byte_is_one_error() {
    let (dir, shard) = packed("eval-body");
    // Inside sample 3's image: the body starts at the entry's offset.
    flip(&shard, |b| u64_at(b, entry_at(b, 3)) + 20);
    let data = dir.display().to_string();
    fails_on(
        &["eval", "--weights", &weights(), "--data", &data],
        &shard,
        3,
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn eval_on_a_flipped_person_id_is_one_error() {
    let (dir, shard) = packed("eval-pid");
    // Low byte of sample 2's pid in the index (a wrong pid would silently change the metrics).
    flip(&shard, |b| entry_at(b, 2) + 24);
    let data = dir.display().to_string();
    fails_on(
        &["eval", "--weights", &weights(), "--data", &data],
        &shard,
        2,
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn search_on_a_flipped_token_byte_is_one_error() {
    let (dir, shard) = packed("search");
    // Sample 1's first word-piece id, after its image (entry bytes 8..12: image length).
    flip(&shard, |b| {
        let e = entry_at(b, 1);
        let image_len = u32::from_le_bytes(b[e + 8..e + 12].try_into().unwrap()) as usize;
        u64_at(b, e) + image_len + 4
    });
    let data = dir.display().to_string();
    let args = [
        "search",
        "--weights",
        &weights(),
        "--gallery",
        &data,
        "--query",
        "a person",
        "--no-cache",
    ];
    fails_on(&args, &shard, 1);
    std::fs::remove_dir_all(&dir).unwrap();
}
