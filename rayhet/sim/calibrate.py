"""`rayhet calibrate`: measure what a live app's serving stack adds to each pool's engine model, for
`rayhet simulate` (rayhet.sim.overhead has the arithmetic; this module is the client).

Sends requests one at a time (each alone on its replica: run it while the app has no other traffic),
sizes drawn from a trace, streamed, with token-id prompts and `ignore_eos` so that the sizes are exact;
notes the pool that served each (`x-rayhet-pool`), then fits each pool's `serving_overhead` and prints it
as the config lines to add.

    rayhet calibrate --config fleet.yaml --trace sizes.csv --url http://127.0.0.1:8000 --requests 16

With `--contention HOST` (pools that share one host, e.g. CPU pools on one node), each pool's requests are
sent again while the other pools are kept busy, and each pool's `host_contention` slowdown is fitted too
(rayhet.sim.overhead.fit_slowdown).

With `--host-cpus N`, run on the host itself (a laptop, one small VM where the pools share N cores with Serve's
proxy and the ingress): 0, 1, 2 and 4 back-to-back request streams in turn, the tokens they stream per second
counted here and the cores every process but this one used meanwhile read from /proc (rayhet.procstat); the
stack's cores (all but the pools' replicas) against the token rate give `host_contention`'s `base_cpus` and
`stack_cpu_ms_per_token` (rayhet.sim.host).
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
    p.add_argument("--contention", metavar="HOST",
                   help="the pools share one host: also send each pool's requests while the other pools are kept "
                        "busy, and fit each pool's host_contention slowdown (printed with host HOST)")
    p.add_argument("--neighbour-streams", type=int, default=2, metavar="K",
                   help="with --contention: back-to-back request streams that keep the other pools busy (default 2)")
    p.add_argument("--host-cpus", type=float, metavar="N",
                   help="run here, on the host whose N cores the pools share with the serving stack: also measure "
                        "the stack's share of them (base_cpus, stack_cpu_ms_per_token; host named by --contention, "
                        "else 'local')")
    p.add_argument("--host-phase-s", type=float, default=10.0, metavar="S",
                   help="with --host-cpus: seconds measured at each number of streams (default 10)")
    p.add_argument("--out", metavar="JSON", help="also write the fitted overheads and every request here")


def _body(model: str, n_in: int, n_out: int, rng) -> dict:
    # token ids past the first few (control tokens in the project's models); exact sizes, no EOS
    return {"model": model, "prompt": [int(x) for x in rng.integers(3, 259, n_in)], "max_tokens": n_out,
            "ignore_eos": True, "stream": True}


async def _timed(client, url: str, body: dict) -> tuple[str | None, float, float | None, float] | None:
    """One streamed request: (pool, sent, first token, end) on the monotonic clock; None if it failed."""
    import httpx

    t0 = time.monotonic()
    first = None
    try:
        async with client.stream("POST", url.rstrip("/") + "/v1/completions", json=body) as resp:
            if resp.status_code != 200:
                await resp.aread()
                return None
            pool = resp.headers.get(POOL_HEADER)
            async for line in resp.aiter_lines():
                if first is None and line.startswith("data:") and '"text"' in line:
                    first = time.monotonic()
    except httpx.HTTPError:  # not up, or the connection dropped: this one is left out
        return None
    return pool, t0, first, time.monotonic()


def _client(api_key: str | None, timeout_s: float):
    import httpx

    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    return httpx.AsyncClient(timeout=httpx.Timeout(timeout_s, connect=10), headers=headers)


def _sample(t, n_in: int, n_out: int) -> LoneRequest | None:
    if t is None or t[2] is None or not t[0]:
        return None
    pool, t0, first, end = t
    return LoneRequest(pool, n_in, n_out, first - t0, (end - first) / max(n_out - 1, 1))


async def lone_requests(url: str, model: str, sizes: list[tuple[int, int]], *, api_key: str | None = None,
                        timeout_s: float = 600.0, seed: int = 0) -> list[LoneRequest]:
    """Send `sizes` one after another; each as a client times it. Requests that fail are left out."""
    rng = np.random.default_rng(seed)
    out = []
    async with _client(api_key, timeout_s) as client:
        for n_in, n_out in sizes:
            s = _sample(await _timed(client, url, _body(model, n_in, n_out, rng)), n_in, n_out)
            if s is not None:
                out.append(s)
    return out


def busy_share(start: float, end: float, spans: list[tuple[float, float]]) -> float:
    """Share of [start, end] covered by the union of `spans`."""
    if end <= start:
        return 0.0
    covered, cur = 0.0, start
    for a, b in sorted(spans):
        a, b = max(a, cur), min(b, end)
        if b > a:
            covered += b - a
            cur = b
    return covered / (end - start)


async def beside_busy_neighbours(url: str, model: str, lone: list[LoneRequest], *, streams: int = 2,
                                 min_busy: float = 0.9, api_key: str | None = None, timeout_s: float = 600.0,
                                 seed: int = 0) -> list[LoneRequest]:
    """Each pool's lone requests sent again, one at a time, while every other pool is kept busy.

    The neighbours are loaded with the sizes the router sent them among `lone` (so the router sends them
    there again), `streams` back-to-back streams of them. A measured request counts only if it was served
    by its own pool, no load request landed on that pool while it ran, and the other pools together held
    a load request through at least `min_busy` of it."""
    rng = np.random.default_rng(seed)
    by_pool: dict[str, list[tuple[int, int]]] = {}
    for s in lone:
        by_pool.setdefault(s.pool, []).append((s.input_tokens, s.output_tokens))
    out = []
    async with _client(api_key, timeout_s) as client:
        for pool, sizes in by_pool.items():
            load = [sz for p, szs in by_pool.items() if p != pool for sz in szs]
            if not load:
                continue
            served: list[tuple[str | None, float, float]] = []
            stop = asyncio.Event()

            async def keep_busy(k: int) -> None:
                i = k
                while not stop.is_set():
                    n_in, n_out = load[i % len(load)]
                    i += streams
                    t = await _timed(client, url, _body(model, n_in, n_out, rng))
                    if t is not None:
                        served.append((t[0], t[1], t[3]))

            loaders = [asyncio.create_task(keep_busy(k)) for k in range(streams)]
            await asyncio.sleep(1.0)  # the neighbours' first requests reach their engines
            mine = []
            for n_in, n_out in sizes:
                t = await _timed(client, url, _body(model, n_in, n_out, rng))
                if t is not None:
                    mine.append((t, n_in, n_out))
            stop.set()
            await asyncio.gather(*loaders)
            for t, n_in, n_out in mine:
                s = _sample(t, n_in, n_out)
                if s is None or s.pool != pool:
                    continue
                t0, end = t[1], t[3]
                if busy_share(t0, end, [(a, b) for p, a, b in served if p == pool]) > 0:
                    continue  # a load request shared its replica: not alone there
                if busy_share(t0, end, [(a, b) for p, a, b in served if p != pool]) >= min_busy:
                    out.append(s)
    return out


async def host_phases(url: str, model: str, sizes: list[tuple[int, int]], *, levels=(0, 1, 2, 4),
                      phase_s: float = 10.0, settle_s: float = 2.0, api_key: str | None = None,
                      timeout_s: float = 600.0, seed: int = 0) -> list:
    """For each level: that many back-to-back request streams (the shorter half of `sizes` in turn: many tokens a
    second); over `phase_s` once they run, the tokens streamed per second (counted as they arrive) and the cores
    the host's processes used (this one left out: the client is not the serving stack), split into the pools'
    replicas and the rest (rayhet.sim.host)."""
    from rayhet.procstat import cpu_share, cpu_times
    from rayhet.sim.host import HostSample, stack_cores

    sizes = sorted(sizes, key=lambda sz: sz[0] + sz[1])[: max(4, len(sizes) // 2)]
    rng = np.random.default_rng(seed)
    me = os.getpid()
    out = []
    async with _client(api_key, timeout_s) as client:
        for k in levels:
            tokens = 0
            stop = asyncio.Event()

            async def stream(i: int) -> None:
                nonlocal tokens
                import httpx

                j = i
                while not stop.is_set():
                    n_in, n_out = sizes[j % len(sizes)]
                    j += k
                    try:
                        async with client.stream("POST", url.rstrip("/") + "/v1/completions",
                                                 json=_body(model, n_in, n_out, rng)) as resp:
                            if resp.status_code != 200:
                                await resp.aread()
                                await asyncio.sleep(0.2)
                                continue
                            async for line in resp.aiter_lines():
                                if line.startswith("data:") and '"text"' in line:
                                    tokens += 1
                    except httpx.HTTPError:
                        await asyncio.sleep(0.2)

            tasks = [asyncio.create_task(stream(i)) for i in range(k)]
            await asyncio.sleep(settle_s)  # the streams' first requests reach their engines
            before, t0, tok0 = cpu_times(), time.monotonic(), tokens
            await asyncio.sleep(phase_s)
            after, t1, tok1 = cpu_times(), time.monotonic(), tokens
            stop.set()
            await asyncio.gather(*tasks)  # each stream ends its request: the next level starts on idle engines
            cores = cpu_share({p: v for p, v in before.items() if p != me},
                              {p: v for p, v in after.items() if p != me}, t1 - t0, min_cores=0.0)
            stack, engines = stack_cores(cores)
            out.append(HostSample(round(t1 - t0, 3), round((tok1 - tok0) / (t1 - t0), 2), round(stack, 3),
                                  round(engines, 3)))
    return out


def fit_host(samples: list, cpus: float, host: str, source: str) -> dict:
    """HostContention's cpus, base_cpus and stack_cpu_ms_per_token (as config fields) from `host_phases`."""
    from rayhet.sim.host import fit_stack_share

    base, per_token, resid = fit_stack_share(samples)
    return {"host": host, "cpus": cpus, "base_cpus": round(base, 3), "stack_cpu_ms_per_token": round(per_token * 1e3, 2),
            "source": f"{source}: {len(samples)} stretches of 0-{max(s.tokens_per_s for s in samples):.0f} tokens/s, "
                      f"residual p90 {resid:.2f} cores"}


