"""vLLM engine logic that needs no GPU: settings, request translation, deltas, stats, error mapping.

The engine-level tests drive VllmEngine over a small stand-in `vllm` module (an AsyncLLM that streams
canned tokens); they run only where the real vLLM is absent, since the GPU tests cover the real one.
"""

from __future__ import annotations

import asyncio
import enum
import json
import importlib.util
import sys
import types

import pytest
from pydantic import ValidationError

from rayhet.engines import vllm as ve
from rayhet.engines import vllm_convert as vc
from rayhet.engines.base import (
    EngineError,
    EngineOverloadedError,
    GenerationRequest,
    InvalidRequestError,
    ParsedReply,
    SamplingParams,
)

HAVE_VLLM = importlib.util.find_spec("vllm") is not None


# -- settings ------------------------------------------------------------------------------------
def test_engine_args_defaults_leave_vllm_defaults_alone():
    args = ve.engine_args_dict(ve.VllmSettings(model="/m"))
    assert args["model"] == "/m" and args["tensor_parallel_size"] == 1 and args["max_num_seqs"] == 256
    assert args["stream_interval"] == 16  # fewer, larger deltas through Serve (the first token still at once)
    assert "max_model_len" not in args and "quantization" not in args and "tokenizer" not in args
    assert "max_waiting" not in args and "engine_args" not in args


def test_engine_args_pass_through_and_named_fields():
    s = ve.VllmSettings(model="m", tensor_parallel_size=2, gpu_memory_utilization=0.5, max_model_len=4096,
                        dtype="bfloat16", quantization="fp8", engine_args={"kv_cache_dtype": "fp8"})
    args = ve.engine_args_dict(s)
    assert args["quantization"] == "fp8" and args["kv_cache_dtype"] == "fp8" and args["max_model_len"] == 4096
    assert s.gpus_per_replica == 2


def test_settings_reject_unknown_and_shadowed_fields():
    with pytest.raises(ValidationError, match="n_threads"):
        ve.VllmSettings(model="m", n_threads=4)
    with pytest.raises(ValidationError, match="repeats"):
        ve.VllmSettings(model="m", engine_args={"max_num_seqs": 8})
    with pytest.raises(ValidationError):
        ve.VllmSettings(model="m", gpu_memory_utilization=1.5)


def test_gpus_per_replica_counts_pipeline_stages():
    assert ve.VllmSettings(model="m", tensor_parallel_size=2, pipeline_parallel_size=2).gpus_per_replica == 4


# -- request translation -------------------------------------------------------------------------
def test_sampling_kwargs_translate_every_field():
    kw = vc.sampling_kwargs(SamplingParams(max_tokens=7, temperature=0, top_p=0.5, seed=3, stop=["\n"],
                                           ignore_eos=True, presence_penalty=0.5, frequency_penalty=-1))
    assert kw == {"n": 1, "max_tokens": 7, "temperature": 0.0, "top_p": 0.5, "ignore_eos": True,
                  "skip_special_tokens": True, "seed": 3, "stop": ["\n"], "presence_penalty": 0.5,
                  "frequency_penalty": -1.0}
    kw = vc.sampling_kwargs(SamplingParams())
    assert "seed" not in kw and "stop" not in kw and kw["ignore_eos"] is False and "structured_outputs" not in kw
    schema = {"type": "object"}
    assert vc.sampling_kwargs(SamplingParams(json_schema=schema))["structured_outputs"] == {"json": schema}
    assert vc.sampling_kwargs(SamplingParams(json_object=True))["structured_outputs"] == {"json_object": True}


def test_check_fits():
    ve.check_fits(10, 6, 16)
    with pytest.raises(InvalidRequestError, match="exceeds the context") as e:
        ve.check_fits(10, 7, 16)
    assert e.value.param == "max_tokens"
    with pytest.raises(InvalidRequestError, match="empty"):
        ve.check_fits(0, 1, 16)


