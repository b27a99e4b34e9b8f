//! # mailflow-enrich
//!
//! Diagnosis over the parser's Arrow batches; it knows nothing of files or sinks.
//!
//! - [`catalog`]: the rule catalog (`catalog.toml`, compiled in, extendable by a user file):
//!   stable codes, signatures, cause, evidence, remediation, references.
//! - [`Matcher`]: the catalog compiled once (Aho-Corasick over the literal signatures, tables on
//!   reply and enhanced codes, numeric ranges), applied per row with wrapped replies looked
//!   through; the generic `ESC.<class>.<subject>.<detail>` code covers codes no rule names.
//! - [`records`]: the `diagnosis_code`, `diagnosis_category`, `diagnosis_severity` columns.
//! - [`findings`]: diagnosed rows gathered into ranked findings with evidence, for
//!   `mailflow diagnose`.
//! - [`sessions`]: `smtp_protocol` rows correlated into the `smtp_sessions` table (TLS,
//!   certificate, AUTH, envelope, outcome and the session's diagnosis with its evidence).
//! - [`messages`]: `message_tracking` events correlated per message across servers into the
//!   `messages` table (event chain, servers, per-recipient fate, latency, diagnosis).
//! - `correlate` (internal): the window both correlators share: open items by key, each
//!   stream's watermark, idle close, a cap with eviction of the idle-longest, and the oldest
//!   source line an open item still needs (what a checkpoint must not pass).
//! - `derived` (internal): a derived table declared once as its columns, from which both its
//!   schema and its batch builders come.
//!
//! Tables and searched fields are named by the parser's [`parser::Table`] and [`TextField`],
//! never by strings or raw indices.

#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod catalog;
mod correlate;
mod derived;
pub mod docs;
pub mod esc;
pub mod findings;
mod matcher;
pub mod messages;
pub mod records;
pub mod sessions;

pub use catalog::{Catalog, CatalogError, Rule, Severity, TextField};
/// The parser this crate builds on, re-exported so later stages name one version of it.
pub use mailflow_parser as parser;
pub use matcher::{Diagnosis, Hit, Matcher, Reply, RowFacts};

/// Harnesses for the fuzz targets (`fuzz/`): outside text through the catalog parser, the
/// matcher and session correlation, each checking an invariant of its own beyond "no panic". They
/// also run on a fixed corpus in the unit tests and on the committed fuzz corpus (`tests/`).
#[doc(hidden)]
pub mod fuzzing {
    use std::sync::OnceLock;

    use arrow_array::cast::AsArray;
    use arrow_array::types::Int32Type;
    use mailflow_parser::{DecoderBuilder, LogReader, Table};

    use crate::catalog::{DIAGNOSED, TextField};
    use crate::matcher::Diagnosis;
    use crate::sessions::SessionCorrelator;
    use crate::{Catalog, Matcher, RowFacts};

