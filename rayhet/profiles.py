"""Profiles: the measured capacity of one pool type, per (input tokens, output tokens) bucket, under an SLO.

A profile is a JSON file (schema below, `schema_version` 2; version 1 files, without an engine model, still load). Buckets follow Mélange: `input_edges` and
`output_edges` are increasing *upper* edges and bucket i holds sizes in `(input_edges[i-1], input_edges[i]]`
(the first bucket starts at 0). `max_rate[i][j]` is the highest request rate (req/s) one replica sustains
for requests of input bucket i and output bucket j while meeting the SLO; `null` means it cannot (the SLO
is missed at any rate, or the context is too long for the engine).
"""

from __future__ import annotations

import bisect
import json
import math
from datetime import date, datetime
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_serializer, model_validator

from rayhet.errors import ProfileError

SCHEMA_VERSION = 2
READABLE_VERSIONS = (1, 2)  # 1: fixed capacity only; 2: adds `engine_model` and the newer SLO kinds


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SLO(_Strict):
    """A latency objective: what a profile was measured under, or what a service must meet (rayhet.slo judges
    a sample against it). Every stated part must hold."""

    tpot_ms: float | None = Field(
        None, gt=0, description="Time per output token (ms): the mean over requests, or at `tpot_quantile`."
    )
    tpot_quantile: float | None = Field(
        None, gt=0, le=1, description="Judge TPOT at this quantile of requests instead of on their mean (v2)."
    )
    ttft_ms: float | None = Field(None, gt=0, description="Time to first token (ms) at `ttft_quantile`.")
    ttft_quantile: float = Field(0.9, gt=0, le=1, description="Quantile of TTFT that must meet `ttft_ms`.")
    ttft_ms_per_1k_input: float = Field(
        0.0, ge=0, description="TTFT allowance per 1,000 prompt tokens (v2): a request's TTFT limit is ttft_ms + "
        "this x input tokens / 1000."
    )
    normalized_ms: float | None = Field(
        None, gt=0, description="Normalized latency (end-to-end ms / output tokens) at `normalized_quantile` (v2)."
    )
    normalized_quantile: float = Field(0.9, gt=0, le=1, description="Quantile of requests judged on normalized_ms.")
    unknown: bool = Field(
        False, description="True when the source did not record its SLO (e.g. Mélange's early tables)."
    )

    @model_validator(mode="after")
    def _something_stated(self) -> "SLO":
        if not self.unknown and self.tpot_ms is None and self.ttft_ms is None and self.normalized_ms is None:
            raise ValueError("give tpot_ms, ttft_ms and/or normalized_ms, or set unknown: true")
        return self

    def v2_only(self) -> set[str]:
        """The fields a version-1 profile cannot hold (left at their defaults there)."""
        out = set()
        if self.tpot_quantile is not None:
            out.add("tpot_quantile")
        if self.ttft_ms_per_1k_input:
            out.add("ttft_ms_per_1k_input")
        if self.normalized_ms is not None:
            out.add("normalized_ms")
        return out


class GpuSplit(_Strict):
    """A hybrid pool's split of the model between a GPU memory budget and the host (rayhet.hybrid)."""

    gpu_memory_gb: float = Field(..., gt=0, description="The replica's GPU memory budget.")
    gpu_share: float = Field(..., gt=0, le=1, description="The fraction of one GPU the replica asks Ray for.")
    n_gpu_layers: int = Field(..., ge=0, description="Layers in GPU memory (llama.cpp n_gpu_layers).")
    n_layers: int = Field(..., ge=1, description="The model's transformer blocks (n_layers + 1 on the GPU: the "
                          "output head too).")
    gpu_bytes_estimated: int = Field(..., ge=0, description="What rayhet.hybrid.gpu_bytes expects that split to take.")


