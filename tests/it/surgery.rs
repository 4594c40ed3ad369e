//! Model surgery: the `gadms_nn::surgery` transforms carry weights exactly, a frozen
//! tower gets no update and no optimiser state, towers copy out of checkpoints with run-time
//! shape checks, and the three `examples/surgery_*.rs` experiments run (their bodies are
//! `gadms::surgery::experiments`) and save checkpoints the command line accepts — or, for a
//! custom shape, refuses with a clear message.

use dfdx::nn::BuildModule;
use dfdx::prelude::*;
use gadms::surgery::experiments::{
    self, Settings, ShallowText, ShallowTiny, Text48, Tiny48, TinyFrozenVision, TinyModel,
};
use gadms::surgery::*;
use gadms::train::optim::{Adam, AdamConfig, Group};
use gadms_ckpt::surgery::{load_text_tower, load_vision_tower};
use gadms_ckpt::{TensorMap, load_clip, module_to_map, save_clip};
use gadms_nn::{HasClipSpec, MtpTiny, TINY_SPEC, TinyText, TinyVision};
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

type Dev = Cpu;

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("gadms-surgery-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn tiny(seed: u64) -> TinyModel {
    TinyModel::build(&Dev::seed_from_u64(seed))
}

/// The entries of `a` whose key passes `keep`.
fn subset(a: &TensorMap, keep: impl Fn(&str) -> bool) -> Vec<(String, Vec<f32>)> {
    a.tensors
        .iter()
        .filter(|(k, _)| keep(k))
        .map(|(k, v)| (k.clone(), v.data.clone()))
        .collect()
}

#[test]
fn keep_text_layers_carries_the_kept_weights_exactly() {
    let m = tiny(1);
    let before = module_to_map(&m.text);
    let shallow: ShallowText = keep_text_layers(m.text);
    let after = module_to_map(&shallow);
    // Everything but block 1 is there, bit-identical; block 1 is gone.
    assert_eq!(
        subset(&before, |k| !k.starts_with("transformer.resblocks.1.")),
        subset(&after, |_| true)
    );
    assert!(after.tensors.keys().all(|k| !k.contains("resblocks.1.")));
    assert_eq!(shallow.transformer.resblocks.modules.len(), 1);
    // Vision depth too.
    let v = tiny(2).visual;
    let vb = module_to_map(&v);
    let v1: gadms_nn::VisionTower<64, 32, 16, 768, 9, 64, 2, 32, 256, 1, 32, f32, Dev> =
        keep_vision_layers(v);
    assert_eq!(
        subset(&vb, |k| !k.starts_with("transformer.resblocks.1.")),
        subset(&module_to_map(&v1), |_| true)
    );
}

#[test]
fn with_embed_replaces_both_projections_and_keeps_the_rest() {
    let m = tiny(3);
    let before = module_to_map(&m);
    let m48: Tiny48 =
        with_embed::<48, _, _, _, _, _, _, _, _, _, _, _, _, _, _, _, _, _, _, _, _>(m);
    let after = module_to_map(&m48);
    let is_proj = |k: &str| k == "text_projection" || k == "visual.proj";
    assert_eq!(
        subset(&before, |k| !is_proj(k)),
        subset(&after, |k| !is_proj(k))
    );
    assert_eq!(after.get("text_projection").unwrap().shape, vec![64, 48]);
    assert_eq!(after.get("visual.proj").unwrap().shape, vec![64, 48]);
    // Fresh N(0, 64^-1/2) draws: std about 0.125.
    let p = &after.get("text_projection").unwrap().data;
    let std = (p.iter().map(|x| x * x).sum::<f32>() / p.len() as f32).sqrt();
    assert!((0.1..0.15).contains(&std), "std {std}");
    assert_eq!(<Tiny48 as HasClipSpec>::SPEC.embed(), 48);
    assert_eq!(<Tiny48 as HasClipSpec>::SPEC.name, "custom");
}

