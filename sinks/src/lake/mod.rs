//! The Parquet lake: `<root>/<table>/date=YYYY-MM-DD/server=<name>/part-<writer>-<seq>.parquet`.
//!
//! This module owns the layout, the commit protocol and what a restart may trust:
//!
//! - **Layout.** Hive-style partitions that DuckDB (`hive_partitioning`), Spark, pyarrow and
//!   pandas discover. The date is the UTC day of the row's `timestamp`; the server is the row's
//!   `server`, escaped the way Hive escapes (see [`partition`]). As Hive lays a table out, a
//!   partition column lives in the folder name only: the files hold every column but `server`
//!   (a column in both places makes Spark warn on every read and pyarrow refuse the dataset).
//! - **Epochs.** A [`LakeWriter`] writes each partition it sees into a file of its own. All the
//!   files written since the last commit are committed together, as one *epoch*, when one of
//!   them is big enough, has enough rows, the oldest is old enough, the epoch holds many files, or
//!   the writer closes. Committing them together means that for every source the committed rows
//!   are always a prefix of its lines, which is what makes resuming exact.
//! - **Bounded at any partition count.** A partition's rows are first held as they came; once
//!   they reach 1 MiB the partition gets a streaming Parquet writer (zstd). At most
//!   `max_open_files` writers are open (each holds encoders and buffers, several hundred KiB),
//!   and the held rows of all small partitions together stay under half the memory budget:
//!   past either bound the least recently used is sealed, its file waiting, complete but hidden,
//!   for the epoch's commit (a small partition's in one go, uncompressed, since a compressor per
//!   column costs more than it saves on a few rows). Memory therefore does not grow with the
//!   number of partitions (a hostile log can name thousands of days), and a commit of thousands
//!   of small files is made durable in bulk (see [`crate::durable`]), so time grows with rows and
//!   files, not with their product.
//! - **Commit.** Each file is written under a hidden temporary name and fsynced; then the journal
//!   (see `journal`) records the renames; then they happen. Readers never see a partial file,
//!   and a crash at any point leaves either the old state or, after recovery, the new one.
//! - **Provenance.** Every file's footer names the mailflow version, the table's schema version and
//!   the source ranges it holds: the file fingerprint, the first and last line offsets, and the
//!   source's end offset when the epoch was cut (every line of the source before it is committed).
//!   [`committed_sources`] reads them back, so a restarted ingest skips what is already there.

mod clear;
pub mod compact;
mod journal;
pub mod partition;
mod resume;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use arrow_array::RecordBatch;
use parquet::file::reader::{FileReader, SerializedFileReader};
use serde::{Deserialize, Serialize};

pub use clear::{Cleared, clear, ensure_clearable};
use journal::{Journal, WriterLock};
pub use journal::{LakeLock, Recovery};
use partition::PartitionKey;
pub(crate) use resume::Identified;
pub use resume::{Identity, Resume, rows_from};

use crate::parquet::{Committed, Finished, ParquetFile, ParquetOptions, io_error};

/// Footer key: the mailflow version that wrote the file.
pub const META_VERSION: &str = "mailflow.version";
/// Footer key: the table's schema version.
pub const META_SCHEMA_VERSION: &str = "mailflow.schema_version";
/// Footer key: the table name.
pub const META_TABLE: &str = "mailflow.table";
/// Footer key: the source ranges, a JSON array of [`SourceRange`].
pub const META_SOURCES: &str = "mailflow.sources";
/// Footer key: the `source_file` values of the file's rows (JSON list). A raw table's rows name
/// the source they were written with; a derived row (a session, a message) names the file of
/// its first line, which may be another: this is how a rerun finds derived rows it must not
/// write again.
pub const META_ROW_FILES: &str = "mailflow.row_files";

