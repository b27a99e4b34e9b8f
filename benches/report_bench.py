#!/usr/bin/env python3
"""`mailflow report` and `mailflow query` on a big lake, in one run.

Builds (once, kept under --dir) a lake from generated logs spread over a year: `mailflow generate
--kind mixed --servers 4 --days 365 --bytes GIB`, then `mailflow ingest`. Then, in turns, --runs
times each:

- `mailflow report --format json` on the whole year, and on one week (`--since`/`--until`): the
  week's time shows the partition pruning (it lists and reads only that week's folders);
- each question of QUESTIONS with `mailflow query --format csv` and with DuckDB (threads=2,
  `read_parquet(..., hive_partitioning = true)` over the same files), each as its own process,
  with peak RSS from wait4.

Medians are compared; ratios above 1 mean mailflow was faster.

Usage: benches/report_bench.py [--gib 10] [--runs 3] [--dir /tmp/mailflow-report-bench] [--python .venv/bin/python] [--bin BINARY]
Needs a release build (`cargo build --release`) and the venv from `.ci/run` (duckdb).
"""
import argparse
import os
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(ROOT, "target/release/mailflow")

QUESTIONS = [
    ("failures per day and server",
     "SELECT date, server, count(*) AS n FROM message_tracking WHERE event_id = 'FAIL' GROUP BY date, server ORDER BY date, server"),
    ("top diagnosis codes in SMTP",
     "SELECT diagnosis_code, count(*) AS n FROM smtp_protocol WHERE diagnosis_code IS NOT NULL GROUP BY diagnosis_code ORDER BY n DESC, diagnosis_code"),
    ("one week's message statuses",
     "SELECT status, count(*) AS n, avg(latency_ms) AS ms FROM messages WHERE date BETWEEN '{w0}' AND '{w1}' GROUP BY status ORDER BY status"),
    ("TLS versions per connector",
     "SELECT connector_id, tls_version, count(*) AS n FROM smtp_sessions GROUP BY connector_id, tls_version ORDER BY n DESC, connector_id, tls_version LIMIT 20"),
]

DUCKDB_JOB = r"""
import duckdb, sys
lake, sql = sys.argv[1], sys.argv[2]
con = duckdb.connect()
con.execute("SET threads=2")
for t in ["message_tracking", "smtp_protocol", "smtp_sessions", "messages"]:
    con.execute(f"CREATE VIEW {t} AS SELECT * FROM read_parquet('{lake}/{t}/date=*/server=*/part-*.parquet', "
                "hive_partitioning = true, hive_types = {'date': DATE, 'server': VARCHAR})")
sql = sql.replace("BETWEEN '", "BETWEEN DATE '").replace("AND '", "AND DATE '")
print(len(con.execute(sql).fetchall()))
"""


def timed(cmd):
    """Wall seconds and peak RSS (MiB) of one process."""
    start = time.monotonic()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    secs = time.monotonic() - start
    if status != 0:
        sys.exit(f"{' '.join(cmd[:4])} failed: {proc.stderr.read().decode()[-2000:]}")
    return secs, usage.ru_maxrss / 1024


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--gib", type=float, default=10)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--dir", default="/tmp/mailflow-report-bench")
    ap.add_argument("--python", default=os.path.join(ROOT, ".venv/bin/python"))
    ap.add_argument("--bin", default=BIN, help="the mailflow binary (default: target/release/mailflow)")
    a = ap.parse_args()
    bin_ = a.bin
    logs = os.path.join(a.dir, f"logs-{a.gib}g-year")
    lake = os.path.join(a.dir, f"lake-{a.gib}g-year")
    if not os.path.isdir(lake):
        if not os.path.isdir(logs):
            print(f"generating {a.gib} GiB over 365 days into {logs}", flush=True)
            subprocess.run([bin_, "generate", "--kind", "mixed", "--servers", "4", "--days", "365",
                            "--bytes", f"{int(a.gib * (1 << 30))}", "--out", logs], check=True)
        print(f"ingesting into {lake}", flush=True)
        t, _ = timed([bin_, "ingest", logs, "--parquet", lake, "--quiet"])
        print(f"ingest: {t:.1f} s", flush=True)
    size = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(lake) for f in fs)
    files = sum(1 for d, _, fs in os.walk(lake) for f in fs if f.endswith(".parquet"))
    days = sorted(d[5:] for d in os.listdir(os.path.join(lake, "messages")) if d.startswith("date="))
    w0, w1 = days[len(days) // 2], days[min(len(days) // 2 + 6, len(days) - 1)]
    print(f"lake: {size / 1e9:.2f} GB in {files} files, {days[0]} to {days[-1]}; the week: {w0} to {w1}")

    jobs = {
        "report, the year": [bin_, "report", "--lake", lake, "--format", "json", "--out", os.devnull],
        "report, one week": [bin_, "report", "--lake", lake, "--format", "json", "--out", os.devnull,
                             "--since", w0, "--until", w1],
    }
    for name, sql in QUESTIONS:
        sql = sql.format(w0=w0, w1=w1)
        jobs[f"query: {name}"] = [bin_, "query", "--lake", lake, "--format", "csv", "--out", os.devnull, sql]
        jobs[f"duckdb: {name}"] = [a.python, "-c", DUCKDB_JOB, lake, sql]
    results = {k: [] for k in jobs}
    for r in range(a.runs):
        for name, cmd in jobs.items():
            results[name].append(timed(cmd))
        print(f"round {r + 1} of {a.runs} done", flush=True)
    print(f"\n{'job':<44} {'median s':>9} {'min s':>7} {'max s':>7} {'peak RSS MiB':>13}")
    med = {}
    for name, rs in results.items():
        ts = [t for t, _ in rs]
        med[name] = statistics.median(ts)
        print(f"{name:<44} {med[name]:>9.2f} {min(ts):>7.2f} {max(ts):>7.2f} {max(m for _, m in rs):>13.0f}")
    print(f"\nyear / week: {med['report, the year'] / med['report, one week']:.1f}x the time")
    for name, _ in QUESTIONS:
        q, d = med[f"query: {name}"], med[f"duckdb: {name}"]
        print(f"{name}: mailflow/duckdb throughput ratio {d / q:.2f}x")


if __name__ == "__main__":
    main()
