//! `--skip-corrupt` through the binary (docs/cli.md, "Damaged shards"): with the flag, `eval`,
//! `search`, `pretrain` and `finetune` verify every sample first, leave the damaged ones out,
//! say so on stderr (`skipped N damaged sample(s) … SHARD sample i`) and record it (`--json`,
//! the run's `config.json` and checkpoints); without it the same files are one `error:` line.
//! A resumed run must find the same damaged samples.

use crate::corrupt::{entry_at, fails_on, flip, packed, u64_at, weights};
use gadms::train::data::pack_split;
use gadms::train::run_dir;
use gadms_data::manifest::Manifest;
use gadms_data::synth::{self, FIXTURE, SynthConfig};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn gadms(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_gadms"))
        .args(args)
        .output()
        .expect("cannot start the gadms binary")
}

/// Runs gadms, asserts success without a panic; returns (stdout, stderr).
fn ok(args: &[&str]) -> (String, String) {
    let o = gadms(args);
    let (so, se) = (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    );
    assert!(o.status.success(), "gadms {args:?}:\n{so}\n{se}");
    assert!(!se.contains("panicked"), "{se}");
    (so, se)
}

fn json(path: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

/// The `warning:` line of `--skip-corrupt`, asserted to name `n` samples, among them `sample
/// i` of `shard`.
fn skip_warning(se: &str, n: usize, shard: &Path, i: usize) {
    let line = se
        .lines()
        .find(|l| l.starts_with("warning: --skip-corrupt: skipped"))
        .unwrap_or_else(|| panic!("no --skip-corrupt line:\n{se}"));
    let plural = if n == 1 { "" } else { "s" };
    assert!(
        line.contains(&format!("skipped {n} damaged sample{plural} of")),
        "{line}"
    );
    let name = shard.file_name().unwrap().to_string_lossy();
    assert!(
        line.contains(&format!("{name} sample {i}")),
        "{line} (expected {name} sample {i})"
    );
}

#[test]
fn eval_and_search_leave_a_damaged_sample_out_with_the_flag() {
    let (dir, shard) = packed("skip-eval");
    let samples = Manifest::read(&dir).unwrap().samples;
    flip(&shard, |b| u64_at(b, entry_at(b, 3)) + 20); // sample 3's image
    let data = dir.display().to_string();
    let w = weights();
    let eval = ["eval", "--weights", &w, "--data", &data];
    fails_on(&eval, &shard, 3);
    let out = dir.with_extension("json");
    let o = out.display().to_string();
    let (so, se) = ok(&[&eval[..], &["--skip-corrupt", "--json", &o]].concat());
    skip_warning(&se, 1, &shard, 3);
    assert!(so.contains("(1 damaged sample left out)"), "{so}");
    let j = json(&out);
    assert_eq!(j["queries"], samples - 1, "{j}");
    assert_eq!(j["skipped"]["count"], 1, "{j}");
    let first = j["skipped"]["samples"][0].as_str().unwrap();
    assert!(first.contains("sample 3: body checksum"), "{first}");
    let search = [
        "search",
        "--weights",
        &w,
        "--gallery",
        &data,
        "--query",
        "a person",
        "--no-cache",
    ];
    fails_on(&search, &shard, 3);
    let (_, se) = ok(&[&search[..], &["--skip-corrupt"]].concat());
    skip_warning(&se, 1, &shard, 3);
    std::fs::remove_dir_all(&dir).unwrap();
    std::fs::remove_file(&out).unwrap();
}

/// 4 train ids (16 captions) and 3 test ids, packed under a fresh directory; returns it, the
/// train and test splits and the train split's (only) shard.
fn tiny_packed(tag: &str) -> (PathBuf, PathBuf, PathBuf, PathBuf) {
    let dir = std::env::temp_dir().join(format!("gadms-skip-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let cfg = SynthConfig {
        train_ids: 4,
        test_ids: 3,
        ..FIXTURE
    };
    synth::write_cuhk_pedes(&dir.join("raw"), &cfg).unwrap();
    let (train, test) = (dir.join("train"), dir.join("test"));
    pack_split(&dir.join("raw"), "train", &train).unwrap();
    pack_split(&dir.join("raw"), "test", &test).unwrap();
    let m = Manifest::read(&train).unwrap();
    assert_eq!((m.samples, m.shards.len()), (16, 1), "{m:?}");
    let shard = train.join(&m.shards[0].file);
    (dir, train, test, shard)
}

fn s(p: &Path) -> String {
    p.display().to_string()
}

#[test]
fn pretrain_skips_a_damaged_training_sample_and_resume_checks_the_same_are_skipped() {
    let (dir, train, test, shard) = tiny_packed("pretrain");
    flip(&shard, |b| u64_at(b, entry_at(b, 5)) + 20); // sample 5's image
    let (train, test) = (s(&train), s(&test));
    let base = [
        "pretrain",
        "--data",
        &train,
        "--eval-data",
        &test,
        "--epochs",
        "1",
        "--batch-size",
        "4",
        "--save-every",
        "2",
    ];
    let (run0, run) = (s(&dir.join("run0")), s(&dir.join("run")));
    fails_on(&[&base[..], &["--out", &run0]].concat(), &shard, 5);
    let (_, se) = ok(&[&base[..], &["--out", &run, "--skip-corrupt"]].concat());
    skip_warning(&se, 1, &shard, 5);
    // 15 usable captions: 3 batches of 4 (16 would give 4), each recorded.
    let config = json(&dir.join("run").join(run_dir::CONFIG_FILE));
    assert_eq!(config["steps_per_epoch"], 3, "{config}");
    let skipped = &config["data"]["train"]["skipped"];
    assert_eq!(skipped["count"], 1, "{config}");
    let first = skipped["samples"][0].as_str().unwrap();
    assert!(first.contains("sample 5: body checksum"), "{first}");
    assert_eq!(
        config["data"]["evals"][0]["skipped"]["count"], 0,
        "{config}"
    );
    let (_, st) = run_dir::latest(&dir.join("run")).unwrap();
    assert_eq!(st.skipped.as_ref().map(|s| s.count), Some(1), "{st:?}");
    // Another damaged sample since: --resume refuses, before rewriting config.json.
    flip(&shard, |b| u64_at(b, entry_at(b, 9)) + 20);
    let o = gadms(&["pretrain", "--resume", &run]);
    let se = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{se}");
    let err = se.lines().find(|l| l.starts_with("error:")).unwrap();
    assert!(
        err.contains("left out 1 (fingerprint") && err.contains("now has 2 (fingerprint"),
        "{err}"
    );
    let after = json(&dir.join("run").join(run_dir::CONFIG_FILE));
    assert_eq!(after, config, "config.json kept");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn finetune_skips_a_sample_whose_index_entry_is_damaged() {
    let (dir, train, test, shard) = tiny_packed("finetune");
    flip(&shard, |b| entry_at(b, 2) + 24); // sample 2's person id
    let (train, test, w) = (s(&train), s(&test), weights());
    let base = [
        "finetune",
        "--init",
        &w,
        "--data",
        &train,
        "--eval-data",
        &test,
        "--epochs",
        "1",
        "--batch-size",
        "4",
    ];
    let (run0, run) = (s(&dir.join("run0")), s(&dir.join("run")));
    fails_on(&[&base[..], &["--out", &run0]].concat(), &shard, 2);
    let (_, se) = ok(&[&base[..], &["--out", &run, "--skip-corrupt"]].concat());
    skip_warning(&se, 1, &shard, 2);
    let config = json(&dir.join("run").join(run_dir::CONFIG_FILE));
    assert_eq!(config["steps_per_epoch"], 3, "{config}");
    assert_eq!(config["train"]["skipped"]["count"], 1, "{config}");
    let first = config["train"]["skipped"]["samples"][0].as_str().unwrap();
    assert!(first.contains("sample 2: index entry checksum"), "{first}");
    std::fs::remove_dir_all(&dir).unwrap();
}
