//! `mailflow.toml`: what a server's mailflow reads and where it writes, in a few lines.
//!
//! The file is TOML; unknown keys are errors (a typo must not silently fall back to a default).
//! `${NAME}` (or `${NAME:-default}`) anywhere in it is replaced by the environment variable
//! before parsing, so secrets stay out of the file. Sources name Exchange's default log folders
//! by preset (per Exchange version and role) or give folders of their own; sinks name where
//! rows go. [`load`] parses and checks everything it can without touching the server, and every
//! error names the file, the key and what is wrong; [`Config::resolve`] then turns presets into
//! folders. `examples/mailflow.toml` is the annotated example.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use globset::{GlobSet, GlobSetBuilder};
use serde::Deserialize;

/// The whole file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Where Exchange is installed, and which version: what presets resolve against.
    #[serde(default)]
    pub exchange: Exchange,
    /// What to read: at least one.
    #[serde(default)]
    pub sources: Vec<SourceConfig>,
    /// Where rows go, by a name of the user's choice: at least one.
    #[serde(default)]
    pub sinks: BTreeMap<String, SinkConfig>,
    /// How `mailflow run` behaves (every key has a default).
    #[serde(default)]
    pub agent: Agent,
}

/// `[agent]`: the long-running `mailflow run`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Agent {
    /// Where the agent keeps its checkpoints (default: `mailflow-state` beside this file).
    #[serde(default)]
    pub state_dir: Option<PathBuf>,
    /// Files found at the first start: read from their `beginning` (a backfill, the default)
    /// or only what is written from now on (`end`). Files that appear later are always read
    /// whole.
    #[serde(default)]
    pub read_from: ReadFrom,
    /// How often folders are looked at for new files and growth (default `1s`).
    #[serde(default, deserialize_with = "duration")]
    pub poll_interval: Option<Duration>,
    /// Windows event providers kept from event files (`.evtx`, event XML or JSON, Event Viewer
    /// text) in the sources: names, `Name*` for any ending, `*` for every event (default
    /// `["MSExchange*", "Schannel"]`).
    #[serde(default)]
    pub event_providers: Option<Vec<String>>,
    /// How often checkpoints are saved (default `5s`).
    #[serde(default, deserialize_with = "duration")]
    pub checkpoint_interval: Option<Duration>,
    /// How long a shutdown may take to flush and commit before the agent gives up and exits
    /// (default `30s`; what was not committed is read again at the next start).
    #[serde(default, deserialize_with = "duration")]
    pub shutdown_timeout: Option<Duration>,
    /// Prometheus metrics on this address (`host:port`); off when absent.
    #[serde(default)]
    pub metrics_addr: Option<String>,
    /// Decode workers (default: the number of cores).
    #[serde(default)]
    pub threads: Option<usize>,
    /// A file is read to its end and closed once a newer one of its series exists and it has
    /// not changed for this long (default `10s`; Exchange stops writing a file when it opens
    /// the next).
    #[serde(default, deserialize_with = "duration")]
    pub rotate_after: Option<Duration>,
}

impl Default for Agent {
    fn default() -> Self {
        Agent {
            state_dir: None,
            read_from: ReadFrom::Beginning,
            poll_interval: None,
            event_providers: None,
            checkpoint_interval: None,
            shutdown_timeout: None,
            metrics_addr: None,
            threads: None,
            rotate_after: None,
        }
    }
}

/// Where the agent starts in a file it has never read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ReadFrom {
    /// From its first line.
    #[default]
    Beginning,
    /// From its end as found at the first start.
    End,
}

/// The Exchange installation presets resolve against.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Exchange {
    /// 2007, 2010, 2013, 2016, 2019 or "se" (Subscription Edition).
    #[serde(default)]
    pub version: Version,
    /// `%ExchangeInstallPath%`; the version's default when absent.
    #[serde(default)]
    pub install_path: Option<PathBuf>,
}

impl Default for Exchange {
    fn default() -> Self {
        Exchange {
            version: Version::V2019,
            install_path: None,
        }
    }
}

/// An Exchange version, as far as log folders go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Version {
    V2007,
    V2010,
    V2013,
    V2016,
    #[default]
    V2019,
    Se,
}

impl<'de> Deserialize<'de> for Version {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // Written as a number (2019) or a string ("2019", "se").
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Number(i64),
            Text(String),
        }
        let text = match Raw::deserialize(d)? {
            Raw::Number(n) => n.to_string(),
            Raw::Text(t) => t.to_ascii_lowercase(),
        };
        Ok(match text.as_str() {
            "2007" => Version::V2007,
            "2010" => Version::V2010,
            "2013" => Version::V2013,
            "2016" => Version::V2016,
            "2019" => Version::V2019,
            "se" | "subscription" => Version::Se,
            _ => {
                return Err(serde::de::Error::custom(format!(
                    "{text:?} is not an Exchange version: want 2007, 2010, 2013, 2016, 2019 or \"se\""
                )));
            }
        })
    }
}

