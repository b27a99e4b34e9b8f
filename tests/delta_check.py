"""Independent readers of mailflow's Delta lakes, and the stores' set-up, for tests/delta.rs.

Runs in the venv `.ci/run` builds for object storage (`.venv-delta`): DuckDB 1.5.5 with its
`delta` and `httpfs` extensions from PyPI (DuckDB's own build of delta-kernel-rs), the
`deltalake` package (delta-rs, with pyarrow), boto3 (from moto) and azure-storage-blob.

  bucket ENDPOINT NAME              create an S3 bucket on a loopback S3 server
  container ENDPOINT NAME           create a blob container on Azurite
  uploads ENDPOINT NAME             the multipart uploads in progress in an S3 bucket (a count)
  counts URI [--s3 E] [--azure E]   per table: rows read by deltalake and by DuckDB's delta_scan,
                                    and distinct lineage keys; JSON on stdout
  local LAKE                        the same counts of a local Hive Parquet lake (DuckDB)
  plain URI --s3 E                  per table: rows of the plain Parquet files under URI on S3,
                                    as DuckDB's httpfs lists and reads them, distinct lineage
                                    keys, rows outside a partition; JSON on stdout
  watch URI TABLE READY STOP [--s3 E]
                                    count TABLE's rows (deltalake) over and over, at its newest
                                    version each time; touch READY after the first count, stop
                                    once STOP exists (after one more count); JSON list of
                                    {version, rows, files} on stdout
"""

import json
import os
import sys

TABLES = [
    "message_tracking",
    "smtp_protocol",
    "connectivity",
    "pop_imap_protocol",
    "agent_log",
    "transport_events",
    "queue_snapshots",
    "rejects",
    "smtp_sessions",
    "messages",
]
# Tables whose rows are log lines: (source_file, source_offset) names each once.
RAW = {"message_tracking", "smtp_protocol", "connectivity", "pop_imap_protocol", "agent_log"}

S3_KEY = ("mailflow-test", "mailflow-test-secret")
AZURITE_ACCOUNT = "devstoreaccount1"
AZURITE_KEY = (
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
)


def duck():
    import duckdb
    import duckdb_extension_delta
    import duckdb_extension_httpfs

    con = duckdb.connect(config={"allow_unsigned_extensions": "true"})
    for module, name in ((duckdb_extension_httpfs, "httpfs"), (duckdb_extension_delta, "delta")):
        base = os.path.join(os.path.dirname(module.__file__), "extensions")
        (version,) = os.listdir(base)
        con.execute(f"LOAD '{os.path.join(base, version, name + '.duckdb_extension')}'")
    return con


def storage_options(s3, azure):
    if s3:
        return {
            "AWS_ACCESS_KEY_ID": S3_KEY[0],
            "AWS_SECRET_ACCESS_KEY": S3_KEY[1],
            "AWS_REGION": "us-east-1",
            "AWS_ENDPOINT_URL": s3,
            "AWS_ALLOW_HTTP": "true",
            "AWS_S3_ALLOW_UNSAFE_RENAME": "true",
        }
    if azure:
        # object_store reads the emulator's address from the environment only.
        os.environ["AZURITE_BLOB_STORAGE_URL"] = azure
        return {
            "azure_storage_account_name": AZURITE_ACCOUNT,
            "azure_storage_account_key": AZURITE_KEY,
            "azure_storage_use_emulator": "true",
            "azure_storage_allow_http": "true",
        }
    return None


def counts(uri, s3=None, azure=None):
    from deltalake import DeltaTable
    from deltalake.exceptions import TableNotFoundError

    opts = storage_options(s3, azure)
    con = duck()
    if s3:
        host = s3.split("://", 1)[1]
        con.execute(
            f"CREATE SECRET (TYPE s3, KEY_ID '{S3_KEY[0]}', SECRET '{S3_KEY[1]}', "
            f"REGION 'us-east-1', ENDPOINT '{host}', URL_STYLE 'path', USE_SSL false)"
        )
    out = {}
    for table in TABLES:
        where = uri.rstrip("/") + "/" + table
        try:
            dt = DeltaTable(where, storage_options=opts)
        except TableNotFoundError:
            continue
        arrow = dt.to_pyarrow_table()
        row = {"deltalake": arrow.num_rows, "version": dt.version()}
        if table in RAW:
            row["distinct"] = len(
                set(zip(arrow.column("source_file").to_pylist(), arrow.column("source_offset").to_pylist()))
            )
        # DuckDB's delta_scan reads the log with delta-kernel-rs: a second, separate reader.
        # Azurite is read by deltalake only (DuckDB's azure extension is not on PyPI).
        if not azure:
            row["duckdb"] = con.execute(f"SELECT count(*) FROM delta_scan('{where}')").fetchone()[0]
            servers = con.execute(
                f"SELECT count(*) FILTER (WHERE server IS NULL OR date IS NULL) FROM delta_scan('{where}')"
            ).fetchone()[0]
            row["unpartitioned"] = servers
        out[table] = row
    print(json.dumps(out, sort_keys=True))


