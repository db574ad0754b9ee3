"""Contract tests run over every registered hashing method (ARCHITECTURE.md §7)."""

from __future__ import annotations

import dataclasses
import functools
import re

import pytest
import torch

from hashers import functional, registry
from hashers.base import Batch, EmbeddingSet, HashingError, HashingMethod, HeadSpec
from hashers.trainer import FitConfig, fit
from pipeline.synthetic import gaussian_clusters

METHODS = registry.names()
N_CLASSES, DIM, BITS = 3, 16, 16


def clusters(n: int, *, seed: int, dim: int = DIM) -> EmbeddingSet:
    return gaussian_clusters(n, seed=seed, dim=dim, n_classes=N_CLASSES, spread=3.0)


def spec(bits: int = BITS) -> HeadSpec:
    return HeadSpec(in_dim=DIM, n_bits=bits, n_classes=N_CLASSES, hidden_dims=(32,), dropout=0.0)


def ready(name: str, *, bits: int = BITS, seed: int = 0) -> tuple[HashingMethod, EmbeddingSet]:
    method = registry.build(name, spec(bits), seed=seed)
    train = clusters(60, seed=1)
    torch.manual_seed(seed)
    method.on_fit_start(train)
    method.on_epoch_start(0, 2)
    return method, train


@pytest.mark.parametrize("name", METHODS)
def test_declares_contract_attributes(name: str) -> None:
    cls = registry.get(name)
    assert cls.name == name
    assert dataclasses.is_dataclass(cls.Config)
    assert cls.Config.__dataclass_params__.frozen
    assert isinstance(cls.per_sample_loss, bool)
    doc = cls.__doc__ or ""
    assert re.search(r"\b(19|20)\d\d\b", doc), (
        f"{name}: the class docstring must cite its paper (with year)"
    )
    assert "deviation" in doc.lower(), (
        f"{name}: the class docstring must state deviations for frozen embeddings"
    )


@pytest.mark.parametrize("name", METHODS)
def test_forward_shape_and_encode(name: str) -> None:
    method, train = ready(name)
    u = method(train.x[:5])
    assert u.shape == (5, BITS)
    codes = method.encode(train.x[:5])
    assert codes.dtype == torch.bool and codes.shape == (5, BITS)


@pytest.mark.parametrize("name", [n for n in METHODS if registry.get(n).trainable])
@pytest.mark.parametrize("batch", [8, 1])
def test_finite_loss_and_gradients_reach_head(name: str, batch: int) -> None:
    method, train = ready(name)
    method.train()
    idx = torch.arange(batch)
    u = method(train.x[idx])
    terms = method.compute_loss(u, train.y[idx], idx)
    assert "loss" in terms
    assert all(torch.isfinite(v).all() for v in terms.values())
    terms["loss"].backward()
    grads = [p.grad for p in method.head.parameters() if p.grad is not None]
    assert (grads and any(float(g.abs().sum()) > 0 for g in grads)) or batch == 1


@pytest.mark.parametrize("name", [n for n in METHODS if registry.get(n).trainable])
def test_training_step_runs(name: str) -> None:
    method, train = ready(name)
    opt = torch.optim.Adam(method.parameters(), lr=1e-3)
    idx = torch.arange(12)
    before = [p.detach().clone() for p in method.head.parameters()]
    out = method.training_step(Batch(train.x[idx], train.y[idx], idx), opt)
    assert "loss" in out and all(torch.isfinite(torch.as_tensor(v)).all() for v in out.values())
    # a step: the optimiser moved the head (a step that skipped optimizer.step() would not)
    assert any(not torch.equal(b, p) for b, p in zip(before, method.head.parameters(), strict=True))


@pytest.mark.parametrize("name", [n for n in METHODS if registry.get(n).trainable])
def test_per_sample_loss_is_declared_truthfully(name: str) -> None:
    """Perturb sample j: per-sample losses leave the other samples' gradients unchanged."""
    method, train = ready(name)
    method.eval()
    idx = torch.arange(9)
    with torch.no_grad():
        u0 = method(train.x[idx])

    def grad_wrt_u(u: torch.Tensor) -> torch.Tensor:
        u = u.clone().requires_grad_(True)
        torch.manual_seed(0)
        (g,) = torch.autograd.grad(method.compute_loss(u, train.y[idx], idx)["loss"], u)
        return g

    g1 = grad_wrt_u(u0)
    u_pert = u0.clone()
    u_pert[0] = u_pert[0] + 0.7 * torch.randn(BITS, generator=torch.Generator().manual_seed(5))
    g2 = grad_wrt_u(u_pert)
    others_unchanged = torch.allclose(g1[1:], g2[1:], atol=1e-7)
    assert others_unchanged == registry.get(name).per_sample_loss


