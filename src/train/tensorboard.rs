//! TensorBoard event files: a run writes its scalars (every loss part, lr, pairs/s, and the
//! retrieval metrics of each evaluation) to `RUN_DIR/tensorboard/events.out.tfevents.*`, which
//! `tensorboard --logdir RUN_DIR` (or a parent of several runs) reads.
//!
//! The format is TensorFlow's: a file of TFRecords, each `len: u64 LE`, `masked_crc32c(len):
//! u32 LE`, `data`, `masked_crc32c(data): u32 LE`, where `data` is a serialised `Event`
//! protobuf (tensorflow `core/util/event.proto`, `core/framework/summary.proto`). The first
//! event names the file version (`brain.Event:2`); every other one holds a `Summary` with one
//! `simple_value`. Only the fields gadms writes are declared below; their tags are the
//! upstream ones.

use anyhow::{Context, Result, bail};
use prost::Message;
use std::fs::File;
use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

/// The directory of a run's event files.
pub const DIR: &str = "tensorboard";

/// `tensorflow.Event` (the fields gadms writes).
#[derive(Clone, PartialEq, prost::Message)]
pub struct Event {
    /// Seconds since the Unix epoch.
    #[prost(double, tag = "1")]
    pub wall_time: f64,
    /// Training step.
    #[prost(int64, tag = "2")]
    pub step: i64,
    /// What the event carries.
    #[prost(oneof = "What", tags = "3, 5")]
    pub what: Option<What>,
}

/// `Event.what`.
#[derive(Clone, PartialEq, prost::Oneof)]
pub enum What {
    /// `file_version`, the first event of a file.
    #[prost(string, tag = "3")]
    FileVersion(String),
    /// `summary`.
    #[prost(message, tag = "5")]
    Summary(Summary),
}

/// `tensorflow.Summary`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Summary {
    /// Its values.
    #[prost(message, repeated, tag = "1")]
    pub value: Vec<Value>,
}

/// `tensorflow.Summary.Value` with a `simple_value` (a scalar).
#[derive(Clone, PartialEq, prost::Message)]
pub struct Value {
    /// The series' name, e.g. `train/loss`.
    #[prost(string, tag = "1")]
    pub tag: String,
    /// The scalar.
    #[prost(float, optional, tag = "2")]
    pub simple_value: Option<f32>,
}

/// TFRecord's checksum: CRC-32C, rotated right by 15 bits, plus a constant.
fn masked_crc(bytes: &[u8]) -> u32 {
    let c = crc32c::crc32c(bytes);
    c.rotate_right(15).wrapping_add(0xa282_ead8)
}

fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// Writes one event file.
pub struct EventWriter {
    path: PathBuf,
    out: BufWriter<File>,
}

impl EventWriter {
    /// Creates `run_dir/tensorboard/events.out.tfevents.SECONDS.gadms.PID` (a new file per
    /// invocation, so a resumed run adds one beside the first) with its version record.
    pub fn create(run_dir: &Path) -> Result<Self> {
        let dir = run_dir.join(DIR);
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
        let name = format!(
            "events.out.tfevents.{}.gadms.{}",
            now() as u64,
            std::process::id()
        );
        let path = dir.join(name);
        let file =
            File::create(&path).with_context(|| format!("cannot create {}", path.display()))?;
        let mut w = EventWriter {
            path,
            out: BufWriter::new(file),
        };
        w.write(&Event {
            wall_time: now(),
            step: 0,
            what: Some(What::FileVersion("brain.Event:2".into())),
        })?;
        Ok(w)
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends scalars `(tag, value)` at `step`, one event (a summary of all of them).
    pub fn scalars(&mut self, step: usize, values: &[(&str, f64)]) -> Result<()> {
        let value = values
            .iter()
            .map(|(tag, v)| Value {
                tag: tag.to_string(),
                simple_value: Some(*v as f32),
            })
            .collect();
        self.write(&Event {
            wall_time: now(),
            step: step as i64,
            what: Some(What::Summary(Summary { value })),
        })
    }

    /// Writes buffered events to the file.
    pub fn flush(&mut self) -> Result<()> {
        self.out
            .flush()
            .with_context(|| format!("writing {}", self.path.display()))
    }

    fn write(&mut self, e: &Event) -> Result<()> {
        let data = e.encode_to_vec();
        let len = (data.len() as u64).to_le_bytes();
        let mut rec = Vec::with_capacity(data.len() + 16);
        rec.extend_from_slice(&len);
        rec.extend_from_slice(&masked_crc(&len).to_le_bytes());
        rec.extend_from_slice(&data);
        rec.extend_from_slice(&masked_crc(&data).to_le_bytes());
        self.out
            .write_all(&rec)
            .with_context(|| format!("writing {}", self.path.display()))
    }
}

/// Every event of an event file, checksums verified (for tests and tools).
pub fn read_events(path: &Path) -> Result<Vec<Event>> {
    let mut bytes = Vec::new();
    File::open(path)
        .and_then(|mut f| f.read_to_end(&mut bytes))
        .with_context(|| format!("cannot read {}", path.display()))?;
    let mut events = Vec::new();
    let mut rest = bytes.as_slice();
    while !rest.is_empty() {
        let n = events.len();
        let bad = |what: &str| anyhow::anyhow!("{}: record {n}: {what}", path.display());
        if rest.len() < 12 {
            return Err(bad("truncated header"));
        }
        let (len, crc) = (&rest[..8], u32::from_le_bytes(rest[8..12].try_into()?));
        if masked_crc(len) != crc {
            return Err(bad("length checksum mismatch"));
        }
        let len = u64::from_le_bytes(len.try_into()?);
        let len = usize::try_from(len).map_err(|_| bad("length out of range"))?;
        let Some(end) = len.checked_add(16).filter(|&e| e <= rest.len()) else {
            bail!("{}: record {n}: truncated data", path.display());
        };
        let data = &rest[12..12 + len];
        if masked_crc(data) != u32::from_le_bytes(rest[12 + len..end].try_into()?) {
            return Err(bad("data checksum mismatch"));
        }
        events.push(Event::decode(data).map_err(|e| bad(&format!("not an Event: {e}")))?);
        rest = &rest[end..];
    }
    Ok(events)
}

/// The scalars of an event file as `(step, tag, value)`, in file order.
pub fn read_scalars(path: &Path) -> Result<Vec<(i64, String, f32)>> {
    Ok(read_events(path)?
        .into_iter()
        .filter_map(|e| match e.what {
            Some(What::Summary(s)) => Some((e.step, s)),
            _ => None,
        })
        .flat_map(|(step, s)| {
            s.value
                .into_iter()
                .filter_map(move |v| Some((step, v.tag, v.simple_value?)))
        })
        .collect())
}