class Hardware(_Strict):
    """What one replica of the pool runs on."""

    accelerator: str | None = Field(
        None, description="Accelerator type as Ray names it (e.g. 'H100', 'A10G', 'L4'); null for CPU pools."
    )
    accelerator_count: int = Field(0, ge=0, description="Accelerators per replica.")
    vcpus: int | None = Field(None, ge=1, description="vCPUs per replica (required for CPU pools).")
    memory_gb: float | None = Field(None, gt=0, description="Accelerator (or host, for CPU) memory in GB.")
    description: str = Field("", description="Free text: CPU model, instance type, driver, ...")
    gpu_split: GpuSplit | None = Field(None, description="A hybrid pool (llama.cpp with layers on a GPU share): "
                                       "its split; accelerator names the GPU and vcpus the host side.")

    @model_validator(mode="after")
    def _cpu_or_accel(self) -> "Hardware":
        if self.gpu_split is not None and (self.accelerator is None or self.vcpus is None):
            raise ValueError("gpu_split: a hybrid pool gives both its GPU (accelerator) and its vcpus")
        if self.accelerator is None and self.vcpus is None:
            raise ValueError("a CPU pool (accelerator: null) must give vcpus")
        if self.accelerator is not None and self.accelerator_count == 0:
            self.accelerator_count = 1
        return self

    @model_serializer(mode="wrap")
    def _without_split(self, handler):
        # a pool that is not hybrid writes no gpu_split: files made before it existed stay byte for byte the same
        data = handler(self)
        if data.get("gpu_split") is None:
            data.pop("gpu_split", None)
        return data

    @property
    def is_cpu(self) -> bool:
        return self.accelerator is None


class Provenance(_Strict):
    """Who measured a profile, when, and how, so a number can always be traced back."""

    measured_by: str = Field(..., description="Person, tool or upstream source that produced the numbers.")
    measured_at: str = Field(..., description="ISO date (or datetime) of the measurement.")
    command: str = Field(..., description="The command that produced the numbers (or how they were extracted).")
    source: str | None = Field(None, description="Upstream URL/commit/path when the numbers are transcribed.")
    notes: str | None = Field(None, description="Caveats a reader must know.")

    @field_validator("measured_at")
    @classmethod
    def _iso(cls, v: str) -> str:
        try:
            datetime.fromisoformat(v)
        except ValueError:
            try:
                date.fromisoformat(v)
            except ValueError as e:
                raise ValueError(f"not an ISO date: {v!r}") from e
        return v


class SweepPoint(_Strict):
    """One measured point of a profiling sweep: one bucket driven at one offered rate."""

    input_bucket: int = Field(..., ge=0)
    output_bucket: int = Field(..., ge=0)
    input_tokens: int = Field(..., ge=1, description="Prompt length actually sent.")
    output_tokens: int = Field(..., ge=1, description="Output length actually generated (ignore_eos).")
    offered_rate: float = Field(..., gt=0, description="Poisson arrival rate sent (req/s).")
    achieved_rate: float = Field(..., ge=0, description="Completed requests per second.")
    num_requests: int = Field(..., ge=0)
    duration_s: float = Field(..., ge=0)
    warmup_s: float = Field(0.0, ge=0, description="Leading time excluded as not yet at steady state.")
    ttft_ms: dict[str, float] = Field(default_factory=dict, description="TTFT percentiles, e.g. {'p50': .., 'p90': ..}.")
    tpot_ms: dict[str, float] = Field(default_factory=dict, description="TPOT stats, e.g. {'mean': .., 'p90': ..}.")
    output_tokens_per_s: float | None = Field(None, ge=0)
    errors: int = Field(0, ge=0)
    meets_slo: bool


class StepPoint(_Strict):
    """One measured interval of the engine-model experiments: the work the replica model says it held
    (rayhet.perf.StepWork fields, summed over its steps) and the seconds it took."""

    label: str = Field(..., description="Which experiment and interval, e.g. 'B4 P256 O32: request 2 TTFT'.")
    work: list[float] = Field(..., min_length=5, max_length=8, description="Summed features, in rayhet.perf.FEATURES "
                              "order (files made before `extra_passes`, `multi_seq_passes` or `offload_steps` have "
                              "fewer; those read as 0).")
    seconds: float = Field(..., gt=0)
    predicted_s: float | None = Field(None, ge=0, description="What the fitted model predicts for it.")


