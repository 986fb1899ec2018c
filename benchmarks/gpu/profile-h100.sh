#!/usr/bin/env bash
# `rayhet profile` of the h100 pool type (vLLM, 1 GPU) on the 1B model -> $OUT/h100.json (+ .png).
# Price: see benchmarks/results/gpu-prices.md. Extra arguments go to rayhet profile (e.g. --time-budget 7m).
set -euo pipefail
# Written under /tmp/rayhet-profiles (kept between calls on a warm machine; $OUT is emptied), then copied to $OUT.
P=/tmp/rayhet-profiles; mkdir -p "$P"
# A sidecar carried from an interrupted run (.gpu-carry/NAME.json.partial) lets --resume continue it.
for f in .gpu-carry/*.json.partial; do if [ -f "$f" ] && [ ! -f "$P/$(basename "$f")" ]; then cp "$f" "$P/"; fi; done
python3 -m rayhet.cli profile --engine vllm --model "$RAYHET_HF" --model-name rayhet-1b \
  --engine-arg max_model_len=8192 --engine-arg max_num_seqs=256 --engine-arg max_num_batched_tokens=8192 \
  --engine-arg gpu_memory_utilization=0.85 \
  --slo-tpot-ms "${SLO_TPOT_MS:-100}" --slo-ttft-ms "${SLO_TTFT_MS:-2000}" \
  --out "$P/h100.json" --pool h100 --accelerator H100 --accelerator-count 1 \
  --price-per-hour "${H100_PRICE:-12.29}" --price-source "${H100_PRICE_SOURCE:-AWS p5.48xlarge on-demand, 98.32 USD/h for 8 H100 (see benchmarks/results/gpu-prices.md)}" \
  --hardware-description "lent H100 80GB HBM3 machine (16 cores)" --no-progress --plot "$P/h100.png" "$@" \
  2>&1 | grep -v -E "^\(EngineCore|^INFO|^WARNING|^\[W" | tail -40
cp "$P"/* "$OUT"/ 2>/dev/null || true
