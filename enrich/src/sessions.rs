//! SMTP session correlation: `smtp_protocol` rows grouped by (server, direction, connector,
//! session id) into one `smtp_sessions` row per session.
//!
//! A session is written when its disconnect line arrives. One whose end is not written yet stays
//! open across batches and files; it is closed as incomplete when its server's log has moved on
//! by more than the timeout, or when the input ends. Memory is bounded by the sessions open at
//! once (capped: past the cap the oldest is closed early).

use std::sync::Arc;
use std::time::Duration;

use arrow_array::cast::AsArray;
use arrow_array::types::{Int16Type, Int32Type};
use arrow_array::{Array, RecordBatch};
use arrow_schema::{ArrowError, SchemaRef};
use hashbrown::HashMap;
use memchr::memmem;

use crate::catalog::Severity;
use crate::correlate::{Clock, Item, Lines, Names, Window};
use crate::derived::{Column, Value, col};
use crate::matcher::{Diagnosis, Hit, Matcher};
use crate::records::{Interned, Text};

/// The table's name.
pub const TABLE: &str = "smtp_sessions";

/// Sessions open at once before the idle-longest are closed early.
const MAX_OPEN: usize = 100_000;

/// The `smtp_sessions` schema.
pub fn schema() -> SchemaRef {
    static SCHEMA: std::sync::OnceLock<SchemaRef> = std::sync::OnceLock::new();
    Arc::clone(SCHEMA.get_or_init(|| crate::derived::schema(TABLE, &columns())))
}

/// What building a batch reads besides the sessions.
struct Ctx<'c> {
    names: &'c Names,
    matcher: &'c Matcher,
}

/// A closed session with its window key: stream, connector, then the session id's bytes.
type S = (Vec<u8>, Box<Session>);

fn session_id(key: &[u8]) -> Option<&str> {
    key.get(8..).and_then(|id| std::str::from_utf8(id).ok())
}

fn some(s: &str) -> Option<&str> {
    (!s.is_empty()).then_some(s)
}

