"""vLLM engine: the engine protocol over vLLM's AsyncLLM (v1 engine), for GPU pools; vLLM 0.24 and newer."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import deque
from typing import Any, AsyncIterator, Callable

from pydantic import BaseModel, ConfigDict, Field, model_validator

from rayhet.engines.base import (
    EngineError,
    EngineOverloadedError,
    EngineStats,
    GenerationDelta,
    GenerationRequest,
    InvalidRequestError,
    check_fits,
    check_no_tools,
    check_one_prompt,
    check_token_ids,
)
from rayhet.engines.vllm_convert import DeltaBuilder, map_vllm_error, sampling_kwargs
from rayhet.engines.vllm_tools import ToolParsing


class VllmSettings(BaseModel):
    """What a GPU pool replica's vLLM engine is built with (the common AsyncEngineArgs, plus a pass-through)."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field(..., min_length=1, description="Hugging Face model id or local model directory.")
    tokenizer: str | None = Field(None, description="Tokenizer id or directory; default: the model's.")
    tensor_parallel_size: int = Field(1, ge=1, description="GPUs one replica shards the model over.")
    pipeline_parallel_size: int = Field(1, ge=1, description="Pipeline stages (GPUs = tensor x pipeline).")
    gpu_memory_utilization: float = Field(
        0.9, gt=0, le=1, description="Fraction of each GPU's memory vLLM may take (weights + KV cache)."
    )
    max_model_len: int | None = Field(None, ge=16, description="Context length (prompt + output); default: the model's.")
    dtype: str = Field("auto", description="Weight/activation dtype: auto, float16, bfloat16, float32.")
    quantization: str | None = Field(None, description="vLLM quantization method (awq, gptq, fp8, ...); none by default.")
    max_num_seqs: int = Field(256, ge=1, description="Sequences decoded together (the engine's batch slots).")
    max_num_batched_tokens: int | None = Field(None, ge=1, description="Tokens per scheduler step; default: vLLM's.")
    enable_prefix_caching: bool | None = Field(None, description="Prefix caching; default: vLLM's (on).")
    enforce_eager: bool = Field(False, description="Skip CUDA graphs (faster start, slower decode).")
    stream_interval: int = Field(
        16, ge=1,
        description="Tokens per streamed delta after the first, which is sent at once (vLLM's stream_interval). "
        "Each delta is one message through Ray Serve: 1 cut the pool's throughput to 26% of LLM.generate on an "
        "H200, 16 gave 81% (benchmarks/results/gpu-results.md).",
    )
    tool_call_parser: str | None = Field(
        None, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$",
        description="vLLM's tool-call parser for the model's own tool-call format, as `vllm serve "
        "--tool-call-parser` names it (hermes, llama3_json, mistral, ...). Set: a request with tools and "
        "tool_choice auto gets the prompt the model's chat template makes with the tools, and its whole output "
        "is parsed by this parser into tool_calls. Unset: tools go through structured output, as on every pool. "
        "A name this vLLM lacks fails the replica's start.",
    )
    seed: int = Field(0, description="Engine seed (per-request seeds still apply).")
    trust_remote_code: bool = Field(False, description="Allow model code from the model repository.")
    max_waiting: int | None = Field(
        1024, ge=0,
        description="Requests waiting beyond the batch slots before EngineOverloadedError (backpressure); "
        "null: unbounded.",
    )
    engine_args: dict[str, Any] = Field(
        default_factory=dict,
        description="Any other vllm AsyncEngineArgs field, passed through unchanged (e.g. kv_cache_dtype).",
    )

    @model_validator(mode="after")
    def _no_shadowing(self) -> "VllmSettings":
        clash = sorted(set(self.engine_args) & (set(type(self).model_fields) - _NOT_ENGINE_ARGS))
        if clash:
            raise ValueError(f"engine_args repeats {clash}: set them as settings of their own")
        return self

    @property
    def gpus_per_replica(self) -> int:
        """GPUs one replica needs (what the pool deployment asks Ray for)."""
        return self.tensor_parallel_size * self.pipeline_parallel_size


# Settings that are ours, not AsyncEngineArgs fields (tool_call_parser is vLLM's server's, not its engine's).
_NOT_ENGINE_ARGS = {"max_waiting", "engine_args", "tool_call_parser"}


def engine_args_dict(settings: VllmSettings) -> dict[str, Any]:
    """The AsyncEngineArgs keyword arguments for these settings (None means: vLLM's default, left out)."""
    named = settings.model_dump(exclude=_NOT_ENGINE_ARGS)
    args = {k: v for k, v in named.items() if v is not None}
    args.update(settings.engine_args)
    return args


# -- stats ---------------------------------------------------------------------------------------
class TokenRate:
    """Generated tokens per second over a sliding window, kept in one-second bins (O(window) memory)."""

    def __init__(self, window_s: float = 5.0, clock: Callable[[], float] = time.monotonic):
        self.window_s = window_s
        self._clock = clock
        self._bins: deque[list[float]] = deque()  # [second, tokens]
        self._t0 = clock()

    def add(self, n: int) -> None:
        if n <= 0:
            return
        sec = float(int(self._clock()))
        if self._bins and self._bins[-1][0] == sec:
            self._bins[-1][1] += n
        else:
            self._bins.append([sec, float(n)])

    def rate(self) -> float:
        now = self._clock()
        while self._bins and self._bins[0][0] < now - self.window_s:
            self._bins.popleft()
        span = min(self.window_s, max(now - self._t0, 1e-9))
        return sum(b[1] for b in self._bins) / span


