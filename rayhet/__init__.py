"""rayhet: serve LLMs on a mix of GPU types and CPUs at the lowest cost that meets a latency SLO.

The public face is small; heavy modules (Ray, engines, the solver) are imported lazily by their users.
"""

__version__ = "0.1.0"
