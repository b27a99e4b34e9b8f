//! One-shot backfill: files and folders in, Parquet out, `<dir>/<table>/part-<worker>.parquet`.
//!
//! Files are parsed in parallel, one decoder per file and as many workers as cores. Each worker
//! encodes its own Parquet files: encoding costs more CPU than parsing, and one writer thread fed
//! by all workers kept the second core idle. Batches never cross threads, so memory is bounded by
//! one batch plus one row group in progress per worker and table. Files that are not Exchange logs
//! mailflow reads are skipped with a warning and counted, never a failure; an unreadable file fails
//! the run after everything else has been written.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{IsTerminal, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use crossbeam_channel::{Receiver, Sender, bounded, unbounded};
use mailflow_parser::schema::{REJECTS, SCHEMA_VERSION};
use mailflow_parser::{
    BatchSizes, DecoderBuilder, DecoderStats, Flushed, Sniffed, Table, rejects_schema, schema,
    sniff,
};
use mailflow_sinks::parquet::{ParquetFile, ParquetOptions};
use serde::Serialize;

/// What to ingest and how.
#[derive(Debug, Clone)]
pub struct IngestOptions {
    /// Files and folders (walked recursively).
    pub paths: Vec<PathBuf>,
    /// Output folder: `<dir>/<table>/part-<worker>.parquet`.
    pub parquet: PathBuf,
    /// Forces the server name of every row.
    pub server: Option<String>,
    /// Parse workers.
    pub threads: usize,
    /// Rows per batch.
    pub batch_size: usize,
    /// Line-length cap.
    pub max_line_bytes: usize,
    /// Parquet encoding.
    pub parquet_options: ParquetOptions,
    /// Draw a progress bar (only on a terminal).
    pub progress: bool,
    /// Replace the output of an earlier run in the same folder instead of refusing.
    pub overwrite: bool,
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
    /// Rows kept with invalid UTF-8 replaced.
    pub lossy_rows: u64,
    /// Wall-clock seconds.
    pub seconds: f64,
    /// Files skipped (not logs mailflow reads), with the reason.
    pub skipped: Vec<Skipped>,
    /// Files that could not be read, with the error.
    pub failed: Vec<Skipped>,
    /// Parquet files written.
    pub outputs: Vec<PathBuf>,
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
            s += &format!("; {} skipped (not logs mailflow reads)", self.skipped.len());
        }
        if !self.failed.is_empty() {
            s += &format!("; {} FAILED", self.failed.len());
        }
        s.push('\n');
        for (table, rows) in &self.rows {
            s += &format!("  {table:<20} {rows:>12} rows\n");
        }
        s += &format!("  {:<20} {:>12} lines", "rejects", self.rejects);
        if self.rejects > 0 {
            s += "  (raw line, file, offset and reason under rejects/)";
        }
        s.push('\n');
        if self.lossy_rows > 0 {
            s += &format!(
                "  {} rows had invalid UTF-8, kept with U+FFFD\n",
                self.lossy_rows
            );
        }
        for f in &self.failed {
            s += &format!("  failed: {}: {}\n", f.path.display(), f.reason);
        }
        s
    }
}

/// Every file under `paths`, sorted, hidden files and folders excluded (except when named).
pub fn discover(paths: &[PathBuf]) -> Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for path in paths {
        let meta =
            std::fs::metadata(path).with_context(|| format!("{}: cannot read", path.display()))?;
        if meta.is_file() {
            files.push(path.clone());
            continue;
        }
        let walker = walkdir::WalkDir::new(path)
            .sort_by_file_name()
            .into_iter()
            .filter_entry(|e| e.depth() == 0 || !e.file_name().to_string_lossy().starts_with('.'));
        for entry in walker {
            let entry = entry.with_context(|| format!("walking {}", path.display()))?;
            if entry.file_type().is_file() {
                files.push(entry.into_path());
            }
        }
    }
    Ok(files)
}

/// The host name, the server of last resort for rows that name none.
pub fn host_name() -> String {
    gethostname::gethostname().to_string_lossy().into_owned()
}

