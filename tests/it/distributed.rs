//! Data-parallel training under `mpirun` (docs/distributed.md): two processes at batch B train
//! the model one process trains at batch 2B, and so does `--accum-steps 2` at batch B (both
//! objectives, to float rounding); both ranks end with the same weights, optimiser state and
//! score table, bit for bit; a rank killed with SIGKILL ends the job, and `--resume` then
//! finishes it exactly as an uninterrupted run; a build without the `mpi` feature refuses to
//! train under a launcher.
//!
//! The MPI tests need `mpirun` (Open MPI) and a gadms built with `--features mpi`, named by
//! `GADMS_MPI_BIN` (`.ci/run` builds one); without them they print SKIPPED. The refusal test
//! needs neither.

use crate::common::rel_err;
use crate::packed::tiny_packed;
use gadms::train::run_dir::{self as checkpoint};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_gadms");

/// Relative difference allowed between the weights of runs that differ only in float
/// rounding, after 8 Adam steps. Measured: 1.1e-4 to 1.8e-4 (the token embedding), both for
/// two ranks and for `--accum-steps 2` against one batch; the losses agree to 1e-5.
const TOL: f64 = 1e-3;

fn temp_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("gadms-dp-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// The `mpi` build named by `GADMS_MPI_BIN`, or `None` (the test is skipped, saying so).
fn mpi_bin() -> Option<PathBuf> {
    match std::env::var_os("GADMS_MPI_BIN") {
        Some(p) => {
            let p = PathBuf::from(p);
            assert!(p.is_file(), "GADMS_MPI_BIN={} is not a file", p.display());
            Some(p)
        }
        None => {
            eprintln!(
                "SKIPPED: set GADMS_MPI_BIN to a gadms built with `--features mpi` (and put \
                 Open MPI's mpirun on PATH) to run the data-parallel tests; .ci/run does"
            );
            None
        }
    }
}

/// `mpirun -np N BIN ARGS…`, with the flags a container needs (root, 2 cores, no CMA).
fn mpirun(n: usize, bin: &Path, args: &[String]) -> Command {
    let mut c = Command::new("mpirun");
    c.args([
        "--allow-run-as-root",
        "--oversubscribe",
        "--bind-to",
        "none",
    ])
    .args(["--mca", "btl_vader_single_copy_mechanism", "none"])
    .args(["-np", &n.to_string()])
    .arg(bin)
    .args(args);
    c
}

fn ok(what: &str, out: &Output) {
    assert!(
        out.status.success(),
        "{what} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `pretrain` on the tiny pack for `epochs` epochs, a checkpoint every 2 steps and at the end.
fn pretrain_args(
    dir: &Path,
    out: &Path,
    batch: usize,
    epochs: usize,
    extra: &[&str],
) -> Vec<String> {
    let (train, test) = (dir.join("train"), dir.join("test"));
    let mut v: Vec<String> = [
        "pretrain",
        "--data",
        s(&train),
        "--eval-data",
        s(&test),
        "--epochs",
        &epochs.to_string(),
        "--batch-size",
        &batch.to_string(),
        "--save-every",
        "2",
        "--gass-layers",
        "2",
        "--out",
        s(out),
    ]
    .iter()
    .map(|x| x.to_string())
    .collect();
    v.extend(extra.iter().map(|x| x.to_string()));
    v
}

/// Every tensor of a safetensors file, by name.
fn tensors(path: &Path) -> Vec<(String, Vec<f32>)> {
    let map = gadms_ckpt::tensors::read_file(path).unwrap();
    map.tensors.into_iter().map(|(k, a)| (k, a.data)).collect()
}

/// The final model, optimiser state and score table of a run (its last checkpoint).
fn final_state(run: &Path) -> (PathBuf, u64) {
    let (dir, st) = checkpoint::latest(run).unwrap();
    (dir, st.step)
}

/// Asserts every tensor of `a` is within `tol` (relative, [`rel_err`]) of `b`'s.
fn assert_files_close(what: &str, a: &Path, b: &Path, tol: f64) {
    let (ta, tb) = (tensors(a), tensors(b));
    assert_eq!(ta.len(), tb.len(), "{what}: tensor count");
    let mut worst = (0.0f64, String::new());
    for ((na, xa), (nb, xb)) in ta.iter().zip(&tb) {
        assert_eq!(na, nb, "{what}: tensor names");
        let e = rel_err(xa, xb);
        if e > worst.0 {
            worst = (e, na.clone());
        }
    }
    assert!(
        worst.0 <= tol,
        "{what}: {} differs by {:.2e} > {tol:.0e}",
        worst.1,
        worst.0
    );
    eprintln!(
        "{what}: worst relative difference {:.2e} ({})",
        worst.0, worst.1
    );
}

/// The score table as f32 values.
fn scores(path: &Path) -> Vec<f32> {
    std::fs::read(path)
        .unwrap()
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
        .collect()
}

/// One process at batch 4, two at batch 2, and one at batch 2 with `--accum-steps 2` train the
/// same model (8 steps of 4 pairs); rank 1 of the two ends bit-identical to rank 0.
fn same_model(tag: &str, objective: &str) {
    let Some(mpi) = mpi_bin() else { return };
    let dir = temp_dir(tag);
    tiny_packed(&dir);
    let extra = ["--objective", objective];
    let (one, two, acc) = (dir.join("one"), dir.join("two"), dir.join("accum"));
    let a = pretrain_args(&dir, &one, 4, 2, &extra);
    ok("one process", &Command::new(BIN).args(&a).output().unwrap());
    let b = pretrain_args(&dir, &two, 2, 2, &extra);
    let ranks = dir.join("ranks");
    let out = mpirun(2, &mpi, &b)
        .env("GADMS_TEST_RANK_DIR", &ranks)
        .output()
        .unwrap();
    ok("mpirun -np 2", &out);
    let log = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        log.matches("run directory:").count(),
        1,
        "one rank prints: {log}"
    );
    assert!(log.contains("2 processes"), "{log}");
    let c = pretrain_args(
        &dir,
        &acc,
        2,
        2,
        &[&extra[..], &["--accum-steps", "2"]].concat(),
    );
    ok(
        "accumulation",
        &Command::new(BIN).args(&c).output().unwrap(),
    );

    let ((d1, s1), (d2, s2), (d3, s3)) = (final_state(&one), final_state(&two), final_state(&acc));
    assert_eq!((s1, s2, s3), (8, 8, 8), "steps");
    let model = checkpoint::MODEL_FILE;
    assert_files_close(
        &format!("{tag}: 2 ranks vs 1"),
        &d2.join(model),
        &d1.join(model),
        TOL,
    );
    assert_files_close(
        &format!("{tag}: accum vs 1"),
        &d3.join(model),
        &d1.join(model),
        TOL,
    );
    // Two ranks of one micro-batch each do what one process does with two micro-batches,
    // but sum the gradients in another order ((a1 + a2) + (b1 + b2) against a buffer that
    // takes a1, a2, b1, b2 in turn): rounding, not bits.
    assert_files_close(
        &format!("{tag}: 2 ranks vs accum"),
        &d2.join(model),
        &d3.join(model),
        TOL,
    );
    // Rank 1 holds what rank 0 saved, bit for bit.
    let r1 = ranks.join("rank1");
    for f in [checkpoint::MODEL_FILE, checkpoint::ADAM_FILE] {
        assert!(
            tensors(&r1.join(f)) == tensors(&d2.join(f)),
            "{tag}: rank 1's {f} differs"
        );
    }
    if objective == "ga-dms" {
        let sc = checkpoint::SCORES_FILE;
        assert_eq!(
            std::fs::read(r1.join(sc)).unwrap(),
            std::fs::read(d2.join(sc)).unwrap()
        );
        let (x, y) = (scores(&d2.join(sc)), scores(&d1.join(sc)));
        let worst = x
            .iter()
            .zip(&y)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f32::max);
        assert!(worst <= 1e-4, "{tag}: score tables differ by {worst}");
        assert!(
            x.iter().any(|&v| v != 0.85),
            "{tag}: the score table was never written"
        );
    }
    // The logged losses agree step by step.
    let losses = |run: &Path| -> Vec<f64> {
        std::fs::read_to_string(run.join("metrics.jsonl"))
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
            .filter_map(|v| v.get("loss").and_then(|x| x.as_f64()))
            .collect()
    };
    let (l1, l2) = (losses(&one), losses(&two));
    assert_eq!(l1.len(), l2.len());
    for (x, y) in l1.iter().zip(&l2) {
        assert!(
            (x - y).abs() <= 1e-4 * x.abs().max(1.0),
            "{tag}: loss {x} vs {y}"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn two_ranks_train_the_one_process_model_sdm() {
    same_model("sdm", "sdm");
}

#[test]
fn two_ranks_train_the_one_process_model_ga_dms() {
    same_model("gadms", "ga-dms");
}

/// The PID of rank `rank` among the children of `parent` (Open MPI's environment).
fn rank_pid(parent: u32, rank: usize) -> Option<u32> {
    let want = format!("OMPI_COMM_WORLD_RANK={rank}");
    for e in std::fs::read_dir("/proc").ok()?.flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let stat = std::fs::read_to_string(e.path().join("stat")).unwrap_or_default();
        // pid (comm) state ppid …: the fields after the last ')'.
        let ppid = stat
            .rsplit(')')
            .next()
            .and_then(|r| r.split_whitespace().nth(1));
        if ppid != Some(&parent.to_string()) {
            continue;
        }
        let env = std::fs::read(e.path().join("environ")).unwrap_or_default();
        if env.split(|&b| b == 0).any(|v| v == want.as_bytes()) {
            return Some(pid);
        }
    }
    None
}

#[test]
fn a_killed_rank_ends_the_job_and_resume_is_exact() {
    let Some(mpi) = mpi_bin() else { return };
    let dir = temp_dir("kill");
    tiny_packed(&dir);
    let (whole, cut) = (dir.join("whole"), dir.join("cut"));
    ok(
        "uninterrupted",
        &mpirun(2, &mpi, &pretrain_args(&dir, &whole, 2, 3, &[]))
            .output()
            .unwrap(),
    );
    let mut job = mpirun(2, &mpi, &pretrain_args(&dir, &cut, 2, 3, &[]))
        .env("GADMS_TEST_STEP_DELAY_MS", "300")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let t = Instant::now();
    loop {
        if checkpoint::latest(&cut).is_ok_and(|(_, st)| st.step >= 4) {
            break;
        }
        assert!(
            job.try_wait().unwrap().is_none(),
            "the job ended before a checkpoint"
        );
        assert!(t.elapsed() < Duration::from_secs(120), "no checkpoint");
        std::thread::sleep(Duration::from_millis(20));
    }
    let pid = rank_pid(job.id(), 1).expect("rank 1 among mpirun's children");
    // SAFETY: kill(2) on a child process of this test.
    assert_eq!(unsafe { libc::kill(pid as i32, libc::SIGKILL) }, 0);
    let t = Instant::now();
    let status = loop {
        if let Some(st) = job.try_wait().unwrap() {
            break st;
        }
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "the job hangs after rank 1 died"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(
        !status.success(),
        "the job succeeded although a rank was killed"
    );
    let (dir_cut, st) = final_state(&cut);
    assert!(st < 12, "killed after the end ({})", dir_cut.display());

    let out = mpirun(
        2,
        &mpi,
        &["pretrain".into(), "--resume".into(), s(&cut).into()],
    )
    .output()
    .unwrap();
    ok("resume", &out);
    let (a, b) = (final_state(&whole).0, final_state(&cut).0);
    for f in [checkpoint::MODEL_FILE, checkpoint::ADAM_FILE] {
        assert!(
            tensors(&a.join(f)) == tensors(&b.join(f)),
            "{f} differs after kill + resume"
        );
    }
    let sc = checkpoint::SCORES_FILE;
    assert_eq!(
        std::fs::read(a.join(sc)).unwrap(),
        std::fs::read(b.join(sc)).unwrap()
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_build_without_mpi_refuses_to_train_under_a_launcher() {
    if cfg!(feature = "mpi") {
        eprintln!("SKIPPED: this test build has the `mpi` feature");
        return;
    }
    // What Open MPI's mpirun tells each of 2 processes it starts.
    let out = Command::new(BIN)
        .args(["pretrain", "--epochs", "1"])
        .env("OMPI_COMM_WORLD_SIZE", "2")
        .env("OMPI_COMM_WORLD_RANK", "1")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("without the `mpi` feature"), "{err}");
    assert!(err.contains("--features mpi"), "{err}");
    // One process under a launcher is the plain run.
    let out = Command::new(BIN)
        .args(["pretrain", "--epochs", "0"])
        .env("OMPI_COMM_WORLD_SIZE", "1")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--epochs must be at least 1"), "{err}");
}
