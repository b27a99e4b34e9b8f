//! The lake in an object store (or a local folder reached as one): Delta Lake tables, or plain
//! Hive-partitioned Parquet files ([`Layout`]).
//!
//! The [`LakeWriter`](crate::lake::LakeWriter) writes and rolls files exactly as it does for a
//! local lake, in a local staging folder; what changes is how an epoch is made visible
//! ([`ObjectLake::publish`]):
//!
//! 1. every file is uploaded to its final key (`<table>/date=…/server=…/part-….parquet`). Until
//!    a Delta commit names it, no Delta reader sees it;
//! 2. a journal object (`_mailflow/journals/<writer>-<epoch>.json`) records, per table, the
//!    files and their partition values;
//! 3. each table gets one Delta transaction: the files' `add` actions and an application
//!    transaction (`txn`) of the writer's id at the epoch's number. Concurrent writers'
//!    appends do not conflict; a commit that loses a race is retried by `deltalake-core`;
//! 4. the journal is deleted.
//!
//! An object store has no multi-table transaction, so the journal is what keeps an epoch whole
//! across tables: a writer killed between two tables' commits leaves its journal, and the next
//! start ([`ObjectLake::recover`]) commits what is missing, skipping each table whose `txn`
//! shows the epoch is in. Lines, sessions and messages then stay the prefix of each source that
//! resuming needs, as they do in the local lake.
//!
//! Plain files ([`Layout::Files`]) skip the log: an epoch's keys are recorded, its files
//! uploaded to their final keys, and the record deleted; a killed run's next start deletes what
//! its record names ([`ObjectLake::recover`]), and the lake's files are what a listing finds.
//!
//! Maintenance of Delta tables: [`ObjectLake::compact`] merges small files in one `OPTIMIZE`
//! commit per table, and [`ObjectLake::vacuum`] deletes what no current version names.
//!
//! Files keep the local lake's footers (provenance: source ranges, row files, schema version),
//! so [`ObjectLake::holdings`] answers what a restart needs from the table's current files.
//! Tables are partitioned by `date` (a Delta `date`) and `server` (a string), both in the Delta
//! schema and in the file paths, not in the files, as Delta lays tables out.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use arrow_schema::{DataType, Field, Fields, Schema, SchemaRef, TimeUnit};
use bytes::Bytes;
use deltalake_core::kernel::engine::arrow_conversion::TryIntoKernel as _;
use deltalake_core::kernel::transaction::{CommitBuilder, CommitProperties};
use deltalake_core::kernel::{Action, Add, MetadataExt as _, Remove, StructType, Transaction};
use deltalake_core::logstore::{LogStoreFactory, LogStoreRef, StorageConfig};
use deltalake_core::protocol::{DeltaOperation, SaveMode};
use deltalake_core::{DeltaTable, DeltaTableBuilder, DeltaTableError};
use futures::{StreamExt as _, TryStreamExt as _};
use object_store::multipart::MultipartStore;
use object_store::path::Path as StorePath;
use object_store::{ObjectStore, ObjectStoreExt as _, PutPayload};
use serde::{Deserialize, Serialize};
use url::Url;

use crate::lake::compact::{Candidate, CompactOptions, CompactReport, Merger, bins, by_schema};
use crate::lake::{Error, Holdings};
use crate::parquet::{Committed, ParquetFile};
use crate::store::{ObjectLocation, shown, store_error};

/// How old another writer's journal must be before it is taken for abandoned and replayed.
pub const ABANDONED: std::time::Duration = std::time::Duration::from_secs(15 * 60);

/// The size of an upload's parts, and the largest file sent in one request: S3's smallest
/// part is 5 MiB.
const PART: usize = 8 << 20;

/// How a lake in an object store lays out its tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// Delta Lake tables: a table's files are those its log names.
    Delta,
    /// Hive-partitioned Parquet files, for readers that take files only: a table's files are
    /// those a listing finds. A file appears when its upload completes; an epoch's files appear
    /// one by one, with no transaction across them (see [`ObjectLake::publish`]).
    Files,
}

/// The object a plain-files writer puts under the lake before its first upload: what tells
/// a later run that files without a Delta log are the lake's tables, not a killed Delta run's
/// uploads.
pub const PLAIN_MARKER: &str = "_mailflow/plain-parquet";

/// The partition columns of every table, in path order.
pub const PARTITIONS: [&str; 2] = ["date", "server"];

/// A file of an epoch, complete under a local temporary name, and where it goes.
#[derive(Debug, Clone)]
pub struct Staged {
    /// The table.
    pub table: String,
    /// The local file.
    pub temp_path: PathBuf,
    /// Its key under the lake: `<table>/date=…/server=…/part-….parquet`.
    pub relative: String,
    /// Its partition values (`date`, `server`), unescaped.
    pub partition: [String; 2],
    /// Rows and bytes.
    pub rows: u64,
    /// The file's size.
    pub bytes: u64,
    /// Its Arrow schema (without the partition columns).
    pub schema: SchemaRef,
}

/// One table's part of a journal.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct JournalFile {
    /// Key under the table.
    path: String,
    date: String,
    server: String,
    size: u64,
    rows: u64,
}

/// A multipart upload in flight, recorded in the staging folder.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct RecordedUpload {
    key: String,
    id: String,
}

/// What an epoch commits, recorded before its first table is committed.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Journal {
    /// The staging folder of the run that wrote it (see [`ObjectLake::recover`]).
    #[serde(default)]
    staging: String,
    writer: String,
    epoch: u64,
    /// When the files were uploaded, ms since the epoch.
    time: i64,
    tables: BTreeMap<String, Vec<JournalFile>>,
}

/// The lake as Delta tables; see the module docs. Shared by every writer of a run.
pub struct ObjectLake {
    location: ObjectLocation,
    layout: Layout,
    /// The local staging folder of this run's writers, as recorded in their journals.
    staging: String,
    io: Io,
    /// Tables loaded so far, by name.
    tables: Mutex<HashMap<String, DeltaTable>>,
    /// Crash injection for the tests ([`ABORT_AFTER_COMMITS`]): the process aborts right after
    /// this many table commits, between an epoch's journal and its last commit or removal.
    abort_after: Option<u64>,
    commits: std::sync::atomic::AtomicU64,
    /// Where multipart uploads in flight are recorded (none for a lake opened to read).
    uploads: Option<PathBuf>,
    /// The size of upload parts ([`PART`]; smaller in the tests, [`PART_BYTES`]).
    part: usize,
    /// Crash injection for the tests ([`ABORT_AFTER_PARTS`]).
    abort_after_parts: Option<u64>,
    parts: std::sync::atomic::AtomicU64,
    /// Held while a multipart upload is created and recorded.
    creating: tokio::sync::Mutex<()>,
}

/// The environment variable that makes a run abort after that many table commits, so that the
/// tests can stop a run inside an epoch's commit, a window of milliseconds that a kill from
/// outside seldom hits. Unset, as it is outside the tests, it costs one lookup per lake.
pub const ABORT_AFTER_COMMITS: &str = "MAILFLOW_TEST_ABORT_AFTER_COMMITS";

/// The environment variable that makes a run abort after that many upload parts, so that the
/// tests can leave a multipart upload unfinished.
pub const ABORT_AFTER_PARTS: &str = "MAILFLOW_TEST_ABORT_AFTER_PARTS";

/// The environment variable that sets the upload part size in bytes (at least 1 KiB), so that
/// the tests upload in parts without writing files of many megabytes (S3's smallest part is
/// 5 MiB; a test server can be told otherwise).
pub const PART_BYTES: &str = "MAILFLOW_TEST_PART_BYTES";

impl std::fmt::Debug for ObjectLake {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ObjectLake")
            .field("location", &self.location)
            .finish()
    }
}

/// The lake's own I/O runtime, which its blocking calls run on. Shut down without waiting when
/// the lake is dropped: that may happen on an async worker (the agent's), where a runtime must
/// not block.
struct Io(Option<tokio::runtime::Runtime>);

impl Io {
    fn block_on<F: Future>(&self, f: F) -> F::Output {
        match &self.0 {
            Some(rt) => rt.block_on(f),
            // Taken only by `drop`.
            None => unreachable!("the lake's runtime is used after it was dropped"),
        }
    }
}

impl Drop for Io {
    fn drop(&mut self) {
        if let Some(rt) = self.0.take() {
            rt.shutdown_background();
        }
    }
}

/// Delta's log needs a put-if-absent, which S3 (conditional writes), Azure Blob and local
/// files all offer through `object_store`: the default log store serves every scheme.
#[derive(Debug)]
struct PutIfAbsent;

impl LogStoreFactory for PutIfAbsent {
    fn with_options(
        &self,
        prefixed_store: deltalake_core::logstore::ObjectStoreRef,
        root_store: deltalake_core::logstore::ObjectStoreRef,
        location: &Url,
        options: &StorageConfig,
    ) -> deltalake_core::DeltaResult<LogStoreRef> {
        Ok(deltalake_core::logstore::default_logstore(
            prefixed_store,
            root_store,
            location,
            options,
        ))
    }
}

fn register_schemes() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let factories = deltalake_core::logstore::logstore_factories();
        for scheme in crate::store::SCHEMES {
            if let Ok(url) = Url::parse(&format!("{scheme}://"))
                && factories.get(&url).is_none()
            {
                factories.insert(url, Arc::new(PutIfAbsent));
            }
        }
    });
}

