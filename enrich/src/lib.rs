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

#![deny(missing_docs)]

pub mod catalog;
pub mod esc;
pub mod findings;
mod matcher;
pub mod messages;
pub mod records;
pub mod sessions;

pub use catalog::{Catalog, CatalogError, Rule, Severity};
/// The parser this crate builds on, re-exported so later stages name one version of it.
pub use mailflow_parser as parser;
pub use matcher::{Diagnosis, Hit, Matcher, Reply, RowFacts};
