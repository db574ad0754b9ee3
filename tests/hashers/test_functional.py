"""Golden values for the shared loss maths (hand-computed) and numerical stability."""

from __future__ import annotations

import math

import pytest
import torch

from hashers import functional


def test_label_similarity_multi_hot() -> None:
    y = torch.tensor([[1.0, 0, 0], [1, 1, 0], [0, 0, 1]])
    S = functional.label_similarity(y)
    assert S.tolist() == [[1, 1, 0], [1, 1, 0], [0, 0, 1]]


def test_label_similarity_unlabelled_rows_are_one_group() -> None:
    # rows 1 and 2 hold no label (ChestMNIST's "no finding"): the same, empty, label set, so they
    # are similar to each other and to themselves, and dissimilar to every labelled row
    y = torch.tensor([[1.0, 0], [0, 0], [0, 0], [0, 1]])
    S = functional.label_similarity(y)
    assert S.tolist() == [[1, 0, 0, 0], [0, 1, 1, 0], [0, 1, 1, 0], [0, 0, 0, 1]]
    assert torch.equal(S.diagonal(), torch.ones(4))  # S_ii = 1 for every row
    # two sides (a batch against memory-bank rows): the same rule
    cross = functional.label_similarity(y[:2], torch.tensor([[0.0, 0], [1, 1]]))
    assert cross.tolist() == [[0, 1], [1, 0]]


def test_pairwise_likelihood_golden() -> None:
    # theta = [[0, 2], [2, 0]], S = [[1, 0], [0, 1]]
    theta = torch.tensor([[0.0, 2.0], [2.0, 0.0]])
    S = torch.eye(2)
    # per pair: softplus(theta) - S*theta -> log2, log(1+e^2), log(1+e^2), log2
    expected = (2 * math.log(2) + 2 * math.log1p(math.exp(2))) / 4
    assert math.isclose(
        float(functional.pairwise_likelihood_loss(theta, S)), expected, rel_tol=1e-6
    )


def test_pairwise_likelihood_weighted_golden() -> None:
    theta = torch.tensor([[0.0, 2.0], [2.0, 0.0]])
    S = torch.eye(2)
    w = torch.tensor([[1.0, 3.0], [3.0, 1.0]])
    expected = (2 * math.log(2) + 6 * math.log1p(math.exp(2))) / 8
    assert math.isclose(
        float(functional.pairwise_likelihood_loss(theta, S, w)), expected, rel_tol=1e-6
    )


def test_likelihood_is_stable_for_huge_logits() -> None:
    theta = torch.tensor([[1e4, -1e4]], requires_grad=True)
    S = torch.tensor([[1.0, 0.0]])
    loss = functional.pairwise_likelihood_loss(theta, S)
    loss.backward()
    assert torch.isfinite(loss) and float(loss.detach()) < 1e-6
    assert torch.isfinite(theta.grad).all()


def test_inner_product_logits_golden() -> None:
    u = torch.tensor([[1.0, -1.0], [1.0, 1.0]])
    assert functional.inner_product_logits(u).tolist() == [[1.0, 0.0], [0.0, 1.0]]


def test_balanced_pair_weights_give_equal_mass() -> None:
    S = torch.tensor([[1.0, 1, 1, 0], [1, 1, 1, 0], [1, 1, 1, 0], [0, 0, 0, 1]])
    w = functional.balanced_pair_weights(S)
    assert math.isclose(float(w[S > 0].sum()), float(w[S == 0].sum()), rel_tol=1e-6)
    assert math.isclose(float(w.mean()), 1.0, rel_tol=1e-6)


def test_quantization_terms_golden() -> None:
    u = torch.tensor([[0.5, -2.0]])
    # (0.5-1)^2 + (-2+1)^2 = 0.25 + 1 -> mean 0.625
    assert math.isclose(float(functional.quantization_l2(u)), 0.625, rel_tol=1e-6)
    # log cosh(|u|-1): log cosh(-0.5) + log cosh(1)
    expected = (math.log(math.cosh(0.5)) + math.log(math.cosh(1.0))) / 2
    assert math.isclose(float(functional.quantization_logcosh(u)), expected, rel_tol=1e-6)
    big = torch.tensor([[1e4]])
    assert torch.isfinite(functional.quantization_logcosh(big))