class HeldOut(_Strict):
    """A bucket measured directly by the rate search, next to the capacity the engine model predicts."""

    input_bucket: int = Field(..., ge=0)
    output_bucket: int = Field(..., ge=0)
    predicted_rate: float | None = Field(..., ge=0)
    measured_rate: float | None = Field(..., ge=0, description="The highest rate measured to pass (the capacity, "
                                        "as the rate search defines it).")
    measured_fail_rate: float | None = Field(None, ge=0, description="The lowest rate measured to fail above it: "
                                             "the capacity lies between the two. Null: none failed, or older files.")
    speed_drift: dict[str, float] | None = Field(
        None, description="The engine's speed while this bucket was measured, relative to when its steps were "
        "fitted, for `prefill` and `decode` steps (measured/predicted time of a few probe batches, then over at "
        "the fit): 1.2 = 20 % slower. Null: not measured (files made before the probe).")
    predicted_rate_at_check: float | None = Field(
        None, ge=0, description="predicted_rate with the model's prefill and decode terms scaled by speed_drift: "
        "the model's prediction for the machine as it ran during the check.")

    requests_per_point: int | None = Field(None, ge=1, description="Measured requests in each point of this "
                                           "bucket (null: files made before they were sized by power).")
    check_power: float | None = Field(
        None, ge=0, le=1, description="Share of simulated checks, with that many requests a point, that a perfect "
        "model (the fitted one, standing in for the engine) passes (rayhet.profiling.power): how decisive a failed "
        "check is. Null: not computed (older files).")
    twins: list[SweepPoint] = Field(
        default_factory=list, description="Each measured point of this bucket (in `sweep`, same order) replayed "
        "through the replica model on the same arrivals and judged by the same rules (rayhet.profiling.twin): "
        "the model against the engine with the sample's luck taken out.")
    speed_during: list[dict[str, float] | None] = Field(
        default_factory=list, description="For an engine that logs its steps: the speed it ran during each measured "
        "point (same order), measured/predicted time of the point's own `prefill` and `decode` steps over the "
        "same ratio in the fit's live phase: 1.3 = 30 % slower than fitted. Null for a point not measured so; "
        "empty: none was (observed engines, older files).")
    twins_at_speed: list[SweepPoint | None] = Field(
        default_factory=list, description="Each point's twin again, with the model's terms scaled by that point's "
        "`speed_during`: where it agrees with the engine and the plain twin does not, the host's speed, not the "
        "model, made the difference.")

    @property
    def twin_rate(self) -> float | None:
        """The capacity the twins give at the rates measured (highest pass below the lowest fail), to compare
        with `measured_rate`, read off the engine's points at the same rates; None without twins."""
        if not self.twins:
            return None
        from rayhet.profiling.search import bracket

        return bracket([(p.offered_rate, p.meets_slo) for p in self.twins])[0]

    @property
    def error(self) -> float | None:
        """(predicted - measured) / measured; None where either is missing."""
        if not self.predicted_rate or not self.measured_rate:
            return None
        return (self.predicted_rate - self.measured_rate) / self.measured_rate

    @property
    def check(self) -> str | None:
        """'passed': a pass at or above predicted/1.15 and a fail at or below predicted/0.85, so the capacity is
        within ±15 % of the prediction; 'failed': a fail below that band or a pass above it; None: undecided."""
        from rayhet.profiling.search import check_rates

        if not self.predicted_rate:
            return None
        lo, hi = check_rates(self.predicted_rate)
        eps = 1e-6
        if (self.measured_fail_rate is not None and self.measured_fail_rate <= lo * (1 + eps)) or \
                (self.measured_rate is not None and self.measured_rate >= hi * (1 - eps)):
            return "failed"
        if self.measured_rate is not None and self.measured_rate >= lo * (1 - eps) and \
                self.measured_fail_rate is not None and self.measured_fail_rate <= hi * (1 + eps):
            return "passed"
        return None

    @property
    def error_at_check(self) -> float | None:
        """The same error with the prediction at the check's speed (None without speed_drift)."""
        if not self.predicted_rate_at_check or not self.measured_rate:
            return None
        return (self.predicted_rate_at_check - self.measured_rate) / self.measured_rate


