"""Unsupervised floors: LSH (random hyperplanes, multi-table), ITQ and PCA + random rotation.

These are closed-form methods (``trainable = False``): the trainer calls :meth:`on_fit_start` once
with the training split and then only evaluates. Labels are ignored. Their fitted parameters are
registered buffers allocated in ``__init__`` from ``spec.in_dim`` and ``spec.n_bits``, so a saved
``state_dict`` loads into a freshly built instance (safetensors, no pickle).

Privacy note: these heads store the training mean and, for ITQ / PCA, the top principal
directions of the training embeddings (as the MLP heads with ``train.standardize`` on, the
default, store the training split's per-feature mean and scale: :mod:`hashers.heads`). Both are aggregates over the whole split, but they are part of
what an attacker holding the head holds.

Every routine here is deterministic given its config ``seed``: random hyperplanes and rotations come
from a private :class:`torch.Generator`, never from the global RNG. PCA runs in float64 on a
covariance accumulated in chunks (memory ``O(chunk x D + D^2)``), with a fixed sign convention so
the eigen-solver's arbitrary signs never change a code.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from hashers.base import EmbeddingSet, HashingError, HashingMethod, HeadSpec
from retrieval.codes import to_signs

_CHUNK = 8192

# --------------------------------------------------------------------------------------------
# shared maths (pure functions on tensors)
# --------------------------------------------------------------------------------------------


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
    return float(((to_signs(z) - z) ** 2).sum())


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
    history = [float(((to_signs(z) - z) ** 2).sum())]
    for _ in range(iterations):
        u, _, wt = torch.linalg.svd(v.T @ to_signs(z))
        r = u @ wt
        z = v @ r
        history.append(float(((to_signs(z) - z) ** 2).sum()))
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

    def _check_train(self, train: EmbeddingSet, min_n: int, why: str = "") -> None:
        if train.dim != self.spec.in_dim:
            raise HashingError(
                f"{self.name}: embeddings have dimension {train.dim} but the head expects {self.spec.in_dim}"
            )
        if len(train) < min_n:
            raise HashingError(
                f"{self.name}: {len(train)} training embeddings are too few; fitting {self.spec.n_bits} bits "
                f"needs at least {min_n}{why}"
            )


SEED_LIMIT = 2**63  # torch / numpy generators take the seed as a signed 64-bit integer


def _check_seed(seed: int) -> None:
    if not 0 <= seed < SEED_LIMIT:
        raise ValueError(
            f"seed: {seed} is out of range; use an integer from 0 to 2**63 - 1 = {SEED_LIMIT - 1}"
        )


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
    :meth:`encode_tables` returns all of them for :func:`retrieval.lsh.multi_table_candidates` /
    :func:`retrieval.lsh.multi_table_knn` (bucket lookups as in the classic multi-table LSH experiments).

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
        """Codes of every table: ``bool [T, N, K]`` (table 0 equals :meth:`encode`).

        ``x`` must be ``[N, in_dim]`` and ``batch_size >= 1``, as for :meth:`encode`
        (:class:`HashingError` otherwise: a negative batch size gave ``[T, 0, K]`` for N rows, and
        ``[B, N, D]`` broadcast against the tables into codes of another shape)."""
        self.check_encode_input(x, batch_size, what="encode_tables")
        x = x.to(self.head.mean.device)
        parts = [
            self.head.project_tables(x[i : i + batch_size]) > 0
            for i in range(0, x.shape[0], batch_size)
        ]
        if not parts:
            return torch.zeros(self.config.tables, 0, self.spec.n_bits, dtype=torch.bool)
        return torch.cat(parts, dim=1)


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
        # n centred rows span at most n - 1 directions: with n <= n_bits the last components have
        # zero training variance, and eigh returns an arbitrary null-space direction for them
        self._check_train(
            train,
            self.spec.n_bits + 1,
            " (n rows, once centred, span at most n - 1 principal directions); give it more "
            "training embeddings or fewer bits",
        )
        mean, components, variances = pca(train.x, self.spec.n_bits)
        self._check_rank(train, variances)
        self.head.mean.copy_(mean)
        self.head.components.copy_(components)
        return _project_chunks(train.x, mean, components)

    def _check_rank(self, train: EmbeddingSet, variances: Tensor) -> None:
        """Refuse a component whose training variance is float32 rounding (or 0): rows that are
        copies of one another, or that lie in fewer than ``n_bits`` directions once centred, leave
        the last components an arbitrary direction of their null space (eigh's choice), which
        the training rows do not vary along but new rows do: a bit as large as a real one there.
        The floor is the variance float32 rounding of the data can make, ``(eps32 · max|x|)²``,
        plus the eigen-solver's error ``D · eps64 · λ₁``."""
        n, k = len(train), self.spec.n_bits
        largest = max(
            (float(train.x[i : i + _CHUNK].abs().max()) for i in range(0, n, _CHUNK)), default=0.0
        )
        floor = (torch.finfo(torch.float32).eps * largest) ** 2 + train.dim * torch.finfo(
            torch.float64
        ).eps * float(variances[0])
        rank = int((variances > floor).sum())
        if rank < k:
            fix = f"use at most {rank} bits (or LSH)" if rank else "use LSH"
            raise HashingError(
                f"{self.name}: the {n} training embeddings, once centred, vary along only {rank} "
                f"direction(s) (principal variance {float(variances[rank]):.3g} at component "
                f"{rank + 1} of {k}, within float32 rounding: {floor:.3g}); rows are copies of "
                f"one another or lie in a subspace, and fitting {k} bits needs {k} directions "
                "(a bit along a direction the training rows do not vary in is arbitrary on new "
                f"rows); {fix}, or give it more varied training embeddings"
            )


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
    not depend on the eigen-solver, and ``n_bits`` must not exceed the embedding dimension and must
    be below the number of training embeddings (``n`` centred rows span ``n − 1`` directions), nor
    the number of directions the training rows vary along beyond float32 rounding.
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
    exceed the embedding dimension and must be below the number of training embeddings (``n``
    centred rows span ``n − 1`` directions; a further one would have zero training variance), nor
    the number of directions the training rows vary along beyond float32 rounding.
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
