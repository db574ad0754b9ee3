"""DSH, CNNH, DHN, HashNet and DSDH: hand-computed golden losses, stability, and retrieval quality.

Every expected number below is written out from the paper's formula with ``math`` on a tiny input;
none is obtained by calling the method's own code a second time.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from hashers import registry
from hashers.base import EmbeddingSet, HashingError, HeadSpec
from hashers.cnnh import CNNHConfig, coordinate_descent_codes, greedy_code_rows
from hashers.dsdh import DSDHConfig, dcc_sweep, discrete_objective, ridge_classifier
from hashers.dsh import DSHConfig
from hashers.hashnet import HashNetConfig
from hashers.trainer import FitConfig, fit
from pipeline.synthetic import gaussian_clusters
from retrieval.codes import pack_bits
from retrieval.knn import knn_float, knn_hamming
from retrieval.metrics import classification_metrics
from retrieval.uncertainty import bootstrap_retentions

PAIRWISE = ["dsh", "cnnh", "dhn", "hashnet", "dsdh"]


def sp(x: float) -> float:
    """softplus, written out."""
    return math.log1p(math.exp(x))


def build(name: str, bits: int, n_classes: int, config=None, in_dim: int = 4):
    spec = HeadSpec(in_dim=in_dim, n_bits=bits, n_classes=n_classes, hidden_dims=(8,), dropout=0.0)
    return registry.build(name, spec, config, seed=0)


def onehot(labels: list[int], n_classes: int) -> torch.Tensor:
    return torch.eye(n_classes)[labels]


# ---- DSH -----------------------------------------------------------------------------------


def test_dsh_golden() -> None:
    m = build("dsh", 2, 2, DSHConfig(alpha=0.5, balance_pairs=False))
    u = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    y = onehot([0, 0, 1], 2)
    # margin m = 2 * 2 bits = 4. Pairs: (0,1) similar, D=2 -> ½·2 = 1;
    # (0,2) dissimilar, D=1 -> ½·max(4-1,0) = 1.5; (1,2) dissimilar, D=1 -> 1.5. Mean 4/3.
    contrastive = (1.0 + 1.5 + 1.5) / 3
    # r_i = ‖|u_i| - 1‖₁ = 1, 1, 0; pair mean of r_i + r_j = (2 + 1 + 1) / 3.
    regularizer = 4.0 / 3
    out = m.compute_loss(u, y, torch.arange(3))
    assert math.isclose(float(out["contrastive"]), contrastive, rel_tol=1e-6)
    assert math.isclose(float(out["regularizer"]), regularizer, rel_tol=1e-6)
    assert math.isclose(float(out["loss"]), contrastive + 0.5 * regularizer, rel_tol=1e-6)


def test_dsh_balanced_pairs_golden() -> None:
    m = build("dsh", 2, 2, DSHConfig(alpha=0.0))  # balance_pairs is the default
    u = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    y = onehot([0, 0, 1], 2)
    # same pairs as above (terms 1, 1.5, 1.5); 1 similar and 2 dissimilar of 3 pairs:
    # w_sim = 3 / (2·1) = 1.5, w_dis = 3 / (2·2) = 0.75 (mean 1), weighted mean (1.5 + 2·0.75·1.5) / 3
    out = m.compute_loss(u, y, torch.arange(3))
    assert math.isclose(float(out["contrastive"]), 1.25, rel_tol=1e-6)


def test_dsh_far_dissimilar_pairs_cost_nothing_and_batch_of_one() -> None:
    m = build("dsh", 2, 2, DSHConfig(alpha=0.0))
    u = torch.tensor([[2.0, 2.0], [-2.0, -2.0]])  # D = 32 > m = 4
    out = m.compute_loss(u, onehot([0, 1], 2), torch.arange(2))
    assert float(out["loss"]) == 0.0
    one = m.compute_loss(torch.tensor([[0.5, -3.0]]), onehot([0], 2), torch.arange(1))
    assert float(one["contrastive"]) == 0.0


def test_dsh_stable_for_huge_outputs() -> None:
    m = build("dsh", 2, 2)
    u = torch.tensor([[1e4, -1e4], [1e4, 1e4], [-1e4, 3.0]], requires_grad=True)
    out = m.compute_loss(u, onehot([0, 0, 1], 2), torch.arange(3))
    out["loss"].backward()
    assert torch.isfinite(out["loss"]) and torch.isfinite(u.grad).all()


# ---- DHN -----------------------------------------------------------------------------------


def test_dhn_golden() -> None:
    from hashers.dhn import DHNConfig

    m = build("dhn", 2, 2)  # defaults: λ = 0.1, the paper's logit Θ = u uᵀ
    u = torch.tensor([[1.0, -1.0], [2.0, 0.0]])
    y = onehot([0, 0], 2)  # every pair similar
    # Θ = u uᵀ = [[2, 2], [2, 4]]; similar pairs cost softplus(-Θ).
    likelihood = (3 * sp(-2.0) + sp(-4.0)) / 4
    # |u| - 1 = [[0, 0], [1, -1]] -> log cosh: 0, 0, log cosh 1, log cosh 1.
    quantization = 2 * math.log(math.cosh(1.0)) / 4
    out = m.compute_loss(u, y, torch.arange(2))
    assert math.isclose(float(out["likelihood"]), likelihood, rel_tol=1e-6)
    assert math.isclose(float(out["quantization"]), quantization, rel_tol=1e-6)
    assert math.isclose(float(out["loss"]), likelihood + 0.1 * quantization, rel_tol=1e-6)
    # DPSH's convention Θ = ½ u uᵀ = [[1, 1], [1, 2]]
    half = build("dhn", 2, 2, DHNConfig(logit_scale=0.5)).compute_loss(u, y, torch.arange(2))
    assert math.isclose(float(half["likelihood"]), (3 * sp(-1.0) + sp(-2.0)) / 4, rel_tol=1e-6)


def test_dhn_stable_for_huge_outputs() -> None:
    m = build("dhn", 2, 2)
    u = torch.tensor([[1e4, -1e4], [-1e4, 1e4]], requires_grad=True)
    out = m.compute_loss(u, onehot([0, 1], 2), torch.arange(2))
    out["loss"].backward()
    assert torch.isfinite(out["loss"]) and torch.isfinite(u.grad).all()


# ---- HashNet -------------------------------------------------------------------------------


def test_hashnet_golden_weighted_likelihood() -> None:
    m = build("hashnet", 2, 2)  # α = 10 / 2 bits = 5
    h = torch.tensor([[0.5, 0.5], [0.5, 0.0], [-0.5, 0.5]])
    y = onehot([0, 0, 1], 2)
    # θ = 5 ⟨h_i, h_j⟩ = [[2.5, 1.25, 0], [1.25, 1.25, -1.25], [0, -1.25, 2.5]]
    # 5 similar entries (weight 9/10), 4 dissimilar (weight 9/8); weights already have mean 1.
    similar = 2 * sp(-2.5) + 3 * sp(-1.25)
    dissimilar = 2 * math.log(2.0) + 2 * sp(-1.25)
    expected = (0.9 * similar + 1.125 * dissimilar) / 9
    out = m.compute_loss(h, y, torch.arange(3))
    assert math.isclose(float(out["loss"]), expected, rel_tol=1e-6)
    unweighted = build("hashnet", 2, 2, HashNetConfig(balance_pairs=False, alpha=1.0))
    expected_plain = (2 * sp(-0.5) + 3 * sp(-0.25) + 2 * math.log(2.0) + 2 * sp(-0.25)) / 9
    assert math.isclose(
        float(unweighted.compute_loss(h, y, torch.arange(3))["loss"]), expected_plain, rel_tol=1e-6
    )


def test_hashnet_continuation_schedule_and_activation() -> None:
    # β_e = β0 (1 + γ T e / (E - 1))^power; γT = 0.003 · 2000 = 6
    m = build("hashnet", 4, 2, HashNetConfig(beta0=1.5, gamma=0.003, iterations=2000, power=0.5))
    m.on_epoch_start(0, 7)
    assert math.isclose(float(m.beta), 1.5)
    m.on_epoch_start(3, 7)  # halfway: 1.5 · (1 + 6 · 3/6)^0.5 = 1.5 · 2 = 3
    assert math.isclose(float(m.beta), 3.0, rel_tol=1e-6)
    x = torch.randn(5, 4)
    z = m.head(x)
    assert torch.allclose(m(x), torch.tanh(3.0 * z))
    assert torch.equal(m.encode(x), z > 0)
    assert "beta" in m.state_dict()  # β round-trips with the saved head


def test_hashnet_continuation_reaches_the_authors_end_value_within_any_budget() -> None:
    """The authors' β_t = (1 + 0.005 t)^0.5 over 10 000 iterations, mapped onto the budget."""
    m = build("hashnet", 4, 2)  # defaults: β0 = 1, γ = 0.005, power 0.5, T = 10 000
    end = math.sqrt(1.0 + 0.005 * 10_000)  # √51 ≈ 7.1414
    for n_epochs in (3, 60):  # PathMNIST under max_steps: 1200 runs 3 epochs; small sets 60
        m.on_epoch_start(0, n_epochs)
        assert float(m.beta) == 1.0
        m.on_epoch_start(n_epochs - 1, n_epochs)
        assert math.isclose(float(m.beta), end, rel_tol=1e-6), n_epochs
    m.on_epoch_start(1, 3)  # halfway: t = 5000 -> √26
    assert math.isclose(float(m.beta), math.sqrt(26.0), rel_tol=1e-6)
    m.on_epoch_start(30, 60)  # t = 10 000 · 30/59 -> √(1 + 50 · 30/59) ≈ 5.14 (was √31 ≈ 5.57)
    assert math.isclose(float(m.beta), math.sqrt(1.0 + 50.0 * 30 / 59), rel_tol=1e-6)
    m.on_epoch_start(0, 1)  # a one-epoch budget cannot continue: β stays β0
    assert float(m.beta) == 1.0


