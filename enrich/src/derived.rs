//! Tables derived by correlation (`smtp_sessions`, `messages`) declared once: each column's
//! name, Arrow type and how to read its value from a correlated item. The schema and the batch
//! builders both come from that one list, so they cannot drift apart.

use std::sync::Arc;

use arrow_array::builder::{
    BooleanBuilder, Int32Builder, Int64Builder, ListBuilder, StringBuilder,
    StringDictionaryBuilder, TimestampMillisecondBuilder,
};
use arrow_array::types::Int32Type;
use arrow_array::{ArrayRef, RecordBatch};
use arrow_schema::{ArrowError, DataType, Field, Schema, SchemaRef, TimeUnit};

use mailflow_parser::schema::DICTIONARY_HINT;

use crate::records::SCHEMA_VERSION;

/// Hands each item of a row's list to the callback; `false` for a null list.
pub(crate) type ListFn<T, C> = fn(&T, &C, &mut dyn FnMut(&str)) -> bool;

/// How a column's value is read from an item `T`, with the correlator's context `C` (its name
/// table, the matcher).
pub(crate) enum Value<T, C> {
    /// `Timestamp(ms, UTC)`.
    Time(fn(&T, &C) -> Option<i64>),
    Int64(fn(&T, &C) -> Option<i64>),
    Int32(fn(&T, &C) -> Option<i32>),
    Bool(fn(&T, &C) -> bool),
    /// Utf8.
    Text(for<'a> fn(&'a T, &'a C) -> Option<&'a str>),
    /// Utf8 made for the row (evidence): the builder's scratch string, `false` for null.
    Made(fn(&T, &C, &mut String) -> bool),
    /// Dictionary(Int32, Utf8).
    Dict(for<'a> fn(&'a T, &'a C) -> Option<&'a str>),
    /// Dictionary(Int32, Utf8) made for the row, as [`Value::Made`].
    DictMade(fn(&T, &C, &mut String) -> bool),
    /// List(Utf8): each item handed to the callback; `false` for a null list.
    List(ListFn<T, C>),
}

/// One column of a derived table.
pub(crate) struct Column<T, C> {
    pub(crate) name: &'static str,
    pub(crate) nullable: bool,
    pub(crate) value: Value<T, C>,
    /// Nearly every row holds a value of its own (an id, a time): marked in the schema with
    /// the parser's [`DICTIONARY_HINT`], so a columnar writer does not try a dictionary.
    pub(crate) distinct: bool,
}

/// A column; `nullable` says whether the value may be absent.
pub(crate) const fn col<T, C>(
    name: &'static str,
    nullable: bool,
    value: Value<T, C>,
) -> Column<T, C> {
    Column {
        name,
        nullable,
        value,
        distinct: false,
    }
}

impl<T, C> Column<T, C> {
    /// The column's values are nearly all distinct (see the `distinct` field).
    pub(crate) const fn distinct(mut self) -> Self {
        self.distinct = true;
        self
    }
}

fn data_type<T, C>(value: &Value<T, C>) -> DataType {
    match value {
        Value::Time(_) => DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())),
        Value::Int64(_) => DataType::Int64,
        Value::Int32(_) => DataType::Int32,
        Value::Bool(_) => DataType::Boolean,
        Value::Text(_) | Value::Made(_) => DataType::Utf8,
        Value::Dict(_) | Value::DictMade(_) => {
            DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8))
        }
        Value::List(_) => DataType::List(Arc::new(Field::new("item", DataType::Utf8, true))),
    }
}

