//! One log series as the agent reads it: a server's files of one kind in one folder, oldest
//! first, the newest tailed as Exchange writes it. A series owns its open file, its decoder and
//! its session correlation; a step (run on a decode thread) reads what is new, decodes,
//! diagnoses and correlates it, and returns the writes for the sinks, each with the checkpoints
//! it makes safe once durable.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result};
use arrow_array::RecordBatch;
use mailflow_enrich::Matcher;
use mailflow_enrich::messages;
use mailflow_enrich::records::count_codes;
use mailflow_enrich::sessions::{self, SessionCorrelator};
use mailflow_parser::schema::REJECTS;
use mailflow_parser::{BatchSizes, Decoder, DecoderBuilder, Flushed, Table};

use crate::ingest::{SESSION_TIMEOUT, last_time, project};

/// What a step needs besides its series.
#[derive(Debug)]
pub(crate) struct Ctx {
    pub matcher: Arc<Matcher>,
    pub batch_size: usize,
    pub max_line_bytes: usize,
    pub event_providers: mailflow_parser::Providers,
    pub host: String,
}

/// A checkpoint a write makes safe: replay `fingerprint` from `offset`.
#[derive(Debug, Clone)]
pub(crate) struct Candidate {
    pub fingerprint: String,
    pub offset: u64,
    /// For the store: how far the sinks hold the file's own lines once this is durable.
    pub durable: Option<u64>,
    pub log_time: Option<i64>,
    /// The file is finished (read to its end after a newer one appeared).
    pub complete: bool,
}

/// Batches for the sinks: one source's rows up to `end_offset`, and what they make safe.
#[derive(Debug)]
pub(crate) struct Write {
    pub fingerprint: String,
    pub file: String,
    pub end_offset: u64,
    pub parts: Vec<(&'static str, RecordBatch)>,
    pub candidates: Vec<Candidate>,
    /// The decode worker that made the batches, which frees them once written.
    pub home: Option<usize>,
}

/// A tracking file's progress for message correlation: its rows (if the flush had any) and
/// how far into the file they reach.
#[derive(Debug)]
pub(crate) struct Tracked {
    pub stream: Arc<str>,
    pub fingerprint: String,
    pub file: String,
    pub end_offset: u64,
    pub batch: Option<RecordBatch>,
    /// The file is finished.
    pub complete: bool,
    /// The decode worker that made the batch.
    pub home: Option<usize>,
}

/// What the coordinator asks of a step.
#[derive(Debug)]
pub(crate) enum Order {
    /// Open this file, then read.
    Open(Opening),
    /// Read what is new, complete lines only.
    Read,
    /// Read to the end and close the file: a newer one exists, or it was deleted.
    Finish,
    /// The input ends here (`--until-idle`): close the file read so far, write the open
    /// sessions as they are. With `finish`, the file is read to its end first, a last line
    /// without its line end included (a file nobody writes any more: see `SETTLE`).
    End { finish: bool },
}

/// A file to open.
#[derive(Debug)]
pub(crate) struct Opening {
    pub path: PathBuf,
    pub fingerprint: String,
    /// The server the source names for it, if any.
    pub server: Option<String>,
    /// Replay from here (after decoding the header).
    pub start_at: u64,
}

/// What a step did besides its writes.
#[derive(Debug, Default)]
pub(crate) struct Outcome {
    pub writes: Vec<Write>,
    pub tracked: Vec<Tracked>,
    /// Log time reached.
    pub mark: Option<i64>,
    /// Bytes consumed.
    pub bytes: u64,
    /// Rows per table (rejects under `rejects`), and per diagnosis code.
    pub rows: BTreeMap<&'static str, u64>,
    pub diagnoses: BTreeMap<String, u64>,
    /// The file was closed: finished, truncated or unreadable (with why, for the latter two).
    pub closed: Option<Closed>,
    /// Rows of the files closed that had invalid UTF-8 (kept with U+FFFD).
    pub lossy_rows: u64,
    /// An End step left a last line without its line end unread (Exchange is writing it).
    pub partial_line: bool,
}

#[derive(Debug)]
pub(crate) enum Closed {
    Finished,
    /// Shorter than what was read: truncated or replaced in place.
    Truncated(u64),
    Failed(String),
}

/// The state a series carries from step to step.
#[derive(Debug)]
pub(crate) struct SeriesState {
    pub stream: Arc<str>,
    pub tracking: bool,
    tail: Option<Tail>,
    sessions: SessionCorrelator,
    sizes: BatchSizes,
    /// Finished files of the series whose lines open sessions may still need.
    recent: Vec<(String, String, u64)>,
    /// The file is being read to its end at the input's end, but is not finished (see
    /// [`Order::End`]).
    keep_open: bool,
}

/// The file a series is reading.
#[derive(Debug)]
struct Tail {
    file: File,
    path: PathBuf,
    name: String,
    fingerprint: String,
    decoder: Decoder,
    /// Bytes of the file consumed: the next read starts here.
    fed: u64,
}

/// Bytes a step reads at most, so that series take turns. Each step's output waits whole for
/// its lane; 2 MiB against 4 took about 10 MiB off the peak with twice the steps in flight. It
/// costs row-group size: series taking turns in small steps fill a lane's open files evenly,
/// and its budget flushes each small (2 GiB backfill: 259 `smtp_protocol` row groups at 2 MiB,
/// 154 at 8 MiB, against `ingest`'s 137; see benches/README).
const STEP_BYTES: u64 = 2 << 20;
/// Bytes read from the file at a time.
const CHUNK: usize = 1 << 20;

thread_local! {
    /// The read buffer of the series this thread is stepping (see `read_bytes`).
    static READ_BUF: std::cell::Cell<Vec<u8>> = const { std::cell::Cell::new(Vec::new()) };
}

impl SeriesState {
    pub(crate) fn new(stream: Arc<str>, tracking: bool) -> Self {
        SeriesState {
            stream,
            tracking,
            tail: None,
            sessions: SessionCorrelator::new(SESSION_TIMEOUT),
            sizes: BatchSizes::default(),
            recent: Vec::new(),
            keep_open: false,
        }
    }

