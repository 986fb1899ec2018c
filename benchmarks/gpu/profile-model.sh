#!/usr/bin/env bash
# `rayhet profile --method model` of both pool types of the GPU machine on the 1B model (issue 13):
#   profile-model.sh gpu  -> $OUT/h200.json  vLLM, steps observed from outside (rayhet.profiling.observe)
#   profile-model.sh cpu  -> $OUT/cpu16.json llama.cpp on THREADS cores, its own step log + a live phase
#   GGUF=/tmp/models/rayhet-1b-q4_k_m.gguf NAME=cpu16-q4 QUANT=Q4_K_M profile-model.sh cpu   (setup.sh makes it)
# Each with one held-out bucket measured directly (--held-out, default 1) within --time-budget.
# ACCEL (default H200) names the GPU; prices as benchmarks/results/gpu-prices.md.
set -euo pipefail
P=/tmp/rayhet-profiles; mkdir -p "$P"
for f in .gpu-carry/*.json.partial; do if [ -f "$f" ] && [ ! -f "$P/$(basename "$f")" ]; then cp "$f" "$P/"; fi; done
A="${ACCEL:-H200}"; a="$(echo "$A" | tr 'A-Z' 'a-z')"
kind="$1"; shift
if [ "$kind" = gpu ]; then
  python3 -m rayhet.cli profile --method model --engine vllm --model "$RAYHET_HF" --model-name rayhet-1b \
    --engine-arg max_model_len=8192 --engine-arg max_num_seqs=256 --engine-arg max_num_batched_tokens=8192 \
    --engine-arg gpu_memory_utilization=0.85 \
    --slo-tpot-ms "${SLO_TPOT_MS:-100}" --slo-ttft-ms "${SLO_TTFT_MS:-2000}" \
    --out "$P/$a.json" --pool "$a" --accelerator "$A" --accelerator-count 1 \
    --price-per-hour "${GPU_PRICE:-12.29}" --price-source "${GPU_PRICE_SOURCE:-AWS p5.48xlarge on-demand, 98.32 USD/h for 8 H100 (see benchmarks/results/gpu-prices.md); no H200 price was found, the H100 one is used}" \
    --hardware-description "lent $A machine (16 cores)" --held-out "${HELD_OUT:-1}" --no-progress \
    --plot "$P/$a.png" "$@" 2>&1 | grep -v -E "^\(EngineCore|^INFO|^WARNING|^\[W" | tail -40
else
  T="${THREADS:-12}"
  N="${NAME:-cpu16}"
  python3 -m rayhet.cli profile --method model --engine llama_cpp --model "${GGUF:-$RAYHET_GGUF}" --model-name rayhet-1b \
    --n-threads "$T" --n-ctx 8192 --n-slots "${SLOTS:-8}" \
    --slo-tpot-ms "${SLO_TPOT_MS:-100}" --slo-ttft-ms "${SLO_TTFT_MS:-2000}" \
    --out "$P/$N.json" --pool cpu --vcpus "$T" \
    --price-per-hour "${CPU_PRICE:-$(python3 -c "print(round($T * ${VCPU_PRICE:-0.0425}, 4))")}" \
    --price-source "${CPU_PRICE_SOURCE:-AWS c5.4xlarge on-demand, 0.68 USD/h for 16 vCPU = 0.0425 per vCPU-hour (see benchmarks/results/gpu-prices.md)}" \
    --hardware-description "the lent $A machine's 16 cores, $T llama.cpp threads${QUANT:+, GGUF $QUANT}" --held-out "${HELD_OUT:-1}" \
    --no-progress --plot "$P/$N.png" "$@" 2>&1 | tail -40
fi
cp "$P"/* "$OUT"/ 2>/dev/null || true
