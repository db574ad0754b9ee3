"""Unsupervised floors: LSH (incl. multi-table), ITQ and PCA-RR (hashers/baselines.py)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from hashers import baselines as B
from hashers import registry
from hashers.base import EmbeddingSet, HashingError, HeadSpec
from hashers.trainer import FitConfig, fit


def spec(in_dim: int, bits: int) -> HeadSpec:
    return HeadSpec(in_dim=in_dim, n_bits=bits, n_classes=2)


def unlabelled(x: np.ndarray | torch.Tensor) -> EmbeddingSet:
    x = torch.as_tensor(x, dtype=torch.float32)
    y = torch.zeros(x.shape[0], 2)
    y[:, 0] = 1  # a single class: the baselines must not care
    return EmbeddingSet(x, y)


def anisotropic(n: int, dim: int, *, seed: int, offset: float = 0.0) -> torch.Tensor:
    """Correlated Gaussian data with a decaying spectrum (what PCA / ITQ are meant for)."""
    g = torch.Generator().manual_seed(seed)
    mix = torch.randn(dim, dim, generator=torch.Generator().manual_seed(1234))
    scales = torch.linspace(3.0, 0.3, dim)
    return (torch.randn(n, dim, generator=g) * scales) @ mix + offset


# ---- shared maths -----------------------------------------------------------------------


def test_pca_golden_2d() -> None:
    # points ±2·u1 and ±1·u2 around the mean (1, 2), with u1 = (0.6, 0.8), u2 = (-0.8, 0.6):
    # scatter = 8·u1u1ᵀ + 2·u2u2ᵀ = [[4.16, 2.88], [2.88, 5.84]], covariance = scatter / 3,
    # eigenvalues 8/3 and 2/3; u2's largest entry (-0.8) is negative, so it is flipped to (0.8, -0.6).
    x = torch.tensor([[2.2, 3.6], [-0.2, 0.4], [0.2, 2.6], [1.8, 1.4]], dtype=torch.float64)
    mean, cov = B.mean_and_covariance(x)
    assert torch.allclose(mean, torch.tensor([1.0, 2.0], dtype=torch.float64))
    assert torch.allclose(cov, torch.tensor([[4.16, 2.88], [2.88, 5.84]], dtype=torch.float64) / 3)
    mean, comps, var = B.pca(x, 2)
    assert torch.allclose(
        comps, torch.tensor([[0.6, 0.8], [0.8, -0.6]], dtype=torch.float64), atol=1e-12
    )
    assert torch.allclose(var, torch.tensor([8 / 3, 2 / 3], dtype=torch.float64))


def test_pca_method_stores_hand_computed_directions() -> None:
    x = torch.tensor([[2.2, 3.6], [-0.2, 0.4], [0.2, 2.6], [1.8, 1.4]])
    method = registry.build("pca", spec(2, 2))
    method.on_fit_start(unlabelled(x))
    head = method.head
    assert torch.allclose(head.mean, torch.tensor([1.0, 2.0]))
    assert torch.allclose(head.components, torch.tensor([[0.6, 0.8], [0.8, -0.6]]), atol=1e-6)
    r = head.rotation
    assert torch.allclose(r.T @ r, torch.eye(2), atol=1e-6)
    expected = ((x - head.mean) @ head.components) @ r
    assert torch.allclose(method(x), expected, atol=1e-6)


def test_random_orthogonal_is_orthogonal_and_seeded() -> None:
    r1 = B.random_orthogonal(12, torch.Generator().manual_seed(4))
    r2 = B.random_orthogonal(12, torch.Generator().manual_seed(4))
    assert torch.equal(r1, r2)
    assert torch.allclose(r1.T @ r1, torch.eye(12, dtype=torch.float64), atol=1e-12)


# ---- ITQ --------------------------------------------------------------------------------


def test_itq_rotation_is_orthogonal_and_loss_never_increases() -> None:
    x = anisotropic(800, 24, seed=0, offset=5.0)
    x = (
        x / x.std()
    )  # the loss is scale-dependent (‖VR‖² dominates it for large V); the codes are not
    method = registry.build("itq", spec(24, 16))
    method.on_fit_start(unlabelled(x))
    r = method.head.rotation
    assert torch.allclose(r.T @ r, torch.eye(16), atol=1e-5)
    hist = np.array(method.loss_history)
    assert len(hist) == method.config.iterations + 1
    assert np.all(np.diff(hist) <= 1e-9 * hist[0])
    assert hist[-1] < 0.95 * hist[0]  # the iterations do real work on correlated data
    # the history's last value is the loss of the codes the method actually outputs
    _, comps, _ = B.pca(x, 16)
    v = (x.double() - x.double().mean(0)) @ comps
    assert math.isclose(B.quantization_loss(v, r.double()), hist[-1], rel_tol=1e-4)


def test_itq_quantization_loss_beats_pca_rr() -> None:
    x = anisotropic(800, 24, seed=1)
    x = x / x.std()
    itq = registry.build("itq", spec(24, 12))
    pca = registry.build(
        "pca", spec(24, 12), B.PCARRConfig(seed=1)
    )  # not ITQ's own starting rotation
    train = unlabelled(x)
    itq.on_fit_start(train)
    pca.on_fit_start(train)
    assert torch.allclose(itq.head.components, pca.head.components)
    v = B._project_chunks(x, itq.head.mean.double(), itq.head.components.double())
    loss_itq = B.quantization_loss(v, itq.head.rotation)
    loss_pca = B.quantization_loss(v, pca.head.rotation)
    assert loss_itq < 0.95 * loss_pca


def test_itq_starts_from_pca_rr_with_the_same_seed() -> None:
    x = anisotropic(300, 10, seed=2)
    itq = registry.build("itq", spec(10, 8), B.ITQConfig(iterations=0, seed=3))
    pca = registry.build("pca", spec(10, 8), B.PCARRConfig(seed=3))
    itq.on_fit_start(unlabelled(x))
    pca.on_fit_start(unlabelled(x))
    assert torch.equal(itq.encode(x), pca.encode(x))


def test_itq_zero_iterations_is_random_rotation() -> None:
    x = anisotropic(300, 10, seed=2)
    method = registry.build("itq", spec(10, 8), B.ITQConfig(iterations=0, seed=3))
    method.on_fit_start(unlabelled(x))
    assert len(method.loss_history) == 1
    assert torch.allclose(
        method.head.rotation.double(),
        B.random_orthogonal(8, torch.Generator().manual_seed(3)),
        atol=1e-6,
    )


@pytest.mark.parametrize("name", ["itq", "pca"])
def test_more_bits_than_dimensions_is_a_clear_error(name: str) -> None:
    with pytest.raises(HashingError, match=r"n_bits=32 > embedding dimension 16"):
        registry.build(name, spec(16, 32))


@pytest.mark.parametrize("name", ["itq", "pca"])
def test_fewer_samples_than_bits_is_a_clear_error(name: str) -> None:
    method = registry.build(name, spec(16, 12))
    with pytest.raises(HashingError, match="too few"):
        method.on_fit_start(unlabelled(torch.randn(8, 16)))


@pytest.mark.parametrize("name", ["itq", "pca"])
def test_as_many_samples_as_bits_is_a_clear_error_not_a_null_space_bit(name: str) -> None:
    # 4 rows centred span 3 directions: a 4th principal component has training variance 0 and
    # eigh returns an arbitrary direction of the 5-dim null space for it (on unseen rows its
    # projection had std ~1, as large as a real component's), so 4 bits need 5 rows
    x = torch.randn(5, 8, generator=torch.Generator().manual_seed(0))
    _, _, var = B.pca(x[:4], 4)
    assert float(var[3]) < 1e-12 * float(var[0])  # the hand-derived rank bound
    method = registry.build(name, spec(8, 4))
    with pytest.raises(HashingError, match=r"4 training embeddings are too few.* at least 5"):
        method.on_fit_start(unlabelled(x[:4]))
    method.on_fit_start(unlabelled(x))  # n_bits + 1 rows: every component has variance > 0
    _, _, var = B.pca(x, 4)
    assert float(var.min()) > 1e-3 * float(var[0])


def test_negative_iterations_rejected() -> None:
    with pytest.raises(ValueError, match="iterations"):
        B.ITQConfig(iterations=-1)


# ---- PCA-RR -------------------------------------------------------------------------------


def test_pca_bits_are_balanced_on_centred_gaussian_data() -> None:
    x = anisotropic(4000, 20, seed=3, offset=-2.0)  # the offset is removed by the fitted mean
    method = registry.build("pca", spec(20, 16))
    method.on_fit_start(unlabelled(x))
    ones = method.encode(x).float().mean(dim=0)
    assert torch.all((ones > 0.46) & (ones < 0.54)), ones


def test_pca_rotation_depends_on_seed_only() -> None:
    a = registry.build("pca", spec(8, 8), B.PCARRConfig(seed=1), seed=0)
    b = registry.build("pca", spec(8, 8), B.PCARRConfig(seed=1), seed=7)
    c = registry.build("pca", spec(8, 8), B.PCARRConfig(seed=2), seed=0)
    assert torch.equal(a.head.rotation, b.head.rotation)
    assert not torch.equal(a.head.rotation, c.head.rotation)


# ---- LSH ----------------------------------------------------------------------------------


def test_lsh_same_seed_same_codes_other_seed_other_codes() -> None:
    x = anisotropic(200, 16, seed=4, offset=1.0)
    codes = []
    for seed, global_seed in [(0, 0), (0, 5), (1, 0)]:
        method = registry.build("lsh", spec(16, 32), B.LSHConfig(seed=seed), seed=global_seed)
        torch.manual_seed(global_seed + 100)  # the global RNG must not matter
        method.on_fit_start(unlabelled(x))
        codes.append(method.encode(x))
    assert torch.equal(codes[0], codes[1])
    assert not torch.equal(codes[0], codes[2])


@pytest.mark.parametrize("theta", [math.pi / 6, math.pi / 3, math.pi / 2, 2 * math.pi / 3])
def test_lsh_collision_probability_is_one_minus_theta_over_pi(theta: float) -> None:
    # Charikar 2002: Pr[bit(a) = bit(b)] = 1 - θ/π for hyperplanes through the origin.
    dim, bits = 8, 4096
    method = registry.build("lsh", spec(dim, bits), B.LSHConfig(center=False))
    a = torch.zeros(dim)
    a[0] = 1.0
    b = torch.zeros(dim)
    b[0], b[1] = math.cos(theta), math.sin(theta)
    codes = method.encode(torch.stack([a, b]) * 3.0)
    p = float((codes[0] == codes[1]).float().mean())
    assert abs(p - (1 - theta / math.pi)) < 0.03  # std of the estimate <= 0.008


def test_lsh_centres_on_the_training_mean() -> None:
    x = anisotropic(500, 12, seed=5, offset=50.0)  # far from the origin
    centred = registry.build("lsh", spec(12, 16))
    origin = registry.build("lsh", spec(12, 16), B.LSHConfig(center=False))
    centred.on_fit_start(unlabelled(x))
    origin.on_fit_start(unlabelled(x))
    assert torch.allclose(centred.head.mean, x.mean(0), atol=1e-3)
    assert torch.equal(origin.head.mean, torch.zeros(12))
    assert centred.encode(x).unique(dim=0).shape[0] > 10 * origin.encode(x).unique(dim=0).shape[0]


def test_encode_tables_table_zero_is_encode_and_independent_of_table_count() -> None:
    x = anisotropic(50, 10, seed=6)
    one = registry.build("lsh", spec(10, 12), B.LSHConfig(tables=1))
    four = registry.build("lsh", spec(10, 12), B.LSHConfig(tables=4))
    for m in (one, four):
        m.on_fit_start(unlabelled(x))
    t = four.encode_tables(x)
    assert t.shape == (4, 50, 12) and t.dtype == torch.bool
    assert torch.equal(t[0], four.encode(x))
    assert torch.equal(four.encode(x), one.encode(x))
    assert not torch.equal(t[0], t[1])


def test_lsh_tables_validated() -> None:
    with pytest.raises(ValueError, match="tables"):
        B.LSHConfig(tables=0)


# ---- through the trainer ------------------------------------------------------------------


@pytest.mark.parametrize("name", ["lsh", "itq", "pca"])
def test_fit_ignores_labels_and_reports_val_accuracy(name: str) -> None:
    g = np.random.default_rng(0)
    centers = g.normal(size=(3, 16)) * 4
    y = np.arange(150) % 3
    x = (centers[y] + g.normal(size=(150, 16))).astype(np.float32)
    data = EmbeddingSet.from_numpy(x, np.eye(3, dtype=np.float32)[y])
    method = registry.build(name, HeadSpec(in_dim=16, n_bits=12, n_classes=3))
    result = fit(
        method,
        data.subset(torch.arange(100)),
        data.subset(torch.arange(100, 150)),
        config=FitConfig(epochs=5, progress=False),
    )
    assert result.epochs_run == 0
    assert result.best_val_accuracy > 0.8  # well-separated clusters survive 12 bits
    assert list(method.parameters()) == []
    # a fresh instance loads the fitted buffers
    fresh = registry.build(name, HeadSpec(in_dim=16, n_bits=12, n_classes=3))
    fresh.load_state_dict(method.state_dict())
    assert torch.equal(fresh.encode(data.x), method.encode(data.x))
    assert (
        float(method.compute_loss(method(data.x[:4]), data.y[:4], torch.arange(4))["loss"]) == 0.0
    )
