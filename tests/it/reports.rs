//! End-to-end tests of `gadms eval`, `search`, `explain` and `plot` through the binary: output
//! contents, the embedding cache, the HTML pages (structure always; rendered by headless
//! Chromium when it is installed) and bad input (clear error or warning, never a panic).

use crate::common::fixture;
use gadms::eval::rank::rank_metrics;
use gadms::screenshot::{find_chromium, screenshot};
use gadms_ckpt::tensors::{read_file_filtered, read_ints};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};

/// A fresh directory under the system temp dir, removed on drop.
pub(crate) struct TempDir(pub(crate) PathBuf);

impl TempDir {
    pub(crate) fn new(tag: &str) -> Self {
        static N: AtomicUsize = AtomicUsize::new(0);
        let p = std::env::temp_dir().join(format!(
            "gadms-reports-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        ));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
    pub(crate) fn join(&self, s: &str) -> PathBuf {
        self.0.join(s)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn gadms<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_gadms"))
        .args(args)
        .output()
        .expect("cannot start the gadms binary")
}

pub(crate) fn s(p: &Path) -> String {
    p.display().to_string()
}

/// Runs and asserts success; returns (stdout, stderr).
pub(crate) fn ok<S: AsRef<std::ffi::OsStr> + std::fmt::Debug>(args: &[S]) -> (String, String) {
    let o = gadms(args);
    let (so, se) = (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    );
    assert!(o.status.success(), "gadms {args:?} failed:\n{so}\n{se}");
    assert!(!se.contains("panicked"), "{se}");
    (so, se)
}

/// Runs and asserts a clean failure: non-zero exit, no panic, an `error:` line containing every
/// needle. Returns stderr.
pub(crate) fn fails<S: AsRef<std::ffi::OsStr> + std::fmt::Debug>(
    args: &[S],
    needles: &[&str],
) -> String {
    let o = gadms(args);
    let se = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(!o.status.success(), "gadms {args:?} should fail:\n{se}");
    assert!(o.status.code().is_some(), "killed by a signal: {se}");
    assert!(!se.contains("panicked"), "panic instead of an error:\n{se}");
    let line = se
        .lines()
        .find(|l| l.starts_with("error:"))
        .unwrap_or_else(|| panic!("no error line:\n{se}"));
    for n in needles {
        assert!(line.contains(n), "error line lacks {n:?}: {line}");
    }
    se
}

/// Tiny-preset weights (open_clip layout, f16).
pub(crate) fn weights() -> PathBuf {
    fixture("embed").join("tiny_openclip_f16.safetensors")
}

/// The synthetic CUHK-format test split packed once at 64×32 (shared by the tests).
pub(crate) fn packed_test() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("gadms-reports-pack-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        ok(&[
            "pack",
            "--format",
            "cuhk-pedes",
            "--src",
            &s(&fixture("synth-pedes")),
            "--split",
            "test",
            "--image-size",
            "64x32",
            "--out",
            &s(&dir),
        ]);
        dir
    })
}

/// The first test caption of the synthetic set, its image and its person id.
pub(crate) fn first_test_caption() -> (String, PathBuf, u64) {
    let raw = std::fs::read_to_string(fixture("synth-pedes").join("reid_raw.json")).unwrap();
    let v: serde_json::Value = serde_json::from_str(&raw).unwrap();
    let e = v
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["split"] == "test")
        .unwrap();
    (
        e["captions"][0].as_str().unwrap().to_string(),
        fixture("synth-pedes")
            .join("imgs")
            .join(e["file_path"].as_str().unwrap()),
        e["id"].as_u64().unwrap(),
    )
}

// ---------------------------------------------------------------------------------- eval

