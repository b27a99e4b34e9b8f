//! What each column of the parsed tables (and `rejects`) means: the text `mailflow schema`
//! prints, the values of the columns that take a closed set, and the Elastic Common Schema
//! field a column maps to (the mapping the Elasticsearch sink uses). Kept beside the column
//! definitions in `schema.rs` and held to them by tests: every column of every schema has an
//! entry here, and every value a closed set's column takes on real logs is listed.

use crate::kind::Table;

/// One column's documentation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ColumnDoc {
    /// What the column holds, where it comes from, and what to watch for when reading it.
    pub meaning: &'static str,
    /// The values the column takes when they are a closed set, else empty; for Exchange's own
    /// open sets (tracking `event_id`), the values Microsoft documents (see `open`).
    pub values: &'static [&'static str],
    /// Whether values other than `values` may appear (a newer Exchange build adds events).
    pub open: bool,
    /// The Elastic Common Schema field that holds the same thing, if one does.
    pub ecs: Option<&'static str>,
}

/// A column with a meaning only.
pub const fn doc(meaning: &'static str) -> ColumnDoc {
    ColumnDoc {
        meaning,
        values: &[],
        open: false,
        ecs: None,
    }
}

/// A column that holds what an Elastic Common Schema field does.
pub const fn ecs(meaning: &'static str, field: &'static str) -> ColumnDoc {
    ColumnDoc {
        meaning,
        values: &[],
        open: false,
        ecs: Some(field),
    }
}

