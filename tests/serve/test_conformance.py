"""OpenAI API conformance fuzzing (issue 17): schemathesis cases from the installed `openai` client's request
types (tests/serve/openai_openapi.py) sent over HTTP through Serve's proxy to the real app on a llama.cpp
pool of the tiny model.

Cases: positive (valid for the trimmed schema) and negative (schemathesis breaks it: wrong types, missing
fields, bodies that are not JSON) for both POST endpoints, and GET /v1/models. Properties: no 5xx and no
connection error, ever; a 4xx body is OpenAI's error object and, for a JSON object body, its `param` names a
field of the request; a body invalid for the client's own schema is refused with a 4xx unless it is invalid
only in fields rayhet does not read (unknown ones are ignored by design); a 200 parses as the client's
response type (every chunk of a stream, none of them an error); afterwards the official client is still
served. Deterministic: derandomized Hypothesis (pinned in constraints.txt), a fixed number of examples per
operation and mode, no example database. Run the whole module: its last test checks the number of cases.
"""

from __future__ import annotations

import json
from collections import Counter

import pytest

import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis import GenerationMode

import openai_openapi  # tests/serve/, beside this file

pytestmark = pytest.mark.serve

APP = "conformance"
PREFIX = "/conf"
EXAMPLES = 260  # per (operation, mode): 4 x 260 = 1,040 cases, + /v1/models
MIN_CASES = 1000
CONFIG = {
    "model": {"id": openai_openapi.MODEL_ID, "gguf": "embedded:tiny"},
    "pools": [{"name": "cpu", "engine": "llama_cpp", "num_cpus": 1, "initial_replicas": 1, "max_replicas": 1,
               "engine_settings": {"n_threads": 1, "n_ctx": 2048, "n_slots": 4}}],
    # a chat request without max_tokens generates up to this many (OpenAI: what the context leaves): kept at the
    # schema's cap so that every case costs a few decode steps
    "routing": {"default_max_tokens": openai_openapi.MAX_OUTPUT},
    "server": {"access_log": False},  # a thousand access-log lines would cost the 2 cores more than the cases
}
FUZZ = settings(max_examples=EXAMPLES, derandomize=True, database=None, deadline=None,
                phases=[Phase.generate, Phase.shrink], print_blob=False,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large,
                                       HealthCheck.function_scoped_fixture])
SCHEMA = schemathesis.openapi.from_dict(openai_openapi.openapi(trimmed=True))
CLIENT_SCHEMAS = openai_openapi.request_schemas()  # untrimmed: what the client itself calls valid
SENT: Counter = Counter()  # (path, mode) -> cases sent
REFUSED: Counter = Counter()  # (path, mode) -> cases owed a 4xx (invalid for the client's schema), and refused
STATUS: Counter = Counter()  # status code -> cases


@pytest.fixture(scope="module")
def app_url(serve_url):
    from rayhet.testing.driver import deployed

    with deployed(CONFIG, APP, PREFIX):
        yield f"{serve_url}{PREFIX}"


@pytest.fixture(scope="module")
def session(app_url):
    import requests

    with requests.Session() as s:
        yield s


def _valid_for_client(path: str, body: object) -> bool:
    import jsonschema

    return isinstance(body, dict) and jsonschema.Draft202012Validator(CLIENT_SCHEMAS[path]).is_valid(body)


def _as_read(value: object, annotation: object) -> object:
    """`value` with only the keys rayhet's request models read (recursively). rayhet validates what it reads and
    ignores fields it does not know (a newer client's, e.g. `prompt_cache_breakpoint`), so a body is owed a
    4xx only when it is invalid in what rayhet reads."""
    from rayhet.serve.parsing import _model_in

    model = _model_in(annotation)
    if isinstance(value, dict) and model is not None:
        fields = {f.alias or name: f for name, f in model.model_fields.items()}
        return {k: _as_read(v, fields[k].annotation) for k, v in value.items() if k in fields}
    if isinstance(value, list):
        return [_as_read(v, annotation) for v in value]
    return value


def _owed_a_4xx(path: str, body: object) -> bool:
    """Invalid for the client's own schema (untrimmed), and still so in the fields rayhet reads or refuses (its
    parameter table)."""
    from rayhet.serve import parameters
    from rayhet.serve.openai_api import ChatRequest, CompletionRequest

    if not isinstance(body, dict):
        return True
    if _valid_for_client(path, body):
        return False  # valid, though perhaps not servable here (an image part): a 4xx or a 200 are both right
    cls = ChatRequest if path.endswith("chat/completions") else CompletionRequest
    read = _as_read(body, cls)
    read.update({k: v for k, v in body.items() if parameters.PARAMETERS[cls.endpoint].get(k) == parameters.REFUSED})
    return not _valid_for_client(path, read)


