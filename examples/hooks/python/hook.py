#!/usr/bin/env python3
"""An example manager-operator hook (protocol v1), standard library only.

It implements the whole hook contract of docs/hooks.md:

* signed calls (Standard Webhooks): with HOOK_SIGNING_SECRET set, every call must carry a valid
  `webhook-signature` over the raw body, made within 5 minutes; otherwise 401;
* fencing: the highest `fencingToken` accepted per (manager namespace, manager name, worker) is
  remembered; a call with a lower one comes from a deposed leader and is refused with 409;
* idempotency: the `deliveryId`s of accepted calls are remembered (the last 10,000, for 10
  minutes); a repeat is answered 200 without acting again;
* `Sync` stores the object in the "external system", `Deleted` removes it (a `Deleted` for an
  object the system does not hold is a success: deleting is idempotent).

The "external system" is an in-memory map keyed by `<apiVersion>/<kind>/<namespace>/<name>`,
served on `GET /state` and, with `--state-file`, written to a JSON file (atomically) after
every change. The file also holds the fencing tokens and the accepted delivery ids, so a
restarted hook keeps refusing what it refused before.

    HOOK_SIGNING_SECRET='whsec_...' python3 hook.py --listen 127.0.0.1:8080 --state-file state.json

Every POST (any path) is a hook call; `GET /state` is the state; `GET /healthz` answers 200.
The first line printed on stdout is `listening on http://HOST:PORT` (useful with port 0).
"""

import argparse
import base64
import binascii
import collections
import hashlib
import hmac
import json
import os
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

PROTOCOL = "hooks.manager-operator.io/v1"
# How far `webhook-timestamp` may be from our clock (Standard Webhooks' default). Stops the
# replay of a captured call once its id has been forgotten.
TOLERANCE_SECONDS = 5 * 60
# Accepted delivery ids are kept for twice the tolerance: a replay older than that fails the
# timestamp check anyway. The count bound keeps memory bounded under a flood of calls.
DELIVERY_ID_TTL_SECONDS = 2 * TOLERANCE_SECONDS
MAX_DELIVERY_IDS = 10_000
# Larger bodies are refused (413) before they are read. Kubernetes objects are at most ~1.5 MiB.
MAX_BODY_BYTES = 4 * 1024 * 1024
# A client that stops sending mid-request gives up its thread after this long.
SOCKET_TIMEOUT_SECONDS = 30


class Refused(Exception):
    """A call the hook does not act on: HTTP `status` with `{"error": message}`."""

    def __init__(self, status, message):
        super().__init__(message)
        self.status = status
        self.message = message


# ------------------------------------------------------------------------------------------
# Signature verification (Standard Webhooks), over the raw body bytes.


def parse_secrets(value):
    """HOOK_SIGNING_SECRET -> the list of keys to accept.

    Space-separated, so that during a rotation the hook can accept the old and the new secret.
    `whsec_<base64>` is the Standard Webhooks form (the key is the decoded bytes); any other
    value is used as the key byte for byte, as the operator does.
    """
    keys = []
    for secret in value.split():
        if secret.startswith("whsec_"):
            try:
                keys.append(base64.b64decode(secret[len("whsec_"):], validate=True))
            except binascii.Error:
                raise SystemExit("HOOK_SIGNING_SECRET: whsec_ is not followed by base64")
        else:
            keys.append(secret.encode())
    return keys


def verify_signature(keys, headers, body, now):
    """Raises Refused(401) unless one of `keys` signed this exact call recently."""
    msg_id = headers.get("webhook-id")
    timestamp = headers.get("webhook-timestamp")
    signatures = headers.get("webhook-signature")
    if not (msg_id and timestamp and signatures):
        raise Refused(401, "missing webhook-id, webhook-timestamp or webhook-signature")
    try:
        ts = int(timestamp)
    except ValueError:
        raise Refused(401, "webhook-timestamp is not an integer")
    # Without this check a captured call could be replayed forever once its id is forgotten.
    if abs(now - ts) > TOLERANCE_SECONDS:
        raise Refused(401, "webhook-timestamp is more than 5 minutes away from our clock")
    # The signed content is "{id}.{timestamp}.{body}": the id and the time cannot be changed
    # without breaking the signature, nor can a single byte of the body.
    signed = msg_id.encode() + b"." + timestamp.encode() + b"." + body
    for key in keys:
        expected = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest())
        # The header is a space-separated list: two entries while the operator rotates keys.
        for entry in signatures.split(" "):
            version, _, sig = entry.partition(",")
            # compare_digest takes the same time wherever the first difference is, so a forger
            # cannot find the right signature byte by byte by timing our answers.
            if version == "v1" and hmac.compare_digest(sig.encode(), expected):
                return
    raise Refused(401, "no webhook-signature matches")


