//! Findings: diagnosed rows gathered per diagnosis code, with where (servers, connectors, remote
//! hosts or domains), when (first and last seen), how often, and the first evidence lines, then
//! ranked by impact. Memory stays bounded whatever the input: each set keeps a few dozen values
//! and counts the rest, and the per-session certificate memory is capped.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use arrow_array::cast::AsArray;
use arrow_array::types::{Int64Type, TimestampMillisecondType};
use arrow_array::{Array, RecordBatch};

use mailflow_parser::Table;

use crate::catalog::Severity;
use crate::matcher::{Diagnosis, Matcher};
use crate::records::{Text, hit_text, text_at};

/// Values kept per set; more are counted, not stored.
const SET_CAP: usize = 32;
/// Evidence lines kept per finding and input (table), so that a finding seen in a queue and in
/// an event log shows both.
const EVIDENCE: usize = 2;
/// Sessions whose certificate is remembered at once.
const SESSION_CAP: usize = 100_000;

/// A bounded set of names.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Names {
    /// Up to a few dozen values, sorted.
    pub values: BTreeSet<String>,
    /// Values seen beyond those kept.
    pub more: u64,
}

impl Names {
    fn add(&mut self, v: &str) {
        if v.is_empty() || self.values.contains(v) {
            return;
        }
        if self.values.len() < SET_CAP {
            self.values.insert(v.to_string());
        } else {
            self.more += 1;
        }
    }
}

/// One log line that shows a finding.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Evidence {
    /// Source file.
    pub file: String,
    /// Byte offset of the line.
    pub offset: i64,
    /// Server.
    pub server: String,
    /// Time, ms since the epoch (UTC).
    pub timestamp: Option<i64>,
    /// The field value that matched.
    pub text: String,
    /// SMTP session id, for protocol log lines.
    pub session: Option<String>,
    /// The table the line is in: which input showed it (a log, an event, a queue snapshot).
    pub input: &'static str,
}

/// One problem found.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Finding {
    /// Stable code.
    pub code: String,
    /// One line.
    pub title: String,
    /// Category.
    pub category: String,
    /// Blast radius.
    pub severity: Severity,
    /// Whether the sender retries (`transient`), gives up (`permanent`), or neither applies.
    pub retry: &'static str,
    /// Lines showing it.
    pub count: u64,
    /// Servers that logged it.
    pub servers: Names,
    /// Connectors involved.
    pub connectors: Names,
    /// Remote hosts, IPs or recipient domains.
    pub remotes: Names,
    /// First time seen (ms, UTC).
    pub first_seen: Option<i64>,
    /// Last time seen.
    pub last_seen: Option<i64>,
    /// The first lines that showed it.
    pub evidence: Vec<Evidence>,
    /// Facts from the same sessions, e.g. `certificate thumbprint`.
    pub facts: BTreeMap<String, Names>,
    /// Probable cause.
    pub cause: String,
    /// What to check.
    pub check: String,
    /// What to do, with evidence filled in where the text leaves a placeholder.
    pub remediation: Vec<String>,
    /// Reference tags.
    pub references: Vec<String>,
    /// Other findings that are probably the root cause of this one.
    pub probably_caused_by: Vec<String>,
    /// Per input (table) that showed it, the servers where it did.
    pub seen_in: BTreeMap<String, Names>,
    /// Findings folded into this one: the same problem seen as its consequence on the same
    /// servers and remote hosts (a queue's `421 4.4.1` behind this send connector's TLS
    /// failure), with their own evidence kept in `evidence`.
    pub also_seen_as: Vec<AlsoSeen>,
    /// From the rule: codes that would explain this finding, and whether it ends retrying.
    #[serde(skip)]
    causes: (Vec<String>, bool),
}

/// A consequence folded into its cause (see [`Finding::also_seen_as`]).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct AlsoSeen {
    /// Its code.
    pub code: String,
    /// Its title.
    pub title: String,
    /// Its lines.
    pub count: u64,
}

#[derive(Debug, Default, Clone)]
struct Cert {
    subject: Option<String>,
    thumbprint: Option<String>,
}

/// Accumulates findings over batches.
#[derive(Debug, Default)]
pub struct Findings {
    by: HashMap<Diagnosis, Finding>,
    rows: u64,
    sessions: HashMap<(String, String), Cert>,
}

impl Findings {
    /// Nothing yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Rows looked at.
    pub fn rows(&self) -> u64 {
        self.rows
    }

