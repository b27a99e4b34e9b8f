//! The Arrow schema of every table mailflow writes, as golden text: a type, a name, a
//! nullability or a metadata change fails here, and the snapshot diff shows what readers of the
//! lake will see change (`cargo insta review` accepts a deliberate one).

use std::fmt::Write as _;

use arrow_schema::{DataType, Field};

fn field(out: &mut String, f: &Field, indent: usize) {
    let _ = write!(
        out,
        "{:indent$}{}: {}{}",
        "",
        f.name(),
        f.data_type(),
        if f.is_nullable() { "" } else { " NOT NULL" },
    );
    let mut meta: Vec<_> = f.metadata().iter().collect();
    meta.sort();
    for (k, v) in meta {
        let _ = write!(out, " [{k}={v}]");
    }
    out.push('\n');
    // Nested fields (list items, map entries) with their own nullability.
    match f.data_type() {
        DataType::List(item) => field(out, item, indent + 2),
        DataType::Map(entries, _) => field(out, entries, indent + 2),
        DataType::Struct(children) => children.iter().for_each(|c| field(out, c, indent + 2)),
        _ => {}
    }
}

#[test]
fn every_table_schema_is_as_recorded() {
    let mut out = String::new();
    let tables = mailflow::ingest::table_schemas();
    let names: Vec<&str> = tables.iter().map(|(n, _)| *n).collect();
    assert_eq!(
        names,
        [
            "message_tracking",
            "smtp_protocol",
            "connectivity",
            "pop_imap_protocol",
            "agent_log",
            "rejects",
            "smtp_sessions",
            "messages"
        ]
    );
    for (name, schema) in tables {
        let mut meta: Vec<_> = schema.metadata().iter().collect();
        meta.sort();
        let _ = writeln!(out, "== {name} {meta:?}");
        for f in schema.fields() {
            field(&mut out, f, 2);
        }
    }
    insta::assert_snapshot!(out);
}
