//! `gadms pretrain` and `gadms finetune` at the ViT-B/16 preset: the real binary
//! trains CLIP ViT-B/16 for a couple of steps at batch 2 on a tiny set packed at 384×128 and
//! writes weights that `gadms eval` and `finetune --init` accept; a pack of the
//! wrong image size, a missing `--data` and a `--resume` of another preset are clear errors.
//!
//! A ViT-B/16 step costs seconds on a CPU, so the set is 2 identities × 1 image × 2 captions
//! (2 steps of batch 2 per epoch) and the evaluation split 1 identity.

use gadms::train::data::pack_split;
use gadms_data::pack::{Format, NoProgress, PackOptions, pack};
use gadms_data::synth::{self, FIXTURE, SynthConfig};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Instant;

const BIN: &str = env!("CARGO_BIN_EXE_gadms");

fn temp_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("gadms-preset-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A CUHK-PEDES-form synthetic set in `dir/raw`: 2 training ids and 1 test id, each with one
/// 64×32 image and 2 captions.
fn raw_set(dir: &Path) -> PathBuf {
    let cfg = SynthConfig {
        train_ids: 2,
        test_ids: 1,
        images_per_id: 1,
        captions_per_image: 2,
        ..FIXTURE
    };
    let raw = dir.join("raw");
    synth::write_cuhk_pedes(&raw, &cfg).unwrap();
    raw
}

/// Packs `split` of `raw` into `out` at 384×128 (the ViT-B/16 size; images are upscaled).
fn pack_vit(raw: &Path, split: &str, out: &Path) {
    let opts = PackOptions {
        split: split.into(),
        workers: 1,
        lossless: true,
        ..PackOptions::new(Format::CuhkPedes, raw, out)
    };
    assert_eq!((opts.image_h, opts.image_w), (384, 128));
    pack(&opts, &NoProgress).unwrap();
}

fn gadms(args: &[&str]) -> Output {
    let t = Instant::now();
    let out = Command::new(BIN).args(args).output().unwrap();
    eprintln!(
        "gadms {} ({:.1} s)",
        args.first().unwrap_or(&""),
        t.elapsed().as_secs_f64()
    );
    out
}

fn ok(out: &Output) -> String {
    let (o, e) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "gadms failed: {o}\n{e}");
    format!("{o}\n{e}")
}