class SchedulerSnapshot:
    """The last scheduler stats vLLM reported (running, waiting, KV-cache use) and when."""

    def __init__(self) -> None:
        self.running = 0
        self.waiting = 0
        self.kv_usage = 0.0
        self.at: float | None = None

    def update(self, scheduler_stats: Any, now: float | None = None) -> None:
        if scheduler_stats is None:
            return
        self.running = int(getattr(scheduler_stats, "num_running_reqs", 0) or 0)
        self.waiting = int(getattr(scheduler_stats, "num_waiting_reqs", 0) or 0)
        # kv_cache_usage in current vLLM; gpu_cache_usage in older v1 releases
        kv = getattr(scheduler_stats, "kv_cache_usage", None)
        if kv is None:
            kv = getattr(scheduler_stats, "gpu_cache_usage", 0.0)
        self.kv_usage = float(kv or 0.0)
        self.at = time.monotonic() if now is None else now

    def fresh(self, max_age_s: float = 2.0, now: float | None = None) -> bool:
        now = time.monotonic() if now is None else now
        return self.at is not None and now - self.at <= max_age_s


def _stat_logger_factory(snapshot: SchedulerSnapshot):
    """A vLLM stat-logger factory feeding `snapshot`, or None where this vLLM has no such interface."""
    try:
        from vllm.v1.metrics.loggers import StatLoggerBase
    except ImportError:
        return None

    class _Snapshotter(StatLoggerBase):
        def __init__(self, vllm_config: Any, engine_index: int = 0):
            pass

        def record(self, scheduler_stats: Any = None, iteration_stats: Any = None, *args: Any, **kwargs: Any) -> None:
            snapshot.update(scheduler_stats if scheduler_stats is not None else kwargs.get("scheduler_stats"))

        def log_engine_initialized(self) -> None:
            pass

        def log(self) -> None:
            pass

    return _Snapshotter


