#!/usr/bin/env python3
"""The e2e hook server: what a ManagerConfig's workers POST each object to (docs/design.md §4).

    hook-server.py PORT LOG_FILE

Listens on 127.0.0.1:PORT. Every request is appended to LOG_FILE as one JSON line:
{"t": unix time, "path", "manager": "ns/name", "worker", "holder", "fencingToken", "object":
"ns/name", "status"}. Answers 200 with {"requeueAfterSeconds": 30}, or 500 when the object has
the label `e2e.manager-operator.io/fail: "true"` (to exercise hook errors). Acts as a
fencing-aware downstream: it logs, per manager, any call whose fencing token is lower than one
already seen ("stale": true).
"""
import json
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

LOCK = threading.Lock()
HIGHEST = {}


class Hook(BaseHTTPRequestHandler):
    def do_POST(self):  # noqa: N802 (http.server API)
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length)
        try:
            body = json.loads(raw or b"{}")
        except ValueError:
            body = {}
        mgr = body.get("manager") or {}
        obj = body.get("object") or {}
        meta = obj.get("metadata") or {}
        labels = meta.get("labels") or {}
        manager = f"{mgr.get('namespace')}/{mgr.get('name')}"
        token = body.get("fencingToken")
        fail = labels.get("e2e.manager-operator.io/fail") == "true"
        status = 500 if fail else 200
        with LOCK:
            stale = isinstance(token, int) and token < HIGHEST.get(manager, -1)
            if isinstance(token, int) and not stale:
                HIGHEST[manager] = token
            rec = {"t": time.time(), "path": self.path, "manager": manager,
                   "worker": body.get("worker"), "holder": body.get("holder"),
                   "fencingToken": token, "object": f"{meta.get('namespace')}/{meta.get('name')}",
                   "status": status, "stale": stale}
            with open(sys.argv[2], "a", encoding="utf-8") as f:
                f.write(json.dumps(rec) + "\n")
        payload = b'{"requeueAfterSeconds": 30}' if status == 200 else b'{"error": "e2e: told to fail"}'
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *_):
        pass


if __name__ == "__main__":
    server = ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Hook)
    print(f"hook server on 127.0.0.1:{sys.argv[1]}", flush=True)
    server.serve_forever()
