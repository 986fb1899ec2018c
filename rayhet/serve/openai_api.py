"""OpenAI API requests: their models, their validation into 400s naming the field, and the error object
(no Ray, no engine). The replies' bodies are in rayhet.serve.replies.

Requests are validated strictly (a string where a number belongs is a 400 naming the field, as the
OpenAI API does); unknown fields are ignored so newer clients keep working.
"""

from __future__ import annotations

import json
from typing import Any, ClassVar, Literal, Union

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
    ValidationError,
    model_validator,
)

from rayhet.serve.parameters import refuse_unsupported

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


MAX_JSON_DEPTH = 32  # deeper than any OpenAI request (a chat's content parts are 4 levels down)


def decode_body(raw: bytes) -> object:
    """The request body as JSON, or an APIError (400) naming what is wrong: not JSON, nested deeper than
    MAX_JSON_DEPTH, or a string holding a lone UTF-16 surrogate (`"\\ud800"`: valid JSON, but no text
    any tokenizer can encode)."""
    try:
        body = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise APIError(400, f"the request body is not valid JSON: {e}") from None
    except RecursionError:
        raise APIError(400, f"the request body nests deeper than {MAX_JSON_DEPTH} levels") from None
    stack: list[tuple[object, tuple, int]] = [(body, (), 1)]  # iterative: a deep body must not recurse here
    while stack:
        value, path, depth = stack.pop()
        if isinstance(value, str):
            if not _encodable(value):
                where = _path_words(path)
                raise APIError(400, f"'{where or 'body'}' holds a lone UTF-16 surrogate (such as \\ud800), which "
                               "is not text", param=where)
        elif isinstance(value, (dict, list)):
            if depth > MAX_JSON_DEPTH:
                raise APIError(400, f"the request body nests deeper than {MAX_JSON_DEPTH} levels",
                               param=_path_words(path[:1]))
            if isinstance(value, dict):
                for k, v in value.items():
                    if not _encodable(k):
                        raise APIError(400, f"a key in '{_path_words(path) or 'body'}' holds a lone UTF-16 "
                                       "surrogate, which is not text", param=_path_words(path))
                    stack.append((v, path + (k,), depth + 1))
            else:
                stack.extend((v, path + (i,), depth + 1) for i, v in enumerate(value))
    return body


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
        return True
    except UnicodeEncodeError:
        return False


def _path_words(path: tuple) -> str | None:
    return ".".join(str(p) for p in path) or None


def parse_request(cls: type[BaseModel], body: object) -> Any:
    """Validate a decoded body; the APIError names the first wrong field and, for a value of the wrong JSON
    type, what the field accepts ("Invalid type for 'temperature': expected a number, but got a string")."""
    if not isinstance(body, dict):
        raise APIError(400, "the request body must be a JSON object")
    refuse_unsupported(cls.endpoint, body)
    try:
        return cls.model_validate(body)
    except ValidationError as e:
        err, path = _most_specific(cls, e.errors())
        loc = ".".join(str(p) for p in path)
        annotation = _annotation_at(cls, path) if path else None
        if annotation is not None and err["type"] == "literal_error" and isinstance(err.get("input"), str):
            msg = f"Invalid value for '{loc}': expected {accepted(annotation)}, but got {err.get('input')!r}."
            raise APIError(400, msg, param=loc) from None
        if annotation is not None and err["type"].endswith(("_type", "_parsing", "literal_error")):
            got = json_kind(err.get("input"))
            if got == "an array" and "array" in accepted(annotation):
                got = "an array with an item of another type"
            msg = f"Invalid type for '{loc}': expected {accepted(annotation)}, but got {got} instead."
            raise APIError(400, msg, param=loc) from None
        msg = err["msg"].removeprefix("Value error, ")
        head, _, rest = msg.partition(":")
        if rest and (head in cls.model_fields if not loc else head.isidentifier()):  # a check across fields names its own
            loc, msg = f"{loc}.{head}" if loc else head, rest.strip()
        raise APIError(400, f"{loc or 'body'}: {msg}", param=loc or None) from None


