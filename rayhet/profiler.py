"""Profiler: the `rayhet profile` subcommand; the work is in the rayhet.profiling package."""

from rayhet.profiling import add_arguments, run

__all__ = ["add_arguments", "run"]
