//! # mailflow
//!
//! The runtime and command line of mailflow: Exchange transport logs in, typed and diagnosed
//! tables out. The parsing lives in `mailflow-parser`, diagnosis in `mailflow-enrich`, outputs in
//! `mailflow-sinks`; this crate wires them into commands (`ingest`, `run`, `diagnose`,
//! `compact`, `query`, `report`, `schema`, `es setup`, `generate`).

#![forbid(unsafe_code)]

pub mod agent;
pub mod checkpoint;
pub mod config;
pub mod diagnose;
pub mod es;
pub mod generate;
pub mod ingest;
pub mod lakesql;
pub mod plan;
pub mod query;
pub mod report;
pub mod schema;
pub mod term;
