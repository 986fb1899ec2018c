"""Tool calls in the model's own format, for pools whose engine has a tool-call parser (a vLLM pool's
`tool_call_parser`): the model's chat template is given the tools (and the history's calls and results as
they are), the pool generates, and the engine's parser reads the whole output into calls, which become
OpenAI's `tool_calls` here. Pools without a parser take the same request through structured output
(rayhet.serve.tools); both give the same reply shape.

Only tool_choice "auto" with parallel calls allowed comes this way. A parser reads what the model chose to
write, so it cannot make the model call a tool ("required"), that one (a named function), or one at most
(`parallel_tool_calls: false`); vLLM's own server does not use the parser for the first two either, but holds
the output to a JSON schema of the calls, which is what rayhet's structured path does: those requests take it
on every pool.
"""

from __future__ import annotations

import json
from typing import Any

from rayhet.engines.base import ParsedReply


def native_choice(choice: Any, parallel: bool = True) -> bool:
    """Whether a request's tool_choice ("auto", "required" or a function name) and parallel_tool_calls can take
    the native path."""
    return choice == "auto" and parallel


def template_tools(functions: list[dict]) -> list[dict]:
    """The request's functions as a chat template takes them: OpenAI's tool objects (what Hugging Face's
    apply_chat_template and vLLM's server pass)."""
    return [{"type": "function", "function": {k: v for k, v in f.items() if v is not None}} for f in functions]


def template_messages(messages: list[Any]) -> list[dict]:
    """The request's messages (rayhet.serve.openai_api.ChatMessage) as a template with tool support reads them:
    an assistant turn's calls as `tool_calls` with their arguments as objects (as vLLM gives templates, which
    write them with `tojson`), a tool's result with its `tool_call_id`."""
    out = []
    for m in messages:
        d = m.as_dict()
        if m.tool_calls:
            d["content"] = _text(m.content)
            d["tool_calls"] = [{"id": c.id, "type": "function",
                                "function": {"name": c.function.name, "arguments": _object(c.function.arguments)}}
                               for c in m.tool_calls]
        if m.tool_call_id is not None:
            d["tool_call_id"] = m.tool_call_id
        out.append(d)
    return out


def _text(content: Any) -> str:
    if isinstance(content, list):
        return "".join(p.text for p in content)
    return content or ""


def _object(arguments: str) -> Any:
    """A call's arguments as JSON, or the text itself where it is not JSON (a model's malformed call, taken back
    in the history as it was)."""
    try:
        return json.loads(arguments)
    except ValueError:
        return arguments


def reply_of(parsed: ParsedReply) -> tuple[str | None, list[dict] | None]:
    """(content, tool_calls in OpenAI's shape, None when the model answered in text) of a parser's reading."""
    if not parsed.tool_calls:
        return parsed.content, None
    return parsed.content, [{"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
                            for c in parsed.tool_calls]
