"""LlamaCppEngine on the tiny random-weight model: real llama.cpp generation, no timing assertions."""

from __future__ import annotations

import asyncio
import time

import pytest

from rayhet.engines.base import (
    Engine, EngineOverloadedError, GenerationRequest, InvalidRequestError, SamplingParams,
)
from rayhet.engines.text import StreamText
from rayhet.testing.models import prompt_of_tokens


def req(rid: str = "r", prompt: str = "hello world", **sampling) -> GenerationRequest:
    sampling.setdefault("temperature", 0.0)
    return GenerationRequest(request_id=rid, prompt=prompt, sampling=SamplingParams(**sampling))


async def collect(engine, request):
    deltas = [d async for d in engine.generate(request)]
    return "".join(d.text for d in deltas), [t for d in deltas for t in d.token_ids], deltas


async def wait_for(cond, timeout: float = 30.0):
    """Wait until cond() holds (no bare sleeps: poll on the event loop with a deadline)."""
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met before the deadline")
        await asyncio.sleep(0.01)


async def test_streams_deltas_with_usage(engine):
    text, ids, deltas = await collect(engine, req(max_tokens=12, ignore_eos=True))
    assert len(deltas) == 12 and len(ids) == 12
    assert all(d.finish_reason is None for d in deltas[:-1])
    last = deltas[-1]
    assert last.finish_reason == "length"
    assert last.usage.prompt_tokens == engine.count_tokens("hello world")
    assert last.usage.completion_tokens == 12
    assert text == engine.detokenize(ids)
    assert all(d.first_token_time is not None for d in deltas)


async def test_greedy_batched_equals_alone(engine):
    prompts = [f"the {w} of" + " a" * i for i, w in enumerate("abcdefgh")]
    alone = [await collect(engine, req(f"a{i}", p, max_tokens=24, ignore_eos=True)) for i, p in enumerate(prompts)]
    together = await asyncio.gather(*(collect(engine, req(f"b{i}", p, max_tokens=24, ignore_eos=True))
                                      for i, p in enumerate(prompts)))
    assert [a[1] for a in alone] == [t[1] for t in together]
    assert engine.stats().running == 0


async def test_joining_mid_flight_and_slot_gaps_keep_greedy_outputs(engine_factory):
    """12 requests of different lengths through 4 slots: they wait, join between steps, leave gaps."""
    engine = await engine_factory(n_slots=4)
    reqs = lambda tag: [req(f"{tag}{i}", f"the {chr(97 + i)}" + " a" * (i % 5), max_tokens=3 + (7 * i) % 20,
                            ignore_eos=True) for i in range(12)]
    alone = [(await collect(engine, r))[1] for r in reqs("a")]
    together = await asyncio.gather(*(collect(engine, r) for r in reqs("b")))
    assert [t[1] for t in together] == alone


async def test_seeded_sampling_reproducible_in_a_batch(engine):
    r = lambda i: req(f"s{i}", "once upon", max_tokens=16, temperature=1.0, top_p=0.9, seed=7, ignore_eos=True)
    first = await collect(engine, r(0))
    many = await asyncio.gather(*(collect(engine, r(i)) for i in range(4)))
    assert all(m[1] == first[1] for m in many)


async def test_stop_string_cuts_and_is_not_emitted(engine):
    full, _, _ = await collect(engine, req(max_tokens=40, ignore_eos=True))
    stop = next(full[i:i + 2] for i in range(4, len(full) - 2) if full[i:i + 2].isprintable())
    text, _, deltas = await collect(engine, req(max_tokens=40, ignore_eos=True, stop=[stop]))
    assert text == full[: full.find(stop)]
    assert deltas[-1].finish_reason == "stop"
    assert stop not in text


async def test_cancel_frees_the_slot(engine_factory):
    engine = await engine_factory(n_slots=1)
    gen = engine.generate(req("long", max_tokens=400, ignore_eos=True))
    await gen.__anext__()
    assert engine.stats().running == 1
    await gen.aclose()
    await wait_for(lambda: engine.stats().running == 0)
    assert engine.stats().kv_usage == 0
    _, ids, _ = await collect(engine, req("next", max_tokens=4, ignore_eos=True))
    assert len(ids) == 4


