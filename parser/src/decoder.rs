//! The push decoder: bytes in, typed record batches and rejects out.
//!
//! # How it works, and the traps
//!
//! `decode(buf)` consumes whole lines. A line split across calls is carried in `partial` until its
//! newline arrives, so callers may pass any chunking (1 byte or 64 KiB) and get identical batches;
//! a half-written last line of a live file stays in `partial` (never emitted) until more bytes or
//! `finish()` arrive. A line longer than `max_line_bytes` is rejected as soon as it crosses the cap,
//! and the rest of it is skipped without buffering, so memory stays bounded whatever the input.
//!
//! `decode` returns early, with bytes left unconsumed, when the batch is full or when a header
//! switched the file to another kind or column layout (a batch holds one table, one layout and one
//! set of per-file constants).
//! The caller then calls `flush()` and passes the rest again. `source_offset` is the absolute byte
//! offset of each line's first byte, counted over every byte consumed (BOM, headers and `\r`
//! included), so `(file, offset)` finds the raw line again.
//!
//! Row-level errors never stop the decoder: the line goes to the rejects batch with the reason.

use std::sync::Arc;

use arrow_array::RecordBatch;
use memchr::memchr;

use crate::batch::{
    CHUNK_BYTES, CHUNK_ROWS, CapacityHints, FileConstants, Mark, RejectBuilders, TableBuilders,
    Tape,
};
use crate::directive::{Directive, field_names, normalize_name, parse_directive};
use crate::error::{Error, RejectReason};
use crate::fields::{
    datetime::{DatetimeParser, parse_datetime_ms},
    number::parse_i64,
};
use crate::kind::{
    LogKind, LogTypeKind, PathInfo, Table, default_fields, kind_from_field_names,
    kind_from_log_type, kind_from_shape, path_info,
};
use crate::mapping::FieldMap;
use crate::server::canonical_server;

use crate::tokenize::{Fields, Tokenizer};

const BOM: &[u8] = b"\xEF\xBB\xBF";
/// Bytes of an overlong line kept in its reject.
const OVERLONG_RAW_KEEP: usize = 64 * 1024;

/// Bytes of input lines in one batch at most, whatever the row count: keeps every column's
/// 32-bit offsets far from overflow (8192 rows of 1 MiB lines would pass 2 GiB) and batches small
/// enough to hand on.
const MAX_BATCH_BYTES: usize = 128 << 20;

/// Default rows per batch.
pub const DEFAULT_BATCH_SIZE: usize = 4096;
/// Default line-length cap (1 MiB): Exchange's longest real lines are a few KiB.
pub const DEFAULT_MAX_LINE_BYTES: usize = 1 << 20;

/// Builds a [`Decoder`] for one file.
#[derive(Debug, Clone)]
pub struct DecoderBuilder {
    source_file: String,
    path: PathInfo,
    server: Option<String>,
    row_server: Option<String>,
    default_server: Option<String>,
    kind: Option<LogKind>,
    batch_size: usize,
    max_line_bytes: usize,
    sizes: BatchSizes,
    file_time: Option<i64>,
    providers: crate::records::Providers,
}

impl DecoderBuilder {
    /// A decoder for the file at `path`; the path supplies the kind hint, the transport role and,
    /// for per-server collections, the server name.
    pub fn new(path: impl Into<String>) -> Self {
        let source_file = path.into();
        let path = path_info(&source_file);
        DecoderBuilder {
            source_file,
            path,
            server: None,
            row_server: None,
            default_server: None,
            kind: None,
            batch_size: DEFAULT_BATCH_SIZE,
            max_line_bytes: DEFAULT_MAX_LINE_BYTES,
            sizes: BatchSizes::default(),
            file_time: None,
            providers: crate::records::Providers::default(),
        }
    }

    /// The file's modification time (ms since the epoch): the time of a queue snapshot, and of
    /// an event pasted without its `Date:`.
    pub fn with_file_time(mut self, ms: Option<i64>) -> Self {
        self.file_time = ms;
        self
    }

    /// Which event providers' events are kept (default: Exchange's and Schannel).
    pub fn with_event_providers(mut self, providers: crate::records::Providers) -> Self {
        self.providers = providers;
        self
    }

    /// Starts from buffer sizes another decoder learned (see [`BatchSizes`]).
    pub fn with_sizes(mut self, sizes: BatchSizes) -> Self {
        self.sizes = sizes;
        self
    }

