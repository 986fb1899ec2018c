"""Traces: the requests a simulation replays — arrival times and sizes — read, reshaped or generated.

Sources:
- an **Azure-format** CSV (`TIMESTAMP,ContextTokens,GeneratedTokens`, the Azure LLM inference traces):
  arrivals and sizes as recorded;
- **size pairs** (`input_tokens,output_tokens`, Mélange's LMSYS sample) with a constant rate or a rate
  curve (CSV of `time_s,req_per_s`, piecewise linear): Poisson arrivals, sizes drawn from the pairs;
- **a diurnal day** (`diurnal()`): a 24-hour rate curve, mean `mean_rate`, peak:trough `peak_to_trough`,
  the peak at `peak_hour`, plus `bursts` short surges of `burst_factor` x the curve; Poisson arrivals,
  sizes drawn from a sample. Seeded, so every benchmark built on it is reproducible, and written as an
  Azure-format CSV (`write_azure`) that any tool can read.

Reshaping: `speedup` compresses time (a day in an hour at 24: rates x 24); `rate_scale` keeps the
timeline and scales the rate (below 1: each request kept with that probability; above 1: each request
repeated floor/ceil times, copies spread over the gap to the next arrival).

Arrays, not objects: a million-request day fits in a few tens of MB and loads in about a second.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np

from rayhet.errors import WorkloadError
from rayhet.workload import read_workload

DAY_S = 86_400.0


@dataclass
class Trace:
    """Requests sorted by arrival: seconds from the start, prompt tokens, output tokens (numpy arrays)."""

    arrival: np.ndarray
    input_tokens: np.ndarray
    output_tokens: np.ndarray
    source: str = ""

    def __post_init__(self) -> None:
        order = np.argsort(self.arrival, kind="stable")
        self.arrival = np.asarray(self.arrival, dtype=float)[order]
        self.input_tokens = np.maximum(np.asarray(self.input_tokens, dtype=np.int64)[order], 1)
        self.output_tokens = np.maximum(np.asarray(self.output_tokens, dtype=np.int64)[order], 1)
        if len(self.arrival) and self.arrival[0] < 0:
            raise WorkloadError(f"{self.source}: arrivals before time 0")

    def __len__(self) -> int:
        return len(self.arrival)

    @property
    def duration_s(self) -> float:
        return float(self.arrival[-1]) if len(self) else 0.0

    def sizes(self) -> np.ndarray:
        """(n, 2) input/output tokens, as `rayhet.workload` samples."""
        return np.stack([self.input_tokens, self.output_tokens], axis=1)

    def window(self, start: float, end: float) -> "Trace":
        lo, hi = np.searchsorted(self.arrival, [start, end], side="left")
        return Trace(self.arrival[lo:hi], self.input_tokens[lo:hi], self.output_tokens[lo:hi], self.source)

    def rate_per_window(self, window_s: float) -> np.ndarray:
        """Arrivals per second in consecutive windows of `window_s` from time 0."""
        n = max(1, math.ceil(self.duration_s / window_s + 1e-9))
        counts = np.bincount(np.minimum((self.arrival // window_s).astype(int), n - 1), minlength=n)
        return counts / window_s


def reshape(trace: Trace, *, speedup: float = 1.0, rate_scale: float = 1.0, seed: int = 0) -> Trace:
    """`speedup` compresses time; `rate_scale` scales the rate on the same timeline (see the module doc)."""
    if speedup <= 0 or rate_scale <= 0:
        raise WorkloadError(f"speedup and rate_scale must be > 0 (got {speedup}, {rate_scale})")
    t, i, o = trace.arrival / speedup, trace.input_tokens, trace.output_tokens
    if rate_scale != 1.0 and len(t):
        rng = np.random.default_rng(seed)
        copies = np.floor(rate_scale) + (rng.random(len(t)) < rate_scale - np.floor(rate_scale))
        copies = copies.astype(int)
        idx = np.repeat(np.arange(len(t)), copies)
        gap = np.diff(t, append=t[-1] + (t[-1] - t[0]) / max(len(t) - 1, 1) if len(t) > 1 else t[-1] + 1.0)
        first = np.r_[True, idx[1:] != idx[:-1]]  # each request's first copy stays where it was
        shift = np.where(first, 0.0, rng.random(len(idx)) * gap[idx])
        t, i, o = t[idx] + shift, i[idx], o[idx]
    return Trace(t, i, o, trace.source + (f" x{speedup:g} speed" if speedup != 1 else "")
                 + (f" x{rate_scale:g} rate" if rate_scale != 1 else ""))


def from_azure(path: str | Path) -> Trace:
    """An Azure-format trace as recorded (times relative to its first request)."""
    w = read_workload(path, "azure")
    return Trace(w.times, w.samples[:, 0], w.samples[:, 1], str(path))


def read_rate_curve(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """(times in s, req/s) from a CSV of `time_s,req_per_s` rows (a header row is skipped)."""
    path = Path(path)
    if not path.is_file():
        raise WorkloadError(f"{path}: no such rate-curve file")
    ts, rs = [], []
    with path.open(newline="") as f:
        for line, row in enumerate(csv.reader(f), start=1):
            if not row or not "".join(row).strip():
                continue
            try:
                t, r = float(row[0]), float(row[1])
            except (ValueError, IndexError):
                if line == 1:
                    continue  # a header
                raise WorkloadError(f"{path}:{line}: expected time_s,req_per_s numbers, got {row}") from None
            if r < 0 or not math.isfinite(r) or not math.isfinite(t):
                raise WorkloadError(f"{path}:{line}: the rate must be a finite number >= 0, got {r}")
            ts.append(t)
            rs.append(r)
    if len(ts) < 1 or any(b <= a for a, b in zip(ts, ts[1:])):
        raise WorkloadError(f"{path}: needs at least one row, with strictly increasing times")
    return np.asarray(ts), np.asarray(rs)


def poisson_arrivals(times: np.ndarray, rates: np.ndarray, duration_s: float, rng: np.random.Generator) -> np.ndarray:
    """A Poisson process whose rate follows the piecewise-linear curve (times, rates) over [0, duration_s),
    by thinning a homogeneous one at the curve's maximum (vectorised: a day of a million arrivals in a second)."""
    peak = float(np.max(rates)) if len(rates) else 0.0
    if peak <= 0 or duration_s <= 0:
        return np.zeros(0)
    n = rng.poisson(peak * duration_s)
    t = np.sort(rng.uniform(0.0, duration_s, n))
    keep = rng.random(n) * peak < np.interp(t, times, rates)
    return t[keep]


