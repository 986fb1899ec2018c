"""The engine step-time model (rayhet.perf), the replica model (rayhet.sim.replica), SLO kinds (rayhet.slo)
and capacity derivation (rayhet.capacity): closed forms and known answers (issue 13)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from rayhet.capacity import bucket_capacity, derive_max_rate, for_slo
from rayhet.perf import (EngineLimits, StepModel, StepWork, attention_pairs, fit_step_model, micro_batches,
                         pass_features)
from rayhet.profiles import SLO
from rayhet.sim.replica import Replica, SimRequest, simulate
from rayhet.slo import Sample, meets, verdicts

TRUE = StepModel(c_step=2e-3, c_prefill=1e-4, c_decode=5e-4, c_kv_read=2e-7, c_attn=1e-5, c_pass=1.5e-3, c_multi=6e-4)
WIDE = EngineLimits(batch_slots=8, step_tokens=256, kv_tokens=8 * 4096, max_context=4096, max_waiting=64)


def test_fit_recovers_known_coefficients_within_5_percent():
    rng = np.random.default_rng(1)
    work, times = [], []
    for _ in range(400):  # the kinds of steps the profiler's design produces: prefill chunks and decode batches
        dec = int(rng.integers(0, 9))
        ctx = int(dec * rng.integers(16, 4000))
        chunk = int(rng.choice([0, 0, 16, 64, 256 - dec]))
        cached = int(rng.integers(0, 3000)) if chunk else 0
        # passes of a llama.cpp step over the slots decoding (some gaps, some single-slot runs)
        slots = sorted(rng.choice(8, size=dec, replace=False).tolist())
        passes, multi = pass_features(micro_batches([(k, 1) for k in slots], 256))
        w = StepWork(1, chunk, dec, ctx, attention_pairs(cached, chunk), passes, multi)
        if chunk == 0 and dec == 0:
            continue
        work.append(w)
        times.append(TRUE.time(w) * (1 + rng.normal(0, 0.01)))  # 1 % measurement noise
    fit = fit_step_model(work, times)
    for name in ("c_step", "c_prefill", "c_decode", "c_kv_read", "c_attn", "c_pass", "c_multi"):
        assert getattr(fit.model, name) == pytest.approx(getattr(TRUE, name), rel=0.05), name
    assert fit.mean_abs_rel_error < 0.02



def test_fit_recovers_the_op_offload_cost_of_a_hybrid_replica():
    """A hybrid llama.cpp replica (CUDA build) pays a fixed cost for every step of >= 32 tokens (the host layers'
    weights copied to the GPU): the fit separates it from the per-token prefill cost, and the replica model
    charges it on exactly those steps, decode-only runs included."""
    true = StepModel(c_step=0.07, c_prefill=2.5e-3, c_decode=5e-3, c_kv_read=1e-5, c_attn=0.0, c_offload=0.5)
    limits = EngineLimits(batch_slots=40, step_tokens=256, kv_tokens=40 * 2048, max_context=2048,
                          offload_min_batch=32)
    rng = np.random.default_rng(3)
    work, times = [], []
    for _ in range(300):
        dec, chunk = int(rng.integers(0, 9)), int(rng.choice([0, 8, 16, 24, 32, 64, 128, 256]))
        if dec + chunk == 0:
            continue
        w = StepWork(1, chunk, dec, dec * 500, 0, 0, 0, float(limits.offloaded(chunk + dec)))
        work.append(w)
        times.append(true.time(w) * (1 + rng.normal(0, 0.01)))
    fit = fit_step_model(work, times)
    assert fit.model.c_offload == pytest.approx(0.5, rel=0.05)
    assert fit.model.c_prefill == pytest.approx(2.5e-3, rel=0.05)
    assert not limits.offloaded(31) and limits.offloaded(32)
    assert not EngineLimits(batch_slots=8, step_tokens=256, kv_tokens=4096, max_context=512).offloaded(10_000)
    # one 20-token prompt alone: one prefill step below the threshold, then decode steps of one sequence
    alone = simulate(true, limits, [SimRequest(0.0, 20, 3)])[0]
    assert alone.ttft == pytest.approx(true.step_time(20, 0, 0, 0))
    # 40 sequences decoding together: every decode step is offloaded (the fast-forward path charges it too)
    reqs = simulate(true, limits, [SimRequest(0.0, 1, 5) for _ in range(40)])
    first = true.step_time(40, 0, 0, 0, offloaded=True)
    steps = [true.step_time(0, 0, 40, 40 * (1 + g), offloaded=True) for g in range(1, 5)]
    assert max(r.e2e for r in reqs) == pytest.approx(first + sum(steps))


def test_prefill_goes_to_the_first_token_due_soonest_with_an_allowance_per_prompt_token():
    """The engine's prefill order, modelled: a 20-token prompt 0.1 s after a 3,000-token one waits out the long
    prefill oldest-first; with 5 s of TTFT allowance per 1k prompt tokens its chunk goes first, and the long
    prompt's first token comes one short chunk later than alone."""
    reqs = lambda: [SimRequest(0.0, 3000, 4, rid=0), SimRequest(0.1, 20, 4, rid=1)]  # noqa: E731
    fcfs = simulate(TRUE, WIDE, reqs())
    edf = simulate(TRUE, WIDE.model_copy(update={"prefill_allowance_s_per_1k": 5.0}), reqs())
    assert fcfs[1].first_token >= fcfs[0].first_token  # behind the whole long prefill (its last chunk)
    assert edf[1].first_token < edf[0].first_token
    assert edf[1].ttft < fcfs[1].ttft / 3
    assert edf[0].ttft == pytest.approx(fcfs[0].ttft, rel=0.1)  # the long one hardly notices
    same = [SimRequest(0.01 * k, 500, 8, rid=k) for k in range(6)]  # equal sizes: the order stays arrival order
    a = simulate(TRUE, WIDE, [SimRequest(r.arrival, r.input_tokens, r.output_tokens, rid=r.rid) for r in same])
    b = simulate(TRUE, WIDE.model_copy(update={"prefill_allowance_s_per_1k": 5.0}), same)
    assert [r.first_token for r in a] == pytest.approx([r.first_token for r in b])


