"""Memory-bank variants of DSH, DPSH and DSDH (the papers' online pairing with a stored ``U``)."""

from __future__ import annotations

import math

import pytest
import torch

from hashers import registry
from hashers.bank import CodeBank, pair_partners
from hashers.base import EmbeddingSet, HeadSpec
from hashers.dpsh import DPSHConfig
from hashers.dsdh import DSDHConfig
from hashers.dsh import DSHConfig
from hashers.trainer import FitConfig, fit
from pipeline.synthetic import gaussian_clusters
from retrieval.codes import pack_bits
from retrieval.knn import knn_float, knn_hamming
from retrieval.metrics import classification_metrics

BANKED = {
    "dsh": lambda **kw: DSHConfig(memory_bank=True, **kw),
    "dpsh": lambda **kw: DPSHConfig(memory_bank=True, **kw),
    "dsdh": lambda **kw: DSDHConfig(memory_bank=True, **kw),
}


def sp(x: float) -> float:
    return math.log1p(math.exp(x))


def clusters(n: int, *, seed: int) -> EmbeddingSet:
    return gaussian_clusters(n, seed=seed)


def spec(bits: int = 2, n_classes: int = 2, in_dim: int = 4) -> HeadSpec:
    return HeadSpec(in_dim=in_dim, n_bits=bits, n_classes=n_classes, hidden_dims=(8,), dropout=0.0)


# ---- the bank itself ------------------------------------------------------------------------


def test_bank_update_rows_and_sampling() -> None:
    bank = CodeBank(n_bits=3, n_classes=2)
    with pytest.raises(ValueError, match="reset"):
        bank.update(torch.tensor([0]), torch.ones(1, 3))
    bank.reset(torch.eye(2)[[0, 1, 0, 1, 0]])
    assert len(bank) == 5 and not bank.filled.any()
    bank.update(torch.tensor([1, 3]), torch.tensor([[1.0, 2, 3], [4, 5, 6]], requires_grad=True))
    assert torch.equal(bank.rows(), torch.tensor([1, 3]))
    assert not bank.codes.requires_grad
    assert torch.equal(bank.codes[3], torch.tensor([4.0, 5, 6]))
    assert bank.codes[0].abs().sum() == 0
    bank.update(torch.arange(5), torch.zeros(5, 3))
    torch.manual_seed(0)
    picked = bank.rows(3)
    assert picked.numel() == 3 and picked.unique().numel() == 3


def test_bank_config_validation() -> None:
    with pytest.raises(ValueError, match="bank_rows: 0"):
        DPSHConfig(memory_bank=True, bank_rows=0)


def test_empty_bank_falls_back_to_in_batch_pairs() -> None:
    bank = CodeBank(n_bits=2, n_classes=2)
    bank.reset(torch.eye(2)[[0, 1, 1]])
    u, y = torch.randn(2, 2), torch.eye(2)[[0, 1]]
    p = pair_partners(bank, u, y, torch.tensor([0, 1]), rows=None, update=False)
    assert p.in_batch and p.u is u


# ---- golden losses against the bank ----------------------------------------------------------


def test_dpsh_bank_loss_golden() -> None:
    m = registry.build("dpsh", spec(), BANKED["dpsh"](eta=0.0), seed=0)
    m.on_fit_start(EmbeddingSet(torch.zeros(3, 4), torch.eye(2)[[0, 1, 0]]))
    m.bank.update(torch.tensor([1, 2]), torch.tensor([[2.0, 0.0], [0.0, 2.0]]))
    m.train()
    u = torch.tensor([[1.0, 1.0]])  # row 0, label 0; written to the bank before pairing
    out = m.compute_loss(u, torch.eye(2)[[0]], torch.tensor([0]))
    # partners (rows 0, 1, 2): Θ = ½ u·U_j = 1, 1, 1; S = 1, 0, 1
    expected = ((sp(1.0) - 1.0) + sp(1.0) + (sp(1.0) - 1.0)) / 3
    assert math.isclose(float(out["likelihood"]), expected, rel_tol=1e-6)
    assert torch.equal(m.bank.codes[0], u[0])  # the batch row was refreshed
    assert m.bank.filled.all()


