//! Windows events and queue snapshots beside the transport logs, end to end through the real
//! binary: `diagnose` recognises each file by its content (pastes saved as `.txt`, UTF-16 from
//! Windows PowerShell) and makes one finding of one problem seen in several inputs and on
//! several servers; `ingest` writes `transport_events` and `queue_snapshots` to the lake, which
//! DuckDB reads back.

#![allow(clippy::unwrap_used)]

mod cli;

use std::path::Path;
use std::process::Command;

use cli::{data, mailflow, python};

fn utf16le(s: &str) -> Vec<u8> {
    let mut out = vec![0xFF, 0xFE];
    for u in s.replace('\n', "\r\n").encode_utf16() {
        out.extend_from_slice(&u.to_le_bytes());
    }
    out
}

fn write(path: &Path, bytes: impl AsRef<[u8]>) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, bytes).unwrap();
}

/// EX01 sends to 192.0.2.40 with a certificate that has no private key (its send log), and its
/// queue to that host is in Retry with `421 4.4.1` (a `Format-List` paste, UTF-16, `.txt`).
/// EX01's queue to EX02 fails with `454 4.7.0` (`Export-Csv`), and EX02 logs event 1035
/// (`ConvertTo-Json`). An `.evtx` of another Exchange provider rides along.
fn fleet(root: &Path) {
    let send = std::fs::read(data("diagnosis").join("TLS.CERT_NO_PRIVATE_KEY.log")).unwrap();
    write(&root.join("EX01/SmtpSend/SEND20250114-1.LOG"), send);
    let queue = "\n\nDeliveryType                     : DnsConnectorDelivery
NextHopDomain                    : example.net
Status                           : Retry
MessageCount                     : 31
LastError                        : [{LRT=1/14/2025 9:05:00 AM};{LED=441 4.4.1 Error encountered while
                                   communicating with primary target IP address: \"421 4.4.1
                                   Connection timed out.\" Attempted failover to alternate host, but
                                   that did not succeed.};{FQDN=mx.example.net};{IP=192.0.2.40}]
LastRetryTime                    : 1/14/2025 9:05:00 AM
NextRetryTime                    : 1/14/2025 9:15:00 AM
Identity                         : EX01\\12

";
    write(&root.join("pastes/queue EX01 monday.txt"), utf16le(queue));
    let csv = std::fs::read_to_string(data("windows").join("get-queue.csv")).unwrap();
    write(&root.join("pastes/q.csv"), csv);
    let json = std::fs::read(data("windows").join("get-winevent.json")).unwrap();
    write(&root.join("pastes/ex02-events.txt"), json);
    let evtx = std::fs::read(data("windows").join("MSExchange_Management_wec.evtx")).unwrap();
    write(&root.join("exports/Management.evtx"), evtx);
}

fn diagnose_json(root: &Path) -> serde_json::Value {
    let out = mailflow(&["diagnose", root.to_str().unwrap(), "--format", "json"]);
    serde_json::from_slice(&out.stdout).unwrap()
}

fn finding<'a>(json: &'a serde_json::Value, code: &str) -> &'a serde_json::Value {
    json["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["code"] == code)
        .unwrap_or_else(|| panic!("no {code}: {json:#}"))
}

