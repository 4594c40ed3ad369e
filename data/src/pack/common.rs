//! Pieces every format shares: the item a source yields, image and caption preparation, the
//! reject record, the chunk sidecar, and a streaming reader for top-level JSON lists.

use super::{ChunkKey, PackError, PackOptions};
use crate::shard::{Fnv64, ShardInfo};
use crate::tokenizer::{CONTEXT_LEN, ClipTokenizer, EOT, TokenIds, TokenizerError};
use image::ImageEncoder;
use image::imageops::FilterType;
use serde::de::{SeqAccess, Visitor};
use serde::{Deserialize, Deserializer as _, Serialize};
use std::path::{Path, PathBuf};

/// One skipped row, image or caption, as written to `rejects.jsonl`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reject {
    /// The source file (relative to `--src`: `reid_raw.json`, `data/train-00000-of-00002.parquet`).
    pub source: String,
    /// Row index in that file (0-based; the JSON list index or the parquet row).
    pub row: u64,
    /// The image's path as given by the source, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// The caption's index within its image, when only that caption was skipped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub caption_idx: Option<u32>,
    /// Why it was skipped.
    pub reason: String,
}

/// A caption of a source image, with the pid it gets.
#[derive(Clone, Debug)]
pub(crate) struct CaptionIn {
    pub idx: u32,
    pub text: String,
    pub pid: u64,
}

/// Where an image's encoded bytes come from.
#[derive(Clone, Debug)]
pub(crate) enum ImageSource {
    /// A file on disk, `rel` (as the dataset file names it) under the image root `root`; read
    /// in the worker by [`read_confined`].
    File { root: PathBuf, rel: String },
    /// Bytes embedded in the source (parquet).
    Bytes(Vec<u8>),
}

/// One source image and its captions.
#[derive(Clone, Debug)]
pub(crate) struct RawItem {
    pub source: String,
    pub row: u64,
    pub path: String,
    pub image: ImageSource,
    pub image_id: u64,
    pub captions: Vec<CaptionIn>,
}

/// What a source yields for each of its images, in order.
pub(crate) enum Item {
    /// A usable row.
    Ok(RawItem),
    /// A row rejected while reading (e.g. a null parquet field).
    Rejected(Reject),
}

/// A source of images: indexed up front, read chunk by chunk.
pub(crate) trait Source: Sync {
    /// Number of source images (the unit of chunking).
    fn len(&self) -> u64;
    /// A fingerprint of the source content (a changed source invalidates finished chunks).
    fn fingerprint(&self) -> String;
    /// Rows rejected while indexing (they are in no chunk).
    fn early_rejects(&self) -> &[Reject];
    /// Streams images `[first, end)` in order into `sink`.
    fn read(
        &self,
        first: u64,
        end: u64,
        sink: &mut dyn FnMut(Item) -> Result<(), PackError>,
    ) -> Result<(), PackError>;
}

/// A caption ready to write.
pub(crate) struct SampleOut {
    pub idx: u32,
    pub text: String,
    pub pid: u64,
    pub ids: TokenIds,
}

/// An item after decoding, resizing, re-encoding and tokenizing.
pub(crate) struct Prepared {
    pub path: String,
    pub image_id: u64,
    /// The re-encoded image; `None` when the image or all its captions were rejected.
    pub image: Option<Vec<u8>>,
    pub samples: Vec<SampleOut>,
    pub truncated: u64,
    pub rejects: Vec<Reject>,
}

/// A finished chunk, as stored in its sidecar `part-NNNNN.json`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct ChunkRecord {
    pub key: ChunkKey,
    pub info: ShardInfo,
    pub images: u64,
    pub truncated: u64,
    pub rejects: Vec<Reject>,
}