/// Errors of the lake.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A file system error (with its path), or writing a Parquet file failed.
    #[error(transparent)]
    Parquet(#[from] crate::parquet::Error),
    /// Reading a committed file's footer failed.
    #[error("{path}: {reason}")]
    Footer {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// A batch lacks what the lake needs.
    #[error("column {column}: {reason}")]
    Schema {
        /// The column.
        column: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// Arrow failed while splitting a batch.
    #[error("splitting a batch by partition: {0}")]
    Arrow(Arc<arrow_schema::ArrowError>),
    /// A journal could not be written or read.
    #[error("{path}: journal: {reason}")]
    Journal {
        /// The journal file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// `--overwrite` of a folder that mailflow did not make.
    #[error(
        "{path} is not a mailflow lake (it has no _mailflow folder) and is not empty: refusing to \
         remove anything from it; give an empty or new folder, or the lake's own"
    )]
    NotALake {
        /// The folder.
        path: PathBuf,
    },
    /// The object store or a Delta table failed (the location shown without credentials).
    #[error("{location}: {reason}")]
    Store {
        /// The lake's location.
        location: String,
        /// What failed.
        reason: String,
    },
    /// A sink the lake's commits wait for could not make its writes durable.
    #[error("before committing: {reason}")]
    Barrier {
        /// The other sink's error.
        reason: String,
    },
    /// Another process holds a lock.
    #[error("{what} is held by another mailflow process: {reason}")]
    Busy {
        /// The lock.
        what: String,
        /// The operating system's answer.
        reason: String,
    },
}

/// When files are rolled, and how they are encoded.
#[derive(Debug, Clone)]
pub struct LakeOptions {
    /// Encoding (zstd level, row groups).
    pub parquet: ParquetOptions,
    /// Roll once a file reaches this many bytes (estimated while writing).
    pub max_file_bytes: u64,
    /// Roll once a file holds this many rows.
    pub max_file_rows: u64,
    /// Roll once the oldest open file is this old, so a live agent's rows become visible.
    pub max_file_age: Duration,
    /// Partitions with an open Parquet writer at most; the least recently used is closed (its
    /// file committed with the epoch) to open another.
    pub max_open_files: usize,
    /// Buffered row groups above this many bytes are flushed early, largest first.
    pub memory_budget: usize,
    /// Written to the footer as [`META_SCHEMA_VERSION`] when the batch's Arrow schema states no
    /// version of its own under that key.
    pub schema_version: u32,
}

impl Default for LakeOptions {
    fn default() -> Self {
        // 256 MiB files suit DuckDB and Spark scans; five minutes bounds how stale a live
        // agent's lake gets while leaving ~300 files per partition-day for compaction to merge.
        LakeOptions {
            parquet: ParquetOptions {
                row_group_bytes: 64 << 20,
                ..ParquetOptions::default()
            },
            max_file_bytes: 256 << 20,
            max_file_rows: 16 << 20,
            max_file_age: Duration::from_secs(300),
            max_open_files: 16,
            // Per writer (ingest has one per worker): on 1 GiB of mixed logs 16 MiB peaks at
            // ~245 MiB RSS against ~305 MiB with 32, the same time and the same bytes on disk;
            // row groups of the busiest table average ~90k rows (DuckDB's own are 122,880).
            memory_budget: 16 << 20,
            schema_version: 1,
        }
    }
}

/// Where a batch's rows come from.
#[derive(Debug, Clone, Copy)]
pub struct Source<'a> {
    /// Identity of the source file (a fingerprint of its first bytes, not its name).
    pub fingerprint: &'a str,
    /// The file's path, for people.
    pub file: &'a str,
    /// Every line of the source before this offset is in these batches or earlier ones.
    pub end_offset: u64,
}

/// The part of one source a committed file holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceRange {
    /// The source's fingerprint.
    pub fingerprint: String,
    /// Its path when it was read.
    pub file: String,
    /// Offset of the first line in this file.
    pub first_offset: i64,
    /// Offset of the last line in this file.
    pub last_offset: i64,
    /// Every line of the source before this offset is committed (in this file or others).
    pub end_offset: u64,
    /// Rows of this source in this file.
    pub rows: u64,
}

impl SourceRange {
    fn merge(&mut self, other: &SourceRange) {
        self.first_offset = self.first_offset.min(other.first_offset);
        self.last_offset = self.last_offset.max(other.last_offset);
        self.end_offset = self.end_offset.max(other.end_offset);
        self.rows += other.rows;
    }
}

/// What the lake holds of one source.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SourceProgress {
    /// Every line before this offset is committed; none after it is.
    pub end_offset: u64,
    /// Rows committed, across tables.
    pub rows: u64,
    /// The path it was last read from.
    pub file: String,
}

/// A partition's file of the current epoch.
struct OpenFile {
    table: String,
    body: Body,
    /// Its name once committed, and its temporary name meanwhile.
    final_path: PathBuf,
    temp_path: PathBuf,
    rows: u64,
    sources: BTreeMap<String, SourceRange>,
    /// The `source_file` values of its rows: a derived row (a session) names the file of its
    /// first line, which need not be the source it was written with.
    row_files: BTreeSet<String>,
    /// When a batch was last appended (the writer's append counter), for closing the least
    /// recently used.
    last_use: u64,
    /// The table's schema version, as its Arrow schema states it.
    schema_version: String,
}

/// What a partition's file is so far.
enum Body {
    /// Too small yet to be worth a Parquet writer: its batches, held as they came. A Parquet
    /// writer costs a compressor per column (most of the time of a small file), so a partition
    /// that stays small is written in one go, uncompressed, when it is sealed.
    Buffered {
        batches: Vec<RecordBatch>,
        bytes: usize,
    },
    /// Streaming into a Parquet file.
    Writing(Box<ParquetFile>),
}

