"""Exact Hamming top-k by a compiled linear scan (numba), ties broken by the smaller database id.

Why not faiss' ``IndexBinaryFlat``: its top-k (``hammings_knn_hc``) computes one 64-bit popcount
per code and query with scalar instructions and pushes through a heap, ~1.3-1.6 CPU ns per pair
on the benchmark machine against ~0.42 for this scan (``bench/RESULTS-retrieval.md`` section 1).
This scan

* computes a block of distances with one vector loop (XOR + popcount over 64-bit words, which LLVM
  turns into ``vpopcntq`` where the CPU has AVX-512 VPOPCNTDQ, as on the benchmark machine, and
  into the CPU's own popcount elsewhere) for ``QUERY_BLOCK`` queries while a block of the
  database (``CHUNK_WORDS`` 64-bit words) stays in L1;
* keeps, per query, only the items strictly closer than its current k-th distance: a vectorised
  count over the block says whether any item qualifies, so a block with none costs one compare per
  item. Candidates sit in a buffer with a per-distance histogram that gives the k-th distance.

Tie rule: the result is the first ``k`` items in ``(distance, database id)`` order, so it does not
depend on the thread count or on block sizes (faiss leaves the order among equal distances
unspecified). Large ``k`` (``k > SMALL_K``, e.g. a re-ranking shortlist or ``k = N``) takes a
two-pass counting route instead: all distances of a query, their histogram, then one pass that
writes each kept item to its final slot (a counting sort, no candidate buffer).

IVF (:func:`ivf_topk`): each query's probes are its nearest centroids by a counting sort
(:func:`nearest_lists`); the (list, query) probes are sorted by list, so each list is scanned for
all its queries while it sits in L1. One-word codes (up to 64 bits) skip the distance buffer: a
vector loop turns 64 codes into a bit mask of those closer than the query's k-th distance and only
its set bits are visited (the list scan of 48-bit codes ~1.4x faster than the buffered route).

Queries are split across threads (:func:`threads`); the kernels release the GIL.
"""

from __future__ import annotations

import math
import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from numba import int64, njit, types, uint64
from numba.extending import intrinsic

from retrieval.errors import RetrievalError

#: database codes per block: 4,096 one-word codes = 32 KiB, inside the 48 KiB per-core L1 data
#: cache of the bench machine
CHUNK_WORDS = 4096
#: queries that share one database block
QUERY_BLOCK = 32
#: largest k served by the candidate-buffer route; larger k uses the two-pass counting route
SMALL_K = 256


@intrinsic
def _popcount(typingctx, x):
    """LLVM ``ctpop`` on a 64-bit word (numba has no popcount of its own)."""
    sig = types.uint64(types.uint64)

    def codegen(context, builder, signature, args):
        return builder.ctpop(args[0])

    return sig, codegen


@intrinsic
def _cttz(typingctx, x):
    """LLVM ``cttz`` (count trailing zeros) on a non-zero 64-bit word."""
    sig = types.uint64(types.uint64)

    def codegen(context, builder, signature, args):
        return builder.cttz(args[0], context.get_constant(types.boolean, True))

    return sig, codegen


@njit(nogil=True, boundscheck=False, cache=True)
def _distances(blk, q_row, out):  # pragma: no cover - compiled
    """``out[j] = popcount(blk[j] ^ q_row)`` summed over words; ``blk uint64 [m, W]``."""
    m, w = blk.shape
    x = q_row[0]
    for j in range(uint64(m)):
        out[j] = _popcount(blk[j, 0] ^ x)
    for t in range(1, w):
        x = q_row[t]
        for j in range(uint64(m)):
            out[j] += _popcount(blk[j, t] ^ x)


@njit(nogil=True, boundscheck=False, cache=True)
def _kth(hist, k, n_values):  # pragma: no cover - compiled
    """Smallest distance ``t`` with ``hist[0] + ... + hist[t] >= k``; ``n_values`` if none."""
    cum = 0
    for t in range(n_values):
        cum += hist[t]
        if cum >= k:
            return t
    return n_values


