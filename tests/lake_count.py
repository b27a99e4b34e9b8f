"""Counts a lake's rows and distinct lineage keys per table with real DuckDB, and lists the
servers it holds. Usage: lake_count.py LAKE. Prints JSON:
{"tables": {table: [rows, distinct_keys]}, "servers": [...]}.
"""
import glob
import json
import os
import sys

import duckdb

lake = sys.argv[1]
con = duckdb.connect()
tables, servers = {}, set()
for table in sorted(os.listdir(lake) if os.path.isdir(lake) else []):
    # A killed run can leave a table folder with no committed file yet.
    if table.startswith(("_", ".")) or not glob.glob(f"{lake}/{table}/**/*.parquet", recursive=True):
        continue
    src = f"read_parquet('{lake}/{table}/**/*.parquet', hive_partitioning = true)"
    rows, keys = con.execute(
        f"SELECT count(*), count(DISTINCT (server, source_file, source_offset)) FROM {src}"
    ).fetchone()
    tables[table] = [rows, keys]
    servers.update(r[0] for r in con.execute(f"SELECT DISTINCT server FROM {src}").fetchall())
print(json.dumps({"tables": tables, "servers": sorted(servers)}))
