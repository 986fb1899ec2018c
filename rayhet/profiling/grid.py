"""Grid: the (input tokens, output tokens) buckets a profile measures, and the request size sent for each."""

from __future__ import annotations

from dataclasses import dataclass

# Mélange's bucket edges (right-closed upper edges, as in rayhet.profiles).
MELANGE_INPUT_EDGES = [25, 100, 250, 500, 1000, 2000, 4000, 8000, 12000, 16000]
MELANGE_OUTPUT_EDGES = [25, 100, 250, 500, 1000, 2000]
# --quick: a 3x3 grid of short, medium and long requests.
QUICK_INPUT_EDGES = [100, 500, 2000]
QUICK_OUTPUT_EDGES = [25, 100, 250]


@dataclass(frozen=True)
class Bucket:
    """Bucket (i, j) of the grid and the request size that stands for it."""

    i: int
    j: int
    input_tokens: int
    output_tokens: int

    @property
    def key(self) -> tuple[int, int]:
        return (self.i, self.j)

    @property
    def label(self) -> str:
        return f"in<={self.input_tokens} out<={self.output_tokens}"


def representative(edges: list[int], k: int) -> int:
    """The size sent for bucket k: its upper edge.

    The upper edge is the costliest request the bucket can hold (prefill and decode cost grow with both
    lengths), so the rate measured for it is one every request routed to the bucket can be served at: the
    planner's capacities stay on the safe side of the SLO, at the price of under-using a replica a little
    for the smaller requests of the bucket.
    """
    return edges[k]


def buckets(input_edges: list[int], output_edges: list[int], max_context: int) -> tuple[list[Bucket], list[Bucket]]:
    """All buckets in measuring order (cheapest first), split into (fits the context, does not fit).

    A bucket fits when its representative prompt plus output fits `max_context`; one that does not is
    unservable by this engine and stays null in the profile. Cheapest first, so that a time budget that
    runs out leaves the rarely-used, costly buckets unmeasured rather than the common short ones.
    """
    fit, too_long = [], []
    for i in range(len(input_edges)):
        for j in range(len(output_edges)):
            b = Bucket(i, j, representative(input_edges, i), representative(output_edges, j))
            (fit if b.input_tokens + b.output_tokens <= max_context else too_long).append(b)
    fit.sort(key=cost_order)
    return fit, too_long


def cost_order(b: Bucket) -> tuple[float, int, int]:
    """A rough cost of one request: decode steps weigh far more than prompt tokens (prefill is batched)."""
    return (b.output_tokens + b.input_tokens / 8, b.i, b.j)
