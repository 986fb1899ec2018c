"""Command: `rayhet profile` arguments, and the run that ties engine, sweep, profile file and plot together."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import sys
from importlib import metadata
from pathlib import Path


from rayhet.errors import RayhetError
from rayhet.profiles import SLO, Hardware, load_profile, save_profile
from rayhet.profiling.grid import MELANGE_INPUT_EDGES, MELANGE_OUTPUT_EDGES, QUICK_INPUT_EDGES, QUICK_OUTPUT_EDGES
from rayhet.profiling.model_method import CheckRecorder, measure_engine_model, speed_probe, with_engine_model
from rayhet.profiling.report import build_profile, cpu_model, held_out_lines, host_memory_gb
from rayhet.profiling.search import SearchParams
from rayhet.profiling.sweep import FINAL, ProfilingError, SweepSettings, SweepState, fingerprint, load_state, run_sweep, save_state

# (full, --quick) defaults of the per-point and search knobs
_DEFAULTS = {
    "min_requests": (20, 8),
    "min_duration": (20.0, 8.0),
    "max_window": (120.0, 40.0),
    "warmup": (3.0, 2.0),
    "tolerance": (0.15, 0.3),
    "max_points": (8, 5),
}


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The `rayhet profile` options (cli.py calls this on its subparser)."""
    g = p.add_argument_group("what to profile")
    g.add_argument("--engine", choices=["llama_cpp", "vllm"], default="llama_cpp", help="serving engine (default llama_cpp)")
    g.add_argument("--model", help="model path (GGUF for llama_cpp; HF id or path for vllm); the model name sent with --url")
    g.add_argument("--model-name", help="model id written in the profile (default: --model's file name)")
    g.add_argument("--n-ctx", type=int, help="llama_cpp: context size")
    g.add_argument("--n-slots", type=int, help="llama_cpp: batch slots (sequences decoded together)")
    g.add_argument("--n-threads", type=int, help="llama_cpp: CPU threads (also the profile's vCPUs)")
    g.add_argument("--engine-arg", action="append", default=[], metavar="KEY=VALUE",
                   help="any engine settings field (LlamaCppSettings / VllmSettings), repeatable; VALUE parsed as JSON if it can be")
    g.add_argument("--url", help="profile a running rayhet pool or ingress over HTTP (/v1/completions) instead of in-process")
    g.add_argument("--max-context", type=int, help="with --url: the model's context length (prompt + output)")
    g.add_argument("--max-batch", type=int, default=8, help="with --url: requests the pool serves together (default 8; sizes the warm-up)")
    g.add_argument("--step-tokens", type=int, help="with --url and --method model: most tokens in one engine step "
                   "(vLLM max_num_batched_tokens, llama.cpp n_batch; default --max-context)")
    g.add_argument("--kv-tokens", type=int, help="with --url and --method model: KV cache tokens of one replica "
                   "(default --max-batch x --max-context)")
    g.add_argument("--slot-passes", action="store_true",
                   help="with --url and --method model: the served engine splits a step into passes over runs of "
                   "consecutive slots (rayhet's llama.cpp pools do): fit the pass terms too (rayhet.perf.micro_batches)")
    g = p.add_argument_group("hybrid pool (llama_cpp with layers on a GPU share; rayhet.hybrid)")
    g.add_argument("--gpu-memory-gb", type=float,
                   help="the replica's GPU memory budget: the most layers whose weights and KV cache fit in it go "
                   "to the GPU (n_gpu_layers), the rest run on the CPU threads; needs a CUDA build of llama.cpp")
    g.add_argument("--gpu-total-gb", type=float,
                   help="the GPU's memory (default: nvidia-smi's): the replica asks Ray for budget/total of a GPU")
    g.add_argument("--gpu-price-per-hour", type=float,
                   help="with --vcpu-price-per-hour and no --price-per-hour: the replica's price is its GPU share "
                   "of this plus its vCPUs")
    g.add_argument("--vcpu-price-per-hour", type=float, help="USD per vCPU-hour (see --gpu-price-per-hour)")
    g = p.add_argument_group("SLO")
    g.add_argument("--slo-tpot-ms", type=float, help="mean time per output token (ms) a point must stay under")
    g.add_argument("--slo-ttft-ms", type=float, help="time to first token (ms) at --ttft-quantile a point must stay under")
    g.add_argument("--ttft-quantile", type=float, default=0.9, help="TTFT quantile the SLO is on (default 0.9)")
    g = p.add_argument_group("output")
    g.add_argument("--out", help="profile JSON to write, e.g. profiles/MODEL/POOL.json (a sidecar OUT.partial holds progress)")
    g.add_argument("--pool", help="pool type name in the profile (default: --out's file name)")
    g.add_argument("--price-per-hour", type=float, help="USD per replica-hour (required to measure)")
    g.add_argument("--price-source", help="where the price comes from")
    g.add_argument("--accelerator", help="accelerator type as Ray names it (e.g. H100); omit for a CPU pool")
    g.add_argument("--accelerator-count", type=int, default=1, help="accelerators per replica (default 1)")
    g.add_argument("--vcpus", type=int, help="vCPUs per replica (default: --n-threads, else this machine's CPUs)")
    g.add_argument("--hardware-description", help="free text added to the CPU model in the profile")
    g.add_argument("--notes", help="caveats written into the profile's provenance")
    g.add_argument("--plot", metavar="F.png", help="also draw the capacity heatmap to this file")
    g.add_argument("--from", dest="from_profile", metavar="PROFILE.json", help="with --plot: plot an existing profile, measure nothing")
    g = p.add_argument_group("method")
    g.add_argument("--method", choices=["model", "sweep"], default=None,
                   help="model: measure the engine's step times (minutes), fit its step model, derive every bucket's "
                   "capacity by simulating a replica, and measure --held-out buckets directly as a check (default for "
                   "any engine; llama.cpp in process logs its steps, vLLM and --url are observed from outside); sweep: "
                   "measure every bucket's capacity directly by rate search (hours)")
    g.add_argument("--held-out", type=int, default=3, metavar="K",
                   help="with --method model: buckets measured directly and recorded next to their prediction (default 3)")
    g.add_argument("--held-out-requests", type=int, default=None, metavar="N",
                   help="with --method model: measure every held-out point with N requests (default: per bucket, the "
                   "fewest that make its check decisive, i.e. a perfect model passes it in 90 %% of draws: "
                   "rayhet.profiling.power; buckets where that does not fit --held-out-minutes are not held out)")
    g.add_argument("--held-out-minutes", type=float, default=15.0, metavar="M",
                   help="with --method model: most minutes the two deciding points of one held-out bucket may take "
                   "(default 15)")
    g.add_argument("--steps", choices=["log", "outside"], default=None,
                   help="with --method model: how step times are taken: the engine's own step log (llama.cpp in "
                   "process; the default there) or timed requests seen from outside (any engine; the default for "
                   "vLLM and --url)")
    g.add_argument("--live-seconds", type=float, default=45.0, metavar="S",
                   help="with --method model: seconds of Poisson arrivals after the designed batches, whose steps are "
                   "fitted too (default 45; 0 skips it)")
    g.add_argument("--design-tokens", type=int, default=60_000, metavar="N",
                   help="with --method model, llama.cpp in process: prompt + output tokens of the designed batches, "
                   "at most (default 60000; the biggest batches go first). Lower it for a big model on a CPU (a 7B "
                   "prefills ~100 tokens/s on 12 cores): fewer long-prompt batches, a model less sure of them")
    g = p.add_argument_group("grid, search and time")
    g.add_argument("--quick", action="store_true", help="coarse 3x3 grid, shorter points, looser search (a first look in minutes)")
    g.add_argument("--input-edges", type=_int_list, help="input bucket upper edges, comma-separated (default: Melange's 10)")
    g.add_argument("--output-edges", type=_int_list, help="output bucket upper edges, comma-separated (default: Melange's 6)")
    g.add_argument("--time-budget", type=parse_duration, help="stop after this long (e.g. 20m, 1h, 900s): unmeasured buckets stay null")
    g.add_argument("--resume", action="store_true", help="continue an interrupted run from OUT.partial (same settings)")
    for name, (full, quick) in _DEFAULTS.items():
        g.add_argument(f"--{name.replace('_', '-')}", type=type(full), help=f"{_HELP[name]} (default {full}, --quick {quick})")
    g.add_argument("--seed", type=int, default=0, help="random seed of arrivals and prompts (default 0)")
    g.add_argument("--no-progress", action="store_true", help="no progress bar")


