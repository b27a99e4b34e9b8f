//! The `mailflow` command.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use mailflow::diagnose::{DiagnoseOptions, diagnose, render_text};
use mailflow::generate::{GenKind, generate_dir};
use mailflow::ingest::{IngestOptions, ingest};
use mailflow::term::escape;
use mailflow_sinks::lake::LakeOptions;
use mailflow_sinks::lake::compact::{CompactOptions, compact};
use mailflow_sinks::parquet::ParquetOptions;

#[derive(Parser, Debug)]
#[command(
    name = "mailflow",
    version,
    about = "Exchange transport logs to typed, queryable data"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// How warnings and errors are logged on stderr: `text` for a person, `json` (one object
    /// a line) for a log shipper. `MAILFLOW_LOG` sets the level (default `warn`).
    #[arg(long, global = true, value_enum, default_value_t = Format::Text)]
    log_format: Format,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Parse log files and folders (recursively, any mix of kinds) into the Parquet lake at DIR:
    /// DIR/<table>/date=YYYY-MM-DD/server=NAME/part-….parquet. Re-running adds only what the lake
    /// does not hold yet.
    Ingest(IngestArgs),
    /// Ship this server's logs continuously: read the sources of a mailflow.toml, tail them as
    /// Exchange writes them, and write to its sinks, with checkpoints (the agent). Stops on
    /// Ctrl-C or SIGTERM after flushing.
    Run(RunArgs),
    /// Find what is wrong with mail flow in the given logs: problems ranked by impact, with
    /// evidence, cause and what to do.
    Diagnose {
        /// Log files or folders (with `--config`, read as well as its sources).
        #[arg(required_unless_present = "config")]
        paths: Vec<PathBuf>,
        /// A mailflow.toml: its sources are read (the logs of this server, by preset).
        #[arg(long)]
        config: Option<PathBuf>,
        /// text for a person, json for scripts.
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
        /// A catalog file whose rules add to or replace the built-in ones.
        #[arg(long)]
        catalog: Option<PathBuf>,
        /// Server name for every row (default: from the rows, the folder, else this host).
        #[arg(long, value_parser = parse_server)]
        server: Option<String>,
        /// Parse workers (default: the number of cores; 1 to 1024).
        #[arg(long, value_parser = parse_threads)]
        threads: Option<usize>,
        /// Windows event providers kept from event files, comma-separated; `Name*` matches
        /// any ending, `*` keeps every event (default: MSExchange*,Schannel).
        #[arg(long, value_delimiter = ',')]
        event_providers: Vec<String>,
    },
    /// Run one SQL statement over the lake: every table by name (`message_tracking`,
    /// `smtp_sessions`, `messages`, …), with `date` and `server` as columns (a condition on
    /// them reads only those partitions).
    Query {
        /// The lake's root folder.
        #[arg(long)]
        lake: PathBuf,
        /// The statement, e.g. "SELECT diagnosis_code, count(*) FROM smtp_sessions GROUP BY 1".
        sql: String,
        /// table (aligned, for a terminal), csv, json (one object a line) or parquet.
        #[arg(long, value_enum, default_value_t = mailflow::query::QueryFormat::Table)]
        format: mailflow::query::QueryFormat,
        /// Write here instead of standard output (required for parquet).
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// A period's trends from the lake as one self-contained HTML page (charts, tables,
    /// findings), or the same aggregates as JSON or CSV.
    Report(ReportArgs),
    /// Merge each lake partition's small files into large ones, atomically (for Delta tables:
    /// one OPTIMIZE commit per table; the replaced files stay until `vacuum`).
    Compact {
        /// The lake: a folder, or an object store URL (s3://…, az://…) of Delta tables.
        #[arg(long)]
        lake: PathBuf,
        /// Only merge files last written longer ago than this (e.g. 30m, 12h, 1d).
        #[arg(long, value_parser = parse_duration, default_value = "1h")]
        older_than: std::time::Duration,
        /// Size of the merged files (suffixes K, M, G accepted).
        #[arg(long, value_parser = parse_size, default_value = "256M")]
        target_size: u64,
        /// zstd level of the merged files (1-22).
        #[arg(long, default_value_t = 3)]
        zstd_level: i32,
    },
    /// Finish or undo what a killed ingest or compaction left half-done in a lake, so that a
    /// reader sees every row exactly once (every writing command does this first anyway).
    Recover {
        /// The lake: a folder, or an object store URL (s3://…, az://…) of Delta tables.
        #[arg(long)]
        lake: PathBuf,
        /// For Delta tables: the staging folder the interrupted run used (as given to
        /// `ingest --staging`); its epochs are committed at once, others' once 15 minutes old.
        #[arg(long)]
        staging: Option<PathBuf>,
    },
    /// Delta tables: delete the files no current version names (replaced by `compact`, or
    /// uploads that never committed) once older than a retention. Readers can then no longer
    /// read versions older than it.
    Vacuum {
        /// The lake: a folder of Delta tables, or an object store URL (s3://…, az://…).
        #[arg(long)]
        lake: PathBuf,
        /// Retention: files replaced or written longer ago than this go (at least 1h; e.g. 7d).
        #[arg(long, value_parser = parse_duration, default_value = "7d")]
        older_than: std::time::Duration,
        /// List what would be deleted, delete nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Describe a table's columns: type, meaning, allowed values, ECS field (all tables when
    /// none is named).
    Schema {
        /// message_tracking, smtp_protocol, connectivity, pop_imap_protocol, agent_log,
        /// transport_events, queue_snapshots, rejects, smtp_sessions or messages.
        table: Option<String>,
        /// `text` for reading, `json` for tools.
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
    },
    /// Check a mailflow.toml: every error names the file, the key and what is wrong; a valid one
    /// prints what it resolves to (folders, and whether each is on this machine; sinks).
    Validate {
        /// The configuration file.
        #[arg(long)]
        config: PathBuf,
    },
    /// Elasticsearch: `setup` installs the index and component templates of every table's
    /// data stream (logs-exchange.<table>-<namespace>), idempotently.
    Es {
        #[command(subcommand)]
        command: EsCommand,
    },
    /// Write seeded, realistic Exchange logs for benchmarks and load tests.
    Generate {
        /// Which logs.
        #[arg(long, value_enum, default_value_t = GenKind::Mixed)]
        kind: GenKind,
        /// About how many bytes in all (suffixes K, M, G accepted).
        #[arg(long, value_parser = parse_size)]
        bytes: u64,
        /// Seed: the same seed writes the same bytes.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// How many servers' folders to spread the logs over.
        #[arg(long, default_value_t = 1)]
        servers: usize,
        /// Days the traffic spreads over (from 2024-01-25), following the working day.
        #[arg(long, default_value_t = 1)]
        days: u32,
        /// Output folder.
        #[arg(long)]
        out: PathBuf,
    },
}

#[derive(clap::Args, Debug)]
struct ReportArgs {
    /// The lake's root folder.
    #[arg(long)]
    lake: PathBuf,
    /// First day (UTC, YYYY-MM-DD); default: the lake's first.
    #[arg(long, value_parser = parse_day)]
    since: Option<chrono::NaiveDate>,
    /// Last day, included; default: the lake's last.
    #[arg(long, value_parser = parse_day)]
    until: Option<chrono::NaiveDate>,
    /// Only these servers (repeat, or comma-separated).
    #[arg(long, value_delimiter = ',')]
    server: Vec<String>,
    /// html (one page), json (the aggregates) or csv (one file per aggregate, into --out).
    #[arg(long, value_enum, default_value_t = ReportFormat::Html)]
    format: ReportFormat,
    /// The page or JSON file to write (default: standard output), or csv's folder.
    #[arg(long)]
    out: Option<PathBuf>,
    /// A catalog file whose rules add to or replace the built-in ones.
    #[arg(long)]
    catalog: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum ReportFormat {
    Html,
    Json,
    Csv,
}

impl ReportArgs {
    fn run(self) -> Result<ExitCode> {
        if self.format == ReportFormat::Csv && self.out.is_none() {
            anyhow::bail!(
                "--format csv writes one file per aggregate: give their folder with --out DIR"
            );
        }
        let matcher = std::sync::Arc::new(mailflow_enrich::Matcher::new(load_catalog(
            self.catalog.as_deref(),
        )?)?);
        let opts = mailflow::report::ReportOptions {
            lake: self.lake,
            scope: mailflow::lakesql::Scope {
                since: self.since,
                until: self.until,
                servers: self
                    .server
                    .into_iter()
                    .filter(|s| !s.trim().is_empty())
                    .collect(),
            },
        };
        let data = mailflow::report::build(&opts, &matcher)?;
        let write = |bytes: &[u8]| -> Result<()> {
            match &self.out {
                Some(path) => std::fs::write(path, bytes)
                    .with_context(|| format!("writing {}", path.display())),
                None => Ok(std::io::stdout().lock().write_all(bytes)?),
            }
        };
        match self.format {
            ReportFormat::Html => write(mailflow::report::render_html(&data).as_bytes())?,
            ReportFormat::Json => {
                let mut json = serde_json::to_vec_pretty(&data)?;
                json.push(b'\n');
                write(&json)?;
            }
            ReportFormat::Csv => {
                let dir = self.out.as_deref().unwrap_or(std::path::Path::new("."));
                mailflow::report::write_csv(&data, dir)?;
            }
        }
        if let Some(path) = &self.out {
            eprintln!("wrote {}", path.display());
        }
        for u in &data.input.unreadable {
            eprintln!("mailflow: warning: left out {}: {}", u.path, u.reason);
        }
        Ok(ExitCode::SUCCESS)
    }
}

fn parse_day(s: &str) -> Result<chrono::NaiveDate, String> {
    chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d")
        .map_err(|_| format!("{s:?} is not a day as YYYY-MM-DD"))
}

#[derive(Subcommand, Debug)]
enum EsCommand {
    /// Install (or update) the templates: a component template of explicit mappings per
    /// table, one of settings (the ILM policy), and an index template per table that makes
    /// logs-exchange.<table>-* a data stream. Running it again changes nothing.
    Setup(EsSetupArgs),
}

#[derive(clap::Args, Debug)]
struct EsSetupArgs {
    /// The cluster (credentials from MAILFLOW_ES_API_KEY, or MAILFLOW_ES_USER and
    /// MAILFLOW_ES_PASSWORD).
    #[arg(long, value_name = "URL", required_unless_present_any = ["config", "dry_run"])]
    url: Option<String>,
    /// Or a mailflow.toml: its elasticsearch sink's cluster, credentials and TLS settings.
    #[arg(long, conflicts_with = "url")]
    config: Option<PathBuf>,
    /// The sink to set up when the config has more than one.
    #[arg(long, requires = "config")]
    sink: Option<String>,
    /// The ILM policy the indices follow (`none` for the cluster's default lifecycle).
    #[arg(long, default_value = "logs")]
    ilm_policy: String,
    /// Templates for OpenSearch 2.15 or later (`flat_object`, no ILM setting: attach an ISM
    /// policy to logs-exchange.* by its `ism_template`).
    #[arg(long)]
    opensearch: bool,
    /// Print the requests instead of sending them.
    #[arg(long)]
    dry_run: bool,
}

impl EsSetupArgs {
    fn run(&self) -> Result<String> {
        let options = mailflow_sinks::es::setup::SetupOptions {
            ilm_policy: (self.ilm_policy != "none").then(|| self.ilm_policy.clone()),
            opensearch: self.opensearch,
            ..Default::default()
        };
        let config = match (&self.url, &self.config) {
            (_, Some(path)) => {
                let c = mailflow::config::load(path)?;
                let all = c.elasticsearch(|_| PathBuf::new())?;
                let mut chosen = all
                    .into_iter()
                    .filter(|e| self.sink.as_ref().is_none_or(|s| *s == e.name));
                match (chosen.next(), chosen.next()) {
                    (Some(e), None) => e,
                    (None, _) => anyhow::bail!(
                        "{}: no elasticsearch sink{}",
                        path.display(),
                        self.sink
                            .as_ref()
                            .map(|s| format!(" named {s}"))
                            .unwrap_or_default()
                    ),
                    (Some(_), Some(_)) => anyhow::bail!(
                        "{}: more than one elasticsearch sink: name one with --sink",
                        path.display()
                    ),
                }
            }
            (Some(url), None) => mailflow::config::EsSinkConfig::from_url(url, None)
                .sink_config("elasticsearch", PathBuf::new())
                .map_err(|e| anyhow::anyhow!("--url: {e:#}"))?,
            (None, None) => {
                mailflow_sinks::es::EsConfig::new("dry-run", "http://localhost", PathBuf::new())
            }
        };
        mailflow::es::run_setup(&config, &options, self.dry_run)
    }
}

#[derive(clap::Args, Debug)]
struct RunArgs {
    /// The configuration: sources, sinks and `[agent]` settings.
    #[arg(long)]
    config: PathBuf,
    /// Exit once everything found is read, writing open sessions and messages as they are
    /// (a backfill that ends).
    #[arg(long)]
    until_idle: bool,
    /// Serve Prometheus metrics on this address (overrides `agent.metrics_addr`).
    #[arg(long)]
    metrics_addr: Option<std::net::SocketAddr>,
    /// A catalog file whose rules add to or replace the built-in ones.
    #[arg(long)]
    catalog: Option<PathBuf>,
    /// Also write the closing summary as JSON to this file.
    #[arg(long)]
    summary_json: Option<PathBuf>,
}

impl RunArgs {
    fn options(&self) -> Result<mailflow::agent::AgentOptions> {
        let config = mailflow::config::load(&self.config)?;
        let (_, sink) = config.lake()?;
        let (lake, lake_options) = sink.lake_options()?;
        let a = &config.agent;
        let metrics_addr = match (self.metrics_addr, &a.metrics_addr) {
            (Some(addr), _) => Some(addr),
            // Checked by `load`.
            (None, Some(addr)) => Some(addr.parse().context("agent.metrics_addr")?),
            (None, None) => None,
        };
        let state_dir = config.state_dir(&self.config);
        let elasticsearch =
            config.elasticsearch(|name| state_dir.join(format!("{name}-dead-letter.ndjson")))?;
        Ok(mailflow::agent::AgentOptions {
            event_providers: providers(a.event_providers.as_deref().unwrap_or_default()),
            elasticsearch,
            sources: config.resolve()?,
            table_format: sink.table_format(),
            lake,
            lake_options,
            state_dir,
            matcher: std::sync::Arc::new(mailflow_enrich::Matcher::new(load_catalog(
                self.catalog.as_deref(),
            )?)?),
            threads: a.threads.unwrap_or_else(cores),
            batch_size: mailflow_parser::DEFAULT_BATCH_SIZE,
            max_line_bytes: mailflow_parser::DEFAULT_MAX_LINE_BYTES,
            poll_interval: a.poll_interval.unwrap_or(std::time::Duration::from_secs(1)),
            checkpoint_interval: a
                .checkpoint_interval
                .unwrap_or(std::time::Duration::from_secs(5)),
            shutdown_timeout: a
                .shutdown_timeout
                .unwrap_or(std::time::Duration::from_secs(30)),
            read_from: a.read_from,
            metrics_addr,
            until_idle: self.until_idle,
            rotate_after: a.rotate_after.unwrap_or(std::time::Duration::from_secs(10)),
            wrap_sink: None,
            finite: None,
        })
    }
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum Format {
    Text,
    Json,
}

fn cores() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get())
}

/// The built-in catalog, with the user's file on top when one is given.
fn load_catalog(path: Option<&std::path::Path>) -> Result<mailflow_enrich::Catalog> {
    Ok(match path {
        Some(p) => mailflow_enrich::Catalog::with_user_file(p)?,
        None => mailflow_enrich::Catalog::builtin(),
    })
}

// Builders hand their memory to each batch; glibc returns those large blocks to the kernel and
// faults them back in for the next batch (13% of parse time in perf). mimalloc keeps them. Its
// v2 line without transparent huge pages (Cargo.toml features): v3 with huge pages zeroed a
// 2 MiB page on many first touches (19% of parse time in `clear_page_erms`) and peaked at
// 344-350 MiB on the 1 GiB ingest bench, against 262-267 MiB.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// `mi_option_purge_delay` in mimalloc v2's `mi_option_e` (`mimalloc.h`); libmimalloc-sys
/// exports no constant for it. Checked against the option's documented default before use.
const MI_OPTION_PURGE_DELAY: std::ffi::c_int = 15;

/// Lengthens how long mimalloc keeps freed memory before returning it to the kernel, from 10 ms
/// to 100 ms. The Parquet encoders free and re-allocate megabytes per column chunk faster than
/// every 10 ms; each round trip cost a page fault per 4 KiB and a TLB shootdown on the other
/// core. On the 1 GiB ingest bench, two runs each in turns (`/usr/bin/time`): system time
/// 1.01-1.04 s against 0.56-0.61 s, wall time 4-11% less, peak RSS 249-251 MiB against
/// 271-273 MiB (the target is 300).
#[allow(unsafe_code)]
fn tune_allocator() {
    // SAFETY: mimalloc's option calls are not thread-safe; this runs first in `main`, before
    // any other thread exists. Both take and return plain integers. The option is set only if
    // it reads as its documented default: a different option layout is left alone, and so is a
    // value the user set through `MIMALLOC_PURGE_DELAY`.
    unsafe {
        if libmimalloc_sys::mi_option_get(MI_OPTION_PURGE_DELAY) == 10 {
            libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, 100);
        }
    }
}

