//! The diagnosis engine on realistic log lines: every fixture yields exactly its code, the
//! founding cases carry their evidence, healthy traffic (samples and generated logs) gets no
//! diagnosis, and `mailflow diagnose` speaks text and JSON and takes a user catalog.

// Test helpers, not #[test] functions, so clippy's test exemption misses them; a panic here is a
// failed assertion like any other.
#![allow(clippy::unwrap_used)]

mod cli;
mod common;

use std::collections::BTreeSet;
use std::path::Path;

use arrow_array::cast::AsArray;
use arrow_array::types::Int16Type;
use arrow_array::{Array, RecordBatch};
use cli::{data, mailflow, run_mailflow};
use mailflow_enrich::{Catalog, Matcher};

fn matcher() -> Matcher {
    Matcher::new(Catalog::builtin()).unwrap()
}

/// Every code the rows of a file are diagnosed with.
fn codes_in(m: &Matcher, path: &Path) -> BTreeSet<String> {
    let out = common::decode_file(path, 64 * 1024, 4096);
    assert_eq!(
        out.reject_count(),
        0,
        "{}: fixture has rejects",
        path.display()
    );
    let mut codes = BTreeSet::new();
    for (table, batches) in &out.data {
        for b in batches {
            for hit in m.classify(*table, b).into_iter().flatten() {
                codes.insert(m.code(hit.diagnosis));
            }
        }
    }
    codes
}

#[test]
fn every_fixture_yields_exactly_its_code() {
    let m = matcher();
    let fixtures: Vec<_> = common::files_in("diagnosis")
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    assert!(fixtures.len() >= 24, "{} fixtures", fixtures.len());
    let mut seeds = BTreeSet::new();
    for path in &fixtures {
        let want = path.file_stem().unwrap().to_string_lossy().into_owned();
        let got = codes_in(&m, path);
        assert_eq!(got, BTreeSet::from([want.clone()]), "{}", path.display());
        if m.catalog().rule(&want).is_some_and(|r| r.seed) {
            seeds.insert(want.clone());
        }
        // Every fixture's code is in the catalog (or is the generic fallback).
        assert!(
            want.starts_with("ESC.") || m.catalog().rule(&want).is_some(),
            "{want}"
        );
    }
    for seed in [
        "TLS.CERT_NO_PRIVATE_KEY",
        "TLS.CERT_NOT_BOUND_SMTP",
        "AUTH.KERBEROS_CLOCK_SKEW_OR_AD",
        "EVENT.SMTP_SEND_NEGATIVE_ACK",
    ] {
        assert!(seeds.contains(seed), "founding case {seed} has no fixture");
    }
}

#[test]
fn no_certificate_key_is_the_cause_of_the_timeouts_with_its_thumbprint() {
    let out = mailflow(&[
        "diagnose".as_ref(),
        data("diagnosis-linked").as_os_str(),
        "--format".as_ref(),
        "json".as_ref(),
    ]);
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let findings = json["findings"].as_array().unwrap();
    let codes: Vec<&str> = findings
        .iter()
        .map(|f| f["code"].as_str().unwrap())
        .collect();
    assert_eq!(
        codes,
        vec!["TLS.CERT_NO_PRIVATE_KEY", "NET.CONNECT_TIMEOUT"],
        "{json:#}"
    );
    let tls = &findings[0];
    assert_eq!(tls["severity"], "critical");
    assert_eq!(tls["servers"]["values"], serde_json::json!(["EX01"]));
    let thumb = "3F2504E04F8911D39A0C0305E82C3301ABCDEF12";
    assert_eq!(tls["facts"]["certificate thumbprint"]["values"][0], thumb);
    let steps = tls["remediation"].to_string();
    assert!(
        steps.contains(&format!("Enable-ExchangeCertificate -Thumbprint {thumb}")),
        "{steps}"
    );
    let evidence = &tls["evidence"][0];
    assert!(
        evidence["file"]
            .as_str()
            .unwrap()
            .ends_with("SEND20250114-1.LOG")
    );
    assert!(evidence["offset"].as_i64().unwrap() > 0);
    assert_eq!(
        evidence["text"],
        "TLS negotiation failed with error NoCredentials"
    );
    assert!(
        tls["first_seen"]
            .as_str()
            .unwrap()
            .starts_with("2025-01-14T09:00:00")
    );
    let timeout = &findings[1];
    assert_eq!(
        timeout["probably_caused_by"],
        serde_json::json!(["TLS.CERT_NO_PRIVATE_KEY"])
    );
    assert!(
        timeout["evidence"][0]["text"]
            .as_str()
            .unwrap()
            .contains("421 4.4.1 Connection timed out")
    );
}

