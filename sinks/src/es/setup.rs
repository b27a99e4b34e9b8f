//! The templates a cluster needs before the sink writes: for each table, a component template
//! of explicit mappings (from the table's Arrow schema and its documents' field names) and an
//! index template that makes `logs-exchange.<table>-*` a data stream built from it and from a
//! shared settings component (the ILM policy). Installing is a `PUT` of each, so running it
//! again changes nothing but what changed.
//!
//! Types: times are `date`, integers `long`, flags `boolean`, addresses `ip` (malformed ones
//! kept in `_source` rather than refusing the document), free text a subject or a transcript
//! line is searched in by substring is `wildcard`, longer prose `match_only_text`, the raw
//! line `keyword` without an index, maps of unknown fields `flattened` (`flat_object` on
//! OpenSearch, see [`SetupOptions::opensearch`]), and everything else
//! `keyword`.

use arrow_schema::{DataType, SchemaRef};
use serde_json::{Map, Value, json};

use super::encode::{FieldName, FieldNames};
use super::{Cluster, data_stream};

/// One template: where it is `PUT`, and its body.
#[derive(Debug, Clone, PartialEq)]
pub struct Template {
    /// The request path (`/_component_template/…` or `/_index_template/…`).
    pub path: String,
    /// The template.
    pub body: Value,
}

/// What the templates are made with besides the tables.
#[derive(Debug, Clone)]
pub struct SetupOptions {
    /// The ILM policy the data streams' indices follow (`logs`, Elasticsearch's own, by
    /// default); none leaves lifecycle to the cluster's defaults.
    pub ilm_policy: Option<String>,
    /// The index templates' priority (above Elasticsearch's built-in `logs-*-*` at 100).
    pub priority: u32,
    /// Templates for OpenSearch (2.15 or later): `flat_object` for `flattened`, no ILM
    /// setting (OpenSearch's ISM attaches policies by their own `ism_template`), and no
    /// optional `@custom` component (OpenSearch has no `ignore_missing_component_templates`).
    pub opensearch: bool,
}

impl Default for SetupOptions {
    fn default() -> Self {
        SetupOptions {
            ilm_policy: Some("logs".into()),
            priority: 200,
            opensearch: false,
        }
    }
}

const SETTINGS: &str = "mailflow-exchange@settings";

/// Columns read as prose (`match_only_text`) and as strings searched by substring
/// (`wildcard`), by column name.
const PROSE: &[&str] = &[
    "description",
    "detail",
    "diagnosis_evidence",
    "reason_data",
    "diagnostics",
    "smtp_response",
    "last_reply",
];
const SUBSTRING: &[&str] = &[
    "message_subject",
    "data",
    "custom_data",
    "parameters",
    "last_error",
];
/// ECS fields that are keywords whatever the column's type (a Windows event ID is a number in
/// the table, `event.code` a keyword in ECS): one type per field across data streams.
const ECS_KEYWORDS: &[&str] = &["event.code"];

