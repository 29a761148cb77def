#!/usr/bin/env python3
"""Write llama.cpp GGUFs from an InternVL checkpoint directory (either layout).

    internvl-gguf.py MODEL_DIR OUT_DIR

MODEL_DIR is an InternVL checkpoint in the original OpenGVLab layout (config.json with
architectures ["InternVLChatModel"]) or the transformers -hf layout
(["InternVLForConditionalGeneration"]), with a Qwen2 language model and tokenizer.json; e.g.
tests/fixtures/internvl/original or tests/fixtures/internvl/hf. It writes, in OUT_DIR:

  model.gguf    the language model (llama.cpp architecture "qwen2") with its tokenizer and chat template
  mmproj.gguf   the vision tower + pixel-shuffle MLP projector (clip, projector type "internvl")

which llama.cpp's multimodal server loads as `--model model.gguf --mmproj mmproj.gguf`.
Tensors are written in float32 (the fixture is tiny; nothing is quantised).

Needs numpy and the gguf package (scripts/setup.sh installs both in .venv); safetensors files
are read directly (no torch).
"""

import json
import os
import struct
import sys

import numpy as np

DTYPES = {"F32": np.float32, "F16": np.float16, "I64": np.int64, "I32": np.int32}


def fail(msg, hint=None):
    print(f"internvl-gguf: {msg}" + (f"\n  hint: {hint}" if hint else ""), file=sys.stderr)
    sys.exit(2)


def read_safetensors(path):
    """name -> numpy array (float32 for float tensors). bf16 is widened by shifting into f32."""
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
        data = f.read()
    out = {}
    for name, meta in header.items():
        if name == "__metadata__":
            continue
        a, b = meta["data_offsets"]
        raw = data[a:b]
        if meta["dtype"] == "BF16":
            arr = (np.frombuffer(raw, dtype=np.uint16).astype(np.uint32) << 16).view(np.float32)
        elif meta["dtype"] in DTYPES:
            arr = np.frombuffer(raw, dtype=DTYPES[meta["dtype"]])
        else:
            fail(f"{path}: tensor {name} has unsupported dtype {meta['dtype']}")
        arr = arr.reshape(meta["shape"])
        out[name] = arr.astype(np.float32) if arr.dtype.kind == "f" else arr
    return out


def load_checkpoint(model_dir):
    files = sorted(f for f in os.listdir(model_dir) if f.endswith(".safetensors"))
    if not files:
        fail(f"no .safetensors file in {model_dir}")
    tensors = {}
    for f in files:
        tensors.update(read_safetensors(os.path.join(model_dir, f)))
    return tensors


def to_original_names(t):
    """-hf checkpoint names -> OpenGVLab names (language_model.* are the same in both; names
    already in the OpenGVLab layout pass through)."""
    out = {}
    qkv = {}
    for name, a in t.items():
        if name.startswith("model."):  # older -hf checkpoints keep the in-memory prefix
            name = name[len("model.") :]
            if name.startswith("language_model.") and not name.startswith("language_model.model."):
                name = "language_model.model." + name[len("language_model.") :]
        if name == "lm_head.weight":
            name = "language_model.lm_head.weight"
        if name.startswith(("language_model.", "vision_model.", "mlp1.")):
            out[name] = a
        elif name.startswith("multi_modal_projector."):
            sub, leaf = name[len("multi_modal_projector.") :].split(".", 1)
            out["mlp1.%s.%s" % ({"layer_norm": 0, "linear_1": 1, "linear_2": 3}[sub], leaf)] = a
        elif name.startswith("vision_tower."):
            rest = name[len("vision_tower.") :]
            simple = {
                "embeddings.cls_token": "vision_model.embeddings.class_embedding",
                "embeddings.position_embeddings": "vision_model.embeddings.position_embedding",
                "embeddings.patch_embeddings.projection.weight": "vision_model.embeddings.patch_embedding.weight",
                "embeddings.patch_embeddings.projection.bias": "vision_model.embeddings.patch_embedding.bias",
            }
            if rest in simple:
                out[simple[rest]] = a
                continue
            parts = rest.split(".")
            if parts[:2] != ["encoder", "layer"]:
                fail(f"unknown vision tensor {name}")
            i, tail = parts[2], ".".join(parts[3:])
            base = f"vision_model.encoder.layers.{i}."
            renames = {
                "lambda_1": "ls1",
                "lambda_2": "ls2",
                "attention.projection_layer.weight": "attn.proj.weight",
                "attention.projection_layer.bias": "attn.proj.bias",
                "layernorm_before.weight": "norm1.weight",
                "layernorm_before.bias": "norm1.bias",
                "layernorm_after.weight": "norm2.weight",
                "layernorm_after.bias": "norm2.bias",
            }
            if tail in renames:
                out[base + renames[tail]] = a
            elif tail.startswith("mlp."):
                out[base + tail] = a
            elif tail.split(".")[0] == "attention" and tail.split(".")[1] in ("q_proj", "k_proj", "v_proj"):
                qkv.setdefault((base, tail.split(".")[2]), {})[tail.split(".")[1]] = a
            else:
                fail(f"unknown vision tensor {name}")
        else:
            fail(f"unknown tensor {name}")
    for (base, leaf), p in qkv.items():
        out[base + "attn.qkv." + leaf] = np.concatenate([p["q_proj"], p["k_proj"], p["v_proj"]], 0)
    return out


