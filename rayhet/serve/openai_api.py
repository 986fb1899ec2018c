"""OpenAI API requests: their models and the error object (no Ray, no engine). Reading a body into them, with
pydantic's errors as 400s naming the field, is rayhet.serve.parsing; the replies' bodies are rayhet.serve.replies.

Requests are validated strictly (a string where a number belongs is a 400 naming the field, as the
OpenAI API does); unknown fields are ignored so newer clients keep working.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal, Union

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
    model_validator,
)

Number = Union[StrictInt, StrictFloat]


class APIError(Exception):
    """An error the ingress answers with an OpenAI error object."""

    def __init__(self, status: int, message: str, type_: str = "invalid_request_error",
                 param: str | None = None, code: str | None = None, retry_after: int | None = None):
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type_, param, code
        self.retry_after = retry_after  # seconds, sent as the Retry-After header (429, 503)

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


def _accepts_null(annotation: Any) -> bool:
    import typing

    return annotation is None or type(None) in typing.get_args(annotation)


class StreamOptions(BaseModel):
    """`stream_options`: what a stream reports besides its text (other keys, such as OpenAI's
    include_obfuscation, change nothing here and are ignored)."""

    model_config = ConfigDict(extra="ignore")

    include_usage: StrictBool | None = Field(None, description="A last chunk with the whole request's usage.")
    continuous_usage_stats: StrictBool | None = Field(
        None, description="vLLM's extension: with include_usage, every chunk carries the usage so far.")

    def usage(self) -> tuple[bool, bool]:
        """(include_usage, continuous)."""
        return bool(self.include_usage), bool(self.include_usage and self.continuous_usage_stats)


class _Common(BaseModel):
    model_config = ConfigDict(extra="ignore")

    @model_validator(mode="before")
    @classmethod
    def _null_is_default(cls, body: Any) -> Any:
        """OpenAI accepts `null` for any optional parameter and means its default (`"temperature": null` is
        temperature 1); the official clients send it. A field that has a default takes it for null."""
        if isinstance(body, dict):
            nulls = [k for k, v in body.items() if v is None and k in cls.model_fields
                     and not cls.model_fields[k].is_required() and not _accepts_null(cls.model_fields[k].annotation)]
            if nulls:
                body = {k: v for k, v in body.items() if k not in nulls}
        return body

    model: StrictStr = Field(..., description="Model id (see /v1/models).")
    temperature: Number = 1.0
    top_p: Number = 1.0
    stream: StrictBool = False
    stream_options: StreamOptions | None = None  # typed: `"include_usage": "no"` is a 400, not a truthy string
    stop: StrictStr | list[StrictStr] | None = None
    seed: StrictInt | None = None
    n: StrictInt = Field(1, ge=1, description="Choices to generate (up to the server's server.max_n).")
    presence_penalty: Number = Field(0.0, description="-2..2: lowers a token's logit once it has appeared in the output.")
    frequency_penalty: Number = Field(0.0, description="-2..2: lowers a token's logit by how often it appeared in the output.")
    user: StrictStr | None = None
    ignore_eos: StrictBool = Field(False, description="rayhet/vLLM extension: generate max_tokens tokens exactly.")

    def stream_usage(self) -> tuple[bool, bool]:
        """(include_usage, continuous_usage_stats) of `stream_options`."""
        return self.stream_options.usage() if self.stream_options else (False, False)

    def stop_list(self) -> list[str]:
        return [] if self.stop is None else ([self.stop] if isinstance(self.stop, str) else list(self.stop))


class CompletionRequest(_Common):
    endpoint: ClassVar[str] = "completions"

    prompt: StrictStr | list[StrictInt] | list[StrictStr]
    max_tokens: StrictInt | None = Field(16, description="Tokens to generate, >= 1; 0 only with echo (the prompt "
                                         "alone, scored with logprobs).")
    echo: StrictBool = Field(False, description="Put the prompt before each choice's text (and, with logprobs, "
                             "its tokens' logprobs before the generated ones).")
    logprobs: StrictInt | None = Field(None, ge=0, le=5, description="Return each token's logprob and the "
                                       "`logprobs` most likely tokens at each position (OpenAI's limit: 5).")
    suffix: StrictStr | None = None

    @model_validator(mode="after")
    def _nothing_to_generate_only_with_echo(self) -> "CompletionRequest":
        least = 0 if self.echo else 1  # (in the words of pydantic's ge, which said it before echo was honoured)
        if self.max_tokens is not None and self.max_tokens < least:
            raise ValueError(f"max_tokens: Input should be greater than or equal to {least}"
                             + ("" if self.echo else " (0 only with echo: true)"))
        return self

    def logprobs_k(self) -> int | None:
        return self.logprobs

    def one_prompt(self) -> str | list[int]:
        """The prompt's text, or its token ids; a batch of one text is that text (400 for a larger batch)."""
        prompt = self.prompt
        if isinstance(prompt, list) and prompt and isinstance(prompt[0], str):
            if len(prompt) != 1:
                raise APIError(400, "batched prompts are not supported: send one prompt per request", param="prompt")
            return prompt[0]
        return prompt


class _Part(BaseModel):
    model_config = ConfigDict(extra="ignore")

    type: Literal["text"]
    text: StrictStr


class _CalledFunction(BaseModel):
    """A function an earlier assistant turn called: both fields required, as by OpenAI."""

    model_config = ConfigDict(extra="ignore")

    name: StrictStr
    arguments: StrictStr  # JSON text as the model wrote it (history_text carries text that is not JSON as it is)


