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
