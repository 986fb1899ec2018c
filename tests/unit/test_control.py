"""Control decisions: smoothing, re-plan triggers, scale-down delay, queue bumps, keep-last-good-plan."""

from __future__ import annotations

import pytest

from rayhet.control import (
    ControlSettings,
    ControlState,
    Observation,
    PoolBounds,
    SolveOutcome,
    adopt_startup_plan,
    count_mix,
    decide_targets,
    mix_distance,
    poisson_noise,
    queue_floor,
    smooth,
    tick,
    uncovered_share,
)
from rayhet.plan import Plan

SHORT, LONG = (0, 0), (1, 1)
BOUNDS = {"fast": PoolBounds(0, 4, slots=2), "slow": PoolBounds(1, 4, slots=2)}
S = ControlSettings(period_s=30, smoothing=0.5, headroom=0.2, min_plan_lifetime_s=60, scale_down_delay_s=60)


def plan_for(rates: dict, total: float) -> Plan:
    """A toy planner: short requests go to 'slow', long ones to 'fast', one replica per req/s."""
    short, long_ = rates.get(SHORT, 0.0), rates.get(LONG, 0.0)
    replicas = {"slow": max(1, round(short)), "fast": round(long_)}
    routing = {SHORT: {"slow": 1.0}, LONG: {"fast": 1.0}}
    return Plan(replicas, routing, [10, 100], [10, 100], cost_per_hour=sum(replicas.values()), rate=total)


def ok_solver(calls: list):
    def solve(rates, total):
        calls.append(rates)
        return SolveOutcome(plan_for(rates, total), "optimal", 0.01)

    return solve


def failing_solver(rates, total):
    return SolveOutcome(None, "infeasible", 0.02, "bucket (1, 1) fits no pool")


def obs(short: float = 0.0, long_: float = 0.0, window: float = 10.0, **kw) -> Observation:
    arrivals = {SHORT: short * window, LONG: long_ * window}
    return Observation(window, {b: n for b, n in arrivals.items() if n}, **kw)


def test_smooth_is_an_ewma_seeded_by_the_first_window():
    assert smooth({}, {SHORT: 4.0}, 0.5) == {SHORT: 4.0}
    out = smooth({SHORT: 4.0}, {LONG: 2.0}, 0.5)
    assert out == {SHORT: 2.0, LONG: 1.0}


def test_mix_distance_and_uncovered_share():
    assert mix_distance({SHORT: 1.0}, {SHORT: 5.0}) == 0.0
    assert mix_distance({SHORT: 1.0}, {LONG: 1.0}) == pytest.approx(1.0)
    assert uncovered_share({SHORT: 1.0, LONG: 1.0}, {SHORT: 2.0}) == pytest.approx(0.5)
    assert queue_floor(0, 2, 1.0) == 0 and queue_floor(5, 2, 1.0) == 3


def test_first_traffic_solves_with_headroom_and_sets_targets():
    calls = []
    st, rep = tick(ControlState(), obs(short=2.0), BOUNDS, ok_solver(calls), now=0.0, s=S)
    assert rep.replan.reason == "initial" and rep.new_plan
    assert calls[0][SHORT] == pytest.approx(2.4)  # 2 req/s x (1 + 0.2)
    assert st.targets == {"slow": 2, "fast": 0}
    assert st.last_solve["status"] == "optimal"


def test_steady_traffic_holds_the_plan():
    calls = []
    st, _ = tick(ControlState(), obs(short=2.0), BOUNDS, ok_solver(calls), now=0.0, s=S)
    for k in range(1, 6):
        st, rep = tick(st, obs(short=2.1), BOUNDS, ok_solver(calls), now=30.0 * k, s=S)
        assert not rep.replan.solve and rep.replan.reason == "hold"
    assert len(calls) == 1


def test_shift_to_long_requests_replans_at_once_and_delays_the_scale_down():
    calls = []
    st, _ = tick(ControlState(), obs(short=3.0), BOUNDS, ok_solver(calls), now=0.0, s=S)
    assert st.targets == {"slow": 4, "fast": 0}
    # the mix moves to long requests 10 s later: uncovered load, so no waiting for the plan's lifetime
    st, rep = tick(st, obs(short=0.5, long_=3.0), BOUNDS, ok_solver(calls), now=10.0, s=S)
    assert rep.replan.reason == "overload" and rep.new_plan
    assert st.targets["fast"] >= 1  # up at once
    assert st.targets["slow"] == 4 and "slow" in rep.targets.held  # down only after the delay
    t = 10.0
    while st.targets["slow"] == 4:
        t += 30.0
        st, rep = tick(st, obs(short=0.5, long_=3.0), BOUNDS, ok_solver(calls), now=t, s=S)
        assert t < 200
    assert t - 10.0 >= S.scale_down_delay_s
    assert st.targets["fast"] > st.targets["slow"] - 1


