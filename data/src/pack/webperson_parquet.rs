//! WebPerson as released on Hugging Face (docs/method.md §9.1): parquet files with the columns
//! `image` (struct `{bytes: binary, path: string}`, the encoded JPEG/PNG), `image_path`
//! (string), `caption1`, `caption2` (strings).
//!
//! `--src` is a directory holding `data/train-*.parquet` (the Hub layout), a directory of
//! `*.parquet` files, or one parquet file. Files are taken in name order; only their footers are
//! read up front, and each chunk reads just the row groups it covers, row by row through the
//! `parquet` crate's record reader (never a whole file in memory). Snappy, zstd and LZ4
//! compressed files are supported.
//!
//! * The literal `"/n"` is removed from captions, as for the JSON layout.
//! * `image_id` = global row index (over all files, in order); each image gives two samples,
//!   `caption_idx` 0 and 1, with pid = `2 × image_id + caption_idx` (one identity per caption).
//! * The stored path is `image_path` (or `image.path` when that is null).
//! * A null image, null image bytes or a null caption rejects the row; an empty caption
//!   rejects that sample only. A missing column is a hard error naming the file and column.

use super::PackError;
use super::common::{CaptionIn, ImageSource, Item, RawItem, Reject, Source};
use super::webperson_json::clean_caption;
use crate::shard::Fnv64;
use parquet::file::reader::{FileReader, SerializedFileReader};
use parquet::record::Field;
use std::fs::File;
use std::path::{Path, PathBuf};

struct PqFile {
    path: PathBuf,
    /// Name for rejects, relative to `--src`.
    name: String,
    /// First global row of the file.
    start: u64,
    /// Rows per row group.
    groups: Vec<u64>,
}

/// The indexed parquet files.
pub(crate) struct ParquetSource {
    files: Vec<PqFile>,
    total: u64,
    fingerprint: String,
}

fn list_parquet(dir: &Path, prefix: Option<&str>) -> Result<Vec<PathBuf>, PackError> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| PackError::io(dir, "cannot list directory", e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.is_file()
                && p.extension().is_some_and(|x| x == "parquet")
                && prefix.is_none_or(|pre| {
                    p.file_name()
                        .is_some_and(|n| n.to_string_lossy().starts_with(pre))
                })
        })
        .collect();
    v.sort();
    Ok(v)
}

fn find_files(src: &Path) -> Result<Vec<(PathBuf, String)>, PackError> {
    let rel = |p: &Path, base: &Path| {
        p.strip_prefix(base)
            .unwrap_or(p)
            .to_string_lossy()
            .into_owned()
    };
    if src.is_file() {
        let name = src
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        return Ok(vec![(src.to_path_buf(), name)]);
    }
    if !src.is_dir() {
        return Err(PackError::source(src, "source not found"));
    }
    let data = src.join("data");
    let mut files = Vec::new();
    if data.is_dir() {
        files = list_parquet(&data, Some("train-"))?;
        if files.is_empty() {
            files = list_parquet(&data, None)?;
        }
    }
    if files.is_empty() {
        files = list_parquet(src, None)?;
    }
    if files.is_empty() {
        return Err(PackError::source(
            src,
            "no parquet files (expected data/train-*.parquet or *.parquet)",
        ));
    }
    Ok(files
        .into_iter()
        .map(|p| {
            let n = rel(&p, src);
            (p, n)
        })
        .collect())
}

fn open_reader(path: &Path) -> Result<SerializedFileReader<File>, PackError> {
    let f = File::open(path).map_err(|e| PackError::io(path, "cannot open parquet file", e))?;
    SerializedFileReader::new(f)
        .map_err(|e| PackError::source(path, format!("not a readable parquet file: {e}")))
}

/// Checks the WebPerson columns: `image` a struct with `bytes`, `caption1`, `caption2`.
fn check_schema(path: &Path, reader: &SerializedFileReader<File>) -> Result<(), PackError> {
    let schema = reader.metadata().file_metadata().schema();
    let fields = schema.get_fields();
    let names: Vec<&str> = fields.iter().map(|f| f.name()).collect();
    let missing = |col: &str| {
        PackError::source(
            path,
            format!(
                "column `{col}` not found (columns: {}); expected the WebPerson schema \
                 image {{bytes, path}}, image_path, caption1, caption2",
                names.join(", ")
            ),
        )
    };
    let image = fields
        .iter()
        .find(|f| f.name() == "image")
        .ok_or_else(|| missing("image"))?;
    if !image.is_group() || !image.get_fields().iter().any(|f| f.name() == "bytes") {
        return Err(PackError::source(
            path,
            "column `image` is not a struct with a `bytes` field (the Hugging Face image feature)",
        ));
    }
    for col in ["caption1", "caption2"] {
        if !names.contains(&col) {
            return Err(missing(col));
        }
    }
    Ok(())
}

