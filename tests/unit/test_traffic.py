"""Traffic: sliding-window arrivals per bucket and per-pool outcomes, as the controller reads them."""

from __future__ import annotations

import json

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
    json.dumps(s)  # plain data
    assert s["arrivals"] == [[0, 0, 4], [1, 1, 1]] and s["rejected"] == 1 and s["clipped"] == 1
    assert s["completions"] == [[0, 0, 4], [1, 1, 1]]
    small, big = s["pools"]["small"], s["pools"]["big"]
    assert small["requests"] == 5 and small["ok"] == 4 and small["spilled_out"] == 1 and small["in_flight"] == 0
    assert big["spilled_in"] == 1 and big["slo_ok"] == 0 and small["slo_ok"] == 4
    assert small["ttft_ms"]["p50"] == 100.0 and small["tpot_ms"]["mean"] == 20.0
    assert s["window_s"] == 5.0 and rates(s)[(0, 0)] == 4 / 5


def test_old_bins_leave_the_window():
    c = Clock()
    t = recorder(c)
    t.arrival((0, 0))
    c.t += 5
    t.arrival((0, 1))
    c.t += 7  # the first arrival is now 12 s old, beyond the 10 s window
    s = t.snapshot()
    assert s["arrivals"] == [[0, 1, 1]] and s["window_s"] == 10


def test_in_flight_and_errors():
    c = Clock()
    t = recorder(c)
    t.started("big")
    t.started("big")
    t.finished("big", ok=False)
    s = t.snapshot()["pools"]["big"]
    assert s["in_flight"] == 1 and s["errors"] == 1 and s["ttft_ms"] is None and s["slo_ok"] is None


def test_new_grid_restarts_counts():
    c = Clock()
    t = recorder(c)
    t.arrival((1, 1))
    t.set_grid([10, 100], [10, 100])
    assert t.snapshot()["arrivals"] == [] and t.snapshot()["input_edges"] == [10, 100]


def test_merge_replicas():
    c = Clock()
    a, b = recorder(c), recorder(c)
    a.arrival((0, 0))
    b.arrival((0, 0))
    b.arrival((1, 0))
    a.started("small")
    m = merge_snapshots([a.snapshot(), b.snapshot()])
    assert m["arrivals"] == [[0, 0, 2], [1, 0, 1]] and m["pools"]["small"]["in_flight"] == 1
