"""Report: a simulated run in numbers — per window and in total: $, replicas, requests per pool, spills,
refusals, latency percentiles, SLO attainment — as JSON-ready dicts, a table, and plots.

SLO attainment is the share of requests within every stated limit of the SLO, each judged on its own
(rayhet.slo.within); a request refused, rejected or failed counts as missing it. "SLO met" is the SLO's
own verdict on the window's sample (its quantiles and means: rayhet.slo.meets).
"""

from __future__ import annotations

import math

import numpy as np

from rayhet.slo import Sample, meets, within


def _lat(values: np.ndarray) -> dict | None:
    if not len(values):
        return None
    return {"mean": float(values.mean()), "p50": float(np.quantile(values, 0.5)),
            "p90": float(np.quantile(values, 0.9)), "p99": float(np.quantile(values, 0.99))}


def _arrays(requests):
    n = len(requests)
    arrival = np.fromiter((r.arrival for r in requests), float, n)
    ok = np.fromiter((r.outcome == "ok" for r in requests), bool, n)
    first = np.fromiter((r.first_token if r.first_token is not None else np.nan for r in requests), float, n)
    end = np.fromiter((r.end if r.end is not None else np.nan for r in requests), float, n)
    n_in = np.fromiter((r.input_tokens for r in requests), float, n)
    n_out = np.fromiter((r.output_tokens for r in requests), float, n)
    return arrival, ok, first, end, n_in, n_out


def _sample(arrival, ok, first, end, n_in, n_out) -> Sample:
    tpot = (end - first) / np.maximum(n_out - 1, 1)
    return Sample((first - arrival)[ok], tpot[ok], (end - arrival)[ok], n_in[ok], n_out[ok])


def sample_of(requests) -> tuple[Sample, np.ndarray]:
    """The finished requests' latencies (rayhet.slo.Sample), and the mask of which requests finished."""
    a = _arrays(requests)
    return _sample(*a), a[1]


