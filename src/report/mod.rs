//! `mailflow report`: a period's trends, read from the lake with the embedded SQL engine, as one
//! self-contained HTML page ([`html`]) or as the same aggregates in JSON or CSV.
//!
//! Every number is defined here, in the SQL that computes it or in the few lines that finish it
//! (weeks, trends, percentiles' ranks), so that the report can be checked against another
//! engine (the tests do, with DuckDB) and explained to a reader (the page says what it counts).

mod html;
mod svg;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use arrow_array::cast::AsArray;
use arrow_array::types::{Int64Type, UInt64Type};
use arrow_array::{Array, RecordBatch};
use arrow_schema::DataType;
use chrono::{Datelike, NaiveDate};
use futures::StreamExt;
use mailflow_enrich::Matcher;
use mailflow_enrich::findings::Findings;
use mailflow_parser::Table;
use serde::Serialize;

use crate::lakesql::{self, Lake, Scope};

pub use html::render as render_html;

/// Diagnosis codes followed week by week.
const TOP_CODES: usize = 10;
/// Findings shown.
const FINDINGS: usize = 20;

/// What to report on.
#[derive(Debug, Clone)]
pub struct ReportOptions {
    /// The lake's root.
    pub lake: PathBuf,
    /// Days and servers.
    pub scope: Scope,
}

/// The report's aggregates: what the page draws and `--format json` writes.
#[derive(Debug, Clone, Serialize)]
pub struct ReportData {
    /// When it was made (UTC).
    pub generated: String,
    /// What was read.
    pub input: Input,
    /// Mail volume per day and server (message tracking events).
    pub volume: Vec<Volume>,
    /// Failure and deferral rates per day (messages).
    pub rates: Vec<Rates>,
    /// The weeks of the period (their Mondays), oldest first.
    pub weeks: Vec<String>,
    /// The most frequent diagnosis codes, with a count per week and a trend.
    pub codes: Vec<CodeTrend>,
    /// Recipient domains with the most failed and deferred events.
    pub domains: Vec<Domain>,
    /// Connectors with the most failed and deferred sessions.
    pub connectors: Vec<Connector>,
    /// Sessions that negotiated TLS, per day and version.
    pub tls_versions: Vec<TlsVersion>,
    /// STARTTLS attempts and failures, and certificate and TLS diagnoses, per day.
    pub tls_problems: Vec<TlsProblems>,
    /// The cipher suites negotiated most.
    pub ciphers: Vec<Cipher>,
    /// Certificates seen in sessions, soonest to expire first.
    pub certificates: Vec<Certificate>,
    /// Delivered messages' latency percentiles per day.
    pub latency: Vec<Latency>,
    /// The period's findings, ranked as `mailflow diagnose` ranks them.
    pub findings: Vec<FindingSummary>,
}

/// The report's input.
#[derive(Debug, Clone, Serialize)]
pub struct Input {
    /// The lake.
    pub lake: String,
    /// First day asked for (`--since`).
    pub since: Option<String>,
    /// Last day asked for (`--until`).
    pub until: Option<String>,
    /// Servers asked for (`--server`); empty for all.
    pub servers_asked: Vec<String>,
    /// First and last day holding rows.
    pub first_day: Option<String>,
    /// Last day holding rows.
    pub last_day: Option<String>,
    /// Servers holding rows.
    pub servers: Vec<String>,
    /// Per table: files, rows, bytes read.
    pub tables: Vec<TableInput>,
    /// Files left out, with why.
    pub unreadable: Vec<Unreadable>,
}

/// One table's part of the input.
#[derive(Debug, Clone, Serialize)]
pub struct TableInput {
    /// The table.
    pub table: &'static str,
    /// Files.
    pub files: u64,
    /// Rows (from the files' footers).
    pub rows: u64,
    /// Bytes on disk.
    pub bytes: u64,
}

/// A file left out.
#[derive(Debug, Clone, Serialize)]
pub struct Unreadable {
    /// Its path.
    pub path: String,
    /// Why.
    pub reason: String,
}

/// `message_tracking` events of one day on one server.
#[derive(Debug, Clone, Serialize)]
pub struct Volume {
    pub date: String,
    pub server: String,
    /// `RECEIVE` events.
    pub received: u64,
    /// `SEND` events.
    pub sent: u64,
    /// `DELIVER` events.
    pub delivered: u64,
    /// `FAIL` events.
    pub failed: u64,
    /// `DEFER` events.
    pub deferred: u64,
}

