//! Windows events and queue snapshots: the inputs that are not transport logs but hold half of
//! each diagnosis. They arrive as whatever an admin had at hand: `.evtx` exports,
//! `wevtutil qe … /f:xml`, `Get-WinEvent | ConvertTo-Json`, Event Viewer's "Copy details as
//! text", and `Get-Queue` as `Format-List` text, `Export-Csv` or `ConvertTo-Json`; saved by
//! Windows PowerShell 5.1 that is UTF-16 more often than not.
//!
//! [`detect`] recognises each by content, never by name (pastes are saved as `.txt`).
//! [`RecordDecoder`] is the push decoder the transport-log [`Decoder`](crate::Decoder) hands such
//! a file to: bytes in, whole records framed out of them (an XML element, a JSON object, a
//! text block, a CSV record, a 64 KiB `.evtx` chunk), one row each, or a reject with the
//! record's raw bytes and why. `source_offset` is the byte offset of the record in the file as
//! it is on disk (UTF-16 included), so `(file, offset)` finds it again and a resume skips what
//! was read; memory is bounded by the longest record, whatever the file's size.

pub(crate) mod events;
pub(crate) mod queues;
pub(crate) mod time;

use std::sync::Arc;

use memchr::memmem;

use crate::batch::RejectBuilders;
use crate::decoder::{Decoded, DecoderStats, Flushed};
use crate::error::{Error, RejectReason};
use crate::kind::Table;
use crate::server::canonical_server;
use crate::tokenize::Tokenizer;
use events::{EventBuilders, EventRecord};
use queues::{QueueBuilders, QueueRecord};

/// How a file of events or queues is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RecordFormat {
    /// `.evtx`: the binary event log format.
    Evtx,
    /// Event XML (`wevtutil qe /f:xml`).
    EventXml,
    /// `Get-WinEvent | ConvertTo-Json`.
    EventJson,
    /// Event Viewer's "Copy details as text".
    EventText,
    /// `Get-Queue | Format-List`.
    QueueList,
    /// `Get-Queue | Export-Csv`.
    QueueCsv,
    /// `Get-Queue | ConvertTo-Json`.
    QueueJson,
}

impl RecordFormat {
    /// The table its rows go to.
    pub fn table(self) -> Table {
        match self {
            RecordFormat::Evtx
            | RecordFormat::EventXml
            | RecordFormat::EventJson
            | RecordFormat::EventText => Table::TransportEvents,
            RecordFormat::QueueList | RecordFormat::QueueCsv | RecordFormat::QueueJson => {
                Table::QueueSnapshots
            }
        }
    }

    /// The value of the rows' `input_format` column.
    pub fn name(self) -> &'static str {
        match self {
            RecordFormat::Evtx => "evtx",
            RecordFormat::EventXml => "xml",
            RecordFormat::EventJson | RecordFormat::QueueJson => "json",
            RecordFormat::EventText => "text",
            RecordFormat::QueueList => "list",
            RecordFormat::QueueCsv => "csv",
        }
    }
}

const EVTX_MAGIC: &[u8] = b"ElfFile\0";
const EVTX_HEADER: usize = 4096;
const EVTX_CHUNK: usize = 65536;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Encoding {
    Utf8,
    Utf16Le,
    Utf16Be,
}

fn encoding(head: &[u8]) -> (Encoding, usize) {
    match head {
        [0xFF, 0xFE, ..] => (Encoding::Utf16Le, 2),
        [0xFE, 0xFF, ..] => (Encoding::Utf16Be, 2),
        [a, 0, b, 0, ..] if *a != 0 && *b != 0 => (Encoding::Utf16Le, 0),
        [0, a, 0, b, ..] if *a != 0 && *b != 0 => (Encoding::Utf16Be, 0),
        _ => (Encoding::Utf8, 0),
    }
}