/// The table's schema, with its name and the schema version in the metadata.
pub(crate) fn schema<T, C>(table: &str, columns: &[Column<T, C>]) -> SchemaRef {
    let fields: Vec<Field> = columns
        .iter()
        .map(|c| {
            let field = Field::new(c.name, data_type(&c.value), c.nullable);
            if c.distinct {
                field.with_metadata([(DICTIONARY_HINT.to_string(), "false".to_string())].into())
            } else {
                field
            }
        })
        .collect();
    let metadata = [
        ("mailflow.table".to_string(), table.to_string()),
        (
            "mailflow.schema_version".to_string(),
            SCHEMA_VERSION.to_string(),
        ),
    ]
    .into();
    Arc::new(Schema::new_with_metadata(fields, metadata))
}

/// One batch of `items` in `schema` (made by [`schema`] from the same `columns`).
pub(crate) fn build<'a, T: 'a, C>(
    schema: SchemaRef,
    columns: &[Column<T, C>],
    items: impl Iterator<Item = &'a T> + Clone,
    n: usize,
    ctx: &C,
) -> Result<RecordBatch, ArrowError> {
    let mut arrays: Vec<ArrayRef> = Vec::with_capacity(columns.len());
    for c in columns {
        let items = items.clone();
        let array: ArrayRef = match &c.value {
            Value::Time(f) => {
                let mut b = TimestampMillisecondBuilder::with_capacity(n).with_timezone("UTC");
                items.for_each(|x| b.append_option(f(x, ctx)));
                Arc::new(b.finish())
            }
            Value::Int64(f) => {
                let mut b = Int64Builder::with_capacity(n);
                items.for_each(|x| b.append_option(f(x, ctx)));
                Arc::new(b.finish())
            }
            Value::Int32(f) => {
                let mut b = Int32Builder::with_capacity(n);
                items.for_each(|x| b.append_option(f(x, ctx)));
                Arc::new(b.finish())
            }
            Value::Bool(f) => {
                let mut b = BooleanBuilder::with_capacity(n);
                items.for_each(|x| b.append_value(f(x, ctx)));
                Arc::new(b.finish())
            }
            Value::Text(f) => {
                let mut b = StringBuilder::with_capacity(n, n * 16);
                items.for_each(|x| b.append_option(f(x, ctx)));
                Arc::new(b.finish())
            }
            Value::Made(f) => {
                let mut b = StringBuilder::with_capacity(n, n * 16);
                each_made(items, ctx, *f, |v| b.append_option(v));
                Arc::new(b.finish())
            }
            Value::Dict(f) => {
                let mut b = Runs::default();
                items.for_each(|x| b.push(f(x, ctx)));
                Arc::new(b.finish())
            }
            Value::DictMade(f) => {
                let mut b = Runs::default();
                each_made(items, ctx, *f, |v| b.push(v));
                Arc::new(b.finish())
            }
            Value::List(f) => {
                let mut b = ListBuilder::new(StringBuilder::new());
                for x in items {
                    let valid = f(x, ctx, &mut |s| b.values().append_value(s));
                    b.append(valid);
                }
                Arc::new(b.finish())
            }
        };
        arrays.push(array);
    }
    RecordBatch::try_new(schema, arrays)
}

/// A dictionary column appended a run at a time: items come sorted (sessions by file and
/// offset, messages by time), so server, file, connector and most TLS and outcome values repeat
/// row after row, and comparing with the previous value is cheaper than hashing each one into
/// the dictionary.
#[derive(Default)]
struct Runs {
    b: StringDictionaryBuilder<Int32Type>,
    /// The current run's value (`None`: null) and length.
    value: Option<String>,
    len: usize,
}

impl Runs {
    fn push(&mut self, v: Option<&str>) {
        if self.len > 0 && self.value.as_deref() == v {
            self.len += 1;
            return;
        }
        self.flush();
        match (&mut self.value, v) {
            (Some(s), Some(v)) => {
                s.clear();
                s.push_str(v);
            }
            (value, v) => *value = v.map(str::to_string),
        }
        self.len = 1;
    }

    fn flush(&mut self) {
        if self.len > 0 {
            self.b.append_options(self.value.as_deref(), self.len);
            self.len = 0;
        }
    }

