//! The sink contract: what the runtime hands a sink, and what the sink answers.
//!
//! A sink takes the batches one source produced up to an offset ([`Sink::write`]: the table of
//! each batch, the batch, and the [`Source`] range) and makes them durable on its own schedule:
//! the lake when an epoch commits, a search cluster when a bulk request is stored. What it has
//! made durable it acknowledges as a count of writes ([`Sink::acked`]): every write up to that
//! count, in the order they were made, is durable. Counting writes, not offsets, is what lets
//! the runtime tie a source's checkpoint to rows that are not the source's own (a session closed
//! by a later file, a message made of several servers' lines): it records with each write the
//! checkpoint that write makes safe, and moves the checkpoint once the write is acknowledged.
//!
//! Sinks are driven from threads of their own, never from the runtime's async workers: their
//! I/O (fsync, renames, HTTP) blocks. Write order is the contract: a sink must not acknowledge
//! write `n` before every write before it.
//!
//! [`FanOut`] sends every write to several sinks and acknowledges what all of them hold;
//! [`LakeSink`] is the Parquet lake's implementation.

use std::path::PathBuf;
use std::sync::Arc;

use arrow_array::RecordBatch;

use crate::lake::{self, LakeOptions, LakeWriter, Resume, Source};

/// Errors of a sink, named by the sink.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The lake failed.
    #[error("sink {sink}: {source}")]
    Lake {
        /// The sink's name in the configuration.
        sink: String,
        /// What failed.
        #[source]
        source: lake::Error,
    },
    /// Another sink failed (its own words).
    #[error("sink {sink}: {reason}")]
    Other {
        /// The sink's name in the configuration.
        sink: String,
        /// What failed.
        reason: String,
    },
}

/// What a sink leaves behind when it closes.
#[derive(Debug, Clone, Default)]
pub struct Closed {
    /// Files it committed (a file sink), for the run's summary.
    pub files: Vec<PathBuf>,
    /// What it counted (a search cluster's documents stored, held already, dead-lettered),
    /// named `<sink>.<count>`, for the run's summary.
    pub counts: Vec<(String, u64)>,
}

/// The count a lake sink leaves per table of the rows it did not write because the lake held
/// them already: `<sink>.held.<table>`.
pub const HELD: &str = "held";

/// A durable output of record batches; see the module docs.
pub trait Sink: Send + std::fmt::Debug {
    /// The sink's name, for errors and metrics.
    fn name(&self) -> &str;

    /// Takes the batches `source` produced up to `source.end_offset`, each with its table. One
    /// call is one write in the count [`Sink::acked`] answers in.
    fn write(&mut self, source: &Source<'_>, batches: &[(&str, &RecordBatch)])
    -> Result<(), Error>;

    /// Writes made durable so far, in write order.
    fn acked(&self) -> u64;

    /// Time passes: make durable what has waited long enough (a live agent's idle moments).
    fn tick(&mut self) -> Result<(), Error>;

    /// Makes every write durable now (shutdown, or a checkpoint that cannot wait).
    fn flush(&mut self) -> Result<(), Error>;

    /// Flushes and releases the sink.
    fn close(self: Box<Self>) -> Result<Closed, Error>;

    /// Drops what is not durable (after an error elsewhere: nothing more may be committed).
    fn abort(self: Box<Self>);
}

/// The Parquet lake as a sink: one [`LakeWriter`] (batches of one source must all go through
/// the same writer; a runtime with several lanes builds one per lane).
#[derive(Debug)]
pub struct LakeSink {
    name: String,
    writer: LakeWriter,
    writes: u64,
    acked: u64,
    resume: Option<Arc<Resume>>,
    /// Rows not written because the lake held them.
    /// Rows not written because the lake held them, per table.
    held: std::collections::BTreeMap<String, u64>,
}

/// A lake sink's settings: the lake's root and how files are rolled and encoded.
#[derive(Debug, Clone)]
pub struct LakeSinkConfig {
    /// The sink's name in the configuration.
    pub name: String,
    /// The lake's root folder.
    pub root: PathBuf,
    /// Encoding and rolling.
    pub options: LakeOptions,
    /// What the lake holds that a replay must not write again (a restarted runtime's).
    pub resume: Option<Arc<Resume>>,
    /// The Delta tables epochs are published to; `root` is then the local staging folder.
    pub object: Option<Arc<crate::object_lake::ObjectLake>>,
}

impl LakeSinkConfig {
    /// Opens a writer on the lake (the folder is created if missing).
    pub fn build(&self) -> Result<LakeSink, Error> {
        let err = |source| Error::Lake {
            sink: self.name.clone(),
            source,
        };
        std::fs::create_dir_all(&self.root)
            .map_err(|e| err(crate::parquet::io_error(&self.root)(e).into()))?;
        let mut writer = LakeWriter::new(&self.root, self.options.clone()).map_err(err)?;
        if let Some(object) = &self.object {
            writer = writer.with_object_lake(Arc::clone(object));
        }
        Ok(LakeSink {
            name: self.name.clone(),
            writer,
            writes: 0,
            acked: 0,
            resume: self.resume.clone(),
            held: Default::default(),
        })
    }
}

impl LakeSink {
    /// See [`LakeWriter::set_barrier`].
    pub fn set_barrier(&mut self, barrier: lake::Barrier) {
        self.writer.set_barrier(barrier);
    }