/// A partition's buffered batches become a streaming Parquet file at this many bytes of Arrow
/// memory.
const STREAM_BYTES: usize = 1 << 20;

/// Files one epoch may hold before it is committed: bounds the journal and the list of files
/// kept for the commit when a backfill spreads over very many partitions.
const MAX_EPOCH_FILES: usize = 4096;

type Slot = (String, PartitionKey);

/// Writes batches into the lake; see the module docs. One per thread: batches of one source
/// must all go through the same writer.
pub struct LakeWriter {
    root: PathBuf,
    id: String,
    lock: Option<WriterLock>,
    options: LakeOptions,
    open: HashMap<Slot, OpenFile>,
    /// The open files by last use, oldest first: those still buffered, and those writing.
    buffered_lru: BTreeMap<u64, Slot>,
    writing_lru: BTreeMap<u64, Slot>,
    /// Bytes held by buffered files.
    buffered_bytes: usize,
    /// Files of this epoch closed already (complete under their temporary names).
    closed: Vec<Finished>,
    /// Appends so far, the clock of [`OpenFile::last_use`].
    appends: u64,
    /// End offsets of the sources written since the last commit.
    marks: HashMap<String, u64>,
    opened_at: Option<Instant>,
    seq: u64,
    committed: Vec<Committed>,
    barrier: Option<Barrier>,
    /// Where epochs are published when the lake is Delta tables (the root is then a local
    /// staging folder); `None` for a local lake.
    object: Option<Arc<crate::object_lake::ObjectLake>>,
    /// Epochs published, the Delta transaction number of the next.
    epoch: u64,
}

/// What must be durable elsewhere before the lake commits: another sink's writes, when the
/// lake's contents are what a rerun skips (see [`LakeWriter::set_barrier`]).
pub type Barrier = Box<dyn FnMut() -> Result<(), String> + Send>;

impl std::fmt::Debug for LakeWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LakeWriter")
            .field("root", &self.root)
            .field("id", &self.id)
            .field("open", &self.open.len())
            .finish()
    }
}

/// A name no other writer, here or on another server sharing the lake, will pick: the start
/// time (so names sort by age) and 32 random bits.
pub fn writer_id() -> String {
    let ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    // `RandomState` is seeded from the operating system's randomness, per process and per call.
    let random =
        std::hash::BuildHasher::hash_one(&std::collections::hash_map::RandomState::new(), ms);
    format!("{ms:011x}-{:08x}", random as u32)
}

/// Finishes interrupted commits and removes temporaries left by writers that are gone. Run it
/// before reading [`committed_sources`].
pub fn recover(root: &Path) -> Result<Recovery, Error> {
    journal::recover(root)
}

impl LakeWriter {
    /// Starts a writer under `root` (created if missing).
    pub fn new(root: impl Into<PathBuf>, options: LakeOptions) -> Result<Self, Error> {
        let root = root.into();
        fs::create_dir_all(&root).map_err(io_error(&root))?;
        let id = writer_id();
        let lock = WriterLock::acquire(&root, &id)?;
        Ok(LakeWriter {
            root,
            id,
            lock: Some(lock),
            options,
            open: HashMap::new(),
            buffered_lru: BTreeMap::new(),
            writing_lru: BTreeMap::new(),
            buffered_bytes: 0,
            closed: Vec::new(),
            appends: 0,
            marks: HashMap::new(),
            opened_at: None,
            seq: 0,
            committed: Vec::new(),
            barrier: None,
            object: None,
            epoch: 0,
        })
    }

    /// Publishes epochs to `object` (a lake in an object store, or local Delta tables) instead
    /// of renaming them into `root`, which becomes the staging folder of files being written
    /// (see [`crate::object_lake`]).
    pub fn with_object_lake(mut self, object: Arc<crate::object_lake::ObjectLake>) -> Self {
        self.object = Some(object);
        self
    }

    /// Writes the batches a source produced up to `source.end_offset`, each to its table. They
    /// land in one epoch together; a roll happens only between calls.
    pub fn write(
        &mut self,
        source: &Source<'_>,
        batches: &[(&str, &RecordBatch)],
    ) -> Result<(), Error> {
        for &(table, batch) in batches {
            for (key, part) in partition::split(batch)? {
                self.append(table, key, source, &without_partition_columns(&part)?)?;
            }
        }
        let mark = self
            .marks
            .entry(source.fingerprint.to_string())
            .or_default();
        *mark = (*mark).max(source.end_offset);
        // A write with no rows still moves its source's mark: it ages like any other.
        self.opened_at.get_or_insert_with(Instant::now);
        self.keep_within_budget()?;
        if self.should_roll() {
            self.commit()?;
        }
        Ok(())
    }

