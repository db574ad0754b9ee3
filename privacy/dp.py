"""DP-SGD for hashing heads: Poisson batches, per-sample gradients, Opacus' optimiser and accountant.

Abadi et al., "Deep Learning with Differential Privacy", CCS 2016 (DP-SGD); Yousefpour et al.,
"Opacus: User-Friendly Differential Privacy Library in PyTorch", 2021; Gopi, Lee & Wutschitz,
"Numerical Composition of Differential Privacy", NeurIPS 2021 (the PRV accountant, default here);
Mironov, "Rényi Differential Privacy", CSF 2017 (RDP, selectable).

What the guarantee covers: the influence of one *training record* (embedding + label) on the trained
head and on every number the DP training path reports. It does not cover a released code: a code is
a deterministic function of its record (see :mod:`privacy.release` for codes). The ε is per head:
heads trained on the same records compose, so the study's DP heads of one training split (every
``dp.epsilons`` x method x bits) published together protect a record at the sum of their ε and δ
(basic composition), e.g. 1 + 3 + 8 = 12 for one method and length; the grid is an analysis of
the trade-off, not a plan to publish every head.

How :func:`dp_fit` keeps the ε honest, step by step:

- **Which methods.** Only methods whose loss is a mean of per-sample terms that depend on the sample
  and the parameters alone (``HashingMethod.per_sample_loss``: TCL, CNNH, CSQ). Pairwise, triplet,
  GAN and memory-bank losses couple records: the gradient "of record i" then depends on its
  batch-mates, per-sample clipping no longer bounds one record's influence, and the accountant's ε
  would be false, so :func:`check_dp_capable` refuses them.
- **Sampling.** :class:`PoissonBatches` includes every training row independently with probability
  ``q = batch_size / N`` at every step, which is the sampling the accountants analyse. An empty draw
  is still a step: Opacus' ``DPOptimizer`` adds the Gaussian noise to a zero sum, applies the update
  and the accountant counts it, exactly as the analysis assumes (skipping it would change the
  number of steps the ε was computed for). Each epoch has the trainer's step count
  (:func:`hashers.trainer.steps_per_epoch`): ``ceil(N / B)`` with ``B = min(batch_size, N)``, less
  one when ``N mod B == 1`` (the trainer drops a lone last row), so ``train.max_steps`` and
  ``train.epochs`` mean the same with DP; the accountant counts exactly these steps.
- **Per-sample gradients.** ``torch.func`` (``vmap`` of ``grad`` over ``functional_call`` of the
  whole method: head, learned centers, classifier) gives each record's gradient of its own loss.
  Opacus' module hooks (``GradSampleModule``) would miss parameters used only inside the loss, such
  as TCL's centers, whose true gradient they would silently replace by pure noise; the same
  ``torch.func`` machinery is what Opacus' functorch grad sampler uses. Opacus' ``DPOptimizer``
  then clips each gradient to ``max_grad_norm``, sums, adds ``N(0, σ² C²)`` noise and divides by
  the *expected* batch size ``q N`` (``loss_reduction="mean"``, what Poisson sampling needs; the
  per-sample losses are each a record's own loss, not scaled by the realised batch size).
- **Noise.** σ is calibrated by Opacus' ``get_noise_multiplier`` so that the planned
  ``epochs x steps`` reach at most the target ε at δ; unreachable targets are a
  :class:`PrivacyError`.
- **Randomness.** The ε holds only against someone who cannot replay the Poisson draws and the
  noise: with their seed, an adversary who knows every record but one retrains on both
  neighbouring datasets and matches the weights bit for bit. ``DPConfig.seed=None`` (the default)
  therefore seeds the Poisson sampling, the Gaussian noise and dropout from OS entropy
  (``numpy.random.SeedSequence()``), recorded nowhere; an integer seed makes a run reproducible
  (tests, benches) and the guarantee then holds only against someone without it. Each stream is
  derived from the seed and every setting of the run (the DP block, the training settings, the
  method's settings and head shape, σ, N, and the caller's context: the pipeline passes the
  dataset and the embeddings the head trains on, backbone and content fingerprint), so two
  DP heads that differ in any setting never share noise (cancellation of shared noise would
  otherwise reveal the difference of their clean gradients); two runs with the same seed and the
  same settings are the same run, so a seed must not be reused for heads that are published
  apart. Initialisation and the val halves of model selection stay seeded by the trainer's seed:
  they read no training record, so knowing them costs no privacy. The generators are torch's (Philox on CUDA, Mersenne Twister on the CPU), not
  cryptographically secure even when seeded from OS entropy: Opacus' ``secure_mode`` needs
  torchcsprng, which is not installed; the guarantee also assumes nobody reconstructs their state
  from the published head.
- **Label-derived state.** CSQ's centers and TCL's initial centers come from the seed only. CNNH's
  step-1 target codes would be solved on the training label sets and ordered by class frequency
  (read outside the accounted steps); under DP they are recomputed on the *public label space*
  (one set per class, equal weights), so a record's target depends on its own label only. CNNH
  under DP therefore needs single-label data.
- **Input statistics.** A head that standardises its input (``HeadSpec.standardize``) stores
  per-feature means and scales. The trainer takes them from the training split; under DP,
  :class:`DPSGD` takes them from the validation split instead, so they read no training record.
- **Model selection.** The trainer selects epochs with the training codes as KNN database, which
  reads the training records outside the accounted steps. Under DP that selection is discarded:
  :class:`DPSGD` scores each epoch by KNN between two fixed halves of the *validation* split
  (no training record is read; :func:`check_val_halves` refuses a ``k`` above half the val rows
  before training), keeps the best epoch's weights (post-processing of the DP
  iterates), writes those val-only scores into the history, and disables early stopping (its
  stopping time would depend on the train-based scores). Model selection on val therefore spends
  no privacy of the training records; the val records themselves are not protected by this ε.
- **What the DP path reports.** The plugin marks the training data private
  (``TrainingPlugin.reports_training_numbers = False``), so the trainer neither computes nor writes
  the per-epoch training losses nor the train-database selection scores; the history holds the
  epoch, ``dp_epsilon`` and the val-only ``val_*`` scores, the progress bar shows those, and a
  divergence is detected on the (noised) weights, not on the loss. Not covered: the run's wall time
  and peak memory in the metrics (they vary with the realised Poisson batch sizes) and the
  pre-training check that the training labels hold two classes.
- **Saved state.** Methods with a memory bank are refused; the saved head holds the same keys as
  without DP (nothing is wrapped), so it round-trips through ``pipeline/artifacts.py``.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import logging
import math
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from hashers.base import Batch, EmbeddingSet, HashingMethod
from hashers.trainer import (
    FitConfig,
    FitResult,
    TrainingPlugin,
    fit,
    on_cpu,
    seed_global_generators,
    steps_per_epoch,
    val_scores,
)
from privacy.errors import PrivacyError
from privacy.streams import seed_sequence

log = logging.getLogger(__name__)

ACCOUNTANTS = ("prv", "rdp")


@dataclass(frozen=True, kw_only=True)
class DPConfig:
    """DP-SGD settings. ``delta=None`` means ``0.1 / N`` (below 1/N, as DP for N records needs).

    ``noise_multiplier``: an explicit σ instead of calibrating it to ``epsilon`` (audits, tests);
    ``epsilon`` is then only reported, never targeted.

    ``seed``: ``None`` = Poisson sampling, noise and dropout from OS entropy, recorded nowhere (no
    seed to replay; the generators are not cryptographic: module doc); an int = reproducible, and the ε holds only against someone who
    does not know it (module doc, *Randomness*).
    """

    epsilon: float = 8.0
    delta: float | None = None
    max_grad_norm: float = 1.0
    accountant: str = "prv"
    noise_multiplier: float | None = None
    seed: int | None = None

    @property
    def randomness(self) -> str:
        """``"secret"`` (OS entropy, recorded nowhere) or ``"seeded"`` (reproducible by anyone who
        knows ``seed``)."""
        return "secret" if self.seed is None else "seeded"

    def __post_init__(self) -> None:
        if self.seed is not None and (isinstance(self.seed, bool) or self.seed < 0):
            raise PrivacyError(f"dp.seed={self.seed}: use a non-negative integer or null (secret)")
        if not 0 < self.epsilon < math.inf:  # NaN fails too; ∞ made Opacus return σ = 10
            raise PrivacyError(
                f"dp.epsilon={self.epsilon}: the privacy budget must be finite and > 0 (e.g. 1, "
                "3, 8); ε = ∞ is a plain head (the train stage)"
            )
        if self.delta is not None and not 0 < self.delta < 1:
            raise PrivacyError(f"dp.delta={self.delta}: δ must lie in (0, 1); use e.g. 1e-5")
        if not 0 < self.max_grad_norm < math.inf:  # ∞: σ·C = ∞ noise, NaN weights after a step
            raise PrivacyError(
                f"dp.max_grad_norm={self.max_grad_norm}: the clipping norm must be finite and > 0 "
                "(e.g. 0.1 or 1.0)"
            )
        if self.accountant not in ACCOUNTANTS:
            raise PrivacyError(
                f"dp.accountant={self.accountant!r}: use one of {', '.join(ACCOUNTANTS)}"
            )
        if self.noise_multiplier is not None and not 0 < self.noise_multiplier < math.inf:
            raise PrivacyError(
                f"dp.noise_multiplier={self.noise_multiplier}: must be finite and > 0"
            )

    def resolved_delta(self, n_train: int) -> float:
        """δ for ``n_train`` records; warns when δ >= 1/N (such a δ allows leaking one record)."""
        delta = 0.1 / n_train if self.delta is None else self.delta
        if delta >= 1.0 / n_train:
            warnings.warn(
                f"dp.delta={delta:g} is >= 1/N = {1.0 / n_train:g}: a mechanism that publishes one "
                "random record in full meets this δ; use δ < 1/N (default 0.1/N)",
                UserWarning,
                stacklevel=2,
            )
            log.warning("dp.delta=%g >= 1/N=%g", delta, 1.0 / n_train)
        return delta


def check_dp_capable(method: HashingMethod) -> None:
    """Raise :class:`PrivacyError` unless DP-SGD's ε is valid for ``method`` (see module doc)."""
    name = method.name
    if getattr(method, "bank", None) is not None:
        raise PrivacyError(
            f"{name} with memory_bank=true cannot train under DP: the bank stores one code per "
            "training record, couples every record's loss to the others and is saved with the "
            f"head; set methods.{name}.memory_bank: false, or use csq, tcl or cnnh"
        )
    reason = dp_refusal(type(method))
    if reason is not None:
        raise PrivacyError(reason)


