#!/usr/bin/env bash
# Issue 18 on the GPU machine (one H200, 16 cores): a ~7B random-weight Llama on the three kinds of pool.
# After the 8 bundle parts are received, one step per call, back to back (carry .gpu-carry on each):
#   setup            llama.cpp CPU build, then (in the background) the 7B model (HF, GGUF f16, Q4_K_M) while the
#                    CUDA build of llama.cpp runs (HYBRID=1 setup.sh); ~6 min
#   bench-hybrid     hybrid_bench.py, CUDA build, f16, budgets 4/8/16 GiB (+ n_gpu_layers 0 of that build)
#   bench-cpu-vllm   hybrid_bench.py, CPU-only build on cores 0-11 (f16, Q4_K_M) beside vLLM on the whole
#                    H200 pinned to cores 12-15 (vLLM's host side is light; said in the results)
#   profile B        `rayhet profile --method model --gpu-memory-gb B` of the hybrid pool (f16) -> h200-Bgb.json
#   profile-cpu-vllm the CPU-only pool (Q4_K_M, cores 0-11, a trimmed design) beside vLLM (cores 12-15)
# Everything lands in $OUT. Profiles are measured under a relaxed SLO (TTFT p90 5 s, TPOT 200 ms): their engine
# models re-derive capacity for any SLO (rayhet plan --slo ...), and no bucket is held out (no time for it).
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT="${OUT:-/tmp/rayhet-out}"; mkdir -p "$OUT"
source benchmarks/gpu/env.sh
M=/tmp/models; F16=$M/rayhet-7b-f16.gguf; Q4=$M/rayhet-7b-q4_k_m.gguf; HF=$M/rayhet-7b-hf
P=/tmp/rayhet-profiles; mkdir -p "$P"
CUDA="PYTHONPATH=/tmp/site-llama-cuda:$PYTHONPATH"
PRICES=(--gpu-price-per-hour 12.29 --vcpu-price-per-hour 0.0425)
SLO=(--slo-ttft-ms "${SLO_TTFT_MS:-5000}" --slo-tpot-ms "${SLO_TPOT_MS:-200}")
wait_model() {
  for _ in $(seq "${1:-400}"); do [ -f $M/.7b-done ] && return 0; sleep 1; done
  echo "the 7B model is not ready:"; tail -5 /tmp/make7b.log; return 1
}
step="$1"; shift
case "$step" in
  setup)
    MODELS=0 bash benchmarks/gpu/setup.sh 2>&1 | tail -3
    if [ ! -f $M/.7b-done ]; then
      (python3 benchmarks/gpu/make_model.py --size 7b --out $M --q4km > /tmp/make7b.log 2>&1 && touch $M/.7b-done) &
    fi
    HYBRID=1 MODELS=0 bash benchmarks/gpu/setup.sh 2>&1 | tail -4
    wait_model 200; cat /tmp/make7b.log; ls -la $M; df -h /tmp | tail -1; free -g | head -2 ;;
  bench-hybrid)
    wait_model || exit 1
    env PYTHONPATH=/tmp/site-llama-cuda:$PYTHONPATH python3 benchmarks/gpu/hybrid_bench.py --llama $F16 \
      --budgets "${BUDGETS:-4,8,16}" --label "CUDA build, f16" --out "$OUT/hybrid-bench-7b-gpu.json" ;;
  bench-cpu-vllm)
    wait_model || exit 1
    taskset -c 12-15 python3 benchmarks/gpu/hybrid_bench.py --vllm $HF --label "vLLM, whole H200" \
      --out "$OUT/hybrid-bench-7b-vllm.json" > /tmp/bench-vllm.log 2>&1 &
    taskset -c 0-11 python3 benchmarks/gpu/hybrid_bench.py --llama $F16 --budgets 0 --label "CPU-only build, f16" \
      --out "$OUT/hybrid-bench-7b-cpu-f16.json" --repeats 1
    taskset -c 0-11 python3 benchmarks/gpu/hybrid_bench.py --llama $Q4 --budgets 0 --label "CPU-only build, Q4_K_M" \
      --out "$OUT/hybrid-bench-7b-cpu-q4.json" --repeats 1
    wait; grep -v -E "^\(EngineCore|^INFO|^WARNING" /tmp/bench-vllm.log | tail -5 ;;
  profile)
    b="$1"; shift
    env PYTHONPATH=/tmp/site-llama-cuda:$PYTHONPATH python3 -m rayhet.cli profile --method model --engine llama_cpp \
      --model $F16 --model-name rayhet-7b --n-threads 12 --n-ctx 4096 --n-slots 8 "${SLO[@]}" \
      --gpu-memory-gb "$b" --accelerator H200 "${PRICES[@]}" --pool "h200-${b}gb" --out "$P/h200-${b}gb.json" \
      --hardware-description "the lent H200 machine: ${b} GiB of the H200 + 12 of its 16 cores, llama.cpp CUDA build" \
      --held-out 0 --live-seconds "${LIVE_S:-20}" --design-tokens "${DESIGN_TOKENS:-30000}" --no-progress \
      --plot "$P/h200-${b}gb.png" "$@" 2>&1 | tail -15
    cp "$P"/h200-${b}gb.* "$OUT"/ ;;
  profile-cpu-vllm)
    taskset -c 12-15 python3 -m rayhet.cli profile --method model --engine vllm --model $HF --model-name rayhet-7b \
      --engine-arg max_model_len=4096 --engine-arg max_num_seqs=256 --engine-arg max_num_batched_tokens=8192 \
      --engine-arg gpu_memory_utilization=0.85 "${SLO[@]}" --out "$P/h200-vllm.json" --pool h200 \
      --accelerator H200 --accelerator-count 1 --price-per-hour 12.29 \
      --price-source "AWS p5.48xlarge on-demand, 98.32 USD/h for 8 H100 (benchmarks/results/gpu-prices.md); the H100 price" \
      --hardware-description "lent H200 machine (vLLM's host side pinned to 4 of its 16 cores)" --held-out 0 \
      --no-progress --plot "$P/h200-vllm.png" > /tmp/profile-vllm.log 2>&1 &
    taskset -c 0-11 python3 -m rayhet.cli profile --method model --engine llama_cpp --model $Q4 --model-name rayhet-7b \
      --n-threads 12 --n-ctx 4096 --n-slots 8 "${SLO[@]}" --pool cpu-q4 --out "$P/cpu16-q4.json" --vcpus 12 \
      --price-per-hour 0.51 --price-source "AWS c5.4xlarge on-demand, 0.0425 USD per vCPU-hour x 12" \
      --hardware-description "the lent H200 machine's cores 0-11, CPU-only llama.cpp, GGUF Q4_K_M" --held-out 0 \
      --live-seconds "${LIVE_S:-20}" --design-tokens "${CPU_DESIGN_TOKENS:-12000}" --no-progress \
      --plot "$P/cpu16-q4.png" 2>&1 | tail -12
    wait; grep -v -E "^\(EngineCore|^INFO|^WARNING|^\[W" /tmp/profile-vllm.log | tail -12
    cp "$P"/h200-vllm.* "$P"/cpu16-q4.* "$OUT"/ ;;
  *) echo "unknown step $step" >&2; exit 2 ;;
esac
