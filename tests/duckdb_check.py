"""Reads what `mailflow ingest` wrote with real DuckDB and checks it against mailflow's summary.

Usage: duckdb_check.py OUT_DIR SUMMARY_JSON. Exits non-zero with a message on any mismatch.
"""
import json
import sys

import duckdb  # a missing engine is a failure, never a skip

out, summary_path = sys.argv[1], sys.argv[2]
summary = json.load(open(summary_path))
con = duckdb.connect()


def q(sql):
    return con.sql(sql).fetchall()


def src(table):
    return f"read_parquet('{out}/{table}/**/*.parquet', hive_partitioning = true)"


def types(table):
    return {name: typ for name, typ, *_ in q(f"DESCRIBE SELECT * FROM {src(table)}")}


failures = []


def check(cond, msg):
    if not cond:
        failures.append(msg)


for table, rows in summary["rows"].items():
    n = q(f"SELECT count(*) FROM {src(table)}")[0][0]
    check(n == rows, f"{table}: duckdb counts {n} rows, mailflow said {rows}")
    keys = q(f"SELECT count(DISTINCT (server, source_file, source_offset)) FROM {src(table)}")[0][0]
    check(keys == rows, f"{table}: {keys} distinct lineage keys for {rows} rows")
    t = types(table)
    check(t["timestamp"] == "TIMESTAMP WITH TIME ZONE", f"{table}.timestamp is {t['timestamp']}")
    check(t["source_offset"] == "BIGINT", f"{table}.source_offset is {t['source_offset']}")
    check(t["server"] == "VARCHAR", f"{table}.server is {t['server']}")
    if table not in ("smtp_sessions", "messages"):  # derived tables have no `extra`
        check(t["extra"] == "MAP(VARCHAR, VARCHAR)", f"{table}.extra is {t['extra']}")
    check(t["date"] == "DATE", f"{table}.date (the partition) is {t['date']}")
    bad = q(f"SELECT count(*) FROM {src(table)} WHERE date <> CAST(timezone('UTC', timestamp) AS DATE)")[0][0]
    check(bad == 0, f"{table}: {bad} rows in another day's partition")

t = types("message_tracking")
for col, want in {
    "total_bytes": "BIGINT",
    "recipient_count": "INTEGER",
    "internal_message_id": "BIGINT",
    "recipient_address": "VARCHAR[]",
    "recipient_status": "VARCHAR[]",
    "custom_data": "MAP(VARCHAR, VARCHAR[])",
    "smtp_reply_code": "SMALLINT",
    "event_id": "VARCHAR",
}.items():
    check(t[col] == want, f"message_tracking.{col} is {t[col]}, want {want}")

t = types("smtp_protocol")
for col, want in {"sequence_number": "BIGINT", "local_port": "INTEGER", "remote_port": "INTEGER",
                  "smtp_reply_code": "SMALLINT", "event": "VARCHAR", "direction": "VARCHAR"}.items():
    check(t[col] == want, f"smtp_protocol.{col} is {t[col]}, want {want}")

# Values, not just types: a map lookup, a list unnest, a reply split, endpoint ports.
mt = src("message_tracking")
sp = src("smtp_protocol")
# Keys as Exchange writes them; each holds the list of its values (a key may repeat).
check(q(f"SELECT count(*) FROM {mt} WHERE custom_data['S:DeliveryPriority'][1] = 'Normal'")[0][0] > 0,
      "no custom_data['S:DeliveryPriority'][1] = 'Normal'")
check(q(f"SELECT count(*) FROM (SELECT unnest(recipient_address) FROM {mt})")[0][0]
      >= q(f"SELECT count(*) FROM {mt} WHERE recipient_address IS NOT NULL")[0][0], "unnest lost recipients")
check(q(f"SELECT count(*) FROM {sp} WHERE smtp_reply_code = 454 AND enhanced_status_code = '4.7.0'")[0][0] > 0,
      "no 454 4.7.0 reply found in smtp_protocol")
check(q(f"SELECT count(*) FROM {sp} WHERE event NOT IN ('connect','disconnect','send','receive','information')")[0][0] == 0,
      "an event symbol was not named")
check(q(f"SELECT min(local_port) FROM {sp} WHERE local_port IS NOT NULL")[0][0] > 0, "ports missing")
check(q(f"SELECT count(*) FROM {sp} WHERE direction IS NULL")[0][0] == 0, "smtp rows without direction")
check(q(f"SELECT count(*) FROM {mt} WHERE server IS NULL OR source_file IS NULL")[0][0] == 0, "lineage nulls")

# Diagnosis columns agree with the summary's per-code counts.
diagnosed = {}
for table in ("message_tracking", "smtp_protocol", "connectivity"):
    if table not in summary["rows"]:
        continue
    t = types(table)
    check(t.get("diagnosis_code") == "VARCHAR", f"{table}.diagnosis_code is {t.get('diagnosis_code')}")
    for code, n in q(f"SELECT diagnosis_code, count(*) FROM {src(table)} WHERE diagnosis_code IS NOT NULL GROUP BY ALL"):
        diagnosed[code] = diagnosed.get(code, 0) + n
check(diagnosed == summary["diagnoses"], f"diagnoses: duckdb {diagnosed}, mailflow {summary['diagnoses']}")
check(len(diagnosed) > 0, "no row diagnosed")

# Derived tables: one row per SMTP session and per message, diagnosed where something failed.
sessions = src("smtp_sessions")
outcomes = dict(q(f"SELECT outcome, count(*) FROM {sessions} GROUP BY ALL"))
check(outcomes.get("delivered", 0) > 0 and outcomes.get("deferred", 0) > 0, f"session outcomes {outcomes}")
check(q(f"SELECT count(*) FROM {sessions} WHERE diagnosis_code = 'TLS.CERT_NO_PRIVATE_KEY' AND certificate_thumbprint IS NOT NULL")[0][0] > 0,
      "no NoCredentials session with its certificate thumbprint")
check(q(f"SELECT count(*) FROM {sessions} WHERE outcome = 'delivered' AND diagnosis_code IS NOT NULL")[0][0] == 0,
      "a delivered session carries a diagnosis")
msgs = src("messages")
statuses = dict(q(f"SELECT status, count(*) FROM {msgs} GROUP BY ALL"))
check(statuses.get("delivered", 0) > 0 and statuses.get("failed", 0) > 0, f"message statuses {statuses}")
check(q(f"SELECT count(*) FROM {msgs} WHERE status = 'failed' AND diagnosis_code IS NULL")[0][0] == 0,
      "a failed message without a diagnosis")

rejects = q(f"SELECT count(*) FROM {src('rejects')}")[0][0]
check(rejects == summary["rejects"], f"rejects: duckdb {rejects}, mailflow {summary['rejects']}")
reasons = dict(q(f"SELECT reason, count(*) FROM {src('rejects')} GROUP BY ALL"))
check(reasons.get("field_count", 0) >= 1 and reasons.get("line_too_long", 0) == 0, f"reject reasons {reasons}")

if failures:
    print("\n".join(failures))
    sys.exit(1)
print(f"duckdb {duckdb.__version__}: {sum(summary['rows'].values())} rows, {rejects} rejects agree")
