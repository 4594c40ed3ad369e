//! `gadms pack` through the library API on the tiny source samples in `fixtures/formats/`
//! (see fixtures/README.md for what each row is): counts, read-back, rejects, determinism,
//! restart, and the errors for sources that are not the expected structure.

use gadms_data::manifest::{Dataset, Manifest};
use gadms_data::pack::{
    Format, NoProgress, PackError, PackOptions, PackReport, REJECTS_FILE, Reject, pack,
    parse_image_size, shard_file_name,
};
use gadms_data::{ClipTokenizer, tokenizer_hash};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

const H: u32 = 64;
const W: u32 = 32;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fixtures/formats")
        .join(name)
}

fn tmpdir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("gadms-pack-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn tok() -> &'static ClipTokenizer {
    static T: OnceLock<ClipTokenizer> = OnceLock::new();
    T.get_or_init(|| ClipTokenizer::new().unwrap())
}

fn opts(format: Format, src: &Path, out: &Path) -> PackOptions {
    PackOptions {
        image_h: H,
        image_w: W,
        workers: 2,
        shard_size: 4,
        ..PackOptions::new(format, src, out)
    }
}

fn run(o: &PackOptions) -> PackReport {
    pack(o, &NoProgress).unwrap_or_else(|e| panic!("pack {:?} failed: {e}", o.format))
}

/// One packed sample, read back.
#[derive(Debug, PartialEq, Eq, PartialOrd, Ord, Clone)]
struct S {
    path: String,
    idx: u32,
    pid: u64,
    image_id: u64,
    caption: String,
}

fn s(path: &str, idx: u32, pid: u64, image_id: u64, caption: &str) -> S {
    S {
        path: path.into(),
        idx,
        pid,
        image_id,
        caption: caption.into(),
    }
}

/// Opens the output, checks every sample (ids = tokenizer(caption), image decodes at h×w in the
/// stored encoding) and returns them in order.
fn read_back(out: &Path, h: u32, w: u32) -> Vec<S> {
    let ds = Dataset::open(out, Some(&tokenizer_hash())).unwrap();
    let png = ds.manifest.config.encoding == "png";
    let mut v = Vec::new();
    for shard in &ds.shards {
        for i in 0..shard.len() {
            let x = shard.sample(i).unwrap();
            assert_eq!(x.ids, tok().encode(x.caption).unwrap(), "{}", x.caption);
            let fmt = image::guess_format(x.image).unwrap();
            let want = if png {
                image::ImageFormat::Png
            } else {
                image::ImageFormat::Jpeg
            };
            assert_eq!(fmt, want);
            let img = image::load_from_memory(x.image).unwrap();
            assert_eq!((img.height(), img.width()), (h, w), "{}", x.path);
            v.push(S {
                path: x.path.into(),
                idx: x.caption_idx,
                pid: x.pid,
                image_id: x.image_id,
                caption: x.caption.into(),
            });
        }
    }
    assert_eq!(v.len() as u64, ds.manifest.samples);
    v
}