def _out(ids, text="", finished=False, reason=None, prompt=None):
    comp = types.SimpleNamespace(token_ids=ids, text=text, finish_reason=reason)
    return types.SimpleNamespace(outputs=[comp], finished=finished, prompt_token_ids=prompt)


def test_delta_builder_counts_tokens_and_stamps_first_token():
    t = iter([5.0, 6.0, 7.0])
    b = vc.DeltaBuilder(prompt_tokens=3, clock=lambda: next(t))
    assert b.feed(_out([], prompt=[1, 2, 3, 4])) is None  # nothing yet: nothing to send
    d1 = b.feed(_out([10, 11], "ab"))
    assert d1.text == "ab" and d1.token_ids == [10, 11] and d1.first_token_time == 5.0 and d1.finish_reason is None
    d2 = b.feed(_out([12], "c", finished=True, reason="length"))
    assert d2.finish_reason == "length" and d2.first_token_time == 5.0
    assert (d2.usage.prompt_tokens, d2.usage.completion_tokens) == (4, 3) and b.finished


def test_delta_builder_final_only_output_takes_the_engines_first_token_stamp():
    b = vc.DeltaBuilder(prompt_tokens=2, clock=lambda: 99.0)
    out = _out([10, 11, 12], "abc", finished=True, reason="length", prompt=[1, 2])
    out.metrics = types.SimpleNamespace(first_token_ts=41.5)  # vLLM's RequestStateStats (log_stats on)
    d = b.feed(out)
    assert (d.token_ids, d.text, d.first_token_time, d.usage.completion_tokens) == ([10, 11, 12], "abc", 41.5, 3)
    # without metrics (log stats off) the arrival time is all there is
    b = vc.DeltaBuilder(prompt_tokens=2, clock=lambda: 99.0)
    assert b.feed(_out([10], "a", finished=True, reason="length")).first_token_time == 99.0


@pytest.mark.parametrize("reason,ours", [("stop", "stop"), ("length", "length"), ("abort", "abort"),
                                         ("error", "error"), (None, "stop"), ("something-new", "stop")])
def test_finish_reasons(reason, ours):
    assert vc.finish_reason_of(reason) == ours


# -- errors --------------------------------------------------------------------------------------
# Classes named as vLLM names them (mapping is by name along the MRO, so no vLLM is needed).
class VLLMValidationError(ValueError):
    def __init__(self, msg, parameter=None):
        super().__init__(msg)
        self.parameter = parameter


class EngineDeadError(Exception):
    pass


class EngineGenerateError(Exception):
    pass


def test_error_mapping():
    e = vc.map_vllm_error(VLLMValidationError("too long", parameter="max_tokens"))
    assert isinstance(e, InvalidRequestError) and e.param == "max_tokens"
    e = vc.map_vllm_error(EngineDeadError("boom"))
    assert type(e) is EngineError and "restart" in str(e)
    wrapped = EngineGenerateError()
    wrapped.__cause__ = ValueError("bad logprobs")
    assert isinstance(vc.map_vllm_error(wrapped), InvalidRequestError)
    opaque = EngineGenerateError()
    assert type(vc.map_vllm_error(opaque)) is EngineError
    assert type(vc.map_vllm_error(RuntimeError("cuda"))) is EngineError
    ours = EngineOverloadedError("full")
    assert vc.map_vllm_error(ours) is ours


# -- stats ---------------------------------------------------------------------------------------
class Clock:
    def __init__(self, t=100.0):
        self.t = t

    def __call__(self):
        return self.t


def test_token_rate_window():
    c = Clock()
    r = ve.TokenRate(window_s=5, clock=c)
    c.t = 110.2
    r.add(100)
    c.t = 111.5
    r.add(50)
    assert r.rate() == pytest.approx(150 / 5)
    c.t = 116.0  # the bin of second 110 left the window, second 111's is still in
    assert r.rate() == pytest.approx(50 / 5)
    c.t = 130.0
    assert r.rate() == 0


