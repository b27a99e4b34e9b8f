//! How `ingest` finds and identifies its input, tried as a hostile user would: files that grow,
//! lines still being written, the same file named twice or copied, links, folders it cannot
//! read, two runs into one lake. Each test runs the real binary on real files.
#![allow(clippy::unwrap_used)]

mod cli;
mod common;

use std::io::Write as _;
use std::path::{Path, PathBuf};

use cli::{mailflow, run_mailflow};

/// A tracking log's header, created at `date` (Exchange's millisecond `#Date`).
fn header(date: &str) -> String {
    format!(
        "#Software: Microsoft Exchange Server\r\n#Version: 15.02.1258.012\r\n#Log-type: Message Tracking Log\r\n#Date: {date}\r\n#Fields: date-time,client-ip,client-hostname,server-ip,server-hostname,source-context,connector-id,source,event-id,internal-message-id,message-id,recipient-address,recipient-status,total-bytes,recipient-count,related-recipient-address,reference,message-subject,sender-address,return-path,message-info\r\n"
    )
}

/// Tracking row `i`, received by EX01.
fn row(i: u32) -> String {
    row_of("EX01", i)
}

/// Tracking row `i`, received by `server`.
fn row_of(server: &str, i: u32) -> String {
    format!(
        "2025-01-13T10:{:02}:{:02}.000Z,10.0.0.1,mx.fabrikam.com,10.0.0.2,{server},ctx,Conn,SMTP,RECEIVE,{i},<m{i}@contoso.com>,x@y,,10,1,,,s,a@b,a@b,\r\n",
        i / 60 % 60,
        i % 60
    )
}

fn write(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

fn append(path: &Path, text: &str) {
    let mut f = std::fs::OpenOptions::new().append(true).open(path).unwrap();
    f.write_all(text.as_bytes()).unwrap();
}

/// `mailflow ingest PATHS --parquet LAKE --quiet`, which must succeed; its stdout.
fn ingest(paths: &[&Path], lake: &Path) -> String {
    let mut args: Vec<&std::ffi::OsStr> = vec!["ingest".as_ref()];
    args.extend(paths.iter().map(|p| p.as_os_str()));
    args.extend(["--parquet".as_ref(), lake.as_os_str(), "--quiet".as_ref()]);
    String::from_utf8(mailflow(&args).stdout).unwrap()
}

/// Rows of a lake table, and how many distinct lineage keys (file, offset) they have.
fn rows(lake: &Path, table: &str) -> (usize, usize) {
    if !lake.join(table).exists() {
        return (0, 0);
    }
    let batches = common::read_lake_table(lake, table);
    let files = common::column_strings_all(&batches, "source_file");
    let offsets = common::column_strings_all(&batches, "source_offset");
    let keys: std::collections::BTreeSet<(String, String)> =
        files.into_iter().zip(offsets).collect();
    (batches.iter().map(|b| b.num_rows()).sum(), keys.len())
}

/// The `server=` partitions of the tracking table.
fn servers(lake: &Path) -> Vec<String> {
    let mut s: Vec<String> = walkdir::WalkDir::new(lake.join("message_tracking"))
        .into_iter()
        .filter_map(|e| {
            let name = e.ok()?.file_name().to_string_lossy().into_owned();
            Some(name.strip_prefix("server=")?.to_string())
        })
        .collect();
    s.sort();
    s.dedup();
    s
}

/// Commits `batches` of `table` to the lake as another run would have, under `source` =
/// (fingerprint, file, end offset).
fn commit_as(
    lake: &Path,
    (fingerprint, file, end_offset): (&str, &str, u64),
    table: &str,
    batches: &[arrow_array::RecordBatch],
) {
    use mailflow_sinks::lake::{LakeOptions, LakeWriter, Source};
    let mut w = LakeWriter::new(lake, LakeOptions::default()).unwrap();
    let source = Source {
        fingerprint,
        file,
        end_offset,
    };
    for b in batches {
        w.write(&source, &[(table, b)]).unwrap();
    }
    w.close().unwrap();
}

#[test]
fn a_small_file_that_grows_is_read_on_from_where_it_was() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp
        .path()
        .join("logs/EX01/MessageTracking/MSGTRK2025011310-1.LOG");
    let lake = tmp.path().join("lake");
    write(
        &file,
        &(header("2025-01-13T10:00:00.000Z") + &row(1) + &row(2)),
    );
    ingest(&[&tmp.path().join("logs")], &lake);
    assert_eq!(rows(&lake, "message_tracking"), (2, 2));
    // Still far under 4 KiB: its identity must not change as it grows.
    append(&file, &(row(3) + &row(4)));
    let out = ingest(&[&tmp.path().join("logs")], &lake);
    assert_eq!(rows(&lake, "message_tracking"), (4, 4), "{out}");
    // Read on from the checkpoint: the rows before it are not even read again.
    assert!(!out.contains("partly written"), "{out}");
    assert!(out.contains("1 files"), "{out}");
}

