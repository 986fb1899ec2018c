"""Messages between rayhet's processes, typed and versioned.

Every ingress replica, the controller actor and each pool's Serve policy live in different processes and
may run different rayhet versions during an upgrade. What they send each other is one of these models,
sent as its `model_dump()` (plain data through Ray) and read back with `model_validate`, so a message of
another shape is a clear validation error naming the field, not a KeyError deep in the control loop.

- `PlanReport`: an ingress replica -> the controller, every `controller.report_s`; `PlanReply` back.
- `PoolReport`: a pool's Serve autoscaling policy -> the controller, every `controller.policy_poll_s`;
  the reply is the pool's replica target (an int, or None before the controller has one).
- `PoolFacts`: the builder -> each ingress replica, once, as a deployment argument: what the ingress must
  know of a pool to route, admit and prompt (its context, price, batch slots and tool-call parser).
- `TrafficSnapshot`: what one ingress replica saw over its traffic window (made by rayhet.traffic), inside
  each PlanReport and returned by the ingress's `traffic_snapshot()`.
- `ControllerSpec`: the builder -> each ingress replica (a deployment argument) -> the controller actor (its
  constructor, `reconfigure`) and back from `spec_of`; also the `spec` of the controller's blob in Ray's KV,
  so a restarted actor of a newer rayhet reads what an older one saved, or ignores it with a warning.

The snapshot and the spec were plain dicts before they were models; version 1 of each dumps to that same
dict (same keys and nesting; the spec had no `version`, and it defaults to 1), so an ingress replica or a
saved blob of the previous release still validates during a rolling upgrade, and an older controller still
reads a newer replica's report.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, NonNegativeInt, model_validator

from rayhet.control import ControlSettings, PoolBounds

MESSAGES_VERSION = 1


class _Part(BaseModel):
    """A piece of a message: strict about its fields, no version of its own (its message carries one)."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class _Message(_Part):
    version: Literal[1] = Field(MESSAGES_VERSION, description="Message schema version.")


# -- the traffic snapshot ----------------------------------------------------------------------------

# (input bucket, output bucket, count): a sparse cell of the plan's grid; tuples dump as lists in JSON
Cell = tuple[NonNegativeInt, NonNegativeInt, NonNegativeInt]


class LatencyStats(_Part):
    """One pool's latency over the window, in ms (at most 2048 samples per pool per window)."""

    mean: float = Field(..., ge=0, description="Mean.")
    p50: float = Field(..., ge=0, description="Median.")
    p90: float = Field(..., ge=0, description="90th percentile.")
    p99: float = Field(..., ge=0, description="99th percentile: what merging replicas compares (the worst is kept).")


class PoolTraffic(_Part):
    """What one pool did over the window, as the ingress saw it. Counts default to 0: a quiet pool."""

    requests: NonNegativeInt = Field(0, description="Requests sent to the pool (those spilled in included).")
    ok: NonNegativeInt = Field(0, description="Requests it finished.")
    errors: NonNegativeInt = Field(0, description="Requests it failed (a push-back that was retried elsewhere is not one).")
    spilled_out: NonNegativeInt = Field(0, description="Requests that left it for another pool (full, or pushed back).")
    spilled_in: NonNegativeInt = Field(0, description="Requests it took after another pool's spill.")
    in_flight: NonNegativeInt = Field(0, description="Requests sent to it and not yet ended, now (not a window count).")
    ttft_ms: LatencyStats | None = Field(None, description="Time to first token of its finished requests; None: none.")
    tpot_ms: LatencyStats | None = Field(None, description="Time per output token after the first; None: none.")
    slo_ok: NonNegativeInt | None = Field(None, description="Finished requests that met the SLO; None: the app has no SLO.")


class TrafficSnapshot(_Message):
    """One ingress replica's sliding traffic window; rates are `count / window_s`. Made by
    `rayhet.traffic.TrafficRecorder.snapshot()`, summed over replicas by `rayhet.traffic.merge_snapshots`."""

    time: float = Field(..., description="Wall-clock time (unix seconds) it was taken.")
    window_s: float = Field(..., ge=0, description="Seconds it covers: the configured window, less just after start "
                            "or a new grid.")
    input_edges: list[int] = Field(..., min_length=1, description="Input-token bucket edges of the plan in force.")
    output_edges: list[int] = Field(..., min_length=1, description="Output-token bucket edges of the plan in force.")
    arrivals: list[Cell] = Field(default_factory=list, description="Routed requests by (input, predicted output) bucket.")
    completions: list[Cell] = Field(default_factory=list, description="Finished requests by (input, actual output) bucket.")
    rejected: NonNegativeInt = Field(0, description="Requests refused: too long for every pool, or no pool left.")
    clipped: NonNegativeInt = Field(0, description="Requests beyond the grid, counted in its last bucket.")
    pools: dict[str, PoolTraffic] = Field(default_factory=dict, description="Per pool, by name.")

    @model_validator(mode="after")
    def _cells_on_the_grid(self) -> "TrafficSnapshot":
        # a cell off the grid would be an IndexError in the solver, far from the replica that sent it
        n_in, n_out = len(self.input_edges), len(self.output_edges)
        for name in ("arrivals", "completions"):
            for i, j, _ in getattr(self, name):
                if i >= n_in or j >= n_out:
                    raise ValueError(f"{name}: bucket ({i}, {j}) is off the {n_in}x{n_out} grid")
        return self


