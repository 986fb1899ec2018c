"""Failures: what an exception from a pool call means for the request, and what the client may be told.

A call to a pool replica can fail in four ways that the ingress treats differently:
- `INVALID`: the engine says the request is wrong (prompt + max_tokens over its context, a bad sampling
  value). A 400; no other pool would differ.
- `BUSY`: the pool pushed back before running it (Serve's BackPressureError, the engine's full queue).
  Not an error of the pool: the next pool is tried.
- `LOST`: the replica died or became unreachable (Ray's actor errors). Nothing of the request ran to the
  client, so it is safe to send it again, once, to another replica or pool.
- `FAILED`: anything else (an engine bug, an out-of-memory); the pool is tried last for a while.

Exceptions raised in a replica come back wrapped by Ray, and their text carries the replica's traceback
(pid, IP, actor id, file paths, terminal colours). `safe_message` is the only text of a pool's exception
that reaches a client: the original exception's own message for INVALID, fixed words otherwise.
"""

from __future__ import annotations

from enum import Enum

from rayhet.engines.base import EngineOverloadedError, InvalidRequestError


class Failure(Enum):
    INVALID = "invalid"
    BUSY = "busy"
    LOST = "lost"
    FAILED = "failed"


_LOST_NAMES = ("ActorDiedError", "ActorUnavailableError", "RayActorError", "ReplicaUnavailableError",
               "WorkerCrashedError", "NodeDiedError", "ObjectLostError", "OwnerDiedError")
_BUSY_NAMES = ("BackPressureError", "EngineOverloadedError")

_WORDS = {
    Failure.BUSY: "is at its queue limit",
    Failure.LOST: "lost the replica serving the request",
    Failure.FAILED: "failed to run the request",
}


def cause(e: BaseException) -> BaseException:
    """The exception the replica raised, without Ray's wrapper (RayTaskError keeps it as `.cause`)."""
    inner = getattr(e, "cause", None)
    return inner if isinstance(inner, BaseException) else e


def classify(e: BaseException) -> Failure:
    """What a pool call's exception means for the request (see module docstring)."""
    c = cause(e)
    if isinstance(c, InvalidRequestError):
        return Failure.INVALID
    names = {t.__name__ for t in type(e).__mro__} | {t.__name__ for t in type(c).__mro__}
    if isinstance(c, EngineOverloadedError) or names & set(_BUSY_NAMES):
        return Failure.BUSY
    if names & set(_LOST_NAMES):
        return Failure.LOST
    return Failure.FAILED


def safe_message(e: BaseException) -> str:
    """Text of an INVALID failure fit for the client: the engine's own message, first line only."""
    c = cause(e)
    text = str(c.args[0]) if c.args else type(c).__name__
    return text.strip().splitlines()[0][:500] if text.strip() else "the request is invalid"


# an engine names the fields of its GenerationRequest; the client sent the request's own
_REQUEST_FIELDS = {"prompt_token_ids": "prompt"}


def param_of(e: BaseException) -> str | None:
    """The request field an INVALID failure names, in the client's words (`prompt`, not `prompt_token_ids`)."""
    param = getattr(cause(e), "param", None)
    return _REQUEST_FIELDS.get(param, param)


def describe(pool: str, failure: Failure) -> str:
    """One pool's failure in the words a refusal's message uses: 'pool cpu is at its queue limit'."""
    return f"pool {pool} {_WORDS.get(failure, 'failed')}"