#[derive(clap::Args, Debug)]
struct IngestArgs {
    /// Log files or folders (with `--config`, read as well as its sources).
    #[arg(required_unless_present = "config")]
    paths: Vec<PathBuf>,
    /// Windows event providers kept from event files, comma-separated; `Name*` matches any
    /// ending, `*` keeps every event (default: MSExchange*,Schannel).
    #[arg(long, value_delimiter = ',')]
    event_providers: Vec<String>,
    /// A mailflow.toml: its sources are read and its parquet sink is the lake (options given
    /// here win over it).
    #[arg(long)]
    config: Option<PathBuf>,
    /// The lake: a local folder (created if missing), or an object store prefix,
    /// s3://BUCKET/PREFIX or az://CONTAINER/PREFIX (also abfss://), with credentials from the
    /// environment (AWS_*, AZURE_STORAGE_*; AWS_ENDPOINT for MinIO, AZURE_STORAGE_USE_EMULATOR
    /// for Azurite).
    #[arg(long, required_unless_present = "config")]
    parquet: Option<PathBuf>,
    /// How the tables are kept: parquet (Hive-partitioned files, for a local folder) or delta
    /// (Delta Lake tables, which Spark, Databricks, Fabric and DuckDB read in place; the only
    /// format on an object store). Default: delta on an object store, parquet in a folder.
    #[arg(long, value_enum, default_value_t = mailflow::ingest::TableFormat::Auto)]
    table_format: mailflow::ingest::TableFormat,
    /// For a Delta lake: the local folder files are written in before they are uploaded, and
    /// where the run keeps its checkpoints (default: one per lake under the user's local data
    /// folder).
    #[arg(long)]
    staging: Option<PathBuf>,
    /// Server name for every row (default: from the rows, the folder, else this host). Taken as
    /// its short name in upper case (`ex01.contoso.com` is `EX01`), as every source is.
    #[arg(long, value_parser = parse_server)]
    server: Option<String>,
    /// Parse workers (default: the number of cores; 1 to 1024).
    #[arg(long, value_parser = parse_threads)]
    threads: Option<usize>,
    /// Rows per record batch.
    #[arg(long, default_value_t = mailflow_parser::DEFAULT_BATCH_SIZE)]
    batch_size: usize,
    /// Longest line accepted; longer ones go to rejects.
    #[arg(long, default_value_t = mailflow_parser::DEFAULT_MAX_LINE_BYTES)]
    max_line_bytes: usize,
    /// zstd level of the Parquet files, 1-22 (default 1: on these logs both faster and smaller
    /// than 3).
    #[arg(long)]
    zstd_level: Option<i32>,
    /// Also write the closing summary as JSON to this file.
    #[arg(long)]
    summary_json: Option<PathBuf>,
    /// No progress bar.
    #[arg(long)]
    quiet: bool,
    /// Empty the lake's tables first (default: add to them, skipping what they already hold).
    #[arg(long)]
    overwrite: bool,
    /// Roll the lake's files once one holds this many rows (default 16777216).
    #[arg(long)]
    max_file_rows: Option<u64>,
    /// Roll the lake's files once one reaches this size (suffixes K, M, G; default 256M).
    #[arg(long, value_parser = parse_size)]
    max_file_size: Option<u64>,
    /// A catalog file whose rules add to or replace the built-in ones.
    #[arg(long)]
    catalog: Option<PathBuf>,
    /// Roll the lake's files once the oldest open one is this old (e.g. 30s; default 5m).
    #[arg(long, value_parser = parse_duration)]
    max_file_age: Option<std::time::Duration>,
    /// Also send every row to this Elasticsearch cluster (e.g. https://es01:9200), into the
    /// data streams `mailflow es setup` prepares. Credentials from the environment:
    /// MAILFLOW_ES_API_KEY, or MAILFLOW_ES_USER and MAILFLOW_ES_PASSWORD; other settings in
    /// a config's `[sinks.NAME]` of `type = "elasticsearch"`.
    #[arg(long, value_name = "URL")]
    elasticsearch: Option<String>,
    /// The data streams' namespace for `--elasticsearch` (logs-exchange.<table>-<namespace>).
    #[arg(long, default_value = "default", requires = "elasticsearch")]
    es_namespace: String,
}

