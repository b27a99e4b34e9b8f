//! Talking to the cluster: the HTTP client with its TLS and credentials, and the delivery of
//! one bulk request until every item in it is stored or dead-lettered.
//!
//! Delivery follows the bulk API's semantics item by item, as Filebeat does:
//! - a connection error, 429 or 502/503/504 on the whole request: the same request again,
//!   after an exponential backoff with jitter;
//! - a response with `errors: true`: items stored (2xx) and items the cluster already holds
//!   (409 on `create`: a replay) are done; only items refused with 429 or 5xx are sent again;
//!   any other refusal (a mapping conflict, a document the cluster cannot parse) is permanent
//!   and goes to the dead letter with the cluster's error type and reason;
//! - 413: the request is split in halves, each sent on its own; a single document too large
//!   for the cluster goes to the dead letter;
//! - 401 and 403 stop the run: retrying does not fix credentials.
//!
//! Nothing is acknowledged before the cluster answered for it, and nothing is dropped: a
//! cluster that stays down keeps the request retrying (at the backoff's cap), which stalls the
//! sink's queue and, behind it, the reading of logs.

use std::fs::File;
use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use reqwest::StatusCode;
use reqwest::header::{AUTHORIZATION, CONTENT_ENCODING, CONTENT_TYPE, HeaderValue};
use serde::Deserialize;

use super::{Auth, EsConfig};

/// A cluster's address and credentials, with a client made for them.
#[derive(Debug, Clone)]
pub struct Cluster {
    client: reqwest::blocking::Client,
    base: String,
    auth: Option<Credential>,
}

/// How requests prove who sends them; never printed (see [`super::Secret`]).
#[derive(Clone)]
enum Credential {
    Basic(String, String),
    Header(HeaderValue),
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<credential>")
    }
}

/// What a request came back with.
#[derive(Debug)]
pub struct Reply {
    /// The HTTP status.
    pub status: StatusCode,
    /// The body.
    pub body: Bytes,
}

impl Cluster {
    /// A client for `config`'s cluster: its TLS settings and credentials.
    pub fn new(config: &EsConfig) -> Result<Self, String> {
        // reqwest is built without a default crypto provider (see the workspace manifest);
        // an error here means one is installed already, which serves as well.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut builder = reqwest::blocking::Client::builder()
            .timeout(config.timeout)
            .connect_timeout(config.timeout.min(Duration::from_secs(10)))
            .pool_max_idle_per_host(config.concurrency.max(1))
            .user_agent(concat!("mailflow/", env!("CARGO_PKG_VERSION")));
        if let Some(ca) = &config.ca_file {
            let pem = std::fs::read(ca)
                .map_err(|e| format!("cannot read the CA file {}: {e}", ca.display()))?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| {
                format!("the CA file {} holds no PEM certificate: {e}", ca.display())
            })?;
            if certs.is_empty() {
                return Err(format!(
                    "the CA file {} holds no PEM certificate",
                    ca.display()
                ));
            }
            builder = builder.tls_certs_merge(certs);
        }
        if !config.verify_certificates {
            builder = builder.tls_danger_accept_invalid_certs(true);
        }
        let client = builder
            .build()
            .map_err(|e| format!("cannot build the HTTP client: {e}"))?;
        let auth = match &config.auth {
            None => None,
            Some(Auth::Basic { user, password }) => Some(Credential::Basic(
                user.clone(),
                password.expose().to_string(),
            )),
            Some(Auth::ApiKey(key)) => {
                let mut h = HeaderValue::from_str(&format!("ApiKey {}", key.expose()))
                    .map_err(|_| "the api_key holds a character HTTP cannot carry".to_string())?;
                h.set_sensitive(true);
                Some(Credential::Header(h))
            }
        };
        Ok(Cluster {
            client,
            base: config.url.trim_end_matches('/').to_string(),
            auth,
        })
    }

    /// The cluster's address, for messages.
    pub fn url(&self) -> &str {
        &self.base
    }

    /// Sends `method path` with a JSON or NDJSON `body`; an error is a connection failure.
    pub fn request(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<(Bytes, &'static str, bool)>,
    ) -> Result<Reply, String> {
        let mut req = self.client.request(method, format!("{}{path}", self.base));
        match &self.auth {
            // reqwest marks the header it makes sensitive, as it is here.
            Some(Credential::Basic(user, password)) => req = req.basic_auth(user, Some(password)),
            Some(Credential::Header(h)) => req = req.header(AUTHORIZATION, h.clone()),
            None => {}
        }
        if let Some((bytes, kind, gzipped)) = body {
            req = req.header(CONTENT_TYPE, kind);
            if gzipped {
                req = req.header(CONTENT_ENCODING, "gzip");
            }
            req = req.body(bytes);
        }
        let resp = req.send().map_err(|e| {
            if refused_certificate(&e) {
                // Retrying does not make a certificate trusted: say so and stop.
                format!(
                    "{FATAL}{}: the cluster's TLS certificate is not trusted ({}); give its CA \
                     in ca_file, or for a test cluster only, verify_certificates = false",
                    self.base,
                    describe(e)
                )
            } else {
                describe(e)
            }
        })?;
        let status = resp.status();
        let body = resp.bytes().map_err(describe)?;
        Ok(Reply { status, body })
    }
}