def test_hashnet_continuation_follows_the_trainers_step_capped_budget() -> None:
    """fit caps the epochs by max_steps and passes that budget on, so β still ends at √51."""
    train = gaussian_clusters(64, seed=0, dim=4, n_classes=2)
    val = gaussian_clusters(32, seed=1, dim=4, n_classes=2)
    m = build("hashnet", 4, 2)
    seen: list[tuple[int, int, float]] = []
    schedule = m.on_epoch_start

    def record(epoch: int, n_epochs: int) -> None:
        schedule(epoch, n_epochs)
        seen.append((epoch, n_epochs, float(m.beta)))

    m.on_epoch_start = record  # type: ignore[method-assign]
    # 64 rows at batch 16: 4 steps per epoch, so max_steps = 12 allows 3 of the 60 epochs
    cfg = FitConfig(epochs=60, max_steps=12, batch_size=16, patience=100, progress=False)
    fit(m, train, val, config=cfg)
    assert [(e, n) for e, n, _ in seen] == [(0, 3), (1, 3), (2, 3)]
    assert math.isclose(seen[-1][2], math.sqrt(51.0), rel_tol=1e-6)


def test_hashnet_likelihood_is_a_proper_nll_at_long_codes() -> None:
    """α scales θ in both terms: aligned similar pairs cost ≈ 0, never less (see the collapse note)."""
    m = build("hashnet", 48, 2)  # α = 10/48: θ = 10 for two identical ±1 codes
    h = torch.ones(2, 48)
    loss = float(m.compute_loss(h, onehot([0, 0], 2), torch.arange(2))["loss"])
    assert 0.0 <= loss <= sp(-10.0) + 2e-6  # float32: softplus(10) - 10 loses ~1e-6
    # the released-code form softplus(αd) - S·d would give softplus(10) - 48 < 0 here
    assert sp(10.0) - 48 < 0


