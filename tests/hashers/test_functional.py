"""Golden values for the shared loss maths (hand-computed) and numerical stability."""

from __future__ import annotations

import math

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