def from_sizes(sizes: np.ndarray, times: np.ndarray, rates: np.ndarray, duration_s: float, *, seed: int = 0,
               source: str = "") -> Trace:
    """Poisson arrivals following the rate curve, sizes drawn (with replacement) from `sizes` (n, 2)."""
    sizes = np.asarray(sizes)
    if sizes.ndim != 2 or sizes.shape[1] != 2 or not len(sizes):
        raise WorkloadError(f"{source}: sizes must be a non-empty (n, 2) array")
    rng = np.random.default_rng(seed)
    t = poisson_arrivals(np.asarray(times, dtype=float), np.asarray(rates, dtype=float), duration_s, rng)
    pick = rng.integers(0, len(sizes), len(t))
    return Trace(t, sizes[pick, 0], sizes[pick, 1], source)


def diurnal_curve(*, mean_rate: float, peak_to_trough: float = 4.0, peak_hour: float = 14.0,
                  duration_s: float = DAY_S, bursts: int = 0, burst_factor: float = 3.0, burst_s: float = 300.0,
                  seed: int = 0, step_s: float = 60.0) -> tuple[np.ndarray, np.ndarray]:
    """A day's rate curve: a cosine over 24 h between trough and peak (ratio `peak_to_trough`, mean
    `mean_rate` over a whole day, highest at `peak_hour`), times `burst_factor` during `bursts` surges of
    `burst_s` at seeded random times. Sampled every `step_s` (the arrivals interpolate linearly)."""
    if mean_rate <= 0 or peak_to_trough < 1:
        raise WorkloadError(f"diurnal: mean_rate must be > 0 and peak_to_trough >= 1 (got {mean_rate}, {peak_to_trough})")
    amp = (peak_to_trough - 1) / (peak_to_trough + 1)  # mean*(1+amp) / mean*(1-amp) = peak_to_trough
    t = np.arange(0.0, duration_s + step_s, step_s)
    r = mean_rate * (1 + amp * np.cos(2 * math.pi * (t / 3600.0 - peak_hour) / 24.0))
    rng = np.random.default_rng(seed + 7919)
    for start in rng.uniform(0, max(duration_s - burst_s, 0.0), bursts):
        r = np.where((t >= start) & (t < start + burst_s), r * burst_factor, r)
    return t, r


def write_azure(trace: Trace, path: str | Path, start: datetime = datetime(2026, 1, 1)) -> Path:
    """The trace as an Azure-format CSV (7 fractional digits, as Azure writes them)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["TIMESTAMP", "ContextTokens", "GeneratedTokens"])
        for t, i, o in zip(trace.arrival, trace.input_tokens, trace.output_tokens):
            stamp = start + timedelta(seconds=float(t))
            w.writerow([stamp.strftime("%Y-%m-%d %H:%M:%S.") + f"{stamp.microsecond:06d}0", int(i), int(o)])
    return path


def load_trace(path: str | Path, *, rate: float | None = None, rate_curve: str | Path | None = None,
               duration_s: float | None = None, seed: int = 0) -> Trace:
    """What `rayhet simulate --trace` reads: an Azure-format CSV as recorded, or size pairs with `rate`
    (constant, for `duration_s`) or `rate_curve` (its own span, unless `duration_s`)."""
    w = read_workload(path)
    if w.times is not None:
        if rate is not None or rate_curve is not None:
            raise WorkloadError(f"{path}: an Azure-format trace has its own arrival times; --rate and "
                                "--rate-curve are for size pairs (use --rate-scale / --speedup to reshape it)")
        return Trace(w.times, w.samples[:, 0], w.samples[:, 1], str(path))
    if (rate is None) == (rate_curve is None):
        raise WorkloadError(f"{path}: size pairs need an arrival rate: give --rate R (with --duration) or "
                            "--rate-curve CSV")
    if rate is not None:
        if rate <= 0:
            raise WorkloadError(f"--rate must be > 0, got {rate}")
        if not duration_s or duration_s <= 0:
            raise WorkloadError("--rate needs --duration (seconds of arrivals)")
        times, rates = np.array([0.0, duration_s]), np.array([rate, rate])
    else:
        times, rates = read_rate_curve(rate_curve)
        duration_s = duration_s or float(times[-1])
    return from_sizes(w.samples, times, rates, duration_s, seed=seed, source=str(path))