/// The `error: …` text of a run that must fail.
fn fails(out: &Output) -> String {
    assert!(!out.status.success(), "gadms should have failed");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn json(path: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

/// The step lines of a metrics.jsonl.
fn step_lines(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|l| l.get("loss").is_some())
        .collect()
}

/// `n` finite-loss steps, in order.
fn finite_steps(metrics: &Path, n: usize) {
    let steps = step_lines(metrics);
    assert_eq!(steps.len(), n, "{steps:?}");
    for (i, l) in steps.iter().enumerate() {
        assert_eq!(l["step"], i + 1);
        let loss = l["loss"].as_f64().unwrap();
        assert!(loss.is_finite() && loss > 0.0, "{l}");
    }
}

/// Pretrain ViT-B/16 (SDM) for 2 steps, then: the files and the preset in config.json, `eval`
/// on the weights, and a 1-step `finetune --preset vit-b-16 --init RUN_DIR` (on the 2-caption
/// test pack, to keep it to one step).
#[test]
fn vit_b_16_pretrain_and_finetune_run_and_write_usable_weights() {
    let dir = temp_dir("vit");
    let raw = raw_set(&dir);
    let (train, test) = (dir.join("train"), dir.join("test"));
    pack_vit(&raw, "train", &train);
    pack_vit(&raw, "test", &test);
    let run = dir.join("run");
    let out = gadms(&[
        "pretrain",
        "--objective",
        "sdm",
        "--preset",
        "vit-b-16",
        "--data",
        s(&train),
        "--epochs",
        "1",
        "--batch-size",
        "2",
        "--lr",
        "1e-5",
        "--out",
        s(&run),
    ]);
    let log = ok(&out);
    assert!(log.contains("'vit-b-16' preset"), "{log}");
    let cfg = json(&run.join("config.json"));
    assert_eq!(cfg["preset"], "vit-b-16");
    assert_eq!(cfg["args"]["preset"], "vit-b-16");
    assert_eq!(cfg["image_hw"], serde_json::json!([384, 128]));
    assert_eq!(cfg["model"]["vision_cfg"]["width"], 768, "{}", cfg["model"]);
    finite_steps(&run.join("metrics.jsonl"), 2);

    // The CLIP weights are a ViT-B/16 model for the other commands.
    let weights = run.join("last.safetensors");
    let e = ok(&gadms(&[
        "eval",
        "--weights",
        s(&weights),
        "--data",
        s(&test),
        "--json",
        s(&dir.join("eval.json")),
    ]));
    assert!(e.contains("as preset vit-b-16"), "{e}");
    let r1 = json(&dir.join("eval.json"))["r1"].as_f64();
    assert!(r1.is_some_and(f64::is_finite), "{e}");

    // Fine-tuning from the run directory (its checkpoint: CLIP; the decoder starts fresh).
    let ft = dir.join("ft");
    let log = ok(&gadms(&[
        "finetune",
        "--preset",
        "vit-b-16",
        "--data",
        s(&test),
        "--init",
        s(&run),
        "--epochs",
        "1",
        "--batch-size",
        "2",
        "--out",
        s(&ft),
    ]));
    assert!(log.contains("'vit-b-16' preset"), "{log}");
    assert_eq!(json(&ft.join("config.json"))["preset"], "vit-b-16");
    finite_steps(&ft.join("metrics.jsonl"), 1);
    let full = gadms_ckpt::tensors::read_file(&ft.join("gadms_model.safetensors")).unwrap();
    let classes = full.tensors["classifier.bias"].shape[0];
    assert_eq!(full.tensors["classifier.weight"].shape, vec![classes, 512]);
    let _ = std::fs::remove_dir_all(&dir);
}

/// The errors: a 64×32 pack for vit-b-16 (saying what to repack with), vit-b-16 without
/// --data, and `--resume` of a tiny run with --preset vit-b-16.
#[test]
fn vit_b_16_wrong_data_and_resume_of_another_preset_are_clear_errors() {
    let dir = temp_dir("errors");
    let raw = raw_set(&dir);
    let small = dir.join("small");
    pack_split(&raw, "train", &small).unwrap();
    for cmd in ["pretrain", "finetune"] {
        let mut args = vec![cmd, "--preset", "vit-b-16", "--out"];
        let out = dir.join(format!("{cmd}-out"));
        args.push(s(&out));
        if cmd == "finetune" {
            args.extend(["--init", s(&raw)]);
        }
        let e = fails(&gadms(&args));
        assert!(
            e.contains("needs --data") && e.contains("384x128") && e.contains("tiny"),
            "{e}"
        );
        if cmd == "finetune" {
            continue;
        }
        args.extend(["--data", s(&small)]);
        let e = fails(&gadms(&args));
        assert!(
            e.contains("packed at 64x32")
                && e.contains("vit-b-16 preset")
                && e.contains("--image-size 384x128"),
            "{e}"
        );
    }
    // A tiny run with a checkpoint, resumed with another preset.
    let run = dir.join("tiny-run");
    ok(&gadms(&[
        "pretrain",
        "--data",
        s(&small),
        "--epochs",
        "1",
        "--batch-size",
        "2",
        "--save-every",
        "1",
        "--out",
        s(&run),
    ]));
    assert_eq!(json(&run.join("config.json"))["preset"], "tiny");
    let e = fails(&gadms(&[
        "pretrain",
        "--resume",
        s(&run),
        "--preset",
        "vit-b-16",
    ]));
    assert!(
        e.contains("checkpoint is of preset tiny") && e.contains("drop --preset"),
        "{e}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
