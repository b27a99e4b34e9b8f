//! `mailflow run`: the agent that ships a server's logs continuously.
//!
//! One topology on tokio: the **file source** (the coordinator: folders looked at every
//! `poll_interval`, new files picked up, growth, rotation, deletion and truncation followed)
//! → **decode and enrich** (each series a step at a time on a fixed pool of decode threads,
//! as many at once as there are cores; per-file and per-series order kept; record diagnosis
//! and sessions in the step) → **lanes** (threads owning the sinks, fed by bounded queues: a
//! slow sink makes the steps wait, reading stops, memory does not grow) and **message
//! correlation** (one thread for every server's tracking rows). Series move through log time
//! together: one runs at most an hour of log time ahead of the slowest with work, so a
//! backfill of months reads oldest first and correlation holds little open.
//!
//! **Checkpoints.** Every write carries the checkpoints it makes safe; a lane hands them to the
//! [`lanes::Keeper`] once its sinks acknowledge the write, and the keeper keeps per source the
//! lowest offset that the sinks hold and that no open session or message needs. The store
//! (`<state_dir>/checkpoints.json`) is saved every `checkpoint_interval` and at shutdown. A
//! restart replays each file from its checkpoint; the lake sink drops what it already holds
//! ([`mailflow_sinks::lake::Resume`]), so lines, sessions and messages come out as if there had
//! been no crash.
//!
//! **Files.** A file is known by its fingerprint (see [`crate::ingest::fingerprint`]), so a
//! rename does not read it again and two servers' files stay apart. The file being tailed stays
//! open (on Windows, std opens files with delete sharing, so Exchange's retention can still
//! delete it); when a newer file of its series appears and it has been still for a moment, or
//! when it is deleted, it is read to its end and closed. A file found shorter than what was
//! read of it is reported, and read again only under a new identity (a rewritten header).
//!
//! **Lake.** A folder, or Delta tables in an object store (`s3://…`, `az://…`): then the sinks
//! stage their files under `<state_dir>/staging` and publish each epoch as Delta transactions
//! (`mailflow_sinks::object_lake`), and what the lake holds is read from the tables' current files.
//!
//! `--until-idle` ends the input once everything found is read: open sessions and messages
//! are written as they are, and the agent exits (a backfill). `mailflow ingest` is this same
//! topology with a finite source and a progress bar ([`Finite`]): there is no second pipeline.

pub mod store;

mod lanes;
mod metrics;
mod series;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, Result, bail};
use mailflow_enrich::Matcher;
use mailflow_enrich::{messages, sessions};
use mailflow_parser::{DecoderBuilder, Table};
use mailflow_sinks::lake::{self, LakeOptions, Resume};
use mailflow_sinks::sink::{Closed, FanOut, LakeSinkConfig, Sink};
use serde::Serialize;
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use crate::config::{ReadFrom, Source as Input};
use crate::ingest::{Skipped, Triage, discover, fingerprint, host_name, series_of_file, triage};
use crate::term::escape;
use lanes::{Keeper, ToLane, ToMessages};
use metrics::Metrics;
use series::{Closed as SeriesClosed, Ctx, Opening, Order, Outcome, SeriesState};
use store::{Entry, Store};

/// What the agent reads, where it writes, and how.
#[derive(Debug, Clone)]
pub struct AgentOptions {
    /// What to read.
    pub sources: Vec<Input>,
    /// The lake's root folder (the Parquet sink).
    pub lake: PathBuf,
    /// How the lake's tables are kept.
    pub table_format: crate::ingest::TableFormat,
    /// Its encoding and rolling (`max_file_age` is how stale the lake may get).
    pub lake_options: LakeOptions,
    /// Elasticsearch clusters written besides the lake.
    pub elasticsearch: Vec<mailflow_sinks::es::EsConfig>,
    /// Where the checkpoint store lives.
    pub state_dir: PathBuf,
    /// The diagnosis catalog, compiled.
    pub matcher: Arc<Matcher>,
    /// Series decoded at once.
    pub threads: usize,
    /// Rows per batch.
    pub batch_size: usize,
    /// Line-length cap.
    pub max_line_bytes: usize,
    /// Windows event providers kept from event files.
    pub event_providers: mailflow_parser::Providers,
    /// How often folders are looked at.
    pub poll_interval: Duration,
    /// How often the checkpoint store is saved.
    pub checkpoint_interval: Duration,
    /// How long a shutdown may take.
    pub shutdown_timeout: Duration,
    /// Where files found at the first start are read from.
    pub read_from: ReadFrom,
    /// Prometheus metrics here, if set.
    pub metrics_addr: Option<SocketAddr>,
    /// Exit once everything found is read (a backfill).
    pub until_idle: bool,
    /// A file still this long after a newer one of its series appeared is finished.
    pub rotate_after: Duration,
    /// Wraps each sink the agent builds (tests: a sink that stalls or fails on cue).
    pub wrap_sink: Option<SinkWrapper>,
    /// A finite run, `mailflow ingest`: the same topology over the files found, with what a
    /// one-shot run adds (see [`Finite`]); `None` for the agent.
    pub finite: Option<Finite>,
}

/// What `mailflow ingest` adds to the agent's topology: the files found at the start are the
/// input (the run ends once they are read, as with `until_idle`), the lake may be emptied
/// first, progress is drawn, and the summary says what the lake held already and what was left
/// for a later run. Folders are not looked at again while it runs.
#[derive(Debug, Clone, Default)]
pub struct Finite {
    /// Where the run writes, resolved by the caller (its state folder lives there).
    pub target: Option<crate::ingest::LakeTarget>,
    /// Empty the lake's tables first.
    pub overwrite: bool,
    /// Moved as bytes are read (hidden when not on a terminal).
    pub progress: Option<indicatif::ProgressBar>,
}

/// See [`AgentOptions::wrap_sink`].
#[derive(Clone)]
pub struct SinkWrapper(pub Arc<WrapFn>);

/// A function that wraps a sink in another.
pub type WrapFn = dyn Fn(Box<dyn Sink>) -> Box<dyn Sink> + Send + Sync;

impl std::fmt::Debug for SinkWrapper {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SinkWrapper")
    }
}

/// What a run did, for its last log line and `--summary-json`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RunSummary {
    /// Files opened.
    pub files: u64,
    /// Bytes read.
    pub bytes: u64,
    /// Rows handed to the sinks per table (rejects under `rejects`).
    pub rows: BTreeMap<String, u64>,
    /// Rows per diagnosis code.
    pub diagnoses: BTreeMap<String, u64>,
    /// Wall-clock seconds.
    pub seconds: f64,
    /// Files passed over, and why.
    pub skipped: Vec<Skipped>,
    /// Files that could not be read, and why.
    pub failed: Vec<Skipped>,
    /// Files found shorter than what was read of them.
    pub truncated: Vec<Skipped>,
    /// Parquet files committed.
    pub outputs: Vec<PathBuf>,
    /// What other sinks counted (`<sink>.stored`, `.duplicates`, `.dead_lettered`…).
    pub delivered: BTreeMap<String, u64>,
    /// Whether it stopped because it was asked to (a signal) rather than at the input's end.
    pub interrupted: bool,
    /// Rows kept with invalid UTF-8 replaced.
    pub lossy_rows: u64,
    /// What the lake already held: files passed over whole, and lines not written again.
    pub already_in_lake: crate::ingest::AlreadyInLake,
    /// What was left for a later run because it is still being written.
    pub held_back: crate::ingest::HeldBack,
    /// Interrupted commits of an earlier, killed run finished or discarded at the start.
    pub recovered: crate::ingest::Recovered,
    /// What emptying the lake first removed (`ingest --overwrite`).
    pub overwritten: crate::ingest::Overwritten,
}

