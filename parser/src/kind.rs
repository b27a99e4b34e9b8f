//! What a log file is: its table, and the per-file facts that are not in its rows (send or
//! receive, POP3 or IMAP4, transport role, server). Kind comes from `#Log-type`, else the file
//! name, else the folder it sits in, else the columns (`#Fields`, or the shape of a headerless row).

use crate::fields::{datetime::parse_datetime_ms, event_symbol::event_name};
use crate::tokenize::Fields;

/// The output tables the parser fills.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Table {
    /// MSGTRK, MSGTRKMD, MSGTRKMS, MSGTRKMA.
    MessageTracking,
    /// SmtpSend / SmtpReceive protocol logs of every transport role.
    SmtpProtocol,
    /// CONNECTLOG.
    Connectivity,
    /// POP3 and IMAP4 protocol logs (client access).
    PopImapProtocol,
    /// Transport agent logs (anti-spam agents).
    AgentLog,
    /// Windows events of Exchange's providers (`.evtx`, event XML or JSON, Event Viewer text).
    TransportEvents,
    /// `Get-Queue` snapshots (`Format-List`, `Export-Csv`, `ConvertTo-Json`).
    QueueSnapshots,
}

impl Table {
    /// Every data table, in a stable order.
    pub const ALL: [Table; 7] = [
        Table::MessageTracking,
        Table::SmtpProtocol,
        Table::Connectivity,
        Table::PopImapProtocol,
        Table::AgentLog,
        Table::TransportEvents,
        Table::QueueSnapshots,
    ];

    /// The table's name in Parquet paths, Elasticsearch data streams and the CLI.
    pub fn name(self) -> &'static str {
        match self {
            Table::MessageTracking => "message_tracking",
            Table::SmtpProtocol => "smtp_protocol",
            Table::Connectivity => "connectivity",
            Table::PopImapProtocol => "pop_imap_protocol",
            Table::AgentLog => "agent_log",
            Table::TransportEvents => "transport_events",
            Table::QueueSnapshots => "queue_snapshots",
        }
    }

    /// Looks a table up by [`Table::name`].
    pub fn from_name(name: &str) -> Option<Table> {
        Table::ALL.into_iter().find(|t| t.name() == name)
    }
}

#[cfg(test)]
mod table_tests {
    use super::Table;

    #[test]
    fn all_lists_every_table_in_declaration_order() {
        for (i, t) in Table::ALL.into_iter().enumerate() {
            assert_eq!(t as usize, i, "{t:?}");
            assert_eq!(Table::from_name(t.name()), Some(t));
        }
    }
}

/// Send or receive, for SMTP protocol logs; carried from the file into every row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// SmtpSend (SEND*.LOG).
    Send,
    /// SmtpReceive (RECV*.LOG).
    Receive,
}

/// POP3 or IMAP4, for client access protocol logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MailProtocol {
    /// POP3 protocol log.
    Pop3,
    /// IMAP4 protocol log.
    Imap4,
}

/// The kind of log a file holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LogKind {
    /// Message tracking.
    MessageTracking,
    /// SMTP protocol log; direction unknown when neither header nor path says.
    SmtpProtocol(Option<Direction>),
    /// Connectivity log.
    Connectivity,
    /// POP3/IMAP4 protocol log.
    PopImap(Option<MailProtocol>),
    /// Agent log.
    Agent,
    /// Windows events or a queue snapshot, in the format given.
    Records(crate::records::RecordFormat),
}

impl LogKind {
    /// The table this kind's rows go to.
    pub fn table(self) -> Table {
        match self {
            LogKind::MessageTracking => Table::MessageTracking,
            LogKind::SmtpProtocol(_) => Table::SmtpProtocol,
            LogKind::Connectivity => Table::Connectivity,
            LogKind::PopImap(_) => Table::PopImapProtocol,
            LogKind::Agent => Table::AgentLog,
            LogKind::Records(f) => f.table(),
        }
    }

