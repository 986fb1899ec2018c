"""Markdown tables from the GPU result files (so gpu-results.md is copied from the JSON, not typed).

    python benchmarks/gpu/summarise.py app benchmarks/results/gpu-app-low-high-h100.json ...
    python benchmarks/gpu/summarise.py throughput benchmarks/results/gpu-pool-throughput-h100-b.json ...
"""

from __future__ import annotations

import json
import sys

PATHS = ("http", "handle", "http_stream", "http_again")


def _p(d: dict | None) -> str:
    return " / ".join(f"{d[k]:g}" for k in ("p50", "p90", "p99")) if d else "-"


def app(files: list[str]) -> None:
    print("| rate (req/s) | pool | served | TTFT ms p50 / p90 / p99 | TPOT ms p50 / p90 / p99 | SLO met |")
    print("| --- | --- | --- | --- | --- | --- |")
    for f in files:
        for r in json.load(open(f))["runs"]:
            for name, p in sorted(r["ingress"]["pools"].items()):
                print(f"| {r['rate']:g} | {name} | {p['ok']}/{p['requests']} | {_p(p['ttft_ms'])} | {_p(p['tpot_ms'])} | "
                      f"{100 * p['slo_attainment']:.1f}% |")
            c = r["client"]
            print(f"| {r['rate']:g} | all (client) | {c['ok']}/{c['sent']} | {_p(c['ttft_ms'])} | {_p(c['tpot_ms'])} | "
                  f"{100 * c['slo_attainment']:.1f}% |")
    print()
    print("| rate | rayhet plan | $/h | H100-only plan | $/h |")
    print("| --- | --- | --- | --- | --- |")
    for f in files:
        for r in json.load(open(f))["runs"]:
            plan = " + ".join(f"{k} ×{v}" for k, v in r["plan"]["replicas"].items() if v)
            only = r.get("h100_only", {})
            print(f"| {r['rate']:g} | {plan} | {r['plan']['cost_per_hour']:.2f} | "
                  f"{' + '.join(f'{k} ×{v}' for k, v in only.get('replicas', {}).items())} | {only.get('cost_per_hour', float('nan')):.2f} |")


def _runs(d: dict) -> list[dict]:
    if "runs" in d:
        return d["runs"]
    # the first layout (2026-11-21, commit 69ff5c5): one key per step
    return [dict(d[k], step=k) for k in ("offline", "engine", "serve", "serve-opt") if k in d]


def throughput(files: list[str]) -> None:
    print("| file | order | step | ingress replicas | Serve mode | path | output tok/s | of LLM.generate (mean of the file's runs) |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for f in files:
        runs = _runs(json.load(open(f)))
        base = [r["output_tokens_per_s"] for r in runs if r["step"] == "offline"]
        mean = sum(base) / len(base)
        name = f.rsplit("/", 1)[-1]
        for k, r in enumerate(runs):
            if r["step"] in ("offline", "engine"):
                print(f"| {name} | {k} | {r['step']} | | | | {r['output_tokens_per_s']:,.0f} | {r['output_tokens_per_s'] / mean:.1%} |")
                continue
            mode = "throughput" if r.get("throughput_optimized") else "default"
            for path in PATHS:
                if path in r:
                    v = r[path]["output_tokens_per_s"]
                    print(f"| {name} | {k} | {r['step']} | {r.get('ingress_replicas', 1)} | {mode} | {path} | {v:,.0f} | {v / mean:.1%} |")


if __name__ == "__main__":
    {"app": app, "throughput": throughput}[sys.argv[1]](sys.argv[2:])
