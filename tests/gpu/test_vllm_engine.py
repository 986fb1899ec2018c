"""VllmEngine on a real GPU: streaming, exact usage, seeds, chat, cancellation, backpressure, health, tool calls
read by vLLM's own tool parser (the engine runs with `tool_call_parser: hermes`; requests without tools ignore it).

Skipped, saying why, where there is no CUDA GPU or no vLLM. One engine (a small random-weight Llama made
with rayhet.testing.models) serves the whole module; its event loop is the module's own, so the tests
need no asyncio plugin.
"""

from __future__ import annotations

import asyncio
import importlib.util
import subprocess

import pytest

from rayhet.engines.base import EngineOverloadedError, GenerationRequest, InvalidRequestError, SamplingParams


def _skip_reason() -> str | None:
    if importlib.util.find_spec("vllm") is None:
        return "vLLM is not installed (pip install rayhet[gpu] on a GPU machine)"
    # nvidia-smi, not torch.cuda: touching CUDA here would break the fork vLLM starts its engine with
    try:
        found = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        found = ""
    return None if "GPU" in found else "no NVIDIA GPU visible (nvidia-smi -L lists none)"


_REASON = _skip_reason()
pytestmark = [pytest.mark.gpu, pytest.mark.skipif(_REASON is not None, reason=_REASON or "")]

MAX_SEQS = 8


@pytest.fixture(scope="module")
def loop():
    lp = asyncio.new_event_loop()
    yield lp
    lp.close()


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    from rayhet.testing.models import LlamaShape, write_hf

    # head_dim 64: what every GPU attention backend supports
    shape = LlamaShape(vocab_size=512, hidden_size=256, intermediate_size=512, num_layers=2, num_heads=4,
                       num_kv_heads=2, max_position=2048)
    return write_hf(tmp_path_factory.mktemp("gpu-model") / "tiny-hf", shape, seed=0)


@pytest.fixture(scope="module")
def engine(loop, model_dir):
    from rayhet.engines.vllm import VllmEngine, VllmSettings

    eng = VllmEngine(VllmSettings(model=str(model_dir), max_model_len=1024, max_num_seqs=MAX_SEQS,
                                  gpu_memory_utilization=0.3, max_waiting=4, tool_call_parser="hermes"))
    loop.run_until_complete(eng.start())
    yield eng
    loop.run_until_complete(eng.shutdown())


async def _collect(eng, req):
    return [d async for d in eng.generate(req)]


def test_limits_come_from_the_engine(engine):
    assert engine.max_context == 1024 and engine.max_batch == MAX_SEQS


def test_exact_lengths_with_ignore_eos(loop, engine):
    prompt = "the quick brown fox"
    n_prompt = engine.count_tokens(prompt)
    deltas = loop.run_until_complete(_collect(engine, GenerationRequest(
        "len", prompt=prompt, sampling=SamplingParams(max_tokens=37, ignore_eos=True, temperature=0))))
    last = deltas[-1]
    assert last.finish_reason == "length"
    assert (last.usage.prompt_tokens, last.usage.completion_tokens) == (n_prompt, 37)
    assert sum(len(d.token_ids) for d in deltas) == 37
    assert all(d.first_token_time is not None for d in deltas)
    assert len(deltas) > 1  # streamed, not one final chunk


def test_non_streamed_request_is_one_final_delta_with_the_engines_first_token_time(loop, engine):
    import time

    def run(stream):
        t0 = time.monotonic()
        ds = loop.run_until_complete(_collect(engine, GenerationRequest(
            f"final{stream}", prompt="hello there", stream=stream,
            sampling=SamplingParams(max_tokens=64, ignore_eos=True, temperature=0))))
        return ds, t0, time.monotonic()

    streamed, _, _ = run(True)
    (final,), t0, t1 = run(False)  # FINAL_ONLY: exactly one delta
    assert final.token_ids == [t for d in streamed for t in d.token_ids]
    assert final.text == "".join(d.text for d in streamed)
    assert final.finish_reason == "length" and final.usage.completion_tokens == 64
    # the engine core's stamp of the first token: after the call, and before the end (64 decode steps)
    assert t0 <= final.first_token_time < t1


def test_same_seed_same_tokens(loop, engine):
    def run(seed):
        ds = loop.run_until_complete(_collect(engine, GenerationRequest(
            f"seed{seed}", prompt="hello", sampling=SamplingParams(max_tokens=16, ignore_eos=True, seed=seed))))
        return [t for d in ds for t in d.token_ids]

    assert run(1) == run(1)
    assert run(1) != run(2)


