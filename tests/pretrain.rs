//! `gadms pretrain` pieces: LR schedule, retrieval metrics, synthetic data, the trimmed text
//! forward, a few training steps and a tiny end-to-end run.

use dfdx::prelude::*;
use gadms::pretrain::eval::retrieval_metrics;
use gadms::pretrain::schedule::{default_warmup, lr_factor};
use gadms::pretrain::synth::{IMG_LEN, SynthConfig, SynthData};
use gadms::pretrain::{PretrainArgs, Trainer, run, text_features_trimmed};
use gadms::{Dev, Preset};
use gadms_data::ClipTokenizer;
use gadms_nn::{TextInput, eos_token};

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
    let m = retrieval_metrics(&sim, &[0, 1, 2, 0], &[0, 1, 0, 2, 1]).unwrap();
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
    let mut gids = vec![9usize; 12];
    gids[6] = 1;
    let m = retrieval_metrics(&row, &[1], &gids).unwrap();
    assert_eq!((m.r1, m.r5, m.r10), (0.0, 0.0, 100.0));
    assert!(close(m.map, 100.0 / 7.0) && close(m.minp, 100.0 / 7.0));

    // Bad input is an error, not a panic.
    assert!(retrieval_metrics(&sim, &[0, 1, 2, 7], &[0, 1, 0, 2, 1]).is_err());
    assert!(retrieval_metrics(&sim[1..], &[0, 1, 2, 0], &[0, 1, 0, 2, 1]).is_err());
    assert!(retrieval_metrics(&[], &[], &[]).is_err());
}

fn small_data(seed: u64) -> SynthData {
    let tok = ClipTokenizer::new().unwrap();
    let cfg = SynthConfig {
        seed,
        train_ids: 8,
        test_ids: 3,
        ..SynthConfig::default()
    };
    SynthData::generate(&cfg, &tok).unwrap()
}

#[test]
fn synthetic_data_is_deterministic_and_split_by_identity() {
    let a = small_data(3);
    let b = small_data(3);
    assert_eq!(a.train.pixels, b.train.pixels);
    assert_eq!(a.test.captions, b.test.captions);
    assert_ne!(small_data(4).train.captions, a.train.captions);
    for p in &a.test.persons {
        assert!(!a.train.persons.contains(p), "test identity also in train");
    }
    let t = &a.train;
    assert_eq!(t.n_images(), 8 * 2);
    assert_eq!(t.n_captions(), 8 * 2 * 2);
    assert_eq!(t.pixels.len(), t.n_images() * IMG_LEN);
    assert!(t.pixels.iter().all(|v| v.is_finite() && v.abs() < 3.0));
    for k in 0..t.n_captions() {
        assert_eq!(t.caption_pid[k], t.image_pid[t.caption_image[k]]);
        assert!(t.tokens[k].contains(&gadms_data::EOT), "{}", t.captions[k]);
    }
    // Two images of one identity differ (jitter, background, noise).
    assert_ne!(t.image(0), t.image(1));
}

#[test]
fn trimmed_text_forward_equals_full_forward() {
    let data = small_data(1);
    let dev = Dev::seed_from_u64(5);
    let tr = Trainer::new(&dev, 1e-3);
    let rows = &data.train.tokens[..6];
    let trimmed = text_features_trimmed(&tr.model.text, &dev, rows, NoneTape).as_vec();
    let input = TextInput::new(&dev, rows);
    let full = eos_token(tr.model.text.forward(input.ids, NoneTape, None), input.eos).as_vec();
    let diff = trimmed
        .iter()
        .zip(&full)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    assert!(diff < 1e-5, "max |trimmed - full| = {diff}");
}

#[test]
fn a_few_steps_reduce_the_loss() {
    let data = small_data(2);
    let t = &data.train;
    let n = 16;
    let mut px = Vec::new();
    for k in 0..n {
        px.extend_from_slice(t.image(t.caption_image[k]));
    }
    let dev = Dev::seed_from_u64(0);
    let mut tr = Trainer::new(&dev, 1e-3);
    let losses: Vec<f32> = (0..6)
        .map(|_| {
            tr.step(px.clone(), &t.tokens[..n], &t.caption_pid[..n])
                .unwrap()
        })
        .collect();
    eprintln!("losses {losses:?}");
    assert!(losses.iter().all(|l| l.is_finite()));
    assert!(
        losses[5] < losses[0] - 0.1,
        "loss did not go down: {losses:?}"
    );
}

