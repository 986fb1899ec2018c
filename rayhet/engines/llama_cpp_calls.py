"""llama.cpp calls shared by the engine and the ingress's tokenizer: tokenizing, token pieces, the model's chat
template, and GIL-holding bindings of the short functions the engine's step loop calls."""

from __future__ import annotations

import ctypes

from rayhet.engines.base import EngineError
from rayhet.engines.chat import ChatTemplate


def tokenize_text(lc, vocab, text: str, add_bos: bool) -> list[int]:
    """Token ids of `text` in a llama.cpp vocabulary (special tokens parsed); shared with the ingress's tokenizer."""
    data = text.encode()
    # A byte-fallback vocabulary can give more tokens than bytes (SentencePiece's '▁' for a space is 3
    # bytes, so 3 byte tokens); llama.cpp then returns minus the count it needs, and we retry with that.
    cap = len(data) + 8
    for _ in range(2):
        buf = (lc.llama_token * cap)()
        n = lc.llama_tokenize(vocab, data, len(data), buf, cap, add_bos, True)
        if n >= 0:
            return list(buf[:n])
        cap = -n
    raise EngineError(f"tokenize needed {-n} tokens after a retry with room for {cap}")


def token_piece(lc, vocab, token: int, special: bool = False) -> bytes:
    """The bytes of one token's piece (thread-safe: a buffer per call). `lc`: the llama_cpp module, or
    anything with its llama_token_to_piece."""
    buf = ctypes.create_string_buffer(64)
    n = lc.llama_token_to_piece(vocab, token, buf, len(buf), 0, special)
    if n < 0:
        buf = ctypes.create_string_buffer(-n)
        n = lc.llama_token_to_piece(vocab, token, buf, len(buf), 0, special)
    return buf.raw[:n]


class GilHeld:
    """llama.cpp's short functions as ctypes calls that keep the GIL (ctypes.PyDLL), with the same signatures
    as llama-cpp-python's: a call of microseconds is not worth a GIL hand-off."""

    NAMES = ("llama_sampler_sample", "llama_token_to_piece", "llama_vocab_is_eog", "llama_memory_seq_rm",
             "llama_sampler_free")

    def __init__(self, lc):
        lib = lc.llama_cpp._lib
        held = ctypes.PyDLL(lib._name, handle=lib._handle)
        for name in self.NAMES:
            fn, ref = getattr(held, name), getattr(lib, name)
            fn.argtypes, fn.restype = ref.argtypes, ref.restype
            setattr(self, name, fn)


def load_chat_template(lc, model, vocab) -> ChatTemplate:
    """The model's own chat template, with its BOS and EOS texts."""
    def special(token: int) -> str:
        return token_piece(lc, vocab, token, special=True).decode("utf-8", errors="replace") if token >= 0 else ""

    source = lc.llama_model_chat_template(model, None)
    return ChatTemplate(source.decode() if source else None, bos_token=special(lc.llama_vocab_bos(vocab)),
                        eos_token=special(lc.llama_vocab_eos(vocab)))
