"""evaluate --float-predictions: a predictions file that is not one class id per test query is
named, with the fix (exit 2), never a traceback and never read as other class ids."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipeline import evaluate
from tests.pipeline.test_retention_intervals import _study
from tests.stage_cli import FAST, IDENT, eval_argv


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    tmp = tmp_path_factory.mktemp("study")
    emb_path, _preds = _study(tmp)
    return tmp, emb_path


NOT_IDS = "'pred' is not a list of class ids (one non-negative integer per test query)"


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        # a bare number: len() of a 0-d array was a TypeError traceback (exit 1)
        (lambda p: {"pred": 3}, NOT_IDS),
        # 1e30 overflowed int64: an OverflowError traceback (exit 1)
        (lambda p: {"pred": [1e30] * len(p)}, NOT_IDS),
        # 0.4 / 1.4 / 2.4 were truncated to the right ids and scored (exit 0)
        (lambda p: {"pred": [v + 0.4 for v in p]}, NOT_IDS),
        # a column [[0], [1], ...] read "90 predictions for 90 test queries"
        (lambda p: {"pred": [[v] for v in p]}, NOT_IDS),
        (lambda p: {"pred": [True] * len(p)}, NOT_IDS),
        (lambda p: {"pred": [-1] * len(p)}, NOT_IDS),
        # k "7" read "predictions at k=7, params say knn.k=7"
        (lambda p: {"k": "7"}, "float KNN predictions at k='7', params say knn.k=7"),
    ],
    ids=["number", "1e30", "fractional", "column", "bools", "negative", "k-string"],
)
def test_predictions_that_are_not_one_class_id_per_query_are_named(
    study: tuple[Path, Path],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    edit,
    message: str,
) -> None:
    base, emb_path = study
    record = json.loads((base / "knn/predictions.json").read_text())
    assert len(record["pred"]) == 90 and record["k"] == 7  # the premise of the edits
    preds = tmp_path / "predictions.json"
    preds.write_text(json.dumps({**record, **edit(record["pred"])}))
    argv = eval_argv(
        FAST, emb_path, tmp_path, *IDENT, "--float-predictions", str(preds),
        head=base / "head", float_metrics=base / "knn.json",
    )  # fmt: skip
    assert evaluate.main(argv) == 2
    assert f"{preds}: {message}" in caplog.text and "re-run the knn stage" in caplog.text
    assert not (tmp_path / "eval.json").exists()


def test_the_knn_stage_s_own_predictions_are_read(study: tuple[Path, Path], tmp_path: Path) -> None:
    """The check refuses nothing the knn stage writes: its file gives the interval."""
    base, emb_path = study
    argv = eval_argv(
        FAST, emb_path, tmp_path, *IDENT, "--float-predictions",
        str(base / "knn/predictions.json"), head=base / "head", float_metrics=base / "knn.json",
    )  # fmt: skip
    assert evaluate.main(argv) == 0
    m = json.loads((tmp_path / "eval.json").read_text())
    assert m["retention_balanced_accuracy_low"] <= m["retention_balanced_accuracy_high"]
