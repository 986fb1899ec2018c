"""Tests of `rayhet profile`: the SLO judgement, capacity derivation and rate search (pure, with synthetic
latency models), the sweep's budget and resume (with a simulated load), and a real tiny-model profile."""

from __future__ import annotations

import argparse
import asyncio
import json
import math
from pathlib import Path

import numpy as np
import pytest

from rayhet.profiles import SLO, SweepPoint, load_profile
from rayhet.profiling import add_arguments, run
from rayhet.profiling.capacity import bucket_capacity, derive_max_rate, meets_slo, slo_violations
from rayhet.profiling.grid import MELANGE_INPUT_EDGES, MELANGE_OUTPUT_EDGES, buckets
from rayhet.profiling.load import arrival_times
from rayhet.profiling.measure import PointPlan, RequestTiming, achieved_rate, plan_point, summarize
from rayhet.profiling.search import SearchParams, bracket, next_rate
from rayhet.profiling.sweep import SweepSettings, SweepState, fingerprint, load_state, run_sweep, save_state, ProfilingError

SLO_TPOT = SLO(tpot_ms=50)


def point(rate: float, *, achieved: float | None = None, tpot: float = 10.0, ttft90: float = 100.0, errors: int = 0,
          ok: bool | None = None, i: int = 0, j: int = 0) -> SweepPoint:
    p = SweepPoint(input_bucket=i, output_bucket=j, input_tokens=100, output_tokens=25, offered_rate=rate,
                   achieved_rate=rate if achieved is None else achieved, num_requests=20, duration_s=10,
                   ttft_ms={"mean": ttft90 / 2, "p90": ttft90}, tpot_ms={"mean": tpot}, errors=errors, meets_slo=False)
    return p.model_copy(update={"meets_slo": meets_slo(p, SLO(tpot_ms=50, ttft_ms=500)) if ok is None else ok})


# -- SLO judgement ------------------------------------------------------------------------------------------
def test_slo_judgement_each_rule():
    slo = SLO(tpot_ms=50, ttft_ms=500, ttft_quantile=0.9)
    assert slo_violations(point(2.0), slo) == []
    assert "TPOT" in slo_violations(point(2.0, tpot=51), slo)[0]
    assert "TTFT p90" in slo_violations(point(2.0, ttft90=501), slo)[0]
    assert "90%" in slo_violations(point(2.0, achieved=1.79), slo)[0]
    assert slo_violations(point(2.0, achieved=1.8), slo) == []  # exactly 90% passes
    assert "failed" in slo_violations(point(2.0, errors=1), slo)[0]
    assert meets_slo(point(2.0, tpot=500), SLO(ttft_ms=500))  # TPOT not part of a TTFT-only SLO


# -- capacity derivation --------------------------------------------------------------------------------------
def test_capacity_is_highest_pass_below_lowest_fail():
    assert bucket_capacity([]) is None
    assert bucket_capacity([point(1, ok=False)]) is None
    assert bucket_capacity([point(1, ok=True), point(2, ok=True), point(4, ok=False), point(2.8, ok=True)]) == 2.8
    # noisy: a pass above a fail is not trusted
    assert bucket_capacity([point(1, ok=True), point(2, ok=False), point(3, ok=True)]) == 1


def test_derive_max_rate_shape_and_nulls():
    sweep = [point(1, ok=True, i=0, j=1), point(2, ok=False, i=0, j=1), point(5, ok=False, i=1, j=0)]
    assert derive_max_rate(sweep, 2, 3) == [[None, 1, None], [None, None, None]]


# -- rate search against synthetic capacities ------------------------------------------------------------------
@pytest.mark.parametrize("capacity,start", [(3.7, 1.0), (0.31, 1.0), (40.0, 0.5), (1.0, 1.0)])
def test_search_brackets_capacity_within_tolerance(capacity, start):
    params = SearchParams(tolerance=0.1, max_points=20)
    history = []
    while (r := next_rate(history, start, params)) is not None:
        history.append((r, r <= capacity))  # a replica that meets the SLO exactly up to `capacity`
    lo, hi = bracket(history)
    assert lo is not None and lo <= capacity
    assert hi is None or (hi > capacity and hi <= lo * 1.1 + 1e-12)
    assert len(history) <= 12  # a search, not a ladder
    # every pass lies below every fail, so the derivation agrees with the search's bracket
    pts = [point(r, ok=ok) for r, ok in history]
    assert bucket_capacity(pts) == lo


def test_search_gives_up_when_nothing_passes_and_caps_points():
    params = SearchParams(tolerance=0.1, max_points=20, min_fraction=1 / 8)
    history = []
    while (r := next_rate(history, 2.0, params)) is not None:
        history.append((r, False))
    assert [r for r, _ in history] == [2.0, 1.0, 0.5, 0.25]
    history = []
    while (r := next_rate(history, 1.0, SearchParams(max_points=3))) is not None:
        history.append((r, True))
    assert len(history) == 3


# -- measurement of one point ---------------------------------------------------------------------------------
def _timings(arrivals, latency, service_gap=None, tokens=25, measured=None):
    """Synthetic run: each request takes `latency`; with `service_gap`, the replica completes one request
    per gap at most (a queue builds when arrivals are faster)."""
    out, free_at = [], 0.0
    for k, a in enumerate(arrivals):
        start = a if service_gap is None else max(a, free_at)
        end = start + latency
        free_at = start + (service_gap or 0)
        m = True if measured is None else bool(measured[k])
        out.append(RequestTiming(float(a), measured=m, first_token=start + 0.1, end=end, output_tokens=tokens))
    return out


