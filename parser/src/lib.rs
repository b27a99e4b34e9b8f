//! # mailflow-parser
//!
//! Turns Microsoft Exchange transport logs (message tracking, SMTP send/receive protocol logs,
//! connectivity logs, POP3/IMAP4 protocol logs, agent logs) into typed Arrow record batches.
//!
//! Columns are mapped by each file's `#Fields` header, never by position, so every Exchange version
//! parses with one code path; a header that changes mid-file is followed (the batch ends there:
//! every batch follows one layout). Fields are typed:
//! timestamps as `Timestamp(ms, UTC)`, integers as integers, endpoints split into ip and port,
//! `;` lists as lists, `custom-data` as a map, low-cardinality text dictionary-encoded, protocol
//! event symbols named, SMTP reply and enhanced status codes split out. A line that cannot be
//! parsed goes to a rejects batch with its file, byte offset, raw bytes and reason; nothing is
//! dropped and nothing panics.
//!
//! The crate opens no files: it is fed bytes through [`Decoder::decode`] (a push API, as
//! arrow-csv's), or driven over any `BufRead` by [`LogReader`], and knows nothing of diagnoses,
//! files on disk or sinks.
//!
//! ```
//! use mailflow_parser::{DecoderBuilder, Table};
//!
//! # fn main() -> Result<(), mailflow_parser::Error> {
//! let log = b"#Software: Microsoft Exchange Server\r\n\
//! #Log-type: SMTP Send Protocol Log\r\n\
//! #Fields: date-time,connector-id,session-id,sequence-number,local-endpoint,remote-endpoint,event,data,context\r\n\
//! 2024-01-25T15:14:39.460Z,Outbound,08DC1DB8591B22A0,7,10.0.0.5:41822,203.0.113.9:25,<,454 4.7.0 Temporary authentication failure,\r\n";
//!
//! let mut decoder = DecoderBuilder::new("EX01/SmtpSend/SEND2024012515-1.LOG").build();
//! decoder.decode(log)?;
//! decoder.finish()?;
//! let out = decoder.flush()?;
//! let data = out.data.expect("one row");
//! assert_eq!(data.table, Table::SmtpProtocol);
//! assert_eq!(data.batch.num_rows(), 1);
//! assert!(out.rejects.is_none());
//! # Ok(())
//! # }
//! ```

#![forbid(unsafe_code)]
#![deny(missing_docs)]
#![warn(unreachable_pub)]
#![doc(test(attr(deny(warnings))))]

mod batch;
mod decoder;
mod dict;
pub mod directive;
pub mod docs;
mod error;
pub mod fields;
#[doc(hidden)]
pub mod fuzzing;
mod kind;
mod mapping;
mod reader;
mod records;
mod scan;
pub mod schema;
mod server;
pub mod tokenize;

pub use decoder::{
    BatchSizes, DEFAULT_BATCH_SIZE, DEFAULT_MAX_LINE_BYTES, Decoded, Decoder, DecoderBuilder,
    DecoderStats, Flushed, Note,
};
pub use error::{Error, RejectReason};
pub use kind::{
    Direction, LogKind, LogTypeKind, MailProtocol, PathInfo, Table, default_fields,
    kind_from_log_type, path_info,
};
pub use reader::LogReader;
pub use records::{Providers, RecordFormat, detect as detect_records, provider_matches};
pub use schema::{rejects_schema, schema};
pub use server::{
    HEAD_BYTES, LocalField, MAX_SERVER_NAME, canonical_server, local_field, server_from_head,
};

/// What a file looks like from its first bytes and its name: an Exchange log mailflow reads
/// (and which kind, if known), an Exchange log of another type, or not an Exchange log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sniffed {
    /// A log mailflow reads; kind when the header or name says.
    Readable(Option<LogKind>),
    /// An Exchange log of a type mailflow does not read (its `#Log-type`).
    Unsupported(String),
    /// Not an Exchange log.
    NotALog,
}

/// Decides from the file name and its first bytes whether mailflow should read a file. Headers
/// win; a headerless file is read when its name says what it is or its first row has a known
/// Exchange shape.
pub fn sniff(path: &str, head: &[u8]) -> Sniffed {
    if let Some(format) = records::detect(head) {
        return Sniffed::Readable(Some(LogKind::Records(format)));
    }
    let head = head
        .strip_prefix(b"\xEF\xBB\xBF".as_slice())
        .unwrap_or(head);
    let info = path_info(path);
    let mut tokenizer = tokenize::Tokenizer::default();
    for line in head.split(|&b| b == b'\n').take(64) {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            continue;
        }
        if line[0] == b'#' {
            if let Ok((_, directive::Directive::LogType(v))) = directive::parse_directive(line) {
                return match kind_from_log_type(v) {
                    LogTypeKind::Known(k) => Sniffed::Readable(Some(k.refine(info.kind))),
                    LogTypeKind::Unsupported(name) => Sniffed::Unsupported(name),
                };
            }
            if let Ok((_, directive::Directive::Fields(list))) = directive::parse_directive(line) {
                let names: Vec<String> = directive::field_names(list)
                    .map(directive::normalize_name)
                    .collect();
                if let Some(k) = kind::kind_from_field_names(&names) {
                    return Sniffed::Readable(Some(k.refine(info.kind)));
                }
            }
            continue;
        }
        let Ok(fields) = tokenizer.tokenize(line) else {
            return Sniffed::NotALog;
        };
        return match (info.kind, kind::kind_from_shape(&fields)) {
            (Some(k), _)
                if fields
                    .get(0)
                    .and_then(fields::datetime::parse_datetime_ms)
                    .is_some() =>
            {
                Sniffed::Readable(Some(k))
            }
            (_, Some(k)) => Sniffed::Readable(Some(k.refine(info.kind))),
            _ => Sniffed::NotALog,
        };
    }
    // Only headers (or nothing) yet: a fresh file Exchange just created still counts if named so.
    match info.kind {
        Some(k) if head.starts_with(b"#Software: Microsoft Exchange") || head.is_empty() => {
            Sniffed::Readable(Some(k))
        }
        _ if head.starts_with(b"#Software: Microsoft Exchange") => Sniffed::Readable(None),
        _ => Sniffed::NotALog,
    }
}
