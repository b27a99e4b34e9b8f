//! Seeded, realistic Exchange transport logs, for benchmarks, load tests and trying the lake.
//!
//! Output looks like what a 2016/2019 Exchange organisation writes: per-server folders laid
//! out as Exchange lays them out (`EX01/TransportRoles/Logs/MessageTracking/MSGTRK…-1.LOG`,
//! `…/FrontEnd/ProtocolLog/SmtpReceive/RECV…`, `…/Hub/ProtocolLog/SmtpSend/SEND…`,
//! `…/Hub/Connectivity/CONNECTLOG…`), UTF-8 BOM, header block, CRLF, files rolled daily and at
//! 10 MiB. The logs come from one simulation of the fleet ([`fleet`]), so they share message
//! ids, sessions, hosts and times. Content covers what the parser must survive: quoted fields
//! with commas and doubled quotes, Unicode subjects and addresses, long latency strings,
//! repeated custom-data keys, certificates in both of Exchange's forms. The same seed gives the
//! same bytes.

pub mod fleet;

use std::path::{Path, PathBuf};

use anyhow::Result;

pub use fleet::{FleetOptions, fleet_log, generate_fleet};

/// Which logs to generate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum GenKind {
    /// MSGTRK message tracking logs (Exchange 2016+ 30 columns).
    MessageTracking,
    /// SmtpReceive protocol logs.
    SmtpReceive,
    /// SmtpSend protocol logs.
    SmtpSend,
    /// Transport connectivity logs.
    Connectivity,
    /// All of them, as the fleet writes them.
    Mixed,
}

/// One generated file's kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFile {
    /// Message tracking.
    MessageTracking,
    /// SmtpReceive protocol log.
    SmtpReceive,
    /// SmtpSend protocol log.
    SmtpSend,
    /// Transport connectivity log.
    Connectivity,
}

impl GenKind {
    /// The file kinds this choice generates.
    pub fn parts(self) -> &'static [LogFile] {
        match self {
            GenKind::MessageTracking => &[LogFile::MessageTracking],
            GenKind::SmtpReceive => &[LogFile::SmtpReceive],
            GenKind::SmtpSend => &[LogFile::SmtpSend],
            GenKind::Connectivity => &[LogFile::Connectivity],
            GenKind::Mixed => &[
                LogFile::MessageTracking,
                LogFile::SmtpReceive,
                LogFile::SmtpSend,
                LogFile::Connectivity,
            ],
        }
    }
}

/// Exchange's default maximum log file size.
pub const ROLL_BYTES: usize = 10 << 20;

pub(crate) const TRACKING_FIELDS: &str = "date-time,client-ip,client-hostname,server-ip,server-hostname,source-context,connector-id,source,event-id,internal-message-id,message-id,network-message-id,recipient-address,recipient-status,total-bytes,recipient-count,related-recipient-address,reference,message-subject,sender-address,return-path,message-info,directionality,tenant-id,original-client-ip,original-server-ip,custom-data,transport-traffic-type,log-id,schema-version";
pub(crate) const PROTOCOL_FIELDS: &str = "date-time,connector-id,session-id,sequence-number,local-endpoint,remote-endpoint,event,data,context";

pub(crate) const SUBJECTS: &[&str] = &[
    "Quarterly report",
    "RE: Invoice 2024-0113 (urgent)!",
    "Meeting notes, action items and \"next steps\"",
    "Réunion d'équipe – ordre du jour",
    "Заказ #88231 подтверждён",
    "会議のお知らせ：来週の予定",
    "order #88231",
    "FW: Budget, forecast, and headcount",
    "Weekly status",
    "Ihre Bestellung bei Müller-Bau",
    "",
];

/// Appends `f` and a comma, quoted as Exchange quotes (only when it holds a comma or quote).
pub(crate) fn field(out: &mut Vec<u8>, f: &str) {
    if f.contains([',', '"']) {
        out.push(b'"');
        out.extend_from_slice(f.replace('"', "\"\"").as_bytes());
        out.push(b'"');
    } else {
        out.extend_from_slice(f.as_bytes());
    }
    out.push(b',');
}

pub(crate) fn ts(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let days = secs.div_euclid(86_400);
    let date = mailflow_parser::fields::datetime::format_date(ms);
    let rem = secs - days * 86_400;
    format!(
        "{date}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        ms.rem_euclid(1000)
    )
}

/// Writes about `bytes` of logs of `kind` under `out`: `servers` servers' folders, traffic
/// over `days` days. Returns the files written.
pub fn generate_dir(
    kind: GenKind,
    bytes: u64,
    seed: u64,
    servers: usize,
    days: u32,
    out: &Path,
) -> Result<Vec<PathBuf>> {
    let opts = FleetOptions {
        kinds: kind.parts().to_vec(),
        bytes,
        seed,
        servers,
        days,
    };
    generate_fleet(&opts, out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_bytes() {
        let a = fleet_log(LogFile::MessageTracking, 20_000, 7).unwrap();
        let b = fleet_log(LogFile::MessageTracking, 20_000, 7).unwrap();
        let c = fleet_log(LogFile::MessageTracking, 20_000, 8).unwrap();
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert!(a.starts_with(b"\xEF\xBB\xBF#Software"));
        assert!((20_000..40_000).contains(&a.len()), "{}", a.len());
    }

    #[test]
    fn timestamps_format_like_exchange() {
        assert_eq!(ts(1_706_195_769_843), "2024-01-25T15:16:09.843Z");
    }
}
