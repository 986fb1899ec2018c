"""The simulated deployment's parts: a pool as the simulator needs it (PoolModel, built from a config by
rayhet.sim.build), one trace request's journey through it (Request), one replica (SimReplica: its engine model,
Serve's count of what it holds, its life cycle), and what a run leaves (FleetResult). rayhet.sim.fleet moves
them through time.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from rayhet.perf import EngineLimits, StepModel
from rayhet.sim.replica import Replica, SimRequest


@dataclass(frozen=True)
class PoolModel:
    """What the simulator needs of one pool."""

    name: str
    price_per_hour: float
    step: StepModel
    limits: EngineLimits
    max_ongoing: int  # Serve's max_ongoing_requests per replica
    max_queued: int  # caller-side queue across the ingress replicas (-1: unbounded)
    startup_s: float
    min_replicas: int
    max_replicas: int
    initial_replicas: int
    graceful_shutdown_s: float = 10.0
    request_s: float = 0.0  # the serving stack's delay before the engine sees a request (ServingOverhead)
    host: str | None = None  # pools naming one host slow each other (HostContention)
    slowdown: float = 0.0  # steps take (1 + this) times as long while another replica on the host is busy
    threads: float = 1.0  # cores one busy replica's engine computes on (rayhet.sim.host)
    host_cpus: float | None = None  # the host's cores, where the stack shares them with the engines
    stack_cpu_s_per_token: float = 0.0
    base_cpus: float = 0.0

    @property
    def max_context(self) -> int:
        return self.limits.max_context


@dataclass
class Request:
    """One trace request through the simulated deployment (times on the simulation clock, seconds)."""

    idx: int
    arrival: float
    input_tokens: int
    output_tokens: int
    max_tokens: int
    route: object = None  # rayhet.routing.Route
    tries: list[str] = field(default_factory=list)
    attempt: int = 0
    pool: str | None = None
    spilled: bool = False
    first_token: float | None = None
    end: float | None = None
    outcome: str = "pending"  # ok | rejected (no pool fits) | refused (every pool pushed back) | failed
    # refused 503 after waiting `server.max_wait_s` for a first token (the others are refused at once)
    waited_out: bool = False


class SimReplica:
    """One replica of a pool: its engine model, Serve's count of what it holds, its life cycle."""

    def __init__(self, pool: PoolModel, rid: int, t: float, ready_at: float):
        self.rid = rid
        self.started_at = t
        self.ready_at = ready_at
        self.state = "starting" if ready_at > t else "running"
        self.stop_at: float | None = None  # drain deadline once stopping
        self.ended_at: float | None = None
        limits = pool.limits.model_copy(update={"max_waiting": None})  # Serve's max_ongoing bounds it
        self.engine = Replica(pool.step, limits, start=t)
        self.request_s = pool.request_s
        self.ongoing: dict[int, Request] = {}
        self._seen = 0  # engine.finished consumed so far

    def take(self, req: Request, t: float) -> None:
        # the stack's delay is the same for every request of a pool, so arrivals stay in order
        sim = SimRequest(t + self.request_s, req.input_tokens, req.output_tokens, rid=req.idx)
        self.engine.submit(sim)
        self.ongoing[req.idx] = req

    def cancel(self, req: Request) -> bool:
        """The ingress stopped waiting for `req` (no first token by `server.max_wait_s`): Serve cancels it on the
        replica. False when it has started (it runs on)."""
        if req.idx in self.ongoing and self.engine.cancel(req.idx):
            del self.ongoing[req.idx]
            return True
        return False

    def advance(self, t: float) -> list[tuple[Request, SimRequest]]:
        """Run the engine to `t`; the requests that finished by `t` (in end order)."""
        if not self.ongoing:
            return []
        self.engine.advance(t)
        fin = self.engine.finished
        done = []
        while self._seen < len(fin):
            # finished is in completion order; a step that ends after t stays for later
            sim = fin[self._seen]
            if sim.end is not None and sim.end > t:
                break
            done.append((self.ongoing.pop(sim.rid), sim))
            self._seen += 1
        return done


@dataclass
class FleetResult:
    requests: list[Request]
    replica_spans: list[tuple[str, float, float]]  # (pool, started, ended) of every replica
    prices: dict[str, float]
    duration_s: float
    plans: list[tuple[float, dict[str, int], float]]  # (time, replicas, $/h) of each plan adopted
    targets: list[tuple[float, str, int]]  # (time, pool, Serve target) at each change
    scale_ups: list[tuple[float, str, int, float]]  # (time requested, pool, replica id, ready at)
    decisions: list[dict] = field(default_factory=list)  # rayhet.control.decision of periods that solved or scaled

    def cost(self, start: float = 0.0, end: float | None = None) -> float:
        end = self.duration_s if end is None else end
        total = 0.0
        for pool, a, b in self.replica_spans:
            lo, hi = max(a, start), min(b, end)
            if hi > lo:
                total += (hi - lo) / 3600.0 * self.prices[pool]
        return total