    /// Forces the server name for every row (the `--server` option), as given: the caller
    /// checks it (see [`canonical_server`](crate::canonical_server)).
    pub fn with_server(mut self, server: Option<String>) -> Self {
        self.server = server;
        self
    }

    /// Reads the file's first bytes for the server that wrote it (see
    /// [`server_from_head`](crate::server_from_head)); rows name it before the path does.
    pub fn with_head(mut self, head: &[u8]) -> Self {
        self.row_server = crate::server::server_from_head(&self.source_file, head);
        // Events and queue snapshots are known by their content, whatever the file is named.
        if let Some(format) = crate::records::detect(head) {
            self.kind = Some(LogKind::Records(format));
        }
        self
    }

    /// The server name to use when neither rows nor path name one (normally the host name).
    pub fn with_default_server(mut self, server: impl Into<String>) -> Self {
        self.default_server = Some(server.into());
        self
    }

    /// Forces the log kind, overriding what the path suggests (headers still win).
    pub fn with_kind(mut self, kind: Option<LogKind>) -> Self {
        if kind.is_some() {
            self.kind = kind;
        }
        self
    }

    /// Rows per batch (at least 1).
    pub fn with_batch_size(mut self, rows: usize) -> Self {
        self.batch_size = rows.max(1);
        self
    }

    /// Longest line accepted, in bytes, excluding the newline (at least 1, at most 1 GiB).
    pub fn with_max_line_bytes(mut self, bytes: usize) -> Self {
        self.max_line_bytes = bytes.clamp(1, 1 << 30);
        self
    }

    /// The server the decoder will file every row under: the forced name, else the one the
    /// rows name, else the path's, else the default (the host name), else `UNKNOWN`. One name
    /// per server, whichever source names it; the host name only when nothing else does.
    pub fn server(&self) -> String {
        let canonical = |s: &Option<String>| s.as_deref().and_then(canonical_server);
        self.server
            .clone()
            .or_else(|| self.row_server.clone())
            .or_else(|| canonical(&self.path.server))
            .or_else(|| canonical(&self.default_server))
            .unwrap_or_else(|| "UNKNOWN".to_string())
    }

    /// The decoder.
    pub fn build(self) -> Decoder {
        let hint = self.kind.or(self.path.kind);
        let server: Arc<str> = self.server().into();
        let records = match hint {
            Some(LogKind::Records(format)) => Some(format),
            _ => None,
        }
        .map(|format| {
            Box::new(crate::records::RecordDecoder::new(
                crate::records::Settings {
                    format,
                    source_file: self.source_file.as_str().into(),
                    forced_server: self.server.clone(),
                    fallback_server: self
                        .row_server
                        .clone()
                        .or_else(|| self.path.server.as_deref().and_then(canonical_server))
                        .or_else(|| self.default_server.as_deref().and_then(canonical_server))
                        .unwrap_or_else(|| "UNKNOWN".into())
                        .into(),
                    file_time: self.file_time,
                    providers: self.providers.clone(),
                    batch_size: self.batch_size,
                    max_record_bytes: self.max_line_bytes.max(1 << 20),
                },
            ))
        });
        Decoder {
            records,
            source_file: self.source_file.into(),
            server,
            role: self.path.role,
            hint,
            batch_size: self.batch_size,
            max_line_bytes: self.max_line_bytes,
            kind: hint,
            header_kind: None,
            unsupported: None,
            map: None,
            builders: None,
            hints: self.sizes.0,
            rejects: RejectBuilders::new(),
            tokenizer: Tokenizer::default(),
            tape: Tape::default(),
            datetime: DatetimeParser::default(),
            partial: Vec::new(),
            partial_start: 0,
            skipping: false,
            offset: 0,
            line: 0,
            switch_pending: false,
            batch_bytes: 0,
            stats: DecoderStats::default(),
            notes: Vec::new(),
        }
    }
}

/// Buffer sizes learned from finished batches, per table. Hand them from one file's decoder to
/// the next ([`Decoder::take_sizes`], [`DecoderBuilder::with_sizes`]) so a new file's first batch
/// is sized right instead of growing by reallocation.
#[derive(Debug, Clone, Default)]
pub struct BatchSizes([CapacityHints; Table::ALL.len()]);

