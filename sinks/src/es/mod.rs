//! The Elasticsearch (and OpenSearch) sink: every table's rows as documents in data streams
//! `logs-exchange.<table>-<namespace>`, through the bulk API, stored exactly once.
//!
//! - [`encode`] turns batches into NDJSON `create` actions, column by column, with ECS names
//!   and a deterministic `_id` per row.
//! - [`client`] sends a bulk request until each of its items is stored, held already (409: a
//!   replay), or dead-lettered, retrying what the cluster asks to be retried.
//! - [`setup`] writes the component and index templates the data streams need.
//!
//! [`EsSink`] batches documents by bytes, count and age into requests and hands each to one
//! of a fixed set of worker threads (bounded concurrency). Handing over waits for a free
//! worker, so a slow or unreachable cluster stalls the runtime's writes (backpressure) and
//! memory stays at a few requests. A write is acknowledged once every request holding any of
//! its documents, and every request before those, is done.

pub mod client;
pub mod encode;
pub mod setup;

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use arrow_array::RecordBatch;
use crossbeam_channel::{Receiver, Sender};

pub use client::{Cluster, Stats};
pub use encode::{Encoder, FieldName, FieldNames, data_stream};

use crate::lake::{Identity, Resume, Source};
use crate::sink::{Closed, Error, Sink};
use client::{Bulk, DeadLetter, Delivery};

/// A secret from the configuration: shown nowhere (its `Debug` is a placeholder).
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps `value`.
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The value, for the one place that sends it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<secret>")
    }
}

/// How the sink proves who it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Auth {
    /// A user and password (HTTP Basic).
    Basic {
        /// The user.
        user: String,
        /// The password.
        password: Secret,
    },
    /// An API key, as Elasticsearch's create-API-key answers it in `encoded`.
    ApiKey(Secret),
}

/// The sink's settings; [`EsConfig::new`] fills in the defaults.
#[derive(Debug, Clone)]
pub struct EsConfig {
    /// The sink's name in the configuration.
    pub name: String,
    /// The cluster's address (`https://es01:9200`); no credentials in it.
    pub url: String,
    /// The data streams' namespace (`logs-exchange.<table>-<namespace>`).
    pub namespace: String,
    /// Credentials, if the cluster wants them.
    pub auth: Option<Auth>,
    /// A PEM file of certificate authorities trusted besides the system's.
    pub ca_file: Option<PathBuf>,
    /// Verify the cluster's certificate (on unless turned off explicitly).
    pub verify_certificates: bool,
    /// A request is sent once its body reaches this many bytes (before compression).
    pub max_bytes: usize,
    /// … or holds this many documents.
    pub max_events: usize,
    /// … or its first document waited this long.
    pub max_age: Duration,
    /// Requests in flight at once.
    pub concurrency: usize,
    /// The first retry's delay, doubled on each retry up to `retry_max`.
    pub retry_initial: Duration,
    /// The longest delay between retries.
    pub retry_max: Duration,
    /// Retries of one request before the run stops (none: retry for as long as it takes).
    pub max_retries: Option<u32>,
    /// One request's timeout.
    pub timeout: Duration,
    /// gzip request bodies.
    pub compression: bool,
    /// Where documents the cluster refuses for good are written (NDJSON).
    pub dead_letter: PathBuf,
    /// Document field names per table and column.
    pub fields: Arc<FieldNames>,
    /// Derived tables and their rows' identities (the rest are log lines, known by lineage).
    pub identities: Arc<HashMap<String, Identity>>,
    /// What a restarted runtime's lake holds: the tails of derived rows it holds are not sent
    /// (see [`Resume::drop_tails`]).
    pub resume: Option<Arc<Resume>>,
}

/// Default request size: 5 MiB before compression.
pub const DEFAULT_MAX_BYTES: usize = 5 << 20;
/// Default documents per request.
pub const DEFAULT_MAX_EVENTS: usize = 10_000;

