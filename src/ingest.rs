//! One-shot backfill: files and folders in, the Parquet lake out
//! (`<dir>/<table>/date=…/server=…/part-….parquet`, see `mailflow_sinks::lake`), or the same
//! files as Delta Lake tables in an object store or a folder ([`LakeTarget`],
//! `mailflow_sinks::object_lake`).
//!
//! Files fall into series (a server's files of one kind, read one after the other in time order),
//! and the workers, as many as cores, share the series on a [`Board`]: each takes the series
//! furthest behind in log time, moves it one batch, and gives it back, so every series moves
//! through time together and correlation holds little open (see `plan`). Each worker has its own
//! lake writer: encoding costs more CPU than parsing, and one writer thread fed by all workers
//! kept the second core idle. A file stays with the worker that opened it until it is closed, so
//! its rows reach one writer in order. Memory is bounded by the open files (at most
//! `OPEN_SERIES` decoders) plus the writers' row-group budgets. Files that are not Exchange logs
//! mailflow reads are skipped with a warning and counted, never a failure; an unreadable file
//! fails the run after everything else has been written.
//!
//! Exactly once: a source is known by a fingerprint of its first bytes, and every lake file's
//! footer records how far into each source it is committed. A run first finishes or discards
//! what a killed run left, then skips what the lake already holds: whole files, or the rows of a
//! file before its committed end. Re-running an ingest, or resuming one that was killed, never
//! writes a line twice and never loses one.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::{BufReader, IsTerminal, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use arrow_array::RecordBatch;
use arrow_array::cast::AsArray;
use arrow_array::types::Int64Type;
use crossbeam_channel::{Receiver, Sender, bounded, unbounded};
use mailflow_enrich::Matcher;
use mailflow_enrich::messages::{self, MessageCorrelator};
use mailflow_enrich::records::{INCOMPATIBLE_BEFORE, SCHEMA_VERSION, count_codes};
use mailflow_enrich::sessions::{self, SessionCorrelator};
use mailflow_parser::schema::REJECTS;
use mailflow_parser::{
    BatchSizes, DecoderBuilder, DecoderStats, Flushed, LogReader, Sniffed, Table, server_from_head,
    sniff,
};
use mailflow_sinks::es::EsConfig;
use mailflow_sinks::lake::{self, LakeOptions, Source};
use mailflow_sinks::object_lake::{Layout, ObjectLake};
use mailflow_sinks::sink::{Closed, FanOut, LakeSinkConfig, Shared, Sink};
use serde::Serialize;

use crate::config::Source as Input;
use crate::plan::{Board, Lane, time_order};
use crate::term::escape;

/// What to ingest and how.
#[derive(Debug, Clone)]
pub struct IngestOptions {
    /// What to read: folders (walked recursively) and files, with their filters and server.
    pub sources: Vec<Input>,
    /// The lake's root folder.
    pub parquet: PathBuf,
    /// Parse workers.
    pub threads: usize,
    /// Rows per batch.
    pub batch_size: usize,
    /// Line-length cap.
    pub max_line_bytes: usize,
    /// Encoding and file rolling.
    pub lake_options: LakeOptions,
    /// The diagnosis catalog, compiled.
    pub matcher: Arc<Matcher>,
    /// Draw a progress bar (only on a terminal).
    pub progress: bool,
    /// Empty the lake's tables first instead of adding to them.
    pub overwrite: bool,
    /// Elasticsearch clusters every row goes to as well (the lake's commits wait for them).
    pub elasticsearch: Vec<EsConfig>,
    /// Windows event providers kept from event files.
    pub event_providers: mailflow_parser::Providers,
    /// How the lake's tables are kept: plain Parquet files, or Delta Lake tables.
    pub table_format: TableFormat,
    /// Where files are written before they are uploaded (a lake in an object store); default
    /// [`default_staging`].
    pub staging: Option<PathBuf>,
}

/// How a lake's tables are kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TableFormat {
    /// What the location holds already; else Delta Lake tables in an object store and plain
    /// Parquet in a folder.
    #[default]
    Auto,
    /// Hive-partitioned Parquet files: in a folder, committed by rename; in an object store,
    /// each file visible once its upload completed.
    Parquet,
    /// Delta Lake tables: files committed by transactions in each table's `_delta_log`.
    Delta,
}

/// Where a run writes: the folder its writers write in (the lake itself, or the staging folder
/// of a lake in an object store), and the Delta tables epochs are published to.
#[derive(Debug, Clone)]
pub struct LakeTarget {
    /// The local folder writers write in.
    pub root: PathBuf,
    /// The lake in an object store (or the Delta tables of a local one).
    pub object: Option<Arc<ObjectLake>>,
    /// The lake as given, for people.
    pub shown: String,
}

/// The lake at `lake` when it is one in an object store (a URL: Delta tables, or plain Parquet
/// files if that is what it holds) or a folder whose tables have a `_delta_log`, opened with
/// `staging` as its writers' staging folder (as [`LakeTarget::resolve`] picks it, for the
/// same lake, when `None`); `None` for a folder of plain Parquet tables.
pub fn object_lake_at(
    lake: &Path,
    staging: Option<&Path>,
) -> Result<Option<(Arc<ObjectLake>, PathBuf)>> {
    use mailflow_sinks::store::is_url;
    let text = lake.to_string_lossy();
    let url = is_url(&text);
    let folder = !url && lake_tables().any(|t| lake.join(t).join("_delta_log").is_dir());
    if !url && !folder {
        return Ok(None);
    }
    let (object, shown) = object_location(lake, url)?;
    let tables = table_names();
    let layout = ObjectLake::layout_at(&object, &tables)?.unwrap_or(Layout::Delta);
    let root = staging_root(lake, url, &shown, staging);
    let opened = ObjectLake::open(object, &root, layout)?;
    Ok(Some((opened, root)))
}

/// The object store location of `lake` (a URL, or a folder reached as `file://`), and how it
/// is shown.
fn object_location(
    lake: &Path,
    url: bool,
) -> Result<(mailflow_sinks::store::ObjectLocation, String)> {
    use mailflow_sinks::store::Location;
    let location = if url {
        Location::parse(&lake.to_string_lossy())?
    } else {
        Location::local_as_object(lake)?
    };
    let shown = location.shown();
    let Location::Object(object) = location else {
        bail!("{shown}: not an object store location");
    };
    Ok((object, shown))
}

/// Where a Delta lake's writers stage. A Delta lake in a folder stages beside its tables, in a
/// folder readers skip. A staging folder holds one subfolder per lake: its checkpoints say what
/// is finished in that lake, and must not make a run skip files in another.
fn staging_root(lake: &Path, url: bool, shown: &str, staging: Option<&Path>) -> PathBuf {
    match staging {
        Some(s) => s.join(lake_key(shown)),
        None if !url => lake.join("_mailflow").join("staging"),
        None => default_staging(shown),
    }
}

/// Every table mailflow writes, by name.
pub fn table_names() -> Vec<&'static str> {
    lake_tables().collect()
}

