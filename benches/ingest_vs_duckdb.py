#!/usr/bin/env python3
"""`mailflow ingest` against DuckDB on the same files, in one run (the only comparison that means
anything on a shared machine): wall time, MB/s and peak RSS of each, and the ratio.

DuckDB's side is `read_csv` + `COPY ... TO parquet (COMPRESSION zstd)` with threads=2, given the
column names and types (timestamp, integers) so it skips sniffing: sniffing every file of a
multi-file read costs DuckDB about 0.9 s per 10 MB file here, which would make it look 20x slower
than it is. The five header lines are skipped with `skip=5`, not `comment='#'`, which would also cut
subjects such as `order #88231`.

The two jobs run in turns, `--runs` times each (default 5), and the ratio is taken between the
medians: on a shared machine one run of either side swings by 30%, which a single pair of runs
would report as a speed-up or a regression.

`--fleet` generates tracking logs shaped like a fleet's (`mailflow generate --kind message-tracking
--servers 4 --days 7`: outbound `SEND` rows naming the remote hosts in `server-hostname`, as Exchange
writes them, repeat senders, the working day's traffic curve). `--mixed` generates every kind the
fleet writes (message tracking, SMTP send and receive, connectivity) of two servers over two days;
DuckDB then copies each kind to its own file, as mailflow writes each to its own table.
`--before BINARY` times a second mailflow
build in the same turns (an earlier commit's), for before-and-after figures. `--agent` times
`mailflow run --until-idle` on the same folder too (the agent's backfill: the same rows per table
as `ingest`, checked), for the agent's MB/s against ingest's.

Usage: benches/ingest_vs_duckdb.py [--gib 1] [--runs 5] [--fleet | --mixed] [--before BINARY] [--agent] [--dir /tmp/mailflow-bench] [--python .venv/bin/python]
Needs a release build (`cargo build --release`) and the venv from `.ci/run` (duckdb).
"""
import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TRACKING_COLUMNS = ("date-time,client-ip,client-hostname,server-ip,server-hostname,source-context,connector-id,source,"
                    "event-id,internal-message-id,message-id,network-message-id,recipient-address,recipient-status,"
                    "total-bytes,recipient-count,related-recipient-address,reference,message-subject,sender-address,"
                    "return-path,message-info,directionality,tenant-id,original-client-ip,original-server-ip,"
                    "custom-data,transport-traffic-type,log-id,schema-version").split(",")

DUCKDB_JOB = """
import duckdb, sys
src, dst, names = sys.argv[1], sys.argv[2], sys.argv[3].split(",")
types = {n: "VARCHAR" for n in names}
types.update({"date-time": "TIMESTAMP", "internal-message-id": "BIGINT", "total-bytes": "BIGINT",
              "recipient-count": "INTEGER"})
con = duckdb.connect()
con.execute("SET threads=2")
con.execute(f\"\"\"COPY (SELECT * FROM read_csv('{src}/**/*.LOG', skip=5, header=false, auto_detect=false,
    delim=',', quote='"', escape='"', columns={types!r}))
    TO '{dst}' (FORMAT parquet, COMPRESSION zstd)\"\"\")
print(con.sql(f"SELECT count(*) FROM '{dst}'").fetchall()[0][0])
"""

SMTP_COLUMNS = "date-time,connector-id,session-id,sequence-number,local-endpoint,remote-endpoint,event,data,context"
CONNECTIVITY_COLUMNS = "date-time,session,source,Destination,direction,description"

