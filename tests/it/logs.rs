//! The logs of a run (src/train/log.rs): the progress lines when stdout is not a terminal,
//! `train.log`, the `data_s` / `step_s` of metrics.jsonl and the TensorBoard event file, read
//! back and compared with metrics.jsonl; and the event-file reader on a file written by
//! PyTorch's `SummaryWriter` (fixtures/tensorboard/make.py).

use crate::common::fixture;
use crate::packed::tiny_packed;
use gadms::train::tensorboard::{self, read_events, read_scalars};
use std::path::Path;
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_gadms");

fn jsonl(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn event_files_written_by_tensorboard_read_back() {
    let got = read_scalars(&fixture("tensorboard/events.out.tfevents.fixture")).unwrap();
    let want = [
        (1, "train/loss", 2.5),
        (2, "train/loss", 1.25),
        (2, "eval/test/r1", 40.5),
    ];
    let got: Vec<(i64, &str, f32)> = got.iter().map(|(s, t, v)| (*s, t.as_str(), *v)).collect();
    assert_eq!(got, want);
}

#[test]
fn a_run_without_a_terminal_logs_lines_train_log_and_tensorboard() {
    let dir = std::env::temp_dir().join(format!("gadms-logs-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let (train, test) = tiny_packed(&dir);
    let run = dir.join("run");
    let s = |p: &Path| p.to_str().unwrap().to_string();
    let out = Command::new(BIN)
        .args(["pretrain", "--data", &s(&train), "--eval-data", &s(&test)])
        .args([
            "--epochs",
            "2",
            "--batch-size",
            "4",
            "--log-every",
            "2",
            "--out",
            &s(&run),
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // 16 captions / batch 4 = 4 steps per epoch, 8 in all: a line at steps 2, 4, 6, 8.
    let lines: Vec<&str> = stdout.lines().filter(|l| l.contains(" step ")).collect();
    assert_eq!(lines.len(), 4, "{stdout}");
    assert!(
        lines[0].starts_with("epoch 1/2  step 2/8 (25.0%)  samples 8/32  loss "),
        "{}",
        lines[0]
    );
    assert!(
        lines[3].starts_with("epoch 2/2  step 8/8 (100.0%)"),
        "{}",
        lines[3]
    );
    for l in &lines {
        for k in ["data ", "batch ", "pairs/s", "lr ", "ETA "] {
            assert!(l.contains(k), "{l}");
        }
    }
    let text = std::fs::read_to_string(run.join("train.log")).unwrap();
    for l in &lines {
        assert!(text.contains(l), "train.log lacks {l}");
    }
    assert_eq!(
        text.lines().filter(|l| l.starts_with("epoch   ")).count(),
        2,
        "{text}"
    );

    let metrics = jsonl(&run.join("metrics.jsonl"));
    let steps: Vec<_> = metrics.iter().filter(|l| l.get("loss").is_some()).collect();
    assert_eq!(steps.len(), 8);
    for st in &steps {
        assert!(st["data_s"].as_f64().unwrap() >= 0.0 && st["step_s"].as_f64().unwrap() > 0.0);
    }

    let tb_dir = run.join(tensorboard::DIR);
    let files: Vec<_> = std::fs::read_dir(&tb_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(files.len(), 1);
    assert!(
        files[0]
            .file_name()
            .unwrap()
            .to_str()
            .unwrap()
            .starts_with("events.out.tfevents.")
    );
    let scalars = read_scalars(&files[0]).unwrap();
    let series = |tag: &str| -> Vec<(i64, f32)> {
        scalars
            .iter()
            .filter(|(_, t, _)| t == tag)
            .map(|(s, _, v)| (*s, *v))
            .collect()
    };
    let want: Vec<(i64, f32)> = steps
        .iter()
        .map(|l| {
            (
                l["step"].as_i64().unwrap(),
                l["loss"].as_f64().unwrap() as f32,
            )
        })
        .collect();
    assert_eq!(series("train/loss"), want);
    assert_eq!(series("train/loss_sdm").len(), 8);
    assert_eq!(series("train/lr").len(), 8);
    let evals: Vec<(i64, f32)> = metrics
        .iter()
        .filter(|l| l.get("r1").is_some() && l["split"] == "test")
        .map(|l| {
            (
                l["step"].as_i64().unwrap(),
                l["r1"].as_f64().unwrap() as f32,
            )
        })
        .collect();
    assert_eq!(evals.len(), 2, "before and after");
    assert_eq!(series("eval/test/r1"), evals);
    assert_eq!(series("eval/train-subset/map").len(), 1);

    // A damaged record is refused, not misread.
    let mut bytes = std::fs::read(&files[0]).unwrap();
    let n = bytes.len();
    bytes[n - 6] ^= 0x20;
    let bad = dir.join("bad.tfevents");
    std::fs::write(&bad, &bytes).unwrap();
    let err = read_events(&bad).unwrap_err().to_string();
    assert!(err.contains("checksum mismatch"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}
