//! The GA-DMS pretraining step (`gadms::train::gadms`, docs/method.md §3.2, §4, §5, §11 item 5) on a
//! small packed dataset: tape merging (total gradient = sum of branch gradients), learning,
//! score-table writes, determinism and exact resume; plus the checkpoint key layout.
//!
//! `cargo test --release --test it gadms_step -- --ignored --nocapture` times a `GaDmsTiny`
//! step at batch 32.

use dfdx::prelude::*;
use gadms::train::gadms::{
    Branches, GaDmsForward, GaDmsTiny, GaDmsViTB16, LossParts, StepConfig, StepReport, loss_grads,
    train_step,
};
use gadms::train::optim::{Adam, AdamConfig};
use gadms::train::run_dir::{load_model_file, save_model_file};
use gadms_ckpt::TensorMap;
use gadms_ckpt::bridge::{grads_to_map, module_to_map};
use gadms_data::loader::{Batch, Loader, LoaderConfig, LoaderState, Masking};
use gadms_data::manifest::{Dataset, Manifest};
use gadms_data::masking::MaskingConfig;
use gadms_data::scores::{INIT_SCORE, SCORE_CTX, ScoreTable};
use gadms_data::shard::{SampleIn, ShardConfig, ShardWriter};
use gadms_data::{EOT, SOT};
use image::{ImageFormat, RgbImage};
use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::sync::Arc;

type Model = GaDmsTiny<f32, Cpu>;

/// Tiny's input size.
const H: u32 = 64;
const W: u32 = 32;

