"""DP-SGD (privacy/dp.py): which methods train, what ε is reported, per-sample gradients."""

from __future__ import annotations

import dataclasses
import itertools
import math
import warnings

import pytest
import torch
from opacus.accountants import RDPAccountant

from hashers import registry
from hashers.base import EmbeddingSet, HashingError, HeadSpec
from hashers.trainer import SELECTION_SCORES, FitConfig, steps_per_epoch
from pipeline.synthetic import gaussian_clusters
from privacy.dp import (
    DPConfig,
    PoissonBatches,
    calibrate_noise,
    check_dp_capable,
    dp_fit,
    epsilon_of,
    per_sample_gradients,
)
from privacy.errors import PrivacyError

DIM, C = 16, 3
DP_METHODS = ["csq", "tcl", "cnnh"]
REFUSED = ["dpsh", "dsh", "hashnet", "dsdh", "dnnh", "dshgan", "saeh", "dhn", "lsh", "itq", "pca"]


def spec(bits: int = 16, dropout: float = 0.0) -> HeadSpec:
    return HeadSpec(in_dim=DIM, n_bits=bits, n_classes=C, hidden_dims=(32,), dropout=dropout)


def data(n: int, seed: int) -> EmbeddingSet:
    return gaussian_clusters(n, seed=seed, dim=DIM, n_classes=C, spread=3.0)


FAST = FitConfig(epochs=2, batch_size=32, progress=False, val_queries=40)


@pytest.mark.parametrize("name", DP_METHODS)
def test_dp_capable_methods_train_and_keep_their_saved_keys(name: str, tmp_path) -> None:
    from pipeline.artifacts import load_head, save_head

    method = registry.build(name, spec(), seed=0)
    keys = set(method.state_dict())
    train, val = data(120, 1), data(40, 2)
    result, report = dp_fit(
        method, train, val, config=FAST, dp=DPConfig(noise_multiplier=1.0, accountant="rdp")
    )
    assert set(method.state_dict()) == keys  # nothing wrapped, no grad_sample left behind
    assert "training_step" not in vars(method)
    assert report.steps == 2 * math.ceil(120 / 32)
    eps = [row["dp_epsilon"] for row in result.history]
    assert len(eps) == 2 and 0 < eps[0] < eps[1] == pytest.approx(report.epsilon)
    save_head(tmp_path, method.state_dict(), {"method": name})
    state, _ = load_head(tmp_path)
    fresh = registry.build(name, spec(), seed=5)
    fresh.load_state_dict(state)
    assert torch.equal(fresh.encode(val.x), method.encode(val.x))


@pytest.mark.parametrize("name", REFUSED)
def test_coupled_or_closed_form_methods_are_refused(name: str) -> None:
    method = registry.build(name, spec(), seed=0)
    with pytest.raises(PrivacyError, match=r"cannot train under DP|closed form") as err:
        dp_fit(method, data(60, 1), data(20, 2), config=FAST, dp=DPConfig())
    if registry.get(name).trainable:
        assert "couples records" in str(err.value) and "ε would be false" in str(err.value)


def test_no_state_of_the_secret_streams_outlives_a_dp_fit() -> None:
    """DP training seeds torch's global generator from its secret dropout stream; the trainer
    restores the caller's state, so later global draws carry nothing of that stream."""
    method = registry.build("csq", spec(dropout=0.2), seed=0)
    torch.manual_seed(321)
    expected = torch.rand(5)
    torch.manual_seed(321)
    dp_fit(method, data(60, 1), data(20, 2), config=FAST, dp=DPConfig(noise_multiplier=1.0))
    assert torch.equal(torch.rand(5), expected)