/// Counters for one decoder, cumulative over its life.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DecoderStats {
    /// Bytes consumed (including a held-back partial line).
    pub bytes: u64,
    /// Complete lines seen (directive, blank, row or reject).
    pub lines: u64,
    /// `#` lines.
    pub directives: u64,
    /// Empty lines.
    pub blank: u64,
    /// Rows that went to a data table.
    pub rows: u64,
    /// Lines that went to rejects.
    pub rejects: u64,
    /// Rows kept with invalid UTF-8 replaced by U+FFFD (counted when their batch is flushed).
    pub lossy_rows: u64,
    /// Windows events passed over: their provider is not one of those kept.
    pub passed_over: u64,
}

/// Something the decoder decided that a person should know about.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Note {
    /// No `#Fields` header: the documented column list of a version was assumed.
    AssumedLayout {
        /// Line where the assumption was made.
        line: u64,
        /// Which layout, e.g. "Exchange 2016/2019/SE message tracking".
        layout: &'static str,
        /// Its column count.
        columns: usize,
    },
    /// `#Log-type` names a log mailflow does not read; its rows are rejected.
    UnsupportedLogType {
        /// Line of the directive.
        line: u64,
        /// The log type text.
        log_type: String,
    },
}

impl std::fmt::Display for Note {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Note::AssumedLayout {
                line,
                layout,
                columns,
            } => {
                write!(
                    f,
                    "no #Fields header before line {line}; assumed the {layout} layout ({columns} columns)"
                )
            }
            Note::UnsupportedLogType { line, log_type } => {
                write!(
                    f,
                    "line {line}: log type {log_type:?} is not one mailflow reads; its rows are rejected"
                )
            }
        }
    }
}

/// One table's rows.
#[derive(Debug, Clone)]
pub struct Decoded {
    /// The table the rows belong to.
    pub table: Table,
    /// The rows, in the table's schema.
    pub batch: RecordBatch,
}

/// What `flush` returns: the data batch and the rejects batch, each if non-empty.
#[derive(Debug, Clone, Default)]
pub struct Flushed {
    /// Rows of the current table.
    pub data: Option<Decoded>,
    /// Rejected lines, in the rejects schema.
    pub rejects: Option<RecordBatch>,
    /// Every line that starts before this byte offset is in these batches or an earlier flush
    /// (or was a directive, a blank line, or skipped): a checkpoint taken with this flush resumes
    /// here, and a sink that records it knows which rows a replay must not write again.
    pub end_offset: u64,
}

/// Streaming decoder for one Exchange log file. See the module docs.
#[derive(Debug)]
pub struct Decoder {
    /// Events and queue snapshots are decoded by a decoder of their own.
    records: Option<Box<crate::records::RecordDecoder>>,
    source_file: Arc<str>,
    server: Arc<str>,
    role: Option<&'static str>,
    hint: Option<LogKind>,
    batch_size: usize,
    max_line_bytes: usize,

    kind: Option<LogKind>,
    header_kind: Option<LogKind>,
    unsupported: Option<String>,
    map: Option<Arc<FieldMap>>,
    builders: Option<TableBuilders>,
    hints: [CapacityHints; Table::ALL.len()],
    rejects: RejectBuilders,
    tokenizer: Tokenizer,
    tape: Tape,
    datetime: DatetimeParser,

    partial: Vec<u8>,
    partial_start: u64,
    skipping: bool,
    offset: u64,
    line: u64,
    switch_pending: bool,
    batch_bytes: usize,

    stats: DecoderStats,
    notes: Vec<Note>,
}

impl Decoder {
    /// Consumes complete lines from `buf` and returns how many bytes it used. It uses them all
    /// unless [`Decoder::needs_flush`] turns true first; then call [`Decoder::flush`] and pass the
    /// rest again.
    pub fn decode(&mut self, buf: &[u8]) -> Result<usize, Error> {
        if let Some(r) = &mut self.records {
            return r.decode(buf);
        }
        let mut pos = 0;
        let mut fetched = 0;
        while pos < buf.len() && !self.needs_flush() {
            prefetch_ahead(buf, pos, &mut fetched);
            let rest = &buf[pos..];
            let newline = memchr(b'\n', rest);
            if self.skipping {
                let used = newline.map_or(rest.len(), |i| i + 1);
                if newline.is_some() {
                    self.skipping = false;
                    self.end_line();
                }
                pos += used;
                self.offset += used as u64;
                continue;
            }
            match newline {
                Some(i) if self.partial.is_empty() => {
                    let start = self.offset;
                    self.offset += i as u64 + 1;
                    pos += i + 1;
                    if i > self.max_line_bytes {
                        self.reject_overlong(start, &rest[..i]);
                        self.end_line();
                    } else {
                        self.line(&rest[..i], start);
                    }
                }
                Some(i) => {
                    self.offset += i as u64 + 1;
                    pos += i + 1;
                    if self.partial.len() + i > self.max_line_bytes {
                        self.overlong_partial(&rest[..i]);
                        self.end_line();
                    } else {
                        let mut line = std::mem::take(&mut self.partial);
                        line.extend_from_slice(&rest[..i]);
                        self.line(&line, self.partial_start);
                        line.clear();
                        self.partial = line;
                    }
                }
                None => {
                    if self.partial.is_empty() {
                        self.partial_start = self.offset;
                    }
                    self.offset += rest.len() as u64;
                    pos = buf.len();
                    if self.partial.len() + rest.len() > self.max_line_bytes {
                        self.overlong_partial(rest);
                        self.skipping = true;
                    } else {
                        self.partial.extend_from_slice(rest);
                    }
                }
            }
        }
        self.stats.bytes = self.offset;
        Ok(pos)
    }