/// What a file holds, from its first bytes; `None` for anything that is not one of the formats.
pub fn detect(head: &[u8]) -> Option<RecordFormat> {
    if head.starts_with(EVTX_MAGIC) {
        return Some(RecordFormat::Evtx);
    }
    // Every transport log starts so (with or without a BOM): the usual case, settled at once.
    if head
        .strip_prefix(b"\xEF\xBB\xBF")
        .unwrap_or(head)
        .starts_with(b"#Software: Microsoft Exchange")
    {
        return None;
    }
    let (enc, bom) = encoding(head);
    let text = match enc {
        Encoding::Utf8 => String::from_utf8_lossy(head).into_owned(),
        Encoding::Utf16Le | Encoding::Utf16Be => {
            let units = head[bom..].chunks_exact(2).map(|c| match enc {
                Encoding::Utf16Le => u16::from_le_bytes([c[0], c[1]]),
                _ => u16::from_be_bytes([c[0], c[1]]),
            });
            char::decode_utf16(units)
                .map(|c| c.unwrap_or(char::REPLACEMENT_CHARACTER))
                .collect()
        }
    };
    let text = text.trim_start_matches(['\u{feff}', ' ', '\t', '\r', '\n']);
    if text.starts_with('<') {
        let xml =
            text.contains("<Event xmlns") || text.contains("<Event>") || text.contains("<System>");
        return xml.then_some(RecordFormat::EventXml);
    }
    if text.starts_with('[') || text.starts_with('{') {
        if text.contains("\"ProviderName\"")
            || (text.contains("\"EventID\"") && text.contains("\"Source\""))
        {
            return Some(RecordFormat::EventJson);
        }
        if text.contains("\"NextHopDomain\"") || text.contains("\"DeliveryType\"") {
            return Some(RecordFormat::QueueJson);
        }
        return None;
    }
    let mut list_keys = 0;
    let (mut source, mut event_id) = (false, false);
    for line in text.lines().take(80) {
        let line = line.trim_end();
        if line.starts_with("#TYPE ") && line.contains("QueueViewer") {
            return Some(RecordFormat::QueueCsv);
        }
        if !line.starts_with('#')
            && line.contains(',')
            && line.contains("NextHopDomain")
            && !line.contains(" : ")
        {
            return Some(RecordFormat::QueueCsv);
        }
        if let Some((key, _)) = list_line(line)
            && matches!(
                key,
                "Identity" | "DeliveryType" | "NextHopDomain" | "MessageCount" | "LastError"
            )
        {
            list_keys += 1;
            if list_keys >= 2 {
                return Some(RecordFormat::QueueList);
            }
        }
        match events::header_line(line).map(|(k, _)| k) {
            Some("Log Name") => return Some(RecordFormat::EventText),
            Some("Source") => source = true,
            Some("Event ID") => event_id = true,
            _ => {}
        }
        if source && event_id {
            return Some(RecordFormat::EventText);
        }
    }
    None
}

/// `Key : value` of `Format-List`: the key starts the line, the colon follows padding.
fn list_line(line: &str) -> Option<(&str, &str)> {
    if line.starts_with(char::is_whitespace) {
        return None;
    }
    let (key, value) = line.split_once(" :")?;
    let key = key.trim_end();
    let ok = !key.is_empty()
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_');
    ok.then(|| (key, value.strip_prefix(' ').unwrap_or(value)))
}

/// Which event providers are kept; the rest are skipped (counted, not rejected).
#[derive(Debug, Clone)]
pub struct Providers(Option<Arc<[String]>>);

impl Default for Providers {
    /// Exchange's own providers (`MSExchangeTransport`, `MSExchangeFrontEndTransport`,
    /// `MSExchange Common`, …) and Schannel, whose TLS failures explain the transport's.
    fn default() -> Self {
        Providers::new(["MSExchange*", "Schannel"])
    }
}

impl Providers {
    /// Names, case-insensitive; a trailing `*` matches any ending; `*` alone keeps every event.
    pub fn new<S: Into<String>>(patterns: impl IntoIterator<Item = S>) -> Self {
        let list: Vec<String> = patterns.into_iter().map(Into::into).collect();
        if list.iter().any(|p| p == "*") {
            return Providers(None);
        }
        Providers(Some(list.into()))
    }

    /// Whether events of `provider` are kept.
    pub fn keeps(&self, provider: Option<&str>) -> bool {
        let Some(list) = &self.0 else {
            return true;
        };
        let Some(p) = provider else {
            return false;
        };
        list.iter().any(|pat| provider_matches(pat, p))
    }
}

/// Whether an event provider matches a pattern: a name, case-insensitive, or with a trailing
/// `*` a prefix (`MSExchange*` matches `MSExchangeTransport`). Shared by the provider filter
/// and the diagnosis catalog's `provider` condition.
pub fn provider_matches(pattern: &str, provider: &str) -> bool {
    match pattern.strip_suffix('*') {
        // `get`: a prefix that ends inside a character of the provider is no match.
        Some(prefix) => provider
            .get(..prefix.len())
            .is_some_and(|p| p.eq_ignore_ascii_case(prefix)),
        None => provider.eq_ignore_ascii_case(pattern),
    }
}

/// Settings the decoder takes from its builder.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    /// What the file was sniffed as (by [`detect`] on its first bytes).
    pub(crate) format: RecordFormat,
    pub(crate) source_file: Arc<str>,
    /// `--server`: wins over what the records name.
    pub(crate) forced_server: Option<String>,
    /// When a record names no server (path, host name, `UNKNOWN`).
    pub(crate) fallback_server: Arc<str>,
    /// When a record has no time of its own (a snapshot, a paste without `Date:`).
    pub(crate) file_time: Option<i64>,
    pub(crate) providers: Providers,
    pub(crate) batch_size: usize,
    pub(crate) max_record_bytes: usize,
}

