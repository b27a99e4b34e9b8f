//! The lake as Delta Lake tables in object stores, against real protocol servers on loopback:
//! S3 by moto's server and Azure Blob by Azurite (`.ci/run` installs both). What mailflow
//! writes is read back by two readers it shares no code with: the `deltalake` Python package
//! (delta-rs) and DuckDB's `delta` extension (delta-kernel-rs), through `tests/delta_check.py`.
//! Every table must hold exactly the rows a local Parquet ingest of the same logs holds: after
//! a rerun, after SIGKILLs during uploads and commits, and with three writers at once.
//!
//! A missing server or reader fails the test: `MAILFLOW_DELTA_PYTHON` (the venv with deltalake,
//! DuckDB 1.5.5 and its extensions, moto) and `MAILFLOW_AZURITE` (`azurite-blob`) come from
//! `.ci/run`.
// Helpers outside #[test] functions unwrap too: a test's set-up failing is its failure.
#![allow(clippy::unwrap_used)]

mod cli;

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use cli::{generate_mixed, mailflow_command};
use serde_json::Value;

/// The venv's Python for the Delta readers and the S3 server.
fn delta_python() -> PathBuf {
    let p = std::env::var_os("MAILFLOW_DELTA_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv-delta/bin/python"));
    assert!(
        p.exists(),
        "{}: no Python with deltalake and moto (`bash .ci/run` makes .venv-delta)",
        p.display()
    );
    p
}

fn check<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> String {
    let out = Command::new(delta_python())
        .arg(cli::script("delta_check.py"))
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "delta_check.py failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A server process on a loopback port, stopped when dropped.
struct Server {
    child: Child,
    endpoint: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn start(mut command: Command, port: u16) -> Server {
    let child = command
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("starting {command:?}: {e} (`bash .ci/run` installs it)"));
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let deadline = Instant::now() + Duration::from_secs(60);
    while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
        assert!(
            Instant::now() < deadline,
            "{command:?} did not listen on {port}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    Server {
        child,
        endpoint: format!("http://127.0.0.1:{port}"),
    }
}

fn moto() -> Server {
    moto_with(&[])
}

fn moto_with(env: &[(&str, &str)]) -> Server {
    let port = free_port();
    let bin = delta_python().with_file_name("moto_server");
    let mut c = Command::new(bin);
    c.args(["-H", "127.0.0.1", "-p", &port.to_string()]);
    c.envs(env.iter().copied());
    start(c, port)
}

fn azurite(dir: &Path) -> Server {
    let port = free_port();
    let bin = std::env::var_os("MAILFLOW_AZURITE")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR")).join(".ci/node/node_modules/.bin/azurite-blob")
        });
    let mut c = Command::new(bin);
    c.args([
        "--blobHost",
        "127.0.0.1",
        "--blobPort",
        &port.to_string(),
        "--inMemoryPersistence",
        "--disableTelemetry",
        "--skipApiVersionCheck",
    ])
    .current_dir(dir);
    start(c, port)
}

/// mailflow `args` with the environment a store's credentials come from.
fn mailflow(env: &[(&str, String)], args: &[&str]) -> Command {
    let mut c = mailflow_command();
    c.args(args);
    for (k, v) in env {
        c.env(k, v);
    }
    c
}

/// `mailflow ingest ARGS --quiet` with `env`.
fn ingest(env: &[(&str, String)], args: &[&str]) -> Command {
    let mut c = mailflow(env, &["ingest"]);
    c.args(args).arg("--quiet");
    c
}