def test_a_cpu_dp_fit_seeds_no_generator_it_does_not_restore(monkeypatch) -> None:
    """``torch.manual_seed`` would also seed every GPU (lazily, even before CUDA starts), which
    the trainer's restore does not cover; a CPU fit seeds the CPU generator only."""
    method = registry.build("csq", spec(dropout=0.2), seed=0)

    def refuse(*args: object) -> None:
        raise AssertionError("torch.manual_seed seeds every device")

    monkeypatch.setattr(torch, "manual_seed", refuse)
    monkeypatch.setattr(torch.cuda, "manual_seed_all", refuse)
    dp_fit(method, data(60, 1), data(20, 2), config=FAST, dp=DPConfig(noise_multiplier=1.0))


def test_the_neighbourhood_term_is_refused_under_dp() -> None:
    """It couples the records of a batch, so per-sample clipping would not bound one record."""
    method = registry.build("csq", spec(), seed=0)
    cfg = dataclasses.replace(FAST, geometry=0.5)
    with pytest.raises(PrivacyError, match=r"geometry=0.5: the neighbourhood term couples"):
        dp_fit(method, data(60, 1), data(20, 2), config=cfg, dp=DPConfig(noise_multiplier=1.0))


def test_a_neighbourhood_term_set_on_the_method_by_hand_is_refused_under_dp() -> None:
    """``fit`` leaves a caller's own term in place, so ``dp_fit`` checks the method too."""
    method = registry.build("csq", spec(), seed=0)
    method.geometry_term = lambda u, x: (u[:, None] - u[None]).pow(2).mean()
    method.geometry_weight = 0.25
    with pytest.raises(PrivacyError, match=r"geometry=0.25: the neighbourhood term couples"):
        dp_fit(method, data(60, 1), data(20, 2), config=FAST, dp=DPConfig(noise_multiplier=1.0))


@pytest.mark.parametrize("name", ["dsh", "dpsh", "dsdh"])
def test_memory_bank_variants_are_refused(name: str) -> None:
    cfg = registry.get(name).Config(memory_bank=True)
    method = registry.build(name, spec(), cfg, seed=0)
    with pytest.raises(PrivacyError, match="memory_bank=true cannot train under DP"):
        check_dp_capable(method)


def test_reported_epsilon_matches_the_accountant_called_directly() -> None:
    method = registry.build("csq", spec(), seed=0)
    train = data(100, 1)
    result, report = dp_fit(
        method, train, data(30, 2), config=FAST, dp=DPConfig(noise_multiplier=0.9, accountant="rdp")
    )
    acc = RDPAccountant()
    per_epoch = []
    for _ in range(2):  # the history's ε after each epoch is the accountant's after its steps
        for _ in range(math.ceil(100 / 32)):
            acc.step(noise_multiplier=0.9, sample_rate=32 / 100)
        per_epoch.append(acc.get_epsilon(delta=0.1 / 100))
    assert report.epsilon == pytest.approx(per_epoch[-1], rel=1e-9)
    assert [row["dp_epsilon"] for row in result.history] == pytest.approx(per_epoch, rel=1e-9)
    assert per_epoch[0] < per_epoch[1]
    assert report.delta == pytest.approx(0.001)


def test_epsilon_falls_as_noise_rises() -> None:
    eps = [
        epsilon_of(noise_multiplier=s, sample_rate=0.05, steps=200, delta=1e-5, accountant=a)
        for a in ("prv", "rdp")
        for s in (0.7, 1.0, 1.5, 3.0)
    ]
    for acc in (eps[:4], eps[4:]):
        assert all(a > b for a, b in itertools.pairwise(acc)), acc
    # PRV is the tighter accountant: never above RDP at the same σ
    assert all(p <= r + 1e-6 for p, r in zip(eps[:4], eps[4:], strict=True))


def test_calibrated_noise_reaches_the_target_epsilon() -> None:
    sigma = calibrate_noise(epsilon=3.0, delta=1e-5, sample_rate=0.1, steps=100, accountant="rdp")
    eps = epsilon_of(
        noise_multiplier=sigma, sample_rate=0.1, steps=100, delta=1e-5, accountant="rdp"
    )
    assert 2.98 <= eps <= 3.0


