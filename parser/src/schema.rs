//! The Arrow schema of every table, declared once as a list of column definitions from which
//! both the schema and the `#Fields` mapping are derived.
//!
//! Every table starts with the lineage columns (`timestamp`, `server`, `source_file`,
//! `source_offset`) and ends with `extra`, a map of the columns a header named that mailflow does
//! not know (kept, never dropped). Empty fields are null. Changes are additive only: a column is
//! never renamed, retyped or removed, so old and new files read as one table.

use std::sync::{Arc, OnceLock};

use arrow_schema::{DataType, Field, Fields, Schema, SchemaRef, TimeUnit};

use crate::kind::Table;

/// Version of the table schemas, recorded in Parquet metadata. Bump on any change.
///
/// 2: `custom_data` keys keep their type tag (`S:E2ELatency`) and map to a list of values (a
/// key may repeat) instead of a renamed repeat (`AMA#2`). Not additive: see the README's notes
/// on schema versions.
pub const SCHEMA_VERSION: u32 = 2;

/// Lineage column: event time, `Timestamp(ms, UTC)`.
pub const TIMESTAMP: &str = "timestamp";
/// Lineage column: the Exchange server that wrote the line.
pub const SERVER: &str = "server";
/// Lineage column: the file the line came from.
pub const SOURCE_FILE: &str = "source_file";
/// Lineage column: byte offset of the line's first byte in its file.
pub const SOURCE_OFFSET: &str = "source_offset";
/// Unknown header columns, as a map from header name to value.
pub const EXTRA: &str = "extra";
/// SMTP reply code split out of the row's reply text.
pub const SMTP_REPLY_CODE: &str = "smtp_reply_code";
/// Enhanced status code (`4.7.0`) split out of the row's reply text.
pub const ENHANCED_STATUS_CODE: &str = "enhanced_status_code";
/// Field metadata key: `"false"` marks a column whose values are nearly all distinct (ids,
/// offsets, timestamps), for which a columnar writer should not try dictionary encoding.
pub const DICTIONARY_HINT: &str = "mailflow.dictionary";

/// Columns whose values are nearly all distinct, by output name.
const UNIQUE_VALUED: &[&str] = &[
    TIMESTAMP,
    SOURCE_OFFSET,
    "internal_message_id",
    "message_id",
    "network_message_id",
    "log_id",
    "message_info",
    "source_context",
    "total_bytes",
    "sequence_number",
    "raw",
    "line_number",
];

fn with_hints(fields: Vec<Field>) -> Vec<Field> {
    fields
        .into_iter()
        .map(|f| {
            if UNIQUE_VALUED.contains(&f.name().as_str()) {
                f.with_metadata([(DICTIONARY_HINT.to_string(), "false".to_string())].into())
            } else {
                f
            }
        })
        .collect()
}

/// How a column is typed and filled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ColKind {
    /// Utf8 text.
    Text,
    /// Low-cardinality text, dictionary-encoded.
    Dict,
    /// Int64 from a decimal field.
    Int64,
    /// Int32 from a decimal field.
    Int32,
    /// `;`-separated list of Utf8.
    List,
    /// `;`-separated list of SMTP statuses: a `;` inside one status (`550 4.4.7
    /// QUEUE.Expired;message expired`, an `[{LRT=…};{LED=…}]` block) stays in it.
    StatusList,
    /// `custom-data` map.
    CustomData,
    /// An endpoint split into `<name>_ip` (Utf8) and `<name>_port` (Int32).
    Endpoint,
    /// `smtp_reply_code` (Int16) and `enhanced_status_code` (dictionary) from the first source
    /// field that holds a reply.
    Reply,
    /// The SMTP session id a `source-context` names (see `fields::session_ref`), Utf8.
    SessionRef,
    /// Event symbol, named (`+` → `connect`), dictionary-encoded.
    Event,
    /// SMTP direction from the file (`send`/`receive`).
    FileDirection,
    /// POP3/IMAP4 from the file.
    FileProtocol,
    /// Transport role from the file's folder (`frontend`, `hub`, `mailbox`, `edge`).
    FileRole,
}

/// One column: output name, kind, and the header names (normalized, in priority order) it reads.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ColumnDef {
    pub(crate) name: &'static str,
    pub(crate) kind: ColKind,
    pub(crate) sources: &'static [&'static str],
}

