"""LiRA membership inference: hand-computed likelihood ratios and margins, resolvable FPRs, chance on
a head that does not depend on its records, a wide margin on an overfit head (slow)."""

from __future__ import annotations

import dataclasses
import multiprocessing
import signal

import numpy as np
import pytest
from conftest import make_records

from hashers import registry as methods
from hashers.base import EmbeddingSet, HeadSpec
from hashers.trainer import FitConfig, fit
from privacy.base import CodeRelease
from privacy.errors import PrivacyError
from privacy.membership import (
    MembershipConfig,
    MembershipInference,
    code_margin,
    code_stability,
    lira_scores,
    roc_numbers,
    shadow_seeds,
    shadow_splits,
)


def test_lira_by_hand() -> None:
    # record 0: IN 1 (head 0), OUT 0 (head 1); record 1: IN 3 (head 1), OUT 1 (head 0)
    shadow = np.array([[1.0, 0.0], [1.0, 3.0]])
    in_mask = np.array([[True, False], [False, True]])
    # global sds: IN {1, 3} -> 1, OUT {0, 1} -> 0.5
    # r0: log N(1; 1, 1) - log N(1; 0, .5) = 0 - (-2 - log .5) = 2 - log 2
    # r1: log N(2; 3, 1) - log N(2; 1, .5) = -0.5 - (-2 - log .5) = 1.5 - log 2
    got = lira_scores(np.array([1.0, 2.0]), shadow, in_mask)
    assert got == pytest.approx([2 - np.log(2), 1.5 - np.log(2)])


def test_code_margin_by_hand() -> None:
    proto = np.array([[0, 0, 0, 0], [1, 1, 1, 1]], dtype=bool)
    codes = np.array([[0, 0, 0, 1], [0, 0, 0, 1], [1, 1, 1, 1]], dtype=bool)
    got = code_margin(codes, np.array([0, 1, 1]), proto, np.array([True, True]))
    assert got.tolist() == [0.5, -0.5, 1.0]  # (3-1)/4, (1-3)/4, (4-0)/4


def test_code_stability_by_hand() -> None:
    def encode(x):  # two bits: the signs of the two coordinates
        return x > 0

    x = np.array([[1.0, 0.1], [1.0, 1.0]])
    noise = np.array([[[0.0, -0.2], [0.0, -0.2]], [[0.0, 0.0], [-2.0, -2.0]]])
    # record 0: query 1 flips bit 2 (1 of 2 bits), query 2 none -> 1 - (0.5 + 0) / 2 = 0.75
    # record 1: query 1 none, query 2 flips both -> 1 - (0 + 1) / 2 = 0.5
    assert code_stability(encode, x, noise).tolist() == [0.75, 0.5]


def test_shadow_halves_are_complementary() -> None:
    mask = shadow_splits(11, 4, seed=0)
    assert (mask.sum(axis=1) == 2).all() and (mask[:, 0] == ~mask[:, 1]).all()
    assert mask[:, 0].sum() == 5  # a half of 11


def test_fpr_resolvability() -> None:
    member = np.r_[np.ones(100, bool), np.zeros(100, bool)]
    score = np.r_[np.arange(100) + 50.0, np.arange(100)]  # members 50..149, non-members 0..99
    out = roc_numbers(member, score)
    # 100 negatives resolve 1% (one false positive): threshold just above 98 admits only the
    # non-member 99 and the members 99..149 -> TPR 51/100
    assert out["tpr_at_fpr_1pct"] == pytest.approx(0.51)
    assert out["tpr_at_fpr_1pct_resolvable"] == 1.0 and out["tpr_at_fpr_0_1pct_resolvable"] == 0.0
    assert "tpr_at_fpr_0_1pct" not in out
    few = roc_numbers(member[:110], score[:110])  # 10 negatives
    assert few["tpr_at_fpr_1pct_resolvable"] == 0.0


def test_shadow_heads_at_least_two() -> None:
    with pytest.raises(PrivacyError, match="at least 2 shadow heads"):
        MembershipConfig(shadow_heads=1)