#[test]
fn with_text_projection_installs_the_given_matrix() {
    let dev = Dev::seed_from_u64(4);
    let t = TinyText::<f32, Dev>::build(&dev);
    let proj: Tensor<Rank2<64, 48>, f32, Dev> = dev.sample_normal();
    let want = proj.as_vec();
    let t48: Text48 = with_text_projection(t, proj);
    assert_eq!(t48.text_projection.as_vec(), want);
}

#[test]
fn graft_and_assemble_move_the_towers() {
    let donor = tiny(5);
    let vb = module_to_map(&donor.visual);
    let new_text = TinyText::<f32, Dev>::build(&Dev::seed_from_u64(6));
    let tb = module_to_map(&new_text);
    let g = graft_vision(donor, new_text);
    assert_eq!(module_to_map(&g.visual).tensors, vb.tensors);
    assert_eq!(module_to_map(&g.text).tensors, tb.tensors);
    let other = tiny(7);
    let ob = module_to_map(&other.text);
    let g2 = graft_text(g.visual, other);
    assert_eq!(module_to_map(&g2.text).tensors, ob.tensors);
    // The GA-DMS model of a grafted CLIP and a fitting decoder.
    let mtp = MtpTiny::<f32, Dev>::build(&Dev::seed_from_u64(8));
    let model = attach_decoder(g2, mtp);
    assert_eq!(model.clip.visual.proj.shape().1, Const::<32>);
}

#[test]
fn frozen_tower_is_unchanged_by_adam_and_holds_no_state() {
    let m = tiny(9);
    let vision_before = module_to_map(&m.visual);
    let text_before = module_to_map(&m.text);
    let n_text = text_before.tensors.len();
    let mut model: TinyFrozenVision = freeze_vision(m);
    // Same keys as the plain model: a frozen model saves like a plain one.
    assert_eq!(
        module_to_map(&model).tensors.keys().collect::<Vec<_>>(),
        module_to_map(&tiny(0)).tensors.keys().collect::<Vec<_>>()
    );
    assert_eq!(
        model.num_trainable_params(),
        TinyText::<f32, Dev>::build(&Dev::default()).num_trainable_params()
    );
    let mut opt = Adam::new(AdamConfig::default());
    for i in 0..2 {
        let batch = gadms_data::synth::synthetic_batch(4, 64, 32, i);
        let loss = sdm_step(&mut model, &mut opt, &batch, 1e-2, &|_| Group::PLAIN);
        assert!(loss.is_finite());
    }
    assert_eq!(
        module_to_map(&model.visual.0).tensors,
        vision_before.tensors
    );
    assert_ne!(module_to_map(&model.text).tensors, text_before.tensors);
    assert_eq!(
        opt.tracked(),
        n_text,
        "Adam holds state for the text tower only"
    );
    // Thawed, the same weights train again.
    let mut plain: TinyModel = thaw(model);
    let mut opt = Adam::new(AdamConfig::default());
    let batch = gadms_data::synth::synthetic_batch(4, 64, 32, 9);
    sdm_step(&mut plain, &mut opt, &batch, 1e-2, &|_| Group::PLAIN);
    assert_ne!(module_to_map(&plain.visual).tensors, vision_before.tensors);
    assert_eq!(opt.tracked(), module_to_map(&plain).tensors.len());
}

