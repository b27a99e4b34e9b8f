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

#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod catalog;
mod correlate;
mod derived;
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

/// Harnesses for the fuzz targets (`fuzz/`): outside text through the catalog parser and the
/// matcher. The invariant is no panic; they also run on a fixed corpus in the unit tests.
#[doc(hidden)]
pub mod fuzzing {
    use std::sync::OnceLock;

    use crate::{Catalog, Matcher, RowFacts};

    fn matcher() -> &'static Matcher {
        static M: OnceLock<Matcher> = OnceLock::new();
        M.get_or_init(|| Matcher::new(Catalog::builtin()).expect("the built-in catalog compiles"))
    }

    /// Any text as a field value of every table and field, with and without row facts.
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
            },
        ];
        for table in crate::catalog::DIAGNOSED {
            for field in crate::catalog::TextField::ALL {
                for f in &facts {
                    if let Some((_, d)) = m.unit(table, field, &text, f, &mut scratch) {
                        let _ = (m.code(d), m.title(d), m.category(d), m.severity(d));
                    }
                }
            }
        }
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
        #[test]
        fn harnesses_survive_awkward_input() {
            for input in [
                &b""[..],
                b"451 4.4.0 Primary target IP address responded with: \"",
                b" -> -> -> 5",
                b"LED=[{LED=",
                b"due to '550 5.7.",
                b"\xff\xfe\x00 5.7.606-649",
                b"[[rule]]\ncode = \"A.B\"\n[[rule.match]]\ntext = [\"\"]",
                b"[[rule]]\ncode = \"A.B\"\ntitle = \"t\"\nseverity = \"minor\"\nretry = \"transient\"\nself_heals = \"no\"\ncause = \"c\"\nevidence = \"e\"\nremediation = [\"r\"]\n[[rule.match]]\nenhanced = \"5.7.0-999\"",
            ] {
                super::diagnose(input);
                super::catalog(input);
            }
        }
    }
}