    fn append(
        &mut self,
        table: &str,
        key: PartitionKey,
        source: &Source<'_>,
        batch: &RecordBatch,
    ) -> Result<(), Error> {
        let (first, last) = offsets(batch)?;
        let slot = (table.to_string(), key);
        if !self.open.contains_key(&slot) {
            self.seq += 1;
            let dir = self.root.join(table).join(slot.1.dir());
            let final_path = dir.join(format!("part-{}-{:06}.parquet", self.id, self.seq));
            let temp_path = dir.join(journal::temp_name(&self.id, self.seq));
            self.opened_at.get_or_insert_with(Instant::now);
            // The footer says what the schema says; a schema that states no version gets the
            // writer's.
            let schema_version = batch
                .schema()
                .metadata()
                .get(META_SCHEMA_VERSION)
                .cloned()
                .unwrap_or_else(|| self.options.schema_version.to_string());
            self.open.insert(
                slot.clone(),
                OpenFile {
                    table: table.to_string(),
                    body: Body::Buffered {
                        batches: Vec::new(),
                        bytes: 0,
                    },
                    final_path,
                    temp_path,
                    rows: 0,
                    sources: BTreeMap::new(),
                    row_files: Default::default(),
                    last_use: 0,
                    schema_version,
                },
            );
        }
        self.appends += 1;
        let Some(open) = self.open.get_mut(&slot) else {
            return Ok(());
        };
        let previous = std::mem::replace(&mut open.last_use, self.appends);
        let mut start_writing = false;
        match &mut open.body {
            Body::Buffered { batches, bytes } => {
                self.buffered_lru.remove(&previous);
                let size = batch.get_array_memory_size();
                batches.push(batch.clone());
                *bytes += size;
                self.buffered_bytes += size;
                if *bytes >= STREAM_BYTES {
                    start_writing = true;
                } else {
                    self.buffered_lru.insert(self.appends, slot.clone());
                }
            }
            Body::Writing(file) => {
                file.write(batch)?;
                self.writing_lru.remove(&previous);
                self.writing_lru.insert(self.appends, slot.clone());
            }
        }
        open.rows += batch.num_rows() as u64;
        record_row_files(batch, &mut open.row_files);
        let range = SourceRange {
            fingerprint: source.fingerprint.to_string(),
            file: source.file.to_string(),
            first_offset: first,
            last_offset: last,
            end_offset: 0,
            rows: batch.num_rows() as u64,
        };
        match open.sources.get_mut(source.fingerprint) {
            Some(r) => r.merge(&range),
            None => {
                open.sources.insert(source.fingerprint.to_string(), range);
            }
        }
        if start_writing {
            if self.writing_lru.len() >= self.options.max_open_files.max(1) {
                self.close_least_recent(false)?;
            }
            self.start_writing(&slot)?;
        }
        // Many small partitions: the oldest are sealed once they hold too much together. Never
        // the one just appended to: its footer would be written before this write's end offset
        // is known, and the source's final mark could then be in no file.
        while self.buffered_bytes > self.options.memory_budget / 2
            || self.buffered_lru.len() > MAX_EPOCH_FILES / 2
        {
            let oldest = self.buffered_lru.first_key_value().map(|(_, s)| s);
            if oldest.is_none_or(|s| *s == slot) || !self.close_least_recent(true)? {
                break;
            }
        }
        Ok(())
    }

    /// Turns a buffered file into a streaming Parquet file.
    fn start_writing(&mut self, slot: &Slot) -> Result<(), Error> {
        let Some(open) = self.open.get_mut(slot) else {
            return Ok(());
        };
        let Body::Buffered { batches, bytes } = std::mem::replace(
            &mut open.body,
            Body::Buffered {
                batches: Vec::new(),
                bytes: 0,
            },
        ) else {
            return Ok(());
        };
        self.buffered_bytes -= bytes;
        let file = write_all(open, &batches, &self.options.parquet)?;
        open.body = Body::Writing(Box::new(file));
        self.writing_lru.insert(open.last_use, slot.clone());
        Ok(())
    }

    /// Row groups are flushed early when the open files together buffer more than the budget:
    /// a backfill over many days and servers must not hold a row group per partition.
    fn keep_within_budget(&mut self) -> Result<(), Error> {
        let budget = self.options.memory_budget;
        for _ in 0..self.writing_lru.len() {
            let mut total = self.buffered_bytes;
            let mut largest: Option<(&Slot, usize)> = None;
            for slot in self.writing_lru.values() {
                let Some(OpenFile {
                    body: Body::Writing(f),
                    ..
                }) = self.open.get(slot)
                else {
                    continue;
                };
                let b = f.buffered_bytes();
                total += b;
                if largest.is_none_or(|(_, lb)| b > lb) {
                    largest = Some((slot, b));
                }
            }
            let Some((slot, _)) = largest.filter(|_| total > budget) else {
                return Ok(());
            };
            let slot = slot.clone();
            if let Some(OpenFile {
                body: Body::Writing(f),
                ..
            }) = self.open.get_mut(&slot)
            {
                f.flush_row_group()?;
            }
        }
        Ok(())
    }