impl ObjectLake {
    /// The lake at `location` (tables are created as they are first written), written by
    /// writers staging their files in `staging` (one run at a time per staging folder).
    pub fn open(
        location: ObjectLocation,
        staging: &Path,
        layout: Layout,
    ) -> Result<Arc<ObjectLake>, Error> {
        register_schemes();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("delta-io")
            .enable_all()
            .build()
            .map_err(|e| runtime_error(&location, &e))?;
        let host = std::env::var("COMPUTERNAME")
            .or_else(|_| std::env::var("HOSTNAME"))
            .unwrap_or_default();
        Ok(Arc::new(ObjectLake {
            io: Io(Some(runtime)),
            location,
            layout,
            staging: format!("{host}:{}", staging.display()),
            tables: Mutex::new(HashMap::new()),
            abort_after: test_hook(ABORT_AFTER_COMMITS),
            commits: std::sync::atomic::AtomicU64::new(0),
            uploads: (!staging.as_os_str().is_empty()).then(|| staging.join("_uploads")),
            part: test_hook(PART_BYTES).map_or(PART, |p: usize| p.max(1024)),
            abort_after_parts: test_hook(ABORT_AFTER_PARTS),
            parts: std::sync::atomic::AtomicU64::new(0),
            creating: tokio::sync::Mutex::new(()),
        }))
    }

