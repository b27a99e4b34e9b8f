"""Reads a lake written by `mailflow ingest` with real DuckDB, Spark, pyarrow and pandas, and checks
that they all see the same tables, with the expected types, the same answer to a trend query, and mailflow's
own row counts.

Usage: lake_engines.py LAKE SUMMARY_JSON SCHEMA_JSON (`mailflow schema --format json`). Exits
non-zero with a message on any mismatch. A missing engine is a failure, never a skip.
"""
import glob
import json
import sys

import duckdb
import pandas
import pyarrow.dataset
import pyarrow.parquet
from pyspark.sql import SparkSession

lake, summary_path, schema_path = sys.argv[1], sys.argv[2], sys.argv[3]
summary = json.load(open(summary_path))
documented = {t["table"]: {c["name"]: c for c in t["columns"]} for t in json.load(open(schema_path))}
expected = dict(summary["rows"])
expected["rejects"] = summary["rejects"]
# A table with no rows has no files, and so no folder for an engine to read.
expected = {t: n for t, n in expected.items() if n > 0}
failures = []


def check(cond, msg):
    if not cond:
        failures.append(msg)


# A trend query a manager's report would run: failures per day and diagnosis, over the
# tables that carry one.
DAILY_FAILURES = """
SELECT day, code, severity, sum(n) AS n FROM (
  SELECT CAST(date AS STRING) AS day, diagnosis_code AS code, diagnosis_severity AS severity, count(*) AS n
  FROM message_tracking WHERE diagnosis_code IS NOT NULL GROUP BY 1, 2, 3
  UNION ALL
  SELECT CAST(date AS STRING), diagnosis_code, diagnosis_severity, count(*)
  FROM smtp_protocol WHERE diagnosis_code IS NOT NULL GROUP BY 1, 2, 3
) GROUP BY 1, 2, 3 ORDER BY 1, 2, 3
"""

# ---- DuckDB, with hive partitioning
con = duckdb.connect()
duck_counts, duck_types = {}, {}
for table in expected:
    con.execute(
        f"CREATE VIEW {table} AS SELECT * FROM read_parquet('{lake}/{table}/**/*.parquet', "
        "hive_partitioning = true, union_by_name = true)"
    )
    duck_counts[table] = con.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
    keys = con.execute(
        f"SELECT count(DISTINCT (server, source_file, source_offset)) FROM {table}"
    ).fetchone()[0]
    check(keys == duck_counts[table], f"duckdb {table}: {keys} lineage keys, {duck_counts[table]} rows")
    duck_types[table] = {r[0]: r[1] for r in con.execute(f"DESCRIBE {table}").fetchall()}
duck_failures = [tuple(r) for r in con.execute(DAILY_FAILURES).fetchall()]

# ---- Spark, with partition discovery
spark = (
    SparkSession.builder.master("local[2]")
    .appName("mailflow-lake-test")
    .config("spark.ui.enabled", "false")
    .config("spark.sql.session.timeZone", "UTC")
    .config("spark.driver.memory", "1g")
    .getOrCreate()
)
spark.sparkContext.setLogLevel("ERROR")
spark_counts, spark_types, spark_names = {}, {}, {}
for table in expected:
    df = spark.read.option("mergeSchema", "true").parquet(f"{lake}/{table}")
    df.createOrReplaceTempView(table)
    spark_counts[table] = df.count()
    spark_types[table] = {f.name: f.dataType.simpleString() for f in df.schema.fields}
    # Spark folds a column that is both in the files and in the folder names into one (with a
    # COLUMN_ALREADY_EXISTS warning), so the per-file schema check below is what guards the
    # Hive convention; this only shows Spark gets `server` from the folders.
    spark_names[table] = df.schema.fieldNames()
spark_failures = [tuple(r) for r in spark.sql(DAILY_FAILURES).collect()]
spark_server = spark.sql("SELECT DISTINCT server FROM message_tracking").collect()

