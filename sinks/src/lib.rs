//! # mailflow-sinks
//!
//! Durable outputs for mailflow's Arrow record batches. Sinks know batches and their schemas,
//! never log formats.
//!
//! Today: [`parquet::ParquetFile`], one Parquet file written atomically (hidden temporary name,
//! fsync, rename), the building block of the Parquet lake.

#![deny(missing_docs)]
#![warn(unreachable_pub)]

pub mod parquet;
