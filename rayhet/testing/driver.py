"""Calling a Serve deployment from a plain (synchronous) driver, such as a test, in either Serve mode.

In Ray Serve's throughput mode (`RAY_SERVE_THROUGHPUT_OPTIMIZED=1`) a handle's router runs on the loop
it was first used on, so a synchronous `handle.method.remote().result()` raises and a handle used under
one `asyncio.run` breaks under the next. One event loop in a daemon thread, kept for the process's life,
serves every call here: it works the same in the default mode.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from typing import Any, Iterator

_lock = threading.Lock()
_loop: asyncio.AbstractEventLoop | None = None


def _driver_loop() -> asyncio.AbstractEventLoop:
    global _loop
    with _lock:
        if _loop is None or _loop.is_closed():
            _loop = asyncio.new_event_loop()
            threading.Thread(target=_loop.run_forever, name="rayhet-driver-loop", daemon=True).start()
        return _loop


def call_deployment(app: str, deployment: str, method: str, *args: Any, timeout_s: float = 30.0) -> Any:
    """`deployment.method(*args)` of Serve app `app`, waited for up to `timeout_s` seconds."""

    async def call() -> Any:
        from ray import serve

        handle = serve.get_deployment_handle(deployment, app_name=app)
        return await getattr(handle, method).remote(*args)

    return asyncio.run_coroutine_threadsafe(call(), _driver_loop()).result(timeout_s)


@contextlib.contextmanager
def deployed(config: Any, app: str, route_prefix: str) -> Iterator[None]:
    """The rayhet app of `config` (a config dict, or the path of a config file) running on Serve as `app` at
    `route_prefix` while the block runs (`serve.run` returns once it is RUNNING); deleted after, whatever
    happened."""
    from ray import serve

    from rayhet.app import build

    serve.run(build({"config": config}), name=app, route_prefix=route_prefix)
    try:
        yield
    finally:
        serve.delete(app)