def test_achieved_rate_steady_and_overloaded():
    rng = np.random.default_rng(0)
    arrivals = np.sort(rng.uniform(0, 20, size=40))  # 2 req/s
    steady = _timings(arrivals, latency=3.0)
    assert achieved_rate(2.0, arrivals, [t.first_token for t in steady]) == pytest.approx(2.0, rel=1e-6)
    over = _timings(arrivals, latency=1.0, service_gap=1.0)  # serves 1 req/s
    assert achieved_rate(2.0, arrivals, [t.first_token for t in over]) == pytest.approx(1.0, rel=0.1)


def test_keeping_up_is_judged_on_first_tokens_not_on_long_requests_spread_of_ends():
    """8 long requests, each admitted at once (no queue), whose decode time grows with how many ran beside
    them: the later ones, arriving in a cluster, finish late, and completions spread out although the
    replica took every request in as it came. Judged on completions the point fails the 90 % rule (the fifth
    run's 25/2000 bucket read 0.74 with TTFT p90 0.14 s); on first tokens it keeps up."""
    bucket = buckets([25], [2000], 4096)[0][0]
    arrivals = [0.0, 60.0, 120.0, 180.0, 300.0, 320.0, 340.0, 360.0]  # sparse early, a cluster late
    overlap = [sum(1 for b in arrivals if abs(a - b) < 80) for a in arrivals]  # decoders beside it
    timings = [RequestTiming(a, measured=True, first_token=a + 0.1, end=a + 0.1 + 40.0 * n, output_tokens=2000)
               for a, n in zip(arrivals, overlap)]
    rate = len(arrivals) / 360.0
    by_ends = achieved_rate(rate, arrivals, [t.end for t in timings])
    assert by_ends < 0.9 * rate  # the old reading
    point = summarize(timings, bucket, rate, PointPlan(warmup_s=0, num_requests=8, window_s=360, drain_s=0),
                      SLO(tpot_ms=100))
    assert point.achieved_rate == pytest.approx(rate, rel=0.02) and point.meets_slo


def test_summarize_excludes_warmup_and_judges():
    bucket = buckets([100], [25], 4096)[0][0]
    plan = PointPlan(warmup_s=2, num_requests=10, window_s=5, drain_s=5)
    warm = [RequestTiming(0.5, measured=False, first_token=5.0, end=50.0, output_tokens=25)]  # awful, but warm-up
    arrivals = np.linspace(2, 7, 10)
    measured = _timings(arrivals, latency=0.1 + 24 * 0.02)  # TTFT 100 ms, TPOT 20 ms
    p = summarize(warm + measured, bucket, 2.0, plan, SLO(tpot_ms=50, ttft_ms=200))
    assert p.num_requests == 10 and p.errors == 0 and p.warmup_s == 2 and p.duration_s == 5
    assert p.tpot_ms["mean"] == pytest.approx(20.0) and p.ttft_ms["p90"] == pytest.approx(100.0)
    assert p.meets_slo
    short = measured[:9] + [RequestTiming(7, True, first_token=7.1, end=7.3, output_tokens=3)]  # EOS not ignored
    assert summarize(short, bucket, 2.0, plan, SLO_TPOT).errors == 1


def test_plan_point_minimums():
    p = plan_point(0.5, 2.0, min_requests=20, min_duration_s=10, max_window_s=120, min_warmup_s=3, latency_bound_s=4)
    assert p.num_requests == 20 and p.window_s == 40 and p.warmup_s == 3
    p = plan_point(0.05, 30.0, min_requests=20, min_duration_s=10, max_window_s=100, min_warmup_s=3, latency_bound_s=40)
    assert p.window_s <= 100 and p.num_requests == 5 and p.warmup_s == 30  # capped: fewer requests, reported
    # a held-out check asks for at least 8 requests: the window grows past the cap instead
    p = plan_point(0.05, 30.0, min_requests=20, min_duration_s=10, max_window_s=100, min_warmup_s=3, latency_bound_s=40,
                   fewest_requests=8)
    assert p.num_requests == 8 and p.window_s == pytest.approx(160)
    p = plan_point(0.05, 30.0, min_requests=6, min_duration_s=10, max_window_s=100, min_warmup_s=3, latency_bound_s=40,
                   fewest_requests=8)
    assert p.num_requests == 6  # never more than min_requests


def test_grid_trimmed_to_context_cheapest_first():
    fit, too_long = buckets(MELANGE_INPUT_EDGES, MELANGE_OUTPUT_EDGES, 2048)
    assert len(fit) + len(too_long) == 60
    assert all(b.input_tokens + b.output_tokens <= 2048 for b in fit)
    assert all(b.input_tokens + b.output_tokens > 2048 for b in too_long)
    assert (fit[0].input_tokens, fit[0].output_tokens) == (25, 25)


# -- the sweep, with a simulated replica (no engine, no clock) ------------------------------------------------
class SimulatedReplica:
    """Test double: a replica whose capacity per bucket is `capacity(in, out)` req/s and whose requests take
    `latency(in, out)` s; `drive` returns the timings such a replica would give, instantly."""

    max_context = 600
    max_batch = 4

    def __init__(self):
        self.calls = 0

    @staticmethod
    def capacity(n_in, n_out):
        return 40.0 / (1 + n_in / 100) / (1 + n_out / 25)

    @staticmethod
    def latency(n_in, n_out):
        return 0.01 + n_in * 1e-4 + n_out * 0.005

    def token_ids(self):
        return [1, 2, 3]

    async def wait_idle(self, timeout_s):
        return True

    async def probe(self, target, n_in, n_out, rng):
        lat = self.latency(n_in, n_out)
        return RequestTiming(0.0, True, first_token=0.01, end=lat, output_tokens=n_out)

    async def drive(self, target, n_in, n_out, rate, plan, rng):
        self.calls += 1
        warm, window = arrival_times(rate, plan, rng)  # the real schedule: warm-up, then the window
        measured = [False] * len(warm) + [True] * len(window)
        cap = self.capacity(n_in, n_out)
        return _timings(np.concatenate([warm, window]), self.latency(n_in, n_out), service_gap=1 / cap,
                        tokens=n_out, measured=measured)