/// Marks a request error that retrying cannot fix.
pub(crate) const FATAL: &str = "fatal: ";

/// Whether `e` is rustls refusing the server's certificate.
fn refused_certificate(e: &reqwest::Error) -> bool {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(e);
    while let Some(c) = cause {
        let tls = c.downcast_ref::<rustls::Error>().or_else(|| {
            c.downcast_ref::<std::io::Error>()
                .and_then(|io| io.get_ref())
                .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        });
        if matches!(
            tls,
            Some(rustls::Error::InvalidCertificate(_) | rustls::Error::NoCertificatesPresented)
        ) {
            return true;
        }
        cause = c.source();
    }
    false
}

/// A reqwest error with its causes (connection refused, certificate unknown…), which its own
/// text leaves out. Credentials are never in it: they travel in a header, not the URL.
fn describe(e: reqwest::Error) -> String {
    let mut text = e.to_string();
    let mut cause = std::error::Error::source(&e);
    while let Some(c) = cause {
        text.push_str(": ");
        text.push_str(&c.to_string());
        cause = c.source();
    }
    text
}

/// One bulk request's items: NDJSON, an action line and a document line each.
#[derive(Debug, Default)]
pub(crate) struct Bulk {
    /// Its place in the sink's order of requests.
    pub seq: u64,
    pub body: Vec<u8>,
    /// Each item's bytes in `body`: where its action line starts, and where its document
    /// line ends (after the newline).
    pub items: Vec<(u32, u32)>,
}

/// Counters of what the sink did, shared with its workers.
#[derive(Debug, Default)]
pub struct Stats {
    /// Documents the cluster stored.
    pub stored: AtomicU64,
    /// Documents the cluster held already (409 on `create`: a replay).
    pub duplicates: AtomicU64,
    /// Documents refused for good, written to the dead letter.
    pub dead: AtomicU64,
    /// Bulk requests sent, retries included.
    pub requests: AtomicU64,
    /// Requests sent again (whole, or their failed items).
    pub retries: AtomicU64,
    /// Bytes sent, as they went on the wire.
    pub bytes_sent: AtomicU64,
}

/// What delivering needs besides the request: the cluster, the retry policy, the dead letter.
#[derive(Debug)]
pub(crate) struct Delivery {
    pub cluster: Cluster,
    pub compression: bool,
    pub retry_initial: Duration,
    pub retry_max: Duration,
    pub max_retries: Option<u32>,
    pub dead_letter: DeadLetter,
    pub stats: Arc<Stats>,
    /// Set when the sink is aborted: stop retrying.
    pub cancel: AtomicBool,
}

/// The dead letter: documents the cluster refused for good, one JSON object a line with the
/// cluster's reason; opened on the first refusal.
#[derive(Debug)]
pub(crate) struct DeadLetter {
    path: PathBuf,
    file: Mutex<Option<File>>,
}

impl DeadLetter {
    pub(crate) fn new(path: PathBuf) -> Self {
        DeadLetter {
            path,
            file: Mutex::new(None),
        }
    }

    /// Appends `items` (action and document lines, the status and the cluster's error) and
    /// makes them durable before returning: they are acknowledged as handled after this.
    fn append(&self, items: &[(&[u8], u16, &str, &str)]) -> Result<(), String> {
        let err = |e: std::io::Error| {
            format!(
                "cannot write the dead letter {}: {e} (the documents it refused stay \
                 unacknowledged)",
                self.path.display()
            )
        };
        let mut guard = self
            .file
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if guard.is_none() {
            if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir).map_err(err)?;
            }
            let f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.path)
                .map_err(err)?;
            *guard = Some(f);
        }
        let Some(w) = guard.as_mut() else {
            return Ok(());
        };
        let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        // One append of whole lines: every lane's sink appends to the same file, and an
        // append of one buffer is not interleaved with another's.
        let mut text_out = String::new();
        for (item, status, kind, reason) in items {
            let text = String::from_utf8_lossy(item);
            let mut lines = text.trim_end().splitn(2, '\n');
            let action = lines.next().unwrap_or("null");
            let document = lines.next().unwrap_or("null");
            let line = format!(
                "{{\"time\":{},\"status\":{status},\"error\":{{\"type\":{},\"reason\":{}}},\
                 \"action\":{action},\"document\":{document}}}\n",
                json_string(&now),
                json_string(kind),
                json_string(reason),
            );
            text_out.push_str(&line);
        }
        w.write_all(text_out.as_bytes()).map_err(err)?;
        w.sync_data().map_err(err)
    }
}