/// Tokenizes the captions, then loads, resizes and re-encodes the image.
pub(crate) fn prepare(item: Item, tok: &ClipTokenizer, opts: &PackOptions) -> Prepared {
    let mut item = match item {
        Item::Ok(it) => it,
        Item::Rejected(r) => {
            return Prepared {
                path: r.path.clone().unwrap_or_default(),
                image_id: 0,
                image: None,
                samples: Vec::new(),
                truncated: 0,
                rejects: vec![r],
            };
        }
    };
    let reject = |caption_idx: Option<u32>, reason: String| Reject {
        source: item.source.clone(),
        row: item.row,
        path: Some(item.path.clone()),
        caption_idx,
        reason,
    };
    let mut rejects = Vec::new();
    let mut samples = Vec::new();
    let mut truncated = 0;
    for c in &item.captions {
        if c.text.trim().is_empty() {
            rejects.push(reject(Some(c.idx), "empty caption".into()));
            continue;
        }
        match tok.encode(&c.text) {
            Ok(ids) => {
                // encode fills the last slot only for ≥ 75 pieces; only then count exactly.
                if ids[CONTEXT_LEN - 1] == EOT && tok.token_count(&c.text) > CONTEXT_LEN {
                    truncated += 1;
                }
                samples.push(SampleOut {
                    idx: c.idx,
                    text: c.text.clone(),
                    pid: c.pid,
                    ids,
                });
            }
            Err(TokenizerError::EmptyCaption { .. }) => rejects.push(reject(
                Some(c.idx),
                "empty caption (no words after clean-up)".into(),
            )),
            Err(e) => rejects.push(reject(
                Some(c.idx),
                format!("caption cannot be tokenized: {e}"),
            )),
        }
    }
    let mut image = None;
    if !samples.is_empty() {
        let source = std::mem::replace(&mut item.image, ImageSource::Bytes(Vec::new()));
        let bytes = match source {
            ImageSource::File { root, rel } => read_confined(&root, &rel, opts.follow_symlinks),
            ImageSource::Bytes(b) => Ok(b),
        };
        match bytes.and_then(|b| {
            reencode(&b, opts.image_h, opts.image_w, opts.lossless)
                .map_err(|e| format!("corrupt image: {e}"))
        }) {
            Ok(enc) => image = Some(enc),
            Err(reason) => {
                rejects.push(reject(None, reason));
                samples.clear();
                truncated = 0;
            }
        }
    }
    Prepared {
        path: item.path,
        image_id: item.image_id,
        image,
        samples,
        truncated,
        rejects,
    }
}

/// Decodes an image, converts it to RGB, resizes it to `h`×`w` (bilinear `Triangle`, as
/// [`crate::image_prep`]; no resize when it already has that size) and encodes it as JPEG
/// quality 95, or PNG when `lossless`.
pub fn reencode(bytes: &[u8], h: u32, w: u32, lossless: bool) -> Result<Vec<u8>, String> {
    let img = image::load_from_memory(bytes).map_err(|e| e.to_string())?;
    let rgb = img.to_rgb8();
    let rgb = if rgb.dimensions() == (w, h) {
        rgb
    } else {
        image::imageops::resize(&rgb, w, h, FilterType::Triangle)
    };
    let mut out = Vec::new();
    let res = if lossless {
        image::codecs::png::PngEncoder::new(&mut out).write_image(
            rgb.as_raw(),
            w,
            h,
            image::ExtendedColorType::Rgb8,
        )
    } else {
        image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 95).write_image(
            rgb.as_raw(),
            w,
            h,
            image::ExtendedColorType::Rgb8,
        )
    };
    res.map_err(|e| format!("cannot re-encode: {e}"))?;
    Ok(out)
}

/// The largest image file `pack` reads (a larger one is rejected before reading).
pub const MAX_IMAGE_BYTES: u64 = 64 << 20;

/// Reads the image `rel` under `root`. `rel` must be a relative path that stays inside `root`
/// (no `..`, not absolute; checked on the text before the file system is touched, so a reject
/// says nothing about files outside), it must resolve (symbolic links followed) to a regular
/// file still inside `root` (anywhere with `follow_symlinks`), and be at most
/// [`MAX_IMAGE_BYTES`]. The error is the reject reason.
pub(crate) fn read_confined(
    root: &Path,
    rel: &str,
    follow_symlinks: bool,
) -> Result<Vec<u8>, String> {
    use std::path::Component;
    let escapes = Path::new(rel)
        .components()
        .any(|c| !matches!(c, Component::Normal(_) | Component::CurDir));
    if rel.is_empty() || escapes {
        return Err(format!("image path '{rel}' is outside the dataset root"));
    }
    let path = root.join(rel);
    let outside = || format!("image path '{rel}' is outside the dataset root");
    let real = match path.canonicalize() {
        Ok(p) => p,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(format!("missing image: {} not found", path.display()));
        }
        Err(e) => return Err(format!("unreadable image: {}: {e}", path.display())),
    };
    let real_root = root.canonicalize().map_err(|_| outside())?;
    if !follow_symlinks && !real.starts_with(&real_root) {
        return Err(outside());
    }
    let meta = std::fs::metadata(&real)
        .map_err(|e| format!("unreadable image: {}: {e}", path.display()))?;
    if !meta.is_file() {
        return Err(format!("image {} is not a regular file", path.display()));
    }
    if meta.len() > MAX_IMAGE_BYTES {
        return Err(format!(
            "image {} is {} bytes, over the {MAX_IMAGE_BYTES}-byte limit",
            path.display(),
            meta.len()
        ));
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    std::io::Read::read_to_end(
        &mut std::io::Read::take(
            std::fs::File::open(&real)
                .map_err(|e| format!("unreadable image: {}: {e}", path.display()))?,
            MAX_IMAGE_BYTES + 1,
        ),
        &mut bytes,
    )
    .map_err(|e| format!("unreadable image: {}: {e}", path.display()))?;
    if bytes.len() as u64 > MAX_IMAGE_BYTES {
        return Err(format!(
            "image {} grew past the size limit while read",
            path.display()
        ));
    }
    Ok(bytes)
}