    /// `send`/`receive` for SMTP protocol logs.
    pub fn direction(self) -> Option<&'static str> {
        match self {
            LogKind::SmtpProtocol(Some(Direction::Send)) => Some("send"),
            LogKind::SmtpProtocol(Some(Direction::Receive)) => Some("receive"),
            _ => None,
        }
    }

    /// `pop3`/`imap4` for client access protocol logs.
    pub fn protocol(self) -> Option<&'static str> {
        match self {
            LogKind::PopImap(Some(MailProtocol::Pop3)) => Some("pop3"),
            LogKind::PopImap(Some(MailProtocol::Imap4)) => Some("imap4"),
            _ => None,
        }
    }

    /// A header kind and a path kind for the same file: the header decides the table, the path
    /// may still add what the header leaves open (send/receive, POP3/IMAP4).
    pub(crate) fn refine(self, hint: Option<LogKind>) -> LogKind {
        match (self, hint) {
            (LogKind::SmtpProtocol(None), Some(LogKind::SmtpProtocol(d))) => {
                LogKind::SmtpProtocol(d)
            }
            (LogKind::PopImap(None), Some(LogKind::PopImap(p))) => LogKind::PopImap(p),
            _ => self,
        }
    }
}

/// What `#Log-type` says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogTypeKind {
    /// A log kind mailflow reads.
    Known(LogKind),
    /// An Exchange log mailflow does not read (HttpProxy, EWS, ...): its text.
    Unsupported(String),
}

/// Maps a `#Log-type` value to a kind.
pub fn kind_from_log_type(value: &[u8]) -> LogTypeKind {
    let v = String::from_utf8_lossy(value).to_ascii_lowercase();
    let kind = if v.contains("message tracking") {
        LogKind::MessageTracking
    } else if v.contains("smtp receive") {
        LogKind::SmtpProtocol(Some(Direction::Receive))
    } else if v.contains("smtp send") {
        LogKind::SmtpProtocol(Some(Direction::Send))
    } else if v.contains("connectivity") {
        LogKind::Connectivity
    } else if v == "agent log" {
        LogKind::Agent
    } else if v.contains("pop3") {
        LogKind::PopImap(Some(MailProtocol::Pop3))
    } else if v.contains("imap4") {
        LogKind::PopImap(Some(MailProtocol::Imap4))
    } else {
        return LogTypeKind::Unsupported(String::from_utf8_lossy(value).into_owned());
    };
    LogTypeKind::Known(kind)
}

/// Infers the kind from a `#Fields` list (normalized names) when no `#Log-type` named it.
pub(crate) fn kind_from_field_names(names: &[String]) -> Option<LogKind> {
    let has = |n: &str| names.iter().any(|x| x == n);
    if has("eventid") && has("internalmessageid") {
        Some(LogKind::MessageTracking)
    } else if has("sessionid") && has("sequencenumber") && has("event") {
        Some(LogKind::SmtpProtocol(None))
    } else if has("destination") && has("description") {
        Some(LogKind::Connectivity)
    } else if has("seqnumber") && has("command") {
        Some(LogKind::PopImap(None))
    } else if has("agent") && has("p1fromaddress") {
        Some(LogKind::Agent)
    } else {
        None
    }
}

/// Guesses the kind of a headerless row from its shape (the fallback the format reference
/// describes: a timestamp first, then the column count and the event-symbol position).
pub(crate) fn kind_from_shape(fields: &Fields<'_>) -> Option<LogKind> {
    parse_datetime_ms(fields.get(0)?)?;
    let is_symbol = |i: usize| fields.get(i).is_some_and(|f| event_name(f).is_some());
    match fields.len() {
        9 if is_symbol(6) => Some(LogKind::SmtpProtocol(None)),
        6 if is_symbol(4) => Some(LogKind::Connectivity),
        13 => Some(LogKind::PopImap(None)),
        20 => Some(LogKind::Agent),
        21 | 26 | 27 | 30 => Some(LogKind::MessageTracking),
        _ => None,
    }
}

