"""Fleet: a rayhet deployment in simulated time — pools of replica models behind the real dispatcher and
the real controller.

What is simulated, and what is the production code itself:

| part | here |
|---|---|
| an engine replica | `rayhet.sim.replica.Replica`, timed by its pool's step model (the profile's engine model) |
| Ray Serve, per pool | `max_ongoing_requests` per replica, a caller-side queue of `max_queued_requests` per ingress replica (beyond: backpressure), replicas that take `startup_s` to start, and scale-down that stops starting replicas first, then the newest, each draining for up to `graceful_shutdown_s` |
| Serve's proxy and the ingress replicas as servers | `rayhet.sim.stack.HttpStack`: a request waits for a free one (`server.proxy_capacity_rps`, `server.ingress_capacity_rps` per replica) before the router sees it |
| the ingress | **`rayhet.dispatch.Dispatcher`**: the Router, its output-length predictor, spill-over, the TrafficRecorder; a request without its first token `server.max_wait_s` after the ingress got it is refused (503) and cancelled where it waits, as `rayhet.serve.sending` does |
| the controller | **`rayhet.control.tick`** every `period_s` on the recorder's snapshot, solving with **`rayhet.control.solve_mix`** (the planner) |
| each pool's Serve policy | **`rayhet.control.policy_target`** every `policy_poll_s` |
| the start-up plan | **`rayhet.app.startup_plan`** and the builder's **`initial_replicas`** |

Time only moves through events (arrivals, completions, control and policy periods, replicas ready,
drains ending); replicas are advanced lazily to the time of the next event that needs them. A request
that finishes frees its place in Serve's count at its exact end time; requests queued at the caller are
moved onto replicas at the next event, and while any wait a sweep runs every `sweep_s` (default 20 ms),
so a queued request starts at most that late.

Pure: no Ray, no wall clock. `Fleet.run(trace)` returns a `FleetResult` (per-request outcomes, replica
intervals for cost, the plans and targets; rayhet.sim.deployment has these parts).
"""

from __future__ import annotations

import heapq
import math
from collections import deque

from rayhet.control import (ControlState, PoolBounds, adopt_startup_plan, decision, observe, policy_target, solve_mix,
                            tick)
from rayhet.dispatch import Dispatcher
from rayhet.plan import Plan
from rayhet.routing import PoolLimit
from rayhet.sim.deployment import FleetResult, PoolModel, Request, SimReplica
from rayhet.sim.host import host_share
from rayhet.sim.replica import SimRequest
from rayhet.sim.serve_default import serve_default_target
from rayhet.sim.stack import HttpStack
from rayhet.sim.trace import Trace



HOST_TICK_S = 0.1  # how soon a replica on a shared host sees its neighbour fall idle (HostContention)