@njit(nogil=True, boundscheck=False, cache=True, inline="always")
def _compact(a, nc, th, k, cand_d, cand_i, hist):  # pragma: no cover - compiled
    """Compact query ``a``'s full candidate buffer (``nc`` items) to the items closer than ``th``,
    then ties at ``th`` in arrival order, up to k in all; rebuild its distance histogram and
    return the new count. Inlined into both scans (:func:`_select`, :func:`_insert`)."""
    room = k
    for u in range(nc):
        if cand_d[a, u] < th:
            room -= 1
    keep = 0
    for u in range(nc):
        du = cand_d[a, u]
        if du < th or (du == th and room > 0):
            if du == th:
                room -= 1
            cand_d[a, keep] = du
            cand_i[a, keep] = cand_i[a, u]
            keep += 1
    hist[a, :] = 0
    for u in range(keep):
        hist[a, cand_d[a, u]] += 1
    return keep


@njit(nogil=True, boundscheck=False, cache=True)
def _select(a, dist, m, c0, src, k, n_values, thr, cand_d, cand_i, ncand, hist):  # pragma: no cover
    """Offer ``dist[:m]`` (items ``c0 .. c0+m-1``, or ``src[c0 + j]`` when ``src`` is not empty)
    to query ``a``'s candidate buffer; keeps every item strictly closer than its k-th distance.

    Items arrive in increasing id order (flat scan), so an item tied with the k-th distance loses
    to the k already held.
    """
    th = thr[a]
    hits = 0
    for j in range(uint64(m)):
        hits += dist[j] < th
    if hits == 0:
        return
    cap = cand_d.shape[1]
    for j in range(m):
        dj = dist[j]
        if dj >= th:
            continue
        nc = ncand[a]
        if nc == cap:
            nc = _compact(a, nc, th, k, cand_d, cand_i, hist)
        cand_d[a, nc] = dj
        cand_i[a, nc] = src[c0 + j] if src.shape[0] > 0 else c0 + j
        ncand[a] = nc + 1
        hist[a, dj] += 1
        t = _kth(hist[a], k, n_values)
        if t < th:
            thr[a] = t  # through the array: th keeps the work dtype (vector compares)
            th = thr[a]


@njit(nogil=True, boundscheck=False, cache=True, inline="always")  # list scan ~20% faster inlined
def _insert(a, dj, item, th, k, n_values, thr, cand_d, cand_i, ncand, hist):  # pragma: no cover
    """Add ``item`` at distance ``dj < th = thr[a]`` to query ``a``'s candidates and lower
    ``thr[a]`` to the k-th distance held once k are held. A full buffer is first compacted to the
    items closer than ``th``, then ties at ``th`` in arrival order, up to k in all: the same steps
    as :func:`_select` (both through :func:`_compact`)."""
    cap = cand_d.shape[1]
    nc = ncand[a]
    if nc == cap:
        nc = _compact(a, nc, th, k, cand_d, cand_i, hist)
    cand_d[a, nc] = dj
    cand_i[a, nc] = item
    ncand[a] = nc + 1
    hist[a, dj] += 1
    t = _kth(hist[a], k, n_values)
    if t < th:
        thr[a] = t


@njit(nogil=True, boundscheck=False, cache=True)
def _emit(a, k, n_values, cand_d, cand_i, ncand, out_d, out_i):  # pragma: no cover - compiled
    """Write query ``a``'s first k candidates in (distance, arrival) order; ``-1`` ids and
    ``n_values`` distances pad a list with fewer than k candidates (approximate search only)."""
    r = 0
    for t in range(n_values):
        for u in range(ncand[a]):
            if r < k and cand_d[a, u] == t:
                out_d[a, r] = t
                out_i[a, r] = cand_i[a, u]
                r += 1
    while r < k:
        out_d[a, r] = n_values
        out_i[a, r] = -1
        r += 1


@njit(nogil=True, boundscheck=False, cache=True)
def _candidates(nq, k, n_values):  # pragma: no cover - compiled
    """Per-query candidate buffers (``2k + 64`` slots: compaction keeps <= k, so at least 64
    arrivals between compactions), their fill counts and per-distance histograms."""
    cap = 2 * k + 64
    return (
        np.empty((nq, cap), np.int32),
        np.empty((nq, cap), np.int64),
        np.zeros(nq, np.int64),
        np.zeros((nq, n_values), np.int64),
    )