def test_a_dp_epoch_has_the_trainers_step_count_so_max_steps_means_the_same() -> None:
    # 65 rows at batch 32: the trainer folds the lone 65th row (2 steps an epoch, not 3), so
    # max_steps = 4 allows 2 epochs = 4 DP steps, all accounted
    config = FitConfig(epochs=10, batch_size=32, max_steps=4, progress=False, val_queries=20)
    assert steps_per_epoch(65, 32) == 2 and config.epoch_budget(65) == 2
    method = registry.build("csq", spec(), seed=0)
    result, report = dp_fit(
        method, data(65, 1), data(40, 2), config=config,
        dp=DPConfig(noise_multiplier=1.0, accountant="rdp"),
    )  # fmt: skip
    assert result.epochs_run == 2 and report.steps == 4


def test_dp_heads_train_every_planned_epoch_whatever_the_patience() -> None:
    """No early stopping (its timing would depend on train-database scores): patience 1 still
    runs all 6 epochs, each accounted."""
    config = FitConfig(epochs=6, batch_size=32, patience=1, progress=False, val_queries=20)
    method = registry.build("csq", spec(), seed=0)
    result, report = dp_fit(
        method, data(64, 1), data(40, 2), config=config,
        dp=DPConfig(noise_multiplier=1.0, accountant="rdp"),
    )  # fmt: skip
    assert result.epochs_run == 6 and report.steps == 6 * 2 and len(result.history) == 6


def test_a_knn_k_beyond_the_val_half_is_refused_before_any_training(monkeypatch) -> None:
    """DP-SGD selects epochs by KNN between two halves of val, so k must fit in a half: 12 val rows
    and k=7 are refused before σ is calibrated or a step is taken (it failed after a whole epoch,
    which the non-private trainer, selecting against train, does not)."""
    from privacy import dp as dp_module

    def never(*args, **kwargs):
        raise AssertionError("calibrated or trained before refusing k")

    monkeypatch.setattr(dp_module, "calibrate_noise", never)
    monkeypatch.setattr(dp_module, "fit", never)
    method = registry.build("csq", spec(), seed=0)
    config = dataclasses.replace(FAST, k=7)
    with pytest.raises(PrivacyError, match=r"k=7 .*the 6 rows of the val half.*at most 6"):
        dp_fit(method, data(60, 1), data(12, 2), config=config, dp=DPConfig(accountant="rdp"))
    with pytest.raises(PrivacyError, match=r"k=1 .*the 0 rows.*at least 2 rows"):
        dp_fit(
            method, data(60, 1), data(1, 2), config=dataclasses.replace(FAST, k=1), dp=DPConfig()
        )
    assert "training_step" not in vars(method)


def test_a_dp_fit_that_fails_mid_training_leaves_the_method_unpatched(monkeypatch) -> None:
    """The DP plugin patches its step and per-sample gradients into the method; an error after
    training began (here in the epoch's val scoring) must still remove them."""
    from privacy import dp as dp_module

    def fails(self, epoch):
        raise RuntimeError("val scoring failed")

    monkeypatch.setattr(dp_module.DPSGD, "epoch_end", fails)
    method = registry.build("csq", spec(), seed=0)
    with pytest.raises(RuntimeError, match="val scoring failed"):
        dp_fit(
            method, data(60, 1), data(40, 2), config=FAST,
            dp=DPConfig(noise_multiplier=1.0, accountant="rdp"),
        )  # fmt: skip
    assert "training_step" not in vars(method)
    assert not [n for n, p in method.named_parameters() if hasattr(p, "grad_sample")]