def test_scheduler_snapshot_reads_old_and_new_names():
    s = ve.SchedulerSnapshot()
    assert not s.fresh()
    s.update(types.SimpleNamespace(num_running_reqs=3, num_waiting_reqs=2, kv_cache_usage=0.25), now=10.0)
    assert (s.running, s.waiting, s.kv_usage) == (3, 2, 0.25) and s.fresh(now=11.0) and not s.fresh(now=13.0)
    s.update(types.SimpleNamespace(num_running_reqs=1, num_waiting_reqs=0, gpu_cache_usage=0.5), now=20.0)
    assert s.kv_usage == 0.5
    s.update(None)
    assert s.at == 20.0


# -- the engine over a stand-in vLLM -------------------------------------------------------------
class FakeTokenizer:
    """One token per byte, plus BOS = 256; a ChatML-like template."""

    bos_token, eos_token = "<s>", "</s>"
    chat_template = "{{ bos_token }}{% for m in messages %}[{{ m['role'] }}]{{ m['content'] }}{% endfor %}[assistant]"

    def __len__(self):
        return 260

    def encode(self, text, add_special_tokens=True):
        ids = []
        if text.startswith("<s>"):
            ids, text = [256], text[3:]
        return ([256] if add_special_tokens else []) + ids + list(text.encode())


def _stand_in_vllm(state: dict) -> dict[str, types.ModuleType]:
    class RequestOutputKind(enum.Enum):
        CUMULATIVE = 0
        DELTA = 1
        FINAL_ONLY = 2

    class SamplingParams:
        def __init__(self, **kw):
            self.__dict__.update(kw)

    class AsyncEngineArgs:
        def __init__(self, **kw):
            state["engine_args"] = kw
            self.kw = kw

    class StatLoggerBase:
        pass

    class AsyncLLM:
        def __init__(self, args, stat_loggers):
            self.loggers = [f(None, 0) for f in stat_loggers or []]
            self.vllm_config = types.SimpleNamespace(
                model_config=types.SimpleNamespace(max_model_len=args.kw.get("max_model_len", 1024)),
                scheduler_config=types.SimpleNamespace(max_num_seqs=args.kw["max_num_seqs"]))
            self.errored = False
            self.shut = False

        @classmethod
        def from_engine_args(cls, args, stat_loggers=None):
            if state.get("fail_start"):
                raise RuntimeError("no GPU")
            llm = cls(args, stat_loggers)
            state["llm"] = llm
            return llm

        async def generate(self, prompt, params, request_id):
            state.setdefault("requests", []).append((request_id, prompt, params))
            try:
                if state.get("fail_with"):
                    raise state["fail_with"]
                for lg in self.loggers:
                    lg.record(types.SimpleNamespace(num_running_reqs=1, num_waiting_reqs=0, kv_cache_usage=0.1), None)
                n = params.max_tokens
                for k in range(n):
                    await asyncio.sleep(state.get("tpot", 0))
                    last = k == n - 1
                    yield _out([65 + k % 26], chr(65 + k % 26), finished=last, reason="length" if last else None,
                               prompt=prompt["prompt_token_ids"] if k == 0 else None)
            except (asyncio.CancelledError, GeneratorExit):
                state.setdefault("aborted", []).append(request_id)  # what vLLM does: abort in the engine
                raise

        async def check_health(self):
            if self.errored:
                raise EngineDeadError()

        def shutdown(self):
            self.shut = True

    mods = {name: types.ModuleType(name) for name in (
        "vllm", "vllm.engine", "vllm.engine.arg_utils", "vllm.sampling_params", "vllm.v1", "vllm.v1.engine",
        "vllm.v1.engine.async_llm", "vllm.v1.metrics", "vllm.v1.metrics.loggers")}
    mods["vllm"].SamplingParams = SamplingParams
    mods["vllm.engine.arg_utils"].AsyncEngineArgs = AsyncEngineArgs
    mods["vllm.sampling_params"].RequestOutputKind = RequestOutputKind
    mods["vllm.v1.engine.async_llm"].AsyncLLM = AsyncLLM
    mods["vllm.v1.metrics.loggers"].StatLoggerBase = StatLoggerBase
    return mods


