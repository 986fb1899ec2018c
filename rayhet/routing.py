"""Routing: predict a request's output length, map it to a bucket, and pick pools from the current Plan.

Pure (no Ray, no engines). The ingress asks `Router.decide(input_tokens, max_tokens)` for an ordered list
of pools: the first is drawn by the plan's shares for the bucket (smooth weighted round-robin, so the
realised split follows the shares exactly over time); the rest are the spill-over order used when the
first pushes back or fails.
"""

from __future__ import annotations

import importlib
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from rayhet.plan import Plan
from rayhet.profiles import bucket_index


# -- output-length prediction ----------------------------------------------------------------------
@runtime_checkable
class OutputPredictor(Protocol):
    """Predicts how many tokens a request will generate; learns from finished requests."""

    def predict(self, input_tokens: int, max_tokens: int) -> int:
        """Predicted output tokens, 1 <= result <= max_tokens."""
        ...

    def observe(self, input_tokens: int, output_tokens: int, max_tokens: int) -> None:
        """Record a finished request."""
        ...


class MaxTokensPredictor:
    """Assumes every request generates its max_tokens: never under-estimates, often over-estimates."""

    def __init__(self, input_edges: list[int] | None = None, **_: object):
        pass

    def predict(self, input_tokens: int, max_tokens: int) -> int:
        return max_tokens

    def observe(self, input_tokens: int, output_tokens: int, max_tokens: int) -> None:
        pass


class BucketQuantilePredictor:
    """Mélange's balancer idea: output lengths are learned online per input-length bucket.

    Keeps the last `window` output lengths of each input bucket and predicts their `quantile`, capped by
    the request's max_tokens. Until a bucket has `min_samples`, it predicts max_tokens (conservative: a
    long-output pool can serve a short request, not the other way round under a TPOT SLO).
    """

    def __init__(self, input_edges: list[int], quantile: float = 0.5, window: int = 256, min_samples: int = 8):
        self.input_edges = list(input_edges)
        self.quantile = quantile
        self.min_samples = min_samples
        self._hist: list[deque[int]] = [deque(maxlen=window) for _ in range(len(self.input_edges) + 1)]
        self._cache: list[int | None] = [None] * (len(self.input_edges) + 1)

    def _slot(self, input_tokens: int) -> int:
        i = bucket_index(input_tokens, self.input_edges)
        return len(self.input_edges) if i is None else i  # one extra slot for inputs beyond the grid

    def predict(self, input_tokens: int, max_tokens: int) -> int:
        s = self._slot(input_tokens)
        h = self._hist[s]
        if len(h) < self.min_samples:
            return max_tokens
        q = self._cache[s]
        if q is None:
            ordered = sorted(h)
            q = ordered[min(len(ordered) - 1, int(self.quantile * len(ordered)))]
            self._cache[s] = q
        return max(1, min(max_tokens, q))

    def observe(self, input_tokens: int, output_tokens: int, max_tokens: int) -> None:
        s = self._slot(input_tokens)
        self._hist[s].append(int(output_tokens))
        self._cache[s] = None


def make_predictor(spec: str, input_edges: list[int], **kwargs: object) -> OutputPredictor:
    """'bucket_quantile', 'max_tokens', or 'package.module:Class' (constructed with input_edges and kwargs
    it accepts; it must implement OutputPredictor)."""
    if spec == "bucket_quantile":
        return BucketQuantilePredictor(input_edges, **kwargs)  # type: ignore[arg-type]
    if spec == "max_tokens":
        return MaxTokensPredictor()
    if ":" not in spec:
        raise ValueError(f"routing.predictor: unknown predictor {spec!r} (bucket_quantile, max_tokens or module:Class)")
    mod, _, name = spec.partition(":")
    cls = getattr(importlib.import_module(mod), name)
    try:
        pred = cls(input_edges, **kwargs)
    except TypeError:
        pred = cls(input_edges)
    if not isinstance(pred, OutputPredictor):
        raise ValueError(f"routing.predictor: {spec} does not implement predict() and observe()")
    return pred


# -- pool choice ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class PoolLimit:
    """What the router must know of a pool beyond the plan: its context and price."""

    name: str
    max_context: int | None = None  # prompt + max_tokens must fit; None: unknown (assume it fits)
    price_per_hour: float = 0.0


@dataclass
class Route:
    """The router's answer for one request."""

    input_tokens: int
    predicted_output: int
    bucket: tuple[int, int] | None  # on the plan's grid; None when no pool can take the request
    clipped: bool  # the request was beyond the grid and counted in its last bucket
    pools: list[str]  # first choice, then spill-over order; empty when no pool fits
    reason: str = ""  # why `pools` is empty
    standby: list[str] = field(default_factory=list)  # pools that fit but the plan gives none, cheapest first


@dataclass
class _WRR:
    current: dict[str, float] = field(default_factory=dict)

    def pick(self, shares: dict[str, float]) -> str:
        total = 0.0
        best, best_w = None, float("-inf")
        for name, w in shares.items():
            c = self.current.get(name, 0.0) + w
            self.current[name] = c
            total += w
            if c > best_w:
                best, best_w = name, c
        assert best is not None
        self.current[best] -= total
        return best


