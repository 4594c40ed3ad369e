//! Masking statistics against the docs/method.md §4.1 formulas and the §4.2 rules, augmentation geometry, and
//! the score table.

use gadms_data::augment::{self, AugmentConfig, AugmentParams, Rect};
use gadms_data::image_prep::{CLIP_MEAN, normalize_rgb8};
use gadms_data::masking::{
    Curve, MAX_RANDOM_ID, MaskingConfig, SampleRng, dual_mask, mask_caption, mlm_mask,
};
use gadms_data::scores::{INIT_SCORE, ScoreTable};
use gadms_data::{EOT, MASK, SOT, TokenIds};

const SCORES: [f32; 7] = [0.0, 0.05, 0.1, 0.15, 0.2, 0.3, 0.85];

/// SOT, 75 word pieces (ids 100…174), EOT; position i has score SCORES[i % 7].
fn caption() -> (TokenIds, [f32; 77]) {
    let mut ids = [0u32; 77];
    ids[0] = SOT;
    for (i, id) in ids.iter_mut().enumerate().take(76).skip(1) {
        *id = 99 + i as u32;
    }
    ids[76] = EOT;
    let mut s = [0f32; 77];
    for (i, x) in s.iter_mut().enumerate() {
        *x = SCORES[i % 7];
    }
    (ids, s)
}

/// |k − n p| within 5 binomial standard deviations (+1 for tiny p).
fn check_rate(k: u64, n: u64, p: f64, what: &str) {
    let mean = n as f64 * p;
    let sd = (n as f64 * p * (1.0 - p)).sqrt();
    assert!(
        (k as f64 - mean).abs() <= 5.0 * sd + 1.0,
        "{what}: {k} of {n}, expected {mean:.1} ± {sd:.1} (p = {p})"
    );
}

fn selection_rates(curve: Curve, p_of: impl Fn(f32) -> f64) {
    let (ids, scores) = caption();
    let mut rng = SampleRng::new(7);
    let mut sel = [0u64; 7];
    let mut tot = [0u64; 7];
    let rounds = 19_000; // ≈ 200k draws per score value (positions 2..=75)
    for _ in 0..rounds {
        let (m, l) = mask_caption(&ids, &scores, curve, &mut rng);
        assert_eq!((m[0], m[76], l[0], l[76]), (SOT, EOT, 0, 0));
        assert!(l.iter().any(|&x| x != 0), "at least one label");
        // Position 1 is excluded: the "at least one" rule forces it sometimes.
        for i in 2..76 {
            let k = i % 7;
            tot[k] += 1;
            if l[i] != 0 {
                assert_eq!(l[i], ids[i]);
                sel[k] += 1;
            } else {
                assert_eq!(m[i], ids[i], "unselected tokens are untouched");
            }
        }
    }
    for k in 0..7 {
        assert!(tot[k] >= 190_000);
        check_rate(
            sel[k],
            tot[k],
            p_of(SCORES[k]),
            &format!("{curve:?} s={}", SCORES[k]),
        );
    }
}

#[test]
fn curves_match_the_spec_table() {
    let c = MaskingConfig::default();
    // §4.1 table.
    let info = [0.036, 0.081, 0.150, 0.219, 0.264, 0.295, 0.300];
    let noise = [0.176, 0.146, 0.100, 0.054, 0.024, 0.0036, 6e-8];
    for (k, &s) in SCORES.iter().enumerate() {
        assert!((c.p_info(s) - info[k]).abs() < 1.5e-3, "p_info({s})");
        let rel = (c.p_noise(s) - noise[k]).abs() / noise[k];
        assert!(rel < 0.06, "p_noise({s}) = {}", c.p_noise(s));
    }
    assert!((c.p_info(0.1) - 0.15).abs() < 1e-7 && (c.p_noise(0.1) - 0.1).abs() < 1e-7);
}

#[test]
fn informative_selection_rate_matches_p_info() {
    let c = MaskingConfig::default();
    selection_rates(Curve::Info(c), |s| c.p_info(s));
}

#[test]
fn noise_selection_rate_matches_p_noise() {
    let c = MaskingConfig::default();
    selection_rates(Curve::Noise(c), |s| c.p_noise(s));
}