needs_stand_in = pytest.mark.skipif(HAVE_VLLM, reason="the real vLLM is installed: tests/gpu covers the engine")


@pytest.fixture
def fake(monkeypatch):
    state: dict = {}
    for name, mod in _stand_in_vllm(state).items():
        monkeypatch.setitem(sys.modules, name, mod)
    monkeypatch.setattr(ve, "_load_tokenizer", lambda settings: FakeTokenizer())
    return state


async def _started(**kw):
    eng = ve.VllmEngine(ve.VllmSettings(model="/m", **kw))
    await eng.start()
    return eng


@needs_stand_in
async def test_engine_streams_deltas_with_usage(fake):
    eng = await _started(max_num_seqs=4, max_model_len=64)
    assert (eng.max_context, eng.max_batch) == (64, 4)
    assert fake["engine_args"]["model"] == "/m" and "max_waiting" not in fake["engine_args"]
    req = GenerationRequest("r1", prompt="hi", sampling=SamplingParams(max_tokens=3, ignore_eos=True, seed=1))
    deltas = [d async for d in eng.generate(req)]
    assert "".join(d.text for d in deltas) == "ABC" and deltas[-1].finish_reason == "length"
    assert (deltas[-1].usage.prompt_tokens, deltas[-1].usage.completion_tokens) == (3, 3)  # BOS + 'h' + 'i'
    rid, prompt, params = fake["requests"][0]
    assert rid.startswith("r1-") and prompt == {"prompt_token_ids": [256, 104, 105]}
    assert params.output_kind.name == "DELTA" and params.seed == 1 and params.ignore_eos is True
    st = eng.stats()
    assert st.requests_total == 1 and st.generated_tokens_total == 3 and st.prompt_tokens_total == 3
    assert st.kv_usage == pytest.approx(0.1) and st.max_running == 4
    await eng.shutdown()
    assert fake["llm"].shut


@needs_stand_in
async def test_engine_chat_and_token_prompts(fake):
    eng = await _started()
    assert eng.render_chat([{"role": "user", "content": "x"}]) == "<s>[user]x[assistant]"
    ids = eng.tokenize("ab")
    assert ids == [256, 97, 98] and eng.count_tokens("ab") == 3
    req = GenerationRequest("c", messages=[{"role": "user", "content": "x"}], sampling=SamplingParams(max_tokens=1))
    [d async for d in eng.generate(req)]
    # the template's own BOS, none added on top
    assert fake["requests"][-1][1]["prompt_token_ids"][:2] == [256, ord("[")]
    req = GenerationRequest("t", prompt_token_ids=[1, 2], sampling=SamplingParams(max_tokens=1))
    [d async for d in eng.generate(req)]
    assert fake["requests"][-1][1] == {"prompt_token_ids": [1, 2]}
    with pytest.raises(InvalidRequestError):
        [d async for d in eng.generate(GenerationRequest("bad", prompt_token_ids=[999]))]
    with pytest.raises(InvalidRequestError):
        [d async for d in eng.generate(GenerationRequest("none"))]


@needs_stand_in
async def test_engine_rejects_what_does_not_fit(fake):
    eng = await _started(max_model_len=16)
    with pytest.raises(InvalidRequestError, match="exceeds the context"):
        [d async for d in eng.generate(GenerationRequest("r", prompt="0123456789", sampling=SamplingParams(max_tokens=8)))]
    with pytest.raises(InvalidRequestError, match="temperature"):
        [d async for d in eng.generate(GenerationRequest("r", prompt="0", sampling=SamplingParams(temperature=5)))]
    assert "requests" not in fake  # nothing reached vLLM