fn tmpdir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("gadms-step-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A 32×64 PNG whose colours and stripes depend on `i`.
fn encode(i: usize) -> Vec<u8> {
    let img = RgbImage::from_fn(W, H, |x, y| {
        let band = ((y as usize / (4 + i % 5)) + i) % 3;
        let v = ((x * 5 + y * 3) as usize + i * 29) % 256;
        let c = [v as u8, (255 - v) as u8, ((i * 53) % 256) as u8];
        image::Rgb([c[band], c[(band + 1) % 3], c[(band + 2) % 3]])
    });
    let mut buf = Vec::new();
    image::DynamicImage::ImageRgb8(img)
        .write_to(&mut Cursor::new(&mut buf), ImageFormat::Png)
        .unwrap();
    buf
}

/// One shard pair of `n` samples: sample g has pid g (one identity per caption, as in
/// pretraining) and a caption of 6–13 word pieces that depend on g.
fn build(dir: &Path, n: usize) -> Arc<Dataset> {
    let cfg = ShardConfig {
        dataset: "test".into(),
        split: "train".into(),
        image_h: H,
        image_w: W,
        encoding: "png".into(),
        tokenizer_hash: "t".into(),
    };
    let mut infos = Vec::new();
    let half = n / 2;
    for (s, range) in [(0, 0..half), (1, half..n)] {
        let mut w = ShardWriter::create(&dir.join(format!("s{s}.gshard")), &cfg).unwrap();
        for g in range {
            let len = 6 + g % 8;
            let mut ids = [0u32; 77];
            ids[0] = SOT;
            for k in 0..len {
                ids[1 + k] = 320 + ((g * 7 + k * 13) % 400) as u32;
            }
            ids[1 + len] = EOT;
            w.push(&SampleIn {
                image: &encode(g),
                ids: &ids,
                caption: "a person",
                path: &format!("img/{g}.png"),
                pid: g as u64,
                image_id: g as u64,
                caption_idx: 0,
            })
            .unwrap();
        }
        infos.push(w.finish().unwrap());
    }
    Manifest::new(cfg, infos, n as u64, n as u64, 0)
        .write(dir)
        .unwrap();
    Arc::new(Dataset::open(dir, Some("t")).unwrap())
}

fn loader(ds: &Arc<Dataset>, scores: &Arc<ScoreTable>, batch: usize, seed: u64) -> Loader {
    loader_with(ds, scores, batch, seed, true)
}

/// `train`: with the §6.3 augmentation (else the test transform).
fn loader_with(
    ds: &Arc<Dataset>,
    scores: &Arc<ScoreTable>,
    batch: usize,
    seed: u64,
    train: bool,
) -> Loader {
    let cfg = LoaderConfig {
        train,
        batch_size: batch,
        seed,
        workers: 2,
        prefetch: 2,
        shuffle_buffer: 8,
        drop_last: true,
        masking: Masking::Dual {
            scores: scores.clone(),
            config: MaskingConfig::default(),
        },
        ..LoaderConfig::default()
    };
    Loader::new(ds.clone(), cfg).unwrap()
}

fn model(seed: u64) -> Model {
    Model::build(&Cpu::seed_from_u64(seed))
}

fn steps(
    m: &mut Model,
    opt: &mut Adam,
    l: &mut Loader,
    scores: &ScoreTable,
    n: usize,
    lr: f32,
) -> Vec<StepReport> {
    let cfg = StepConfig::default();
    (0..n)
        .map(|_| {
            let b = l.next_batch().unwrap();
            let r = train_step(m, opt, &b, scores, &cfg, lr);
            assert!(r.applied && r.loss.is_finite(), "{r:?}");
            r
        })
        .collect()
}

fn bits(map: &TensorMap) -> Vec<(String, Vec<u32>)> {
    map.tensors
        .iter()
        .map(|(k, a)| (k.clone(), a.data.iter().map(|x| x.to_bits()).collect()))
        .collect()
}

fn assert_same_params(a: &Model, b: &Model, what: &str) {
    let (a, b) = (bits(&module_to_map(a)), bits(&module_to_map(b)));
    assert_eq!(a.len(), b.len());
    for ((ka, va), (kb, vb)) in a.iter().zip(&b) {
        assert_eq!(ka, kb);
        assert!(va == vb, "{what}: {ka} differs");
    }
}

fn first_batch(tag: &str, n: usize, batch: usize) -> (Arc<Dataset>, Arc<ScoreTable>, Batch) {
    let ds = build(&tmpdir(tag), n);
    let scores = Arc::new(ScoreTable::in_memory(ds.len()));
    let b = loader(&ds, &scores, batch, 7).next_batch().unwrap();
    (ds, scores, b)
}

/// The step is implemented for the paper-size model too (a bound check: nothing is built).
#[test]
fn vit_b16_has_the_step() {
    fn has_step<M: GaDmsForward<f32, Cpu>>() {}
    has_step::<GaDmsViTB16<f32, Cpu>>();
    has_step::<Model>();
}

#[test]
fn keys_are_clip_plus_decoder_without_collisions() {
    let m = model(1);
    let all = module_to_map(&m);
    let clip = module_to_map(&m.clip);
    let mtp = module_to_map(&m.mtp);
    assert_eq!(all.tensors.len(), clip.tensors.len() + mtp.tensors.len());
    for k in clip.tensors.keys().chain(mtp.tensors.keys()) {
        assert!(all.tensors.contains_key(k), "{k} missing");
    }
    for k in [
        "token_embedding.weight",
        "ln_final.weight",
        "visual.ln_post.weight",
        "visual.proj",
        "cross_attn.q_proj.weight",
        "cross_modal_transformer.resblocks.0.mlp.c_proj.bias",
        "ln_pre_t.weight",
        "ln_pre_i.bias",
        "ln_post.weight",
        "mlm_head.fc.weight",
    ] {
        assert!(all.tensors.contains_key(k), "{k} missing");
    }
}

#[test]
fn total_gradient_is_the_sum_of_the_branch_gradients() {
    let (_ds, _scores, batch) = first_batch("grad", 8, 8);
    let m = model(2);
    let cfg = StepConfig::default();
    let (g_all, p_all) = loss_grads(&m, &batch, &cfg, Branches::All);
    let (g_sdm, p_sdm) = loss_grads(&m, &batch, &cfg, Branches::Sdm);
    let (g_mtp, p_mtp) = loss_grads(&m, &batch, &cfg, Branches::Mtp);
    let LossParts { loss, sdm, mtp, .. } = p_all;
    assert_eq!(sdm, p_sdm.sdm);
    assert_eq!(mtp, p_mtp.mtp);
    assert!((loss - (sdm + 0.4 * mtp)).abs() <= 1e-5 * loss.abs());
    assert!(p_all.masked_tokens > 0);
    eprintln!(
        "L = {loss} (sdm {sdm}, mtp {mtp}, {} masked)",
        p_all.masked_tokens
    );

    let (all, s, t) = (
        grads_to_map(&m, &g_all),
        grads_to_map(&m, &g_sdm),
        grads_to_map(&m, &g_mtp),
    );
    let norm = |v: &[f32]| v.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    let inf = |v: &[f32]| v.iter().fold(0f64, |m, x| m.max(x.abs() as f64));
    let mut worst = (0.0f64, String::new());
    for (k, a) in &all.tensors {
        let (gs, gm) = (&s.tensors[k].data, &t.tensors[k].data);
        // Relative to the largest gradient entry of the tensor in any of the three; the 1e-7
        // floor is for tensors whose exact gradient is 0 (attention key biases: softmax is
        // invariant to them), where only rounding noise is left.
        let scale = inf(&a.data).max(inf(gs)).max(inf(gm)).max(1e-2);
        for i in 0..a.data.len() {
            let d = (a.data[i] as f64 - (gs[i] as f64 + gm[i] as f64)).abs() / scale;
            if d > worst.0 {
                worst = (d, k.clone());
            }
        }
        // Which branch reaches which part.
        let (ns, nm) = (norm(gs), norm(gm));
        if k.starts_with("visual.") || k == "text_projection" || k.starts_with("transformer.") {
            assert!(
                ns > 0.0 && nm > 0.0,
                "{k}: both branches must reach it ({ns}, {nm})"
            );
        } else if k.starts_with("cross_") || k.starts_with("mlm_head") || k.starts_with("ln_p") {
            assert_eq!(ns, 0.0, "{k}: SDM must not reach the decoder");
            assert!(nm > 0.0, "{k}: MTP must reach the decoder");
        }
    }
    eprintln!(
        "max |g_all − (g_sdm + g_mtp)| / max|g| = {:.2e} ({})",
        worst.0, worst.1
    );
    assert!(worst.0 <= 1e-5, "{worst:?}");
}

#[test]
fn a_few_steps_lower_the_loss() {
    // 8 captions, one batch per epoch; no augmentation, so only the masks change between steps.
    let ds = build(&tmpdir("learn"), 8);
    let scores = Arc::new(ScoreTable::in_memory(ds.len()));
    let mut l = loader_with(&ds, &scores, 8, 3, false);
    let mut m = model(3);
    let mut opt = Adam::new(AdamConfig::default());
    let r = steps(&mut m, &mut opt, &mut l, &scores, 8, 3e-4);
    for (i, x) in r.iter().enumerate() {
        eprintln!(
            "step {i}: loss {:.4} (sdm {:.4}, mtp {:.4}), |g| {:.3}, {} masked",
            x.loss, x.loss_sdm, x.loss_mtp, x.grad_norm, x.masked_tokens
        );
    }
    let mean = |r: &[StepReport], f: fn(&StepReport) -> f32| r.iter().map(f).sum::<f32>() / 2.0;
    let (head, tail) = (&r[..2], &r[r.len() - 2..]);
    assert!(
        mean(tail, |x| x.loss) < 0.7 * mean(head, |x| x.loss),
        "the loss did not drop: {r:?}"
    );
    assert!(mean(tail, |x| x.loss_sdm) < mean(head, |x| x.loss_sdm));
    assert!(mean(tail, |x| x.loss_mtp) < mean(head, |x| x.loss_mtp));
    assert_eq!(opt.step, 8);
}

#[test]
fn a_step_writes_its_batch_rows_of_the_score_table_only() {
    let (ds, scores, batch) = first_batch("scores", 12, 4);
    let mut m = model(4);
    let mut opt = Adam::new(AdamConfig::default());
    let r = train_step(
        &mut m,
        &mut opt,
        &batch,
        &scores,
        &StepConfig::default(),
        1e-4,
    );
    assert!(r.applied);
    let mut batch_max = 0f32;
    for row in 0..ds.len() {
        let s = scores.get(row);
        match batch.sample_index.iter().position(|&g| g as usize == row) {
            None => assert_eq!(s, [INIT_SCORE; SCORE_CTX], "row {row} is not in the batch"),
            Some(b) => {
                assert_ne!(s, [INIT_SCORE; SCORE_CTX], "row {row} was not written");
                assert!(
                    s.iter().all(|x| (0.0..=1.0).contains(x)),
                    "row {row}: {s:?}"
                );
                let eos = batch.ids_clean[b].iter().position(|&t| t == EOT).unwrap();
                for (n, x) in s.iter().enumerate() {
                    if n == 0 || n >= eos {
                        assert_eq!(*x, 0.0, "row {row}: position {n} outside 1..eos");
                    }
                }
                batch_max = s.iter().fold(batch_max, |m, x| m.max(*x));
            }
        }
    }
    assert_eq!(batch_max, 1.0, "GASS normalises by the batch maximum");
}

#[test]
fn same_seed_gives_bit_identical_parameters() {
    let ds = build(&tmpdir("det"), 12);
    let run = || {
        let scores = Arc::new(ScoreTable::in_memory(ds.len()));
        let mut l = loader(&ds, &scores, 4, 11);
        let mut m = model(5);
        let mut opt = Adam::new(AdamConfig::default());
        let r = steps(&mut m, &mut opt, &mut l, &scores, 3, 1e-4);
        (m, r)
    };
    let (a, ra) = run();
    let (b, rb) = run();
    assert_eq!(ra, rb);
    assert_same_params(&a, &b, "same seed");
}

#[test]
fn resume_from_a_checkpoint_is_exact() {
    let ds = build(&tmpdir("resume"), 12);
    let ckpt = tmpdir("resume-ckpt");
    let (lr, seed) = (1e-4, 13);

    // 4 steps straight (3 batches per epoch: step 4 masks with epoch-0 scores).
    let scores = Arc::new(ScoreTable::in_memory(ds.len()));
    let mut l = loader(&ds, &scores, 4, seed);
    let mut straight = model(6);
    let mut opt = Adam::new(AdamConfig::default());
    let ra = steps(&mut straight, &mut opt, &mut l, &scores, 4, lr);
    let straight_scores: Vec<_> = (0..ds.len()).map(|r| scores.get(r)).collect();

    // 2 steps, checkpoint, drop everything.
    let state: LoaderState = {
        let scores = Arc::new(ScoreTable::in_memory(ds.len()));
        let mut l = loader(&ds, &scores, 4, seed);
        let mut m = model(6);
        let mut opt = Adam::new(AdamConfig::default());
        let r = steps(&mut m, &mut opt, &mut l, &scores, 2, lr);
        assert_eq!(r, ra[..2]);
        save_model_file(&m, vec![], &ckpt.join("model.safetensors")).unwrap();
        opt.save(&ckpt.join("adam.safetensors")).unwrap();
        scores.save_copy(&ckpt.join("scores.f32")).unwrap();
        let state = l.state();
        std::fs::write(
            ckpt.join("loader.json"),
            serde_json::to_string(&state).unwrap(),
        )
        .unwrap();
        state
    };

    // Restore into fresh objects (another init seed, to show the load overwrites it).
    let mut m = model(99);
    load_model_file(&mut m, &ckpt.join("model.safetensors")).unwrap();
    let mut opt = Adam::load(&ckpt.join("adam.safetensors")).unwrap();
    let scores = Arc::new(ScoreTable::in_memory(ds.len()));
    let saved = ScoreTable::open(&ckpt.join("scores.f32"), Some(ds.len())).unwrap();
    scores.copy_from(&saved).unwrap();
    let mut l = loader(&ds, &scores, 4, seed);
    let read: LoaderState =
        serde_json::from_str(&std::fs::read_to_string(ckpt.join("loader.json")).unwrap()).unwrap();
    assert_eq!(read, state);
    l.resume(read).unwrap();
    let rb = steps(&mut m, &mut opt, &mut l, &scores, 2, lr);

    assert_eq!(rb, ra[2..]);
    assert_eq!(opt.step, 4);
    assert_same_params(&straight, &m, "resumed");
    let resumed_scores: Vec<_> = (0..ds.len()).map(|r| scores.get(r)).collect();
    assert_eq!(straight_scores, resumed_scores);
}

#[test]
fn load_refuses_a_file_without_the_magic() {
    let dir = tmpdir("magic");
    let m = model(7);
    let path = dir.join("clip.safetensors");
    gadms_ckpt::tensors::write_file(&path, &module_to_map(&m.clip), &Default::default()).unwrap();
    let mut m2 = model(8);
    let err = load_model_file(&mut m2, &path).unwrap_err().to_string();
    assert!(err.contains("not a gadms training checkpoint"), "{err}");
}

/// Time per `GaDmsTiny` step at batch 32 (release: `--release -- --ignored --nocapture`).
#[test]
#[ignore]
fn time_tiny_batch_32() {
    use gadms_nn::{TextInput, cls_token, gass_scores};
    use std::time::Instant;
    let ds = build(&tmpdir("time"), 192);
    let scores = Arc::new(ScoreTable::in_memory(ds.len()));
    let mut l = loader(&ds, &scores, 32, 1);
    let batches: Vec<Batch> = (0..6).map(|_| l.next_batch().unwrap()).collect();
    let mut m = model(9);
    let mut opt = Adam::new(AdamConfig::default());
    let cfg = StepConfig::default();
    train_step(&mut m, &mut opt, &batches[0], &scores, &cfg, 1e-4); // warm-up
    let t = Instant::now();
    for b in &batches[1..] {
        train_step(&mut m, &mut opt, b, &scores, &cfg, 1e-4);
    }
    let step = t.elapsed().as_secs_f64() / 5.0;
    // GASS alone (vision forward without tape + the GASS pass), for its share of a step.
    let dev = Cpu::default();
    let t = Instant::now();
    for b in &batches[1..] {
        let imgs = dev.tensor_from_vec(b.images.clone(), (32, Const::<3>, Const, Const));
        let cls = cls_token(m.clip.visual.forward(imgs, None));
        let clean = TextInput::<77, Cpu>::new(&dev, &b.ids_clean);
        gass_scores(&m.clip.text, cls, &clean, &cfg.gass).unwrap();
    }
    let gass = t.elapsed().as_secs_f64() / 5.0;
    // Forward + backward of the loss alone (no GASS, no update).
    let t = Instant::now();
    for b in &batches[1..] {
        let _ = loss_grads(&m, b, &cfg, Branches::All);
    }
    let fb = t.elapsed().as_secs_f64() / 5.0;
    let mut branch = [0.0; 2];
    for (i, br) in [Branches::Sdm, Branches::Mtp].into_iter().enumerate() {
        let t = Instant::now();
        for b in &batches[1..] {
            let _ = loss_grads(&m, b, &cfg, br);
        }
        branch[i] = t.elapsed().as_secs_f64() / 5.0;
    }
    eprintln!(
        "fwd+bwd of SDM alone {:.1} ms, of MTP alone {:.1} ms",
        branch[0] * 1e3,
        branch[1] * 1e3
    );
    let t = Instant::now();
    for _ in 0..5 {
        let _ = m.alloc_grads();
    }
    let alloc = t.elapsed().as_secs_f64() / 5.0;
    eprintln!(
        "GaDmsTiny batch 32: {:.1} ms/step ({:.0} pairs/s); vision fwd + GASS {:.1} ms ({:.0}% of a step); \
         loss fwd+bwd {:.1} ms (alloc_grads {:.1} ms); rest (GASS, score writes, Adam) {:.1} ms; {} threads",
        step * 1e3,
        32.0 / step,
        gass * 1e3,
        100.0 * gass / step,
        fb * 1e3,
        alloc * 1e3,
        (step - fb) * 1e3,
        rayon::current_num_threads()
    );
}
