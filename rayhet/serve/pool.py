"""Pool replica: a plain class wrapping one Engine, made a Serve deployment (one per pool) by the builder.

The engine starts in the (async) constructor, so a replica is only ready once its model is loaded;
Serve's health check calls the engine's. Two ways to ask for a generation, because every Serve message
costs (a vLLM pool was at 81% of LLM.generate when each delta was one):
- `complete` (unary handle call, non-streamed requests): the whole result in ONE message, with the
  timings the ingress needs for its traffic records (TTFT, TPOT), measured here; the engine is asked for
  the final result only (`stream=False`: vLLM then makes no intermediate outputs at all);
- `generate` (streaming handle call, `stream: true`): GenerationDelta objects, where each message carries
  every delta the engine produced since the last one was sent (the first goes out alone, at once).
`stats` returns the replica's own counters, which tests and the controller read.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from dataclasses import dataclass, replace
from typing import Any, AsyncIterator

from rayhet.config import EMBEDDED_MODEL, engine_classes
from rayhet.engines.base import EngineError, GenerationDelta, GenerationRequest, ParsedReply, Usage

log = logging.getLogger("ray.serve")

_END = object()  # end of the engine's stream (in the coalescing queue)


class GenerationFailed(EngineError):
    """The engine failed after the first token of a unary `complete`: too late to spill to another pool."""


@dataclass
class Completion:
    """A whole generation, one Serve message. Times are durations measured in the replica (clocks of different
    nodes are not comparable): `ttft_s` from the call's arrival here to the first token, `decode_s` from the
    first token to the last, `total_s` from arrival to return."""

    text: str
    token_ids: list[int]
    finish_reason: str | None
    usage: Usage | None
    ttft_s: float
    decode_s: float
    total_s: float
    logprobs: list | None = None  # TokenLogprob per token, when asked for
    prompt_logprobs: list | None = None  # TokenLogprob per prompt token, when asked for (echo)
    parsed: ParsedReply | None = None  # the engine's tool-call parser's reading, for a request with tools


def merge(deltas: list[GenerationDelta]) -> GenerationDelta:
    """One delta carrying several in order: texts and token ids joined, the last one's finish and usage."""
    if len(deltas) == 1:
        return deltas[0]
    last = deltas[-1]
    first_time = next((d.first_token_time for d in deltas if d.first_token_time is not None), None)
    lps = [lp for d in deltas for lp in (d.logprobs or [])]
    prompt_lps = [lp for d in deltas for lp in (d.prompt_logprobs or [])]
    return GenerationDelta(text="".join(d.text for d in deltas), token_ids=[t for d in deltas for t in d.token_ids],
                           finish_reason=last.finish_reason, usage=last.usage, first_token_time=first_time,
                           logprobs=lps if any(d.logprobs is not None for d in deltas) else None,
                           prompt_logprobs=prompt_lps if any(d.prompt_logprobs is not None for d in deltas) else None,
                           parsed=last.parsed)


def resolve_model_path(settings: dict[str, Any]) -> dict[str, Any]:
    """Replace the embedded-model marker by the tiny GGUF, generated here on first use (and cached)."""
    if settings.get("model_path") == EMBEDDED_MODEL:
        from rayhet.models import default_model_path

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
        try:
            await self.engine.start()
        except EngineError as e:  # a replica of which pool: the log of a failed start names no deployment's args
            raise EngineError(f"pool {pool}: {e}") from e
        self._counters = {"requests": 0, "ok": 0, "errors": 0, "prompt_tokens": 0, "completion_tokens": 0,
                          "cancelled": 0}
        log.info("rayhet pool %s: %s engine ready in %.2f s (pid %d)", pool, engine, time.monotonic() - t0, os.getpid())

    async def complete(self, request: GenerationRequest) -> Completion:
        """The whole generation in one reply (unary handle call). Errors before the first token propagate as
        the engine raised them (the ingress may spill to another pool); later ones as GenerationFailed."""
        c = self._counters
        c["requests"] += 1
        t0 = time.monotonic()
        parts: list[str] = []
        ids: list[int] = []
        lps: list | None = None
        prompt_lps: list | None = None
        finish, usage, parsed, t_first, t_last = None, None, None, None, t0
        try:
            # stream=False lets the engine skip intermediate outputs (vLLM: one final output)
            async with contextlib.aclosing(self.engine.generate(replace(request, stream=False))) as stream:
                async for d in stream:
                    t_last = time.monotonic()
                    if t_first is None and d.token_ids:
                        t_first = d.first_token_time if d.first_token_time is not None else t_last
                    parts.append(d.text)
                    ids.extend(d.token_ids)
                    if d.logprobs is not None:
                        lps = lps if lps is not None else []
                        lps.extend(d.logprobs)
                    if d.prompt_logprobs is not None:
                        prompt_lps = (prompt_lps or []) + d.prompt_logprobs  # (once: on the first delta)
                    if d.finish_reason is not None:
                        finish, usage, parsed = d.finish_reason, d.usage, d.parsed
        except asyncio.CancelledError:
            c["cancelled"] += 1
            raise
        except Exception as e:
            c["errors"] += 1
            if t_first is None:
                raise
            raise GenerationFailed(f"the engine failed after {len(ids)} tokens: {type(e).__name__}: {e}") from e
        if usage is not None:
            c["prompt_tokens"] += usage.prompt_tokens
            c["completion_tokens"] += usage.completion_tokens
        c["ok"] += 1
        t_first = t_last if t_first is None else t_first
        return Completion("".join(parts), ids, finish, usage, ttft_s=max(0.0, t_first - t0), decode_s=t_last - t_first,
                          total_s=time.monotonic() - t0, logprobs=lps, prompt_logprobs=prompt_lps, parsed=parsed)

    async def generate(self, request: GenerationRequest) -> AsyncIterator[GenerationDelta]:
        """Stream the engine's deltas (streaming handle call), coalesced: the engine runs ahead in a task while
        Serve sends, and each message carries all it produced meanwhile. Counts the request in the counters."""
        c = self._counters
        c["requests"] += 1
        queue: asyncio.Queue = asyncio.Queue()
        producer = asyncio.get_running_loop().create_task(self._produce(request, queue))
        done = False
        try:
            while True:
                batch = [await queue.get()]
                while not queue.empty() and isinstance(batch[-1], GenerationDelta):
                    batch.append(queue.get_nowait())
                end = batch[-1]
                deltas = batch if isinstance(end, GenerationDelta) else batch[:-1]
                if deltas:
                    delta = merge(deltas)
                    if delta.usage is not None:
                        c["prompt_tokens"] += delta.usage.prompt_tokens
                        c["completion_tokens"] += delta.usage.completion_tokens
                        done = True
                    yield delta
                if end is _END:
                    break
                if isinstance(end, BaseException):
                    raise end
            c["ok"] += 1
        except (GeneratorExit, asyncio.CancelledError):
            c["cancelled"] += 1
            raise
        except BaseException:
            if not done:
                c["errors"] += 1
            raise
        finally:
            if not producer.done():  # the caller went away: cancelling the task closes the engine's stream
                producer.cancel()

    async def _produce(self, request: GenerationRequest, queue: asyncio.Queue) -> None:
        try:
            async with contextlib.aclosing(self.engine.generate(request)) as stream:
                async for d in stream:
                    queue.put_nowait(d)
            queue.put_nowait(_END)
        except Exception as e:  # noqa: BLE001 - handed to the consumer, which raises it to the caller
            queue.put_nowait(e)

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