    /// End of input: an unterminated last line is parsed as a complete line. Do not call this on
    /// a file that is still being written (its last line may be half-written); keep decoding.
    pub fn finish(&mut self) -> Result<(), Error> {
        if let Some(r) = &mut self.records {
            return r.finish();
        }
        if self.skipping {
            self.skipping = false;
            self.end_line();
        } else if !self.partial.is_empty() {
            let line = std::mem::take(&mut self.partial);
            self.line(&line, self.partial_start);
        }
        Ok(())
    }

    /// Continues at byte `offset` of the file: the lines between what was decoded so far (its
    /// header, say) and `offset` were read by an earlier run, and their rows are not wanted
    /// again. Offsets of later lines stay absolute. Call between lines only.
    pub fn resume_at(&mut self, offset: u64) -> Result<(), Error> {
        if self.records.is_some() {
            return Err(Error::Resume {
                offset,
                reason: "events and queue snapshots are re-read from their start (see Decoder::skip_before)".into(),
            });
        }
        if !self.partial.is_empty() || self.skipping {
            return Err(Error::Resume {
                offset,
                reason: "a line is half read".into(),
            });
        }
        if offset < self.offset {
            return Err(Error::Resume {
                offset,
                reason: format!("{} bytes are decoded already", self.offset),
            });
        }
        self.offset = offset;
        self.stats.bytes = offset;
        Ok(())
    }

    /// True when a batch should be taken before decoding more: it is full, or the file switched
    /// to another kind of log or column layout.
    pub fn needs_flush(&self) -> bool {
        if let Some(r) = &self.records {
            return r.needs_flush();
        }
        self.switch_pending
            || self.pending_rows() >= self.batch_size
            || self.batch_bytes >= MAX_BATCH_BYTES
    }

    /// Rows (data and rejects) waiting in the current batch.
    pub fn pending_rows(&self) -> usize {
        if let Some(r) = &self.records {
            return r.pending_rows();
        }
        self.builders.as_ref().map_or(0, |b| b.rows) + self.rejects.rows
    }

    /// Takes the rows decoded so far.
    pub fn flush(&mut self) -> Result<Flushed, Error> {
        if let Some(r) = &mut self.records {
            return r.flush();
        }
        self.switch_pending = false;
        self.batch_bytes = 0;
        let mut out = Flushed {
            end_offset: self.complete_offset(),
            ..Flushed::default()
        };
        if let Some(b) = self.builders.take_if(|b| b.rows > 0) {
            let table = b.table;
            let hints = &mut self.hints[table_index(table)];
            let (batch, lossy) = b.finish(&mut self.tape, hints)?;
            self.stats.lossy_rows += lossy;
            out.data = Some(Decoded { table, batch });
        }
        if self.rejects.rows > 0 {
            out.rejects = Some(self.rejects.finish(&self.source_file, &self.server)?);
        }
        Ok(out)
    }

    /// The buffer sizes learned so far, for the next file's decoder.
    pub fn take_sizes(&mut self) -> BatchSizes {
        BatchSizes(std::mem::take(&mut self.hints))
    }

    /// The server every row of this file is filed under.
    pub fn server(&self) -> &str {
        &self.server
    }

    /// Cumulative counters.
    pub fn stats(&self) -> DecoderStats {
        if let Some(r) = &self.records {
            return r.stats();
        }
        self.stats
    }

    /// Things worth telling the user (assumed layouts, unsupported log types).
    pub fn notes(&self) -> &[Note] {
        &self.notes
    }

    /// Whether the file holds events or queue snapshots (read whole, records framed by
    /// content) rather than a transport log (read line by line).
    pub fn is_records(&self) -> bool {
        self.records.is_some()
    }