#[test]
fn diagnose_json_has_the_documented_keys_and_ranks_by_severity() {
    let out = mailflow(&[
        "diagnose".as_ref(),
        data("diagnosis").as_os_str(),
        "--format".as_ref(),
        "json".as_ref(),
    ]);
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let findings = json["findings"].as_array().unwrap();
    assert_eq!(findings.len(), 38);
    let rank = |s: &str| {
        ["critical", "major", "minor", "info"]
            .iter()
            .position(|x| *x == s)
            .unwrap()
    };
    let ranks: Vec<usize> = findings
        .iter()
        .map(|f| rank(f["severity"].as_str().unwrap()))
        .collect();
    assert!(ranks.windows(2).all(|w| w[0] <= w[1]), "{ranks:?}");
    for f in findings {
        for key in [
            "code",
            "severity",
            "count",
            "servers",
            "first_seen",
            "last_seen",
            "evidence",
            "remediation",
        ] {
            assert!(!f[key].is_null(), "{key} missing in {f}");
        }
    }
    // The README and the make_fixtures.py script are not logs: skipped, not a failure.
    assert_eq!(
        json["skipped"].as_array().unwrap().len(),
        2,
        "{}",
        json["skipped"]
    );
}

#[test]
fn text_report_fits_80_columns_and_healthy_logs_say_so() {
    let out = mailflow(&["diagnose".as_ref(), data("diagnosis").as_os_str()]);
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.starts_with("38 problems found in "), "{text}");
    assert!(!text.contains('\x1b'), "no colour when not on a terminal");
    for line in text.lines() {
        // Evidence quotes a log line verbatim; a single long word (a URL) may overrun.
        if line.split_whitespace().all(|w| w.len() < 60) {
            assert!(
                line.chars().count() <= 80,
                "{} columns: {line}",
                line.chars().count()
            );
        }
    }
    let tmp = tempfile::tempdir().unwrap();
    let healthy = tmp.path().join("RECV20250114-1.LOG");
    let fixture =
        std::fs::read_to_string(data("diagnosis").join("AUTH.ANONYMOUS_NOT_PERMITTED.log"))
            .unwrap();
    // Keep the header and the healthy session only.
    let kept: Vec<&str> = fixture
        .lines()
        .filter(|l| l.starts_with('#') || l.contains("08DD34A1B2C3D4F0"))
        .collect();
    std::fs::write(&healthy, kept.join("\r\n")).unwrap();
    let out = mailflow(&["diagnose".as_ref(), healthy.as_os_str()]);
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.starts_with("No problems found: 15 lines from 1 file"),
        "{text}"
    );
}