@njit(nogil=True, boundscheck=False, cache=True)
def _topk_small(db, q, k, n_bits, chunk, dist, thr, out_d, out_i):  # pragma: no cover - compiled
    """Top-k of every query row of ``q`` (candidate-buffer route, ``k <= SMALL_K``).

    ``dist``: work buffer ``[chunk]`` (uint8 or uint16); ``thr``: ``[Q]`` of the same dtype, set
    to ``n_bits + 1``. Writes ``out_d int32 [Q, k]`` and ``out_i int64 [Q, k]``.
    """
    n = db.shape[0]
    nq = q.shape[0]
    n_values = n_bits + 1
    cand_d, cand_i, ncand, hist = _candidates(nq, k, n_values)
    no_src = np.empty(0, np.int64)
    for c0 in range(0, n, chunk):
        blk = db[c0 : c0 + chunk]
        m = blk.shape[0]
        for a in range(nq):
            _distances(blk, q[a], dist)
            _select(a, dist, m, c0, no_src, k, n_values, thr, cand_d, cand_i, ncand, hist)
    for a in range(nq):
        _emit(a, k, n_values, cand_d, cand_i, ncand, out_d, out_i)


@njit(nogil=True, boundscheck=False, cache=True)
def _topk_lists(
    db, ids, offsets, pair_list, pair_query, q, k, n_bits, chunk, dist, thr, out_d, out_i
):  # pragma: no cover - compiled
    """Top-k of every query over its probed inverted lists (approximate: IVF).

    ``db`` / ``ids``: codes and their database ids grouped by list, list ``l`` at rows
    ``offsets[l] .. offsets[l+1]-1``. ``(pair_list, pair_query)``: every (list, query) probe,
    sorted by list, so a list is read once from memory and scanned for all its queries while it
    sits in cache (list-major order, the batched IVF scan).
    """
    nq = q.shape[0]
    n_values = n_bits + 1
    cand_d, cand_i, ncand, hist = _candidates(nq, k, n_values)
    for e in range(pair_list.shape[0]):
        lst = pair_list[e]
        a = pair_query[e]
        for c0 in range(offsets[lst], offsets[lst + 1], chunk):
            blk = db[c0 : min(c0 + chunk, offsets[lst + 1])]
            _distances(blk, q[a], dist)
            _select(a, dist, blk.shape[0], c0, ids, k, n_values, thr, cand_d, cand_i, ncand, hist)
    for a in range(nq):
        _emit(a, k, n_values, cand_d, cand_i, ncand, out_d, out_i)


#: codes per hit mask of the one-word list scan (:func:`_topk_lists1`)
MASK_BITS = 64


@njit(nogil=True, boundscheck=False, cache=True)
def _topk_lists1(
    db1, ids, offsets, pair_list, pair_query, q, k, n_bits, thr, out_d, out_i
):  # pragma: no cover - compiled
    """:func:`_topk_lists` for one-word codes (``n_bits <= 64``; ``db1 uint64 [N]``), without a
    distance buffer: per run of ``MASK_BITS`` codes, one vector loop sets a bit for every code
    strictly closer than the query's k-th distance (``thr int64 [Q]``, ``n_bits + 1`` at first),
    and only the set bits are visited (their distance recomputed, then :func:`_insert`). Same
    candidates, in the same arrival order, as :func:`_topk_lists`."""
    nq = q.shape[0]
    n_values = n_bits + 1
    cand_d, cand_i, ncand, hist = _candidates(nq, k, n_values)
    for e in range(pair_list.shape[0]):
        lst = pair_list[e]
        a = pair_query[e]
        x = q[a, 0]
        th = uint64(thr[a])
        end = offsets[lst + 1]
        for s0 in range(offsets[lst], end, MASK_BITS):
            blk = db1[s0 : min(s0 + MASK_BITS, end)]
            mask = uint64(0)
            if blk.shape[0] == MASK_BITS:  # constant trip count: one unrolled vector loop
                for j in range(uint64(MASK_BITS)):
                    mask |= uint64(_popcount(blk[j] ^ x) < th) << j
            else:
                for j in range(uint64(blk.shape[0])):
                    mask |= uint64(_popcount(blk[j] ^ x) < th) << j
            while mask:
                j = _cttz(mask)
                mask &= mask - uint64(1)
                d = _popcount(blk[j] ^ x)
                if d < th:
                    _insert(a, int64(d), ids[s0 + j], int64(th), k, n_values, thr, cand_d,
                            cand_i, ncand, hist)  # fmt: skip
                    th = uint64(thr[a])
    for a in range(nq):
        _emit(a, k, n_values, cand_d, cand_i, ncand, out_d, out_i)


