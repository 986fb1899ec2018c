"""Streamed text: incremental UTF-8 decoding of token pieces and stop strings held back until decided."""

from __future__ import annotations

import codecs


class StreamText:
    """Turns token byte pieces into text deltas, cutting at the first stop string (which is not emitted).

    Text that could be the start of a stop string is held back until a later token decides it, so a
    client never sees part of a stop string. Once a delta is emitted, no stop can begin inside it.
    """

    def __init__(self, stop: list[str]):
        self._stop = [s for s in stop if s]
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._text = ""  # decoded so far
        self._emitted = 0  # characters of _text already handed out
        self.stopped = False

    def push(self, piece: bytes, final: bool = False) -> str:
        """Add a token's bytes; return the text now safe to emit. Sets `stopped` on a stop string."""
        if self.stopped:
            return ""
        self._text += self._decoder.decode(piece, final=final)
        tail = self._text[self._emitted:]
        cut = min((i for i in (tail.find(s) for s in self._stop) if i >= 0), default=-1)
        if cut >= 0:
            self.stopped = True
            self._emitted = len(self._text)
            return tail[:cut]
        hold = 0 if final else self._held(tail)
        out = tail[: len(tail) - hold]
        self._emitted += len(out)
        return out

    def flush(self) -> str:
        """The held-back text when generation ends without a stop string."""
        return self.push(b"", final=True)

    def _held(self, tail: str) -> int:
        """Length of the longest suffix of `tail` that is a proper prefix of some stop string."""
        best = 0
        for s in self._stop:
            for n in range(min(len(s) - 1, len(tail)), best, -1):
                if tail.endswith(s[:n]):
                    best = n
                    break
        return best


class ByteTokenizer:
    """One token per UTF-8 byte: the FakeEngine's tokenizer (a test double), and the ingress's for its pools."""

    def encode(self, text: str) -> list[int]:
        return list(text.encode("utf-8"))

    def render_chat(self, messages: list[dict], tools: list[dict] | None = None) -> str:
        """A ChatML-like rendering; with `tools` (OpenAI's tool objects) a hermes-style tools block first, and
        each earlier call as a <tool_call> block, as a model's own template with tool support does."""
        import json

        head = f"<tools>{json.dumps(tools)}</tools>\n" if tools else ""
        calls = lambda m: "".join(f"<tool_call>{json.dumps(c['function'])}</tool_call>"  # noqa: E731
                                  for c in m.get("tool_calls") or [])
        return head + "".join(f"<{m.get('role', 'user')}>{m.get('content') or ''}{calls(m)}\n"
                              for m in messages) + "<assistant>"
