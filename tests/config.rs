//! `mailflow.toml` as an admin writes it, mistakes included: `mailflow validate` names the
//! file, the key and what is wrong, and `mailflow ingest --config` reads what the file says.
#![allow(clippy::unwrap_used)]

mod cli;
mod common;

use std::path::Path;

use cli::{mailflow, run_mailflow};

/// `mailflow validate` of `text` (written to `dir/mailflow.toml`): (success, stdout + stderr).
fn validate(dir: &Path, text: &str, env: &[(&str, &str)]) -> (bool, String) {
    let path = dir.join("mailflow.toml");
    std::fs::write(&path, text).unwrap();
    let out = cli::mailflow_command()
        .args(["validate", "--config"])
        .arg(&path)
        .envs(env.iter().copied())
        .env_remove("MAILFLOW_TEST_UNSET")
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

const SINK: &str = "[sinks.lake]\ntype = \"parquet\"\npath = \"/tmp/lake\"\n";

#[test]
fn five_typical_mistakes_are_named_with_file_key_and_line() {
    let tmp = tempfile::tempdir().unwrap();
    let cases: [(&str, &[&str]); 6] = [
        // A misspelt key: not ignored, and the keys it could have been are listed.
        (
            "[[sources]]\npreset = \"message-tracking\"\nignore_oldr = \"30d\"\n",
            &[
                "mailflow.toml:3",
                "unknown field `ignore_oldr`",
                "ignore_older",
            ],
        ),
        // A preset that does not exist.
        (
            "[[sources]]\npreset = \"hub-transport\"\n",
            &[
                "mailflow.toml:2",
                "unknown variant `hub-transport`",
                "smtp-hub",
            ],
        ),
        // A secret from an environment variable that is not set.
        (
            "[[sources]]\npaths = [\"${MAILFLOW_TEST_UNSET}\"]\n",
            &["mailflow.toml:2", "MAILFLOW_TEST_UNSET is not set"],
        ),
        // A glob that does not compile, by its place in the list.
        (
            "[[sources]]\npreset = \"smtp-hub\"\ninclude = [\"*.LOG\", \"RECV[0-9\"]\n",
            &["sources[0].include[1]", "\"RECV[0-9\"", "not a glob"],
        ),
        // A duration in words the parser does not know.
        (
            "[[sources]]\npreset = \"connectivity\"\nignore_older = \"30 dayz\"\n",
            &["mailflow.toml:3", "\"30 dayz\" is not a duration"],
        ),
        // Front End folders on a version that has none.
        (
            "[exchange]\nversion = 2010\n[[sources]]\npreset = \"smtp-frontend\"\n",
            &["sources[0].preset", "came with 2013"],
        ),
    ];
    for (text, wanted) in cases {
        let (ok, out) = validate(tmp.path(), &(text.to_string() + SINK), &[]);
        assert!(!ok, "accepted:\n{text}");
        for w in wanted {
            assert!(out.contains(w), "{w:?} missing from:\n{out}\nfor:\n{text}");
        }
    }
    // The agent's settings: a misspelt key, an address without a port, a zero interval.
    let agent_cases: [(&str, &[&str]); 4] = [
        (
            "[agent]\npoll_intervall = \"1s\"\n",
            &["unknown field `poll_intervall`", "poll_interval"],
        ),
        (
            "[agent]\nmetrics_addr = \"localhost\"\n",
            &[
                "agent.metrics_addr",
                "\"localhost\" is not an address and port",
            ],
        ),
        (
            "[agent]\ncheckpoint_interval = \"0s\"\n",
            &["agent.checkpoint_interval", "longer than zero"],
        ),
        (
            "[agent]\nread_from = \"middle\"\n",
            &["unknown variant `middle`", "beginning", "end"],
        ),
    ];
    for (agent, wanted) in agent_cases {
        let text = format!("[[sources]]\npreset = \"smtp-hub\"\n{SINK}{agent}");
        let (ok, out) = validate(tmp.path(), &text, &[]);
        assert!(!ok, "accepted:\n{text}");
        for w in wanted {
            assert!(out.contains(w), "{w:?} missing from:\n{out}\nfor:\n{text}");
        }
    }
    // No sink at all, and a source with nothing to read.
    let (ok, out) = validate(tmp.path(), "[[sources]]\npreset = \"pop-imap\"\n", &[]);
    assert!(!ok && out.contains("no [sinks.NAME]"), "{out}");
    let (ok, out) = validate(
        tmp.path(),
        &("[[sources]]\ninclude = [\"*.LOG\"]\n".to_string() + SINK),
        &[],
    );
    assert!(!ok && out.contains("sources[0]: give a `preset`"), "{out}");
}

#[test]
fn the_shipped_example_is_valid_and_resolves_exchange_folders() {
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/mailflow.toml");
    let out = mailflow(&[
        "validate".as_ref(),
        "--config".as_ref(),
        example.as_os_str(),
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("valid"), "{text}");
    assert!(
        text.contains("Logs/MessageTracking") || text.contains(r"Logs\MessageTracking"),
        "{text}"
    );
    assert!(
        text.contains(r"mailflow\lake"),
        "the default after :- is used: {text}"
    );
}

#[test]
fn the_example_elasticsearch_sink_is_valid_once_uncommented() {
    let tmp = tempfile::tempdir().unwrap();
    let example = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/mailflow.toml"),
    )
    .unwrap();
    // The block from `# [sinks.search]` to the next blank line, without its first `# `.
    let start = example.find("# [sinks.search]").unwrap();
    let end = start + example[start..].find("\n\n").unwrap();
    let block: String = example[start..end]
        .lines()
        .map(|l| l.strip_prefix("# ").unwrap_or(l))
        .collect::<Vec<_>>()
        .join("\n");
    let text = example.replacen(&example[start..end], &block, 1);
    let (ok, out) = validate(
        tmp.path(),
        &text,
        &[("MAILFLOW_ES_PASSWORD", "a-secret-value")],
    );
    assert!(ok, "{out}");
    assert!(
        out.contains("sinks.search: elasticsearch at https://es01.contoso.com:9200"),
        "{out}"
    );
    assert!(!out.contains("a-secret-value"), "{out}");
}

#[test]
fn elasticsearch_mistakes_are_named_by_key() {
    let tmp = tempfile::tempdir().unwrap();
    let source = "[[sources]]\npaths = [\"/tmp\"]\n";
    let cases: [(&str, &str); 6] = [
        (
            "url = \"https://elastic:hunter2@es01:9200\"",
            "sinks.search: url holds credentials",
        ),
        (
            "url = \"es01:9200\"",
            "sinks.search: url \"es01:9200\" is not an http:// or https:// address",
        ),
        (
            "url = \"https://es01:9200\"\nuser = \"mailflow\"",
            "sinks.search.password: a user needs its password",
        ),
        (
            "url = \"https://es01:9200\"\nnamespace = \"Prod-EU\"",
            "sinks.search: namespace \"Prod-EU\": lower-case letters, digits and `_` only",
        ),
        (
            "url = \"https://es01:9200\"\nmax_age = \"soon\"",
            "\"soon\" is not a duration",
        ),
        (
            "url = \"https://es01:9200\"\napi_key = \"k\"\nuser = \"u\"\npassword = \"p\"",
            "sinks.search.api_key: give an api_key or a user and password, not both",
        ),
    ];
    for (keys, want) in cases {
        let text = format!("{source}{SINK}\n[sinks.search]\ntype = \"elasticsearch\"\n{keys}\n");
        let (ok, out) = validate(tmp.path(), &text, &[]);
        assert!(!ok, "{keys}: accepted");
        assert!(out.contains(want), "{keys}: {out}");
        assert!(!out.contains("hunter2"), "{out}");
    }
}

#[test]
fn ingest_reads_what_the_config_names() {
    let tmp = tempfile::tempdir().unwrap();
    let logs = tmp.path().join("logs");
    // Two files the globs keep, one they drop, and a folder of a preset that is not here.
    for (name, keep) in [
        ("RECV2025011409-1.LOG", true),
        ("RECV2025011409-2.LOG", true),
        ("notes.txt", false),
    ] {
        let src = cli::data("samples").join("smtp-receive.artefacts-help.log");
        let mut text = std::fs::read_to_string(&src).unwrap();
        if !keep {
            text = text.replace("2023-01-11", "2023-01-12");
        }
        let to = logs.join("EX07").join(name);
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        // Each file its own header date, so each is its own file.
        std::fs::write(&to, text.replacen("#Date: ", &format!("#Date: {name}"), 1)).unwrap();
    }
    let lake = tmp.path().join("lake");
    let config = format!(
        "[exchange]\ninstall_path = '{}'\n\n[[sources]]\npreset = \"connectivity\"\n\n[[sources]]\npaths = ['{}']\ninclude = [\"recv*.log\"]\nexclude = [\"*-2.LOG\"]\nserver = \"ex07.contoso.com\"\n\n[sinks.lake]\ntype = \"parquet\"\npath = '${{LAKE}}'\nmax_file_rows = 1000\n",
        tmp.path().join("no-exchange-here").display(),
        logs.display()
    );
    let path = tmp.path().join("mailflow.toml");
    std::fs::write(&path, config).unwrap();
    let out = cli::mailflow_command()
        .args(["ingest", "--quiet", "--config"])
        .arg(&path)
        .env("LAKE", &lake)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // One file of three: `notes.txt` is not included, `-2` is excluded.
    assert!(stdout.starts_with("1 files"), "{stdout}");
    let servers: Vec<String> = walkdir::WalkDir::new(lake.join("smtp_protocol"))
        .into_iter()
        .filter_map(|e| {
            let n = e.ok()?.file_name().to_string_lossy().into_owned();
            Some(n.strip_prefix("server=")?.to_string())
        })
        .collect();
    assert!(
        !servers.is_empty() && servers.iter().all(|s| s == "EX07"),
        "{servers:?}"
    );
    // The command line still wins: --parquet elsewhere.
    let other = tmp.path().join("other");
    let out = run_mailflow(&[
        "ingest".as_ref(),
        "--quiet".as_ref(),
        "--config".as_ref(),
        path.as_os_str(),
        "--parquet".as_ref(),
        other.as_os_str(),
    ]);
    assert!(
        !out.status.success(),
        "LAKE is unset here, so the config is invalid"
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("LAKE is not set"), "{stderr}");
}

#[test]
fn with_json_logs_warnings_and_the_error_are_json_lines() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(tmp.path().join("notes.txt"), "not a log\n").unwrap();
    let bad = tmp.path().join("bad.toml");
    std::fs::write(&bad, "[[sources]]\npreset = \"pop-imap\"\n").unwrap();
    let out = run_mailflow(&[
        "--log-format".as_ref(),
        "json".as_ref(),
        "ingest".as_ref(),
        tmp.path().as_os_str(),
        "--config".as_ref(),
        bad.as_os_str(),
    ]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<serde_json::Value> = stderr
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    let error = lines.last().unwrap();
    assert_eq!(error["level"], "ERROR", "{stderr}");
    assert!(
        error["fields"]["error"]
            .as_str()
            .unwrap()
            .contains("no [sinks.NAME]"),
        "{stderr}"
    );
}

#[test]
fn diagnose_reads_what_the_config_names() {
    let tmp = tempfile::tempdir().unwrap();
    let config = tmp.path().join("mailflow.toml");
    std::fs::write(
        &config,
        format!(
            "[[sources]]\npaths = ['{}']\n\n[sinks.lake]\ntype = \"parquet\"\npath = '{}'\n",
            cli::data("diagnosis-linked").display(),
            tmp.path().join("lake").display()
        ),
    )
    .unwrap();
    let by_config = mailflow(&[
        "diagnose".as_ref(),
        "--format".as_ref(),
        "json".as_ref(),
        "--config".as_ref(),
        config.as_os_str(),
    ]);
    let by_path = mailflow(&[
        "diagnose".as_ref(),
        "--format".as_ref(),
        "json".as_ref(),
        cli::data("diagnosis-linked").as_os_str(),
    ]);
    let findings = |out: &std::process::Output| -> serde_json::Value {
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()["findings"].clone()
    };
    assert!(
        !findings(&by_config).as_array().unwrap().is_empty(),
        "{}",
        String::from_utf8_lossy(&by_config.stdout)
    );
    assert_eq!(findings(&by_config), findings(&by_path));
}
