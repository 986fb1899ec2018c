"""A host whose cores the pools' engines share with the serving stack (HostContention.cpus).

On a laptop or one small VM, Serve's proxy, the ingress, each replica's Python and often the client run on the
cores the llama.cpp threads compute on, and their work grows with the tokens streamed: every token crosses the
replica's generator, the ingress and the proxy. An engine model is measured with the engine alone, so on such a
host it is right for a lone request and too fast under load. On this project's 2-vCPU VM, the validation's real
run decoded 1.05x the calibrated model alone, 1.18x with 1-3 other requests in flight and 1.73x with 4 or more
(README "Simulating a day").

The host is modelled as processor sharing. At a moment, the busy engines ask for E cores (their threads, plus
`base_cpus` for what runs regardless of traffic) and the stack for c * R / s, where R is the token rate the
engines' current batches would decode at alone, c the stack's CPU seconds per token and s the slowdown (tokens
come s times slower when steps do). While E + c * R / s exceeds the host's `cpus`, every runnable thread gets
its share and each step takes s = (E + c * R / s) / cpus times as long:

    cpus * s^2 - E * s - c * R = 0   =>   s = (E + sqrt(E^2 + 4 * cpus * c * R)) / (2 * cpus),  and s >= 1.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

POOL_PROCESS = ":pool-"  # in a pool replica's process title (ray::ServeReplica:<app>:pool-<name>)


def host_share(cpus: float, engine_cpus: float, tokens_per_s: float, cpu_s_per_token: float) -> float:
    """How many times as long every engine step on the host takes (>= 1; 1 while the cores are not
    oversubscribed)."""
    if cpus <= 0:
        raise ValueError("a host has a positive number of cpus")
    load = cpu_s_per_token * max(tokens_per_s, 0.0)
    s = (engine_cpus + math.sqrt(engine_cpus * engine_cpus + 4.0 * cpus * load)) / (2.0 * cpus)
    return max(1.0, s)


@dataclass(frozen=True)
class HostSample:
    """One stretch of time on the host: tokens streamed per second and the cores the stack used meanwhile (every
    process but the pools' replicas, from /proc)."""

    seconds: float
    tokens_per_s: float
    stack_cores: float
    engine_cores: float = 0.0


def stack_cores(cores_by_process: dict[str, float]) -> tuple[float, float]:
    """(stack, engines): a look's cores per process title (rayhet.procstat.cpu_share) split into the pools'
    replicas and the rest."""
    engines = sum(c for name, c in cores_by_process.items() if POOL_PROCESS in name)
    return sum(cores_by_process.values()) - engines, engines


def fit_stack_share(samples: list[HostSample]) -> tuple[float, float, float]:
    """(base_cpus, stack CPU seconds per token, p90 absolute residual in cores): stack cores = base + c x tokens/s,
    least squares weighted by each stretch's length, both clipped at 0. Stretches where the host was saturated
    understate the stack's demand (it got less than it asked for): measure them with cores to spare."""
    if len(samples) < 2 or len({round(s.tokens_per_s, 6) for s in samples}) < 2:
        raise ValueError("fitting the stack's share needs stretches at two token rates at least")
    w = np.sqrt([max(s.seconds, 1e-9) for s in samples])
    x = np.array([s.tokens_per_s for s in samples])
    y = np.array([s.stack_cores for s in samples])
    (base, per_token), *_ = np.linalg.lstsq(np.vstack([w, w * x]).T, w * y, rcond=None)
    base, per_token = max(float(base), 0.0), max(float(per_token), 0.0)
    resid = np.abs(y - (base + per_token * x))
    return base, per_token, float(np.percentile(resid, 90))
