"""The training loop's selection scores, hand-computed, and its configuration checks."""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import pytest
import torch
from torch import nn

from hashers import functional, registry
from hashers.base import EmbeddingSet, HashingError, HashingMethod, HeadSpec
from hashers.trainer import EpochSelector, FitConfig, fit, val_scores
from pipeline.synthetic import gaussian_clusters


@dataclass(frozen=True, kw_only=True)
class _NoConfig:
    pass


class _Identity(HashingMethod):
    """Identity 'head' (test stub, 2024): codes are the signs of the inputs. Deviations: none."""

    name = "identity-stub"
    Config = _NoConfig

    def build_head(self) -> nn.Module:
        return nn.Identity()

    def compute_loss(self, u, y, idx):  # pragma: no cover - unused
        return {"loss": u.sum() * 0}


def _two_query_scores() -> dict[str, float]:
    """Selection scores (k = 2) of the identity head on a hand-made 8-bit database: two items of
    class 0 at query 0's code, one of class 1 one bit away (query 1's code)."""
    db_x = torch.tensor([[1.0] * 8, [1.0] * 8, [-1.0] + [1.0] * 7])
    db_y = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    val_x = torch.tensor([[1.0] * 8, [-1.0] + [1.0] * 7])
    val_y = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    method = _Identity(HeadSpec(in_dim=8, n_bits=8, n_classes=2))
    return val_scores(method, EmbeddingSet(db_x, db_y), EmbeddingSet(val_x, val_y), k=2)


def test_val_scores_hand_computed() -> None:
    s = _two_query_scores()
    # query 0: nearest two are both class 0 -> correct, share 1.0
    # query 1: nearest is the class-1 item (d=0), then two class-0 items tie at d=1 sharing 1 vote
    #          -> votes class1 = 1, class0 = 1 -> tie goes to class 0 (wrong), share 0.5
    assert s["val_accuracy"] == pytest.approx(0.5)
    assert s["val_soft_accuracy"] == pytest.approx((1.0 + 0.5) / 2)


def test_selection_must_be_known() -> None:
    with pytest.raises(HashingError, match="selection='loss'"):
        FitConfig(selection="loss")


def test_step_budget_caps_epochs_hand_computed() -> None:
    cfg = FitConfig(epochs=60, batch_size=256, max_steps=2000)
    assert cfg.epoch_budget(90_000) == 5  # ceil(90000 / 256) = 352 steps; 2000 // 352 = 5
    assert (
        FitConfig(epochs=60, batch_size=256, max_steps=1200).epoch_budget(89_996) == 3
    )  # PathMNIST
    assert cfg.epoch_budget(546) == 60  # 3 steps per epoch: the budget never binds
    assert cfg.epoch_budget(10_000_000) == 1  # one epoch is over budget: still one pass
    assert FitConfig(epochs=60, batch_size=256).epoch_budget(10_000_000) == 60  # no budget
    # a lone last row is folded away: 513 rows at batch 256 are 2 steps, not 3
    assert FitConfig(epochs=60, batch_size=256, max_steps=4).epoch_budget(513) == 2
    with pytest.raises(HashingError, match="max_steps=0"):
        FitConfig(max_steps=0)


def test_fit_runs_the_budgeted_epochs_and_schedules_on_them() -> None:
    from hashers.trainer import fit

    seen: list[tuple[int, int]] = []

    class _Recorder(HashingMethod):
        """Linear head (test stub, 2024) recording its epoch schedule. Deviations: none."""

        name = "recorder-stub"
        Config = _NoConfig

        def on_epoch_start(self, epoch: int, n_epochs: int) -> None:
            seen.append((epoch, n_epochs))

        def compute_loss(self, u, y, idx):
            return {"loss": (u - 1).pow(2).mean()}

    g = torch.Generator().manual_seed(0)
    x = torch.randn(100, 4, generator=g)
    y = torch.eye(2)[torch.arange(100) % 2]
    data = EmbeddingSet(x, y)
    method = _Recorder(HeadSpec(in_dim=4, n_bits=8, n_classes=2, hidden_dims=(8,)))
    cfg = FitConfig(epochs=10, batch_size=10, max_steps=25, patience=50, progress=False)
    result = fit(method, data, data, config=cfg)
    assert result.epochs_run == 2  # 10 steps per epoch, 25 // 10 = 2
    assert seen == [(0, 2), (1, 2)]  # continuation schedules see the budgeted epoch count


def test_cpu_training_runs_deterministic_kernels_and_restores_the_setting() -> None:
    from hashers.trainer import fit

    flags: list[bool] = []

    class _Spy(HashingMethod):
        """Linear head (test stub, 2024) recording torch's determinism flag. Deviations: none."""

        name = "spy-stub"
        Config = _NoConfig

        def compute_loss(self, u, y, idx):
            flags.append(torch.are_deterministic_algorithms_enabled())
            return {"loss": (u[idx.argsort()] - 1).pow(2).mean()}  # indexed: index_put_ backward

    data = EmbeddingSet(torch.randn(40, 4), torch.eye(2)[torch.arange(40) % 2])
    assert not torch.are_deterministic_algorithms_enabled()
    method = _Spy(HeadSpec(in_dim=4, n_bits=8, n_classes=2, hidden_dims=(8,)))
    fit(method, data, data, config=FitConfig(epochs=2, batch_size=10, progress=False))
    assert flags and all(flags)
    assert not torch.are_deterministic_algorithms_enabled()  # restored for the caller


