#!/usr/bin/env python3
"""A stand-in Elasticsearch for mailflow's tests and bench: the bulk and template APIs as
Elasticsearch documents them, strictly, with the failures a real cluster has on demand.

No Elasticsearch can be installed on the machines mailflow is built on, so this server is what
the Elasticsearch sink is tested against. It is strict where a real cluster is strict:

- `POST /_bulk` (and `/<target>/_bulk`): NDJSON that must end with a newline; an action line
  that is not a JSON object naming one of create/index/update/delete, or a missing document
  line, fails the whole request with 400, as Elasticsearch does; a document that is not JSON
  fails its item (`document_parsing_exception`). Per-item results in request order and the
  `errors` flag; `filter_path` applied to the response.
- `create` of an `_id` the target holds: 409 `version_conflict_engine_exception`.
- A target matching an index template with `data_stream` is a data stream: only `create` is
  allowed (`index` gets 400), `@timestamp` is required, and documents are checked against the
  mappings of the template's component templates (later ones win, as in Elasticsearch):
  `long`, `date`, `ip` (unless `ignore_malformed`), `boolean`, `keyword`, `constant_keyword`,
  `object` and `flattened`; a field not mapped is mapped by its first value (dynamic), and a
  later value of another kind is a mapping error (`document_parsing_exception`).
- gzip request bodies (`Content-Encoding: gzip`); 413 above `--max-content-length` bytes on
  the wire; 401 without the configured Basic or ApiKey credentials.
- `PUT/GET /_component_template/<name>` and `/_index_template/<name>`; an index template's
  components must exist unless listed in `ignore_missing_component_templates`.

Faults, from the command line at start or `POST /_test/faults` (JSON) at any time:
`reject_next` (statuses answered to the next bulk requests whole, e.g. [429, 503]),
`item_reject_rate` and `item_reject_status` (items refused at random, 429 by default),
`max_content_length`, `delay_ms`. `GET /_test/stats` and `GET /_test/docs` (NDJSON of every
stored document) let a test check what was stored. With `--data DIR` what was stored survives
a restart, as a cluster's data does. `--ack-only` (benches) unzips and counts a bulk request's
items and acknowledges them all without storing, so that the client's speed is measured.

Usage: es_server.py [--port N] [--port-file F] [--data DIR] [--user U:P] [--api-key K]
                    [--tls-cert PEM --tls-key PEM] [--ack-only]
                    [--max-content-length N] [--item-reject-rate R] [--reject-next 429,503]
"""

import argparse
import base64
import gzip
import ipaddress
import json
import os
import random
import re
import sys
import threading
import time
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

try:  # A faster JSON parser when the venv has it; the standard one otherwise.
    import orjson

    def loads(b):
        return orjson.loads(b)

except ImportError:  # pragma: no cover
    def loads(b):
        return json.loads(b)


class Store:
    """Documents per target, templates, and counters; one lock for all."""

    def __init__(self, data_dir):
        self.lock = threading.Lock()
        self.docs = {}  # target -> {_id: source bytes}
        self.streams = {}  # data stream -> merged mapping properties
        self.components = {}
        self.index_templates = {}
        self.stats = {
            "requests": 0,
            "bulk_requests": 0,
            "items": 0,
            "created": 0,
            "conflicts": 0,
            "item_rejections": 0,
            "mapping_errors": 0,
            "request_rejections": 0,
            "too_large": 0,
            "auth_failures": 0,
            "gzip_requests": 0,
            "malformed_requests": 0,
        }
        self.faults = {
            "reject_next": [],
            "item_reject_rate": 0.0,
            "item_reject_status": 429,
            "max_content_length": 100 * 1024 * 1024,
            "delay_ms": 0,
        }
        self.rng = random.Random(7)
        self.data_dir = data_dir
        self.log = None
        if data_dir:
            os.makedirs(data_dir, exist_ok=True)
            self._load()
            self.log = open(os.path.join(data_dir, "docs.ndjson"), "ab")

    def _load(self):
        t = os.path.join(self.data_dir, "templates.json")
        if os.path.exists(t):
            with open(t) as f:
                saved = json.load(f)
            self.components = saved["components"]
            self.index_templates = saved["index_templates"]
            self.streams = saved.get("streams", {})
        d = os.path.join(self.data_dir, "docs.ndjson")
        if os.path.exists(d):
            with open(d, "rb") as f:
                for line in f:
                    if not line.endswith(b"\n"):
                        break  # a write cut short by the kill: not acknowledged either
                    rec = json.loads(line)
                    self.docs.setdefault(rec["index"], {})[rec["_id"]] = rec["source"].encode()

    def save_templates(self):
        if not self.data_dir:
            return
        path = os.path.join(self.data_dir, "templates.json")
        with open(path + ".tmp", "w") as f:
            json.dump(
                {
                    "components": self.components,
                    "index_templates": self.index_templates,
                    "streams": self.streams,
                },
                f,
            )
        os.replace(path + ".tmp", path)


