//! Hostile numbers: non-finite weights, non-finite embeddings, resource caps, bad names. Each
//! is one `error:` line (or a note) through the binary, never a panic, an OOM or NaN metrics
//! (docs/cli.md, "What gadms checks").

use super::*;
use std::sync::OnceLock;

/// The synthetic CUHK-format test split packed once at 64×32 (shared by these tests).
fn packed() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("gadms-finite-pack-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        // more workers than cores: capped, with a note
        let (_, err) = ok(&args![
            "pack",
            "--workers",
            "100000",
            "--format",
            "cuhk-pedes",
            "--src",
            fixture("synth-pedes"),
            "--split",
            "test",
            "--image-size",
            "64x32",
            "--out",
            &dir,
        ]);
        assert!(err.contains("note: --workers 100000 capped at"), "{err}");
        dir
    })
}

/// The fixture weights with `key` changed by `f`, written (f32) to `dir/name`.
fn weights_with(d: &TempDir, name: &str, key: &str, f: impl Fn(&mut Vec<f32>)) -> PathBuf {
    let mut m = read_file(&weights()).expect("fixture weights");
    f(&mut m.tensors.get_mut(key).expect("fixture key").data);
    let p = d.join(name);
    write_file(&p, &m, &BTreeMap::new()).expect("write weights");
    p
}

/// The error contract for failures after the weights loaded (stderr then also holds the
/// `loaded …` line): non-zero exit, no panic, exactly one `error:` line holding every needle,
/// and it is the last line; nothing at `out`.
fn fails_after_load(args: &[OsString], out: &Path, needles: &[&str]) {
    let o = gadms(args);
    let se = text(&o.stderr);
    let ctx = format!("gadms {args:?}\nstatus: {}\nstderr: {se}", o.status);
    assert_eq!(o.status.code(), Some(1), "exit status\n{ctx}");
    assert!(!se.contains("panicked"), "panic\n{ctx}");
    let errors: Vec<&str> = se.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(errors.len(), 1, "one error line\n{ctx}");
    assert_eq!(
        se.trim_end().lines().last(),
        Some(errors[0]),
        "error line last\n{ctx}"
    );
    for n in needles {
        assert!(errors[0].contains(n), "error line lacks {n:?}\n{ctx}");
    }
    assert!(leftovers(out).is_empty(), "output left behind\n{ctx}");
}

fn s(p: &Path) -> String {
    p.display().to_string()
}

#[test]
fn nan_weights_are_refused_by_embed_and_eval() {
    let d = TempDir::new("nan-w");
    let w = weights_with(&d, "nan_weights.safetensors", "ln_final.weight", |v| {
        v[3] = f32::NAN;
        v[5] = f32::INFINITY;
    });
    let out = d.join("emb.safetensors");
    let args = args![
        "embed",
        "--weights",
        &w,
        "--texts",
        captions(),
        "--out",
        &out,
        embed_fixture("img0.png"),
    ];
    let needles = [&s(&w)[..], "ln_final.weight holds 2 non-finite values"];
    fails(&args, &out, &needles);
    let json = d.join("m.json");
    let args = args!["eval", "--weights", &w, "--data", packed(), "--json", &json];
    fails(&args, &json, &needles);
}

#[test]
fn overflowing_weights_give_an_error_naming_the_embedding_not_metrics() {
    // Finite weights whose features overflow to Inf: the image projection at f32::MAX.
    let d = TempDir::new("huge-w");
    let w = weights_with(&d, "huge_proj.safetensors", "visual.proj", |v| {
        v.iter_mut().for_each(|x| *x = f32::MAX)
    });
    let json = d.join("m.json");
    let args = args!["eval", "--weights", &w, "--data", packed(), "--json", &json];
    fails_after_load(&args, &json, &["embedding of image 0 is not finite"]);
    let out = d.join("emb.safetensors");
    let args = args![
        "embed",
        "--weights",
        &w,
        "--out",
        &out,
        embed_fixture("img0.png")
    ];
    fails_after_load(&args, &out, &["embedding of image 0 is not finite"]);
    let html = d.join("s.html");
    let args = args![
        "search",
        "--weights",
        &w,
        "--gallery",
        packed(),
        "--query",
        "a man in a red shirt",
        "--no-cache",
        "--html",
        &html,
    ];
    fails_after_load(
        &args,
        &html,
        &["embedding of gallery image 0 is not finite"],
    );
}

#[test]
fn bench_random_checks_memory_before_allocating() {
    let d = TempDir::new("bench-mem");
    let none = d.join("nothing");
    for n in ["1000000", "4000000000"] {
        fails(
            &args!["eval", "--bench-random", n],
            &none,
            &[&format!("--bench-random {n} would need"), "use N ≤"],
        );
    }
}

#[test]
fn tokenize_refuses_an_overlong_line_by_number_without_echoing_it() {
    let d = TempDir::new("long-line");
    let f = d.join("captions.txt");
    let mut body = String::from("a man in a red shirt\n");
    body.push_str(&"SECRETPAYLOAD ".repeat(6000));
    body.push('\n');
    std::fs::write(&f, body).unwrap();
    let line = fails(
        &args!["tokenize", "--texts", &f],
        &d.join("nothing"),
        &[&format!("{}:2", s(&f)), "64 KiB"],
    );
    assert!(
        !line.contains("SECRETPAYLOAD"),
        "the line's content is echoed: {line}"
    );
}

