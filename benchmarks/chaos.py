"""Chaos suite (issue 15): the default app (two llama.cpp pools, the controller on) under faults and overload.

Scenarios, each bounded in time and traffic, run on a fresh local Ray cluster and the embedded default app:
- `kill`: open-loop load at `--load` x capacity; a pool replica killed every 20 s for 2 minutes (Serve
  replaces it). Counts lost requests (no answer, or a 5xx that is not a refusal with Retry-After),
  non-streamed and streamed apart; streamed ones that lost bytes mid-way are counted, not hidden.
- `controller`: the same load; the controller actor is killed once. Requests failed while it was away, and
  how long until `rayhet status` (the controller's `status()`) has a plan again.
- `overload`: `--overload` x capacity for 30 s, after 10 s of normal load. Per status: count and latency
  percentiles (refusals must be fast and carry Retry-After); the ingress's and proxy's memory before, at the
  end of the overload and 60 s later; how long after the overload a request is served normally again.
- `stuck`: an app whose second pool cannot be scheduled; requests must spill at once (or get a clear 503),
  none may hang.
- `lifecycle` (always last): `serve shutdown`; how long until the app's controller actor is gone.

    python benchmarks/chaos.py --out benchmarks/results/chaos           # all four (~7 minutes on 2 cores)
    python benchmarks/chaos.py --scenario overload --out /tmp/chaos

The load client shares the machine's cores with the app (as an outside tester on this machine would).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

MODEL = "rayhet-tiny"


@dataclass
class Shot:
    sent: float
    stream: bool
    status: int | None = None  # None: no HTTP answer (timeout, connection error)
    latency_s: float | None = None
    retry_after: bool = False
    broken: bool = False  # a stream that began and did not end with [DONE] (or carried an in-band error)
    pool: str | None = None


def lost(s: Shot) -> bool:
    """Not answered, or a 5xx that is not a refusal the client is told to retry."""
    if s.status is None:
        return True
    return s.status >= 500 and not (s.status == 503 and s.retry_after)


async def load(url: str, rate: float, duration: float, t0: float, shots: list[Shot], stream_share: float = 0.3,
               timeout: float = 60.0, seed: int = 0) -> None:
    """Poisson arrivals at `rate` for `duration` seconds: short prompts, 16 tokens, some streamed."""
    import httpx

    rng = random.Random(seed)
    limits = httpx.Limits(max_connections=2000, max_keepalive_connections=200)
    async with httpx.AsyncClient(timeout=httpx.Timeout(timeout, connect=10), limits=limits) as client:
        async def one(stream: bool) -> None:
            s = Shot(time.monotonic() - t0, stream)
            shots.append(s)
            body = {"model": MODEL, "prompt": "hello there, how are you today?", "max_tokens": 16, "stream": stream}
            start = time.monotonic()
            try:
                async with client.stream("POST", url + "/v1/completions", json=body) as r:
                    s.status, s.pool = r.status_code, r.headers.get("x-rayhet-pool")
                    s.retry_after = "retry-after" in r.headers
                    text = (await r.aread()).decode(errors="replace")
                    if stream and r.status_code == 200:
                        s.broken = not text.rstrip().endswith("data: [DONE]") or '"error"' in text
            except httpx.HTTPError:
                s.status = None
            s.latency_s = time.monotonic() - start

        tasks, t_end = [], time.monotonic() + duration
        nxt = time.monotonic()
        while nxt < t_end:
            await asyncio.sleep(max(0.0, nxt - time.monotonic()))
            tasks.append(asyncio.ensure_future(one(rng.random() < stream_share)))
            nxt += rng.expovariate(rate)
        await asyncio.gather(*tasks)


def _load_part(url: str, rate: float, duration: float, start_wall: float, stream_share: float, timeout: float,
               seed: int) -> list[Shot]:
    """One client process's share of the load (run in a spawned process): starts at wall time `start_wall`."""
    time.sleep(max(0.0, start_wall - time.time()))
    shots: list[Shot] = []
    asyncio.run(load(url, rate, duration, time.monotonic(), shots, stream_share, timeout, seed))
    return shots