_HELP = {
    "min_requests": "measured requests per point, at least",
    "min_duration": "measurement window per point in s, at least",
    "max_window": "measurement window per point in s, at most (low rates then measure fewer requests)",
    "warmup": "warm-up per point in s, at least (also at least one request's latency)",
    "tolerance": "stop the search when lowest failing / highest passing rate <= 1 + this",
    "max_points": "rates measured per bucket, at most",
}


def run(args: argparse.Namespace) -> int:
    """Entry point of `rayhet profile`; returns the exit status."""
    try:
        if args.from_profile:
            if not args.plot:
                raise ProfilingError("--from only plots an existing profile: add --plot F.png")
            from rayhet.profiling.plot import plot_fit, plot_profile

            profile = load_profile(args.from_profile)
            print(f"wrote {plot_profile(profile, args.plot)}")
            if profile.engine_model is not None and profile.engine_model.points:
                print(f"wrote {plot_fit(profile, Path(args.plot).with_name(Path(args.plot).stem + '-fit.png'))}")
            return 0
        return _measure(args)
    except RayhetError as e:
        print(f"rayhet profile: {e}", file=sys.stderr)
        return 2


def _measure(args: argparse.Namespace) -> int:
    if args.gpu_memory_gb is not None:
        _split_for_budget(args)
    missing = [f for f, v in [("--model", args.model), ("--out", args.out), ("--price-per-hour", args.price_per_hour)] if v is None]
    if missing:
        raise ProfilingError(f"missing {', '.join(missing)} (or give --from PROFILE --plot F.png to only plot)")
    if args.slo_tpot_ms is None and args.slo_ttft_ms is None:
        raise ProfilingError("give an SLO: --slo-tpot-ms and/or --slo-ttft-ms")
    if args.url and not args.max_context:
        raise ProfilingError("--url needs --max-context (the served model's context length)")
    if args.design_tokens < 1:
        raise ProfilingError(f"--design-tokens must be >= 1, got {args.design_tokens}")
    settings = sweep_settings(args)
    out = Path(args.out)
    sidecar = out.with_name(out.name + ".partial")
    target_id = {"engine": args.engine, "model": args.model, "url": args.url, "engine_args": engine_kwargs(args)}
    expected = fingerprint(settings, target_id)
    if sidecar.exists() and not args.resume:
        raise ProfilingError(f"{sidecar} holds an interrupted run: add --resume to continue it, or delete it")
    state = load_state(sidecar, expected) if args.resume and sidecar.exists() else SweepState(fingerprint=expected)

    method = args.method or "model"
    measured = None
    try:
        measured = asyncio.run(_sweep(args, settings, state, sidecar, method))
    except KeyboardInterrupt:
        print(f"\ninterrupted: {len(state.points)} points kept in {sidecar}; rerun with --resume", file=sys.stderr)
        return 130
    profile = build_profile(
        state, settings,
        model=args.model_name or Path(args.model).stem,
        pool=args.pool or out.stem,
        engine=args.engine,
        engine_version=engine_version(args),
        hardware=hardware(args),
        price_per_hour=args.price_per_hour,
        price_source=args.price_source,
        notes=args.notes,
    )
    if measured is not None:
        profile = with_engine_model(profile, measured, settings, state)
    save_profile(profile, out)
    keys = _all_keys(settings) if measured is None else [f"{i},{j}" for i, j in measured.held_out]
    if all(state.status.get(k, "").startswith(FINAL) for k in keys):
        sidecar.unlink(missing_ok=True)
    else:
        print(f"budget spent before every bucket was measured: --resume with a larger --time-budget continues from {sidecar}")
    print(f"wrote {out} ({len(state.points)} points, {state.elapsed_s / 60:.1f} min)")
    if measured is not None:
        em = profile.engine_model
        print(f"engine model: {em.mean_abs_rel_error:.1%} mean step-time error over {len(measured.samples)} steps")
        for line in held_out_lines(profile):
            print(line)
        drifts = [v for h in em.held_out for v in (h.speed_drift or {}).values()]
        if drifts and (max(drifts) > 1.15 or min(drifts) < 1 / 1.15):
            print(f"warning: the engine ran {min(drifts):.2f}-{max(drifts):.2f}x the fitted step times while the "
                  "held-out buckets were measured: this machine's speed moved (shared or throttled?); the profile's "
                  "capacities hold at the speed of the fit, and the checks compare at the speed of the check",
                  file=sys.stderr)
    if args.plot:
        from rayhet.profiling.plot import plot_fit, plot_profile

        print(f"wrote {plot_profile(profile, args.plot)}")
        if profile.engine_model is not None:
            fit_png = Path(args.plot).with_name(Path(args.plot).stem + "-fit.png")
            print(f"wrote {plot_fit(profile, fit_png)}")
    return 0


