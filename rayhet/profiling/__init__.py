"""Profiling: measure a pool's capacity per request-size bucket under an SLO (`rayhet profile`)."""

from rayhet.profiling.command import add_arguments, run

__all__ = ["add_arguments", "run"]