def test_neighbour_distribution_meets_the_perplexity_and_prefers_near_rows() -> None:
    x = torch.tensor([[0.0], [1.0], [3.0], [7.0], [8.0]])
    p = functional.neighbour_distribution(x, 2.5)
    assert torch.allclose(p.sum(dim=1), torch.ones(5), atol=1e-6)
    assert float(p.diag().abs().max()) == 0.0
    logp = torch.log(p.clamp_min(1e-30))
    perplexity = torch.exp(-(p * logp).sum(dim=1))
    assert torch.allclose(perplexity, torch.full((5,), 2.5), atol=1e-4)
    # row 0: 1 is nearer than 3, nearer than 7, nearer than 8
    assert p[0, 1] > p[0, 2] > p[0, 3] > p[0, 4]
    # a shift and a scale of the features change no row (distances are scaled per row)
    assert torch.allclose(functional.neighbour_distribution(10.0 * x - 4.0, 2.5), p, atol=1e-5)
    # and a large shared offset costs no precision (the rows are centred first)
    assert torch.allclose(functional.neighbour_distribution(x + 1e4, 2.5), p, atol=1e-3)


def test_neighbour_distribution_clips_the_perplexity_to_the_batch() -> None:
    """Three rows hold at most two neighbours: any perplexity >= 2 gives 1/2 and 1/2."""
    x = torch.tensor([[0.0, 0.0], [1.0, 0.0], [5.0, 5.0]])
    p = functional.neighbour_distribution(x, 7.0)
    expected = torch.full((3, 3), 0.5).fill_diagonal_(0.0)
    assert torch.allclose(p, expected, atol=1e-4)


def test_neighbourhood_loss_golden() -> None:
    """P = 1/2, 1/2 (three rows, clipped perplexity); codes u = (1, 1), (1, -1), (-1, -1):
    relaxed Hamming distances d01 = 1, d02 = 2, d12 = 1, so Q_0 = (e^-1, e^-2) / Z =
    (0.7311, 0.2689), Q_1 = (1/2, 1/2), Q_2 = (0.2689, 0.7311); KL_0 = KL_2 =
    ½ ln(0.5 / 0.7311) + ½ ln(0.5 / 0.2689) = 0.12011, KL_1 = 0; mean 0.080076."""
    x = torch.tensor([[0.0, 0.0], [1.0, 0.0], [5.0, 5.0]])
    u = torch.tensor([[1.0, 1.0], [1.0, -1.0], [-1.0, -1.0]], requires_grad=True)
    loss = functional.neighbourhood_loss(u, x, 7.0)
    assert float(loss.detach()) == pytest.approx(0.0800763, abs=1e-5)
    loss.backward()
    assert u.grad is not None and bool(torch.isfinite(u.grad).all())
    assert float(functional.neighbourhood_loss(u[:1], x[:1], 7.0).detach()) == 0.0


def test_neighbour_distribution_keeps_small_distances_between_far_clusters() -> None:
    """Four clusters 100 apart, rows 0.01 apart inside each: the matmul form of the distances
    would cancel the within-cluster ones away in float32 (perplexities of 20-50 instead of 7)."""
    g = torch.Generator().manual_seed(0)
    centres = 100.0 * torch.randn(4, 768, generator=g)
    x = centres[torch.arange(256) % 4] + 0.01 * torch.randn(256, 768, generator=g)
    p = functional.neighbour_distribution(x, 7.0)
    perplexity = torch.exp(-(p * torch.log(p.clamp_min(1e-30))).sum(dim=1))
    assert torch.allclose(perplexity, torch.full((256,), 7.0), atol=1e-2)
