//! # mailflow-sinks
//!
//! Durable outputs for mailflow's Arrow record batches. Sinks know batches and their schemas,
//! never log formats.
//!
//! - [`parquet::ParquetFile`]: one Parquet file written atomically (hidden temporary name,
//!   fsync, rename).
//! - [`lake`]: the partitioned Parquet lake (`<table>/date=…/server=…/part-….parquet`), with
//!   journaled multi-file commits, provenance in every footer for exact resumption, and
//!   compaction.
//! - [`sink`]: the contract every sink meets (write, acknowledge what is durable, tick,
//!   flush, close), the lake's implementation and the fan-out to several sinks.
//! - [`es`]: the Elasticsearch sink (bulk API, ECS documents, exactly once through replays)
//!   and the templates its data streams need.
//! - [`store`] and [`object_lake`]: the lake in an object store (S3, Azure Blob, ADLS Gen2)
//!   as Delta Lake tables, committed through `deltalake-core`, or as plain Parquet files.
//! - [`durable`]: making many files durable at once (the crate's platform-specific code).

#![forbid(unsafe_code)]
#![deny(missing_docs)]
#![warn(unreachable_pub)]

pub mod durable;
pub mod es;
pub mod lake;
pub mod object_lake;
pub mod parquet;
pub mod sink;
pub mod store;

/// What the crate's unit tests share.
#[cfg(test)]
pub(crate) mod testing {
    use std::sync::Arc;

    use arrow_schema::{DataType, Field, Schema, SchemaRef, TimeUnit};

    /// A schema of the lineage columns every table starts with (`timestamp`, `server`,
    /// `source_offset`), then `more`.
    pub(crate) fn lineage_schema(more: Vec<Field>) -> SchemaRef {
        let mut fields = vec![
            Field::new(
                "timestamp",
                DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())),
                true,
            ),
            Field::new("server", DataType::Utf8, false),
            Field::new("source_offset", DataType::Int64, false),
        ];
        fields.extend(more);
        Arc::new(Schema::new(fields))
    }
}
