"""Plot: a profile's capacity per (input, output) bucket as an annotated heatmap (matplotlib, Agg)."""

from __future__ import annotations

from pathlib import Path

from rayhet.profiles import Profile


def plot_profile(profile: Profile, path: str | Path) -> Path:
    """Write the heatmap of `profile.max_rate` to `path` (PNG/SVG/PDF by suffix); null buckets are hatched."""
    import matplotlib

    matplotlib.use("Agg")  # files only: no display on servers
    import matplotlib.pyplot as plt
    import numpy as np
    from matplotlib.colors import LogNorm
    from matplotlib.ticker import FuncFormatter

    rates = np.array([[np.nan if r is None else r for r in row] for row in profile.max_rate], dtype=float)
    n_in, n_out = rates.shape
    fig, ax = plt.subplots(figsize=(1.2 * n_out + 2.5, 0.45 * n_in + 2.0))
    ax.set_facecolor("#eeeeee")
    positive = rates[np.isfinite(rates) & (rates > 0)]
    norm = LogNorm(positive.min(), positive.max()) if positive.size and positive.min() < positive.max() else None
    im = ax.imshow(np.where(rates > 0, rates, np.nan), cmap="viridis", norm=norm, origin="lower", aspect="auto")
    for i in range(n_in):
        for j in range(n_out):
            r = rates[i, j]
            if np.isfinite(r):
                ax.text(j, i, f"{r:.3g}", ha="center", va="center", fontsize=8,
                        color="white" if norm is None or norm(r) < 0.6 else "black")
            else:
                ax.add_patch(plt.Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, hatch="//", edgecolor="#bbbbbb", lw=0))
                ax.text(j, i, "—", ha="center", va="center", fontsize=8, color="#888888")
    ax.set_xticks(range(n_out), [f"≤{e}" for e in profile.output_edges])
    ax.set_yticks(range(n_in), [f"≤{e}" for e in profile.input_edges])
    ax.set_xlabel("output tokens")
    ax.set_ylabel("input tokens")
    slo = profile.slo
    parts = [f"TPOT ≤ {slo.tpot_ms:g} ms" if slo.tpot_ms else "",
             f"TTFT p{slo.ttft_quantile * 100:g} ≤ {slo.ttft_ms:g} ms" if slo.ttft_ms else "",
             "SLO unknown" if slo.unknown else ""]
    hw = profile.hardware.accelerator or f"{profile.hardware.vcpus} vCPU"
    ax.set_title(f"{profile.model} on {profile.pool} ({hw}, {profile.engine})\n"
                 f"max req/s per replica, {', '.join(p for p in parts if p)}; — = cannot meet the SLO / not measured",
                 fontsize=9)
    bar = fig.colorbar(im, ax=ax, label="req/s")
    bar.ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    bar.ax.yaxis.set_minor_formatter(FuncFormatter(lambda v, _: f"{v:g}" if str(f"{v:g}")[0] in "25" else ""))
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_fit(profile: Profile, path: str | Path) -> Path:
    """Measured against predicted step times of the profile's engine model (log-log, one dot a step),
    coloured by the step's kind, with the y = x line and ±25 % band."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    em = profile.engine_model
    if em is None or not em.points:
        raise ValueError(f"profile {profile.pool} has no engine-model points to plot")
    meas = np.array([p.seconds for p in em.points]) * 1e3
    pred = np.array([p.predicted_s for p in em.points]) * 1e3
    prefill = np.array([p.work[1] > 0 for p in em.points])
    fig, ax = plt.subplots(figsize=(6, 5))
    ax.scatter(pred[~prefill], meas[~prefill], s=6, alpha=0.5, label="decode-only steps")
    ax.scatter(pred[prefill], meas[prefill], s=10, alpha=0.7, label="steps with prefill")
    lo, hi = max(min(meas.min(), pred.min()) * 0.8, 1e-3), max(meas.max(), pred.max()) * 1.25
    xs = np.geomspace(lo, hi, 50)
    ax.plot(xs, xs, "k-", lw=1, label="measured = predicted")
    ax.fill_between(xs, xs * 0.75, xs * 1.25, color="grey", alpha=0.15, label="±25 %")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("predicted step time (ms)")
    ax.set_ylabel("measured step time (ms)")
    ax.set_title(f"{profile.model} on {profile.pool}: step-time model\n"
                 f"mean |error| {em.mean_abs_rel_error:.1%} over {len(em.points)} steps", fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