#[test]
fn a_half_written_last_line_waits_for_its_end() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp
        .path()
        .join("logs/EX01/MessageTracking/MSGTRK2025011310-1.LOG");
    let lake = tmp.path().join("lake");
    let third = row(3);
    let (begun, rest) = third.split_at(40);
    write(
        &file,
        &(header("2025-01-13T10:00:00.000Z") + &row(1) + &row(2) + begun),
    );
    let out = ingest(&[&tmp.path().join("logs")], &lake);
    assert!(out.contains("1 partial last lines"), "{out}");
    assert_eq!(rows(&lake, "message_tracking"), (2, 2));
    assert_eq!(
        rows(&lake, "rejects"),
        (0, 0),
        "a line being written is no reject"
    );
    // Exchange finishes the line: the next run reads it, whole.
    append(&file, rest);
    ingest(&[&tmp.path().join("logs")], &lake);
    assert_eq!(rows(&lake, "message_tracking"), (3, 3));
    assert_eq!(rows(&lake, "rejects"), (0, 0));
    let ids = common::column_strings_all(
        &common::read_lake_table(&lake, "message_tracking"),
        "message_id",
    );
    assert!(ids.contains(&"<m3@contoso.com>".to_string()), "{ids:?}");
}

#[test]
fn a_last_line_without_its_end_is_read_once_nobody_writes_the_file() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp
        .path()
        .join("logs/EX01/MessageTracking/MSGTRK2025011310-1.LOG");
    let lake = tmp.path().join("lake");
    let third = row(3);
    write(
        &file,
        &(header("2025-01-13T10:00:00.000Z") + &row(1) + &row(2) + third.trim_end()),
    );
    // Last written an hour ago: the line will not be finished.
    let hour_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(3600);
    std::fs::File::options()
        .write(true)
        .open(&file)
        .unwrap()
        .set_modified(hour_ago)
        .unwrap();
    let out = ingest(&[&tmp.path().join("logs")], &lake);
    assert!(!out.contains("partial last lines"), "{out}");
    assert_eq!(rows(&lake, "message_tracking"), (3, 3), "{out}");
    // Everything of it is in the lake: the next run passes it over whole.
    let again = ingest(&[&tmp.path().join("logs")], &lake);
    assert!(again.contains("1 files whole"), "{again}");
    assert_eq!(rows(&lake, "message_tracking"), (3, 3), "{again}");
    // Were Exchange to write to it again after all, what it adds is read on from there.
    append(&file, &("\r\n".to_string() + &row(4)));
    let more = ingest(&[&tmp.path().join("logs")], &lake);
    assert_eq!(rows(&lake, "message_tracking"), (4, 4), "{more}");
}

#[test]
fn a_header_still_being_written_is_left_for_the_next_run() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp
        .path()
        .join("logs/EX01/MessageTracking/MSGTRK2025011310-1.LOG");
    let lake = tmp.path().join("lake");
    let h = header("2025-01-13T10:00:00.000Z");
    write(&file, &h[..h.len() - 30]);
    let out = ingest(&[&tmp.path().join("logs")], &lake);
    assert!(
        out.contains("1 new files with no complete line yet"),
        "{out}"
    );
    append(&file, &(h[h.len() - 30..].to_string() + &row(1)));
    ingest(&[&tmp.path().join("logs")], &lake);
    assert_eq!(rows(&lake, "message_tracking"), (1, 1));
}

