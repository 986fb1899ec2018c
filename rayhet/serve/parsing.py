"""Parsing a request: its body decoded (JSON, bounded depth, encodable text), validated against the request
models of rayhet.serve.openai_api, and pydantic's errors put in OpenAI's words: a 400 naming the first wrong
field and, for a value of the wrong JSON type, what the field accepts."""

from __future__ import annotations

import json
from typing import Any, Literal, Union

from pydantic import BaseModel, ValidationError

from rayhet.serve.openai_api import APIError
from rayhet.serve.parameters import refuse_unsupported

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
            else:  # numbers (a token-id prompt: thousands of them) need no look, and no path
                stack.extend((v, path + (i,), depth + 1) for i, v in enumerate(value)
                             if isinstance(v, (str, dict, list)))
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
