"""Tool calls in a model family's own format, read from a whole output: rayhet's parsers for llama.cpp pools
(`tool_call_parser` in LlamaCppSettings), where vLLM's are not installed. Each follows the format as vLLM's
parser of the same name reads it, for the whole-output case:

- `hermes` (Hermes, Qwen 2/2.5/3 and others trained on it): `<tool_call>{"name": ..., "arguments": {...}}</tool_call>`
  blocks; the text before the first one is the content.
- `llama3_json` (Llama 3.1/3.2/3.3): the whole output is one JSON object `{"name": ..., "parameters": {...}}`
  (or several joined by `;`), optionally after `<|python_tag|>`.
- `mistral`: `[TOOL_CALLS]` followed by a JSON array of `{"name": ..., "arguments": {...}}`.

An output that holds no readable call is the model's answer, as text (as vLLM's parsers do). Pure functions.
"""

from __future__ import annotations

import json
import re
import uuid
from typing import Any, Callable

from rayhet.engines.base import ParsedReply, ToolCall

_HERMES = re.compile(r"<tool_call>(.*?)</tool_call>", re.DOTALL)


def _call(obj: Any, args_key: str) -> ToolCall:
    if not isinstance(obj, dict) or not isinstance(obj.get("name"), str):
        raise ValueError("not a call")
    args = obj.get(args_key, obj.get("arguments", {}))
    return ToolCall(id=f"call_{uuid.uuid4().hex[:24]}", name=obj["name"],
                    arguments=args if isinstance(args, str) else json.dumps(args))


def parse_hermes(text: str) -> ParsedReply:
    if "<tool_call>" not in text:
        return ParsedReply(content=text)
    try:
        calls = [_call(json.loads(block), "arguments") for block in _HERMES.findall(text)]
    except ValueError:
        return ParsedReply(content=text)
    if not calls:
        return ParsedReply(content=text)
    return ParsedReply(content=text[:text.find("<tool_call>")].strip() or None, tool_calls=calls)


def parse_llama3_json(text: str) -> ParsedReply:
    body = text.strip().removeprefix("<|python_tag|>").strip()
    if not body.startswith("{"):
        return ParsedReply(content=text)
    try:
        objs = [json.loads(part) for part in _split_top_level(body, ";")]
        calls = [_call(o, "parameters") for o in objs]
    except ValueError:
        return ParsedReply(content=text)
    return ParsedReply(content=None, tool_calls=calls)


def parse_mistral(text: str) -> ParsedReply:
    marker = "[TOOL_CALLS]"
    if marker not in text:
        return ParsedReply(content=text)
    head, _, tail = text.partition(marker)
    try:
        objs = json.loads(tail.strip())
        calls = [_call(o, "arguments") for o in (objs if isinstance(objs, list) else [objs])]
    except ValueError:
        return ParsedReply(content=text)
    if not calls:
        return ParsedReply(content=text)
    return ParsedReply(content=head.strip() or None, tool_calls=calls)


def _split_top_level(text: str, sep: str) -> list[str]:
    """`text` split at `sep` outside JSON strings and brackets (a `;` inside an argument stays)."""
    parts, depth, start, in_str, esc = [], 0, 0, False, False
    for i, ch in enumerate(text):
        if in_str:
            if esc:
                esc = False
            elif ch == "\\":
                esc = True
            elif ch == '"':
                in_str = False
            continue
        if ch == '"':
            in_str = True
        elif ch in "{[":
            depth += 1
        elif ch in "}]":
            depth -= 1
        elif ch == sep and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    parts.append(text[start:])
    return [p.strip() for p in parts if p.strip()]


PARSERS: dict[str, Callable[[str], ParsedReply]] = {
    "hermes": parse_hermes, "llama3_json": parse_llama3_json, "mistral": parse_mistral}