impl EsConfig {
    /// Settings for the cluster at `url`, with the defaults.
    pub fn new(name: &str, url: &str, dead_letter: PathBuf) -> Self {
        EsConfig {
            name: name.to_string(),
            url: url.to_string(),
            namespace: "default".into(),
            auth: None,
            ca_file: None,
            verify_certificates: true,
            max_bytes: DEFAULT_MAX_BYTES,
            max_events: DEFAULT_MAX_EVENTS,
            max_age: Duration::from_secs(1),
            concurrency: 2,
            retry_initial: Duration::from_millis(250),
            retry_max: Duration::from_secs(30),
            max_retries: None,
            timeout: Duration::from_secs(90),
            compression: true,
            dead_letter,
            fields: Arc::new(FieldNames::default()),
            identities: Arc::new(HashMap::new()),
            resume: None,
        }
    }

    /// Checks the settings; the error names the setting.
    pub fn validate(&self) -> Result<(), String> {
        let url = self.url.trim();
        let rest = url
            .strip_prefix("https://")
            .or_else(|| url.strip_prefix("http://"))
            .ok_or_else(|| format!("url {url:?} is not an http:// or https:// address"))?;
        let host = rest.split(['/', '?', '#']).next().unwrap_or("");
        if host.contains('@') {
            return Err(
                "url holds credentials: put them in user and password, or api_key \
                        (an address is logged, a credential never is)"
                    .into(),
            );
        }
        if host.is_empty() {
            return Err(format!("url {url:?} names no host"));
        }
        if rest.contains(['?', '#']) {
            return Err(format!(
                "url {url:?} has a query or fragment: give the base address"
            ));
        }
        let ns = &self.namespace;
        let bad = |c: char| !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
        if ns.is_empty() || ns.len() > 100 || ns.chars().any(bad) {
            return Err(format!(
                "namespace {ns:?}: lower-case letters, digits and `_` only (it is part of \
                 the data streams' names)"
            ));
        }
        if self.max_bytes < 1024 || self.max_events == 0 || self.concurrency == 0 {
            return Err(
                "max_bytes (at least 1K), max_events and concurrency must be positive".into(),
            );
        }
        if self.retry_initial.is_zero() || self.retry_max < self.retry_initial {
            return Err("retry_initial must be positive and retry_max at least as long".into());
        }
        if !self.compression && self.max_bytes > 100 << 20 {
            return Err(
                "max_bytes above 100M exceeds Elasticsearch's default request limit".into(),
            );
        }
        Ok(())
    }

    /// Validates, builds the client and starts the workers.
    pub fn build(&self) -> Result<EsSink, Error> {
        let fail = |reason: String| Error::Other {
            sink: self.name.clone(),
            reason,
        };
        self.validate().map_err(fail)?;
        let cluster = Cluster::new(self).map_err(fail)?;
        let stats = Arc::new(Stats::default());
        let delivery = Arc::new(Delivery {
            cluster,
            compression: self.compression,
            retry_initial: self.retry_initial,
            retry_max: self.retry_max,
            max_retries: self.max_retries,
            dead_letter: DeadLetter::new(self.dead_letter.clone()),
            stats: Arc::clone(&stats),
            cancel: Default::default(),
        });
        // A rendezvous: a request is handed over only to an idle worker, so at most
        // `concurrency` requests are in flight and one more is being filled.
        let (to_workers, requests) = crossbeam_channel::bounded::<Bulk>(0);
        let (done_tx, done) = crossbeam_channel::unbounded();
        let mut workers = Vec::with_capacity(self.concurrency);
        for k in 0..self.concurrency {
            let (rx, tx, d) = (requests.clone(), done_tx.clone(), Arc::clone(&delivery));
            let handle = std::thread::Builder::new()
                .name(format!("{}-{k}", self.name))
                .spawn(move || {
                    for bulk in rx {
                        let r = d.deliver(&bulk);
                        if tx.send((bulk.seq, r, bulk.body)).is_err() {
                            break;
                        }
                    }
                })
                .map_err(|e| fail(format!("cannot start a worker thread: {e}")))?;
            workers.push(handle);
        }
        Ok(EsSink {
            name: self.name.clone(),
            encoder: Encoder::new(
                &self.namespace,
                Arc::clone(&self.fields),
                Arc::clone(&self.identities),
            ),
            batcher: Batcher {
                open: Bulk {
                    seq: 1,
                    ..Bulk::default()
                },
                opened: None,
                max_bytes: self.max_bytes,
                max_events: self.max_events,
                max_age: self.max_age,
                to_workers: Some(to_workers),
                done,
                finished: BTreeSet::new(),
                watermark: 0,
                spare: Vec::new(),
                failed: None,
            },
            resume: self.resume.clone(),
            writes: 0,
            needs: VecDeque::new(),
            last_need: 0,
            acked: 0,
            delivery,
            workers,
            stats,
        })
    }
}