@pytest.mark.parametrize("name", METHODS)
def test_same_seed_same_codes_and_state_round_trip(name: str, tmp_path) -> None:
    from pipeline.artifacts import load_head, save_head

    train, val = clusters(90, seed=1), clusters(30, seed=2)
    cfg = FitConfig(epochs=2, batch_size=32, patience=5, val_queries=30, progress=False, seed=3)
    codes = []
    for _ in range(2):
        method = registry.build(name, spec(), seed=3)
        fit(method, train, val, config=cfg)
        codes.append(method.encode(val.x))
    assert torch.equal(codes[0], codes[1])
    save_head(tmp_path, method.state_dict(), {"method": name})
    state, _ = load_head(tmp_path)
    fresh = registry.build(name, spec(), seed=99)
    fresh.load_state_dict(state)
    assert torch.equal(fresh.encode(val.x), codes[1])


def test_build_seeds_and_restores_only_the_cpu_generator(monkeypatch: pytest.MonkeyPatch) -> None:
    """build() ran torch.manual_seed, which also (re)seeds every CUDA generator and fork_rng(devices=[])
    does not restore those: building a head reset a caller's GPU random stream. Now only the CPU
    generator is seeded, and it is restored afterwards."""
    seeded: list[int] = []
    monkeypatch.setattr(torch.cuda, "manual_seed_all", lambda s: seeded.append(s))
    before = torch.random.get_rng_state()
    a = registry.build(METHODS[0], spec(), seed=7).state_dict()
    b = registry.build(METHODS[0], spec(), seed=7).state_dict()
    assert seeded == []
    assert torch.equal(torch.random.get_rng_state(), before)
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("name", [n for n in METHODS if registry.get(n).supervised])
def test_single_class_training_set_is_rejected(name: str) -> None:
    method = registry.build(name, spec(), seed=0)
    x = torch.randn(20, DIM)
    y = torch.zeros(20, N_CLASSES)
    y[:, 0] = 1
    with pytest.raises(HashingError, match="single class"):
        fit(
            method,
            EmbeddingSet(x, y),
            EmbeddingSet(x, y),
            config=FitConfig(epochs=1, progress=False),
        )


@pytest.mark.parametrize("name", METHODS)
def test_dimension_mismatch_is_rejected(name: str) -> None:
    method = registry.build(name, spec(), seed=0)
    data = clusters(30, seed=0, dim=DIM + 1)
    message = rf"^{name}: embeddings have dimension {DIM + 1} but the head expects {DIM}; "
    with pytest.raises(HashingError, match=message):
        fit(method, data, data, config=FitConfig(epochs=1, progress=False))


@pytest.mark.parametrize("name", [n for n in METHODS if registry.get(n).supervised])
def test_quality_on_separable_clusters(name: str) -> None:
    """Every supervised method's 16-bit codes keep >= 95 % of the float KNN accuracy."""
    from retrieval.codes import pack_bits
    from retrieval.knn import knn_float, knn_hamming
    from retrieval.metrics import classification_metrics

    def noisy(n: int, seed: int) -> EmbeddingSet:
        return gaussian_clusters(n, seed=seed, spread=0.9, center_seed=7)

    train, val, test = noisy(600, 1), noisy(150, 2), noisy(300, 3)
    y_tr, y_te = train.y.argmax(1).numpy(), test.y.argmax(1).numpy()
    float_acc = classification_metrics(
        y_te, knn_float(test.x.numpy(), train.x.numpy(), y_tr, [7])[7]
    )["accuracy"]
    method = registry.build(
        name, HeadSpec(in_dim=32, n_bits=16, n_classes=5, hidden_dims=(64,)), seed=0
    )
    fit(method, train, val, config=FitConfig(epochs=15, batch_size=64, patience=15, progress=False))
    pred = knn_hamming(
        pack_bits(method.encode(test.x)), pack_bits(method.encode(train.x)), 16, y_tr, [7]
    )[7]
    acc = classification_metrics(y_te, pred)["accuracy"]
    assert float_acc > 0.8, float_acc  # the task is learnable but not trivial
    assert acc >= 0.95 * float_acc, (acc, float_acc)


@pytest.mark.parametrize("name", [n for n in METHODS if registry.get(n).trainable])
def test_standardizing_head_ignores_a_shared_input_offset(name: str, tmp_path) -> None:
    """With ``standardize`` every trained head carries an input standardiser whose statistics
    travel with the saved state, and every loss sees the input only as the standardiser gives it
    (SAEH's reconstruction target and DSH-GAN's discriminator included): training on ``x + v``
    (one vector added to every row) gives the codes of training on ``x``."""
    from hashers.heads import InputStandardizer
    from pipeline.artifacts import load_head, save_head

    train, val = clusters(90, seed=1), clusters(30, seed=2)
    shift = 4.0 * torch.randn(DIM, generator=torch.Generator().manual_seed(7))
    cfg = FitConfig(epochs=2, batch_size=32, patience=5, val_queries=30, progress=False, seed=3)
    sspec = dataclasses.replace(spec(), standardize=True)
    codes = []
    for v in (torch.zeros(DIM), shift):
        method = registry.build(name, sspec, seed=3)
        moved = [EmbeddingSet(s.x + v, s.y) for s in (train, val)]
        fit(method, *moved, config=cfg)
        assert any(isinstance(m, InputStandardizer) for m in method.modules())
        codes.append(method.encode(moved[1].x))
    assert (codes[0] == codes[1]).float().mean() >= 0.99
    save_head(tmp_path, method.state_dict(), {"method": name})
    fresh = registry.build(name, sspec, seed=99)
    fresh.load_state_dict(load_head(tmp_path)[0])
    assert torch.equal(fresh.encode(val.x + shift), codes[1])


