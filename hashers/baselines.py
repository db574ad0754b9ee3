"""Unsupervised floors: LSH (random hyperplanes, multi-table), ITQ and PCA + random rotation.

These are closed-form methods (``trainable = False``): the trainer calls :meth:`on_fit_start` once
with the training split and then only evaluates. Labels are ignored. Their fitted parameters are
registered buffers allocated in ``__init__`` from ``spec.in_dim`` and ``spec.n_bits``, so a saved
``state_dict`` loads into a freshly built instance (safetensors, no pickle).

Privacy note: unlike the MLP heads (which hold no statistics of the training set, see
:mod:`hashers.heads`), these heads store the training mean and, for ITQ / PCA, the top principal
directions of the training embeddings. Both are aggregates over the whole split, but they are part of
what an attacker holding the head holds.

Every routine here is deterministic given its config ``seed``: random hyperplanes and rotations come
from a private :class:`torch.Generator`, never from the global RNG. PCA runs in float64 on a
covariance accumulated in chunks (memory ``O(chunk x D + D^2)``), with a fixed sign convention so
the eigen-solver's arbitrary signs never change a code.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from torch import Tensor, nn

from hashers.base import EmbeddingSet, HashingError, HashingMethod, HeadSpec
from hashers.codes import pack_bits

_CHUNK = 8192

# --------------------------------------------------------------------------------------------
# shared maths (pure functions on tensors)
# --------------------------------------------------------------------------------------------


def _signs(z: Tensor) -> Tensor:
    """``±1`` with ``0 -> -1``, matching :meth:`HashingMethod.encode` (bit = ``u > 0``)."""
    return torch.where(z > 0, 1.0, -1.0).to(z.dtype)


def column_mean(x: Tensor, *, chunk: int = _CHUNK) -> Tensor:
    """float64 mean ``[D]`` of the rows of ``x``, accumulated in chunks."""
    total = torch.zeros(x.shape[1], dtype=torch.float64)
    for i in range(0, x.shape[0], chunk):
        total += x[i : i + chunk].detach().cpu().double().sum(dim=0)
    return total / max(x.shape[0], 1)


def mean_and_covariance(x: Tensor, *, chunk: int = _CHUNK) -> tuple[Tensor, Tensor]:
    """float64 mean ``[D]`` and unbiased covariance ``[D, D]`` of the rows of ``x`` (two passes, chunked)."""
    n, d = x.shape
    if n < 2:
        raise HashingError(f"need at least 2 training embeddings to estimate a covariance, got {n}")
    mean = column_mean(x, chunk=chunk)
    cov = torch.zeros(d, d, dtype=torch.float64)
    for i in range(0, n, chunk):
        xc = x[i : i + chunk].detach().cpu().double() - mean
        cov += xc.T @ xc
    return mean, cov / (n - 1)


def fix_signs(columns: Tensor) -> Tensor:
    """Flip each column so that its entry of largest magnitude is positive (first one on ties)."""
    rows = columns.abs().argmax(dim=0)
    signs = torch.where(columns[rows, torch.arange(columns.shape[1])] < 0, -1.0, 1.0)
    return columns * signs.to(columns.dtype)


def pca(x: Tensor, n_components: int) -> tuple[Tensor, Tensor, Tensor]:
    """Principal directions of the rows of ``x`` (float64).

    Returns ``(mean [D], components [D, k], variances [k])``: orthonormal columns sorted by
    decreasing variance (the covariance's eigenvalues, unbiased ``1/(n-1)`` normalisation), each
    column signed by :func:`fix_signs`.
    """
    d = x.shape[1]
    if not 1 <= n_components <= d:
        raise HashingError(f"PCA to {n_components} components needs 1 <= components <= dim={d}")
    mean, cov = mean_and_covariance(x)
    evals, evecs = torch.linalg.eigh(cov)  # ascending
    order = torch.argsort(evals, descending=True, stable=True)[:n_components]
    return mean, fix_signs(evecs[:, order]), evals[order].clamp_min(0.0)


def random_orthogonal(k: int, generator: torch.Generator) -> Tensor:
    """A Haar-distributed random orthogonal ``[k, k]`` float64 matrix (QR of a Gaussian, signs fixed).

    Multiplying Q by the signs of R's diagonal makes the distribution uniform (Mezzadri 2007).
    """
    g = torch.randn(k, k, generator=generator, dtype=torch.float64)
    q, r = torch.linalg.qr(g)
    return q * torch.where(torch.diagonal(r) < 0, -1.0, 1.0).to(q.dtype)


def quantization_loss(v: Tensor, rotation: Tensor) -> float:
    """ITQ's objective at the best codes for ``rotation``: ``‖sign(VR) − VR‖²_F``."""
    z = v.double() @ rotation.double()
    return float(((_signs(z) - z) ** 2).sum())


def itq_rotation(
    v: Tensor, *, iterations: int, generator: torch.Generator
) -> tuple[Tensor, list[float]]:
    """ITQ's alternating minimisation of ``‖B − VR‖²_F`` over ``B ∈ {±1}`` and orthogonal ``R``.

    ``v``: PCA-projected, centred data ``[n, k]``. Starts from a seeded random rotation; each
    iteration sets ``B = sign(VR)`` then solves the orthogonal Procrustes problem
    ``R = U Wᵀ`` with ``U S Wᵀ = svd(Vᵀ B)``. Returns ``(R [k, k] float64, history)`` where
    ``history[t]`` is :func:`quantization_loss` after ``t`` iterations (``iterations + 1``
    values). Each half-step is an exact minimisation, so the history never increases (up to
    float64 rounding).
    """
    v = v.double()
    r = random_orthogonal(v.shape[1], generator)
    z = v @ r
    history = [float(((_signs(z) - z) ** 2).sum())]
    for _ in range(iterations):
        u, _, wt = torch.linalg.svd(v.T @ _signs(z))
        r = u @ wt
        z = v @ r
        history.append(float(((_signs(z) - z) ** 2).sum()))
    return r, history


def _project_chunks(x: Tensor, mean: Tensor, components: Tensor, *, chunk: int = _CHUNK) -> Tensor:
    """``(x − mean) @ components`` in float64, chunked."""
    parts = [
        (x[i : i + chunk].detach().cpu().double() - mean) @ components
        for i in range(0, x.shape[0], chunk)
    ]
    return torch.cat(parts)


# --------------------------------------------------------------------------------------------
# heads (buffers only, no parameters)
# --------------------------------------------------------------------------------------------


class HyperplaneHead(nn.Module):
    """``u = (x − mean) @ planes[0]``; buffers ``mean [D]`` and ``planes [T, D, K]`` (T tables)."""

    def __init__(self, in_dim: int, n_bits: int, tables: int) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(in_dim))
        self.register_buffer("planes", torch.zeros(tables, in_dim, n_bits))

    def forward(self, x: Tensor) -> Tensor:
        return (x - self.mean) @ self.planes[0]

    def project_tables(self, x: Tensor) -> Tensor:
        """Projections onto every table's hyperplanes: ``[T, N, K]``."""
        return (x - self.mean) @ self.planes


