#!/usr/bin/env bash
# Step 1 (GPU machine, after the bundle printed READY; carry .gpu-carry): build llama-cpp-python for this
# machine's CPUs (CPU-only: the cpu pool runs on the cores), install gguf, and make the ~1B random-weight
# Llama in both formats (HF for vLLM, GGUF for llama.cpp) with rayhet.testing.models. Idempotent.
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT="${OUT:-/tmp/rayhet-out}"; mkdir -p "$OUT"
source benchmarks/gpu/env.sh
if [ ! -f /tmp/site-llama/.built ]; then
  t0=$(date +%s)
  rm -rf /tmp/llama-build && mkdir -p /tmp/llama-build
  tar -xzf .gpu-carry/llama_cpp_python-*.tar.gz -C /tmp/llama-build
  # GGML_NATIVE (the default) tunes for this CPU: build where it runs. No isolation: no network here.
  # The system GCC, not the image's CC/CXX (/opt/gcc): libraries built with that one do not record
  # libstdc++ as needed, and llama.cpp then segfaults at its first C++ library call (seen 2026-11-21).
  rm -rf /tmp/site-llama
  CC=/usr/bin/gcc CXX=/usr/bin/g++ CMAKE_BUILD_PARALLEL_LEVEL=16 CMAKE_ARGS="-DGGML_CUDA=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF" \
    python3 -m pip wheel -q --no-deps --no-build-isolation -w /tmp/llama-build/wheel /tmp/llama-build/llama_cpp_python-*/ \
    > "$OUT/llama-build.log" 2>&1 || { tail -40 "$OUT/llama-build.log"; exit 1; }
  python3 -m pip install -q --no-deps --target /tmp/site-llama /tmp/llama-build/wheel/*.whl .gpu-carry/gguf-*.whl
  touch /tmp/site-llama/.built
  echo "llama-cpp-python built in $(( $(date +%s) - t0 )) s"
fi
# HYBRID=1: also llama-cpp-python with CUDA (issue 18's hybrid pools) in /tmp/site-llama-cuda, for Hopper only
# (sm_90) and without flash-attention kernels (hybrid pools leave flash_attn off) to keep the compile short: still
# more than 200 s on the 16 cores (2026-11-30, nvcc 13.0: not finished then), so give it a call of its own (up to
# 600 s). Use it with PYTHONPATH=/tmp/site-llama-cuda:$PYTHONPATH.
if [ "${HYBRID:-0}" = 1 ] && [ ! -f /tmp/site-llama-cuda/.built ]; then
  t0=$(date +%s)
  rm -rf /tmp/llama-build-cuda /tmp/site-llama-cuda && mkdir -p /tmp/llama-build-cuda
  tar -xzf .gpu-carry/llama_cpp_python-*.tar.gz -C /tmp/llama-build-cuda
  CC=/usr/bin/gcc CXX=/usr/bin/g++ CUDAHOSTCXX=/usr/bin/g++ CMAKE_BUILD_PARALLEL_LEVEL=16 \
    CMAKE_ARGS="-DGGML_CUDA=ON -DGGML_CUDA_FA=OFF -DCMAKE_CUDA_ARCHITECTURES=90 -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF" \
    python3 -m pip wheel -q --no-deps --no-build-isolation -w /tmp/llama-build-cuda/wheel /tmp/llama-build-cuda/llama_cpp_python-*/ \
    > "$OUT/llama-cuda-build.log" 2>&1 || { tail -40 "$OUT/llama-cuda-build.log"; exit 1; }
  python3 -m pip install -q --no-deps --target /tmp/site-llama-cuda /tmp/llama-build-cuda/wheel/*.whl
  touch /tmp/site-llama-cuda/.built
  echo "llama-cpp-python with CUDA built in $(( $(date +%s) - t0 )) s"
  PYTHONPATH=/tmp/site-llama-cuda:$PYTHONPATH python3 -c "import llama_cpp; print('GPU offload:', llama_cpp.llama_supports_gpu_offload())"
fi
python3 -c "import llama_cpp, gguf, vllm, ray, cvxpy; print('llama_cpp', llama_cpp.__version__, 'vllm', vllm.__version__, 'ray', ray.__version__)"
[ "${MODELS:-1}" = 0 ] || python3 benchmarks/gpu/make_model.py --out /tmp/models --q4km  # MODELS=0: not needed
nproc; free -g | head -2; nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
