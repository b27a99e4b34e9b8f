//! A simulated Exchange organisation writing its transport logs: the logs `mailflow generate`
//! writes.
//!
//! Messages are simulated one at a time, in time order, as they cross the fleet: an Internet
//! sender's MTA hands a message to a server's Front End (a receive session and a tracking
//! RECEIVE), the server delivers it or relays it to the recipient's own server (a send session
//! there, a receive session on the other server, tracking on both); a user's message leaves
//! through a send session to the remote domain's MX host (tracking SEND naming that host in
//! `server-hostname`, as Exchange writes it, and connectivity lines). So every kind of log
//! holds the same messages and sessions: ids, times and hosts agree across them.
//!
//! What makes it look like a fleet rather than a load generator: traffic follows the working
//! day over `days` days; senders, recipients and remote domains are drawn from fixed pools with
//! a few heavy hitters (Zipf weights), so the same MTAs and users come back; a session keeps
//! its ports and EHLO name; hop latencies spread from milliseconds to minutes; each domain
//! keeps its TLS version and cipher; and about 3% of messages meet a failure an admin would
//! diagnose (a send certificate without its private key, a remote block list, an unknown
//! domain, Kerberos trouble between servers, a full mailbox), most deferred and retried.
//!
//! Lines wait in a heap until no later message can write an earlier line, then go to their
//! file, so each file is in time order and memory holds only the lines of messages in flight.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::fs;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};

use super::{LogFile, PROTOCOL_FIELDS, ROLL_BYTES, SUBJECTS, TRACKING_FIELDS, field, ts};

/// 2024-01-25T00:00:00Z, where the simulated traffic starts.
const START_MS: i64 = 1_706_140_800_000;
const DAY_MS: i64 = 86_400_000;
const CONNECTIVITY_FIELDS: &str = "date-time,session,source,Destination,direction,description";
const EXCHANGE_BUILD: &str = "15.02.1258.012";

const FIRST: &[&str] = &[
    "alex", "megan", "lidia", "joni", "grady", "isaiah", "miriam", "nestor", "patti", "lynne",
    "diego", "adele", "björn", "chen", "priya", "olga", "kwame", "sofia", "jun", "amara",
];
const LAST: &[&str] = &[
    "wilber",
    "bowen",
    "holloway",
    "sherman",
    "archie",
    "langer",
    "graham",
    "wilke",
    "fernandez",
    "robbins",
    "siciliani",
    "vance",
    "müller",
    "li",
    "patel",
    "ivanova",
    "mensah",
    "rossi",
    "tanaka",
    "okafor",
];
const ORGS: &[&str] = &[
    "fabrikam",
    "adatum",
    "northwindtraders",
    "tailspintoys",
    "woodgrovebank",
    "litwareinc",
    "proseware",
    "wingtiptoys",
    "fourthcoffee",
    "lucernepublishing",
    "margiestravel",
    "alpineskihouse",
    "blueyonderairlines",
    "cpandl",
    "humongousinsurance",
    "relecloud",
    "treyresearch",
    "wideworldimporters",
    "cohowinery",
    "müller-bau",
];
const TLDS: &[&str] = &[".com", ".net", ".org", ".de", ".co.uk", ".fr"];

/// Remote organisations mail goes to and comes from. A real fleet's outbound `SEND` rows name
/// thousands of remote hosts, a few of them most of the time (the pick is Zipf-weighted).
const REMOTE_DOMAINS: usize = 5_000;

/// Schannel's protocol and algorithms for one TLS profile (`{side}` is SERVER or CLIENT).
const TLS_PROFILES: &[(&str, &str, &str, &str, u32)] = &[
    (
        "TLS1_2",
        "CALG_AES_256",
        "CALG_SHA_384",
        "CALG_ECDH_EPHEM",
        384,
    ),
    (
        "TLS1_3",
        "CALG_AES_256",
        "CALG_SHA_384",
        "CALG_ECDH_EPHEM",
        384,
    ),
    (
        "TLS1_2",
        "CALG_AES_128",
        "CALG_SHA_256",
        "CALG_ECDH_EPHEM",
        256,
    ),
    ("TLS1", "CALG_AES_128", "CALG_SHA1", "CALG_RSA_KEYX", 2048),
];

/// What the simulation writes, and how much.
#[derive(Debug, Clone)]
pub struct FleetOptions {
    /// The kinds of log written (the others are simulated and dropped).
    pub kinds: Vec<LogFile>,
    /// About how many bytes in all.
    pub bytes: u64,
    pub seed: u64,
    pub servers: usize,
    /// Days the traffic spreads over, from 2024-01-25.
    pub days: u32,
}

/// Where the simulation's logs go.
#[derive(Debug, Clone, Copy)]
enum Output<'a> {
    /// Per-server log folders under this one.
    Dir(&'a Path),
    /// One buffer (one server, one kind).
    Memory,
    /// Nowhere: the bytes are only counted.
    Trial,
}

/// Zipf-weighted choice among `n` items: item `k` weighs `1 / (k + 1)^s`.
#[derive(Debug)]
struct Zipf(Vec<f64>);

impl Zipf {
    fn new(n: usize, s: f64) -> Self {
        let mut total = 0.0;
        Zipf(
            (0..n)
                .map(|k| {
                    total += 1.0 / ((k + 1) as f64).powf(s);
                    total
                })
                .collect(),
        )
    }

    fn sample(&self, rng: &mut StdRng) -> usize {
        let total = self.0.last().copied().unwrap_or(0.0);
        let u = rng.random_range(0.0..total.max(f64::MIN_POSITIVE));
        self.0.partition_point(|&c| c <= u).min(self.0.len() - 1)
    }
}

/// A remote organisation: its domain, its outbound MTA, its MX host and what TLS it speaks.
#[derive(Debug)]
struct Domain {
    name: String,
    /// The MTA its mail comes from (EHLO name) and that MTA's address.
    mta: String,
    mta_ip: String,
    /// Its MX host (where our mail goes) and address.
    mx: String,
    mx_ip: String,
    /// Index into [`TLS_PROFILES`]; `None` for a domain that offers no STARTTLS.
    tls: Option<usize>,
    cert_serial: String,
    cert_thumbprint: String,
    /// Mail to it bounces: it does not exist (DNS fails).
    nonexistent: bool,
}

/// One of our servers.
#[derive(Debug)]
struct Server {
    name: String,
    fqdn: String,
    ip: String,
    next_internal_id: i64,
    next_session: u64,
    /// The SMTP certificate the server's receive connectors show.
    thumbprint: String,
    serial: String,
    /// While the outbound certificate has lost its private key (from, to): TLS to the Internet
    /// fails (NoCredentials) until an admin fixes it.
    broken_send_cert: Option<(i64, i64)>,
}

/// A mailbox user of ours: an address and the server holding the mailbox.
#[derive(Debug)]
struct User {
    address: String,
    server: usize,
}

/// A line waiting for its turn: time, order of writing, stream, bytes.
type Pending = Reverse<(i64, u64, usize, Vec<u8>)>;

/// Where a stream's lines go.
#[derive(Debug)]
enum Target {
    /// Nowhere: its kind was not asked for, or this is the trial run.
    Discard,
    /// Log files under a folder, rolled daily and at [`ROLL_BYTES`].
    Dir(PathBuf),
    /// One buffer, header first, never rolled.
    Memory(Vec<u8>),
}

/// One output stream (a server's log of one kind in one folder).
#[derive(Debug)]
struct Stream {
    target: Target,
    prefix: &'static str,
    kind: StreamKind,
    file: Option<(BufWriter<fs::File>, usize)>,
    /// The day (ms at midnight) of the open file, and files opened that day.
    day: i64,
    n: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StreamKind {
    Tracking,
    Receive,
    Send,
    Connectivity,
}

impl StreamKind {
    fn file(self) -> LogFile {
        match self {
            StreamKind::Tracking => LogFile::MessageTracking,
            StreamKind::Receive => LogFile::SmtpReceive,
            StreamKind::Send => LogFile::SmtpSend,
            StreamKind::Connectivity => LogFile::Connectivity,
        }
    }
}

/// Streams per server, in this order.
const FRONTEND_RECEIVE: usize = 0;
const HUB_RECEIVE: usize = 1;
const SEND: usize = 2;
const CONNECTIVITY: usize = 3;
const TRACKING: usize = 4;
const STREAMS_PER_SERVER: usize = 5;

/// A tracking row's fields that vary between events of one message.
#[derive(Debug, Default, Clone, Copy)]
struct Track<'a> {
    client_ip: &'a str,
    client_host: &'a str,
    server_ip: &'a str,
    server_host: &'a str,
    source_context: &'a str,
    connector: &'a str,
    source: &'a str,
    event: &'a str,
    internal_id: i64,
    recipients: &'a str,
    status: &'a str,
    recipient_count: usize,
    related: &'a str,
    info: &'a str,
    directionality: &'a str,
    custom: &'a str,
}

