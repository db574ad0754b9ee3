"""Hashing heads over frozen embeddings.

LayerNorm only, no BatchNorm: BatchNorm mixes samples inside a batch, which breaks Opacus' per-sample
gradients (DP-SGD) and makes a sample's code depend on its batch-mates. Optional per-feature input
standardisation (:class:`InputStandardizer`) uses statistics fixed before training, never batch
statistics.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn


class InputStandardizer(nn.Module):
    """``(x - center) * inv_scale`` per feature, with fixed (non-trained) buffers.

    Identity until :meth:`fit` sets the buffers from a reference set (the trainer uses the training
    split, DP-SGD the val split: see ``HashingMethod.fit_input_statistics``). A feature whose
    standard deviation is below ``1e-3`` of the mean feature's is dropped (``inv_scale = 0``): a
    (nearly) constant column carries nothing the head could learn from on the reference set, and
    any scale given to it would let its values on new records, which may vary, dominate the
    input. With no spread at all (every column constant, or one reference row) the features are
    only centred (``inv_scale = 1``).

    Why: per-sample LayerNorm cannot remove an offset shared by every embedding (a common direction
    in feature space), and on features where that offset dominates the spread, the first linear
    layer sees mostly the offset. The statistics are aggregates of the reference set and ship with
    the head.
    """

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.register_buffer("center", torch.zeros(dim))
        self.register_buffer("inv_scale", torch.ones(dim))

    @torch.no_grad()
    def fit(self, x: Tensor) -> None:
        x = x.double()
        std = x.std(dim=0, unbiased=False)
        # the mean, not the median: > 0 unless every column is constant
        floor = float(std.mean()) * 1e-3
        if floor > 0:  # columns below the floor are dropped (class docstring)
            inv_scale = torch.where(std < floor, 0.0, 1.0 / std.clamp_min(floor))
        else:
            inv_scale = torch.ones_like(std)
        self.center.copy_(x.mean(dim=0).to(self.center))
        self.inv_scale.copy_(inv_scale.to(self.inv_scale))

    def forward(self, x: Tensor) -> Tensor:
        return (x - self.center) * self.inv_scale


class MLPHead(nn.Module):
    """``[InputStandardizer] -> LayerNorm(in) -> [Linear -> GELU -> Dropout] * len(hidden) -> Linear(out)``.

    The input LayerNorm rescales each embedding on its own, which makes one learning rate fit every
    backbone. With ``standardize`` a per-feature :class:`InputStandardizer` comes first (its
    statistics are set once before training and stored in the head).
    """

    def __init__(
        self,
        *,
        in_dim: int,
        out_dim: int,
        hidden_dims: Sequence[int] = (512,),
        dropout: float = 0.0,
        standardize: bool = False,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = [InputStandardizer(in_dim)] if standardize else []
        layers.append(nn.LayerNorm(in_dim))
        prev = in_dim
        for width in hidden_dims:
            layers += [nn.Linear(prev, width), nn.GELU(), nn.Dropout(dropout)]
            prev = width
        layers.append(nn.Linear(prev, out_dim))
        self.net = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)

    def _skip(self) -> int:
        return 1 if isinstance(self.net[0], InputStandardizer) else 0

    def standardized(self, x: Tensor) -> Tensor:
        """``x`` as the input LayerNorm reads it: after the standardiser (``x`` without one)."""
        return self.net[0](x) if self._skip() else x

    def from_standardized(self, z: Tensor) -> Tensor:
        """The head on an input that is already in :meth:`standardized` space (for synthetic
        inputs made there); ``forward(x) == from_standardized(standardized(x))``."""
        return self.net[self._skip() :](z)


class DivideEncodeHead(nn.Module):
    """DNNH's divide-and-encode head (Lai et al., CVPR 2015), over an embedding.

    A shared trunk (:class:`MLPHead` to ``n_bits * slice_dim`` features, then GELU) yields one
    feature vector that is split into ``n_bits`` equal slices; slice k is mapped to unit k by its
    own linear map and a sigmoid, so each bit sees only its slice (the paper's argument: less
    redundancy between bits). The ``n_bits`` maps ``Linear(slice_dim, 1)`` are stored as the rows
    of ``slice_maps`` (weight ``[n_bits, slice_dim]``, bias ``[n_bits]``, initialised with fan-in
    ``slice_dim``) and applied row-wise to their slice, never as one dense layer (that is ~20x
    cheaper on CPU than a grouped 1x1 convolution). Output in ``(0, 1)``.
    """

    def __init__(
        self,
        *,
        in_dim: int,
        n_bits: int,
        slice_dim: int = 16,
        hidden_dims: Sequence[int] = (512,),
        dropout: float = 0.0,
        standardize: bool = False,
    ) -> None:
        super().__init__()
        self.n_bits, self.slice_dim = n_bits, slice_dim
        self.trunk = MLPHead(
            in_dim=in_dim,
            out_dim=n_bits * slice_dim,
            hidden_dims=hidden_dims,
            dropout=dropout,
            standardize=standardize,
        )
        self.act = nn.GELU()
        self.slice_maps = nn.Linear(slice_dim, n_bits)  # row k = the map of slice k

    def encode_slices(self, features: Tensor) -> Tensor:
        """``[B, n_bits * slice_dim]`` trunk features -> ``[B, n_bits]`` pre-sigmoid units."""
        slices = features.view(-1, self.n_bits, self.slice_dim)
        return (slices * self.slice_maps.weight).sum(dim=-1) + self.slice_maps.bias

    def forward(self, x: Tensor) -> Tensor:
        return self.encode_slices(self.act(self.trunk(x))).sigmoid()  # [B, n_bits]
