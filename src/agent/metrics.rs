//! The agent's counters and gauges, served as Prometheus text on `--metrics-addr`.
//!
//! The exposition format is a few lines of text per metric; a small HTTP/1.1 responder on
//! tokio serves it (`GET /metrics`), rather than a web framework for one route.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Everything the agent reports; shared by its threads.
#[derive(Debug)]
pub(crate) struct Metrics {
    pub bytes_in: AtomicU64,
    pub files_opened: AtomicU64,
    pub files_finished: AtomicU64,
    pub files_truncated: AtomicU64,
    pub read_errors: AtomicU64,
    pub sink_errors: AtomicU64,
    pub checkpoints_saved: AtomicU64,
    rows: Mutex<BTreeMap<String, u64>>,
    rows_decoded: Mutex<BTreeMap<String, u64>>,
    gauges: Mutex<Gauges>,
    /// Each Elasticsearch sink's counters (one per lane), by sink name.
    clusters: Mutex<Vec<(String, std::sync::Arc<mailflow_sinks::es::Stats>)>>,
    started: Instant,
}

/// Values set as they are, not counted.
#[derive(Debug, Default, Clone)]
pub(crate) struct Gauges {
    /// Bytes between each tailed file's read position and its end, summed.
    pub bytes_behind: u64,
    /// The same per file being read.
    pub file_bytes_behind: Vec<(String, u64)>,
    /// Files being read.
    pub files_open: u64,
    /// Writes queued per lane (the sink side's backlog).
    pub queue_depth: Vec<u64>,
    pub open_sessions: u64,
    pub open_messages: u64,
    /// Seconds since the checkpoint store was last saved.
    pub checkpoint_age: f64,
}

impl Metrics {
    pub(crate) fn new() -> Self {
        Metrics {
            bytes_in: AtomicU64::new(0),
            files_opened: AtomicU64::new(0),
            files_finished: AtomicU64::new(0),
            files_truncated: AtomicU64::new(0),
            read_errors: AtomicU64::new(0),
            sink_errors: AtomicU64::new(0),
            checkpoints_saved: AtomicU64::new(0),
            rows: Mutex::new(BTreeMap::new()),
            rows_decoded: Mutex::new(BTreeMap::new()),
            gauges: Mutex::new(Gauges::default()),
            clusters: Mutex::new(Vec::new()),
            started: Instant::now(),
        }
    }

    /// Reports an Elasticsearch sink's counters under its name.
    pub(crate) fn add_cluster(&self, name: &str, stats: std::sync::Arc<mailflow_sinks::es::Stats>) {
        self.clusters
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push((name.to_string(), stats));
    }

    /// Rows a sink lane took, per table.
    pub(crate) fn rows_out(&self, table: &str, n: u64) {
        add(&self.rows, table, n);
    }

    /// Rows decoded and correlated, per table (sessions closed included), before the sinks.
    pub(crate) fn rows_in(&self, table: &str, n: u64) {
        add(&self.rows_decoded, table, n);
    }

    pub(crate) fn rows(&self) -> BTreeMap<String, u64> {
        self.rows
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    pub(crate) fn set_gauges(&self, f: impl FnOnce(&mut Gauges)) {
        f(&mut self
            .gauges
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner));
    }

    pub(crate) fn set_open_messages(&self, n: u64) {
        self.set_gauges(|g| g.open_messages = n);
    }