/// Where the framer is, between calls.
#[derive(Debug, Default)]
struct Framer {
    /// Next byte of `text` to look at.
    scan: usize,
    /// Start of the record being framed, if one is open.
    open: Option<usize>,
    /// JSON: nesting depth, inside a string, after a backslash, top level is an array.
    depth: u32,
    in_string: bool,
    escaped: bool,
    array: bool,
    /// Text blocks: which keys the open block has (`Log Name`, `Source`, `Event ID`, `Date`),
    /// and whether its `Event Xml:` is being read.
    keys: u8,
    in_xml: bool,
    /// CSV: the header's column names.
    header: Option<Vec<String>>,
}

/// The push decoder for events and queue snapshots. See the module docs.
#[derive(Debug)]
pub(crate) struct RecordDecoder {
    settings: Settings,
    format: Option<RecordFormat>,
    encoding: Option<Encoding>,
    /// Bytes of an incomplete UTF-16 code unit or surrogate pair, carried to the next call.
    carry: Vec<u8>,
    /// Input not yet framed, as UTF-8 (`.evtx`: the raw bytes).
    text: Vec<u8>,
    /// File offset of `text[0]`.
    text_offset: u64,
    /// Bytes consumed from the caller.
    consumed: u64,
    framer: Framer,
    /// Splits `Export-Csv` records.
    tokenizer: Tokenizer,
    /// `.evtx`: the header has been read; how many chunks it says are in use, and how many seen.
    evtx_chunks: Option<(u64, u64)>,
    events: EventBuilders,
    queues: QueueBuilders,
    rejects: RejectBuilders,
    table: Option<Table>,
    stats: DecoderStats,
    records: u64,
    /// Records before this offset were read by an earlier run.
    skip_before: u64,
    /// The file is none of the formats: the rest of it is passed over.
    undecidable: bool,
}

impl RecordDecoder {
    pub(crate) fn new(settings: Settings) -> Self {
        RecordDecoder {
            settings,
            format: None,
            encoding: None,
            carry: Vec::new(),
            text: Vec::new(),
            text_offset: 0,
            consumed: 0,
            framer: Framer::default(),
            tokenizer: Tokenizer::default(),
            evtx_chunks: None,
            events: EventBuilders::new(),
            queues: QueueBuilders::new(),
            rejects: RejectBuilders::new(),
            table: None,
            stats: DecoderStats::default(),
            records: 0,
            skip_before: 0,
            undecidable: false,
        }
    }

    pub(crate) fn stats(&self) -> DecoderStats {
        self.stats
    }

    pub(crate) fn pending_rows(&self) -> usize {
        self.events.rows + self.queues.rows + self.rejects.rows
    }

    pub(crate) fn needs_flush(&self) -> bool {
        self.pending_rows() >= self.settings.batch_size
    }

    /// Every record that starts before this offset is in a batch: `text` starts at the first
    /// byte not yet framed.
    pub(crate) fn complete_offset(&self) -> u64 {
        self.text_offset
    }

    /// The file offset of `text[pos]`.
    fn original_offset(&self, pos: usize) -> u64 {
        self.advance(&self.text, &mut (0, self.text_offset), pos)
    }

    /// The file offset of `text[pos]`, counted on from `at` (a position of `text` and its file
    /// offset, moved to `pos`): positions asked in order cost one walk of `text` in all.
    fn advance(&self, text: &[u8], at: &mut (usize, u64), pos: usize) -> u64 {
        let bytes = &text[at.0.min(pos)..pos];
        let step = match self.encoding {
            // UTF-8 back to UTF-16 code units: one per character, two above U+FFFF.
            Some(Encoding::Utf16Le | Encoding::Utf16Be) => {
                2 * bytes
                    .iter()
                    .filter(|&&b| b & 0xC0 != 0x80)
                    .map(|&b| if b >= 0xF0 { 2 } else { 1 })
                    .sum::<u64>()
            }
            _ => bytes.len() as u64,
        };
        *at = (pos, at.1 + step);
        at.1
    }

    /// Takes bytes; returns how many it used (all, unless a batch filled first).
    pub(crate) fn decode(&mut self, buf: &[u8]) -> Result<usize, Error> {
        let mut used = 0;
        while used < buf.len() && !self.needs_flush() {
            used += self.decode_some(&buf[used..])?;
        }
        Ok(used)
    }

    /// Skips every record that starts before `offset` (read by an earlier run). The file is
    /// still fed from its start: its encoding, CSV header and JSON nesting come from there.
    pub(crate) fn skip_before(&mut self, offset: u64) {
        self.skip_before = offset;
    }

