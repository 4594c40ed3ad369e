//! `gadms pretrain` pieces: LR schedule, retrieval metrics, the synthetic dataset and its
//! embedded fixture, packing and evaluation sets, the trimmed text forward, a few training
//! steps and tiny end-to-end runs on packed data.

use crate::packed::tiny_packed;
use dfdx::prelude::*;
use gadms::cmd::pretrain::{Objective, PretrainArgs, run};
use gadms::eval::{EvalSet, rank_metrics};
use gadms::train::data::{fixture_files, open_packed, prepare_default};
use gadms::train::schedule::{default_warmup, lr_factor, lr_factor_at};
use gadms::train::sdm::Trainer;
use gadms::{Dev, Preset};
use gadms_data::loader::{Loader, LoaderConfig};
use gadms_data::manifest::Dataset;
use gadms_data::pack::{Format, NoProgress, PackOptions, pack};
use gadms_data::synth::pedes::{
    self as synth, FIXTURE, GARMENT_COLOURS, IMG_H, IMG_LEN, IMG_W, LOWER_TYPES, SynthConfig,
};
use gadms_nn::text_features_trimmed;
use gadms_nn::{TextInput, eos_token};
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

#[test]
fn schedule_warmup_then_cosine() {
    let want = [0.1, 0.28, 0.46, 0.64, 0.82];
    for (e, w) in want.iter().enumerate() {
        let f = lr_factor(e, 30, 5);
        assert!((f - w).abs() < 1e-12, "epoch {e}: {f} vs {w}");
    }
    assert_eq!(lr_factor(5, 30, 5), 1.0);
    // Cosine half-way between warm-up end and the end: 0.5.
    assert!(
        (lr_factor(5 + 25 / 2, 30, 5) - 0.5 * (1.0 + (std::f64::consts::PI * 12.0 / 25.0).cos()))
            .abs()
            < 1e-12
    );
    let last = lr_factor(29, 30, 5);
    assert!(last > 0.0 && last < 0.01, "last epoch factor {last}");
    // Monotone after warm-up.
    for e in 5..29 {
        assert!(lr_factor(e + 1, 30, 5) < lr_factor(e, 30, 5));
    }
    assert_eq!(default_warmup(30), 5);
    assert_eq!(default_warmup(20), 5);
    assert_eq!(default_warmup(10), 2);
    assert_eq!(default_warmup(3), 0);
    assert_eq!(lr_factor(0, 3, 0), 1.0);
}

/// `--schedule-per-step`: the warm-up + cosine curve evaluated at the fractional epoch; equal
/// to the per-epoch schedule at every epoch start, linear in between during warm-up, monotone
/// decreasing after, towards 0 at the end. Without it, every step of an epoch gets that epoch's
/// factor.
#[test]
fn schedule_per_step_follows_the_same_curve() {
    let (spe, epochs, w) = (10, 30, 5);
    for e in 0..epochs {
        let per_epoch = lr_factor(e, epochs, w);
        assert!((lr_factor_at(e * spe, spe, epochs, w, true) - per_epoch).abs() < 1e-12);
        for k in 0..spe {
            assert_eq!(lr_factor_at(e * spe + k, spe, epochs, w, false), per_epoch);
        }
    }
    // Warm-up: linear from 0.1 to 1 over 5 epochs (step 25 = epoch 2.5 -> 0.1 + 0.9 * 0.5).
    assert!((lr_factor_at(25, spe, epochs, w, true) - 0.55).abs() < 1e-12);
    assert!((lr_factor_at(0, spe, epochs, w, true) - 0.1).abs() < 1e-12);
    // Strictly increasing during warm-up, strictly decreasing after, ending near 0.
    for t in 0..(epochs * spe - 1) {
        let (a, b) = (
            lr_factor_at(t, spe, epochs, w, true),
            lr_factor_at(t + 1, spe, epochs, w, true),
        );
        if t + 1 < w * spe {
            assert!(b > a, "step {t}: {a} -> {b}");
        } else if t >= w * spe {
            assert!(b < a, "step {t}: {a} -> {b}");
        }
    }
    let last = lr_factor_at(epochs * spe - 1, spe, epochs, w, true);
    assert!(last > 0.0 && last < 1e-4, "{last}");
    // Half-way through the cosine: 0.5.
    let mid = w * spe + (epochs - w) * spe / 2;
    assert!((lr_factor_at(mid, spe, epochs, w, true) - 0.5).abs() < 1e-12);
    // No warm-up.
    assert_eq!(lr_factor_at(0, spe, epochs, 0, true), 1.0);
}

