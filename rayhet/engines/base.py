"""Engine protocol: what every serving engine (llama.cpp on CPUs, vLLM on GPUs) offers a pool replica.

Engines know nothing of Ray. A pool replica owns one engine, starts it in its constructor, and streams
`generate()` deltas to the ingress. Every generation call is an async generator, as in Ray Serve LLM.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import AsyncIterator, Literal, Protocol, runtime_checkable

from rayhet.errors import RayhetError

FinishReason = Literal["stop", "length", "abort", "error"]


class EngineError(RayhetError):
    """The engine failed while serving (internal error: 5xx)."""


class InvalidRequestError(EngineError, ValueError):
    """The request itself is wrong (bad sampling value, prompt + max_tokens over the context): 4xx."""

    def __init__(self, message: str, param: str | None = None):
        super().__init__(message)
        self.param = param


class EngineOverloadedError(EngineError):
    """The engine's bounded waiting queue is full: the caller should retry elsewhere (backpressure)."""


@dataclass
class TokenLogprob:
    """A token's log-probability under the model given the tokens before it (before temperature, penalties and
    constraints, as vLLM reports by default), with the most likely tokens at that position in `top` (theirs
    empty). The first token of a prompt has none: nothing comes before it (logprob None, top empty)."""

    token: str  # its text (a token that is part of a UTF-8 character shows replacement characters; see bytes)
    bytes: list[int]
    logprob: float | None
    top: list["TokenLogprob"] = field(default_factory=list)


MAX_TOP_LOGPROBS = 20  # OpenAI's bound on top_logprobs (chat)


@dataclass
class SamplingParams:
    """Per-request sampling settings (OpenAI names)."""

    max_tokens: int = 16
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int | None = None
    stop: list[str] = field(default_factory=list)
    presence_penalty: float = 0.0  # OpenAI's: over the tokens generated so far, as vLLM applies them
    frequency_penalty: float = 0.0
    # OpenAI's response_format: json_object (any JSON object) or a JSON schema the output must validate against;
    # each engine constrains its sampling to it (llama.cpp: a grammar from the schema; vLLM: structured outputs)
    json_object: bool = False
    json_schema: dict | None = None
    logprobs: int | None = None  # None: none; k >= 0: each generated token's logprob and the k most likely
    # the same for every prompt token (OpenAI's echo with logprobs: a prompt scored); None keeps its cost off
    prompt_logprobs: int | None = None
    ignore_eos: bool = False  # keep generating past EOS: profiling needs exact output lengths

    def validate(self) -> "SamplingParams":
        """Raise InvalidRequestError naming the parameter if a value is out of range."""
        if not isinstance(self.max_tokens, int) or isinstance(self.max_tokens, bool) or self.max_tokens < 1:
            raise InvalidRequestError(f"max_tokens must be an integer >= 1, got {self.max_tokens!r}", "max_tokens")
        if not _finite(self.temperature) or not 0 <= self.temperature <= 2:
            raise InvalidRequestError(f"temperature must be in [0, 2], got {self.temperature!r}", "temperature")
        if not _finite(self.top_p) or not 0 < self.top_p <= 1:
            raise InvalidRequestError(f"top_p must be in (0, 1], got {self.top_p!r}", "top_p")
        for name in ("presence_penalty", "frequency_penalty"):
            v = getattr(self, name)
            if not _finite(v) or not -2 <= v <= 2:
                raise InvalidRequestError(f"{name} must be in [-2, 2], got {v!r}", name)
        if self.seed is not None and (not isinstance(self.seed, int) or isinstance(self.seed, bool)):
            raise InvalidRequestError(f"seed must be an integer, got {self.seed!r}", "seed")
        if self.logprobs is not None and (not isinstance(self.logprobs, int) or isinstance(self.logprobs, bool)
                                          or not 0 <= self.logprobs <= MAX_TOP_LOGPROBS):
            raise InvalidRequestError(f"top_logprobs must be an integer in [0, {MAX_TOP_LOGPROBS}], "
                                      f"got {self.logprobs!r}", "top_logprobs")
        if self.prompt_logprobs is not None and (not isinstance(self.prompt_logprobs, int)
                                                 or isinstance(self.prompt_logprobs, bool)
                                                 or not 0 <= self.prompt_logprobs <= MAX_TOP_LOGPROBS):
            raise InvalidRequestError(f"prompt_logprobs must be an integer in [0, {MAX_TOP_LOGPROBS}], "
                                      f"got {self.prompt_logprobs!r}", "logprobs")
        if self.json_schema is not None and not isinstance(self.json_schema, dict):
            raise InvalidRequestError("response_format.json_schema.schema must be a JSON object",
                                      "response_format.json_schema.schema")
        if isinstance(self.stop, str):
            self.stop = [self.stop]
        if len(self.stop) > 4 or any(not isinstance(s, str) or not s for s in self.stop):
            raise InvalidRequestError("stop must be up to 4 non-empty strings", "stop")
        return self


def _finite(x: object) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def check_fits(prompt_tokens: int, max_tokens: int, max_context: int) -> None:
    """Raise InvalidRequestError unless a non-empty prompt plus max_tokens fits the context (OpenAI's 400)."""
    if prompt_tokens < 1:
        raise InvalidRequestError("the prompt is empty", "prompt")
    need = prompt_tokens + max_tokens
    if need > max_context:
        raise InvalidRequestError(f"prompt ({prompt_tokens} tokens) + max_tokens ({max_tokens}) = {need} exceeds "
                                  f"the context of {max_context} tokens", "max_tokens")