fn run_ok(mut c: Command) -> String {
    let out = c.output().unwrap();
    assert!(
        out.status.success(),
        "{c:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn s3_env(moto: &Server) -> Vec<(&'static str, String)> {
    vec![
        ("AWS_ACCESS_KEY_ID", "mailflow-test".into()),
        ("AWS_SECRET_ACCESS_KEY", "mailflow-test-secret".into()),
        ("AWS_REGION", "us-east-1".into()),
        ("AWS_ENDPOINT", moto.endpoint.clone()),
        ("AWS_ALLOW_HTTP", "true".into()),
    ]
}

/// Rows per table of a local Parquet lake of `logs` (the reference).
fn reference(logs: &[&Path], tmp: &Path, name: &str) -> Value {
    let lake = tmp.join(name);
    let mut args: Vec<&str> = logs.iter().map(|p| p.to_str().unwrap()).collect();
    args.extend(["--parquet", lake.to_str().unwrap()]);
    run_ok(ingest(&[], &args));
    serde_json::from_str(&check(&["local", lake.to_str().unwrap()])).unwrap()
}

/// Asserts the Delta lake at `uri` holds the reference's rows in every table, each raw line
/// once, every row in a `date` and `server` partition, as both readers see it.
fn assert_same(uri: &str, store: &[&str], want: &Value, duckdb: bool) {
    let mut args = vec!["counts", uri];
    args.extend_from_slice(store);
    let got: Value = serde_json::from_str(&check(&args)).unwrap();
    let want = want.as_object().unwrap();
    assert!(!want.is_empty());
    let tables: Vec<&String> = got.as_object().unwrap().keys().collect();
    assert_eq!(
        tables,
        want.keys().collect::<Vec<_>>(),
        "tables of {uri}: {got}"
    );
    for (table, w) in want {
        let rows = w["rows"].as_u64().unwrap();
        let g = &got[table];
        assert_eq!(
            g["deltalake"].as_u64(),
            Some(rows),
            "{table} (deltalake): {got}"
        );
        if duckdb {
            assert_eq!(g["duckdb"].as_u64(), Some(rows), "{table} (DuckDB): {got}");
            assert_eq!(g["unpartitioned"].as_u64(), Some(0), "{table}: {got}");
        }
        if let Some(d) = g.get("distinct") {
            assert_eq!(
                d.as_u64(),
                Some(rows),
                "{table}: a line stored twice: {got}"
            );
        }
    }
}

/// Puts a line that is not a log line after every 300th line of every log under `dir`: each
/// source then writes to `rejects` in the same epochs as to its own table, which is what makes
/// an epoch cut between two tables' commits lose rows unless it is finished.
fn spoil(dir: &Path) {
    for entry in walkdir(dir) {
        let text = std::fs::read(&entry).unwrap();
        let mut out = Vec::with_capacity(text.len() + 4096);
        for (k, line) in text.split_inclusive(|&b| b == b'\n').enumerate() {
            out.extend_from_slice(line);
            if k % 300 == 299 {
                out.extend_from_slice(b"this is not a log line\r\n");
            }
        }
        std::fs::write(&entry, out).unwrap();
    }
}

fn walkdir(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walkdir(&p));
        } else if p.extension().is_some_and(|x| x == "LOG") {
            out.push(p);
        }
    }
    out
}

/// Rows per table of `want`'s tables as `mailflow query` counts them in `lake`.
fn query_counts(lake: &str, env: &[(&str, String)], want: &Value) -> Value {
    let sql = want
        .as_object()
        .unwrap()
        .keys()
        .map(|t| format!("SELECT '{t}' AS t, count(*) AS n FROM {t}"))
        .collect::<Vec<_>>()
        .join(" UNION ALL ");
    let out = run_ok(mailflow(
        env,
        &["query", "--lake", lake, "--format", "json", &sql],
    ));
    let mut counts = serde_json::Map::new();
    for line in out.lines() {
        let row: Value = serde_json::from_str(line).unwrap();
        counts.insert(row["t"].as_str().unwrap().to_string(), row["n"].clone());
    }
    Value::Object(counts)
}

fn assert_counts(got: &Value, want: &Value) {
    for (table, w) in want.as_object().unwrap() {
        assert_eq!(
            got[table].as_u64(),
            w["rows"].as_u64(),
            "{table}: {got} against {want}"
        );
    }
}