def load_procs(url: str, rate: float, duration: float, procs: int, seed: int = 0, stream_share: float = 0.3,
               timeout: float = 60.0) -> list[Shot]:
    """The same open-loop load from `procs` client processes, rate/procs each (Poisson streams add up to a
    Poisson stream of the whole rate): one Python client's event loop tops out at a few hundred requests a
    second and its own delays land in every latency it measures."""
    if procs <= 1:
        shots: list[Shot] = []
        asyncio.run(load(url, rate, duration, time.monotonic(), shots, stream_share, timeout, seed))
        return shots
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor

    start_wall = time.time() + 3.0  # every process started and importing done before the first request
    with ProcessPoolExecutor(procs, mp_context=mp.get_context("spawn")) as ex:
        parts = [ex.submit(_load_part, url, rate / procs, duration, start_wall, stream_share, timeout, seed * 1000 + k)
                 for k in range(procs)]
        return [s for f in parts for s in f.result()]


def summary(shots: list[Shot]) -> dict:
    by: dict = {}
    for s in shots:
        key = "no answer" if s.status is None else str(s.status)
        by.setdefault(key, []).append(s.latency_s or 0.0)
    table = {k: {"n": len(v), "p50_s": round(float(np.percentile(v, 50)), 4), "p99_s": round(float(np.percentile(v, 99)), 4),
                 "max_s": round(max(v), 4)} for k, v in sorted(by.items())}
    refusals = [s for s in shots if s.status in (429, 503)]
    return {
        "requests": len(shots), "by_status": table,
        "lost_non_streamed": sum(lost(s) for s in shots if not s.stream),
        "lost_streamed": sum(lost(s) for s in shots if s.stream),
        "streams_broken_midway": sum(s.broken for s in shots),
        "refusals_without_retry_after": sum(not s.retry_after for s in refusals),
    }


# -- the cluster -------------------------------------------------------------------------------
def start(app_config: dict | None = None, name: str = "default", prefix: str = "/", blocking: bool = True) -> str:
    import httpx
    import ray
    from ray import serve
    from ray.serve import api

    from rayhet.app import build

    if not ray.is_initialized():
        ray.init(logging_level="warning", log_to_driver=False)
        serve.start(http_options={"host": "127.0.0.1", "port": 8000})
    target = build({}) if app_config is None else build(app_config) if not isinstance(app_config, dict) \
        else build({"config": app_config})
    api._run(target, _blocking=blocking, name=name, route_prefix=prefix)
    url = "http://127.0.0.1:8000" + prefix.rstrip("/")
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        try:
            if httpx.post(url + "/v1/completions", json={"model": MODEL, "prompt": "hi", "max_tokens": 2},
                          timeout=10).status_code == 200:
                return url
        except httpx.HTTPError:
            pass
        time.sleep(1)
    raise SystemExit("the app did not come up")


def replicas(app: str, deployment: str) -> list[str]:
    import ray

    return [a["name"] for a in ray.util.list_named_actors(all_namespaces=True)
            if a["namespace"] == "serve" and f"{app}#{deployment}#" in a["name"]]


def rss_mb(class_prefix: str) -> float:
    """Summed resident memory of the live actors whose class starts with `class_prefix` (this machine)."""
    from ray.util.state import list_actors

    total = 0.0
    for a in list_actors(filters=[("state", "=", "ALIVE")], detail=True, limit=1000):
        if a.class_name.startswith(class_prefix) and a.pid:
            try:
                for line in Path(f"/proc/{a.pid}/status").read_text().splitlines():
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1]) / 1024
            except OSError:
                pass
    return round(total, 1)