#[test]
fn towers_copy_out_of_a_checkpoint_of_another_preset() {
    let dir = tmp("towers");
    // A custom (one-text-block) checkpoint...
    let m = tiny(10);
    let shallow: ShallowTiny = assemble(m.visual, keep_text_layers(m.text));
    let path = dir.join("shallow.safetensors");
    save_clip(&shallow, &ShallowTiny::SPEC, &path).unwrap();
    // ...gives its vision tower to a Tiny vision tower (same tower type).
    let mut v = TinyVision::<f32, Dev>::build(&Dev::seed_from_u64(11));
    load_vision_tower(&mut v, &path).unwrap();
    assert_eq!(
        module_to_map(&v).tensors,
        module_to_map(&shallow.visual).tensors
    );
    // Its text tower copies into the one-block type...
    let mut t1 = ShallowText::build(&Dev::seed_from_u64(12));
    load_text_tower(&mut t1, &path).unwrap();
    assert_eq!(
        module_to_map(&t1).tensors,
        module_to_map(&shallow.text).tensors
    );
    // ...but not into Tiny's two-block text tower: a run-time error naming the key.
    let mut t2 = TinyText::<f32, Dev>::build(&Dev::default());
    let e = load_text_tower(&mut t2, &path).unwrap_err().to_string();
    assert!(e.contains("missing key 'transformer.resblocks.1."), "{e}");
    assert!(e.contains("copying the text tower"), "{e}");
    // A Tiny text tower does not fit the 48-wide projection type: names key and shapes.
    let tiny_path = dir.join("tiny.safetensors");
    save_clip(&tiny(13), &TINY_SPEC, &tiny_path).unwrap();
    let mut t48 = Text48::build(&Dev::default());
    let e = load_text_tower(&mut t48, &tiny_path)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains(
            "key 'text_projection' has shape [64, 32] in the file, but the model expects [64, 48]"
        ),
        "{e}"
    );
}

#[test]
fn loading_a_checkpoint_into_a_preset_of_another_shape_is_a_clear_error() {
    let dir = tmp("wrong-shape");
    let m48: Tiny48 =
        with_embed::<48, _, _, _, _, _, _, _, _, _, _, _, _, _, _, _, _, _, _, _, _>(tiny(14));
    let path = dir.join("m48.safetensors");
    save_clip(&m48, &Tiny48::SPEC, &path).unwrap();
    let mut t = tiny(15);
    let e = load_clip(&mut t, &TINY_SPEC, &path)
        .unwrap_err()
        .to_string();
    assert!(e.contains("m48.safetensors"), "{e}");
    assert!(
        e.contains("has shape [64, 48] in the file, but the model expects [64, 32]"),
        "{e}"
    );
    assert!(e.contains("fits no preset"), "{e}");
    // The other way round: a Tiny checkpoint into the custom type.
    let tiny_path = dir.join("tiny.safetensors");
    save_clip(&tiny(16), &TINY_SPEC, &tiny_path).unwrap();
    let mut m = Tiny48::build(&Dev::default());
    let e = load_clip(&mut m, &Tiny48::SPEC, &tiny_path)
        .unwrap_err()
        .to_string();
    assert!(e.contains("but the model expects [64, 48]"), "{e}");
}

fn gadms(args: &[&dyn AsRef<std::ffi::OsStr>]) -> Output {
    let args: Vec<OsString> = args.iter().map(|a| a.as_ref().to_os_string()).collect();
    Command::new(env!("CARGO_BIN_EXE_gadms"))
        .args(&args)
        .output()
        .expect("cannot start the gadms binary")
}

