"""Replica check: the replica model (rayhet.sim.replica) against the real engine, on the same arrivals.

One bucket at one rate: Poisson arrivals of its sizes are sent to a llama.cpp engine in this process
(the profiler's load generator, `step_log` on), and the same arrival times and sizes are replayed through
the replica model timed by a profile's step model. Printed side by side:
- per-request latency (TTFT p50/p90, TPOT mean/p90) real vs simulated;
- step-time error: the step model on the work each real step did vs its measured time, by step kind
  (decode-only / with prefill), so a latency gap splits into "steps cost more than modelled" and
  "the schedule differs" (the step counts and kinds differ);
- the gaps between steps (time the engine thread was not stepping while work was in flight).

    python benchmarks/replica_check.py --profile profiles/rayhet-120m/cpu2.json \
        --model ~/.cache/rayhet/models/rayhet-120m-s0-f16-v1.gguf --input 100 --output 250 --rate 0.3 -n 40
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path

import numpy as np

from rayhet.engines.llama_cpp import LlamaCppEngine, LlamaCppSettings
from rayhet.perf import StepWork
from rayhet.profiles import load_profile
from rayhet.profiling.load import run_point
from rayhet.profiling.measure import PointPlan
from rayhet.profiling.targets import EngineTarget
from rayhet.sim.replica import SimRequest, simulate


def q(x, p):
    return float(np.quantile(x, p)) if len(x) else float("nan")


async def real_run(args, limits):
    s = LlamaCppSettings(model_path=str(Path(args.model).expanduser()), n_ctx=limits.max_context,
                         n_slots=limits.batch_slots, n_batch=limits.step_tokens, n_threads=args.threads,
                         max_waiting=limits.max_waiting if limits.max_waiting is not None else 64)
    engine = LlamaCppEngine(s)
    await engine.start()
    target = EngineTarget(engine)
    rng = np.random.default_rng(args.seed)
    plan = PointPlan(warmup_s=args.warmup, num_requests=args.n, window_s=args.n / args.rate, drain_s=120.0)
    log_t: list[float] = []

    class Stamped(list):  # when each step ended, to find the engine's idle gaps
        def append(self, item):
            log_t.append(time.perf_counter())
            super().append(item)

    engine.step_log = Stamped()
    t_start = time.perf_counter()
    timings = await run_point(target, args.input, args.output, args.rate, plan, rng)
    steps = list(engine.step_log)
    engine.step_log = None
    await engine.shutdown()
    return timings, steps, [t - t_start for t in log_t]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--profile", required=True)
    ap.add_argument("--model", required=True)
    ap.add_argument("--input", type=int, required=True)
    ap.add_argument("--output", type=int, required=True)
    ap.add_argument("--rate", type=float, required=True)
    ap.add_argument("-n", type=int, default=40)
    ap.add_argument("--warmup", type=float, default=5.0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", help="write the raw comparison here")
    args = ap.parse_args(argv)

    prof = load_profile(args.profile)
    em = prof.engine_model
    model, limits = em.step_model(), em.engine_limits()
    timings, steps, ends = asyncio.run(real_run(args, limits))

    # --- replay the same arrivals through the replica model (every request, warm-up and tail included)
    sent = sorted(timings, key=lambda t: t.arrival)
    sim = simulate(model, limits, [SimRequest(t.arrival, args.input, args.output, rid=k + 1) for k, t in enumerate(sent)])
    by_rid = {r.rid: r for r in sim}
    real_rows, sim_rows = [], []
    for k, t in enumerate(sent):
        if not t.measured or not t.ok:
            continue
        r = by_rid[k + 1]
        real_rows.append((t.first_token - t.arrival, (t.end - t.first_token) / max(args.output - 1, 1)))
        sim_rows.append((r.ttft, r.tpot))
    real = np.array(real_rows)
    simm = np.array(sim_rows)
    print(f"bucket {args.input}/{args.output} at {args.rate} req/s, {len(real)} measured requests")
    print(f"{'':10}{'TTFT p50':>10}{'TTFT p90':>10}{'TPOT mean':>11}{'TPOT p90':>10}  (ms)")
    for name, a in (("real", real), ("simulated", simm)):
        print(f"{name:10}{q(a[:, 0], .5) * 1e3:10.0f}{q(a[:, 0], .9) * 1e3:10.0f}{a[:, 1].mean() * 1e3:11.1f}"
              f"{q(a[:, 1], .9) * 1e3:10.1f}")

    # --- step model on the real steps
    kinds = {"decode-only": [], "with prefill": []}
    for prefill, pairs, dec, ctx, passes, multi, sec in steps:
        pred = model.time(StepWork(1, prefill, dec, ctx, pairs, passes, multi))
        kinds["with prefill" if prefill else "decode-only"].append((pred, sec, dec, passes))
    print(f"real steps: {len(steps)}")
    for kind, rows in kinds.items():
        if not rows:
            continue
        a = np.array(rows)
        ratio = a[:, 1] / a[:, 0]
        print(f"  {kind:13} n={len(a):5}  measured/predicted: median {np.median(ratio):.2f}, p10 {q(ratio, .1):.2f}, "
              f"p90 {q(ratio, .9):.2f}; mean measured {a[:, 1].mean() * 1e3:.1f} ms, predicted {a[:, 0].mean() * 1e3:.1f} ms")
        for b in sorted(set(a[:, 2].astype(int))):
            m = a[:, 2] == b
            print(f"      decoding {b}: n={m.sum():5}  measured {np.median(a[m, 1]) * 1e3:6.1f} ms  predicted "
                  f"{np.median(a[m, 0]) * 1e3:6.1f} ms (medians); extra passes {a[m, 3].mean():.2f} a step")
    if len(ends) > 1:
        durs = np.array([s[-1] for s in steps])
        starts = np.array(ends) - durs
        gaps = starts[1:] - np.array(ends[:-1])
        busy = gaps[gaps < 0.5]  # between consecutive steps of a busy engine (longer: it was idle)
        print(f"  gaps between steps (<0.5 s): median {np.median(busy) * 1e3:.2f} ms, p90 {q(busy, .9) * 1e3:.2f} ms, "
              f"sum {busy.sum():.1f} s over {sum(durs):.1f} s of steps")
    print(f"simulated steps: (replica model) see sim; real steps {len(steps)}")
    if args.json:
        Path(args.json).write_text(json.dumps({"steps": steps, "ends": ends, "real": real.tolist(), "sim": simm.tolist()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