def dp_refusal(cls: type[HashingMethod]) -> str | None:
    """Why hashing method class ``cls`` cannot train under DP-SGD whatever its settings (None if
    it can): closed-form methods are not trained by SGD, and a loss that couples records voids
    per-sample clipping. ``parse_params`` checks ``dp.methods`` with it before any stage runs."""
    name = cls.name
    if not cls.trainable:
        return (
            f"{name} is fitted in closed form on the whole training set, not by SGD; DP-SGD does "
            "not apply (use csq, tcl or cnnh under DP)"
        )
    custom_step = cls.training_step is not HashingMethod.training_step
    if not cls.per_sample_loss or custom_step:
        return (
            f"{name} cannot train under DP: its loss couples records (pairs, triplets, banks or "
            "adversarial steps), so one record's gradient depends on the others, per-sample "
            "clipping does not bound a record's influence and the reported ε would be false; "
            "use a per_sample_loss method: csq, tcl or cnnh"
        )
    return None


@dataclass(frozen=True)
class PoissonBatches:
    """Poisson sampling: each row joins each step independently with probability ``sample_rate``.

    ``steps`` steps per epoch. Empty draws are yielded as empty index tensors: DP-SGD must still
    take (and account) a noise-only step for them.
    """

    sample_rate: float
    steps: int

    def batches(
        self, train: EmbeddingSet, batch_size: int, generator: torch.Generator
    ) -> Iterator[Tensor]:
        n = len(train)
        for _ in range(self.steps):
            yield torch.nonzero(torch.rand(n, generator=generator) < self.sample_rate).squeeze(1)


