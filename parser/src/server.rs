//! Which Exchange server wrote a file, under one name per server.
//!
//! Every Exchange log file is written by one server, so the `server` lineage column is a per-file
//! value. It must name that *local* server whatever the source (`--server`, the rows, a
//! per-server collection folder, the host name) and never a remote host: message tracking `SEND`
//! rows name the destination in `server-hostname` and the local server in `client-hostname`.
//!
//! - **One name per server.** [`canonical_server`] reduces every spelling to the NetBIOS-style
//!   short name Exchange admins use: `ex01.contoso.com`, `EX01` and `Ex01` are all `EX01`.
//! - **Evidence from rows.** [`server_from_head`] reads the first rows of a file and takes, per
//!   row, only the field that names the local server for that event (see [`local_field`]), or
//!   the `LSRV=` (local server) tag of `message-info`. The most frequent answer wins, so one odd
//!   row does not move a file. SMTP receive logs name it as the `SERVER\` prefix of the
//!   receive connector.
//! - **Names read back.** A canonical name is 1 to 63 ASCII letters, digits, `-` or `_`; anything
//!   else (an IP literal, an over-long or hostile value, the Hive null marker) is not a server
//!   name, so every `server=` partition folder is the name itself, unescaped, and reads back
//!   exactly in every engine.

use arrow_array::cast::AsArray;
use arrow_array::types::Int32Type;
use arrow_array::{Array, ArrayRef, RecordBatch};
use arrow_schema::DataType;

use crate::decoder::DecoderBuilder;
use crate::kind::Table;

/// Longest server name: a DNS label (and more than NetBIOS's 15).
pub const MAX_SERVER_NAME: usize = 63;

/// The value Hive, Spark and DuckDB read back as NULL: never a server name.
const HIVE_NULL: &str = "__HIVE_DEFAULT_PARTITION__";

/// The canonical name of a server: the first DNS label, upper case. `None` when `name` is not a
/// server name (empty, an IP address, longer than [`MAX_SERVER_NAME`], characters other than
/// ASCII letters, digits, `-` and `_`, or the Hive null marker).
pub fn canonical_server(name: &str) -> Option<String> {
    let name = name.trim();
    if name.parse::<std::net::IpAddr>().is_ok() || name.contains(':') {
        return None;
    }
    let label = name.split('.').next().unwrap_or_default();
    let valid = !label.is_empty()
        && label.len() <= MAX_SERVER_NAME
        && label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        // A dotted all-digit first label is the start of an IPv4 address, not a host.
        && !(name.contains('.') && label.bytes().all(|b| b.is_ascii_digit()))
        && !label.eq_ignore_ascii_case(HIVE_NULL);
    valid.then(|| label.to_ascii_uppercase())
}

/// Which tracking field names the local server on a row of this event and source, per
/// Microsoft's field documentation and the samples: the receiving side of SMTP `RECEIVE` and of
/// the shadow-redundancy events, the sending side of `SEND`, and the mailbox side of the store
/// driver's and agents' events. `None` for events where either side may be another server.
pub fn local_field(event_id: &str, source: &str) -> Option<LocalField> {
    use LocalField::{Client, Server};
    Some(match event_id {
        "RECEIVE" if source == "SMTP" => Server,
        "RECEIVE" if source == "STOREDRIVER" => Client,
        "HAREDIRECT" | "HAREDIRECTFAIL" | "HARECEIVE" | "HADISCARD" => Server,
        "SEND" | "SENDEXTERNAL" => Client,
        "NOTIFYMAPI" | "SUBMIT" | "SUBMITDEFER" | "SUBMITFAIL" | "AGENTINFO" => Client,
        _ => return None,
    })
}

/// A tracking row's host name fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LocalField {
    /// `client-hostname`.
    Client,
    /// `server-hostname`.
    Server,
}

/// The local server named by `message-info`'s `LSRV=<fqdn>:` tag (on `SEND` and `DELIVER`).
fn lsrv(message_info: &str) -> Option<&str> {
    let at = message_info.find("LSRV=")? + "LSRV=".len();
    let rest = &message_info[at..];
    Some(&rest[..rest.find(':').unwrap_or(rest.len())])
}

/// Bytes of a file read to find its server.
pub const HEAD_BYTES: usize = 64 * 1024;

