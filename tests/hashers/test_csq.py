"""CSQ: hash centers at every code length 12-1024 and the loss against hand-computed values."""

from __future__ import annotations

import math

import pytest
import torch

from hashers import registry
from hashers.base import HeadSpec
from hashers.csq import hash_centers, min_pairwise_distance, sylvester_hadamard


@pytest.mark.parametrize("bits", [12, 13, 16, 24, 32, 36, 48, 64, 100, 128, 256, 512, 1000, 1024])
@pytest.mark.parametrize("n_classes", [2, 9, 100])
def test_centers_exist_and_separate_at_every_length(bits: int, n_classes: int) -> None:
    c = hash_centers(n_classes, bits, draws=8, generator=torch.Generator().manual_seed(0))
    assert c.shape == (n_classes, bits)
    assert set(c.unique().tolist()) <= {-1.0, 1.0}
    if n_classes <= 2**bits:
        assert len(torch.unique(c, dim=0)) == n_classes  # distinct centers
    if n_classes <= 9:  # few classes: the K/4 separation of the paper holds
        assert min_pairwise_distance(c) > bits / 4


def test_hadamard_centers_are_half_the_length_apart() -> None:
    h = sylvester_hadamard(16)
    assert torch.equal(h @ h.T, 16 * torch.eye(16))  # orthogonal rows
    c = hash_centers(20, 16)  # C <= 2K and K a power of two: [H; -H]
    d = (16 - c @ c.T) / 2
    # row i and its negation i+16 are 16 apart, all others exactly 8
    assert d[0, 16] == 16 and d[0, 1] == 8 and min_pairwise_distance(c) == 8


@pytest.mark.parametrize("bits", [12, 24, 48, 96, 1024])
def test_csq_builds_and_trains_one_step_at_any_length(bits: int) -> None:
    method = registry.build("csq", HeadSpec(in_dim=8, n_bits=bits, n_classes=5, hidden_dims=(16,)))
    x, y = torch.randn(6, 8), torch.eye(5)[torch.tensor([0, 1, 2, 3, 4, 0])]
    terms = method.compute_loss(method(x), y, torch.arange(6))
    assert method.centers.shape == (5, bits) and min_pairwise_distance(method.centers) > bits / 4
    assert torch.isfinite(terms["loss"])
    terms["loss"].backward()
    assert any(float(p.grad.abs().sum()) > 0 for p in method.head.parameters())  # it can train


def test_loss_matches_hand_computed_bce_and_multilabel_centroid() -> None:
    method = registry.build("csq", HeadSpec(in_dim=4, n_bits=4, n_classes=2, hidden_dims=(8,)))
    method.centers.copy_(torch.tensor([[1.0, 1, -1, -1], [1.0, -1, 1, -1]]))
    method.tie_breaker.copy_(torch.tensor([-1.0, -1, -1, -1]))
    # both labels: sum = [2, 0, 0, -2] -> sign with ties from the tie breaker -> [1, -1, -1, -1]
    assert torch.equal(
        method.targets(torch.tensor([[1.0, 1.0]])), torch.tensor([[1.0, -1, -1, -1]])
    )
    u = torch.tensor([[0.5, -0.2, 0.0, 1.0]])
    h = torch.tanh(u)[0]
    t = torch.tensor([1.0, 1, 0, 0])  # class 0's center on {0, 1}
    bce = (
        -sum(
            t[k] * math.log((1 + h[k]) / 2) + (1 - t[k]) * math.log((1 - h[k]) / 2)
            for k in range(4)
        )
        / 4
    )
    q = sum(math.log(math.cosh(abs(float(h[k])) - 1)) for k in range(4)) / 4
    terms = method.compute_loss(u, torch.tensor([[1.0, 0.0]]), torch.tensor([0]))
    assert float(terms["center"]) == pytest.approx(float(bce), rel=1e-5)
    assert float(terms["quantization"]) == pytest.approx(q, rel=1e-5)
    assert float(terms["loss"]) == pytest.approx(float(bce) + 1e-4 * q, rel=1e-5)
