use std::sync::Arc;
use std::time::Duration;

use arrow_array::cast::AsArray;
use arrow_array::types::Int64Type;
use arrow_array::{ArrayRef, DictionaryArray, Int64Array, RecordBatch, TimestampMillisecondArray};
use arrow_schema::{DataType, Field, Schema, TimeUnit};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use super::compact::{CompactOptions, compact};
use super::*;

const DAY: i64 = 86_400_000;
const JAN14: i64 = 1_736_812_800_000; // 2025-01-14T00:00:00Z

fn batch(rows: &[(i64, &str, i64)]) -> RecordBatch {
    let schema = Arc::new(Schema::new(vec![
        Field::new(
            "timestamp",
            DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())),
            false,
        ),
        Field::new(
            "server",
            DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8)),
            false,
        ),
        Field::new("source_offset", DataType::Int64, false),
    ]));
    let server: DictionaryArray<arrow_array::types::Int32Type> = rows.iter().map(|r| r.1).collect();
    let cols: Vec<ArrayRef> = vec![
        Arc::new(
            TimestampMillisecondArray::from_iter_values(rows.iter().map(|r| r.0))
                .with_timezone("UTC"),
        ),
        Arc::new(server),
        Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.2))),
    ];
    RecordBatch::try_new(schema, cols).unwrap()
}

/// 80,000 rows of one partition from `first`: over the 1 MiB at which a partition streams, even
/// without the server column the lake drops.
fn big_batch(first: i64) -> RecordBatch {
    let rows: Vec<(i64, &str, i64)> = (0..80_000).map(|k| (JAN14, "EX01", first + k)).collect();
    let b = batch(&rows);
    assert!(b.get_array_memory_size() - b.column(1).get_array_memory_size() >= STREAM_BYTES);
    b
}

fn offsets_in(path: &Path) -> Vec<i64> {
    let reader = ParquetRecordBatchReaderBuilder::try_new(fs::File::open(path).unwrap())
        .unwrap()
        .build()
        .unwrap();
    reader
        .flat_map(|b| {
            let b = b.unwrap();
            b.column_by_name("source_offset")
                .unwrap()
                .as_primitive::<Int64Type>()
                .values()
                .to_vec()
        })
        .collect()
}

fn relative(root: &Path, files: &[PathBuf]) -> Vec<String> {
    files
        .iter()
        .map(|p| {
            let rel = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
            // Drop the writer id, which is random.
            let (dir, _) = rel.rsplit_once('/').unwrap();
            dir.to_string()
        })
        .collect()
}

fn source(end: u64) -> Source<'static> {
    Source {
        fingerprint: "fp1",
        file: "MSGTRK2025011400-1.LOG",
        end_offset: end,
    }
}