impl Version {
    /// `%ExchangeInstallPath%` of a default installation.
    fn default_install_path(self) -> PathBuf {
        PathBuf::from(match self {
            Version::V2007 => r"C:\Program Files\Microsoft\Exchange Server",
            Version::V2010 => r"C:\Program Files\Microsoft\Exchange Server\V14",
            _ => r"C:\Program Files\Microsoft\Exchange Server\V15",
        })
    }

    /// 2013 and later split transport into Front End, Hub and Mailbox services.
    fn split_transport(self) -> bool {
        !matches!(self, Version::V2007 | Version::V2010)
    }
}

/// Exchange's default log folders, by what they hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Preset {
    /// Message tracking (every transport server).
    MessageTracking,
    /// SMTP receive and send protocol logs of the Front End Transport service (2013+).
    SmtpFrontend,
    /// SMTP receive and send protocol logs of the Transport (Hub) service; on 2007/2010 the
    /// Hub Transport role's.
    SmtpHub,
    /// SMTP protocol logs of the Mailbox Transport Delivery and Submission services (2013+).
    SmtpMailbox,
    /// SMTP protocol logs of an Edge Transport server.
    SmtpEdge,
    /// Connectivity logs of every transport service.
    Connectivity,
    /// Anti-spam and transport agent logs.
    AgentLog,
    /// POP3 and IMAP4 protocol logs (client access).
    PopImap,
    /// Everything a Mailbox server (2013+) or Hub Transport server (2007/2010) writes.
    MailboxServer,
    /// Everything an Edge Transport server writes.
    EdgeServer,
}

impl Preset {
    /// The folders, relative to the install path, for `version`.
    fn folders(self, version: Version) -> Vec<&'static str> {
        let split = version.split_transport();
        match self {
            Preset::MessageTracking => vec![r"TransportRoles\Logs\MessageTracking"],
            Preset::SmtpFrontend if split => vec![
                r"TransportRoles\Logs\FrontEnd\ProtocolLog\SmtpReceive",
                r"TransportRoles\Logs\FrontEnd\ProtocolLog\SmtpSend",
            ],
            Preset::SmtpHub if split => vec![
                r"TransportRoles\Logs\Hub\ProtocolLog\SmtpReceive",
                r"TransportRoles\Logs\Hub\ProtocolLog\SmtpSend",
            ],
            Preset::SmtpHub => vec![
                r"TransportRoles\Logs\ProtocolLog\SmtpReceive",
                r"TransportRoles\Logs\ProtocolLog\SmtpSend",
            ],
            Preset::SmtpMailbox if split => vec![
                r"TransportRoles\Logs\Mailbox\ProtocolLog\SmtpReceive",
                r"TransportRoles\Logs\Mailbox\ProtocolLog\SmtpSend",
            ],
            Preset::SmtpEdge if split => vec![
                r"TransportRoles\Logs\Edge\ProtocolLog\SmtpReceive",
                r"TransportRoles\Logs\Edge\ProtocolLog\SmtpSend",
            ],
            // Before 2013 an Edge server logs where a Hub does.
            Preset::SmtpEdge => Preset::SmtpHub.folders(version),
            Preset::Connectivity if split => vec![
                r"TransportRoles\Logs\Hub\Connectivity",
                r"TransportRoles\Logs\FrontEnd\Connectivity",
                r"TransportRoles\Logs\Mailbox\Connectivity",
            ],
            Preset::Connectivity => vec![r"TransportRoles\Logs\Connectivity"],
            Preset::AgentLog if split => vec![
                r"TransportRoles\Logs\Hub\AgentLog",
                r"TransportRoles\Logs\FrontEnd\AgentLog",
            ],
            Preset::AgentLog => vec![r"TransportRoles\Logs\AgentLog"],
            Preset::PopImap => vec![r"Logging\Pop3", r"Logging\Imap4"],
            Preset::MailboxServer => [
                Preset::MessageTracking,
                Preset::SmtpFrontend,
                Preset::SmtpHub,
                Preset::SmtpMailbox,
                Preset::Connectivity,
                Preset::AgentLog,
            ]
            .into_iter()
            .flat_map(|p| p.folders(version))
            .collect(),
            Preset::EdgeServer if split => vec![
                r"TransportRoles\Logs\MessageTracking",
                r"TransportRoles\Logs\Edge\ProtocolLog\SmtpReceive",
                r"TransportRoles\Logs\Edge\ProtocolLog\SmtpSend",
                r"TransportRoles\Logs\Edge\Connectivity",
                r"TransportRoles\Logs\Edge\AgentLog",
            ],
            Preset::EdgeServer => [
                Preset::MessageTracking,
                Preset::SmtpHub,
                Preset::Connectivity,
                Preset::AgentLog,
            ]
            .into_iter()
            .flat_map(|p| p.folders(version))
            .collect(),
            // Front End and Mailbox transport services exist from 2013 on.
            Preset::SmtpFrontend | Preset::SmtpMailbox => Vec::new(),
        }
    }
}