/// A column that takes a closed set of values.
pub const fn values(meaning: &'static str, values: &'static [&'static str]) -> ColumnDoc {
    ColumnDoc {
        meaning,
        values,
        open: false,
        ecs: None,
    }
}

/// Tracking `event-id`s Microsoft documents for Exchange 2016 and 2019 (plus `SENDEXTERNAL`,
/// seen in real logs); Exchange may write others.
pub const TRACKING_EVENTS: &[&str] = &[
    "AGENTINFO",
    "BADMAIL",
    "CLIENTSUBMISSION",
    "DEFER",
    "DELIVER",
    "DELIVERFAIL",
    "DROP",
    "DSN",
    "DUPLICATEDELIVER",
    "DUPLICATEEXPAND",
    "DUPLICATEREDIRECT",
    "EXPAND",
    "FAIL",
    "HADISCARD",
    "HARECEIVE",
    "HAREDIRECT",
    "HAREDIRECTFAIL",
    "INITMESSAGECREATED",
    "LOAD",
    "MODERATIONEXPIRE",
    "MODERATORAPPROVE",
    "MODERATORREJECT",
    "MODERATORSALLNDR",
    "NOTIFYMAPI",
    "NOTIFYSHADOW",
    "POISONMESSAGE",
    "PROCESS",
    "PROCESSMEETINGMESSAGE",
    "RECEIVE",
    "REDIRECT",
    "RESOLVE",
    "RESUBMIT",
    "RESUBMITDEFER",
    "RESUBMITFAIL",
    "SEND",
    "SENDEXTERNAL",
    "SUBMIT",
    "SUBMITDEFER",
    "SUBMITFAIL",
    "SUPPRESSED",
    "THROTTLE",
    "TRANSFER",
];

/// Tracking `source`s Microsoft documents.
const TRACKING_SOURCES: &[&str] = &[
    "ADMIN",
    "AGENT",
    "APPROVAL",
    "BOOTLOADER",
    "DNS",
    "DSN",
    "GATEWAY",
    "MAILBOXRULE",
    "MEETINGMESSAGEPROCESSOR",
    "ORAR",
    "PICKUP",
    "POISONMESSAGE",
    "PUBLICFOLDER",
    "QUEUE",
    "REDUNDANCY",
    "ROUTING",
    "SAFETYNET",
    "SMTP",
    "STOREDRIVER",
];

const PROTOCOL_EVENTS: &[&str] = &["connect", "disconnect", "send", "receive", "information"];

/// The documentation of `column` in `table` (a table name as the lake has it: the parsed
/// tables' and `rejects`), or `None` if the table has no such column.
pub fn column_doc(table: &str, column: &str) -> Option<ColumnDoc> {
    if table == crate::schema::REJECTS {
        return rejects(column);
    }
    let table = Table::ALL.into_iter().find(|t| t.name() == table)?;
    lineage(column).or_else(|| match table {
        Table::MessageTracking => message_tracking(column),
        Table::SmtpProtocol => smtp_protocol(column),
        Table::Connectivity => connectivity(column),
        Table::PopImapProtocol => pop_imap(column),
        Table::AgentLog => agent_log(column),
        Table::TransportEvents => transport_events(column),
        Table::QueueSnapshots => queue_snapshots(column),
    })
}

/// Columns every parsed table has.
fn lineage(column: &str) -> Option<ColumnDoc> {
    Some(match column {
        "timestamp" => ecs(
            "When the line was written, in UTC (the log's date-time field).",
            "@timestamp",
        ),
        "server" => ecs(
            "The Exchange server that wrote the log, as its short name in upper case (`EX01`): \
             from the log folder, the rows' own host names or `--server`. One server has one \
             name in every table, so tables join on it.",
            "host.name",
        ),
        "source_file" => ecs(
            "Name of the log file the row was read from.",
            "log.file.path",
        ),
        "source_offset" => ecs(
            "Byte offset of the row's line in its file: with `source_file`, the row's address \
             (and what keeps the lake exactly-once).",
            "log.offset",
        ),
        "extra" => doc(
            "Header fields this version of mailflow maps to no column, by field name (a newer \
             Exchange build's additions): nothing the log holds is dropped.",
        ),
        "smtp_reply_code" => {
            doc("The SMTP reply code the row carries (`550`), from the first reply found in it.")
        }
        "enhanced_status_code" => doc(
            "The enhanced status code (RFC 3463) of that reply (`5.7.1`); see \
             `reference/enhanced-status-codes` in the design notes for each code's meaning.",
        ),
        _ => return None,
    })
}

fn message_tracking(column: &str) -> Option<ColumnDoc> {
    Some(match column {
        "client_ip" => ecs(
            "IP address of the side that handed the message over: the remote client or server \
             on RECEIVE, this server on SEND.",
            "source.ip",
        ),
        "client_hostname" => ecs(
            "Host name of that side (may be a bare NetBIOS name).",
            "source.domain",
        ),
        "server_ip" => ecs(
            "IP address of the side that took the message: this server on RECEIVE, the next \
             hop on SEND.",
            "destination.ip",
        ),
        "server_hostname" => ecs(
            "Host name of that side: on SEND rows the remote host, not this server (the \
             `server` column is always the server that logged the row).",
            "destination.domain",
        ),
        "source_context" => doc(
            "Extra information from the component that logged the event: the SMTP session \
             (`08DC1DB12C345BE5;2024-01-25T15:16:09.544Z;0`) on SMTP RECEIVE, the remote reply \
             on SEND, the mailbox and store event on STOREDRIVER rows, the agent on AGENTINFO.",
        ),
        "connector_id" => doc(
            "The connector that handled the message: `SERVER\\Connector name` for a receive \
             connector, the connector's name for a send connector.",
        ),
        "source" => ColumnDoc {
            meaning: "The transport component that logged the event (an open set: these are \
                      the ones Microsoft documents).",
            values: TRACKING_SOURCES,
            open: true,
            ecs: Some("event.provider"),
        },
        "event_id" => ColumnDoc {
            meaning: "What happened to the message (an open set: these are the ones Microsoft \
                      documents for Exchange 2016 and 2019, plus SENDEXTERNAL).",
            values: TRACKING_EVENTS,
            open: true,
            ecs: Some("event.action"),
        },
        "internal_message_id" => ecs(
            "The message's number on this server; another server gives it another.",
            "email.local_id",
        ),
        "message_id" => ecs(
            "The Message-Id header (`<…@…>`): the same on every server, so it follows a \
             message across the fleet.",
            "email.message_id",
        ),
        "network_message_id" => doc(
            "A GUID Exchange gives the message at submission, kept by its copies (2013 and \
             later).",
        ),
        "recipient_address" => ecs(
            "The recipients this row is about, in the order `recipient_status` follows.",
            "email.to.address",
        ),
        "recipient_status" => doc(
            "One status per recipient, in `recipient_address`'s order: the SMTP reply on \
             SEND, FAIL and DEFER (`550 4.4.7 QUEUE.Expired;message expired` is one status), \
             To/Cc/Bcc on STOREDRIVER RECEIVE.",
        ),
        "total_bytes" => doc("Size of the message in bytes."),
        "recipient_count" => doc("Number of recipients of the message."),
        "related_recipient_address" => doc(
            "Recipients an EXPAND, REDIRECT or RESOLVE row points to (the members of an \
             expanded group, a redirect's target).",
        ),
        "reference" => {
            doc("Message ids this row refers to (a DSN's original message, a fork's parent).")
        }
        "message_subject" => ecs(
            "The Subject header (empty when subject logging is off).",
            "email.subject",
        ),
        "sender_address" => ecs(
            "The Sender header's address, or the From header's when there is no Sender.",
            "email.sender.address",
        ),
        "return_path" => doc("The envelope sender (MAIL FROM); `<>` for a null sender."),
        "message_info" => doc(
            "Event-specific information: origination time and the per-hop latency string on \
             SEND and DELIVER, short codes (`04I:`) on RECEIVE.",
        ),
        "directionality" => values(
            "Whether the message came from outside the organisation or from within it \
             (Exchange 2010 and later).",
            &["Incoming", "Originating", "Undefined"],
        ),
        "tenant_id" => doc("The tenant (Exchange Online); empty on premises."),
        "original_client_ip" => doc("IP address of the original client, when relayed."),
        "original_server_ip" => doc("IP address of the original server, when relayed."),
        "custom_data" => doc(
            "Component-specific key-value data, each key as Exchange writes it with its type \
             tag (`S:E2ELatency`, `S:DeliveryPriority`), each holding the list of its values in \
             the order they appear (a key may repeat: `S:AMA`). DuckDB: \
             `custom_data['S:DeliveryPriority'][1]`.",
        ),
        "transport_traffic_type" => doc("Exchange 2016 and later: `Email`, or empty."),
        "log_id" => ecs(
            "A GUID Exchange gives each tracking row (2016 and later).",
            "event.id",
        ),
        "schema_version" => ecs(
            "The build of the Exchange server that wrote the row (`15.01.2507.039`), 2016 and \
             later.",
            "service.version",
        ),
        "session_id" => doc(
            "The receive session that carried the message (from `source_context` on SMTP \
             RECEIVE): joins `smtp_protocol.session_id` and `smtp_sessions.session_id`.",
        ),
        _ => return None,
    })
}

fn smtp_protocol(column: &str) -> Option<ColumnDoc> {
    Some(match column {
        "direction" => values(
            "Whether the log is a receive connector's or a send connector's (from the log's \
             folder or header).",
            &["receive", "send"],
        ),
        "transport_role" => values(
            "The transport service whose log this is (from the log's folder): Front End \
             Transport, Hub/Mailbox Transport, the Mailbox Transport services or an Edge \
             server. Null when the folder does not say.",
            &["frontend", "hub", "mailbox", "edge"],
        ),
        "connector_id" => doc(
            "The connector: `SERVER\\Connector name` for a receive connector, the connector's \
             name for a send connector.",
        ),
        "session_id" => doc(
            "The SMTP session (16 hex digits), the same on every line of one session and in \
             tracking's `session_id`.",
        ),
        "sequence_number" => ecs(
            "The line's number within its session, from 0 (gaps and repeats happen).",
            "event.sequence",
        ),
        "local_ip" => doc("This server's IP address in the session."),
        "local_port" => doc("This server's port in the session."),
        "remote_ip" => doc("The other side's IP address."),
        "remote_port" => doc("The other side's port."),
        "event" => ColumnDoc {
            meaning: "What the line records, from Exchange's one-character symbol: `+` connect, \
                      `-` disconnect, `>` sent by this server, `<` received by it, `*` \
                      information.",
            values: PROTOCOL_EVENTS,
            open: false,
            ecs: Some("event.action"),
        },
        "data" => doc("The SMTP command or reply, or informational text."),
        "context" => doc(
            "More information (TLS, certificate, authentication and failure text on `*` \
             lines).",
        ),
        _ => return None,
    })
}

fn connectivity(column: &str) -> Option<ColumnDoc> {
    Some(match column {
        "transport_role" => values(
            "The transport service whose log this is (from the log's folder).",
            &["frontend", "hub", "mailbox", "edge"],
        ),
        "session" => doc("The outbound connection's id."),
        "source" => ecs(
            "The queue or component the connection is for: `SMTP`, `MapiDelivery`, \
             `MapiSubmission`.",
            "event.provider",
        ),
        "destination" => ecs(
            "The next hop: a host name, a mailbox database GUID, `shadowredundancy`, …",
            "destination.domain",
        ),
        "direction" => ColumnDoc {
            meaning: "`+` connect, `-` disconnect, `>` send, by name.",
            values: PROTOCOL_EVENTS,
            open: false,
            ecs: Some("event.action"),
        },
        "description" => ecs(
            "What happened: DNS and MX results, connection failures, counts at disconnect.",
            "message",
        ),
        _ => return None,
    })
}

fn pop_imap(column: &str) -> Option<ColumnDoc> {
    Some(match column {
        "protocol" => values(
            "The client access protocol (from the log's folder).",
            &["pop3", "imap4"],
        ),
        "session_id" => doc("The client session."),
        "sequence_number" => ecs("The line's number within its session.", "event.sequence"),
        "server_ip" => ecs("The server's IP address.", "server.ip"),
        "server_port" => ecs("The server's port.", "server.port"),
        "client_ip" => ecs("The client's IP address.", "client.ip"),
        "client_port" => ecs("The client's port.", "client.port"),
        "user" => ecs("The user the session logged on as.", "user.name"),
        "duration_ms" => doc("How long the command took, in milliseconds."),
        "request_bytes" => doc("Size of the request in bytes."),
        "response_bytes" => doc("Size of the response in bytes."),
        "command" => ecs("The POP3 or IMAP4 command.", "event.action"),
        "parameters" => doc("The command's parameters (passwords masked by Exchange)."),
        "context" => doc("What happened (`R=OK;Msg=…`), as Exchange writes it."),
        "puid" => doc("The user's Passport unique id (usually empty)."),
        _ => return None,
    })
}

fn agent_log(column: &str) -> Option<ColumnDoc> {
    Some(match column {
        "session_id" => doc("The SMTP session the agent acted in."),
        "local_ip" => doc("This server's IP address in the session."),
        "local_port" => doc("This server's port (often absent)."),
        "remote_ip" => doc("The other side's IP address."),
        "remote_port" => doc("The other side's port."),
        "entered_org_from_ip" => doc("The IP address the message entered the organisation from."),
        "message_id" => ecs("The Message-Id header.", "email.message_id"),
        "p1_from_address" => doc("The envelope sender (MAIL FROM)."),
        "p2_from_addresses" => ecs("The From header's addresses.", "email.from.address"),
        "recipients" => ecs("The recipients the agent acted on.", "email.to.address"),
        "num_recipients" => doc("Number of recipients."),
        "agent" => ecs(
            "The transport agent (`Content Filter Agent`, `Sender Filter Agent`, …).",
            "event.provider",
        ),
        "event" => doc("The SMTP event the agent ran on (`OnEndOfData`, `OnRcptCommand`, …)."),
        "action" => ecs(
            "What the agent did (`RejectMessage`, `AcceptMessage`, …).",
            "event.action",
        ),
        "smtp_response" => doc("The SMTP response the agent gave, if it rejected."),
        "reason" => ecs("Why the agent acted.", "event.reason"),
        "reason_data" => doc("Data behind the reason (a score, a list name)."),
        "diagnostics" => doc("The agent's diagnostic text."),
        "network_message_id" => doc("The message's network message id (a GUID)."),
        "tenant_id" => doc("The tenant (Exchange Online); empty on premises."),
        "directionality" => values(
            "Whether the message came from outside the organisation or from within it.",
            &["Incoming", "Originating", "Undefined"],
        ),
        _ => return None,
    })
}

fn rejects(column: &str) -> Option<ColumnDoc> {
    Some(match column {
        "timestamp" => ecs(
            "The line's time, when it could be read; null otherwise.",
            "@timestamp",
        ),
        "server" | "source_file" | "source_offset" => lineage(column)?,
        "line_number" => doc("The line's number in its file, from 1."),
        "table" => doc("The table the line would have gone to, when known."),
        "reason" => ColumnDoc {
            meaning: "Why the line was not parsed.",
            values: &[
                "field_count",
                "bad_value",
                "line_too_long",
                "unterminated_quote",
                "unknown_layout",
                "unsupported_log_type",
            ],
            open: false,
            ecs: Some("error.type"),
        },
        "detail" => ecs(
            "What was wrong, in words (which field, what value).",
            "error.message",
        ),
        "raw" => ecs("The line's bytes as read.", "event.original"),
        _ => return None,
    })
}

const EVENT_LEVELS: &[&str] = &["Critical", "Error", "Warning", "Information", "Verbose"];

fn transport_events(column: &str) -> Option<ColumnDoc> {
    Some(match column {
        "computer" => {
            doc("The computer that logged the event, as the event names it (often a FQDN).")
        }
        "log_name" => ecs("The event log (`Application`, `System`).", "winlog.channel"),
        "provider" => ecs(
            "The event's source: `MSExchangeTransport`, `MSExchangeFrontEndTransport`, \
             `MSExchange Common`, `Schannel`, … (by default only Exchange's providers and \
             Schannel are kept).",
            "event.provider",
        ),
        "event_id" => ecs(
            "The event ID (`12014`, `1035`): with the provider, what happened.",
            "event.code",
        ),
        "level" => ColumnDoc {
            meaning: "The event's level.",
            values: EVENT_LEVELS,
            open: false,
            ecs: Some("log.level"),
        },
        "task_category" => ecs(
            "The task category as the event's provider names it (`TransportService`, \
             `SmtpReceive`); null where the input has only its number.",
            "winlog.task",
        ),
        "record_id" => ecs(
            "The event's record number in its log: with `computer` and `log_name`, the event's \
             identity.",
            "winlog.record_id",
        ),
        "insertion_strings" => doc(
            "The event's insertion strings (`<Data>` values, `Properties`), in order: the \
             connector, FQDN, thumbprint or error name the message text is made from.",
        ),
        "description" => ecs(
            "The rendered message text, when the input has it (Event Viewer text, \
             `ConvertTo-Json`, rendered XML); `.evtx` files and plain XML carry only the \
             insertion strings.",
            "message",
        ),
        "input_format" => values(
            "What the event was read from.",
            &["evtx", "xml", "json", "text"],
        ),
        _ => return None,
    })
}

fn queue_snapshots(column: &str) -> Option<ColumnDoc> {
    Some(match column {
        "identity" => {
            doc("The queue's identity, `SERVER\\number` (`EX01\\4`) or `SERVER\\Submission`.")
        }
        "delivery_type" => doc(
            "How the queue delivers (`SmtpRelayToRemoteAdSite`, `SmtpDeliveryToMailbox`, \
             `DnsConnectorDelivery`, `Unreachable`, `ShadowRedundancy`, …).",
        ),
        "next_hop_domain" => ecs(
            "Where the queue delivers to: a domain, an AD site, a DAG or a mailbox database.",
            "destination.domain",
        ),
        "next_hop_category" => values(
            "Inside or outside the organisation.",
            &["Internal", "External"],
        ),
        "status" => ColumnDoc {
            meaning: "The queue's state at the snapshot.",
            values: &["Active", "Ready", "Retry", "Suspended", "Connecting"],
            open: true,
            ecs: None,
        },
        "message_count" => doc("Messages in the queue at the snapshot."),
        "last_error" => ecs(
            "The queue's `LastError`, whole: an `[{LRT=…};{LED=…};{FQDN=…};{IP=…}]` block or text.",
            "error.message",
        ),
        "last_error_reply" => doc(
            "The innermost SMTP reply in `last_error` (`454 4.7.0 Temporary authentication \
             failure.`): Exchange wraps the peer's reply in its own, and the inner one is what \
             went wrong.",
        ),
        "last_error_fqdn" => doc("The host the queue last tried (`FQDN=` of the error)."),
        "last_error_ip" => ecs(
            "The address the queue last tried (`IP=`, or the last endpoint attempted).",
            "destination.ip",
        ),
        "last_retry_time" => {
            doc("When the queue last tried, in UTC (`LastRetryTime`, or the error's `LRT=`).")
        }
        "next_retry_time" => doc("When the queue tries next, in UTC."),
        "input_format" => values("What the snapshot was read from.", &["list", "csv", "json"]),
        _ => return None,
    })
}
