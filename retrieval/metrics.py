"""The one metric table: names -> functions scoring predictions against the truth.

Every stage that reports a classification score (the float ``knn`` baseline, ``evaluate`` on
Hamming codes, model selection, the coming attack stage) asks :data:`CLASSIFICATION_METRICS`, so
the metric names in the JSON files, the MLflow keys and the ``retention_*`` ratios come from one
list. Adding a metric = one function + one line in the table.

Class sets: single-label macro-F1 and balanced accuracy average over the classes that occur in the
truth or the predictions (macro-F1) and in the truth (balanced accuracy, as scikit-learn defines
it); a class id that never occurs is not counted as a zero. Multi-label (0/1 ``[N, C]``):
``accuracy`` is exact-match (subset) accuracy, ``macro_f1`` the mean F1 over the labels that occur
in the truth or the predictions, and ``balanced_accuracy`` the mean over labels of their balanced
accuracy, (TPR + TNR) / 2 — a label with no positives (or no negatives) among the queries counts by
its TNR (or TPR) alone, as scikit-learn scores one binary label, never as a zero recall. The same
rule as the single-label class sets, and as the trainer's soft selection score.

``balanced_accuracy`` is the headline (:data:`HEADLINE`): on imbalanced medical sets a head that
predicts the majority class scores a high plain accuracy and a balanced accuracy of 1/C.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from retrieval.errors import RetrievalError


def _check_values(y: np.ndarray, what: str) -> np.ndarray:
    """``y`` as an array after refusing labels every score would misread without a word: not
    ``[N]`` class ids or ``[N, C]`` multi-hot, non-finite ids (a NaN id never equals a prediction:
    a silent miss), and multi-hot values other than 0/1 (``astype(bool)`` read an "uncertain" -1
    as a positive)."""
    arr = np.asarray(y)
    if arr.ndim not in (1, 2):
        raise RetrievalError(
            f"{what} has shape {arr.shape}; pass class ids [N] or multi-hot labels [N, C]"
        )
    if arr.dtype.kind in "fc" and not np.isfinite(arr).all():
        bad = tuple(int(i) for i in np.argwhere(~np.isfinite(arr))[0])
        raise RetrievalError(
            f"{what} holds a non-finite label {arr[bad]} at {bad}; pass labelled items only"
        )
    if arr.ndim == 2:
        check_multihot_01(arr, what)
    return arr


def check_multihot_01(arr: np.ndarray, what: str) -> None:
    """Refuse multi-hot labels ``[N, C]`` holding values other than 0/1 (a cast to bool reads an
    "uncertain" -1 as a positive), naming the first one."""
    if arr.dtype == np.bool_:
        return
    off = (arr != 0) & (arr != 1)
    if off.any():
        row, col = (int(i) for i in np.argwhere(off)[0])
        raise RetrievalError(
            f"{what} multi-hot labels must hold only 0 and 1, got {arr[row, col]} (row {row}, "
            f"column {col}); binarise them first (e.g. map an 'uncertain' -1 to 0 or 1)"
        )


def _check_pair(y_true: np.ndarray, y_pred: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Truth and predictions of one shape with valid labels (:func:`_check_values`). Different
    shapes broadcast silently: class ids ``[N]`` against a MedMNIST-style ``[N, 1]`` column
    compared every query with every other (accuracy 0.375 for perfect predictions)."""
    yt, yp = np.asarray(y_true), np.asarray(y_pred)
    if yt.shape != yp.shape:
        raise RetrievalError(
            f"y_true has shape {yt.shape} but y_pred {yp.shape}; pass both as class ids [N] or "
            "both as multi-hot [N, C] (flatten an [N, 1] label column)"
        )
    yt, yp = _check_values(yt, "y_true"), _check_values(yp, "y_pred")
    if yt.shape[0] == 0:
        raise RetrievalError("y_true and y_pred are empty; score at least one query")
    return yt, yp