def test_hashnet_stable_for_huge_alpha() -> None:
    m = build("hashnet", 2, 2, HashNetConfig(alpha=1e5))
    h = torch.tensor([[1.0, 1.0], [-1.0, -1.0]], requires_grad=True)
    out = m.compute_loss(h, onehot([0, 1], 2), torch.arange(2))
    out["loss"].backward()
    assert torch.isfinite(out["loss"]) and torch.isfinite(h.grad).all()


# ---- CNNH ----------------------------------------------------------------------------------


def test_cnnh_greedy_flip_golden() -> None:
    # one row against one anchor, q = 2, dissimilar: target c·a = -2. Start equal to the anchor
    # (residual -4): Δ = 4(s c r + 1) = -12 for both bits -> flip bit 0 (residual -2), then
    # Δ = (12, -4) -> flip bit 1 (residual 0), then Δ = (4, 4): stop at the complement.
    out = greedy_code_rows(
        torch.tensor([[1.0, 1.0]]),
        torch.tensor([[1.0, 1.0]]),
        torch.tensor([[-2.0]]),
        torch.tensor([[1.0]]),
    )
    assert out.tolist() == [[-1.0, -1.0]]


def test_cnnh_coordinate_descent_reaches_the_optimum_on_four_classes() -> None:
    # 4 classes, 2 bits, S = -1 off the diagonal: each ordered pair costs (-2 - c_a·c_b)², i.e.
    # 16 if equal, 4 if orthogonal, 0 if complementary. The optimum uses all 4 codes:
    # per row 0 + 4 + 4, total 32 over the 12 ordered pairs.
    target = 2.0 * (2 * torch.eye(4, dtype=torch.float64) - 1)
    weight = torch.ones(4, 4, dtype=torch.float64).fill_diagonal_(0.0)
    codes, objective = coordinate_descent_codes(
        target, weight, 2, sweeps=20, generator=torch.Generator().manual_seed(0)
    )
    assert objective == 32.0
    assert len(torch.unique(codes, dim=0)) == 4