def _victims(recs):
    return {"train": recs["train"], "test": recs["test"]}


def _trained(name, train, val, *, spec, cfg, seed=0):
    head = methods.build(name, spec, seed=seed)
    fit(head, EmbeddingSet.from_numpy(train.x, train.y_multihot),
        EmbeddingSet.from_numpy(val.x, val.y_multihot), config=cfg)  # fmt: skip
    return head


@pytest.mark.parametrize("score", ["relaxed_margin", "code_stability", "code_margin"])
def test_head_independent_of_records_gives_chance(score: str) -> None:
    """LSH with fixed hyperplanes through the origin: codes do not depend on the training records.
    Tolerance: AUC within 0.12 of 0.5 (sd ~0.05 with 80 + 80 candidates)."""
    recs = make_records(n=(80, 60, 80), dim=16)
    spec = HeadSpec(in_dim=16, n_bits=32, n_classes=3)
    lsh_cfg = methods.get("lsh").Config(center=False)
    cfg = FitConfig(epochs=1, progress=False, val_queries=20)

    def make_head(seed):
        return methods.build("lsh", spec, lsh_cfg, seed=0)

    target = _trained("lsh", recs["train"], recs["val"], spec=spec, cfg=cfg)
    attack = MembershipInference(
        CodeRelease.from_head(target), MembershipConfig(shadow_heads=4, candidates=80, score=score),
        make_head=make_head, fit_config=cfg, n_classes=3,
    )  # fmt: skip
    out = attack.fit(recs["val"]).run(_victims(recs))
    assert abs(out["auc"] - 0.5) <= 0.12 and out["n_members"] == 80


def test_code_margin_is_refused_where_the_attacked_attribute_is_not_the_trained_class() -> None:
    """Multi-label sources attack a finding (maybe withheld from training), not a training class:
    class prototypes of it would measure nothing the head memorised."""
    recs = make_records(n=(40, 30, 40), dim=8)
    multi = dict(recs)
    for split in ("train", "test"):
        r = recs[split]
        yh = np.eye(3, dtype=np.float32)[r.y]
        yh[::2, 0] = 1.0  # a second finding on every other record
        multi[split] = dataclasses.replace(r, y_multihot=yh)
    spec = HeadSpec(in_dim=8, n_bits=16, n_classes=3)
    head = methods.build("lsh", spec, seed=0)
    attack = MembershipInference(
        CodeRelease.from_head(head), MembershipConfig(shadow_heads=2, candidates=20,
                                                      score="code_margin"),
        make_head=lambda seed: methods.build("lsh", spec, seed=0),
        fit_config=FitConfig(epochs=1, progress=False), n_classes=3,
    )  # fmt: skip
    with pytest.raises(PrivacyError, match=r"'code_margin' needs single-label training classes, "
                       r"but the train records'.*use attack.mi_score relaxed_margin"):  # fmt: skip
        attack.fit(recs["val"]).run(_victims(multi))
    # one-hot training labels but another attribute than the class: refused as well
    other = {s: dataclasses.replace(recs[s], y=(recs[s].y + 1) % 3) for s in ("train", "test")}
    with pytest.raises(PrivacyError, match="'code_margin' needs single-label training classes"):
        attack.run(_victims({**recs, **other}))
    # the attack stage asks every attack to check its inputs before it trains any: the wrong
    # score fails before an attack listed ahead of it spends its minutes (it used to fail only
    # when membership ran, after every other attack)
    from pipeline.attack import run_attacks
    from privacy.base import Attack

    trained: list[str] = []

    class Costly(Attack):
        name = "costly"

        def _fit(self, aux: object) -> None:
            trained.append(self.name)

        def run_group(self, victims: object) -> dict[str, float]:
            return {"x": 0.0}

    fresh = MembershipInference(
        CodeRelease.from_head(head), MembershipConfig(shadow_heads=2, candidates=20,
                                                      score="code_margin"),
        make_head=lambda seed: methods.build("lsh", spec, seed=0),
        fit_config=FitConfig(epochs=1, progress=False), n_classes=3,
    )  # fmt: skip
    costly = Costly(CodeRelease.from_head(head))
    with pytest.raises(PrivacyError, match="'code_margin' needs single-label training classes"):
        run_attacks([costly, fresh], recs["val"], _victims(multi))
    assert trained == []
    numbers, _, skipped = run_attacks([costly], recs["val"], _victims(multi))
    assert trained == ["costly"] and numbers["costly/train/x"] == 0.0 and not skipped