def _settings(**kw):
    base = dict(slo=SLO(tpot_ms=50), input_edges=[100, 500, 1000], output_edges=[25, 100],
                search=SearchParams(tolerance=0.1), min_requests=40, min_duration_s=1.0)
    return SweepSettings(**(base | kw))


def test_sweep_finds_each_bucket_capacity_and_trims_context():
    sim, settings = SimulatedReplica(), _settings()
    state = asyncio.run(run_sweep(sim, settings, SweepState(fingerprint={}), progress=False,
                                  drive=sim.drive, probe=sim.probe))
    rates = derive_max_rate(state.points, 3, 2)
    for i, n_in in enumerate([100, 500, 1000]):
        for j, n_out in enumerate([25, 100]):
            if n_in + n_out > 600:
                assert rates[i][j] is None and state.status[f"{i},{j}"].startswith("too long")
                continue
            true = sim.capacity(n_in, n_out)  # the 90% rule lets offered rates up to true / 0.9 pass
            assert rates[i][j] is not None and true * 0.8 <= rates[i][j] <= true / 0.9 * 1.1, (i, j, rates[i][j], true)


def test_held_out_bucket_is_measured_as_a_check_of_its_prediction():
    """A held-out bucket first measures the two rates that decide whether the prediction is within ±15 % of
    the measured capacity (predicted/1.15 must pass, predicted/0.85 fail): when both do, the check is over;
    when not, the search goes on for the bucket's capacity as usual. Each point measures the requests asked
    for the bucket, however long its window."""
    sim, settings = SimulatedReplica(), _settings(input_edges=[100], output_edges=[25])
    true = sim.capacity(100, 25)
    seen = []

    async def drive(target, n_in, n_out, rate, plan, rng):
        seen.append(rate)
        return await sim.drive(target, n_in, n_out, rate, plan, rng)

    state = asyncio.run(run_sweep(sim, settings, SweepState(fingerprint={}), progress=False, drive=drive,
                                  probe=sim.probe, predicted={(0, 0): true}, requests={(0, 0): 333}))
    assert seen == [pytest.approx(true / 1.15), pytest.approx(true / 0.85)]
    assert [p.num_requests for p in state.points] == [333, 333] and [p.meets_slo for p in state.points] == [True, False]
    assert true * 0.8 <= derive_max_rate(state.points, 1, 1)[0][0] <= true / 0.9 * 1.1
    # a prediction twice too high: its lower edge fails, and the search goes down from there
    seen.clear()
    asyncio.run(run_sweep(sim, settings, SweepState(fingerprint={}), progress=False, drive=drive,
                          probe=sim.probe, predicted={(0, 0): 2.5 * true}))
    assert seen[0] == pytest.approx(2.5 * true / 1.15) and seen[1] < seen[0]


def test_check_rate_is_a_pure_function_of_the_points_so_far():
    from rayhet.profiling.search import SearchParams, check_rate

    p = SearchParams(tolerance=0.25, max_points=5)
    assert check_rate([], 1.0, p) == pytest.approx(1 / 1.15)
    assert check_rate([(1 / 1.15, True)], 1.0, p) == pytest.approx(1 / 0.85)
    # both edges as predicted: the check has passed, nothing more to measure
    assert check_rate([(1 / 1.15, True), (1 / 0.85, False)], 1.0, p) is None
    # the upper edge passed too: the search goes on up for the measured capacity
    assert check_rate([(1 / 1.15, True), (1 / 0.85, True)], 1.0, p) == pytest.approx(1.15 / 0.85)
    # ... by the band, not by doubling: one more fail there brackets the capacity within the 25 % tolerance
    assert check_rate([(1 / 1.15, True), (1 / 0.85, True), (1.15 / 0.85, False)], 1.0, p) is None
    assert check_rate([(1 / 1.15, True), (1 / 0.85, True), (1.15 / 0.85, False)], 1.0,
                      SearchParams(tolerance=0.05, max_points=5)) == pytest.approx(math.sqrt(1.15) / 0.85)
    assert check_rate([(1 / 1.15, False)], 1.0, p) == pytest.approx(1 / 1.15 ** 2)  # below the band: down by it


def test_sweep_resumes_after_interrupt(tmp_path):
    settings = _settings()
    fp = fingerprint(settings, {"engine": "simulated"})
    full_sim = SimulatedReplica()
    full = asyncio.run(run_sweep(full_sim, settings, SweepState(fingerprint=fp), progress=False,
                                 drive=full_sim.drive, probe=full_sim.probe))
    sidecar = tmp_path / "pool.json.partial"
    sim, saves = SimulatedReplica(), []

    def save_then_interrupt(state):
        save_state(state, sidecar)
        saves.append(len(state.points))
        if len(state.points) == 5:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        asyncio.run(run_sweep(sim, settings, SweepState(fingerprint=fp), save=save_then_interrupt, progress=False,
                              drive=sim.drive, probe=sim.probe))
    resumed_state = load_state(sidecar, fp)
    assert len(resumed_state.points) == 5
    sim2 = SimulatedReplica()
    done = asyncio.run(run_sweep(sim2, settings, resumed_state, progress=False, drive=sim2.drive, probe=sim2.probe))
    assert sim2.calls == len(full.points) - 5  # nothing measured twice
    assert [(p.input_bucket, p.output_bucket, p.offered_rate) for p in done.points] == \
        [(p.input_bucket, p.output_bucket, p.offered_rate) for p in full.points]
    with pytest.raises(ProfilingError, match="other settings"):
        load_state(sidecar, fingerprint(_settings(min_requests=3), {"engine": "simulated"}))