@pytest.mark.parametrize("name", [n for n in METHODS if registry.get(n).trainable])
def test_the_geometry_term_joins_every_trainable_methods_loss(name: str) -> None:
    """With the neighbourhood term installed (as the trainer does when ``FitConfig.geometry > 0``),
    the step's loss is the method's own plus ``weight × neighbourhood_loss(u, x)``, whatever hook
    the method overrides (SAEH's batch loss, DSH-GAN's alternating step)."""
    method, train = ready(name)
    method.eval()  # no dropout: both passes see the same u
    idx = torch.arange(12)
    batch = Batch(train.x[idx], train.y[idx], idx)
    with torch.no_grad():
        torch.manual_seed(3)
        own = method.batch_loss(batch)
        method.geometry_term = functools.partial(functional.neighbourhood_loss, perplexity=5.0)
        method.geometry_weight = 2.5
        torch.manual_seed(3)
        both = method.batch_loss(batch)
        g = functional.neighbourhood_loss(method(batch.x), batch.x, 5.0)
    assert float(both["geometry"]) == pytest.approx(float(g), rel=1e-5)
    assert float(both["loss"]) == pytest.approx(float(own["loss"]) + 2.5 * float(g), rel=1e-5)
    opt = torch.optim.Adam(method.parameters(), lr=1e-3)
    out = method.training_step(batch, opt)
    assert "geometry" in out and bool(torch.isfinite(out["geometry"]))


@pytest.mark.parametrize("value", [float("nan"), -1.0, 2.0, 0.5])
def test_labels_other_than_0_and_1_are_refused_naming_the_entry(value: float) -> None:
    """NaN, -1, 2 in the multi-hot labels were accepted: CSQ built a target of 0.5 from them,
    TCL blamed the learning rate."""
    y = torch.eye(3)[[0, 1, 2, 0]]
    y[1, 2] = value
    with pytest.raises(
        HashingError,
        match=rf"multi-hot 0/1, but y\[1, 2\] = {re.escape(str(value))} \(row 1, class column 2;"
        r".*encode each label as 1 \(present\) or 0 \(absent\)",
    ):
        EmbeddingSet(torch.zeros(4, DIM), y)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bool, torch.int64])
def test_bool_int_and_float_0_1_labels_pass(dtype: torch.dtype) -> None:
    y = torch.tensor([[1, 0, 0], [0, 1, 1], [0, 0, 0]]).to(dtype)  # multi-label, and no label
    assert EmbeddingSet(torch.zeros(3, DIM), y).n_classes == 3


def test_an_unavailable_gpu_index_is_an_error_naming_the_key(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``cuda:1`` (and ``mps:0``) passed as available whatever the box held: only the bare
    names were checked, so the fit failed later inside torch (CPU-only build: an AssertionError
    'Torch not compiled with CUDA enabled') instead of naming the setting."""
    from hashers.devices import resolve_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu")
    for name in ("cuda", "cuda:1", "mps:0"):
        with pytest.raises(HashingError, match=rf"train\.device: {name} is not available here"):
            resolve_device(name)
    # one GPU: cuda and cuda:0 name it, cuda:1 names a GPU that is not there
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert resolve_device("cuda:0") == torch.device("cuda:0")
    assert resolve_device("cuda") == torch.device("cuda")
    with pytest.raises(HashingError, match=r"backbone\.device: cuda:1 is not available here"):
        resolve_device("cuda:1", key="backbone.device")


@pytest.mark.parametrize(
    ("hidden", "dropout", "message"),
    [
        ((0,), 0.0, r"hidden_dims\[0\]=0"),
        ((32, -1), 0.0, r"hidden_dims\[1\]=-1"),
        ((32,), 1.0, r"dropout=1.0"),
        ((32,), float("nan"), r"dropout=nan"),
    ],
)
def test_head_spec_refuses_a_head_that_cannot_learn(
    hidden: tuple[int, ...], dropout: float, message: str
) -> None:
    """hidden_dims=(0,) built a head whose output is its bias: DPSH trained 3 epochs without an
    error and gave all 60 records one code; dropout 1 zeroed every hidden unit in training."""
    with pytest.raises(HashingError, match=message):
        HeadSpec(in_dim=DIM, n_bits=BITS, n_classes=N_CLASSES, hidden_dims=hidden, dropout=dropout)
    assert HeadSpec(in_dim=DIM, n_bits=BITS, n_classes=N_CLASSES, hidden_dims=()).hidden_dims == ()