@functools.lru_cache(maxsize=256)
def calibrate_noise(
    *, epsilon: float, delta: float, sample_rate: float, steps: int, accountant: str
) -> float:
    """Smallest σ (within Opacus' 0.01 ε tolerance) whose ε after ``steps`` is <= ``epsilon``.

    Memoised: the answer is a pure function of its arguments, and the PRV accountant takes seconds
    per evaluation (its domain bound runs RDP at fractional orders), so heads sharing a schedule
    (methods, seeds) calibrate once per process.
    """
    from opacus.accountants.utils import get_noise_multiplier

    try:
        with (
            warnings.catch_warnings()
        ):  # RDP's "optimal order is the largest alpha" while bracketing
            warnings.filterwarnings("ignore", message="Optimal order")
            return float(
                get_noise_multiplier(
                    target_epsilon=epsilon,
                    target_delta=delta,
                    sample_rate=sample_rate,
                    steps=steps,
                    accountant=accountant,
                )
            )
    except (ValueError, RuntimeError, OverflowError, ArithmeticError) as err:
        raise PrivacyError(
            f"target ε={epsilon} (dp.epsilons, --epsilon): the {accountant} accountant cannot "
            f"reach it at δ={delta:g} with sample rate {sample_rate:.4g} over {steps} steps "
            f"({err}); raise the ε, take fewer steps (dp.epochs, train.max_steps), a lower "
            "sample rate (dp.batch_size) or a larger dp.delta"
        ) from None


