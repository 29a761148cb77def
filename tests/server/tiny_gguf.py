#!/usr/bin/env python3
"""Write a tiny random llama-architecture GGUF for server mechanics tests.

Provenance: every weight is drawn from a seeded NumPy RNG here; nothing is downloaded. The model is
meaningless but deterministic, and built so that the answer tokens behave like a yes/no model's:
dimension 0 of the residual stream is a constant that no layer writes to, and only the Yes/No
spellings read it in the output matrix, so "Yes" and "No" (and their variants) are almost always
among the top-20 next tokens while their difference still depends on the prompt through attention.

Usage: tiny_gguf.py OUT.gguf [--seed N]
"""
import argparse
import string

import numpy as np
import gguf

N_EMBD, N_HEAD, N_FF, N_LAYER, N_CTX = 64, 4, 128, 2, 4096

# SentencePiece token types (llama.cpp's llama_token_type).
NORMAL, UNKNOWN, CONTROL, BYTE = 1, 2, 3, 6

YES_NO = ["▁Yes", "▁No", "Yes", "No", "▁yes", "▁no"]
WORDS = [
    "▁the", "▁a", "▁of", "▁is", "▁it", "▁an", "▁Is", "▁Does", "▁Do", "▁Are", "▁Can", "▁have",
    "▁image", "▁object", "▁typical", "▁Consider", "▁answer", "▁must", "▁always", "▁be", "▁either",
    "▁or", "▁not", "▁provide", "▁any", "▁other", "▁response", "▁Question", "▁Answer", "▁The",
    "▁user", "▁assistant", "▁shirt", "▁shoe", "▁bag", "▁coat", "▁dress", "▁wheels", "▁color",
    "▁Maybe", "▁I", "▁think", "▁sure", "▁question", "▁questions", "▁yes", "▁no",
]


def vocab():
    toks, types, scores = ["<unk>", "<s>", "</s>"], [UNKNOWN, CONTROL, CONTROL], [0.0, 0.0, 0.0]
    for b in range(256):
        toks.append(f"<0x{b:02X}>")
        types.append(BYTE)
        scores.append(0.0)
    singles = ["▁"] + list(string.ascii_letters + string.digits + string.punctuation)
    for i, t in enumerate(singles):
        toks.append(t)
        types.append(NORMAL)
        scores.append(-1000.0 - i)
    for i, t in enumerate(YES_NO + [w for w in WORDS if w not in YES_NO]):
        if t in toks:
            continue
        toks.append(t)
        types.append(NORMAL)
        scores.append(-10.0 - i * 0.01)
    return toks, types, scores


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--seed", type=int, default=7)
    a = ap.parse_args()
    rng = np.random.default_rng(a.seed)
    toks, types, scores = vocab()
    n_vocab = len(toks)

    w = gguf.GGUFWriter(a.out, "llama")
    w.add_name("makd-tiny-random-llama")
    w.add_context_length(N_CTX)
    w.add_embedding_length(N_EMBD)
    w.add_block_count(N_LAYER)
    w.add_feed_forward_length(N_FF)
    w.add_head_count(N_HEAD)
    w.add_head_count_kv(N_HEAD)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_rope_dimension_count(N_EMBD // N_HEAD)
    w.add_vocab_size(n_vocab)
    w.add_file_type(0)  # all f32
    w.add_tokenizer_model("llama")
    w.add_token_list(toks)
    w.add_token_scores(scores)
    w.add_token_types(types)
    w.add_unk_token_id(0)
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_add_bos_token(True)
    w.add_chat_template(
        "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}\n{% endfor %}"
        "{% if add_generation_prompt %}<|assistant|>{% endif %}"
    )

    f32 = np.float32
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

    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    print(a.out)


if __name__ == "__main__":
    main()