@pytest.mark.slow
@pytest.mark.parametrize("score", ["relaxed_margin", "code_stability"])
def test_overfit_head_on_tiny_train_set_leaks(score: str) -> None:
    """An overfit DPSH head: 40 records, 60% of them with a random label, the epoch selected on the
    training records themselves (and the shadow heads likewise). Members sit at their (noisy) label's
    prototype, far from the bit boundaries, non-members do not; only records whose label actually
    changed (~40%) carry the signal, so the AUC ceiling is below 1; 0.7 is 3 sd (40 + 40
    candidates) above 0.5. ``code_stability`` sees the codes only (measured 0.86; margin 0.93)."""
    recs = make_records(n=(40, 80, 40), dim=16, spread=0.7)
    rng = np.random.default_rng(1)
    for split in ("train", "test", "val"):
        r = recs[split]
        flip = rng.random(len(r)) < 0.6
        y = np.where(flip, rng.integers(0, 3, len(r)), r.y)
        object.__setattr__(r, "y", y)
        object.__setattr__(r, "y_multihot", np.eye(3, dtype=np.float32)[y])
    spec = HeadSpec(in_dim=16, n_bits=32, n_classes=3, hidden_dims=(256,), dropout=0.0)
    cfg = FitConfig(epochs=150, patience=150, batch_size=32, weight_decay=0.0, lr=3e-3,
                    val_queries=40, progress=False)  # fmt: skip
    target = _trained("dpsh", recs["train"], recs["train"], spec=spec, cfg=cfg)
    attack = MembershipInference(
        CodeRelease.from_head(target),
        MembershipConfig(shadow_heads=8, candidates=40, shadow_selection="in", score=score),
        make_head=lambda s: methods.build("dpsh", spec, seed=s), fit_config=cfg, n_classes=3,
    )  # fmt: skip
    out = attack.fit(recs["val"]).run(_victims(recs))
    assert out["auc"] >= 0.7


def test_shadow_scores_do_not_depend_on_the_worker_count() -> None:
    """Shadows trained in 2 forked processes give the same LiRA numbers as one after the other
    (each shadow is seeded on its own; fork hands the closure to the children)."""
    recs = make_records(n=(40, 40, 40), dim=8)
    spec = HeadSpec(in_dim=8, n_bits=16, n_classes=3, hidden_dims=(16,))
    cfg = FitConfig(epochs=3, batch_size=16, val_queries=20, progress=False)
    target = _trained("dpsh", recs["train"], recs["val"], spec=spec, cfg=cfg)

    def run(workers: int) -> dict[str, float]:
        attack = MembershipInference(
            CodeRelease.from_head(target),
            MembershipConfig(shadow_heads=4, candidates=30, workers=workers),
            make_head=lambda s: methods.build("dpsh", spec, seed=s), fit_config=cfg, n_classes=3,
        )  # fmt: skip
        return attack.fit(recs["val"]).run(_victims(recs))

    assert run(1) == run(2)


def test_map_shadows_keeps_order_and_runs_in_children() -> None:
    import os

    from privacy.membership import map_shadows

    parent = os.getpid()
    out = map_shadows(lambda i: np.array([i, os.getpid() != parent]), 5, 2)
    assert [int(r[0]) for r in out] == [0, 1, 2, 3, 4]
    assert all(bool(r[1]) for r in out)  # trained in forked children, not in this process
    assert [int(r[0]) for r in map_shadows(lambda i: np.array([i]), 3, 1)] == [0, 1, 2]
    with pytest.raises(PrivacyError, match="workers=0"):
        MembershipConfig(workers=0)