#[test]
fn eval_writes_table_json_and_sims() {
    let d = TempDir::new("eval");
    let (json, sims) = (d.join("m.json"), d.join("sims.safetensors"));
    let (out, _) = ok(&[
        "eval",
        "--weights",
        &s(&weights()),
        "--data",
        &s(packed_test()),
        "--json",
        &s(&json),
        "--save-sims",
        &s(&sims),
        "--i2t",
    ]);
    assert!(out.contains("ascending gallery index"), "{out}");
    assert!(
        out.contains("400 queries, 200 gallery images, 100 ids"),
        "{out}"
    );
    assert!(out.contains("image→text"), "{out}");
    let m: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    for k in ["r1", "r5", "r10", "map", "minp"] {
        let x = m[k].as_f64().unwrap();
        assert!((0.0..=100.0).contains(&x), "{k} = {x}");
        assert!(m["i2t"][k].as_f64().is_some());
    }
    // The saved matrix reproduces the metrics.
    let t = read_file_filtered(&sims, |k| k == "sims").unwrap();
    let sim = t.get("sims").unwrap();
    assert_eq!(sim.shape, vec![400, 200]);
    let q: Vec<u64> = read_ints(&sims, "query_pids")
        .unwrap()
        .1
        .iter()
        .map(|&x| x as u64)
        .collect();
    let g: Vec<u64> = read_ints(&sims, "gallery_pids")
        .unwrap()
        .1
        .iter()
        .map(|&x| x as u64)
        .collect();
    let r = rank_metrics(&sim.data, &q, &g).unwrap();
    assert!((r.r1 - m["r1"].as_f64().unwrap()).abs() < 1e-9);
    assert!((r.map - m["map"].as_f64().unwrap()).abs() < 1e-9);
    assert_eq!(
        t.metadata.get("gadms.magic").map(String::as_str),
        Some("gadms-sims")
    );
}

#[test]
fn eval_bench_random_runs() {
    let (out, _) = ok(&["eval", "--bench-random", "600"]);
    assert!(out.contains("counting ranking"), "{out}");
}

#[test]
fn eval_refuses_a_manifest_without_person_ids() {
    // A WebPerson-JSON pack: every caption gets its own pid, so there are no person ids.
    let d = TempDir::new("webperson");
    let src = d.join("src");
    std::fs::create_dir_all(src.join("images")).unwrap();
    let mut entries = Vec::new();
    for i in 0..3 {
        let name = format!("{i}.png");
        std::fs::copy(
            fixture("embed").join(format!("img{i}.png")),
            src.join("images").join(&name),
        )
        .unwrap();
        entries.push(serde_json::json!({ name: {"caption1": "a man in a red coat", "caption2": "a woman with a bag"} }));
    }
    std::fs::write(
        src.join("100w.json"),
        serde_json::to_string(&entries).unwrap(),
    )
    .unwrap();
    let packed = d.join("packed");
    ok(&[
        "pack",
        "--format",
        "webperson-json",
        "--src",
        &s(&src),
        "--image-size",
        "64x32",
        "--out",
        &s(&packed),
    ]);
    fails(
        &["eval", "--weights", &s(&weights()), "--data", &s(&packed)],
        &["no person ids", "webperson"],
    );
}

#[test]
fn eval_errors_on_missing_arguments_and_bad_data() {
    fails(&["eval", "--weights", &s(&weights())], &["--data"]);
    let d = TempDir::new("eval-bad");
    fails(
        &["eval", "--weights", &s(&weights()), "--data", &s(&d.0)],
        &["not a usable `gadms pack` output"],
    );
}

#[test]
fn weights_of_another_preset_are_refused() {
    let (cap, img, _) = first_test_caption();
    let w = s(&weights());
    let data = s(packed_test());
    for args in [
        vec![
            "eval",
            "--weights",
            &w,
            "--data",
            &data,
            "--preset",
            "vit-b-16",
        ],
        vec![
            "search",
            "--weights",
            &w,
            "--gallery",
            &data,
            "--query",
            &cap,
            "--no-cache",
            "--preset",
            "vit-b-16",
        ],
        vec![
            "explain",
            "--weights",
            &w,
            "--image",
            &s(&img),
            "--text",
            &cap,
            "--preset",
            "vit-b-16",
        ],
    ] {
        fails(&args, &["shape", "--preset tiny"]);
    }
}

// -------------------------------------------------------------------------------- search

pub(crate) fn search_args(gallery: &Path, query: &str, cache: &Path, html: &Path) -> Vec<String> {
    vec![
        "search".into(),
        "--weights".into(),
        s(&weights()),
        "--gallery".into(),
        s(gallery),
        "--query".into(),
        query.into(),
        "--top".into(),
        "6".into(),
        "--cache-dir".into(),
        s(cache),
        "--html".into(),
        s(html),
    ]
}

