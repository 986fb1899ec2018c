"""Chat rendering with the model's own Jinja chat template (as Hugging Face and llama.cpp's server do)."""

from __future__ import annotations

from datetime import datetime

from rayhet.engines.base import InvalidRequestError


class ChatTemplate:
    """A model's chat template, compiled once in a sandbox; `render(messages)` makes the prompt text."""

    def __init__(self, source: str | None, bos_token: str = "", eos_token: str = ""):
        from jinja2.sandbox import ImmutableSandboxedEnvironment  # jinja2 comes with llama-cpp-python

        self.source = source
        self._vars = {"bos_token": bos_token, "eos_token": eos_token}
        if source is None:
            self._template = None
            return
        env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)  # HF's settings
        env.globals["raise_exception"] = _raise
        env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
        self._template = env.from_string(source)

    def render(self, messages: list[dict], add_generation_prompt: bool = True, tools: list[dict] | None = None) -> str:
        """The prompt text; `tools` (OpenAI's tool objects) are given to the template as `tools`, as Hugging
        Face's apply_chat_template does (a template without tool support leaves them out)."""
        if self._template is None:
            raise InvalidRequestError("this model has no chat template: send a prompt, not messages", "messages")
        if not isinstance(messages, list) or not messages:
            raise InvalidRequestError("messages must be a non-empty list", "messages")
        norm = []
        for i, m in enumerate(messages):
            if not isinstance(m, dict) or not isinstance(m.get("role"), str):
                raise InvalidRequestError(f"messages[{i}] must be an object with a string 'role'", "messages")
            norm.append({**m, "content": _content_text(m.get("content"), i)})
        try:
            return self._template.render(messages=norm, add_generation_prompt=add_generation_prompt,
                                         **({"tools": tools} if tools else {}), **self._vars)
        except InvalidRequestError:
            raise
        except Exception as e:  # a template error is about these messages (roles, order)
            raise InvalidRequestError(f"the chat template rejected the messages: {e}", "messages") from e


def _content_text(content: object, i: int) -> str:
    """OpenAI content: a string, or a list of {"type": "text", "text": ...} parts (joined)."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list) and all(isinstance(p, dict) and p.get("type") == "text" for p in content):
        return "".join(str(p.get("text", "")) for p in content)
    raise InvalidRequestError(f"messages[{i}].content must be a string or a list of text parts", "messages")


def _raise(message: str):
    raise InvalidRequestError(message, "messages")