def test_a_fall_in_rate_waits_for_the_plan_lifetime():
    calls = []
    st, _ = tick(ControlState(), obs(short=4.0), BOUNDS, ok_solver(calls), now=0.0, s=S)
    st, rep = tick(st, obs(short=1.0), BOUNDS, ok_solver(calls), now=30.0, s=S)
    assert rep.replan.reason == "young" and not rep.replan.solve
    st, rep = tick(st, obs(short=1.0), BOUNDS, ok_solver(calls), now=90.0, s=S)
    assert rep.replan.reason == "drift" and rep.new_plan


def test_no_traffic_sends_pools_to_their_minimum_and_wakes_with_a_solve():
    calls = []
    st, _ = tick(ControlState(), obs(short=3.0), BOUNDS, ok_solver(calls), now=0.0, s=S)
    st, rep = tick(st, obs(), BOUNDS, ok_solver(calls), now=30.0, s=S)
    assert rep.replan.reason == "idle" and st.idle
    assert st.targets == {"slow": 4, "fast": 0}  # the scale-down delay applies to idling too
    st, _ = tick(st, obs(), BOUNDS, ok_solver(calls), now=100.0, s=S)
    assert st.targets == {"slow": 1, "fast": 0}  # slow's minimum is 1
    st, rep = tick(st, obs(short=3.0), BOUNDS, ok_solver(calls), now=130.0, s=S)
    assert rep.replan.reason == "wake" and st.targets["slow"] == 4 and not st.idle


def test_a_replica_still_starting_at_deploy_is_not_stopped_by_the_first_idle_period():
    # the app builder's plan starts one 'fast' replica; the first period comes before any traffic, while that
    # replica is still starting (Serve reports 0 running): it must wait out the scale-down delay like any other
    startup = plan_for({LONG: 1.0}, 1.0).to_dict()
    st = adopt_startup_plan(ControlState(), startup, now=0.0)
    assert st.targets == {"slow": 1, "fast": 1} and st.plan == startup
    st, rep = tick(st, obs(running={"fast": 0, "slow": 0}), BOUNDS, ok_solver([]), now=10.0, s=S)
    assert rep.replan.reason == "idle"
    assert st.targets["fast"] == 1 and "fast" in rep.targets.held
    st, _ = tick(st, obs(running={"fast": 1, "slow": 1}), BOUNDS, ok_solver([]), now=10.0 + S.scale_down_delay_s, s=S)
    assert st.targets["fast"] == 0  # idle for the whole delay: down to the minimum
    # targets already published (a resumed controller) are not overwritten by a start-up plan
    assert adopt_startup_plan(ControlState(targets={"fast": 3}), startup, now=0.0).targets == {"fast": 3}


def test_growing_queue_raises_the_target_without_waiting():
    calls = []
    st, _ = tick(ControlState(), obs(short=1.0), BOUNDS, ok_solver(calls), now=0.0, s=S)
    assert st.targets["slow"] == 1
    st, rep = tick(st, obs(short=1.0, in_flight={"slow": 7}), BOUNDS, ok_solver(calls), now=5.0, s=S)
    assert rep.replan.reason == "queue"
    assert st.targets["slow"] == 4 and rep.targets.bumped == {"slow": 4}  # ceil(7 / 2) = 4, max is 4


def test_failed_solve_keeps_the_last_good_plan_and_says_why():
    calls = []
    st, _ = tick(ControlState(), obs(short=2.0), BOUNDS, ok_solver(calls), now=0.0, s=S)
    good = st.plan
    st, rep = tick(st, obs(short=2.0, long_=3.0), BOUNDS, failing_solver, now=30.0, s=S)
    assert rep.replan.solve and rep.kept_previous and not rep.new_plan
    assert st.plan == good and st.targets == {"slow": 2, "fast": 0}
    assert st.last_solve["status"] == "infeasible" and "fits no pool" in st.last_solve["message"]
    # still uncovered, so the next period tries again
    st, rep = tick(st, obs(short=2.0, long_=3.0), BOUNDS, ok_solver(calls), now=60.0, s=S)
    assert rep.new_plan and st.targets["fast"] >= 3


def test_bounds_clamp_the_plan():
    td = decide_targets({"fast": 9, "slow": 0}, {}, {}, BOUNDS, {}, 0.0, S)
    assert td.targets == {"fast": 4, "slow": 1}