    /// Rows not written because the lake held them already (see [`Resume`]).
    pub fn held(&self) -> u64 {
        self.held.values().sum()
    }

    fn settle(&mut self, r: Result<(), lake::Error>) -> Result<(), Error> {
        r.map_err(|source| Error::Lake {
            sink: self.name.clone(),
            source,
        })?;
        // The writer commits whole epochs: once nothing waits, every write so far is durable.
        if self.writer.is_committed() {
            self.acked = self.writes;
        }
        Ok(())
    }
}

impl Sink for LakeSink {
    fn name(&self) -> &str {
        &self.name
    }

    fn write(
        &mut self,
        source: &Source<'_>,
        batches: &[(&str, &RecordBatch)],
    ) -> Result<(), Error> {
        self.writes += 1;
        let Some(resume) = &self.resume else {
            let r = self.writer.write(source, batches);
            return self.settle(r);
        };
        let mut kept = Vec::with_capacity(batches.len());
        for &(table, batch) in batches {
            let (k, dropped) =
                resume
                    .filter(table, source, batch)
                    .map_err(|source| Error::Lake {
                        sink: self.name.clone(),
                        source,
                    })?;
            if dropped > 0 {
                *self.held.entry(table.to_string()).or_default() += dropped;
            }
            kept.extend(k.map(|b| (table, b)));
        }
        let refs: Vec<(&str, &RecordBatch)> = kept.iter().map(|(t, b)| (*t, b)).collect();
        let r = self.writer.write(source, &refs);
        self.settle(r)
    }

    fn acked(&self) -> u64 {
        self.acked
    }

    fn tick(&mut self) -> Result<(), Error> {
        let r = self.writer.tick();
        self.settle(r)
    }

    fn flush(&mut self) -> Result<(), Error> {
        let r = self.writer.commit();
        self.settle(r)
    }

    fn close(self: Box<Self>) -> Result<Closed, Error> {
        let name = self.name.clone();
        let counts = self
            .held
            .iter()
            .map(|(table, n)| (format!("{name}.{HELD}.{table}"), *n))
            .collect();
        let committed = self
            .writer
            .close()
            .map_err(|source| Error::Lake { sink: name, source })?;
        Ok(Closed {
            files: committed.into_iter().map(|c| c.path).collect(),
            counts,
        })
    }

    fn abort(self: Box<Self>) {
        self.writer.abort();
    }
}

/// A sink shared between a fan-out and a lake whose commits wait for it (see
/// [`LakeWriter::set_barrier`]): [`Shared::barrier`] flushes it.
#[derive(Debug, Clone)]
pub struct Shared(Arc<std::sync::Mutex<Box<dyn Sink>>>);

impl Shared {
    /// Shares `sink`.
    pub fn new(sink: Box<dyn Sink>) -> Self {
        Shared(Arc::new(std::sync::Mutex::new(sink)))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Box<dyn Sink>> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A barrier that flushes the sink.
    pub fn barrier(&self) -> lake::Barrier {
        let me = self.clone();
        Box::new(move || me.lock().flush().map_err(|e| e.to_string()))
    }

    /// The sink back, once the barrier's holder is gone; else the share.
    fn take(self) -> Result<Box<dyn Sink>, Shared> {
        Arc::try_unwrap(self.0)
            .map(|m| {
                m.into_inner()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
            })
            .map_err(Shared)
    }
}

impl Sink for Shared {
    fn name(&self) -> &str {
        "shared"
    }

    fn write(
        &mut self,
        source: &Source<'_>,
        batches: &[(&str, &RecordBatch)],
    ) -> Result<(), Error> {
        self.lock().write(source, batches)
    }