/// One source: folders (a preset's, or its own), and which files in them.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceConfig {
    /// Exchange's default folders for this kind of log.
    #[serde(default)]
    pub preset: Option<Preset>,
    /// Folders or files of its own (with or instead of a preset).
    #[serde(default)]
    pub paths: Vec<PathBuf>,
    /// Only files whose name matches one of these globs (default: every file).
    #[serde(default)]
    pub include: Vec<String>,
    /// Not files whose name matches one of these.
    #[serde(default)]
    pub exclude: Vec<String>,
    /// Skip files not modified for this long (`30d`, `12h`).
    #[serde(default, deserialize_with = "duration")]
    pub ignore_older: Option<Duration>,
    /// The server these logs are filed under (default: from the rows, the folder, this host).
    #[serde(default)]
    pub server: Option<String>,
}

/// Where rows go.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case", deny_unknown_fields)]
pub enum SinkConfig {
    /// The Parquet lake.
    Parquet {
        /// The lake's root folder.
        path: PathBuf,
        /// zstd level, 1 to 22 (default 1).
        #[serde(default)]
        zstd_level: Option<i32>,
        /// Roll a file at this size (default `256M`).
        #[serde(default)]
        max_file_size: Option<String>,
        /// Roll a file at this many rows.
        #[serde(default)]
        max_file_rows: Option<u64>,
        /// Roll a file this long after it was opened (default `5m`).
        #[serde(default, deserialize_with = "duration")]
        max_file_age: Option<Duration>,
        /// `delta` or `parquet` (default `auto`: what the lake holds already; else Delta
        /// tables in an object store, plain Parquet in a folder).
        #[serde(default, deserialize_with = "table_format")]
        table_format: crate::ingest::TableFormat,
    },
    /// An Elasticsearch (or OpenSearch) cluster, through the bulk API.
    Elasticsearch(Box<EsSinkConfig>),
}

/// `type = "elasticsearch"`: where the cluster is, how to prove who we are, and how requests
/// are batched and retried. Every key but `url` has a default.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EsSinkConfig {
    /// The cluster's address, e.g. `https://es01.contoso.com:9200` (no credentials in it).
    pub url: String,
    /// The data streams' namespace: `logs-exchange.<table>-<namespace>` (default `default`).
    #[serde(default)]
    pub namespace: Option<String>,
    /// Basic authentication: the user …
    #[serde(default)]
    pub user: Option<String>,
    /// … and its password (write `${ES_PASSWORD}`: the environment's, never the file's).
    #[serde(default)]
    pub password: Option<String>,
    /// An API key, as Elasticsearch returns it in `encoded` (instead of user and password).
    #[serde(default)]
    pub api_key: Option<String>,
    /// A PEM file of certificate authorities to trust besides the system's.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Verify the cluster's certificate (default true; false only for a test cluster).
    #[serde(default)]
    pub verify_certificates: Option<bool>,
    /// Send a request once its body reaches this size before compression (default `5M`).
    #[serde(default)]
    pub max_bytes: Option<String>,
    /// … or it holds this many documents (default 10000).
    #[serde(default)]
    pub max_events: Option<usize>,
    /// … or its first document has waited this long (default `1s`).
    #[serde(default, deserialize_with = "duration")]
    pub max_age: Option<Duration>,
    /// Requests in flight at once (default 2).
    #[serde(default)]
    pub concurrency: Option<usize>,
    /// The first retry's delay, doubled at each retry (default `250ms`).
    #[serde(default, deserialize_with = "duration")]
    pub retry_initial: Option<Duration>,
    /// The longest delay between retries (default `30s`).
    #[serde(default, deserialize_with = "duration")]
    pub retry_max: Option<Duration>,
    /// Give up (and stop the run, unacknowledged) after this many retries of one request
    /// (default: never; a cluster that is down stalls reading until it is back).
    #[serde(default)]
    pub max_retries: Option<u32>,
    /// One request's timeout (default `90s`).
    #[serde(default, deserialize_with = "duration")]
    pub timeout: Option<Duration>,
    /// gzip request bodies (default true).
    #[serde(default)]
    pub compression: Option<bool>,
    /// Where documents the cluster refuses for good go, one JSON object a line with the
    /// cluster's reason (default `elasticsearch-dead-letter.ndjson` in the agent's state folder,
    /// or in the lake's `_dead_letter` folder for `ingest`).
    #[serde(default)]
    pub dead_letter: Option<PathBuf>,
}