# -- scenarios -----------------------------------------------------------------------------------
def scenario_kill(url: str, rate: float) -> dict:
    import ray

    shots: list[Shot] = []
    kills: list[dict] = []
    t0 = time.monotonic()

    async def killer():
        rng = random.Random(1)
        for k in range(6):  # every 20 s for 2 minutes
            await asyncio.sleep(20 if k else 10)
            pool = rng.choice(["small", "large"])
            names = replicas("default", f"pool-{pool}")
            if names:
                ray.kill(ray.get_actor(names[0], namespace="serve"), no_restart=True)
                kills.append({"t_s": round(time.monotonic() - t0, 1), "pool": pool})

    async def both():
        await asyncio.gather(load(url, rate, 130, t0, shots), killer())

    asyncio.run(both())
    return {"rate": rate, "kills": kills, **summary(shots)}


def scenario_controller(url: str, rate: float) -> dict:
    import ray

    from rayhet.serve.autoscaling import get_controller

    shots: list[Shot] = []
    t0 = time.monotonic()
    result: dict = {}

    async def kill_controller():
        await asyncio.sleep(10)
        ray.kill(get_controller("default"), no_restart=False)  # restarts (max_restarts=-1) from its saved state
        killed = time.monotonic()
        while True:
            await asyncio.sleep(0.5)
            try:
                st = await asyncio.wait_for(asyncio.wrap_future(get_controller("default").status.remote().future()), 5)
                if st.get("plan"):
                    result["plan_back_after_s"] = round(time.monotonic() - killed, 2)
                    return
            except Exception:  # noqa: BLE001 - still restarting
                pass
            if time.monotonic() - killed > 60:
                result["plan_back_after_s"] = None
                return

    async def both():
        await asyncio.gather(load(url, rate, 40, t0, shots), kill_controller())

    asyncio.run(both())
    return {"rate": rate, **result, **summary(shots)}


def scenario_overload(url: str, rate: float, overload: float, procs: int = 1) -> dict:
    import httpx

    shots_before = load_procs(url, rate, 10, procs)
    mem_before = {"ingress": rss_mb("ServeReplica:default:ingress"), "proxy": rss_mb("ProxyActor")}
    shots = load_procs(url, overload, 30, procs, seed=2)
    mem_end = {"ingress": rss_mb("ServeReplica:default:ingress"), "proxy": rss_mb("ProxyActor")}
    stop = time.monotonic()
    normal_after = None
    while time.monotonic() - stop < 60:  # served normally: a short request answered 200 within 1 s
        t = time.monotonic()
        try:
            r = httpx.post(url + "/v1/completions", json={"model": MODEL, "prompt": "hi", "max_tokens": 4}, timeout=10)
            if r.status_code == 200 and time.monotonic() - t < 1.0:
                normal_after = round(time.monotonic() - stop, 2)
                break
        except httpx.HTTPError:
            pass
        time.sleep(0.25)
    time.sleep(max(0.0, 60 - (time.monotonic() - stop)))
    mem_after = {"ingress": rss_mb("ServeReplica:default:ingress"), "proxy": rss_mb("ProxyActor")}
    refusal_lat = [s.latency_s for s in shots if s.status in (429, 503)]
    return {
        "normal_rate": rate, "overload_rate": overload, "client_processes": procs,
        "before": summary(shots_before), "overload": summary(shots),
        "refusal_p99_ms": round(float(np.percentile(refusal_lat, 99)) * 1e3, 1) if refusal_lat else None,
        "served_normally_after_s": normal_after,
        "memory_mb": {"before": mem_before, "end_of_overload": mem_end, "60s_after": mem_after},
    }


STUCK = {
    "model": {"id": MODEL, "gguf": "embedded:tiny"},
    "pools": [
        # num_cpus 0: the default app holds this machine's 2 CPUs; `small` must start, `big` never
        {"name": "small", "engine": "llama_cpp", "num_cpus": 0, "price_per_hour": 1.0,
         "engine_settings": {"n_threads": 1, "n_ctx": 1024, "n_slots": 4}},
        {"name": "big", "engine": "llama_cpp", "num_cpus": 0, "price_per_hour": 2.0, "resources": {"rayhet_nowhere": 1},
         "engine_settings": {"n_threads": 1, "n_ctx": 1024, "n_slots": 4}},
    ],
}