def _check_error(r, body: object) -> None:
    try:
        err = json.loads(r.content)["error"]
    except (ValueError, KeyError, TypeError):
        raise AssertionError(f"{r.status_code} without OpenAI's error object: {r.content[:300]!r}") from None
    assert set(err) == {"message", "type", "param", "code"}, err
    assert isinstance(err["message"], str) and err["message"] and isinstance(err["type"], str), err
    assert "Traceback" not in err["message"] and "rayhet/" not in err["message"], err  # no internals leaked
    if isinstance(body, dict) and r.status_code in (400, 404):  # a refused field is named: its top-level key
        assert isinstance(err["param"], str) and err["param"], err
        assert err["param"].split(".")[0] in {*body, "model", "prompt", "messages"}, err


def _check_ok(path: str, r, stream: bool) -> None:
    from openai.types import Completion
    from openai.types.chat import ChatCompletion, ChatCompletionChunk

    chat = path.endswith("chat/completions")
    if not stream:
        (ChatCompletion if chat else Completion).model_validate(json.loads(r.content))
        return
    events = [line[6:] for line in r.content.decode().splitlines() if line.startswith("data: ")]
    assert events and events[-1] == "[DONE]", r.content[-300:]
    for data in events[:-1]:
        chunk = json.loads(data)
        assert "error" not in chunk, chunk  # a stream that broke after its 200
        if not chat:  # a completion chunk is a Completion whose finish_reason is null until the last (as OpenAI's)
            chunk["choices"] = [{**c, "finish_reason": c.get("finish_reason") or "length"} for c in chunk["choices"]]
        (ChatCompletionChunk if chat else Completion).model_validate(chunk)


def _send(case, session, app_url: str) -> None:
    r = case.call(base_url=app_url, session=session, timeout=60)
    path, body, mode = case.operation.path, case.body, case.meta.generation.mode.value
    SENT[(path, mode)] += 1
    STATUS[r.status_code] += 1
    where = f"{case.operation.label} {mode}: {body!r:.600} -> {r.status_code} {r.content[:400]!r}"
    assert r.status_code < 500, where
    if r.status_code >= 400:
        _check_error(r, body)
        if path != "/v1/models" and _owed_a_4xx(path, body):
            REFUSED[(path, mode)] += 1
        return
    assert r.status_code == 200, where
    if path == "/v1/models":
        assert [m["id"] for m in json.loads(r.content)["data"]] == [openai_openapi.MODEL_ID]
        return
    assert not _owed_a_4xx(path, body), f"{where}: invalid for the client's schema, yet served"
    _check_ok(path, r, stream=body.get("stream") is True)


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE], ids=lambda m: m.value)
@pytest.mark.parametrize("path", ["/v1/completions", "/v1/chat/completions"])
def test_fuzzed_requests_never_fail_the_server(path, mode, app_url, session):
    @FUZZ
    @given(case=SCHEMA[path]["POST"].as_strategy(generation_mode=mode))
    def fuzz(case):
        _send(case, session, app_url)

    fuzz()


def test_models(app_url, session):
    @settings(FUZZ, max_examples=5)
    @given(case=SCHEMA["/v1/models"]["GET"].as_strategy())
    def fuzz(case):
        _send(case, session, app_url)

    fuzz()


def test_still_served_by_the_official_client_afterwards(app_url):
    """Runs last: after every fuzzed case, a plain request through the official client."""
    from openai import OpenAI

    total = sum(SENT.values())
    print(f"conformance: {total} cases {dict(SENT)}; owed a 4xx and refused {dict(REFUSED)}; statuses {dict(STATUS)}")
    assert total >= MIN_CASES, SENT
    client = OpenAI(base_url=f"{app_url}/v1", api_key="unused", max_retries=0, timeout=60)
    out = client.completions.create(model=openai_openapi.MODEL_ID, prompt="Hello", max_tokens=4)
    assert out.choices[0].finish_reason in ("stop", "length") and out.usage.completion_tokens >= 1
    chat = client.chat.completions.create(model=openai_openapi.MODEL_ID, max_tokens=4,
                                          messages=[{"role": "user", "content": "Hello"}])
    assert chat.choices[0].message.role == "assistant"