def summarize(result, slo, *, window_s: float = 60.0, name: str = "") -> dict:
    """Totals and per-window series of one run (`rayhet.sim.fleet.FleetResult`)."""
    reqs = result.requests
    a = _arrays(reqs)  # once: a day's million requests
    arrival, ok = a[0], a[1]
    s = _sample(*a)
    good = np.zeros(len(reqs), bool)
    if slo is not None:
        good[ok] = within(slo, s)
    else:
        good = ok.copy()
    pools = sorted(result.prices)
    # the pool that served each request: one refused after waiting there (server.max_wait_s) counts nowhere, as
    # in a real run, where a refusal does not say which pool it waited on
    pool_of = np.array([(r.pool or "") if r.outcome == "ok" else "" for r in reqs])
    outcome = np.array([r.outcome for r in reqs])
    spilled = np.fromiter((r.spilled for r in reqs), bool, len(reqs))
    duration = max(result.duration_s, 1e-9)
    hours = duration / 3600.0
    cost = result.cost()
    total = {
        "policy": name,
        "requests": len(reqs),
        "duration_s": duration,
        "cost_usd": cost,
        "cost_per_hour": cost / hours if hours else 0.0,
        "slo_attainment": float(good.mean()) if len(reqs) else 1.0,
        "slo_met": bool(meets(slo, s)) if slo is not None and len(s.ttft) else None,
        "ok": int(ok.sum()),
        "refused": int((outcome == "refused").sum()),
        "rejected": int((outcome == "rejected").sum()),
        "failed": int((outcome == "failed").sum()),
        "spilled": int(spilled.sum()),
        "ttft_s": _lat(s.ttft), "tpot_s": _lat(s.tpot),
        "normalized_s_per_token": _lat(s.e2e / np.maximum(s.output_tokens, 1)),
        "requests_per_pool": {p: int((pool_of == p).sum()) for p in pools},
        "replica_hours": {p: sum(b - a for q, a, b in result.replica_spans if q == p) / 3600.0 for p in pools},
        "plans": len(result.plans),
        "scale_ups": len(result.scale_ups),
    }
    windows = []
    n_win = max(1, math.ceil(duration / window_s - 1e-9))
    idx = np.minimum((arrival // window_s).astype(int), n_win - 1) if len(reqs) else np.zeros(0, int)
    for w in range(n_win):
        a, b = w * window_s, min((w + 1) * window_s, duration)
        m = idx == w
        mw = m & ok
        ws = Sample(s.ttft[m[ok]], s.tpot[m[ok]], s.e2e[m[ok]], s.input_tokens[m[ok]], s.output_tokens[m[ok]])
        reps = {p: sum(max(0.0, min(hi, b) - max(lo, a)) for q, lo, hi in result.replica_spans if q == p)
                / max(b - a, 1e-9) for p in pools}
        windows.append({
            "start_s": a, "end_s": b,
            "arrivals": int(m.sum()), "rate": float(m.sum() / max(b - a, 1e-9)),
            "cost_usd": result.cost(a, b),
            "cost_per_hour": sum(reps[p] * result.prices[p] for p in pools),
            "replicas": reps,
            "requests_per_pool": {p: int((m & (pool_of == p)).sum()) for p in pools},
            "spilled": int((m & spilled).sum()),
            "refused": int((m & (outcome == "refused")).sum()),
            "failed": int((m & (outcome == "failed")).sum()),
            "slo_attainment": float(good[m].mean()) if m.any() else None,
            "slo_met": bool(meets(slo, ws)) if slo is not None and mw.any() else None,
            "ttft_p90_s": float(np.quantile(ws.ttft, 0.9)) if len(ws.ttft) else None,
            "tpot_p90_s": float(np.quantile(ws.tpot, 0.9)) if len(ws.tpot) else None,
        })
    return {"total": total, "windows": windows, "prices": dict(result.prices),
            "scale_ups": [{"at_s": t, "pool": p, "ready_s": r} for t, p, _, r in result.scale_ups],
            "plans": [{"at_s": t, "replicas": rep, "cost_per_hour": c} for t, rep, c in result.plans],
            "decisions": result.decisions}


def table(rows: list[dict]) -> str:
    """The --compare table: one line per policy."""
    head = f"{'policy':44} {'$':>10} {'$/h':>8} {'SLO att.':>8} {'SLO met':>7} {'refused':>7} {'failed':>6} {'TTFT p90':>9} {'TPOT p90':>9}"
    lines = [head, "-" * len(head)]
    for r in rows:
        t = r["total"] if "total" in r else r
        ttft = t.get("ttft_s") or {}
        tpot = t.get("tpot_s") or {}
        met = {True: "yes", False: "no", None: "-"}[t.get("slo_met")]
        att = "-" if t.get("slo_attainment") is None else f"{100 * t['slo_attainment']:.1f}%"
        lines.append(
            f"{t['policy'][:44]:44} {t['cost_usd']:10.2f} {t['cost_per_hour']:8.3f} {att:>8} {met:>7} "
            f"{t.get('refused', 0):7d} {t.get('failed', 0):6d} "
            f"{(str(round(ttft['p90'] * 1000)) + ' ms') if ttft else '-':>9} "
            f"{(str(round(tpot['p90'] * 1000, 1)) + ' ms') if tpot else '-':>9}")
    return "\n".join(lines)


def plot(summaries: list[dict], out_dir, results=None) -> list:
    """Per policy: stacked replicas and $/h per pool over time under the request rate; SLO attainment over
    time (all policies); latency CDFs per policy. Returns the files written."""
    from pathlib import Path

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    files = []
    for s in summaries:
        w = s["windows"]
        t = np.array([x["start_s"] for x in w]) / 3600.0
        pools = sorted(w[0]["replicas"]) if w else []
        fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(10, 6), sharex=True)
        ax1.stackplot(t, [[x["replicas"][p] for x in w] for p in pools], labels=pools, step="post", alpha=0.8)
        ax1.set_ylabel("replicas")
        rate_ax = ax1.twinx()
        rate_ax.plot(t, [x["rate"] for x in w], color="black", lw=1, label="req/s")
        rate_ax.set_ylabel("req/s")
        ax1.legend(loc="upper left", fontsize=8)
        ax2.stackplot(t, [[x["replicas"][p] * s["prices"][p] for x in w] for p in pools] if "prices" in s else
                      [[0] * len(w)], labels=pools, step="post", alpha=0.8)
        ax2.set_ylabel("$/h")
        ax2.set_xlabel("hours")
        fig.suptitle(f"{s['total']['policy']}: ${s['total']['cost_usd']:.2f}, "
                     f"SLO attainment {100 * s['total']['slo_attainment']:.1f}%")
        f = out / f"replicas-{_slug(s['total']['policy'])}.png"
        fig.tight_layout()
        fig.savefig(f, dpi=110)
        plt.close(fig)
        files.append(f)
    fig, ax = plt.subplots(figsize=(10, 3.5))
    for s in summaries:
        w = s["windows"]
        ax.plot([x["start_s"] / 3600.0 for x in w], [100 * x["slo_attainment"] if x["slo_attainment"] is not None
                                                     else np.nan for x in w], label=s["total"]["policy"], lw=1)
    ax.set_ylabel("SLO attainment %")
    ax.set_xlabel("hours")
    ax.legend(fontsize=7)
    f = out / "slo-attainment.png"
    fig.tight_layout()
    fig.savefig(f, dpi=110)
    plt.close(fig)
    files.append(f)
    if results:
        fig, axes = plt.subplots(1, 2, figsize=(10, 3.5))
        for name, res in results:
            smp, _ = sample_of(res.requests)
            for ax, v, label in ((axes[0], smp.ttft, "TTFT (s)"), (axes[1], smp.tpot * 1000, "TPOT (ms)")):
                if len(v):
                    x = np.sort(v)
                    ax.plot(x, np.arange(1, len(x) + 1) / len(x), label=name, lw=1)
                    ax.set_xlabel(label)
        axes[0].set_ylabel("share of requests")
        axes[0].set_xscale("log")
        axes[1].legend(fontsize=7)
        f = out / "latency-cdf.png"
        fig.tight_layout()
        fig.savefig(f, dpi=110)
        plt.close(fig)
        files.append(f)
    return files


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in name.lower()).strip("-")[:60] or "run"
