#!/usr/bin/env bash
# Issue 18: where a hybrid pool enters the optimal mix. `rayhet plan` over a rate sweep with the 7B model's four
# pool profiles measured on the lent H200 machine (profiles/rayhet-7b: llama.cpp Q4_K_M on 12 cores, hybrid
# llama.cpp f16 with 4 and 16 GiB of the H200, vLLM on the whole H200), LMSYS-Chat-1M request sizes that fit the
# model's 4,096-token context, under three SLOs (each profile's capacity re-derived from its engine model).
#   bash benchmarks/hybrid_plan_sweep.sh [LMSYS_CSV]   -> benchmarks/results/hybrid-7b-h200/plan-*.{txt,json,png}
set -euo pipefail
cd "$(dirname "$0")/.."
src="${1:-../shared/anchors/melange/lmsys-chat-1m.csv}"
out=benchmarks/results/hybrid-7b-h200; mkdir -p "$out"
sizes="$(mktemp --suffix=.csv)"; trap 'rm -f "$sizes"' EXIT
python3 - "$src" "$sizes" <<'PY'
import csv, sys
rows = [r for r in csv.reader(open(sys.argv[1])) if r and r[0].isdigit() and int(r[0]) + int(r[1]) <= 4096]
csv.writer(open(sys.argv[2], "w")).writerows(rows)
PY
rates=0.003,0.01,0.03,0.1,0.2,0.3,1,3,10,30
declare -A slo=(
  [flat-ttft]="--slo-ttft-ms 5000 --slo-tpot-ms 200"
  [ttft-per-1k]="--slo-ttft-ms 2000 --slo-ttft-ms-per-1k-input 5000 --slo-tpot-ms 200"
  [interactive]="--slo-ttft-ms 1000 --slo-ttft-ms-per-1k-input 2000 --slo-tpot-ms 100"
  [normalized]="--slo-normalized-ms 400"
)
for name in flat-ttft ttft-per-1k interactive normalized; do
  # shellcheck disable=SC2086
  args=(plan --profiles profiles/rayhet-7b --workload "$sizes" --rate "$rates" --drop-unservable ${slo[$name]})
  python3 -m rayhet.cli "${args[@]}" --plot "$out/plan-$name.png" > "$out/plan-$name.txt" 2>&1
  python3 -m rayhet.cli "${args[@]}" --json > "$out/plan-$name.json" 2>/dev/null
  echo "== $name: ${slo[$name]}"; grep -E "^ *[0-9.]+ " "$out/plan-$name.txt"
done
