//! End-to-end tests of the `gadms` binary: `embed` against open_clip reference embeddings
//! (fixtures/embed, made by fixtures/embed/make.py), `tokenize`, `export` round
//! trips, `inspect`, and the error path of bad inputs (one `error:` line naming the file, no
//! panic, no output left behind).

use crate::common::{fixture, rel_err};
use gadms_ckpt::tensors::{read_file, read_file_filtered, read_ints, write_file};
use gadms_ckpt::{Array, TensorMap};
use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};

const EMBED_DIM: usize = 32;

/// Command-line arguments from strings and paths.
macro_rules! args {
    ($($x:expr),* $(,)?) => { [$(std::ffi::OsString::from($x)),*] };
}

// ------------------------------------------------------------------------------------ helpers

/// A fresh directory under the system temp dir, removed on drop (also when a test panics).
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> Self {
        static N: AtomicUsize = AtomicUsize::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let p = std::env::temp_dir().join(format!(
            "gadms-cli-{tag}-{}-{}-{nanos}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        ));
        std::fs::create_dir_all(&p).expect("create temp dir");
        TempDir(p)
    }
    fn join(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn embed_fixture(name: &str) -> PathBuf {
    fixture("embed").join(name)
}

fn weights() -> PathBuf {
    embed_fixture("tiny_openclip_f16.safetensors")
}

fn captions() -> PathBuf {
    embed_fixture("captions.txt")
}

fn parity_images() -> Vec<PathBuf> {
    (0..3)
        .map(|i| embed_fixture(&format!("img{i}.png")))
        .collect()
}

/// Runs the binary with `args`.
fn gadms(args: &[OsString]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_gadms"))
        .args(args)
        .output()
        .expect("cannot start the gadms binary")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Runs and asserts success; returns (stdout, stderr).
fn ok(args: &[OsString]) -> (String, String) {
    let out = gadms(args);
    let (so, se) = (text(&out.stdout), text(&out.stderr));
    assert!(
        out.status.success(),
        "gadms {args:?} failed ({}):\nstdout: {so}\nstderr: {se}",
        out.status
    );
    assert!(!se.contains("panicked"), "gadms {args:?} panicked:\n{se}");
    (so, se)
}

/// The paths an output `out` may leave behind: the file and its atomic-write temporaries
/// (`NAME.tmp…` siblings).
fn leftovers(out: &Path) -> Vec<PathBuf> {
    let name = out.file_name().unwrap().to_string_lossy().to_string();
    let siblings = std::fs::read_dir(out.parent().unwrap())
        .into_iter()
        .flatten()
        .flatten();
    let tmps = siblings.map(|e| e.path()).filter(|p| {
        p.file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with(&format!("{name}.tmp"))
    });
    std::iter::once(out.to_path_buf())
        .filter(|p| p.exists())
        .chain(tmps)
        .collect()
}

/// Runs and asserts the error contract: non-zero exit, stderr is exactly one line that starts
/// with `error:` and contains every string of `needles`, no panic text, and nothing at `out`
/// (nor `out.tmp`). Returns the error line.
fn fails(args: &[OsString], out: &Path, needles: &[&str]) -> String {
    let o = gadms(args);
    let (so, se) = (text(&o.stdout), text(&o.stderr));
    let ctx = format!(
        "gadms {args:?}\nstatus: {}\nstdout: {so}\nstderr: {se}",
        o.status
    );
    assert!(!o.status.success(), "expected failure\n{ctx}");
    assert!(o.status.code().is_some(), "killed by a signal\n{ctx}");
    assert!(
        !se.contains("panicked"),
        "panic instead of an error message\n{ctx}"
    );
    let lines: Vec<&str> = se.trim_end().lines().collect();
    assert_eq!(lines.len(), 1, "stderr must be exactly one line\n{ctx}");
    let line = lines[0];
    assert!(
        line.starts_with("error:"),
        "stderr must start with 'error:'\n{ctx}"
    );
    for n in needles {
        assert!(line.contains(n), "error line does not mention {n:?}\n{ctx}");
    }
    eprintln!("{line}");
    // an error chain printed with `{:#}` must not repeat a cause (e.g. an OS error shown both
    // in the message and as its `source`)
    let parts: Vec<&str> = line.split(": ").collect();
    assert!(
        !parts.windows(2).any(|w| w[0] == w[1]),
        "error message repeats itself\n{ctx}"
    );
    let left = leftovers(out);
    assert!(
        left.is_empty(),
        "output left behind after an error: {left:?}\n{ctx}"
    );
    line.to_string()
}

/// The reference embeddings (f32 keys only; `text_ids` is i64).
fn reference() -> TensorMap {
    read_file_filtered(&embed_fixture("reference.safetensors"), |k| k != "text_ids")
        .expect("read fixtures/embed/reference.safetensors")
}

fn reference_ids() -> Vec<Vec<i64>> {
    let (shape, ids) =
        read_ints(&embed_fixture("reference.safetensors"), "text_ids").expect("text_ids");
    assert_eq!(shape, vec![4, 77]);
    ids.chunks_exact(77).map(|r| r.to_vec()).collect()
}

fn get<'a>(m: &'a TensorMap, key: &str) -> &'a Array {
    m.get(key).unwrap_or_else(|| {
        panic!(
            "{} lacks '{key}' (has {:?})",
            m.origin.display(),
            m.tensors.keys()
        )
    })
}

/// Asserts equal shapes and max|a-b| / max|b| <= tol.
fn assert_rel(what: &str, got: &Array, want: &Array, tol: f64) {
    assert_eq!(got.shape, want.shape, "{what}: shape");
    let e = rel_err(&got.data, &want.data);
    eprintln!("{what}: relative error {e:.3e}");
    assert!(e <= tol, "{what}: relative error {e:.3e} > {tol:.0e}");
}

/// Every row of a [N, D] array has unit L2 norm.
fn assert_unit_rows(what: &str, a: &Array) {
    assert_eq!(a.shape.len(), 2, "{what}: rank");
    assert_eq!(a.shape[1], EMBED_DIM, "{what}: embedding width");
    for (i, row) in a.data.chunks_exact(a.shape[1]).enumerate() {
        assert!(
            row.iter().all(|x| x.is_finite()),
            "{what} row {i}: not finite"
        );
        let n = row.iter().map(|x| (x * x) as f64).sum::<f64>().sqrt();
        assert!((n - 1.0).abs() < 1e-5, "{what} row {i}: norm {n}");
    }
}

/// `gadms embed --weights W [extra…] --texts captions.txt --out OUT img0..img2`; returns the
/// output tensors and the command's stderr.
fn embed_parity_set(w: &Path, extra: &[&str], out: &Path) -> (TensorMap, String) {
    let mut args: Vec<OsString> = vec!["embed".into(), "--weights".into(), w.into()];
    args.extend(extra.iter().map(Into::into));
    args.extend([
        "--texts".into(),
        captions().into(),
        "--out".into(),
        out.into(),
    ]);
    args.extend(parity_images().into_iter().map(Into::into));
    let (so, se) = ok(&args);
    assert!(
        so.contains("3 image embeds") && so.contains("4 text embeds"),
        "stdout: {so}"
    );
    let m = read_file(out).expect("read embed output");
    (m, se)
}

/// Compares an embed output with the open_clip reference.
fn check_against_reference(m: &TensorMap) {
    let r = reference();
    assert_rel(
        "image_embeds",
        get(m, "image_embeds"),
        get(&r, "image_embeds"),
        1e-4,
    );
    assert_rel(
        "text_embeds",
        get(m, "text_embeds"),
        get(&r, "text_embeds"),
        1e-4,
    );
    assert_unit_rows("image_embeds", get(m, "image_embeds"));
    assert_unit_rows("text_embeds", get(m, "text_embeds"));
    assert_eq!(
        m.metadata.get("format").map(String::as_str),
        Some("pt"),
        "metadata: {:?}",
        m.metadata
    );
}

// ------------------------------------------------------------------------------------ embed

#[test]
fn embed_matches_open_clip_with_inferred_preset() {
    let d = TempDir::new("embed-inferred");
    let out = d.join("emb.safetensors");
    let (m, se) = embed_parity_set(&weights(), &[], &out);
    assert!(
        se.contains("preset tiny"),
        "stderr should say the inferred preset: {se}"
    );
    check_against_reference(&m);
    assert!(leftovers(&out).len() == 1, "OUT.tmp left next to OUT");
}

#[test]
fn embed_matches_open_clip_with_explicit_preset() {
    let d = TempDir::new("embed-explicit");
    let out = d.join("emb.safetensors");
    let (m, _) = embed_parity_set(&weights(), &["--preset", "tiny"], &out);
    check_against_reference(&m);
}

#[test]
fn embed_resizes_other_image_sizes() {
    let d = TempDir::new("embed-resize");
    let out = d.join("emb.safetensors");
    let jpg = embed_fixture("img3.jpg");
    let png = embed_fixture("img0.png");
    let (so, _) = ok(&args![
        "embed",
        "--weights",
        &weights(),
        "--out",
        &out,
        &jpg,
        &png
    ]);
    assert!(
        so.contains("2 image embeds") && so.contains("0 text embeds"),
        "stdout: {so}"
    );
    let m = read_file(&out).expect("read embed output");
    let img = get(&m, "image_embeds");
    assert_eq!(img.shape, vec![2, EMBED_DIM]);
    assert_unit_rows("image_embeds (jpeg + png)", img);
    assert!(m.get("text_embeds").is_none(), "no captions were given");
    // the PNG row still matches the reference (the resized JPEG does not disturb it)
    let r = reference();
    let want = &get(&r, "image_embeds").data[..EMBED_DIM];
    let e = rel_err(&img.data[EMBED_DIM..], want);
    assert!(
        e <= 1e-4,
        "img0 next to a resized JPEG: relative error {e:.3e}"
    );
    // and the JPEG's embedding is its own
    assert!(
        rel_err(&img.data[..EMBED_DIM], want) > 1e-3,
        "JPEG embedding equals img0's"
    );
}

// ------------------------------------------------------------------------------------ tokenize

#[test]
fn tokenize_prints_open_clip_ids() {
    let (so, _) = ok(&args!["tokenize", "--texts", &captions()]);
    let rows: Vec<Vec<i64>> = so
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            serde_json::from_str(l)
                .unwrap_or_else(|e| panic!("not a JSON array of ints: {l:?}: {e}"))
        })
        .collect();
    assert_eq!(rows.len(), 4, "one JSON array per caption:\n{so}");
    assert_eq!(rows, reference_ids());
}