#[test]
fn a_user_catalog_adds_rules_and_its_mistakes_name_the_key() {
    let tmp = tempfile::tempdir().unwrap();
    let catalog = tmp.path().join("site.toml");
    std::fs::write(
        &catalog,
        r#"
[[rule]]
code = "SITE.GATEWAY_GREYLIST"
title = "The mail gateway greylists us"
severity = "minor"
retry = "transient"
self_heals = "yes"
cause = "gw01 greylists first contact."
evidence = "gw01's log."
remediation = ["Nothing: it retries."]
[[rule.match]]
text = ["Greylisted by gw01"]
"#,
    )
    .unwrap();
    let log = tmp.path().join("SEND20250114-1.LOG");
    let fixture =
        std::fs::read_to_string(data("diagnosis").join("SIZE.MESSAGE_TOO_BIG.log")).unwrap();
    std::fs::write(
        &log,
        fixture.replace(
            "552 5.3.4 Message size exceeds fixed maximum message size",
            "451 4.7.1 Greylisted by gw01 - try later",
        ),
    )
    .unwrap();
    let out = mailflow(&[
        "diagnose".as_ref(),
        log.as_os_str(),
        "--catalog".as_ref(),
        catalog.as_os_str(),
        "--format".as_ref(),
        "json".as_ref(),
    ]);
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["findings"][0]["code"], "SITE.GATEWAY_GREYLIST");
    // Without the user catalog the same line is only the generic code.
    let out = mailflow(&[
        "diagnose".as_ref(),
        log.as_os_str(),
        "--format".as_ref(),
        "json".as_ref(),
    ]);
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["findings"][0]["code"], "ESC.4.7.1");

    std::fs::write(
        &catalog,
        std::fs::read_to_string(&catalog)
            .unwrap()
            .replace("severity = \"minor\"", "severity = \"low\""),
    )
    .unwrap();
    let bad = run_mailflow(&[
        "diagnose".as_ref(),
        log.as_os_str(),
        "--catalog".as_ref(),
        catalog.as_os_str(),
    ]);
    assert!(!bad.status.success());
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(
        err.contains("site.toml") && err.contains("severity"),
        "{err}"
    );
}

/// Whether a row shows a failure by itself, judged without the catalog: a 4xx/5xx reply, a
/// failed/deferred tracking event, or Exchange's own failure wording.
fn failure_rows(table: &str, batch: &RecordBatch) -> Vec<bool> {
    let n = batch.num_rows();
    let text = |name: &str, row: usize| -> String {
        batch
            .column_by_name(name)
            .map(|c| arrow_cast::display::array_value_to_string(c, row).unwrap_or_default())
            .unwrap_or_default()
    };
    let replies = batch
        .column_by_name("smtp_reply_code")
        .map(|c| c.as_primitive::<Int16Type>().clone());
    (0..n)
        .map(|row| {
            let reply = replies
                .as_ref()
                .filter(|r| r.is_valid(row))
                .map(|r| r.value(row));
            let wording = ["failed", "Failed", "error", "Error"];
            match table {
                "message_tracking" => {
                    matches!(
                        text("event_id", row).as_str(),
                        "FAIL" | "DEFER" | "DROP" | "POISONMESSAGE"
                    ) || reply.is_some_and(|r| r >= 400)
                }
                "smtp_protocol" => {
                    reply.is_some_and(|r| r >= 400)
                        || wording.iter().any(|w| {
                            text("context", row).contains(w) || text("data", row).contains(w)
                        })
                }
                _ => wording.iter().any(|w| text("description", row).contains(w)),
            }
        })
        .collect()
}

#[test]
fn healthy_traffic_gets_no_diagnosis() {
    let m = matcher();
    let tmp = tempfile::tempdir().unwrap();
    let generated = tmp.path().join("gen");
    mailflow(&[
        "generate",
        "--kind",
        "mixed",
        "--bytes",
        "3M",
        "--seed",
        "3",
        "--servers",
        "2",
        "--out",
        generated.to_str().unwrap(),
    ]);
    let mut files = common::files_in("samples");
    files.extend(
        walkdir::WalkDir::new(&generated)
            .into_iter()
            .map(|e| e.unwrap().into_path())
            .filter(|p| p.is_file()),
    );
    let (mut diagnosed, mut healthy) = (0, 0);
    for path in files {
        let out = common::decode_file(&path, 64 * 1024, 4096);
        for (table, batches) in &out.data {
            for b in batches {
                let hits = m.classify(*table, b);
                let failures = failure_rows(table.name(), b);
                for (row, (hit, failure)) in hits.iter().zip(failures).enumerate() {
                    if let Some(h) = hit {
                        assert!(
                            failure,
                            "{}: row {row} of {} is diagnosed {} but shows no failure",
                            path.display(),
                            table.name(),
                            m.code(h.diagnosis)
                        );
                        diagnosed += 1;
                    } else if !failure {
                        healthy += 1;
                    }
                }
            }
        }
    }
    // About 3% of the generator's messages meet a failure (and one server's send certificate
    // breaks for two hours); the samples hold a refused connection and two rejected logons.
    assert!(diagnosed > 10, "{diagnosed} diagnosed rows");
    assert!(healthy > 5000, "{healthy} healthy rows");
}