# ------------------------------------------------------------------------------------------
# The call body.


def parse_call(body, header_id):
    """The JSON body -> a dict with the fields the hook uses; Refused(400) when unusable."""
    try:
        call = json.loads(body)
    except (UnicodeDecodeError, ValueError) as e:
        raise Refused(400, f"body is not JSON: {e}")
    if not isinstance(call, dict):
        raise Refused(400, "body is not a JSON object")
    # A later protocol version may change what fields mean: refuse rather than guess.
    if call.get("apiVersion") != PROTOCOL:
        raise Refused(400, f"unsupported apiVersion {call.get('apiVersion')!r}, want {PROTOCOL}")
    # Unknown types are refused (and so retried) instead of being silently dropped.
    if call.get("type") not in ("Sync", "Deleted"):
        raise Refused(400, f"unknown type {call.get('type')!r}")
    delivery_id = call.get("deliveryId")
    if not isinstance(delivery_id, str) or not delivery_id:
        raise Refused(400, "missing deliveryId")
    if header_id is not None and header_id != delivery_id:
        raise Refused(400, "deliveryId differs from the webhook-id header")
    manager = call.get("manager")
    if not (
        isinstance(manager, dict)
        and isinstance(manager.get("namespace"), str)
        and isinstance(manager.get("name"), str)
        and isinstance(call.get("worker"), str)
    ):
        raise Refused(400, "missing manager.namespace, manager.name or worker")
    token = call.get("fencingToken")
    # bool is an int subclass in Python: `true` is not a token.
    if not isinstance(token, int) or isinstance(token, bool):
        raise Refused(400, "fencingToken is not an integer")
    obj = call.get("object")
    meta = obj.get("metadata") if isinstance(obj, dict) else None
    if not (
        isinstance(meta, dict)
        and isinstance(obj.get("apiVersion"), str)
        and isinstance(obj.get("kind"), str)
        and isinstance(meta.get("name"), str)
    ):
        raise Refused(400, "object lacks apiVersion, kind or metadata.name")
    return call


def object_key(obj):
    """`<apiVersion>/<kind>/<namespace>/<name>` (namespace empty for cluster-scoped kinds)."""
    meta = obj["metadata"]
    return f"{obj['apiVersion']}/{obj['kind']}/{meta.get('namespace') or ''}/{meta['name']}"


# ------------------------------------------------------------------------------------------
# The hook's state: the external system, the fencing tokens, the accepted delivery ids.


