//! `mailflow schema`: every table's columns with their Arrow type, meaning, allowed values and
//! Elastic Common Schema field, as text for a reader or JSON for tools.

use std::io::Write;

use anyhow::{Result, bail};
use arrow_schema::{DataType, SchemaRef};
use mailflow_enrich::docs::column_doc;
use serde::Serialize;

use crate::ingest::table_schemas;

/// One table as `--format json` writes it.
#[derive(Debug, Serialize)]
pub struct TableDoc {
    pub table: &'static str,
    pub schema_version: String,
    pub columns: Vec<ColumnInfo>,
}

/// One column as `--format json` writes it.
#[derive(Debug, Serialize)]
pub struct ColumnInfo {
    pub name: String,
    /// The Arrow type (`Dictionary(Int32, Utf8)`).
    pub arrow_type: String,
    /// The type DuckDB and Spark read it as.
    pub sql_type: String,
    pub nullable: bool,
    pub meaning: &'static str,
    pub values: &'static [&'static str],
    /// Whether values beyond `values` may appear.
    pub open: bool,
    pub ecs: Option<&'static str>,
}

/// The tables' documentation: all of them, or the one named.
pub fn tables(only: Option<&str>) -> Result<Vec<TableDoc>> {
    let all = table_schemas();
    if let Some(name) = only
        && !all.iter().any(|(n, _)| *n == name)
    {
        let known: Vec<&str> = all.iter().map(|(n, _)| *n).collect();
        bail!("no table {name:?}; tables are {}", known.join(", "));
    }
    all.into_iter()
        .filter(|(n, _)| only.is_none_or(|o| o == *n))
        .map(|(name, schema)| describe(name, &schema))
        .collect()
}

fn describe(table: &'static str, schema: &SchemaRef) -> Result<TableDoc> {
    let columns = schema
        .fields()
        .iter()
        .map(|f| {
            // A column without documentation is a bug the tests catch; say so rather than panic.
            let Some(doc) = column_doc(table, f.name()) else {
                bail!("column {table}.{} has no documentation", f.name());
            };
            Ok(ColumnInfo {
                name: f.name().clone(),
                arrow_type: f.data_type().to_string(),
                sql_type: sql_type(f.data_type()),
                nullable: f.is_nullable(),
                meaning: doc.meaning,
                values: doc.values,
                open: doc.open,
                ecs: doc.ecs,
            })
        })
        .collect::<Result<_>>()?;
    Ok(TableDoc {
        table,
        schema_version: schema
            .metadata()
            .get("mailflow.schema_version")
            .cloned()
            .unwrap_or_default(),
        columns,
    })
}

/// The SQL type DuckDB gives the column (Spark's names differ only in spelling).
fn sql_type(t: &DataType) -> String {
    match t {
        DataType::Utf8 | DataType::LargeUtf8 => "VARCHAR".into(),
        DataType::Dictionary(_, v) => sql_type(v),
        DataType::Int16 => "SMALLINT".into(),
        DataType::Int32 => "INTEGER".into(),
        DataType::Int64 => "BIGINT".into(),
        DataType::Boolean => "BOOLEAN".into(),
        DataType::Binary | DataType::LargeBinary => "BLOB".into(),
        DataType::Timestamp(_, Some(_)) => "TIMESTAMP WITH TIME ZONE".into(),
        DataType::Timestamp(_, None) => "TIMESTAMP".into(),
        DataType::List(item) | DataType::LargeList(item) => {
            format!("{}[]", sql_type(item.data_type()))
        }
        DataType::Map(entries, _) => match entries.data_type() {
            DataType::Struct(kv) if kv.len() == 2 => format!(
                "MAP({}, {})",
                sql_type(kv[0].data_type()),
                sql_type(kv[1].data_type())
            ),
            other => other.to_string(),
        },
        other => other.to_string(),
    }
}

