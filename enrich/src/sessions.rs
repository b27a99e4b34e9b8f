//! SMTP session correlation: `smtp_protocol` rows grouped by (server, direction, connector,
//! session id) into one `smtp_sessions` row per session.
//!
//! A session is written when its disconnect line arrives. One whose end is not written yet stays
//! open across batches and files; it is closed as incomplete when its server's log has moved on
//! by more than the timeout, or when the input ends. Memory is bounded by the sessions open at
//! once (capped: past the cap the oldest is closed early).

use hashbrown::HashMap;
use std::sync::Arc;
use std::time::Duration;

use arrow_array::builder::{
    BooleanBuilder, Int32Builder, Int64Builder, ListBuilder, StringBuilder,
    StringDictionaryBuilder, TimestampMillisecondBuilder,
};
use arrow_array::cast::AsArray;
use arrow_array::types::{Int16Type, Int32Type};
use arrow_array::{Array, ArrayRef, RecordBatch};
use arrow_schema::{ArrowError, DataType, Field, SchemaRef, TimeUnit};

use crate::catalog::Severity;
use crate::matcher::{Diagnosis, Hit, Matcher};
use crate::records::Text;

/// The table's name.
pub const TABLE: &str = "smtp_sessions";

/// Sessions open at once before the oldest is closed early.
const MAX_OPEN: usize = 200_000;

fn dict() -> DataType {
    DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8))
}

fn ts() -> DataType {
    DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into()))
}

/// The `smtp_sessions` schema.
pub fn schema() -> SchemaRef {
    let f = |name: &str, t: DataType, nullable: bool| Field::new(name, t, nullable);
    let fields = vec![
        f("timestamp", ts(), false),
        f("server", dict(), false),
        f("source_file", dict(), false),
        f("source_offset", DataType::Int64, false),
        f("direction", dict(), true),
        f("connector_id", dict(), true),
        f("session_id", DataType::Utf8, true),
        f("end_time", ts(), false),
        f("duration_ms", DataType::Int64, false),
        f("lines", DataType::Int32, false),
        f("closed", DataType::Boolean, false),
        f("local_ip", DataType::Utf8, true),
        f("local_port", DataType::Int32, true),
        f("remote_ip", DataType::Utf8, true),
        f("remote_port", DataType::Int32, true),
        f("ehlo", DataType::Utf8, true),
        f("starttls_attempted", DataType::Boolean, false),
        f("tls_succeeded", DataType::Boolean, false),
        f("tls_protocol", dict(), true),
        f("tls_cipher", dict(), true),
        f("certificate_subject", DataType::Utf8, true),
        f("certificate_issuer", DataType::Utf8, true),
        f("certificate_serial", DataType::Utf8, true),
        f("certificate_thumbprint", DataType::Utf8, true),
        f("certificate_alternate_names", DataType::Utf8, true),
        // The names of certificate_alternate_names as a list, and the validity period, from
        // either form Exchange logs a certificate in.
        f(
            "certificate_names",
            DataType::List(Arc::new(Field::new("item", DataType::Utf8, true))),
            true,
        ),
        f("certificate_not_before", ts(), true),
        f("certificate_not_after", ts(), true),
        // `1.2` for `SP_PROT_TLS1_2_SERVER`: the protocol version, whichever side logged it.
        f("tls_version", dict(), true),
        // The messages the session carried, as tracking's `message_id`: joins
        // `message_tracking` and `messages` (whose RECEIVE rows name this `session_id`).
        f(
            "message_ids",
            DataType::List(Arc::new(Field::new("item", DataType::Utf8, true))),
            true,
        ),
        f("auth_mechanism", dict(), true),
        f("auth_outcome", dict(), true),
        f("mail_from", DataType::Utf8, true),
        f("recipients", DataType::Int32, false),
        f("messages", DataType::Int32, false),
        f("last_reply", DataType::Utf8, true),
        f("outcome", dict(), false),
    ];
    crate::records::derived_schema(TABLE, fields)
}

