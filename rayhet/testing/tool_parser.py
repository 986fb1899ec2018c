"""TEST DOUBLE of a vLLM tool-call parser: reads hermes-style `<tool_call>{"name": ..., "arguments": {...}}</tool_call>`
blocks from a whole output, as vLLM's `hermes` parser does, so the FakeEngine can stand for a vLLM pool with
`tool_call_parser` in tests of the ingress and the serve path (no vLLM, no model)."""

from __future__ import annotations

import json
import re

from rayhet.engines.base import ParsedReply, ToolCall

TEST_PARSER = "test_hermes"  # the name a FakeEngine pool gives as its tool_call_parser

_CALL = re.compile(r"<tool_call>(.*?)</tool_call>", re.DOTALL)


def parse_hermes_for_tests(text: str, call_ids: str = "call_test_") -> ParsedReply:
    """The calls in `text` and the text before the first one; text that holds no readable call is the answer
    (vLLM's hermes parser: the same rules)."""
    if "<tool_call>" not in text:
        return ParsedReply(content=text)
    try:
        found = [json.loads(m) for m in _CALL.findall(text)]
        calls = [ToolCall(id=f"{call_ids}{k}", name=c["name"], arguments=json.dumps(c["arguments"]))
                 for k, c in enumerate(found)]
    except (ValueError, KeyError, TypeError):
        return ParsedReply(content=text)
    if not calls:
        return ParsedReply(content=text)
    return ParsedReply(content=text[:text.find("<tool_call>")] or None, tool_calls=calls)
