#!/usr/bin/env python3
"""Compares what a lake holds with what the test Elasticsearch server stored, row by row.

Usage: es_check.py LAKE URL [NAMESPACE]

Prints one JSON object: per table, {"lake": n, "es": n, "only_lake": n, "only_es": n}. A log
line is known by its file and offset (`source_file`/`source_offset` in the lake,
`log.file.path`/`log.offset` in a document), a session by its server, direction, connector
and session id, a message by its Message-ID (or server and internal id). Counts are of
multisets: a row stored twice in the cluster shows in `only_es`.
"""

import json
import os
import sys
import urllib.request
from collections import Counter

import duckdb

lake, url = sys.argv[1], sys.argv[2].rstrip("/")
namespace = sys.argv[3] if len(sys.argv) > 3 else "default"

KEYS = {
    "smtp_sessions": (
        ["server", "direction", "connector_id", "session_id"],
        ["host.name", "exchange.direction", "exchange.connector_id", "exchange.session_id"],
    ),
    "messages": (
        ["coalesce(message_id, server || '/' || internal_message_id)"],
        None,
    ),
}
LINE = (["source_file", "source_offset"], ["log.file.path", "log.offset"])


def es_key(table, doc):
    if table == "messages":
        mid = doc.get("email.message_id")
        return (mid if mid is not None else f"{doc.get('host.name')}/{doc.get('email.local_id')}",)
    fields = KEYS.get(table, LINE)[1]
    return tuple(doc.get(f) for f in fields)


import ssl

# The test server's certificate may be self-signed: this tool reads, it does not vouch.
insecure = ssl.create_default_context()
insecure.check_hostname = False
insecure.verify_mode = ssl.CERT_NONE
with urllib.request.urlopen(f"{url}/_test/docs", context=insecure) as r:
    docs = [json.loads(line) for line in r.read().decode().splitlines() if line]

es = {}
for d in docs:
    index = d["index"]
    prefix, suffix = "logs-exchange.", f"-{namespace}"
    if not (index.startswith(prefix) and index.endswith(suffix)):
        continue
    table = index[len(prefix):-len(suffix)]
    es.setdefault(table, Counter())[es_key(table, d["_source"])] += 1

out = {}
tables = sorted(
    t for t in os.listdir(lake) if not t.startswith(("_", ".")) and os.path.isdir(os.path.join(lake, t))
)
for table in sorted(set(tables) | set(es)):
    cols = KEYS.get(table, LINE)[0]
    held = Counter()
    if table in tables:
        q = (
            f"select {', '.join(cols)} from read_parquet('{lake}/{table}/**/*.parquet', "
            f"hive_partitioning = true, union_by_name = true)"
        )
        for row in duckdb.sql(q).fetchall():
            held[tuple(row)] += 1
    got = es.get(table, Counter())
    out[table] = {
        "lake": sum(held.values()),
        "es": sum(got.values()),
        "only_lake": sum((held - got).values()),
        "only_es": sum((got - held).values()),
    }
print(json.dumps(out, sort_keys=True))
