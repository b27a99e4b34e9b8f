//! One-shot backfill, `mailflow ingest`: files and folders in, the Parquet lake out
//! (`<dir>/<table>/date=…/server=…/part-….parquet`, see `mailflow_sinks::lake`), or the same
//! files as Delta Lake tables in an object store or a folder ([`LakeTarget`],
//! `mailflow_sinks::object_lake`).
//!
//! There is no second pipeline here: [`ingest`] runs the agent's topology ([`crate::agent`])
//! with a finite source, the files found at the start, and a progress bar, and ends once they
//! are read. This module owns what both commands share about files and lakes: finding and
//! sniffing files ([`discover`], [`triage`]), their identity ([`fingerprint`]), where a lake
//! is and what it holds ([`LakeTarget`]), the tables and their schemas, and the summary a run
//! closes with.
//!
//! Exactly once: a source is known by a fingerprint of its first bytes; the run's checkpoints
//! (under the lake's `_mailflow/ingest`) say how far each is finished, and every lake file's
//! footer records how far into each source it is committed. A run first finishes or discards
//! what a killed run left, then reads each file from its checkpoint, and the lake drops the
//! rows it holds already: re-running an ingest, or resuming one that was killed, never writes a
//! line twice and never loses one, and its sessions and messages come out whole.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{IsTerminal, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use arrow_array::RecordBatch;
use arrow_array::cast::AsArray;
use mailflow_enrich::Matcher;
use mailflow_enrich::messages;
use mailflow_enrich::records::{INCOMPATIBLE_BEFORE, SCHEMA_VERSION};
use mailflow_enrich::sessions;
use mailflow_parser::schema::REJECTS;
use mailflow_parser::{Sniffed, Table, server_from_head, sniff};
use mailflow_sinks::es::EsConfig;
use mailflow_sinks::lake::{self, LakeOptions};
use mailflow_sinks::object_lake::{Layout, ObjectLake};
use serde::Serialize;

use crate::config::Source as Input;
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
pub(crate) fn legacy_fingerprint(head: &[u8]) -> String {
    let window = &head[..head.len().min(4096)];
    format!(
        "xxh3:{:016x}:{}",
        xxhash_rust::xxh3::xxh3_64(window),
        window.len()
    )
}

/// A file modified this recently may still be written: at the end of a run, a last line
/// without its line end is left for the next (Exchange completes it), not sent to rejects.
pub(crate) const SETTLE: Duration = Duration::from_secs(600);

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

/// Runs an ingest: the agent's topology ([`crate::agent`]) over the files found now, ending
/// once they are read. Rejects and skipped files are reported, not errors; an unreadable file
/// or a failing output is.
pub fn ingest(opts: &IngestOptions) -> Result<Summary> {
    let started = Instant::now();
    let target = LakeTarget::resolve(&opts.parquet, opts.table_format, opts.staging.as_deref())?;
    if opts.overwrite && target.object.is_some() {
        bail!(
            "--overwrite empties a local Parquet lake; a Delta lake's history is its own: delete its tables with your store's tools, or write to a new prefix"
        );
    }
    let bar = progress_bar(opts.progress);
    let agent = crate::agent::AgentOptions {
        sources: opts.sources.clone(),
        lake: opts.parquet.clone(),
        table_format: opts.table_format,
        lake_options: opts.lake_options.clone(),
        elasticsearch: opts.elasticsearch.clone(),
        // Its checkpoints live with the lake (or its staging folder): a rerun, or a run after
        // a kill, reads on from them.
        state_dir: ingest_state(&target.root),
        matcher: Arc::clone(&opts.matcher),
        threads: opts.threads.max(1),
        batch_size: opts.batch_size,
        max_line_bytes: opts.max_line_bytes,
        event_providers: opts.event_providers.clone(),
        // Folders are looked at once at the start and once at the end.
        poll_interval: Duration::from_secs(3600),
        checkpoint_interval: Duration::from_secs(10),
        // A run that ends writes everything it read, however long that takes; a signal stops
        // it at the next step.
        shutdown_timeout: Duration::from_secs(7 * 86_400),
        read_from: crate::config::ReadFrom::Beginning,
        metrics_addr: None,
        until_idle: true,
        // Every file but a series' last is finished as soon as it is read.
        rotate_after: Duration::ZERO,
        wrap_sink: None,
        finite: Some(crate::agent::Finite {
            target: Some(target),
            overwrite: opts.overwrite,
            progress: Some(bar.clone()),
        }),
    };
    let run = crate::agent::run(agent);
    bar.finish_and_clear();
    let run = run?;
    if run.interrupted {
        bail!("stopped by a signal: what was read is committed, and a re-run goes on from there");
    }
    let mut summary = Summary::from_run(run);
    summary.seconds = started.elapsed().as_secs_f64();
    Ok(summary)
}

