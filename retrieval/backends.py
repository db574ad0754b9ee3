"""Index back-ends for packed codes behind one small interface, and their registry.

A back-end holds a database of packed codes and answers ``search(q_packed, k) -> (distances int32
[Q, k], ids int64 [Q, k])``. Registered (:data:`BACKENDS`, :func:`build_index`):

- ``exact``: exact, the compiled linear scan of :class:`retrieval.search.HammingIndex` (ties by
  database id); the default.
- ``faiss``: exact, faiss ``IndexBinaryFlat`` (``HammingIndex(engine="faiss")``).
- ``ivf``: approximate, the same trained IVF coarse quantiser as ``faiss_ivf`` with its lists
  scanned by the compiled kernels of :mod:`retrieval.scan` (:class:`ScanIVF`).
- ``faiss_ivf``: approximate, faiss ``IndexBinaryIVF`` (inverted lists over a binary k-means
  coarse quantiser, the IVF of Jégou, Douze & Schmid, TPAMI 2011 (inverted files themselves are
  older: Sivic & Zisserman, ICCV 2003); ``nlist`` lists,
  ``nprobe`` visited per query). Compare it with exact search by
  :func:`recall_at`.
- ``faiss_hnsw``: approximate, faiss ``IndexBinaryHNSW`` (hierarchical navigable small-world graph,
  Malkov & Yashunin, TPAMI 2020; ``m`` links per node, ``ef_construction`` / ``ef_search`` the
  candidate lists of the build and of a query). No training; the build is the slow part
  (bench/RESULTS-retrieval.md: minutes for 1M codes on 2 cores).
- ``milvus``: a Milvus collection (Wang et al., "Milvus: a purpose-built vector data management
  system", SIGMOD 2021) (``BINARY_VECTOR`` field, ``HAMMING`` metric, ``BIN_FLAT`` or
  ``BIN_IVF_FLAT`` index) through ``pymilvus.MilvusClient``. ``uri`` = a local file path runs
  embedded Milvus Lite (pip ``milvus-lite``); ``uri`` = ``http://host:19530`` talks to a Milvus
  server, with the same client code. Milvus Lite 3.x rejects ``BINARY_VECTOR`` ("MilvusLite does
  not support ... BinaryVector", checked with milvus-lite 3.2.2), so the project pins
  ``milvus-lite`` 2.5.x, whose embedded server supports binary vectors with ``BIN_FLAT``.

Ties: every back-end returns *some* k items at the k-th distance; compare back-ends with
:func:`recall_at` (an item counts when its distance is within the exact k-th distance), not by ids.
Adding a back-end = one class with ``search`` + one line in :data:`BACKENDS`.
"""

from __future__ import annotations

import functools
import importlib.metadata
import logging
import math
import socket
import sys
import types
import uuid
from collections.abc import Callable
from typing import Any, Protocol
from urllib.parse import urlparse

import faiss
import numpy as np

from retrieval.codes import check_codes, pad_to_words
from retrieval.errors import RetrievalError
from retrieval.search import HammingIndex, check_k

log = logging.getLogger(__name__)


class CodeIndex(Protocol):
    """What every back-end offers."""

    n_bits: int

    @property
    def ntotal(self) -> int: ...

    def search(self, q_packed: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]: ...


def check_queries(q_packed: np.ndarray, n_bits: int) -> None:
    """:func:`~retrieval.codes.check_codes` of the queries against the width of this index's
    ``n_bits``-bit database (an index keeps no database rows to compare with: an all-zero row
    of that width stands in for them, so an empty query set or another bit length is named as
    such, not as an empty or narrower database)."""
    check_codes(q_packed, np.zeros((1, math.ceil(n_bits / 8)), dtype=np.uint8), n_bits)


def _faiss_search(
    index: Any, q_packed: np.ndarray, n_bits: int, k: int
) -> tuple[np.ndarray, np.ndarray]:
    """``(distances int32, ids int64)`` of a faiss binary index over codes padded to words."""
    k = check_k(k, int(index.ntotal))  # a Python int: faiss' SWIG refuses numpy ints
    check_queries(q_packed, n_bits)
    d, i = index.search(np.ascontiguousarray(pad_to_words(q_packed, n_bits)), k)
    d = d.astype(np.int32)
    # a result faiss could not fill (id -1) gets the padding distance of every back-end, past any
    # real one: IndexBinaryHNSW reports INT32_MIN there, which read as the nearest possible
    d[i < 0] = n_bits + 1
    return d, i