    /// For events and queue snapshots, fed from the file's start on a resume: skips the records
    /// that start before `offset` (an earlier run read them). Transport logs resume with
    /// [`Decoder::resume_at`] instead.
    pub fn skip_before(&mut self, offset: u64) {
        if let Some(r) = &mut self.records {
            r.skip_before(offset);
        }
    }

    /// The kind decided so far (from header, path or row shape).
    pub fn kind(&self) -> Option<LogKind> {
        self.kind
    }

    /// Offset just past the last complete line: everything before it is in a batch (flushed or
    /// pending). A checkpoint taken after a flush resumes here.
    pub fn complete_offset(&self) -> u64 {
        if let Some(r) = &self.records {
            return r.complete_offset();
        }
        if self.skipping {
            self.offset
        } else {
            self.offset - self.partial.len() as u64
        }
    }

    fn end_line(&mut self) {
        self.line += 1;
        self.stats.lines += 1;
    }

    fn line(&mut self, mut line: &[u8], start: u64) {
        self.end_line();
        self.batch_bytes += line.len();
        if let [head @ .., b'\r'] = line {
            line = head;
        }
        // A BOM opens every file Exchange writes, and concatenated files carry one mid-stream.
        if line.starts_with(BOM) {
            line = &line[BOM.len()..];
        }
        match line.first() {
            None => self.stats.blank += 1,
            Some(b'#') => self.directive(line),
            Some(_) => self.row(line, start),
        }
    }

    fn directive(&mut self, line: &[u8]) {
        self.stats.directives += 1;
        let Ok((_, directive)) = parse_directive(line) else {
            return;
        };
        match directive {
            Directive::Software(_) => {
                // A new header block: what the last one said no longer holds.
                self.header_kind = None;
                self.unsupported = None;
                self.set_map(None);
                self.set_kind(self.hint);
            }
            Directive::LogType(v) => match kind_from_log_type(v) {
                LogTypeKind::Known(k) => {
                    self.unsupported = None;
                    self.header_kind = Some(k);
                    self.set_kind(Some(k.refine(self.hint)));
                }
                LogTypeKind::Unsupported(name) => {
                    self.notes.push(Note::UnsupportedLogType {
                        line: self.line,
                        log_type: name.clone(),
                    });
                    self.unsupported = Some(name);
                }
            },
            Directive::Fields(list) => {
                let names: Vec<&[u8]> = field_names(list).collect();
                let kind = self.header_kind.map(|k| k.refine(self.hint)).or_else(|| {
                    let normalized: Vec<String> = names.iter().map(|n| normalize_name(n)).collect();
                    kind_from_field_names(&normalized)
                        .map(|k| k.refine(self.hint))
                        .or(self.hint)
                });
                self.set_kind(kind);
                let map = kind.map(|k| FieldMap::new(k.table(), names));
                self.set_map(map);
            }
            Directive::Version(_) | Directive::Date(_) | Directive::Other(_) => {}
        }
    }

    /// Changes the current kind; a batch holding rows of another table or other per-file values
    /// must be flushed first.
    fn set_kind(&mut self, kind: Option<LogKind>) {
        if kind != self.kind {
            self.set_map(None);
        }
        self.kind = kind;
        let Some(b) = &self.builders else { return };
        let same = kind.is_some_and(|k| {
            let c = b.constants();
            b.table == k.table() && c.direction == k.direction() && c.protocol == k.protocol()
        });
        if !same {
            self.end_batch();
        }
    }

    /// The batch in progress cannot take rows under what just changed: it is flushed first if it
    /// holds rows, and its builders are dropped otherwise.
    fn end_batch(&mut self) {
        match &self.builders {
            Some(b) if b.rows > 0 => self.switch_pending = true,
            _ => self.builders = None,
        }
    }

    /// Changes the header layout. Every row of a batch follows one layout, so a batch holding
    /// rows under another must be flushed first (an identical header repeated keeps the batch).
    fn set_map(&mut self, map: Option<FieldMap>) {
        let map = map.map(|m| match &self.builders {
            Some(b) if b.map.names == m.names => Arc::clone(&b.map),
            _ => Arc::new(m),
        });
        if let Some(b) = &self.builders
            && !map.as_ref().is_some_and(|m| Arc::ptr_eq(m, &b.map))
        {
            self.end_batch();
        }
        self.map = map;
    }