#[test]
fn overlapping_paths_and_links_read_each_file_once() {
    let tmp = tempfile::tempdir().unwrap();
    let corp = tmp.path().join("corp");
    let lake = tmp.path().join("lake");
    for (server, date) in [
        ("EX01", "2025-01-13T10:00:00.000Z"),
        ("EX02", "2025-01-13T10:00:00.001Z"),
    ] {
        write(
            &corp
                .join(server)
                .join("MessageTracking/MSGTRK2025011310-1.LOG"),
            &(header(date) + &row_of(server, 1) + &row_of(server, 2)),
        );
    }
    // A folder linked into the input, and a link to a file already in it.
    let elsewhere = tmp
        .path()
        .join("elsewhere/EX03/MessageTracking/MSGTRK2025011310-1.LOG");
    write(
        &elsewhere,
        &(header("2025-01-13T10:00:00.002Z") + &row_of("EX03", 7)),
    );
    #[cfg(unix)]
    {
        std::os::unix::fs::symlink(tmp.path().join("elsewhere/EX03"), corp.join("EX03")).unwrap();
        std::os::unix::fs::symlink(
            corp.join("EX01/MessageTracking/MSGTRK2025011310-1.LOG"),
            corp.join("EX01/again.LOG"),
        )
        .unwrap();
    }
    ingest(&[&corp, &corp.join("EX01"), &corp.join("EX01")], &lake);
    assert_eq!(rows(&lake, "message_tracking"), (5, 5));
    assert_eq!(servers(&lake), ["EX01", "EX02", "EX03"]);
}

#[test]
fn identical_files_of_two_servers_are_both_stored_in_one_run_or_two() {
    // Rows that name no server (a SEND's server is the remote host): the folder says which.
    let text = header("2025-01-13T10:00:00.000Z") + &row_of("", 1) + &row_of("", 2);
    let tmp = tempfile::tempdir().unwrap();
    let folder = |server: &str| -> PathBuf {
        let f = tmp.path().join(format!("logs/{server}/MessageTracking"));
        write(&f.join("MSGTRK2025011310-1.LOG"), &text);
        f
    };
    let (ex01, ex02) = (folder("EX01"), folder("EX02"));
    let one = tmp.path().join("one");
    ingest(&[&tmp.path().join("logs")], &one);
    let two = tmp.path().join("two");
    ingest(&[&ex01], &two);
    ingest(&[&ex02], &two);
    for lake in [&one, &two] {
        assert_eq!(rows(lake, "message_tracking"), (4, 4));
        assert_eq!(servers(lake), ["EX01", "EX02"]);
    }
    // A copy of a file filed under the same server (the logs collected twice) is the same file:
    // read once, and said so.
    let copy = tmp
        .path()
        .join("logs/collected-again/EX01/MessageTracking/MSGTRK2025011310-1.LOG");
    write(&copy, &text);
    let three = tmp.path().join("three");
    let out = ingest(&[&tmp.path().join("logs")], &three);
    assert_eq!(rows(&three, "message_tracking"), (4, 4), "{out}");
    assert!(out.contains("1 skipped"), "{out}");
}