def _trained_ivf(codes: np.ndarray, *, nlist: int | None, train_size: int | None, seed: int) -> Any:
    """A faiss ``IndexBinaryIVF`` over word-padded ``codes`` with its coarse quantiser trained
    (binary k-means on ``train_size`` codes, default 64 per list) and nothing added."""
    if nlist is not None and not nlist >= 1:  # 0 became the default, -3 a SWIG TypeError
        raise RetrievalError(
            f"nlist={nlist} must be >= 1 (retrieval.ivf_nlist; null = the default 4 sqrt(N))"
        )
    if train_size is not None and not train_size >= 1:  # -1 trained on all but one code
        raise RetrievalError(
            f"train_size={train_size} must be positive: the number of codes k-means trains on "
            "(at least nlist; null = the default, 64 codes per list)"
        )
    # the default, 4 sqrt(N), exceeds N below 16 codes: there every code gets its own list
    if nlist is None:
        nlist = min(len(codes), max(1, int(4 * math.sqrt(len(codes)))))
    if nlist > len(codes):
        raise RetrievalError(f"nlist={nlist} exceeds the {len(codes)} database codes")
    if train_size is not None and train_size < nlist:  # faiss' k-means: a raw RuntimeError
        raise RetrievalError(
            f"train_size={train_size} is smaller than nlist={nlist}: k-means needs at least one "
            "training code per list; raise train_size (or leave it null: 64 per list) or lower "
            "nlist"
        )
    quantizer = faiss.IndexBinaryFlat(8 * codes.shape[1])
    index = faiss.IndexBinaryIVF(quantizer, 8 * codes.shape[1], nlist)
    index.own_fields = True
    quantizer.this.disown()
    rng = np.random.default_rng(seed)
    train_size = 64 * nlist if train_size is None else train_size  # k-means: 64 codes per list
    train = codes[rng.permutation(len(codes))[:train_size]] if len(codes) > train_size else codes
    index.train(train)
    return index


