#!/usr/bin/env bash
# Builds, on this GPU-less machine, everything a GPU run needs and stages it in gpu-run/ (ignored
# by git), then prints the remote GPU runner call that executes scripts/gpu-remote.sh on the GPU
# machine: the flix-kernels test binaries with FLIX_REQUIRE_GPU=1 (a missing GPU fails), then
# `flix bench --device cuda` and the PyTorch peer script on the same card, then the flix-model
# parity tests on CUDA and `flix bench-train` with its PyTorch peer, in ONE call, with every
# log under $OUT. The GPU machine has CUDA 13.0 at /usr/local/cuda, python3 with torch, no Rust.
#
# Usage: scripts/gpu-run.sh            (release build; first run takes several minutes on 2 cores)
#        scripts/gpu-run.sh --cli-only (only the flix binary and the scripts: enough for
#                                       gpu-demo-sweep.sh, the demo at several sizes)
set -euo pipefail
CLI_ONLY=0
[ "${1:-}" = "--cli-only" ] && CLI_ONLY=1
cd "$(dirname "$0")/.."
ROOT=$(pwd)
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
STAGE=gpu-run

rm -rf "$STAGE"
mkdir -p "$STAGE/tests" "$STAGE/model-tests"

if [ $CLI_ONLY -eq 0 ]; then
echo "== building flix-kernels test binaries (release)" >&2
# The JSON messages name every test executable; keep those of flix-kernels.
cargo test --release -p flix-kernels --no-run --message-format=json 2>/dev/null \
  | jq -r 'select(.reason == "compiler-artifact" and .executable != null
                  and (.package_id | contains("flix-kernels"))) | .executable' \
  | sort -u > "$STAGE/tests.list"
if [ ! -s "$STAGE/tests.list" ]; then
  echo "no test binaries found (did the build fail? run: cargo test --release -p flix-kernels --no-run)" >&2
  exit 1
fi
while read -r exe; do
  name=$(basename "$exe" | sed 's/-[0-9a-f]\{16\}$//')
  cp "$exe" "$STAGE/tests/$name"
done < "$STAGE/tests.list"
rm "$STAGE/tests.list"

echo "== building flix-model parity test binaries (release)" >&2
# hf_parity and mixed_features run the model on CUDA (f32 and bf16). They find their fixtures
# through the path compiled in (CARGO_MANIFEST_DIR); gpu-remote.sh links that path to the copy.
cargo test --release -p flix-model --test hf_parity --test mixed_features --test gemma3_gguf_score --no-run \
    --message-format=json 2>/dev/null \
  | jq -r 'select(.reason == "compiler-artifact" and .executable != null
                  and (.package_id | contains("flix-model"))) | .executable' \
  | sort -u | while read -r exe; do
      cp "$exe" "$STAGE/model-tests/$(basename "$exe" | sed 's/-[0-9a-f]\{16\}$//')"
    done
echo "$ROOT/flix-model" > "$STAGE/MODEL_DIR"
fi

echo "== building flix (release)" >&2
cargo build --release -p flix-cli >&2
cp "$CARGO_TARGET_DIR/release/flix" "$STAGE/flix"

# Debug info is not needed there, and the carried folder is limited to 64 MiB.
strip "$STAGE"/flix
find "$STAGE/tests" "$STAGE/model-tests" -type f -exec strip {} +
# The exact batches of the GPU shape set, so the peers time the same segments and values.
"$STAGE/flix" bench --list-shapes --shapes all --json "$STAGE/shapes.json"
cp scripts/gpu-remote.sh scripts/gpu-env.sh scripts/gpu-demo-sweep.sh benches/peers/flix_peers.py benches/peers/train_peer.py \
  benches/peers/attention_peer.py scripts/gpu-results.py benches/peers/serve_peer.py "$STAGE/"
# The serving peer needs peft (and accelerate), which the GPU machine's python may lack: this
# machine's copies, compressed, used there only when its own `import peft` fails.
HF_PYTHON=${FLIX_HF_PYTHON:-/opt/hfvenv/bin/python}
if site=$("$HF_PYTHON" -c 'import os, peft; print(os.path.dirname(os.path.dirname(peft.__file__)))' 2>/dev/null); then
  tar -C "$site" --exclude=__pycache__ -cJf "$STAGE/pylib.tar.xz" peft accelerate
fi
git rev-parse HEAD > "$STAGE/COMMIT"
git status --porcelain --untracked-files=no | grep -q . && echo "(working tree had uncommitted changes)" >> "$STAGE/COMMIT"

size=$(du -sm "$STAGE" | cut -f1)
echo "== staged $STAGE/ (${size} MiB; the remote GPU runner carries at most 64 MiB):" >&2
ls -la "$STAGE" "$STAGE/tests" >&2
cat <<CALL

Now make this remote GPU runner call (one call runs the tests, flix bench and the peer script):

  run(command="bash gpu-run/gpu-remote.sh", carry=["gpu-run"], timeout_s=600)

or, for the serving benchmark (flix bench-serve and the transformers + PEFT peer; carry the
gpu-gemma-* folders of scripts/gpu-stage-gemma.sh first to serve Gemma 3 270M):

  run(command="FLIX_GPU_PARTS=serve bash gpu-run/gpu-remote.sh", carry=["gpu-run"], timeout_s=600)

or, for the demo at several base sizes (gpu-demo-sweep.sh; --cli-only staging is enough):

  run(command="bash gpu-run/gpu-demo-sweep.sh", carry=["gpu-run"], timeout_s=600)

Then copy the tables from \$OUT (summary.txt, flix-bench.txt, peers.txt) into BENCHMARKS.md
with the card, the commit (gpu-run/COMMIT) and pass/fail.
CALL
