"""Refit a hybrid llama.cpp profile's engine model with the op-offload term, from the steps it already holds.

The 7B hybrid profiles of 2026-12-01 (profiles/rayhet-7b/h200-{4,16}gb.json) were measured before the step model
had `c_offload`: llama.cpp's CUDA build runs every step of >= 32 tokens on the GPU, copying the host layers'
weights first, so such a step costs about a second whatever its size (rayhet.profiling.engine_model.
op_offload_min_batch). Their raw steps are in the files: this marks each one-step point of >= 32 tokens as
offloaded, refits (rayhet.perf.fit_step_model), sets the limits' offload_min_batch, re-derives max_rate under the
profile's own SLO and writes the file back with a note in its provenance. A profile measured now gets the term
from `rayhet profile` itself.
    python benchmarks/gpu/refit_offload.py profiles/rayhet-7b/h200-4gb.json profiles/rayhet-7b/h200-16gb.json
"""

from __future__ import annotations

import argparse
import time

from rayhet.capacity import for_slo
from rayhet.perf import StepWork, fit_step_model
from rayhet.profiles import load_profile, save_profile

MIN_BATCH = 32  # ggml-cuda's GGML_OP_OFFLOAD_MIN_BATCH default, the build these profiles were measured with


def work_of(vector: list[float]) -> StepWork:
    v = list(vector) + [0.0] * (8 - len(vector))
    steps, prefill, dec, ctx, pairs_k, passes, multi, _ = v
    offloaded = steps == 1 and prefill + dec >= MIN_BATCH
    return StepWork(steps, prefill, dec, ctx, pairs_k * 1000.0, passes, multi, float(offloaded))


def refit(path: str) -> None:
    p = load_profile(path)
    em = p.engine_model
    if em is None or p.hardware.gpu_split is None:
        raise SystemExit(f"{path}: not a hybrid profile with an engine model")
    work = [work_of(pt.work) for pt in em.points]
    fit = fit_step_model(work, [pt.seconds for pt in em.points])
    points = [pt.model_copy(update={"work": [float(x) for x in w.vector()], "predicted_s": fit.model.time(w)})
              for pt, w in zip(em.points, work)]
    limits = {**em.limits, "offload_min_batch": MIN_BATCH}
    em2 = em.model_copy(update={"step": fit.model.model_dump(), "limits": limits, "points": points,
                                "mean_abs_rel_error": fit.mean_abs_rel_error, "max_abs_rel_error": fit.max_abs_rel_error})
    p2 = for_slo(p.model_copy(update={"engine_model": em2}), p.slo)
    note = (f" Refit {time.strftime('%Y-%m-%d')} from the same {len(points)} steps with the op-offload term "
            f"(c_offload {fit.model.c_offload * 1000:.0f} ms per step of >= {MIN_BATCH} tokens; mean step-time error "
            f"{em.mean_abs_rel_error:.1%} -> {fit.mean_abs_rel_error:.1%}) and max_rate re-derived "
            "(benchmarks/gpu/refit_offload.py).")
    prov = p2.provenance.model_copy(update={"notes": (p2.provenance.notes or "") + note})
    save_profile(p2.model_copy(update={"provenance": prov}), path)
    print(f"{path}: {note.strip()}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("profiles", nargs="+")
    for path in ap.parse_args().profiles:
        refit(path)


if __name__ == "__main__":
    main()
