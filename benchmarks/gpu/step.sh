#!/usr/bin/env bash
# One GPU step per call (GPU machine, after setup.sh, same warm machine); everything lands in $OUT.
#   test        the GPU tests (tests/gpu: VllmEngine on a real GPU)
#   hybrid-test the hybrid pool's tests on the CUDA build of llama.cpp (after HYBRID=1 setup.sh)
#   bench       VllmEngine vs vLLM's LLM.generate, same 1000 LMSYS-sized requests (bench_engine.py)
#   llama       llama.cpp smoke test and single-stream speed on the cores (the cpu pool's engine)
#   profile-h100 / profile-cpu   `rayhet profile` of the two pool types -> profiles/rayhet-1b/{h100,cpu16}.json
#   profile-model gpu|cpu        the same with --method model (engine models, issue 13) -> h200.json / cpu16.json
#   throughput  the vLLM pool through Ray Serve vs LLM.generate (pool_throughput.py; --steps splits it over
#               calls: results merge in /tmp/rayhet-results and are copied to $OUT each time)
#   app         the two-pool rayhet app under open-loop LMSYS load, low and high rate (run_app.py)
#   chaos       benchmarks/chaos.py (issue 15) on the machine's 16 cores: the default app (two 1-vCPU llama.cpp
#               pools) with the load client on cores of its own, which this project's 2-vCPU machine lacks
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT="${OUT:-/tmp/rayhet-out}"; mkdir -p "$OUT"
source benchmarks/gpu/env.sh
step="$1"; shift
case "$step" in
  test)  python3 -m pytest -q -m gpu tests/gpu -rs -p no:cacheprovider "$@" 2>&1 | tee "$OUT/gpu-tests.log" ;;
  hybrid-test) PYTHONPATH=/tmp/site-llama-cuda:$PYTHONPATH python3 -m pytest -q tests/gpu/test_llama_cpp_hybrid.py \
           tests/unit/test_hybrid.py -rs -p no:cacheprovider "$@" 2>&1 | tee "$OUT/gpu-hybrid-tests.log" ;;
  bench) python3 benchmarks/gpu/bench_engine.py --mode both --out "$OUT/gpu-engine-vs-llm.json" "$@" 2>&1 \
           | grep -v -E "^\(EngineCore|it/s\]$" | tail -60 ;;
  throughput) mkdir -p /tmp/rayhet-results
         python3 benchmarks/gpu/pool_throughput.py --out /tmp/rayhet-results/pool-throughput.json "$@" 2>&1 | tail -40
         cp /tmp/rayhet-results/pool-throughput.* "$OUT"/ ;;
  llama) python3 benchmarks/gpu/llama_smoke.py "$@" 2>&1 | tee "$OUT/llama-smoke.log" ;;
  profile-h100|profile-cpu|app) bash "benchmarks/gpu/$step.sh" "$@" ;;
  profile-model) bash benchmarks/gpu/profile-model.sh "$@" ;;
  chaos) name="$1"; shift
         python3 benchmarks/chaos.py --out "$OUT/$name" "$@" 2>&1 | grep -v -E "^\(|INFO" | tail -60 ;;
  *) echo "unknown step $step" >&2; exit 2 ;;
esac