def test_cnnh_targets_follow_label_sets() -> None:
    m = build("cnnh", 16, 3)
    y = onehot([0, 1, 2, 0, 1, 2, 0, 0], 3)
    torch.manual_seed(0)
    m.on_fit_start(EmbeddingSet(torch.randn(8, 4), y))
    t = m.targets
    assert t.shape == (8, 16) and set(t.unique().tolist()) == {-1.0, 1.0}
    assert torch.equal(t[0], t[3]) and torch.equal(t[0], t[7]) and torch.equal(t[1], t[4])
    # 3 mutually dissimilar classes: best codes have pairwise inner products near -q/2
    assert float(t[0] @ t[1]) < 0 and float(t[0] @ t[2]) < 0 and float(t[1] @ t[2]) < 0
    assert m.dissimilar_min_distance is not None and m.dissimilar_min_distance >= 8
    assert "targets" not in m.state_dict()  # training-row targets never go into the saved head


def test_cnnh_multilabel_and_rare_label_sets() -> None:
    # label sets {0}, {1}, {0,1}, {2}; with max_label_sets=2 the two most frequent ({0}, {1}) are
    # solved jointly (dissimilar: complementary codes, a·b = -16) and {0,1}, {2} are fitted to
    # them. With b = -a, c·b = -c·a, so {2} (target -16 to both) costs (16 + c·a)² + (16 - c·a)²,
    # minimal at c·a = 0; {0,1} (target +16 to both) likewise ends orthogonal to both.
    rows = [[1, 0, 0]] * 6 + [[0, 1, 0]] * 5 + [[1, 1, 0]] * 2 + [[0, 0, 1]] * 1
    y = torch.tensor(rows, dtype=torch.float32)
    spec = HeadSpec(
        in_dim=4, n_bits=16, n_classes=3, hidden_dims=(8,), dropout=0.0, multilabel=True
    )
    m = registry.build("cnnh", spec, CNNHConfig(max_label_sets=2, cls_weight=1.0), seed=0)
    torch.manual_seed(0)
    m.on_fit_start(EmbeddingSet(torch.randn(len(rows), 4), y))
    t = m.targets
    a, b, ab, c = t[0], t[6], t[11], t[13]
    assert float(a @ b) == -16.0
    assert float(c @ a) == 0.0 and float(c @ b) == 0.0
    assert float(ab @ a) == 0.0 and float(ab @ b) == 0.0
    assert m.dissimilar_min_distance is not None and m.dissimilar_min_distance > 0
    out = m.compute_loss(
        torch.zeros(3, 16, requires_grad=True), y[[0, 6, 11]], torch.tensor([0, 6, 11])
    )
    assert torch.isfinite(out["loss"])


def test_cnnh_balanced_targets_keep_minority_classes_apart() -> None:
    # 80 % of the samples in class 0: the paper's n_a n_b weights pull every minority target to
    # the complement of the majority code; balancing keeps the minority classes well apart.
    labels = [0] * 80 + [1] * 5 + [2] * 5 + [3] * 5 + [4] * 5
    y = onehot(labels, 5)
    x = torch.randn(100, 4)

    def minority_min_distance(balanced: bool) -> int:
        m = build("cnnh", 48, 5, CNNHConfig(class_balanced=balanced))
        torch.manual_seed(0)
        m.on_fit_start(EmbeddingSet(x, y))
        codes = torch.stack([m.targets[labels.index(c)] for c in range(1, 5)])
        d = (48 - codes @ codes.T) / 2 + 99 * torch.eye(4)
        return int(d.min())

    assert minority_min_distance(True) >= 20 > minority_min_distance(False)