class _ToolCall(BaseModel):
    model_config = ConfigDict(extra="ignore")

    id: StrictStr
    type: Literal["function"] = "function"
    function: _CalledFunction


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")

    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: StrictStr | list[_Part] | None = None
    tool_calls: list[_ToolCall] | None = None  # an assistant turn that called tools
    tool_call_id: StrictStr | None = None  # a tool's result: which call it answers

    @model_validator(mode="after")
    def _content_required(self) -> "ChatMessage":
        # OpenAI's rule: only an assistant turn may leave content out (it may hold tool calls instead)
        if self.content is None and self.role != "assistant":
            raise ValueError(f"content: a {self.role} message needs content (a string or a list of text parts)")
        return self

    def as_dict(self) -> dict:
        from rayhet.serve.tools import history_text

        content = self.content
        if isinstance(content, list):
            content = "".join(p.text for p in content)
        if self.tool_calls:
            content = history_text({"tool_calls": [c.model_dump() for c in self.tool_calls]})
        return {"role": "system" if self.role == "developer" else self.role, "content": content or ""}


class _Function(BaseModel):
    model_config = ConfigDict(extra="ignore")

    name: StrictStr = Field(..., min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")
    description: StrictStr | None = None
    parameters: dict[str, Any] | None = None
    strict: StrictBool | None = None


class Tool(BaseModel):
    model_config = ConfigDict(extra="ignore")

    type: Literal["function"]
    function: _Function


class _ChosenFunction(BaseModel):
    model_config = ConfigDict(extra="ignore")

    name: StrictStr


class _NamedChoice(BaseModel):
    model_config = ConfigDict(extra="ignore")

    type: Literal["function"]
    function: _ChosenFunction


class _JsonSchema(BaseModel):
    model_config = ConfigDict(extra="ignore")

    name: StrictStr = Field(..., min_length=1, max_length=64)
    description: StrictStr | None = None
    schema_: dict[str, Any] | None = Field(None, alias="schema")  # (`schema` shadows BaseModel's)
    strict: StrictBool | None = None


class ResponseFormat(BaseModel):
    """OpenAI's response_format: text (the default), json_object, or json_schema."""

    model_config = ConfigDict(extra="ignore")

    type: Literal["text", "json_object", "json_schema"]
    json_schema: _JsonSchema | None = None

    @model_validator(mode="after")
    def _schema_with_its_type(self) -> "ResponseFormat":
        if self.type == "json_schema" and self.json_schema is None:
            raise ValueError("type json_schema needs json_schema: {name, schema}")
        return self

    def sampling(self) -> dict:
        """The SamplingParams fields it sets (an empty schema is any JSON object, as OpenAI reads it)."""
        if self.type == "json_object":
            return {"json_object": True}
        if self.type == "json_schema":
            return {"json_schema": self.json_schema.schema_ or {"type": "object"}}
        return {}


class ChatRequest(_Common):
    endpoint: ClassVar[str] = "chat.completions"
    messages: list[ChatMessage] = Field(..., min_length=1)
    max_tokens: StrictInt | None = Field(None, ge=1)
    max_completion_tokens: StrictInt | None = Field(None, ge=1)
    logprobs: StrictBool | None = Field(None, description="Return each output token's logprob.")
    top_logprobs: StrictInt | None = Field(None, ge=0, le=20, description="With logprobs: the most likely tokens "
                                           "at each position, this many (0-20).")
    response_format: ResponseFormat | None = None
    tools: list[Tool] | None = None
    tool_choice: Literal["none", "auto", "required"] | _NamedChoice | None = None
    parallel_tool_calls: StrictBool = True
    # identifiers and hints with no effect on the output (parameters.NO_EFFECT), typed so a wrong one is a 400
    metadata: dict[str, StrictStr] | None = None
    prompt_cache_key: StrictStr | None = None
    safety_identifier: StrictStr | None = None
    service_tier: StrictStr | None = None

    @model_validator(mode="after")
    def _top_needs_logprobs(self) -> "ChatRequest":
        if self.top_logprobs and not self.logprobs:
            raise ValueError("top_logprobs: needs logprobs: true")
        return self

    @model_validator(mode="after")
    def _choice_among_tools(self) -> "ChatRequest":
        named = self.tool_choice.function.name if isinstance(self.tool_choice, _NamedChoice) else None
        if (named or self.tool_choice == "required") and not self.tools:
            raise ValueError("tool_choice: asks for a tool call, but tools is empty")
        if named and named not in {t.function.name for t in self.tools}:
            raise ValueError(f"tool_choice: names {named!r}, which is not among tools")
        if self.using_tools() and self.response_format is not None and self.response_format.type != "text":
            raise ValueError("response_format: cannot constrain the output together with tools")
        return self

    def using_tools(self) -> bool:
        return bool(self.tools) and self.tool_choice != "none"

    def tool_setup(self) -> tuple[list[dict], Any]:
        """The functions ({name, description, parameters}) and the choice ("auto", "required" or a name)."""
        choice = self.tool_choice or "auto"
        return [t.function.model_dump() for t in self.tools], (choice.function.name if isinstance(choice, _NamedChoice)
                                                               else choice)

    def logprobs_k(self) -> int | None:
        """SamplingParams.logprobs: None, or how many alternatives each position carries."""
        return (self.top_logprobs or 0) if self.logprobs else None
