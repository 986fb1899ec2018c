"""Every parameter OpenAI's API defines for /v1/completions and /v1/chat/completions, and what rayhet does with
each: honoured, accepted with no effect on the output, or refused with a 400 naming it. The README's "OpenAI
parameters" table is rendered from here (`parameters_markdown`), and a test keeps the two equal."""

from __future__ import annotations

import logging
from typing import Any

# -- every parameter OpenAI's API defines for the two endpoints, and what rayhet does with it ------------------
# The table the README's "OpenAI parameters" shows (a test keeps the two equal). "honoured": both pool engines
# apply it. "no effect": an identifier or a hint that does not change what is generated. "400": rayhet does
# not do it, and a request that sets it to anything but its no-op value is refused naming it (never ignored
# silently, as vLLM's server does); NEUTRAL says which values are the no-ops.
HONOURED, NO_EFFECT, REFUSED = "honoured", "accepted, no effect on the output", "400 unless its no-op value"
# how each pool engine does tools (rayhet.serve.native_tools, rayhet.serve.tools)
TOOLS = ("honoured: the model's own format, read by vLLM's parser (vLLM pools) or rayhet's (`hermes`, "
         "`llama3_json`, `mistral` on llama.cpp pools), on pools with `tool_call_parser` "
         "(tool_choice `auto`); structured output on other pools, for `required` or a named function, and with "
         "`parallel_tool_calls: false`")
_BOTH = ("model", "stream", "stream_options", "temperature", "top_p", "seed", "stop", "presence_penalty",
         "frequency_penalty", "max_tokens")
PARAMETERS: dict[str, dict[str, str]] = {
    "completions": {
        **{k: HONOURED for k in (*_BOTH, "prompt")}, "n": "honoured up to `server.max_n` (8); 400 above", "user": NO_EFFECT,
        "logprobs": HONOURED, "echo": HONOURED,
        **{k: REFUSED for k in ("best_of", "logit_bias", "suffix")},
    },
    "chat.completions": {
        **{k: HONOURED for k in (*_BOTH, "messages", "max_completion_tokens", "response_format", "logprobs",
                                 "top_logprobs", "parallel_tool_calls")},
        **{k: TOOLS for k in ("tools", "tool_choice")},
        "n": "honoured up to `server.max_n` (8); 400 above",
        **{k: NO_EFFECT for k in ("user", "metadata", "prompt_cache_key", "safety_identifier", "service_tier")},
        **{k: REFUSED for k in ("audio", "function_call", "functions", "logit_bias", "modalities",
                                "prediction", "reasoning_effort", "store",
                                "verbosity", "web_search_options")},
    },
}
EXTENSIONS = {"ignore_eos"}  # rayhet's (and vLLM's) own: not OpenAI's, not logged as unknown
NEUTRAL: dict[str, Any] = {  # the values of a refused parameter that ask for nothing (null is one for all)
    "best_of": lambda v: v == 1, "logit_bias": lambda v: v == {}, "suffix": lambda v: v == "",
    "functions": lambda v: v == [],
    "function_call": lambda v: v == "none", "modalities": lambda v: v == ["text"],
    "store": lambda v: v is False,
}
_NO_OPS = {"best_of": "1", "logit_bias": "{}", "suffix": '""',
           "functions": "[]", "function_call": '"none"', "modalities": '["text"]',
           "store": "false"}
_unknown_logged: set[str] = set()
MAX_UNKNOWN_LOGGED = 100


def parameters_markdown() -> str:
    """The README's table: each parameter of the two endpoints and what rayhet does with it, the same on both
    pool engines (llama.cpp and vLLM)."""
    rows = ["| parameter | `/v1/completions` | `/v1/chat/completions` |", "|---|---|---|"]

    def cell(endpoint: str, key: str) -> str:
        kind = PARAMETERS[endpoint].get(key)
        if kind is None:
            return "-"
        if kind == REFUSED:
            no_op = _NO_OPS.get(key)
            return "400 unless null" + (f" or {no_op}" if no_op else "")
        return kind
    for key in sorted(set(PARAMETERS["completions"]) | set(PARAMETERS["chat.completions"])):
        rows.append(f"| `{key}` | {cell('completions', key)} | {cell('chat.completions', key)} |")
    return "\n".join(rows)


def refuse_unsupported(endpoint: str, body: dict) -> None:
    """APIError 400 naming the first parameter rayhet would otherwise have ignored; unknown names are logged
    once each (a newer client's fields must not fail its requests)."""
    table = PARAMETERS[endpoint]
    for key, value in body.items():
        kind = table.get(key)
        if kind == REFUSED and value is not None and not NEUTRAL.get(key, lambda v: False)(value):
            from rayhet.serve.openai_api import APIError  # (that module imports this one)

            raise APIError(400, f"'{key}' is not supported by this server (rayhet {endpoint}); leave it out or "
                           "null. The README's \"OpenAI parameters\" table lists what is honoured.", param=key,
                           code="unsupported_parameter")
        if kind is None and key not in EXTENSIONS and key not in _unknown_logged \
                and len(_unknown_logged) < MAX_UNKNOWN_LOGGED:  # bounded: clients choose these names
            _unknown_logged.add(key)
            logging.getLogger("rayhet.ingress").warning("rayhet ingress: ignoring the unknown request field %r "
                                                        "(%s; logged once)", key, endpoint)