    fn decode_some(&mut self, buf: &[u8]) -> Result<usize, Error> {
        if self.format == Some(RecordFormat::Evtx) {
            return Ok(self.decode_evtx(buf));
        }
        if self.undecidable {
            self.consumed += buf.len() as u64;
            self.stats.bytes = self.consumed;
            self.text_offset = self.consumed;
            return Ok(buf.len());
        }
        if self.encoding.is_none() {
            // The first eight bytes say `.evtx`, or which encoding the text is in.
            let take = buf.len().min(8 - self.carry.len());
            self.carry.extend_from_slice(&buf[..take]);
            self.consumed += take as u64;
            self.stats.bytes = self.consumed;
            if self.carry.len() == 8 {
                self.start();
            }
            return Ok(take);
        }
        // A piece at a time, framed before the next, so memory stays bounded when the caller
        // hands over a whole file at once.
        let take = buf.len().min(1 << 20);
        self.push_text(&buf[..take]);
        self.consumed += take as u64;
        self.stats.bytes = self.consumed;
        self.frame(false)?;
        Ok(take)
    }

    /// Decides from the first bytes (in `carry`) between `.evtx` and text, and the encoding.
    fn start(&mut self) {
        let first = std::mem::take(&mut self.carry);
        if first.starts_with(EVTX_MAGIC) {
            self.format = Some(RecordFormat::Evtx);
            self.text = first;
            return;
        }
        if self.settings.format == RecordFormat::Evtx {
            self.reject(
                0,
                &first,
                RejectReason::BadRecord("not an .evtx file (no ElfFile signature)".into()),
            );
            self.undecidable = true;
            self.text_offset = self.consumed;
            return;
        }
        self.format = Some(self.settings.format);
        let (enc, bom) = encoding(&first);
        self.encoding = Some(enc);
        self.text_offset = bom as u64;
        self.push_text(&first[bom..]);
    }

    /// Appends input to `text`, as UTF-8.
    fn push_text(&mut self, buf: &[u8]) {
        let enc = self.encoding.unwrap_or(Encoding::Utf8);
        if enc == Encoding::Utf8 {
            self.text.extend_from_slice(buf);
            return;
        }
        self.carry.extend_from_slice(buf);
        let whole = self.carry.len() / 2 * 2;
        let units: Vec<u16> = self.carry[..whole]
            .chunks_exact(2)
            .map(|c| match enc {
                Encoding::Utf16Le => u16::from_le_bytes([c[0], c[1]]),
                _ => u16::from_be_bytes([c[0], c[1]]),
            })
            .collect();
        // A high surrogate at the end waits for its pair.
        let keep = usize::from(units.last().is_some_and(|u| (0xD800..0xDC00).contains(u)));
        let done = units.len() - keep;
        let mut tmp = [0u8; 4];
        for c in char::decode_utf16(units[..done].iter().copied()) {
            // A lone surrogate becomes U+FFFD: one unit in UTF-16 as it was, which keeps the
            // offset arithmetic exact.
            let c = c.unwrap_or(char::REPLACEMENT_CHARACTER);
            self.text
                .extend_from_slice(c.encode_utf8(&mut tmp).as_bytes());
        }
        self.carry.drain(..done * 2);
    }

    pub(crate) fn finish(&mut self) -> Result<(), Error> {
        if self.format == Some(RecordFormat::Evtx) {
            if !self.text.is_empty() {
                let raw = std::mem::take(&mut self.text);
                // A cut chunk still holds whole records before the cut: read it padded to a
                // chunk's size (the records past the cut fail, and say so), and reject the cut.
                if self.evtx_chunks.is_some() && raw.starts_with(b"ElfChnk\0") {
                    let mut chunk = raw.clone();
                    chunk.resize(EVTX_CHUNK, 0);
                    self.evtx_chunk(self.text_offset, chunk);
                }
                self.reject(
                    self.text_offset,
                    &raw[..raw.len().min(4096)],
                    RejectReason::BadRecord(format!(
                        "a truncated .evtx chunk of {} bytes",
                        raw.len()
                    )),
                );
                self.text_offset += raw.len() as u64;
            }
            return Ok(());
        }
        if self.encoding.is_none() && self.format.is_none() && !self.carry.is_empty() {
            self.start();
        }
        let dangling = matches!(self.encoding, Some(Encoding::Utf16Le | Encoding::Utf16Be))
            && !self.carry.is_empty();
        if dangling {
            // An odd last byte or a high surrogate without its pair: U+FFFD, as invalid UTF-8
            // is elsewhere.
            self.carry.clear();
            self.text.extend_from_slice("\u{FFFD}".as_bytes());
        }
        if self.format.is_some() {
            self.frame(true)?;
        }
        // The stand-in counts two bytes; an odd last byte was one.
        self.text_offset = self.text_offset.min(self.consumed);
        Ok(())
    }