    pub(crate) fn gauges(&self) -> Gauges {
        self.gauges
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// The Prometheus text exposition (version 0.0.4).
    pub(crate) fn render(&self) -> String {
        let mut s = String::new();
        let mut metric = |name: &str, kind: &str, help: &str, samples: &[(String, f64)]| {
            let _ = writeln!(s, "# HELP mailflow_{name} {help}");
            let _ = writeln!(s, "# TYPE mailflow_{name} {kind}");
            for (labels, v) in samples {
                let _ = writeln!(s, "mailflow_{name}{labels} {v}");
            }
        };
        let counters: [(&str, &str, &AtomicU64); 7] = [
            (
                "input_bytes_total",
                "Bytes of log files read.",
                &self.bytes_in,
            ),
            (
                "files_opened_total",
                "Log files opened for reading.",
                &self.files_opened,
            ),
            (
                "files_finished_total",
                "Log files read to their end after Exchange moved on to a newer one.",
                &self.files_finished,
            ),
            (
                "files_truncated_total",
                "Log files found shorter than what was read of them.",
                &self.files_truncated,
            ),
            (
                "read_errors_total",
                "Log files that could not be read.",
                &self.read_errors,
            ),
            (
                "sink_errors_total",
                "Sink failures (the agent stops; a restart replays from the checkpoints).",
                &self.sink_errors,
            ),
            (
                "checkpoints_saved_total",
                "Saves of the checkpoint store.",
                &self.checkpoints_saved,
            ),
        ];
        for (name, help, value) in counters {
            let v = value.load(Ordering::Relaxed) as f64;
            metric(name, "counter", help, &[(String::new(), v)]);
        }
        let rows: Vec<(String, f64)> = self
            .rows()
            .into_iter()
            .map(|(t, n)| (format!("{{table=\"{t}\"}}"), n as f64))
            .collect();
        metric(
            "rows_out_total",
            "counter",
            "Rows handed to the sinks, per table (rejects included).",
            &rows,
        );
        let decoded: Vec<(String, f64)> = self
            .rows_decoded
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
            .map(|(t, n)| (format!("{{table=\"{t}\"}}"), *n as f64))
            .collect();
        metric(
            "rows_decoded_total",
            "counter",
            "Rows made by decoding and correlation, per table, before the sink queues.",
            &decoded,
        );
        self.render_clusters(&mut metric);
        let g = self.gauges();
        let depth: Vec<(String, f64)> = g
            .queue_depth
            .iter()
            .enumerate()
            .map(|(i, d)| (format!("{{lane=\"{i}\"}}"), *d as f64))
            .collect();
        metric(
            "queue_depth",
            "gauge",
            "Writes waiting for the sinks, per lane.",
            &depth,
        );
        let per_file: Vec<(String, f64)> = g
            .file_bytes_behind
            .iter()
            .map(|(f, b)| (format!("{{file=\"{}\"}}", label(f)), *b as f64))
            .collect();
        metric(
            "file_bytes_behind",
            "gauge",
            "Bytes between the read position and the end, per file being read.",
            &per_file,
        );
        let gauges: [(&str, &str, f64); 6] = [
            (
                "bytes_behind",
                "Bytes between the read position and the end of the files being read.",
                g.bytes_behind as f64,
            ),
            ("files_open", "Log files being read.", g.files_open as f64),
            (
                "open_sessions",
                "SMTP sessions open in correlation.",
                g.open_sessions as f64,
            ),
            (
                "open_messages",
                "Messages open in correlation.",
                g.open_messages as f64,
            ),
            (
                "checkpoint_age_seconds",
                "Seconds since the checkpoint store was last saved.",
                g.checkpoint_age,
            ),
            (
                "uptime_seconds",
                "Seconds since the agent started.",
                self.started.elapsed().as_secs_f64(),
            ),
        ];
        for (name, help, v) in gauges {
            metric(name, "gauge", help, &[(String::new(), v)]);
        }
        s
    }
}

impl Metrics {
    /// The Elasticsearch sinks' counters, summed over lanes per sink.
    fn render_clusters(&self, metric: &mut impl FnMut(&str, &str, &str, &[(String, f64)])) {
        let clusters = self
            .clusters
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if clusters.is_empty() {
            return;
        }
        let mut sums: BTreeMap<&str, [u64; 6]> = BTreeMap::new();
        for (name, s) in clusters.iter() {
            let v = sums.entry(name).or_default();
            for (i, a) in [
                &s.stored,
                &s.duplicates,
                &s.dead,
                &s.requests,
                &s.retries,
                &s.bytes_sent,
            ]
            .into_iter()
            .enumerate()
            {
                v[i] += a.load(Ordering::Relaxed);
            }
        }
        let mut docs = Vec::new();
        for (name, v) in &sums {
            for (i, result) in ["stored", "duplicate", "dead_letter"]
                .into_iter()
                .enumerate()
            {
                docs.push((
                    format!("{{sink=\"{}\",result=\"{result}\"}}", label(name)),
                    v[i] as f64,
                ));
            }
        }
        metric(
            "es_documents_total",
            "counter",
            "Documents an Elasticsearch sink delivered: stored, held already (409), dead-lettered.",
            &docs,
        );
        for (i, name, help) in [
            (
                3,
                "es_requests_total",
                "Bulk requests sent, retries included.",
            ),
            (
                4,
                "es_retries_total",
                "Bulk requests sent again (whole, or their failed items).",
            ),
            (
                5,
                "es_bytes_sent_total",
                "Bytes of bulk requests sent, as on the wire.",
            ),
        ] {
            let samples: Vec<(String, f64)> = sums
                .iter()
                .map(|(n, v)| (format!("{{sink=\"{}\"}}", label(n)), v[i] as f64))
                .collect();
            metric(name, "counter", help, &samples);
        }
    }
}

fn add(map: &Mutex<BTreeMap<String, u64>>, key: &str, n: u64) {
    let mut map = map
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    match map.get_mut(key) {
        Some(v) => *v += n,
        None => {
            map.insert(key.to_string(), n);
        }
    }
}

/// A label value as the exposition format writes it: `\`, `"` and line ends escaped (Windows
/// paths are full of backslashes).
fn label(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => out.push_str(r"\\"),
            '"' => out.push_str(r#"\""#),
            '\n' => out.push_str(r"\n"),
            c => out.push(c),
        }
    }
    out
}