async def _sweep(args, settings: SweepSettings, state: SweepState, sidecar: Path, method: str = "sweep"):
    """Measure: the whole grid by rate search, or the engine model plus its held-out buckets."""
    target, close = await make_target(args)
    try:
        save = lambda s: save_state(s, sidecar)  # noqa: E731
        if method == "sweep":
            await run_sweep(target, settings, state, save=save, progress=not args.no_progress)
            return None
        measured = await measure_engine_model(target, settings, seed=args.seed, held_out=args.held_out,
                                              progress=not args.no_progress, state=state,
                                              live_seconds=args.live_seconds, url_limits=_url_limits(args),
                                              design_tokens=args.design_tokens,
                                              outside=args.steps == "outside",
                                              check_seconds=60.0 * args.held_out_minutes,
                                              check_requests=args.held_out_requests)
        save(state)  # the steps are in the sidecar now: an interrupted held-out phase resumes after them
        # Each held-out bucket is measured as a check of its prediction (search.check_rate)
        predicted = {(i, j): measured.grid[i][j] for i, j in measured.held_out if measured.grid[i][j]}
        checks = CheckRecorder(measured, settings, state, getattr(target, "engine", None))
        await run_sweep(target, settings, state, save=save, progress=not args.no_progress,
                        only=set(measured.held_out), predicted=predicted,
                        checkpoint=speed_probe(target, measured, state, seed=args.seed),
                        drive=checks.drive, twin=checks.twin,
                        requests={k: c.requests for k, c in (measured.checks or {}).items() if c})
        return measured
    finally:
        await close()