async def test_context_overflow_is_a_clear_error(engine_factory):
    engine = await engine_factory(n_ctx=64)
    with pytest.raises(InvalidRequestError, match="exceeds the context of 64") as e:
        await collect(engine, req(prompt=prompt_of_tokens(60), max_tokens=5))
    assert e.value.param == "max_tokens"
    _, ids, _ = await collect(engine, req(prompt=prompt_of_tokens(60), max_tokens=4, ignore_eos=True))
    assert len(ids) == 4


@pytest.mark.parametrize("bad, param", [({"temperature": -1.0}, "temperature"), ({"top_p": 0.0}, "top_p"),
                                        ({"max_tokens": 0}, "max_tokens"), ({"temperature": float("nan")}, "temperature"),
                                        ({"stop": [""]}, "stop")])
async def test_bad_sampling_values_rejected(engine, bad, param):
    with pytest.raises(InvalidRequestError, match=param) as e:
        await collect(engine, req(**bad))
    assert e.value.param == param


async def test_bad_prompts_rejected(engine):
    with pytest.raises(InvalidRequestError, match="token ids outside") as e:
        await collect(engine, GenerationRequest("x", prompt_token_ids=[1, 10**6]))
    assert e.value.param == "prompt_token_ids"  # the engine's field; the ingress tells the client `prompt`
    with pytest.raises(InvalidRequestError, match="exactly one"):
        await collect(engine, GenerationRequest("x", prompt="a", prompt_token_ids=[1]))
    with pytest.raises(InvalidRequestError, match="empty"):
        await collect(engine, GenerationRequest("x", prompt_token_ids=[]))


async def test_queue_bound_overloads(engine_factory):
    engine = await engine_factory(n_slots=1, max_waiting=1)
    running = engine.generate(req("a", max_tokens=400, ignore_eos=True))
    await running.__anext__()
    waiting = engine.generate(req("b", max_tokens=4))
    pending = asyncio.ensure_future(waiting.__anext__())
    await wait_for(lambda: engine.stats().waiting == 1)
    with pytest.raises(EngineOverloadedError, match="max_waiting=1"):
        await collect(engine, req("c"))
    await running.aclose()
    await pending  # the waiting request got the freed slot
    await waiting.aclose()
    await wait_for(lambda: engine.stats().running == 0 and engine.stats().waiting == 0)


async def test_chat_uses_the_models_template(engine):
    msgs = [{"role": "system", "content": "be brief"}, {"role": "user", "content": [{"type": "text", "text": "hi"}]}]
    rendered = engine.render_chat(msgs)
    assert rendered == ("<|begin_of_text|><|im_start|>system\nbe brief<|im_end|>\n"
                        "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n")
    _, _, deltas = await collect(engine, GenerationRequest("c", messages=msgs,
                                                           sampling=SamplingParams(max_tokens=3, ignore_eos=True)))
    assert deltas[-1].usage.prompt_tokens == len(engine.tokenize(rendered, add_bos=False))
    assert engine.tokenize(rendered, add_bos=False)[0] == engine.tokenize("")[0]  # BOS once, from the template


async def test_token_counting_and_exact_length_prompts(engine):
    for n in (1, 2, 37, 128):
        assert engine.count_tokens(prompt_of_tokens(n)) == n
    _, _, deltas = await collect(engine, req(prompt=prompt_of_tokens(37), max_tokens=2, ignore_eos=True))
    assert deltas[-1].usage.prompt_tokens == 37
    ids = list(range(5, 105))
    _, _, deltas = await collect(engine, GenerationRequest("t", prompt_token_ids=ids,
                                                           sampling=SamplingParams(max_tokens=2, ignore_eos=True)))
    assert deltas[-1].usage.prompt_tokens == 100


async def test_long_prompt_is_prefilled_in_chunks_beside_running(engine_factory):
    engine = await engine_factory(n_batch=16, n_slots=2)
    alone = await collect(engine, req("x", prompt_of_tokens(100), max_tokens=8, ignore_eos=True))
    short, long_ = await asyncio.gather(collect(engine, req("s", max_tokens=30, ignore_eos=True)),
                                        collect(engine, req("l", prompt_of_tokens(100), max_tokens=8, ignore_eos=True)))
    assert long_[1] == alone[1] and len(short[1]) == 30