/// Writes the tables as text: per column its name, SQL type, ECS field, then its meaning and
/// values indented below, wrapped to 96 columns.
pub fn write_text(out: &mut impl Write, tables: &[TableDoc]) -> std::io::Result<()> {
    for t in tables {
        writeln!(out, "{} (schema version {})", t.table, t.schema_version)?;
        for c in &t.columns {
            let null = if c.nullable { "" } else { " NOT NULL" };
            let ecs = c.ecs.map(|e| format!("  ecs: {e}")).unwrap_or_default();
            writeln!(out, "  {:<28} {}{null}{ecs}", c.name, c.sql_type)?;
            wrap(out, c.meaning, "      ")?;
            if !c.values.is_empty() {
                let more = if c.open { ", and others" } else { "" };
                wrap(
                    out,
                    &format!("values: {}{more}", c.values.join(", ")),
                    "      ",
                )?;
            }
        }
        writeln!(out)?;
    }
    Ok(())
}

/// Writes `text` in lines of at most 96 columns, each after `indent`.
fn wrap(out: &mut impl Write, text: &str, indent: &str) -> std::io::Result<()> {
    let options = textwrap::Options::new(96)
        .initial_indent(indent)
        .subsequent_indent(indent);
    for line in textwrap::wrap(text, options) {
        writeln!(out, "{line}")?;
    }
    Ok(())
}

/// How the derived tables' rows are known across runs: a session by its server, direction,
/// connector and session id; a message by its Message-ID (or, without one, its server and
/// internal id). The lake's replay filter and Elasticsearch's document ids both use these.
pub fn derived_identities() -> Vec<mailflow_sinks::lake::Identity> {
    use mailflow_enrich::{messages, sessions};
    vec![
        mailflow_sinks::lake::Identity {
            table: sessions::TABLE.into(),
            columns: vec![
                "direction".into(),
                "connector_id".into(),
                "session_id".into(),
            ],
            global: None,
            span: Some(("timestamp".into(), "end_time".into())),
        },
        mailflow_sinks::lake::Identity {
            table: messages::TABLE.into(),
            columns: vec!["internal_message_id".into()],
            global: Some("message_id".into()),
            span: Some(("timestamp".into(), "last_seen".into())),
        },
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_column_of_every_table_is_documented() {
        let all = tables(None).unwrap();
        assert_eq!(all.len(), 10);
        for t in &all {
            let mut ecs = std::collections::HashSet::new();
            for c in &t.columns {
                assert!(c.meaning.len() > 10, "{}.{}", t.table, c.name);
                // One ECS field per table: two columns in one field would overwrite each other.
                if let Some(e) = c.ecs {
                    assert!(ecs.insert(e), "{}: {e} twice", t.table);
                }
                // A Dictionary column with closed values lists them; an empty list is fine for
                // open text (connector names).
                assert!(!c.open || !c.values.is_empty(), "{}.{}", t.table, c.name);
            }
        }
        assert!(
            tables(Some("nope"))
                .unwrap_err()
                .to_string()
                .contains("smtp_sessions")
        );
    }

    #[test]
    fn text_is_wrapped_and_names_values() {
        let mut out = Vec::new();
        write_text(&mut out, &tables(Some("messages")).unwrap()).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(text.lines().all(|l| l.chars().count() <= 96), "{text}");
        assert!(
            text.contains("values: delivered, partially_failed, failed, deferred, pending"),
            "{text}"
        );
        assert!(
            text.contains("status                       VARCHAR NOT NULL"),
            "{text}"
        );
        assert!(text.contains("ecs: email.message_id"), "{text}");
    }

    #[test]
    fn sql_types_are_what_duckdb_reads() {
        let custom = mailflow_parser::schema(mailflow_parser::Table::MessageTracking);
        let t = custom.field_with_name("custom_data").unwrap().data_type();
        assert_eq!(sql_type(t), "MAP(VARCHAR, VARCHAR[])");
    }
}