/// The staging folder of a lake in an object store: under the user's local data folder
/// (`~/.local/share`, `%LOCALAPPDATA%`), one per lake, so that a run's checkpoints outlive a
/// reboot.
pub fn default_staging(lake: &str) -> PathBuf {
    let base = std::env::var_os("XDG_DATA_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("LOCALAPPDATA").map(PathBuf::from))
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/share")))
        .unwrap_or_else(std::env::temp_dir);
    base.join("mailflow").join("staging").join(lake_key(lake))
}

/// A lake's subfolder name in a staging folder.
fn lake_key(lake: &str) -> String {
    format!("{:016x}", xxhash_rust::xxh3::xxh3_64(lake.as_bytes()))
}

impl LakeTarget {
    /// The target for `lake` (a folder or a URL) in `format`. One location holds one format:
    /// Delta tables beside plain files would each read as the whole table to some engine.
    pub fn resolve(lake: &Path, format: TableFormat, staging: Option<&Path>) -> Result<Self> {
        use mailflow_sinks::store::is_url;
        let text = lake.to_string_lossy();
        let url = is_url(&text);
        if !url {
            let holds_delta = lake_tables().any(|t| lake.join(t).join("_delta_log").is_dir());
            let format = match format {
                TableFormat::Auto if holds_delta => TableFormat::Delta,
                TableFormat::Auto => TableFormat::Parquet,
                f => f,
            };
            if format == TableFormat::Parquet {
                if holds_delta {
                    bail!(
                        "{} holds Delta tables: write plain Parquet tables to another folder, or leave out the parquet table format",
                        lake.display()
                    );
                }
                return Ok(LakeTarget {
                    root: lake.to_path_buf(),
                    object: None,
                    shown: lake.display().to_string(),
                });
            }
            if let Some(plain) = lake_tables()
                .map(|t| lake.join(t))
                .find(|t| t.is_dir() && !t.join("_delta_log").is_dir())
            {
                bail!(
                    "{} holds a plain Parquet table ({}): write Delta tables to a new folder, or leave out --table-format delta",
                    lake.display(),
                    plain.display()
                );
            }
        }
        let (object, shown) = object_location(lake, url)?;
        let layout = if url {
            let found = ObjectLake::layout_at(&object, &table_names())?;
            match (format, found) {
                (TableFormat::Parquet, Some(Layout::Delta)) => bail!(
                    "{shown} holds Delta tables: leave out --table-format parquet, or write plain files to another prefix"
                ),
                (TableFormat::Delta, Some(Layout::Files)) => bail!(
                    "{shown} holds plain Parquet files: give --table-format parquet, or write Delta tables to another prefix"
                ),
                (TableFormat::Parquet, _) => Layout::Files,
                (TableFormat::Delta, _) => Layout::Delta,
                (TableFormat::Auto, found) => found.unwrap_or(Layout::Delta),
            }
        } else {
            Layout::Delta
        };
        let root = staging_root(lake, url, &shown, staging);
        let object = ObjectLake::open(object, &root, layout)?;
        Ok(LakeTarget {
            root,
            object: Some(object),
            shown,
        })
    }
}

/// The closing summary of a run.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Summary {
    /// Files parsed.
    pub files: u64,
    /// Input bytes parsed.
    pub bytes: u64,
    /// Rows per table.
    pub rows: BTreeMap<String, u64>,
    /// Lines sent to rejects.
    pub rejects: u64,
    /// Rows per diagnosis code (`mailflow diagnose` tells what they mean).
    pub diagnoses: BTreeMap<String, u64>,
    /// Rows kept with invalid UTF-8 replaced.
    pub lossy_rows: u64,
    /// Wall-clock seconds.
    pub seconds: f64,
    /// Files skipped, with the reason: not logs mailflow reads, copies of a file read in this
    /// run, files shorter than what the lake holds of them.
    pub skipped: Vec<Skipped>,
    /// Files that could not be read, with the error.
    pub failed: Vec<Skipped>,
    /// Parquet files committed.
    pub outputs: Vec<PathBuf>,
    /// What other sinks counted (`<sink>.stored`, `.duplicates`, `.dead_lettered`…).
    pub delivered: BTreeMap<String, u64>,
    /// What the lake already held: files skipped whole, and lines not written again.
    pub already_in_lake: AlreadyInLake,
    /// What was left for a later run because it is still being written.
    pub held_back: HeldBack,
    /// Interrupted commits of an earlier, killed run that this run finished or discarded.
    pub recovered: Recovered,
    /// What `--overwrite` removed first.
    pub overwritten: Overwritten,
}

/// What `--overwrite` removed: only files the lake wrote.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Overwritten {
    /// Lake files removed.
    pub files: u64,
    /// Their bytes.
    pub bytes: u64,
    /// Files in table folders that mailflow did not write, left in place.
    pub kept: Vec<PathBuf>,
}

/// What an earlier run had committed, and this one did not write again.
#[derive(Debug, Clone, Default, Serialize)]
pub struct AlreadyInLake {
    /// Files committed whole.
    pub files: u64,
    /// Lines of partly committed files.
    pub lines: u64,
}

/// What a run left for the next because Exchange is still writing it.
#[derive(Debug, Clone, Default, Serialize)]
pub struct HeldBack {
    /// New files with no complete line past their header yet.
    pub files: u64,
    /// Files whose last line has no line end yet (modified in the last ten minutes).
    pub lines: u64,
}

/// What recovery did before the run.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Recovered {
    /// Commits finished from their journal.
    pub journals_replayed: usize,
    /// Temporaries of killed writers removed.
    pub temporaries_removed: usize,
}

/// A file passed over, and why.
#[derive(Debug, Clone, Serialize)]
pub struct Skipped {
    /// The file.
    pub path: PathBuf,
    /// Why.
    pub reason: String,
}

impl Summary {
    /// Adds what a writer left behind: its files, its counts.
    fn take_closed(&mut self, closed: Closed) {
        self.outputs.extend(closed.files);
        for (k, v) in closed.counts {
            *self.delivered.entry(k).or_default() += v;
        }
    }

    /// Throughput in MB/s (10^6 bytes).
    pub fn mb_per_sec(&self) -> f64 {
        if self.seconds > 0.0 {
            self.bytes as f64 / 1e6 / self.seconds
        } else {
            0.0
        }
    }

    /// The summary for a person.
    pub fn render(&self) -> String {
        let mut s = format!(
            "{} files, {:.1} MB in {:.2} s ({:.1} MB/s)",
            self.files,
            self.bytes as f64 / 1e6,
            self.seconds,
            self.mb_per_sec()
        );
        if !self.skipped.is_empty() {
            s += &format!("; {} skipped", self.skipped.len());
        }
        if !self.failed.is_empty() {
            s += &format!("; {} FAILED", self.failed.len());
        }
        s.push('\n');
        let o = &self.overwritten;
        if o.files > 0 || !o.kept.is_empty() {
            s += &format!(
                "  --overwrite removed {} lake files ({:.1} MB) first",
                o.files,
                o.bytes as f64 / 1e6
            );
            if !o.kept.is_empty() {
                s += &format!("; kept {} files mailflow did not write", o.kept.len());
            }
            s.push('\n');
        }
        let a = &self.already_in_lake;
        if a.files > 0 || a.lines > 0 {
            s += &format!(
                "  already in the lake, not written again: {} files whole, {} lines of partly written files\n",
                a.files, a.lines
            );
        }
        let h = &self.held_back;
        if h.files > 0 || h.lines > 0 {
            s += &format!(
                "  still being written, left for the next run: {} new files with no complete line yet, {} partial last lines\n",
                h.files, h.lines
            );
        }
        let r = &self.recovered;
        if r.journals_replayed > 0 || r.temporaries_removed > 0 {
            s += &format!(
                "  an earlier run was interrupted: {} commits finished, {} partial files removed\n",
                r.journals_replayed, r.temporaries_removed
            );
        }
        for (table, rows) in &self.rows {
            s += &format!("  {table:<20} {rows:>12} rows\n");
        }
        s += &render_delivered(&self.delivered);
        s += &format!("  {:<20} {:>12} lines", "rejects", self.rejects);
        if self.rejects > 0 {
            s += "  (raw line, file, offset and reason under rejects/)";
        }
        s.push('\n');
        if !self.diagnoses.is_empty() {
            let total: u64 = self.diagnoses.values().sum();
            let mut top: Vec<_> = self.diagnoses.iter().collect();
            top.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
            s += &format!("  {total} rows diagnosed (`mailflow diagnose` explains):\n");
            for (code, n) in top.iter().take(8) {
                s += &format!("    {code:<40} {n:>10}\n");
            }
            if top.len() > 8 {
                s += &format!("    and {} more codes\n", top.len() - 8);
            }
        }
        if self.lossy_rows > 0 {
            s += &format!(
                "  {} rows had invalid UTF-8, kept with U+FFFD\n",
                self.lossy_rows
            );
        }
        // Every failure; the first skips (a folder may hold many files that are not logs).
        const SHOWN: usize = 10;
        for f in self.skipped.iter().take(SHOWN) {
            s += &format!(
                "  skipped: {}: {}\n",
                escape(&f.path.display().to_string()),
                escape(&f.reason)
            );
        }
        if self.skipped.len() > SHOWN {
            s += &format!(
                "  and {} more skipped (--summary-json lists them)\n",
                self.skipped.len() - SHOWN
            );
        }
        for f in &self.failed {
            s += &format!(
                "  failed: {}: {}\n",
                escape(&f.path.display().to_string()),
                escape(&f.reason)
            );
        }
        s
    }
}