impl EsSinkConfig {
    /// A sink for the cluster at `url`, with credentials from the environment:
    /// `MAILFLOW_ES_API_KEY`, or `MAILFLOW_ES_USER` and `MAILFLOW_ES_PASSWORD` (the command
    /// line's `--elasticsearch`, where a secret in an argument would show in `ps`).
    pub fn from_url(url: &str, namespace: Option<String>) -> Self {
        let var = |n: &str| std::env::var(n).ok().filter(|v| !v.is_empty());
        EsSinkConfig {
            url: url.to_string(),
            namespace,
            user: var("MAILFLOW_ES_USER"),
            password: var("MAILFLOW_ES_PASSWORD"),
            api_key: var("MAILFLOW_ES_API_KEY"),
            ..EsSinkConfig::default()
        }
    }

    /// The sink's settings, defaults filled in; `dead_letter` is the default dead letter.
    pub fn sink_config(
        &self,
        name: &str,
        dead_letter: PathBuf,
    ) -> Result<mailflow_sinks::es::EsConfig> {
        use mailflow_sinks::es::{Auth, EsConfig, Secret};
        let mut c = EsConfig::new(
            name,
            &self.url,
            self.dead_letter.clone().unwrap_or(dead_letter),
        );
        if let Some(ns) = &self.namespace {
            c.namespace = ns.clone();
        }
        c.auth = match (&self.user, &self.password, &self.api_key) {
            (None, None, None) => None,
            (Some(user), Some(password), None) => Some(Auth::Basic {
                user: user.clone(),
                password: Secret::new(password.clone()),
            }),
            (None, None, Some(key)) => Some(Auth::ApiKey(Secret::new(key.clone()))),
            (Some(_), None, None) => bail!("sinks.{name}.password: a user needs its password"),
            (None, Some(_), None) => bail!("sinks.{name}.user: a password needs its user"),
            _ => bail!("sinks.{name}.api_key: give an api_key or a user and password, not both"),
        };
        c.ca_file = self.ca_file.clone();
        c.verify_certificates = self.verify_certificates.unwrap_or(true);
        if let Some(size) = &self.max_bytes {
            let bytes =
                parse_size(size).map_err(|e| anyhow::anyhow!("sinks.{name}.max_bytes: {e}"))?;
            c.max_bytes = usize::try_from(bytes).unwrap_or(usize::MAX);
        }
        c.max_events = self.max_events.unwrap_or(c.max_events);
        c.max_age = self.max_age.unwrap_or(c.max_age);
        c.concurrency = self.concurrency.unwrap_or(c.concurrency);
        c.retry_initial = self.retry_initial.unwrap_or(c.retry_initial);
        c.retry_max = self.retry_max.unwrap_or(c.retry_max);
        c.max_retries = self.max_retries;
        c.timeout = self.timeout.unwrap_or(c.timeout);
        c.compression = self.compression.unwrap_or(true);
        c.fields = std::sync::Arc::new(crate::es::field_names());
        c.identities = std::sync::Arc::new(crate::es::identities());
        c.validate()
            .map_err(|e| anyhow::anyhow!("sinks.{name}: {e}"))?;
        Ok(c)
    }
}

impl SinkConfig {
    /// A parquet sink's table format (`auto` for other sinks).
    pub fn table_format(&self) -> crate::ingest::TableFormat {
        match self {
            SinkConfig::Parquet { table_format, .. } => *table_format,
            _ => crate::ingest::TableFormat::Auto,
        }
    }

    /// A parquet sink's root and its encoding and rolling, defaults filled in.
    pub fn lake_options(&self) -> Result<(PathBuf, mailflow_sinks::lake::LakeOptions)> {
        let SinkConfig::Parquet {
            path,
            zstd_level,
            max_file_size,
            max_file_rows,
            max_file_age,
            ..
        } = self
        else {
            bail!("not a parquet sink");
        };
        let d = mailflow_sinks::lake::LakeOptions::default();
        let size = max_file_size
            .as_deref()
            .map(parse_size)
            .transpose()
            .map_err(anyhow::Error::msg)?;
        Ok((
            path.clone(),
            mailflow_sinks::lake::LakeOptions {
                parquet: mailflow_sinks::parquet::ParquetOptions {
                    zstd_level: zstd_level.unwrap_or(mailflow_sinks::parquet::DEFAULT_ZSTD_LEVEL),
                    ..d.parquet.clone()
                },
                max_file_rows: max_file_rows.unwrap_or(d.max_file_rows).max(1),
                max_file_bytes: size.unwrap_or(d.max_file_bytes).max(1),
                max_file_age: max_file_age.unwrap_or(d.max_file_age),
                ..d
            },
        ))
    }
}

