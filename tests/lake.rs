//! The Parquet lake end to end, with the real binary and real engines: DuckDB and Spark read the
//! same answers; hostile server names stay inside the lake; ingests and compactions killed with
//! SIGKILL at random points lose nothing and duplicate nothing.

// Test helpers, not #[test] functions, so clippy's test exemption misses them; a panic here is a
// failed assertion like any other.
#![allow(clippy::unwrap_used)]

mod cli;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use cli::{data, mailflow, mailflow_command, python_script};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

fn generate(dir: &Path, bytes: &str, seed: u64, servers: u32) {
    mailflow(&[
        "generate",
        "--kind",
        "mixed",
        "--bytes",
        bytes,
        "--seed",
        &seed.to_string(),
        "--servers",
        &servers.to_string(),
        "--out",
        dir.to_str().unwrap(),
    ]);
}

/// Lines that become a row or a reject: not blank, not a `#` directive.
fn data_lines(dir: &Path) -> u64 {
    let mut n = 0;
    for entry in walkdir::WalkDir::new(dir) {
        let entry = entry.unwrap();
        if !entry.file_type().is_file() {
            continue;
        }
        let bytes = std::fs::read(entry.path()).unwrap();
        let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(&bytes);
        for line in bytes.split(|&b| b == b'\n') {
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            if !line.is_empty() && line[0] != b'#' {
                n += 1;
            }
        }
    }
    n
}

#[derive(Debug, PartialEq)]
struct LakeCount {
    tables: BTreeMap<String, (u64, u64)>,
    servers: Vec<String>,
}

impl LakeCount {
    /// Rows that stand for input lines: every table but the derived ones.
    fn rows(&self) -> u64 {
        self.tables
            .iter()
            .filter(|(t, _)| !matches!(t.as_str(), "smtp_sessions" | "messages"))
            .map(|(_, n)| n.0)
            .sum()
    }

    fn assert_no_duplicates(&self) {
        for (table, (rows, keys)) in &self.tables {
            assert_eq!(
                rows, keys,
                "{table}: {rows} rows but {keys} distinct lineage keys"
            );
        }
    }
}

fn count(lake: &Path) -> LakeCount {
    let out = python_script("lake_count.py", &[lake]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let tables = v["tables"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), (v[0].as_u64().unwrap(), v[1].as_u64().unwrap())))
        .collect();
    let servers = v["servers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap().to_string())
        .collect();
    LakeCount { tables, servers }
}

/// Every file of the lake, with hidden ones (temporaries) listed apart.
fn lake_files(lake: &Path) -> (Vec<PathBuf>, Vec<PathBuf>) {
    let (mut parts, mut hidden) = (Vec::new(), Vec::new());
    for entry in walkdir::WalkDir::new(lake).min_depth(1) {
        let entry = entry.unwrap();
        let rel = entry.path().strip_prefix(lake).unwrap();
        if !entry.file_type().is_file() || rel.starts_with("_mailflow") {
            continue;
        }
        if entry.file_name().to_string_lossy().starts_with('.') {
            hidden.push(entry.into_path());
        } else {
            parts.push(entry.into_path());
        }
    }
    (parts, hidden)
}

/// This machine's server name, as the lake files a log that names none.
/// `mailflow ingest` of the bundled real samples into `lake`, quietly, with `extra` options.
fn ingest_samples(lake: &Path, extra: &[&str]) {
    let mut args: Vec<std::ffi::OsString> = vec![
        "ingest".into(),
        data("samples").into(),
        "--parquet".into(),
        lake.into(),
        "--quiet".into(),
    ];
    args.extend(extra.iter().map(Into::into));
    mailflow(&args);
}

fn this_host() -> String {
    mailflow_parser::canonical_server(&gethostname::gethostname().to_string_lossy())
        .unwrap_or_else(|| "UNKNOWN".into())
}

/// The `server=` folders of every committed file.
fn server_dirs(lake: &Path) -> std::collections::BTreeSet<String> {
    let (parts, _) = lake_files(lake);
    parts
        .iter()
        .map(|p| {
            let dir = p.parent().unwrap().file_name().unwrap();
            dir.to_string_lossy().into_owned()
        })
        .collect()
}