class PCARotationHead(nn.Module):
    """``u = ((x − mean) @ components) @ rotation``; buffers ``mean [D]``, ``components [D, K]``,
    ``rotation [K, K]``."""

    def __init__(self, in_dim: int, n_bits: int) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(in_dim))
        self.register_buffer("components", torch.zeros(in_dim, n_bits))
        self.register_buffer("rotation", torch.eye(n_bits))

    def forward(self, x: Tensor) -> Tensor:
        return ((x - self.mean) @ self.components) @ self.rotation


class _ClosedForm(HashingMethod):
    """Shared plumbing of the closed-form, unsupervised baselines (not registered itself)."""

    per_sample_loss = False  # irrelevant: nothing is trained (DP-SGD never runs on these)
    supervised = False
    trainable = False

    def compute_loss(self, u: Tensor, y: Tensor, idx: Tensor) -> dict[str, Tensor]:
        """Unused: closed-form methods are fitted in :meth:`on_fit_start` and never iterated.

        Returns a zero ``"loss"`` so the interface holds.
        """
        return {"loss": u.new_zeros(())}

    def _check_train(self, train: EmbeddingSet, min_n: int) -> None:
        if train.dim != self.spec.in_dim:
            raise HashingError(
                f"{self.name}: embeddings have dimension {train.dim} but the head expects {self.spec.in_dim}"
            )
        if len(train) < min_n:
            raise HashingError(
                f"{self.name}: {len(train)} training embeddings are too few; fitting {self.spec.n_bits} bits "
                f"needs at least {min_n}"
            )


def _check_seed(seed: int) -> None:
    if seed < 0:
        raise ValueError(f"seed: {seed} must be >= 0")