// ------------------------------------------------------------------------------------ export

#[test]
fn export_open_clip_round_trips() {
    let d = TempDir::new("export-oc");
    let base_out = d.join("base.safetensors");
    let (base, _) = embed_parity_set(&weights(), &[], &base_out);

    let dir = d.join("oc");
    let (so, _) = ok(&args![
        "export",
        "--weights",
        &weights(),
        "--format",
        "open-clip",
        "--out",
        &dir
    ]);
    let w = dir.join("open_clip_model.safetensors");
    let c = dir.join("open_clip_config.json");
    assert!(w.is_file() && c.is_file(), "export wrote: {so}");

    let cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&c).expect("read config"))
            .expect("config is JSON");
    let mc = &cfg["model_cfg"];
    assert_eq!(mc["embed_dim"], 32, "{cfg}");
    assert_eq!(mc["quick_gelu"], true, "{cfg}");
    assert_eq!(
        mc["vision_cfg"]["image_size"],
        serde_json::json!([64, 32]),
        "{cfg}"
    );
    assert_eq!(mc["vision_cfg"]["patch_size"], 16, "{cfg}");
    assert_eq!(mc["vision_cfg"]["width"], 64, "{cfg}");
    assert_eq!(mc["vision_cfg"]["layers"], 2, "{cfg}");
    assert_eq!(mc["vision_cfg"]["head_width"], 32, "{cfg}");
    assert_eq!(mc["text_cfg"]["vocab_size"], 49408, "{cfg}");
    assert_eq!(mc["text_cfg"]["context_length"], 77, "{cfg}");
    assert_eq!(mc["text_cfg"]["width"], 64, "{cfg}");
    assert_eq!(mc["text_cfg"]["heads"], 2, "{cfg}");
    assert_eq!(mc["text_cfg"]["layers"], 2, "{cfg}");
    assert!(cfg["preprocess_cfg"]["mean"].is_array(), "{cfg}");
    assert!(cfg["preprocess_cfg"]["std"].is_array(), "{cfg}");

    let exported = read_file(&w).expect("read export");
    assert_eq!(
        exported.metadata.get("format").map(String::as_str),
        Some("pt")
    );
    assert!(exported.tensors.contains_key("visual.conv1.weight"));
    assert!(exported.tensors.contains_key("token_embedding.weight"));
    assert_eq!(
        get(&exported, "visual.conv1.weight").shape,
        vec![64, 3, 16, 16]
    );

    let (again, _) = embed_parity_set(&w, &[], &d.join("again.safetensors"));
    for k in ["image_embeds", "text_embeds"] {
        assert_rel(
            &format!("open-clip export {k}"),
            get(&again, k),
            get(&base, k),
            1e-6,
        );
    }
}