def glob_match(pattern, name):
    return re.fullmatch(".*".join(re.escape(p) for p in pattern.split("*")), name) is not None


def merge_props(into, props):
    for k, v in props.items():
        if "." in k:  # dotted names in a mapping are objects, as in documents
            head, rest = k.split(".", 1)
            node = into.setdefault(head, {"properties": {}})
            merge_props(node.setdefault("properties", {}), {rest: v})
        elif "properties" in v and k in into and "properties" in into[k]:
            merge_props(into[k]["properties"], v["properties"])
        else:
            into[k] = json.loads(json.dumps(v))


class MappingError(Exception):
    pass


DATE = re.compile(r"^\d{4}-\d{2}-\d{2}(T\d{2}:\d{2}(:\d{2}(\.\d{1,9})?)?(Z|[+-]\d{2}:?\d{2})?)?$")


def check_leaf(path, mapping, value):
    """Checks a value (not a list) against a leaf mapping; raises MappingError."""
    t = mapping.get("type", "object")

    def fail():
        raise MappingError(
            f"failed to parse field [{path}] of type [{t}] in document with id '%s'. "
            f"Preview of field's value: '{value}'"
        )

    if value is None:
        return
    if t in ("keyword", "wildcard", "match_only_text", "text"):
        if isinstance(value, (dict, list)):
            fail()
    elif t == "constant_keyword":
        want = mapping.get("value")
        if want is not None and value != want:
            raise MappingError(
                f"[constant_keyword] field [{path}] only accepts values that are equal to "
                f"the value defined in the mappings [{want}], but got [{value}]"
            )
    elif t in ("long", "unsigned_long"):
        if isinstance(value, bool) or not isinstance(value, (int, str)):
            fail()
        if isinstance(value, str):
            try:
                int(value)
            except ValueError:
                fail()
    elif t == "double":
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            fail()
    elif t == "boolean":
        if value not in (True, False, "true", "false"):
            fail()
    elif t == "date":
        if isinstance(value, bool):
            fail()
        if isinstance(value, str) and not DATE.match(value):
            fail()
        if not isinstance(value, (str, int)):
            fail()
    elif t == "ip":
        try:
            ipaddress.ip_address(value)
        except (ValueError, TypeError):
            if not mapping.get("ignore_malformed"):
                fail()
    elif t == "flattened":
        if not isinstance(value, dict):
            fail()
    elif t in ("object", "nested"):
        if not isinstance(value, dict):
            raise MappingError(
                f"object mapping for [{path}] tried to parse field [{path}] as object, "
                f"but found a concrete value"
            )


def kind_of(value):
    if isinstance(value, bool):
        return {"type": "boolean"}
    if isinstance(value, int):
        return {"type": "long"}
    if isinstance(value, float):
        return {"type": "double"}
    if isinstance(value, dict):
        return {"type": "object", "properties": {}}
    return {"type": "keyword"}


