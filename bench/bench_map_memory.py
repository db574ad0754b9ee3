"""Peak memory and time of tie-aware mAP@M (``retrieval.ranking.ap_at``) for one counts block.

One block of 4,096 queries (the compiled scan's counts block for 16-bit codes and 2 classes) over
200,000 database items in two tied groups of 100,000 (half of each relevant), at mAP@20000: the
straddling group's hypergeometric terms span ``[queries, M + 1]``. Before they were summed in row
sub-blocks (``AP_AT_ELEMS``), that was one ``[4096, 20001]`` grid of several float64 temporaries.

    python bench/bench_map_memory.py     # prints mAP@M, seconds and the peak RSS growth
"""

from __future__ import annotations

import resource
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from retrieval.ranking import ap_at, harmonic

B, N_DB, M = 4096, 200_000, 20_000


def main() -> None:
    tot = np.tile(np.array([N_DB // 2, N_DB // 2]), (B, 1))
    rel = tot // 2
    harm = harmonic(N_DB)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    t0 = time.perf_counter()
    value = ap_at(tot, rel, M, harm)
    seconds = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        f"mAP@{M} {value[0]:.4f} over {B} queries: {seconds:.1f} s, peak RSS before "
        f"{before:.0f} MiB, after {after:.0f} MiB (+{after - before:.0f})"
    )


if __name__ == "__main__":
    main()