/// A message's fields that every tracking row of it repeats.
#[derive(Debug, Clone)]
struct Message {
    id: String,
    network_id: String,
    sender: String,
    subject: &'static str,
    size: u64,
}

/// The simulation.
struct Fleet {
    rng: StdRng,
    servers: Vec<Server>,
    users: Vec<User>,
    user_pick: Zipf,
    domains: Vec<Domain>,
    domain_pick: Zipf,
    /// Remote senders: (local part, domain).
    outsiders: Vec<(String, usize)>,
    outsider_pick: Zipf,
    streams: Vec<Stream>,
    /// A trial run counts the bytes of the kinds asked for (`trial_kinds`, per stream) and
    /// writes nothing.
    trial: bool,
    trial_kinds: Vec<bool>,
    heap: BinaryHeap<Pending>,
    order: u64,
    /// Bytes written or waiting, of the kinds asked for.
    bytes: u64,
    files: Vec<PathBuf>,
}

/// About `bytes` of one server's log of `kind` over a day, in memory, as one file (no roll):
/// inputs for parse benchmarks.
pub fn fleet_log(kind: LogFile, bytes: usize, seed: u64) -> Result<Vec<u8>> {
    let opts = FleetOptions {
        kinds: vec![kind],
        bytes: bytes as u64,
        seed,
        servers: 1,
        days: 1,
    };
    let mut fleet = simulate(&opts, Output::Memory)?;
    fleet.flush_until(i64::MAX)?;
    Ok(fleet
        .streams
        .iter_mut()
        .find_map(|s| match &mut s.target {
            Target::Memory(buf) => Some(std::mem::take(buf)),
            _ => None,
        })
        .unwrap_or_default())
}

/// Writes the simulated fleet's logs under `out`, per server. Returns the files written.
pub fn generate_fleet(opts: &FleetOptions, out: &Path) -> Result<Vec<PathBuf>> {
    let mut fleet = simulate(opts, Output::Dir(out))?;
    fleet.flush_until(i64::MAX)?;
    fleet.close()
}

/// Runs the simulation until `opts.bytes` are written or queued.
fn simulate(opts: &FleetOptions, out: Output<'_>) -> Result<Fleet> {
    let servers = opts.servers.max(1);
    let days = i64::from(opts.days.max(1));
    // How many bytes of the asked-for kinds a message makes, measured on a trial run: the
    // messages are then spread over the days so that the bytes run out at the end.
    let per_message = {
        let mut trial = Fleet::new(opts.seed ^ 0x5eed, servers, &opts.kinds, Output::Trial)?;
        const TRIAL: u64 = 400;
        for i in 0..TRIAL {
            trial.message(START_MS + i as i64 * 1000)?;
        }
        (trial.bytes / TRIAL).max(1)
    };
    let messages = (opts.bytes / per_message).max(1);
    let hours = diurnal_cdf();
    let mut fleet = Fleet::new(opts.seed, servers, &opts.kinds, out)?;
    let mut i = 0u64;
    while fleet.bytes < opts.bytes {
        // Message i's share of the whole, mapped through the working day's traffic curve.
        let f = (i as f64 + fleet.rng.random_range(0.0..1.0)) / messages as f64;
        let t = START_MS + at_fraction(&hours, f.min(0.999_999) * days as f64);
        fleet.flush_until(t)?;
        fleet.message(t)?;
        i += 1;
    }
    Ok(fleet)
}

/// Cumulative share of a day's traffic by the end of each hour: quiet nights, busy office
/// hours.
fn diurnal_cdf() -> [f64; 24] {
    const WEIGHT: [f64; 24] = [
        1.0, 0.8, 0.7, 0.7, 0.8, 1.2, 2.0, 4.0, 7.0, 8.0, 8.0, 7.5, 6.0, 7.0, 8.0, 7.5, 6.5, 5.0,
        3.5, 2.5, 2.0, 1.8, 1.5, 1.2,
    ];
    let total: f64 = WEIGHT.iter().sum();
    let mut acc = 0.0;
    WEIGHT.map(|w| {
        acc += w / total;
        acc
    })
}

/// Milliseconds from the start for `days_f` (a fraction of the days, e.g. 2.5): whole days,
/// then the day's fraction through the traffic curve.
fn at_fraction(cdf: &[f64; 24], days_f: f64) -> i64 {
    let day = days_f.floor();
    let f = days_f - day;
    let hour = cdf.partition_point(|&c| c < f).min(23);
    let before = if hour == 0 { 0.0 } else { cdf[hour - 1] };
    let within = ((f - before) / (cdf[hour] - before)).clamp(0.0, 1.0);
    (day as i64) * DAY_MS + ((hour as f64 + within) * 3_600_000.0) as i64
}

