"""Pool replica: a plain class wrapping one Engine, made a Serve deployment (one per pool) by the builder.

The engine starts in the (async) constructor, so a replica is only ready once its model is loaded;
Serve's health check calls the engine's. `generate` streams GenerationDelta objects to the ingress
through a streaming DeploymentHandle; `stats` returns the replica's own counters, which tests and the
controller read.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from typing import Any, AsyncIterator

from rayhet.config import EMBEDDED_MODEL, engine_classes
from rayhet.engines.base import GenerationDelta, GenerationRequest

log = logging.getLogger("ray.serve")


def resolve_model_path(settings: dict[str, Any]) -> dict[str, Any]:
    """Replace the embedded-model marker by the tiny GGUF, generated here on first use (and cached)."""
    if settings.get("model_path") == EMBEDDED_MODEL:
        from rayhet.testing.models import default_model_path

        settings = dict(settings, model_path=str(default_model_path()))
    return settings


class PoolServer:
    """One replica of one pool."""

    async def __init__(self, pool: str, engine: str, engine_settings: dict[str, Any]):
        self.pool = pool
        engine_cls, settings_cls = engine_classes(engine)
        settings = settings_cls.model_validate(resolve_model_path(engine_settings))
        t0 = time.monotonic()
        self.engine = engine_cls(settings)
        await self.engine.start()
        self._counters = {"requests": 0, "ok": 0, "errors": 0, "prompt_tokens": 0, "completion_tokens": 0,
                          "cancelled": 0}
        log.info("rayhet pool %s: %s engine ready in %.2f s (pid %d)", pool, engine, time.monotonic() - t0, os.getpid())

    async def generate(self, request: GenerationRequest) -> AsyncIterator[GenerationDelta]:
        """Stream the engine's deltas; counts the request in this replica's counters."""
        c = self._counters
        c["requests"] += 1
        done = False
        try:
            async for delta in self.engine.generate(request):
                if delta.usage is not None:
                    c["prompt_tokens"] += delta.usage.prompt_tokens
                    c["completion_tokens"] += delta.usage.completion_tokens
                    done = True
                yield delta
            c["ok"] += 1
        except (GeneratorExit, asyncio.CancelledError):
            c["cancelled"] += 1
            raise
        except BaseException:
            if not done:
                c["errors"] += 1
            raise

    async def check_health(self) -> None:
        """Serve calls this periodically; raising marks the replica unhealthy (it is then replaced)."""
        await self.engine.check_health()

    def stats(self) -> dict[str, Any]:
        """This replica's counters, the engine's live stats, and where it runs."""
        import ray
        from ray import serve

        ctx = serve.get_replica_context()
        rc = ray.get_runtime_context()
        return {
            "pool": self.pool,
            "replica": ctx.replica_id.unique_id if ctx else None,
            "node_id": rc.get_node_id(),
            "counters": dict(self._counters),
            "engine": vars(self.engine.stats()),
            "max_context": self.engine.max_context,
            "max_batch": self.engine.max_batch,
        }

    async def __del__(self) -> None:  # Serve awaits an async __del__ when the replica stops
        try:
            await self.engine.shutdown()
        except Exception:  # noqa: BLE001 - shutting down anyway
            pass
