"""`serve deploy deployments/serve/embedded-cpu.yaml` against the session's local Ray serves a request.

Why not the `serve deploy` CLI itself: it PUTs the file to the dashboard's REST API (:8265), and the session
cluster (tests/conftest.py) runs without a dashboard; starting a second cluster inside the session is not
allowed. Both `serve deploy` (dashboard `put_all_applications`) and `serve run FILE` (`ray.serve.scripts.run`)
do the same three things in Ray 2.60, and so does this test, on the file as written:
`ServeDeploySchema.model_validate(yaml)` -> `serve._private.api.serve_start(<the file's options>)` ->
`client.deploy_apps(config)` (the controller's declarative `apply_config`). The app is then built on the
cluster from `import_path` + `args`, as on KubeRay or Anyscale, and answers an OpenAI chat request.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.serve

FILE = Path(__file__).resolve().parents[2] / "deployments" / "serve" / "embedded-cpu.yaml"


def test_serve_deploy_of_the_embedded_cpu_file_serves(serve_url):
    import httpx
    from ray import serve
    from ray.serve._private import api as serve_api
    from ray.serve.config import gRPCOptions
    from ray.serve.schema import ApplicationStatus, ServeDeploySchema

    config = ServeDeploySchema.model_validate(yaml.safe_load(FILE.read_text()))
    (app,) = config.applications
    assert app.name not in serve.status().applications, "an earlier test left this app behind"
    # Serve is already running (serve_url): as with `serve deploy`, the file's HTTP options cannot change it,
    # so requests go to the session's proxy; everything else in the file is applied.
    client = serve_api.serve_start(http_options=config.http_options.model_dump(), proxy_location=config.proxy_location,
                                   grpc_options=gRPCOptions(**config.grpc_options.model_dump()),
                                   controller_options=config.controller_options)
    client.deploy_apps(config)
    try:
        deadline = time.monotonic() + 180
        while True:  # the build runs on the cluster: wait for it, failing fast on a failed deploy
            st = serve.status().applications.get(app.name)
            if st is not None and st.status in (ApplicationStatus.DEPLOY_FAILED, ApplicationStatus.UNHEALTHY):
                pytest.fail(f"{FILE.name}: app {app.name}: {st.status}: {st.message}")
            if st is not None and st.status == ApplicationStatus.RUNNING:
                break
            assert time.monotonic() < deadline, f"{FILE.name}: app {app.name} not RUNNING after 180 s: {st}"
            time.sleep(0.5)
        r = httpx.post(f"{serve_url}{app.route_prefix.rstrip('/')}/v1/chat/completions", timeout=60,
                       json={"model": "rayhet-tiny", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4})
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["model"] == "rayhet-tiny" and body["usage"]["completion_tokens"] <= 4
        deployments = serve.status().applications[app.name].deployments
        assert set(deployments) == {"ingress", "pool-cpu"}
    finally:
        serve.delete(app.name)
