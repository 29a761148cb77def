#!/usr/bin/env python3
"""Serve the tiny random InternVL fixture through llama.cpp's multimodal server (xllamacpp).

    tiny_vlm_server.py PORT [--slots N] [--threads N] [--ctx-per-slot N]

Builds model.gguf + mmproj.gguf from tests/fixtures/internvl/original with
scripts/internvl-gguf.py into target/tiny-vlm/<hash of fixture and converter>/ unless they are
there already, starts the server on 127.0.0.1:PORT (0: a free port) under the model name
`tiny-vlm`, prints exactly one line `READY http://127.0.0.1:PORT/v1` on stdout once
/v1/models answers with that name, and serves until SIGTERM / SIGINT. Everything else goes to
stderr. scripts/tiny-vlm-server is the command a user runs; this file is what it execs (and
what tests can spawn like the other helpers here).

The KV cache is float32 and flash attention off, so that the server's numbers are as close
to transformers' float32 reference as llama.cpp gets (tests/fixtures/internvl/NOTES.md §6).
"""
import argparse
import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FIXTURE = os.path.join(ROOT, "tests", "fixtures", "internvl", "original")
CONVERTER = os.path.join(ROOT, "scripts", "internvl-gguf.py")
CACHE = os.path.join(ROOT, "target", "tiny-vlm")
MODEL_NAME = "tiny-vlm"
HINT = "run scripts/setup.sh (it makes .venv/ with xllamacpp and gguf), or pip install xllamacpp gguf numpy"


def fail(msg, hint=None):
    print(f"tiny-vlm-server: {msg}" + (f"\n  hint: {hint}" if hint else ""), file=sys.stderr, flush=True)
    sys.exit(2)


def cache_key():
    """Changes whenever the fixture or the converter changes, so a stale GGUF is never served."""
    h = hashlib.sha256()
    for path in [CONVERTER] + [os.path.join(FIXTURE, f) for f in sorted(os.listdir(FIXTURE))]:
        h.update(os.path.basename(path).encode() + b"\0")
        with open(path, "rb") as f:
            h.update(f.read())
    return h.hexdigest()[:16]


def ensure_ggufs():
    out = os.path.join(CACHE, cache_key())
    model, mmproj = os.path.join(out, "model.gguf"), os.path.join(out, "mmproj.gguf")
    if os.path.isfile(model) and os.path.isfile(mmproj):
        return model, mmproj
    tmp = f"{out}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    r = subprocess.run([sys.executable, CONVERTER, FIXTURE, tmp], stdout=sys.stderr, stderr=sys.stderr)
    if r.returncode != 0:
        shutil.rmtree(tmp, ignore_errors=True)
        fail(f"converting {FIXTURE} failed (exit {r.returncode})")
    try:
        os.replace(tmp, out)  # atomic; another process may have won the race, which is fine
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
    return model, mmproj


def port_free(port):
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
            return s.getsockname()[1]
        except OSError:
            return None


def main():
    ap = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    ap.add_argument("port", type=int, help="loopback port (0: pick a free one)")
    ap.add_argument("--slots", type=int, default=4, help="parallel sequences (default 4)")
    ap.add_argument("--threads", type=int, default=2, help="CPU threads (default 2)")
    ap.add_argument("--ctx-per-slot", type=int, default=2048,
                    help="context per slot (default 2048; the fixture's largest prompt, 5 tiles, is 1335 tokens)")
    a = ap.parse_args()
    if not 0 <= a.port <= 65535:
        fail(f"port {a.port} is not in 0..65535")
    if a.slots < 1 or a.threads < 1 or a.ctx_per_slot < 512:
        fail("--slots and --threads must be >= 1 and --ctx-per-slot >= 512")
    try:
        import gguf  # noqa: F401  (the converter needs it)
        import xllamacpp as xlc
    except ImportError as e:
        fail(f"{sys.executable} cannot import {e.name}", HINT)
    if not os.path.isdir(FIXTURE):
        fail(f"{FIXTURE} is missing", "run from a checkout of the repository")

    port = port_free(a.port)
    if port is None:
        fail(f"127.0.0.1:{a.port} is in use", "pick another port, or 0 for a free one")
    model, mmproj = ensure_ggufs()

    p = xlc.CommonParams()
    p.model.path = model
    p.mmproj.path = mmproj
    p.mmproj_use_gpu = False
    p.model_alias = {MODEL_NAME}
    p.hostnames = ["127.0.0.1"]
    p.port = port
    p.n_parallel = a.slots
    p.n_ctx = a.slots * a.ctx_per_slot
    p.cpuparams.n_threads = a.threads
    p.cpuparams_batch.n_threads = a.threads
    p.cache_type_k = xlc.ggml_type.GGML_TYPE_F32
    p.cache_type_v = xlc.ggml_type.GGML_TYPE_F32
    p.flash_attn_type = xlc.llama_flash_attn_type.LLAMA_FLASH_ATTN_TYPE_DISABLED
    p.warmup = False
    server = xlc.Server(p)  # serves while referenced

    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 120
    while True:
        try:
            with urllib.request.urlopen(url + "/v1/models", timeout=2) as r:
                ids = [m.get("id") for m in json.loads(r.read()).get("data", [])]
                if r.status == 200 and MODEL_NAME in ids:
                    break
        except Exception:
            pass
        if time.time() > deadline:
            fail(f"the server on {url} did not answer /v1/models with {MODEL_NAME!r} within 120 s")
        time.sleep(0.1)
    print(f"READY {url}/v1", flush=True)

    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, lambda *_: stop.set())
    while not stop.wait(3600):
        pass
    del server
    os._exit(0)


if __name__ == "__main__":
    main()