#[test]
fn duckdb_and_spark_read_the_same_lake() {
    let tmp = tempfile::tempdir().unwrap();
    let generated = tmp.path().join("gen");
    let lake = tmp.path().join("lake");
    let summary = tmp.path().join("summary.json");
    generate(&generated, "4M", 11, 3);
    mailflow(&[
        "ingest".as_ref(),
        generated.as_os_str(),
        data("samples").as_os_str(),
        // Rejects, some without a timestamp (filed under the day they are written).
        data("edge").as_os_str(),
        "--parquet".as_ref(),
        lake.as_os_str(),
        "--summary-json".as_ref(),
        summary.as_os_str(),
        "--quiet".as_ref(),
        // Several files per partition, so the engines union them.
        "--max-file-rows".as_ref(),
        "20000".as_ref(),
    ]);
    write_two_schema_versions(&lake);
    let schema = tmp.path().join("schema.json");
    std::fs::write(&schema, mailflow(&["schema", "--format", "json"]).stdout).unwrap();
    let out = python_script("lake_engines.py", &[&lake, &summary, &schema]);
    assert!(out.contains("\"daily_failures\""), "{out}");
    // Every committed file is under <table>/date=…/server=…/.
    let (parts, hidden) = lake_files(&lake);
    assert!(hidden.is_empty(), "temporaries left: {hidden:?}");
    for p in parts {
        let rel: Vec<String> = p
            .strip_prefix(&lake)
            .unwrap()
            .iter()
            .map(|c| c.to_string_lossy().into_owned())
            .collect();
        assert_eq!(rel.len(), 4, "{rel:?}");
        assert!(
            rel[1].starts_with("date=") && rel[2].starts_with("server="),
            "{rel:?}"
        );
        assert!(
            rel[3].starts_with("part-") && rel[3].ends_with(".parquet"),
            "{rel:?}"
        );
        // The footer's schema version is the one the file's Arrow schema states.
        let footer = mailflow_sinks::lake::footer_metadata(&p).unwrap();
        let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(
            std::fs::File::open(&p).unwrap(),
        )
        .unwrap();
        let arrow = reader
            .schema()
            .metadata()
            .get("mailflow.schema_version")
            .cloned();
        if let Some(arrow) = arrow {
            assert_eq!(footer["mailflow.schema_version"], arrow, "{rel:?}");
        }
    }
}

/// A table written by two schema versions, the second with one more column: what a reader sees
/// after an additive schema change. `lake_engines.py` reads it with both engines.
fn write_two_schema_versions(lake: &Path) {
    use arrow_array::{ArrayRef, Int64Array, RecordBatch, StringArray, TimestampMillisecondArray};
    use arrow_schema::{DataType, Field, Schema, TimeUnit};
    use mailflow_sinks::lake::{LakeOptions, LakeWriter, Source};
    use std::sync::Arc;

    let lineage = || {
        vec![
            Field::new(
                "timestamp",
                DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())),
                false,
            ),
            Field::new("server", DataType::Utf8, false),
            Field::new("source_offset", DataType::Int64, false),
            Field::new("a", DataType::Utf8, true),
        ]
    };
    let columns = |offsets: Vec<i64>| -> Vec<ArrayRef> {
        let n = offsets.len();
        vec![
            Arc::new(
                TimestampMillisecondArray::from(vec![1_736_812_800_000; n]).with_timezone("UTC"),
            ),
            Arc::new(StringArray::from(vec!["EX01"; n])),
            Arc::new(Int64Array::from(offsets)),
            Arc::new(StringArray::from(vec!["x"; n])),
        ]
    };
    let v1 =
        RecordBatch::try_new(Arc::new(Schema::new(lineage())), columns(vec![0, 10, 20])).unwrap();
    let mut fields = lineage();
    fields.push(Field::new("b", DataType::Int64, true));
    let mut cols = columns(vec![30, 40]);
    cols.push(Arc::new(Int64Array::from(vec![7, 8])));
    let v2 = RecordBatch::try_new(Arc::new(Schema::new(fields)), cols).unwrap();
    for (version, batch, end) in [(1, &v1, 30), (2, &v2, 50)] {
        let options = LakeOptions {
            schema_version: version,
            ..LakeOptions::default()
        };
        let mut w = LakeWriter::new(lake, options).unwrap();
        let source = Source {
            fingerprint: "evolution",
            file: "evolution.log",
            end_offset: end,
        };
        w.write(&source, &[("schema_evolution", batch)]).unwrap();
        w.close().unwrap();
    }
}