/// The Elasticsearch sink; see the module docs.
#[derive(Debug)]
pub struct EsSink {
    name: String,
    encoder: Encoder,
    batcher: Batcher,
    resume: Option<Arc<Resume>>,
    writes: u64,
    /// Per write not yet acknowledged: its number and the last request holding its rows.
    needs: VecDeque<(u64, u64)>,
    last_need: u64,
    acked: u64,
    delivery: Arc<Delivery>,
    workers: Vec<std::thread::JoinHandle<()>>,
    stats: Arc<Stats>,
}

/// The request being filled and the ones handed to workers.
#[derive(Debug)]
struct Batcher {
    open: Bulk,
    opened: Option<Instant>,
    max_bytes: usize,
    max_events: usize,
    max_age: Duration,
    to_workers: Option<Sender<Bulk>>,
    done: Receiver<(u64, Result<(), String>, Vec<u8>)>,
    /// Requests done beyond the watermark (they finish out of order).
    finished: BTreeSet<u64>,
    /// Every request up to this one is done.
    watermark: u64,
    /// A body's buffer back from a worker's finished request, reused.
    spare: Vec<u8>,
    /// A request that failed for good: the sink fails from then on (its requests after that
    /// one can never be acknowledged).
    failed: Option<String>,
}

impl Batcher {
    fn full(&self) -> bool {
        self.open.body.len() >= self.max_bytes || self.open.items.len() >= self.max_events
    }

    /// Hands the open request to a worker (waiting for one to be free) and opens the next.
    fn seal(&mut self) -> Result<(), String> {
        if self.open.items.is_empty() {
            return Ok(());
        }
        let mut body = std::mem::take(&mut self.spare);
        // Sized once for a full request (and the row that tips it over): growing a body by
        // doubling copied it about twice over.
        body.reserve(self.max_bytes + (64 << 10));
        let next = Bulk {
            seq: self.open.seq + 1,
            body,
            items: Vec::with_capacity(self.open.items.len()),
        };
        let mut bulk = std::mem::replace(&mut self.open, next);
        self.opened = None;
        // While every worker is busy, finished requests are taken in (their errors too).
        loop {
            let tx = self.to_workers.as_ref().ok_or("the sink is closed")?;
            match tx.send_timeout(bulk, Duration::from_millis(50)) {
                Ok(()) => return Ok(()),
                Err(crossbeam_channel::SendTimeoutError::Timeout(b)) => {
                    bulk = b;
                    self.collect(false)?;
                }
                Err(crossbeam_channel::SendTimeoutError::Disconnected(_)) => {
                    return Err("the sink's workers stopped".into());
                }
            }
        }
    }

    /// Takes in finished requests; with `wait`, until every sealed one is done.
    fn collect(&mut self, wait: bool) -> Result<(), String> {
        let sealed = self.open.seq - 1;
        loop {
            if let Some(f) = &self.failed {
                return Err(f.clone());
            }
            let got = if wait && self.watermark < sealed {
                self.done
                    .recv()
                    .map_err(|_| "the sink's workers stopped".to_string())?
            } else {
                match self.done.try_recv() {
                    Ok(d) => d,
                    Err(_) => return Ok(()),
                }
            };
            let (seq, result, mut body) = got;
            if let Err(e) = result {
                self.failed = Some(e);
                continue;
            }
            if self.spare.capacity() < body.capacity() {
                body.clear();
                self.spare = body;
            }
            self.finished.insert(seq);
            while self.finished.remove(&(self.watermark + 1)) {
                self.watermark += 1;
            }
        }
    }
}

impl EsSink {
    /// What the sink did so far.
    pub fn stats(&self) -> &Arc<Stats> {
        &self.stats
    }

    fn fail(&self, reason: String) -> Error {
        Error::Other {
            sink: self.name.clone(),
            reason,
        }
    }

