#!/usr/bin/env python3
"""A recording fake OpenAI-compatible server on 127.0.0.1, for what the tiny llama.cpp model
cannot show: image-mode requests (no vision GGUF + mmproj is available here) and aspect
generation with canned model text (a random model writes no questions).

- A yes/no request (logprobs asked for) gets `Yes` / ` No` / `The` candidates whose logprobs are
  derived from a SHA-256 of the request's text, so answers differ per question and image.
- A yes/no request whose text contains one of the config's `no_logprobs` substrings gets what
  llama.cpp's chat endpoint sends when the one sampled token is an incomplete UTF-8 sequence: the
  choice with content U+FFFD and no `logprobs` at all (as tiny-vlm-server answered for 2 of
  `makd bench label --mode image`'s 80 pairs). It is deterministic, as it is on the real server.
- Any other request gets the next text of `texts` from the config (the last one repeats).
Every exchange is appended to --record FILE as {"request", "response"} JSON lines.

Usage: fake_server.py CONFIG.json --record FILE
Prints `READY http://127.0.0.1:PORT/v1`, serves until stdin closes.
"""
import argparse
import hashlib
import json
import os
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

LOCK = threading.Lock()
STATE = {"next_text": 0}


def prompt_text(body):
    if "prompt" in body:
        return body["prompt"]
    parts = []
    for m in body.get("messages", []):
        c = m.get("content")
        if isinstance(c, str):
            parts.append(c)
        else:
            for p in c or []:
                parts.append(p.get("text") or p.get("image_url", {}).get("url", ""))
    return "\n".join(parts)


def yes_no_response(body):
    h = hashlib.sha256(prompt_text(body).encode()).digest()
    ly = -(int.from_bytes(h[:2], "big") % 400) / 100.0
    ln = -(int.from_bytes(h[2:4], "big") % 400) / 100.0
    tops = sorted(
        [{"token": "Yes", "logprob": ly}, {"token": " No", "logprob": ln}, {"token": "The", "logprob": -6.0}],
        key=lambda t: -t["logprob"],
    )
    first = dict(tops[0])
    first["top_logprobs"] = tops
    return {
        "object": "chat.completion",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": first["token"]},
                     "logprobs": {"content": [first]}, "finish_reason": "length"}],
    }


def held_back_utf8_response():
    return {"object": "chat.completion",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "\ufffd"},
                         "finish_reason": "length"}]}


def text_response(cfg):
    texts = cfg.get("texts", ["(no text configured)"])
    with LOCK:
        i = STATE["next_text"]
        STATE["next_text"] += 1
    t = texts[min(i, len(texts) - 1)]
    return {"object": "chat.completion",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": t}, "text": t,
                         "finish_reason": "stop"}]}


def make_handler(cfg, record):
    class H(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *a):
            pass

        def do_POST(self):
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", "0"))))
            if body.get("logprobs") and any(m in prompt_text(body) for m in cfg.get("no_logprobs", [])):
                resp = held_back_utf8_response()
            elif body.get("logprobs"):
                resp = yes_no_response(body)
            else:
                resp = text_response(cfg)
            if record:
                with LOCK, open(record, "a") as f:
                    f.write(json.dumps({"path": self.path, "request": body, "response": resp}) + "\n")
            data = json.dumps(resp).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    return H


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("config")
    ap.add_argument("--record")
    a = ap.parse_args()
    cfg = json.load(open(a.config))
    srv = ThreadingHTTPServer(("127.0.0.1", 0), make_handler(cfg, a.record))
    srv.daemon_threads = True
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    print(f"READY http://127.0.0.1:{srv.server_address[1]}/v1", flush=True)
    sys.stdin.read()
    os._exit(0)


if __name__ == "__main__":
    main()