impl RunSummary {
    /// The summary for a person.
    pub fn render(&self) -> String {
        let mut s = format!(
            "{} files, {:.1} MB in {:.2} s ({:.1} MB/s){}\n",
            self.files,
            self.bytes as f64 / 1e6,
            self.seconds,
            if self.seconds > 0.0 {
                self.bytes as f64 / 1e6 / self.seconds
            } else {
                0.0
            },
            if self.interrupted { "; stopped" } else { "" }
        );
        for (table, rows) in &self.rows {
            s += &format!("  {table:<20} {rows:>12} rows\n");
        }
        s += &crate::ingest::render_delivered(&self.delivered);
        for (what, list) in [
            ("skipped", &self.skipped),
            ("truncated", &self.truncated),
            ("failed", &self.failed),
        ] {
            for f in list.iter().take(10) {
                s += &format!(
                    "  {what}: {}: {}\n",
                    escape(&f.path.display().to_string()),
                    escape(&f.reason)
                );
            }
            if list.len() > 10 {
                s += &format!("  and {} more {what}\n", list.len() - 10);
            }
        }
        s
    }
}

/// Runs the agent until a signal (or, with `until_idle`, the input's end).
pub fn run(opts: AgentOptions) -> Result<RunSummary> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        // The coordinator, timers and the metrics endpoint need little; every thread holds an
        // allocator heap of its own.
        .worker_threads(1)
        .thread_name("mailflow-agent")
        .enable_all()
        .build()
        .context("starting the runtime")?;
    let shutdown = shutdown_signal();
    runtime.block_on(Agent::start(opts)?.run(shutdown))
}