/// The table, column by column: what each holds and where it comes from.
fn columns<'c>() -> Vec<Column<S, Ctx<'c>>> {
    vec![
        col("timestamp", false, Value::Time(|s: &S, _| Some(s.1.start))).distinct(),
        col(
            "server",
            false,
            Value::Dict(|s: &S, c: &Ctx<'c>| Some(c.names.name(s.1.server))),
        ),
        col(
            "source_file",
            false,
            Value::Dict(|s: &S, c: &Ctx<'c>| Some(c.names.name(s.1.source_file))),
        ),
        col(
            "source_offset",
            false,
            Value::Int64(|s: &S, _| Some(s.1.first_offset)),
        )
        .distinct(),
        col(
            "direction",
            true,
            Value::Dict(|s: &S, c: &Ctx<'c>| some(c.names.name(s.1.direction))),
        ),
        col(
            "connector_id",
            true,
            Value::Dict(|s: &S, c: &Ctx<'c>| some(c.names.name(s.1.connector))),
        ),
        col("session_id", true, Value::Text(|s: &S, _| session_id(&s.0))).distinct(),
        col("end_time", false, Value::Time(|s: &S, _| Some(s.1.end))).distinct(),
        col(
            "duration_ms",
            false,
            Value::Int64(|s: &S, _| Some(s.1.end - s.1.start)),
        ),
        col("lines", false, Value::Int32(|s: &S, _| Some(s.1.lines))),
        col("closed", false, Value::Bool(|s: &S, _| s.1.closed)),
        col(
            "local_ip",
            true,
            Value::Text(|s: &S, _| s.1.local_ip.as_deref()),
        ),
        col("local_port", true, Value::Int32(|s: &S, _| s.1.local_port)),
        col(
            "remote_ip",
            true,
            Value::Text(|s: &S, _| s.1.remote_ip.as_deref()),
        ),
        col(
            "remote_port",
            true,
            Value::Int32(|s: &S, _| s.1.remote_port),
        ),
        col("ehlo", true, Value::Text(|s: &S, _| s.1.ehlo.as_deref())),
        col(
            "starttls_attempted",
            false,
            Value::Bool(|s: &S, _| s.1.starttls),
        ),
        col("tls_succeeded", false, Value::Bool(|s: &S, _| s.1.tls_ok)),
        col(
            "tls_protocol",
            true,
            Value::Dict(|s: &S, _| tls_word(&s.1.tls, "")),
        ),
        col(
            "tls_cipher",
            true,
            Value::Dict(|s: &S, _| tls_word(&s.1.tls, BULK)),
        ),
        col(
            "certificate_subject",
            true,
            Value::Text(|s: &S, _| s.1.cert[0].as_deref()),
        ),
        col(
            "certificate_issuer",
            true,
            Value::Text(|s: &S, _| s.1.cert[1].as_deref()),
        ),
        col(
            "certificate_serial",
            true,
            Value::Text(|s: &S, _| s.1.cert[2].as_deref()),
        ),
        col(
            "certificate_thumbprint",
            true,
            Value::Text(|s: &S, _| s.1.cert[3].as_deref()),
        ),
        col(
            "certificate_alternate_names",
            true,
            Value::Text(|s: &S, _| s.1.cert[4].as_deref()),
        ),
        // The names of certificate_alternate_names as a list, and the validity period, from
        // either form Exchange logs a certificate in.
        col(
            "certificate_names",
            true,
            Value::List(|s: &S, _, f| match &s.1.cert[4] {
                Some(all) => {
                    all.split(';')
                        .map(str::trim)
                        .filter(|n| !n.is_empty())
                        .for_each(f);
                    true
                }
                None => false,
            }),
        ),
        col(
            "certificate_not_before",
            true,
            Value::Time(|s: &S, _| s.1.cert_not_before),
        ),
        col(
            "certificate_not_after",
            true,
            Value::Time(|s: &S, _| s.1.cert_not_after),
        ),
        // `1.2` for `SP_PROT_TLS1_2_SERVER`: the protocol version, whichever side logged it.
        col(
            "tls_version",
            true,
            Value::Dict(|s: &S, _| tls_word(&s.1.tls, "").and_then(tls_version)),
        ),
        // Schannel's algorithm names (`CALG_ECDH_EPHEM`, `CALG_AES_128`, `CALG_SHA_256`) in the
        // names OpenSSL and most tools use, and together as one suite (`ECDHE-AES128-SHA256`).
        // Schannel does not log the authentication algorithm (RSA or ECDSA), so the suite names
        // the three parts it does log, not an IANA suite.
        col(
            "tls_key_exchange",
            true,
            Value::Dict(|s: &S, _| tls_word(&s.1.tls, KEY_EXCHANGE).map(key_exchange_name)),
        ),
        col(
            "tls_bulk_cipher",
            true,
            Value::Dict(|s: &S, _| tls_word(&s.1.tls, BULK).map(bulk_cipher_name)),
        ),
        col(
            "tls_mac",
            true,
            Value::Dict(|s: &S, _| tls_word(&s.1.tls, MAC).map(mac_name)),
        ),
        col(
            "tls_cipher_suite",
            true,
            Value::DictMade(|s: &S, _, out| {
                let part = |after, name: fn(&str) -> &str| tls_word(&s.1.tls, after).map(name);
                match (
                    part(KEY_EXCHANGE, key_exchange_name),
                    part(BULK, bulk_cipher_name),
                    part(MAC, mac_name),
                ) {
                    (Some(kx), Some(bulk), Some(mac)) => {
                        out.push_str(kx);
                        out.push('-');
                        out.push_str(bulk);
                        out.push('-');
                        out.push_str(mac);
                        true
                    }
                    _ => false,
                }
            }),
        ),
        // The messages the session carried, as tracking's `message_id`: joins
        // `message_tracking` and `messages` (whose RECEIVE rows name this `session_id`).
        col(
            "message_ids",
            true,
            Value::List(|s: &S, _, f| {
                s.1.message_ids.iter().for_each(|id| f(id));
                true
            }),
        ),
        col(
            "auth_mechanism",
            true,
            Value::Dict(|s: &S, _| s.1.auth_mechanism.as_deref()),
        ),
        col(
            "auth_outcome",
            true,
            Value::Dict(|s: &S, _| s.1.auth_outcome),
        ),
        col(
            "mail_from",
            true,
            Value::Text(|s: &S, _| s.1.mail_from.as_deref()),
        ),
        col(
            "recipients",
            false,
            Value::Int32(|s: &S, _| Some(s.1.recipients)),
        ),
        col(
            "messages",
            false,
            Value::Int32(|s: &S, _| Some(s.1.messages)),
        ),
        col(
            "last_reply",
            true,
            Value::Text(|s: &S, _| s.1.last_reply.as_deref()),
        ),
        col(
            "outcome",
            false,
            Value::Dict(|s: &S, _| Some(s.1.outcome())),
        ),
        col(
            "diagnosis_code",
            true,
            Value::DictMade(|s: &S, c: &Ctx<'c>, out| match &s.1.diagnosis {
                Some((_, d, _)) => {
                    c.matcher.write_code(*d, out);
                    true
                }
                None => false,
            }),
        ),
        col(
            "diagnosis_category",
            true,
            Value::Dict(|s: &S, c: &Ctx<'c>| {
                s.1.diagnosis
                    .as_ref()
                    .map(|(_, d, _)| c.matcher.category(*d))
            }),
        ),
        col(
            "diagnosis_severity",
            true,
            Value::Dict(|s: &S, _| s.1.diagnosis.as_ref().map(|(sev, _, _)| sev.name())),
        ),
        col(
            "diagnosis_evidence",
            true,
            Value::Made(|s: &S, _, out| {
                use std::fmt::Write as _;
                let x = &s.1;
                let Some((_, _, said)) = &x.diagnosis else {
                    return false;
                };
                out.push_str(said);
                if let Some(t) = &x.cert[3] {
                    let _ = write!(out, "; certificate thumbprint {t}");
                }
                if let Some(subject) = &x.cert[0] {
                    let _ = write!(out, "; certificate subject {subject}");
                }
                if let Some(ip) = &x.remote_ip {
                    let _ = write!(out, "; remote {ip}");
                }
                true
            }),
        ),
    ]
}

#[derive(Debug, Default, Clone)]
struct Session {
    /// The (server, direction) stream whose log's progress times this session out.
    stream: u32,
    server: u32,
    direction: u32,
    connector: u32,
    source_file: u32,
    first_offset: i64,
    /// Every file with lines of the session (one crosses a roll of its log).
    files: Lines,
    start: i64,
    end: i64,
    lines: i32,
    closed: bool,
    local_ip: Option<String>,
    local_port: Option<i32>,
    remote_ip: Option<String>,
    remote_port: Option<i32>,
    ehlo: Option<String>,
    starttls: bool,
    tls_ok: bool,
    tls_failed: bool,
    /// The protocol and algorithms of a successful negotiation.
    tls: Option<Arc<Tls>>,
    /// Subject, issuer, serial, thumbprint, alternate names; shared by the sessions that saw
    /// the same certificate line.
    cert: [Option<Arc<str>>; 5],
    /// Message ids of the messages the session carried (the `250 2.6.0 <id>` replies).
    message_ids: Vec<String>,
    cert_not_before: Option<i64>,
    cert_not_after: Option<i64>,
    auth_mechanism: Option<String>,
    auth_outcome: Option<&'static str>,
    mail_from: Option<String>,
    recipients: i32,
    messages: i32,
    last_reply: Option<String>,
    worst_reply: u16,
    connect_failed: bool,
    diagnosis: Option<(Severity, Diagnosis, String)>,
}

impl Item for Session {
    fn stream(&self) -> u32 {
        self.stream
    }
    fn last(&self) -> i64 {
        self.end
    }
    fn lines(&self) -> &Lines {
        &self.files
    }
}

impl Session {
    /// Takes in one line of the session; true when the line is a reply, whose text becomes the
    /// session's last reply (copied once per run of lines by the caller).
    fn observe(
        &mut self,
        side: Event,
        event: Event,
        data: &str,
        context: &str,
        reply: Option<i16>,
        remarks: &mut Remarks,
    ) -> bool {
        // Which side speaks: on a receive log the client's commands come in (`<`); on a send
        // log we are the client and our commands go out (`>`).
        let command = matches!(
            (side, event),
            (Event::Receive, Event::Receive) | (Event::Send, Event::Send)
        );
        match event {
            Event::Disconnect => self.closed = true,
            Event::Information => observe_remark(self, data, context, remarks),
            _ => {}
        }
        if command {
            observe_command(self, data);
            return false;
        }
        let Some(code) = reply.and_then(|c| u16::try_from(c).ok()) else {
            return false;
        };
        if !matches!(event, Event::Send | Event::Receive) {
            return false;
        }
        if code >= 400 {
            self.worst_reply = self.worst_reply.max(code);
        }
        if code == 235 {
            self.auth_outcome = Some("succeeded");
        } else if self.auth_mechanism.is_some() && self.auth_outcome.is_none() && code >= 400 {
            self.auth_outcome = Some("failed");
        }
        // `250 2.6.0 <id> ... Queued mail for delivery`; older versions may leave out the
        // enhanced code, never the closing words.
        if code == 250
            && (data.starts_with("250 2.6.0")
                || data.trim_end().ends_with("Queued mail for delivery"))
        {
            self.messages += 1;
            // `250 2.6.0 <message id> [InternalId=…] Queued mail for delivery`.
            if let Some(id) = queued_message_id(data) {
                self.message_ids.push(id.to_string());
            }
        }
        true
    }

    /// Keeps the most severe diagnosis of the session's lines, with what the line said.
    fn note_hit(&mut self, matcher: &Matcher, hit: &Hit, data: &str, context: &str) {
        let sev = matcher.severity(hit.diagnosis);
        if self
            .diagnosis
            .as_ref()
            .is_none_or(|(best, _, _)| sev > *best)
        {
            let said = if context.is_empty() { data } else { context };
            self.diagnosis = Some((sev, hit.diagnosis, said.to_string()));
        }
    }

    fn outcome(&self) -> &'static str {
        if self.messages > 0 {
            "delivered"
        } else if self.worst_reply >= 500 {
            "failed"
        } else if self.worst_reply >= 400 || self.tls_failed || self.connect_failed {
            "deferred"
        } else {
            "dropped"
        }
    }
}

const CERT_ATTRIBUTES: [&str; 5] = [
    "Certificate subject",
    "Certificate issuer name",
    "Certificate serial number",
    "Certificate thumbprint",
    "Certificate alternate names",
];

/// A protocol log line's event, from its name; `send` and `receive` also name directions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Event {
    Send,
    Receive,
    Disconnect,
    Information,
    Other,
}