def test_structured_output_penalties_and_logprobs(loop, engine):
    """Issue 17 on vLLM: response_format json_schema through vLLM's structured outputs (valid JSON of the
    schema from a random-weight model), json_object, and the penalties accepted."""
    import json

    import jsonschema

    schema = {"type": "object", "properties": {"ok": {"type": "boolean"}, "size": {"enum": ["s", "m", "l"]}},
              "required": ["ok", "size"], "additionalProperties": False}
    ds = loop.run_until_complete(_collect(engine, GenerationRequest(
        "json", prompt="hello", sampling=SamplingParams(max_tokens=64, json_schema=schema, seed=1))))
    jsonschema.validate(json.loads("".join(d.text for d in ds)), schema)
    ds = loop.run_until_complete(_collect(engine, GenerationRequest(
        "obj", prompt="hello", sampling=SamplingParams(max_tokens=64, json_object=True, temperature=0))))
    assert "".join(d.text for d in ds).lstrip().startswith("{")
    ds = loop.run_until_complete(_collect(engine, GenerationRequest(
        "pen", prompt="hello", sampling=SamplingParams(max_tokens=8, ignore_eos=True, presence_penalty=1.5,
                                                       frequency_penalty=-0.5))))
    assert ds[-1].usage.completion_tokens == 8
    ds = loop.run_until_complete(_collect(engine, GenerationRequest(
        "lp", prompt="hello", sampling=SamplingParams(max_tokens=6, ignore_eos=True, temperature=0, logprobs=3))))
    lps = [lp for d in ds for lp in d.logprobs]
    assert len(lps) == 6 and all(len(lp.top) == 3 and lp.top[0].logprob == pytest.approx(lp.logprob) for lp in lps)


@pytest.mark.parametrize("stream", [True, False])
def test_prompt_logprobs_score_the_prompt_as_decoding_scored_the_output(loop, engine, stream):
    """Echo with logprobs on vLLM: prompt_logprobs come once, on the first delta, one per prompt token with the
    first's logprob None; a greedy output fed back as a prompt is scored as decoding scored it."""
    prompt_ids = engine.tokenize("the quick brown fox")
    ds = loop.run_until_complete(_collect(engine, GenerationRequest(
        f"gen{stream}", prompt_token_ids=prompt_ids, stream=stream,
        sampling=SamplingParams(max_tokens=12, ignore_eos=True, temperature=0, logprobs=2))))
    ids, decoded = [t for d in ds for t in d.token_ids], [lp for d in ds for lp in d.logprobs]
    assert all(d.prompt_logprobs is None for d in ds)  # not asked
    ds = loop.run_until_complete(_collect(engine, GenerationRequest(
        f"fed{stream}", prompt_token_ids=prompt_ids + ids, stream=stream,
        sampling=SamplingParams(max_tokens=2, ignore_eos=True, temperature=0, prompt_logprobs=2))))
    scored = ds[0].prompt_logprobs
    assert all(d.prompt_logprobs is None for d in ds[1:])
    assert len(scored) == len(prompt_ids) + len(ids) and scored[0].logprob is None and scored[0].top == []
    assert all(lp.logprob is not None and lp.logprob <= 0 and len(lp.top) == 2 for lp in scored[1:])
    for s, d in zip(scored[len(prompt_ids):], decoded):  # bf16/fp16 kernels: batched prefill vs decode differ a little
        assert s.token == d.token and s.logprob == pytest.approx(d.logprob, abs=0.05)


def test_chat_and_token_prompts(loop, engine):
    text = engine.render_chat([{"role": "user", "content": "hi"}])
    assert text.startswith("<|begin_of_text|><|im_start|>user") and text.endswith("assistant\n")
    ds = loop.run_until_complete(_collect(engine, GenerationRequest(
        "chat", messages=[{"role": "user", "content": "hi"}], sampling=SamplingParams(max_tokens=4, ignore_eos=True))))
    # the template carries BOS: none added on top
    assert ds[-1].usage.prompt_tokens == len(engine.tokenize(text)) - 1
    ids = engine.tokenize("abc")
    ds = loop.run_until_complete(_collect(engine, GenerationRequest(
        "ids", prompt_token_ids=ids, sampling=SamplingParams(max_tokens=3, ignore_eos=True))))
    assert ds[-1].usage.prompt_tokens == len(ids)


def test_too_long_is_a_request_error(loop, engine):
    with pytest.raises(InvalidRequestError, match="exceeds the context"):
        loop.run_until_complete(_collect(engine, GenerationRequest(
            "long", prompt_token_ids=[5] * 1000, sampling=SamplingParams(max_tokens=100))))


def test_closing_the_stream_frees_the_slot(loop, engine):
    async def scenario():
        gen = engine.generate(GenerationRequest("gone", prompt="x", sampling=SamplingParams(max_tokens=900, ignore_eos=True)))
        await gen.__anext__()
        await gen.aclose()
        for _ in range(50):  # the scheduler reports the abort within a step or two
            await asyncio.sleep(0.05)
            if engine.stats().running == 0:
                break
        return engine.stats()

    st = loop.run_until_complete(scenario())
    assert st.running == 0 and engine._inflight == 0
    ds = loop.run_until_complete(_collect(engine, GenerationRequest("after", prompt="x", sampling=SamplingParams(max_tokens=2))))
    assert ds[-1].finish_reason is not None