    fn matcher() -> &'static Matcher {
        static M: OnceLock<Matcher> = OnceLock::new();
        M.get_or_init(|| Matcher::new(Catalog::builtin()).expect("the built-in catalog compiles"))
    }

    /// Any text as a field value of every table and field, with and without row facts: every
    /// diagnosis must be borne out by the text itself, checked the plain way (substrings, no
    /// automaton): one of the rule's match blocks applies to the table, field and row, and each
    /// of its texts and codes is in the value; a generic `ESC.c.s.d` needs `c.s.d` in it.
    pub fn diagnose(data: &[u8]) {
        let text = String::from_utf8_lossy(data);
        let m = matcher();
        let _ = m.inner_reply(&text);
        let mut scratch = Vec::new();
        let facts = [
            RowFacts::default(),
            RowFacts {
                event_id: Some("FAIL"),
                direction: Some("send"),
                information: true,
                provider: None,
            },
            RowFacts {
                event_id: Some("1035"),
                provider: Some("MSExchangeTransport"),
                ..RowFacts::default()
            },
        ];
        for table in DIAGNOSED {
            for field in TextField::ALL {
                for f in &facts {
                    if let Some((_, d)) = m.unit(table, field, &text, f, &mut scratch) {
                        let _ = (m.title(d), m.category(d), m.severity(d));
                        assert!(
                            borne_out(m, d, table, field, &text, f),
                            "{} on {table:?}.{field:?} = {text:?} ({f:?}) is not in the text",
                            m.code(d)
                        );
                    }
                }
            }
        }
    }

    /// The plain re-check of a unit diagnosis (see [`diagnose`]).
    fn borne_out(
        m: &Matcher,
        d: Diagnosis,
        table: Table,
        field: TextField,
        text: &str,
        facts: &RowFacts<'_>,
    ) -> bool {
        let lower = text.to_ascii_lowercase();
        let has = |s: &str| lower.contains(&s.to_ascii_lowercase());
        // A reply code in the text: three digits, not inside a longer number.
        let padded = format!(" {text} ");
        let codes: Vec<u16> = padded
            .as_bytes()
            .windows(5)
            .filter(|w| !w[0].is_ascii_digit() && !w[4].is_ascii_digit())
            .filter_map(|w| std::str::from_utf8(&w[1..4]).ok()?.parse().ok())
            .collect();
        let Some(rule) = m.rule(d) else {
            let Diagnosis::Esc(c, s, x) = d else {
                return false;
            };
            return c >= 4 && text.contains(&format!("{c}.{s}.{x}"));
        };
        rule.matches.iter().any(|b| {
            (b.tables.is_empty() || b.tables.iter().any(|t| t == table.name()))
                && (b.fields.is_empty() || b.fields.iter().any(|f| f == field.name()))
                && b.text.iter().all(|t| has(t))
                && b.reply.is_none_or(|r| codes.contains(&r))
                && b.min_reply
                    .is_none_or(|min| codes.iter().any(|c| *c >= min))
                && b.enhanced.as_deref().is_none_or(|e| {
                    // The class and subject (`5.7.`) at least; ranges cover the detail.
                    let prefix: String = e.split('.').take(2).collect::<Vec<_>>().join(".");
                    text.contains(&format!("{prefix}."))
                })
                && b.event_id
                    .as_deref()
                    .is_none_or(|e| facts.event_id.is_some_and(|x| x.eq_ignore_ascii_case(e)))
                && b.direction
                    .as_deref()
                    .is_none_or(|dir| facts.direction == Some(dir))
                && b.provider.as_deref().is_none_or(|p| {
                    facts.provider.is_some_and(|x| {
                        x.to_ascii_lowercase()
                            .starts_with(&p.trim_end_matches('*').to_ascii_lowercase())
                    })
                })
        })
    }

    /// Any bytes as an SMTP receive log, decoded in small batches and correlated into sessions
    /// with a tiny cap and a short timeout (so eviction and idle close run): every protocol row
    /// with a session id is in exactly one session row, and every diagnosed row's session
    /// carries a diagnosis.
    pub fn sessions(data: &[u8]) {
        sessions_checked(data);
    }

    /// [`sessions`], returning the rows it correlated.
    fn sessions_checked(data: &[u8]) -> i64 {
        let (cap, data) = match data.split_first() {
            Some((&c, rest)) => (usize::from(c % 8) + 1, rest),
            None => (1, data),
        };
        let m = matcher();
        let decoder = DecoderBuilder::new("fuzz/EX01/SmtpReceive/RECV2024010100-1.LOG")
            .with_batch_size(3)
            .build();
        let mut correlator =
            SessionCorrelator::new(std::time::Duration::from_secs(60)).with_max_open(cap);
        let (mut rows, mut diagnosed, mut lines, mut sessions_diagnosed) = (0i64, 0, 0i64, 0);
        let mut count = |b: &arrow_array::RecordBatch| {
            let l = b.column_by_name("lines").expect("lines");
            lines += l
                .as_primitive::<Int32Type>()
                .iter()
                .map(|v| i64::from(v.unwrap_or(0)))
                .sum::<i64>();
            sessions_diagnosed += b.column_by_name("diagnosis_code").expect("code").len()
                - b.column_by_name("diagnosis_code")
                    .expect("code")
                    .null_count();
        };
        for flushed in LogReader::new(decoder, std::io::BufReader::with_capacity(17, data)) {
            let Some(d) = flushed.expect("decoding never fails on any input").data else {
                continue;
            };
            if d.table != Table::SmtpProtocol {
                continue;
            }
            let hits = m.classify(d.table, &d.batch);
            let ids = crate::records::Text::of(&d.batch, "session_id");
            for (row, hit) in hits.iter().enumerate() {
                if ids.first(row).is_some_and(|s| !s.is_empty()) {
                    rows += 1;
                    diagnosed += usize::from(hit.is_some());
                }
            }
            correlator.add(m, &d.batch, &hits);
            if let Some(b) = correlator.take(m, 1).expect("sessions build") {
                count(&b);
            }
        }
        if let Some(b) = correlator.finish(m).expect("sessions build") {
            count(&b);
        }
        assert_eq!(
            lines, rows,
            "every row of a session is in exactly one session"
        );
        assert!(
            diagnosed == 0 || sessions_diagnosed > 0,
            "{diagnosed} diagnosed rows, no diagnosed session"
        );
        rows
    }

    /// Any text as a user catalog file.
    pub fn catalog(data: &[u8]) {
        let text = String::from_utf8_lossy(data);
        if let Ok(c) = Catalog::parse(&text, "fuzz.toml") {
            let mut all = Catalog::builtin();
            all.extend(c);
            let _ = Matcher::new(all);
        }
    }

    #[cfg(test)]
    mod tests {
        /// A receive log with a TLS failure, a session cut off and a session id reused.
        const LOG: &[u8] = b"\x03#Software: Microsoft Exchange Server\r\n\
#Log-type: SMTP Receive Protocol Log\r\n\
#Fields: date-time,connector-id,session-id,sequence-number,local-endpoint,remote-endpoint,event,data,context\r\n\
2024-01-01T00:00:00.000Z,EX01\\Default,08DC000000000001,0,10.0.0.5:25,203.0.113.9:41822,+,,\r\n\
2024-01-01T00:00:00.100Z,EX01\\Default,08DC000000000001,1,10.0.0.5:25,203.0.113.9:41822,<,STARTTLS,\r\n\
2024-01-01T00:00:00.200Z,EX01\\Default,08DC000000000001,2,10.0.0.5:25,203.0.113.9:41822,*,,TLS negotiation failed with error NoCredentials\r\n\
2024-01-01T00:00:00.300Z,EX01\\Default,08DC000000000001,3,10.0.0.5:25,203.0.113.9:41822,-,,Local\r\n\
2024-01-01T00:00:01.000Z,EX01\\Default,08DC000000000002,0,10.0.0.5:25,203.0.113.9:41823,+,,\r\n\
2024-01-01T00:05:00.000Z,EX01\\Default,08DC000000000003,0,10.0.0.5:25,203.0.113.9:41824,+,,\r\n\
2024-01-01T00:05:00.100Z,EX01\\Default,08DC000000000001,0,10.0.0.5:25,203.0.113.9:41825,+,,\r\n\
2024-01-01T00:05:00.200Z,EX01\\Default,08DC000000000001,1,10.0.0.5:25,203.0.113.9:41825,>,550 5.7.1 Unable to relay,\r\n";

        #[test]
        fn harnesses_hold_their_invariants_on_awkward_input() {
            for input in [
                &b""[..],
                b"451 4.4.0 Primary target IP address responded with: \"",
                b" -> -> -> 5",
                b"LED=[{LED=",
                b"due to '550 5.7.",
                b"\xff\xfe\x00 5.7.606-649",
                b"451 4.4.0 Primary target IP address responded with: \"454 4.7.0 Temporary authentication failure.\"",
                b"TLS negotiation failed with error NoCredentials",
                b"[[rule]]\ncode = \"A.B\"\n[[rule.match]]\ntext = [\"\"]",
                b"[[rule]]\ncode = \"A.B\"\ntitle = \"t\"\nseverity = \"minor\"\nretry = \"transient\"\nself_heals = \"no\"\ncause = \"c\"\nevidence = \"e\"\nremediation = [\"r\"]\n[[rule.match]]\nenhanced = \"5.7.0-999\"",
                LOG,
                &LOG[..LOG.len() / 2],
            ] {
                super::diagnose(input);
                super::sessions(input);
                super::catalog(input);
            }
            // The sample log reaches correlation: 8 rows, through a cap of 4 open sessions.
            assert_eq!(super::sessions_checked(LOG), 8);
        }

        #[test]
        fn the_diagnosis_check_can_fail() {
            // The plain check turns down a diagnosis its text does not show.
            let m = super::matcher();
            let d = (0..m.catalog().rules().len())
                .map(|i| crate::matcher::Diagnosis::Rule(i as u16))
                .find(|d| m.code(*d) == "TLS.CERT_NO_PRIVATE_KEY")
                .expect("the rule exists");
            let facts = crate::RowFacts::default();
            let t = mailflow_parser::Table::SmtpProtocol;
            let f = crate::TextField::Context;
            assert!(super::borne_out(
                m,
                d,
                t,
                f,
                "TLS negotiation failed with error NoCredentials",
                &facts
            ));
            assert!(!super::borne_out(
                m,
                d,
                t,
                f,
                "TLS negotiation succeeded",
                &facts
            ));
        }
    }
}