    /// How the tables under `location` are laid out: Delta if any of `tables` has a log, plain
    /// files if a plain writer marked the location ([`PLAIN_MARKER`]), else `None` (an empty
    /// location, or one holding only the uploads of a Delta run killed before its first
    /// commit, which are no table).
    pub fn layout_at(location: &ObjectLocation, tables: &[&str]) -> Result<Option<Layout>, Error> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| runtime_error(location, &e))?;
        let found = runtime.block_on(async {
            for table in tables {
                let listed = location
                    .store
                    .list_with_delimiter(Some(&location.path(table)))
                    .await
                    .map_err(|e| store_error(&e))?;
                if listed
                    .common_prefixes
                    .iter()
                    .any(|p| p.filename() == Some("_delta_log"))
                {
                    return Ok(Some(Layout::Delta));
                }
            }
            match location.store.head(&location.path(PLAIN_MARKER)).await {
                Ok(_) => Ok(Some(Layout::Files)),
                Err(object_store::Error::NotFound { .. }) => Ok(None),
                Err(e) => Err(store_error(&e)),
            }
        });
        runtime.shutdown_background();
        found.map_err(|reason| Error::Store {
            location: shown(&location.url),
            reason: format!("listing the lake: {reason}"),
        })
    }

    /// How the lake's tables are laid out.
    pub fn layout(&self) -> Layout {
        self.layout
    }

    /// The lake's location, for people.
    pub fn shown(&self) -> String {
        shown(&self.location.url)
    }

    fn err(&self, what: impl std::fmt::Display, e: impl std::fmt::Display) -> Error {
        Error::Store {
            location: self.shown(),
            reason: format!("{what}: {e}"),
        }
    }

    /// A table's URL, with the trailing `/` that makes `_delta_log/` resolve under it.
    fn table_url(&self, name: &str) -> Url {
        let mut u = self.location.join(name);
        let path = format!("{}/", u.path().trim_end_matches('/'));
        u.set_path(&path);
        u
    }

    fn store(&self) -> &Arc<dyn ObjectStore> {
        &self.location.store
    }

    fn lock_tables(&self) -> std::sync::MutexGuard<'_, HashMap<String, DeltaTable>> {
        self.tables
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The table `name`, loaded at its latest version; `None` if it does not exist yet.
    async fn load(&self, name: &str) -> Result<Option<DeltaTable>, Error> {
        let cached = self.lock_tables().get(name).cloned();
        let mut table = match cached {
            Some(t) => t,
            None => {
                // A table exists once its log has a commit. Asked of the store, not read from
                // the error of a failed load: each store and the local disk fail differently.
                let log = self.location.path(&format!("{name}/_delta_log"));
                let first = self
                    .store()
                    .list(Some(&log))
                    .next()
                    .await
                    .transpose()
                    .map_err(|e| self.err(format!("listing table {name}"), store_error(&e)))?;
                if first.is_none() {
                    return Ok(None);
                }
                DeltaTableBuilder::from_url(self.table_url(name))
                    .map_err(|e| self.err(name, e))?
                    .with_storage_backend(Arc::clone(self.store()), self.table_url(name))
                    .build()
                    .map_err(|e| self.err(name, e))?
            }
        };
        match table.update_state().await {
            Ok(()) => {}
            Err(DeltaTableError::NotATable(_)) => return Ok(None),
            Err(e) => return Err(self.err(format!("reading table {name}"), e)),
        }
        self.lock_tables().insert(name.to_string(), table.clone());
        Ok(Some(table))
    }

    /// The table `name`, created with `schema` (and the partition columns) if missing.
    async fn load_or_create(&self, name: &str, schema: &Schema) -> Result<DeltaTable, Error> {
        if let Some(t) = self.load(name).await? {
            return Ok(t);
        }
        let columns = delta_schema(schema).map_err(|e| self.err(format!("table {name}"), e))?;
        let table = DeltaTableBuilder::from_url(self.table_url(name))
            .map_err(|e| self.err(name, e))?
            .with_storage_backend(Arc::clone(self.store()), self.table_url(name))
            .build()
            .map_err(|e| self.err(name, e))?;
        let created = deltalake_core::operations::create::CreateBuilder::new()
            .with_log_store(table.log_store())
            .with_table_name(name)
            .with_columns(columns.fields().cloned())
            .with_partition_columns(PARTITIONS)
            .with_comment(format!(
                "mailflow {name} (schema of mailflow {})",
                env!("CARGO_PKG_VERSION")
            ))
            // A create that loses the race for version 0 must fail, not be retried as version
            // 1: a second metadata action there fails every append read at version 0 with
            // "Metadata changed since last commit" (three writers creating one table at once).
            .with_commit_properties(CommitProperties::default().with_max_retries(0))
            .await;
        match created {
            Ok(t) => {
                self.lock_tables().insert(name.to_string(), t.clone());
                Ok(t)
            }
            // Another writer created it first.
            Err(_) => self.load(name).await?.ok_or_else(|| {
                self.err(
                    format!("creating table {name}"),
                    "it neither exists nor could be made",
                )
            }),
        }
    }

    /// Uploads an epoch's files and commits them, one Delta transaction per table; see the
    /// module docs. Returns the files as committed (their URLs as paths).
    pub fn publish(
        &self,
        writer: &str,
        epoch: u64,
        files: &[Staged],
    ) -> Result<Vec<Committed>, Error> {
        if files.is_empty() {
            return Ok(Vec::new());
        }
        self.io.block_on(self.publish_async(writer, epoch, files))
    }

    async fn publish_async(
        &self,
        writer: &str,
        epoch: u64,
        files: &[Staged],
    ) -> Result<Vec<Committed>, Error> {
        if self.layout == Layout::Files {
            return self.publish_files(writer, epoch, files).await;
        }
        let (journal, key) = self.stage(writer, epoch, files).await?;
        let schemas: BTreeMap<&str, &Schema> = files
            .iter()
            .map(|f| (f.table.as_str(), f.schema.as_ref()))
            .collect();
        for table in journal.tables.keys() {
            let schema = schemas.get(table.as_str()).copied();
            self.commit(&journal, table, schema, false).await?;
            self.committed_one();
        }
        self.finish_epoch(&key, files).await
    }

    /// Crash injection for the tests ([`ABORT_AFTER_COMMITS`]): counts a table commit (a file
    /// upload, for plain files).
    fn committed_one(&self) {
        let n = self
            .commits
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        if self.abort_after == Some(n + 1) {
            std::process::abort();
        }
    }

    /// Deletes one object.
    async fn remove(&self, key: &StorePath) -> Result<(), Error> {
        self.store()
            .delete(key)
            .await
            .map_err(|e| self.err(format!("removing {key}"), store_error(&e)))
    }

    /// Ends a published epoch: deletes its journal (`key`) and the staged files.
    async fn finish_epoch(
        &self,
        key: &StorePath,
        files: &[Staged],
    ) -> Result<Vec<Committed>, Error> {
        self.remove(key).await?;
        for f in files {
            let _ = std::fs::remove_file(&f.temp_path);
        }
        Ok(files
            .iter()
            .map(|f| Committed {
                path: PathBuf::from(shown(&self.location.join(&f.relative))),
                rows: f.rows,
                bytes: f.bytes,
            })
            .collect())
    }

    /// An epoch's journal: per table, its files (keys under the table, or under the lake with
    /// `under_lake`).
    fn journal(&self, writer: &str, epoch: u64, files: &[Staged], under_lake: bool) -> Journal {
        let mut journal = Journal {
            staging: self.staging.clone(),
            writer: writer.to_string(),
            epoch,
            time: now_ms(),
            tables: BTreeMap::new(),
        };
        for f in files {
            let path = if under_lake {
                f.relative.clone()
            } else {
                f.relative
                    .strip_prefix(&format!("{}/", f.table))
                    .unwrap_or(&f.relative)
                    .to_string()
            };
            journal
                .tables
                .entry(f.table.clone())
                .or_default()
                .push(JournalFile {
                    path,
                    date: f.partition[0].clone(),
                    server: f.partition[1].clone(),
                    size: f.bytes,
                    rows: f.rows,
                });
        }
        journal
    }

    /// The journals under `prefix` (`_mailflow/journals` or `_mailflow/uploads`), with their
    /// keys and ages.
    async fn journals(
        &self,
        prefix: &str,
    ) -> Result<Vec<(StorePath, std::time::Duration, Journal)>, Error> {
        let listed: Vec<_> = self
            .store()
            .list(Some(&self.location.path(prefix)))
            .try_collect()
            .await
            .map_err(|e| self.err(format!("listing {prefix}"), store_error(&e)))?;
        let mut out = Vec::with_capacity(listed.len());
        for meta in listed {
            let read = |e: object_store::Error| {
                self.err(format!("reading {}", meta.location), store_error(&e))
            };
            let bytes = self
                .store()
                .get(&meta.location)
                .await
                .map_err(read)?
                .bytes()
                .await
                .map_err(read)?;
            let journal: Journal = serde_json::from_slice(&bytes)
                .map_err(|e| self.err(format!("journal {}", meta.location), e))?;
            let age = (chrono::Utc::now() - meta.last_modified)
                .to_std()
                .unwrap_or_default();
            out.push((meta.location, age, journal));
        }
        Ok(out)
    }

    /// Plain files: the epoch's keys are recorded (`_mailflow/uploads/<writer>-<epoch>.json`),
    /// the files uploaded, and the record deleted. A run killed in between leaves the record,
    /// and the next start from the same staging folder deletes what it names
    /// ([`ObjectLake::recover`]): the epoch's sources are then read again, so each line ends up
    /// in the lake once. A reader listing meanwhile may see part of an epoch.
    async fn publish_files(
        &self,
        writer: &str,
        epoch: u64,
        files: &[Staged],
    ) -> Result<Vec<Committed>, Error> {
        self.store()
            .put(
                &self.location.path(PLAIN_MARKER),
                PutPayload::from_static(b"plain Hive-partitioned Parquet files, no Delta log\n"),
            )
            .await
            .map_err(|e| self.err(format!("writing {PLAIN_MARKER}"), store_error(&e)))?;
        let journal = self.journal(writer, epoch, files, true);
        let key = self
            .location
            .path(&format!("_mailflow/uploads/{writer}-{epoch:010}.json"));
        let body = serde_json::to_vec(&journal).map_err(|e| self.err("journal", e))?;
        self.store()
            .put(&key, PutPayload::from(body))
            .await
            .map_err(|e| self.err(format!("writing {key}"), store_error(&e)))?;
        futures::stream::iter(files.iter().map(|f| async move {
            self.upload(f).await?;
            self.committed_one();
            Ok::<_, Error>(())
        }))
        .buffer_unordered(2)
        .try_collect::<Vec<()>>()
        .await?;
        self.finish_epoch(&key, files).await
    }

    /// Deletes what epochs of this staging folder that were killed mid-upload left (plain
    /// files; see [`ObjectLake::publish_files`]); returns how many. Another writer's records
    /// are left alone: it may be uploading them now, and only it knows when it is done.
    async fn roll_back_uploads(&self) -> Result<usize, Error> {
        let mut rolled = 0;
        for (key, _, journal) in self.journals("_mailflow/uploads").await? {
            if journal.staging != self.staging {
                continue;
            }
            for f in journal.tables.values().flatten() {
                match self.store().delete(&self.location.path(&f.path)).await {
                    Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                    Err(e) => {
                        return Err(self.err(format!("removing {}", f.path), store_error(&e)));
                    }
                }
            }
            self.remove(&key).await?;
            rolled += 1;
        }
        Ok(rolled)
    }

    /// Uploads an epoch's files, then records its journal: after this, a crash loses nothing
    /// of the epoch ([`ObjectLake::recover`] commits it).
    async fn stage(
        &self,
        writer: &str,
        epoch: u64,
        files: &[Staged],
    ) -> Result<(Journal, StorePath), Error> {
        // Two files at a time: every file is complete before any commit names it.
        futures::stream::iter(files.iter().map(|f| self.upload(f)))
            .buffer_unordered(2)
            .try_collect::<Vec<()>>()
            .await?;
        let journal = self.journal(writer, epoch, files, false);
        // A table is created from the schema of its first file: the journal's replay needs the
        // table to exist, so every table is made before the journal names it.
        let mut made = std::collections::BTreeSet::new();
        for f in files {
            if made.insert(f.table.as_str()) {
                self.load_or_create(&f.table, &f.schema).await?;
            }
        }
        let key = self.journal_key(writer, epoch);
        let body = serde_json::to_vec(&journal).map_err(|e| self.err("journal", e))?;
        self.store()
            .put(&key, PutPayload::from(body))
            .await
            .map_err(|e| self.err(format!("writing {key}"), store_error(&e)))?;
        Ok((journal, key))
    }

    /// Uploads one staged file to its key: in one request up to [`PART`], else in parts of
    /// [`PART`], two in flight (bounded memory, whatever the file's size). A failed multipart
    /// upload is aborted, so the store keeps no parts of it; where the store says which upload
    /// is which (S3), its id is recorded in the staging folder first, so that the next start
    /// aborts what a killed run left ([`ObjectLake::abort_recorded_uploads`]).
    async fn upload(&self, f: &Staged) -> Result<(), Error> {
        use tokio::io::AsyncReadExt as _;
        let key = self.location.path(&f.relative);
        let failed = |e: &dyn std::fmt::Display| self.err(format!("uploading {}", f.relative), e);
        let local_error = |e: std::io::Error| self.err(f.temp_path.display(), e);
        let mut local = tokio::fs::File::open(&f.temp_path)
            .await
            .map_err(local_error)?;
        if f.bytes <= self.part as u64 {
            let mut body = Vec::with_capacity(f.bytes as usize);
            local.read_to_end(&mut body).await.map_err(local_error)?;
            self.store()
                .put(&key, PutPayload::from(body))
                .await
                .map_err(|e| failed(&store_error(&e)))?;
            return Ok(());
        }
        if let (Some(mp), Some(dir)) = (&self.location.multipart, &self.uploads) {
            return self.upload_recorded(mp, dir, &key, f, local).await;
        }
        let upload = self
            .store()
            .put_multipart(&key)
            .await
            .map_err(|e| failed(&store_error(&e)))?;
        let mut writer = object_store::WriteMultipart::new_with_chunk_size(upload, self.part);
        let mut buf = vec![0u8; 1 << 20];
        let sent: Result<(), Error> = async {
            loop {
                let n = local.read(&mut buf).await.map_err(local_error)?;
                if n == 0 {
                    return Ok(());
                }
                writer
                    .wait_for_capacity(2)
                    .await
                    .map_err(|e| failed(&store_error(&e)))?;
                writer.write(&buf[..n]);
            }
        }
        .await;
        match sent {
            Ok(()) => {
                writer
                    .finish()
                    .await
                    .map_err(|e| failed(&store_error(&e)))?;
                Ok(())
            }
            Err(e) => {
                let _ = writer.abort().await;
                Err(e)
            }
        }
    }

    /// A multipart upload through the store's multipart API, its id recorded in `dir` while it
    /// runs.
    async fn upload_recorded(
        &self,
        mp: &Arc<dyn MultipartStore>,
        dir: &Path,
        key: &StorePath,
        f: &Staged,
        mut local: tokio::fs::File,
    ) -> Result<(), Error> {
        use tokio::io::AsyncReadExt as _;
        let failed = |e: &dyn std::fmt::Display| self.err(format!("uploading {}", f.relative), e);
        let local_error = |e: std::io::Error| self.err(f.temp_path.display(), e);
        // An upload is created and recorded under a lock, which the tests' crash injection
        // takes too: a run they stop has recorded every upload it began. (A kill from outside
        // can still fall between the two, a window of one local write.)
        let creating = self.creating.lock().await;
        let id = mp
            .create_multipart(key)
            .await
            .map_err(|e| failed(&store_error(&e)))?;
        let record = dir.join(format!(
            "{:016x}.json",
            xxhash_rust::xxh3::xxh3_64(format!("{key}\n{id}").as_bytes())
        ));
        let body = serde_json::to_vec(&RecordedUpload {
            key: key.to_string(),
            id: id.clone(),
        })
        .map_err(|e| failed(&e))?;
        std::fs::create_dir_all(dir)
            .and_then(|()| std::fs::write(&record, body))
            .map_err(|e| self.err(record.display(), e))?;
        drop(creating);
        let sent: Result<(), Error> = async {
            let mut parts = Vec::new();
            let mut in_flight = futures::stream::FuturesOrdered::new();
            for index in 0.. {
                let mut chunk = vec![0u8; self.part];
                let mut n = 0;
                while n < chunk.len() {
                    let k = local.read(&mut chunk[n..]).await.map_err(local_error)?;
                    if k == 0 {
                        break;
                    }
                    n += k;
                }
                if n == 0 {
                    break;
                }
                chunk.truncate(n);
                in_flight.push_back(mp.put_part(key, &id, index, PutPayload::from(chunk)));
                if in_flight.len() >= 2
                    && let Some(part) = in_flight.next().await
                {
                    parts.push(part.map_err(|e| failed(&store_error(&e)))?);
                    self.parts_sent().await;
                }
            }
            while let Some(part) = in_flight.next().await {
                parts.push(part.map_err(|e| failed(&store_error(&e)))?);
                self.parts_sent().await;
            }
            mp.complete_multipart(key, &id, parts)
                .await
                .map_err(|e| failed(&store_error(&e)))?;
            Ok(())
        }
        .await;
        if sent.is_err() {
            let _ = mp.abort_multipart(key, &id).await;
        }
        let _ = std::fs::remove_file(&record);
        sent
    }

    /// Crash injection for the tests ([`ABORT_AFTER_PARTS`]).
    async fn parts_sent(&self) {
        let n = self.parts.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
        if self.abort_after_parts.is_some_and(|limit| n >= limit) {
            let _recorded = self.creating.lock().await;
            std::process::abort();
        }
    }

    /// Aborts the multipart uploads a killed run of this staging folder left unfinished (their
    /// parts would otherwise stay in the bucket, billed, until a lifecycle rule removes them);
    /// returns how many.
    pub fn abort_recorded_uploads(&self) -> Result<usize, Error> {
        let (Some(mp), Some(dir)) = (&self.location.multipart, &self.uploads) else {
            return Ok(0);
        };
        let Ok(entries) = std::fs::read_dir(dir) else {
            return Ok(0);
        };
        let mut aborted = 0;
        for entry in entries {
            let path = entry.map_err(|e| self.err(dir.display(), e))?.path();
            let Ok(bytes) = std::fs::read(&path) else {
                continue;
            };
            // A record cut short by the kill names no upload that started.
            if let Ok(r) = serde_json::from_slice::<RecordedUpload>(&bytes) {
                let key = StorePath::from(r.key.as_str());
                match self.io.block_on(mp.abort_multipart(&key, &r.id)) {
                    Ok(()) | Err(object_store::Error::NotFound { .. }) => aborted += 1,
                    Err(e) => {
                        return Err(
                            self.err(format!("aborting the upload of {key}"), store_error(&e))
                        );
                    }
                }
            }
            std::fs::remove_file(&path).map_err(|e| self.err(path.display(), e))?;
        }
        Ok(aborted)
    }

    /// Commits `journal`'s files of `table` with the writer's `txn`; with `check`, first looks
    /// whether the table holds the epoch already (a journal replayed after a crash). With the
    /// files' `schema`, a missing table is created and a column it lacks is added.
    async fn commit(
        &self,
        journal: &Journal,
        table: &str,
        schema: Option<&Schema>,
        check: bool,
    ) -> Result<(), Error> {
        let (writer, epoch, time) = (journal.writer.as_str(), journal.epoch, journal.time);
        let files = journal.tables.get(table).map_or(&[][..], Vec::as_slice);
        let app_id = app_id(writer);
        let loaded = match schema {
            Some(s) => self.load_or_create(table, s).await?,
            None => match self.load(table).await? {
                Some(t) => t,
                None => {
                    return Err(self.err(
                        format!("table {table}"),
                        "missing; its journal cannot be replayed",
                    ));
                }
            },
        };
        let snapshot = loaded
            .snapshot()
            .map_err(|e| self.err(format!("table {table}"), e))?;
        if check {
            let held = snapshot
                .transaction_version(loaded.log_store().as_ref(), &app_id)
                .await
                .map_err(|e| self.err(format!("table {table}"), e))?;
            if held.is_some_and(|v| v >= epoch as i64) {
                return Ok(());
            }
        }
        let mut actions = Vec::with_capacity(files.len() + 1);
        // A column this build writes that the table lacks: the schema grows (additive only).
        if let Some(s) = schema {
            let current = snapshot.schema();
            let wanted = delta_schema(s).map_err(|e| self.err(format!("table {table}"), e))?;
            let missing: Vec<_> = wanted
                .fields()
                .filter(|f| current.field(f.name()).is_none())
                .cloned()
                .collect();
            if !missing.is_empty() {
                let grown = StructType::try_new(current.fields().cloned().chain(missing))
                    .map_err(|e| self.err(format!("table {table}: growing its schema"), e))?;
                let metadata = snapshot
                    .metadata()
                    .clone()
                    .with_schema(&grown)
                    .map_err(|e| self.err(format!("table {table}: growing its schema"), e))?;
                actions.push(Action::Metadata(metadata));
            }
        }
        for f in files {
            actions.push(Action::Add(Add {
                path: f.path.clone(),
                partition_values: HashMap::from([
                    ("date".to_string(), Some(f.date.clone())),
                    ("server".to_string(), Some(f.server.clone())),
                ]),
                size: i64::try_from(f.size).unwrap_or(i64::MAX),
                modification_time: time,
                data_change: true,
                stats: Some(format!("{{\"numRecords\":{}}}", f.rows)),
                tags: None,
                deletion_vector: None,
                base_row_id: None,
                default_row_commit_version: None,
                clustering_provider: None,
            }));
        }
        let properties = CommitProperties::default()
            .with_application_transaction(Transaction::new_with_last_update(
                &app_id,
                epoch as i64,
                Some(time),
            ))
            .with_max_retries(100)
            .with_metadata([
                (
                    "mailflow.version".to_string(),
                    serde_json::json!(env!("CARGO_PKG_VERSION")),
                ),
                ("mailflow.writer".to_string(), serde_json::json!(writer)),
            ]);
        let operation = DeltaOperation::Write {
            mode: SaveMode::Append,
            partition_by: Some(PARTITIONS.iter().map(|p| p.to_string()).collect()),
            predicate: None,
        };
        CommitBuilder::from(properties)
            .with_actions(actions)
            .build(Some(snapshot), loaded.log_store(), operation)
            .await
            .map_err(|e| self.err(format!("committing to table {table}"), e))?;
        Ok(())
    }

    fn journal_key(&self, writer: &str, epoch: u64) -> StorePath {
        self.location
            .path(&format!("_mailflow/journals/{writer}-{epoch:010}.json"))
    }

    /// Commits what interrupted epochs left in their journals (see the module docs); returns
    /// how many were replayed.
    ///
    /// A journal of this staging folder is replayed at once: one run at a time stages there, so
    /// its writer is gone. Another machine's or folder's journal may belong to a writer that is
    /// committing it right now; it is replayed only once it is [`ABANDONED`] old (an epoch
    /// commits in seconds), so that two writers never commit one epoch.
    pub fn recover(&self) -> Result<usize, Error> {
        self.abort_recorded_uploads()?;
        if self.layout == Layout::Files {
            return self.io.block_on(self.roll_back_uploads());
        }
        self.io.block_on(async {
            let mut replayed = 0;
            for (key, age, journal) in self.journals("_mailflow/journals").await? {
                if journal.staging != self.staging && age < ABANDONED {
                    continue;
                }
                for table in journal.tables.keys() {
                    self.commit(&journal, table, None, true).await?;
                }
                self.remove(&key).await?;
                replayed += 1;
            }
            Ok(replayed)
        })
    }

    /// The current files of `table` (keys under the lake, and sizes); none if it does not
    /// exist.
    pub fn files(&self, table: &str) -> Result<Vec<(String, u64)>, Error> {
        self.io.block_on(self.files_async(table))
    }

    async fn files_async(&self, table: &str) -> Result<Vec<(String, u64)>, Error> {
        Ok(self
            .files_with_times(table)
            .await?
            .into_iter()
            .map(|(key, size, _)| (key, size))
            .collect())
    }

    /// [`ObjectLake::files`] of the `date=` partitions whose date (`YYYY-MM-DD`) `keep`
    /// accepts. Plain files are listed one kept date at a time, after one listing of the
    /// table's dates, so that a week's report does not list a year of objects; a Delta table's
    /// files come from its log either way.
    pub fn files_where(
        &self,
        table: &str,
        keep: impl Fn(&str) -> bool,
    ) -> Result<Vec<(String, u64)>, Error> {
        let kept = |key: &str| partition_of(key).is_some_and(|(date, _)| keep(date));
        if self.layout == Layout::Delta {
            let mut files = self.files(table)?;
            files.retain(|(key, _)| kept(key));
            return Ok(files);
        }
        self.io.block_on(async {
            let dates = self
                .store()
                .list_with_delimiter(Some(&self.location.path(table)))
                .await
                .map_err(|e| self.err(format!("listing table {table}"), store_error(&e)))?;
            let prefixes: Vec<StorePath> = dates
                .common_prefixes
                .into_iter()
                .filter(|p| {
                    p.filename()
                        .and_then(|f| f.strip_prefix("date="))
                        .is_some_and(&keep)
                })
                .collect();
            let lists: Vec<Vec<(String, u64, i64)>> =
                futures::stream::iter(prefixes.iter().map(|p| self.listed_under(table, p)))
                    .buffered(8)
                    .try_collect()
                    .await?;
            let mut out: Vec<(String, u64)> = lists
                .into_iter()
                .flatten()
                .filter(|(key, _, _)| kept(key))
                .map(|(key, size, _)| (key, size))
                .collect();
            out.sort();
            Ok(out)
        })
    }

    /// The current files of `table`: keys under the lake, sizes, and commit times (ms since
    /// the epoch), in key order.
    async fn files_with_times(&self, table: &str) -> Result<Vec<(String, u64, i64)>, Error> {
        if self.layout == Layout::Files {
            return self.listed_files(table).await;
        }
        let Some(t) = self.load(table).await? else {
            return Ok(Vec::new());
        };
        let snapshot = t
            .snapshot()
            .map_err(|e| self.err(format!("table {table}"), e))?;
        let mut out: Vec<(String, u64, i64)> = snapshot
            .log_data()
            .iter()
            .map(|f| {
                let under: Vec<String> = f
                    .object_store_path()
                    .parts()
                    .map(|p| p.as_ref().to_string())
                    .collect();
                (
                    format!("{table}/{}", under.join("/")),
                    u64::try_from(f.size()).unwrap_or(0),
                    f.modification_time(),
                )
            })
            .collect();
        out.sort();
        Ok(out)
    }

    /// Plain files: the table's `part-*.parquet` objects, as a listing finds them (keys under
    /// the lake, sizes, upload times), in key order.
    async fn listed_files(&self, table: &str) -> Result<Vec<(String, u64, i64)>, Error> {
        self.listed_under(table, &self.location.path(table)).await
    }

    /// Plain files under one prefix (a table, or one of its `date=` folders).
    async fn listed_under(
        &self,
        table: &str,
        prefix: &StorePath,
    ) -> Result<Vec<(String, u64, i64)>, Error> {
        let root = self.location.path("");
        let listed: Vec<_> = self
            .store()
            .list(Some(prefix))
            .try_collect()
            .await
            .map_err(|e| self.err(format!("listing table {table}"), store_error(&e)))?;
        let mut out: Vec<(String, u64, i64)> = listed
            .into_iter()
            .filter(|m| {
                m.location
                    .filename()
                    .is_some_and(|f| f.starts_with("part-") && f.ends_with(".parquet"))
            })
            .filter_map(|m| {
                let under: Vec<String> = m
                    .location
                    .prefix_match(&root)?
                    .map(|p| p.as_ref().to_string())
                    .collect();
                Some((under.join("/"), m.size, m.last_modified.timestamp_millis()))
            })
            .collect();
        out.sort();
        Ok(out)
    }

    /// What the lake's current files hold (read from their footers), of the files committed
    /// at or after `since` (ms since the epoch; all with `None`).
    pub fn holdings_since(&self, tables: &[&str], since: Option<i64>) -> Result<Holdings, Error> {
        let times: HashMap<String, i64> = self.io.block_on(async {
            let mut out = HashMap::new();
            for table in tables {
                for (key, _, time) in self.files_with_times(table).await? {
                    out.insert(key, time);
                }
            }
            Ok::<_, Error>(out)
        })?;
        self.holdings(tables, |key| {
            since.is_none_or(|s| times.get(key).is_none_or(|&t| t >= s))
        })
    }

    /// What the lake's current files hold (read from their footers), of the files `keep`
    /// accepts (by key under the lake).
    pub fn holdings(
        &self,
        tables: &[&str],
        keep: impl Fn(&str) -> bool,
    ) -> Result<Holdings, Error> {
        self.io.block_on(async {
            let mut keys = Vec::new();
            for table in tables {
                keys.extend(
                    self.files_async(table)
                        .await?
                        .into_iter()
                        .filter(|(k, _)| keep(k)),
                );
            }
            let footers: Vec<(String, HashMap<String, String>)> =
                futures::stream::iter(keys.into_iter().map(|(key, size)| async move {
                    let meta = self.footer(&key, size).await?;
                    Ok::<_, Error>((key, meta))
                }))
                .buffer_unordered(16)
                .try_collect()
                .await?;
            let mut out = Holdings::default();
            for (key, meta) in footers {
                crate::lake::absorb(&mut out, Path::new(&key), &meta)?;
            }
            Ok(out)
        })
    }

    /// A file's footer key-value metadata, read with ranged GETs of the file's tail (one when
    /// the footer fits in the first 64 KiB read, as mailflow's do).
    async fn footer(&self, key: &str, size: u64) -> Result<HashMap<String, String>, Error> {
        let meta = self.metadata_async(key, size).await?;
        Ok(crate::lake::key_values(meta.file_metadata()))
    }

    /// Footers of the files `keys` (keys under the lake, with sizes), read a few at a time; one
    /// result per file, in order.
    pub fn metadata(
        &self,
        keys: &[(String, u64)],
    ) -> Vec<Result<parquet::file::metadata::ParquetMetaData, Error>> {
        self.io.block_on(
            futures::stream::iter(keys.iter().map(|(k, size)| self.metadata_async(k, *size)))
                .buffered(16)
                .collect(),
        )
    }

    async fn metadata_async(
        &self,
        key: &str,
        size: u64,
    ) -> Result<parquet::file::metadata::ParquetMetaData, Error> {
        use parquet::file::metadata::ParquetMetaDataReader;
        let path = self.location.path(key);
        let bad = |e: &dyn std::fmt::Display| self.err(format!("footer of {key}"), e);
        let tail = size.min(64 << 10);
        let bytes = self
            .store()
            .get_range(&path, size - tail..size)
            .await
            .map_err(|e| bad(&store_error(&e)))?;
        let n = bytes.len();
        if n < 8 || &bytes[n - 4..] != b"PAR1" {
            return Err(bad(&"not a Parquet file"));
        }
        let mut len = [0u8; 4];
        len.copy_from_slice(&bytes[n - 8..n - 4]);
        let need = u64::from(u32::from_le_bytes(len)) + 8;
        let footer = if need <= n as u64 {
            bytes.slice(n - need as usize..n - 8)
        } else if need <= size {
            self.store()
                .get_range(&path, size - need..size - 8)
                .await
                .map_err(|e| bad(&store_error(&e)))?
        } else {
            return Err(bad(&"footer longer than the file"));
        };
        ParquetMetaDataReader::decode_metadata(&footer).map_err(|e| bad(&e))
    }

    /// The store's root as a URL (`s3://bucket/`, `file:///`), for a query engine to register
    /// the store under, and the store.
    pub fn store_root(&self) -> (Url, Arc<dyn ObjectStore>) {
        let mut root = self.location.url.clone();
        root.set_path("/");
        (root, Arc::clone(self.store()))
    }

    /// A key's path in the store (as [`ObjectLake::store_root`] roots it).
    pub fn store_path(&self, key: &str) -> StorePath {
        self.location.path(key)
    }

    /// The URL of a key, for people.
    pub fn shown_key(&self, key: &str) -> String {
        shown(&self.location.join(key))
    }

    /// A file's bytes (key under the lake).
    pub fn read(&self, key: &str) -> Result<Bytes, Error> {
        self.io.block_on(async {
            self.store()
                .get(&self.location.path(key))
                .await
                .map_err(|e| self.err(format!("reading {key}"), store_error(&e)))?
                .bytes()
                .await
                .map_err(|e| self.err(format!("reading {key}"), store_error(&e)))
        })
    }

    /// [`crate::lake::row_keys`] of a file of this lake.
    pub fn row_keys(
        &self,
        key: &Path,
        files: &HashSet<String>,
    ) -> Result<Vec<(String, i64)>, Error> {
        let bytes = self.read(&key.to_string_lossy())?;
        crate::lake::row_keys_in(bytes, key, files)
    }
}