#[derive(Debug, Default, Clone)]
struct Session {
    /// `server \0 direction`: whose log's progress times this session out.
    stream: String,
    server: String,
    direction: String,
    connector: String,
    id: String,
    source_file: String,
    first_offset: i64,
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
    tls_protocol: Option<String>,
    tls_cipher: Option<String>,
    cert: [Option<String>; 5],
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

impl Session {
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

/// Groups protocol log rows into sessions; see the module docs.
#[derive(Debug)]
pub struct SessionCorrelator {
    /// By `server \0 direction \0 connector \0 session id`.
    open: HashMap<String, Session>,
    /// Latest time seen per (server, direction): a session idle for longer than the timeout
    /// behind it is closed.
    watermarks: HashMap<String, i64>,
    timeout_ms: i64,
    done: Vec<Session>,
}

impl SessionCorrelator {
    /// A correlator that closes sessions idle for `timeout` (Exchange's own connection
    /// timeouts are minutes; ten is generous).
    pub fn new(timeout: Duration) -> Self {
        SessionCorrelator {
            open: HashMap::new(),
            watermarks: HashMap::new(),
            timeout_ms: i64::try_from(timeout.as_millis()).unwrap_or(i64::MAX),
            done: Vec::new(),
        }
    }

    /// Sessions still open.
    pub fn open_sessions(&self) -> usize {
        self.open.len()
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
        let names = [
            "server",
            "direction",
            "connector_id",
            "session_id",
            "source_file",
            "local_ip",
            "remote_ip",
            "data",
            "context",
            "event",
        ];
        let columns: Vec<Text<'_>> = names.iter().map(|n| Text::of(batch, n)).collect();
        let text = |name: &str, row: usize| {
            names
                .iter()
                .position(|n| *n == name)
                .and_then(|i| columns[i].first(row))
        };
        let (mut key, mut stream) = (String::new(), String::new());
        for row in 0..batch.num_rows() {
            let server = text("server", row).unwrap_or_default();
            let direction = text("direction", row).unwrap_or_default();
            let connector = text("connector_id", row).unwrap_or_default();
            let Some(id) = text("session_id", row).filter(|s| !s.is_empty()) else {
                continue;
            };
            stream.clear();
            stream.push_str(server);
            stream.push('\0');
            stream.push_str(direction);
            key.clear();
            key.push_str(&stream);
            key.push('\0');
            key.push_str(connector);
            key.push('\0');
            key.push_str(id);
            let t = if time.is_valid(row) {
                time.value(row)
            } else {
                0
            };
            let s = self
                .open
                .entry_ref(key.as_str())
                .or_insert_with(|| Session {
                    stream: stream.clone(),
                    server: server.to_string(),
                    direction: direction.to_string(),
                    connector: connector.to_string(),
                    id: id.to_string(),
                    source_file: text("source_file", row).unwrap_or_default().to_string(),
                    first_offset: offsets.value(row),
                    start: t,
                    end: t,
                    ..Session::default()
                });
            s.start = s.start.min(t);
            s.end = s.end.max(t);
            s.lines += 1;
            if s.local_ip.is_none() {
                s.local_ip = text("local_ip", row).map(str::to_string);
                s.local_port = local_port.filter(|a| a.is_valid(row)).map(|a| a.value(row));
                s.remote_ip = text("remote_ip", row).map(str::to_string);
                s.remote_port = remote_port
                    .filter(|a| a.is_valid(row))
                    .map(|a| a.value(row));
            }
            let data = text("data", row).unwrap_or_default();
            let context = text("context", row).unwrap_or_default();
            let reply = replies.filter(|r| r.is_valid(row)).map(|r| r.value(row));
            let event = text("event", row).unwrap_or_default();
            // Which side speaks: on a receive log the client's commands come in (`<`); on a
            // send log we are the client and our commands go out (`>`).
            let command = match (direction, event) {
                ("receive", "receive") | ("send", "send") => Some(data),
                _ => None,
            };
            match event {
                "disconnect" => s.closed = true,
                "information" => observe_remark(s, data, context),
                _ => {}
            }
            if let Some(cmd) = command {
                observe_command(s, cmd);
            } else if let Some(code) = reply.and_then(|c| u16::try_from(c).ok())
                && matches!(event, "send" | "receive")
            {
                s.last_reply = Some(data.to_string());
                if code >= 400 {
                    s.worst_reply = s.worst_reply.max(code);
                }
                if code == 235 {
                    s.auth_outcome = Some("succeeded");
                } else if s.auth_mechanism.is_some() && s.auth_outcome.is_none() && code >= 400 {
                    s.auth_outcome = Some("failed");
                }
                if code == 250 && (data.contains("2.6.0") || data.contains("Queued mail")) {
                    s.messages += 1;
                    // `250 2.6.0 <message id> [InternalId=…] Queued mail for delivery`.
                    if let Some(id) = queued_message_id(data) {
                        s.message_ids.push(id.to_string());
                    }
                }
            }
            if let Some(Some(hit)) = hits.get(row) {
                let sev = matcher.severity(hit.diagnosis);
                let better = s.diagnosis.as_ref().is_none_or(|(best, _, _)| sev > *best);
                if better {
                    let said = if context.is_empty() { data } else { context };
                    s.diagnosis = Some((sev, hit.diagnosis, said.to_string()));
                }
            }
            let mark = self.watermarks.entry_ref(stream.as_str()).or_insert(t);
            *mark = (*mark).max(t);
        }
        self.close_finished();
    }