# ---- class-balanced selection ------------------------------------------------------------------
def test_vote_share_scores_hand_computed_single_label() -> None:
    from hashers.trainer import vote_share_scores

    # 3 queries of class 0, 1 of class 1; shares [class 0, class 1]
    shares = np.array([[0.8, 0.2], [0.6, 0.4], [1.0, 0.0], [0.6, 0.4]])
    y = np.eye(2)[[0, 0, 0, 1]]
    s = vote_share_scores(shares, y, multilabel=False)
    # predictions 0, 0, 0, 0: 3 of 4 right; recalls 1 (class 0) and 0 (class 1)
    assert s["val_accuracy"] == pytest.approx(0.75)
    assert s["val_balanced_accuracy"] == pytest.approx(0.5)
    # true-label shares 0.8, 0.6, 1.0 | 0.4: mean 2.8 / 4; per class (2.4 / 3 + 0.4) / 2
    assert s["val_soft_accuracy"] == pytest.approx(0.7)
    assert s["val_balanced_soft_accuracy"] == pytest.approx(0.6)


def test_vote_share_scores_hand_computed_multilabel() -> None:
    from hashers.trainer import vote_share_scores

    # 2 labels, 3 queries. label 0: positives q0, q1 (shares 0.9, 0.4), negative q2 (share 0.2)
    # label 1: positive q2 (share 0.6), negatives q0, q1 (shares 0.0, 0.7)
    shares = np.array([[0.9, 0.0], [0.4, 0.7], [0.2, 0.6]])
    y = np.array([[1, 0], [1, 0], [0, 1]])
    s = vote_share_scores(shares, y, multilabel=True)
    # predictions (> 0.5): [1,0], [0,1], [0,1] -> exact matches q0, q2
    assert s["val_accuracy"] == pytest.approx(2 / 3)
    # label 0: TPR 1/2, TNR 1 -> 0.75; label 1: TPR 1, TNR 1/2 -> 0.75
    assert s["val_balanced_accuracy"] == pytest.approx(0.75)
    # label 0: (mean(0.9, 0.4) + (1 - 0.2)) / 2 = (0.65 + 0.8) / 2 = 0.725
    # label 1: (0.6 + mean(1.0, 0.3)) / 2 = (0.6 + 0.65) / 2 = 0.625
    assert s["val_balanced_soft_accuracy"] == pytest.approx((0.725 + 0.625) / 2)


def test_ranked_votes_and_balanced_map_hand_computed() -> None:
    from hashers.trainer import class_balanced_mean, ranked_votes
    from retrieval.codes import pack_bits

    # 2-bit codes. database: 00 (class 0), 00 (class 1), 11 (class 0)
    db = pack_bits(torch.tensor([[False, False], [False, False], [True, True]]))
    y_db = np.eye(2)[[0, 1, 0]]
    q = pack_bits(torch.tensor([[False, False], [True, True], [True, True]]))
    y_q = np.eye(2)[[0, 1, 0]]
    # q0 (00, class 0): d = 0, 0, 2. Tie {rel, irr} at d=0, then rel: orders [r, i, r] -> AP
    #   (1 + 2/3) / 2 = 5/6, [i, r, r] -> (1/2 + 2/3) / 2 = 7/12; expected 17/24
    # q1 (11, class 1): d = 2, 2, 0. irr at d=0, tie {irr, rel} at d=2: P = 1/2 or 1/3 -> 5/12
    # q2 (11, class 0): rel at d=0 (P = 1), tie {rel, irr}: P = 2/2 or 2/3 -> (1 + 5/6) / 2 = 11/12
    # k = 1 votes: q0 splits its vote over the tie at d=0 (1/2, 1/2); q1, q2 vote class 0 (item 3)
    for multilabel in (False, True):  # one-hot read as multi-label: relevant = a shared label
        votes, pred, ap = ranked_votes(q, db, 2, y_q, y_db, k=1, multilabel=multilabel)
        np.testing.assert_allclose(ap, [17 / 24, 5 / 12, 11 / 12])
        np.testing.assert_allclose(votes, [[0.5, 0.5], [1.0, 0.0], [1.0, 0.0]])
        # decided as the KNN stage decides: a tie goes to the lowest class; a label needs > 1/2
        if multilabel:
            assert pred.tolist() == [[False, False], [True, False], [True, False]]
        else:
            assert pred.tolist() == [0, 0, 0]
        # class 0: (17/24 + 22/24) / 2 = 39/48; class 1: 20/48 -> balanced (39 + 20) / 96
        assert class_balanced_mean(ap, y_q) == pytest.approx(59 / 96)
    # the plain mean would be 49/72: the per-class average is what balances it
    assert float(ap.mean()) == pytest.approx(49 / 72)