impl Fleet {
    fn new(seed: u64, servers: usize, kinds: &[LogFile], out: Output<'_>) -> Result<Self> {
        let mut rng = StdRng::seed_from_u64(seed);
        let hex = |rng: &mut StdRng, digits: usize| -> String {
            (0..digits)
                .map(|_| char::from(b"0123456789ABCDEF"[rng.random_range(0..16)]))
                .collect()
        };
        let servers: Vec<Server> = (0..servers)
            .map(|s| Server {
                name: format!("EX{:02}", s + 1),
                fqdn: format!("ex{:02}.contoso.com", s + 1),
                ip: format!("10.0.1.{}", 10 + s),
                next_internal_id: 70_912_345_566_403 + s as i64 * 1_000_000_000,
                next_session: 0x08DC_1DB8_591B_0000 + (s as u64) * 0x1_0000_0000,
                thumbprint: hex(&mut rng, 40),
                serial: hex(&mut rng, 32),
                // The last server's send certificate loses its private key on the first
                // morning, for two hours.
                broken_send_cert: (s + 1 == servers && servers > 1)
                    .then_some((START_MS + 9 * 3_600_000, START_MS + 11 * 3_600_000)),
            })
            .collect();
        let mut domains = Vec::new();
        for i in 0..REMOTE_DOMAINS {
            {
                let (org, tld) = (ORGS[i % ORGS.len()], TLDS[i / ORGS.len() % TLDS.len()]);
                let name = match i / (ORGS.len() * TLDS.len()) {
                    0 => format!("{org}{tld}"),
                    n => format!("{org}{n}{tld}"),
                };
                let ip = |rng: &mut StdRng| {
                    format!(
                        "{}.{}.{}.{}",
                        rng.random_range(20..220),
                        rng.random_range(0..255),
                        rng.random_range(0..255),
                        rng.random_range(1..254)
                    )
                };
                // Many organisations' mail is hosted by Exchange Online.
                let hosted = rng.random_range(0..10) < 4;
                let mx = if hosted {
                    format!(
                        "{}.mail.protection.outlook.com",
                        name.replace(['.', 'ü'], "-")
                    )
                } else {
                    format!("mail.{name}")
                };
                let tls = match rng.random_range(0..100) {
                    0..2 => None,
                    2..7 => Some(3),
                    7..22 => Some(1),
                    22..40 => Some(2),
                    _ => Some(0),
                };
                domains.push(Domain {
                    mta: if hosted {
                        format!("{}.outbound.protection.outlook.com", name.replace('.', "-"))
                    } else {
                        format!("smtp.{name}")
                    },
                    mta_ip: ip(&mut rng),
                    mx,
                    mx_ip: ip(&mut rng),
                    tls,
                    cert_serial: hex(&mut rng, 32),
                    cert_thumbprint: hex(&mut rng, 40),
                    nonexistent: false,
                    name,
                });
            }
        }
        // The heavy hitters (the first in Zipf order) are any organisations, not one's TLDs.
        domains.shuffle(&mut rng);
        // A few domains people mistype: no such domain.
        for typo in ["contsoo.com", "fabrikan.com", "gmial.com"] {
            domains.push(Domain {
                name: typo.into(),
                mta: String::new(),
                mta_ip: String::new(),
                mx: String::new(),
                mx_ip: String::new(),
                tls: None,
                cert_serial: String::new(),
                cert_thumbprint: String::new(),
                nonexistent: true,
            });
        }
        let n_users = 40 * servers.len();
        let users: Vec<User> = (0..n_users)
            .map(|u| User {
                address: format!(
                    "{}.{}{}@contoso.com",
                    FIRST[u % FIRST.len()],
                    LAST[(u / FIRST.len()) % LAST.len()],
                    if u >= FIRST.len() * LAST.len() {
                        (u / (FIRST.len() * LAST.len())).to_string()
                    } else {
                        String::new()
                    }
                ),
                server: rng.random_range(0..servers.len()),
            })
            .collect();
        let real_domains = domains.len() - 3;
        let domain_pick = Zipf::new(real_domains, 1.1);
        // Who writes to us: mostly people at the organisations we write to most.
        let outsiders: Vec<(String, usize)> = (0..600)
            .map(|_| {
                let local = format!(
                    "{}.{}",
                    FIRST[rng.random_range(0..FIRST.len())],
                    LAST[rng.random_range(0..LAST.len())]
                );
                (local, domain_pick.sample(&mut rng))
            })
            .collect();
        let mut streams = Vec::new();
        for s in &servers {
            let root = match out {
                Output::Dir(o) => Some(o.join(&s.name).join("TransportRoles").join("Logs")),
                _ => None,
            };
            for (sub, prefix, kind) in [
                (
                    &["FrontEnd", "ProtocolLog", "SmtpReceive"][..],
                    "RECV",
                    StreamKind::Receive,
                ),
                (
                    &["Hub", "ProtocolLog", "SmtpReceive"],
                    "RECV",
                    StreamKind::Receive,
                ),
                (
                    &["Hub", "ProtocolLog", "SmtpSend"],
                    "SEND",
                    StreamKind::Send,
                ),
                (
                    &["Hub", "Connectivity"],
                    "CONNECTLOG",
                    StreamKind::Connectivity,
                ),
                (&["MessageTracking"], "MSGTRK", StreamKind::Tracking),
            ] {
                let wanted = kinds.contains(&kind.file());
                let target = match (&root, out) {
                    (_, Output::Trial) => Target::Discard,
                    (Some(root), _) if wanted => {
                        Target::Dir(sub.iter().fold(root.clone(), |p, s| p.join(s)))
                    }
                    // In memory, one stream of the one kind: the Front End's receive log.
                    (None, Output::Memory) if wanted && streams.len() != HUB_RECEIVE => {
                        Target::Memory(Vec::new())
                    }
                    _ => Target::Discard,
                };
                streams.push(Stream {
                    target,
                    prefix,
                    kind,
                    file: None,
                    day: i64::MIN,
                    n: 0,
                });
            }
        }
        let trial = matches!(out, Output::Trial);
        let trial_kinds: Vec<bool> = streams
            .iter()
            .map(|s| kinds.contains(&s.kind.file()))
            .collect();
        Ok(Fleet {
            trial,
            trial_kinds,
            user_pick: Zipf::new(users.len(), 0.8),
            domain_pick,
            outsider_pick: Zipf::new(outsiders.len(), 1.0),
            rng,
            servers,
            users,
            domains,
            outsiders,
            streams,
            heap: BinaryHeap::new(),
            order: 0,
            bytes: 0,
            files: Vec::new(),
        })
    }

    /// Queues a line for `stream` at time `t`.
    fn emit(&mut self, t: i64, stream: usize, line: Vec<u8>) {
        if self.trial {
            if self.trial_kinds[stream] {
                self.bytes += line.len() as u64;
            }
        } else if !matches!(self.streams[stream].target, Target::Discard) {
            self.bytes += line.len() as u64;
            self.order += 1;
            self.heap.push(Reverse((t, self.order, stream, line)));
        }
    }

    /// Writes every queued line up to time `t`.
    fn flush_until(&mut self, t: i64) -> Result<()> {
        while self.heap.peek().is_some_and(|Reverse(p)| p.0 <= t) {
            let Some(Reverse((at, _, stream, line))) = self.heap.pop() else {
                break;
            };
            self.write(at, stream, &line)?;
        }
        Ok(())
    }

    /// Appends a line to its stream: to its file, opening a new one on a new day or past the
    /// roll size (each with its header, dated by its first line), or to its buffer.
    fn write(&mut self, t: i64, stream: usize, line: &[u8]) -> Result<()> {
        let s = &mut self.streams[stream];
        let dir = match &mut s.target {
            Target::Discard => return Ok(()),
            Target::Memory(buf) => {
                if buf.is_empty() {
                    buf.extend_from_slice(header(s.kind, t).as_bytes());
                }
                buf.extend_from_slice(line);
                return Ok(());
            }
            Target::Dir(dir) => dir,
        };
        let day = t.div_euclid(DAY_MS) * DAY_MS;
        let full = s
            .file
            .as_ref()
            .is_some_and(|(_, n)| n + line.len() > ROLL_BYTES);
        if s.file.is_none() || day != s.day || full {
            if let Some((mut f, _)) = s.file.take() {
                f.flush()?;
            }
            if day != s.day {
                s.day = day;
                s.n = 0;
            }
            s.n += 1;
            fs::create_dir_all(&*dir).with_context(|| format!("creating {}", dir.display()))?;
            let stamp = ts(t).replace(['-', 'T', ':'], "");
            let path = dir.join(format!("{}{}-{}.LOG", s.prefix, &stamp[..10], s.n));
            let mut f = BufWriter::with_capacity(
                1 << 16,
                fs::File::create(&path).with_context(|| format!("writing {}", path.display()))?,
            );
            let header = header(s.kind, t);
            f.write_all(header.as_bytes())?;
            self.files.push(path);
            s.file = Some((f, header.len()));
        }
        if let Some((f, n)) = s.file.as_mut() {
            f.write_all(line)
                .with_context(|| format!("writing under {}", dir.display()))?;
            *n += line.len();
        }
        Ok(())
    }

    fn close(mut self) -> Result<Vec<PathBuf>> {
        for s in &mut self.streams {
            if let Some((mut f, _)) = s.file.take() {
                f.flush()?;
            }
        }
        Ok(self.files)
    }

    /// A hop's delay in ms: mostly tens of milliseconds, sometimes seconds, and now and then
    /// up to a minute or more in a busy queue.
    fn hop(&mut self) -> i64 {
        let z: f64 = self.rng.random_range(-1.0..1.0) + self.rng.random_range(-1.0..1.0);
        let busy = if self.rng.random_range(0..100) == 0 {
            self.rng.random_range(5_000..90_000)
        } else {
            0
        };
        (40.0 * (1.6 * z).exp()) as i64 + 1 + busy
    }

    fn guid(&mut self) -> String {
        let v: u128 = self.rng.random();
        let h = format!("{v:032x}");
        format!(
            "{}-{}-{}-{}-{}",
            &h[0..8],
            &h[8..12],
            &h[12..16],
            &h[16..20],
            &h[20..32]
        )
    }

    fn session_id(&mut self, server: usize) -> String {
        let s = &mut self.servers[server];
        s.next_session += 1 + self.rng.random_range(0..3);
        format!("{:016X}", s.next_session)
    }

    fn internal_id(&mut self, server: usize) -> i64 {
        let s = &mut self.servers[server];
        s.next_internal_id += 1 + self.rng.random_range(0..4);
        s.next_internal_id
    }

    /// A message's size: median near 30 KB, a long tail of attachments.
    fn size(&mut self) -> u64 {
        let z: f64 = (0..4)
            .map(|_| self.rng.random_range(-1.0..1.0))
            .sum::<f64>();
        ((30_000.0 * (1.2 * z).exp()) as u64).clamp(900, 35_000_000)
    }

    fn new_message(&mut self, sender: String, sender_host: &str) -> Message {
        let id = format!(
            "<{}@{}>",
            self.guid().replace('-', "").to_ascii_uppercase(),
            sender_host
        );
        Message {
            id,
            network_id: self.guid(),
            sender,
            subject: SUBJECTS[self.rng.random_range(0..SUBJECTS.len())],
            size: self.size(),
        }
    }

