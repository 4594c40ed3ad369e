//! The reader shared by the three benchmark formats (CUHK-PEDES, ICFG-PEDES, RSTPReid): a JSON
//! list of `{split, captions, <path key>, id}` objects and an `imgs/` folder beside it
//! (docs/method.md §9.2–9.5, IRRA `datasets/*.py`).

use super::common::{
    CaptionIn, ImageSource, Item, RawItem, Reject, Source, fnv_hex, for_each_json_row, json_type,
    read_file, require_dir, resolve_json, str_field,
};
use super::{PackError, normalize_split};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// What differs between the three benchmark formats.
pub(crate) struct BenchSpec {
    /// The caption JSON's file name (`reid_raw.json`).
    pub file: &'static str,
    /// The key holding the image path relative to `imgs/` (`file_path` or `img_path`).
    pub path_key: &'static str,
    /// Train pid = id − this (1 for CUHK-PEDES, whose ids start at 1; 0 otherwise).
    pub train_id_offset: u64,
    /// Human name for messages.
    pub name: &'static str,
}

struct Entry {
    row: u64,
    path: String,
    captions: Vec<String>,
    pid: u64,
}

/// An indexed benchmark JSON, filtered to one split.
pub(crate) struct BenchSource {
    source: String,
    imgs: PathBuf,
    entries: Vec<Entry>,
    rejects: Vec<Reject>,
    fingerprint: String,
}

/// Reads an `id` (a non-negative integer, or a string holding one, as IRRA's `int(id)`).
fn parse_id(v: Option<&serde_json::Value>) -> Result<u64, String> {
    match v {
        None => Err("missing field `id`".into()),
        Some(serde_json::Value::Number(n)) => n
            .as_u64()
            .or_else(|| {
                n.as_f64()
                    .filter(|f| f.fract() == 0.0 && *f >= 0.0 && *f < 9.0e15)
                    .map(|f| f as u64)
            })
            .ok_or_else(|| format!("field `id` is {n}, not a non-negative integer")),
        Some(serde_json::Value::String(s)) => s
            .trim()
            .parse::<u64>()
            .map_err(|_| format!("field `id` is \"{s}\", not a non-negative integer")),
        Some(v) => Err(format!("field `id` is {}, not an integer", json_type(v))),
    }
}

impl BenchSource {
    /// Indexes `src` (the JSON file or its directory) for split `split` (already normalised).
    pub(crate) fn open(src: &Path, split: &str, spec: &BenchSpec) -> Result<Self, PackError> {
        let (json, dir) = resolve_json(src, Some(spec.file))?;
        let bytes = read_file(&json, spec.file)?;
        let source = json
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        let mut entries = Vec::new();
        let mut rejects = Vec::new();
        let mut splits: BTreeMap<&'static str, u64> = BTreeMap::new();
        let mut no_split = 0u64;
        let expecting = format!("{{split, captions, {}, id}} objects", spec.path_key);
        let rows = for_each_json_row(&json, &bytes, &expecting, &mut |row, v| {
            let reject = |path: Option<&str>, reason: String| Reject {
                source: source.clone(),
                row,
                path: path.map(str::to_string),
                caption_idx: None,
                reason,
            };
            let Some(obj) = v.as_object() else {
                rejects.push(reject(
                    None,
                    format!("row is {}, not an object", json_type(&v)),
                ));
                return;
            };
            let row_split = match str_field(obj, "split") {
                Ok(s) => normalize_split(s),
                Err(reason) => {
                    no_split += 1;
                    let path = obj.get(spec.path_key).and_then(|p| p.as_str());
                    rejects.push(reject(path, reason));
                    return;
                }
            };
            *splits.entry(row_split).or_default() += 1;
            if row_split != split {
                return;
            }
            let path = match str_field(obj, spec.path_key) {
                Ok(p) if !p.trim().is_empty() => p,
                Ok(_) => {
                    rejects.push(reject(None, format!("field `{}` is empty", spec.path_key)));
                    return;
                }
                Err(reason) => {
                    rejects.push(reject(None, reason));
                    return;
                }
            };
            let id = match parse_id(obj.get("id")) {
                Ok(id) => id,
                Err(reason) => {
                    rejects.push(reject(Some(path), reason));
                    return;
                }
            };
            let pid = if split == "train" {
                match id.checked_sub(spec.train_id_offset) {
                    Some(p) => p,
                    None => {
                        rejects.push(reject(
                            Some(path),
                            format!(
                                "id {id} in the train split: {} ids start at {} (train pid = id − {})",
                                spec.name, spec.train_id_offset, spec.train_id_offset
                            ),
                        ));
                        return;
                    }
                }
            } else {
                id
            };
            let captions = match obj.get("captions") {
                None => Err("missing field `captions`".to_string()),
                Some(serde_json::Value::Array(a)) if a.is_empty() => {
                    Err("field `captions` is an empty list".to_string())
                }
                Some(serde_json::Value::Array(a)) => a
                    .iter()
                    .enumerate()
                    .map(|(i, c)| match c {
                        serde_json::Value::String(s) => Ok(s.clone()),
                        other => Err(format!("caption {i} is {}, not a string", json_type(other))),
                    })
                    .collect(),
                Some(v) => Err(format!("field `captions` is {}, not a list", json_type(v))),
            };
            match captions {
                Ok(captions) => entries.push(Entry {
                    row,
                    path: path.to_string(),
                    captions,
                    pid,
                }),
                Err(reason) => rejects.push(reject(Some(path), reason)),
            }
        })?;
        if entries.is_empty() {
            let what = if rows == 0 {
                "the list is empty".to_string()
            } else if no_split == rows {
                let hint = if spec.file == "reid_raw.json" {
                    " (caption_all.json has no splits; use the split-annotated reid_raw.json)"
                } else {
                    ""
                };
                format!("no row has field `split`{hint}")
            } else if !splits.contains_key(split) {
                let found: Vec<String> = splits.iter().map(|(s, n)| format!("{s} {n}")).collect();
                format!(
                    "no rows of split '{split}' (found: {})",
                    if found.is_empty() {
                        "none".to_string()
                    } else {
                        found.join(", ")
                    }
                )
            } else {
                let first = rejects
                    .iter()
                    .find(|r| !r.reason.starts_with("missing field `split`"))
                    .or(rejects.first())
                    .map(|r| format!("row {}: {}", r.row, r.reason))
                    .unwrap_or_default();
                format!(
                    "no usable rows of split '{split}': all {} rejected (first: {first})",
                    splits[split]
                )
            };
            return Err(PackError::source(&json, what));
        }
        let imgs = dir.join("imgs");
        require_dir(
            &imgs,
            &format!(
                "{} images are expected at imgs/<{}> beside {}",
                spec.name, spec.path_key, spec.file
            ),
        )?;
        Ok(BenchSource {
            source,
            imgs,
            entries,
            rejects,
            fingerprint: fnv_hex(&bytes),
        })
    }
}

impl Source for BenchSource {
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
            let captions = e
                .captions
                .iter()
                .enumerate()
                .map(|(i, t)| CaptionIn {
                    idx: i as u32,
                    text: t.clone(),
                    pid: e.pid,
                })
                .collect();
            sink(Item::Ok(RawItem {
                source: self.source.clone(),
                row: e.row,
                path: e.path.clone(),
                image: ImageSource::File {
                    root: self.imgs.clone(),
                    rel: e.path.clone(),
                },
                image_id: first + k as u64,
                captions,
            }))?;
        }
        Ok(())
    }
}