def read_config(model_dir):
    path = os.path.join(model_dir, "config.json")
    if not os.path.exists(path):
        fail(f"{path} not found", "MODEL_DIR must hold an InternVL checkpoint (config.json, *.safetensors, tokenizer.json)")
    cfg = json.load(open(path))
    arch = (cfg.get("architectures") or [None])[0]
    if arch == "InternVLChatModel":
        llm, vis = cfg["llm_config"], cfg["vision_config"]
        info = {
            "downsample_ratio": cfg["downsample_ratio"],
            "min_tiles": cfg.get("min_dynamic_patch", 1),
            "max_tiles": cfg.get("max_dynamic_patch", 12),
            "ps_version": cfg.get("ps_version", "v2"),
            "select_layer": cfg.get("select_layer", -1),
            "image_size": cfg.get("force_image_size") or vis["image_size"],
            "patch_size": vis["patch_size"],
            "vision_act": vis.get("hidden_act", "gelu"),
            "qk_norm": vis.get("qk_normalization", False),
            "norm_type": vis.get("norm_type", "layer_norm"),
            "tie": llm.get("tie_word_embeddings", False),
        }
    elif arch == "InternVLForConditionalGeneration":
        llm, vis = cfg["text_config"], cfg["vision_config"]
        pre = os.path.join(model_dir, "preprocessor_config.json")
        pcfg = json.load(open(pre)) if os.path.exists(pre) else {}
        size = vis.get("image_size", 448)
        patch = vis.get("patch_size", 14)
        info = {
            "downsample_ratio": cfg.get("downsample_ratio", 0.5),
            "min_tiles": pcfg.get("min_patches", 1),
            "max_tiles": pcfg.get("max_patches", 12),
            "ps_version": "v2",
            "select_layer": cfg.get("vision_feature_layer", -1),
            "image_size": size[0] if isinstance(size, list) else size,
            "patch_size": patch[0] if isinstance(patch, list) else patch,
            "vision_act": vis.get("hidden_act", "gelu"),
            "qk_norm": vis.get("use_qk_norm", False),
            "norm_type": vis.get("norm_type", "layer_norm"),
            "tie": cfg.get("tie_word_embeddings", llm.get("tie_word_embeddings", False)),
        }
        if cfg.get("projector_hidden_act", "gelu") != "gelu":
            fail("projector_hidden_act other than gelu is not supported")
    else:
        fail(f"{path}: architectures {cfg.get('architectures')} is not an InternVL checkpoint",
             "expected InternVLChatModel (original layout) or InternVLForConditionalGeneration (-hf layout)")
    if llm.get("model_type") != "qwen2":
        fail(f"language model type {llm.get('model_type')!r}: only qwen2 (InternVL2/2.5 1B-class) is supported")
    if info["ps_version"] != "v2" or info["select_layer"] != -1:
        fail(f"ps_version {info['ps_version']} / select_layer {info['select_layer']}: llama.cpp implements v2 / -1 only")
    if info["vision_act"] != "gelu" or info["norm_type"] != "layer_norm" or info["qk_norm"]:
        fail("vision tower variant not supported (needs gelu, layer_norm, no qk-norm: InternViT-300M)")
    return cfg, llm, vis, info