    /// Simulates one message entering the organisation at `t`.
    fn message(&mut self, t: i64) -> Result<()> {
        match self.rng.random_range(0..100) {
            0..40 => self.inbound(t),
            40..75 => self.outbound(t),
            _ => self.internal(t),
        }
        Ok(())
    }

    /// Internet mail to our users.
    fn inbound(&mut self, t: i64) {
        let o = self.outsider_pick.sample(&mut self.rng);
        let (local, d) = self.outsiders[o].clone();
        let sender = format!("{local}@{}", self.domains[d].name);
        let mta = self.domains[d].mta.clone();
        let m = self.new_message(sender, &mta);
        let n = [1, 1, 1, 1, 2, 2, 3, 5][self.rng.random_range(0..8)];
        let rcpts: Vec<usize> = (0..n)
            .map(|_| self.user_pick.sample(&mut self.rng))
            .collect();
        // The MX record spreads Internet mail over every server's Front End.
        let entry = self.rng.random_range(0..self.servers.len());
        let rejected = self.rng.random_range(0..1000) < 4;
        let (session, t) = self.receive_session(t, entry, Some(d), &m, &rcpts, rejected);
        if rejected {
            return;
        }
        let internal = self.internal_id(entry);
        let e = &self.servers[entry];
        let (e_ip, e_fqdn, e_name) = (e.ip.clone(), e.fqdn.clone(), e.name.clone());
        let addresses: Vec<&str> = rcpts
            .iter()
            .map(|&u| self.users[u].address.as_str())
            .collect();
        let all = addresses.join(";");
        let connector = format!("{e_name}\\Default Frontend {e_name}");
        let ctx = format!("{session};{};1", ts(t));
        let domain_ip = self.domains[d].mta_ip.clone();
        let received_custom = format!(
            "S:ProxyHop1={e_fqdn}({e_ip});S:FirstForestHop={e_fqdn};S:FromEntity=Internet;S:ProxiedClientIPAddress={domain_ip};S:ProxiedClientHostname={mta};S:DeliveryPriority=Normal;S:AccountForest=contoso.com"
        );
        let row = Track {
            client_ip: &domain_ip,
            client_host: &mta,
            server_ip: &e_ip,
            server_host: &e_name,
            source_context: &ctx,
            connector: &connector,
            source: "SMTP",
            event: "RECEIVE",
            internal_id: internal,
            recipients: &all,
            recipient_count: n,
            info: "08I:",
            directionality: "Incoming",
            custom: &received_custom,
            ..Track::default()
        };
        self.track(t, entry, &m, &row);
        let t = t + self.hop();
        let attachments = self.rng.random_range(0..3);
        let agent = format!(
            "S:AMA=SUM|v=0|action=|error=|atch={attachments};S:AMA=EV|engine=M|v=0|sig=1.405.123.0|name=|file=;S:CompCost=|ETR=0;S:DeliveryPriority=Normal;S:AccountForest=contoso.com"
        );
        let row = Track {
            source_context: "CatContentConversion",
            source: "AGENT",
            event: "AGENTINFO",
            info: "",
            custom: &agent,
            ..row
        };
        self.track(t, entry, &m, &row);
        let first = t;
        self.deliver_all(t, entry, internal, &m, &rcpts, "Incoming", first);
    }

    /// Delivers to each recipient's server from `at`: locally, or relayed to the mailbox's
    /// server first.
    #[allow(clippy::too_many_arguments)]
    fn deliver_all(
        &mut self,
        t: i64,
        at: usize,
        internal: i64,
        m: &Message,
        rcpts: &[usize],
        directionality: &str,
        first: i64,
    ) {
        let mut homes: Vec<usize> = rcpts.iter().map(|&u| self.users[u].server).collect();
        homes.sort_unstable();
        homes.dedup();
        for home in homes {
            let mine: Vec<usize> = rcpts
                .iter()
                .copied()
                .filter(|&u| self.users[u].server == home)
                .collect();
            let t = t + self.hop();
            if home == at {
                self.deliver(t, at, internal, m, &mine, directionality, first);
            } else {
                self.relay(t, at, internal, home, m, &mine, directionality, first);
            }
        }
    }

    /// A mailbox delivery on `server` (a full mailbox fails it now and then).
    #[allow(clippy::too_many_arguments)]
    fn deliver(
        &mut self,
        t: i64,
        server: usize,
        internal: i64,
        m: &Message,
        rcpts: &[usize],
        directionality: &str,
        first: i64,
    ) {
        let t = t + self.hop() * 3;
        let s = &self.servers[server];
        let (ip, fqdn, name) = (s.ip.clone(), s.fqdn.clone(), s.name.clone());
        let addresses: Vec<&str> = rcpts
            .iter()
            .map(|&u| self.users[u].address.as_str())
            .collect();
        let all = addresses.join(";");
        let db = self.guid();
        let e2e = (t - first) as f64 / 1000.0;
        let latency = self.latency(t, &fqdn, e2e);
        if self.rng.random_range(0..1000) < 3 {
            let status = vec![
                "554 5.2.2 mailbox full; STOREDRV.Deliver.Exception:QuotaExceededException.MapiExceptionShutoffQuotaExceeded";
                rcpts.len()
            ]
            .join(";");
            let row = Track {
                client_ip: &ip,
                client_host: &fqdn,
                server_ip: &ip,
                server_host: &name,
                connector: "",
                source: "STOREDRIVER",
                event: "FAIL",
                internal_id: internal,
                recipients: &all,
                status: &status,
                recipient_count: rcpts.len(),
                info: &latency,
                directionality,
                ..Track::default()
            };
            self.track(t, server, m, &row);
            let t = t + self.hop();
            let row = Track {
                source: "DSN",
                event: "DSN",
                status: "",
                info: "",
                ..row
            };
            self.track(t, server, m, &row);
            return;
        }
        let ctx = format!(
            "MDB:{db}, Mailbox:{}, Event:{}, MessageClass:IPM.Note, CreationTime:{}, ClientType:System",
            self.guid(),
            self.rng.random_range(1_000_000..300_000_000),
            ts(t)
        );
        let custom = format!(
            "S:MailboxDatabaseGuid={db};S:E2ELatency={e2e:.3};S:Mailboxes={}",
            self.guid()
        );
        let row = Track {
            client_ip: &ip,
            client_host: &fqdn,
            server_ip: &ip,
            server_host: &name,
            source_context: &ctx,
            source: "STOREDRIVER",
            event: "DELIVER",
            internal_id: internal,
            recipients: &all,
            recipient_count: rcpts.len(),
            info: &latency,
            directionality,
            custom: &custom,
            ..Track::default()
        };
        self.track(t, server, m, &row);
    }

