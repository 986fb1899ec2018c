"""OpenAI API replies: whole responses, stream chunks, usage and logprobs objects, each choice's text with the
prompt echoed before it, in OpenAI's shapes (no Ray, no engine)."""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass
from typing import Any, AsyncIterator


def new_id(kind: str) -> str:
    return f"{'cmpl' if kind == 'completion' else 'chatcmpl'}-{uuid.uuid4().hex}"


def usage_body(prompt_tokens: int, completion_tokens: int) -> dict:
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens}


def logprobs_body(kind: str, lps: list | None, offset: int = 0) -> dict | None:
    """OpenAI's logprobs object for these tokens (TokenLogprob), or None when none were asked for. Chat:
    `content`, one entry per token with its `top_logprobs`; completions: the legacy parallel lists, with
    `text_offset` counted from `offset` (the characters of the choice's text before these tokens)."""
    if lps is None:
        return None
    if kind == "completion":
        offsets, at = [], offset
        for lp in lps:
            offsets.append(at)
            at += len(lp.token)
        # a prompt's first token has no logprob: null, and null top_logprobs, as OpenAI writes it
        return {"tokens": [lp.token for lp in lps], "token_logprobs": [lp.logprob for lp in lps],
                "top_logprobs": [None if lp.logprob is None else _by_text(lp.top) for lp in lps],
                "text_offset": offsets}
    entry = lambda t: {"token": t.token, "logprob": t.logprob, "bytes": t.bytes}  # noqa: E731
    return {"content": [{**entry(lp), "top_logprobs": [entry(t) for t in lp.top]} for lp in lps], "refusal": None}


def _by_text(top: list) -> dict:
    """Top tokens as the legacy {text: logprob}, most likely first. Of tokens with one text (pieces of UTF-8
    characters all read "\ufffd") the most likely one's logprob stays: a dict comprehension kept the last."""
    out: dict = {}
    for t in top:
        out.setdefault(t.token, t.logprob)
    return out


def joined_logprobs(first: dict | None, then: dict | None) -> dict | None:
    """Two completions logprobs objects as one, `first`'s tokens before `then`'s (either may be None)."""
    if first is None or then is None:
        return then if first is None else first
    return {k: first[k] + then[k] for k in first}


@dataclass(frozen=True)
class Echo:
    """What a completions request with `echo: true` puts before each choice: the prompt's text (and, with
    logprobs, its tokens' logprobs). `keep_output` False is `max_tokens: 0`, OpenAI's way to score a prompt:
    the reply is the prompt alone, with no completion tokens."""

    prompt: str
    keep_output: bool = True


class ChoiceText:
    """One choice's text and logprobs object, piece by piece (a stream's deltas, or a whole completion as its
    one piece): the echoed prompt before the first piece, and `text_offset` counted along the choice's text."""

    def __init__(self, kind: str, echo: Echo | None = None):
        self.kind, self.echo = kind, echo
        self.offset = 0  # characters of the choice's text before the next piece's tokens
        self.started = False

    def piece(self, d: Any) -> tuple[str, dict | None] | None:
        """(text, logprobs object) of a GenerationDelta or Completion, or None when it adds nothing to the choice
        (never for the first: it opens the choice)."""
        first, self.started = not self.started, True
        text, lps = d.text, d.logprobs
        if self.echo is not None and not self.echo.keep_output:
            text, lps = "", (None if lps is None else [])
        prompt, prompt_lps = "", None
        if first and self.echo is not None:
            prompt, prompt_lps = self.echo.prompt, logprobs_body(self.kind, d.prompt_logprobs, 0)
            # the output's offsets count from the prompt's end even where its tokens' texts add up to another
            # length (special tokens, as vLLM's tokenizer writes them)
            self.offset = len(prompt)
        body = logprobs_body(self.kind, lps, self.offset)
        self.offset += sum(len(lp.token) for lp in lps or [])
        if not (first or text or lps or d.finish_reason is not None):
            return None
        return prompt + text, joined_logprobs(prompt_lps, body)

    def completion_tokens(self, generated: int) -> int:
        """The completion tokens the reply reports: none when a prompt-only echo left the output out."""
        return 0 if self.echo is not None and not self.echo.keep_output else generated