/// Structural checks of a report page: a complete document, no external resource, `n`
/// embedded images.
fn check_page(html: &str, n_images: usize) {
    assert!(html.starts_with("<!DOCTYPE html>"));
    assert!(html.trim_end().ends_with("</html>"));
    assert_eq!(html.matches("<img ").count(), n_images, "images");
    assert_eq!(
        html.matches("src=\"data:image/").count(),
        n_images,
        "embedded images"
    );
    for external in [
        "src=\"http",
        "src=\"/",
        "src=\"file:",
        "href=\"http",
        "<script",
    ] {
        assert!(!html.contains(external), "external resource {external}");
    }
    // Balanced block tags.
    for tag in ["div", "table", "p", "span"] {
        let open =
            html.matches(&format!("<{tag}>")).count() + html.matches(&format!("<{tag} ")).count();
        assert_eq!(
            open,
            html.matches(&format!("</{tag}>")).count(),
            "<{tag}> not balanced"
        );
    }
}

#[test]
fn search_packed_gallery_marks_hits_and_uses_the_cache() {
    let d = TempDir::new("search");
    let (cap, _, pid) = first_test_caption();
    let (cache, html) = (d.join("cache"), d.join("s.html"));
    let args = search_args(packed_test(), &cap, &cache, &html);
    let (out, err) = ok(&args);
    assert!(out.contains(&format!("(person id {pid})")), "{out}");
    assert!(out.contains("top 6 of 200"), "{out}");
    assert!(err.contains("encoded 200 gallery images"), "{err}");
    assert_eq!(out.lines().filter(|l| l.contains(" pid ")).count(), 6);
    let page = std::fs::read_to_string(&html).unwrap();
    check_page(&page, 6);
    assert_eq!(
        page.matches("class=\"card hit\"").count() + page.matches("class=\"card miss\"").count(),
        6
    );
    // The cache file: magic + version, then reused.
    let files: Vec<_> = std::fs::read_dir(&cache)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(files.len(), 1);
    let bytes = std::fs::read(&files[0]).unwrap();
    assert_eq!(&bytes[..8], b"GADMSEMB");
    assert_eq!(u32::from_le_bytes(bytes[8..12].try_into().unwrap()), 2);
    let (out2, err2) = ok(&args);
    assert!(err2.contains("from the cache"), "{err2}");
    assert_eq!(out, out2, "cached embeddings give the same ranking");
    // A corrupt cache is ignored and rewritten.
    std::fs::write(&files[0], b"GADMSEMB garbage").unwrap();
    let (out3, err3) = ok(&args);
    assert!(err3.contains("encoded 200"), "{err3}");
    assert_eq!(out, out3);
    // One flipped bit in the embeddings (same length): the checksum catches it, with a note.
    let mut bytes = std::fs::read(&files[0]).unwrap();
    let last = bytes.len() - 2;
    bytes[last] ^= 0x01;
    std::fs::write(&files[0], &bytes).unwrap();
    let (out4, err4) = ok(&args);
    assert!(
        err4.contains("checksum mismatch") && err4.contains("encoded 200"),
        "{err4}"
    );
    assert_eq!(out, out4);
    assert!(
        ok(&args).1.contains("from the cache"),
        "the rewritten cache is used"
    );
}

#[test]
fn search_image_folder_and_bad_queries() {
    let d = TempDir::new("folder");
    let g = d.join("gallery");
    std::fs::create_dir_all(&g).unwrap();
    for i in 0..3 {
        std::fs::copy(
            fixture("embed").join(format!("img{i}.png")),
            g.join(format!("p{i}.png")),
        )
        .unwrap();
    }
    std::fs::copy(fixture("embed").join("img3.jpg"), g.join("p3.jpg")).unwrap();
    std::fs::write(g.join("notes.txt"), "not an image").unwrap();
    let (cache, html) = (d.join("cache"), d.join("f.html"));
    let (out, _) = ok(&search_args(&g, "a man in a red coat", &cache, &html));
    assert!(out.contains("top 4 of 4"), "{out}");
    assert!(!out.contains(" pid "), "{out}");
    let page = std::fs::read_to_string(&html).unwrap();
    check_page(&page, 4);
    assert!(page.contains("data:image/jpeg;base64,"));
    assert!(!page.contains("card hit") && !page.contains("card miss"));

    // Only stopwords: a warning, still a ranking.
    let (_, err) = ok(&search_args(&g, "the of a with", &cache, &html));
    assert!(
        err.contains("warning:") && err.contains("only stopwords"),
        "{err}"
    );
    // No words at all: an error.
    fails(&search_args(&g, " ... ", &cache, &html), &["no words"]);
    // Empty gallery.
    let empty = d.join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    fails(
        &search_args(&empty, "a man", &cache, &html),
        &["empty gallery"],
    );
    fails(
        &search_args(&d.join("missing"), "a man", &cache, &html),
        &["not a directory"],
    );
}