    /// The path of the file being read, and how far.
    pub(crate) fn reading(&self) -> Option<(&PathBuf, u64)> {
        self.tail.as_ref().map(|t| (&t.path, t.fed))
    }

    /// Sessions open.
    pub(crate) fn open_sessions(&self) -> usize {
        self.sessions.open_sessions()
    }

    /// One step; see [`Order`].
    pub(crate) fn step(&mut self, order: Order, ctx: &Ctx) -> Outcome {
        let mut out = Outcome::default();
        if let Order::Open(o) = order {
            let path = o.path.clone();
            match self.open(o, ctx) {
                Ok(t) => self.tail = Some(t),
                Err(e) => {
                    tracing::warn!(file = %path.display(), error = %format!("{e:#}"), "Cannot open a log file.");
                    out.closed = Some(Closed::Failed(format!("{e:#}")));
                    return out;
                }
            }
            return self.read(false, ctx, out);
        }
        match order {
            Order::Read | Order::Open(_) => self.read(false, ctx, out),
            Order::Finish => self.read(true, ctx, out),
            Order::End { finish } => {
                let reading = self.tail.is_some();
                self.keep_open = finish;
                let out = self.read(finish, ctx, out);
                self.keep_open = false;
                // Read to its end, but not finished: it is still its series' newest file, and
                // what Exchange may add to it later is read on from there.
                let still_open = finish && reading;
                self.end(ctx, out, still_open)
            }
        }
    }