def test_time_budget_leaves_unmeasured_buckets_null():
    sim = SimulatedReplica()
    settings = _settings(time_budget_s=0.0)
    state = asyncio.run(run_sweep(sim, settings, SweepState(fingerprint={}), progress=False,
                                  drive=sim.drive, probe=sim.probe))
    assert sim.calls == 0 and state.points == []
    assert all(s.startswith(("not measured", "too long")) for s in state.status.values())


def test_budget_too_short_for_a_point_stops_the_whole_sweep():
    sim = SimulatedReplica()
    settings = _settings(time_budget_s=3.0)  # a point needs a 3 s warm-up and a 1 s window: none fits
    state = asyncio.run(run_sweep(sim, settings, SweepState(fingerprint={}), progress=False,
                                  drive=sim.drive, probe=sim.probe))
    kinds = sorted(s.split(":")[0] for s in state.status.values())
    assert sim.calls == 0 and kinds.count("cut") == 1 and set(kinds) == {"cut", "not measured", "too long"}


def test_single_request_missing_slo_makes_bucket_null():
    sim = SimulatedReplica()
    settings = _settings(slo=SLO(ttft_ms=5))  # the simulated first token comes after 10 ms
    state = asyncio.run(run_sweep(sim, settings, SweepState(fingerprint={}), progress=False,
                                  drive=sim.drive, probe=sim.probe))
    assert sim.calls == 0
    assert all(s.startswith(("unservable", "too long")) for s in state.status.values())


# -- the command ----------------------------------------------------------------------------------------------
def _parse(argv):
    p = argparse.ArgumentParser()
    add_arguments(p)
    return p.parse_args(argv)


