#!/usr/bin/env python3
"""Write a tiny random Gemma 3 GGUF (all f32) that llama.cpp and makd's native teacher both load.

Provenance: every weight is drawn from a seeded NumPy RNG here; nothing is downloaded. The
vocabulary is the SentencePiece one of tests/server/tiny_gguf.py (byte fallback, `▁` pieces,
Yes/No variants). Six layers so that layer 5 is a global-attention layer and the rest slide over
a window of 8 tokens, which the test prompts exceed.

Usage: tiny_gemma3_gguf.py OUT.gguf [--seed N]
"""
import argparse
import os
import sys

import numpy as np
import gguf

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "server"))
from tiny_gguf import vocab  # noqa: E402

N_EMBD, N_HEAD, N_KV, HEAD_DIM, N_FF, N_LAYER, WINDOW = 64, 4, 2, 16, 128, 6, 8


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--seed", type=int, default=11)
    a = ap.parse_args()
    rng = np.random.default_rng(a.seed)
    toks, types, scores = vocab()
    n_vocab = len(toks)

    w = gguf.GGUFWriter(a.out, "gemma3")
    w.add_name("makd-tiny-random-gemma3")
    w.add_context_length(4096)
    w.add_embedding_length(N_EMBD)
    w.add_block_count(N_LAYER)
    w.add_feed_forward_length(N_FF)
    w.add_head_count(N_HEAD)
    w.add_head_count_kv(N_KV)
    w.add_key_length(HEAD_DIM)
    w.add_value_length(HEAD_DIM)
    w.add_layer_norm_rms_eps(1e-6)
    w.add_sliding_window(WINDOW)
    w.add_rope_freq_base(1_000_000.0)
    w.add_vocab_size(n_vocab)
    w.add_file_type(0)
    w.add_tokenizer_model("llama")
    w.add_token_list(toks)
    w.add_token_scores(scores)
    w.add_token_types(types)
    w.add_unk_token_id(0)
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_add_bos_token(True)
    w.add_add_space_prefix(False)

    f32 = np.float32
    g = lambda *shape, s=1.0: rng.normal(0, s, shape).astype(f32)  # noqa: E731
    norm = lambda n: (1.0 + g(n, s=0.1)).astype(f32)  # noqa: E731
    # Tied output head: token_embd is also the output matrix (no output.weight).
    w.add_tensor("token_embd.weight", g(n_vocab, N_EMBD, s=0.3))
    s = 1.0 / np.sqrt(N_EMBD)
    for i in range(N_LAYER):
        p = f"blk.{i}."
        w.add_tensor(p + "attn_norm.weight", norm(N_EMBD))
        w.add_tensor(p + "attn_q.weight", g(N_HEAD * HEAD_DIM, N_EMBD, s=s))
        w.add_tensor(p + "attn_k.weight", g(N_KV * HEAD_DIM, N_EMBD, s=s))
        w.add_tensor(p + "attn_v.weight", g(N_KV * HEAD_DIM, N_EMBD, s=s))
        w.add_tensor(p + "attn_q_norm.weight", norm(HEAD_DIM))
        w.add_tensor(p + "attn_k_norm.weight", norm(HEAD_DIM))
        w.add_tensor(p + "attn_output.weight", g(N_EMBD, N_HEAD * HEAD_DIM, s=s))
        w.add_tensor(p + "post_attention_norm.weight", norm(N_EMBD))
        w.add_tensor(p + "ffn_norm.weight", norm(N_EMBD))
        w.add_tensor(p + "ffn_gate.weight", g(N_FF, N_EMBD, s=s))
        w.add_tensor(p + "ffn_up.weight", g(N_FF, N_EMBD, s=s))
        w.add_tensor(p + "ffn_down.weight", g(N_EMBD, N_FF, s=1.0 / np.sqrt(N_FF)))
        w.add_tensor(p + "post_ffw_norm.weight", norm(N_EMBD))
    w.add_tensor("output_norm.weight", norm(N_EMBD))

    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    print(a.out)


if __name__ == "__main__":
    main()