#[test]
fn a_folder_that_cannot_be_read_fails_alone() {
    let tmp = tempfile::tempdir().unwrap();
    let logs = tmp.path().join("logs");
    let lake = tmp.path().join("lake");
    write(
        &logs.join("EX01/MessageTracking/MSGTRK2025011310-1.LOG"),
        &(header("2025-01-13T10:00:00.000Z") + &row(1)),
    );
    // A link to nowhere (as a share that went away looks): reported, and the rest is read.
    #[cfg(unix)]
    std::os::unix::fs::symlink(tmp.path().join("gone"), logs.join("EX02")).unwrap();
    let out = run_mailflow(&[
        "ingest".as_ref(),
        logs.as_os_str(),
        "--parquet".as_ref(),
        lake.as_os_str(),
        "--quiet".as_ref(),
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    #[cfg(unix)]
    {
        assert!(
            !out.status.success(),
            "a failure must show in the exit code"
        );
        assert!(
            stdout.contains("1 FAILED") && stdout.contains("EX02"),
            "{stdout}"
        );
    }
    assert_eq!(rows(&lake, "message_tracking"), (1, 1), "{stdout}");
}

#[test]
fn a_second_run_into_a_lake_in_use_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let logs = tmp.path().join("logs");
    let lake = tmp.path().join("lake");
    write(
        &logs.join("EX01/MessageTracking/MSGTRK2025011310-1.LOG"),
        &(header("2025-01-13T10:00:00.000Z") + &row(1)),
    );
    {
        // Another run holds the lake.
        let _held = mailflow_sinks::lake::LakeLock::acquire(&lake).unwrap();
        let out = run_mailflow(&[
            "ingest".as_ref(),
            logs.as_os_str(),
            "--parquet".as_ref(),
            lake.as_os_str(),
        ]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success());
        assert!(
            stderr.contains("another ingest into it is running"),
            "{stderr}"
        );
        assert_eq!(rows(&lake, "message_tracking"), (0, 0));
    }
    // Two at once, for real: whichever order they run in, every row is stored once.
    let spawn = || {
        cli::mailflow_command()
            .args(["ingest".as_ref(), logs.as_os_str(), "--parquet".as_ref()])
            .arg(&lake)
            .arg("--quiet")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap()
    };
    let (mut a, mut b) = (spawn(), spawn());
    let (a, b) = (a.wait().unwrap(), b.wait().unwrap());
    assert!(a.success() || b.success());
    assert_eq!(rows(&lake, "message_tracking"), (1, 1));
}

#[test]
fn an_absurd_thread_count_is_refused_by_name() {
    let out = run_mailflow(&["ingest", "x", "--parquet", "y", "--threads", "100000"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("--threads") && stderr.contains("1 to 1024"),
        "{stderr}"
    );
}

#[test]
fn a_lake_written_under_the_former_file_identity_is_resumed_not_doubled() {
    use arrow_array::{ArrayRef, Int64Array, RecordBatch, StringArray, TimestampMillisecondArray};
    use std::sync::Arc;

    let tmp = tempfile::tempdir().unwrap();
    let file = tmp
        .path()
        .join("logs/EX01/MessageTracking/MSGTRK2025011310-1.LOG");
    let lake = tmp.path().join("lake");
    let first_two = header("2025-01-13T10:00:00.000Z") + &row(1) + &row(2);
    let text = first_two.clone() + &row(3);
    write(&file, &text);
    // An earlier version committed the first two rows under the identity it gave the file: a
    // hash of its first 4 KiB (all of it, here) and that length.
    let legacy = format!(
        "xxh3:{:016x}:{}",
        xxhash_rust::xxh3::xxh3_64(text.as_bytes()),
        text.len()
    );
    let batch = RecordBatch::try_from_iter([
        (
            "timestamp",
            Arc::new(
                TimestampMillisecondArray::from(vec![1_736_762_401_000, 1_736_762_402_000])
                    .with_timezone("UTC"),
            ) as ArrayRef,
        ),
        ("server", Arc::new(StringArray::from(vec!["EX01", "EX01"]))),
        (
            "source_offset",
            Arc::new(Int64Array::from(vec![
                (header("x").len() + 24) as i64,
                (first_two.len() - row(2).len()) as i64,
            ])),
        ),
    ])
    .unwrap();
    commit_as(
        &lake,
        (&legacy, &file.to_string_lossy(), first_two.len() as u64),
        "legacy_rows",
        &[batch],
    );
    // Only the third row is new.
    let out = ingest(&[&tmp.path().join("logs")], &lake);
    assert_eq!(rows(&lake, "message_tracking"), (1, 1), "{out}");
    assert!(out.contains("2 lines of partly written files"), "{out}");
}

#[test]
fn a_session_another_worker_committed_is_not_stored_again_when_its_lines_are_read_again() {
    use arrow_array::{ArrayRef, RecordBatch, StringArray};
    use std::sync::Arc;

    let tmp = tempfile::tempdir().unwrap();
    let logs = tmp.path().join("logs");
    let file = logs.join("EX01/SmtpReceive/RECV2023011116-1.LOG");
    std::fs::create_dir_all(file.parent().unwrap()).unwrap();
    std::fs::copy(
        cli::data("samples").join("smtp-receive.artefacts-help.log"),
        &file,
    )
    .unwrap();
    // What one whole run makes of the file.
    let whole = tmp.path().join("whole");
    ingest(&[&logs], &whole);
    let sessions = common::read_lake_table(&whole, "smtp_sessions");
    let n = rows(&whole, "smtp_sessions").0;
    assert!(n > 0);
    // A killed run's lake: a writer committed the sessions (filed with the source it was
    // reading then), and the one holding the file's own lines did not. They go to the server
    // partition the whole run filed them under (the server the file's rows name).
    let lake = tmp.path().join("lake");
    let server = walkdir::WalkDir::new(whole.join("smtp_sessions"))
        .into_iter()
        .filter_map(|e| {
            let name = e.ok()?.file_name().to_string_lossy().into_owned();
            Some(name.strip_prefix("server=")?.to_string())
        })
        .next()
        .unwrap();
    let with_server: Vec<RecordBatch> = sessions
        .iter()
        .map(|b| {
            let server: ArrayRef = Arc::new(StringArray::from(vec![server.as_str(); b.num_rows()]));
            let mut columns = b.columns().to_vec();
            let mut fields: Vec<_> = b.schema().fields().iter().cloned().collect();
            columns.push(server);
            fields.push(Arc::new(arrow_schema::Field::new(
                "server",
                arrow_schema::DataType::Utf8,
                false,
            )));
            RecordBatch::try_new(Arc::new(arrow_schema::Schema::new(fields)), columns).unwrap()
        })
        .collect();
    commit_as(
        &lake,
        ("another-file", "another-file", 0),
        "smtp_sessions",
        &with_server,
    );
    // The rerun reads the file's lines again and makes the same sessions: stored once.
    ingest(&[&logs], &lake);
    assert_eq!(rows(&lake, "smtp_sessions"), (n, n));
    assert_eq!(
        rows(&lake, "smtp_protocol").0,
        rows(&whole, "smtp_protocol").0
    );
}

#[test]
fn a_log_ingested_while_it_is_written_ends_up_whole_and_once() {
    use rand::{Rng, SeedableRng};
    // A real-shaped log, written in appends of random sizes that cut lines anywhere, with an
    // ingest after each append (as a scheduled job would run while Exchange writes).
    let text = String::from_utf8(
        mailflow::generate::fleet_log(mailflow::generate::LogFile::MessageTracking, 300_000, 9)
            .unwrap(),
    )
    .unwrap();
    let lines = text
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#') && !l.starts_with('\u{feff}'))
        .count();
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp
        .path()
        .join("logs/EX01/MessageTracking/MSGTRK2024012500-1.LOG");
    let lake = tmp.path().join("lake");
    write(&file, "");
    let mut rng = rand::rngs::StdRng::seed_from_u64(5);
    let bytes = text.as_bytes();
    let mut at = 0;
    let mut runs = 0;
    while at < bytes.len() {
        let mut next = (at + rng.random_range(1..40_000)).min(bytes.len());
        while !text.is_char_boundary(next) {
            next += 1;
        }
        append(&file, &text[at..next]);
        at = next;
        ingest(&[&tmp.path().join("logs")], &lake);
        runs += 1;
    }
    assert!(runs > 10, "{runs} appends");
    assert_eq!(rows(&lake, "message_tracking"), (lines, lines));
    assert_eq!(
        rows(&lake, "rejects"),
        (0, 0),
        "a line cut by an append is no reject"
    );
}

#[test]
fn a_file_that_shrank_is_reported_not_passed_over() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp
        .path()
        .join("logs/EX01/MessageTracking/MSGTRK2025011310-1.LOG");
    let lake = tmp.path().join("lake");
    let text = header("2025-01-13T10:00:00.000Z") + &row(1) + &row(2) + &row(3);
    write(&file, &text);
    ingest(&[&tmp.path().join("logs")], &lake);
    // Cut back to its first row, under the same header and first line.
    write(&file, &(header("2025-01-13T10:00:00.000Z") + &row(1)));
    let out = ingest(&[&tmp.path().join("logs")], &lake);
    assert!(
        out.contains("skipped: ") && out.contains("truncated or replaced"),
        "{out}"
    );
    assert_eq!(rows(&lake, "message_tracking"), (3, 3));
    // Replaced by a new file of the same name (a new header): read as the new file it is. Its
    // rows name the same path at the same offsets as the old file's (the lineage key is the
    // file's name, not its identity), so they count as two more rows, not two more keys.
    write(
        &file,
        &(header("2025-01-14T00:00:00.000Z") + &row(7) + &row(8)),
    );
    ingest(&[&tmp.path().join("logs")], &lake);
    assert_eq!(rows(&lake, "message_tracking").0, 5);
}

#[test]
fn a_thousand_files_in_one_folder() {
    let tmp = tempfile::tempdir().unwrap();
    let folder = tmp.path().join("logs/EX01/MessageTracking");
    for i in 0..1000u32 {
        let date = format!("2025-01-13T10:00:00.{:03}Z", i % 1000);
        let name = format!("MSGTRK2025011310-{}.LOG", i + 1);
        write(
            &folder.join(name),
            &(header(&date) + &row(i * 2) + &row(i * 2 + 1)),
        );
    }
    let out = ingest(&[&tmp.path().join("logs")], &tmp.path().join("lake"));
    assert!(out.starts_with("1000 files"), "{out}");
    assert_eq!(
        rows(&tmp.path().join("lake"), "message_tracking"),
        (2000, 2000)
    );
    // Again: nothing new, nothing read twice.
    let again = ingest(&[&tmp.path().join("logs")], &tmp.path().join("lake"));
    assert!(again.contains("1000 files whole"), "{again}");
    assert_eq!(
        rows(&tmp.path().join("lake"), "message_tracking"),
        (2000, 2000)
    );
}
