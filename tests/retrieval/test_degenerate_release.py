"""The degenerate-release flag: fewer distinct codes than classes, or one predicted class."""

from __future__ import annotations

import numpy as np

from retrieval.metrics import degenerate_release


def test_one_code_for_two_classes_is_degenerate() -> None:
    # the smoke run's case: one distinct test code, every query predicted as the majority
    out = degenerate_release(1, np.zeros(78, dtype=np.int64), 2)
    assert out == {"predicted_classes": 1, "degenerate_release": 1}


def test_single_predicted_class_is_degenerate_even_with_many_codes() -> None:
    out = degenerate_release(40, np.array([2, 2, 2, 2]), 3)
    assert out == {"predicted_classes": 1, "degenerate_release": 1}


def test_fewer_codes_than_classes_is_degenerate() -> None:
    # 4 codes cannot give 5 classes a code each, although predictions vary
    out = degenerate_release(4, np.array([0, 1, 2, 3, 1]), 5)
    assert out == {"predicted_classes": 4, "degenerate_release": 1}


def test_healthy_release() -> None:
    out = degenerate_release(12, np.array([0, 1, 0, 1, 1]), 2)
    assert out == {"predicted_classes": 2, "degenerate_release": 0}


def test_multilabel_counts_label_sets() -> None:
    same = np.array([[1, 0, 1]] * 5, dtype=bool)
    assert degenerate_release(9, same, 3)["degenerate_release"] == 1
    varied = np.array([[1, 0, 1], [0, 1, 0], [1, 0, 1]], dtype=bool)
    assert degenerate_release(9, varied, 3) == {"predicted_classes": 2, "degenerate_release": 0}


def test_chance_is_the_best_input_blind_score_over_the_classes_present() -> None:
    """Class ids {0, 7} (a binary subset that kept its ids): chance is 1/2, not 1/8, and two
    classes are present. Multi-label: 0.5 per label with both kinds, 1 per one-sided label."""
    from retrieval.metrics import balanced_accuracy, chance_balanced_accuracy, classes_present

    y = np.array([0, 7, 7, 0, 7])
    assert classes_present(y) == 2 and chance_balanced_accuracy(y) == 0.5
    assert balanced_accuracy(y, np.full(5, 7)) == chance_balanced_accuracy(y)  # a constant
    multi = np.array([[1, 0, 0], [0, 1, 0], [1, 0, 0]], dtype=np.uint8)  # label 2: no positive
    assert classes_present(multi) == 2
    assert chance_balanced_accuracy(multi) == (0.5 + 0.5 + 1.0) / 3
    constant = np.tile(np.array([1, 0, 0], dtype=np.uint8), (3, 1))
    assert balanced_accuracy(multi, constant) == chance_balanced_accuracy(multi)
    # two codes that separate the two present classes perfectly are not degenerate
    assert degenerate_release(2, y, classes_present(y))["degenerate_release"] == 0