# --------------------------------------------------------------------------------------------
# LSH
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class LSHConfig:
    seed: int = 0  # seeds the hyperplanes (a private generator, not the global RNG)
    tables: int = 1  # independent hyperplane sets; encode() uses table 0
    center: bool = True  # planes through the training mean (False: through 0, as Charikar)

    def __post_init__(self) -> None:
        _check_seed(self.seed)
        if not 1 <= self.tables <= 256:
            raise ValueError(f"tables: {self.tables} must be in [1, 256]")


class LSH(_ClosedForm):
    """Random-hyperplane LSH (SimHash): bit j = ``[wⱼᵀ(x − μ) > 0]`` with Gaussian ``wⱼ``.

    Charikar, "Similarity estimation techniques from rounding algorithms", STOC 2002. For two
    vectors at angle θ, one random hyperplane separates them with probability θ/π, so each bit
    collides with probability ``1 − θ/π`` and the Hamming distance estimates the angle.

    Multi-table: with ``tables = T`` the method holds T independent K-bit hyperplane sets (table t
    drawn after tables 0..t−1 from the same generator, so table 0, and hence :meth:`encode`, does
    not depend on T). :meth:`encode` returns table 0's code (used by KNN like every other method);
    :meth:`encode_tables` returns all of them for :func:`multi_table_candidates` /
    :func:`multi_table_knn` (bucket lookups as in the classic multi-table LSH experiments).

    Deviations: the hyperplanes pass through the training mean ``μ`` rather than the origin
    (``center = True``, the default): frozen DINOv2 embeddings are far from zero-mean, and planes
    through the origin would then give nearly constant bits. ``center = False`` is Charikar's scheme.
    The method is data-independent otherwise (labels are ignored) and is not trained.
    """

    name = "lsh"
    Config = LSHConfig

    def build_head(self) -> nn.Module:
        s, cfg = self.spec, self.config
        head = HyperplaneHead(s.in_dim, s.n_bits, cfg.tables)
        gen = torch.Generator().manual_seed(cfg.seed)
        for t in range(cfg.tables):  # one draw per table: a prefix of tables is independent of T
            head.planes[t] = torch.randn(
                s.in_dim, s.n_bits, generator=gen, dtype=torch.float64
            ).float()
        return head

    def on_fit_start(self, train: EmbeddingSet) -> None:
        self._check_train(train, 1)
        if self.config.center:
            self.head.mean.copy_(column_mean(train.x))

    @torch.no_grad()
    def encode_tables(self, x: Tensor, *, batch_size: int = 8192) -> Tensor:
        """Codes of every table: ``bool [T, N, K]`` (table 0 equals :meth:`encode`)."""
        x = x.to(self.head.mean.device)
        parts = [
            self.head.project_tables(x[i : i + batch_size]) > 0
            for i in range(0, x.shape[0], batch_size)
        ]
        if not parts:
            return torch.zeros(self.config.tables, 0, self.spec.n_bits, dtype=torch.bool)
        return torch.cat(parts, dim=1)


def _as_codes(codes: np.ndarray | Tensor, what: str) -> np.ndarray:
    arr = codes.cpu().numpy() if isinstance(codes, Tensor) else np.asarray(codes)
    if arr.ndim != 3:
        raise HashingError(f"{what} must be bool [tables, N, bits], got shape {arr.shape}")
    return arr.astype(bool, copy=False)


def multi_table_candidates(
    query_codes: np.ndarray | Tensor, db_codes: np.ndarray | Tensor
) -> list[np.ndarray]:
    """Candidates of each query: database rows whose code equals the query's in at least one table.

    ``query_codes``: bool ``[T, Q, K]``; ``db_codes``: bool ``[T, N, K]``. Returns ``Q`` sorted,
    duplicate-free ``int64`` index arrays (the union over tables of the query's exact buckets).
    Buckets are found by sorting each table's database codes once and binary-searching every query
    code, so the cost is ``O(T (N + Q) log N)`` plus the size of the answer.
    """
    q, d = _as_codes(query_codes, "query_codes"), _as_codes(db_codes, "db_codes")
    if q.shape[0] != d.shape[0] or q.shape[2] != d.shape[2]:
        raise HashingError(
            f"query codes {q.shape} and database codes {d.shape} differ in tables or bits; "
            "encode both with the same LSH"
        )
    n_tables, n_q, _ = q.shape
    n_db = d.shape[1]
    tables = []
    for t in range(n_tables):
        keys = np.concatenate([pack_bits(d[t]), pack_bits(q[t])])
        _, inverse = np.unique(keys, axis=0, return_inverse=True)
        inverse = inverse.reshape(-1)
        db_ids, q_ids = inverse[:n_db], inverse[n_db:]
        order = np.argsort(db_ids, kind="stable")
        sorted_ids = db_ids[order]
        lo = np.searchsorted(sorted_ids, q_ids, side="left")
        hi = np.searchsorted(sorted_ids, q_ids, side="right")
        tables.append((order, lo, hi))
    out = []
    for i in range(n_q):
        hits = [order[lo[i] : hi[i]] for order, lo, hi in tables if hi[i] > lo[i]]
        out.append(
            np.unique(np.concatenate(hits)).astype(np.int64)
            if hits
            else np.zeros(0, dtype=np.int64)
        )
    return out