impl IngestArgs {
    fn options(&self) -> Result<IngestOptions> {
        let config = self
            .config
            .as_deref()
            .map(mailflow::config::load)
            .transpose()?;
        let sources = sources_from(config.as_ref(), self.paths.clone(), self.server.as_ref())?;
        let (lake_path, d) = match config.as_ref().map(|c| c.lake()).transpose()? {
            Some((_, sink)) => {
                let (path, options) = sink.lake_options()?;
                (Some(path), options)
            }
            None => (None, LakeOptions::default()),
        };
        let parquet = self
            .parquet
            .clone()
            .or(lake_path)
            .context("no lake: give --parquet DIR or a parquet sink in the config")?;
        // Refused documents are kept with the lake, in a folder readers of the tables skip (a
        // lake in an object store keeps them in its staging folder).
        let dead_letter_root = if mailflow_sinks::store::is_url(&parquet.to_string_lossy()) {
            let shown = mailflow_sinks::store::shown_text(&parquet.to_string_lossy());
            self.staging
                .clone()
                .unwrap_or_else(|| mailflow::ingest::default_staging(&shown))
        } else {
            parquet.clone()
        };
        let dead_letter = |name: &str| {
            dead_letter_root
                .join("_dead_letter")
                .join(format!("{name}.ndjson"))
        };
        let mut elasticsearch = match &config {
            Some(c) => c.elasticsearch(dead_letter)?,
            None => Vec::new(),
        };
        if let Some(url) = &self.elasticsearch {
            let flags =
                mailflow::config::EsSinkConfig::from_url(url, Some(self.es_namespace.clone()));
            elasticsearch.push(
                flags
                    .sink_config("elasticsearch", dead_letter("elasticsearch"))
                    .map_err(|e| anyhow::anyhow!("--elasticsearch: {e:#}"))?,
            );
        }
        Ok(IngestOptions {
            event_providers: providers(&self.event_providers),
            elasticsearch,
            matcher: std::sync::Arc::new(mailflow_enrich::Matcher::new(load_catalog(
                self.catalog.as_deref(),
            )?)?),
            sources,
            parquet,
            threads: self.threads.unwrap_or_else(cores),
            batch_size: self.batch_size,
            max_line_bytes: self.max_line_bytes,
            lake_options: LakeOptions {
                parquet: ParquetOptions {
                    zstd_level: self.zstd_level.unwrap_or(d.parquet.zstd_level),
                    ..d.parquet.clone()
                },
                max_file_rows: self.max_file_rows.unwrap_or(d.max_file_rows).max(1),
                max_file_bytes: self.max_file_size.unwrap_or(d.max_file_bytes).max(1),
                max_file_age: self.max_file_age.unwrap_or(d.max_file_age),
                ..d
            },
            progress: !self.quiet,
            overwrite: self.overwrite,
            // The command line's, else the config's.
            table_format: match (self.table_format, &config) {
                (mailflow::ingest::TableFormat::Auto, Some(c)) => {
                    c.lake().map(|(_, sink)| sink.table_format())?
                }
                (f, _) => f,
            },
            staging: self.staging.clone(),
        })
    }
}