def test_ranked_votes_keep_every_class_when_the_database_lacks_the_last_one() -> None:
    from hashers.trainer import ranked_votes
    from retrieval.codes import pack_bits

    # the selection database (a subset of train) can miss a rare class: votes stay [Q, C]
    db = pack_bits(torch.tensor([[False, False], [True, True]]))
    y_db = np.eye(3)[[0, 1]]  # class 2 absent
    q = pack_bits(torch.tensor([[False, False]]))
    votes, _, ap = ranked_votes(q, db, 2, np.eye(3)[[2]], y_db, k=1, multilabel=False)
    np.testing.assert_allclose(votes, [[1.0, 0.0, 0.0]])
    np.testing.assert_allclose(ap, [0.0])  # nothing relevant in the database


def test_val_scores_decide_exact_vote_ties_as_the_knn_stage_does() -> None:
    from retrieval.knn import knn_hamming

    # k = 7; query code 00000000. One class-1 item at distance 0; 30 items at distance 1:
    # 14 of class 0, 9 of class 1, one each of classes 2..8. Votes: class 0 14·6/30 = 2.8,
    # class 1 1 + 9·6/30 = 2.8, an exact tie that the KNN stage gives to class 0 (the lower id);
    # in float32 class 1 comes out 2.8000002
    near = [-1.0] * 8
    one_off = [1.0] + [-1.0] * 7
    labels = [1] + [0] * 14 + [1] * 9 + list(range(2, 9))
    db_x = torch.tensor([near] + [one_off] * 30)
    db_y = torch.eye(9)[labels]
    method = _Identity(HeadSpec(in_dim=8, n_bits=8, n_classes=9))
    val = EmbeddingSet(torch.tensor([near]), torch.eye(9)[[0]])
    codes = np.packbits(db_x.numpy() > 0, axis=1, bitorder="little")
    query = np.packbits(val.x.numpy() > 0, axis=1, bitorder="little")
    assert knn_hamming(query, codes, 8, np.array(labels), [7])[7].tolist() == [0]
    s = val_scores(method, EmbeddingSet(db_x, db_y), val, k=7)
    assert s["val_accuracy"] == 1.0 and s["val_balanced_accuracy"] == 1.0


def test_val_scores_read_multilabel_from_the_spec_not_from_the_rows() -> None:
    # a multi-label set whose rows hold at most one label each: query 0 (label 0) has only
    # unlabelled rows near it -> predicted no label -> exact match fails; query 1 (label 1) is
    # right. Read as single-label, the unlabelled rows would vote for class 0 and both be right.
    a, b, c = [1.0] * 4, [-1.0] * 4, [1.0, -1.0, 1.0, -1.0]
    db_x = torch.tensor([a] * 8 + [b] * 8 + [c] * 8)
    db_y = torch.tensor([[0.0, 0.0]] * 8 + [[0.0, 1.0]] * 8 + [[1.0, 0.0]] * 8)
    val = EmbeddingSet(torch.tensor([a, b]), torch.tensor([[1.0, 0.0], [0.0, 1.0]]))
    method = _Identity(HeadSpec(in_dim=4, n_bits=4, n_classes=2, multilabel=True))
    s = val_scores(method, EmbeddingSet(db_x, db_y), val, k=7)
    assert s["val_accuracy"] == 0.5


def test_batch_size_of_one_is_refused_by_the_default_batches() -> None:
    # one-row batches have no pairs and are skipped: nothing would train (DP's Poisson plan reads
    # batch_size as an expected size and accepts 1: tests/privacy/test_dp.py)
    train = gaussian_clusters(20, seed=0, dim=8, n_classes=2)
    val = gaussian_clusters(10, seed=1, dim=8, n_classes=2)
    method = registry.build("dpsh", HeadSpec(in_dim=8, n_bits=8, n_classes=2), seed=0)
    with pytest.raises(HashingError, match="batch_size=1"):
        fit(method, train, val, config=FitConfig(batch_size=1, epochs=1, progress=False))
    with pytest.raises(HashingError, match="batch_size=0"):
        FitConfig(batch_size=0)


def test_val_scores_report_balanced_map_and_selection_accepts_it() -> None:
    s = _two_query_scores()
    # q0: both class-0 items at d=0 rank first -> AP 1; q1: its class-1 item at d=0 -> AP 1
    assert s["val_balanced_map"] == pytest.approx(1.0)
    assert FitConfig(selection="balanced_map").selection == "balanced_map"