/// A merged file of a compaction: its `add`, the `remove`s of the files it replaces, and its key
/// under the lake.
struct Merged {
    add: Add,
    removes: Vec<Remove>,
    key: String,
    bytes_in: u64,
}

/// What a vacuum removed (or, in a dry run, would remove).
#[derive(Debug, Clone, Default)]
pub struct VacuumReport {
    /// Journals of interrupted epochs committed first.
    pub journals_replayed: usize,
    /// Per table, the files removed (keys under the table).
    pub files: BTreeMap<String, Vec<String>>,
}

/// The shortest retention [`ObjectLake::vacuum`] accepts. A shorter one could remove files a
/// reader's query still reads (it reads the version it started on), or that a writer uploaded
/// and is about to commit.
pub const MIN_RETENTION: std::time::Duration = std::time::Duration::from_secs(3600);

impl ObjectLake {
    /// Merges each table's small files, as [`crate::lake::compact::compact`] does for a local
    /// lake (which files, how they are grouped, and the provenance the merged files carry).
    ///
    /// Per table, the merged files are uploaded, then one `OPTIMIZE` commit adds them and
    /// removes the files they replace, with `dataChange` false: the table's rows do not change,
    /// and a reader of any version counts each row once. A merged file whose inputs another
    /// compaction removed meanwhile is dropped before the commit, so that no row is in two
    /// current files (Delta's own conflict check lets two such removals pass, as they change no
    /// data). Replaced files stay in the store, for readers of older versions, until
    /// [`ObjectLake::vacuum`]. `scratch` holds each merged file while it is written.
    pub fn compact(
        &self,
        tables: &[&str],
        scratch: &Path,
        options: &CompactOptions,
    ) -> Result<CompactReport, Error> {
        if self.layout == Layout::Files {
            return Err(self.err(
                "compact",
                "plain Parquet files in an object store cannot be replaced atomically (a reader would count rows twice): write Delta tables there (the default), whose compaction is one commit",
            ));
        }
        let mut report = CompactReport::default();
        report.recovery.journals_replayed = self.recover()?;
        std::fs::create_dir_all(scratch).map_err(|e| self.err(scratch.display(), e))?;
        let id = crate::lake::writer_id();
        self.io.block_on(async {
            for table in tables {
                self.compact_table(table, scratch, &id, options, &mut report)
                    .await?;
            }
            Ok::<_, Error>(())
        })?;
        Ok(report)
    }