/// Every file under `paths`, sorted, hidden files and folders excluded (except when named).
pub fn discover(sources: &[Input]) -> Result<Discovered> {
    let mut out = Discovered::default();
    // A file named twice (overlapping paths: `corp` and `corp/EX01`, or a link to it) is read
    // once: its canonical path decides.
    let mut seen = std::collections::HashSet::new();
    let mut add = |out: &mut Discovered, path: PathBuf, source: usize| {
        let key = std::fs::canonicalize(&path).unwrap_or_else(|_| path.clone());
        if seen.insert(key) {
            out.files.push((path, source));
        }
    };
    for (k, source) in sources.iter().enumerate() {
        for path in &source.paths {
            let meta = match std::fs::metadata(path) {
                Ok(m) => m,
                Err(e) if !source.strict && e.kind() == std::io::ErrorKind::NotFound => {
                    tracing::info!(path = %escape(&path.display().to_string()), "No such folder here; passed over.");
                    continue;
                }
                Err(e) => {
                    return Err(e).with_context(|| format!("{}: cannot read", path.display()));
                }
            };
            if meta.is_file() {
                // A file named on its own is read whatever its name.
                add(&mut out, path.clone(), k);
                continue;
            }
            // Links are followed (a log folder linked into the input is read); walkdir stops
            // at a loop. A folder that cannot be read is reported and the rest is read.
            let walker = walkdir::WalkDir::new(path)
                .follow_links(true)
                .sort_by_file_name()
                .into_iter()
                .filter_entry(|e| {
                    e.depth() == 0 || !e.file_name().to_string_lossy().starts_with('.')
                });
            for entry in walker {
                match entry {
                    Ok(entry) if entry.file_type().is_file() => {
                        if source.wants(entry.path()) && !too_old(&entry, source.ignore_older) {
                            add(&mut out, entry.into_path(), k);
                        }
                    }
                    Ok(_) => {}
                    Err(e) => {
                        let at = e.path().unwrap_or(path).to_path_buf();
                        let reason = e
                            .io_error()
                            .map_or_else(|| e.to_string(), ToString::to_string);
                        tracing::warn!(path = %escape(&at.display().to_string()), %reason, "Cannot read; the rest is read.");
                        out.unreadable.push(Skipped { path: at, reason });
                    }
                }
            }
        }
    }
    Ok(out)
}

/// Whether a file was last modified longer ago than `limit`.
fn too_old(entry: &walkdir::DirEntry, limit: Option<Duration>) -> bool {
    limit.is_some_and(|limit| {
        entry
            .metadata()
            .ok()
            .and_then(|m| m.modified().ok())
            .and_then(|m| m.elapsed().ok())
            .is_some_and(|age| age > limit)
    })
}

/// What [`discover`] found: the files to read (with the index of their source), and what
/// could not be read.
#[derive(Debug, Default)]
pub struct Discovered {
    pub files: Vec<(PathBuf, usize)>,
    pub unreadable: Vec<Skipped>,
}

/// The host name, the server of last resort for rows that name none.
pub fn host_name() -> String {
    gethostname::gethostname().to_string_lossy().into_owned()
}