def test_cnnh_loss_golden_and_missing_targets() -> None:
    m = build("cnnh", 2, 3, CNNHConfig(cls_weight=2.0))
    with pytest.raises(HashingError, match="target codes"):
        m.compute_loss(torch.zeros(1, 2), onehot([0], 3), torch.arange(1))
    m.targets = torch.tensor([[1.0, -1.0], [-1.0, 1.0]])
    torch.nn.init.zeros_(m.classifier.weight)
    torch.nn.init.zeros_(m.classifier.bias)
    u = torch.tensor([[0.5, -1.0]])
    with torch.no_grad():
        out = m.compute_loss(u, onehot([2], 3), torch.tensor([0]))
    # regression: ((0.5 - 1)² + 0) / 2 = 0.125; zero logits: cross-entropy = log 3
    assert math.isclose(float(out["regression"]), 0.125, rel_tol=1e-6)
    assert math.isclose(float(out["classification"]), math.log(3.0), rel_tol=1e-6)
    assert math.isclose(float(out["loss"]), 0.125 + 2.0 * math.log(3.0), rel_tol=1e-6)


# ---- DSDH ----------------------------------------------------------------------------------


def test_dsdh_dcc_golden_matches_brute_force() -> None:
    # n = 1, K = 2, one label. W = [[1], [1]] -> G = W Wᵀ = all ones; P = μ Y Wᵀ + η U = (1.1, 0.7).
    # From B = (-1, -1): bit 0: 1.1 - 1·(-1) = 2.1 -> +1; bit 1: 0.7 - 1·(+1) = -0.3 -> -1.
    B0 = torch.tensor([[-1.0, -1.0]])
    U = torch.tensor([[0.1, -0.3]])
    Y = torch.tensor([[1.0]])
    W = torch.tensor([[1.0], [1.0]])
    B = dcc_sweep(B0, U, Y, W, mu=1.0, eta=1.0)
    assert B.tolist() == [[1.0, -1.0]]
    # brute force over the 4 codes of μ‖Y - BW‖² + η‖B - U‖²: (1,-1) -> 1 + 1.3 = 2.3 is the minimum
    costs = {
        (1, -1): 1 + (0.9**2 + 0.7**2),
        (1, 1): 1 + (0.9**2 + 1.3**2),
        (-1, 1): 1 + (1.1**2 + 1.3**2),
        (-1, -1): 9 + (1.1**2 + 0.7**2),
    }
    assert min(costs, key=costs.get) == (1, -1)
    assert math.isclose(discrete_objective(B, U, Y, W, mu=1.0, nu=0.0, eta=1.0), 2.3, rel_tol=1e-6)


def test_dsdh_ridge_golden() -> None:
    B = torch.tensor([[1.0], [1.0], [-1.0]])
    Y = torch.tensor([[1.0], [1.0], [0.0]])
    # (BᵀB + ν/μ)⁻¹ BᵀY = (3 + 1)⁻¹ · 2 = 0.5
    assert torch.allclose(ridge_classifier(B, Y, mu=2.0, nu=2.0), torch.tensor([[0.5]]))


def test_dsdh_discrete_steps_never_increase_the_objective() -> None:
    g = torch.Generator().manual_seed(0)
    U = torch.randn(50, 8, generator=g)
    Y = torch.eye(3)[torch.randint(0, 3, (50,), generator=g)]
    B = torch.where(torch.randn(50, 8, generator=g) > 0, 1.0, -1.0)
    mu, nu, eta = 1.0, 0.1, 0.5
    W = ridge_classifier(B, Y, mu=mu, nu=nu)
    prev = discrete_objective(B, U, Y, W, mu=mu, nu=nu, eta=eta)
    for _ in range(4):
        W = ridge_classifier(B, Y, mu=mu, nu=nu)
        after_w = discrete_objective(B, U, Y, W, mu=mu, nu=nu, eta=eta)
        B = dcc_sweep(B, U, Y, W, mu=mu, eta=eta)
        after_b = discrete_objective(B, U, Y, W, mu=mu, nu=nu, eta=eta)
        assert after_w <= prev + 1e-6 and after_b <= after_w + 1e-6
        prev = after_b


