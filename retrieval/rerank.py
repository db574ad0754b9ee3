"""Two-stage retrieval: a Hamming shortlist of R candidates re-ranked by cosine on float embeddings.

Stage 1 searches the codes (:class:`retrieval.search.HammingIndex`, its default compiled scan) for
the R nearest; stage 2 ranks those R by cosine distance between the float query and the float
database embeddings (the SAEH proposal's stage 2). KNN votes over the re-ranked list follow the
tie rule of :mod:`retrieval.knn`; with ``R = N`` the result is float (cosine) KNN.

Deviation / limit: items tied with the R-th Hamming distance enter the shortlist by database id
(the scan's tie rule: deterministic, but a tie that straddles R keeps the smaller ids, not the
ones nearest in float; an index built with ``engine="faiss"`` uses faiss' tie order instead).
Privacy cost: stage 2 needs float embeddings of the database at query time, so the deployment
stores (and can leak) the very vectors that the codes were meant to replace.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from retrieval.errors import RetrievalError
from retrieval.knn import _empty_predictions, _onehot, tally_from_sorted
from retrieval.metrics import multilabel_relevance_rows
from retrieval.ranking import RankingReport, RankingSpec, groups_from_sorted, ranking_from_counts
from retrieval.search import HammingIndex, _normalise, check_finite, index_of


@dataclass(frozen=True)
class Reranked:
    """``ids [Q, R]`` re-ranked candidates, ``dist [Q, R]`` their cosine distances (ascending),
    ``hamming [Q, R]`` their Hamming distances."""

    ids: np.ndarray
    dist: np.ndarray
    hamming: np.ndarray


def rerank(
    q_packed: np.ndarray,
    db_packed: np.ndarray,
    n_bits: int,
    queries: np.ndarray,
    database: np.ndarray,
    *,
    shortlist: int,
    k: int | None = None,
    index: HammingIndex | None = None,
    block: int = 1024,
) -> Reranked:
    """Shortlist ``shortlist`` candidates per query by Hamming distance, sort them by cosine."""
    index = index_of(db_packed, n_bits, index)
    if len(queries) != len(q_packed) or len(database) != index.ntotal:
        raise RetrievalError(
            f"{len(queries)} float queries / {len(database)} float database rows for "
            f"{len(q_packed)} query codes / {index.ntotal} database codes; pass the embeddings the "
            "codes were made from, in the same order"
        )
    q_dim, db_dim = np.shape(queries)[1:], np.shape(database)[1:]
    if len(q_dim) != 1 or q_dim != db_dim:
        raise RetrievalError(
            f"float queries {np.shape(queries)} and float database {np.shape(database)} must be "
            "[Q, D] and [N, D] with the same D; embed both with the same backbone"
        )
    if not 1 <= shortlist <= index.ntotal:  # check_k named it k and pointed at knn.k
        raise RetrievalError(
            f"shortlist R={shortlist} must be between 1 and the database size {index.ntotal}; "
            "set retrieval.shortlist in that range (R = N re-ranks the whole database: float "
            "cosine KNN)"
        )
    if k is not None and shortlist < k:
        raise RetrievalError(
            f"shortlist R={shortlist} is smaller than k={k}; re-ranking needs R >= k "
            "(raise retrieval.shortlist)"
        )
    ham, ids = index.search(q_packed, shortlist)
    queries = np.asarray(queries, dtype=np.float32)
    check_finite(queries, "query")
    qn = _normalise(queries)  # float64 norms, divided by the true norm (search.unit_rows)
    database = np.asarray(database)
    dist = np.empty(ids.shape, dtype=np.float32)
    for start in range(0, len(ids), block):
        sl = slice(start, min(start + block, len(ids)))
        rows = np.asarray(database[ids[sl]], dtype=np.float32)  # only the shortlisted rows
        check_finite(rows, "shortlisted database", row_ids=ids[sl])
        # unit rows as search.unit_rows: the norm in float64 (a float32 norm of a tiny row
        # underflows), every nonzero row divided by its true norm, a zero row kept at zero; the
        # in-place division runs in float64 per buffer, without a float64 copy of the block
        norm = np.sqrt(np.einsum("brd,brd->br", rows, rows, dtype=np.float64))[..., None]
        np.divide(rows, np.where(norm > 0, norm, 1.0), out=rows, casting="same_kind")
        dist[sl] = 1.0 - np.einsum("bd,brd->br", qn[sl], rows)
    order = np.argsort(dist, axis=1, kind="stable")
    take = np.take_along_axis
    return Reranked(take(ids, order, axis=1), take(dist, order, axis=1), take(ham, order, axis=1))


#: entries of the [queries, R, classes] label block :func:`rerank_knn` gathers at once (64 MiB
#: of float32): the whole query set at ChestMNIST scale took 1.2 GiB
VOTE_BLOCK = 1 << 24


def rerank_knn(result: Reranked, db_labels: np.ndarray, ks: Sequence[int]) -> dict[int, np.ndarray]:
    """Tie-aware KNN predictions over the re-ranked shortlist for each k in ``ks``, in blocks of
    queries whose gathered labels stay within :data:`VOTE_BLOCK` entries."""
    db_labels = np.asarray(db_labels) if db_labels is not None else None
    out = _empty_predictions(ks, len(result.ids), db_labels)
    onehot = _onehot(db_labels, None)
    n, shortlist = result.ids.shape
    if result.ids.size and int(result.ids.max()) >= len(onehot):
        raise RetrievalError(
            f"the shortlist holds database id {int(result.ids.max())} but only {len(onehot)} "
            "database labels were given; pass the labels of the database that was searched"
        )
    for k in ks:
        if k < 1:
            raise RetrievalError(
                f"k={k} must be >= 1; set knn.k / knn.k_sweep to values of 1 or more"
            )
        if k > shortlist:
            raise RetrievalError(
                f"k={k} exceeds the shortlist R={shortlist}; raise retrieval.shortlist"
            )
    block = max(1, VOTE_BLOCK // max(1, shortlist * onehot.shape[1]))
    for start in range(0, n, block):
        sl = slice(start, min(start + block, n))
        labels = onehot[result.ids[sl]]
        for k in ks:
            out[k][sl] = tally_from_sorted(result.dist[sl], labels, k).decide(
                k, db_labels.ndim == 2
            )
    return out


def rerank_ranking(
    result: Reranked,
    index: HammingIndex,
    q_packed: np.ndarray,
    q_labels: np.ndarray,
    db_labels: np.ndarray,
    *,
    spec: RankingSpec | None = None,
) -> RankingReport:
    """Tie-aware metrics of the two-stage ranking: the re-ranked shortlist first (equal cosine
    distances tied), then every other item by Hamming distance (equal distances tied)."""
    q_labels, db_labels = np.asarray(q_labels), np.asarray(db_labels)
    if len(result.ids) != len(q_packed):  # fewer codes: the first rows of another query set
        raise RetrievalError(
            f"the re-ranked result holds {len(result.ids)} queries but {len(q_packed)} query codes "
            "were given; pass the query codes (and their labels) that rerank was called with"
        )
    if result.ids.size and (
        int(result.ids.max()) >= index.ntotal or int(result.hamming.max()) > index.n_bits
    ):
        raise RetrievalError(
            f"the re-ranked result holds database id {int(result.ids.max())} and Hamming "
            f"distance {int(result.hamming.max())}, beyond the index's {index.ntotal} codes of "
            f"{index.n_bits} bits; pass the HammingIndex that rerank searched"
        )

    def blocks():
        for c in index.counts(q_packed, db_labels, q_labels):
            ids, ham = result.ids[c.sl], result.hamming[c.sl]
            if db_labels.ndim == 2:
                rel_sl = multilabel_relevance_rows(q_labels[c.sl], db_labels[ids])
            else:
                rel_sl = db_labels[ids] == q_labels[c.sl][:, None]
            head_tot, head_rel = groups_from_sorted(result.dist[c.sl], rel_sl)
            rows = np.repeat(np.arange(len(ids)), ids.shape[1])
            taken_tot = np.zeros_like(c.tot)
            taken_rel = np.zeros_like(c.tot)
            np.add.at(taken_tot, (rows, ham.ravel()), 1)
            np.add.at(taken_rel, (rows, ham.ravel()), rel_sl.ravel().astype(np.int64))
            yield (
                np.concatenate([head_tot, c.tot - taken_tot], axis=1),
                np.concatenate([head_rel, c.rel - taken_rel], axis=1),
            )

    return ranking_from_counts(blocks(), index.ntotal, spec=spec, hamming=False)
