//! `mailflow run`, the agent, with real files and real processes: a folder that grows the way
//! Exchange writes it (lines in time order across servers, files rolled, half-written last
//! lines), kills at random moments, rotation with deletion, truncation, shutdown on SIGTERM, a
//! sink that stalls, and the metrics endpoint. The end state is checked against one
//! uninterrupted `ingest` of the same files, table by table, with DuckDB.
#![allow(clippy::unwrap_used)]

mod cli;

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use cli::{data, mailflow, mailflow_command, python_script};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// A config for a folder and a lake, quick to commit and to notice changes.
fn config(dir: &Path, logs: &Path, lake: &Path, extra: &str) -> PathBuf {
    let path = dir.join("mailflow.toml");
    std::fs::write(
        &path,
        format!(
            "[[sources]]\npaths = ['{}']\n\n[sinks.lake]\ntype = \"parquet\"\npath = '{}'\nmax_file_age = \"300ms\"\n\n\
             [agent]\nstate_dir = '{}'\npoll_interval = \"50ms\"\ncheckpoint_interval = \"100ms\"\n\
             rotate_after = \"200ms\"\nthreads = 2\n{extra}",
            logs.display(),
            lake.display(),
            dir.join("state").display()
        ),
    )
    .unwrap();
    path
}

fn start(config: &Path) -> Child {
    // Its log goes to a file beside the config (a pipe nobody reads would fill and block it).
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(config.with_file_name("agent.log"))
        .unwrap();
    mailflow_command()
        .args(["run", "--config"])
        .arg(config)
        .env("MAILFLOW_LOG", "info")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("start the agent")
}

fn run_until_idle(config: &Path) -> String {
    let out = mailflow(&[
        "run".as_ref(),
        "--config".as_ref(),
        config.as_os_str(),
        "--until-idle".as_ref(),
    ]);
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Per table: (rows in a, rows in b, rows only in a, rows only in b).
fn diff(a: &Path, b: &Path, leave_out: &[&str]) -> BTreeMap<String, (u64, u64, u64, u64)> {
    let mut args: Vec<&std::ffi::OsStr> = vec![a.as_os_str(), b.as_os_str()];
    args.extend(leave_out.iter().map(|c| std::ffi::OsStr::new(*c)));
    let json: serde_json::Value =
        serde_json::from_str(&python_script("lake_diff.py", &args)).unwrap();
    json.as_object()
        .unwrap()
        .iter()
        .map(|(t, v)| {
            let n = |k: &str| v[k].as_u64().unwrap();
            (t.clone(), (n("a"), n("b"), n("only_a"), n("only_b")))
        })
        .collect()
}

/// Asserts two lakes hold the same rows, each as many times, in every table.
fn assert_same(agent: &Path, reference: &Path, leave_out: &[&str], what: &str) {
    let d = diff(agent, reference, leave_out);
    for table in [
        "message_tracking",
        "smtp_protocol",
        "smtp_sessions",
        "messages",
    ] {
        assert!(
            d.get(table).is_some_and(|r| r.1 > 0),
            "{what}: the reference has no {table}: {d:?}"
        );
    }
    for (table, (a, b, only_a, only_b)) in &d {
        assert!(
            a == b && *only_a == 0 && *only_b == 0,
            "{what}: {table}: the agent has {a} rows, ingest {b}; {only_a} only in the agent's, {only_b} only in ingest's\n{d:?}"
        );
    }
}

fn ingest(logs: &Path, lake: &Path) {
    mailflow(&[
        "ingest".as_ref(),
        logs.as_os_str(),
        "--parquet".as_ref(),
        lake.as_os_str(),
        "--threads".as_ref(),
        "1".as_ref(),
        "--quiet".as_ref(),
    ]);
}

/// Generated logs of two servers over two days (two or three files per series).
fn generate(dir: &Path, bytes: &str) {
    cli::generate_mixed(dir, bytes, &["--days", "2", "--seed", "7"]);
}

/// Rewrites a generated folder into another the way Exchange writes it: every series' lines in
/// log-time order, all servers together, a file created when its first line is due, the last
/// line of a round often cut in two.
struct Writer {
    files: Vec<Fed>,
    rng: StdRng,
}

struct Fed {
    to: PathBuf,
    bytes: Vec<u8>,
    /// (time of the line, offset just past it); the header goes with the first line.
    lines: Vec<(String, usize)>,
    /// Bytes written so far.
    written: usize,
    /// Lines complete so far.
    done: usize,
}

impl Writer {
    fn new(from: &Path, to: &Path, seed: u64) -> Self {
        let mut files = Vec::new();
        for entry in walkdir(from) {
            let bytes = std::fs::read(&entry).unwrap();
            let mut lines = Vec::new();
            let mut pos = 0;
            while let Some(i) = bytes[pos..].iter().position(|&b| b == b'\n') {
                let line = &bytes[pos..pos + i];
                let line = line.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(line);
                pos += i + 1;
                if !line.starts_with(b"#") {
                    let time = line.split(|&b| b == b',').next().unwrap();
                    lines.push((String::from_utf8_lossy(time).into_owned(), pos));
                }
            }
            assert_eq!(pos, bytes.len(), "{} ends with a line end", entry.display());
            files.push(Fed {
                to: to.join(entry.strip_prefix(from).unwrap()),
                bytes,
                lines,
                written: 0,
                done: 0,
            });
        }
        Writer {
            files,
            rng: StdRng::seed_from_u64(seed),
        }
    }

    fn times(&self) -> (String, String) {
        let all = self.files.iter().flat_map(|f| f.lines.iter().map(|l| &l.0));
        (
            all.clone().min().unwrap().clone(),
            all.max().unwrap().clone(),
        )
    }

    /// Writes every line due by `until`, and often a piece of the next one.
    fn write_until(&mut self, until: &str) {
        for f in &mut self.files {
            let due = f.lines.partition_point(|(t, _)| t.as_str() <= until);
            if due == 0 && f.written == 0 {
                continue;
            }
            let mut end = if due == 0 {
                f.written
            } else {
                f.lines[due - 1].1
            };
            end = end.max(f.written);
            if due < f.lines.len() && due > 0 && self.rng.random_bool(0.5) {
                let next = f.lines[due].1;
                end = self.rng.random_range(end..next);
            }
            if end > f.written {
                std::fs::create_dir_all(f.to.parent().unwrap()).unwrap();
                let mut out = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&f.to)
                    .unwrap();
                out.write_all(&f.bytes[f.written..end]).unwrap();
                f.written = end;
                f.done = due;
            }
        }
    }

    fn finish(&mut self) {
        self.write_until("9999");
        for f in &self.files {
            assert_eq!(f.written, f.bytes.len());
        }
    }
}

