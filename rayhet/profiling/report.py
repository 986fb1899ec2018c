"""Report: assemble the profile JSON from a sweep (capacities derived, hardware and provenance recorded), and say
what its held-out checks found."""

from __future__ import annotations

import os
import platform
import shlex
import sys
from datetime import datetime, timezone
from pathlib import Path

from rayhet.profiles import Hardware, Profile, Provenance
from rayhet.profiling.capacity import MIN_THROUGHPUT_RATIO, derive_max_rate, quantile_key
from rayhet.profiling.grid import representative
from rayhet.profiling.sweep import MEASURED, SweepSettings, SweepState


def cpu_model() -> str:
    """The CPU model name from /proc/cpuinfo (Linux), else what platform says."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def host_memory_gb() -> float | None:
    try:
        return round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1e9, 1)
    except (ValueError, OSError, AttributeError):
        return None


def settings_note(settings: SweepSettings) -> str:
    s = settings.search
    return (
        f"Measured by `rayhet profile`: per bucket, one request alone, then open-loop Poisson arrivals (count fixed "
        f"per interval) of prompts of exactly the bucket's upper-edge input tokens (random token ids) and "
        f"ignore_eos outputs of exactly its upper-edge output tokens. Rate search: exponential bracket x{s.growth:g} "
        f"from 1/(one request's latency), then geometric bisection to {s.tolerance:.0%}, at most {s.max_points} "
        f"points. Each point: warm-up >= max({settings.min_warmup_s:g} s, one request's latency) excluded, then >= "
        f"{settings.min_requests} requests and >= {settings.min_duration_s:g} s (window <= {settings.max_window_s:g} s). "
        f"A point meets the SLO if mean TPOT and TTFT quantile are within it, achieved >= "
        f"{MIN_THROUGHPUT_RATIO:.0%} of offered, and no request failed; max_rate = the highest passing rate "
        f"(rayhet.profiling.capacity.derive_max_rate over `sweep`)."
    )


def bucket_notes(state: SweepState, settings: SweepSettings) -> str:
    """One line per bucket that is null or cut short, saying why."""
    lines = []
    for key, status in sorted(state.status.items(), key=lambda kv: tuple(map(int, kv[0].split(",")))):
        if status.startswith(MEASURED):
            continue
        i, j = map(int, key.split(","))
        size = f"in {representative(settings.input_edges, i)} / out {representative(settings.output_edges, j)}"
        lines.append(f"({i},{j}) {size}: {status}")
    return "; ".join(lines)


def build_profile(
    state: SweepState,
    settings: SweepSettings,
    *,
    model: str,
    pool: str,
    engine: str,
    engine_version: str,
    hardware: Hardware,
    price_per_hour: float,
    price_source: str | None,
    notes: str | None = None,
    argv: list[str] | None = None,
) -> Profile:
    """The profile of a (possibly partial) sweep; `max_rate` is derived from the sweep, never copied."""
    n_in, n_out = len(settings.input_edges), len(settings.output_edges)
    took = f"Sweep took {state.elapsed_s / 60:.1f} min ({len(state.points)} points)."
    per_bucket = bucket_notes(state, settings)
    return Profile(
        model=model,
        pool=pool,
        engine=engine,
        engine_version=engine_version,
        hardware=hardware,
        price_per_hour=price_per_hour,
        price_source=price_source,
        slo=settings.slo,
        input_edges=settings.input_edges,
        output_edges=settings.output_edges,
        max_rate=derive_max_rate(state.points, n_in, n_out),
        provenance=Provenance(
            measured_by="rayhet profile",
            measured_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
            command=shlex.join(argv if argv is not None else ["rayhet", *sys.argv[1:]]),
            notes=" ".join(x for x in [notes, took, settings_note(settings),
                                       f"Null or partial buckets: {per_bucket}." if per_bucket else ""] if x),
        ),
        sweep=state.points,
    )


def held_out_lines(profile) -> list[str]:
    """What the held-out checks found, for people: prediction against measurement, then each measured point
    against its twin (the same arrivals through the model)."""
    lines = []
    for h in profile.engine_model.held_out:
        name = f"{profile.input_edges[h.input_bucket]}/{profile.output_edges[h.output_bucket]}"
        line = (f"held out {name}: predicted {_r(h.predicted_rate)} req/s, measured {_r(h.measured_rate)}"
                + (f" ({_r(h.measured_fail_rate)} failed)" if h.measured_fail_rate else "")
                + (f": {h.error:+.0%}" if h.error is not None else ""))
        if h.check is not None:
            line += f"; within ±15 %: {'yes' if h.check == 'passed' else 'NO'}"
        if h.requests_per_point:
            line += (f" ({h.requests_per_point} requests a point"
                     + (f"; a perfect model passes {h.check_power:.0%} of such checks)" if h.check_power is not None
                        else ")"))
        if h.error_at_check is not None:
            line += (f"; at the check's speed ({_drift_words(h.speed_drift)}) predicted {_r(h.predicted_rate_at_check)}"
                     f" ({h.error_at_check:+.0%})")
        lines.append(line)
        points = [p for p in profile.sweep if (p.input_bucket, p.output_bucket) == (h.input_bucket, h.output_bucket)]
        if h.twins and len(h.twins) == len(points):
            agree = sum(p.meets_slo == t.meets_slo for p, t in zip(points, h.twins))
            lines.append(f"  the same arrivals through the model: verdicts agree at {agree} of {len(points)} rates; "
                         f"capacity at these rates: engine {_r(h.measured_rate)}, model {_r(h.twin_rate)}")
            key = quantile_key(profile.slo.ttft_quantile)
            at_speed = len(h.twins_at_speed) == len(points) and len(h.speed_during) == len(points)
            for k, (p, t) in enumerate(zip(points, h.twins)):
                lines.append(f"    {p.offered_rate:.3g} req/s  engine {_verdict(p, key)}  model {_verdict(t, key)}")
                if at_speed and h.twins_at_speed[k] is not None:  # the engine's steps said how fast the host ran
                    lines.append(f"      the engine ran at {_drift_words(h.speed_during[k])} the fit's speed; the model "
                                 f"at that speed: {_verdict(h.twins_at_speed[k], key)}")
    return lines


def _verdict(p, ttft_key: str) -> str:
    tpot, ttft = p.tpot_ms.get("mean"), p.ttft_ms.get(ttft_key)
    return (f"{'pass' if p.meets_slo else 'FAIL'} (TPOT {tpot:.0f} ms, TTFT {ttft_key} {ttft:.0f} ms, kept up "
            f"{p.achieved_rate / p.offered_rate:.0%})" if tpot is not None and ttft is not None
            else ("pass" if p.meets_slo else "FAIL"))


def _drift_words(drift: dict | None) -> str:
    return ", ".join(f"{k} {v:.2f}x" for k, v in (drift or {}).items())


def _r(rate: float | None) -> str:
    return "-" if rate is None else f"{rate:.3g}"