def plain(uri, s3):
    con = duck()
    host = s3.split("://", 1)[1]
    con.execute(
        f"CREATE SECRET (TYPE s3, KEY_ID '{S3_KEY[0]}', SECRET '{S3_KEY[1]}', "
        f"REGION 'us-east-1', ENDPOINT '{host}', URL_STYLE 'path', USE_SSL false)"
    )
    out = {}
    for table in TABLES:
        files = f"{uri.rstrip('/')}/{table}/*/*/part-*.parquet"
        try:
            rows, unpartitioned = con.execute(
                f"SELECT count(*), count(*) FILTER (WHERE server IS NULL OR date IS NULL) "
                f"FROM read_parquet('{files}', hive_partitioning=true)"
            ).fetchone()
        except Exception as e:  # DuckDB says "No files found" of a table never written
            if "No files found" in str(e):
                continue
            raise
        row = {"duckdb": rows, "unpartitioned": unpartitioned}
        if table in RAW:
            row["distinct"] = con.execute(
                f"SELECT count(*) FROM (SELECT DISTINCT source_file, source_offset "
                f"FROM read_parquet('{files}', hive_partitioning=true))"
            ).fetchone()[0]
        out[table] = row
    print(json.dumps(out, sort_keys=True))


def watch(uri, table, ready, stop, s3=None):
    from deltalake import DeltaTable

    dt = DeltaTable(uri.rstrip("/") + "/" + table, storage_options=storage_options(s3, None))
    seen = []
    last = False
    while True:
        dt.update_incremental()
        seen.append(
            {"version": dt.version(), "rows": dt.to_pyarrow_table().num_rows, "files": len(dt.file_uris())}
        )
        if len(seen) == 1:
            open(ready, "w").close()
        if last:
            break
        last = os.path.exists(stop)
    print(json.dumps(seen), flush=True)
    # The readers' native threads can abort the interpreter's exit ("terminate called without
    # an active exception"); the answer is out, so leave at once.
    os._exit(0)


def local(lake):
    import duckdb

    con = duckdb.connect()
    out = {}
    for table in TABLES:
        folder = os.path.join(lake, table)
        if not os.path.isdir(folder):
            continue
        n = con.execute(
            f"SELECT count(*) FROM read_parquet('{folder}/**/part-*.parquet', hive_partitioning=true)"
        ).fetchone()[0]
        out[table] = {"rows": n}
    print(json.dumps(out, sort_keys=True))


def s3_client(endpoint):
    import boto3

    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id=S3_KEY[0],
        aws_secret_access_key=S3_KEY[1],
        region_name="us-east-1",
    )


def bucket(endpoint, name):
    s3_client(endpoint).create_bucket(Bucket=name)
    print("bucket ok")


def uploads(endpoint, name):
    pending = s3_client(endpoint).list_multipart_uploads(Bucket=name).get("Uploads", [])
    print(len(pending))


def container(endpoint, name):
    from azure.storage.blob import BlobServiceClient

    conn = (
        f"DefaultEndpointsProtocol=http;AccountName={AZURITE_ACCOUNT};AccountKey={AZURITE_KEY};"
        f"BlobEndpoint={endpoint}/{AZURITE_ACCOUNT};"
    )
    BlobServiceClient.from_connection_string(conn).create_container(name)
    print("container ok")


def main(argv):
    cmd, rest = argv[1], argv[2:]
    if cmd == "bucket":
        bucket(*rest)
    elif cmd == "uploads":
        uploads(*rest)
    elif cmd == "container":
        container(*rest)
    elif cmd == "local":
        local(*rest)
    elif cmd == "plain":
        plain(rest[0], rest[rest.index("--s3") + 1])
    elif cmd == "watch":
        s3 = rest[rest.index("--s3") + 1] if "--s3" in rest else None
        watch(*rest[:4], s3=s3)
    elif cmd == "counts":
        uri, s3, azure = rest[0], None, None
        if "--s3" in rest:
            s3 = rest[rest.index("--s3") + 1]
        if "--azure" in rest:
            azure = rest[rest.index("--azure") + 1]
        counts(uri, s3, azure)
    else:
        sys.exit(f"unknown command {cmd}")


if __name__ == "__main__":
    main(sys.argv)
    # Every answer is printed and flushed by now. Leave without the interpreter's teardown: the
    # native libraries' threads (deltalake's runtime, DuckDB's) can race it and abort the process
    # after a correct answer ("terminate called without an active exception", seen once under
    # CI's load), which would fail a test that had nothing wrong.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