    fn settle(&mut self) {
        let w = self.batcher.watermark;
        while let Some(&(n, need)) = self.needs.front() {
            if need > w {
                break;
            }
            self.acked = n;
            self.needs.pop_front();
        }
    }

    fn counts(&self) -> Vec<(String, u64)> {
        let s = &self.stats;
        let get = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
        vec![
            ("stored".into(), get(&s.stored)),
            ("duplicates".into(), get(&s.duplicates)),
            ("dead_lettered".into(), get(&s.dead)),
            ("requests".into(), get(&s.requests)),
            ("retries".into(), get(&s.retries)),
            ("bytes_sent".into(), get(&s.bytes_sent)),
        ]
    }

    fn stop_workers(&mut self) {
        self.batcher.to_workers = None;
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
    }
}

impl Sink for EsSink {
    fn name(&self) -> &str {
        &self.name
    }

    fn write(
        &mut self,
        source: &Source<'_>,
        batches: &[(&str, &RecordBatch)],
    ) -> Result<(), Error> {
        self.writes += 1;
        let now = chrono::Utc::now().timestamp_millis();
        let mut need = self.last_need;
        let mut kept = Vec::new();
        for &(table, batch) in batches {
            match &self.resume {
                Some(r) => {
                    let k = r
                        .drop_tails(table, batch.clone())
                        .map_err(|e| self.fail(format!("{table}: {e}")))?;
                    kept.extend(k.map(|b| (table, b)));
                }
                None => kept.push((table, batch.clone())),
            }
        }
        let b = &mut self.batcher;
        for (table, batch) in &kept {
            let (table, batch) = (*table, batch);
            let mut prepared = self
                .encoder
                .prepare(table, source, batch, now)
                .map_err(|r| Error::Other {
                    sink: self.name.clone(),
                    reason: format!("{table}: {r}"),
                })?;
            for row in 0..batch.num_rows() {
                if b.open.items.is_empty() {
                    b.opened = Some(Instant::now());
                }
                let start = b.open.body.len();
                prepared.write_row(row, &mut b.open.body);
                let end = b.open.body.len();
                if end > u32::MAX as usize {
                    return Err(Error::Other {
                        sink: self.name.clone(),
                        reason: "a request grew past 4 GiB".into(),
                    });
                }
                b.open.items.push((start as u32, end as u32));
                need = b.open.seq;
                if b.full() {
                    b.seal().map_err(|reason| Error::Other {
                        sink: self.name.clone(),
                        reason,
                    })?;
                }
            }
        }
        self.last_need = need;
        self.needs.push_back((self.writes, need));
        self.batcher.collect(false).map_err(|r| self.fail(r))?;
        self.settle();
        Ok(())
    }

    fn acked(&self) -> u64 {
        self.acked
    }

    fn tick(&mut self) -> Result<(), Error> {
        let b = &mut self.batcher;
        if b.opened.is_some_and(|t| t.elapsed() >= b.max_age) {
            b.seal().map_err(|r| self.fail(r))?;
        }
        self.batcher.collect(false).map_err(|r| self.fail(r))?;
        self.settle();
        Ok(())
    }

    fn flush(&mut self) -> Result<(), Error> {
        self.batcher.seal().map_err(|r| self.fail(r))?;
        self.batcher.collect(true).map_err(|r| self.fail(r))?;
        self.settle();
        Ok(())
    }

    fn close(mut self: Box<Self>) -> Result<Closed, Error> {
        let r = self.flush();
        self.stop_workers();
        r?;
        Ok(Closed {
            files: Vec::new(),
            counts: self
                .counts()
                .into_iter()
                .map(|(k, v)| (format!("{}.{k}", self.name), v))
                .collect(),
        })
    }

    fn abort(mut self: Box<Self>) {
        self.delivery.cancel.store(true, Ordering::Relaxed);
        self.stop_workers();
    }
}

impl Drop for EsSink {
    fn drop(&mut self) {
        // Workers left running after an unwind would retry for ever.
        self.delivery.cancel.store(true, Ordering::Relaxed);
        self.batcher.to_workers = None;
    }
}

#[cfg(test)]
mod tests {
    use std::io::{BufRead, BufReader, Read, Write};
    use std::net::TcpListener;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use arrow_array::{Int64Array, RecordBatch, StringArray, TimestampMillisecondArray};

