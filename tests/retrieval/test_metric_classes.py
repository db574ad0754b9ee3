"""Macro-F1 and balanced accuracy average over the classes that occur (issue 8, item 3)."""

from __future__ import annotations

import numpy as np
import pytest

from retrieval.metrics import classification_metrics


def test_class_ids_that_never_occur_do_not_count_as_zeros() -> None:
    y = np.array([0, 7, 0, 7, 7])
    m = classification_metrics(y, y.copy())
    # perfect predictions over the two classes present: every score is 1; counting the six
    # absent ids 1..6 as F1 = 0 would give 2 / 8 = 0.25
    assert m == {"balanced_accuracy": 1.0, "accuracy": 1.0, "macro_f1": 1.0}


def test_macro_f1_over_classes_in_truth_or_predictions() -> None:
    y_true = np.array([0, 0, 7, 7])
    y_pred = np.array([0, 3, 7, 7])  # class 3 occurs only in the predictions
    # by hand: F1(0) = 2*1*0.5/(1+0.5) = 2/3, F1(7) = 1, F1(3) = 0 (one false positive)
    m = classification_metrics(y_true, y_pred)
    assert m["macro_f1"] == pytest.approx((2 / 3 + 1 + 0) / 3)
    assert m["balanced_accuracy"] == pytest.approx((0.5 + 1.0) / 2)  # recall over truth classes
    assert m["accuracy"] == pytest.approx(3 / 4)


def test_multilabel_macro_f1_of_one_label_scores_the_label_not_its_absence() -> None:
    from retrieval.metrics import macro_f1

    truth = np.array([[1], [1], [1], [0], [0]], dtype=bool)
    pred = np.array([[1], [1], [0], [1], [0]], dtype=bool)
    # the label: TP 2, FP 1, FN 1 -> F1 = 2·2 / (2·2 + 1 + 1) = 2/3 (its absence would score 1/2)
    assert macro_f1(truth, pred) == pytest.approx(2 / 3)
    two = np.array([[1, 0], [1, 1], [1, 0], [0, 1], [0, 0]], dtype=bool)
    two_pred = np.array([[1, 0], [1, 1], [0, 0], [1, 1], [0, 0]], dtype=bool)
    # label 0 as above (2/3); label 1: TP 2, FP 0, FN 0 -> 1
    assert macro_f1(two, two_pred) == pytest.approx((2 / 3 + 1) / 2)


def test_shapes_that_broadcast_are_refused_not_scored() -> None:
    """Class ids [N] against an [N, 1] column (MedMNIST's raw label shape) broadcast to [N, N]:
    perfect predictions scored accuracy 0.375 (and 0.0 the other way round), balanced accuracy
    0.5; multi-hot truth against one predicted column scored 0.5 / 0.75."""
    from retrieval.errors import RetrievalError
    from retrieval.metrics import accuracy, balanced_accuracy, macro_f1

    y = np.array([0, 1, 2, 1])
    for fn in (accuracy, balanced_accuracy, macro_f1):
        for a, b in ((y, y[:, None]), (y[:, None], y)):
            with pytest.raises(RetrievalError, match=r"^y_true has shape .* but y_pred"):
                fn(a, b)
    multi = np.array([[1, 0], [0, 1], [1, 1], [0, 0]])
    with pytest.raises(RetrievalError, match=r"y_true has shape \(4, 2\) but y_pred \(4, 1\)"):
        classification_metrics(multi, multi[:, :1])
    # the same labels in matching shapes still score 1
    assert classification_metrics(y, y.copy())["accuracy"] == 1.0


def test_uncertain_multi_hot_truth_is_refused_not_read_as_a_positive() -> None:
    """An 'uncertain' -1 in multi-hot truth was read as a positive by astype(bool): label 1 of
    truth [[1,-1],[0,1],[1,0],[0,-1]] had three positives, and predictions that get every
    certain entry right scored balanced accuracy 0.833 and accuracy 0.5 instead of an error."""
    from retrieval.errors import RetrievalError
    from retrieval.metrics import balanced_accuracy, chance_balanced_accuracy, classes_present

    truth = np.array([[1, -1], [0, 1], [1, 0], [0, -1]])
    pred = np.array([[1, 0], [0, 1], [1, 0], [0, 0]])
    with pytest.raises(RetrievalError, match=r"only 0 and 1, got -1 \(row 0, column 1\)"):
        classification_metrics(truth, pred)
    for fn in (classes_present, chance_balanced_accuracy):
        with pytest.raises(RetrievalError, match=r"only 0 and 1, got -1"):
            fn(truth)
    with pytest.raises(RetrievalError, match=r"^y_pred multi-hot .* got 2"):
        balanced_accuracy(pred, pred * 2)


def test_nan_and_empty_labels_are_refused_not_scored() -> None:
    """A NaN class id never equals a prediction: accuracy scored 0.75 for otherwise perfect
    predictions (balanced accuracy NaN with a warning); no queries gave NaN."""
    from retrieval.errors import RetrievalError
    from retrieval.metrics import accuracy, balanced_accuracy

    y = np.array([0.0, 1.0, np.nan, 1.0])
    for fn in (accuracy, balanced_accuracy):
        with pytest.raises(RetrievalError, match=r"^y_true holds a non-finite label nan at \(2,\)"):
            fn(y, np.array([0, 1, 2, 1]))
        with pytest.raises(RetrievalError, match="empty; score at least one query"):
            fn(np.array([], dtype=int), np.array([], dtype=int))