def _url_limits(args: argparse.Namespace):
    """With --url, the served engine's limits as the flags give them (nothing about them is visible)."""
    if not args.url:
        return None
    from rayhet.perf import EngineLimits

    ctx = args.max_context
    return EngineLimits(batch_slots=args.max_batch, step_tokens=args.step_tokens or ctx,
                        kv_tokens=args.kv_tokens or args.max_batch * ctx, max_context=ctx,
                        passes_per_slot_run=bool(getattr(args, "slot_passes", False)))


def sweep_settings(args: argparse.Namespace) -> SweepSettings:
    q = 1 if args.quick else 0
    knob = {name: (getattr(args, name) if getattr(args, name) is not None else pair[q]) for name, pair in _DEFAULTS.items()}
    try:
        slo = SLO(tpot_ms=args.slo_tpot_ms, ttft_ms=args.slo_ttft_ms, ttft_quantile=args.ttft_quantile)
    except ValueError as e:
        raise ProfilingError(f"invalid SLO: {e}") from None
    return SweepSettings(
        slo=slo,
        input_edges=args.input_edges or (QUICK_INPUT_EDGES if args.quick else MELANGE_INPUT_EDGES),
        output_edges=args.output_edges or (QUICK_OUTPUT_EDGES if args.quick else MELANGE_OUTPUT_EDGES),
        search=SearchParams(tolerance=knob["tolerance"], max_points=knob["max_points"]),
        min_requests=knob["min_requests"],
        min_duration_s=knob["min_duration"],
        max_window_s=knob["max_window"],
        min_warmup_s=knob["warmup"],
        time_budget_s=args.time_budget,
        seed=args.seed,
    )