def test_state_round_trips_through_json():
    import json

    st, _ = tick(ControlState(), obs(short=2.0, long_=1.0), BOUNDS, ok_solver([]), now=0.0, s=S)
    back = ControlState.from_dict(json.loads(json.dumps(st.to_dict())))
    assert back == st
    assert Plan.from_dict(back.plan).replicas == st.plan["replicas"]


def test_settings_are_validated():
    with pytest.raises(ValueError, match="smoothing"):  # pydantic's ValidationError is a ValueError
        ControlSettings(smoothing=0)


def test_policy_target_keeps_current_until_told_and_wakes_from_zero():
    from rayhet.control import policy_target

    assert policy_target(None, 3, 0, 4, 0) == 3
    assert policy_target(2, 3, 0, 4, 0) == 2
    assert policy_target(9, 3, 0, 4, 0) == 4
    assert policy_target(0, 0, 0, 4, 2) == 1
    assert policy_target(0, 0, 1, 4, 0) == 1


def test_observe_reads_a_traffic_snapshot():
    from rayhet.control import attainment, observe
    from rayhet.messages import TrafficSnapshot

    snap = TrafficSnapshot(time=0.0, window_s=20.0, input_edges=[256, 2048], output_edges=[32, 256],
                           arrivals=[(0, 0, 40), (1, 1, 10)],
                           pools={"fast": {"in_flight": 3, "ok": 9, "errors": 1, "slo_ok": 8},
                                  "slow": {"in_flight": 0, "ok": 0, "errors": 0, "slo_ok": None}})
    o = observe(snap, {"slow": (2, 5.0)})
    assert o.rates() == {SHORT: 2.0, LONG: 0.5}
    assert o.in_flight == {"fast": 3.0, "slow": 5.0} and o.running == {"slow": 2}
    assert attainment(snap) == {"fast": 0.8}


def test_trend_factor_extrapolates_a_rising_rate_over_the_startup_time():
    from rayhet.control import trend_factor

    rising = [[0, 1.0], [30, 2.0], [60, 3.0]]  # +1 req/s per 30 s
    assert trend_factor(rising, 60, 90, 120, 5.0) == pytest.approx(2.0)  # 3 + 3 in 90 s = 6 = 2 x 3
    assert trend_factor(rising, 60, 90, 120, 1.5) == 1.5  # capped
    assert trend_factor([[0, 3.0], [30, 2.0], [60, 1.0]], 60, 90, 120, 5.0) == 1.0  # falling: never below now
    assert trend_factor(rising[:2], 60, 90, 120, 5.0) == 1.0  # too little history
    assert trend_factor(rising, 60, 0, 120, 5.0) == 1.0  # nothing starts slowly


def test_lookahead_plans_for_the_rate_one_startup_ahead():
    """A GPU-like pool that takes 90 s to start: on a ramp, the controller re-plans for where the rate is going
    ("trend"), not where it is; with lookahead off it waits until arrivals exceed the plan."""
    bounds = {"fast": PoolBounds(0, 8, slots=2, startup_s=90), "slow": PoolBounds(1, 8, slots=2)}
    for lookahead in (True, False):
        s = S.model_copy(update={"lookahead": lookahead, "smoothing": 1.0})
        calls = []
        # 10 s windows of 100-115 req/s: ~3,000 arrivals, so a 15 % rise is beyond counting noise (4 %)
        st, _ = tick(ControlState(), obs(short=100.0), bounds, ok_solver(calls), now=0.0, s=s)
        st, rep1 = tick(st, obs(short=105.0), bounds, ok_solver(calls), now=30.0, s=s)
        st, rep2 = tick(st, obs(short=115.0), bounds, ok_solver(calls), now=60.0, s=s)
        if lookahead:
            assert rep2.replan.reason == "trend" and calls[-1][SHORT] > 115 * 1.2 * 1.1
        else:
            assert not rep2.replan.solve and len(calls) == 1


