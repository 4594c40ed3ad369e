//! gadms' Adam against torch.optim.Adam / AdamW / clip_grad_norm_
//! (fixtures/adam/make.py), frozen tensors, and exact save/load.

use crate::common::*;
use dfdx::prelude::*;
use gadms::train::optim::{Adam, AdamConfig, Group, WeightDecay};

type Model = dfdx::nn::modules::Linear<3, 4, f32, Cpu>;
const FILE: &str = "adam/ref_adam.safetensors";

fn init(dev: &Cpu) -> Model {
    let mut m = Model::build(dev);
    m.weight.copy_from(&tensor(FILE, "init.weight").data);
    m.bias.copy_from(&tensor(FILE, "init.bias").data);
    m
}

/// Gradients equal to the reference's step-`i` gradients: backward of Σ p·g.
fn grads_for(dev: &Cpu, m: &Model, i: usize) -> Gradients<f32, Cpu> {
    let gw: Tensor<Rank2<4, 3>, f32, Cpu> =
        dev.tensor(tensor(FILE, &format!("grad{i}.weight")).data);
    let gb: Tensor<Rank1<4>, f32, Cpu> = dev.tensor(tensor(FILE, &format!("grad{i}.bias")).data);
    let g = m.alloc_grads();
    let w = m.weight.clone().trace(g);
    let (lw, tape) = (w * gw).sum::<(), _>().split_tape();
    let lb = (m.bias.clone().put_tape(tape) * gb).sum::<(), _>();
    (lb + lw).backward()
}

fn run(cfg: AdamConfig) -> Model {
    run_path(cfg, false)
}

/// `tensor_path`: the device-op update (what CUDA runs), forced on the CPU.
fn run_path(cfg: AdamConfig, tensor_path: bool) -> Model {
    let dev = Cpu::default();
    let mut m = init(&dev);
    let mut opt = Adam::new(cfg);
    opt.tensor_path = tensor_path;
    let lrs = tensor(FILE, "lrs").data;
    for (i, lr) in lrs.iter().enumerate() {
        let g = grads_for(&dev, &m, i);
        opt.update(&mut m, &g, *lr, &|_| Group::PLAIN);
    }
    m
}

fn check(m: &Model, tag: &str) {
    let w = gadms_ckpt::Array::new(vec![4, 3], m.weight.as_vec());
    let b = gadms_ckpt::Array::new(vec![4], m.bias.as_vec());
    assert_close(
        &format!("{tag}.weight"),
        &w,
        &tensor(FILE, &format!("{tag}.weight")),
        1e-5,
    );
    assert_close(
        &format!("{tag}.bias"),
        &b,
        &tensor(FILE, &format!("{tag}.bias")),
        1e-5,
    );
}

#[test]
fn adam_with_coupled_l2_matches_torch() {
    check(&run(AdamConfig::default()), "adam_l2");
}

#[test]
fn adamw_matches_torch() {
    let cfg = AdamConfig {
        weight_decay: WeightDecay::Decoupled(0.05),
        ..Default::default()
    };
    check(&run(cfg), "adamw");
}

#[test]
fn gradient_clipping_matches_torch() {
    let cfg = AdamConfig {
        clip_norm: Some(1.0),
        ..Default::default()
    };
    check(&run(cfg), "adam_l2_clip1");
}

#[test]
fn saved_state_resumes_exactly() {
    let dev = Cpu::default();
    let lrs = tensor(FILE, "lrs").data;
    let (mut a, mut opt) = (init(&dev), Adam::new(AdamConfig::default()));
    for (i, &lr) in lrs.iter().enumerate().take(2) {
        let g = grads_for(&dev, &a, i);
        opt.update(&mut a, &g, lr, &|_| Group::PLAIN);
    }
    let path = std::env::temp_dir().join(format!("gadms-adam-{}.safetensors", std::process::id()));
    opt.save(&path).unwrap();
    let mut resumed = Adam::load(&path).unwrap();
    std::fs::remove_file(&path).unwrap();
    let mut b = a.clone();
    let g = grads_for(&dev, &a, 2);
    opt.update(&mut a, &g, lrs[2], &|_| Group::PLAIN);
    resumed.update(&mut b, &g, lrs[2], &|_| Group::PLAIN);
    assert_eq!(a.weight.as_vec(), b.weight.as_vec());
    assert_eq!(a.bias.as_vec(), b.bias.as_vec());
    check(&a, "adam_l2");
}

#[test]
fn group_multipliers_scale_the_step() {
    let dev = Cpu::default();
    let mut m = init(&dev);
    let before = m.bias.as_vec();
    let g = grads_for(&dev, &m, 0);
    let mut opt = Adam::new(AdamConfig::default());
    opt.update(&mut m, &g, 1e-3, &|n| {
        if n == "bias" {
            Group {
                lr_mult: 0.0,
                wd_mult: 0.0,
            }
        } else {
            Group::PLAIN
        }
    });
    assert_eq!(
        m.bias.as_vec(),
        before,
        "lr multiplier 0 must leave the bias unchanged"
    );
    assert_eq!(opt.tracked(), 2);
}

/// The tensor path (device ops, in-place parameter write) against the same PyTorch references,
/// and against the host loop.
#[test]
fn tensor_path_matches_torch_and_the_host_path() {
    let cases = [
        ("adam_l2", AdamConfig::default()),
        (
            "adamw",
            AdamConfig {
                weight_decay: WeightDecay::Decoupled(0.05),
                ..Default::default()
            },
        ),
        (
            "adam_l2_clip1",
            AdamConfig {
                clip_norm: Some(1.0),
                ..Default::default()
            },
        ),
    ];
    for (tag, cfg) in cases {
        let (host, dev) = (run_path(cfg, false), run_path(cfg, true));
        check(&dev, tag);
        let e = rel_err(&dev.weight.as_vec(), &host.weight.as_vec());
        assert!(e < 1e-6, "{tag}: tensor vs host path {e}");
    }
}

/// The tensor path keeps the parameter's id (gradient stores stay valid) and its state
/// saves, loads (back on the host) and resumes exactly like the host path's.
#[test]
fn tensor_path_keeps_ids_and_resumes() {
    let dev = Cpu::default();
    let lrs = tensor(FILE, "lrs").data;
    let (mut a, mut opt) = (init(&dev), Adam::new(AdamConfig::default()));
    opt.tensor_path = true;
    let store = a.alloc_grads();
    for (i, &lr) in lrs.iter().enumerate().take(2) {
        let g = grads_for(&dev, &a, i);
        opt.update(&mut a, &g, lr, &|_| Group::PLAIN);
    }
    // Panics if the update replaced the tensors (new ids) instead of writing them in place.
    let _ = (store.get(&a.weight), store.get(&a.bias));
    let path =
        std::env::temp_dir().join(format!("gadms-adam-t-{}.safetensors", std::process::id()));
    opt.save(&path).unwrap();
    let mut resumed = Adam::load(&path).unwrap();
    std::fs::remove_file(&path).unwrap();
    resumed.tensor_path = true;
    let mut b = a.clone();
    let g = grads_for(&dev, &a, 2);
    opt.update(&mut a, &g, lrs[2], &|_| Group::PLAIN);
    resumed.update(&mut b, &g, lrs[2], &|_| Group::PLAIN);
    assert_eq!(a.weight.as_vec(), b.weight.as_vec());
    assert_eq!(a.bias.as_vec(), b.bias.as_vec());
    check(&a, "adam_l2");
}