class FaissIVF:
    """Approximate Hamming search with faiss ``IndexBinaryIVF``."""

    def __init__(
        self,
        db_packed: np.ndarray,
        n_bits: int,
        *,
        nlist: int | None = None,
        nprobe: int = 16,
        train_size: int | None = None,
        seed: int = 0,
    ) -> None:
        check_codes(None, db_packed, n_bits)
        if nprobe < 1:
            raise RetrievalError(f"nprobe={nprobe} must be >= 1 (retrieval.ivf_nprobe)")
        self.n_bits = n_bits
        codes = np.ascontiguousarray(pad_to_words(db_packed, n_bits))
        self.index = _trained_ivf(codes, nlist=nlist, train_size=train_size, seed=seed)
        if nprobe > self.index.nlist:  # a small database: probe every list (both back-ends alike)
            log.info("nprobe=%d > nlist=%d: every list is probed", nprobe, self.index.nlist)
        self.index.nprobe = min(nprobe, int(self.index.nlist))
        self._populate(codes)

    def _populate(self, codes: np.ndarray) -> None:
        """Put the database into the trained index (here: faiss' own inverted lists)."""
        self.index.add(codes)

    @property
    def ntotal(self) -> int:
        return int(self.index.ntotal)

    def search(self, q_packed: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        return _faiss_search(self.index, q_packed, self.n_bits, k)


class FaissHNSW:
    """Approximate Hamming search with faiss ``IndexBinaryHNSW`` on codes padded to 8-byte words."""

    def __init__(
        self,
        db_packed: np.ndarray,
        n_bits: int,
        *,
        m: int = 32,
        ef_construction: int = 40,
        ef_search: int = 64,
    ) -> None:
        check_codes(None, db_packed, n_bits)
        for name, value in (
            ("m", m),
            ("ef_construction", ef_construction),
            ("ef_search", ef_search),
        ):
            if value < 1:
                raise RetrievalError(f"HNSW {name}={value} must be >= 1")
        self.n_bits = n_bits
        codes = np.ascontiguousarray(pad_to_words(db_packed, n_bits))
        self.index = faiss.IndexBinaryHNSW(8 * codes.shape[1], m)
        self.index.hnsw.efConstruction = ef_construction
        self.index.add(codes)
        self.ef_search = ef_search

    @property
    def ntotal(self) -> int:
        return int(self.index.ntotal)

    def search(self, q_packed: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The k nearest found by the graph search (``efSearch = max(ef_search, k)``)."""
        k = check_k(k, self.ntotal)  # before max(): a k of "3" was a TypeError there
        self.index.hnsw.efSearch = max(self.ef_search, k)
        return _faiss_search(self.index, q_packed, self.n_bits, k)


class ScanIVF(FaissIVF):
    """Approximate Hamming search: faiss' trained IVF coarse quantiser (as :class:`FaissIVF`), the
    inverted lists scanned by the compiled kernels of :mod:`retrieval.scan` (SIMD popcount over a
    list held contiguously), which spend a fraction of faiss' per-code time on each probed list.
    ``index.nprobe`` is read at every search, as for :class:`FaissIVF`."""

    def _populate(self, codes: np.ndarray) -> None:
        quantizer = faiss.downcast_IndexBinary(self.index.quantizer)
        centroids = faiss.vector_to_array(quantizer.xb).reshape(-1, codes.shape[1])
        self.centroids = np.ascontiguousarray(centroids).view(np.uint64)
        _, assign = quantizer.search(codes, 1)
        self.ids = np.argsort(assign[:, 0], kind="stable")  # grouped by list, ids ascending within
        self.words = np.ascontiguousarray(codes[self.ids]).view(np.uint64)
        sizes = np.bincount(assign[:, 0], minlength=self.index.nlist)
        self.offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)

    @property
    def ntotal(self) -> int:
        return len(self.ids)

    def search(self, q_packed: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        from retrieval.scan import ivf_topk

        k = check_k(k, self.ntotal)
        check_queries(q_packed, self.n_bits)
        nprobe, nlist = int(self.index.nprobe), int(self.index.nlist)
        if not 1 <= nprobe <= nlist:
            raise RetrievalError(f"nprobe={nprobe} must be between 1 and nlist={nlist}")
        q = np.ascontiguousarray(pad_to_words(q_packed, self.n_bits))
        words = q.view(np.uint64)
        # each query probes its nprobe nearest centroids (scan.nearest_lists), ties by list number
        return ivf_topk(
            self.words, self.ids, self.offsets, None, words, k, n_bits=self.n_bits,
            centroids=self.centroids, nprobe=nprobe, centroid_bits=8 * q.shape[1],
        )  # fmt: skip


def _import_milvus() -> Any:
    """Import ``pymilvus`` (and Milvus Lite when present). milvus-lite 2.5 reads its own version
    through ``pkg_resources``, which new setuptools no longer ship: a two-function stand-in is
    placed in ``sys.modules`` for that one import and removed again."""
    try:
        import pymilvus
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise RetrievalError(
            "the milvus back-end needs pymilvus: pip install 'pymilvus>=2.5,<2.6' 'milvus-lite==2.5.1'"
        ) from err
    if "milvus_lite" not in sys.modules:
        shim = None
        if "pkg_resources" not in sys.modules:
            try:
                import pkg_resources  # noqa: F401
            except ImportError:
                shim = types.ModuleType("pkg_resources")
                shim.DistributionNotFound = importlib.metadata.PackageNotFoundError  # type: ignore[attr-defined]
                shim.get_distribution = lambda name: types.SimpleNamespace(  # type: ignore[attr-defined]
                    version=importlib.metadata.version(name)
                )
                sys.modules["pkg_resources"] = shim
        try:
            import milvus_lite
            import milvus_lite.server_manager  # noqa: F401
        except ImportError:
            pass  # server URIs still work without Milvus Lite
        finally:
            if shim is not None:
                sys.modules.pop("pkg_resources", None)
    return pymilvus


def _is_server(uri: str) -> bool:
    return urlparse(uri).scheme in ("http", "https", "tcp", "grpc")


def check_reachable(uri: str, *, timeout: float = 2.0) -> None:
    """Fail fast, naming the URI and the fix, when a Milvus server URI does not answer."""
    parsed = urlparse(uri)
    try:
        port = parsed.port or (443 if parsed.scheme == "https" else 19530)
    except ValueError as err:  # a port that is not a number in 0-65535
        raise RetrievalError(
            f"Milvus URI {uri!r}: {err}; write a server URI as {parsed.scheme}://host:19530 "
            "(retrieval.milvus_uri or index --uri), or a local file path for Milvus Lite"
        ) from None
    host = parsed.hostname
    if not host:
        raise RetrievalError(
            f"Milvus URI {uri!r} names no host; write a server URI as {parsed.scheme}://host:19530 "
            "(retrieval.milvus_uri or index --uri), or a local file path for Milvus Lite"
        )
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return
    except OSError as err:
        raise RetrievalError(
            f"cannot reach Milvus at {uri} ({err.strerror or err}); start a Milvus server there or "
            "set retrieval.milvus_uri to a local file (e.g. artifacts/milvus.db) to use embedded "
            "Milvus Lite"
        ) from None


#: the most results Milvus returns per query (its ``topk`` / ``limit`` bound, 16384 in Milvus 2.x)
MILVUS_TOPK_LIMIT = 16384


class MilvusIndex:
    """Codes in a Milvus collection: ``id INT64`` primary key (= database row) and
    ``code BINARY_VECTOR`` (codes zero-padded to whole bytes), metric ``HAMMING``.

    ``collection=None`` (the default) creates a collection of this index's own,
    ``hashaudit_codes_<random hex>``, dropped by :meth:`close`: with one fixed name, a second index
    on the same URI (another ``hashaudit index`` run on a shared server, or a second index in one
    process) dropped and refilled the first one's collection, whose searches then returned the
    other database's ids and distances. A named collection is replaced when it exists and kept
    after :meth:`close`. The collection is created with ``consistency_level="Strong"``: under
    Milvus' default, Bounded, a search right after the inserts may not see the latest ones, which
    read as neighbours the index missed."""

    def __init__(
        self,
        db_packed: np.ndarray,
        n_bits: int,
        *,
        uri: str = "milvus_codes.db",
        collection: str | None = None,
        index_type: str = "BIN_FLAT",
        nlist: int = 1024,
        nprobe: int = 16,
        batch: int = 20_000,
        token: str = "",
    ) -> None:
        check_codes(None, db_packed, n_bits)
        if index_type not in ("BIN_FLAT", "BIN_IVF_FLAT"):
            raise RetrievalError(f"index_type={index_type!r}: use 'BIN_FLAT' or 'BIN_IVF_FLAT'")
        if index_type != "BIN_FLAT" and not _is_server(uri):
            raise RetrievalError(
                f"index_type={index_type!r} needs a Milvus server: Milvus Lite ({uri}, a local "
                "file) builds BIN_FLAT only; use retrieval.milvus_index: BIN_FLAT, or a server URI "
                "(retrieval.milvus_uri: http://host:19530)"
            )
        if _is_server(uri):
            check_reachable(uri)
        pymilvus = _import_milvus()
        self._owned = collection is None
        if collection is None:
            collection = f"hashaudit_codes_{uuid.uuid4().hex}"
        self.n_bits, self.uri, self.collection = n_bits, uri, collection
        self.dim = 8 * math.ceil(n_bits / 8)
        self.nprobe, self.index_type = nprobe, index_type
        try:
            self.client = pymilvus.MilvusClient(uri=uri, token=token, timeout=10)
        except (pymilvus.exceptions.MilvusException, OSError) as err:  # not a bug: say what to fix
            raise RetrievalError(
                f"cannot open Milvus at {uri}: {err}; check the URI (a file path = Milvus Lite, "
                "http://host:19530 = a server) and that milvus-lite 2.5 is installed"
            ) from None
        if self.client.has_collection(collection):
            self.client.drop_collection(collection)
        schema = self.client.create_schema(auto_id=False)
        schema.add_field("id", pymilvus.DataType.INT64, is_primary=True)
        schema.add_field("code", pymilvus.DataType.BINARY_VECTOR, dim=self.dim)
        params = self.client.prepare_index_params()
        extra = {"nlist": nlist} if index_type == "BIN_IVF_FLAT" else {}
        params.add_index(
            field_name="code", index_type=index_type, metric_type="HAMMING", params=extra
        )
        self.client.create_collection(
            collection, schema=schema, index_params=params, consistency_level="Strong"
        )
        packed = np.ascontiguousarray(db_packed)
        for start in range(0, len(packed), batch):
            rows = [
                {"id": start + j, "code": packed[start + j].tobytes()}
                for j in range(min(batch, len(packed) - start))
            ]
            self.client.insert(collection, rows)
        self.client.load_collection(collection)
        self._n = len(packed)

    @property
    def ntotal(self) -> int:
        return self._n

    def search(
        self, q_packed: np.ndarray, k: int, *, batch: int = 1000
    ) -> tuple[np.ndarray, np.ndarray]:
        k = check_k(k, self.ntotal)
        if k > MILVUS_TOPK_LIMIT:  # checked here: Milvus answers with a MilvusException
            raise RetrievalError(
                f"k={k} exceeds Milvus' limit of {MILVUS_TOPK_LIMIT} results per query (topk); "
                "lower k, or search with the exact back-ends (retrieval.backend: exact or faiss), "
                "which take any k up to the database size"
            )
        check_queries(q_packed, self.n_bits)
        # a result Milvus does not fill (an IVF search probing too few lists) stays a miss: id -1
        # at the padding distance K + 1, as the faiss back-ends report it
        dist = np.full((len(q_packed), k), self.n_bits + 1, dtype=np.int32)
        ids = np.full((len(q_packed), k), -1, dtype=np.int64)
        params: dict[str, Any] = {"metric_type": "HAMMING"}
        if self.index_type == "BIN_IVF_FLAT":
            params["params"] = {"nprobe": self.nprobe}
        for start in range(0, len(q_packed), batch):
            chunk = q_packed[start : start + batch]
            res = self.client.search(
                self.collection,
                data=[row.tobytes() for row in chunk],
                anns_field="code",
                limit=k,
                search_params=params,
            )
            for j, hits in enumerate(res):
                ids[start + j, : len(hits)] = [h["id"] for h in hits]
                dist[start + j, : len(hits)] = [round(h["distance"]) for h in hits]
        return dist, ids

    def close(self) -> None:
        """Release the connection, dropping the collection when this index named it itself (best
        effort: clients of one URI share pymilvus' connection, which the first close removes)."""
        if getattr(self, "_owned", False):
            try:
                self.client.drop_collection(self.collection)
            except _import_milvus().exceptions.MilvusException as err:  # cleanup only
                log.warning("Milvus collection %s was not dropped: %s", self.collection, err)
        self.client.close()


#: name -> constructor ``(db_packed, n_bits, **options) -> CodeIndex``
BACKENDS: dict[str, Callable[..., CodeIndex]] = {
    "exact": HammingIndex,
    "faiss": functools.partial(HammingIndex, engine="faiss"),
    "ivf": ScanIVF,
    "faiss_ivf": FaissIVF,
    "faiss_hnsw": FaissHNSW,
    "milvus": MilvusIndex,
}


def build_index(name: str, db_packed: np.ndarray, n_bits: int, **options: Any) -> CodeIndex:
    """The registered back-end ``name`` holding ``db_packed``."""
    if name not in BACKENDS:
        raise RetrievalError(f"unknown index back-end {name!r}; registered: {', '.join(BACKENDS)}")
    return BACKENDS[name](db_packed, n_bits, **options)


def recall_at(
    exact_dist: np.ndarray, approx_dist: np.ndarray, approx_ids: np.ndarray | None = None
) -> float:
    """Tie-aware recall@k of an approximate search: the share of its k results whose distance is
    within the exact k-th distance (an item tied with the k-th is as good as the one exact search
    happened to return). A missing result (id ``-1`` in ``approx_ids``) never counts, whatever
    distance the back-end reported for it.

    Both searches must answer the same queries at the same k: results of another k or another
    query set broadcast against each other (``[1, 10]`` exact rows against ``[3, 10]``, 100
    results against the 10th exact distance) and read as a recall."""
    exact_dist, approx_dist = np.asarray(exact_dist), np.asarray(approx_dist)
    if exact_dist.ndim != 2 or exact_dist.size == 0 or approx_dist.shape != exact_dist.shape:
        raise RetrievalError(
            f"exact distances {exact_dist.shape} and approximate distances {approx_dist.shape} "
            "must both be [queries, k] from the same queries and the same k (at least one of "
            "each); search both back-ends with the same query codes and k"
        )
    if approx_ids is not None and np.shape(approx_ids) != exact_dist.shape:
        raise RetrievalError(
            f"approximate ids {np.shape(approx_ids)} and distances {approx_dist.shape} differ in "
            "shape; pass the ids and distances of one search"
        )
    kth = exact_dist[:, -1:]
    hit = approx_dist <= kth
    if approx_ids is not None:
        hit &= approx_ids >= 0
    return float(hit.mean())