    async fn compact_table(
        &self,
        table: &str,
        scratch: &Path,
        id: &str,
        options: &CompactOptions,
        report: &mut CompactReport,
    ) -> Result<(), Error> {
        let Some(loaded) = self.load(table).await? else {
            return Ok(());
        };
        let snapshot = loaded
            .snapshot()
            .map_err(|e| self.err(format!("table {table}"), e))?;
        let now = now_ms();
        let age = i64::try_from(options.older_than.as_millis()).unwrap_or(i64::MAX);
        let mut found: Vec<(String, u64, Remove)> = Vec::new();
        for f in snapshot.log_data().iter() {
            let path = f.path();
            let size = u64::try_from(f.size()).unwrap_or(u64::MAX);
            // Only paths as mailflow writes them, which need no escaping in the log: a remove
            // must name its file exactly as the add did, and the log's raw path is not at hand.
            let plain = path
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.=/".contains(&b));
            if now.saturating_sub(f.modification_time()) < age
                || size >= options.target_bytes / 2
                || !plain
            {
                continue;
            }
            found.push((format!("{table}/{path}"), size, f.remove_action(false)));
        }
        found.sort_by(|a, b| a.0.cmp(&b.0));
        let footers: Vec<_> = futures::stream::iter(
            found
                .iter()
                .map(|(key, size, _)| self.metadata_async(key, *size)),
        )
        .buffered(16)
        .try_collect()
        .await?;
        let mut removes: HashMap<String, Remove> = HashMap::new();
        let mut partitions: BTreeMap<String, Vec<Candidate>> = BTreeMap::new();
        for ((key, bytes, remove), meta) in found.into_iter().zip(footers) {
            let file = meta.file_metadata();
            let schema = parquet::arrow::parquet_to_arrow_schema(
                file.schema_descr(),
                file.key_value_metadata(),
            )
            .map_err(|e| self.err(format!("footer of {key}"), e))?;
            let dir = key.rsplit_once('/').map_or("", |(d, _)| d).to_string();
            partitions.entry(dir).or_default().push(Candidate {
                path: PathBuf::from(&key),
                bytes,
                schema: Arc::new(Schema::new(schema.fields().clone())),
            });
            removes.insert(key, remove);
        }
        let mut merged = Vec::new();
        let mut seq = 0u64;
        for (dir, files) in partitions {
            for (schema, files) in by_schema(files) {
                for bin in bins(files, options.target_bytes) {
                    seq += 1;
                    let m = self
                        .merge(
                            table,
                            &dir,
                            (id, seq),
                            &schema,
                            &bin,
                            &removes,
                            scratch,
                            options,
                        )
                        .await;
                    match m {
                        Ok(m) => merged.push(m),
                        Err(e) => {
                            self.discard(&merged).await;
                            return Err(e);
                        }
                    }
                }
            }
        }
        self.commit_compaction(table, merged, options, report).await
    }

