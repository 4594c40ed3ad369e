//! GASS (`gadms_nn::gass`) against a faithful PyTorch port of the official GA-DMS code
//! (fixtures/gass/ref_gass.safetensors, made by fixtures/gass/make.py), plus property
//! tests (support, range, batch maximum, per-sample independence, layer clamping, errors).
//!
//! Timing (release, not run by default):
//! `cargo test --release -p gadms-ckpt --test reference gass:: -- --ignored --nocapture`.

use crate::common::*;
use dfdx::prelude::*;
use gadms_ckpt::bridge::map_to_module;
use gadms_ckpt::layout::to_native;
use gadms_ckpt::tensors::read_ints;
use gadms_nn::fast::with_fused;
use gadms_nn::{
    GassConfig, GassError, GassNorm, GassOutput, TextInput, TextTower, TinyText, gass_scores,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const FILE: &str = "gass/ref_gass.safetensors";
/// The fixture's text tower: vocab 512, width 64, 2 heads, MLP 256, **4** layers, embed 32.
type Txt = TextTower<512, 77, 64, 2, 32, 256, 4, 32, f32, Cpu>;

fn load(dev: &Cpu) -> Txt {
    let mut params = section(FILE, "param.");
    params.origin = fixture(FILE);
    let (_, native) = to_native(params).expect("layout");
    let mut m = Txt::build(dev);
    map_to_module(&native, &mut m).expect("load text tower");
    m
}

fn ints(key: &str) -> Vec<usize> {
    let (_, v) = read_ints(&fixture(FILE), key).expect(key);
    v.into_iter().map(|x| x as usize).collect()
}

fn cfg_of(case: &str, norm: GassNorm) -> GassConfig {
    GassConfig {
        layers: ints(&format!("{case}.layers"))[0],
        scales: ints(&format!("{case}.scales")),
        norm,
        keep_layers: true,
    }
}

fn image_cls(dev: &Cpu, case: &str) -> Tensor<(usize, Const<32>), f32, Cpu> {
    let img = tensor(FILE, &format!("{case}.image_cls"));
    let b = img.shape[0];
    dev.tensor_from_vec(img.data, (b, Const))
}

fn run(model: &Txt, dev: &Cpu, case: &str, cfg: &GassConfig) -> GassOutput {
    let text = TextInput::new(dev, &id_rows(FILE, &format!("{case}.text")));
    gass_scores(model, image_cls(dev, case), &text, cfg).expect("gass")
}

fn max_abs(a: &[f32], b: &[f32]) -> f64 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs() as f64)
        .fold(0.0, f64::max)
}

fn norm_name(n: GassNorm) -> &'static str {
    match n {
        GassNorm::Official => "official",
        GassNorm::Paper => "paper",
    }
}

/// Compares one case and one normalisation with the reference; returns the scores' max |Δ|.
fn check_case(model: &Txt, dev: &Cpu, case: &str, norm: GassNorm) -> f64 {
    let nn = norm_name(norm);
    let out = run(model, dev, case, &cfg_of(case, norm));
    let want = |k: &str| tensor(FILE, &format!("{case}.{k}")).data;
    let layers = ints(&format!("{case}.layers"))[0];
    assert_eq!(out.layers, layers);

    let e_feat = rel_err(&out.text_features, &want("text_feat"));
    assert!(e_feat < 1e-5, "{case}: text feature rel err {e_feat:.2e}");
    let e_cos = max_abs(&out.cos, &want("cos"));
    assert!(e_cos < 1e-6, "{case}: cos err {e_cos:.2e}");

    let per = out.per_layer.as_ref().expect("keep_layers");
    assert_eq!(per.len(), layers);
    let mut worst = [0.0f64; 5];
    for (l, rec) in per.iter().enumerate() {
        assert_eq!(rec.block, 4 - layers + l);
        let p = |k: &str| want(&format!("l{l}.{k}"));
        let errs = [
            rel_err(&rec.g, &p("g")),
            max_abs(&rec.w, &p("w")),
            rel_err(&rec.r, &p("r")),
            max_abs(&rec.a, &p("a")),
            rel_err(&rec.map, &p(&format!("m.{nn}"))),
        ];
        for (w, e) in worst.iter_mut().zip(errs) {
            *w = w.max(e);
        }
    }
    let [eg, ew, er, ea, em] = worst;
    assert!(eg < 1e-4, "{case}/{nn}: g rel err {eg:.2e}");
    assert!(ew < 1e-4, "{case}/{nn}: w abs err {ew:.2e}");
    assert!(er < 1e-4, "{case}/{nn}: r rel err {er:.2e}");
    assert!(ea < 1e-5, "{case}/{nn}: a abs err {ea:.2e}");
    assert!(em < 1e-4, "{case}/{nn}: layer map rel err {em:.2e}");
    let e_emap = rel_err(&out.emap, &want(&format!("emap.{nn}")));
    assert!(e_emap < 1e-4, "{case}/{nn}: emap rel err {e_emap:.2e}");
    let e = max_abs(&out.scores, &want(&format!("score.{nn}")));
    eprintln!(
        "{case:5}/{nn:8}: scores max|Δ| {e:.2e}; g {eg:.1e} w {ew:.1e} r {er:.1e} a {ea:.1e} \
         M {em:.1e} (rel/abs/rel/abs/rel); text feature {e_feat:.1e}, cos {e_cos:.1e}"
    );
    assert!(e <= 1e-4, "{case}/{nn}: scores max abs err {e:.3e} > 1e-4");
    e
}

