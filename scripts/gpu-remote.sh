#!/usr/bin/env bash
# Runs ON THE GPU MACHINE, from the repository root, with gpu-run/ carried (see gpu-run.sh):
#   1. every flix-kernels test binary with FLIX_REQUIRE_GPU=1 (CUDA unavailable = failure),
#   2. flix bench --device cuda (our layer, base GEMM and copy bandwidth, JSON in $OUT),
#   3. the PyTorch peers on the same card and the same batches,
#   4. the flix-model parity tests on CUDA (f32 and bf16) with FLIX_REQUIRE_GPU=1,
#   5. flix bench-train (TinyLlama-1.1B shape, FLix on all projections) and its PyTorch peer
#      train_peer.py (transformers, SDPA, bf16): training-step tokens/s and peak memory.
#   6. the command line on CUDA ("cli"): `flix demo --tiny`, a `flix train` killed after its
#      first checkpoint and resumed (its final adapters and optimizer state must equal those of
#      an uninterrupted run, byte for byte), then the full `flix demo` with its wall time.
#   7. "gemma" (not in the default set; needs scripts/gpu-stage-gemma.sh's folders carried first):
#      the real Gemma 3 270M GGUF joined from its parts and sha256-checked, its log-probabilities
#      on CUDA against transformers' (the gemma3_gguf_score test), `flix bench-train --model` and
#      train_peer.py --model on it, then `flix compare` on the real mixture within a time budget
#      (FLIX_GPU_COMPARE_LIMIT seconds, default 300) with the settings of FLIX_GPU_COMPARE_ARGS.
#   8. "attention": `flix bench-attention` and attention_peer.py (SDPA) on the same shapes.
#   9. "serve" (not in the default set): `flix bench-serve --device cuda` — the completions
#      server under 1..64 concurrent clients, mixed, single and no-feature requests — and its
#      transformers + PEFT peer serve_peer.py replaying the same requests on the same card. The
#      served run is a short FLix run on Gemma 3 270M when the gpu-gemma-* folders were carried
#      (see "gemma"), else the tiny demo's FLix run. JSON and logs in $OUT (serve-*).
# At the end, gpu-results.py gathers the JSON figures into $OUT/<date>-<card>.json (commit it
# under benches/results/): train_ratio, layer_fb_ratio, attention ratios, each with the peer's.
# FLIX_GPU_PARTS picks parts (default all: "kernels bench peers model train attention cli"), e.g.
# FLIX_GPU_PARTS="model train" when a whole run does not fit in one call.
# Logs go to $OUT; a short summary is printed last. Time limits keep the whole under the
# remote GPU runner's 600 s per call.
set -uo pipefail
STAGE=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=gpu-env.sh
source "$STAGE/gpu-env.sh"  # sets up CUDA, $OUT and $OUT/machine.txt

