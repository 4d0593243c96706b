#!/usr/bin/env bash
# Stages, for a GPU run, what does not fit in one remote call (each carries at most 64 MiB): the
# Gemma 3 270M GGUF (253 MB; scripts/fetch_gemma3_gguf.sh) cut into 48 MiB parts, one ignored
# folder each (gpu-gemma-0 ... gpu-gemma-5), and the multilingual mixture (xz-compressed tar) in
# gpu-mixture/. Carry each folder in its own back-to-back call (the warm machine keeps them; it
# goes back after ~30 s idle), then run gpu-remote.sh with FLIX_GPU_PARTS including "gemma",
# which joins the parts and checks the sha256 before using them.
#
# Usage: scripts/gpu-stage-gemma.sh [MIXTURE_ROOT]   (default ../shared/data/mixture)
set -euo pipefail
cd "$(dirname "$0")/.."
gguf=$(scripts/fetch_gemma3_gguf.sh)
mixture=${1:-../shared/data/mixture}
rm -rf gpu-gemma-* gpu-mixture
tmp=$(mktemp -d)
split -b 48M -d -a 1 "$gguf" "$tmp/part-"
for part in "$tmp"/part-*; do
  k=${part##*-}
  mkdir -p "gpu-gemma-$k"
  mv "$part" "gpu-gemma-$k/"
done
sha256sum "$gguf" | cut -d' ' -f1 > gpu-gemma-0/SHA256
mkdir -p gpu-mixture
tar -C "$(dirname "$mixture")" -cJf gpu-mixture/mixture.tar.xz "$(basename "$mixture")"
du -sh gpu-gemma-* gpu-mixture >&2
echo "Carry each of these in its own call (command \"true\"), back to back, then the main call:"
for d in gpu-gemma-* gpu-mixture; do
  echo "  run(command=\"true\", carry=[\"$d\"], timeout_s=60)"
done
echo "  run(command=\"FLIX_GPU_PARTS='model gemma' bash gpu-run/gpu-remote.sh\", carry=[\"gpu-run\"], timeout_s=600)"
