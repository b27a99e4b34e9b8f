//! Message correlation: `message_tracking` events grouped per message (its `message-id`, which
//! every server keeps; the per-server `internal-message-id` when a message has none) into the
//! `messages` table: first and last seen, the event chain, the servers crossed, the final status
//! of each recipient, end-to-end latency, and the diagnosis of a failed or deferred recipient.
//!
//! Events of one message come from several servers' logs, read in parallel, so a message stays
//! open until every server's log has moved the timeout (two hours in `ingest`) past its last
//! event (or the input ends), and an event later than that after the last starts another.
//! Memory is bounded: past a cap, the message idle longest is written early.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use arrow_array::cast::AsArray;
use arrow_array::types::Int64Type;
use arrow_array::{Array, ListArray, MapArray, RecordBatch, StringArray};
use arrow_schema::{ArrowError, SchemaRef};

use crate::catalog::Severity;
use crate::correlate::{Clock, Item, Lines, Names, Window};
use crate::derived::{Column, Value, col};
use crate::records::{Interned, Text};

/// The table's name.
pub const TABLE: &str = "messages";

/// The `message_tracking` columns correlation reads.
pub const INPUT_COLUMNS: &[&str] = &[
    "timestamp",
    "server",
    "source_file",
    "source_offset",
    "event_id",
    "internal_message_id",
    "message_id",
    "recipient_address",
    "recipient_status",
    "total_bytes",
    "message_subject",
    "sender_address",
    "custom_data",
    "diagnosis_code",
    "diagnosis_category",
    "diagnosis_severity",
];

/// Messages open at once before the idle-longest are written early. An open message with its
/// key, strings and map slot cost about 1.8 KB of RSS on fleet-shaped logs (ingest at a cap of
/// 100,000 against 20,000: 455 against 309 MB, before the items were boxed), so this bounds the window near 150 MiB.
const MAX_OPEN: usize = 100_000;

/// Events kept per message (a mail storm to one message id must not grow without end).
const MAX_EVENTS: usize = 256;

/// The `messages` schema.
pub fn schema() -> SchemaRef {
    static SCHEMA: OnceLock<SchemaRef> = OnceLock::new();
    Arc::clone(SCHEMA.get_or_init(|| crate::derived::schema(TABLE, columns())))
}

/// A closed message with its window key.
type M = (Vec<u8>, Box<Message>);

/// The table, column by column: what each holds and where it comes from.
fn columns() -> &'static [Column<M, Names>] {
    static COLUMNS: OnceLock<Vec<Column<M, Names>>> = OnceLock::new();
    COLUMNS.get_or_init(|| {
        vec![
            col("timestamp", false, Value::Time(|m: &M, _| Some(m.1.first))).distinct(),
            col(
                "server",
                false,
                Value::Dict(|m: &M, n| Some(n.name(m.1.server))),
            ),
            col(
                "source_file",
                false,
                Value::Dict(|m: &M, n| Some(n.name(m.1.source_file))),
            ),
            col(
                "source_offset",
                false,
                Value::Int64(|m: &M, _| Some(m.1.first_offset)),
            )
            .distinct(),
            // The key is `m` and the id for a message that has one, `i` and the server's internal id
            // otherwise.
            col("message_id", true, Value::Text(|m: &M, _| message_id(&m.0))).distinct(),
            col(
                "internal_message_id",
                true,
                Value::Int64(|m: &M, _| m.1.internal_id),
            )
            .distinct(),
            col(
                "sender_address",
                true,
                Value::Text(|m: &M, _| m.1.sender.as_deref()),
            ),
            col(
                "message_subject",
                true,
                Value::Text(|m: &M, _| m.1.subject.as_deref()),
            ),
            col(
                "total_bytes",
                true,
                Value::Int64(|m: &M, _| m.1.total_bytes),
            ),
            col("last_seen", false, Value::Time(|m: &M, _| Some(m.1.last))).distinct(),
            col(
                "latency_ms",
                false,
                Value::Int64(|m: &M, _| Some(m.1.last - m.1.first)),
            ),
            col("e2e_latency_ms", true, Value::Int64(|m: &M, _| m.1.e2e_ms)),
            col(
                "event_count",
                false,
                Value::Int32(|m: &M, _| Some(i32::try_from(m.1.events.len()).unwrap_or(i32::MAX))),
            ),
            col(
                "events",
                false,
                Value::List(|m: &M, n, f| {
                    m.1.events.iter().for_each(|e| f(n.name(e.event)));
                    true
                }),
            ),
            col(
                "servers",
                false,
                Value::List(|m: &M, n, f| {
                    // In the order the message reached them (events are sorted by then).
                    let mut seen: Vec<u32> = Vec::with_capacity(4);
                    for e in &m.1.events {
                        if !seen.contains(&e.server) {
                            seen.push(e.server);
                            f(n.name(e.server));
                        }
                    }
                    true
                }),
            ),
            col(
                "recipients",
                false,
                Value::List(|m: &M, _, f| {
                    m.1.recipients.iter().for_each(|r| f(&r.address));
                    true
                }),
            ),
            col(
                "recipient_status",
                false,
                Value::List(|m: &M, _, f| {
                    m.1.recipients.iter().for_each(|r| f(r.fate.name()));
                    true
                }),
            ),
            col("status", false, Value::Dict(|m: &M, _| Some(m.1.status()))),
            col(
                "diagnosis_code",
                true,
                Value::Dict(|m: &M, _| m.1.diagnosis.as_deref().map(|d| &*d.code)),
            ),
            col(
                "diagnosis_category",
                true,
                Value::Dict(|m: &M, _| m.1.diagnosis.as_deref().map(|d| &*d.category)),
            ),
            col(
                "diagnosis_severity",
                true,
                Value::Dict(|m: &M, _| m.1.diagnosis.as_deref().map(|d| d.severity.name())),
            ),
            col(
                "diagnosis_evidence",
                true,
                Value::Text(|m: &M, _| m.1.diagnosis.as_deref().map(|d| &*d.evidence)),
            ),
        ]
    })
}