/// Says which key is wrong: inside a sink's table (a tagged enum), serde's own error for an
/// unknown value names no key.
fn table_format<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<crate::ingest::TableFormat, D::Error> {
    use crate::ingest::TableFormat;
    let text = String::deserialize(d)?;
    match text.as_str() {
        "auto" => Ok(TableFormat::Auto),
        "delta" => Ok(TableFormat::Delta),
        "parquet" => Ok(TableFormat::Parquet),
        _ => Err(serde::de::Error::custom(format!(
            "table_format = {text:?}: write \"delta\", \"parquet\" or \"auto\""
        ))),
    }
}

fn duration<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    let text = String::deserialize(d)?;
    humantime::parse_duration(text.trim())
        .map(Some)
        .map_err(|e| {
            serde::de::Error::custom(format!(
                "{text:?} is not a duration ({e}); write e.g. \"30d\", \"12h\" or \"5m\""
            ))
        })
}

/// A source made concrete: the folders to read and the filter for file names.
#[derive(Debug, Clone)]
pub struct Source {
    /// Folders and files, presets expanded.
    pub paths: Vec<PathBuf>,
    pub include: Option<GlobSet>,
    pub exclude: Option<GlobSet>,
    pub ignore_older: Option<Duration>,
    pub server: Option<String>,
    /// A missing folder is an error (named on the command line), or is passed over (a preset's
    /// folder for a log this server does not write, or not yet).
    pub strict: bool,
}

impl Source {
    /// Folders and files named on the command line: every file in them, filed under `server`
    /// if given.
    pub fn of_paths(paths: Vec<PathBuf>, server: Option<String>) -> Self {
        Source {
            paths,
            include: None,
            exclude: None,
            ignore_older: None,
            server,
            strict: true,
        }
    }

    /// Whether a file of this source is read, by its name.
    pub fn wants(&self, path: &Path) -> bool {
        let Some(name) = path.file_name() else {
            return false;
        };
        self.include.as_ref().is_none_or(|g| g.is_match(name))
            && !self.exclude.as_ref().is_some_and(|g| g.is_match(name))
    }
}

/// Reads, substitutes and parses `path`, then checks it; errors name the file and the key.
pub fn load(path: &Path) -> Result<Config> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("{}: cannot read the configuration", path.display()))?;
    parse(path, &text, |name| std::env::var(name).ok())
}

/// [`load`] of `text`, with `env` for the environment.
pub fn parse(path: &Path, text: &str, env: impl Fn(&str) -> Option<String>) -> Result<Config> {
    let shown = path.display();
    let text = substitute(text, env).map_err(|e| anyhow::anyhow!("{shown}:{e}"))?;
    let config: Config = toml::from_str(&text).map_err(|e| {
        // toml says which key, and where; put the file in front, as compilers do.
        // For a key the table does not take, toml points at the table's header: name it.
        let at = e
            .span()
            .map(|s| {
                let line = text[..s.start].matches('\n').count() + 1;
                let here = text[s.start..].lines().next().unwrap_or("").trim();
                if here.starts_with('[') {
                    format!(":{line} {here}")
                } else {
                    format!(":{line}")
                }
            })
            .unwrap_or_default();
        anyhow::anyhow!("{shown}{at}: {}", e.message().trim())
    })?;
    config
        .check()
        .map_err(|e| anyhow::anyhow!("{shown}: {e}"))?;
    Ok(config)
}

/// Replaces `${NAME}` and `${NAME:-default}` by the environment's value; `$$` is a `$`.
/// Comments are left as they are (they may show the syntax). Errors say `LINE: what`.
fn substitute(text: &str, env: impl Fn(&str) -> Option<String>) -> Result<String, String> {
    let mut out = String::with_capacity(text.len());
    // Where the text not yet copied starts.
    let mut done = 0;
    for i in dollars(text) {
        if i < done {
            continue; // part of a `$$` or `${…}` already replaced
        }
        out.push_str(&text[done..i]);
        let after = &text[i + 1..];
        let line = text[..i].matches('\n').count() + 1;
        if after.starts_with('$') {
            out.push('$');
            done = i + 2;
            continue;
        }
        let Some(body) = after.strip_prefix('{') else {
            out.push('$');
            done = i + 1;
            continue;
        };
        let Some(end) = body.find('}') else {
            return Err(format!("{line}: `${{` without its closing `}}`"));
        };
        let (name, default) = match body[..end].split_once(":-") {
            Some((n, d)) => (n, Some(d)),
            None => (&body[..end], None),
        };
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(format!(
                "{line}: `${{{name}}}` is not an environment variable name"
            ));
        }
        match (env(name), default) {
            (Some(v), _) => out.push_str(&v),
            (None, Some(d)) => out.push_str(d),
            (None, None) => {
                return Err(format!(
                    "{line}: the environment variable {name} is not set (`${{{name}}}`; give a default with `${{{name}:-…}}`)"
                ));
            }
        }
        done = i + 2 + end + 1;
    }
    out.push_str(&text[done..]);
    Ok(out)
}