/// The server that wrote a file, from its first rows (`head`: its first bytes, a cut last line
/// is ignored), canonical; `None` when no row names it.
pub fn server_from_head(path: &str, head: &[u8]) -> Option<String> {
    let head = &head[..head.len().min(HEAD_BYTES)];
    let mut decoder = DecoderBuilder::new(path)
        .with_server(Some(String::new()))
        .build();
    let mut votes = Votes::default();
    let mut rest = head;
    while !rest.is_empty() {
        let used = decoder.decode(rest).ok()?;
        rest = &rest[used..];
        if (decoder.needs_flush() || rest.is_empty())
            && let Some(data) = decoder.flush().ok()?.data
        {
            votes.count(data.table, &data.batch);
        }
        if used == 0 && !decoder.needs_flush() {
            break;
        }
    }
    votes.winner()
}

/// Canonical names and how many rows named each, in first-seen order.
#[derive(Debug, Default)]
struct Votes(Vec<(String, u32)>);

impl Votes {
    fn add(&mut self, name: Option<&str>) {
        let Some(name) = name.and_then(canonical_server) else {
            return;
        };
        match self.0.iter_mut().find(|(n, _)| *n == name) {
            Some((_, c)) => *c += 1,
            None => self.0.push((name, 1)),
        }
    }

    fn winner(self) -> Option<String> {
        let mut best: Option<(String, u32)> = None;
        for (name, c) in self.0 {
            if best.as_ref().is_none_or(|(_, b)| c > *b) {
                best = Some((name, c));
            }
        }
        best.map(|(n, _)| n)
    }

    fn count(&mut self, table: Table, batch: &RecordBatch) {
        let col = |name: &str| batch.column_by_name(name).map(Text::new);
        match table {
            Table::MessageTracking => {
                let (Some(event), Some(source), Some(client), Some(server), Some(info)) = (
                    col("event_id"),
                    col("source"),
                    col("client_hostname"),
                    col("server_hostname"),
                    col("message_info"),
                ) else {
                    return;
                };
                for row in 0..batch.num_rows() {
                    if let Some(name) = info.get(row).and_then(lsrv) {
                        self.add(Some(name));
                        continue;
                    }
                    let field = local_field(
                        event.get(row).unwrap_or_default(),
                        source.get(row).unwrap_or_default(),
                    );
                    match field {
                        Some(LocalField::Client) => self.add(client.get(row)),
                        Some(LocalField::Server) => self.add(server.get(row)),
                        None => {}
                    }
                }
            }
            Table::SmtpProtocol => {
                let (Some(direction), Some(connector)) = (col("direction"), col("connector_id"))
                else {
                    return;
                };
                for row in 0..batch.num_rows() {
                    // Receive connectors are named `SERVER\Connector name`; send connectors
                    // carry no server.
                    if direction.get(row) == Some("receive") {
                        let name = connector.get(row).and_then(|c| c.split_once('\\'));
                        self.add(name.map(|(server, _)| server));
                    }
                }
            }
            _ => {}
        }
    }
}

/// Reads a text column, plain or dictionary-encoded.
struct Text<'a>(&'a ArrayRef);

impl<'a> Text<'a> {
    fn new(array: &'a ArrayRef) -> Self {
        Text(array)
    }