@pytest.mark.parametrize("allowance, first", [(0.0, "long"), (5.0, "short")])
async def test_prompt_chunks_go_to_the_first_token_due_soonest(engine_factory, allowance, first):
    """A short prompt arriving just after a long one: oldest-first (allowance 0) prefills the long one before it;
    with the SLO's TTFT allowance per 1k prompt tokens (5 s here) the short one's first token is due ~5 s
    sooner, so its chunk goes first and it finishes while the long prompt is still being prefilled."""
    engine = await engine_factory(n_batch=8, n_slots=2, n_ctx=1200, prefill_allowance_s_per_1k=allowance)
    done: list[str] = []

    async def one(name: str, prompt: str) -> None:
        await collect(engine, req(name, prompt, max_tokens=1, ignore_eos=True))
        done.append(name)

    long_ = asyncio.ensure_future(one("long", prompt_of_tokens(1000)))  # 125 steps of 8 prompt tokens
    short = asyncio.ensure_future(one("short", prompt_of_tokens(6)))
    await asyncio.gather(long_, short)
    assert done[0] == first


async def test_steps_with_decoding_sequences_keep_to_n_batch_decoding(engine_factory):
    """Stall-free chunking: while a sequence decodes, a step carries at most n_batch_decoding tokens (its decode
    token, then prompt chunks); a step with nothing decoding still takes n_batch. Read from the engine's step log."""
    engine = await engine_factory(n_batch=64, n_batch_decoding=8, n_slots=2, n_ctx=600)
    engine.step_log = []
    # "a" decodes for hundreds of steps, so "b" (sent once "a" decodes) is prefilled beside it
    first = asyncio.ensure_future(collect(engine, req("a", prompt_of_tokens(200), max_tokens=390, ignore_eos=True)))
    await wait_for(lambda: any(dec for _, _, dec, *_ in engine.step_log))
    await collect(engine, req("b", prompt_of_tokens(300), max_tokens=2, ignore_eos=True))
    await first
    log, engine.step_log = engine.step_log, None
    mixed = [(prefill, dec) for prefill, _, dec, *_ in log if dec and prefill]
    assert mixed and all(prefill + dec <= 8 for prefill, dec in mixed)
    assert max(prefill for prefill, _, dec, *_ in log if not dec) == 64  # "a"'s prompt alone: full steps
    with pytest.raises(ValueError, match="n_batch_decoding"):
        from rayhet.engines.llama_cpp import LlamaCppSettings

        LlamaCppSettings(model_path="m.gguf", n_slots=8, n_batch=64, n_batch_decoding=4)

async def test_stats_count_requests(engine):
    await collect(engine, req(max_tokens=5, ignore_eos=True))
    st = engine.stats()
    assert st.requests_total == 1 and st.generated_tokens_total == 5 and st.max_running == 8
    assert st.prompt_tokens_total == engine.count_tokens("hello world") and st.tokens_per_s > 0
    await engine.check_health()
    assert isinstance(engine, Engine)  # the protocol a pool replica drives


async def test_shutdown_ends_open_streams(engine_factory):
    engine = await engine_factory(n_slots=1)
    gen = engine.generate(req("a", max_tokens=400, ignore_eos=True))
    await gen.__anext__()
    await engine.shutdown()
    with pytest.raises(Exception, match="shut down"):
        async for _ in gen:
            pass


def test_stream_text_holds_back_partial_stops():
    st = StreamText(["END"])
    assert st.push(b"abcE") == "abc"
    assert st.push(b"N") == ""
    assert st.push(b"x") == "ENx"
    assert st.push(b"yEND tail") == "y" and st.stopped
    st = StreamText([])
    assert st.push("é".encode()[:1]) == "" and st.push("é".encode()[1:]) == "é"
    st = StreamText(["ab", "b"])
    assert st.push(b"xab") == "x" and st.stopped  # the earliest stop wins