# Mixed logs: each kind read with its own columns into its own file (what mailflow's tables are).
DUCKDB_MIXED_JOB = """
import duckdb, sys
src, dst, tracking, smtp, connectivity = (sys.argv[1], sys.argv[2], sys.argv[3].split(","),
                                          sys.argv[4].split(","), sys.argv[5].split(","))
con = duckdb.connect()
con.execute("SET threads=2")
total = 0
for glob, names, ints in (("MSGTRK*", tracking, {"internal-message-id": "BIGINT", "total-bytes": "BIGINT",
                                                  "recipient-count": "INTEGER"}),
                          ("RECV*", smtp, {"sequence-number": "BIGINT"}),
                          ("SEND*", smtp, {"sequence-number": "BIGINT"}),
                          ("CONNECTLOG*", connectivity, {})):
    types = {n: "VARCHAR" for n in names}
    types.update({"date-time": "TIMESTAMP"}, **ints)
    out = f"{dst}.{glob.rstrip('*').lower()}.parquet"
    con.execute(f\"\"\"COPY (SELECT * FROM read_csv('{src}/**/{glob}.LOG', skip=5, header=false, auto_detect=false,
        delim=',', quote='"', escape='"', columns={types!r}))
        TO '{out}' (FORMAT parquet, COMPRESSION zstd)\"\"\")
    total += con.sql(f"SELECT count(*) FROM '{out}'").fetchall()[0][0]
print(total)
"""