/// Where `text` has a `$` that is not inside a comment; TOML strings are followed so that a
/// `#` inside one does not start a comment.
fn dollars(text: &str) -> Vec<usize> {
    let mut found = Vec::new();
    #[derive(PartialEq)]
    enum In {
        Code,
        Comment,
        Basic,
        Literal,
        MultiBasic,
        MultiLiteral,
    }
    let mut state = In::Code;
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let at = |s: &str| bytes[i..].starts_with(s.as_bytes());
        match state {
            In::Code => {
                if at("\"\"\"") {
                    state = In::MultiBasic;
                    i += 2;
                } else if at("'''") {
                    state = In::MultiLiteral;
                    i += 2;
                } else {
                    match bytes[i] {
                        b'#' => state = In::Comment,
                        b'"' => state = In::Basic,
                        b'\'' => state = In::Literal,
                        b'$' => found.push(i),
                        _ => {}
                    }
                }
            }
            In::Comment if bytes[i] == b'\n' => state = In::Code,
            In::Comment => {}
            In::Basic | In::MultiBasic if bytes[i] == b'\\' => i += 1,
            In::Basic if bytes[i] == b'"' || bytes[i] == b'\n' => state = In::Code,
            In::Literal if bytes[i] == b'\'' || bytes[i] == b'\n' => state = In::Code,
            In::MultiBasic if at("\"\"\"") => {
                state = In::Code;
                i += 2;
            }
            In::MultiLiteral if at("'''") => {
                state = In::Code;
                i += 2;
            }
            _ if bytes[i] == b'$' => found.push(i),
            _ => {}
        }
        i += 1;
    }
    found
}

impl Config {
    /// What TOML cannot say: a source needs folders, globs must compile, values in range.
    fn check(&self) -> Result<()> {
        if self.sources.is_empty() {
            bail!("no [[sources]]: name at least one (a `preset` or `paths`)");
        }
        if self.sinks.is_empty() {
            bail!("no [sinks.NAME]: name at least one (`type = \"parquet\"` and its `path`)");
        }
        for (i, s) in self.sources.iter().enumerate() {
            if s.preset.is_none() && s.paths.is_empty() {
                bail!("sources[{i}]: give a `preset` (Exchange's default folders) or `paths`");
            }
            if let Some(p) = s.preset
                && p.folders(self.exchange.version).is_empty()
            {
                bail!(
                    "sources[{i}].preset: Exchange {:?} has no such folders (Front End and Mailbox \
                     transport services came with 2013)",
                    self.exchange.version
                );
            }
            globs(&s.include, &format!("sources[{i}].include"))?;
            globs(&s.exclude, &format!("sources[{i}].exclude"))?;
            if let Some(server) = &s.server
                && mailflow_parser::canonical_server(server).is_none()
            {
                bail!(
                    "sources[{i}].server: {server:?} is not a server name (e.g. EX01 or ex01.contoso.com)"
                );
            }
        }
        let a = &self.agent;
        for (key, d) in [
            ("poll_interval", a.poll_interval),
            ("checkpoint_interval", a.checkpoint_interval),
        ] {
            if d.is_some_and(|d| d.is_zero()) {
                bail!("agent.{key}: must be longer than zero");
            }
        }
        if let Some(t) = a.threads
            && !(1..=1024).contains(&t)
        {
            bail!("agent.threads: {t} is not a number of threads from 1 to 1024");
        }
        if let Some(addr) = &a.metrics_addr
            && addr.parse::<std::net::SocketAddr>().is_err()
        {
            bail!(
                "agent.metrics_addr: {addr:?} is not an address and port (e.g. \"127.0.0.1:9464\")"
            );
        }
        for (name, sink) in &self.sinks {
            match sink {
                SinkConfig::Parquet {
                    zstd_level,
                    max_file_size,
                    max_file_rows,
                    ..
                } => {
                    if let Some(l) = zstd_level
                        && !(1..=22).contains(l)
                    {
                        bail!("sinks.{name}.zstd_level: {l} is not a zstd level from 1 to 22");
                    }
                    if let Some(size) = max_file_size {
                        parse_size(size)
                            .map_err(|e| anyhow::anyhow!("sinks.{name}.max_file_size: {e}"))?;
                    }
                    if *max_file_rows == Some(0) {
                        bail!("sinks.{name}.max_file_rows: a file holds at least one row");
                    }
                }
                SinkConfig::Elasticsearch(es) => {
                    es.sink_config(name, PathBuf::new())?;
                }
            }
        }
        Ok(())
    }