enum Msg {
    Done(
        DecoderStats,
        BTreeMap<&'static str, u64>,
        BTreeMap<String, u64>,
        Vec<String>,
    ),
    Failed(PathBuf, String),
    /// Rows of derived tables written after the last file.
    Derived(BTreeMap<&'static str, u64>),
}

/// Counts bytes read, for the progress bar.
struct Counting<R> {
    inner: R,
    total: Arc<AtomicU64>,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.total.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

/// What a run does with a file it found.
#[derive(Debug)]
pub enum Triage {
    /// An Exchange log mailflow reads, with its first bytes.
    Read {
        /// The file.
        path: PathBuf,
        /// Its first 64 KiB.
        head: Vec<u8>,
        /// The server its first rows name (canonical), if they name one.
        server: Option<String>,
        /// The table its rows go to, when its header or name says.
        table: Option<Table>,
    },
    /// Not a log mailflow reads: skipped with a warning, never a failure.
    Skip(Skipped),
    /// Could not be read.
    Fail(Skipped),
}

/// Sniffs a file and says what to do with it; skips are logged as warnings.
pub fn triage(path: PathBuf) -> Triage {
    let shown = path.to_string_lossy().into_owned();
    match head(&path) {
        Err(e) => Triage::Fail(Skipped {
            path,
            reason: e.to_string(),
        }),
        Ok(head) => match sniff(&shown, &head) {
            Sniffed::Readable(kind) => {
                let server = server_from_head(&shown, &head);
                Triage::Read {
                    path,
                    head,
                    server,
                    table: kind.map(mailflow_parser::LogKind::table),
                }
            }
            Sniffed::Unsupported(log_type) => {
                tracing::warn!(file = %escape(&shown), log_type = %escape(&log_type), "Skipping an Exchange log of a type mailflow does not read.");
                Triage::Skip(Skipped {
                    path,
                    reason: format!("log type {log_type:?} is not read"),
                })
            }
            Sniffed::NotALog => {
                tracing::warn!(file = %escape(&shown), "Skipping a file that is not an Exchange transport log.");
                Triage::Skip(Skipped {
                    path,
                    reason: "not an Exchange transport log".into(),
                })
            }
        },
    }
}

/// Reads the first bytes of a file for [`sniff`].
fn head(path: &Path) -> std::io::Result<Vec<u8>> {
    let mut buf = Vec::with_capacity(HEAD_BYTES);
    File::open(path)?
        .take(HEAD_BYTES as u64)
        .read_to_end(&mut buf)?;
    Ok(buf)
}

/// Bytes read from a file's start to sniff and identify it.
pub(crate) const HEAD_BYTES: usize = 64 * 1024;

/// Every table folder mailflow writes under a lake root.
fn lake_tables() -> impl Iterator<Item = &'static str> {
    table_schemas().into_iter().map(|(name, _)| name)
}

/// Every table mailflow writes, with the Arrow schema it writes it in: the parsed tables with
/// their diagnosis columns, `rejects`, and the derived `smtp_sessions` and `messages`.
pub fn table_schemas() -> Vec<(&'static str, arrow_schema::SchemaRef)> {
    Table::ALL
        .iter()
        .map(|t| {
            let parsed = mailflow_parser::schema(*t);
            (
                t.name(),
                mailflow_enrich::records::enriched_schema(*t, &parsed),
            )
        })
        .chain([
            (REJECTS, mailflow_parser::rejects_schema()),
            (sessions::TABLE, sessions::schema()),
            (messages::TABLE, messages::schema()),
        ])
        .collect()
}

/// Refuses a lake holding files of a table that engines cannot read together with what this
/// build writes (a column whose type changed since: [`INCOMPATIBLE_BEFORE`]).
pub(crate) fn refuse_incompatible_lake(root: &Path, holdings: &lake::Holdings) -> Result<()> {
    for &(table, since) in INCOMPATIBLE_BEFORE {
        let mut held = holdings.schema_versions.get(table).into_iter().flatten();
        if let Some(old) = held.find(|v| v.parse::<u32>().map_or(true, |v| v < since)) {
            bail!(
                "the lake at {} holds `{table}` files of schema version {old}, which engines \
                 cannot read together with the version {SCHEMA_VERSION} this mailflow writes \
                 (see the README's notes on schema versions); ingest into a new lake, or add \
                 --overwrite to empty this one first",
                root.display()
            );
        }
    }
    Ok(())
}

/// Identity of a source file: the server it is filed under, its header block (which holds the
/// millisecond `#Date` Exchange stamps when it creates the file) and its first line, hashed.
/// Not its name (Exchange's names repeat from server to server), not its length (a growing file
/// keeps its identity), and not its bytes alone (two servers' files may begin alike): the same
/// answer in one run as in several. `None` while the file has no complete first line yet; it is
/// read once it has.
pub fn fingerprint(server: &str, head: &[u8]) -> Option<String> {
    // Events and queue snapshots are written whole, and their first lines repeat from file to
    // file (`Log Name: Application`, a queue list's first queue): their identity is their
    // content, the first 64 KiB (the whole of nearly every one).
    if mailflow_parser::detect_records(head).is_some() {
        let mut h = xxhash_rust::xxh3::Xxh3::new();
        h.update(server.as_bytes());
        h.update(b"\0records\0");
        h.update(head);
        return Some(format!("xxh3r:{:016x}", h.digest()));
    }
    // A first line longer than the head read (a line past any limit) is identified by the head.
    let end = identity_end(head).or((head.len() >= HEAD_BYTES).then_some(head.len()))?;
    let block = &head[..end];
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    h.update(server.as_bytes());
    h.update(b"\0");
    h.update(block);
    Some(format!("xxh3h:{:016x}", h.digest()))
}

/// Where the bytes that identify a file end: after its first line that is not a `#` directive
/// (so two files whose headers match, as they do without `#Date`, still differ); `None` if that
/// line is not complete yet.
fn identity_end(head: &[u8]) -> Option<usize> {
    let mut pos = 0;
    loop {
        let nl = pos + memchr::memchr(b'\n', &head[pos..])?;
        let line = &head[pos..nl];
        let line = line.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(line);
        if !line.starts_with(b"#") && !line.trim_ascii().is_empty() {
            return Some(nl + 1);
        }
        pos = nl + 1;
    }
}

/// The identity earlier versions gave a file (a hash of its first 4 KiB and that length):
/// looked up when a lake holds no entry under [`fingerprint`], so a lake they wrote is resumed,
/// not written again.
fn legacy_fingerprint(head: &[u8]) -> String {
    let window = &head[..head.len().min(4096)];
    format!(
        "xxh3:{:016x}:{}",
        xxhash_rust::xxh3::xxh3_64(window),
        window.len()
    )
}

/// A file modified this recently may still be written: a last line without its line end is
/// left for the next run (Exchange completes it), not sent to rejects.
pub(crate) const SETTLE: Duration = Duration::from_secs(600);

/// How far to read a file of `len` bytes now: to its end, or, while it may still be written, to
/// the end of its last complete line.
fn readable_end(path: &Path, len: u64, modified: Option<std::time::SystemTime>) -> u64 {
    let settled = modified
        .and_then(|m| m.elapsed().ok())
        .is_some_and(|age| age > SETTLE);
    if settled || len == 0 {
        return len;
    }
    last_line_end(path, len).unwrap_or(len)
}

/// The offset just past the last `\n` in the first `len` bytes of the file (0 if none).
pub(crate) fn last_line_end(path: &Path, len: u64) -> std::io::Result<u64> {
    use std::io::{Seek, SeekFrom};
    const BLOCK: u64 = 64 * 1024;
    let mut file = File::open(path)?;
    let mut end = len;
    let mut buf = vec![0; BLOCK as usize];
    while end > 0 {
        let from = end.saturating_sub(BLOCK);
        let n = (end - from) as usize;
        file.seek(SeekFrom::Start(from))?;
        file.read_exact(&mut buf[..n])?;
        if let Some(i) = memchr::memrchr(b'\n', &buf[..n]) {
            return Ok(from + i as u64 + 1);
        }
        end = from;
    }
    Ok(0)
}

/// Runs an ingest. Rejects and skipped files are reported, not errors; an unreadable file or a
/// failing output is.
pub fn ingest(opts: &IngestOptions) -> Result<Summary> {
    let started = Instant::now();
    let target = LakeTarget::resolve(&opts.parquet, opts.table_format, opts.staging.as_deref())?;
    let root = &target.root;
    let mut summary = Summary::default();
    if opts.overwrite && target.object.is_some() {
        bail!(
            "--overwrite empties a local Parquet lake; a Delta lake's history is its own: delete its tables with your store's tools, or write to a new prefix"
        );
    }
    if opts.overwrite {
        lake::ensure_clearable(root)
            .with_context(|| format!("--overwrite: emptying {}", root.display()))?;
    }
    std::fs::create_dir_all(root).with_context(|| format!("creating {}", root.display()))?;
    // One run writes a lake at a time; held until the run ends.
    let _lock = lake::LakeLock::acquire(root)?;
    if opts.overwrite {
        let tables: Vec<&str> = lake_tables().collect();
        let cleared = lake::clear(root, &tables)
            .with_context(|| format!("--overwrite: emptying {}", root.display()))?;
        for kept in &cleared.kept {
            tracing::warn!(
                file = %escape(&kept.display().to_string()),
                "--overwrite left a file mailflow did not write in place."
            );
        }
        summary.overwritten = Overwritten {
            files: cleared.files,
            bytes: cleared.bytes,
            kept: cleared.kept,
        };
    }
    std::fs::create_dir_all(root).with_context(|| format!("creating {}", root.display()))?;
    let recovery = lake::recover(root).context("recovering the lake")?;
    summary.recovered = Recovered {
        journals_replayed: recovery.journals_replayed,
        temporaries_removed: recovery.temporaries_removed,
    };
    let holdings = match &target.object {
        Some(delta) => {
            summary.recovered.journals_replayed += delta
                .recover()
                .with_context(|| format!("recovering {}", target.shown))?;
            let tables: Vec<&str> = lake_tables().collect();
            delta
                .holdings(&tables, |_| true)
                .with_context(|| format!("reading what {} holds", target.shown))?
        }
        None => lake::holdings(root).context("reading what the lake holds")?,
    };
    refuse_incompatible_lake(root, &holdings)?;
    let lake::Holdings {
        sources: committed,
        row_files,
        ..
    } = holdings;
    let mut checkpoints = crate::checkpoint::Checkpoints::load(root)?;
    let host = host_name();
    let mut jobs: Vec<Job> = Vec::new();
    // The first path of each file identity in this run.
    let mut queued: HashMap<String, PathBuf> = HashMap::new();
    let discovered = discover(&opts.sources)?;
    summary.failed.extend(discovered.unreadable);
    for (path, source) in discovered.files {
        match triage(path) {
            Triage::Read {
                path,
                head,
                server,
                table,
            } => {
                let meta = std::fs::metadata(&path).ok();
                let size = meta.as_ref().map_or(0, std::fs::Metadata::len);
                let server = opts.sources[source].server.clone().or(server);
                let filed_under = DecoderBuilder::new(path.to_string_lossy())
                    .with_server(server.clone())
                    .with_default_server(&host)
                    .server();
                let Some(fingerprint) = fingerprint(&filed_under, &head) else {
                    // No complete line yet: Exchange is writing it.
                    summary.held_back.files += 1;
                    continue;
                };
                if let Some(first) = queued.get(&fingerprint) {
                    tracing::warn!(file = %escape(&path.display().to_string()), same_as = %escape(&first.display().to_string()), "Skipping a copy of a file already read in this run.");
                    summary.skipped.push(Skipped {
                        reason: format!("a copy of {}", first.display()),
                        path,
                    });
                    continue;
                }
                queued.insert(fingerprint.clone(), path.clone());
                let resume_from = committed
                    .get(&fingerprint)
                    .or_else(|| committed.get(&legacy_fingerprint(&head)))
                    .map_or(0, |p| p.end_offset);
                if resume_from > size {
                    // Exchange only appends: a file shorter than what the lake holds of it was
                    // cut or replaced under its first line. Its rows would land on offsets the
                    // lake already has; it is reported, not read.
                    let reason = format!(
                        "shorter ({size} bytes) than the {resume_from} bytes the lake holds of it: truncated or replaced; not read again"
                    );
                    tracing::warn!(file = %escape(&path.display().to_string()), %reason, "A file shrank since it was read.");
                    summary.skipped.push(Skipped { path, reason });
                    continue;
                }
                let modified = meta.as_ref().and_then(|m| m.modified().ok());
                let format = table.and(mailflow_parser::detect_records(&head));
                // Events and snapshots are written whole; an `.evtx` has no lines to wait for.
                let len = if format.is_some() {
                    size
                } else {
                    readable_end(&path, size, modified)
                };
                summary.held_back.lines += u64::from(len < size);
                // Held whole, and finished: its sessions and messages too (see `checkpoint`).
                // A file whose lines the lake holds but that no run finished is read again.
                if resume_from >= len && (len == 0 || checkpoints.is_complete(&fingerprint, len)) {
                    if size > 0 && len == size {
                        summary.already_in_lake.files += 1;
                    }
                    continue;
                }
                let start = crate::plan::start_time(&head);
                jobs.push(Job {
                    path,
                    len,
                    fingerprint,
                    resume_from,
                    server,
                    filed_under,
                    start,
                    tracking: table == Some(Table::MessageTracking),
                    format,
                    modified: modified.map(file_time_ms),
                });
            }
            Triage::Skip(s) => summary.skipped.push(s),
            Triage::Fail(s) => summary.failed.push(s),
        }
    }
    let derived = Arc::new(
        DerivedKeys::read(&row_files, &jobs, |path, names| match &target.object {
            Some(delta) => Ok(delta.row_keys(path, names)?),
            None => Ok(lake::row_keys(path, names)?),
        })
        .context("reading what the lake holds of sessions")?,
    );
    // What this run finishes if it ends without error (see `checkpoint`).
    let reading: Vec<(String, PathBuf, u64)> = jobs
        .iter()
        .map(|j| (j.fingerprint.clone(), j.path.clone(), j.len))
        .collect();
    let total_bytes: u64 = jobs.iter().map(|j| j.len).sum();
    let progress = Arc::new(AtomicU64::new(0));
    let bar = progress_bar(opts.progress, total_bytes);
    // The workers share the series, each taking the one furthest behind in log time a batch at
    // a time (see `plan`): sessions stay whole and messages close as the logs move on.
    let threads = opts.threads.max(1);
    let lead = i64::try_from(SERIES_LEAD.as_millis()).unwrap_or(i64::MAX);
    let series = series_of(jobs, threads);
    // A run that another run of its series continues has no events past the other's start.
    let bounds: Vec<(Arc<str>, i64)> = series
        .iter()
        .filter_map(|s| Some((Arc::clone(&s.stream), s.until?)))
        .collect();
    // Every tracking series holds messages open from its start, before a worker reaches it:
    // else a message seen on one server would close before another server's series, not yet
    // begun, adds its events to it, and whether it did would depend on thread timing.
    let starts: Vec<(Arc<str>, i64)> = series
        .iter()
        .filter(|s| s.tracking && s.mark > i64::MIN)
        .map(|s| (Arc::clone(&s.stream), s.mark))
        .collect();
    let board = Arc::new(Board::new(series, OPEN_SERIES.max(threads), lead));
    let (tx, rx) = bounded::<Msg>(64);
    // Messages cross servers, whose logs different workers read: one thread correlates the
    // tracking events of all of them, with a lake writer of its own.
    let (msg_tx, msg_rx) = bounded::<ToMessages>(4);
    let message_thread = {
        let (target, mut options) = (target.clone(), opts.lake_options.clone());
        let held = Arc::clone(&derived);
        let es = opts.elasticsearch.clone();
        options.schema_version = SCHEMA_VERSION;
        // One row per message is a small table; its writer gets a small share of memory.
        options.memory_budget = (options.memory_budget / 4).max(1 << 20);
        std::thread::Builder::new()
            .name("messages".into())
            .spawn(move || correlate_messages(&msg_rx, &target, options, &held, &es))
            .context("starting the message correlation thread")?
    };
    for (stream, start) in starts {
        let _ = msg_tx.send(ToMessages::Start(stream, start));
    }
    for (stream, until) in bounds {
        let _ = msg_tx.send(ToMessages::Until(stream, until));
    }
    let workers: Vec<_> = (0..threads)
        .map(|k| {
            let (tx, msg_tx, progress, opts, host, board, derived, target) = (
                tx.clone(),
                msg_tx.clone(),
                Arc::clone(&progress),
                opts.clone(),
                host.clone(),
                Arc::clone(&board),
                Arc::clone(&derived),
                target.clone(),
            );
            std::thread::spawn(move || -> Result<Closed> {
                let mut options = opts.lake_options.clone();
                options.schema_version = SCHEMA_VERSION;
                let mut writer = sinks(&target, options, &opts.elasticsearch)
                    .with_context(|| format!("starting lake writer {k}"))?;
                match worker(
                    (&board, k),
                    (&tx, &msg_tx),
                    &progress,
                    &opts,
                    &host,
                    (writer.as_mut(), &derived),
                ) {
                    Ok(()) => Ok(writer.close()?),
                    Err(e) => {
                        writer.abort();
                        Err(e)
                    }
                }
            })
        })
        .collect();
    drop(tx);
    drop(msg_tx);

    collect(&rx, &mut summary, &bar, &progress);
    let mut first_error = None;
    for w in workers {
        match w.join() {
            Ok(Ok(closed)) => summary.take_closed(closed),
            Ok(Err(e)) => first_error = first_error.or(Some(e)),
            Err(_) => {
                first_error = first_error.or(Some(anyhow::anyhow!("a parse worker panicked")))
            }
        }
    }
    match message_thread.join() {
        Ok(Ok((closed, n))) => {
            summary.take_closed(closed);
            if n > 0 {
                *summary.rows.entry(messages::TABLE.to_string()).or_default() += n;
            }
        }
        Ok(Err(e)) => first_error = first_error.or(Some(e)),
        Err(_) => {
            first_error = first_error.or(Some(anyhow::anyhow!(
                "the message correlation thread panicked"
            )))
        }
    }
    if let Some(e) = first_error {
        return Err(e.context(
            "writing the lake failed; what was committed stays, and a re-run resumes after it",
        ));
    }
    // Every writer has committed: each file read whole is finished, its sessions and messages
    // included.
    let failed: std::collections::HashSet<&Path> =
        summary.failed.iter().map(|f| f.path.as_path()).collect();
    for (fingerprint, path, len) in &reading {
        if !failed.contains(path.as_path()) {
            checkpoints.set(fingerprint, &path.to_string_lossy(), *len);
        }
    }
    checkpoints.save()?;
    summary.outputs.sort();
    bar.finish_and_clear();
    summary.seconds = started.elapsed().as_secs_f64();
    Ok(summary)
}

/// A file to parse.
struct Job {
    path: PathBuf,
    len: u64,
    fingerprint: String,
    /// Rows before this offset are in the lake already.
    resume_from: u64,
    /// The server the file's rows name (or `--server`).
    server: Option<String>,
    /// The server the decoder files its rows under.
    filed_under: String,
    /// When its first row was written.
    start: Option<i64>,
    /// A message tracking log (its rows go to message correlation).
    tracking: bool,
    /// Events or a queue snapshot, and how they are written.
    format: Option<mailflow_parser::RecordFormat>,
    /// When the file was last written (a snapshot's time), ms since the epoch.
    modified: Option<i64>,
}

/// A file time (or any system time) as ms since the epoch; 0 before it.
pub(crate) fn file_time_ms(t: std::time::SystemTime) -> i64 {
    t.duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// Sessions and messages the lake already holds whose first line is in a file this run reads,
/// by lineage key (`source_file`, `source_offset`). A run killed after one worker committed a
/// session and before another committed the lines it began with reads those lines again and
/// makes the session again: it is dropped here, not stored twice. Read only from the files
/// whose footers name this run's files ([`lake::META_ROW_FILES`]).
#[derive(Debug, Default)]
struct DerivedKeys {
    /// By `source_file`, the `source_offset`s held.
    sessions: HashMap<String, std::collections::HashSet<i64>>,
    messages: HashMap<String, std::collections::HashSet<i64>>,
}

impl DerivedKeys {
    fn read(
        row_files: &HashMap<String, Vec<(String, PathBuf)>>,
        jobs: &[Job],
        row_keys: impl Fn(&Path, &std::collections::HashSet<String>) -> Result<Vec<(String, i64)>>,
    ) -> Result<Self> {
        let mut out = DerivedKeys::default();
        let names: std::collections::HashSet<String> = jobs
            .iter()
            .map(|j| j.path.to_string_lossy().into_owned())
            .filter(|n| row_files.contains_key(n))
            .collect();
        let mut files: Vec<&(String, PathBuf)> = names
            .iter()
            .flat_map(|n| row_files.get(n).into_iter().flatten())
            .filter(|(table, _)| table == sessions::TABLE || table == messages::TABLE)
            .collect();
        files.sort();
        files.dedup();
        for (table, path) in files {
            let held = if table == sessions::TABLE {
                &mut out.sessions
            } else {
                &mut out.messages
            };
            for (file, offset) in row_keys(path, &names)? {
                held.entry(file).or_default().insert(offset);
            }
        }
        Ok(out)
    }

    /// `batch` (of `table`) without the rows the lake holds; `None` if none is left.
    fn drop_held(&self, table: &str, batch: RecordBatch) -> Result<Option<RecordBatch>> {
        let held = if table == sessions::TABLE {
            &self.sessions
        } else {
            &self.messages
        };
        if held.is_empty() {
            return Ok(Some(batch));
        }
        let files = arrow_cast::cast(
            batch
                .column_by_name("source_file")
                .context("a derived batch without source_file")?,
            &arrow_schema::DataType::Utf8,
        )?;
        let files = files.as_string::<i32>();
        let offsets = batch
            .column_by_name("source_offset")
            .and_then(|c| c.as_primitive_opt::<Int64Type>())
            .context("a derived batch without source_offset")?;
        let keep: arrow_array::BooleanArray = (0..batch.num_rows())
            .map(|r| {
                let is_held = held
                    .get(files.value(r))
                    .is_some_and(|o| o.contains(&offsets.value(r)));
                Some(!is_held)
            })
            .collect();
        let kept = arrow_select::filter::filter_record_batch(&batch, &keep)?;
        Ok((kept.num_rows() > 0).then_some(kept))
    }
}

/// A lake writer behind the sink contract, with the Elasticsearch sinks beside it.
///
/// A rerun of ingest skips what the lake holds, so the lake may hold nothing a cluster has
/// not stored: its commits wait for every cluster's flush (see `LakeWriter::set_barrier`).
/// Then a kill loses nothing (what the lake did not commit is read again, and the clusters
/// answer 409 for what they hold) and duplicates nothing (document ids are the lineage).
fn sinks(target: &LakeTarget, options: LakeOptions, es: &[EsConfig]) -> Result<Box<dyn Sink>> {
    let config = LakeSinkConfig {
        name: "lake".into(),
        root: target.root.clone(),
        options,
        resume: None,
        object: target.object.clone(),
    };
    let mut lake = config.build()?;
    if es.is_empty() {
        return Ok(Box::new(lake));
    }
    let clusters: Vec<Shared> = es
        .iter()
        .map(|c| Ok(Shared::new(Box::new(c.build()?))))
        .collect::<Result<_>>()?;
    let mut barriers: Vec<_> = clusters.iter().map(Shared::barrier).collect();
    lake.set_barrier(Box::new(move || barriers.iter_mut().try_for_each(|b| b())));
    // The lake first: closing it commits (after the barrier), and frees the clusters.
    let mut all: Vec<Box<dyn Sink>> = vec![Box::new(lake)];
    all.extend(clusters.into_iter().map(|c| Box::new(c) as Box<dyn Sink>));
    Ok(Box::new(FanOut::new(all)))
}

/// What other sinks than the lake counted, for the closing summary.
pub(crate) fn render_delivered(delivered: &BTreeMap<String, u64>) -> String {
    let mut s = String::new();
    let mut sinks: Vec<&str> = delivered
        .keys()
        .filter_map(|k| k.rsplit_once('.').map(|(sink, _)| sink))
        .collect();
    sinks.dedup();
    for sink in sinks {
        let get = |c: &str| delivered.get(&format!("{sink}.{c}")).copied().unwrap_or(0);
        s += &format!(
            "  {sink}: {} documents stored, {} held already, {} dead-lettered; {} requests, {} retries, {:.1} MB sent\n",
            get("stored"),
            get("duplicates"),
            get("dead_lettered"),
            get("requests"),
            get("retries"),
            get("bytes_sent") as f64 / 1e6,
        );
    }
    s
}

/// Where a worker sends its tracking batches: the message correlation thread, with the way
/// back for the batch's memory and the stream it belongs to.
struct TrackedTo<'a> {
    messages: &'a Sender<ToMessages>,
    back: &'a Sender<RecordBatch>,
    stream: &'a Arc<str>,
}

/// What the workers tell the message correlation thread.
enum ToMessages {
    Batch(Tracked),
    /// A series has been read to its end: its stream holds nothing back.
    EndStream(Arc<str>),
    /// A run of a series has no events after this time (the next run starts there).
    Until(Arc<str>, i64),
    /// A series will add events from this time on.
    Start(Arc<str>, i64),
}

/// An enriched tracking batch on its way to message correlation, with where it came from.
struct Tracked {
    /// The worker's run of one server's files: read in time order, so its progress tells when
    /// a message can receive no more events from it.
    stream: Arc<str>,
    fingerprint: String,
    file: String,
    batch: RecordBatch,
    /// Where the batch goes back to be dropped: memory is best freed by the thread that
    /// allocated it (mimalloc hands memory freed by another thread back late, and the worker
    /// then faults in fresh pages for every batch: a third of the run in the kernel).
    back: Sender<RecordBatch>,
}

/// Correlates tracking events into `messages` and writes them; returns the files committed and
/// the rows written.
fn correlate_messages(
    rx: &Receiver<ToMessages>,
    target: &LakeTarget,
    options: LakeOptions,
    derived: &DerivedKeys,
    es: &[EsConfig],
) -> Result<(Closed, u64)> {
    let mut writer = sinks(target, options, es).context("starting the messages writer")?;
    let mut correlator = MessageCorrelator::new(MESSAGE_IDLE);
    let mut rows = 0u64;
    let mut last: Option<(String, String)> = None;
    let mut write =
        |writer: &mut dyn Sink, batch: RecordBatch, (fp, file): &(String, String)| -> Result<()> {
            let Some(batch) = derived.drop_held(messages::TABLE, batch)? else {
                return Ok(());
            };
            rows += batch.num_rows() as u64;
            // end_offset 0: this writer commits on its own schedule, so its files must not tell a
            // restart that the source's lines are committed (the workers' files say that).
            let source = Source {
                fingerprint: fp,
                file,
                end_offset: 0,
            };
            Ok(writer.write(&source, &[(messages::TABLE, &batch)])?)
        };
    let result = (|| -> Result<()> {
        for msg in rx {
            let t = match msg {
                ToMessages::Batch(t) => t,
                ToMessages::Until(stream, until) => {
                    correlator.stream_until(&stream, until);
                    continue;
                }
                ToMessages::Start(stream, start) => {
                    correlator.expect_stream(&stream, start);
                    continue;
                }
                ToMessages::EndStream(stream) => {
                    correlator.end_stream(&stream);
                    continue;
                }
            };
            correlator.add_from(&t.stream, &t.batch);
            // The worker may be gone at the very end; then the batch is freed here.
            let _ = t.back.send(t.batch);
            let from = (t.fingerprint, t.file);
            if let Some(b) = correlator.take(4096)? {
                write(writer.as_mut(), b, &from)?;
            }
            last = Some(from);
        }
        if let (Some(b), Some(from)) = (correlator.finish()?, &last) {
            write(writer.as_mut(), b, from)?;
        }
        Ok(())
    })();
    match result {
        Ok(()) => Ok((writer.close()?, rows)),
        Err(e) => {
            writer.abort();
            Err(e)
        }
    }
}

/// A message is written once every server's log is this far past its last event. Two hours,
/// not one: a series may run an hour ahead of another, and a batch of a quiet log spans more,
/// so with one hour a message's events on two servers could reach the correlator more than
/// the timeout apart in reverse order, and whether they made one row or two depended on
/// thread timing (about 10 in 105,000 messages on 1 GiB of mixed logs). Costs up to about
/// 10 MiB of peak RSS on that bench (268-290 MiB against 270-282, three runs each).
pub(crate) const MESSAGE_IDLE: Duration = Duration::from_secs(7200);

/// One log series: a server's files of one kind (`MSGTRK…`, `RECV…` in one folder), read
/// oldest first, with its own session correlation (a session never leaves its series).
struct Series {
    /// The series' stream in message correlation.
    stream: Arc<str>,
    /// Its files are message tracking logs.
    tracking: bool,
    /// The server its files are filed under.
    server: String,
    /// The series it is a run of, when a series is cut into runs (see `series_of`).
    kin: usize,
    /// For a run that another run continues: where that one starts.
    until: Option<i64>,
    files: std::collections::VecDeque<Job>,
    open: Option<OpenFile>,
    /// The log time the series has reached: its last batch's last row, or its next file's start.
    mark: i64,
    sizes: BatchSizes,
    sessions: SessionCorrelator,
    /// The last file read (where the sessions left open at the end are filed).
    last: Option<(String, String, u64)>,
}

impl Lane for Series {
    fn mark(&self) -> i64 {
        self.mark
    }
    fn is_open(&self) -> bool {
        self.open.is_some()
    }
    fn is_done(&self) -> bool {
        self.open.is_none() && self.files.is_empty()
    }
    fn group(&self) -> &str {
        &self.server
    }
    fn kin(&self) -> usize {
        self.kin
    }
}

/// The file a series is reading.
struct OpenFile {
    reader: LogReader<BufReader<Counting<std::io::Take<File>>>>,
    path: PathBuf,
    name: String,
    fingerprint: String,
    len: u64,
    resume_from: u64,
    rows: BTreeMap<&'static str, u64>,
    diagnoses: BTreeMap<String, u64>,
}

/// How far in log time a series may run ahead of the one furthest behind: about one batch of a
/// quiet server's log, so workers rarely wait, and messages wait at most this much longer.
const SERIES_LEAD: Duration = Duration::from_secs(3600);

/// Series with a file open at once (each holds a decoder and a batch in progress), at least
/// one per worker.
const OPEN_SERIES: usize = 4;

/// The run's files as series, each in time order.
fn series_of(mut jobs: Vec<Job>, threads: usize) -> Vec<Series> {
    jobs.sort_by(|a, b| time_order((a.start, &a.path), (b.start, &b.path)));
    let mut series: Vec<Series> = Vec::new();
    let mut index: BTreeMap<(String, String, String), usize> = BTreeMap::new();
    for job in jobs {
        let key = series_key(&job);
        let i = *index.entry(key.clone()).or_insert_with(|| {
            series.push(Series {
                stream: format!("{}/{}/{}", key.0, key.1, key.2).into(),
                tracking: job.tracking,
                server: key.0.clone(),
                kin: series.len(),
                until: None,
                files: Default::default(),
                open: None,
                mark: job.start.unwrap_or(i64::MIN),
                sizes: BatchSizes::default(),
                sessions: SessionCorrelator::new(SESSION_TIMEOUT),
                last: None,
            });
            series.len() - 1
        });
        series[i].files.push_back(job);
    }
    // Fewer series than workers (one server's tracking logs, say): the largest is cut into
    // runs of consecutive files, read side by side with their own sessions and message
    // streams. A session that crosses a cut is written as two.
    while series.len() < threads {
        let Some(k) = (0..series.len())
            .filter(|&k| series[k].files.len() > 1)
            .max_by_key(|&k| series[k].files.iter().map(|j| j.len).sum::<u64>())
        else {
            break;
        };
        let n = series.len();
        let s = &mut series[k];
        let total: u64 = s.files.iter().map(|j| j.len).sum();
        let (mut first, mut at) = (0u64, 0usize);
        while at < s.files.len() - 1 && first + s.files[at].len <= total / 2 {
            first += s.files[at].len;
            at += 1;
        }
        let later = s.files.split_off(at.max(1));
        let later_start = later.front().and_then(|j| j.start);
        let run = Series {
            stream: format!("{}#{n}", s.stream).into(),
            tracking: s.tracking,
            server: s.server.clone(),
            kin: s.kin,
            // The later run ends where this one's end did.
            until: s.until,
            mark: later.front().and_then(|j| j.start).unwrap_or(i64::MIN),
            files: later,
            open: None,
            sizes: BatchSizes::default(),
            sessions: SessionCorrelator::new(SESSION_TIMEOUT),
            last: None,
        };
        s.until = later_start.or(s.until);
        series.push(run);
    }
    series
}

/// What names a series: its server, its folder and the letters its file names start with.
fn series_key(job: &Job) -> (String, String, String) {
    series_of_file(&job.filed_under, &job.path)
}

/// The series of a file filed under `server`: the server, the folder, the letters its name
/// starts with (`MSGTRKMS`, `RECV`).
pub(crate) fn series_of_file(server: &str, path: &Path) -> (String, String, String) {
    let folder = path
        .parent()
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_default();
    let prefix = path
        .file_name()
        .map(|n| {
            n.to_string_lossy()
                .chars()
                .take_while(|c| c.is_ascii_alphabetic())
                .collect::<String>()
                .to_ascii_uppercase()
        })
        .unwrap_or_default();
    (server.to_string(), folder, prefix)
}

/// A worker: takes the series furthest behind from the board, moves it one step (opens its next
/// file, or decodes, enriches and writes one batch, or closes a finished file), and gives it
/// back, until every series is done. Per-file and per-series order are kept; across series the
/// run moves through log time together.
fn worker(
    (board, me): (&Board<Series>, usize),
    (tx, msg_tx): (&Sender<Msg>, &Sender<ToMessages>),
    progress: &Arc<AtomicU64>,
    opts: &IngestOptions,
    host: &str,
    (writer, derived): (&mut dyn Sink, &DerivedKeys),
) -> Result<()> {
    // A worker that panics holding a series would leave the others waiting for it for ever:
    // the run fails instead, as it does on an error.
    struct FailOnPanic<'a>(&'a Board<Series>);
    impl Drop for FailOnPanic<'_> {
        fn drop(&mut self) {
            if std::thread::panicking() {
                self.0.fail();
            }
        }
    }
    let _guard = FailOnPanic(board);
    let (back, returned) = unbounded::<RecordBatch>();
    while let Some((i, mut s)) = board.take(me) {
        returned.try_iter().for_each(drop);
        let step = step(
            &mut s,
            (tx, msg_tx, &back),
            progress,
            opts,
            host,
            (writer, derived),
        );
        match step {
            Ok(()) => board.put(i, s, me),
            Err(e) => {
                board.fail();
                return Err(e);
            }
        }
    }
    Ok(())
}

