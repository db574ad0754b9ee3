"""The one interface every hashing method implements.

A :class:`HashingMethod` is a ``torch.nn.Module`` that owns both its head and its loss (so learned
class centers, memory banks or GAN parts are parameters or buffers that round-trip through the saved
state). Subclasses implement a single hook, :meth:`HashingMethod.compute_loss`, and may override the
optional hooks :meth:`on_fit_start`, :meth:`on_epoch_start` and :meth:`training_step` where their
paper needs it. The single training loop lives in :mod:`hashers.trainer`.
"""

from __future__ import annotations

import abc
import math
import numbers
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from hashers.errors import HashingError
from hashers.heads import InputStandardizer, MLPHead

#: torch's seeds are unsigned 64-bit (a negative one wraps to 2**64 + s: no second name for it)
SEED_LIMIT = 2**64


def is_integer(value: object) -> bool:
    """An integer (numpy's included), never a bool or a float."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def check_config_types(
    config: object,
    *,
    finite: Sequence[str] = (),
    integers: Sequence[str] = (),
    flags: Sequence[str] = (),
) -> None:
    """``ValueError("field: value must be ...")`` (the form ``parse_dataclass`` turns into a
    ``ParamsError``) for a method config's field of the wrong type: ``finite`` must be finite
    reals, ``integers`` integers, ``flags`` bools. Library use: params.yaml's parser refuses these
    already; built in code, NaN or inf gave a non-finite loss blamed on ``train.lr``, 2.5 a
    TypeError inside torch, and ``"false"`` was read as True."""
    for field in finite:
        value = getattr(config, field)
        if (
            isinstance(value, bool)
            or not isinstance(value, numbers.Real)
            or not math.isfinite(value)
        ):
            raise ValueError(f"{field}: {value!r} must be a finite number")
    for field in integers:
        if not is_integer(getattr(config, field)):
            raise ValueError(f"{field}: {getattr(config, field)!r} must be an integer")
    for field in flags:
        if not isinstance(getattr(config, field), bool):
            raise ValueError(f"{field}: {getattr(config, field)!r} must be True or False")


@dataclass(frozen=True, kw_only=True)
class HeadSpec:
    """Shape of a hashing head: input embedding dim, code length and the label space."""

    in_dim: int
    n_bits: int
    n_classes: int
    hidden_dims: tuple[int, ...] = (512,)
    dropout: float = 0.1
    multilabel: bool = False
    # per-feature input standardisation, statistics fixed before training (heads.InputStandardizer)
    standardize: bool = False

    def __post_init__(self) -> None:
        # types first: hidden_dims=512 or n_bits=16.0 failed inside torch ("'int' object is not
        # iterable", "empty(): argument 'size' ..."), n_classes=3.5 and standardize="false" passed
        for key in ("in_dim", "n_bits", "n_classes"):
            value = getattr(self, key)
            if not is_integer(value):
                raise HashingError(f"{key}={value!r} must be an integer")
            object.__setattr__(self, key, int(value))
        if isinstance(self.hidden_dims, (str, bytes)) or not isinstance(self.hidden_dims, Sequence):
            raise HashingError(
                f"hidden_dims={self.hidden_dims!r} must be a sequence of hidden-layer widths, "
                "e.g. (512,), or () for none"
            )
        for i, width in enumerate(self.hidden_dims):
            if not is_integer(width):
                raise HashingError(
                    f"hidden_dims[{i}]={width!r}: every hidden width must be an integer"
                )
        object.__setattr__(self, "hidden_dims", tuple(int(w) for w in self.hidden_dims))
        if isinstance(self.dropout, bool) or not isinstance(self.dropout, numbers.Real):
            raise HashingError(f"dropout={self.dropout!r} must be a number in [0, 1)")
        for key in ("multilabel", "standardize"):
            if not isinstance(getattr(self, key), bool):
                raise HashingError(f"{key}={getattr(self, key)!r} must be True or False")
        if self.in_dim < 1:
            raise HashingError(f"in_dim={self.in_dim}: the embedding dimension must be >= 1")
        if not 1 <= self.n_bits <= 4096:
            raise HashingError(
                f"n_bits={self.n_bits}: the library takes 1 to 4096 bits (the pipeline 8 to 1024)"
            )
        if self.n_classes < 1:
            raise HashingError(f"n_classes={self.n_classes} must be >= 1")
        # a zero-width layer gave every record one code (the bias), dropout 1 zeroed every hidden
        # unit in training: both trained without an error (params.yaml's train block refuses them)
        for i, width in enumerate(self.hidden_dims):
            if not width >= 1:
                raise HashingError(f"hidden_dims[{i}]={width}: every hidden width must be >= 1")
        if not 0.0 <= self.dropout < 1.0:
            raise HashingError(f"dropout={self.dropout} must be in [0, 1)")


@dataclass(frozen=True)
class EmbeddingSet:
    """Embeddings ``x`` float32 ``[N, D]`` with multi-hot float labels ``y`` ``[N, C]``.

    Refused at construction (:class:`HashingError`): other shapes, embeddings of another dtype
    than float32, non-finite embeddings, and labels other than 0 and 1 (NaN, -1, 2, ...); bool,
    integer and float64 0/1 labels pass and are stored as float32 (exact).
    """

    x: Tensor
    y: Tensor

    def __post_init__(self) -> None:
        if self.x.ndim != 2:
            raise HashingError(f"embeddings must be [N, D], got shape {tuple(self.x.shape)}")
        if self.y.ndim != 2 or self.y.shape[0] != self.x.shape[0]:
            raise HashingError(
                f"labels must be multi-hot [N, C] with N={self.x.shape[0]}, got {tuple(self.y.shape)}"
            )
        # float64 (torch.from_numpy of a numpy default), half or integer embeddings failed inside
        # the first layer ("mixed dtype (CPU): all inputs must share same datatype")
        if self.x.dtype != torch.float32:
            raise HashingError(
                f"embeddings must be float32, got {self.x.dtype}; convert them with x.float() "
                "(or build the set with EmbeddingSet.from_numpy)"
            )
        if not torch.isfinite(self.x).all():
            n_bad = int((~torch.isfinite(self.x)).any(dim=1).sum())
            raise HashingError(f"{n_bad} embeddings hold NaN or inf; clean or re-extract them")
        # once per set (never per batch): NaN fails both comparisons, so it is caught here too
        bad = (self.y != 0) & (self.y != 1)
        if bool(bad.any()):
            row, col = (int(i) for i in torch.nonzero(bad)[0])
            raise HashingError(
                f"labels must be multi-hot 0/1, but y[{row}, {col}] = {self.y[row, col].item()} "
                f"(row {row}, class column {col}; {int(bad.sum())} such entries); encode each "
                "label as 1 (present) or 0 (absent), and fix or drop rows whose label is missing"
            )
        # the losses compute in float32: bool or integer labels (documented as passing) failed
        # inside most methods ("addmm_impl_cpu_" not implemented for 'Bool', CSQ, DSH-GAN)
        if self.y.dtype != torch.float32:
            object.__setattr__(self, "y", self.y.to(torch.float32))

    @classmethod
    def from_numpy(cls, x: Any, y_multihot: Any) -> EmbeddingSet:
        return cls(
            torch.as_tensor(x, dtype=torch.float32),
            torch.as_tensor(y_multihot, dtype=torch.float32),
        )

    def __len__(self) -> int:
        return int(self.x.shape[0])

    @property
    def dim(self) -> int:
        return int(self.x.shape[1])

    @property
    def n_classes(self) -> int:
        return int(self.y.shape[1])

    def subset(self, idx: Tensor) -> EmbeddingSet:
        return EmbeddingSet(self.x[idx], self.y[idx])


@dataclass(frozen=True)
class Batch:
    """One training mini-batch: embeddings, multi-hot labels and their row indices in train."""

    x: Tensor
    y: Tensor
    idx: Tensor


class HashingMethod(nn.Module, abc.ABC):
    """Base class of every hashing method (head + loss in one module).

    Class attributes
        ``name``: registry key, equal to its ``params.yaml`` block name.
        ``Config``: frozen keyword-only dataclass of hyper-parameters, with the paper's defaults.
        ``per_sample_loss``: True only when sample i's loss depends on sample i and the parameters
        alone (gates DP-SGD: Opacus' per-sample clipping bounds one record's influence only then).
        ``supervised``: whether labels are used. ``trainable``: False for closed-form methods fitted in
        :meth:`on_fit_start` (LSH, ITQ, PCA), which the trainer then does not iterate.
    """

    name: ClassVar[str]
    Config: ClassVar[type]
    per_sample_loss: ClassVar[bool] = False
    supervised: ClassVar[bool] = True
    trainable: ClassVar[bool] = True
    #: the neighbourhood term ``(u, x) -> scalar`` and its weight (:meth:`with_geometry`); the
    #: trainer installs them for one fit when ``FitConfig.geometry > 0`` (None = the paper's loss)
    geometry_term: Callable[[Tensor, Tensor], Tensor] | None = None
    geometry_weight: float = 0.0

    def __init__(self, spec: HeadSpec, config: Any | None = None) -> None:
        super().__init__()
        self.spec = spec
        self.config = self.Config() if config is None else config
        if not isinstance(self.config, self.Config):
            raise HashingError(
                f"{self.name}: config must be a {self.Config.__name__}, got {type(self.config).__name__}"
            )
        self.head = self.build_head()

    # ---- structure ------------------------------------------------------------------------
    def build_head(self) -> nn.Module:
        """The network mapping an embedding to ``n_bits`` relaxed code values (an MLP by default)."""
        s = self.spec
        return MLPHead(
            in_dim=s.in_dim,
            out_dim=s.n_bits,
            hidden_dims=s.hidden_dims,
            dropout=s.dropout,
            standardize=s.standardize,
        )

    def forward(self, x: Tensor) -> Tensor:
        """Relaxed codes ``u`` of shape ``[B, n_bits]``."""
        return self.head(x)

    def check_encode_input(self, x: Tensor, batch_size: int, *, what: str) -> None:
        """Refuse a ``batch_size`` below 1 (no batch ran: zero codes) and embeddings that are not
        ``[N, in_dim]`` (a ``[B, N, D]`` input gave codes of another shape)."""
        if not is_integer(batch_size) or batch_size < 1:
            raise HashingError(
                f"{self.name}: {what} batch_size={batch_size!r} must be an integer >= 1"
            )
        if x.ndim != 2 or x.shape[1] != self.spec.in_dim:
            raise HashingError(
                f"{self.name}: {what} takes embeddings [N, {self.spec.in_dim}] (the head's "
                f"in_dim), got shape {tuple(x.shape)}"
            )

    @torch.no_grad()
    def encode(self, x: Tensor, *, batch_size: int = 8192) -> Tensor:
        """Binary codes ``bool [N, n_bits]`` (``u > 0``), computed in eval mode.

        ``x`` must be ``[N, in_dim]`` and ``batch_size >= 1`` (:class:`HashingError` otherwise: a
        negative batch size gave zero codes, a ``[B, N, D]`` input codes of another shape)."""
        self.check_encode_input(x, batch_size, what="encode")
        was_training = self.training
        self.eval()
        try:
            parts = [
                self.forward(x[i : i + batch_size]) > 0 for i in range(0, x.shape[0], batch_size)
            ]
        finally:
            self.train(was_training)
        return torch.cat(parts) if parts else torch.zeros(0, self.spec.n_bits, dtype=torch.bool)

    # ---- the one abstract hook -----------------------------------------------------------
    @abc.abstractmethod
    def compute_loss(self, u: Tensor, y: Tensor, idx: Tensor) -> dict[str, Tensor]:
        """Loss terms for a batch; must hold ``"loss"`` (the total that is back-propagated).

        ``u``: relaxed codes ``[B, K]``; ``y``: multi-hot float labels ``[B, C]``; ``idx``: row
        indices of the batch in the training set (for memory banks and target codes).
        """

    def fit_input_statistics(self, x: Tensor) -> bool:
        """Set every :class:`~hashers.heads.InputStandardizer` of the head from ``x`` (called by
        the trainer once, before :meth:`on_fit_start`); False when the head has none."""
        found = [m for m in self.modules() if isinstance(m, InputStandardizer)]
        for m in found:
            m.fit(x)
        return bool(found)

    # ---- optional hooks ------------------------------------------------------------------
    def on_fit_start(self, train: EmbeddingSet) -> None:
        """Called once before training with the full training set (target codes, centers, ...)."""

    def on_epoch_start(self, epoch: int, n_epochs: int) -> None:
        """Called at the start of every epoch (continuation schedules, discrete steps)."""

    def batch_loss(self, batch: Batch) -> dict[str, Tensor]:
        """Loss terms of a training batch; override when the loss needs more than ``u``
        (e.g. SAEH reconstructs ``batch.x``), and pass the result through :meth:`with_geometry`."""
        u = self(batch.x)
        return self.with_geometry(self.compute_loss(u, batch.y, batch.idx), u, batch.x)

    def with_geometry(self, terms: dict[str, Tensor], u: Tensor, x: Tensor) -> dict[str, Tensor]:
        """``terms`` plus ``geometry_weight × geometry_term(u, x)``, added to ``"loss"`` and
        reported as ``"geometry"``; unchanged when no term is installed. The trainer installs
        :func:`~hashers.functional.neighbourhood_loss` (the codes' in-batch neighbourhoods against
        the embeddings' Euclidean ones, the geometry the float KNN votes in), which couples the
        rows of a batch (not a per-sample loss)."""
        if self.geometry_term is None or self.geometry_weight <= 0.0:
            return terms
        g = self.geometry_term(u, x)
        return {**terms, "loss": terms["loss"] + self.geometry_weight * g, "geometry": g}

    def training_step(self, batch: Batch, optimizer: torch.optim.Optimizer) -> dict[str, Tensor]:
        """One optimisation step; override only for alternating schemes (e.g. GAN updates)."""
        terms = self.batch_loss(batch)
        optimizer.zero_grad(set_to_none=True)
        terms["loss"].backward()
        optimizer.step()
        return {k: v.detach() for k, v in terms.items()}
