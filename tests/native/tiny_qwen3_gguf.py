#!/usr/bin/env python3
"""Write a tiny random Qwen3 GGUF (all f32) with a byte-level BPE (`gpt2`) tokenizer.

Provenance: weights from a seeded NumPy RNG; the vocabulary is GPT-2's 256 byte characters plus
merges built here for a few English words (so merges, byte fallback and the `qwen2`
pre-tokenizer are all exercised). Nothing is downloaded. The shared writing steps live in
tests/server/gguf_common.py.

Usage: tiny_qwen3_gguf.py OUT.gguf [--seed N]
"""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "server"))
from gguf_common import add_qk_norm_layers, finish, gaussians, parse_args, writer  # noqa: E402

N_EMBD, N_HEAD, N_KV, HEAD_DIM, N_FF, N_LAYER = 64, 4, 2, 16, 128, 2
WORDS = ["Question", "Answer", "Yes", "No", "yes", "no", "Consider", "typical", "image", "the",
         "answer", "must", "always", "either", "provide", "other", "response", "cat", "truck"]


def byte_chars():
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
    cs, n = bs[:], 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {b: chr(c) for b, c in zip(bs, cs)}


def vocab():
    bc = byte_chars()
    toks = [bc[b] for b in range(256)]
    merges = []
    for w in WORDS:
        for piece in (w, " " + w):
            s = "".join(bc[b] for b in piece.encode())
            cur = s[0]
            for ch in s[1:]:
                new = cur + ch
                if new not in toks:
                    merges.append(f"{cur} {ch}")
                    toks.append(new)
                cur = new
    toks += ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    types = [1] * (len(toks) - 3) + [3, 3, 3]
    return toks, types, merges


def main():
    out_path, rng = parse_args(default_seed=5)
    toks, types, merges = vocab()
    n_vocab = len(toks)
    w = writer(out_path, "qwen3", "makd-tiny-random-qwen3", n_embd=N_EMBD, n_layer=N_LAYER,
               n_ff=N_FF, n_head=N_HEAD, n_kv=N_KV, rms_eps=1e-6, head_dim=HEAD_DIM)
    w.add_rope_freq_base(1_000_000.0)
    w.add_file_type(0)
    w.add_uint32("general.dtype", 0)  # candle's quantized_qwen3 computes in f16 otherwise
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("qwen2")
    w.add_token_list(toks)
    w.add_token_types(types)
    w.add_token_merges(merges)
    w.add_eos_token_id(n_vocab - 3)
    w.add_bos_token_id(n_vocab - 3)
    w.add_add_bos_token(False)
    g, norm = gaussians(rng)
    w.add_tensor("token_embd.weight", g(n_vocab, N_EMBD, s=1.0))
    add_qk_norm_layers(w, g, norm, n_layer=N_LAYER, n_embd=N_EMBD, n_head=N_HEAD, n_kv=N_KV,
                       head_dim=HEAD_DIM, n_ff=N_FF)
    w.add_tensor("output_norm.weight", norm(N_EMBD))
    out = g(n_vocab, N_EMBD, s=0.3)
    # Control tokens and lone non-ASCII bytes get logit 0, far below the top ones: llama.cpp's
    # answer would otherwise end on EOS, or hold back an incomplete UTF-8 character, and come
    # back without logprobs.
    out[-3:, :] = 0.0
    out[128:256, :] = 0.0
    w.add_tensor("output.weight", out)
    finish(w, out_path)


if __name__ == "__main__":
    main()