/// Resolves on SIGINT or SIGTERM (Ctrl-C or Ctrl-Break on Windows): the platform's part.
async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(windows)]
    {
        match tokio::signal::windows::ctrl_break() {
            Ok(mut brk) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = brk.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(any(unix, windows)))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// A series as the coordinator sees it.
struct Slot {
    stream: Arc<str>,
    tracking: bool,
    /// The state, away while a step runs.
    state: Option<Box<SeriesState>>,
    /// Files waiting, oldest first.
    queue: Vec<Queued>,
    /// The file being read.
    current: Option<Current>,
    /// The lane it writes through, chosen before its first step ([`LaneChoice`]).
    lane: Option<usize>,
    /// What fills its rows: its server and table.
    group: (String, Option<Table>),
    /// Bytes found for it before its lane was chosen.
    pending: u64,
    /// Log time reached.
    mark: i64,
    ended: bool,
    /// When message correlation was last told this quiet series has nothing older to add.
    quiet_told: Option<Instant>,
}

struct Queued {
    path: PathBuf,
    fingerprint: String,
    server: Option<String>,
    start: Option<i64>,
    start_at: u64,
}

struct Current {
    path: PathBuf,
    fingerprint: String,
    /// Its length when last looked at, and when it last changed.
    seen: u64,
    changed: Instant,
    /// Bytes read of it.
    fed: u64,
    /// Its length when the last step looked.
    stepped_at: Option<u64>,
    deleted: bool,
}

/// A file the source has seen.
enum Known {
    /// Read, or waiting in its series.
    Source { fingerprint: String },
    /// No complete line yet: looked at again when it grows.
    Pending { len: u64 },
    /// Passed over (not a log, a copy, already complete).
    Passed,
}

/// What one look at the folders found.
struct Found {
    path: PathBuf,
    source: usize,
    len: u64,
    /// For files not known with a fingerprint: what they are.
    triage: Option<Triage>,
}

struct Agent {
    opts: AgentOptions,
    ctx: Arc<Ctx>,
    metrics: Arc<Metrics>,
    keeper: Arc<Mutex<Keeper>>,
    store: Store,
    /// Start offsets the lake or an earlier `ingest` settled (by fingerprint).
    finished_by_ingest: crate::checkpoint::Checkpoints,
    /// Files found now start at their end (`read_from = "end"`, the first look of a first start).
    skip_existing: bool,
    known: HashMap<PathBuf, Known>,
    by_fingerprint: HashMap<String, PathBuf>,
    slots: Vec<Slot>,
    slot_of: HashMap<(String, String, String), usize>,
    /// Which lane each series writes through.
    lanes_by_load: LaneChoice,
    lanes: Vec<mpsc::Sender<ToLane>>,
    messages: Option<mpsc::Sender<ToMessages>>,
    threads: Vec<std::thread::JoinHandle<Result<Closed>>>,
    pool: Pool,
    summary: RunSummary,
    _lock: lake::LakeLock,
    /// Where the sinks write: the lake's folder, or the staging folder of Delta tables.
    target: crate::ingest::LakeTarget,
    /// Bytes queued to read so far (the progress bar's length).
    queued_bytes: u64,
    /// How far the lake held each source when the run started.
    lake_ends: HashMap<String, u64>,
    /// Files the lake's sessions and messages name (see [`Agent::resume`]).
    named_in_lake: HashSet<String>,
}

/// Writes queued per lane: each holds a batch (a few MiB at most), so this bounds the memory
/// between decoding and the sinks (peak RSS on the 1 GiB fleet bench: 360-376 MiB at 2,
/// 387-396 at 4, one tokio worker instead of two besides).
const LANE_QUEUE: usize = 2;

/// Tracking batches queued for message correlation (one thread for every server: when it is
/// the slowest stage, this is how much waits for it).
const MESSAGES_QUEUE: usize = 4;

/// A series still this long has nothing older to add to message correlation.
const QUIET: Duration = Duration::from_secs(300);

/// Which lane each series writes through.
///
/// A server's series of one table (its Front End and Hub receive logs and its send logs all
/// fill `smtp_protocol` and `smtp_sessions` of that server and day) go to one lane where the
/// bytes allow, so a partition has one writer and its row groups get that writer's whole
/// budget: series spread round-robin over two lanes wrote `smtp_protocol` in row groups of ~20k
/// rows against 50-250k from one writer, and spent about 3% more CPU re-interning dictionaries
/// and making zstd contexts. But one server's SMTP logs are most of its bytes, so a group is split
/// where keeping it whole would load its lane well past an even share: the lanes encode in
/// parallel, and the busiest sets the pace.
#[derive(Debug)]
struct LaneChoice {
    /// Bytes given to each lane so far.
    bytes: Vec<u64>,
    /// Each group's first lane.
    home: HashMap<(String, Option<Table>), usize>,
}

impl LaneChoice {
    fn new(lanes: usize) -> Self {
        Self {
            bytes: vec![0; lanes.max(1)],
            home: HashMap::new(),
        }
    }

    /// Lanes for new series, each a group and the bytes it has to read: largest first, so a
    /// group's biggest series settles its lane.
    fn assign(&mut self, series: &[(&(String, Option<Table>), u64)]) -> Vec<usize> {
        let mut order: Vec<usize> = (0..series.len()).collect();
        order.sort_by_key(|&i| std::cmp::Reverse(series[i].1));
        let total = self.bytes.iter().sum::<u64>() + series.iter().map(|s| s.1).sum::<u64>();
        let mut lanes = vec![0; series.len()];
        for i in order {
            lanes[i] = self.choose(series[i].0, series[i].1, total);
        }
        lanes
    }

    /// The lane of a new series of `group` with `bytes` to read, when `total` bytes (this
    /// series and every other given a lane now or before) are to be shared.
    fn choose(&mut self, group: &(String, Option<Table>), bytes: u64, total: u64) -> usize {
        let lanes = self.bytes.len() as u64;
        // An even share and an eighth: a group stays whole within it.
        let share = total.div_ceil(lanes) + total / lanes / 8;
        let least = (0..self.bytes.len())
            .min_by_key(|&k| self.bytes[k])
            .unwrap_or(0);
        let lane = match self.home.get(group) {
            Some(&home) if self.bytes[home] + bytes <= share => home,
            _ => least,
        };
        self.home.entry(group.clone()).or_insert(lane);
        self.bytes[lane] += bytes;
        lane
    }

    /// `bytes` more to write through `lane`.
    fn add(&mut self, lane: usize, bytes: u64) {
        if let Some(b) = self.bytes.get_mut(lane) {
            *b += bytes;
        }
    }
}

/// How far in log time a series may run ahead of the slowest with work.
const LEAD_MS: i64 = 3_600_000;

impl Agent {
    /// Opens the lake and the store, looks at the folders once, and starts the sinks with what
    /// a replay must not write again.
    fn start(opts: AgentOptions) -> Result<Self> {
        // A lake in an object store (or of Delta tables) stages under the state folder.
        let target = match opts.finite.as_ref().and_then(|f| f.target.clone()) {
            Some(t) => t,
            None => crate::ingest::LakeTarget::resolve(
                &opts.lake,
                opts.table_format,
                Some(&opts.state_dir.join("staging")),
            )?,
        };
        let root = &target.root;
        let mut summary = RunSummary::default();
        if opts.finite.as_ref().is_some_and(|f| f.overwrite) {
            lake::ensure_clearable(root)
                .with_context(|| format!("--overwrite: emptying {}", root.display()))?;
        }
        std::fs::create_dir_all(root).with_context(|| format!("creating {}", root.display()))?;
        let lock = lake::LakeLock::acquire(root)?;
        if opts.finite.as_ref().is_some_and(|f| f.overwrite) {
            summary.overwritten = crate::ingest::overwrite(root, &opts.state_dir)?;
        }
        let recovery = lake::recover(root).context("recovering the lake")?;
        summary.recovered = crate::ingest::Recovered {
            journals_replayed: recovery.journals_replayed,
            temporaries_removed: recovery.temporaries_removed,
        };
        if let Some(delta) = &target.object {
            summary.recovered.journals_replayed += delta
                .recover()
                .with_context(|| format!("recovering {}", target.shown))?;
        }
        let store = Store::load(&opts.state_dir)?;
        // What the lake committed since the store was saved (the files of an epoch are
        // written up to `max_file_age` before their commit); everything at a first start.
        let since = store
            .saved_at
            .map(|t| t - opts.lake_options.max_file_age - Duration::from_secs(120));
        let holdings = match &target.object {
            Some(delta) => {
                let tables: Vec<&str> = crate::ingest::table_schemas()
                    .into_iter()
                    .map(|(t, _)| t)
                    .collect();
                delta
                    .holdings_since(&tables, since.map(crate::ingest::file_time_ms))
                    .with_context(|| format!("reading what {} holds", target.shown))?
            }
            None => lake::holdings_where(root, |p| {
                since.is_none_or(|since| {
                    std::fs::metadata(p)
                        .and_then(|m| m.modified())
                        .is_ok_and(|m| m >= since)
                })
            })
            .context("reading what the lake holds")?,
        };
        crate::ingest::refuse_incompatible_lake(root, &holdings)?;
        // Files that derived rows in the lake name as their first line's: a killed run may have
        // committed a session or message without the lines it began with.
        let named_in_lake: HashSet<String> = holdings
            .row_files
            .iter()
            .filter(|(_, held)| {
                held.iter()
                    .any(|(t, _)| t == sessions::TABLE || t == messages::TABLE)
            })
            .map(|(file, _)| file.clone())
            .collect();
        let mut ends: HashMap<String, u64> = holdings
            .sources
            .into_iter()
            .map(|(fp, p)| (fp, p.end_offset))
            .collect();
        for (fp, e) in &store.entries {
            let end = ends.entry(fp.clone()).or_default();
            *end = (*end).max(e.durable);
        }
        let matcher = Arc::clone(&opts.matcher);
        let mut agent = Agent {
            ctx: Arc::new(Ctx {
                matcher,
                batch_size: opts.batch_size,
                max_line_bytes: opts.max_line_bytes,
                event_providers: opts.event_providers.clone(),
                host: host_name(),
            }),
            metrics: Arc::new(Metrics::new()),
            keeper: Arc::new(Mutex::new(Keeper::default())),
            finished_by_ingest: crate::checkpoint::Checkpoints::load(root)?,
            skip_existing: store.saved_at.is_none() && opts.read_from == ReadFrom::End,
            store,
            known: HashMap::new(),
            by_fingerprint: HashMap::new(),
            slots: Vec::new(),
            slot_of: HashMap::new(),
            lanes_by_load: LaneChoice::new(opts.threads),
            lanes: Vec::new(),
            messages: None,
            threads: Vec::new(),
            pool: Pool::new(opts.threads.max(1))?,
            summary,
            _lock: lock,
            target,
            queued_bytes: 0,
            lake_ends: ends,
            named_in_lake,
            opts,
        };
        {
            let mut k = agent.lock_keeper();
            for (fp, e) in &agent.store.entries {
                // Entries of files gone from disk that were finished are not kept.
                if e.complete && !Path::new(&e.file).exists() {
                    continue;
                }
                k.keep(fp, e.clone());
            }
        }
        // The first look decides what a replay covers before the sinks start.
        let look = scan(&agent.opts.sources, &HashSet::new())?;
        agent.take_found(look);
        // Files that appear from now on are read whole.
        agent.skip_existing = false;
        let resume = agent.resume(agent.lake_ends.clone())?;
        agent.start_sinks(resume)?;
        Ok(agent)
    }

    fn lock_keeper(&self) -> std::sync::MutexGuard<'_, Keeper> {
        self.keeper
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// What the lake holds of the lines, sessions and messages this start replays.
    fn resume(&self, ends: HashMap<String, u64>) -> Result<Resume> {
        // Replayed: files read from before the lake's end of them, and files read from a start
        // whose sessions or messages the lake holds (a killed run committed them before the
        // lines they began with).
        let mut days: BTreeSet<String> = BTreeSet::new();
        let mut servers: BTreeSet<String> = BTreeSet::new();
        for slot in &self.slots {
            for q in &slot.queue {
                let end = ends.get(&q.fingerprint).copied().unwrap_or(0);
                let named = q.start_at == 0
                    && self
                        .named_in_lake
                        .contains(q.path.to_string_lossy().as_ref());
                if q.start_at >= end && !named {
                    continue;
                }
                let entry = self.store.entries.get(&q.fingerprint);
                let times = [q.start, entry.and_then(|e| e.log_time)];
                let lo = times.iter().flatten().min().copied();
                let hi = times.iter().flatten().max().copied();
                if let (Some(lo), Some(hi)) = (lo, hi) {
                    let day = 86_400_000;
                    let mut t = lo - day;
                    while t <= hi + day {
                        days.insert(lake::partition::date_value(Some(t)));
                        t += day;
                    }
                }
                if let Some(e) = entry {
                    servers.insert(e.server.clone());
                }
                if let Some(s) = slot.stream.split('/').next() {
                    servers.insert(s.to_string());
                }
            }
        }
        let mut resume = Resume::new(ends);
        if days.is_empty() {
            return Ok(resume);
        }
        let root = &self.target.root;
        for identity in crate::schema::derived_identities() {
            // Sessions are filed under the server that logged them, messages under their
            // first server, which may be one this agent does not read.
            let by_server = identity.table == sessions::TABLE;
            let wanted = |d: &str, s: &str| days.contains(d) && (!by_server || servers.contains(s));
            match &self.target.object {
                Some(delta) => resume.load_delta(delta, identity, wanted)?,
                None => resume.load(root, identity, wanted)?,
            }
        }
        tracing::info!(
            days = days.len(),
            sessions = resume.held(sessions::TABLE),
            messages = resume.held(messages::TABLE),
            "Replaying from checkpoints; what the lake holds is not written again."
        );
        Ok(resume)
    }

    /// Starts one lane per decode worker and the message thread, each with its own sinks.
    fn start_sinks(&mut self, resume: Resume) -> Result<()> {
        let resume = Arc::new(resume);
        let mut options = self.opts.lake_options.clone();
        options.schema_version = mailflow_enrich::records::SCHEMA_VERSION;
        let build = |name: &str, options: LakeOptions| -> Result<Box<dyn Sink>> {
            let lake = LakeSinkConfig {
                name: name.into(),
                root: self.target.root.clone(),
                options,
                resume: Some(Arc::clone(&resume)),
                object: self.target.object.clone(),
            }
            .build()?;
            // Clusters need no barrier here: checkpoints wait for every sink, and a replay is
            // dropped by the lake's resume filter and answered 409 by the clusters.
            let mut all: Vec<Box<dyn Sink>> = vec![Box::new(lake)];
            for es in &self.opts.elasticsearch {
                let es = mailflow_sinks::es::EsConfig {
                    resume: Some(Arc::clone(&resume)),
                    ..es.clone()
                };
                let sink = es.build()?;
                self.metrics.add_cluster(&es.name, Arc::clone(sink.stats()));
                all.push(Box::new(sink));
            }
            let fan: Box<dyn Sink> = Box::new(FanOut::new(all));
            Ok(match &self.opts.wrap_sink {
                Some(w) => (w.0)(fan),
                None => fan,
            })
        };
        for k in 0..self.opts.threads.max(1) {
            let (tx, rx) = mpsc::channel(LANE_QUEUE);
            let sink = build("lake", options.clone())?;
            let (keeper, metrics) = (Arc::clone(&self.keeper), Arc::clone(&self.metrics));
            let homes = self.pool.homes.clone();
            self.threads.push(
                std::thread::Builder::new()
                    .name(format!("lane-{k}"))
                    .spawn(move || lanes::lane(rx, sink, (&keeper, &metrics), &homes))
                    .context("starting a sink lane")?,
            );
            self.lanes.push(tx);
        }
        // Each queued item holds a tracking batch's correlation columns (a few MiB).
        let (tx, rx) = mpsc::channel(MESSAGES_QUEUE);
        let mut small = options;
        small.memory_budget = (small.memory_budget / 4).max(1 << 20);
        let sink = build("lake", small)?;
        let (keeper, metrics) = (Arc::clone(&self.keeper), Arc::clone(&self.metrics));
        let homes = self.pool.homes.clone();
        self.threads.push(
            std::thread::Builder::new()
                .name("messages".into())
                .spawn(move || lanes::messages_thread(rx, sink, (&keeper, &metrics), &homes))
                .context("starting message correlation")?,
        );
        // Tracking series found before the thread started wait for it now.
        // (Outside the runtime still: a blocking send is allowed, and none may be lost.)
        for slot in self.slots.iter().filter(|s| s.tracking) {
            if slot.mark > i64::MIN {
                let _ = tx.blocking_send(ToMessages::Expect(Arc::clone(&slot.stream), slot.mark));
            }
        }
        self.messages = Some(tx);
        Ok(())
    }

    /// Takes what a look at the folders found: new files into their series, growth and
    /// deletion of known ones.
    fn take_found(&mut self, look: Look) {
        let Look { found, unreadable } = look;
        // A finite run reports them as failures, once each; the agent looks again.
        if self.opts.finite.is_some() {
            for u in unreadable {
                if !self.summary.failed.iter().any(|f| f.path == u.path) {
                    self.summary.failed.push(u);
                }
            }
        }
        let mut seen: HashSet<PathBuf> = HashSet::with_capacity(found.len());
        for f in found {
            seen.insert(f.path.clone());
            if let Some(Known::Source { fingerprint }) = self.known.get(&f.path) {
                let fingerprint = fingerprint.clone();
                self.grew(&fingerprint, f.len);
                continue;
            }
            if let Some(Known::Passed) = self.known.get(&f.path) {
                continue;
            }
            if let Some(Known::Pending { len }) = self.known.get(&f.path)
                && *len == f.len
            {
                continue;
            }
            if let Some(t) = f.triage {
                self.add(t, f.source, f.len);
            }
        }
        // Files gone: the one being read is finished through its open handle; one never
        // opened was deleted before it could be read.
        let gone: Vec<PathBuf> = self
            .known
            .keys()
            .filter(|p| !seen.contains(*p))
            .cloned()
            .collect();
        for path in gone {
            // Its fingerprint stays known: the same file found under another name later was
            // moved, not new.
            if let Some(Known::Source { fingerprint }) = self.known.remove(&path) {
                self.deleted(&path, &fingerprint);
            }
        }
    }

    /// A file read (or waiting) under one name is now under another: the same file, read on
    /// from where it was, never again from its start.
    fn renamed(&mut self, from: &Path, to: PathBuf, fingerprint: &str) {
        tracing::info!(from = %escape(&from.display().to_string()), to = %escape(&to.display().to_string()), "A log file was renamed; reading on.");
        for slot in &mut self.slots {
            if let Some(c) = slot.current.as_mut()
                && c.fingerprint == fingerprint
            {
                c.path = to.clone();
                c.deleted = false;
            }
            for q in slot
                .queue
                .iter_mut()
                .filter(|q| q.fingerprint == fingerprint)
            {
                q.path = to.clone();
            }
        }
        self.known.remove(from);
        self.by_fingerprint
            .insert(fingerprint.to_string(), to.clone());
        self.known.insert(
            to,
            Known::Source {
                fingerprint: fingerprint.to_string(),
            },
        );
    }

    fn grew(&mut self, fingerprint: &str, len: u64) {
        for slot in &mut self.slots {
            if let Some(c) = slot.current.as_mut()
                && c.fingerprint == fingerprint
                && c.seen != len
            {
                c.seen = len;
                c.changed = Instant::now();
            }
        }
    }

    fn deleted(&mut self, path: &Path, fingerprint: &str) {
        for slot in &mut self.slots {
            if let Some(c) = slot.current.as_mut()
                && c.fingerprint == fingerprint
            {
                c.deleted = true;
                return;
            }
            if let Some(i) = slot.queue.iter().position(|q| q.fingerprint == fingerprint) {
                slot.queue.remove(i);
                tracing::warn!(file = %escape(&path.display().to_string()), "A log file was deleted before it was read.");
                self.summary.failed.push(Skipped {
                    path: path.to_path_buf(),
                    reason: "deleted before it was read".into(),
                });
                return;
            }
        }
        let complete = self
            .lock_keeper()
            .get(fingerprint)
            .is_some_and(|e| e.complete);
        if complete {
            self.lock_keeper().forget(fingerprint);
        }
    }

    /// A file seen for the first time (or growing from nothing).
    fn add(&mut self, t: Triage, source: usize, len: u64) {
        let (path, head, server, table) = match t {
            Triage::Read {
                path,
                head,
                server,
                table,
            } => (path, head, server, table),
            Triage::Skip(s) => {
                self.known.insert(s.path.clone(), Known::Passed);
                self.summary.skipped.push(s);
                return;
            }
            Triage::Fail(s) => {
                // Looked at again next time (it may be locked for a moment).
                tracing::warn!(file = %escape(&s.path.display().to_string()), reason = %escape(&s.reason), "Cannot read a log file.");
                self.metrics
                    .read_errors
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                return;
            }
        };
        let server = self.opts.sources[source].server.clone().or(server);
        let filed_under = DecoderBuilder::new(path.to_string_lossy())
            .with_server(server.clone())
            .with_default_server(&self.ctx.host)
            .server();
        let Some(fp) = fingerprint(&filed_under, &head) else {
            self.known.insert(path, Known::Pending { len });
            return;
        };
        if let Some(first) = self.by_fingerprint.get(&fp).cloned()
            && !first.exists()
        {
            self.renamed(&first, path, &fp);
            return;
        }
        if let Some(first) = self.by_fingerprint.get(&fp) {
            tracing::warn!(file = %escape(&path.display().to_string()), same_as = %escape(&first.display().to_string()), "Skipping a copy of a file already read.");
            self.summary.skipped.push(Skipped {
                reason: format!("a copy of {}", first.display()),
                path: path.clone(),
            });
            self.known.insert(path, Known::Passed);
            return;
        }
        // A lake written by a version that identified files otherwise holds them under that.
        if !self.lake_ends.contains_key(&fp)
            && let Some(&end) = self
                .lake_ends
                .get(&crate::ingest::legacy_fingerprint(&head))
        {
            self.lake_ends.insert(fp.clone(), end);
        }
        let entry = self.lock_keeper().get(&fp).cloned();
        let finite = self.opts.finite.is_some();
        let by_ingest = self.finished_by_ingest.complete_offset(&fp);
        // Everything of it is in the lake, its sessions and messages included (a later look
        // that finds it grown reads on from there).
        let whole = match &entry {
            Some(e) => e.complete || (finite && len > 0 && e.offset == len),
            None => finite && len > 0 && by_ingest == len,
        };
        if whole {
            if finite {
                self.summary.already_in_lake.files += 1;
            }
            self.known.insert(path, Known::Passed);
            return;
        }
        // Exchange only appends: a file shorter than what was read of it, or than the lake
        // holds of it, was cut or replaced under its first line.
        let known_end = entry
            .as_ref()
            .map(|e| e.offset)
            .or(self.lake_ends.get(&fp).copied())
            .unwrap_or(0)
            .max(by_ingest);
        let start_at = match &entry {
            _ if known_end > len => {
                let reason = format!(
                    "shorter ({len} bytes) than the {known_end} bytes read of it: truncated or replaced; not read again"
                );
                tracing::warn!(file = %escape(&path.display().to_string()), %reason, "A file shrank since it was read.");
                // Counted once, however it was found (while read, or at a look).
                if !self.summary.truncated.iter().any(|t| t.path == path) {
                    self.metrics
                        .files_truncated
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    self.summary.truncated.push(Skipped {
                        path: path.clone(),
                        reason,
                    });
                }
                self.known.insert(path, Known::Passed);
                return;
            }
            Some(e) => e.offset,
            None => {
                if by_ingest > 0 {
                    by_ingest.min(len)
                } else if self.skip_existing {
                    crate::ingest::last_line_end(&path, len).unwrap_or(0)
                } else {
                    0
                }
            }
        };
        let tracking = table == Some(Table::MessageTracking);
        let key = series_of_file(&filed_under, &path);
        let start = crate::plan::start_time(&head);
        let slot = match self.slot_of.get(&key) {
            Some(&i) => i,
            None => {
                let stream: Arc<str> = format!("{}/{}/{}", key.0, key.1, key.2).into();
                let i = self.slots.len();
                self.slots.push(Slot {
                    stream: Arc::clone(&stream),
                    tracking,
                    state: Some(Box::new(SeriesState::new(stream, tracking))),
                    queue: Vec::new(),
                    current: None,
                    lane: None,
                    group: (filed_under.clone(), table),
                    pending: 0,
                    mark: start.unwrap_or(i64::MIN),
                    ended: false,
                    quiet_told: None,
                });
                self.slot_of.insert(key, i);
                if tracking && let (Some(tx), Some(start)) = (&self.messages, start) {
                    // Sent from a task: the queue may be full, and this must not be lost. It
                    // moves the stream's watermark only forward, so arriving after the stream's
                    // first rows changes nothing.
                    let (tx, stream) = (tx.clone(), Arc::clone(&self.slots[i].stream));
                    tokio::spawn(async move {
                        let _ = tx.send(ToMessages::Expect(stream, start)).await;
                    });
                }
                i
            }
        };
        self.lock_keeper().track(
            &fp,
            Entry {
                file: path.to_string_lossy().into_owned(),
                server: filed_under,
                offset: start_at,
                durable: entry.as_ref().map_or(0, |e| e.durable),
                log_time: entry.as_ref().and_then(|e| e.log_time),
                complete: false,
            },
            tracking,
        );
        let bytes = len.saturating_sub(start_at);
        self.queued_bytes += bytes;
        match self.slots[slot].lane {
            Some(lane) => self.lanes_by_load.add(lane, bytes),
            None => self.slots[slot].pending += bytes,
        }
        let s = &mut self.slots[slot];
        let q = Queued {
            path: path.clone(),
            fingerprint: fp.clone(),
            server,
            start,
            start_at,
        };
        let at = s.queue.partition_point(|o| {
            crate::plan::time_order((o.start, &o.path), (q.start, &q.path)).is_lt()
        });
        s.queue.insert(at, q);
        s.ended = false;
        self.by_fingerprint.insert(fp.clone(), path.clone());
        self.known.insert(path, Known::Source { fingerprint: fp });
    }

    /// What a series should do next, if anything.
    fn next_order(&mut self, i: usize) -> Option<Order> {
        let rotate_after = self.opts.rotate_after;
        let s = &mut self.slots[i];
        if s.state.is_none() || s.ended {
            return None;
        }
        let Some(c) = s.current.as_mut() else {
            if s.queue.is_empty() {
                return None;
            }
            let q = s.queue.remove(0);
            let meta = std::fs::metadata(&q.path).ok();
            // Still since its last write: an old file of a backfill is not waited for.
            let still = meta
                .as_ref()
                .and_then(|m| m.modified().ok())
                .and_then(|m| m.elapsed().ok())
                .unwrap_or_default();
            let now = Instant::now();
            s.current = Some(Current {
                path: q.path.clone(),
                fingerprint: q.fingerprint.clone(),
                seen: meta.map_or(0, |m| m.len()),
                changed: now.checked_sub(still).unwrap_or(now),
                fed: q.start_at,
                stepped_at: None,
                deleted: false,
            });
            self.metrics
                .files_opened
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            self.summary.files += 1;
            return Some(Order::Open(Opening {
                path: q.path,
                fingerprint: q.fingerprint,
                server: q.server,
                start_at: q.start_at,
            }));
        };
        if c.deleted {
            return Some(Order::Finish);
        }
        if c.stepped_at != Some(c.seen) {
            return Some(Order::Read);
        }
        if !s.queue.is_empty() && c.changed.elapsed() >= rotate_after {
            return Some(Order::Finish);
        }
        None
    }

    /// Nothing to do anywhere, nothing running.
    fn all_idle(&self) -> bool {
        self.slots.iter().all(|s| {
            s.state.is_some()
                && s.queue.is_empty()
                && s.current
                    .as_ref()
                    .is_none_or(|c| c.stepped_at == Some(c.seen) && !c.deleted)
        })
    }

    async fn run(mut self, shutdown: impl Future<Output = ()>) -> Result<RunSummary> {
        let started = Instant::now();
        if let Some(addr) = self.opts.metrics_addr {
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("metrics: cannot listen on {addr}"))?;
            tracing::info!(%addr, "Serving Prometheus metrics on /metrics.");
            tokio::spawn(metrics::serve(listener, Arc::clone(&self.metrics)));
        }
        let mut steps: JoinSet<(usize, Box<SeriesState>, Outcome, Result<()>)> = JoinSet::new();
        let mut scan_timer = tokio::time::interval(self.opts.poll_interval);
        let mut save_timer = tokio::time::interval(self.opts.checkpoint_interval);
        let mut tick_timer = tokio::time::interval(Duration::from_secs(1));
        let mut minute = tokio::time::interval(Duration::from_secs(60));
        minute.reset();
        let mut scanning: Option<tokio::task::JoinHandle<Result<Look>>> = None;
        let mut last_save = Instant::now();
        let mut failure: Option<anyhow::Error> = None;
        let mut ending = false;
        tokio::pin!(shutdown);
        loop {
            self.dispatch(&mut steps);
            if self.opts.until_idle && steps.is_empty() && scanning.is_none() {
                if ending {
                    // Every series has sent its last rows: messages end after them.
                    if let Some(m) = &self.messages {
                        let _ = m.send(ToMessages::End).await;
                    }
                    break;
                }
                if self.all_idle() {
                    // One more look: anything that appeared meanwhile is read first.
                    let look = scan(&self.opts.sources, &self.known_sources())?;
                    let before = self.known.len();
                    self.take_found(look);
                    if self.known.len() == before && self.all_idle() {
                        ending = true;
                        self.end_all(&mut steps);
                        continue;
                    }
                    continue;
                }
            }
            tokio::select! {
                _ = &mut shutdown => {
                    tracing::info!("Stopping: finishing the steps under way, then flushing the sinks.");
                    self.summary.interrupted = true;
                    break;
                }
                Some(joined) = steps.join_next(), if !steps.is_empty() => {
                    match joined {
                        Ok((i, state, outcome, sent)) => {
                            self.stepped(i, state, outcome);
                            if let Err(e) = sent {
                                failure = Some(e);
                                break;
                            }
                        }
                        Err(e) => {
                            failure = Some(anyhow::anyhow!("a decode step failed: {e}"));
                            break;
                        }
                    }
                }
                // A finite run reads what it found at the start (and one more look at the end).
                _ = scan_timer.tick(), if scanning.is_none() && !ending && self.opts.finite.is_none() => {
                    let (sources, known) = (self.opts.sources.clone(), self.known_sources());
                    scanning = Some(tokio::task::spawn_blocking(move || scan(&sources, &known)));
                }
                found = async { scanning.as_mut().expect("a scan is running").await }, if scanning.is_some() => {
                    scanning = None;
                    match found {
                        Ok(Ok(found)) => self.take_found(found),
                        Ok(Err(e)) => tracing::warn!(error = %format!("{e:#}"), "Looking at the log folders failed; trying again."),
                        Err(e) => tracing::warn!(error = %e, "Looking at the log folders failed; trying again."),
                    }
                }
                _ = tick_timer.tick() => {
                    for lane in &self.lanes {
                        let _ = lane.try_send(ToLane::Tick);
                    }
                    if let Some(m) = &self.messages {
                        let _ = m.try_send(ToMessages::Tick);
                    }
                    if let Some(e) = self.lane_failure() {
                        failure = Some(e);
                        break;
                    }
                    if !self.opts.until_idle {
                        self.tell_quiet_streams();
                    }
                    self.update_gauges(last_save);
                    self.show_progress();
                }
                _ = save_timer.tick() => {
                    if let Err(e) = self.save().await {
                        tracing::warn!(error = %format!("{e:#}"), "Saving checkpoints failed; trying again.");
                    } else {
                        last_save = Instant::now();
                    }
                }
                _ = minute.tick() => self.log_minute(started),
            }
        }
        // Stop: let the steps under way finish (their writes reach the lanes), then close the
        // lanes, which flush and commit, then save the checkpoints they acknowledged.
        let deadline = tokio::time::Instant::now() + self.opts.shutdown_timeout;
        let drained = tokio::time::timeout_at(deadline, async {
            while let Some(joined) = steps.join_next().await {
                if let Ok((i, state, outcome, _)) = joined {
                    self.stepped(i, state, outcome);
                }
            }
        })
        .await;
        self.lanes.clear();
        self.messages = None;
        let threads = std::mem::take(&mut self.threads);
        let closing = tokio::task::spawn_blocking(move || {
            let mut outputs = Closed::default();
            let mut first_error = None;
            for t in threads {
                match t.join() {
                    Ok(Ok(mut c)) => {
                        outputs.files.append(&mut c.files);
                        outputs.counts.append(&mut c.counts);
                    }
                    Ok(Err(e)) => {
                        first_error.get_or_insert(e);
                    }
                    Err(_) => {
                        first_error.get_or_insert(anyhow::anyhow!("a sink thread panicked"));
                    }
                }
            }
            (outputs, first_error)
        });
        let closed = tokio::time::timeout_at(deadline, closing).await;
        self.save().await?;
        if drained.is_err() {
            bail!(
                "shutdown took longer than {:?}: stopped without flushing everything; the next \
                 start reads again from the checkpoints",
                self.opts.shutdown_timeout
            );
        }
        match closed {
            Ok(Ok((outputs, first_error))) => {
                self.summary.outputs = outputs.files;
                for (k, v) in outputs.counts {
                    *self.summary.delivered.entry(k).or_default() += v;
                }
                if let Some(e) = first_error.or(failure) {
                    self.metrics
                        .sink_errors
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    return Err(e.context(
                        "the agent stopped; what was committed stays, and the next start \
                         replays from the checkpoints",
                    ));
                }
            }
            Ok(Err(e)) => bail!("closing the sinks failed: {e}"),
            Err(_) => bail!(
                "the sinks did not finish within {:?}; the next start reads again from the \
                 checkpoints",
                self.opts.shutdown_timeout
            ),
        }
        self.summary.rows = self.metrics.rows();
        self.summary.bytes = self
            .metrics
            .bytes_in
            .load(std::sync::atomic::Ordering::Relaxed);
        self.summary.outputs.sort();
        self.finish_finite()?;
        self.summary.seconds = started.elapsed().as_secs_f64();
        Ok(self.summary)
    }

    /// Moves a finite run's progress bar.
    fn show_progress(&self) {
        if let Some(bar) = self.opts.finite.as_ref().and_then(|f| f.progress.as_ref()) {
            bar.set_length(self.queued_bytes);
            bar.set_position(
                self.metrics
                    .bytes_in
                    .load(std::sync::atomic::Ordering::Relaxed),
            );
        }
    }

    /// What a finite run's summary adds once everything is committed: the files left because
    /// they have no complete line yet; what the sinks found the lake held already (lines of
    /// partly written files, not written again, and taken off the rows written); and, in the
    /// lake's own record, every file this run finished, so `mailflow run` with a state folder
    /// of its own does not read them again (see `checkpoint`).
    fn finish_finite(&mut self) -> Result<()> {
        if self.opts.finite.is_none() {
            return Ok(());
        }
        self.summary.held_back.files = self
            .known
            .values()
            .filter(|k| matches!(k, Known::Pending { .. }))
            .count() as u64;
        // `<sink>.held.<table>`, whatever the lake sink is named.
        let marker = format!(".{}.", mailflow_sinks::sink::HELD);
        let held: Vec<(String, u64)> = self
            .summary
            .delivered
            .iter()
            .filter_map(|(k, v)| Some((k.split_once(&marker)?.1.to_string(), *v)))
            .collect();
        self.summary.delivered.retain(|k, _| !k.contains(&marker));
        for (table, n) in held {
            if let Some(rows) = self.summary.rows.get_mut(&table) {
                *rows = rows.saturating_sub(n);
            }
            if table != sessions::TABLE && table != messages::TABLE {
                self.summary.already_in_lake.lines += n;
            }
        }
        if self.summary.interrupted {
            return Ok(());
        }
        let mut finished = crate::checkpoint::Checkpoints::load(&self.target.root)?;
        for (fp, e) in self.lock_keeper().entries() {
            if e.offset > 0 {
                finished.set(&fp, &e.file, e.offset);
            }
        }
        finished.save()
    }

    /// Paths known with a fingerprint or passed over: a scan does not read their heads again.
    fn known_sources(&self) -> HashSet<PathBuf> {
        self.known
            .iter()
            .filter(|(_, k)| !matches!(k, Known::Pending { .. }))
            .map(|(p, _)| p.clone())
            .collect()
    }

    /// Gives every series without a lane one, largest first (a backfill's whole folder is
    /// queued by then, so each series' bytes are known).
    fn choose_lanes(&mut self) {
        let new: Vec<usize> = (0..self.slots.len())
            .filter(|&i| self.slots[i].lane.is_none())
            .collect();
        if new.is_empty() {
            return;
        }
        let series: Vec<_> = new
            .iter()
            .map(|&i| (&self.slots[i].group, self.slots[i].pending))
            .collect();
        let lanes = self.lanes_by_load.assign(&series);
        for (i, lane) in new.into_iter().zip(lanes) {
            let s = &mut self.slots[i];
            tracing::debug!(series = %escape(&s.stream), lane, bytes = s.pending, "A series' sink lane.");
            s.lane = Some(lane);
            s.pending = 0;
        }
    }

    /// Starts steps for the series that have work, slowest in log time first, while workers are
    /// free and within the lead.
    fn dispatch(&mut self, steps: &mut JoinSet<(usize, Box<SeriesState>, Outcome, Result<()>)>) {
        self.choose_lanes();
        // A step holds its series until its writes are in its lane's queue; while it waits
        // there its decode thread is free. As many more steps as there are lanes may be under
        // way, so a lane that is behind does not leave the decoders idle (with only as many
        // steps as decode threads, the agent read 1 GiB of mixed logs at 0.85x of `ingest`'s
        // speed; with twice as many, 0.94x, and about the same peak with 2 MiB steps).
        let workers = self.opts.threads.max(1) * 2;
        if steps.len() >= workers {
            return;
        }
        // The slowest series with work sets the pace.
        let has_work = |s: &Slot| {
            !s.queue.is_empty()
                || s.current
                    .as_ref()
                    .is_some_and(|c| c.stepped_at != Some(c.seen) || c.deleted)
        };
        let floor = self
            .slots
            .iter()
            .filter(|s| has_work(s))
            .map(|s| s.mark)
            .min()
            .unwrap_or(i64::MIN);
        let mut order: Vec<usize> = (0..self.slots.len())
            .filter(|&i| self.slots[i].state.is_some())
            .collect();
        order.sort_by_key(|&i| self.slots[i].mark);
        for i in order {
            if steps.len() >= workers {
                break;
            }
            if self.slots[i].mark > floor.saturating_add(LEAD_MS) && floor > i64::MIN {
                continue;
            }
            let Some(o) = self.next_order(i) else {
                continue;
            };
            self.spawn_step(i, o, steps);
        }
    }

    /// Tells every series the input ends here.
    fn end_all(&mut self, steps: &mut JoinSet<(usize, Box<SeriesState>, Outcome, Result<()>)>) {
        for i in 0..self.slots.len() {
            self.slots[i].ended = true;
            // A file nobody has written to for a while is read to its end, a last line
            // without its line end included; one written to lately keeps that line back for
            // Exchange to complete.
            let finish = self.slots[i]
                .current
                .as_ref()
                .is_some_and(|c| c.changed.elapsed() >= crate::ingest::SETTLE);
            self.spawn_step(i, Order::End { finish }, steps);
        }
    }

    fn spawn_step(
        &mut self,
        i: usize,
        o: Order,
        steps: &mut JoinSet<(usize, Box<SeriesState>, Outcome, Result<()>)>,
    ) {
        let Some(mut state) = self.slots[i].state.take() else {
            return;
        };
        if let Some(c) = self.slots[i].current.as_mut() {
            c.stepped_at = Some(c.seen);
        }
        let ctx = Arc::clone(&self.ctx);
        let lane = match self.slots[i].lane {
            Some(lane) => lane,
            None => {
                self.choose_lanes();
                self.slots[i].lane.unwrap_or(0)
            }
        };
        let lane = self.lanes[lane.min(self.lanes.len().saturating_sub(1))].clone();
        let messages = self.messages.clone();
        let pool = self.pool.clone();
        steps.spawn(async move {
            let (state, mut outcome) = match pool
                .run(move || {
                    let outcome = state.step(o, &ctx);
                    (state, outcome)
                })
                .await
            {
                Some(r) => r,
                None => {
                    return (
                        i,
                        Box::new(SeriesState::new("".into(), false)),
                        Outcome::default(),
                        Err(anyhow::anyhow!("a decode step panicked")),
                    );
                }
            };
            // Bounded queues: a slow sink makes this wait, and the series with it.
            let mut sent = Ok(());
            for w in outcome.writes.drain(..) {
                if lane.send(ToLane::Write(w)).await.is_err() {
                    sent = Err(anyhow::anyhow!("a sink lane stopped"));
                    break;
                }
            }
            if let Some(m) = messages {
                for t in outcome.tracked.drain(..) {
                    if m.send(ToMessages::Tracked(t)).await.is_err() {
                        sent = Err(anyhow::anyhow!("message correlation stopped"));
                        break;
                    }
                }
            }
            (i, state, outcome, sent)
        });
    }

    /// A step came back.
    fn stepped(&mut self, i: usize, state: Box<SeriesState>, outcome: Outcome) {
        use std::sync::atomic::Ordering::Relaxed;
        let Some(slot) = self.slots.get_mut(i) else {
            return;
        };
        self.metrics.bytes_in.fetch_add(outcome.bytes, Relaxed);
        for (table, n) in &outcome.rows {
            self.metrics.rows_in(table, *n);
        }
        for (code, n) in outcome.diagnoses {
            *self.summary.diagnoses.entry(code).or_default() += n;
        }
        self.summary.lossy_rows += outcome.lossy_rows;
        self.summary.held_back.lines += u64::from(outcome.partial_line);
        if let Some(m) = outcome.mark {
            slot.mark = slot.mark.max(m);
        }
        let reading = state.reading().map(|(p, fed)| (p.clone(), fed));
        slot.state = Some(state);
        if let Some(c) = slot.current.as_mut()
            && let Some((_, fed)) = &reading
        {
            c.fed = *fed;
            // A step reads a bounded amount: one that stopped short of what the file held goes
            // on (one that read nothing met a half-written line, which waits for growth).
            if outcome.bytes > 0 && c.fed < c.seen {
                c.stepped_at = None;
            }
        }
        let Some(closed) = outcome.closed else {
            if reading.is_none() && !slot.ended {
                // An End step, or a file that could not be opened.
                slot.current = None;
            }
            return;
        };
        let Some(c) = slot.current.take() else {
            return;
        };
        match closed {
            SeriesClosed::Finished => {
                self.metrics.files_finished.fetch_add(1, Relaxed);
            }
            SeriesClosed::Truncated(len) => {
                let reason = format!(
                    "shorter ({len} bytes) than the {} bytes read of it: truncated or replaced",
                    c.fed
                );
                tracing::warn!(file = %escape(&c.path.display().to_string()), %reason, "A file shrank while it was read; a rewritten file is read again as a new one.");
                self.metrics.files_truncated.fetch_add(1, Relaxed);
                self.summary.truncated.push(Skipped {
                    path: c.path.clone(),
                    reason,
                });
                // Looked at afresh: a new header makes it a new file.
                self.known.remove(&c.path);
                self.by_fingerprint.remove(&c.fingerprint);
            }
            SeriesClosed::Failed(reason) => {
                tracing::error!(file = %escape(&c.path.display().to_string()), error = %escape(&reason), "Reading failed.");
                self.metrics.read_errors.fetch_add(1, Relaxed);
                self.summary.failed.push(Skipped {
                    path: c.path.clone(),
                    reason,
                });
            }
        }
    }

    /// A server whose tracking log has been still for [`QUIET`] (a quiet night, or a server
    /// gone whose old logs are still in the folder) would hold every message open, on every
    /// server, for ever: message correlation waits for the slowest log. Such a series is told
    /// to correlation as having nothing older than `now - QUIET` to add: what Exchange writes
    /// from now on is stamped later than that. Live runs only: a backfill's old logs are read
    /// at full speed and their series never wait that long.
    fn tell_quiet_streams(&mut self) {
        let Some(tx) = &self.messages else {
            return;
        };
        let now_ms = crate::ingest::file_time_ms(SystemTime::now());
        let quiet_ms = i64::try_from(QUIET.as_millis()).unwrap_or(i64::MAX);
        for s in &mut self.slots {
            let still = s.tracking
                && s.state.is_some()
                && s.queue.is_empty()
                && s.current
                    .as_ref()
                    .is_none_or(|c| c.stepped_at == Some(c.seen) && c.changed.elapsed() >= QUIET);
            let due = s
                .quiet_told
                .is_none_or(|t| t.elapsed() >= Duration::from_secs(60));
            if still && due {
                let _ = tx.try_send(ToMessages::Expect(
                    Arc::clone(&s.stream),
                    now_ms.saturating_sub(quiet_ms),
                ));
                s.quiet_told = Some(Instant::now());
            }
        }
    }

    /// A lane that stopped on an error stops the agent.
    fn lane_failure(&self) -> Option<anyhow::Error> {
        if self
            .threads
            .iter()
            .any(std::thread::JoinHandle::is_finished)
        {
            return Some(anyhow::anyhow!(
                "a sink stopped (its error follows when the agent closes)"
            ));
        }
        None
    }

    fn update_gauges(&self, last_save: Instant) {
        let per_file: Vec<(String, u64)> = self
            .slots
            .iter()
            .filter_map(|s| s.current.as_ref())
            .map(|c| {
                (
                    c.path.to_string_lossy().into_owned(),
                    c.seen.saturating_sub(c.fed),
                )
            })
            .collect();
        let behind = per_file.iter().map(|(_, b)| b).sum();
        let open_sessions: u64 = self
            .slots
            .iter()
            .filter_map(|s| s.state.as_ref())
            .map(|s| s.open_sessions() as u64)
            .sum();
        let depth: Vec<u64> = self
            .lanes
            .iter()
            .map(|l| (l.max_capacity() - l.capacity()) as u64)
            .collect();
        let files_open = self.slots.iter().filter(|s| s.current.is_some()).count() as u64;
        self.metrics.set_gauges(|g| {
            g.bytes_behind = behind;
            g.file_bytes_behind = per_file;
            g.open_sessions = open_sessions;
            g.queue_depth = depth;
            g.files_open = files_open;
            g.checkpoint_age = last_save.elapsed().as_secs_f64();
        });
    }

    fn log_minute(&self, started: Instant) {
        use std::sync::atomic::Ordering::Relaxed;
        let g = self.metrics.gauges();
        let rows: u64 = self.metrics.rows().values().sum();
        let bytes = self.metrics.bytes_in.load(Relaxed);
        tracing::info!(
            files_open = g.files_open,
            mb_read = bytes as f64 / 1e6,
            mb_per_sec = bytes as f64 / 1e6 / started.elapsed().as_secs_f64().max(1e-9),
            rows,
            bytes_behind = g.bytes_behind,
            open_sessions = g.open_sessions,
            open_messages = g.open_messages,
            checkpoint_age_s = g.checkpoint_age,
            "Running."
        );
    }

    /// Saves the checkpoints the sinks acknowledged, if they moved.
    async fn save(&mut self) -> Result<()> {
        let entries = {
            let mut k = self.lock_keeper();
            if !k.dirty && self.store.saved_at.is_some() {
                return Ok(());
            }
            k.dirty = false;
            k.entries()
        };
        self.store.entries = entries;
        let dir = self.opts.state_dir.clone();
        let entries = self.store.entries.clone();
        tokio::task::spawn_blocking(move || Store::save_entries(&dir, entries))
            .await
            .context("saving checkpoints")??;
        self.store.saved_at = Some(SystemTime::now());
        self.metrics
            .checkpoints_saved
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Ok(())
    }
}