    fn open(&mut self, o: Opening, ctx: &Ctx) -> Result<Tail> {
        let name = o.path.to_string_lossy().into_owned();
        let mut file =
            File::open(&o.path).with_context(|| format!("opening {}", o.path.display()))?;
        let mut head = Vec::with_capacity(64 * 1024);
        (&mut file).take(64 * 1024).read_to_end(&mut head)?;
        let modified = file
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .map(crate::ingest::file_time_ms);
        // Events and queue snapshots are known by their content (see `DecoderBuilder::with_head`).
        let records = mailflow_parser::detect_records(&head).is_some();
        let mut decoder = DecoderBuilder::new(name.clone())
            .with_sizes(std::mem::take(&mut self.sizes))
            .with_server(o.server)
            .with_default_server(&ctx.host)
            .with_kind(
                records
                    .then(|| mailflow_parser::detect_records(&head))
                    .flatten()
                    .map(mailflow_parser::LogKind::Records),
            )
            .with_file_time(modified)
            .with_event_providers(ctx.event_providers.clone())
            .with_batch_size(ctx.batch_size)
            .with_max_line_bytes(ctx.max_line_bytes)
            .build();
        let mut fed = 0;
        if records {
            // Fed from the start (its encoding, CSV header and JSON nesting are there); what
            // the checkpoint says was read is skipped record by record.
            decoder.skip_before(o.start_at);
        } else if o.start_at > 0 {
            // The header says which columns the lines after the checkpoint have.
            let header = header_end(&head);
            if o.start_at > header as u64 {
                let mut at = 0;
                while at < header {
                    at += decoder.decode(&head[at..header])?;
                    if decoder.needs_flush() {
                        decoder.flush()?;
                    }
                }
                decoder.resume_at(o.start_at)?;
                fed = o.start_at;
            }
        }
        Ok(Tail {
            file,
            path: o.path,
            name,
            fingerprint: o.fingerprint,
            decoder,
            fed,
        })
    }

    /// Reads what is new (to the end of the last complete line, or with `finish` to the end
    /// of the file, which is then closed).
    fn read(&mut self, finish: bool, ctx: &Ctx, mut out: Outcome) -> Outcome {
        let Some(tail) = self.tail.as_mut() else {
            return out;
        };
        let len = match tail.file.metadata() {
            Ok(m) => m.len(),
            Err(e) => {
                out.closed = Some(Closed::Failed(e.to_string()));
                self.close(&mut out);
                return out;
            }
        };
        if len < tail.fed {
            out.closed = Some(Closed::Truncated(len));
            // What was decoded is written; nothing of the shorter file is read.
            if let Err(e) = self.flush_pending(ctx, &mut out, false) {
                out.closed = Some(Closed::Failed(format!("{e:#}")));
            }
            self.close(&mut out);
            return out;
        }
        let result = self.read_bytes(len, finish, ctx, &mut out);
        if let Err(e) = result {
            out.closed = Some(Closed::Failed(format!("{e:#}")));
            self.close(&mut out);
            return out;
        }
        // Events and queue snapshots are written whole, and the end of a file is all that
        // ends its last record (an Event Viewer paste's last block): read to its end, it is
        // finished, not tailed.
        let whole = !finish
            && self
                .tail
                .as_ref()
                .is_some_and(|t| t.decoder.is_records() && t.fed >= len);
        if whole {
            let done = match self.tail.as_mut() {
                Some(t) => t.decoder.finish().map_err(anyhow::Error::from),
                None => Ok(()),
            }
            .and_then(|()| self.flush_pending(ctx, &mut out, true));
            out.closed = Some(match done {
                Ok(()) => Closed::Finished,
                Err(e) => Closed::Failed(format!("{e:#}")),
            });
            self.close(&mut out);
            return out;
        }
        if finish {
            out.closed = Some(Closed::Finished);
            self.close(&mut out);
        }
        out
    }

    fn read_bytes(&mut self, len: u64, finish: bool, ctx: &Ctx, out: &mut Outcome) -> Result<()> {
        // One read buffer per decode thread, not per series: a series holds nothing between
        // its steps, and a host with many log folders has many series (a megabyte each: 10 of the
        // 161 MiB peak heap of the 1 GiB mixed ingest under heaptrack).
        let mut buf = READ_BUF.take();
        buf.resize(CHUNK, 0);
        let result = self.read_chunks(&mut buf, len, finish, ctx, out);
        READ_BUF.set(buf);
        result?;
        if finish && let Some(tail) = self.tail.as_mut() {
            tail.decoder.finish()?;
        }
        self.flush_pending(ctx, out, finish && !self.keep_open)
    }

