#!/usr/bin/env python3
"""Ingest time and peak memory against the number of partitions, for the same rows.

Writes message tracking logs of one server whose rows are spread over P days (P partitions;
a log spanning decades, or one with garbage timestamps, does this), for each P given, always
the same number of rows, then times `mailflow ingest` on each, in turns, and prints the time
per row and peak RSS against the smallest P. Run from the repository root after
`cargo build --release`:

    python3 benches/partitions.py --rows 1000000 --partitions 10 1000 20000 --runs 3

`--order interleaved` puts consecutive rows in different partitions (row i on day i mod P), the
worst case for any writer: each batch of rows then touches up to a batch's worth of partitions.
"""
import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from datetime import date, timedelta

HEADER = (
    "#Software: Microsoft Exchange Server\r\n#Version: 15.02.1258.012\r\n"
    "#Log-type: Message Tracking Log\r\n#Date: 2025-01-14T00:00:00.000Z\r\n"
    "#Fields: date-time,client-ip,client-hostname,server-ip,server-hostname,source-context,"
    "connector-id,source,event-id,internal-message-id,message-id,network-message-id,"
    "recipient-address,recipient-status,total-bytes,recipient-count,related-recipient-address,"
    "reference,message-subject,sender-address,return-path,message-info,directionality,tenant-id,"
    "original-client-ip,original-server-ip,custom-data,transport-traffic-type,log-id,"
    "schema-version\r\n"
)

ROWS = [
    # Inbound over SMTP, then delivered, then an outbound SEND naming the remote host in
    # server-hostname, as Exchange writes it.
    "{t},198.51.100.{a},mail{a}.sender.example,10.0.0.5,{srv},08DD{n:012X};{t};0,"
    "{srv}\\Default {srv},SMTP,RECEIVE,{n},<{n}@sender.example>,0b7099ea-cb95-4c2e-{n:012x},"
    "user{a}@contoso.com,,{size},1,,,Quarterly report {n},alice@sender.example,"
    "alice@sender.example,,Incoming,,,,S:DeliveryPriority=Normal,Email,{n:08x},15.02.1258.012",
    "{t},10.0.0.5,{lsrv}.contoso.com,10.0.0.5,{srv},,,STOREDRIVER,DELIVER,{n},<{n}@sender.example>,"
    "0b7099ea-cb95-4c2e-{n:012x},user{a}@contoso.com,,{size},1,,,Quarterly report {n},"
    "alice@sender.example,alice@sender.example,{t};LSRV={lsrv}.contoso.com:TOTAL-HUB=0.1,"
    "Incoming,,,,S:E2ELatency=0.120,Email,{n:08x},15.02.1258.012",
    "{t},10.0.0.5,{srv},203.0.113.{a},mx{r}.remote{r}.example,;250 2.6.0 OK;ClientSubmitTime:,"
    "Outbound,SMTP,SEND,{n},<{n}@contoso.com>,0b7099ea-cb95-4c2e-{n:012x},bob@remote{r}.example,"
    "250 2.1.5 Recipient OK,{size},1,,,Re: report {n},user@contoso.com,user@contoso.com,"
    "{t};SRV={lsrv}.contoso.com:TOTAL-SUB=0.1,Originating,,,,S:E2ELatency=0.2,Email,{n:08x},"
    "15.02.1258.012",
]


def row(i, t, srv="EX01"):
    """The i-th tracking line of server `srv` at time `t`; outbound mail goes to 5,000 remote
    hosts."""
    return ROWS[i % 3].format(
        t=t, n=i, a=i % 250, r=i % 5000, size=5000 + i % 9000, srv=srv, lsrv=srv.lower()
    ) + "\r\n"


class Rolled:
    """Writes one server's tracking lines into files rolled at 10 MiB, as Exchange rolls them."""

    def __init__(self, folder):
        self.folder, self.out, self.size, self.k = folder, None, 0, 0
        os.makedirs(folder)

    def write(self, line):
        if self.out is None or self.size > 10 << 20:
            self.close()
            self.k += 1
            self.out = open(os.path.join(self.folder, f"MSGTRK2025011400-{self.k}.LOG"), "w",
                            newline="")
            self.out.write(HEADER)
            self.size = len(HEADER)
        self.out.write(line)
        self.size += len(line)

    def close(self):
        if self.out:
            self.out.close()


def write_logs(folder, rows, partitions, order):
    """One server folder; row i goes to day i mod P (interleaved) or rows fill the days in turn."""
    out = Rolled(os.path.join(folder, "EX01", "MessageTracking"))
    start = date(1970, 1, 1)
    per = max(1, rows // partitions)
    for i in range(rows):
        day = (i % partitions) if order == "interleaved" else min(i // per, partitions - 1)
        t = f"{start + timedelta(days=day)}T10:{(i // 60) % 60:02d}:{i % 60:02d}.000Z"
        out.write(row(i, t))
    out.close()


def measure(binary, folder, lake):
    """Wall seconds and peak RSS of one ingest (GNU time) into a new folder `lake`, and the
    files it wrote. Lakes are removed only at the end: ext4 allocates inodes more slowly right
    after many were freed, which would charge one run for the cleanup of the one before."""
    lake_tmp = lake
    proc = subprocess.run(
        ["/usr/bin/time", "-f", "%e %M", binary, "ingest", folder, "--parquet", lake_tmp,
         "--quiet"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    if proc.returncode != 0:
        sys.exit(f"ingest failed:\n{proc.stdout}\n{proc.stderr}")
    wall, kib = proc.stderr.strip().splitlines()[-1].split()
    files = sum(len(f) for _, _, f in os.walk(lake_tmp))
    return float(wall), int(kib) / 1024, files


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--partitions", type=int, nargs="+", default=[10, 1000, 20000])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--order", choices=["ordered", "interleaved"], default="ordered")
    ap.add_argument("--binary", default="target/release/mailflow")
    args = ap.parse_args()
    work = tempfile.mkdtemp(prefix="mailflow-partitions-")
    try:
        folders = {}
        for p in args.partitions:
            folders[p] = os.path.join(work, f"logs-{p}")
            write_logs(folders[p], args.rows, p, args.order)
        mb = sum(
            os.path.getsize(os.path.join(d, f))
            for d, _, fs in os.walk(folders[args.partitions[0]]) for f in fs
        ) / 1e6
        print(f"{args.rows} rows ({mb:.0f} MB) per input, {args.order}, {args.runs} runs in turns")
        results = {p: [] for p in args.partitions}
        for run in range(args.runs):
            for p in args.partitions:
                lake = os.path.join(work, f"lake-{p}-{run}")
                results[p].append(measure(args.binary, folders[p], lake))
        base = None
        print("| partitions | files written | wall s (median) | us per row | vs smallest | peak RSS MiB (max) |")
        print("|---|---|---|---|---|---|")
        for p in args.partitions:
            walls = sorted(r[0] for r in results[p])
            wall = walls[len(walls) // 2]
            rss = max(r[1] for r in results[p])
            files = results[p][0][2]
            per_row = wall / args.rows * 1e6
            base = base or per_row
            print(f"| {p} | {files} | {wall:.2f} | {per_row:.2f} | {per_row / base:.2f}x | {rss:.0f} |")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
