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
