//! Loader: determinism across worker counts, epochs, resume, the shuffle-buffer bound, and the
//! errors for corrupt samples and worker panics.

use gadms_data::image_prep::decode_normalized;
use gadms_data::loader::{
    Batch, Loader, LoaderConfig, LoaderError, LoaderState, Masking, Part, epoch_order, shard_order,
};
use gadms_data::manifest::{Dataset, Manifest};
use gadms_data::masking::MaskingConfig;
use gadms_data::scores::ScoreTable;
use gadms_data::shard::{SampleIn, ShardConfig, ShardWriter};
use gadms_data::{EOT, MASK, SOT};
use image::{ImageFormat, RgbImage};
use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::sync::Arc;

const H: u32 = 16;
const W: u32 = 8;

fn tmpdir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("gadms-loader-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn encode(i: usize, fmt: ImageFormat) -> Vec<u8> {
    let img = RgbImage::from_fn(W, H, |x, y| {
        image::Rgb([
            (x * 30 + i as u32 * 7) as u8,
            (y * 15) as u8,
            ((i * 37) % 256) as u8,
        ])
    });
    let mut buf = Vec::new();
    image::DynamicImage::ImageRgb8(img)
        .write_to(&mut Cursor::new(&mut buf), fmt)
        .unwrap();
    buf
}

/// Shards of the given sizes; global sample g has pid g / 2, image id g, caption ids
/// SOT, 1000 + g, 2000, 3000 + g, EOT. `corrupt` = (shard, index) whose image is garbage.
fn build(dir: &Path, sizes: &[usize], corrupt: Option<(usize, usize)>) -> Arc<Dataset> {
    let cfg = ShardConfig {
        dataset: "test".into(),
        split: "train".into(),
        image_h: H,
        image_w: W,
        encoding: "png".into(),
        tokenizer_hash: "t".into(),
    };
    let mut infos = Vec::new();
    let mut g = 0usize;
    for (s, &n) in sizes.iter().enumerate() {
        let mut w = ShardWriter::create(&dir.join(format!("s{s}.gshard")), &cfg).unwrap();
        for i in 0..n {
            let img = if corrupt == Some((s, i)) {
                b"\xff\xd8\xff\xe0 definitely not a jpeg".to_vec()
            } else if g.is_multiple_of(2) {
                encode(g, ImageFormat::Png)
            } else {
                encode(g, ImageFormat::Jpeg)
            };
            let mut ids = [0u32; 77];
            ids[..5].copy_from_slice(&[SOT, 1000 + g as u32, 2000, 3000 + g as u32, EOT]);
            w.push(&SampleIn {
                image: &img,
                ids: &ids,
                caption: "a person",
                path: &format!("img/{g}.png"),
                pid: g as u64 / 2,
                image_id: g as u64,
                caption_idx: 0,
            })
            .unwrap();
            g += 1;
        }
        infos.push(w.finish().unwrap());
    }
    Manifest::new(cfg, infos, g as u64, g as u64 / 2, 0)
        .write(dir)
        .unwrap();
    Arc::new(Dataset::open(dir, Some("t")).unwrap())
}

fn config(ds: &Dataset, workers: usize) -> LoaderConfig {
    LoaderConfig {
        batch_size: 4,
        seed: 42,
        workers,
        prefetch: 2,
        shuffle_buffer: 6,
        drop_last: false,
        masking: Masking::Dual {
            scores: Arc::new(ScoreTable::in_memory(ds.len())),
            config: MaskingConfig::default(),
        },
        ..LoaderConfig::default()
    }
}

fn take(l: &mut Loader, n: usize) -> Vec<Batch> {
    (0..n).map(|_| l.next_batch().unwrap()).collect()
}

fn image_bytes(b: &Batch) -> Vec<u8> {
    b.images.iter().flat_map(|x| x.to_le_bytes()).collect()
}