impl Event {
    fn of(name: &str) -> Event {
        match name {
            "send" => Event::Send,
            "receive" => Event::Receive,
            "disconnect" => Event::Disconnect,
            "information" => Event::Information,
            _ => Event::Other,
        }
    }

    /// The meaning of name `id`, decided the first time the id is seen.
    #[inline]
    fn of_id(kinds: &mut Vec<Event>, names: &Names, id: u32) -> Event {
        let i = id as usize;
        if i >= kinds.len() {
            let from = kinds.len() as u32;
            kinds.extend((from..=id).map(|k| Event::of(names.name(k))));
        }
        kinds[i]
    }
}

/// Groups protocol log rows into sessions; see the module docs.
#[derive(Debug)]
pub struct SessionCorrelator {
    window: Window<Vec<u8>, Session>,
    names: Names,
    /// (server, direction) name ids to stream ids.
    streams: HashMap<(u32, u32), u32>,
    /// By name id: what the name means as an event or a direction (decided once per name).
    kinds: Vec<Event>,
    remarks: Remarks,
}

impl SessionCorrelator {
    /// A correlator that closes sessions idle for `timeout` (Exchange's own connection
    /// timeouts are minutes; ten is generous).
    pub fn new(timeout: Duration) -> Self {
        let timeout_ms = i64::try_from(timeout.as_millis()).unwrap_or(i64::MAX);
        SessionCorrelator {
            window: Window::new(Clock::Own, timeout_ms, MAX_OPEN),
            names: Names::default(),
            streams: HashMap::new(),
            kinds: Vec::new(),
            remarks: Remarks::default(),
        }
    }

    /// Caps the sessions open at once (default 100,000); past it the idle-longest tenth is
    /// closed early, as incomplete.
    pub fn with_max_open(mut self, max: usize) -> Self {
        self.window.set_cap(max);
        self
    }

    /// Sessions still open.
    pub fn open_sessions(&self) -> usize {
        self.window.open_len()
    }

    /// Per source file, the offset of the first line an open session still needs (what a
    /// checkpoint must not pass).
    pub fn oldest_needed(&self) -> std::collections::BTreeMap<String, i64> {
        self.window
            .oldest_needed()
            .into_iter()
            .map(|(f, o)| (self.names.name(f).to_string(), o))
            .collect()
    }

