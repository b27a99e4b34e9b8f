//! What each column of the tables enrichment writes means: the derived tables (`smtp_sessions`,
//! `messages`) and the diagnosis columns it adds to the parsed tables; for every other column,
//! the parser's documentation ([`mailflow_parser::docs`]). Held to the schemas by tests.

pub use mailflow_parser::docs::ColumnDoc;
use mailflow_parser::docs::{doc, ecs, values};

use crate::{messages, sessions};

/// `smtp_sessions.outcome`.
pub const SESSION_OUTCOMES: &[&str] = &["delivered", "failed", "deferred", "dropped"];

/// `messages.status`.
pub const MESSAGE_STATUSES: &[&str] = &[
    "delivered",
    "partially_failed",
    "failed",
    "deferred",
    "pending",
];

/// The documentation of `column` in `table` (any table the lake holds), or `None` if the table
/// has no such column.
pub fn column_doc(table: &str, column: &str) -> Option<ColumnDoc> {
    if let Some(d) = diagnosis(table, column) {
        return Some(d);
    }
    match table {
        sessions::TABLE => smtp_sessions(column),
        messages::TABLE => messages(column),
        _ => mailflow_parser::docs::column_doc(table, column),
    }
}

/// The diagnosis columns, on the tables that have them.
fn diagnosis(table: &str, column: &str) -> Option<ColumnDoc> {
    let diagnosed = table == sessions::TABLE
        || table == messages::TABLE
        || crate::catalog::DIAGNOSED.iter().any(|t| t.name() == table);
    if !diagnosed {
        return None;
    }
    Some(match column {
        "diagnosis_code" => ecs(
            "The diagnosis catalog's code for the failure this row shows (`TLS.CERT_NO_PRIVATE_KEY`): \
             its cause, evidence to check and remedy are in `mailflow diagnose` and the catalog. \
             Null when the row shows no known failure.",
            "rule.id",
        ),
        "diagnosis_category" => ecs(
            "The code's first part: the area of the failure (`TLS`, `AUTH`, `DNS`, `QUEUE`, …).",
            "rule.category",
        ),
        "diagnosis_severity" => values(
            "How much mail flow the failure stops: `critical` (mail for many users stopped), \
             `major`, `minor`, `info`.",
            &["critical", "major", "minor", "info"],
        ),
        "diagnosis_evidence" if table == sessions::TABLE || table == messages::TABLE => doc(
            "The line that showed the failure, with what identifies it (a certificate's \
             thumbprint, the recipient).",
        ),
        _ => return None,
    })
}