pub(crate) fn open(src: &Path) -> Result<ParquetSource, PackError> {
    let mut files = Vec::new();
    let mut total = 0u64;
    let mut h = Fnv64::default();
    for (path, name) in find_files(src)? {
        let reader = open_reader(&path)?;
        check_schema(&path, &reader)?;
        let md = reader.metadata();
        let groups: Vec<u64> = (0..md.num_row_groups())
            .map(|g| md.row_group(g).num_rows().max(0) as u64)
            .collect();
        let rows: u64 = groups.iter().sum();
        let size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        h.update(format!("{name}\0{size}\0{rows}\0{groups:?}\n").as_bytes());
        files.push(PqFile {
            path,
            name,
            start: total,
            groups,
        });
        total += rows;
    }
    if total == 0 {
        return Err(PackError::source(src, "the parquet files hold no rows"));
    }
    Ok(ParquetSource {
        files,
        total,
        fingerprint: h.hex(),
    })
}

fn text(f: Field) -> Option<String> {
    match f {
        Field::Str(s) => Some(s),
        Field::Bytes(b) => String::from_utf8(b.data().to_vec()).ok(),
        _ => None,
    }
}

/// One parquet row → an item (or a reject).
fn convert(file: &PqFile, file_row: u64, image_id: u64, row: parquet::record::Row) -> Item {
    let (mut bytes, mut inner_path, mut image_path, mut c1, mut c2) =
        (None, None, None, None, None);
    let mut image_null = true;
    for (name, field) in row.into_columns() {
        match name.as_str() {
            "image" => {
                if let Field::Group(g) = field {
                    image_null = false;
                    for (n, f) in g.into_columns() {
                        match (n.as_str(), f) {
                            ("bytes", Field::Bytes(b)) => bytes = Some(b.data().to_vec()),
                            ("path", f) => inner_path = text(f),
                            _ => {}
                        }
                    }
                }
            }
            "image_path" => image_path = text(field),
            "caption1" => c1 = text(field),
            "caption2" => c2 = text(field),
            _ => {}
        }
    }
    let path = image_path
        .or(inner_path)
        .unwrap_or_else(|| format!("{}#{file_row}", file.name));
    let reject = |reason: &str| {
        Item::Rejected(Reject {
            source: file.name.clone(),
            row: file_row,
            path: Some(path.clone()),
            caption_idx: None,
            reason: reason.into(),
        })
    };
    let Some(bytes) = bytes else {
        return reject(if image_null {
            "missing image (`image` is null)"
        } else {
            "missing image (`image.bytes` is null)"
        });
    };
    let (Some(c1), Some(c2)) = (c1, c2) else {
        return reject("missing caption (`caption1` or `caption2` is null)");
    };
    let captions = [c1, c2]
        .iter()
        .enumerate()
        .map(|(i, t)| CaptionIn {
            idx: i as u32,
            text: clean_caption(t),
            pid: 2 * image_id + i as u64,
        })
        .collect();
    Item::Ok(RawItem {
        source: file.name.clone(),
        row: file_row,
        path,
        image: ImageSource::Bytes(bytes),
        image_id,
        captions,
    })
}

impl Source for ParquetSource {
    fn len(&self) -> u64 {
        self.total
    }
    fn fingerprint(&self) -> String {
        self.fingerprint.clone()
    }
    fn early_rejects(&self) -> &[Reject] {
        &[]
    }
    fn read(
        &self,
        first: u64,
        end: u64,
        sink: &mut dyn FnMut(Item) -> Result<(), PackError>,
    ) -> Result<(), PackError> {
        for file in &self.files {
            let rows: u64 = file.groups.iter().sum();
            if file.start + rows <= first || file.start >= end {
                continue;
            }
            let reader = open_reader(&file.path)?;
            let mut gstart = file.start;
            for (g, &n) in file.groups.iter().enumerate() {
                let (lo, hi) = (first.max(gstart), end.min(gstart + n));
                if lo < hi {
                    let bad = |e: parquet::errors::ParquetError| {
                        PackError::source(&file.path, format!("row group {g}: {e}"))
                    };
                    let group = reader.get_row_group(g).map_err(bad)?;
                    let iter = group.get_row_iter(None).map_err(bad)?;
                    let skip = (lo - gstart) as usize;
                    for (j, row) in iter.skip(skip).take((hi - lo) as usize).enumerate() {
                        let global = lo + j as u64;
                        let row = row.map_err(bad)?;
                        sink(convert(file, global - file.start, global, row))?;
                    }
                }
                gstart += n;
            }
        }
        Ok(())
    }
}