def test_balanced_selection_picks_the_epoch_the_val_history_says(monkeypatch) -> None:
    import hashers.trainer as trainer

    # hand-made val history: epoch 1 serves the majority class (best plain accuracy), epoch 2
    # has the best class-balanced k-NN scores, epoch 3 the best class-balanced mAP of the whole
    # ranking
    history = [
        {"val_accuracy": 0.70, "val_soft_accuracy": 0.60, "val_balanced_accuracy": 0.50,
         "val_balanced_soft_accuracy": 0.50, "val_balanced_map": 0.40},
        {"val_accuracy": 0.90, "val_soft_accuracy": 0.85, "val_balanced_accuracy": 0.55,
         "val_balanced_soft_accuracy": 0.52, "val_balanced_map": 0.45},
        {"val_accuracy": 0.80, "val_soft_accuracy": 0.75, "val_balanced_accuracy": 0.80,
         "val_balanced_soft_accuracy": 0.78, "val_balanced_map": 0.60},
        {"val_accuracy": 0.75, "val_soft_accuracy": 0.70, "val_balanced_accuracy": 0.60,
         "val_balanced_soft_accuracy": 0.60, "val_balanced_map": 0.65},
    ]  # fmt: skip

    class _Counter(HashingMethod):
        """Stub (test, 2024): one parameter that counts the optimiser steps. Deviations: none."""

        name = "counter-stub"
        Config = _NoConfig

        def __init__(self, spec: HeadSpec) -> None:
            super().__init__(spec)
            self.steps = nn.Parameter(torch.zeros(()))

        def training_step(self, batch, optimizer):
            with torch.no_grad():
                self.steps += 1
            return {"loss": torch.zeros(())}

        def compute_loss(self, u, y, idx):  # pragma: no cover - unused
            return {"loss": u.sum() * 0}

    def picks(selection: str) -> tuple[int, float]:
        scripted = iter(history)
        monkeypatch.setattr(trainer, "val_scores", lambda *a, **k: dict(next(scripted)))
        method = _Counter(HeadSpec(in_dim=2, n_bits=2, n_classes=2, hidden_dims=()))
        data = EmbeddingSet(torch.randn(20, 2), torch.eye(2)[torch.arange(20) % 2])
        cfg = FitConfig(epochs=4, batch_size=10, patience=10, selection=selection, progress=False)
        result = trainer.fit(method, data, data, config=cfg)
        return result.best_epoch, float(method.steps.detach())  # 2 steps per epoch

    assert picks("balanced_soft_accuracy") == (2, 6.0)  # the weights of epoch 2 are restored
    assert picks("balanced_accuracy") == (2, 6.0)
    assert picks("accuracy") == (1, 4.0)
    assert picks("balanced_map") == (3, 8.0)
    assert FitConfig().selection == "balanced_soft_accuracy"


def test_windowed_selection_picks_the_epoch_the_hand_computed_averages_say() -> None:
    scores = [0.5, 0.9, 0.5, 0.7, 0.75, 0.72, 0.4]
    # centred 3-epoch means (truncated at the ends): 0.70, 0.633, 0.70, 0.65, 0.7233, 0.6233, 0.56
    # -> epoch 4; the plain rule takes the lucky epoch 1
    for window, expected in ((1, 1), (3, 4)):
        sel = EpochSelector(window)
        for epoch, score in enumerate(scores):
            sel.update(epoch, score, acc=score, module=nn.Linear(1, 1).requires_grad_(False))
            sel.states[epoch]["weight"].fill_(epoch)  # tag each kept state with its epoch
        sel.finish()
        assert sel.best_epoch == expected
        assert sel.best_state is not None and float(sel.best_state["weight"]) == expected
        assert sel.best == pytest.approx(0.9 if window == 1 else (0.7 + 0.75 + 0.72) / 3)
    # only the last window // 2 + 1 states are kept, and ties go to the later epoch
    sel = EpochSelector(5)
    for epoch in range(6):
        sel.update(epoch, 0.5, acc=0.5, module=nn.Linear(1, 1))
    assert sorted(sel.states) == [3, 4, 5]
    sel.finish()
    assert sel.best_epoch == 5 and sel.last_gain == 0


def test_windowed_early_stopping_counts_from_the_last_gain_of_the_average() -> None:
    sel = EpochSelector(3)
    for epoch, score in enumerate([0.2, 0.8, 0.3, 0.3, 0.3]):
        sel.update(epoch, score, acc=score, module=nn.Linear(1, 1))
    # judged so far: epochs 0-3; means 0.5, 0.433, 0.467, 0.3 -> last gain at epoch 0
    assert sel.last_gain == 0
    assert sel.stale(4, patience=3) and not sel.stale(3, patience=3)


def test_selection_window_must_be_odd_and_positive() -> None:
    for bad in (0, 2, -1):
        with pytest.raises(HashingError, match=f"selection_window={bad}: use an odd number"):
            FitConfig(selection_window=bad)


# ---- class-balanced sampling -------------------------------------------------------------------
def test_class_rates_hand_computed() -> None:
    from hashers.trainer import class_rates

    y = torch.eye(3)[[0] * 90 + [1] * 10]  # class 2 absent
    assert torch.allclose(class_rates(y, 0.0), torch.tensor([0.9, 0.1, 0.0]))
    assert torch.allclose(class_rates(y, 1.0), torch.tensor([0.5, 0.5, 0.0]))
    # half-way: rates ∝ √90 : √10 = 3 : 1
    assert torch.allclose(class_rates(y, 0.5), torch.tensor([0.75, 0.25, 0.0]))


