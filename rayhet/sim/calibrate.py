"""`rayhet calibrate`: measure what a live app's serving stack adds to each pool's engine model, for
`rayhet simulate` (rayhet.sim.overhead has the arithmetic; this module is the client).

Sends requests one at a time (each alone on its replica: run it while the app has no other traffic),
sizes drawn from a trace, streamed, with token-id prompts and `ignore_eos` so that the sizes are exact;
notes the pool that served each (`x-rayhet-pool`), then fits each pool's `serving_overhead` and prints it
as the config lines to add.

    rayhet calibrate --config fleet.yaml --trace sizes.csv --url http://127.0.0.1:8000 --requests 16
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from rayhet.errors import RayhetError
from rayhet.sim.overhead import LoneRequest

POOL_HEADER = "x-rayhet-pool"  # as rayhet.serve.ingress sets it (not imported: that module needs Ray)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", required=True, help="the config the app was deployed with (its pools' profiles)")
    p.add_argument("--trace", required=True, metavar="CSV",
                   help="where the request sizes come from (any `rayhet simulate` trace; only sizes are used)")
    p.add_argument("--url", default="http://127.0.0.1:8000", help="the app's address (default %(default)s)")
    p.add_argument("--requests", type=int, default=16, help="requests to send, one at a time (default 16)")
    p.add_argument("--api-key", default=os.environ.get("RAYHET_API_KEY"),
                   help="bearer key, if the app has one (default: $RAYHET_API_KEY)")
    p.add_argument("--seed", type=int, default=0, help="which sizes are drawn (default 0)")
    p.add_argument("--out", metavar="JSON", help="also write the fitted overheads and every request here")


async def lone_requests(url: str, model: str, sizes: list[tuple[int, int]], *, api_key: str | None = None,
                        timeout_s: float = 600.0, seed: int = 0) -> list[LoneRequest]:
    """Send `sizes` one after another; each as a client times it. Requests that fail are left out."""
    import httpx

    rng = np.random.default_rng(seed)
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    out = []
    async with httpx.AsyncClient(timeout=httpx.Timeout(timeout_s, connect=10), headers=headers) as client:
        for n_in, n_out in sizes:
            # token ids past the first few (control tokens in the project's models); exact sizes, no EOS
            body = {"model": model, "prompt": [int(x) for x in rng.integers(3, 259, n_in)], "max_tokens": n_out,
                    "ignore_eos": True, "stream": True}
            t0 = time.monotonic()
            first = None
            try:
                async with client.stream("POST", url.rstrip("/") + "/v1/completions", json=body) as resp:
                    if resp.status_code != 200:
                        await resp.aread()
                        continue
                    pool = resp.headers.get(POOL_HEADER)
                    async for line in resp.aiter_lines():
                        if first is None and line.startswith("data:") and '"text"' in line:
                            first = time.monotonic()
            except httpx.HTTPError:  # not up, or the connection dropped: this one is left out
                continue
            end = time.monotonic()
            if first is not None and pool:
                out.append(LoneRequest(pool, n_in, n_out, first - t0, (end - first) / max(n_out - 1, 1)))
    return out


def draw_sizes(trace, n: int, seed: int = 0) -> list[tuple[int, int]]:
    """`n` (input, output) pairs of the trace, drawn without replacement where it can. A size no pool takes
    gets a 400 and is left out; the router decides the rest, as it will in the simulation."""
    ok = [(int(a), int(b)) for a, b in zip(trace.input_tokens, trace.output_tokens) if a >= 1 and b >= 1]
    if not ok:
        raise RayhetError("the trace has no request with at least one input and one output token")
    rng = np.random.default_rng(seed)
    idx = rng.choice(len(ok), size=n, replace=n > len(ok))
    return [ok[i] for i in idx]


def fit_pools(config, samples: list[LoneRequest], source: str) -> dict[str, dict]:
    """Each sampled pool's ServingOverhead (as config fields), from its profile's engine model."""
    from rayhet.capacity import service_profile
    from rayhet.sim.overhead import fit_overhead

    fitted = {}
    for pool in config.pools:
        mine = [s for s in samples if s.pool == pool.name]
        if not mine or not pool.profile:
            continue
        em = service_profile(pool.profile, config.slo).engine_model
        if em is None:
            continue
        request_s, per_token_s = fit_overhead(mine, em.step_model(), em.engine_limits())
        fitted[pool.name] = {"request_s": round(request_s, 4), "per_token_s": round(per_token_s, 5),
                             "source": f"{source}: {len(mine)} lone requests"}
    return fitted


def run(args: argparse.Namespace) -> int:
    from rayhet.config import load_config
    from rayhet.sim.trace import load_trace

    if args.requests < 1:
        raise RayhetError("--requests must be >= 1")
    config = load_config(args.config)
    trace = load_trace(args.trace)
    sizes = draw_sizes(trace, args.requests, seed=args.seed)
    samples = asyncio.run(lone_requests(args.url, config.model.id, sizes, api_key=args.api_key, seed=args.seed))
    if not samples:
        raise RayhetError(f"{args.url}: no request succeeded (is the app up, and the key right?)")
    when = datetime.now(timezone.utc).isoformat(timespec="seconds")
    fitted = fit_pools(config, samples, f"rayhet calibrate {when}")
    missing = [p.name for p in config.pools if p.name not in fitted]
    for name, f in fitted.items():
        print(f"pool {name}:\n  serving_overhead: {{request_s: {f['request_s']}, per_token_s: {f['per_token_s']}}}"
              f"   # {f['source']}")
    if missing:
        print(f"not calibrated (no request landed there, or no engine model): {', '.join(missing)}")
    if args.out:
        Path(args.out).write_text(json.dumps({"date": when, "url": args.url, "config": str(args.config),
                                              "fitted": fitted, "requests": [vars(s) for s in samples]}, indent=1))
    return 0