def check_one_prompt(prompt: object, prompt_token_ids: object, messages: object) -> None:
    """Raise InvalidRequestError unless exactly one of the three prompt forms is given."""
    if sum(x is not None for x in (prompt, prompt_token_ids, messages)) != 1:
        raise InvalidRequestError("give exactly one of prompt, prompt_token_ids or messages", "prompt")


def check_token_ids(ids: list, vocab_size: int) -> list[int]:
    """The ids as a list, or InvalidRequestError if one is not an integer in [0, vocab_size) (bools are not ids)."""
    ids = list(ids)
    bad = [t for t in ids if not isinstance(t, int) or isinstance(t, bool) or not 0 <= t < vocab_size]
    if bad:
        raise InvalidRequestError(f"the prompt holds token ids outside [0, {vocab_size}) (the model's vocabulary): "
                                  f"{bad[:5]}", "prompt_token_ids")
    return ids


def check_no_tools(request: "GenerationRequest") -> None:
    """For engines without a tool-call parser: refuse a request that asks to parse tool calls (the ingress
    sends tools to such pools through structured output instead, so this is a caller's bug made clear)."""
    if request.tools is not None:
        raise InvalidRequestError("this pool has no tool-call parser (tool_call_parser): send tools through "
                                  "structured output", "tools")


@dataclass
class ToolCall:
    """A function call an engine's tool-call parser read from the output (an item of OpenAI's `tool_calls`)."""

    id: str
    name: str
    arguments: str  # JSON text, as OpenAI sends it


@dataclass
class ParsedReply:
    """A whole output as an engine's tool-call parser reads it: the calls (none when the model answered in
    text) and the text left besides them (None when there is none)."""

    content: str | None
    tool_calls: list[ToolCall] = field(default_factory=list)


@dataclass
class GenerationRequest:
    """One request. Exactly one of `prompt`, `prompt_token_ids` or `messages` (chat, rendered with the
    model's own chat template) is given."""

    request_id: str
    prompt: str | None = None
    prompt_token_ids: list[int] | None = None
    messages: list[dict] | None = None
    sampling: SamplingParams = field(default_factory=SamplingParams)
    arrival_time: float = field(default_factory=time.monotonic)
    # False: the caller wants only the whole result, so an engine may send one final delta instead of a
    # stream (vLLM then skips every intermediate output, as its own server does for non-streamed requests).
    # That delta must still carry `first_token_time`.
    stream: bool = True
    # Functions offered to the engine's own tool-call parser (OpenAI function objects: name, description,
    # parameters), the prompt already rendered with them by the model's template: the engine parses the whole
    # output into ParsedReply. None: no parsing. Only tool_choice "auto" comes this way (the ingress holds
    # "required" and a named function to their calls by structured output instead), so no tool_choice here.
    tools: list[dict] | None = None


@dataclass
class Usage:
    prompt_tokens: int
    completion_tokens: int

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass
class GenerationDelta:
    """A piece of a streamed generation. The last delta has `finish_reason` and `usage` set."""

    text: str
    token_ids: list[int]
    finish_reason: FinishReason | None = None
    usage: Usage | None = None
    first_token_time: float | None = None  # time.monotonic() of the first output token; set once known
    logprobs: list[TokenLogprob] | None = None  # one per token id, when the request asked for them
    # one per prompt token, the first with logprob None, when the request asked (sampling.prompt_logprobs): on
    # the first delta only
    prompt_logprobs: list[TokenLogprob] | None = None
    # on the last delta of a request with `tools`: the engine's tool-call parser's reading of the whole output
    # (whose text the deltas still carry as generated)
    parsed: ParsedReply | None = None


@dataclass
class EngineStats:
    """Live counters a replica exports (and the controller reads)."""

    running: int = 0
    waiting: int = 0
    max_running: int = 0  # batch slots
    tokens_per_s: float = 0.0  # generated tokens/s over the last few seconds
    kv_usage: float = 0.0  # fraction of KV cache in use, 0..1
    requests_total: int = 0
    requests_failed: int = 0
    prompt_tokens_total: int = 0
    generated_tokens_total: int = 0


@runtime_checkable
class Engine(Protocol):
    """The interface a pool replica drives. `start()` before anything else; `shutdown()` frees it all."""

    max_context: int  # prompt + max_tokens must fit
    max_batch: int  # sequences decoded together (batch slots)

    async def start(self) -> None: ...

    def generate(self, request: GenerationRequest) -> AsyncIterator[GenerationDelta]:
        """Stream deltas. Closing the iterator early (client gone) cancels the request and frees its slot."""
        ...

    def render_chat(self, messages: list[dict]) -> str:
        """The prompt text the model's own chat template makes of `messages`."""
        ...

    def tokenize(self, text: str) -> list[int]: ...

    def count_tokens(self, text: str) -> int: ...

    async def check_health(self) -> None:
        """Raise EngineError if the engine cannot serve."""
        ...

    def stats(self) -> EngineStats: ...

    async def shutdown(self) -> None: ...
