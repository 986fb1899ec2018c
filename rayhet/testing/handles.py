"""TEST DOUBLES of a pool's Ray Serve DeploymentHandle, calling a real PoolServer in process: the ingress's
logic tests drive its FastAPI app without Ray. Kept out of production imports (rayhet.testing)."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rayhet.serve.pool import PoolServer


class HandleCall:
    """What a DeploymentHandle call returns: awaitable (unary) or async-iterable (stream), cancellable."""

    def __init__(self, coro_or_gen, stream: bool):
        self._x, self.stream, self.cancelled = coro_or_gen, stream, False

    def __await__(self):
        return self._x.__await__()

    def __aiter__(self):
        return self

    async def __anext__(self):
        return await self._x.__anext__()

    def cancel(self):
        self.cancelled = True
        if getattr(self, "cancel_raises", None) is not None:  # Serve's cancel() re-raises a failed assignment
            raise self.cancel_raises
        if self.stream:
            asyncio.ensure_future(self._x.aclose())
        else:
            self._x.close()


class FakeHandle:
    """TEST DOUBLE of a pool's DeploymentHandle. `script` is what the next calls do, in order, then 'ok':
    'ok' runs the PoolServer; 'die' raises Ray's ActorDiedError; 'busy' Serve's BackPressureError; 'hang'
    never answers (a pool whose replicas are gone: Serve's handle queues the call)."""

    def __init__(self, server: PoolServer, script: list[str] | None = None):
        self.server, self.script, self.calls = server, list(script or []), 0
        self.complete = SimpleNamespace(remote=lambda gen: self._remote(gen, stream=False))
        self.generate = SimpleNamespace(remote=lambda gen: self._remote(gen, stream=True))

    def options(self, **_):
        return self

    def _remote(self, gen, stream: bool) -> HandleCall:
        self.calls += 1
        what = self.script.pop(0) if self.script else "ok"
        if what == "ok":
            return HandleCall(self.server.generate(gen) if stream else self.server.complete(gen), stream)
        call = HandleCall(_failing("hang" if what == "hang-bad-cancel" else what, stream), stream)
        if what == "hang-bad-cancel":
            from ray.serve.exceptions import BackPressureError

            call.cancel_raises = BackPressureError(num_queued_requests=8, max_queued_requests=8)
        return call


def _failing(what: str, stream: bool):
    async def fail():
        if what == "hang":
            await asyncio.sleep(3600)
        if what == "die":
            from ray.exceptions import ActorDiedError

            raise ActorDiedError()
        from ray.serve.exceptions import BackPressureError

        raise BackPressureError(num_queued_requests=9, max_queued_requests=8)

    async def stream_fail():
        await fail()
        yield None

    return stream_fail() if stream else fail()


async def fake_pool_server(name: str, **settings) -> "PoolServer":
    """A real PoolServer on the fake engine, built in process as Serve would (its constructor is async)."""
    from rayhet.serve.pool import PoolServer

    class _InProcess(PoolServer):
        def __del__(self) -> None:  # Serve awaits the async one; outside Serve nothing would
            pass

    s = _InProcess.__new__(_InProcess)
    await s.__init__(name, "fake", settings)
    return s
