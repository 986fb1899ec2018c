"""Targets: what a profiling run sends requests to — an engine in this process, or a rayhet pool over HTTP."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from contextlib import aclosing
from typing import TYPE_CHECKING, Protocol

from rayhet.engines.base import Engine, EngineError, GenerationRequest, SamplingParams
from rayhet.profiling.measure import RequestTiming

if TYPE_CHECKING:  # observe imports this module's targets at run time
    from rayhet.profiling.observe import Timed

# Text whose tokens make up the random prompts (any model's tokenizer gives a few dozen distinct ids).
_FILLER = (
    "The quick brown fox jumps over the lazy dog while seven wizards quietly judge boxing matches. "
    "Profiles measure how many requests per second one replica sustains under a latency objective, "
    "bucket by bucket, for prompts and outputs of many lengths; 0123456789 ,.;:!?()[]{}<>+-*/=%$#@&"
)
# Over HTTP the prompt is sent as token ids too; ids 3..258 exist in every vocabulary of 259+ tokens
# (the byte tokens of llama-style tokenizers, single characters elsewhere).
HTTP_TOKEN_IDS = list(range(3, 259))


class Target(Protocol):
    """Something that serves one request and fills its timing. `t0` is the run's time.monotonic() origin."""

    max_context: int
    max_batch: int  # requests served together (the warm-up fills them all)

    def token_ids(self) -> list[int]: ...

    async def send(self, prompt_ids: list[int], max_tokens: int, timing: RequestTiming, t0: float) -> None: ...

    async def wait_idle(self, timeout_s: float) -> bool:
        """Wait until requests of an earlier point are gone (cancelled ones included); False on timeout."""
        ...

    async def timed(self, prompt_ids: list[int], max_tokens: int, on_delta=None) -> "Timed":
        """One request with every delta timed (rayhet.profiling.observe); `on_delta(n_tokens)` per delta."""
        ...


class EngineTarget:
    """Drives an engine (rayhet.engines) in this process: no Ray, no HTTP, the engine's own timing."""

    def __init__(self, engine: Engine, temperature: float = 1.0):
        self.engine = engine
        self.max_context = engine.max_context
        self.max_batch = engine.max_batch
        self.temperature = temperature

    def token_ids(self) -> list[int]:
        special = set(self.engine.tokenize(""))  # BOS and the like, if the tokenizer adds them
        ids = sorted(set(self.engine.tokenize(_FILLER)) - special)
        return ids

    async def wait_idle(self, timeout_s: float) -> bool:
        # Cancelled requests leave the engine's queue only when its step loop gets to them; a point that
        # starts before would measure the last one's backlog.
        deadline = time.monotonic() + timeout_s
        while True:
            s = self.engine.stats()
            if s.running == 0 and s.waiting == 0:
                return True
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(0.02)

    async def timed(self, prompt_ids: list[int], max_tokens: int, on_delta=None):
        from rayhet.profiling.observe import Timed

        request = GenerationRequest(
            request_id=f"observe-{uuid.uuid4().hex[:12]}", prompt_token_ids=prompt_ids,
            sampling=SamplingParams(max_tokens=max_tokens, temperature=self.temperature, ignore_eos=True),
            arrival_time=time.monotonic())
        out = Timed(time.monotonic(), [])
        async with aclosing(self.engine.generate(request)) as stream:
            async for delta in stream:
                if delta.token_ids:
                    out.deltas.append((time.monotonic(), len(delta.token_ids)))
                    if on_delta is not None:
                        on_delta(len(delta.token_ids))
        return out

    async def send(self, prompt_ids: list[int], max_tokens: int, timing: RequestTiming, t0: float) -> None:
        request = GenerationRequest(
            request_id=f"profile-{uuid.uuid4().hex[:12]}",
            prompt_token_ids=prompt_ids,
            sampling=SamplingParams(max_tokens=max_tokens, temperature=self.temperature, ignore_eos=True),
            arrival_time=t0 + timing.arrival,
        )
        n = 0
        try:
            async with aclosing(self.engine.generate(request)) as stream:
                async for delta in stream:
                    if delta.token_ids and timing.first_token is None:
                        timing.first_token = (delta.first_token_time or time.monotonic()) - t0
                    n += len(delta.token_ids)
                    if delta.finish_reason is not None:
                        if delta.finish_reason in ("abort", "error"):
                            timing.error = f"finish_reason={delta.finish_reason}"
                        if delta.usage is not None:
                            n = delta.usage.completion_tokens
        except EngineError as e:
            timing.error = f"{type(e).__name__}: {e}"
            return
        timing.end = time.monotonic() - t0
        timing.output_tokens = n


