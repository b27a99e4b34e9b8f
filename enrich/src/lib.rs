//! # mailflow-enrich
//!
//! Will own diagnosis (the rule catalog, codes on records) and correlation (SMTP sessions,
//! message journeys) over the parser's Arrow batches; it knows nothing of files or sinks.
//!
//! Empty today: the diagnosis engine is its own piece of work (the diagnosis issue), built on the
//! parser's tables. The crate exists now so the workspace has its final shape and the dependency
//! direction `parser ← enrich ← sinks ← mailflow` is fixed from the start.

#![deny(missing_docs)]

/// The parser this crate builds on, re-exported so later stages name one version of it.
pub use mailflow_parser as parser;
