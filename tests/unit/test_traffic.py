"""Traffic: sliding-window arrivals per bucket and per-pool outcomes, as the controller reads them."""

from __future__ import annotations

import json
import re

import pytest
from pydantic import ValidationError

from rayhet.messages import PlanReport, TrafficSnapshot
from rayhet.traffic import TrafficRecorder, merge_snapshots, rates


class Clock:
    def __init__(self):
        self.t = 1000.0

    def __call__(self):
        return self.t


def recorder(clock, **kw):
    return TrafficRecorder([100, 1000], [50, 500], ["small", "big"], window_s=10, clock=clock,
                           wall_clock=lambda: 0.0, **kw)


def test_arrivals_and_outcomes_in_the_window():
    c = Clock()
    t = recorder(c, slo_tpot_ms=50)
    for _ in range(4):
        t.arrival((0, 0))
        t.started("small")
        t.finished("small", ok=True, ttft_s=0.1, tpot_s=0.02, bucket=(0, 0))
    t.arrival((1, 1), clipped=True)
    t.started("small")
    t.abandoned("small")  # backpressure: spilled
    t.started("big", spilled_from="small")
    t.finished("big", ok=True, ttft_s=0.5, tpot_s=0.08, bucket=(1, 1))
    t.arrival(None)
    c.t += 5
    s = t.snapshot()
    assert TrafficSnapshot.model_validate(json.loads(json.dumps(s.model_dump()))) == s  # plain data, round trip
    assert s.arrivals == [(0, 0, 4), (1, 1, 1)] and s.rejected == 1 and s.clipped == 1
    assert s.completions == [(0, 0, 4), (1, 1, 1)]
    small, big = s.pools["small"], s.pools["big"]
    assert small.requests == 5 and small.ok == 4 and small.spilled_out == 1 and small.in_flight == 0
    assert big.spilled_in == 1 and big.slo_ok == 0 and small.slo_ok == 4
    assert small.ttft_ms.p50 == 100.0 and small.tpot_ms.mean == 20.0
    assert s.window_s == 5.0 and rates(s)[(0, 0)] == 4 / 5 and rates(s, "completions")[(1, 1)] == 1 / 5


def test_old_bins_leave_the_window():
    c = Clock()
    t = recorder(c)
    t.arrival((0, 0))
    c.t += 5
    t.arrival((0, 1))
    c.t += 7  # the first arrival is now 12 s old, beyond the 10 s window
    s = t.snapshot()
    assert s.arrivals == [(0, 1, 1)] and s.window_s == 10


def test_in_flight_and_errors():
    c = Clock()
    t = recorder(c)
    t.started("big")
    t.started("big")
    t.finished("big", ok=False)
    s = t.snapshot().pools["big"]
    assert s.in_flight == 1 and s.errors == 1 and s.ttft_ms is None and s.slo_ok is None


def test_new_grid_restarts_counts():
    c = Clock()
    t = recorder(c)
    t.arrival((1, 1))
    t.set_grid([10, 100], [10, 100])
    assert t.snapshot().arrivals == [] and t.snapshot().input_edges == [10, 100]


def test_merge_replicas():
    c = Clock()
    a, b = recorder(c), recorder(c)
    a.arrival((0, 0))
    b.arrival((0, 0))
    b.arrival((1, 0))
    a.started("small")
    m = merge_snapshots([a.snapshot(), b.snapshot()])
    assert m.arrivals == [(0, 0, 2), (1, 0, 1)] and m.pools["small"].in_flight == 1


def test_merge_sums_outcomes_and_keeps_the_worst_latency_and_the_first_grid():
    c = Clock()
    a, b = recorder(c, slo_ttft_ms=300), recorder(c, slo_ttft_ms=300)
    for t, ttft in ((a, 0.1), (b, 0.2), (b, 0.5)):
        t.arrival((0, 0))
        t.started("small")
        t.finished("small", ok=True, ttft_s=ttft, bucket=(0, 0))
    other = recorder(c)
    other.set_grid([10, 100], [10, 100])
    other.arrival((0, 0))
    m = merge_snapshots([a.snapshot(), b.snapshot(), other.snapshot()])
    small = m.pools["small"]
    assert small.ok == 3 and small.slo_ok == 2 and small.ttft_ms == b.snapshot().pools["small"].ttft_ms
    assert m.arrivals == [(0, 0, 3)] and m.input_edges == [100, 1000]  # the other grid's replica left out
    with pytest.raises(ValueError, match="no snapshots"):
        merge_snapshots([])


# A version-1 snapshot as rayhet sent it when it was a plain dict: an ingress replica of that release still
# reports during a rolling upgrade, so it must validate, and today's dump must have the same shape.
V1 = {"version": 1, "time": 0.0, "window_s": 5.0, "input_edges": [100, 1000], "output_edges": [50, 500],
      "arrivals": [[0, 0, 4], [1, 1, 1]], "completions": [[0, 0, 4]], "rejected": 1, "clipped": 0,
      "pools": {"small": {"requests": 5, "ok": 4, "errors": 0, "spilled_out": 1, "spilled_in": 0, "in_flight": 0,
                          "ttft_ms": {"mean": 100.0, "p50": 100.0, "p90": 100.0, "p99": 100.0}, "tpot_ms": None,
                          "slo_ok": None}}}


def test_version_1_dicts_still_validate_and_dump_the_same():
    s = TrafficSnapshot.model_validate(V1)
    assert json.loads(json.dumps(s.model_dump())) == V1
    assert PlanReport.model_validate({"replica": "r", "plan_version": None, "traffic": V1}).traffic == s


@pytest.mark.parametrize("change, field", [
    ({"window_s": None}, "window_s"),
    ({"arrivals": [[0, 0]]}, "arrivals.0"),
    ({"arrivals": [[0, 5, 1]]}, "off the 2x2 grid"),
    ({"pools": {"small": {"ok": -1}}}, "pools.small.ok"),
    ({"pools": {"small": {"ttft_ms": {"mean": 1.0}}}}, "pools.small.ttft_ms.p50"),
    ({"pools": {"small": {"okay": 1}}}, "pools.small.okay"),
    ({"version": 2}, "version"),
])
def test_a_malformed_snapshot_is_refused_naming_the_field(change, field):
    with pytest.raises(ValidationError, match=re.escape(field)) as e:
        PlanReport.model_validate({"replica": "r", "plan_version": None, "traffic": {**V1, **change}})
    assert "traffic" in str(e.value)