    fn acked(&self) -> u64 {
        self.lock().acked()
    }

    fn tick(&mut self) -> Result<(), Error> {
        self.lock().tick()
    }

    fn flush(&mut self) -> Result<(), Error> {
        self.lock().flush()
    }

    fn close(self: Box<Self>) -> Result<Closed, Error> {
        match self.take() {
            Ok(s) => s.close(),
            // The lake holding the barrier closes first (put it first in a fan-out); if it
            // has not, flushing is what closing can still do.
            Err(shared) => shared.lock().flush().map(|()| Closed::default()),
        }
    }

    fn abort(self: Box<Self>) {
        if let Ok(s) = self.take() {
            s.abort();
        }
    }
}

/// Several sinks fed the same writes: a write is acknowledged once every sink holds it.
#[derive(Debug)]
pub struct FanOut {
    sinks: Vec<Box<dyn Sink>>,
}

impl FanOut {
    /// Feeds `sinks` (at least one).
    pub fn new(sinks: Vec<Box<dyn Sink>>) -> Self {
        FanOut { sinks }
    }

    fn each(&mut self, mut f: impl FnMut(&mut dyn Sink) -> Result<(), Error>) -> Result<(), Error> {
        // Every sink gets its turn even when one fails: the first error is returned.
        let mut first = None;
        for s in &mut self.sinks {
            if let Err(e) = f(s.as_mut()) {
                first.get_or_insert(e);
            }
        }
        first.map_or(Ok(()), Err)
    }
}

impl Sink for FanOut {
    fn name(&self) -> &str {
        "fan-out"
    }

    fn write(
        &mut self,
        source: &Source<'_>,
        batches: &[(&str, &RecordBatch)],
    ) -> Result<(), Error> {
        self.each(|s| s.write(source, batches))
    }

    fn acked(&self) -> u64 {
        self.sinks.iter().map(|s| s.acked()).min().unwrap_or(0)
    }

    fn tick(&mut self) -> Result<(), Error> {
        self.each(|s| s.tick())
    }

    fn flush(&mut self) -> Result<(), Error> {
        self.each(|s| s.flush())
    }

    fn close(self: Box<Self>) -> Result<Closed, Error> {
        let mut out = Closed::default();
        let mut first = None;
        for s in self.sinks {
            match s.close() {
                Ok(mut c) => {
                    out.files.append(&mut c.files);
                    out.counts.append(&mut c.counts);
                }
                Err(e) => {
                    first.get_or_insert(e);
                }
            }
        }
        first.map_or(Ok(out), Err)
    }

