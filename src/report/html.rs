//! The report as one self-contained HTML page: inline CSS and SVG, no script, font or image
//! from anywhere else, laid out for a laptop screen and for print.
//!
//! The one inline script only checks the page: it counts the charts the browser drew and puts
//! the count on the `<html>` element (`data-charts-rendered`), which the tests read back from
//! headless Chromium.

use std::collections::BTreeMap;
use std::fmt::Write;

use super::ReportData;
use super::svg::{Series, esc, horizontal_bars, line_chart, number, stacked_columns};

const STYLE: &str = r#"
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, Helvetica, Arial, sans-serif; margin: 0 auto; max-width: 940px; padding: 16px 24px; color: #1a1a1a; }
h1 { font-size: 1.6em; margin-bottom: 0.2em; }
h2 { font-size: 1.25em; border-bottom: 1px solid #ccc; padding-bottom: 4px; margin-top: 1.8em; }
h3 { font-size: 1.05em; margin-bottom: 0.3em; }
p.note, .note { color: #555; font-size: 0.9em; }
table { border-collapse: collapse; width: 100%; font-size: 0.85em; margin: 8px 0 16px; }
th, td { text-align: left; padding: 3px 6px; border-bottom: 1px solid #e4e4e4; vertical-align: top; }
th { background: #f4f4f4; }
td.n, th.n { text-align: right; font-variant-numeric: tabular-nums; }
code { font-size: 0.95em; }
svg.chart { display: block; margin: 8px 0 18px; font-size: 11px; }
svg .ctitle { font-size: 14px; font-weight: 600; }
svg .tick, svg .legend { fill: #333; }
svg .unit { fill: #555; font-style: italic; }
svg .grid { stroke: #e6e6e6; }
svg .axis { stroke: #888; }
.trend-new, .trend-growing { color: #b00020; font-weight: 600; }
.trend-fading { color: #2e7d32; }
.sev-critical { color: #b00020; font-weight: 700; }
.sev-major { color: #c25e00; font-weight: 600; }
.finding { border-left: 4px solid #ddd; padding: 2px 12px; margin: 12px 0; page-break-inside: avoid; }
.finding.critical { border-color: #b00020; } .finding.major { border-color: #c25e00; }
.expired { color: #b00020; font-weight: 700; } .soon { color: #c25e00; font-weight: 600; }
@media print { body { max-width: none; padding: 0; } h2 { page-break-after: avoid; } svg.chart, table { page-break-inside: avoid; } }
"#;

const CHECK: &str = r#"
(function () {
  var charts = document.querySelectorAll("svg.chart");
  var drawn = 0;
  charts.forEach(function (c) {
    var box = c.getBBox();
    if (box.width > 0 && box.height > 0 && c.querySelectorAll(".series").length > 0) { drawn++; }
  });
  document.documentElement.setAttribute("data-charts-rendered", drawn + "/" + charts.length);
  console.log("mailflow report: " + drawn + " of " + charts.length + " charts rendered");
})();
"#;

fn n(v: u64) -> String {
    number(v as f64)
}

fn days_of<T>(rows: &[T], date: impl Fn(&T) -> &str) -> Vec<String> {
    let mut d: Vec<String> = rows.iter().map(|r| date(r).to_string()).collect();
    d.sort();
    d.dedup();
    d
}

/// Renders the page.
pub fn render(r: &ReportData) -> String {
    let mut h = String::with_capacity(256 * 1024);
    let period = match (&r.input.first_day, &r.input.last_day) {
        (Some(a), Some(b)) if a == b => a.clone(),
        (Some(a), Some(b)) => format!("{a} to {b}"),
        _ => "no data".into(),
    };
    let _ = write!(
        h,
        r#"<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1"><title>Mail flow report, {p}</title><style>{STYLE}</style></head><body>"#,
        p = esc(&period)
    );
    let _ = write!(
        h,
        "<h1>Mail flow report</h1><p class=\"note\">{p} &middot; {s} &middot; made by mailflow {v} on {g}</p>",
        p = esc(&period),
        s = if r.input.servers.is_empty() {
            "no servers".to_string()
        } else {
            esc(&r.input.servers.join(", "))
        },
        v = env!("CARGO_PKG_VERSION"),
        g = esc(&r.generated)
    );
    contents(&mut h);
    volume(&mut h, r);
    rates(&mut h, r);
    codes(&mut h, r);
    remote(&mut h, r);
    tls(&mut h, r);
    latency(&mut h, r);
    findings(&mut h, r);
    input(&mut h, r);
    let _ = writeln!(h, "<script>{CHECK}</script></body></html>");
    h
}

fn contents(h: &mut String) {
    h.push_str(
        "<p class=\"note\">Contents: <a href=\"#volume\">volume</a> &middot; <a href=\"#rates\">failure rates</a> &middot; \
         <a href=\"#codes\">diagnoses by week</a> &middot; <a href=\"#remote\">domains and connectors</a> &middot; \
         <a href=\"#tls\">TLS and certificates</a> &middot; <a href=\"#latency\">latency</a> &middot; \
         <a href=\"#findings\">findings</a> &middot; <a href=\"#input\">input</a></p>",
    );
}

fn empty(h: &mut String, what: &str) {
    let _ = write!(h, "<p class=\"note\">No {what} in this period.</p>");
}

fn volume(h: &mut String, r: &ReportData) {
    h.push_str("<h2 id=\"volume\">Mail volume</h2>");
    h.push_str(
        "<p class=\"note\">Message tracking events per day (UTC): <code>RECEIVE</code>, <code>SEND</code>, \
         <code>DELIVER</code>, <code>FAIL</code> and <code>DEFER</code>, on every server.</p>",
    );
    if r.volume.is_empty() {
        return empty(h, "message tracking");
    }
    let days = days_of(&r.volume, |v| &v.date);
    let index: BTreeMap<&str, usize> = days
        .iter()
        .enumerate()
        .map(|(i, d)| (d.as_str(), i))
        .collect();
    let mut kinds = vec![vec![0.0; days.len()]; 5];
    let mut per_server: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
    for v in &r.volume {
        let i = index[v.date.as_str()];
        for (k, x) in [v.received, v.sent, v.delivered, v.failed, v.deferred]
            .iter()
            .enumerate()
        {
            kinds[k][i] += *x as f64;
        }
        per_server
            .entry(&v.server)
            .or_insert_with(|| vec![0.0; days.len()])[i] += v.received as f64;
    }
    let names = ["received", "sent", "delivered", "failed", "deferred"];
    let series: Vec<Series> = names
        .iter()
        .zip(kinds)
        .map(|(n, values)| Series {
            name: n.to_string(),
            values,
        })
        .collect();
    h.push_str(&line_chart(
        "volume-kinds",
        "Events per day, all servers",
        &days,
        &series,
        "events per day",
    ));
    let servers: Vec<Series> = per_server
        .into_iter()
        .map(|(s, values)| Series {
            name: s.to_string(),
            values,
        })
        .collect();
    h.push_str(&stacked_columns(
        "volume-servers",
        "Messages received per day, by server",
        &days,
        &servers,
        "RECEIVE events per day",
    ));
    h.push_str("<table><tr><th>day</th><th>server</th><th class=n>received</th><th class=n>sent</th><th class=n>delivered</th><th class=n>failed</th><th class=n>deferred</th></tr>");
    for v in &r.volume {
        let _ = write!(
            h,
            "<tr><td>{}</td><td>{}</td><td class=n>{}</td><td class=n>{}</td><td class=n>{}</td><td class=n>{}</td><td class=n>{}</td></tr>",
            esc(&v.date),
            esc(&v.server),
            n(v.received),
            n(v.sent),
            n(v.delivered),
            n(v.failed),
            n(v.deferred)
        );
    }
    h.push_str("</table>");
}

fn rates(h: &mut String, r: &ReportData) {
    h.push_str("<h2 id=\"rates\">Failure and deferral rates</h2>");
    h.push_str(
        "<p class=\"note\">Messages by the day they were first seen: the share that failed for at least one \
         recipient (<code>failed</code>, <code>partially_failed</code>) and the share still waiting on a retry \
         (<code>deferred</code>), across servers.</p>",
    );
    if r.rates.is_empty() {
        return empty(h, "messages");
    }
    let days: Vec<String> = r.rates.iter().map(|x| x.date.clone()).collect();
    let series = vec![
        Series {
            name: "failed".into(),
            values: r.rates.iter().map(|x| x.failure_rate * 100.0).collect(),
        },
        Series {
            name: "deferred".into(),
            values: r.rates.iter().map(|x| x.deferral_rate * 100.0).collect(),
        },
    ];
    h.push_str(&line_chart(
        "rates",
        "Failed and deferred messages",
        &days,
        &series,
        "% of the day's messages",
    ));
    h.push_str("<table><tr><th>day</th><th class=n>messages</th><th class=n>failed</th><th class=n>deferred</th><th class=n>failure rate</th><th class=n>deferral rate</th></tr>");
    for x in &r.rates {
        let _ = write!(
            h,
            "<tr><td>{}</td><td class=n>{}</td><td class=n>{}</td><td class=n>{}</td><td class=n>{:.2}%</td><td class=n>{:.2}%</td></tr>",
            esc(&x.date),
            n(x.messages),
            n(x.failed),
            n(x.deferred),
            x.failure_rate * 100.0,
            x.deferral_rate * 100.0
        );
    }
    h.push_str("</table>");
}

fn codes(h: &mut String, r: &ReportData) {
    h.push_str("<h2 id=\"codes\">Diagnoses by week</h2>");
    h.push_str(
        "<p class=\"note\">Log records (tracking, SMTP, connectivity, Windows events, queue snapshots) that the \
         diagnosis catalog recognised, per week (Monday to Sunday, UTC). Trend: the last week's records per day \
         against the weeks before: <em>new</em> (none before), <em>growing</em> (over 1.5 times), <em>fading</em> \
         (under half), else <em>steady</em>.</p>",
    );
    if r.codes.is_empty() {
        return empty(h, "diagnosed records");
    }
    let series: Vec<Series> = r
        .codes
        .iter()
        .take(6)
        .map(|c| Series {
            name: c.code.clone(),
            values: c.per_week.iter().map(|v| *v as f64).collect(),
        })
        .collect();
    h.push_str(&line_chart(
        "codes",
        "Top diagnosis codes per week",
        &r.weeks,
        &series,
        "records per week",
    ));
    h.push_str("<table><tr><th>code</th><th>what</th><th>severity</th><th class=n>records</th><th>trend</th><th>what to do</th></tr>");
    for c in &r.codes {
        let _ = write!(
            h,
            "<tr><td><code>{}</code></td><td>{}</td><td class=\"sev-{s}\">{s}</td><td class=n>{}</td><td class=\"trend-{t}\">{t}</td><td>{}</td></tr>",
            esc(&c.code),
            esc(&c.title),
            n(c.total),
            c.remediation.first().map(|x| esc(x)).unwrap_or_default(),
            s = esc(&c.severity),
            t = c.trend,
        );
    }
    h.push_str("</table>");
}

fn remote(h: &mut String, r: &ReportData) {
    h.push_str("<h2 id=\"remote\">Remote domains and connectors</h2>");
    h.push_str(
        "<p class=\"note\">Recipient domains of <code>FAIL</code> and <code>DEFER</code> tracking events (one per \
         recipient), and connectors by SMTP sessions that ended <code>failed</code> (5xx) or <code>deferred</code> \
         (4xx, TLS failure, failed connect).</p>",
    );
    if r.domains.is_empty() {
        empty(h, "failed or deferred recipients");
    } else {
        let labels: Vec<String> = r.domains.iter().map(|d| d.domain.clone()).collect();
        let series = vec![
            Series {
                name: "failed".into(),
                values: r.domains.iter().map(|d| d.failed as f64).collect(),
            },
            Series {
                name: "deferred".into(),
                values: r.domains.iter().map(|d| d.deferred as f64).collect(),
            },
        ];
        h.push_str(&horizontal_bars(
            "domains",
            "Recipient domains by failed and deferred events",
            &labels,
            &series,
            "events",
        ));
    }
    if r.connectors.is_empty() {
        empty(h, "failed or deferred sessions");
    } else {
        let labels: Vec<String> = r
            .connectors
            .iter()
            .map(|c| format!("{} {}", c.direction, c.connector))
            .collect();
        let series = vec![
            Series {
                name: "failed".into(),
                values: r.connectors.iter().map(|c| c.failed as f64).collect(),
            },
            Series {
                name: "deferred".into(),
                values: r.connectors.iter().map(|c| c.deferred as f64).collect(),
            },
        ];
        h.push_str(&horizontal_bars(
            "connectors",
            "Connectors by failed and deferred sessions",
            &labels,
            &series,
            "sessions",
        ));
        h.push_str("<table><tr><th>direction</th><th>connector</th><th class=n>sessions</th><th class=n>failed</th><th class=n>deferred</th></tr>");
        for c in &r.connectors {
            let _ = write!(
                h,
                "<tr><td>{}</td><td>{}</td><td class=n>{}</td><td class=n>{}</td><td class=n>{}</td></tr>",
                esc(&c.direction),
                esc(&c.connector),
                n(c.sessions),
                n(c.failed),
                n(c.deferred)
            );
        }
        h.push_str("</table>");
    }
}

fn tls(h: &mut String, r: &ReportData) {
    h.push_str("<h2 id=\"tls\">TLS and certificates</h2>");
    if r.tls_versions.is_empty() && r.tls_problems.is_empty() {
        empty(h, "SMTP sessions");
    }
    if !r.tls_versions.is_empty() {
        let days = days_of(&r.tls_versions, |t| &t.date);
        let mut versions: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
        for t in &r.tls_versions {
            let i = days.iter().position(|d| *d == t.date).unwrap_or(0);
            versions
                .entry(&t.version)
                .or_insert_with(|| vec![0.0; days.len()])[i] += t.sessions as f64;
        }
        let series: Vec<Series> = versions
            .into_iter()
            .map(|(v, values)| Series {
                name: format!("TLS {v}"),
                values,
            })
            .collect();
        h.push_str(&stacked_columns(
            "tls-versions",
            "Sessions that negotiated TLS, by version",
            &days,
            &series,
            "sessions per day",
        ));
    }
    if !r.tls_problems.is_empty() {
        let days: Vec<String> = r.tls_problems.iter().map(|t| t.date.clone()).collect();
        let series = vec![
            Series {
                name: "STARTTLS failed".into(),
                values: r.tls_problems.iter().map(|t| t.tls_failed as f64).collect(),
            },
            Series {
                name: "TLS and certificate diagnoses".into(),
                values: r
                    .tls_problems
                    .iter()
                    .map(|t| t.certificate_diagnoses as f64)
                    .collect(),
            },
        ];
        h.push_str(&line_chart(
            "tls-problems",
            "TLS failures and certificate problems",
            &days,
            &series,
            "per day",
        ));
    }
    if !r.ciphers.is_empty() {
        h.push_str("<h3>Cipher suites</h3><table><tr><th>key exchange, cipher, hash</th><th class=n>sessions</th></tr>");
        for c in &r.ciphers {
            let _ = write!(
                h,
                "<tr><td>{}</td><td class=n>{}</td></tr>",
                esc(&c.suite),
                n(c.sessions)
            );
        }
        h.push_str("</table>");
    }
    h.push_str("<h3>Certificates seen</h3>");
    if r.certificates.is_empty() {
        return empty(h, "certificates in SMTP sessions");
    }
    h.push_str(
        "<p class=\"note\">The certificate each connector's sessions showed (this server's on receive, the \
         remote's on send), soonest to expire first; days left are counted from the period's last day.</p>",
    );
    h.push_str("<table><tr><th>connector</th><th>thumbprint</th><th>subject</th><th>expires</th><th class=n>days left</th><th class=n>sessions</th><th>last seen</th></tr>");
    for c in &r.certificates {
        let class = match c.days_left {
            Some(d) if d < 0 => "expired",
            Some(d) if d < 30 => "soon",
            _ => "",
        };
        let _ = write!(
            h,
            "<tr><td>{} {}</td><td><code>{}</code></td><td>{}</td><td>{}</td><td class=\"n {class}\">{}</td><td class=n>{}</td><td>{}</td></tr>",
            esc(&c.direction),
            esc(&c.connector),
            esc(&c.thumbprint),
            esc(c.subject.as_deref().unwrap_or("")),
            esc(c.not_after.as_deref().unwrap_or("")),
            c.days_left.map(|d| d.to_string()).unwrap_or_default(),
            n(c.sessions),
            esc(c.last_seen.as_deref().unwrap_or("")),
        );
    }
    h.push_str("</table>");
}

fn latency(h: &mut String, r: &ReportData) {
    h.push_str("<h2 id=\"latency\">Delivery latency</h2>");
    h.push_str(
        "<p class=\"note\">Delivered messages by the day they were first seen: Exchange's own end-to-end latency \
         where it logged one (<code>E2ELatency</code>), else first to last tracking event. Percentiles by nearest \
         rank (the p-th is the value at rank &lceil;p&middot;n/100&rceil;).</p>",
    );
    if r.latency.is_empty() {
        return empty(h, "delivered messages");
    }
    let days: Vec<String> = r.latency.iter().map(|l| l.date.clone()).collect();
    let s =
        |f: fn(&super::Latency) -> i64| r.latency.iter().map(|l| f(l) as f64 / 1000.0).collect();
    let series = vec![
        Series {
            name: "p50".into(),
            values: s(|l| l.p50_ms),
        },
        Series {
            name: "p95".into(),
            values: s(|l| l.p95_ms),
        },
        Series {
            name: "p99".into(),
            values: s(|l| l.p99_ms),
        },
    ];
    h.push_str(&line_chart(
        "latency",
        "Delivery latency percentiles",
        &days,
        &series,
        "seconds",
    ));
    h.push_str("<table><tr><th>day</th><th class=n>delivered</th><th class=n>p50 s</th><th class=n>p95 s</th><th class=n>p99 s</th></tr>");
    for l in &r.latency {
        let _ = write!(
            h,
            "<tr><td>{}</td><td class=n>{}</td><td class=n>{:.1}</td><td class=n>{:.1}</td><td class=n>{:.1}</td></tr>",
            esc(&l.date),
            n(l.messages),
            l.p50_ms as f64 / 1000.0,
            l.p95_ms as f64 / 1000.0,
            l.p99_ms as f64 / 1000.0
        );
    }
    h.push_str("</table>");
}

fn findings(h: &mut String, r: &ReportData) {
    h.push_str("<h2 id=\"findings\">Findings</h2>");
    h.push_str(
        "<p class=\"note\">This period's problems as <code>mailflow diagnose</code> ranks them: most severe, then \
         most frequent, with consequences folded into their probable cause.</p>",
    );
    if r.findings.is_empty() {
        return empty(h, "findings");
    }
    for f in &r.findings {
        let _ = write!(
            h,
            "<div class=\"finding {s}\"><h3><code>{c}</code> {t}</h3><p><span class=\"sev-{s}\">{s}</span> &middot; {k} records \
             &middot; {from} to {to} &middot; servers: {servers}{remotes}</p><p><b>Probable cause:</b> {cause}</p>",
            s = esc(&f.severity),
            c = esc(&f.code),
            t = esc(&f.title),
            k = n(f.count),
            from = esc(f.first_seen.as_deref().unwrap_or("?")),
            to = esc(f.last_seen.as_deref().unwrap_or("?")),
            servers = esc(&f.servers.join(", ")),
            remotes = if f.remotes.is_empty() {
                String::new()
            } else {
                format!(" &middot; remote: {}", esc(&f.remotes.join(", ")))
            },
            cause = esc(&f.cause),
        );
        if !f.also_seen_as.is_empty() {
            let _ = write!(
                h,
                "<p><b>Also seen as:</b> {}</p>",
                esc(&f.also_seen_as.join(", "))
            );
        }
        if !f.remediation.is_empty() {
            h.push_str("<p><b>What to do:</b></p><ol>");
            for step in &f.remediation {
                let _ = write!(h, "<li>{}</li>", esc(step));
            }
            h.push_str("</ol>");
        }
        if !f.evidence.is_empty() {
            h.push_str("<p><b>Evidence:</b></p><ul>");
            for e in &f.evidence {
                let _ = write!(h, "<li><code>{}</code></li>", esc(e));
            }
            h.push_str("</ul>");
        }
        h.push_str("</div>");
    }
}

fn input(h: &mut String, r: &ReportData) {
    let i = &r.input;
    h.push_str("<h2 id=\"input\">What this report read</h2>");
    let _ = write!(
        h,
        "<p>Lake <code>{}</code>; asked for {} to {}{}; rows from {} to {} on {} server{}.</p>",
        esc(&i.lake),
        esc(i.since.as_deref().unwrap_or("the start")),
        esc(i.until.as_deref().unwrap_or("the end")),
        if i.servers_asked.is_empty() {
            String::new()
        } else {
            format!(", servers {}", esc(&i.servers_asked.join(", ")))
        },
        esc(i.first_day.as_deref().unwrap_or("-")),
        esc(i.last_day.as_deref().unwrap_or("-")),
        i.servers.len(),
        if i.servers.len() == 1 { "" } else { "s" }
    );
    h.push_str("<table><tr><th>table</th><th class=n>files</th><th class=n>rows</th><th class=n>MB</th></tr>");
    for t in &i.tables {
        let _ = write!(
            h,
            "<tr><td>{}</td><td class=n>{}</td><td class=n>{}</td><td class=n>{:.1}</td></tr>",
            t.table,
            n(t.files),
            n(t.rows),
            t.bytes as f64 / 1e6
        );
    }
    h.push_str("</table>");
    if i.unreadable.is_empty() {
        h.push_str("<p>Every file in the period was read.</p>");
    } else {
        let k = i.unreadable.len();
        let _ = write!(
            h,
            "<p><b>{k} file{} could not be read</b> and {} left out of every figure above:</p><ul>",
            if k == 1 { "" } else { "s" },
            if k == 1 { "is" } else { "are" }
        );
        for u in &i.unreadable {
            let _ = write!(
                h,
                "<li><code>{}</code>: {}</li>",
                esc(&u.path),
                esc(&u.reason)
            );
        }
        h.push_str("</ul>");
    }
}
