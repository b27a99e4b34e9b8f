//! mailflow's tables as Elasticsearch sees them: the field each column becomes in a document
//! (ECS where ECS has the field, `exchange.*` otherwise, the diagnosis under
//! `mailflow.diagnosis.*`), the identities of derived rows, and `mailflow es setup`.

use std::collections::HashMap;

use anyhow::{Result, bail};
use mailflow_enrich::{messages, sessions};
use mailflow_sinks::es::setup::{self, SetupOptions, Template};
use mailflow_sinks::es::{Cluster, EsConfig, FieldName, FieldNames};
use mailflow_sinks::lake::Identity;

use crate::ingest::table_schemas;
use crate::schema::derived_identities;

/// Tables whose rows are one side of an SMTP connection, `local_*` and `remote_*` columns:
/// which end is ECS's `source` depends on the row's direction.
const PEERED: &[&str] = &["smtp_protocol", sessions::TABLE, "agent_log"];

/// Every column of every table, named for documents.
pub fn field_names() -> FieldNames {
    let mut names = FieldNames::default();
    for (table, schema) in table_schemas() {
        for f in schema.fields() {
            let column = f.name().as_str();
            if let Some(name) = field_name(table, column) {
                names.set(table, column, name);
            }
        }
    }
    // ECS's `event.outcome` (success, failure, unknown) from the derived tables' own words.
    names.set_outcome(
        sessions::TABLE,
        "outcome",
        &[
            ("delivered", "success"),
            ("failed", "failure"),
            ("deferred", "failure"),
            ("dropped", "failure"),
        ],
    );
    names.set_outcome(
        messages::TABLE,
        "status",
        &[
            ("delivered", "success"),
            ("failed", "failure"),
            ("partially_failed", "failure"),
        ],
    );
    names
}

fn field_name(table: &str, column: &str) -> Option<FieldName> {
    let field = |s: &str| Some(FieldName::Field(s.to_string()));
    if let Some(part) = column.strip_prefix("diagnosis_") {
        return field(&format!("mailflow.diagnosis.{part}"));
    }
    if column == "enhanced_status_code" {
        return field("error.code");
    }
    if PEERED.contains(&table) {
        let peer = |near: &str, far: &str| {
            Some(FieldName::Peer {
                receive: near.to_string(),
                send: far.to_string(),
            })
        };
        // On a received connection the remote end is the source; on a sent one, the
        // destination.
        match column {
            "remote_ip" => return peer("source.ip", "destination.ip"),
            "remote_port" => return peer("source.port", "destination.port"),
            "local_ip" => return peer("destination.ip", "source.ip"),
            "local_port" => return peer("destination.port", "source.port"),
            _ => {}
        }
    }
    mailflow_enrich::docs::column_doc(table, column)
        .and_then(|d| d.ecs)
        .and_then(field)
}

/// The derived tables' identities, by table.
pub fn identities() -> HashMap<String, Identity> {
    derived_identities()
        .into_iter()
        .map(|i| (i.table.clone(), i))
        .collect()
}

/// The templates for every table.
pub fn templates(options: &SetupOptions) -> Vec<Template> {
    setup::templates(&table_schemas(), &field_names(), options)
}

/// `mailflow es setup`: prints the templates (`dry_run`) or installs them on `config`'s
/// cluster, and says what it did.
pub fn run_setup(config: &EsConfig, options: &SetupOptions, dry_run: bool) -> Result<String> {
    let templates = templates(options);
    let mut out = String::new();
    if dry_run {
        for t in &templates {
            out.push_str(&format!(
                "PUT {}\n{}\n\n",
                t.path,
                serde_json::to_string_pretty(&t.body)?
            ));
        }
        return Ok(out);
    }
    let cluster = Cluster::new(config).map_err(anyhow::Error::msg)?;
    match setup::install(&cluster, &templates) {
        Ok(done) => {
            for p in done {
                out.push_str(&format!("installed {p}\n"));
            }
            out.push_str(&format!(
                "{} data streams (logs-exchange.<table>-*) are ready on {}\n",
                table_schemas().len(),
                cluster.url()
            ));
            Ok(out)
        }
        Err(e) => bail!("es setup: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    /// The tables whose documents have the field `name`.
    fn tables_with(name: &str) -> Vec<&'static str> {
        let names = field_names();
        table_schemas()
            .into_iter()
            .filter(|(t, schema)| {
                (name == "event.outcome" && names.has_outcome(t))
                    || schema
                        .fields()
                        .iter()
                        .any(|f| match names.get(t, f.name()) {
                            FieldName::Field(n) => n == name,
                            FieldName::Peer { receive, send } => receive == name || send == name,
                        })
            })
            .map(|(t, _)| t)
            .collect()
    }

    #[test]
    fn no_two_columns_of_a_table_share_a_field() {
        let names = field_names();
        for (table, schema) in table_schemas() {
            for send in [false, true] {
                let mut seen = HashSet::new();
                for f in schema.fields() {
                    let name = match names.get(table, f.name()) {
                        FieldName::Field(n) => n,
                        FieldName::Peer { receive, send: s } => {
                            if send {
                                s
                            } else {
                                receive
                            }
                        }
                    };
                    assert!(seen.insert(name.clone()), "{table}: {name} twice");
                }
            }
        }
    }

    #[test]
    fn the_fields_the_issue_names_are_written() {
        for name in [
            "@timestamp",
            "host.name",
            "source.ip",
            "source.port",
            "destination.ip",
            "destination.port",
            "email.sender.address",
            "email.to.address",
            "email.subject",
            "email.message_id",
            "event.action",
            "event.outcome",
            "tls.version",
            "tls.cipher",
            "tls.server.x509.not_after",
            "error.code",
            "log.file.path",
            "log.offset",
            "mailflow.diagnosis.code",
            "mailflow.diagnosis.category",
            "mailflow.diagnosis.severity",
        ] {
            assert!(!tables_with(name).is_empty(), "no table writes {name}");
        }
        assert!(tables_with("exchange.diagnosis_code").is_empty());
    }
}