def test_dsdh_loss_golden() -> None:
    m = build("dsdh", 2, 2, DSDHConfig(eta=4.0))
    m.B = torch.tensor([[1.0, -1.0], [1.0, 1.0]])  # n = 2 training rows -> coupling weight η/n = 2
    u = torch.tensor([[0.5, -0.5], [1.0, 1.0]])
    y = onehot([0, 0], 2)
    # Ψ = ½ u uᵀ = [[0.25, 0], [0, 1]], all similar: softplus(-Ψ)
    likelihood = (sp(-0.25) + 2 * math.log(2.0) + sp(-1.0)) / 4
    coupling = (0.25 + 0.25 + 0.0) / 2  # mean over samples of ‖b_i - u_i‖²
    out = m.compute_loss(u, y, torch.arange(2))
    assert math.isclose(float(out["likelihood"]), likelihood, rel_tol=1e-6)
    assert math.isclose(float(out["coupling"]), coupling, rel_tol=1e-6)
    assert math.isclose(float(out["loss"]), likelihood + 2.0 * coupling, rel_tol=1e-6)
    assert "B" not in m.state_dict() and "W" not in m.state_dict()


def test_dsdh_needs_the_discrete_step() -> None:
    m = build("dsdh", 2, 2)
    with pytest.raises(HashingError, match="on_fit_start"):
        m.on_epoch_start(0, 1)
    with pytest.raises(HashingError, match="no binary codes"):
        m.compute_loss(torch.zeros(2, 2), onehot([0, 1], 2), torch.arange(2))


# ---- retrieval quality on synthetic clusters ------------------------------------------------


def clusters(n: int, *, seed: int, majority: float | None = None) -> EmbeddingSet:
    return gaussian_clusters(n, seed=seed, majority=majority)


def hamming_vs_float(name: str, majority: float | None) -> tuple[float, float, int]:
    train = clusters(600, seed=1, majority=majority)
    val = clusters(150, seed=2, majority=majority)
    test = clusters(300, seed=3, majority=majority)
    ytr, yte = train.y.argmax(1).numpy(), test.y.argmax(1).numpy()
    float_acc = classification_metrics(
        yte, knn_float(test.x.numpy(), train.x.numpy(), ytr, [7])[7]
    )["accuracy"]
    spec = HeadSpec(in_dim=32, n_bits=16, n_classes=5, hidden_dims=(64,), dropout=0.0)
    method = registry.build(name, spec, seed=0)
    fit(
        method, train, val, config=FitConfig(epochs=12, batch_size=128, patience=12, progress=False)
    )
    codes = method.encode(test.x)
    pred = knn_hamming(pack_bits(codes), pack_bits(method.encode(train.x)), 16, ytr, [7])[7]
    acc = classification_metrics(yte, pred)["accuracy"]
    return acc, float_acc, len(torch.unique(codes, dim=0))


@pytest.mark.parametrize("name", PAIRWISE)
def test_codes_keep_float_knn_accuracy_on_clusters(name: str, one_thread) -> None:
    acc, float_acc, _ = hamming_vs_float(name, None)
    assert float_acc > 0.9
    assert acc >= 0.95 * float_acc, f"{name}: Hamming KNN {acc:.3f} vs float {float_acc:.3f}"


@pytest.mark.parametrize("name", PAIRWISE)
def test_codes_do_not_collapse_on_imbalanced_clusters(name: str, one_thread) -> None:
    acc, float_acc, distinct = hamming_vs_float(name, 0.8)
    assert distinct > 1, f"{name}: every test sample got the same code"
    assert acc >= 0.9 * float_acc, f"{name}: Hamming KNN {acc:.3f} vs float {float_acc:.3f}"


# ---- slow: realistic features from real MedMNIST images --------------------------------------

MEDMNIST = Path(__file__).resolve().parents[3] / "shared" / "data" / "medmnist"


def pixel_pca_features(name: str, dim: int = 128) -> tuple[dict[str, EmbeddingSet], int]:
    """Standardised raw pixels projected on the train split's top ``dim`` principal axes."""
    data = np.load(MEDMNIST / f"{name}.npz")
    xs = {
        s: data[f"{s}_images"].reshape(len(data[f"{s}_images"]), -1) / 255.0
        for s in ("train", "val", "test")
    }
    ys = {s: data[f"{s}_labels"].reshape(-1).astype(int) for s in xs}
    mean, std = xs["train"].mean(0), xs["train"].std(0) + 1e-6
    z = {s: (v - mean) / std for s, v in xs.items()}
    axes = np.linalg.svd(z["train"], full_matrices=False)[2][:dim].T
    n_classes = int(max(v.max() for v in ys.values())) + 1
    eye = np.eye(n_classes, dtype=np.float32)
    return {
        s: EmbeddingSet.from_numpy((z[s] @ axes).astype(np.float32), eye[ys[s]]) for s in z
    }, n_classes