class Router:
    """Chooses pools for requests from a Plan. Not thread-safe; the ingress runs it on its event loop."""

    def __init__(self, plan: Plan, limits: list[PoolLimit], predictor: OutputPredictor | None = None,
                 failure_cooldown_s: float = 5.0):
        self.limits = {p.name: p for p in limits}
        self.largest_context = max((p.max_context or 0 for p in limits), default=0)  # 0: none known
        self.predictor = predictor or MaxTokensPredictor()
        self.failure_cooldown_s = failure_cooldown_s
        self._failed_until: dict[str, float] = {}
        self.set_plan(plan)

    def set_plan(self, plan: Plan) -> None:
        """Switch to a new plan (the controller's); unknown pool names in it are ignored."""
        self.plan = plan
        self._wrr: dict[tuple[int, int], _WRR] = {}
        live = [n for n in self.limits if plan.replicas.get(n, 0) > 0]
        # Pools with replicas, cheapest first: the fallback order when a bucket's planned pools cannot help.
        self._by_price = sorted(live, key=lambda n: (self.limits[n].price_per_hour, n))

    def mark_failed(self, pool: str, now: float | None = None) -> None:
        """A pool just failed a request: try it last for a while."""
        self._failed_until[pool] = (now if now is not None else time.monotonic()) + self.failure_cooldown_s

    def _fits(self, pool: str, need: int) -> bool:
        ctx = self.limits[pool].max_context
        return ctx is None or need <= ctx

    def bucket_of(self, input_tokens: int, output_tokens: int) -> tuple[tuple[int, int], bool]:
        """(bucket on the plan's grid, clipped?) — sizes beyond the last edge count in the last bucket."""
        i = bucket_index(max(1, input_tokens), self.plan.input_edges)
        j = bucket_index(max(1, output_tokens), self.plan.output_edges)
        clipped = i is None or j is None
        i = len(self.plan.input_edges) - 1 if i is None else i
        j = len(self.plan.output_edges) - 1 if j is None else j
        return (i, j), clipped

    def decide(self, input_tokens: int, max_tokens: int, now: float | None = None) -> Route:
        predicted = max(1, min(max_tokens, self.predictor.predict(input_tokens, max_tokens)))
        need = input_tokens + max_tokens
        fits = [n for n in self.limits if self._fits(n, need)]
        if not fits:
            return Route(input_tokens, predicted, None, False, [],
                         f"prompt ({input_tokens} tokens) + max_tokens ({max_tokens}) = {need} tokens exceeds every "
                         f"pool's context (the largest is {self.largest_context} tokens)")
        bucket, clipped = self.bucket_of(input_tokens, predicted)
        fit_set = set(fits)
        shares = {n: s for n, s in self.plan.pools_for(*bucket).items() if s > 0 and n in fit_set}
        order: list[str] = []
        if shares:
            order.append(self._wrr.setdefault(bucket, _WRR()).pick(shares))
            order += sorted((n for n in shares if n != order[0]), key=lambda n: -shares[n])
        # Spill-over: pools planned for the same input size with longer outputs can serve this one too.
        i, j = bucket
        longer: dict[str, float] = {}
        for jj in range(j + 1, len(self.plan.output_edges)):
            for n, s in self.plan.pools_for(i, jj).items():
                if s > 0 and n in fit_set and n not in order:
                    longer[n] = longer.get(n, 0.0) + s
        order += sorted(longer, key=lambda n: -longer[n])
        order += [n for n in self._by_price if n in fit_set and n not in order]
        if not order:  # no pool has replicas in the plan; still try one that fits rather than refuse
            order = sorted(fits, key=lambda n: (self.limits[n].price_per_hour, n))
        t = now if now is not None else time.monotonic()
        if any(self._failed_until.get(n, 0) > t for n in order):
            order = [n for n in order if self._failed_until.get(n, 0) <= t] + \
                    [n for n in order if self._failed_until.get(n, 0) > t]
        standby = sorted((n for n in fits if n not in order), key=lambda n: (self.limits[n].price_per_hour, n))
        return Route(input_tokens, predicted, bucket, clipped, order, standby=standby)

    def observe(self, input_tokens: int, output_tokens: int, max_tokens: int) -> None:
        self.predictor.observe(input_tokens, output_tokens, max_tokens)


def static_plan(pools: dict[str, int], max_tokens: int, message: str = "") -> Plan:
    """A plan without profiles: every bucket split across the pools in proportion to their replicas.

    The grid doubles from 32 tokens up to `max_tokens` (the largest context), so the ingress still records
    traffic per size bucket for the controller.
    """
    edges = [32]
    while edges[-1] < max_tokens:
        edges.append(edges[-1] * 2)
    live = {n: r for n, r in pools.items() if r > 0} or {n: 1 for n in pools}
    total = sum(live.values())
    shares = {n: r / total for n, r in live.items()}
    routing = {(i, j): dict(shares) for i in range(len(edges)) for j in range(len(edges))}
    return Plan(replicas=dict(pools), routing=routing, input_edges=edges, output_edges=list(edges),
                cost_per_hour=0.0, rate=0.0, status="static",
                message=message or "static plan: no profiles, traffic split by replicas")