#[test]
fn replacement_split_is_80_10_10() {
    let (ids, _) = caption();
    let scores = [INIT_SCORE; 77]; // p_info = 0.3
    let c = MaskingConfig::default();
    let mut rng = SampleRng::new(11);
    let (mut n, mut masked, mut random, mut kept) = (0u64, 0u64, 0u64, 0u64);
    for _ in 0..20_000 {
        let (m, l) = mask_caption(&ids, &scores, Curve::Info(c), &mut rng);
        for i in 1..76 {
            if l[i] == 0 {
                continue;
            }
            n += 1;
            if m[i] == MASK {
                masked += 1;
            } else if m[i] == ids[i] {
                kept += 1;
            } else {
                assert!((1..=MAX_RANDOM_ID).contains(&m[i]), "random id {}", m[i]);
                random += 1;
            }
        }
    }
    check_rate(masked, n, 0.8, "[MASK] share");
    // A random id equals the original with probability 1/49404.
    let p_rand = 0.1 * (1.0 - 1.0 / MAX_RANDOM_ID as f64);
    check_rate(random, n, p_rand, "random share");
    check_rate(kept, n, 1.0 - 0.8 - p_rand, "kept share");
}

#[test]
fn random_ids_cover_the_range_bounds_only() {
    // Uniform(1) selects everything: 10 % of draws become random ids in [1, 49404].
    let (ids, _) = caption();
    let mut rng = SampleRng::new(3);
    let (mut lo, mut hi) = (u32::MAX, 0u32);
    for _ in 0..20_000 {
        let (m, l) = mask_caption(&ids, &[0.0; 77], Curve::Uniform(1.0), &mut rng);
        for i in 1..76 {
            assert_eq!(l[i], ids[i]);
            if m[i] != MASK && m[i] != ids[i] {
                lo = lo.min(m[i]);
                hi = hi.max(m[i]);
            }
        }
    }
    assert!(lo >= 1 && hi <= MAX_RANDOM_ID, "{lo}..{hi}");
    assert!(
        lo < 100 && hi > MAX_RANDOM_ID - 100,
        "{lo}..{hi} should span the range"
    );
}

#[test]
fn special_ids_are_never_touched_and_at_least_one_holds() {
    // SOT, words, an existing [MASK], words, EOT, padding.
    let mut ids = [0u32; 77];
    ids[0] = SOT;
    ids[1] = 500;
    ids[2] = 501;
    ids[3] = MASK;
    ids[4] = 502;
    ids[5] = EOT;
    let scores = [0.85f32; 77]; // p_noise ≈ 6e-8: practically never selects
    let c = MaskingConfig::default();
    let mut rng = SampleRng::new(5);
    let mut forced = 0;
    for _ in 0..10_000 {
        for curve in [Curve::Noise(c), Curve::Info(c), Curve::Uniform(0.15)] {
            let (m, l) = mask_caption(&ids, &scores, curve, &mut rng);
            assert_eq!(m[0], SOT);
            assert_eq!(m[3], MASK);
            assert_eq!(m[5], EOT);
            assert!(m[6..].iter().all(|&x| x == 0), "padding untouched");
            assert!(
                [0, 3, 5].iter().all(|&i| l[i] == 0) && l[6..].iter().all(|&x| x == 0),
                "labels are 0 off the word pieces"
            );
            let selected: Vec<usize> = (0..77).filter(|&i| l[i] != 0).collect();
            assert!(!selected.is_empty(), "at least one");
            if matches!(curve, Curve::Noise(_)) && selected == [1] && m[1] == MASK {
                forced += 1;
            }
        }
    }
    assert!(
        forced > 9_990,
        "noise copy at s=0.85 falls back to position 1: {forced}"
    );
    // An empty caption has no word piece: nothing is masked, EOT is kept.
    let mut empty = [0u32; 77];
    empty[0] = SOT;
    empty[1] = EOT;
    let (m, l) = mask_caption(&empty, &scores, Curve::Noise(c), &mut rng);
    assert_eq!(m, empty);
    assert_eq!(l, [0u32; 77]);
}