/// Serves `GET /metrics` until the task is dropped.
pub(crate) async fn serve(listener: tokio::net::TcpListener, metrics: std::sync::Arc<Metrics>) {
    loop {
        let Ok((mut conn, _)) = listener.accept().await else {
            continue;
        };
        let metrics = std::sync::Arc::clone(&metrics);
        tokio::spawn(async move {
            let mut req = Vec::with_capacity(1024);
            let mut buf = [0u8; 1024];
            // The request line and headers; a scraper sends no body.
            while !req.windows(4).any(|w| w == b"\r\n\r\n") && req.len() < 16 * 1024 {
                match conn.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => req.extend_from_slice(&buf[..n]),
                }
            }
            let line = req.split(|&b| b == b'\n').next().unwrap_or_default();
            let (status, body) = if line.starts_with(b"GET /metrics ") {
                ("200 OK", metrics.render())
            } else {
                ("404 Not Found", "GET /metrics\n".to_string())
            };
            let head = format!(
                "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = conn.write_all(head.as_bytes()).await;
            let _ = conn.write_all(body.as_bytes()).await;
            let _ = conn.shutdown().await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_exposition_names_every_metric_with_its_type() {
        let m = Metrics::new();
        m.rows_out("smtp_protocol", 5);
        m.rows_out("smtp_protocol", 2);
        m.bytes_in.fetch_add(100, Ordering::Relaxed);
        m.set_gauges(|g| {
            g.queue_depth = vec![3, 0];
            g.file_bytes_behind = vec![(r"D:\Logs\RECV1.LOG".into(), 42)];
        });
        m.rows_in("smtp_sessions", 4);
        let text = m.render();
        assert!(
            text.contains("mailflow_rows_out_total{table=\"smtp_protocol\"} 7\n"),
            "{text}"
        );
        assert!(text.contains(
            "# TYPE mailflow_input_bytes_total counter\nmailflow_input_bytes_total 100\n"
        ));
        assert!(text.contains("mailflow_queue_depth{lane=\"0\"} 3\n"));
        assert!(
            text.contains(r#"mailflow_file_bytes_behind{file="D:\\Logs\\RECV1.LOG"} 42"#),
            "{text}"
        );
        assert!(text.contains("mailflow_rows_decoded_total{table=\"smtp_sessions\"} 4\n"));
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let (name, value) = line.rsplit_once(' ').expect("name value");
            assert!(name.starts_with("mailflow_"), "{line}");
            value.parse::<f64>().expect("a number");
        }
    }
}