    /// Adds a batch of `table`.
    pub fn add(&mut self, matcher: &Matcher, table: Table, batch: &RecordBatch) {
        self.rows += batch.num_rows() as u64;
        let hits = matcher.classify(table, batch);
        let smtp = table == Table::SmtpProtocol;
        let ts = batch
            .column_by_name("timestamp")
            .map(|c| c.as_primitive::<TimestampMillisecondType>());
        let offsets = batch
            .column_by_name("source_offset")
            .map(|c| c.as_primitive::<Int64Type>());
        // Columns read on every row are looked up once per batch.
        let [
            server_col,
            session_col,
            context_col,
            data_col,
            connector_col,
        ] = ["server", "session_id", "context", "data", "connector_id"].map(|n| Text::of(batch, n));
        let remote_col = Text::of(
            batch,
            match table {
                Table::SmtpProtocol => "remote_ip",
                Table::Connectivity => "destination",
                Table::QueueSnapshots => "last_error_ip",
                Table::TransportEvents => "",
                _ => "recipient_address",
            },
        );
        for (row, hit) in hits.iter().enumerate() {
            let session = if smtp { session_col.first(row) } else { None };
            let server = server_col.first(row).unwrap_or_default();
            if let Some(session) = session
                && let Some(context) = context_col.first(row)
            {
                self.remember_certificate(server, session, context, data_col.first(row));
            }
            let Some(hit) = hit else { continue };
            let f = self
                .by
                .entry(hit.diagnosis)
                .or_insert_with(|| new_finding(matcher, hit.diagnosis));
            f.count += 1;
            f.servers.add(server);
            f.seen_in
                .entry(table.name().to_string())
                .or_default()
                .add(server);
            f.connectors
                .add(connector_col.first(row).unwrap_or_default());
            let remote = remote_col.first(row).unwrap_or_default();
            match table {
                Table::SmtpProtocol | Table::Connectivity | Table::QueueSnapshots => {
                    f.remotes.add(remote)
                }
                Table::TransportEvents => {}
                // The recipient's domain.
                _ => f
                    .remotes
                    .add(remote.rsplit_once('@').map_or("", |(_, d)| d)),
            }
            let t = ts.filter(|a| a.is_valid(row)).map(|a| a.value(row));
            if let Some(t) = t {
                f.first_seen = Some(f.first_seen.map_or(t, |x| x.min(t)));
                f.last_seen = Some(f.last_seen.map_or(t, |x| x.max(t)));
            }
            let input = table.name();
            if f.evidence.iter().filter(|e| e.input == input).count() < EVIDENCE {
                let text = evidence_text(table, batch, row, hit);
                f.evidence.push(Evidence {
                    file: text_at(batch, "source_file", row)
                        .unwrap_or_default()
                        .to_string(),
                    offset: offsets.map_or(0, |o| o.value(row)),
                    server: server.to_string(),
                    timestamp: t,
                    text,
                    session: session.map(str::to_string),
                    input,
                });
            }
            // The certificate a session presented is evidence for certificate problems only.
            let about_certificates = matches!(f.category.as_str(), "TLS" | "CERT" | "HYBRID");
            if let Some(s) = session.filter(|_| about_certificates)
                && let Some(cert) = self.sessions.get(&(server.to_string(), s.to_string()))
            {
                if let Some(t) = &cert.thumbprint {
                    f.facts
                        .entry("certificate thumbprint".into())
                        .or_default()
                        .add(t);
                }
                if let Some(s) = &cert.subject {
                    f.facts
                        .entry("certificate subject".into())
                        .or_default()
                        .add(s);
                }
            }
        }
    }

    /// Send logs name the certificate a session presented on `*` lines before the TLS outcome.
    fn remember_certificate(
        &mut self,
        server: &str,
        session: &str,
        context: &str,
        data: Option<&str>,
    ) {
        let attribute = match context {
            "Certificate thumbprint" => 0,
            "Certificate subject" => 1,
            _ => return,
        };
        let Some(value) = data.filter(|v| !v.is_empty()) else {
            return;
        };
        if self.sessions.len() >= SESSION_CAP {
            self.sessions.clear();
        }
        let cert = self
            .sessions
            .entry((server.to_string(), session.to_string()))
            .or_default();
        if attribute == 0 {
            cert.thumbprint = Some(value.to_string());
        } else {
            cert.subject = Some(value.to_string());
        }
    }

    /// The findings, most severe and most frequent first, with probable root causes linked.
    pub fn ranked(self) -> Vec<Finding> {
        let mut out: Vec<Finding> = self.by.into_values().collect();
        out.sort_by(|a, b| {
            b.severity
                .cmp(&a.severity)
                .then(b.count.cmp(&a.count))
                .then(a.code.cmp(&b.code))
        });
        let mut out = fold_consequences(out);
        link_causes(&mut out);
        for f in &mut out {
            fill_placeholders(f);
        }
        out
    }
}

