"""Profile each pool of a config as it is deployed (issue 14's validation): through Serve's proxy and the
ingress, on the cores it shares with them, instead of in process.

The validation found the engines 20-50 % slower in the deployment than in profiles made in process (on 2
vCPUs the proxy, the ingress, the controller and Ray take their CPU from the engines' cores, per streamed
token). `rayhet profile --url` observes an engine from outside (rayhet.profiling.observe), so a profile
made that way carries those costs in its step model. Each pool is served alone as a one-pool app (one
replica, the pool's own settings), profiled with the limits its settings give, and written next to the
config's profiles as NAME-deployed.json. `--together` serves them all at once and profiles them at
the same time, as they decode side by side in the validation.

    python benchmarks/sim/profile_deployed.py --config benchmarks/sim/validation.yaml
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", required=True)
    ap.add_argument("--pools", help="comma-separated pool names (default: all)")
    ap.add_argument("--gguf", help="model file (default: the 120M benchmark model)")
    ap.add_argument("--extra", default="", help="more `rayhet profile` flags, one string")
    ap.add_argument("--together", action="store_true",
                    help="serve every pool at once and profile them at the same time (as they run in the validation, "
                    "decoding side by side on shared cores), instead of one after another")
    args = ap.parse_args(argv)

    import httpx
    import ray
    from ray import serve

    from rayhet.app import build
    from rayhet.config import load_config
    from rayhet.models import cached_gguf

    config = load_config(args.config)
    gguf = args.gguf or str(cached_gguf("120m", dtype="f16"))
    base_dir = Path(args.config).parent
    wanted = set(args.pools.split(",")) if args.pools else {p.name for p in config.pools}
    ray.init(include_dashboard=False, log_to_driver=False)
    serve.start(http_options={"host": "127.0.0.1", "port": 8000})
    try:
        jobs = []
        for pool in config.pools:
            if pool.name not in wanted:
                continue
            es = pool.engine_settings
            one = {"model": {"id": config.model.id, "gguf": gguf},
                   "pools": [pool.model_copy(update={"min_replicas": 1, "max_replicas": 1, "profile": None})
                             .model_dump(mode="json", exclude_none=True)],
                   "server": {"ingress_num_cpus": 0}}
            prefix = f"/p-{pool.name}"
            serve.run(build({"config": one}), name=f"p-{pool.name}", route_prefix=prefix, blocking=False)
            url = "http://127.0.0.1:8000" + prefix
            deadline = time.monotonic() + 300
            while time.monotonic() < deadline:
                try:
                    if httpx.post(url + "/v1/completions", json={"model": config.model.id, "prompt": "hi",
                                                                  "max_tokens": 2}, timeout=10).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                time.sleep(1)
            n_ctx, slots = int(es["n_ctx"]), int(es["n_slots"])
            step_tokens = int(es.get("n_batch", 256))
            prof = Path(pool.profile) if pool.profile else Path("profiles") / f"{pool.name}.json"
            out = base_dir / prof.with_name(prof.stem + "-deployed.json")
            slo = config.slo
            beside = " beside the config's other pools, profiled at the same time" if args.together else " alone"
            cmd = [sys.executable, "-m", "rayhet.cli", "profile", "--url", url, "--model", config.model.id,
                   "--max-context", str(n_ctx), "--max-batch", str(slots), "--step-tokens", str(step_tokens),
                   "--kv-tokens", str(n_ctx * slots), "--slot-passes", "--slo-tpot-ms", str(slo.tpot_ms),
                   "--slo-ttft-ms", str(slo.ttft_ms), "--ttft-quantile", str(slo.ttft_quantile), "--out", str(out),
                   "--pool", pool.name, "--price-per-hour", str(pool.price_per_hour), "--held-out", "0",
                   "--price-source", "illustrative: 1 vCPU and its memory at on-demand cloud rates",
                   "--notes", f"Pool {pool.name} of {args.config}, served as deployed (one replica behind Serve's "
                   f"proxy and the ingress, on the cores they share{beside}) and observed from outside over HTTP.",
                   *args.extra.split()]
            print("$ " + " ".join(cmd), flush=True)
            if args.together:
                jobs.append(cmd)
            else:
                subprocess.run(cmd, check=True)
                serve.delete(f"p-{pool.name}")
        procs = [subprocess.Popen(cmd) for cmd in jobs]
        if any(p.wait() for p in procs):
            raise SystemExit("a profile failed")
    finally:
        serve.shutdown()
        ray.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