def draw_sizes(trace, n: int, seed: int = 0) -> list[tuple[int, int]]:
    """`n` (input, output) pairs of the trace, drawn without replacement where it can. A size no pool takes
    gets a 400 and is left out; the router decides the rest, as it will in the simulation."""
    ok = [(int(a), int(b)) for a, b in zip(trace.input_tokens, trace.output_tokens) if a >= 1 and b >= 1]
    if not ok:
        raise RayhetError("the trace has no request with at least one input and one output token")
    rng = np.random.default_rng(seed)
    idx = rng.choice(len(ok), size=n, replace=n > len(ok))
    return [ok[i] for i in idx]


def fit_contention(config, loaded: list[LoneRequest], fitted: dict[str, dict], host: str,
                   source: str) -> dict[str, dict]:
    """Each pool's HostContention (as config fields), from its requests served beside busy neighbours and the
    serving overhead `fit_pools` gave it."""
    from rayhet.capacity import service_profile
    from rayhet.sim.overhead import fit_slowdown

    out = {}
    for pool in config.pools:
        mine = [s for s in loaded if s.pool == pool.name]
        if not mine or pool.name not in fitted or not pool.profile:
            # still on the host, so that it counts as the others' neighbour, with nothing measured to slow it
            out[pool.name] = {"host": host, "slowdown": 0.0, "source": f"{source}: not measured (no request of it "
                              "was served beside busy neighbours)"}
            continue
        em = service_profile(pool.profile, config.slo).engine_model
        over = fitted[pool.name]
        slowdown = fit_slowdown(mine, em.step_model(), em.engine_limits(), over["request_s"],
                                step_scale=over["step_scale"], prefill_scale=over.get("prefill_scale"))
        out[pool.name] = {"host": host, "slowdown": round(slowdown, 3),
                          "source": f"{source}: {len(mine)} requests beside busy neighbours"}
    return out


