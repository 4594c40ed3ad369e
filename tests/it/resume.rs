//! Checkpoints of the `gadms` binary: a run SIGKILLed after a checkpoint and
//! resumed with `--resume` ends with bit-identical weights, optimiser state and score table to
//! an uninterrupted run (SDM and GA-DMS objectives, `pretrain` and `finetune`, and with
//! `--accum-steps`); a non-finite
//! loss stops the run with a clear message and leaves the last good checkpoint intact;
//! `--init` loads CLIP files and refuses a file of another shape.

use crate::packed::tiny_packed;
use gadms::train::run_dir::{self as checkpoint, TrainState};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_gadms");

fn temp_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("gadms-resume-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn gadms(args: &[&str]) -> Output {
    Command::new(BIN).args(args).output().unwrap()
}

fn ok(out: &Output) {
    assert!(
        out.status.success(),
        "gadms failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// The bits of every tensor of a safetensors file, by name, and its metadata (the file bytes
/// themselves differ: safetensors writes the metadata map in hash order).
fn tensor_bits(path: &Path) -> Vec<u8> {
    let map = gadms_ckpt::tensors::read_file(path).unwrap();
    let mut out = format!("{:?}", map.metadata).into_bytes();
    for (k, a) in &map.tensors {
        out.extend(k.as_bytes());
        out.extend(a.shape.iter().flat_map(|d| d.to_le_bytes()));
        out.extend(a.data.iter().flat_map(|x| x.to_bits().to_le_bytes()));
    }
    out
}

/// What must agree after the final step: weights and Adam state (bit for bit), the score
/// table (bytes), the final CLIP file's tensors and the step count.
fn final_files(run: &Path, with_scores: bool) -> Vec<(String, Vec<u8>)> {
    let (dir, st) = checkpoint::latest(run).unwrap();
    let mut out = vec![
        (
            checkpoint::MODEL_FILE.to_string(),
            tensor_bits(&dir.join(checkpoint::MODEL_FILE)),
        ),
        (
            checkpoint::ADAM_FILE.to_string(),
            tensor_bits(&dir.join(checkpoint::ADAM_FILE)),
        ),
        (
            "last.safetensors".to_string(),
            tensor_bits(&run.join("last.safetensors")),
        ),
        ("step".into(), st.step.to_le_bytes().to_vec()),
    ];
    if with_scores {
        let n = checkpoint::SCORES_FILE;
        out.push((n.into(), std::fs::read(dir.join(n)).unwrap()));
    }
    out
}

/// Starts `args` with a per-step delay, waits for a checkpoint at `min_step` or later, kills
/// the process with SIGKILL and checks it did not finish on its own.
fn run_and_kill(args: &[&str], run: &Path, min_step: u64) -> TrainState {
    let mut child = Command::new(BIN)
        .args(args)
        .env("GADMS_TEST_STEP_DELAY_MS", "250")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let t = Instant::now();
    let state = loop {
        if let Ok((_, st)) = checkpoint::latest(run)
            && st.step >= min_step
        {
            break st;
        }
        if let Some(status) = child.try_wait().unwrap() {
            panic!("the run ended ({status}) before a checkpoint at step {min_step}");
        }
        assert!(t.elapsed() < Duration::from_secs(120), "no checkpoint");
        std::thread::sleep(Duration::from_millis(20));
    };
    child.kill().unwrap(); // SIGKILL on Unix
    let status = child.wait().unwrap();
    assert!(!status.success(), "the run was not interrupted: {status}");
    state
}

/// Uninterrupted vs killed + resumed, for one set of flags.
fn kill_and_resume(tag: &str, command: &str, extra: &[&str], with_scores: bool) {
    let dir = temp_dir(tag);
    let (train, test) = tiny_packed(&dir);
    let (a, b) = (dir.join("a"), dir.join("b"));
    let base = |out: &Path| -> Vec<String> {
        let mut v: Vec<String> = [
            command,
            "--data",
            s(&train),
            "--eval-data",
            s(&test),
            "--epochs",
            "3",
            "--batch-size",
            "4",
            "--save-every",
            "2",
            "--eval-every",
            "1",
            "--out",
            s(out),
        ]
        .iter()
        .map(|x| x.to_string())
        .collect();
        if extra.contains(&"--batch-size") {
            // The test's own batch size (e.g. 2 x --accum-steps 2: the same 4 pairs per step).
            let at = v.iter().position(|x| x == "--batch-size").unwrap();
            v.drain(at..at + 2);
        }
        v.extend(extra.iter().map(|x| x.to_string()));
        v
    };
    let args_a = base(&a);
    ok(&gadms(
        &args_a.iter().map(String::as_str).collect::<Vec<_>>(),
    ));
    let args_b = base(&b);
    let killed_at = run_and_kill(
        &args_b.iter().map(String::as_str).collect::<Vec<_>>(),
        &b,
        4,
    );
    assert!(killed_at.step < 12, "killed after the end: {killed_at:?}");
    let out = gadms(&[command, "--resume", s(&b)]);
    ok(&out);
    let log = String::from_utf8_lossy(&out.stdout);
    assert!(log.contains("resuming"), "{log}");

    let (fa, fb) = (final_files(&a, with_scores), final_files(&b, with_scores));
    for ((na, xa), (_, xb)) in fa.iter().zip(&fb) {
        assert!(xa == xb, "{tag}: {na} differs after kill + resume");
    }
    // metrics.jsonl: every step exactly once.
    let steps: Vec<u64> = std::fs::read_to_string(b.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|v| v.get("loss").is_some())
        .map(|v| v["step"].as_u64().unwrap())
        .collect();
    assert_eq!(steps, (1..=12).collect::<Vec<_>>());
    // Flags next to --resume are refused.
    let out = gadms(&[command, "--resume", s(&b), "--epochs", "9"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("drop --epochs"), "{err}");
    let out = gadms(&[command, "--resume", s(&b), "--accum-steps", "2"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("drop --accum-steps"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn pretrain_sdm_killed_and_resumed_is_bit_identical() {
    kill_and_resume("sdm", "pretrain", &["--objective", "sdm"], false);
}

/// The default objective (GA-DMS).
#[test]
fn pretrain_ga_dms_killed_and_resumed_is_bit_identical() {
    kill_and_resume("gadms", "pretrain", &["--gass-layers", "2"], true);
}

#[test]
fn pretrain_accumulated_killed_and_resumed_is_bit_identical() {
    // 2 micro-batches of 2: 4 pairs per step, as the other runs; the resumed run keeps
    // --accum-steps 2 from its checkpoint (with 1 it would train on batches of 2).
    let extra = ["--objective", "ga-dms", "--gass-layers", "2"];
    let accum = ["--batch-size", "2", "--accum-steps", "2"];
    kill_and_resume(
        "accum",
        "pretrain",
        &[&extra[..], &accum[..]].concat(),
        true,
    );
}

#[test]
fn finetune_killed_and_resumed_is_bit_identical() {
    // A pretrained starting point (one short SDM epoch).
    let dir = temp_dir("ft-init");
    let (train, _) = tiny_packed(&dir);
    let pre = dir.join("pre");
    ok(&gadms(&[
        "pretrain",
        "--objective",
        "sdm",
        "--data",
        s(&train),
        "--epochs",
        "1",
        "--batch-size",
        "8",
        "--out",
        s(&pre),
    ]));
    kill_and_resume("ft", "finetune", &["--init", s(&pre)], false);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_nan_loss_stops_the_run_and_keeps_the_last_checkpoint() {
    let dir = temp_dir("nan");
    let (train, test) = tiny_packed(&dir);
    let run = dir.join("run");
    // The test build's hook (train/mod.rs, `test_hooks`): the images of step 6 become NaN.
    let out = Command::new(BIN)
        .args([
            "pretrain",
            "--data",
            s(&train),
            "--eval-data",
            s(&test),
            "--epochs",
            "3",
            "--batch-size",
            "4",
            "--save-every",
            "2",
            "--out",
            s(&run),
        ])
        .env("GADMS_TEST_NAN_AT_STEP", "6")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("step 6 (epoch 2): the loss became NaN"),
        "{err}"
    );
    assert!(err.contains("last good checkpoint"), "{err}");
    assert!(err.contains("step-00000004"), "{err}");
    let (ck, st) = checkpoint::latest(&run).unwrap();
    assert_eq!(st.step, 4);
    // The checkpoint is complete and its weights finite.
    let mut m = <gadms::train::sdm::Model as dfdx::nn::BuildModule<gadms::Dev, f32>>::build(
        &gadms::Dev::default(),
    );
    gadms::train::run_dir::load_model_file(&mut m, &ck.join(checkpoint::MODEL_FILE)).unwrap();
    let map = gadms_ckpt::module_to_map(&m);
    assert!(
        map.tensors
            .values()
            .all(|a| a.data.iter().all(|x| x.is_finite()))
    );
    gadms::train::optim::Adam::load(&ck.join(checkpoint::ADAM_FILE)).unwrap();
    // Nothing after the good checkpoint: no half-written directory, no final files.
    let dirs: Vec<_> = std::fs::read_dir(run.join(checkpoint::CKPT_DIR))
        .unwrap()
        .collect();
    assert_eq!(dirs.len(), 1);
    let steps = std::fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .filter(|l| l.contains("\"loss\""))
        .count();
    assert_eq!(steps, 5, "steps 1-5 logged, the NaN step not");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn init_loads_clip_files_and_refuses_other_shapes() {
    let dir = temp_dir("init");
    let (train, _) = tiny_packed(&dir);
    let tiny =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/embed/tiny_openclip_f16.safetensors");
    let run = dir.join("run");
    let out = gadms(&[
        "pretrain",
        "--data",
        s(&train),
        "--epochs",
        "1",
        "--batch-size",
        "8",
        "--init",
        s(&tiny),
        "--out",
        s(&run),
    ]);
    ok(&out);
    let log = String::from_utf8_lossy(&out.stdout);
    assert!(
        log.contains("CLIP weights (openai/open_clip layout)"),
        "{log}"
    );

    // A gadms run directory works too (its gadms checkpoint / last.safetensors).
    let run2 = dir.join("run2");
    ok(&gadms(&[
        "pretrain",
        "--data",
        s(&train),
        "--epochs",
        "1",
        "--batch-size",
        "8",
        "--init",
        s(&run),
        "--out",
        s(&run2),
    ]));

    // One tensor of another shape: refused, naming the key and both shapes.
    let mut map = gadms_ckpt::tensors::read_file(&tiny).unwrap();
    map.insert(
        "ln_final.weight",
        gadms_ckpt::Array::new(vec![48], vec![1.0; 48]),
    );
    let bad = dir.join("bad.safetensors");
    gadms_ckpt::tensors::write_file(&bad, &map, &Default::default()).unwrap();
    let out = gadms(&[
        "pretrain",
        "--data",
        s(&train),
        "--epochs",
        "1",
        "--batch-size",
        "8",
        "--init",
        s(&bad),
        "--out",
        s(&dir.join("run3")),
    ]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("ln_final.weight") && err.contains("48"),
        "{err}"
    );
    assert!(!err.contains("panicked"), "{err}");
    // A missing file.
    let out = gadms(&["pretrain", "--init", "/nonexistent/w.safetensors"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no such file"));
    let _ = std::fs::remove_dir_all(&dir);
}

/// The pointer only ever names a complete checkpoint: a save that fails half-way (here: the
/// tensor writer errors) leaves `checkpoint.json` on the previous one, and the next good save
/// removes the half-written directory.
#[test]
fn a_failed_save_leaves_the_previous_checkpoint_in_place() {
    let run = temp_dir("atomic");
    let state = |step| TrainState {
        command: "pretrain".into(),
        step,
        epoch: 1,
        loader: Default::default(),
        seed: 0,
        rng: checkpoint::RNG_NOTE.into(),
        best_r1: None,
        evaluated_epoch: 0,
        args: serde_json::json!({}),
        skipped: None,
    };
    let write = |d: &Path| -> anyhow::Result<()> {
        std::fs::write(d.join(checkpoint::MODEL_FILE), b"weights")?;
        Ok(())
    };
    checkpoint::save_checkpoint(&run, &state(2), write).unwrap();
    let failed = checkpoint::save_checkpoint(&run, &state(4), |d| {
        std::fs::write(d.join(checkpoint::MODEL_FILE), b"half")?;
        anyhow::bail!("disk full")
    });
    assert!(failed.is_err());
    let (dir, st) = checkpoint::latest(&run).unwrap();
    assert_eq!(st.step, 2);
    assert_eq!(
        std::fs::read(dir.join(checkpoint::MODEL_FILE)).unwrap(),
        b"weights"
    );
    checkpoint::save_checkpoint(&run, &state(6), write).unwrap();
    let left: Vec<_> = std::fs::read_dir(run.join(checkpoint::CKPT_DIR))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(left, vec!["step-00000006".to_string()]);
    // Not a run directory / no checkpoint: clear errors.
    let e = checkpoint::latest(&run.join("nope")).unwrap_err();
    assert!(format!("{e:#}").contains("no such run directory"), "{e:#}");
    let empty = temp_dir("atomic-empty");
    let e = checkpoint::latest(&empty).unwrap_err();
    assert!(format!("{e:#}").contains("no checkpoint"), "{e:#}");
    let _ = std::fs::remove_dir_all(&run);
    let _ = std::fs::remove_dir_all(&empty);
}