def _sigterm_is_default(i: int) -> np.ndarray:
    return np.array([signal.getsignal(signal.SIGTERM) is signal.SIG_DFL, i])


def test_shadow_workers_restore_default_sigterm() -> None:
    """Forked shadow workers must not inherit a stage's SIGTERM handler (pipeline.common raises
    an exception on SIGTERM); the pool stops its workers with SIGTERM, at its default action."""
    from privacy.membership import map_shadows

    previous = signal.signal(signal.SIGTERM, lambda *_: None)
    try:
        out = map_shadows(_sigterm_is_default, heads=4, workers=2)
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert [int(o[1]) for o in out] == [0, 1, 2, 3] and all(bool(o[0]) for o in out)
    assert not multiprocessing.active_children()  # closed and joined: no worker left behind


def _recording_lsh_attack(config: MembershipConfig, fit_config: FitConfig):
    """A membership attack on an LSH head whose shadow heads record the seeds they are built with
    (LSH codes do not depend on the records: only the plumbing is under test)."""
    spec = HeadSpec(in_dim=8, n_bits=16, n_classes=3)
    seeds: list[int] = []

    def make_head(seed):
        seeds.append(seed)
        return methods.build("lsh", spec, seed=0)

    attack = MembershipInference(
        CodeRelease.from_head(methods.build("lsh", spec, seed=0)), config,
        make_head=make_head, fit_config=fit_config, n_classes=3,
    )  # fmt: skip
    return attack, seeds


def test_shadow_halves_smaller_than_k_are_refused_before_any_shadow_trains() -> None:
    """10 aux records (the attack's minimum) and 1 candidate pair: each shadow trains on
    (10 + 2) // 2 = 6 rows, fewer than k = 7, and the trainer's "lower k" (which would change the
    target's own setup) came from inside a shadow; the attack now names its own two knobs."""
    recs = make_records(n=(40, 10, 40), dim=8)
    attack, trained = _recording_lsh_attack(
        MembershipConfig(shadow_heads=2, candidates=1), FitConfig(epochs=1, progress=False, k=7)
    )
    with pytest.raises(
        PrivacyError,
        match=r"^membership: each shadow head trains on half of the 10 aux records and 2 "
        r"candidates \(6 rows\), fewer than the k=7 .*raise attack.aux_size \(to at least 12\) "
        r"or attack.mi_candidates$",
    ):
        attack.fit(recs["val"]).run(_victims(recs))
    assert trained == []
    attack.config = MembershipConfig(shadow_heads=2, candidates=2)  # (10 + 4) // 2 = 7 rows: runs
    assert attack.run(_victims(recs))["n_members"] == 2


def test_no_shadow_shares_the_target_head_s_seed() -> None:
    """Shadows used attack.seed + 1 + i; with seed: 1 and attack.seed: 0, shadow 0 repeated the
    target's initialisation and batches. The target's seed is skipped; the default (target 0,
    attack 0: shadows 1..16) is unchanged."""
    assert shadow_seeds(1, 3, avoid=2) == [1, 3, 4]
    assert shadow_seeds(1, 3, avoid=0) == [1, 2, 3] == shadow_seeds(1, 3, avoid=None)
    recs = make_records(n=(40, 20, 40), dim=8)
    attack, used = _recording_lsh_attack(
        MembershipConfig(shadow_heads=3, candidates=10, workers=1),
        FitConfig(epochs=1, progress=False, seed=1),
    )
    attack.fit(recs["val"]).run(_victims(recs))
    assert sorted(used) == [2, 3, 4]  # attack seed 0: 1 would have been the target's


