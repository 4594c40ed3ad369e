//! The files beside an exported Hugging Face `CLIPModel` that make
//! `CLIPProcessor.from_pretrained(DIR)` work: the tokenizer (`vocab.json`, `merges.txt`,
//! `tokenizer_config.json`, `special_tokens_map.json`: `CLIPTokenizer`'s files, written from
//! gadms' own vocabulary, so the ids are gadms') and `preprocessor_config.json` (resize to the
//! preset's height × width, bilinear, CLIP mean/std), as transformers'
//! `models/clip/tokenization_clip.py` and `image_processing_clip.py` read them.

use anyhow::{Context, Result};
use gadms_ckpt::tensors::write_atomic;
use gadms_data::image_prep::{CLIP_MEAN, CLIP_STD};
use gadms_data::tokenizer::{CONTEXT_LEN, ClipTokenizer, EOT, MASK, SOT, VOCAB_SIZE};
use gadms_nn::ClipSpec;
use serde_json::{Value, json};
use std::path::{Path, PathBuf};

/// PIL's `BILINEAR` (transformers' `resample` code), gadms' resize filter.
const PIL_BILINEAR: u32 = 2;

/// Writes the processor files into `dir`; returns their paths.
pub fn write_processor_files(dir: &Path, spec: &ClipSpec) -> Result<Vec<PathBuf>> {
    let tok = ClipTokenizer::new().context("building the tokenizer")?;
    let files: [(&str, Vec<u8>); 5] = [
        ("vocab.json", serde_json::to_vec(&vocab_json(&tok))?),
        ("merges.txt", merges_txt(&tok).into_bytes()),
        ("tokenizer_config.json", pretty(&tokenizer_config())?),
        ("special_tokens_map.json", pretty(&special_tokens())?),
        (
            "preprocessor_config.json",
            pretty(&preprocessor_config(spec))?,
        ),
    ];
    let mut out = Vec::new();
    for (name, bytes) in files {
        let path = dir.join(name);
        write_atomic(&path, &bytes).map_err(anyhow::Error::msg)?;
        out.push(path);
    }
    Ok(out)
}

fn pretty(v: &Value) -> Result<Vec<u8>> {
    Ok(serde_json::to_vec_pretty(v)?)
}

/// `{token: id}` for all [`VOCAB_SIZE`] ids (byte-level strings, `</w>` kept).
fn vocab_json(tok: &ClipTokenizer) -> Value {
    let map: serde_json::Map<String, Value> = (0..VOCAB_SIZE as u32)
        .filter_map(|id| Some((tok.vocab_token(id)?.to_string(), json!(id))))
        .collect();
    Value::Object(map)
}

/// `#version: 0.2` and one `left right` merge per line, as CLIP's `merges.txt`; the tokenizer
/// reads lines `1..=48894`, and gadms has one merge fewer (its id holds `<|mask|>`).
fn merges_txt(tok: &ClipTokenizer) -> String {
    let mut s = String::from("#version: 0.2\n");
    for (a, b) in tok.merges() {
        s.push_str(a);
        s.push(' ');
        s.push_str(b);
        s.push('\n');
    }
    s
}

fn added(id: u32, content: &str) -> (String, Value) {
    (
        id.to_string(),
        json!({"content": content, "lstrip": false, "normalized": false, "rstrip": false,
               "single_word": false, "special": true}),
    )
}

/// Padding is `<|endoftext|>` (49407), as in OpenAI's Hugging Face CLIP files: gadms pads with
/// 0 (`!`), but declaring `!` a special token would split it off words (`shorts!`). The text
/// feature is the same either way: the attention is causal and the feature is read at the
/// first EOT.
fn tokenizer_config() -> Value {
    let decoder: serde_json::Map<String, Value> = [
        added(MASK, "<|mask|>"),
        added(SOT, "<|startoftext|>"),
        added(EOT, "<|endoftext|>"),
    ]
    .into_iter()
    .collect();
    json!({
        "tokenizer_class": "CLIPTokenizer",
        "processor_class": "CLIPProcessor",
        "model_max_length": CONTEXT_LEN,
        "bos_token": "<|startoftext|>",
        "eos_token": "<|endoftext|>",
        "unk_token": "<|endoftext|>",
        "pad_token": "<|endoftext|>",
        "mask_token": "<|mask|>",
        "errors": "replace",
        "clean_up_tokenization_spaces": false,
        "added_tokens_decoder": decoder,
    })
}

fn special_tokens() -> Value {
    json!({
        "bos_token": "<|startoftext|>",
        "eos_token": "<|endoftext|>",
        "unk_token": "<|endoftext|>",
        "pad_token": "<|endoftext|>",
        "mask_token": "<|mask|>",
    })
}

/// Resize to `image_h × image_w` (no crop), scale to [0, 1], normalise with CLIP's mean/std.
fn preprocessor_config(spec: &ClipSpec) -> Value {
    let v = &spec.vision;
    json!({
        "image_processor_type": "CLIPImageProcessor",
        "processor_class": "CLIPProcessor",
        "do_convert_rgb": true,
        "do_resize": true,
        "size": {"height": v.image_h, "width": v.image_w},
        "resample": PIL_BILINEAR,
        "do_center_crop": false,
        "crop_size": {"height": v.image_h, "width": v.image_w},
        "do_rescale": true,
        "rescale_factor": 1.0 / 255.0,
        "do_normalize": true,
        "image_mean": CLIP_MEAN,
        "image_std": CLIP_STD,
    })
}
