//! Gradient accumulation (`--accum-steps K`, `gadms::train::accum`): the accumulated gradient
//! is the whole batch's (SDM, GA-DMS with its GASS scores, the IRRA fine-tuning step), while
//! the naive sum of micro-batch losses is not; `--batch-size 8 --accum-steps 2` trains the
//! weights `--batch-size 16` trains; bad values are clear errors.

use dfdx::nn::{BuildModule, ZeroGrads};
use dfdx::prelude::*;
use gadms::Dev;
use gadms::cmd::finetune::{self, FinetuneArgs};
use gadms::cmd::pretrain::{self, Objective, PretrainArgs};
use gadms::train::data::pack_split;
use gadms::train::gadms::{Branches, GaDmsForward, StepConfig};
use gadms::train::gadms_accum::accum_forward;
use gadms::train::irra::{FtWeights, finetune_step};
use gadms::train::irra_accum::{self, finetune_step_accum};
use gadms::train::optim::{Adam, adam_config};
use gadms::train::sdm::{SdmLoss, accum_grads};
use gadms_ckpt::TensorMap;
use gadms_ckpt::bridge::{grads_to_map, module_to_map};
use gadms_data::loader::{Batch, Loader, LoaderConfig, Masking};
use gadms_data::manifest::Dataset;
use gadms_data::masking::MaskingConfig;
use gadms_data::scores::ScoreTable;
use gadms_data::synth::pedes::{self as synth, FIXTURE, SynthConfig};
use gadms_nn::{GaDmsTiny, IdClassifier, Tiny};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

const BIN: &str = env!("CARGO_BIN_EXE_gadms");