fn smtp_sessions(column: &str) -> Option<ColumnDoc> {
    Some(match column {
        "timestamp" => ecs(
            "When the session's first line was written (UTC).",
            "@timestamp",
        ),
        "server" => ecs(
            "The server whose log holds the session, as in every table.",
            "host.name",
        ),
        "source_file" => ecs(
            "The file holding the session's first line.",
            "log.file.path",
        ),
        "source_offset" => ecs(
            "Byte offset of the session's first line in that file.",
            "log.offset",
        ),
        "direction" => values(
            "A receive connector's session or a send connector's.",
            &["receive", "send"],
        ),
        "connector_id" => doc("The connector, as in `smtp_protocol`."),
        "session_id" => doc(
            "The SMTP session id (16 hex digits): joins `smtp_protocol.session_id` and \
             `message_tracking.session_id`.",
        ),
        "end_time" => ecs("When the session's last line was written.", "event.end"),
        "duration_ms" => doc("From first to last line, in milliseconds."),
        "lines" => doc("Protocol log lines of the session."),
        "closed" => doc(
            "Whether the log shows the session's end (a disconnect line). False for a session \
             closed by mailflow because its log moved on without it (cut by a crash or a roll).",
        ),
        "local_ip" => doc("This server's IP address."),
        "local_port" => doc("This server's port."),
        "remote_ip" => doc("The other side's IP address."),
        "remote_port" => doc("The other side's port."),
        "ehlo" => doc("The name the client gave in EHLO or HELO."),
        "starttls_attempted" => doc("Whether STARTTLS was sent."),
        "tls_succeeded" => ecs("Whether TLS was negotiated.", "tls.established"),
        "tls_protocol" => {
            doc("Schannel's name of the negotiated protocol, as logged (`SP_PROT_TLS1_2_SERVER`).")
        }
        "tls_cipher" => doc("Schannel's name of the bulk cipher, as logged (`CALG_AES_128`)."),
        "tls_version" => ColumnDoc {
            meaning: "The negotiated TLS version, from `tls_protocol`.",
            values: &["1.3", "1.2", "1.1", "1.0", "SSL 3.0", "SSL 2.0"],
            open: false,
            ecs: Some("tls.version"),
        },
        "tls_key_exchange" => {
            doc("The key exchange, in OpenSSL's name (`ECDHE` for Schannel's `CALG_ECDH_EPHEM`).")
        }
        "tls_bulk_cipher" => doc(
            "The bulk cipher, in OpenSSL's name (`AES128` for `CALG_AES_128`, `DES-CBC3` for \
             `CALG_3DES`).",
        ),
        "tls_mac" => doc("The hash, in OpenSSL's name (`SHA256` for `CALG_SHA_256`)."),
        "tls_cipher_suite" => ecs(
            "Key exchange, bulk cipher and hash together (`ECDHE-AES128-SHA256`). Schannel does \
             not log the authentication algorithm (RSA or ECDSA), so this names the parts it \
             does log, not an IANA suite. Null when the line names fewer than the three.",
            "tls.cipher",
        ),
        "certificate_subject" => ecs(
            "Subject of the certificate the TLS server side showed: this server's on a receive \
             session, the remote server's on a send session.",
            "tls.server.x509.subject.distinguished_name",
        ),
        "certificate_issuer" => ecs(
            "Issuer of that certificate.",
            "tls.server.x509.issuer.distinguished_name",
        ),
        "certificate_serial" => ecs(
            "Serial number of that certificate.",
            "tls.server.x509.serial_number",
        ),
        "certificate_thumbprint" => ecs(
            "Thumbprint (SHA-1) of that certificate, as `Get-ExchangeCertificate` shows it.",
            "tls.server.hash.sha1",
        ),
        "certificate_alternate_names" => {
            doc("Its subject alternative names as logged, `;`-separated (see `certificate_names`).")
        }
        "certificate_names" => ecs(
            "Its subject alternative names, one item each.",
            "tls.server.x509.alternative_names",
        ),
        "certificate_not_before" => ecs("Start of its validity.", "tls.server.x509.not_before"),
        "certificate_not_after" => ecs("End of its validity.", "tls.server.x509.not_after"),
        "message_ids" => ecs(
            "Message-Id of each message the session carried (from `250 2.6.0 <id> … Queued mail \
             for delivery`): joins `message_tracking.message_id` and `messages.message_id`.",
            "email.message_id",
        ),
        "auth_mechanism" => doc("The SASL mechanism of AUTH, if the client authenticated."),
        "auth_outcome" => values(
            "Whether authentication succeeded (235) or failed.",
            &["succeeded", "failed"],
        ),
        "mail_from" => doc("The first MAIL FROM address of the session."),
        "recipients" => doc("RCPT TO commands in the session."),
        "messages" => doc("Messages the other side accepted (`250 2.6.0 … Queued mail`)."),
        "last_reply" => doc("The last SMTP reply of the session."),
        "outcome" => values(
            "How the session ended: `delivered` (a message was accepted), `failed` (a 5xx \
             reply), `deferred` (a 4xx reply, a TLS failure or a failed connect), `dropped` \
             (none of these).",
            SESSION_OUTCOMES,
        ),
        _ => return None,
    })
}

fn messages(column: &str) -> Option<ColumnDoc> {
    Some(match column {
        "timestamp" => ecs(
            "When the message was first seen, on any server (UTC).",
            "@timestamp",
        ),
        "server" => ecs("The server that logged the first event.", "host.name"),
        "source_file" => ecs("The file holding the first event.", "log.file.path"),
        "source_offset" => ecs("Byte offset of the first event in that file.", "log.offset"),
        "message_id" => ecs(
            "The Message-Id header; null for a message that has none (then it is one server's \
             `internal_message_id`).",
            "email.message_id",
        ),
        "internal_message_id" => ecs(
            "The message's number on the first server.",
            "email.local_id",
        ),
        "sender_address" => ecs("The sender's address.", "email.sender.address"),
        "message_subject" => ecs("The Subject header.", "email.subject"),
        "total_bytes" => doc("Size of the message in bytes."),
        "last_seen" => ecs(
            "When the message was last seen, on any server.",
            "event.end",
        ),
        "latency_ms" => doc("From first to last event, in milliseconds."),
        "e2e_latency_ms" => doc(
            "Exchange's own end-to-end latency (`S:E2ELatency` of custom_data, the largest \
             seen), in milliseconds.",
        ),
        "event_count" => doc("Tracking events of the message (up to 256 are kept)."),
        "events" => doc("Its tracking events' ids in time order (`RECEIVE`, `SEND`, …)."),
        "servers" => ecs("The servers it crossed, in order.", "related.hosts"),
        "recipients" => ecs(
            "Its recipients, in the order `recipient_status` follows.",
            "email.to.address",
        ),
        "recipient_status" => doc(
            "Each recipient's last status: the last reply (`250 2.1.5 …`, `550 5.1.1 …`) or \
             event seen for it.",
        ),
        "status" => values(
            "Where the message stands: `delivered` (every recipient delivered or sent on), \
             `partially_failed`, `failed`, `deferred` (a recipient still waits on a retry), \
             `pending` (no outcome seen yet).",
            MESSAGE_STATUSES,
        ),
        _ => return None,
    })
}
