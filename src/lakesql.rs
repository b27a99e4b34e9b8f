//! The lake as SQL tables, for `mailflow query` and `mailflow report`: every table of a lake
//! registered by name in an embedded DataFusion session, its Hive partitions (`date`, `server`)
//! as columns, and partitions pruned before a file is opened.
//!
//! The table provider is mailflow's own rather than DataFusion's `ListingTable`, because the
//! lake knows its layout:
//! - it lists only the partitions a scope names (a week's report on a year-long lake lists the
//!   table folder and that week's seven date folders, not a year of files), then prunes further
//!   with the query's own conditions on `date` and `server`;
//! - it reads committed `part-*.parquet` files only, never a writer's hidden temporaries;
//! - a file whose footer cannot be read, or that holds a column in a type this build cannot read
//!   as its own, is left out and named ([`LakeTable::survey`]) instead of failing every query
//!   that touches its partition.
//!
//! A Delta lake (a folder whose tables have a `_delta_log`, or an object store URL) is read the
//! same way, except that a table's files are those its log names now (`mailflow_sinks::object_lake`),
//! read from the lake's object store, registered with the session.
//!
//! Files written by an older mailflow may lack columns added since: they read as nulls.

use std::collections::{BTreeSet, HashSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use arrow_schema::{DataType, Field, FieldRef, Schema, SchemaRef};
use async_trait::async_trait;
use chrono::NaiveDate;
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::{DFSchema, ScalarValue};
use datafusion::datasource::TableType;
use datafusion::datasource::file_format::FileFormat;
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::PartitionedFile;
use datafusion::datasource::listing::helpers::{expr_applicable_for_cols, filter_partitioned_file};
use datafusion::datasource::physical_plan::{FileGroup, FileScanConfigBuilder};
use datafusion::datasource::table_schema::TableSchema;
use datafusion::execution::object_store::ObjectStoreUrl;
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown};
use datafusion::object_store::ObjectMeta;
use datafusion::object_store::path::Path as StorePath;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::empty::EmptyExec;
use datafusion::prelude::{SessionConfig, SessionContext};
use mailflow_sinks::lake::partition::unescape_value;
use parquet::arrow::parquet_to_arrow_schema;
use parquet::file::reader::{FileReader, SerializedFileReader};

use crate::ingest::table_schemas;

/// The partition columns, as every table has them.
pub const PARTITION_COLUMNS: [&str; 2] = ["date", "server"];

/// Memory the SQL engine may hold before it spills sorts and aggregations to disk.
const MEMORY_LIMIT: usize = 1 << 30;

/// Which partitions to read: days (UTC, inclusive) and servers. Empty means all.
#[derive(Debug, Clone, Default)]
pub struct Scope {
    /// First day.
    pub since: Option<NaiveDate>,
    /// Last day.
    pub until: Option<NaiveDate>,
    /// Servers, as the rows name them (case-insensitive).
    pub servers: Vec<String>,
}

impl Scope {
    fn keeps_date(&self, d: NaiveDate) -> bool {
        self.since.is_none_or(|s| d >= s) && self.until.is_none_or(|u| d <= u)
    }

    fn keeps_server(&self, server: &str) -> bool {
        self.servers.is_empty() || self.servers.iter().any(|s| s.eq_ignore_ascii_case(server))
    }
}

/// One `date=…/server=…` partition.
#[derive(Debug, Clone)]
struct Partition {
    date: NaiveDate,
    server: String,
    files: PartFiles,
}

/// Where a partition's files are found.
#[derive(Debug, Clone)]
enum PartFiles {
    /// A local lake's folder, listed when a query reads it.
    Folder(PathBuf),
    /// A Delta table's current files in the partition, from its log: keys under the store
    /// root with their sizes. Nothing is listed; files no commit names are never read.
    Listed(Vec<(PathBuf, u64)>),
}

impl Partition {
    fn files(&self) -> Result<Vec<(PathBuf, u64)>> {
        match &self.files {
            PartFiles::Folder(dir) => part_files(dir),
            PartFiles::Listed(files) => Ok(files.clone()),
        }
    }
}