def choices_body(kind: str, rid: str, model: str, outs: list[tuple], usage: dict, tools: bool = False) -> dict:
    """A whole (non-streamed) reply with one choice per (text, finish_reason[, logprobs object[, ParsedReply]]),
    indexed in order (n > 1). With `tools`, each choice's calls: the engine's parser's reading where the pool
    parsed them (native), else read from the output's JSON (structured)."""
    created = int(time.time())
    outs = [(o[0], o[1], o[2] if len(o) > 2 else None, o[3] if len(o) > 3 else None) for o in outs]
    if kind == "completion":
        choices = [{"index": i, "text": t, "logprobs": lp, "finish_reason": f}
                   for i, (t, f, lp, _) in enumerate(outs)]
        return {"id": rid, "object": "text_completion", "created": created, "model": model,
                "choices": choices, "usage": usage}
    choices = [{"index": i, "message": {"role": "assistant", "content": t}, "logprobs": lp, "finish_reason": f}
               for i, (t, f, lp, _) in enumerate(outs)]
    if tools:  # a call, or an answer
        from rayhet.serve.native_tools import reply_of
        from rayhet.serve.tools import read_reply

        for c, (text, _, _, parsed) in zip(choices, outs):
            content, calls = reply_of(parsed) if parsed is not None else read_reply(text)
            c["message"]["content"] = content
            if calls:
                c["message"]["tool_calls"] = calls
                c["finish_reason"] = "tool_calls" if c["finish_reason"] == "stop" else c["finish_reason"]
    return {"id": rid, "object": "chat.completion", "created": created, "model": model,
            "choices": choices, "usage": usage}


def chunk_body(kind: str, rid: str, model: str, text: str | None, finish: str | None = None, first: bool = False,
               include_usage: bool = False, usage: dict | None = None, index: int = 0,
               logprobs: dict | None = None) -> dict:
    """One stream chunk. As OpenAI (and vLLM): with `stream_options.include_usage` every chunk has a `usage`
    field, null except on the last one, which has `choices: []` (`usage_chunk`); without it, none has one."""
    created = int(time.time())
    if kind == "completion":
        choices = [{"index": index, "text": text or "", "logprobs": logprobs, "finish_reason": finish}]
        body = {"id": rid, "object": "text_completion", "created": created, "model": model, "choices": choices}
    else:
        delta: dict = {}
        if first:
            delta["role"] = "assistant"
        if text:
            delta["content"] = text
        choices = [{"index": index, "delta": delta, "logprobs": logprobs, "finish_reason": finish}]
        body = {"id": rid, "object": "chat.completion.chunk", "created": created, "model": model, "choices": choices}
    if include_usage:
        body["usage"] = usage
    return body


def usage_chunk(kind: str, rid: str, model: str, usage: dict) -> dict:
    """The last chunk of a stream that asked for `stream_options.include_usage`: no choices, the whole usage."""
    body = chunk_body(kind, rid, model, None, include_usage=True, usage=usage)
    body["choices"] = []
    return body


def models_body(model_id: str, created: int) -> dict:
    return {"object": "list", "data": [{"id": model_id, "object": "model", "created": created, "owned_by": "rayhet"}]}


async def replay_as_stream(body: dict, include_usage: bool) -> AsyncIterator[bytes]:
    """A whole chat reply as OpenAI's stream: per choice, one delta with its role and content or tool calls
    (each call's arguments whole, with its index), then one with its finish reason; the usage chunk; [DONE]."""
    base = {"id": body["id"], "object": "chat.completion.chunk", "created": body["created"], "model": body["model"]}
    extra = {"usage": None} if include_usage else {}
    for c in body["choices"]:
        m = c["message"]
        delta = {"role": "assistant", "content": m.get("content")}
        if m.get("tool_calls"):
            delta["tool_calls"] = [{"index": k, **tc} for k, tc in enumerate(m["tool_calls"])]
        for d, finish in ((delta, None), ({}, c["finish_reason"])):
            chunk = {**base, "choices": [{"index": c["index"], "delta": d, "logprobs": None, "finish_reason": finish}],
                     **extra}
            yield b"data: " + json.dumps(chunk).encode() + b"\n\n"
    if include_usage:
        yield b"data: " + json.dumps({**base, "choices": [], "usage": body["usage"]}).encode() + b"\n\n"
    yield b"data: [DONE]\n\n"