def test_settings_do_not_need_the_model_file_here_but_reject_bad_paths(tmp_path):
    """The config is read where `build()` runs (a KubeRay head without the model): no file check there."""
    from pydantic import ValidationError

    from rayhet.engines.llama_cpp import LlamaCppSettings

    assert LlamaCppSettings(model_path="/models/not-on-this-node.gguf").model_path.endswith(".gguf")
    for bad in ["", "  ", f"{tmp_path}/", " x.gguf"]:
        with pytest.raises(ValidationError, match="model_path"):
            LlamaCppSettings(model_path=bad)


async def test_a_missing_model_file_fails_the_engine_start_clearly(tmp_path):
    from rayhet.engines.base import EngineError
    from rayhet.engines.llama_cpp import LlamaCppEngine, LlamaCppSettings

    for path, what in [(tmp_path / "missing.gguf", "does not exist"), (tmp_path, "is a directory")]:
        engine = LlamaCppEngine(LlamaCppSettings(model_path=str(path)))
        with pytest.raises(EngineError, match=f"{what} on node .*GGUF"):
            await engine.start()


async def test_presence_and_frequency_penalties_steer_greedy_decoding(engine):
    """OpenAI's penalties on llama.cpp (issue 17): greedy decoding on the random model repeats tokens; a
    presence penalty of 2 lowers every token already generated, so fewer repeats and a different sequence.
    The prompt's tokens are not penalised (the sampler sees only what it sampled), so zero penalties keep
    the plain greedy output."""
    plain = (await collect(engine, req("p0", "the a of", max_tokens=48, ignore_eos=True)))[1]
    zero = (await collect(engine, req("p1", "the a of", max_tokens=48, ignore_eos=True, presence_penalty=0.0,
                                      frequency_penalty=0.0)))[1]
    pen = (await collect(engine, req("p2", "the a of", max_tokens=48, ignore_eos=True, presence_penalty=2.0)))[1]
    freq = (await collect(engine, req("p3", "the a of", max_tokens=48, ignore_eos=True, frequency_penalty=2.0)))[1]
    assert zero == plain
    assert len(set(plain)) < len(plain), "the greedy output has no repeats: the test cannot see a penalty"
    assert pen != plain and len(set(pen)) > len(set(plain))
    assert freq != plain


SCHEMA = {"type": "object", "properties": {"ok": {"type": "boolean"}, "color": {"enum": ["red", "green", "blue"]},
                                           "tags": {"type": "array", "items": {"enum": ["a", "b"]}, "maxItems": 3}},
          "required": ["ok", "color", "tags"], "additionalProperties": False}


@pytest.mark.parametrize("temperature", [0.0, 1.0])
async def test_json_schema_output_validates_against_the_schema(engine, temperature):
    """response_format json_schema on llama.cpp (issue 17): a grammar from the schema; the random model's output
    is valid JSON of that schema, and the grammar ends it (finish "stop", EOS allowed once it is complete)."""
    import json

    import jsonschema

    for k in range(3):
        text, ids, deltas = await collect(engine, req(f"s{k}", "the a of", max_tokens=200, temperature=temperature,
                                                      seed=k, json_schema=SCHEMA))
        jsonschema.validate(json.loads(text), SCHEMA)
        assert deltas[-1].finish_reason == "stop"


async def test_json_object_output_is_an_object_and_a_bad_schema_is_refused(engine):
    import json

    text, _, deltas = await collect(engine, req("o", "the a of", max_tokens=64, json_object=True))
    assert text.lstrip().startswith("{")
    if deltas[-1].finish_reason == "stop":  # ended by the grammar (else cut at max_tokens, as at OpenAI)
        assert isinstance(json.loads(text), dict)
    with pytest.raises(InvalidRequestError) as e:
        await collect(engine, req("bad", "x", max_tokens=4, json_schema={"type": "wat"}))
    assert e.value.param == "response_format" and "grammar" in str(e.value)
    assert engine.stats().running == 0