/// The object store a Delta lake's files are read from, and how the lake names them.
#[derive(Debug, Clone)]
struct DeltaFiles {
    /// The store's root URL, as registered with the engine.
    root: String,
}

/// A file the scope holds, with its footer's row count.
#[derive(Debug, Clone)]
pub struct FileInfo {
    /// Its path.
    pub path: PathBuf,
    /// Its size in bytes.
    pub bytes: u64,
    /// Rows, from its footer.
    pub rows: u64,
    /// Its partition's day.
    pub date: NaiveDate,
    /// Its partition's server.
    pub server: String,
}

/// What [`LakeTable::survey`] found: the files a query of the scope reads, and those left out.
#[derive(Debug, Clone, Default)]
pub struct Survey {
    /// Readable files.
    pub files: Vec<FileInfo>,
    /// Files left out, with why.
    pub unreadable: Vec<(PathBuf, String)>,
}

/// One table of the lake, as DataFusion reads it.
#[derive(Debug)]
pub struct LakeTable {
    name: &'static str,
    /// Columns in the files: the table's, without `server` (a partition column only).
    file_schema: SchemaRef,
    /// The file columns, then `date` and `server`.
    schema: SchemaRef,
    partitions: Vec<Partition>,
    /// Files [`LakeTable::survey`] found unreadable.
    excluded: HashSet<PathBuf>,
    /// For a Delta lake, the store its files are read from.
    delta: Option<DeltaFiles>,
}

fn partition_fields() -> Vec<FieldRef> {
    vec![
        Arc::new(Field::new("date", DataType::Date32, false)),
        Arc::new(Field::new("server", DataType::Utf8, false)),
    ]
}

impl LakeTable {
    /// The table `name` (with schema `schema`, this build's) under `root`, its partitions in
    /// `scope` listed. A table the lake does not hold yet is empty.
    pub fn open(
        root: &Path,
        name: &'static str,
        schema: &SchemaRef,
        scope: &Scope,
    ) -> Result<Self> {
        let file_fields: Vec<FieldRef> = schema
            .fields()
            .iter()
            .filter(|f| !PARTITION_COLUMNS.contains(&f.name().as_str()))
            .cloned()
            .collect();
        let file_schema = Arc::new(Schema::new(file_fields.clone()));
        let mut all = file_fields;
        all.extend(partition_fields());
        let table_schema = Arc::new(Schema::new(all));
        let partitions = list_partitions(&root.join(name), scope)?;
        Ok(Self {
            name,
            file_schema,
            schema: table_schema,
            partitions,
            excluded: HashSet::new(),
            delta: None,
        })
    }

    /// The Delta table `name` of `lake`, its current files in `scope` read from its log.
    fn open_delta(
        lake: &mailflow_sinks::object_lake::ObjectLake,
        name: &'static str,
        schema: &SchemaRef,
        scope: &Scope,
    ) -> Result<Self> {
        let mut table = Self::open(Path::new(""), name, schema, scope)?;
        let mut by_partition: std::collections::BTreeMap<(NaiveDate, String), Vec<(PathBuf, u64)>> =
            Default::default();
        let keep_date =
            |d: &str| NaiveDate::parse_from_str(d, "%Y-%m-%d").is_ok_and(|d| scope.keeps_date(d));
        for (key, size) in lake.files_where(name, keep_date)? {
            // Keys are `<table>/date=…/server=…/part-….parquet`, as mailflow commits them.
            let Some((date, server)) = mailflow_sinks::object_lake::partition_of(&key) else {
                tracing::warn!(file = %lake.shown_key(&key), "not in a date=…/server=… partition: left out");
                continue;
            };
            let Ok(date) = NaiveDate::parse_from_str(date, "%Y-%m-%d") else {
                continue;
            };
            let server = unescape_value(server);
            if scope.keeps_date(date) && scope.keeps_server(&server) {
                by_partition
                    .entry((date, server))
                    .or_default()
                    .push((PathBuf::from(lake.store_path(&key).to_string()), size));
            }
        }
        table.partitions = by_partition
            .into_iter()
            .map(|((date, server), files)| Partition {
                date,
                server,
                files: PartFiles::Listed(files),
            })
            .collect();
        table.delta = Some(DeltaFiles {
            root: lake.store_root().0.to_string(),
        });
        Ok(table)
    }

