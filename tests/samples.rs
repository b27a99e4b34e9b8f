//! The real Exchange samples (tests/data/samples, see SOURCES.md there): row counts, golden
//! output, and identical results whatever the chunking and batch size.

mod common;

use common::*;
use mailflow_parser::Table;

#[test]
fn every_sample_parses_with_no_rejects_and_the_right_row_counts() {
    let expected: &[(&str, Table, usize)] = &[
        ("agentlog.artefacts-help.log", Table::AgentLog, 1),
        ("imap4.elastic-integrations.log", Table::PopImapProtocol, 3),
        (
            "messagetracking-2010.elastic-beats-bom8.log",
            Table::MessageTracking,
            2,
        ),
        (
            "messagetracking-2013.kinesis-agent-windows.log",
            Table::MessageTracking,
            2,
        ),
        (
            "messagetracking.elastic-integrations.log",
            Table::MessageTracking,
            6,
        ),
        ("pop3.elastic-integrations.log", Table::PopImapProtocol, 3),
        ("smtp-receive.artefacts-help.log", Table::SmtpProtocol, 16),
        (
            "smtp-receive.elastic-integrations-docker-sample.log",
            Table::SmtpProtocol,
            1,
        ),
        (
            "smtp-receive.elastic-integrations.log",
            Table::SmtpProtocol,
            4,
        ),
        ("smtp-send.elastic-integrations.log", Table::SmtpProtocol, 3),
    ];
    let files = files_in("samples");
    assert_eq!(
        files.len(),
        expected.len(),
        "a sample without an expectation"
    );
    for (name, table, rows) in expected {
        let out = decode_file(&data_dir().join("samples").join(name), 64 * 1024, 8192);
        assert_eq!(out.reject_count(), 0, "{name}: {:?}", out.reject_reasons());
        assert_eq!(out.rows(*table), *rows, "{name}");
        assert_eq!(out.data.len(), 1, "{name} filled more than one table");
        assert_eq!(out.stats.lossy_rows, 0, "{name}");
    }
}

fn golden(dir: &str, name: &str) -> String {
    let out = decode_file(&data_dir().join(dir).join(name), 64 * 1024, 8192);
    let mut text = String::new();
    for (table, batches) in &out.data {
        text += &format!("=== {}\n{}", table.name(), render(batches));
    }
    if !out.rejects.is_empty() {
        text += &format!("=== rejects\n{}", render(&out.rejects));
    }
    for n in &out.notes {
        text += &format!("note: {n}\n");
    }
    text
}

#[test]
fn golden_smtp_receive_with_tls_and_auth() {
    insta::assert_snapshot!(golden("samples", "smtp-receive.artefacts-help.log"));
}

#[test]
fn golden_smtp_send_connect_failure() {
    insta::assert_snapshot!(golden("samples", "smtp-send.elastic-integrations.log"));
}

#[test]
fn golden_message_tracking_2016_headerless() {
    insta::assert_snapshot!(golden(
        "samples",
        "messagetracking.elastic-integrations.log"
    ));
}

#[test]
fn golden_message_tracking_2010_bom() {
    insta::assert_snapshot!(golden(
        "samples",
        "messagetracking-2010.elastic-beats-bom8.log"
    ));
}

#[test]
fn golden_message_tracking_2013() {
    insta::assert_snapshot!(golden(
        "samples",
        "messagetracking-2013.kinesis-agent-windows.log"
    ));
}

#[test]
fn golden_imap4_nested_quotes() {
    insta::assert_snapshot!(golden("samples", "imap4.elastic-integrations.log"));
}

#[test]
fn golden_agent_log() {
    insta::assert_snapshot!(golden("samples", "agentlog.artefacts-help.log"));
}

#[test]
fn golden_connectivity() {
    insta::assert_snapshot!(golden("edge", "CONNECTLOG2024030110-1.LOG"));
}

#[test]
fn golden_edge_cases_with_rejects() {
    insta::assert_snapshot!(golden("edge", "garbage.log"));
    insta::assert_snapshot!(golden("edge", "header_change.log"));
}

/// Chunk boundaries: every file, any buffer size, gives the same batches; any batch size gives
/// the same rows once batches are concatenated.
#[test]
fn chunking_and_batch_size_do_not_change_output() {
    let mut files = files_in("samples");
    files.extend(files_in("edge"));
    for path in files {
        let bytes = std::fs::read(&path).unwrap();
        let mut per_batch_size = Vec::new();
        for batch_size in [1, 4, 8192] {
            let reference = decode_file(&path, bytes.len().max(1), batch_size);
            for chunk in [1, 3, 7, 64 * 1024] {
                let out = decode_file(&path, chunk, batch_size);
                assert_eq!(
                    out,
                    reference,
                    "{} chunk {chunk} batch {batch_size}",
                    path.display()
                );
            }
            if batch_size > 1 {
                for batches in reference.data.values().chain([&reference.rejects]) {
                    assert!(batches.iter().all(|b| b.num_rows() <= batch_size));
                }
            }
            per_batch_size.push(reference);
        }
        let concat = |o: &Output| {
            let mut tables: Vec<String> = o.data.values().map(|b| render(b)).collect();
            tables.push(render(&o.rejects));
            tables
        };
        let first = concat(&per_batch_size[0]);
        for other in &per_batch_size[1..] {
            assert_eq!(concat(other), first, "{}", path.display());
        }
    }
}
