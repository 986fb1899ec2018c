"""vLLM's terms and ours: our sampling settings as vLLM's keyword arguments, vLLM's request outputs as our
deltas (text, token ids, logprobs, prompt logprobs, usage, finish reason), its tool parsers' readings as our
parsed replies, and vLLM's exceptions as our errors.
Pure: no vLLM import, so every translation is tested without a GPU (tests/unit/test_vllm_logic.py)."""

from __future__ import annotations

import time
import uuid
from typing import Any, Callable

from rayhet.engines.base import (
    EngineError,
    FinishReason,
    GenerationDelta,
    InvalidRequestError,
    ParsedReply,
    SamplingParams,
    TokenLogprob,
    ToolCall,
    Usage,
)


# -- requests ------------------------------------------------------------------------------------
def sampling_kwargs(s: SamplingParams) -> dict[str, Any]:
    """Our sampling settings as vllm.SamplingParams keyword arguments (output_kind is added by the engine)."""
    kw: dict[str, Any] = {
        "n": 1,
        "max_tokens": s.max_tokens,
        "temperature": float(s.temperature),
        "top_p": float(s.top_p),
        "presence_penalty": float(s.presence_penalty),
        "frequency_penalty": float(s.frequency_penalty),
        "ignore_eos": bool(s.ignore_eos),
        "skip_special_tokens": True,
    }
    if s.seed is not None:
        kw["seed"] = s.seed
    if s.stop:
        kw["stop"] = list(s.stop)
    if s.logprobs is not None:
        kw["logprobs"] = s.logprobs
    if s.prompt_logprobs is not None:
        kw["prompt_logprobs"] = s.prompt_logprobs
    if s.json_schema is not None or s.json_object:  # made a vllm StructuredOutputsParams by the engine
        kw["structured_outputs"] = {"json": s.json_schema} if s.json_schema is not None else {"json_object": True}
    return kw


_FINISH: dict[str | None, FinishReason] = {"stop": "stop", "length": "length", "abort": "abort", "error": "error"}


def finish_reason_of(reason: str | None) -> FinishReason:
    """vLLM's finish reason in our vocabulary (an unknown one is a stop: the engine ended it on its own)."""
    return _FINISH.get(reason, "stop")


class DeltaBuilder:
    """Turns one request's vLLM RequestOutputs (output_kind DELTA, or FINAL_ONLY: one output holding it
    all) into GenerationDeltas.

    Counts completion tokens from the deltas themselves (exact), takes the prompt length from the first
    output that carries it, and stamps the first token's time: when its delta arrived here, or, for a
    final-only output, the engine core's own stamp (`metrics.first_token_ts`, time.monotonic() in the
    engine's process on this machine: the same clock).
    """

    def __init__(self, prompt_tokens: int, clock: Callable[[], float] = time.monotonic, top_logprobs: int | None = None,
                 prompt_top_logprobs: int | None = None, decode: Callable[[int], str] = lambda t: ""):
        self.prompt_tokens = prompt_tokens
        self.top_logprobs = top_logprobs  # as the request asked (None: no logprobs)
        self.prompt_top_logprobs = prompt_top_logprobs  # the same for the prompt's tokens
        self._decode = decode  # a token's text: vLLM gives none for the first prompt token (it has no logprob)
        self.completion_tokens = 0
        self.first_token_time: float | None = None
        self.finished = False
        self._clock = clock

    def feed(self, out: Any) -> GenerationDelta | None:
        """The delta for one RequestOutput, or None when it carries nothing (no tokens, not finished)."""
        comp = out.outputs[0] if out.outputs else None
        ids = list(comp.token_ids) if comp is not None and comp.token_ids is not None else []
        text = comp.text if comp is not None and comp.text else ""
        if getattr(out, "prompt_token_ids", None):
            self.prompt_tokens = len(out.prompt_token_ids)
        if ids and self.first_token_time is None:
            stamped = getattr(getattr(out, "metrics", None), "first_token_ts", 0.0) or 0.0
            # A final-only output arrives at the end: only the engine's own stamp says when the first came.
            self.first_token_time = stamped if out.finished and stamped > 0 else self._clock()
        self.completion_tokens += len(ids)
        done = bool(out.finished)
        prompt_lps = self._prompt_logprobs(out)
        if not ids and not text and not done and prompt_lps is None:
            return None
        delta = GenerationDelta(text=text, token_ids=ids, first_token_time=self.first_token_time,
                                prompt_logprobs=prompt_lps)
        if self.top_logprobs is not None and comp is not None and comp.logprobs is not None:
            delta.logprobs = [_token_logprob(t, step, self.top_logprobs) for t, step in zip(ids, comp.logprobs)]
        if done:
            self.finished = True
            delta.finish_reason = finish_reason_of(comp.finish_reason if comp is not None else None)
            delta.usage = Usage(self.prompt_tokens, self.completion_tokens)
        return delta

    def _prompt_logprobs(self, out: Any) -> list[TokenLogprob] | None:
        """vLLM's prompt logprobs (None for the first position, then {token id: Logprob} per prompt token) as
        ours, when asked for; vLLM sends them once (on the first output of the request)."""
        steps, ids = getattr(out, "prompt_logprobs", None), getattr(out, "prompt_token_ids", None)
        if self.prompt_top_logprobs is None or not steps or not ids:
            return None
        k = self.prompt_top_logprobs
        return [_token_logprob(t, step, k) if step is not None else _unscored(self._decode(t))
                for t, step in zip(ids, steps)]


