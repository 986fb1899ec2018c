#!/usr/bin/env bash
# `rayhet plan`: the cheapest mix of pools for a workload, next to what each pool alone would cost.
# Uses the Llama-2-7b GPU profiles (Melange's tables) and the fleet's illustrative CPU profile; the workload is
# a synthetic sample of request sizes (a lognormal mix of short chats and long documents, seeded).
# Run from the repository root:   bash examples/plan_example.sh
set -euo pipefail
cd "$(dirname "$0")/.."

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# 1. A workload: one "input_tokens,output_tokens" row per request (the `pairs` format; an Azure LLM inference
#    trace CSV works as is, and then --rate defaults to the rate measured from its timestamps).
python - "$work/requests.csv" <<'PY'
import sys
import numpy as np

rng = np.random.default_rng(0)
n = 5000
short = rng.random(n) < 0.6                                   # 60% chat turns, 40% long documents
inp = np.where(short, rng.lognormal(4.0, 0.8, n), rng.lognormal(6.9, 0.4, n))
out = np.where(short, rng.lognormal(3.5, 0.9, n), rng.lognormal(5.5, 0.6, n))
rows = np.clip(np.stack([inp, out], 1).round(), 1, 1900).astype(int)
np.savetxt(sys.argv[1], rows, fmt="%d", delimiter=",")
PY

# 2. Plan for three rates: mix vs single-pool costs, replicas per pool (the table).
rayhet plan \
  --profiles profiles/llama-2-7b --pools a10g,l4,h100 \
  --workload "$work/requests.csv" --rate 1,4,16 --headroom 0.2 --drop-unservable

echo
# 3. With the CPU pool added and bounds as in deployments/serve/fleet.yaml, as JSON (what a script would read).
rayhet plan \
  --profiles profiles/llama-2-7b --profiles deployments/profiles/llama-2-7b-cpu.json --pools a10g,l4,h100,cpu \
  --workload "$work/requests.csv" --rate 4 --headroom 0.2 --drop-unservable \
  --max-replicas a10g=8,l4=8,h100=4,cpu=4 --min-replicas cpu=1 --json \
  | python -c 'import json, sys; r = json.load(sys.stdin)["results"][0]; print("replicas", r["plan"]["replicas"], "$/h", round(r["plan"]["cost_per_hour"], 2), "saving vs single pools (%)", {k: v and round(v, 1) for k, v in r["savings_pct"].items()})'
