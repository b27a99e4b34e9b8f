//! Message correlation: `message_tracking` events grouped per message (its `message-id`, which
//! every server keeps; the per-server `internal-message-id` when a message has none) into the
//! `messages` table: first and last seen, the event chain, the servers crossed, the final status
//! of each recipient, end-to-end latency, and the diagnosis of a failed or deferred recipient.
//!
//! Events of one message come from several servers' logs, read in parallel, so a message stays
//! open until every server's log has moved an hour past its last event (or the input ends).
//! Memory is bounded: past a cap, the message idle longest is written early.

use hashbrown::HashMap;
use std::sync::Arc;
use std::time::Duration;

use arrow_array::builder::{
    Int32Builder, Int64Builder, ListBuilder, StringBuilder, StringDictionaryBuilder,
    TimestampMillisecondBuilder,
};
use arrow_array::cast::AsArray;
use arrow_array::types::{Int32Type, Int64Type};
use arrow_array::{Array, ArrayRef, MapArray, RecordBatch, StringArray};
use arrow_schema::{ArrowError, DataType, Field, SchemaRef, TimeUnit};

use crate::catalog::Severity;
use crate::records::Text;

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

/// Messages open at once before the one idle longest is written early.
const MAX_OPEN: usize = 200_000;

/// Events kept per message (a mail storm to one message id must not grow without end).
const MAX_EVENTS: usize = 256;

fn dict() -> DataType {
    DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8))
}

fn list() -> DataType {
    DataType::List(Arc::new(Field::new("item", DataType::Utf8, true)))
}

/// The `messages` schema.
pub fn schema() -> SchemaRef {
    let ts = DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into()));
    let f = |name: &str, t: DataType, nullable: bool| Field::new(name, t, nullable);
    let fields = vec![
        f("timestamp", ts.clone(), false),
        f("server", dict(), false),
        f("source_file", dict(), false),
        f("source_offset", DataType::Int64, false),
        f("message_id", DataType::Utf8, true),
        f("internal_message_id", DataType::Int64, true),
        f("sender_address", DataType::Utf8, true),
        f("message_subject", DataType::Utf8, true),
        f("total_bytes", DataType::Int64, true),
        f("last_seen", ts, false),
        f("latency_ms", DataType::Int64, false),
        f("e2e_latency_ms", DataType::Int64, true),
        f("event_count", DataType::Int32, false),
        f("events", list(), false),
        f("servers", list(), false),
        f("recipients", list(), false),
        f("recipient_status", list(), false),
        f("status", dict(), false),
    ];
    crate::records::derived_schema(TABLE, fields)
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
/// ids) are numbers into the correlator's tables, so an open message costs a few hundred bytes.
#[derive(Debug, Clone, Default)]
struct Message {
    server: u32,
    source_file: u32,
    first_offset: i64,
    message_id: Option<Box<str>>,
    internal_id: Option<i64>,
    sender: Option<Box<str>>,
    subject: Option<Box<str>>,
    total_bytes: Option<i64>,
    first: i64,
    last: i64,
    e2e_ms: Option<i64>,
    events: Vec<u32>,
    servers: Vec<u32>,
    recipients: Vec<(Box<str>, Fate)>,
    /// The worst diagnosis among the message's events (boxed: most messages have none, and a
    /// smaller `Message` is cheaper to move when the map grows).
    diagnosis: Option<Box<Diagnosed>>,
}

/// A diagnosis as the enriched rows carry it.
#[derive(Debug, Clone)]
struct Diagnosed {
    severity: Severity,
    code: String,
    category: String,
    evidence: String,
}

/// Strings seen often, numbered.
#[derive(Debug, Default)]
struct Names {
    ids: HashMap<String, u32>,
    names: Vec<Box<str>>,
}

impl Names {
    fn id(&mut self, name: &str) -> u32 {
        let next = u32::try_from(self.names.len()).unwrap_or(u32::MAX);
        let names = &mut self.names;
        *self.ids.entry_ref(name).or_insert_with(|| {
            names.push(name.into());
            next
        })
    }

    fn name(&self, id: u32) -> &str {
        self.names.get(id as usize).map_or("", |n| n)
    }
}

