#!/usr/bin/env bash
# Runs ON THE GPU MACHINE, from the repository root, with gpu-run/ carried (see gpu-run.sh): the
# demo (`flix demo --seeds 3`) at several base sizes, one after the other, then FLix variants
# on each seed's pretrained base with `flix train` and `flix eval` (the settings of the demo's
# FLix run, from its spec.json, plus the variant's arguments). Everything goes to $OUT: each
# demo's printout and results.json, each variant's grid, and timings. An overall limit
# (FLIX_SWEEP_LIMIT seconds, default 540) keeps it inside the remote GPU runner's 600 s per call:
# a job that would start too late is skipped, one that runs over is stopped, and the demo prints
# each seed's grid as soon as it is done.
#
#   FLIX_SWEEP_JOBS     "name:demo args;name:demo args;..." (default below, most wanted first)
#   FLIX_SWEEP_VARIANTS "name:train args;..." run on every seed of every finished demo
#   FLIX_SWEEP_PARALLEL how many demos run at once (default 1: on 2026-11-26 four demos at once
#                       on one H200 each ran about 9x slower than one alone, 132 s a seed
#                       against 15 s, as the CUDA contexts take turns on the card)
#   FLIX_SWEEP_DEVICE   cuda (default), or cpu to try the script on a machine without a GPU
set -uo pipefail
STAGE=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=gpu-env.sh
source "$STAGE/gpu-env.sh"  # sets up CUDA, $OUT and $OUT/machine.txt
FLIX="$STAGE/flix"
W=$(mktemp -d)
T0=$(date +%s)
LIMIT=${FLIX_SWEEP_LIMIT:-540}
JOBS=${FLIX_SWEEP_JOBS:-"h64:--seeds 3;h256:--hidden 256 --seeds 3;h256x4:--hidden 256 --layers 4 --seeds 3"}
VARIANTS=${FLIX_SWEEP_VARIANTS-"flix-wd05:--method flix --rank 4 --alpha 8 --weight-decay 0.5"}
PARALLEL=${FLIX_SWEEP_PARALLEL:-1}
DEVICE=${FLIX_SWEEP_DEVICE:-cuda}  # cpu only to try the script out here

left() { echo $(( LIMIT - ($(date +%s) - T0) )); }

# The `flix train` arguments that repeat a run: its held-out cells and training settings, read
# from its spec.json (method, features and targets are left to the variant).
spec_args() { # spec.json
  python3 - "$1" <<'PY'
import json, sys
spec = json.load(open(sys.argv[1]))
args = []
for cell in spec["holdout"]:
    args += ["--holdout", cell]
args += ["--steps", spec["steps"], "--batch-tokens", spec["batch_tokens"],
         "--warmup", spec["warmup_steps"], "--lr", spec["lr"],
         "--min-lr-ratio", spec["min_lr_ratio"], "--clip", spec["max_grad_norm"],
         "--seed", spec["seed"]]
print("\n".join(str(a) for a in args))
PY
}

# One variant on one seed of a finished demo: the demo's FLix settings plus ARGS.
variant() { # job seed name args...
  local job=$1 seed=$2 name=$3; shift 3
  local d="$W/$job/seed-$seed" run="$W/$job/seed-$seed/$name" log="$OUT/$job-$name-s$seed"
  local same=()
  mapfile -t same < <(spec_args "$d/flix/spec.json")
  local t start
  t=$(left)
  [ "$t" -gt 15 ] || { echo "$job seed $seed $name: skipped (time)"; return; }
  start=$(date +%s)
  # "@D" in a variant's arguments stands for the seed's directory (e.g. @D/data/knowledge.jsonl).
  timeout "$t" "$FLIX" train --device "$DEVICE" --base "$d/base" --data "$d/data/train.jsonl" \
      --out "$run" "${same[@]}" --checkpoint-every 0 "${@//@D/$d}" > "$log.train.txt" 2>&1 \
    || { echo "$job seed $seed $name: train rc=$?"; return; }
  t=$(left)
  timeout "$t" "$FLIX" eval "$run" --device "$DEVICE" --data "$d/data/test.jsonl" \
      > "$log.eval.txt" 2>&1
  echo "$job seed $seed $name ($*) $(( $(date +%s) - start )) s: $(grep 'supervised mean' "$log.eval.txt")"
}

demo_job() { # name args...
  local job=$1; shift
  local t start
  t=$(left)
  [ "$t" -gt 30 ] || { echo "$job: skipped (time)"; return; }
  start=$(date +%s)
  # shellcheck disable=SC2068
  timeout "$t" "$FLIX" demo --device "$DEVICE" --out "$W/$job" $@ > "$OUT/$job.txt" 2>&1
  local rc=$?
  echo "$job (flix demo $*): rc=$rc in $(( $(date +%s) - start )) s"
  cp "$W/$job/results.json" "$OUT/$job-results.json" 2>/dev/null
  [ $rc -eq 0 ] || return
  local seeds
  seeds=$(ls -d "$W/$job"/seed-* | wc -l)
  IFS=';' read -ra vs <<< "$VARIANTS"
  for v in "${vs[@]}"; do
    for s in $(seq 0 $(( seeds - 1 ))); do
      # shellcheck disable=SC2086
      variant "$job" "$s" "${v%%:*}" ${v#*:}
    done
  done
}

IFS=';' read -ra jobs <<< "$JOBS"
for j in "${jobs[@]}"; do
  while [ "$(jobs -rp | wc -l)" -ge "$PARALLEL" ]; do wait -n; done
  # shellcheck disable=SC2086
  demo_job "${j%%:*}" ${j#*:} >> "$OUT/sweep.txt" 2>&1 &
done
wait
echo "== machine"; cat "$OUT/machine.txt"
echo "== sweep ($(( $(date +%s) - T0 )) s)"; cat "$OUT/sweep.txt"
for j in "${jobs[@]}"; do
  echo "== ${j%%:*}"
  grep -E "^seed|mean|^FLix |^LoRA |claim|total time" "$OUT/${j%%:*}.txt" 2>/dev/null
done
# The remote GPU runner brings back only a few files: everything goes back as sweep-all.txt.
for f in "$OUT"/*; do
  case $(basename "$f") in machine.txt|sweep.txt|sweep-all.txt) continue ;; esac
  echo "===== $(basename "$f")"; cat "$f"; echo; rm -f "$f"
done > "$OUT/sweep-all.txt"