def test_steps_with_decoding_sequences_keep_to_their_own_token_budget():
    """decode_step_tokens (llama.cpp's n_batch_decoding): while one request decodes, a 1,000-token prompt beside it
    is fed 32 tokens a step, so the decoding request's steps stay short; its time per token falls and the long
    prompt's first token comes later."""
    reqs = lambda: [SimRequest(0.0, 16, 10, rid=0), SimRequest(0.001, 1000, 4, rid=1)]  # noqa: E731
    full = simulate(TRUE, WIDE, reqs())
    capped = simulate(TRUE, WIDE.model_copy(update={"decode_step_tokens": 32}), reqs())
    assert capped[0].tpot < full[0].tpot
    assert capped[1].ttft > full[1].ttft
    alone = [SimRequest(0.0, 1000, 4)]  # nothing decodes: full steps either way
    assert simulate(TRUE, WIDE.model_copy(update={"decode_step_tokens": 32}), alone)[0].ttft == pytest.approx(
        simulate(TRUE, WIDE, [SimRequest(0.0, 1000, 4)])[0].ttft)

def test_fit_rejects_bad_input():
    with pytest.raises(ValueError):
        fit_step_model([StepWork(1, 1, 0, 0, 1)], [0.0])
    with pytest.raises(ValueError):
        fit_step_model([], [])


def test_zero_load_ttft_is_the_prefill_time():
    """One request alone: TTFT is its prefill steps (chunks of step_tokens), then one step per further token."""
    req = simulate(TRUE, WIDE, [SimRequest(5.0, 600, 10)])[0]
    chunks = [(0, 256), (256, 256), (512, 88)]
    prefill = sum(TRUE.step_time(n, attention_pairs(c, n), 0, 0) for c, n in chunks)
    assert req.ttft == pytest.approx(prefill)
    decode = sum(TRUE.step_time(0, 0, 1, 600 + g) for g in range(1, 10))  # generated g tokens before step
    assert req.e2e == pytest.approx(prefill + decode)  # fast-forwarded decode run = the step-by-step sum


def test_one_slot_fixed_step_is_md1():
    """One slot, every request one step of fixed length D: the mean wait is M/D/1's rho*D / (2 (1 - rho))."""
    d = 0.01
    model = StepModel(c_step=d, c_prefill=0, c_decode=0, c_kv_read=0, c_attn=0)
    limits = EngineLimits(batch_slots=1, step_tokens=10_000, kv_tokens=10**6, max_context=10**5)
    for lam in (20.0, 60.0):
        t = np.cumsum(np.random.default_rng(0).exponential(1 / lam, 40_000))
        done = simulate(model, limits, [SimRequest(float(x), 10, 1) for x in t])
        wait = np.mean([r.ttft - d for r in done])
        rho = lam * d
        assert wait == pytest.approx(rho * d / (2 * (1 - rho)), rel=0.05), lam