@dataclass(frozen=True)
class MultiTableResult:
    """``indices [Q, k]`` (−1 = fewer than k candidates), ``distances [Q, k]`` (inf there),
    ``n_candidates [Q]`` (candidate-set sizes: the work a re-ranking step does)."""

    indices: np.ndarray
    distances: np.ndarray
    n_candidates: np.ndarray

    def recall_at(self, true_nn: Sequence[int] | np.ndarray) -> float:
        """Fraction of queries whose true nearest neighbour is among the returned ``k``."""
        true_nn = np.asarray(true_nn).reshape(-1, 1)
        return float((self.indices == true_nn).any(axis=1).mean())


def multi_table_knn(
    query_codes: np.ndarray | Tensor,
    db_codes: np.ndarray | Tensor,
    k: int,
    *,
    rerank: Literal["hamming", "euclidean", "cosine"] = "hamming",
    queries: np.ndarray | Tensor | None = None,
    database: np.ndarray | Tensor | None = None,
) -> MultiTableResult:
    """The ``k`` nearest candidates of each query, re-ranked among :func:`multi_table_candidates`.

    ``rerank``: ``"hamming"`` ranks by the Hamming distance over the concatenation of all tables'
    codes (``T x K`` bits: a finer angle estimate than any single table, and it needs only codes);
    ``"euclidean"`` / ``"cosine"`` rank by the float distance between ``queries`` ``[Q, D]`` and
    ``database`` ``[N, D]`` (E2LSH-style: hashing only prunes, exact distances decide). Ties are
    broken by the lower database index, so the result never depends on hash-table order. A query
    with fewer than ``k`` candidates gets ``-1`` / ``inf`` padding (no fallback to a full scan).
    """
    if k < 1:
        raise HashingError(f"k={k} must be >= 1")
    q, d = _as_codes(query_codes, "query_codes"), _as_codes(db_codes, "db_codes")
    cands = multi_table_candidates(q, d)
    if rerank == "hamming":
        pass
    elif rerank in ("euclidean", "cosine"):
        if queries is None or database is None:
            raise HashingError(f"rerank={rerank!r} needs the float queries and database")
        qx = np.asarray(queries.cpu() if isinstance(queries, Tensor) else queries, dtype=np.float64)
        dx = np.asarray(
            database.cpu() if isinstance(database, Tensor) else database, dtype=np.float64
        )
        if qx.shape[0] != q.shape[1] or dx.shape[0] != d.shape[1]:
            raise HashingError("queries / database rows must match the query / database codes")
        if rerank == "cosine":
            qx = qx / np.maximum(np.linalg.norm(qx, axis=1, keepdims=True), 1e-12)
            dx = dx / np.maximum(np.linalg.norm(dx, axis=1, keepdims=True), 1e-12)
    else:
        raise HashingError(f"rerank={rerank!r}: use 'hamming', 'euclidean' or 'cosine'")
    n_q = q.shape[1]
    indices = np.full((n_q, k), -1, dtype=np.int64)
    distances = np.full((n_q, k), np.inf)
    for i, c in enumerate(cands):
        if len(c) == 0:
            continue
        if rerank == "hamming":
            dist = (d[:, c, :] != q[:, i : i + 1, :]).sum(axis=(0, 2)).astype(np.float64)
        elif rerank == "euclidean":
            dist = np.sqrt(((dx[c] - qx[i]) ** 2).sum(axis=1))
        else:
            dist = 1.0 - dx[c] @ qx[i]
        top = np.argsort(dist, kind="stable")[:k]  # c is sorted, so ties go to the lower index
        indices[i, : len(top)] = c[top]
        distances[i, : len(top)] = dist[top]
    return MultiTableResult(indices, distances, np.array([len(c) for c in cands], dtype=np.int64))


# --------------------------------------------------------------------------------------------
# ITQ and PCA + random rotation
# --------------------------------------------------------------------------------------------


