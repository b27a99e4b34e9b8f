//! The Elasticsearch sink against `tests/es_server.py`, a server that speaks the bulk and
//! template APIs as Elasticsearch documents them (no real cluster can be installed here), with
//! real processes: partial failures, 429 storms, 413 splits, a server restart mid-run, a
//! SIGKILL of mailflow and a rerun, mapping conflicts, credentials. What the cluster stored is
//! checked row by row against the lake written beside it (`tests/es_check.py`).
#![allow(clippy::unwrap_used)]

mod cli;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use cli::{mailflow, mailflow_command, python, python_script, run_mailflow, script};

/// The test server, killed when dropped.
struct EsServer {
    child: Child,
    port: u16,
    data: PathBuf,
    args: Vec<String>,
}

impl EsServer {
    fn start(dir: &Path, args: &[&str]) -> Self {
        let data = dir.join("es-data");
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        let (child, port) = Self::spawn(dir, &data, 0, &args);
        EsServer {
            child,
            port,
            data,
            args,
        }
    }

    // The child is returned to an `EsServer`, whose `Drop` kills and waits for it.
    #[allow(clippy::zombie_processes)]
    fn spawn(dir: &Path, data: &Path, port: u16, args: &[String]) -> (Child, u16) {
        let port_file = dir.join("es-port");
        let _ = std::fs::remove_file(&port_file);
        let mut child = Command::new(python())
            .arg(script("es_server.py"))
            .args(["--port", &port.to_string(), "--data"])
            .arg(data)
            .arg("--port-file")
            .arg(&port_file)
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("python3 runs tests/es_server.py");
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(p) = std::fs::read_to_string(&port_file)
                && let Ok(p) = p.trim().parse()
            {
                return (child, p);
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("the test server did not start");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn url(&self) -> String {
        let scheme = if self.args.iter().any(|a| a == "--tls-cert") {
            "https"
        } else {
            "http"
        };
        format!("{scheme}://127.0.0.1:{}", self.port)
    }

    /// Kills the server and starts it again on the same port with the same data, after
    /// `down` (a cluster restart: what it stored stays).
    fn restart(&mut self, dir: &Path, down: Duration) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        std::thread::sleep(down);
        let (child, _) = Self::spawn(dir, &self.data, self.port, &self.args);
        self.child = child;
    }

    fn http(&self, method: &str, path: &str, body: &str) -> String {
        let mut s = TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        write!(
            s,
            "{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: \
             application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out.split_once("\r\n\r\n").unwrap().1.to_string()
    }

    fn stats(&self) -> serde_json::Value {
        serde_json::from_str(&self.http("GET", "/_test/stats", "")).unwrap()
    }

    fn faults(&self, json: &str) {
        self.http("POST", "/_test/faults", json);
    }
}

impl Drop for EsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn generate(dir: &Path, bytes: &str) -> PathBuf {
    let out = dir.join("logs");
    cli::generate_mixed(&out, bytes, &[]);
    out
}

/// A config with a lake and the test server as sinks; `es` adds keys to the cluster's sink.
fn config(dir: &Path, logs: &Path, url: &str, es: &str) -> PathBuf {
    let path = dir.join("mailflow.toml");
    std::fs::write(
        &path,
        format!(
            "[[sources]]\npaths = ['{}']\n\n[sinks.lake]\ntype = \"parquet\"\npath = '{}'\n\
             max_file_age = \"300ms\"\n\n[sinks.search]\ntype = \"elasticsearch\"\nurl = \"{url}\"\n\
             retry_initial = \"5ms\"\nretry_max = \"100ms\"\n{es}\n\n\
             [agent]\nstate_dir = '{}'\npoll_interval = \"50ms\"\ncheckpoint_interval = \"100ms\"\n\
             rotate_after = \"200ms\"\nthreads = 2\n",
            logs.display(),
            dir.join("lake").display(),
            dir.join("state").display()
        ),
    )
    .unwrap();
    path
}

fn setup(url: &str) {
    let out = mailflow(&["es", "setup", "--url", url]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("data streams"));
}

/// Per table: (lake rows, documents, rows only in the lake, documents only in the cluster).
fn check(lake: &Path, es: &EsServer) -> BTreeMap<String, (u64, u64, u64, u64)> {
    let json: serde_json::Value = serde_json::from_str(&python_script(
        "es_check.py",
        &[lake.as_os_str(), es.url().as_ref()],
    ))
    .unwrap();
    json.as_object()
        .unwrap()
        .iter()
        .map(|(t, v)| {
            let n = |k: &str| v[k].as_u64().unwrap();
            (
                t.clone(),
                (n("lake"), n("es"), n("only_lake"), n("only_es")),
            )
        })
        .collect()
}

/// Every row of the lake is one document, and there is no other.
fn assert_stored_once(lake: &Path, es: &EsServer) {
    let got = check(lake, es);
    assert!(got.len() >= 5, "{got:?}");
    for (table, (rows, docs, only_lake, only_es)) in &got {
        assert!(*rows > 0, "{table}: no rows in the lake: {got:?}");
        assert_eq!(
            (rows, only_lake, only_es),
            (docs, &0, &0),
            "{table}: lake rows, documents, only in the lake, only in the cluster: {got:?}"
        );
    }
}

fn ingest(config: &Path) -> Output {
    run_mailflow(&[
        "ingest".as_ref(),
        "--config".as_ref(),
        config.as_os_str(),
        "--quiet".as_ref(),
    ])
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn setup_installs_every_template_and_running_it_again_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let es = EsServer::start(dir.path(), &[]);
    let dry = mailflow(&["es", "setup", "--dry-run"]);
    let printed = String::from_utf8_lossy(&dry.stdout);
    for table in [
        "message_tracking",
        "smtp_protocol",
        "smtp_sessions",
        "messages",
        "rejects",
    ] {
        assert!(
            printed.contains(&format!("PUT /_index_template/logs-exchange.{table}\n")),
            "{table} missing from the dry run"
        );
    }
    assert!(printed.contains("\"data_stream\""));
    assert!(printed.contains("\"wildcard\""));
    assert!(printed.contains("\"index.lifecycle.name\": \"logs\""));
    assert_eq!(es.stats()["requests"], 0, "a dry run sends nothing");
    setup(&es.url());
    let first = es.http("GET", "/_index_template/logs-exchange.smtp_sessions", "");
    setup(&es.url());
    let second = es.http("GET", "/_index_template/logs-exchange.smtp_sessions", "");
    assert_eq!(first, second);
    let mapping = es.http(
        "GET",
        "/_component_template/mailflow-exchange.smtp_sessions@mappings",
        "",
    );
    let v: serde_json::Value = serde_json::from_str(&mapping).unwrap();
    let props =
        &v["component_templates"][0]["component_template"]["template"]["mappings"]["properties"];
    assert_eq!(props["source"]["properties"]["ip"]["type"], "ip");
    assert_eq!(props["tls"]["properties"]["version"]["type"], "keyword");
    assert_eq!(
        props["mailflow"]["properties"]["diagnosis"]["properties"]["code"]["type"],
        "keyword"
    );
}

#[test]
fn partial_failures_storms_and_oversized_requests_store_every_line_once() {
    let dir = tempfile::tempdir().unwrap();
    // A fifth of the items refused with 429, five whole requests refused in a row (429 and
    // 5xx), and requests over 24 KB on the wire refused with 413.
    let es = EsServer::start(
        dir.path(),
        &[
            "--item-reject-rate",
            "0.2",
            "--reject-next",
            "429,503,429,502,504",
            "--max-content-length",
            "24000",
        ],
    );
    setup(&es.url());
    let logs = generate(dir.path(), "3M");
    let config = config(dir.path(), &logs, &es.url(), "max_bytes = \"256K\"");
    let out = ingest(&config);
    assert!(out.status.success(), "{}", text(&out));
    let stats = es.stats();
    assert!(stats["item_rejections"].as_u64().unwrap() > 100, "{stats}");
    assert_eq!(stats["request_rejections"], 5, "{stats}");
    assert!(stats["too_large"].as_u64().unwrap() > 0, "{stats}");
    assert_eq!(stats["conflicts"], 0, "{stats}");
    assert_eq!(stats["mapping_errors"], 0, "{stats}");
    assert_stored_once(&dir.path().join("lake"), &es);
    let summary = text(&out);
    assert!(summary.contains("search: "), "{summary}");
    assert!(summary.contains("0 dead-lettered"), "{summary}");
}

#[test]
fn a_killed_ingest_run_again_stores_every_line_once() {
    let dir = tempfile::tempdir().unwrap();
    let es = EsServer::start(dir.path(), &[]);
    setup(&es.url());
    // Slow enough that the kill lands mid-run.
    es.faults(r#"{"delay_ms": 30}"#);
    let logs = generate(dir.path(), "4M");
    let config = config(dir.path(), &logs, &es.url(), "max_bytes = \"64K\"");
    let mut child = mailflow_command()
        .args(["ingest", "--quiet", "--threads", "2", "--config"])
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while es.stats()["created"].as_u64().unwrap() < 2000 {
        assert!(Instant::now() < deadline, "no documents arrived");
        assert!(child.try_wait().unwrap().is_none(), "ingest ended too soon");
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let before = es.stats()["created"].as_u64().unwrap();
    es.faults(r#"{"delay_ms": 0}"#);
    let out = ingest(&config);
    assert!(out.status.success(), "{}", text(&out));
    assert!(before > 0);
    assert_stored_once(&dir.path().join("lake"), &es);
}

#[test]
fn the_agent_rides_out_a_cluster_restart_and_a_kill() {
    let dir = tempfile::tempdir().unwrap();
    let mut es = EsServer::start(dir.path(), &[]);
    setup(&es.url());
    es.faults(r#"{"delay_ms": 20}"#);
    let logs = generate(dir.path(), "4M");
    let config = config(dir.path(), &logs, &es.url(), "max_bytes = \"64K\"");
    let run = |until_idle: bool| {
        let mut c = mailflow_command();
        c.args(["run", "--config"]).arg(&config);
        if until_idle {
            c.arg("--until-idle");
        }
        c.stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    // First the agent is killed while it writes.
    let mut agent = run(false);
    let deadline = Instant::now() + Duration::from_secs(60);
    while es.stats()["created"].as_u64().unwrap() < 1500 {
        assert!(Instant::now() < deadline, "no documents arrived");
        std::thread::sleep(Duration::from_millis(20));
    }
    agent.kill().unwrap();
    agent.wait().unwrap();
    // Then the cluster goes down for two seconds while the restarted agent writes.
    let mut agent = run(true);
    let seen = es.stats()["created"].as_u64().unwrap();
    while es.stats()["created"].as_u64().unwrap() < seen + 1000 {
        assert!(Instant::now() < deadline, "no documents after the restart");
        std::thread::sleep(Duration::from_millis(20));
    }
    es.restart(dir.path(), Duration::from_secs(2));
    es.faults(r#"{"delay_ms": 0}"#);
    let out = wait_output(&mut agent, Duration::from_secs(120));
    assert!(out.status.success(), "{}", text(&out));
    // The replay after the kill sent lines the cluster held (the server's own counters
    // restarted with it; the agent's summary counts across).
    let summary = text(&out);
    let held: u64 = summary
        .split(" held already")
        .next()
        .and_then(|s| s.rsplit(", ").next())
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0);
    assert!(held > 0, "the replay sent held lines again: {summary}");
    assert_stored_once(&dir.path().join("lake"), &es);
}

fn wait_output(child: &mut Child, limit: Duration) -> Output {
    let deadline = Instant::now() + limit;
    while child.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "did not finish in {limit:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut stdout = Vec::new();
    let mut stderr = Vec::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_end(&mut stdout)
        .unwrap();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_end(&mut stderr)
        .unwrap();
    Output {
        status: child.wait().unwrap(),
        stdout,
        stderr,
    }
}

#[test]
fn documents_a_mapping_refuses_go_to_the_dead_letter_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let es = EsServer::start(dir.path(), &[]);
    setup(&es.url());
    // The admin's own component template says connector ids are numbers: every tracking row
    // with a connector id is refused, with a mapping error.
    es.http(
        "PUT",
        "/_component_template/logs-exchange.message_tracking@custom",
        r#"{"template": {"mappings": {"properties": {"exchange": {"properties": {"connector_id": {"type": "long"}}}}}}}"#,
    );
    let logs = generate(dir.path(), "1M");
    let config = config(dir.path(), &logs, &es.url(), "");
    let out = ingest(&config);
    assert!(out.status.success(), "{}", text(&out));
    let dead_letter = dir.path().join("lake/_dead_letter/search.ndjson");
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(&dead_letter)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(!lines.is_empty());
    for l in &lines {
        assert_eq!(l["status"], 400);
        assert_eq!(l["error"]["type"], "document_parsing_exception");
        let reason = l["error"]["reason"].as_str().unwrap();
        assert!(
            reason.contains("failed to parse field [exchange.connector_id] of type [long]"),
            "{reason}"
        );
        assert_eq!(
            l["action"]["create"]["_index"],
            "logs-exchange.message_tracking-default"
        );
        assert!(l["document"]["exchange.connector_id"].is_string());
    }
    let got = check(&dir.path().join("lake"), &es);
    let (rows, docs, _, _) = got["message_tracking"];
    assert_eq!(
        rows,
        docs + lines.len() as u64,
        "stored and dead-lettered: every row"
    );
    assert!(text(&out).contains(&format!("{} dead-lettered", lines.len())));
}

#[test]
fn credentials_are_required_used_and_never_shown() {
    let dir = tempfile::tempdir().unwrap();
    let password = "s3cret-Pa55-word";
    let es = EsServer::start(
        dir.path(),
        &[
            "--user",
            &format!("mailflow:{password}"),
            "--api-key",
            "a2V5OnZhbHVl",
        ],
    );
    let logs = generate(dir.path(), "200K");
    // Without credentials: the run stops with a clear message.
    let config_none = config(dir.path(), &logs, &es.url(), "");
    let out = ingest(&config_none);
    assert!(!out.status.success());
    assert!(
        text(&out).contains("refused the credentials (401 Unauthorized)"),
        "{}",
        text(&out)
    );
    // A wrong password: the same, and the password is not in the output.
    let wrong = dir.path().join("wrong");
    std::fs::create_dir_all(&wrong).unwrap();
    let config_wrong = config(
        &wrong,
        &logs,
        &es.url(),
        "user = \"mailflow\"\npassword = \"${MF_TEST_ES_PASSWORD}\"",
    );
    let out = mailflow_command()
        .args(["ingest", "--quiet", "--config"])
        .arg(&config_wrong)
        .env("MF_TEST_ES_PASSWORD", "not-the-password")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(!text(&out).contains("not-the-password"), "{}", text(&out));
    // The right one, from the environment: stored, and never printed.
    let right = dir.path().join("right");
    std::fs::create_dir_all(&right).unwrap();
    let config_right = config(
        &right,
        &logs,
        &es.url(),
        "user = \"mailflow\"\npassword = \"${MF_TEST_ES_PASSWORD}\"",
    );
    let out = mailflow_command()
        .args(["ingest", "--config"])
        .arg(&config_right)
        .env("MF_TEST_ES_PASSWORD", password)
        .env("MAILFLOW_LOG", "debug")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert!(!text(&out).contains(password));
    assert_stored_once(&right.join("lake"), &es);
    // An API key from the environment, with --elasticsearch; and `es setup` with it.
    let out = mailflow_command()
        .args(["es", "setup", "--url", &es.url()])
        .env("MAILFLOW_ES_API_KEY", "a2V5OnZhbHVl")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert!(!text(&out).contains("a2V5OnZhbHVl"));
    let out = mailflow_command()
        .args([
            "ingest",
            "--quiet",
            "--elasticsearch",
            &es.url(),
            "--parquet",
        ])
        .arg(dir.path().join("key-lake"))
        .arg(&logs)
        .env("MAILFLOW_ES_API_KEY", "a2V5OnZhbHVl")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    // Same lines again: every one held already.
    assert!(text(&out).contains("0 documents stored"), "{}", text(&out));
    // A URL with credentials in it is refused before anything is sent.
    let out = mailflow_command()
        .args(["ingest", "--quiet", "--parquet"])
        .arg(dir.path().join("x"))
        .args(["--elasticsearch", "http://mailflow:hunter2@127.0.0.1:9/"])
        .arg(&logs)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        text(&out).contains("url holds credentials"),
        "{}",
        text(&out)
    );
    assert!(!text(&out).contains("hunter2"), "{}", text(&out));
    // With the secrets in the environment, `--help` shows none of them (as it would if a
    // flag took its value from one of these variables).
    let help = mailflow_command()
        .args(["ingest", "--help"])
        .env("MAILFLOW_ES_PASSWORD", password)
        .env("MAILFLOW_ES_API_KEY", "a2V5OnZhbHVl")
        .output()
        .unwrap();
    assert!(help.status.success());
    assert!(!text(&help).contains(password), "{}", text(&help));
    assert!(!text(&help).contains("a2V5OnZhbHVl"), "{}", text(&help));
}

#[test]
fn tls_is_verified_against_the_ca_file_and_off_only_when_asked() {
    let dir = tempfile::tempdir().unwrap();
    // An authority of the organisation's own, and the cluster's certificate signed by it.
    let d = dir.path();
    let (ca, ca_key) = (d.join("ca.pem"), d.join("ca.key"));
    let (cert, key, csr) = (d.join("cert.pem"), d.join("key.pem"), d.join("req.csr"));
    let san = d.join("san.ext");
    std::fs::write(&san, "subjectAltName=IP:127.0.0.1\n").unwrap();
    let openssl = |args: &[&std::ffi::OsStr]| {
        let made = Command::new("openssl")
            .args(args)
            .output()
            .expect("openssl is installed (.ci/run installs it)");
        assert!(made.status.success(), "{}", text(&made));
    };
    let os = |s: &'static str| std::ffi::OsStr::new(s);
    openssl(&[
        os("req"),
        os("-x509"),
        os("-newkey"),
        os("rsa:2048"),
        os("-nodes"),
        os("-days"),
        os("2"),
        os("-subj"),
        os("/CN=mailflow test CA"),
        os("-keyout"),
        ca_key.as_os_str(),
        os("-out"),
        ca.as_os_str(),
    ]);
    openssl(&[
        os("req"),
        os("-newkey"),
        os("rsa:2048"),
        os("-nodes"),
        os("-subj"),
        os("/CN=127.0.0.1"),
        os("-keyout"),
        key.as_os_str(),
        os("-out"),
        csr.as_os_str(),
    ]);
    openssl(&[
        os("x509"),
        os("-req"),
        os("-in"),
        csr.as_os_str(),
        os("-CA"),
        ca.as_os_str(),
        os("-CAkey"),
        ca_key.as_os_str(),
        os("-CAcreateserial"),
        os("-days"),
        os("2"),
        os("-extfile"),
        san.as_os_str(),
        os("-out"),
        cert.as_os_str(),
    ]);
    let es = EsServer::start(
        dir.path(),
        &[
            "--tls-cert",
            cert.to_str().unwrap(),
            "--tls-key",
            key.to_str().unwrap(),
        ],
    );
    let logs = generate(dir.path(), "100K");
    // A certificate no trusted authority signed: refused, and the run says why.
    let unknown = dir.path().join("unknown");
    std::fs::create_dir_all(&unknown).unwrap();
    let out = ingest(&config(&unknown, &logs, &es.url(), "max_retries = 1"));
    assert!(!out.status.success());
    assert!(
        text(&out).to_lowercase().contains("certificate"),
        "{}",
        text(&out)
    );
    // Trusted through the CA file: stored.
    let trusted = dir.path().join("trusted");
    std::fs::create_dir_all(&trusted).unwrap();
    let ca = format!("ca_file = '{}'", ca.display());
    let out = ingest(&config(&trusted, &logs, &es.url(), &ca));
    assert!(out.status.success(), "{}", text(&out));
    assert_stored_once(&trusted.join("lake"), &es);
    // Verification off, explicitly: accepted (a test cluster's setting).
    let off = dir.path().join("off");
    std::fs::create_dir_all(&off).unwrap();
    let out = ingest(&config(
        &off,
        &logs,
        &es.url(),
        "verify_certificates = false",
    ));
    assert!(out.status.success(), "{}", text(&out));
}