fn walkdir(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

/// A folder Exchange writes into while the agent reads it: generated logs (`bytes`) to write,
/// the folder, the lake and the config (with `extra` under `[agent]`).
struct Growing {
    tmp: tempfile::TempDir,
    logs: PathBuf,
    lake: PathBuf,
    cfg: PathBuf,
    writer: Writer,
    /// The first and last line times.
    span: (String, String),
}

fn growing(bytes: &str, seed: u64, extra: &str) -> Growing {
    let tmp = tempfile::tempdir().unwrap();
    let generated = tmp.path().join("gen");
    generate(&generated, bytes);
    let logs = tmp.path().join("logs");
    let lake = tmp.path().join("lake");
    let cfg = config(tmp.path(), &logs, &lake, extra);
    let writer = Writer::new(&generated, &logs, seed);
    let span = writer.times();
    Growing {
        tmp,
        logs,
        lake,
        cfg,
        writer,
        span,
    }
}

/// The ISO time `k` steps of `n` from `lo` to `hi` (both `…Z` strings of one format).
fn between(lo: &str, hi: &str, k: usize, n: usize) -> String {
    let parse = |s: &str| {
        chrono::DateTime::parse_from_rfc3339(s)
            .unwrap()
            .timestamp_millis()
    };
    let (a, b) = (parse(lo), parse(hi));
    let t = a + (b - a) * k as i64 / n as i64;
    chrono::DateTime::from_timestamp_millis(t)
        .unwrap()
        .format("%Y-%m-%dT%H:%M:%S%.3fZ")
        .to_string()
}

#[test]
fn killed_at_random_moments_while_its_folder_grows_the_agent_ends_like_one_ingest() {
    let Growing {
        tmp,
        logs,
        lake,
        cfg,
        mut writer,
        span: (lo, hi),
    } = growing("6M", 11, "");
    let mut rng = StdRng::seed_from_u64(20261201);
    let rounds = 80;
    let mut agent = start(&cfg);
    let mut kills = 0;
    for k in 1..=rounds {
        writer.write_until(&between(&lo, &hi, k, rounds));
        std::thread::sleep(Duration::from_millis(rng.random_range(10..120)));
        if rng.random_bool(0.3) {
            // SIGKILL: no flush, no checkpoint save, a commit perhaps half done.
            agent.kill().unwrap();
            agent.wait().unwrap();
            kills += 1;
            agent = start(&cfg);
        }
    }
    writer.finish();
    std::thread::sleep(Duration::from_millis(300));
    agent.kill().unwrap();
    agent.wait().unwrap();
    assert!(kills >= 20, "only {kills} kills");
    // Kills that left lines committed past a checkpoint: the restart replayed them.
    let log = std::fs::read_to_string(tmp.path().join("agent.log")).unwrap();
    let replays = log.matches("Replaying from checkpoints").count();
    assert!(
        replays >= 5,
        "only {replays} restarts replayed anything:\n{log}"
    );
    // The rest, to the end; then what one uninterrupted ingest makes of the same files.
    run_until_idle(&cfg);
    let reference = tmp.path().join("reference");
    ingest(&logs, &reference);
    assert_same(&lake, &reference, &[], &format!("after {kills} kills"));
}

#[test]
fn a_folder_that_grows_in_appends_with_half_lines_is_read_whole_and_once() {
    let Growing {
        tmp,
        logs,
        lake,
        cfg,
        mut writer,
        span: (lo, hi),
    } = growing("3M", 3, "");
    let mut agent = start(&cfg);
    for k in 1..=40 {
        writer.write_until(&between(&lo, &hi, k, 40));
        std::thread::sleep(Duration::from_millis(30));
    }
    writer.finish();
    // SIGTERM: it stops reading, flushes, commits, saves its checkpoints and exits 0.
    std::thread::sleep(Duration::from_millis(500));
    terminate(&mut agent);
    let status = agent.wait().unwrap();
    assert!(status.success(), "exit on SIGTERM: {status:?}");
    // A restart picks up where it stopped; --until-idle ends the input.
    run_until_idle(&cfg);
    let reference = tmp.path().join("reference");
    ingest(&logs, &reference);
    if std::env::var_os("MAILFLOW_KEEP").is_some() {
        let keep = tmp.path().to_path_buf();
        std::mem::forget(tmp);
        eprintln!("kept {}", keep.display());
    }
    assert_same(&lake, &reference, &[], "growing folder");
    // Once more changes nothing: everything is checkpointed.
    run_until_idle(&cfg);
    assert_same(&lake, &reference, &[], "a run with nothing new");
}

#[cfg(unix)]
fn terminate(child: &mut Child) {
    let ok = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(ok.success());
}

#[test]
fn a_rolled_file_deleted_at_once_loses_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let generated = tmp.path().join("gen");
    generate(&generated, "2M");
    let logs = tmp.path().join("logs");
    let lake = tmp.path().join("lake");
    let cfg = config(tmp.path(), &logs, &lake, "");
    // One series with two files: the first is written half, read, then finished and deleted
    // the moment the second appears (retention running while the agent reads).
    let series: Vec<PathBuf> = walkdir(&generated)
        .into_iter()
        .filter(|p| p.to_string_lossy().contains("SmtpSend"))
        .filter(|p| p.to_string_lossy().contains("EX01"))
        .collect();
    assert!(series.len() >= 2, "{series:?}");
    let (first, second) = (&series[0], &series[1]);
    let dst = |p: &Path| logs.join(p.strip_prefix(&generated).unwrap());
    let bytes = std::fs::read(first).unwrap();
    let half = bytes[..bytes.len() / 2]
        .iter()
        .rposition(|&b| b == b'\n')
        .unwrap()
        + 1;
    std::fs::create_dir_all(dst(first).parent().unwrap()).unwrap();
    std::fs::write(dst(first), &bytes[..half]).unwrap();
    let mut agent = start(&cfg);
    // Wait until the agent has the file open and has read it.
    let deadline = Instant::now() + Duration::from_secs(30);
    while !tmp.path().join("state/checkpoints.json").exists() {
        assert!(Instant::now() < deadline, "the agent saved no checkpoint");
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(300));
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(dst(first))
        .unwrap();
    f.write_all(&bytes[half..]).unwrap();
    drop(f);
    std::fs::copy(second, dst(second)).unwrap();
    std::fs::remove_file(dst(first)).unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    terminate(&mut agent);
    assert!(agent.wait().unwrap().success());
    run_until_idle(&cfg);
    // The reference reads both files whole.
    let whole = tmp.path().join("whole");
    std::fs::create_dir_all(dst(first).parent().unwrap()).unwrap();
    let copy = whole.join(first.strip_prefix(&generated).unwrap());
    std::fs::create_dir_all(copy.parent().unwrap()).unwrap();
    std::fs::copy(first, &copy).unwrap();
    std::fs::copy(second, whole.join(second.strip_prefix(&generated).unwrap())).unwrap();
    let reference = tmp.path().join("reference");
    ingest(&whole, &reference);
    let d = diff(&lake, &reference, &["source_file"]);
    let (a, b, only_a, only_b) = d["smtp_protocol"];
    assert!(
        a == b && only_a == 0 && only_b == 0 && b > 0,
        "every line of both files once: {d:?}"
    );
}

