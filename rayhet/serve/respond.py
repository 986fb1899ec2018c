"""Respond: from the pools' answers to the client's reply — the whole JSON reply of a non-streamed request, and
the server-sent events of a streamed one (one choice, or n interleaved) — recording each outcome in the
Dispatcher (the traffic the controller reads) and giving back each admission ticket, whatever happens.

The ingress (rayhet.serve.ingress) decides where a request goes and waits for its first answer
(rayhet.serve.sending); these functions take it from there. The OpenAI shapes themselves are in
rayhet.serve.replies.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Any, AsyncIterator

from fastapi.responses import JSONResponse

from rayhet.dispatch import Dispatcher
from rayhet.routing import Route
from rayhet.serve.failures import Failure, classify
from rayhet.serve.openai_api import APIError
from rayhet.serve.replies import ChoiceText, Echo, choices_body, chunk_body, new_id, usage_body, usage_chunk
from rayhet.serve.sending import Attempt, cancel_quietly

log = logging.getLogger("ray.serve")

POOL_HEADER = "x-rayhet-pool"  # which pool served a request (for clients, logs and `rayhet simulate`'s validation)


async def deltas(attempt: Attempt) -> AsyncIterator[Any]:
    """An attempt's first answer, then the rest of its stream."""
    yield attempt.first
    async for d in attempt.stream:
        yield d


def whole_reply(dispatch: Dispatcher, model_id: str, kind: str, routes: list[Route], attempts: list[Attempt],
                max_tokens: int, t0: float, tools: bool = False, echo: Echo | None = None) -> JSONResponse:
    """The reply to a non-streamed request from its pools' whole completions, one choice each (n of them);
    usage as OpenAI counts it: the prompt once, every choice's completion tokens."""
    outs, n_out = [], 0
    for route, attempt in zip(routes, attempts):
        text = ChoiceText(kind, echo)
        attempt.ticket.release()
        res = attempt.first
        k = res.usage.completion_tokens if res.usage else len(res.token_ids)
        n_out += text.completion_tokens(k)
        # TTFT as the stream path sees it: the time here, less what the pool spent after its first token
        ttft = max(0.0, attempt.t_first - t0 - (res.total_s - res.ttft_s))
        dispatch.succeeded(attempt.pool, route, k, max_tokens, ttft, res.decode_s)
        choice, lps = text.piece(res)  # (the first piece of a choice is never None)
        # (getattr: a replica of an older rayhet, mid-upgrade, sends Completions without `parsed`)
        outs.append((choice, res.finish_reason, lps, getattr(res, "parsed", None)))
    first = attempts[0].first
    u = usage_body(first.usage.prompt_tokens if first.usage else routes[0].input_tokens, n_out)
    return JSONResponse(choices_body(kind, new_id(kind), model_id, outs, u, tools=tools), status_code=200,
                        headers={POOL_HEADER: ",".join(a.pool for a in attempts)})


async def stream_one(dispatch: Dispatcher, model_id: str, kind: str, rid: str, route: Route, attempt: Attempt,
                     max_tokens: int, t0: float, include_usage: bool, continuous: bool = False,
                     echo: Echo | None = None) -> AsyncIterator[bytes]:
    """The stream of one choice: each piece as it comes (with vLLM's continuous usage if asked), a usage chunk,
    [DONE]; a pool that fails after the first token is reported in-band (the status line is sent)."""
    n_out, first, ok, usage = 0, True, False, None
    text = ChoiceText(kind, echo)
    try:
        async for d in deltas(attempt):
            n_out += len(d.token_ids)
            if d.finish_reason is not None:
                u = d.usage
                n_out = u.completion_tokens if u else n_out
                usage = usage_body(u.prompt_tokens if u else route.input_tokens, text.completion_tokens(n_out))
            piece = text.piece(d)
            if piece is not None:
                # vLLM's continuous_usage_stats: every chunk's usage says how many tokens came so far
                running = usage_body(route.input_tokens, text.completion_tokens(n_out)) if continuous else None
                body = chunk_body(kind, rid, model_id, piece[0], d.finish_reason, first=first,
                                  include_usage=include_usage, usage=running, logprobs=piece[1])
                yield b"data: " + json.dumps(body).encode() + b"\n\n"
                first = False
        if usage is not None and include_usage:
            yield b"data: " + json.dumps(usage_chunk(kind, rid, model_id, usage)).encode() + b"\n\n"
        ok = True
    except asyncio.CancelledError:  # the client went away: stop the generation on the pool
        cancel_quietly(attempt.stream)
        raise
    except Exception as e:  # noqa: BLE001 - the stream already started: report it in-band
        log.warning("rayhet ingress: pool %s failed mid-stream: %s", attempt.pool, type(e).__name__)
        err = APIError(500, f"the generation failed after {n_out} tokens: pool {attempt.pool} "
                       f"{'lost its replica' if classify(e) is Failure.LOST else 'failed'}", "internal_error").body()
        yield b"data: " + json.dumps(err).encode() + b"\n\n"
    finally:
        attempt.ticket.release()
        if ok:
            dispatch.succeeded(attempt.pool, route, n_out, max_tokens, attempt.t_first - t0,
                            time.monotonic() - attempt.t_first)
        else:
            dispatch.failed_midway(attempt.pool)
    yield b"data: [DONE]\n\n"