def accuracy(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Share of exact matches (multi-label: every label right)."""
    y_true, y_pred = _check_pair(y_true, y_pred)
    if y_true.ndim == 2:
        return float((y_true.astype(bool) == y_pred.astype(bool)).all(axis=1).mean())
    return float((y_true == y_pred).mean())


def multilabel_relevance(q_labels: np.ndarray, db_labels: np.ndarray) -> np.ndarray:
    """``bool [Q, N]``: database item n is relevant to query q when they share a label **or both
    hold none** (a "no finding" image is the right answer to a "no finding" query, as the empty
    label set is the right KNN prediction for it, and as the heads are trained:
    :func:`hashers.functional.label_similarity`)."""
    q, db = q_labels.astype(np.float32), db_labels.astype(np.float32)
    shared = (q @ db.T) > 0
    return shared | (~q.any(axis=1))[:, None] & (~db.any(axis=1))[None, :]


def multilabel_relevance_rows(q_labels: np.ndarray, db_rows: np.ndarray) -> np.ndarray:
    """:func:`multilabel_relevance` of each query against its own database rows: ``q_labels``
    ``[Q, C]``, ``db_rows`` ``[Q, R, C]`` (e.g. ``db_labels[ids]`` of a shortlist) -> ``bool [Q, R]``."""
    q, db = q_labels.astype(bool), db_rows.astype(bool)
    shared = (q[:, None, :] & db).any(axis=2)
    return shared | (~q.any(axis=1))[:, None] & ~db.any(axis=2)


def macro_f1(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Unweighted mean F1 over the classes present in truth or predictions (multi-label: labels;
    1.0 when no label occurs in either)."""
    from sklearn.metrics import f1_score

    y_true, y_pred = _check_pair(y_true, y_pred)
    if y_true.ndim == 2:
        yt, yp = y_true.astype(bool), y_pred.astype(bool)
        labels = np.flatnonzero(yt.any(axis=0) | yp.any(axis=0))
        if labels.size == 0:  # no label in truth or predictions: nothing was got wrong
            return 1.0
        # per label as a binary problem: sklearn reads an [N, 1] indicator matrix as a binary
        # target, and labels=[0] would then score the negative class
        return float(
            np.mean([f1_score(yt[:, j], yp[:, j], zero_division=0) for j in labels.tolist()])
        )
    return float(f1_score(y_true, y_pred, average="macro", zero_division=0))


def balanced_accuracy(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Mean per-class recall over the classes in the truth (multi-label: the mean over labels of
    (TPR + TNR) / 2, or of the one rate defined where a label has no positives or no negatives)."""
    y_true, y_pred = _check_pair(y_true, y_pred)
    if y_true.ndim == 2:
        yt, yp = y_true.astype(bool), y_pred.astype(bool)
        pos, neg = yt.sum(0), (~yt).sum(0)
        tpr = (yt & yp).sum(0) / np.maximum(pos, 1)
        tnr = (~yt & ~yp).sum(0) / np.maximum(neg, 1)
        # a recall with nothing to recall is undefined, not 0: such a label counts by the other
        per_label = np.where((pos > 0) & (neg > 0), (tpr + tnr) / 2, np.where(pos > 0, tpr, tnr))
        return float(per_label.mean())
    classes = np.unique(y_true)
    recalls = [(y_pred[y_true == c] == c).mean() for c in classes]
    return float(np.mean(recalls))


def classes_present(y_true: np.ndarray) -> int:
    """How many classes the truth holds (multi-label: labels with a positive): the classes a
    balanced accuracy averages over and a release must tell apart."""
    y_true = _check_values(y_true, "y_true")
    if y_true.ndim == 2:
        return int(y_true.astype(bool).any(axis=0).sum())
    return len(np.unique(y_true))


def chance_balanced_accuracy(y_true: np.ndarray) -> float:
    """The :func:`balanced_accuracy` of the best predictor that ignores its input (a constant):
    1 / the classes present (single-label: it recalls one class); multi-label, the mean over
    labels of 0.5 where a label has positives and negatives and 1 where it has only one kind
    (the constant that matches it)."""
    y_true = _check_values(y_true, "y_true")
    if y_true.ndim == 2:
        yt = y_true.astype(bool)
        both = yt.any(axis=0) & (~yt).any(axis=0)
        return float(np.where(both, 0.5, 1.0).mean())
    return 1.0 / classes_present(y_true)


@dataclass(frozen=True)
class Metric:
    """A named score of predictions against the truth (higher is better)."""

    name: str
    fn: Callable[[np.ndarray, np.ndarray], float]
    description: str


#: name -> metric; the order is the order of the columns in every report.
CLASSIFICATION_METRICS: dict[str, Metric] = {
    m.name: m
    for m in (
        Metric("balanced_accuracy", balanced_accuracy, "mean per-class recall"),
        Metric("accuracy", accuracy, "share of exact matches"),
        Metric("macro_f1", macro_f1, "unweighted mean F1 over classes present"),
    )
}
#: the metric that logs, README tables and benchmarks lead with.
HEADLINE = "balanced_accuracy"


def classification_metrics(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float]:
    """Every metric of :data:`CLASSIFICATION_METRICS` for one set of predictions."""
    return {name: m.fn(y_true, y_pred) for name, m in CLASSIFICATION_METRICS.items()}


def retention(scores: dict[str, float], baseline: dict[str, float]) -> dict[str, float]:
    """``retention_<metric>`` = score / baseline score for every metric of the table (0 if the
    baseline is 0)."""
    return {
        f"retention_{name}": (scores[name] / baseline[name] if baseline[name] > 0 else 0.0)
        for name in CLASSIFICATION_METRICS
    }


def confusion(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> np.ndarray:
    """``[C, C]`` counts, rows = true class, columns = predicted class (single-label only)."""
    m = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(m, (y_true, y_pred), 1)
    return m


def degenerate_release(n_distinct_codes: int, y_pred: np.ndarray, n_classes: int) -> dict[str, int]:
    """Flag a release that cannot separate the classes, whatever its plain accuracy says.

    Degenerate = fewer distinct codes than classes (``n_distinct_codes < n_classes``), or KNN
    predictions of a single class (single-label) or of one label set for every query
    (multi-label) — a head that serves the majority class can score a high accuracy that way.
    Returns ``predicted_classes`` (distinct predictions) and ``degenerate_release`` (0 or 1).
    """
    preds = np.unique(y_pred, axis=0) if y_pred.ndim == 2 else np.unique(y_pred)
    n_pred = len(preds)
    degenerate = n_distinct_codes < n_classes or (n_pred <= 1 and n_classes > 1)
    return {"predicted_classes": int(n_pred), "degenerate_release": int(degenerate)}