#[test]
fn bad_flags_are_clear_errors() {
    let err = |a: PretrainArgs| a.validate().unwrap_err().to_string();
    let e = err(PretrainArgs {
        preset: Preset::VitB16,
        ..PretrainArgs::default()
    });
    assert!(e.contains("tiny") && e.contains("gadms pack"), "{e}");
    assert!(
        err(PretrainArgs {
            batch_size: 1,
            ..PretrainArgs::default()
        })
        .contains("--batch-size")
    );
    assert!(
        err(PretrainArgs {
            epochs: 0,
            ..PretrainArgs::default()
        })
        .contains("--epochs")
    );
    assert!(
        err(PretrainArgs {
            lr: f64::NAN,
            ..PretrainArgs::default()
        })
        .contains("--lr")
    );
    assert!(
        err(PretrainArgs {
            test_ids: 1,
            ..PretrainArgs::default()
        })
        .contains("--test-ids")
    );
    assert!(
        err(PretrainArgs {
            train_ids: 1_000_000,
            ..PretrainArgs::default()
        })
        .contains("--train-ids")
    );
    assert!(
        err(PretrainArgs {
            epochs: 4,
            warmup_epochs: Some(4),
            ..PretrainArgs::default()
        })
        .contains("--warmup-epochs")
    );
    assert_eq!(
        PretrainArgs::default().validate().unwrap(),
        2,
        "min(5, 8 / 4)"
    );
}

/// The whole command on a toy configuration: files and JSON keys.
#[test]
fn end_to_end_tiny_run_writes_its_files() {
    let dir = std::env::temp_dir().join(format!("gadms-pretrain-test-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let args = PretrainArgs {
        epochs: 2,
        batch_size: 8,
        train_ids: 4,
        test_ids: 2,
        save_every: 1,
        eval_every: 1,
        out: dir.clone(),
        ..PretrainArgs::default()
    };
    run(args).unwrap();
    let cfg: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("config.json")).unwrap()).unwrap();
    assert_eq!(cfg["args"]["epochs"], 2);
    assert_eq!(cfg["args"]["preset"], "tiny");
    let text = std::fs::read_to_string(dir.join("metrics.jsonl")).unwrap();
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
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
    let bytes = std::fs::read(dir.join("last.safetensors")).unwrap();
    assert!(bytes.len() > 1_000_000);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Writes a grid of synthetic training images with their captions, for a human look:
/// `cargo test --test pretrain -- --ignored --nocapture write_sample_grid`.
#[test]
#[ignore]
fn write_sample_grid() {
    use gadms::pretrain::synth::{IMG_H, IMG_W, to_rgb8};
    let data = small_data(0);
    let t = &data.train;
    let (cols, rows) = (8, 2);
    let mut grid = image::RgbImage::new((cols * IMG_W) as u32, (rows * IMG_H) as u32);
    for i in 0..(cols * rows).min(t.n_images()) {
        let rgb = to_rgb8(t.image(i));
        let (ox, oy) = ((i % cols) * IMG_W, (i / cols) * IMG_H);
        for y in 0..IMG_H {
            for x in 0..IMG_W {
                let p = &rgb[(y * IMG_W + x) * 3..][..3];
                grid.put_pixel(
                    (ox + x) as u32,
                    (oy + y) as u32,
                    image::Rgb([p[0], p[1], p[2]]),
                );
            }
        }
    }
    let path = std::env::temp_dir().join("gadms-synth-samples.png");
    grid.save(&path).unwrap();
    for k in 0..t.n_captions().min(2 * cols * rows) {
        println!(
            "image {:>2} (id {}): {}",
            t.caption_image[k], t.caption_pid[k], t.captions[k]
        );
    }
    println!("wrote {}", path.display());
}
