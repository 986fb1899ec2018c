"""FakeEngine: a TEST DOUBLE of the engine protocol (no model) for logic tests and the ingress benchmark.

It "generates" the letter 'a' per token (or the bytes of a given `output_text`) at a configured speed, tokenizes
one token per UTF-8 byte, has bounded batch slots and a bounded waiting queue (EngineOverloadedError beyond
it), and can be told to fail. With `tool_call_parser: test_hermes` it stands for a vLLM pool with a tool-call
parser: a request with tools gets its whole output parsed by rayhet.testing.tool_parser. Never used to serve users: the config accepts `engine: fake` only so tests and benchmarks can run
the real serving app around it.
"""

from __future__ import annotations

import asyncio
import codecs
import time
from typing import AsyncIterator, Literal

from pydantic import BaseModel, ConfigDict, Field

from rayhet.engines.base import (
    EngineError,
    EngineOverloadedError,
    EngineStats,
    GenerationDelta,
    GenerationRequest,
    Usage,
    check_fits,
    check_no_tools,
)
from rayhet.engines.text import ByteTokenizer  # noqa: F401  (also this module's name for it)
from rayhet.testing.tool_parser import TEST_PARSER, parse_hermes_for_tests


class FakeEngineSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    max_context: int = Field(4096, ge=2, description="Prompt + max_tokens must fit.")
    n_slots: int = Field(8, ge=1, description="Concurrent generations (batch slots).")
    max_waiting: int = Field(64, ge=0, description="Requests waiting for a slot before EngineOverloadedError.")
    ttft_s: float = Field(0.0, ge=0, description="Delay before the first token.")
    tpot_s: float = Field(0.0, ge=0, description="Delay between steps (one step: tokens_per_step tokens).")
    tokens_per_step: int = Field(
        1, ge=1, description="Tokens per step, sent as one delta (as vLLM's stream_interval): a fast engine that "
        "benchmarks can use to saturate Serve.")
    natural_output_tokens: int | None = Field(
        None, ge=1, description="Stop ('stop') after this many tokens unless max_tokens is lower or ignore_eos."
    )
    start_s: float = Field(0.0, ge=0, description="Seconds start() takes: a replica that is still starting for a "
                           "while, as vLLM's 60-90 s.")
    output_text: str | None = Field(
        None, description="What every generation writes (one token per UTF-8 byte, 'stop' at its end, cut at "
        "max_tokens); default: 'a' per token.")
    tool_call_parser: Literal["test_hermes"] | None = Field(
        None, description="Parse the output of a request with tools as vLLM's hermes parser would (a test "
        "double of a vLLM pool's tool_call_parser).")
    fail: bool = Field(False, description="Every generation raises EngineError (to test spill-over).")
    unhealthy: bool = Field(False, description="check_health raises.")
    model_path: str | None = Field(None, description="Ignored (accepted so configs can share settings).")


class FakeEngine:
    """Engine protocol, fake tokens (see module docstring)."""

    def __init__(self, settings: FakeEngineSettings | None = None):
        self.settings = settings or FakeEngineSettings()
        self.max_context = self.settings.max_context
        self.max_batch = self.settings.n_slots
        self._slots = asyncio.Semaphore(self.settings.n_slots)
        self._tok = ByteTokenizer()
        self._stats = EngineStats(max_running=self.settings.n_slots)
        self.started = False

    async def start(self) -> None:
        await asyncio.sleep(self.settings.start_s)
        self.started = True

    def render_chat(self, messages: list[dict]) -> str:
        return self._tok.render_chat(messages)

    def tokenize(self, text: str) -> list[int]:
        return self._tok.encode(text)

    def count_tokens(self, text: str) -> int:
        return len(self._tok.encode(text))

    async def generate(self, request: GenerationRequest) -> AsyncIterator[GenerationDelta]:
        s = request.sampling.validate()
        if self.settings.tool_call_parser != TEST_PARSER:
            check_no_tools(request)
        if request.prompt_token_ids is not None:
            ids = list(request.prompt_token_ids)
        elif request.messages is not None:
            ids = self.tokenize(self.render_chat(request.messages))
        else:
            ids = self.tokenize(request.prompt or "")
        check_fits(len(ids), s.max_tokens, self.max_context)
        if self._stats.waiting >= self.settings.max_waiting and self._slots.locked():
            raise EngineOverloadedError("fake engine queue is full")
        self._stats.requests_total += 1
        if self.settings.fail:
            self._stats.requests_failed += 1
            raise EngineError("fake engine told to fail")
        self._stats.waiting += 1
        try:
            await self._slots.acquire()
        finally:
            self._stats.waiting -= 1
        self._stats.running += 1
        try:
            n = s.max_tokens
            finish = "length"
            out = list(self.settings.output_text.encode()) if self.settings.output_text is not None else None
            if out is not None and len(out) <= n:
                n, finish = len(out), "stop"
            if self.settings.natural_output_tokens is not None and not s.ignore_eos \
                    and self.settings.natural_output_tokens < n:
                n, finish = self.settings.natural_output_tokens, "stop"
            decoder, written = codecs.getincrementaldecoder("utf-8")(errors="replace"), []
            if self.settings.ttft_s:
                await asyncio.sleep(self.settings.ttft_s)
            first = time.monotonic()
            self._stats.prompt_tokens_total += len(ids)
            step = self.settings.tokens_per_step
            for k in range(0, n, step):
                if k and self.settings.tpot_s:
                    await asyncio.sleep(self.settings.tpot_s)
                m = min(step, n - k)
                last = k + m >= n
                self._stats.generated_tokens_total += m
                tokens = [97] * m if out is None else out[k:k + m]
                written.append(decoder.decode(bytes(tokens), final=last))
                yield GenerationDelta(
                    text=written[-1], token_ids=tokens, first_token_time=first,
                    finish_reason=finish if last else None,  # type: ignore[arg-type]
                    usage=Usage(len(ids), n) if last else None,
                    parsed=parse_hermes_for_tests("".join(written)) if last and request.tools is not None else None,
                )
        finally:
            self._stats.running -= 1
            self._slots.release()

    async def check_health(self) -> None:
        if self.settings.unhealthy:
            raise EngineError("fake engine told to be unhealthy")

    def stats(self) -> EngineStats:
        return EngineStats(**vars(self._stats))

    async def shutdown(self) -> None:
        self.started = False