: > "$OUT/summary.txt"
fail=0
PARTS=" ${FLIX_GPU_PARTS:-kernels bench peers model train attention cli} "
want() { [[ "$PARTS" == *" $1 "* ]]; }
cd "$STAGE/.." || exit 1
want kernels && for t in "$STAGE"/tests/*; do
  name=$(basename "$t")
  # The tests find nothing on disk; run from flix-kernels/ like cargo does.
  (cd flix-kernels 2>/dev/null || true; timeout 60 "$t" --test-threads=1) > "$OUT/test-$name.log" 2>&1
  rc=$?
  result=$(grep -E '^test result:' "$OUT/test-$name.log" | tail -1)
  echo "test $name: rc=$rc $result" >> "$OUT/summary.txt"
  [ $rc -eq 0 ] || fail=1
done
grep -h "SKIPPED" "$OUT"/test-*.log >> "$OUT/summary.txt" 2>/dev/null

if want bench; then
  timeout 100 "$STAGE/flix" bench --device cuda --json "$OUT/flix.json" > "$OUT/flix-bench.txt" 2>&1
  echo "flix bench: rc=$?" >> "$OUT/summary.txt"
fi

SHAPES=()
[ -s "$STAGE/shapes.json" ] && SHAPES=(--shapes "$STAGE/shapes.json")
if want peers; then
  timeout 100 python3 "$STAGE/flix_peers.py" --device cuda "${SHAPES[@]}" --json "$OUT/peers.json" \
    > "$OUT/peers.txt" 2>&1
  echo "peers: rc=$?" >> "$OUT/summary.txt"
fi

# The model tests look for their fixtures at the path they were built at: link it to this copy.
MODEL_DIR=$(cat "$STAGE/MODEL_DIR" 2>/dev/null)
if [ -n "$MODEL_DIR" ] && [ ! -e "$MODEL_DIR" ]; then
  mkdir -p "$(dirname "$MODEL_DIR")" && ln -s "$(pwd)/flix-model" "$MODEL_DIR"
fi
want model && for t in "$STAGE"/model-tests/*; do
  [ -e "$t" ] || continue
  name=$(basename "$t")
  (cd flix-model && timeout 60 "$t" --test-threads=1) > "$OUT/test-model-$name.log" 2>&1
  rc=$?
  result=$(grep -E '^test result:' "$OUT/test-model-$name.log" | tail -1)
  echo "test model $name: rc=$rc $result" >> "$OUT/summary.txt"
  [ $rc -eq 0 ] || fail=1
done

if want train; then
  # FLIX_PROFILE=1: after the timed steps, one more step with every op timed (printed last).
  FLIX_PROFILE=1 timeout 90 "$STAGE/flix" bench-train --device cuda --warmup 1 --steps 3 \
    --json "$OUT/bench-train.json" > "$OUT/bench-train.txt" 2>&1
  echo "flix bench-train: rc=$?" >> "$OUT/summary.txt"
  timeout 90 python3 "$STAGE/train_peer.py" --device cuda --warmup 1 --steps 3 \
    --json "$OUT/train-peer.json" > "$OUT/train-peer.txt" 2>&1
  echo "train peer: rc=$?" >> "$OUT/summary.txt"
fi

if want attention; then
  # Our attention against SDPA on the same shapes: causal, 32 heads / 4 KV heads, head_dim 64,
  # 128, 256, full and a 512 window, 8 x 1024 and 4 x 2048 tokens, bf16.
  timeout 120 "$STAGE/flix" bench-attention --device cuda --json "$OUT/attention.json" \
    > "$OUT/attention.txt" 2>&1
  echo "flix bench-attention: rc=$?" >> "$OUT/summary.txt"
  timeout 120 python3 "$STAGE/attention_peer.py" --device cuda --json "$OUT/attention-peer.json" \
    > "$OUT/attention-peer.txt" 2>&1
  echo "attention peer (SDPA): rc=$?" >> "$OUT/summary.txt"
fi

if want cli; then
  W=$(mktemp -d)
  FLIX="$STAGE/flix"
  timeout 90 "$FLIX" demo --tiny --device cuda --out "$W/tiny" > "$OUT/cli.txt" 2>&1
  echo "flix demo --tiny --device cuda: rc=$?" >> "$OUT/summary.txt"
  TRAIN=(train --device cuda --base "$W/tiny/seed-0/base" --data "$W/tiny/seed-0/data/train.jsonl"
         --method flix --rank 2 --dropout 0.3 --steps 200 --batch-tokens 128
         --checkpoint-every 10 --lr 0.01 --seed 5)
  resume_rc=1
  if timeout 60 "$FLIX" "${TRAIN[@]}" --out "$W/straight" >> "$OUT/cli.txt" 2>&1; then
    "$FLIX" "${TRAIN[@]}" --out "$W/killed" >> "$OUT/cli.txt" 2>&1 &
    pid=$!
    for _ in $(seq 6000); do
      ls "$W/killed/checkpoints" 2>/dev/null | grep -q step- && break
      sleep 0.01
    done
    kill -9 "$pid" 2>/dev/null; wait "$pid" 2>/dev/null
    echo "killed after: $(ls "$W/killed/checkpoints" 2>/dev/null | tr '\n' ' ')" >> "$OUT/cli.txt"
    if timeout 60 "$FLIX" train --resume "$W/killed" >> "$OUT/cli.txt" 2>&1; then
      last=$(ls "$W/straight/checkpoints" | tail -1)
      if [ "$last" = "$(ls "$W/killed/checkpoints" | tail -1)" ] &&
         cmp "$W/straight/checkpoints/$last/adapter_model.safetensors" \
             "$W/killed/checkpoints/$last/adapter_model.safetensors" >> "$OUT/cli.txt" 2>&1 &&
         cmp "$W/straight/checkpoints/$last/optimizer.safetensors" \
             "$W/killed/checkpoints/$last/optimizer.safetensors" >> "$OUT/cli.txt" 2>&1; then
        resume_rc=0
      fi
    fi
  fi
  echo "flix train --device cuda killed and resumed, identical bytes: rc=$resume_rc" >> "$OUT/summary.txt"
  [ $resume_rc -eq 0 ] || fail=1
  start=$(date +%s)
  timeout "${FLIX_GPU_DEMO_LIMIT:-200}" "$FLIX" demo --device cuda --out "$W/demo" > "$OUT/demo.txt" 2>&1
  echo "flix demo --device cuda: rc=$? in $(( $(date +%s) - start )) s" >> "$OUT/summary.txt"
fi

# Joins the carried gpu-gemma-* parts into $GGUF; fails when the sha256 does not match.
GGUF=/tmp/gemma-3-270m-q4_k_m.gguf
gemma_ok() { [ "$(sha256sum "$GGUF" 2>/dev/null | cut -d' ' -f1)" = "$(cat gpu-gemma-0/SHA256 2>/dev/null)" ]; }
join_gemma() {
  gemma_ok && return 0
  cat gpu-gemma-*/part-* > "$GGUF" 2>/dev/null
  gemma_ok
}