    use super::*;

    /// A bulk endpoint that acknowledges every item, the request holding the line at offset 0
    /// only after `slow`.
    fn server(slow: Duration) -> (String, Arc<AtomicUsize>) {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bound");
        let url = format!("http://{}", listener.local_addr().expect("an address"));
        let requests = Arc::new(AtomicUsize::new(0));
        let count = Arc::clone(&requests);
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { return };
                let count = Arc::clone(&count);
                std::thread::spawn(move || {
                    let mut r = BufReader::new(conn);
                    loop {
                        let mut len = 0usize;
                        let mut line = String::new();
                        loop {
                            line.clear();
                            if r.read_line(&mut line).unwrap_or(0) == 0 {
                                return;
                            }
                            let l = line.to_ascii_lowercase();
                            if let Some(v) = l.strip_prefix("content-length:") {
                                len = v.trim().parse().unwrap_or(0);
                            }
                            if line == "\r\n" {
                                break;
                            }
                        }
                        let mut body = vec![0; len];
                        if r.read_exact(&mut body).is_err() {
                            return;
                        }
                        count.fetch_add(1, Ordering::SeqCst);
                        let first = br#""exchange.source_offset":0}"#;
                        if body.windows(first.len()).any(|w| w == first) {
                            std::thread::sleep(slow);
                        }
                        let reply = r#"{"errors":false}"#;
                        let _ = write!(
                            r.get_mut(),
                            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n\
                             content-length: {}\r\n\r\n{reply}",
                            reply.len()
                        );
                    }
                });
            }
        });
        (url, requests)
    }

    fn batch(rows: usize, from: i64) -> RecordBatch {
        let schema = crate::testing::lineage_schema(Vec::new());
        RecordBatch::try_new(
            schema,
            vec![
                Arc::new(TimestampMillisecondArray::from(vec![Some(0); rows]).with_timezone("UTC")),
                Arc::new(StringArray::from(vec!["EX01"; rows])),
                Arc::new(Int64Array::from(
                    (from..from + rows as i64).collect::<Vec<_>>(),
                )),
            ],
        )
        .expect("a valid batch")
    }

    #[test]
    fn writes_are_acknowledged_in_order_when_their_requests_are_done() {
        let (url, requests) = server(Duration::from_millis(600));
        let dir = tempfile::tempdir().expect("a temp dir");
        let mut config = EsConfig::new("es", &url, dir.path().join("dead.ndjson"));
        config.max_events = 10;
        config.max_age = Duration::from_secs(3600);
        config.compression = false;
        let mut sink = config.build().expect("a sink");
        let source = Source {
            fingerprint: "fp",
            file: "a.log",
            end_offset: 1,
        };
        // Write 1 fills the first request (slow to answer); write 2 the second; write 3 waits
        // in the open request; write 4 has no rows.
        sink.write(&source, &[("t", &batch(10, 0))])
            .expect("written");
        sink.write(&source, &[("t", &batch(10, 100))])
            .expect("written");
        sink.write(&source, &[("t", &batch(3, 200))])
            .expect("written");
        sink.write(&source, &[]).expect("written");
        let deadline = Instant::now() + Duration::from_secs(10);
        while requests.load(Ordering::SeqCst) < 2 {
            assert!(Instant::now() < deadline);
            std::thread::sleep(Duration::from_millis(10));
        }
        std::thread::sleep(Duration::from_millis(100));
        sink.tick().expect("a tick");
        assert_eq!(
            sink.acked(),
            0,
            "the second request is done, but not the first before it"
        );
        while sink.acked() < 2 {
            assert!(
                Instant::now() < deadline,
                "the first request never finished"
            );
            std::thread::sleep(Duration::from_millis(20));
            sink.tick().expect("a tick");
        }
        assert_eq!(sink.acked(), 2, "writes 3 and 4 wait for the open request");
        sink.flush().expect("flushed");
        assert_eq!(sink.acked(), 4);
        let closed = Box::new(sink).close().expect("closed");
        let stored = closed
            .counts
            .iter()
            .find(|(k, _)| k == "es.stored")
            .map(|(_, v)| *v);
        assert_eq!(stored, Some(23));
    }
}
