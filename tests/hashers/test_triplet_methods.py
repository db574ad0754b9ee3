"""DNNH, DSH-GAN, TCL and SAEH: golden loss values (hand-computed), structure and retrieval quality.

Golden values are written out as numbers derived by hand in the comments, never by calling the
code under test a second time.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from hashers import functional, registry
from hashers.base import Batch, EmbeddingSet, HashingError, HeadSpec
from hashers.dnnh import DNNH, DNNHConfig, piecewise_threshold
from hashers.dshgan import DSHGAN, DSHGANConfig
from hashers.heads import DivideEncodeHead
from hashers.saeh import SAEH, SAEHConfig
from hashers.tcl import TCL, TCLConfig, triplet_center_loss
from hashers.trainer import FitConfig, fit
from pipeline.synthetic import gaussian_clusters
from retrieval.codes import pack_bits
from retrieval.knn import knn_float, knn_hamming
from retrieval.metrics import classification_metrics

MINE = ("dnnh", "dshgan", "tcl", "saeh")
A, B = [1.0, 0.0], [0.0, 1.0]  # one-hot labels of two classes


def value(t: torch.Tensor) -> float:
    return float(t.detach())


def tiny_spec(*, in_dim: int = 2, bits: int = 2, classes: int = 2) -> HeadSpec:
    return HeadSpec(in_dim=in_dim, n_bits=bits, n_classes=classes, hidden_dims=(), dropout=0.0)


# ---- shared helpers in hashers.functional ------------------------------------------------------
def test_soft_label_cross_entropy_golden() -> None:
    # row 0: softmax([0, ln 3]) = [1/4, 3/4], target [1/2, 1/2] -> ½(ln 4 + ln 4/3)
    # row 1: no label -> 0, but it counts in the batch mean
    logits = torch.tensor([[0.0, math.log(3.0)], [5.0, -5.0]])
    y = torch.tensor([[1.0, 1.0], [0.0, 0.0]])
    expected = 0.5 * (math.log(4.0) + math.log(4.0 / 3.0)) / 2
    assert math.isclose(
        float(functional.soft_label_cross_entropy(logits, y)), expected, rel_tol=1e-6
    )
    # one-hot: the ordinary cross-entropy, -ln(3/4)
    one_hot = functional.soft_label_cross_entropy(logits[:1], torch.tensor([B]))
    assert math.isclose(float(one_hot), -math.log(0.75), rel_tol=1e-6)


def test_triplet_ranking_loss_golden() -> None:
    a = torch.tensor([[0.0, 0.0], [1.0, 1.0]])
    p = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
    n = torch.tensor([[1.0, 1.0], [0.0, 0.0]])
    # row 0: d+ = 1, d- = 2 -> max(0, 3 - 1) = 2; row 1: d+ = 0, d- = 2 -> max(0, 3 - 2) = 1
    assert math.isclose(float(functional.triplet_ranking_loss(a, p, n, 3.0)), 1.5, rel_tol=1e-6)
    # margin 1: both hinges inactive
    assert float(functional.triplet_ranking_loss(a, p, n, 1.0)) == 0.0


def test_triplet_ranking_loss_without_triplets_is_a_connected_zero() -> None:
    u = torch.randn(3, 4, requires_grad=True)
    empty = torch.zeros(0, dtype=torch.long)
    loss = functional.triplet_ranking_loss(u[empty], u[empty], u[empty], 1.0)
    loss.backward()
    assert float(loss.detach()) == 0.0 and torch.equal(u.grad, torch.zeros(3, 4))


def test_mine_triplets_returns_exactly_the_valid_triplets_uniformly() -> None:
    # classes A, A, B: the valid triplets are (0, 1, 2) and (1, 0, 2); anchor 2 has no positive
    y = torch.tensor([A, A, B])
    a, p, n = functional.mine_triplets(y, 4000, torch.Generator().manual_seed(0))
    triplets = set(zip(a.tolist(), p.tolist(), n.tolist(), strict=True))
    assert triplets == {(0, 1, 2), (1, 0, 2)}
    share = float((a == 0).float().mean())
    assert 0.45 < share < 0.55  # both equally likely


def test_mine_triplets_multi_hot_and_unlabelled_rows() -> None:
    # 0 ~ 1 (label 0), 1 ~ 2 (label 1), 0 !~ 2; row 3 holds no label and is the only such row,
    # so it is similar to no other row:
    # anchor 0: (0,1,2), (0,1,3); anchor 1: (1,0,3), (1,2,3); anchor 2: (2,1,0), (2,1,3); 3: none
    y = torch.tensor([[1.0, 0.0], [1.0, 1.0], [0.0, 1.0], [0.0, 0.0]])
    a, p, n = functional.mine_triplets(y, 3000, torch.Generator().manual_seed(1))
    triplets = set(zip(a.tolist(), p.tolist(), n.tolist(), strict=True))
    assert triplets == {(0, 1, 2), (0, 1, 3), (2, 1, 0), (2, 1, 3), (1, 0, 3), (1, 2, 3)}


def test_mine_triplets_pairs_unlabelled_rows_with_each_other() -> None:
    # rows 1 and 2 hold no label: the same (empty) label set, so each is the other's positive and
    # the labelled row 0 their negative; row 0 has no positive
    y = torch.tensor([[1.0, 0.0], [0.0, 0.0], [0.0, 0.0]])
    a, p, n = functional.mine_triplets(y, 1000, torch.Generator().manual_seed(2))
    triplets = set(zip(a.tolist(), p.tolist(), n.tolist(), strict=True))
    assert triplets == {(1, 2, 0), (2, 1, 0)}


def test_mine_triplets_without_valid_triplets_is_empty() -> None:
    a, p, n = functional.mine_triplets(torch.tensor([A, A]), 10)
    assert a.numel() == p.numel() == n.numel() == 0


# ---- DNNH -----------------------------------------------------------------------------------
def test_piecewise_threshold_values_and_straight_through_gradient() -> None:
    s = torch.tensor([0.1, 0.45, 0.5, 0.55, 0.9], requires_grad=True)
    out = piecewise_threshold(s, 0.1)
    assert torch.allclose(out, torch.tensor([0.0, 0.45, 0.5, 0.55, 1.0]))
    out.sum().backward()
    assert torch.equal(s.grad, torch.ones(5))


def test_divide_and_encode_bit_k_reads_only_slice_k() -> None:
    torch.manual_seed(0)
    head = DivideEncodeHead(in_dim=6, n_bits=3, slice_dim=4, hidden_dims=(8,))
    features = torch.randn(1, 12)
    jac = torch.autograd.functional.jacobian(head.encode_slices, features)[
        0, :, 0, :
    ]  # [bits, features]
    for k in range(3):
        outside = torch.cat([jac[k, : 4 * k], jac[k, 4 * (k + 1) :]])
        assert torch.equal(outside, torch.zeros_like(outside))
        assert float(jac[k, 4 * k : 4 * (k + 1)].abs().sum()) > 0


def test_divide_and_encode_forward_matches_an_independent_formula() -> None:
    # out_k = σ(w_k · GELU(f)[k·d : (k+1)·d] + c_k), with f the trunk output, written with math
    torch.manual_seed(1)
    head = DivideEncodeHead(in_dim=6, n_bits=3, slice_dim=4, hidden_dims=(8,)).eval()
    x = torch.randn(5, 6)
    with torch.no_grad():
        f = head.trunk(x).double().numpy()
        out = head(x).double().numpy()
    w = head.slice_maps.weight.detach().double().numpy()
    c = head.slice_maps.bias.detach().double().numpy()
    for i in range(5):
        g = [0.5 * v * (1.0 + math.erf(v / math.sqrt(2.0))) for v in f[i]]  # exact GELU
        for k in range(3):
            z = sum(w[k, j] * g[4 * k + j] for j in range(4)) + c[k]
            assert out[i, k] == pytest.approx(1.0 / (1.0 + math.exp(-z)), rel=1e-5, abs=1e-6)


def test_dnnh_loss_golden() -> None:
    u = torch.tensor([[1.0, -1.0], [-1.0, 1.0], [-1.0, -1.0]])
    # b = (u + 1) / 2 = [1, 0], [0, 1], [0, 0]; labels A, A, B -> triplets (0,1,2) and (1,0,2)
    # (0,1,2): d+ = 2, d- = 1 -> max(0, m - (1 - 2)) = m + 1; (1,0,2) the same by symmetry
    for margin, expected in ((1.0, 2.0), (4.0, 5.0)):  # the paper's margin (our default), and 4
        method = DNNH(tiny_spec(), DNNHConfig(margin=margin))
        terms = method.compute_loss(u, torch.tensor([A, A, B]), torch.arange(3))
        assert math.isclose(value(terms["loss"]), expected, rel_tol=1e-6)
    assert DNNHConfig().margin == 1.0


def test_dnnh_forward_is_in_unit_interval_scale_and_encode_is_b_above_half() -> None:
    method = registry.build("dnnh", HeadSpec(in_dim=8, n_bits=12, n_classes=3, hidden_dims=(16,)))
    x = torch.randn(20, 8)
    method.train()
    u_train = method(x)
    b_train = (u_train + 1) / 2
    snapped = (b_train - 0.5).abs() > 0.1
    assert bool(((b_train[snapped] == 0) | (b_train[snapped] == 1)).all())
    method.eval()
    assert torch.equal(method.encode(x), method.head(x) > 0.5)


# ---- TCL ------------------------------------------------------------------------------------
def test_triplet_center_loss_golden() -> None:
    centers = torch.tensor([[1.0, 0.0], [0.0, 2.0], [2.0, 0.0]])
    u = torch.zeros(3, 2)
    # D(0, c) = [1, 4, 4]
    y = torch.tensor([[1.0, 0, 0], [1.0, 1, 0], [1.0, 1, 1]])
    # row 0: max(0, 1 + 5 - 4) = 2; row 1: positives {0, 1}, nearest negative c2 (4):
    # (max(0, 1 + 5 - 4) + max(0, 4 + 5 - 4)) / 2 = (2 + 5) / 2 = 3.5; row 2: no negative -> 0
    got = triplet_center_loss(u, centers, y, 5.0)
    assert torch.allclose(got, torch.tensor([2.0, 3.5, 0.0]))


def test_tcl_loss_golden() -> None:
    method = TCL(tiny_spec(), TCLConfig())
    with torch.no_grad():
        method.centers.copy_(torch.tensor([[1.0, -1.0], [0.0, 0.0]]))
        method.classifier.weight.zero_()
        method.classifier.bias.zero_()
    u = torch.tensor([[0.5, -2.0]])
    # softmax: zero logits -> ln 2; D = [0.25 + 1, 0.25 + 4] = [1.25, 4.25] -> max(0, 1.25 + 5 - 4.25) = 2
    # quantisation: ((0.5 - 1)² + (-2 + 1)²) / 2 = 0.625
    terms = method.compute_loss(u, torch.tensor([A]), torch.arange(1))
    expected = math.log(2.0) + 0.01 * 2.0 + 0.01 * 0.625
    assert math.isclose(value(terms["loss"]), expected, rel_tol=1e-6)
    assert math.isclose(value(terms["triplet_center"]), 2.0, rel_tol=1e-6)
    assert math.isclose(value(terms["quantization"]), 0.625, rel_tol=1e-6)


def test_tcl_centers_are_parameters_that_learn() -> None:
    method = registry.build("tcl", HeadSpec(in_dim=4, n_bits=8, n_classes=3, hidden_dims=(8,)))
    assert any(p is method.centers for p in method.parameters())
    x, y = torch.randn(6, 4), torch.eye(3)[torch.arange(6) % 3]
    method.compute_loss(method(x), y, torch.arange(6))["loss"].backward()
    assert float(method.centers.grad.abs().sum()) > 0


# ---- DSH-GAN --------------------------------------------------------------------------------
def test_dshgan_hash_stream_golden(monkeypatch: pytest.MonkeyPatch) -> None:
    method = DSHGAN(tiny_spec())
    # u = tanh(x / 2) for real and synthetic inputs; x = ±40 gives b = (u + 1) / 2 in {0, 1} exactly
    method.head.net = nn.Sequential(nn.Identity())
    with torch.no_grad():
        method.classifier.weight.zero_()
        method.classifier.bias.zero_()
    big = 40.0
    pos = torch.full((3, 2), big)  # b+ = [1, 1]
    neg = torch.full((3, 2), -big)  # b- = [0, 0]
    keep = torch.tensor([True, True, False])
    monkeypatch.setattr(method, "synthesise_partners", lambda y: (pos, neg, keep))
    x = torch.tensor([[big, -big], [-big, big], [-big, -big]])  # b = [1, 0], [0, 1], [0, 0]
    u = method(x)
    terms = method.compute_loss(u, torch.tensor([A, A, B]), torch.arange(3))
    # synthetic, rows 0 and 1 kept: d+ = 1, d- = 1 -> max(0, 1 - 0) = 1 each -> 1
    # real: triplets (0,1,2), (1,0,2), each d+ = 2, d- = 1 -> 2; classification: ln 2
    assert math.isclose(value(terms["synthetic_triplets"]), 1.0, rel_tol=1e-6)
    assert math.isclose(value(terms["real_triplets"]), 2.0, rel_tol=1e-6)
    assert math.isclose(value(terms["loss"]), 1.0 + 2.0 + math.log(2.0), rel_tol=1e-6)


def test_dshgan_synthetic_inputs_live_after_the_head_standardiser() -> None:
    spec = HeadSpec(in_dim=6, n_bits=8, n_classes=3, hidden_dims=(8,), standardize=True)
    method = registry.build("dshgan", spec)
    ref = torch.randn(50, 6) * torch.tensor([1.0, 2, 3, 4, 5, 6]) + 10.0  # far from 0, unequal
    method.head.net[0].fit(ref)
    method.eval()  # no dropout: the two paths must agree exactly
    x = torch.randn(5, 6) * 3 + 10.0
    z = method.head.standardized(x)
    assert torch.allclose(z, (x - ref.mean(0)) / ref.std(0, unbiased=False), atol=1e-4)
    assert torch.allclose(method(x), method.encode_synthetic(z), atol=1e-6)  # same path after it
    # the discriminator compares G's layer-normalised output with layer_norm(standardize(x))
    assert torch.allclose(method.discriminator_view(x), F.layer_norm(z, (6,)), atol=1e-6)
    seen: list[torch.Tensor] = []
    method.discriminator.register_forward_pre_hook(lambda _m, args: seen.append(args[0]))
    opt = torch.optim.AdamW(method.parameters(), lr=1e-3)
    method.train()
    method.training_step(Batch(x, torch.eye(3)[torch.arange(5) % 3], torch.arange(5)), opt)
    assert torch.allclose(seen[0], F.layer_norm(z, (6,)), atol=1e-6)  # D's real input
    # a synthetic vector is never standardised again: moving the statistics does not change it
    fake = F.layer_norm(torch.randn(4, 6), (6,))
    method.eval()
    before = method.encode_synthetic(fake)
    method.head.net[0].fit(ref * 7 - 30)
    assert torch.equal(method.encode_synthetic(fake), before)


def test_dshgan_synthetic_partners_respect_labels() -> None:
    method = registry.build("dshgan", HeadSpec(in_dim=6, n_bits=8, n_classes=3, hidden_dims=(8,)))
    y = torch.tensor([[1.0, 0, 0], [0, 1.0, 1.0], [1.0, 1.0, 1.0]])
    calls: list[torch.Tensor] = []
    real_forward = method.generator.forward
    method.generator.forward = lambda z, cond: (calls.append(cond), real_forward(z, cond))[1]
    torch.manual_seed(0)
    pos, neg, keep = method.synthesise_partners(y)
    cond = calls[0]
    assert torch.equal(cond[:3], y)  # positives are conditioned on the anchor's labels
    neg_cond = cond[3:]
    assert torch.equal(neg_cond.sum(dim=1), torch.ones(3))  # one-hot negatives
    assert float((neg_cond[:2] * y[:2]).sum()) == 0.0  # a class the anchor does not hold
    assert keep.tolist() == [True, True, False]  # a sample with every label has no negative
    assert pos.shape == neg.shape == (3, 6)
    assert torch.allclose(pos.mean(dim=1), torch.zeros(3), atol=1e-5)  # layer-normalised output


def test_dshgan_step_updates_each_part_once_with_its_own_optimizer(one_thread) -> None:
    method = registry.build("dshgan", HeadSpec(in_dim=6, n_bits=8, n_classes=3, hidden_dims=(8,)))
    x, y = torch.randn(12, 6), torch.eye(3)[torch.arange(12) % 3]
    before = {k: v.clone() for k, v in method.state_dict().items()}
    outer = torch.optim.AdamW(method.parameters(), lr=1e-3, weight_decay=0.1)
    torch.manual_seed(0)
    out = method.training_step(Batch(x, y, torch.arange(12)), outer)
    assert {"loss", "discriminator", "generator", "synthetic_triplets"} <= set(out)
    after = method.state_dict()
    for prefix in ("generator.", "discriminator.", "head.", "classifier."):
        assert any(not torch.equal(before[k], after[k]) for k in after if k.startswith(prefix)), (
            prefix
        )
    gan_params = {id(p) for m in (method.generator, method.discriminator) for p in m.parameters()}
    # the trainer's optimiser never stepped G or D (no Adam state, no weight decay) ...
    assert not any(id(p) in gan_params for p in outer.state)
    assert all(
        p.grad is None for m in (method.generator, method.discriminator) for p in m.parameters()
    )
    # ... and G, D each have their own optimiser that did
    opt_g, opt_d = method._gan_optimizers
    assert len(opt_g.state) == len(list(method.generator.parameters()))
    assert len(opt_d.state) == len(list(method.discriminator.parameters()))


# ---- SAEH -----------------------------------------------------------------------------------
def test_saeh_loss_golden() -> None:
    method = SAEH(tiny_spec(), SAEHConfig(normalize_target=False))
    with torch.no_grad():
        method.classifier.weight.zero_()
        method.classifier.bias.zero_()
        for p in method.decoder.parameters():
            p.zero_()  # x̂ = 0
    u = torch.tensor([[1.0, 1.0], [1.0, -1.0]])
    x = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    terms = method.loss_terms(u, torch.tensor([A, B]), x)
    # classification: ln 2; reconstruction: (1 + 4 + 9 + 16) / 4 = 7.5
    # similarity: Θ = ½ u uᵀ = [[1, 0], [0, 1]], S = I:
    # (2 (softplus(1) - 1) + 2 softplus(0)) / 4 = (2 (ln(1 + e) - 1) + 2 ln 2) / 4
    sim = (2 * (math.log1p(math.e) - 1.0) + 2 * math.log(2.0)) / 4
    assert math.isclose(value(terms["similarity"]), sim, rel_tol=1e-6)
    assert math.isclose(value(terms["reconstruction"]), 7.5, rel_tol=1e-6)
    assert math.isclose(value(terms["loss"]), math.log(2.0) + sim + 7.5, rel_tol=1e-6)


def test_saeh_normalised_target_is_layer_norm_of_the_embedding() -> None:
    method = SAEH(tiny_spec())
    with torch.no_grad():
        for p in method.decoder.parameters():
            p.zero_()
    # layer_norm([1, 3]) = [-1, 1] / sqrt(1 + 1e-5): mean square 1 / (1 + 1e-5)
    terms = method.loss_terms(torch.zeros(1, 2), torch.tensor([A]), torch.tensor([[1.0, 3.0]]))
    assert math.isclose(value(terms["reconstruction"]), 1.0 / (1.0 + 1e-5), rel_tol=1e-6)


def test_saeh_target_is_what_the_standardising_head_reads() -> None:
    # with standardize, the head reads s(x) = (x - mean) / std of the reference rows; the target
    # is layer_norm(s(x)), not layer_norm(x): here s maps [[0, 10], [2, 30]] to [[-1, -1], [1, 1]]
    spec = dataclasses.replace(tiny_spec(), standardize=True)
    ref = torch.tensor([[0.0, 10.0], [2.0, 30.0]])
    for normalize in (False, True):
        method = SAEH(spec, SAEHConfig(normalize_target=normalize))
        method.fit_input_statistics(ref)
        target = method.reconstruction_target(torch.tensor([[2.0, 10.0]]))  # s(x) = [1, -1]
        want = torch.tensor([[1.0, -1.0]]) / (math.sqrt(1 + 1e-5) if normalize else 1.0)
        torch.testing.assert_close(target, want)


def test_saeh_compute_loss_reconstructs_the_last_forward_input() -> None:
    method = registry.build("saeh", HeadSpec(in_dim=6, n_bits=8, n_classes=3, hidden_dims=(8,)))
    x, y = torch.randn(5, 6), torch.eye(3)[torch.arange(5) % 3]
    with pytest.raises(HashingError, match="forward"):
        method.compute_loss(torch.zeros(5, 8), y, torch.arange(5))
    u = method(x)
    via_cache = method.compute_loss(u, y, torch.arange(5))
    explicit = method.loss_terms(u, y, x)
    assert all(torch.equal(via_cache[k], explicit[k]) for k in explicit)
    with pytest.raises(HashingError, match="5 rows"):
        method.compute_loss(u[:3], y[:3], torch.arange(3))
    assert not any("_last_input" in k for k in method.state_dict())


# ---- every method: multi-label batches and retrieval quality ---------------------------------
@pytest.mark.parametrize("name", MINE)
def test_multi_label_batches_train(name: str) -> None:
    method = registry.build(
        name, HeadSpec(in_dim=6, n_bits=8, n_classes=3, hidden_dims=(8,), multilabel=True)
    )
    y = torch.tensor([[1.0, 0, 0], [1, 1, 0], [0, 1, 1], [0, 0, 0], [1, 1, 1], [0, 0, 1]])
    opt = torch.optim.AdamW(method.parameters(), lr=1e-3)
    torch.manual_seed(0)
    before = [p.detach().clone() for p in method.head.parameters()]
    out = method.training_step(Batch(torch.randn(6, 6), y, torch.arange(6)), opt)
    assert all(torch.isfinite(v) for v in out.values())
    # it trains: the multi-hot rows gave the head a gradient (AdamW's weight decay alone would
    # move it too) and the step moved the head
    assert any(
        float(p.grad.abs().sum()) > 0 for p in method.head.parameters() if p.grad is not None
    )
    assert any(not torch.equal(b, p) for b, p in zip(before, method.head.parameters(), strict=True))


def hard_clusters(n: int, *, seed: int) -> EmbeddingSet:
    """Overlapping Gaussian clusters (center scale 0.7, unit noise): float KNN ≈ 0.96, not 1.0."""
    return gaussian_clusters(n, seed=seed, spread=0.7)


@pytest.fixture(scope="module")
def cluster_splits() -> tuple[EmbeddingSet, EmbeddingSet, EmbeddingSet, float]:
    train, val, test = (
        hard_clusters(600, seed=1),
        hard_clusters(150, seed=2),
        hard_clusters(300, seed=3),
    )
    y_train, y_test = train.y.argmax(1).numpy(), test.y.argmax(1).numpy()
    pred = knn_float(test.x.numpy(), train.x.numpy(), y_train, [7])[7]
    return train, val, test, classification_metrics(y_test, pred)["accuracy"]


@pytest.mark.parametrize("name", MINE)
def test_hamming_knn_keeps_95_percent_of_float_knn(name: str, cluster_splits, one_thread) -> None:
    train, val, test, float_acc = cluster_splits
    assert float_acc > 0.9  # the clusters are learnable but not trivially separated
    spec = HeadSpec(in_dim=32, n_bits=16, n_classes=5, hidden_dims=(64,), dropout=0.0)
    small = {"dshgan": DSHGANConfig(gan_hidden=64)}  # a 512-wide GAN is oversized for 32-d data
    method = registry.build(name, spec, small.get(name))
    fit(method, train, val, config=FitConfig(epochs=20, batch_size=64, patience=20, progress=False))
    pred = knn_hamming(
        pack_bits(method.encode(test.x)),
        pack_bits(method.encode(train.x)),
        16,
        train.y.argmax(1).numpy(),
        [7],
    )[7]
    acc = classification_metrics(test.y.argmax(1).numpy(), pred)["accuracy"]
    assert acc >= 0.95 * float_acc, f"{name}: Hamming KNN {acc:.3f} vs float KNN {float_acc:.3f}"


# ---- real data (slow): raw MedMNIST pixels -> PCA-128 as a stand-in for DINOv2 embeddings -------
def medmnist_pca_features(path, n_components: int = 128) -> tuple[dict[str, EmbeddingSet], int]:
    from sklearn.decomposition import PCA

    data = np.load(path)
    x = {
        s: data[f"{s}_images"].reshape(len(data[f"{s}_images"]), -1) / 255.0
        for s in ("train", "val", "test")
    }
    y = {s: data[f"{s}_labels"].ravel() for s in x}
    n_classes = int(y["train"].max()) + 1
    pca = PCA(n_components, random_state=0).fit(x["train"])
    sets = {
        s: EmbeddingSet.from_numpy(
            pca.transform(x[s]).astype(np.float32), np.eye(n_classes, dtype=np.float32)[y[s]]
        )
        for s in x
    }
    return sets, n_classes


@pytest.mark.slow
@pytest.mark.parametrize("dataset", ["breastmnist", "retinamnist"])
@pytest.mark.parametrize("name", MINE)
@pytest.mark.parametrize(("bits", "ratio"), [(12, 0.95), (48, 0.98)])
def test_real_medmnist_hamming_vs_float_knn(
    shared_medmnist, dataset: str, name: str, bits: int, ratio: float
) -> None:
    sets, n_classes = medmnist_pca_features(shared_medmnist / f"{dataset}.npz")
    y_train, y_test = sets["train"].y.argmax(1).numpy(), sets["test"].y.argmax(1).numpy()
    float_pred = knn_float(sets["test"].x.numpy(), sets["train"].x.numpy(), y_train, [7])[7]
    float_acc = classification_metrics(y_test, float_pred)["accuracy"]
    spec = HeadSpec(in_dim=128, n_bits=bits, n_classes=n_classes, hidden_dims=(512,), dropout=0.1)
    method = registry.build(name, spec, seed=0)
    fit(
        method,
        sets["train"],
        sets["val"],
        config=FitConfig(epochs=30, batch_size=128, patience=10, progress=False),
    )
    pred = knn_hamming(
        pack_bits(method.encode(sets["test"].x)),
        pack_bits(method.encode(sets["train"].x)),
        bits,
        y_train,
        [7],
    )[7]
    acc = classification_metrics(y_test, pred)["accuracy"]
    assert acc >= ratio * float_acc, f"{dataset} {name}-{bits}: {acc:.3f} vs float {float_acc:.3f}"