enum Msg {
    Done(DecoderStats, BTreeMap<&'static str, u64>, Vec<String>),
    Failed(PathBuf, String),
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

/// Reads the first bytes of a file for [`sniff`].
fn head(path: &Path) -> std::io::Result<Vec<u8>> {
    let mut buf = Vec::with_capacity(64 * 1024);
    File::open(path)?.take(64 * 1024).read_to_end(&mut buf)?;
    Ok(buf)
}

/// Parquet parts an earlier run left in `dir` (`<table>/part-*.parquet`).
fn earlier_output(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut found = Vec::new();
    let names = Table::ALL.iter().map(|t| t.name()).chain([REJECTS]);
    for table in names {
        let Ok(entries) = std::fs::read_dir(dir.join(table)) else {
            continue;
        };
        for entry in entries {
            let path = entry
                .with_context(|| format!("reading {}", dir.display()))?
                .path();
            let name = path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            if name.starts_with("part-") && name.ends_with(".parquet") {
                found.push(path);
            }
        }
    }
    Ok(found)
}

/// Runs an ingest. Rejects and skipped files are reported, not errors; an unreadable file or a
/// failing output is.
pub fn ingest(opts: &IngestOptions) -> Result<Summary> {
    let started = Instant::now();
    // Output of an earlier run mixed with this one's would count its rows twice.
    let earlier = earlier_output(&opts.parquet)?;
    if !earlier.is_empty() && !opts.overwrite {
        anyhow::bail!(
            "{} already holds output of an earlier run ({} and {} more); use an empty folder, or --overwrite to replace it",
            opts.parquet.display(),
            earlier[0].display(),
            earlier.len() - 1
        );
    }
    for path in earlier {
        std::fs::remove_file(&path).with_context(|| format!("removing {}", path.display()))?;
    }
    mailflow_sinks::parquet::remove_temporaries(&opts.parquet)?;
    let mut summary = Summary::default();
    let mut jobs: Vec<(PathBuf, u64)> = Vec::new();
    for path in discover(&opts.paths)? {
        let shown = path.to_string_lossy().into_owned();
        match head(&path).map(|h| sniff(&shown, &h)) {
            Ok(Sniffed::Readable(_)) => {
                let len = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
                jobs.push((path, len));
            }
            Ok(Sniffed::Unsupported(log_type)) => {
                tracing::warn!(file = %path.display(), log_type, "Skipping an Exchange log of a type mailflow does not read.");
                summary.skipped.push(Skipped {
                    path,
                    reason: format!("log type {log_type:?} is not read"),
                });
            }
            Ok(Sniffed::NotALog) => {
                tracing::warn!(file = %path.display(), "Skipping a file that is not an Exchange transport log.");
                summary.skipped.push(Skipped {
                    path,
                    reason: "not an Exchange transport log".into(),
                });
            }
            Err(e) => summary.failed.push(Skipped {
                path,
                reason: e.to_string(),
            }),
        }
    }
    // Largest first, so the last file to finish is a small one and both cores stay busy.
    jobs.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    let total_bytes: u64 = jobs.iter().map(|j| j.1).sum();
    let progress = Arc::new(AtomicU64::new(0));
    let bar = progress_bar(opts.progress, total_bytes);

    let threads = opts.threads.max(1);
    let (job_tx, job_rx) = unbounded::<PathBuf>();
    for (path, _) in &jobs {
        job_tx.send(path.clone()).context("queueing files")?;
    }
    drop(job_tx);
    let (tx, rx) = bounded::<Msg>(64);
    let host = host_name();
    let workers: Vec<_> = (0..threads)
        .map(|k| {
            let (job_rx, tx, progress, opts, host) = (
                job_rx.clone(),
                tx.clone(),
                Arc::clone(&progress),
                opts.clone(),
                host.clone(),
            );
            std::thread::spawn(move || -> Result<Vec<PathBuf>> {
                let mut writers = Writers::new(&opts.parquet, k, &opts.parquet_options);
                match worker(&job_rx, &tx, &progress, &opts, &host, &mut writers) {
                    Ok(()) => writers.commit(),
                    Err(e) => {
                        writers.abort();
                        Err(e)
                    }
                }
            })
        })
        .collect();
    drop(tx);

    collect(&rx, &mut summary, &bar, &progress);
    let mut first_error = None;
    for w in workers {
        match w.join() {
            Ok(Ok(mut paths)) => summary.outputs.append(&mut paths),
            Ok(Err(e)) => first_error = first_error.or(Some(e)),
            Err(_) => {
                first_error = first_error.or(Some(anyhow::anyhow!("a parse worker panicked")))
            }
        }
    }
    if let Some(e) = first_error {
        return Err(
            e.context("writing Parquet failed; nothing was committed by the failing worker")
        );
    }
    summary.outputs.sort();
    bar.finish_and_clear();
    summary.seconds = started.elapsed().as_secs_f64();
    Ok(summary)
}

fn worker(
    jobs: &Receiver<PathBuf>,
    tx: &Sender<Msg>,
    progress: &Arc<AtomicU64>,
    opts: &IngestOptions,
    host: &str,
    writers: &mut Writers,
) -> Result<()> {
    let mut sizes = BatchSizes::default();
    for path in jobs {
        let name = path.to_string_lossy().into_owned();
        let mut decoder = DecoderBuilder::new(name.clone())
            .with_sizes(std::mem::take(&mut sizes))
            .with_server(opts.server.clone())
            .with_default_server(host)
            .with_batch_size(opts.batch_size)
            .with_max_line_bytes(opts.max_line_bytes)
            .build();
        let mut rows: BTreeMap<&'static str, u64> = BTreeMap::new();
        let mut write_error = None;
        let result = File::open(&path)
            .map_err(mailflow_parser::Error::from)
            .and_then(|file| {
                let reader = Counting {
                    inner: file,
                    total: Arc::clone(progress),
                };
                decoder.decode_reader(reader, 256 * 1024, |flushed| {
                    if write_error.is_none() {
                        write_error = writers.write_flushed(flushed, &mut rows).err();
                    }
                })
            });
        if let Some(e) = write_error {
            return Err(e);
        }
        sizes = decoder.take_sizes();
        let msg = match result {
            Ok(()) => {
                let notes = decoder
                    .notes()
                    .iter()
                    .map(|n| format!("{name}: {n}"))
                    .collect();
                Msg::Done(decoder.stats(), rows, notes)
            }
            Err(e) => Msg::Failed(path, e.to_string()),
        };
        // The receiver lives until every worker is done; a send cannot fail before that.
        let _ = tx.send(msg);
    }
    Ok(())
}

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
            Msg::Done(stats, rows, notes) => {
                summary.files += 1;
                summary.bytes += stats.bytes;
                summary.rejects += stats.rejects;
                summary.lossy_rows += stats.lossy_rows;
                for (table, n) in rows {
                    *summary.rows.entry(table.to_string()).or_default() += n;
                }
                for n in notes {
                    tracing::warn!("{n}");
                }
            }
            Msg::Failed(path, reason) => {
                tracing::error!(file = %path.display(), error = %reason, "Reading failed.");
                summary.failed.push(Skipped { path, reason });
            }
        }
    }
}