class _PCAFamily(_ClosedForm):
    """Centre, project onto the top ``n_bits`` principal directions, rotate, take the sign."""

    def __init__(self, spec: HeadSpec, config: object | None = None) -> None:
        if spec.n_bits > spec.in_dim:
            raise HashingError(
                f"{self.name}: n_bits={spec.n_bits} > embedding dimension {spec.in_dim}; it projects onto the "
                f"top n_bits principal components, so use at most {spec.in_dim} bits (or LSH, which has no such limit)"
            )
        super().__init__(spec, config)

    def build_head(self) -> nn.Module:
        return PCARotationHead(self.spec.in_dim, self.spec.n_bits)

    def _fit_pca(self, train: EmbeddingSet) -> Tensor:
        """Store mean and components; return the float64 projected training data ``V [n, K]``."""
        self._check_train(train, max(self.spec.n_bits, 2))
        mean, components, _ = pca(train.x, self.spec.n_bits)
        self.head.mean.copy_(mean)
        self.head.components.copy_(components)
        return _project_chunks(train.x, mean, components)


@dataclass(frozen=True, kw_only=True)
class PCARRConfig:
    seed: int = 0  # seeds the random rotation

    def __post_init__(self) -> None:
        _check_seed(self.seed)


class PCARR(_PCAFamily):
    """PCA-RR: PCA to ``n_bits`` dimensions, a random orthogonal rotation, then the sign.

    The "PCA-RR" baseline of Gong & Lazebnik, "Iterative Quantization: A Procrustean Approach to
    Learning Binary Codes", CVPR 2011 (§3, compared against ITQ). Plain PCA codes put most of the
    variance in the first bits; a random rotation spreads it evenly over all bits. The rotation is
    data-independent, drawn from ``seed`` at construction; each bit is balanced on data symmetric
    about its mean.

    Deviations: none in the maths; the embedding is a frozen DINOv2 feature instead of GIST, labels
    are ignored, the sign of each principal direction is fixed (largest entry positive) so codes do
    not depend on the eigen-solver, and ``n_bits`` must not exceed the embedding dimension.
    """

    name = "pca"
    Config = PCARRConfig

    def build_head(self) -> nn.Module:
        head = PCARotationHead(self.spec.in_dim, self.spec.n_bits)
        head.rotation.copy_(
            random_orthogonal(self.spec.n_bits, torch.Generator().manual_seed(self.config.seed))
        )
        return head

    def on_fit_start(self, train: EmbeddingSet) -> None:
        self._fit_pca(train)


@dataclass(frozen=True, kw_only=True)
class ITQConfig:
    iterations: int = 50  # alternating B / R updates (the paper uses 50)
    seed: int = 0  # seeds the initial random rotation

    def __post_init__(self) -> None:
        _check_seed(self.seed)
        if self.iterations < 0:
            raise ValueError(f"iterations: {self.iterations} must be >= 0")


class ITQ(_PCAFamily):
    """ITQ: Iterative Quantization.

    Gong & Lazebnik, "Iterative Quantization: A Procrustean Approach to Learning Binary Codes",
    CVPR 2011. Centre the data, project onto the top ``n_bits`` principal directions (``V = XW``),
    then minimise the quantisation loss ``‖B − VR‖²_F`` by alternating ``B = sign(VR)`` and the
    orthogonal Procrustes solution ``R = U Wᵀ`` of ``svd(Vᵀ B) = U S Wᵀ``, from a seeded random
    orthogonal ``R`` (:func:`itq_rotation`). After fitting, ``loss_history`` holds the loss per
    iteration (not saved with the state).

    Deviations: the unsupervised variant only (no CCA), on frozen DINOv2 embeddings instead of GIST;
    labels are ignored; PCA runs in float64 with a fixed sign per direction (largest entry
    positive), and ``sign(0)`` is ``−1`` to match :meth:`encode` (``u > 0``). ``n_bits`` must not
    exceed the embedding dimension, nor the number of training embeddings.
    """

    name = "itq"
    Config = ITQConfig

    def __init__(self, spec: HeadSpec, config: ITQConfig | None = None) -> None:
        super().__init__(spec, config)
        self.loss_history: list[float] = []

    def on_fit_start(self, train: EmbeddingSet) -> None:
        v = self._fit_pca(train)
        gen = torch.Generator().manual_seed(self.config.seed)
        rotation, self.loss_history = itq_rotation(
            v, iterations=self.config.iterations, generator=gen
        )
        self.head.rotation.copy_(rotation)