/// One step of a series (see [`worker`]).
fn step(
    s: &mut Series,
    (tx, msg_tx, back): (&Sender<Msg>, &Sender<ToMessages>, &Sender<RecordBatch>),
    progress: &Arc<AtomicU64>,
    opts: &IngestOptions,
    host: &str,
    (writer, derived): (&mut dyn Sink, &DerivedKeys),
) -> Result<()> {
    let Some(f) = s.open.as_mut() else {
        let Some(job) = s.files.pop_front() else {
            return Ok(());
        };
        let name = job.path.to_string_lossy().into_owned();
        let decoder = DecoderBuilder::new(name.clone())
            .with_sizes(std::mem::take(&mut s.sizes))
            .with_server(job.server)
            .with_default_server(host)
            .with_kind(job.format.map(mailflow_parser::LogKind::Records))
            .with_file_time(job.modified)
            .with_event_providers(opts.event_providers.clone())
            .with_batch_size(opts.batch_size)
            .with_max_line_bytes(opts.max_line_bytes)
            .build();
        match File::open(&job.path) {
            Ok(file) => {
                // Up to the end this run reads: a last line still being written waits.
                let counting = Counting {
                    inner: file.take(job.len),
                    total: Arc::clone(progress),
                };
                s.open = Some(OpenFile {
                    reader: LogReader::new(decoder, BufReader::with_capacity(128 * 1024, counting)),
                    path: job.path,
                    name,
                    fingerprint: job.fingerprint,
                    len: job.len,
                    resume_from: job.resume_from,
                    rows: BTreeMap::new(),
                    diagnoses: BTreeMap::new(),
                });
            }
            Err(e) => {
                let _ = tx.send(Msg::Failed(job.path, e.to_string()));
                return finish_series(s, msg_tx, tx, opts, (writer, derived));
            }
        }
        return Ok(());
    };
    match f.reader.next() {
        Some(Ok(flushed)) => {
            if let Some(t) = flushed.data.as_ref().and_then(|d| last_time(&d.batch)) {
                s.mark = s.mark.max(t);
            }
            let source = Source {
                fingerprint: &f.fingerprint,
                file: &f.name,
                end_offset: flushed.end_offset,
            };
            // A write error stops the run here: nothing after it may be committed.
            write_flushed(
                (writer, derived),
                (
                    &opts.matcher,
                    &mut s.sessions,
                    TrackedTo {
                        messages: msg_tx,
                        back,
                        stream: &s.stream,
                    },
                ),
                &source,
                flushed,
                f.resume_from,
                (&mut f.rows, &mut f.diagnoses),
            )
        }
        end => {
            let Some(mut f) = s.open.take() else {
                return Ok(());
            };
            let decoder = f.reader.decoder_mut();
            s.sizes = decoder.take_sizes();
            let msg = match end {
                Some(Err(e)) => Msg::Failed(f.path, e.to_string()),
                _ => {
                    let notes = decoder
                        .notes()
                        .iter()
                        .map(|n| format!("{}: {n}", f.name))
                        .collect();
                    Msg::Done(decoder.stats(), f.rows, f.diagnoses, notes)
                }
            };
            // The receiver lives until every worker is done; a send cannot fail before that.
            let _ = tx.send(msg);
            s.last = Some((f.fingerprint, f.name, f.len));
            if let Some(next) = s.files.front() {
                s.mark = s.mark.max(next.start.unwrap_or(i64::MIN));
            }
            // Files roll by age too: a long run of small files must not keep one lake file
            // open past its age just because nothing was written to it since.
            writer.tick()?;
            finish_series(s, msg_tx, tx, opts, (writer, derived))
        }
    }
}

