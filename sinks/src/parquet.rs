//! One Parquet file, written so that a reader never sees it half-done.
//!
//! The file is written under a hidden temporary name the caller picks (DuckDB and Spark ignore
//! `.` and `_` names), then closed, fsynced, renamed to its final name and the directory fsynced:
//! after [`ParquetFile::commit`] returns, the file is complete and durable; before, it does not
//! exist under its final name. A crash leaves only the temporary; the lake's recovery, which owns
//! the naming of temporaries, removes it.

use std::fs::{self, File};
use std::io::BufWriter;
use std::path::{Path, PathBuf};

use arrow_array::RecordBatch;
use arrow_schema::{DataType, SchemaRef};
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::metadata::KeyValue;
use parquet::file::properties::{EnabledStatistics, WriterProperties, WriterVersion};
use parquet::schema::types::ColumnPath;

/// Bytes buffered between the Parquet writer and its file (see `ParquetFile::create`).
const WRITE_BUFFER: usize = 256 << 10;

/// Field metadata key a producer sets to `"false"` on columns not worth dictionary-encoding
/// (the same key as `mailflow_parser::schema::DICTIONARY_HINT`; sinks do not depend on the parser).
pub const DICTIONARY_HINT: &str = "mailflow.dictionary";

/// Errors writing a Parquet file.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// File system error, with the path it concerns.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// What went wrong.
        source: std::io::Error,
    },
    /// Parquet encoding error.
    #[error("{path}: writing Parquet failed: {source}")]
    Parquet {
        /// The file being written.
        path: PathBuf,
        /// What went wrong.
        source: parquet::errors::ParquetError,
    },
    /// A setting is out of range.
    #[error("invalid Parquet option {key}: {reason}")]
    Option {
        /// The option.
        key: &'static str,
        /// Why.
        reason: String,
    },
}

/// How files are encoded.
#[derive(Debug, Clone)]
pub struct ParquetOptions {
    /// zstd level, 1 (fast) to 22 (small).
    pub zstd_level: i32,
    /// Rows per row group at most.
    pub row_group_rows: usize,
    /// A row group is closed once its buffered, encoded size passes this many bytes.
    pub row_group_bytes: usize,
    /// zstd when true; uncompressed when false (a file of a few rows: a zstd context per column
    /// costs more than the bytes it would save).
    pub compress: bool,
}

/// The zstd level `ingest` writes with. On transport logs level 1 is the better trade on both
/// counts, measured on the 1 GiB generated tracking bench (`benches/ingest_vs_duckdb.py`):
/// the whole ingest took 17% less time than at zstd's own default of 3, and the
/// `message_tracking` files came out 7% smaller (133 MB against 144 MB), because Parquet pages
/// (1 MiB at most, mostly dictionary indexes and short repeated strings) give level 3's larger
/// match search little to find.
pub const DEFAULT_ZSTD_LEVEL: i32 = 1;

impl Default for ParquetOptions {
    fn default() -> Self {
        ParquetOptions {
            zstd_level: DEFAULT_ZSTD_LEVEL,
            row_group_rows: 1 << 20,
            row_group_bytes: 128 << 20,
            compress: true,
        }
    }
}

impl ParquetOptions {
    fn properties(&self, schema: &arrow_schema::Schema) -> Result<WriterProperties, Error> {
        let level = ZstdLevel::try_new(self.zstd_level).map_err(|e| Error::Option {
            key: "zstd_level",
            reason: e.to_string(),
        })?;
        let mut builder = WriterProperties::builder();
        // Columns the producer marks as all-distinct (`mailflow.dictionary = false`) skip the
        // dictionary attempt: Parquet would fill a 1 MiB dictionary per column chunk and then
        // fall back to plain anyway, costing CPU and memory for nothing. Such a column of text
        // (message ids, GUIDs, free text) also goes without min/max: its values are in no
        // order, so a row group's bounds span nearly everything and prune nothing, while
        // keeping them compares every value twice (all text columns' bounds were 3.5% of
        // `ingest`'s CPU in a call-graph `perf` profile of one server's mixed logs). Distinct
        // numbers (times, offsets) keep theirs: they rise with the file, and readers prune row
        // groups by them.
        for field in schema.fields() {
            if field
                .metadata()
                .get(DICTIONARY_HINT)
                .is_some_and(|v| v == "false")
            {
                let path = ColumnPath::from(field.name().as_str());
                builder = builder.set_column_dictionary_enabled(path.clone(), false);
                if matches!(
                    field.data_type(),
                    DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View
                ) {
                    builder = builder.set_column_statistics_enabled(path, EnabledStatistics::None);
                }
            }
        }
        Ok(builder
            .set_writer_version(WriterVersion::PARQUET_1_0)
            .set_compression(if self.compress {
                Compression::ZSTD(level)
            } else {
                Compression::UNCOMPRESSED
            })
            .set_dictionary_enabled(true)
            .set_statistics_enabled(EnabledStatistics::Chunk)
            .set_max_row_group_row_count(Some(self.row_group_rows.max(1)))
            .set_max_row_group_bytes(Some(self.row_group_bytes.max(1)))
            .set_created_by(format!("mailflow {}", env!("CARGO_PKG_VERSION")))
            .build())
    }
}