/// The message id a key holds, if the message had one.
fn message_id(key: &[u8]) -> Option<&str> {
    match key.split_first() {
        Some((b'm', id)) => std::str::from_utf8(id).ok(),
        _ => None,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Fate {
    Deferred,
    Sent,
    Delivered,
    Failed,
}

impl Fate {
    fn name(self) -> &'static str {
        match self {
            Fate::Deferred => "deferred",
            Fate::Sent => "sent",
            Fate::Delivered => "delivered",
            Fate::Failed => "failed",
        }
    }

    fn of(event: &str) -> Option<Fate> {
        Some(match event {
            "DELIVER" => Fate::Delivered,
            "SEND" | "SENDEXTERNAL" => Fate::Sent,
            "FAIL" => Fate::Failed,
            "DEFER" => Fate::Deferred,
            _ => return None,
        })
    }
}

/// Kept per message while it is open: names repeated across messages (servers, files, event
/// ids) are numbers into the correlator's name table, and the message id is the window's key,
/// so an open message costs a few hundred bytes.
#[derive(Debug, Clone, Default)]
struct Message {
    stream: u32,
    server: u32,
    source_file: u32,
    first_offset: i64,
    /// Every file with events of the message (a checkpoint must not pass them).
    lines: Lines,
    internal_id: Option<i64>,
    sender: Option<Box<str>>,
    subject: Option<Box<str>>,
    total_bytes: Option<i64>,
    first: i64,
    last: i64,
    e2e_ms: Option<i64>,
    /// In the order they arrived; sorted by time when the message is written.
    events: Vec<Ev>,
    recipients: Vec<Recipient>,
    /// The worst diagnosis among the message's events (boxed: most messages have none).
    diagnosis: Option<Box<Diagnosed>>,
}

/// Where an event is in log time: its time, then its server and offset for ties. Everything a
/// message shows is decided by these positions, never by the order events arrive in, which
/// with several servers' logs read side by side depends on timing.
type At = (i64, u32, i64);

/// Whether `a` comes before `b` (ties in time broken by server name, then offset).
fn before(a: At, b: At, names: &Names) -> bool {
    a.0 < b.0 || (a.0 == b.0 && a != b && (names.name(a.1), a.2) < (names.name(b.1), b.2))
}

/// An event of a message: its position and its name.
#[derive(Debug, Clone, Copy)]
struct Ev {
    t: i64,
    offset: i64,
    server: u32,
    event: u32,
}

/// A recipient with the fate the events gave it so far.
#[derive(Debug, Clone)]
struct Recipient {
    address: Box<str>,
    fate: Fate,
    /// The event that decided the fate, and the first that named the recipient.
    decided: At,
    first: At,
}

impl Item for Message {
    fn stream(&self) -> u32 {
        self.stream
    }
    fn last(&self) -> i64 {
        self.last
    }
    fn lines(&self) -> &Lines {
        &self.lines
    }
}

/// A diagnosis as the enriched rows carry it.
#[derive(Debug, Clone)]
struct Diagnosed {
    /// The event it came from (the earliest, among equally severe ones).
    at: At,
    severity: Severity,
    code: Box<str>,
    category: Box<str>,
    evidence: Box<str>,
}

impl Message {
    fn status(&self) -> &'static str {
        let fates = || self.recipients.iter().map(|r| r.fate);
        let any = |f: Fate| fates().any(|x| x == f);
        let done = |f: Fate| matches!(f, Fate::Delivered | Fate::Sent);
        if self.recipients.is_empty() {
            "pending"
        } else if any(Fate::Failed) && fates().any(done) {
            "partially_failed"
        } else if any(Fate::Failed) {
            "failed"
        } else if fates().all(done) {
            "delivered"
        } else if any(Fate::Deferred) {
            "deferred"
        } else {
            "pending"
        }
    }
}