/// At a series' end: its message stream ends, and its sessions still open are written as
/// they are (not closed).
fn finish_series(
    s: &mut Series,
    msg_tx: &Sender<ToMessages>,
    tx: &Sender<Msg>,
    opts: &IngestOptions,
    (writer, derived): (&mut dyn Sink, &DerivedKeys),
) -> Result<()> {
    if !s.is_done() {
        return Ok(());
    }
    let _ = msg_tx.send(ToMessages::EndStream(Arc::clone(&s.stream)));
    if let Some(batch) = s.sessions.finish(&opts.matcher)?
        && let Some(batch) = derived.drop_held(sessions::TABLE, batch)?
        && let Some((fingerprint, file, len)) = &s.last
    {
        let source = Source {
            fingerprint,
            file,
            end_offset: *len,
        };
        let n = batch.num_rows() as u64;
        writer.write(&source, &[(sessions::TABLE, &batch)])?;
        let mut rows = BTreeMap::new();
        rows.insert(sessions::TABLE, n);
        let _ = tx.send(Msg::Derived(rows));
    }
    Ok(())
}

/// The time of a batch's last row that has one (rows are in file order, which is time order).
pub(crate) fn last_time(batch: &RecordBatch) -> Option<i64> {
    let t = batch
        .column_by_name("timestamp")?
        .as_primitive_opt::<arrow_array::types::TimestampMillisecondType>()?;
    (0..t.len())
        .rev()
        .find(|&i| arrow_array::Array::is_valid(t, i))
        .map(|i| t.value(i))
}

