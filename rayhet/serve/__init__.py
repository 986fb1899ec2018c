"""Serve: the Ray Serve side of rayhet (the only package that imports Ray).

`build_app(config, plan)` makes the Application; `PoolServer` and `Ingress` are the plain classes it
deploys. Imported lazily so `import rayhet.serve` alone costs nothing.
"""

from __future__ import annotations

from typing import Any

__all__ = ["build_app", "Ingress", "PoolServer"]


def __getattr__(name: str) -> Any:
    if name == "build_app":
        from rayhet.serve.builder import build_app

        return build_app
    if name == "Ingress":
        from rayhet.serve.ingress import Ingress

        return Ingress
    if name == "PoolServer":
        from rayhet.serve.pool import PoolServer

        return PoolServer
    raise AttributeError(name)
