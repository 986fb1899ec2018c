"""vLLM's tool-call parsers for a GPU pool (vLLM 0.24's vllm.tool_parsers, the `tool_call_parser` setting): the
parser class found and checked when the engine starts, and per request the output gathered and parsed whole at
its end into a ParsedReply. vLLM is imported only in `ToolParsing.load`; what vLLM's objects mean in ours is in
rayhet.engines.vllm_convert (pure)."""

from __future__ import annotations

import logging
from typing import Any

from rayhet.engines.base import EngineError, ParsedReply
from rayhet.engines.vllm_convert import map_vllm_error, parsed_reply, tool_parser_request, unknown_tool_parser

log = logging.getLogger("ray.serve")


class ToolParsing:
    """A pool's vLLM tool-call parser (vllm.tool_parsers, vLLM 0.24): the class, checked at start; per request,
    `open` gives a ToolReading. The translations are in vllm_convert (pure)."""

    def __init__(self, name: str, parser_cls: Any, request_cls: Any, tokenizer: Any):
        self.name, self._cls, self._request_cls, self._tok = name, parser_cls, request_cls, tokenizer

    @classmethod
    def load(cls, name: str, tokenizer: Any) -> "ToolParsing":
        """The parser `name`, or EngineError naming engine_settings.tool_call_parser (with the names this vLLM
        has, when it has none by that name)."""
        try:
            from vllm.entrypoints.openai.chat_completion.protocol import ChatCompletionRequest
            from vllm.tool_parsers import ToolParserManager
        except ImportError as e:
            raise EngineError(f"engine_settings.tool_call_parser: this vLLM has no vllm.tool_parsers (rayhet reads "
                              f"vLLM 0.24's): {e}") from e
        try:
            parser_cls = ToolParserManager.get_tool_parser(name)
        except KeyError:
            raise unknown_tool_parser(name, ToolParserManager.list_registered()) from None
        try:
            parser_cls(tokenizer, None)  # some parsers look for their tokens in the vocabulary: fail here, not per call
        except Exception as e:
            raise EngineError(f"engine_settings.tool_call_parser: {name!r} does not fit this model's tokenizer: "
                              f"{type(e).__name__}: {e}") from e
        return cls(name, parser_cls, ChatCompletionRequest, tokenizer)

    def open(self, functions: list[dict]) -> "ToolReading":
        """One request's parser (vLLM keeps one per request: parsers hold state) and the request it reads with,
        as the parser adjusted it (hermes keeps special tokens in the text: its tags may be special tokens)."""
        try:
            request = self._request_cls.model_validate(tool_parser_request(functions))
            parser = self._cls(self._tok, request.tools)
            request = parser.adjust_request(request)
        except Exception as e:  # vLLM's validation of the tools: the caller's
            raise map_vllm_error(e) from e
        return ToolReading(self.name, parser, request)


class ToolReading:
    """One request's output, gathered as it is generated and parsed whole at its end."""

    def __init__(self, name: str, parser: Any, request: Any):
        self.name, self._parser, self._request = name, parser, request
        self._parts: list[str] = []

    def sampling_overrides(self) -> dict[str, Any]:
        """What the parser's adjusted request changes in the sampling: special tokens kept or not, and the
        structured output some parsers ask for (vLLM's strict tool calling)."""
        out: dict[str, Any] = {"skip_special_tokens": bool(getattr(self._request, "skip_special_tokens", True))}
        if getattr(self._request, "structured_outputs", None) is not None:
            out["structured_outputs"] = self._request.structured_outputs
        return out

    def add(self, text: str) -> None:
        self._parts.append(text)

    def parse(self) -> ParsedReply:
        text = "".join(self._parts)
        try:
            return parsed_reply(self._parser.extract_tool_calls(text, self._request), text)
        except Exception as e:  # noqa: BLE001 - a parser's failure leaves the text as the answer, as vLLM's own do
            log.warning("rayhet vLLM engine: tool parser %s failed on an output (%s: %s); replied as text",
                        self.name, type(e).__name__, e)
            return ParsedReply(content=text)