@pytest.mark.parametrize(("balance", "minority_rate"), [(1.0, 0.5), (0.5, 0.25), (0.0, 0.1)])
def test_class_balanced_batches_draw_classes_at_the_stated_rates(
    balance: float, minority_rate: float
) -> None:
    from hashers.trainer import ClassBalancedBatches

    labels = torch.tensor([0] * 900 + [1] * 100)
    data = EmbeddingSet(torch.zeros(1000, 1), torch.eye(2)[labels])
    plan = ClassBalancedBatches(balance)
    gen = torch.Generator().manual_seed(0)
    drawn = torch.cat([torch.cat(list(plan.batches(data, 100, gen))) for _ in range(20)])
    assert len(drawn) == 20_000  # an epoch draws as many rows as the training set holds
    share = float((labels[drawn] == 1).float().mean())
    sd = (minority_rate * (1 - minority_rate) / len(drawn)) ** 0.5
    assert abs(share - minority_rate) < 4 * sd
    # within a class every row is equally likely: the 100 minority rows are all drawn
    assert set(drawn[labels[drawn] == 1].tolist()) == set(range(900, 1000))
    again = torch.cat(list(plan.batches(data, 100, torch.Generator().manual_seed(0))))
    assert torch.equal(again, drawn[:1000])  # seeded


def test_default_plan_balances_supervised_methods_only() -> None:
    from hashers import registry
    from hashers.trainer import ClassBalancedBatches, ShuffledBatches, default_batches

    spec = HeadSpec(in_dim=4, n_bits=8, n_classes=2, hidden_dims=(8,))
    on, off = FitConfig(class_balance=1.0), FitConfig(class_balance=0.0)
    assert isinstance(default_batches(registry.build("dpsh", spec), on), ClassBalancedBatches)
    assert isinstance(default_batches(registry.build("dpsh", spec), off), ShuffledBatches)
    assert isinstance(default_batches(registry.build("lsh", spec), on), ShuffledBatches)
    with pytest.raises(HashingError, match=r"class_balance=1\.5"):
        FitConfig(class_balance=1.5)


def test_fit_sets_input_statistics_from_train_and_plugins_can_choose_val() -> None:
    """The trainer fits a standardising head's statistics once, from the training split by
    default; a plugin (DP-SGD) may name other rows (val) so no training record is read."""
    from hashers.heads import InputStandardizer
    from hashers.trainer import TrainingPlugin

    train = gaussian_clusters(60, seed=0, n_classes=2)
    val = gaussian_clusters(30, seed=1, n_classes=2)
    val = type(val)(val.x + 5.0, val.y)

    class FromVal(TrainingPlugin):
        def input_reference(self, train, val):
            return val.x

    for plugin, ref in ((None, train.x), (FromVal(), val.x)):
        spec = HeadSpec(
            in_dim=train.dim, n_bits=8, n_classes=2, hidden_dims=(16,), standardize=True
        )
        method = registry.build("dpsh", spec, seed=0)
        fit(method, train, val, config=FitConfig(epochs=1, progress=False), plugin=plugin)
        (st,) = [m for m in method.modules() if isinstance(m, InputStandardizer)]
        assert torch.allclose(st.center, ref.mean(0), atol=1e-5)


def test_plugin_teardown_runs_when_training_fails_mid_fit() -> None:
    """A plugin patches the method in ``setup`` (DP-SGD: its step, per-sample gradients); an error
    in the loop (here the batch plan's, after one step) must still undo the patch, or the method
    keeps training with the plugin's step after the failed fit."""
    from hashers.trainer import ShuffledBatches, TrainingPlugin

    data = gaussian_clusters(40, seed=0, n_classes=2)
    spec = HeadSpec(in_dim=data.dim, n_bits=8, n_classes=2, hidden_dims=(16,))
    method = registry.build("csq", spec, seed=0)
    calls: list[str] = []

    class Patching(TrainingPlugin):
        def setup(self, method, optimizer, train):
            step = method.training_step
            method.training_step = lambda batch, opt: (calls.append("step"), step(batch, opt))[1]
            return optimizer

        def teardown(self, method):
            calls.append("teardown")
            del method.training_step

    class FailsAfterOneStep:
        def batches(self, train, batch_size, generator):
            it = ShuffledBatches().batches(train, batch_size, generator)
            yield next(it)
            raise RuntimeError("batch plan failed")

    with pytest.raises(RuntimeError, match="batch plan failed"):
        fit(
            method,
            data,
            data,
            config=FitConfig(epochs=1, batch_size=8, progress=False),
            batches=FailsAfterOneStep(),
            plugin=Patching(),
        )
    assert calls == ["step", "teardown"]
    assert "training_step" not in vars(method)  # the class's own step again


def test_weight_average_is_a_running_mean_then_an_ema_hand_computed() -> None:
    from hashers.trainer import WeightAverage

    p = torch.zeros(2)
    avg = WeightAverage([p], epochs=3.0, steps_per_epoch=1)  # decay e^(-1/3) = 0.7165
    d = float(np.exp(-1.0 / 3.0))
    for v in (4.0, 2.0, 7.0, 1.0):
        p.fill_(v)
        avg.update()
    # steps 1-3 (1 - 1/n = 0, 1/2, 2/3 < d): the running mean (4 + 2 + 7) / 3; step 4: 3/4 > d
    want = d * (13.0 / 3.0) + (1 - d) * 1.0
    np.testing.assert_allclose(avg.avg[0].numpy(), [want, want], rtol=1e-6)
    with avg.swapped():
        np.testing.assert_allclose(p.numpy(), [want, want], rtol=1e-6)
    np.testing.assert_array_equal(p.numpy(), [1.0, 1.0])  # raw weights restored
    # the time constant is in epochs: 4 steps per epoch, 2 epochs -> decay e^(-1/8)
    assert WeightAverage([p], epochs=2.0, steps_per_epoch=4).decay == pytest.approx(np.exp(-1 / 8))


