"""Tie-aware retrieval metrics in closed form: mAP@all, mAP@M, precision@k, precision within a
Hamming radius, precision-recall curves.

Every metric is the **expected value over uniformly random orders within equal distances** (the
tie-aware measures of McSherry & Najork, "Computing information retrieval performance measures
efficiently in the presence of tied scores", ECIR 2008; derived again below for our cut-offs), so
it does not depend on database order (Hamming distances take only ``K + 1`` values: an ``argsort``
would let the storage order decide). Input per query: the database split into distance groups in
ascending order, ``tot[g]`` items and ``rel[g]`` relevant ones in group ``g`` (from
:meth:`retrieval.search.HammingIndex.counts`, or from sorted float distances). Relevant = same
class; multi-label: at least one shared label, or both without any
(:func:`retrieval.metrics.multilabel_relevance`).

Definitions (per query; means over all queries, a query without relevant items scores 0):
``AP@all = (1/R) sum_{relevant i} P@rank(i)`` over the whole database (no item dropped),
``AP@M = (1/R_M) sum_{i <= M, relevant} P@i`` with ``R_M`` the relevant items in the top M
(0 when ``R_M = 0``), ``P@k`` = relevant share of the top k, ``P@radius r`` = relevant share of the
items within Hamming distance ``r`` (0 when the ball is empty; the share of such queries is
reported beside it), PR curve = mean P@n and mean recall@n (recall over queries with ``R > 0``)
at rank cut-offs n, and, for codes, by Hamming radius.

Derivation of the tie group's expected AP contribution
------------------------------------------------------
A group occupies ranks ``a+1 .. a+g`` with ``r`` relevant items and ``R_b`` relevant items ranked
before it. In a uniformly random order of the group, with ``rel_j`` the relevance at rank ``a+j``,
``E[rel_j] = r/g`` and ``E[rel_j rel_l] = r(r-1) / (g(g-1))`` for ``j != l``, so

    E sum_j rel_j (R_b + sum_{l<=j} rel_l) / (a+j)
      = sum_j [ (R_b + 1) r/g + (j-1) r(r-1) / (g(g-1)) ] / (a+j)
      = (r/g)(R_b + 1) h + r(r-1)/(g(g-1)) (g - (a+1) h),     h = H_{a+g} - H_a

(``H_n`` the harmonic numbers, using ``sum_j (j-1)/(a+j) = g - (a+1) h``; the second term is 0 for
``g = 1``). Summing over groups and dividing by ``R`` gives expected AP@all (``R`` is fixed). For
AP@M only the group straddling rank M is cut: with ``m = M - a`` of its ranks inside, the number
``X`` of relevant items among them is hypergeometric (``g`` items, ``r`` relevant, ``m`` drawn),
and given ``X = x`` those ``m`` ranks are a uniform order of ``x`` relevant items, so
``E[AP@M] = sum_x P(X=x) (S + C(a, m, x, R_b)) / (R_b + x)`` with ``S`` the sum over the full
groups before and ``C`` the group formula above. ``E[P@k]`` and recall are linear:
``E[relevant in top n] = R_b + (n - a) r / g`` for the group holding rank n.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy.special import gammaln

from retrieval.errors import RetrievalError
from retrieval.metrics import multilabel_relevance


def harmonic(n: int) -> np.ndarray:
    """``H[0..n]`` with ``H[i] = sum_{j<=i} 1/j``."""
    return np.concatenate([[0.0], np.cumsum(1.0 / np.arange(1, n + 1))])


def group_precision_sum(
    a: np.ndarray, g: np.ndarray, r: np.ndarray, r_before: np.ndarray, harm: np.ndarray
) -> np.ndarray:
    """Expected ``sum over the group's relevant ranks of P@rank`` (module docstring formula)."""
    a, g, r, r_before = (np.asarray(v, dtype=np.int64) for v in (a, g, r, r_before))
    h = harm[a + g] - harm[a]
    gf, rf = g.astype(np.float64), r.astype(np.float64)
    first = np.where(g > 0, rf / np.maximum(gf, 1) * (r_before + 1) * h, 0.0)
    pair = np.where(g > 1, rf * (rf - 1) / np.maximum(gf * (gf - 1), 1) * (gf - (a + 1) * h), 0.0)
    return first + pair


