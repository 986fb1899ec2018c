"""The embedded default (`serve run rayhet.app:build` with no args): one CPU pool on the generated tiny model."""

from __future__ import annotations

import pytest

from rayhet.testing.driver import call_deployment

pytestmark = pytest.mark.serve


def test_build_without_args_serves_the_embedded_model(serve_url, caplog):
    import httpx
    from ray import serve

    from rayhet.app import build

    with caplog.at_level("WARNING", logger="rayhet"):
        app = build({})
    assert "EMBEDDED tiny model" in caplog.text and "gguf=" in caplog.text
    serve.run(app, name="embedded", route_prefix="/emb")
    try:
        r = httpx.post(f"{serve_url}/emb/v1/chat/completions", timeout=60,
                       json={"model": "rayhet-tiny", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4})
        assert r.status_code == 200, r.text
        assert r.json()["usage"]["completion_tokens"] <= 4
        snap = call_deployment("embedded", "ingress", "get_plan")
        assert snap["status"] == "static" and snap["replicas"] == {"cpu": 1}
    finally:
        serve.delete("embedded")