    fn should_roll(&self) -> bool {
        let o = &self.options;
        self.closed.len() + self.open.len() >= MAX_EPOCH_FILES
            || self
                .opened_at
                .is_some_and(|t| t.elapsed() >= o.max_file_age)
            || self.open.values().any(|f| {
                f.rows >= o.max_file_rows
                    || matches!(&f.body, Body::Writing(w) if w.bytes() as u64 >= o.max_file_bytes)
            })
    }

    /// True when every write so far is committed (none waits for the next epoch).
    pub fn is_committed(&self) -> bool {
        self.open.is_empty() && self.closed.is_empty() && self.marks.is_empty()
    }

    /// Commits if the oldest open file has reached its age; for a live agent's idle ticks.
    pub fn tick(&mut self) -> Result<(), Error> {
        if self.should_roll() {
            self.commit()?;
        }
        Ok(())
    }

    /// Seals the buffered (or the writing) file used least recently; it is committed with the
    /// epoch. False when there is none.
    fn close_least_recent(&mut self, buffered: bool) -> Result<bool, Error> {
        let lru = if buffered {
            &mut self.buffered_lru
        } else {
            &mut self.writing_lru
        };
        let Some((_, slot)) = lru.pop_first() else {
            return Ok(false);
        };
        if let Some(f) = self.open.remove(&slot) {
            if let Body::Buffered { bytes, .. } = &f.body {
                self.buffered_bytes -= bytes;
            }
            let done = self.close_file(f)?;
            self.closed.push(done);
        }
        Ok(true)
    }

    /// Seals a file: its footer records the provenance and, per source, the end offset reached
    /// by the writes finished so far. Those writes all belong to this epoch, which commits
    /// whole, so the mark is true of the lake once the epoch is committed. A source's last write
    /// of the epoch leaves the file it touched last open (only the least recently used is closed
    /// early), so one of its files always records its final mark.
    fn close_file(&self, mut f: OpenFile) -> Result<Finished, Error> {
        let mut file = match std::mem::replace(
            &mut f.body,
            Body::Buffered {
                batches: Vec::new(),
                bytes: 0,
            },
        ) {
            Body::Writing(file) => *file,
            Body::Buffered { batches, .. } => {
                let small = ParquetOptions {
                    compress: false,
                    ..self.options.parquet.clone()
                };
                write_all(&f, &batches, &small)?
            }
        };
        let sources: Vec<SourceRange> = std::mem::take(&mut f.sources)
            .into_values()
            .map(|mut r| {
                r.end_offset = self.marks.get(&r.fingerprint).copied().unwrap_or_default();
                r
            })
            .collect();
        file.append_metadata(META_VERSION, env!("CARGO_PKG_VERSION"));
        file.append_metadata(META_SCHEMA_VERSION, f.schema_version);
        file.append_metadata(META_TABLE, f.table);
        if !f.row_files.is_empty()
            && let Ok(json) = serde_json::to_string(&f.row_files)
        {
            file.append_metadata(META_ROW_FILES, json);
        }
        match serde_json::to_string(&sources) {
            Ok(json) => file.append_metadata(META_SOURCES, json),
            Err(e) => {
                let path = file.final_path().to_path_buf();
                file.abort();
                return Err(Error::Journal {
                    path,
                    reason: e.to_string(),
                });
            }
        }
        Ok(file.finish()?)
    }

    /// Runs `barrier` before each commit, which fails if it does. A one-shot ingest skips on a
    /// rerun what the lake holds: with a second sink, the lake must hold nothing that sink has
    /// not made durable, so its commits wait for that sink's flush.
    pub fn set_barrier(&mut self, barrier: Barrier) {
        self.barrier = Some(barrier);
    }