#[test]
fn a_file_renamed_while_it_is_read_is_read_on_not_again() {
    let tmp = tempfile::tempdir().unwrap();
    let generated = tmp.path().join("gen");
    generate(&generated, "1M");
    let source = walkdir(&generated)
        .into_iter()
        .find(|p| p.to_string_lossy().contains("SmtpSend"))
        .unwrap();
    let bytes = std::fs::read(&source).unwrap();
    let half = bytes[..bytes.len() / 2]
        .iter()
        .rposition(|&b| b == b'\n')
        .unwrap()
        + 1;
    let logs = tmp.path().join("logs/EX01");
    std::fs::create_dir_all(&logs).unwrap();
    let (old, new) = (logs.join("SEND2024012500-1.LOG"), logs.join("moved.LOG"));
    std::fs::write(&old, &bytes[..half]).unwrap();
    let lake = tmp.path().join("lake");
    let cfg = config(tmp.path(), &tmp.path().join("logs"), &lake, "");
    let mut agent = start(&cfg);
    let deadline = Instant::now() + Duration::from_secs(30);
    while !tmp.path().join("state/checkpoints.json").exists() {
        assert!(Instant::now() < deadline, "the agent saved no checkpoint");
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(300));
    std::fs::rename(&old, &new).unwrap();
    let mut f = std::fs::OpenOptions::new().append(true).open(&new).unwrap();
    f.write_all(&bytes[half..]).unwrap();
    drop(f);
    std::thread::sleep(Duration::from_millis(1000));
    terminate(&mut agent);
    assert!(agent.wait().unwrap().success());
    let log = std::fs::read_to_string(tmp.path().join("agent.log")).unwrap();
    assert!(
        log.contains("renamed") && !log.contains("copy"),
        "a rename, not a copy:\n{log}"
    );
    // A restart finds it under its new name only.
    run_until_idle(&cfg);
    let whole = tmp.path().join("whole/EX01");
    std::fs::create_dir_all(&whole).unwrap();
    std::fs::write(whole.join("SEND2024012500-1.LOG"), &bytes).unwrap();
    let reference = tmp.path().join("reference");
    ingest(&tmp.path().join("whole"), &reference);
    let d = diff(&lake, &reference, &["source_file"]);
    let (a, b, only_a, only_b) = d["smtp_protocol"];
    assert!(
        a == b && only_a == 0 && only_b == 0 && b > 0,
        "every line once: {d:?}"
    );
    let (a, b, only_a, only_b) = d["smtp_sessions"];
    assert!(a == b && only_a == 0 && only_b == 0, "sessions: {d:?}");
}