    fn row(&mut self, line: &[u8], start: u64) {
        if let Some(name) = &self.unsupported {
            let reason = RejectReason::UnsupportedLogType(name.clone());
            self.reject(start, line, None, &reason);
            return;
        }
        let mark = self.tape.mark();
        let tokenized =
            self.tokenizer
                .tokenize_into(line, &mut self.tape.data, &mut self.tape.bounds);
        if let Err(e) = tokenized {
            let reason = RejectReason::UnterminatedQuote { at: e.at };
            return self.reject(start, line, None, &reason);
        }
        if let Err(reason) = self.append(mark, start) {
            let ts = self.tape.row(mark).get(0).and_then(parse_datetime_ms);
            self.tape.rollback(mark);
            self.reject(start, line, ts, &reason);
        }
    }

    /// Checks the row just put on the tape (since `mark`) and completes it, or says why it is
    /// rejected (the caller then takes it off the tape).
    fn append(&mut self, mark: Mark, start: u64) -> Result<(), RejectReason> {
        if self.map.is_none() {
            let (kind, map, note) = assume_layout(self.kind, self.line, &self.tape.row(mark))?;
            self.notes.push(note);
            self.set_kind(Some(kind));
            self.set_map(Some(map));
        }
        let (Some(map), Some(kind)) = (&self.map, self.kind) else {
            let found = self.tape.row(mark).len();
            return Err(RejectReason::UnknownLayout { fields: found });
        };
        // Field by field (not `Tape::row`), so the integers can go on the tape while it is read.
        let fields = Fields::over(&self.tape.data, &self.tape.bounds[mark.bounds..]);
        if fields.len() != map.width {
            return Err(RejectReason::FieldCount {
                expected: map.width,
                found: fields.len(),
            });
        }
        let ts_field = map
            .timestamp
            .and_then(|i| fields.get(i))
            .unwrap_or_default();
        let Some(ts) = self.datetime.parse(ts_field) else {
            return Err(bad_value(
                map.name(map.timestamp),
                "an ISO 8601 UTC timestamp",
                ts_field,
            ));
        };
        // Integers are the typed fields that can fail: a rejected row's values are rolled back
        // with the rest of it.
        for &(_, src, is_i32) in &map.ints {
            let value = match fields.get(src).filter(|f| !f.is_empty()) {
                None => None,
                Some(f) => {
                    let v = parse_i64(f).filter(|v| !is_i32 || i32::try_from(*v).is_ok());
                    Some(v.ok_or_else(|| bad_value(map.name(Some(src)), "an integer", f))?)
                }
            };
            self.tape.ints.push(value);
        }
        self.tape.timestamps.push(ts);
        self.tape.offsets.push(start as i64);
        let table = kind.table();
        let builders = match &mut self.builders {
            Some(b) => b,
            None => {
                let constants = FileConstants {
                    source_file: Arc::clone(&self.source_file),
                    server: Arc::clone(&self.server),
                    direction: kind.direction(),
                    protocol: kind.protocol(),
                    role: self.role,
                };
                let hints = &self.hints[table_index(table)];
                let (map, size) = (Arc::clone(map), self.batch_size);
                self.builders
                    .insert(TableBuilders::new(table, constants, map, hints, size))
            }
        };
        builders.rows += 1;
        if self.tape.data.len() >= CHUNK_BYTES || self.tape.timestamps.len() >= CHUNK_ROWS {
            builders.absorb(&mut self.tape);
        }
        self.stats.rows += 1;
        Ok(())
    }

    fn reject(&mut self, start: u64, raw: &[u8], ts: Option<i64>, reason: &RejectReason) {
        self.reject_line(self.line, start, raw, ts, reason);
    }

    fn reject_line(
        &mut self,
        line: u64,
        start: u64,
        raw: &[u8],
        ts: Option<i64>,
        reason: &RejectReason,
    ) {
        let table = self.kind.map(LogKind::table);
        self.rejects.append(ts, start, line, table, reason, raw);
        self.stats.rejects += 1;
    }

    fn reject_overlong(&mut self, start: u64, head: &[u8]) {
        let keep = &head[..head.len().min(OVERLONG_RAW_KEEP)];
        let ts = parse_datetime_ms(keep.get(..24).unwrap_or(keep));
        let reason = RejectReason::LineTooLong {
            limit: self.max_line_bytes,
        };
        // Rejected as soon as it crosses the cap, before its end (and line count) is reached.
        self.reject_line(self.line + 1, start, keep, ts, &reason);
    }