    /// `from` hands a message to the mailbox server `to` over SMTP (Kerberos trouble between
    /// them defers it a while now and then), then `to` delivers it.
    #[allow(clippy::too_many_arguments)]
    fn relay(
        &mut self,
        mut t: i64,
        from: usize,
        internal: i64,
        to: usize,
        m: &Message,
        rcpts: &[usize],
        directionality: &str,
        first: i64,
    ) {
        let connector = "Intra-Organization SMTP Send Connector";
        let addresses: Vec<String> = rcpts
            .iter()
            .map(|&u| self.users[u].address.clone())
            .collect();
        let all = addresses.join(";");
        let (f_ip, f_fqdn) = (
            self.servers[from].ip.clone(),
            self.servers[from].fqdn.clone(),
        );
        let (to_ip, to_fqdn) = (self.servers[to].ip.clone(), self.servers[to].fqdn.clone());
        // The first server's clock drifts on the first afternoon for an hour: Kerberos fails
        // between it and the others (and now and then anyway, for a moment).
        let skewed =
            from == 0 && (START_MS + 14 * 3_600_000..START_MS + 15 * 3_600_000).contains(&t);
        if skewed || self.rng.random_range(0..1000) < 2 {
            let session = self.session_id(from);
            let mut lines = self.send_opening(&f_fqdn, &to_fqdn, None);
            lines.push(ln(">", "X-EXPS GSSAPI", ""));
            lines.push(ln("<", "454 4.7.0 Temporary authentication failure", ""));
            lines.push(ln("-", "", "Local"));
            let port = self.rng.random_range(20_000..65_000);
            let end = self.protocol_session(
                t,
                from * STREAMS_PER_SERVER + SEND,
                connector,
                &session,
                (&f_ip, port),
                (&to_ip, 2525),
                &lines,
            );
            let status = vec![
                format!("451 4.4.0 Primary target IP address responded with: \"454 4.7.0 Temporary authentication failure.\" Attempted failover to alternate host, but that did not succeed. Either there are no alternate hosts, or delivery failed to all alternate hosts. The last endpoint attempted was {to_ip}:2525");
                rcpts.len()
            ]
            .join(";");
            let row = Track {
                client_ip: &f_ip,
                client_host: &f_fqdn,
                server_ip: &to_ip,
                server_host: &to_fqdn,
                connector,
                source: "SMTP",
                event: "DEFER",
                internal_id: internal,
                recipients: &all,
                status: &status,
                recipient_count: rcpts.len(),
                directionality,
                ..Track::default()
            };
            self.track(end, from, m, &row);
            // Retried a few minutes later, when the tickets work again.
            t =
                end + if skewed {
                    START_MS + 15 * 3_600_000 - end.min(START_MS + 15 * 3_600_000)
                } else {
                    0
                } + self.rng.random_range(60_000..900_000);
        }
        let to_internal = self.internal_id(to);
        let session = self.session_id(from);
        let rid = self.rng.random_range(1_000_000..90_000_000u64);
        let mut lines = self.send_opening(&f_fqdn, &to_fqdn, Some(0));
        lines.push(ln(">", "X-EXPS GSSAPI", ""));
        lines.push(ln("<", "235 <authentication response>", ""));
        lines.push(ln("*", "", "Proxy session was successfully set up."));
        lines.push(ln(
            "*",
            "",
            format!(
                "sending message with RecordId {rid} and InternetMessageId {}",
                m.id
            ),
        ));
        self.envelope(&mut lines, &m.sender, &addresses, false, m.size);
        let queued = format!(
            "250 2.6.0 {} [InternalId={to_internal}, Hostname={to_fqdn}] {} bytes in {:.3}, {:.3} KB/sec Queued mail for delivery",
            m.id,
            m.size + 1200,
            0.05,
            (m.size as f64 / 1024.0) / 0.05
        );
        lines.push(ln("<", queued.as_str(), ""));
        lines.push(ln(">", "QUIT", ""));
        lines.push(ln("<", "221 2.0.0 Closing connection.", ""));
        lines.push(ln("-", "", "Local"));
        let port = self.rng.random_range(20_000..65_000);
        let end = self.protocol_session(
            t,
            from * STREAMS_PER_SERVER + SEND,
            connector,
            &session,
            (&f_ip, port),
            (&to_ip, 2525),
            &lines,
        );
        // The other side of the same conversation, in `to`'s hub receive log.
        let to_name = self.servers[to].name.clone();
        let recv_connector = format!("{to_name}\\Default {to_name}");
        let recv_session = self.session_id(to);
        let mut theirs = receive_opening(
            t,
            &to_fqdn,
            (&f_fqdn, &f_ip),
            "STARTTLS X-ANONYMOUSTLS AUTH NTLM X-EXPS GSSAPI NTLM 8BITMIME BINARYMIME CHUNKING XEXCH50 XRDST XSHADOWREQUEST",
        );
        theirs.push(ln("<", "X-EXPS GSSAPI", ""));
        theirs.push(ln(">", "235 <authentication response>", ""));
        let mut rcpt_lines = Vec::new();
        self.envelope(&mut rcpt_lines, &m.sender, &addresses, true, m.size);
        theirs.extend(rcpt_lines);
        theirs.push(ln(
            "*",
            format!("{recv_session};{};1", ts(t)),
            "receiving message",
        ));
        theirs.push(ln(">", queued.as_str(), ""));
        theirs.push(ln("<", "QUIT", ""));
        theirs.push(ln(">", "221 2.0.0 Closing connection.", ""));
        theirs.push(ln("-", "", "Remote"));
        let recv_end = self.protocol_session(
            t + 1,
            to * STREAMS_PER_SERVER + HUB_RECEIVE,
            &recv_connector,
            &recv_session,
            (&to_ip, 2525),
            (&f_ip, port),
            &theirs,
        );
        let sent_ctx = format!(";{queued};ClientSubmitTime:");
        let status = vec!["250 2.1.5 Recipient OK"; rcpts.len()].join(";");
        let e2e = (end - first) as f64 / 1000.0;
        let latency = self.latency(end, &f_fqdn, e2e);
        let custom = format!("S:E2ELatency={e2e:.3};S:IncludeInSla=True");
        let row = Track {
            client_ip: &f_ip,
            client_host: &f_fqdn,
            server_ip: &to_ip,
            server_host: &to_fqdn,
            source_context: &sent_ctx,
            connector,
            source: "SMTP",
            event: "SEND",
            internal_id: internal,
            recipients: &all,
            status: &status,
            recipient_count: rcpts.len(),
            info: &latency,
            directionality,
            custom: &custom,
            ..Track::default()
        };
        self.track(end, from, m, &row);
        let ctx = format!("{recv_session};{};1", ts(t));
        let row = Track {
            client_ip: &f_ip,
            client_host: &f_fqdn,
            server_ip: &to_ip,
            server_host: &to_name,
            source_context: &ctx,
            connector: &recv_connector,
            source: "SMTP",
            event: "RECEIVE",
            internal_id: to_internal,
            recipients: &all,
            recipient_count: rcpts.len(),
            info: "",
            directionality,
            custom: "",
            status: "",
            ..Track::default()
        };
        self.track(recv_end, to, m, &row);
        self.deliver(recv_end, to, to_internal, m, rcpts, directionality, first);
    }

    /// A user's message to the Internet, grouped by recipient domain: a send session to each
    /// domain's MX host.
    fn outbound(&mut self, t: i64) {
        let u = self.user_pick.sample(&mut self.rng);
        let server = self.users[u].server;
        let sender = self.users[u].address.clone();
        let fqdn = self.servers[server].fqdn.clone();
        let m = self.new_message(sender, &fqdn);
        let n = [1, 1, 1, 2, 2, 3][self.rng.random_range(0..6)];
        let mut rcpts: Vec<(String, usize)> = (0..n)
            .map(|_| {
                // One message in 150 goes to a mistyped domain.
                let d = if self.rng.random_range(0..150) == 0 {
                    self.domains.len() - 1 - self.rng.random_range(0..3)
                } else {
                    self.domain_pick.sample(&mut self.rng)
                };
                let local = format!(
                    "{}.{}",
                    FIRST[self.rng.random_range(0..FIRST.len())],
                    LAST[self.rng.random_range(0..LAST.len())]
                );
                (format!("{local}@{}", self.domains[d].name), d)
            })
            .collect();
        rcpts.sort_by(|a, b| (a.1, &a.0).cmp(&(b.1, &b.0)));
        rcpts.dedup();
        let internal = self.internal_id(server);
        let all: Vec<&str> = rcpts.iter().map(|r| r.0.as_str()).collect();
        let all = all.join(";");
        let t = self.submit(
            t,
            server,
            (internal, &m),
            (&all, rcpts.len()),
            "MOMT, SubmissionAssistant:MailboxTransportSubmissionEmailAssistant",
        );
        let first = t;
        let mut at = t;
        let mut i = 0;
        while i < rcpts.len() {
            let d = rcpts[i].1;
            let group: Vec<String> = rcpts[i..]
                .iter()
                .take_while(|r| r.1 == d)
                .map(|r| r.0.clone())
                .collect();
            i += group.len();
            at += self.hop();
            self.send_out(at, server, internal, &m, d, &group, first);
        }
    }