/// One worker's Parquet files, one per table, opened on the table's first batch.
struct Writers {
    dir: PathBuf,
    worker: usize,
    options: ParquetOptions,
    open: BTreeMap<&'static str, ParquetFile>,
}

impl Writers {
    fn new(dir: &Path, worker: usize, options: &ParquetOptions) -> Self {
        Writers {
            dir: dir.to_path_buf(),
            worker,
            options: options.clone(),
            open: BTreeMap::new(),
        }
    }

    fn write_flushed(
        &mut self,
        flushed: Flushed,
        rows: &mut BTreeMap<&'static str, u64>,
    ) -> Result<()> {
        if let Some(d) = flushed.data {
            *rows.entry(d.table.name()).or_default() += d.batch.num_rows() as u64;
            self.write(Some(d.table), &d.batch)?;
        }
        if let Some(r) = flushed.rejects {
            self.write(None, &r)?;
        }
        Ok(())
    }

    fn write(&mut self, table: Option<Table>, batch: &arrow_array::RecordBatch) -> Result<()> {
        let name = table.map_or(REJECTS, Table::name);
        let file = match self.open.entry(name) {
            std::collections::btree_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::btree_map::Entry::Vacant(e) => {
                let schema = table.map_or_else(rejects_schema, schema);
                let path = self
                    .dir
                    .join(name)
                    .join(format!("part-{}.parquet", self.worker));
                e.insert(ParquetFile::create(path, schema, &self.options)?)
            }
        };
        file.write(batch)?;
        Ok(())
    }

    fn commit(&mut self) -> Result<Vec<PathBuf>> {
        let mut out = Vec::new();
        for (_, mut file) in std::mem::take(&mut self.open) {
            file.append_metadata("mailflow.version", env!("CARGO_PKG_VERSION"));
            file.append_metadata("mailflow.schema_version", SCHEMA_VERSION.to_string());
            out.push(file.commit()?.path);
        }
        Ok(out)
    }

    fn abort(&mut self) {
        for (_, file) in std::mem::take(&mut self.open) {
            file.abort();
        }
    }
}

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