def test_queue_bound_refuses_and_kv_bounds_admission():
    limits = EngineLimits(batch_slots=1, step_tokens=64, kv_tokens=1000, max_context=1000, max_waiting=1)
    done = simulate(TRUE, limits, [SimRequest(0.0, 10, 50, rid=k + 1) for k in range(3)])
    assert [r.refused for r in done] == [False, False, True]
    # two slots but KV for one request at a time: the second waits for the first to finish
    limits = EngineLimits(batch_slots=2, step_tokens=64, kv_tokens=600, max_context=600)
    a, b = simulate(TRUE, limits, [SimRequest(0.0, 100, 400, rid=1), SimRequest(0.0, 100, 400, rid=2)])
    assert b.first_token > a.end


def test_cancel_takes_back_a_request_without_its_first_token_and_frees_its_slot():
    """The ingress stops waiting (server.max_wait_s): a request queued or still feeding its prompt leaves, with
    its slot and KV reservation; one that has its first token runs on."""
    step = StepModel(c_step=1.0, c_prefill=0, c_decode=0, c_kv_read=0, c_attn=0)
    limits = EngineLimits(batch_slots=1, step_tokens=100, kv_tokens=1000, max_context=1000)
    rep = Replica(step, limits)
    long_, queued, last = (SimRequest(0.0, 250, 2, rid=1), SimRequest(0.0, 10, 2, rid=2), SimRequest(0.0, 10, 2, rid=3))
    for r in (long_, queued, last):
        rep.submit(r)
    rep.advance(1.5)  # two of long_'s three prompt steps done
    assert long_.first_token is None and rep.kv_reserved == 252
    assert rep.cancel(2) and rep.cancel(1) and not rep.cancel(99)
    assert rep.kv_reserved == 0 and not rep.running
    done = rep.run_to_completion()
    assert [r.rid for r in done] == [3]
    assert last.first_token == pytest.approx(3.0) and last.end == pytest.approx(4.0)  # it starts at once
    rep = Replica(step, limits)
    rep.submit(SimRequest(0.0, 10, 5, rid=1))
    rep.advance(1.5)
    assert not rep.cancel(1)  # it has its first token
    assert rep.run_to_completion()[0].end == pytest.approx(5.0)


def test_advance_in_pieces_equals_one_run():
    reqs = lambda: [SimRequest(float(t), 300, 40, rid=k + 1)  # noqa: E731
                    for k, t in enumerate(np.cumsum(np.random.default_rng(3).exponential(0.05, 200)))]
    whole = simulate(TRUE, WIDE, reqs())
    rep = Replica(TRUE, WIDE)
    for r in reqs():
        rep.submit(r)
    for until in np.arange(0.0, 60.0, 0.37):
        rep.advance(float(until))
    pieces = rep.run_to_completion()
    got = np.array([(r.first_token, r.end) for r in pieces])
    assert got == pytest.approx(np.array([(r.first_token, r.end) for r in whole]))


@pytest.mark.parametrize("slo, ok", [
    (SLO(ttft_ms=100), True), (SLO(ttft_ms=50), False),
    (SLO(ttft_ms=50, ttft_ms_per_1k_input=100), True),  # 50 + 100 x 1000/1000 = 150 ms for the 1000-token prompts
    (SLO(tpot_ms=20), True), (SLO(tpot_ms=20, tpot_quantile=0.5), True), (SLO(tpot_ms=10, tpot_quantile=0.95), False),
    (SLO(normalized_ms=30), True), (SLO(normalized_ms=10), False),  # 10.7 ms per token for 9 of 10
    (SLO(ttft_ms=100, tpot_ms=5), False),
])
def test_slo_kinds(slo, ok):
    # 10 requests: TTFT 80 ms (one 200 ms), TPOT 10 ms (one 40 ms), 100 output tokens, 1000 input tokens
    ttft = np.array([0.08] * 9 + [0.2])
    tpot = np.array([0.01] * 9 + [0.04])
    out = np.full(10, 100.0)
    s = Sample(ttft=ttft, tpot=tpot, e2e=ttft + tpot * 99, input_tokens=np.full(10, 1000.0), output_tokens=out)
    assert meets(slo, s) is ok, verdicts(slo, s)