impl Message {
    fn status(&self) -> &'static str {
        let fates: Vec<Fate> = self.recipients.iter().map(|r| r.1).collect();
        let any = |f: Fate| fates.contains(&f);
        let done = |f: Fate| matches!(f, Fate::Delivered | Fate::Sent);
        if fates.is_empty() {
            "pending"
        } else if any(Fate::Failed) && fates.iter().any(|f| done(*f)) {
            "partially_failed"
        } else if any(Fate::Failed) {
            "failed"
        } else if fates.iter().all(|f| done(*f)) {
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
    open: HashMap<String, Message>,
    names: Names,
    watermarks: HashMap<u32, i64>,
    /// The slowest server's time at the last sweep.
    swept: i64,
    idle_ms: i64,
    max_open: usize,
    done: Vec<Message>,
}

impl MessageCorrelator {
    /// Messages are written once every server's log is `idle` past their last event.
    pub fn new(idle: Duration) -> Self {
        MessageCorrelator {
            open: HashMap::new(),
            names: Names::default(),
            watermarks: HashMap::new(),
            swept: i64::MIN,
            idle_ms: i64::try_from(idle.as_millis()).unwrap_or(i64::MAX),
            max_open: MAX_OPEN,
            done: Vec::new(),
        }
    }

    /// Caps the messages open at once (default 200,000); past it the idle-longest tenth is
    /// written early.
    pub fn with_max_open(mut self, max: usize) -> Self {
        self.max_open = max.max(1);
        self
    }

    /// Messages still open.
    pub fn open_messages(&self) -> usize {
        self.open.len()
    }

    /// Adds a batch of enriched `message_tracking` rows.
    pub fn add(&mut self, batch: &RecordBatch) {
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
        let column = |name| Text::of(batch, name);
        let (server_col, file_col, message_col) = (
            column("server"),
            column("source_file"),
            column("message_id"),
        );
        let (sender_col, subject_col, event_col) = (
            column("sender_address"),
            column("message_subject"),
            column("event_id"),
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
        let mut key = String::new();
        for row in 0..batch.num_rows() {
            let t = if time.is_valid(row) {
                time.value(row)
            } else {
                0
            };
            let server_name = text(&server_col, row).unwrap_or_default();
            let server = self.names.id(server_name);
            let internal_id = internal.filter(|a| a.is_valid(row)).map(|a| a.value(row));
            let message_id = text(&message_col, row);
            key.clear();
            match (message_id, internal_id) {
                (Some(m), _) => key.push_str(m),
                (None, Some(i)) => {
                    key.push_str(server_name);
                    key.push('\u{0}');
                    key.push_str(&i.to_string());
                }
                (None, None) => continue,
            }
            let event = text(&event_col, row).unwrap_or_default();
            let event_id = self.names.id(event);
            let names = &mut self.names;
            let m = self
                .open
                .entry_ref(key.as_str())
                .or_insert_with(|| Message {
                    server,
                    source_file: names.id(text(&file_col, row).unwrap_or_default()),
                    first_offset: offsets.value(row),
                    message_id: message_id.map(Into::into),
                    internal_id,
                    first: t,
                    last: t,
                    ..Message::default()
                });
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
            if !m.servers.contains(&server) && m.servers.len() < MAX_EVENTS {
                m.servers.push(server);
            }
            if m.events.len() < MAX_EVENTS {
                m.events.push(event_id);
            }
            if let Some(e2e) = custom.as_ref().and_then(|c| c.e2e_latency_ms(row)) {
                m.e2e_ms = Some(m.e2e_ms.map_or(e2e, |x| x.max(e2e)));
            }
            if let (Some(fate), Some((list, items))) = (Fate::of(event), recipients)
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
                        .find(|(a, _)| a.eq_ignore_ascii_case(r))
                    {
                        // A later event decides, except that a failure stays a failure.
                        Some((_, f)) if *f != Fate::Failed => *f = fate,
                        Some(_) => {}
                        None if room => m.recipients.push((r.into(), fate)),
                        None => {}
                    }
                }
            }
            if let Some(code) = text(&code_col, row) {
                let severity = text(&severity_col, row)
                    .and_then(Severity::from_name)
                    .unwrap_or(Severity::Info);
                if m.diagnosis.as_ref().is_none_or(|d| severity > d.severity) {
                    m.diagnosis = Some(Box::new(Diagnosed {
                        severity,
                        code: code.to_string(),
                        category: text(&category_col, row).unwrap_or_default().to_string(),
                        evidence: status_col.first(row).unwrap_or(event).to_string(),
                    }));
                }
            }
            let w = self.watermarks.entry(server).or_insert(t);
            *w = (*w).max(t);
        }
        self.close_idle();
    }

