"""Asks of a lake ingested from `mailflow generate` what an analyst asks of a real fleet's, with
real DuckDB: do the kinds of log share their messages and sessions, does traffic span the days
and servers asked for, do senders and remote hosts come back, do sessions keep their ports and
EHLO name, are outbound SEND rows filed under the sending server.

Usage: fleet_check.py LAKE. Prints the figures as JSON; the Rust test asserts on them.
"""
import json
import sys

import duckdb

lake = sys.argv[1]
con = duckdb.connect()
for t in ("message_tracking", "smtp_protocol", "smtp_sessions", "messages", "connectivity"):
    con.execute(f"CREATE VIEW {t} AS SELECT * FROM read_parquet('{lake}/{t}/**/*.parquet', "
                "hive_partitioning = true, union_by_name = true)")


def one(sql):
    return con.execute(sql).fetchone()[0]


out = {
    "days": one("SELECT count(DISTINCT CAST(timestamp AS DATE)) FROM message_tracking"),
    "servers": sorted({r[0] for t in ("message_tracking", "smtp_protocol", "smtp_sessions", "connectivity")
                       for r in con.execute(f"SELECT DISTINCT server FROM {t}").fetchall()}),
    # Tracking RECEIVE rows from SMTP whose session is in smtp_sessions, on the same server.
    "receive_rows": one("SELECT count(*) FROM message_tracking WHERE event_id = 'RECEIVE' AND source = 'SMTP'"),
    "receive_rows_joined": one("""
        SELECT count(*) FROM message_tracking t
        WHERE t.event_id = 'RECEIVE' AND t.source = 'SMTP' AND EXISTS (
            SELECT 1 FROM smtp_sessions s WHERE s.session_id = t.session_id AND s.server = t.server)"""),
    # Message ids the sessions carried, found in tracking.
    "session_message_ids": one("SELECT count(*) FROM (SELECT unnest(message_ids) FROM smtp_sessions)"),
    "session_message_ids_tracked": one("""
        SELECT count(*) FROM (SELECT DISTINCT unnest(message_ids) AS id FROM smtp_sessions) s
        WHERE s.id IN (SELECT message_id FROM message_tracking)"""),
    "distinct_session_message_ids": one(
        "SELECT count(DISTINCT id) FROM (SELECT unnest(message_ids) AS id FROM smtp_sessions)"),
    "messages_across_servers": one("SELECT count(*) FROM messages WHERE len(servers) > 1"),
    "inbound_rows": one("SELECT count(*) FROM message_tracking WHERE event_id = 'RECEIVE' AND source = 'SMTP' AND directionality = 'Incoming'"),
    "inbound_senders": one("SELECT count(DISTINCT sender_address) FROM message_tracking WHERE event_id = 'RECEIVE' AND source = 'SMTP' AND directionality = 'Incoming'"),
    "receive_sessions": one("SELECT count(*) FROM smtp_sessions WHERE direction = 'receive'"),
    "remote_ips": one("SELECT count(DISTINCT remote_ip) FROM smtp_sessions WHERE direction = 'receive'"),
    # Sessions whose lines show more than one remote port or EHLO name.
    "sessions_with_two_ports": one("""
        SELECT count(*) FROM (SELECT server, session_id FROM smtp_protocol
        WHERE remote_port IS NOT NULL GROUP BY ALL HAVING count(DISTINCT remote_port) > 1)"""),
    "sessions_with_two_ehlos": one("""
        SELECT count(*) FROM (SELECT server, session_id FROM smtp_protocol
        WHERE starts_with(data, 'EHLO ') GROUP BY ALL HAVING count(DISTINCT data) > 1)"""),
    "send_rows": one("SELECT count(*) FROM message_tracking WHERE event_id = 'SEND' AND connector_id = 'Outbound to Internet'"),
    "send_rows_naming_this_server": one("""
        SELECT count(*) FROM message_tracking WHERE event_id = 'SEND'
        AND connector_id = 'Outbound to Internet' AND lower(server_hostname) LIKE lower(server) || '%'"""),
    "send_remote_hosts": one("SELECT count(DISTINCT server_hostname) FROM message_tracking WHERE event_id = 'SEND'"),
    "latency_p50_ms": one("SELECT quantile_cont(latency_ms, 0.5) FROM messages"),
    "latency_p99_ms": one("SELECT quantile_cont(latency_ms, 0.99) FROM messages"),
    # Connections made (a domain that does not resolve gets connectivity lines, no session).
    "connectivity_sessions": one(
        "SELECT count(DISTINCT session) FROM connectivity WHERE starts_with(description, 'Established')"),
    "connectivity_sessions_in_send_logs": one("""
        SELECT count(*) FROM (SELECT DISTINCT server, session FROM connectivity
                              WHERE starts_with(description, 'Established')) c
        WHERE EXISTS (SELECT 1 FROM smtp_sessions s WHERE s.direction = 'send'
                      AND s.session_id = c.session AND s.server = c.server)"""),
    "diagnosed_sessions": one("SELECT count(*) FROM smtp_sessions WHERE diagnosis_code IS NOT NULL"),
}
print(json.dumps(out))
