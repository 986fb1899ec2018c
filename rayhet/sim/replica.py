"""Replica: an event-driven model of one continuous-batching engine replica, timed by its step model.

The scheduler is the one rayhet's engines run (llama.cpp's step loop in rayhet.engines.llama_cpp, and
vLLM's v1 scheduler with chunked prefill): requests wait FCFS for a batch slot (and, here, for KV room
for prompt + max_tokens: no preemption); each step feeds one token of every decoding sequence, then
prompt chunks, oldest request first (or, with `prefill_allowance_s_per_1k`, the one whose first token is due
soonest), up to the step's token budget; a sequence whose prompt completes in
a step gets its first token at the end of that step, and each later step gives it one more. A request
that finds `max_waiting` others waiting is refused at once (the engine's queue bound).

Time only moves in steps, and each step costs `StepModel.step_time` of its work. Runs of identical
decode-only steps (nothing to admit, nothing prefilling) are fast-forwarded in closed form up to the next
event (a completion or an admissible arrival): their times form an arithmetic series, since each step
adds one token to every context. That keeps a simulated hour of a CPU replica to milliseconds.

Pure: no clock, no I/O. `Replica` is driven by whoever owns time (capacity search here, the fleet
simulator later): `submit()` requests, `advance(until)` to move time, read `finished`.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field

from rayhet.perf import EngineLimits, StepModel, attention_pairs, micro_batches, pass_features, slot_runs


@dataclass
class SimRequest:
    """One request through the replica; the replica fills the times (seconds on the driver's clock)."""

    arrival: float
    input_tokens: int
    output_tokens: int
    rid: int = 0
    first_token: float | None = None
    end: float | None = None
    refused: bool = False
    fed: int = field(default=0, repr=False)  # prompt tokens in the KV cache
    slot: int = field(default=-1, repr=False)
    generated: int = field(default=0, repr=False)

    @property
    def ttft(self) -> float | None:
        return None if self.first_token is None else self.first_token - self.arrival

    @property
    def tpot(self) -> float | None:
        """Mean time per output token after the first (0 for a one-token output)."""
        if self.end is None or self.first_token is None:
            return None
        return (self.end - self.first_token) / max(self.output_tokens - 1, 1)

    @property
    def e2e(self) -> float | None:
        return None if self.end is None else self.end - self.arrival


class Replica:
    """One replica's state. Requests must be submitted in arrival order, each before `advance` passes it."""

    def __init__(self, model: StepModel, limits: EngineLimits, start: float = 0.0):
        self.model, self.limits = model, limits
        self.now = start
        self.waiting: deque[SimRequest] = deque()
        self.running: list[SimRequest] = []
        self.kv_reserved = 0
        self.finished: list[SimRequest] = []
        self.steps = 0
        self._prefilling = 0  # running requests whose prompt is not all in the KV cache yet
        self._free = list(range(limits.batch_slots))  # slot ids, lowest taken first (as the llama.cpp engine)
        self._pending: deque[SimRequest] = deque()  # submitted, arrival still in the future
        self.slowdown = 1.0  # step-time multiplier (a busy neighbour on the host: rayhet.sim.fleet sets it)

    # -- driving ------------------------------------------------------------------------------
    def submit(self, req: SimRequest) -> None:
        need = req.input_tokens + req.output_tokens
        if need > self.limits.max_context or need > self.limits.kv_tokens:
            raise ValueError(f"request of {req.input_tokens}+{req.output_tokens} tokens does not fit this replica "
                             f"(max_context {self.limits.max_context}, kv_tokens {self.limits.kv_tokens})")
        if req.output_tokens < 1 or req.input_tokens < 1:
            raise ValueError("a request has at least 1 input and 1 output token")
        self._pending.append(req)

    @property
    def in_flight(self) -> int:
        return len(self.running) + len(self.waiting)

    def idle(self) -> bool:
        return not self.running and not self.waiting

    def token_rate(self) -> float:
        """Tokens per second the sequences decoding now would come out at, on this engine alone (no slowdown,
        no prompt in the step): what the serving stack streams from this replica (rayhet.sim.host)."""
        decoding = [r for r in self.running if r.fed >= r.input_tokens]
        if not decoding:
            return 0.0
        context = sum(r.input_tokens + r.generated for r in decoding)
        return len(decoding) / self.model.step_time(0, 0, len(decoding), context)

    def advance(self, until: float) -> None:
        """Run steps until `until` (a step that starts before it may end after it), or until the replica is
        idle with no arrival before `until`."""
        while True:
            self._arrive(self.now)
            self._admit()
            if not self.running:  # idle: jump to the next arrival, or to `until`
                nxt = self._pending[0].arrival if self._pending else math.inf
                if not self._pending or nxt > until:
                    if until < math.inf:
                        self.now = max(self.now, until)
                    return
                self.now = max(self.now, nxt)
                continue
            if self.now >= until:
                return
            if self._decode_only():
                self._fast_forward(until)
            else:
                self._step()

    def cancel(self, rid: int) -> bool:
        """Take back a request that has no first token yet (the caller stopped waiting for it): out of the
        queue, or out of its slot with its KV reservation if its prompt was being fed. False when it has its
        first token (it runs on) or is not here. A first token inside the step in progress counts as had."""
        for queue in (self._pending, self.waiting):
            for r in queue:
                if r.rid == rid:
                    queue.remove(r)
                    return True
        for r in self.running:
            if r.rid == rid:
                if r.first_token is not None:
                    return False
                self.running.remove(r)
                self._free.append(r.slot)
                self.kv_reserved -= r.input_tokens + r.output_tokens
                self._prefilling -= 1
                return True
        return False

    def run_to_completion(self) -> list[SimRequest]:
        """Serve everything submitted; returns every request (finished or refused) in arrival order."""
        self.advance(math.inf)
        return sorted(self.finished, key=lambda r: (r.arrival, r.rid))

    # -- internals ----------------------------------------------------------------------------
    def _arrive(self, t: float) -> None:
        bound = self.limits.max_waiting
        while self._pending and self._pending[0].arrival <= t:
            req = self._pending.popleft()
            # the engines' rule: refuse when running + waiting already fill the slots and the queue
            if bound is not None and len(self.waiting) + len(self.running) >= self.limits.batch_slots + bound:
                req.refused = True
                self.finished.append(req)
            else:
                self.waiting.append(req)

    def _admit(self) -> None:
        while self.waiting and len(self.running) < self.limits.batch_slots:
            req = self.waiting[0]
            need = req.input_tokens + req.output_tokens
            if self.kv_reserved + need > self.limits.kv_tokens:
                return  # FCFS: the head waits for room, nobody overtakes it
            self.waiting.popleft()
            self.kv_reserved += need
            req.slot = self._free.pop(self._free.index(min(self._free)))
            self.running.append(req)  # admission order is arrival order: prefill chunks go oldest first
            self._prefilling += 1

    def _decode_only(self) -> bool:
        return self._prefilling == 0

    def _finish(self, req: SimRequest, t: float) -> None:
        req.end = t
        self.running.remove(req)
        self._free.append(req.slot)
        self.kv_reserved -= req.input_tokens + req.output_tokens
        self.finished.append(req)

    def _step(self) -> None:
        """One step with prefill work in it (the hot path of the model: plain loops, no sorting)."""
        n_dec = context = 0
        for r in self.running:
            if r.fed >= r.input_tokens:
                n_dec += 1
                context += r.input_tokens + r.generated
        budget = (self.limits.decode_step_tokens if n_dec and self.limits.decode_step_tokens
                  else self.limits.step_tokens) - n_dec
        chunks: list[tuple[SimRequest, int]] = []
        prefill = pairs = 0
        if budget > 0:
            prefilling = self.running  # admission order = arrival order: oldest first
            per_token = self.limits.prefill_allowance_s_per_1k / 1000.0
            if per_token > 0 and self._prefilling > 1:  # the first token due soonest first, as the engine does
                prefilling = sorted(self.running, key=lambda r: r.arrival + per_token * r.input_tokens)
            for r in prefilling:
                if r.fed < r.input_tokens:
                    take = min(r.input_tokens - r.fed, budget)
                    pairs += attention_pairs(r.fed, take)
                    chunks.append((r, take))
                    prefill += take
                    budget -= take
                    if budget <= 0:
                        break
        passes = multi = 0
        if self.limits.passes_per_slot_run:
            fed = [(r.slot, 1) for r in self.running if r.fed >= r.input_tokens] + [(r.slot, t) for r, t in chunks]
            passes, multi = pass_features(micro_batches(sorted(fed), self.limits.step_tokens))  # fed in slot order
        self.now += self.slowdown * self.model.step_time(prefill, pairs, n_dec, context, passes, multi,
                                                         self.limits.offloaded(prefill + n_dec))
        self.steps += 1
        done = []
        for r in self.running:
            if r.fed >= r.input_tokens:  # decoding before this step (chunks below are not yet counted)
                r.generated += 1
                if r.generated >= r.output_tokens:
                    done.append(r)
        for r, take in chunks:
            r.fed += take
            if r.fed >= r.input_tokens:  # prompt complete: its first token comes out of this step
                self._prefilling -= 1
                r.generated = 1
                r.first_token = self.now
                if r.output_tokens <= 1:
                    done.append(r)
        for r in done:
            self._finish(r, self.now)

    def _fast_forward(self, until: float) -> None:
        """k identical decode steps at once: step j costs a + b*j (every context grows by one per step)."""
        m = self.model
        B = len(self.running)
        C0 = sum(r.input_tokens + r.generated for r in self.running)
        passes, multi = pass_features(slot_runs([r.slot for r in self.running])) if self.limits.passes_per_slot_run \
            else (0, 0)
        a = self.slowdown * (m.c_step + m.c_decode * B + m.c_kv_read * C0 + m.c_pass * passes + m.c_multi * multi
                             + (m.c_offload if self.limits.offloaded(B) else 0.0))
        b = self.slowdown * m.c_kv_read * B
        k = min(r.output_tokens - r.generated for r in self.running)  # steps to the next completion
        full = B >= self.limits.batch_slots
        horizon = until
        if self._pending and not full:
            horizon = min(horizon, self._pending[0].arrival)  # an arrival could join the batch: stop there
        if horizon < math.inf:
            k = min(k, _steps_to_reach(a, b, horizon - self.now))
        end = self.now + k * a + b * k * (k - 1) / 2
        if full:
            # arrivals meanwhile only queue, or are refused by a bound that cannot change until a completion
            self._arrive(end)
        self.now = end
        self.steps += k
        for r in self.running:
            r.generated += k
        for r in [r for r in self.running if r.generated >= r.output_tokens]:
            self._finish(r, self.now)


def _steps_to_reach(a: float, b: float, dt: float) -> int:
    """Fewest k >= 1 with k*a + b*k*(k-1)/2 >= dt (the step during which dt passes is run in full)."""
    if dt <= 0:
        return 1
    if b <= 0:
        return max(1, math.ceil(dt / a)) if a > 0 else 1
    # b/2 k^2 + (a - b/2) k - dt >= 0
    p = a - b / 2
    k = (-p + math.sqrt(p * p + 2 * b * dt)) / b
    k = max(1, math.ceil(k - 1e-9))
    while k > 1 and (k - 1) * a + b * (k - 1) * (k - 2) / 2 >= dt:
        k -= 1
    return k


def simulate(model: StepModel, limits: EngineLimits, requests: list[SimRequest]) -> list[SimRequest]:
    """Serve `requests` (any order) on one replica from an empty start; returns them with times filled."""
    rep = Replica(model, limits, start=min((r.arrival for r in requests), default=0.0))
    for i, r in enumerate(sorted(requests, key=lambda r: r.arrival)):
        r.rid = r.rid or i
        rep.submit(r)
    return rep.run_to_completion()
