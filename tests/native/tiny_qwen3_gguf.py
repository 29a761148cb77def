#!/usr/bin/env python3
"""Write a tiny random Qwen3 GGUF (all f32) with a byte-level BPE (`gpt2`) tokenizer.

Provenance: weights from a seeded NumPy RNG; the vocabulary is GPT-2's 256 byte characters plus
merges built here for a few English words (so merges, byte fallback and the `qwen2`
pre-tokenizer are all exercised). Nothing is downloaded.

Usage: tiny_qwen3_gguf.py OUT.gguf [--seed N]
"""
import argparse

import numpy as np
import gguf

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
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--seed", type=int, default=5)
    a = ap.parse_args()
    rng = np.random.default_rng(a.seed)
    toks, types, merges = vocab()
    n_vocab = len(toks)
    w = gguf.GGUFWriter(a.out, "qwen3")
    w.add_name("makd-tiny-random-qwen3")
    w.add_context_length(4096)
    w.add_embedding_length(N_EMBD)
    w.add_block_count(N_LAYER)
    w.add_feed_forward_length(N_FF)
    w.add_head_count(N_HEAD)
    w.add_head_count_kv(N_KV)
    w.add_key_length(HEAD_DIM)
    w.add_value_length(HEAD_DIM)
    w.add_layer_norm_rms_eps(1e-6)
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
    f32 = np.float32
    g = lambda *shape, s=1.0: rng.normal(0, s, shape).astype(f32)  # noqa: E731
    norm = lambda n: (1.0 + g(n, s=0.1)).astype(f32)  # noqa: E731
    s = 1.0 / np.sqrt(N_EMBD)
    w.add_tensor("token_embd.weight", g(n_vocab, N_EMBD, s=1.0))
    for i in range(N_LAYER):
        p = f"blk.{i}."
        w.add_tensor(p + "attn_norm.weight", norm(N_EMBD))
        w.add_tensor(p + "attn_q.weight", g(N_HEAD * HEAD_DIM, N_EMBD, s=s))
        w.add_tensor(p + "attn_k.weight", g(N_KV * HEAD_DIM, N_EMBD, s=s))
        w.add_tensor(p + "attn_v.weight", g(N_KV * HEAD_DIM, N_EMBD, s=s))
        w.add_tensor(p + "attn_q_norm.weight", norm(HEAD_DIM))
        w.add_tensor(p + "attn_k_norm.weight", norm(HEAD_DIM))
        w.add_tensor(p + "attn_output.weight", g(N_EMBD, N_HEAD * HEAD_DIM, s=s))
        w.add_tensor(p + "ffn_norm.weight", norm(N_EMBD))
        w.add_tensor(p + "ffn_gate.weight", g(N_FF, N_EMBD, s=s))
        w.add_tensor(p + "ffn_up.weight", g(N_FF, N_EMBD, s=s))
        w.add_tensor(p + "ffn_down.weight", g(N_EMBD, N_FF, s=1.0 / np.sqrt(N_FF)))
    w.add_tensor("output_norm.weight", norm(N_EMBD))
    out = g(n_vocab, N_EMBD, s=0.3)
    # Control tokens and lone non-ASCII bytes get logit 0, far below the top ones: llama.cpp's
    # answer would otherwise end on EOS, or hold back an incomplete UTF-8 character, and come
    # back without logprobs.
    out[-3:, :] = 0.0
    out[128:256, :] = 0.0
    w.add_tensor("output.weight", out)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    print(a.out)


if __name__ == "__main__":
    main()