/// Where `ingest` keeps its checkpoints for the lake (or staging folder) at `root`.
pub(crate) fn ingest_state(root: &Path) -> PathBuf {
    root.join("_mailflow").join("ingest")
}

/// Empties the lake at `root` (`--overwrite`), and forgets what was read into it: the lake's
/// record of finished files and the checkpoints of `ingest` (`state_dir`).
pub(crate) fn overwrite(root: &Path, state_dir: &Path) -> Result<Overwritten> {
    let tables: Vec<&str> = lake_tables().collect();
    let cleared = lake::clear(root, &tables)
        .with_context(|| format!("--overwrite: emptying {}", root.display()))?;
    for kept in &cleared.kept {
        tracing::warn!(
            file = %escape(&kept.display().to_string()),
            "--overwrite left a file mailflow did not write in place."
        );
    }
    crate::agent::store::Store::remove(state_dir).context("--overwrite")?;
    crate::checkpoint::Checkpoints::remove(root).context("--overwrite")?;
    Ok(Overwritten {
        files: cleared.files,
        bytes: cleared.bytes,
        kept: cleared.kept,
    })
}

impl Summary {
    /// The summary of a finite run of the agent's topology.
    fn from_run(run: crate::agent::RunSummary) -> Self {
        let mut rows = run.rows;
        let rejects = rows.remove(REJECTS).unwrap_or(0);
        rows.retain(|_, n| *n > 0);
        let mut skipped = run.skipped;
        skipped.extend(run.truncated);
        Summary {
            files: run.files,
            bytes: run.bytes,
            rows,
            rejects,
            diagnoses: run.diagnoses,
            lossy_rows: run.lossy_rows,
            seconds: run.seconds,
            skipped,
            failed: run.failed,
            outputs: run.outputs,
            delivered: run.delivered,
            already_in_lake: run.already_in_lake,
            held_back: run.held_back,
            recovered: run.recovered,
            overwritten: run.overwritten,
        }
    }
}

/// A file time (or any system time) as ms since the epoch; 0 before it.
pub(crate) fn file_time_ms(t: std::time::SystemTime) -> i64 {
    t.duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
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

/// A message is written once every server's log is this far past its last event. Two hours,
/// not one: a series may run an hour ahead of another, and a batch of a quiet log spans more,
/// so with one hour a message's events on two servers could reach the correlator more than
/// the timeout apart in reverse order, and whether they made one row or two depended on
/// thread timing (about 10 in 105,000 messages on 1 GiB of mixed logs). Costs up to about
/// 10 MiB of peak RSS on that bench (268-290 MiB against 270-282, three runs each).
pub(crate) const MESSAGE_IDLE: Duration = Duration::from_secs(7200);

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

/// The named columns of a batch (those it has).
pub(crate) fn project(batch: &RecordBatch, names: &[&str]) -> Result<RecordBatch> {
    let indices: Vec<usize> = names
        .iter()
        .filter_map(|n| batch.schema().index_of(n).ok())
        .collect();
    Ok(batch.project(&indices)?)
}

/// The bar a run draws on a terminal (its length is set as files are queued).
fn progress_bar(enabled: bool) -> indicatif::ProgressBar {
    if !enabled || !std::io::stderr().is_terminal() {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(0);
    if let Ok(style) = indicatif::ProgressStyle::with_template(
        "{spinner} [{elapsed_precise}] {wide_bar} {bytes}/{total_bytes} ({bytes_per_sec}, eta {eta})",
    ) {
        bar.set_style(style);
    }
    bar
}