def _unscored(text: str) -> TokenLogprob:
    """A prompt's first token: nothing comes before it to score it by."""
    return TokenLogprob(text, list(text.encode("utf-8")), None)


def _token_logprob(token: int, step: dict, k: int) -> TokenLogprob:
    """One position of vLLM's logprobs ({token id: Logprob(logprob, rank, decoded_token)}: the sampled token
    and the k most likely) as ours."""
    def entry(t: int, lp: Any) -> TokenLogprob:
        text = lp.decoded_token or ""
        return TokenLogprob(text, list(text.encode("utf-8")), float(lp.logprob))

    out = entry(token, step[token])
    out.top = [entry(t, lp) for t, lp in sorted(step.items(), key=lambda kv: -kv[1].logprob)[:k]]
    return out


# -- tool calls ----------------------------------------------------------------------------------
def tool_parser_request(functions: list[dict]) -> dict:
    """The data of the vLLM ChatCompletionRequest a tool parser is given with the output: the request's tools
    and tool_choice auto (the only choice sent to a parser). No messages: the prompt is already rendered."""
    return {"messages": [], "tools": [{"type": "function", "function": f} for f in functions], "tool_choice": "auto"}


def parsed_reply(info: Any, text: str) -> ParsedReply:
    """vLLM's ExtractedToolCallInformation (tools_called, tool_calls: [ToolCall(id, function=FunctionCall(name,
    arguments))], content) for the output `text`, as ours. No calls: the whole text is the answer (what
    vLLM's parsers return as content then, and what they fall back to on a call they cannot read)."""
    if not info.tools_called or not info.tool_calls:
        return ParsedReply(content=text if info.content is None else info.content)
    calls = [ToolCall(id=getattr(tc, "id", None) or f"call_{uuid.uuid4().hex[:24]}", name=tc.function.name,
                      arguments=tc.function.arguments) for tc in info.tool_calls]
    return ParsedReply(content=info.content or None, tool_calls=calls)  # OpenAI: null content beside calls


def unknown_tool_parser(name: str, available: list[str]) -> EngineError:
    """The start-up error for a tool_call_parser this vLLM does not have, with the names it has."""
    return EngineError(f"engine_settings.tool_call_parser: vLLM has no tool parser named {name!r}; this vLLM "
                       f"has: {', '.join(available) or 'none'}")


# -- errors --------------------------------------------------------------------------------------
# vLLM's exception classes by name (matched along the MRO, so tests need no vLLM): a request error is
# the caller's fault (4xx), anything else is the engine's (5xx).
_INVALID = {"VLLMValidationError", "VLLMClientError", "ValueError", "TypeError"}
_DEAD = {"EngineDeadError"}
_WRAPPER = {"EngineGenerateError"}


def map_vllm_error(exc: BaseException) -> EngineError:
    """Translate an exception raised by vLLM into ours; already-typed rayhet errors pass through."""
    if isinstance(exc, EngineError):
        return exc
    names = {c.__name__ for c in type(exc).__mro__}
    if names & _WRAPPER and exc.__cause__ is not None:
        return map_vllm_error(exc.__cause__)  # EngineGenerateError wraps the real cause
    if names & _DEAD:
        return EngineError(f"the vLLM engine died ({exc or type(exc).__name__}); the replica must restart")
    if names & _INVALID:
        return InvalidRequestError(f"vLLM rejected the request: {exc}", getattr(exc, "parameter", None))
    return EngineError(f"vLLM failed: {type(exc).__name__}: {exc}")
