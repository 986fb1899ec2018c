"""Tokens: the ingress's own tokenizer (no engine loaded), so it counts prompt tokens exactly to route by size.

The ingress tokenizes once and sends token ids to the pool, so the count it routes by is the count the
engine serves. GGUF models: llama.cpp with `vocab_only=True` (the vocabulary, not the weights) and the
chat template stored in the file. Hugging Face models: `transformers.AutoTokenizer` (vLLM's tokenizer).
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

from rayhet.config import EMBEDDED_MODEL, RayhetConfig


class PromptTokenizer(Protocol):
    def prompt_ids(self, text: str) -> list[int]:
        """Token ids of a completion prompt, as the engine would make them (BOS included)."""
        ...

    def chat_ids(self, messages: list[dict], tools: list[dict] | None = None) -> list[int]:
        """Token ids of a chat rendered with the model's template and the assistant's generation prompt; `tools`
        (OpenAI's tool objects) given to the template, for a pool that parses the model's own tool calls."""
        ...

    def renders_tools(self) -> bool:
        """Whether the model's template writes the tools it is given into the prompt (else a model asked for
        tools in its own format would never see them)."""
        ...

    def text_of(self, ids: list[int]) -> str:
        """The text of token ids (a token-id prompt echoed), special tokens such as BOS left out."""
        ...


class GGUFTokenizer:
    """A GGUF's vocabulary and chat template through llama.cpp (vocab_only: no weights loaded).

    Tokenizes exactly as rayhet.engines.llama_cpp does: prompts get BOS when the model asks for it and
    special tokens are parsed; a rendered chat is tokenized without adding BOS (its template has it).
    """

    def __init__(self, path: str):
        import llama_cpp as lc
        import llama_cpp._logger as lc_log

        from rayhet.engines.llama_cpp_calls import load_chat_template

        lc_log.set_verbose(False)
        lc.llama_backend_init()
        self._lc = lc
        mp = lc.llama_model_default_params()
        mp.vocab_only = True
        self._model = lc.llama_model_load_from_file(path.encode(), mp)
        if not self._model:
            raise ValueError(f"llama.cpp could not read the vocabulary of {path!r}")
        self._vocab = lc.llama_model_get_vocab(self._model)
        self._add_bos = lc.llama_vocab_get_add_bos(self._vocab)
        self._chat = load_chat_template(lc, self._model, self._vocab)

    def _tokenize(self, text: str, add_bos: bool) -> list[int]:
        from rayhet.engines.llama_cpp_calls import tokenize_text

        return tokenize_text(self._lc, self._vocab, text, add_bos)

    def prompt_ids(self, text: str) -> list[int]:
        return self._tokenize(text, self._add_bos)

    def chat_ids(self, messages: list[dict], tools: list[dict] | None = None) -> list[int]:
        return self._tokenize(self._chat.render(messages, tools=tools), False)

    def renders_tools(self) -> bool:
        return renders_tools(lambda tools: self._chat.render(_PROBE, tools=tools))

    def text_of(self, ids: list[int]) -> str:
        from rayhet.engines.llama_cpp_calls import token_piece

        # ids outside the vocabulary are left out: the engine refuses them with a 400 naming the prompt, and
        # llama.cpp must never be asked for their pieces (it reads past its table)
        n = self._lc.llama_vocab_n_tokens(self._vocab)
        return b"".join(token_piece(self._lc, self._vocab, t) for t in ids
                        if isinstance(t, int) and 0 <= t < n).decode("utf-8", errors="replace")


class HFTokenizer:
    """A Hugging Face tokenizer (what vLLM uses) and its chat template."""

    def __init__(self, name_or_path: str):
        from transformers import AutoTokenizer

        self._tok = AutoTokenizer.from_pretrained(name_or_path)

    def prompt_ids(self, text: str) -> list[int]:
        return self._tok(text).input_ids

    def chat_ids(self, messages: list[dict], tools: list[dict] | None = None) -> list[int]:
        text = self._tok.apply_chat_template(messages, tools=tools, tokenize=False, add_generation_prompt=True)
        return self._tok(text, add_special_tokens=False).input_ids

    def renders_tools(self) -> bool:
        return renders_tools(lambda tools: self._tok.apply_chat_template(_PROBE, tools=tools, tokenize=False,
                                                                         add_generation_prompt=True))

    def text_of(self, ids: list[int]) -> str:
        n = len(self._tok)  # out-of-vocabulary ids left out, as for GGUF: the engine refuses them
        return self._tok.decode([t for t in ids if 0 <= t < n], skip_special_tokens=True)


class ByteLevelTokenizer:
    """The FakeEngine's tokenizer (one token per UTF-8 byte): only for pools of the fake test engine."""

    def __init__(self) -> None:
        from rayhet.engines.text import ByteTokenizer

        self._tok = ByteTokenizer()

    def prompt_ids(self, text: str) -> list[int]:
        return self._tok.encode(text)

    def chat_ids(self, messages: list[dict], tools: list[dict] | None = None) -> list[int]:
        return self._tok.encode(self._tok.render_chat(messages, tools))

    def renders_tools(self) -> bool:
        return True

    def text_of(self, ids: list[int]) -> str:
        return bytes(t for t in ids if 0 <= t < 256).decode("utf-8", errors="replace")


_PROBE = [{"role": "user", "content": "x"}]
_PROBE_TOOL = {"type": "function", "function": {"name": "rayhet_probe_tool", "description": "probe",
                                                "parameters": {"type": "object", "properties": {}}}}


def renders_tools(render) -> bool:
    """Whether `render(tools)` (a chat with a probe tool, or with none) writes the tool into the prompt: the
    probe's name appears with it and not without. A template that fails on tools does not render them."""
    try:
        return "rayhet_probe_tool" in render([_PROBE_TOOL]) and "rayhet_probe_tool" not in render(None)
    except Exception:  # noqa: BLE001 - any template error: no tool support to rely on
        return False


def load_tokenizer(config: RayhetConfig) -> PromptTokenizer:
    """The tokenizer for the app's model: GGUF file -> llama.cpp vocab; otherwise HF; fake pools -> bytes."""
    if all(p.engine == "fake" for p in config.pools) and config.model.tokenizer is None:
        return ByteLevelTokenizer()  # (a benchmark may still give fake pools a real tokenizer: model.tokenizer)
    src = config.model.tokenizer_source
    if src == EMBEDDED_MODEL:
        from rayhet.models import default_model_path

        src = str(default_model_path())
    if src is None:
        raise ValueError("model: give gguf, hf or tokenizer so the ingress can count tokens")
    if src.endswith(".gguf") and Path(src).is_file():
        return GGUFTokenizer(src)
    return HFTokenizer(src)
