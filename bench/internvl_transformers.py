#!/usr/bin/env python3
"""The anchor for `makd label --backend native` on InternVL: what a user would otherwise run.

The official InternVL labeling pattern in transformers: one chat/generate call per image x
question, the full prompt each time (the image is preprocessed and run through the vision tower
again in every call), greedy, the answer capped at 2 new tokens (random weights never stop on
their own). Weights: random, of the InternVL2.5-1B shape (InternViT-300M: 24 layers, 1024 wide,
16 heads; Qwen2-0.5B: 24 layers, 896 wide, 14 heads / 2 KV heads, vocabulary 151674, untied) —
exactly `makd bench native --family internvl --shape 1b` — in float32.

    TORCH_PYTHON=/path/to/venv/bin/python   # torch + transformers >= 5
    $TORCH_PYTHON bench/internvl_transformers.py --model-dir target/internvl-1b-random --questions 3 --threads 2 --json

`--model-dir DIR`: when DIR has no config.json, random weights are made (seed `--seed`) and
saved there in the transformers -hf layout (save_pretrained) with the tokenizer, chat template
and processor files of tests/fixtures/internvl/hf (a small byte-level BPE with InternVL's special
tokens; its ids fit the 151674-row vocabulary), tiling up to 12 tiles as InternVL2.5-1B ships.
Then the model is loaded from DIR, so `makd bench native --family internvl --model-dir DIR` runs
the very same weights. Both sides print P(yes) over the single `Yes`/`No` tokens per question;
bench/native_ratio.sh compares them.

The image is makd's bench image: the same xorshift pixels at the same size. Prints one JSON
line (--json) with pairs/s and the seconds of every pair (pairs are independent calls, so the
first Q of them are a run of Q questions).
"""

import argparse
import json
import os
import resource
import shutil
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURE_HF = os.path.join(REPO, "tests", "fixtures", "internvl", "hf")
ASPECTS = os.path.join(REPO, "examples", "fashion-mnist", "aspects.json")
# makd's ANSWER_CUE and default image-mode template "{question} {cue}".
ANSWER_CUE = "The answer must always be either Yes or No (do not provide any other response)."
TOKENIZER_FILES = ["tokenizer.json", "tokenizer_config.json", "chat_template.jinja", "processor_config.json"]


def shape_1b(image_token_id, bos_id, eos_id):
    """InternVL2.5-1B's sizes in the -hf config (the values of makd's InternVlConfig::internvl2_5_1b)."""
    text = {
        "model_type": "qwen2",
        "vocab_size": 151674,
        "hidden_size": 896,
        "intermediate_size": 4864,
        "num_hidden_layers": 24,
        "num_attention_heads": 14,
        "num_key_value_heads": 2,
        "head_dim": 64,
        "hidden_act": "silu",
        "rms_norm_eps": 1e-6,
        "rope_theta": 1000000.0,
        "max_position_embeddings": 32768,
        "tie_word_embeddings": False,
        "use_sliding_window": False,
        "bos_token_id": bos_id,
        "eos_token_id": eos_id,
    }
    vision = {
        "model_type": "internvl_vision",
        "hidden_size": 1024,
        "intermediate_size": 4096,
        "num_hidden_layers": 24,
        "num_attention_heads": 16,
        "hidden_act": "gelu",
        "image_size": [448, 448],
        "patch_size": [14, 14],
        "layer_norm_eps": 1e-6,
        "attention_bias": True,
        "use_qk_norm": False,
        "norm_type": "layer_norm",
        "use_mean_pooling": True,
        "use_absolute_position_embeddings": True,
        "layer_scale_init_value": 0.1,
    }
    return {
        "text_config": text,
        "vision_config": vision,
        "image_token_id": image_token_id,
        "image_seq_length": 256,
        "downsample_ratio": 0.5,
        "projector_hidden_act": "gelu",
        "vision_feature_layer": -1,
        "vision_feature_select_strategy": "default",
        "tie_word_embeddings": False,
    }


def make_random(model_dir, seed):
    import torch
    from transformers import InternVLConfig, InternVLForConditionalGeneration

    os.makedirs(model_dir, exist_ok=True)
    vocab = json.load(open(os.path.join(FIXTURE_HF, "tokenizer.json")))["added_tokens"]
    ids = {t["content"]: t["id"] for t in vocab}
    d = shape_1b(ids["<IMG_CONTEXT>"], ids["<|endoftext|>"], ids["<|im_end|>"])
    config = InternVLConfig(**d)
    torch.manual_seed(seed)
    model = InternVLForConditionalGeneration(config).to(torch.float32)
    # Variance-preserving matrices so that activations and logits stay O(1) through 48 layers
    # (the default 0.02 init makes every P(yes) ~0.5, which would hide a mismatch).
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.ndim >= 2 and not name.endswith("position_embeddings") and not name.endswith("cls_token"):
                p.normal_(0.0, 1.0 / p[0].numel() ** 0.5)
    model.save_pretrained(model_dir)
    for name in TOKENIZER_FILES:
        shutil.copy(os.path.join(FIXTURE_HF, name), os.path.join(model_dir, name))
    pre = json.load(open(os.path.join(FIXTURE_HF, "preprocessor_config.json")))
    pre["max_patches"] = 12  # InternVL2.5-1B's max_dynamic_patch (the fixture keeps 4)
    with open(os.path.join(model_dir, "preprocessor_config.json"), "w") as f:
        json.dump(pre, f, indent=2)
    del model