def check_doc(props, doc, prefix=""):
    """Checks an object's fields against `props` (mutated: dynamic fields are added)."""
    for key, value in doc.items():
        parts = key.split(".")
        node_props = props
        path = prefix
        for i, part in enumerate(parts):
            path = f"{path}.{part}" if path else part
            last = i == len(parts) - 1
            m = node_props.get(part)
            if not last:
                if m is None:
                    m = node_props[part] = {"properties": {}}
                if m.get("type", "object") not in ("object",) or "properties" not in m:
                    if m.get("type") == "flattened":
                        break
                    raise MappingError(
                        f"Could not dynamically add mapping for field [{key}]. Existing "
                        f"mapping for [{path}] must be of type object but found [{m.get('type')}]."
                    )
                node_props = m["properties"]
                continue
            values = value if isinstance(value, list) else [value]
            if m is None:
                sample = next((v for v in values if v is not None), None)
                if sample is None:
                    break
                m = node_props[part] = kind_of(sample)
            for v in values:
                if m.get("type", "object") in ("object", "nested") and "properties" in m:
                    if not isinstance(v, dict):
                        check_leaf(path, m, v)
                    check_doc(m["properties"], v, path)
                else:
                    if isinstance(v, list):
                        for inner in v:
                            check_leaf(path, m, inner)
                    else:
                        check_leaf(path, m, v)


def filter_response(obj, paths):
    """Elasticsearch's `filter_path`: keep only the listed dotted paths (`*` any key)."""
    def keep(value, patterns):
        if isinstance(value, list):
            out = [keep(v, patterns) for v in value]
            out = [v for v in out if v is not None]
            return out or None
        if not isinstance(value, dict):
            return value if any(p == [] for p in patterns) else None
        if any(p == [] for p in patterns):
            return value
        out = {}
        for k, v in value.items():
            sub = [p[1:] for p in patterns if p and (p[0] == "*" or p[0] == k)]
            if sub:
                kept = keep(v, sub)
                if kept is not None:
                    out[k] = kept
        return out or None

    return keep(obj, [p.split(".") for p in paths]) or {}


