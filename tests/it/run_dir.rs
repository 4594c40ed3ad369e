//! Run directories are never damaged: every input is checked before the first write, a fresh
//! run does not write into an earlier run (unless `--overwrite`), a live run's directory is
//! locked, `--resume` takes no `--out`, and a checkpoint state that does not fit its run is
//! refused. All through the `gadms` binary.

use crate::packed::tiny_packed;
use gadms::train::run_dir::{self, LOCK_FILE};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_gadms");

fn temp_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("gadms-rundir-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// `gadms pretrain` on the tiny set into `run`, one epoch of batch 4, plus `extra`.
fn pretrain(train: &Path, test: &Path, run: &Path, extra: &[&str]) -> Output {
    let mut args = vec!["pretrain", "--data", s(train), "--eval-data", s(test)];
    args.extend([
        "--epochs",
        "1",
        "--batch-size",
        "4",
        "--save-every",
        "2",
        "--out",
        s(run),
    ]);
    args.extend(extra);
    Command::new(BIN).args(&args).output().unwrap()
}

/// Exit status 1 and exactly one `error:` line containing every needle; returns it.
fn error_line(out: &Output, needles: &[&str]) -> String {
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    let lines: Vec<&str> = err.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(lines.len(), 1, "{err}");
    for n in needles {
        assert!(lines[0].contains(n), "'{n}' not in: {}", lines[0]);
    }
    lines[0].to_string()
}

/// Every file under `dir` with its bytes.
fn snapshot(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push((p.clone(), std::fs::read(&p).unwrap()));
            }
        }
    }
    out.sort();
    out
}

