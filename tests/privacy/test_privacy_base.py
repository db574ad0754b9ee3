"""The attack interface: record keys, aux/victim disjointness, tie-aware top-k, the registry contract."""

from __future__ import annotations

import re
from dataclasses import replace

import numpy as np
import pytest
from conftest import make_records

from privacy import registry
from privacy.base import FloatRelease, Records, check_disjoint, tie_aware_topk
from privacy.errors import PrivacyError
from privacy.perturb import noisy_embeddings


def test_tie_aware_topk_hand_case() -> None:
    dist = np.array([[0, 1, 1, 2], [1, 0, 0, 0]], dtype=float)
    # query 0: nothing closer, alone at its distance -> 1; query 1: 3 tied at 0 -> 1/3, 2/3, 1
    got = tie_aware_topk(dist, np.array([0, 1]), (1, 2, 3))
    assert got[1] == pytest.approx((1 + 1 / 3) / 2)
    assert got[2] == pytest.approx((1 + 2 / 3) / 2)
    assert got[3] == pytest.approx(1.0)
    # order-independent: permuting the gallery columns changes nothing
    perm = np.array([3, 1, 0, 2])
    inv = np.argsort(perm)
    assert tie_aware_topk(dist[:, perm], inv[[0, 1]], (1, 2)) == tie_aware_topk(
        dist, np.array([0, 1]), (1, 2)
    )


def test_aux_and_victims_disjoint_by_construction() -> None:
    recs = make_records(n=(20, 10, 10), dim=4)
    check_disjoint(recs["val"], {"train": recs["train"], "test": recs["test"]})  # fine
    with pytest.raises(PrivacyError, match="released split"):
        check_disjoint(recs["train"], {"test": recs["test"]})
    # a victim group that holds aux rows (same split, same row) is refused
    with pytest.raises(PrivacyError, match="also test victims"):
        check_disjoint(recs["val"], {"test": recs["val"].subset(np.array([3, 4]))})
    attack = registry.build("attribute", FloatRelease()).fit(recs["val"])
    with pytest.raises(PrivacyError, match="disjoint"):
        attack.run({"test": replace(recs["val"], split="val")})


def test_records_refuse_inconsistent_rows() -> None:
    with pytest.raises(PrivacyError, match="twice"):
        Records(split="val", index=np.array([0, 0]), x=np.zeros((2, 3)), y=np.zeros(2))
    with pytest.raises(PrivacyError, match="rows"):
        Records(split="val", index=np.array([0, 1]), x=np.zeros((3, 3)), y=np.zeros(2))


def test_unknown_attack_names_the_registered_ones() -> None:
    with pytest.raises(PrivacyError, match="registered: linkage, anonymity"):
        registry.get("linkge")


@pytest.mark.parametrize("name", registry.names())
def test_contract_every_attack(name: str) -> None:
    """fit(aux) -> run(victims) -> regular names, each attack with a baseline beside its numbers."""
    recs = make_records(n=(60, 40, 40), dim=8, images=True)
    victims = {
        s: replace(recs[s], reacquired={20.0: noisy_embeddings(recs[s].x, 20.0, seed=1)})
        for s in ("train", "test")
    }
    cfg = None
    if name == "linkage":
        from privacy.linkage import LinkageConfig

        cfg = LinkageConfig(strength=20.0)
    elif name in ("inversion", "reconstruction"):
        cfg = registry.get(name).Config(epochs=3)
    attack = registry.build(name, FloatRelease(), cfg, seed=0)
    if attack.skip_reason(recs["val"], victims):
        assert name == "membership"  # the float release has no trained head
        return
    out = attack.fit(recs["val"]).run(victims)
    assert out and all(re.fullmatch(r"[a-z0-9_/.]+", k) for k in out)
    assert any(k.endswith("_baseline") for k in out)
    assert all(np.isfinite(v) for v in out.values())