/// A Parquet file being written; see the module docs.
#[derive(Debug)]
pub struct ParquetFile {
    final_path: PathBuf,
    temp_path: PathBuf,
    writer: ArrowWriter<BufWriter<File>>,
    rows: u64,
}

/// What a committed file holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Committed {
    /// Final path.
    pub path: PathBuf,
    /// Rows written.
    pub rows: u64,
    /// File size in bytes.
    pub bytes: u64,
}

/// A file closed and synced under its temporary name, not yet renamed into place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finished {
    /// Where the file is now.
    pub temp_path: PathBuf,
    /// What it will be once published.
    pub committed: Committed,
}

impl Finished {
    /// Renames the file to its final name and syncs the directory: durable when this returns.
    pub fn publish(self) -> Result<Committed, Error> {
        publish(&self.temp_path, &self.committed.path)?;
        Ok(self.committed)
    }
}

/// Renames `from` to `to` and fsyncs `to`'s directory, so the new name survives a power cut.
pub fn publish(from: &Path, to: &Path) -> Result<(), Error> {
    fs::rename(from, to).map_err(io_error(to))?;
    match to.parent() {
        Some(dir) => crate::durable::sync_dir(dir),
        None => Ok(()),
    }
}

pub(crate) fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> Error + use<> {
    let path = path.to_path_buf();
    move |source| Error::Io { path, source }
}

impl ParquetFile {
    /// Starts a file that will appear at `final_path` on commit, written meanwhile as
    /// `temp_path` (in the same folder, hidden from readers: a `.` or `_` prefix). Parent folders
    /// are created.
    pub fn create(
        final_path: PathBuf,
        temp_path: PathBuf,
        schema: SchemaRef,
        options: &ParquetOptions,
    ) -> Result<Self, Error> {
        // Options and schema are checked before anything is created: a bad option must not
        // leave a temporary file behind.
        let properties = options.properties(&schema)?;
        parquet::arrow::ArrowSchemaConverter::new()
            .convert(&schema)
            .map_err(|source| Error::Parquet {
                path: final_path.clone(),
                source,
            })?;
        if let Some(dir) = final_path.parent() {
            fs::create_dir_all(dir).map_err(|source| Error::Io {
                path: dir.to_path_buf(),
                source,
            })?;
        }
        let file = File::create(&temp_path).map_err(|source| Error::Io {
            path: temp_path.clone(),
            source,
        })?;
        // The writer hands over whole pages at a row group's close (up to a megabyte each,
        // written past the buffer) and small headers between them, which is what the buffer
        // is for. A lane keeps a file open per partition: at 1 MiB each, the buffers were 20 of
        // the 161 MiB peak heap of the 1 GiB mixed ingest under heaptrack.
        let writer = ArrowWriter::try_new(
            BufWriter::with_capacity(WRITE_BUFFER, file),
            schema,
            Some(properties),
        )
        .map_err(|source| Error::Parquet {
            path: temp_path.clone(),
            source,
        })?;
        Ok(ParquetFile {
            final_path,
            temp_path,
            writer,
            rows: 0,
        })
    }

    /// Appends a batch (its schema must be the file's).
    pub fn write(&mut self, batch: &RecordBatch) -> Result<(), Error> {
        self.writer.write(batch).map_err(|source| Error::Parquet {
            path: self.temp_path.clone(),
            source,
        })?;
        self.rows += batch.num_rows() as u64;
        Ok(())
    }

    /// Rows written so far.
    pub fn rows(&self) -> u64 {
        self.rows
    }

    /// Bytes written so far plus the row group in progress (an estimate of the final size).
    pub fn bytes(&self) -> usize {
        self.writer.bytes_written() + self.writer.in_progress_size()
    }