#[test]
fn an_existing_run_is_never_damaged() {
    let dir = temp_dir("existing");
    let (train, test) = tiny_packed(&dir);
    let run = dir.join("run");
    assert!(pretrain(&train, &test, &run, &[]).status.success());
    assert!(!run.join(LOCK_FILE).exists(), "the lock goes with the run");
    let before = snapshot(&run);

    // A fresh run into it, with a bad --init, a bad --eval-data, or nothing wrong at all.
    let bad = dir.join("bad.safetensors");
    std::fs::write(&bad, b"not a weight file").unwrap();
    let out = pretrain(&train, &test, &run, &["--init", s(&bad), "--overwrite"]);
    error_line(&out, &["bad.safetensors"]);
    let out = pretrain(&train, &dir.join("nope"), &run, &["--overwrite"]);
    error_line(&out, &["--eval-data"]);
    let out = pretrain(&train, &test, &run, &["--seed", "1"]);
    error_line(&out, &["not empty", "--overwrite", "--resume"]);
    // --resume with another --out, and a state that does not fit the run.
    let other = dir.join("other");
    let out = Command::new(BIN)
        .args(["pretrain", "--resume", s(&run), "--out", s(&other)])
        .output()
        .unwrap();
    error_line(&out, &["drop --out"]);
    assert!(!other.exists());
    assert_eq!(snapshot(&run), before, "nothing in the run changed");

    // --overwrite replaces it.
    let out = pretrain(&train, &test, &run, &["--seed", "1", "--overwrite"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let config = std::fs::read_to_string(run.join("config.json")).unwrap();
    assert!(config.contains("\"seed\": 1"), "{config}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn overwrite_clears_only_run_directories() {
    let dir = temp_dir("overwrite");
    let (train, test) = tiny_packed(&dir);
    let notes = dir.join("notes");
    std::fs::create_dir_all(&notes).unwrap();
    std::fs::write(notes.join("thesis.tex"), b"keep me").unwrap();
    let out = pretrain(&train, &test, &notes, &["--overwrite"]);
    error_line(&out, &["not a gadms run directory"]);
    assert_eq!(std::fs::read(notes.join("thesis.tex")).unwrap(), b"keep me");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_locked_run_directory_is_refused() {
    let dir = temp_dir("lock");
    let (train, test) = tiny_packed(&dir);
    let run = dir.join("run");
    assert!(pretrain(&train, &test, &run, &[]).status.success());
    // A live process (this test) holds the lock: resuming names it.
    let me = std::process::id().to_string();
    std::fs::write(run.join(LOCK_FILE), &me).unwrap();
    let out = Command::new(BIN)
        .args(["pretrain", "--resume", s(&run)])
        .output()
        .unwrap();
    error_line(&out, &["in use", &me]);
    // A lock left by a process that is gone is taken over.
    std::fs::write(run.join(LOCK_FILE), "4294967295").unwrap();
    let out = Command::new(BIN)
        .args(["pretrain", "--resume", s(&run)])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!run.join(LOCK_FILE).exists());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_checkpoint_state_that_does_not_fit_is_refused() {
    let dir = temp_dir("state");
    let (train, test) = tiny_packed(&dir);
    let run = dir.join("run");
    assert!(pretrain(&train, &test, &run, &[]).status.success());
    // Say the one-epoch run is at epoch 100.
    let (ck, mut st) = run_dir::latest(&run).unwrap();
    st.epoch = 100;
    st.loader.epoch = 99;
    run_dir::write_json(&ck.join(run_dir::STATE_FILE), &st).unwrap();
    let out = Command::new(BIN)
        .args(["pretrain", "--resume", s(&run)])
        .output()
        .unwrap();
    error_line(&out, &["does not fit"]);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_default_run_directory_never_collides() {
    let dir = temp_dir("default");
    let base = dir.join("runs/pretrain-tiny");
    let b = s(&base);
    assert_eq!(run_dir::unused_dir(b), base);
    std::fs::create_dir_all(&base).unwrap();
    assert_eq!(run_dir::unused_dir(b), base, "an empty directory is free");
    std::fs::write(base.join("config.json"), b"{}").unwrap();
    assert_eq!(run_dir::unused_dir(b), PathBuf::from(format!("{b}-2")));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_checkpoint_pointer_outside_the_run_is_refused() {
    let dir = temp_dir("pointer");
    let (train, test) = tiny_packed(&dir);
    let run = dir.join("run");
    assert!(pretrain(&train, &test, &run, &[]).status.success());
    for bad in [
        "../../elsewhere",
        "/etc",
        "checkpoints/../../x",
        "checkpoints/step-",
    ] {
        let ptr = format!(r#"{{"dir": "{bad}", "step": 4}}"#);
        std::fs::write(run.join("checkpoint.json"), ptr).unwrap();
        let out = Command::new(BIN)
            .args(["pretrain", "--resume", s(&run)])
            .output()
            .unwrap();
        error_line(&out, &["not a checkpoint directory"]);
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// `gadms --version` names the version and the git commit of the build, and a run records
/// the same in `config.json` (`build`) and in its checkpoint model files' metadata.
#[test]
fn version_and_the_build_of_a_run_are_recorded() {
    let out = Command::new(BIN).arg("--version").output().unwrap();
    assert!(out.status.success());
    let line = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let want = format!(
        "gadms {} (commit {})",
        env!("CARGO_PKG_VERSION"),
        gadms::build_info::COMMIT
    );
    assert_eq!(line, want);
    assert!(!gadms::build_info::COMMIT.is_empty());

    let dir = temp_dir("build");
    let (train, test) = tiny_packed(&dir);
    let run = dir.join("run");
    let out = pretrain(&train, &test, &run, &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let cfg: serde_json::Value =
        serde_json::from_slice(&std::fs::read(run.join(run_dir::CONFIG_FILE)).unwrap()).unwrap();
    assert_eq!(cfg["build"]["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(cfg["build"]["commit"], gadms::build_info::COMMIT);
    let (ckpt, _) = run_dir::latest(&run).unwrap();
    let model = ckpt.join(run_dir::MODEL_FILE);
    let map = gadms_ckpt::native::read_model(&model).unwrap();
    assert_eq!(map.metadata["gadms.commit"], gadms::build_info::COMMIT);
    std::fs::remove_dir_all(&dir).unwrap();
}