fn cli_accepts(ckpt: &Path, dir: &Path) {
    let texts = dir.join("captions.txt");
    std::fs::write(
        &texts,
        "a woman in a red coat\na man with a black backpack\n",
    )
    .unwrap();
    let emb = dir.join("embeds.safetensors");
    let out = gadms(&[
        &"embed",
        &"--weights",
        &ckpt,
        &"--texts",
        &texts,
        &"--out",
        &emb,
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = gadms(&[
        &"export",
        &"--weights",
        &ckpt,
        &"--format",
        &"open-clip",
        &"--out",
        &dir.join("export"),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(dir.join("export/open_clip_model.safetensors").is_file());
    // `gadms eval` on the embedded set's test split, packed at the Tiny size.
    let data = dir.join("test-pack");
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/synth-pedes");
    let out = gadms(&[
        &"pack",
        &"--format",
        &"cuhk-pedes",
        &"--src",
        &src,
        &"--split",
        &"test",
        &"--image-size",
        &"64x32",
        &"--out",
        &data,
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json = dir.join("eval.json");
    let out = gadms(&[
        &"eval",
        &"--weights",
        &ckpt,
        &"--data",
        &data,
        &"--json",
        &json,
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    assert!(
        v["r1"].as_f64().is_some_and(|r| (0.0..=100.0).contains(&r)),
        "{v}"
    );
}

#[test]
fn example_graft_new_text_runs_and_the_cli_accepts_its_checkpoint() {
    let dir = tmp("ex-graft");
    let o = experiments::graft_new_text(&Settings::new(&dir)).unwrap();
    assert_eq!(o.spec, TINY_SPEC);
    assert_eq!(o.tracked, o.tensors);
    assert!(o.losses.iter().all(|l| l.is_finite()));
    cli_accepts(&o.checkpoint, &dir);
}

#[test]
fn example_reinit_projection_runs_and_the_cli_accepts_its_checkpoint() {
    let dir = tmp("ex-reinit");
    let o = experiments::reinit_projection(&Settings::new(&dir)).unwrap();
    assert_eq!(o.spec, TINY_SPEC);
    assert!(o.losses.iter().all(|l| l.is_finite()));
    cli_accepts(&o.checkpoint, &dir);
}

fn cli_refuses_custom(ckpt: &Path, dir: &Path) {
    let out = gadms(&[
        &"export",
        &"--weights",
        &ckpt,
        &"--format",
        &"open-clip",
        &"--out",
        &dir.join("cli-export"),
    ]);
    assert!(!out.status.success());
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(e.contains("fit no preset"), "{e}");
    assert!(e.contains("custom model type"), "{e}");
    assert!(!e.contains("panicked"), "{e}");
    assert!(!dir.join("cli-export/open_clip_model.safetensors").exists());
}

#[test]
fn example_frozen_vision_runs_and_the_cli_accepts_its_checkpoint() {
    let dir = tmp("ex-frozen");
    let o = experiments::frozen_vision(&Settings::new(&dir)).unwrap();
    assert_eq!(o.spec, TINY_SPEC);
    assert_eq!(o.frozen_unchanged, Some(true));
    assert_eq!(
        o.tracked,
        module_to_map(&TinyText::<f32, Dev>::build(&Dev::default()))
            .tensors
            .len()
    );
    assert!(o.losses.iter().all(|l| l.is_finite()));
    cli_accepts(&o.checkpoint, &dir);
}

#[test]
fn example_shallow_text_runs_and_exports_from_rust() {
    let dir = tmp("ex-shallow");
    let o = experiments::shallow_text(&Settings::new(&dir)).unwrap();
    assert_eq!(o.spec.text.layers, 1);
    assert_eq!(o.spec.name, "custom");
    assert_eq!(o.tracked, o.tensors);
    let export = o.export_dir.as_ref().unwrap();
    // The Rust export is the standard layout: it loads back into the same type.
    let mut back = ShallowTiny::build(&Dev::default());
    load_clip(
        &mut back,
        &ShallowTiny::SPEC,
        &export.join("open_clip_model.safetensors"),
    )
    .unwrap();
    let mut again = ShallowTiny::build(&Dev::default());
    load_clip(&mut again, &ShallowTiny::SPEC, &o.checkpoint).unwrap();
    assert_eq!(module_to_map(&back).tensors, module_to_map(&again).tensors);
    cli_refuses_custom(&o.checkpoint, &dir);
}

#[test]
fn example_new_projection_runs_and_exports_from_rust() {
    let dir = tmp("ex-proj");
    let o = experiments::new_projection(&Settings::new(&dir)).unwrap();
    assert_eq!(o.spec.embed(), 48);
    assert!(
        o.export_dir
            .as_ref()
            .unwrap()
            .join("open_clip_config.json")
            .is_file()
    );
    let cfg = std::fs::read_to_string(o.export_dir.unwrap().join("open_clip_config.json")).unwrap();
    assert!(cfg.contains("\"embed_dim\": 48"), "{cfg}");
    cli_refuses_custom(&o.checkpoint, &dir);
}
