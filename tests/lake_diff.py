"""Compares two lakes table by table as multisets of rows, with real DuckDB.

Usage: lake_diff.py LAKE_A LAKE_B [COLUMN_TO_LEAVE_OUT ...]. Prints JSON: per table present in
either lake, {"a": rows, "b": rows, "only_a": n, "only_b": n} (rows in one lake and not the
other, counted with their repetitions: both zero means the same rows the same number of times).
"""
import json
import os
import sys

import duckdb

a, b = sys.argv[1], sys.argv[2]
leave_out = sys.argv[3:]
con = duckdb.connect()
out = {}
tables = sorted({t for lake in (a, b) for t in os.listdir(lake)
                 if not t.startswith(("_", "."))})
for t in tables:
    rels = []
    for lake in (a, b):
        if os.path.isdir(os.path.join(lake, t)):
            rels.append(f"read_parquet('{lake}/{t}/**/*.parquet', hive_partitioning = true, "
                        "union_by_name = true)")
        else:
            rels.append(None)
    if None in rels:
        present = rels[0] or rels[1]
        n = con.execute(f"SELECT count(*) FROM {present}").fetchall()[0][0]
        out[t] = {"a": n if rels[0] else 0, "b": n if rels[1] else 0,
                  "only_a": n if rels[0] else 0, "only_b": n if rels[1] else 0}
        continue
    cols = [r[0] for r in con.execute(f"DESCRIBE SELECT * FROM {rels[0]}").fetchall()]
    keep = ", ".join(f'"{c}"' for c in cols if c not in leave_out)
    qa, qb = (f"SELECT {keep} FROM {r}" for r in rels)
    count = lambda q: con.execute(f"SELECT count(*) FROM ({q})").fetchall()[0][0]
    out[t] = {"a": count(qa), "b": count(qb),
              "only_a": count(f"{qa} EXCEPT ALL {qb}"), "only_b": count(f"{qb} EXCEPT ALL {qa}")}
print(json.dumps(out))