def _layout(tot: np.ndarray, rel: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    end = np.cumsum(tot, axis=1)
    return end - tot, end, np.cumsum(rel, axis=1) - rel


def ap_all(tot: np.ndarray, rel: np.ndarray, harm: np.ndarray) -> np.ndarray:
    """Expected AP over the whole ranking, per query ``[b]``."""
    a, _, r_before = _layout(tot, rel)
    total = rel.sum(axis=1)
    s = group_precision_sum(a, tot, rel, r_before, harm).sum(axis=1)
    return np.clip(np.where(total > 0, s / np.maximum(total, 1), 0.0), 0.0, 1.0)


def hypergeom_pmf(
    x: np.ndarray, total: np.ndarray, good: np.ndarray, draws: np.ndarray
) -> np.ndarray:
    """``P(X = x)`` for ``X ~ Hypergeometric(total, good, draws)`` (broadcast int arrays), 0 off the
    support: ``C(good, x) C(total - good, draws - x) / C(total, draws)`` from one table of
    ``log k!``. Same values as ``scipy.stats.hypergeom.pmf`` up to an absolute difference that
    grows with ``total`` (the ``log k!`` being differenced grow like ``total log total``): measured
    near the mode against scipy 1.17, at most 4.5e-13 for total < 300, 2.4e-12 below 2,000,
    2.8e-11 below 20,000 and 1.8e-10 below 200,000 (tested: 1e-12 and 5e-10), without its
    per-element call: the PathMNIST-sized pass of ``bench/bench_retrieval_cpu.py pathmnist`` went
    from 5.2 to 1.7 CPU s on uniform codes (bench/RESULTS-retrieval.md section 2)."""
    x, total, good, draws = (np.asarray(v, dtype=np.int64) for v in (x, total, good, draws))
    bad = total - good
    lo = np.maximum(draws - bad, 0)
    hi = np.maximum(np.minimum(good, draws), lo)
    ok = (x >= lo) & (x <= hi) & (draws <= total) & (bad >= 0)
    xs = np.clip(x, lo, hi)  # inside the support: every index below is >= 0 where ok
    log_fact = gammaln(np.arange(int(total.max(initial=0)) + 2, dtype=np.float64) + 1.0)
    lf = log_fact
    # C(total, draws) only varies per law: computed on the laws' shape, not on x's grid
    log_all = lf[total] - lf[draws] - lf[np.clip(total - draws, 0, None)]
    log_p = (
        lf[np.clip(good, 0, None)] - lf[xs] - lf[np.clip(good - xs, 0, None)]
        + lf[np.clip(bad, 0, None)] - lf[np.clip(draws - xs, 0, None)]
        - lf[np.clip(bad - draws + xs, 0, None)]
        - log_all
    )  # fmt: skip
    return np.where(ok, np.exp(log_p), 0.0)


#: ``[queries, M + 1]`` entries of the straddling-group block that :func:`ap_at` holds at once.
#: Its hypergeometric terms take ~80 bytes of temporaries per entry: peak memory grew by 0.08 GB
#: at this cap for one 4096-query block at mAP@20000 of 200,000 items (3.6 GB in one piece before;
#: 2^22: 0.33 GB, 2^24: 1.1 GB, and no faster: 3.8 s here, 4.4 s and 10.4 s there)
AP_AT_ELEMS = 1 << 20


def ap_at(tot: np.ndarray, rel: np.ndarray, cutoff: int, harm: np.ndarray) -> np.ndarray:
    """Expected AP@``cutoff`` per query ``[b]`` (normalised by the relevant items in the top M).

    The straddling group's terms (one per possible relevant count ``x <= M``) are summed in row
    sub-blocks of at most :data:`AP_AT_ELEMS` entries; every sub-block uses the whole block's
    ``x`` grid, so each row's sum, and the result, are bit-identical whatever the sub-block size.
    """
    a, end, r_before = _layout(tot, rel)
    rows = np.arange(len(tot))
    full = end <= cutoff
    s_full = np.where(full, group_precision_sum(a, tot, rel, r_before, harm), 0.0).sum(axis=1)
    r_full = np.where(full, rel, 0).sum(axis=1)
    straddle = (end > cutoff) & (a < cutoff)
    has = straddle.any(axis=1)
    s = np.argmax(straddle, axis=1)
    g_s = np.where(has, tot[rows, s], 1)
    r_s = np.where(has, rel[rows, s], 0)
    a_s = np.where(has, a[rows, s], 0)
    m = np.where(has, cutoff - a_s, 0)
    width = int(np.minimum(r_s, m).max(initial=0)) + 1
    x = np.arange(width)[None, :]
    step = max(1, AP_AT_ELEMS // width)
    out = np.empty(len(tot), dtype=np.float64)
    for start in range(0, len(tot), step):
        sl = slice(start, min(start + step, len(tot)))
        pmf = hypergeom_pmf(x, g_s[sl, None], r_s[sl, None], m[sl, None])
        c = group_precision_sum(a_s[sl, None], m[sl, None], x, r_full[sl, None], harm)
        denom = r_full[sl, None] + x
        val = np.where(denom > 0, (s_full[sl, None] + c) / np.maximum(denom, 1), 0.0)
        out[sl] = (np.nan_to_num(pmf) * val).sum(axis=1)
    return np.clip(out, 0.0, 1.0)  # rounding of H differences


def expected_relevant_at(tot: np.ndarray, rel: np.ndarray, n: int) -> np.ndarray:
    """Expected number of relevant items among the top ``n``, per query ``[b]``."""
    a, end, _ = _layout(tot, rel)
    full = np.where(end <= n, rel, 0).sum(axis=1).astype(np.float64)
    part = (end > n) & (a < n)
    frac = np.where(part, (n - a) / np.maximum(tot, 1), 0.0)
    return full + (frac * rel).sum(axis=1)


def precision_within(
    tot: np.ndarray, rel: np.ndarray, radius: int
) -> tuple[np.ndarray, np.ndarray]:
    """``(precision [b], empty [b])`` of the items at group index (Hamming distance) <= radius."""
    t = tot[:, : radius + 1].sum(axis=1)
    r = rel[:, : radius + 1].sum(axis=1)
    return np.where(t > 0, r / np.maximum(t, 1), 0.0), t == 0


def rank_cutoffs(n_db: int, points: int = 40) -> np.ndarray:
    """Log-spaced rank cut-offs ``1 .. n_db`` for PR curves (1 and ``n_db`` always included, so
    ``points >= 2``; fewer distinct values when ``n_db < points``)."""
    if n_db < 1:
        raise RetrievalError(f"n_db={n_db}: the database is empty; pass at least one database item")
    if points < 2:
        raise RetrievalError(
            f"pr_points={points} must be >= 2: the PR curve runs from rank 1 to the whole "
            f"database ({n_db})"
        )
    return np.unique(np.round(np.geomspace(1, n_db, points)).astype(np.int64))


@dataclass(frozen=True, kw_only=True)
class RankingSpec:
    """Which ranking metrics to compute."""

    map_at: Sequence[int] = (1000, 10)
    precision_at: Sequence[int] = (10, 100)
    radius: int | None = 2  # precision within this Hamming radius (codes only)
    pr_points: int = 40

    def __post_init__(self) -> None:
        """Refuse cut-offs below 1 or listed twice (a repeated cut-off was summed twice:
        map_at_10 = 2.0), a negative radius and fewer than 2 PR points."""
        for name in ("map_at", "precision_at"):
            seen: dict[int, int] = {}
            for i, k in enumerate(getattr(self, name)):
                if not k >= 1:
                    raise RetrievalError(f"{name}[{i}]: cut-off {k} must be >= 1")
                if k in seen:
                    raise RetrievalError(
                        f"{name}[{i}]: {k} is listed twice (entry {seen[k]} too); list each "
                        f"cut-off once (retrieval.{name})"
                    )
                seen[k] = i
        if self.radius is not None and not self.radius >= 0:
            raise RetrievalError(
                f"radius={self.radius} must be >= 0 (a Hamming distance), or None for no "
                "radius metric (retrieval.radius)"
            )
        if not self.pr_points >= 2:
            raise RetrievalError(
                f"pr_points={self.pr_points} must be >= 2: the PR curve runs from rank 1 to the "
                "whole database"
            )


@dataclass
class RankingAccumulator:
    """Streams query blocks of group counts and averages each metric over queries."""

    n_db: int
    spec: RankingSpec = field(default_factory=RankingSpec)
    hamming: bool = True

    def __post_init__(self) -> None:
        if self.n_db < 1:  # cut-offs >= 1, no repeats, radius and pr_points: RankingSpec
            raise RetrievalError(
                f"the database is empty (n_db={self.n_db}); pass at least one database item"
            )
        for k in self.spec.precision_at:
            if k > self.n_db:
                raise RetrievalError(
                    f"precision@{k} asks for more items than the database holds ({self.n_db}); "
                    "lower retrieval.precision_at"
                )
        self.harm = harmonic(self.n_db)
        self.cutoffs = rank_cutoffs(self.n_db, self.spec.pr_points)
        self.sums: dict[str, float] = {}
        self.n = 0
        self.n_with_relevant = 0
        self.pr_prec = np.zeros(len(self.cutoffs))
        self.pr_rec = np.zeros(len(self.cutoffs))
        self.radius_prec: np.ndarray | None = None
        self.radius_rec: np.ndarray | None = None

    def _add(self, name: str, values: np.ndarray) -> None:
        self.sums[name] = self.sums.get(name, 0.0) + float(np.sum(values))

    def update(self, tot: np.ndarray, rel: np.ndarray) -> None:
        tot, rel = np.asarray(tot, dtype=np.int64), np.asarray(rel, dtype=np.int64)
        if np.any(tot.sum(axis=1) != self.n_db):
            raise RetrievalError("group counts do not add up to the database size")
        if np.any((rel < 0) | (rel > tot)):
            raise RetrievalError("a group's relevant count lies outside 0 .. its size")
        total = rel.sum(axis=1)
        has = total > 0
        self.n += len(tot)
        self.n_with_relevant += int(has.sum())
        self._add("map_all", ap_all(tot, rel, self.harm))
        for m in self.spec.map_at:
            self._add(f"map_at_{m}", ap_at(tot, rel, m, self.harm))
        for k in self.spec.precision_at:
            self._add(f"precision_at_{k}", expected_relevant_at(tot, rel, k) / k)
        for i, n in enumerate(self.cutoffs):
            hit = expected_relevant_at(tot, rel, int(n))
            self.pr_prec[i] += float((hit / n).sum())
            self.pr_rec[i] += float((hit[has] / total[has]).sum())
        if self.hamming:
            if self.spec.radius is not None:
                p, empty = precision_within(tot, rel, self.spec.radius)
                self._add(f"precision_radius_{self.spec.radius}", p)
                self._add(f"radius_{self.spec.radius}_empty", empty)
            cum_t, cum_r = np.cumsum(tot, axis=1), np.cumsum(rel, axis=1)
            prec = np.where(cum_t > 0, cum_r / np.maximum(cum_t, 1), 0.0).sum(axis=0)
            rec = (cum_r[has] / total[has, None]).sum(axis=0)
            self.radius_prec = prec if self.radius_prec is None else self.radius_prec + prec
            self.radius_rec = rec if self.radius_rec is None else self.radius_rec + rec

    def result(self) -> RankingReport:
        if self.n == 0:
            raise RetrievalError("no queries were scored; pass at least one query")
        scalars = {name: v / self.n for name, v in self.sums.items()}
        n_rel = max(self.n_with_relevant, 1)
        pr = [
            {"cutoff": int(n), "precision": float(p / self.n), "recall": float(r / n_rel)}
            for n, p, r in zip(self.cutoffs, self.pr_prec, self.pr_rec, strict=True)
        ]
        radius_pr = (
            []
            if self.radius_prec is None or self.radius_rec is None
            else [
                {"radius": d, "precision": float(p / self.n), "recall": float(r / n_rel)}
                for d, (p, r) in enumerate(zip(self.radius_prec, self.radius_rec, strict=True))
            ]
        )
        return RankingReport(scalars=scalars, pr_rank=pr, pr_radius=radius_pr)


@dataclass(frozen=True)
class RankingReport:
    """Mean metrics over queries (``scalars``) and PR curves by rank cut-off and by radius."""

    scalars: dict[str, float]
    pr_rank: list[dict[str, Any]]
    pr_radius: list[dict[str, Any]]


def ranking_from_counts(
    blocks: Iterable[tuple[np.ndarray, np.ndarray]],
    n_db: int,
    *,
    spec: RankingSpec | None = None,
    hamming: bool = True,
) -> RankingReport:
    """Average the tie-aware metrics over a stream of ``(tot [b, G], rel [b, G])`` query blocks."""
    acc = RankingAccumulator(n_db, spec or RankingSpec(), hamming)
    for tot, rel in blocks:
        acc.update(tot, rel)
    return acc.result()


def groups_from_sorted(dist: np.ndarray, relevant: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(tot [b, N], rel [b, N])`` distance groups (zero-padded) from float distances ``[b, N]``
    and relevance ``bool [b, N]``: equal distances form one group."""
    import torch

    d = torch.as_tensor(dist)
    sd, order = torch.sort(d, dim=1, stable=True)
    sr = np.take_along_axis(np.asarray(relevant), order.numpy(), axis=1)
    sd = sd.numpy()
    b, n = sd.shape
    new = np.ones((b, n), dtype=bool)
    new[:, 1:] = sd[:, 1:] != sd[:, :-1]
    gid = np.cumsum(new, axis=1) - 1 + (np.arange(b) * n)[:, None]
    tot = np.bincount(gid.ravel(), minlength=b * n).reshape(b, n)
    rel = np.bincount(gid.ravel(), weights=sr.ravel().astype(np.float64), minlength=b * n)
    return tot, rel.reshape(b, n).astype(np.int64)


def _relevance(q_labels: np.ndarray, db_labels: np.ndarray) -> np.ndarray:
    if db_labels.ndim == 2:
        return multilabel_relevance(q_labels, db_labels)
    return q_labels[:, None] == db_labels[None, :]


def hamming_ranking(
    q_packed: np.ndarray,
    db_packed: np.ndarray,
    n_bits: int,
    q_labels: np.ndarray,
    db_labels: np.ndarray,
    *,
    spec: RankingSpec | None = None,
    index: Any = None,
) -> RankingReport:
    """Tie-aware ranking metrics of Hamming search (database = ``db_packed``) for labelled queries."""
    from retrieval.search import index_of

    index = index_of(db_packed, n_bits, index)
    blocks = ((c.tot, c.rel) for c in index.counts(q_packed, db_labels, q_labels))
    return ranking_from_counts(blocks, index.ntotal, spec=spec, hamming=True)


def float_ranking(
    queries: np.ndarray,
    database: np.ndarray,
    q_labels: np.ndarray,
    db_labels: np.ndarray,
    *,
    metric: str = "euclidean",
    spec: RankingSpec | None = None,
    chunk: int = 256,
) -> RankingReport:
    """Tie-aware ranking metrics of exact float search (equal float distances tied)."""
    from retrieval.knn import float_distance_chunks, float_pair
    from retrieval.search import _check_label_kinds, _check_labels

    # the checks of FloatIndex.prepare and HammingIndex.counts, before any distance is computed
    if metric not in ("euclidean", "cosine"):
        raise RetrievalError(f"metric={metric!r}: use 'euclidean' or 'cosine'")
    queries, database = float_pair(queries, database)  # also copies negative-stride views
    if len(database) == 0:
        raise RetrievalError(
            f"the float database is empty (shape {database.shape}); pass at least one vector"
        )
    if len(queries) == 0:
        raise RetrievalError("the query set is empty; pass at least one query")
    q_labels = _check_labels(q_labels, len(queries), "query")
    db_labels = _check_labels(db_labels, len(database), "database")
    _check_label_kinds(q_labels, db_labels)
    chunks = float_distance_chunks(queries, database, metric=metric, chunk=chunk)  # type: ignore[arg-type]
    blocks = (groups_from_sorted(d, _relevance(q_labels[sl], db_labels)) for sl, d in chunks)
    return ranking_from_counts(blocks, len(database), spec=spec, hamming=False)