    fn finish(mut self) -> arrow_array::DictionaryArray<Int32Type> {
        self.flush();
        self.b.finish()
    }
}

/// Each item's made value (one scratch string for all), or `None` where `f` says null.
fn each_made<'a, T: 'a, C>(
    items: impl Iterator<Item = &'a T>,
    ctx: &C,
    f: fn(&T, &C, &mut String) -> bool,
    mut put: impl FnMut(Option<&str>),
) {
    let mut s = String::new();
    for x in items {
        s.clear();
        let made = f(x, ctx, &mut s);
        put(made.then_some(s.as_str()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::Array;

    struct Row {
        n: i64,
        names: Vec<&'static str>,
    }

    fn columns() -> Vec<Column<Row, ()>> {
        vec![
            col("timestamp", false, Value::Time(|r, _| Some(r.n))),
            col("n", true, Value::Int64(|r, _| (r.n > 0).then_some(r.n))),
            col("first", true, Value::Dict(|r, _| r.names.first().copied())),
            col(
                "names",
                false,
                Value::List(|r, _, f| {
                    r.names.iter().for_each(|n| f(n));
                    true
                }),
            ),
            col(
                "made",
                true,
                Value::Made(|r, _, s| {
                    s.push_str(&r.names.join("+"));
                    !s.is_empty()
                }),
            ),
        ]
    }

    #[test]
    fn runs_build_the_same_dictionary_column_as_value_by_value() {
        let values = [
            None,
            Some("a"),
            Some("a"),
            None,
            None,
            Some("b"),
            Some("a"),
            Some(""),
            Some(""),
        ];
        let mut runs = Runs::default();
        let mut plain = StringDictionaryBuilder::<Int32Type>::new();
        for v in values {
            runs.push(v);
            plain.append_option(v);
        }
        let (runs, plain) = (runs.finish(), plain.finish());
        assert_eq!(runs.len(), values.len());
        let read = |d: &arrow_array::DictionaryArray<Int32Type>| -> Vec<Option<String>> {
            let typed = d.downcast_dict::<arrow_array::StringArray>().unwrap();
            typed.into_iter().map(|v| v.map(str::to_string)).collect()
        };
        assert_eq!(read(&runs), read(&plain));
        assert_eq!(runs.values().len(), 3, "each distinct value once");
        assert_eq!(Runs::default().finish().len(), 0);
    }

    #[test]
    fn schema_and_batch_come_from_one_list() {
        let cols = columns();
        let schema = schema("t", &cols);
        assert_eq!(schema.metadata()["mailflow.table"], "t");
        let rows = [
            Row {
                n: 0,
                names: vec![],
            },
            Row {
                n: 5,
                names: vec!["a", "b"],
            },
        ];
        let batch = build(schema, &cols, rows.iter(), rows.len(), &()).unwrap();
        assert_eq!(batch.num_rows(), 2);
        assert!(batch.column(1).is_null(0) && batch.column(1).is_valid(1));
        assert!(batch.column(4).is_null(0));
        let made = batch
            .column(4)
            .as_any()
            .downcast_ref::<arrow_array::StringArray>();
        assert_eq!(made.unwrap().value(1), "a+b");
    }

    #[test]
    fn ids_and_times_of_the_derived_tables_are_marked_distinct() {
        let hinted = |schema: &SchemaRef| -> Vec<String> {
            schema
                .fields()
                .iter()
                .filter(|f| {
                    f.metadata()
                        .get(DICTIONARY_HINT)
                        .is_some_and(|v| v == "false")
                })
                .map(|f| f.name().clone())
                .collect()
        };
        assert_eq!(
            hinted(&crate::sessions::schema()),
            ["timestamp", "source_offset", "session_id", "end_time"]
        );
        assert_eq!(
            hinted(&crate::messages::schema()),
            [
                "timestamp",
                "source_offset",
                "message_id",
                "internal_message_id",
                "last_seen"
            ]
        );
    }
}
