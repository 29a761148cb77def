#!/usr/bin/env python3
"""A fault-injecting HTTP proxy on 127.0.0.1 between makd and an OpenAI-compatible server.

Faults are deterministic per request body (a retry sends the same body): a rule matches bodies
containing a substring and gives the n-th attempt of each such body the n-th fault of its list;
later attempts pass through. `always` injects on every attempt.

Rules file (JSON): {"stall_s": 3, "rules": [{"match": "q01", "faults": ["500", "429"]},
                                            {"match": "q07", "always": "neither"}]}
Fault kinds:
  500 / 503     status with an OpenAI-style error body
  429           with Retry-After: 1
  stall         sleep stall_s, then forward (the client should have timed out)
  drop          close the connection without a response
  truncate      forward, then send only half the body and close
  nonjson       200 with an HTML body
  nologprobs    forward, remove choices[0].logprobs
  no_no         forward, remove every No spelling from the candidates (-> floored)
  neither       forward, remove every Yes and No spelling (-> missing)
  401           401 whose message echoes the Authorization header (tests key scrubbing)
GET /__stats returns {"requests": n, "injected": {kind: n}, "auth_seen": n}.
Every forwarded exchange is appended to --record FILE as one JSON line {"request", "response"}.

Usage: fault_proxy.py UPSTREAM_BASE_URL RULES.json [--record FILE]
Prints `READY http://127.0.0.1:PORT/v1`, serves until stdin closes.
"""
import argparse
import http.client
import json
import os
import socket
import sys
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

LOCK = threading.Lock()
ATTEMPTS = {}
STATS = {"requests": 0, "injected": {}, "auth_seen": 0}


def norm(tok):
    t = tok.lstrip(" \t\n\u0120\u2581").rstrip(" .,!;:")
    return t.lower()


def strip_tokens(resp, words):
    for ch in resp.get("choices", []):
        lp = ch.get("logprobs") or {}
        for c in lp.get("content") or []:
            c["top_logprobs"] = [t for t in c.get("top_logprobs", []) if norm(t["token"]) not in words]
            if norm(c.get("token", "")) in words:
                # Keep the sampled token out of the candidates too.
                c["token"] = "\u2047"
    return resp


def make_handler(upstream, cfg, record):
    up = urllib.parse.urlparse(upstream)
    base_path = up.path.rstrip("/")
    if base_path.endswith("/v1"):
        base_path = base_path[: -len("/v1")]

    def pick_fault(body):
        text = body.decode("utf-8", "replace")
        with LOCK:
            n = ATTEMPTS.get(body, 0)
            ATTEMPTS[body] = n + 1
        for r in cfg.get("rules", []):
            if r["match"] in text:
                if "always" in r:
                    return r["always"]
                fs = r.get("faults", [])
                return fs[n] if n < len(fs) else None
        return None

    class H(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *a):
            pass

        def send_json(self, code, obj, headers=()):
            data = json.dumps(obj).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for k, v in headers:
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self):
            if self.path == "/__stats":
                with LOCK:
                    self.send_json(200, STATS)
            else:
                self.send_json(404, {"error": {"message": "not here"}})

        def forward(self, body):
            c = http.client.HTTPConnection(up.hostname, up.port, timeout=60)
            path = base_path + self.path
            c.request("POST", path, body, {"Content-Type": "application/json"})
            r = c.getresponse()
            data = r.read()
            c.close()
            return r.status, data

        def do_POST(self):
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            fault = pick_fault(body)
            with LOCK:
                STATS["requests"] += 1
                if self.headers.get("Authorization"):
                    STATS["auth_seen"] += 1
                if fault:
                    STATS["injected"][fault] = STATS["injected"].get(fault, 0) + 1
            if fault in ("500", "503"):
                return self.send_json(int(fault), {"error": {"message": f"injected {fault}"}})
            if fault == "429":
                return self.send_json(429, {"error": {"message": "slow down"}}, [("Retry-After", "1")])
            if fault == "401":
                auth = self.headers.get("Authorization", "")
                return self.send_json(401, {"error": {"message": f"invalid credentials: {auth}"}})
            if fault == "drop":
                self.close_connection = True
                try:
                    self.connection.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                return
            if fault == "nonjson":
                data = b"<html><body>502 Bad Gateway</body></html>"
                self.send_response(200)
                self.send_header("Content-Type", "text/html")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
                return
            if fault == "stall":
                time.sleep(cfg.get("stall_s", 3))
            status, data = self.forward(body)
            if status == 200 and fault in ("nologprobs", "no_no", "neither"):
                resp = json.loads(data)
                if fault == "nologprobs":
                    for ch in resp.get("choices", []):
                        ch.pop("logprobs", None)
                elif fault == "no_no":
                    strip_tokens(resp, {"no"})
                else:
                    strip_tokens(resp, {"yes", "no"})
                data = json.dumps(resp).encode()
            if record and fault is None and status == 200:
                with LOCK, open(record, "a") as f:
                    f.write(json.dumps({"request": json.loads(body), "response": json.loads(data)}) + "\n")
            try:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if fault == "truncate":
                    self.wfile.write(data[: len(data) // 2])
                    self.wfile.flush()
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                else:
                    self.wfile.write(data)
            except OSError:
                self.close_connection = True  # the client gave up (stall past its timeout)

    return H


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("upstream")
    ap.add_argument("rules")
    ap.add_argument("--record")
    a = ap.parse_args()
    cfg = json.load(open(a.rules))
    srv = ThreadingHTTPServer(("127.0.0.1", 0), make_handler(a.upstream, cfg, a.record))
    srv.daemon_threads = True
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    print(f"READY http://127.0.0.1:{srv.server_address[1]}/v1", flush=True)
    sys.stdin.read()
    os._exit(0)


if __name__ == "__main__":
    main()
