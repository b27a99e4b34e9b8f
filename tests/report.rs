//! `mailflow report` and `mailflow query` (the real binary, DataFusion inside) on a lake built
//! from generated logs with injected failures: every number the report states is computed again
//! by real DuckDB (`tests/report_check.py`), the queries' answers equal DuckDB's, and the HTML
//! page is opened in real headless Chromium, which must draw every chart without a console
//! error. A missing engine or browser fails the test (`.ci/run` installs them).
// Helpers outside #[test] functions unwrap too: a test's set-up failing is its failure.
#![allow(clippy::unwrap_used)]

mod cli;

use std::path::{Path, PathBuf};
use std::process::Command;

use cli::{generate_mixed, mailflow, python_script, run_mailflow};

/// Logs of two servers over nine days (two weeks and more), ingested into a lake.
fn lake(tmp: &Path) -> (PathBuf, PathBuf) {
    let logs = tmp.join("logs");
    let lake = tmp.join("lake");
    generate_mixed(&logs, "8M", &["--days", "9", "--seed", "11"]);
    mailflow(&[
        "ingest",
        logs.to_str().unwrap(),
        "--parquet",
        lake.to_str().unwrap(),
        "--quiet",
    ]);
    (logs, lake)
}

fn report_json(lake: &Path, out: &Path, extra: &[&str]) -> serde_json::Value {
    let mut args = vec![
        "report",
        "--lake",
        lake.to_str().unwrap(),
        "--format",
        "json",
        "--out",
        out.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    mailflow(&args);
    serde_json::from_slice(&std::fs::read(out).unwrap()).unwrap()
}

#[test]
fn every_report_number_equals_duckdb_and_the_page_renders() {
    let tmp = tempfile::tempdir().unwrap();
    let (logs, lake) = lake(tmp.path());

    // The whole lake.
    let path = tmp.path().join("report.json");
    let report = report_json(&lake, &path, &[]);
    let checked = python_script(
        "report_check.py",
        &["report", lake.to_str().unwrap(), path.to_str().unwrap()],
    );
    assert!(checked.contains("report ok"), "{checked}");
    // The generated failures are there to be counted: not a report of zeros.
    for section in [
        "volume",
        "rates",
        "codes",
        "domains",
        "connectors",
        "tls_versions",
        "certificates",
        "latency",
        "findings",
    ] {
        assert!(
            report[section].as_array().is_some_and(|a| !a.is_empty()),
            "{section} is empty: {checked}"
        );
    }
    assert!(
        report["weeks"].as_array().unwrap().len() >= 2,
        "{}",
        report["weeks"]
    );

    // The findings are diagnose's, in its order, for the same logs.
    let diagnosed = mailflow(&["diagnose", logs.to_str().unwrap(), "--format", "json"]);
    let diagnosed: serde_json::Value = serde_json::from_slice(&diagnosed.stdout).unwrap();
    let codes = |v: &serde_json::Value| -> Vec<(String, u64)> {
        v.as_array()
            .unwrap()
            .iter()
            .take(20)
            .map(|f| {
                (
                    f["code"].as_str().unwrap().to_string(),
                    f["count"].as_u64().unwrap(),
                )
            })
            .collect()
    };
    assert_eq!(codes(&report["findings"]), codes(&diagnosed["findings"]));

    // A week and one server: only those partitions, and the numbers still DuckDB's.
    let first = report["input"]["first_day"].as_str().unwrap().to_string();
    let since =
        chrono::NaiveDate::parse_from_str(&first, "%Y-%m-%d").unwrap() + chrono::Days::new(2);
    let until = since + chrono::Days::new(6);
    let (since, until) = (since.to_string(), until.to_string());
    let server = report["input"]["servers"][0].as_str().unwrap().to_string();
    let scoped_path = tmp.path().join("scoped.json");
    let scoped = report_json(
        &lake,
        &scoped_path,
        &["--since", &since, "--until", &until, "--server", &server],
    );
    assert_eq!(scoped["input"]["servers"], serde_json::json!([server]));
    assert_eq!(scoped["input"]["first_day"].as_str(), Some(since.as_str()));
    let all_files: u64 = report["input"]["tables"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["files"].as_u64().unwrap())
        .sum();
    let week_files: u64 = scoped["input"]["tables"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["files"].as_u64().unwrap())
        .sum();
    // Exactly the files of those days and that server, counted on disk.
    let mut expected = 0;
    for table in std::fs::read_dir(&lake).unwrap().map(|e| e.unwrap().path()) {
        for day in std::fs::read_dir(&table)
            .into_iter()
            .flatten()
            .map(|e| e.unwrap().path())
        {
            let name = day.file_name().unwrap().to_string_lossy().into_owned();
            let Some(d) = name.strip_prefix("date=") else {
                continue;
            };
            if d < since.as_str() || d > until.as_str() {
                continue;
            }
            let files = std::fs::read_dir(day.join(format!("server={server}")))
                .into_iter()
                .flatten();
            expected += files
                .filter(|f| {
                    f.as_ref()
                        .unwrap()
                        .file_name()
                        .to_string_lossy()
                        .ends_with(".parquet")
                })
                .count() as u64;
        }
    }
    assert_eq!(week_files, expected);
    assert!(
        week_files < all_files / 2,
        "a week of one server read {week_files} of {all_files} files"
    );
    let checked = python_script(
        "report_check.py",
        &[
            "report",
            lake.to_str().unwrap(),
            scoped_path.to_str().unwrap(),
            "--since",
            &since,
            "--until",
            &until,
            "--server",
            &server,
        ],
    );
    assert!(checked.contains("report ok"), "{checked}");

    // CSV: the same aggregates, a file each.
    let csv_dir = tmp.path().join("csv");
    mailflow(&[
        "report",
        "--lake",
        lake.to_str().unwrap(),
        "--format",
        "csv",
        "--out",
        csv_dir.to_str().unwrap(),
    ]);
    let volume = std::fs::read_to_string(csv_dir.join("volume.csv")).unwrap();
    assert_eq!(
        volume.lines().count(),
        report["volume"].as_array().unwrap().len() + 1
    );
    assert!(volume.starts_with("date,server,received,sent,delivered,failed,deferred\n"));

    // The page, in a real browser.
    let html = tmp.path().join("report.html");
    mailflow(&[
        "report",
        "--lake",
        lake.to_str().unwrap(),
        "--out",
        html.to_str().unwrap(),
    ]);
    let page = std::fs::read_to_string(&html).unwrap();
    for external in ["src=\"http", "href=\"http", "@import", "url(", "<link"] {
        assert!(
            !page.contains(external),
            "the page loads something ({external})"
        );
    }
    let charts = page.matches("<svg class=\"chart\"").count();
    assert!(charts >= 9, "{charts} charts");
    let shot = tmp.path().join("report.png");
    let browser = chromium(&html, &shot);
    assert!(
        browser
            .dom
            .contains(&format!("data-charts-rendered=\"{charts}/{charts}\"")),
        "not every chart rendered:\n{}",
        &browser.dom[..browser.dom.len().min(400)]
    );
    // The page's own log line shows that console messages are captured at all.
    assert!(
        browser
            .console
            .contains(&format!("{charts} of {charts} charts rendered")),
        "console not captured:\n{}",
        browser.console
    );
    let errors: Vec<&str> = browser
        .console
        .lines()
        .filter(|l| {
            l.contains("CONSOLE")
                && (l.contains("Uncaught") || l.contains(":ERROR:") || l.contains("error"))
        })
        .collect();
    assert!(errors.is_empty(), "console errors: {errors:#?}");
    let png = std::fs::read(&shot).expect("a screenshot");
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 20_000,
        "screenshot of {} bytes",
        png.len()
    );
}