    /// Memory held by the row group in progress.
    pub fn buffered_bytes(&self) -> usize {
        self.writer.memory_size()
    }

    /// Ends the row group in progress, releasing its buffers (a smaller row group, less memory).
    pub fn flush_row_group(&mut self) -> Result<(), Error> {
        self.writer.flush().map_err(|source| Error::Parquet {
            path: self.temp_path.clone(),
            source,
        })
    }

    /// Adds key-value metadata to the footer (e.g. the source ranges the file covers).
    pub fn append_metadata(&mut self, key: impl Into<String>, value: impl Into<String>) {
        self.writer
            .append_key_value_metadata(KeyValue::new(key.into(), value.into()));
    }

    /// Closes, fsyncs and renames the file into place; durable when this returns.
    pub fn commit(self) -> Result<Committed, Error> {
        let done = self.finish()?;
        crate::durable::sync_files(&done.temp_path, std::slice::from_ref(&done.temp_path))?;
        done.publish()
    }

    /// Closes the file under its temporary name: complete, but neither durable nor visible. A
    /// caller that must make several files appear together makes them durable at once
    /// ([`crate::durable::sync_files`]), records the renames (see the lake's journal), then
    /// calls [`Finished::publish`] on each.
    pub fn finish(self) -> Result<Finished, Error> {
        let ParquetFile {
            final_path,
            temp_path,
            writer,
            rows,
            ..
        } = self;
        let buffered = writer.into_inner().map_err(|source| Error::Parquet {
            path: temp_path.clone(),
            source,
        })?;
        let file = buffered.into_inner().map_err(|e| Error::Io {
            path: temp_path.clone(),
            source: e.into_error(),
        })?;
        let bytes = file.metadata().map_err(io_error(&temp_path))?.len();
        Ok(Finished {
            temp_path,
            committed: Committed {
                path: final_path,
                rows,
                bytes,
            },
        })
    }

    /// The temporary name the file is written under.
    pub fn temp_path(&self) -> &Path {
        &self.temp_path
    }

    /// The name the file will have once committed.
    pub fn final_path(&self) -> &Path {
        &self.final_path
    }

