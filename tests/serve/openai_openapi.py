"""OpenAPI description of OpenAI's /v1/completions, /v1/chat/completions and /v1/models, built from the request
types of the installed `openai` client, for the conformance fuzzing of tests/serve/test_conformance.py.

Why not OpenAI's published openapi.yaml: it may not be committed here. The client is pinned (constraints.txt)
and its request TypedDicts are generated from that same description, so pydantic's JSON Schema of them is
the same set of fields and types. The TypedDicts cannot carry the description's numeric ranges (temperature
0-2 etc.): `trim` adds the ones the client's docstrings state.

`openapi(trimmed=True)` trims the request schemas so that the cases stay cheap on the tiny CPU model and
reach the engine (each trim says why); `request_schemas()` is the client's schema as it is, which the test
uses to decide whether a body is really invalid.
"""

from __future__ import annotations

import copy
from typing import Any

MODEL_ID = "rayhet-tiny"

# Caps where the client's schema has none. Hypothesis draws small values mostly, but the occasional long string
# or list is tokenized and templated on 2 shared cores, once per case: these bound every case's cost.
MAX_STRING = 64     # characters of any string (prompts, message contents, stop sequences, names)
MAX_ITEMS = 4       # items of any array (messages, stop, tools, token-id prompts, content parts)
MAX_PROPERTIES = 4  # keys of a free-form object (metadata, a tool's `parameters`, a response format's schema)
MAX_OUTPUT = 4      # max_tokens / max_completion_tokens: each generated token is a decode step on the CPU pool
MAX_N = 2           # n: each choice is a generation of its own


def request_schemas() -> dict[str, dict]:
    """endpoint path -> JSON Schema (2020-12, `$defs` inline) of the installed client's request TypedDict."""
    from openai.types import CompletionCreateParams
    from openai.types.chat import CompletionCreateParams as ChatCompletionCreateParams
    from pydantic import TypeAdapter

    return {"/v1/completions": TypeAdapter(CompletionCreateParams).json_schema(),
            "/v1/chat/completions": TypeAdapter(ChatCompletionCreateParams).json_schema()}


def _walk(node: Any, fn) -> None:
    """Call fn on every schema object under `node` (a JSON Schema's dicts, depth first)."""
    if isinstance(node, dict):
        fn(node)
        for v in node.values():
            _walk(v, fn)
    elif isinstance(node, list):
        for v in node:
            _walk(v, fn)


def _cap_sizes(node: dict) -> None:
    types = node.get("type")
    if types == "object" and "properties" in node:
        # Closed objects: a client sends the fields its types name. Open, Hypothesis spends most of its time
        # drawing arbitrary JSON under made-up keys (chat cases took 0.18 s each to generate, 0.07 s closed).
        # Negative cases still add unknown keys, which the server ignores by design.
        node.setdefault("additionalProperties", False)
    if types == "string" and "enum" not in node and "const" not in node:
        node.setdefault("maxLength", MAX_STRING)
    elif types == "array":
        node.setdefault("maxItems", MAX_ITEMS)
    elif types == "object" and "properties" not in node:
        node.setdefault("maxProperties", MAX_PROPERTIES)


def _props(schema: dict) -> list[dict]:
    """Every `properties` mapping of the request's variants (streaming and not) and of its $defs."""
    return [d["properties"] for d in [schema, *schema.get("$defs", {}).values()] if "properties" in d]


def trim(schema: dict) -> dict:
    """The client's schema made cheap to serve (a copy; each change says why)."""
    schema = copy.deepcopy(schema)
    _walk(schema, _cap_sizes)
    for props in _props(schema):
        if "model" in props and ("prompt" in props or "messages" in props):
            # The served model's id only: any other is a 404 before the engine sees the request, so random names
            # would leave generation untested. (Negative cases still send other values: they must get 404.)
            props["model"] = {"const": MODEL_ID, "type": "string"}
        for key in ("max_tokens", "max_completion_tokens"):
            if key in props:  # generated tokens are the cost of a case
                props[key] = _int_or_null(1, MAX_OUTPUT)
        if "n" in props and ("prompt" in props or "messages" in props):  # n generations per case
            props["n"] = _int_or_null(1, MAX_N)
        for key, (low, high) in RANGES.items():
            if key in props and (key != "logprobs" or "prompt" in props):  # chat's logprobs is a boolean
                props[key] = {"anyOf": [{"type": "integer" if key in INTEGERS else "number", "minimum": low,
                                         "maximum": high}, {"type": "null"}]}
        if "messages" in props:  # an empty conversation is refused (as by OpenAI): positive cases have one turn
            props["messages"]["minItems"] = 1
    return schema


# The ranges the client's own docstrings state ("between 0 and 2"; top_p is a probability mass), which its
# TypedDicts cannot carry. Without them most positive cases are refused for one out-of-range number and never
# reach the engine; negative cases still send values outside them (a 400 naming the parameter, never a 5xx).
RANGES = {"temperature": (0, 2), "top_p": (0, 1), "frequency_penalty": (-2, 2), "presence_penalty": (-2, 2),
          "top_logprobs": (0, 20), "logprobs": (0, 5)}
INTEGERS = {"top_logprobs", "logprobs"}


def _int_or_null(low: int, high: int) -> dict:
    return {"anyOf": [{"type": "integer", "minimum": low, "maximum": high}, {"type": "null"}]}


def openapi(trimmed: bool = True) -> dict:
    """A minimal OpenAPI 3.1 document: POST /v1/completions and /v1/chat/completions (JSON bodies of the
    client's request types) and GET /v1/models. Responses are declared loosely: the conformance test checks
    them itself (OpenAI's error object, the client's response types)."""
    components: dict[str, dict] = {}
    paths: dict[str, dict] = {}
    for path, schema in request_schemas().items():
        if trimmed:
            schema = trim(schema)
        name = path.strip("/").replace("/", "_")  # v1_chat_completions
        # each endpoint's $defs become components of its own (both define e.g. the stream options)
        parts = {name: schema, **{f"{name}.{d}": v for d, v in schema.pop("$defs", {}).items()}}

        def retarget(node: dict, name=name) -> None:
            ref = node.get("$ref")
            if isinstance(ref, str) and ref.startswith("#/$defs/"):
                node["$ref"] = f"#/components/schemas/{name}.{ref.removeprefix('#/$defs/')}"

        _walk(parts, retarget)
        components.update(parts)
        paths[path] = {"post": {
            "operationId": name,
            "requestBody": {"required": True,
                            "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{name}"}}}},
            "responses": {"default": {"description": "a reply, or an OpenAI error object"}},
        }}
    paths["/v1/models"] = {"get": {"operationId": "v1_models", "responses": {"200": {"description": "the model"}}}}
    return {"openapi": "3.1.0", "info": {"title": "OpenAI API (from the installed openai client)",
                                         "version": _version()},
            "paths": paths, "components": {"schemas": components}}


def _version() -> str:
    from importlib.metadata import version

    return f"openai-python {version('openai')}"
