//! Helpers for tests that run the real `mailflow` binary and the real query engines.
// Not every test file uses every helper.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The Python that has duckdb and pyspark: `MAILFLOW_PYTHON` (set by `.ci/run`), else the
/// project's `.venv`, else `python3`. A missing engine then fails the test that needs it.
pub fn python() -> String {
    std::env::var("MAILFLOW_PYTHON").unwrap_or_else(|_| {
        let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python");
        if venv.exists() {
            venv.to_string_lossy().into_owned()
        } else {
            "python3".into()
        }
    })
}

/// A script under `tests/`.
pub fn script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join(name)
}

/// `tests/data/<sub>`.
pub fn data(sub: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(sub)
}

pub fn mailflow_command() -> Command {
    Command::new(env!("CARGO_BIN_EXE_mailflow"))
}

pub fn run_mailflow<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> Output {
    mailflow_command()
        .args(args)
        .output()
        .expect("run mailflow")
}

/// Runs mailflow and requires it to succeed.
pub fn mailflow<S: AsRef<std::ffi::OsStr> + std::fmt::Debug>(args: &[S]) -> Output {
    let out = run_mailflow(args);
    assert!(
        out.status.success(),
        "mailflow {args:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Runs a Python script from `tests/` and returns its stdout; fails with its output otherwise.
pub fn python_script<S: AsRef<std::ffi::OsStr>>(name: &str, args: &[S]) -> String {
    let out = Command::new(python())
        .arg(script(name))
        .args(args)
        .output()
        .expect(
            "python3 must be installed (bash .ci/run sets up the venv with duckdb and pyspark)",
        );
    assert!(
        out.status.success(),
        "{name} failed (are duckdb and pyspark installed? `bash .ci/run` installs them):\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `mailflow generate --kind mixed --bytes BYTES --servers 2 --out OUT` and `extra` flags.
#[allow(dead_code)] // not every test binary that includes this module generates logs
pub fn generate_mixed(out: &Path, bytes: &str, extra: &[&str]) {
    let fixed = [
        "generate",
        "--kind",
        "mixed",
        "--bytes",
        bytes,
        "--servers",
        "2",
    ];
    let mut args: Vec<&std::ffi::OsStr> = fixed.iter().map(std::ffi::OsStr::new).collect();
    args.extend(extra.iter().map(std::ffi::OsStr::new));
    args.push(std::ffi::OsStr::new("--out"));
    args.push(out.as_os_str());
    mailflow(&args);
}