    fn close_idle(&mut self) {
        // Every server's log must have moved past the message: the slowest decides. A sweep
        // visits every open message, so it runs only when that time has moved a minute on, or
        // when the cap is reached (and then frees a tenth of it at once).
        let slowest = self.watermarks.values().copied().min().unwrap_or(i64::MIN);
        let cap = self.max_open;
        let over_cap = self.open.len() > cap;
        if !over_cap && slowest < self.swept.saturating_add(60_000) {
            return;
        }
        self.swept = slowest;
        let idle = self.idle_ms;
        self.done.extend(
            self.open
                .extract_if(|_, m| slowest.saturating_sub(m.last) > idle)
                .map(|(_, m)| m),
        );
        let left = self.open.len();
        if left > cap - cap / 10 {
            let mut by_age: Vec<i64> = self.open.values().map(|m| m.last).collect();
            let excess = left - (cap - cap / 10);
            // The excess-th oldest time: everything at or before it goes (ties may free a few
            // more than the excess, never fewer).
            let (_, &mut cut, _) = by_age.select_nth_unstable(excess - 1);
            self.done
                .extend(self.open.extract_if(|_, m| m.last <= cut).map(|(_, m)| m));
        }
    }

    /// Messages written so far, as a batch, once there are at least `min` of them.
    pub fn take(&mut self, min: usize) -> Result<Option<RecordBatch>, ArrowError> {
        if self.done.is_empty() || self.done.len() < min {
            return Ok(None);
        }
        let done = std::mem::take(&mut self.done);
        // Sorted by index: a `Message` is a few hundred bytes, and moving them was most of the
        // sort's cost.
        let mut order: Vec<u32> = (0..done.len() as u32).collect();
        let key = |i: &u32| {
            let m = &done[*i as usize];
            (m.first, m.message_id.as_deref())
        };
        order.sort_by(|a, b| key(a).cmp(&key(b)));
        build(
            order.iter().map(|&i| &done[i as usize]),
            done.len(),
            &self.names,
        )
        .map(Some)
    }

    /// Writes every open message (end of input).
    pub fn finish(&mut self) -> Result<Option<RecordBatch>, ArrowError> {
        let open: Vec<Message> = self.open.drain().map(|(_, m)| m).collect();
        self.done.extend(open);
        self.take(1)
    }
}

/// The `custom_data` map's parts, taken once per batch.
struct CustomData<'a> {
    map: &'a MapArray,
    keys: &'a StringArray,
    values: &'a StringArray,
}

impl<'a> CustomData<'a> {
    fn of(map: &'a MapArray) -> Option<Self> {
        Some(CustomData {
            map,
            keys: map.keys().as_string_opt::<i32>()?,
            values: map.values().as_string_opt::<i32>()?,
        })
    }

    /// `S:E2ELatency=1.928` in custom-data: seconds from submission to this event.
    fn e2e_latency_ms(&self, row: usize) -> Option<i64> {
        if !self.map.is_valid(row) {
            return None;
        }
        let offsets = self.map.value_offsets();
        (offsets[row] as usize..offsets[row + 1] as usize)
            .find(|&i| self.keys.value(i) == "E2ELatency" && self.values.is_valid(i))
            .and_then(|i| self.values.value(i).parse::<f64>().ok())
            .map(|s| (s * 1000.0).round() as i64)
    }
}