const fn col(name: &'static str, kind: ColKind, sources: &'static [&'static str]) -> ColumnDef {
    ColumnDef {
        name,
        kind,
        sources,
    }
}

use ColKind::*;

/// Header names (normalized) that hold the event time, per table.
pub(crate) const TIMESTAMP_SOURCES: &[&str] = &["datetime", "timestamp"];

const MESSAGE_TRACKING: &[ColumnDef] = &[
    col("client_ip", Text, &["clientip"]),
    col("client_hostname", Text, &["clienthostname"]),
    col("server_ip", Text, &["serverip"]),
    col("server_hostname", Text, &["serverhostname"]),
    col("source_context", Text, &["sourcecontext"]),
    col("connector_id", Dict, &["connectorid"]),
    col("source", Dict, &["source"]),
    col("event_id", Dict, &["eventid"]),
    col("internal_message_id", Int64, &["internalmessageid"]),
    col("message_id", Text, &["messageid"]),
    col("network_message_id", Text, &["networkmessageid"]),
    col("recipient_address", List, &["recipientaddress"]),
    col("recipient_status", StatusList, &["recipientstatus"]),
    col("total_bytes", Int64, &["totalbytes"]),
    col("recipient_count", Int32, &["recipientcount"]),
    col(
        "related_recipient_address",
        List,
        &["relatedrecipientaddress"],
    ),
    col("reference", List, &["reference"]),
    col("message_subject", Text, &["messagesubject"]),
    col("sender_address", Text, &["senderaddress"]),
    col("return_path", Text, &["returnpath"]),
    col("message_info", Text, &["messageinfo"]),
    col("directionality", Dict, &["directionality"]),
    col("tenant_id", Text, &["tenantid"]),
    col("original_client_ip", Text, &["originalclientip"]),
    col("original_server_ip", Text, &["originalserverip"]),
    col("custom_data", CustomData, &["customdata"]),
    col("transport_traffic_type", Dict, &["transporttraffictype"]),
    col("log_id", Text, &["logid"]),
    col("schema_version", Dict, &["schemaversion"]),
    col("reply", Reply, &["recipientstatus", "sourcecontext"]),
    // The receive session that carried the message: joins `smtp_protocol` and `smtp_sessions`.
    col("session_id", SessionRef, &["sourcecontext"]),
];

const SMTP_PROTOCOL: &[ColumnDef] = &[
    col("direction", FileDirection, &[]),
    col("transport_role", FileRole, &[]),
    col("connector_id", Dict, &["connectorid"]),
    col("session_id", Text, &["sessionid"]),
    col("sequence_number", Int64, &["sequencenumber"]),
    col("local", Endpoint, &["localendpoint"]),
    col("remote", Endpoint, &["remoteendpoint"]),
    col("event", Event, &["event"]),
    col("data", Text, &["data"]),
    col("context", Text, &["context"]),
    col("reply", Reply, &["data", "context"]),
];

const CONNECTIVITY: &[ColumnDef] = &[
    col("transport_role", FileRole, &[]),
    col("session", Text, &["session"]),
    col("source", Dict, &["source"]),
    col("destination", Text, &["destination"]),
    col("direction", Event, &["direction"]),
    col("description", Text, &["description"]),
];

const POP_IMAP: &[ColumnDef] = &[
    col("protocol", FileProtocol, &[]),
    col("session_id", Text, &["sessionid"]),
    col("sequence_number", Int64, &["seqnumber"]),
    col("server", Endpoint, &["sip"]),
    col("client", Endpoint, &["cip"]),
    col("user", Text, &["user"]),
    col("duration_ms", Int64, &["duration"]),
    col("request_bytes", Int64, &["rqsize"]),
    col("response_bytes", Int64, &["rpsize"]),
    col("command", Dict, &["command"]),
    col("parameters", Text, &["parameters"]),
    col("context", Text, &["context"]),
    col("puid", Text, &["puid"]),
];

const AGENT_LOG: &[ColumnDef] = &[
    col("session_id", Text, &["sessionid"]),
    col("local", Endpoint, &["localendpoint"]),
    col("remote", Endpoint, &["remoteendpoint"]),
    col("entered_org_from_ip", Text, &["enteredorgfromip"]),
    col("message_id", Text, &["messageid"]),
    col("p1_from_address", Text, &["p1fromaddress"]),
    col("p2_from_addresses", List, &["p2fromaddresses"]),
    col("recipients", List, &["recipient"]),
    col("num_recipients", Int32, &["numrecipients"]),
    col("agent", Dict, &["agent"]),
    col("event", Dict, &["event"]),
    col("action", Dict, &["action"]),
    col("smtp_response", Text, &["smtpresponse"]),
    col("reason", Dict, &["reason"]),
    col("reason_data", Text, &["reasondata"]),
    col("diagnostics", Text, &["diagnostics"]),
    col("network_message_id", Text, &["networkmsgid"]),
    col("tenant_id", Text, &["tenantid"]),
    col("directionality", Dict, &["directionality"]),
    col("reply", Reply, &["smtpresponse"]),
];

pub(crate) fn columns(table: Table) -> &'static [ColumnDef] {
    match table {
        Table::MessageTracking => MESSAGE_TRACKING,
        Table::SmtpProtocol => SMTP_PROTOCOL,
        Table::Connectivity => CONNECTIVITY,
        Table::PopImapProtocol => POP_IMAP,
        Table::AgentLog => AGENT_LOG,
        // Not CSV: their columns are in `records` (see `build_schema`).
        Table::TransportEvents | Table::QueueSnapshots => &[],
    }
}