class Hook:
    def __init__(self, keys, state_file):
        self.keys = keys
        self.state_file = state_file
        # One lock around each whole call: check, act, remember. Two calls for one object never
        # come at once, but calls for different objects (worker concurrency > 1) do, and all
        # of them read and move the fencing token.
        self.lock = threading.Lock()
        self.objects = {}  # object key -> what the external system holds for it
        self.tokens = {}  # "namespace/name/worker" -> highest fencingToken accepted
        self.delivered = collections.OrderedDict()  # deliveryId -> accepted at, oldest first
        self.counters = {
            "syncs": 0,  # Sync calls acted on
            "deletes": 0,  # Deleted calls acted on (including for objects we did not hold)
            "duplicates": 0,  # repeats of an accepted deliveryId, answered without acting
            "fenced": 0,  # refused with 409: a lower fencingToken than one accepted
            "unauthorized": 0,  # refused with 401: no valid signature
            "invalid": 0,  # refused with 400 or 413
        }
        if state_file and os.path.exists(state_file):
            self.load()

    # --- persistence ------------------------------------------------------------------------

    def snapshot(self):
        return {
            "objects": self.objects,
            "fencingTokens": self.tokens,
            "counters": self.counters,
            "deliveryIds": dict(self.delivered),
        }

    def load(self):
        with open(self.state_file) as f:
            saved = json.load(f)
        self.objects = saved.get("objects", {})
        self.tokens = saved.get("fencingTokens", {})
        self.counters.update(saved.get("counters", {}))
        self.delivered = collections.OrderedDict(
            sorted(saved.get("deliveryIds", {}).items(), key=lambda item: item[1])
        )

    def save(self, snapshot):
        """Writes the state file atomically: a reader sees the old file or the new one, never
        half of one (write a temporary file in the same directory, fsync, rename over)."""
        if not self.state_file:
            return
        directory = os.path.dirname(os.path.abspath(self.state_file))
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=".state-", suffix=".tmp")
        try:
            with os.fdopen(fd, "w") as f:
                json.dump(snapshot, f, indent=2, sort_keys=True)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.state_file)
        except BaseException:
            os.unlink(tmp)
            raise

    # --- delivery ids -----------------------------------------------------------------------

    def forget_old_deliveries(self, now):
        while self.delivered:
            oldest_id, accepted_at = next(iter(self.delivered.items()))
            if now - accepted_at <= DELIVERY_ID_TTL_SECONDS and len(self.delivered) <= MAX_DELIVERY_IDS:
                break
            del self.delivered[oldest_id]

    # --- one call ---------------------------------------------------------------------------

    def handle(self, headers, body):
        """One hook call -> (status, answer). Raises Refused for 4xx answers."""
        now = int(time.time())
        # 1. Authenticity, before anything else reads the body: a forged call must not be
        # able to move the fencing token, fill the id store or touch the external system.
        if self.keys:
            verify_signature(self.keys, headers, body, now)
        call = parse_call(body, headers.get("webhook-id"))
        delivery_id = call["deliveryId"]
        manager = call["manager"]
        scope = f"{manager['namespace']}/{manager['name']}/{call['worker']}"
        token = call["fencingToken"]
        with self.lock:
            self.forget_old_deliveries(now)
            # 2. Idempotency: a retry of a call we already acted on (our 200 was lost or came
            # too late), or a replay. Answer success so the operator stops retrying; do not
            # act twice.
            if delivery_id in self.delivered:
                self.counters["duplicates"] += 1
                log(f"duplicate {delivery_id}: already acted on")
                return 200, {}
            # 3. Fencing: a leader that lost its Lease may still be sending. Its token is lower
            # than its successor's, so once we accepted the successor we refuse it.
            highest = self.tokens.get(scope)
            if highest is not None and token < highest:
                self.counters["fenced"] += 1
                raise Refused(409, f"stale fencingToken {token} < {highest} for {scope}")
            # 4. Act, on a copy: if saving fails the call is refused (500) and nothing is
            # remembered, so the operator's retry (same deliveryId) is processed again.
            objects = dict(self.objects)
            counters = dict(self.counters)
            obj = call["object"]
            key = object_key(obj)
            if call["type"] == "Sync":
                entry = {
                    "resourceVersion": call.get("resourceVersion")
                    or obj["metadata"].get("resourceVersion"),
                    "uid": obj["metadata"].get("uid"),
                    "data": obj.get("data"),
                    "spec": obj.get("spec"),
                    "deliveryId": delivery_id,
                    "fencingToken": token,
                }
                objects[key] = {k: v for k, v in entry.items() if v is not None}
                counters["syncs"] += 1
                action = f"sync {key} rv={objects[key]['resourceVersion']}"
            else:
                held = objects.get(key)
                uid = obj["metadata"].get("uid")
                # A Deleted about an earlier object of the same name (its uid differs from the
                # one we hold) must not remove the object that replaced it.
                if held is not None and (uid is None or held.get("uid") in (None, uid)):
                    del objects[key]
                    action = f"delete {key}"
                else:
                    action = f"delete {key}: not held, nothing to do"
                counters["deletes"] += 1
            tokens = dict(self.tokens)
            tokens[scope] = token  # not lower than `highest` (checked above)
            delivered = collections.OrderedDict(self.delivered)
            # 5. Remember the id only now that the call was acted on successfully.
            delivered[delivery_id] = now
            self.save(
                {"objects": objects, "fencingTokens": tokens, "counters": counters,
                 "deliveryIds": dict(delivered)}
            )
            self.objects, self.counters, self.tokens, self.delivered = objects, counters, tokens, delivered
            log(f"{action} (token {token}, {delivery_id}, attempt {call.get('attempt')})")
            return 200, {}

    def count(self, counter):
        with self.lock:
            self.counters[counter] += 1

    def state(self):
        with self.lock:
            snapshot = self.snapshot()
            # The ids themselves are not interesting to a reader; their number is.
            snapshot["deliveryIds"] = len(self.delivered)
            return json.loads(json.dumps(snapshot))