#[test]
fn rows_land_in_their_partition_with_provenance() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let mut w = LakeWriter::new(root, LakeOptions::default()).unwrap();
    let b = batch(&[
        (JAN14 + 10, "EX01", 100),
        (JAN14 + DAY + 1, "EX01", 200),
        (JAN14 + 20, "../../etc", 300),
    ]);
    w.write(&source(400), &[("message_tracking", &b)]).unwrap();
    // Nothing is visible before the commit.
    assert!(committed_files(root).unwrap().is_empty());
    let committed = w.close().unwrap();
    assert_eq!(committed.len(), 3);
    let files = committed_files(root).unwrap();
    assert_eq!(
        relative(root, &files),
        vec![
            "message_tracking/date=2025-01-14/server=..%2F..%2Fetc",
            "message_tracking/date=2025-01-14/server=EX01",
            "message_tracking/date=2025-01-15/server=EX01",
        ]
    );
    assert_eq!(offsets_in(&files[1]), vec![100]);
    let meta = footer_metadata(&files[1]).unwrap();
    assert_eq!(meta[META_TABLE], "message_tracking");
    assert_eq!(meta[META_SCHEMA_VERSION], "1");
    let ranges = file_sources(&files[2]).unwrap();
    assert_eq!(
        ranges,
        vec![SourceRange {
            fingerprint: "fp1".into(),
            file: "MSGTRK2025011400-1.LOG".into(),
            first_offset: 200,
            last_offset: 200,
            end_offset: 400,
            rows: 1,
        }]
    );
    let progress = committed_sources(root).unwrap();
    assert_eq!(progress["fp1"].end_offset, 400);
    assert_eq!(progress["fp1"].rows, 3);
    // Nothing but committed files and the lake's own folder is left.
    let leftovers: Vec<_> = walkdir::WalkDir::new(root)
        .into_iter()
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_file())
        .filter(|e| !e.path().to_string_lossy().contains("part-"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn rolls_by_rows_commit_whole_epochs() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let options = LakeOptions {
        max_file_rows: 4,
        ..LakeOptions::default()
    };
    let mut w = LakeWriter::new(root, options).unwrap();
    for k in 0..5 {
        let b = batch(&[(JAN14, "EX01", k * 10), (JAN14, "EX01", k * 10 + 5)]);
        w.write(&source(k as u64 * 10 + 10), &[("t", &b)]).unwrap();
        let committed = committed_sources(root).unwrap();
        // After writes 2 and 4 an epoch of 4 rows is committed; in between nothing changes.
        let expect = match k {
            0 => None,
            1 | 2 => Some(20),
            _ => Some(40),
        };
        assert_eq!(
            committed.get("fp1").map(|p| p.end_offset),
            expect,
            "after write {k}"
        );
    }
    w.close().unwrap();
    assert_eq!(committed_sources(root).unwrap()["fp1"].end_offset, 50);
    assert_eq!(committed_files(root).unwrap().len(), 3);
}

#[test]
fn abort_leaves_nothing_and_a_crash_is_recovered() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let mut w = LakeWriter::new(root, LakeOptions::default()).unwrap();
    w.write(&source(10), &[("t", &batch(&[(JAN14, "EX01", 0)]))])
        .unwrap();
    w.abort();
    assert!(committed_files(root).unwrap().is_empty());

    let mut w = LakeWriter::new(root, LakeOptions::default()).unwrap();
    // Big enough to be streaming to a temporary (a small partition is only held in memory).
    w.write(&source(10), &[("t", &big_batch(0))]).unwrap();
    let id = w.id().to_string();
    // As if the process died: the file stays a temporary, the lock is released by the OS.
    std::mem::forget(w.open.drain().collect::<Vec<_>>());
    drop(w.lock.take());
    let report = recover(root).unwrap();
    assert_eq!(report.temporaries_removed, 1, "writer {id}");
    assert!(committed_files(root).unwrap().is_empty());
}

#[test]
fn memory_budget_flushes_row_groups_early() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let options = LakeOptions {
        memory_budget: 1,
        ..LakeOptions::default()
    };
    let mut w = LakeWriter::new(root, options).unwrap();
    for k in 0..3 {
        w.write(&source(k + 1), &[("t", &big_batch(k as i64 * 100_000))])
            .unwrap();
    }
    w.close().unwrap();
    let files = committed_files(root).unwrap();
    assert_eq!(files.len(), 1);
    let reader = SerializedFileReader::new(fs::File::open(&files[0]).unwrap()).unwrap();
    assert_eq!(reader.metadata().num_row_groups(), 3);
}

#[test]
fn compaction_merges_small_files_and_keeps_provenance() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    for k in 0..4i64 {
        let mut w = LakeWriter::new(root, LakeOptions::default()).unwrap();
        let s = Source {
            fingerprint: if k < 2 { "fpA" } else { "fpB" },
            file: "f",
            end_offset: (k as u64 + 1) * 100,
        };
        w.write(
            &s,
            &[(
                "t",
                &batch(&[(JAN14, "EX01", k * 100), (JAN14, "EX02", k * 100 + 1)]),
            )],
        )
        .unwrap();
        w.close().unwrap();
    }
    let before = committed_sources(root).unwrap();
    assert_eq!(committed_files(root).unwrap().len(), 8);
    let options = CompactOptions {
        older_than: Duration::ZERO,
        ..CompactOptions::default()
    };
    let report = compact(root, &options).unwrap();
    assert_eq!(
        (report.partitions, report.files_in, report.files_out),
        (2, 8, 2)
    );
    assert_eq!(report.rows, 8);
    let files = committed_files(root).unwrap();
    assert_eq!(files.len(), 2);
    assert_eq!(offsets_in(&files[0]), vec![0, 100, 200, 300]);
    assert_eq!(committed_sources(root).unwrap(), before);
    let ranges = file_sources(&files[1]).unwrap();
    assert_eq!(ranges.len(), 2);
    assert_eq!(
        (
            ranges[0].first_offset,
            ranges[0].last_offset,
            ranges[0].rows
        ),
        (1, 101, 2)
    );
    // Nothing left to do the second time.
    let again = compact(root, &options).unwrap();
    assert_eq!(again.files_out, 0);
}

