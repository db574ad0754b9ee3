"""Peak memory of the two-stage KNN vote (``retrieval.rerank.rerank_knn``) at ChestMNIST scale.

22,433 test queries, a shortlist of R = 1000, 78,468 database rows, 14 labels (multi-label): the
vote gathers each query's R shortlisted label rows. Before the votes were taken in query blocks
(``VOTE_BLOCK``), that was one [22433, 1000, 14] float32 array: 1.2 GiB on top of the inputs.

    python bench/bench_rerank_memory.py     # prints the RSS before and the peak during the vote

The growth is the vote's own: the peak resident set during the vote (the high-water mark is reset
just before it, ``/proc/self/clear_refs``) minus the resident set of the inputs just before it.
``ru_maxrss`` alone is a high-water mark since the process started: building the inputs passes a
transient peak (the int64 copy of the ids, the float64 distances before their float32 cast) that
the vote's blocks stayed under, so "peak after - peak before" read +0 MiB for a vote that grows
the resident set by ~140 MiB.
"""

from __future__ import annotations

import resource
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from retrieval.rerank import Reranked, rerank_knn

Q, R, N, C = 22433, 1000, 78468, 14


def main() -> None:
    rng = np.random.default_rng(0)
    ids = rng.integers(0, N, (Q, R)).astype(np.int64)
    dist = np.sort(rng.random((Q, R)).astype(np.float32), axis=1)
    result = Reranked(ids, dist, np.zeros((Q, R), np.int32))
    labels = (rng.random((N, C)) < 0.1).astype(np.int64)
    peak_inputs = peak_rss_mib()
    before = reset_peak_rss()
    rerank_knn(result, labels, [7])
    peak = peak_rss_mib()
    print(
        f"RSS before the vote {before:.0f} MiB (inputs; peak while building them "
        f"{peak_inputs:.0f} MiB), peak during the vote {peak:.0f} MiB (+{peak - before:.0f})"
    )


def peak_rss_mib() -> float:
    """Peak resident set of this process since the last :func:`reset_peak_rss` (or its start)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def reset_peak_rss() -> float:
    """Reset the peak resident set to the current one (Linux ``clear_refs`` 5); return it in MiB."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    with open("/proc/self/status") as f:
        rss = next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))
    return rss / 1024


if __name__ == "__main__":
    main()