/// Groups tracking events into messages; see the module docs.
#[derive(Debug)]
pub struct MessageCorrelator {
    window: Window<Vec<u8>, Message>,
    names: Names,
    streams: Names,
}

impl MessageCorrelator {
    /// Messages are written once every server's log is `idle` past their last event.
    pub fn new(idle: Duration) -> Self {
        let idle_ms = i64::try_from(idle.as_millis()).unwrap_or(i64::MAX);
        MessageCorrelator {
            window: Window::new(Clock::Slowest, idle_ms, MAX_OPEN),
            names: Names::default(),
            streams: Names::default(),
        }
    }

    /// Caps the messages open at once (default 100,000); past it the idle-longest tenth is
    /// written early.
    pub fn with_max_open(mut self, max: usize) -> Self {
        self.window.set_cap(max);
        self
    }

    /// Messages still open.
    pub fn open_messages(&self) -> usize {
        self.window.open_len()
    }

    /// Adds a batch of enriched `message_tracking` rows; each row's server is its stream.
    pub fn add(&mut self, batch: &RecordBatch) {
        self.add_rows(None, batch);
    }

    /// Adds a batch read from `stream`: a sequence of batches in log-time order (e.g. one
    /// reader's run of a server's files), whose progress times messages out.
    pub fn add_from(&mut self, stream: &str, batch: &RecordBatch) {
        let id = self.streams.id(stream);
        self.add_rows(Some(id), batch);
    }

    /// `stream` will add events from log time `start` on: messages wait for it from now, not
    /// only once its first batch arrives.
    pub fn expect_stream(&mut self, stream: &str, start: i64) {
        let id = self.streams.id(stream);
        self.window.advance(id, start);
    }

    /// `stream` has no events after `until` (it is a run of files another stream continues):
    /// messages after that do not wait for it.
    pub fn stream_until(&mut self, stream: &str, until: i64) {
        let id = self.streams.id(stream);
        self.window.set_until(id, until);
    }

    /// `stream` will add nothing more: messages no longer wait for it.
    pub fn end_stream(&mut self, stream: &str) {
        if let Some(id) = self.streams.get(stream) {
            self.window.end_stream(id);
        }
    }

    /// Per source file, the offset of the first line an open message still needs (what a
    /// checkpoint must not pass).
    pub fn oldest_needed(&self) -> std::collections::BTreeMap<String, i64> {
        self.window
            .oldest_needed()
            .into_iter()
            .map(|(f, o)| (self.names.name(f).to_string(), o))
            .collect()
    }