def _split_for_budget(args: argparse.Namespace) -> None:
    """--gpu-memory-gb: the layer split that fits (into the engine's settings), the GPU share, the price."""
    from rayhet.hybrid import GIB, gpu_bytes, gpu_share, hybrid_price, layers_that_fit, read_layers

    if args.engine != "llama_cpp" or args.url:
        raise ProfilingError("--gpu-memory-gb splits a llama_cpp model in process (not with --url or vllm)")
    if not args.model:
        raise ProfilingError("--gpu-memory-gb needs --model (the GGUF file whose layers are split)")
    total = args.gpu_total_gb or _gpu_memory_gb()
    if total is None:
        raise ProfilingError("--gpu-memory-gb: give --gpu-total-gb (nvidia-smi is not there to tell)")
    kw = engine_kwargs(args)
    try:
        layers = read_layers(args.model)
    except (OSError, ValueError) as e:
        raise ProfilingError(f"--model {args.model}: {e}") from None
    kv_tokens = kw.get("n_ctx", 2048) * kw.get("n_slots", 8)  # the engine's KV: a full context per slot
    budget = int(args.gpu_memory_gb * GIB)
    k = layers_that_fit(layers, budget, kv_tokens)
    if k == 0:
        raise ProfilingError(f"--gpu-memory-gb {args.gpu_memory_gb}: not even one layer of {args.model} and its KV "
                             f"cache ({kv_tokens} tokens) fits; profile it as a CPU pool")
    args.engine_arg = [*args.engine_arg, f"n_gpu_layers={k}"]
    share = gpu_share(budget, int(total * GIB))
    args.gpu_split = {"gpu_memory_gb": args.gpu_memory_gb, "gpu_share": share, "n_gpu_layers": k,
                      "n_layers": layers.n_layers, "gpu_bytes_estimated": gpu_bytes(layers, k, kv_tokens)}
    if args.price_per_hour is None and args.gpu_price_per_hour is not None and args.vcpu_price_per_hour is not None:
        vcpus = args.vcpus or args.n_threads or _engine_threads(args) or 1
        args.price_per_hour = round(hybrid_price(args.gpu_price_per_hour, share, args.vcpu_price_per_hour, vcpus), 4)
        args.price_source = args.price_source or (f"{share} x ${args.gpu_price_per_hour}/h of the GPU + {vcpus} "
                                                  f"vCPUs x ${args.vcpu_price_per_hour}/h")
    n = layers.n_layers
    where = f"all {n} layers and the output head" if k > n else f"{k} of {n} layers"
    print(f"hybrid split: {where} "
          f"on the GPU (~{gpu_bytes(layers, k, kv_tokens) / GIB:.2f} of {args.gpu_memory_gb} GB), share {share} of "
          f"a {total:.0f} GB GPU", file=sys.stderr)