def tokenizer_parts(model_dir):
    tj = json.load(open(os.path.join(model_dir, "tokenizer.json")))
    tcfg_path = os.path.join(model_dir, "tokenizer_config.json")
    tcfg = json.load(open(tcfg_path)) if os.path.exists(tcfg_path) else {}
    if tj["model"]["type"] != "BPE":
        fail("tokenizer.json is not a BPE tokenizer")
    vocab = dict(tj["model"]["vocab"])
    special = set()
    for t in tj.get("added_tokens", []):
        vocab[t["content"]] = t["id"]
        if t.get("special"):
            special.add(t["id"])
    n = max(vocab.values()) + 1
    tokens = [f"[PAD{i}]" for i in range(n)]
    for piece, i in vocab.items():
        tokens[i] = piece
    merges = [m if isinstance(m, str) else " ".join(m) for m in tj["model"]["merges"]]
    template = tcfg.get("chat_template")
    jinja = os.path.join(model_dir, "chat_template.jinja")
    if template is None and os.path.exists(jinja):
        template = open(jinja).read()
    return tokens, special, merges, vocab, tcfg, template


# The template the GGUF carries. llama.cpp's server hands the template each message's content as
# one string in which every image is already its media marker `<__media_…__>` (typed parts are
# gone), so the -hf template, which keys on {"type": "image"} parts, cannot be used as is. This one
# renders what InternVL2.5's chat() and the -hf processor send: the default system message unless
# one is given, and "\n" after each image (the -hf template's "<IMG_CONTEXT>\n"), found as the
# marker's closing "__>".
def gguf_chat_template(default_system):
    return (
        "{%- if messages[0]['role'] != 'system' %}"
        "{{- '<|im_start|>system\\n" + default_system + "<|im_end|>\\n' }}"
        "{%- endif %}"
        "{%- for message in messages %}"
        "{{- '<|im_start|>' + message['role'] + '\\n' }}"
        "{%- if message['content'] is string %}{{- message['content'] | replace('__>', '__>\\n') }}"
        "{%- else %}{%- for part in message['content'] %}"
        "{%- if part['type'] == 'text' %}{{- part['text'] | replace('__>', '__>\\n') }}{%- endif %}"
        "{%- endfor %}{%- endif %}"
        "{{- '<|im_end|>\\n' }}"
        "{%- endfor %}"
        "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
    )


DEFAULT_SYSTEM = "你是书生·万象，英文名是InternVL，是由上海人工智能实验室、清华大学及多家合作单位联合开发的多模态大语言模型。"


