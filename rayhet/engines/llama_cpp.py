"""LlamaCppEngine: a CPU engine on llama.cpp's low-level API with continuous batching.

One llama context holds `n_slots` sequences in a unified KV cache. A background thread runs the step
loop: admit waiting requests into free slots, build one `llama_batch` with the next token of every
running sequence plus prompt chunks of newly admitted ones (up to `n_batch` tokens, `n_batch_decoding` while
any sequence decodes; the chunks go first to the prompt whose first token is due soonest under the SLO's
allowance per prompt token, else the oldest), `llama_decode` it (ctypes releases the GIL),
sample each sequence with its own sampler chain, and hand the step's deltas to the asyncio side with one
`loop.call_soon_threadsafe`. A finished or cancelled sequence's KV cells are removed at once.

The GIL is released once per step, around `llama_decode`, and nowhere else in the step: the short calls
(sampling, token pieces, end-of-generation checks) hold it. Every release is a hand-off to the event loop's
thread, and getting the GIL back can wait for that thread's switch interval (5 ms): released at each of
3 calls per sequence, a step of 8 sequences ran 5x slower while the event loop was busy (the replica's
loop is busy whenever it serves traffic).
"""

from __future__ import annotations

import asyncio
import collections
import os
import threading
import time
from pathlib import Path
from typing import AsyncIterator

import numpy as np

from rayhet.perf import attention_pairs, micro_batches, pass_features
from rayhet.engines.base import (
    EngineError, EngineOverloadedError, EngineStats, GenerationDelta, GenerationRequest,
    SamplingParams, TokenLogprob, Usage, check_fits, check_no_tools, check_one_prompt, check_token_ids,
)
from rayhet.engines.llama_cpp_calls import GilHeld, load_chat_template, token_piece, tokenize_text
from rayhet.engines.llama_cpp_sampling import response_grammar, sampler_chain, token_logprobs
from rayhet.engines.text import StreamText
from rayhet.engines.tool_formats import PARSERS
from rayhet.engines.llama_cpp_settings import LlamaCppSettings, default_threads  # noqa: F401 - re-exported
from rayhet.hybrid import place_layers


class _Seq:
    """A request's state, shared by the asyncio side and the step thread."""

    def __init__(self, req: GenerationRequest, prompt: list[int], loop: asyncio.AbstractEventLoop):
        self.req, self.prompt, self.loop = req, prompt, loop
        self.out: asyncio.Queue = asyncio.Queue()
        self.slot = -1
        self.n_fed = 0  # tokens of prompt + output already in the KV cache
        self.last_token = -1  # sampled, not yet fed
        self.n_generated = 0
        self.text = StreamText(req.sampling.stop)
        self.prompt_lps: list[TokenLogprob] = []  # prompt tokens 1.. scored so far (sampling.prompt_logprobs)
        self.sampler = None
        self.grammar: str | None = None  # GBNF for response_format, checked at submission
        self.first_token_time: float | None = None
        self.cancelled = False  # set by the consumer; read by the step thread
        self.done = False

    def send(self, item: GenerationDelta | BaseException) -> None:
        try:
            self.loop.call_soon_threadsafe(self.out.put_nowait, item)
        except RuntimeError:  # the consumer's event loop is closed: nobody is listening any more
            self.cancelled = True


def _send_all(seqs: list[_Seq], items: list) -> None:
    """Hand each sequence its item with one wake-up per event loop (not one per sequence)."""
    by_loop: dict[asyncio.AbstractEventLoop, list] = {}
    for seq, item in zip(seqs, items):
        by_loop.setdefault(seq.loop, []).append((seq.out, item))
    for loop, batch in by_loop.items():
        try:
            loop.call_soon_threadsafe(_put_all, batch)
        except RuntimeError:  # the consumers' event loop is closed: nobody is listening any more
            for seq in seqs:
                if seq.loop is loop:
                    seq.cancelled = True


def _put_all(batch: list) -> None:
    for queue, item in batch:
        queue.put_nowait(item)