fn build<'a>(
    messages: impl Iterator<Item = &'a Message>,
    n: usize,
    names: &Names,
) -> Result<RecordBatch, ArrowError> {
    let dict = || StringDictionaryBuilder::<Int32Type>::new();
    let strings = || StringBuilder::with_capacity(n, n * 24);
    let lists = || ListBuilder::new(StringBuilder::new());
    let mut first = TimestampMillisecondBuilder::with_capacity(n).with_timezone("UTC");
    let mut last = TimestampMillisecondBuilder::with_capacity(n).with_timezone("UTC");
    let (mut server, mut file, mut status) = (dict(), dict(), dict());
    let (mut code, mut category, mut severity) = (dict(), dict(), dict());
    let mut offset = Int64Builder::with_capacity(n);
    let mut internal = Int64Builder::with_capacity(n);
    let mut bytes = Int64Builder::with_capacity(n);
    let mut latency = Int64Builder::with_capacity(n);
    let mut e2e = Int64Builder::with_capacity(n);
    let mut count = Int32Builder::with_capacity(n);
    let (mut id, mut sender, mut subject, mut evidence) =
        (strings(), strings(), strings(), strings());
    let (mut events, mut servers, mut rcpts, mut fates) = (lists(), lists(), lists(), lists());
    for m in messages {
        first.append_value(m.first);
        last.append_value(m.last);
        server.append_value(names.name(m.server));
        file.append_value(names.name(m.source_file));
        offset.append_value(m.first_offset);
        id.append_option(m.message_id.as_deref());
        internal.append_option(m.internal_id);
        sender.append_option(m.sender.as_deref());
        subject.append_option(m.subject.as_deref());
        bytes.append_option(m.total_bytes);
        latency.append_value(m.last - m.first);
        e2e.append_option(m.e2e_ms);
        count.append_value(i32::try_from(m.events.len()).unwrap_or(i32::MAX));
        for e in &m.events {
            events.values().append_value(names.name(*e));
        }
        events.append(true);
        for s in &m.servers {
            servers.values().append_value(names.name(*s));
        }
        servers.append(true);
        for (r, f) in &m.recipients {
            rcpts.values().append_value(&**r);
            fates.values().append_value(f.name());
        }
        rcpts.append(true);
        fates.append(true);
        status.append_value(m.status());
        match &m.diagnosis {
            Some(d) => {
                code.append_value(&d.code);
                category.append_value(&d.category);
                severity.append_value(d.severity.name());
                evidence.append_value(&d.evidence);
            }
            None => {
                code.append_null();
                category.append_null();
                severity.append_null();
                evidence.append_null();
            }
        }
    }
    let columns: Vec<ArrayRef> = vec![
        Arc::new(first.finish()),
        Arc::new(server.finish()),
        Arc::new(file.finish()),
        Arc::new(offset.finish()),
        Arc::new(id.finish()),
        Arc::new(internal.finish()),
        Arc::new(sender.finish()),
        Arc::new(subject.finish()),
        Arc::new(bytes.finish()),
        Arc::new(last.finish()),
        Arc::new(latency.finish()),
        Arc::new(e2e.finish()),
        Arc::new(count.finish()),
        Arc::new(events.finish()),
        Arc::new(servers.finish()),
        Arc::new(rcpts.finish()),
        Arc::new(fates.finish()),
        Arc::new(status.finish()),
        Arc::new(code.finish()),
        Arc::new(category.finish()),
        Arc::new(severity.finish()),
        Arc::new(evidence.finish()),
    ];
    RecordBatch::try_new(schema(), columns)
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::{Int64Array, StringArray, TimestampMillisecondArray};

    /// Tracking rows: (time ms, message id, event).
    fn batch(rows: &[(i64, &'static str, &'static str)]) -> RecordBatch {
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
            ("server", text(|_| "EX01")),
            ("source_file", text(|_| "MSGTRK1.LOG")),
            (
                "source_offset",
                Arc::new(Int64Array::from_iter_values(0..rows.len() as i64)),
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
        // The log moves two minutes on: both are idle past a minute.
        c.add(&batch(&[
            (121_000, "<c@x>", "RECEIVE"),
            (122_000, "<b@x>", "X"),
        ]));
        let closed = c.take(1).unwrap().unwrap();
        // <b@x> saw an event at 122 s, so only <a@x> is idle.
        assert_eq!(ids(&closed), ["<a@x>"]);
        let rest = c.finish().unwrap().unwrap();
        assert_eq!(ids(&rest), ["<b@x>", "<c@x>"]);
        let events = rest.column_by_name("event_count").unwrap();
        assert_eq!(events.as_primitive::<Int32Type>().value(0), 2);
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
