//! WebPerson in the JSON layout GA-DMS's training code reads (docs/method.md §9.1,
//! `datasets/webreid.py`).
//!
//! `--src` is the JSON file (`100w.json`) or a directory holding exactly one `.json` file;
//! images are read from `images/<relative path>` beside it. The JSON is a list of one-key
//! objects `{"<relative path>": {"caption1": str, "caption2": str, …}}` (an object with several
//! keys is taken as several images).
//!
//! * The literal string `"/n"` is removed from the captions, as the reference code does; the
//!   stored caption text is the cleaned one.
//! * Each image gives two samples, `caption_idx` 0 and 1 (caption1, caption2).
//! * `image_id` = index of the image among the usable rows in file order; pretraining gives
//!   every caption its own identity: pid = `2 × image_id + caption_idx`.
//! * A row without `caption1` or `caption2` (or not an object) is rejected; an empty caption
//!   rejects that sample only.

use super::PackError;
use super::common::{
    CaptionIn, ImageSource, Item, RawItem, Reject, Source, fnv_hex, for_each_json_row, json_type,
    read_file, require_dir, resolve_json, str_field,
};
use std::path::{Path, PathBuf};

struct Entry {
    row: u64,
    path: String,
    captions: [String; 2],
}

/// Removes the literal `"/n"` the caption generator left in some captions.
pub fn clean_caption(s: &str) -> String {
    s.replace("/n", "")
}

/// An indexed WebPerson JSON.
pub(crate) struct WebJsonSource {
    source: String,
    images: PathBuf,
    entries: Vec<Entry>,
    rejects: Vec<Reject>,
    fingerprint: String,
}

pub(crate) fn open(src: &Path) -> Result<WebJsonSource, PackError> {
    let (json, dir) = resolve_json(src, None)?;
    let bytes = read_file(&json, "WebPerson caption JSON")?;
    let source = json
        .file_name()
        .unwrap_or_default()
        .to_string_lossy()
        .into_owned();
    let mut entries = Vec::new();
    let mut rejects = Vec::new();
    let rows = for_each_json_row(
        &json,
        &bytes,
        "one-key objects {\"<relative image path>\": {caption1, caption2}}",
        &mut |row, v| {
            let reject = |path: Option<&str>, reason: String| Reject {
                source: source.clone(),
                row,
                path: path.map(str::to_string),
                caption_idx: None,
                reason,
            };
            let obj = match v {
                serde_json::Value::Object(o) if !o.is_empty() => o,
                serde_json::Value::Object(_) => {
                    rejects.push(reject(None, "row is an empty object".into()));
                    return;
                }
                other => {
                    rejects.push(reject(
                        None,
                        format!("row is {}, not an object", json_type(&other)),
                    ));
                    return;
                }
            };
            for (path, caps) in obj {
                let Some(caps) = caps.as_object() else {
                    rejects.push(reject(
                        Some(&path),
                        format!(
                            "value is {}, not a {{caption1, caption2}} object",
                            json_type(&caps)
                        ),
                    ));
                    continue;
                };
                let c1 = str_field(caps, "caption1");
                let c2 = str_field(caps, "caption2");
                match (c1, c2) {
                    (Ok(a), Ok(b)) => entries.push(Entry {
                        row,
                        path: path.clone(),
                        captions: [clean_caption(a), clean_caption(b)],
                    }),
                    (Err(reason), _) | (_, Err(reason)) => {
                        rejects.push(reject(Some(&path), reason))
                    }
                }
            }
        },
    )?;
    if entries.is_empty() {
        let what = if rows == 0 {
            "the list is empty".to_string()
        } else {
            let first = rejects
                .first()
                .map(|r| format!("row {}: {}", r.row, r.reason))
                .unwrap_or_default();
            format!("no usable rows: all {rows} rejected (first: {first})")
        };
        return Err(PackError::source(&json, what));
    }
    let images = dir.join("images");
    require_dir(
        &images,
        "WebPerson images are expected at images/<relative path> beside the JSON",
    )?;
    Ok(WebJsonSource {
        source,
        images,
        entries,
        rejects,
        fingerprint: fnv_hex(&bytes),
    })
}

impl Source for WebJsonSource {
    fn len(&self) -> u64 {
        self.entries.len() as u64
    }
    fn fingerprint(&self) -> String {
        self.fingerprint.clone()
    }
    fn early_rejects(&self) -> &[Reject] {
        &self.rejects
    }
    fn read(
        &self,
        first: u64,
        end: u64,
        sink: &mut dyn FnMut(Item) -> Result<(), PackError>,
    ) -> Result<(), PackError> {
        for (k, e) in self.entries[first as usize..end as usize]
            .iter()
            .enumerate()
        {
            let image_id = first + k as u64;
            let captions = e
                .captions
                .iter()
                .enumerate()
                .map(|(i, t)| CaptionIn {
                    idx: i as u32,
                    text: t.clone(),
                    pid: 2 * image_id + i as u64,
                })
                .collect();
            sink(Item::Ok(RawItem {
                source: self.source.clone(),
                row: e.row,
                path: e.path.clone(),
                image: ImageSource::File {
                    root: self.images.clone(),
                    rel: e.path.clone(),
                },
                image_id,
                captions,
            }))?;
        }
        Ok(())
    }
}