struct Browser {
    dom: String,
    console: String,
}

/// Opens `page` in headless Chromium: the DOM after its script ran, a screenshot, and the
/// browser's log with the page's console messages.
fn chromium(page: &Path, shot: &Path) -> Browser {
    let exe = ["chromium", "chromium-browser", "google-chrome"]
        .into_iter()
        .find(|c| {
            Command::new(c)
                .arg("--version")
                .output()
                .is_ok_and(|o| o.status.success())
        })
        .expect("Chromium must be installed (`bash .ci/run` installs Debian's chromium)");
    let url = format!("file://{}", page.display());
    let profile = tempfile::tempdir().unwrap();
    let common = |c: &mut Command| {
        c.args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--enable-logging=stderr",
            "--v=0",
            "--virtual-time-budget=5000",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()));
    };
    let mut dump = Command::new(exe);
    common(&mut dump);
    let dumped = dump
        .arg("--dump-dom")
        .arg(&url)
        .output()
        .expect("run chromium");
    assert!(
        dumped.status.success(),
        "{}",
        String::from_utf8_lossy(&dumped.stderr)
    );
    let mut snap = Command::new(exe);
    common(&mut snap);
    let snapped = snap
        .arg(format!("--screenshot={}", shot.display()))
        .arg("--window-size=1280,3000")
        .arg(&url)
        .output()
        .expect("run chromium");
    assert!(
        snapped.status.success(),
        "{}",
        String::from_utf8_lossy(&snapped.stderr)
    );
    Browser {
        dom: String::from_utf8_lossy(&dumped.stdout).into_owned(),
        console: String::from_utf8_lossy(&dumped.stderr).into_owned()
            + &String::from_utf8_lossy(&snapped.stderr),
    }
}