#[test]
fn export_hf_round_trips_text() {
    let d = TempDir::new("export-hf");
    let base_out = d.join("base.safetensors");
    let (base, _) = embed_parity_set(&weights(), &[], &base_out);

    let dir = d.join("hf");
    let (so, se) = ok(&args![
        "export",
        "--weights",
        &weights(),
        "--format",
        "hf",
        "--out",
        &dir
    ]);
    assert!(
        se.contains("note:") && se.contains("square") && se.contains("4x2") && se.contains("4x4"),
        "export hf must note the 4x2 -> 4x4 square-grid resample; stderr: {se}"
    );
    let w = dir.join("model.safetensors");
    let c = dir.join("config.json");
    assert!(w.is_file() && c.is_file(), "export wrote: {so}");

    let cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&c).expect("read config"))
            .expect("config is JSON");
    assert_eq!(cfg["model_type"], "clip", "{cfg}");
    assert_eq!(
        cfg["architectures"],
        serde_json::json!(["CLIPModel"]),
        "{cfg}"
    );
    assert_eq!(cfg["projection_dim"], 32, "{cfg}");
    let (t, v) = (&cfg["text_config"], &cfg["vision_config"]);
    assert_eq!(t["vocab_size"], 49408, "{cfg}");
    assert_eq!(t["hidden_size"], 64, "{cfg}");
    assert_eq!(t["intermediate_size"], 256, "{cfg}");
    assert_eq!(t["num_hidden_layers"], 2, "{cfg}");
    assert_eq!(t["num_attention_heads"], 2, "{cfg}");
    assert_eq!(t["max_position_embeddings"], 77, "{cfg}");
    assert_eq!(t["hidden_act"], "quick_gelu", "{cfg}");
    assert_eq!(v["hidden_size"], 64, "{cfg}");
    assert_eq!(v["patch_size"], 16, "{cfg}");
    assert_eq!(v["image_size"], 64, "{cfg}");
    assert_eq!(v["num_hidden_layers"], 2, "{cfg}");
    assert_eq!(v["hidden_act"], "quick_gelu", "{cfg}");

    let exported = read_file(&w).expect("read export");
    assert!(
        exported
            .tensors
            .contains_key("text_model.embeddings.token_embedding.weight")
    );
    assert_eq!(
        get(
            &exported,
            "vision_model.embeddings.position_embedding.weight"
        )
        .shape,
        vec![17, 64],
        "4x4 grid + CLS"
    );

    let (again, se) = embed_parity_set(&w, &[], &d.join("again.safetensors"));
    assert!(se.contains("hf"), "the HF layout should be reported: {se}");
    assert_rel(
        "hf export text_embeds",
        get(&again, "text_embeds"),
        get(&base, "text_embeds"),
        1e-6,
    );
    // image embeddings went through the 4x2 -> 4x4 -> 4x2 grid resample: only sanity checks
    let img = get(&again, "image_embeds");
    assert_eq!(img.shape, vec![3, EMBED_DIM]);
    assert_unit_rows("hf export image_embeds", img);
}

// ------------------------------------------------------------------------------------ inspect

#[test]
fn inspect_reports_layout_preset_and_parameters() {
    let (so, _) = ok(&args!["inspect", &weights()]);
    assert!(so.contains("openai/open_clip"), "layout: {so}");
    assert!(
        so.lines()
            .any(|l| l.starts_with("preset:") && l.split_whitespace().nth(1) == Some("tiny")),
        "preset: {so}"
    );
    // The file holds 3 421 249 scalars: the model's 3 421 248 plus open_clip's logit_scale
    // (GA-DMS' temperature is fixed). Either count is acceptable.
    let file = read_file(&weights()).expect("fixture");
    let total = file.numel();
    let model = total - file.get("logit_scale").map_or(0, Array::numel);
    let line = so
        .lines()
        .find(|l| l.starts_with("parameters:"))
        .unwrap_or_else(|| panic!("no parameters line: {so}"));
    let n: usize = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("cannot parse {line:?}"));
    assert!(
        n == model || n == total,
        "parameters {n}, expected {model} (or {total})"
    );
    assert!(so.contains("F16"), "dtypes: {so}");
}

mod errors;
mod finite;
mod hf_export;
mod pytorch;