def calibrated(config, fitted: dict[str, dict], contention: dict[str, dict] | None = None):
    """The config with each pool's fitted `serving_overhead` and `host_contention` (as `fit_pools` and
    `fit_contention` give them) in place; other pools keep theirs."""
    from rayhet.config import HostContention, ServingOverhead

    contention = contention or {}

    def one(p):
        update = {}
        if p.name in fitted:
            update["serving_overhead"] = ServingOverhead(**fitted[p.name])
        if p.name in contention:
            update["host_contention"] = HostContention(**contention[p.name])
        return p.model_copy(update=update)

    return config.model_copy(update={"pools": [one(p) for p in config.pools]})


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
        over = fit_overhead(mine, em.step_model(), em.engine_limits())
        fitted[pool.name] = {"request_s": round(over.request_s, 4), "step_scale": round(over.step_scale, 3),
                             "prefill_scale": round(over.prefill_scale, 3),
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
    contention, loaded = {}, []
    if args.contention:
        if args.neighbour_streams < 1:
            raise RayhetError("--neighbour-streams must be >= 1")
        loaded = asyncio.run(beside_busy_neighbours(args.url, config.model.id, samples, streams=args.neighbour_streams,
                                                    api_key=args.api_key, seed=args.seed + 1))
        contention = fit_contention(config, loaded, fitted, args.contention, f"rayhet calibrate {when}")
    host = phases = None
    if args.host_cpus is not None:
        if args.host_cpus <= 0 or args.host_phase_s <= 0:
            raise RayhetError("--host-cpus and --host-phase-s must be > 0")
        phases = asyncio.run(host_phases(args.url, config.model.id, sizes, phase_s=args.host_phase_s,
                                         api_key=args.api_key, seed=args.seed + 2))
        host = fit_host(phases, args.host_cpus, args.contention or "local", f"rayhet calibrate {when}")
    for pool in config.pools:  # the config lines to add, pool by pool
        lines = []
        if pool.name in fitted:
            f = fitted[pool.name]
            lines.append(f"  serving_overhead: {{request_s: {f['request_s']}, step_scale: {f['step_scale']}, "
                         f"prefill_scale: {f['prefill_scale']}}}   # {f['source']}")
        if pool.name in contention or host is not None:
            c = contention.get(pool.name, {"host": host["host"] if host else None, "slowdown": 0.0, "source": ""})
            share = "" if host is None else (f", cpus: {host['cpus']:g}, base_cpus: {host['base_cpus']}, "
                                             f"stack_cpu_ms_per_token: {host['stack_cpu_ms_per_token']}")
            why = "; ".join(x for x in (c["source"], host["source"] if host else "") if x)
            lines.append(f"  host_contention: {{host: {c['host']}, slowdown: {c['slowdown']}{share}}}   # {why}")
        if lines:
            print(f"pool {pool.name}:\n" + "\n".join(lines))
    missing = [p.name for p in config.pools if p.name not in fitted]
    if missing:
        print(f"not calibrated (no request landed there, or no engine model): {', '.join(missing)}")
    if args.contention and not loaded:
        print("no host_contention fitted: the requests went to one pool only, or no neighbour stayed busy "
              "through a measured request (ask for more --requests)")
    if host is not None and contention:
        print("note: the neighbour slowdown (--contention) was fitted without the host's share of its cores: where "
              "the cores are oversubscribed both count the same loss; simulate with one of them (slowdown: 0 keeps "
              "the share)")
    if args.out:
        Path(args.out).write_text(json.dumps({"date": when, "url": args.url, "config": str(args.config),
                                              "fitted": fitted, "requests": [vars(s) for s in samples],
                                              "contention": contention, "beside_busy": [vars(s) for s in loaded],
                                              "host": host, "host_phases": [vars(s) for s in phases or []]},
                                             indent=1))
    return 0