#[test]
fn query_answers_equal_duckdb() {
    let tmp = tempfile::tempdir().unwrap();
    let (_, lake) = lake(tmp.path());
    // (mailflow's SQL, DuckDB's SQL for the same question).
    let questions = [
        (
            "SELECT count(*) FROM message_tracking",
            "SELECT count(*) FROM message_tracking",
        ),
        (
            "SELECT server, count(*) AS n FROM smtp_sessions GROUP BY server ORDER BY server",
            "SELECT server, count(*) AS n FROM smtp_sessions GROUP BY server ORDER BY server",
        ),
        (
            "SELECT diagnosis_code, count(*) AS n FROM smtp_protocol WHERE diagnosis_code IS NOT NULL \
             GROUP BY diagnosis_code ORDER BY n DESC, diagnosis_code",
            "SELECT diagnosis_code, count(*) AS n FROM smtp_protocol WHERE diagnosis_code IS NOT NULL \
             GROUP BY diagnosis_code ORDER BY n DESC, diagnosis_code",
        ),
        (
            "SELECT date, status, count(*) AS n FROM messages WHERE date >= '2024-01-27' \
             GROUP BY date, status ORDER BY date, status",
            "SELECT date, status, count(*) AS n FROM messages WHERE date >= DATE '2024-01-27' \
             GROUP BY date, status ORDER BY date, status",
        ),
        (
            "SELECT sender_address, count(*) AS n FROM message_tracking WHERE event_id = 'RECEIVE' \
             GROUP BY sender_address ORDER BY n DESC, sender_address LIMIT 10",
            "SELECT sender_address, count(*) AS n FROM message_tracking WHERE event_id = 'RECEIVE' \
             GROUP BY sender_address ORDER BY n DESC, sender_address LIMIT 10",
        ),
        (
            "SELECT message_id, status, latency_ms, recipients FROM messages WHERE status <> 'delivered' \
             ORDER BY server, source_file, source_offset LIMIT 25",
            "SELECT message_id, status, latency_ms, recipients FROM messages WHERE status <> 'delivered' \
             ORDER BY server, source_file, source_offset LIMIT 25",
        ),
        (
            "SELECT s.direction, count(*) AS n FROM smtp_sessions s JOIN smtp_protocol p \
             ON s.server = p.server AND s.session_id = p.session_id GROUP BY s.direction ORDER BY s.direction",
            "SELECT s.direction, count(*) AS n FROM smtp_sessions s JOIN smtp_protocol p \
             ON s.server = p.server AND s.session_id = p.session_id GROUP BY s.direction ORDER BY s.direction",
        ),
        (
            "SELECT CAST(min(timestamp) AS BIGINT), CAST(max(timestamp) AS BIGINT) FROM message_tracking",
            "SELECT epoch_ms(min(timestamp)), epoch_ms(max(timestamp)) FROM message_tracking",
        ),
    ];
    let mut list = Vec::new();
    for (i, (ours, theirs)) in questions.iter().enumerate() {
        let out = tmp.path().join(format!("q{i}.ndjson"));
        mailflow(&[
            "query",
            "--lake",
            lake.to_str().unwrap(),
            "--format",
            "json",
            "--out",
            out.to_str().unwrap(),
            ours,
        ]);
        list.push(serde_json::json!({"duckdb": theirs, "result": out}));
    }
    let file = tmp.path().join("questions.json");
    std::fs::write(&file, serde_json::to_vec(&list).unwrap()).unwrap();
    let checked = python_script(
        "report_check.py",
        &["query", lake.to_str().unwrap(), file.to_str().unwrap()],
    );
    assert!(checked.contains("queries ok"), "{checked}");

    // A lake named relative to the working folder.
    let relative = cli::mailflow_command()
        .current_dir(tmp.path())
        .args([
            "query",
            "--lake",
            "lake",
            "--format",
            "csv",
            "SELECT count(*) AS n FROM smtp_sessions",
        ])
        .output()
        .unwrap();
    assert!(
        relative.status.success(),
        "{}",
        String::from_utf8_lossy(&relative.stderr)
    );

    // The table format, for a terminal; csv and parquet.
    let table = mailflow(&[
        "query",
        "--lake",
        lake.to_str().unwrap(),
        "SELECT count(*) AS n FROM messages",
    ]);
    let text = String::from_utf8_lossy(&table.stdout);
    assert!(
        text.contains("| n ") && text.trim_end().ends_with("1 row"),
        "{text}"
    );
    let csv = mailflow(&[
        "query",
        "--lake",
        lake.to_str().unwrap(),
        "--format",
        "csv",
        "SELECT message_id, recipients FROM messages ORDER BY server, source_file, source_offset LIMIT 3",
    ]);
    let csv = String::from_utf8_lossy(&csv.stdout);
    assert!(
        csv.starts_with("message_id,recipients\n") && csv.lines().count() == 4,
        "{csv}"
    );
    let parquet = tmp.path().join("q.parquet");
    mailflow(&[
        "query",
        "--lake",
        lake.to_str().unwrap(),
        "--format",
        "parquet",
        "--out",
        parquet.to_str().unwrap(),
        "SELECT * FROM smtp_sessions",
    ]);
    let sessions = mailflow(&[
        "query",
        "--lake",
        lake.to_str().unwrap(),
        "--format",
        "csv",
        "SELECT count(*) FROM smtp_sessions",
    ]);
    let n: u64 = String::from_utf8_lossy(&sessions.stdout)
        .lines()
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let file = std::fs::File::open(&parquet).unwrap();
    let reader = parquet::file::reader::SerializedFileReader::new(file).unwrap();
    use parquet::file::reader::FileReader;
    assert_eq!(reader.metadata().file_metadata().num_rows() as u64, n);

    // Mistakes: a table that does not exist names the ones that do; parquet needs a file.
    let bad = run_mailflow(&[
        "query",
        "--lake",
        lake.to_str().unwrap(),
        "SELECT * FROM tracking",
    ]);
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(
        !bad.status.success() && err.contains("message_tracking, smtp_protocol"),
        "{err}"
    );
    let bad = run_mailflow(&[
        "query",
        "--lake",
        lake.to_str().unwrap(),
        "--format",
        "parquet",
        "SELECT 1",
    ]);
    assert!(String::from_utf8_lossy(&bad.stderr).contains("--out FILE"));
}