/// Hand-computed metrics with ties (ties rank by ascending gallery index).
///
/// Gallery ids: g0:0 g1:1 g2:0 g3:2 g4:1.
/// * q0 (id 0), sims [.5 .5 .1 .9 .5]: order g3 g0 g1 g4 g2; hits at ranks 1, 4:
///   R1 0, AP (1/2 + 2/5)/2 = 0.45, INP 2/5 = 0.4.
/// * q1 (id 1), all 0.2: order g0 g1 g2 g3 g4; hits at 1, 4: R1 0, AP 0.45, INP 0.4.
///   (Descending-index tie-breaking would put g4 first and give R1 = 1.)
/// * q2 (id 2), sims [.3 .1 .3 .3 .3]: order g0 g2 g3 g4 g1; hit at 2: R1 0, AP 1/3, INP 1/3.
/// * q3 (id 0), sims [.7 0 .7 -1 0]: order g0 g2 g1 g4 g3; hits at 0, 1: R1 1, AP 1, INP 1.
///
/// R1 = 25, R5 = R10 = 100, mAP = (0.45+0.45+1/3+1)/4·100 = 55.8333…,
/// mINP = (0.4+0.4+1/3+1)/4·100 = 53.3333…, chance R1 = (2+2+1+2)/5/4·100 = 35.
#[test]
fn metrics_on_hand_made_similarity_with_ties() {
    let sim: Vec<f32> = vec![
        0.5, 0.5, 0.1, 0.9, 0.5, //
        0.2, 0.2, 0.2, 0.2, 0.2, //
        0.3, 0.1, 0.3, 0.3, 0.3, //
        0.7, 0.0, 0.7, -1.0, 0.0,
    ];
    let m = rank_metrics(&sim, &[0, 1, 2, 0], &[0, 1, 0, 2, 1]).unwrap();
    let close = |a: f64, b: f64| (a - b).abs() < 1e-9;
    assert!(close(m.r1, 25.0), "{m:?}");
    assert!(close(m.r5, 100.0), "{m:?}");
    assert!(close(m.r10, 100.0), "{m:?}");
    assert!(
        close(m.map, 100.0 * (0.45 + 0.45 + 1.0 / 3.0 + 1.0) / 4.0),
        "{m:?}"
    );
    assert!(
        close(m.minp, 100.0 * (0.4 + 0.4 + 1.0 / 3.0 + 1.0) / 4.0),
        "{m:?}"
    );
    assert!(close(m.chance_r1, 35.0), "{m:?}");
    assert_eq!((m.queries, m.gallery), (4, 5));

    // R5/R10 below 100: 12 gallery items, the only positive ranked 7th (index 6).
    let mut row = vec![0.0f32; 12];
    for (g, v) in row.iter_mut().enumerate() {
        *v = 1.0 - g as f32 * 0.05;
    }
    let mut gids = vec![9u64; 12];
    gids[6] = 1;
    let m = rank_metrics(&row, &[1], &gids).unwrap();
    assert_eq!((m.r1, m.r5, m.r10), (0.0, 0.0, 100.0));
    assert!(close(m.map, 100.0 / 7.0) && close(m.minp, 100.0 / 7.0));

    // Bad input is an error, not a panic.
    assert!(rank_metrics(&sim, &[0, 1, 2, 7], &[0, 1, 0, 2, 1]).is_err());
    assert!(rank_metrics(&sim[1..], &[0, 1, 2, 0], &[0, 1, 0, 2, 1]).is_err());
    assert!(rank_metrics(&[], &[], &[]).is_err());
}