def test_empty_poisson_batches_are_noise_steps_and_are_accounted() -> None:
    plan = PoissonBatches(sample_rate=0.02, steps=400)
    sizes = [len(i) for i in plan.batches(data(50, 1), 1, torch.Generator().manual_seed(0))]
    empty = sum(s == 0 for s in sizes)
    # Binomial(50, 0.02): P(empty) = 0.98^50 = 0.364; 400 draws -> 145.6 ± 9.6 expected
    assert 110 < empty < 180 and sum(sizes) / 400 == pytest.approx(1.0, abs=0.2)
    method = registry.build("csq", spec(), seed=0)
    cfg = FitConfig(epochs=2, batch_size=1, progress=False, val_queries=20)
    before = {k: v.clone() for k, v in method.state_dict().items()}
    _, report = dp_fit(
        method,
        data(50, 1),
        data(20, 2),
        config=cfg,
        dp=DPConfig(noise_multiplier=2.0, accountant="rdp"),
    )
    assert report.steps == 100  # 2 epochs x 50 steps, empty ones included
    assert report.sample_rate == pytest.approx(0.02)
    assert any(not torch.equal(before[k], v) for k, v in method.state_dict().items())


@pytest.mark.parametrize("name", DP_METHODS)
def test_per_sample_gradients_do_not_depend_on_other_records(name: str) -> None:
    method = registry.build(name, spec(), seed=0)
    train = data(12, 1)
    torch.manual_seed(0)
    method.on_fit_start(train)
    method.train()
    idx = torch.arange(8)
    g1, _ = per_sample_gradients(method, train.x[idx], train.y[idx], idx)
    x2, y2 = train.x[idx].clone(), train.y[idx].clone()
    x2[0] += 3.0 * torch.randn(DIM, generator=torch.Generator().manual_seed(1))
    y2[0] = torch.roll(y2[0], 1)  # another label too
    g2, _ = per_sample_gradients(method, x2, y2, idx)
    for n in g1:
        assert torch.allclose(g1[n][1:], g2[n][1:], atol=1e-6), n
    assert any(not torch.allclose(g1[n][0], g2[n][0]) for n in g1)
    # loss reduction: the batch loss is the mean of the per-sample losses, so its gradient is the
    # mean of the per-sample gradients (what Opacus' loss_reduction="mean" assumes)
    method.zero_grad()
    method.compute_loss(method(train.x[idx]), train.y[idx], idx)["loss"].backward()
    for n, p in method.named_parameters():
        assert torch.allclose(p.grad, g1[n].mean(dim=0), atol=1e-6), n


def test_per_sample_gradients_match_opacus_grad_sampler() -> None:
    """CSQ's trainable parameters all live in the head: Opacus' hooks see every one of them."""
    from opacus import GradSampleModule

    method = registry.build("csq", spec(), seed=0)
    train = data(10, 1)
    idx = torch.arange(10)
    ours, _ = per_sample_gradients(method, train.x, train.y, idx)
    gsm = GradSampleModule(method.head, loss_reduction="mean")
    loss = method.compute_loss(gsm(train.x), train.y, idx)["loss"]
    loss.backward()
    for n, p in method.head.named_parameters():
        assert torch.allclose(p.grad_sample, ours[f"head.{n}"], atol=1e-5), n
    gsm._close()


def test_cnnh_targets_come_from_the_public_label_space() -> None:
    """Class frequencies differ between the two training sets; the class -> code map must not."""
    codes = []
    for weights in ([0.8, 0.1, 0.1], [0.1, 0.1, 0.8]):
        n = 60
        y_idx = torch.multinomial(
            torch.tensor(weights), n, replacement=True, generator=torch.Generator().manual_seed(0)
        )
        y_idx[:3] = torch.arange(3)
        train = EmbeddingSet(torch.randn(n, DIM), torch.eye(C)[y_idx])
        method = registry.build("cnnh", spec(), seed=0)
        dp_fit(
            method,
            train,
            data(20, 2),
            config=FitConfig(epochs=1, batch_size=16, progress=False),
            dp=DPConfig(noise_multiplier=1.0, accountant="rdp"),
        )
        codes.append(
            torch.stack([method.targets[int((y_idx == c).nonzero()[0])] for c in range(C)])
        )
    assert torch.equal(codes[0], codes[1])


