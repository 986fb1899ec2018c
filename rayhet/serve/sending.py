"""Sending: one request to the pools, in the route's order, until one answers.

The ingress (rayhet.serve.ingress) parses, tokenizes and routes a request; `Sender.first_answer` then
sends it: to pools with a running replica first (a pool Serve scaled to zero after them, a pool whose
replicas are gone or cannot start never), within each pool's admission bound (rayhet.admission), moving on
when a pool pushes back, fails, or loses its replicas while the request waits, sending a request whose
replica died once more (rayhet.serve.failures), and refusing (429, or 503 when nothing runs) with
Retry-After when no pool answers, or at `server.max_wait_s`. It returns the first answer: the whole
completion of a unary call, or the first delta of a stream.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, Callable

from rayhet.admission import Admission, Ticket
from rayhet.dispatch import Dispatcher
from rayhet.engines.base import GenerationRequest
from rayhet.routing import Route
from rayhet.serve.failures import Failure, classify, describe, param_of, safe_message
from rayhet.serve.health import can_serve
from rayhet.serve.openai_api import APIError
from rayhet.serve.pool import GenerationFailed

log = logging.getLogger("ray.serve")

WATCH_S = 0.5  # while a request waits for its first answer, how often the ingress checks its pool still has replicas


class Attempt:
    """A request opened on one pool: the call (a unary response or a response stream), its first answer (the
    first delta, or the whole completion), and the admission ticket it holds until it ends."""

    def __init__(self, pool: str, call: Any, first: Any, t_first: float, ticket: Ticket):
        self.pool, self.stream, self.first, self.t_first, self.ticket = pool, call, first, t_first, ticket


def cancel_quietly(call: Any) -> None:
    """Cancel a pool call we no longer wait for. Serve's cancel() re-raises the call's own failure when it
    already failed (a BackPressureError, say): that is not this request's error any more."""
    try:
        call.cancel()
    except Exception:  # noqa: BLE001
        pass


class PoolGone(Exception):
    """The pool a request waits on has no running replica any more (it moves on to the next pool)."""


class WaitedTooLong(Exception):
    """The request waited `server.max_wait_s` without a first answer."""


