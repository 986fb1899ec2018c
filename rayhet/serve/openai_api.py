"""OpenAI API: request models, response and stream-chunk bodies, and error objects (no Ray, no engine).

Requests are validated strictly (a string where a number belongs is a 400 naming the field, as the
OpenAI API does); unknown fields are ignored so newer clients keep working.
"""

from __future__ import annotations

import time
import uuid
from typing import Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictFloat, StrictInt, StrictStr, ValidationError

Number = Union[StrictInt, StrictFloat]


class APIError(Exception):
    """An error the ingress answers with an OpenAI error object."""

    def __init__(self, status: int, message: str, type_: str = "invalid_request_error",
                 param: str | None = None, code: str | None = None):
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type_, param, code

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


class _Common(BaseModel):
    model_config = ConfigDict(extra="ignore")

    model: StrictStr = Field(..., description="Model id (see /v1/models).")
    temperature: Number = 1.0
    top_p: Number = 1.0
    stream: StrictBool = False
    stream_options: dict[str, Any] | None = None
    stop: StrictStr | list[StrictStr] | None = None
    seed: StrictInt | None = None
    n: StrictInt = Field(1, ge=1, le=1, description="Only n=1 is supported.")
    user: StrictStr | None = None
    ignore_eos: StrictBool = Field(False, description="rayhet/vLLM extension: generate max_tokens tokens exactly.")

    def stop_list(self) -> list[str]:
        return [] if self.stop is None else ([self.stop] if isinstance(self.stop, str) else list(self.stop))


class CompletionRequest(_Common):
    prompt: StrictStr | list[StrictInt] | list[StrictStr]
    max_tokens: StrictInt | None = Field(16, ge=1)
    echo: StrictBool = Field(False, description="Not supported (must be false).")
    logprobs: StrictInt | None = Field(None, description="Not supported (must be null or 0).")
    suffix: StrictStr | None = None


class _Part(BaseModel):
    model_config = ConfigDict(extra="ignore")

    type: Literal["text"]
    text: StrictStr


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")

    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: StrictStr | list[_Part] | None = None

    def as_dict(self) -> dict:
        content = self.content
        if isinstance(content, list):
            content = "".join(p.text for p in content)
        return {"role": "system" if self.role == "developer" else self.role, "content": content or ""}


class ChatRequest(_Common):
    messages: list[ChatMessage] = Field(..., min_length=1)
    max_tokens: StrictInt | None = Field(None, ge=1)
    max_completion_tokens: StrictInt | None = Field(None, ge=1)
    logprobs: StrictBool | None = Field(None, description="Not supported.")


def parse_request(cls: type[BaseModel], body: object) -> Any:
    """Validate a decoded body; the APIError names the first wrong field."""
    if not isinstance(body, dict):
        raise APIError(400, "the request body must be a JSON object")
    try:
        return cls.model_validate(body)
    except ValidationError as e:
        err = e.errors()[0]
        loc = ".".join(str(p) for p in err["loc"] if not str(p).startswith(("str", "list[", "int", "float", "bool")))
        raise APIError(400, f"{loc or 'body'}: {err['msg']}", param=loc or None) from None


# -- response bodies ---------------------------------------------------------------------------
def new_id(kind: str) -> str:
    return f"{'cmpl' if kind == 'completion' else 'chatcmpl'}-{uuid.uuid4().hex}"


def usage_body(prompt_tokens: int, completion_tokens: int) -> dict:
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens}


def response_body(kind: str, rid: str, model: str, text: str, finish: str | None, usage: dict) -> dict:
    created = int(time.time())
    if kind == "completion":
        choice = {"index": 0, "text": text, "logprobs": None, "finish_reason": finish}
        return {"id": rid, "object": "text_completion", "created": created, "model": model,
                "choices": [choice], "usage": usage}
    choice = {"index": 0, "message": {"role": "assistant", "content": text}, "logprobs": None,
              "finish_reason": finish}
    return {"id": rid, "object": "chat.completion", "created": created, "model": model,
            "choices": [choice], "usage": usage}


def chunk_body(kind: str, rid: str, model: str, text: str | None, finish: str | None = None, first: bool = False,
               include_usage: bool = False, usage: dict | None = None) -> dict:
    """One stream chunk. As OpenAI (and vLLM): with `stream_options.include_usage` every chunk has a `usage`
    field, null except on the last one, which has `choices: []` (`usage_chunk`); without it, none has one."""
    created = int(time.time())
    if kind == "completion":
        choices = [{"index": 0, "text": text or "", "logprobs": None, "finish_reason": finish}]
        body = {"id": rid, "object": "text_completion", "created": created, "model": model, "choices": choices}
    else:
        delta: dict = {}
        if first:
            delta["role"] = "assistant"
        if text:
            delta["content"] = text
        choices = [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]
        body = {"id": rid, "object": "chat.completion.chunk", "created": created, "model": model, "choices": choices}
    if include_usage:
        body["usage"] = usage
    return body


def usage_chunk(kind: str, rid: str, model: str, usage: dict) -> dict:
    """The last chunk of a stream that asked for `stream_options.include_usage`: no choices, the whole usage."""
    body = chunk_body(kind, rid, model, None, include_usage=True, usage=usage)
    body["choices"] = []
    return body


def models_body(model_id: str, created: int) -> dict:
    return {"object": "list", "data": [{"id": model_id, "object": "model", "created": created, "owned_by": "rayhet"}]}