/// An SMTP session idle this long behind its server's log is closed as incomplete.
pub(crate) const SESSION_TIMEOUT: Duration = Duration::from_secs(600);

fn collect(
    rx: &Receiver<Msg>,
    summary: &mut Summary,
    bar: &indicatif::ProgressBar,
    progress: &AtomicU64,
) {
    loop {
        let msg = match rx.recv_timeout(Duration::from_millis(200)) {
            Ok(m) => m,
            Err(crossbeam_channel::RecvTimeoutError::Timeout) => {
                bar.set_position(progress.load(Ordering::Relaxed));
                continue;
            }
            Err(crossbeam_channel::RecvTimeoutError::Disconnected) => return,
        };
        bar.set_position(progress.load(Ordering::Relaxed));
        match msg {
            Msg::Done(stats, rows, diagnoses, notes) => {
                for (code, n) in diagnoses {
                    *summary.diagnoses.entry(code).or_default() += n;
                }
                summary.files += 1;
                summary.bytes += stats.bytes;
                summary.lossy_rows += stats.lossy_rows;
                for (table, n) in rows {
                    match table {
                        ALREADY => summary.already_in_lake.lines += n,
                        REJECTS => summary.rejects += n,
                        _ => *summary.rows.entry(table.to_string()).or_default() += n,
                    }
                }
                for n in notes {
                    tracing::warn!("{}", escape(&n));
                }
            }
            Msg::Derived(rows) => {
                for (table, n) in rows {
                    *summary.rows.entry(table.to_string()).or_default() += n;
                }
            }
            Msg::Failed(path, reason) => {
                tracing::error!(
                    file = %escape(&path.display().to_string()),
                    error = %escape(&reason),
                    "Reading failed."
                );
                summary.failed.push(Skipped { path, reason });
            }
        }
    }
}

