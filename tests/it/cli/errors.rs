//! `gadms embed` / `export` / `inspect` on bad input: one `error:` line naming the problem, no
//! panic, nothing written (the helpers are the parent module's).

use super::*;

// ------------------------------------------------------------------------------------ bad input

/// `embed --weights W --texts captions.txt --out OUT img0.png` with the given weights.
fn embed_args(w: &Path, out: &Path, extra: &[&str]) -> Vec<OsString> {
    let mut a: Vec<OsString> = vec!["embed".into(), "--weights".into(), w.into()];
    a.extend(extra.iter().map(Into::into));
    a.extend([
        "--texts".into(),
        captions().into(),
        "--out".into(),
        out.into(),
        embed_fixture("img0.png").into(),
    ]);
    a
}

/// The fixture read as f32 (so it can be changed and re-written).
fn fixture_map() -> TensorMap {
    read_file(&weights()).expect("fixture weights")
}

fn meta_pt() -> BTreeMap<String, String> {
    BTreeMap::new() // write_file adds {"format": "pt"}
}

/// Writes a safetensors file by hand: tensors in the given order, each (name, dtype, shape,
/// little-endian bytes). Used for dtypes `write_file` does not write (I64).
pub(super) fn write_raw_safetensors(path: &Path, tensors: &[(String, &str, Vec<usize>, Vec<u8>)]) {
    let mut header = String::from(r#"{"__metadata__":{"format":"pt"}"#);
    let mut off = 0usize;
    for (name, dtype, shape, bytes) in tensors {
        let shape: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
        header.push_str(&format!(
            r#","{name}":{{"dtype":"{dtype}","shape":[{}],"data_offsets":[{off},{}]}}"#,
            shape.join(","),
            off + bytes.len()
        ));
        off += bytes.len();
    }
    header.push('}');
    while header.len() % 8 != 0 {
        header.push(' ');
    }
    let mut data = (header.len() as u64).to_le_bytes().to_vec();
    data.extend_from_slice(header.as_bytes());
    for (_, _, _, bytes) in tensors {
        data.extend_from_slice(bytes);
    }
    std::fs::write(path, data).expect("write raw safetensors");
}

fn path_str(p: &Path) -> String {
    p.display().to_string()
}

#[test]
fn error_missing_weight_file() {
    let d = TempDir::new("err-missing-w");
    let w = d.join("no_such_weights.safetensors");
    let out = d.join("out.safetensors");
    fails(
        &embed_args(&w, &out, &[]),
        &out,
        &["no_such_weights.safetensors"],
    );
}

#[test]
fn error_weight_file_not_safetensors() {
    let d = TempDir::new("err-garbage-w");
    let w = d.join("garbage.safetensors");
    let garbage: Vec<u8> = (0..4096u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    std::fs::write(&w, garbage).unwrap();
    let out = d.join("out.safetensors");
    fails(&embed_args(&w, &out, &[]), &out, &[&path_str(&w)]);
}

#[test]
fn error_unknown_layout() {
    let d = TempDir::new("err-layout");
    let w = d.join("unknown_keys.safetensors");
    let mut m = TensorMap::default();
    m.insert("encoder.foo.weight", Array::new(vec![4, 2], vec![0.5; 8]));
    m.insert("encoder.bar.bias", Array::new(vec![4], vec![0.1; 4]));
    write_file(&w, &m, &meta_pt()).unwrap();
    let out = d.join("out.safetensors");
    fails(
        &embed_args(&w, &out, &[]),
        &out,
        &[&path_str(&w), "encoder.bar.bias"],
    );
}

#[test]
fn error_wrong_shape_names_key_and_shapes() {
    let d = TempDir::new("err-shape");
    let w = d.join("bad_shape.safetensors");
    let mut m = fixture_map();
    let a = m
        .tensors
        .get_mut("ln_final.weight")
        .expect("fixture has ln_final.weight");
    a.data.truncate(63);
    a.shape = vec![63];
    write_file(&w, &m, &meta_pt()).unwrap();
    let out = d.join("out.safetensors");
    let line = fails(
        &embed_args(&w, &out, &[]),
        &out,
        &[&path_str(&w), "ln_final.weight", "[63]", "[64]"],
    );
    // the file is a tiny model and tiny was chosen: advice to pass `--preset tiny` instead of
    // tiny contradicts itself
    assert!(
        !line.contains("not 'tiny'"),
        "self-contradictory preset hint for a damaged tiny file: {line}"
    );
}

#[test]
fn error_integer_weight_names_key_and_dtype() {
    let d = TempDir::new("err-dtype");
    let w = d.join("int_weight.safetensors");
    let m = fixture_map();
    let tensors: Vec<(String, &str, Vec<usize>, Vec<u8>)> = m
        .tensors
        .iter()
        .map(|(k, a)| {
            if k == "ln_final.weight" {
                let b = a
                    .data
                    .iter()
                    .flat_map(|&x| (x.round() as i64).to_le_bytes())
                    .collect();
                (k.clone(), "I64", a.shape.clone(), b)
            } else {
                let b = a.data.iter().flat_map(|x| x.to_le_bytes()).collect();
                (k.clone(), "F32", a.shape.clone(), b)
            }
        })
        .collect();
    write_raw_safetensors(&w, &tensors);
    let out = d.join("out.safetensors");
    fails(
        &embed_args(&w, &out, &[]),
        &out,
        &[&path_str(&w), "ln_final.weight", "I64"],
    );
}

#[test]
fn error_wrong_preset_suggests_tiny() {
    let d = TempDir::new("err-preset");
    let out = d.join("out.safetensors");
    fails(
        &embed_args(&weights(), &out, &["--preset", "vit-b-16"]),
        &out,
        &["tiny_openclip_f16.safetensors", "shape", "--preset tiny"],
    );
}

#[test]
fn error_corrupt_image() {
    let d = TempDir::new("err-bad-img");
    let img = d.join("broken_picture.png");
    std::fs::write(
        &img,
        b"\x89PNG this is not really a png image, just some bytes",
    )
    .unwrap();
    let out = d.join("out.safetensors");
    let args = args![
        "embed",
        "--weights",
        weights(),
        "--out",
        &out,
        embed_fixture("img0.png"),
        &img,
    ];
    fails(&args, &out, &[&path_str(&img)]);
}

#[test]
fn error_missing_image() {
    let d = TempDir::new("err-no-img");
    let img = d.join("no_such_image.jpg");
    let out = d.join("out.safetensors");
    let args = args![
        "embed",
        "--weights",
        weights(),
        "--texts",
        captions(),
        "--out",
        &out,
        &img,
    ];
    fails(&args, &out, &[&path_str(&img)]);
}

fn embed_texts_args(texts: &Path, out: &Path) -> Vec<OsString> {
    Vec::from(args![
        "embed",
        "--weights",
        weights(),
        "--texts",
        texts,
        "--out",
        out,
    ])
}

#[test]
fn error_empty_caption_file() {
    let d = TempDir::new("err-empty-caps");
    let caps = d.join("empty_captions.txt");
    std::fs::write(&caps, "").unwrap();
    let out = d.join("out.safetensors");
    fails(
        &embed_texts_args(&caps, &out),
        &out,
        &[&path_str(&caps), "empty"],
    );
}

#[test]
fn error_blank_caption_line_names_line() {
    let d = TempDir::new("err-blank-line");
    let caps = d.join("gappy_captions.txt");
    std::fs::write(&caps, "a man in a red shirt\n\na woman in a blue dress\n").unwrap();
    let out = d.join("out.safetensors");
    fails(
        &embed_texts_args(&caps, &out),
        &out,
        &[&format!("{}:2", path_str(&caps))],
    );
}

#[test]
fn error_nothing_to_embed() {
    let d = TempDir::new("err-nothing");
    let out = d.join("out.safetensors");
    let args = args!["embed", "--weights", weights(), "--out", &out];
    fails(&args, &out, &[]);
}

#[test]
fn error_export_unknown_format() {
    let d = TempDir::new("err-format");
    let dir = d.join("export_dir");
    let args = args![
        "export",
        "--weights",
        weights(),
        "--format",
        "onnx",
        "--out",
        &dir,
    ];
    fails(&args, &dir, &["onnx"]);
}

/// A tensor the loader renames or reshapes on its way into the model (OpenAI's fused q/k/v
/// projection, the 4-d patch convolution, a Hugging Face projection, which is transposed):
/// the error names it as the file does and prints its shape in the file, then the model's shape
/// in the file's layout, so the two can be compared.
#[test]
fn error_wrong_shape_prints_the_files_shape_then_the_models() {
    let d = TempDir::new("err-shape-file");
    let out = d.join("out.safetensors");
    let reshaped = |name: &str, m: &mut TensorMap, key: &str, shape: Vec<usize>| {
        let a = m.tensors.get_mut(key).unwrap_or_else(|| panic!("no {key}"));
        a.data.resize(shape.iter().product(), 0.25);
        a.shape = shape;
        let w = d.join(name);
        write_file(&w, m, &meta_pt()).unwrap();
        w
    };
    let cases = [
        (
            "transformer.resblocks.1.attn.in_proj_weight",
            vec![189, 63],
            "'transformer.resblocks.1.attn.in_proj_weight' has shape [189, 63] in the file, but \
             the model expects [192, 64]",
        ),
        (
            "visual.conv1.weight",
            vec![64, 3, 8, 8],
            "'visual.conv1.weight' has shape [64, 3, 8, 8] in the file, but the model expects \
             [64, 3, 16, 16]",
        ),
    ];
    for (i, (key, shape, needle)) in cases.into_iter().enumerate() {
        let w = reshaped(
            &format!("openai{i}.safetensors"),
            &mut fixture_map(),
            key,
            shape,
        );
        fails(
            &embed_args(&w, &out, &["--preset", "tiny"]),
            &out,
            &[&path_str(&w), needle],
        );
    }
    // A fused projection that is not three stacked ones: its form, not an empty "[]" shape.
    let w = reshaped(
        "bias.safetensors",
        &mut fixture_map(),
        "transformer.resblocks.1.attn.in_proj_bias",
        vec![190],
    );
    let line = fails(
        &embed_args(&w, &out, &["--preset", "tiny"]),
        &out,
        &["'transformer.resblocks.1.attn.in_proj_bias' has shape [190], not of the form [3W]"],
    );
    assert!(!line.contains("[]"), "{line}");
    // Hugging Face layout: text_projection.weight is [embed, width] in the file.
    let (_, native) = gadms_ckpt::layout::to_native(fixture_map()).unwrap();
    let mut hf = gadms_ckpt::layout::native_to_hf(&native, 16, 1.0);
    assert_eq!(hf.tensors["text_projection.weight"].shape, vec![32, 64]);
    let w = reshaped(
        "hf.safetensors",
        &mut hf,
        "text_projection.weight",
        vec![32, 63],
    );
    fails(
        &embed_args(&w, &out, &["--preset", "tiny"]),
        &out,
        &[
            "'text_projection.weight' has shape [32, 63] in the file, but the model expects [32, 64]",
        ],
    );
}
