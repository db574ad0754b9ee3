"""Peak memory of the two-stage KNN vote (``retrieval.rerank.rerank_knn``) at ChestMNIST scale.

22,433 test queries, a shortlist of R = 1000, 78,468 database rows, 14 labels (multi-label): the
vote gathers each query's R shortlisted label rows. Before the votes were taken in query blocks
(``VOTE_BLOCK``), that was one [22433, 1000, 14] float32 array: 1.2 GiB on top of the inputs.

    python bench/bench_rerank_memory.py     # prints the peak RSS before and after the vote
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
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    rerank_knn(result, labels, [7])
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        f"peak RSS before the vote {before:.0f} MiB, after {after:.0f} MiB (+{after - before:.0f})"
    )


if __name__ == "__main__":
    main()