def test_capacity_falls_with_size_and_rises_with_a_looser_slo():
    tight, loose = SLO(ttft_ms=500, tpot_ms=50), SLO(ttft_ms=2000, tpot_ms=100)
    grid = derive_max_rate(TRUE, WIDE, tight, [128, 1024], [64, 512])
    assert grid[0][0] > grid[0][1] and grid[0][0] > grid[1][0]
    assert bucket_capacity(TRUE, WIDE, loose, 1024, 512) > grid[1][1]
    assert bucket_capacity(TRUE, WIDE, SLO(ttft_ms=1), 1024, 64) is None  # alone already too slow
    assert bucket_capacity(TRUE, WIDE, tight, 4000, 200) is None  # does not fit the context


def test_capacity_matches_md1_bound_for_one_slot():
    """One slot, fixed 10 ms per request, TTFT p90 <= 50 ms: capacity is where the M/D/1 waiting time's 90th
    percentile reaches 40 ms, well below the 100 req/s the server could do flat out."""
    model = StepModel(c_step=0.01, c_prefill=0, c_decode=0, c_kv_read=0, c_attn=0)
    limits = EngineLimits(batch_slots=1, step_tokens=10_000, kv_tokens=10**6, max_context=10**5)
    cap = bucket_capacity(model, limits, SLO(ttft_ms=50), 10, 1, requests=2000)
    assert 40 < cap < 90


def test_for_slo_rederives_v2_and_refuses_v1_with_another_slo(tmp_path):
    from rayhet.profiles import Profile

    base = Profile.model_validate(_profile_dict(version=1))
    assert for_slo(base, SLO(tpot_ms=50)) is base  # same SLO: as measured
    with pytest.raises(ValueError, match="no engine model"):
        for_slo(base, SLO(tpot_ms=20))
    v2 = Profile.model_validate(_profile_dict(version=2, engine_model=_engine_model()))
    tighter = for_slo(v2, SLO(tpot_ms=20, ttft_ms=300))
    assert tighter.slo.tpot_ms == 20 and tighter.max_rate != v2.max_rate
    assert all(r is None or r > 0 for row in tighter.max_rate for r in row)


def _engine_model() -> dict:
    return {"limits": WIDE.model_dump(), "step": TRUE.model_dump(), "mean_abs_rel_error": 0.05,
            "max_abs_rel_error": 0.2}


def _profile_dict(version: int, **extra) -> dict:
    return {
        "schema_version": version, "model": "m", "pool": "cpu", "engine": "llama_cpp", "engine_version": "x",
        "hardware": {"vcpus": 2}, "price_per_hour": 0.1, "slo": {"tpot_ms": 50}, "input_edges": [128, 1024],
        "output_edges": [64, 512], "max_rate": [[1.0, 0.5], [0.5, 0.1]],
        "provenance": {"measured_by": "test", "measured_at": "2026-11-30", "command": "test"}, **extra}


def test_derived_grids_are_kept_on_disk_under_all_they_depend_on(tmp_path, monkeypatch):
    """A second derivation of the same grid reads it back without simulating; another SLO, other limits or a
    damaged file derive again; RAYHET_CAPACITY_CACHE=off keeps nothing."""
    import rayhet.capacity as capacity

    monkeypatch.setenv("RAYHET_CAPACITY_CACHE", str(tmp_path))
    slo = SLO(ttft_ms=1000, tpot_ms=200)
    args = (TRUE, WIDE, slo, [64, 512], [32, 128])
    first = derive_max_rate(*args, requests=200)
    calls = []
    real = capacity.bucket_capacity
    monkeypatch.setattr(capacity, "bucket_capacity", lambda *a, **k: calls.append(a) or real(*a, **k))
    assert derive_max_rate(*args, requests=200) == first and not calls
    derive_max_rate(TRUE, WIDE, SLO(ttft_ms=500, tpot_ms=200), [64, 512], [32, 128], requests=200)
    assert len(calls) == 4  # another SLO: all four buckets again
    narrow = WIDE.model_copy(update={"batch_slots": 2})
    derive_max_rate(TRUE, narrow, slo, [64, 512], [32, 128], requests=200)
    assert len(calls) == 8
    files = sorted(tmp_path.glob("*.json"))
    assert len(files) == 3
    for f in files:
        f.write_text("{damaged")
    assert derive_max_rate(*args, requests=200) == first and len(calls) == 12
    monkeypatch.setenv("RAYHET_CAPACITY_CACHE", "off")
    off = tmp_path / "none"
    derive_max_rate(*args, requests=200)
    assert len(calls) == 16 and not off.exists()


