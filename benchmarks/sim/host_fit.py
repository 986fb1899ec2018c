"""The serving stack's share of a host's cores, from a validation run's process samples (benchmarks/sim_validation.py
records, every few seconds, each process's cores from /proc and each pool engine's tokens/s): the cores of
everything that is not a pool replica against the tokens streamed per second,

    stack cores = base_cpus + stack_cpu_s_per_token x tokens/s      (rayhet.sim.host.fit_stack_share)

which are HostContention's `base_cpus` and `stack_cpu_ms_per_token` for a host whose cores the pools share with
the stack (rayhet.sim.host). Fitted from CPU accounting alone, so a simulation with them can be checked against
the same run's latencies without having been fitted on them. Processes under procstat's 0.05-core threshold in a
sample are not in it (Ray's raylet and GCS, mostly): `base_cpus` is a lower bound. `rayhet calibrate --host-cpus`
measures the same before a run, every process counted.

    python benchmarks/sim/host_fit.py benchmarks/results/sim-validation-2vcpu-cal.json
"""

from __future__ import annotations

import json
import sys

from rayhet.sim.host import HostSample, fit_stack_share, stack_cores


def host_samples(samples: list[dict]) -> list[HostSample]:
    """sim_validation.py's samples (equal stretches) as HostSamples."""
    out = []
    for s in samples:
        stack, engines = stack_cores(s["cores"])
        out.append(HostSample(1.0, sum((e.get("tokens_per_s") or 0.0) for e in s["engines"].values()), stack, engines))
    return out


def fit(samples: list[dict]) -> dict:
    hs = host_samples(samples)
    base, per_token, resid = fit_stack_share(hs)
    return {"samples": len(hs), "base_cpus": round(base, 3), "stack_cpu_ms_per_token": round(per_token * 1e3, 2),
            "residual_cores_p90": round(resid, 3), "tokens_per_s_max": round(max(s.tokens_per_s for s in hs), 1),
            "engine_cores_max": round(max(s.engine_cores for s in hs), 2)}


if __name__ == "__main__":
    for path in sys.argv[1:]:
        print(path, json.dumps(fit(json.load(open(path))["samples"])))