/// Both attention paths: the fused CPU core and the dfdx composition (CUDA's path).
#[test]
fn gass_matches_official_pytorch_both_norms() {
    let dev = Cpu::default();
    let model = load(&dev);
    for fused in [true, false] {
        let mut worst: f64 = 0.0;
        with_fused(fused, || {
            for case in ["n2", "nall", "s123"] {
                for norm in [GassNorm::Official, GassNorm::Paper] {
                    worst = worst.max(check_case(&model, &dev, case, norm));
                }
            }
        });
        eprintln!("fused {fused}: worst scores max|Δ| over all cases: {worst:.2e}");
    }
}

/// Scores are 0 outside `1..eos`, in [0, 1], and the batch maximum is 1 (unless all are 0).
fn assert_score_properties(out: &GassOutput, eos: &[usize]) {
    assert_eq!(out.scores.len(), out.batch * 77);
    for (b, row) in out.rows().enumerate() {
        for (n, &s) in row.iter().enumerate() {
            assert!((0.0..=1.0).contains(&s), "score {s} out of range");
            if n == 0 || n >= eos[b] {
                assert_eq!(s, 0.0, "row {b} position {n} (eos {}) must be 0", eos[b]);
            }
        }
    }
    let max = out.scores.iter().copied().fold(0.0f32, f32::max);
    if out.scores.iter().any(|&s| s != 0.0) {
        assert_eq!(max, 1.0);
    }
}

fn random_rows(rng: &mut StdRng, b: usize, vocab: u32) -> Vec<[u32; 77]> {
    (0..b)
        .map(|i| {
            // lengths 0..=75 including the extremes
            let len = match i {
                0 => 75,
                1 => 0,
                _ => rng.gen_range(0..=75),
            };
            let mut row = [0u32; 77];
            row[0] = vocab - 2;
            for t in row.iter_mut().skip(1).take(len) {
                *t = rng.gen_range(1..vocab - 2);
            }
            row[len + 1] = vocab - 1;
            row
        })
        .collect()
}

#[test]
fn scores_vanish_outside_caption_and_batch_max_is_one() {
    let dev = Cpu::default();
    let model = load(&dev);
    let mut rng = StdRng::seed_from_u64(7);
    for (case, norm) in [
        ("n2", GassNorm::Official),
        ("n2", GassNorm::Paper),
        ("s123", GassNorm::Paper),
    ] {
        let out = run(&model, &dev, case, &cfg_of(case, norm));
        let eos: Vec<usize> = id_rows(FILE, &format!("{case}.text"))
            .iter()
            .map(|r| gadms_nn::eos_index(r))
            .collect();
        assert_score_properties(&out, &eos);
    }
    for seed_batch in [1usize, 6, 9] {
        let rows = random_rows(&mut rng, seed_batch, 512);
        let eos: Vec<usize> = rows.iter().map(|r| gadms_nn::eos_index(r)).collect();
        let text = TextInput::new(&dev, &rows);
        let img: Vec<f32> = (0..seed_batch * 32)
            .map(|_| rng.gen_range(-1.0..1.0))
            .collect();
        for norm in [GassNorm::Official, GassNorm::Paper] {
            for layers in [1, 3, 4] {
                let cfg = GassConfig {
                    layers,
                    norm,
                    ..GassConfig::default()
                };
                let img = dev.tensor_from_vec(img.clone(), (seed_batch, Const::<32>));
                let out = gass_scores(&model, img, &text, &cfg).unwrap();
                assert!(out.per_layer.is_none());
                assert_score_properties(&out, &eos);
            }
        }
    }
    // a batch of empty captions (SOT EOT): nothing to score, all zeros
    let rows = vec![{
        let mut r = [0u32; 77];
        r[0] = 510;
        r[1] = 511;
        r
    }];
    let text = TextInput::new(&dev, &rows);
    let img = dev.tensor_from_vec(vec![0.5f32; 32], (1, Const::<32>));
    let out = gass_scores(&model, img, &text, &GassConfig::default()).unwrap();
    assert!(out.scores.iter().all(|&s| s == 0.0));
}

