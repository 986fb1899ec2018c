"""Errors: the typed exceptions rayhet raises, each saying what is wrong and where."""


class RayhetError(Exception):
    """Base class of every error rayhet raises on purpose."""


class ProfileError(RayhetError, ValueError):
    """A profile file is malformed; the message names the file and the field."""


class WorkloadError(RayhetError, ValueError):
    """A workload sample cannot be read or bucketed; the message names the file and the row."""


class ConfigError(RayhetError, ValueError):
    """A rayhet config is invalid; the message names the field."""


class PlanningError(RayhetError):
    """The planner cannot produce a plan (infeasible, unservable buckets, solver failure)."""


class CapacityExceeded(PlanningError):
    """Every pool at its `max_replicas` together cannot carry the rate: a smaller share of it can be planned."""