def _gpu_memory_gb() -> float | None:
    """The first GPU's memory as nvidia-smi reports it (GiB), or None without one."""
    import subprocess

    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=memory.total", "--format=csv,noheader,nounits"],
                             capture_output=True, text=True, timeout=30).stdout.split()
        return float(out[0]) / 1024 if out else None  # MiB
    except (OSError, subprocess.SubprocessError, ValueError):
        return None


def engine_kwargs(args: argparse.Namespace) -> dict:
    kw = {k: v for k, v in [("n_ctx", args.n_ctx), ("n_slots", args.n_slots), ("n_threads", args.n_threads)] if v is not None}
    for item in args.engine_arg:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ProfilingError(f"--engine-arg {item!r}: expected KEY=VALUE")
        try:
            kw[key] = json.loads(value)
        except json.JSONDecodeError:
            kw[key] = value
    return kw


async def make_target(args: argparse.Namespace):
    """The target to drive and an async function that releases it."""
    from rayhet.profiling.targets import EngineTarget, HttpTarget

    if args.url:
        t = HttpTarget(args.url, args.model, args.max_context, max_batch=args.max_batch)
        return t, t.aclose
    kw = engine_kwargs(args)
    if args.engine == "llama_cpp":
        from rayhet.engines.llama_cpp import LlamaCppEngine as Engine, LlamaCppSettings as Settings
    else:
        from rayhet.engines.vllm import VllmEngine as Engine, VllmSettings as Settings
    try:
        settings = Settings(model_path=args.model, **kw) if args.engine == "llama_cpp" else Settings(model=args.model, **kw)
    except (TypeError, ValueError) as e:
        raise ProfilingError(f"engine settings: {e}") from None
    engine = Engine(settings)
    await engine.start()
    return EngineTarget(engine), engine.shutdown


def engine_version(args: argparse.Namespace) -> str:
    dist = {"llama_cpp": "llama_cpp_python", "vllm": "vllm"}[args.engine]
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "unknown"


def hardware(args: argparse.Namespace) -> Hardware:
    extra = f"; {args.hardware_description}" if args.hardware_description else ""
    if args.url:
        where = f"measured over HTTP at {args.url}{extra}"
    else:
        kw = engine_kwargs(args)
        where = f"{cpu_model()}; {args.engine} {', '.join(f'{k}={v}' for k, v in kw.items())}{extra}"
    split = getattr(args, "gpu_split", None)
    if split is not None:  # a hybrid pool: its GPU and its host side
        vcpus = args.vcpus or args.n_threads or _engine_threads(args) or os.cpu_count() or 1
        return Hardware(accelerator=args.accelerator or "GPU", vcpus=vcpus, memory_gb=split["gpu_memory_gb"],
                        description=where, gpu_split=split)
    if args.accelerator:
        return Hardware(accelerator=args.accelerator, accelerator_count=args.accelerator_count, description=where)
    vcpus = args.vcpus or args.n_threads or _engine_threads(args) or os.cpu_count() or 1
    return Hardware(vcpus=vcpus, memory_gb=host_memory_gb(), description=where)


def _engine_threads(args: argparse.Namespace) -> int | None:
    """The threads an in-process llama.cpp engine used when --n-threads was not given."""
    if args.url or args.engine != "llama_cpp":
        return None
    from rayhet.engines.llama_cpp import default_threads

    return engine_kwargs(args).get("n_threads") or default_threads()


def _all_keys(settings: SweepSettings) -> list[str]:
    return [f"{i},{j}" for i in range(len(settings.input_edges)) for j in range(len(settings.output_edges))]


def parse_duration(text: str) -> float:
    """'20m' -> 1200.0; also 's', 'h', and bare seconds."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smh]?)\s*", text)
    if not m:
        raise argparse.ArgumentTypeError(f"not a duration: {text!r} (try 90s, 20m, 1h)")
    return float(m.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600}[m.group(2)]


def _int_list(text: str) -> list[int]:
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a comma-separated list of integers: {text!r}") from None