async def stream_several(dispatch: Dispatcher, model_id: str, kind: str, rid: str, routes: list[Route],
                         attempts: list[Attempt], max_tokens: int, t0: float, include_usage: bool,
                         echo: Echo | None = None) -> AsyncIterator[bytes]:
    """The stream of n > 1 choices: each choice's deltas as they come, with its index (OpenAI interleaves
    them the same way); one usage chunk at the end. Kept apart from `stream_one` so that n = 1 stays one loop."""
    queue: asyncio.Queue = asyncio.Queue()
    n_out = [0] * len(attempts)
    done = [False] * len(attempts)

    async def pump(i: int, attempt: Attempt) -> None:
        try:
            async for d in deltas(attempt):
                await queue.put((i, d))
            await queue.put((i, None))
        except Exception as e:  # noqa: BLE001 - reported in-band below
            await queue.put((i, e))

    pumps = [asyncio.ensure_future(pump(i, a)) for i, a in enumerate(attempts)]
    first = [True] * len(attempts)
    texts = [ChoiceText(kind, echo) for _ in attempts]
    failed = None
    try:
        while not all(done) and failed is None:
            i, d = await queue.get()
            if d is None:
                done[i] = True
                continue
            if isinstance(d, Exception):
                failed = (i, d)
                break
            n_out[i] += len(d.token_ids)
            if d.finish_reason is not None and d.usage:
                n_out[i] = d.usage.completion_tokens
            piece = texts[i].piece(d)
            if piece is not None:
                body = chunk_body(kind, rid, model_id, piece[0], d.finish_reason, first=first[i],
                                  include_usage=include_usage, index=i, logprobs=piece[1])
                yield b"data: " + json.dumps(body).encode() + b"\n\n"
                first[i] = False
        if failed is not None:
            i, e = failed
            log.warning("rayhet ingress: pool %s failed mid-stream: %s", attempts[i].pool, type(e).__name__)
            err = APIError(500, f"the generation of choice {i} failed after {n_out[i]} tokens: pool "
                           f"{attempts[i].pool} {'lost its replica' if classify(e) is Failure.LOST else 'failed'}",
                           "internal_error").body()
            yield b"data: " + json.dumps(err).encode() + b"\n\n"
        elif include_usage:
            usage = usage_body(routes[0].input_tokens, sum(t.completion_tokens(k) for t, k in zip(texts, n_out)))
            yield b"data: " + json.dumps(usage_chunk(kind, rid, model_id, usage)).encode() + b"\n\n"
    finally:
        for p in pumps:
            p.cancel()
        for i, (route, attempt) in enumerate(zip(routes, attempts)):
            attempt.ticket.release()
            if done[i]:
                dispatch.succeeded(attempt.pool, route, n_out[i], max_tokens, attempt.t_first - t0,
                                time.monotonic() - attempt.t_first)
            else:
                cancel_quietly(attempt.stream)
                if failed is not None and failed[0] == i:
                    dispatch.failed_midway(attempt.pool)
                else:
                    dispatch.cancelled(attempt.pool)
    yield b"data: [DONE]\n\n"
