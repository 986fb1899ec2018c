"""Workloads: request-size samples read from CSV, bucketed on a profile grid into a size distribution.

Two formats are read. `pairs`: two integer columns `input_tokens,output_tokens`, no header (Mélange's
`lmsys-chat-1m.csv`). `azure`: the Azure LLM inference trace, header `TIMESTAMP,ContextTokens,GeneratedTokens`;
its timestamps give the request rate. Buckets are right-closed, as in `rayhet.profiles`.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Literal, Sequence

import numpy as np

from rayhet.errors import WorkloadError

AZURE_COLUMNS = ("TIMESTAMP", "ContextTokens", "GeneratedTokens")


@dataclass
class Workload:
    """Request sizes of a workload and, when the source has timestamps, its mean arrival rate."""

    samples: np.ndarray  # shape (n, 2) int64: input_tokens, output_tokens
    rate: float | None  # req/s measured from timestamps (Azure trace), None for plain pairs
    source: str
    times: np.ndarray | None = None  # arrival of each sample, seconds from the first (Azure trace), else None


@dataclass
class Distribution:
    """Fraction of requests per (input bucket, output bucket) on the grid `input_edges` x `output_edges`."""

    input_edges: list[int]
    output_edges: list[int]
    fractions: np.ndarray  # (len(input_edges), len(output_edges)), sums to 1
    clipped: float = 0.0  # fraction of samples above the last edge in either dimension (see `bucketize`)

    def __post_init__(self) -> None:
        self.fractions = np.asarray(self.fractions, dtype=float)
        shape = (len(self.input_edges), len(self.output_edges))
        if self.fractions.shape != shape:
            raise WorkloadError(f"distribution: fractions have shape {self.fractions.shape}, grid is {shape}")
        if (self.fractions < 0).any() or not np.isfinite(self.fractions).all():
            raise WorkloadError("distribution: fractions must be finite and >= 0")
        total = float(self.fractions.sum())
        if total > 0 and abs(total - 1.0) > 1e-6:
            raise WorkloadError(f"distribution: fractions sum to {total:.6g}, expected 1")
        _check_edges(self.input_edges, "input_edges")
        _check_edges(self.output_edges, "output_edges")


def _check_edges(edges: Sequence[int], name: str) -> None:
    if not len(edges) or any(b <= a for a, b in zip(edges, edges[1:])) or edges[0] < 1:
        raise WorkloadError(f"distribution: {name} must be positive and strictly increasing, got {list(edges)}")


def _parse_time(text: str) -> float:
    # Azure writes 7 fractional digits, which datetime.fromisoformat only reads from Python 3.11 on.
    head, dot, frac = text.strip().partition(".")
    return datetime.fromisoformat(head + (dot + frac[:6] if dot else "")).timestamp()


def _tokens(value: str, where: str, column: str) -> int:
    try:
        n = int(value.strip())
    except ValueError:
        raise WorkloadError(f"{where}: {column} is not an integer: {value!r}") from None
    if n < 0:
        raise WorkloadError(f"{where}: {column} is negative: {n}")
    return n


def _sniff(path: Path) -> Literal["pairs", "azure"]:
    with path.open(newline="") as f:
        first = f.readline()
    return "azure" if "TIMESTAMP" in (c.strip() for c in first.split(",")) else "pairs"


def read_workload(path: str | Path, fmt: Literal["auto", "pairs", "azure"] = "auto") -> Workload:
    """Read request sizes (and, for the Azure trace, the mean rate) from a CSV file."""
    path = Path(path)
    if not path.is_file():
        raise WorkloadError(f"{path}: no such workload file")
    if fmt == "auto":
        fmt = _sniff(path)
    rows: list[tuple[int, int]] = []
    times: list[float] = []
    with path.open(newline="") as f:
        reader = csv.reader(f)
        if fmt == "azure":
            header = [c.strip() for c in next(reader, [])]
            missing = [c for c in AZURE_COLUMNS if c not in header]
            if missing:
                raise WorkloadError(f"{path}:1: Azure trace header lacks {missing} (got {header})")
            ti, ci, gi = (header.index(c) for c in AZURE_COLUMNS)
            for line, row in enumerate(reader, start=2):
                if not row or not "".join(row).strip():
                    continue
                where = f"{path}:{line}"
                if len(row) != len(header):
                    raise WorkloadError(f"{where}: expected {len(header)} columns, got {len(row)}")
                try:
                    times.append(_parse_time(row[ti]))
                except ValueError:
                    raise WorkloadError(f"{where}: TIMESTAMP is not a date-time: {row[ti]!r}") from None
                rows.append((_tokens(row[ci], where, "ContextTokens"), _tokens(row[gi], where, "GeneratedTokens")))
        elif fmt == "pairs":
            for line, row in enumerate(reader, start=1):
                if not row or not "".join(row).strip():
                    continue
                where = f"{path}:{line}"
                if len(row) != 2:
                    raise WorkloadError(f"{where}: expected 2 columns (input_tokens,output_tokens), got {len(row)}")
                rows.append((_tokens(row[0], where, "input_tokens"), _tokens(row[1], where, "output_tokens")))
        else:
            raise WorkloadError(f"{path}: unknown workload format {fmt!r} (auto, pairs, azure)")
    if not rows:
        raise WorkloadError(f"{path}: no samples")
    rate = None
    if len(times) >= 2:
        span = max(times) - min(times)
        rate = (len(times) - 1) / span if span > 0 else None  # n arrivals span n-1 gaps
    rel = np.asarray(times, dtype=float) - min(times) if times else None
    return Workload(samples=np.asarray(rows, dtype=np.int64), rate=rate, source=str(path), times=rel)


def bucketize(samples: np.ndarray, input_edges: Sequence[int], output_edges: Sequence[int], clip: bool = True) -> Distribution:
    """Histogram samples on right-closed buckets `(edges[k-1], edges[k]]`.

    Samples above the last edge in a dimension are counted in that dimension's last bucket when `clip`
    (Mélange's convention), or left out (and the rest renormalised) when not; either way `clipped` says
    which fraction of samples that was.
    """
    samples = np.asarray(samples)
    if samples.ndim != 2 or samples.shape[1] != 2 or len(samples) == 0:
        raise WorkloadError(f"samples must be a non-empty (n, 2) array, got shape {samples.shape}")
    _check_edges(input_edges, "input_edges")
    _check_edges(output_edges, "output_edges")
    i = np.searchsorted(np.asarray(input_edges), samples[:, 0], side="left")  # first edge >= value
    j = np.searchsorted(np.asarray(output_edges), samples[:, 1], side="left")
    over = (i >= len(input_edges)) | (j >= len(output_edges))
    clipped = float(over.mean())
    if clip:
        i = np.minimum(i, len(input_edges) - 1)
        j = np.minimum(j, len(output_edges) - 1)
    else:
        i, j = i[~over], j[~over]
        if len(i) == 0:
            raise WorkloadError("every sample is above the grid's last edge")
    counts = np.zeros((len(input_edges), len(output_edges)))
    np.add.at(counts, (i, j), 1.0)
    return Distribution(list(input_edges), list(output_edges), counts / counts.sum(), clipped)