@njit(nogil=True, boundscheck=False, cache=True)
def _pairs(probes, n_lists):  # pragma: no cover - compiled
    """Every (list, query) probe of ``probes int64 [Q, nprobe]`` (``-1`` skipped), sorted by list
    and, within a list, by query (a counting sort): ``(pair_list, pair_query)``."""
    count = np.zeros(n_lists + 1, np.int64)
    for a in range(probes.shape[0]):
        for p in range(probes.shape[1]):
            if probes[a, p] >= 0:
                count[probes[a, p] + 1] += 1
    for lst in range(n_lists):
        count[lst + 1] += count[lst]
    pair_list = np.empty(count[n_lists], np.int64)
    pair_query = np.empty(count[n_lists], np.int64)
    for a in range(probes.shape[0]):
        for p in range(probes.shape[1]):
            lst = probes[a, p]
            if lst >= 0:
                e = count[lst]
                pair_list[e] = lst
                pair_query[e] = a
                count[lst] = e + 1
    return pair_list, pair_query


@njit(nogil=True, boundscheck=False, cache=True)
def _nearest(cents, q, nprobe, n_bits, dist, out):  # pragma: no cover - compiled
    """The ``nprobe`` nearest rows of ``cents uint64 [L, W]`` to each query, ascending by
    ``(distance, row)``, into ``out int64 [Q, nprobe]`` (``nprobe <= L``): all distances, their
    histogram (four interleaved counts, so repeated distances do not wait on each other), then one
    pass writing each kept row to its slot (a counting sort, as :func:`_topk_large`)."""
    n_values = n_bits + 1
    n = cents.shape[0]
    hist4 = np.zeros((4, n_values), np.int64)
    hist = np.zeros(n_values, np.int64)
    slot = np.zeros(n_values, np.int64)
    for a in range(q.shape[0]):
        _distances(cents, q[a], dist)
        hist4[:] = 0
        j = 0
        while j + 4 <= n:
            hist4[0, dist[j]] += 1
            hist4[1, dist[j + 1]] += 1
            hist4[2, dist[j + 2]] += 1
            hist4[3, dist[j + 3]] += 1
            j += 4
        while j < n:
            hist4[0, dist[j]] += 1
            j += 1
        for t in range(n_values):
            hist[t] = hist4[0, t] + hist4[1, t] + hist4[2, t] + hist4[3, t]
        kth = _kth(hist, nprobe, n_values)
        pos = 0
        for t in range(kth + 1):
            slot[t] = pos
            pos += hist[t]
        for j in range(n):
            dj = dist[j]
            if dj > kth:
                continue
            s = slot[dj]
            if s < nprobe:  # ties at the k-th distance fill the last slots in row order
                out[a, s] = j
                slot[dj] = s + 1


@njit(nogil=True, boundscheck=False, cache=True)
def _topk_large(db, q, k, n_bits, dist, out_d, out_i):  # pragma: no cover - compiled
    """Top-k by counting sort (any ``k``): ``dist`` is a work buffer ``[N]`` (uint8 or uint16)."""
    n_values = n_bits + 1
    hist = np.zeros(n_values, np.int64)
    slot = np.zeros(n_values, np.int64)
    for a in range(q.shape[0]):
        _distances(db, q[a], dist)
        hist[:] = 0
        for j in range(db.shape[0]):
            hist[dist[j]] += 1
        kth = _kth(hist, k, n_values)
        pos = 0
        for t in range(n_values):
            slot[t] = pos
            pos += hist[t]
        end_tied = k  # items at the k-th distance fill slots up to k, in id order
        for j in range(db.shape[0]):
            dj = dist[j]
            if dj > kth:
                continue
            s = slot[dj]
            if dj == kth and s >= end_tied:
                continue
            out_d[a, s] = dj
            out_i[a, s] = j
            slot[dj] = s + 1


def _parallel(run, nq: int, n_threads: int | None) -> None:
    """``run(slice)`` over contiguous query ranges, one per thread (the kernels release the GIL)."""
    workers = max(1, min(n_threads or threads(), math.ceil(nq / QUERY_BLOCK)))
    step = math.ceil(nq / workers)
    parts = [slice(s, min(s + step, nq)) for s in range(0, nq, step)]
    if len(parts) == 1:
        run(parts[0])
    else:
        with ThreadPoolExecutor(max_workers=len(parts)) as pool:
            list(pool.map(run, parts))


