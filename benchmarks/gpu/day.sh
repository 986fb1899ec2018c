#!/usr/bin/env bash
# Issue 16: a compressed day against the live GPU + CPU app (benchmarks/sim/day-h200.yaml), and the same day
# simulated under every --compare policy (the H200 always on among them), by benchmarks/sim_validation.py.
#   day.sh run    writes the day (rayhet trace diurnal on the LMSYS sample, sizes capped to the 8192-token
#                 context; seeded), starts the real run in its own process session (it outlives the call)
#   day.sh wait   waits up to WAIT_S (540) for it; results, log and plots to $OUT (call again until finished)
# Knobs: SPEEDUP (96: 24 h in 15 min; start-up delays stay real), PEAK (req/s as replayed; default: 80 % of one
# H200's capacity for the mix by its profile, as the planner sees it, printed), RATIO (peak / trough, 100: the
# trough at 1 % of it), SEED (16), H200_PROFILE (a profile just made by `step.sh profile-model gpu`, e.g.
# /tmp/rayhet-profiles/h200.json: used instead of the committed one, for the plan, the peak and the simulation).
# Run after setup.sh (which makes /tmp/models), back to back.
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT="${OUT:-/tmp/rayhet-out}"; mkdir -p "$OUT"
source benchmarks/gpu/env.sh
V=/tmp/rayhet-day; mkdir -p "$V"
SPEEDUP="${SPEEDUP:-96}"; RATIO="${RATIO:-100}"; SEED="${SEED:-16}"
case "$1" in
run)
  if [ -n "${H200_PROFILE:-}" ]; then cp "$H200_PROFILE" profiles/rayhet-1b/h200-model.json || exit 1; fi
  python3 - <<EOF || exit 1
import numpy as np
a = np.loadtxt(".gpu-carry/lmsys-chat-1m.csv", delimiter=",")  # carry .gpu-carry with this call
np.savetxt("$V/lmsys-8k.csv", a[a.sum(1) <= 8192], fmt="%d", delimiter=",")
EOF
  if [ -z "${PEAK:-}" ]; then
    PEAK="$(python3 benchmarks/gpu/mix_capacity.py --config benchmarks/sim/day-h200.yaml --pool h200 \
            --sizes "$V/lmsys-8k.csv" --share 0.8)" || exit 1
  fi
  echo "peak: $PEAK req/s as replayed"
  mean="$(python3 -c "print($PEAK / $SPEEDUP * (1 + 1 / $RATIO) / 2)")"  # a cosine's mean is (peak + trough) / 2
  python3 -m rayhet.cli trace diurnal --sizes "$V/lmsys-8k.csv" --mean-rate "$mean" --peak-to-trough "$RATIO" \
    --seed "$SEED" --out "$V/day.csv" || exit 1
  rm -f "$V/done"
  # Serve's throughput mode: its proxy carries ~100 streamed req/s instead of ~90 (benchmarks/results/stack-h200.md)
  setsid nohup bash -c "source benchmarks/gpu/env.sh; export RAY_SERVE_THROUGHPUT_OPTIMIZED=\${RAY_SERVE_THROUGHPUT_OPTIMIZED:-1}; python3 benchmarks/sim_validation.py \
      --config benchmarks/sim/day-h200.yaml --trace $V/day.csv --speedup $SPEEDUP --compare --plot $V/plots \
      --out $V/${NAME:-day-h200} > $V/run.log 2>&1; echo \$? > $V/done" < /dev/null > /dev/null 2>&1 &
  sleep 30; grep -v -E "^\(|INFO" "$V/run.log" | tail -5
  ;;
wait)
  end=$(( $(date +%s) + ${WAIT_S:-540} ))
  while [ ! -f "$V/done" ] && [ "$(date +%s)" -lt "$end" ]; do sleep 5; done
  if [ -f "$V/done" ]; then echo "run finished: rc $(cat $V/done)"; else echo "still running"; fi
  grep -v -E "^\(|INFO|WARNING" "$V/run.log" | tail -40
  cp "$V"/${NAME:-day-h200}.* "$V/run.log" "$OUT"/ 2>/dev/null
  [ -d "$V/plots" ] && tar -czf "$OUT/day-plots.tgz" -C "$V" plots
  ;;
*) echo "day.sh run|wait" >&2; exit 2 ;;
esac
