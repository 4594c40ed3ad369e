//! Synthetic training batches for benchmarks and tests (`gadms bench train`, the surgery
//! experiments): random images and captions, no dataset needed.

use crate::loader::Batch;
use crate::tokenizer::{EOT, MASK, SOT};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// A deterministic synthetic batch: N(0,1) images, captions of 10–40 random word ids between
/// SOT and EOT, a noise-masked copy (20 % of words → MASK), an informative-masked copy (15 %
/// → MASK, labelled), pids 0..B (per-caption identities, docs/method.md §5.1).
pub fn synthetic_batch(b: usize, h: usize, w: usize, seed: u64) -> Batch {
    let mut rng = StdRng::seed_from_u64(seed);
    let images: Vec<f32> = (0..b * 3 * h * w)
        .map(|_| {
            let (u, v): (f32, f32) = (rng.r#gen::<f32>().max(1e-7), rng.r#gen());
            (-2.0 * u.ln()).sqrt() * (std::f32::consts::TAU * v).cos()
        })
        .collect();
    let (mut clean, mut noise, mut info, mut labels) = (vec![], vec![], vec![], vec![]);
    for _ in 0..b {
        let len = rng.gen_range(10..=40);
        let mut r = [0u32; 77];
        r[0] = SOT;
        for x in r.iter_mut().take(len + 1).skip(1) {
            *x = rng.gen_range(1..49_000);
        }
        r[len + 1] = EOT;
        let (mut n, mut i, mut l) = (r, r, [0u32; 77]);
        for p in 1..=len {
            if rng.r#gen::<f32>() < 0.2 {
                n[p] = MASK;
            }
            if rng.r#gen::<f32>() < 0.15 {
                l[p] = r[p];
                i[p] = MASK;
            }
        }
        if l.iter().all(|&x| x == 0) {
            (l[1], i[1]) = (r[1], MASK);
        }
        clean.push(r);
        noise.push(n);
        info.push(i);
        labels.push(l);
    }
    Batch {
        epoch: 0,
        step: 0,
        height: h,
        width: w,
        images,
        ids_clean: clean,
        ids_noise: noise,
        ids_info: info,
        info_labels: labels,
        pids: (0..b as u64).collect(),
        image_ids: (0..b as u64).collect(),
        caption_idx: vec![0; b],
        sample_index: (0..b as u64).collect(),
    }
}