def test_cnnh_multilabel_is_refused_under_dp() -> None:
    y = torch.tensor([[1.0, 1.0, 0.0], [0.0, 1.0, 0.0], [1.0, 0.0, 1.0]] * 10)
    train = EmbeddingSet(torch.randn(30, DIM), y)
    method = registry.build("cnnh", spec(), seed=0)
    with pytest.raises(PrivacyError, match="single-label"):
        dp_fit(method, train, train, config=FAST, dp=DPConfig(noise_multiplier=1.0))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"epsilon": 0.0}, "epsilon=0.0"),
        ({"epsilon": -1.0}, "must be finite and > 0"),
        ({"epsilon": float("nan")}, "must be finite and > 0"),
        # Opacus' calibration skipped both loops at ε = ∞ and returned σ = 10 (ε spent ≈ 0.5),
        # recorded as a target of ∞
        ({"epsilon": float("inf")}, r"epsilon=inf: .*finite.*a plain head"),
        ({"delta": 0.0}, "δ must lie in"),
        ({"delta": 1.0}, "δ must lie in"),
        ({"delta": 1.5}, "δ must lie in"),
        ({"max_grad_norm": 0.0}, "clipping norm"),
        ({"max_grad_norm": -2.0}, "clipping norm"),
        ({"accountant": "gdp2"}, "prv, rdp"),
        ({"noise_multiplier": 0.0}, "noise_multiplier"),
    ],
)
def test_bad_dp_settings_are_refused(kwargs: dict, match: str) -> None:
    with pytest.raises(PrivacyError, match=match):
        DPConfig(**kwargs)


def test_delta_at_or_above_one_over_n_warns() -> None:
    with pytest.warns(UserWarning, match="1/N"):
        DPConfig(delta=0.01).resolved_delta(100)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert DPConfig().resolved_delta(1000) == pytest.approx(1e-4)


def test_unreachable_epsilon_is_refused() -> None:
    with pytest.raises(PrivacyError, match="cannot reach"):
        calibrate_noise(epsilon=1e-4, delta=1e-6, sample_rate=1.0, steps=1000, accountant="rdp")


def test_standardizing_head_takes_its_statistics_from_val_under_dp() -> None:
    """A standardising head's per-feature statistics are aggregates of the rows they come from;
    under DP they come from val, so no training record is read outside the accounted steps."""
    from hashers.heads import InputStandardizer

    method = registry.build("csq", dataclasses.replace(spec(), standardize=True), seed=0)
    train, val = data(120, 1), data(40, 2)
    val = type(val)(val.x + 3.0, val.y)  # val statistics differ from train's
    dp_fit(method, train, val, config=FAST, dp=DPConfig(epsilon=8.0))
    (st,) = [m for m in method.modules() if isinstance(m, InputStandardizer)]
    assert torch.allclose(st.center, val.x.mean(0), atol=1e-5)
    assert not torch.allclose(st.center, train.x.mean(0), atol=1.0)


def _weights(method: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in method.state_dict().items()}


def _dp_run(dp: DPConfig, *, train: EmbeddingSet | None = None, name: str = "csq", **kw):
    method = registry.build(name, spec(dropout=0.1), seed=0)
    result, _ = dp_fit(method, train or data(60, 1), data(40, 2), config=FAST, dp=dp, **kw)
    return _weights(method), result