def test_derive_ahead_fills_the_cache_in_parallel_for_what_service_profile_then_reads(tmp_path, monkeypatch):
    """Two profiles' grids for a new SLO, derived in two processes into the disk cache; the service profiles
    read them back without simulating; nothing is derived twice, or with the cache off."""
    from pathlib import Path

    import rayhet.capacity as capacity

    root = Path(__file__).resolve().parents[2]
    paths = [root / "benchmarks/sim/profiles/small.json", root / "benchmarks/sim/profiles/large.json"]
    monkeypatch.setenv("RAYHET_CAPACITY_CACHE", str(tmp_path))
    slo = SLO(ttft_ms=1700, ttft_quantile=0.9, tpot_ms=170)
    assert capacity.derive_ahead(paths, slo, workers=2) == 2
    assert len(list(tmp_path.glob("*.json"))) == 2
    from rayhet.profiles import load_profile

    prof = load_profile(paths[1])  # a row derived by a worker is the one the serial derivation gives
    em = prof.engine_model
    key = capacity._grid_key(em.step_model(), em.engine_limits(), slo, prof.input_edges, prof.output_edges,
                             capacity.REQUESTS, capacity.TOLERANCE, 0)
    cached = capacity._read_grid(key)
    assert cached[-1] == capacity._derive(em.step_model(), em.engine_limits(), slo, prof.input_edges[-1:],
                                          prof.output_edges, capacity.REQUESTS, capacity.TOLERANCE, 0, None)[0]
    monkeypatch.setattr(capacity, "bucket_capacity", lambda *a, **k: pytest.fail("derived again"))
    for p in paths:
        capacity.service_profile(p, slo, "ignore")
    assert capacity.derive_ahead(paths, slo, workers=2) == 0
    monkeypatch.setenv("RAYHET_CAPACITY_CACHE", "off")
    assert capacity.derive_ahead(paths, SLO(ttft_ms=1600, tpot_ms=160), workers=2) == 0


def test_v1_and_v2_profiles_load_and_v1_cannot_carry_v2_fields():
    from rayhet.profiles import parse_profile

    assert parse_profile(_profile_dict(1)).engine_model is None
    assert parse_profile(_profile_dict(2, engine_model=_engine_model())).engine_model.step_model() == TRUE
    with pytest.raises(Exception, match="need schema_version 2"):
        parse_profile(_profile_dict(1, engine_model=_engine_model()))
    bad = _profile_dict(1)
    bad["slo"] = {"normalized_ms": 10}
    with pytest.raises(Exception, match="normalized_ms need schema_version 2"):
        parse_profile(bad)


def test_fast_forward_handles_no_kv_cost():
    model = StepModel(c_step=1e-3, c_prefill=0, c_decode=0, c_kv_read=0, c_attn=0)
    r = simulate(model, WIDE, [SimRequest(0.0, 10, 1000)])[0]
    assert r.e2e == pytest.approx(1000 * 1e-3) and math.isfinite(r.tpot)


def test_rayhet_plan_applies_the_service_slo(tmp_path, capsys):
    """`rayhet plan --slo-*`: a v2 profile is re-derived for the SLO (a tighter one costs more replicas); a v1
    profile measured under another SLO is refused, naming its file."""
    import json

    from rayhet import cli

    v2 = tmp_path / "v2" / "cpu.json"
    v2.parent.mkdir()
    v2.write_text(json.dumps(_profile_dict(2, engine_model=_engine_model())))
    work = tmp_path / "w.csv"
    work.write_text("100,50\n900,400\n" * 50)

    def plan(*args) -> dict:
        assert cli.main(["plan", "--profiles", str(v2.parent), "--workload", str(work), "--rate", "10", "--json", *args]) == 0
        return json.loads(capsys.readouterr().out)["results"][0]["plan"]

    loose = plan("--slo-tpot-ms", "100", "--slo-ttft-ms", "3000")
    tight = plan("--slo-tpot-ms", "10", "--slo-ttft-ms", "300")
    assert tight["replicas"]["cpu"] > loose["replicas"]["cpu"]
    v1 = tmp_path / "v1.json"
    v1.write_text(json.dumps(_profile_dict(1)))
    assert cli.main(["plan", "--profiles", str(v1), "--workload", str(work), "--rate", "1", "--slo-tpot-ms", "20"]) == 2
    err = capsys.readouterr().err
    assert str(v1) in err and "no engine model" in err