    /// The send session to domain `d`'s MX host for `rcpts`, its connectivity lines and the
    /// tracking rows: SEND, or DEFER and a later retry, or FAIL and a DSN.
    #[allow(clippy::too_many_arguments)]
    fn send_out(
        &mut self,
        t: i64,
        server: usize,
        internal: i64,
        m: &Message,
        d: usize,
        rcpts: &[String],
        first: i64,
    ) {
        let connector = "Outbound to Internet";
        let (ip, fqdn) = (
            self.servers[server].ip.clone(),
            self.servers[server].fqdn.clone(),
        );
        let all = rcpts.join(";");
        let dom = &self.domains[d];
        let (dname, mx, mx_ip) = (dom.name.clone(), dom.mx.clone(), dom.mx_ip.clone());
        let (nonexistent, has_tls) = (dom.nonexistent, dom.tls.is_some());
        let base = Track {
            client_ip: &ip,
            client_host: &fqdn,
            connector,
            source: "SMTP",
            internal_id: internal,
            recipients: &all,
            recipient_count: rcpts.len(),
            directionality: "Originating",
            ..Track::default()
        };
        let conn = server * STREAMS_PER_SERVER + CONNECTIVITY;
        if nonexistent {
            // DNS says no such domain: no session; the message fails at once.
            let session = self.session_id(server);
            self.connectivity(
                t,
                conn,
                &session,
                &dname,
                "+",
                &format!("{connector};QueueLength=TQ=1;RQ=1;QS=Ready;SS=0"),
            );
            self.connectivity(
                t + 40,
                conn,
                &session,
                &dname,
                "-",
                "Failed connection to DNS: SMTPSEND.DNS.NonExistentDomain; nonexistent domain",
            );
            let status =
                vec!["550 5.4.4 SMTPSEND.DNS.NonExistentDomain; nonexistent domain"; rcpts.len()]
                    .join(";");
            let t = t + 60;
            self.track(
                t,
                server,
                m,
                &Track {
                    event: "FAIL",
                    status: &status,
                    ..base
                },
            );
            let t = t + self.hop();
            self.track(
                t,
                server,
                m,
                &Track {
                    source: "DSN",
                    event: "DSN",
                    connector: "",
                    ..base
                },
            );
            return;
        }
        let mut t = t;
        // This server's send certificate lost its private key: STARTTLS fails, the message
        // waits, and goes once the certificate is fixed (here: an hour or two later).
        let broken = self.servers[server]
            .broken_send_cert
            .filter(|(from, to)| has_tls && (*from..*to).contains(&t));
        let blocked = self.rng.random_range(0..400) == 0;
        let greylisted = self.rng.random_range(0..300) == 0;
        for attempt in 0..2 {
            let session = self.session_id(server);
            let port = self.rng.random_range(20_000..65_000);
            let tls = self.domains[d].tls;
            let broken_now = broken.is_some() && attempt == 0;
            let mut lines = vec![ln("*", "", "attempting to connect")];
            lines.extend(self.send_opening(&fqdn, &mx, tls.filter(|_| !broken_now)));
            let dom = &self.domains[d];
            let (serial, thumb) = (dom.cert_serial.clone(), dom.cert_thumbprint.clone());
            if broken_now {
                lines.push(ln(">", "STARTTLS", ""));
                lines.push(ln("<", "220 2.0.0 SMTP server ready", ""));
                lines.push(ln(
                    "*",
                    "",
                    "TLS negotiation failed with error NoCredentials",
                ));
                lines.push(ln("-", "", "Local"));
            } else {
                if tls.is_some() {
                    let at = lines.len() - 2;
                    let cert = vec![
                        ln("*", "", "Received certificate"),
                        ln("*", format!("CN={mx}"), "Certificate subject"),
                        ln(
                            "*",
                            "CN=DigiCert Global G2 TLS RSA SHA256 2020 CA1, O=DigiCert Inc, C=US",
                            "Certificate issuer name",
                        ),
                        ln("*", serial, "Certificate serial number"),
                        ln("*", thumb, "Certificate thumbprint"),
                        ln("*", format!("{mx};{dname}"), "Certificate alternate names"),
                    ];
                    lines.splice(at..at, cert);
                }
                let rid = self.rng.random_range(1_000_000..90_000_000u64);
                lines.push(ln(
                    "*",
                    "",
                    format!(
                        "sending message with RecordId {rid} and InternetMessageId {}",
                        m.id
                    ),
                ));
                lines.push(ln(
                    ">",
                    format!("MAIL FROM:<{}> SIZE={}", m.sender, m.size),
                    "",
                ));
                lines.push(ln("<", "250 2.1.0 Sender OK", ""));
                for r in rcpts {
                    lines.push(ln(">", format!("RCPT TO:<{r}>"), ""));
                }
                if blocked {
                    lines.push(ln(
                        "<",
                        format!("550 5.7.1 Service unavailable; Client host [{}] blocked using zen.spamhaus.org", self.servers[server].ip),
                        "",
                    ));
                } else if greylisted && attempt == 0 {
                    lines.push(ln("<", "451 4.7.1 Greylisted, please try again later", ""));
                } else {
                    for _ in rcpts {
                        lines.push(ln("<", "250 2.1.5 Recipient OK", ""));
                    }
                    lines.push(ln(">", format!("BDAT {} LAST", m.size), ""));
                    lines.push(ln(
                        "<",
                        format!(
                            "250 2.6.0 {} [InternalId={}, Hostname={mx}] Queued mail for delivery",
                            m.id,
                            self.rng.random_range(1_000_000_000u64..9_000_000_000)
                        ),
                        "",
                    ));
                }
                lines.push(ln(">", "QUIT", ""));
                lines.push(ln(
                    "<",
                    "221 2.0.0 Service closing transmission channel",
                    "",
                ));
                lines.push(ln("-", "", "Local"));
            }
            self.connectivity(
                t,
                conn,
                &session,
                &dname,
                "+",
                &format!("{connector};QueueLength=TQ=1;RQ=1;QS=Ready;SS=1"),
            );
            self.connectivity(
                t + 20,
                conn,
                &session,
                &dname,
                ">",
                &format!("Established connection to {mx_ip}"),
            );
            let end = self.protocol_session(
                t + 25,
                server * STREAMS_PER_SERVER + SEND,
                connector,
                &session,
                (&ip, port),
                (&mx_ip, 25),
                &lines,
            );
            let sent = !(broken_now || blocked || (greylisted && attempt == 0));
            self.connectivity(
                end + 1,
                conn,
                &session,
                &dname,
                "-",
                &format!(
                    "Messages: {} Bytes: {} Recipients: {}",
                    u8::from(sent),
                    if sent { m.size } else { 0 },
                    if sent { rcpts.len() } else { 0 }
                ),
            );
            let last = lines
                .iter()
                .rev()
                .find(|l| l.0 == "<" && !l.1.starts_with("221"))
                .map(|l| l.1.clone())
                .unwrap_or_default();
            if sent {
                let status = vec!["250 2.1.5 Recipient OK"; rcpts.len()].join(";");
                let ctx = format!(";{last};ClientSubmitTime:");
                let e2e = (end - first) as f64 / 1000.0;
                let latency = self.latency(end, &fqdn, e2e);
                let custom = format!(
                    "S:E2ELatency={e2e:.3};S:ExternalSendLatency={:.3};S:IncludeInSla=True;S:Microsoft.Exchange.Transport.MailRecipient.RequiredTlsAuthLevel=Opportunistic",
                    (end - t) as f64 / 1000.0
                );
                self.track(
                    end,
                    server,
                    m,
                    &Track {
                        server_ip: &mx_ip,
                        server_host: &mx,
                        source_context: &ctx,
                        event: "SEND",
                        status: &status,
                        info: &latency,
                        custom: &custom,
                        ..base
                    },
                );
                return;
            }
            if blocked {
                let status = vec![last.as_str(); rcpts.len()].join(";");
                self.track(
                    end,
                    server,
                    m,
                    &Track {
                        server_ip: &mx_ip,
                        server_host: &mx,
                        event: "FAIL",
                        status: &status,
                        ..base
                    },
                );
                let t = end + self.hop();
                self.track(
                    t,
                    server,
                    m,
                    &Track {
                        source: "DSN",
                        event: "DSN",
                        connector: "",
                        ..base
                    },
                );
                return;
            }
            let why = if broken_now {
                format!(
                    "451 4.4.0 Primary target IP address responded with: \"421 4.4.1 Connection timed out.\" Attempted failover to alternate host, but that did not succeed. Either there are no alternate hosts, or delivery failed to all alternate hosts. The last endpoint attempted was {mx_ip}:25"
                )
            } else {
                last
            };
            let status = vec![why.as_str(); rcpts.len()].join(";");
            self.track(
                end,
                server,
                m,
                &Track {
                    server_ip: &mx_ip,
                    server_host: &mx,
                    event: "DEFER",
                    status: &status,
                    ..base
                },
            );
            t = match broken {
                // Retried once the certificate is fixed.
                Some((_, fixed)) => fixed.max(end) + self.rng.random_range(60_000..1_800_000),
                None => end + self.rng.random_range(300_000..900_000),
            };
        }
    }