/// Sessions of a set of files, decoded with `batch_size` rows per batch, in file order.
fn sessions_of(files: &[std::path::PathBuf], batch_size: usize) -> Vec<RecordBatch> {
    use mailflow_enrich::sessions::SessionCorrelator;
    let m = matcher();
    let mut c = SessionCorrelator::new(std::time::Duration::from_secs(600));
    let mut out = Vec::new();
    for path in files {
        let decoded = common::decode_file(path, 7, batch_size);
        for b in decoded
            .data
            .get(&mailflow_parser::Table::SmtpProtocol)
            .into_iter()
            .flatten()
        {
            let hits = m.classify(mailflow_parser::Table::SmtpProtocol, b);
            c.add(&m, b, &hits);
            out.extend(c.take(&m, 1).unwrap());
        }
    }
    out.extend(c.finish(&m).unwrap());
    out
}

fn session_rows(batches: &[RecordBatch]) -> Vec<String> {
    let mut rows = Vec::new();
    for b in batches {
        for row in 0..b.num_rows() {
            let cells: Vec<String> = b
                .columns()
                .iter()
                .map(|c| arrow_cast::display::array_value_to_string(c, row).unwrap())
                .collect();
            rows.push(cells.join("|"));
        }
    }
    rows.sort();
    rows
}

#[test]
fn sessions_carry_tls_certificate_and_the_diagnosis_with_its_evidence() {
    let files = [data("diagnosis").join("TLS.CERT_NO_PRIVATE_KEY.log")];
    let batches = sessions_of(&files, 4096);
    let b = arrow_select::concat::concat_batches(&batches[0].schema(), &batches).unwrap();
    assert_eq!(b.num_rows(), 2, "the failing session and the healthy one");
    let col = |name: &str, row: usize| {
        arrow_cast::display::array_value_to_string(b.column_by_name(name).unwrap(), row).unwrap()
    };
    let failing = (0..2)
        .find(|&r| col("diagnosis_code", r) == "TLS.CERT_NO_PRIVATE_KEY")
        .unwrap();
    let healthy = 1 - failing;
    assert_eq!(col("outcome", failing), "deferred");
    assert_eq!(col("starttls_attempted", failing), "true");
    assert_eq!(col("tls_succeeded", failing), "false");
    assert_eq!(
        col("certificate_thumbprint", failing),
        "3F2504E04F8911D39A0C0305E82C3301ABCDEF12"
    );
    assert_eq!(col("remote_ip", failing), "192.0.2.40");
    assert_eq!(col("closed", failing), "true");
    let evidence = col("diagnosis_evidence", failing);
    assert!(
        evidence.contains("NoCredentials")
            && evidence.contains("3F2504E04F8911D39A0C0305E82C3301ABCDEF12"),
        "{evidence}"
    );
    // The healthy session: TLS up, one message, one recipient, no diagnosis.
    assert_eq!(col("outcome", healthy), "delivered");
    assert_eq!(col("tls_succeeded", healthy), "true");
    assert_eq!(col("tls_protocol", healthy), "SP_PROT_TLS1_2_CLIENT");
    assert_eq!(col("tls_cipher", healthy), "CALG_AES_256");
    assert_eq!(col("tls_version", healthy), "1.2");
    assert_eq!(col("tls_bulk_cipher", healthy), "AES256");
    // The line names no hash or key exchange, so no suite is made up.
    assert_eq!(col("tls_cipher_suite", healthy), "");
    assert_eq!(col("mail_from", healthy), "alice@contoso.com");
    assert_eq!(
        (col("recipients", healthy), col("messages", healthy)),
        ("1".into(), "1".into())
    );
    assert_eq!(col("ehlo", healthy), "ex01.contoso.com");
    assert_eq!(col("diagnosis_code", healthy), "");
}

