"""`rayhet trace`: make reproducible traces (see rayhet.sim.trace)."""

from rayhet.sim.command import add_trace_arguments as add_arguments  # noqa: F401
from rayhet.sim.command import run_trace as run  # noqa: F401