class LlamaCppEngine:
    """The Engine protocol on llama.cpp: continuous batching of `n_slots` sequences in one context."""

    def __init__(self, settings: LlamaCppSettings):
        self.settings = settings
        self.max_context = settings.n_ctx
        self.max_batch = settings.n_slots
        self.n_threads = settings.n_threads or default_threads()
        self._cv = threading.Condition()
        self._waiting: collections.deque[_Seq] = collections.deque()
        self._n_running = 0
        self._stop = False
        self._thread: threading.Thread | None = None
        self._failure: BaseException | None = None
        self._stats = EngineStats(max_running=settings.n_slots)
        self._recent: collections.deque[tuple[float, int]] = collections.deque()  # (time, tokens) per step
        self._kv_tokens = 0
        self._model = self._ctx = self._vocab = None
        # (prefill tokens, prefill attention pairs, decoding sequences, their context, extra passes, passes over
        # several sequences, seconds) per step, when a profiler asks for it (`rayhet profile` fits
        # rayhet.perf.StepModel to these); None: off
        self.step_log: list[tuple[int, int, int, int, int, int, float]] | None = None

    # ------------------------------------------------------------ life cycle

    async def start(self) -> None:
        if self._thread is not None:
            return
        await asyncio.to_thread(self._load)
        self._thread = threading.Thread(target=self._run, name="rayhet-llama-cpp", daemon=True)
        self._thread.start()

    def _load(self) -> None:
        path = Path(self.settings.model_path)
        if not path.is_file():  # here, on the replica's node: the config was read elsewhere (the head)
            what = "is a directory" if path.is_dir() else "does not exist"
            raise EngineError(f"model_path {str(path)!r} {what} on node {os.uname().nodename}: put the GGUF file "
                              "there (same path on every node of the pool) or mount it, and point model.gguf or "
                              "engine_settings.model_path at it")
        import llama_cpp as lc
        import llama_cpp._logger as lc_log

        lc_log.set_verbose(self.settings.verbose)
        lc.llama_backend_init()
        self._lc = lc
        self._held = GilHeld(lc)
        mp = lc.llama_model_default_params()
        self._split = place_layers(lc, mp, self.settings)  # (the split array must outlive the model's load)
        self._model = lc.llama_model_load_from_file(self.settings.model_path.encode(), mp)
        if not self._model:
            raise EngineError(f"llama.cpp could not load the model {self.settings.model_path!r}")
        self._vocab = lc.llama_model_get_vocab(self._model)
        self.n_vocab = lc.llama_vocab_n_tokens(self._vocab)
        cp = lc.llama_context_default_params()
        s = self.settings
        cp.n_ctx = s.n_ctx * s.n_slots  # every slot can hold a full context: admission never runs out of KV
        cp.n_batch = cp.n_ubatch = s.n_batch
        cp.n_seq_max = s.n_slots
        cp.kv_unified = s.kv_unified
        cp.n_threads = cp.n_threads_batch = self.n_threads
        cp.flash_attn_type = 1 if s.flash_attn else 0  # LLAMA_FLASH_ATTN_TYPE_ENABLED / _DISABLED
        cp.no_perf = True
        self._ctx = lc.llama_init_from_model(self._model, cp)
        if not self._ctx:
            raise EngineError("llama.cpp could not create a context (out of memory?)")
        self._mem = lc.llama_get_memory(self._ctx)
        self._batch = lc.llama_batch_init(s.n_batch, 0, 1)
        self._add_bos = lc.llama_vocab_get_add_bos(self._vocab)
        self._chat = load_chat_template(lc, self._model, self._vocab)

    async def shutdown(self) -> None:
        with self._cv:
            self._stop = True
            self._cv.notify_all()
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join)
            self._thread = None
        if self._ctx is not None:
            lc = self._lc
            lc.llama_batch_free(self._batch)
            lc.llama_free(self._ctx)
            lc.llama_model_free(self._model)
            self._ctx = self._model = None

    async def check_health(self) -> None:
        if self._failure is not None:
            raise EngineError(f"the llama.cpp step loop failed: {self._failure!r}")
        if self._thread is None or not self._thread.is_alive():
            raise EngineError("the llama.cpp engine is not running (start() it first)")

    # ------------------------------------------------------------ text

    def tokenize(self, text: str, add_bos: bool | None = None) -> list[int]:
        """Token ids of `text` as a prompt (BOS added when the model wants it; special tokens parsed)."""
        return tokenize_text(self._lc, self._vocab, text, self._add_bos if add_bos is None else add_bos)

    def count_tokens(self, text: str) -> int:
        return len(self.tokenize(text))

    def render_chat(self, messages: list[dict]) -> str:
        return self._chat.render(messages)

    def detokenize(self, token_ids: list[int]) -> str:
        return b"".join(token_piece(self._lc, self._vocab, t) for t in token_ids).decode("utf-8", errors="replace")

    def _prompt_ids(self, req: GenerationRequest) -> list[int]:
        check_one_prompt(req.prompt, req.prompt_token_ids, req.messages)
        if req.messages is not None:
            return self.tokenize(self.render_chat(req.messages), add_bos=False)  # the template has BOS
        if req.prompt is not None:
            return self.tokenize(req.prompt)
        return check_token_ids(req.prompt_token_ids, self.n_vocab)

    # ------------------------------------------------------------ generation

    async def generate(self, request: GenerationRequest) -> AsyncIterator[GenerationDelta]:
        """Stream deltas; closing this generator early cancels the request and frees its slot."""
        await self.check_health()
        request.sampling.validate()
        parse = None
        if request.tools is not None:
            if self.settings.tool_call_parser is None:
                check_no_tools(request)  # no parser here: the ingress sends tools as structured output
            parse = PARSERS[self.settings.tool_call_parser]
        prompt = self._prompt_ids(request)
        check_fits(len(prompt), request.sampling.max_tokens, self.max_context)
        seq = _Seq(request, prompt, asyncio.get_running_loop())
        seq.grammar = self._grammar(request.sampling)
        with self._cv:
            if len(self._waiting) + self._n_running >= self.settings.n_slots + self.settings.max_waiting:
                raise EngineOverloadedError(
                    f"{self._n_running} running and {len(self._waiting)} waiting: the queue "
                    f"(max_waiting={self.settings.max_waiting}) is full")
            self._waiting.append(seq)
            self._stats.requests_total += 1
            self._cv.notify()
        parts: list[str] = []
        try:
            while True:
                item = await seq.out.get()
                if isinstance(item, BaseException):
                    raise item
                if parse is not None:
                    parts.append(item.text)
                    if item.finish_reason is not None:  # the whole output: read once, at its end
                        item.parsed = parse("".join(parts))
                yield item
                if item.finish_reason is not None:
                    return
        finally:
            if not seq.done:
                with self._cv:
                    seq.cancelled = True
                    self._cv.notify()

    def stats(self) -> EngineStats:
        with self._cv:
            st = EngineStats(**vars(self._stats))
            st.running, st.waiting = self._n_running, len(self._waiting)
            now = time.monotonic()
            recent = [(t, n) for t, n in list(self._recent) if t > now - 5.0]
        if recent:
            span = max(now - recent[0][0], 1e-3)
            st.tokens_per_s = sum(n for _, n in recent) / span
        st.kv_usage = self._kv_tokens / (self.settings.n_ctx * self.settings.n_slots)
        return st

    # ------------------------------------------------------------ step thread

    def _run(self) -> None:
        running: dict[int, _Seq] = {}
        free = list(range(self.settings.n_slots))
        try:
            while True:
                with self._cv:
                    while not self._stop and not self._waiting and not running:
                        self._cv.wait()
                    if self._stop:
                        break
                    t_step = time.perf_counter()  # a step's time: admission, decode, sampling, sending
                    while self._waiting and free:
                        seq = self._waiting.popleft()
                        if seq.cancelled:
                            continue
                        seq.slot = free.pop(free.index(min(free)))  # low ids first: few gaps between running ids
                        seq.sampler = self._make_sampler(seq)
                        running[seq.slot] = seq
                        self._stats.prompt_tokens_total += len(seq.prompt)
                    self._n_running = len(running)
                for seq in [s for s in running.values() if s.cancelled]:
                    self._release(seq, running, free)
                if running:
                    work = self._step(running, free)
                    if self.step_log is not None:
                        self.step_log.append((*work, time.perf_counter() - t_step))
        except BaseException as e:  # a llama.cpp failure: fail every request rather than hang them
            self._failure = e
            with self._cv:
                self._stats.requests_failed += len(running)
            for seq in running.values():
                seq.send(EngineError(f"llama.cpp step failed: {e!r}"))
                seq.done = True
        finally:
            with self._cv:
                leftovers = list(running.values()) + list(self._waiting)
                self._waiting.clear()
            for seq in leftovers:
                if not seq.done:
                    seq.send(EngineError("the engine shut down"))
            for seq in running.values():
                self._free_sampler(seq)

    def _grammar(self, sp: SamplingParams) -> str | None:
        return response_grammar(self._lc, self._vocab, sp)

    def _make_sampler(self, seq: _Seq):
        return sampler_chain(self._lc, self._vocab, seq.req.sampling, seq.grammar, n_vocab=self.n_vocab,
                             window=self.max_context, default_seed=self.settings.seed)

    def _free_sampler(self, seq: _Seq) -> None:
        if seq.sampler is not None:
            self._held.llama_sampler_free(seq.sampler)
            seq.sampler = None

    def _release(self, seq: _Seq, running: dict[int, _Seq], free: list[int]) -> None:
        self._held.llama_memory_seq_rm(self._mem, seq.slot, -1, -1)
        self._kv_tokens -= seq.n_fed
        self._free_sampler(seq)
        del running[seq.slot]
        free.append(seq.slot)
        with self._cv:
            self._n_running = len(running)

    def _step(self, running: dict[int, _Seq], free: list[int]) -> tuple[int, int, int, int, int, int]:
        """One llama_decode: a token of each decoding sequence, then prompt chunks up to n_batch. Returns its
        work: (prefill tokens, prefill attention pairs, decoding sequences, their context tokens, extra passes,
        passes over several sequences)."""
        lc, b, budget = self._lc, self._batch, self.settings.n_batch
        decoding = [s for s in running.values() if s.n_fed >= len(s.prompt)]
        per_token = self.settings.prefill_allowance_s_per_1k / 1000.0
        prefilling = sorted((s for s in running.values() if s.n_fed < len(s.prompt)),
                            key=lambda s: s.req.arrival_time + per_token * len(s.prompt))
        context = sum(s.n_fed + 1 for s in decoding)
        take = {s.slot: 1 for s in decoding}  # tokens each sequence feeds in this step: decode tokens first,
        if decoding and self.settings.n_batch_decoding:  # keep a step with decoding sequences short
            budget = self.settings.n_batch_decoding
        left = budget - len(decoding)  # then prompt chunks, the first token due soonest first
        pairs = 0
        for s in prefilling:
            if left <= 0:
                break
            take[s.slot] = n = min(len(s.prompt) - s.n_fed, left)
            pairs += attention_pairs(s.n_fed, n)
            left -= n
        # Slot order in the batch: with a KV stream per slot, llama.cpp splits a batch into passes of slots
        # whose ids rise by one in batch order (split_equal): unsorted, a full batch can take several passes.
        outputs: list[tuple[int, _Seq]] = []  # (batch index, sequence) whose logits are sampled
        prompt_rows: list[tuple[int, _Seq, int]] = []  # (batch index, sequence, prompt position it scores)
        n = 0
        for slot in sorted(take):
            s = running[slot]
            if s.n_fed >= len(s.prompt):
                n = self._put(b, n, s.last_token, s.n_fed, s.slot, True)
                outputs.append((n - 1, s))
                s.n_fed += 1
                continue
            end = s.n_fed + take[slot]
            # a prompt to score asks for every row's logits; the others only for the last row's (the row of
            # position i predicts token i + 1), so a request that does not ask pays nothing for it
            scored = s.req.sampling.prompt_logprobs is not None
            for i in range(s.n_fed, end):
                last = i == len(s.prompt) - 1
                n = self._put(b, n, s.prompt[i], i, s.slot, last or scored)
                if scored and not last:
                    prompt_rows.append((n - 1, s, i + 1))
            s.n_fed = end
            if s.n_fed == len(s.prompt):
                outputs.append((n - 1, s))
        b.n_tokens = n
        self._kv_tokens += n
        rc = lc.llama_decode(self._ctx, b)
        if rc != 0:
            raise EngineError(f"llama_decode returned {rc} for a batch of {n} tokens")
        now = time.monotonic()
        for idx, s, j in prompt_rows:
            s.prompt_lps.append(self._logprob(idx, s.prompt[j], s.req.sampling.prompt_logprobs))
        deltas = []
        for idx, s in outputs:
            sp = s.req.sampling
            token = self._held.llama_sampler_sample(s.sampler, self._ctx, idx)
            lp = [self._logprob(idx, token, sp.logprobs)] if sp.logprobs is not None else None
            deltas.append(self._next(s, token, now))
            deltas[-1].logprobs = lp
            if sp.prompt_logprobs is not None and s.n_generated == 1:  # once, with the first token
                deltas[-1].prompt_logprobs = [self._entry(s.prompt[0], None), *s.prompt_lps]
                s.prompt_lps = []
            if s.done:  # free the slot before the last delta goes out: a client never sees it still held
                self._release(s, running, free)
        with self._cv:
            self._stats.generated_tokens_total += len(outputs)
            self._recent.append((now, len(outputs)))
            while self._recent and self._recent[0][0] < now - 5.0:
                self._recent.popleft()
        _send_all([s for _, s in outputs], deltas)
        passes = (0, 0) if self.settings.kv_unified else pass_features(
            micro_batches(sorted(take.items()), self.settings.n_batch))
        return n - len(decoding), pairs, len(decoding), context, *passes

    def _logprob(self, idx: int, token: int, k: int) -> TokenLogprob:
        """`token`'s logprob and the k most likely, from the raw logits of batch row `idx` (the step thread,
        before the next decode overwrites them)."""
        logits = np.ctypeslib.as_array(self._lc.llama_get_logits_ith(self._ctx, idx), shape=(self.n_vocab,))
        lp, top = token_logprobs(logits, token, k)
        out = self._entry(token, lp)
        out.top = [self._entry(t, v) for t, v in top]
        return out

    def _entry(self, token: int, logprob: float | None) -> TokenLogprob:
        raw = token_piece(self._held, self._vocab, int(token))
        return TokenLogprob(raw.decode("utf-8", errors="replace"), list(raw), logprob)

    @staticmethod
    def _put(b, n: int, token: int, pos: int, seq_id: int, logits: bool) -> int:
        b.token[n], b.pos[n], b.n_seq_id[n], b.logits[n] = token, pos, 1, logits
        b.seq_id[n][0] = seq_id
        return n + 1

    def _next(self, s: _Seq, token: int, now: float) -> GenerationDelta:
        """The delta a newly sampled token makes (text held back near stop strings); marks `done`."""
        sp = s.req.sampling
        s.n_generated += 1
        s.last_token = token
        if s.first_token_time is None:
            s.first_token_time = now
        finish = None
        # a finished grammar allows nothing but end-of-generation: then it ends even under ignore_eos
        if (not sp.ignore_eos or s.grammar is not None) and self._held.llama_vocab_is_eog(self._vocab, token):
            text, finish = s.text.flush(), "stop"
        else:
            text = s.text.push(token_piece(self._held, self._vocab, token))
            if s.text.stopped:
                finish = "stop"
            elif s.n_generated >= sp.max_tokens:
                text, finish = text + s.text.flush(), "length"
        delta = GenerationDelta(text=text, token_ids=[token], first_token_time=s.first_token_time)
        if finish is not None:
            delta.finish_reason = finish
            delta.usage = Usage(prompt_tokens=len(s.prompt), completion_tokens=s.n_generated)
            s.done = True
        return delta