def test_fit_selects_and_returns_averaged_weights_and_keeps_training_the_raw_ones() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(120, 6, generator=g)
    y = torch.eye(3)[torch.arange(120) % 3]
    data = EmbeddingSet(x, y)
    spec = HeadSpec(in_dim=6, n_bits=8, n_classes=3, hidden_dims=(16,))

    def run(ema: float) -> tuple[HashingMethod, list[float]]:
        torch.manual_seed(0)
        method = registry.build("dpsh", spec)
        cfg = FitConfig(epochs=4, batch_size=40, patience=50, ema_epochs=ema, progress=False)
        result = fit(method, data, data, config=cfg)
        return method, [row["loss"] for row in result.history]

    (raw, raw_losses), (averaged, avg_losses) = run(0.0), run(2.0)
    # the optimiser steps the raw weights either way: the same training losses, epoch by epoch
    assert raw_losses == avg_losses
    # and the returned head (averaged weights) differs from the raw run's selected head
    w_raw = torch.cat([p.detach().flatten() for p in raw.parameters()])
    w_avg = torch.cat([p.detach().flatten() for p in averaged.parameters()])
    assert not torch.allclose(w_raw, w_avg)
    assert torch.isfinite(w_avg).all()


def test_a_plugin_sees_the_averaged_weights_that_are_selected_and_returned() -> None:
    """With ``ema_epochs > 0`` a plugin's ``epoch_end`` (bench_bits' held-out scores) ran before
    the average was swapped in: it recorded the raw weights' numbers for the epoch the averaged
    score picked, not the head that fit returns."""
    from hashers.trainer import TrainingPlugin

    g = torch.Generator().manual_seed(0)
    x = torch.randn(120, 6, generator=g)
    data = EmbeddingSet(x, torch.eye(3)[torch.arange(120) % 3])
    spec = HeadSpec(in_dim=6, n_bits=8, n_classes=3, hidden_dims=(16,))
    method = registry.build("dpsh", spec, seed=0)
    seen: dict[int, torch.Tensor] = {}

    class Snapshot(TrainingPlugin):
        def epoch_end(self, epoch: int) -> dict[str, float]:
            seen[epoch] = torch.cat([p.detach().cpu().flatten() for p in method.parameters()])
            return {}

    cfg = FitConfig(epochs=4, batch_size=40, patience=50, ema_epochs=2.0, progress=False)
    result = fit(method, data, data, config=cfg, plugin=Snapshot())
    returned = torch.cat([p.detach().flatten() for p in method.parameters()])
    assert torch.equal(seen[result.best_epoch], returned)


def test_ema_epochs_must_be_non_negative() -> None:
    for bad in (-1.0, float("inf"), float("nan")):
        with pytest.raises(HashingError, match="ema_epochs="):
            FitConfig(ema_epochs=bad)


def test_geometry_must_be_non_negative() -> None:
    for bad in (-0.5, float("inf"), float("nan")):
        with pytest.raises(HashingError, match="geometry="):
            FitConfig(geometry=bad)


def _neighbour_overlap(method: HashingMethod, db: EmbeddingSet, q: EmbeddingSet, k: int) -> float:
    """Mean share of each query's k Euclidean nearest database rows among its k Hamming-nearest
    (Hamming ties broken by row order)."""
    d_float = torch.cdist(q.x, db.x)
    cq, cdb = method.encode(q.x).float(), method.encode(db.x).float()
    d_ham = cq @ (1 - cdb).T + (1 - cq) @ cdb.T
    near_f = d_float.topk(k, largest=False).indices
    near_h = torch.sort(d_ham, dim=1, stable=True).indices[:, :k]
    hits = [len(set(a.tolist()) & set(b.tolist())) for a, b in zip(near_f, near_h, strict=True)]
    return float(np.mean(hits)) / k


def _sheets(n: int, seed: int) -> EmbeddingSet:
    """Three classes far apart, each a 2-d uniform sheet in 16-d: inside a class, who is near
    whom is a property of the sheet that the labels do not carry."""
    plane = torch.randn(2, 16, generator=torch.Generator().manual_seed(99))
    offsets = 40.0 * torch.randn(3, 16, generator=torch.Generator().manual_seed(98))
    c = torch.arange(n) % 3
    z = 10.0 * torch.rand(n, 2, generator=torch.Generator().manual_seed(seed))
    return EmbeddingSet(offsets[c] + z @ plane, torch.nn.functional.one_hot(c, 3).float())


