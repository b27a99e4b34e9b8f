//! Compaction: merges a partition's small files into large ones, atomically.
//!
//! A live agent commits a file per partition every few minutes; a year of that is hundreds of
//! thousands of small files, which DuckDB and Spark read slowly. Compaction rewrites each run of
//! small files (of one partition and one schema) as one file and removes the old ones, in one
//! journaled commit: the new file is written and synced under a hidden name, the journal records
//! "rename it, then delete these", and only then does either happen. A crash before the journal
//! exists leaves the old files and a temporary (removed on the next start); a crash after it is
//! finished on the next start. Rows are neither lost nor duplicated, and the new file's footer
//! carries the union of the old files' source ranges, so resuming stays exact.
//!
//! **What a reader can see.** Plain files have no atomic swap of several names, so between the
//! rename of the new file and the removal of the old ones (a few milliseconds per partition) a
//! reader that lists the partition sees both, and counts those rows twice. If compaction is
//! killed in that window, the state stays until the next mailflow command opens the lake
//! (`ingest`, `compact` or `recover`, which replay the journal first). A reader that must be
//! exact therefore: does not read while a compaction runs, and, after one was killed, runs
//! `mailflow recover --lake DIR` (or checks that `_mailflow/journal/` holds no `*.json`: each
//! one lists under `deletes` the files it replaced) before reading. On object storage the lake is
//! a Delta table, whose commit has no such window.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use arrow_array::RecordBatch;
use arrow_schema::{Schema, SchemaRef};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::file::reader::ChunkReader;

use super::journal::{self, Journal, WriterLock};
use super::{
    Error, META_ROW_FILES, META_SCHEMA_VERSION, META_SOURCES, META_TABLE, META_VERSION, Recovery,
    SourceRange, committed_files,
};
use crate::parquet::{Finished, ParquetFile, ParquetOptions, io_error};

/// What to compact.
#[derive(Debug, Clone)]
pub struct CompactOptions {
    /// Only files last modified longer ago than this (leave the current hour to the agent).
    pub older_than: Duration,
    /// Size to aim for; files at least half this size are left alone.
    pub target_bytes: u64,
    /// Encoding of the merged files.
    pub parquet: ParquetOptions,
}

impl Default for CompactOptions {
    fn default() -> Self {
        CompactOptions {
            older_than: Duration::from_secs(3600),
            target_bytes: 256 << 20,
            parquet: super::LakeOptions::default().parquet,
        }
    }
}

/// What a compaction did.
#[derive(Debug, Clone, Default)]
pub struct CompactReport {
    /// What recovery found first.
    pub recovery: Recovery,
    /// Partitions that had files merged.
    pub partitions: usize,
    /// Files merged away.
    pub files_in: usize,
    /// Files written.
    pub files_out: usize,
    /// Bytes of the merged files.
    pub bytes_in: u64,
    /// Bytes of the files written.
    pub bytes_out: u64,
    /// Rows rewritten.
    pub rows: u64,
}

/// A file that compaction may merge: its path (a local one, or a key under an object store
/// lake), size and schema.
pub(crate) struct Candidate {
    pub(crate) path: PathBuf,
    pub(crate) bytes: u64,
    pub(crate) schema: SchemaRef,
}