/// Reads a file whole, naming it on failure.
pub(crate) fn read_file(path: &Path, what: &str) -> Result<Vec<u8>, PackError> {
    std::fs::read(path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            PackError::source(path, format!("{what} not found"))
        } else {
            PackError::io(path, &format!("cannot read {what}"), e)
        }
    })
}

/// FNV-1a 64 of bytes, hex (the fingerprint of a JSON source).
pub(crate) fn fnv_hex(bytes: &[u8]) -> String {
    let mut h = Fnv64::default();
    h.update(bytes);
    h.hex()
}

/// Resolves `--src` for a JSON format: a file is taken as is (its directory holds the images);
/// a directory must hold `default_name`, or else exactly one `*.json` when `default_name` is
/// `None`. Returns (json file, directory).
pub(crate) fn resolve_json(
    src: &Path,
    default_name: Option<&str>,
) -> Result<(PathBuf, PathBuf), PackError> {
    if src.is_file() {
        let dir = src
            .parent()
            .map(Path::to_path_buf)
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or_else(|| PathBuf::from("."));
        return Ok((src.to_path_buf(), dir));
    }
    if !src.is_dir() {
        return Err(PackError::source(src, "source not found"));
    }
    if let Some(name) = default_name {
        let f = src.join(name);
        if !f.is_file() {
            return Err(PackError::source(
                &f,
                format!(
                    "{name} not found in {} (pass --src as the JSON file or its directory)",
                    src.display()
                ),
            ));
        }
        return Ok((f, src.to_path_buf()));
    }
    let mut jsons: Vec<PathBuf> = std::fs::read_dir(src)
        .map_err(|e| PackError::io(src, "cannot list directory", e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file() && p.extension().is_some_and(|x| x == "json"))
        .collect();
    jsons.sort();
    match jsons.len() {
        1 => Ok((jsons.remove(0), src.to_path_buf())),
        0 => Err(PackError::source(
            src,
            "no .json file here; pass --src as the caption JSON file",
        )),
        _ => Err(PackError::source(
            src,
            format!(
                "several .json files here ({}); pass --src as the caption JSON file",
                jsons
                    .iter()
                    .map(|p| p.file_name().unwrap_or_default().to_string_lossy())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        )),
    }
}

/// Checks that the image folder exists (a missing `imgs/` is a setup error, not N rejects).
pub(crate) fn require_dir(dir: &Path, hint: &str) -> Result<(), PackError> {
    if dir.is_dir() {
        Ok(())
    } else {
        Err(PackError::source(
            dir,
            format!("image folder not found ({hint})"),
        ))
    }
}

/// Streams the elements of a top-level JSON list to `f(row, value)` without building the whole
/// document. Anything but a list (or malformed JSON) is an error naming `path`; `expecting`
/// describes the elements (`"{split, captions, file_path, id} objects"`). A UTF-8 byte order
/// mark before the list (files saved by some Windows editors) is skipped.
pub(crate) fn for_each_json_row(
    path: &Path,
    bytes: &[u8],
    expecting: &str,
    f: &mut dyn FnMut(u64, serde_json::Value),
) -> Result<u64, PackError> {
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    struct ListVisitor<'a> {
        expecting: &'a str,
        f: &'a mut dyn FnMut(u64, serde_json::Value),
    }
    impl<'de> Visitor<'de> for ListVisitor<'_> {
        type Value = u64;
        fn expecting(&self, fmt: &mut std::fmt::Formatter) -> std::fmt::Result {
            write!(fmt, "a JSON list of {}", self.expecting)
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<u64, A::Error> {
            let mut n = 0u64;
            while let Some(v) = seq.next_element::<serde_json::Value>()? {
                (self.f)(n, v);
                n += 1;
            }
            Ok(n)
        }
    }
    let bad =
        |e: serde_json::Error| PackError::source(path, format!("not the expected structure: {e}"));
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let n = (&mut de)
        .deserialize_seq(ListVisitor { expecting, f })
        .map_err(bad)?;
    de.end().map_err(bad)?;
    Ok(n)
}

/// Short type name of a JSON value, for reasons.
pub(crate) fn json_type(v: &serde_json::Value) -> &'static str {
    match v {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "a list",
        serde_json::Value::Object(_) => "an object",
    }
}

/// A string field of a JSON object: `Err(reason)` when missing or not a string.
pub(crate) fn str_field<'a>(
    obj: &'a serde_json::Map<String, serde_json::Value>,
    key: &str,
) -> Result<&'a str, String> {
    match obj.get(key) {
        None => Err(format!("missing field `{key}`")),
        Some(serde_json::Value::String(s)) => Ok(s),
        Some(v) => Err(format!("field `{key}` is {}, not a string", json_type(v))),
    }
}