def test_geometry_term_keeps_the_float_neighbourhoods_and_belongs_to_one_fit() -> None:
    """DPSH alone has no reason to keep the within-class neighbourhoods; with the neighbourhood
    term its codes keep several times more of each query's 7 Euclidean nearest neighbours
    (about 0.08 without, 0.5 with at this seed). Every epoch scores val accuracy 1, so the
    last epoch is kept (ties go to the later epoch) and selection plays no part."""
    train, val = _sheets(240, 1), _sheets(90, 2)
    overlap = {}
    for weight in (0.0, 3.0):
        method = registry.build("dpsh", HeadSpec(in_dim=16, n_bits=32, n_classes=3), seed=0)
        cfg = FitConfig(
            epochs=40,
            batch_size=64,
            progress=False,
            geometry=weight,
            seed=0,
            selection="accuracy",
            patience=100,
        )
        result = fit(method, train, val, config=cfg)
        assert result.best_epoch == 39
        assert ("loss_geometry" in result.history[0]) == (weight > 0)
        if weight > 0:  # the term is trained down
            assert result.history[-1]["loss_geometry"] < 0.5 * result.history[0]["loss_geometry"]
        assert "geometry_term" not in vars(method) and method.geometry_term is None
        overlap[weight] = _neighbour_overlap(method, train, val, 7)
    assert overlap[3.0] > overlap[0.0] + 0.2, overlap


def test_a_term_the_caller_set_by_hand_is_used_and_kept_when_geometry_is_off() -> None:
    """With ``geometry`` 0 the fit installs nothing, so it removes nothing: a term put on the
    method by the caller trains (``loss_geometry`` in the history) and is still there after."""
    train = gaussian_clusters(60, seed=1, dim=8, n_classes=2)
    method = registry.build("dpsh", HeadSpec(in_dim=8, n_bits=8, n_classes=2), seed=0)
    term = functools.partial(functional.neighbourhood_loss, perplexity=5.0)
    method.geometry_term, method.geometry_weight = term, 0.5
    result = fit(method, train, train, config=FitConfig(epochs=2, batch_size=16, progress=False))
    assert "loss_geometry" in result.history[0]
    assert method.geometry_term is term and method.geometry_weight == 0.5


def test_geometry_on_a_method_with_its_own_term_is_refused_not_deleted() -> None:
    """``geometry > 0`` installs the fit's own term: over a term the caller had set, it replaced
    it and then deleted it (the caller's term was gone after the fit). Now it is refused."""
    train = gaussian_clusters(60, seed=1, dim=8, n_classes=2)
    method = registry.build("dpsh", HeadSpec(in_dim=8, n_bits=8, n_classes=2), seed=0)
    term = functools.partial(functional.neighbourhood_loss, perplexity=5.0)
    method.geometry_term, method.geometry_weight = term, 0.3
    config = FitConfig(epochs=2, batch_size=16, progress=False, geometry=1.0)
    with pytest.raises(HashingError, match=r"geometry=1.0 would replace the neighbourhood term"):
        fit(method, train, train, config=config)
    assert method.geometry_term is term and method.geometry_weight == 0.3


@pytest.mark.parametrize("bad", [{"epochs": 0}, {"patience": 0}, {"patience": -3}])
def test_fit_config_refuses_no_epochs_and_no_patience(bad: dict) -> None:
    """epochs=0 returned an untrained head (best_epoch -1); patience <= 0 stopped after epoch 0."""
    with pytest.raises(HashingError, match=r"both must be >= 1"):
        FitConfig(**bad)


def test_fit_restores_the_callers_global_generator() -> None:
    """The fit seeds torch's global generator from ``seed``; the caller's draws afterwards are
    the ones it would have made without the fit in between."""
    train = gaussian_clusters(60, seed=1, dim=8, n_classes=2)
    torch.manual_seed(123)
    expected = torch.rand(5)
    torch.manual_seed(123)
    method = registry.build("dpsh", HeadSpec(in_dim=8, n_bits=8, n_classes=2), seed=0)
    torch.manual_seed(123)
    fit(method, train, train, config=FitConfig(epochs=2, batch_size=16, progress=False, seed=7))
    assert torch.equal(torch.rand(5), expected)


# ------------------------------------------------------------------------------------------
# bad input and divergence: refused with a HashingError naming the value and the fix
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["dpsh", "csq"])
def test_a_head_whose_outputs_became_non_finite_is_refused_not_selected(name: str) -> None:
    """lr=1e20 leaves finite weights and a finite epoch-0 loss (computed before the updates) but
    NaN outputs: before, that head was scored (every code 0), selected and returned."""
    train = gaussian_clusters(60, seed=1, dim=16, n_classes=3)
    val = gaussian_clusters(30, seed=2, dim=16, n_classes=3)
    method = registry.build(name, HeadSpec(in_dim=16, n_bits=16, n_classes=3, hidden_dims=(32,)))
    config = FitConfig(epochs=1, batch_size=64, lr=1e20, progress=False, k=3)
    with pytest.raises(
        HashingError,
        match=rf"{name}: the head's outputs became non-finite at epoch 0 .*; lower train.lr",
    ):
        fit(method, train, val, config=config)


class _PrivateStub:
    """A plugin that marks the records private (the DP-SGD path) and, in ``teardown``, may break
    the weights as a faulty plugin would."""

    reports_training_numbers = False

    def __init__(self, *, break_in_teardown: bool) -> None:
        self.break_in_teardown = break_in_teardown

    def setup(self, method, optimizer, train):
        return optimizer

    def epoch_end(self, epoch):
        return {}

    def input_reference(self, train, val):
        return train.x

    def batch_generator(self, default):
        return default

    def teardown(self, method):
        if self.break_in_teardown:
            with torch.no_grad():
                method.head.net[-1].bias.fill_(float("nan"))


