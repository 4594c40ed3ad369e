//! Activation checkpointing (`gadms_nn::checkpoint`, `--grad-checkpointing`): the loss and every
//! parameter gradient of a GA-DMS step equal the plain pass's, through all three towers (the
//! vision tower, the text tower under its causal mask, the MTP decoder), with every block
//! recomputed once in the backward pass; and the switch reaches the commands.

use dfdx::nn::ZeroGrads;
use dfdx::prelude::*;
use gadms::Dev;
use gadms::cmd::pretrain::{self, PretrainArgs};
use gadms::train::gadms::{Branches, GaDmsForward, StepConfig};
use gadms_ckpt::bridge::grads_to_map;
use gadms_data::synth::synthetic_batch;
use gadms_nn::GaDmsTiny;
use gadms_nn::checkpoint::{checkpointing, recomputed_blocks, with_checkpointing};

/// Blocks of `GaDmsTiny` in one step: vision 2 (the MTP decoder reads every image token), text
/// 2 for each of the two text passes that keep a graph (SDM, MTP), decoder 1.
const BLOCKS: usize = 2 + 2 + 2 + 1;

#[test]
fn checkpointed_step_has_the_plain_gradients() {
    let dev = Dev::seed_from_u64(31);
    let m = <GaDmsTiny<f32, Dev>>::build(&dev);
    let batch = synthetic_batch(6, 64, 32, 3);
    let cfg = StepConfig::default();
    let run = |on| {
        with_checkpointing(on, || {
            let before = recomputed_blocks();
            let f = m.forward_losses(&batch, &cfg, Branches::All, false, m.alloc_grads());
            let loss = f.loss.as_vec()[0];
            let g = grads_to_map(&m, &f.loss.backward());
            (loss, g, recomputed_blocks() - before)
        })
    };
    let (l0, g0, n0) = run(false);
    let (l1, g1, n1) = run(true);
    assert_eq!(n0, 0);
    assert_eq!(n1, BLOCKS, "every block recomputed once");
    assert_eq!(l0.to_bits(), l1.to_bits(), "the forward pass is the same");
    assert_eq!(g0.tensors.len(), g1.tensors.len());
    let largest = g0
        .tensors
        .values()
        .flat_map(|t| t.data.iter())
        .fold(0f32, |m, v| m.max(v.abs()));
    let mut worst = (0f32, String::new());
    for (k, a) in &g0.tensors {
        let b = &g1.tensors[k].data;
        let scale = a.data.iter().fold(1e-4 * largest, |m, v| m.max(v.abs()));
        let d = a
            .data
            .iter()
            .zip(b)
            .fold(0f32, |m, (x, y)| m.max((x - y).abs()));
        if d / scale > worst.0 {
            worst = (d / scale, k.clone());
        }
        assert!(
            a.data.iter().any(|&v| v != 0.0) || k.contains("k_proj.bias"),
            "{k}: zero"
        );
    }
    eprintln!(
        "checkpointed vs plain: worst gradient difference {:.2e} ({})",
        worst.0, worst.1
    );
    assert!(worst.0 <= 1e-5, "{worst:?}");
}

/// `pretrain --grad-checkpointing` sets the switch for its run only and records the flag.
#[test]
fn pretrain_flag_sets_the_switch_for_the_run() {
    let dir = std::env::temp_dir().join(format!("gadms-ckpt-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let (train, _) = crate::packed::tiny_packed(&dir);
    let before = recomputed_blocks();
    pretrain::run(PretrainArgs {
        epochs: 1,
        batch_size: 8,
        data: Some(train),
        out: dir.join("run"),
        grad_checkpointing: true,
        ..PretrainArgs::default()
    })
    .unwrap();
    assert!(recomputed_blocks() > before, "the run recomputed blocks");
    assert!(!checkpointing(), "the switch is restored after the run");
    let cfg: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("run/config.json")).unwrap()).unwrap();
    assert_eq!(cfg["args"]["grad_checkpointing"], true);
    let _ = std::fs::remove_dir_all(&dir);
}