if want gemma; then
  if ! join_gemma; then
    echo "gemma: the joined GGUF's sha256 does not match (were all gpu-gemma-* folders carried?)" >> "$OUT/summary.txt"
    fail=1
  else
    export FLIX_GEMMA3_GGUF=$GGUF
    for t in "$STAGE"/model-tests/gemma3_gguf_score*; do
      [ -e "$t" ] || continue
      (cd flix-model && timeout 120 "$t" --nocapture) > "$OUT/gemma-score.txt" 2>&1
      echo "gemma3 GGUF log-probs on CPU and CUDA vs transformers: rc=$?" >> "$OUT/summary.txt"
    done
    FLIX_PROFILE=1 timeout 120 "$STAGE/flix" bench-train --device cuda --model "$GGUF" --warmup 1 \
      --steps 3 --batch 8 --seq-len 1024 --json "$OUT/bench-train-gemma.json" > "$OUT/bench-train-gemma.txt" 2>&1
    echo "flix bench-train --model gemma: rc=$?" >> "$OUT/summary.txt"
    timeout 120 python3 "$STAGE/train_peer.py" --device cuda --model "$GGUF" --warmup 1 --steps 3 \
      --batch 8 --seq-len 1024 --json "$OUT/train-peer-gemma.json" > "$OUT/train-peer-gemma.txt" 2>&1
    echo "train peer --model gemma: rc=$?" >> "$OUT/summary.txt"
    if [ -f gpu-mixture/mixture.tar.xz ]; then
      M=$(mktemp -d) && tar -C "$M" -xJf gpu-mixture/mixture.tar.xz
      # shellcheck disable=SC2086
      timeout "${FLIX_GPU_COMPARE_LIMIT:-300}" "$STAGE/flix" compare --device cuda --base "$GGUF" \
        --mixture "$M/mixture" --split-file "$M/mixture/zero_shot_split.json" --out "$OUT/compare" \
        ${FLIX_GPU_COMPARE_ARGS:---seeds 3 --rank 4 --dropout 0.1 --steps 300 --batch-tokens 4096 --max-train-per-cell 1000 --max-eval-per-cell 20} \
        > "$OUT/compare.txt" 2>&1
      echo "flix compare on the mixture: rc=$?" >> "$OUT/summary.txt"
      rm -rf "$OUT/compare/runs"  # checkpoints stay behind; results.json and summary.md come back
    fi
  fi
