//! The per-caption GASS score table (docs/method.md §4.1–4.2, §11.4): 77 `f32` scores per caption,
//! one row per caption (row = the caption's global sample index in the dataset), initialised to
//! [`INIT_SCORE`] = 0.85 and overwritten by the trainer after each step with the batch's GASS
//! scores. The dual masking of §4.2 reads the row when the loader prepares the caption's batch.
//!
//! Two backings with one interface:
//! * [`ScoreTable::in_memory`] for small sets (fine-tuning sets, tests);
//! * [`ScoreTable::create`] / [`ScoreTable::open`] / [`ScoreTable::open_or_create`]: a
//!   memory-mapped file (`RUN_DIR/scores.f32`, 10M captions ≈ 3.1 GB) so a pretraining run
//!   neither holds the table in RAM nor loses it on a crash.
//!
//! File layout (little endian):
//! ```text
//! [0, 32)   header: magic "GADMSSC1" | version u32 | ctx u32 (= 77) | rows u64 | reserved u64
//! [32, ..)  rows × 77 f32 scores, row-major
//! ```
//!
//! Concurrency: every score is stored as an `AtomicU32` (relaxed loads/stores), so the loader's
//! worker threads can read rows while the trainer writes others through a shared `&ScoreTable`
//! (`Arc<ScoreTable>`), without locks. Determinism of the masks needs the access pattern the
//! loader documents (see [`crate::loader`]): the trainer writes only the rows of the batch it
//! just received, before asking for the next batch.

use memmap2::MmapMut;
use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

/// Scores per caption (= token positions, CLIP context length).
pub const SCORE_CTX: usize = 77;
/// Initial score of every token (§4.1 table, "0.85 (init)"; §11.4).
pub const INIT_SCORE: f32 = 0.85;
/// First 8 bytes of a score file.
pub const SCORE_MAGIC: [u8; 8] = *b"GADMSSC1";
/// Score file format version.
pub const SCORE_VERSION: u32 = 1;
/// Conventional file name inside a run directory.
pub const SCORE_FILE: &str = "scores.f32";
const HEADER_LEN: usize = 32;

/// A problem with a score file.
#[derive(Debug, thiserror::Error)]
pub enum ScoreError {
    /// I/O failure.
    #[error("{path}: {what}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What was being done.
        what: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// Wrong magic, version, shape or size.
    #[error("{path}: not a usable gadms score table: {what}")]
    Bad {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        what: String,
    },
}

enum Store {
    Mem(Box<[AtomicU32]>),
    File {
        /// Keeps the mapping alive; accessed only through `ptr`.
        map: MmapMut,
        /// `rows × 77` atomics starting at byte [`HEADER_LEN`] of the mapping.
        ptr: *const AtomicU32,
        path: PathBuf,
    },
}

/// The GASS score table: `rows × 77` f32, shared between loader workers and the trainer.
pub struct ScoreTable {
    rows: usize,
    store: Store,
}

// SAFETY: the mapped memory is only ever accessed through `AtomicU32` references derived from
// `ptr`, which stays valid (mmap memory does not move) as long as `map` lives, i.e. as long as
// the table. `MmapMut` itself is Send + Sync.
unsafe impl Send for ScoreTable {}
unsafe impl Sync for ScoreTable {}

impl std::fmt::Debug for ScoreTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScoreTable")
            .field("rows", &self.rows)
            .field("path", &self.path())
            .finish()
    }
}

fn io_err(path: &Path, what: &str) -> impl FnOnce(std::io::Error) -> ScoreError {
    let (path, what) = (path.to_path_buf(), what.to_string());
    move |source| ScoreError::Io { path, what, source }
}

fn expected_len(rows: usize) -> Option<u64> {
    (rows as u64)
        .checked_mul((SCORE_CTX * 4) as u64)
        .and_then(|b| b.checked_add(HEADER_LEN as u64))
}

impl ScoreTable {
    /// An in-memory table of `rows` captions, every score [`INIT_SCORE`].
    pub fn in_memory(rows: usize) -> Self {
        let init = INIT_SCORE.to_bits().to_le();
        let v: Vec<AtomicU32> = (0..rows * SCORE_CTX)
            .map(|_| AtomicU32::new(init))
            .collect();
        ScoreTable {
            rows,
            store: Store::Mem(v.into_boxed_slice()),
        }
    }