def test_the_mix_is_the_last_few_hundred_requests_whatever_their_pace():
    mix = {}
    for _ in range(50):  # a night: 3 requests a window, all short
        mix = count_mix(mix, {SHORT: 3.0}, 300)
    mix = count_mix(mix, {LONG: 1.0}, 300)  # one long prompt
    assert mix[LONG] / sum(mix.values()) < 0.01  # ... is one request in ~150, not a third of the load
    for _ in range(3):  # a busy minute renews the whole mix at once
        mix = count_mix(mix, {LONG: 400.0}, 300)
    assert mix[LONG] / sum(mix.values()) > 0.99
    assert count_mix({SHORT: 5.0}, {LONG: 2.0}, 0) == {LONG: 2.0}  # 0: the window's own mix
    # a shift beyond counting noise starts the mix afresh: 20 long requests where only short ones came
    assert count_mix({SHORT: 300.0}, {LONG: 20.0}, 300, min_shift=0.15) == {LONG: 20.0}
    night = count_mix({SHORT: 300.0}, {SHORT: 2.0, LONG: 1.0}, 300, min_shift=0.15)  # 1 in 3: within noise
    assert night[LONG] / sum(night.values()) < 0.01


def test_one_long_prompt_at_night_is_planned_as_its_share_of_recent_requests():
    """At night a window holds a handful of requests: a single long prompt read as that bucket's steady rate
    (one per window) asked the planner for the pool that serves long prompts (simulated day at 0.05 req/s
    peak: the H200 ran 7.4 h for such requests; 1.1 h with the mix over recent requests and counting noise
    allowed for)."""
    def night(mix_requests: int) -> float:
        calls = []
        s = S.model_copy(update={"mix_requests": mix_requests, "min_plan_lifetime_s": 0, "drift": 0.0})
        st = ControlState()
        for k in range(20):
            st, _ = tick(st, obs(short=0.3), BOUNDS, ok_solver(calls), now=30.0 * k, s=s)
        st, rep = tick(st, obs(short=0.3, long_=0.1), BOUNDS, ok_solver(calls), now=600.0, s=s)
        assert rep.replan.solve
        return calls[-1].get(LONG, 0.0)

    assert night(300) < 0.01  # one request in the 64 seen, of ~0.35 req/s x 1.2 headroom: ~0.007
    assert night(0) >= 0.05  # the window's own mix: one long prompt a window (0.1 req/s, halved by the EWMA)


def test_a_rise_within_counting_noise_is_neither_overload_nor_trend():
    assert poisson_noise(4) == pytest.approx(1.0) and poisson_noise(0) == float("inf")
    bounds = {"fast": PoolBounds(0, 8, slots=2, startup_s=90), "slow": PoolBounds(1, 8, slots=2)}
    s = S.model_copy(update={"smoothing": 1.0, "min_plan_lifetime_s": 600})
    calls = []
    st, _ = tick(ControlState(), obs(short=0.2), bounds, ok_solver(calls), now=0.0, s=s)  # 2 requests
    st, rep = tick(st, obs(short=0.4), bounds, ok_solver(calls), now=30.0, s=s)  # 4: doubled, by chance alone
    assert not rep.replan.solve and len(calls) == 1
    st, rep = tick(ControlState(), obs(short=20.0), bounds, ok_solver(calls), now=0.0, s=s)  # 200 requests
    st, rep = tick(st, obs(short=40.0), bounds, ok_solver(calls), now=30.0, s=s)  # 400: a real doubling
    assert rep.replan.solve and rep.replan.reason == "overload"


def test_demand_beyond_max_replicas_gets_the_plan_for_the_most_they_carry(tmp_path):
    """The real planner through the controller's solver: a mix that all pools at max_replicas cannot carry gets
    the plan for the largest share of it that fits ("capped"), not "infeasible" and the last plan, which was
    sized for the traffic before (a live test: a shift to long requests left the long-request pool at 0)."""
    import json

    from rayhet.control import solve_mix
    from rayhet.planner import PoolOption
    from rayhet.profiles import load_profile

    path = tmp_path / "p.json"
    path.write_text(json.dumps({
        "schema_version": 1, "model": "m", "pool": "p", "engine": "llama_cpp", "engine_version": "x",
        "hardware": {"vcpus": 1}, "price_per_hour": 1.0, "slo": {"ttft_ms": 1000, "ttft_quantile": 0.9},
        "input_edges": [100], "output_edges": [100], "max_rate": [[1.0]],
        "provenance": {"measured_by": "test", "measured_at": "2026-11-30", "command": "test"}}))
    opt = PoolOption("p", load_profile(str(path)), max_replicas=2)
    out = solve_mix([opt], ([100], [100]), {(0, 0): 5.0}, 5.0)  # 5 req/s; 2 replicas carry 2
    assert out.status == "capped" and out.plan.replicas == {"p": 2}
    assert "max_replicas" in out.message and "planned for" in out.message
    ok = solve_mix([opt], ([100], [100]), {(0, 0): 1.5}, 1.5)
    assert ok.status == "optimal" and ok.plan.replicas == {"p": 2}
