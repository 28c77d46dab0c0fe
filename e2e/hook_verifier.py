#!/usr/bin/env python3
"""A hook that verifies manager-operator's signed calls (Standard Webhooks), standard library only.

docs/hooks.md quotes the verification part (between the `verify: begin/end` markers) verbatim;
tests/signing.rs checks that the two agree and runs this server against real signed calls.

    python3 e2e/hook_verifier.py --secret whsec_... [--secret whsec_...] [--port 0]
    python3 e2e/hook_verifier.py --self-test

Server: POST any path = a hook call. 401 unless a signature verifies with one of the secrets
and the timestamp is within the tolerance; 200 without processing for a webhook-id already
accepted (a retry of a call already handled, or a replay); 409 for a fencingToken lower than
one already accepted for that config and worker; else 200. Test helpers: GET /calls lists what
was received, POST /secrets replaces the accepted secrets (a JSON list). The first line printed
is `listening on http://127.0.0.1:PORT`.
"""

import argparse
import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

# --- verify: begin ---
import base64
import hashlib
import hmac
import time

TOLERANCE_SECONDS = 5 * 60


class VerifyError(Exception):
    pass


def secret_key(secret: str) -> bytes:
    """`whsec_<base64>` -> the decoded key; any other value is the key itself."""
    if secret.startswith("whsec_"):
        return base64.b64decode(secret[len("whsec_"):])
    return secret.encode()


def verify(secrets, headers, body: bytes, now=None):
    """Checks one call; returns its webhook-id or raises VerifyError.

    `secrets`: every secret the hook accepts now (one, or two during a rotation);
    `headers`: a case-insensitive mapping; `body`: the raw request body, not re-encoded JSON.
    The caller still has to drop ids it has already accepted (replay protection).
    """
    msg_id = headers.get("webhook-id")
    timestamp = headers.get("webhook-timestamp")
    signatures = headers.get("webhook-signature")
    if not (msg_id and timestamp and signatures):
        raise VerifyError("missing webhook-id, webhook-timestamp or webhook-signature")
    try:
        ts = int(timestamp)
    except ValueError:
        raise VerifyError("webhook-timestamp is not an integer")
    now = int(time.time()) if now is None else now
    if abs(now - ts) > TOLERANCE_SECONDS:
        raise VerifyError("webhook-timestamp is outside the tolerance")
    signed = msg_id.encode() + b"." + timestamp.encode() + b"." + body
    for secret in secrets:
        expected = base64.b64encode(
            hmac.new(secret_key(secret), signed, hashlib.sha256).digest()
        ).decode()
        for entry in signatures.split(" "):
            version, _, sig = entry.partition(",")
            if version == "v1" and hmac.compare_digest(sig, expected):
                return msg_id
    raise VerifyError("no signature matches")
# --- verify: end ---


class State:
    def __init__(self, secrets):
        self.lock = threading.Lock()
        self.secrets = list(secrets)
        self.accepted_ids = {}  # webhook-id -> accepted at (unix seconds)
        self.tokens = {}  # (namespace, name, worker) -> highest fencingToken accepted
        self.calls = []


def make_handler(state):
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def answer(self, code, payload):
            data = json.dumps(payload).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def read_body(self):
            return self.rfile.read(int(self.headers.get("Content-Length") or 0))

        def do_GET(self):
            if self.path == "/calls":
                with state.lock:
                    self.answer(200, state.calls)
            else:
                self.answer(404, {})

        def do_POST(self):
            body = self.read_body()
            if self.path == "/secrets":
                with state.lock:
                    state.secrets = json.loads(body)
                self.answer(200, {})
                return
            record = {
                "id": self.headers.get("webhook-id"),
                "timestamp": self.headers.get("webhook-timestamp"),
                "signature": self.headers.get("webhook-signature"),
                "signatures": len((self.headers.get("webhook-signature") or "").split()),
                "body": body.decode("utf-8", "replace"),
            }
            try:
                call = json.loads(body)
                record["token"] = call.get("fencingToken")
                record["object"] = ((call.get("object") or {}).get("metadata") or {}).get("name")
            except ValueError:
                call = None
            with state.lock:
                now = int(time.time())
                for old in [i for i, t in state.accepted_ids.items() if now - t > 2 * TOLERANCE_SECONDS]:
                    del state.accepted_ids[old]
                try:
                    msg_id = verify(state.secrets, self.headers, body, now)
                except VerifyError as e:
                    record.update(outcome="rejected", reason=str(e))
                    state.calls.append(record)
                    self.answer(401, {"error": str(e)})
                    return
                if msg_id in state.accepted_ids:
                    record["outcome"] = "duplicate"
                    state.calls.append(record)
                    self.answer(200, {})
                    return
                manager = call.get("manager") or {}
                scope = (manager.get("namespace"), manager.get("name"), call.get("worker"))
                token = call.get("fencingToken")
                if not isinstance(token, int) or token < state.tokens.get(scope, -1):
                    record["outcome"] = "fenced"
                    state.calls.append(record)
                    self.answer(409, {"error": "stale fencingToken"})
                    return
                state.tokens[scope] = token
                state.accepted_ids[msg_id] = now
                record["outcome"] = "accepted"
                state.calls.append(record)
            self.answer(200, {})

    return Handler


def self_test():
    # The known vector of the Standard Webhooks reference libraries.
    secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    body = b'{"test": 2432232314}'
    headers = {
        "webhook-id": "msg_p5jXN8AQM9LWM0D4loKWxJek",
        "webhook-timestamp": "1614265330",
        "webhook-signature": "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=",
    }
    assert verify([secret], headers, body, now=1614265330) == headers["webhook-id"]
    two = dict(headers, **{"webhook-signature": "v1,AAAA " + headers["webhook-signature"]})
    assert verify([secret], two, body, now=1614265330)
    for bad_body, bad_headers, now in [
        (b'{"test": 2147483647}', headers, 1614265330),
        (body, dict(headers, **{"webhook-id": "msg_other"}), 1614265330),
        (body, headers, 1614265330 + TOLERANCE_SECONDS + 1),
        (body, {k: v for k, v in headers.items() if k != "webhook-signature"}, 1614265330),
    ]:
        try:
            verify([secret], bad_headers, bad_body, now=now)
        except VerifyError:
            continue
        raise AssertionError("accepted a bad call")
    print("self-test ok")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--secret", action="append", default=[])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--self-test", action="store_true")
    args = parser.parse_args()
    if args.self_test:
        self_test()
        return
    server = ThreadingHTTPServer(("127.0.0.1", args.port), make_handler(State(args.secret)))
    print(f"listening on http://127.0.0.1:{server.server_address[1]}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    sys.exit(main())