def _most_specific(cls: type[BaseModel], errors: list[dict]) -> tuple[dict, list]:
    """The error to report and its path: the first one, unless a union member failed deeper, at a named
    field (`messages.0.content.0.text` rather than 'content is not a string')."""
    first = errors[0]
    best, best_path = first, _field_path(cls, first["loc"])
    for err in errors[1:]:
        path = _field_path(cls, err["loc"])
        if path[: len(best_path)] == best_path and len(path) > len(best_path) and isinstance(path[-1], str):
            best, best_path = err, path
    return best, best_path


# -- what a field accepts, in JSON's words (for validation messages) ------------------------------
_SCALARS = {int: "an integer", float: "a number", str: "a string", bool: "a boolean", type(None): "null"}


def accepted(annotation: Any) -> str:
    """`StrictInt | StrictFloat | None` -> 'a number or null'; `list[StrictStr]` -> 'an array of strings'."""
    import typing

    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Annotated:
        return accepted(args[0])
    if origin in (Union, getattr(__import__("types"), "UnionType", Union)):
        parts = [accepted(a) for a in args]
        if "an integer" in parts and "a number" in parts:
            parts.remove("an integer")  # a number covers it
        parts = list(dict.fromkeys(parts))
        return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " or " + parts[-1]
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    if origin in (list, tuple):
        return f"an array of {_plural(accepted(args[0]))}" if args else "an array"
    if origin is dict or annotation is dict:
        return "an object"
    if isinstance(annotation, type):
        if issubclass(annotation, BaseModel):
            return "an object"
        for t, words in _SCALARS.items():
            if annotation is t:
                return words
    return "a value of another type"


def _plural(words: str) -> str:
    if words.startswith("an array") or " or " in words or words == "null":
        return f"({words})"
    return words.split(" ", 1)[1] + "s"  # 'an integer' -> 'integers'


def json_kind(value: Any) -> str:
    """The JSON type of a decoded value, in words."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"


def _field_path(cls: type[BaseModel], loc: tuple) -> list:
    """The error's location without pydantic's union-member tags ('str', 'list[int]', ...)."""
    path: list = []
    model: Any = cls
    values: Any = None  # inside a dict field (metadata): the annotation of its values
    for part in loc:
        if isinstance(part, int):
            path.append(part)
        elif values is not None:  # a key of the dict ('metadata.team')
            path.append(part)
            model, values = _model_in(values), _dict_values(values)
        elif isinstance(model, type) and issubclass(model, BaseModel) and part in model.model_fields:
            path.append(part)
            annotation = model.model_fields[part].annotation
            model, values = _model_in(annotation), _dict_values(annotation)
        # else: a union-member tag such as 'list[_Part]': not part of the request's own path
    return path


def _dict_values(annotation: Any) -> Any:
    """The annotation of the values of a `dict[str, X]` field (optional or not), else None."""
    import typing

    for a in (annotation, *typing.get_args(annotation)):
        if typing.get_origin(a) is dict and len(typing.get_args(a)) == 2:
            return typing.get_args(a)[1]
    return None


def _model_in(annotation: Any) -> Any:
    """The pydantic model inside an annotation (`list[ChatMessage]` -> ChatMessage), if any."""
    import typing

    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for a in typing.get_args(annotation):
        m = _model_in(a)
        if m is not None:
            return m
    return None


def _annotation_at(cls: type[BaseModel], path: list) -> Any:
    """The annotation of the field (or list item) at `path`, or None when it cannot be followed."""
    import typing

    annotation: Any = cls
    for part in path:
        if isinstance(part, int):
            items = [a for a in typing.get_args(annotation) if typing.get_origin(a) in (list, tuple)] or [annotation]
            args = [typing.get_args(a)[0] for a in items if typing.get_args(a)]
            if not args:
                return None
            annotation = args[0] if len(args) == 1 else Union[tuple(args)]
        else:
            model = _model_in(annotation)
            if model is not None and part in model.model_fields:
                annotation = model.model_fields[part].annotation
            elif _dict_values(annotation) is not None:
                annotation = _dict_values(annotation)
            else:
                return None
    return annotation
