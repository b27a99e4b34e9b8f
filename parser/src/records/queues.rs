//! `Get-Queue` snapshots: `Format-List` text, `Export-Csv` and `ConvertTo-Json`, into one row
//! shape, with the queue's `LastError` taken apart.
//!
//! `LastError` comes in two shapes. Exchange 2010 and later list-style values,
//! `[{LRT=…};{LED=…};{FQDN=…};{IP=…}]` (last retry time, last error description, the host and
//! address it was talking to), and plain text. In both, the error description wraps the peer's
//! reply (`451 4.4.0 Primary target IP address responded with: "454 4.7.0 …"`,
//! `451 4.4.395 Target host responded with error. -> 421 4.4.1 …`): the inner reply is what
//! went wrong, so it is split out; the whole text stays in `last_error`.

use std::sync::Arc;

use arrow_array::builder::{
    Int16Builder, Int64Builder, MapBuilder, StringBuilder, TimestampMillisecondBuilder,
};
use arrow_array::{ArrayRef, RecordBatch};
use arrow_schema::{ArrowError, DataType, Field};

use super::time::parse_time;
use crate::dict::DictBuilder;
use crate::fields::smtp_reply::{find_smtp_reply, parse_smtp_reply};

/// One queue of one snapshot.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct QueueRecord {
    pub(crate) identity: Option<String>,
    pub(crate) delivery_type: Option<String>,
    pub(crate) next_hop_domain: Option<String>,
    pub(crate) next_hop_category: Option<String>,
    pub(crate) status: Option<String>,
    pub(crate) message_count: Option<i64>,
    pub(crate) last_error: Option<String>,
    pub(crate) last_retry_time: Option<i64>,
    pub(crate) next_retry_time: Option<i64>,
    /// The fields no column holds (`RetryCount`, `TlsDomain`, a newer build's additions), by
    /// name: nothing a snapshot holds is dropped.
    pub(crate) extra: Vec<(String, String)>,
}

impl QueueRecord {
    /// From `Key`/value pairs, whatever their case; unknown keys are ignored.
    pub(crate) fn from_pairs<'a>(
        pairs: impl IntoIterator<Item = (&'a str, String)>,
    ) -> Result<Self, String> {
        let mut q = QueueRecord::default();
        let mut known = 0;
        for (key, value) in pairs {
            let v = value.trim();
            let text = || (!v.is_empty()).then(|| v.to_string());
            known += 1;
            match key.trim().to_ascii_lowercase().as_str() {
                "identity" => q.identity = text(),
                "deliverytype" => q.delivery_type = text(),
                "nexthopdomain" => q.next_hop_domain = text(),
                "nexthopcategory" => q.next_hop_category = text(),
                "status" => q.status = text(),
                "messagecount" => q.message_count = v.parse().ok(),
                "lasterror" => q.last_error = text(),
                "lastretrytime" => q.last_retry_time = parse_time(v),
                "nextretrytime" => q.next_retry_time = parse_time(v),
                _ => {
                    known -= 1;
                    if !v.is_empty() {
                        q.extra.push((key.trim().to_string(), v.to_string()));
                    }
                }
            }
        }
        if known == 0 || (q.identity.is_none() && q.next_hop_domain.is_none()) {
            return Err("a queue needs at least `Identity` or `NextHopDomain`".into());
        }
        Ok(q)
    }

    /// The server a queue identity names: `EX01\4` is queue 4 on EX01.
    pub(crate) fn server(&self) -> Option<&str> {
        let id = self.identity.as_deref()?;
        id.split_once('\\').map(|(s, _)| s)
    }
}

/// `LastError` taken apart.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct LastError<'a> {
    /// The innermost SMTP reply, from its code to the end of its text.
    pub(crate) reply: Option<&'a str>,
    pub(crate) code: Option<i16>,
    pub(crate) enhanced: Option<&'a str>,
    pub(crate) fqdn: Option<&'a str>,
    pub(crate) ip: Option<&'a str>,
    pub(crate) time: Option<i64>,
}

/// Where Exchange's wrappers hand over to the peer's reply.
const WRAPPERS: [&str; 4] = [
    "responded with: \"",
    "responded with:\"",
    " -> ",
    "[Message=",
];