    fn abort(self: Box<Self>) {
        for s in self.sinks {
            s.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use arrow_array::{Int64Array, StringArray, TimestampMillisecondArray};
    use arrow_schema::{DataType, Field, Schema};

    use super::*;

    fn batch(offsets: &[i64]) -> RecordBatch {
        let schema =
            crate::testing::lineage_schema(vec![Field::new("source_file", DataType::Utf8, false)]);
        let n = offsets.len();
        RecordBatch::try_new(
            schema,
            vec![
                Arc::new(
                    TimestampMillisecondArray::from(vec![Some(1_706_195_679_460); n])
                        .with_timezone("UTC"),
                ),
                Arc::new(StringArray::from(vec!["EX01"; n])),
                Arc::new(Int64Array::from(offsets.to_vec())),
                Arc::new(StringArray::from(vec!["a.log"; n])),
            ],
        )
        .expect("a valid batch")
    }

    fn config(root: &std::path::Path, age: Duration) -> LakeSinkConfig {
        LakeSinkConfig {
            name: "lake".into(),
            root: root.to_path_buf(),
            options: LakeOptions {
                max_file_age: age,
                ..LakeOptions::default()
            },
            resume: None,
            object: None,
        }
    }

    #[test]
    fn the_lake_acknowledges_writes_once_their_epoch_is_committed() {
        let dir = tempfile::tempdir().expect("a temp dir");
        let mut sink = config(dir.path(), Duration::from_secs(3600))
            .build()
            .expect("a sink");
        let source = Source {
            fingerprint: "fp",
            file: "a.log",
            end_offset: 100,
        };
        sink.write(&source, &[("t", &batch(&[10, 20]))])
            .expect("written");
        sink.write(&source, &[("t", &batch(&[30]))])
            .expect("written");
        // An hour-long epoch: nothing is durable until a flush.
        assert_eq!(sink.acked(), 0);
        sink.tick().expect("a tick");
        assert_eq!(sink.acked(), 0);
        assert!(
            lake::committed_files(dir.path())
                .expect("listed")
                .is_empty()
        );
        sink.flush().expect("flushed");
        assert_eq!(sink.acked(), 2);
        assert_eq!(lake::committed_files(dir.path()).expect("listed").len(), 1);
        let held = lake::committed_sources(dir.path()).expect("read");
        assert_eq!(held["fp"].end_offset, 100);
    }

    fn sessions(ids: &[&str]) -> RecordBatch {
        let base = batch(&vec![7; ids.len()]);
        let mut columns = base.columns().to_vec();
        columns.push(Arc::new(StringArray::from(ids.to_vec())));
        let mut fields: Vec<Field> = base
            .schema()
            .fields()
            .iter()
            .map(|f| f.as_ref().clone())
            .collect();
        fields.push(Field::new("session_id", DataType::Utf8, true));
        RecordBatch::try_new(Arc::new(Schema::new(fields)), columns).expect("a valid batch")
    }

    fn count(root: &std::path::Path) -> usize {
        lake::committed_files(root)
            .expect("listed")
            .iter()
            .map(|p| {
                let file = std::fs::File::open(p).expect("opened");
                parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)
                    .expect("a parquet file")
                    .metadata()
                    .file_metadata()
                    .num_rows() as usize
            })
            .sum()
    }

    #[test]
    fn a_resumed_lake_sink_drops_the_lines_and_the_sessions_it_holds() {
        let dir = tempfile::tempdir().expect("a temp dir");
        let source = Source {
            fingerprint: "fp",
            file: "a.log",
            end_offset: 100,
        };
        let mut first = config(dir.path(), Duration::from_secs(3600))
            .build()
            .expect("a sink");
        first
            .write(
                &source,
                &[("t", &batch(&[10, 50])), ("sess", &sessions(&["A", "B"]))],
            )
            .expect("written");
        Box::new(first).close().expect("closed");
        assert_eq!(count(dir.path()), 4);

        let mut resume = Resume::new([("fp".to_string(), 100)].into());
        resume
            .load(
                dir.path(),
                lake::Identity {
                    table: "sess".into(),
                    columns: vec!["session_id".into()],
                    global: None,
                    span: None,
                },
                |_, server| server == "EX01",
            )
            .expect("loaded");
        assert_eq!(resume.held("sess"), 2);
        let mut again = LakeSinkConfig {
            resume: Some(Arc::new(resume)),
            ..config(dir.path(), Duration::from_secs(3600))
        }
        .build()
        .expect("a sink");
        let replayed = Source {
            end_offset: 200,
            ..source
        };
        again
            .write(
                &replayed,
                &[("t", &batch(&[50, 150])), ("sess", &sessions(&["B", "C"]))],
            )
            .expect("written");
        assert_eq!(again.held(), 2, "line 50 and session B");
        Box::new(again).close().expect("closed");
        assert_eq!(count(dir.path()), 6);
    }

    #[test]
    fn a_tick_commits_an_epoch_past_its_age() {
        let dir = tempfile::tempdir().expect("a temp dir");
        let mut sink = config(dir.path(), Duration::ZERO).build().expect("a sink");
        let source = Source {
            fingerprint: "fp",
            file: "a.log",
            end_offset: 50,
        };
        sink.write(&source, &[("t", &batch(&[1]))])
            .expect("written");
        sink.tick().expect("a tick");
        assert_eq!(sink.acked(), 1);
    }

    #[test]
    fn a_fan_out_acknowledges_what_every_sink_holds() {
        let (a, b) = (
            tempfile::tempdir().expect("a temp dir"),
            tempfile::tempdir().expect("a temp dir"),
        );
        let fast = config(a.path(), Duration::ZERO).build().expect("a sink");
        let slow = config(b.path(), Duration::from_secs(3600))
            .build()
            .expect("a sink");
        let mut fan = FanOut::new(vec![Box::new(fast), Box::new(slow)]);
        let source = Source {
            fingerprint: "fp",
            file: "a.log",
            end_offset: 50,
        };
        fan.write(&source, &[("t", &batch(&[1]))]).expect("written");
        fan.tick().expect("a tick");
        assert_eq!(fan.acked(), 0, "the slow lake has not committed");
        fan.flush().expect("flushed");
        assert_eq!(fan.acked(), 1);
        let closed = Box::new(fan).close().expect("closed");
        assert_eq!(closed.files.len(), 2);
    }
}