/// The documented column list for a kind, used when a file has no `#Fields` header. Message
/// tracking has one list per Exchange version, told apart by the column count.
pub fn default_fields(
    kind: LogKind,
    count: usize,
) -> Option<(&'static str, &'static [&'static str])> {
    match kind {
        LogKind::MessageTracking => match count {
            21 => Some(("Exchange 2007 message tracking", &tracking_2010()[..21])),
            26 => Some(("Exchange 2010 message tracking", tracking_2010())),
            27 => Some(("Exchange 2013 message tracking", &TRACKING_2016[..27])),
            30 => Some(("Exchange 2016/2019/SE message tracking", &TRACKING_2016)),
            _ => None,
        },
        LogKind::SmtpProtocol(_) if count == 9 => Some(("SMTP protocol log", &SMTP_PROTOCOL)),
        LogKind::Connectivity if count == 6 => Some(("connectivity log", &CONNECTIVITY)),
        LogKind::PopImap(_) if count == 13 => {
            Some(("Exchange 2013+ POP3/IMAP4 protocol log", &POP_IMAP))
        }
        LogKind::Agent if count == 20 => Some(("Exchange 2013+ agent log", &AGENT)),
        _ => None,
    }
}

/// 2010's 26 columns: 2016's first 27 without `network-message-id`, which 2013 inserted after
/// `message-id`. 2007 wrote the first 21 of these; 2013's list is a prefix of 2016's.
fn tracking_2010() -> &'static [&'static str] {
    static LIST: std::sync::OnceLock<Vec<&'static str>> = std::sync::OnceLock::new();
    LIST.get_or_init(|| {
        TRACKING_2016[..27]
            .iter()
            .copied()
            .filter(|c| *c != "network-message-id")
            .collect()
    })
}

static TRACKING_2016: [&str; 30] = [
    "date-time",
    "client-ip",
    "client-hostname",
    "server-ip",
    "server-hostname",
    "source-context",
    "connector-id",
    "source",
    "event-id",
    "internal-message-id",
    "message-id",
    "network-message-id",
    "recipient-address",
    "recipient-status",
    "total-bytes",
    "recipient-count",
    "related-recipient-address",
    "reference",
    "message-subject",
    "sender-address",
    "return-path",
    "message-info",
    "directionality",
    "tenant-id",
    "original-client-ip",
    "original-server-ip",
    "custom-data",
    "transport-traffic-type",
    "log-id",
    "schema-version",
];
static SMTP_PROTOCOL: [&str; 9] = [
    "date-time",
    "connector-id",
    "session-id",
    "sequence-number",
    "local-endpoint",
    "remote-endpoint",
    "event",
    "data",
    "context",
];
static CONNECTIVITY: [&str; 6] = [
    "date-time",
    "session",
    "source",
    "Destination",
    "direction",
    "description",
];
static POP_IMAP: [&str; 13] = [
    "dateTime",
    "sessionId",
    "seqNumber",
    "sIp",
    "cIp",
    "user",
    "duration",
    "rqsize",
    "rpsize",
    "command",
    "parameters",
    "context",
    "puid",
];
static AGENT: [&str; 20] = [
    "Timestamp",
    "SessionId",
    "LocalEndpoint",
    "RemoteEndpoint",
    "EnteredOrgFromIP",
    "MessageId",
    "P1FromAddress",
    "P2FromAddresses",
    "Recipient",
    "NumRecipients",
    "Agent",
    "Event",
    "Action",
    "SmtpResponse",
    "Reason",
    "ReasonData",
    "Diagnostics",
    "NetworkMsgID",
    "TenantID",
    "Directionality",
];

/// Facts about a file that its path tells: kind, server (when logs were collected per server)
/// and transport role.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PathInfo {
    /// Kind from the file name or its folder.
    pub kind: Option<LogKind>,
    /// Server name from a per-server folder (`EX01/MessageTracking/...`).
    pub server: Option<String>,
    /// `frontend`, `hub`, `mailbox` or `edge` from the 2013+ folder layout.
    pub role: Option<&'static str>,
}

/// Folders Exchange itself creates for transport logs; `true` marks the ones that name a log kind.
const EXCHANGE_FOLDERS: &[(&str, bool)] = &[
    ("messagetracking", true),
    ("smtpsend", true),
    ("smtpreceive", true),
    ("connectivity", true),
    ("agentlog", true),
    ("pop3", true),
    ("imap4", true),
    ("protocollog", false),
    ("logs", false),
    ("logging", false),
    ("transportroles", false),
    ("hub", false),
    ("frontend", false),
    ("mailbox", false),
    ("edge", false),
    ("delivery", false),
    ("submission", false),
    ("v14", false),
    ("v15", false),
];