#[test]
fn a_file_truncated_and_rewritten_is_read_again_and_reported() {
    let tmp = tempfile::tempdir().unwrap();
    let logs = tmp.path().join("logs/EX01");
    std::fs::create_dir_all(&logs).unwrap();
    let lake = tmp.path().join("lake");
    let cfg = config(tmp.path(), &tmp.path().join("logs"), &lake, "");
    let header = |date: &str| {
        format!(
            "#Software: Microsoft Exchange Server\r\n#Version: 15.02.1544.004\r\n#Log-type: SMTP Receive Protocol Log\r\n#Date: {date}\r\n#Fields: date-time,connector-id,session-id,sequence-number,local-endpoint,remote-endpoint,event,data,context\r\n"
        )
    };
    let row = |i: u32| {
        format!(
            "2024-01-25T15:14:{:02}.000Z,EX01\\Default,08DC1DB8591B22{i:02},0,10.0.0.5:25,203.0.113.9:41822,+,,\r\n",
            i % 60
        )
    };
    let file = logs.join("RECV2024012515-1.LOG");
    let first: String = header("2024-01-25T15:00:00.000Z") + &(0..30).map(row).collect::<String>();
    std::fs::write(&file, &first).unwrap();
    run_until_idle(&cfg);
    // Replaced in place by a shorter file with a header of its own.
    let second: String =
        header("2024-01-25T16:00:00.000Z") + &(40..45).map(row).collect::<String>();
    std::fs::write(&file, &second).unwrap();
    let out = run_until_idle(&cfg);
    let d = diff(&lake, &lake, &[]);
    assert_eq!(
        d["smtp_protocol"].0, 35,
        "both versions' lines: {d:?}\n{out}"
    );
    // The same header cut short is the same file, shorter than what was read: reported.
    std::fs::write(&file, &second[..second.len() - row(44).len()]).unwrap();
    let out = run_until_idle(&cfg);
    assert!(out.contains("truncated:"), "{out}");
    assert_eq!(diff(&lake, &lake, &[])["smtp_protocol"].0, 35);
}