    pub(crate) fn flush(&mut self) -> Result<Flushed, Error> {
        let mut out = Flushed {
            end_offset: self.complete_offset(),
            ..Flushed::default()
        };
        let file = Arc::clone(&self.settings.source_file);
        if self.events.rows > 0 {
            self.stats.rows += self.events.rows as u64;
            out.data = Some(Decoded {
                table: Table::TransportEvents,
                batch: self.events.finish(&file)?,
            });
        } else if self.queues.rows > 0 {
            self.stats.rows += self.queues.rows as u64;
            out.data = Some(Decoded {
                table: Table::QueueSnapshots,
                batch: self.queues.finish(&file)?,
            });
        }
        if self.rejects.rows > 0 {
            self.stats.rejects += self.rejects.rows as u64;
            out.rejects = Some(self.rejects.finish(&file, &self.settings.fallback_server)?);
        }
        Ok(out)
    }

    fn reject(&mut self, offset: u64, raw: &[u8], reason: RejectReason) {
        if offset < self.skip_before {
            return;
        }
        self.records += 1;
        self.stats.lines += 1;
        let keep = &raw[..raw.len().min(64 * 1024)];
        self.rejects.append(
            self.settings.file_time,
            offset,
            self.records,
            self.format.map(RecordFormat::table),
            &reason,
            keep,
        );
    }

    /// Frames whole records out of `text` and makes rows of them; at `eof` the last one too.
    fn frame(&mut self, eof: bool) -> Result<(), Error> {
        let Some(format) = self.format else {
            return Ok(());
        };
        let mut records: Vec<(usize, usize)> = Vec::new();
        let done = match format {
            RecordFormat::EventXml => frame_xml(&self.text, &mut self.framer, eof, &mut records),
            RecordFormat::EventJson | RecordFormat::QueueJson => {
                frame_json(&self.text, &mut self.framer, eof, &mut records)
            }
            RecordFormat::EventText => {
                frame_event_text(&self.text, &mut self.framer, eof, &mut records)
            }
            RecordFormat::QueueList => {
                frame_blocks(&self.text, &mut self.framer, eof, &mut records)
            }
            RecordFormat::QueueCsv => frame_csv(&self.text, &mut self.framer, eof, &mut records),
            RecordFormat::Evtx => 0,
        };
        // Out of `self` while its records are made into rows (no copy of each), and walked
        // once for the offsets of all of them.
        let text = std::mem::take(&mut self.text);
        let mut at = (0, self.text_offset);
        for (start, end) in records {
            let offset = self.advance(&text, &mut at, start);
            self.record(format, offset, &text[start..end]);
        }
        self.text = text;
        // A record longer than the cap is rejected and skipped, so memory stays bounded.
        let mut done = done;
        if self.text.len() - done > self.settings.max_record_bytes {
            let offset = self.original_offset(done);
            let raw = self.text[done..].to_vec();
            self.reject(
                offset,
                &raw,
                RejectReason::LineTooLong {
                    limit: self.settings.max_record_bytes,
                },
            );
            self.framer = Framer {
                header: self.framer.header.take(),
                ..Framer::default()
            };
            done = self.text.len();
            self.framer.scan = done;
        }
        // Drop what is framed.
        let new_offset = self.original_offset(done);
        self.text.drain(..done);
        self.text_offset = new_offset;
        self.framer.scan -= done.min(self.framer.scan);
        if let Some(o) = &mut self.framer.open {
            *o -= done.min(*o);
        }
        Ok(())
    }

    /// One framed record: a row, a skip (another provider), or a reject.
    fn record(&mut self, format: RecordFormat, offset: u64, raw: &[u8]) {
        let text = String::from_utf8_lossy(raw);
        let text = text.trim_matches(['\u{feff}', ' ', '\t', '\r', '\n', ',']);
        let parsed = match format {
            RecordFormat::EventXml => events::parse_xml(text).map(Row::Event),
            RecordFormat::EventText => events::parse_text(text).map(Row::Event),
            RecordFormat::EventJson | RecordFormat::QueueJson => match serde_json::from_str::<
                serde_json::Value,
            >(text)
            {
                Ok(serde_json::Value::Object(o)) => {
                    if o.contains_key("NextHopDomain") || o.contains_key("DeliveryType") {
                        QueueRecord::from_pairs(o.iter().map(|(k, v)| (k.as_str(), json_text(v))))
                            .map(Row::Queue)
                    } else {
                        events::parse_json(&o).map(Row::Event)
                    }
                }
                Ok(_) => Err("a JSON value that is not an object".into()),
                Err(e) => Err(format!("JSON: {e}")),
            },
            RecordFormat::QueueList => QueueRecord::from_pairs(list_pairs(text)).map(Row::Queue),
            RecordFormat::QueueCsv => self
                .csv_pairs(text)
                .and_then(|p| {
                    QueueRecord::from_pairs(p.iter().map(|(k, v)| (k.as_str(), v.clone())))
                })
                .map(Row::Queue),
            RecordFormat::Evtx => Err("internal: .evtx records are not text".into()),
        };
        self.row(format, offset, raw, parsed);
    }

