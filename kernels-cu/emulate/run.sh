#!/usr/bin/env bash
# Compiles the FLix kernels' own source for the CPU with the host emulation (cuda_shim.h) and runs
# them against a plain-loop reference (flix_emulate.cpp). Needs only g++ >= 11 (C++20). A check
# for the kernels' indexing and arithmetic while no GPU is at hand; the GPU tests remain the proof.
# -fno-strict-aliasing: the kernels move bf16 rows as uint4 (16-byte loads into shared memory),
# the usual CUDA idiom, which g++ would otherwise be free to reorder.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
out=${TMPDIR:-/tmp}/flix_emulate
g++ -std=c++20 -O2 -fno-strict-aliasing -pthread -Wall -Wno-unknown-pragmas -I"$here" "$here/flix_emulate.cpp" -o "$out"
"$out"