#[test]
fn same_seed_same_batches_whatever_the_worker_count() {
    let dir = tmpdir("det");
    let ds = build(&dir, &[7, 5, 9], None);
    let mut one = Loader::new(ds.clone(), config(&ds, 1)).unwrap();
    let mut three = Loader::new(
        ds.clone(),
        LoaderConfig {
            prefetch: 5,
            ..config(&ds, 3)
        },
    )
    .unwrap();
    assert_eq!(one.batches_per_epoch(), 6); // 21 samples, batch 4, keep the last 1
    let a = take(&mut one, 12);
    let b = take(&mut three, 12);
    for (x, y) in a.iter().zip(&b) {
        assert_eq!(image_bytes(x), image_bytes(y), "bytes equal");
        assert_eq!(x, y);
    }
    assert_eq!(a[5].len(), 1);
    assert_eq!((a[6].epoch, a[6].step), (1, 0));
    assert_eq!(x_len(&a[0]), 4 * 3 * (H * W) as usize);
    let b0 = &a[0];
    assert_eq!(b0.ids_noise.len(), 4);
    assert_eq!(b0.ids_info.len(), 4);
    for (i, &g) in b0.sample_index.iter().enumerate() {
        assert_eq!(b0.pids[i], g / 2);
        assert_eq!(b0.image_ids[i], g);
        assert_eq!(b0.ids_clean[i][1], 1000 + g as u32);
        // At least one informative label per caption (docs/method.md §4.2).
        assert!(b0.info_labels[i].iter().any(|&l| l != 0));
        for p in 1..4 {
            let lab = b0.info_labels[i][p];
            assert!(lab == 0 || lab == b0.ids_clean[i][p]);
            if lab == 0 {
                assert_eq!(b0.ids_info[i][p], b0.ids_clean[i][p]);
            }
        }
        assert!(!b0.ids_noise[i].contains(&0) || b0.ids_noise[i][5..].iter().all(|&x| x == 0));
        let _ = MASK;
    }
    // Another seed gives another order.
    let mut other = Loader::new(
        ds.clone(),
        LoaderConfig {
            seed: 43,
            ..config(&ds, 2)
        },
    )
    .unwrap();
    let c = take(&mut other, 6);
    let order =
        |v: &[Batch]| -> Vec<u64> { v.iter().flat_map(|b| b.sample_index.clone()).collect() };
    assert_ne!(order(&a[..6]), order(&c));
    std::fs::remove_dir_all(&dir).unwrap();
}

fn x_len(b: &Batch) -> usize {
    b.images.len()
}

