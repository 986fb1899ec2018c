#!/usr/bin/env bash
# The two-pool app runs (run_app.py) on the profiles measured on this machine (/tmp/rayhet-profiles, else
# the committed profiles/rayhet-1b); results -> $OUT/$NAME.json. Arguments go to run_app.py.
set -euo pipefail
PROFILES="${PROFILES:-/tmp/rayhet-profiles}"; [ -f "$PROFILES/h100.json" ] || PROFILES=profiles/rayhet-1b
python3 benchmarks/gpu/run_app.py --profiles "$PROFILES" --out "$OUT/${NAME:-gpu-app}.json" "$@" 2>&1 \
  | grep -v -E "^\(EngineCore|^INFO|^WARNING|^\[W|^\(ServeReplica|^\(ProxyActor|^\(ServeController|it/s\]$" | tail -60