    /// Adds a batch of `smtp_protocol` rows with their diagnoses (from [`Matcher::classify`]).
    pub fn add(&mut self, matcher: &Matcher, batch: &RecordBatch, hits: &[Option<Hit>]) {
        let Some((time, offsets)) = crate::records::lineage(batch) else {
            return;
        };
        let ports = |name| {
            batch
                .column_by_name(name)
                .and_then(|c| c.as_primitive_opt::<Int32Type>())
        };
        let (local_port, remote_port) = (ports("local_port"), ports("remote_port"));
        let replies = batch
            .column_by_name("smtp_reply_code")
            .and_then(|c| c.as_primitive_opt::<Int16Type>());
        // Every column is resolved once here; repeated names are numbered once per batch.
        let names = &mut self.names;
        let server_col = Interned::of(batch, "server", names);
        let direction_col = Interned::of(batch, "direction", names);
        let connector_col = Interned::of(batch, "connector_id", names);
        let file_col = Interned::of(batch, "source_file", names);
        let event_col = Interned::of(batch, "event", names);
        let text = |name| Text::of(batch, name);
        let (id_col, local_col, remote_col) =
            (text("session_id"), text("local_ip"), text("remote_ip"));
        let (data_col, context_col) = (text("data"), text("context"));
        let empty = names.id("");
        let mut key: Vec<u8> = Vec::with_capacity(32);
        let mut last_stream: Option<((u32, u32), u32)> = None;
        let rows = batch.num_rows();
        let mut row = 0;
        // Consecutive lines often belong to one session (a burst of remarks, a command and its
        // reply; a quiet server writes whole sessions in a row): the session is looked up once
        // per run of its lines, its watermark moved once, and its last reply copied once.
        // Each line's id, time, file and offset are read once: where a run ends, the next
        // run's first line has been read already (most runs are one line when a busy server
        // interleaves its sessions).
        let time_at = |row: usize| {
            if time.is_valid(row) {
                time.value(row)
            } else {
                0
            }
        };
        let mut next_id = if rows > 0 { id_col.first(0) } else { None };
        while row < rows {
            let Some(id) = next_id.filter(|s| !s.is_empty()) else {
                row += 1;
                next_id = if row < rows { id_col.first(row) } else { None };
                continue;
            };
            let server = server_col.id(row, names).unwrap_or(empty);
            let direction = direction_col.id(row, names).unwrap_or(empty);
            let connector = connector_col.id(row, names).unwrap_or(empty);
            let pair = (server, direction);
            let stream = match last_stream {
                Some((p, s)) if p == pair => s,
                _ => {
                    let next = u32::try_from(self.streams.len()).unwrap_or(u32::MAX);
                    let s = *self.streams.entry(pair).or_insert(next);
                    last_stream = Some((pair, s));
                    s
                }
            };
            key.clear();
            key.extend_from_slice(&stream.to_le_bytes());
            key.extend_from_slice(&connector.to_le_bytes());
            key.extend_from_slice(id.as_bytes());
            let side = Event::of_id(&mut self.kinds, names, direction);
            let (mut t, mut source_file, mut offset) = (
                time_at(row),
                file_col.id(row, names).unwrap_or(empty),
                offsets.value(row),
            );
            let s = self.window.entry(key.as_slice(), || Session {
                stream,
                server,
                direction,
                connector,
                source_file,
                first_offset: offset,
                files: Lines::new(source_file, offset),
                start: t,
                end: t,
                ..Session::default()
            });
            if s.local_ip.is_none() {
                s.local_ip = local_col.first(row).map(str::to_string);
                s.local_port = local_port.filter(|a| a.is_valid(row)).map(|a| a.value(row));
                s.remote_ip = remote_col.first(row).map(str::to_string);
                s.remote_port = remote_port
                    .filter(|a| a.is_valid(row))
                    .map(|a| a.value(row));
            }
            let mut latest = i64::MIN;
            let mut last_reply: Option<&str> = None;
            loop {
                latest = latest.max(t);
                let event_id = event_col.id(row, names).unwrap_or(empty);
                let event = Event::of_id(&mut self.kinds, names, event_id);
                s.files.note(source_file, offset);
                s.start = s.start.min(t);
                s.end = s.end.max(t);
                s.lines += 1;
                let data = data_col.first(row).unwrap_or_default();
                let context = context_col.first(row).unwrap_or_default();
                let reply = replies.filter(|r| r.is_valid(row)).map(|r| r.value(row));
                if s.observe(side, event, data, context, reply, &mut self.remarks) {
                    last_reply = Some(data);
                }
                if let Some(Some(hit)) = hits.get(row) {
                    s.note_hit(matcher, hit, data, context);
                }
                row += 1;
                next_id = if row < rows { id_col.first(row) } else { None };
                // The run ends at the session's last line, or where another session's starts.
                if s.closed
                    || next_id != Some(id)
                    || connector_col.id(row, names).unwrap_or(empty) != connector
                    || server_col.id(row, names).unwrap_or(empty) != server
                    || direction_col.id(row, names).unwrap_or(empty) != direction
                {
                    break;
                }
                (t, source_file, offset) = (
                    time_at(row),
                    file_col.id(row, names).unwrap_or(empty),
                    offsets.value(row),
                );
            }
            // Most lines of a session are replies: the string is reused, not reallocated.
            if let Some(data) = last_reply {
                let last = s.last_reply.get_or_insert_with(String::new);
                last.clear();
                last.push_str(data);
            }
            let closed = s.closed;
            self.window.advance(stream, latest);
            if closed {
                self.window.close(key.as_slice());
            }
        }
        self.window.sweep();
    }

    /// Sessions closed so far, as a batch, once there are at least `min` of them.
    pub fn take(
        &mut self,
        matcher: &Matcher,
        min: usize,
    ) -> Result<Option<RecordBatch>, ArrowError> {
        let Some(mut done) = self.window.take(min) else {
            return Ok(None);
        };
        let names = &self.names;
        // In reading order: files by the order they were first seen, then offset.
        done.sort_unstable_by_key(|(_, s)| (s.source_file, s.first_offset));
        let ctx = Ctx { names, matcher };
        crate::derived::build(schema(), &columns(), done.iter(), done.len(), &ctx).map(Some)
    }

    /// Closes every open session (end of input) and returns what is left.
    pub fn finish(&mut self, matcher: &Matcher) -> Result<Option<RecordBatch>, ArrowError> {
        self.window.close_all();
        self.take(matcher, 1)
    }
}

/// `cmd` starts with `verb`, in any case (SMTP verbs are case-insensitive).
fn starts(cmd: &str, verb: &str) -> bool {
    cmd.as_bytes()
        .get(..verb.len())
        .is_some_and(|head| head.eq_ignore_ascii_case(verb.as_bytes()))
}

fn observe_command(s: &mut Session, cmd: &str) {
    // The verb's bytes are ASCII, so slicing after a match is on a character boundary.
    if starts(cmd, "EHLO ") || starts(cmd, "HELO ") {
        s.ehlo = Some(cmd[5..].trim().to_string());
    } else if starts(cmd, "STARTTLS") {
        s.starttls = true;
    } else if starts(cmd, "AUTH ") {
        let mech = cmd[5..].split_whitespace().next().unwrap_or_default();
        s.auth_mechanism = Some(mech.to_ascii_uppercase());
    } else if starts(cmd, "X-EXPS ") {
        let mech = cmd[7..].split_whitespace().next().unwrap_or_default();
        s.auth_mechanism = Some(format!("X-EXPS {}", mech.to_ascii_uppercase()));
    } else if starts(cmd, "MAIL FROM:") {
        let addr = cmd[10..].split_whitespace().next().unwrap_or_default();
        s.mail_from = Some(addr.trim_matches(['<', '>']).to_string());
    } else if starts(cmd, "RCPT TO:") {
        s.recipients += 1;
    }
}

/// Substring searches over remarks, built once: `str::contains` builds a searcher on every
/// call, and the remark path runs several per session (it was 40% of session correlation).
struct Finders {
    auth: memmem::Finder<'static>,
    failed: memmem::Finder<'static>,
    bulk: memmem::Finder<'static>,
    mac: memmem::Finder<'static>,
    key_exchange: memmem::Finder<'static>,
    negotiation_succeeded: memmem::Finder<'static>,
}

fn finders() -> &'static Finders {
    static FINDERS: std::sync::OnceLock<Finders> = std::sync::OnceLock::new();
    FINDERS.get_or_init(|| Finders {
        auth: memmem::Finder::new("AUTH"),
        failed: memmem::Finder::new("failed"),
        bulk: memmem::Finder::new(BULK),
        mac: memmem::Finder::new(MAC),
        key_exchange: memmem::Finder::new(KEY_EXCHANGE),
        negotiation_succeeded: memmem::Finder::new("negotiation succeeded"),
    })
}