    /// [`LakeTable::survey`] of a Delta table: footers read from the store.
    fn survey_delta(&mut self, lake: &mailflow_sinks::object_lake::ObjectLake) -> Result<Survey> {
        let mut survey = Survey::default();
        for p in &self.partitions {
            let files = p.files()?;
            // Keys relative to the lake, as the lake reads them.
            let keys: Vec<(String, u64)> = files
                .iter()
                .map(|(path, size)| (lake_key_of(lake, path), *size))
                .collect();
            for (((path, bytes), (key, _)), meta) in
                files.into_iter().zip(&keys).zip(lake.metadata(&keys))
            {
                let shown = PathBuf::from(lake.shown_key(key));
                match meta
                    .map_err(|e| e.to_string())
                    .and_then(|m| rows_if_readable(m.file_metadata(), &self.file_schema))
                {
                    Ok(rows) => survey.files.push(FileInfo {
                        path: shown,
                        bytes,
                        rows,
                        date: p.date,
                        server: p.server.clone(),
                    }),
                    Err(why) => {
                        self.excluded.insert(path);
                        survey.unreadable.push((shown, why));
                    }
                }
            }
        }
        Ok(survey)
    }

    /// Its name.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// Reads the footer of every file in scope: row counts for the report's account of its
    /// input, and the files no query can read, which are left out of this table from now on.
    pub fn survey(&mut self) -> Result<Survey> {
        let mut survey = Survey::default();
        for p in &self.partitions {
            for (path, bytes) in p.files()? {
                match footer_rows(&path, &self.file_schema) {
                    Ok(rows) => survey.files.push(FileInfo {
                        path,
                        bytes,
                        rows,
                        date: p.date,
                        server: p.server.clone(),
                    }),
                    Err(why) => survey.unreadable.push((path, why)),
                }
            }
        }
        self.excluded
            .extend(survey.unreadable.iter().map(|(p, _)| p.clone()));
        Ok(survey)
    }

    /// Partitions whose values pass every filter that names partition columns only.
    fn pruned(&self, filters: &[Expr]) -> datafusion::common::Result<Vec<&Partition>> {
        let names = PARTITION_COLUMNS;
        let filters: Vec<Expr> = filters
            .iter()
            .filter(|f| expr_applicable_for_cols(&names, f))
            .cloned()
            .collect();
        if filters.is_empty() {
            return Ok(self.partitions.iter().collect());
        }
        let df_schema = DFSchema::from_unqualified_fields(
            partition_fields()
                .iter()
                .map(|f| f.as_ref().clone().with_nullable(true))
                .collect(),
            Default::default(),
        )?;
        let mut kept = Vec::new();
        for p in &self.partitions {
            // One stand-in file per partition: the filters are evaluated on its values once,
            // before its folder is listed.
            let probe = PartitionedFile::new("probe", 0).with_partition_values(values(p));
            if filter_partitioned_file(probe, &filters, &df_schema)?.is_some() {
                kept.push(p);
            }
        }
        Ok(kept)
    }
}

fn values(p: &Partition) -> Vec<ScalarValue> {
    let days = p
        .date
        .signed_duration_since(NaiveDate::default())
        .num_days();
    vec![
        ScalarValue::Date32(i32::try_from(days).ok()),
        ScalarValue::Utf8(Some(p.server.clone())),
    ]
}