    /// Commits every file of the epoch, open or closed; durable when this returns.
    pub fn commit(&mut self) -> Result<(), Error> {
        if !self.is_committed()
            && let Some(b) = self.barrier.as_mut()
        {
            b().map_err(|reason| Error::Barrier { reason })?;
        }
        let mut open: Vec<_> = std::mem::take(&mut self.open).into_iter().collect();
        open.sort_by(|a, b| a.0.cmp(&b.0));
        self.buffered_lru.clear();
        self.writing_lru.clear();
        self.buffered_bytes = 0;
        let mut finished = std::mem::take(&mut self.closed);
        let mut failure = None;
        for (_, f) in open {
            if failure.is_some() {
                f.abort();
                continue;
            }
            match self.close_file(f) {
                Ok(done) => finished.push(done),
                Err(e) => failure = Some(e),
            }
        }
        self.marks.clear();
        self.opened_at = None;
        let result = match failure {
            Some(e) => Err(e),
            None if self.object.is_some() => self.publish_to_store(&finished),
            None => self
                .publish(&finished)
                .map(|()| finished.iter().map(|f| f.committed.clone()).collect()),
        };
        match result {
            Ok(committed) => {
                self.committed.extend(committed);
                Ok(())
            }
            Err(e) => {
                for f in finished {
                    let _ = fs::remove_file(&f.temp_path);
                }
                Err(e)
            }
        }
    }

    /// Uploads an epoch's files and commits them to their Delta tables.
    fn publish_to_store(&mut self, finished: &[Finished]) -> Result<Vec<Committed>, Error> {
        let Some(object) = self.object.clone() else {
            return Ok(Vec::new());
        };
        if finished.is_empty() {
            return Ok(Vec::new());
        }
        let mut staged = Vec::with_capacity(finished.len());
        for f in finished {
            let relative = f
                .committed
                .path
                .strip_prefix(&self.root)
                .unwrap_or(&f.committed.path)
                .to_string_lossy()
                .replace('\\', "/");
            let table = relative.split('/').next().unwrap_or_default().to_string();
            let (date, server) = crate::object_lake::partition_of(&relative)
                .map(|(d, s)| (partition::unescape_value(d), partition::unescape_value(s)))
                .unwrap_or_default();
            let file = fs::File::open(&f.temp_path).map_err(io_error(&f.temp_path))?;
            let schema =
                parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)
                    .map_err(|e| Error::Footer {
                        path: f.temp_path.clone(),
                        reason: e.to_string(),
                    })?
                    .schema()
                    .clone();
            staged.push(crate::object_lake::Staged {
                table,
                temp_path: f.temp_path.clone(),
                relative,
                partition: [date, server],
                rows: f.committed.rows,
                bytes: f.committed.bytes,
                schema,
            });
        }
        self.epoch += 1;
        object.publish(&self.id, self.epoch, &staged)
    }

    /// Makes an epoch's files durable, then visible together through the journal.
    fn publish(&self, finished: &[Finished]) -> Result<(), Error> {
        if finished.is_empty() {
            return Ok(());
        }
        let temps: Vec<PathBuf> = finished.iter().map(|f| f.temp_path.clone()).collect();
        crate::durable::sync_files(&self.root, &temps)?;
        let relative = |p: &Path| {
            p.strip_prefix(&self.root)
                .unwrap_or(p)
                .to_string_lossy()
                .into_owned()
        };
        let journal = Journal {
            renames: finished
                .iter()
                .map(|f| (relative(&f.temp_path), relative(&f.committed.path)))
                .collect(),
            deletes: Vec::new(),
        };
        journal::record(&self.root, &self.id, &journal)?;
        journal::apply(&self.root, &journal)?;
        journal::clear(&self.root, &self.id)
    }

    /// Commits what is open and releases the writer; returns every file it committed.
    pub fn close(mut self) -> Result<Vec<Committed>, Error> {
        self.commit()?;
        if let Some(lock) = self.lock.take() {
            lock.release();
        }
        Ok(std::mem::take(&mut self.committed))
    }

    /// Drops what is open without committing it (temporaries removed).
    pub fn abort(mut self) {
        for (_, f) in self.open.drain() {
            f.abort();
        }
        for f in self.closed.drain(..) {
            let _ = fs::remove_file(&f.temp_path);
        }
        if let Some(lock) = self.lock.take() {
            lock.release();
        }
    }

    /// The writer's id, part of every file name it writes.
    pub fn id(&self) -> &str {
        &self.id
    }
}

impl OpenFile {
    /// Drops the file; a streaming one's temporary is removed.
    fn abort(self) {
        if let Body::Writing(f) = self.body {
            f.abort();
        }
    }
}

/// Starts the Parquet file of `open` and writes `batches` to it.
fn write_all(
    open: &OpenFile,
    batches: &[RecordBatch],
    options: &ParquetOptions,
) -> Result<ParquetFile, Error> {
    let Some(schema) = batches.first().map(RecordBatch::schema) else {
        return Err(Error::Schema {
            column: "source_offset",
            reason: "a partition file with no rows".into(),
        });
    };
    let mut file = ParquetFile::create(
        open.final_path.clone(),
        open.temp_path.clone(),
        schema,
        options,
    )?;
    for b in batches {
        if let Err(e) = file.write(b) {
            file.abort();
            return Err(e.into());
        }
    }
    Ok(file)
}