class Sender:
    """Sends requests to the pools' handles (see module docstring). `watcher` returns the ingress's
    PoolWatcher (or None outside Serve): the pools' states, read every second."""

    def __init__(self, handles: dict[str, Any], unary: dict[str, Any], dispatch: Dispatcher, admission: Admission,
                 max_wait_s: float, watcher: Callable[[], Any]):
        self._handles, self._unary = handles, unary
        self.dispatch, self.admission, self.max_wait_s = dispatch, admission, max_wait_s
        self._watcher = watcher

    @property
    def watcher(self):
        return self._watcher()

    @property
    def traffic(self):
        return self.dispatch.traffic

    def state(self, pool: str):
        states = self.watcher.states if self.watcher is not None else None
        return states.get(pool) if states else None

    def usable(self, pool: str) -> bool:
        """Whether a request may be sent to `pool`: what /health calls serving (rayhet.serve.health.can_serve:
        a running replica, or scaled to zero on purpose and starting one on demand); unknown states count as
        usable."""
        st = self.state(pool)
        return st is None or can_serve(st)[0]

    def running(self, pool: str) -> int | None:
        st = self.state(pool)
        return None if st is None else st.running

    def refusal(self, pools: list[str], reasons: list[str], status: int = 429) -> APIError:
        """The answer when no pool takes a request now: 429 (503 when no pool has a replica) with a
        Retry-After from the pools' queues (rayhet.admission)."""
        if pools and all(not self.usable(p) for p in pools):
            status = 503
        rates = self.traffic.completion_rates()
        retry = self.admission.retry_after_s(pools, rates)
        text = "no pool can take the request now (" + "; ".join(reasons or ["no pool"]) + ")"
        if status == 429:
            return APIError(429, text + f"; retry after {retry} s", "rate_limit_error", code="rate_limit_exceeded",
                            retry_after=retry)
        return APIError(503, text + f"; retry after {retry} s", "overloaded_error", code="overloaded",
                        retry_after=retry)

    def _call(self, pool: str, gen: GenerationRequest, stream: bool) -> tuple[Any, Any]:
        """(the call, an awaitable of its first answer): the whole completion, or the stream's first delta."""
        if stream:
            call = self._handles[pool].generate.remote(gen)
            return call, call.__anext__()
        call = self._unary[pool].complete.remote(gen)
        return call, call

    async def _wait_first(self, pool: str, first: Any, deadline: float, others: list[str]) -> Any:
        """The call's first answer; PoolGone as soon as the pool is seen without a running replica while one
        of the `others` still to try has one (with none, waiting for this pool to start is the best left);
        WaitedTooLong at the deadline."""
        task = asyncio.ensure_future(first)
        try:
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise WaitedTooLong()
                done, _ = await asyncio.wait({task}, timeout=min(WATCH_S, left))
                if done:
                    return task.result()
                if self.running(pool) == 0 and any((self.running(p) or 0) > 0 for p in others):
                    raise PoolGone()
        finally:
            if not task.done():
                task.cancel()

    async def first_answer(self, route: Route, gen: GenerationRequest, t0: float, stream: bool,
                           variants: dict[str, GenerationRequest] | None = None) -> Attempt:
        """Send the request to the route's pools in turn until one answers (spill-over on backpressure, on a
        pool without replicas, on failure); a request whose replica died is sent once more (see
        rayhet.serve.failures). Refused (429/503 with Retry-After) when none answers. `variants`: the request
        some pools get instead of `gen` (a tool request in the model's own format, for the pools that parse it)."""
        planned = self.dispatch.tries(route)
        order = self.dispatch.order(route, self.running, self.usable)
        if any(p not in order for p in planned) and self.watcher is not None and hasattr(self.watcher, "fresh"):
            # a pool looks down: read again (at most every 0.25 s, one read shared by all requests) before
            # leaving it out; the cached states may predate a replica that just started
            await self.watcher.fresh()
            order = self.dispatch.order(route, self.running, self.usable)
        reasons: list[str] = []
        prev: str | None = None
        retried = False
        deadline = t0 + self.max_wait_s
        k = 0
        while k < len(order):
            pool = order[k]
            if not self.admission.has_room(pool):  # full: a spill-over as if it had pushed back, without the call
                reasons.append(describe(pool, Failure.BUSY))
                prev = pool
                k += 1
                continue
            ticket = self.admission.enter(pool)
            self.dispatch.sent(pool, spilled_from=prev)
            call, first = self._call(pool, (variants or {}).get(pool, gen), stream)
            try:
                answer = await self._wait_first(pool, first, deadline, order[k + 1:])
                return Attempt(pool, call, answer, time.monotonic(), ticket)
            except asyncio.CancelledError:  # the client went away
                ticket.release()
                self.dispatch.cancelled(pool)
                cancel_quietly(call)
                raise
            except PoolGone:
                ticket.release()
                cancel_quietly(call)
                self.dispatch.pushed_back(pool)
                reasons.append(f"pool {pool} has no running replica")
            except WaitedTooLong:
                ticket.release()
                cancel_quietly(call)
                self.dispatch.pushed_back(pool)
                reasons.append(f"pool {pool} did not start it within {self.max_wait_s:g} s")
                raise self.refusal(order[k:], reasons, status=503) from None
            except StopAsyncIteration:
                ticket.release()
                self.dispatch.failed_midway(pool)
                reasons.append(f"pool {pool} returned nothing")
            except GenerationFailed as e:  # failed after its first token (unary): the engine, not the replica
                ticket.release()
                self.dispatch.failed_midway(pool)
                log.warning("rayhet ingress: pool %s failed mid-generation: %s", pool, e)
                raise APIError(500, "the engine failed mid-generation", "internal_error") from None
            except Exception as e:  # noqa: BLE001 - classified: invalid, busy, lost, failed
                ticket.release()
                failure = classify(e)
                if failure is Failure.INVALID:  # the engine says the request is wrong: no other pool differs
                    self.dispatch.pushed_back(pool)
                    raise APIError(400, safe_message(e), param=param_of(e)) from None
                if failure is Failure.BUSY:
                    self.dispatch.pushed_back(pool)
                else:
                    self.dispatch.failed(pool)
                    log.warning("rayhet ingress: pool %s: %s: %s", pool, failure.value, type(e).__name__)
                reasons.append(describe(pool, failure))
                if failure is Failure.LOST and not retried:
                    retried = True  # once: Serve's router has dropped the dead replica; another one, or the next pool
                    if (self.running(pool) or 0) >= 2 or k + 1 >= len(order):
                        continue
            prev = pool
            k += 1
        if not order:
            reasons.append("no pool that can serve it has a running replica")
        raise self.refusal(order or planned, reasons)