#[async_trait]
impl TableProvider for LakeTable {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> datafusion::common::Result<Arc<dyn ExecutionPlan>> {
        let mut files = Vec::new();
        for p in self.pruned(filters)? {
            let listed = p
                .files()
                .map_err(|e| datafusion::error::DataFusionError::External(e.into()))?;
            for (path, bytes) in listed {
                if self.excluded.contains(&path) {
                    continue;
                }
                let location = match &self.delta {
                    // Already the file's path in its store.
                    Some(_) => StorePath::from(path.to_string_lossy().as_ref()),
                    None => StorePath::from_absolute_path(&path)
                        .map_err(|e| datafusion::error::DataFusionError::External(Box::new(e)))?,
                };
                let meta = ObjectMeta {
                    location,
                    last_modified: Default::default(),
                    size: bytes,
                    e_tag: None,
                    version: None,
                };
                files.push(PartitionedFile::new_from_meta(meta).with_partition_values(values(p)));
            }
        }
        if files.is_empty() {
            let projected = match projection {
                Some(p) => Arc::new(self.schema.project(p)?),
                None => Arc::clone(&self.schema),
            };
            return Ok(Arc::new(EmptyExec::new(projected)));
        }
        let groups = balance(files, state.config().target_partitions());
        let format = ParquetFormat::default();
        let table_schema = TableSchema::builder(Arc::clone(&self.file_schema))
            .with_table_partition_cols(partition_fields())
            .build();
        let source = format.file_source(table_schema);
        let store = match &self.delta {
            Some(d) => ObjectStoreUrl::parse(&d.root)?,
            None => ObjectStoreUrl::local_filesystem(),
        };
        let config = FileScanConfigBuilder::new(store, source)
            .with_file_groups(groups)
            .with_projection_indices(projection.cloned())?
            .with_limit(limit)
            .build();
        format.create_physical_plan(state, config).await
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> datafusion::common::Result<Vec<TableProviderFilterPushDown>> {
        Ok(filters
            .iter()
            .map(|f| {
                if expr_applicable_for_cols(&PARTITION_COLUMNS, f) {
                    TableProviderFilterPushDown::Exact
                } else {
                    TableProviderFilterPushDown::Inexact
                }
            })
            .collect())
    }
}

/// Spreads files over `n` groups (one per core), the largest first onto the lightest group.
fn balance(mut files: Vec<PartitionedFile>, n: usize) -> Vec<FileGroup> {
    let n = n.clamp(1, files.len().max(1));
    files.sort_by_key(|f| std::cmp::Reverse(f.object_meta.size));
    let mut groups: Vec<(u64, Vec<PartitionedFile>)> = (0..n).map(|_| (0, Vec::new())).collect();
    for f in files {
        if let Some(g) = groups.iter_mut().min_by_key(|g| g.0) {
            g.0 += f.object_meta.size;
            g.1.push(f);
        }
    }
    groups
        .into_iter()
        .filter(|g| !g.1.is_empty())
        .map(|g| FileGroup::new(g.1))
        .collect()
}

/// The `date=…/server=…` folders of a table folder that `scope` keeps. Only the date folders
/// kept are listed further.
fn list_partitions(table_dir: &Path, scope: &Scope) -> Result<Vec<Partition>> {
    let mut out = Vec::new();
    let Some(entries) = read_dir_if_present(table_dir)? else {
        return Ok(out);
    };
    let mut dates = Vec::new();
    for entry in entries {
        let entry = entry.with_context(|| format!("listing {}", table_dir.display()))?;
        let name = entry.file_name();
        let Some(value) = name.to_str().and_then(|n| n.strip_prefix("date=")) else {
            continue;
        };
        let Ok(date) = NaiveDate::parse_from_str(value, "%Y-%m-%d") else {
            tracing::warn!(folder = %entry.path().display(), "not a lake partition (date=YYYY-MM-DD): left out");
            continue;
        };
        if scope.keeps_date(date) {
            dates.push((date, entry.path()));
        }
    }
    dates.sort();
    for (date, dir) in dates {
        let Some(servers) = read_dir_if_present(&dir)? else {
            continue;
        };
        let mut found = Vec::new();
        for entry in servers {
            let entry = entry.with_context(|| format!("listing {}", dir.display()))?;
            let name = entry.file_name();
            let Some(value) = name.to_str().and_then(|n| n.strip_prefix("server=")) else {
                continue;
            };
            let server = unescape_value(value);
            if scope.keeps_server(&server) {
                found.push(Partition {
                    date,
                    server,
                    files: PartFiles::Folder(entry.path()),
                });
            }
        }
        found.sort_by(|a, b| a.server.cmp(&b.server));
        out.extend(found);
    }
    Ok(out)
}

/// A folder's entries, or none when it does not exist: a table the lake does not hold yet, or a
/// folder that retention or a compaction removed after it was listed.
fn read_dir_if_present(dir: &Path) -> Result<Option<fs::ReadDir>> {
    match fs::read_dir(dir) {
        Ok(e) => Ok(Some(e)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("listing {}", dir.display())),
    }
}

/// A partition folder's committed files with their sizes, in name order. Empty files are left
/// out (no Parquet file is empty; a zero-length name is not data).
fn part_files(dir: &Path) -> Result<Vec<(PathBuf, u64)>> {
    let mut out = Vec::new();
    let Some(entries) = read_dir_if_present(dir)? else {
        return Ok(out);
    };
    for entry in entries {
        let entry = entry.with_context(|| format!("listing {}", dir.display()))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if !(name.starts_with("part-") && name.ends_with(".parquet")) {
            continue;
        }
        let meta = match entry.metadata() {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e).with_context(|| format!("reading {}", entry.path().display())),
        };
        if meta.is_file() && meta.len() > 0 {
            out.push((entry.path(), meta.len()));
        }
    }
    out.sort();
    Ok(out)
}