/// The batch less the columns its partition folder names (`server`).
fn without_partition_columns(batch: &RecordBatch) -> Result<RecordBatch, Error> {
    let schema = batch.schema();
    let Ok(server) = schema.index_of(partition::SERVER) else {
        return Ok(batch.clone());
    };
    let keep: Vec<usize> = (0..schema.fields().len())
        .filter(|&i| i != server)
        .collect();
    batch.project(&keep).map_err(|e| Error::Arrow(Arc::new(e)))
}

/// First and last `source_offset` of a batch (its rows are in source order).
fn offsets(batch: &RecordBatch) -> Result<(i64, i64), Error> {
    use arrow_array::Array;
    use arrow_array::cast::AsArray;
    let col = batch.column_by_name("source_offset").ok_or(Error::Schema {
        column: "source_offset",
        reason: "missing; every lake table starts with the lineage columns".into(),
    })?;
    if col.data_type() != &arrow_schema::DataType::Int64 || col.null_count() > 0 {
        return Err(Error::Schema {
            column: "source_offset",
            reason: format!("must be a non-null Int64, is {}", col.data_type()),
        });
    }
    let values = col.as_primitive::<arrow_array::types::Int64Type>().values();
    let first = values.iter().copied().min().unwrap_or_default();
    let last = values.iter().copied().max().unwrap_or_default();
    Ok((first, last))
}

/// Whether a file name is one the lake gives: a committed file or a writer's temporary.
pub(crate) fn is_lake_file(name: &str) -> bool {
    (name.starts_with("part-") && name.ends_with(".parquet")) || journal::is_temp(name)
}

/// Committed Parquet files under `root` (every table), sorted.
pub fn committed_files(root: &Path) -> Result<Vec<PathBuf>, Error> {
    let mut files = Vec::new();
    let walker = walkdir::WalkDir::new(root)
        .min_depth(1)
        .sort_by_file_name()
        .into_iter()
        .filter_entry(|e| {
            let name = e.file_name().to_string_lossy();
            !(name.starts_with('.') || name.starts_with('_'))
        });
    for entry in walker {
        let entry = entry.map_err(|e| io_error(root)(e.into()))?;
        let name = entry.file_name().to_string_lossy();
        if entry.file_type().is_file() && name.starts_with("part-") && name.ends_with(".parquet") {
            files.push(entry.into_path());
        }
    }
    Ok(files)
}

/// A committed file's footer key-value metadata.
pub fn footer_metadata(path: &Path) -> Result<HashMap<String, String>, Error> {
    let file = fs::File::open(path).map_err(io_error(path))?;
    let reader = SerializedFileReader::new(file).map_err(|e| Error::Footer {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    Ok(key_values(reader.metadata().file_metadata()))
}

/// A footer's key-value metadata (keys without a value left out).
pub(crate) fn key_values(meta: &parquet::file::metadata::FileMetaData) -> HashMap<String, String> {
    meta.key_value_metadata()
        .into_iter()
        .flatten()
        .filter_map(|kv| Some((kv.key.clone(), kv.value.clone()?)))
        .collect()
}

/// The source ranges a committed file's footer records (none for files mailflow did not write).
pub fn file_sources(path: &Path) -> Result<Vec<SourceRange>, Error> {
    sources_in(path, &footer_metadata(path)?)
}

/// The source ranges recorded in a footer's metadata.
fn sources_in(path: &Path, meta: &HashMap<String, String>) -> Result<Vec<SourceRange>, Error> {
    let Some(json) = meta.get(META_SOURCES) else {
        return Ok(Vec::new());
    };
    serde_json::from_str(json).map_err(|e| Error::Footer {
        path: path.to_path_buf(),
        reason: format!("{META_SOURCES}: {e}"),
    })
}

/// What the lake holds of each source, by fingerprint: read from the footers of committed files.
pub fn committed_sources(root: &Path) -> Result<HashMap<String, SourceProgress>, Error> {
    Ok(holdings(root)?.sources)
}

/// What a lake holds, read from its committed files' footers in one pass.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Holdings {
    /// Per source fingerprint, how far the lake holds it.
    pub sources: HashMap<String, SourceProgress>,
    /// Per table, the schema versions its files were written with.
    pub schema_versions: BTreeMap<String, BTreeSet<String>>,
    /// Per `source_file` value recorded in footers ([`META_ROW_FILES`]): the committed files
    /// holding rows that name it, with their table.
    pub row_files: HashMap<String, Vec<(String, PathBuf)>>,
}

/// The lineage keys (`source_file`, `source_offset`) of a committed file's rows whose
/// `source_file` is one of `files`: reads those two columns only.
pub fn row_keys(
    path: &Path,
    files: &std::collections::HashSet<String>,
) -> Result<Vec<(String, i64)>, Error> {
    let file = fs::File::open(path).map_err(io_error(path))?;
    row_keys_in(file, path, files)
}

/// [`row_keys`] of a file's contents (`path` names it in errors).
pub fn row_keys_in<R: parquet::file::reader::ChunkReader + 'static>(
    file: R,
    path: &Path,
    files: &std::collections::HashSet<String>,
) -> Result<Vec<(String, i64)>, Error> {
    use arrow_array::Array;
    use arrow_array::cast::AsArray;
    use parquet::arrow::ProjectionMask;
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
    let footer = |reason: String| Error::Footer {
        path: path.to_path_buf(),
        reason,
    };
    let builder =
        ParquetRecordBatchReaderBuilder::try_new(file).map_err(|e| footer(e.to_string()))?;
    let schema = builder.parquet_schema();
    let columns: Vec<usize> = ["source_file", "source_offset"]
        .iter()
        .filter_map(|name| schema.columns().iter().position(|c| c.name() == *name))
        .collect();
    if columns.len() != 2 {
        return Ok(Vec::new());
    }
    let mask = ProjectionMask::leaves(schema, columns);
    let reader = builder
        .with_projection(mask)
        .build()
        .map_err(|e| footer(e.to_string()))?;
    let mut out = Vec::new();
    for batch in reader {
        let batch = batch.map_err(|e| footer(e.to_string()))?;
        let (Some(file_col), Some(offsets)) = (
            batch.column_by_name("source_file"),
            batch
                .column_by_name("source_offset")
                .and_then(|c| c.as_primitive_opt::<arrow_array::types::Int64Type>()),
        ) else {
            continue;
        };
        // The lake writes `source_file` dictionary-encoded; a plain column is read as well.
        let (values, keys) = match file_col.as_dictionary_opt::<arrow_array::types::Int32Type>() {
            Some(d) => (d.values().as_string_opt::<i32>(), Some(d.keys())),
            None => (file_col.as_string_opt::<i32>(), None),
        };
        let Some(values) = values else {
            continue;
        };
        for row in 0..batch.num_rows() {
            let at = match keys {
                Some(k) if k.is_valid(row) => k.value(row) as usize,
                Some(_) => continue,
                None if values.is_valid(row) => row,
                None => continue,
            };
            let name = values.value(at);
            if files.contains(name) {
                out.push((name.to_string(), offsets.value(row)));
            }
        }
    }
    Ok(out)
}