#[test]
fn receive_sessions_carry_the_certificate_the_connector_sent() {
    // The real sample logs the certificate on one line ("Sending certificate Subject Issuer
    // name ..."); every certificate column is filled from it, the names as a list.
    let files = [data("samples").join("smtp-receive.artefacts-help.log")];
    let batches = sessions_of(&files, 4096);
    let b = arrow_select::concat::concat_batches(&batches[0].schema(), &batches).unwrap();
    let row = (0..b.num_rows())
        .find(|&r| {
            let id = b.column_by_name("session_id").unwrap();
            arrow_cast::display::array_value_to_string(id, r).unwrap() == "123453EC62278461"
        })
        .unwrap();
    let col = |name: &str| {
        arrow_cast::display::array_value_to_string(b.column_by_name(name).unwrap(), row).unwrap()
    };
    assert_eq!(col("certificate_subject"), "CN=SERVER-HOSTNAME");
    assert_eq!(col("certificate_issuer"), "CN=SERVER-HOSTNAME");
    assert_eq!(
        col("certificate_serial"),
        "12DEABC6565646512346ABDC13456894"
    );
    assert_eq!(
        col("certificate_thumbprint"),
        "12DEABC6565646512346ABDC1345689413589876"
    );
    assert_eq!(
        col("certificate_names"),
        "[SERVER-HOSTNAME, SERVER-HOSTNAME.DOMAIN.TEST]"
    );
    assert_eq!(col("certificate_not_after"), "2025-01-17T15:15:33Z");
    assert_eq!(col("certificate_not_before"), "2020-01-17T15:15:33Z");
    assert_eq!(col("tls_protocol"), "SP_PROT_TLS1_2_SERVER");
    assert_eq!(col("tls_version"), "1.2");
    // Schannel's algorithm names, normalised beside the raw ones.
    assert_eq!(col("tls_cipher"), "CALG_AES_128");
    assert_eq!(col("tls_key_exchange"), "ECDHE");
    assert_eq!(col("tls_bulk_cipher"), "AES128");
    assert_eq!(col("tls_mac"), "SHA256");
    assert_eq!(col("tls_cipher_suite"), "ECDHE-AES128-SHA256");
}

#[test]
fn sessions_span_batches_and_files() {
    // One receive session cut in two by a log roll: the second file holds its end.
    let tmp = tempfile::tempdir().unwrap();
    let fixture =
        std::fs::read_to_string(data("diagnosis").join("AUTH.CLIENT_CREDENTIALS_REJECTED.log"))
            .unwrap();
    let (header, body): (Vec<&str>, Vec<&str>) = fixture.lines().partition(|l| l.starts_with('#'));
    let cut = body.len() / 3;
    let first = tmp.path().join("RECV2025011409-1.LOG");
    let second = tmp.path().join("RECV2025011409-2.LOG");
    std::fs::write(
        &first,
        [header.clone(), body[..cut].to_vec()].concat().join("\r\n"),
    )
    .unwrap();
    std::fs::write(
        &second,
        [header, body[cut..].to_vec()].concat().join("\r\n"),
    )
    .unwrap();
    let files = [first, second];
    let whole = session_rows(&sessions_of(
        &[data("diagnosis").join("AUTH.CLIENT_CREDENTIALS_REJECTED.log")],
        4096,
    ));
    for batch_size in [1, 4, 8192] {
        let split = session_rows(&sessions_of(&files, batch_size));
        assert_eq!(split.len(), 2, "batch size {batch_size}: {split:#?}");
        // Same sessions; only the lineage (file and offset of the first line) differs.
        let normalise = |rows: Vec<String>| -> Vec<String> {
            rows.into_iter()
                .map(|r| {
                    let mut cells: Vec<&str> = r.split('|').collect();
                    cells.drain(2..4);
                    cells.join("|")
                })
                .collect()
        };
        assert_eq!(
            normalise(split),
            normalise(whole.clone()),
            "batch size {batch_size}"
        );
    }
}