def test_private_training_checks_the_outputs_on_val_not_only_the_weights() -> None:
    """Under a private plugin the loop checked only the weights; at lr=1e20 they stay finite while
    every output is NaN. The message quotes no training number (no 'inputs reach')."""
    train = gaussian_clusters(60, seed=1, dim=16, n_classes=3)
    val = gaussian_clusters(30, seed=2, dim=16, n_classes=3)
    method = registry.build("csq", HeadSpec(in_dim=16, n_bits=16, n_classes=3, hidden_dims=(32,)))
    config = FitConfig(epochs=1, batch_size=64, lr=1e20, progress=False, k=3)
    with pytest.raises(HashingError, match=r"outputs on val became non-finite at epoch 0") as err:
        fit(method, train, val, config=config, plugin=_PrivateStub(break_in_teardown=False))
    assert "inputs reach" not in str(err.value)


def test_the_returned_head_encodes_finitely() -> None:
    """A private plugin selects the epoch itself (the loop restores nothing), so a plugin that
    breaks the weights after the last check would hand back a head whose codes are all 0."""
    train = gaussian_clusters(60, seed=1, dim=16, n_classes=3)
    method = registry.build("csq", HeadSpec(in_dim=16, n_bits=16, n_classes=3, hidden_dims=(32,)))
    config = FitConfig(epochs=1, batch_size=64, progress=False, k=3)
    with pytest.raises(HashingError, match=r"returned head's outputs on val are non-finite"):
        fit(method, train, train, config=config, plugin=_PrivateStub(break_in_teardown=True))


@pytest.mark.parametrize("name", ["dpsh", "csq", "tcl", "lsh"])
def test_head_built_for_another_class_count_is_refused(name: str) -> None:
    """n_classes=4 on 3-column labels: before, a raw RuntimeError (csq, tcl) or silent training
    (dpsh, lsh)."""
    data = gaussian_clusters(60, seed=1, dim=16, n_classes=3)
    method = registry.build(name, HeadSpec(in_dim=16, n_bits=16, n_classes=4, hidden_dims=(32,)))
    with pytest.raises(
        HashingError, match=r"training labels have 3 class columns .* n_classes=4; .*n_classes=3"
    ):
        fit(method, data, data, config=FitConfig(epochs=1, progress=False, k=3))


@pytest.mark.parametrize("val_cols", [2, 4])
def test_val_labels_in_another_label_space_are_refused(val_cols: int) -> None:
    """Val with 2 label columns against train's 3 was a numpy broadcast ValueError; with 4 it was
    accepted silently."""
    train = gaussian_clusters(60, seed=1, dim=16, n_classes=3)
    val = gaussian_clusters(30, seed=2, dim=16, n_classes=3)
    y = torch.zeros(len(val), val_cols)
    y[:, : min(val_cols, 3)] = val.y[:, : min(val_cols, 3)]
    method = registry.build("dpsh", HeadSpec(in_dim=16, n_bits=16, n_classes=3, hidden_dims=(32,)))
    with pytest.raises(
        HashingError, match=rf"val labels have {val_cols} class columns, the training labels 3"
    ):
        fit(method, train, EmbeddingSet(val.x, y), config=FitConfig(epochs=1, progress=False))


@pytest.mark.parametrize("name", ["dpsh", "itq"])
def test_an_empty_val_split_is_refused(name: str) -> None:
    """Before, training ran and 'selected' the last epoch with a val accuracy of 0."""
    train = gaussian_clusters(60, seed=1, dim=16, n_classes=3)
    empty = EmbeddingSet(torch.zeros(0, 16), torch.zeros(0, 3))
    method = registry.build(name, HeadSpec(in_dim=16, n_bits=16, n_classes=3, hidden_dims=(32,)))
    with pytest.raises(HashingError, match=r"the val split is empty; model selection needs val"):
        fit(method, train, empty, config=FitConfig(epochs=1, progress=False, k=3))


@pytest.mark.parametrize("bad", [{"val_queries": 0}, {"val_database": 0}, {"val_queries": -5}])
def test_fit_config_refuses_empty_val_subsets(bad: dict) -> None:
    ((field, value),) = bad.items()
    with pytest.raises(HashingError, match=rf"{field}={value}.*both must be >= 1"):
        FitConfig(**bad)


def test_labels_are_checked_once_per_set_not_per_step(monkeypatch) -> None:
    """The 0/1 label check runs in EmbeddingSet's constructor: a fit builds its two val-subset
    sets, however many steps it takes."""
    train = gaussian_clusters(200, seed=1, dim=16, n_classes=3)
    val = gaussian_clusters(40, seed=2, dim=16, n_classes=3)
    built = []
    init = EmbeddingSet.__post_init__
    monkeypatch.setattr(EmbeddingSet, "__post_init__", lambda self: (built.append(1), init(self)))
    method = registry.build("dpsh", HeadSpec(in_dim=16, n_bits=16, n_classes=3, hidden_dims=(32,)))
    config = FitConfig(epochs=3, batch_size=8, val_queries=20, val_database=100, progress=False)
    fit(method, train, val, config=config)  # 3 x 25 steps
    assert len(built) == 2