# Normalised values beside the raw ones, as each engine asks for them: custom-data keys as
# Exchange writes them, each with its list of values; TLS in OpenSSL's names.
E2E = {
    "duckdb": "SELECT count(*) FROM message_tracking WHERE custom_data['S:E2ELatency'][1] IS NOT NULL",
    "spark": "SELECT count(*) FROM message_tracking WHERE element_at(custom_data, 'S:E2ELatency')[0] IS NOT NULL",
}
TLS = ("SELECT count(*) FROM smtp_sessions WHERE tls_version = '1.2' "
       "AND tls_cipher_suite = 'ECDHE-AES128-SHA256' AND tls_key_exchange = 'ECDHE'")
spark_e2e = spark.sql(E2E["spark"]).collect()[0][0]
spark_tls = spark.sql(TLS).collect()[0][0]

# An additive schema change: files of schema versions 1 and 2 (one more column, `b`) read as one
# table by both engines.
EVOLUTION = "SELECT count(*), count(b), sum(b) FROM schema_evolution"
con.execute(
    f"CREATE VIEW schema_evolution AS SELECT * FROM read_parquet('{lake}/schema_evolution/**/*.parquet', "
    "hive_partitioning = true, union_by_name = true)"
)
duck_evolution = tuple(con.execute(EVOLUTION).fetchone())
spark.read.option("mergeSchema", "true").parquet(f"{lake}/schema_evolution").createOrReplaceTempView(
    "schema_evolution")
spark_evolution = tuple(spark.sql(EVOLUTION).collect()[0])
spark.stop()
check(duck_evolution == (5, 2, 15), f"duckdb over two schema versions: {duck_evolution}")
check(spark_evolution == (5, 2, 15), f"spark over two schema versions: {spark_evolution}")

duck_e2e = con.execute(E2E["duckdb"]).fetchone()[0]
duck_tls = con.execute(TLS).fetchone()[0]
check(duck_e2e > 0 and duck_e2e == spark_e2e, f"rows with S:E2ELatency: duckdb {duck_e2e}, spark {spark_e2e}")
check(duck_tls > 0 and duck_tls == spark_tls, f"ECDHE-AES128-SHA256 TLS 1.2 sessions: duckdb {duck_tls}, spark {spark_tls}")

# ---- `mailflow schema` says what DuckDB reads: every column of every table, with its type.
for table in expected:
    docs = documented[table]
    for col, duck in duck_types[table].items():
        if col == "date":
            continue  # the Hive partition, from the folder names
        doc = docs.get(col)
        check(doc is not None, f"{table}.{col} is not in `mailflow schema`")
        if doc is not None:
            check(doc["sql_type"] == duck, f"{table}.{col}: `mailflow schema` says {doc['sql_type']}, duckdb reads {duck}")
    for col in docs:
        check(col in duck_types[table], f"{table}.{col} is in `mailflow schema` but not in the files")

# ---- One status per recipient: the lists line up, so a one-row-per-recipient view is a zip.
replies = "event_id IN ('SEND', 'FAIL', 'DEFER') AND recipient_status IS NOT NULL"
fails, misaligned = con.execute(
    f"SELECT count(*) FILTER (WHERE event_id = 'FAIL'), "
    f"count(*) FILTER (WHERE len(recipient_status) <> len(recipient_address)) "
    f"FROM message_tracking WHERE {replies}").fetchone()
check(fails > 0, "no FAIL rows: the alignment check proves nothing")
check(misaligned == 0, f"{misaligned} tracking rows whose statuses do not line up with recipients")
per_recipient, recipients = con.execute(
    f"SELECT (SELECT count(*) FROM (SELECT unnest(recipient_address) AS rcpt, "
    f"unnest(recipient_status) AS status FROM message_tracking WHERE {replies})), "
    f"(SELECT sum(len(recipient_address)) FROM message_tracking WHERE {replies})").fetchone()
check(per_recipient == recipients, f"per-recipient view: {per_recipient} rows for {recipients} recipients")

# ---- pyarrow datasets and pandas, with Hive partitioning. They refuse a column that is both in
# the files and in the folder names (`dictionary<...> vs string`), so the Hive convention holds:
# no file holds `server`, and the folder gives it back.
arrow_counts, pandas_counts = {}, {}
for table in expected:
    for f in glob.glob(f"{lake}/{table}/**/*.parquet", recursive=True):
        names = pyarrow.parquet.read_schema(f).names
        check("server" not in names, f"{f} holds the partition column server")
    try:
        ds = pyarrow.dataset.dataset(f"{lake}/{table}", format="parquet", partitioning="hive")
        t = ds.to_table()
        arrow_counts[table] = t.num_rows
        check(t.column("server").null_count == 0, f"pyarrow {table}: null server")
        pandas_counts[table] = len(pandas.read_parquet(f"{lake}/{table}"))
    except Exception as e:  # the failure is the finding
        check(False, f"pyarrow/pandas cannot read {table}: {e}")
