"""The only training loop of hashaudit: ``fit(method, train, val, config=...) -> FitResult``.

Model selection and early stopping use the *validation* split only: each epoch the val embeddings are
encoded and classified by tie-aware KNN against the training codes (the same protocol as the final
evaluation), and the best epoch's weights are restored at the end. The test split is never seen.
The default selection score is class-balanced (:func:`val_scores`), so on an imbalanced set the
chosen epoch is not one that serves the majority class alone. Batches come from a
:class:`BatchPlan`: a seeded shuffle, or class-balanced sampling (:class:`ClassBalancedBatches`,
``FitConfig.class_balance``). Every draw uses a seeded generator, so on CPU the same seed gives
bit-identical codes. The val subsets (``val_queries`` queries, ``val_database`` training rows) are
drawn from the same generator as the training batches, before them, so changing ``val_queries`` or
``val_database`` (or a split growing past them) changes the training trajectory, not only the
selection; one generator is kept so that committed results stay reproducible.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import logging
import math
import numbers
import resource
import sys
import time
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import torch
from tqdm.auto import tqdm

from hashers import functional
from hashers.base import (
    SEED_LIMIT,
    Batch,
    EmbeddingSet,
    HashingError,
    HashingMethod,
    is_integer,
)
from hashers.devices import resolve_device
from retrieval.codes import pack_bits
from retrieval.knn import tally_from_counts
from retrieval.metrics import accuracy, balanced_accuracy
from retrieval.ranking import ap_all, harmonic
from retrieval.search import HammingIndex

log = logging.getLogger(__name__)


#: val scores that can pick the epoch (``FitConfig.selection``); see :func:`val_scores`.
SELECTION_SCORES = (
    "balanced_soft_accuracy",
    "balanced_accuracy",
    "soft_accuracy",
    "accuracy",
    "balanced_map",
)


#: FitConfig fields that must be integers (max_steps: or None), and those that must be numbers
_INT_FIELDS = (
    "epochs",
    "max_steps",
    "batch_size",
    "patience",
    "val_queries",
    "val_database",
    "selection_window",
    "k",
    "seed",
)
_REAL_FIELDS = ("lr", "weight_decay", "class_balance", "ema_epochs", "geometry")


@dataclass(frozen=True, kw_only=True)
class FitConfig:
    epochs: int = 60
    # step budget in whole epochs: max(1, max_steps // steps per epoch) epochs at most (at least
    # one whole epoch runs; see epoch_budget)
    max_steps: int | None = None
    batch_size: int = 256
    lr: float = 1e-3
    weight_decay: float = 1e-4
    patience: int = 10
    val_queries: int = 2000
    val_database: int = 20000
    # the val score that picks the epoch, one of SELECTION_SCORES
    selection: str = "balanced_soft_accuracy"
    # epochs averaged (centred) before the argmax: 1 = the plain per-epoch score
    selection_window: int = 1
    class_balance: float = 0.0  # 0 = natural class rates per batch, 1 = every class equally often
    # time constant (epochs) of the exponential weight average that is scored and selected; 0 = off
    ema_epochs: float = 0.0
    # weight of the neighbourhood term added to every trainable method's loss
    # (HashingMethod.with_geometry; perplexity k); 0 = the method's own loss alone
    geometry: float = 0.0
    k: int = 7
    seed: int = 0
    device: str = "cpu"
    progress: bool = True

    def __post_init__(self) -> None:
        # types first: epochs=2.5 or batch_size=2.5 failed inside range() / torch, a numpy seed
        # inside torch ("an integer is required"), max_steps=2.5 gave a float epoch budget, and
        # seed=-1 trained the head of seed 2**64 - 1 (torch wraps it; registry.build refuses it)
        for key in _INT_FIELDS:
            value = getattr(self, key)
            if key == "max_steps" and value is None:
                continue
            if not is_integer(value):
                raise HashingError(f"{key}={value!r} must be an integer")
            object.__setattr__(self, key, int(value))
        for key in _REAL_FIELDS:
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, numbers.Real):
                raise HashingError(f"{key}={value!r} must be a number")
        if not 0 <= self.seed < SEED_LIMIT:
            raise HashingError(f"seed={self.seed}: use an integer from 0 to 2**64 - 1")
        # AdamW refused these with a ValueError naming no setting; lr=inf trained a NaN epoch
        if not (self.lr > 0.0 and math.isfinite(self.lr)):
            raise HashingError(f"lr={self.lr}: use a finite learning rate > 0 (e.g. 1e-3)")
        if not (self.weight_decay >= 0.0 and math.isfinite(self.weight_decay)):
            raise HashingError(
                f"weight_decay={self.weight_decay}: use a finite weight decay >= 0 (e.g. 1e-4)"
            )
        if self.k < 1:
            raise HashingError(f"k={self.k}: the KNN model selection needs k >= 1 neighbours")
        if self.selection not in SELECTION_SCORES:
            raise HashingError(
                f"selection={self.selection!r}: use one of {', '.join(SELECTION_SCORES)}"
            )
        if self.selection_window < 1 or self.selection_window % 2 == 0:
            raise HashingError(
                f"selection_window={self.selection_window}: use an odd number of epochs >= 1 "
                "(1 = no smoothing)"
            )
        if not 0.0 <= self.class_balance <= 1.0:
            raise HashingError(
                f"class_balance={self.class_balance}: use a value from 0 (natural class rates) "
                "to 1 (every class equally often)"
            )
        if not (self.ema_epochs >= 0.0 and math.isfinite(self.ema_epochs)):
            raise HashingError(
                f"ema_epochs={self.ema_epochs}: use 0 (no weight averaging) or a positive number "
                "of epochs"
            )
        if not (self.geometry >= 0.0 and math.isfinite(self.geometry)):
            raise HashingError(
                f"geometry={self.geometry}: use 0 (the method's own loss) or a positive weight"
            )
        if self.epochs < 1 or self.patience < 1:
            raise HashingError(
                f"epochs={self.epochs}, patience={self.patience}: both must be >= 1 (an epoch "
                "count, and the epochs without a val gain before stopping)"
            )
        if self.max_steps is not None and self.max_steps < 1:
            raise HashingError(f"max_steps={self.max_steps}: use a positive step budget or None")
        if self.batch_size < 1:
            raise HashingError(f"batch_size={self.batch_size}: use a positive batch size")
        if self.val_queries < 1 or self.val_database < 1:
            raise HashingError(
                f"val_queries={self.val_queries}, val_database={self.val_database}: both must be "
                ">= 1 (the val rows scored each epoch, and the training rows they are matched "
                "against)"
            )

    def epoch_budget(self, n_train: int) -> int:
        """Epochs to run on ``n_train`` rows: ``epochs``, capped by the ``max_steps`` budget.

        An epoch has ``ceil(n / batch_size)`` steps (a lone last row is dropped). The cap is
        ``max(1, max_steps // steps_per_epoch)`` whole epochs, so small sets run all ``epochs`` and
        a large one (PathMNIST's 90k rows: 352 steps at batch 256) a few passes of many steps.
        """
        steps = steps_per_epoch(n_train, min(self.batch_size, n_train))
        if self.max_steps is None:
            return self.epochs
        return min(self.epochs, max(1, self.max_steps // max(steps, 1)))


def steps_per_epoch(n_train: int, batch_size: int) -> int:
    """Optimiser steps in one epoch of the default batches: ``ceil(n / batch_size)``, less one
    when the last batch would hold a lone row, which is dropped (a batch of one has no pairs; the
    permutation changes every epoch, so no row is left out every time)."""
    return max(
        -(-n_train // batch_size) - (1 if n_train % batch_size == 1 and n_train >= 2 else 0), 1
    )


@dataclass
class FitResult:
    best_epoch: int
    best_val_accuracy: float
    epochs_run: int
    wall_time_s: float
    peak_memory_mb: float
    history: list[dict[str, float]] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        best = next((r for r in self.history if r.get("epoch") == self.best_epoch), {})
        return {
            "best_epoch": self.best_epoch,
            "best_val_accuracy": self.best_val_accuracy,
            "best_val_balanced_accuracy": float(best.get("val_balanced_accuracy", 0.0)),
            "epochs_run": self.epochs_run,
            "train_wall_time_s": self.wall_time_s,
            "peak_memory_mb": self.peak_memory_mb,
        }


class BatchPlan(Protocol):
    """Which training rows form each optimiser step of one epoch.

    ``batches`` yields int64 index tensors into the training set. The default,
    :class:`ShuffledBatches`, is a seeded permutation cut into fixed-size batches; other plans
    (class-balanced sampling, DP-SGD's Poisson sampling) plug in through :func:`fit`'s ``batches``.
    """

    def batches(
        self, train: EmbeddingSet, batch_size: int, generator: torch.Generator
    ) -> Iterator[torch.Tensor]: ...


@dataclass(frozen=True)
class ShuffledBatches:
    """A seeded permutation of the training rows cut into ``batch_size`` batches. A lone last row
    is dropped for that epoch (a batch of one has no pairs), unless the training set has a single
    row."""

    def batches(
        self, train: EmbeddingSet, batch_size: int, generator: torch.Generator
    ) -> Iterator[torch.Tensor]:
        n = len(train)
        perm = torch.randperm(n, generator=generator)
        for i in range(0, n, batch_size):
            idx = perm[i : i + batch_size]
            if len(idx) < 2 and n >= 2:
                continue
            yield idx


def class_rates(y: torch.Tensor, class_balance: float) -> torch.Tensor:
    """Rate at which each class is drawn: ``r_c ∝ n_c^(1 - class_balance)`` over present classes.

    ``class_balance = 0`` keeps the natural rates ``n_c / n``; ``1`` draws every present class
    equally often (``1 / C_present``); values between interpolate on a log scale. ``y`` is the
    multi-hot ``[N, C]`` label matrix; absent classes get rate 0.
    """
    counts = y.sum(dim=0).double()
    present = counts > 0
    r = torch.where(present, counts.clamp_min(1.0) ** (1.0 - class_balance), 0.0)
    return (r / r.sum()).float()


@dataclass(frozen=True)
class ClassBalancedBatches:
    """Class-balanced sampling: every row of class ``c`` is drawn with probability ``r_c / n_c``.

    ``r = class_rates(y, class_balance)``, so single-label classes are drawn at exactly the rates
    ``r`` (in expectation; rows are drawn with replacement, from a seeded generator). An epoch has
    as many draws as there are training rows, cut into ``batch_size`` batches as
    :class:`ShuffledBatches` does. Multi-label rows weigh ``mean_{c ∈ y_i} r_c / n_c`` (rows
    without a label weigh the mean row weight), which equalises labels approximately, not
    exactly. The losses themselves are untouched, so every method keeps its paper form.
    """

    class_balance: float = 1.0

    def row_weights(self, y: torch.Tensor) -> torch.Tensor:
        rates = class_rates(y, self.class_balance).double()
        per_class = rates / y.sum(dim=0).double().clamp_min(1.0)  # r_c / n_c
        n_labels = y.sum(dim=1).double()
        w = (y.double() @ per_class) / n_labels.clamp_min(1.0)
        if bool((n_labels == 0).any()):
            w = torch.where(n_labels == 0, w[n_labels > 0].mean(), w)
        return w

    def batches(
        self, train: EmbeddingSet, batch_size: int, generator: torch.Generator
    ) -> Iterator[torch.Tensor]:
        n = len(train)
        draws = torch.multinomial(
            self.row_weights(train.y), n, replacement=True, generator=generator
        )
        for i in range(0, n, batch_size):
            idx = draws[i : i + batch_size]
            if len(idx) < 2 and n >= 2:
                continue
            yield idx


def default_batches(method: HashingMethod, config: FitConfig) -> BatchPlan:
    """The plan :func:`fit` uses when none is given: class-balanced sampling for supervised
    methods when ``config.class_balance > 0``, otherwise a seeded shuffle. Both cut batches of
    ``batch_size`` rows and skip a batch of one, so ``batch_size`` must be at least 2 (DP-SGD's
    Poisson plan reads it as the *expected* batch size, where 1 is allowed)."""
    if config.batch_size < 2:
        raise HashingError(
            f"batch_size={config.batch_size}: use at least 2 (a batch of one row has no pairs "
            "and is skipped, so nothing would be trained)"
        )
    if method.supervised and config.class_balance > 0:
        return ClassBalancedBatches(config.class_balance)
    return ShuffledBatches()


class TrainingPlugin:
    """Optional hooks around the one training loop (e.g. DP-SGD with Opacus in ``privacy.dp``).

    :meth:`setup` may wrap the method's head and replace the optimiser before the first step;
    :meth:`epoch_end` returns extra numbers for the epoch's history row (e.g. the ε spent so far),
    computed with the weights the loop scores and selects that epoch (the weight average when
    ``ema_epochs > 0``);
    :meth:`teardown` undoes any wrapping before the best weights are restored and returned.

    ``reports_training_numbers = False`` (DP-SGD) marks the training records private: the loop then
    neither computes nor reports any number from them outside the plugin's steps — no training
    losses in the history or the progress bar, no train-database selection scores (the plugin's
    :meth:`epoch_end` supplies the epoch's scores and the plugin selects the epoch), and a
    divergence is detected on the weights and on the head's outputs on val rows, and its
    message quotes no training value.
    """

    reports_training_numbers: bool = True

    def setup(
        self, method: HashingMethod, optimizer: torch.optim.Optimizer, train: EmbeddingSet
    ) -> torch.optim.Optimizer:
        return optimizer

    def epoch_end(self, epoch: int) -> dict[str, float]:
        return {}

    def input_reference(self, train: EmbeddingSet, val: EmbeddingSet) -> torch.Tensor:
        """The rows whose per-feature statistics an input-standardising head stores (default the
        training split; DP-SGD uses val, whose statistics cost no privacy of the training records)."""
        return train.x

    def batch_generator(self, default: torch.Generator) -> torch.Generator:
        """The generator of the batch draws (default the fit's seeded one; DP-SGD's Poisson draws
        use their own, secret unless ``dp.seed`` is set)."""
        return default

    def teardown(self, method: HashingMethod) -> None:
        return None


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, in MiB (``ru_maxrss``: KiB on Linux, bytes on macOS)."""
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 2**20 if sys.platform == "darwin" else rss / 2**10


def peak_memory_mb(device: torch.device) -> float:
    """Peak memory of this process so far (CUDA: peak allocated on the device; else peak RSS)."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return peak_rss_mb()


def check_labels(train: EmbeddingSet, method: HashingMethod) -> None:
    if len(train) == 0:  # read as "a single class" below, which sent users to their labels
        raise HashingError(
            f"{method.name}: the training split holds no rows; give fit a non-empty training set"
        )
    if method.supervised:
        present = int((train.y.sum(dim=0) > 0).sum())
        if present < 2:
            raise HashingError(
                f"{method.name}: the training labels hold a single class; supervised hashing needs "
                "at least two classes (check the dataset, data.limit or the label column)"
            )
    if train.dim != method.spec.in_dim:
        raise HashingError(
            f"{method.name}: embeddings have dimension {train.dim} but the head expects "
            f"{method.spec.in_dim}; these embeddings come from another backbone or pooling"
        )
    if train.n_classes != method.spec.n_classes:
        raise HashingError(
            f"{method.name}: the training labels have {train.n_classes} class columns but the "
            f"head was built for n_classes={method.spec.n_classes}; build the HeadSpec with "
            f"n_classes={train.n_classes} (or pass the labels of the dataset it was built for)"
        )


def check_val(train: EmbeddingSet, val: EmbeddingSet) -> None:
    """The val split can select epochs: it has rows, and the training split's embedding dimension
    and label columns."""
    if len(val) == 0:
        raise HashingError(
            "the val split is empty; model selection needs val rows (give the dataset a val "
            "split, or carve one from train)"
        )
    if val.dim != train.dim:
        raise HashingError(f"val embeddings have dimension {val.dim}, train {train.dim}")
    if val.n_classes != train.n_classes:
        raise HashingError(
            f"the val labels have {val.n_classes} class columns, the training labels "
            f"{train.n_classes}; both splits must use the dataset's one label space"
        )


@torch.no_grad()
def nonfinite_output_rows(method: HashingMethod, x: torch.Tensor, *, batch_size: int = 8192) -> int:
    """Rows of ``x`` whose real-valued outputs ``u`` (eval mode, as :meth:`HashingMethod.encode`
    computes them) hold NaN or inf. ``encode`` maps NaN to bit 0, so a diverged head would
    otherwise give one code for every row and still be scored."""
    device = next(
        (t.device for t in itertools.chain(method.parameters(), method.buffers())),
        x.device,
    )
    was_training = method.training
    method.eval()
    try:
        bad = sum(
            int((~torch.isfinite(method.forward(x[i : i + batch_size].to(device)))).any(1).sum())
            for i in range(0, x.shape[0], batch_size)
        )
    finally:
        method.train(was_training)
    return bad


def divergence_fix(train: EmbeddingSet) -> str:
    """The fix a non-finite loss or output points to: a lower lr, or smaller inputs when they are
    huge (those overflow whatever the lr)."""
    scale = float(train.x.abs().max()) if len(train) else 0.0
    return "lower train.lr" if scale <= 1e6 else f"inputs reach {scale:.3g}: rescale them"


def val_scores(
    method: HashingMethod, train: EmbeddingSet, val: EmbeddingSet, *, k: int
) -> dict[str, float]:
    """Tie-aware Hamming KNN of ``val`` queries against ``train`` codes.

    With ``share`` the fraction of the k (tie-split) votes that go to each class:

    - ``val_accuracy``: KNN accuracy (exact match for multi-label);
    - ``val_soft_accuracy``: the mean share of the votes that agree with the true label(s);
    - ``val_balanced_accuracy``: :func:`retrieval.metrics.balanced_accuracy` of the predictions
      (mean per-class recall; multi-label: mean per-label (TPR + TNR) / 2);
    - ``val_balanced_soft_accuracy`` (the default selection score, also of the pipeline's
      ``train.selection``): the soft share averaged per
      class first, then over the classes present in val — single-label
      ``mean_c mean_{i: y_i = c} share_ic``; multi-label, per label, the mean of
      ``share`` over its positives and of ``1 - share`` over its negatives, then averaged over
      labels. It is continuous (does not jump by 1/n_val per query, which on BreastMNIST's 78
      val images lets plain accuracy pick lucky epochs) and class-balanced (an epoch that serves
      only the majority class scores about 1/C, not the majority's share);
    - ``val_balanced_map``: tie-aware average precision of each val query over the whole ranked
      ``train`` database (relevant = same class; multi-label: a shared label or none on both;
      :func:`retrieval.ranking.ap_all`), averaged per class first (multi-label: over the queries
      holding each label), then over the classes. It scores the whole ranking, not the k
      nearest codes: the score most hashing papers report, made class-balanced.
    """
    db = pack_bits(method.encode(train.x))
    q = pack_bits(method.encode(val.x))
    multilabel = method.spec.multilabel  # declared, not guessed from which rows hold two labels
    if k > len(train):  # one rule with the knn stage: never lower k silently
        raise HashingError(f"k={k} exceeds the {len(train)} rows of the KNN database; lower k")
    y_val = val.y.numpy()
    votes, pred, ap = ranked_votes(
        q, db, method.spec.n_bits, y_val, train.y.numpy(), k=k, multilabel=multilabel
    )
    shares = (votes / k).astype(np.float64)  # float32 votes, as the KNN stage computes them
    scores = vote_share_scores(shares, y_val, multilabel=multilabel, pred=pred)
    scores["val_balanced_map"] = class_balanced_mean(ap, y_val)
    return scores


def ranked_votes(
    q: np.ndarray,
    db: np.ndarray,
    n_bits: int,
    y_q: np.ndarray,
    y_db: np.ndarray,
    *,
    k: int,
    multilabel: bool,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One Hamming scan of packed query codes ``q`` against packed ``db`` codes, with multi-hot
    labels ``y_q [Q, C]`` and ``y_db [N, C]``: the tie-aware k-NN votes ``[Q, C]`` (float32, for
    the soft scores), the KNN predictions decided on the exact integer tallies as the KNN stage
    decides them (:meth:`retrieval.knn.TieTally.decide`: class ids ``[Q]`` or labels ``[Q, C]``),
    and each query's tie-aware AP over the whole ranking ``[Q]`` (:func:`retrieval.ranking.ap_all`;
    relevant = same class, multi-label: a shared label or both without any).
    """
    votes = np.zeros(y_q.shape, dtype=np.float32)
    pred = np.zeros(y_q.shape if multilabel else (len(q),), dtype=bool if multilabel else np.int64)
    ap = np.zeros(len(q), dtype=np.float64)
    if len(q) == 0:
        return votes, pred, ap
    if multilabel:
        q_lab, db_lab = y_q.astype(np.uint8), y_db.astype(np.uint8)
    else:
        q_lab, db_lab = y_q.argmax(axis=1), y_db.argmax(axis=1)
    index = HammingIndex(db, n_bits)
    harm = harmonic(index.ntotal)
    for c in index.counts(q, db_lab, q_lab):
        by_label = c.by_label
        if by_label.shape[2] < y_q.shape[1]:  # class ids past the database's largest one
            pad = y_q.shape[1] - by_label.shape[2]
            by_label = np.pad(by_label, ((0, 0), (0, 0), (0, pad)))
        tally = tally_from_counts(by_label, c.tot, k)
        votes[c.sl] = tally.votes(k)
        pred[c.sl] = tally.decide(k, multilabel)
        ap[c.sl] = ap_all(c.tot, c.rel, harm)
    return votes, pred, ap


def class_balanced_mean(per_query: np.ndarray, y: np.ndarray) -> float:
    """Mean of ``per_query`` over the queries holding each class (multi-hot ``y [Q, C]``; a
    multi-label query counts for each of its labels), then over the classes present."""
    holders = y.astype(bool)
    per_class = [per_query[holders[:, c]].mean() for c in range(y.shape[1]) if holders[:, c].any()]
    return float(np.mean(per_class)) if per_class else 0.0


def vote_share_scores(
    shares: np.ndarray, y: np.ndarray, *, multilabel: bool, pred: np.ndarray | None = None
) -> dict[str, float]:
    """The four vote-share selection scores of :func:`val_scores` (all but ``balanced_map``) from
    vote shares ``[Q, C]`` and multi-hot truth ``y [Q, C]``. ``pred``: the KNN predictions decided
    on exact tallies (:func:`ranked_votes`); without it they are read off the float shares, where
    two classes with equal votes can differ in the last bit."""
    if len(y) == 0:
        return {f"val_{name}": 0.0 for name in SELECTION_SCORES if name != "balanced_map"}
    truth = y.astype(bool)
    if multilabel:
        pred = shares > 0.5 if pred is None else pred.astype(bool)
        soft_el = np.where(truth, shares, 1.0 - shares)
        pos, neg = truth.sum(axis=0), (~truth).sum(axis=0)
        soft_pos = (shares * truth).sum(axis=0) / np.maximum(pos, 1)
        soft_neg = ((1.0 - shares) * ~truth).sum(axis=0) / np.maximum(neg, 1)
        both = (pos > 0) & (neg > 0)
        per_label = np.where(both, (soft_pos + soft_neg) / 2, np.where(pos > 0, soft_pos, soft_neg))
        return {
            "val_accuracy": accuracy(truth, pred),
            "val_soft_accuracy": float(soft_el.mean(axis=1).mean()),
            "val_balanced_accuracy": balanced_accuracy(truth, pred),
            "val_balanced_soft_accuracy": float(per_label.mean()),
        }
    true_cls = y.argmax(axis=1)
    pred_cls = shares.argmax(axis=1) if pred is None else pred
    true_share = shares[np.arange(len(y)), true_cls]
    return {
        "val_accuracy": accuracy(true_cls, pred_cls),
        "val_soft_accuracy": float(true_share.mean()),
        "val_balanced_accuracy": balanced_accuracy(true_cls, pred_cls),
        "val_balanced_soft_accuracy": class_balanced_mean(true_share, y),
    }


@contextlib.contextmanager
def deterministic_on_cpu(device: torch.device) -> Any:
    """Use torch's deterministic kernels while training on the CPU, then restore the setting.

    Seeding alone is not enough there: the backward of tensor indexing (``b[idx]``, used by every
    triplet and bank loss) accumulates with ``index_put_(accumulate=True)``, whose multi-threaded
    CPU kernel adds in a scheduling-dependent order. Measured: DNNH on BreastMNIST with one seed
    gave three different code sets in three runs on 2 threads, and identical ones with this on.
    GPUs are left alone (their deterministic mode needs cuBLAS settings and costs speed); the
    project's bit-identical promise is for the CPU.
    """
    if device.type != "cpu":
        yield
        return
    enabled = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(enabled, warn_only=warn_only)


class WeightAverage:
    """Exponential moving average of trainable parameters, updated after every optimiser step:
    iterate averaging (Polyak & Juditsky, SIAM J. Control Optim. 1992, average the iterates
    uniformly) in the exponential form common in deep learning.

    ``decay = exp(-1 / (epochs * steps_per_epoch))``: the average forgets with a time constant of
    ``epochs`` epochs whatever the batch count. Step ``n`` uses ``min(decay, 1 - 1/n)``, so the
    first steps form a plain running mean (no pull towards the initial weights). The trainer scores
    and selects the averaged weights (:meth:`swapped`), while the optimiser keeps stepping the raw
    ones. The hypothesis (issue 12): on a small val split one epoch's raw weights are a noisy sample
    of the trajectory and their average is less so. On val it did not pay off, so it is off by
    default (bench/RESULTS-utility-val.md).
    """

    def __init__(self, params: list[torch.Tensor], *, epochs: float, steps_per_epoch: int) -> None:
        if epochs <= 0 or steps_per_epoch < 1:
            raise HashingError(f"weight average over {epochs} epochs of {steps_per_epoch} steps")
        self.params = params
        self.decay = math.exp(-1.0 / (epochs * steps_per_epoch))
        self.avg = [p.detach().clone() for p in params]
        self.n = 0

    @torch.no_grad()
    def update(self) -> None:
        self.n += 1
        d = min(self.decay, 1.0 - 1.0 / self.n)
        for a, p in zip(self.avg, self.params, strict=True):
            a.mul_(d).add_(p.detach().to(a.device), alpha=1.0 - d)

    @contextlib.contextmanager
    def swapped(self) -> Iterator[None]:
        """The averaged weights in place of the raw ones inside the block, restored after."""
        raw = [p.detach().clone() for p in self.params]
        with torch.no_grad():
            for a, p in zip(self.avg, self.params, strict=True):
                p.copy_(a)
        try:
            yield
        finally:
            with torch.no_grad():
                for r, p in zip(raw, self.params, strict=True):
                    p.copy_(r)


class EpochSelector:
    """Picks the epoch whose val score, averaged over a centred window of ``window`` epochs, is
    highest (ties go to the later epoch), and keeps that epoch's state.

    With ``window=1`` this is the plain per-epoch argmax. A wider window trades a few epochs of
    delay for less selection noise: on a small val split one image flips a per-epoch score, and
    the argmax over ~60 noisy scores lands on a lucky epoch rather than a good one (issue 12).
    Windows are truncated at both ends of the run; a state is kept for the last ``window // 2 + 1``
    epochs only. Early stopping counts epochs since the last strict gain of the averaged score.
    """

    def __init__(self, window: int) -> None:
        self.half = window // 2
        self.scores: list[float] = []
        self.accs: list[float] = []
        self.states: dict[int, dict[str, torch.Tensor]] = {}
        self.best, self.best_epoch, self.best_acc = -math.inf, -1, 0.0
        self.best_state: dict[str, torch.Tensor] | None = None
        self.last_gain = 0

    def update(self, epoch: int, score: float, acc: float, module: torch.nn.Module | None) -> None:
        """Record epoch ``epoch`` (0, 1, 2, ... in order) and judge the epoch whose window closed
        (``module=None``: replay a recorded curve, keep no states)."""
        self.scores.append(score)
        self.accs.append(acc)
        if module is not None:
            state = module.state_dict().items()
            self.states[epoch] = {k: v.detach().cpu().clone() for k, v in state}
        self.states.pop(epoch - self.half - 1, None)
        if epoch >= self.half:
            self._judge(epoch - self.half)

    def finish(self) -> None:
        """Judge the last epochs, whose windows the end of the run truncated."""
        for epoch in range(max(len(self.scores) - self.half, 0), len(self.scores)):
            self._judge(epoch)

    def stale(self, epoch: int, patience: int) -> bool:
        return epoch - self.half - self.last_gain >= patience

    def _judge(self, epoch: int) -> None:
        lo, hi = max(0, epoch - self.half), epoch + self.half + 1
        avg = float(np.mean(self.scores[lo:hi]))
        if avg >= self.best:
            if avg > self.best:
                self.last_gain = epoch
            self.best, self.best_epoch, self.best_acc = avg, epoch, self.accs[epoch]
            self.best_state = self.states.get(epoch)


def on_cpu(data: EmbeddingSet) -> EmbeddingSet:
    """``data`` with its tensors on the CPU, where the trainer keeps the splits (it moves the
    training rows to the fit's device itself): batches and val subsets are drawn with CPU
    generators (``torch.multinomial`` of CUDA row weights refuses one) and the val scores run in
    numpy (``.numpy()`` refuses a CUDA tensor). The same object when already there."""
    if data.x.device.type == "cpu" and data.y.device.type == "cpu":
        return data
    return EmbeddingSet(data.x.cpu(), data.y.cpu())


def seed_global_generators(seed: int, device: torch.device) -> None:
    """Seed torch's global CPU generator and, when training there, the CUDA device's; only these
    (``torch.manual_seed`` would also seed every other GPU and MPS, which :func:`fit` does not
    restore afterwards)."""
    torch.default_generator.manual_seed(seed)
    if device.type == "cuda":
        with torch.cuda.device(device):
            torch.cuda.manual_seed(seed)


def fit(
    method: HashingMethod,
    train: EmbeddingSet,
    val: EmbeddingSet,
    *,
    config: FitConfig,
    batches: BatchPlan | None = None,
    plugin: TrainingPlugin | None = None,
) -> FitResult:
    """Train ``method`` on ``train``; select the epoch with the best val score
    (``config.selection``, default the class-balanced soft KNN accuracy; ties go to the later epoch).

    ``batches`` chooses the rows of each step (default :func:`default_batches`); ``plugin`` adds
    hooks around the loop (default none). On the CPU, training runs under
    :func:`deterministic_on_cpu`: the same seed gives bit-identical codes from run to run, whatever
    the thread scheduling. Only torch's global CPU generator (and the CUDA device's, when
    training there) is seeded inside the fit (:func:`seed_global_generators`), and both are
    restored afterwards: no state derived from the fit's seeds, a DP run's secret streams
    included, outlives it (on MPS the global generator is neither seeded nor restored).
    """
    device = resolve_device(config.device)
    train, val = on_cpu(train), on_cpu(val)  # splits given on a GPU: kept on the CPU, as from numpy
    forked: list[int] = []
    if device.type == "cuda":
        forked = [device.index if device.index is not None else torch.cuda.current_device()]
    installed = config.geometry > 0.0
    if installed and vars(method).get("geometry_term") is not None:
        raise HashingError(
            f"{method.name}: geometry={config.geometry} would replace the neighbourhood term set "
            "on the method (geometry_term); set one or the other"
        )
    if installed:
        method.geometry_term = functools.partial(
            functional.neighbourhood_loss, perplexity=float(config.k)
        )
        method.geometry_weight = config.geometry
    try:
        # the fit seeds torch's global generators (from ``seed``, or a DP run's secret dropout
        # stream); the caller's generator states come back afterwards
        with (
            torch.random.fork_rng(devices=forked),
            deterministic_on_cpu(device),
        ):
            return _fit(
                method,
                train,
                val,
                config=config,
                device=device,
                batches=batches or default_batches(method, config),
                plugin=plugin or TrainingPlugin(),
            )
    finally:  # the term this fit installed belongs to it only (a caller's own is refused above)
        if installed:
            vars(method).pop("geometry_term", None)
            vars(method).pop("geometry_weight", None)


def _fit(
    method: HashingMethod,
    train: EmbeddingSet,
    val: EmbeddingSet,
    *,
    config: FitConfig,
    device: torch.device,
    batches: BatchPlan,
    plugin: TrainingPlugin,
) -> FitResult:
    check_labels(train, method)
    check_val(train, val)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    start = time.perf_counter()
    seed_global_generators(config.seed, device)
    gen = torch.Generator().manual_seed(config.seed)
    n_val = min(config.val_queries, len(val))
    val_sel = (
        val.subset(torch.randperm(len(val), generator=gen)[:n_val]) if n_val < len(val) else val
    )
    # selection database: a seeded subset of train keeps the per-epoch check cheap on large sets
    n_db = min(config.val_database, len(train))
    db_sel = (
        train.subset(torch.randperm(len(train), generator=gen)[:n_db])
        if n_db < len(train)
        else train
    )

    if method.fit_input_statistics(plugin.input_reference(train, val)):
        log.debug("%s: input standardised with fixed per-feature statistics", method.name)
    method.to(device)
    method.on_fit_start(train)
    if not method.trainable:
        method.cpu()
        n_bad = nonfinite_output_rows(method, val_sel.x)
        if n_bad:
            raise HashingError(
                f"{method.name}: the fitted head's outputs are non-finite on {n_bad} of "
                f"{len(val_sel)} val rows; rescale the embeddings (they reach "
                f"{float(train.x.abs().max()):.3g} on train)"
            )
        scores = val_scores(method, db_sel, val_sel, k=config.k)
        acc = scores["val_accuracy"]
        return FitResult(
            0,
            acc,
            0,
            time.perf_counter() - start,
            peak_memory_mb(device),
            [{"epoch": 0, **scores}],
        )

    private = not plugin.reports_training_numbers
    params = [p for p in method.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    # the plugin's patches (a DP step, per-sample gradients) are undone even when training fails
    try:
        optimizer = plugin.setup(method, optimizer, train)
        x_dev, y_dev = train.x.to(device), train.y.to(device)
        history: list[dict[str, float]] = []
        selector = EpochSelector(config.selection_window)
        bs = min(config.batch_size, len(train))
        n_epochs = config.epoch_budget(len(train))
        average = (
            WeightAverage(
                params, epochs=config.ema_epochs, steps_per_epoch=steps_per_epoch(len(train), bs)
            )
            if config.ema_epochs > 0
            else None
        )
        if n_epochs < config.epochs:
            log.info(
                "%s-%d: %d epochs (max_steps=%d at %d rows, batch %d) instead of %d",
                method.name,
                method.spec.n_bits,
                n_epochs,
                config.max_steps,
                len(train),
                bs,
                config.epochs,
            )
        bar = tqdm(
            range(n_epochs),
            desc=f"train {method.name}-{method.spec.n_bits}",
            disable=not config.progress,
            leave=False,
        )
        batch_gen = plugin.batch_generator(gen)
        for epoch in bar:
            method.train()
            method.on_epoch_start(epoch, n_epochs)
            sums: dict[str, float] = defaultdict(float)
            n_steps = 0
            for idx in batches.batches(train, bs, batch_gen):
                idx_dev = idx.to(device)
                terms = method.training_step(
                    Batch(x_dev[idx_dev], y_dev[idx_dev], idx_dev), optimizer
                )
                if average is not None:
                    average.update()
                for name, value in terms.items():
                    sums[name] += float(value)
                n_steps += 1
            if private:  # no training loss leaves the loop (TrainingPlugin)
                row = {"epoch": float(epoch)}
                if not all(bool(torch.isfinite(p).all()) for p in params):
                    raise HashingError(
                        f"{method.name}: the weights became non-finite at epoch {epoch} of private "
                        "training; lower dp.lr or dp.max_grad_norm"
                    )
                # finite weights can still overflow in the forward (NaN codes, all bit 0): the
                # outputs on val rows (no training record) are checked before the plugin scores
                if nonfinite_output_rows(method, val_sel.x):
                    raise HashingError(
                        f"{method.name}: the head's outputs on val became non-finite at epoch "
                        f"{epoch} of private training; lower dp.lr or dp.max_grad_norm"
                    )
                row.update(plugin.epoch_end(epoch))  # the plugin's own (val-only) scores
                method.to(device)
                history.append(row)
                bar.set_postfix(
                    {k: f"{row[k]:.4f}" for k in ("val_accuracy", "dp_epsilon") if k in row}
                )
                continue
            row = {
                "epoch": float(epoch),
                **{
                    f"loss_{k}" if k != "loss" else "loss": v / max(n_steps, 1)
                    for k, v in sums.items()
                },
            }
            if not np.isfinite(row.get("loss", 0.0)):
                raise HashingError(
                    f"{method.name}: the loss became non-finite at epoch {epoch}; "
                    f"{divergence_fix(train)}"
                )
            with average.swapped() if average is not None else contextlib.nullcontext():
                # the plugin sees the weights scored, selected and returned (the average when
                # train.ema_epochs > 0); before, it scored the raw ones at the average's epoch
                row.update(plugin.epoch_end(epoch))
                method.cpu()
                # the loss above predates the epoch's last update: the head scored (and maybe
                # selected) is checked on its own outputs
                n_bad = nonfinite_output_rows(method, val_sel.x)
                if n_bad:
                    raise HashingError(
                        f"{method.name}: the head's outputs became non-finite at epoch {epoch} "
                        f"(on {n_bad} of {len(val_sel)} val rows); {divergence_fix(train)}"
                    )
                scores = val_scores(method, db_sel, val_sel, k=config.k)
                method.to(device)
                score = scores[f"val_{config.selection}"]
                selector.update(epoch, score, scores["val_accuracy"], method)
            row.update(scores)
            history.append(row)
            bar.set_postfix(
                loss=f"{row.get('loss', 0.0):.4f}", val_acc=f"{scores['val_accuracy']:.4f}"
            )
            if selector.stale(epoch, config.patience):
                log.info(
                    "%s-%d: early stop at epoch %d (best %d)",
                    method.name,
                    method.spec.n_bits,
                    epoch,
                    selector.best_epoch,
                )
                break
        selector.finish()
    finally:
        plugin.teardown(method)
    method.cpu()
    if selector.best_state is not None:
        method.load_state_dict(selector.best_state)
    # every scored state was checked; this catches a plugin that changed the weights after it
    if nonfinite_output_rows(method, val_sel.x):
        fix = "lower dp.lr or dp.max_grad_norm" if private else divergence_fix(train)
        raise HashingError(
            f"{method.name}: the returned head's outputs on val are non-finite; {fix}"
        )
    method.eval()
    return FitResult(
        best_epoch=selector.best_epoch,
        best_val_accuracy=selector.best_acc,
        epochs_run=len(history),
        wall_time_s=time.perf_counter() - start,
        peak_memory_mb=peak_memory_mb(device),
        history=history,
    )
