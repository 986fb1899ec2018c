"""Config: the pydantic models a user writes to describe a rayhet deployment (model, pools, SLO, knobs).

A config is a YAML or JSON file (`load_config`) or the same data inline (a Serve config's `args`, a dict
from Python). Every error names the field that is wrong (`pools[1].engine_settings.n_threads: ...`).
Engine settings are passed through as a dict and validated by the engine's own settings model, imported
lazily so that this module stays free of engines, Ray and the solver.
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from rayhet.control import ControlSettings
from rayhet.errors import ConfigError
from rayhet.profiles import SLO
from rayhet.server_config import QueueLimit, ServerConfig  # noqa: F401 - re-exported: part of the config

EMBEDDED_MODEL = "embedded:tiny"
# A new replica's start-up when the config does not say (pools' `startup_s`): a vLLM replica loads weights
# and captures CUDA graphs (60-90 s on a warm node); llama.cpp maps a GGUF file and starts its step thread.
DEFAULT_STARTUP_S = {"vllm": 90.0, "llama_cpp": 10.0, "fake": 1.0}
"""`model.gguf` value meaning: the tiny random-weight GGUF that rayhet generates on first use."""

DEFAULT_APP = Path(__file__).parent / "data" / "default" / "app.yaml"
"""The config `serve run rayhet.app:build` serves with no arguments (two CPU pools with shipped profiles)."""

EngineName = Literal["llama_cpp", "vllm", "fake"]

# engine name -> (module, engine class, settings class); imported only when a pool of that engine is used.
ENGINES: dict[str, tuple[str, str, str]] = {
    "llama_cpp": ("rayhet.engines.llama_cpp", "LlamaCppEngine", "LlamaCppSettings"),
    "vllm": ("rayhet.engines.vllm", "VllmEngine", "VllmSettings"),
    "fake": ("rayhet.testing.fake_engine", "FakeEngine", "FakeEngineSettings"),
}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ModelConfig(_Strict):
    """The model every pool serves (one model per app)."""

    id: str = Field("rayhet-model", min_length=1, description="Model name clients pass as `model` and see in /v1/models.")
    gguf: str | None = Field(
        None,
        description=f"GGUF file for llama_cpp pools. '{EMBEDDED_MODEL}' means the tiny random-weight model rayhet "
        "generates on first use (for trying rayhet out; its output is gibberish).",
    )
    hf: str | None = Field(None, description="Hugging Face model id or local directory for vllm pools.")
    tokenizer: str | None = Field(
        None,
        description="Where the ingress gets its tokenizer (a GGUF file, or an HF id/directory). Default: `gguf` "
        "if set, else `hf`. The ingress counts tokens exactly with it to route by size.",
    )

    @property
    def tokenizer_source(self) -> str | None:
        return self.tokenizer or self.gguf or self.hf


class ServingOverhead(_Strict):
    """What the deployed serving stack and host add to a pool's in-process engine model (`rayhet simulate` only).

    An engine model is measured in process, on the host where it was profiled; behind Serve's proxy, the
    ingress and a streaming handle call, each request arrives later, and the deployed host may run the engine
    slower or faster. Measured on a live app by `rayhet calibrate` (requests sent one at a time, compared with
    the engine model's times for them; rayhet.sim.overhead).
    """

    request_s: float = Field(0.0, ge=0, description="Seconds each request spends in the stack before the engine "
                             "sees it (HTTP, ingress, routing, the handle call): added to its arrival at the replica.")
    step_scale: float = Field(1.0, gt=0, description="Every engine step takes this times as long as the engine "
                              "model says (the deployed host's speed against the profiling host's; 1.3 = 30 % slower).")
    prefill_scale: float | None = Field(None, gt=0, description="The prompt tokens' part of a step (the model's "
                                        "prefill and attention terms) takes this times as long; null: step_scale. "
                                        "Prompts are compute-bound and decoding memory-bound: a host with wider "
                                        "vector units speeds up the first more.")
    per_token_s: float = Field(0.0, ge=0, description="Seconds each decoding sequence adds to an engine step beyond "
                               "the engine model, set by hand (`rayhet calibrate` fits step_scale instead: on lone "
                               "requests the two cannot be told apart, and a slow host is a scale).")
    source: str | None = Field(None, description="How it was measured (command, date, requests).")


class HostContention(_Strict):
    """Replicas that share a host slow each other (`rayhet simulate` only).

    An engine model is measured with the host to itself; CPU pools placed on one node share its memory
    bandwidth and caches, and a llama.cpp step takes longer while the replica beside it is busy (1.10-1.23x in
    the simulator's validation on the GPU machine's cores: README "Simulating a day")."""

    host: str = Field(..., min_length=1, description="Pools naming the same host contend with each other.")
    slowdown: float = Field(0.0, ge=0, description="While any other replica on the host holds a request, this "
                            "pool's engine steps take (1 + slowdown) times as long (shared caches and memory "
                            "bandwidth).")
    cpus: float | None = Field(None, gt=0, description="The host's cores, where the pools' engine threads share "
                               "them with the serving stack (a laptop, one small VM): while the engines' threads, "
                               "`base_cpus` and the stack's work per streamed token ask for more than this, every "
                               "engine step on the host slows by the excess (processor sharing). Null: the cores "
                               "are not oversubscribed. Pools naming one host give the same value.")
    stack_cpu_ms_per_token: float = Field(0.0, ge=0, description="With `cpus`: CPU time the serving stack on this "
                                          "host (Serve's proxy, the ingress, the replicas' Python, a local client) "
                                          "spends per streamed token.")
    base_cpus: float = Field(0.0, ge=0, description="With `cpus`: cores taken by what runs there regardless of "
                             "traffic (Ray's raylet and GCS, Serve's controller).")
    source: str | None = Field(None, description="How it was measured (`rayhet calibrate --contention`: command, "
                               "date, requests).")


class PoolConfig(_Strict):
    """One pool: a set of identical replicas on one hardware type, each running one engine."""

    name: str = Field(..., pattern=r"^[a-z0-9][a-z0-9_-]{0,62}$", description="Pool name (lowercase, digits, '-', '_').")
    engine: EngineName = Field(..., description="llama_cpp (CPU), vllm (GPU), or fake (a test double: no model).")
    accelerator_type: str | None = Field(
        None,
        description="Ray accelerator type the replicas must run on (e.g. 'A10G', 'L4', 'H100'); null for CPU. "
        "Pins replicas to nodes carrying the `accelerator_type:<X>` resource.",
    )
    resources: dict[str, float] = Field(
        default_factory=dict,
        description="Extra Ray custom resources per replica, e.g. {'rayhet_pool_cpu': 0.001} to pin the pool to a "
        "node group that declares that resource.",
    )
    num_cpus: float | None = Field(
        None, ge=0, description="CPUs reserved per replica. Default: the engine's threads (llama_cpp) or 1 (vllm)."
    )
    num_gpus: float | None = Field(
        None, ge=0, description="GPUs per replica. Default: for vllm, tensor_parallel_size x pipeline_parallel_size "
        "of its engine_settings (1 if unset); 0 otherwise.")
    engine_settings: dict[str, Any] = Field(
        default_factory=dict,
        description="Settings passed to the engine, validated by its settings model (e.g. LlamaCppSettings). "
        "model_path / model default to the app's `model`.",
    )
    price_per_hour: float | None = Field(
        None, ge=0, description="USD per replica-hour; default: the profile's price. Needed by the planner."
    )
    profile: str | None = Field(
        None, description="Profile JSON of this pool type (see `rayhet profile`). Without one the pool gets a static share."
    )
    min_replicas: int = Field(0, ge=0, description="Fewest replicas the planner may choose.")
    max_replicas: int | None = Field(None, ge=1, description="Most replicas the planner may choose (null: no limit).")
    initial_replicas: int | None = Field(
        None, ge=0, description="Replicas at start-up. Default: the start-up plan's choice, or 1 without profiles."
    )
    queue_per_replica: int = Field(
        4, ge=0, description="Requests a replica accepts beyond its batch slots (added to max_ongoing_requests)."
    )
    access_log: bool = Field(
        False,
        description="Ray Serve's per-request access log lines on this pool's replicas (logging_config."
        "enable_access_log). Off by default: the ingress already logs each request, and one line per request here "
        "cost throughput (benchmarks/results/serve-path.md).",
    )
    startup_s: float | None = Field(
        None, ge=0,
        description="Seconds from Serve starting a replica to it serving (node provisioning included, if your "
        "cluster adds nodes). Used by `rayhet simulate`; default by engine: vllm 90, llama_cpp 10, fake 1.")
    serving_overhead: ServingOverhead | None = Field(
        None, description="What the serving stack adds to this pool's engine model in `rayhet simulate` (measure "
        "it with `rayhet calibrate`; default: nothing). The planner's capacities are the profile's, unchanged.")
    host_contention: HostContention | None = Field(
        None, description="`rayhet simulate` only: the host this pool's replicas share with other pools' and how "
        "much a busy neighbour slows their steps (default: none).")
    max_queued_requests: QueueLimit = Field(
        8,
        description="Requests waiting at the ingress for this pool before Serve pushes back and the ingress spills "
        "them to the next pool (-1: unbounded, never spill on queue length).",
    )

    @property
    def startup_seconds(self) -> float:
        """`startup_s`, or its default for the engine (DEFAULT_STARTUP_S)."""
        return self.startup_s if self.startup_s is not None else DEFAULT_STARTUP_S.get(self.engine, 10.0)

    @model_validator(mode="after")
    def _bounds(self) -> "PoolConfig":
        if self.max_replicas is not None and self.min_replicas > self.max_replicas:
            raise ValueError(f"min_replicas ({self.min_replicas}) > max_replicas ({self.max_replicas})")
        if self.initial_replicas is not None:
            if self.initial_replicas < self.min_replicas or (
                self.max_replicas is not None and self.initial_replicas > self.max_replicas
            ):
                raise ValueError(f"initial_replicas ({self.initial_replicas}) outside [min_replicas, max_replicas]")
        if self.engine == "llama_cpp" and self.engine_settings.get("n_gpu_layers", 0) not in (0, None) \
                and not self.num_gpus:
            # a hybrid pool: without its GPU share Ray would place it on any node, and on a GPU another uses
            raise ValueError("num_gpus: a llama_cpp pool with n_gpu_layers needs its share of a GPU (e.g. 0.1 for "
                             "a 14 GB budget on a 141 GB H200: rayhet.hybrid.gpu_share)")
        return self

    @property
    def hybrid(self) -> bool:
        """A llama.cpp pool with layers on a GPU (a CPU-GPU hybrid pool)."""
        return self.engine == "llama_cpp" and self.engine_settings.get("n_gpu_layers", 0) not in (0, None)


class RoutingConfig(_Strict):
    """How the ingress turns a request into a bucket and a pool."""

    predictor: str = Field(
        "bucket_quantile",
        description="Output-length predictor: 'bucket_quantile' (learned online per input bucket, as Mélange's "
        "balancer), 'max_tokens' (assume every request uses its max_tokens), or 'module:Class' of your own.",
    )
    predictor_quantile: float = Field(
        0.5, gt=0, le=1, description="Quantile of recent output lengths of the input bucket that bucket_quantile predicts."
    )
    predictor_window: int = Field(256, ge=1, description="Recent outputs remembered per input bucket.")
    predictor_min_samples: int = Field(
        8, ge=1, description="Until an input bucket has this many outputs, predict max_tokens (conservative)."
    )
    default_max_tokens: int = Field(
        256, ge=1, description="max_tokens for chat requests that give none (capped by the context left)."
    )
    spill: bool = Field(True, description="On backpressure or a failed pool, retry the next pool that serves the bucket.")
    max_attempts: int = Field(3, ge=1, description="Pools tried per request (first choice + spill-overs).")


class PlannerConfig(_Strict):
    """What the start-up plan is solved for (the controller re-plans from live traffic later)."""

    expected_rate: float = Field(1.0, gt=0, description="Expected request rate (req/s) at start-up.")
    workload: str | None = Field(
        None, description="A request-size sample file (see `rayhet plan --workload`) for the start-up distribution."
    )
    distribution: list[list[float]] | None = Field(
        None,
        description="Fractions of requests per (input bucket, output bucket) on the profiles' common grid, "
        "instead of `workload`. Default (neither): uniform over the buckets some pool can serve.",
    )
    headroom: float = Field(0.2, ge=0, description="Plan for expected_rate * (1 + headroom).")
    slices: int = Field(8, ge=1, description="Slices per bucket in the MILP (Mélange's slice factor).")
    time_limit_s: float = Field(10.0, gt=0, description="Solver time limit.")
    held_out: Literal["scale", "ignore"] = Field(
        "scale", description="A profile whose own held-out check shows its engine model over-predicting capacity: "
        "'scale' every capacity in it down by the worst measured/predicted (a warning names the file and bucket); "
        "'ignore': plan with the model as it is.")

    @model_validator(mode="after")
    def _one_source(self) -> "PlannerConfig":
        if self.workload is not None and self.distribution is not None:
            raise ValueError("give workload or distribution, not both")
        return self


class RayhetConfig(_Strict):
    """A whole rayhet deployment."""

    model: ModelConfig = Field(default_factory=ModelConfig, description="The model served.")
    pools: list[PoolConfig] = Field(..., min_length=1, description="The pools (one Serve deployment each).")
    slo: SLO | None = Field(None, description="Latency objective (tpot_ms / ttft_ms) the profiles were measured under.")
    routing: RoutingConfig = Field(default_factory=RoutingConfig)
    planner: PlannerConfig = Field(default_factory=PlannerConfig)
    server: ServerConfig = Field(default_factory=ServerConfig)
    controller: ControlSettings = Field(
        default_factory=ControlSettings, description="The controller that re-plans from live traffic (README)."
    )

    @field_validator("pools")
    @classmethod
    def _unique_names(cls, pools: list[PoolConfig]) -> list[PoolConfig]:
        seen = set()
        for p in pools:
            if p.name in seen:
                raise ValueError(f"pool name {p.name!r} is used twice")
            seen.add(p.name)
        return pools

    @model_validator(mode="after")
    def _coherent(self) -> "RayhetConfig":
        with_profile = [p.name for p in self.pools if p.profile]
        if with_profile and len(with_profile) != len(self.pools):
            missing = [p.name for p in self.pools if not p.profile]
            raise ValueError(
                f"pools {missing} have no profile but {with_profile} do: give every pool a profile "
                "(planned routing) or none (static routing)"
            )
        hosts: dict[str, tuple] = {}
        for p in self.pools:
            if p.host_contention is None:
                continue
            h = p.host_contention
            shared = (h.cpus, h.stack_cpu_ms_per_token, h.base_cpus)
            if hosts.setdefault(h.host, shared) != shared:
                raise ValueError(f"pools on host {h.host!r} give different cpus / stack_cpu_ms_per_token / "
                                 f"base_cpus (pool {p.name!r}: {shared}, before it: {hosts[h.host]}): one host, "
                                 "one value")
        for p in self.pools:
            if p.engine == "llama_cpp" and not (p.engine_settings.get("model_path") or self.model.gguf):
                raise ValueError(f"pool {p.name!r} runs llama_cpp: set model.gguf (or its engine_settings.model_path)")
            if p.engine == "vllm" and not (p.engine_settings.get("model") or self.model.hf):
                raise ValueError(f"pool {p.name!r} runs vllm: set model.hf (or its engine_settings.model)")
        return self

    def pool(self, name: str) -> PoolConfig:
        for p in self.pools:
            if p.name == name:
                return p
        raise KeyError(name)


# -- engines -------------------------------------------------------------------------------------
def engine_classes(engine: str) -> tuple[type, type[BaseModel]]:
    """(engine class, settings model) of an engine name; imports its module."""
    module, engine_cls, settings_cls = ENGINES[engine]
    mod = importlib.import_module(module)
    return getattr(mod, engine_cls), getattr(mod, settings_cls)


def engine_settings_dict(config: RayhetConfig, pool: PoolConfig) -> dict[str, Any]:
    """The pool's engine settings with the app's model filled in (model_path for llama_cpp, model for vllm)."""
    s = dict(pool.engine_settings)
    if pool.engine == "llama_cpp":
        s.setdefault("model_path", config.model.gguf)
        if config.slo is not None and config.slo.ttft_ms_per_1k_input > 0:
            # the SLO lets TTFT grow with the prompt: prefill the prompt whose deadline comes first
            s.setdefault("prefill_allowance_s_per_1k", config.slo.ttft_ms_per_1k_input / 1000.0)
    elif pool.engine == "vllm":
        s.setdefault("model", config.model.hf)
    return s


def validate_engine_settings(config: RayhetConfig, source: str = "config") -> dict[str, BaseModel]:
    """Validate every pool's engine settings with its engine's own model; returns pool name -> settings.

    The app may be built on a node without the model file (a head node building a `serve deploy`): engines
    check their files when they start, in the replica. An engine whose module cannot be imported here (vLLM on
    a CPU-only head) is skipped.
    """
    out: dict[str, BaseModel] = {}
    for k, pool in enumerate(config.pools):
        try:
            _, settings_cls = engine_classes(pool.engine)
        except ImportError:
            continue
        data = engine_settings_dict(config, pool)
        try:
            out[pool.name] = settings_cls.model_validate(data)
        except ValidationError as e:
            raise ConfigError(_format_errors(e, source, prefix=f"pools[{k}].engine_settings")) from None
    return out


# -- loading -------------------------------------------------------------------------------------
def _format_loc(loc: tuple, prefix: str = "") -> str:
    out = prefix
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "<root>"


def _format_errors(e: ValidationError, source: str, prefix: str = "") -> str:
    lines = [f"{source}: {_format_loc(err['loc'], prefix)}: {err['msg']}" for err in e.errors()]
    return "invalid rayhet config\n  " + "\n  ".join(lines)


def parse_config(data: object, source: str = "config") -> RayhetConfig:
    """Validate decoded data as a RayhetConfig; a ConfigError names `source` and each wrong field."""
    try:
        return RayhetConfig.model_validate(data)
    except ValidationError as e:
        raise ConfigError(_format_errors(e, source)) from None


def load_config(path: str | Path) -> RayhetConfig:
    """Read a YAML (.yaml/.yml) or JSON config. Relative file paths inside it (profiles, workload, GGUF)
    are resolved against the config file's directory."""
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such config file") from None
    if path.suffix.lower() == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise ConfigError(f"{path}: not valid JSON (line {e.lineno}: {e.msg})") from None
    else:
        import yaml

        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as e:
            raise ConfigError(f"{path}: not valid YAML ({e})") from None
    config = parse_config(data, str(path))
    return resolve_paths(config, path.parent)


def resolve_paths(config: RayhetConfig, base: Path) -> RayhetConfig:
    """Make relative profile/workload/model paths absolute against `base` (only those that exist there)."""

    def fix(p: str | None) -> str | None:
        if p is None or p == EMBEDDED_MODEL or Path(p).is_absolute():
            return p
        cand = (base / p).resolve()
        return str(cand) if cand.exists() else p

    data = config.model_dump()
    data["model"]["gguf"] = fix(data["model"]["gguf"])
    data["model"]["tokenizer"] = fix(data["model"]["tokenizer"])
    data["model"]["hf"] = fix(data["model"]["hf"])  # a Hub id stays as it is (no such local path)
    data["planner"]["workload"] = fix(data["planner"]["workload"])
    for p in data["pools"]:
        p["profile"] = fix(p["profile"])
        if "model_path" in p["engine_settings"]:
            p["engine_settings"]["model_path"] = fix(p["engine_settings"]["model_path"])
    return RayhetConfig.model_validate(data)


def embedded_config(gguf: str = EMBEDDED_MODEL, n_threads: int = 1) -> RayhetConfig:
    """The default with no config: one CPU pool of one llama_cpp replica on `gguf`, static routing."""
    return RayhetConfig.model_validate(
        {
            "model": {"id": "rayhet-tiny" if gguf == EMBEDDED_MODEL else Path(gguf).stem, "gguf": gguf},
            "pools": [
                {
                    "name": "cpu",
                    "engine": "llama_cpp",
                    "num_cpus": n_threads,
                    "engine_settings": {"n_threads": n_threads},
                    "initial_replicas": 1,
                    "max_replicas": 1,
                }
            ],
        }
    )