fn codes(json: &serde_json::Value) -> Vec<String> {
    json["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["code"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn a_queue_in_retry_and_the_send_session_behind_it_are_one_finding() {
    let tmp = tempfile::tempdir().unwrap();
    fleet(tmp.path());
    let json = diagnose_json(tmp.path());
    assert_eq!(
        json["files"], 5,
        "every file read, whatever its name: {json:#}"
    );
    assert!(json["skipped"].as_array().unwrap().is_empty(), "{json:#}");
    let tls = finding(&json, "TLS.CERT_NO_PRIVATE_KEY");
    // The queue's timeout is the same problem: folded in, with its evidence.
    assert!(
        !codes(&json).contains(&"NET.CONNECT_TIMEOUT".to_string()),
        "{:?}",
        codes(&json)
    );
    assert_eq!(
        tls["also_seen_as"][0]["code"], "NET.CONNECT_TIMEOUT",
        "{tls:#}"
    );
    assert_eq!(
        tls["seen_in"]["queue_snapshots"]["values"],
        serde_json::json!(["EX01"])
    );
    assert_eq!(
        tls["seen_in"]["smtp_protocol"]["values"],
        serde_json::json!(["EX01"])
    );
    let evidence = tls["evidence"].as_array().unwrap();
    // The snapshot's queue to that host (the CSV's queues of EX01 may show as well: evidence is
    // kept per input, oldest first, and the two files' times are a moment apart).
    let queue = evidence
        .iter()
        .find(|e| {
            e["input"] == "queue_snapshots"
                && e["text"]
                    .as_str()
                    .unwrap()
                    .starts_with("queue EX01\\12 (Retry, 31 messages): ")
        })
        .unwrap_or_else(|| panic!("{tls:#}"));
    assert!(
        queue["file"]
            .as_str()
            .unwrap()
            .ends_with("queue EX01 monday.txt")
    );
    assert!(
        evidence
            .iter()
            .any(|e| e["text"] == "TLS negotiation failed with error NoCredentials")
    );
    // The text report says so too.
    let text =
        String::from_utf8(mailflow(&["diagnose", tmp.path().to_str().unwrap()]).stdout).unwrap();
    assert!(text.contains("also seen as: NET.CONNECT_TIMEOUT"), "{text}");
    assert!(
        text.contains("seen in: queue snapshots on EX01; SMTP protocol logs on EX01"),
        "{text}"
    );
}

#[test]
fn event_1035_on_one_hub_and_454_in_the_other_hubs_queue_are_one_finding() {
    let tmp = tempfile::tempdir().unwrap();
    fleet(tmp.path());
    let json = diagnose_json(tmp.path());
    let kerberos = finding(&json, "AUTH.KERBEROS_CLOCK_SKEW_OR_AD");
    assert_eq!(
        kerberos["servers"]["values"],
        serde_json::json!(["EX01", "EX02"])
    );
    assert_eq!(
        kerberos["seen_in"]["queue_snapshots"]["values"],
        serde_json::json!(["EX01"])
    );
    assert_eq!(
        kerberos["seen_in"]["transport_events"]["values"],
        serde_json::json!(["EX02"])
    );
    let texts: Vec<&str> = kerberos["evidence"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["text"].as_str().unwrap())
        .collect();
    assert!(
        texts
            .iter()
            .any(|t| t.starts_with("event 1035 (MSExchangeTransport): ")),
        "{texts:?}"
    );
    assert!(
        texts
            .iter()
            .any(|t| t.starts_with("queue EX01\\4 (Retry, 42 messages): ")),
        "{texts:?}"
    );
    // Event 15006 on EX02 is disk back pressure.
    let disk = finding(&json, "RESOURCE.BACKPRESSURE_DISK");
    assert_eq!(disk["servers"]["values"], serde_json::json!(["EX02"]));
}

#[test]
fn ingest_writes_events_and_queues_that_duckdb_reads() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("in");
    fleet(&root);
    let lake = tmp.path().join("lake");
    mailflow(&[
        "ingest",
        root.to_str().unwrap(),
        "--parquet",
        lake.to_str().unwrap(),
        "--quiet",
    ]);
    // A second run adds nothing: the files' identities are their content.
    let again = mailflow(&[
        "ingest",
        root.to_str().unwrap(),
        "--parquet",
        lake.to_str().unwrap(),
        "--quiet",
    ]);
    let text = String::from_utf8_lossy(&again.stdout);
    assert!(text.contains("already in the lake"), "{text}");
    let script = r#"
import sys, duckdb
lake = sys.argv[1]
con = duckdb.connect()
def q(sql):
    return con.execute(sql.replace("LAKE", lake)).fetchall()
events = q("select server, provider, event_id, diagnosis_code, input_format from read_parquet('LAKE/transport_events/**/*.parquet', hive_partitioning=true) order by server, event_id")
queues = q("select server, identity, status, message_count, smtp_reply_code, enhanced_status_code, last_error_ip, diagnosis_code from read_parquet('LAKE/queue_snapshots/**/*.parquet', hive_partitioning=true) order by identity")
print(events)
print(queues)
cmdlet = [e for e in events if e[1] == 'MSExchange CmdletLogs']
assert len(cmdlet) > 0 and all(e[4] == 'evtx' for e in cmdlet), events
ex02 = [e for e in events if e[0] == 'EX02']
assert [(e[2], e[3]) for e in ex02] == [(1035, 'AUTH.KERBEROS_CLOCK_SKEW_OR_AD'), (15006, 'RESOURCE.BACKPRESSURE_DISK')], ex02
retry4 = [r for r in queues if r[1] == 'EX01\\4']
assert retry4 == [('EX01', 'EX01\\4', 'Retry', 42, 454, '4.7.0', '10.0.0.12', 'AUTH.KERBEROS_CLOCK_SKEW_OR_AD')], retry4
assert len(queues) == 4, queues
days = q("select distinct date from read_parquet('LAKE/queue_snapshots/**/*.parquet', hive_partitioning=true)")
assert len(days) >= 1
print("ok")
"#;
    let out = Command::new(python())
        .arg("-c")
        .arg(script)
        .arg(&lake)
        .output()
        .unwrap();
    assert!(
        out.status.success() && String::from_utf8_lossy(&out.stdout).contains("ok"),
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn event_12012_alone_and_2004_with_the_send_log_are_one_finding_each() {
    let tmp = tempfile::tempdir().unwrap();
    let alone = tmp.path().join("alone");
    write(
        &alone.join("ex03.xml"),
        "<Event xmlns='http://schemas.microsoft.com/win/2004/08/events/event'><System><Provider Name='MSExchangeTransport'/><EventID Qualifiers='32772'>12012</EventID><Level>3</Level><TimeCreated SystemTime='2026-11-30T06:00:00.0000000Z'/><EventRecordID>7</EventRecordID><Channel>Application</Channel><Computer>EX03.contoso.com</Computer></System><EventData><Data>5A3F00AA</Data></EventData></Event>\n",
    );
    let json = diagnose_json(&alone);
    assert_eq!(codes(&json), ["CERT.INTERNAL_MISSING_IN_AD"], "{json:#}");
    let f = finding(&json, "CERT.INTERNAL_MISSING_IN_AD");
    assert_eq!(f["servers"]["values"], serde_json::json!(["EX03"]));
    assert_eq!(
        f["evidence"][0]["text"],
        "event 12012 (MSExchangeTransport): 5A3F00AA"
    );

    let both = tmp.path().join("both");
    let send = std::fs::read(data("diagnosis").join("EVENT.SMTP_SEND_NEGATIVE_ACK.log")).unwrap();
    write(&both.join("EX01/SmtpSend/SEND20250114-1.LOG"), send);
    // The refusal the send log shows, as event 2004 logs it on the same server.
    write(
        &both.join("EX01 events.txt"),
        "<Event xmlns='http://schemas.microsoft.com/win/2004/08/events/event'><System><Provider Name='MSExchangeTransport'/><EventID Qualifiers='32772'>2004</EventID><Level>3</Level><TimeCreated SystemTime='2025-01-14T09:00:00.0100000Z'/><EventRecordID>48131</EventRecordID><Channel>Application</Channel><Computer>EX01.contoso.com</Computer></System><EventData><Data>Internet</Data><Data>192.0.2.40</Data><Data>550 5.0.350 Remote server returned an error: message rejected by the destination policy</Data></EventData></Event>\n",
    );
    let json = diagnose_json(&both);
    let ack = finding(&json, "EVENT.SMTP_SEND_NEGATIVE_ACK");
    assert_eq!(
        ack["servers"]["values"],
        serde_json::json!(["EX01"]),
        "{ack:#}"
    );
    let inputs: Vec<&str> = ack["evidence"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["input"].as_str().unwrap())
        .collect();
    assert!(
        inputs.contains(&"transport_events") && inputs.contains(&"smtp_protocol"),
        "{ack:#}"
    );
    assert_eq!(codes(&json), ["EVENT.SMTP_SEND_NEGATIVE_ACK"], "{json:#}");
}