@functools.lru_cache(maxsize=4096)
def epsilon_of(
    *, noise_multiplier: float, sample_rate: float, steps: int, delta: float, accountant: str
) -> float:
    """ε of ``steps`` Poisson-subsampled Gaussian steps, straight from an Opacus accountant
    (memoised, as :func:`calibrate_noise`: the per-epoch ε of a schedule is computed once)."""
    from opacus.accountants import create_accountant

    acc = create_accountant(mechanism=accountant)
    acc.history = [(noise_multiplier, sample_rate, steps)]
    return float(acc.get_epsilon(delta=delta))


class _PerSampleLoss(nn.Module):
    """``(x, y, idx) -> (loss, terms)`` of one method, so ``functional_call`` swaps every parameter
    the loss touches (head, centers, classifier), not only the head's."""

    def __init__(self, method: HashingMethod) -> None:
        super().__init__()
        self.method = method

    def forward(self, x: Tensor, y: Tensor, idx: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        terms = self.method.compute_loss(self.method(x), y, idx)
        return terms["loss"], {k: v.detach() for k, v in terms.items()}


def per_sample_gradients(
    method: HashingMethod, x: Tensor, y: Tensor, idx: Tensor
) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    """Gradient of each record's own loss ``∇θ ℓ_i`` (``[B, *param.shape]`` per trainable
    parameter name) and each record's loss terms ``[B]``, via ``torch.func``.

    Each record is run as a batch of one inside ``vmap``, so ``compute_loss``'s batch mean is the
    record's own loss; dropout draws differ per record (``randomness="different"``).
    """
    wrapper = _PerSampleLoss(method)
    params = {n: p.detach() for n, p in wrapper.named_parameters() if p.requires_grad}
    buffers = dict(wrapper.named_buffers())

    def one(p: dict[str, Tensor], xi: Tensor, yi: Tensor, ii: Tensor) -> Any:
        return torch.func.functional_call(
            wrapper, (p, buffers), (xi.unsqueeze(0), yi.unsqueeze(0), ii.unsqueeze(0))
        )

    grad_fn = torch.func.grad_and_value(one, has_aux=True)
    grads, (_, terms) = torch.func.vmap(grad_fn, in_dims=(None, 0, 0, 0), randomness="different")(
        params, x, y, idx
    )
    prefix = "method."
    return {n[len(prefix) :]: g for n, g in grads.items()}, terms


def public_label_targets(method: HashingMethod, train: EmbeddingSet) -> None:
    """CNNH under DP: target codes from the public label space, not the training label sets."""
    from hashers.cnnh import CNNH

    if not isinstance(method, CNNH):
        return
    per_row = train.y.sum(dim=1)
    if bool((per_row != 1).any()):
        raise PrivacyError(
            "cnnh under DP needs single-label data (its target codes are solved over label sets, "
            "which for multi-label data would be read from the private records); use csq, whose "
            "multi-label centers are data-independent"
        )
    c = train.n_classes
    device = method.targets.device
    with torch.random.fork_rng(devices=[]):
        method.on_fit_start(EmbeddingSet(torch.zeros(c, train.dim), torch.eye(c)))
    class_codes = method.targets.clone()  # row c = the target of class c
    method.targets = class_codes[train.y.argmax(dim=1).to(class_codes.device)].to(device)


def check_val_halves(n_val: int, k: int) -> None:
    """Refuse a KNN ``k`` larger than the val half that DP-SGD's model selection uses as database.

    :class:`DPSGD` scores each epoch by KNN between two halves of val (``n_val // 2`` rows each, the
    odd row joins the queries), so it needs ``k <= n_val // 2``; checked before σ is calibrated and
    any step is taken, instead of failing after the first epoch.
    """
    half = n_val // 2
    if k > half:
        lower = f"lower knn.k to at most {half} or " if half >= 1 else ""
        raise PrivacyError(
            f"k={k} (knn.k) exceeds the {half} rows of the val half that DP-SGD's model selection "
            f"uses as KNN database (half of {n_val} val rows; the other half are the queries): "
            f"{lower}use a validation split of at least {2 * k} rows"
        )


@dataclass(frozen=True, repr=False)
class DPStreams:
    """Seeds of the three private random streams of one DP-SGD run: Poisson sampling, Gaussian
    noise, dropout. Held in memory only (``repr`` hides them); see the module doc, *Randomness*."""

    sampling: int
    noise: int
    dropout: int

    @classmethod
    def derive(cls, seed: int | None, context: Mapping[str, Any]) -> DPStreams:
        """OS entropy for ``seed=None``, else derived from ``seed`` and ``context``."""
        children = seed_sequence(seed, {"use": "dp-sgd", **context}).spawn(3)
        words = [int(c.generate_state(1, np.uint64)[0]) & (2**63 - 1) for c in children]
        return cls(*words)

    def __repr__(self) -> str:
        return "DPStreams(<hidden>)"


class DPSGD(TrainingPlugin):
    """The trainer plugin: DP optimiser + accountant + val-only model selection (module doc)."""

    #: the training records are private: the trainer reports no number computed from them
    reports_training_numbers = False

    def __init__(
        self,
        config: DPConfig,
        *,
        noise_multiplier: float,
        sample_rate: float,
        delta: float,
        val: EmbeddingSet,
        k: int,
        selection: str,
        seed: int,
        streams: DPStreams,
    ) -> None:
        self.config = config
        self.noise_multiplier = noise_multiplier
        self.sample_rate = sample_rate
        self.delta = delta
        self.k, self.selection, self.seed = k, selection, seed
        self.streams = streams
        # val halves: seeded by the trainer's seed (public: they read no training record)
        perm = torch.randperm(len(val), generator=torch.Generator().manual_seed(seed))
        half = max(1, len(val) // 2)
        self.val_db, self.val_q = val.subset(perm[:half]), val.subset(perm[half:])
        self.accountant: Any = None
        self.optimizer: Any = None
        self.best: tuple[float, int] = (-1.0, -1)
        self.best_scores: dict[str, float] = {}
        self.best_state: dict[str, Tensor] | None = None
        self.val_history: list[dict[str, float]] = []

    def setup(
        self, method: HashingMethod, optimizer: torch.optim.Optimizer, train: EmbeddingSet
    ) -> torch.optim.Optimizer:
        from opacus.accountants import create_accountant
        from opacus.optimizers import DPOptimizer

        check_dp_capable(method)
        public_label_targets(method, train)
        device = next(method.parameters()).device
        expected = max(1, round(self.sample_rate * len(train)))
        self.optimizer = DPOptimizer(
            optimizer,
            noise_multiplier=self.noise_multiplier,
            max_grad_norm=self.config.max_grad_norm,
            expected_batch_size=expected,
            loss_reduction="mean",
            generator=torch.Generator(device=device).manual_seed(self.streams.noise),
        )
        # dropout draws (inside the per-sample vmap) come from torch's global generators: secret
        # too, or a known seed would fix which mask each record of a batch gets
        seed_global_generators(self.streams.dropout, device)
        self.accountant = create_accountant(mechanism=self.config.accountant)
        self.optimizer.attach_step_hook(
            self.accountant.get_optimizer_hook_fn(sample_rate=self.sample_rate)
        )
        # the instance attribute shadows the class's step for this fit only (teardown removes it)
        method.training_step = self._step  # type: ignore[method-assign]
        self._method = method
        return self.optimizer

    def input_reference(self, train: EmbeddingSet, val: EmbeddingSet) -> Tensor:
        return val.x  # statistics of val: no training record read outside the accounted steps

    def batch_generator(self, default: torch.Generator) -> torch.Generator:
        return torch.Generator().manual_seed(self.streams.sampling)  # the Poisson draws

    def _step(self, batch: Batch, optimizer: torch.optim.Optimizer) -> dict[str, Tensor]:
        method = self._method
        named = [(n, p) for n, p in method.named_parameters() if p.requires_grad]
        optimizer.zero_grad(set_to_none=True)
        if len(batch.idx) == 0:  # an empty Poisson draw: a noise-only step, still accounted
            for _, p in named:
                p.grad_sample = torch.zeros(0, *p.shape, dtype=p.dtype, device=p.device)
            optimizer.step()
            return {}
        grads, terms = per_sample_gradients(method, batch.x, batch.y, batch.idx)
        for n, p in named:
            p.grad_sample = grads[n]
        optimizer.step()
        return {k: v.mean() for k, v in terms.items()}

    def spent(self) -> float:
        """ε spent so far: the accountant's own history, evaluated by :func:`epsilon_of` (the same
        Opacus accountant, memoised) when it holds one ``(σ, q, steps)`` entry, as DP-SGD's does."""
        if self.accountant is None or len(self.accountant) == 0:
            return 0.0
        history = getattr(self.accountant, "history", None)
        if history and len(history) == 1:
            sigma, q, steps = history[0]
            return epsilon_of(
                noise_multiplier=float(sigma),
                sample_rate=float(q),
                steps=int(steps),
                delta=self.delta,
                accountant=self.config.accountant,
            )
        return float(self.accountant.get_epsilon(delta=self.delta))

    def epoch_end(self, epoch: int) -> dict[str, float]:
        method = self._method
        method.cpu()  # the trainer moves it back to its device after its own checks
        scores = val_scores(method, self.val_db, self.val_q, k=self.k)
        score = scores[f"val_{self.selection}"]
        if score >= self.best[0]:  # ties go to the later epoch, as in the trainer
            self.best = (score, epoch)
            self.best_scores = scores
            self.best_state = copy.deepcopy(
                {k: v.detach().cpu() for k, v in method.state_dict().items()}
            )
        self.val_history.append(scores)
        return {"dp_epsilon": self.spent(), **scores}

    def teardown(self, method: HashingMethod) -> None:
        if "training_step" in vars(method):
            del method.training_step
        for p in method.parameters():
            for attr in ("grad_sample", "summed_grad"):
                if hasattr(p, attr):
                    delattr(p, attr)


@dataclass(frozen=True)
class DPReport:
    """What DP-SGD spent: final ε at δ and the mechanism's parameters (all aggregates)."""

    epsilon: float
    delta: float
    target_epsilon: float | None
    noise_multiplier: float
    sample_rate: float
    steps: int
    max_grad_norm: float
    accountant: str

    def summary(self) -> dict[str, Any]:
        out = {f"dp_{f.name}": getattr(self, f.name) for f in dataclasses.fields(self)}
        if out["dp_target_epsilon"] is None:
            del out["dp_target_epsilon"]
        return out


def dp_fit(
    method: HashingMethod,
    train: EmbeddingSet,
    val: EmbeddingSet,
    *,
    config: FitConfig,
    dp: DPConfig,
    context: Mapping[str, Any] | None = None,
) -> tuple[FitResult, DPReport]:
    """Train ``method`` with DP-SGD through the one trainer; see the module docstring.

    ``context`` (the dataset, the embeddings' backbone and fingerprint, ...) joins the derivation
    of a seeded run's streams (``dp.seed``), so heads that differ in it never share noise; it is
    unused when ``dp.seed`` is ``None``. The settings of ``method``, ``config`` and ``dp`` join it
    here; what the head trains on is the caller's to pass (``pipeline.train_dp`` passes the
    embeddings block of the head's ``config.json``).
    """
    check_dp_capable(method)
    check_val_halves(len(val), config.k)
    train, val = on_cpu(train), on_cpu(val)  # DPSGD's val halves are scored in numpy
    # the trainer's term (config.geometry) or one a caller put on the method by hand
    own = method.geometry_weight if method.geometry_term is not None else 0.0
    geometry = config.geometry if config.geometry > 0.0 else own
    if geometry > 0.0:
        raise PrivacyError(
            f"geometry={geometry}: the neighbourhood term couples the records of a batch, "
            "so per-sample clipping would not bound one record's influence; DP heads train with "
            "geometry 0 (pipeline.train_dp.dp_fit_config sets it; a term set on the method by "
            "hand must be removed)"
        )
    n = len(train)
    if n < 2:
        raise PrivacyError(f"DP-SGD needs at least 2 training records, got {n}")
    delta = dp.resolved_delta(n)
    bs = min(config.batch_size, n)
    q = bs / n
    per_epoch = steps_per_epoch(n, bs)
    epochs = config.epoch_budget(n)
    planned = epochs * per_epoch
    if dp.noise_multiplier is not None:
        sigma, target = dp.noise_multiplier, None
    else:
        sigma, target = (
            calibrate_noise(
                epsilon=dp.epsilon,
                delta=delta,
                sample_rate=q,
                steps=planned,
                accountant=dp.accountant,
            ),
            dp.epsilon,
        )
    log.info(
        "%s-%d under DP: σ=%.4g, q=%.4g, %d steps (%d epochs), C=%g, δ=%.3g, %s accountant",
        method.name,
        method.spec.n_bits,
        sigma,
        q,
        planned,
        epochs,
        dp.max_grad_norm,
        delta,
        dp.accountant,
    )
    plugin = DPSGD(
        dp,
        noise_multiplier=sigma,
        sample_rate=q,
        delta=delta,
        val=val,
        k=config.k,
        selection=config.selection,
        seed=config.seed,
        streams=DPStreams.derive(
            dp.seed,
            {
                **(context or {}),
                "method": method.name,
                "bits": method.spec.n_bits,
                "target_epsilon": target,
                "noise_multiplier": sigma,
                "n_train": n,
                "fit_seed": config.seed,
                # every other setting too: heads that differ in any of them (C, lr, a method
                # weight, ...) never share sampling, noise or dropout under one dp.seed
                "dp": {k: v for k, v in dataclasses.asdict(dp).items() if k != "seed"},
                "fit": {
                    k: v
                    for k, v in dataclasses.asdict(config).items()
                    if k not in ("progress", "device")
                },
                "method_config": dataclasses.asdict(method.config)
                if dataclasses.is_dataclass(method.config)
                else repr(method.config),
                "head_spec": dataclasses.asdict(method.spec),
            },
        ),
    )
    # no early stopping: the trainer's stopping time would depend on train-database scores
    cfg = dataclasses.replace(config, patience=epochs + 1)
    result = fit(
        method,
        train,
        val,
        config=cfg,
        batches=PoissonBatches(q, per_epoch),
        plugin=plugin,
    )
    if plugin.best_state is not None:
        method.load_state_dict(plugin.best_state)
    method.eval()
    # the history rows hold the val-only scores (DPSGD.epoch_end); the selection is the plugin's
    result = dataclasses.replace(
        result,
        best_epoch=plugin.best[1],
        best_val_accuracy=plugin.best_scores.get("val_accuracy", 0.0),
    )
    steps = len(plugin.accountant) if plugin.accountant is not None else 0
    report = DPReport(
        epsilon=plugin.spent(),
        delta=delta,
        target_epsilon=target,
        noise_multiplier=sigma,
        sample_rate=q,
        steps=_accounted_steps(plugin.accountant, steps),
        max_grad_norm=dp.max_grad_norm,
        accountant=dp.accountant,
    )
    return result, report


def _accounted_steps(accountant: Any, default: int) -> int:
    """Total steps in an Opacus accountant's history (entries are ``(σ, q, count)``)."""
    history = getattr(accountant, "history", None)
    if not history:
        return default
    return int(sum(entry[-1] for entry in history))
