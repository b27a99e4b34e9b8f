"""Joins a message to the SMTP session that carried it, both ways, with real DuckDB.

Usage: lake_join.py LAKE. Prints JSON {"by_session_id": [...], "by_message_id": [...]}: the
(message_id, session_id, certificate_thumbprint) rows each join finds.
"""
import json
import sys

import duckdb

lake = sys.argv[1]
con = duckdb.connect()
for t in ("message_tracking", "smtp_sessions"):
    con.execute(f"CREATE VIEW {t} AS SELECT * FROM read_parquet('{lake}/{t}/**/*.parquet', "
                "hive_partitioning = true, union_by_name = true)")
# A tracking RECEIVE row names its receive session.
by_session = con.execute("""
    SELECT t.message_id, s.session_id, s.certificate_thumbprint
    FROM message_tracking t JOIN smtp_sessions s
      ON t.session_id = s.session_id AND t.server = s.server
    WHERE t.event_id = 'RECEIVE' ORDER BY ALL""").fetchall()
# A session lists the messages it carried.
by_message = con.execute("""
    SELECT t.message_id, s.session_id, s.certificate_thumbprint
    FROM smtp_sessions s JOIN message_tracking t ON list_contains(s.message_ids, t.message_id)
    WHERE t.event_id = 'RECEIVE' ORDER BY ALL""").fetchall()
print(json.dumps({"by_session_id": by_session, "by_message_id": by_message}))