fn new_finding(matcher: &Matcher, d: Diagnosis) -> Finding {
    let rule = matcher.rule(d);
    Finding {
        code: matcher.code(d),
        title: matcher.title(d).to_string(),
        category: matcher.category(d).to_string(),
        severity: matcher.severity(d),
        retry: match (rule.map(|r| r.retry), d) {
            (Some(crate::catalog::Retry::Transient), _) | (None, Diagnosis::Esc(4, ..)) => "transient",
            (Some(crate::catalog::Retry::Permanent), _) | (None, Diagnosis::Esc(5, ..)) => "permanent",
            (Some(crate::catalog::Retry::Either), _) => "either",
            _ => "n/a",
        },
        count: 0,
        servers: Names::default(),
        connectors: Names::default(),
        remotes: Names::default(),
        first_seen: None,
        last_seen: None,
        evidence: Vec::new(),
        facts: BTreeMap::new(),
        cause: rule.map_or_else(
            || "The remote side answered with this enhanced status code; no rule names it more precisely.".into(),
            |r| r.cause.clone(),
        ),
        check: rule.map_or_else(
            || "The full reply text and the remote host; whether it repeats for one destination or all.".into(),
            |r| r.evidence.clone(),
        ),
        remediation: rule.map_or_else(
            || vec!["Act on the reply text; the owner follows from the code's subject (1, 2: sender or recipient; 3, 4: remote admin or network; 7: policy).".into()],
            |r| r.remediation.clone(),
        ),
        references: rule.map_or_else(|| vec!["IANA".into(), "RFC3463".into()], |r| r.references.clone()),
        probably_caused_by: Vec::new(),
        seen_in: BTreeMap::new(),
        also_seen_as: Vec::new(),
        causes: rule.map_or_else(Default::default, |r| (r.probable_causes.clone(), r.after_retries)),
    }
}

/// Links findings to their probable root causes on the same servers, as the catalog says: the
/// codes a rule lists in `probable_causes` (timeouts behind a certificate failure, the
/// discriminator for `421 4.4.1`), or, for a rule that ends retrying (`after_retries`, an
/// expired message), every transient finding.
fn link_causes(findings: &mut [Finding]) {
    let found: Vec<(String, bool, BTreeSet<String>)> = findings
        .iter()
        .map(|f| {
            let transient = matches!(f.retry, "transient" | "either");
            (f.code.clone(), transient, f.servers.values.clone())
        })
        .collect();
    for f in findings.iter_mut() {
        let (named, after_retries) = &f.causes;
        for (code, transient, servers) in &found {
            let explains = named.contains(code) || (*after_retries && *transient);
            if explains && code != &f.code && !servers.is_disjoint(&f.servers.values) {
                f.probably_caused_by.push(code.clone());
            }
        }
    }
}

fn fill_placeholders(f: &mut Finding) {
    let first = |n: &Names| n.values.iter().next().cloned();
    let thumb = f.facts.get("certificate thumbprint").and_then(first);
    let connector = first(&f.connectors);
    let remote = first(&f.remotes);
    for step in f
        .remediation
        .iter_mut()
        .chain(std::iter::once(&mut f.check))
    {
        if let Some(t) = &thumb {
            *step = step.replace("<t>", t);
        }
        if let Some(c) = &connector {
            *step = step.replace("<name>", c);
        }
        if let Some(ip) = &remote {
            *step = step.replace("<ip>", ip);
        }
    }
}

impl Names {
    fn merge(&mut self, other: Names) {
        self.more += other.more;
        for v in other.values {
            self.add(&v);
        }
    }
}

impl Findings {
    /// Adds another worker's findings (workers read different files).
    pub fn merge(&mut self, other: Findings) {
        self.rows += other.rows;
        for (d, f) in other.by {
            match self.by.get_mut(&d) {
                None => {
                    self.by.insert(d, f);
                }
                Some(mine) => {
                    mine.count += f.count;
                    mine.servers.merge(f.servers);
                    mine.connectors.merge(f.connectors);
                    mine.remotes.merge(f.remotes);
                    mine.first_seen = min_opt(mine.first_seen, f.first_seen);
                    mine.last_seen = mine.last_seen.max(f.last_seen);
                    mine.evidence.extend(f.evidence);
                    keep_evidence(&mut mine.evidence);
                    for (input, servers) in f.seen_in {
                        mine.seen_in.entry(input).or_default().merge(servers);
                    }
                    for (k, v) in f.facts {
                        mine.facts.entry(k).or_default().merge(v);
                    }
                }
            }
        }
    }
}