/// Hands one flush (data, diagnosed, and rejects) to the lake, without the rows an earlier run
/// committed. `rows` counts rows written per table (rejects under `rejects`) and, under
/// [`ALREADY`], rows skipped; `diagnoses` counts rows per diagnosis code.
///
/// Correlation sees every row, those the lake holds too: a run resumed after a kill then makes
/// whole the sessions and messages whose first lines it reads again (the lake keeps only the
/// rows it does not hold, and `derived` drops the sessions and messages it holds).
fn write_flushed(
    (writer, derived): (&mut dyn Sink, &DerivedKeys),
    (matcher, sessions, tracked): (&Matcher, &mut SessionCorrelator, TrackedTo<'_>),
    source: &Source<'_>,
    flushed: Flushed,
    resume_from: u64,
    (rows, diagnoses): (&mut BTreeMap<&'static str, u64>, &mut BTreeMap<String, u64>),
) -> Result<()> {
    let mut parts: Vec<(&'static str, RecordBatch)> = Vec::with_capacity(3);
    if let Some(d) = flushed.data {
        let hits = matcher.classify(d.table, &d.batch);
        let b = matcher.enrich_with(d.table, &d.batch, &hits)?;
        match d.table {
            Table::SmtpProtocol => sessions.add(matcher, &b, &hits),
            // Only the columns correlation reads travel: the rest of the batch's memory is
            // freed once the lake has it. The thread lives until every worker is done.
            Table::MessageTracking => {
                let _ = tracked.messages.send(ToMessages::Batch(Tracked {
                    stream: Arc::clone(tracked.stream),
                    fingerprint: source.fingerprint.to_string(),
                    file: source.file.to_string(),
                    batch: project(&b, messages::INPUT_COLUMNS)?,
                    back: tracked.back.clone(),
                }));
            }
            _ => {}
        }
        let (kept, skipped) = lake::rows_from(b, resume_from);
        *rows.entry(ALREADY).or_default() += skipped;
        if let Some(b) = kept {
            *rows.entry(d.table.name()).or_default() += b.num_rows() as u64;
            count_codes(&b, diagnoses);
            parts.push((d.table.name(), b));
        }
    }
    if let Some(r) = flushed.rejects {
        let (kept, skipped) = lake::rows_from(r, resume_from);
        *rows.entry(ALREADY).or_default() += skipped;
        if let Some(b) = kept {
            *rows.entry(REJECTS).or_default() += b.num_rows() as u64;
            parts.push((REJECTS, b));
        }
    }
    if let Some(b) = sessions.take(matcher, 4096)?
        && let Some(b) = derived.drop_held(sessions::TABLE, b)?
    {
        *rows.entry(sessions::TABLE).or_default() += b.num_rows() as u64;
        parts.push((sessions::TABLE, b));
    }
    let refs: Vec<(&str, &RecordBatch)> = parts.iter().map(|(t, b)| (*t, b)).collect();
    writer.write(source, &refs)?;
    Ok(())
}

/// The named columns of a batch (those it has).
pub(crate) fn project(batch: &RecordBatch, names: &[&str]) -> Result<RecordBatch> {
    let indices: Vec<usize> = names
        .iter()
        .filter_map(|n| batch.schema().index_of(n).ok())
        .collect();
    Ok(batch.project(&indices)?)
}

/// Key under which a worker counts the rows it did not write because the lake had them.
const ALREADY: &str = "\0already";

fn progress_bar(enabled: bool, total: u64) -> indicatif::ProgressBar {
    if !enabled || !std::io::stderr().is_terminal() {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(total);
    if let Ok(style) = indicatif::ProgressStyle::with_template(
        "{spinner} [{elapsed_precise}] {wide_bar} {bytes}/{total_bytes} ({bytes_per_sec}, eta {eta})",
    ) {
        bar.set_style(style);
    }
    bar
}