/// What to read: a config's sources (if one is given) and the paths on the command line;
/// `--server` files all of them under one name.
fn sources_from(
    config: Option<&mailflow::config::Config>,
    paths: Vec<PathBuf>,
    server: Option<&String>,
) -> Result<Vec<mailflow::config::Source>> {
    let mut sources = match config {
        Some(c) => c.resolve()?,
        None => Vec::new(),
    };
    if let Some(server) = server {
        sources
            .iter_mut()
            .for_each(|s| s.server = Some(server.clone()));
    }
    if !paths.is_empty() {
        sources.push(mailflow::config::Source::of_paths(paths, server.cloned()));
    }
    Ok(sources)
}

/// Worker threads: each holds its own buffers, so a number far past the cores only costs
/// memory; past 1024 it is a typo.
fn parse_threads(s: &str) -> Result<usize, String> {
    match s.trim().parse::<usize>() {
        Ok(n @ 1..=1024) => Ok(n),
        _ => Err(format!("{s:?} is not a number of threads from 1 to 1024")),
    }
}

fn parse_size(s: &str) -> Result<u64, String> {
    mailflow::config::parse_size(s)
}

/// `--server`: a host name, reduced to the one name the lake files that server under.
fn parse_server(s: &str) -> Result<String, String> {
    mailflow_parser::canonical_server(s).ok_or_else(|| {
        format!(
            "not a server name: want a host name whose first label is 1 to {} ASCII letters, \
             digits, '-' or '_' (e.g. EX01 or ex01.contoso.com)",
            mailflow_parser::MAX_SERVER_NAME
        )
    })
}

fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    if s.trim() == "0" {
        return Ok(std::time::Duration::ZERO);
    }
    humantime::parse_duration(s.trim()).map_err(|e| format!("{s:?} is not a duration: {e}"))
}

fn main() -> ExitCode {
    tune_allocator();
    let cli = Cli::parse();
    // The agent is a service: its log (a line a minute, renames, replays) is what an admin
    // reads, so it says more by default than a one-shot command.
    // The Delta Lake libraries log every snapshot they build at info: that is their debug.
    let default_level = if matches!(cli.command, Command::Run(_)) {
        "info,deltalake_core=warn,buoyant_kernel=warn,buoyant_kernel_engine=warn"
    } else {
        "warn"
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("MAILFLOW_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level));
    let log = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false);
    match cli.log_format {
        Format::Json => log.json().with_current_span(false).init(),
        Format::Text => log
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init(),
    }
    let json_log = cli.log_format == Format::Json;
    match run(cli) {
        Ok(code) => code,
        // The reader of our output went away (`mailflow schema | head`): nothing is wrong.
        Err(e)
            if e.downcast_ref::<std::io::Error>()
                .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe) =>
        {
            ExitCode::SUCCESS
        }
        Err(e) => {
            // A log shipper reading JSON gets the error as one JSON line too.
            if json_log {
                tracing::error!(error = %format!("{e:#}"), "mailflow failed");
            } else {
                eprintln!("mailflow: error: {}", escape(&format!("{e:#}")));
            }
            ExitCode::FAILURE
        }
    }
}