    fn add_rows(&mut self, stream: Option<u32>, batch: &RecordBatch) {
        let Some((time, offsets)) = crate::records::lineage(batch) else {
            return;
        };
        let int = |name| {
            batch
                .column_by_name(name)
                .and_then(|c| c.as_primitive_opt::<Int64Type>())
        };
        let (internal, bytes) = (int("internal_message_id"), int("total_bytes"));
        // Lists and maps are read through their offsets: `value(row)` would build a sliced
        // array (several allocations) per row.
        let recipients = batch
            .column_by_name("recipient_address")
            .and_then(|c| c.as_list_opt::<i32>())
            .and_then(|l| Some((l, l.values().as_string_opt::<i32>()?)));
        let custom = batch
            .column_by_name("custom_data")
            .and_then(|c| c.as_any().downcast_ref::<MapArray>())
            .and_then(CustomData::of);
        let names = &mut self.names;
        // Repeated names (servers, files, events) are numbered once per batch, not per row.
        let server_col = Interned::of(batch, "server", names);
        let file_col = Interned::of(batch, "source_file", names);
        let event_col = Interned::of(batch, "event_id", names);
        let column = |name| Text::of(batch, name);
        let (message_col, sender_col, subject_col) = (
            column("message_id"),
            column("sender_address"),
            column("message_subject"),
        );
        let (code_col, severity_col, category_col, status_col) = (
            column("diagnosis_code"),
            column("diagnosis_severity"),
            column("diagnosis_category"),
            column("recipient_status"),
        );
        fn text<'a>(c: &Text<'a>, row: usize) -> Option<&'a str> {
            c.first(row).filter(|s| !s.is_empty())
        }
        let mut key: Vec<u8> = Vec::with_capacity(64);
        let empty = names.id("");
        for row in 0..batch.num_rows() {
            let t = if time.is_valid(row) {
                time.value(row)
            } else {
                0
            };
            let server = server_col.id(row, names).unwrap_or(empty);
            let internal_id = internal.filter(|a| a.is_valid(row)).map(|a| a.value(row));
            let message_id = text(&message_col, row);
            key.clear();
            match (message_id, internal_id) {
                (Some(m), _) => {
                    key.push(b'm');
                    key.extend_from_slice(m.as_bytes());
                }
                (None, Some(i)) => {
                    key.push(b'i');
                    key.extend_from_slice(&server.to_le_bytes());
                    key.extend_from_slice(&i.to_le_bytes());
                }
                (None, None) => continue,
            }
            let event_id = event_col.id(row, names).unwrap_or(empty);
            let source_file = file_col.id(row, names).unwrap_or(empty);
            let event = names.name(event_id);
            let fate = Fate::of(event);
            let stream = stream.unwrap_or(server);
            let offset = offsets.value(row);
            let m = self.window.entry_at(key.as_slice(), t, || Message {
                stream,
                server,
                source_file,
                first_offset: offset,
                lines: Lines::new(source_file, offset),
                internal_id,
                first: t,
                last: t,
                ..Message::default()
            });
            m.lines.note(source_file, offset);
            // The message's origin is its earliest event, ties broken by server, file and
            // offset: not the first to arrive, which with servers read side by side depends on
            // timing.
            let earlier = t < m.first
                || (t == m.first
                    && (server, source_file, offset) != (m.server, m.source_file, m.first_offset)
                    && (names.name(server), names.name(source_file), offset)
                        < (
                            names.name(m.server),
                            names.name(m.source_file),
                            m.first_offset,
                        ));
            if earlier {
                m.server = server;
                m.source_file = source_file;
                m.first_offset = offset;
                m.internal_id = internal_id;
            }
            let at: At = (t, server, offset);
            m.first = m.first.min(t);
            m.last = m.last.max(t);
            if m.sender.is_none() {
                m.sender = text(&sender_col, row).map(Into::into);
            }
            if m.subject.is_none() {
                m.subject = text(&subject_col, row).map(Into::into);
            }
            if let Some(b) = bytes.filter(|a| a.is_valid(row)) {
                m.total_bytes = Some(m.total_bytes.unwrap_or(0).max(b.value(row)));
            }
            if m.events.len() < MAX_EVENTS {
                m.events.push(Ev {
                    t,
                    offset,
                    server,
                    event: event_id,
                });
            }
            if let Some(e2e) = custom.as_ref().and_then(|c| c.e2e_latency_ms(row)) {
                m.e2e_ms = Some(m.e2e_ms.map_or(e2e, |x| x.max(e2e)));
            }
            if let (Some(fate), Some((list, items))) = (fate, recipients)
                && list.is_valid(row)
            {
                let offsets = list.value_offsets();
                for i in offsets[row] as usize..offsets[row + 1] as usize {
                    if !items.is_valid(i) {
                        continue;
                    }
                    let r = items.value(i);
                    let room = m.recipients.len() < MAX_EVENTS;
                    match m
                        .recipients
                        .iter_mut()
                        .find(|x| x.address.eq_ignore_ascii_case(r))
                    {
                        // The latest event decides, except that a failure stays a failure: a
                        // rule that gives the same answer in whatever order events arrive.
                        Some(x) => {
                            if x.fate != Fate::Failed
                                && (fate == Fate::Failed || before(x.decided, at, names))
                            {
                                x.fate = fate;
                                x.decided = at;
                            }
                            if before(at, x.first, names) {
                                x.first = at;
                            }
                        }
                        None if room => m.recipients.push(Recipient {
                            address: r.into(),
                            fate,
                            decided: at,
                            first: at,
                        }),
                        None => {}
                    }
                }
            }
            if let Some(code) = text(&code_col, row) {
                let severity = text(&severity_col, row)
                    .and_then(Severity::from_name)
                    .unwrap_or(Severity::Info);
                let worse = |d: &Diagnosed| {
                    severity > d.severity || (severity == d.severity && before(at, d.at, names))
                };
                if m.diagnosis.as_deref().is_none_or(worse) {
                    m.diagnosis = Some(Box::new(Diagnosed {
                        at,
                        severity,
                        code: code.into(),
                        category: text(&category_col, row).unwrap_or_default().into(),
                        evidence: status_col.first(row).unwrap_or(event).into(),
                    }));
                }
            }
            self.window.advance(stream, t);
        }
        self.window.sweep();
    }

    /// Messages written so far, as a batch, once there are at least `min` of them.
    pub fn take(&mut self, min: usize) -> Result<Option<RecordBatch>, ArrowError> {
        let Some(mut done) = self.window.take(min) else {
            return Ok(None);
        };
        let names = &self.names;
        for (_, m) in &mut done {
            let key = |e: &Ev| (e.t, names.name(e.server), e.offset);
            m.events.sort_by(|a, b| key(a).cmp(&key(b)));
            let at = |a: At| (a.0, names.name(a.1), a.2);
            m.recipients.sort_by(|a, b| at(a.first).cmp(&at(b.first)));
        }
        // In order of first event (ties by key, so the order does not depend on the hash map),
        // sorted as small (time, key, index) triples: moving the messages themselves was most
        // of the sort's cost.
        let mut order: Vec<(i64, &[u8], u32)> = done
            .iter()
            .enumerate()
            .map(|(i, (k, m))| (m.first, k.as_slice(), i as u32))
            .collect();
        order.sort_unstable();
        crate::derived::build(
            schema(),
            columns(),
            order.iter().map(|&(_, _, i)| &done[i as usize]),
            done.len(),
            &self.names,
        )
        .map(Some)
    }

    /// Writes every open message (end of input).
    pub fn finish(&mut self) -> Result<Option<RecordBatch>, ArrowError> {
        self.window.close_all();
        self.take(1)
    }
}
/// The `custom_data` map's parts, taken once per batch.
struct CustomData<'a> {
    map: &'a MapArray,
    keys: &'a StringArray,
    /// Each key's list of values, and the items of all those lists.
    values: &'a ListArray,
    items: &'a StringArray,
}

