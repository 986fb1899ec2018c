"""The validation trace: 10 minutes, low -> high -> low (seeded; writes ramp-10min.csv in Azure format).

0-180 s: 0.15 req/s of short requests (prompt 20-200, output 20-120 tokens);
180-420 s: 0.5 req/s, a quarter of them long prompts (600-1000 tokens, output 50-150) that only the
           2048-token pool fits, the rest short;
420-600 s: 0.15 req/s of short requests again.
"""

from pathlib import Path

import numpy as np

from rayhet.sim.trace import Trace, poisson_arrivals, write_azure


def main() -> None:
    rng = np.random.default_rng(14)
    parts = []
    for start, end, rate, long_share in ((0, 180, 0.15, 0.0), (180, 420, 0.5, 0.25), (420, 600, 0.15, 0.0)):
        t = start + poisson_arrivals(np.array([0.0, end - start]), np.array([rate, rate]), end - start, rng)
        long = rng.random(len(t)) < long_share
        n_in = np.where(long, rng.integers(600, 1001, len(t)), rng.integers(20, 201, len(t)))
        n_out = np.where(long, rng.integers(50, 151, len(t)), rng.integers(20, 121, len(t)))
        parts.append((t, n_in, n_out))
    tr = Trace(*(np.concatenate(x) for x in zip(*parts)), source="ramp-10min")
    out = write_azure(tr, Path(__file__).with_name("ramp-10min.csv"))
    print(f"wrote {out}: {len(tr)} requests")


if __name__ == "__main__":
    main()