/// The decode workers: a fixed set of threads fed steps through a queue. Not tokio's blocking
/// pool, which starts threads as it needs them and keeps idle ones a while: each thread has
/// its own allocator heap, so more threads hold more memory (peak RSS on the 1 GiB fleet bench
/// 387-393 MiB with this pool, 402-412 MiB with the blocking pool, three runs each).
///
/// The batches a step makes are freed by the worker that allocated them: the lanes and the
/// message thread send them back ([`Homes`]) once written. mimalloc keeps a page freed from
/// another thread with its owner until the owner collects it, so batches dropped on the lanes
/// held memory the decoders could not reuse.
#[derive(Clone)]
struct Pool {
    jobs: crossbeam_channel::Sender<Box<dyn FnOnce() + Send>>,
    homes: Homes,
}

thread_local! {
    /// This thread's index among the decode workers, if it is one.
    static DECODE_WORKER: std::cell::Cell<Option<usize>> = const { std::cell::Cell::new(None) };
}

/// The decode worker running this code, if any (where the batches it makes go back to).
pub(crate) fn decode_worker() -> Option<usize> {
    DECODE_WORKER.with(std::cell::Cell::get)
}

/// The way back to each decode worker for the batches it allocated.
#[derive(Clone, Debug, Default)]
pub(crate) struct Homes(Arc<Vec<crossbeam_channel::Sender<Vec<arrow_array::RecordBatch>>>>);

