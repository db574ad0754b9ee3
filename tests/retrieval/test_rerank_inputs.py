"""Two-stage ranking (retrieval.rerank.rerank_ranking) scored against a re-ranked result made for
other queries or another index: one RetrievalError naming both sizes, not a numpy broadcast or
index error, nor metrics of the wrong queries."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from retrieval.codes import pack_bits
from retrieval.errors import RetrievalError
from retrieval.ranking import RankingSpec
from retrieval.rerank import rerank, rerank_ranking
from retrieval.search import HammingIndex

SPEC = RankingSpec(map_at=(3,), precision_at=(2,), radius=None, pr_points=2)


def _data(seed: int = 0):
    g = np.random.default_rng(seed)
    db, q = g.normal(size=(120, 8)), g.normal(size=(15, 8))
    return db, q, pack_bits(db[:, :6] > 0), pack_bits(q[:, :6] > 0), g.integers(0, 3, 120), g


def test_a_result_for_other_queries_is_refused() -> None:
    """A result for 10 queries scored with 15 query codes was a numpy broadcast ValueError; with
    5 codes it silently scored the result's first 5 rows against those 5 queries' labels."""
    db, q, cdb, cq, y_db, g = _data()
    y_q = g.integers(0, 3, 15)
    res = rerank(cq[:10], cdb, 6, q[:10], db, shortlist=20)
    index = HammingIndex(cdb, 6)
    for n in (15, 5):
        with pytest.raises(
            RetrievalError,
            match=rf"^the re-ranked result holds 10 queries but {n} query codes were given; "
            "pass the query codes",
        ):
            rerank_ranking(res, index, cq[-n:], y_q[-n:], y_db, spec=SPEC)
    ok = rerank_ranking(res, index, cq[:10], y_q[:10], y_db, spec=SPEC).scalars
    assert 0.0 <= ok["map_all"] <= 1.0


def test_a_result_from_another_index_is_refused() -> None:
    """An index of the first 100 codes: an IndexError (index 112 is out of bounds)."""
    db, q, cdb, cq, y_db, g = _data()
    res = rerank(cq, cdb, 6, q, db, shortlist=20)
    with pytest.raises(RetrievalError, match=r"database id 1\d\d .*index's 100 codes of 6 bits"):
        rerank_ranking(res, HammingIndex(cdb[:100], 6), cq, g.integers(0, 3, 15), y_db[:100])


def _expected_ap(groups: list[list[bool]], cutoff: int | None = None) -> float:
    """Mean AP (AP@cutoff: normalised by the relevant items in the top ``cutoff``) over every
    order within the tie groups, by enumeration."""
    orders = [sorted(set(itertools.permutations(gr))) for gr in groups]
    total = 0.0
    weight = 1.0 / np.prod([len(o) for o in orders])
    for combo in itertools.product(*orders):
        seq = [r for part in combo for r in part]
        top = seq if cutoff is None else seq[:cutoff]
        hits, s = 0, 0.0
        for i, r in enumerate(top):
            if r:
                hits += 1
                s += hits / (i + 1)
        denom = sum(seq) if cutoff is None else hits
        total += weight * (s / denom if denom else 0.0)
    return total


def test_two_stage_map_equals_brute_force_over_tie_orders() -> None:
    """The two-stage ranking is the shortlist by cosine (equal cosines tied), then the rest by
    Hamming distance (equal distances tied): mAP@all and mAP@3 equal the mean AP over every order
    within those groups, enumerated on 7 items with heavy ties (0/1 float vectors, 3 bits)."""
    g = np.random.default_rng(5)
    for _ in range(12):
        n, n_bits = 7, 3
        db = g.integers(0, 2, (n, 4)).astype(np.float64)
        q = g.integers(0, 2, (3, 4)).astype(np.float64)
        bdb, bq = g.random((n, n_bits)) > 0.5, g.random((3, n_bits)) > 0.5
        y_db, y_q = g.integers(0, 2, n), g.integers(0, 2, 3)
        shortlist = int(g.integers(1, n + 1))
        res = rerank(pack_bits(bq), pack_bits(bdb), n_bits, q, db, shortlist=shortlist)
        index = HammingIndex(pack_bits(bdb), n_bits)
        got = rerank_ranking(res, index, pack_bits(bq), y_q, y_db, spec=SPEC).scalars
        ham = (bq[:, None] != bdb[None]).sum(-1)
        ap, ap3 = [], []
        for i in range(3):
            ids, dist = res.ids[i], res.dist[i]
            groups = [[bool(y_db[j] == y_q[i]) for j in ids[dist == v]] for v in np.unique(dist)]
            rest = sorted(set(range(n)) - set(ids.tolist()))
            for h in sorted({int(ham[i, j]) for j in rest}):
                groups.append([bool(y_db[j] == y_q[i]) for j in rest if ham[i, j] == h])
            ap.append(_expected_ap(groups))
            ap3.append(_expected_ap(groups, 3))
        assert got["map_all"] == pytest.approx(np.mean(ap), abs=1e-12)
        assert got["map_at_3"] == pytest.approx(np.mean(ap3), abs=1e-12)