# -- ingress <-> controller, policy -> controller, builder -> ingress --------------------------------

class PlanReport(_Message):
    """What an ingress replica tells the controller."""

    replica: str = Field(..., description="Serve's replica id of the ingress replica.")
    build: float | None = Field(None, description="Its deployment: the controller spec's created_at.")
    plan_version: float | None = Field(..., description="created_at of the plan the replica runs.")
    offered: dict | None = Field(None, description="Its start-up plan (Plan.to_dict()), until the controller has one.")
    traffic: TrafficSnapshot = Field(..., description="What it saw over its traffic window.")


class PlanReply(_Message):
    """The controller's answer to a PlanReport."""

    plan_version: float | None = Field(..., description="created_at of the plan in force; None: no plan yet.")
    plan: dict | None = Field(None, description="That plan, only when the replica runs another one.")


class PoolReport(_Message):
    """What a pool's Serve policy tells the controller: what Serve sees of the pool."""

    pool: str
    running: int = Field(..., ge=0, description="Running replicas.")
    in_flight: float = Field(..., ge=0, description="Ongoing + queued requests.")
    build: float | None = Field(None, description="The policy's deployment: the controller spec's created_at.")


class PoolFacts(_Message):
    """What the app's builder tells the ingress about one pool."""

    name: str
    max_context: int | None = Field(None, ge=1, description="Prompt + output tokens one request may hold; None: unknown.")
    price_per_hour: float = Field(0.0, ge=0, description="$/h of one replica: the router's order among pools that fit.")
    slots: int = Field(..., ge=1, description="Sequences one replica decodes together (llama_cpp n_slots, vLLM max_num_seqs).")
    # added in place (still version 1): None is what a pool without a parser always was, so an older builder's
    # facts still validate
    tool_call_parser: str | None = Field(None, description="The engine's own tool-call parser (vLLM's "
                                         "tool_call_parser); None: tools go through structured output.")


# -- the controller's spec ---------------------------------------------------------------------------

class SolverSettings(_Part):
    """The planner's knobs the controller re-solves with (from the config's `planner:` section)."""

    slices: int = Field(8, ge=1, description="Load slices per bucket in the MILP (rayhet.planner.solve).")


class ControllerSpec(_Message):
    """What the controller of one Serve app runs with: made by the app's builder, completed by the ingress
    replica that knows the app's name. `created_at` identifies the deployment: a newer spec replaces the
    controller's plan and state (a new deployment never runs an old plan)."""

    created_at: float = Field(..., description="When the app was built (unix seconds): the deployment's identity.")
    app: str = Field("default", description="The Serve app; the controller's actor name and KV key follow from it.")
    ingress: str = Field("ingress", description="The app's ingress deployment.")
    settings: ControlSettings = Field(default_factory=ControlSettings, description="The `controller:` section.")
    planner: SolverSettings = Field(default_factory=SolverSettings, description="The planner's knobs.")
    bounds: dict[str, PoolBounds] = Field(..., description="Per pool: replica bounds as deployed, slots, start-up time.")
    # JSON dicts, not rayhet.profiles.Profile: a profile carries its own schema version and the controller parses
    # it (rayhet.profiles.parse_profile, naming the pool) on arrival, as it parses a profile file
    profiles: dict[str, dict] = Field(..., description="Per pool: its service profile under the app's SLO (JSON).")
    prices: dict[str, float] = Field(default_factory=dict, description="Per pool: $/h of a replica where the config "
                                     "sets one (else the profile's).")

    @model_validator(mode="after")
    def _a_profile_per_pool(self) -> "ControllerSpec":
        missing = sorted(set(self.bounds) - set(self.profiles))
        if missing:
            raise ValueError(f"profiles: no profile for pool(s) {missing} (every pool in bounds needs one)")
        return self
