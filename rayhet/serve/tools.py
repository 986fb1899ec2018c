"""Tool calls on any pool: the tools are described to the model in a system message, and its output is held
to a JSON schema (the pool engine's structured output: a llama.cpp grammar, vLLM's structured outputs) whose
only shapes are the calls the request allows or, under `tool_choice: "auto"`, a plain answer. The reply is
then read from that JSON, so it needs no model-specific parser and cannot be malformed. (llama.cpp's server
does the same for chat templates without native tool support: its "generic" format.)

`tool_choice`: "auto" (a call or an answer), "required" (one or more calls), a named function (that one),
"none" (the tools are not offered at all).
"""

from __future__ import annotations

import json
import uuid
from typing import Any


def _call_schema(tools: list[dict]) -> dict:
    """One call: {"name": one of the tools, "arguments": that tool's parameters}."""
    options = [{"type": "object", "properties": {"name": {"const": t["name"]},
                                                 "arguments": t.get("parameters") or {"type": "object"}},
                "required": ["name", "arguments"], "additionalProperties": False} for t in tools]
    return options[0] if len(options) == 1 else {"anyOf": options}


def output_schema(tools: list[dict], choice: Any, parallel: bool = True) -> dict:
    """The JSON schema the generation is held to. `tools`: the request's functions ({name, description,
    parameters}); `choice`: "auto", "required" or a function name; `parallel`: several calls at once."""
    if choice not in ("auto", "required"):
        tools = [t for t in tools if t["name"] == choice]
    array = {"type": "array", "items": _call_schema(tools), "minItems": 1, **({} if parallel else {"maxItems": 1})}
    calls = {"type": "object", "properties": {"tool_calls": array},
             "required": ["tool_calls"], "additionalProperties": False}
    if choice != "auto":
        return calls
    answer = {"type": "object", "properties": {"response": {"type": "string"}}, "required": ["response"],
              "additionalProperties": False}
    return {"anyOf": [calls, answer]}


def system_message(tools: list[dict], choice: Any) -> dict:
    """What tells the model which tools it has and how to answer (the schema holds it to that anyway)."""
    listed = json.dumps([{k: t[k] for k in ("name", "description", "parameters") if t.get(k) is not None}
                         for t in tools])
    how = ('Respond with JSON: {"tool_calls": [{"name": <tool name>, "arguments": {...}}]} to call tools'
           + (', or {"response": <your answer>} to answer directly.' if choice == "auto" else "."))
    if choice not in ("auto", "required"):
        how += f" Call the tool {choice!r}."
    return {"role": "system", "content": f"You can call these tools: {listed}\n{how}"}


def read_reply(text: str) -> tuple[str | None, list[dict] | None]:
    """(content, tool_calls in OpenAI's shape) from the constrained output. Output cut short by max_tokens is
    not JSON: it is returned as content, as OpenAI returns a truncated reply."""
    try:
        out = json.loads(text)
    except json.JSONDecodeError:
        return text, None
    if isinstance(out, dict) and isinstance(out.get("tool_calls"), list):
        return None, [{"id": f"call_{uuid.uuid4().hex[:24]}", "type": "function",
                       "function": {"name": c["name"], "arguments": json.dumps(c.get("arguments", {}))}}
                      for c in out["tool_calls"] if isinstance(c, dict) and "name" in c]
    if isinstance(out, dict) and isinstance(out.get("response"), str):
        return out["response"], None
    return text, None


def history_text(message: dict) -> str:
    """An assistant turn's earlier tool calls, or a tool's result, as text the chat template can carry."""
    if message.get("tool_calls"):
        return json.dumps({"tool_calls": [{"name": c["function"]["name"], "arguments": _arguments(c["function"])}
                                          for c in message["tool_calls"]]})
    return message.get("content") or ""


def _arguments(function: dict) -> object:
    """A history call's arguments as JSON, or as the text itself where it is not JSON: a model's own call can
    be malformed, and OpenAI takes it back in the history as it was (a 500 here until the fuzzing found it)."""
    text = function.get("arguments") or "{}"
    try:
        return json.loads(text)
    except ValueError:
        return text