    /// Creates (or truncates) the file-backed table at `path` with `rows` captions, every score
    /// [`INIT_SCORE`], and maps it.
    pub fn create(path: &Path, rows: usize) -> Result<Self, ScoreError> {
        let len = expected_len(rows).ok_or_else(|| ScoreError::Bad {
            path: path.to_path_buf(),
            what: format!("{rows} rows do not fit a file"),
        })?;
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(path)
            .map_err(io_err(path, "cannot create score table"))?;
        file.set_len(len)
            .map_err(io_err(path, "cannot size score table"))?;
        let mut map = Self::map(&file, path)?;
        map[..8].copy_from_slice(&SCORE_MAGIC);
        map[8..12].copy_from_slice(&SCORE_VERSION.to_le_bytes());
        map[12..16].copy_from_slice(&(SCORE_CTX as u32).to_le_bytes());
        map[16..24].copy_from_slice(&(rows as u64).to_le_bytes());
        map[24..32].copy_from_slice(&0u64.to_le_bytes());
        let init = INIT_SCORE.to_le_bytes();
        for c in map[HEADER_LEN..].chunks_exact_mut(4) {
            c.copy_from_slice(&init);
        }
        let t = Self::from_map(map, path, rows);
        t.flush()?;
        Ok(t)
    }

    /// Maps an existing table. `rows`, when given, must equal the file's row count (a table
    /// left by a run over a different dataset is refused). Wrong magic, version, context length
    /// or file size gives [`ScoreError::Bad`] naming the file.
    pub fn open(path: &Path, rows: Option<usize>) -> Result<Self, ScoreError> {
        let bad = |what: String| ScoreError::Bad {
            path: path.to_path_buf(),
            what,
        };
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .map_err(io_err(path, "cannot open score table"))?;
        let size = file
            .metadata()
            .map_err(io_err(path, "cannot stat score table"))?
            .len();
        if size < HEADER_LEN as u64 {
            return Err(bad(format!(
                "{size} bytes, shorter than the {HEADER_LEN}-byte header"
            )));
        }
        let map = Self::map(&file, path)?;
        if map[..8] != SCORE_MAGIC {
            return Err(bad("missing GADMSSC1 magic (foreign file)".into()));
        }
        let u32_at = |at: usize| u32::from_le_bytes(map[at..at + 4].try_into().expect("4"));
        let version = u32_at(8);
        if version != SCORE_VERSION {
            return Err(bad(format!(
                "format version {version}, this build reads {SCORE_VERSION}"
            )));
        }
        let ctx = u32_at(12);
        if ctx as usize != SCORE_CTX {
            return Err(bad(format!("{ctx} scores per row, expected {SCORE_CTX}")));
        }
        let file_rows = u64::from_le_bytes(map[16..24].try_into().expect("8"));
        let want = usize::try_from(file_rows)
            .ok()
            .and_then(expected_len)
            .ok_or_else(|| bad(format!("absurd row count {file_rows}")))?;
        if size != want {
            return Err(bad(format!(
                "header says {file_rows} rows ({want} bytes) but the file has {size} bytes (truncated?)"
            )));
        }
        if let Some(r) = rows
            && r as u64 != file_rows
        {
            return Err(bad(format!(
                "holds {file_rows} rows but the dataset has {r} captions (a table from another dataset?)"
            )));
        }
        Ok(Self::from_map(map, path, file_rows as usize))
    }

    /// Opens `path` if it exists (checking `rows`), else creates it.
    pub fn open_or_create(path: &Path, rows: usize) -> Result<Self, ScoreError> {
        if path.exists() {
            Self::open(path, Some(rows))
        } else {
            Self::create(path, rows)
        }
    }

    fn map(file: &File, path: &Path) -> Result<MmapMut, ScoreError> {
        // SAFETY: the score file belongs to this run; gadms maps it once per process and
        // accesses it only through atomics. Concurrent modification by another process is
        // outside the contract (as for any run-directory file).
        unsafe { MmapMut::map_mut(file) }.map_err(io_err(path, "cannot map score table"))
    }