def test_extra_passes_follow_llama_cpp_micro_batches():
    from rayhet.perf import extra_passes, micro_batches, pass_features, slot_runs

    one = lambda *ids: [(i, 1) for i in ids]  # noqa: E731 - decode tokens
    assert extra_passes([], 256) == 0 and extra_passes(one(0, 1, 2), 256) == 0
    assert extra_passes(one(0, 2, 4, 5), 256) == 2 and slot_runs([5, 0, 2, 4]) == [1, 1, 2]
    assert micro_batches(one(0, 2, 4, 5), 256) == [1, 1, 2] and pass_features([1, 1, 2]) == (2, 1)
    # batch order matters: ids must rise by one along the batch, so an unsorted full batch takes several passes
    assert extra_passes(one(2, 0, 1), 256) == 1 and extra_passes(one(5, 0, 1, 2, 3, 4, 6, 7), 256) == 1
    assert extra_passes(one(7, 6, 5, 4), 256) == 3
    # a prompt chunk beside decode tokens: one token of it rides with them, the rest takes a pass of its own
    assert extra_passes([(0, 1), (1, 1), (2, 100)], 256) == 1
    # two chunks: equal shares while both last, then the longer one's rest
    assert extra_passes([(0, 50), (1, 100)], 256) == 1 and extra_passes([(0, 100), (1, 100)], 256) == 0
    # the token budget bounds a pass: 2 sequences x 100 tokens in passes of at most 64 tokens
    assert extra_passes([(0, 100), (1, 100)], 64) == 3
    # the replica model charges them where the engine does: slots with gaps after an early finisher
    model = StepModel(c_step=1e-3, c_prefill=0, c_decode=0, c_kv_read=0, c_attn=0, c_pass=1e-3)
    limits = EngineLimits(batch_slots=3, step_tokens=64, kv_tokens=10**5, max_context=4096, passes_per_slot_run=True)
    a, b, c = simulate(model, limits, [SimRequest(0.0, 10, 100, rid=1), SimRequest(0.0, 10, 5, rid=2),
                                       SimRequest(0.0, 10, 100, rid=3)])
    # after b (slot 1) finishes, a and c (slots 0 and 2) decode in two passes: 2 ms a step instead of 1
    assert a.e2e == pytest.approx(b.e2e + 95 * 2e-3)


def test_speed_sensitivity_flags_buckets_at_the_slos_edge():
    """A bucket bound by throughput keeps about 1/1.1 of its capacity on a 10 % slower engine; one whose single
    request already uses 95 % of the TTFT budget keeps nothing, and is never chosen as a held-out check."""
    from types import SimpleNamespace

    from rayhet.capacity import speed_sensitivity
    from rayhet.profiling.engine_model import held_out_buckets
    from rayhet.profiling.model_method import _checkable

    alone = simulate(TRUE, WIDE, [SimRequest(0.0, 2000, 16)])[0]
    slo = SLO(ttft_ms=alone.ttft * 1000 / 0.95, ttft_quantile=0.9, tpot_ms=50)
    short = bucket_capacity(TRUE, WIDE, slo, 16, 256)
    assert speed_sensitivity(TRUE, WIDE, slo, 16, 256, short) == pytest.approx(1 / 1.1, abs=0.06)
    edge = bucket_capacity(TRUE, WIDE, slo, 2000, 16)
    assert edge is not None and speed_sensitivity(TRUE, WIDE, slo, 2000, 16, edge) < 0.3
    settings = SimpleNamespace(slo=slo, input_edges=[16, 2000], output_edges=[16, 256])
    grid = derive_max_rate(TRUE, WIDE, slo, settings.input_edges, settings.output_edges)
    picks = held_out_buckets(2, 2, _checkable(TRUE, WIDE, settings, grid, 3), 3)
    assert picks and {i for i, _ in picks} == {0}
    assert held_out_buckets(2, 2, _checkable(TRUE, WIDE, settings, grid, 0), 0) == []


