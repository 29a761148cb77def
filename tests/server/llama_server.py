#!/usr/bin/env python3
"""Start llama.cpp's HTTP server (xllamacpp) on 127.0.0.1 for tests and benchmarks.

Prints `READY http://127.0.0.1:PORT/v1` on stdout once /health answers, then serves until stdin
closes (the parent test exited or dropped its handle) or SIGTERM. Loopback only.

Usage: llama_server.py MODEL.gguf [--slots N] [--threads N] [--ctx N] [--port N]
"""
import argparse
import json
import os
import signal
import socket
import sys
import threading
import time
import urllib.request


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("--slots", type=int, default=4)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--ctx", type=int, default=4096, help="total context, shared by the slots")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--alias", default="tiny")
    a = ap.parse_args()

    import xllamacpp as xlc

    port = a.port or free_port()
    p = xlc.CommonParams()
    p.model.path = a.model
    p.model_alias = a.alias
    p.hostnames = ["127.0.0.1"]
    p.port = port
    p.n_parallel = a.slots
    p.n_ctx = a.ctx
    p.cpuparams.n_threads = a.threads
    p.cpuparams_batch.n_threads = a.threads
    p.warmup = False
    server = xlc.Server(p)  # keeps serving while referenced

    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 120
    while True:
        try:
            with urllib.request.urlopen(url + "/health", timeout=2) as r:
                if r.status == 200 and json.loads(r.read() or b"{}").get("status", "ok") == "ok":
                    break
        except Exception:
            pass
        if time.time() > deadline:
            print("ERROR server did not become healthy in 120 s", flush=True)
            sys.exit(1)
        time.sleep(0.1)
    print(f"READY {url}/v1", flush=True)

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    threading.Thread(target=lambda: (sys.stdin.read(), stop.set()), daemon=True).start()
    stop.wait()
    del server
    os._exit(0)


if __name__ == "__main__":
    main()