def write_language_model(gguf, path, t, llm, tok, tie):
    tokens, special, merges, vocab, tcfg, _ = tok
    n_layer = llm["num_hidden_layers"]
    w = gguf.GGUFWriter(path, "qwen2")
    w.add_name("tiny-vlm")
    w.add_file_type(gguf.LlamaFileType.ALL_F32)
    w.add_context_length(llm.get("max_position_embeddings", 32768))
    w.add_embedding_length(llm["hidden_size"])
    w.add_block_count(n_layer)
    w.add_feed_forward_length(llm["intermediate_size"])
    w.add_head_count(llm["num_attention_heads"])
    w.add_head_count_kv(llm["num_key_value_heads"])
    w.add_rope_freq_base(float(llm.get("rope_theta", 1e6)))
    w.add_layer_norm_rms_eps(float(llm.get("rms_norm_eps", 1e-6)))

    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("qwen2")
    w.add_token_list(tokens)
    types = []
    for i, piece in enumerate(tokens):
        if i in special:
            types.append(gguf.TokenType.CONTROL)
        elif i not in vocab.values():
            types.append(gguf.TokenType.UNUSED)
        else:
            types.append(gguf.TokenType.NORMAL)
    w.add_token_types(types)
    w.add_token_merges(merges)
    eos = vocab.get(tcfg.get("eos_token") or "<|im_end|>", vocab.get("<|im_end|>"))
    pad = vocab.get(tcfg.get("pad_token") or "<|endoftext|>", vocab.get("<|endoftext|>"))
    w.add_eos_token_id(eos)
    w.add_pad_token_id(pad)
    w.add_bos_token_id(vocab.get("<|endoftext|>", pad))
    w.add_add_bos_token(False)
    w.add_chat_template(gguf_chat_template(DEFAULT_SYSTEM))

    p = "language_model.model."
    names = {"embed_tokens.weight": "token_embd.weight", "norm.weight": "output_norm.weight"}
    per_layer = {
        "input_layernorm.weight": "attn_norm.weight",
        "post_attention_layernorm.weight": "ffn_norm.weight",
        "self_attn.q_proj.weight": "attn_q.weight",
        "self_attn.q_proj.bias": "attn_q.bias",
        "self_attn.k_proj.weight": "attn_k.weight",
        "self_attn.k_proj.bias": "attn_k.bias",
        "self_attn.v_proj.weight": "attn_v.weight",
        "self_attn.v_proj.bias": "attn_v.bias",
        "self_attn.o_proj.weight": "attn_output.weight",
        "mlp.gate_proj.weight": "ffn_gate.weight",
        "mlp.up_proj.weight": "ffn_up.weight",
        "mlp.down_proj.weight": "ffn_down.weight",
    }
    for i in range(n_layer):
        for a, b in per_layer.items():
            names[f"layers.{i}.{a}"] = f"blk.{i}.{b}"
    used = set()
    for src, dst in names.items():
        if p + src not in t:
            fail(f"language model tensor {p + src} missing")
        w.add_tensor(dst, np.ascontiguousarray(t[p + src], dtype=np.float32))
        used.add(p + src)
    if "language_model.lm_head.weight" in t and not tie:
        w.add_tensor("output.weight", np.ascontiguousarray(t["language_model.lm_head.weight"], dtype=np.float32))
        used.add("language_model.lm_head.weight")
    left = sorted(k for k in t if k.startswith("language_model.") and k not in used)
    if left:
        fail(f"language model tensors not converted: {left[:5]}")
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def write_mmproj(gguf, path, t, llm, vis, info):
    n_layer = vis["num_hidden_layers"]
    w = gguf.GGUFWriter(path, "clip")
    w.add_name("tiny-vlm mmproj")
    w.add_file_type(gguf.LlamaFileType.ALL_F32)
    w.add_clip_has_vision_encoder(True)
    w.add_clip_projector_type(gguf.VisionProjectorType.INTERNVL)
    w.add_vision_image_size(info["image_size"])
    w.add_vision_patch_size(info["patch_size"])
    w.add_vision_embedding_length(vis["hidden_size"])
    w.add_vision_feed_forward_length(vis["intermediate_size"])
    w.add_vision_block_count(n_layer)
    w.add_vision_head_count(vis["num_attention_heads"])
    w.add_vision_attention_layernorm_eps(float(vis.get("layer_norm_eps", 1e-6)))
    w.add_vision_projection_dim(llm["hidden_size"])
    w.add_vision_image_mean([0.485, 0.456, 0.406])
    w.add_vision_image_std([0.229, 0.224, 0.225])
    w.add_vision_use_gelu(True)
    w.add_vision_projector_scale_factor(int(round(1.0 / info["downsample_ratio"])))
    w.add_vision_preproc_min_tiles(int(info["min_tiles"]))
    w.add_vision_preproc_max_tiles(int(info["max_tiles"]))

    names = {
        "vision_model.embeddings.class_embedding": "v.class_embd",
        "vision_model.embeddings.patch_embedding.weight": "v.patch_embd.weight",
        "vision_model.embeddings.patch_embedding.bias": "v.patch_embd.bias",
        "vision_model.embeddings.position_embedding": "v.position_embd.weight",
        "mlp1.0.weight": "mm.model.mlp.0.weight",
        "mlp1.0.bias": "mm.model.mlp.0.bias",
        "mlp1.1.weight": "mm.model.mlp.1.weight",
        "mlp1.1.bias": "mm.model.mlp.1.bias",
        "mlp1.3.weight": "mm.model.mlp.3.weight",
        "mlp1.3.bias": "mm.model.mlp.3.bias",
    }
    per_layer = {
        "norm1.weight": "ln1.weight",
        "norm1.bias": "ln1.bias",
        "norm2.weight": "ln2.weight",
        "norm2.bias": "ln2.bias",
        "attn.proj.weight": "attn_out.weight",
        "attn.proj.bias": "attn_out.bias",
        "mlp.fc1.weight": "ffn_up.weight",
        "mlp.fc1.bias": "ffn_up.bias",
        "mlp.fc2.weight": "ffn_down.weight",
        "mlp.fc2.bias": "ffn_down.bias",
        "ls1": "ls1.weight",
        "ls2": "ls2.weight",
    }
    used = set()
    for i in range(n_layer):
        base = f"vision_model.encoder.layers.{i}."
        for a, b in per_layer.items():
            names[base + a] = f"v.blk.{i}.{b}"
        d = vis["hidden_size"]
        for leaf in ("weight", "bias"):
            qkv = t.get(base + "attn.qkv." + leaf)
            if qkv is None:
                fail(f"vision tensor {base}attn.qkv.{leaf} missing")
            for k, nm in enumerate(("attn_q", "attn_k", "attn_v")):
                w.add_tensor(f"v.blk.{i}.{nm}.{leaf}", np.ascontiguousarray(qkv[k * d : (k + 1) * d], dtype=np.float32))
            used.add(base + "attn.qkv." + leaf)
    for src, dst in names.items():
        if src not in t:
            fail(f"vision tensor {src} missing")
        a = t[src]
        if src == "vision_model.embeddings.position_embedding":
            # InternViT puts CLS first and adds table row 0 to it, row 1+k to patch k. llama.cpp's
            # InternVL graph appends CLS after the patches and adds the table in that order, so
            # the rows are stored rotated ([patch rows..., CLS row]) for each token to get its own.
            a = np.concatenate([a[:, 1:], a[:, :1]], axis=1)
        w.add_tensor(dst, np.ascontiguousarray(a, dtype=np.float32))
        used.add(src)
    left = sorted(k for k in t if not k.startswith("language_model.") and k not in used)
    if left:
        fail(f"vision tensors not converted: {left[:5]}")
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def main():
    if len(sys.argv) != 3:
        print("usage: " + __doc__.strip().splitlines()[2].strip(), file=sys.stderr)
        sys.exit(2)
    model_dir, out_dir = sys.argv[1], sys.argv[2]
    try:
        import gguf
    except ImportError:
        fail("the gguf package is missing", "run scripts/setup.sh (it installs gguf into .venv) or `pip install gguf`")
    cfg, llm, vis, info = read_config(model_dir)
    tensors = to_original_names(load_checkpoint(model_dir))
    tok = tokenizer_parts(model_dir)
    os.makedirs(out_dir, exist_ok=True)
    # write next to the target and rename, so that a killed run never leaves a half file behind
    for name, fn in (
        ("model.gguf", lambda p: write_language_model(gguf, p, tensors, llm, tok, info["tie"])),
        ("mmproj.gguf", lambda p: write_mmproj(gguf, p, tensors, llm, vis, info)),
    ):
        tmp = os.path.join(out_dir, f".{name}.{os.getpid()}.tmp")
        fn(tmp)
        os.replace(tmp, os.path.join(out_dir, name))
    print(os.path.join(out_dir, "model.gguf"))
    print(os.path.join(out_dir, "mmproj.gguf"))


if __name__ == "__main__":
    main()