    /// The line in `partial` plus `more` crossed the cap: reject it with its first bytes.
    fn overlong_partial(&mut self, more: &[u8]) {
        let mut head = std::mem::take(&mut self.partial);
        let room = OVERLONG_RAW_KEEP.saturating_sub(head.len());
        head.extend_from_slice(&more[..more.len().min(room)]);
        self.reject_overlong(self.partial_start, &head);
        head.clear();
        self.partial = head;
    }
}

/// How far ahead of the line being parsed the input is fetched into cache.
const PREFETCH_AHEAD: usize = 4096;

/// Asks for the input bytes up to [`PREFETCH_AHEAD`] past `pos` to be brought into cache, one
/// cache line at a time (`fetched`: how far it has been asked already). The hardware prefetcher
/// stops at every 4 KiB page boundary, and a large input (a whole file in one buffer) otherwise
/// makes the newline search wait on memory at each new page.
#[inline]
fn prefetch_ahead(buf: &[u8], pos: usize, fetched: &mut usize) {
    #[cfg(target_arch = "x86_64")]
    {
        let until = buf.len().min(pos + PREFETCH_AHEAD);
        // A line longer than the distance leaves nothing behind it worth fetching.
        *fetched = (*fetched).max(pos);
        while *fetched < until {
            safe_arch::prefetch_t0(&buf[*fetched]);
            *fetched += 64;
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (buf, pos, fetched);
}

/// A row arrived before any `#Fields` header: the documented layout of the kind the log type,
/// path or row shape suggests, and the note that says so.
fn assume_layout(
    kind: Option<LogKind>,
    line: u64,
    fields: &Fields<'_>,
) -> Result<(LogKind, FieldMap, Note), RejectReason> {
    let unknown = RejectReason::UnknownLayout {
        fields: fields.len(),
    };
    let kind = match kind {
        Some(k) => k,
        None => kind_from_shape(fields).ok_or(unknown.clone())?,
    };
    let (layout, names) = default_fields(kind, fields.len()).ok_or(unknown)?;
    let note = Note::AssumedLayout {
        line,
        layout,
        columns: names.len(),
    };
    let map = FieldMap::new(kind.table(), names.iter().map(|n| n.as_bytes()));
    Ok((kind, map, note))
}

fn bad_value(column: String, expected: &'static str, value: &[u8]) -> RejectReason {
    let shown = &value[..value.len().min(200)];
    RejectReason::BadValue {
        column,
        expected,
        value: String::from_utf8_lossy(shown).into_owned(),
    }
}

/// A table's slot in the per-table arrays: its position in [`Table::ALL`], which lists every
/// variant in declaration order (a test holds it to that), so the cast cannot go astray.
fn table_index(t: Table) -> usize {
    t as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEADER: &[u8] = b"#Software: Microsoft Exchange Server\r\n\
#Log-type: SMTP Receive Protocol Log\r\n\
#Fields: date-time,connector-id,session-id,sequence-number,local-endpoint,remote-endpoint,event,data,context\r\n";

    fn row(i: u32) -> Vec<u8> {
        format!("2024-01-25T15:14:39.{i:03}Z,EX01\\Default,08DC1DB8591B22A0,{i},10.0.0.5:25,203.0.113.9:41822,<,EHLO x,\r\n").into_bytes()
    }

    fn decoder(batch: usize) -> Decoder {
        DecoderBuilder::new("EX01/SmtpReceive/RECV2024012515-1.LOG")
            .with_batch_size(batch)
            .with_max_line_bytes(200)
            .build()
    }

    #[test]
    fn decode_stops_at_a_full_batch_and_resumes_after_the_flush() {
        let mut d = decoder(2);
        let mut input = HEADER.to_vec();
        (0..5).for_each(|i| input.extend(row(i)));
        let used = d.decode(&input).unwrap();
        assert!(d.needs_flush());
        assert!(used < input.len(), "stops at the batch's end");
        assert_eq!(
            d.decode(&input[used..]).unwrap(),
            0,
            "no progress until flushed"
        );
        let first = d.flush().unwrap();
        assert_eq!(first.data.unwrap().batch.num_rows(), 2);
        assert_eq!(
            first.end_offset, used as u64,
            "the checkpoint is where decoding stopped"
        );
        let mut at = used;
        let mut rows = 2;
        while at < input.len() {
            at += d.decode(&input[at..]).unwrap();
            rows += d.flush().unwrap().data.map_or(0, |x| x.batch.num_rows());
        }
        assert_eq!(rows, 5);
    }

    #[test]
    fn resuming_after_the_header_keeps_offsets_absolute() {
        let mut input = HEADER.to_vec();
        (0..4).for_each(|i| input.extend(row(i)));
        let skip = HEADER.len() + 2 * row(0).len();
        let mut d = decoder(100);
        assert_eq!(d.decode(HEADER).unwrap(), HEADER.len());
        d.resume_at(skip as u64).unwrap();
        d.decode(&input[skip..]).unwrap();
        let batch = d.flush().unwrap().data.unwrap().batch;
        assert_eq!(batch.num_rows(), 2);
        let offsets = batch
            .column_by_name("source_offset")
            .unwrap()
            .as_any()
            .downcast_ref::<arrow_array::Int64Array>()
            .unwrap();
        assert_eq!(offsets.value(0), skip as i64);
        // Not inside a line, and never backwards.
        let mut d = decoder(100);
        d.decode(&input[..HEADER.len() + 5]).unwrap();
        assert!(d.resume_at(skip as u64).is_err());
        let mut d = decoder(100);
        d.decode(HEADER).unwrap();
        assert!(d.resume_at(3).is_err());
    }

    #[test]
    fn a_line_split_across_buffers_is_one_row_and_not_complete_until_its_end() {
        let mut d = decoder(100);
        let line = row(7);
        let mut input = HEADER.to_vec();
        input.extend(&line[..20]);
        d.decode(&input).unwrap();
        assert_eq!(d.pending_rows(), 0);
        assert_eq!(
            d.complete_offset(),
            HEADER.len() as u64,
            "the half line is not done"
        );
        d.decode(&line[20..]).unwrap();
        assert_eq!(d.pending_rows(), 1);
        assert_eq!(d.complete_offset(), (HEADER.len() + line.len()) as u64);
        assert_eq!(d.stats().rows, 1);
    }

    #[test]
    fn an_unterminated_last_line_is_parsed_only_at_finish() {
        let mut d = decoder(100);
        let mut input = HEADER.to_vec();
        let line = row(1);
        input.extend(&line[..line.len() - 2]);
        d.decode(&input).unwrap();
        assert_eq!(d.pending_rows(), 0);
        d.finish().unwrap();
        let out = d.flush().unwrap();
        assert_eq!(out.data.unwrap().batch.num_rows(), 1);
        assert!(out.rejects.is_none());
    }

    #[test]
    fn an_overlong_line_is_rejected_once_whatever_the_chunking() {
        for chunk in [1, 13, 4096] {
            let mut d = decoder(100);
            let mut input = HEADER.to_vec();
            input.extend(vec![b'x'; 500]);
            input.extend(b"\r\n");
            input.extend(row(2));
            for piece in input.chunks(chunk) {
                let mut rest = piece;
                while !rest.is_empty() {
                    rest = &rest[d.decode(rest).unwrap()..];
                }
            }
            d.finish().unwrap();
            let out = d.flush().unwrap();
            let rejects = out.rejects.unwrap();
            assert_eq!(rejects.num_rows(), 1, "chunk {chunk}");
            assert_eq!(out.data.unwrap().batch.num_rows(), 1, "chunk {chunk}");
            let s = d.stats();
            assert_eq!(
                s.lines,
                s.directives + s.blank + s.rows + s.rejects,
                "{s:?}"
            );
        }
    }

    #[test]
    fn a_new_header_ends_the_batch_and_sizes_pass_to_the_next_file() {
        let mut d = decoder(100);
        let mut input = HEADER.to_vec();
        input.extend(row(0));
        input.extend(b"#Fields: date-time,connector-id,session-id,sequence-number,local-endpoint,remote-endpoint,event,data\r\n");
        input.extend(b"2024-01-25T15:14:40.000Z,EX01\\Default,08DC1DB8591B22A1,0,10.0.0.5:25,203.0.113.9:41823,+,\r\n");
        let used = d.decode(&input).unwrap();
        assert!(d.needs_flush(), "the layout changed");
        assert_eq!(d.flush().unwrap().data.unwrap().batch.num_rows(), 1);
        d.decode(&input[used..]).unwrap();
        d.finish().unwrap();
        assert_eq!(d.flush().unwrap().data.unwrap().batch.num_rows(), 1);
        let sizes = d.take_sizes();
        let learned = &sizes.0[table_index(Table::SmtpProtocol)];
        assert!(learned.rows > 0, "the table's batch sizes were learned");
        assert_eq!(d.server(), "EX01", "the folder names the server");
    }
}