def log(message):
    print(f"[hook] {message}", file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------------------
# HTTP.


def make_handler(hook):
    class Handler(BaseHTTPRequestHandler):
        # HTTP/1.1 keeps connections open between calls; every answer has a Content-Length.
        protocol_version = "HTTP/1.1"
        timeout = SOCKET_TIMEOUT_SECONDS

        def log_message(self, *args):
            pass

        def answer(self, status, payload):
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            if self.close_connection:
                self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self):
            if self.path == "/state":
                self.answer(200, hook.state())
            elif self.path == "/healthz":
                self.answer(200, {})
            else:
                self.answer(404, {"error": "not found"})

        def do_POST(self):
            try:
                body = self.read_body()
                status, payload = hook.handle(self.headers, body)
            except Refused as e:
                if e.status == 401:
                    hook.count("unauthorized")
                elif e.status in (400, 411, 413):
                    hook.count("invalid")
                log(f"refused {e.status}: {e.message}")
                status, payload = e.status, {"error": e.message}
            except Exception as e:  # e.g. the state file cannot be written
                log(f"failed: {e!r}")
                status, payload = 500, {"error": "internal error"}
            self.answer(status, payload)

        def read_body(self):
            """The raw body bytes, read only once its declared size is known to be acceptable."""
            if self.headers.get("Transfer-Encoding"):
                # The operator always sends a Content-Length; chunked bodies are not supported.
                self.close_connection = True
                raise Refused(411, "a Content-Length is required")
            length = self.headers.get("Content-Length")
            if length is None:
                self.close_connection = True
                raise Refused(411, "a Content-Length is required")
            try:
                length = int(length)
            except ValueError:
                length = -1
            if length < 0:
                self.close_connection = True
                raise Refused(400, "bad Content-Length")
            if length > MAX_BODY_BYTES:
                # Refuse before reading: the unread body is dropped with the connection.
                self.close_connection = True
                raise Refused(413, f"body larger than {MAX_BODY_BYTES} bytes")
            body = self.rfile.read(length)
            if len(body) != length:
                self.close_connection = True
                raise Refused(400, "body shorter than its Content-Length")
            return body

    return Handler


def parse_listen(value):
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit():
        raise SystemExit(f"--listen: want HOST:PORT, got {value!r}")
    return host.strip("[]") or "127.0.0.1", int(port)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--listen",
        default=os.environ.get("HOOK_LISTEN", "127.0.0.1:8080"),
        help="HOST:PORT to serve on (env HOOK_LISTEN; default 127.0.0.1:8080; port 0 = any free port)",
    )
    parser.add_argument(
        "--state-file",
        default=os.environ.get("HOOK_STATE_FILE"),
        help="JSON file holding the state, read at start, rewritten after every change (env HOOK_STATE_FILE)",
    )
    args = parser.parse_args()
    # From the environment, not a flag: command lines are visible to every user of the host.
    keys = parse_secrets(os.environ.get("HOOK_SIGNING_SECRET", ""))
    if not keys:
        log("WARNING: HOOK_SIGNING_SECRET is not set: accepting unsigned calls from anyone")
    hook = Hook(keys, args.state_file)
    server = ThreadingHTTPServer(parse_listen(args.listen), make_handler(hook))
    server.daemon_threads = True
    host, port = server.server_address[:2]
    print(f"listening on http://{host}:{port}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
