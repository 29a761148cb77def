#!/usr/bin/env python3
"""P(yes) from a server serving the tiny InternVL fixture vs transformers' reference.

    tiny_vlm_parity.py BASE_URL [--model tiny-vlm] [--repeat N]

For every image x question pair of tests/fixtures/internvl/reference.json it sends the request
makd's openai teacher sends in image mode (one user message: the PNG as an image_url data URI,
then the prompt text; max_tokens 1, temperature 0, logprobs, top_logprobs 20), reads the first
token's logprobs of "Yes" and "No", and prints one JSON object: per pair the server's P(yes),
the reference P(yes) (-hf preprocessing), the difference and the prompt token counts, and per
image the largest |difference|. Standard library only. scripts/tiny-vlm-server starts the server.
"""
import argparse
import base64
import json
import math
import os
import sys
import urllib.request

FIXTURE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "fixtures", "internvl")


def post(url, body):
    req = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=600) as r:
        return json.loads(r.read())


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("base_url", help="e.g. http://127.0.0.1:8080/v1")
    ap.add_argument("--model", default="tiny-vlm")
    ap.add_argument("--repeat", type=int, default=1, help="send each request N times (checks the cache path)")
    a = ap.parse_args()
    ref = json.load(open(os.path.join(FIXTURE, "reference.json")))
    pairs, worst = [], {}
    for pr in ref["pairs"]:
        with open(os.path.join(FIXTURE, ref["image_files"][pr["image"]]), "rb") as f:
            url = "data:image/png;base64," + base64.b64encode(f.read()).decode()
        body = {
            "model": a.model,
            "messages": [{"role": "user", "content": [
                {"type": "image_url", "image_url": {"url": url}},
                {"type": "text", "text": ref["prompts"][pr["question"]]},
            ]}],
            "max_tokens": 1,
            "temperature": 0,
            "logprobs": True,
            "top_logprobs": 20,
        }
        seen = []
        for _ in range(a.repeat):
            out = post(a.base_url.rstrip("/") + "/chat/completions", body)
            content = (out["choices"][0].get("logprobs") or {}).get("content") or []
            top = {e["token"]: e["logprob"] for e in content[0]["top_logprobs"]} if content else {}
            if "Yes" in top and "No" in top:
                p = 1.0 / (1.0 + math.exp(top["No"] - top["Yes"]))
            else:
                p = None
            seen.append(p)
        p = seen[0]
        row = {
            "key": pr["key"],
            "prompt_tokens": out["usage"]["prompt_tokens"],
            "reference_tokens": pr["num_tokens"],
            "p_yes_server": p,
            "p_yes_reference": pr["p_yes"],
            "diff": None if p is None else p - pr["p_yes"],
            "repeat_spread": None if None in seen else max(seen) - min(seen),
        }
        pairs.append(row)
        d = float("inf") if p is None else abs(row["diff"])
        worst[str(pr["image"])] = max(worst.get(str(pr["image"]), 0.0), d)
    print(json.dumps({"pairs": pairs, "max_abs_diff_per_image": worst}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
