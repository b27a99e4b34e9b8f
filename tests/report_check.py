"""Checks `mailflow report` and `mailflow query` against real DuckDB on the same lake.

Every aggregate of the report is computed here again, independently: DuckDB's own SQL over the
Hive-partitioned files, and in Python what the report finishes in Rust (weeks, trends,
nearest-rank percentiles, days to expiry). Nothing is shared with mailflow but the definitions.

Usage:
  report_check.py report LAKE REPORT_JSON [--since D] [--until D] [--server S ...]
  report_check.py query LAKE QUESTIONS_JSON   (a list of {"duckdb": SQL, "result": NDJSON path})
Prints one line per check; exits 1 on the first difference, with both sides.
"""
import argparse
import datetime as dt
import glob
import json
import math
import os
import sys

import duckdb

TABLES = [
    "message_tracking", "smtp_protocol", "connectivity", "pop_imap_protocol", "agent_log",
    "transport_events", "queue_snapshots", "rejects", "smtp_sessions", "messages",
]
DIAGNOSED = ["message_tracking", "smtp_protocol", "connectivity", "transport_events", "queue_snapshots"]


def fail(what, ours, theirs):
    print(f"MISMATCH in {what}:\n  mailflow: {ours!r}\n  duckdb:   {theirs!r}")
    sys.exit(1)


def connect(lake, since=None, until=None, servers=()):
    con = duckdb.connect()
    present = []
    for t in TABLES:
        files = glob.glob(f"{lake}/{t}/date=*/server=*/part-*.parquet")
        cond = ["TRUE"]
        if since:
            cond.append(f"date >= DATE '{since}'")
        if until:
            cond.append(f"date <= DATE '{until}'")
        if servers:
            names = ", ".join("'" + s.lower().replace("'", "''") + "'" for s in servers)
            cond.append(f"lower(server) IN ({names})")
        if files:
            con.execute(
                f"CREATE VIEW {t} AS SELECT * FROM read_parquet('{lake}/{t}/date=*/server=*/part-*.parquet', "
                f"hive_partitioning = true, union_by_name = true, "
                f"hive_types = {{'date': DATE, 'server': VARCHAR}}) WHERE {' AND '.join(cond)}"
            )
            present.append(t)
    return con, present


def q(con, sql):
    return con.execute(sql).fetchall()


