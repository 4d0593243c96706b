#!/usr/bin/env bash
# Compiles the transformer kernels' own source (kernels-cu/transformer_*.cu) for the CPU with the
# host emulation (cuda_shim.h) and runs them against plain-loop references in double
# (transformer_emulate.cpp). Needs only g++ >= 11 (C++20). A check for the kernels' indexing and
# arithmetic while no GPU is at hand; the GPU tests remain the proof.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
out=${TMPDIR:-/tmp}/flix_transformer_emulate_$$
trap 'rm -f "$out"' EXIT
g++ -std=c++20 -O1 -pthread -Wall -Wno-unknown-pragmas -I"$here" "$here/transformer_emulate.cpp" -o "$out"
"$out"