fn temp_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("gadms-accum-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// 8 train ids (32 captions: 2 steps of 16 per epoch) and 3 test ids, packed.
fn packed(dir: &Path) -> (PathBuf, PathBuf) {
    let cfg = SynthConfig {
        train_ids: 8,
        test_ids: 3,
        ..FIXTURE
    };
    synth::write_cuhk_pedes(&dir.join("raw"), &cfg).unwrap();
    let (train, test) = (dir.join("train"), dir.join("test"));
    pack_split(&dir.join("raw"), "train", &train).unwrap();
    pack_split(&dir.join("raw"), "test", &test).unwrap();
    (train, test)
}

/// The first training batch of 16 (augmented, shuffled) with `masking`.
fn first_batch(train: &Path, masking: Masking) -> Batch {
    let ds = Arc::new(Dataset::open(train, None).unwrap());
    let cfg = LoaderConfig {
        batch_size: 16,
        seed: 4,
        masking,
        ..LoaderConfig::default()
    };
    Loader::new(ds, cfg).unwrap().next_batch().unwrap()
}

fn dual(train: &Path) -> Masking {
    let n = Dataset::open(train, None).unwrap().len();
    Masking::Dual {
        scores: Arc::new(ScoreTable::in_memory(n)),
        config: MaskingConfig::default(),
    }
}

/// The worst over tensors of `max|a − b| / max(max|b|, floor)`, the floor 1e-3 or 1e-4 of the
/// largest gradient of the model, whichever is larger.
fn worst(a: &TensorMap, b: &TensorMap) -> (f64, String) {
    assert_eq!(a.tensors.len(), b.tensors.len());
    let mut w = (0.0f64, String::new());
    let max_abs = |d: &[f32]| d.iter().fold(0f64, |m, v| m.max(v.abs() as f64));
    // Some gradients are exactly zero in exact arithmetic (attention's key bias: the softmax
    // does not change when every key score of a query shifts by the same amount), so what is
    // computed for them is rounding noise of the size of the other gradients; they are
    // measured against 1e-4 of the largest gradient of the model rather than their own size.
    let floor = b
        .tensors
        .values()
        .fold(1e-3f64, |m, x| m.max(1e-4 * max_abs(&x.data)));
    for (k, x) in &b.tensors {
        let y = &a.tensors[k].data;
        let scale = floor.max(max_abs(&x.data));
        let d = y
            .iter()
            .zip(&x.data)
            .fold(0f64, |m, (p, q)| m.max((p - q).abs() as f64));
        if d / scale > w.0 {
            w = (d / scale, k.clone());
        }
    }
    w
}

#[test]
fn sdm_accumulated_gradient_is_the_full_batch_gradient() {
    let dir = temp_dir("sdm-grad");
    let (train, _) = packed(&dir);
    let b = first_batch(&train, Masking::None);
    let pids: Vec<usize> = b.pids.iter().map(|&p| p as usize).collect();
    let m = <Tiny<f32, Dev>>::build(&Dev::seed_from_u64(3));
    let full_loss = m.sdm_loss(b.images.clone(), &b.ids_clean, &pids, m.alloc_grads());
    let l_full = full_loss.as_vec()[0];
    let full = grads_to_map(&m, &full_loss.backward());
    for k in [2, 4] {
        let (g, l) = accum_grads(&m, &b.images, &b.ids_clean, &pids, k, m.alloc_grads()).unwrap();
        let (e, at) = worst(&grads_to_map(&m, &g), &full);
        eprintln!("SDM, {k} micro-batches: loss {l} vs {l_full}, gradient {e:.2e} ({at})");
        assert!((l - l_full).abs() <= 1e-5 * l_full.abs(), "{l} vs {l_full}");
        assert!(e <= 1e-5, "{k} micro-batches: {e:.2e} at {at}");
    }
    // The naive way (mean of the micro-batches' own SDM losses) is another gradient.
    let mut g = m.alloc_grads();
    m.zero_grads(&mut g);
    for j in 0..2 {
        let px = b.images[j * b.images.len() / 2..(j + 1) * b.images.len() / 2].to_vec();
        let (r, p) = (&b.ids_clean[j * 8..j * 8 + 8], &pids[j * 8..j * 8 + 8]);
        g = (m.sdm_loss(px, r, p, g) * 0.5).backward();
    }
    let (e, _) = worst(&grads_to_map(&m, &g), &full);
    assert!(e > 1e-2, "the naive sum should differ: {e:.2e}");
    assert!(accum_grads(&m, &b.images, &b.ids_clean, &pids, 3, m.alloc_grads()).is_err());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn ga_dms_accumulated_gradient_and_scores_are_the_full_batch_ones() {
    let dir = temp_dir("gadms-grad");
    let (train, _) = packed(&dir);
    let mut b = first_batch(&train, dual(&train));
    b.pids = b.sample_index.clone();
    let m = <GaDmsTiny<f32, Dev>>::build(&Dev::seed_from_u64(5));
    let cfg = StepConfig::default();
    let f = m.forward_losses(&b, &cfg, Branches::All, true, m.alloc_grads());
    let (p_full, s_full) = (f.parts, f.gass.unwrap().scores);
    let full = grads_to_map(&m, &f.loss.backward());
    let a = accum_forward(&m, &b, &cfg, 2, true).unwrap();
    let (e, at) = worst(&grads_to_map(&m, &a.grads), &full);
    let p = a.parts;
    eprintln!("GA-DMS, 2 micro-batches: {p:?} vs {p_full:?}, gradient {e:.2e} ({at})");
    assert_eq!(p.masked_tokens, p_full.masked_tokens);
    assert!(p_full.masked_tokens > 0);
    for (x, y) in [
        (p.loss, p_full.loss),
        (p.sdm, p_full.sdm),
        (p.mtp, p_full.mtp),
    ] {
        assert!((x - y).abs() <= 1e-5 * y.abs(), "{p:?} vs {p_full:?}");
    }
    assert!(e <= 1e-5, "{e:.2e} at {at}");
    // GASS: normalised over the whole batch, not per micro-batch.
    let s = a.scores.unwrap();
    let ds = s
        .iter()
        .zip(&s_full)
        .fold(0f32, |m, (x, y)| m.max((x - y).abs()));
    assert!(ds <= 1e-5, "scores differ by {ds}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn finetune_accumulated_step_is_the_full_batch_step() {
    let dir = temp_dir("ft-step");
    let (train, _) = packed(&dir);
    let b = first_batch(&train, Masking::Mlm);
    let classes = 8; // the packed train ids are 0..8, dense
    assert!(b.pids.iter().all(|&p| (p as usize) < classes));
    let w = FtWeights { id: 1.0, mlm: 1.0 };
    let dev = Dev::seed_from_u64(6);
    let m0 = <GaDmsTiny<f32, Dev>>::build(&dev);
    let c0 = IdClassifier::<32, f32, Dev>::new(&dev, classes);
    // Gradients: one micro-batch (the whole batch's graph) vs two.
    let (g1, id1, _) = irra_accum::accum_grads(&m0, &c0, &b, w, 1).unwrap();
    let (g2, id2, _) = irra_accum::accum_grads(&m0, &c0, &b, w, 2).unwrap();
    let (e, at) = worst(&grads_to_map(&m0, &g2), &grads_to_map(&m0, &g1));
    eprintln!("finetune, 2 micro-batches: gradient {e:.2e} ({at})");
    assert!(e <= 1e-5, "{e:.2e} at {at}");
    for (x, y) in [(&id2.weight, &id1.weight), (&id2.bias, &id1.bias)] {
        let scale = y.iter().fold(1e-3f32, |m, v| m.max(v.abs()));
        let d = x.iter().zip(y).fold(0f32, |m, (p, q)| m.max((p - q).abs()));
        assert!(d <= 1e-5 * scale, "classifier gradient differs by {d}");
    }
    // One step against the plain (full-batch) step: losses, gradient norm, parameters.
    let (mut m1, mut c1, mut o1) = (m0.clone(), c0.clone(), Adam::new(adam_config()));
    let (mut m2, mut c2, mut o2) = (m0.clone(), c0.clone(), Adam::new(adam_config()));
    let r1 = finetune_step(&mut m1, &mut c1, &mut o1, &b, w, 1e-3);
    let r2 = finetune_step_accum(&mut m2, &mut c2, &mut o2, &b, w, 1e-3, 2).unwrap();
    eprintln!("finetune: {r2:?} vs {r1:?}");
    assert!(r1.applied && r2.applied);
    assert_eq!(r1.masked_tokens, r2.masked_tokens);
    for (x, y) in [
        (r2.loss, r1.loss),
        (r2.loss_sdm, r1.loss_sdm),
        (r2.loss_id, r1.loss_id),
        (r2.loss_mlm, r1.loss_mlm),
        (r2.grad_norm, r1.grad_norm),
    ] {
        assert!((x - y).abs() <= 1e-5 * y.abs(), "{r2:?} vs {r1:?}");
    }
    // Adam's first step is lr·g/(|g| + ε) per entry: gradient rounding noise δ moves an
    // entry by up to lr·δ/ε, so the parameters agree to a small fraction of lr.
    let (a, c) = (module_to_map(&m2), module_to_map(&m1));
    let d = a.tensors.iter().fold(0f32, |m, (k, x)| {
        let y = &c.tensors[k].data;
        x.data
            .iter()
            .zip(y)
            .fold(m, |m, (p, q)| m.max((p - q).abs()))
    });
    eprintln!(
        "finetune: parameters after one step differ by {:.2e} lr",
        d / 1e-3
    );
    assert!(d <= 1e-2 * 1e-3, "parameters differ by {d}");
    let dc = (c1.weight.as_vec().iter().zip(c2.weight.as_vec()))
        .fold(0f32, |m, (x, y)| m.max((x - y).abs()));
    assert!(dc <= 1e-2 * 1e-3, "classifier differs by {dc}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// `(key, values)` of every tensor of a safetensors file.
fn tensors(path: &Path) -> TensorMap {
    gadms_ckpt::tensors::read_file(path).unwrap()
}

/// Trains twice (`--batch-size 16`; `--batch-size 8 --accum-steps 2`) and returns the worst
/// relative difference of the final `last.safetensors` tensors and the two run directories.
fn twin_runs(dir: &Path, run: impl Fn(usize, usize, PathBuf)) -> (f64, String) {
    let (a, b) = (dir.join("b16"), dir.join("b8x2"));
    run(16, 1, a.clone());
    run(8, 2, b.clone());
    let cfg: serde_json::Value =
        serde_json::from_slice(&std::fs::read(b.join("config.json")).unwrap()).unwrap();
    assert_eq!(cfg["args"]["accum_steps"], 2);
    assert_eq!(cfg["accum_steps"], 2);
    assert_eq!(cfg["steps_per_epoch"], 2, "32 captions / 16 pairs per step");
    worst(
        &tensors(&b.join("last.safetensors")),
        &tensors(&a.join("last.safetensors")),
    )
}

/// `gadms pretrain` on the packed set in `dir` with these settings, into `dir/out_name`.
fn pretrain_run(
    dir: &Path,
    objective: Objective,
    batch_size: usize,
    accum_steps: usize,
    out: PathBuf,
) {
    pretrain::run(PretrainArgs {
        objective,
        epochs: 3,
        batch_size,
        accum_steps,
        gass_layers: 2,
        data: Some(dir.join("train")),
        eval_data: vec![dir.join("test")],
        out,
        ..PretrainArgs::default()
    })
    .unwrap()
}

#[test]
fn pretrain_sdm_batch_8_times_2_trains_as_batch_16() {
    let dir = temp_dir("sdm-run");
    packed(&dir);
    let (e, at) = twin_runs(&dir, |b, k, out| {
        pretrain_run(&dir, Objective::Sdm, b, k, out)
    });
    eprintln!("sdm: last.safetensors worst relative difference {e:.2e} ({at})");
    assert!(e <= 1e-4, "{e:.2e} at {at}");
    // Batches of 8 without accumulation train another model: the comparison can fail.
    pretrain_run(&dir, Objective::Sdm, 8, 1, dir.join("b8"));
    let (e, _) = worst(
        &tensors(&dir.join("b8/last.safetensors")),
        &tensors(&dir.join("b16/last.safetensors")),
    );
    assert!(e > 1e-2, "batch 8 vs 16: {e:.2e}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn pretrain_ga_dms_batch_8_times_2_trains_as_batch_16() {
    let dir = temp_dir("gadms-run");
    packed(&dir);
    let (e, at) = twin_runs(&dir, |b, k, out| {
        pretrain_run(&dir, Objective::GaDms, b, k, out)
    });
    eprintln!("ga-dms: last.safetensors worst relative difference {e:.2e} ({at})");
    assert!(e <= 1e-4, "{e:.2e} at {at}");
    // The score tables (GASS, min–max over the whole batch) agree too.
    let scores = |run: &str| ScoreTable::open(&dir.join(run).join("scores.f32"), Some(32)).unwrap();
    let (a, b) = (scores("b16"), scores("b8x2"));
    let d = (0..32).fold(0f32, |m, r| {
        let (x, y) = (a.get(r), b.get(r));
        x.iter()
            .zip(y.iter())
            .fold(m, |m, (p, q)| m.max((p - q).abs()))
    });
    eprintln!("ga-dms: scores.f32 max difference {d:.2e}");
    assert!(d <= 1e-4, "scores differ by {d}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn finetune_batch_8_times_2_trains_as_batch_16() {
    let dir = temp_dir("ft-run");
    let (train, test) = packed(&dir);
    let pre = dir.join("pre");
    pretrain::run(PretrainArgs {
        epochs: 1,
        batch_size: 16,
        data: Some(train.clone()),
        out: pre.clone(),
        ..PretrainArgs::default()
    })
    .unwrap();
    let (e, at) = twin_runs(&dir, |batch_size, accum_steps, out| {
        finetune::run(FinetuneArgs {
            init: Some(pre.clone()),
            epochs: 3,
            batch_size,
            accum_steps,
            lr: 1e-4,
            data: Some(train.clone()),
            eval_data: vec![test.clone()],
            out,
            ..FinetuneArgs::default()
        })
        .unwrap()
    });
    eprintln!("finetune: last.safetensors worst relative difference {e:.2e} ({at})");
    assert!(e <= 1e-4, "{e:.2e} at {at}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Runs the binary; returns (success, stderr).
fn gadms(args: &[&str]) -> (bool, String) {
    let out = Command::new(BIN).args(args).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    (out.status.success(), err)
}

#[test]
fn bad_accum_steps_are_clear_errors() {
    let dir = temp_dir("flags");
    let (train, _) = packed(&dir);
    let (t, o) = (train.to_str().unwrap(), dir.join("out"));
    let o = o.to_str().unwrap();
    let init =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/embed/tiny_openclip_f16.safetensors");
    let i = init.to_str().unwrap();
    let cases: [&[&str]; 4] = [
        &["pretrain", "--data", t, "--out", o, "--accum-steps", "0"],
        &[
            "pretrain",
            "--data",
            t,
            "--out",
            o,
            "--batch-size",
            "0",
            "--accum-steps",
            "2",
        ],
        &[
            "finetune",
            "--init",
            i,
            "--data",
            t,
            "--out",
            o,
            "--accum-steps",
            "0",
        ],
        &[
            "pretrain",
            "--data",
            t,
            "--out",
            o,
            "--batch-size",
            "20",
            "--accum-steps",
            "2",
        ],
    ];
    let want = [
        "--accum-steps must be at least 1",
        "a micro-batch at least 1",
        "--accum-steps must be at least 1",
        "32 samples give no batch of 40",
    ];
    for (args, want) in cases.iter().zip(want) {
        let (ok, err) = gadms(args);
        assert!(!ok, "{args:?} succeeded");
        assert!(err.starts_with("error:"), "{args:?}: {err}");
        assert!(err.contains(want), "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{err}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
