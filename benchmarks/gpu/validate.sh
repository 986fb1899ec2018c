#!/usr/bin/env bash
# The simulator's validation (issue 14) on the GPU machine's 16 cores: the deployment of
# benchmarks/sim/validation.yaml (two 1-thread llama.cpp pools of the ~120M model) with the serving stack and
# the replay client on cores the pools do not need; on this project's 2-vCPU machine all of them share two.
#   validate.sh profile   both pools profiled at once, in process, as validation.yaml's were on the 2-vCPU host
#                         (-> benchmarks/sim/profiles/{small,large}-16c.json); the trace's rate scaled by this
#                         host's capacity over that host's (median ratio over both grids), written into
#                         benchmarks/sim/validation-16c.yaml; then the real run is started in its own process
#                         session (it outlives the call: a 10-minute trace does not fit one)
#   SPEEDUP=2 validate.sh profile   the same ramp in 5 minutes (time / 2, rate x rate_scale overall)
#   validate.sh run       the real run alone, on the profiles and yaml in the tree (those committed from an earlier
#                         profile step: a later session needs no profiling), in its own process session
#   CALIBRATE=16 validate.sh run   first 16 lone requests, each pool's serving overhead fitted from them (host
#                         drift included), and the simulation compared with and without it (sim_validation.py)
#   CALIBRATE=16 CONTENTION=1 validate.sh run   the same, then those requests again while the other pool is kept
#                         busy: each pool's host_contention slowdown fitted too (both in the calibrated simulation)
#   validate.sh wait      waits up to WAIT_S (540) for that run; its results and log to $OUT
# Run on the machine setup.sh prepared (MODELS=0 skips the 1B model, not needed here), back to back.
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT="${OUT:-/tmp/rayhet-out}"; mkdir -p "$OUT"
source benchmarks/gpu/env.sh
V=/tmp/rayhet-validate; mkdir -p "$V"
case "$1" in
profile)
  gguf="$(python3 -c 'from rayhet.models import cached_gguf; print(cached_gguf("120m", dtype="f16"))')" || exit 1
  echo "model: $gguf"; lscpu | grep -E "Model name|^CPU\(s\)"
  common=(--engine llama_cpp --model "$gguf" --model-name rayhet-120m --n-slots 4 --n-threads 1
          --slo-tpot-ms 150 --slo-ttft-ms 1500 --ttft-quantile 0.9 --held-out 0 --no-progress
          --price-source "illustrative: 1 vCPU and its memory at on-demand cloud rates (as the default app's pools)"
          --hardware-description "lent GPU machine's 16 cores; profiled with the other validation pool running beside it (one core each), as they are deployed"
          --notes "Validation pool of rayhet simulate (issue 14) on the GPU machine's cores: the ~120M random-weight benchmark model, 1 thread.")
  t0=$(date +%s)
  python3 -m rayhet.cli profile "${common[@]}" --n-ctx 1024 --pool small --price-per-hour 0.0247 \
    --out benchmarks/sim/profiles/small-16c.json --plot "$V/small-16c.png" > "$V/profile-small.log" 2>&1 &
  python3 -m rayhet.cli profile "${common[@]}" --n-ctx 2048 --pool large --price-per-hour 0.045 \
    --out benchmarks/sim/profiles/large-16c.json --plot "$V/large-16c.png" > "$V/profile-large.log" 2>&1 &
  wait
  echo "profiles in $(( $(date +%s) - t0 )) s"; tail -3 "$V/profile-small.log" "$V/profile-large.log"
  python3 - <<'EOF' || exit 1
import re
from pathlib import Path
import numpy as np
from rayhet.profiles import load_profile
d = Path("benchmarks/sim")
ratios = []
for pool in ("small", "large"):
    here, there = load_profile(d / f"profiles/{pool}-16c.json"), load_profile(d / f"profiles/{pool}.json")
    ratios += [a / b for ra, rb in zip(here.max_rate, there.max_rate) for a, b in zip(ra, rb) if a and b]