    fn close_finished(&mut self) {
        let timeout = self.timeout_ms;
        let watermarks = &self.watermarks;
        let mut finished: Vec<String> = self
            .open
            .iter()
            .filter(|(_, s)| {
                s.closed
                    || watermarks
                        .get(s.stream.as_str())
                        .is_some_and(|w| w.saturating_sub(s.end) > timeout)
            })
            .map(|(k, _)| k.clone())
            .collect();
        if self.open.len() - finished.len() > MAX_OPEN {
            let mut by_age: Vec<(&String, i64)> =
                self.open.iter().map(|(k, s)| (k, s.end)).collect();
            by_age.sort_by_key(|(_, end)| *end);
            let excess = self.open.len() - finished.len() - MAX_OPEN;
            finished.extend(by_age.into_iter().take(excess).map(|(k, _)| k.clone()));
        }
        for k in finished {
            if let Some(s) = self.open.remove(&k) {
                self.done.push(s);
            }
        }
    }

    /// Sessions closed so far, as a batch, once there are at least `min` of them.
    pub fn take(
        &mut self,
        matcher: &Matcher,
        min: usize,
    ) -> Result<Option<RecordBatch>, ArrowError> {
        if self.done.is_empty() || self.done.len() < min {
            return Ok(None);
        }
        let mut done = std::mem::take(&mut self.done);
        done.sort_by(|a, b| {
            (&a.source_file, a.first_offset).cmp(&(&b.source_file, b.first_offset))
        });
        build(matcher, &done).map(Some)
    }