    fn row(&mut self, format: RecordFormat, offset: u64, raw: &[u8], parsed: Result<Row, String>) {
        let row = match parsed {
            Ok(row) => row,
            Err(why) => {
                self.reject(offset, raw, RejectReason::BadRecord(why));
                return;
            }
        };
        if offset < self.skip_before {
            return;
        }
        if let Row::Event(e) = &row
            && !self.settings.providers.keeps(e.provider.as_deref())
        {
            // Another provider's event: counted with the lines passed over, not rejected.
            self.records += 1;
            self.stats.lines += 1;
            self.stats.passed_over += 1;
            return;
        }
        let table = match row {
            Row::Event(_) => Table::TransportEvents,
            Row::Queue(_) => Table::QueueSnapshots,
        };
        if *self.table.get_or_insert(table) != table {
            self.reject(
                offset,
                raw,
                RejectReason::BadRecord(format!(
                    "a {} record in a file of {}",
                    table.name(),
                    self.table.map_or("", Table::name)
                )),
            );
            return;
        }
        let named = match &row {
            Row::Event(e) => e.computer.as_deref(),
            Row::Queue(q) => q.server(),
        };
        let server = self
            .settings
            .forced_server
            .clone()
            .or_else(|| named.and_then(canonical_server))
            .unwrap_or_else(|| self.settings.fallback_server.to_string());
        let time = match &row {
            Row::Event(e) => e.time,
            Row::Queue(_) => None,
        }
        .or(self.settings.file_time)
        .or(match &row {
            Row::Queue(q) => q.last_retry_time,
            Row::Event(_) => None,
        });
        let Some(time) = time else {
            self.reject(
                offset,
                raw,
                RejectReason::BadRecord(
                    "no time: the record has none and the file's time is unknown".into(),
                ),
            );
            return;
        };
        self.records += 1;
        self.stats.lines += 1;
        match row {
            Row::Event(e) => self.events.append(&e, time, &server, offset, format.name()),
            Row::Queue(q) => self.queues.append(&q, time, &server, offset, format.name()),
        }
    }

    fn csv_pairs(&mut self, record: &str) -> Result<Vec<(String, String)>, String> {
        let values = csv_fields(&mut self.tokenizer, record)?;
        let header = self
            .framer
            .header
            .as_ref()
            .ok_or("a CSV record before its header")?;
        Ok(header.iter().cloned().zip(values).collect())
    }

    /// Takes what completes the header or the current 64 KiB chunk, and reads the chunk.
    fn decode_evtx(&mut self, buf: &[u8]) -> usize {
        let need = if self.evtx_chunks.is_none() {
            EVTX_HEADER
        } else {
            EVTX_CHUNK
        };
        let take = buf.len().min(need.saturating_sub(self.text.len()));
        self.text.extend_from_slice(&buf[..take]);
        self.consumed += take as u64;
        self.stats.bytes = self.consumed;
        if self.text.len() < need {
            return take;
        }
        let block = std::mem::take(&mut self.text);
        let at = self.text_offset;
        self.text_offset += block.len() as u64;
        match &mut self.evtx_chunks {
            None => {
                // The header says how many chunks are in use: a live log's file holds stale
                // chunks past them, which must not be read as events.
                let count = block
                    .get(42..44)
                    .map_or(0, |b| u16::from_le_bytes([b[0], b[1]]));
                self.evtx_chunks = Some((u64::from(count), 0));
            }
            Some((count, seen)) => {
                *seen += 1;
                if *count == 0 || *seen <= *count {
                    self.evtx_chunk(at, block);
                }
            }
        }
        take
    }

    fn evtx_chunk(&mut self, at: u64, block: Vec<u8>) {
        if !block.starts_with(b"ElfChnk\0") {
            return;
        }
        let head = block[..512.min(block.len())].to_vec();
        let rows = match evtx_records(at, block) {
            Ok(rows) => rows,
            Err(e) => {
                let reason = RejectReason::BadRecord(format!(".evtx chunk: {e}"));
                self.reject(at, &head, reason);
                return;
            }
        };
        for (offset, parsed) in rows {
            self.row(RecordFormat::Evtx, offset, &head[..0], parsed);
        }
    }
}

/// The records of one `.evtx` chunk at file offset `at`, each parsed or why not.
fn evtx_records(at: u64, block: Vec<u8>) -> Result<Vec<Parsed>, evtx::err::ChunkError> {
    let mut data = evtx::EvtxChunkData::new(block, false)?;
    let mut chunk = data.parse(Arc::new(evtx::ParserSettings::default()))?;
    let rows = chunk
        .iter()
        .map(|record| match record {
            Ok(r) => {
                let offset = at + r.binxml_offset;
                let parsed = r
                    .into_xml()
                    .map_err(|e| format!(".evtx record: {e}"))
                    .and_then(|x| events::parse_xml(&x.data).map(Row::Event));
                (offset, parsed)
            }
            Err(e) => (at, Err(format!(".evtx record: {e}"))),
        })
        .collect();
    Ok(rows)
}