/// The templates for `tables` (each with its schema), named as `fields` names columns.
pub fn templates(
    tables: &[(&str, SchemaRef)],
    fields: &FieldNames,
    options: &SetupOptions,
) -> Vec<Template> {
    let mut settings = Map::new();
    let ilm = options.ilm_policy.as_deref().filter(|p| !p.is_empty());
    if let Some(policy) = ilm.filter(|_| !options.opensearch) {
        settings.insert("index.lifecycle.name".into(), json!(policy));
    }
    let mut out = vec![Template {
        path: format!("/_component_template/{SETTINGS}"),
        body: json!({
            "template": { "settings": settings },
            "_meta": meta(),
        }),
    }];
    for (table, schema) in tables {
        let mut props = Map::new();
        put(&mut props, "@timestamp", json!({"type": "date"}));
        put(
            &mut props,
            "event.dataset",
            json!({"type": "constant_keyword", "value": format!("exchange.{table}")}),
        );
        for name in [
            "data_stream.type",
            "data_stream.dataset",
            "data_stream.namespace",
        ] {
            put(&mut props, name, json!({"type": "constant_keyword"}));
        }
        for f in schema.fields() {
            let names = match fields.get(table, f.name()) {
                FieldName::Field(n) => vec![n],
                FieldName::Peer { receive, send } => vec![receive, send],
            };
            for name in names {
                if name == "@timestamp" {
                    continue;
                }
                let mut m = mapping(f.name(), &name, f.data_type());
                if options.opensearch && m["type"] == "flattened" {
                    m["type"] = json!("flat_object");
                }
                put(&mut props, &name, m);
            }
        }
        let mappings = format!("mailflow-exchange.{table}@mappings");
        out.push(Template {
            path: format!("/_component_template/{mappings}"),
            body: json!({
                "template": {
                    "mappings": {
                        "dynamic": true,
                        "properties": props,
                    }
                },
                "_meta": meta(),
            }),
        });
        let custom = format!("logs-exchange.{table}@custom");
        let mut index = json!({
            "index_patterns": [data_stream(table, "*")],
            "data_stream": {},
            "priority": options.priority,
            "composed_of": [SETTINGS, mappings],
            "_meta": meta(),
        });
        if !options.opensearch {
            // A place for the admin's own settings and mappings, kept across setups.
            index["composed_of"] = json!([SETTINGS, mappings, custom]);
            index["ignore_missing_component_templates"] = json!([custom]);
        }
        out.push(Template {
            path: format!("/_index_template/logs-exchange.{table}"),
            body: index,
        });
    }
    out
}

fn meta() -> Value {
    json!({
        "managed_by": "mailflow",
        "version": env!("CARGO_PKG_VERSION"),
    })
}

/// The mapping of a column of type `ty`, going under `name`.
fn mapping(column: &str, name: &str, ty: &DataType) -> Value {
    if ECS_KEYWORDS.contains(&name) {
        return json!({"type": "keyword", "ignore_above": 1024});
    }
    match ty {
        DataType::Timestamp(_, _) | DataType::Date32 | DataType::Date64 => {
            json!({"type": "date"})
        }
        DataType::Int8
        | DataType::Int16
        | DataType::Int32
        | DataType::Int64
        | DataType::UInt8
        | DataType::UInt16
        | DataType::UInt32 => json!({"type": "long"}),
        DataType::UInt64 => json!({"type": "unsigned_long"}),
        DataType::Float32 | DataType::Float64 => json!({"type": "double"}),
        DataType::Boolean => json!({"type": "boolean"}),
        DataType::Binary | DataType::LargeBinary => {
            json!({"type": "keyword", "index": false, "doc_values": false})
        }
        DataType::List(item) | DataType::LargeList(item) => match item.data_type() {
            DataType::Struct(fields) => {
                let mut props = Map::new();
                for f in fields {
                    put(
                        &mut props,
                        f.name(),
                        mapping(f.name(), f.name(), f.data_type()),
                    );
                }
                json!({"type": "object", "properties": props})
            }
            inner => mapping(column, name, inner),
        },
        DataType::Map(_, _) | DataType::Struct(_) => json!({"type": "flattened"}),
        _ if name.ends_with(".ip") || column.ends_with("_ip") => {
            json!({"type": "ip", "ignore_malformed": true})
        }
        _ if SUBSTRING.contains(&column) => json!({"type": "wildcard"}),
        _ if PROSE.contains(&column) => json!({"type": "match_only_text"}),
        _ => json!({"type": "keyword", "ignore_above": 1024}),
    }
}

/// Puts `value` at the dotted `name` of a `properties` tree.
fn put(props: &mut Map<String, Value>, name: &str, value: Value) {
    match name.split_once('.') {
        None => {
            props.insert(name.to_string(), value);
        }
        Some((head, rest)) => {
            let node = props
                .entry(head.to_string())
                .or_insert_with(|| json!({"properties": {}}));
            if node.get("properties").is_none() {
                // A leaf named like an object's head (never in mailflow's names): the object
                // wins, the leaf is dropped rather than making the template invalid.
                *node = json!({"properties": {}});
            }
            if let Some(Value::Object(inner)) = node.get_mut("properties") {
                put(inner, rest, value);
            }
        }
    }
}