class EngineModelRecord(_Strict):
    """What `rayhet profile` measured of the engine itself: limits, the fitted step model, its error and the
    raw points behind it, and the held-out checks of the capacity it predicts."""

    limits: dict = Field(..., description="rayhet.perf.EngineLimits fields.")
    step: dict = Field(..., description="rayhet.perf.StepModel coefficients (seconds per unit of each feature).")
    mean_abs_rel_error: float = Field(..., ge=0, description="Fit error over the points: mean |predicted - measured| / measured.")
    max_abs_rel_error: float = Field(..., ge=0)
    points: list[StepPoint] = Field(default_factory=list)
    held_out: list[HeldOut] = Field(default_factory=list)
    capacity_requests: int = Field(300, ge=10, description="Simulated requests per rate with which max_rate was "
                                   "derived (re-deriving for another SLO uses today's rayhet.capacity.REQUESTS).")
    capacity_tolerance: float = Field(0.03, gt=0, description="Rate search stops at highest pass x (1 + this) >= "
                                      "lowest fail (with which max_rate was derived).")
    capacity_gaps: Literal["plain", "stratified"] = Field("plain", description="The simulated arrival gaps max_rate was derived with: "
                               "'stratified' (rayhet.capacity.arrival_gaps) or 'plain' (one Poisson draw; files "
                               "made before 2026-11-30, whose single draw put capacities 10-17 % high here).")

    def step_model(self):
        from rayhet.perf import StepModel

        return StepModel.model_validate(self.step)

    def engine_limits(self):
        from rayhet.perf import EngineLimits

        return EngineLimits.model_validate(self.limits)


class Profile(_Strict):
    """The capacity table of one pool type for one model (see module docstring)."""

    schema_version: int = Field(SCHEMA_VERSION, description="Profile schema version; this library reads 1 and 2.")
    model: str = Field(..., min_length=1, description="Model id the profile was measured with.")
    pool: str = Field(..., min_length=1, description="Pool type name, e.g. 'h100' or 'cpu-16'.")
    engine: Literal["vllm", "llama_cpp", "unknown"] = Field(..., description="Serving engine.")
    engine_version: str = Field(..., description="Engine version (e.g. '0.24.0'); 'unknown' if unrecorded.")
    hardware: Hardware
    price_per_hour: float = Field(..., ge=0, description="USD per replica-hour.")
    price_source: str | None = Field(None, description="Where the price comes from.")
    slo: SLO
    input_edges: list[int] = Field(..., min_length=1, description="Increasing upper edges of input-token buckets.")
    output_edges: list[int] = Field(..., min_length=1, description="Increasing upper edges of output-token buckets.")
    max_rate: list[list[float | None]] = Field(
        ..., description="max_rate[i][j]: req/s one replica sustains under the SLO; null where it cannot."
    )
    provenance: Provenance
    sweep: list[SweepPoint] = Field(default_factory=list, description="Raw measurements behind max_rate.")
    engine_model: "EngineModelRecord | None" = Field(
        None, description="Version 2: the engine's step-time model and limits, from which max_rate was derived and "
        "from which it can be derived again for another SLO (rayhet.capacity).")

    @field_validator("schema_version")
    @classmethod
    def _known_version(cls, v: int) -> int:
        if v not in READABLE_VERSIONS:
            raise ValueError(f"unknown schema version {v}; this rayhet reads versions "
                             f"{', '.join(map(str, READABLE_VERSIONS))}")
        return v

    @field_validator("input_edges", "output_edges")
    @classmethod
    def _increasing(cls, v: list[int]) -> list[int]:
        if v[0] < 1:
            raise ValueError(f"edges must be positive token counts, got {v[0]}")
        for k in range(1, len(v)):
            if v[k] <= v[k - 1]:
                raise ValueError(f"edges must be strictly increasing: [{k - 1}]={v[k - 1]} then [{k}]={v[k]}")
        return v

    @model_validator(mode="after")
    def _matrix_shape(self) -> "Profile":
        n_in, n_out = len(self.input_edges), len(self.output_edges)
        if len(self.max_rate) != n_in:
            raise ValueError(f"max_rate has {len(self.max_rate)} rows, expected {n_in} (one per input edge)")
        for i, row in enumerate(self.max_rate):
            if len(row) != n_out:
                raise ValueError(f"max_rate row {i} has {len(row)} values, expected {n_out} (one per output edge)")
            for j, r in enumerate(row):
                if r is not None and (not math.isfinite(r) or r < 0):
                    raise ValueError(f"max_rate[{i}][{j}] = {r}: rates must be finite and >= 0 (null if unservable)")
        for k, p in enumerate(self.sweep):
            if p.input_bucket >= n_in or p.output_bucket >= n_out:
                raise ValueError(f"sweep[{k}] names bucket ({p.input_bucket}, {p.output_bucket}) outside the grid")
        if self.schema_version == 1:
            extra = sorted(self.slo.v2_only()) + (["engine_model"] if self.engine_model is not None else [])
            if extra:
                raise ValueError(f"{', '.join(extra)} need schema_version 2")
        return self

    # -- queries ---------------------------------------------------------------------------------
    @property
    def is_cpu(self) -> bool:
        return self.hardware.is_cpu

    @property
    def max_input_tokens(self) -> int:
        return self.input_edges[-1]

    @property
    def max_output_tokens(self) -> int:
        return self.output_edges[-1]

    def rate(self, i: int, j: int) -> float | None:
        """Capacity of bucket (i, j); 0 is reported as None (a replica that serves nothing cannot serve it)."""
        r = self.max_rate[i][j]
        return r if r else None