#[test]
fn dual_copies_are_independent_and_mlm_is_fifteen_percent() {
    let (ids, _) = caption();
    let scores = [0.1f32; 77]; // p_info = 0.15, p_noise = 0.1
    let c = MaskingConfig::default();
    let mut rng = SampleRng::new(9);
    let (mut both, mut ni, mut ii, mut n) = (0u64, 0u64, 0u64, 0u64);
    for _ in 0..5_000 {
        let d = dual_mask(&ids, &scores, &c, &mut rng);
        assert_eq!(d.clean, ids);
        for i in 2..76 {
            n += 1;
            let a = d.noise_masked[i] == MASK;
            let b = d.info_masked[i] == MASK;
            ni += a as u64;
            ii += b as u64;
            both += (a && b) as u64;
        }
    }
    check_rate(ni, n, 0.1 * 0.8, "noise [MASK]");
    check_rate(ii, n, 0.15 * 0.8, "info [MASK]");
    check_rate(both, n, 0.08 * 0.12, "masked in both");
    // Determinism of the seeded generator.
    let a = dual_mask(&ids, &scores, &c, &mut SampleRng::for_sample(1, 2, 3, 4));
    let b = dual_mask(&ids, &scores, &c, &mut SampleRng::for_sample(1, 2, 3, 4));
    assert_eq!(a, b);
    let mut sel = 0u64;
    for _ in 0..20_000 {
        let (_, l) = mlm_mask(&ids, &mut rng);
        sel += (2..76).filter(|&i| l[i] != 0).count() as u64;
    }
    check_rate(sel, 20_000 * 74, 0.15, "MLM selection");
}

// ---- augmentation geometry ----

/// A 6×4 image whose pixel (y, x) = (10y + x, 100 + 10y + x, 200).
fn small() -> (Vec<u8>, usize, usize) {
    let (h, w) = (6, 4);
    let mut v = Vec::new();
    for y in 0..h {
        for x in 0..w {
            v.extend_from_slice(&[(10 * y + x) as u8, (100 + 10 * y + x) as u8, 200]);
        }
    }
    (v, h, w)
}

fn norm(c: usize, v: u8) -> f32 {
    normalize_rgb8(&[v, v, v], 1, 1)[c]
}

#[test]
fn identity_params_equal_the_test_transform() {
    let (img, h, w) = small();
    let mut a = vec![0f32; 3 * h * w];
    let mut b = vec![0f32; 3 * h * w];
    augment::apply(
        &img,
        h,
        w,
        10,
        &AugmentParams::identity(10),
        CLIP_MEAN,
        &mut a,
    );
    augment::test_transform(&img, h, w, &mut b);
    assert_eq!(a, normalize_rgb8(&img, h, w));
    assert_eq!(a, b);
}

#[test]
fn flip_crop_and_erase_geometry() {
    let (img, h, w) = small();
    let n = h * w;
    let mut out = vec![0f32; 3 * n];
    // Flip, crop offset (top 12, left 9) in the 10-padded image: output (y, x) reads padded
    // (y + 12, x + 9) = flipped source (y + 2, x − 1), black outside.
    let p = AugmentParams {
        flip: true,
        crop_top: 12,
        crop_left: 9,
        erase: Some(Rect {
            top: 0,
            left: 2,
            h: 1,
            w: 2,
        }),
    };
    augment::apply(&img, h, w, 10, &p, CLIP_MEAN, &mut out);
    for y in 0..h {
        for x in 0..w {
            for c in 0..3 {
                let got = out[c * n + y * w + x];
                let want = if y == 0 && (2..4).contains(&x) {
                    CLIP_MEAN[c] // erased with the raw mean (quirk)
                } else {
                    let (sy, sx) = (y as isize + 2, x as isize - 1);
                    if sy >= h as isize || sx < 0 {
                        norm(c, 0)
                    } else {
                        let ox = w - 1 - sx as usize; // flipped
                        norm(c, img[(sy as usize * w + ox) * 3 + c])
                    }
                };
                assert_eq!(got, want, "c{c} y{y} x{x}");
            }
        }
    }
    // Crop far right/bottom without flip: output (y, x) = source (y + 10, x + 10) → all black.
    let p = AugmentParams {
        flip: false,
        crop_top: 20,
        crop_left: 20,
        erase: None,
    };
    augment::apply(&img, h, w, 10, &p, CLIP_MEAN, &mut out);
    for c in 0..3 {
        assert!(out[c * n..(c + 1) * n].iter().all(|&v| v == norm(c, 0)));
    }
    // Shift by one without flip.
    let p = AugmentParams {
        flip: false,
        crop_top: 10,
        crop_left: 11,
        erase: None,
    };
    augment::apply(&img, h, w, 10, &p, CLIP_MEAN, &mut out);
    for y in 0..h {
        for x in 0..w {
            let want = if x + 1 < w {
                norm(0, img[(y * w + x + 1) * 3])
            } else {
                norm(0, 0)
            };
            assert_eq!(out[y * w + x], want);
        }
    }
}