#[test]
fn read_from_end_skips_what_is_there_at_the_first_start_and_reads_what_comes() {
    let Growing {
        tmp,
        logs,
        lake,
        cfg,
        mut writer,
        span: (lo, hi),
    } = growing("1M", 5, "read_from = \"end\"\n");
    writer.write_until(&between(&lo, &hi, 1, 2));
    run_until_idle(&cfg);
    let before = diff(&lake, &lake, &[]);
    assert!(
        before.get("smtp_protocol").is_none_or(|r| r.0 == 0),
        "the first start wrote what was already there: {before:?}"
    );
    // What Exchange writes from now on, new files included, is read.
    writer.finish();
    run_until_idle(&cfg);
    let after = diff(&lake, &lake, &[]);
    let whole = tmp.path().join("whole");
    ingest(&logs, &whole);
    let all = diff(&whole, &whole, &[]);
    let (got, total) = (after["smtp_protocol"].0, all["smtp_protocol"].0);
    assert!(got > 0 && got < total, "{got} of {total} protocol lines");
}

#[test]
fn a_thousand_files_in_one_folder_are_each_read_once() {
    let tmp = tempfile::tempdir().unwrap();
    let logs = tmp.path().join("logs/EX01");
    std::fs::create_dir_all(&logs).unwrap();
    let header = "#Software: Microsoft Exchange Server\r\n#Version: 15.02.1544.004\r\n#Log-type: SMTP Receive Protocol Log\r\n#Fields: date-time,connector-id,session-id,sequence-number,local-endpoint,remote-endpoint,event,data,context\r\n";
    for f in 0..1000u32 {
        let mut text = header.replace(
            "Log\r\n#Fields",
            &format!(
                "Log\r\n#Date: 2024-01-25T{:02}:{:02}:00.000Z\r\n#Fields",
                f / 60 % 24,
                f % 60
            ),
        );
        for i in 0..3u32 {
            text += &format!(
                "2024-01-25T{:02}:{:02}:{i:02}.000Z,EX01\\Default,08DC{f:08X}{i:04X},{i},10.0.0.5:25,203.0.113.9:41822,<,EHLO x,\r\n",
                f / 60 % 24,
                f % 60
            );
        }
        std::fs::write(logs.join(format!("RECV2024012500-{f}.LOG")), text).unwrap();
    }
    let lake = tmp.path().join("lake");
    let cfg = config(tmp.path(), &tmp.path().join("logs"), &lake, "");
    let out = run_until_idle(&cfg);
    assert!(out.starts_with("1000 files"), "{out}");
    let d = diff(&lake, &lake, &[]);
    assert_eq!(d["smtp_protocol"].0, 3000, "{d:?}");
    // Nothing is read twice by a second run: the finished files are passed over, and the
    // newest (which Exchange could still append to) is opened at its end.
    let out = run_until_idle(&cfg);
    assert!(out.starts_with("1 files, 0.0 MB"), "{out}");
    assert!(!out.contains("rows"), "{out}");
    assert_eq!(diff(&lake, &lake, &[])["smtp_protocol"].0, 3000);
}