enum Row {
    Event(EventRecord),
    Queue(QueueRecord),
}

/// A record's file offset, and its row or why it has none.
type Parsed = (u64, Result<Row, String>);

fn json_text(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Null => String::new(),
        serde_json::Value::Object(o) => {
            // A deserialized identity: its server and queue, when it has them.
            match (o.get("Server").and_then(|s| s.as_str()), o.get("RowId")) {
                (Some(s), Some(id)) => format!("{s}\\{}", json_text(id)),
                _ => v.to_string(),
            }
        }
        other => other.to_string(),
    }
}

/// `Format-List` pairs: a value wrapped onto indented lines is joined back with spaces.
fn list_pairs(block: &str) -> Vec<(&str, String)> {
    let mut out: Vec<(&str, String)> = Vec::new();
    for line in block.lines() {
        let line = line.trim_end_matches('\r');
        if let Some((key, value)) = list_line(line) {
            out.push((key, value.trim().to_string()));
        } else if let Some((_, v)) = out.last_mut() {
            let more = line.trim();
            if !more.is_empty() {
                if !v.is_empty() {
                    v.push(' ');
                }
                v.push_str(more);
            }
        }
    }
    out
}

/// One CSV record's fields, by the transport logs' tokenizer (a quoted field may hold line
/// ends; `""` is a quote).
fn csv_fields(tokenizer: &mut Tokenizer, record: &str) -> Result<Vec<String>, String> {
    let record = record.trim_end_matches(['\r', '\n']);
    let fields = tokenizer
        .tokenize(record.as_bytes())
        .map_err(|_| "a quoted CSV field never closes".to_string())?;
    Ok(fields
        .iter()
        .map(|f| String::from_utf8_lossy(f).into_owned())
        .collect())
}

/// Complete lines of `text` from `from`: `(start, end_without_newline, next)`.
fn lines(text: &[u8], from: usize) -> impl Iterator<Item = (usize, usize, usize)> + '_ {
    let mut pos = from;
    std::iter::from_fn(move || {
        let nl = pos + memchr::memchr(b'\n', text.get(pos..)?)?;
        let start = pos;
        pos = nl + 1;
        let end = if nl > start && text[nl - 1] == b'\r' {
            nl - 1
        } else {
            nl
        };
        Some((start, end, nl + 1))
    })
}

fn is_blank(line: &[u8]) -> bool {
    line.iter().all(|b| b.is_ascii_whitespace())
        || line
            .strip_prefix("\u{feff}".as_bytes())
            .is_some_and(|l| l.iter().all(u8::is_ascii_whitespace))
}

/// `<Event …>…</Event>` elements; anything between them (an `<Events>` wrapper, an XML
/// declaration, whitespace) is passed over. Returns how far `text` is done with.
fn frame_xml(text: &[u8], f: &mut Framer, eof: bool, out: &mut Vec<(usize, usize)>) -> usize {
    let open = memmem::Finder::new(b"<Event");
    let close = memmem::Finder::new(b"</Event>");
    loop {
        let start = match f.open {
            Some(s) => s,
            None => {
                let mut from = f.scan;
                let found = loop {
                    match open.find(&text[from..]) {
                        Some(i) => {
                            let at = from + i;
                            match text.get(at + 6) {
                                Some(b' ' | b'>' | b'\t' | b'\r' | b'\n') => break Some(at),
                                Some(_) => from = at + 6,
                                None => break None,
                            }
                        }
                        None => break None,
                    }
                };
                match found {
                    Some(at) => {
                        f.open = Some(at);
                        f.scan = at + 6;
                        at
                    }
                    None => {
                        // Keep a possible `<Event` cut at the end for the next call.
                        f.scan = if eof {
                            text.len()
                        } else {
                            text.len().saturating_sub(6).max(f.scan)
                        };
                        return f.scan;
                    }
                }
            }
        };
        match close.find(&text[f.scan..]) {
            Some(i) => {
                let end = f.scan + i + b"</Event>".len();
                out.push((start, end));
                f.open = None;
                f.scan = end;
            }
            None if eof => {
                out.push((start, text.len()));
                f.open = None;
                f.scan = text.len();
                return f.scan;
            }
            None => {
                f.scan = text.len().saturating_sub(7).max(f.scan);
                return start;
            }
        }
    }
}