def test_stratified_gaps_are_exponential_with_one_draw_per_slice():
    from rayhet.capacity import arrival_gaps

    g = arrival_gaps(500, seed=3)
    u = np.sort(-np.expm1(-g))  # back to uniforms: one in each of the 500 slices
    assert np.array_equal(np.floor(u * 500).astype(int), np.arange(500))
    assert g.mean() == pytest.approx(1.0, abs=0.01)
    assert not np.all(np.diff(g) > 0)  # in random order, not sorted
    assert not np.array_equal(g, arrival_gaps(500, seed=4))


def test_capacity_hardly_depends_on_the_draw():
    """With stratified gaps a bucket's derived capacity moves a few % between seeds (300 plain draws: +-13 %)."""
    slo = SLO(ttft_ms=1000, ttft_quantile=0.9, tpot_ms=10)
    caps = [bucket_capacity(TRUE, WIDE, slo, 256, 64, seed=s) for s in range(5)]
    assert max(caps) / min(caps) < 1.12


def _power_setup():
    from rayhet.profiling.grid import Bucket

    slo = SLO(ttft_ms=1000, ttft_quantile=0.9, tpot_ms=10)
    b = Bucket(0, 0, 256, 64)
    return slo, b, bucket_capacity(TRUE, WIDE, slo, 256, 64)


def test_check_power_grows_with_requests_and_rejects_a_wrong_prediction():
    from rayhet.profiling.power import check_power

    slo, b, cap = _power_setup()
    few = check_power(TRUE, WIDE, slo, b, cap, 10, 3.0, draws=60)
    many = check_power(TRUE, WIDE, slo, b, cap, 120, 3.0, draws=60)
    assert many > few and many >= 0.8
    # a prediction 2x off: a perfect model's engine almost never confirms it, whatever the sample size
    assert check_power(TRUE, WIDE, slo, b, 2 * cap, 120, 3.0, draws=60) < 0.1
    assert check_power(TRUE, WIDE, slo, b, cap / 2, 120, 3.0, draws=60) < 0.1


def test_plan_check_takes_the_fewest_requests_that_are_decisive_in_time():
    from rayhet.profiling.power import plan_check
    from rayhet.profiling.search import check_rates

    slo, b, cap = _power_setup()
    plan = plan_check(TRUE, WIDE, slo, b, cap, min_warmup_s=3.0, max_seconds=3600, ladder=(10, 120, 240), draws=60)
    assert plan.requests == 120 and plan.power >= 0.9  # 10 is not decisive, 120 is: 240 never tried
    lo, hi = check_rates(cap)
    assert plan.seconds > 120 / lo + 120 / hi
    # a budget that holds only the smallest: that one, with its (low) power
    ten = plan_check(TRUE, WIDE, slo, b, cap, min_warmup_s=3.0, max_seconds=math.inf, ladder=(10,), draws=60)
    short = plan_check(TRUE, WIDE, slo, b, cap, min_warmup_s=3.0, max_seconds=ten.seconds * 1.01,
                       ladder=(10, 120), draws=60)
    assert short == ten and short.power < 0.9
    assert plan_check(TRUE, WIDE, slo, b, cap, min_warmup_s=3.0, max_seconds=ten.seconds * 0.99, ladder=(10,),
                      draws=60) is None


def test_held_out_picks_stand_in_for_buckets_whose_check_is_not_decisive():
    from rayhet.profiling.engine_model import held_out_buckets

    every = lambda i, j: True  # noqa: E731
    assert held_out_buckets(3, 3, every, 3) == [(0, 2), (1, 1), (2, 0)]
    # the long-output corner cannot be checked in time: its nearest neighbour along the order stands in
    picks = held_out_buckets(3, 3, every, 3, usable=lambda i, j: (i, j) != (0, 2))
    assert len(picks) == 3 and (0, 2) not in picks and (1, 1) in picks and (2, 0) in picks
    assert held_out_buckets(3, 3, every, 3, usable=lambda i, j: False) == []


def test_held_out_check_verdict():
    from rayhet.profiles import HeldOut

    def h(passed, failed):
        return HeldOut(input_bucket=0, output_bucket=0, predicted_rate=1.0, measured_rate=passed,
                       measured_fail_rate=failed)

    assert h(1 / 1.15, 1 / 0.85).check == "passed"
    assert h(0.5, 1 / 1.15).check == "failed"  # fails below the band: the prediction is too high
    assert h(1 / 0.85, None).check == "failed"  # passes above it: too low
    assert h(1 / 1.15, None).check is None  # nothing failed yet: undecided