const TRACKING_HEADER: &str = "#Software: Microsoft Exchange Server\r\n#Version: 15.02.1258.012\r\n#Log-type: Message Tracking Log\r\n#Fields: date-time,client-ip,client-hostname,server-ip,server-hostname,source-context,connector-id,source,event-id,internal-message-id,message-id,recipient-address,recipient-status,total-bytes,recipient-count,related-recipient-address,reference,message-subject,sender-address,return-path,message-info\r\n";

/// A tracking row: `client` and `server` host names, event, source.
fn tracking_row(day: &str, client: &str, server: &str, event: &str, source: &str) -> String {
    format!(
        "{day}T10:00:00.000Z,10.0.0.1,{client},10.0.0.2,{server},ctx,Conn,{source},{event},1,<a@b>,x@y,250 2.1.5 OK,10,1,,,s,a@b,a@b,\r\n"
    )
}

#[test]
fn hostile_server_names_stay_inside_the_lake() {
    let tmp = tempfile::tempdir().unwrap();
    let lake = tmp.path().join("a/lake");
    // `--server` takes a server name or nothing: a path, a Hive marker or 5,000 characters are
    // refused before anything is written, with the option named.
    for hostile in [
        "../../escaped/x=y\t%41\\*?",
        "__HIVE_DEFAULT_PARTITION__",
        &"a".repeat(5000),
        "EX01\u{1b}]0;pwned\u{7}",
    ] {
        let out = cli::run_mailflow(&[
            "ingest".as_ref(),
            data("samples").as_os_str(),
            "--parquet".as_ref(),
            lake.as_os_str(),
            "--server".as_ref(),
            hostile.as_ref(),
        ]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{hostile:?} accepted");
        assert!(
            stderr.contains("--server") && stderr.contains("not a server name"),
            "{stderr}"
        );
        assert!(!lake.exists());
    }
    // Rows and folders that name hostile servers are not taken for server names: the file goes
    // by the next source that names one (here, the host), never a path, NULL or a cut name.
    let input = tmp.path().join("in");
    let evil = input.join("evil x=y%41/MessageTracking");
    std::fs::create_dir_all(&evil).unwrap();
    let mut log = TRACKING_HEADER.to_string();
    for name in [
        "../../escaped",
        "__HIVE_DEFAULT_PARTITION__",
        &"b".repeat(5000),
    ] {
        log += &tracking_row("2025-01-14", "remote.example", name, "RECEIVE", "SMTP");
        log += &tracking_row("2025-01-14", name, "mx.remote.example", "SEND", "SMTP");
    }
    std::fs::write(evil.join("MSGTRK2025011410-1.LOG"), &log).unwrap();
    // A server's own rows, in a folder with its short name, while the rows give its FQDN.
    let good = input.join("EX05/MessageTracking");
    std::fs::create_dir_all(&good).unwrap();
    let mut log = TRACKING_HEADER.to_string();
    log += &tracking_row(
        "2025-01-14",
        "mail.sender.example",
        "ex05.contoso.com",
        "RECEIVE",
        "SMTP",
    );
    log += &tracking_row("2025-01-14", "EX05", "mx.fabrikam.example", "SEND", "SMTP");
    std::fs::write(good.join("MSGTRK2025011410-1.LOG"), &log).unwrap();
    mailflow(&[
        "ingest".as_ref(),
        input.as_os_str(),
        "--parquet".as_ref(),
        lake.as_os_str(),
        "--quiet".as_ref(),
    ]);
    let host = this_host();
    let beside: Vec<_> = walkdir::WalkDir::new(tmp.path())
        .into_iter()
        .map(|e| e.unwrap().into_path())
        .filter(|p| !p.starts_with(&lake) && !p.starts_with(&input))
        .filter(|p| p != tmp.path() && p != &tmp.path().join("a"))
        .collect();
    assert!(beside.is_empty(), "{beside:?}");
    let (parts, _) = lake_files(&lake);
    let want: std::collections::BTreeSet<String> =
        [format!("server={host}"), "server=EX05".to_string()].into();
    assert_eq!(server_dirs(&lake), want);
    for p in &parts {
        assert_eq!(p.strip_prefix(&lake).unwrap().components().count(), 4);
    }
    // DuckDB reads every name back exactly as the folder gives it: no NULL, nothing cut.
    let mut servers = count(&lake).servers;
    servers.sort();
    let mut want = vec![host, "EX05".to_string()];
    want.sort();
    assert_eq!(servers, want);
}

/// Runs `mailflow ARGS` and kills it with SIGKILL after `after`; returns whether it finished
/// first.
fn run_and_kill(args: &[&std::ffi::OsStr], after: Duration) -> bool {
    let mut child = mailflow_command()
        .args(args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + after;
    while Instant::now() < deadline {
        if let Some(status) = child.try_wait().unwrap() {
            assert!(status.success(), "mailflow {args:?} failed: {status}");
            return true;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    child.kill().unwrap(); // SIGKILL on Unix
    child.wait().unwrap();
    false
}

#[test]
fn killed_ingests_resume_exactly_once() {
    let tmp = tempfile::tempdir().unwrap();
    let generated = tmp.path().join("gen");
    generate(&generated, "8M", 5, 2);
    let lines = data_lines(&generated);
    let args = |lake: &Path| -> Vec<std::ffi::OsString> {
        vec![
            "ingest".into(),
            generated.clone().into(),
            "--parquet".into(),
            lake.into(),
            "--quiet".into(),
            "--threads".into(),
            "2".into(),
            "--batch-size".into(),
            "256".into(),
            // Many commits, so kills land before, during and after them.
            "--max-file-rows".into(),
            "800".into(),
        ]
    };
    // How long a whole run takes here (the quicker of two), to spread the kill points over it.
    let full = (0..2)
        .map(|k| {
            let scratch = args(&tmp.path().join(format!("scratch-{k}")));
            let scratch: Vec<&std::ffi::OsStr> = scratch.iter().map(|a| a.as_os_str()).collect();
            let started = Instant::now();
            assert!(run_and_kill(&scratch, Duration::from_secs(600)));
            started.elapsed()
        })
        .min()
        .unwrap();
    // What one uninterrupted run makes of the derived tables.
    let whole = count(&tmp.path().join("scratch-0"));
    let derived = |c: &LakeCount| {
        (
            c.tables.get("smtp_sessions").copied(),
            c.tables.get("messages").copied(),
        )
    };
    assert!(derived(&whole).0.is_some_and(|(n, _)| n > 100), "{whole:?}");
    assert!(derived(&whole).1.is_some_and(|(n, _)| n > 100), "{whole:?}");

    let mut rng = StdRng::seed_from_u64(20261122);
    let (mut killed, mut midway) = (0, 0);
    // Run time varies with what else the machine runs (CI runs test binaries side by side), so a
    // kill can land before the first commit more often than planned: rounds go on, up to 40,
    // until 20 runs were killed and 8 of them midway.
    let mut round = 0;
    while round < 40 && (killed < 20 || midway < 8) {
        round += 1;
        // A fresh lake each round: kill once at a random point, kill the resuming run too (so
        // recovery itself is interrupted), then let a run finish.
        let lake = tmp.path().join(format!("lake-{round}"));
        let argv = args(&lake);
        let argv: Vec<&std::ffi::OsStr> = argv.iter().map(|a| a.as_os_str()).collect();
        if run_and_kill(&argv, full.mul_f64(rng.random_range(0.05..0.9))) {
            continue; // finished before the kill
        }
        killed += 1;
        let partial = count(&lake);
        partial.assert_no_duplicates();
        assert!(partial.rows() <= lines);
        midway += u32::from(partial.rows() > 0 && partial.rows() < lines);
        run_and_kill(&argv, full.mul_f64(rng.random_range(0.0..0.9)));
        mailflow(&argv);
        let end = count(&lake);
        end.assert_no_duplicates();
        assert_eq!(
            end.rows(),
            lines,
            "round {round}: every input line exactly once: {end:?}"
        );
        // Sessions and messages come out as from one uninterrupted run: the rerun reads again
        // every file no run finished.
        assert_eq!(
            derived(&end),
            derived(&whole),
            "round {round}: smtp_sessions and messages after kills, against one uninterrupted run"
        );
        let (_, hidden) = lake_files(&lake);
        assert!(
            hidden.is_empty(),
            "round {round}: temporaries left: {hidden:?}"
        );
        std::fs::remove_dir_all(&lake).unwrap();
    }
    assert!(
        killed >= 18,
        "only {killed} of {round} runs were killed before they finished (a run takes {full:?})"
    );
    // Kills that left part of the input committed are the ones that test resuming.
    assert!(
        midway >= 8,
        "only {midway} kills left a partly written lake"
    );
}

#[test]
fn killed_compactions_lose_and_duplicate_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let generated = tmp.path().join("gen");
    generate(&generated, "3M", 9, 2);
    let lake = tmp.path().join("lake");
    let ingest = |lake: &Path| {
        mailflow(&[
            "ingest".as_ref(),
            generated.as_os_str(),
            "--parquet".as_ref(),
            lake.as_os_str(),
            "--quiet".as_ref(),
            "--max-file-rows".as_ref(),
            "300".as_ref(),
            "--batch-size".as_ref(),
            "100".as_ref(),
        ])
    };
    ingest(&lake);
    let before = count(&lake);
    let files_before = lake_files(&lake).0.len();
    assert!(files_before > 40, "{files_before} files");
    // Time a whole compaction on a copy.
    let scratch = tmp.path().join("scratch");
    copy_dir(&lake, &scratch);
    let compact = |lake: &Path| -> Vec<std::ffi::OsString> {
        vec![
            "compact".into(),
            "--lake".into(),
            lake.into(),
            "--older-than".into(),
            "0".into(),
        ]
    };
    let scratch_args = compact(&scratch);
    let scratch_args: Vec<&std::ffi::OsStr> = scratch_args.iter().map(|a| a.as_os_str()).collect();
    let started = Instant::now();
    assert!(run_and_kill(&scratch_args, Duration::from_secs(600)));
    let full = started.elapsed();

    let argv = compact(&lake);
    let argv: Vec<&std::ffi::OsStr> = argv.iter().map(|a| a.as_os_str()).collect();
    let mut rng = StdRng::seed_from_u64(7);
    for _ in 0..10 {
        run_and_kill(&argv, full.mul_f64(rng.random_range(0.0..0.6)));
        // A kill between the new file's rename and the old files' removal leaves both visible
        // (for the microseconds of a normal run, and until the next start after a kill): the next
        // start finishes the commit from its journal. A compaction that finds nothing old enough
        // to merge is such a start.
        let recovered = mailflow(&[
            "compact".as_ref(),
            "--lake".as_ref(),
            lake.as_os_str(),
            "--older-than".as_ref(),
            "100y".as_ref(),
        ]);
        assert!(String::from_utf8_lossy(&recovered.stdout).contains("0 files"));
        let now = count(&lake);
        now.assert_no_duplicates();
        assert_eq!(now, before, "a killed compaction changed the data");
    }
    mailflow(&argv);
    assert_eq!(count(&lake), before);
    let files_after = lake_files(&lake).0.len();
    assert!(
        files_after < files_before / 4,
        "{files_before} -> {files_after} files"
    );
    // Provenance survived: ingesting the same logs again writes nothing.
    let again = String::from_utf8_lossy(&ingest(&lake).stdout).into_owned();
    assert!(again.contains("already in the lake"), "{again}");
    assert_eq!(count(&lake), before);
}

fn copy_dir(from: &Path, to: &Path) {
    for entry in walkdir::WalkDir::new(from) {
        let entry = entry.unwrap();
        let target = to.join(entry.path().strip_prefix(from).unwrap());
        if entry.file_type().is_dir() {
            std::fs::create_dir_all(&target).unwrap();
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

#[test]
fn overwrite_removes_only_what_the_lake_wrote() {
    let tmp = tempfile::tempdir().unwrap();
    // A folder that is not a lake, whose subfolder shares a table's name: refused, untouched.
    let notlake = tmp.path().join("notlake");
    std::fs::create_dir_all(notlake.join("messages")).unwrap();
    std::fs::write(notlake.join("messages/important.txt"), "keep").unwrap();
    let out = cli::run_mailflow(&[
        "ingest".as_ref(),
        data("samples").as_os_str(),
        "--parquet".as_ref(),
        notlake.as_os_str(),
        "--overwrite".as_ref(),
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("not a mailflow lake") && stderr.contains("notlake"),
        "{stderr}"
    );
    assert_eq!(
        std::fs::read_to_string(notlake.join("messages/important.txt")).unwrap(),
        "keep"
    );
    assert!(!notlake.join("_mailflow").exists());
    // A lake with a file of someone else's in a table folder: the lake's files go, that stays.
    let lake = tmp.path().join("lake");
    let ingest = |extra: &[&str]| {
        let mut args: Vec<std::ffi::OsString> = vec![
            "ingest".into(),
            data("samples").into(),
            "--parquet".into(),
            lake.clone().into(),
            "--quiet".into(),
        ];
        args.extend(extra.iter().map(Into::into));
        String::from_utf8(mailflow(&args).stdout).unwrap()
    };
    ingest(&[]);
    let before = count(&lake);
    std::fs::write(lake.join("message_tracking/README.txt"), "analyst notes").unwrap();
    let summary = ingest(&["--overwrite"]);
    assert!(summary.contains("--overwrite removed"), "{summary}");
    assert!(
        summary.contains("kept 1 files mailflow did not write"),
        "{summary}"
    );
    assert_eq!(
        std::fs::read_to_string(lake.join("message_tracking/README.txt")).unwrap(),
        "analyst notes"
    );
    // Emptied first, then written again: the same rows, once.
    assert_eq!(count(&lake), before);
}

#[test]
fn a_compaction_killed_between_rename_and_delete_is_seen_twice_until_recover() {
    // The state a compaction killed inside its commit leaves: the merged file renamed into
    // place, the files it replaced not yet removed, its journal listing them. Built here by
    // hand from a real compaction, so the moment is exact.
    let tmp = tempfile::tempdir().unwrap();
    let lake = tmp.path().join("lake");
    ingest_samples(&lake, &["--max-file-rows", "2"]);
    let expected = count(&lake);
    let (before, _) = lake_files(&lake);
    let saved: Vec<(PathBuf, Vec<u8>)> = before
        .iter()
        .map(|p| (p.clone(), std::fs::read(p).unwrap()))
        .collect();
    mailflow(&[
        "compact".as_ref(),
        "--lake".as_ref(),
        lake.as_os_str(),
        "--older-than".as_ref(),
        "0s".as_ref(),
    ]);
    let (after, _) = lake_files(&lake);
    let replaced: Vec<&(PathBuf, Vec<u8>)> =
        saved.iter().filter(|(p, _)| !after.contains(p)).collect();
    assert!(replaced.len() > 1, "the compaction merged nothing");
    for (p, bytes) in &replaced {
        std::fs::write(p, bytes).unwrap();
    }
    let deletes: Vec<String> = replaced
        .iter()
        .map(|(p, _)| {
            p.strip_prefix(&lake)
                .unwrap()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    let journal = lake.join("_mailflow/journal");
    std::fs::create_dir_all(&journal).unwrap();
    std::fs::write(
        journal.join("killed.json"),
        serde_json::json!({ "renames": [], "deletes": deletes }).to_string(),
    )
    .unwrap();
    // What the README says a reader then sees: those rows twice.
    let during = count(&lake);
    assert!(during.rows() > expected.rows(), "{during:?}");
    let out = mailflow(&["recover".as_ref(), "--lake".as_ref(), lake.as_os_str()]);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("finished 1 interrupted commits"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert_eq!(count(&lake), expected);
    assert!(!journal.join("killed.json").exists());
}

#[test]
fn a_message_joins_the_session_that_carried_it_both_ways() {
    // One receive session on EX01 that queues a message, and the tracking RECEIVE row of that
    // message: DuckDB joins them by the session id tracking gives and by the message id the
    // session lists.
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("in/EX01");
    std::fs::create_dir_all(input.join("SmtpReceive")).unwrap();
    std::fs::create_dir_all(input.join("MessageTracking")).unwrap();
    let session = "08DD34A1B2C3D4E5";
    let lines = [
        "+,,",
        "*, CN=ex01.contoso.com CN=Contoso CA 0A1B 3F2504E04F8911D39A0C0305E82C3301ABCDEF12 2025-01-01T00:00:00.000Z 2026-01-01T00:00:00.000Z ex01.contoso.com,Sending certificate Subject Issuer name Serial number Thumbprint Not before Not after Subject alternate names",
        "<,MAIL FROM:<alice@fabrikam.com>,",
        "<,RCPT TO:<bob@contoso.com>,",
        ">,250 2.6.0 <m1@fabrikam.com> [InternalId=1] Queued mail for delivery,",
        "-,,Local",
    ];
    let mut log = "#Software: Microsoft Exchange Server\r\n#Log-type: SMTP Receive Protocol Log\r\n#Fields: date-time,connector-id,session-id,sequence-number,local-endpoint,remote-endpoint,event,data,context\r\n".to_string();
    for (k, l) in lines.iter().enumerate() {
        log += &format!(
            "2025-01-14T09:00:0{k}.000Z,EX01\\Default EX01,{session},{k},10.0.0.5:25,198.51.100.7:50000,{l}\r\n"
        );
    }
    std::fs::write(input.join("SmtpReceive/RECV2025011409-1.LOG"), log).unwrap();
    let mut tracking = TRACKING_HEADER.to_string();
    tracking += &format!(
        "2025-01-14T09:00:05.000Z,198.51.100.7,mail.fabrikam.com,10.0.0.5,EX01,{session};2025-01-14T09:00:00.000Z;0,EX01\\Default EX01,SMTP,RECEIVE,1,<m1@fabrikam.com>,bob@contoso.com,,10,1,,,s,alice@fabrikam.com,alice@fabrikam.com,\r\n"
    );
    std::fs::write(
        input.join("MessageTracking/MSGTRK2025011409-1.LOG"),
        tracking,
    )
    .unwrap();
    let lake = tmp.path().join("lake");
    mailflow(&[
        "ingest".as_ref(),
        tmp.path().join("in").as_os_str(),
        "--parquet".as_ref(),
        lake.as_os_str(),
        "--quiet".as_ref(),
    ]);
    let out = python_script("lake_join.py", &[&lake]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let want = serde_json::json!([[
        "<m1@fabrikam.com>",
        session,
        "3F2504E04F8911D39A0C0305E82C3301ABCDEF12"
    ]]);
    assert_eq!(v["by_session_id"], want, "{out}");
    assert_eq!(v["by_message_id"], want, "{out}");
}

#[test]
fn the_real_samples_are_filed_under_their_own_servers() {
    // The 2016 tracking sample sends to global-mail-onmicrosoft-com.mail.protection.outlook.com
    // and exchange.example.com: neither may become a partition. Each server is one partition,
    // under its short name; a file that names no server goes under this host's.
    let tmp = tempfile::tempdir().unwrap();
    let lake = tmp.path().join("lake");
    ingest_samples(&lake, &[]);
    let host = this_host();
    let servers = server_dirs(&lake);
    let want: std::collections::BTreeSet<String> = [
        "EX13D13UWA001",
        "EXCHANGE-MAIL",
        "NETBIOS",
        "SERVER-HOSTNAME",
        host.as_str(),
    ]
    .iter()
    .map(|s| format!("server={s}"))
    .collect();
    assert_eq!(servers, want);
}

#[test]
fn a_lake_holding_an_incompatible_schema_version_is_refused_by_name() {
    use arrow_array::{ArrayRef, Int64Array, RecordBatch, StringArray, TimestampMillisecondArray};
    use mailflow_sinks::lake::{LakeOptions, LakeWriter, Source};
    use std::sync::Arc;

    let tmp = tempfile::tempdir().unwrap();
    let lake = tmp.path().join("lake");
    // A message_tracking file as version 2 wrote it (its `custom_data` a map of strings).
    let old = RecordBatch::try_from_iter([
        (
            "timestamp",
            Arc::new(TimestampMillisecondArray::from(vec![1_736_812_800_000]).with_timezone("UTC"))
                as ArrayRef,
        ),
        ("server", Arc::new(StringArray::from(vec!["EX01"]))),
        ("source_offset", Arc::new(Int64Array::from(vec![0]))),
    ])
    .unwrap();
    let options = LakeOptions {
        schema_version: 2,
        ..LakeOptions::default()
    };
    let mut w = LakeWriter::new(&lake, options).unwrap();
    let source = Source {
        fingerprint: "old",
        file: "MSGTRK-old.LOG",
        end_offset: 10,
    };
    w.write(&source, &[("message_tracking", &old)]).unwrap();
    w.close().unwrap();

    let ingest = |extra: &str| {
        cli::run_mailflow(&[
            "ingest".as_ref(),
            data("samples").as_os_str(),
            "--parquet".as_ref(),
            lake.as_os_str(),
            "--quiet".as_ref(),
            extra.as_ref(),
        ])
    };
    let out = ingest("--threads=1");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("`message_tracking` files of schema version 2")
            && stderr.contains("--overwrite"),
        "{stderr}"
    );
    // Refused before writing: the old file is all the lake holds.
    assert_eq!(lake_files(&lake).0.len(), 1);
    let out = ingest("--overwrite");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(count(&lake).rows() > 0);
}

#[test]
fn generated_logs_look_like_a_fleet_to_an_analyst() {
    let tmp = tempfile::tempdir().unwrap();
    let logs = tmp.path().join("logs");
    let lake = tmp.path().join("lake");
    mailflow(&[
        "generate",
        "--bytes",
        "12M",
        "--servers",
        "3",
        "--days",
        "3",
        "--seed",
        "5",
        "--out",
        logs.to_str().unwrap(),
    ]);
    ingest_dir(&logs, &lake);
    let v: serde_json::Value =
        serde_json::from_str(&python_script("fleet_check.py", &[&lake])).unwrap();
    let n = |k: &str| v[k].as_f64().unwrap_or_else(|| panic!("{k} in {v}"));
    // The days and servers asked for, and no partition named after a remote host.
    assert!(n("days") >= 3.0, "{v}");
    assert_eq!(
        v["servers"],
        serde_json::json!(["EX01", "EX02", "EX03"]),
        "{v}"
    );
    // The kinds share messages and sessions: tracking names the session that carried a
    // message, and the sessions' messages are in tracking.
    assert!(n("receive_rows") > 100.0, "{v}");
    assert_eq!(n("receive_rows_joined"), n("receive_rows"), "{v}");
    assert_eq!(
        n("session_message_ids_tracked"),
        n("distinct_session_message_ids"),
        "{v}"
    );
    assert!(n("messages_across_servers") > 50.0, "{v}");
    // Senders and remote MTAs come back.
    assert!(n("inbound_senders") < n("inbound_rows") / 2.0, "{v}");
    assert!(n("remote_ips") < n("receive_sessions") / 4.0, "{v}");
    // A session keeps its ports and its EHLO name.
    assert_eq!(n("sessions_with_two_ports"), 0.0, "{v}");
    assert_eq!(n("sessions_with_two_ehlos"), 0.0, "{v}");
    // Outbound SEND rows name the remote host as Exchange writes them, filed under the sender.
    assert!(n("send_rows") > 100.0, "{v}");
    assert_eq!(n("send_rows_naming_this_server"), 0.0, "{v}");
    assert!(n("send_remote_hosts") > 20.0, "{v}");
    // Latency spreads from a fraction of a second to minutes.
    assert!(n("latency_p99_ms") > 10.0 * n("latency_p50_ms"), "{v}");
    // Connectivity lines belong to the send sessions they describe.
    assert!(n("connectivity_sessions") > 100.0, "{v}");
    assert_eq!(
        n("connectivity_sessions_in_send_logs"),
        n("connectivity_sessions"),
        "{v}"
    );
    assert!(n("diagnosed_sessions") > 0.0, "{v}");
}

/// `mailflow ingest DIR --parquet LAKE`, quietly.
fn ingest_dir(dir: &Path, lake: &Path) {
    mailflow(&[
        "ingest",
        dir.to_str().unwrap(),
        "--parquet",
        lake.to_str().unwrap(),
        "--quiet",
    ]);
}