/// `PUT`s each template; the answer names the ones installed, or the first the cluster
/// refused and why.
pub fn install(cluster: &Cluster, templates: &[Template]) -> Result<Vec<String>, String> {
    let mut done = Vec::with_capacity(templates.len());
    for t in templates {
        let body = serde_json::to_vec(&t.body).map_err(|e| e.to_string())?;
        let reply = cluster
            .request(
                reqwest::Method::PUT,
                &t.path,
                Some((body.into(), "application/json", false)),
            )
            .map_err(|e| {
                let e = e
                    .strip_prefix(super::client::FATAL)
                    .unwrap_or(&e)
                    .to_string();
                format!("{}{}: {e}", cluster.url(), t.path)
            })?;
        if !reply.status.is_success() {
            let text = String::from_utf8_lossy(&reply.body);
            return Err(format!(
                "{}{} refused ({}): {}",
                cluster.url(),
                t.path,
                reply.status,
                text.chars().take(600).collect::<String>()
            ));
        }
        done.push(t.path.clone());
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow_schema::{Field, Schema};

    use super::*;

    #[test]
    fn a_table_gets_explicit_mappings_and_a_data_stream_template() {
        let schema = crate::testing::lineage_schema(vec![
            Field::new("remote_ip", DataType::Utf8, true),
            Field::new("message_subject", DataType::Utf8, true),
            Field::new("total_bytes", DataType::Int64, true),
        ]);
        let mut names = FieldNames::default();
        names.set("t", "timestamp", FieldName::Field("@timestamp".into()));
        names.set("t", "server", FieldName::Field("host.name".into()));
        names.set(
            "t",
            "remote_ip",
            FieldName::Peer {
                receive: "source.ip".into(),
                send: "destination.ip".into(),
            },
        );
        let t = templates(&[("t", schema)], &names, &SetupOptions::default());
        assert_eq!(t.len(), 3);
        let props = &t[1].body["template"]["mappings"]["properties"];
        assert_eq!(props["host"]["properties"]["name"]["type"], "keyword");
        assert_eq!(props["source"]["properties"]["ip"]["type"], "ip");
        assert_eq!(props["destination"]["properties"]["ip"]["type"], "ip");
        assert_eq!(
            props["exchange"]["properties"]["message_subject"]["type"],
            "wildcard"
        );
        assert_eq!(
            props["exchange"]["properties"]["total_bytes"]["type"],
            "long"
        );
        assert_eq!(props["@timestamp"]["type"], "date");
        let index = &t[2];
        assert_eq!(index.path, "/_index_template/logs-exchange.t");
        assert_eq!(index.body["index_patterns"][0], "logs-exchange.t-*");
        assert!(index.body["data_stream"].is_object());
        assert_eq!(
            t[0].body["template"]["settings"]["index.lifecycle.name"],
            "logs"
        );
        assert_eq!(index.body["composed_of"][2], "logs-exchange.t@custom");
    }

    #[test]
    fn opensearch_templates_use_its_own_types_and_settings() {
        let schema = Arc::new(Schema::new(vec![Field::new(
            "extra",
            DataType::Map(
                Arc::new(Field::new(
                    "entries",
                    DataType::Struct(
                        vec![
                            Field::new("keys", DataType::Utf8, false),
                            Field::new("values", DataType::Utf8, true),
                        ]
                        .into(),
                    ),
                    false,
                )),
                false,
            ),
            true,
        )]));
        let options = SetupOptions {
            opensearch: true,
            ..SetupOptions::default()
        };
        let t = templates(&[("t", schema)], &FieldNames::default(), &options);
        let props = &t[1].body["template"]["mappings"]["properties"];
        assert_eq!(
            props["exchange"]["properties"]["extra"]["type"],
            "flat_object"
        );
        assert!(
            t[0].body["template"]["settings"]
                .as_object()
                .is_some_and(|s| s.is_empty())
        );
        assert_eq!(t[2].body["composed_of"].as_array().map(Vec::len), Some(2));
        assert!(
            t[2].body
                .get("ignore_missing_component_templates")
                .is_none()
        );
    }
}