@needs_stand_in
async def test_closing_the_stream_aborts_the_request(fake):
    fake["tpot"] = 0.001
    eng = await _started()
    gen = eng.generate(GenerationRequest("gone", prompt="x", sampling=SamplingParams(max_tokens=50)))
    first = await gen.__anext__()
    assert first.text == "A" and eng.stats().running == 1
    await gen.aclose()
    assert fake["aborted"] == [fake["requests"][0][0]]
    assert eng._inflight == 0


@needs_stand_in
async def test_cancelled_consumer_aborts_the_request(fake):
    fake["tpot"] = 0.01
    eng = await _started()

    async def consume():
        async for _ in eng.generate(GenerationRequest("c", prompt="x", sampling=SamplingParams(max_tokens=500))):
            pass

    task = asyncio.create_task(consume())
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert len(fake["aborted"]) == 1 and eng._inflight == 0


@needs_stand_in
async def test_overload_and_errors_are_typed(fake):
    fake["tpot"] = 0.01
    eng = await _started(max_num_seqs=1, max_waiting=1)
    gens = [eng.generate(GenerationRequest(f"r{k}", prompt="x", sampling=SamplingParams(max_tokens=100)))
            for k in range(3)]
    await gens[0].__anext__()
    await gens[1].__anext__()
    with pytest.raises(EngineOverloadedError):
        await gens[2].__anext__()
    for g in gens[:2]:
        await g.aclose()
    fake["tpot"] = 0
    fake["fail_with"] = VLLMValidationError("bad", parameter="top_p")
    with pytest.raises(InvalidRequestError):
        [d async for d in eng.generate(GenerationRequest("v", prompt="x"))]
    fake["fail_with"] = EngineDeadError()
    with pytest.raises(EngineError, match="restart"):
        [d async for d in eng.generate(GenerationRequest("d", prompt="x"))]
    assert eng.stats().requests_failed == 2


@needs_stand_in
async def test_health_and_start_failures(fake):
    eng = ve.VllmEngine(ve.VllmSettings(model="/m"))
    with pytest.raises(EngineError, match="not started"):
        await eng.check_health()
    with pytest.raises(EngineError, match="not started"):
        eng.tokenize("x")
    await eng.start()
    await eng.check_health()
    fake["llm"].errored = True
    with pytest.raises(EngineError, match="restart"):
        await eng.check_health()
    fake["fail_start"] = True
    with pytest.raises(EngineError, match="could not start"):
        await _started()


def test_start_without_vllm_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "vllm", None)  # import vllm -> ImportError
    eng = ve.VllmEngine(ve.VllmSettings(model="/m"))
    with pytest.raises(EngineError, match="rayhet\\[gpu\\]"):
        asyncio.run(eng.start())


def test_module_imports_without_vllm():
    assert "vllm" not in ve.__dict__  # only the engine's start() imports vLLM


def test_vllm_logprobs_become_ours():
    """vLLM's per-position {token id: Logprob} (the sampled token and the k most likely) as TokenLogprob."""
    from types import SimpleNamespace as NS

    assert vc.sampling_kwargs(SamplingParams(logprobs=3))["logprobs"] == 3
    lp = lambda v, tok: NS(logprob=v, rank=1, decoded_token=tok)  # noqa: E731
    comp = NS(token_ids=[7, 9], text="ab", finish_reason=None,
              logprobs=[{7: lp(-0.1, "a"), 8: lp(-2.0, "c"), 5: lp(-3.0, "d")}, {9: lp(-4.0, "b"), 8: lp(-0.5, "c")}])
    b = vc.DeltaBuilder(prompt_tokens=2, clock=lambda: 1.0, top_logprobs=2)
    d = b.feed(NS(outputs=[comp], prompt_token_ids=[1, 2], finished=False, metrics=None))
    assert [(x.token, x.logprob) for x in d.logprobs] == [("a", -0.1), ("b", -4.0)]
    assert [(x.token, x.logprob) for x in d.logprobs[1].top] == [("c", -0.5), ("b", -4.0)]
    assert d.logprobs[0].bytes == [97]
    assert vc.DeltaBuilder(prompt_tokens=2).feed(NS(outputs=[comp], prompt_token_ids=[1, 2], finished=False,
                                                    metrics=None)).logprobs is None