    /// A user's message submitted from its mailbox on `server` (`client`: how, as Exchange
    /// names it): tracking RECEIVE and SUBMIT from the store driver. Returns the SUBMIT's time.
    fn submit(
        &mut self,
        t: i64,
        server: usize,
        (internal, m): (i64, &Message),
        (all, count): (&str, usize),
        client: &str,
    ) -> i64 {
        let (ip, fqdn, name) = {
            let s = &self.servers[server];
            (s.ip.clone(), s.fqdn.clone(), s.name.clone())
        };
        let ctx = format!(
            "MDB:{}, Mailbox:{}, Event:{}, MessageClass:IPM.Note, CreationTime:{}, ClientType:{client}",
            self.guid(),
            self.guid(),
            self.rng.random_range(1_000_000..300_000_000),
            ts(t)
        );
        let row = Track {
            client_ip: &ip,
            client_host: &fqdn,
            server_ip: &ip,
            server_host: &name,
            source_context: &ctx,
            source: "STOREDRIVER",
            event: "RECEIVE",
            internal_id: internal,
            recipients: all,
            recipient_count: count,
            directionality: "Originating",
            ..Track::default()
        };
        self.track(t, server, m, &row);
        let t = t + self.hop();
        self.track(
            t,
            server,
            m,
            &Track {
                event: "SUBMIT",
                ..row
            },
        );
        t
    }

    /// Users writing to each other: submitted, then delivered on their own servers.
    fn internal(&mut self, t: i64) {
        let u = self.user_pick.sample(&mut self.rng);
        let server = self.users[u].server;
        let sender = self.users[u].address.clone();
        let fqdn = self.servers[server].fqdn.clone();
        let m = self.new_message(sender, &fqdn);
        let n = [1, 1, 2, 3, 4][self.rng.random_range(0..5)];
        let mut rcpts: Vec<usize> = (0..n)
            .map(|_| self.user_pick.sample(&mut self.rng))
            .collect();
        rcpts.sort_unstable();
        rcpts.dedup();
        let internal = self.internal_id(server);
        let addresses: Vec<&str> = rcpts
            .iter()
            .map(|&u| self.users[u].address.as_str())
            .collect();
        let all = addresses.join(";");
        let t = self.submit(t, server, (internal, &m), (&all, rcpts.len()), "OWA");
        self.deliver_all(t, server, internal, &m, &rcpts, "Originating", t);
    }

    /// A receive session on `server`'s Front End from domain `d`'s MTA carrying `m` to
    /// `rcpts` (or refused at RCPT, a directory-based edge block). Returns the session id and
    /// when the message was queued.
    fn receive_session(
        &mut self,
        t: i64,
        server: usize,
        d: Option<usize>,
        m: &Message,
        rcpts: &[usize],
        rejected: bool,
    ) -> (String, i64) {
        let session = self.session_id(server);
        let s = &self.servers[server];
        let (ip, fqdn, name) = (s.ip.clone(), s.fqdn.clone(), s.name.clone());
        let (serial, thumb) = (s.serial.clone(), s.thumbprint.clone());
        let (mta, mta_ip, tls) = match d {
            Some(d) => {
                let dom = &self.domains[d];
                (dom.mta.clone(), dom.mta_ip.clone(), dom.tls)
            }
            None => ("unknown".into(), "192.0.2.1".into(), None),
        };
        let connector = format!("{name}\\Default Frontend {name}");
        let mut l = receive_opening(
            t,
            &fqdn,
            (&mta, &mta_ip),
            "STARTTLS X-ANONYMOUSTLS AUTH NTLM LOGIN X-EXPS GSSAPI NTLM 8BITMIME BINARYMIME CHUNKING SMTPUTF8",
        );
        if let Some(p) = tls {
            let (version, bulk, mac, kx, strength) = TLS_PROFILES[p];
            l.push(ln("<", "STARTTLS", ""));
            l.push(ln(">", "220 2.0.0 SMTP server ready", ""));
            l.push(ln(
                "*",
                format!(
                    " CN={fqdn} CN=Contoso Issuing CA 01, O=Contoso Ltd, C=US {serial} {thumb} 2024-01-01T00:00:00.000Z 2026-01-01T00:00:00.000Z mail.contoso.com;autodiscover.contoso.com;{fqdn}"
                ),
                "Sending certificate Subject Issuer name Serial number Thumbprint Not before Not after Subject alternate names",
            ));
            l.push(ln(
                "*",
                "",
                tls_line(version, "SERVER", bulk, mac, kx, strength),
            ));
            l.push(ln("<", format!("EHLO {mta}"), ""));
            l.push(ln(
                ">",
                format!("250  {fqdn} Hello [{mta_ip}] SIZE 37748736 PIPELINING DSN ENHANCEDSTATUSCODES AUTH NTLM LOGIN 8BITMIME BINARYMIME CHUNKING SMTPUTF8"),
                "",
            ));
        }
        let addresses: Vec<String> = rcpts
            .iter()
            .map(|&u| self.users[u].address.clone())
            .collect();
        if rejected {
            l.push(ln(
                "<",
                format!("MAIL FROM:<{}> SIZE={}", m.sender, m.size),
                "",
            ));
            l.push(ln(">", "250 2.1.0 Sender OK", ""));
            l.push(ln(
                "<",
                format!(
                    "RCPT TO:<nobody.{}@contoso.com>",
                    self.rng.random_range(1..999)
                ),
                "",
            ));
            l.push(ln(">", "550 5.1.10 RESOLVER.ADR.RecipientNotFound; Recipient not found by SMTP address lookup", ""));
            l.push(ln("<", "QUIT", ""));
            l.push(ln(">", "221 2.0.0 Closing connection.", ""));
            l.push(ln("-", "", "Remote"));
        } else {
            self.envelope(&mut l, &m.sender, &addresses, true, m.size);
            l.push(ln(
                "*",
                format!("{session};{};1", ts(t)),
                "receiving message",
            ));
            l.push(ln(
                "*",
                "",
                format!("receiving message with InternetMessageId {}", m.id),
            ));
            l.push(ln(
                ">",
                format!(
                    "250 2.6.0 {} [InternalId={}, Hostname={fqdn}] {} bytes in {:.3}, {:.3} KB/sec Queued mail for delivery",
                    m.id,
                    self.servers[server].next_internal_id + 1,
                    m.size,
                    0.2,
                    (m.size as f64 / 1024.0) / 0.2
                ),
                "",
            ));
            l.push(ln("<", "QUIT", ""));
            l.push(ln(">", "221 2.0.0 Closing connection.", ""));
            l.push(ln("-", "", "Remote"));
        }
        let port = self.rng.random_range(1_024..65_000);
        let end = self.protocol_session(
            t,
            server * STREAMS_PER_SERVER + FRONTEND_RECEIVE,
            &connector,
            &session,
            (&ip, 25),
            (&mta_ip, port),
            &l,
        );
        (session, end)
    }

    /// The send side's opening: banner, EHLO and, with a TLS profile, STARTTLS and its
    /// negotiation (the caller adds the certificate lines before the last two).
    fn send_opening(&mut self, local: &str, remote: &str, tls: Option<usize>) -> Vec<Line> {
        let mut l = vec![
            ln("+", "", ""),
            ln(
                "<",
                format!("220 {remote} Microsoft ESMTP MAIL Service ready"),
                "",
            ),
            ln(">", format!("EHLO {local}"), ""),
            ln(
                "<",
                format!(
                    "250-{remote} Hello 250-SIZE 37748736 250-PIPELINING 250-STARTTLS 250 CHUNKING"
                ),
                "",
            ),
        ];
        if let Some(p) = tls {
            let (version, bulk, mac, kx, strength) = TLS_PROFILES[p];
            l.push(ln(">", "STARTTLS", ""));
            l.push(ln("<", "220 2.0.0 SMTP server ready", ""));
            l.push(ln(
                "*",
                "",
                tls_line(version, "CLIENT", bulk, mac, kx, strength),
            ));
            l.push(ln(">", format!("EHLO {local}"), ""));
        }
        l
    }

    /// MAIL FROM, RCPT TO and their replies, and BDAT: as the receiving side logs them when
    /// `received` (`<` commands, `>` replies), else as the sender does.
    fn envelope(
        &mut self,
        l: &mut Vec<Line>,
        sender: &str,
        rcpts: &[String],
        received: bool,
        size: u64,
    ) {
        let (cmd, reply) = if received { ("<", ">") } else { (">", "<") };
        l.push(ln(cmd, format!("MAIL FROM:<{sender}> SIZE={size}"), ""));
        l.push(ln(reply, "250 2.1.0 Sender OK", ""));
        for r in rcpts {
            l.push(ln(cmd, format!("RCPT TO:<{r}>"), ""));
            l.push(ln(reply, "250 2.1.5 Recipient OK", ""));
        }
        l.push(ln(cmd, format!("BDAT {size} LAST"), ""));
    }