class HttpTarget:
    """Drives a running rayhet ingress (or any OpenAI-compatible server accepting `ignore_eos`) by
    streaming /v1/completions with token-id prompts."""

    def __init__(self, url: str, model: str, max_context: int, max_batch: int = 8, timeout_s: float = 600.0,
                 transport=None):
        import httpx  # only the HTTP mode needs it

        self.max_batch = max_batch
        self.url = url.rstrip("/") + "/v1/completions"
        self.model = model
        self.max_context = max_context
        self.client = httpx.AsyncClient(
            timeout=httpx.Timeout(timeout_s, connect=10.0), transport=transport,
            limits=httpx.Limits(max_connections=None, max_keepalive_connections=64),
        )

    def token_ids(self) -> list[int]:
        return HTTP_TOKEN_IDS

    async def wait_idle(self, timeout_s: float) -> bool:
        return True  # the server's queue is not visible from here; closed streams cancel their requests

    async def send(self, prompt_ids: list[int], max_tokens: int, timing: RequestTiming, t0: float) -> None:
        import httpx

        body = {
            "model": self.model,
            "prompt": prompt_ids,
            "max_tokens": max_tokens,
            "ignore_eos": True,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        n, usage = 0, None
        try:
            async with self.client.stream("POST", self.url, json=body) as r:
                if r.status_code != 200:
                    timing.error = f"HTTP {r.status_code}: {(await r.aread())[:200]!r}"
                    return
                async for line in r.aiter_lines():
                    if not line.startswith("data:") or line.strip() == "data: [DONE]":
                        continue
                    chunk = json.loads(line[5:])
                    if chunk.get("usage"):
                        usage = chunk["usage"].get("completion_tokens")
                    for choice in chunk.get("choices") or []:
                        if choice.get("text"):
                            if timing.first_token is None:
                                timing.first_token = time.monotonic() - t0
                            n += 1
        except (httpx.HTTPError, json.JSONDecodeError) as e:
            timing.error = f"{type(e).__name__}: {e}"
            return
        timing.end = time.monotonic() - t0
        timing.output_tokens = usage if usage is not None else n

    async def timed(self, prompt_ids: list[int], max_tokens: int, on_delta=None):
        """Streams with vLLM's `continuous_usage_stats` (rayhet's ingress honours it too), so each chunk says
        how many tokens came so far; a server that ignores it is counted one token per chunk."""
        from rayhet.profiling.observe import Timed

        body = {"model": self.model, "prompt": prompt_ids, "max_tokens": max_tokens, "ignore_eos": True,
                "stream": True, "stream_options": {"include_usage": True, "continuous_usage_stats": True}}
        out = Timed(time.monotonic(), [])
        seen = 0
        async with self.client.stream("POST", self.url, json=body) as r:
            if r.status_code != 200:
                raise EngineError(f"HTTP {r.status_code}: {(await r.aread())[:200]!r}")
            async for line in r.aiter_lines():
                if not line.startswith("data:") or line.strip() == "data: [DONE]":
                    continue
                chunk = json.loads(line[5:])
                if not any(c.get("text") for c in chunk.get("choices") or []):
                    continue
                usage = (chunk.get("usage") or {}).get("completion_tokens")
                n = usage - seen if usage is not None else 1
                seen += n
                if n > 0:
                    out.deltas.append((time.monotonic(), n))
                    if on_delta is not None:
                        on_delta(n)
        return out

    async def aclose(self) -> None:
        await self.client.aclose()