def iso(ms):
    if ms is None:
        return None
    return dt.datetime.fromtimestamp(ms / 1000, dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def check_report(args):
    report = json.load(open(args.report))
    con, present = connect(args.lake, args.since, args.until, args.server)
    has = set(present)

    # Input: rows per table and the days and servers that hold rows.
    for t in report["input"]["tables"]:
        rows = q(con, f"SELECT count(*) FROM {t['table']}")[0][0] if t["table"] in has else 0
        if t["rows"] != rows:
            fail(f"input rows of {t['table']}", t["rows"], rows)
    days, servers = set(), set()
    for t in present:
        days.update(r[0] for r in q(con, f"SELECT DISTINCT date FROM {t}"))
        servers.update(r[0] for r in q(con, f"SELECT DISTINCT server FROM {t}"))
    first, last = (min(days), max(days)) if days else (None, None)
    if report["input"]["first_day"] != (str(first) if first else None) or report["input"]["last_day"] != (
        str(last) if last else None
    ):
        fail("input days", (report["input"]["first_day"], report["input"]["last_day"]), (first, last))
    if sorted(report["input"]["servers"]) != sorted(servers):
        fail("input servers", report["input"]["servers"], sorted(servers))
    print(f"input: {len(present)} tables, {first} to {last}, {len(servers)} servers")

    # Volume.
    want = []
    if "message_tracking" in has:
        want = [
            {"date": str(r[0]), "server": r[1], "received": r[2], "sent": r[3], "delivered": r[4], "failed": r[5], "deferred": r[6]}
            for r in q(con, """
                SELECT date, server,
                  count(*) FILTER (event_id = 'RECEIVE'), count(*) FILTER (event_id = 'SEND'),
                  count(*) FILTER (event_id = 'DELIVER'), count(*) FILTER (event_id = 'FAIL'),
                  count(*) FILTER (event_id = 'DEFER')
                FROM message_tracking GROUP BY ALL ORDER BY date, server""")
        ]
    if report["volume"] != want:
        fail("volume", report["volume"], want)
    print(f"volume: {len(want)} day-server rows equal")

    # Rates.
    want = []
    if "messages" in has:
        for d, n, f, de in q(con, """
                SELECT date, count(*), count(*) FILTER (status IN ('failed', 'partially_failed')),
                  count(*) FILTER (status = 'deferred') FROM messages GROUP BY date ORDER BY date"""):
            want.append({"date": str(d), "messages": n, "failed": f, "deferred": de})
    ours = [{k: r[k] for k in ("date", "messages", "failed", "deferred")} for r in report["rates"]]
    if ours != want:
        fail("rates", ours, want)
    for r in report["rates"]:
        if not math.isclose(r["failure_rate"], r["failed"] / r["messages"]) or not math.isclose(
            r["deferral_rate"], r["deferred"] / r["messages"]
        ):
            fail("rate arithmetic", r, None)
    print(f"rates: {len(want)} days equal")

    # Diagnosis codes per week, with trends computed here.
    per_day = []
    for t in DIAGNOSED:
        if t in has:
            per_day += q(con, f"SELECT diagnosis_code, date, count(*) FROM {t} WHERE diagnosis_code IS NOT NULL GROUP BY ALL")
    weeks = []
    if first:
        lo = max(first, dt.date.fromisoformat(args.since)) if args.since else first
        hi = min(last, dt.date.fromisoformat(args.until)) if args.until else last
        w = lo - dt.timedelta(days=lo.weekday())
        while w <= hi:
            weeks.append(w)
            w += dt.timedelta(days=7)
    if report["weeks"] != [str(w) for w in weeks]:
        fail("weeks", report["weeks"], [str(w) for w in weeks])
    codes = {}
    for code, d, n in per_day:
        idx = max(i for i, w in enumerate(weeks) if w <= d)
        codes.setdefault(code, [0] * len(weeks))[idx] += n
    top = sorted(codes.items(), key=lambda kv: (-sum(kv[1]), kv[0]))[:10]

    def trend(per_week):
        if len(per_week) < 2:
            return "-"
        days_in = [sum(1 for i in range(7) if lo <= w + dt.timedelta(days=i) <= hi) for w in weeks]
        before, last_n = per_week[:-1], per_week[-1]
        if sum(before) == 0:
            return "new" if last_n > 0 else "steady"
        rb = sum(before) / max(sum(days_in[:-1]), 1)
        rl = last_n / max(days_in[-1], 1)
        return "growing" if rl > 1.5 * rb else "fading" if rl < 0.5 * rb else "steady"

    want = [{"code": c, "total": sum(v), "per_week": v, "trend": trend(v)} for c, v in top]
    ours = [{k: c[k] for k in ("code", "total", "per_week", "trend")} for c in report["codes"]]
    if ours != want:
        fail("codes", ours, want)
    if any(not c["title"] for c in report["codes"]):
        fail("code titles", report["codes"], "a title for each")
    print(f"codes: top {len(want)} of {len(codes)} equal, trends {[c['trend'] for c in want]}")

    # Domains and connectors.
    want = []
    if "message_tracking" in has:
        want = [
            {"domain": r[0], "failed": r[1], "deferred": r[2]}
            for r in q(con, """
                SELECT lower(split_part(r, '@', 2)) AS dom, count(*) FILTER (event_id = 'FAIL') AS f,
                  count(*) FILTER (event_id = 'DEFER') AS d
                FROM (SELECT event_id, unnest(recipient_address) AS r FROM message_tracking
                      WHERE event_id IN ('FAIL', 'DEFER'))
                WHERE dom <> '' GROUP BY dom ORDER BY f + d DESC, dom LIMIT 15""")
        ]
    if report["domains"] != want:
        fail("domains", report["domains"], want)
    print(f"domains: {len(want)} equal")
    sess = "smtp_sessions" in has
    want = []
    if sess:
        want = [
            {"direction": r[0], "connector": r[1], "sessions": r[2], "failed": r[3], "deferred": r[4]}
            for r in q(con, """
                SELECT coalesce(direction, ''), coalesce(connector_id, ''), count(*),
                  count(*) FILTER (outcome = 'failed') AS f, count(*) FILTER (outcome = 'deferred') AS d
                FROM smtp_sessions GROUP BY ALL HAVING f + d > 0
                ORDER BY f + d DESC, 1, 2 LIMIT 15""")
        ]
    if report["connectors"] != want:
        fail("connectors", report["connectors"], want)
    print(f"connectors: {len(want)} equal")

    # TLS.
    want = []
    if sess:
        want = [
            {"date": str(r[0]), "version": r[1], "sessions": r[2]}
            for r in q(con, """SELECT date, coalesce(tls_version, 'unknown') AS v, count(*) FROM smtp_sessions
                               WHERE tls_succeeded GROUP BY ALL ORDER BY date, v""")
        ]
    if report["tls_versions"] != want:
        fail("tls_versions", report["tls_versions"], want)
    problems = {}
    if sess:
        for d, a, f in q(con, """SELECT date, count(*) FILTER (starttls_attempted),
                                   count(*) FILTER (starttls_attempted AND NOT tls_succeeded)
                                 FROM smtp_sessions GROUP BY date"""):
            problems[str(d)] = {"date": str(d), "starttls": a, "tls_failed": f, "certificate_diagnoses": 0}
    for code, d, n in per_day:
        if code.startswith(("TLS.", "CERT.")):
            p = problems.setdefault(str(d), {"date": str(d), "starttls": 0, "tls_failed": 0, "certificate_diagnoses": 0})
            p["certificate_diagnoses"] += n
    want = [problems[k] for k in sorted(problems)]
    if report["tls_problems"] != want:
        fail("tls_problems", report["tls_problems"], want)
    want = []
    if sess:
        want = [
            {"suite": r[0], "sessions": r[1]}
            for r in q(con, """SELECT coalesce(tls_cipher_suite, 'unknown') AS s, count(*) AS n FROM smtp_sessions
                               WHERE tls_succeeded GROUP BY s ORDER BY n DESC, s LIMIT 10""")
        ]
    if report["ciphers"] != want:
        fail("ciphers", report["ciphers"], want)
    want = []
    if sess:
        end = dt.datetime.combine(hi + dt.timedelta(days=1), dt.time(), dt.timezone.utc) if first else None
        for r in q(con, """
                SELECT coalesce(direction, ''), coalesce(connector_id, ''), certificate_thumbprint,
                  max(certificate_subject), epoch_ms(max(certificate_not_after)) AS na, count(*),
                  epoch_ms(min(timestamp)), epoch_ms(max(timestamp))
                FROM smtp_sessions WHERE certificate_thumbprint IS NOT NULL GROUP BY ALL
                ORDER BY na NULLS LAST, 1, 2, 3 LIMIT 50"""):
            left = None
            if r[4] is not None and end is not None:
                left = (r[4] - int(end.timestamp() * 1000)) // 86_400_000
            want.append({
                "direction": r[0], "connector": r[1], "thumbprint": r[2], "subject": r[3],
                "not_after": iso(r[4]), "days_left": left, "sessions": r[5],
                "first_seen": iso(r[6]), "last_seen": iso(r[7]),
            })
    if report["certificates"] != want:
        fail("certificates", report["certificates"], want)
    print(f"tls: {len(report['tls_versions'])} version rows, {len(want)} certificates equal")

    # Latency: nearest rank, computed here from every value.
    want = []
    if "messages" in has:
        by_day = {}
        for d, ms in q(con, """SELECT date, coalesce(e2e_latency_ms, latency_ms) FROM messages
                               WHERE status = 'delivered'"""):
            by_day.setdefault(d, []).append(ms)
        for d in sorted(by_day):
            v = sorted(by_day[d])
            rank = lambda p: v[math.ceil(p * len(v) / 100) - 1]
            want.append({"date": str(d), "messages": len(v), "p50_ms": rank(50), "p95_ms": rank(95), "p99_ms": rank(99)})
    if report["latency"] != want:
        fail("latency", report["latency"], want)
    print(f"latency: {len(want)} days equal")

    # Findings: each code's count is the number of records diagnosed with it, minus none.
    counts = {}
    for code, _, n in per_day:
        counts[code] = counts.get(code, 0) + n
    for f in report["findings"]:
        folded = sum(int(a.rsplit("(", 1)[1].rstrip(")")) for a in f["also_seen_as"])
        if f["count"] != counts.get(f["code"], 0) and f["count"] != counts.get(f["code"], 0) + folded:
            fail(f"finding {f['code']} count", f["count"], counts.get(f["code"]))
    print(f"findings: {len(report['findings'])} counts equal")
    print("report ok")


def norm(v):
    if isinstance(v, float) and v.is_integer():
        return int(v)
    if isinstance(v, (dt.date, dt.datetime)):
        return str(v)
    if isinstance(v, list):
        return [norm(x) for x in v]
    return v


def check_query(args):
    con, _ = connect(args.lake)
    for item in json.load(open(args.questions)):
        ours = [list(json.loads(line).values()) for line in open(item["result"]) if line.strip()]
        ours = [[norm(x) for x in row] for row in ours]
        theirs = [[norm(x) for x in row] for row in q(con, item["duckdb"])]
        if ours != theirs:
            fail(f"query {item['duckdb']!r}", ours[:5], theirs[:5])
        print(f"query ok ({len(ours)} rows): {' '.join(item['duckdb'].split())[:90]}")
    print("queries ok")


ap = argparse.ArgumentParser()
sub = ap.add_subparsers(dest="mode", required=True)
r = sub.add_parser("report")
r.add_argument("lake")
r.add_argument("report")
r.add_argument("--since")
r.add_argument("--until")
r.add_argument("--server", action="append", default=[])
qp = sub.add_parser("query")
qp.add_argument("lake")
qp.add_argument("questions")
a = ap.parse_args()
check_report(a) if a.mode == "report" else check_query(a)