def test_vllm_prompt_logprobs_become_ours_once():
    """prompt_logprobs (echo with logprobs): vLLM's list, None for the first prompt token and then {token id:
    Logprob} per position, becomes ours on the delta of the output that carries it, the first entry's logprob
    None with its text from the tokenizer; a later output without them adds none, and unasked they are dropped."""
    from types import SimpleNamespace as NS

    assert vc.sampling_kwargs(SamplingParams(prompt_logprobs=2))["prompt_logprobs"] == 2
    assert "prompt_logprobs" not in vc.sampling_kwargs(SamplingParams(logprobs=2))
    lp = lambda v, tok: NS(logprob=v, rank=1, decoded_token=tok)  # noqa: E731
    steps = [None, {11: lp(-1.5, "x"), 3: lp(-0.2, "y"), 4: lp(-3.0, "z")}, {12: lp(-0.7, "w"), 3: lp(-2.5, "y")}]
    first = NS(outputs=[NS(token_ids=[7], text="a", finish_reason=None, logprobs=None)], prompt_token_ids=[1, 11, 12],
               prompt_logprobs=steps, finished=False, metrics=None)
    b = vc.DeltaBuilder(prompt_tokens=3, clock=lambda: 1.0, prompt_top_logprobs=1, decode=lambda t: {1: ""}[t])
    d = b.feed(first)
    assert [(x.token, x.logprob) for x in d.prompt_logprobs] == [("", None), ("x", -1.5), ("w", -0.7)]
    assert [[(t.token, t.logprob) for t in x.top] for x in d.prompt_logprobs] == [[], [("y", -0.2)], [("w", -0.7)]]
    later = NS(outputs=[NS(token_ids=[8], text="b", finish_reason="length", logprobs=None)],
               prompt_token_ids=[1, 11, 12], prompt_logprobs=None, finished=True, metrics=None)
    assert b.feed(later).prompt_logprobs is None
    assert vc.DeltaBuilder(prompt_tokens=3).feed(first).prompt_logprobs is None
    # an output with the prompt scored and no token yet still makes a delta: they are not lost
    bare = NS(outputs=[NS(token_ids=[], text="", finish_reason=None, logprobs=None)], prompt_token_ids=[1, 11, 12],
              prompt_logprobs=steps, finished=False, metrics=None)
    assert len(vc.DeltaBuilder(prompt_tokens=3, prompt_top_logprobs=0).feed(bare).prompt_logprobs) == 3


# -- the pool's tool-call parser (tool_call_parser) over a stand-in vllm.tool_parsers ---------------------
class _StandInRequest:
    """vLLM's ChatCompletionRequest as a tool parser reads it (tools, tool_choice, skip_special_tokens)."""

    def __init__(self, data):
        self.tools = [types.SimpleNamespace(**t) for t in data["tools"]]
        self.tool_choice, self.skip_special_tokens, self.structured_outputs = data["tool_choice"], True, None

    @classmethod
    def model_validate(cls, data):
        if any(t["function"]["name"] == "bad" for t in data["tools"]):
            raise ValueError("tools: bad")
        return cls(data)