/// A file's row count, once its footer is read and each of its columns found readable as this
/// build's column of that name.
fn footer_rows(path: &Path, expected: &Schema) -> std::result::Result<u64, String> {
    let file = fs::File::open(path).map_err(|e| e.to_string())?;
    let reader = SerializedFileReader::new(file).map_err(|e| format!("footer: {e}"))?;
    rows_if_readable(reader.metadata().file_metadata(), expected)
}

/// A Delta file's key under its lake, from its path in the store.
fn lake_key_of(lake: &mailflow_sinks::object_lake::ObjectLake, path: &Path) -> String {
    let full = path.to_string_lossy();
    let prefix = lake.store_path("").to_string();
    full.strip_prefix(prefix.trim_end_matches('/'))
        .unwrap_or(&full)
        .trim_start_matches('/')
        .to_string()
}

/// [`footer_rows`] of a footer already read.
fn rows_if_readable(
    meta: &parquet::file::metadata::FileMetaData,
    expected: &Schema,
) -> std::result::Result<u64, String> {
    let schema = parquet_to_arrow_schema(meta.schema_descr(), meta.key_value_metadata())
        .map_err(|e| format!("schema: {e}"))?;
    for field in schema.fields() {
        if let Ok(ours) = expected.field_with_name(field.name())
            && !readable_as(field.data_type(), ours.data_type())
        {
            return Err(format!(
                "column {} is {}, where this build reads {}",
                field.name(),
                field.data_type(),
                ours.data_type()
            ));
        }
    }
    u64::try_from(meta.num_rows()).map_err(|_| "negative row count".to_string())
}

/// Whether a file's column type reads as the table's: the same once dictionaries are looked
/// through (a writer may dictionary-encode a column another leaves plain), list item names
/// aside.
fn readable_as(file: &DataType, table: &DataType) -> bool {
    fn plain(t: &DataType) -> &DataType {
        match t {
            DataType::Dictionary(_, v) => v,
            other => other,
        }
    }
    let text =
        |t: &DataType| matches!(t, DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View);
    let (a, b) = (plain(file), plain(table));
    a.equals_datatype(b) || (text(a) && text(b))
}

/// A lake opened for SQL: a session with every table registered.
pub struct Lake {
    /// The session (`ctx.sql(…)`).
    pub ctx: SessionContext,
    /// The tables, in the order `mailflow schema` lists them.
    pub tables: Vec<Arc<LakeTable>>,
}