    /// The sources with presets turned into folders.
    pub fn resolve(&self) -> Result<Vec<Source>> {
        let install = self
            .exchange
            .install_path
            .clone()
            .unwrap_or_else(|| self.exchange.version.default_install_path());
        self.sources
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let mut paths: Vec<PathBuf> = s
                    .preset
                    .map(|p| {
                        p.folders(self.exchange.version)
                            .into_iter()
                            .map(|f| join_windows(&install, f))
                            .collect()
                    })
                    .unwrap_or_default();
                paths.extend(s.paths.iter().cloned());
                Ok(Source {
                    paths,
                    include: globs(&s.include, &format!("sources[{i}].include"))?,
                    exclude: globs(&s.exclude, &format!("sources[{i}].exclude"))?,
                    ignore_older: s.ignore_older,
                    server: s
                        .server
                        .as_deref()
                        .and_then(mailflow_parser::canonical_server),
                    strict: false,
                })
            })
            .collect()
    }

    /// Where the agent keeps its state: `agent.state_dir`, else `mailflow-state` beside the
    /// configuration file.
    pub fn state_dir(&self, config_path: &Path) -> PathBuf {
        self.agent.state_dir.clone().unwrap_or_else(|| {
            config_path
                .parent()
                .unwrap_or(Path::new("."))
                .join("mailflow-state")
        })
    }

    /// The one Parquet lake sink: its name and settings. `ingest` writes one lake.
    pub fn lake(&self) -> Result<(&str, &SinkConfig)> {
        let mut lakes = self
            .sinks
            .iter()
            .filter(|(_, s)| matches!(s, SinkConfig::Parquet { .. }));
        match (lakes.next(), lakes.next()) {
            (Some((name, s)), None) => Ok((name, s)),
            (None, _) => bail!("no sink of `type = \"parquet\"`: ingest writes a lake"),
            (Some(_), Some(_)) => bail!("more than one parquet sink: ingest writes one lake"),
        }
    }

    /// The Elasticsearch sinks' settings, `dead_letter(name)` their default dead letters.
    pub fn elasticsearch(
        &self,
        dead_letter: impl Fn(&str) -> PathBuf,
    ) -> Result<Vec<mailflow_sinks::es::EsConfig>> {
        self.sinks
            .iter()
            .filter_map(|(name, s)| match s {
                SinkConfig::Elasticsearch(es) => Some(es.sink_config(name, dead_letter(name))),
                SinkConfig::Parquet { .. } => None,
            })
            .collect()
    }

    /// What the configuration resolves to, for a person: sources with their folders (and
    /// whether each exists here), then sinks.
    pub fn describe(&self) -> Result<String> {
        let mut s = String::new();
        for (i, source) in self.resolve()?.iter().enumerate() {
            let _ = writeln!(s, "sources[{i}]:");
            for p in &source.paths {
                let here = if p.exists() {
                    ""
                } else {
                    "  (not on this machine)"
                };
                let _ = writeln!(s, "  {}{here}", p.display());
            }
        }
        for (name, sink) in &self.sinks {
            match sink {
                SinkConfig::Parquet { path, .. } => {
                    let _ = writeln!(s, "sinks.{name}: parquet lake at {}", path.display());
                }
                SinkConfig::Elasticsearch(es) => {
                    let _ = writeln!(s, "sinks.{name}: elasticsearch at {}", es.url);
                }
            }
        }
        Ok(s)
    }
}

/// Joins a Windows-style relative folder to the install path with this platform's separator.
fn join_windows(base: &Path, rel: &str) -> PathBuf {
    rel.split('\\')
        .fold(base.to_path_buf(), |p, part| p.join(part))
}

fn globs(patterns: &[String], key: &str) -> Result<Option<GlobSet>> {
    if patterns.is_empty() {
        return Ok(None);
    }
    let mut b = GlobSetBuilder::new();
    for (j, p) in patterns.iter().enumerate() {
        // File names on Windows compare without regard to case; so do Exchange's own.
        let glob = globset::GlobBuilder::new(p)
            .case_insensitive(true)
            .literal_separator(true)
            .build()
            .map_err(|e| anyhow::anyhow!("{key}[{j}]: {p:?} is not a glob: {}", e.kind()))?;
        b.add(glob);
    }
    Ok(Some(b.build().with_context(|| key.to_string())?))
}

