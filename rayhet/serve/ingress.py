"""Ingress: the OpenAI-compatible HTTP face that sends each request to the pool that serves its size cheapest.

Per request: authenticate, read a size-limited JSON body, validate it, count prompt tokens exactly with
the model's tokenizer, ask the Router (current Plan + output-length predictor) for an ordered list of
pools, hand it to the Sender (rayhet.serve.sending: admission, spill-over, safe retries, refusals with
Retry-After), and record arrivals and outcomes in the TrafficRecorder that the controller reads. A non-streamed
request is one unary call to the pool (`PoolServer.complete`: the whole result in one Serve message); a
streamed one a streaming call (`PoolServer.generate`). The reply itself is assembled by rayhet.serve.respond.

`Ingress` is a plain class; `make_app(ingress)` builds its FastAPI app (usable without Ray, e.g. with
Starlette's TestClient), and the builder makes it a Serve deployment with the late-bound `serve.ingress()`,
which calls `__serve_build_asgi_app__` in the replica after the constructor. `update_plan(plan_dict)`,
`get_plan()` and `traffic_snapshot()` act on one replica (through a DeploymentHandle: any one); the controller
reaches every replica the other way round: each reports to it (rayhet.serve.reporting).
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import hmac
import json
import logging
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse

from rayhet.admission import Admission, PoolRoom
from rayhet.config import RayhetConfig
from rayhet.dispatch import Dispatcher
from rayhet.engines.base import GenerationRequest, InvalidRequestError, SamplingParams
from rayhet.messages import PoolFacts
from rayhet.plan import Plan
from rayhet.routing import PoolLimit, Router
from rayhet.serve.health import PoolWatcher, judge
from rayhet.serve.lag import LoopLag, shed
from rayhet.serve.native_tools import native_choice, template_messages, template_tools
from rayhet.serve.openai_api import APIError, ChatRequest, CompletionRequest
from rayhet.serve.parsing import decode_body, parse_request
from rayhet.serve.replies import Echo, models_body, new_id, replay_as_stream
from rayhet.serve.respond import POOL_HEADER, stream_one, stream_several, whole_reply
from rayhet.serve.sending import Sender, cancel_quietly
from rayhet.serve.tokens import load_tokenizer
from rayhet.serve.tools import output_schema as tool_schema
from rayhet.serve.tools import system_message as tool_system_message
from rayhet.traffic import TrafficRecorder

TOKENIZE_THREADS = 4

log = logging.getLogger("ray.serve")

SHED_MIN_IN_FLIGHT = 16  # requests at the pools before a late loop sheds (server.shed_lag_ms)


def _json(status: int, body: dict, headers: dict | None = None) -> JSONResponse:
    return JSONResponse(body, status_code=status, headers=headers)


def _error(e: APIError) -> JSONResponse:
    headers = {"Retry-After": str(e.retry_after)} if e.retry_after is not None else None
    return _json(e.status, e.body(), headers)


class Ingress:
    """The ingress deployment (plain class; see module docstring)."""

    def __init__(self, config: dict, plan: dict, pools: dict[str, Any], pool_facts: list[dict]):
        self.config = RayhetConfig.model_validate(config)
        self.model_id = self.config.model.id
        self.created = int(time.time())
        self._handles = {name: h.options(stream=True) for name, h in pools.items()}
        self._unary = dict(pools)
        self._api_keys = [k.encode() for k in self.config.server.resolved_api_keys()]
        self._max_body = self.config.server.max_body_bytes
        self.tokenizer = load_tokenizer(self.config)
        # Long prompts are tokenized (and chat templates rendered) in threads, as vLLM's server does, so the
        # event loop keeps streaming every other request meanwhile (llama.cpp's and HF's tokenizers release
        # the GIL); short ones inline, where the hop would cost more than the work.
        self._tokenize_pool = ThreadPoolExecutor(max_workers=TOKENIZE_THREADS, thread_name_prefix="rayhet-tokenize")
        p = Plan.from_dict(plan)
        facts = [PoolFacts.model_validate(f) for f in pool_facts]
        self.dispatch = Dispatcher(self.config, p, [PoolLimit(f.name, f.max_context, f.price_per_hour) for f in facts],
                                   list(pools))
        self.admission = Admission(self._rooms(facts), ingress_replicas=self.config.server.ingress_replicas)
        self._native_pools = self._parsing_pools(facts)
        self.admission.set_running({n: p.replicas.get(n, 0) for n in pools})  # until the watcher reads Serve's
        self.sender = Sender(self._handles, self._unary, self.dispatch, self.admission, self.config.server.max_wait_s,
                             lambda: self.watcher)
        self._tasks: set[asyncio.Task] = set()
        self.lag = LoopLag()  # how late this replica's event loop runs: past server.shed_lag_ms, refuse at once
        self._shed_s = None if self.config.server.shed_lag_ms is None else self.config.server.shed_lag_ms / 1000
        self._background(self.lag.run())
        self._shed_count, self._shed_logged_at = 0, float("-inf")
        self.watcher: PoolWatcher | None = None  # the pools' states for /health and routing, refreshed in the background
        if pools and all(hasattr(h, "deployment_name") for h in pools.values()):
            app = next(iter(pools.values())).app_name
            self.watcher = PoolWatcher(app, {name: h.deployment_name for name, h in pools.items()},
                                       on_update=self._pools_changed)
            self._background(self.watcher.run())
        log.info("rayhet ingress: model %s, pools %s, plan %s (%s)", self.model_id, sorted(pools), p.replicas, p.status)

    def _rooms(self, facts: list[PoolFacts]) -> dict[str, PoolRoom]:
        slots = {f.name: f.slots for f in facts}
        return {p.name: PoolRoom(slots=slots[p.name], queue_per_replica=p.queue_per_replica,
                                 queued_at_caller=p.max_queued_requests, startup_s=p.startup_seconds)
                for p in self.config.pools if p.name in slots}

    def _parsing_pools(self, facts: list[PoolFacts]) -> list[str]:
        """The pools whose engine parses the model's own tool calls (rayhet.serve.native_tools): those with a
        tool_call_parser, where the model's template writes tools into the prompt. Where it does not, the model
        would never see the tools: those pools take tools through structured output, as every other pool."""
        named = [f.name for f in facts if f.tool_call_parser]
        if named and not self.tokenizer.renders_tools():
            log.warning("rayhet ingress: pools %s have a tool_call_parser, but the model's chat template does not "
                        "write tools into the prompt; their tool requests go through structured output", named)
            return []
        return named

    def _pools_changed(self, states: dict) -> None:
        self.admission.set_running({name: st.running for name, st in states.items()})

    def _background(self, coro) -> asyncio.Task | None:
        """Run `coro` on the replica's event loop for the replica's lifetime (none outside Serve: no loop)."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            coro.close()
            return None
        task = loop.create_task(coro)
        self._tasks.add(task)  # a reference, or the loop may garbage-collect the task
        task.add_done_callback(self._tasks.discard)
        return task

    @property
    def router(self) -> Router:
        return self.dispatch.router

    @property
    def traffic(self) -> TrafficRecorder:
        return self.dispatch.traffic

    # -- controller API --------------------------------------------------------------------------
    def update_plan(self, plan: dict) -> None:
        """Adopt a new plan (the controller's). A new grid restarts the predictor and traffic bucket counts."""
        p = Plan.from_dict(plan)
        self.dispatch.update_plan(p)
        if self.watcher is None:  # nothing reads Serve: the plan's replicas are the best guess of what runs
            self.admission.set_running({n: p.replicas.get(n, 0) for n in self.admission.rooms})

    def get_plan(self) -> dict:
        return self.router.plan.to_dict()

    def traffic_snapshot(self) -> dict:
        """What this replica saw over the traffic window: a rayhet.messages.TrafficSnapshot's `model_dump()`
        (plain data through a DeploymentHandle; the caller validates it)."""
        return self.traffic.snapshot().model_dump()

    # -- HTTP ------------------------------------------------------------------------------------
    def __serve_build_asgi_app__(self) -> FastAPI:
        return make_app(self)

    async def health(self) -> JSONResponse:
        """200 when every pool the plan routes to can serve, else 503; per-pool detail (rayhet.serve.health)."""
        if self.watcher is None:  # outside Serve: nothing to watch
            return _json(200, {"status": "ok"})
        return _json(*judge(self.router.plan, self.watcher.states, self.watcher.checked_at, time.time()))

    async def models(self, request: Request) -> JSONResponse:
        try:
            self._authenticate(request)
        except APIError as e:
            return _error(e)
        return _json(200, models_body(self.model_id, self.created))

    # -- request handling ----------------------------------------------------------------------
    def _authenticate(self, request: Request) -> None:
        if not self._api_keys:
            return
        auth = request.headers.get("authorization", "")
        token = auth[7:].strip().encode() if auth[:7].lower() == "bearer " else b""
        if not any(hmac.compare_digest(token, k) for k in self._api_keys):
            raise APIError(401, "missing or invalid API key (send 'Authorization: Bearer <key>')",
                           code="invalid_api_key")

    async def _read_json(self, request: Request) -> object:
        length = request.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > self._max_body:
            raise APIError(413, f"request body is {length} bytes; the limit is {self._max_body}")
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > self._max_body:
                raise APIError(413, f"request body exceeds the limit of {self._max_body} bytes")
            chunks.append(chunk)
        return decode_body(b"".join(chunks))

    async def _handle(self, request: Request, kind: str):
        t0 = time.monotonic()
        try:
            self._authenticate(request)
            if self.admission.saturated():  # refuse before reading the body: milliseconds under any overload
                self.traffic.arrival(None, now=t0)
                raise self.sender.refusal(list(self.admission.rooms), ["every pool is at its queue limit"])
            late = self.lag.late_s()
            # this replica is the bottleneck: a refusal now costs it next to nothing. Only with work in hand: a
            # loop late for lack of CPU (a busy host, a collection) with little in flight is no overload
            in_hand = sum(self.admission.in_flight.values())
            if shed(late, self._shed_s) and in_hand >= SHED_MIN_IN_FLIGHT:
                self.traffic.arrival(None, now=t0)
                self._shed_count += 1
                if t0 - self._shed_logged_at >= 10.0:  # an operator should hear of it, not once per request
                    self._shed_logged_at = t0
                    log.warning("rayhet ingress: shedding load: this replica's event loop runs %.0f ms late with %d "
                                "requests at the pools (%d refused so far); add ingress replicas "
                                "(server.ingress_replicas; one carries ~server.ingress_capacity_rps=%s streamed "
                                "req/s)", late * 1000, in_hand, self._shed_count,
                                self.config.server.ingress_capacity_rps)
                raise APIError(429, f"this server is overloaded (its ingress runs {late * 1000:.0f} ms late); "
                               "retry after 1 s", "rate_limit_error", code="rate_limit_exceeded", retry_after=1)
            req = parse_request(CompletionRequest if kind == "completion" else ChatRequest, await self._read_json(request))
            if req.model != self.model_id:
                raise APIError(404, f"model {req.model!r} does not exist; this server serves {self.model_id!r}",
                               param="model", code="model_not_found")
            ids, max_tokens, native = await self._tokenize(kind, req)
            echo = await self._echo(req, ids) if getattr(req, "echo", False) else None
            if echo is not None and not echo.keep_output:
                max_tokens = 1  # a prompt to score: one token generated (as vLLM does), left out of the reply
            sampling = SamplingParams(max_tokens=max_tokens, temperature=float(req.temperature),
                                      top_p=float(req.top_p), seed=req.seed, stop=req.stop_list(),
                                      presence_penalty=float(req.presence_penalty),
                                      frequency_penalty=float(req.frequency_penalty), ignore_eos=req.ignore_eos,
                                      logprobs=req.logprobs_k(),
                                      prompt_logprobs=req.logprobs_k() if echo is not None else None,
                                      **(req.response_format.sampling() if getattr(req, "response_format", None)
                                         else {}),
                                      **({"json_schema": tool_schema(*req.tool_setup(), req.parallel_tool_calls)}
                                         if self._tools_on(req) else {}))
            try:
                sampling.validate()
            except InvalidRequestError as e:
                raise APIError(400, str(e), param=e.param) from None
            if req.n > self.config.server.max_n:
                raise APIError(400, f"n={req.n} is above this server's limit of {self.config.server.max_n} "
                               "(server.max_n)", param="n")
            if req.n > 1 or self._tools_on(req):
                return await self._several(kind, req, ids, sampling, max_tokens, t0, echo, native)
            route = self.dispatch.route(len(ids), max_tokens)
            if not route.pools:
                raise APIError(400, route.reason, param="max_tokens", code="context_length_exceeded")
            gen = GenerationRequest(request_id=uuid.uuid4().hex, prompt_token_ids=ids, sampling=sampling,
                                    arrival_time=t0)
            attempt = await self.sender.first_answer(route, gen, t0, stream=bool(req.stream))
            if not req.stream:
                return whole_reply(self.dispatch, self.model_id, kind, [route], [attempt], max_tokens, t0, echo=echo)
        except APIError as e:
            return _error(e)
        except InvalidRequestError as e:  # e.g. the chat template rejected the messages
            return _error(APIError(400, str(e), param=e.param))
        except Exception as e:  # noqa: BLE001 - never leak a traceback as a bare 500
            log.exception("rayhet ingress: unexpected error")
            return _error(APIError(500, f"internal error: {type(e).__name__}", "internal_error"))
        rid = new_id(kind)
        include_usage, continuous = req.stream_usage()
        return StreamingResponse(stream_one(self.dispatch, self.model_id, kind, rid, route, attempt, max_tokens, t0,
                                            include_usage, continuous, echo),
                                 media_type="text/event-stream", headers={POOL_HEADER: attempt.pool})

    async def _several(self, kind: str, req: Any, ids: list[int], sampling: SamplingParams, max_tokens: int,
                       t0: float, echo: Echo | None = None, native: tuple[list[int], list[dict]] | None = None):
        """n > 1: n generations, each routed, admitted and spilled as a request of its own (each loads a
        pool as one request does), answered as one reply with choices 0..n-1; usage as OpenAI counts it
        (the prompt once, every choice's completion tokens). A given seed becomes seed + i for choice i, so
        choices differ and the whole reply is reproducible. Refused as a whole if any choice is refused.
        Tool requests come here too (n >= 1): their calls are read from each choice's whole output; `native`
        (prompt ids, functions): the same request in the model's own tool format, for the pools that parse it."""
        # routed by the longer of the two prompts: the context check must hold for whichever one a pool gets
        routes = [self.dispatch.route(max(len(ids), len(native[0]) if native else 0), max_tokens)
                  for _ in range(req.n)]
        if not routes[0].pools:
            raise APIError(400, routes[0].reason, param="max_tokens", code="context_length_exceeded")
        gens = [GenerationRequest(request_id=uuid.uuid4().hex, prompt_token_ids=ids, arrival_time=t0,
                                  sampling=dataclasses.replace(sampling, seed=None if sampling.seed is None
                                                               else sampling.seed + i)) for i in range(req.n)]
        # a tool call is read from the whole constrained output: generated whole, then sent as one stream
        whole = self._tools_on(req)
        tries = [asyncio.ensure_future(self.sender.first_answer(r, g, t0, stream=bool(req.stream) and not whole,
                                                                variants=self._native_variants(g, native)))
                 for r, g in zip(routes, gens)]
        try:
            attempts = await asyncio.gather(*tries)
        except BaseException:
            for t in tries:  # the others: stop waiting, and give back what they hold
                t.cancel()
            for t in tries:
                if t.done() and not t.cancelled() and t.exception() is None:
                    t.result().ticket.release()
                    cancel_quietly(t.result().stream)
            raise
        if whole:
            reply = whole_reply(self.dispatch, self.model_id, kind, routes, attempts, max_tokens, t0, tools=True)
            if not req.stream:
                return reply
            include_usage = req.stream_usage()[0]
            return StreamingResponse(replay_as_stream(json.loads(reply.body), include_usage),
                                     media_type="text/event-stream", headers={POOL_HEADER: reply.headers[POOL_HEADER]})
        if req.stream:
            include_usage = req.stream_usage()[0]
            return StreamingResponse(stream_several(self.dispatch, self.model_id, kind, new_id(kind), routes,
                                                    attempts, max_tokens, t0, include_usage, echo),
                                     media_type="text/event-stream",
                                     headers={POOL_HEADER: ",".join(a.pool for a in attempts)})
        return whole_reply(self.dispatch, self.model_id, kind, routes, attempts, max_tokens, t0, echo=echo)

    def _native_variants(self, gen: GenerationRequest,
                         native: tuple[list[int], list[dict]] | None) -> dict[str, GenerationRequest] | None:
        """What the pools that parse tool calls get instead of `gen`: the prompt the model's template made with
        the tools, no structured output, and the functions for their parser."""
        if native is None:
            return None
        ids, functions = native
        g = dataclasses.replace(gen, prompt_token_ids=ids, tools=functions,
                                sampling=dataclasses.replace(gen.sampling, json_schema=None))
        return {p: g for p in self._native_pools}

    async def _off_loop(self, fn, arg, chars: int):
        if chars <= self.config.server.tokenize_inline_chars:
            return fn(arg)
        return await asyncio.get_running_loop().run_in_executor(self._tokenize_pool, fn, arg)

    async def _tokenize(self, kind: str, req: Any) -> tuple[list[int], int, tuple[list[int], list[dict]] | None]:
        """(prompt ids, max_tokens, native): `native` is (prompt ids, functions) of a tool request in the model's
        own format when some pool parses tool calls and the request's tool_choice can go that way, else None."""
        native = None
        if kind == "completion":
            prompt = req.one_prompt()
            ids = list(prompt) if isinstance(prompt, list) else \
                await self._off_loop(self.tokenizer.prompt_ids, prompt, len(prompt))
            max_tokens = req.max_tokens if req.max_tokens is not None else 16
        else:
            messages = [m.as_dict() for m in req.messages]
            if req.using_tools():
                messages.insert(0, tool_system_message(*req.tool_setup()))
            chars = sum(len(m["content"]) for m in messages)
            ids = await self._off_loop(self.tokenizer.chat_ids, messages, chars)
            functions, choice = req.tool_setup() if req.using_tools() else ([], None)
            if self._native_pools and functions and native_choice(choice, req.parallel_tool_calls):
                render = functools.partial(self.tokenizer.chat_ids, tools=template_tools(functions))
                try:
                    native = (await self._off_loop(render, template_messages(req.messages), chars), functions)
                except InvalidRequestError as e:  # the template refuses these turns with tools: the other path
                    log.info("rayhet ingress: the chat template refused a tool request (%s); structured output", e)
            max_tokens = req.max_completion_tokens or req.max_tokens
            if max_tokens is None:  # as OpenAI: up to what the context leaves, capped by our default
                longest = max(len(ids), len(native[0]) if native else 0)
                left = self.router.largest_context - longest  # negative when no pool's context is known
                max_tokens = self.config.routing.default_max_tokens
                if left >= 1:
                    max_tokens = min(max_tokens, left)
        if not ids:
            raise APIError(400, "the prompt is empty", param="prompt")
        return ids, max_tokens, native

    async def _echo(self, req: CompletionRequest, ids: list[int]) -> Echo:
        """What echo puts before each choice: the prompt as sent, or the text of its token ids."""
        prompt = req.one_prompt()
        if not isinstance(prompt, str):
            prompt = await self._off_loop(self.tokenizer.text_of, ids, 4 * len(ids))  # ~4 characters a token
        return Echo(prompt, keep_output=req.max_tokens != 0)

    @staticmethod
    def _tools_on(req: Any) -> bool:
        return bool(getattr(req, "using_tools", lambda: False)())


def make_app(ingress: Ingress) -> FastAPI:
    """The HTTP routes of an Ingress (OpenAI paths, /health)."""
    api = FastAPI(title="rayhet", docs_url=None, redoc_url=None, openapi_url=None)

    @api.get("/health")
    async def health():
        return await ingress.health()

    @api.get("/v1/models")
    async def models(request: Request):
        return await ingress.models(request)

    @api.post("/v1/completions")
    async def completions(request: Request):
        return await ingress._handle(request, "completion")

    @api.post("/v1/chat/completions")
    async def chat_completions(request: Request):
        return await ingress._handle(request, "chat")

    return api
