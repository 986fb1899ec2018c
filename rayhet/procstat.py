"""Which processes use the CPU during a benchmark: each process's CPU share between two looks, from /proc (Linux;
the standard library only: the GPU machine has no psutil). Used by `rayhet calibrate --host-cpus` to measure the
serving stack's share of a host's cores (rayhet.sim.host), and by benchmarks/sim_validation.py to tell an engine
that is saturated from a serving stack that is (the ingress, Serve's proxy, a pool replica's Python front end, the
load client).

    look = cpu_times()            # {pid: (label, cpu seconds)}
    ... later ...
    busy = cpu_share(look, cpu_times(), seconds)   # {label: cores busy}, labels summed
"""

from __future__ import annotations

import os
from pathlib import Path

_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def label(cmdline: str) -> str:
    """A short name for a process: Ray's actor title (`ray::ServeReplica:default:pool-h200`), vLLM's engine core,
    else the program and its first argument (`python sim_validation.py`)."""
    words = cmdline.split()
    if not words:
        return "?"
    if words[0].startswith(("ray::", "VLLM::")):
        # Ray retitles a worker while it runs a method (`ray::ServeReplica:default:ingress.handle_request`):
        # one process, one label
        return words[0].split(".", 1)[0][:60]
    prog = os.path.basename(words[0])
    if prog.startswith("python") and len(words) > 1:
        arg = words[2] if words[1] == "-m" and len(words) > 2 else os.path.basename(words[1])
        return f"python {arg}"[:60]
    return prog[:60]


def cpu_times(root: str = "/proc") -> dict[int, tuple[str, float]]:
    """{pid: (label, user + system CPU seconds)} for every process readable now."""
    out: dict[int, tuple[str, float]] = {}
    for d in Path(root).iterdir():
        if not d.name.isdigit():
            continue
        try:
            stat = (d / "stat").read_text()
            cmd = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:  # gone meanwhile, or not ours to read
            continue
        fields = stat[stat.rfind(")") + 2:].split()  # after "(comm)": the name itself may hold spaces
        utime, stime = int(fields[11]), int(fields[12])  # fields 14 and 15 of proc(5)
        out[int(d.name)] = (label(cmd) if cmd else stat[stat.find("(") + 1:stat.rfind(")")], (utime + stime) / _TICK)
    return out


def cpu_share(before: dict[int, tuple[str, float]], after: dict[int, tuple[str, float]], seconds: float,
              min_cores: float = 0.05) -> dict[str, float]:
    """Cores busy per label between two looks (a process new since `before` counts from 0), largest first;
    labels under `min_cores` left out."""
    busy: dict[str, float] = {}
    for pid, (name, t) in after.items():
        t0 = before.get(pid, (name, 0.0))[1]
        busy[name] = busy.get(name, 0.0) + max(0.0, t - t0) / max(seconds, 1e-9)
    return {k: round(v, 2) for k, v in sorted(busy.items(), key=lambda kv: -kv[1]) if v >= min_cores}