for table in expected:
    n = [c.lower() for c in spark_names[table]].count("server")
    check(n == 1, f"spark {table}: {n} server columns")

# ---- Agreement
for table, n in expected.items():
    check(duck_counts[table] == n, f"{table}: duckdb {duck_counts[table]} rows, mailflow {n}")
    check(spark_counts[table] == n, f"{table}: spark {spark_counts[table]} rows, mailflow {n}")
    check(arrow_counts.get(table) == n, f"{table}: pyarrow {arrow_counts.get(table)} rows, mailflow {n}")
    check(pandas_counts.get(table) == n, f"{table}: pandas {pandas_counts.get(table)} rows, mailflow {n}")
check(len(duck_failures) > 0, "no diagnosed failures found; the query proves nothing")
by_code = {}
for _, code, _, n in duck_failures:
    by_code[code] = by_code.get(code, 0) + n
expected_codes = {c: n for c, n in summary["diagnoses"].items()}
# connectivity rows are diagnosed too but are not in the query.
check(all(by_code.get(c, 0) <= n for c, n in expected_codes.items()) and set(by_code) <= set(expected_codes),
      f"daily failures {by_code} disagree with mailflow's summary {expected_codes}")
check(duck_failures == spark_failures,
      f"daily failures differ:\n duckdb {duck_failures[:5]}...\n spark  {spark_failures[:5]}...")

WANT = {
    "message_tracking": {
        "timestamp": ("TIMESTAMP WITH TIME ZONE", "timestamp"),
        "date": ("DATE", "date"),
        "server": ("VARCHAR", "string"),
        "event_id": ("VARCHAR", "string"),  # dictionary-encoded in the file
        "total_bytes": ("BIGINT", "bigint"),
        "recipient_count": ("INTEGER", "int"),
        "recipient_address": ("VARCHAR[]", "array<string>"),
        "custom_data": ("MAP(VARCHAR, VARCHAR[])", "map<string,array<string>>"),
        "smtp_reply_code": ("SMALLINT", "smallint"),
        "diagnosis_code": ("VARCHAR", "string"),
    },
    "smtp_protocol": {
        "timestamp": ("TIMESTAMP WITH TIME ZONE", "timestamp"),
        "date": ("DATE", "date"),
        "direction": ("VARCHAR", "string"),
        "remote_port": ("INTEGER", "int"),
        "source_offset": ("BIGINT", "bigint"),
    },
    "rejects": {"raw": ("BLOB", "binary"), "date": ("DATE", "date")},
    "smtp_sessions": {
        "end_time": ("TIMESTAMP WITH TIME ZONE", "timestamp"),
        "tls_succeeded": ("BOOLEAN", "boolean"),
        "outcome": ("VARCHAR", "string"),
        "diagnosis_code": ("VARCHAR", "string"),
    },
    "messages": {
        "events": ("VARCHAR[]", "array<string>"),
        "recipient_status": ("VARCHAR[]", "array<string>"),
        "latency_ms": ("BIGINT", "bigint"),
        "status": ("VARCHAR", "string"),
    },
}
for table, cols in WANT.items():
    if table not in expected:
        continue
    for col, (duck, spark_type) in cols.items():
        check(duck_types[table].get(col) == duck, f"duckdb {table}.{col} is {duck_types[table].get(col)}, want {duck}")
        check(spark_types[table].get(col) == spark_type,
              f"spark {table}.{col} is {spark_types[table].get(col)}, want {spark_type}")

for table in ("smtp_sessions", "messages"):
    check(table in expected, f"ingest wrote no {table}")

if failures:
    print("\n".join(failures))
    sys.exit(1)
print(json.dumps({"rows": duck_counts, "daily_failures": len(duck_failures),
                  "servers": sorted(r[0] for r in spark_server)}))