#[test]
fn an_unfinished_session_times_out_or_stays_open_to_the_end() {
    use mailflow_enrich::sessions::SessionCorrelator;
    let m = matcher();
    let path = data("diagnosis").join("AUTH.CLIENT_CREDENTIALS_REJECTED.log");
    // Drop the failing session's disconnect line.
    let text = std::fs::read_to_string(&path).unwrap();
    let kept: Vec<&str> = text
        .lines()
        .filter(|l| !(l.contains("08DD34A1B2C3D4BB") && l.contains(",-,")))
        .collect();
    let tmp = tempfile::tempdir().unwrap();
    let open = tmp.path().join("RECV2025011409-1.LOG");
    std::fs::write(&open, kept.join("\r\n")).unwrap();
    let decoded = common::decode_file(&open, 64 * 1024, 4096);
    let batch = &decoded.data[&mailflow_parser::Table::SmtpProtocol][0];
    let hits = m.classify(mailflow_parser::Table::SmtpProtocol, batch);
    let mut c = SessionCorrelator::new(std::time::Duration::from_secs(600));
    c.add(&m, batch, &hits);
    assert_eq!(
        c.open_sessions(),
        1,
        "the session without its end stays open"
    );
    let closed = c.take(&m, 1).unwrap().unwrap();
    assert_eq!(closed.num_rows(), 1);
    let rest = c.finish(&m).unwrap().unwrap();
    let col = |name: &str| {
        arrow_cast::display::array_value_to_string(rest.column_by_name(name).unwrap(), 0).unwrap()
    };
    assert_eq!(col("closed"), "false");
    assert_eq!(col("diagnosis_code"), "AUTH.CLIENT_CREDENTIALS_REJECTED");
    // With a zero timeout, the next batch from the same server closes it as incomplete.
    let mut c = SessionCorrelator::new(std::time::Duration::ZERO);
    c.add(&m, batch, &hits);
    assert_eq!(c.open_sessions(), 0);
}

#[test]
fn a_message_is_followed_across_servers() {
    let tmp = tempfile::tempdir().unwrap();
    let lake = tmp.path().join("lake");
    let summary = tmp.path().join("summary.json");
    mailflow(&[
        "ingest".as_ref(),
        data("diagnosis-cross-server").as_os_str(),
        "--parquet".as_ref(),
        lake.as_os_str(),
        "--summary-json".as_ref(),
        summary.as_os_str(),
        "--quiet".as_ref(),
    ]);
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&summary).unwrap()).unwrap();
    assert_eq!(json["rows"]["messages"], 1, "{json}");
    let batches = common::read_lake_table(&lake, "messages");
    assert_eq!(batches.len(), 1);
    let b = &batches[0];
    let col = |name: &str| {
        arrow_cast::display::array_value_to_string(b.column_by_name(name).unwrap(), 0).unwrap()
    };
    assert_eq!(col("message_id"), "<x-server@contoso.com>");
    assert_eq!(col("servers"), "[EX01, EX02]");
    assert_eq!(col("events"), "[RECEIVE, SEND, RECEIVE, DELIVER, FAIL]");
    assert_eq!(col("recipients"), "[bob@contoso.com, nobody@contoso.com]");
    assert_eq!(col("recipient_status"), "[delivered, failed]");
    assert_eq!(col("status"), "partially_failed");
    assert_eq!(col("latency_ms"), "4000");
    assert_eq!(col("e2e_latency_ms"), "2500");
    assert_eq!(col("diagnosis_code"), "ADDR.RECIPIENT_NOT_FOUND_ONPREM");
    assert!(col("diagnosis_evidence").contains("RecipNotFound"));
}

