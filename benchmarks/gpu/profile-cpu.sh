#!/usr/bin/env bash
# `rayhet profile` of the cpu pool type (llama.cpp on the cores) on the same 1B model -> $OUT/cpu16.json (+ .png).
# THREADS (default 12) leaves cores to vLLM's engine process, Ray and the ingress when both pools run together.
set -euo pipefail
# Written under /tmp/rayhet-profiles (kept between calls on a warm machine; $OUT is emptied), then copied to $OUT.
P=/tmp/rayhet-profiles; mkdir -p "$P"
# A sidecar carried from an interrupted run (.gpu-carry/NAME.json.partial) lets --resume continue it.
for f in .gpu-carry/*.json.partial; do if [ -f "$f" ] && [ ! -f "$P/$(basename "$f")" ]; then cp "$f" "$P/"; fi; done
T="${THREADS:-12}"
python3 -m rayhet.cli profile --engine llama_cpp --model "$RAYHET_GGUF" --model-name rayhet-1b \
  --n-threads "$T" --n-ctx 8192 --n-slots "${SLOTS:-8}" \
  --slo-tpot-ms "${SLO_TPOT_MS:-100}" --slo-ttft-ms "${SLO_TTFT_MS:-2000}" \
  --out "$P/cpu16.json" --pool cpu --vcpus "$T" \
  --price-per-hour "${CPU_PRICE:-$(python3 -c "print(round($T * ${VCPU_PRICE:-0.0425}, 4))")}" \
  --price-source "${CPU_PRICE_SOURCE:-AWS c5.4xlarge on-demand, 0.68 USD/h for 16 vCPU = 0.0425 per vCPU-hour (see benchmarks/results/gpu-prices.md)}" \
  --hardware-description "the lent H100 machine's 16 cores, $T llama.cpp threads" --no-progress --plot "$P/cpu16.png" "$@" \
  2>&1 | tail -40
cp "$P"/* "$OUT"/ 2>/dev/null || true
