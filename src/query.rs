//! `mailflow query`: one SQL statement over the lake, its result as an aligned table, CSV,
//! JSON lines or Parquet. Results stream: only the table format holds rows (the first
//! [`TABLE_ROWS`], which is what a terminal can show), the others write each batch as it comes.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use arrow_array::{ArrayRef, RecordBatch, StringArray};
use arrow_cast::display::{ArrayFormatter, FormatOptions};
use arrow_schema::{DataType, Field, Schema};
use datafusion::arrow::csv::WriterBuilder as CsvWriterBuilder;
use datafusion::arrow::json::writer::{
    LineDelimited, LineDelimitedWriter, WriterBuilder as JsonWriterBuilder,
};
use futures::StreamExt;
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;

use crate::lakesql::{self, Scope};

/// Rows the table format shows; the rest are counted.
pub const TABLE_ROWS: usize = 1000;

/// How `query` writes its result.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum QueryFormat {
    /// Aligned columns, for a terminal.
    Table,
    /// CSV with a header; lists, maps and structs as their text (`[a, b]`).
    Csv,
    /// One JSON object per row.
    Json,
    /// A Parquet file (needs `--out`).
    Parquet,
}

/// Runs `sql` over the lake at `lake`, writing to `out` (stdout when `None`). Returns the rows.
pub fn run(lake: &Path, sql: &str, format: QueryFormat, out: Option<&PathBuf>) -> Result<u64> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the query runtime")?;
    // Opened before the runtime starts: a Delta lake's client blocks on a runtime of its own.
    let (lake, _) = lakesql::open(lake, &Scope::default(), false)?;
    runtime.block_on(async {
        let frame = lake.ctx.sql(sql).await.map_err(|e| explain(e, &lake))?;
        let mut stream = frame
            .execute_stream()
            .await
            .map_err(|e| explain(e, &lake))?;
        let mut writer = Writer::new(format, out, stream.schema())?;
        while let Some(batch) = stream.next().await {
            writer.write(&batch.map_err(|e| explain(e, &lake))?)?;
        }
        writer.finish()
    })
}

/// A DataFusion error, with the tables named when the query named one that does not exist.
fn explain(e: datafusion::error::DataFusionError, lake: &lakesql::Lake) -> anyhow::Error {
    let text = e.to_string();
    if text.contains("not found") && text.contains("table") {
        let names: Vec<&str> = lake.tables.iter().map(|t| t.name()).collect();
        anyhow::anyhow!("{text}\nthe lake's tables: {}", names.join(", "))
    } else {
        anyhow::Error::new(e)
    }
}

enum Writer {
    Table {
        out: Box<dyn Write>,
        kept: Vec<RecordBatch>,
        rows: u64,
    },
    Csv {
        inner: datafusion::arrow::csv::Writer<Box<dyn Write>>,
        rows: u64,
    },
    Json {
        inner: LineDelimitedWriter<Box<dyn Write>>,
        rows: u64,
    },
    Parquet {
        inner: ArrowWriter<Box<dyn Write + Send>>,
        rows: u64,
    },
}