fn rejects(out: &Path) -> Vec<Reject> {
    std::fs::read_to_string(out.join(REJECTS_FILE))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// (row, caption_idx, reason prefix) of each reject, in file order.
fn check_rejects(out: &Path, source: &str, want: &[(u64, Option<u32>, &str)]) {
    let got = rejects(out);
    assert_eq!(got.len(), want.len(), "{got:#?}");
    for (r, (row, cap, reason)) in got.iter().zip(want) {
        assert_eq!(r.source, source);
        assert_eq!((r.row, r.caption_idx), (*row, *cap), "{r:?}");
        assert!(
            r.reason.starts_with(reason),
            "reject {r:?} should start with {reason:?}"
        );
    }
}

fn counts(m: &Manifest) -> (u64, u64, u64, u64) {
    (m.samples, m.images, m.identities, m.rejects)
}

#[test]
fn webperson_json_packs_two_samples_per_image() {
    let out = tmpdir("wjson");
    let r = run(&opts(
        Format::WebpersonJson,
        &fixture("webperson_json"),
        &out,
    ));
    assert_eq!(counts(&r.manifest), (7, 4, 7, 4));
    assert_eq!(r.manifest.config.dataset, "webperson");
    assert_eq!(r.manifest.config.split, "train");
    assert_eq!(r.manifest.config.encoding, "jpeg95");
    assert_eq!(r.manifest.config.tokenizer_hash, tokenizer_hash());
    assert_eq!(
        (r.manifest.config.image_h, r.manifest.config.image_w),
        (H, W)
    );
    // One pid per caption, 2 × image_id + caption_idx; "/n" stripped.
    assert_eq!(
        read_back(&out, H, W),
        vec![
            s(
                "img/000001.jpg",
                0,
                0,
                0,
                "A woman in a red shirt and blue jeans."
            ),
            s(
                "img/000001.jpg",
                1,
                1,
                0,
                "She wears a red top and dark trousers."
            ),
            s("img/000002.jpg", 0, 2, 1, "A man in a blue jacket."),
            s("img/000002.jpg", 1, 3, 1, "The man carries a yellow bag."),
            s("img/000003.jpg", 0, 4, 2, "A person in green walks by."),
            s("img/000007.png", 0, 10, 5, "A girl in an orange dress."),
            s("img/000007.png", 1, 11, 5, "She has black shoes."),
        ]
    );
    check_rejects(
        &out,
        "100w.json",
        &[
            (2, Some(1), "empty caption"),
            (3, None, "missing image"),
            (4, None, "corrupt image"),
            (5, None, "missing field `caption2`"),
        ],
    );
    // Holes left by the rejected images: said, not fatal.
    assert_eq!(r.warnings.len(), 1, "{:?}", r.warnings);
    assert!(r.warnings[0].contains("not contiguous"), "{:?}", r.warnings);
    assert_eq!(
        r.summary_line(),
        format!(
            "packed 7 samples (4 images, 7 ids) into 2 shards; 4 rejected (see {})",
            out.join(REJECTS_FILE).display()
        )
    );
    // The JSON file itself is accepted as --src too.
    let out2 = tmpdir("wjson-file");
    let r2 = run(&opts(
        Format::WebpersonJson,
        &fixture("webperson_json/100w.json"),
        &out2,
    ));
    assert_eq!(r2.manifest.content_hash, r.manifest.content_hash);
}

#[test]
fn webperson_parquet_reads_row_groups_and_files() {
    let out = tmpdir("wpq");
    // Shard size 3: chunk 1 (rows 3..6) crosses the row-group boundary at 4 and is all rejects,
    // chunk 2 (rows 6..9) crosses from the first file into the second.
    let r = run(&PackOptions {
        shard_size: 3,
        ..opts(
            Format::WebpersonParquet,
            &fixture("webperson_parquet"),
            &out,
        )
    });
    assert_eq!(counts(&r.manifest), (11, 6, 11, 4));
    assert_eq!(r.chunks, 3);
    assert_eq!(
        r.manifest.shards.len(),
        2,
        "the all-rejected chunk is not listed"
    );
    assert_eq!(r.manifest.shards[1].file, shard_file_name(2));
    assert_eq!(
        read_back(&out, H, W),
        vec![
            s("part0/000000.jpg", 0, 0, 0, "A man in a white shirt."),
            s("part0/000000.jpg", 1, 1, 0, "He wears grey trousers."),
            s("part0/000001.jpg", 0, 2, 1, "A woman with a purple coat."),
            s("part0/000001.jpg", 1, 3, 1, "She holds a black handbag."),
            s("part0/000002.jpg", 0, 4, 2, "A child in a yellow raincoat."),
            s("part0/000006.png", 0, 12, 6, "A cyclist in a green jersey."),
            s("part0/000006.png", 1, 13, 6, "He wears a helmet."),
            s("part0/000007.jpg", 0, 14, 7, "A tall man in a black suit."),
            s("part0/000007.jpg", 1, 15, 7, "He has a red tie."),
            s("part0/000008.jpg", 0, 16, 8, "A woman in a blue dress."),
            s("part0/000008.jpg", 1, 17, 8, "She wears white sneakers."),
        ]
    );
    check_rejects(
        &out,
        "data/train-00000-of-00002.parquet",
        &[
            (2, Some(1), "empty caption"),
            (3, None, "missing image"),
            (4, None, "corrupt image"),
            (5, None, "missing caption"),
        ],
    );
    // Same shards whatever the worker count; the single-file --src works too.
    let out1 = tmpdir("wpq-1");
    let r1 = run(&PackOptions {
        shard_size: 3,
        workers: 1,
        ..opts(
            Format::WebpersonParquet,
            &fixture("webperson_parquet"),
            &out1,
        )
    });
    assert_eq!(r1.manifest, r.manifest);
    let one = tmpdir("wpq-one");
    let r3 = run(&opts(
        Format::WebpersonParquet,
        &fixture("webperson_parquet/data/train-00001-of-00002.parquet"),
        &one,
    ));
    assert_eq!(counts(&r3.manifest), (4, 2, 4, 0));
}

#[test]
fn webperson_parquet_wrong_schema_names_file_and_column() {
    let out = tmpdir("wpq-bad");
    let src = fixture("webperson_parquet/wrong_schema.parquet.bad");
    let e = pack(&opts(Format::WebpersonParquet, &src, &out), &NoProgress)
        .unwrap_err()
        .to_string();
    assert!(e.contains("wrong_schema.parquet.bad"), "{e}");
    assert!(e.contains("column `caption2` not found"), "{e}");
    // A JSON file is not parquet.
    let e = pack(
        &opts(
            Format::WebpersonParquet,
            &fixture("cuhk_pedes/reid_raw.json"),
            &out,
        ),
        &NoProgress,
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("reid_raw.json: not a readable parquet file"),
        "{e}"
    );
    assert!(!out.join("manifest.json").exists());
}

#[test]
fn cuhk_pedes_splits_and_pids() {
    let src = fixture("cuhk_pedes");
    let out = tmpdir("cuhk-train");
    let r = run(&opts(Format::CuhkPedes, &src, &out));
    assert_eq!(counts(&r.manifest), (7, 4, 3, 4));
    assert!(r.warnings.is_empty(), "{:?}", r.warnings);
    assert_eq!(r.manifest.config.dataset, "cuhk-pedes");
    // Train pid = id − 1; image_id counts the split's usable rows (the missing and corrupt
    // images at 3 and 4 keep their numbers).
    assert_eq!(
        read_back(&out, H, W),
        vec![
            s("CUHK01/0001001.png", 0, 0, 0, "A woman in a red coat."),
            s("CUHK01/0001001.png", 1, 0, 0, "She wears red."),
            s("CUHK01/0001002.png", 0, 0, 1, "The woman in red walks."),
            s("CUHK01/0001002.png", 1, 0, 1, "Red coat, black shoes."),
            s("cam_a/0002_a.jpg", 0, 1, 2, "A man in a blue shirt."),
            s(
                "Market/0003_c2.jpg",
                0,
                2,
                5,
                "Yellow bag and grey trousers."
            ),
            s("Market/0003_c2.jpg", 1, 2, 5, "A grey outfit."),
        ]
    );
    check_rejects(
        &out,
        "reid_raw.json",
        &[
            (2, Some(1), "empty caption"),
            (3, None, "missing image"),
            (4, None, "corrupt image"),
            (6, None, "missing field `file_path`"),
        ],
    );

    // Test: pid = id as is.
    let out = tmpdir("cuhk-test");
    let r = run(&PackOptions {
        split: "test".into(),
        ..opts(Format::CuhkPedes, &src, &out)
    });
    assert_eq!(counts(&r.manifest), (6, 3, 2, 0));
    let got = read_back(&out, H, W);
    let pids: Vec<u64> = got.iter().map(|x| x.pid).collect();
    assert_eq!(pids, [5, 5, 5, 5, 6, 6]);
    assert_eq!(r.manifest.config.split, "test");

    // `--split` takes train, val or test; another name is an error listing them (not val).
    let bogus = tmpdir("cuhk-bogus");
    let e = pack(
        &PackOptions {
            split: "validation".into(),
            ..opts(Format::CuhkPedes, &src, &bogus)
        },
        &NoProgress,
    )
    .expect_err("--split validation must be refused");
    assert!(
        e.to_string()
            .contains("'validation'; expected one of: train, val, test"),
        "{e}"
    );
    let out = tmpdir("cuhk-val");
    let r = run(&PackOptions {
        split: "val".into(),
        ..opts(Format::CuhkPedes, &src, &out)
    });
    assert_eq!(r.manifest.config.split, "val");
    assert_eq!(
        read_back(&out, H, W),
        vec![
            s("train_query/p7.jpg", 0, 7, 0, "A boy in an orange shirt."),
            s("train_query/p7.jpg", 1, 7, 0, "Orange shirt."),
        ]
    );
}

#[test]
fn icfg_pedes_warns_on_pid_gap() {
    let src = fixture("icfg_pedes/ICFG-PEDES.json");
    let out = tmpdir("icfg-train");
    let r = run(&opts(Format::IcfgPedes, &src, &out));
    assert_eq!(counts(&r.manifest), (4, 4, 3, 2));
    assert_eq!(r.warnings.len(), 1);
    assert!(
        r.warnings[0].contains("not contiguous") && r.warnings[0].contains("missing: 2"),
        "{:?}",
        r.warnings
    );
    let got = read_back(&out, H, W);
    let pids: Vec<u64> = got.iter().map(|x| x.pid).collect();
    assert_eq!(pids, [0, 0, 1, 3]);
    assert!(got.iter().all(|x| x.idx == 0));
    check_rejects(
        &out,
        "ICFG-PEDES.json",
        &[(2, Some(0), "empty caption"), (5, None, "missing image")],
    );

    let out = tmpdir("icfg-test");
    let r = run(&PackOptions {
        split: "test".into(),
        ..opts(Format::IcfgPedes, &src, &out)
    });
    assert_eq!(counts(&r.manifest), (3, 3, 3, 0));
    let pids: Vec<u64> = read_back(&out, H, W).iter().map(|x| x.pid).collect();
    assert_eq!(
        pids,
        [10, 11, 12],
        "a string id \"12\" is read as IRRA's int(id)"
    );
}

#[test]
fn rstpreid_counts_truncated_captions() {
    let src = fixture("rstpreid");
    let out = tmpdir("rstp-train");
    let r = run(&opts(Format::Rstpreid, &src, &out));
    assert_eq!(counts(&r.manifest), (6, 3, 2, 2));
    assert_eq!(r.truncated, 1);
    assert!(
        r.summary_line()
            .ends_with("; 1 captions truncated to 77 tokens"),
        "{}",
        r.summary_line()
    );
    let got = read_back(&out, H, W);
    assert_eq!(got[0].path, "0000_c14_0031.jpg");
    assert!(tok().token_count(&got[0].caption) > 77);
    check_rejects(
        &out,
        "data_captions.json",
        &[
            (2, None, "corrupt image"),
            (6, None, "field `img_path` is a number, not a string"),
        ],
    );
    for (split, want) in [("val", "0002_c3_0003.jpg"), ("test", "0003_c1_0004.jpg")] {
        let out = tmpdir(&format!("rstp-{split}"));
        let r = run(&PackOptions {
            split: split.into(),
            ..opts(Format::Rstpreid, &src, &out)
        });
        assert_eq!(counts(&r.manifest).0, 2);
        assert_eq!(read_back(&out, H, W)[0].path, want);
    }
}

#[test]
fn lossless_stores_the_exact_triangle_resize_and_default_size_is_384x128() {
    let src = fixture("rstpreid");
    let out = tmpdir("rstp-png");
    let r = run(&PackOptions {
        lossless: true,
        ..opts(Format::Rstpreid, &src, &out)
    });
    assert_eq!(r.manifest.config.encoding, "png");
    let ds = Dataset::open(&out, None).unwrap();
    let x = ds.shards[0].sample(0).unwrap();
    let stored = image::load_from_memory(x.image).unwrap().to_rgb8();
    let orig = image::open(src.join("imgs").join(x.path))
        .unwrap()
        .to_rgb8();
    let want = image::imageops::resize(&orig, W, H, image::imageops::FilterType::Triangle);
    assert_eq!(stored, want);

    let out = tmpdir("rstp-default");
    let mut o = PackOptions::new(Format::Rstpreid, &src, &out);
    o.workers = 2;
    let r = run(&o);
    assert_eq!(
        (r.manifest.config.image_h, r.manifest.config.image_w),
        (384, 128)
    );
    assert_eq!(read_back(&out, 384, 128).len(), 6);
}

#[test]
fn same_shards_for_any_worker_count() {
    for (format, name) in [
        (Format::CuhkPedes, "cuhk_pedes"),
        (Format::WebpersonJson, "webperson_json"),
    ] {
        let mut hashes = Vec::new();
        for workers in [1, 2] {
            let out = tmpdir(&format!("det-{name}-{workers}"));
            let r = run(&PackOptions {
                workers,
                shard_size: 2,
                ..opts(format, &fixture(name), &out)
            });
            assert!(r.manifest.shards.len() >= 2);
            let bytes: Vec<Vec<u8>> = r
                .manifest
                .shards
                .iter()
                .map(|s| std::fs::read(out.join(&s.file)).unwrap())
                .collect();
            hashes.push((
                r.manifest,
                bytes,
                std::fs::read(out.join(REJECTS_FILE)).unwrap(),
            ));
        }
        assert!(
            hashes[0] == hashes[1],
            "{name}: outputs differ between 1 and 2 workers"
        );
    }
}

fn stamp(p: &Path) -> (u64, i64, i64) {
    let m = std::fs::metadata(p).unwrap();
    (m.ino(), m.mtime(), m.mtime_nsec())
}

#[test]
fn rerun_skips_finished_shards() {
    let src = fixture("cuhk_pedes");
    let out = tmpdir("restart");
    let o = PackOptions {
        shard_size: 2,
        ..opts(Format::CuhkPedes, &src, &out)
    };
    let first = run(&o);
    assert_eq!(first.chunks, 3);
    assert_eq!(first.reused_shards, 0);
    let (p0, p1, p2) = (
        out.join(shard_file_name(0)),
        out.join(shard_file_name(1)),
        out.join(shard_file_name(2)),
    );
    let before = stamp(&p0);

    // A crash after shard 0 and 2: shard 1 and the manifest are gone.
    std::fs::remove_file(&p1).unwrap();
    std::fs::remove_file(out.join("manifest.json")).unwrap();
    let second = run(&o);
    assert_eq!(second.reused_shards, 2);
    assert_eq!(stamp(&p0), before, "finished shard 0 was rewritten");
    assert_eq!(second.manifest, first.manifest);
    assert_eq!(Manifest::read(&out).unwrap(), first.manifest);
    assert_eq!(rejects(&out).len(), 4);

    // A truncated shard is redone; the others are still reused.
    let len = std::fs::metadata(&p2).unwrap().len();
    let f = std::fs::OpenOptions::new().write(true).open(&p2).unwrap();
    f.set_len(len / 2).unwrap();
    drop(f);
    let third = run(&o);
    assert_eq!(third.reused_shards, 2);
    assert_eq!(third.manifest, first.manifest);
    assert_eq!(stamp(&p0), before);

    // A shard of format version 1 (an older build's, without checksums) is repacked.
    let mut old = std::fs::read(&p0).unwrap();
    old[8..12].copy_from_slice(&1u32.to_le_bytes());
    std::fs::write(&p0, &old).unwrap();
    let again = run(&o);
    assert_eq!(again.reused_shards, 2);
    assert_eq!(again.manifest, first.manifest);
    assert_eq!(
        std::fs::read(&p0).unwrap()[8..12],
        gadms_data::shard::SHARD_VERSION.to_le_bytes()
    );

    // A flipped byte in a finished shard's body: repacked, not reused.
    let mut bad = std::fs::read(&p0).unwrap();
    let k = bad.len() / 3;
    bad[k] ^= 0x20;
    std::fs::write(&p0, &bad).unwrap();
    let again = run(&o);
    assert_eq!(again.reused_shards, 2);
    assert_eq!(again.manifest, first.manifest);

    // Other settings (PNG) invalidate every finished shard.
    let fourth = run(&PackOptions {
        lossless: true,
        ..o.clone()
    });
    assert_eq!(fourth.reused_shards, 0);
    assert_ne!(fourth.manifest.content_hash, first.manifest.content_hash);
}

#[test]
fn source_structure_errors_name_the_file() {
    let dir = tmpdir("badjson");
    let out = dir.join("out");
    let err = |format: Format, src: &Path| -> String {
        let e: PackError = pack(&opts(format, src, &out), &NoProgress).unwrap_err();
        e.to_string()
    };

    // Missing file.
    let e = err(Format::CuhkPedes, &dir);
    assert!(
        e.contains("reid_raw.json") && e.contains("not found"),
        "{e}"
    );

    // A top-level object instead of a list.
    std::fs::write(dir.join("reid_raw.json"), r#"{"annotations": []}"#).unwrap();
    let e = err(Format::CuhkPedes, &dir);
    assert!(e.contains("reid_raw.json"), "{e}");
    assert!(e.contains("expected a JSON list"), "{e}");

    // caption_all.json-like rows: no `split` anywhere.
    std::fs::write(
        dir.join("reid_raw.json"),
        r#"[{"file_path": "a.jpg", "id": 1, "captions": ["x"]}]"#,
    )
    .unwrap();
    let e = err(Format::CuhkPedes, &dir);
    assert!(e.contains("reid_raw.json") && e.contains("`split`"), "{e}");
    assert!(e.contains("caption_all.json"), "{e}");

    // A split that is not there.
    std::fs::write(
        dir.join("reid_raw.json"),
        r#"[{"split": "train", "file_path": "a.jpg", "id": 1, "captions": ["x"]}]"#,
    )
    .unwrap();
    let e = err(Format::CuhkPedes, &dir.join("reid_raw.json"));
    assert!(e.contains("imgs"), "missing image folder: {e}");
    let mut o = opts(Format::CuhkPedes, &dir, &out);
    o.split = "test".into();
    let e = pack(&o, &NoProgress).unwrap_err().to_string();
    assert!(
        e.contains("no rows of split 'test' (found: train 1)"),
        "{e}"
    );

    // Malformed JSON.
    std::fs::write(dir.join("data_captions.json"), "[{\"id\": 0,").unwrap();
    let e = err(Format::Rstpreid, &dir);
    assert!(
        e.contains("data_captions.json: not the expected structure"),
        "{e}"
    );

    // WebPerson JSON: rows that are all unusable.
    let wdir = dir.join("wp");
    std::fs::create_dir_all(&wdir).unwrap();
    std::fs::write(wdir.join("100w.json"), r#"[{"a.jpg": {"caption1": "x"}}]"#).unwrap();
    let e = err(Format::WebpersonJson, &wdir);
    assert!(
        e.contains("100w.json") && e.contains("missing field `caption2`"),
        "{e}"
    );
    assert!(!out.join("manifest.json").exists());
}

#[test]
fn option_errors() {
    let out = tmpdir("opts");
    let mut o = opts(Format::WebpersonJson, &fixture("webperson_json"), &out);
    o.split = "test".into();
    let e = pack(&o, &NoProgress).unwrap_err().to_string();
    assert!(e.contains("only a train split"), "{e}");
    assert!(
        "cuhk"
            .parse::<Format>()
            .unwrap_err()
            .to_string()
            .contains("cuhk-pedes")
    );
    assert_eq!(parse_image_size("384x128").unwrap(), (384, 128));
    assert!(parse_image_size("384").is_err());
    assert!(parse_image_size("0x128").is_err());
}

mod confine;