/// The distinct `source_file` values of a batch (a dictionary's values; a plain column's rows).
fn record_row_files(batch: &RecordBatch, into: &mut BTreeSet<String>) {
    use arrow_array::cast::AsArray;
    let Some(col) = batch.column_by_name("source_file") else {
        return;
    };
    let strings = match col.as_any_dictionary_opt() {
        Some(d) => d.values().as_string_opt::<i32>(),
        None => col.as_string_opt::<i32>(),
    };
    for v in strings.into_iter().flatten().flatten() {
        if !into.contains(v) {
            into.insert(v.to_string());
        }
    }
}

/// Reads every committed file's footer: the sources it holds, its table and schema version.
pub fn holdings(root: &Path) -> Result<Holdings, Error> {
    holdings_where(root, |_| true)
}

/// [`holdings`] of the committed files `keep` accepts (those modified since a time, say).
pub fn holdings_where(root: &Path, keep: impl Fn(&Path) -> bool) -> Result<Holdings, Error> {
    let mut out = Holdings::default();
    for path in committed_files(root)?.into_iter().filter(|p| keep(p)) {
        let meta = footer_metadata(&path)?;
        absorb(&mut out, &path, &meta)?;
    }
    Ok(out)
}

/// Adds what one committed file's footer says to `out` (`path` is how its rows are found
/// again: a local path, or a key under an object store lake).
pub(crate) fn absorb(
    out: &mut Holdings,
    path: &Path,
    meta: &HashMap<String, String>,
) -> Result<(), Error> {
    if let (Some(table), Some(version)) = (meta.get(META_TABLE), meta.get(META_SCHEMA_VERSION)) {
        out.schema_versions
            .entry(table.clone())
            .or_default()
            .insert(version.clone());
    }
    if let (Some(table), Some(json)) = (meta.get(META_TABLE), meta.get(META_ROW_FILES))
        && let Ok(files) = serde_json::from_str::<Vec<String>>(json)
    {
        for f in files {
            out.row_files
                .entry(f)
                .or_default()
                .push((table.clone(), path.to_path_buf()));
        }
    }
    for range in sources_in(path, meta)? {
        let p = out.sources.entry(range.fingerprint).or_default();
        p.end_offset = p.end_offset.max(range.end_offset);
        p.rows += range.rows;
        p.file = range.file;
    }
    Ok(())
}

#[cfg(test)]
mod tests;