impl Homes {
    /// Sends `batches` back to the worker that made them (dropped here when it is gone or
    /// unknown).
    pub(crate) fn send(&self, home: Option<usize>, batches: Vec<arrow_array::RecordBatch>) {
        if let Some(tx) = home.and_then(|h| self.0.get(h)) {
            let _ = tx.send(batches);
        }
    }
}

impl Pool {
    fn new(threads: usize) -> Result<Self> {
        let (jobs, rx) = crossbeam_channel::unbounded::<Box<dyn FnOnce() + Send>>();
        let mut homes = Vec::with_capacity(threads);
        for k in 0..threads {
            let rx = rx.clone();
            let (home, returned) = crossbeam_channel::unbounded::<Vec<arrow_array::RecordBatch>>();
            homes.push(home);
            std::thread::Builder::new()
                .name(format!("decode-{k}"))
                .spawn(move || {
                    DECODE_WORKER.with(|w| w.set(Some(k)));
                    loop {
                        crossbeam_channel::select! {
                            recv(rx) -> job => {
                                let Ok(job) = job else { break };
                                returned.try_iter().for_each(drop);
                                // A step that panics fails its series' task (its result never
                                // comes); the worker lives on.
                                let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(job));
                            }
                            recv(returned) -> batches => drop(batches),
                        }
                    }
                })
                .context("starting a decode worker")?;
        }
        Ok(Pool {
            jobs,
            homes: Homes(Arc::new(homes)),
        })
    }

    /// Runs `f` on a worker; `None` if it panicked.
    async fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> Option<T> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.jobs
            .send(Box::new(move || {
                let _ = tx.send(f());
            }))
            .ok()?;
        rx.await.ok()
    }
}

