"""SLO: the latency objectives a service can have, and how a sample of requests is judged against one.

Kinds, any combination of which makes one SLO (every stated part must hold):
- **TTFT** at a quantile: `ttft_ms`, optionally plus `ttft_ms_per_1k_input` per 1,000 prompt tokens (a
  long prompt may take longer to start: the limit of a request is ttft_ms + per_1k * input / 1000).
- **TPOT**: `tpot_ms`, on the mean over requests (default, as Mélange) or at `tpot_quantile`.
- **Normalized latency**: end-to-end time / output tokens (Mélange's and inference-perf's measure), at
  `normalized_quantile`: long prompts are judged by what the whole answer costs per token.

A quantile q holds when at least q of the requests are within their limit (for a fixed limit, the same as
"the q-quantile is within it").
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Sample:
    """Per-request latencies in seconds, and sizes, of the requests being judged (numpy arrays)."""

    ttft: np.ndarray
    tpot: np.ndarray
    e2e: np.ndarray
    input_tokens: np.ndarray
    output_tokens: np.ndarray

    @classmethod
    def of(cls, rows) -> "Sample":
        """From objects with ttft, tpot, e2e (seconds), input_tokens and output_tokens attributes."""
        rows = list(rows)
        return cls(*(np.array([getattr(r, f) for r in rows], dtype=float)
                     for f in ("ttft", "tpot", "e2e", "input_tokens", "output_tokens")))


def _share_within(values: np.ndarray, limits: np.ndarray | float) -> float:
    return float(np.mean(values <= limits)) if len(values) else 1.0


def verdicts(slo, s: Sample) -> dict[str, bool]:
    """Each stated part of `slo` (a rayhet.profiles.SLO) and whether sample `s` meets it."""
    out: dict[str, bool] = {}
    if slo.ttft_ms is not None:
        limit = (slo.ttft_ms + slo.ttft_ms_per_1k_input * s.input_tokens / 1000.0) / 1000.0
        out["ttft"] = _share_within(s.ttft, limit) >= slo.ttft_quantile - 1e-12
    if slo.tpot_ms is not None:
        if slo.tpot_quantile is None:
            out["tpot"] = (float(np.mean(s.tpot)) if len(s.tpot) else 0.0) <= slo.tpot_ms / 1000.0
        else:
            out["tpot"] = _share_within(s.tpot, slo.tpot_ms / 1000.0) >= slo.tpot_quantile - 1e-12
    if slo.normalized_ms is not None:
        per_token = s.e2e / np.maximum(s.output_tokens, 1)
        out["normalized"] = _share_within(per_token, slo.normalized_ms / 1000.0) >= slo.normalized_quantile - 1e-12
    return out


def within(slo, s: Sample) -> np.ndarray:
    """Per request: whether it is within every stated limit (TTFT with its allowance, its own TPOT, its
    normalized latency). The share of True is the SLO *attainment* `rayhet simulate` reports."""
    ok = np.ones(len(s.ttft), dtype=bool)
    if slo.ttft_ms is not None:
        ok &= s.ttft <= (slo.ttft_ms + slo.ttft_ms_per_1k_input * s.input_tokens / 1000.0) / 1000.0
    if slo.tpot_ms is not None:
        ok &= s.tpot <= slo.tpot_ms / 1000.0
    if slo.normalized_ms is not None:
        ok &= s.e2e / np.maximum(s.output_tokens, 1) <= slo.normalized_ms / 1000.0
    return ok


def served_share(arrivals, first_tokens) -> float:
    """How fast a replica took requests in, relative to how fast they arrived: the slope of their sorted
    first-token times over their rank against that of their arrival times (1.0 in steady state; the share
    served when requests wait for a slot and first tokens spread out). Both `rayhet profile` (a measured
    point) and the capacity search (a simulated one) judge keeping up by it.

    First tokens, not completions: completion times also carry each request's decode time, which varies
    with how many others ran beside it; with few long requests (8 of 2000 tokens, 60-120 s each) their
    spread alone read 0.74 of a rate the replica served with no request waiting (TTFT p90 0.14 s).
    Slopes (least squares) rather than first/last times, so that one slow request does not decide it.
    Requests that never got a first token are missing from `first_tokens` (0.0 when fewer than 3 came and
    some are missing)."""
    if len(first_tokens) < 3:
        return 1.0 if len(first_tokens) == len(arrivals) and len(first_tokens) else 0.0
    arrival_slope = np.polyfit(np.arange(len(arrivals)), np.sort(arrivals), 1)[0]
    served_slope = np.polyfit(np.arange(len(first_tokens)), np.sort(first_tokens), 1)[0]
    return 1.0 if served_slope <= 0 else float(arrival_slope / served_slope)


def meets(slo, s: Sample) -> bool:
    """True when every stated part of the SLO holds (an SLO with nothing stated holds trivially)."""
    return all(verdicts(slo, s).values())


def describe(slo) -> str:
    """One line, e.g. 'TTFT p90 <= 1000 ms + 500 ms/1k input, TPOT mean <= 50 ms'."""
    if getattr(slo, "unknown", False):
        return "unknown (not recorded)"
    parts = []
    if slo.ttft_ms is not None:
        extra = f" + {slo.ttft_ms_per_1k_input:g} ms/1k input" if slo.ttft_ms_per_1k_input else ""
        parts.append(f"TTFT p{100 * slo.ttft_quantile:g} <= {slo.ttft_ms:g} ms{extra}")
    if slo.tpot_ms is not None:
        q = "mean" if slo.tpot_quantile is None else f"p{100 * slo.tpot_quantile:g}"
        parts.append(f"TPOT {q} <= {slo.tpot_ms:g} ms")
    if slo.normalized_ms is not None:
        parts.append(f"normalized latency p{100 * slo.normalized_quantile:g} <= {slo.normalized_ms:g} ms/token")
    return ", ".join(parts)