def scenario_stuck() -> dict:
    from ray import serve

    url = start(STUCK, name="stuck", prefix="/stuck", blocking=False)
    shots: list[Shot] = []
    asyncio.run(load(url, 5.0, 20, time.monotonic(), shots, timeout=60))
    serve.delete("stuck")
    pools: dict = {}
    for s in shots:
        pools[s.pool or "-"] = pools.get(s.pool or "-", 0) + 1
    return {"rate": 5.0, "served_by": pools, **summary(shots)}


def scenario_lifecycle() -> dict:
    from ray import serve

    from rayhet.serve.autoscaling import get_controller

    try:
        get_controller("default")
    except ValueError:
        return {"skipped": "no controller was running"}
    serve.shutdown()
    t0 = time.monotonic()
    while time.monotonic() - t0 < 120:
        try:
            get_controller("default")
        except ValueError:
            return {"controller_gone_after_s": round(time.monotonic() - t0, 1)}
        time.sleep(0.5)
    return {"controller_gone_after_s": None, "note": "still alive 120 s after serve shutdown"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scenario", choices=["all", "kill", "controller", "overload", "stuck", "lifecycle"], default="all")
    ap.add_argument("--capacity", type=float, default=15.0,
                    help="the default app's req/s for these requests with the load client on the same machine "
                    "(15 on this 2-vCPU machine, 2026-11-30; issue 15 measured about 50 with an idler host)")
    ap.add_argument("--load", type=float, default=0.7, help="normal load, x capacity (default 0.7)")
    ap.add_argument("--overload", type=float, default=5.0, help="overload, x capacity (default 5)")
    ap.add_argument("--ingress-max-ongoing", type=int, help="the default app with this server.ingress_max_ongoing_requests")
    ap.add_argument("--ingress-replicas", type=int, help="the default app with this server.ingress_replicas")
    ap.add_argument("--shed-lag-ms", help="the default app with this server.shed_lag_ms ('none': never shed)")
    ap.add_argument("--client-procs", type=int, default=1,
                    help="overload: load client processes (default 1; one Python client manages a few hundred req/s)")
    ap.add_argument("--out", required=True, help="results prefix: writes OUT.json")
    a = ap.parse_args()
    chosen = ["kill", "controller", "overload", "stuck", "lifecycle"] if a.scenario == "all" else [a.scenario]
    results: dict = {}
    app_config = None
    server = {k: v for k, v in (("ingress_max_ongoing_requests", a.ingress_max_ongoing),
                                  ("ingress_replicas", a.ingress_replicas)) if v}
    if a.shed_lag_ms is not None:
        server["shed_lag_ms"] = None if a.shed_lag_ms == "none" else float(a.shed_lag_ms)
    if server:
        from rayhet.config import DEFAULT_APP, load_config

        base = load_config(DEFAULT_APP)
        app_config = base.model_copy(update={"server": base.server.model_copy(update=server)})
    url = start(app_config) if set(chosen) - {"stuck", "lifecycle"} or chosen == ["lifecycle"] else None
    rate = a.capacity * a.load
    for name in chosen:
        print(f"chaos: {name} ...", flush=True)
        if name == "kill":
            results[name] = scenario_kill(url, rate)
        elif name == "controller":
            results[name] = scenario_controller(url, rate)
        elif name == "overload":
            results[name] = scenario_overload(url, rate, a.capacity * a.overload, a.client_procs)
        elif name == "stuck":
            results[name] = scenario_stuck()
        else:
            results[name] = scenario_lifecycle()
        print(json.dumps(results[name], indent=1), flush=True)
    doc = {"machine": f"{platform.node()} ({os.cpu_count()} CPUs), Python {platform.python_version()}",
           "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
           "command": "python benchmarks/chaos.py " + " ".join(f"--{k} {v}" for k, v in vars(a).items()),
           "results": results}
    Path(a.out + ".json").parent.mkdir(parents=True, exist_ok=True)
    Path(a.out + ".json").write_text(json.dumps(doc, indent=1))
    print(f"wrote {a.out}.json")


if __name__ == "__main__":
    main()