# -- the engine ----------------------------------------------------------------------------------
class VllmEngine:
    """The engine protocol over vllm.v1.engine.async_llm.AsyncLLM (see module docstring).

    Prompts are tokenized here with the model's Hugging Face tokenizer and sent as token ids, so that the
    context check, usage and routing all see the exact count vLLM computes on.
    """

    def __init__(self, settings: VllmSettings):
        self.settings = settings
        self.max_context = settings.max_model_len or 0  # known exactly once started
        self.max_batch = settings.max_num_seqs
        self._llm: Any = None
        self._tok: Any = None
        self._chat: Any = None
        self._sampling_cls: Any = None
        self._tools: ToolParsing | None = None  # the pool's tool_call_parser, once started
        self._kinds: dict[bool, Any] = {}  # request.stream -> vLLM output kind
        self._ids = itertools.count()
        self._inflight = 0
        self._stats = EngineStats(max_running=settings.max_num_seqs)
        self._rate = TokenRate()
        self._sched = SchedulerSnapshot()

    async def start(self) -> None:
        try:
            from vllm import SamplingParams as VSamplingParams
            from vllm.engine.arg_utils import AsyncEngineArgs
            from vllm.sampling_params import RequestOutputKind
            from vllm.v1.engine.async_llm import AsyncLLM
        except ImportError as e:
            raise EngineError(f"vLLM is not installed here ({e}); GPU pools need `pip install rayhet[gpu]`") from e
        from rayhet.engines.chat import ChatTemplate

        self._sampling_cls = VSamplingParams
        self._kinds = {True: RequestOutputKind.DELTA, False: RequestOutputKind.FINAL_ONLY}
        self._tok = _load_tokenizer(self.settings)
        self._chat = ChatTemplate(getattr(self._tok, "chat_template", None),
                                  self._tok.bos_token or "", self._tok.eos_token or "")
        if self.settings.tool_call_parser is not None:  # before the weights load: a bad name fails in seconds
            self._tools = ToolParsing.load(self.settings.tool_call_parser, self._tok)
        args = AsyncEngineArgs(**engine_args_dict(self.settings))
        factory = _stat_logger_factory(self._sched)
        try:
            # Built on the running loop, as vLLM's own server does: its output handler binds to this loop.
            self._llm = AsyncLLM.from_engine_args(args, stat_loggers=[factory] if factory else None)
        except Exception as e:
            raise EngineError(f"vLLM could not start {self.settings.model!r}: {type(e).__name__}: {e}") from e
        if not getattr(self._llm, "log_stats", False):
            # No per-request metrics, so a final-only output could not say when its first token came.
            self._kinds[False] = RequestOutputKind.DELTA
        cfg = self._llm.vllm_config
        self.max_context = int(cfg.model_config.max_model_len)
        self.max_batch = int(cfg.scheduler_config.max_num_seqs)
        self._stats.max_running = self.max_batch

    # -- text --------------------------------------------------------------------------------
    def render_chat(self, messages: list[dict]) -> str:
        self._require_started()
        return self._chat.render(messages)

    def tokenize(self, text: str) -> list[int]:
        """Token ids of a prompt text as vLLM would make them (special tokens, e.g. BOS, added)."""
        self._require_started()
        return list(self._tok.encode(text, add_special_tokens=True))

    def count_tokens(self, text: str) -> int:
        return len(self.tokenize(text))

    def _prompt_ids(self, request: GenerationRequest) -> list[int]:
        check_one_prompt(request.prompt, request.prompt_token_ids, request.messages)
        if request.prompt_token_ids is not None:
            return check_token_ids(request.prompt_token_ids, len(self._tok))
        if request.messages is not None:
            # The template writes the special tokens itself (BOS included): add none on top.
            return list(self._tok.encode(self._chat.render(request.messages), add_special_tokens=False))
        if not isinstance(request.prompt, str):
            raise InvalidRequestError("prompt must be a string", "prompt")
        return self.tokenize(request.prompt)

    # -- generation ----------------------------------------------------------------------------
    async def generate(self, request: GenerationRequest) -> AsyncIterator[GenerationDelta]:
        self._require_started()
        s = request.sampling.validate()
        ids = self._prompt_ids(request)
        check_fits(len(ids), s.max_tokens, self.max_context)
        limit = self.settings.max_waiting
        if limit is not None and self._inflight >= self.max_batch + limit:
            raise EngineOverloadedError(
                f"{self._inflight} requests in flight (batch {self.max_batch} + waiting {limit}): retry elsewhere")
        kw = sampling_kwargs(s)
        if "structured_outputs" in kw:
            from vllm.sampling_params import StructuredOutputsParams

            kw["structured_outputs"] = StructuredOutputsParams(**kw["structured_outputs"])
        reading = None
        if request.tools is not None:
            if self._tools is None:
                check_no_tools(request)
            reading = self._tools.open(request.tools)
            kw.update(reading.sampling_overrides())
        params = self._sampling_cls(**kw, output_kind=self._kinds[request.stream])
        # vLLM refuses a request id that is still running: a retried client id must not collide.
        rid = f"{request.request_id}-{next(self._ids)}"
        stream = self._llm.generate({"prompt_token_ids": ids}, params, rid)
        # the first prompt token is most often a BOS the tokenizer added, which the prompt's text does not hold
        build = DeltaBuilder(len(ids), top_logprobs=s.logprobs, prompt_top_logprobs=s.prompt_logprobs,
                             decode=lambda t: self._tok.decode([t], skip_special_tokens=True))
        self._inflight += 1
        self._stats.requests_total += 1
        self._stats.prompt_tokens_total += len(ids)
        try:
            async for out in stream:
                delta = build.feed(out)
                if delta is None:
                    continue
                if reading is not None:
                    reading.add(delta.text)
                    if delta.finish_reason is not None:  # the whole output: parsed once, at its end
                        delta.parsed = reading.parse()
                if delta.token_ids:
                    self._rate.add(len(delta.token_ids))
                    self._stats.generated_tokens_total += len(delta.token_ids)
                yield delta
        except (asyncio.CancelledError, GeneratorExit):
            raise
        except Exception as e:
            self._stats.requests_failed += 1
            raise map_vllm_error(e) from e
        finally:
            self._inflight -= 1
            if not build.finished:
                # Closing vLLM's generator aborts the request in the engine and frees its KV blocks.
                await stream.aclose()

    # -- health and stats ----------------------------------------------------------------------
    async def check_health(self) -> None:
        if self._llm is None:
            raise EngineError("the vLLM engine is not started")
        try:
            await self._llm.check_health()
        except Exception as e:
            raise map_vllm_error(e) from e
        if getattr(self._llm, "errored", False):
            raise EngineError("the vLLM engine died; the replica must restart")

    def stats(self) -> EngineStats:
        st = self._stats
        if self._sched.fresh():
            st.running, st.waiting, st.kv_usage = self._sched.running, self._sched.waiting, self._sched.kv_usage
        else:  # between scheduler reports: what this replica knows of its own requests
            st.running = min(self._inflight, self.max_batch)
            st.waiting = self._inflight - st.running
        st.tokens_per_s = self._rate.rate()
        return EngineStats(**vars(st))

    async def shutdown(self) -> None:
        llm, self._llm = self._llm, None
        if llm is not None:
            llm.shutdown()

    def _require_started(self) -> None:
        if self._tok is None:
            raise EngineError("the vLLM engine is not started: call start() first")


def _load_tokenizer(settings: VllmSettings) -> Any:
    """The model's Hugging Face tokenizer, the one vLLM's 'auto' tokenizer mode loads."""
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(settings.tokenizer or settings.model,
                                             trust_remote_code=settings.trust_remote_code)
    except Exception as e:
        raise EngineError(f"cannot load the tokenizer of {settings.tokenizer or settings.model!r}: {e}") from e