/// Prints a run's closing summary, writes it as JSON if asked, and exits 1 if files failed.
fn report(
    rendered: &str,
    summary: &impl serde::Serialize,
    json: Option<&std::path::Path>,
    ok: bool,
) -> Result<ExitCode> {
    print!("{rendered}");
    if let Some(path) = json {
        let json = serde_json::to_vec_pretty(summary)?;
        std::fs::write(path, json).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn run(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::Ingest(args) => {
            let summary = ingest(&args.options()?)?;
            report(
                &summary.render(),
                &summary,
                args.summary_json.as_deref(),
                summary.failed.is_empty(),
            )
        }
        Command::Run(args) => {
            let summary = mailflow::agent::run(args.options()?)?;
            report(
                &summary.render(),
                &summary,
                args.summary_json.as_deref(),
                summary.failed.is_empty(),
            )
        }
        Command::Diagnose {
            paths,
            config,
            format,
            catalog,
            server,
            threads,
            event_providers,
        } => {
            let matcher = std::sync::Arc::new(mailflow_enrich::Matcher::new(load_catalog(
                catalog.as_deref(),
            )?)?);
            let config = config.as_deref().map(mailflow::config::load).transpose()?;
            let opts = DiagnoseOptions {
                sources: sources_from(config.as_ref(), paths, server.as_ref())?,
                threads: threads.unwrap_or_else(cores),
                event_providers: providers(&event_providers),
            };
            let report = diagnose(&opts, &matcher)?;
            let mut out = std::io::stdout().lock();
            match format {
                Format::Json => {
                    serde_json::to_writer_pretty(&mut out, &report)?;
                    writeln!(out)?;
                }
                Format::Text => {
                    let colour = std::io::IsTerminal::is_terminal(&std::io::stdout())
                        && std::env::var_os("NO_COLOR").is_none();
                    write!(out, "{}", render_text(&report, colour))?;
                }
            }
            Ok(if report.failed.is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        Command::Compact {
            lake,
            older_than,
            target_size,
            zstd_level,
        } => {
            let options = CompactOptions {
                older_than,
                target_bytes: target_size,
                parquet: ParquetOptions {
                    zstd_level,
                    ..CompactOptions::default().parquet
                },
            };
            let r = match mailflow::ingest::object_lake_at(&lake, None)? {
                Some((delta, staging)) => delta
                    .compact(
                        &mailflow::ingest::table_names(),
                        &staging.join("compact"),
                        &options,
                    )
                    .with_context(|| format!("compacting {}", delta.shown()))?,
                None => compact(&lake, &options)
                    .with_context(|| format!("compacting {}", lake.display()))?,
            };
            println!(
                "{} partitions: {} files ({:.1} MB) merged into {} ({:.1} MB), {} rows",
                r.partitions,
                r.files_in,
                r.bytes_in as f64 / 1e6,
                r.files_out,
                r.bytes_out as f64 / 1e6,
                r.rows
            );
            if r.recovery.journals_replayed > 0 || r.recovery.temporaries_removed > 0 {
                println!(
                    "finished {} interrupted commits and removed {} partial files first",
                    r.recovery.journals_replayed, r.recovery.temporaries_removed
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Query {
            lake,
            sql,
            format,
            out,
        } => {
            mailflow::query::run(&lake, &sql, format, out.as_ref())?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Report(args) => args.run(),
        Command::Vacuum {
            lake,
            older_than,
            dry_run,
        } => {
            let Some((delta, _)) = mailflow::ingest::object_lake_at(&lake, None)? else {
                anyhow::bail!(
                    "{} holds no Delta tables: a plain Parquet lake keeps no unreferenced files (compact deletes what it replaces)",
                    lake.display()
                );
            };
            let r = delta
                .vacuum(&mailflow::ingest::table_names(), older_than, dry_run)
                .with_context(|| format!("vacuuming {}", delta.shown()))?;
            if r.journals_replayed > 0 {
                println!("committed {} interrupted epochs first", r.journals_replayed);
            }
            let verb = if dry_run { "would delete" } else { "deleted" };
            for (table, files) in &r.files {
                println!("{table}: {verb} {} files", files.len());
                if dry_run {
                    for f in files {
                        println!("  {}", escape(f));
                    }
                }
            }
            if r.files.is_empty() {
                println!(
                    "{}: nothing older than {} to delete",
                    delta.shown(),
                    humantime::format_duration(older_than)
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Recover { lake, staging } => {
            if let Some((delta, _)) = mailflow::ingest::object_lake_at(&lake, staging.as_deref())? {
                let n = delta
                    .recover()
                    .with_context(|| format!("recovering {}", delta.shown()))?;
                println!("{}: committed {n} interrupted epochs", delta.shown());
                return Ok(ExitCode::SUCCESS);
            }
            let r = mailflow_sinks::lake::recover(&lake)
                .with_context(|| format!("recovering {}", lake.display()))?;
            println!(
                "{}: finished {} interrupted commits, removed {} partial files",
                escape(&lake.display().to_string()),
                r.journals_replayed,
                r.temporaries_removed
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Validate { config } => {
            let c = mailflow::config::load(&config)?;
            print!("{}", c.describe()?);
            println!("{}: valid", config.display());
            Ok(ExitCode::SUCCESS)
        }
        Command::Schema { table, format } => {
            let tables = mailflow::schema::tables(table.as_deref())?;
            let mut out = std::io::stdout().lock();
            match format {
                Format::Json => {
                    serde_json::to_writer_pretty(&mut out, &tables)?;
                    writeln!(out)?;
                }
                Format::Text => mailflow::schema::write_text(&mut out, &tables)?,
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Es {
            command: EsCommand::Setup(args),
        } => {
            print!("{}", args.run()?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Generate {
            kind,
            bytes,
            seed,
            servers,
            days,
            out,
        } => {
            let files = generate_dir(kind, bytes, seed, servers, days, &out)?;
            let total: u64 = files
                .iter()
                .filter_map(|f| std::fs::metadata(f).ok())
                .map(|m| m.len())
                .sum();
            println!(
                "wrote {} files, {:.1} MB, under {}",
                files.len(),
                total as f64 / 1e6,
                out.display()
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// `--event-providers`: the default (Exchange's and Schannel) when none are given.
fn providers(list: &[String]) -> mailflow_parser::Providers {
    let list: Vec<&str> = list
        .iter()
        .map(|s| s.trim())
        .filter(|s| !s.is_empty())
        .collect();
    if list.is_empty() {
        mailflow_parser::Providers::default()
    } else {
        mailflow_parser::Providers::new(list)
    }
}

#[cfg(test)]
mod tests {
    use super::parse_size;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("100"), Ok(100));
        assert_eq!(parse_size("64K"), Ok(65536));
        assert_eq!(parse_size("1GiB"), Ok(1 << 30));
        assert_eq!(parse_size("2MB"), Ok(2 << 20));
        assert!(parse_size("3X").is_err());
    }
}