pub(crate) fn last_error(text: &str) -> LastError<'_> {
    let mut out = LastError::default();
    let mut description = text;
    if text.starts_with("[{") {
        // `{KEY=value}` items joined by `;`; a value may hold `;` itself, so items are found by
        // their `};{` seams.
        let body = text.trim_start_matches('[').trim_end_matches(']');
        for item in body.split("};{") {
            let item = item.trim_start_matches('{').trim_end_matches('}');
            let Some((key, value)) = item.split_once('=') else {
                continue;
            };
            let value = value.trim();
            match key {
                "LED" => description = value,
                "FQDN" if !value.is_empty() => out.fqdn = Some(value),
                "IP" if value.parse::<std::net::IpAddr>().is_ok() => out.ip = Some(value),
                "LRT" => out.time = parse_time(value),
                _ => {}
            }
        }
    }
    let start = WRAPPERS
        .iter()
        .filter_map(|w| description.rfind(w).map(|i| i + w.len()))
        .max();
    let inner = start.and_then(|s| {
        let rest = description[s..].trim_start_matches([' ', '"', '\'']);
        parse_smtp_reply(rest.as_bytes()).ok().map(|_| rest)
    });
    let reply = inner.or_else(|| {
        let r = find_smtp_reply(description.as_bytes())?;
        let code = r.code.to_string();
        description.find(&code).map(|i| &description[i..])
    });
    if let Some(r) = reply {
        // The inner reply ends at its closing quote, when it is quoted.
        let r = match start.map(|s| &description[s.saturating_sub(1)..s]) {
            Some("\"") => r.split('"').next().unwrap_or(r),
            Some("=") => r.split(']').next().unwrap_or(r),
            _ => r,
        }
        .trim();
        if let Ok((_, parsed)) = parse_smtp_reply(r.as_bytes()) {
            out.code = i16::try_from(parsed.code).ok();
            out.enhanced = parsed
                .enhanced
                .and_then(|e| std::str::from_utf8(e).ok())
                .and_then(|e| r.find(e).map(|i| &r[i..i + e.len()]));
        }
        out.reply = Some(r);
    }
    if out.ip.is_none() {
        // `The last endpoint attempted was 10.0.0.12:25`
        const LAST: &str = "The last endpoint attempted was ";
        if let Some(i) = description.find(LAST) {
            let ep = description[i + LAST.len()..]
                .split(|c: char| c.is_whitespace() || c == '"' || c == '}')
                .next()
                .unwrap_or_default()
                .trim_end_matches('.');
            let ip = match ep.rsplit_once(':') {
                Some((ip, port)) if port.bytes().all(|b| b.is_ascii_digit()) && !ip.is_empty() => {
                    ip
                }
                _ => ep,
            };
            out.ip = ip.parse::<std::net::IpAddr>().is_ok().then_some(ip);
        }
    }
    out
}

/// Column builders of `queue_snapshots`.
#[derive(Debug)]
pub(crate) struct QueueBuilders {
    timestamp: TimestampMillisecondBuilder,
    server: DictBuilder,
    offset: Int64Builder,
    identity: StringBuilder,
    delivery_type: DictBuilder,
    next_hop_domain: StringBuilder,
    next_hop_category: DictBuilder,
    status: DictBuilder,
    message_count: Int64Builder,
    last_error: StringBuilder,
    reply: StringBuilder,
    code: Int16Builder,
    enhanced: DictBuilder,
    fqdn: StringBuilder,
    ip: StringBuilder,
    last_retry: TimestampMillisecondBuilder,
    next_retry: TimestampMillisecondBuilder,
    format: DictBuilder,
    extra: MapBuilder<StringBuilder, StringBuilder>,
    pub(crate) rows: usize,
}

impl QueueBuilders {
    pub(crate) fn new() -> Self {
        QueueBuilders {
            timestamp: TimestampMillisecondBuilder::new(),
            server: DictBuilder::with_capacity(0),
            offset: Int64Builder::new(),
            identity: StringBuilder::new(),
            delivery_type: DictBuilder::with_capacity(0),
            next_hop_domain: StringBuilder::new(),
            next_hop_category: DictBuilder::with_capacity(0),
            status: DictBuilder::with_capacity(0),
            message_count: Int64Builder::new(),
            last_error: StringBuilder::new(),
            reply: StringBuilder::new(),
            code: Int16Builder::new(),
            enhanced: DictBuilder::with_capacity(0),
            fqdn: StringBuilder::new(),
            ip: StringBuilder::new(),
            last_retry: TimestampMillisecondBuilder::new(),
            next_retry: TimestampMillisecondBuilder::new(),
            format: DictBuilder::with_capacity(0),
            extra: crate::batch::map_builder(0, [0; 3]),
            rows: 0,
        }
    }

    pub(crate) fn append(
        &mut self,
        q: &QueueRecord,
        time: i64,
        server: &str,
        offset: u64,
        format: &str,
    ) {
        let e = q.last_error.as_deref().map(last_error).unwrap_or_default();
        self.timestamp.append_value(time);
        self.server.append(server);
        self.offset
            .append_value(i64::try_from(offset).unwrap_or(i64::MAX));
        self.identity.append_option(q.identity.as_deref());
        self.delivery_type.append_option(q.delivery_type.as_deref());
        self.next_hop_domain
            .append_option(q.next_hop_domain.as_deref());
        self.next_hop_category
            .append_option(q.next_hop_category.as_deref());
        self.status.append_option(q.status.as_deref());
        self.message_count.append_option(q.message_count);
        self.last_error.append_option(q.last_error.as_deref());
        self.reply.append_option(e.reply);
        self.code.append_option(e.code);
        self.enhanced.append_option(e.enhanced);
        self.fqdn.append_option(e.fqdn);
        self.ip.append_option(e.ip);
        self.last_retry.append_option(q.last_retry_time.or(e.time));
        self.next_retry.append_option(q.next_retry_time);
        self.format.append(format);
        for (k, v) in &q.extra {
            self.extra.keys().append_value(k);
            self.extra.values().append_value(v);
        }
        // The builder's only error is keys and values of unequal length, which the loop above
        // rules out.
        let _ = self.extra.append(true);
        self.rows += 1;
    }