def bench_image(w, h):
    """makd bench native's random image: xorshift64 bytes, row-major RGB."""
    from PIL import Image

    mask = (1 << 64) - 1
    state = 0x9E3779B97F4A7C15
    out = bytearray(w * h * 3)
    for i in range(len(out)):
        state ^= (state << 13) & mask
        state ^= state >> 7
        state ^= (state << 17) & mask
        out[i] = state >> 56
    return Image.frombytes("RGB", (w, h), bytes(out))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model-dir", required=True, help="-hf InternVL folder; random 1B-shape weights are saved there if it has no config.json")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--questions", type=int, default=3)
    ap.add_argument("--image", default="448x448", help="WxH of the bench image")
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--max-new-tokens", type=int, default=2)
    ap.add_argument("--warmup", type=int, default=1, help="untimed calls first")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    if a.questions < 1 or a.threads < 1:
        sys.exit("error: --questions and --threads must be >= 1")

    import torch
    from transformers import AutoProcessor, InternVLForConditionalGeneration

    torch.set_num_threads(a.threads)
    made = False
    if not os.path.isfile(os.path.join(a.model_dir, "config.json")):
        t = time.perf_counter()
        make_random(a.model_dir, a.seed)
        made = True
        print(f"saved random InternVL2.5-1B-shape weights to {a.model_dir} in {time.perf_counter() - t:.0f} s", file=sys.stderr)
    t = time.perf_counter()
    processor = AutoProcessor.from_pretrained(a.model_dir)
    model = InternVLForConditionalGeneration.from_pretrained(a.model_dir, dtype=torch.float32)
    model.eval()
    load_s = time.perf_counter() - t
    tok = processor.tokenizer
    yes_id, no_id = tok.convert_tokens_to_ids("Yes"), tok.convert_tokens_to_ids("No")

    questions = [q["text"] for q in json.load(open(ASPECTS))["questions"]]
    qs = [questions[i % len(questions)] for i in range(a.questions)]
    w, h = (int(v) for v in a.image.split("x"))
    image = bench_image(w, h)

    def pair(question):
        messages = [{"role": "user", "content": [{"type": "image", "image": image}, {"type": "text", "text": f"{question} {ANSWER_CUE}"}]}]
        inputs = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=True, return_tensors="pt")
        with torch.inference_mode():
            out = model.generate(
                **inputs,
                max_new_tokens=a.max_new_tokens,
                do_sample=False,
                output_logits=True,
                return_dict_in_generate=True,
                pad_token_id=tok.pad_token_id,
            )
        first = out.logits[0][0].float()
        p_yes = torch.softmax(torch.stack([first[yes_id], first[no_id]]), 0)[0].item()
        return inputs["input_ids"].shape[1], int(inputs["pixel_values"].shape[0]), p_yes

    for i in range(a.warmup):
        pair(qs[i % len(qs)])
    per_pair, p_yes = [], []
    tokens = tiles = 0
    for q in qs:
        t = time.perf_counter()
        tokens, tiles, p = pair(q)
        per_pair.append(time.perf_counter() - t)
        p_yes.append(p)
    seconds = sum(per_pair)
    out = {
        "impl": "transformers",
        "transformers": __import__("transformers").__version__,
        "torch": torch.__version__,
        "shape": "1b",
        "dtype": "f32",
        "threads": torch.get_num_threads(),
        "image": a.image,
        "tiles": tiles,
        "prompt_tokens": tokens,
        "questions": len(qs),
        "max_new_tokens": a.max_new_tokens,
        "made_weights": made,
        "load_s": load_s,
        "seconds": seconds,
        "pair_seconds": per_pair,
        "pairs_per_s": len(qs) / seconds,
        "p_yes_yes_no": p_yes,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }
    if a.json:
        print(json.dumps(out))
    else:
        print(f"transformers {out['transformers']}: {len(qs)} pairs in {seconds:.1f} s = {out['pairs_per_s']:.3f} pairs/s "
              f"({tokens} prompt tokens, {tiles} tiles, {a.threads} threads)")


if __name__ == "__main__":
    main()