#[test]
fn pack_refuses_an_unknown_split_listing_the_names() {
    let d = TempDir::new("bogus-split");
    let out = d.join("packed");
    let args = args![
        "pack",
        "--format",
        "cuhk-pedes",
        "--src",
        fixture("synth-pedes"),
        "--split",
        "bogus",
        "--out",
        &out,
    ];
    fails(&args, &out, &["'bogus'", "train, val, test"]);
}

#[test]
fn pack_accepts_a_json_with_a_utf8_bom() {
    let d = TempDir::new("bom");
    let src = d.join("src");
    std::fs::create_dir_all(&src).unwrap();
    let raw = std::fs::read(fixture("synth-pedes").join("reid_raw.json")).unwrap();
    std::fs::write(
        src.join("reid_raw.json"),
        [&b"\xEF\xBB\xBF"[..], &raw].concat(),
    )
    .unwrap();
    std::os::unix::fs::symlink(fixture("synth-pedes").join("imgs"), src.join("imgs")).unwrap();
    let out = d.join("packed");
    let args = args![
        "pack",
        "--format",
        "cuhk-pedes",
        "--src",
        &src,
        "--split",
        "test",
        "--image-size",
        "64x32",
        "--out",
        &out,
    ];
    let (so, _) = ok(&args);
    assert!(out.join("manifest.json").is_file(), "{so}");
}

#[test]
fn explain_says_it_clamps_gass_layers_to_the_tower_depth() {
    let (so, se) = ok(&args![
        "explain",
        "--weights",
        weights(),
        "--image",
        embed_fixture("img0.png"),
        "--text",
        "a man in a red shirt",
        "--gass-layers",
        "99",
    ]);
    assert!(se.contains("--gass-layers 99 clamped to 2"), "{se}");
    assert!(so.contains("GASS (2 layers"), "{so}");
}

#[test]
fn nan_weights_are_refused_as_init() {
    let d = TempDir::new("nan-init");
    let w = weights_with(&d, "nan_init.safetensors", "visual.proj", |v| {
        v[0] = f32::NAN
    });
    let out = d.join("run");
    for cmd in ["pretrain", "finetune"] {
        let args = args![cmd, "--init", &w, "--epochs", "1", "--out", &out];
        // (the default data set is unpacked into the run directory first: no weights are written)
        fails_after_load(
            &args,
            &out.join("gadms_model.safetensors"),
            &[&s(&w), "visual.proj holds 1 non-finite values"],
        );
    }
}

#[test]
fn f64_weights_beyond_the_f32_range_are_refused() {
    // 1e300 fits an F64 tensor but reads as +Inf in f32: refused like a NaN.
    let d = TempDir::new("f64-inf");
    let w = d.join("f64_overflow.safetensors");
    let m = read_file(&weights()).expect("fixture weights");
    let tensors: Vec<(String, &str, Vec<usize>, Vec<u8>)> = m
        .tensors
        .iter()
        .map(|(k, a)| {
            let mut v: Vec<f64> = a.data.iter().map(|&x| x as f64).collect();
            if k == "ln_final.weight" {
                v[0] = 1e300;
            }
            let b = v.iter().flat_map(|x| x.to_le_bytes()).collect();
            (k.clone(), "F64", a.shape.clone(), b)
        })
        .collect();
    super::errors::write_raw_safetensors(&w, &tensors);
    let out = d.join("emb.safetensors");
    let args = args![
        "embed",
        "--weights",
        &w,
        "--out",
        &out,
        embed_fixture("img0.png")
    ];
    fails(
        &args,
        &out,
        &[&s(&w), "ln_final.weight holds 1 non-finite values"],
    );
}

/// `inspect` is a diagnosis tool: a file holding NaN/Inf is reported key by key (exit 0),
/// where every loading command refuses it.
#[test]
fn inspect_reports_non_finite_tensors_instead_of_refusing() {
    let d = TempDir::new("nan-inspect");
    let w = weights_with(&d, "nan_inspect.safetensors", "ln_final.weight", |v| {
        v[3] = f32::NAN;
        v[5] = f32::NEG_INFINITY;
    });
    let (so, _) = ok(&args!["inspect", &w]);
    assert!(so.contains("preset:     tiny"), "{so}");
    assert!(so.contains("finite:     no, 1 of "), "{so}");
    let flagged: Vec<&str> = so
        .lines()
        .filter(|l| l.starts_with("non-finite:"))
        .collect();
    assert_eq!(
        flagged,
        ["non-finite: ln_final.weight holds 2 non-finite values"],
        "{so}"
    );
    let (so, _) = ok(&args!["inspect", weights()]);
    assert!(so.contains("finite:     yes"), "{so}");
    assert!(!so.contains("non-finite:"), "{so}");
}

/// `bench loader --workers N` starts at most one thread per core, with the note `pack`
/// gives (an absurd N would try to start that many threads).
#[test]
fn bench_loader_caps_workers_at_the_core_count() {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let (so, se) = ok(&args![
        "bench",
        "loader",
        "--data",
        packed(),
        "--workers",
        "100000",
        "--images",
        "8",
        "--batch",
        "4",
    ]);
    let note = format!("note: --workers 100000 capped at {cores}, the number of cores");
    assert!(se.contains(&note), "{se}");
    assert!(so.contains(&format!("| gadms loader | {cores} |")), "{so}");
}
