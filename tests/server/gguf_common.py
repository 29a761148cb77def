"""What the tiny random GGUF writers share: tests/server/tiny_gguf.py and tests/native/tiny_*_gguf.py.

The command line (OUT.gguf [--seed N]), the model-shape metadata every architecture writes, the
SentencePiece vocabulary with its tokenizer metadata, the seeded weight helpers, the
attention/FFN block of the q/k-norm architectures (Gemma 3, Qwen3) and the final write. The
callers keep the metadata and tensor order they always had, so a seed still gives the same bytes.
"""
import argparse
import string

import numpy as np
import gguf

f32 = np.float32

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


def parse_args(default_seed):
    """`OUT.gguf [--seed N]`: the output path and a NumPy RNG seeded with N."""
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--seed", type=int, default=default_seed)
    a = ap.parse_args()
    return a.out, np.random.default_rng(a.seed)


def sentencepiece_vocab():
    """Byte fallback, `▁` pieces and the Yes/No variants: (tokens, types, scores)."""
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


def writer(out, arch, name, *, n_embd, n_layer, n_ff, n_head, n_kv, rms_eps, head_dim=None,
           n_ctx=4096):
    """A GGUFWriter with the name and the shape metadata (context, widths, layers, heads, the
    key/value head width when given, RMS-norm epsilon)."""
    w = gguf.GGUFWriter(out, arch)
    w.add_name(name)
    w.add_context_length(n_ctx)
    w.add_embedding_length(n_embd)
    w.add_block_count(n_layer)
    w.add_feed_forward_length(n_ff)
    w.add_head_count(n_head)
    w.add_head_count_kv(n_kv)
    if head_dim is not None:
        w.add_key_length(head_dim)
        w.add_value_length(head_dim)
    w.add_layer_norm_rms_eps(rms_eps)
    return w


def add_sentencepiece_tokenizer(w, toks, types, scores):
    """The `llama` (SentencePiece) tokenizer: <unk>=0, <s>=1 (prepended), </s>=2."""
    w.add_tokenizer_model("llama")
    w.add_token_list(toks)
    w.add_token_scores(scores)
    w.add_token_types(types)
    w.add_unk_token_id(0)
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_add_bos_token(True)


def gaussians(rng):
    """g(*shape, s): f32 normal(0, s) draws; norm(n): RMS-norm weights around 1."""
    g = lambda *shape, s=1.0: rng.normal(0, s, shape).astype(f32)  # noqa: E731
    norm = lambda n: (1.0 + g(n, s=0.1)).astype(f32)  # noqa: E731
    return g, norm


def add_qk_norm_layers(w, g, norm, *, n_layer, n_embd, n_head, n_kv, head_dim, n_ff,
                       sandwich=False):
    """Attention with q/k RMS norms and a gated FFN per layer (Qwen3); `sandwich` adds Gemma 3's
    post-attention and post-FFN norms."""
    s = 1.0 / np.sqrt(n_embd)
    for i in range(n_layer):
        p = f"blk.{i}."
        w.add_tensor(p + "attn_norm.weight", norm(n_embd))
        w.add_tensor(p + "attn_q.weight", g(n_head * head_dim, n_embd, s=s))
        w.add_tensor(p + "attn_k.weight", g(n_kv * head_dim, n_embd, s=s))
        w.add_tensor(p + "attn_v.weight", g(n_kv * head_dim, n_embd, s=s))
        w.add_tensor(p + "attn_q_norm.weight", norm(head_dim))
        w.add_tensor(p + "attn_k_norm.weight", norm(head_dim))
        w.add_tensor(p + "attn_output.weight", g(n_embd, n_head * head_dim, s=s))
        if sandwich:
            w.add_tensor(p + "post_attention_norm.weight", norm(n_embd))
        w.add_tensor(p + "ffn_norm.weight", norm(n_embd))
        w.add_tensor(p + "ffn_gate.weight", g(n_ff, n_embd, s=s))
        w.add_tensor(p + "ffn_up.weight", g(n_ff, n_embd, s=s))
        w.add_tensor(p + "ffn_down.weight", g(n_embd, n_ff, s=1.0 / np.sqrt(n_ff)))
        if sandwich:
            w.add_tensor(p + "post_ffw_norm.weight", norm(n_embd))


def finish(w, out):
    """Write header, metadata and tensors, close, and print the output path."""
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    print(out)