/// A remark that reports a failed authentication (`… AUTH … failed …`).
fn auth_failed(f: &Finders, context: &str) -> bool {
    let c = context.as_bytes();
    f.auth.find(c).is_some() && f.failed.find(c).is_some()
}

/// Certificate and TLS lines already parsed. A receive connector presents one certificate,
/// and a server negotiates a handful of suites, session after session: each distinct line is
/// parsed once and the sessions that saw it share the result (parsing them was a fifth of
/// everything correlation and diagnosis cost on SMTP receive logs, in instructions). Keyed by
/// the line, not just the last one, so interleaved sessions with different certificates or
/// suites (several connectors, a send log's many remote hosts) still hit; emptied when it holds
/// [`Remarks::MAX`] lines, which bounds it on logs where every line differs.
#[derive(Debug, Default)]
struct Remarks {
    /// The data of `Sending certificate Subject …` lines, and what each says.
    certs: HashMap<Box<str>, Arc<Certificate>>,
    /// What followed `TLS protocol ` on successful negotiations, and the words of each.
    tls: HashMap<Box<str>, Arc<Tls>>,
}

/// A certificate as a session row shows it.
#[derive(Debug)]
struct Certificate {
    fields: [Option<Arc<str>>; 5],
    not_before: i64,
    not_after: i64,
}

impl Remarks {
    const MAX: usize = 256;

    fn certificate(&mut self, data: &str) -> Option<Arc<Certificate>> {
        if let Some(c) = self.certs.get(data) {
            return Some(Arc::clone(c));
        }
        let c = CertificateLine::parse(data)?;
        let c = Arc::new(Certificate {
            fields: [
                Some(c.subject.into()),
                c.issuer.map(Into::into),
                Some(c.serial.into()),
                Some(c.thumbprint.into()),
                Some(c.names).filter(|n| !n.is_empty()).map(Into::into),
            ],
            not_before: c.not_before,
            not_after: c.not_after,
        });
        if self.certs.len() >= Self::MAX {
            self.certs.clear();
        }
        self.certs.insert(data.into(), Arc::clone(&c));
        Some(c)
    }

    fn tls(&mut self, f: &Finders, rest: &str) -> Arc<Tls> {
        if let Some(t) = self.tls.get(rest) {
            return Arc::clone(t);
        }
        let t = Arc::new(Tls::parse(f, rest));
        if self.tls.len() >= Self::MAX {
            self.tls.clear();
        }
        self.tls.insert(rest.into(), Arc::clone(&t));
        t
    }
}

fn observe_remark(s: &mut Session, data: &str, context: &str, remarks: &mut Remarks) {
    if data.starts_with("Failed to connect") {
        s.connect_failed = true;
    }
    // The remarks Exchange writes in every session carry nothing a session row shows: turned
    // away before any search.
    if matches!(
        context,
        "" | "Set Session Permissions" | "receiving message"
    ) {
        return;
    }
    let f = finders();
    // Most other remarks are none of these ("Received certificate", "receiving message with
    // InternetMessageId …"): the first byte turns them away before any comparison.
    if !matches!(context.as_bytes().first(), Some(b'C' | b'S' | b'T')) {
        if auth_failed(f, context) {
            s.auth_outcome = Some("failed");
        }
        return;
    }
    if let Some(i) = CERT_ATTRIBUTES.iter().position(|a| *a == context) {
        if !data.is_empty() {
            s.cert[i] = Some(data.into());
        }
    } else if context.starts_with("Sending certificate Subject") {
        if let Some(c) = remarks.certificate(data) {
            s.cert.clone_from(&c.fields);
            s.cert_not_before = Some(c.not_before);
            s.cert_not_after = Some(c.not_after);
        }
    } else if let Some(i) = ["Certificate not before", "Certificate not after"]
        .iter()
        .position(|a| *a == context)
    {
        let t = mailflow_parser::fields::datetime::parse_datetime_ms(data.trim().as_bytes());
        if i == 0 {
            s.cert_not_before = t;
        } else {
            s.cert_not_after = t;
        }
    } else if let Some(rest) = context.strip_prefix("TLS protocol ") {
        if f.negotiation_succeeded.find(rest.as_bytes()).is_some() {
            s.tls_ok = true;
            s.tls = Some(remarks.tls(f, rest));
        }
    } else if context.starts_with("TLS negotiation failed") {
        s.tls_failed = true;
    } else if auth_failed(f, context) {
        s.auth_outcome = Some("failed");
    }
}

/// The certificate a receive connector presents, as Exchange logs it on one line: context
/// `Sending certificate Subject Issuer name Serial number Thumbprint Not before Not after Subject
/// alternate names`, data the values in that order, space-separated (the names `;`-separated).
/// A distinguished name holds spaces only after its commas, so the issuer starts at the first
/// space that follows no comma and precedes an attribute (`CN=`); the two ISO timestamps anchor
/// serial and thumbprint before them and the names after.
#[derive(Debug, Clone, PartialEq, Eq)]
struct CertificateLine<'a> {
    subject: &'a str,
    issuer: Option<&'a str>,
    serial: &'a str,
    thumbprint: &'a str,
    not_before: i64,
    not_after: i64,
    names: &'a str,
}

impl<'a> CertificateLine<'a> {
    fn parse(data: &'a str) -> Option<Self> {
        // Only a token shaped like an ISO time (`2025-01-17T…`) is parsed as one: most tokens
        // are names and hex numbers.
        let time = |t: &str| {
            let b = t.as_bytes();
            (b.len() >= 19 && b[4] == b'-' && b[10] == b'T')
                .then(|| mailflow_parser::fields::datetime::parse_datetime_ms(b))
                .flatten()
        };
        let tokens: Vec<(usize, &str)> = data
            .split(' ')
            .scan(0usize, |at, t| {
                let start = *at;
                *at += t.len() + 1;
                Some((start, t))
            })
            .filter(|(_, t)| !t.is_empty())
            .collect();
        let k = (2..tokens.len().saturating_sub(1))
            .find(|&k| time(tokens[k].1).is_some() && time(tokens[k + 1].1).is_some())?;
        let (serial, thumbprint) = (tokens[k - 2].1, tokens[k - 1].1);
        let dn = data[..tokens[k - 2].0].trim();
        let names = tokens.get(k + 2).map_or("", |&(at, _)| data[at..].trim());
        let boundary = dn
            .char_indices()
            .find(|&(i, c)| c == ' ' && !dn[..i].ends_with(',') && is_attribute(&dn[i + 1..]));
        let (subject, issuer) = match boundary {
            Some((i, _)) => (&dn[..i], Some(dn[i + 1..].trim())),
            None => (dn, None),
        };
        (!subject.is_empty()).then_some(CertificateLine {
            subject,
            issuer,
            serial,
            thumbprint,
            not_before: time(tokens[k].1)?,
            not_after: time(tokens[k + 1].1)?,
            names,
        })
    }
}