def run(cmd):
    """Runs cmd, returns (seconds, peak RSS MiB, stdout)."""
    start = time.monotonic()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    secs = time.monotonic() - start
    out, err = proc.stdout.read().decode(), proc.stderr.read().decode()
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit(f"{cmd[0]} failed:\n{out}\n{err}")
    return secs, usage.ru_maxrss / 1024, out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--gib", type=float, default=1.0)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--zstd-level", type=int, default=None,
                    help="mailflow's zstd level (default: its own default, 1); DuckDB writes at zstd's default, 3")
    ap.add_argument("--dir", default="/tmp/mailflow-bench")
    ap.add_argument("--python", default=os.path.join(ROOT, ".venv/bin/python"))
    ap.add_argument("--mailflow", default=os.path.join(ROOT, "target/release/mailflow"))
    ap.add_argument("--fleet", action="store_true", help="fleet-shaped tracking logs (see above)")
    ap.add_argument("--mixed", action="store_true", help="mixed logs of two servers (see above)")
    ap.add_argument("--before", default=None, help="another mailflow binary, timed in the same turns")
    ap.add_argument("--agent", action="store_true",
                    help="also time `mailflow run --until-idle` (the agent reading the folder as a backfill)")
    args = ap.parse_args()
    # The suffix names the generator's version: logs of an older one are not reused.
    shape = "-fleet3" if args.fleet else "-mixed3" if args.mixed else "-tracking3"
    logs = os.path.join(args.dir, f"logs-{args.gib}g{shape}")
    if not os.path.isdir(logs):
        kind, servers, days = ("message-tracking", 4, 7) if args.fleet else \
            ("mixed", 2, 2) if args.mixed else ("message-tracking", 2, 1)
        subprocess.run([args.mailflow, "generate", "--kind", kind, "--bytes", f"{int(args.gib * 1024)}M",
                        "--seed", "1", "--servers", str(servers), "--days", str(days), "--out", logs],
                       check=True)
    size = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(logs) for f in fs)
    out = os.path.join(args.dir, "out")
    mailflow_runs, duckdb_runs, before_runs, agent_runs = [], [], [], []
    for turn in range(max(1, args.runs)):
        shutil.rmtree(out, ignore_errors=True)
        os.makedirs(out)
        level = [] if args.zstd_level is None else ["--zstd-level", str(args.zstd_level)]
        m_secs, m_rss, _ = run([args.mailflow, "ingest", logs, "--parquet", os.path.join(out, "mailflow"), "--quiet",
                                "--threads", "2", "--summary-json", os.path.join(out, "summary.json")] + level)
        counts = json.load(open(os.path.join(out, "summary.json")))["rows"]
        rows = counts.get("message_tracking", 0) + \
            (counts.get("smtp_protocol", 0) + counts.get("connectivity", 0) if args.mixed else 0)
        if args.before:
            shutil.rmtree(os.path.join(out, "before"), ignore_errors=True)
            b_secs, b_rss, _ = run([args.before, "ingest", logs, "--parquet", os.path.join(out, "before"),
                                    "--quiet", "--threads", "2"] + level)
            before_runs.append((b_secs, b_rss))
            parts = {d for d, _, fs in os.walk(os.path.join(out, "before", "message_tracking")) if fs}
            print(f"turn {turn + 1}: before {b_secs:.2f} s, {len(parts)} message_tracking partitions", flush=True)
        if args.agent:
            config = os.path.join(out, "agent.toml")
            with open(config, "w") as f:
                f.write(f"[[sources]]\npaths = ['{logs}']\n[sinks.lake]\ntype = \"parquet\"\n"
                        f"path = '{os.path.join(out, 'agent')}'\n[agent]\nthreads = 2\n"
                        f"state_dir = '{os.path.join(out, 'agent-state')}'\n")
            a_secs, a_rss, _ = run([args.mailflow, "run", "--config", config, "--until-idle",
                                    "--summary-json", os.path.join(out, "agent.json")])
            a_rows = json.load(open(os.path.join(out, "agent.json")))["rows"]
            if a_rows != counts:
                sys.exit(f"rows per table differ: ingest {counts}, agent {a_rows}")
            agent_runs.append((a_secs, a_rss))
            print(f"turn {turn + 1}: agent {a_secs:.2f} s", flush=True)
        if args.mixed:
            d_secs, d_rss, d_out = run([args.python, "-c", DUCKDB_MIXED_JOB, logs, os.path.join(out, "duckdb"),
                                        ",".join(TRACKING_COLUMNS), SMTP_COLUMNS, CONNECTIVITY_COLUMNS])
        else:
            d_secs, d_rss, d_out = run([args.python, "-c", DUCKDB_JOB, logs, os.path.join(out, "duckdb.parquet"),
                                        ",".join(TRACKING_COLUMNS)])
        d_rows = int(d_out.strip().splitlines()[-1])
        if rows != d_rows:
            sys.exit(f"row counts differ: mailflow {rows}, duckdb {d_rows}")
        mailflow_runs.append((m_secs, m_rss))
        duckdb_runs.append((d_secs, d_rss))
        print(f"turn {turn + 1}: mailflow {m_secs:.2f} s, duckdb {d_secs:.2f} s, ratio {d_secs / m_secs:.2f}x",
              flush=True)
    mb = size / 1e6
    what = "mixed" if args.mixed else "message tracking"
    print(f"input: {mb:.0f} MB of generated {what} logs, {rows} rows (duckdb: {d_rows})")
    print(f"mailflow rows per table: {counts}")
    print(f"{'':10} {'median s':>9} {'min s':>7} {'max s':>7} {'MB/s':>7} {'peak RSS MiB (max)':>19}")
    for name, runs in (("mailflow", mailflow_runs), ("duckdb", duckdb_runs), ("before", before_runs),
                       ("agent", agent_runs)):
        if not runs:
            continue
        secs = [s for s, _ in runs]
        med = statistics.median(secs)
        print(f"{name:10} {med:9.2f} {min(secs):7.2f} {max(secs):7.2f} {mb / med:7.1f} {max(r for _, r in runs):19.0f}")
    tracking = os.path.join(out, "mailflow", "message_tracking")
    m_size = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(tracking) for f in fs)
    d_size = os.path.getsize(os.path.join(out, "duckdb.msgtrk.parquet" if args.mixed else "duckdb.parquet"))
    print(f"Parquet size: mailflow message_tracking {m_size / 1e6:.0f} MB, duckdb {d_size / 1e6:.0f} MB "
          f"(mailflow also writes the messages table)")
    m_med = statistics.median(s for s, _ in mailflow_runs)
    d_med = statistics.median(s for s, _ in duckdb_runs)
    print(f"mailflow/duckdb throughput ratio (medians of {len(mailflow_runs)} runs each): {d_med / m_med:.2f}x")
    parts = {d for d, _, fs in os.walk(tracking) if fs}
    print(f"mailflow message_tracking partitions: {len(parts)}")
    if before_runs:
        b_med = statistics.median(s for s, _ in before_runs)
        print(f"before/duckdb throughput ratio: {d_med / b_med:.2f}x; this build is {b_med / m_med:.2f}x faster")
    if agent_runs:
        a_med = statistics.median(s for s, _ in agent_runs)
        print(f"agent (run --until-idle)/duckdb throughput ratio: {d_med / a_med:.2f}x; "
              f"agent/ingest: {m_med / a_med:.2f}x")

if __name__ == "__main__":
    main()