    /// Writes a session's lines from `t`, a few milliseconds apart; returns its last time.
    #[allow(clippy::too_many_arguments)]
    fn protocol_session(
        &mut self,
        mut t: i64,
        stream: usize,
        connector: &str,
        session: &str,
        local: (&str, u16),
        remote: (&str, u16),
        lines: &[Line],
    ) -> i64 {
        let local = format!("{}:{}", local.0, local.1);
        let remote = format!("{}:{}", remote.0, remote.1);
        for (seq, (event, data, context)) in lines.iter().enumerate() {
            let mut line = Vec::with_capacity(160 + data.len() + context.len());
            let time = ts(t);
            // A send session knows no local endpoint before it connects.
            let local = if event == "*" && context == "attempting to connect" {
                ""
            } else {
                local.as_str()
            };
            for f in [
                time.as_str(),
                connector,
                session,
                &seq.to_string(),
                local,
                &remote,
                event,
                data,
                context,
            ] {
                field(&mut line, f);
            }
            line.pop();
            line.extend_from_slice(b"\r\n");
            self.emit(t, stream, line);
            t += self.rng.random_range(0..25) + if event == "<" || event == ">" { 2 } else { 0 };
        }
        t
    }

    fn connectivity(
        &mut self,
        t: i64,
        stream: usize,
        session: &str,
        destination: &str,
        direction: &str,
        description: &str,
    ) {
        let mut line = Vec::with_capacity(128 + description.len());
        for f in [&ts(t), session, "SMTP", destination, direction, description] {
            field(&mut line, f);
        }
        line.pop();
        line.extend_from_slice(b"\r\n");
        self.emit(t, stream, line);
    }

    /// A tracking row of `m` on `server`.
    fn track(&mut self, t: i64, server: usize, m: &Message, r: &Track<'_>) {
        let log_id = self.guid();
        let mut line = Vec::with_capacity(600 + r.info.len() + r.custom.len());
        let time = ts(t);
        let internal = r.internal_id.to_string();
        let size = m.size.to_string();
        let count = r.recipient_count.to_string();
        for f in [
            time.as_str(),
            r.client_ip,
            r.client_host,
            r.server_ip,
            r.server_host,
            r.source_context,
            r.connector,
            r.source,
            r.event,
            &internal,
            &m.id,
            &m.network_id,
            r.recipients,
            r.status,
            &size,
            &count,
            r.related,
            "",
            m.subject,
            &m.sender,
            &m.sender,
            r.info,
            r.directionality,
            "",
            r.client_ip,
            r.server_ip,
            r.custom,
            "Email",
            &log_id,
            EXCHANGE_BUILD,
        ] {
            field(&mut line, f);
        }
        line.pop();
        line.extend_from_slice(b"\r\n");
        self.emit(t, server * STREAMS_PER_SERVER + TRACKING, line);
    }

    /// `message-info` of SEND and DELIVER: origination time, then the per-component latency
    /// string (its parts add up to about `total` seconds).
    fn latency(&mut self, t: i64, fqdn: &str, total: f64) -> String {
        let mut part = |share: f64| total * share * self.rng.random_range(0.5..1.5);
        format!(
            "{};SRV={fqdn}:TOTAL-HUB={total:.3}|SMR={:.3}|CAT={:.3}(CATRS={:.3})|QDM={:.3}|SMSC={:.3}|SMS={:.3}",
            ts(t - (total * 1000.0) as i64),
            part(0.05),
            part(0.2),
            part(0.05),
            part(0.4),
            part(0.1),
            part(0.2)
        )
    }
}

/// How a receive connector logs a session's start: connect, permissions, banner, the client's
/// EHLO and the EHLO reply offering `extensions`.
fn receive_opening(t: i64, fqdn: &str, (ehlo, ip): (&str, &str), extensions: &str) -> Vec<Line> {
    vec![
        ln("+", "", ""),
        ln(
            "*",
            "SMTPSubmit SMTPAcceptAnyRecipient SMTPAcceptAnySender SMTPAcceptAuthoritativeDomainSender AcceptRoutingHeaders",
            "Set Session Permissions",
        ),
        ln(
            ">",
            format!(
                "220 {fqdn} Microsoft ESMTP MAIL Service ready at {}",
                rfc822(t)
            ),
            "",
        ),
        ln("<", format!("EHLO {ehlo}"), ""),
        ln(
            ">",
            format!(
                "250  {fqdn} Hello [{ip}] SIZE 37748736 PIPELINING DSN ENHANCEDSTATUSCODES {extensions}"
            ),
            "",
        ),
    ]
}

/// A log file's header block, dated `t`.
fn header(kind: StreamKind, t: i64) -> String {
    let (log_type, version, fields) = match kind {
        StreamKind::Tracking => ("Message Tracking Log", EXCHANGE_BUILD, TRACKING_FIELDS),
        StreamKind::Send => ("SMTP Send Protocol Log", "15.0.0.0", PROTOCOL_FIELDS),
        StreamKind::Receive => ("SMTP Receive Protocol Log", "15.0.0.0", PROTOCOL_FIELDS),
        StreamKind::Connectivity => (
            "Transport Connectivity Log",
            "15.0.0.0",
            CONNECTIVITY_FIELDS,
        ),
    };
    format!(
        "\u{feff}#Software: Microsoft Exchange Server\r\n#Version: {version}\r\n#Log-type: {log_type}\r\n#Date: {}\r\n#Fields: {fields}\r\n",
        ts(t)
    )
}

/// A protocol log line of a scripted session: event symbol, data, context.
type Line = (String, String, String);

fn ln(event: &str, data: impl Into<String>, context: impl Into<String>) -> Line {
    (event.to_string(), data.into(), context.into())
}

fn tls_line(version: &str, side: &str, bulk: &str, mac: &str, kx: &str, strength: u32) -> String {
    let bits = bulk.rsplit('_').next().unwrap_or("128");
    let bits = if bits.chars().all(|c| c.is_ascii_digit()) {
        bits
    } else {
        "168"
    };
    format!(
        "TLS protocol SP_PROT_{version}_{side} negotiation succeeded using bulk encryption algorithm {bulk} with strength {bits} bits, MAC hash algorithm {mac} with strength 0 bits and key exchange algorithm {kx} with strength {strength} bits"
    )
}

/// `Thu, 25 Jan 2024 16:14:38 +0000`, as an SMTP banner gives the time.
fn rfc822(ms: i64) -> String {
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let iso = ts(ms);
    let (y, mo, d) = (&iso[0..4], &iso[5..7], &iso[8..10]);
    let month = mo.parse::<usize>().map_or("Jan", |m| MONTHS[(m + 11) % 12]);
    let weekday = DAYS[ms.div_euclid(DAY_MS).rem_euclid(7) as usize];
    format!("{weekday}, {d} {month} {y} {} +0000", &iso[11..19])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traffic_follows_the_working_day() {
        let cdf = diurnal_cdf();
        assert!((cdf[23] - 1.0).abs() < 1e-9);
        // Half the day's mail has gone by early afternoon, not at noon of a flat day.
        let half = at_fraction(&cdf, 0.5);
        assert!((11 * 3_600_000..15 * 3_600_000).contains(&half), "{half}");
        assert_eq!(at_fraction(&cdf, 2.0), 2 * DAY_MS);
        assert!(at_fraction(&cdf, 1.999) < 2 * DAY_MS);
    }

    #[test]
    fn a_few_hitters_send_most() {
        let z = Zipf::new(100, 1.1);
        let mut rng = StdRng::seed_from_u64(1);
        let top = (0..10_000).filter(|_| z.sample(&mut rng) < 10).count();
        assert!(top > 5_000, "{top}");
    }

    #[test]
    fn banners_say_the_weekday() {
        assert_eq!(
            rfc822(START_MS + 3_600_000),
            "Thu, 25 Jan 2024 01:00:00 +0000"
        );
        assert_eq!(
            rfc822(START_MS + 2 * DAY_MS),
            "Sat, 27 Jan 2024 00:00:00 +0000"
        );
    }
}