/// The message id in a `250 2.6.0 <id> ...` reply, brackets included (as tracking's
/// `message-id` holds it).
fn queued_message_id(reply: &str) -> Option<&str> {
    let start = reply.find('<')?;
    let len = reply[start..].find('>')? + 1;
    let id = &reply[start..start + len];
    (len > 2 && !id.contains(' ')).then_some(id)
}

/// Whether `text` starts with a distinguished name attribute: upper-case letters, then `=`.
fn is_attribute(text: &str) -> bool {
    let key = text.bytes().take_while(u8::is_ascii_uppercase).count();
    key > 0 && text.as_bytes().get(key) == Some(&b'=')
}

/// Where each algorithm's Schannel name follows in a `TLS protocol …` line.
const BULK: &str = "bulk encryption algorithm ";
const MAC: &str = "MAC hash algorithm ";
const KEY_EXCHANGE: &str = "key exchange algorithm ";

/// The words of a `TLS protocol … negotiation succeeded …` line that the TLS columns show,
/// found once when the line is seen (the session's row asks for them seven times).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Tls {
    /// Schannel's protocol (`SP_PROT_TLS1_2_SERVER`), and the words after [`BULK`], [`MAC`]
    /// and [`KEY_EXCHANGE`], each if the line has it.
    words: [Option<Box<str>>; 4],
}

impl Tls {
    /// The words of what followed `TLS protocol `.
    fn parse(f: &Finders, line: &str) -> Self {
        let word = |after: Option<(&memmem::Finder<'_>, usize)>| {
            let rest = match after {
                None => line,
                // The finders' needles are ASCII: the slice starts on a character boundary.
                Some((finder, len)) => line.get(finder.find(line.as_bytes())? + len..)?,
            };
            rest.split_whitespace()
                .next()
                .map(|w| w.trim_end_matches(','))
                .filter(|w| !w.is_empty())
                .map(Into::into)
        };
        Tls {
            words: [
                word(None),
                word(Some((&f.bulk, BULK.len()))),
                word(Some((&f.mac, MAC.len()))),
                word(Some((&f.key_exchange, KEY_EXCHANGE.len()))),
            ],
        }
    }
}

/// The word after `after` (one of [`BULK`], [`MAC`], [`KEY_EXCHANGE`]) in the negotiated TLS
/// line; its first word, the protocol, for `""`.
fn tls_word<'a>(tls: &'a Option<Arc<Tls>>, after: &str) -> Option<&'a str> {
    let i = match after {
        "" => 0,
        BULK => 1,
        MAC => 2,
        KEY_EXCHANGE => 3,
        _ => return None,
    };
    tls.as_ref()?.words[i].as_deref()
}

/// OpenSSL's name of a Schannel key exchange algorithm (the name less `CALG_` if unknown).
fn key_exchange_name(calg: &str) -> &str {
    match calg {
        "CALG_ECDH_EPHEM" | "CALG_ECDHE" => "ECDHE",
        "CALG_DH_EPHEM" => "DHE",
        "CALG_ECDH" => "ECDH",
        "CALG_DH_SF" => "DH",
        "CALG_RSA_KEYX" => "RSA",
        other => other.strip_prefix("CALG_").unwrap_or(other),
    }
}

/// OpenSSL's name of a Schannel bulk cipher.
fn bulk_cipher_name(calg: &str) -> &str {
    match calg {
        "CALG_AES_128" => "AES128",
        "CALG_AES_192" => "AES192",
        "CALG_AES_256" => "AES256",
        "CALG_3DES" => "DES-CBC3",
        "CALG_DES" => "DES",
        "CALG_RC4" => "RC4",
        "CALG_RC2" => "RC2",
        other => other.strip_prefix("CALG_").unwrap_or(other),
    }
}

/// OpenSSL's name of a Schannel hash.
fn mac_name(calg: &str) -> &str {
    match calg {
        "CALG_SHA1" | "CALG_SHA" => "SHA",
        "CALG_SHA_256" => "SHA256",
        "CALG_SHA_384" => "SHA384",
        "CALG_SHA_512" => "SHA512",
        "CALG_MD5" => "MD5",
        other => other.strip_prefix("CALG_").unwrap_or(other),
    }
}