    pub(crate) fn finish(&mut self, source_file: &str) -> Result<RecordBatch, ArrowError> {
        let rows = self.rows;
        self.rows = 0;
        let columns: Vec<ArrayRef> = vec![
            Arc::new(self.timestamp.finish().with_timezone("UTC")),
            Arc::new(self.server.finish()?),
            crate::batch::const_dict(Some(source_file), rows)?,
            Arc::new(self.offset.finish()),
            Arc::new(self.identity.finish()),
            Arc::new(self.delivery_type.finish()?),
            Arc::new(self.next_hop_domain.finish()),
            Arc::new(self.next_hop_category.finish()?),
            Arc::new(self.status.finish()?),
            Arc::new(self.message_count.finish()),
            Arc::new(self.last_error.finish()),
            Arc::new(self.reply.finish()),
            Arc::new(self.code.finish()),
            Arc::new(self.enhanced.finish()?),
            Arc::new(self.fqdn.finish()),
            Arc::new(self.ip.finish()),
            Arc::new(self.last_retry.finish().with_timezone("UTC")),
            Arc::new(self.next_retry.finish().with_timezone("UTC")),
            Arc::new(self.format.finish()?),
            Arc::new(self.extra.finish()),
        ];
        RecordBatch::try_new(crate::schema::schema(crate::Table::QueueSnapshots), columns)
    }
}

/// The columns of `queue_snapshots` after the lineage columns.
pub(crate) fn fields() -> Vec<Field> {
    let dict = crate::schema::dict_type;
    let ts = crate::schema::timestamp_type;
    vec![
        Field::new("identity", DataType::Utf8, true),
        Field::new("delivery_type", dict(), true),
        Field::new("next_hop_domain", DataType::Utf8, true),
        Field::new("next_hop_category", dict(), true),
        Field::new("status", dict(), true),
        Field::new("message_count", DataType::Int64, true),
        Field::new("last_error", DataType::Utf8, true),
        Field::new("last_error_reply", DataType::Utf8, true),
        Field::new(crate::schema::SMTP_REPLY_CODE, DataType::Int16, true),
        Field::new(crate::schema::ENHANCED_STATUS_CODE, dict(), true),
        Field::new("last_error_fqdn", DataType::Utf8, true),
        Field::new("last_error_ip", DataType::Utf8, true),
        Field::new("last_retry_time", ts(), true),
        Field::new("next_retry_time", ts(), true),
        Field::new("input_format", dict(), true),
        Field::new(crate::schema::EXTRA, crate::schema::map_type(), true),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn led_block_gives_inner_reply_host_and_time() {
        let e = last_error(
            "[{LRT=11/30/2026 8:10:00 AM};{LED=451 4.4.0 Primary target IP address responded with: \"454 4.7.0 Temporary authentication failure.\" Attempted failover to alternate host, but that did not succeed. Either there are no alternate hosts, or delivery failed to all alternate hosts. The last endpoint attempted was 10.0.0.12:2525};{FQDN=ex02.contoso.com};{IP=10.0.0.12}]",
        );
        assert_eq!(e.reply, Some("454 4.7.0 Temporary authentication failure."));
        assert_eq!((e.code, e.enhanced), (Some(454), Some("4.7.0")));
        assert_eq!(
            (e.fqdn, e.ip),
            (Some("ex02.contoso.com"), Some("10.0.0.12"))
        );
        assert_eq!(e.time, parse_time("2026-11-30T08:10:00Z"));
    }

    #[test]
    fn plain_wrapped_and_bare_errors() {
        let e = last_error(
            "451 4.4.395 Target host responded with error. -> 421 4.4.1 Connection timed out",
        );
        assert_eq!((e.code, e.enhanced), (Some(421), Some("4.4.1")));
        let e = last_error(
            "421 4.4.1 Connection timed out. Attempted failover to alternate host, but that did not succeed. Either there are no alternate hosts, or delivery failed to all alternate hosts. The last endpoint attempted was 203.0.113.9:25",
        );
        assert_eq!(
            e.reply.map(|r| &r[..30]),
            Some("421 4.4.1 Connection timed out")
        );
        assert_eq!(e.ip, Some("203.0.113.9"));
        let e = last_error("A matching connector cannot be found to route the external recipient");
        assert_eq!((e.reply, e.code, e.ip), (None, None, None));
    }

    #[test]
    fn pairs_and_server() {
        let q = QueueRecord::from_pairs([
            ("Identity", r"EX01\4".to_string()),
            ("Status", "Retry".into()),
            ("MessageCount", "42".into()),
            ("NextRetryTime", "11/30/2026 8:15:00 AM".into()),
        ])
        .unwrap();
        assert_eq!(q.server(), Some("EX01"));
        assert_eq!(q.message_count, Some(42));
        assert!(q.next_retry_time.is_some());
        assert!(QueueRecord::from_pairs([("Foo", "bar".to_string())]).is_err());
    }
}
