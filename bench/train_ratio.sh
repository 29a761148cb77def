#!/usr/bin/env bash
# makd vs PyTorch training throughput on this CPU, side by side.
#
#   bench/train_ratio.sh            # every row below
#   ROUNDS=3 bench/train_ratio.sh   # best of 3 interleaved runs per side (for a shared machine)
#   ONLY=resnet18 bench/train_ratio.sh  # rows whose model contains ONLY
#   THREADS="1 2" bench/train_ratio.sh  # every row at 1 and at 2 threads (thread scaling)
#   EVAL=1 bench/train_ratio.sh         # also inference rows: batch 256, eval mode, no gradients
#
# Needs target/release/makd (cargo build --release) and a Python with torch + torchvision
# (TORCH_PYTHON, default python3). Both sides: the same threads, random data, CE + 4·BCE over 50
# aspects, SGD momentum 0.9, weight decay 1e-4; figures are the median ms/step after warm-up.
# Rows up to 64 px use the small stem on both sides; 224 px rows the ImageNet stems (the paper's
# input size and batch 16). Inference rows: forward only at batch 256, model.eval() + no_grad.
# PyTorch runs with OMP_WAIT_POLICY=PASSIVE unless the caller sets it: with active spinning its
# OpenMP threads collapse (3–4× slower) as soon as anything else runs on the two cores.
set -euo pipefail
cd "$(dirname "$0")/.."

MAKD=${MAKD:-target/release/makd}
PY=${TORCH_PYTHON:-python3}
ROUNDS=${ROUNDS:-1}
STEPS=${STEPS:-10}
THREADS=${THREADS:-2}
EVAL=${EVAL:-0}
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-PASSIVE}
export CANDLE_NUM_THREADS=${CANDLE_NUM_THREADS:-1}

# model size batch channels
ROWS=(
  "cnn 28 64 1"
  "resnet18 32 32 3"
  "resnet18 64 32 3"
  "resnet18 224 16 3"
  "resnet34 224 16 3"
  "resnet50 224 16 3"
  "mobilenet-v1 224 16 3"
  "mobilenet-v2 64 32 3"
  "mobilenet-v2 224 16 3"
  "efficientnet-b0 224 16 3"
)
EVAL_BATCH=256

[ -x "$MAKD" ] || { echo "error: $MAKD not found; hint: cargo build --release" >&2; exit 2; }
"$PY" -c "import torch, torchvision" 2>/dev/null || {
  echo "error: $PY cannot import torch and torchvision; hint: TORCH_PYTHON=/path/to/venv/bin/python" >&2
  exit 2
}

# Best (highest images/s) JSON line of $ROUNDS runs of the given command, or nothing on failure.
best_of() {
  local best="" line
  for _ in $(seq "$ROUNDS"); do
    line=$("$@" 2>/dev/null | tail -n 1) || continue
    best=$(printf '%s\n%s\n' "$best" "$line" | "$PY" -c '
import json, sys
rows = [json.loads(l) for l in sys.stdin if l.strip().startswith("{")]
print(json.dumps(max(rows, key=lambda r: r["images_per_s"])) if rows else "")')
  done
  printf '%s' "$best"
}

modes=(train)
[ "$EVAL" = 1 ] && modes+=(eval)
results=()
for threads in $THREADS; do
  for mode in "${modes[@]}"; do
    for row in "${ROWS[@]}"; do
      read -r model size batch ch <<<"$row"
      [[ "$model" == *"${ONLY:-}"* ]] || continue
      flag=()
      if [ "$mode" = eval ]; then flag=(--eval); batch=$EVAL_BATCH; fi
      echo "running $model ${size}px batch $batch $mode, $threads threads ..." >&2
      m=$(best_of "$MAKD" bench train --model "$model" --size "$size" --batch "$batch" \
            --channels "$ch" --steps "$STEPS" --threads "$threads" "${flag[@]}" --json)
      t=$(best_of "$PY" bench/torch_train.py --model "$model" --size "$size" --batch "$batch" \
            --channels "$ch" --steps "$STEPS" --threads "$threads" "${flag[@]}" --json)
      results+=("$model|$size|$batch|$mode|$threads|$m|$t")
    done
  done
done

table=$(mktemp)
trap 'rm -f "$table"' EXIT
printf '%s\n' "${results[@]}" >"$table"
"$PY" - "$table" <<'PYEOF'
import json, sys

def fmt(r, key, spec):
    return format(r[key], spec) if r else "n/a"

def ratio(m, t, key):
    return f"{m[key] / t[key]:.2f}x" if m and t else "n/a"

print(f"{'model':<16}{'px':>4}{'batch':>6}{'mode':>6}{'thr':>4} | {'makd img/s':>10}"
      f"{'torch img/s':>12}{'ratio':>7} | {'makd MB':>8}{'torch MB':>9}{'ratio':>7}")
for line in open(sys.argv[1]):
    model, size, batch, mode, threads, m, t = line.rstrip("\n").split("|", 6)
    m = json.loads(m) if m else None
    t = json.loads(t) if t else None
    print(f"{model:<16}{size:>4}{batch:>6}{mode:>6}{threads:>4} | {fmt(m, 'images_per_s', '.1f'):>10}"
          f"{fmt(t, 'images_per_s', '.1f'):>12}{ratio(m, t, 'images_per_s'):>7} | "
          f"{fmt(m, 'peak_rss_mb', '.0f'):>8}{fmt(t, 'peak_rss_mb', '.0f'):>9}"
          f"{ratio(m, t, 'peak_rss_mb'):>7}")
print("\nratio = makd / PyTorch: images/s above 1 is faster; memory (peak RSS) below 1 is leaner")
PYEOF