async def test_logprobs_are_the_models_and_greedy_takes_the_most_likely(engine):
    """logprobs on llama.cpp (issue 17): one per generated token, from the raw logits (log-softmax); under
    greedy decoding the sampled token is the most likely one, and the top ones are in descending order."""
    import math

    _, ids, deltas = await collect(engine, req("lp", "the a of", max_tokens=12, ignore_eos=True, logprobs=4))
    lps = [lp for d in deltas for lp in d.logprobs]
    assert len(lps) == len(ids) == 12
    for lp, t in zip(lps, ids):
        assert lp.logprob <= 0 and len(lp.top) == 4
        assert [x.logprob for x in lp.top] == sorted((x.logprob for x in lp.top), reverse=True)
        assert lp.top[0].logprob == pytest.approx(lp.logprob) and lp.token == engine.detokenize([t])
        assert sum(math.exp(x.logprob) for x in lp.top) <= 1 + 1e-6
    sampled = [lp for d in (await collect(engine, req("lp1", "the a of", max_tokens=12, ignore_eos=True,
                                                     temperature=1.0, seed=5, logprobs=0)))[2] for lp in d.logprobs]
    assert len(sampled) == 12 and all(lp.top == [] and lp.logprob <= 0 for lp in sampled)
    _, _, plain = await collect(engine, req("lp2", "the a of", max_tokens=3))
    assert all(d.logprobs is None for d in plain)


async def test_prompt_logprobs_score_the_prompt_as_decoding_scored_the_output(engine_factory):
    """Prompt logprobs (OpenAI's echo with logprobs): the output of a greedy run fed back as a prompt is scored
    with the logprobs decoding gave each of its tokens, top ones included; the first prompt token has none.
    With a prompt longer than n_batch, the rows of every prefill chunk count, and the scores stay the same."""
    engine = await engine_factory()
    prompt_ids = engine.tokenize("the a of")
    _, ids, deltas = await collect(engine, req("g", "the a of", max_tokens=20, ignore_eos=True, logprobs=3))
    decoded = [lp for d in deltas for lp in d.logprobs]
    assert all(d.prompt_logprobs is None for d in deltas)  # not asked
    for n_batch in (512, 8):  # one prefill step; several
        eng = engine if n_batch == 512 else await engine_factory(n_batch=n_batch)
        fed = GenerationRequest("p", prompt_token_ids=prompt_ids + ids, sampling=SamplingParams(
            max_tokens=2, temperature=0.0, logprobs=1, prompt_logprobs=3))
        _, _, out = await collect(eng, fed)
        scored = out[0].prompt_logprobs
        assert all(d.prompt_logprobs is None for d in out[1:])
        assert len(scored) == len(prompt_ids) + len(ids)
        assert scored[0].logprob is None and scored[0].top == []
        assert scored[0].token == engine.detokenize(prompt_ids[:1])
        assert all(lp.logprob is not None and lp.logprob <= 0 and len(lp.top) == 3 for lp in scored[1:])
        assert [lp.token for lp in scored] == [engine.detokenize([t]) for t in prompt_ids + ids]
        for s, d in zip(scored[len(prompt_ids):], decoded):
            assert s.token == d.token and s.logprob == pytest.approx(d.logprob, abs=1e-3)
            assert [t.token for t in s.top] == [t.token for t in d.top]
            assert [t.logprob for t in s.top] == pytest.approx([t.logprob for t in d.top], abs=1e-3)
    assert engine.stats().running == 0


def test_token_logprobs_is_a_log_softmax_with_the_most_likely_first():
    import math

    import numpy as np

    from rayhet.engines.llama_cpp import token_logprobs

    logits = np.array([1.0, 3.0, 2.0, -1.0], dtype=np.float32)
    lse = math.log(sum(math.exp(x) for x in logits))
    lp, top = token_logprobs(logits, 2, 2)
    assert lp == pytest.approx(2.0 - lse) and [t for t, _ in top] == [1, 2]
    assert [v for _, v in top] == pytest.approx([3.0 - lse, 2.0 - lse])
    assert token_logprobs(logits, 0, 0) == (pytest.approx(1.0 - lse), [])
    assert [t for t, _ in token_logprobs(logits, 0, 9)[1]] == [1, 2, 0, 3]