fn min_opt(a: Option<i64>, b: Option<i64>) -> Option<i64> {
    match (a, b) {
        (Some(x), Some(y)) => Some(x.min(y)),
        (x, None) | (None, x) => x,
    }
}

/// Keeps the first [`EVIDENCE`] lines of each input, oldest first.
fn keep_evidence(evidence: &mut Vec<Evidence>) {
    evidence.sort_by_key(|e| e.timestamp);
    let mut per_input: BTreeMap<&'static str, usize> = BTreeMap::new();
    evidence.retain(|e| {
        let n = per_input.entry(e.input).or_default();
        *n += 1;
        *n <= EVIDENCE
    });
}

/// The line a finding quotes: the text that matched, or for a Windows event or a queue, what
/// identifies it and what it says.
fn evidence_text(
    table: Table,
    batch: &RecordBatch,
    row: usize,
    hit: &crate::matcher::Hit,
) -> String {
    let matched = hit_text(batch, row, hit);
    match table {
        Table::TransportEvents => {
            let id = batch
                .column_by_name("event_id")
                .and_then(|c| c.as_primitive_opt::<arrow_array::types::Int32Type>())
                .filter(|c| c.is_valid(row))
                .map(|c| c.value(row).to_string())
                .unwrap_or_default();
            let provider = text_at(batch, "provider", row).unwrap_or_default();
            let said = matched
                .or_else(|| text_at(batch, "description", row).map(str::to_string))
                .or_else(|| {
                    let list = batch
                        .column_by_name("insertion_strings")?
                        .as_list_opt::<i32>()?
                        .value(row);
                    let values = list.as_string_opt::<i32>()?;
                    Some(values.iter().flatten().collect::<Vec<_>>().join(" | "))
                })
                .unwrap_or_default();
            format!("event {id} ({provider}): {said}")
        }
        Table::QueueSnapshots => {
            let identity = text_at(batch, "identity", row).unwrap_or_default();
            let status = text_at(batch, "status", row).unwrap_or_default();
            let count = batch
                .column_by_name("message_count")
                .and_then(|c| c.as_primitive_opt::<Int64Type>())
                .filter(|c| c.is_valid(row))
                .map(|c| format!(", {} messages", c.value(row)))
                .unwrap_or_default();
            format!(
                "queue {identity} ({status}{count}): {}",
                matched.unwrap_or_default()
            )
        }
        _ => matched
            .or_else(|| text_at(batch, "event_id", row).map(str::to_string))
            .unwrap_or_default(),
    }
}

/// Folds each finding into a probable root cause (the rule's `probable_causes`) found on the
/// same servers and the same remote hosts, so one problem seen from two inputs, or as cause and
/// consequence, is one finding with all its evidence. Remote hosts must meet when both name
/// any: a timeout to one partner is not explained by a certificate failure towards another.
fn fold_consequences(mut findings: Vec<Finding>) -> Vec<Finding> {
    let mut folded = vec![false; findings.len()];
    for i in 0..findings.len() {
        let target = (0..findings.len()).find(|&j| {
            let (x, y) = (&findings[i], &findings[j]);
            j != i
                && !folded[j]
                && x.causes.0.contains(&y.code)
                && x.servers.more == 0
                && !x.servers.values.is_empty()
                && x.servers.values.is_subset(&y.servers.values)
                && !x.remotes.values.is_empty()
                && !y.remotes.values.is_disjoint(&x.remotes.values)
        });
        let Some(j) = target else { continue };
        folded[i] = true;
        let x = findings[i].clone();
        let y = &mut findings[j];
        y.also_seen_as.push(AlsoSeen {
            code: x.code,
            title: x.title,
            count: x.count,
        });
        // What was folded into the consequence comes along (a chain of consequences).
        y.also_seen_as.extend(x.also_seen_as);
        y.remotes.merge(x.remotes);
        y.connectors.merge(x.connectors);
        y.evidence.extend(x.evidence);
        keep_evidence(&mut y.evidence);
        for (input, servers) in x.seen_in {
            y.seen_in.entry(input).or_default().merge(servers);
        }
        y.first_seen = min_opt(y.first_seen, x.first_seen);
        y.last_seen = y.last_seen.max(x.last_seen);
    }
    findings
        .into_iter()
        .zip(folded)
        .filter_map(|(f, gone)| (!gone).then_some(f))
        .collect()
}