/// `mailflow report --format json` of `lake`, with `scope` (`--since DAY`…).
fn report(lake: &str, env: &[(&str, String)], out: &Path, scope: &[&str]) -> Value {
    let mut c = mailflow(env, &["report", "--lake", lake, "--format", "json"]);
    c.args(scope).arg("--out").arg(out);
    run_ok(c);
    serde_json::from_slice(&std::fs::read(out).unwrap()).unwrap()
}

/// Asserts two reports have the same sections, each non-empty (the evidence lines a finding
/// quotes follow the order files are read in, and are left out).
fn assert_same_report(local: &Value, remote: &Value) {
    for section in [
        "volume",
        "rates",
        "codes",
        "connectors",
        "latency",
        "findings",
    ] {
        assert!(
            local[section].as_array().is_some_and(|a| !a.is_empty()),
            "{section}"
        );
        let (mut l, mut r) = (local[section].clone(), remote[section].clone());
        // Which lines a finding quotes as evidence follows the order files are read in.
        for v in l
            .as_array_mut()
            .unwrap()
            .iter_mut()
            .chain(r.as_array_mut().unwrap())
        {
            if let Some(o) = v.as_object_mut() {
                o.remove("evidence");
            }
        }
        assert_eq!(l, r, "{section}");
    }
}