#[test]
fn sampled_params_are_in_range_and_deterministic() {
    let cfg = AugmentConfig::default();
    let (h, w) = (384, 128);
    let (mut flips, mut erases, mut n) = (0u64, 0u64, 0u64);
    for i in 0..4000u64 {
        let p = augment::sample_params(h, w, &cfg, &mut SampleRng::for_sample(0, 0, i, 1));
        assert_eq!(
            p,
            augment::sample_params(h, w, &cfg, &mut SampleRng::for_sample(0, 0, i, 1))
        );
        assert!(p.crop_top <= 20 && p.crop_left <= 20);
        flips += p.flip as u64;
        if let Some(e) = p.erase {
            erases += 1;
            assert!(e.h < h && e.w < w && e.top + e.h <= h && e.left + e.w <= w);
            let frac = (e.h * e.w) as f64 / (h * w) as f64;
            assert!(frac > 0.015 && frac < 0.42, "area fraction {frac}");
        }
        n += 1;
    }
    check_rate(flips, n, 0.5, "flip");
    // Erasing fires with p 0.5; at 384×128 some attempts fail (w ≥ 128), rarely all ten.
    assert!(
        erases as f64 > 0.45 * n as f64 && erases <= n / 2 + 200,
        "{erases}"
    );
}

// ---- score table ----

#[test]
fn score_table_in_memory_and_file_backed() {
    let dir = std::env::temp_dir().join(format!("gadms-scores-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let m = ScoreTable::in_memory(3);
    assert_eq!(m.get(2), [INIT_SCORE; 77]);
    let mut row = [0f32; 77];
    for (i, x) in row.iter_mut().enumerate() {
        *x = i as f32 / 100.0;
    }
    m.set(1, &row);
    assert_eq!(m.get(1), row);
    assert_eq!(m.get(0), [INIT_SCORE; 77]);

    let path = dir.join("scores.f32");
    {
        let t = ScoreTable::open_or_create(&path, 5).unwrap();
        assert_eq!(t.get(4), [INIT_SCORE; 77]);
        t.set(3, &row);
        t.flush().unwrap();
    }
    assert_eq!(
        std::fs::metadata(&path).unwrap().len(),
        32 + 5 * 77 * 4,
        "header + rows"
    );
    let t = ScoreTable::open_or_create(&path, 5).unwrap();
    assert_eq!(t.get(3), row);
    assert_eq!(t.get(2), [INIT_SCORE; 77]);
    let copy = dir.join("copy.f32");
    t.save_copy(&copy).unwrap();
    let c = ScoreTable::open(&copy, Some(5)).unwrap();
    assert_eq!(c.get(3), row);
    let mem = ScoreTable::in_memory(5);
    mem.copy_from(&c).unwrap();
    assert_eq!(mem.get(3), row);
    drop((t, c));

    let e = ScoreTable::open(&path, Some(6)).unwrap_err().to_string();
    assert!(e.contains("scores.f32") && e.contains("6 captions"), "{e}");
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() - 4]).unwrap();
    let e = ScoreTable::open(&path, None).unwrap_err().to_string();
    assert!(e.contains("scores.f32") && e.contains("truncated"), "{e}");
    std::fs::write(&path, b"not a score table at all, clearly no").unwrap();
    let e = ScoreTable::open(&path, None).unwrap_err().to_string();
    assert!(e.contains("magic"), "{e}");
    std::fs::remove_dir_all(&dir).unwrap();
}