    fn read_chunks(
        &mut self,
        buf: &mut [u8],
        len: u64,
        finish: bool,
        ctx: &Ctx,
        out: &mut Outcome,
    ) -> Result<()> {
        let mut budget = STEP_BYTES;
        while let Some(tail) = self.tail.as_mut()
            && tail.fed < len
            && budget > 0
        {
            let want = (len - tail.fed).min(CHUNK as u64) as usize;
            tail.file.seek(SeekFrom::Start(tail.fed))?;
            let got = read_full(&mut tail.file, &mut buf[..want])?;
            let mut chunk = &buf[..got];
            let last = tail.fed + got as u64 >= len || got < want;
            // Events and snapshots have no lines to wait for: their decoder holds a record
            // until it is whole.
            if last && !finish && !tail.decoder.is_records() {
                // Exchange may be writing the last line: only complete lines are read.
                match memchr::memrchr(b'\n', chunk) {
                    Some(i) => chunk = &chunk[..=i],
                    None => break,
                }
            }
            if chunk.is_empty() {
                break;
            }
            let mut at = 0;
            while at < chunk.len() {
                let Some(tail) = self.tail.as_mut() else {
                    break;
                };
                at += tail.decoder.decode(&chunk[at..])?;
                if tail.decoder.needs_flush() {
                    self.flush_pending(ctx, out, false)?;
                }
            }
            if let Some(tail) = self.tail.as_mut() {
                tail.fed += chunk.len() as u64;
            }
            out.bytes += chunk.len() as u64;
            budget = budget.saturating_sub(chunk.len() as u64);
            if last {
                break;
            }
        }
        Ok(())
    }

    /// Takes the rows decoded so far (a step always ends with its rows on their way).
    fn flush_pending(&mut self, ctx: &Ctx, out: &mut Outcome, complete: bool) -> Result<()> {
        let Some(tail) = self.tail.as_mut() else {
            return Ok(());
        };
        let flushed = tail.decoder.flush()?;
        Self::process(
            flushed,
            (tail, &self.stream, self.tracking),
            (&mut self.sessions, &mut self.recent),
            ctx,
            out,
            complete,
        )
    }