impl Writer {
    /// A writer of `format` into `out` (a file), or stdout.
    fn new(format: QueryFormat, out: Option<&PathBuf>, schema: Arc<Schema>) -> Result<Self> {
        let file = |path: &PathBuf| {
            std::fs::File::create(path)
                .map(std::io::BufWriter::new)
                .with_context(|| format!("creating {}", path.display()))
        };
        if format == QueryFormat::Parquet {
            let Some(path) = out else {
                bail!("--format parquet writes a file: give it with --out FILE");
            };
            let props = WriterProperties::builder()
                .set_compression(Compression::ZSTD(ZstdLevel::try_new(3)?))
                .build();
            let sink: Box<dyn Write + Send> = Box::new(file(path)?);
            return Ok(Writer::Parquet {
                inner: ArrowWriter::try_new(sink, schema, Some(props))?,
                rows: 0,
            });
        }
        let out: Box<dyn Write> = match out {
            Some(path) => Box::new(file(path)?),
            None => Box::new(std::io::BufWriter::new(std::io::stdout().lock())),
        };
        Ok(match format {
            QueryFormat::Csv => Writer::Csv {
                inner: CsvWriterBuilder::new()
                    .with_header(true)
                    .with_timestamp_tz_format("%Y-%m-%dT%H:%M:%S%.3fZ".to_string())
                    .build(out),
                rows: 0,
            },
            // Every key on every line, nulls included: a reader sees the same columns each time.
            QueryFormat::Json => Writer::Json {
                inner: JsonWriterBuilder::new()
                    .with_explicit_nulls(true)
                    .build::<_, LineDelimited>(out),
                rows: 0,
            },
            QueryFormat::Table | QueryFormat::Parquet => Writer::Table {
                out,
                kept: Vec::new(),
                rows: 0,
            },
        })
    }

    fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        match self {
            Writer::Table { kept, rows, .. } => {
                let room = TABLE_ROWS.saturating_sub(*rows as usize);
                if room > 0 {
                    kept.push(batch.slice(0, room.min(batch.num_rows())));
                }
                *rows += batch.num_rows() as u64;
            }
            Writer::Csv { inner, rows } => {
                inner.write(&flatten(batch)?)?;
                *rows += batch.num_rows() as u64;
            }
            Writer::Json { inner, rows } => {
                inner.write(batch)?;
                *rows += batch.num_rows() as u64;
            }
            Writer::Parquet { inner, rows } => {
                inner.write(batch)?;
                *rows += batch.num_rows() as u64;
            }
        }
        Ok(())
    }

    fn finish(self) -> Result<u64> {
        match self {
            Writer::Table {
                mut out,
                kept,
                rows,
            } => {
                let shown: usize = kept.iter().map(RecordBatch::num_rows).sum();
                if !kept.is_empty() {
                    writeln!(out, "{}", arrow_cast::pretty::pretty_format_batches(&kept)?)?;
                }
                let more = rows - shown as u64;
                if more > 0 {
                    writeln!(
                        out,
                        "{rows} rows, the first {shown} shown (--format csv or json writes them all)"
                    )?;
                } else {
                    writeln!(out, "{rows} row{}", if rows == 1 { "" } else { "s" })?;
                }
                out.flush()?;
                Ok(rows)
            }
            Writer::Csv { inner, rows } => {
                inner.into_inner().flush()?;
                Ok(rows)
            }
            Writer::Json { mut inner, rows } => {
                inner.finish()?;
                inner.into_inner().flush()?;
                Ok(rows)
            }
            Writer::Parquet { inner, rows } => {
                inner.close()?;
                Ok(rows)
            }
        }
    }
}

/// CSV has no lists, maps or structs: such columns become their text, as DuckDB writes them.
fn flatten(batch: &RecordBatch) -> Result<RecordBatch> {
    if !batch
        .schema()
        .fields()
        .iter()
        .any(|f| f.data_type().is_nested())
    {
        return Ok(batch.clone());
    }
    let options = FormatOptions::default().with_null("");
    let mut fields = Vec::with_capacity(batch.num_columns());
    let mut columns: Vec<ArrayRef> = Vec::with_capacity(batch.num_columns());
    for (field, column) in batch.schema().fields().iter().zip(batch.columns()) {
        if field.data_type().is_nested() {
            let formatter = ArrayFormatter::try_new(column.as_ref(), &options)?;
            let text: StringArray = (0..column.len())
                .map(|i| column.is_valid(i).then(|| formatter.value(i).to_string()))
                .collect();
            fields.push(Field::new(field.name(), DataType::Utf8, true));
            columns.push(Arc::new(text));
        } else {
            fields.push(field.as_ref().clone());
            columns.push(Arc::clone(column));
        }
    }
    Ok(RecordBatch::try_new(
        Arc::new(Schema::new(fields)),
        columns,
    )?)
}