k = round(float(np.median(ratios)), 3)
print(f"capacity here / on the 2-vCPU host: median {k} over {len(ratios)} buckets "
      f"(p10 {np.percentile(ratios, 10):.2f}, p90 {np.percentile(ratios, 90):.2f})")
y = (d / "validation.yaml").read_text().replace("profiles/small.json", "profiles/small-16c.json") \
    .replace("profiles/large.json", "profiles/large-16c.json")
y = y.replace("# The simulator's validation deployment", "# The simulator's validation deployment on the GPU "
              "machine's 16 cores (benchmarks/gpu/validate.sh)", 1)
# the start-up rate scaled with the trace, as far as these profiles have a plan for it
from rayhet.app import startup_plan
from rayhet.config import load_config
from rayhet.errors import ConfigError
base = load_config(d / "validation.yaml")
rate = base.planner.expected_rate * k
for _ in range(40):
    (d / "validation-16c.yaml").write_text(re.sub(r"expected_rate: [0-9.]+", f"expected_rate: {rate:.4g}", y))
    try:
        startup_plan(load_config(d / "validation-16c.yaml"))
        break
    except ConfigError as e:
        print(f"expected_rate {rate:.4g}: {e}")
        rate *= 0.9
y = re.sub(r"expected_rate: [0-9.]+", f"expected_rate: {rate:.4g}", y)
print(f"start-up rate {rate:.4g}")
y += f"# rate scale for this host (capacity here over the 2-vCPU host's, median of {len(ratios)} buckets): {k}\n"
(d / "validation-16c.yaml").write_text(y)
Path("/tmp/rayhet-validate/rate_scale").write_text(str(k))
EOF
  cp benchmarks/sim/profiles/*-16c.json benchmarks/sim/validation-16c.yaml "$V"/
  tar -czf "$OUT/profile-plots.tgz" -C "$V" small-16c.png large-16c.png small-16c-fit.png large-16c-fit.png 2>/dev/null
  bash "$0" run
  cp "$V"/*.json "$V"/*.yaml "$V"/*.log "$OUT"/ 2>/dev/null
  ;;
run)
  rate_scale="${RATE_SCALE:-$(cat "$V/rate_scale" 2>/dev/null || sed -n 's/^# rate scale for this host.*: //p' benchmarks/sim/validation-16c.yaml)}"
  rm -f "$V/done"
  sp="${SPEEDUP:-1}"; rs="$(python3 -c "print(round($rate_scale / $sp, 4))")"
  echo "replay: --speedup $sp --rate-scale $rs"
  setsid nohup bash -c "source benchmarks/gpu/env.sh; python3 benchmarks/sim_validation.py \
      --config benchmarks/sim/validation-16c.yaml --trace benchmarks/sim/ramp-10min.csv --speedup $sp \
      --rate-scale $rs --calibrate ${CALIBRATE:-0} $([ "${CONTENTION:-0}" = 1 ] && echo --contention) --out $V/${NAME:-sim-validation-16c} > $V/run.log 2>&1; \
      echo \$? > $V/done" < /dev/null > /dev/null 2>&1 &
  sleep 20; tail -5 "$V/run.log"
  ;;
wait)
  end=$(( $(date +%s) + ${WAIT_S:-540} ))
  while [ ! -f "$V/done" ] && [ "$(date +%s)" -lt "$end" ]; do sleep 5; done
  if [ -f "$V/done" ]; then echo "run finished: rc $(cat $V/done)"; else echo "still running"; fi
  grep -v -E "^\(|INFO" "$V/run.log" | tail -40
  cp "$V"/${NAME:-sim-validation-16c}.* "$V/run.log" "$OUT"/ 2>/dev/null
  ;;
*) echo "validate.sh profile|run|wait" >&2; exit 2 ;;
esac