/// JSON objects: the elements of a top-level array, or objects one after another (NDJSON).
fn frame_json(text: &[u8], f: &mut Framer, eof: bool, out: &mut Vec<(usize, usize)>) -> usize {
    let mut pos = f.scan;
    while pos < text.len() {
        let b = text[pos];
        if f.in_string {
            if f.escaped {
                f.escaped = false;
            } else if b == b'\\' {
                f.escaped = true;
            } else if b == b'"' {
                f.in_string = false;
            }
        } else {
            match b {
                b'"' => f.in_string = true,
                b'[' if f.depth == 0 && f.open.is_none() => {
                    f.array = true;
                    f.depth = 1;
                }
                b'{' | b'[' => {
                    if f.depth == u32::from(f.array) && b == b'{' {
                        f.open = Some(pos);
                    }
                    f.depth += 1;
                }
                b'}' | b']' => {
                    f.depth = f.depth.saturating_sub(1);
                    if b == b'}'
                        && f.depth == u32::from(f.array)
                        && let Some(start) = f.open.take()
                    {
                        out.push((start, pos + 1));
                    }
                    if f.depth == 0 {
                        f.array = false;
                    }
                }
                _ => {}
            }
        }
        pos += 1;
    }
    f.scan = pos;
    if eof && let Some(start) = f.open.take() {
        out.push((start, text.len()));
    }
    f.open.unwrap_or(f.scan)
}

/// Event Viewer text: a block starts at `Log Name:`, or at a key the open block already has
/// (pastes often leave `Log Name:` out); `Event Xml:` runs to its `</Event>`.
fn frame_event_text(
    text: &[u8],
    f: &mut Framer,
    eof: bool,
    out: &mut Vec<(usize, usize)>,
) -> usize {
    const KEYS: [&str; 4] = ["Log Name", "Source", "Event ID", "Date"];
    let mut next = f.scan;
    for (start, end, after) in lines(text, f.scan) {
        next = after;
        let line = String::from_utf8_lossy(&text[start..end]);
        if f.in_xml {
            if line.contains("</Event>") {
                f.in_xml = false;
            }
            continue;
        }
        if line.trim_start().starts_with("Event Xml:") {
            f.in_xml = !line.contains("</Event>");
            continue;
        }
        let Some((key, _)) = events::header_line(&line) else {
            continue;
        };
        let bit = KEYS.iter().position(|k| *k == key).map(|i| 1u8 << i);
        let starts = match bit {
            Some(1) => f.keys != 0,
            Some(b) => f.keys & b != 0,
            None => false,
        };
        if starts && let Some(open) = f.open {
            out.push((open, start));
            f.open = None;
            f.keys = 0;
        }
        if f.open.is_none() {
            f.open = Some(start);
        }
        f.keys |= bit.unwrap_or(0);
    }
    f.scan = next;
    if eof {
        if let Some(open) = f.open.take() {
            out.push((open, text.len()));
        }
        f.keys = 0;
        f.in_xml = false;
        f.scan = text.len();
    }
    f.open.unwrap_or(f.scan)
}

/// `Format-List`: blocks of lines separated by blank lines.
fn frame_blocks(text: &[u8], f: &mut Framer, eof: bool, out: &mut Vec<(usize, usize)>) -> usize {
    let mut next = f.scan;
    for (start, end, after) in lines(text, f.scan) {
        next = after;
        if is_blank(&text[start..end]) {
            if let Some(open) = f.open.take() {
                out.push((open, start));
            }
        } else if f.open.is_none() {
            f.open = Some(start);
        }
    }
    f.scan = next;
    if eof {
        close_at_eof(text, f, out, true);
    }
    f.open.unwrap_or(f.scan)
}

/// At the end of input: the open record, unless blank or `keep` says no, is whole.
fn close_at_eof(text: &[u8], f: &mut Framer, out: &mut Vec<(usize, usize)>, keep: bool) {
    if let Some(open) = f.open.take()
        && keep
        && !is_blank(&text[open..])
    {
        out.push((open, text.len()));
    }
    f.scan = text.len();
}

/// `Export-Csv`: `#TYPE`, the header, then records (a quoted field may hold line ends).
fn frame_csv(text: &[u8], f: &mut Framer, eof: bool, out: &mut Vec<(usize, usize)>) -> usize {
    let mut next = f.scan;
    for (_, _, after) in lines(text, f.scan) {
        next = after;
        let start = *f.open.get_or_insert(f.scan);
        let record = &text[start..after];
        if bytecount_quotes(record) % 2 == 1 {
            // Inside a quoted field: the record goes on.
            f.scan = after;
            continue;
        }
        f.open = None;
        f.scan = after;
        let line = String::from_utf8_lossy(record);
        let line = line.trim_matches(['\u{feff}', '\r', '\n', ' ']);
        if line.is_empty() || line.starts_with("#TYPE") {
            continue;
        }
        if f.header.is_none() {
            f.header = csv_fields(&mut Tokenizer::default(), line).ok();
            continue;
        }
        out.push((start, after));
    }
    f.scan = next;
    if eof {
        let header = f.header.is_some();
        close_at_eof(text, f, out, header);
    }
    f.open.unwrap_or(f.scan)
}

fn bytecount_quotes(s: &[u8]) -> usize {
    memchr::memchr_iter(b'"', s).count()
}

#[cfg(test)]
mod tests;