impl std::fmt::Debug for Lake {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lake")
            .field("tables", &self.tables)
            .finish()
    }
}

/// Opens the lake at `root` (a folder of Parquet or Delta tables, or an object store URL of
/// Delta tables) in `scope`. With `survey`, every file's footer is read first and the
/// unreadable left out (returned per table). Call it outside an async runtime.
pub fn open(
    root: &Path,
    scope: &Scope,
    survey: bool,
) -> Result<(Lake, Vec<(&'static str, Survey)>)> {
    if let Some((lake, _)) = crate::ingest::object_lake_at(root, None)? {
        return open_delta(&lake, scope, survey);
    }
    // Files are handed to the engine by absolute path (`lake` given as `out` works from any
    // folder); not canonicalized, which on Windows would make a verbatim `\\?\` path.
    let root = &std::path::absolute(root).with_context(|| format!("{}", root.display()))?;
    if !root.is_dir() {
        bail!(
            "{}: no such folder (give the lake's root, the folder given to `ingest --parquet`)",
            root.display()
        );
    }
    let ctx = session()?;
    let mut tables = Vec::new();
    let mut surveys = Vec::new();
    for (name, schema) in table_schemas() {
        let mut table = LakeTable::open(root, name, &schema, scope)?;
        if survey {
            surveys.push((name, table.survey()?));
        }
        let table = Arc::new(table);
        ctx.register_table(name, Arc::clone(&table) as Arc<dyn TableProvider>)
            .with_context(|| format!("registering table {name}"))?;
        tables.push(table);
    }
    Ok((Lake { ctx, tables }, surveys))
}

/// A session with mailflow's settings: every core, the information schema, and spilling past
/// [`MEMORY_LIMIT`].
fn session() -> Result<SessionContext> {
    let config = SessionConfig::new()
        .with_target_partitions(std::thread::available_parallelism().map_or(2, |n| n.get()))
        .with_information_schema(true);
    let runtime = RuntimeEnvBuilder::new()
        .with_memory_limit(MEMORY_LIMIT, 1.0)
        .build_arc()
        .context("starting the SQL engine")?;
    Ok(SessionContext::new_with_config_rt(config, runtime))
}

/// [`open`] of a Delta lake: each table's current files read from its log, in `scope`, and
/// read from the lake's object store, registered with the engine. Called outside any async
/// runtime (the lake's client blocks on its own).
fn open_delta(
    lake: &mailflow_sinks::object_lake::ObjectLake,
    scope: &Scope,
    survey: bool,
) -> Result<(Lake, Vec<(&'static str, Survey)>)> {
    let ctx = session()?;
    let (root, store) = lake.store_root();
    ctx.register_object_store(&root, store);
    let mut tables = Vec::new();
    let mut surveys = Vec::new();
    for (name, schema) in table_schemas() {
        let mut table = LakeTable::open_delta(lake, name, &schema, scope)?;
        if survey {
            surveys.push((name, table.survey_delta(lake)?));
        }
        let table = Arc::new(table);
        ctx.register_table(name, Arc::clone(&table) as Arc<dyn TableProvider>)
            .with_context(|| format!("registering table {name}"))?;
        tables.push(table);
    }
    Ok((Lake { ctx, tables }, surveys))
}

/// The days of the partitions in `surveys` that hold rows, and their servers.
pub fn extent(
    surveys: &[(&'static str, Survey)],
) -> (Option<(NaiveDate, NaiveDate)>, BTreeSet<String>) {
    let mut range: Option<(NaiveDate, NaiveDate)> = None;
    let mut servers = BTreeSet::new();
    for f in surveys
        .iter()
        .flat_map(|(_, s)| &s.files)
        .filter(|f| f.rows > 0)
    {
        range = Some(range.map_or((f.date, f.date), |(a, b)| (a.min(f.date), b.max(f.date))));
        servers.insert(f.server.clone());
    }
    (range, servers)
}
