#!/usr/bin/env python3
"""The Elasticsearch sink end to end: `mailflow ingest` into the lake alone, against the same
ingest with `--elasticsearch` pointed at tests/es_server.py on loopback, in turns, same logs.

The server runs in `--ack-only` mode by default (it unzips and counts each request's items,
then acknowledges them), so what is measured is mailflow's side: encoding, gzip, HTTP, and the
lake's commits waiting for the cluster. `--strict` stores and checks every document as the
tests do (then the Python server is the bottleneck, and the figure is the server's).

Usage: benches/es_bench.py [--mib 256] [--runs 3] [--threads 2] [--strict]
                           [--binary target/release/mailflow]
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--mib", type=int, default=256)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--strict", action="store_true")
    ap.add_argument("--binary", default=os.path.join(ROOT, "target/release/mailflow"))
    ap.add_argument("--python", default=sys.executable)
    args = ap.parse_args()

    work = tempfile.mkdtemp(prefix="es-bench-")
    try:
        logs = os.path.join(work, "logs")
        subprocess.run(
            [args.binary, "generate", "--kind", "mixed", "--bytes", f"{args.mib}M",
             "--servers", "2", "--out", logs],
            check=True, stdout=subprocess.DEVNULL,
        )
        size = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(logs) for f in fs)
        port_file = os.path.join(work, "port")
        server = subprocess.Popen(
            [args.python, os.path.join(ROOT, "tests/es_server.py"), "--port-file", port_file]
            + ([] if args.strict else ["--ack-only"]),
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        try:
            while not os.path.exists(port_file):
                time.sleep(0.05)
            url = "http://127.0.0.1:" + open(port_file).read().strip()
            subprocess.run([args.binary, "es", "setup", "--url", url], check=True,
                           stdout=subprocess.DEVNULL)
            rows = []
            for run in range(args.runs):
                for mode in ("lake", "lake+es"):
                    lake = os.path.join(work, f"lake-{mode}-{run}")
                    summary = os.path.join(work, f"summary-{mode}-{run}.json")
                    cmd = [args.binary, "ingest", logs, "--parquet", lake, "--quiet",
                           "--threads", str(args.threads), "--summary-json", summary]
                    if mode == "lake+es":
                        # A new namespace each run: every document is new to the cluster.
                        cmd += ["--elasticsearch", url, "--es-namespace", f"bench{run}"]
                    t = time.monotonic()
                    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
                    wall = time.monotonic() - t
                    s = json.load(open(summary))
                    docs = sum(v for k, v in s.get("delivered", {}).items()
                               if k.endswith((".stored", ".duplicates")))
                    rows.append((mode, run, wall, sum(s["rows"].values()), docs))
                    shutil.rmtree(lake)
        finally:
            server.kill()
            server.wait()
        print(f"{size / 2**20:.0f} MiB of generated mixed logs, 2 servers, --threads "
              f"{args.threads}, server {'strict' if args.strict else 'ack-only'}")
        print(f"{'run':>3} {'mode':<8} {'seconds':>8} {'MB/s':>7} {'rows':>9} {'docs':>9} {'docs/s':>9}")
        for mode, run, wall, n, docs in rows:
            print(f"{run:>3} {mode:<8} {wall:>8.2f} {size / 1e6 / wall:>7.1f} {n:>9} {docs:>9} "
                  f"{(docs / wall if docs else 0):>9.0f}")
        for run in range(args.runs):
            a = next(r for r in rows if r[0] == "lake" and r[1] == run)
            b = next(r for r in rows if r[0] == "lake+es" and r[1] == run)
            print(f"run {run}: lake+es / lake wall time {b[2] / a[2]:.2f}x; "
                  f"documents {b[4]} of {b[3]} rows")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