def _prepare(db_words: np.ndarray, q_words: np.ndarray, k: int, n_bits: int) -> tuple:
    """Contiguous ``uint64`` words, empty outputs ``[Q, k]``, the work dtype (uint8 while
    distances up to ``n_bits`` and the "no threshold yet" ``n_bits + 1`` fit, else uint16) and the
    database block length for codes of ``W`` words."""
    db = np.ascontiguousarray(db_words, dtype=np.uint64)
    q = np.ascontiguousarray(q_words, dtype=np.uint64)
    out_d = np.empty((len(q), k), np.int32)
    out_i = np.empty((len(q), k), np.int64)
    dtype = np.uint8 if n_bits + 1 <= np.iinfo(np.uint8).max else np.uint16
    return db, q, out_d, out_i, dtype, max(256, CHUNK_WORDS // db.shape[1])


def threads() -> int:
    """Threads used by :func:`hamming_topk`: ``HASHAUDIT_THREADS`` or the CPUs this process may
    use."""
    env = os.environ.get("HASHAUDIT_THREADS")
    if env:
        try:
            return max(1, int(env))
        except ValueError as err:
            raise RetrievalError(
                f"HASHAUDIT_THREADS={env!r} is not a whole number; set it to the number of "
                "threads of the Hamming scan (e.g. HASHAUDIT_THREADS=4), or unset it to use every "
                "CPU this process may use"
            ) from err
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def hamming_topk(
    db_words: np.ndarray, q_words: np.ndarray, k: int, *, n_bits: int, n_threads: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Exact k nearest codes: ``(distances int32 [Q, k], ids int64 [Q, k])``, ascending by
    ``(distance, id)``.

    ``db_words`` ``uint64 [N, W]`` and ``q_words`` ``uint64 [Q, W]`` hold codes of ``n_bits`` bits
    with every bit past ``n_bits`` zero on both sides (:func:`retrieval.codes.pad_to_words`
    viewed as ``uint64``). The caller checks ``1 <= k <= N`` (:func:`retrieval.search.check_k`).
    """
    db, q, out_d, out_i, dtype, chunk = _prepare(db_words, q_words, k, n_bits)
    n, nq = len(db), len(q)
    if nq == 0:
        return out_d, out_i

    def run(sl: slice) -> None:
        qs = q[sl]
        if k <= SMALL_K:
            for b0 in range(0, len(qs), QUERY_BLOCK):
                qb = qs[b0 : b0 + QUERY_BLOCK]
                thr = np.full(len(qb), n_bits + 1, dtype)
                rows = slice(sl.start + b0, sl.start + b0 + len(qb))
                _topk_small(
                    db, qb, k, n_bits, chunk, np.empty(chunk, dtype), thr, out_d[rows], out_i[rows]
                )
        else:
            _topk_large(db, qs, k, n_bits, np.empty(n, dtype), out_d[sl], out_i[sl])

    _parallel(run, nq, n_threads)
    return out_d, out_i


def nearest_lists(
    centroids: np.ndarray,
    q_words: np.ndarray,
    nprobe: int,
    *,
    n_bits: int,
    n_threads: int | None = None,
) -> np.ndarray:
    """The ``nprobe`` nearest centroids of each query (IVF probes): ``int64 [Q, nprobe]``, ascending
    by ``(distance, centroid row)``, i.e. ``hamming_topk(centroids, q_words, nprobe)[1]``, by a
    counting sort over the few distances (cheaper than the candidate buffer when ``nprobe`` is a
    sizeable share of the centroids). ``1 <= nprobe <= len(centroids)``."""
    cents = np.ascontiguousarray(centroids, dtype=np.uint64)
    q = np.ascontiguousarray(q_words, dtype=np.uint64)
    out = np.empty((len(q), nprobe), np.int64)
    dtype = np.uint8 if n_bits + 1 <= np.iinfo(np.uint8).max else np.uint16
    if len(q):
        _parallel(
            lambda sl: _nearest(cents, q[sl], nprobe, n_bits, np.empty(len(cents), dtype), out[sl]),
            len(q),
            n_threads,
        )
    return out


def ivf_topk(
    db_words: np.ndarray,
    ids: np.ndarray,
    offsets: np.ndarray,
    probes: np.ndarray | None,
    q_words: np.ndarray,
    k: int,
    *,
    n_bits: int,
    n_threads: int | None = None,
    centroids: np.ndarray | None = None,
    nprobe: int = 0,
    centroid_bits: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Approximate k nearest codes over inverted lists: ``(distances int32 [Q, k], ids int64
    [Q, k])``, each query scanning only its ``probes`` lists with the same kernels as
    :func:`hamming_topk`.

    ``db_words uint64 [N, W]`` / ``ids int64 [N]`` are grouped by list (list ``l`` at rows
    ``offsets[l]:offsets[l+1]``); ``probes int64 [Q, nprobe]`` (``-1`` = none), or ``None`` with
    ``centroids uint64 [nlist, W']``, ``nprobe`` and ``centroid_bits``: each query then probes its
    :func:`nearest_lists`, found in the same worker thread as its scan. Fewer than k
    codes in the probed lists pad the result with id ``-1`` at distance ``n_bits + 1``. Ties are
    kept in scan order (lists in increasing list number, ids ascending within a list).
    """
    db, q, out_d, out_i, dtype, chunk = _prepare(db_words, q_words, k, n_bits)
    ids = np.ascontiguousarray(ids, dtype=np.int64)
    offsets = np.ascontiguousarray(offsets, dtype=np.int64)
    if probes is None:
        cents = np.ascontiguousarray(centroids, dtype=np.uint64)
        c_dtype = np.uint8 if centroid_bits + 1 <= np.iinfo(np.uint8).max else np.uint16
    else:
        probes = np.ascontiguousarray(probes, dtype=np.int64)
    nq, n_lists = len(q), len(offsets) - 1
    if nq == 0:
        return out_d, out_i
    one_word = db.shape[1] == 1

    def run(sl: slice) -> None:
        if probes is None:
            pr = np.empty((sl.stop - sl.start, nprobe), np.int64)
            _nearest(cents, q[sl], nprobe, centroid_bits, np.empty(len(cents), c_dtype), pr)
        else:
            pr = probes[sl]
        pair_list, pair_query = _pairs(pr, n_lists)
        if one_word:
            thr = np.full(len(pr), n_bits + 1, np.int64)
            _topk_lists1(
                db.reshape(-1), ids, offsets, pair_list, pair_query, q[sl], k, n_bits, thr,
                out_d[sl], out_i[sl],
            )  # fmt: skip
        else:
            thr = np.full(len(pr), n_bits + 1, dtype)
            _topk_lists(
                db, ids, offsets, pair_list, pair_query, q[sl], k, n_bits, chunk,
                np.empty(chunk, dtype), thr, out_d[sl], out_i[sl],
            )  # fmt: skip

    _parallel(run, nq, n_threads)
    return out_d, out_i


@njit(nogil=True, boundscheck=False, cache=True)
def _class_counts(db, labels, q, chunk, dist, out):  # pragma: no cover - compiled
    """``out[a, d, c]`` += database items of class ``c`` at Hamming distance ``d`` from query
    ``a``; queries share each database block while it sits in L1, as in :func:`_topk_small`."""
    n = db.shape[0]
    for c0 in range(0, n, chunk):
        blk = db[c0 : c0 + chunk]
        lab = labels[c0 : c0 + chunk]
        for a in range(q.shape[0]):
            _distances(blk, q[a], dist)
            h = out[a]
            for j in range(blk.shape[0]):
                h[dist[j], lab[j]] += 1


def hamming_class_counts(
    db_words: np.ndarray,
    q_words: np.ndarray,
    labels: np.ndarray,
    *,
    n_classes: int,
    n_bits: int,
    n_threads: int | None = None,
) -> np.ndarray:
    """``int64 [Q, n_bits + 1, n_classes]``: how many database items of each class lie at each
    Hamming distance from each query (the input of tie-aware voting and ranking metrics), by the
    same compiled scan as :func:`hamming_topk`. ``labels``: int class ids ``[N]`` in
    ``0 .. n_classes - 1``."""
    db, q, _, _, dtype, chunk = _prepare(db_words, q_words, 0, n_bits)
    lab = np.ascontiguousarray(labels, dtype=np.int64)
    out = np.zeros((len(q), n_bits + 1, n_classes), np.int64)
    if len(q) == 0:
        return out

    def run(sl: slice) -> None:
        for b0 in range(sl.start, sl.stop, QUERY_BLOCK):
            rows = slice(b0, min(b0 + QUERY_BLOCK, sl.stop))
            _class_counts(db, lab, q[rows], chunk, np.empty(chunk, dtype), out[rows])

    _parallel(run, len(q), n_threads)
    return out