    /// Writes one bin's files as one, in `scratch`, and uploads it next to them.
    #[allow(clippy::too_many_arguments)]
    async fn merge(
        &self,
        table: &str,
        dir: &str,
        (id, seq): (&str, u64),
        schema: &SchemaRef,
        bin: &[Candidate],
        removes: &HashMap<String, Remove>,
        scratch: &Path,
        options: &CompactOptions,
    ) -> Result<Merged, Error> {
        let name = format!("part-{id}-{seq:06}.parquet");
        let temp = scratch.join(format!(".compact-{id}-{seq:06}.parquet"));
        let out = ParquetFile::create(
            scratch.join(&name),
            temp.clone(),
            Arc::clone(schema),
            &options.parquet,
        )?;
        let result = async {
            let mut merger = Merger::new(out, schema);
            for c in bin {
                let key = c.path.to_string_lossy();
                let read =
                    |e: object_store::Error| self.err(format!("reading {key}"), store_error(&e));
                let bytes = self
                    .store()
                    .get(&self.location.path(&key))
                    .await
                    .map_err(read)?
                    .bytes()
                    .await
                    .map_err(read)?;
                merger.add(bytes, &c.path)?;
            }
            let done = merger.finish()?;
            let first = &removes[&*bin[0].path.to_string_lossy()];
            let partition_values = first.partition_values.clone().unwrap_or_default();
            let value = |k: &str| {
                partition_values
                    .get(k)
                    .cloned()
                    .flatten()
                    .unwrap_or_default()
            };
            let key = format!("{dir}/{name}");
            let staged = Staged {
                table: table.to_string(),
                temp_path: done.temp_path.clone(),
                relative: key.clone(),
                partition: [value("date"), value("server")],
                rows: done.committed.rows,
                bytes: done.committed.bytes,
                schema: Arc::clone(schema),
            };
            self.upload(&staged).await?;
            let under_table = key
                .strip_prefix(&format!("{table}/"))
                .unwrap_or(&key)
                .to_string();
            Ok(Merged {
                add: Add {
                    path: under_table,
                    partition_values,
                    size: i64::try_from(done.committed.bytes).unwrap_or(i64::MAX),
                    modification_time: now_ms(),
                    data_change: false,
                    stats: Some(format!("{{\"numRecords\":{}}}", done.committed.rows)),
                    tags: None,
                    deletion_vector: None,
                    base_row_id: None,
                    default_row_commit_version: None,
                    clustering_provider: None,
                },
                removes: bin
                    .iter()
                    .map(|c| removes[&*c.path.to_string_lossy()].clone())
                    .collect(),
                key,
                bytes_in: bin.iter().map(|c| c.bytes).sum(),
            })
        }
        .await;
        let _ = std::fs::remove_file(&temp);
        result
    }

    /// Commits a table's merged files in one transaction; see [`ObjectLake::compact`].
    async fn commit_compaction(
        &self,
        table: &str,
        mut merged: Vec<Merged>,
        options: &CompactOptions,
        report: &mut CompactReport,
    ) -> Result<(), Error> {
        let mut attempt = 0;
        loop {
            let loaded = match self.load(table).await {
                Ok(Some(t)) => t,
                Ok(None) => return Err(self.err(format!("table {table}"), "vanished")),
                Err(e) => {
                    self.discard(&merged).await;
                    return Err(e);
                }
            };
            let snapshot = loaded
                .snapshot()
                .map_err(|e| self.err(format!("table {table}"), e))?;
            let current: HashSet<String> = snapshot
                .log_data()
                .iter()
                .map(|f| f.path().into_owned())
                .collect();
            let (live, gone): (Vec<Merged>, Vec<Merged>) = merged
                .into_iter()
                .partition(|m| m.removes.iter().all(|r| current.contains(&r.path)));
            self.discard(&gone).await;
            merged = live;
            if merged.is_empty() {
                return Ok(());
            }
            let actions: Vec<Action> = merged
                .iter()
                .flat_map(|m| {
                    std::iter::once(Action::Add(m.add.clone()))
                        .chain(m.removes.iter().cloned().map(Action::Remove))
                })
                .collect();
            // No retries by the library: its conflict check passes a concurrent compaction of
            // the same files. A lost race comes back here, to be checked against the new
            // version.
            let properties = CommitProperties::default()
                .with_max_retries(0)
                .with_metadata([
                    (
                        "mailflow.version".to_string(),
                        serde_json::json!(env!("CARGO_PKG_VERSION")),
                    ),
                    (
                        "mailflow.operation".to_string(),
                        serde_json::json!("compact"),
                    ),
                ]);
            let operation = DeltaOperation::Optimize {
                predicate: None,
                target_size: i64::try_from(options.target_bytes).unwrap_or(i64::MAX),
            };
            let committed = CommitBuilder::from(properties)
                .with_actions(actions)
                .build(Some(snapshot), loaded.log_store(), operation)
                .await;
            match committed {
                Ok(_) => break,
                Err(e) if lost_race(&e) && attempt < 100 => attempt += 1,
                Err(e) => {
                    self.discard(&merged).await;
                    return Err(self.err(format!("committing the compaction of {table}"), e));
                }
            }
        }
        let dirs: HashSet<&str> = merged
            .iter()
            .map(|m| m.key.rsplit_once('/').map_or("", |(d, _)| d))
            .collect();
        report.partitions += dirs.len();
        for m in &merged {
            report.files_in += m.removes.len();
            report.files_out += 1;
            report.bytes_in += m.bytes_in;
            report.bytes_out += u64::try_from(m.add.size).unwrap_or(0);
            report.rows += m
                .add
                .stats
                .as_deref()
                .and_then(|s| serde_json::from_str::<serde_json::Value>(s).ok())
                .and_then(|v| v["numRecords"].as_u64())
                .unwrap_or(0);
        }
        Ok(())
    }

    /// Removes merged files no commit will name (best effort: what is left, vacuum removes).
    async fn discard(&self, merged: &[Merged]) {
        for m in merged {
            if let Err(e) = self.store().delete(&self.location.path(&m.key)).await {
                tracing::warn!(key = %m.key, error = %store_error(&e), "leaving an uncommitted merged file to vacuum");
            }
        }
    }

    /// Removes files no current version of each table names, once they are `older_than`
    /// (at least [`MIN_RETENTION`]): files compaction replaced, and files of uploads that
    /// never committed. Interrupted epochs' journals are committed first (those of other
    /// writers once [`ABANDONED`]), so that no file an epoch is about to commit is removed. With
    /// `dry_run`, only lists them.
    ///
    /// Readers can no longer time-travel to versions that named the removed files.
    pub fn vacuum(
        &self,
        tables: &[&str],
        older_than: std::time::Duration,
        dry_run: bool,
    ) -> Result<VacuumReport, Error> {
        self.vacuum_at(tables, older_than, dry_run, None)
    }

    /// [`ObjectLake::vacuum`] as of the time `clock` tells (the tests' way to age files).
    fn vacuum_at(
        &self,
        tables: &[&str],
        older_than: std::time::Duration,
        dry_run: bool,
        clock: Option<Arc<dyn deltalake_core::operations::vacuum::Clock>>,
    ) -> Result<VacuumReport, Error> {
        if self.layout == Layout::Files {
            return Err(self.err(
                "vacuum",
                "plain Parquet files have no log: every file present is current",
            ));
        }
        if older_than < MIN_RETENTION {
            return Err(self.err(
                "vacuum",
                format!(
                    "a retention of {} is too short: the shortest is {} (readers read the version they started on; writers commit what they uploaded)",
                    humantime::format_duration(older_than),
                    humantime::format_duration(MIN_RETENTION)
                ),
            ));
        }
        let mut report = VacuumReport {
            journals_replayed: if dry_run { 0 } else { self.recover()? },
            ..VacuumReport::default()
        };
        let retention = chrono::Duration::from_std(older_than).unwrap_or(chrono::Duration::MAX);
        self.io.block_on(async {
            for table in tables {
                let Some(loaded) = self.load(table).await? else {
                    continue;
                };
                let mut builder = loaded.vacuum();
                if let Some(c) = &clock {
                    builder = builder.with_clock(Arc::clone(c));
                }
                let (_, metrics) = builder
                    .with_mode(deltalake_core::operations::vacuum::VacuumMode::Full)
                    .with_retention_period(retention)
                    .with_enforce_retention_duration(false)
                    .with_dry_run(dry_run)
                    .await
                    .map_err(|e| self.err(format!("vacuuming table {table}"), e))?;
                let prefix = format!("{}/", self.location.path(table));
                let files: Vec<String> = metrics
                    .files_deleted
                    .into_iter()
                    .map(|f| f.strip_prefix(&prefix).map(str::to_string).unwrap_or(f))
                    .collect();
                if !files.is_empty() {
                    report.files.insert(table.to_string(), files);
                }
                self.lock_tables().remove(*table);
            }
            Ok::<_, Error>(())
        })?;
        Ok(report)
    }
}