fn json_string(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into())
}

/// The bulk response, items read only when some failed.
#[derive(Deserialize)]
struct BulkReply<'a> {
    #[serde(default)]
    errors: bool,
    #[serde(borrow, default)]
    items: Option<&'a serde_json::value::RawValue>,
}

#[derive(Deserialize)]
struct ItemReply {
    #[serde(alias = "index", alias = "update", alias = "delete")]
    create: ItemResult,
}

#[derive(Deserialize)]
struct ItemResult {
    status: u16,
    #[serde(default)]
    error: Option<ItemError>,
}

#[derive(Deserialize, Default)]
struct ItemError {
    #[serde(rename = "type", default)]
    kind: Option<String>,
    #[serde(default)]
    reason: Option<String>,
}

/// The bulk endpoint: only what delivery reads comes back (a response can be as large as its
/// request otherwise).
pub(crate) const BULK_PATH: &str =
    "/_bulk?filter_path=errors,items.*.status,items.*.error.type,items.*.error.reason";

/// The first bytes of a response body, for an error message.
fn excerpt(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(&body[..body.len().min(300)]);
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

enum Sent {
    /// Per item of the request: its status, and the error type and reason of a refusal.
    Items(Option<Vec<ItemResult>>),
    Retry(String),
    TooLarge,
    Fatal(String),
}

impl Delivery {
    /// Sends `bulk` until each item is stored, held already, or dead-lettered; an error stops
    /// the run (credentials refused, retries exhausted, a response that makes no sense).
    pub(crate) fn deliver(&self, bulk: &Bulk) -> Result<(), String> {
        let all: Vec<u32> = (0..bulk.items.len() as u32).collect();
        let mut work = vec![all];
        let mut scratch = Vec::new();
        while let Some(mut pending) = work.pop() {
            let mut attempt = 0u32;
            loop {
                let whole = pending.len() == bulk.items.len();
                let body: &[u8] = if whole {
                    &bulk.body
                } else {
                    scratch.clear();
                    for &i in &pending {
                        let (from, to) = bulk.items[i as usize];
                        scratch.extend_from_slice(&bulk.body[from as usize..to as usize]);
                    }
                    &scratch
                };
                let sent = self.send(body);
                match sent {
                    Sent::Items(None) => {
                        self.stats
                            .stored
                            .fetch_add(pending.len() as u64, Ordering::Relaxed);
                        break;
                    }
                    Sent::Items(Some(results)) => {
                        if results.len() != pending.len() {
                            return Err(format!(
                                "the cluster answered for {} items of a request of {}",
                                results.len(),
                                pending.len()
                            ));
                        }
                        let mut again = Vec::new();
                        let mut dead = Vec::new();
                        let mut last = String::new();
                        for (&i, r) in pending.iter().zip(&results) {
                            match r.status {
                                200..=299 => {
                                    self.stats.stored.fetch_add(1, Ordering::Relaxed);
                                }
                                409 => {
                                    self.stats.duplicates.fetch_add(1, Ordering::Relaxed);
                                }
                                429 | 500..=599 => {
                                    again.push(i);
                                    last = format!("item status {}", r.status);
                                }
                                s => dead.push((i, s, r.error.as_ref())),
                            }
                        }
                        if !dead.is_empty() {
                            let items: Vec<(&[u8], u16, &str, &str)> = dead
                                .iter()
                                .map(|&(i, s, e)| {
                                    let (from, to) = bulk.items[i as usize];
                                    (
                                        &bulk.body[from as usize..to as usize],
                                        s,
                                        e.and_then(|e| e.kind.as_deref()).unwrap_or(""),
                                        e.and_then(|e| e.reason.as_deref()).unwrap_or(""),
                                    )
                                })
                                .collect();
                            self.dead_letter.append(&items)?;
                            self.stats
                                .dead
                                .fetch_add(dead.len() as u64, Ordering::Relaxed);
                        }
                        if again.is_empty() {
                            break;
                        }
                        pending = again;
                        self.backoff(&mut attempt, &last)?;
                    }
                    Sent::Retry(reason) => self.backoff(&mut attempt, &reason)?,
                    Sent::TooLarge if pending.len() == 1 => {
                        let (from, to) = bulk.items[pending[0] as usize];
                        let item = &bulk.body[from as usize..to as usize];
                        self.dead_letter.append(&[(
                            item,
                            413,
                            "request_entity_too_large",
                            "the document alone is larger than the cluster accepts \
                             (http.max_content_length)",
                        )])?;
                        self.stats.dead.fetch_add(1, Ordering::Relaxed);
                        break;
                    }
                    Sent::TooLarge => {
                        let half = pending.split_off(pending.len() / 2);
                        // Depth first, the first half first: the items keep their order.
                        work.push(half);
                        work.push(pending);
                        break;
                    }
                    Sent::Fatal(reason) => return Err(reason),
                }
            }
        }
        Ok(())
    }

    fn send(&self, body: &[u8]) -> Sent {
        let payload = if self.compression {
            let mut gz = flate2::write::GzEncoder::new(
                Vec::with_capacity(body.len() / 4),
                flate2::Compression::fast(),
            );
            match gz.write_all(body).and_then(|_| gz.finish()) {
                Ok(v) => Bytes::from(v),
                Err(e) => return Sent::Fatal(format!("cannot compress a request: {e}")),
            }
        } else {
            Bytes::copy_from_slice(body)
        };
        self.stats.requests.fetch_add(1, Ordering::Relaxed);
        self.stats
            .bytes_sent
            .fetch_add(payload.len() as u64, Ordering::Relaxed);
        let reply = match self.cluster.request(
            reqwest::Method::POST,
            BULK_PATH,
            Some((payload, "application/x-ndjson", self.compression)),
        ) {
            Ok(r) => r,
            Err(e) => match e.strip_prefix(FATAL) {
                Some(reason) => return Sent::Fatal(reason.to_string()),
                None => return Sent::Retry(e),
            },
        };
        let status = reply.status;
        match status.as_u16() {
            200 => {}
            413 => return Sent::TooLarge,
            429 | 502 | 503 | 504 => {
                return Sent::Retry(format!("{status}: {}", excerpt(&reply.body)));
            }
            401 | 403 => {
                return Sent::Fatal(format!(
                    "{} refused the credentials ({status}): check the sink's user and \
                     password or api_key, and that they may write to logs-exchange.*",
                    self.cluster.url()
                ));
            }
            _ => {
                return Sent::Fatal(format!(
                    "{} refused a bulk request ({status}): {}",
                    self.cluster.url(),
                    excerpt(&reply.body)
                ));
            }
        }
        let parsed: BulkReply<'_> = match serde_json::from_slice(&reply.body) {
            Ok(p) => p,
            Err(e) => {
                return Sent::Fatal(format!(
                    "the bulk response is not what the bulk API answers ({e}): {}",
                    excerpt(&reply.body)
                ));
            }
        };
        if !parsed.errors {
            return Sent::Items(None);
        }
        let Some(items) = parsed.items else {
            return Sent::Fatal("a bulk response with errors and no items".into());
        };
        match serde_json::from_str::<Vec<ItemReply>>(items.get()) {
            Ok(items) => Sent::Items(Some(items.into_iter().map(|i| i.create).collect())),
            Err(e) => Sent::Fatal(format!("the bulk response's items are unreadable: {e}")),
        }
    }

    /// Waits before attempt `attempt + 1`: exponential, capped, with jitter (half the delay
    /// fixed, half random, so that many agents retrying after one outage spread out).
    fn backoff(&self, attempt: &mut u32, reason: &str) -> Result<(), String> {
        if let Some(limit) = self.max_retries
            && *attempt >= limit
        {
            return Err(format!(
                "{} still failing after {limit} retries ({reason}); nothing of it was \
                 acknowledged, the next start sends it again",
                self.cluster.url()
            ));
        }
        let exp = self
            .retry_initial
            .saturating_mul(1u32.checked_shl(*attempt).unwrap_or(u32::MAX));
        let delay = exp.min(self.retry_max);
        let half = delay / 2;
        let jitter = half.mul_f64(rand::random::<f64>());
        let until = std::time::Instant::now() + half + jitter;
        *attempt = attempt.saturating_add(1);
        self.stats.retries.fetch_add(1, Ordering::Relaxed);
        while std::time::Instant::now() < until {
            if self.cancel.load(Ordering::Relaxed) {
                return Err("cancelled".into());
            }
            std::thread::sleep(
                until
                    .saturating_duration_since(std::time::Instant::now())
                    .min(Duration::from_millis(100)),
            );
        }
        Ok(())
    }
}