pub(crate) fn dict_type() -> DataType {
    DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8))
}

pub(crate) fn list_type() -> DataType {
    DataType::List(Arc::new(Field::new("item", DataType::Utf8, true)))
}

pub(crate) fn map_type() -> DataType {
    let entries = Fields::from(vec![
        Field::new("keys", DataType::Utf8, false),
        Field::new("values", DataType::Utf8, true),
    ]);
    DataType::Map(
        Arc::new(Field::new("entries", DataType::Struct(entries), false)),
        false,
    )
}

/// `custom_data`: each key as Exchange writes it, with the list of its values (a key may repeat).
pub(crate) fn custom_data_type() -> DataType {
    let entries = Fields::from(vec![
        Field::new("keys", DataType::Utf8, false),
        Field::new("values", list_type(), true),
    ]);
    DataType::Map(
        Arc::new(Field::new("entries", DataType::Struct(entries), false)),
        false,
    )
}

pub(crate) fn timestamp_type() -> DataType {
    DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into()))
}

fn lineage(timestamp_nullable: bool) -> Vec<Field> {
    vec![
        Field::new(TIMESTAMP, timestamp_type(), timestamp_nullable),
        Field::new(SERVER, dict_type(), false),
        Field::new(SOURCE_FILE, dict_type(), false),
        Field::new(SOURCE_OFFSET, DataType::Int64, false),
    ]
}

fn build_schema(table: Table) -> Schema {
    let mut fields = lineage(false);
    let records = match table {
        Table::TransportEvents => Some(crate::records::events::fields()),
        Table::QueueSnapshots => Some(crate::records::queues::fields()),
        _ => None,
    };
    if let Some(columns) = records {
        fields.extend(columns);
        return with_metadata(Schema::new(with_hints(fields)), table.name());
    }
    for c in columns(table) {
        match c.kind {
            Text | SessionRef => fields.push(Field::new(c.name, DataType::Utf8, true)),
            Dict | Event | FileDirection | FileProtocol | FileRole => {
                fields.push(Field::new(c.name, dict_type(), true))
            }
            Int64 => fields.push(Field::new(c.name, DataType::Int64, true)),
            Int32 => fields.push(Field::new(c.name, DataType::Int32, true)),
            List | StatusList => fields.push(Field::new(c.name, list_type(), true)),
            CustomData => fields.push(Field::new(c.name, custom_data_type(), true)),
            Endpoint => {
                fields.push(Field::new(format!("{}_ip", c.name), DataType::Utf8, true));
                fields.push(Field::new(
                    format!("{}_port", c.name),
                    DataType::Int32,
                    true,
                ));
            }
            Reply => {
                fields.push(Field::new(SMTP_REPLY_CODE, DataType::Int16, true));
                fields.push(Field::new(ENHANCED_STATUS_CODE, dict_type(), true));
            }
        }
    }
    fields.push(Field::new(EXTRA, map_type(), true));
    with_metadata(Schema::new(with_hints(fields)), table.name())
}

fn with_metadata(schema: Schema, table: &str) -> Schema {
    schema.with_metadata(
        [
            ("mailflow.table".to_string(), table.to_string()),
            (
                "mailflow.schema_version".to_string(),
                SCHEMA_VERSION.to_string(),
            ),
        ]
        .into(),
    )
}

/// The Arrow schema of a data table.
pub fn schema(table: Table) -> SchemaRef {
    static SCHEMAS: OnceLock<Vec<SchemaRef>> = OnceLock::new();
    let all = SCHEMAS.get_or_init(|| {
        Table::ALL
            .iter()
            .map(|&t| Arc::new(build_schema(t)))
            .collect()
    });
    let index = Table::ALL
        .iter()
        .position(|&t| t == table)
        .unwrap_or_default();
    Arc::clone(&all[index])
}

/// Name of the rejects table.
pub const REJECTS: &str = "rejects";

/// The Arrow schema of the rejects table: lines that could not be parsed, kept whole.
pub fn rejects_schema() -> SchemaRef {
    static SCHEMA: OnceLock<SchemaRef> = OnceLock::new();
    Arc::clone(SCHEMA.get_or_init(|| {
        let mut fields = lineage(true);
        fields.extend([
            Field::new("line_number", DataType::Int64, false),
            Field::new("table", dict_type(), true),
            Field::new("reason", dict_type(), false),
            Field::new("detail", DataType::Utf8, false),
            Field::new("raw", DataType::Binary, false),
        ]);
        Arc::new(with_metadata(Schema::new(with_hints(fields)), REJECTS))
    }))
}