/// Reads what a path says about the log file it names. Accepts `/` and `\` separators.
pub fn path_info(path: &str) -> PathInfo {
    let parts: Vec<&str> = path
        .split(['/', '\\'])
        .filter(|p| !p.is_empty() && *p != ".")
        .collect();
    let Some((file, folders)) = parts.split_last() else {
        return PathInfo::default();
    };
    let mut kind = kind_from_file_name(file);
    if kind.is_none() {
        kind = folders
            .iter()
            .rev()
            .find_map(|f| kind_from_folder(&f.to_ascii_lowercase()));
    }
    let role = folders
        .iter()
        .rev()
        .find_map(|f| match f.to_ascii_lowercase().as_str() {
            "frontend" => Some("frontend"),
            "hub" => Some("hub"),
            "mailbox" => Some("mailbox"),
            "edge" => Some("edge"),
            _ => None,
        });
    PathInfo {
        kind,
        server: server_from_folders(folders),
        role,
    }
}

fn kind_from_file_name(file: &str) -> Option<LogKind> {
    let upper = file.to_ascii_uppercase();
    let digit_after = |p: &str| {
        upper
            .strip_prefix(p)
            .is_some_and(|r| r.starts_with(|c: char| c.is_ascii_digit()))
    };
    if upper.starts_with("MSGTRK") {
        return Some(LogKind::MessageTracking);
    }
    if digit_after("RECV") {
        return Some(LogKind::SmtpProtocol(Some(Direction::Receive)));
    }
    if digit_after("SEND") {
        return Some(LogKind::SmtpProtocol(Some(Direction::Send)));
    }
    if upper.starts_with("CONNECTLOG") {
        return Some(LogKind::Connectivity);
    }
    if upper.starts_with("AGENTLOG") {
        return Some(LogKind::Agent);
    }
    if upper.starts_with("POP3") {
        return Some(LogKind::PopImap(Some(MailProtocol::Pop3)));
    }
    if upper.starts_with("IMAP4") {
        return Some(LogKind::PopImap(Some(MailProtocol::Imap4)));
    }
    // Collected copies are often renamed after their folder (`smtp-receive.log`,
    // `SmtpRecive.log` in Elastic's samples); look for the folder name inside the file name.
    let squashed: String = file
        .to_ascii_lowercase()
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .collect();
    [
        ("messagetracking", LogKind::MessageTracking),
        (
            "smtpreceive",
            LogKind::SmtpProtocol(Some(Direction::Receive)),
        ),
        (
            "smtprecive",
            LogKind::SmtpProtocol(Some(Direction::Receive)),
        ),
        ("smtpsend", LogKind::SmtpProtocol(Some(Direction::Send))),
        ("connectivity", LogKind::Connectivity),
        ("agentlog", LogKind::Agent),
        ("pop3", LogKind::PopImap(Some(MailProtocol::Pop3))),
        ("imap4", LogKind::PopImap(Some(MailProtocol::Imap4))),
    ]
    .into_iter()
    .find_map(|(needle, kind)| squashed.contains(needle).then_some(kind))
}

fn kind_from_folder(folder: &str) -> Option<LogKind> {
    Some(match folder {
        "messagetracking" => LogKind::MessageTracking,
        "smtpreceive" => LogKind::SmtpProtocol(Some(Direction::Receive)),
        "smtpsend" => LogKind::SmtpProtocol(Some(Direction::Send)),
        "connectivity" => LogKind::Connectivity,
        "agentlog" => LogKind::Agent,
        "pop3" => LogKind::PopImap(Some(MailProtocol::Pop3)),
        "imap4" => LogKind::PopImap(Some(MailProtocol::Imap4)),
        _ => return None,
    })
}