/// Whether a commit failed only because another commit took its version.
fn lost_race(e: &DeltaTableError) -> bool {
    use deltalake_core::kernel::transaction::TransactionError;
    matches!(
        e,
        DeltaTableError::VersionAlreadyExists(_)
            | DeltaTableError::Transaction {
                source: TransactionError::MaxCommitAttempts(_)
                    | TransactionError::VersionAlreadyExists(_)
            }
    )
}

/// The partition values of a key under the lake, `<table>/date=…/server=…/part-….parquet`, as
/// the folder names hold them (escaped); `None` for a key outside that layout.
pub fn partition_of(key: &str) -> Option<(&str, &str)> {
    let mut parts = key.split('/').skip(1);
    let date = parts.next()?.strip_prefix("date=")?;
    let server = parts.next()?.strip_prefix("server=")?;
    Some((date, server))
}

/// The writer's application id in Delta's `txn` actions.
fn runtime_error(location: &ObjectLocation, e: &std::io::Error) -> Error {
    Error::Store {
        location: shown(&location.url),
        reason: format!("starting the I/O runtime: {e}"),
    }
}

/// A test hook's number from the environment; unset (as outside the tests) or not a number,
/// none.
fn test_hook<T: std::str::FromStr>(name: &str) -> Option<T> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

