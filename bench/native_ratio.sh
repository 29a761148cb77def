#!/usr/bin/env bash
# makd's native InternVL teacher vs the transformers pattern a user would otherwise run, side by
# side on the same weights, image, questions, dtype (f32) and threads; prints pairs/s of both and
# the ratio makd / transformers per question count.
#
#   bench/native_ratio.sh                      # 1 image x 3 questions, 2 threads
#   QUESTIONS="3 10 50" bench/native_ratio.sh  # a row per question count
#   THREADS=4 IMAGE=896x448 bench/native_ratio.sh
#
# Needs target/release/makd (cargo build --release) and a Python with torch + transformers >= 5
# (TORCH_PYTHON, default python3). The model is InternVL2.5-1B's shape with random weights,
# made once by bench/internvl_transformers.py and saved (-hf layout, ~3.7 GB) in MODEL_DIR
# (default target/internvl-1b-random); makd loads that folder (`makd bench native --family
# internvl --model-dir`), so both sides run the very same weights, and the script checks it:
# both print P(yes) over the `Yes`/`No` tokens for every question.
#
# makd: prefix-shared pairs/s of `makd bench native` (the image encoded once, the system message
# and image prefilled once, the Q question suffixes scored in one batch), as `makd label
# --backend native` runs an image. transformers: one generate call per image x question, the
# full prompt each time, greedy, 2 new tokens, after one untimed warm-up call. Its pairs are
# independent calls whose cost does not depend on Q, so it times HF_PAIRS of them once (default:
# the largest Q, at most 3) and the row for Q uses the first min(Q, HF_PAIRS); `makd bench native`
# times its own one-prompt-per-pair path the same way (--unshared 1).
# A 1B-parameter f32 prefill of ~300 tokens plus the 1025-token vision tower takes tens of
# seconds per pair in transformers on 2 cores: raise HF_PAIRS only with time to spare.
set -euo pipefail
cd "$(dirname "$0")/.."

MAKD=${MAKD:-target/release/makd}
PY=${TORCH_PYTHON:-python3}
QUESTIONS=${QUESTIONS:-3}
THREADS=${THREADS:-2}
IMAGE=${IMAGE:-448x448}
MODEL_DIR=${MODEL_DIR:-target/internvl-1b-random}
# PyTorch's OpenMP threads spin-wait by default and collapse when anything else runs on the cores.
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-PASSIVE}

[ -x "$MAKD" ] || { echo "error: $MAKD not found; hint: cargo build --release" >&2; exit 2; }
"$PY" -c "import torch, transformers" 2>/dev/null || {
  echo "error: $PY cannot import torch and transformers; hint: TORCH_PYTHON=/path/to/venv/bin/python" >&2
  exit 2
}
max_q=0
for q in $QUESTIONS; do
  [[ "$q" =~ ^[1-9][0-9]*$ ]] || { echo "error: QUESTIONS must be counts >= 1, got '$q'" >&2; exit 2; }
  [ "$q" -gt "$max_q" ] && max_q=$q
done
HF_PAIRS=${HF_PAIRS:-$((max_q < 3 ? max_q : 3))}
[[ "$HF_PAIRS" =~ ^[1-9][0-9]*$ ]] || { echo "error: HF_PAIRS must be >= 1, got '$HF_PAIRS'" >&2; exit 2; }

results=$(mktemp)
trap 'rm -f "$results"' EXIT

# The transformers side first: it makes MODEL_DIR when it is missing.
echo "transformers: $HF_PAIRS pairs, $THREADS threads, image $IMAGE (weights in $MODEL_DIR) ..." >&2
"$PY" bench/internvl_transformers.py --model-dir "$MODEL_DIR" --questions "$HF_PAIRS" \
  --image "$IMAGE" --threads "$THREADS" --json | tail -n 1 >"$results"

for q in $QUESTIONS; do
  echo "makd: $q questions, $THREADS threads ..." >&2
  RAYON_NUM_THREADS=$THREADS "$MAKD" bench native --family internvl --model-dir "$MODEL_DIR" \
    --questions "$q" --unshared 1 --image "$IMAGE" --json | tail -n 1 >>"$results"
done

"$PY" - "$results" <<'PYEOF'
import json, sys

rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
hf, makd = rows[0], rows[1:]
print(f"InternVL2.5-1B shape, random weights, f32, image {hf['image']} ({hf['tiles']} tile(s), "
      f"{hf['prompt_tokens']} prompt tokens); transformers {hf['transformers']}, torch {hf['torch']}")
print(f"{'questions':>9}{'threads':>8} | {'makd pairs/s':>12}{'transformers':>13}{'ratio':>8} | "
      f"{'makd 1 prompt/pair':>18}{'ratio':>8} | {'max |dP(yes)|':>13} | makd vision, prefix, suffixes s")
print(f"(transformers: {len(hf['pair_seconds'])} pairs timed, "
      f"{', '.join(f'{s:.1f}' for s in hf['pair_seconds'])} s each)")
for m in makd:
    q = m["questions"]
    k = min(q, len(hf["pair_seconds"]))
    t_pps = k / sum(hf["pair_seconds"][:k])
    sh = m["shared"]
    dp = max(abs(a - b) for a, b in zip(m["p_yes_yes_no"], hf["p_yes_yes_no"]))
    print(f"{q:>9}{m['threads']:>8} | {m['shared']['pairs_per_s']:>12.3f}{t_pps:>13.3f}"
          f"{m['shared']['pairs_per_s'] / t_pps:>7.1f}x | {m['unshared']['pairs_per_s']:>18.3f}"
          f"{m['unshared']['pairs_per_s'] / t_pps:>7.1f}x | {dp:>13.1e} | "
          f"{sh['vision_s']:.1f}, {sh['prefix_s']:.1f}, {sh['suffix_batch_s']:.1f}")
    if m["threads"] != hf["threads"]:
        print(f"warning: makd ran {m['threads']} threads, transformers {hf['threads']}", file=sys.stderr)
print("\nratio = makd (prefix-shared, as `makd label --backend native`) / transformers (one generate "
      "call per pair, 2 new tokens);\nmakd 1 prompt/pair: makd's own kernels without prefix sharing "
      "(the full prompt and the image for every pair, 1 timed);\nmax |dP(yes)| over the Yes/No tokens "
      "shows both ran the same weights")
PYEOF