def test_tpr_baseline_is_what_a_membership_blind_score_reaches() -> None:
    """The TPR is read at the best threshold admitting j = floor(FPR * n_neg) non-members, which
    admits every member above the (j+1)-th highest non-member: a blind score reaches
    (j + 1) / (n_neg + 1) in expectation, not the FPR. 100 non-members at 1%: j = 1 -> 2/101
    (the baseline was 0.01, half of it); 1000 at 0.1%: 2/1001; 500 at 1%: 6/501."""
    member = np.r_[np.ones(100, bool), np.zeros(100, bool)]
    rng = np.random.default_rng(0)
    tprs = [roc_numbers(member, rng.random(200)) for _ in range(1000)]
    # Monte Carlo over blind scores: mean 0.0191 (sd of the mean ~0.0006) vs the old baseline 0.01
    mean = float(np.mean([t["tpr_at_fpr_1pct"] for t in tprs]))
    assert abs(mean - tprs[0]["tpr_at_fpr_1pct_baseline"]) <= 0.0015
    assert tprs[0]["tpr_at_fpr_1pct_baseline"] == pytest.approx(2 / 101)
    wide = roc_numbers(np.r_[np.ones(10, bool), np.zeros(1000, bool)], rng.random(1010))
    assert wide["tpr_at_fpr_0_1pct_baseline"] == pytest.approx(2 / 1001)

    from privacy.membership import blind_tpr_at_fpr

    assert blind_tpr_at_fpr(500, 0.01) == pytest.approx(6 / 501)
    assert blind_tpr_at_fpr(150, 0.01) == pytest.approx(2 / 151)
    assert blind_tpr_at_fpr(300, 0.01) == pytest.approx(4 / 301)  # 3/300 <= 0.01 exactly


def test_roc_numbers_reads_0_1_labels_like_bool() -> None:
    """``~`` on int labels is a bitwise not (1 -> -2, 0 -> -1): 100 non-members counted as -300,
    so the 1% TPR was silently left out as unresolvable."""
    member = np.r_[np.ones(100, bool), np.zeros(100, bool)]
    score = np.r_[np.arange(100) + 50.0, np.arange(100)]
    assert roc_numbers(member.astype(int), score) == roc_numbers(member, score)
    assert roc_numbers(member.astype(int), score)["tpr_at_fpr_1pct"] == pytest.approx(0.51)
    with pytest.raises(PrivacyError, match=r"is_member holds \[0, 2\]"):
        roc_numbers(member.astype(int) * 2, score)


def test_test_copies_of_training_images_are_not_counted_as_non_members() -> None:
    from privacy.membership import drop_training_copies

    recs = make_records(n=(80, 60, 80), dim=16)
    copies = np.zeros(80, dtype=bool)
    copies[[3, 7, 50]] = (
        True  # test rows whose image is a training image (extract's duplicate_rows)
    )
    x = recs["test"].x.copy()
    x[copies] = recs["train"].x[[0, 1, 2]]
    test = dataclasses.replace(recs["test"], x=x, train_copy=copies)
    kept, dropped = drop_training_copies(test)
    assert dropped == 3 and len(kept) == 77
    assert 3 not in kept.index and 50 not in kept.index and kept.train_copy.sum() == 0
    same, none = drop_training_copies(recs["test"])  # unknown (None): nothing dropped
    assert none == 0 and same is recs["test"]

    spec = HeadSpec(in_dim=16, n_bits=32, n_classes=3)
    lsh_cfg = methods.get("lsh").Config(center=False)
    cfg = FitConfig(epochs=1, progress=False, val_queries=20)
    target = _trained("lsh", recs["train"], recs["val"], spec=spec, cfg=cfg)
    attack = MembershipInference(
        CodeRelease.from_head(target), MembershipConfig(shadow_heads=2, candidates=80),
        make_head=lambda seed: methods.build("lsh", spec, lsh_cfg, seed=0), fit_config=cfg,
        n_classes=3,
    )  # fmt: skip
    out = attack.fit(recs["val"]).run({"train": recs["train"], "test": test})
    assert out["n_nonmembers"] == 77 and out["n_members"] == 77
    assert out["n_nonmembers_dropped_duplicates"] == 3