#[test]
fn unreadable_files_are_named_and_left_out() {
    let tmp = tempfile::tempdir().unwrap();
    let (_, lake) = lake(tmp.path());
    let path = tmp.path().join("before.json");
    let before = report_json(&lake, &path, &[]);
    // A file that is not Parquet, where a committed file would be.
    let partition = std::fs::read_dir(lake.join("messages"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let server_dir = std::fs::read_dir(&partition)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let junk = server_dir.join("part-zzzz-000001.parquet");
    std::fs::write(
        &junk,
        b"not parquet at all, but long enough to have a footer of sorts",
    )
    .unwrap();
    let after = report_json(&lake, &tmp.path().join("after.json"), &[]);
    let unreadable = after["input"]["unreadable"].as_array().unwrap();
    assert_eq!(unreadable.len(), 1, "{unreadable:?}");
    assert!(
        unreadable[0]["path"]
            .as_str()
            .unwrap()
            .ends_with("part-zzzz-000001.parquet")
    );
    // Everything else is as before.
    assert_eq!(after["rates"], before["rates"]);
    assert_eq!(after["latency"], before["latency"]);
    // And the page says so.
    let html = tmp.path().join("r.html");
    mailflow(&[
        "report",
        "--lake",
        lake.to_str().unwrap(),
        "--out",
        html.to_str().unwrap(),
    ]);
    let page = std::fs::read_to_string(&html).unwrap();
    assert!(page.contains("1 file could not be read") && page.contains("part-zzzz-000001.parquet"));
}