fn app_id(writer: &str) -> String {
    format!("mailflow-{writer}")
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// A table's Delta schema: the files' columns as Delta types, then the partition columns.
/// Dictionary columns are their values; timestamps are Delta's (microseconds, UTC), which
/// readers take from the files' milliseconds.
pub fn delta_schema(schema: &Schema) -> Result<StructType, String> {
    let mut fields: Vec<Field> = schema
        .fields()
        .iter()
        .filter(|f| !PARTITIONS.contains(&f.name().as_str()))
        .map(|f| plain(f))
        .collect();
    fields.push(Field::new("date", DataType::Date32, true));
    fields.push(Field::new("server", DataType::Utf8, true));
    (&Schema::new(fields))
        .try_into_kernel()
        .map_err(|e| e.to_string())
}

fn plain(f: &Field) -> Field {
    let t = match f.data_type() {
        DataType::Dictionary(_, v) => plain(&Field::new(f.name(), (**v).clone(), true))
            .data_type()
            .clone(),
        DataType::Timestamp(_, Some(_)) => {
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
        }
        DataType::Timestamp(_, None) => DataType::Timestamp(TimeUnit::Microsecond, None),
        DataType::Utf8View | DataType::LargeUtf8 => DataType::Utf8,
        DataType::List(inner) => DataType::List(Arc::new(plain(inner))),
        DataType::LargeList(inner) => DataType::List(Arc::new(plain(inner))),
        DataType::Struct(fs) => DataType::Struct(Fields::from(
            fs.iter().map(|c| plain(c)).collect::<Vec<_>>(),
        )),
        DataType::Map(entries, sorted) => DataType::Map(Arc::new(plain(entries)), *sorted),
        other => other.clone(),
    };
    Field::new(f.name(), t, f.is_nullable()).with_metadata(f.metadata().clone())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow_array::{ArrayRef, Int64Array, RecordBatch, StringArray, TimestampMillisecondArray};

    use super::*;
    use crate::lake::{LakeOptions, LakeWriter, Source};
    use crate::store::Location;

    const JAN14: i64 = 1_736_812_800_000; // 2025-01-14T00:00:00Z

    fn batch(offsets: std::ops::Range<i64>) -> RecordBatch {
        batch_at(JAN14, offsets)
    }

    fn batch_at(time: i64, offsets: std::ops::Range<i64>) -> RecordBatch {
        let schema =
            crate::testing::lineage_schema(vec![Field::new("source_file", DataType::Utf8, false)]);
        let n = offsets.clone().count();
        let cols: Vec<ArrayRef> = vec![
            Arc::new(TimestampMillisecondArray::from(vec![time; n]).with_timezone("UTC")),
            Arc::new(StringArray::from(vec!["EX01"; n])),
            Arc::new(Int64Array::from_iter_values(offsets)),
            Arc::new(StringArray::from(vec!["a.log"; n])),
        ];
        RecordBatch::try_new(schema, cols).unwrap()
    }

    fn lake(root: &Path, staging: &Path) -> Arc<ObjectLake> {
        let Location::Object(o) = Location::local_as_object(root).unwrap() else {
            panic!("not an object location")
        };
        ObjectLake::open(o, staging, Layout::Delta).unwrap()
    }

    /// Writes `offsets` of source `a` through a writer staging in `staging`, and returns the
    /// files it left there (committed when `commit`).
    fn write(lake: &Arc<ObjectLake>, staging: &Path, offsets: std::ops::Range<i64>) {
        let mut w = LakeWriter::new(staging, LakeOptions::default())
            .unwrap()
            .with_object_lake(Arc::clone(lake));
        let source = Source {
            fingerprint: "fp-a",
            file: "a.log",
            end_offset: offsets.end as u64,
        };
        w.write(&source, &[("t", &batch(offsets))]).unwrap();
        let committed = w.close().unwrap();
        assert_eq!(committed.len(), 1);
        assert!(
            committed[0].path.to_string_lossy().starts_with("file:///"),
            "{:?}",
            committed[0].path
        );
    }

    #[test]
    fn epochs_commit_as_delta_transactions_and_footers_say_what_is_held() {
        let dir = tempfile::tempdir().unwrap();
        let (root, staging) = (dir.path().join("lake"), dir.path().join("staging"));
        let delta = lake(&root, &staging);
        write(&delta, &staging, 0..10);
        write(&delta, &staging, 10..25);
        let files = delta.files("t").unwrap();
        assert_eq!(files.len(), 2, "{files:?}");
        assert!(
            files
                .iter()
                .all(|(k, _)| k.starts_with("t/date=2025-01-14/server=EX01/part-")),
            "{files:?}"
        );
        assert!(root.join("t/_delta_log/00000000000000000002.json").exists());
        let held = delta.holdings(&["t", "absent"], |_| true).unwrap();
        assert_eq!(held.sources["fp-a"].end_offset, 25);
        assert_eq!(held.sources["fp-a"].rows, 25);
        // The staging folder keeps nothing once an epoch is committed.
        let left: Vec<_> = walkdir::WalkDir::new(&staging)
            .into_iter()
            .filter_map(Result::ok)
            .filter(|e| {
                e.file_type().is_file() && e.path().extension().is_some_and(|x| x == "parquet")
            })
            .collect();
        assert!(left.is_empty(), "{left:?}");
        // The table's Delta schema has the partition columns, typed.
        let table = delta.io.block_on(delta.load("t")).unwrap().unwrap();
        let schema = table.snapshot().unwrap().schema();
        assert!(schema.field("date").is_some() && schema.field("server").is_some());
        assert!(schema.field("source_offset").is_some());
    }

    #[test]
    fn plain_files_are_listed_by_the_dates_kept() {
        let dir = tempfile::tempdir().unwrap();
        let (root, staging) = (dir.path().join("lake"), dir.path().join("staging"));
        let Location::Object(o) = Location::local_as_object(&root).unwrap() else {
            panic!("not an object location")
        };
        assert_eq!(ObjectLake::layout_at(&o, &["t"]).unwrap(), None);
        let lake = ObjectLake::open(o.clone(), &staging, Layout::Files).unwrap();
        write(&lake, &staging, 0..10);
        let mut w = LakeWriter::new(&staging, LakeOptions::default())
            .unwrap()
            .with_object_lake(Arc::clone(&lake));
        let source = Source {
            fingerprint: "fp-a",
            file: "a.log",
            end_offset: 20,
        };
        w.write(&source, &[("t", &batch_at(JAN14 + 86_400_000, 10..20))])
            .unwrap();
        w.close().unwrap();
        // No log: the files are where a listing finds them, and no upload record is left.
        assert!(!root.join("t/_delta_log").exists());
        assert_eq!(parquet_files_in(&root.join("_mailflow")), 0);
        assert_eq!(lake.files("t").unwrap().len(), 2);
        let day = lake.files_where("t", |d| d == "2025-01-15").unwrap();
        assert_eq!(day.len(), 1, "{day:?}");
        assert!(
            day[0].0.starts_with("t/date=2025-01-15/server=EX01/part-"),
            "{day:?}"
        );
        assert!(lake.files_where("t", |_| false).unwrap().is_empty());
        let held = lake.holdings(&["t"], |_| true).unwrap();
        assert_eq!(held.sources["fp-a"].end_offset, 20);
        assert_eq!(held.sources["fp-a"].rows, 20);
        assert_eq!(
            ObjectLake::layout_at(&o, &["t"]).unwrap(),
            Some(Layout::Files)
        );
        // Plain files are neither compacted nor vacuumed in place.
        let options = CompactOptions::default();
        assert!(
            lake.compact(&["t"], &dir.path().join("scratch"), &options)
                .is_err()
        );
        assert!(lake.vacuum(&["t"], MIN_RETENTION, true).is_err());
    }

    /// The offsets of every row in the table's current files, sorted.
    fn offsets(delta: &ObjectLake) -> Vec<i64> {
        use arrow_array::cast::AsArray;
        let mut out = Vec::new();
        for (key, _) in delta.files("t").unwrap() {
            let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReader::try_new(
                delta.read(&key).unwrap(),
                1024,
            )
            .unwrap();
            for b in reader {
                let b = b.unwrap();
                let col = b.column_by_name("source_offset").unwrap();
                out.extend(col.as_primitive::<arrow_array::types::Int64Type>().values());
            }
        }
        out.sort_unstable();
        out
    }

    fn parquet_files_in(dir: &Path) -> usize {
        walkdir::WalkDir::new(dir)
            .into_iter()
            .filter_map(Result::ok)
            .filter(|e| e.path().extension().is_some_and(|x| x == "parquet"))
            .count()
    }

    #[derive(Debug)]
    struct Later(i64);

    impl deltalake_core::operations::vacuum::Clock for Later {
        fn current_timestamp_millis(&self) -> i64 {
            now_ms() + self.0
        }
    }

    #[test]
    fn compaction_commits_once_even_when_two_run_at_once_and_vacuum_removes_what_it_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let (root, staging) = (dir.path().join("lake"), dir.path().join("staging"));
        let delta = lake(&root, &staging);
        for k in 0..6 {
            write(&delta, &staging, k * 10..(k + 1) * 10);
        }
        assert_eq!(delta.files("t").unwrap().len(), 6);
        let before = delta.holdings(&["t"], |_| true).unwrap();
        let options = CompactOptions {
            older_than: std::time::Duration::ZERO,
            ..CompactOptions::default()
        };
        // Two compactions from two handles at once: whichever commits second finds its inputs
        // gone and drops its merged file; every row stays in exactly one current file.
        let other = lake(&root, &dir.path().join("staging2"));
        let (a, b) = std::thread::scope(|s| {
            let h = s.spawn(|| {
                other
                    .compact(&["t"], &dir.path().join("scratch2"), &options)
                    .unwrap()
            });
            let a = delta
                .compact(&["t", "absent"], &dir.path().join("scratch"), &options)
                .unwrap();
            (a, h.join().unwrap())
        });
        assert_eq!(a.files_out + b.files_out, 1, "{a:?} {b:?}");
        assert_eq!(a.files_in + b.files_in, 6);
        assert_eq!(a.rows + b.rows, 60);
        assert_eq!(delta.files("t").unwrap().len(), 1);
        assert_eq!(offsets(&delta), (0..60).collect::<Vec<_>>());
        let after = delta.holdings(&["t"], |_| true).unwrap();
        assert_eq!(after.sources, before.sources);
        assert_eq!(after.row_files["a.log"].len(), 1);
        // The replaced files stay for readers of older versions; the loser's file is gone.
        let partition = root.join("t/date=2025-01-14/server=EX01");
        assert_eq!(parquet_files_in(&partition), 7);
        assert_eq!(parquet_files_in(&dir.path().join("scratch")), 0);
        // The commit says what it was, and changes no data.
        let log = std::fs::read_dir(root.join("t/_delta_log"))
            .unwrap()
            .filter_map(Result::ok)
            .map(|e| std::fs::read_to_string(e.path()).unwrap())
            .find(|c| c.contains("OPTIMIZE"))
            .unwrap();
        assert_eq!(log.matches("\"remove\"").count(), 6, "{log}");
        assert!(!log.contains("\"dataChange\":true"), "{log}");
        // Nothing left to merge.
        let again = delta.compact(&["t"], &dir.path().join("scratch"), &options);
        assert_eq!(again.unwrap().files_out, 0);

        // Vacuum: a retention under an hour is refused; files younger than it are kept.
        let short = delta.vacuum(&["t"], std::time::Duration::from_secs(600), false);
        assert!(short.unwrap_err().to_string().contains("too short"));
        let hour = std::time::Duration::from_secs(3600);
        assert!(delta.vacuum(&["t"], hour, false).unwrap().files.is_empty());
        // Two hours on, the replaced files and a stray upload go; the current file stays.
        std::fs::write(partition.join("part-stray.parquet"), b"PAR1").unwrap();
        let later: Arc<dyn deltalake_core::operations::vacuum::Clock> = Arc::new(Later(7_200_000));
        let dry = delta
            .vacuum_at(&["t"], hour, true, Some(Arc::clone(&later)))
            .unwrap();
        assert_eq!(dry.files["t"].len(), 7, "{dry:?}");
        assert_eq!(parquet_files_in(&partition), 8);
        let done = delta.vacuum_at(&["t"], hour, false, Some(later)).unwrap();
        assert_eq!(done.files["t"].len(), 7, "{done:?}");
        assert_eq!(parquet_files_in(&partition), 1);
        assert_eq!(offsets(&delta), (0..60).collect::<Vec<_>>());
    }

    fn staged(dir: &Path, name: &str, offsets: std::ops::Range<i64>) -> Staged {
        let b = batch(offsets);
        let b = b.project(&[0, 2, 3]).unwrap();
        let path = dir.join(name);
        let mut w = parquet::arrow::ArrowWriter::try_new(
            std::fs::File::create(&path).unwrap(),
            b.schema(),
            None,
        )
        .unwrap();
        w.write(&b).unwrap();
        w.close().unwrap();
        Staged {
            table: "t".into(),
            temp_path: path.clone(),
            relative: format!("t/date=2025-01-14/server=EX01/{name}"),
            partition: ["2025-01-14".into(), "EX01".into()],
            rows: b.num_rows() as u64,
            bytes: std::fs::metadata(&path).unwrap().len(),
            schema: b.schema(),
        }
    }

    #[test]
    fn a_journal_left_by_a_killed_epoch_is_committed_once_by_its_own_staging_only() {
        let dir = tempfile::tempdir().unwrap();
        let (root, staging) = (dir.path().join("lake"), dir.path().join("staging"));
        std::fs::create_dir_all(&staging).unwrap();
        let delta = lake(&root, &staging);
        write(&delta, &staging, 0..10);
        // Uploaded and journaled, then killed before any table's commit.
        let f = staged(&staging, "part-w1-1.parquet", 10..20);
        delta
            .io
            .block_on(delta.stage("w1", 1, std::slice::from_ref(&f)))
            .unwrap();
        assert_eq!(
            delta.files("t").unwrap().len(),
            1,
            "not visible before its commit"
        );
        // Another machine's writer may still be committing its journal: left alone.
        let other = lake(&root, &dir.path().join("elsewhere"));
        assert_eq!(other.recover().unwrap(), 0);
        assert_eq!(delta.files("t").unwrap().len(), 1);
        // Its own staging's next start commits it, once.
        assert_eq!(delta.recover().unwrap(), 1);
        assert_eq!(delta.files("t").unwrap().len(), 2);
        assert_eq!(delta.recover().unwrap(), 0);
        // A journal whose tables are in (killed after the commits, before removing it) commits
        // nothing again.
        let g = staged(&staging, "part-w1-2.parquet", 20..30);
        let (journal, _) = delta
            .io
            .block_on(delta.stage("w1", 2, std::slice::from_ref(&g)))
            .unwrap();
        delta
            .io
            .block_on(delta.commit(&journal, "t", None, false))
            .unwrap();
        assert_eq!(delta.recover().unwrap(), 1);
        assert_eq!(delta.files("t").unwrap().len(), 3);
    }

    #[test]
    fn a_file_over_one_part_is_uploaded_in_parts_and_arrives_whole() {
        use arrow_array::BinaryArray;
        let dir = tempfile::tempdir().unwrap();
        let (root, staging) = (dir.path().join("lake"), dir.path().join("staging"));
        std::fs::create_dir_all(&staging).unwrap();
        let delta = lake(&root, &staging);
        // Incompressible bytes (xorshift), two and a half parts' worth.
        let mut x = 0x2545_f491_4f6c_dd1d_u64;
        let blob: Vec<u8> = (0..PART * 5 / 2)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        let schema = Arc::new(Schema::new(vec![Field::new("b", DataType::Binary, false)]));
        let b = RecordBatch::try_new(
            Arc::clone(&schema),
            vec![Arc::new(BinaryArray::from(vec![blob.as_slice()]))],
        )
        .unwrap();
        let path = staging.join("part-big-1.parquet");
        let mut w = parquet::arrow::ArrowWriter::try_new(
            std::fs::File::create(&path).unwrap(),
            schema,
            None,
        )
        .unwrap();
        w.write(&b).unwrap();
        w.close().unwrap();
        let local = std::fs::read(&path).unwrap();
        assert!(local.len() > 2 * PART);
        let f = Staged {
            table: "big".into(),
            temp_path: path,
            relative: "big/date=2025-01-14/server=EX01/part-big-1.parquet".into(),
            partition: ["2025-01-14".into(), "EX01".into()],
            rows: 1,
            bytes: local.len() as u64,
            schema: b.schema(),
        };
        delta.publish("big", 1, &[f]).unwrap();
        let files = delta.files("big").unwrap();
        assert_eq!(files.len(), 1);
        let remote = delta.read(&files[0].0).unwrap();
        assert!(
            remote.as_ref() == local.as_slice(),
            "the uploaded bytes differ"
        );
    }

    #[test]
    fn partitions_of_keys() {
        assert_eq!(
            partition_of("t/date=2025-01-14/server=EX01/part-a-1.parquet"),
            Some(("2025-01-14", "EX01"))
        );
        assert_eq!(partition_of("t/part-a-1.parquet"), None);
        assert_eq!(
            partition_of("t/server=EX01/date=2025-01-14/x.parquet"),
            None
        );
    }

    #[test]
    fn delta_types_of_mailflow_columns() {
        let schema = Schema::new(vec![
            Field::new(
                "timestamp",
                DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())),
                true,
            ),
            Field::new(
                "source_file",
                DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8)),
                false,
            ),
            Field::new("server", DataType::Utf8, false),
        ]);
        let delta = delta_schema(&schema).unwrap();
        let names: Vec<&str> = delta.fields().map(|f| f.name().as_str()).collect();
        assert_eq!(names, ["timestamp", "source_file", "date", "server"]);
        let json = serde_json::to_string(&delta).unwrap();
        assert!(json.contains("\"timestamp\""), "{json}");
        assert!(json.contains("\"date\""), "{json}");
    }
}
