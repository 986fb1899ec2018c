"""Plan: the planner's decision (replicas per pool and the routing table), shared by ingress and controller.

Kept apart from the solver so that the ingress and the Serve autoscaling policy can read plans without
importing CVXPY. A plan is plain data and round-trips through JSON (`to_dict` / `from_dict`).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Literal

SolveStatus = Literal["optimal", "time_limit", "infeasible", "error", "static"]


@dataclass(frozen=True)
class Plan:
    """Which pools to run and which pool serves which bucket.

    `routing[(i, j)]` maps pool name -> share (0..1, summing to 1) of bucket (i, j)'s traffic; buckets
    are on the grid `input_edges` x `output_edges` (right-closed upper edges, see `rayhet.profiles`).
    """

    replicas: dict[str, int]
    routing: dict[tuple[int, int], dict[str, float]]
    input_edges: list[int]
    output_edges: list[int]
    cost_per_hour: float
    rate: float  # req/s the plan was solved for (headroom included)
    utilisation: dict[str, float] = field(default_factory=dict)  # planned load / replicas, per pool
    status: SolveStatus = "optimal"
    gap: float | None = None  # relative MIP gap when the solver stopped early
    solve_time_s: float = 0.0
    dropped_buckets: list[tuple[int, int]] = field(default_factory=list)  # no pool can serve these
    message: str = ""
    created_at: float = field(default_factory=time.time)

    def pools_for(self, i: int, j: int) -> dict[str, float]:
        """Shares for bucket (i, j); empty if the plan routes nothing there."""
        return self.routing.get((i, j), {})

    def to_dict(self) -> dict:
        d = asdict(self)
        d["routing"] = [[i, j, shares] for (i, j), shares in sorted(self.routing.items())]
        d["dropped_buckets"] = [list(b) for b in self.dropped_buckets]
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "Plan":
        d = dict(d)
        d["routing"] = {(int(i), int(j)): {str(k): float(v) for k, v in shares.items()} for i, j, shares in d["routing"]}
        d["dropped_buckets"] = [(int(i), int(j)) for i, j in d.get("dropped_buckets", [])]
        d["replicas"] = {str(k): int(v) for k, v in d["replicas"].items()}
        return cls(**d)
