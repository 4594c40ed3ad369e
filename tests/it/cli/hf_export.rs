//! `gadms export --format hf` writes the files `CLIPProcessor.from_pretrained` reads, from
//! gadms' own tokenizer: every vocabulary string maps to gadms' id, the merges are gadms' in
//! rank order, the special tokens sit at gadms' ids, and the image processor resizes to the
//! preset's size with CLIP's mean/std. (scripts/check_hf_export.py runs transformers on such a
//! folder: ids equal gadms' up to EOT, text features within 1.1e-7, image cosine 1.0.)

use super::{TempDir, ok, weights};
use gadms_data::image_prep::{CLIP_MEAN, CLIP_STD};
use gadms_data::tokenizer::{ClipTokenizer, EOT, MASK, SOT, VOCAB_SIZE};

fn json(path: &std::path::Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

#[test]
fn export_hf_writes_a_processor_with_gadms_tokens() {
    let d = TempDir::new("export-hf-processor");
    let dir = d.join("hf");
    ok(&args![
        "export",
        "--weights",
        &weights(),
        "--format",
        "hf",
        "--out",
        &dir
    ]);
    let tok = ClipTokenizer::new().unwrap();

    let vocab = json(&dir.join("vocab.json"));
    let vocab = vocab.as_object().unwrap();
    assert_eq!(vocab.len(), VOCAB_SIZE);
    for id in 0..VOCAB_SIZE as u32 {
        let s = tok.vocab_token(id).unwrap();
        assert_eq!(vocab[s], id, "{s}");
    }
    let caption = tok
        .encode("a woman in a red coat carrying a black backpack")
        .unwrap();
    for &id in caption.iter().take_while(|&&id| id != 0) {
        assert_eq!(vocab[tok.vocab_token(id).unwrap()], id);
    }
    assert_eq!(vocab["<|mask|>"], MASK);
    assert_eq!(vocab["<|startoftext|>"], SOT);
    assert_eq!(vocab["<|endoftext|>"], EOT);

    let merges = std::fs::read_to_string(dir.join("merges.txt")).unwrap();
    let mut lines = merges.lines();
    assert_eq!(lines.next(), Some("#version: 0.2"));
    let got: Vec<&str> = lines.collect();
    assert_eq!(got.len(), tok.merges().len());
    for (line, (a, b)) in got.iter().zip(tok.merges()) {
        assert_eq!(*line, format!("{a} {b}"));
    }

    let cfg = json(&dir.join("tokenizer_config.json"));
    assert_eq!(cfg["tokenizer_class"], "CLIPTokenizer");
    assert_eq!(cfg["model_max_length"], 77);
    assert_eq!(
        cfg["added_tokens_decoder"][MASK.to_string()]["content"],
        "<|mask|>"
    );
    let special = json(&dir.join("special_tokens_map.json"));
    assert_eq!(special["bos_token"], "<|startoftext|>");

    let pre = json(&dir.join("preprocessor_config.json"));
    assert_eq!(pre["size"], serde_json::json!({"height": 64, "width": 32}));
    assert_eq!(pre["do_center_crop"], false);
    for c in 0..3 {
        assert!((pre["image_mean"][c].as_f64().unwrap() - CLIP_MEAN[c] as f64).abs() < 1e-7);
        assert!((pre["image_std"][c].as_f64().unwrap() - CLIP_STD[c] as f64).abs() < 1e-7);
    }
}

/// A folder stands for the weight file in it: an open_clip export folder and a Hugging Face
/// folder embed exactly as the file they were exported from (text; the HF grid is square), and a
/// directory without weights names what it looked for.
#[test]
fn weight_folders_stand_for_their_files() {
    let d = TempDir::new("weight-folders");
    let caps = super::captions();
    let embed = |w: &std::path::Path, out: &std::path::Path| {
        ok(&args![
            "embed",
            "--weights",
            w,
            "--texts",
            &caps,
            "--out",
            out
        ]);
        gadms_ckpt::tensors::read_file(out).unwrap()
    };
    let base = embed(&weights(), &d.join("base.safetensors"));
    for format in ["open-clip", "hf"] {
        let dir = d.join(format);
        ok(&args![
            "export",
            "--weights",
            &weights(),
            "--format",
            format,
            "--out",
            &dir
        ]);
        let got = embed(&dir, &d.join(&format!("{format}.safetensors")));
        let (a, b) = (
            &got.get("text_embeds").unwrap().data,
            &base.get("text_embeds").unwrap().data,
        );
        let worst = a
            .iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs())
            .fold(0f32, f32::max);
        assert!(worst < 1e-5, "{format}: {worst}");
    }
    let empty = d.join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let err = super::fails(
        &args![
            "embed",
            "--weights",
            &empty,
            "--texts",
            &caps,
            "--out",
            d.join("x.safetensors")
        ],
        &d.join("x.safetensors"),
        &["a directory without weights", "open_clip_model.safetensors"],
    );
    assert!(err.contains("best.safetensors"), "{err}");
}