fi

if want serve; then
  S=$(mktemp -d)
  FLIX="$STAGE/flix"
  # The tiny demo gives the data (and, without Gemma, the run and its base).
  timeout 90 "$FLIX" demo --tiny --device cuda --out "$S/tiny" > "$OUT/serve-setup.txt" 2>&1
  RUN="$S/tiny/seed-0/flix"
  if [ -d gpu-gemma-0 ] && join_gemma; then
    timeout 120 "$FLIX" train --device cuda --base "$GGUF" --data "$S/tiny/seed-0/data/train.jsonl" \
      --method flix --rank 8 --steps 20 --out "$S/gemma-run" >> "$OUT/serve-setup.txt" 2>&1 \
      && RUN="$S/gemma-run"
  fi
  echo "serve: run $RUN" >> "$OUT/summary.txt"
  PEER_PYTHONPATH=${PYTHONPATH:-}
  if ! python3 -c "import peft" 2>/dev/null && [ -f "$STAGE/pylib.tar.xz" ]; then
    mkdir -p "$S/pylib" && tar -C "$S/pylib" -xJf "$STAGE/pylib.tar.xz"
    PEER_PYTHONPATH="$S/pylib${PYTHONPATH:+:$PYTHONPATH}"
  fi
  timeout 200 "$FLIX" bench-serve --run "$RUN" --device cuda \
    --data "$S/tiny/seed-0/data/test.jsonl" --modes mixed,single,base --concurrency 1,4,16,64 \
    --duration-secs 4 --requests-per-level 64 --max-tokens 32 --stream \
    --dump-requests "$OUT/serve-requests.jsonl" --out "$OUT/bench-serve.json" \
    > "$OUT/bench-serve.txt" 2>&1
  echo "flix bench-serve --device cuda: rc=$?" >> "$OUT/summary.txt"
  # The peer is far slower: the first 32 requests of each mode (it writes its JSON after each).
  PYTHONPATH="$PEER_PYTHONPATH" timeout 200 python3 "$STAGE/serve_peer.py" --run "$RUN" \
    --requests "$OUT/serve-requests.jsonl" --flix "$FLIX" --device cuda --batch 1,8 --limit 32 \
    --json "$OUT/serve-peer.json" \
    > "$OUT/serve-peer.txt" 2>&1
  echo "serve peer (transformers + PEFT): rc=$?" >> "$OUT/summary.txt"
fi

python3 "$STAGE/gpu-results.py" "$OUT" "$(head -1 "$STAGE/COMMIT")" >> "$OUT/summary.txt" 2>&1

# The remote GPU runner brings back only a few files: the test logs go back as one.
for f in "$OUT"/test-*.log; do echo "===== $(basename "$f")"; cat "$f"; done > "$OUT/tests.log" 2>/dev/null
rm -f "$OUT"/test-*.log

echo "== machine"; cat "$OUT/machine.txt"
echo "== flix bench (tail)"; tail -n 40 "$OUT/flix-bench.txt" 2>/dev/null
echo "== peers (tail)"; tail -n 50 "$OUT/peers.txt" 2>/dev/null
echo "== bench-train"; tail -n 40 "$OUT/bench-train.txt" 2>/dev/null
echo "== train peer"; tail -n 5 "$OUT/train-peer.txt" 2>/dev/null
echo "== attention"; cat "$OUT/attention.txt" "$OUT/attention-peer.txt" 2>/dev/null
echo "== demo"; tail -n 30 "$OUT/demo.txt" 2>/dev/null
echo "== gemma"; tail -n 20 "$OUT/gemma-score.txt" "$OUT/bench-train-gemma.txt" "$OUT/train-peer-gemma.txt" "$OUT/compare.txt" 2>/dev/null
echo "== serve"; tail -n 20 "$OUT/bench-serve.txt" "$OUT/serve-peer.txt" 2>/dev/null
echo "== failing tests (first lines)"
grep -E "panicked|FAILED|^failures" "$OUT/tests.log" | head -20
echo "== summary"; cat "$OUT/summary.txt"
exit $fail