/// The TLS version in Schannel's protocol name: `SP_PROT_TLS1_2_SERVER` is `1.2`.
fn tls_version(protocol: &str) -> Option<&'static str> {
    let p = protocol.to_ascii_uppercase();
    Some(if p.contains("TLS1_3") {
        "1.3"
    } else if p.contains("TLS1_2") {
        "1.2"
    } else if p.contains("TLS1_1") {
        "1.1"
    } else if p.contains("TLS1") {
        "1.0"
    } else if p.contains("SSL3") {
        "SSL 3.0"
    } else if p.contains("SSL2") {
        "SSL 2.0"
    } else {
        return None;
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The `smtp_sessions` rows of a receive log decoded in batches of `batch` rows.
    fn sessions_of(log: &[u8], batch: usize) -> String {
        use mailflow_parser::{DecoderBuilder, LogReader, Table};
        let m = Matcher::new(crate::Catalog::builtin()).unwrap();
        let decoder = DecoderBuilder::new("EX01/SmtpReceive/RECV2024010100-1.LOG")
            .with_batch_size(batch)
            .build();
        let mut c = SessionCorrelator::new(Duration::from_secs(600));
        let mut out = Vec::new();
        for flushed in LogReader::new(decoder, log) {
            let Some(d) = flushed.unwrap().data else {
                continue;
            };
            if d.table == Table::SmtpProtocol {
                let hits = m.classify(d.table, &d.batch);
                c.add(&m, &d.batch, &hits);
                out.extend(c.take(&m, 1).unwrap());
            }
        }
        out.extend(c.finish(&m).unwrap());
        // Sessions closed in one batch come sorted; in separate batches, as they close.
        let table = arrow_cast::pretty::pretty_format_batches(&out)
            .unwrap()
            .to_string();
        let mut rows: Vec<&str> = table.lines().collect();
        rows.sort_unstable();
        rows.join("\n")
    }

    #[test]
    fn runs_of_a_sessions_lines_correlate_as_lines_one_by_one() {
        // Session 1 in one run, ended and its id reused at once; sessions 2 and 3 interleaved;
        // replies, a TLS remark, a queued message and a failure inside runs.
        let log = b"#Software: Microsoft Exchange Server\r\n\
#Log-type: SMTP Receive Protocol Log\r\n\
#Fields: date-time,connector-id,session-id,sequence-number,local-endpoint,remote-endpoint,event,data,context\r\n\
2024-01-01T00:00:00.000Z,EX01\\Default,08DC000000000001,0,10.0.0.5:25,203.0.113.9:41822,+,,\r\n\
2024-01-01T00:00:00.010Z,EX01\\Default,08DC000000000001,1,10.0.0.5:25,203.0.113.9:41822,<,EHLO mx.example.org,\r\n\
2024-01-01T00:00:00.020Z,EX01\\Default,08DC000000000001,2,10.0.0.5:25,203.0.113.9:41822,>,250-ex01.contoso.com Hello,\r\n\
2024-01-01T00:00:00.030Z,EX01\\Default,08DC000000000001,3,10.0.0.5:25,203.0.113.9:41822,*,,TLS protocol SP_PROT_TLS1_2_SERVER negotiation succeeded using bulk encryption algorithm CALG_AES_256 with strength 256 bits\r\n\
2024-01-01T00:00:00.040Z,EX01\\Default,08DC000000000001,4,10.0.0.5:25,203.0.113.9:41822,<,MAIL FROM:<a@example.org>,\r\n\
2024-01-01T00:00:00.050Z,EX01\\Default,08DC000000000001,5,10.0.0.5:25,203.0.113.9:41822,>,250 2.1.0 Sender OK,\r\n\
2024-01-01T00:00:00.060Z,EX01\\Default,08DC000000000001,6,10.0.0.5:25,203.0.113.9:41822,>,250 2.6.0 <m1@example.org> [InternalId=1] Queued mail for delivery,\r\n\
2024-01-01T00:00:00.070Z,EX01\\Default,08DC000000000001,7,10.0.0.5:25,203.0.113.9:41822,-,,Local\r\n\
2024-01-01T00:00:00.080Z,EX01\\Default,08DC000000000001,0,10.0.0.5:25,203.0.113.9:41900,+,,\r\n\
2024-01-01T00:00:00.090Z,EX01\\Default,08DC000000000001,1,10.0.0.5:25,203.0.113.9:41900,>,421 4.3.2 Service not available,\r\n\
2024-01-01T00:00:01.000Z,EX01\\Default,08DC000000000002,0,10.0.0.5:25,198.51.100.7:5000,+,,\r\n\
2024-01-01T00:00:01.001Z,EX01\\Default,08DC000000000003,0,10.0.0.5:25,198.51.100.8:5001,+,,\r\n\
2024-01-01T00:00:01.010Z,EX01\\Default,08DC000000000002,1,10.0.0.5:25,198.51.100.7:5000,<,STARTTLS,\r\n\
2024-01-01T00:00:01.011Z,EX01\\Default,08DC000000000003,1,10.0.0.5:25,198.51.100.8:5001,<,AUTH LOGIN,\r\n\
2024-01-01T00:00:01.020Z,EX01\\Default,08DC000000000002,2,10.0.0.5:25,198.51.100.7:5000,*,,TLS negotiation failed with error NoCredentials\r\n\
2024-01-01T00:00:01.021Z,EX01\\Default,08DC000000000003,2,10.0.0.5:25,198.51.100.8:5001,>,535 5.7.3 Authentication unsuccessful,\r\n\
2024-01-01T00:00:01.030Z,EX01\\Default,08DC000000000003,3,10.0.0.5:25,198.51.100.8:5001,-,,Remote\r\n\
2024-01-01T00:00:01.040Z,EX01\\Default,08DC000000000002,3,10.0.0.5:25,198.51.100.7:5000,-,,Local\r\n";
        let one_by_one = sessions_of(log, 1);
        assert_eq!(one_by_one, sessions_of(log, 4096));
        assert_eq!(one_by_one, sessions_of(log, 3));
        // Four sessions, the reused id's second one cut off at the end of the input.
        assert_eq!(
            one_by_one.matches("08DC00000000000").count(),
            4,
            "{one_by_one}"
        );
        assert!(
            one_by_one.contains("421 4.3.2 Service not available"),
            "{one_by_one}"
        );
        assert!(one_by_one.contains("<m1@example.org>"), "{one_by_one}");
    }

    #[test]
    fn sessions_sharing_a_parsed_certificate_or_tls_line_each_show_their_own() {
        // Certificates X, Y, X and suites AES_256, AES_128, AES_256: a line seen before is
        // taken from the cache, a new one parsed. Sessions one after the other, then their
        // lines interleaved as a busy server writes them.
        let session = |id: u8, cert: &str, bulk: &str| {
            format!(
                "2024-01-01T00:00:0{id}.000Z,EX01\\Default,08DC00000000000{id},0,10.0.0.5:25,203.0.113.9:4182{id},+,,\r\n\
2024-01-01T00:00:0{id}.010Z,EX01\\Default,08DC00000000000{id},1,10.0.0.5:25,203.0.113.9:4182{id},*, CN={cert} CN=Contoso CA 0A1B 3F2504E04F8911D39A0C0305E82C3301ABCDEF1{id} 2025-01-01T00:00:00.000Z 2026-01-01T00:00:00.000Z {cert},Sending certificate Subject Issuer name Serial number Thumbprint Not before Not after Subject alternate names\r\n\
2024-01-01T00:00:0{id}.020Z,EX01\\Default,08DC00000000000{id},2,10.0.0.5:25,203.0.113.9:4182{id},*,,TLS protocol SP_PROT_TLS1_2_SERVER negotiation succeeded using bulk encryption algorithm CALG_{bulk} with strength 256 bits\r\n\
2024-01-01T00:00:0{id}.030Z,EX01\\Default,08DC00000000000{id},3,10.0.0.5:25,203.0.113.9:4182{id},-,,Local\r\n"
            )
        };
        let sessions = [
            session(1, "x.contoso.com", "AES_256"),
            session(2, "y.contoso.com", "AES_128"),
            session(3, "x.contoso.com", "AES_256"),
        ];
        let lines: Vec<Vec<&str>> = sessions
            .iter()
            .map(|s| s.split_inclusive('\n').collect())
            .collect();
        let interleaved: String = (0..4)
            .flat_map(|i| lines.iter().map(move |l| l[i]))
            .collect();
        let header = "#Software: Microsoft Exchange Server\r\n\
#Log-type: SMTP Receive Protocol Log\r\n\
#Fields: date-time,connector-id,session-id,sequence-number,local-endpoint,remote-endpoint,event,data,context\r\n";
        for body in [sessions.concat(), interleaved] {
            let rows = sessions_of(format!("{header}{body}").as_bytes(), 4096);
            for (id, cert, cipher) in [
                (1, "x.contoso.com", "AES256"),
                (2, "y.contoso.com", "AES128"),
                (3, "x.contoso.com", "AES256"),
            ] {
                let row = rows
                    .lines()
                    .find(|r| r.contains(&format!("08DC00000000000{id}")))
                    .unwrap_or_else(|| panic!("no session {id}: {rows}"));
                assert!(row.contains(&format!("CN={cert}")), "{row}");
                assert!(row.contains(&format!("ABCDEF1{id}")), "{row}");
                assert!(row.contains(cipher), "{row}");
            }
        }
    }

    #[test]
    fn the_one_line_certificate_of_a_receive_connector() {
        // Real sample (smtp-receive.artefacts-help.log, sequence 6).
        let c = CertificateLine::parse(" CN=SERVER-HOSTNAME CN=SERVER-HOSTNAME 12DEABC6565646512346ABDC13456894 12DEABC6565646512346ABDC1345689413589876 2020-01-17T15:15:33.000Z 2025-01-17T15:15:33.000Z SERVER-HOSTNAME;SERVER-HOSTNAME.DOMAIN.TEST").unwrap();
        assert_eq!(c.subject, "CN=SERVER-HOSTNAME");
        assert_eq!(c.issuer, Some("CN=SERVER-HOSTNAME"));
        assert_eq!(c.serial, "12DEABC6565646512346ABDC13456894");
        assert_eq!(c.thumbprint, "12DEABC6565646512346ABDC1345689413589876");
        assert_eq!(c.not_before, 1_579_274_133_000);
        assert_eq!(c.not_after, 1_737_126_933_000);
        assert_eq!(c.names, "SERVER-HOSTNAME;SERVER-HOSTNAME.DOMAIN.TEST");
    }

    #[test]
    fn distinguished_names_with_spaces_split_where_the_issuer_starts() {
        let c = CertificateLine::parse("CN=mail.contoso.com, OU=IT Dept, O=Contoso Ltd, C=US CN=R3, O=Let's Encrypt, C=US 04A1 9F00AA 2025-01-01T00:00:00.000Z 2025-04-01T00:00:00.000Z mail.contoso.com").unwrap();
        assert_eq!(
            c.subject,
            "CN=mail.contoso.com, OU=IT Dept, O=Contoso Ltd, C=US"
        );
        assert_eq!(c.issuer, Some("CN=R3, O=Let's Encrypt, C=US"));
        assert_eq!((c.serial, c.thumbprint), ("04A1", "9F00AA"));
        assert_eq!(c.names, "mail.contoso.com");
        assert_eq!(CertificateLine::parse("CN=x"), None);
        assert_eq!(CertificateLine::parse(""), None);
    }

    #[test]
    fn queued_replies_name_their_message() {
        assert_eq!(
            queued_message_id(
                "250 2.6.0 <1736846922.907742.2942@foo.bar.local> [InternalId=5450313518243, Hostname=A.b.prod.outlook.com] 141301 bytes in 0.101, 1361.827 KB/sec Queued mail for delivery"
            ),
            Some("<1736846922.907742.2942@foo.bar.local>")
        );
        assert_eq!(
            queued_message_id("250 2.6.0 Queued mail for delivery"),
            None
        );
        assert_eq!(queued_message_id("250 2.6.0 <> x"), None);
    }

    #[test]
    fn tls_algorithms_from_schannel_names() {
        let tls = Some(Arc::new(Tls::parse(
            finders(),
            "SP_PROT_TLS1_2_SERVER negotiation succeeded using bulk encryption algorithm \
             CALG_AES_128 with strength 128 bits, MAC hash algorithm CALG_SHA_256 with strength \
             0 bits and key exchange algorithm CALG_ECDH_EPHEM with strength 256 bits",
        )));
        assert_eq!(tls_word(&tls, ""), Some("SP_PROT_TLS1_2_SERVER"));
        assert_eq!(tls_word(&tls, BULK), Some("CALG_AES_128"));
        assert_eq!(tls_word(&tls, MAC).map(mac_name), Some("SHA256"));
        assert_eq!(
            tls_word(&tls, KEY_EXCHANGE).map(key_exchange_name),
            Some("ECDHE")
        );
        // A line cut short names what it has; an unknown algorithm keeps its name.
        let short = Some(Arc::new(Tls::parse(
            finders(),
            "SP_PROT_TLS1_2_CLIENT negotiation succeeded using bulk encryption algorithm CALG_NEW",
        )));
        assert_eq!(tls_word(&short, BULK).map(bulk_cipher_name), Some("NEW"));
        assert_eq!(tls_word(&short, MAC), None);
        assert_eq!(tls_word(&None, ""), None);
        assert_eq!(bulk_cipher_name("CALG_3DES"), "DES-CBC3");
        assert_eq!(mac_name("CALG_SHA1"), "SHA");
        assert_eq!(key_exchange_name("CALG_RSA_KEYX"), "RSA");
    }

    #[test]
    fn tls_versions_from_schannel_names() {
        assert_eq!(tls_version("SP_PROT_TLS1_2_SERVER"), Some("1.2"));
        assert_eq!(tls_version("SP_PROT_TLS1_3_CLIENT"), Some("1.3"));
        assert_eq!(tls_version("SP_PROT_TLS1_1_CLIENT"), Some("1.1"));
        assert_eq!(tls_version("SP_PROT_TLS1_SERVER"), Some("1.0"));
        assert_eq!(tls_version("SP_PROT_SSL3_CLIENT"), Some("SSL 3.0"));
        assert_eq!(tls_version("unknown"), None);
    }
}