/// The rows' `source_file` values survive compaction in the merged file's footer: a rerun looks
/// them up to find derived rows (sessions, messages) it must not write again.
#[test]
fn compaction_keeps_the_source_files_of_rows() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let schema = Arc::new(Schema::new(vec![
        Field::new(
            "timestamp",
            DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())),
            false,
        ),
        Field::new(
            "server",
            DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8)),
            false,
        ),
        Field::new(
            "source_file",
            DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8)),
            false,
        ),
        Field::new("source_offset", DataType::Int64, false),
    ]));
    for (k, name) in ["a.log", "b.log"].into_iter().enumerate() {
        let server: DictionaryArray<arrow_array::types::Int32Type> =
            std::iter::once("EX01").collect();
        let file: DictionaryArray<arrow_array::types::Int32Type> = std::iter::once(name).collect();
        let cols: Vec<ArrayRef> = vec![
            Arc::new(TimestampMillisecondArray::from_iter_values([JAN14]).with_timezone("UTC")),
            Arc::new(server),
            Arc::new(file),
            Arc::new(Int64Array::from_iter_values([k as i64])),
        ];
        let b = RecordBatch::try_new(Arc::clone(&schema), cols).unwrap();
        let mut w = LakeWriter::new(root, LakeOptions::default()).unwrap();
        let s = Source {
            fingerprint: name,
            file: name,
            end_offset: 10,
        };
        w.write(&s, &[("t", &b)]).unwrap();
        w.close().unwrap();
    }
    let named = |root: &Path| {
        let mut v: Vec<(String, usize)> = holdings(root)
            .unwrap()
            .row_files
            .into_iter()
            .map(|(f, at)| (f, at.len()))
            .collect();
        v.sort();
        v
    };
    let before = named(root);
    assert_eq!(before, [("a.log".into(), 1), ("b.log".into(), 1)]);
    let options = CompactOptions {
        older_than: Duration::ZERO,
        ..CompactOptions::default()
    };
    assert_eq!(compact(root, &options).unwrap().files_out, 1);
    assert_eq!(named(root), before);
}

#[test]
fn open_files_stay_bounded_at_any_partition_count() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let options = LakeOptions {
        max_open_files: 4,
        // Small enough that buffered partitions are sealed as the batch goes.
        memory_budget: 64 << 10,
        ..LakeOptions::default()
    };
    let mut w = LakeWriter::new(root, options).unwrap();
    // Two sources, each spreading one batch over 300 days (a hostile log), written in turns.
    for (k, fp) in ["fpA", "fpB"].into_iter().enumerate() {
        let rows: Vec<(i64, &str, i64)> = (0..300)
            .map(|d| (JAN14 + d * DAY, "EX01", k as i64 * 1000 + d))
            .collect();
        let s = Source {
            fingerprint: fp,
            file: fp,
            end_offset: 500,
        };
        w.write(&s, &[("t", &batch(&rows))]).unwrap();
        assert!(
            w.writing_lru.len() <= 4,
            "{} writers open",
            w.writing_lru.len()
        );
        assert!(w.buffered_bytes <= w.options.memory_budget / 2);
    }
    w.close().unwrap();
    let files = committed_files(root).unwrap();
    // Each day got its own folder; no row was lost or doubled.
    let mut all: Vec<i64> = files.iter().flat_map(|f| offsets_in(f)).collect();
    all.sort();
    let want: Vec<i64> = (0..300).chain(1000..1300).collect();
    assert_eq!(all, want);
    let days: BTreeSet<_> = files
        .iter()
        .map(|f| f.parent().unwrap().parent().unwrap().to_path_buf())
        .collect();
    assert_eq!(days.len(), 300);
    // Both sources' marks survive, though most of their files were closed before the marks
    // were known: a restart skips all of both.
    let sources = committed_sources(root).unwrap();
    assert_eq!(sources["fpA"].end_offset, 500);
    assert_eq!(sources["fpB"].end_offset, 500);
    assert_eq!(sources["fpA"].rows + sources["fpB"].rows, 600);
    // Nothing hidden left behind.
    let hidden = walkdir::WalkDir::new(root)
        .into_iter()
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
        .count();
    assert_eq!(hidden, 0);
}

#[test]
fn the_partition_being_written_is_never_sealed_before_its_mark_is_known() {
    // A budget smaller than one small partition: sealing the partition being appended to would
    // write its footer before the write's end offset is recorded, and a restart would read
    // those rows again.
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let options = LakeOptions {
        memory_budget: 1024,
        ..LakeOptions::default()
    };
    let mut w = LakeWriter::new(root, options).unwrap();
    let rows: Vec<(i64, &str, i64)> = (0..100).map(|k| (JAN14, "EX01", k)).collect();
    w.write(&source(100), &[("t", &batch(&rows))]).unwrap();
    w.close().unwrap();
    assert_eq!(committed_sources(root).unwrap()["fp1"].end_offset, 100);
}
