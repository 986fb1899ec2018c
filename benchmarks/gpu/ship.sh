#!/usr/bin/env bash
# Step 0 (here, from the project's root): prepare everything the GPU machine needs and cannot fetch.
#   .gpu-parts/ + .gpu/  the vLLM 0.24.0 + Ray 2.60 + CVXPY/HiGHS bundle (../shared/gpu/vllm-bundle.sh), 9 parts of 42 MB
#   .gpu-carry/          llama-cpp-python's source (trimmed to fit one call), the gguf wheel, the LMSYS sample
# All three are ignored by git. Then, on one warm machine, back to back (it forgets all 30 s after a call):
#   for N in 0..COUNT-1 (9 parts): run `bash .gpuN/receive.sh` carrying .gpuN (part N with the recipe's receive.sh; the
#                  same as ../shared/gpu/stage.sh N, without a step here between calls) -> READY vllm 0.24.0
#   run `bash benchmarks/gpu/setup.sh` (carry .gpu-carry)      builds llama.cpp for the CPUs, makes the 1B model
#   run `bash benchmarks/gpu/step.sh <step>` for each step (see step.sh)
set -euo pipefail
LLAMA_VERSION="${LLAMA_VERSION:-0.3.36}"
root="$(pwd)"; shared="$root/../shared"
[ -f pyproject.toml ] && grep -q 'name = "rayhet"' pyproject.toml || { echo "run from the rayhet root" >&2; exit 1; }
mkdir -p .git/info && touch .git/info/exclude
grep -qxF '/.gpu-carry/' .git/info/exclude || echo '/.gpu-carry/' >> .git/info/exclude
if [ ! -f .gpu/COUNT ] || [ "$(ls .gpu-parts 2>/dev/null | wc -l)" != "$(cat .gpu/COUNT)" ]; then
  "$shared/gpu/vllm-bundle.sh" "ray[serve]==2.60.0" cvxpy highspy diskcache   # diskcache: llama-cpp-python needs it
fi
# One call carries the working tree (~12 MB) with its part, 64 MiB in all: the recipe's 52 MB parts no longer
# fit beside it (2026-12-01), so they are cut again at 42 MB (receive.sh joins whatever parts COUNT names).
if [ -n "$(find .gpu-parts -name 'part.*' -size +43M)" ]; then
  cut="$(mktemp -d)"; cat .gpu-parts/part.* | split -b 42M -d - "$cut/part."
  rm -rf .gpu-parts && mv "$cut" .gpu-parts && ls .gpu-parts | wc -l | tr -d ' ' > .gpu/COUNT
fi
rm -rf .gpu[0-9] .gpu[0-9][0-9]
# .gpuN/: part N beside receive.sh and zstd (hard links), so each part's call needs nothing staged first
for f in .gpu-parts/part.*; do
  n=$((10#${f##*.})); d=".gpu$n"
  rm -rf "$d"; mkdir "$d"; ln "$f" "$d/"
  for g in .gpu/*; do case "$g" in .gpu/part.*) ;; *) ln "$g" "$d/" ;; esac; done
  grep -qxF "/$d/" .git/info/exclude || echo "/$d/" >> .git/info/exclude
done
mkdir -p .gpu-carry
if [ ! -f ".gpu-carry/llama_cpp_python-$LLAMA_VERSION.tar.gz" ]; then
  work="$(mktemp -d)"; trap 'rm -rf "$work"' EXIT
  python3 -m pip download -q --no-deps --no-binary :all: -d "$work" "llama-cpp-python==$LLAMA_VERSION"
  tar -xzf "$work"/llama_cpp_python-*.tar.gz -C "$work"
  src="$work/llama_cpp_python-$LLAMA_VERSION"
  # 77 MB -> 12.5 MB: what the build never reads (model vocabularies, docs, benches, git history)
  rm -rf "$src/.git" "$src/vendor/llama.cpp/.git" "$src/vendor/llama.cpp/models" "$src/vendor/llama.cpp/docs" \
         "$src/vendor/llama.cpp/benches"
  tar -czf ".gpu-carry/llama_cpp_python-$LLAMA_VERSION.tar.gz" -C "$work" "llama_cpp_python-$LLAMA_VERSION"
fi
ls .gpu-carry/gguf-*.whl >/dev/null 2>&1 || python3 -m pip download -q --no-deps --only-binary=:all: -d .gpu-carry gguf
cp -f "$shared/anchors/melange/lmsys-chat-1m.csv" .gpu-carry/
du -sh .gpu-parts .gpu-carry
echo "ready: send .gpu0 .. .gpu$(( $(cat .gpu/COUNT) - 1 )), then setup.sh and step.sh on the same warm machine"
