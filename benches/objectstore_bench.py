#!/usr/bin/env python3
"""`mailflow ingest` into the lake's four homes, in turns on the same logs: a local Parquet lake
(the baseline), Delta tables in a local folder, Delta tables in S3 served on loopback by moto's
server, and plain Parquet files in the same S3 (`--table-format parquet`). Wall time, MB/s and peak RSS of each, and each one's ratio to the local lake.

Every run writes into a fresh lake (a new folder, a new bucket prefix), so each one uploads and
commits everything. moto keeps objects in memory in a Python process: the S3 figures are an upper
bound on what the protocol costs mailflow (requests, parts, commits), not a cloud's throughput.

Usage: benches/objectstore_bench.py [--mib 256] [--runs 3] [--bin target/release/mailflow]
       [--dir /tmp/mailflow-os-bench] [--python .venv-delta/bin/python]
Needs the venv of the Delta tests (`.venv-delta`, made by `.ci/run`: moto, boto3).
"""
import argparse
import os
import shutil
import socket
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run(cmd, env=None):
    """Runs cmd, returns (seconds, peak RSS MiB)."""
    start = time.monotonic()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    _, status, usage = os.wait4(proc.pid, 0)
    secs = time.monotonic() - start
    out, err = proc.stdout.read().decode(), proc.stderr.read().decode()
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit(f"{' '.join(cmd)} failed:\n{out}\n{err}")
    return secs, usage.ru_maxrss / 1024


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--mib", type=int, default=256)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--bin", default=os.path.join(ROOT, "target/release/mailflow"))
    ap.add_argument("--dir", default="/tmp/mailflow-os-bench")
    ap.add_argument("--python", default=os.path.join(ROOT, ".venv-delta/bin/python"))
    a = ap.parse_args()

    logs = os.path.join(a.dir, f"logs-{a.mib}m-mixed")
    if not os.path.isdir(logs):
        subprocess.run([a.bin, "generate", "--kind", "mixed", "--servers", "2", "--days", "2",
                        "--bytes", f"{a.mib}M", "--out", logs], check=True, stdout=subprocess.DEVNULL)
    size = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(logs) for f in fs)

    port = free_port()
    moto = subprocess.Popen([os.path.join(os.path.dirname(a.python), "moto_server"), "-H", "127.0.0.1",
                             "-p", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        endpoint = f"http://127.0.0.1:{port}"
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.1)
        subprocess.run([a.python, os.path.join(ROOT, "tests/delta_check.py"), "bucket", endpoint, "bench"],
                       check=True, stdout=subprocess.DEVNULL)
        env = dict(os.environ, AWS_ACCESS_KEY_ID="mailflow-test", AWS_SECRET_ACCESS_KEY="mailflow-test-secret",
                   AWS_REGION="us-east-1", AWS_ENDPOINT=endpoint, AWS_ALLOW_HTTP="true")
        times = {"local parquet": [], "local delta": [], "s3 delta": [], "s3 parquet": []}
        rss = {k: [] for k in times}
        for r in range(a.runs):
            for name in times:
                out = os.path.join(a.dir, f"out-{r}")
                shutil.rmtree(out, ignore_errors=True)
                cmd = [a.bin, "ingest", logs, "--quiet", "--staging", os.path.join(out, "staging")]
                if name == "local parquet":
                    cmd = [a.bin, "ingest", logs, "--quiet", "--parquet", out]
                elif name == "local delta":
                    cmd += ["--parquet", os.path.join(out, "lake"), "--table-format", "delta"]
                elif name == "s3 delta":
                    cmd += ["--parquet", f"s3://bench/run-{r}"]
                else:
                    cmd += ["--parquet", f"s3://bench/plain-{r}", "--table-format", "parquet"]
                secs, peak = run(cmd, env)
                times[name].append(secs)
                rss[name].append(peak)
                shutil.rmtree(out, ignore_errors=True)
    finally:
        moto.kill()
        moto.wait()

    print(f"input: {size / 1e6:.0f} MB of generated mixed logs, {a.runs} runs each in turns")
    print(f"{'':16}{'median s':>10}{'min s':>8}{'max s':>8}{'MB/s':>8}{'peak RSS MiB (max)':>20}{'vs local':>10}")
    base = statistics.median(times["local parquet"])
    for name, t in times.items():
        m = statistics.median(t)
        print(f"{name:16}{m:>10.2f}{min(t):>8.2f}{max(t):>8.2f}{size / 1e6 / m:>8.1f}"
              f"{max(rss[name]):>20.0f}{base / m:>9.2f}x")


if __name__ == "__main__":
    main()