impl<'a> CustomData<'a> {
    fn of(map: &'a MapArray) -> Option<Self> {
        let values = map.values().as_list_opt::<i32>()?;
        Some(CustomData {
            map,
            keys: map.keys().as_string_opt::<i32>()?,
            values,
            items: values.values().as_string_opt::<i32>()?,
        })
    }

    /// `S:E2ELatency=1.928` in custom-data: seconds from submission to this event (the first
    /// value, should the key repeat).
    fn e2e_latency_ms(&self, row: usize) -> Option<i64> {
        if !self.map.is_valid(row) {
            return None;
        }
        let offsets = self.map.value_offsets();
        let entry = (offsets[row] as usize..offsets[row + 1] as usize)
            .find(|&i| is_e2e_latency(self.keys.value(i)))?;
        let item = self.values.value_offsets()[entry] as usize;
        let end = self.values.value_offsets()[entry + 1] as usize;
        (item < end && self.items.is_valid(item))
            .then(|| self.items.value(item).parse::<f64>().ok())
            .flatten()
            .map(|s| (s * 1000.0).round() as i64)
    }
}

/// `E2ELatency` under any type tag (Exchange writes `S:`), or none.
fn is_e2e_latency(key: &str) -> bool {
    key.strip_suffix("E2ELatency")
        .is_some_and(|tag| tag.is_empty() || tag.ends_with(':'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::types::Int32Type;
    use arrow_array::{ArrayRef, Int64Array, StringArray, TimestampMillisecondArray};

    /// Tracking rows: (time ms, message id, event).
    fn batch(rows: &[(i64, &'static str, &'static str)]) -> RecordBatch {
        batch_on("EX01", "MSGTRK1.LOG", 0, rows)
    }

    /// Tracking rows of `server`'s `file`, the first at byte `at`, with recipients and status.
    fn batch_on(
        server: &'static str,
        file: &'static str,
        at: i64,
        rows: &[(i64, &'static str, &'static str)],
    ) -> RecordBatch {
        let text = |f: fn(&(i64, &'static str, &'static str)) -> &'static str| -> ArrayRef {
            Arc::new(rows.iter().map(|r| Some(f(r))).collect::<StringArray>())
        };
        RecordBatch::try_from_iter([
            (
                "timestamp",
                Arc::new(TimestampMillisecondArray::from_iter_values(
                    rows.iter().map(|r| r.0),
                )) as ArrayRef,
            ),
            (
                "server",
                Arc::new(StringArray::from(vec![server; rows.len()])),
            ),
            (
                "source_file",
                Arc::new(StringArray::from(vec![file; rows.len()])),
            ),
            (
                "source_offset",
                Arc::new(Int64Array::from_iter_values(at..at + rows.len() as i64)),
            ),
            ("message_id", text(|r| r.1)),
            ("event_id", text(|r| r.2)),
        ])
        .unwrap()
    }

    fn ids(batch: &RecordBatch) -> Vec<String> {
        let ids = batch
            .column_by_name("message_id")
            .unwrap()
            .as_string::<i32>();
        ids.iter().map(|v| v.unwrap().to_string()).collect()
    }

    #[test]
    fn idle_messages_close_and_come_out_in_time_order() {
        let mut c = MessageCorrelator::new(Duration::from_secs(60));
        c.add(&batch(&[
            (0, "<b@x>", "RECEIVE"),
            (1_000, "<a@x>", "RECEIVE"),
        ]));
        assert_eq!(c.open_messages(), 2);
        // The log moves 70 s on: <a@x> is idle past a minute.
        c.add(&batch(&[
            (50_000, "<b@x>", "X"),
            (70_000, "<c@x>", "RECEIVE"),
        ]));
        let closed = c.take(1).unwrap().unwrap();
        // <b@x> saw an event at 50 s, so only <a@x> is idle.
        assert_eq!(ids(&closed), ["<a@x>"]);
        let rest = c.finish().unwrap().unwrap();
        assert_eq!(ids(&rest), ["<b@x>", "<c@x>"]);
        let events = rest.column_by_name("event_count").unwrap();
        assert_eq!(events.as_primitive::<Int32Type>().value(0), 2);
    }

    #[test]
    fn a_late_event_starts_another_message_whether_or_not_a_sweep_ran_between() {
        // A message deferred, and sent more than the timeout later (a retry after an outage).
        let rows = [(0, "<a@x>", "DEFER"), (200_000, "<a@x>", "SEND")];
        let mut whole = MessageCorrelator::new(Duration::from_secs(60));
        whole.add(&batch(&rows));
        let mut apart = MessageCorrelator::new(Duration::from_secs(60));
        apart.add(&batch(&rows[..1]));
        // Here the log moved on (a sweep could close the first event's message) before the
        // retry came; above it did not: both give the same two messages.
        apart.add(&batch(&[(130_000, "<z@x>", "RECEIVE")]));
        apart.add(&batch(&rows[1..]));
        let all = |c: &mut MessageCorrelator| {
            let mut out = Vec::new();
            while let Some(b) = c.take(1).unwrap() {
                out.extend(ids(&b));
            }
            out.extend(ids(&c.finish().unwrap().unwrap()));
            out.retain(|id| id == "<a@x>");
            out
        };
        assert_eq!(all(&mut whole), ["<a@x>", "<a@x>"]);
        assert_eq!(all(&mut apart), ["<a@x>", "<a@x>"]);
    }

    #[test]
    fn a_stream_expected_but_not_begun_holds_messages_open() {
        let mut c = MessageCorrelator::new(Duration::from_secs(60));
        c.expect_stream("EX02", 0);
        // EX01's log runs two minutes on while EX02's reader has not begun.
        c.add_from("EX01", &batch(&[(0, "<a@x>", "SEND")]));
        c.add_from("EX01", &batch(&[(130_000, "<z@x>", "RECEIVE")]));
        assert!(
            c.take(1).unwrap().is_none(),
            "closed before EX02 could add to it"
        );
        // EX02's events of it arrive: one message, both servers' events.
        c.add_from("EX02", &batch(&[(500, "<a@x>", "RECEIVE")]));
        let out = c.finish().unwrap().unwrap();
        let a: Vec<_> = ids(&out).into_iter().filter(|id| id == "<a@x>").collect();
        assert_eq!(a.len(), 1);
    }

    #[test]
    fn a_message_is_the_same_whatever_order_its_servers_logs_arrive_in() {
        // EX01 receives and sends at the same millisecond EX02 receives; EX02 delivers.
        let ex01 = batch_on(
            "EX01",
            "a/MSGTRK1.LOG",
            100,
            &[(5, "<m@x>", "RECEIVE"), (9, "<m@x>", "SEND")],
        );
        let ex02 = batch_on(
            "EX02",
            "b/MSGTRK1.LOG",
            7,
            &[(5, "<m@x>", "RECEIVE"), (12, "<m@x>", "DELIVER")],
        );
        let row = |first: &RecordBatch, second: &RecordBatch| {
            let mut c = MessageCorrelator::new(Duration::from_secs(60));
            c.add_from("EX01", first);
            c.add_from("EX02", second);
            let out = c.finish().unwrap().unwrap();
            arrow_cast::pretty::pretty_format_batches(&[out])
                .unwrap()
                .to_string()
        };
        let one = row(&ex01, &ex02);
        assert_eq!(one, row(&ex02, &ex01));
        // The origin is the earliest event, a tie going to the server named first.
        assert!(one.contains("| EX01   | a/MSGTRK1.LOG | 100"), "{one}");
        assert!(one.contains("[RECEIVE, RECEIVE, SEND, DELIVER]"), "{one}");
    }

    #[test]
    fn an_open_message_holds_every_file_it_has_events_in() {
        let mut c = MessageCorrelator::new(Duration::from_secs(3600));
        c.add_from(
            "EX01",
            &batch_on("EX01", "a.LOG", 40, &[(0, "<a@x>", "SEND")]),
        );
        c.add_from(
            "EX02",
            &batch_on(
                "EX02",
                "b.LOG",
                70,
                &[(9, "<z@x>", "X"), (10, "<a@x>", "RECEIVE")],
            ),
        );
        let needed: Vec<_> = c.oldest_needed().into_iter().collect();
        assert_eq!(
            needed,
            [("a.LOG".to_string(), 40), ("b.LOG".to_string(), 70)]
        );
    }

    #[test]
    fn open_messages_name_the_first_line_they_still_need() {
        let mut c = MessageCorrelator::new(Duration::from_secs(3600));
        c.add(&batch(&[
            (0, "<a@x>", "RECEIVE"),
            (1_000, "<b@x>", "RECEIVE"),
        ]));
        let needed: Vec<_> = c.oldest_needed().into_iter().collect();
        // Offsets are row numbers in `batch`; the first message began at 0.
        assert_eq!(needed, [("MSGTRK1.LOG".to_string(), 0)]);
        c.finish().unwrap();
        assert!(c.oldest_needed().is_empty());
    }

    #[test]
    fn past_the_cap_the_oldest_close_early_and_none_is_lost() {
        let mut c = MessageCorrelator::new(Duration::from_secs(3600)).with_max_open(10);
        let names: Vec<&'static str> = (0..25).map(|i| &*format!("<m{i:02}@x>").leak()).collect();
        let mut written = Vec::new();
        for (i, name) in names.iter().enumerate() {
            c.add(&batch(&[(i as i64 * 1_000, name, "RECEIVE")]));
            assert!(c.open_messages() <= 10, "{} open", c.open_messages());
            if let Some(b) = c.take(1).unwrap() {
                written.extend(ids(&b));
            }
        }
        // Evicted early means oldest first: what went out is a prefix of the arrival order.
        assert!(!written.is_empty());
        assert_eq!(written, names[..written.len()]);
        written.extend(ids(&c.finish().unwrap().unwrap()));
        assert_eq!(written, names);
    }
}