    fn get(&self, row: usize) -> Option<&'a str> {
        let a = self.0;
        if a.is_null(row) {
            return None;
        }
        match a.data_type() {
            DataType::Utf8 => Some(a.as_string::<i32>().value(row)),
            DataType::Dictionary(k, v) if **k == DataType::Int32 && **v == DataType::Utf8 => {
                let d = a.as_dictionary::<Int32Type>();
                let k = usize::try_from(d.keys().value(row)).ok()?;
                let values = d.values().as_string::<i32>();
                (k < values.len()).then(|| values.value(k))
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_name_per_server() {
        for n in ["EX01", "ex01", "Ex01.contoso.com", " ex01.CONTOSO.com "] {
            assert_eq!(canonical_server(n).as_deref(), Some("EX01"), "{n}");
        }
        assert_eq!(
            canonical_server("exchange-mail").as_deref(),
            Some("EXCHANGE-MAIL")
        );
    }

    #[test]
    fn what_is_not_a_server_name() {
        for n in [
            "",
            ".",
            "10.0.0.5",
            "fe80::1%3",
            "2a02:cf40::1234",
            "1234:5678:4321:1010%3",
            "../../etc",
            "a/b",
            "ex 01",
            "EX01\u{1b}]0;pwned\u{7}",
            "__HIVE_DEFAULT_PARTITION__",
            "__hive_default_partition__.contoso.com",
        ] {
            assert_eq!(canonical_server(n), None, "{n:?}");
        }
        assert_eq!(canonical_server(&"a".repeat(5000)), None);
        assert_eq!(canonical_server(&"a".repeat(63)).map(|s| s.len()), Some(63));
    }

    const FIELDS: &str = "#Fields: date-time,client-ip,client-hostname,server-ip,server-hostname,source-context,connector-id,source,event-id,internal-message-id,message-id,recipient-address,recipient-status,total-bytes,recipient-count,related-recipient-address,reference,message-subject,sender-address,return-path,message-info\r\n";

    fn tracking(rows: &[&str]) -> Vec<u8> {
        let mut s = format!(
            "#Software: Microsoft Exchange Server\r\n#Log-type: Message Tracking Log\r\n{FIELDS}"
        );
        for r in rows {
            s.push_str(r);
            s.push_str("\r\n");
        }
        s.into_bytes()
    }

    #[test]
    fn send_rows_name_the_local_server_as_client() {
        let rows = [
            "2025-01-14T09:29:05.327Z,216.160.83.56,HELLOWORLD,175.16.199.1,mx1.remote.example,;250 2.6.0 OK,Outbound,SMTP,SEND,1,<a@b>,x@remote.example,250 2.1.5 OK,10,1,,,s,a@b,a@b,",
            "2025-01-14T09:29:06.327Z,216.160.83.56,helloworld.contoso.com,175.16.199.2,mx2.remote.example,;250 2.6.0 OK,Outbound,SMTP,SEND,2,<c@b>,y@remote.example,250 2.1.5 OK,10,1,,,s,a@b,a@b,",
            "2025-01-14T09:29:07.327Z,198.51.100.7,mail.sender.example,10.0.0.5,HELLOWORLD,08DC;x;0,HELLOWORLD\\Default,SMTP,RECEIVE,3,<d@b>,z@contoso.com,,10,1,,,s,a@b,a@b,",
        ];
        assert_eq!(
            server_from_head("MSGTRK2025011409-1.LOG", &tracking(&rows)).as_deref(),
            Some("HELLOWORLD")
        );
    }

    #[test]
    fn lsrv_tag_wins_over_fields() {
        let rows = [
            "2025-01-14T09:28:39.334Z,10.0.0.9,OTHER,,,ctx,,STOREDRIVER,DELIVER,4,<e@b>,u@contoso.com,,10,1,,,s,a@b,a@b,2025-01-14T09:28:39.321Z;LSRV=ex02.contoso.com:TOTAL-SUB=0.1",
        ];
        assert_eq!(
            server_from_head("MSGTRK.LOG", &tracking(&rows)).as_deref(),
            Some("EX02")
        );
    }

    #[test]
    fn rows_that_name_no_server() {
        let rows = [
            "2016-04-05T00:00:02.052Z,,,,,ctx,,STOREDRIVER,NOTIFYMAPI,,,,,,,,,,,,",
            "2016-04-05T00:00:02.052Z,,,,remote.example,ctx,,SMTP,DELIVER,,,,,,,,,,,,",
        ];
        assert_eq!(server_from_head("MSGTRK.LOG", &tracking(&rows)), None);
        assert_eq!(server_from_head("MSGTRK.LOG", b""), None);
        assert_eq!(server_from_head("x.bin", b"\x00\xff garbage\n"), None);
    }

    #[test]
    fn receive_connector_names_the_server() {
        let log = b"#Software: Microsoft Exchange Server\r\n#Log-type: SMTP Receive Protocol Log\r\n#Fields: date-time,connector-id,session-id,sequence-number,local-endpoint,remote-endpoint,event,data,context\r\n2023-01-11T16:00:00.000Z,EX03\\Default Frontend EX03,08DB,0,10.0.0.3:25,198.51.100.1:5000,+,,\r\n";
        assert_eq!(
            server_from_head("RECV2023011116-1.LOG", log).as_deref(),
            Some("EX03")
        );
    }
}