/// Looks at the folders: every file with its length, and what the files not in `known` are.
fn scan(sources: &[Input], known: &HashSet<PathBuf>) -> Result<Look> {
    let discovered = discover(sources)?;
    let found = discovered
        .files
        .into_iter()
        .map(|(path, source)| {
            let len = std::fs::metadata(&path).map_or(0, |m| m.len());
            let triage = (!known.contains(&path)).then(|| triage(path.clone()));
            Found {
                path,
                source,
                len,
                triage,
            }
        })
        .collect();
    Ok(Look {
        found,
        unreadable: discovered.unreadable,
    })
}

/// What one look at the folders saw: the files, and the folders that could not be read
/// (`discover` has logged them).
struct Look {
    found: Vec<Found>,
    unreadable: Vec<Skipped>,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Lanes for series of (server, table, MB), given in one look.
    fn lanes(series: &[(&str, Table, u64)]) -> Vec<usize> {
        let groups: Vec<(String, Option<Table>)> = series
            .iter()
            .map(|(server, table, _)| (server.to_string(), Some(*table)))
            .collect();
        let given: Vec<_> = groups.iter().zip(series).map(|(g, s)| (g, s.2)).collect();
        LaneChoice::new(2).assign(&given)
    }

    #[test]
    fn a_servers_series_of_one_table_share_a_lane_unless_that_unbalances_the_lanes() {
        use Table::{Connectivity, MessageTracking, SmtpProtocol};
        // Two servers (the mixed bench's sizes): each server's SMTP logs stay on one lane,
        // and the lanes carry about the same bytes.
        let two = [
            ("EX01", SmtpProtocol, 193),
            ("EX01", SmtpProtocol, 93),
            ("EX01", SmtpProtocol, 60),
            ("EX01", MessageTracking, 161),
            ("EX01", Connectivity, 9),
            ("EX02", SmtpProtocol, 211),
            ("EX02", SmtpProtocol, 93),
            ("EX02", SmtpProtocol, 63),
            ("EX02", MessageTracking, 178),
            ("EX02", Connectivity, 12),
        ];
        let l = lanes(&two);
        assert!(l[0] == l[1] && l[1] == l[2], "{l:?}");
        assert!(l[5] == l[6] && l[6] == l[7], "{l:?}");
        assert_ne!(l[0], l[5], "{l:?}");
        let load = |k| -> u64 {
            (0..two.len())
                .filter(|&i| l[i] == k)
                .map(|i| two[i].2)
                .sum()
        };
        assert!(load(0).abs_diff(load(1)) < 60, "{} {}", load(0), load(1));
        // One server: its SMTP logs are most of its bytes, and one of them goes to the other
        // lane rather than leave it with little to do.
        let one = &two[5..];
        let l = lanes(one);
        let load = |k| -> u64 {
            (0..one.len())
                .filter(|&i| l[i] == k)
                .map(|i| one[i].2)
                .sum()
        };
        assert!(
            load(0).abs_diff(load(1)) < 100,
            "{l:?}: {} {}",
            load(0),
            load(1)
        );
        assert_eq!(
            l[0], l[1],
            "the two largest SMTP series stay together: {l:?}"
        );
        assert_ne!(l[0], l[2], "{l:?}");
    }
}