/// `256M`, `1G`, `4096`: bytes.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let (num, mult) = match s.char_indices().find(|(_, c)| c.is_ascii_alphabetic()) {
        Some((i, _)) => {
            let mult = match s[i..].to_ascii_uppercase().trim_end_matches(['B', 'I']) {
                "" => 1,
                "K" => 1 << 10,
                "M" => 1 << 20,
                "G" => 1 << 30,
                "T" => 1 << 40,
                other => {
                    return Err(format!(
                        "{s:?} is not a size: unknown suffix {other:?} (use K, M, G or T)"
                    ));
                }
            };
            (&s[..i], mult)
        }
        None => (s, 1),
    };
    num.trim()
        .parse::<u64>()
        .map(|n| n * mult)
        .map_err(|e| format!("{s:?} is not a size: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        (name == "SECRET").then(|| "s3cr3t".to_string())
    }

    #[test]
    fn variables_are_replaced_outside_comments() {
        let text = "# shows ${NOT_SET}\npath = \"${SECRET}\" # ${ALSO_NOT}\nx = '#${SECRET}'\ny = \"${NONE:-d}$$\"\n";
        assert_eq!(
            substitute(text, env).unwrap(),
            "# shows ${NOT_SET}\npath = \"s3cr3t\" # ${ALSO_NOT}\nx = '#s3cr3t'\ny = \"d$\"\n"
        );
        assert!(
            substitute("a = 1\nb = \"${NOPE}\"", env)
                .unwrap_err()
                .starts_with("2: ")
        );
        assert!(substitute("b = \"${bad name}\"", env).is_err());
        assert!(substitute("b = \"${OPEN\"", env).is_err());
        // A `#` inside a multi-line string starts no comment.
        assert_eq!(
            substitute("m = \"\"\"a # b ${SECRET}\"\"\"", env).unwrap(),
            "m = \"\"\"a # b s3cr3t\"\"\""
        );
    }

    #[test]
    fn a_lake_sink_names_its_table_format() {
        let with = |format: &str| {
            parse(
                Path::new("m.toml"),
                &format!(
                    "[[sources]]\npaths = [\"/logs\"]\n[sinks.l]\ntype = \"parquet\"\npath = \"s3://b/l\"\n{format}"
                ),
                env,
            )
        };
        let format = |c: Config| c.lake().unwrap().1.table_format();
        use crate::ingest::TableFormat;
        assert_eq!(format(with("").unwrap()), TableFormat::Auto);
        assert_eq!(
            format(with("table_format = \"delta\"").unwrap()),
            TableFormat::Delta
        );
        assert_eq!(
            format(with("table_format = \"parquet\"").unwrap()),
            TableFormat::Parquet
        );
        let err = format!("{:#}", with("table_format = \"orc\"").unwrap_err());
        assert!(
            err.contains("table_format") && err.contains("m.toml"),
            "{err}"
        );
    }

    #[test]
    fn presets_follow_the_version() {
        let hub = |v| Preset::SmtpHub.folders(v);
        assert_eq!(
            hub(Version::V2010)[0],
            r"TransportRoles\Logs\ProtocolLog\SmtpReceive"
        );
        assert_eq!(
            hub(Version::V2019)[0],
            r"TransportRoles\Logs\Hub\ProtocolLog\SmtpReceive"
        );
        assert!(Preset::SmtpFrontend.folders(Version::V2007).is_empty());
        assert_eq!(Preset::MailboxServer.folders(Version::V2016).len(), 12);
        let c = parse(
            Path::new("m.toml"),
            "[exchange]\nversion = \"2010\"\n[[sources]]\npreset = \"message-tracking\"\n[sinks.l]\ntype = \"parquet\"\npath = \"/l\"\n",
            env,
        )
        .unwrap();
        let folder = &c.resolve().unwrap()[0].paths[0];
        assert!(folder.ends_with("MessageTracking"), "{folder:?}");
        assert!(
            folder.starts_with(r"C:\Program Files\Microsoft\Exchange Server\V14"),
            "{folder:?}"
        );
    }

    #[test]
    fn globs_match_names_without_case() {
        let c = parse(
            Path::new("m.toml"),
            "[[sources]]\npaths = [\"/x\"]\ninclude = [\"MSGTRK*.log\"]\nexclude = [\"*MD*\"]\n[sinks.l]\ntype = \"parquet\"\npath = \"/l\"\n",
            env,
        )
        .unwrap();
        let s = &c.resolve().unwrap()[0];
        assert!(s.wants(Path::new("/x/MSGTRK2024012500-1.LOG")));
        assert!(!s.wants(Path::new("/x/MSGTRKMD2024012500-1.LOG")));
        assert!(!s.wants(Path::new("/x/RECV2024012500-1.LOG")));
    }
}