    /// Drops the file without committing it.
    pub fn abort(self) {
        let temp = self.temp_path.clone();
        drop(self);
        let _ = fs::remove_file(temp);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::{Int64Array, RecordBatch};
    use arrow_schema::{DataType, Field, Schema};
    use std::sync::Arc;

    fn batch() -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![Field::new("n", DataType::Int64, false)]));
        RecordBatch::try_new(schema, vec![Arc::new(Int64Array::from(vec![1, 2, 3]))]).unwrap()
    }

    fn create(path: PathBuf, options: &ParquetOptions) -> Result<ParquetFile, Error> {
        let temp = path.with_file_name(".x.parquet.tmp");
        ParquetFile::create(path, temp, batch().schema(), options)
    }

    #[test]
    fn invisible_until_commit() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t/x.parquet");
        let mut f = create(path.clone(), &ParquetOptions::default()).unwrap();
        f.write(&batch()).unwrap();
        f.append_metadata("mailflow.test", "1");
        assert!(!path.exists());
        let committed = f.commit().unwrap();
        assert!(path.exists());
        assert_eq!(committed.rows, 3);
        let names: Vec<_> = fs::read_dir(dir.path().join("t"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("x.parquet")]);
    }

    #[test]
    fn abort_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let f = create(dir.path().join("a.parquet"), &ParquetOptions::default()).unwrap();
        f.abort();
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn bad_level_names_the_option() {
        let opts = ParquetOptions {
            zstd_level: 99,
            ..Default::default()
        };
        let dir = tempfile::tempdir().unwrap();
        let err = create(dir.path().join("never.parquet"), &opts).unwrap_err();
        assert!(err.to_string().contains("zstd_level"), "{err}");
        // Nothing was created for the file that was refused.
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn distinct_columns_go_without_dictionary_and_text_ones_without_bounds() {
        use arrow_array::StringArray;
        use parquet::file::reader::{FileReader, SerializedFileReader};
        let distinct =
            |f: Field| f.with_metadata([(DICTIONARY_HINT.to_string(), "false".to_string())].into());
        let schema = Arc::new(Schema::new(vec![
            distinct(Field::new("id", DataType::Utf8, false)),
            distinct(Field::new("offset", DataType::Int64, false)),
            Field::new("server", DataType::Utf8, false),
        ]));
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(StringArray::from(vec!["<b@x>", "<a@x>", "<c@x>"])),
                Arc::new(Int64Array::from(vec![0, 120, 240])),
                Arc::new(StringArray::from(vec!["EX01", "EX01", "EX02"])),
            ],
        )
        .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("d.parquet");
        let mut f = ParquetFile::create(
            path.clone(),
            dir.path().join(".d.tmp"),
            schema,
            &ParquetOptions::default(),
        )
        .unwrap();
        f.write(&batch).unwrap();
        f.commit().unwrap();
        let reader = SerializedFileReader::new(File::open(&path).unwrap()).unwrap();
        let group = reader.metadata().row_group(0);
        let (id, offset, server) = (group.column(0), group.column(1), group.column(2));
        assert!(id.dictionary_page_offset().is_none());
        assert!(id.statistics().is_none());
        assert!(offset.dictionary_page_offset().is_none());
        let bounds = offset.statistics().expect("offsets keep their bounds");
        assert_eq!(bounds.min_bytes_opt(), Some(&0i64.to_le_bytes()[..]));
        assert!(server.dictionary_page_offset().is_some());
        let bounds = server.statistics().expect("other text keeps its bounds");
        assert_eq!(bounds.max_bytes_opt(), Some(&b"EX02"[..]));
    }

    /// The lake's dictionary columns go through the vendored parquet's per-dictionary cache
    /// (vendor/parquet/PATCHES.md): rows keep their values whether batches share a dictionary
    /// or not, and the bounds are those of the values rows use, not of every dictionary entry.
    #[test]
    fn dictionary_columns_keep_their_values_and_the_bounds_of_what_rows_use() {
        use arrow_array::cast::AsArray;
        use arrow_array::types::Int32Type;
        use arrow_array::{ArrayRef, DictionaryArray, Int32Array, StringArray};
        use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
        let shared: ArrayRef = Arc::new(StringArray::from(vec!["EX02", "EX01", "EX03"]));
        let own: ArrayRef = Arc::new(StringArray::from(vec![
            "ZZ99", "EX03", "AA00", "EX04", "EX02",
        ]));
        let schema = Arc::new(Schema::new(vec![Field::new(
            "server",
            DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8)),
            true,
        )]));
        // A key of -1 is a null row.
        let batch = |keys: &[i32], values: &ArrayRef| {
            let keys = Int32Array::from_iter(keys.iter().map(|&k| (k >= 0).then_some(k)));
            let column = DictionaryArray::<Int32Type>::try_new(keys, values.clone()).unwrap();
            RecordBatch::try_new(schema.clone(), vec![Arc::new(column)]).unwrap()
        };
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.parquet");
        let mut f = ParquetFile::create(
            path.clone(),
            dir.path().join(".s.tmp"),
            schema.clone(),
            &ParquetOptions::default(),
        )
        .unwrap();
        // Each batch has more rows than dictionary values: the cached path takes all three.
        f.write(&batch(&[0, 0, -1, 1, 0], &shared)).unwrap();
        f.write(&batch(&[1, 1, 0, 1], &shared)).unwrap();
        f.write(&batch(&[3, -1, 1, 3, 4, 1, 4, 3], &own)).unwrap();
        f.commit().unwrap();

        let reader = ParquetRecordBatchReaderBuilder::try_new(File::open(&path).unwrap()).unwrap();
        let server = reader.metadata().row_group(0).column(0);
        assert!(server.dictionary_page_offset().is_some());
        let bounds = server
            .statistics()
            .expect("dictionary text keeps its bounds");
        assert_eq!(bounds.min_bytes_opt(), Some(&b"EX01"[..]));
        assert_eq!(bounds.max_bytes_opt(), Some(&b"EX04"[..]));
        assert_eq!(bounds.null_count_opt(), Some(2));
        let mut read = Vec::new();
        for batch in reader.build().unwrap() {
            let batch = batch.unwrap();
            let column = batch.column(0).as_dictionary::<Int32Type>();
            let values = column.values().as_string::<i32>();
            read.extend(
                column
                    .keys()
                    .iter()
                    .map(|k| k.map(|k| values.value(k as usize).to_string())),
            );
        }
        let expected = [
            "EX02", "EX02", "", "EX01", "EX02", "EX01", "EX01", "EX02", "EX01", "EX04", "", "EX03",
            "EX04", "EX02", "EX03", "EX02", "EX04",
        ];
        let expected: Vec<Option<String>> = expected
            .iter()
            .map(|v| (!v.is_empty()).then(|| v.to_string()))
            .collect();
        assert_eq!(read, expected);
    }
}