#[test]
fn s3_delta_lake_holds_every_line_once_through_reruns_and_kills() {
    let tmp = tempfile::tempdir().unwrap();
    let logs = tmp.path().join("logs");
    generate_mixed(&logs, "6M", &["--days", "2", "--seed", "5"]);
    spoil(&logs);
    let want = reference(&[&logs], tmp.path(), "reference");
    for table in [
        "message_tracking",
        "smtp_protocol",
        "smtp_sessions",
        "messages",
        "rejects",
    ] {
        assert!(want[table]["rows"].as_u64().unwrap() > 50, "{want}");
    }

    let s3 = moto();
    check(&["bucket", &s3.endpoint, "lake"]);
    let env = s3_env(&s3);
    let store = ["--s3", s3.endpoint.as_str()];

    // One run, then a rerun that finds everything held.
    let staging = tmp.path().join("staging");
    let summary = tmp.path().join("summary.json");
    let args = [
        logs.to_str().unwrap(),
        "--parquet",
        "s3://lake/fleet",
        "--staging",
        staging.to_str().unwrap(),
        "--summary-json",
        summary.to_str().unwrap(),
    ];
    let started = Instant::now();
    run_ok(ingest(&env, &args));
    let took = started.elapsed();
    let written: Value = serde_json::from_slice(&std::fs::read(&summary).unwrap()).unwrap();
    let outputs = written["outputs"].as_array().unwrap();
    assert!(!outputs.is_empty());
    assert!(
        outputs
            .iter()
            .all(|o| o.as_str().unwrap().starts_with("s3://lake/fleet/")),
        "{written}"
    );
    assert_same("s3://lake/fleet", &store, &want, true);
    // SQL and the report read the Delta tables in the bucket: the same rows, and the same
    // report, as of the local lake of the same logs.
    assert_counts(&query_counts("s3://lake/fleet", &env, &want), &want);
    let local = report(
        tmp.path().join("reference").to_str().unwrap(),
        &[],
        &tmp.path().join("local.json"),
        &[],
    );
    let remote = report(
        "s3://lake/fleet",
        &env,
        &tmp.path().join("remote.json"),
        &[],
    );
    assert_same_report(&local, &remote);
    let again = run_ok(ingest(&env, &args));
    assert!(again.contains("already in the lake"), "{again}");
    assert_same("s3://lake/fleet", &store, &want, true);

    // Killed at random moments while it uploads and commits small epochs (many files, many
    // commits), then run to the end: still every line once, and the same sessions and messages.
    let staging = tmp.path().join("staging-killed");
    let args = [
        logs.to_str().unwrap(),
        "--parquet",
        "s3://lake/killed",
        "--staging",
        staging.to_str().unwrap(),
        "--max-file-rows",
        "4000",
        "--threads",
        "2",
    ];
    let mut rng = 0x9e37_79b9_7f4a_7c15_u64;
    let mut killed = 0;
    for _ in 0..6 {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        // Somewhere between 5% and 95% of an uninterrupted run's time (this one is slower:
        // smaller files, more commits).
        let wait = took.mul_f64(0.05 + (rng % 900) as f64 / 1000.0);
        let mut child = ingest(&env, &args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(wait);
        if child.try_wait().unwrap().is_none() {
            child.kill().unwrap();
            killed += 1;
        }
        child.wait().unwrap();
    }
    assert!(
        killed >= 3,
        "the runs ended before they could be killed ({killed} kills)"
    );
    run_ok(ingest(&env, &args));
    assert_same("s3://lake/killed", &store, &want, true);

    // Stopped inside an epoch's commit (a window of milliseconds a kill seldom hits): after one
    // table's commit and before the next, or after the last and before the journal is removed.
    let staging = tmp.path().join("staging-aborted");
    let args = [
        logs.to_str().unwrap(),
        "--parquet",
        "s3://lake/aborted",
        "--staging",
        staging.to_str().unwrap(),
        "--max-file-rows",
        "1500",
    ];
    // Each run commits a table or three and stops. How much each run gets through depends on
    // how its epochs fall (under load a writer's epoch takes in more rows before it rolls), so
    // the runs go on until one finishes; seen under CI's load: three aborted runs and their
    // recoveries had put every raw line in the lake.
    let (mut aborted, mut between, mut said) = (0, 0, String::new());
    for after in [1, 2, 1, 3, 1, 2] {
        let mut c = ingest(&env, &args);
        c.env("MAILFLOW_TEST_ABORT_AFTER_COMMITS", after.to_string());
        let out = c.output().unwrap();
        said += &String::from_utf8_lossy(&out.stdout);
        if out.status.success() {
            break;
        }
        aborted += 1;
        between += usize::from(after > 1);
    }
    // Stopped at least once after an epoch's first table and before its last, and the journal
    // recovered by the next run each time.
    assert!(
        aborted >= 3 && between >= 1,
        "the runs ended before their commits ({aborted} aborted, {between} between tables)\n{said}"
    );
    said += &run_ok(ingest(&env, &args));
    // The run after an abort finds its journal and finishes the epoch's commits.
    assert!(said.contains("an earlier run was interrupted"), "{said}");
    assert_same("s3://lake/aborted", &store, &want, true);
}

#[test]
fn three_writers_at_once_into_one_s3_lake() {
    let tmp = tempfile::tempdir().unwrap();
    let folders: Vec<PathBuf> = (0..3)
        .map(|k| tmp.path().join(format!("site{k}")))
        .collect();
    for (k, f) in folders.iter().enumerate() {
        generate_mixed(f, "2M", &["--days", "1", "--seed", &(20 + k).to_string()]);
    }
    // Three separate local lakes, added up, are the reference.
    let mut want = serde_json::Map::new();
    for (k, f) in folders.iter().enumerate() {
        let one = reference(&[f], tmp.path(), &format!("ref{k}"));
        for (table, v) in one.as_object().unwrap() {
            let n = v["rows"].as_u64().unwrap();
            let slot = want
                .entry(table.clone())
                .or_insert_with(|| serde_json::json!({"rows": 0}));
            slot["rows"] = (slot["rows"].as_u64().unwrap() + n).into();
        }
    }
    let s3 = moto();
    check(&["bucket", &s3.endpoint, "shared"]);
    let env = s3_env(&s3);
    let children: Vec<_> = folders
        .iter()
        .enumerate()
        .map(|(k, f)| {
            let staging = tmp.path().join(format!("staging{k}"));
            ingest(
                &env,
                &[
                    f.to_str().unwrap(),
                    "--parquet",
                    "s3://shared/lake",
                    "--staging",
                    staging.to_str().unwrap(),
                    "--max-file-rows",
                    "5000",
                ],
            )
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
        })
        .collect();
    for c in children {
        let out = c.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "a writer failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert_same(
        "s3://shared/lake",
        &["--s3", s3.endpoint.as_str()],
        &Value::Object(want),
        true,
    );
}

#[test]
fn azure_blob_delta_lake_through_azurite() {
    let tmp = tempfile::tempdir().unwrap();
    let logs = tmp.path().join("logs");
    generate_mixed(&logs, "2M", &["--days", "1", "--seed", "9"]);
    let want = reference(&[&logs], tmp.path(), "reference");
    let az = azurite(tmp.path());
    check(&["container", &az.endpoint, "mail"]);
    let env = vec![
        ("AZURE_STORAGE_ACCOUNT_NAME", "devstoreaccount1".to_string()),
        (
            "AZURE_STORAGE_ACCOUNT_KEY",
            "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
                .to_string(),
        ),
        ("AZURE_STORAGE_USE_EMULATOR", "true".to_string()),
        ("AZURITE_BLOB_STORAGE_URL", az.endpoint.clone()),
    ];
    let staging = tmp.path().join("staging");
    let args = [
        logs.to_str().unwrap(),
        "--parquet",
        "az://mail/lake",
        "--staging",
        staging.to_str().unwrap(),
    ];
    run_ok(ingest(&env, &args));
    run_ok(ingest(&env, &args));
    assert_same(
        "az://mail/lake",
        &["--azure", az.endpoint.as_str()],
        &want,
        false,
    );
}

#[test]
fn delta_tables_in_a_folder_and_what_refuses_them() {
    let tmp = tempfile::tempdir().unwrap();
    let logs = tmp.path().join("logs");
    generate_mixed(&logs, "2M", &["--days", "1", "--seed", "3"]);
    let want = reference(&[&logs], tmp.path(), "reference");
    let lake = tmp.path().join("delta");
    let args = [
        logs.to_str().unwrap(),
        "--parquet",
        lake.to_str().unwrap(),
        "--table-format",
        "delta",
    ];
    run_ok(ingest(&[], &args));
    assert!(lake.join("message_tracking/_delta_log").is_dir());
    let uri = lake.to_str().unwrap();
    assert_same(uri, &[], &want, true);

    // `mailflow query` reads the files the tables' logs name, and no other: a file dropped in
    // a partition folder, as a killed upload or another tool leaves one, is not read.
    let part = std::fs::read_dir(lake.join("messages"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.to_string_lossy().contains("date="))
        .unwrap();
    let server = std::fs::read_dir(&part)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let file = std::fs::read_dir(&server)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    std::fs::copy(&file, server.join("part-stray-1.parquet")).unwrap();
    assert_counts(&query_counts(uri, &[], &want), &want);
    // Compaction of a Delta folder commits to its tables; the stray file stays unread.
    let out = cli::run_mailflow(&["compact", "--lake", uri, "--older-than", "0s"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.contains("merged into"), "{said}");
    assert_same(uri, &[], &want, true);
    assert_counts(&query_counts(uri, &[], &want), &want);
    // Vacuum is of Delta tables only.
    let plain_lake = tmp.path().join("reference");
    let out = cli::run_mailflow(&["vacuum", "--lake", plain_lake.to_str().unwrap()]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("holds no Delta tables"), "{err}");
    // Without --table-format, a folder of Delta tables stays Delta: a rerun finds it all held.
    let again = run_ok(ingest(&[], &[logs.to_str().unwrap(), "--parquet", uri]));
    assert!(again.contains("already in the lake"), "{again}");
    assert_same(uri, &[], &want, true);
    // One folder, one format.
    let out = cli::run_mailflow(&[
        "ingest",
        logs.to_str().unwrap(),
        "--parquet",
        uri,
        "--table-format",
        "parquet",
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("holds Delta tables"), "{err}");
    let plain = tmp.path().join("reference");
    let out = cli::run_mailflow(&[
        "ingest",
        logs.to_str().unwrap(),
        "--parquet",
        plain.to_str().unwrap(),
        "--table-format",
        "delta",
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("holds a plain Parquet table"), "{err}");
    // Credentials never belong in the location, and are never echoed.
    let out = cli::run_mailflow(&[
        "ingest",
        logs.to_str().unwrap(),
        "--parquet",
        "s3://bucket/lake?X-Amz-Signature=SECRET",
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !err.contains("SECRET") && err.contains("environment"),
        "{err}"
    );
}

#[test]
fn the_agent_ships_to_an_s3_delta_lake_and_resumes_after_a_kill() {
    let tmp = tempfile::tempdir().unwrap();
    let logs = tmp.path().join("logs");
    generate_mixed(&logs, "4M", &["--days", "2", "--seed", "7"]);
    spoil(&logs);
    let want = reference(&[&logs], tmp.path(), "reference");
    let s3 = moto();
    check(&["bucket", &s3.endpoint, "agent"]);
    let env = s3_env(&s3);
    let config = tmp.path().join("mailflow.toml");
    std::fs::write(
        &config,
        format!(
            "[[sources]]\npaths = ['{}']\n\n[sinks.lake]\ntype = \"parquet\"\npath = 's3://agent/lake'\n\
             max_file_age = \"300ms\"\nmax_file_rows = 3000\n\n[agent]\nstate_dir = '{}'\n\
             poll_interval = \"50ms\"\ncheckpoint_interval = \"100ms\"\nthreads = 2\n",
            logs.display(),
            tmp.path().join("state").display()
        ),
    )
    .unwrap();
    let agent = |until_idle: bool| {
        let mut c = mailflow(&env, &["run", "--config"]);
        c.arg(&config);
        if until_idle {
            c.arg("--until-idle");
        }
        c
    };
    // Killed while it ships, then restarted to the end of what it finds.
    let mut child = agent(false)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    child.kill().unwrap();
    child.wait().unwrap();
    run_ok(agent(true));
    assert_same(
        "s3://agent/lake",
        &["--s3", s3.endpoint.as_str()],
        &want,
        true,
    );
}

/// Table `table`'s current file count, as deltalake reads the log.
fn file_count(uri: &str, table: &str, store: &[&str]) -> usize {
    let dir = tempfile::tempdir().unwrap();
    let (ready, stop) = (dir.path().join("ready"), dir.path().join("stop"));
    std::fs::write(&stop, b"").unwrap();
    let mut args = vec![
        "watch",
        uri,
        table,
        ready.to_str().unwrap(),
        stop.to_str().unwrap(),
    ];
    args.extend_from_slice(store);
    let seen: Value = serde_json::from_str(&check(&args)).unwrap();
    seen[0]["files"].as_u64().unwrap() as usize
}

#[test]
fn compaction_of_an_s3_lake_while_a_reader_counts_and_vacuum() {
    let tmp = tempfile::tempdir().unwrap();
    // Eight runs of one server's day: eight small files in each partition, as a live agent
    // leaves them.
    let folders: Vec<PathBuf> = (0..8)
        .map(|k| tmp.path().join(format!("logs{k}")))
        .collect();
    for (k, f) in folders.iter().enumerate() {
        generate_mixed(f, "400K", &["--days", "1", "--seed", &(40 + k).to_string()]);
    }
    let refs: Vec<&Path> = folders.iter().map(PathBuf::as_path).collect();
    let want = reference(&refs, tmp.path(), "reference");
    let s3 = moto();
    check(&["bucket", &s3.endpoint, "lake"]);
    let env = s3_env(&s3);
    let store = ["--s3", s3.endpoint.as_str()];
    let uri = "s3://lake/compacted";
    let staging = tmp.path().join("staging");
    let run = |folder: &Path| {
        run_ok(ingest(
            &env,
            &[
                folder.to_str().unwrap(),
                "--parquet",
                uri,
                "--staging",
                staging.to_str().unwrap(),
            ],
        ))
    };
    for f in &folders {
        run(f);
    }
    assert_same(uri, &store, &want, true);
    // The table with the most rows, which the small files cut finest.
    let (table, rows) = want
        .as_object()
        .unwrap()
        .iter()
        .map(|(t, v)| (t.as_str(), v["rows"].as_u64().unwrap()))
        .max_by_key(|(_, n)| *n)
        .unwrap();
    let before = file_count(uri, table, &store);
    assert!(before >= 8, "{before} files");

    // A reader counts the table over and over while compaction runs: every count it makes, at
    // whatever version, is the whole table once.
    let (ready, stop) = (tmp.path().join("ready"), tmp.path().join("stop"));
    let mut watch_args = vec![
        cli::script("delta_check.py").to_string_lossy().into_owned(),
        "watch".into(),
        uri.into(),
        table.into(),
        ready.to_string_lossy().into_owned(),
        stop.to_string_lossy().into_owned(),
    ];
    watch_args.extend(store.iter().map(|s| s.to_string()));
    let watcher = Command::new(delta_python())
        .args(&watch_args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while !ready.exists() {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the reader never counted"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let said = run_ok(mailflow(
        &env,
        &["compact", "--lake", uri, "--older-than", "0s"],
    ));
    assert!(said.contains("merged into"), "{said}");
    std::fs::write(&stop, b"").unwrap();
    let out = watcher.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let seen: Value = serde_json::from_slice(&out.stdout).unwrap();
    let seen = seen.as_array().unwrap();
    for s in seen {
        assert_eq!(s["rows"].as_u64(), Some(rows), "a count moved: {seen:?}");
    }
    // It read before the compaction's commit and after it.
    let files: Vec<u64> = seen.iter().map(|s| s["files"].as_u64().unwrap()).collect();
    assert_eq!(files[0] as usize, before, "{seen:?}");
    let after = *files.last().unwrap() as usize;
    assert!(after < before / 4, "{before} files, then {after}");

    // Every table, both readers, SQL: the same rows; and a rerun finds everything held (the
    // merged files carry their inputs' provenance).
    assert_same(uri, &store, &want, true);
    assert_counts(&query_counts(uri, &env, &want), &want);
    for f in &folders {
        run(f);
    }
    assert_same(uri, &store, &want, true);

    // Vacuum: too short a retention is refused; files replaced a moment ago are kept.
    let vacuum = |older: &str| {
        mailflow(&env, &["vacuum", "--lake", uri, "--older-than", older])
            .output()
            .unwrap()
    };
    let short = vacuum("5m");
    assert!(!short.status.success());
    let err = String::from_utf8_lossy(&short.stderr);
    assert!(err.contains("too short"), "{err}");
    let kept = vacuum("1h");
    assert!(kept.status.success());
    let said = String::from_utf8_lossy(&kept.stdout);
    assert!(said.contains("nothing older than 1h"), "{said}");
    assert_same(uri, &store, &want, true);
}

#[test]
fn a_multipart_upload_left_by_a_killed_run_is_aborted_by_the_next() {
    let tmp = tempfile::tempdir().unwrap();
    let logs = tmp.path().join("logs");
    generate_mixed(&logs, "2M", &["--days", "1", "--seed", "17"]);
    let want = reference(&[&logs], tmp.path(), "reference");
    // Parts of 16 KiB (the server told to take them), so that a lake of a few megabytes
    // uploads its larger files in parts.
    let s3 = moto_with(&[("S3_UPLOAD_PART_MIN_SIZE", "1024")]);
    check(&["bucket", &s3.endpoint, "lake"]);
    let mut env = s3_env(&s3);
    env.push(("MAILFLOW_TEST_PART_BYTES", "16384".into()));
    let staging = tmp.path().join("staging");
    let args = [
        logs.to_str().unwrap(),
        "--parquet",
        "s3://lake/parts",
        "--staging",
        staging.to_str().unwrap(),
    ];
    let mut killed = env.clone();
    killed.push(("MAILFLOW_TEST_ABORT_AFTER_PARTS", "3".into()));
    let out = ingest(&killed, &args).output().unwrap();
    assert!(!out.status.success(), "the run was to abort mid-upload");
    let pending = || {
        check(&["uploads", &s3.endpoint, "lake"])
            .trim()
            .parse::<u32>()
            .unwrap()
    };
    assert!(pending() >= 1, "no upload was left in progress");
    run_ok(ingest(&env, &args));
    assert_eq!(pending(), 0, "the killed run's upload is still in progress");
    assert_same(
        "s3://lake/parts",
        &["--s3", s3.endpoint.as_str()],
        &want,
        true,
    );
}

/// Rows per table of the plain Parquet files under `uri`, as DuckDB lists and reads them.
fn assert_plain(uri: &str, s3: &Server, want: &Value) {
    let got: Value =
        serde_json::from_str(&check(&["plain", uri, "--s3", s3.endpoint.as_str()])).unwrap();
    for (table, w) in want.as_object().unwrap() {
        let rows = w["rows"].as_u64().unwrap();
        let g = &got[table];
        assert_eq!(g["duckdb"].as_u64(), Some(rows), "{table}: {got}");
        assert_eq!(g["unpartitioned"].as_u64(), Some(0), "{table}: {got}");
        if let Some(d) = g.get("distinct") {
            assert_eq!(
                d.as_u64(),
                Some(rows),
                "{table}: a line stored twice: {got}"
            );
        }
    }
}

#[test]
fn plain_parquet_on_s3_holds_every_line_once_through_kills() {
    let tmp = tempfile::tempdir().unwrap();
    let logs = tmp.path().join("logs");
    generate_mixed(&logs, "4M", &["--days", "2", "--seed", "23"]);
    spoil(&logs);
    let want = reference(&[&logs], tmp.path(), "reference");
    let s3 = moto();
    check(&["bucket", &s3.endpoint, "lake"]);
    let env = s3_env(&s3);
    let uri = "s3://lake/plain";
    let staging = tmp.path().join("staging");
    let args = [
        logs.to_str().unwrap(),
        "--parquet",
        uri,
        "--table-format",
        "parquet",
        "--staging",
        staging.to_str().unwrap(),
        "--max-file-rows",
        "2000",
    ];
    // Runs killed after 1, 2, 4 and 7 uploads: each leaves an epoch's files part uploaded,
    // which the next start deletes before reading those sources again.
    for after in [1, 2, 4, 7] {
        let mut killed = env.clone();
        killed.push(("MAILFLOW_TEST_ABORT_AFTER_COMMITS", after.to_string()));
        let out = ingest(&killed, &args).output().unwrap();
        assert!(
            !out.status.success(),
            "run to stop after {after} uploads finished"
        );
    }
    run_ok(ingest(&env, &args));
    assert_plain(uri, &s3, &want);
    // A rerun finds everything held, from the files' footers.
    run_ok(ingest(&env, &args));
    assert_plain(uri, &s3, &want);
    // SQL lists the files the same way, and a day's report lists that day's files only (and
    // equals the local lake's report of the day).
    assert_counts(&query_counts(uri, &env, &want), &want);
    let day = ["--since", "2024-01-26", "--until", "2024-01-26"];
    let local = report(
        tmp.path().join("reference").to_str().unwrap(),
        &[],
        &tmp.path().join("local.json"),
        &day,
    );
    let remote = report(uri, &env, &tmp.path().join("remote.json"), &day);
    assert_same_report(&local, &remote);
    // One prefix, one format; plain files are neither compacted nor vacuumed in place.
    let mut delta_args = args.to_vec();
    delta_args[4] = "delta";
    let out = ingest(&env, &delta_args).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("holds plain Parquet files"), "{err}");
    let out = mailflow(&env, &["compact", "--lake", uri])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cannot be replaced atomically"), "{err}");
}