@pytest.mark.parametrize("holdout", [1.0, -0.2, 0.97, float("nan")])
def test_train_regressor_refuses_a_holdout_that_leaves_the_wrong_rows(holdout: float) -> None:
    """holdout -0.2 on 100 rows held out perm[:-20] (80 rows) and trained on the other 20;
    1.0 (and 0.97 of 10 rows, rounded to 10) trained on nothing and returned the initial model."""
    import torch

    from privacy._learn import mlp, train_regressor
    from privacy.inversion import InversionConfig

    n = 10 if holdout == 0.97 else 100
    x = np.random.default_rng(0).normal(size=(n, 4)).astype(np.float32)
    cfg = InversionConfig(epochs=2, holdout=holdout)
    with pytest.raises(PrivacyError, match="holdout="):
        train_regressor(
            mlp(4, 4, (8,)), x, x, loss_fn=torch.nn.functional.mse_loss, settings=cfg, seed=0
        )


def test_train_regressor_trains_on_the_rows_not_held_out() -> None:
    """holdout 0.2 of 100 rows: every training batch comes from the same 80 rows, the held-out
    loss from the other 20."""
    import torch

    from privacy._learn import mlp, train_regressor
    from privacy.inversion import InversionConfig

    x = np.arange(100, dtype=np.float32)[:, None].repeat(4, axis=1)
    seen_train: set[int] = set()
    seen_hold: set[int] = set()
    model = mlp(4, 4, (8,))

    def loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        rows = {int(v) for v in target[:, 0]}
        (seen_train if model.training else seen_hold).update(rows)
        return torch.nn.functional.mse_loss(pred, target)

    cfg = InversionConfig(epochs=2, holdout=0.2, batch_size=16)
    train_regressor(model, x, x, loss_fn=loss, settings=cfg, seed=0)
    assert len(seen_train) == 80 and len(seen_hold) == 20 and not seen_train & seen_hold
    with pytest.raises(PrivacyError, match="epochs=0"):
        train_regressor(model, x, x, loss_fn=loss, settings=InversionConfig(epochs=0), seed=0)


def test_a_mechanism_release_attacks_the_published_codes_never_the_clean_ones() -> None:
    from privacy.base import CodeRelease, MechanismRelease

    x = np.array([[1.0, -1.0], [-1.0, 1.0]], dtype=np.float32)
    head = CodeRelease(lambda v: v > 0, n_bits=2)
    flip = MechanismRelease(head, lambda b: ~b, name="rr")
    published = np.array([[False, False], [True, True]])
    victims = Records(split="test", index=np.arange(2), x=x, y=np.array([0, 1]), released=published)
    assert np.array_equal(flip.published(victims), published)
    assert np.array_equal(flip.attacker_codes(x), ~(x > 0))
    with pytest.raises(PrivacyError, match="release 'rr': the victim records carry no released"):
        flip.published(replace(victims, released=None))


def test_published_codes_that_are_not_bool_rows_are_refused() -> None:
    rec = make_records(n=(4, 4, 4), dim=3)["test"]
    bits = np.array([[0, 1], [1, 1], [0, 0], [1, 0]])
    with pytest.raises(
        PrivacyError, match=r"released codes must be bool \[N, K\].*got int64 \(4, 2\)"
    ):
        replace(rec, released=bits)
    with pytest.raises(PrivacyError, match=r"got bool \(4,\)"):
        replace(rec, released=np.ones(4, dtype=bool))
    assert replace(rec, released=bits.astype(bool)).released.sum() == 4


def test_published_codes_of_another_length_than_the_head_are_refused() -> None:
    from privacy.base import CodeRelease, MechanismRelease

    rec = make_records(n=(4, 4, 4), dim=3)["test"]
    head = CodeRelease(lambda v: v > 0, n_bits=3)
    twelve = replace(rec, released=np.zeros((4, 12), dtype=bool))
    for release in (head, MechanismRelease(head, lambda b: b, name="rr")):
        with pytest.raises(PrivacyError, match="the published codes have 12 bits, the head 3"):
            release.published(twelve)
        three = replace(rec, released=np.eye(4, 3, dtype=bool))
        assert np.array_equal(release.published(three), np.eye(4, 3, dtype=bool))
    assert np.array_equal(head.published(rec), rec.x > 0)  # no published codes: the head's own