#[test]
fn control_characters_from_logs_and_paths_never_reach_the_terminal_raw() {
    // A remote client chooses its EHLO name and the texts it sends, and whoever collected the
    // logs the folder names: ESC, BEL, CR and bidi overrides in any of them are shown escaped.
    let tmp = tempfile::tempdir().unwrap();
    let folder = tmp.path().join("EX01\u{1b}]0;pwned\u{7}/SmtpSend");
    std::fs::create_dir_all(&folder).unwrap();
    let fixture =
        std::fs::read_to_string(data("diagnosis").join("TLS.CERT_NO_PRIVATE_KEY.log")).unwrap();
    let hostile = fixture
        .replace("Internet,", "Inter\u{1b}[2Jnet\u{202e},")
        .replace("mx.example.net", "mx\u{1b}[1A\rFAKE: healthy\u{9b}");
    std::fs::write(folder.join("SEND20250114-1.LOG"), hostile).unwrap();
    std::fs::write(folder.join("notes\u{1b}[31m.txt"), "not a log").unwrap();
    let out = mailflow(&["diagnose".as_ref(), tmp.path().as_os_str()]);
    let (stdout, stderr) = (
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    );
    assert!(stdout.contains("TLS.CERT_NO_PRIVATE_KEY"), "{stdout}");
    for (name, text) in [("stdout", &stdout), ("stderr", &stderr)] {
        let raw: Vec<char> = text
            .chars()
            .filter(|&c| (c.is_control() && c != '\n') || ('\u{202a}'..='\u{202e}').contains(&c))
            .collect();
        assert!(raw.is_empty(), "{name} has raw {raw:?}:\n{text}");
    }
    assert!(stdout.contains("Inter\\x1b[2Jnet\\u{202e}"), "{stdout}");
    assert!(stderr.contains("notes\\x1b[31m.txt"), "{stderr}");
}

/// Exchange numbers the files of one hour `-1`, `-2`, … `-10`, and a session may continue from
/// one file into the next. Read in path order (`-10` before `-2`), a session that crosses from
/// `-9` into `-10` was cut in two. Read by first-row time, each session is one row, whole.
#[test]
fn sessions_that_cross_numbered_files_stay_whole() {
    let tmp = tempfile::tempdir().unwrap();
    let folder = tmp.path().join("logs/EX01/SmtpReceive");
    std::fs::create_dir_all(&folder).unwrap();
    let header = "#Software: Microsoft Exchange Server\r\n#Version: 15.2.1544.4\r\n\
#Log-type: SMTP Receive Protocol Log\r\n#Date: 2025-01-14T09:00:00.000Z\r\n\
#Fields: date-time,connector-id,session-id,sequence-number,local-endpoint,remote-endpoint,event,data,context\r\n";
    let line = |minute: u32, session: u32, seq: u32, event: &str, data: &str| {
        format!(
            "2025-01-14T09:{minute:02}:00.000Z,EX01\\Default Frontend EX01,08DD34A1B2C3{session:04X},{seq},10.0.0.5:25,203.0.113.9:{},{event},{data},\r\n",
            40000 + session
        )
    };
    // File k (1 to 12) holds the end of session k - 1 and the start of session k, a minute
    // apart: every session crosses a file boundary.
    for k in 1..=12u32 {
        let mut text = header.to_string();
        if k > 1 {
            text += &line(k * 2, k - 1, 2, "<", "QUIT");
            text += &line(k * 2, k - 1, 3, "-", "");
        }
        text += &line(k * 2 + 1, k, 0, "+", "");
        text += &line(k * 2 + 1, k, 1, "<", "EHLO mx.example.org");
        std::fs::write(folder.join(format!("RECV2025011409-{k}.LOG")), text).unwrap();
    }
    let lake = tmp.path().join("lake");
    let summary = tmp.path().join("summary.json");
    mailflow(&[
        "ingest".as_ref(),
        tmp.path().join("logs").as_os_str(),
        "--parquet".as_ref(),
        lake.as_os_str(),
        "--summary-json".as_ref(),
        summary.as_os_str(),
        "--threads".as_ref(),
        "1".as_ref(),
        "--quiet".as_ref(),
    ]);
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&summary).unwrap()).unwrap();
    // Sessions 1 to 11 closed whole, session 12 open at the end of the input.
    assert_eq!(json["rows"]["smtp_sessions"], 12, "{json}");
    let sessions = common::read_lake_table(&lake, "smtp_sessions");
    let closed = common::column_strings_all(&sessions, "closed");
    let lines = common::column_strings_all(&sessions, "lines");
    let whole = closed
        .iter()
        .zip(&lines)
        .filter(|(c, l)| *c == "true" && *l == "4")
        .count();
    assert_eq!(whole, 11, "closed {closed:?}, lines {lines:?}");
}