/// Options for an agent run in this process over `logs`, its lake and state under `dir`, to
/// the end of what it finds.
fn in_process(
    logs: &Path,
    dir: &Path,
    wrap: Option<mailflow::agent::SinkWrapper>,
) -> mailflow::agent::AgentOptions {
    mailflow::agent::AgentOptions {
        sources: vec![mailflow::config::Source::of_paths(
            vec![logs.to_path_buf()],
            None,
        )],
        lake: dir.join("lake"),
        table_format: Default::default(),
        lake_options: mailflow_sinks::lake::LakeOptions::default(),
        elasticsearch: Vec::new(),
        state_dir: dir.join("state"),
        matcher: std::sync::Arc::new(
            mailflow_enrich::Matcher::new(mailflow_enrich::Catalog::builtin()).unwrap(),
        ),
        threads: 2,
        batch_size: 2048,
        event_providers: Default::default(),
        max_line_bytes: mailflow_parser::DEFAULT_MAX_LINE_BYTES,
        poll_interval: Duration::from_millis(50),
        checkpoint_interval: Duration::from_millis(200),
        shutdown_timeout: Duration::from_secs(30),
        read_from: mailflow::config::ReadFrom::Beginning,
        metrics_addr: None,
        until_idle: true,
        rotate_after: Duration::ZERO,
        wrap_sink: wrap,
        finite: None,
    }
}

/// A sink that runs a hook before each write (to stall or refuse it), then writes through.
struct Hooked {
    inner: Box<dyn mailflow_sinks::sink::Sink>,
    before: Box<dyn FnMut() -> Result<(), mailflow_sinks::sink::Error> + Send>,
}

impl std::fmt::Debug for Hooked {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hooked")
            .field("inner", &self.inner)
            .finish()
    }
}