class _StandInParser:
    """Reads any output as one call of the first tool whose arguments hold the whole text (so a test sees that
    the parser got the output whole); keeps special tokens, as vLLM's hermes parser asks."""

    def __init__(self, tokenizer, tools=None):
        self.tools = tools or []

    def adjust_request(self, request):
        request.skip_special_tokens = False
        return request

    def extract_tool_calls(self, model_output, request):
        if model_output == "ABCD":
            raise RuntimeError("parser bug")
        fn = types.SimpleNamespace(name=request.tools[0].function["name"], arguments=json.dumps({"text": model_output}))
        return types.SimpleNamespace(tools_called=True, content=None,
                                     tool_calls=[types.SimpleNamespace(id="chatcmpl-tool-1", function=fn)])


@pytest.fixture
def parsers(fake, monkeypatch):
    class ToolParserManager:
        @classmethod
        def get_tool_parser(cls, name):
            if name != "stand_in":
                raise KeyError(name)
            return _StandInParser

        @classmethod
        def list_registered(cls):
            return ["hermes", "stand_in"]

    names = ("vllm.tool_parsers", "vllm.entrypoints", "vllm.entrypoints.openai",
             "vllm.entrypoints.openai.chat_completion", "vllm.entrypoints.openai.chat_completion.protocol")
    mods = {n: types.ModuleType(n) for n in names}
    mods["vllm.tool_parsers"].ToolParserManager = ToolParserManager
    mods[names[-1]].ChatCompletionRequest = _StandInRequest
    for n, m in mods.items():
        monkeypatch.setitem(sys.modules, n, m)
    return fake


@needs_stand_in
async def test_engine_parses_a_tool_request_whole_with_the_pools_parser(parsers):
    eng = await _started(tool_call_parser="stand_in")
    fns = [{"name": "get_weather", "parameters": {"type": "object"}}]
    for stream in (True, False):
        req = GenerationRequest("t", prompt_token_ids=[1, 2], sampling=SamplingParams(max_tokens=3), tools=fns,
                                stream=stream)
        deltas = [d async for d in eng.generate(req)]
        assert all(d.parsed is None for d in deltas[:-1])
        (call,) = deltas[-1].parsed.tool_calls
        assert (call.id, call.name, json.loads(call.arguments)) == ("chatcmpl-tool-1", "get_weather", {"text": "ABC"})
        assert parsers["requests"][-1][2].skip_special_tokens is False  # as the parser adjusted the request
    [d async for d in eng.generate(GenerationRequest("p", prompt="x", sampling=SamplingParams(max_tokens=1)))]
    assert parsers["requests"][-1][2].skip_special_tokens is True  # no tools: nothing changes
    # a parser that fails on an output: the text is the answer
    deltas = [d async for d in eng.generate(GenerationRequest("f", prompt="x", sampling=SamplingParams(max_tokens=4),
                                                              tools=fns))]
    assert deltas[-1].parsed == ParsedReply(content="ABCD")
    with pytest.raises(InvalidRequestError):  # tools vLLM's own validation refuses: the caller's
        [d async for d in eng.generate(GenerationRequest("b", prompt="x", tools=[{"name": "bad"}]))]


@needs_stand_in
async def test_an_unknown_parser_fails_the_replicas_start_naming_pool_field_and_the_names_there_are(parsers):
    from rayhet.serve.pool import PoolServer

    class Pool(PoolServer):
        def __del__(self) -> None:  # Serve awaits the async one; outside Serve nothing would
            pass

    server = Pool.__new__(Pool)
    with pytest.raises(EngineError) as e:
        await server.__init__("h200", "vllm", {"model": "/m", "tool_call_parser": "hermz"})
    msg = str(e.value)
    assert msg.startswith("pool h200: engine_settings.tool_call_parser:") and "'hermz'" in msg
    assert "hermes, stand_in" in msg
    assert "llm" not in parsers  # failed before vLLM loaded any weights


@needs_stand_in
async def test_a_pool_without_a_parser_refuses_tools(fake):
    eng = await _started()
    with pytest.raises(InvalidRequestError) as e:
        [d async for d in eng.generate(GenerationRequest("t", prompt="x", tools=[{"name": "f"}]))]
    assert e.value.param == "tools" and "requests" not in fake