/// `messages` first seen on one day.
#[derive(Debug, Clone, Serialize)]
pub struct Rates {
    pub date: String,
    pub messages: u64,
    /// `failed` or `partially_failed`.
    pub failed: u64,
    /// `deferred`.
    pub deferred: u64,
    /// failed / messages.
    pub failure_rate: f64,
    /// deferred / messages.
    pub deferral_rate: f64,
}

/// One diagnosis code over the period.
#[derive(Debug, Clone, Serialize)]
pub struct CodeTrend {
    pub code: String,
    pub title: String,
    pub severity: String,
    /// Diagnosed log records (all servers, all raw tables).
    pub total: u64,
    /// Per week of [`ReportData::weeks`].
    pub per_week: Vec<u64>,
    /// `new`, `growing`, `fading`, `steady`, or `-` when the period is one week.
    pub trend: &'static str,
    /// What to do, from the catalog.
    pub remediation: Vec<String>,
}

/// A recipient domain's failed and deferred events.
#[derive(Debug, Clone, Serialize)]
pub struct Domain {
    pub domain: String,
    pub failed: u64,
    pub deferred: u64,
}

/// A connector's sessions.
#[derive(Debug, Clone, Serialize)]
pub struct Connector {
    pub direction: String,
    pub connector: String,
    pub sessions: u64,
    pub failed: u64,
    pub deferred: u64,
}

/// Sessions that negotiated a TLS version on a day.
#[derive(Debug, Clone, Serialize)]
pub struct TlsVersion {
    pub date: String,
    pub version: String,
    pub sessions: u64,
}

/// A day's TLS trouble.
#[derive(Debug, Clone, Serialize)]
pub struct TlsProblems {
    pub date: String,
    /// Sessions that sent STARTTLS.
    pub starttls: u64,
    /// Of those, sessions where TLS was not negotiated.
    pub tls_failed: u64,
    /// Records diagnosed with a `TLS.` or `CERT.` code.
    pub certificate_diagnoses: u64,
}

/// A cipher suite's sessions.
#[derive(Debug, Clone, Serialize)]
pub struct Cipher {
    pub suite: String,
    pub sessions: u64,
}

/// A certificate seen on a connector.
#[derive(Debug, Clone, Serialize)]
pub struct Certificate {
    pub direction: String,
    pub connector: String,
    pub thumbprint: String,
    pub subject: Option<String>,
    /// End of validity (UTC).
    pub not_after: Option<String>,
    /// Days from the period's last day to `not_after` (negative: expired).
    pub days_left: Option<i64>,
    pub sessions: u64,
    pub first_seen: Option<String>,
    pub last_seen: Option<String>,
}

/// Delivered messages' latency on a day (nearest-rank percentiles).
#[derive(Debug, Clone, Serialize)]
pub struct Latency {
    pub date: String,
    pub messages: u64,
    pub p50_ms: i64,
    pub p95_ms: i64,
    pub p99_ms: i64,
}

/// A finding, as the report lists it.
#[derive(Debug, Clone, Serialize)]
pub struct FindingSummary {
    pub code: String,
    pub title: String,
    pub severity: String,
    pub count: u64,
    pub servers: Vec<String>,
    pub remotes: Vec<String>,
    pub first_seen: Option<String>,
    pub last_seen: Option<String>,
    pub cause: String,
    pub remediation: Vec<String>,
    pub evidence: Vec<String>,
    pub also_seen_as: Vec<String>,
}

