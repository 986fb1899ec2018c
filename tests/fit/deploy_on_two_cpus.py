"""Deploy each named case on a fresh 2-CPU local Ray (its own cluster, this process only) and report as JSON.

Run by tests/fit/test_two_cpus.py in a subprocess, so the Ray it starts is a 2-CPU one whatever the host
has, and it is gone before the suite's session cluster starts. One line of JSON per case on stdout:
{"case", "ok", "seconds", "deployments", "error"}.

A case is `default` (`rayhet.app:build` with no arguments), `gguf:PATH:THREADS`, `config:PATH` (a rayhet
config), `serve:PATH` (a Ray Serve config file, applied as `serve deploy` does) or `python:PATH` (the
`demo_config()` of an example script).
"""

from __future__ import annotations

import importlib.util
import json
import socket
import sys
import time


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_running(app: str, timeout: float) -> list[str]:
    from ray import serve
    from ray.serve.schema import ApplicationStatus

    deadline = time.monotonic() + timeout
    while True:
        st = serve.status().applications.get(app)
        if st is not None and st.status in (ApplicationStatus.DEPLOY_FAILED, ApplicationStatus.UNHEALTHY):
            raise RuntimeError(f"{st.status}: {st.message}")
        if st is not None and st.status == ApplicationStatus.RUNNING:
            return sorted(st.deployments)
        if time.monotonic() > deadline:
            pending = {n: (d.status, d.message) for n, d in (st.deployments.items() if st else [])}
            raise RuntimeError(f"not RUNNING after {timeout:.0f} s: {pending}")
        time.sleep(0.5)


def _ask(url: str, model: str) -> None:
    import httpx

    r = httpx.post(f"{url}/v1/chat/completions", timeout=60,
                   json={"model": model, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4})
    if r.status_code != 200:
        raise RuntimeError(f"chat request: {r.status_code} {r.text[:300]}")


def _run(application, app: str) -> None:
    """Deploy without waiting for RUNNING (serve.run would wait forever on a replica that never fits;
    _wait_running below waits with a deadline and says what is pending)."""
    from ray import serve

    serve._run(application, name=app, route_prefix="/", _blocking=False)


def deploy(case: str, url: str) -> list[str]:
    from ray import serve

    from rayhet.app import build

    kind, _, rest = case.partition(":")
    app = "fit"
    if kind == "default":
        _run(build({}), app)
        model = "rayhet-tiny"
    elif kind == "gguf":
        path, threads = rest.rsplit(":", 1)
        _run(build({"gguf": path, "threads": int(threads)}), app)
        from pathlib import Path

        model = Path(path).stem
    elif kind == "config":
        from rayhet.config import load_config

        model = load_config(rest).model.id
        _run(build({"config": rest}), app)
    elif kind == "python":
        spec = importlib.util.spec_from_file_location("example", rest)
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        config = mod.demo_config()
        model = config.model.id
        _run(build(config), app)
    elif kind == "serve":
        import yaml
        from ray.serve._private import api as serve_api
        from ray.serve.schema import ServeDeploySchema

        schema = ServeDeploySchema.model_validate(yaml.safe_load(open(rest).read()))
        (spec,) = schema.applications
        spec.name, spec.route_prefix = app, "/"
        serve_api.serve_start().deploy_apps(schema)  # what `serve deploy` does (controller's apply_config)
        model = (spec.args.get("model") or {}).get("id", "rayhet-tiny")
    else:
        raise ValueError(f"unknown case {case!r}")
    try:
        names = _wait_running(app, 150)
        _ask(url, model)
        return names
    finally:
        serve.delete(app)


def main(cases: list[str]) -> None:
    import ray
    from ray import serve

    ray.init(num_cpus=2, include_dashboard=False, logging_level="warning", log_to_driver=False)
    port = _free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    for case in cases:
        t0 = time.monotonic()
        try:
            names = deploy(case, f"http://127.0.0.1:{port}")
            out = {"case": case, "ok": True, "deployments": names}
        except Exception as e:  # noqa: BLE001 - reported to the test, which fails on it
            out = {"case": case, "ok": False, "error": f"{type(e).__name__}: {e}"}
        out["seconds"] = round(time.monotonic() - t0, 1)
        print(json.dumps(out), flush=True)
    serve.shutdown()
    ray.shutdown()


if __name__ == "__main__":
    main(sys.argv[1:])