@pytest.mark.slow
@pytest.mark.parametrize("dataset", ["breastmnist", "retinamnist"])
@pytest.mark.parametrize("name", PAIRWISE)
def test_real_medmnist_pixel_features(name: str, dataset: str) -> None:
    """No pairwise head is resolvably worse than the float KNN on real images, at 12 or 48 bits.

    "Resolvably": the 95 % paired bootstrap interval of the retention (3 head seeds, over the test
    queries; :mod:`retrieval.uncertainty`) lies wholly under 0.98 — the project's ``short``
    verdict — for balanced or plain accuracy. A collapsed head (the reference thesis's CNNH reached
    27.9 % on PathMNIST against its float KNN's 75.6 %) is short; so is one that gives every query
    the majority class, which the test checks first on each split. A point estimate against 0.98
    is not used: on these 156- and 400-image test splits a cell's interval spans about ±0.1, so
    heads exactly as good as the float KNN miss such a bar by chance (`bench/RESULTS-utility.md`,
    "What a per-cell bar can certify here")."""
    if not (MEDMNIST / f"{dataset}.npz").is_file():
        pytest.skip(f"{dataset}.npz not found under {MEDMNIST}")
    sets, n_classes = pixel_pca_features(dataset)
    train, val, test = sets["train"], sets["val"], sets["test"]
    ytr, yte = train.y.argmax(1).numpy(), test.y.argmax(1).numpy()
    float_pred = knn_float(test.x.numpy(), train.x.numpy(), ytr, [7])[7]
    majority = np.full_like(yte, np.bincount(ytr).argmax())
    assert bootstrap_retentions(yte, float_pred, majority)["balanced_accuracy"].verdict() == "short"
    for bits in (12, 48):
        preds = []
        for seed in (0, 1, 2):
            spec = HeadSpec(
                in_dim=128, n_bits=bits, n_classes=n_classes, hidden_dims=(512,), dropout=0.1
            )
            method = registry.build(name, spec, seed=seed)
            fit(method, train, val, config=FitConfig(epochs=30, progress=False, seed=seed))
            preds.append(
                knn_hamming(
                    pack_bits(method.encode(test.x)),
                    pack_bits(method.encode(train.x)),
                    bits,
                    ytr,
                    [7],
                )[7]
            )
        for metric, ci in bootstrap_retentions(yte, float_pred, np.stack(preds)).items():
            assert ci.verdict() != "short", (
                f"{name}-{bits} on {dataset}: {metric} retention {ci.point:.3f} "
                f"({ci.low:.3f}-{ci.high:.3f}) is short of 0.98 beyond the test split's noise"
            )


# ---- DPSH in-batch (η > 0), DSDH's discrete step end to end, CNNH's weighted objective --------


@pytest.mark.parametrize(
    ("name", "logit"),
    # Θ of a +1^4 code with itself: DPSH / DSDH / SAEH ½·4 = 2, DHN 1·4 = 4, HashNet (10/4)·4 = 10
    [("dpsh", 2.0), ("dsdh", 2.0), ("saeh", 2.0), ("dhn", 4.0), ("hashnet", 10.0)],
)
def test_unlabelled_row_is_similar_to_itself(name: str, logit: float) -> None:
    """A row without labels (ChestMNIST's "no finding") is its own similar pair: at a binary code
    its self-pair costs softplus(-Θ) (→ 0 at long codes), and the gradient grows |u|, not shrinks it."""
    m = build(name, 4, 2)
    if name == "dsdh":
        m.B = torch.ones(1, 4)
    u = torch.ones(1, 4, requires_grad=True)
    y = torch.zeros(1, 2)
    if name == "saeh":
        nll = m.loss_terms(u, y, torch.zeros(1, 4))["similarity"]
    else:
        nll = m.compute_loss(u, y, torch.arange(1))["likelihood"]
    # S_ii = 0 would give softplus(Θ); float32 softplus(Θ) - Θ loses ~1e-6 at Θ = 10
    assert math.isclose(float(nll.detach()), sp(-logit), rel_tol=1e-5, abs_tol=2e-6)
    nll.backward()
    assert bool((u.grad < 0).all())  # descent pushes the entries further towards +1


def test_dsh_unlabelled_rows_are_a_similar_pair() -> None:
    m = build("dsh", 2, 2, DSHConfig(alpha=0.0, balance_pairs=False))
    u = torch.tensor([[1.0, 1.0], [1.0, 1.0]])  # D = 0
    # similar: ½ · 0 = 0 (as dissimilar they would cost ½ · max(m - 0, 0) = ½ · 4 = 2)
    out = m.compute_loss(u, torch.zeros(2, 2), torch.arange(2))
    assert float(out["contrastive"]) == 0.0