def error_body(status, kind, reason):
    return {"error": {"root_cause": [{"type": kind, "reason": reason}], "type": kind,
                      "reason": reason}, "status": status}


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    store: Store = None
    auth = None  # set of accepted Authorization header values, or None
    ack_only = False
    tls = None  # an SSLContext: each connection's handshake runs in its own thread

    def setup(self):
        if self.tls is not None:
            self.request = self.tls.wrap_socket(self.request, server_side=True)
        super().setup()

    def log_message(self, *args):  # quiet
        pass

    def reply(self, status, obj):
        body = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("X-elastic-product", "Elasticsearch")
        self.end_headers()
        self.wfile.write(body)

    def body(self):
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n else b""

    def authorized(self):
        if self.auth is None or self.path.startswith("/_test/"):
            return True
        got = self.headers.get("Authorization")
        if got in self.auth:
            return True
        with self.store.lock:
            self.store.stats["auth_failures"] += 1
        reason = ("missing authentication credentials for REST request" if got is None
                  else "unable to authenticate user for REST request")
        self.reply(401, error_body(401, "security_exception", f"{reason} [{self.path}]"))
        return False

    def do_GET(self):
        raw = self.body()
        del raw
        if not self.authorized():
            return
        url = urlsplit(self.path)
        s = self.store
        if url.path == "/":
            self.reply(200, {"name": "es-test", "version": {"number": "8.15.0"},
                             "tagline": "You Know, for Search"})
        elif url.path == "/_test/stats":
            with s.lock:
                out = dict(s.stats)
                out["docs"] = {k: len(v) for k, v in s.docs.items()}
                out["streams"] = sorted(s.streams)
            self.reply(200, out)
        elif url.path == "/_test/docs":
            with s.lock:
                lines = [json.dumps({"index": i, "_id": k, "_source": json.loads(v)})
                         for i, docs in s.docs.items() for k, v in docs.items()]
            body = ("\n".join(lines) + ("\n" if lines else "")).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/x-ndjson")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        elif url.path.startswith("/_component_template/") or url.path.startswith("/_index_template/"):
            kind, name = url.path[2:].split("/", 1)
            table = s.components if kind == "component_template" else s.index_templates
            with s.lock:
                t = table.get(name)
            if t is None:
                self.reply(404, error_body(404, "resource_not_found_exception",
                                           f"{kind} matching [{name}] not found"))
            else:
                key = "component_templates" if kind == "component_template" else "index_templates"
                self.reply(200, {key: [{"name": name, kind: t}]})
        else:
            self.reply(404, error_body(404, "no_handler", f"no handler for {url.path}"))

    def do_PUT(self):
        raw = self.body()
        if not self.authorized():
            return
        url = urlsplit(self.path)
        s = self.store
        try:
            body = json.loads(raw)
        except ValueError as e:
            self.reply(400, error_body(400, "parse_exception", f"request body is not JSON: {e}"))
            return
        if url.path.startswith("/_component_template/"):
            name = url.path.split("/", 2)[2]
            if not isinstance(body, dict) or "template" not in body:
                self.reply(400, error_body(400, "action_request_validation_exception",
                                           "Validation Failed: 1: template is missing;"))
                return
            with s.lock:
                s.components[name] = body
                s.save_templates()
            self.reply(200, {"acknowledged": True})
        elif url.path.startswith("/_index_template/"):
            name = url.path.split("/", 2)[2]
            if not isinstance(body, dict) or not body.get("index_patterns"):
                self.reply(400, error_body(400, "action_request_validation_exception",
                                           "Validation Failed: 1: index patterns are missing;"))
                return
            optional = set(body.get("ignore_missing_component_templates", []))
            with s.lock:
                missing = [c for c in body.get("composed_of", [])
                           if c not in s.components and c not in optional]
                if not missing:
                    s.index_templates[name] = body
                    s.save_templates()
            if missing:
                self.reply(400, error_body(
                    400, "invalid_index_template_exception",
                    f"index_template [{name}] invalid, cause [index template [{name}] specifies "
                    f"component templates {missing} that do not exist]"))
            else:
                self.reply(200, {"acknowledged": True})
        else:
            self.reply(405, error_body(405, "method_not_allowed", url.path))

    def do_POST(self):
        raw = self.body()
        url = urlsplit(self.path)
        s = self.store
        if url.path == "/_test/faults":
            with s.lock:
                s.faults.update(json.loads(raw or b"{}"))
            self.reply(200, s.faults)
            return
        if not self.authorized():
            return
        if not (url.path == "/_bulk" or url.path.endswith("/_bulk")):
            self.reply(404, error_body(404, "no_handler", url.path))
            return
        with s.lock:
            s.stats["requests"] += 1
            s.stats["bulk_requests"] += 1
            faults = dict(s.faults)
            forced = s.faults["reject_next"].pop(0) if s.faults["reject_next"] else None
        if faults["delay_ms"]:
            time.sleep(faults["delay_ms"] / 1000)
        if forced:
            with s.lock:
                s.stats["request_rejections"] += 1
            kind = "es_rejected_execution_exception" if forced == 429 else "unavailable"
            self.reply(forced, error_body(forced, kind, "injected by the test"))
            return
        if len(raw) > faults["max_content_length"]:
            with s.lock:
                s.stats["too_large"] += 1
            self.reply(413, error_body(413, "content_too_long",
                                       f"Request content length [{len(raw)}] exceeds "
                                       f"[{faults['max_content_length']}]"))
            return
        if self.headers.get("Content-Encoding") == "gzip":
            with s.lock:
                s.stats["gzip_requests"] += 1
            try:
                raw = gzip.decompress(raw)
            except OSError as e:
                self.reply(400, error_body(400, "parse_exception", f"bad gzip body: {e}"))
                return
        ctype = (self.headers.get("Content-Type") or "").split(";")[0].strip()
        if ctype not in ("application/x-ndjson", "application/json"):
            self.reply(406, error_body(406, "media_type_header_exception",
                                       f"Content-Type header [{ctype}] is not supported"))
            return
        if self.ack_only:
            # The bench's mode: the body is read, unzipped and counted, not stored, so that
            # the client's speed is what is measured.
            if raw and not raw.endswith(b"\n"):
                self.reply(400, error_body(400, "illegal_argument_exception",
                                           "The bulk request must be terminated by a newline [\\n]"))
                return
            n = raw.count(b"\n") // 2
            with s.lock:
                s.stats["items"] += n
                s.stats["created"] += n
            self.reply(200, {"took": 1, "errors": False})
            return
        default_target = url.path[1:-len("/_bulk")] if url.path != "/_bulk" else None
        try:
            results = self.bulk(raw, default_target, faults)
        except ValueError as e:
            with s.lock:
                s.stats["malformed_requests"] += 1
            self.reply(400, error_body(400, "illegal_argument_exception", str(e)))
            return
        out = {"took": 1, "errors": any("error" in list(r.values())[0] for r in results),
               "items": results}
        q = parse_qs(url.query)
        if "filter_path" in q:
            out = filter_response(out, ",".join(q["filter_path"]).split(","))
        self.reply(200, out)

    def bulk(self, raw, default_target, faults):
        """The items' results; ValueError for a request Elasticsearch refuses whole."""
        s = self.store
        if raw and not raw.endswith(b"\n"):
            raise ValueError("The bulk request must be terminated by a newline [\\n]")
        lines = raw.split(b"\n")[:-1] if raw else []
        actions = []
        i = 0
        while i < len(lines):
            line = lines[i]
            if not line.strip():
                i += 1
                continue
            try:
                action = json.loads(line)
            except ValueError:
                raise ValueError(f"Malformed action/metadata line [{i + 1}], expected START_OBJECT")
            if not isinstance(action, dict) or len(action) != 1:
                raise ValueError(f"Malformed action/metadata line [{i + 1}], expected a simple value "
                                 f"for field [{next(iter(action), '')}]")
            op, meta = next(iter(action.items()))
            if op not in ("create", "index", "update", "delete") or not isinstance(meta, dict):
                raise ValueError(f"Malformed action/metadata line [{i + 1}], expected one of "
                                 f"[create, delete, index, update] but found [{op}]")
            doc = None
            if op != "delete":
                if i + 1 >= len(lines):
                    raise ValueError(f"Validation Failed: 1: no requests added;"
                                     if not actions else "The bulk request must be terminated by a newline [\\n]")
                doc = lines[i + 1]
                i += 2
            else:
                i += 1
            actions.append((op, meta, doc))
        if not actions:
            raise ValueError("Validation Failed: 1: no requests added;")
        results = []
        new_lines = []
        with s.lock:
            for op, meta, doc in actions:
                s.stats["items"] += 1
                target = meta.get("_index", default_target)
                _id = meta.get("_id")
                r = {"_index": target, "_id": _id}
                if target is None:
                    r.update(status=400, error={"type": "action_request_validation_exception",
                                                "reason": "Validation Failed: 1: index is missing;"})
                    results.append({op: r})
                    continue
                if faults["item_reject_rate"] and s.rng.random() < faults["item_reject_rate"]:
                    st = faults["item_reject_status"]
                    s.stats["item_rejections"] += 1
                    r.update(status=st, error={
                        "type": "es_rejected_execution_exception" if st == 429 else "unavailable_shards_exception",
                        "reason": "rejected execution of coordinating operation (injected)"})
                    results.append({op: r})
                    continue
                stream = self.stream_for(target)
                if stream is not None and op != "create":
                    r.update(status=400, error={
                        "type": "illegal_argument_exception",
                        "reason": f"only write ops with an op_type of create are allowed in data streams"})
                    results.append({op: r})
                    continue
                try:
                    source = loads(doc)
                    if not isinstance(source, dict):
                        raise ValueError("not an object")
                except ValueError as e:
                    s.stats["mapping_errors"] += 1
                    r.update(status=400, error={"type": "document_parsing_exception",
                                                "reason": f"[1:1] failed to parse: {e}"})
                    results.append({op: r})
                    continue
                if stream is not None:
                    if "@timestamp" not in source:
                        s.stats["mapping_errors"] += 1
                        r.update(status=400, error={
                            "type": "document_parsing_exception",
                            "reason": "data stream timestamp field [@timestamp] is missing"})
                        results.append({op: r})
                        continue
                    try:
                        check_doc(stream, source)
                    except MappingError as e:
                        s.stats["mapping_errors"] += 1
                        r.update(status=400, error={"type": "document_parsing_exception",
                                                    "reason": str(e).replace("%s", str(_id))})
                        results.append({op: r})
                        continue
                docs = s.docs.setdefault(target, {})
                if _id is None:
                    _id = f"auto-{len(docs)}-{s.rng.random()}"
                    r["_id"] = _id
                if _id in docs:
                    if op == "create":
                        s.stats["conflicts"] += 1
                        r.update(status=409, error={
                            "type": "version_conflict_engine_exception",
                            "reason": f"[{_id}]: version conflict, document already exists "
                                      f"(current version [1])"})
                        results.append({op: r})
                        continue
                docs[_id] = doc
                s.stats["created"] += 1
                r.update(status=201, result="created", _version=1)
                results.append({op: r})
                if s.log:
                    new_lines.append(json.dumps({"index": target, "_id": _id,
                                                 "source": doc.decode()}).encode() + b"\n")
            if s.log and new_lines:
                s.log.write(b"".join(new_lines))
                s.log.flush()
        return results

    def stream_for(self, target):
        """The mapping of the data stream `target` is (created on first write), or None."""
        s = self.store
        if target in s.streams:
            return s.streams[target]
        best = None
        for name, t in s.index_templates.items():
            if "data_stream" not in t:
                continue
            if any(glob_match(p, target) for p in t["index_patterns"]):
                if best is None or t.get("priority", 0) > best[1].get("priority", 0):
                    best = (name, t)
        if best is None:
            return None
        props = {}
        for c in best[1].get("composed_of", []):
            comp = s.components.get(c)
            if comp:
                merge_props(props, comp.get("template", {}).get("mappings", {}).get("properties", {}))
        merge_props(props, best[1].get("template", {}).get("mappings", {}).get("properties", {}))
        s.streams[target] = props
        s.save_templates()
        return props


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--port-file")
    ap.add_argument("--data")
    ap.add_argument("--user", help="user:password accepted with Basic auth")
    ap.add_argument("--api-key", help="an encoded API key accepted with ApiKey auth")
    ap.add_argument("--max-content-length", type=int)
    ap.add_argument("--item-reject-rate", type=float)
    ap.add_argument("--reject-next", help="comma-separated statuses for the next bulk requests")
    ap.add_argument("--tls-cert", help="serve HTTPS with this PEM certificate (and --tls-key)")
    ap.add_argument("--tls-key")
    ap.add_argument("--ack-only", action="store_true",
                    help="for benches: count and acknowledge bulk items without storing them")
    args = ap.parse_args()
    store = Store(args.data)
    if args.max_content_length:
        store.faults["max_content_length"] = args.max_content_length
    if args.item_reject_rate:
        store.faults["item_reject_rate"] = args.item_reject_rate
    if args.reject_next:
        store.faults["reject_next"] = [int(x) for x in args.reject_next.split(",")]
    auth = None
    if args.user or args.api_key:
        auth = set()
        if args.user:
            auth.add("Basic " + base64.b64encode(args.user.encode()).decode())
        if args.api_key:
            auth.add("ApiKey " + args.api_key)
    Handler.store = store
    Handler.auth = auth
    Handler.ack_only = args.ack_only
    server = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    server.daemon_threads = True
    if args.tls_cert:
        import ssl
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(args.tls_cert, args.tls_key)
        Handler.tls = ctx
    port = server.server_address[1]
    if args.port_file:
        with open(args.port_file + ".tmp", "w") as f:
            f.write(str(port))
        os.replace(args.port_file + ".tmp", args.port_file)
    print(f"listening on 127.0.0.1:{port}", file=sys.stderr, flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