/// The folder just above the run of Exchange log folders that holds the file, when that run
/// names a log kind: `EX01/TransportRoles/Logs/Hub/ProtocolLog/SmtpSend/SEND1.LOG` → `EX01`.
/// Install paths (`C:\Program Files\Microsoft\Exchange Server\V15\...`) name no server.
fn server_from_folders(folders: &[&str]) -> Option<String> {
    let mut specific = false;
    let mut i = folders.len();
    while i > 0 {
        let lower = folders[i - 1].to_ascii_lowercase();
        match EXCHANGE_FOLDERS.iter().find(|(name, _)| *name == lower) {
            Some((_, names_kind)) => {
                specific |= *names_kind;
                i -= 1;
            }
            None => break,
        }
    }
    if !specific || i == 0 {
        return None;
    }
    let candidate = folders[i - 1];
    let lower = candidate.to_ascii_lowercase();
    let install_path = ["exchange server", "program files", "microsoft", "..", "~"]
        .contains(&lower.as_str())
        || (candidate.len() == 2 && candidate.ends_with(':'));
    (!install_path).then(|| candidate.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_types() {
        assert_eq!(
            kind_from_log_type(b"Message Tracking Log"),
            LogTypeKind::Known(LogKind::MessageTracking)
        );
        assert_eq!(
            kind_from_log_type(b"SMTP Send Protocol Log"),
            LogTypeKind::Known(LogKind::SmtpProtocol(Some(Direction::Send)))
        );
        assert_eq!(
            kind_from_log_type(b"Transport Connectivity Log"),
            LogTypeKind::Known(LogKind::Connectivity)
        );
        assert_eq!(
            kind_from_log_type(b"HttpProxy Logs"),
            LogTypeKind::Unsupported("HttpProxy Logs".into())
        );
    }

    #[test]
    fn per_server_collections() {
        let p = path_info("logs/EX01/SmtpSend/SEND20250114-1.LOG");
        assert_eq!(p.server.as_deref(), Some("EX01"));
        assert_eq!(p.kind, Some(LogKind::SmtpProtocol(Some(Direction::Send))));
        let p = path_info(
            r"D:\collect\EX02\TransportRoles\Logs\Hub\ProtocolLog\SmtpReceive\RECV2023011116-1.LOG",
        );
        assert_eq!(p.server.as_deref(), Some("EX02"));
        assert_eq!(p.role, Some("hub"));
        assert_eq!(
            path_info("/srv/logs/EX03/MessageTracking/MSGTRKMS2022091915-1.LOG")
                .server
                .as_deref(),
            Some("EX03")
        );
    }

    #[test]
    fn install_paths_and_loose_files_name_no_server() {
        let p = path_info(
            r"C:\Program Files\Microsoft\Exchange Server\V15\TransportRoles\Logs\MessageTracking\MSGTRK20240101-1.LOG",
        );
        assert_eq!(p.server, None);
        assert_eq!(p.kind, Some(LogKind::MessageTracking));
        assert_eq!(path_info("/tmp/logs/MSGTRK20240101-1.LOG").server, None);
        assert_eq!(path_info("RECV2023011116-1.LOG").server, None);
    }

    #[test]
    fn headerless_tracking_lists_by_version() {
        let (_, v2007) = default_fields(LogKind::MessageTracking, 21).unwrap();
        assert_eq!((v2007[10], v2007[20]), ("message-id", "message-info"));
        let (_, v2010) = default_fields(LogKind::MessageTracking, 26).unwrap();
        assert_eq!(
            (v2010[10], v2010[11], v2010[25]),
            ("message-id", "recipient-address", "custom-data")
        );
        let (_, v2013) = default_fields(LogKind::MessageTracking, 27).unwrap();
        assert_eq!(
            (v2013[11], v2013[26]),
            ("network-message-id", "custom-data")
        );
        assert_eq!(default_fields(LogKind::MessageTracking, 25), None);
    }

    #[test]
    fn renamed_copies() {
        assert_eq!(
            path_info("smtp-receive.elastic.log").kind,
            Some(LogKind::SmtpProtocol(Some(Direction::Receive)))
        );
        assert_eq!(
            path_info("SmtpRecive.log").kind,
            Some(LogKind::SmtpProtocol(Some(Direction::Receive)))
        );
        assert_eq!(
            path_info("pop3.x.log").kind,
            Some(LogKind::PopImap(Some(MailProtocol::Pop3)))
        );
        assert_eq!(path_info("notes.txt").kind, None);
        assert_eq!(path_info("SENDER.txt").kind, None);
    }
}
