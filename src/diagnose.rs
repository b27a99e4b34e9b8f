//! `mailflow diagnose`: what is wrong with mail flow, from the logs given, for a person at a
//! console (text, 80 columns, colour on a terminal only) or for a script (JSON).

use std::fmt::Write as _;
use std::fs::File;
use std::io::BufReader;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result};
use crossbeam_channel::unbounded;
use mailflow_enrich::Matcher;
use mailflow_enrich::findings::{Evidence, Finding, Findings, Names};
use mailflow_parser::{DecoderBuilder, LogReader};
use serde::Serialize;

use crate::ingest::{Skipped, Triage, discover, host_name, triage};
use crate::term::escape;

/// What to diagnose.
#[derive(Debug, Clone)]
pub struct DiagnoseOptions {
    /// What to read: folders and files, with their filters and the server each is filed under.
    pub sources: Vec<crate::config::Source>,
    /// Parse workers.
    pub threads: usize,
    /// Windows event providers kept from event files.
    pub event_providers: mailflow_parser::Providers,
}

/// The result of a run.
#[derive(Debug, Serialize)]
pub struct Report {
    /// Ranked findings.
    pub findings: Vec<FindingOut>,
    /// Files read.
    pub files: u64,
    /// Log lines looked at.
    pub lines: u64,
    /// Files passed over, with why.
    pub skipped: Vec<Skipped>,
    /// Files that could not be read.
    pub failed: Vec<Skipped>,
}

/// A finding as JSON shows it.
#[derive(Debug, Serialize)]
pub struct FindingOut {
    #[serde(flatten)]
    finding: Finding,
    first_seen: Option<String>,
    last_seen: Option<String>,
}

fn time(ms: Option<i64>) -> Option<String> {
    ms.and_then(chrono::DateTime::from_timestamp_millis)
        .map(|t| t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string())
}

/// Reads every log of the sources and gathers the findings.
pub fn diagnose(opts: &DiagnoseOptions, matcher: &Arc<Matcher>) -> Result<Report> {
    let mut skipped = Vec::new();
    let discovered = discover(&opts.sources)?;
    let mut failed = discovered.unreadable;
    let (tx, rx) = unbounded::<(PathBuf, Option<String>, Vec<u8>)>();
    let mut files = 0;
    for (path, source) in discovered.files {
        match triage(path) {
            Triage::Read {
                path, server, head, ..
            } => {
                files += 1;
                // A source's server (`--server`, or the config's) wins over the rows'.
                let server = opts.sources[source].server.clone().or(server);
                tx.send((path, server, head)).context("queueing files")?;
            }
            Triage::Skip(s) => skipped.push(s),
            Triage::Fail(s) => failed.push(s),
        }
    }
    drop(tx);
    let host = host_name();
    let workers: Vec<_> = (0..opts.threads.max(1))
        .map(|_| {
            let (rx, matcher, host) = (rx.clone(), Arc::clone(matcher), host.clone());
            let providers = opts.event_providers.clone();
            std::thread::spawn(move || {
                let mut findings = Findings::new();
                let mut errors = Vec::new();
                for (path, server, head) in rx {
                    let name = path.to_string_lossy().into_owned();
                    let modified = std::fs::metadata(&path)
                        .and_then(|m| m.modified())
                        .ok()
                        .map(crate::ingest::file_time_ms);
                    // The head names the server and, for events and queue snapshots, the
                    // format (their names say nothing: pastes are saved as `.txt`).
                    let decoder = DecoderBuilder::new(name)
                        .with_head(&head)
                        .with_server(server)
                        .with_default_server(&host)
                        .with_file_time(modified)
                        .with_event_providers(providers.clone())
                        .build();
                    let result = File::open(&path)
                        .map_err(mailflow_parser::Error::from)
                        .and_then(|f| {
                            let reader = BufReader::with_capacity(256 * 1024, f);
                            for flushed in LogReader::new(decoder, reader) {
                                if let Some(d) = flushed?.data {
                                    findings.add(&matcher, d.table, &d.batch);
                                }
                            }
                            Ok(())
                        });
                    if let Err(e) = result {
                        errors.push(Skipped {
                            path,
                            reason: e.to_string(),
                        });
                    }
                }
                (findings, errors)
            })
        })
        .collect();
    let mut all = Findings::new();
    for w in workers {
        let (f, mut e) = w
            .join()
            .map_err(|_| anyhow::anyhow!("a diagnose worker panicked"))?;
        all.merge(f);
        failed.append(&mut e);
    }
    let lines = all.rows();
    let findings = all
        .ranked()
        .into_iter()
        .map(|f| FindingOut {
            first_seen: time(f.first_seen),
            last_seen: time(f.last_seen),
            finding: f,
        })
        .collect();
    Ok(Report {
        findings,
        files,
        lines,
        skipped,
        failed,
    })
}

const WIDTH: usize = 80;

fn files(n: u64) -> String {
    if n == 1 {
        "1 file".into()
    } else {
        format!("{n} files")
    }
}

fn lines(n: u64) -> String {
    if n == 1 {
        "1 line".into()
    } else {
        format!("{n} lines")
    }
}

fn names(n: &Names) -> String {
    let mut s = n.values.iter().cloned().collect::<Vec<_>>().join(", ");
    if n.more > 0 {
        let _ = write!(s, " and {} more", n.more);
    }
    s
}

