"""Run rayhet from Python on an existing Ray cluster: build the app from a config object and serve it.

Minimum cluster: 2 CPUs (the demo's two pools take one each; with --config, what that config needs).

    ray start --head                                  # or any running cluster: KubeRay, an Anyscale workspace
    python examples/python_api.py                     # two CPU pools on the embedded tiny model (the default)
    python examples/python_api.py --config examples/two-pools.yaml
    python examples/openai_client.py                  # then query it

The app keeps running on the cluster after this script exits (Serve applications are detached):
`serve status` shows it, `serve shutdown` (or `--delete` here) removes it.
"""

from __future__ import annotations

import argparse
import json
import urllib.request

import ray
from ray import serve

from rayhet.app import build
from rayhet.config import DEFAULT_APP, ModelConfig, PlannerConfig, PoolConfig, RayhetConfig, load_config



def demo_config() -> RayhetConfig:
    """rayhet's default app (rayhet/data/default/app.yaml) written as Python objects: two CPU pools of the
    tiny model, `small` (short context, cheap) and `large` (long context, dearer), with their shipped
    profiles, routed by size under the controller."""
    profiles = DEFAULT_APP.parent / "profiles"
    return RayhetConfig(
        model=ModelConfig(id="rayhet-tiny", gguf="embedded:tiny"),
        pools=[
            PoolConfig(name="small", engine="llama_cpp", num_cpus=1, min_replicas=1, max_replicas=1,
                       engine_settings={"n_threads": 1, "n_ctx": 1024, "n_slots": 4},
                       profile=str(profiles / "small.json")),
            PoolConfig(name="large", engine="llama_cpp", num_cpus=1, min_replicas=1, max_replicas=1,
                       engine_settings={"n_threads": 1, "n_ctx": 4096, "n_slots": 4},
                       profile=str(profiles / "large.json")),
        ],
        planner=PlannerConfig(expected_rate=1.0),
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", help="a rayhet config file instead of the built-in demo config")
    p.add_argument("--name", default="rayhet", help="Serve application name")
    p.add_argument("--port", type=int, default=8000, help="HTTP port, if this script starts Serve")
    p.add_argument("--delete", action="store_true", help="delete the app after the test request")
    args = p.parse_args()

    ray.init(address="auto")  # join the running cluster (RAY_ADDRESS, or the one started on this machine)
    config = load_config(args.config) if args.config else demo_config()
    serve.start(http_options={"host": "0.0.0.0", "port": args.port})  # no-op if Serve already runs
    handle = serve.run(build(config), name=args.name, route_prefix="/")  # waits until every replica is up

    plan = handle.get_plan.remote().result(timeout_s=30)
    print(f"plan: {plan['status']}, replicas {plan['replicas']}")
    req = urllib.request.Request(
        f"http://127.0.0.1:{args.port}/v1/chat/completions", method="POST",
        headers={"content-type": "application/json"},
        data=json.dumps({"model": config.model.id, "max_tokens": 8,
                         "messages": [{"role": "user", "content": "Hello!"}]}).encode())
    with urllib.request.urlopen(req, timeout=120) as r:
        body = json.load(r)
    print("reply:", repr(body["choices"][0]["message"]["content"]), "usage:", body["usage"])
    if args.delete:
        serve.delete(args.name)
    else:
        print(f"serving on http://127.0.0.1:{args.port}/v1 (remove with `serve shutdown`)")


if __name__ == "__main__":
    main()