    fn from_map(mut map: MmapMut, path: &Path, rows: usize) -> Self {
        // The mapping is page-aligned and the header is 32 bytes, so the data is 4-aligned.
        let ptr = unsafe { map.as_mut_ptr().add(HEADER_LEN) } as *const AtomicU32;
        debug_assert_eq!(ptr as usize % std::mem::align_of::<AtomicU32>(), 0);
        ScoreTable {
            rows,
            store: Store::File {
                map,
                ptr,
                path: path.to_path_buf(),
            },
        }
    }

    fn cells(&self) -> &[AtomicU32] {
        match &self.store {
            Store::Mem(v) => v,
            // SAFETY: `ptr` points at rows × 77 initialised, 4-aligned u32 inside the live
            // mapping (size checked at open/create); all access is atomic.
            Store::File { ptr, .. } => unsafe {
                std::slice::from_raw_parts(*ptr, self.rows * SCORE_CTX)
            },
        }
    }

    fn row_cells(&self, row: usize) -> &[AtomicU32] {
        assert!(
            row < self.rows,
            "score row {row} out of range for a table of {} rows",
            self.rows
        );
        &self.cells()[row * SCORE_CTX..(row + 1) * SCORE_CTX]
    }

    /// Number of captions (rows).
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// The backing file, if file-backed.
    pub fn path(&self) -> Option<&Path> {
        match &self.store {
            Store::Mem(_) => None,
            Store::File { path, .. } => Some(path),
        }
    }

    /// The 77 scores of caption `row` (token positions 0…76). Panics if `row >= rows()`.
    pub fn get(&self, row: usize) -> [f32; SCORE_CTX] {
        let mut out = [0f32; SCORE_CTX];
        for (o, c) in out.iter_mut().zip(self.row_cells(row)) {
            *o = f32::from_bits(u32::from_le(c.load(Ordering::Relaxed)));
        }
        out
    }

    /// Overwrites the 77 scores of caption `row`. Panics if `row >= rows()`.
    pub fn set(&self, row: usize, scores: &[f32; SCORE_CTX]) {
        for (c, s) in self.row_cells(row).iter().zip(scores) {
            c.store(s.to_bits().to_le(), Ordering::Relaxed);
        }
    }

    /// Writes dirty pages of a file-backed table to disk (msync); no-op in memory.
    pub fn flush(&self) -> Result<(), ScoreError> {
        match &self.store {
            Store::Mem(_) => Ok(()),
            Store::File { map, path, .. } => map
                .flush()
                .map_err(io_err(path, "cannot flush score table")),
        }
    }

    /// Writes a consistent copy of the table (same file format) to `path`, e.g. next to a
    /// checkpoint so that a resumed run masks exactly as the original (see [`crate::loader`]).
    pub fn save_copy(&self, path: &Path) -> Result<(), ScoreError> {
        use std::io::Write;
        let tmp = crate::temp_path(path);
        let f = File::create(&tmp).map_err(io_err(&tmp, "cannot create score copy"))?;
        let mut w = std::io::BufWriter::with_capacity(1 << 20, f);
        let mut header = Vec::with_capacity(HEADER_LEN);
        header.extend_from_slice(&SCORE_MAGIC);
        header.extend_from_slice(&SCORE_VERSION.to_le_bytes());
        header.extend_from_slice(&(SCORE_CTX as u32).to_le_bytes());
        header.extend_from_slice(&(self.rows as u64).to_le_bytes());
        header.extend_from_slice(&0u64.to_le_bytes());
        let mut res = w.write_all(&header);
        let mut buf = Vec::with_capacity(SCORE_CTX * 4);
        for r in 0..self.rows {
            if res.is_err() {
                break;
            }
            buf.clear();
            for s in self.get(r) {
                buf.extend_from_slice(&s.to_le_bytes());
            }
            res = w.write_all(&buf);
        }
        res.and_then(|_| w.flush())
            .and_then(|_| w.get_ref().sync_all())
            .map_err(io_err(&tmp, "cannot write score copy"))?;
        std::fs::rename(&tmp, path).map_err(io_err(path, "cannot rename score copy"))
    }

    /// Copies every row of `other` (same row count) into this table, e.g. to restore a saved
    /// copy into the live run table on resume.
    pub fn copy_from(&self, other: &ScoreTable) -> Result<(), String> {
        if other.rows != self.rows {
            return Err(format!(
                "score tables differ in size: {} vs {} rows",
                other.rows, self.rows
            ));
        }
        for r in 0..self.rows {
            self.set(r, &other.get(r));
        }
        Ok(())
    }
}