    /// Diagnoses a flush, correlates it, and queues its write.
    fn process(
        flushed: Flushed,
        (tail, stream, tracking): (&Tail, &Arc<str>, bool),
        (sessions, recent): (&mut SessionCorrelator, &mut Vec<(String, String, u64)>),
        ctx: &Ctx,
        out: &mut Outcome,
        complete: bool,
    ) -> Result<()> {
        let matcher = &ctx.matcher;
        let mut parts: Vec<(&'static str, RecordBatch)> = Vec::with_capacity(3);
        let mut log_time = None;
        let mut tracked_batch = None;
        if let Some(d) = flushed.data {
            let hits = matcher.classify(d.table, &d.batch);
            let b = matcher.enrich_with(d.table, &d.batch, &hits)?;
            log_time = last_time(&b);
            match d.table {
                Table::SmtpProtocol => sessions.add(matcher, &b, &hits),
                Table::MessageTracking => {
                    tracked_batch = Some(project(&b, messages::INPUT_COLUMNS)?);
                }
                _ => {}
            }
            *out.rows.entry(d.table.name()).or_default() += b.num_rows() as u64;
            count_codes(&b, &mut out.diagnoses);
            parts.push((d.table.name(), b));
        }
        if let Some(r) = flushed.rejects {
            *out.rows.entry(REJECTS).or_default() += r.num_rows() as u64;
            parts.push((REJECTS, r));
        }
        if let Some(b) = sessions.take(matcher, 1)? {
            *out.rows.entry(sessions::TABLE).or_default() += b.num_rows() as u64;
            parts.push((sessions::TABLE, b));
        }
        if log_time.is_some() {
            out.mark = out.mark.max(log_time);
        }
        if tracking {
            out.tracked.push(Tracked {
                stream: Arc::clone(stream),
                fingerprint: tail.fingerprint.clone(),
                file: tail.name.clone(),
                end_offset: flushed.end_offset,
                batch: tracked_batch,
                complete,
                home: super::decode_worker(),
            });
        }
        // Open and closed-but-unwritten sessions hold the checkpoint of the files they began in.
        let needed = sessions.oldest_needed();
        let hold = |name: &str, end: u64| {
            needed
                .get(name)
                .map_or(end, |&o| end.min(u64::try_from(o).unwrap_or(0)))
        };
        // A file is complete on this side once it is finished and no session needs it.
        let offset = hold(&tail.name, flushed.end_offset);
        let mut candidates = vec![Candidate {
            fingerprint: tail.fingerprint.clone(),
            offset,
            durable: Some(flushed.end_offset),
            log_time,
            complete: complete && offset >= flushed.end_offset,
        }];
        recent.retain(|(fingerprint, name, end)| {
            let offset = hold(name, *end);
            candidates.push(Candidate {
                fingerprint: fingerprint.clone(),
                offset,
                durable: None,
                log_time: None,
                complete: offset >= *end,
            });
            offset < *end
        });
        out.writes.push(Write {
            fingerprint: tail.fingerprint.clone(),
            file: tail.name.clone(),
            end_offset: flushed.end_offset,
            parts,
            candidates,
            home: super::decode_worker(),
        });
        Ok(())
    }

    /// Closes the file being read: its learned sizes go to the next; it stays among the recent
    /// files while sessions need its lines.
    fn close(&mut self, out: &mut Outcome) {
        if let Some(mut t) = self.tail.take() {
            Self::closing(&mut t, out);
            self.sizes = t.decoder.take_sizes();
            self.recent.push((t.fingerprint, t.name, t.fed));
        }
    }

    /// What a file's decoder has to tell when the file is done with.
    fn closing(t: &mut Tail, out: &mut Outcome) {
        out.lossy_rows += t.decoder.stats().lossy_rows;
        for note in t.decoder.notes() {
            tracing::warn!("{}", crate::term::escape(&format!("{}: {note}", t.name)));
        }
    }

    /// The end of the input (`--until-idle`): sessions still open are written as they are,
    /// filed with the last file read, as `ingest` does at the end of a series.
    fn end(&mut self, ctx: &Ctx, mut out: Outcome, last_still_open: bool) -> Outcome {
        let last = self
            .tail
            .as_ref()
            .map(|t| (t.fingerprint.clone(), t.name.clone(), t.fed))
            .or_else(|| self.recent.last().cloned());
        let mut parts = Vec::new();
        match self.sessions.finish(&ctx.matcher) {
            Ok(Some(b)) => {
                *out.rows.entry(sessions::TABLE).or_default() += b.num_rows() as u64;
                parts.push((sessions::TABLE, b));
            }
            Ok(None) => {}
            Err(e) => {
                out.closed = Some(Closed::Failed(e.to_string()));
                return out;
            }
        }
        // Every session is written: nothing holds a file back any more.
        let n = self.recent.len();
        let mut candidates: Vec<Candidate> = self
            .recent
            .drain(..)
            .enumerate()
            .map(|(i, (fingerprint, _, end))| Candidate {
                fingerprint,
                offset: end,
                durable: None,
                log_time: None,
                complete: !(last_still_open && i + 1 == n),
            })
            .collect();
        if let Some(t) = &self.tail {
            candidates.push(Candidate {
                fingerprint: t.fingerprint.clone(),
                offset: t.decoder.complete_offset(),
                durable: None,
                log_time: None,
                complete: false,
            });
        }
        if let Some((fingerprint, file, end)) = last {
            out.writes.push(Write {
                fingerprint,
                file,
                end_offset: end,
                parts,
                candidates,
                home: super::decode_worker(),
            });
        }
        if let Some(mut t) = self.tail.take() {
            out.partial_line = t.file.metadata().is_ok_and(|m| m.len() > t.fed);
            Self::closing(&mut t, &mut out);
            self.sizes = t.decoder.take_sizes();
        }
        out
    }
}

/// Reads until `buf` is full or the file ends; returns the bytes read.
fn read_full(file: &mut File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match file.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// Where the block of `#` directive lines at the start of a file ends (after a BOM).
fn header_end(head: &[u8]) -> usize {
    let mut pos = if head.starts_with(b"\xEF\xBB\xBF") {
        3
    } else {
        0
    };
    while head.get(pos) == Some(&b'#') {
        match memchr::memchr(b'\n', &head[pos..]) {
            Some(i) => pos += i + 1,
            None => break,
        }
    }
    pos
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_header_ends_at_the_first_line_that_is_not_a_directive() {
        assert_eq!(header_end(b"#A\r\n#B\r\nrow\r\n"), 8);
        assert_eq!(header_end(b"\xEF\xBB\xBF#A\nrow\n"), 6);
        assert_eq!(header_end(b"row\n"), 0);
        assert_eq!(
            header_end(b"#A\n#B"),
            3,
            "a directive not complete yet is not in it"
        );
    }
}