def test_dp_randomness_is_secret_by_default_and_reproducible_only_with_a_seed() -> None:
    """dp.seed=None: the Poisson draws, noise and dropout come from OS entropy, so two runs on the
    same data differ (the old generators were seeded by the fit seed, which config.json records:
    whoever held it replayed training on both neighbouring datasets and matched the weights bit for
    bit). An explicit seed reproduces the run; another seed, or another dataset context, does not."""
    base = DPConfig(noise_multiplier=1.0, accountant="rdp")
    assert base.seed is None and base.randomness == "secret"
    a, _ = _dp_run(base)
    b, _ = _dp_run(base)
    assert any(not torch.equal(a[k], b[k]) for k in a)
    seeded = dataclasses.replace(base, seed=3)
    assert seeded.randomness == "seeded"
    s1, _ = _dp_run(seeded)
    s2, _ = _dp_run(seeded)
    assert all(torch.equal(s1[k], s2[k]) for k in s1)
    s3, _ = _dp_run(dataclasses.replace(base, seed=4))
    assert any(not torch.equal(s1[k], s3[k]) for k in s1)
    s4, _ = _dp_run(seeded, context={"dataset": "other"})
    assert any(not torch.equal(s1[k], s4[k]) for k in s1)
    with pytest.raises(PrivacyError, match=r"dp\.seed"):
        DPConfig(seed=-1)


def test_seeded_dp_heads_that_differ_in_any_setting_get_other_streams(monkeypatch) -> None:
    """Under one dp.seed, heads that differ only in the clipping norm, the DP learning rate or a
    method setting must not share sampling, noise or dropout (shared noise cancels in their
    difference); the same settings give the same streams (reproducible)."""
    from privacy import dp as dp_module

    seen = []
    derive = dp_module.DPStreams.derive.__func__

    def spy(cls, seed, context):
        out = derive(cls, seed, context)
        seen.append((out.sampling, out.noise, out.dropout))
        return out

    monkeypatch.setattr(dp_module.DPStreams, "derive", classmethod(spy))
    base = DPConfig(noise_multiplier=1.0, accountant="rdp", seed=3)
    _dp_run(base)
    _dp_run(base)
    _dp_run(dataclasses.replace(base, max_grad_norm=0.5))
    fast_lr = dataclasses.replace(FAST, lr=FAST.lr * 2)
    method = registry.build("csq", spec(dropout=0.1), seed=0)
    dp_fit(method, data(60, 1), data(40, 2), config=fast_lr, dp=base)
    from hashers.csq import CSQConfig

    method = registry.build("csq", spec(dropout=0.1), CSQConfig(lambda_q=0.5), seed=0)
    dp_fit(method, data(60, 1), data(40, 2), config=FAST, dp=base)
    assert seen[0] == seen[1]
    for other in seen[2:]:
        assert not set(other) & set(seen[0]), other


def test_dp_history_holds_no_training_loss_and_the_bar_no_train_number(capsys) -> None:
    """Under DP the history carries the epoch, dp_epsilon and val-only scores, never the per-epoch
    mean training losses (un-noised functions of the private records: with σ = 1000 they still
    told neighbouring datasets apart); the progress bar shows none of them either."""
    train = data(30, 1)
    cfg = dataclasses.replace(FAST, epochs=2, batch_size=10, progress=True)
    method = registry.build("csq", spec(), seed=0)
    result, _ = dp_fit(
        method, train, data(40, 2), config=cfg,
        dp=DPConfig(noise_multiplier=1000.0, accountant="rdp", seed=0),
    )  # fmt: skip
    for row in result.history:
        assert not [k for k in row if k.startswith("loss")], row
        assert set(row) - {"epoch", "dp_epsilon"} <= {f"val_{s}" for s in SELECTION_SCORES}, row
    bar = capsys.readouterr().err
    assert "dp_epsilon" in bar and "loss" not in bar


def test_non_finite_weights_under_dp_quote_no_training_value() -> None:
    """A divergence under DP is found on the weights; its message holds no training number (the
    non-private message quotes max|train.x|)."""
    big = EmbeddingSet(data(40, 1).x * 1e30, data(40, 1).y)
    method = registry.build("csq", spec(), seed=0)
    with pytest.raises(HashingError, match="weights became non-finite") as err:
        dp_fit(
            method, big, data(40, 2), config=dataclasses.replace(FAST, lr=1e30),
            dp=DPConfig(noise_multiplier=1e30, accountant="rdp", seed=0),
        )  # fmt: skip
    assert "inputs reach" not in str(err.value) and "e+3" not in str(err.value)