/// A fresh temporary directory for one test.
fn temp_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("gadms-pretrain-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The committed fixture is exactly what the generator makes (JSON bytes, decoded pixels), so
/// a change to the generator without regenerating the fixture fails here.
#[test]
fn embedded_fixture_is_what_the_generator_writes() {
    let files: HashMap<&str, &[u8]> = fixture_files().iter().copied().collect();
    let records = synth::generate(&FIXTURE).unwrap();
    assert_eq!(
        files.len(),
        records.len() + 1,
        "reid_raw.json + one PNG per image"
    );
    let json = synth::reid_raw_json(&records);
    assert!(
        files["reid_raw.json"] == json.as_bytes(),
        "fixtures/synth-pedes/reid_raw.json differs from the generator's; regenerate with \
         `cargo run --release --example make_synth_pedes -- fixtures/synth-pedes`"
    );
    let total: usize = files.values().map(|b| b.len()).sum();
    assert!(total < 2_000_000, "fixture is {total} bytes");
    for r in &records {
        let png = files[format!("imgs/{}", r.file_path).as_str()];
        let img = image::load_from_memory(png).unwrap().to_rgb8();
        assert_eq!(img.dimensions(), (IMG_W as u32, IMG_H as u32));
        assert!(img.as_raw() == &r.rgb, "{} differs", r.file_path);
    }
    // CUHK-PEDES conventions: train ids 1..=N contiguous, test ids after them.
    let train_ids: HashSet<u64> = records
        .iter()
        .filter(|r| r.split == "train")
        .map(|r| r.id)
        .collect();
    assert_eq!(train_ids, (1..=FIXTURE.train_ids as u64).collect());
    let test_ids: HashSet<u64> = records
        .iter()
        .filter(|r| r.split == "test")
        .map(|r| r.id)
        .collect();
    assert_eq!(test_ids.len(), FIXTURE.test_ids);
    assert!(test_ids.iter().all(|id| *id > FIXTURE.train_ids as u64));
}

#[test]
fn generator_is_deterministic_and_split_by_identity() {
    let cfg = SynthConfig {
        train_ids: 8,
        test_ids: 3,
        ..FIXTURE
    };
    let a = synth::generate(&cfg).unwrap();
    assert_eq!(a, synth::generate(&cfg).unwrap());
    assert_eq!(a.len(), (8 + 3) * 2);
    let other_seed = synth::generate(&SynthConfig { seed: 4, ..cfg }).unwrap();
    assert_ne!(a[0].captions, other_seed[0].captions);
    // Disjoint identities; two images of one identity differ (jitter, background).
    let train: HashSet<_> = a
        .iter()
        .filter(|r| r.split == "train")
        .map(|r| r.person)
        .collect();
    assert_eq!(train.len(), 8);
    assert!(
        a.iter()
            .filter(|r| r.split == "test")
            .all(|r| !train.contains(&r.person))
    );
    assert_ne!(a[0].rgb, a[1].rgb);
    assert_eq!(a[0].person, a[1].person);
    // The test split and the first training identities do not depend on the train count.
    let fewer = synth::generate(&SynthConfig {
        train_ids: 5,
        ..cfg
    })
    .unwrap();
    assert_eq!(a[..10], fewer[..10]);
    let key = |r: &synth::Record| (r.person, r.rgb.clone(), r.captions.clone());
    let t_a: Vec<_> = a.iter().filter(|r| r.split == "test").map(key).collect();
    let t_f: Vec<_> = fewer
        .iter()
        .filter(|r| r.split == "test")
        .map(key)
        .collect();
    assert_eq!(t_a, t_f);
}

/// Every caption names the upper-garment colour and the lower-garment type it was drawn with.
#[test]
fn captions_describe_the_drawn_attributes() {
    for r in synth::generate(&SynthConfig {
        train_ids: 50,
        test_ids: 10,
        ..FIXTURE
    })
    .unwrap()
    {
        assert_eq!(r.captions.len(), 2);
        for c in &r.captions {
            let upper = GARMENT_COLOURS[r.person.upper_colour].words;
            let lower = LOWER_TYPES[r.person.lower];
            assert!(upper.iter().any(|w| c.contains(w)), "{c:?} vs {upper:?}");
            assert!(lower.iter().any(|w| c.contains(w)), "{c:?} vs {lower:?}");
        }
    }
}

/// The default data: the embedded fixture unpacked and packed; a second call reuses it all.
#[test]
fn default_data_unpacks_packs_and_reuses() {
    let dir = temp_dir("default");
    let d = prepare_default(&dir).unwrap();
    assert_eq!(d.unpacked, fixture_files().len());
    assert_eq!(d.reused_shards, 0);
    let train = open_packed(&d.train, "--data").unwrap();
    let n = FIXTURE.train_ids as u64;
    let m = &train.manifest;
    assert_eq!((m.identities, m.images, m.samples), (n, 2 * n, 4 * n));
    assert_eq!(m.config.encoding, "png");
    let test = open_packed(&d.test, "--eval-data").unwrap();
    let n = FIXTURE.test_ids as u64;
    let m = &test.manifest;
    assert_eq!((m.identities, m.images, m.samples), (n, 2 * n, 4 * n));
    // Train pids are id − 1, contiguous from 0.
    let pids: HashSet<u64> = (0..train.shards[0].len())
        .map(|i| train.shards[0].pid(i).unwrap())
        .collect();
    assert_eq!(pids, (0..FIXTURE.train_ids as u64).collect());
    let again = prepare_default(&dir).unwrap();
    assert_eq!((again.unpacked, again.reused_shards), (0, 2));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn eval_set_from_a_packed_split() {
    let dir = temp_dir("evalset");
    let (train, test) = tiny_packed(&dir);
    let ds = Dataset::open(&test, None).unwrap();
    let s = EvalSet::from_dataset(&ds, None).unwrap();
    assert_eq!((s.n_ids(), s.n_images(), s.n_captions()), (3, 6, 12));
    let pixels = s.pixels(0, s.n_images()).unwrap();
    assert_eq!(pixels.len(), 6 * IMG_LEN);
    assert!(pixels.iter().all(|v| v.is_finite() && v.abs() < 3.0));
    for pid in &s.caption_pid {
        assert_eq!(s.image_pid.iter().filter(|p| *p == pid).count(), 2);
    }
    let ds = Dataset::open(&train, None).unwrap();
    let probe = EvalSet::from_dataset(&ds, Some(2)).unwrap();
    assert_eq!(
        (probe.n_ids(), probe.n_images(), probe.n_captions()),
        (2, 4, 8)
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// One unaugmented batch of the tiny training split: (pixels, token rows, pids).
fn first_batch(train: &Path, batch: usize) -> (Vec<f32>, Vec<[u32; 77]>, Vec<usize>) {
    let ds = Arc::new(Dataset::open(train, None).unwrap());
    let mut loader = Loader::new(
        ds,
        LoaderConfig {
            batch_size: batch,
            train: false,
            shuffle: false,
            ..LoaderConfig::default()
        },
    )
    .unwrap();
    let b = loader.next_batch().unwrap();
    let pids = b.pids.iter().map(|&p| p as usize).collect();
    (b.images, b.ids_clean, pids)
}

#[test]
fn trimmed_text_forward_equals_full_forward() {
    let dir = temp_dir("trimmed");
    let (train, _) = tiny_packed(&dir);
    let (_, rows, _) = first_batch(&train, 6);
    let dev = Dev::seed_from_u64(5);
    let tr = Trainer::new(&dev, 1e-3);
    let trimmed = text_features_trimmed(&tr.model.text, &dev, &rows, NoneTape).as_vec();
    let input = TextInput::new(&dev, &rows);
    let full = eos_token(tr.model.text.forward(input.ids, NoneTape, None), input.eos).as_vec();
    let diff = trimmed
        .iter()
        .zip(&full)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    assert!(diff < 1e-5, "max |trimmed - full| = {diff}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_few_steps_reduce_the_loss() {
    let dir = temp_dir("steps");
    let (train, _) = tiny_packed(&dir);
    let (px, rows, pids) = first_batch(&train, 16);
    assert_eq!(px.len(), 16 * IMG_LEN);
    let dev = Dev::seed_from_u64(0);
    let mut tr = Trainer::new(&dev, 1e-3);
    let losses: Vec<f32> = (0..6)
        .map(|_| tr.step(px.clone(), &rows, &pids).unwrap())
        .collect();
    eprintln!("losses {losses:?}");
    assert!(losses.iter().all(|l| l.is_finite()));
    assert!(
        losses[5] < losses[0] - 0.1,
        "loss did not go down: {losses:?}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn bad_flags_are_clear_errors() {
    let err = |a: PretrainArgs| a.validate().unwrap_err().to_string();
    let e = err(PretrainArgs {
        preset: Preset::VitB16,
        ..PretrainArgs::default()
    });
    assert!(
        e.contains("needs --data") && e.contains("tiny") && e.contains("gadms pack"),
        "{e}"
    );
    let cases = [
        (
            PretrainArgs {
                batch_size: 1,
                ..PretrainArgs::default()
            },
            "--batch-size",
        ),
        (
            PretrainArgs {
                epochs: 0,
                ..PretrainArgs::default()
            },
            "--epochs",
        ),
        (
            // A reduced precision needs the tensor cores of a GPU.
            PretrainArgs {
                precision: Some(gadms::precision::Precision::Bf16),
                ..PretrainArgs::default()
            },
            "--precision bf16 needs a GPU",
        ),
        (
            PretrainArgs {
                lr: f64::NAN,
                ..PretrainArgs::default()
            },
            "--lr",
        ),
        (
            PretrainArgs {
                aug_flip: 1.5,
                ..PretrainArgs::default()
            },
            "--aug-flip",
        ),
        (
            PretrainArgs {
                aug_erase: -0.1,
                ..PretrainArgs::default()
            },
            "--aug-erase",
        ),
        (
            PretrainArgs {
                aug_pad: 40,
                ..PretrainArgs::default()
            },
            "--aug-pad",
        ),
        (
            PretrainArgs {
                beta: -1.0,
                ..PretrainArgs::default()
            },
            "--beta",
        ),
        (
            PretrainArgs {
                gass_layers: 0,
                ..PretrainArgs::default()
            },
            "--gass-layers",
        ),
        (
            PretrainArgs {
                alpha_n: 2.0,
                ..PretrainArgs::default()
            },
            "--alpha-n",
        ),
        (
            PretrainArgs {
                alpha_i: -0.5,
                ..PretrainArgs::default()
            },
            "--alpha-i",
        ),
        (
            PretrainArgs {
                mask_lambda: f64::INFINITY,
                ..PretrainArgs::default()
            },
            "--mask-lambda",
        ),
        (
            PretrainArgs {
                epochs: 4,
                warmup_epochs: Some(4),
                ..PretrainArgs::default()
            },
            "--warmup-epochs",
        ),
    ];
    for (args, flag) in cases {
        let e = err(args);
        assert!(e.contains(flag), "{flag}: {e}");
    }
    assert_eq!(
        PretrainArgs::default().validate().unwrap(),
        5,
        "min(5, 24 / 4)"
    );

    // A dataset packed at another size, and a directory that is no dataset.
    let dir = temp_dir("badsize");
    let cfg = SynthConfig {
        train_ids: 2,
        test_ids: 2,
        ..FIXTURE
    };
    synth::write_cuhk_pedes(&dir.join("raw"), &cfg).unwrap();
    let opts = PackOptions {
        image_h: 32,
        image_w: 16,
        workers: 1,
        ..PackOptions::new(Format::CuhkPedes, dir.join("raw"), dir.join("small"))
    };
    pack(&opts, &NoProgress).unwrap();
    let run_err = |data: PathBuf| {
        format!(
            "{:#}",
            run(PretrainArgs {
                data: Some(data),
                out: dir.join("run"),
                ..PretrainArgs::default()
            })
            .unwrap_err()
        )
    };
    let e = run_err(dir.join("small"));
    assert!(
        e.contains("32x16") && e.contains("64x32") && e.contains("--image-size"),
        "{e}"
    );
    let e = run_err(dir.join("nope"));
    assert!(e.contains("--data") && e.contains("nope"), "{e}");
    let _ = std::fs::remove_dir_all(&dir);
}

fn read_jsonl(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// The whole command on a tiny packed set: files and JSON keys.
#[test]
fn end_to_end_tiny_run_writes_its_files() {
    let dir = temp_dir("e2e");
    let (train, test) = tiny_packed(&dir);
    let out = dir.join("run");
    let args = PretrainArgs {
        epochs: 2,
        batch_size: 8,
        save_every: 1,
        eval_every: 1,
        data: Some(train.clone()),
        eval_data: vec![test],
        out: out.clone(),
        ..PretrainArgs::default()
    };
    run(args).unwrap();
    let cfg: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("config.json")).unwrap()).unwrap();
    assert_eq!(cfg["args"]["epochs"], 2);
    assert_eq!(cfg["args"]["preset"], "tiny");
    assert_eq!(cfg["augment"]["pad"], 1);
    assert_eq!(cfg["data"]["train"]["ids"], 4);
    assert_eq!(cfg["data"]["eval"]["images"], 6);
    let lines = read_jsonl(&out.join("metrics.jsonl"));
    let steps: Vec<_> = lines.iter().filter(|l| l.get("loss").is_some()).collect();
    let evals: Vec<_> = lines.iter().filter(|l| l.get("r1").is_some()).collect();
    assert_eq!(steps.len(), 2 * 2, "16 pairs / batch 8 = 2 steps per epoch");
    for s in &steps {
        for k in ["step", "epoch", "loss", "loss_sdm", "lr", "pairs_per_s"] {
            assert!(s.get(k).is_some(), "step line lacks {k}: {s}");
        }
    }
    // before, after epoch 1, after training (test) and the train subset.
    assert_eq!(evals.len(), 4, "{evals:?}");
    for e in &evals {
        for k in ["r1", "r5", "r10", "map", "minp", "split", "step", "epoch"] {
            assert!(e.get(k).is_some(), "eval line lacks {k}: {e}");
        }
    }
    let bytes = std::fs::read(out.join("last.safetensors")).unwrap();
    assert!(bytes.len() > 1_000_000);

    // --data without --eval-data: only the train-subset probe is evaluated.
    let out2 = dir.join("run2");
    run(PretrainArgs {
        epochs: 1,
        batch_size: 8,
        data: Some(train),
        out: out2.clone(),
        ..PretrainArgs::default()
    })
    .unwrap();
    let lines = read_jsonl(&out2.join("metrics.jsonl"));
    let evals: Vec<_> = lines.iter().filter(|l| l.get("r1").is_some()).collect();
    assert_eq!(evals.len(), 1, "{evals:?}");
    assert_eq!(evals[0]["split"], "train-subset");
    let _ = std::fs::remove_dir_all(&dir);
}

/// `--objective ga-dms` on the tiny packed set: the full GA-DMS step runs, metrics carry the
/// MTP terms, and the CLIP checkpoint, the full model and the score table are written.
#[test]
fn end_to_end_tiny_ga_dms_run_writes_its_files() {
    assert_eq!("ga-dms".parse::<Objective>().unwrap(), Objective::GaDms);
    assert_eq!("sdm".parse::<Objective>().unwrap(), Objective::Sdm);
    assert!("irra".parse::<Objective>().is_err());
    let dir = temp_dir("e2e-gadms");
    let (train, test) = tiny_packed(&dir);
    let out = dir.join("run");
    run(PretrainArgs {
        objective: Objective::GaDms,
        epochs: 2,
        batch_size: 8,
        gass_layers: 2,
        data: Some(train),
        eval_data: vec![test],
        out: out.clone(),
        ..PretrainArgs::default()
    })
    .unwrap();
    let cfg: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("config.json")).unwrap()).unwrap();
    assert_eq!(cfg["args"]["objective"], "ga-dms");
    assert_eq!(cfg["ga_dms"]["gass"]["layers"], 2);
    assert_eq!(cfg["ga_dms"]["score_rows"], 16);
    let lines = read_jsonl(&out.join("metrics.jsonl"));
    let steps: Vec<_> = lines.iter().filter(|l| l.get("loss").is_some()).collect();
    assert_eq!(steps.len(), 2 * 2, "16 pairs / batch 8 = 2 steps per epoch");
    for s in &steps {
        for k in [
            "step",
            "epoch",
            "loss",
            "loss_sdm",
            "loss_mtp",
            "masked_tokens",
            "lr",
            "pairs_per_s",
        ] {
            assert!(s.get(k).is_some(), "step line lacks {k}: {s}");
        }
        let (l, sdm, mtp) = (
            s["loss"].as_f64().unwrap(),
            s["loss_sdm"].as_f64().unwrap(),
            s["loss_mtp"].as_f64().unwrap(),
        );
        assert!(
            (l - (sdm + 0.4 * mtp)).abs() < 1e-3 * l.abs().max(1.0),
            "{s}"
        );
    }
    // before and after training (test) and the train subset.
    let evals = lines.iter().filter(|l| l.get("r1").is_some()).count();
    assert_eq!(evals, 3);
    let clip = std::fs::read(out.join("last.safetensors")).unwrap();
    let full = std::fs::read(out.join("gadms_model.safetensors")).unwrap();
    assert!(clip.len() > 1_000_000);
    assert!(
        full.len() > clip.len(),
        "the full model holds the decoder too"
    );
    // The CLIP file is the one `embed`/`export` read; the full one loads into GA-DMS Tiny.
    let mut m = <gadms_nn::GaDmsTiny<f32, Dev> as dfdx::nn::BuildModule<Dev, f32>>::build(
        &Dev::seed_from_u64(9),
    );
    gadms::train::run_dir::load_model_file(&mut m, &out.join("gadms_model.safetensors")).unwrap();
    // After 2 epochs every caption has been scored: its row is no longer all 0.85.
    let scores = gadms_data::scores::ScoreTable::open(&out.join("scores.f32"), Some(16)).unwrap();
    for r in 0..16 {
        assert!(
            scores
                .get(r)
                .iter()
                .any(|&x| x != gadms_data::scores::INIT_SCORE),
            "row {r} never scored"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}