/// Compacts every partition of the lake at `root`. Only one compaction runs at a time.
pub fn compact(root: &Path, options: &CompactOptions) -> Result<CompactReport, Error> {
    let state = root.join(journal::STATE_DIR);
    fs::create_dir_all(&state).map_err(io_error(&state))?;
    let guard_path = state.join("compact.lock");
    let guard = File::create(&guard_path).map_err(io_error(&guard_path))?;
    guard.try_lock().map_err(|e| Error::Busy {
        what: guard_path.display().to_string(),
        reason: format!("{e} (another compaction is running)"),
    })?;
    let mut report = CompactReport {
        recovery: journal::recover(root)?,
        ..CompactReport::default()
    };
    let id = super::writer_id();
    let lock = WriterLock::acquire(root, &id)?;
    let now = SystemTime::now();
    let mut partitions: BTreeMap<PathBuf, Vec<Candidate>> = BTreeMap::new();
    for path in committed_files(root)? {
        let meta = fs::metadata(&path).map_err(io_error(&path))?;
        let old_enough = meta
            .modified()
            .ok()
            .and_then(|m| now.duration_since(m).ok())
            .is_some_and(|age| age >= options.older_than);
        if !old_enough || meta.len() >= options.target_bytes / 2 {
            continue;
        }
        let schema = file_schema(&path)?;
        let dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
        partitions.entry(dir).or_default().push(Candidate {
            path,
            bytes: meta.len(),
            schema,
        });
    }
    let mut seq = 0u64;
    for (dir, files) in partitions {
        let mut merged_here = false;
        for (schema, files) in by_schema(files) {
            for bin in bins(files, options.target_bytes) {
                seq += 1;
                merge(root, &dir, &id, seq, &schema, &bin, options, &mut report)?;
                merged_here = true;
            }
        }
        report.partitions += usize::from(merged_here);
    }
    lock.release();
    drop(guard);
    Ok(report)
}

/// A partition's files grouped by schema: files of different schema versions stay apart
/// (readers union them by name anyway).
pub(crate) fn by_schema(files: Vec<Candidate>) -> Vec<(SchemaRef, Vec<Candidate>)> {
    let mut out: Vec<(SchemaRef, Vec<Candidate>)> = Vec::new();
    for c in files {
        match out.iter_mut().find(|(s, _)| *s == c.schema) {
            Some((_, v)) => v.push(c),
            None => out.push((Arc::clone(&c.schema), vec![c])),
        }
    }
    out
}

/// Consecutive runs of files that fit the target together; runs of one file are left as they are.
pub(crate) fn bins(files: Vec<Candidate>, target: u64) -> Vec<Vec<Candidate>> {
    let mut out = Vec::new();
    let mut current: Vec<Candidate> = Vec::new();
    let mut size = 0;
    for c in files {
        if !current.is_empty() && size + c.bytes > target {
            out.push(std::mem::take(&mut current));
            size = 0;
        }
        size += c.bytes;
        current.push(c);
    }
    out.push(current);
    out.retain(|b| b.len() >= 2);
    out
}

