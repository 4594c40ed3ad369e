//! `gadms finetune` (IRRA recipe, docs/method.md §6.2): parameter groups, a very
//! short run from a `pretrain` checkpoint on the fixture CUHK-PEDES-form split (files, metric
//! lines, classifier size, best/last weights), the step's learning, and clear errors.

use crate::packed::tiny_packed;
use dfdx::prelude::*;
use gadms::cmd::finetune::{FinetuneArgs, run};
use gadms::cmd::pretrain::{PretrainArgs, run as pretrain};
use gadms::train::data::open_packed;
use gadms::train::irra::{
    Classes, FtClassifier, FtModel, FtWeights, finetune_step, irra_group, load_model,
};
use gadms::train::optim::{Adam, AdamConfig};
use gadms_data::loader::{Loader, LoaderConfig, Masking};
use std::path::{Path, PathBuf};
use std::sync::Arc;

fn temp_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("gadms-finetune-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn jsonl(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// IRRA `build_optimizer`: cross 5x; bias 2x and no decay; classifier / mlm_head 5x.
#[test]
fn irra_parameter_groups() {
    let g = |n: &str| {
        let g = irra_group(n);
        (g.lr_mult, g.wd_mult)
    };
    assert_eq!(g("transformer.resblocks.0.mlp.c_fc.weight"), (1.0, 1.0));
    assert_eq!(g("visual.conv1.weight"), (1.0, 1.0));
    assert_eq!(g("ln_pre_t.weight"), (1.0, 1.0));
    assert_eq!(g("cross_attn.q_proj.weight"), (5.0, 1.0));
    assert_eq!(
        g("cross_modal_transformer.resblocks.0.ln_1.weight"),
        (5.0, 1.0)
    );
    assert_eq!(g("cross_attn.q_proj.bias"), (2.0, 0.0));
    assert_eq!(g("transformer.resblocks.0.ln_1.bias"), (2.0, 0.0));
    assert_eq!(g("mlm_head.fc.weight"), (5.0, 1.0));
    assert_eq!(g("mlm_head.fc.bias"), (5.0, 0.0));
    assert_eq!(g("classifier.weight"), (5.0, 1.0));
    assert_eq!(g("classifier.bias"), (5.0, 0.0));
}

/// A few steps on one repeated batch lower the loss; the classifier moves and has Adam state.
#[test]
fn a_few_finetune_steps_lower_the_loss() {
    let dir = temp_dir("steps");
    let (train, _) = tiny_packed(&dir);
    let ds = Arc::new(open_packed(&train, "--data").unwrap());
    let classes = Classes::of(&ds).unwrap();
    assert_eq!(classes.len(), 4);
    assert!(classes.is_identity());
    let mut loader = Loader::new(
        ds,
        LoaderConfig {
            batch_size: 8,
            workers: 1,
            masking: Masking::Mlm,
            ..LoaderConfig::default()
        },
    )
    .unwrap();
    let batch = loader.next_batch().unwrap();
    let dev = Cpu::seed_from_u64(0);
    let mut model = <FtModel<Cpu> as dfdx::nn::BuildModule<Cpu, f32>>::build(&dev);
    let mut cls = FtClassifier::<Cpu>::new(&dev, classes.len());
    let w0 = cls.weight.as_vec();
    let mut opt = Adam::new(AdamConfig::default());
    let w = FtWeights { id: 1.0, mlm: 1.0 };
    let first = finetune_step(&mut model, &mut cls, &mut opt, &batch, w, 1e-3);
    assert!(first.applied);
    assert!(
        (first.loss - (first.loss_sdm + first.loss_id + first.loss_mlm)).abs() < 1e-3,
        "{first:?}"
    );
    // ID at init: ln(C) (the classifier's logits are ~0).
    assert!(
        (first.loss_id - (classes.len() as f32).ln()).abs() < 0.05,
        "{first:?}"
    );
    let mut last = first;
    for _ in 0..5 {
        last = finetune_step(&mut model, &mut cls, &mut opt, &batch, w, 1e-3);
    }
    assert!(last.loss < first.loss, "{first:?} -> {last:?}");
    assert!(last.loss_id < first.loss_id, "{first:?} -> {last:?}");
    assert_ne!(cls.weight.as_vec(), w0);
    // Model tensors plus the classifier's two.
    let model_tensors = gadms_ckpt::module_to_map(&model).tensors.len();
    assert_eq!(opt.tracked(), model_tensors + 2);
    let _ = std::fs::remove_dir_all(&dir);
}

/// `pretrain` → `finetune --init RUN_DIR` on the fixture split: files, metric lines with every
/// loss part, one evaluation per epoch, best/last weights, the full model with the classifier.
#[test]
fn short_finetune_from_a_pretrain_checkpoint() {
    let dir = temp_dir("e2e");
    let (train, test) = tiny_packed(&dir);
    let pre = dir.join("pre");
    pretrain(PretrainArgs {
        epochs: 1,
        batch_size: 8,
        data: Some(train.clone()),
        out: pre.clone(),
        ..PretrainArgs::default()
    })
    .unwrap();
    let out = dir.join("ft");
    run(FinetuneArgs {
        init: Some(pre.clone()),
        data: Some(train.clone()),
        eval_data: vec![test.clone()],
        epochs: 2,
        batch_size: 8,
        lr: 1e-4,
        out: out.clone(),
        ..FinetuneArgs::default()
    })
    .unwrap();
    let lines = jsonl(&out.join("metrics.jsonl"));
    let steps: Vec<_> = lines.iter().filter(|l| l.get("loss").is_some()).collect();
    assert_eq!(steps.len(), 4, "16 captions / batch 8 x 2 epochs");
    for s in &steps {
        for k in [
            "step",
            "epoch",
            "loss",
            "loss_sdm",
            "loss_id",
            "loss_mlm",
            "masked_tokens",
            "lr",
            "pairs_per_s",
        ] {
            assert!(s.get(k).is_some(), "{k} missing: {s}");
        }
    }
    // Before + after each of the 2 epochs.
    let evals: Vec<_> = lines.iter().filter(|l| l.get("r1").is_some()).collect();
    assert_eq!(evals.len(), 3, "{evals:?}");
    assert!(evals.iter().all(|e| e["split"] == "test"));
    for f in ["last.safetensors", "best.safetensors", "config.json"] {
        assert!(out.join(f).exists(), "{f}");
    }
    let cfg: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("config.json")).unwrap()).unwrap();
    assert_eq!(cfg["classes"], 4);
    // The full model loads back with its 4-class classifier.
    let dev = Cpu::default();
    let mut m = <FtModel<Cpu> as dfdx::nn::BuildModule<Cpu, f32>>::build(&dev);
    let mut c = FtClassifier::<Cpu>::new(&dev, 4);
    load_model(&mut m, &mut c, &out.join("gadms_model.safetensors")).unwrap();
    let mut c5 = FtClassifier::<Cpu>::new(&dev, 5);
    let err = load_model(&mut m, &mut c5, &out.join("gadms_model.safetensors")).unwrap_err();
    assert!(format!("{err:#}").contains("4"), "{err:#}");
    // The fine-tuned file is a valid --init for another fine-tuning (decoder included).
    run(FinetuneArgs {
        init: Some(out.join("gadms_model.safetensors")),
        data: Some(train),
        eval_data: vec![test],
        epochs: 1,
        batch_size: 8,
        out: dir.join("ft2"),
        ..FinetuneArgs::default()
    })
    .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn finetune_needs_init_and_checks_flags() {
    let err = run(FinetuneArgs::default()).unwrap_err();
    assert!(format!("{err:#}").contains("--init"), "{err:#}");
    let err = run(FinetuneArgs {
        init: Some("/nonexistent".into()),
        ..FinetuneArgs::default()
    })
    .unwrap_err();
    assert!(format!("{err:#}").contains("no such file"), "{err:#}");
    let err = run(FinetuneArgs {
        init: Some(".".into()),
        id_weight: -1.0,
        ..FinetuneArgs::default()
    })
    .unwrap_err();
    let msg = format!("{err:#}");
    assert!(
        msg.contains("--id-weight") || msg.contains("--init"),
        "{msg}"
    );
}

/// Person ids become dense classes whatever their values: a pid of 10^18 needs no 10^18-row
/// classifier.
#[test]
fn sparse_pids_become_dense_classes() {
    let c = Classes::from_pids([1_000_000_000_000_000_000, 7, 7, 42]);
    assert_eq!(c.len(), 3);
    assert!(!c.is_identity());
    assert_eq!(c.class(7), Some(0));
    assert_eq!(c.class(42), Some(1));
    assert_eq!(c.class(1_000_000_000_000_000_000), Some(2));
    assert_eq!(c.class(8), None);
    assert!(Classes::from_pids([2, 0, 1]).is_identity());
}