def test_dsh_bank_loss_skips_the_self_pair_golden() -> None:
    m = registry.build("dsh", spec(), BANKED["dsh"](alpha=0.0), seed=0)
    m.on_fit_start(EmbeddingSet(torch.zeros(3, 4), torch.eye(2)[[0, 0, 1]]))
    m.bank.update(torch.tensor([1, 2]), torch.tensor([[1.0, 0.0], [1.0, 1.0]]))
    m.train()
    u = torch.tensor([[0.0, 1.0]], requires_grad=True)
    out = m.compute_loss(u, torch.eye(2)[[0]], torch.tensor([0]))
    # margin 4. Pairs with rows 1 (similar, D = 2 -> 1) and 2 (dissimilar, D = 1 -> 1.5); no self pair
    assert math.isclose(float(out["contrastive"].detach()), (1.0 + 1.5) / 2, rel_tol=1e-6)
    out["loss"].backward()
    # one-sided gradient (bank fixed): d/du [½(‖u - a‖²) + ½(4 - ‖u - b‖²)] / 2 = ((u - a) - (u - b)) / 2
    a, b = torch.tensor([1.0, 0.0]), torch.tensor([1.0, 1.0])
    assert torch.allclose(u.grad[0], ((u.detach()[0] - a) - (u.detach()[0] - b)) / 2)


def test_dsdh_bank_pairs_with_stored_codes() -> None:
    m = registry.build("dsdh", spec(), BANKED["dsdh"](eta=0.0), seed=0)
    train = EmbeddingSet(torch.zeros(2, 4), torch.eye(2)[[0, 1]])
    m.on_fit_start(train)
    m.on_epoch_start(0, 1)
    m.bank.update(torch.tensor([1]), torch.tensor([[2.0, 2.0]]))
    m.train()
    u = torch.tensor([[1.0, 0.0]])
    out = m.compute_loss(u, torch.eye(2)[[0]], torch.tensor([0]))
    # partners: row 0 itself (Θ = ½, S = 1) and row 1 (Θ = 1, S = 0)
    expected = ((sp(0.5) - 0.5) + sp(1.0)) / 2
    assert math.isclose(float(out["likelihood"]), expected, rel_tol=1e-6)


# ---- training, determinism, state round trip -------------------------------------------------


@pytest.mark.parametrize("name", sorted(BANKED))
def test_banked_training_is_deterministic_and_round_trips(name: str, tmp_path) -> None:
    from pipeline.artifacts import load_head, save_head

    s = spec(bits=16, n_classes=5, in_dim=32)
    train, val = clusters(120, seed=1), clusters(40, seed=2)
    cfg = FitConfig(epochs=2, batch_size=32, patience=5, val_queries=40, progress=False, seed=3)
    runs = []
    for _ in range(2):
        m = registry.build(name, s, BANKED[name](bank_rows=50), seed=3)
        fit(m, train, val, config=cfg)
        runs.append(m)
    assert torch.equal(runs[0].encode(val.x), runs[1].encode(val.x))
    state = runs[1].state_dict()
    assert state["bank.codes"].shape == (120, 16) and bool(state["bank.filled"].all())
    assert "bank.labels" not in state  # labels come from the training set, never the head file
    save_head(tmp_path, state, {"method": name})
    loaded, _ = load_head(tmp_path)
    fresh = registry.build(name, s, BANKED[name](bank_rows=50), seed=99)
    fresh.load_state_dict(loaded)  # the empty bank is resized to the stored one
    assert torch.equal(fresh.bank.codes, runs[1].bank.codes)
    assert torch.equal(fresh.encode(val.x), runs[1].encode(val.x))


@pytest.mark.parametrize("name", sorted(BANKED))
def test_banked_codes_keep_float_knn_accuracy(name: str, one_thread) -> None:
    train, val, test = clusters(600, seed=1), clusters(150, seed=2), clusters(300, seed=3)
    ytr, yte = train.y.argmax(1).numpy(), test.y.argmax(1).numpy()
    float_acc = classification_metrics(
        yte, knn_float(test.x.numpy(), train.x.numpy(), ytr, [7])[7]
    )["accuracy"]
    s = HeadSpec(in_dim=32, n_bits=16, n_classes=5, hidden_dims=(64,), dropout=0.0)
    m = registry.build(name, s, BANKED[name](), seed=0)
    fit(m, train, val, config=FitConfig(epochs=12, batch_size=128, patience=12, progress=False))
    pred = knn_hamming(pack_bits(m.encode(test.x)), pack_bits(m.encode(train.x)), 16, ytr, [7])[7]
    acc = classification_metrics(yte, pred)["accuracy"]
    assert float_acc > 0.9
    assert acc >= 0.95 * float_acc, f"{name}+bank: Hamming KNN {acc:.3f} vs float {float_acc:.3f}"