class Fleet:
    """The simulated deployment. Build it from a RayhetConfig with `rayhet.sim.build.fleet_for`."""

    def __init__(self, config, pools: list[PoolModel], options: list, startup: Plan, *, controlled: bool = True,
                 max_tokens: str | int = "exact", sweep_s: float = 0.02, solver=None, serve_autoscaling=None,
                 control_phase_s: float | None = None, up_before_s: float = 0.0):
        self.config = config
        self.pools = {p.name: p for p in pools}
        self.options = options  # rayhet.planner.PoolOption per pool (the controller's solver input)
        self.controlled = controlled
        # pool -> ray.serve.config.AutoscalingConfig: that pool follows Ray Serve's own default policy instead
        self.serve_autoscaling = dict(serve_autoscaling or {})
        self._serve_state: dict[str, dict] = {p: {} for p in self.serve_autoscaling}
        self.max_tokens = max_tokens
        self.sweep_s = sweep_s
        self.max_wait_s = config.server.max_wait_s
        self.settings = config.controller
        # when the first control period runs (default: one period in); a validation replays the real
        # controller's phase, since a plan chosen near a threshold can differ with the window it sees
        self.control_phase_s = self.settings.period_s if control_phase_s is None else control_phase_s
        # the app ran `up_before_s` before the first arrival: its traffic window counts from then, as a live
        # ingress's does from its start (a young window reads the first arrivals as a higher rate)
        self.now = -max(up_before_s, 0.0)
        self.dispatch = Dispatcher(config, startup, [PoolLimit(p.name, p.max_context, p.price_per_hour) for p in pools],
                                   list(self.pools), clock=lambda: self.now, wall_clock=lambda: self.now)
        self.now = 0.0
        self.state = adopt_startup_plan(ControlState(), startup.to_dict(), 0.0)
        self.bounds = {p.name: PoolBounds(p.min_replicas, p.max_replicas, p.max_ongoing, p.startup_s) for p in pools}
        self.solver = solver or (lambda grid, rates, total: solve_mix(
            self.options, grid, rates, total, slices=config.planner.slices, time_limit_s=self.settings.solve_time_limit_s))
        self.replicas: dict[str, list[SimReplica]] = {p.name: [] for p in pools}
        self.queue: dict[str, deque[Request]] = {p.name: deque() for p in pools}
        self.target: dict[str, int] = {}
        self.reported: dict[str, tuple[int, float]] = {}
        self.spans: list[tuple[str, float, float]] = []
        self.plans: list[tuple[float, dict[str, int], float]] = [(0.0, dict(startup.replicas), startup.cost_per_hour)]
        self.target_log: list[tuple[float, str, int]] = []
        self.scale_ups: list[tuple[float, str, int, float]] = []
        self.decisions: list[dict] = []  # the control periods that solved or moved a target (why it scaled)
        self._rid = 0
        # host -> its pools, where a busy neighbour slows a replica's steps (HostContention)
        self._hosts: dict[str, list[str]] = {}
        self._host_tick = False
        for p in pools:
            if p.host is not None:
                self._hosts.setdefault(p.host, []).append(p.name)
        self._last = 0.0  # the last arrival, completion or kill: the run ends there
        self.stack = HttpStack.from_server(config.server)
        self._in_stack = 0  # requests waiting in the proxy or an ingress replica
        self._events: list = []
        self._seq = 0
        for p in pools:
            self._set_target(p.name, p.initial_replicas, 0.0, ready_now=True)

    # -- events --------------------------------------------------------------------------------
    def _at(self, t: float, kind: str, data=None) -> None:
        self._seq += 1
        heapq.heappush(self._events, (t, self._seq, kind, data))

    def run(self, trace: Trace, *, progress=None) -> FleetResult:
        n = len(trace)
        end_of_arrivals = trace.duration_s
        reqs: list[Request] = []
        if self.controlled:
            self._at(self.control_phase_s, "control")
        if self.controlled or self.serve_autoscaling:
            self._at(self.settings.policy_poll_s, "poll")
        k = 0
        arrival, n_in, n_out = trace.arrival, trace.input_tokens, trace.output_tokens
        while True:
            t_next_arrival = arrival[k] if k < n else math.inf
            t_next_event = self._events[0][0] if self._events else math.inf
            if t_next_arrival == math.inf and not self._busy():
                break
            if k < n and t_next_arrival <= t_next_event:
                self.now = float(t_next_arrival)
                if self._hosts:
                    self._run_hosts()
                out = int(n_out[k])
                mt = out if self.max_tokens == "exact" else max(out, int(self.max_tokens))
                req = Request(k, self.now, int(n_in[k]), out, mt)
                reqs.append(req)
                reach = self.stack.reach(self.now)
                if reach is None:  # shed by an overloaded ingress replica
                    self.dispatch.traffic.arrival(None, now=self.now)
                    req.outcome, req.end = "refused", self.now + self.stack.shed_s
                elif reach > self.now:
                    self._in_stack += 1
                    self._at(reach, "routed", req)
                else:
                    self._arrive(req)
                if self._hosts:
                    self._set_slowdowns()
                k += 1
                if progress is not None and k % 2000 == 0:
                    progress(k)
                continue
            if t_next_event == math.inf:  # nothing scheduled, no arrivals left: let the replicas finish
                self.now = self._drain_time()
                self._collect_all()
                if not self._busy():
                    break
                continue
            t, _, kind, data = heapq.heappop(self._events)
            self.now = t
            if self._hosts:
                self._run_hosts()
            if kind in ("control", "poll") and k >= n and not self._busy():
                continue  # the trace is over and everything finished: stop the periodic events
            getattr(self, "_on_" + kind)(data)
            if self._hosts:
                self._set_slowdowns()
        end = max(self._last, end_of_arrivals)
        for pool, reps in self.replicas.items():
            for r in reps:
                if r.ended_at is None:
                    r.ended_at = end
                    self.spans.append((pool, r.started_at, end))
        if progress is not None:
            progress(n)
        return FleetResult(reqs, self.spans, {p: m.price_per_hour for p, m in self.pools.items()}, end,
                           self.plans, self.target_log, self.scale_ups, self.decisions)

    def _run_hosts(self) -> None:
        """Replicas on a shared host run to now at the slowdowns set after the last moment (an arrival, an event,
        or the host tick: a neighbour falling idle is seen within HOST_TICK_S)."""
        for pools in self._hosts.values():
            for p in pools:
                self._collect(p)
        self._set_slowdowns()

    def _set_slowdowns(self) -> None:
        """Each replica on a shared host: slowed while another replica there holds a request, and by the host's
        share of its cores (rayhet.sim.host) where it has a number of them. While any replica holds a request, a
        host tick every HOST_TICK_S makes a moment, so that a neighbour falling idle is seen that soon."""
        any_busy = False
        for pools in self._hosts.values():
            reps = [(p, r) for p in pools for r in self.replicas[p] if r.state != "stopped"]
            host = self.pools[pools[0]]  # the config holds every pool of a host to the same cpus
            share = 1.0
            if host.host_cpus:
                engines = host.base_cpus + sum(self.pools[p].threads for p, r in reps if r.ongoing)
                tokens = sum(r.engine.token_rate() for _, r in reps)
                share = host_share(host.host_cpus, engines, tokens, host.stack_cpu_s_per_token)
            for p, r in reps:
                busy = any(o is not r and o.ongoing for _, o in reps)
                r.engine.slowdown = share * (1.0 + self.pools[p].slowdown if busy else 1.0)
                any_busy = any_busy or bool(r.ongoing)
        if any_busy and not self._host_tick:
            self._host_tick = True
            self._at(self.now + HOST_TICK_S, "host_tick")

    def _on_host_tick(self, _) -> None:
        self._host_tick = False  # the moment itself did the work (_run_hosts, _set_slowdowns)

    def _busy(self) -> bool:
        return self._in_stack > 0 or any(self.queue[p] for p in self.queue) or any(r.ongoing for reps in self.replicas.values() for r in reps)

    def _drain_time(self) -> float:
        """With no events left, when the next replica-held request ends (advance every busy replica)."""
        ends = []
        for reps in self.replicas.values():
            for r in reps:
                if r.ongoing:
                    r.engine.advance(math.inf)
                    ends += [s.end for s in r.engine.finished[r._seen:] if s.end is not None]
        return max(self.now, min(ends)) if ends else self.now

    # -- requests ------------------------------------------------------------------------------
    def _on_routed(self, req: Request) -> None:
        self._in_stack -= 1
        self._arrive(req)

    def _arrive(self, req: Request) -> None:
        route = self.dispatch.route(req.input_tokens, req.max_tokens, now=self.now)
        req.route = route
        if not route.pools:
            req.outcome, req.end = "rejected", self.now
            return
        req.tries = self.dispatch.order(route, self._running, self._usable)
        if not req.tries:  # every planned pool is starting: the ingress refuses (503, Retry-After) at once
            req.outcome, req.end = "refused", self.now
            return
        self._try(req, prev=None)

    def _running(self, pool: str) -> int:
        return sum(1 for r in self.replicas[pool] if r.state == "running")

    def _usable(self, pool: str) -> bool:
        """Serve's HEALTHY at 0 replicas (rayhet.serve.health.can_serve): scaled to zero with none starting,
        so a waiting request makes its policy start one."""
        return self._running(pool) > 0 or not any(r.state == "starting" for r in self.replicas[pool])

    def _try(self, req: Request, prev: str | None) -> None:
        """Send to the request's next pool; on backpressure, the one after (spill-over), as the ingress does."""
        while req.attempt < len(req.tries):
            pool = req.tries[req.attempt]
            req.attempt += 1
            self.dispatch.sent(pool, spilled_from=prev, now=self.now)
            if self._admit(pool, req):
                req.pool, req.spilled = pool, prev is not None
                self._at(self.now + self.max_wait_s, "deadline", req)
                return
            self.dispatch.pushed_back(pool)
            prev = pool
        req.outcome, req.end = "refused", self.now

    def _admit(self, pool: str, req: Request) -> bool:
        """Serve's handle: onto the least-loaded running replica with room, else into the caller queue if it
        has room, else backpressure (False)."""
        # Counts only fall when requests finish, so a replica with room by the counts as last collected has
        # room now: advance the pool's replicas only when none seems to (the hot path of a long trace)
        rep = self._least_loaded(pool) if not self.queue[pool] else None
        if rep is None:
            self._collect(pool)
            rep = self._least_loaded(pool)
        if rep is not None and not self.queue[pool]:
            rep.take(req, self.now)
            return True
        cap = self.pools[pool].max_queued
        if cap < 0 or len(self.queue[pool]) < cap:
            self.queue[pool].append(req)
            self._ensure_sweep()
            return True
        return False

    def _least_loaded(self, pool: str) -> SimReplica | None:
        room = self.pools[pool].max_ongoing
        best = None
        for r in self.replicas[pool]:
            if r.state == "running" and len(r.ongoing) < room and (best is None or len(r.ongoing) < len(best.ongoing)):
                best = r
        return best

    def _drain_queue(self, pool: str) -> None:
        q = self.queue[pool]
        while q:
            rep = self._least_loaded(pool)
            if rep is None:
                return
            rep.take(q.popleft(), self.now)

    def _collect(self, pool: str) -> None:
        """Advance the pool's replicas to now; record what finished; move queued requests onto freed room."""
        for rep in self.replicas[pool]:
            for req, sim in rep.advance(self.now):
                self._finished(pool, req, sim)
            if rep.state == "stopping" and not rep.ongoing:
                self._remove(pool, rep, self.now)
        self._drain_queue(pool)

    def _collect_all(self) -> None:
        for pool in self.pools:
            self._collect(pool)

    def _finished(self, pool: str, req: Request, sim: SimRequest) -> None:
        req.first_token, req.end, req.outcome = sim.first_token, sim.end, "ok"
        self._last = max(self._last, sim.end)
        self.dispatch.succeeded(pool, req.route, req.output_tokens, req.max_tokens, sim.first_token - req.arrival,
                                sim.end - sim.first_token, now=sim.end)

    def _on_deadline(self, req: Request) -> None:
        """`server.max_wait_s` since the ingress got `req`: without its first token it is refused (503) and
        Serve cancels it, in the caller queue or on its replica (rayhet.serve.sending: WaitedTooLong)."""
        if req.outcome != "pending":
            return
        pool = req.pool
        self._collect(pool)  # to now: it may have finished, or started
        if req.outcome != "pending":
            return
        q = self.queue[pool]
        queued = next((i for i, r in enumerate(q) if r is req), None)
        if queued is not None:
            del q[queued]
        else:
            rep = next((r for r in self.replicas[pool] if req.idx in r.ongoing), None)
            if rep is None or not rep.cancel(req):
                return  # it has its first token: it runs on
            self._drain_queue(pool)  # its slot is free
        req.outcome, req.end, req.waited_out = "refused", self.now, True
        self.dispatch.pushed_back(pool)

    def _ensure_sweep(self) -> None:
        if not getattr(self, "_sweeping", False):
            self._sweeping = True
            self._at(self.now + self.sweep_s, "sweep")

    def _on_sweep(self, _) -> None:
        self._sweeping = False
        self._collect_all()
        if any(self.queue[p] for p in self.queue):
            self._ensure_sweep()

    # -- replicas ------------------------------------------------------------------------------
    def _set_target(self, pool: str, n: int, t: float, ready_now: bool = False) -> None:
        """Serve's reconciliation: start replicas up to `n`, or stop the surplus (starting ones first, then the
        newest running ones)."""
        m = self.pools[pool]
        live = [r for r in self.replicas[pool] if r.state in ("starting", "running")]
        if self.target.get(pool) != n:
            self.target_log.append((t, pool, n))
        self.target[pool] = n
        for _ in range(n - len(live)):
            self._rid += 1
            ready = t if ready_now else t + m.startup_s
            rep = SimReplica(m, self._rid, t, ready)
            self.replicas[pool].append(rep)
            if not ready_now:
                self.scale_ups.append((t, pool, rep.rid, ready))
                self._at(ready, "ready", (pool, rep))
        if len(live) > n:
            order = sorted(live, key=lambda r: (r.state != "starting", -r.started_at, -r.rid))
            for rep in order[: len(live) - n]:
                self._stop(pool, rep, t)

    def _on_ready(self, data) -> None:
        pool, rep = data
        if rep.state == "starting":
            rep.state = "running"
            self._collect(pool)

    def _stop(self, pool: str, rep: SimReplica, t: float) -> None:
        if rep.state == "starting":
            self._remove(pool, rep, t)
            return
        rep.state = "stopping"
        rep.stop_at = t + self.pools[pool].graceful_shutdown_s
        self._collect(pool)
        if rep.state == "stopping":
            self._at(rep.stop_at, "kill", (pool, rep))

    def _on_kill(self, data) -> None:
        pool, rep = data
        if rep.ended_at is not None:
            return
        for req, sim in rep.advance(self.now):
            self._finished(pool, req, sim)
        started = {r.rid: r.first_token for r in rep.engine.running}
        for req in list(rep.ongoing.values()):  # still running at the deadline: the replica is killed
            req.outcome, req.end = "failed", self.now
            self._last = max(self._last, self.now)
            if started.get(req.idx) is None:
                self.dispatch.failed(pool, now=self.now)
            else:
                self.dispatch.failed_midway(pool, now=self.now)
        rep.ongoing.clear()
        self._remove(pool, rep, self.now)

    def _remove(self, pool: str, rep: SimReplica, t: float) -> None:
        if rep.ended_at is None:
            rep.ended_at = t
            rep.state = "stopped"
            self.spans.append((pool, rep.started_at, t))
        self.replicas[pool] = [r for r in self.replicas[pool] if r is not rep]

    # -- control -------------------------------------------------------------------------------
    def _in_flight(self, pool: str) -> float:
        return len(self.queue[pool]) + sum(len(r.ongoing) for r in self.replicas[pool])

    def _on_poll(self, _) -> None:
        """Each pool's Serve policy: the controller's target within the pool's bounds (PlanPolicy)."""
        self._collect_all()
        for pool, b in self.bounds.items():
            running = self._running(pool)
            in_flight = self._in_flight(pool)
            self.reported[pool] = (running, in_flight)
            if pool in self.serve_autoscaling:
                want = self._serve_default_policy(pool, running, in_flight)
            elif not self.controlled:
                continue
            else:
                want = policy_target(self.state.targets.get(pool), self.target.get(pool, 0), b.min_replicas,
                                     b.max_replicas, in_flight)
            if want != self.target.get(pool):
                self._set_target(pool, want, self.now)
        self._at(self.now + self.settings.policy_poll_s, "poll")

    def _serve_default_policy(self, pool: str, running: int, in_flight: float) -> int:
        cfg = self.serve_autoscaling[pool]
        want, self._serve_state[pool] = serve_default_target(
            cfg, "pool-" + pool, running, self.target.get(pool, 0), in_flight, len(self.queue[pool]),
            self._serve_state[pool], self.now)
        return want

    def _on_control(self, _) -> None:
        """One controller period on the ingress's traffic snapshot (PlanController.step without the actor)."""
        self._collect_all()
        snap = self.dispatch.traffic.snapshot()
        grid = (snap.input_edges, snap.output_edges)
        new, rep = tick(self.state, observe(snap, self.reported), self.bounds,
                        lambda rates, total: self.solver(grid, rates, total), self.now, self.settings)
        if rep.replan.solve or new.targets != self.state.targets:
            self.decisions.append(decision(self.now, rep))
        self.state = new
        if rep.new_plan and new.plan is not None:
            plan = Plan.from_dict(new.plan)
            self.dispatch.update_plan(plan)  # the ingress gets it at its next report (report_s; here at once)
            self.plans.append((self.now, dict(plan.replicas), plan.cost_per_hour))
        self._at(self.now + self.settings.period_s, "control")