def test_command_refuses_missing_slo_and_plots_existing_profile(tmp_path, capsys):
    assert run(_parse(["--model", "m.gguf", "--out", str(tmp_path / "p.json"), "--price-per-hour", "1"])) == 2
    assert "SLO" in capsys.readouterr().err
    src = Path(__file__).resolve().parents[2] / "profiles" / "llama-2-7b" / "a10g.json"
    png = tmp_path / "a10g.png"
    assert run(_parse(["--from", str(src), "--plot", str(png)])) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not (tmp_path / "a10g-fit.png").exists()  # a version-1 profile: no engine model to draw
    v2 = Path(__file__).resolve().parents[2] / "profiles" / "rayhet-7b" / "h200-16gb.json"
    assert run(_parse(["--from", str(v2), "--plot", str(tmp_path / "h.png")])) == 0
    assert (tmp_path / "h-fit.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"



def test_design_tokens_trims_the_biggest_batches_and_must_be_positive(tmp_path, capsys):
    from rayhet.perf import EngineLimits
    from rayhet.profiling.engine_model import design

    limits = EngineLimits(batch_slots=8, max_context=4096, step_tokens=256, kv_tokens=32768)
    full, small = design(limits), design(limits, budget_tokens=12_000)
    assert sum(b.tokens for b in small) <= 12_000 < sum(b.tokens for b in full)
    assert max(b.tokens for b in small) < max(b.tokens for b in full)  # the biggest batches went first
    assert {b.label for b in small} <= {b.label for b in full}
    argv = ["--model", "m.gguf", "--out", str(tmp_path / "p.json"), "--price-per-hour", "1", "--slo-tpot-ms", "100",
            "--design-tokens", "0"]
    assert run(_parse(argv)) == 2
    assert "--design-tokens must be >= 1" in capsys.readouterr().err

# -- a real profile of the tiny model (real llama.cpp engine, in-process) -------------------------------------
def test_profile_tiny_model_capacity_matches_raw_sweep(tiny_gguf, tmp_path):
    out = tmp_path / "tiny" / "cpu1.json"
    png = tmp_path / "tiny.png"
    argv = ["--method", "sweep", "--engine", "llama_cpp", "--model", str(tiny_gguf), "--n-ctx", "128", "--n-slots", "4",
            "--n-threads", "1", "--slo-tpot-ms", "50", "--slo-ttft-ms", "1000", "--out", str(out),
            "--price-per-hour", "0.05", "--input-edges", "25,100", "--output-edges", "16,64",
            "--min-requests", "5", "--min-duration", "0.5", "--warmup", "0.2", "--max-window", "2",
            "--tolerance", "0.5", "--max-points", "3", "--no-progress", "--plot", str(png)]
    assert run(_parse(argv)) == 0
    profile = load_profile(out)
    slo = profile.slo
    assert (slo.tpot_ms, slo.ttft_ms, slo.ttft_quantile) == (50, 1000, 0.9)
    # the capacities are exactly what the raw sweep says, and each point's verdict is the SLO's
    assert profile.max_rate == derive_max_rate(profile.sweep, 2, 2)
    for p in profile.sweep:
        assert p.meets_slo == meets_slo(p, slo)
        assert p.input_tokens == [25, 100][p.input_bucket] and p.output_tokens == [16, 64][p.output_bucket]
        assert p.warmup_s >= 0.2 and p.duration_s >= 0.5 and p.num_requests + p.errors >= 5
        if p.meets_slo:
            assert p.tpot_ms["mean"] <= 50 and p.ttft_ms["p90"] <= 1000 and p.errors == 0
    # 100 + 64 tokens do not fit a 128-token context: null, never measured, and said why
    assert profile.max_rate[1][1] is None and not [p for p in profile.sweep if (p.input_bucket, p.output_bucket) == (1, 1)]
    assert "(1,1) in 100 / out 64: too long" in profile.provenance.notes
    # the small buckets were searched over several rates, and a one-core replica serves them at some rate
    assert len({p.offered_rate for p in profile.sweep if (p.input_bucket, p.output_bucket) == (0, 0)}) >= 2
    assert profile.max_rate[0][0] is not None and profile.max_rate[0][0] > 0
    assert profile.hardware.vcpus == 1 and profile.engine == "llama_cpp" and profile.engine_version != "unknown"
    assert not out.with_name(out.name + ".partial").exists()  # finished: no sidecar left behind
    assert png.stat().st_size > 0


def test_http_target_times_a_streamed_completion():
    """The HTTP mode against a stand-in server (httpx MockTransport) that streams 3 tokens and usage."""
    import httpx

    from rayhet.profiling.targets import HttpTarget

    seen = {}

    def handler(request: httpx.Request) -> httpx.Response:
        seen.update(json.loads(request.content))
        chunks = [{"choices": [{"text": t, "index": 0}]} for t in ["a", "b", "c"]]
        chunks.append({"choices": [], "usage": {"prompt_tokens": 4, "completion_tokens": 3}})
        body = "".join(f"data: {json.dumps(c)}\n\n" for c in chunks) + "data: [DONE]\n\n"
        return httpx.Response(200, text=body, headers={"content-type": "text/event-stream"})

    async def go():
        t = HttpTarget("http://pool:8000", "m", max_context=64, transport=httpx.MockTransport(handler))
        timing = RequestTiming(0.0, measured=True)
        await t.send([5, 6, 7, 8], 3, timing, t0=0.0)
        await t.aclose()
        return timing

    timing = asyncio.run(go())
    assert seen["prompt"] == [5, 6, 7, 8] and seen["max_tokens"] == 3 and seen["ignore_eos"] is True
    assert timing.ok and timing.output_tokens == 3 and timing.end >= timing.first_token


def test_profile_tiny_model_with_its_engine_model_and_a_held_out_bucket(tiny_gguf, tmp_path, capsys):
    """`--method model` (the default in process): step times on designed batches, the fitted model, the grid
    derived by simulation, one bucket measured directly next to its prediction (issue 13)."""
    from rayhet.capacity import derive_max_rate as simulate_grid

    out = tmp_path / "tiny-model.json"
    png = tmp_path / "tiny-model.png"
    argv = ["--engine", "llama_cpp", "--model", str(tiny_gguf), "--n-ctx", "512", "--n-slots", "4",
            "--n-threads", "1", "--slo-tpot-ms", "50", "--slo-ttft-ms", "1000", "--out", str(out),
            "--price-per-hour", "0.05", "--input-edges", "32,256", "--output-edges", "16,128", "--held-out", "1",
            "--min-requests", "5", "--min-duration", "1", "--warmup", "0.3", "--max-window", "3",
            "--tolerance", "0.5", "--max-points", "3", "--no-progress", "--plot", str(png), "--live-seconds", "3",
            "--held-out-requests", "5"]
    # a first run whose budget ends before the held-out bucket: the measured steps stay in the sidecar ...
    assert run(_parse(argv + ["--time-budget", "0.1s"])) == 0
    sidecar = tmp_path / "tiny-model.json.partial"
    steps = SweepState.model_validate_json(sidecar.read_text()).engine_steps
    assert steps and len(steps) >= 50
    assert "budget spent" in capsys.readouterr().out
    # ... and --resume goes on from them: the held-out bucket is measured, the steps are not measured again
    assert run(_parse(argv + ["--resume"])) == 0
    said = capsys.readouterr()
    assert "not measured again" in said.err and "held out" in said.out
    assert not sidecar.exists()
    profile = load_profile(out)
    em = profile.engine_model
    assert len(em.points) == min(len(steps), 3000)
    assert profile.schema_version == 2 and em is not None
    assert em.engine_limits().batch_slots == 4 and em.engine_limits().max_context == 512
    assert len(em.points) >= 50 and all(p.predicted_s is not None for p in em.points)
    assert any(p.label == "live" for p in em.points) and len(em.points[0].work) == 8
    # the grid is the model's, re-derivable from the file alone
    assert profile.max_rate == simulate_grid(em.step_model(), em.engine_limits(), profile.slo,
                                             profile.input_edges, profile.output_edges,
                                             requests=em.capacity_requests, tolerance=em.capacity_tolerance)
    assert all(r is not None and r > 0 for row in profile.max_rate for r in row)
    (held,) = em.held_out
    assert held.predicted_rate == profile.max_rate[held.input_bucket][held.output_bucket]
    # what was measured is read off the bucket's own points (a slow host may fail every one of them: the tiny
    # model's capacity is the host's, so the test asserts the bookkeeping, not a speed)
    from rayhet.profiling.search import bracket
    assert profile.sweep and (held.measured_rate, held.measured_fail_rate) == \
        bracket([(p.offered_rate, p.meets_slo) for p in profile.sweep])
    assert held.measured_rate is not None or held.measured_fail_rate is not None
    # five requests a point, as asked, with what the model says such a check can resolve
    assert held.requests_per_point == 5 and 0 <= held.check_power <= 1
    assert all(p.num_requests + p.errors == 5 for p in profile.sweep)
    assert "requests a point" in said.out
    # the host's speed was probed before and after the bucket: the prediction at that speed sits beside it
    assert held.speed_drift is not None and all(0.2 < v < 5 for v in held.speed_drift.values())
    assert set(held.speed_drift) == {"prefill", "decode"}
    # (an error at the check's speed needs a passing rate: on a busy host every rate may fail)
    assert held.predicted_rate_at_check is not None
    assert (held.error_at_check is not None) == (held.measured_rate is not None)
    assert "speed probe" in said.err
    assert {(p.input_bucket, p.output_bucket) for p in profile.sweep} == {(held.input_bucket, held.output_bucket)}
    # each measured point has its twin: the same arrivals through the replica model, judged the same way
    assert len(held.twins) == len(profile.sweep)  # (twin_rate may be None: every twin may fail on the tiny model)
    assert [t.offered_rate for t in held.twins] == [p.offered_rate for p in profile.sweep]
    assert "the same arrivals through the model" in said.out
    # the engine's own steps during each point said how fast it ran, and the twin was replayed at that speed
    assert len(held.speed_during) == len(held.twins_at_speed) == len(profile.sweep)
    assert all(set(s) == {"prefill", "decode"} and all(0.2 < v < 5 for v in s.values()) for s in held.speed_during)
    assert [t.offered_rate for t in held.twins_at_speed] == [p.offered_rate for p in profile.sweep]
    assert "the fit's speed; the model at that speed:" in said.out
    assert png.stat().st_size > 0 and (tmp_path / "tiny-model-fit.png").stat().st_size > 0


def test_http_target_counts_tokens_per_chunk_from_continuous_usage():
    """`timed()` over HTTP: chunks of several tokens (vLLM's stream_interval) are counted from the running usage
    that `continuous_usage_stats` adds to every chunk; without it, one token per chunk."""
    import httpx

    from rayhet.profiling.targets import HttpTarget

    def handler(request: httpx.Request) -> httpx.Response:
        cont = json.loads(request.content)["stream_options"].get("continuous_usage_stats")
        chunks = [{"choices": [{"text": t, "index": 0}],
                   "usage": {"prompt_tokens": 4, "completion_tokens": n} if cont else None}
                  for t, n in (("a", 1), ("bcdefghijklmnopq", 17), ("r", 18))]
        body = "".join(f"data: {json.dumps(c)}\n\n" for c in chunks) + "data: [DONE]\n\n"
        return httpx.Response(200, text=body, headers={"content-type": "text/event-stream"})

    async def go():
        t = HttpTarget("http://pool:8000", "m", max_context=64, transport=httpx.MockTransport(handler))
        got = await t.timed([5, 6, 7, 8], 18)
        await t.aclose()
        return got

    got = asyncio.run(go())
    assert [n for _, n in got.deltas] == [1, 16, 1] and got.first >= got.sent


def test_observed_work_matches_the_replica_models_schedule():
    """The work the outside observation assigns to an interval is what the replica model would run."""
    from rayhet.perf import EngineLimits, StepModel
    from rayhet.profiling.observe import decode_work, mixed_work, prefill_work
    from rayhet.sim.replica import SimRequest, simulate

    limits = EngineLimits(batch_slots=4, step_tokens=64, kv_tokens=10**5, max_context=4096)
    model = StepModel(c_step=1e-3, c_prefill=2e-5, c_decode=3e-4, c_kv_read=1e-6, c_attn=5e-5)
    alone = simulate(model, limits, [SimRequest(0.0, 200, 1)])[0]
    assert model.time(prefill_work(200, limits)) == pytest.approx(alone.ttft)
    # 3 requests of 16 tokens decoding 10 steps: contexts 3 x (16 + g), g = 1..10
    assert model.time(decode_work(3, 3 * 17, 10, limits)) == pytest.approx(
        sum(model.step_time(0, 0, 3, 3 * (16 + g)) for g in range(1, 11)))
    # a 200-token prompt beside 3 decoders: chunks of 61, 61, 61, 17
    rs = [SimRequest(0.0, 16, 500, rid=k + 1) for k in range(3)] + [SimRequest(0.5, 200, 1, rid=9)]
    done = {r.rid: r for r in simulate(model, limits, rs)}
    long = done[9]
    # the simulated TTFT includes the wait for the step running at 0.5: compare the steps themselves
    w = mixed_work(200, 3, 3 * (16 + 1), limits)
    assert w.steps == 4 and w.prefill_tokens == 200 and w.decode_seqs == 12
    assert long.ttft >= model.time(w) * 0.95


def test_observed_plan_decodes_wide_batches_at_long_contexts_too():
    """The context (KV-read) term is fitted from how a decode step grows with the context: the widest batch is
    decoded at a long prompt as well as a short and a mid one, where its KV cache holds it."""
    from rayhet.perf import EngineLimits
    from rayhet.profiling.observe import observed_plan

    h200 = EngineLimits(batch_slots=256, step_tokens=8192, kv_tokens=3_802_592, max_context=8192)
    decodes = {args[:2] for kind, args in observed_plan(h200) if kind == "decode"}
    assert {(256, 16), (256, 1024), (256, 4096)} <= decodes
    small_kv = EngineLimits(batch_slots=256, step_tokens=8192, kv_tokens=300_000, max_context=8192)
    decodes = {args[:2] for kind, args in observed_plan(small_kv) if kind == "decode"}
    assert (256, 4096) not in decodes and (32, 4096) in decodes  # only where the KV cache holds the batch


def test_decode_experiments_outlast_their_batchs_prefill_and_only_lock_step_intervals_count():
    """256 prompts of 4,096 tokens take ~133 steps to prefill at 8,192 tokens a step: the first requests decode
    that long before the last starts, so their output must be longer; an interval after any request ended is
    not b sequences decoding and is dropped (on 2026-11-30 the H200's 256 x 4096 decode looked 2x faster than
    256 x 16 for that reason)."""
    from rayhet.perf import EngineLimits
    from rayhet.profiling.observe import Timed, decode_samples, observed_plan

    h200 = EngineLimits(batch_slots=256, step_tokens=8192, kv_tokens=3_802_592, max_context=8192)
    outputs = {args[:2]: args[2] for kind, args in observed_plan(h200) if kind == "decode"}
    assert outputs[(256, 4096)] >= 32 + 256 * 4096 // 8192 and outputs[(256, 16)] >= 64
    # three requests; the last starts at 1.0 and sends 16 tokens every 0.1 s; one ended at 1.25
    ref = Timed(0.0, [(1.0, 1), (1.1, 16), (1.2, 16), (1.3, 16), (1.4, 16), (1.5, 1)])
    early = Timed(0.0, [(0.2, 1), (0.3, 16), (1.25, 16)])
    other = Timed(0.0, [(0.5, 1), (1.6, 16)])
    got = decode_samples([ref, early, other], 16, h200, "d")
    assert [round(s, 3) for _, _, s in got] == [0.1, 0.1]  # 1.0-1.1, 1.1-1.2; from 1.25 `early` has ended
    assert all(w.decode_seqs == 3 * 16 for _, w, _ in got)


def test_profile_tiny_model_observed_from_outside(tiny_gguf, tmp_path, capsys):
    """`--steps outside`: the engine model from timed requests only (as for vLLM or --url), on the tiny model."""
    from rayhet.capacity import derive_max_rate as simulate_grid

    out = tmp_path / "outside.json"
    argv = ["--engine", "llama_cpp", "--model", str(tiny_gguf), "--n-ctx", "512", "--n-slots", "4",
            "--n-threads", "1", "--slo-tpot-ms", "50", "--slo-ttft-ms", "1000", "--out", str(out),
            "--price-per-hour", "0.05", "--input-edges", "32,256", "--output-edges", "16,128", "--held-out", "0",
            "--steps", "outside", "--no-progress"]
    assert run(_parse(argv)) == 0
    em = load_profile(out).engine_model
    labels = {p.label.split()[0] for p in em.points}
    assert labels == {"prefill", "decode", "mixed"}
    # the tiny model's steps (well under a millisecond) are below what a client can time, so no bound on the
    # fit error here (the 1B model on an H200: benchmarks/results/engine-model-gpu.md); the pipeline is checked
    assert any(v > 0 for v in em.step.values()) and em.mean_abs_rel_error > 0  # (c_step alone may fit to 0)
    assert all(p.predicted_s is not None for p in em.points)
    prof = load_profile(out)
    assert all(r is not None and r > 0 for row in prof.max_rate for r in row)
    assert prof.max_rate == simulate_grid(em.step_model(), em.engine_limits(), prof.slo, prof.input_edges,
                                          prof.output_edges, requests=em.capacity_requests,
                                          tolerance=em.capacity_tolerance)


def test_speed_drift_is_measured_over_fitted_time_relative_to_the_fit():
    """A host that runs every step 30 % slower than when the model was fitted reads 1.3, whatever the fit's
    own residual on the probe batches was."""
    from rayhet.perf import StepModel, StepWork
    from rayhet.profiling.engine_model import speed_ratio

    model = StepModel(c_step=0.01, c_prefill=0.001, c_decode=0.002, c_kv_read=0.0, c_attn=0.0)
    w = StepWork(1, 0, 4, 100, 0, 0, 0)  # 0.018 s predicted
    fitted = [("B4 P16 O64", w, 0.020), ("other", w, 0.5)]  # the probe label ran 0.020 at fit time
    assert speed_ratio(model, fitted, {"B4 P16 O64"}) == pytest.approx(0.020 / 0.018)
    now = [("B4 P16 O64", w, 0.026)]
    assert speed_ratio(model, now) / speed_ratio(model, fitted, {"B4 P16 O64"}) == pytest.approx(1.3)
    # prefill and decode steps apart: a prompt step (prefill tokens) and a decode step
    p = StepWork(1, 256, 0, 0, 0, 0, 0)  # 0.266 s predicted
    mixed = [("x", p, 0.266 * 1.1), ("x", w, 0.018 * 1.5)]
    assert speed_ratio(model, mixed, kind="prefill") == pytest.approx(1.1)
    assert speed_ratio(model, mixed, kind="decode") == pytest.approx(1.5)


def test_observed_speed_probe_reads_the_slowdown_of_an_engine_seen_from_outside():
    """The probe for vLLM and --url: a few of the observed experiments again, compared with the fitted samples
    of the same labels. An engine (a test double with a deterministic clock) that runs everything 1.3x
    slower than when it was fitted reads 1.3 for prefill and decode, whatever the model's residual."""
    from rayhet.perf import EngineLimits, StepModel
    from rayhet.profiling.observe import Timed, observed_drift, probe_plan, run_observed

    class ClockedTarget:
        """Answers at sent + factor x (1 ms per prompt token + 10 ms), then a token per factor x 20 ms."""

        def __init__(self, factor: float):
            self.factor = factor

        def token_ids(self) -> list[int]:
            return list(range(3, 200))

        async def wait_idle(self, timeout_s: float) -> bool:
            return True

        async def timed(self, prompt_ids, max_tokens, on_delta=None):
            first = self.factor * (0.001 * len(prompt_ids) + 0.01)
            return Timed(0.0, [(first + self.factor * 0.02 * k, 1) for k in range(max_tokens)])

    limits = EngineLimits(batch_slots=4, step_tokens=256, kv_tokens=4 * 2048, max_context=2048)
    model = StepModel(c_step=5e-3, c_prefill=2e-4, c_decode=1e-3, c_kv_read=1e-7, c_attn=1e-5)
    vocab = list(range(3, 200))

    async def go():
        fitted = await run_observed(ClockedTarget(1.0), limits, vocab, np.random.default_rng(0),
                                    plan=probe_plan(limits))
        fitted += [("prefill P16", fitted[0][1], 99.0)]  # other labels do not enter the comparison
        return await observed_drift(ClockedTarget(1.3), limits, model, fitted, vocab, np.random.default_rng(1))

    drift = asyncio.run(go())
    assert set(drift) == {"prefill", "decode"}
    assert drift["prefill"] == pytest.approx(1.3) and drift["decode"] == pytest.approx(1.3)


def test_a_twin_replays_the_same_arrivals_through_the_model():
    """A point whose requests ran exactly as the replica model says has a twin equal to it; the same point
    replayed under a model twice as slow has twice the TPOT and fails a TPOT limit the point met."""
    from rayhet.perf import EngineLimits, StepModel
    from rayhet.profiling.twin import twin_point
    from rayhet.sim.replica import SimRequest, simulate

    model = StepModel(c_step=0.01, c_prefill=1e-4, c_decode=2e-3, c_kv_read=1e-7, c_attn=1e-5)
    limits = EngineLimits(batch_slots=4, step_tokens=256, kv_tokens=4 * 1024, max_context=1024, max_waiting=16)
    bucket = buckets([100], [50], 1024)[0][0]
    plan = PointPlan(warmup_s=2.0, num_requests=12, window_s=12.0, drain_s=30.0)
    arrivals = sorted(np.random.default_rng(4).uniform(0, 16, 16).tolist())  # warm-up, window and tail
    ran = simulate(model, limits, [SimRequest(a, 100, 50, rid=k + 1) for k, a in enumerate(arrivals)])
    timings = [RequestTiming(r.arrival, measured=2.0 <= r.arrival < 14.0, first_token=r.first_token, end=r.end,
                             output_tokens=50) for r in sorted(ran, key=lambda r: r.rid)]
    slo = SLO(tpot_ms=20.0)
    measured = summarize(timings, bucket, 1.0, plan, slo)
    assert twin_point(model, limits, bucket, 1.0, plan, timings, slo) == measured
    slower = StepModel(**{k: 2 * v for k, v in model.model_dump().items()})
    twin = twin_point(slower, limits, bucket, 1.0, plan, timings, slo)
    assert twin.tpot_ms["mean"] >= 1.95 * measured.tpot_ms["mean"]  # twice the step time, and more overlap
    assert measured.meets_slo and not twin.meets_slo


def test_url_limits_fit_pass_terms_only_when_asked():
    """`--slot-passes`: an engine behind --url that splits steps into passes per run of slots (llama.cpp
    pools) is observed with the pass features, so its fit can have the pass terms; without it they are 0."""
    from rayhet.profiling.command import _url_limits
    from rayhet.profiling.observe import decode_work

    base = ["--url", "http://pool:8000", "--model", "m", "--max-context", "512", "--max-batch", "4",
            "--slo-tpot-ms", "50", "--out", "x.json", "--price-per-hour", "1"]
    plain, passes = _url_limits(_parse(base)), _url_limits(_parse(base + ["--slot-passes"]))
    assert not plain.passes_per_slot_run and passes.passes_per_slot_run
    assert decode_work(3, 300, 5, plain).extra_passes == 0
    # 3 sequences in slots 0-2: one run of consecutive slots, one pass over several sequences a step
    assert decode_work(3, 300, 5, passes).multi_passes == 5


def test_check_recorder_speed_is_the_points_steps_against_the_fits_live_steps():
    """The speed during a held-out point: its steps' measured/predicted time over the same ratio in the fit's
    live steps, prompt and decode steps apart; the model at that speed scales its prompt terms and the rest."""
    from rayhet.perf import EngineLimits, StepModel, StepWork
    from rayhet.profiling.model_method import CheckRecorder, MeasuredModel, at_speed

    model = StepModel(c_step=0.01, c_prefill=0.001, c_decode=0.002, c_kv_read=1e-6, c_attn=0.01)
    dec, pre = StepWork(1, 0, 3, 300), StepWork(1, 64, 1, 100, 2080)
    # the fit's live steps ran 10 % over the model (its own residual), the designed ones exactly on it
    fitted = [("live", dec, 1.1 * model.time(dec)), ("live", pre, 1.1 * model.time(pre)),
              ("B1 P16 O8", dec, model.time(dec))]
    measured = MeasuredModel(fitted, type("Fit", (), {"model": model})(), EngineLimits(batch_slots=4, step_tokens=512, kv_tokens=4096, max_context=1024), [], [],
                             0.0)
    rec = CheckRecorder(measured, settings=None, state=None)
    during = [("check", dec, 1.1 * 1.3 * model.time(dec)), ("check", pre, 1.1 * 1.2 * model.time(pre))]
    assert rec.speed(during) == {"prefill": pytest.approx(1.2), "decode": pytest.approx(1.3)}
    scaled = at_speed(model, {"prefill": 1.2, "decode": 1.3})
    assert scaled.c_prefill == pytest.approx(1.2 * model.c_prefill) and scaled.c_attn == pytest.approx(0.012)
    assert scaled.c_step == pytest.approx(1.3 * model.c_step) and scaled.c_decode == pytest.approx(0.0026)
    assert at_speed(model, None) is model and at_speed(model, {"decode": 2.0}).c_prefill == pytest.approx(0.002)