/// Everything before the batch min–max is per sample: sample b's layer maps do not depend on
/// the other captions (this is why one backward of trace(C) equals the per-sample gradients).
#[test]
fn layer_maps_are_independent_of_the_rest_of_the_batch() {
    let dev = Cpu::default();
    let model = load(&dev);
    let case = "n2";
    let cfg = cfg_of(case, GassNorm::Official);
    let full = run(&model, &dev, case, &cfg);
    let rows = id_rows(FILE, &format!("{case}.text"));
    let img = tensor(FILE, &format!("{case}.image_cls")).data;
    for b in [0usize, 2, 4] {
        let text = TextInput::new(&dev, &rows[b..b + 1]);
        let im = dev.tensor_from_vec(img[b * 32..(b + 1) * 32].to_vec(), (1, Const::<32>));
        let one = gass_scores(&model, im, &text, &cfg).unwrap();
        for (lf, lo) in full
            .per_layer
            .as_ref()
            .unwrap()
            .iter()
            .zip(one.per_layer.as_ref().unwrap())
        {
            let e = rel_err(&lo.map, &lf.map[b * 77..(b + 1) * 77]);
            assert!(
                e < 1e-5,
                "sample {b}: layer map differs alone vs in batch ({e:.2e})"
            );
            let e = rel_err(&lo.g, &lf.g[b * 64..(b + 1) * 64]);
            assert!(
                e < 1e-5,
                "sample {b}: gradient differs alone vs in batch ({e:.2e})"
            );
        }
        let e = rel_err(&one.emap, &full.emap[b * 77..(b + 1) * 77]);
        assert!(e < 1e-5, "sample {b}: emap ({e:.2e})");
    }
}

/// `layers > L` re-runs every block (Python `resblocks[-8:]` on a 4-block tower).
#[test]
fn layer_count_is_clamped_like_python_slicing() {
    let dev = Cpu::default();
    let model = load(&dev);
    let mut cfg = cfg_of("nall", GassNorm::Official);
    assert_eq!(cfg.layers, 4);
    let a = run(&model, &dev, "nall", &cfg);
    cfg.layers = 8;
    let b = run(&model, &dev, "nall", &cfg);
    assert_eq!(b.layers, 4);
    assert_eq!(a, b);
}

#[test]
fn bad_inputs_are_errors() {
    let dev = Cpu::default();
    let model = load(&dev);
    let text = TextInput::new(&dev, &id_rows(FILE, "n2.text"));
    let img3 = dev.tensor_from_vec(vec![0.1f32; 3 * 32], (3, Const::<32>));
    let err = gass_scores(&model, img3, &text, &GassConfig::default()).unwrap_err();
    assert_eq!(
        err,
        GassError::BatchMismatch {
            images: 3,
            texts: 5
        }
    );
    let cases = [
        (
            GassConfig {
                layers: 0,
                ..GassConfig::default()
            },
            GassError::NoLayers,
        ),
        (
            GassConfig {
                scales: vec![1, 0],
                ..GassConfig::default()
            },
            GassError::BadScales(vec![1, 0]),
        ),
        (
            GassConfig {
                scales: vec![],
                ..GassConfig::default()
            },
            GassError::BadScales(vec![]),
        ),
    ];
    for (cfg, want) in cases {
        let img = image_cls(&dev, "n2");
        let err = gass_scores(&model, img, &text, &cfg).unwrap_err();
        assert!(!err.to_string().is_empty());
        assert_eq!(err, want);
    }
}

/// Time per call for the Tiny preset (2 text layers: n clamps to 2) at batch 32.
#[test]
#[ignore = "timing; run with --release -- --ignored --nocapture"]
fn timing_tiny_batch32() {
    let dev = Cpu::seed_from_u64(3);
    let model = TinyText::<f32, Cpu>::build(&dev);
    let mut rng = StdRng::seed_from_u64(11);
    let b = 32;
    let rows = random_rows(&mut rng, b, 49408);
    let text = TextInput::new(&dev, &rows);
    let img: Vec<f32> = (0..b * 32).map(|_| rng.gen_range(-1.0..1.0)).collect();
    let cfg = GassConfig::default();
    let call = || {
        let im = dev.tensor_from_vec(img.clone(), (b, Const::<32>));
        gass_scores(&model, im, &text, &cfg).unwrap()
    };
    let _ = call();
    let mut times = Vec::new();
    for _ in 0..10 {
        let t = std::time::Instant::now();
        let out = call();
        times.push(t.elapsed().as_secs_f64() * 1e3);
        assert_eq!(out.scores.len(), b * 77);
    }
    // plain forward of the same tower for scale
    let mut fwd = Vec::new();
    for _ in 0..10 {
        let t = std::time::Instant::now();
        let f = model.forward_features(&text, NoneTape);
        let _ = f.as_vec();
        fwd.push(t.elapsed().as_secs_f64() * 1e3);
    }
    times.sort_by(|a, b| a.partial_cmp(b).unwrap());
    fwd.sort_by(|a, b| a.partial_cmp(b).unwrap());
    eprintln!(
        "Tiny text, batch 32: GASS median {:.2} ms (min {:.2}, max {:.2}); plain forward median {:.2} ms",
        times[5], times[0], times[9], fwd[5]
    );
}