impl Hooked {
    /// Wraps each sink the agent builds, with a hook of its own from `hook`.
    fn wrap<H>(hook: impl Fn() -> H + Send + Sync + 'static) -> mailflow::agent::SinkWrapper
    where
        H: FnMut() -> Result<(), mailflow_sinks::sink::Error> + Send + 'static,
    {
        mailflow::agent::SinkWrapper(std::sync::Arc::new(move |inner| {
            Box::new(Hooked {
                inner,
                before: Box::new(hook()),
            }) as Box<dyn mailflow_sinks::sink::Sink>
        }))
    }
}

impl mailflow_sinks::sink::Sink for Hooked {
    fn name(&self) -> &str {
        self.inner.name()
    }
    fn write(
        &mut self,
        source: &mailflow_sinks::lake::Source<'_>,
        batches: &[(&str, &arrow_array::RecordBatch)],
    ) -> Result<(), mailflow_sinks::sink::Error> {
        (self.before)()?;
        self.inner.write(source, batches)
    }
    fn acked(&self) -> u64 {
        self.inner.acked()
    }
    fn tick(&mut self) -> Result<(), mailflow_sinks::sink::Error> {
        self.inner.tick()
    }
    fn flush(&mut self) -> Result<(), mailflow_sinks::sink::Error> {
        self.inner.flush()
    }
    fn close(self: Box<Self>) -> Result<mailflow_sinks::sink::Closed, mailflow_sinks::sink::Error> {
        self.inner.close()
    }
    fn abort(self: Box<Self>) {
        self.inner.abort()
    }
}

#[test]
fn a_sink_that_fails_stops_the_agent_and_the_next_start_replays_exactly() {
    let tmp = tempfile::tempdir().unwrap();
    let logs = tmp.path().join("logs");
    generate(&logs, "4M");
    // Each lane's sink refuses its fifth write, as a cluster answering 403 or a full disk would.
    let wrap = Hooked::wrap(|| {
        let mut writes = 0;
        move || {
            writes += 1;
            if writes == 5 {
                return Err(mailflow_sinks::sink::Error::Other {
                    sink: "test".into(),
                    reason: "refused by the test".into(),
                });
            }
            Ok(())
        }
    });
    // Commits every write, so some of the run is durable before the refusal.
    let mut opts = in_process(&logs, tmp.path(), Some(wrap));
    opts.lake_options.max_file_age = Duration::ZERO;
    let e = mailflow::agent::run(opts).unwrap_err();
    let shown = format!("{e:#}");
    assert!(
        shown.contains("refused by the test") && shown.contains("replays from the checkpoints"),
        "{shown}"
    );
    // The next start, with a sink that works, ends as one ingest of the same files.
    mailflow::agent::run(in_process(&logs, tmp.path(), None)).unwrap();
    let reference = tmp.path().join("reference");
    ingest(&logs, &reference);
    assert_same(
        &tmp.path().join("lake"),
        &reference,
        &[],
        "after a sink failure",
    );
}

#[test]
fn a_stalled_sink_stops_reading_and_reading_resumes_when_it_recovers() {
    use mailflow::agent::AgentOptions;
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    use std::sync::{Arc, Condvar, Mutex};

    let tmp = tempfile::tempdir().unwrap();
    let logs = tmp.path().join("logs");
    generate(&logs, "120M");
    let total: u64 = walkdir(&logs)
        .iter()
        .map(|p| std::fs::metadata(p).unwrap().len())
        .sum();
    let gate = Arc::new((Mutex::new(true), Condvar::new()));
    let writes = Arc::new(AtomicU64::new(0));
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    // Every write blocks while the gate is shut.
    let wrap = {
        let (gate, writes) = (Arc::clone(&gate), Arc::clone(&writes));
        Hooked::wrap(move || {
            let (gate, writes) = (Arc::clone(&gate), Arc::clone(&writes));
            move || {
                let (lock, cv) = &*gate;
                let mut stalled = lock.lock().unwrap();
                while *stalled {
                    stalled = cv.wait(stalled).unwrap();
                }
                writes.fetch_add(1, Ordering::SeqCst);
                Ok(())
            }
        })
    };
    let opts = AgentOptions {
        metrics_addr: Some(port),
        ..in_process(&logs, tmp.path(), Some(wrap))
    };
    let rss_before = rss();
    let done = Arc::new(AtomicBool::new(false));
    let agent = {
        let done = Arc::clone(&done);
        std::thread::spawn(move || {
            let r = mailflow::agent::run(opts);
            done.store(true, Ordering::SeqCst);
            r
        })
    };
    let bytes_read = || -> u64 {
        let text = http_get(port, "/metrics");
        let line = text
            .lines()
            .find(|l| l.starts_with("mailflow_input_bytes_total "))
            .unwrap_or_else(|| panic!("{text}"));
        line.rsplit(' ').next().unwrap().parse::<f64>().unwrap() as u64
    };
    // Stalled: the queues fill, then reading stops well short of the input.
    let mut samples = Vec::new();
    std::thread::sleep(Duration::from_millis(1500));
    for _ in 0..3 {
        samples.push(bytes_read());
        std::thread::sleep(Duration::from_millis(500));
    }
    let grown = rss().saturating_sub(rss_before);
    assert!(!done.load(Ordering::SeqCst));
    assert_eq!(writes.load(Ordering::SeqCst), 0);
    assert!(
        samples.windows(2).all(|w| w[0] == w[1]),
        "reading goes on while the sink stalls: {samples:?}"
    );
    assert!(
        samples[0] < total / 2,
        "read {} of {total} bytes with nothing written",
        samples[0]
    );
    // Bounded: the decoded batches queued for the sink, not the input.
    assert!(
        grown < 200 << 20,
        "memory grew by {} MiB while stalled",
        grown >> 20
    );
    eprintln!(
        "stalled: read {} MiB of {} MiB, memory grew {} MiB",
        samples[0] >> 20,
        total >> 20,
        grown >> 20
    );
    // Recovered: everything is read and written.
    *gate.0.lock().unwrap() = false;
    gate.1.notify_all();
    let summary = agent.join().unwrap().unwrap();
    assert_eq!(summary.bytes, total);
    assert!(writes.load(Ordering::SeqCst) > 0);
}

/// The resident set of this process (Linux), in bytes.
fn rss() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .map_or(0, |kb| kb << 10)
}