def bucket_index(value: int, edges: list[int]) -> int | None:
    """Index of the right-closed bucket `(edges[k-1], edges[k]]` holding `value`; None if above the last edge."""
    k = bisect.bisect_left(edges, value)  # first edge >= value
    return k if k < len(edges) else None


def _format_loc(loc: tuple) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "<root>"


def parse_profile(data: object, source: str = "<profile>") -> Profile:
    """Validate a decoded JSON object as a Profile; errors name `source` and the field."""
    try:
        return Profile.model_validate(data)
    except ValidationError as e:
        lines = [f"{source}: {_format_loc(err['loc'])}: {err['msg']}" for err in e.errors()]
        raise ProfileError("invalid profile\n  " + "\n  ".join(lines)) from None


def load_profile(path: str | Path) -> Profile:
    """Read one profile JSON file."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise ProfileError(f"{path}: no such profile file") from None
    except json.JSONDecodeError as e:
        raise ProfileError(f"{path}: not valid JSON (line {e.lineno}, column {e.colno}: {e.msg})") from None
    return parse_profile(data, str(path))


def load_profiles(path: str | Path) -> list[Profile]:
    """Read a profile file, or every `*.json` in a directory (sorted by name); pool names must be unique."""
    path = Path(path)
    files = sorted(path.glob("*.json")) if path.is_dir() else [path]
    if not files:
        raise ProfileError(f"{path}: directory holds no *.json profiles")
    profiles = [load_profile(f) for f in files]
    seen: dict[str, str] = {}
    for f, p in zip(files, profiles):
        if p.pool in seen:
            raise ProfileError(f"{f}: pool {p.pool!r} is also defined in {seen[p.pool]}")
        seen[p.pool] = str(f)
    return profiles


def _dumps(obj: object, indent: str = "") -> str:
    """Indented JSON that keeps lists of plain values (edges, matrix rows) on one line, for readable diffs."""
    inner = indent + " "
    if isinstance(obj, dict) and obj:
        items = [f"{inner}{json.dumps(k)}: {_dumps(v, inner)}" for k, v in obj.items()]
        return "{\n" + ",\n".join(items) + "\n" + indent + "}"
    if isinstance(obj, list) and obj and any(isinstance(v, (dict, list)) for v in obj):
        return "[\n" + ",\n".join(inner + _dumps(v, inner) for v in obj) + "\n" + indent + "]"
    return json.dumps(obj)


def save_profile(profile: Profile, path: str | Path) -> Path:
    """Write a profile as indented JSON (atomically, so an interrupted write never leaves half a file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    data = profile.model_dump(mode="json", exclude_none=False)
    if profile.schema_version == 1:  # a v1 file keeps its v1 fields only (the shipped ones regenerate byte-identical)
        data.pop("engine_model", None)
        for k in ("tpot_quantile", "ttft_ms_per_1k_input", "normalized_ms", "normalized_quantile"):
            data["slo"].pop(k, None)
    tmp.write_text(_dumps(data) + "\n")
    tmp.replace(path)
    return path