/// Writes `label` and `text` wrapped to the width, both escaped (see [`crate::term`]).
fn wrapped(out: &mut String, indent: &str, label: &str, text: &str) {
    let text = escape(text);
    let text = text.as_ref();
    let first = format!("{indent}{}", escape(label));
    let rest = " ".repeat(first.chars().count());
    let opts = textwrap::Options::new(WIDTH)
        .initial_indent(&first)
        .subsequent_indent(&rest);
    for line in textwrap::wrap(text, opts) {
        out.push_str(&line);
        out.push('\n');
    }
}

fn evidence_line(out: &mut String, e: &Evidence) {
    let when = time(e.timestamp).unwrap_or_else(|| "-".into());
    let session = e
        .session
        .as_deref()
        .map(|s| format!(" session {s}"))
        .unwrap_or_default();
    wrapped(out, "    ", "", &format!("{} {when}{session}", e.server));
    wrapped(
        out,
        "      ",
        "",
        &format!("{} @ byte {}", e.file, e.offset),
    );
    wrapped(out, "      ", "> ", &e.text);
}

/// The report for a person. `colour` adds ANSI styles to the severity labels.
pub fn render_text(r: &Report, colour: bool) -> String {
    let mut out = String::new();
    let skipped = if r.skipped.is_empty() {
        String::new()
    } else {
        format!(", {} other files skipped", r.skipped.len())
    };
    let summary = if r.findings.is_empty() {
        format!(
            "No problems found: {} lines from {} show no failure mailflow knows{skipped}.",
            r.lines,
            files(r.files)
        )
    } else {
        format!(
            "{} problem{} found in {} lines from {}{skipped}, most serious first.",
            r.findings.len(),
            if r.findings.len() == 1 { "" } else { "s" },
            r.lines,
            files(r.files)
        )
    };
    wrapped(&mut out, "", "", &summary);
    for f in &r.findings {
        let f_ = &f.finding;
        let label = f_.severity.name().to_ascii_uppercase();
        let style = match f_.severity {
            mailflow_enrich::Severity::Critical => anstyle::AnsiColor::Red.on_default().bold(),
            mailflow_enrich::Severity::Major => anstyle::AnsiColor::Yellow.on_default().bold(),
            _ => anstyle::Style::new().bold(),
        };
        out.push('\n');
        if colour {
            let _ = writeln!(
                out,
                "{style}{label:<8}{style:#} {}  ({})",
                escape(&f_.code),
                lines(f_.count)
            );
        } else {
            let _ = writeln!(
                out,
                "{label:<8} {}  ({})",
                escape(&f_.code),
                lines(f_.count)
            );
        }
        wrapped(&mut out, "  ", "", &f_.title);
        wrapped(&mut out, "  ", "servers: ", &names(&f_.servers));
        if !f_.connectors.values.is_empty() {
            wrapped(&mut out, "  ", "connectors: ", &names(&f_.connectors));
        }
        if !f_.remotes.values.is_empty() {
            wrapped(&mut out, "  ", "remote: ", &names(&f_.remotes));
        }
        if let (Some(a), Some(b)) = (&f.first_seen, &f.last_seen) {
            wrapped(&mut out, "  ", "seen: ", &format!("{a} .. {b}"));
        }
        for (k, v) in &f_.facts {
            wrapped(&mut out, "  ", &format!("{k}: "), &names(v));
        }
        if f_.seen_in.len() > 1 {
            let seen: Vec<String> = f_
                .seen_in
                .iter()
                .map(|(input, servers)| format!("{} on {}", input_name(input), names(servers)))
                .collect();
            wrapped(&mut out, "  ", "seen in: ", &seen.join("; "));
        }
        if !f_.also_seen_as.is_empty() {
            let also: Vec<String> = f_
                .also_seen_as
                .iter()
                .map(|a| format!("{} ({}, {})", a.code, a.title, lines(a.count)))
                .collect();
            wrapped(&mut out, "  ", "also seen as: ", &also.join("; "));
        }
        if !f_.probably_caused_by.is_empty() {
            wrapped(
                &mut out,
                "  ",
                "probably caused by: ",
                &f_.probably_caused_by.join(", "),
            );
        }
        out.push_str("  evidence:\n");
        for e in &f_.evidence {
            evidence_line(&mut out, e);
        }
        wrapped(&mut out, "  ", "cause: ", &f_.cause);
        wrapped(&mut out, "  ", "check: ", &f_.check);
        out.push_str("  do:\n");
        for (i, step) in f_.remediation.iter().enumerate() {
            wrapped(&mut out, "    ", &format!("{}. ", i + 1), step);
        }
        if !f_.references.is_empty() {
            wrapped(&mut out, "  ", "refs: ", &f_.references.join(", "));
        }
    }
    for s in &r.failed {
        let _ = writeln!(
            out,
            "\nfailed to read {}: {}",
            escape(&s.path.display().to_string()),
            escape(&s.reason)
        );
    }
    out
}

/// What an input (a table) is called for a person.
fn input_name(table: &str) -> &str {
    match table {
        "message_tracking" => "message tracking",
        "smtp_protocol" => "SMTP protocol logs",
        "connectivity" => "connectivity logs",
        "transport_events" => "Windows events",
        "queue_snapshots" => "queue snapshots",
        other => other,
    }
}
