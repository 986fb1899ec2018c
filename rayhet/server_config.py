"""The `server` section of a rayhet config: the HTTP face (API keys, body and `n` limits), the ingress deployment
(replicas, Serve's queue bounds, its capacity as the simulator sees it, load shedding) and Serve's queue-limit rule,
which pools' options share. Re-exported by rayhet.config."""

from __future__ import annotations

import os
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field


def _serve_queue_limit(v: int) -> int:
    if v == 0:
        raise ValueError("must be -1 (no limit) or >= 1 (Ray Serve's rule)")
    return v


# a Serve deployment's max_queued_requests: -1 (no limit) or >= 1
QueueLimit = Annotated[int, Field(ge=-1), AfterValidator(_serve_queue_limit)]


class ServerConfig(BaseModel):
    """The HTTP face: API keys, limits, and the ingress deployment."""

    model_config = ConfigDict(extra="forbid")

    api_keys: list[str] = Field(
        default_factory=list, description="Accepted bearer tokens; empty (and no api_keys_env) means no auth."
    )
    api_keys_env: str | None = Field(
        None, description="Environment variable (read in the ingress replica) holding comma-separated API keys."
    )
    max_body_bytes: int = Field(1_048_576, ge=1024, description="Largest request body accepted (413 above).")
    tokenize_inline_chars: int = Field(
        2000, ge=0, description="Prompts (or chat messages) up to this many characters are tokenized on the "
        "ingress's event loop; longer ones in its thread pool, so that one long prompt does not stall every "
        "other request's stream (README, OpenAI parameters).")
    max_n: int = Field(8, ge=1, le=128, description="Largest `n` (choices per request) accepted; each choice is "
                       "one generation, routed and admitted as a request of its own (400 above).")
    ingress_replicas: int = Field(1, ge=1, description="Ingress replicas.")
    ingress_max_ongoing_requests: int = Field(
        1000, ge=1, description="Concurrent requests per ingress replica. Beyond it (plus "
        "ingress_max_queued_requests) Serve's proxy refuses with 429 in milliseconds; a small bound (64) made "
        "refusals fast and lossless under 5x overload on 16 cores, at a large cost in goodput (README, Reliability).")
    ingress_max_queued_requests: QueueLimit = Field(
        64,
        description="Requests Serve's HTTP proxy lets wait for an ingress replica beyond its "
        "ingress_max_ongoing_requests; past that the proxy itself answers 429 with Retry-After (Serve's "
        "backpressure_config), before rayhet's code runs: the last guard when the ingress cannot keep up "
        "(-1: unbounded).")
    ingress_capacity_rps: float | None = Field(
        55.0, gt=0,
        description="Streamed requests per second one ingress replica carries before requests queue in it "
        "(measured: ~55 on a 16-core host for 1k-token prompts and 200 streamed tokens, "
        "benchmarks/results/stack-h200.md; non-streamed requests cost less). The simulator lets no more through "
        "each replica, and the start-up log warns when the plan's expected peak needs more ingress_replicas. "
        "null: unlimited.")
    proxy_capacity_rps: float | None = Field(
        90.0, gt=0,
        description="Streamed requests per second Serve's HTTP proxy (one per node) carries (measured: ~90 on a "
        "16-core host, ~100 with RAY_SERVE_THROUGHPUT_OPTIMIZED=1; benchmarks/results/stack-h200.md). The "
        "simulator's single proxy; past it, spread clients over nodes. null: unlimited.")
    shed_lag_ms: float | None = Field(
        200.0, gt=0,
        description="An ingress replica whose event loop runs later than this, with 16 or more requests at the "
        "pools, refuses new requests at once (429 with Retry-After: 1) until it catches up: a saturated ingress "
        "otherwise makes every request wait in its "
        "loop, and refuses after seconds (rayhet.serve.lag). The simulator refuses a request whose wait for an "
        "ingress replica would exceed it. null: never shed.")
    ingress_num_cpus: float = Field(
        0.0, ge=0,
        description="CPUs reserved per ingress replica. Default 0, as Serve's own proxy: the ingress only forwards "
        "(I/O-bound), and a whole CPU reserved for it is one the pools cannot use (`threads=N` on an N-CPU node).")
    traffic_window_s: float = Field(60.0, gt=0, description="Sliding window of the traffic the ingress records.")
    max_wait_s: float = Field(
        30.0, gt=0,
        description="Longest a request waits for its pool to start it (its first token, or its whole answer when "
        "not streamed, counts as started); then it is refused with 503 and Retry-After. Requests beyond the pools' "
        "queue bounds are refused at once (429) and never wait.")
    access_log: bool = Field(
        True,
        description="Ray Serve's per-request access log lines on the ingress replicas (logging_config."
        "enable_access_log): one line per HTTP request with its status and latency.",
    )

    def resolved_api_keys(self) -> set[str]:
        keys = set(self.api_keys)
        if self.api_keys_env and os.environ.get(self.api_keys_env):
            keys |= {k.strip() for k in os.environ[self.api_keys_env].split(",") if k.strip()}
        return keys
