#!/usr/bin/env bash
# The GPU check (issue 23): on a machine with an NVIDIA GPU, in under 8 minutes, it
#   1. installs the gpu extra when JAX cannot see a GPU yet (needs the network or a local wheel cache),
#   2. runs the GPU-only tests (tests/test_gpu.py: cuDNN attention vs XLA in bf16, the bf16 train step on the
#      device, the sampler's greedy tokens vs the CPU),
#   3. measures the train step of ee-1.5b in bf16 (remat, cuDNN attention; tokens/s and MFU against the card's
#      datasheet bf16 peak) and the sampler's decode tokens/s at batch 1 and 64 (ee-1.5b shape, random weights),
#   4. runs the quickstart (configs/quickstart.yaml) on the GPU.
# The last line of stdout is one JSON object with every figure; each step's own output goes to $OUT (default
# ./device_check). Without a GPU it fails at once with a one-line message.
#   bash bench/device_check.sh
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-device_check}
mkdir -p "$OUT"
if ! command -v nvidia-smi >/dev/null || ! nvidia-smi -L >/dev/null 2>&1; then
  echo "device_check: no NVIDIA GPU on this machine (nvidia-smi finds none); run it on a GPU machine" >&2
  echo '{"ok": false, "error": "no NVIDIA GPU"}'
  exit 2
fi
card=$(nvidia-smi --query-gpu=name --format=csv,noheader | head -1)
export JAX_PLATFORMS=cuda,cpu PYTHONUNBUFFERED=1
if ! python3 -c "import jax, sys; sys.exit(0 if jax.devices('gpu') else 1)" >/dev/null 2>&1; then
  python3 -m pip install -q -e ".[gpu]" >"$OUT/install.log" 2>&1 || {
    echo "device_check: JAX sees no GPU and 'pip install -e .[gpu]' failed (see $OUT/install.log)" >&2
    echo "{\"ok\": false, \"card\": \"$card\", \"error\": \"gpu extra not installable\"}"; exit 2; }
fi
python3 -m pip install -q -e ".[dev]" >>"$OUT/install.log" 2>&1 || true
start=$(date +%s)
timeout 120 python3 -m pytest -q tests/test_gpu.py -p no:cacheprovider >"$OUT/tests.log" 2>&1
tests_rc=$?
timeout 150 python3 bench/train_step.py --preset ee-1.5b --batch 8 --seq 2048 --dtype bfloat16 --no-torch \
  --steps 5 --warmup 2 --idle-threshold 64 --max-wait 0 model.remat=full model.attention_impl=cudnn \
  >"$OUT/train_step.log" 2>&1
train_rc=$?
timeout 120 python3 bench/sampler.py --preset ee-1.5b --prompt 128 --new 128 --batches 1,64 --repeats 2 \
  --prefill-repeats 3 --no-torch --idle-threshold 64 --max-wait 0 --override model.dtype=bfloat16 \
  >"$OUT/sampler.log" 2>&1
sampler_rc=$?
timeout 240 python3 bench/quickstart.py --budget-s 600 >"$OUT/quickstart.log" 2>&1
quick_rc=$?
python3 - "$OUT" "$card" "$tests_rc" "$train_rc" "$sampler_rc" "$quick_rc" "$start" <<'PY'
import json, sys, time
out, card, *rcs = sys.argv[1:]
start = float(rcs.pop())
def last_json(name):
    try:
        lines = [ln for ln in open(f"{out}/{name}.log") if ln.startswith("{")]
        return json.loads(lines[-1]) if lines else None
    except OSError:
        return None
tests = open(f"{out}/tests.log").read().strip().splitlines()
names = ["tests", "train_step", "sampler", "quickstart"]
report = {"card": card, "returncodes": dict(zip(names, map(int, rcs))), "tests": tests[-1] if tests else "",
          "train_step": last_json("train_step"), "sampler": last_json("sampler"),
          "quickstart": last_json("quickstart"), "seconds": round(time.time() - start, 1)}
report["ok"] = all(v == 0 for v in report["returncodes"].values())
print(json.dumps(report, default=str))
PY