/// Makes the report's aggregates.
pub fn build(opts: &ReportOptions, matcher: &Arc<Matcher>) -> Result<ReportData> {
    if let (Some(s), Some(u)) = (opts.scope.since, opts.scope.until)
        && s > u
    {
        bail!("--since {s} is after --until {u}");
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the report's runtime")?;
    // Opened before the runtime starts: a Delta lake's client blocks on a runtime of its own.
    let (lake, surveys) = lakesql::open(&opts.lake, &opts.scope, true)?;
    runtime.block_on(build_async(opts, matcher, lake, surveys))
}

async fn build_async(
    opts: &ReportOptions,
    matcher: &Arc<Matcher>,
    lake: Lake,
    surveys: Vec<(&'static str, lakesql::Survey)>,
) -> Result<ReportData> {
    let (extent, servers) = lakesql::extent(&surveys);
    let input = Input {
        lake: opts.lake.display().to_string(),
        since: opts.scope.since.map(|d| d.to_string()),
        until: opts.scope.until.map(|d| d.to_string()),
        servers_asked: opts.scope.servers.clone(),
        first_day: extent.map(|e| e.0.to_string()),
        last_day: extent.map(|e| e.1.to_string()),
        servers: servers.into_iter().collect(),
        tables: surveys
            .iter()
            .map(|(table, s)| TableInput {
                table,
                files: s.files.len() as u64,
                rows: s.files.iter().map(|f| f.rows).sum(),
                bytes: s.files.iter().map(|f| f.bytes).sum(),
            })
            .collect(),
        unreadable: surveys
            .iter()
            .flat_map(|(_, s)| &s.unreadable)
            .map(|(p, why)| Unreadable {
                path: p.display().to_string(),
                reason: why.clone(),
            })
            .collect(),
    };
    // The period the page draws: what was asked, narrowed to the days that hold rows.
    let first = opts.scope.since.max(extent.map(|e| e.0));
    let last = match (opts.scope.until, extent.map(|e| e.1)) {
        (Some(u), Some(l)) => Some(u.min(l)),
        (u, l) => u.or(l),
    };

    let volume = rows(&lake, VOLUME_SQL)
        .await?
        .iter()
        .map(|r| Volume {
            date: r.text(0),
            server: r.text(1),
            received: r.count(2),
            sent: r.count(3),
            delivered: r.count(4),
            failed: r.count(5),
            deferred: r.count(6),
        })
        .collect();
    let rates = rows(&lake, RATES_SQL)
        .await?
        .iter()
        .map(|r| {
            let (messages, failed, deferred) = (r.count(1), r.count(2), r.count(3));
            let share = |n: u64| {
                if messages == 0 {
                    0.0
                } else {
                    n as f64 / messages as f64
                }
            };
            Rates {
                date: r.text(0),
                messages,
                failed,
                deferred,
                failure_rate: share(failed),
                deferral_rate: share(deferred),
            }
        })
        .collect();

    let per_day_codes: Vec<(String, NaiveDate, u64)> = rows(&lake, &codes_sql())
        .await?
        .iter()
        .filter_map(|r| Some((r.text(0), parse_day(&r.text(1))?, r.count(2))))
        .collect();
    let weeks = match (first, last) {
        (Some(a), Some(b)) => weeks_between(a, b),
        _ => Vec::new(),
    };
    let codes = code_trends(&per_day_codes, &weeks, first, last, matcher);

    let domains = rows(&lake, DOMAINS_SQL)
        .await?
        .iter()
        .map(|r| Domain {
            domain: r.text(0),
            failed: r.count(1),
            deferred: r.count(2),
        })
        .collect();
    let connectors = rows(&lake, CONNECTORS_SQL)
        .await?
        .iter()
        .map(|r| Connector {
            direction: r.text(0),
            connector: r.text(1),
            sessions: r.count(2),
            failed: r.count(3),
            deferred: r.count(4),
        })
        .collect();
    let tls_versions = rows(&lake, TLS_VERSIONS_SQL)
        .await?
        .iter()
        .map(|r| TlsVersion {
            date: r.text(0),
            version: r.text(1),
            sessions: r.count(2),
        })
        .collect();
    let mut cert_per_day: BTreeMap<String, u64> = BTreeMap::new();
    for (code, day, n) in &per_day_codes {
        if code.starts_with("TLS.") || code.starts_with("CERT.") {
            *cert_per_day.entry(day.to_string()).or_default() += n;
        }
    }
    let mut tls_problems: BTreeMap<String, TlsProblems> = BTreeMap::new();
    for r in rows(&lake, STARTTLS_SQL).await? {
        let date = r.text(0);
        tls_problems.insert(
            date.clone(),
            TlsProblems {
                date,
                starttls: r.count(1),
                tls_failed: r.count(2),
                certificate_diagnoses: 0,
            },
        );
    }
    for (date, n) in cert_per_day {
        tls_problems
            .entry(date.clone())
            .or_insert_with(|| TlsProblems {
                date,
                starttls: 0,
                tls_failed: 0,
                certificate_diagnoses: 0,
            })
            .certificate_diagnoses = n;
    }
    let ciphers = rows(&lake, CIPHERS_SQL)
        .await?
        .iter()
        .map(|r| Cipher {
            suite: r.text(0),
            sessions: r.count(1),
        })
        .collect();
    let certificates = rows(&lake, CERTIFICATES_SQL)
        .await?
        .iter()
        .map(|r| {
            let not_after = r.int(4);
            Certificate {
                direction: r.text(0),
                connector: r.text(1),
                thumbprint: r.text(2),
                subject: r.opt_text(3),
                not_after: not_after.and_then(iso),
                days_left: not_after.zip(last).map(|(t, day)| days_left(t, day)),
                sessions: r.count(5),
                first_seen: r.int(6).and_then(iso),
                last_seen: r.int(7).and_then(iso),
            }
        })
        .collect();
    let latency = rows(&lake, LATENCY_SQL)
        .await?
        .iter()
        .map(|r| Latency {
            date: r.text(0),
            messages: r.count(1),
            p50_ms: r.int(2).unwrap_or_default(),
            p95_ms: r.int(3).unwrap_or_default(),
            p99_ms: r.int(4).unwrap_or_default(),
        })
        .collect();
    let findings = findings(&lake, matcher).await?;
    Ok(ReportData {
        generated: chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string(),
        input,
        volume,
        rates,
        weeks: weeks.iter().map(NaiveDate::to_string).collect(),
        codes,
        domains,
        connectors,
        tls_versions,
        tls_problems: tls_problems.into_values().collect(),
        ciphers,
        certificates,
        latency,
        findings,
    })
}

const VOLUME_SQL: &str = "
SELECT CAST(date AS VARCHAR) AS day, server,
  sum(CASE WHEN event_id = 'RECEIVE' THEN 1 ELSE 0 END) AS received,
  sum(CASE WHEN event_id = 'SEND' THEN 1 ELSE 0 END) AS sent,
  sum(CASE WHEN event_id = 'DELIVER' THEN 1 ELSE 0 END) AS delivered,
  sum(CASE WHEN event_id = 'FAIL' THEN 1 ELSE 0 END) AS failed,
  sum(CASE WHEN event_id = 'DEFER' THEN 1 ELSE 0 END) AS deferred
FROM message_tracking GROUP BY date, server ORDER BY date, server";

const RATES_SQL: &str = "
SELECT CAST(date AS VARCHAR) AS day, count(*) AS messages,
  sum(CASE WHEN status IN ('failed', 'partially_failed') THEN 1 ELSE 0 END) AS failed,
  sum(CASE WHEN status = 'deferred' THEN 1 ELSE 0 END) AS deferred
FROM messages GROUP BY date ORDER BY date";

/// Diagnosed records per code and day, over the raw tables the catalog diagnoses.
fn codes_sql() -> String {
    let parts: Vec<String> = mailflow_enrich::catalog::DIAGNOSED
        .iter()
        .map(|t| {
            format!(
                "SELECT diagnosis_code AS code, date FROM {} WHERE diagnosis_code IS NOT NULL",
                t.name()
            )
        })
        .collect();
    format!(
        "SELECT code, CAST(date AS VARCHAR) AS day, count(*) AS records FROM ({}) AS d GROUP BY code, date ORDER BY code, date",
        parts.join(" UNION ALL ")
    )
}

const DOMAINS_SQL: &str = "
SELECT * FROM (SELECT domain, sum(failed) AS failed, sum(deferred) AS deferred FROM (
  SELECT lower(split_part(r, '@', 2)) AS domain,
    CASE WHEN event_id = 'FAIL' THEN 1 ELSE 0 END AS failed,
    CASE WHEN event_id = 'DEFER' THEN 1 ELSE 0 END AS deferred
  FROM (SELECT event_id, unnest(recipient_address) AS r FROM message_tracking
        WHERE event_id IN ('FAIL', 'DEFER')) AS u
) AS d WHERE domain <> ''
GROUP BY domain) AS g ORDER BY failed + deferred DESC, domain LIMIT 15";

const CONNECTORS_SQL: &str = "
SELECT * FROM (SELECT direction, connector, count(*) AS sessions, sum(failed) AS failed, sum(deferred) AS deferred FROM (
  SELECT coalesce(CAST(direction AS VARCHAR), '') AS direction,
    coalesce(CAST(connector_id AS VARCHAR), '') AS connector,
    CASE WHEN outcome = 'failed' THEN 1 ELSE 0 END AS failed,
    CASE WHEN outcome = 'deferred' THEN 1 ELSE 0 END AS deferred
  FROM smtp_sessions) AS s
GROUP BY direction, connector) AS g WHERE failed + deferred > 0
ORDER BY failed + deferred DESC, direction, connector LIMIT 15";

const TLS_VERSIONS_SQL: &str = "
SELECT CAST(date AS VARCHAR) AS day, coalesce(CAST(tls_version AS VARCHAR), 'unknown') AS v, count(*) AS sessions
FROM smtp_sessions WHERE tls_succeeded GROUP BY date, v ORDER BY date, v";

const STARTTLS_SQL: &str = "
SELECT CAST(date AS VARCHAR) AS day,
  sum(CASE WHEN starttls_attempted THEN 1 ELSE 0 END) AS starttls,
  sum(CASE WHEN starttls_attempted AND NOT tls_succeeded THEN 1 ELSE 0 END) AS tls_failed
FROM smtp_sessions GROUP BY date ORDER BY date";

const CIPHERS_SQL: &str = "
SELECT coalesce(CAST(tls_cipher_suite AS VARCHAR), 'unknown') AS suite, count(*) AS sessions
FROM smtp_sessions WHERE tls_succeeded GROUP BY suite ORDER BY sessions DESC, suite LIMIT 10";

const CERTIFICATES_SQL: &str = "
SELECT * FROM (SELECT direction, connector, thumbprint, max(subject) AS subject, max(not_after) AS not_after,
  count(*) AS sessions, min(t) AS first_seen, max(t) AS last_seen FROM (
  SELECT coalesce(CAST(direction AS VARCHAR), '') AS direction,
    coalesce(CAST(connector_id AS VARCHAR), '') AS connector,
    CAST(certificate_thumbprint AS VARCHAR) AS thumbprint,
    CAST(certificate_subject AS VARCHAR) AS subject,
    CAST(certificate_not_after AS BIGINT) AS not_after,
    CAST(timestamp AS BIGINT) AS t
  FROM smtp_sessions WHERE certificate_thumbprint IS NOT NULL) AS c
GROUP BY direction, connector, thumbprint) AS g
ORDER BY not_after NULLS LAST, direction, connector, thumbprint LIMIT 50";

/// Nearest-rank percentiles: the p-th is the value at rank ceil(p * n / 100) in ascending
/// order, computed in integers so that no engine's rounding can move it.
const LATENCY_SQL: &str = "
SELECT CAST(date AS VARCHAR) AS day, max(n) AS messages,
  max(CASE WHEN rn = (n * 50 + 99) / 100 THEN ms END) AS p50,
  max(CASE WHEN rn = (n * 95 + 99) / 100 THEN ms END) AS p95,
  max(CASE WHEN rn = (n * 99 + 99) / 100 THEN ms END) AS p99
FROM (
  SELECT date, ms,
    row_number() OVER (PARTITION BY date ORDER BY ms) AS rn,
    count(*) OVER (PARTITION BY date) AS n
  FROM (SELECT date, coalesce(e2e_latency_ms, latency_ms) AS ms FROM messages
        WHERE status = 'delivered') AS d
) AS r
GROUP BY date ORDER BY date";

/// The period's diagnosed records, gathered into findings as `diagnose` gathers them. The send
/// log lines naming the certificate of a session that failed come first in each file, so the
/// findings name the certificate as `diagnose` does.
async fn findings(lake: &Lake, matcher: &Arc<Matcher>) -> Result<Vec<FindingSummary>> {
    let mut all = Findings::new();
    for table in mailflow_enrich::catalog::DIAGNOSED {
        let name = table.name();
        let sql = if table == Table::SmtpProtocol {
            format!(
                "SELECT * FROM {name} AS p WHERE diagnosis_code IS NOT NULL OR (context IN \
                 ('Certificate thumbprint', 'Certificate subject') AND EXISTS (SELECT 1 FROM {name} \
                 AS d WHERE d.diagnosis_code IS NOT NULL AND d.server = p.server \
                 AND d.session_id = p.session_id)) ORDER BY server, source_file, source_offset"
            )
        } else {
            format!("SELECT * FROM {name} WHERE diagnosis_code IS NOT NULL")
        };
        let frame = lake
            .ctx
            .sql(&sql)
            .await
            .with_context(|| format!("reading {name}"))?;
        let mut stream = frame.execute_stream().await?;
        while let Some(batch) = stream.next().await {
            all.add(matcher, table, &batch?);
        }
    }
    let time = |ms: Option<i64>| ms.and_then(iso);
    Ok(all
        .ranked()
        .into_iter()
        .take(FINDINGS)
        .map(|f| FindingSummary {
            severity: f.severity.name().to_string(),
            count: f.count,
            servers: names(&f.servers),
            remotes: names(&f.remotes),
            first_seen: time(f.first_seen),
            last_seen: time(f.last_seen),
            evidence: f
                .evidence
                .iter()
                .map(|e| format!("{} {}: {}", e.server, e.file, e.text))
                .collect(),
            also_seen_as: f
                .also_seen_as
                .iter()
                .map(|a| format!("{} ({})", a.code, a.count))
                .collect(),
            code: f.code,
            title: f.title,
            cause: f.cause,
            remediation: f.remediation,
        })
        .collect())
}

fn names(n: &mailflow_enrich::findings::Names) -> Vec<String> {
    let mut out: Vec<String> = n.values.iter().cloned().collect();
    if n.more > 0 {
        out.push(format!("and {} more", n.more));
    }
    out
}

/// The weeks (Mondays) from the one holding `first` to the one holding `last`.
fn weeks_between(first: NaiveDate, last: NaiveDate) -> Vec<NaiveDate> {
    let monday =
        |d: NaiveDate| d - chrono::Days::new(u64::from(d.weekday().num_days_from_monday()));
    let mut out = Vec::new();
    let mut w = monday(first);
    while w <= last {
        out.push(w);
        w = w + chrono::Days::new(7);
    }
    out
}

/// Each code's count per week and its trend. A trend compares the last week's records per day
/// (only the period's days count, so a week the period cuts is not read as a drop) with the
/// weeks before: `new` if none before, `growing` above 1.5 times their rate, `fading` under
/// half of it, else `steady`.
fn code_trends(
    per_day: &[(String, NaiveDate, u64)],
    weeks: &[NaiveDate],
    first: Option<NaiveDate>,
    last: Option<NaiveDate>,
    matcher: &Matcher,
) -> Vec<CodeTrend> {
    let (Some(first), Some(last)) = (first, last) else {
        return Vec::new();
    };
    let week_of = |d: NaiveDate| weeks.iter().rposition(|w| *w <= d);
    // Days of each week inside the period.
    let days: Vec<f64> = weeks
        .iter()
        .map(|w| {
            (0..7)
                .map(|i| *w + chrono::Days::new(i))
                .filter(|d| *d >= first && *d <= last)
                .count() as f64
        })
        .collect();
    let mut by_code: BTreeMap<&str, Vec<u64>> = BTreeMap::new();
    for (code, day, n) in per_day {
        let Some(w) = week_of(*day) else { continue };
        by_code.entry(code).or_insert_with(|| vec![0; weeks.len()])[w] += n;
    }
    let mut out: Vec<CodeTrend> = by_code
        .into_iter()
        .map(|(code, per_week)| {
            let rule = matcher.catalog().rule(code);
            CodeTrend {
                code: code.to_string(),
                title: rule.map_or_else(|| "(not in this catalog)".into(), |r| r.title.clone()),
                severity: rule.map_or("", |r| r.severity.name()).to_string(),
                total: per_week.iter().sum(),
                trend: trend(&per_week, &days),
                remediation: rule.map(|r| r.remediation.clone()).unwrap_or_default(),
                per_week,
            }
        })
        .collect();
    out.sort_by(|a, b| b.total.cmp(&a.total).then(a.code.cmp(&b.code)));
    out.truncate(TOP_CODES);
    out
}

fn trend(per_week: &[u64], days: &[f64]) -> &'static str {
    let Some((&last, before)) = per_week.split_last() else {
        return "-";
    };
    if before.is_empty() {
        return "-";
    }
    let before_days: f64 = days[..before.len()].iter().sum();
    let before_total: u64 = before.iter().sum();
    let last_days = days.last().copied().unwrap_or(0.0);
    if before_total == 0 {
        return if last > 0 { "new" } else { "steady" };
    }
    let rate_before = before_total as f64 / before_days.max(1.0);
    let rate_last = last as f64 / last_days.max(1.0);
    if rate_last > 1.5 * rate_before {
        "growing"
    } else if rate_last < 0.5 * rate_before {
        "fading"
    } else {
        "steady"
    }
}

fn parse_day(s: &str) -> Option<NaiveDate> {
    NaiveDate::parse_from_str(s, "%Y-%m-%d").ok()
}

fn iso(ms: i64) -> Option<String> {
    chrono::DateTime::from_timestamp_millis(ms).map(|t| t.format("%Y-%m-%dT%H:%M:%SZ").to_string())
}

/// Whole days from the end of `day` (UTC) to `not_after_ms`; negative once expired.
fn days_left(not_after_ms: i64, day: NaiveDate) -> i64 {
    let end = day
        .succ_opt()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map_or(0, |t| t.and_utc().timestamp_millis());
    (not_after_ms - end).div_euclid(86_400_000)
}

/// One result row, read by position.
struct Row {
    batch: RecordBatch,
    row: usize,
}

impl Row {
    fn column(&self, i: usize) -> Option<&dyn Array> {
        let c = self.batch.columns().get(i)?;
        c.is_valid(self.row).then_some(c.as_ref())
    }

    fn opt_text(&self, i: usize) -> Option<String> {
        let c = self.column(i)?;
        let options = arrow_cast::display::FormatOptions::default();
        let f = arrow_cast::display::ArrayFormatter::try_new(c, &options).ok()?;
        Some(f.value(self.row).to_string())
    }

    fn text(&self, i: usize) -> String {
        self.opt_text(i).unwrap_or_default()
    }

    fn int(&self, i: usize) -> Option<i64> {
        let c = self.column(i)?;
        match c.data_type() {
            DataType::Int64 => Some(c.as_primitive::<Int64Type>().value(self.row)),
            DataType::UInt64 => i64::try_from(c.as_primitive::<UInt64Type>().value(self.row)).ok(),
            _ => arrow_cast::cast(&c.slice(self.row, 1), &DataType::Int64)
                .ok()
                .and_then(|a| {
                    let a = a.as_primitive::<Int64Type>();
                    a.is_valid(0).then(|| a.value(0))
                }),
        }
    }

    fn count(&self, i: usize) -> u64 {
        self.int(i).and_then(|v| u64::try_from(v).ok()).unwrap_or(0)
    }
}

/// Runs `sql` and returns its rows (aggregates: a few thousand at most).
async fn rows(lake: &Lake, sql: &str) -> Result<Vec<Row>> {
    let frame = lake
        .ctx
        .sql(sql)
        .await
        .with_context(|| format!("planning {}", sql.trim()))?;
    let batches = frame
        .collect()
        .await
        .with_context(|| format!("running {}", sql.trim()))?;
    Ok(batches
        .into_iter()
        .flat_map(|batch| {
            (0..batch.num_rows()).map(move |row| Row {
                batch: batch.clone(),
                row,
            })
        })
        .collect())
}

/// Writes the aggregates as CSV files, one per aggregate, into `dir`.
pub fn write_csv(data: &ReportData, dir: &Path) -> Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut written = Vec::new();
    let mut file = |name: &str, header: &[&str], lines: Vec<Vec<String>>| -> Result<()> {
        let path = dir.join(format!("{name}.csv"));
        let context = || format!("writing {}", path.display());
        let mut out = csv::Writer::from_path(&path).with_context(context)?;
        out.write_record(header).with_context(context)?;
        for l in lines {
            out.write_record(&l).with_context(context)?;
        }
        out.flush().with_context(context)?;
        written.push(path);
        Ok(())
    };
    let n = |v: u64| v.to_string();
    file(
        "volume",
        &[
            "date",
            "server",
            "received",
            "sent",
            "delivered",
            "failed",
            "deferred",
        ],
        data.volume
            .iter()
            .map(|v| {
                vec![
                    v.date.clone(),
                    v.server.clone(),
                    n(v.received),
                    n(v.sent),
                    n(v.delivered),
                    n(v.failed),
                    n(v.deferred),
                ]
            })
            .collect(),
    )?;
    file(
        "rates",
        &[
            "date",
            "messages",
            "failed",
            "deferred",
            "failure_rate",
            "deferral_rate",
        ],
        data.rates
            .iter()
            .map(|r| {
                vec![
                    r.date.clone(),
                    n(r.messages),
                    n(r.failed),
                    n(r.deferred),
                    r.failure_rate.to_string(),
                    r.deferral_rate.to_string(),
                ]
            })
            .collect(),
    )?;
    file(
        "codes",
        &[
            "code", "title", "severity", "week", "records", "total", "trend",
        ],
        data.codes
            .iter()
            .flat_map(|c| {
                data.weeks.iter().zip(&c.per_week).map(|(w, k)| {
                    vec![
                        c.code.clone(),
                        c.title.clone(),
                        c.severity.clone(),
                        w.clone(),
                        n(*k),
                        n(c.total),
                        c.trend.to_string(),
                    ]
                })
            })
            .collect(),
    )?;
    file(
        "domains",
        &["domain", "failed", "deferred"],
        data.domains
            .iter()
            .map(|d| vec![d.domain.clone(), n(d.failed), n(d.deferred)])
            .collect(),
    )?;
    file(
        "connectors",
        &["direction", "connector", "sessions", "failed", "deferred"],
        data.connectors
            .iter()
            .map(|c| {
                vec![
                    c.direction.clone(),
                    c.connector.clone(),
                    n(c.sessions),
                    n(c.failed),
                    n(c.deferred),
                ]
            })
            .collect(),
    )?;
    file(
        "tls_versions",
        &["date", "version", "sessions"],
        data.tls_versions
            .iter()
            .map(|t| vec![t.date.clone(), t.version.clone(), n(t.sessions)])
            .collect(),
    )?;
    file(
        "tls_problems",
        &["date", "starttls", "tls_failed", "certificate_diagnoses"],
        data.tls_problems
            .iter()
            .map(|t| {
                vec![
                    t.date.clone(),
                    n(t.starttls),
                    n(t.tls_failed),
                    n(t.certificate_diagnoses),
                ]
            })
            .collect(),
    )?;
    file(
        "ciphers",
        &["suite", "sessions"],
        data.ciphers
            .iter()
            .map(|c| vec![c.suite.clone(), n(c.sessions)])
            .collect(),
    )?;
    let o = |s: &Option<String>| s.clone().unwrap_or_default();
    file(
        "certificates",
        &[
            "direction",
            "connector",
            "thumbprint",
            "subject",
            "not_after",
            "days_left",
            "sessions",
            "first_seen",
            "last_seen",
        ],
        data.certificates
            .iter()
            .map(|c| {
                vec![
                    c.direction.clone(),
                    c.connector.clone(),
                    c.thumbprint.clone(),
                    o(&c.subject),
                    o(&c.not_after),
                    c.days_left.map(|d| d.to_string()).unwrap_or_default(),
                    n(c.sessions),
                    o(&c.first_seen),
                    o(&c.last_seen),
                ]
            })
            .collect(),
    )?;
    file(
        "latency",
        &["date", "messages", "p50_ms", "p95_ms", "p99_ms"],
        data.latency
            .iter()
            .map(|l| {
                vec![
                    l.date.clone(),
                    n(l.messages),
                    l.p50_ms.to_string(),
                    l.p95_ms.to_string(),
                    l.p99_ms.to_string(),
                ]
            })
            .collect(),
    )?;
    file(
        "findings",
        &[
            "code",
            "title",
            "severity",
            "count",
            "servers",
            "first_seen",
            "last_seen",
        ],
        data.findings
            .iter()
            .map(|f| {
                vec![
                    f.code.clone(),
                    f.title.clone(),
                    f.severity.clone(),
                    n(f.count),
                    f.servers.join(" "),
                    o(&f.first_seen),
                    o(&f.last_seen),
                ]
            })
            .collect(),
    )?;
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn day(s: &str) -> NaiveDate {
        parse_day(s).unwrap()
    }

    #[test]
    fn weeks_start_on_monday() {
        // 2024-01-25 is a Thursday.
        let w = weeks_between(day("2024-01-25"), day("2024-02-05"));
        let w: Vec<String> = w.iter().map(NaiveDate::to_string).collect();
        assert_eq!(w, ["2024-01-22", "2024-01-29", "2024-02-05"]);
    }

    #[test]
    fn trends_compare_rates_per_day() {
        let full = [7.0, 7.0, 7.0];
        assert_eq!(trend(&[0, 0, 5], &full), "new");
        assert_eq!(trend(&[10, 10, 30], &full), "growing");
        assert_eq!(trend(&[10, 10, 2], &full), "fading");
        assert_eq!(trend(&[10, 10, 11], &full), "steady");
        // The period ends one day into the last week: 2 records that day is twice the rate.
        assert_eq!(trend(&[7, 7, 2], &[7.0, 7.0, 1.0]), "growing");
        assert_eq!(trend(&[5], &[7.0]), "-");
    }

    #[test]
    fn days_left_counts_from_the_period_end() {
        let end = day("2024-01-31");
        let feb_10 = day("2024-02-10")
            .and_hms_opt(0, 0, 0)
            .unwrap()
            .and_utc()
            .timestamp_millis();
        assert_eq!(days_left(feb_10, end), 9);
        let jan_30 = day("2024-01-30")
            .and_hms_opt(12, 0, 0)
            .unwrap()
            .and_utc()
            .timestamp_millis();
        assert_eq!(days_left(jan_30, end), -2);
    }
}
