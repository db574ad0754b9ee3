"""Hashing heads over frozen embeddings.

LayerNorm only, no BatchNorm: BatchNorm mixes samples inside a batch, which breaks Opacus' per-sample
gradients (DP-SGD) and makes a sample's code depend on its batch-mates.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn


class MLPHead(nn.Module):
    """``LayerNorm(in) -> [Linear -> GELU -> Dropout] * len(hidden) -> Linear(out)``.

    The input LayerNorm rescales each embedding on its own (no statistics of the training set are
    stored in the head, so the head leaks none), which makes one learning rate fit every backbone.
    """

    def __init__(
        self, *, in_dim: int, out_dim: int, hidden_dims: Sequence[int] = (512,), dropout: float = 0.0
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.LayerNorm(in_dim)]
        prev = in_dim
        for width in hidden_dims:
            layers += [nn.Linear(prev, width), nn.GELU(), nn.Dropout(dropout)]
            prev = width
        layers.append(nn.Linear(prev, out_dim))
        self.net = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)