def test_dpsh_in_batch_golden_with_quantisation() -> None:
    from hashers.dpsh import DPSHConfig

    m = build("dpsh", 2, 2, DPSHConfig(eta=0.5))
    u = torch.tensor([[1.0, 0.5], [-0.5, 1.0]])
    y = onehot([0, 1], 2)  # dissimilar: S = I
    # Θ = ½ u uᵀ: Θ_00 = Θ_11 = ½ (1 + 0.25) = 0.625, Θ_01 = ½ (-0.5 + 0.5) = 0
    # all 4 ordered pairs: diagonal softplus(0.625) - 0.625 each, off-diagonal softplus(0) = ln 2
    likelihood = (2 * (sp(0.625) - 0.625) + 2 * math.log(2.0)) / 4
    # sign(u) = [[1, 1], [-1, 1]]: squared gaps 0, 0.25, 0.25, 0 -> mean 0.125
    out = m.compute_loss(u, y, torch.arange(2))
    assert math.isclose(float(out["likelihood"]), likelihood, rel_tol=1e-6)
    assert math.isclose(float(out["quantization"]), 0.125, rel_tol=1e-6)
    assert math.isclose(float(out["loss"]), likelihood + 0.5 * 0.125, rel_tol=1e-6)


def test_dsdh_discrete_step_end_to_end_matches_brute_force() -> None:
    import itertools

    from torch import nn

    mu, nu, eta = 1.0, 0.5, 0.5
    m = build("dsdh", 3, 2, DSDHConfig(mu=mu, nu=nu, eta=eta, dcc_iters=1), in_dim=3)
    m.head = nn.Identity()  # U = x
    U = np.array([[-0.8, 0.2, -0.1], [-0.1, 0.3, 0.7], [0.2, 0.2, -1.1], [0.6, -0.3, 1.0]])
    Y = np.eye(2)[[0, 0, 1, 1]]
    m.on_fit_start(EmbeddingSet(torch.tensor(U).float(), torch.tensor(Y).float()))
    m.on_epoch_start(0, 1)
    # W step from B = sign(U), as ridge regression by least squares on the augmented system
    B0 = np.where(U >= 0, 1.0, -1.0)
    aug_b = np.vstack([B0, math.sqrt(nu / mu) * np.eye(3)])
    aug_y = np.vstack([Y, np.zeros((3, 2))])
    W = np.linalg.lstsq(aug_b, aug_y, rcond=None)[0]
    assert np.allclose(m.W.numpy(), W, atol=1e-5)
    # B step: with W fixed the objective separates over rows; brute force over the 8 codes
    codes = np.array(list(itertools.product([-1.0, 1.0], repeat=3)))
    best = np.array(
        [
            codes[
                np.argmin(
                    [mu * ((y - c @ W) ** 2).sum() + eta * ((c - u) ** 2).sum() for c in codes]
                )
            ]
            for u, y in zip(U, Y, strict=True)
        ]
    )
    assert np.array_equal(m.B.numpy(), best)
    # the cross-bit term matters here: per-bit signs of P = μ Y Wᵀ + η U, ignoring it, differ
    naive = np.where(mu * Y @ W.T + eta * U >= 0, 1.0, -1.0)
    assert not np.array_equal(naive, best)


def test_cnnh_paper_weighted_targets_reach_the_brute_force_optimum() -> None:
    import itertools

    labels = [0] * 6 + [1] * 3 + [2] * 1  # n_a = 6, 3, 1
    q, counts = 3, np.array([6.0, 3.0, 1.0])
    m = build("cnnh", q, 3, CNNHConfig(class_balanced=False))
    torch.manual_seed(0)
    m.on_fit_start(EmbeddingSet(torch.randn(10, 4), onehot(labels, 3)))
    target = q * (2 * np.eye(3) - 1)  # every pair of classes dissimilar
    weight = np.outer(counts, counts) * (1 - np.eye(3))  # the paper's n_a n_b, off-diagonal

    def objective(c: np.ndarray) -> float:
        return float((weight * (target - c @ c.T) ** 2).sum())

    brute = min(
        objective(np.array(bits, dtype=float).reshape(3, q))
        for bits in itertools.product([-1, 1], repeat=3 * q)
    )
    found = m.targets[[labels.index(c) for c in range(3)]].double().numpy()
    assert objective(found) == pytest.approx(brute)