// ------------------------------------------------------------------------------- explain

#[test]
fn explain_writes_scores_probabilities_and_page() {
    let d = TempDir::new("explain");
    let (cap, img, _) = first_test_caption();
    let (json, html) = (d.join("x.json"), d.join("x.html"));
    let (out, _) = ok(&[
        "explain",
        "--weights",
        &s(&weights()),
        "--image",
        &s(&img),
        "--text",
        &cap,
        "--json",
        &s(&json),
        "--html",
        &s(&html),
    ]);
    assert!(out.contains("p_noise"), "{out}");
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let n = v["ids"].as_array().unwrap().len();
    assert!(n > 10);
    for k in ["tokens", "scores", "p_noise", "p_info"] {
        assert_eq!(v[k].as_array().unwrap().len(), n, "{k}");
    }
    let scores: Vec<f64> = v["scores"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect();
    assert!(scores.iter().all(|s| (0.0..=1.0).contains(s)));
    assert!(
        (scores.iter().cloned().fold(0.0, f64::max) - 1.0).abs() < 1e-6,
        "min-max normalised"
    );
    let sig = |x: f64| 1.0 / (1.0 + (-x).exp());
    for (i, s) in scores.iter().enumerate() {
        let pn = v["p_noise"][i].as_f64().unwrap();
        let pi = v["p_info"][i].as_f64().unwrap();
        assert!((pn - 0.2 * sig(20.0 * ((1.0 - s) - 0.9))).abs() < 1e-6);
        assert!((pi - 0.3 * sig(20.0 * (s - 0.1))).abs() < 1e-6);
    }
    assert_eq!(v["tokens"][0], cap.split(' ').next().unwrap());
    let page = std::fs::read_to_string(&html).unwrap();
    check_page(&page, 1);
    assert_eq!(page.matches("class=\"tok\"").count(), n);

    // Only stopwords: a warning; no words: an error.
    let (_, err) = ok(&[
        "explain",
        "--weights",
        &s(&weights()),
        "--image",
        &s(&img),
        "--text",
        "the of a",
    ]);
    assert!(err.contains("only stopwords"), "{err}");
    fails(
        &[
            "explain",
            "--weights",
            &s(&weights()),
            "--image",
            &s(&img),
            "--text",
            "  ",
        ],
        &["no words"],
    );
    fails(
        &[
            "explain",
            "--weights",
            &s(&weights()),
            "--image",
            &s(&d.join("none.png")),
            "--text",
            "a man",
        ],
        &["none.png"],
    );
}

// ---------------------------------------------------------------------------------- plot

#[test]
fn plot_renders_a_real_runs_curves() {
    let d = TempDir::new("plot");
    let svg = d.join("c.svg");
    let run = fixture("runs").join("pretrain-tiny-seed0");
    let (out, _) = ok(&["plot", &s(&run), "--out", &s(&svg)]);
    assert!(out.contains("plotted 1032 steps"), "{out}");
    let text = std::fs::read_to_string(&svg).unwrap();
    assert!(text.starts_with("<svg") || text.starts_with("<?xml"));
    for label in [
        "loss_sdm",
        "loss_mtp",
        "learning rate",
        "pairs_per_s",
        "r1 (test)",
        "map (test)",
    ] {
        assert!(text.contains(label), "{label} missing from the SVG");
    }
    assert!(
        text.matches("<polyline").count() >= 4 + 10,
        "one line per series"
    );
    fails(&["plot", &s(&d.0)], &["no metrics.jsonl"]);
    fails(
        &["plot", &s(&run), "--out", &s(&d.join("c.pdf"))],
        &[".svg or .png"],
    );
    std::fs::write(d.join("metrics.jsonl"), "{\"step\": 1}\nnot json\n").unwrap();
    fails(&["plot", &s(&d.0)], &["metrics.jsonl:2"]);
}

// ------------------------------------------------------------------- rendering in Chromium

/// Fraction of pixels close to `rgb`.
fn share_of(img: &image::RgbImage, rgb: [u8; 3]) -> f64 {
    let n = img
        .pixels()
        .filter(|p| p.0.iter().zip(rgb).all(|(a, b)| a.abs_diff(b) < 24))
        .count();
    n as f64 / (img.width() * img.height()) as f64
}

#[test]
fn html_pages_render_in_headless_chromium() {
    let Some(chrome) = find_chromium() else {
        eprintln!(
            "SKIPPED: no chromium/chromium-browser/google-chrome on PATH (apt-get install chromium); the pages were only checked structurally"
        );
        return;
    };
    let d = TempDir::new("chromium");
    let (cap, img, _) = first_test_caption();
    let html = d.join("s.html");
    ok(&search_args(packed_test(), &cap, &d.join("cache"), &html));
    let shot = d.join("s.png");
    screenshot(
        &chrome,
        &std::fs::read_to_string(&html).unwrap(),
        &shot,
        (1200, 800),
    )
    .unwrap();
    let png = image::open(&shot).unwrap().into_rgb8();
    assert_eq!(png.dimensions(), (1200, 800));
    // Card borders: green #2a2 for the same person, red #d22 for others.
    let (green, red) = (
        share_of(&png, [0x22, 0xaa, 0x22]),
        share_of(&png, [0xdd, 0x22, 0x22]),
    );
    assert!(
        green + red > 0.002,
        "no green/red card borders rendered ({green}, {red})"
    );

    let xh = d.join("x.html");
    ok(&[
        "explain",
        "--weights",
        &s(&weights()),
        "--image",
        &s(&img),
        "--text",
        &cap,
        "--html",
        &s(&xh),
    ]);
    let shot = d.join("x.png");
    screenshot(
        &chrome,
        &std::fs::read_to_string(&xh).unwrap(),
        &shot,
        (1200, 800),
    )
    .unwrap();
    let png = image::open(&shot).unwrap().into_rgb8();
    // The top-scoring token is drawn on the full-score green (hsl(120, 75%, 70%)).
    assert!(
        share_of(&png, [121, 236, 121]) > 0.0003,
        "no green token background rendered"
    );
    // Not a blank page: many distinct colours.
    let distinct: std::collections::HashSet<[u8; 3]> = png.pixels().map(|p| p.0).collect();
    assert!(distinct.len() > 100);

    let plot = d.join("c.png");
    ok(&[
        "plot",
        &s(&fixture("runs").join("pretrain-tiny-seed0")),
        "--out",
        &s(&plot),
    ]);
    assert_eq!(
        image::open(&plot).unwrap().into_rgb8().dimensions(),
        (1200, 800)
    );
}

#[test]
fn search_query_pid_flag_marks_results() {
    let d = TempDir::new("qpid");
    let mut args = search_args(
        packed_test(),
        "a person in a red shirt",
        &d.join("cache"),
        &d.join("q.html"),
    );
    args.extend(["--query-pid".to_string(), "351".to_string()]);
    let (out, _) = ok(&args);
    assert!(out.contains("(person id 351)"), "{out}");
    let marks = out
        .lines()
        .filter(|l| l.ends_with('✓') || l.ends_with('✗'))
        .count();
    assert_eq!(marks, 6, "{out}");
    let page = std::fs::read_to_string(d.join("q.html")).unwrap();
    assert!(page.contains("person id 351"));
}

#[test]
fn report_helpers() {
    use gadms::report::{base64, check_query, escape, image_mime};
    assert_eq!(base64(b""), "");
    assert_eq!(base64(b"f"), "Zg==");
    assert_eq!(base64(b"fo"), "Zm8=");
    assert_eq!(base64(b"foo"), "Zm9v");
    assert_eq!(base64(b"foobar"), "Zm9vYmFy");
    assert_eq!(base64(&[0xff, 0xfe, 0x00]), "//4A");
    assert_eq!(
        escape("<a href=\"x\">&'</a>"),
        "&lt;a href=&quot;x&quot;&gt;&amp;&#39;&lt;/a&gt;"
    );
    assert_eq!(image_mime(b"\x89PNG\r\n"), "image/png");
    assert_eq!(image_mime(&[0xff, 0xd8, 0xff]), "image/jpeg");
    assert!(check_query("a man in a red coat").unwrap().is_none());
    assert!(check_query("The of A").unwrap().is_some());
    assert!(check_query("?!").is_err());
}