    /// Closes every open session (end of input) and returns what is left.
    pub fn finish(&mut self, matcher: &Matcher) -> Result<Option<RecordBatch>, ArrowError> {
        let open: Vec<Session> = self.open.drain().map(|(_, s)| s).collect();
        self.done.extend(open);
        self.take(matcher, 1)
    }
}

fn observe_command(s: &mut Session, cmd: &str) {
    let upper = |n: usize| cmd.get(..n).map(str::to_ascii_uppercase);
    if matches!(upper(5).as_deref(), Some("EHLO " | "HELO ")) {
        s.ehlo = Some(cmd[5..].trim().to_string());
    } else if upper(8).as_deref() == Some("STARTTLS") {
        s.starttls = true;
    } else if upper(5).as_deref() == Some("AUTH ") {
        let mech = cmd[5..].split_whitespace().next().unwrap_or_default();
        s.auth_mechanism = Some(mech.to_ascii_uppercase());
    } else if upper(7).as_deref() == Some("X-EXPS ") {
        let mech = cmd[7..].split_whitespace().next().unwrap_or_default();
        s.auth_mechanism = Some(format!("X-EXPS {}", mech.to_ascii_uppercase()));
    } else if upper(10).as_deref() == Some("MAIL FROM:") {
        let addr = cmd[10..].split_whitespace().next().unwrap_or_default();
        s.mail_from = Some(addr.trim_matches(['<', '>']).to_string());
    } else if upper(8).as_deref() == Some("RCPT TO:") {
        s.recipients += 1;
    }
}

fn observe_remark(s: &mut Session, data: &str, context: &str) {
    if let Some(i) = CERT_ATTRIBUTES.iter().position(|a| *a == context) {
        if !data.is_empty() {
            s.cert[i] = Some(data.to_string());
        }
    } else if context.starts_with("Sending certificate Subject") {
        if let Some(c) = CertificateLine::parse(data) {
            s.cert = [
                Some(c.subject.to_string()),
                c.issuer.map(str::to_string),
                Some(c.serial.to_string()),
                Some(c.thumbprint.to_string()),
                Some(c.names.to_string()).filter(|n| !n.is_empty()),
            ];
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
        if rest.contains("negotiation succeeded") {
            s.tls_ok = true;
            s.tls_protocol = rest.split_whitespace().next().map(str::to_string);
            s.tls_cipher = rest
                .split_once("bulk encryption algorithm ")
                .and_then(|(_, r)| r.split_whitespace().next())
                .map(str::to_string);
        }
    } else if context.starts_with("TLS negotiation failed") {
        s.tls_failed = true;
    } else if context.contains("AUTH") && context.contains("failed") {
        s.auth_outcome = Some("failed");
    }
    if data.starts_with("Failed to connect") {
        s.connect_failed = true;
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
        let time = |t: &str| mailflow_parser::fields::datetime::parse_datetime_ms(t.as_bytes());
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

fn build(matcher: &Matcher, sessions: &[Session]) -> Result<RecordBatch, ArrowError> {
    let n = sessions.len();
    let dict = || StringDictionaryBuilder::<Int32Type>::new();
    let mut start = TimestampMillisecondBuilder::with_capacity(n).with_timezone("UTC");
    let mut end = TimestampMillisecondBuilder::with_capacity(n).with_timezone("UTC");
    let (mut server, mut file, mut direction, mut connector) = (dict(), dict(), dict(), dict());
    let (mut tls_protocol, mut tls_cipher, mut auth_mech, mut auth_out, mut outcome) =
        (dict(), dict(), dict(), dict(), dict());
    let (mut code, mut category, mut severity) = (dict(), dict(), dict());
    let mut offset = Int64Builder::with_capacity(n);
    let mut duration = Int64Builder::with_capacity(n);
    let mut lines = Int32Builder::with_capacity(n);
    let mut closed = BooleanBuilder::with_capacity(n);
    let mut names = ListBuilder::new(StringBuilder::new());
    let mut not_before = TimestampMillisecondBuilder::with_capacity(n).with_timezone("UTC");
    let mut not_after = TimestampMillisecondBuilder::with_capacity(n).with_timezone("UTC");
    let mut version = dict();
    let mut message_ids = ListBuilder::new(StringBuilder::new());
    let mut starttls = BooleanBuilder::with_capacity(n);
    let mut tls_ok = BooleanBuilder::with_capacity(n);
    let mut ports = [
        Int32Builder::with_capacity(n),
        Int32Builder::with_capacity(n),
    ];
    let mut counts = [
        Int32Builder::with_capacity(n),
        Int32Builder::with_capacity(n),
    ];
    let s = || StringBuilder::with_capacity(n, n * 16);
    let mut text: [StringBuilder; 12] = std::array::from_fn(|_| s());
    for x in sessions {
        start.append_value(x.start);
        end.append_value(x.end);
        server.append_value(&x.server);
        file.append_value(&x.source_file);
        offset.append_value(x.first_offset);
        direction.append_option(Some(x.direction.as_str()).filter(|d| !d.is_empty()));
        connector.append_option(Some(x.connector.as_str()).filter(|d| !d.is_empty()));
        text[0].append_value(&x.id);
        duration.append_value(x.end - x.start);
        lines.append_value(x.lines);
        closed.append_value(x.closed);
        text[1].append_option(x.local_ip.as_deref());
        ports[0].append_option(x.local_port);
        text[2].append_option(x.remote_ip.as_deref());
        ports[1].append_option(x.remote_port);
        text[3].append_option(x.ehlo.as_deref());
        starttls.append_value(x.starttls);
        tls_ok.append_value(x.tls_ok);
        tls_protocol.append_option(x.tls_protocol.as_deref());
        tls_cipher.append_option(x.tls_cipher.as_deref());
        for (i, c) in x.cert.iter().enumerate() {
            text[4 + i].append_option(c.as_deref());
        }
        match &x.cert[4] {
            Some(all) => {
                for name in all.split(';').map(str::trim).filter(|n| !n.is_empty()) {
                    names.values().append_value(name);
                }
                names.append(true);
            }
            None => names.append(false),
        }
        not_before.append_option(x.cert_not_before);
        not_after.append_option(x.cert_not_after);
        version.append_option(x.tls_protocol.as_deref().and_then(tls_version));
        for id in &x.message_ids {
            message_ids.values().append_value(id);
        }
        message_ids.append(true);
        auth_mech.append_option(x.auth_mechanism.as_deref());
        auth_out.append_option(x.auth_outcome);
        text[9].append_option(x.mail_from.as_deref());
        counts[0].append_value(x.recipients);
        counts[1].append_value(x.messages);
        text[10].append_option(x.last_reply.as_deref());
        outcome.append_value(x.outcome());
        match &x.diagnosis {
            Some((sev, d, said)) => {
                code.append_value(matcher.code(*d));
                category.append_value(matcher.category(*d));
                severity.append_value(sev.name());
                let mut evidence = said.clone();
                if let Some(t) = &x.cert[3] {
                    evidence.push_str(&format!("; certificate thumbprint {t}"));
                }
                if let Some(subject) = &x.cert[0] {
                    evidence.push_str(&format!("; certificate subject {subject}"));
                }
                if let Some(ip) = &x.remote_ip {
                    evidence.push_str(&format!("; remote {ip}"));
                }
                text[11].append_value(evidence);
            }
            None => {
                code.append_null();
                category.append_null();
                severity.append_null();
                text[11].append_null();
            }
        }
    }
    let [
        id,
        local_ip,
        remote_ip,
        ehlo,
        c0,
        c1,
        c2,
        c3,
        c4,
        mail_from,
        last_reply,
        evidence,
    ] = text.map(|mut b| Arc::new(b.finish()) as ArrayRef);
    let [local_port, remote_port] = ports.map(|mut b| Arc::new(b.finish()) as ArrayRef);
    let [recipients, messages] = counts.map(|mut b| Arc::new(b.finish()) as ArrayRef);
    let columns: Vec<ArrayRef> = vec![
        Arc::new(start.finish()),
        Arc::new(server.finish()),
        Arc::new(file.finish()),
        Arc::new(offset.finish()),
        Arc::new(direction.finish()),
        Arc::new(connector.finish()),
        id,
        Arc::new(end.finish()),
        Arc::new(duration.finish()),
        Arc::new(lines.finish()),
        Arc::new(closed.finish()),
        local_ip,
        local_port,
        remote_ip,
        remote_port,
        ehlo,
        Arc::new(starttls.finish()),
        Arc::new(tls_ok.finish()),
        Arc::new(tls_protocol.finish()),
        Arc::new(tls_cipher.finish()),
        c0,
        c1,
        c2,
        c3,
        c4,
        Arc::new(names.finish()),
        Arc::new(not_before.finish()),
        Arc::new(not_after.finish()),
        Arc::new(version.finish()),
        Arc::new(message_ids.finish()),
        Arc::new(auth_mech.finish()),
        Arc::new(auth_out.finish()),
        mail_from,
        recipients,
        messages,
        last_reply,
        Arc::new(outcome.finish()),
        Arc::new(code.finish()),
        Arc::new(category.finish()),
        Arc::new(severity.finish()),
        evidence,
    ];
    RecordBatch::try_new(schema(), columns)
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn tls_versions_from_schannel_names() {
        assert_eq!(tls_version("SP_PROT_TLS1_2_SERVER"), Some("1.2"));
        assert_eq!(tls_version("SP_PROT_TLS1_3_CLIENT"), Some("1.3"));
        assert_eq!(tls_version("SP_PROT_TLS1_1_CLIENT"), Some("1.1"));
        assert_eq!(tls_version("SP_PROT_TLS1_SERVER"), Some("1.0"));
        assert_eq!(tls_version("SP_PROT_SSL3_CLIENT"), Some("SSL 3.0"));
        assert_eq!(tls_version("unknown"), None);
    }
}
