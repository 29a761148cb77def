#!/usr/bin/env python3
"""Write a tiny random Gemma 3 GGUF (all f32) that llama.cpp and makd's native teacher both load.

Provenance: every weight is drawn from a seeded NumPy RNG here; nothing is downloaded. The
vocabulary is the SentencePiece one of tests/server/gguf_common.py (byte fallback, `▁` pieces,
Yes/No variants), as in tests/server/tiny_gguf.py. Six layers so that layer 5 is a global-attention
layer and the rest slide over a window of 8 tokens, which the test prompts exceed.

Usage: tiny_gemma3_gguf.py OUT.gguf [--seed N]
"""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "server"))
from gguf_common import (add_qk_norm_layers, add_sentencepiece_tokenizer, finish,  # noqa: E402
                         gaussians, parse_args, sentencepiece_vocab, writer)

N_EMBD, N_HEAD, N_KV, HEAD_DIM, N_FF, N_LAYER, WINDOW = 64, 4, 2, 16, 128, 6, 8


def main():
    out_path, rng = parse_args(default_seed=11)
    toks, types, scores = sentencepiece_vocab()
    n_vocab = len(toks)

    w = writer(out_path, "gemma3", "makd-tiny-random-gemma3", n_embd=N_EMBD, n_layer=N_LAYER,
               n_ff=N_FF, n_head=N_HEAD, n_kv=N_KV, rms_eps=1e-6, head_dim=HEAD_DIM)
    w.add_sliding_window(WINDOW)
    w.add_rope_freq_base(1_000_000.0)
    w.add_vocab_size(n_vocab)
    w.add_file_type(0)
    add_sentencepiece_tokenizer(w, toks, types, scores)
    w.add_add_space_prefix(False)

    g, norm = gaussians(rng)
    # Tied output head: token_embd is also the output matrix (no output.weight).
    w.add_tensor("token_embd.weight", g(n_vocab, N_EMBD, s=0.3))
    add_qk_norm_layers(w, g, norm, n_layer=N_LAYER, n_embd=N_EMBD, n_head=N_HEAD, n_kv=N_KV,
                       head_dim=HEAD_DIM, n_ff=N_FF, sandwich=True)
    w.add_tensor("output_norm.weight", norm(N_EMBD))
    finish(w, out_path)


if __name__ == "__main__":
    main()
