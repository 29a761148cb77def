#!/usr/bin/env python3
"""Write a tiny random llama-architecture GGUF for server mechanics tests.

Provenance: every weight is drawn from a seeded NumPy RNG here; nothing is downloaded. The model is
meaningless but deterministic, and built so that the answer tokens behave like a yes/no model's:
dimension 0 of the residual stream is a constant that no layer writes to, and only the Yes/No
spellings read it in the output matrix, so "Yes" and "No" (and their variants) are almost always
among the top-20 next tokens while their difference still depends on the prompt through attention.
The vocabulary and the shared writing steps live in gguf_common.py.

Usage: tiny_gguf.py OUT.gguf [--seed N]
"""
import numpy as np

from gguf_common import (YES_NO, add_sentencepiece_tokenizer, f32, finish, parse_args,
                         sentencepiece_vocab, writer)

N_EMBD, N_HEAD, N_FF, N_LAYER, N_CTX = 64, 4, 128, 2, 4096


def main():
    out_path, rng = parse_args(default_seed=7)
    toks, types, scores = sentencepiece_vocab()
    n_vocab = len(toks)

    w = writer(out_path, "llama", "makd-tiny-random-llama", n_embd=N_EMBD, n_layer=N_LAYER,
               n_ff=N_FF, n_head=N_HEAD, n_kv=N_HEAD, rms_eps=1e-5, n_ctx=N_CTX)
    w.add_rope_dimension_count(N_EMBD // N_HEAD)
    w.add_vocab_size(n_vocab)
    w.add_file_type(0)  # all f32
    add_sentencepiece_tokenizer(w, toks, types, scores)
    w.add_chat_template(
        "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}\n{% endfor %}"
        "{% if add_generation_prompt %}<|assistant|>{% endif %}"
    )

    emb = rng.normal(0, 1, (n_vocab, N_EMBD)).astype(f32)
    emb[:, 0] = 16.0
    w.add_tensor("token_embd.weight", emb)
    s = 1.0 / np.sqrt(N_EMBD)
    for i in range(N_LAYER):
        p = f"blk.{i}."
        w.add_tensor(p + "attn_norm.weight", np.ones(N_EMBD, f32))
        w.add_tensor(p + "attn_q.weight", rng.normal(0, 3 * s, (N_EMBD, N_EMBD)).astype(f32))
        w.add_tensor(p + "attn_k.weight", rng.normal(0, 3 * s, (N_EMBD, N_EMBD)).astype(f32))
        w.add_tensor(p + "attn_v.weight", rng.normal(0, s, (N_EMBD, N_EMBD)).astype(f32))
        wo = rng.normal(0, 3 * s, (N_EMBD, N_EMBD)).astype(f32)
        wo[0, :] = 0.0  # never write the constant dimension
        w.add_tensor(p + "attn_output.weight", wo)
        w.add_tensor(p + "ffn_norm.weight", np.ones(N_EMBD, f32))
        w.add_tensor(p + "ffn_gate.weight", rng.normal(0, s, (N_FF, N_EMBD)).astype(f32))
        w.add_tensor(p + "ffn_up.weight", rng.normal(0, s, (N_FF, N_EMBD)).astype(f32))
        wd = rng.normal(0, 1.0 / np.sqrt(N_FF), (N_EMBD, N_FF)).astype(f32)
        wd[0, :] = 0.0
        w.add_tensor(p + "ffn_down.weight", wd)
    w.add_tensor("output_norm.weight", np.ones(N_EMBD, f32))
    out = rng.normal(0, 0.3, (n_vocab, N_EMBD)).astype(f32)
    out[:, 0] = 0.0
    for t in YES_NO:
        out[toks.index(t), 0] = 1.5
    w.add_tensor("output.weight", out)
    finish(w, out_path)


if __name__ == "__main__":
    main()
