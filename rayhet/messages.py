"""Messages between rayhet's processes, typed and versioned.

Every ingress replica, the controller actor and each pool's Serve policy live in different processes and
may run different rayhet versions during an upgrade. What they send each other is one of these models,
sent as its `model_dump()` (plain data through Ray) and read back with `model_validate`, so a message of
another shape is a clear validation error naming the field, not a KeyError deep in the control loop.

- `PlanReport`: an ingress replica -> the controller, every `controller.report_s`; `PlanReply` back.
- `PoolReport`: a pool's Serve autoscaling policy -> the controller, every `controller.policy_poll_s`;
  the reply is the pool's replica target (an int, or None before the controller has one).

The traffic snapshot inside a PlanReport keeps its own documented schema and version (rayhet.traffic).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

MESSAGES_VERSION = 1


class _Message(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    version: Literal[1] = Field(MESSAGES_VERSION, description="Message schema version.")


class PlanReport(_Message):
    """What an ingress replica tells the controller."""

    replica: str = Field(..., description="Serve's replica id of the ingress replica.")
    build: float | None = Field(None, description="Its deployment: the controller spec's created_at.")
    plan_version: float | None = Field(..., description="created_at of the plan the replica runs.")
    offered: dict | None = Field(None, description="Its start-up plan (Plan.to_dict()), until the controller has one.")
    traffic: dict = Field(..., description="Its traffic snapshot (rayhet.traffic schema).")


class PlanReply(_Message):
    """The controller's answer to a PlanReport."""

    plan_version: float | None = Field(..., description="created_at of the plan in force; None: no plan yet.")
    plan: dict | None = Field(None, description="That plan, only when the replica runs another one.")


class PoolReport(_Message):
    """What a pool's Serve policy tells the controller: what Serve sees of the pool."""

    pool: str
    running: int = Field(..., ge=0, description="Running replicas.")
    in_flight: float = Field(..., ge=0, description="Ongoing + queued requests.")