#[test]
fn each_sample_once_per_epoch_and_epochs_differ() {
    let dir = tmpdir("epochs");
    let ds = build(&dir, &[7, 5, 9], None);
    let mut l = Loader::new(ds.clone(), config(&ds, 2)).unwrap();
    let mut orders = Vec::new();
    for e in 0..3u64 {
        let bs = take(&mut l, 6);
        assert!(bs.iter().all(|b| b.epoch == e));
        let o: Vec<u64> = bs.iter().flat_map(|b| b.sample_index.clone()).collect();
        let mut s = o.clone();
        s.sort();
        assert_eq!(s, (0..21).collect::<Vec<u64>>(), "a permutation");
        orders.push(o);
    }
    assert_ne!(orders[0], orders[1]);
    assert_ne!(orders[1], orders[2]);
    // The same sample is augmented differently in another epoch.
    assert_eq!(
        l.state(),
        LoaderState {
            epoch: 3,
            next_batch: 0
        }
    );
    // drop_last: 21 / 4 = 5 full batches.
    let l = Loader::new(
        ds.clone(),
        LoaderConfig {
            drop_last: true,
            ..config(&ds, 1)
        },
    )
    .unwrap();
    assert_eq!(l.batches_per_epoch(), 5);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn resume_continues_exactly() {
    let dir = tmpdir("resume");
    let ds = build(&dir, &[7, 5, 9], None);
    let mut a = Loader::new(ds.clone(), config(&ds, 2)).unwrap();
    let all = take(&mut a, 14);
    for k in [0usize, 3, 5, 6, 9] {
        let mut l = Loader::new(ds.clone(), config(&ds, 3)).unwrap();
        let _ = take(&mut l, k);
        let saved = serde_json::to_string(&l.state()).unwrap();
        drop(l);
        let state: LoaderState = serde_json::from_str(&saved).unwrap();
        let mut r = Loader::new(ds.clone(), config(&ds, 1)).unwrap();
        r.resume(state).unwrap();
        let rest = take(&mut r, 14 - k);
        assert_eq!(&rest[..], &all[k..], "resume after {k} batches");
    }
    // A state from the end of an epoch continues with the next epoch.
    let mut r = Loader::new(ds.clone(), config(&ds, 1)).unwrap();
    r.resume(LoaderState {
        epoch: 0,
        next_batch: 6,
    })
    .unwrap();
    assert_eq!(r.next_batch().unwrap(), all[6]);
    let e = r
        .resume(LoaderState {
            epoch: 0,
            next_batch: 7,
        })
        .unwrap_err();
    assert!(e.to_string().contains("past"), "{e}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Stream position of every global index under the epoch's shard order.
fn stream_positions(lens: &[usize], order: &[usize]) -> Vec<usize> {
    let mut starts = vec![0usize];
    for l in lens {
        starts.push(starts.last().unwrap() + l);
    }
    let mut pos = vec![0usize; starts[lens.len()]];
    let mut q = 0;
    for &s in order {
        for p in &mut pos[starts[s]..starts[s + 1]] {
            *p = q;
            q += 1;
        }
    }
    pos
}

#[test]
fn shuffle_buffer_bound_holds() {
    let lens = [50usize, 30, 70, 10, 1, 40];
    let total: usize = lens.iter().sum();
    for buffer in [1usize, 2, 8, 33, 1000] {
        for epoch in 0..5 {
            let o = epoch_order(&lens, 7, epoch, true, buffer);
            let mut s = o.clone();
            s.sort();
            assert_eq!(s, (0..total as u32).collect::<Vec<_>>());
            let pos = stream_positions(&lens, &shard_order(lens.len(), 7, epoch, true));
            let mut max_early = 0usize;
            for (p, &g) in o.iter().enumerate() {
                let q = pos[g as usize];
                // Never emitted `buffer` or more positions before its stream position.
                assert!(q < p + buffer, "buffer {buffer}: stream {q} emitted at {p}");
                max_early = max_early.max(q.saturating_sub(p));
            }
            if buffer == 1 {
                assert_eq!(max_early, 0, "buffer 1 = shard shuffle only");
            }
        }
    }
    assert_ne!(
        epoch_order(&lens, 7, 0, true, 8),
        epoch_order(&lens, 7, 1, true, 8)
    );
    assert_eq!(
        epoch_order(&lens, 7, 0, false, 8),
        (0..total as u32).collect::<Vec<_>>()
    );
    // 10M samples: the order is simulated on indices only (cheap).
    let big = vec![10_000usize; 1000];
    let t = std::time::Instant::now();
    let o = epoch_order(&big, 1, 0, true, 10_000);
    assert_eq!(o.len(), 10_000_000);
    eprintln!("epoch_order over 10M samples: {:?}", t.elapsed());
}

#[test]
fn loader_order_matches_epoch_order() {
    let dir = tmpdir("order");
    let ds = build(&dir, &[7, 5, 9], None);
    let mut l = Loader::new(ds.clone(), config(&ds, 2)).unwrap();
    let o = l.epoch_order(0);
    let got: Vec<u32> = take(&mut l, 6)
        .iter()
        .flat_map(|b| b.sample_index.iter().map(|&g| g as u32))
        .collect();
    assert_eq!(&got, &*o);
    assert_eq!(
        *o,
        epoch_order(&[7, 5, 9], 42, 0, true, 6),
        "Loader::epoch_order = epoch_order(shard lens)"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn test_transform_and_mlm() {
    let dir = tmpdir("eval");
    let ds = build(&dir, &[7, 5], None);
    let mut l = Loader::new(
        ds.clone(),
        LoaderConfig {
            batch_size: 5,
            shuffle: false,
            train: false,
            masking: Masking::Mlm,
            drop_last: false,
            workers: 2,
            ..LoaderConfig::default()
        },
    )
    .unwrap();
    let b = l.next_batch().unwrap();
    assert_eq!(b.sample_index, vec![0, 1, 2, 3, 4]);
    assert!(b.ids_noise.is_empty());
    assert_eq!(b.ids_info.len(), 5);
    let (s, i) = ds.locate(3).unwrap();
    let want = decode_normalized(ds.shards[s].sample(i).unwrap().image, 16, 8).unwrap();
    let px = 3 * 16 * 8;
    assert_eq!(&b.images[3 * px..4 * px], &want[..]);
    for k in 0..5 {
        assert!(b.info_labels[k].iter().any(|&x| x != 0), "at least one");
        assert_eq!(b.ids_clean[k][1], 1000 + k as u32, "clean ids kept");
    }
    // Resizing when the requested size differs from the stored one.
    let mut r = Loader::new(
        ds.clone(),
        LoaderConfig {
            image_size: Some((32, 16)),
            batch_size: 3,
            ..LoaderConfig::default()
        },
    )
    .unwrap();
    assert_eq!(r.next_batch().unwrap().images.len(), 3 * 3 * 32 * 16);
    // A score table of the wrong size is refused.
    let e = Loader::new(
        ds.clone(),
        LoaderConfig {
            masking: Masking::Dual {
                scores: Arc::new(ScoreTable::in_memory(3)),
                config: MaskingConfig::default(),
            },
            batch_size: 4,
            ..LoaderConfig::default()
        },
    )
    .unwrap_err();
    assert!(e.to_string().contains("3 rows"), "{e}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn corrupt_image_names_shard_and_index() {
    let dir = tmpdir("corrupt");
    let ds = build(&dir, &[7, 5, 9], Some((1, 3)));
    let mut l = Loader::new(
        ds.clone(),
        LoaderConfig {
            shuffle: false,
            ..config(&ds, 3)
        },
    )
    .unwrap();
    // Global sample 7 + 3 = 10 lies in batch 2 (samples 8..12).
    take(&mut l, 2);
    let e = l.next_batch().unwrap_err();
    let msg = e.to_string();
    assert!(
        matches!(
            e,
            LoaderError::Sample {
                index: 3,
                global: 10,
                ..
            }
        ),
        "{e:?}"
    );
    assert!(
        msg.contains("s1.gshard") && msg.contains("sample 3"),
        "{msg}"
    );
    assert_eq!(
        l.state().next_batch,
        2,
        "position stays at the failed batch"
    );
    // Retrying fails the same way instead of hanging or skipping.
    assert!(l.next_batch().is_err());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn worker_panic_is_an_error_not_a_hang() {
    let dir = tmpdir("panic");
    let ds = build(&dir, &[7, 5, 9], None);
    for workers in [1, 3] {
        let mut l = Loader::new(
            ds.clone(),
            LoaderConfig {
                debug_panic_at_step: Some(2),
                ..config(&ds, workers)
            },
        )
        .unwrap();
        take(&mut l, 2);
        let e = l.next_batch().unwrap_err();
        assert!(
            matches!(e, LoaderError::WorkerPanic { step: 2, .. }),
            "{e:?}"
        );
        assert!(e.to_string().contains("injected"), "{e}");
        // The loader stays usable: skip past the bad batch.
        l.resume(LoaderState {
            epoch: 0,
            next_batch: 3,
        })
        .unwrap();
        assert_eq!(l.next_batch().unwrap().step, 3);
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Flips one byte inside the body of sample `index` of shard file `shard` (format v2: the
/// footer names the index, whose 48-byte entries start with the body offset).
fn flip_body_byte(shard: &Path, index: usize) {
    let mut b = std::fs::read(shard).unwrap();
    let u64_at = |b: &[u8], at: usize| u64::from_le_bytes(b[at..at + 8].try_into().unwrap());
    let entry = u64_at(&b, b.len() - 24) as usize + 48 * index;
    let body = u64_at(&b, entry) as usize;
    b[body + 10] ^= 0x10;
    std::fs::write(shard, b).unwrap();
}

#[test]
fn skip_damaged_leaves_the_damaged_sample_out_of_the_order_only() {
    let dir = tmpdir("skip");
    build(&dir, &[7, 5, 9], None);
    flip_body_byte(&dir.join("s1.gshard"), 2); // global sample 7 + 2 = 9
    let plain = Arc::new(Dataset::open(&dir, Some("t")).unwrap());
    assert!(plain.damaged().is_empty() && plain.usable() == 21);
    let mut ds = Dataset::open(&dir, Some("t")).unwrap();
    let damaged = ds.skip_damaged().to_vec();
    assert_eq!(damaged.len(), 1, "{damaged:?}");
    assert_eq!((damaged[0].global, damaged[0].index), (9, 2));
    assert!(damaged[0].shard.ends_with("s1.gshard"));
    assert!(damaged[0].what.contains("checksum"), "{damaged:?}");
    assert!(ds.is_skipped(9) && ds.is_skipped_at(1, 2) && !ds.is_skipped(8));
    assert_eq!(ds.usable(), 20);
    let ds = Arc::new(ds);
    // The order is the plain one without sample 9; the batches hold every other sample once.
    let full = epoch_order(&[7, 5, 9], 42, 0, true, 6);
    let want: Vec<u32> = full.iter().copied().filter(|&g| g != 9).collect();
    let mut l = Loader::new(ds.clone(), config(&ds, 2)).unwrap();
    assert_eq!(*l.epoch_order(0), want);
    assert_eq!(l.batches_per_epoch(), 5, "20 samples in batches of 4");
    let got: Vec<u32> = take(&mut l, 5)
        .iter()
        .flat_map(|b| b.sample_index.iter().map(|&g| g as u32))
        .collect();
    assert_eq!(got, want);
    // Without skip_damaged the same files are an error at the damaged sample.
    let mut l = Loader::new(plain.clone(), config(&plain, 2)).unwrap();
    assert_eq!(*l.epoch_order(0), full);
    let e = (0..6).find_map(|_| l.next_batch().err()).expect("an error");
    assert!(matches!(e, LoaderError::Sample { global: 9, .. }), "{e:?}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn skip_damaged_on_a_sound_dataset_changes_nothing() {
    let dir = tmpdir("skip-none");
    build(&dir, &[7, 5, 9], None);
    let mut ds = Dataset::open(&dir, Some("t")).unwrap();
    assert!(ds.skip_damaged().is_empty());
    let ds = Arc::new(ds);
    let mut l = Loader::new(ds.clone(), config(&ds, 2)).unwrap();
    assert_eq!(*l.epoch_order(0), epoch_order(&[7, 5, 9], 42, 0, true, 6));
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The rows of `b` followed by the rows of `c` (two parts of one batch).
fn concat(b: &Batch, c: &Batch) -> Batch {
    fn cat<T: Clone>(x: &[T], y: &[T]) -> Vec<T> {
        x.iter().chain(y).cloned().collect()
    }
    Batch {
        images: cat(&b.images, &c.images),
        ids_clean: cat(&b.ids_clean, &c.ids_clean),
        ids_noise: cat(&b.ids_noise, &c.ids_noise),
        ids_info: cat(&b.ids_info, &c.ids_info),
        info_labels: cat(&b.info_labels, &c.info_labels),
        pids: cat(&b.pids, &c.pids),
        image_ids: cat(&b.image_ids, &c.image_ids),
        caption_idx: cat(&b.caption_idx, &c.caption_idx),
        sample_index: cat(&b.sample_index, &c.sample_index),
        ..b.clone()
    }
}

#[test]
fn the_parts_of_a_batch_are_the_whole_batch() {
    let dir = tmpdir("parts");
    let ds = build(&dir, &[7, 5, 9], None);
    let cfg = |part| LoaderConfig {
        drop_last: true,
        part,
        ..config(&ds, 2)
    };
    let mut whole = Loader::new(ds.clone(), cfg(Part::WHOLE)).unwrap();
    let mut parts: Vec<Loader> = (0..2)
        .map(|index| Loader::new(ds.clone(), cfg(Part { index, count: 2 })).unwrap())
        .collect();
    assert_eq!(parts[1].batches_per_epoch(), whole.batches_per_epoch());
    // Two epochs: 5 batches of 4 each (21 samples, the last one dropped).
    for _ in 0..10 {
        let w = whole.next_batch().unwrap();
        let (a, b) = (
            parts[0].next_batch().unwrap(),
            parts[1].next_batch().unwrap(),
        );
        assert_eq!((a.len(), b.len()), (2, 2));
        assert_ne!(a.sample_index, b.sample_index);
        let joined = concat(&a, &b);
        assert_eq!(image_bytes(&joined), image_bytes(&w));
        assert_eq!(joined, w);
    }
    // A batch that does not split evenly, and a part outside the count, are refused.
    for part in [Part { index: 0, count: 3 }, Part { index: 2, count: 2 }] {
        let e = Loader::new(ds.clone(), cfg(part)).unwrap_err().to_string();
        assert!(e.contains("does not split"), "{e}");
    }
}