def test_concurrent_requests_and_backpressure(loop, engine):
    async def scenario():
        reqs = [GenerationRequest(f"c{k}", prompt=f"request {k}", sampling=SamplingParams(max_tokens=64, ignore_eos=True))
                for k in range(MAX_SEQS + 4)]
        gens = [engine.generate(r) for r in reqs]
        firsts = await asyncio.gather(*(g.__anext__() for g in gens))  # all admitted: 8 slots + 4 waiting
        extra = engine.generate(GenerationRequest("x", prompt="x", sampling=SamplingParams(max_tokens=4)))
        with pytest.raises(EngineOverloadedError):
            await extra.__anext__()

        async def rest(g, first):
            return [first] + [d async for d in g]

        return await asyncio.gather(*(rest(g, f) for g, f in zip(gens, firsts)))

    results = loop.run_until_complete(scenario())
    assert all(r[-1].usage.completion_tokens == 64 for r in results)
    st = engine.stats()
    assert st.generated_tokens_total >= 64 * len(results) and st.tokens_per_s > 0 and st.requests_failed == 0


def test_health(loop, engine):
    loop.run_until_complete(engine.check_health())


WEATHER = [{"name": "get_weather", "description": "Weather in a city",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}]
HERMES_CALL = r'<tool_call>\{"name": "get_weather", "arguments": \{"city": "(Oslo|Paris)"\}\}</tool_call>'


@pytest.mark.parametrize("stream", [True, False])
def test_a_forced_hermes_call_is_parsed_by_vllms_parser(loop, engine, monkeypatch, stream):
    """A random-weight model never chooses a tool: its output is held to a hermes call by a regex (vLLM's
    structured outputs, added for this test only), and the engine's hermes parser reads the whole output."""
    import json

    from rayhet.engines import vllm as ve

    plain = ve.sampling_kwargs
    monkeypatch.setattr(ve, "sampling_kwargs", lambda s: {**plain(s), "structured_outputs": {"regex": HERMES_CALL}})
    ds = loop.run_until_complete(_collect(engine, GenerationRequest(
        f"tool{stream}", prompt="weather?", tools=WEATHER, stream=stream,
        sampling=SamplingParams(max_tokens=200, temperature=0))))
    text = "".join(d.text for d in ds)
    assert text.startswith("<tool_call>") and ds[-1].finish_reason == "stop", text
    assert all(d.parsed is None for d in ds[:-1])
    (call,) = ds[-1].parsed.tool_calls
    assert ds[-1].parsed.content is None and call.name == "get_weather" and call.id
    assert json.loads(call.arguments)["city"] in ("Oslo", "Paris")
    assert ds[-1].usage.completion_tokens == sum(len(d.token_ids) for d in ds)


def test_vllms_hermes_parser_on_known_texts(engine):
    """The real parser through our translation: two calls with text before them, a plain answer, a broken call."""
    tools = engine._tools
    reading = tools.open(WEATHER)
    reading.add('Let me check. <tool_call>{"name": "get_weather", "arguments": {"city": "Oslo"}}</tool_call>')
    reading.add('<tool_call>{"name": "get_weather", "arguments": {"city": "Rome"}}</tool_call>')
    got = reading.parse()
    assert got.content == "Let me check. " and [c.arguments for c in got.tool_calls] == [
        '{"city": "Oslo"}', '{"city": "Rome"}']
    assert len({c.id for c in got.tool_calls}) == 2
    for text in ("It is sunny.", "<tool_call>{broken"):
        reading = tools.open(WEATHER)
        reading.add(text)
        assert (reading.parse().content, reading.parse().tool_calls) == (text, [])
    assert reading.sampling_overrides()["skip_special_tokens"] is False  # hermes keeps its tags' special tokens


def test_an_unknown_tool_parser_fails_the_start_with_the_names_there_are(loop, model_dir):
    from rayhet.engines.base import EngineError
    from rayhet.engines.vllm import VllmEngine, VllmSettings

    eng = VllmEngine(VllmSettings(model=str(model_dir), tool_call_parser="hermz"))
    with pytest.raises(EngineError, match="tool_call_parser") as e:
        loop.run_until_complete(eng.start())
    assert "'hermz'" in str(e.value) and "hermes" in str(e.value) and "llama3_json" in str(e.value)
    assert eng._llm is None  # before any weights loaded


def test_the_test_models_template_writes_tools_for_the_hermes_parser(model_dir):
    """The ingress's check (rayhet.serve.tokens.renders_tools) on the test model's template, which writes tools
    Hermes-style since format 2: an app of it sends tool_choice auto to a pool with a parser in that format."""
    from rayhet.serve.tokens import HFTokenizer

    assert HFTokenizer(str(model_dir)).renders_tools() is True