fn http_get(addr: std::net::SocketAddr, path: &str) -> String {
    use std::io::Read as _;
    let mut conn = std::net::TcpStream::connect(addr).unwrap();
    write!(conn, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut out = String::new();
    conn.read_to_string(&mut out).unwrap();
    out
}

#[test]
fn the_metrics_endpoint_speaks_prometheus_text() {
    let tmp = tempfile::tempdir().unwrap();
    let logs = tmp.path().join("logs");
    generate(&logs, "1M");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let cfg = config(
        tmp.path(),
        &logs,
        &tmp.path().join("lake"),
        &format!("metrics_addr = \"{port}\"\n"),
    );
    let mut agent = start(&cfg);
    let deadline = Instant::now() + Duration::from_secs(30);
    let text = loop {
        if let Ok(mut conn) = std::net::TcpStream::connect(port) {
            use std::io::Read as _;
            write!(conn, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
            let mut out = String::new();
            conn.read_to_string(&mut out).unwrap();
            if out.contains("mailflow_rows_out_total{table=\"smtp_protocol\"}") {
                break out;
            }
        }
        assert!(Instant::now() < deadline, "no metrics");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
    assert!(text.contains("Content-Type: text/plain; version=0.0.4"));
    for name in [
        "input_bytes_total",
        "queue_depth",
        "bytes_behind",
        "file_bytes_behind",
        "rows_decoded_total",
        "checkpoint_age_seconds",
        "open_sessions",
    ] {
        assert!(
            text.contains(&format!("# TYPE mailflow_{name} ")),
            "{name}: {text}"
        );
    }
    assert!(http_get(port, "/other").starts_with("HTTP/1.1 404"));
    terminate(&mut agent);
    assert!(agent.wait().unwrap().success());
}

/// Windows events and queue snapshots dropped in a watched folder: the agent stores what one
/// `ingest` of the same files stores, a restart stores nothing twice, and a snapshot dropped
/// later is read.
#[test]
fn event_exports_and_queue_snapshots_in_a_folder_are_read_once() {
    let tmp = tempfile::tempdir().unwrap();
    let logs = tmp.path().join("drop");
    std::fs::create_dir_all(&logs).unwrap();
    for f in std::fs::read_dir(data("windows")).unwrap() {
        let f = f.unwrap().path();
        std::fs::copy(&f, logs.join(f.file_name().unwrap())).unwrap();
    }
    let agent_dir = tmp.path().join("agent");
    mailflow::agent::run(in_process(&logs, &agent_dir, None)).unwrap();
    let reference = tmp.path().join("reference");
    ingest(&logs, &reference);
    let agent_lake = agent_dir.join("lake");
    let check = |what: &str| {
        let d = diff(&agent_lake, &reference, &[]);
        for table in ["transport_events", "queue_snapshots"] {
            let (a, b, only_a, only_b) = d[table];
            assert!(
                b > 0 && a == b && only_a == 0 && only_b == 0,
                "{what}: {table}: {:?}",
                d[table]
            );
        }
    };
    check("first run");
    // A restart finds everything read.
    mailflow::agent::run(in_process(&logs, &agent_dir, None)).unwrap();
    check("restart");
    // The next snapshot of the queues.
    let next = std::fs::read_to_string(data("windows").join("get-queue.json"))
        .unwrap()
        .replace("\"MessageCount\":  42", "\"MessageCount\":  57");
    std::fs::write(logs.join("queues-0915.json"), next).unwrap();
    mailflow::agent::run(in_process(&logs, &agent_dir, None)).unwrap();
    ingest(&logs, &reference);
    check("a new snapshot");
    assert_eq!(diff(&agent_lake, &reference, &[])["queue_snapshots"].0, 12);
}