/// The file's Arrow schema without file-level metadata (which is per file, not per table).
fn file_schema(path: &Path) -> Result<SchemaRef, Error> {
    let file = File::open(path).map_err(io_error(path))?;
    let builder = ParquetRecordBatchReaderBuilder::try_new(file).map_err(|e| Error::Footer {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    Ok(Arc::new(Schema::new(builder.schema().fields().clone())))
}

#[allow(clippy::too_many_arguments)]
fn merge(
    root: &Path,
    dir: &Path,
    id: &str,
    seq: u64,
    schema: &SchemaRef,
    inputs: &[Candidate],
    options: &CompactOptions,
    report: &mut CompactReport,
) -> Result<(), Error> {
    let final_path = dir.join(format!("part-{id}-{seq:06}.parquet"));
    let temp_path = dir.join(journal::temp_name(id, seq));
    let out = ParquetFile::create(final_path, temp_path, Arc::clone(schema), &options.parquet)?;
    let mut merger = Merger::new(out, schema);
    for input in inputs {
        let file = File::open(&input.path).map_err(io_error(&input.path))?;
        merger.add(file, &input.path)?;
    }
    let done = merger.finish()?;
    crate::durable::sync_files(root, std::slice::from_ref(&done.temp_path))?;
    let relative = |p: &Path| {
        p.strip_prefix(root)
            .unwrap_or(p)
            .to_string_lossy()
            .into_owned()
    };
    let plan = Journal {
        renames: vec![(relative(&done.temp_path), relative(&done.committed.path))],
        deletes: inputs.iter().map(|c| relative(&c.path)).collect(),
    };
    journal::record(root, id, &plan)?;
    journal::apply(root, &plan)?;
    journal::clear(root, id)?;
    report.files_in += inputs.len();
    report.files_out += 1;
    report.bytes_in += inputs.iter().map(|c| c.bytes).sum::<u64>();
    report.bytes_out += done.committed.bytes;
    report.rows += done.committed.rows;
    Ok(())
}

/// Writes the rows of several files of one schema into one, and gives it their provenance: the
/// union of their source ranges and of their rows' source files, so that resuming and reruns
/// read the merged file as they read the files it replaces. Used by both lakes' compactions.
pub(crate) struct Merger {
    out: ParquetFile,
    schema: SchemaRef,
    sources: BTreeMap<String, SourceRange>,
    row_files: BTreeSet<String>,
    table: Option<String>,
    schema_version: Option<String>,
}

impl Merger {
    pub(crate) fn new(out: ParquetFile, schema: &SchemaRef) -> Self {
        Merger {
            out,
            schema: Arc::clone(schema),
            sources: BTreeMap::new(),
            row_files: BTreeSet::new(),
            table: None,
            schema_version: None,
        }
    }

    /// Appends one input file (`path` names it in errors).
    pub(crate) fn add<R: ChunkReader + 'static>(
        &mut self,
        file: R,
        path: &Path,
    ) -> Result<(), Error> {
        let footer = |reason: String| Error::Footer {
            path: path.to_path_buf(),
            reason,
        };
        let builder =
            ParquetRecordBatchReaderBuilder::try_new(file).map_err(|e| footer(e.to_string()))?;
        let meta = super::key_values(builder.metadata().file_metadata());
        self.table = self.table.take().or_else(|| meta.get(META_TABLE).cloned());
        self.schema_version = self
            .schema_version
            .take()
            .or_else(|| meta.get(META_SCHEMA_VERSION).cloned());
        if let Some(json) = meta.get(META_SOURCES) {
            let ranges: Vec<SourceRange> =
                serde_json::from_str(json).map_err(|e| footer(format!("{META_SOURCES}: {e}")))?;
            for r in ranges {
                match self.sources.get_mut(&r.fingerprint) {
                    Some(s) => s.merge(&r),
                    None => {
                        self.sources.insert(r.fingerprint.clone(), r);
                    }
                }
            }
        }
        if let Some(json) = meta.get(META_ROW_FILES) {
            let files: Vec<String> =
                serde_json::from_str(json).map_err(|e| footer(format!("{META_ROW_FILES}: {e}")))?;
            self.row_files.extend(files);
        }
        let reader = builder
            .with_batch_size(8192)
            .build()
            .map_err(|e| footer(e.to_string()))?;
        for batch in reader {
            let batch = batch.map_err(|e| footer(e.to_string()))?;
            let batch = RecordBatch::try_new(Arc::clone(&self.schema), batch.columns().to_vec())
                .map_err(|e| Error::Arrow(Arc::new(e)))?;
            self.out.write(&batch)?;
        }
        Ok(())
    }

    /// Stamps the provenance into the footer and closes the file under its temporary name.
    pub(crate) fn finish(mut self) -> Result<Finished, Error> {
        let out = &mut self.out;
        out.append_metadata(META_VERSION, env!("CARGO_PKG_VERSION"));
        if let Some(v) = self.schema_version {
            out.append_metadata(META_SCHEMA_VERSION, v);
        }
        if let Some(t) = self.table {
            out.append_metadata(META_TABLE, t);
        }
        let path = out.final_path().to_path_buf();
        let json = |e: serde_json::Error| Error::Journal {
            path: path.clone(),
            reason: e.to_string(),
        };
        let ranges: Vec<SourceRange> = self.sources.into_values().collect();
        out.append_metadata(META_SOURCES, serde_json::to_string(&ranges).map_err(json)?);
        if !self.row_files.is_empty() {
            let files: Vec<&String> = self.row_files.iter().collect();
            out.append_metadata(META_ROW_FILES, serde_json::to_string(&files).map_err(json)?);
        }
        Ok(self.out.finish()?)
    }
}
