"""knn writes its test predictions; evaluate turns them into retention intervals (bootstrap)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from pipeline import curves, evaluate, knn, train
from pipeline.artifacts import load_codes, load_embeddings, save_embeddings
from pipeline.synthetic import synthetic_embeddings
from retrieval.knn import knn_hamming
from retrieval.metrics import accuracy
from retrieval.uncertainty import retention_bootstrap
from tests.conftest import REPO
from tests.stage_cli import FAST, eval_argv, knn_argv, train_argv

INTERVAL_KEYS = {
    "retention_balanced_accuracy_low",
    "retention_balanced_accuracy_high",
    "retention_accuracy_low",
    "retention_accuracy_high",
}


def _study(tmp: Path, *, multilabel: bool = False, bits: int = 12) -> tuple[Path, Path]:
    emb_path = tmp / "emb.safetensors"
    save_embeddings(emb_path, synthetic_embeddings(multilabel=multilabel))
    preds = tmp / "knn/predictions.json"
    assert knn.main(knn_argv(FAST, emb_path, tmp, "--predictions", str(preds))) == 0
    assert train.main(train_argv(FAST, emb_path, tmp, bits=bits)) == 0
    return emb_path, preds


def _evaluate(tmp: Path, emb_path: Path, preds: Path, *extra: str, bits: int = 12) -> int:
    ident = ["--dataset", "syn", "--method", "dpsh", "--bits", str(bits)]
    return evaluate.main(
        eval_argv(FAST, emb_path, tmp, *ident, *extra, "--float-predictions", str(preds))
    )


def test_intervals_are_the_bootstrap_of_the_two_prediction_sets(tmp_path: Path) -> None:
    emb_path, preds = _study(tmp_path)
    assert _evaluate(tmp_path, emb_path, preds) == 0
    emb = load_embeddings(emb_path)
    record = json.loads(preds.read_text())
    float_pred = np.asarray(record["pred"])
    # the file holds exactly the predictions behind the knn stage's own metrics
    assert record["k"] == 7 and record["n_queries"] == len(emb.y["test"])
    knn_metrics = json.loads((tmp_path / "knn.json").read_text())
    assert accuracy(emb.y["test"], float_pred) == pytest.approx(knn_metrics["accuracy"])

    m = json.loads((tmp_path / "eval.json").read_text())
    codes, n_bits, _ = load_codes(tmp_path / "head/codes.safetensors")
    code_pred = knn_hamming(codes["test"], codes["train"], n_bits, emb.y["train"], [7])[7]
    for metric in ("balanced_accuracy", "accuracy"):
        ci = retention_bootstrap(emb.y["test"], float_pred, code_pred, metric=metric)
        assert ci.point == pytest.approx(m[f"retention_{metric}"])
        assert (m[f"retention_{metric}_low"], m[f"retention_{metric}_high"]) == (ci.low, ci.high)
        assert ci.low <= ci.high


def test_no_resamples_no_interval(tmp_path: Path) -> None:
    emb_path, preds = _study(tmp_path)
    assert _evaluate(tmp_path, emb_path, preds, "--set", "knn.ci_resamples=0") == 0
    m = json.loads((tmp_path / "eval.json").read_text())
    assert not INTERVAL_KEYS & set(m) and "retention_accuracy" in m


def test_multilabel_sets_have_no_interval(tmp_path: Path) -> None:
    emb_path, preds = _study(tmp_path, multilabel=True, bits=16)
    assert json.loads(preds.read_text())["pred"] is None
    assert _evaluate(tmp_path, emb_path, preds, bits=16) == 0
    assert not INTERVAL_KEYS & set(json.loads((tmp_path / "eval.json").read_text()))


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        ({"k": 5}, "predictions at k=5, params say knn.k=7"),
        ({"embeddings_fingerprint": "sha256:other"}, "was made from embeddings"),
        ({"pred": [0, 1]}, "2 predictions for 90 test queries"),
        ({"pred": ["a", "b"]}, "'pred' is not a list of class ids"),
        # another knn run's predictions (here: class 0 for all 90 queries of 3 cycling classes,
        # balanced accuracy 1/3): the interval would be of another ratio than the retention
        (
            {"pred": [0] * 90},
            "these float predictions score balanced_accuracy 0.333333 on the test queries",
        ),
    ],
)
def test_predictions_from_another_run_are_refused(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, edit: dict, message: str
) -> None:
    emb_path, preds = _study(tmp_path)
    preds.write_text(json.dumps({**json.loads(preds.read_text()), **edit}))
    assert _evaluate(tmp_path, emb_path, preds) == 2
    assert message in caplog.text and str(preds) in caplog.text
    assert not (tmp_path / "eval.json").exists()


def test_ci_params_are_validated(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    emb_path = tmp_path / "emb.safetensors"
    save_embeddings(emb_path, synthetic_embeddings())
    for setting, message in (
        ("knn.ci_resamples=-1", "knn.ci_resamples: -1 must be >= 0"),
        ("knn.ci_level=1.5", "knn.ci_level: 1.5 must be in (0, 1)"),
    ):
        assert knn.main(knn_argv(FAST, emb_path, tmp_path, "--set", setting)) == 2
        assert message in caplog.text


def test_curves_carry_the_interval_and_draw_it(tmp_path: Path) -> None:
    emb_path, preds = _study(tmp_path)
    assert _evaluate(tmp_path, emb_path, preds) == 0
    ev_dir = tmp_path / "ev"
    ev_dir.mkdir()
    (ev_dir / "dpsh-12.json").write_text((tmp_path / "eval.json").read_text())
    argv = ["--params", str(REPO / "params.yaml"), "--set", "train.bits=[12]"]
    argv += ["--dataset", "syn", "--evaluate-dir", str(ev_dir)]
    argv += ["--float-metrics", str(tmp_path / "knn.json")]
    argv += ["--csv", str(tmp_path / "curves.csv"), "--out", str(tmp_path / "curves")]
    assert curves.main(argv) == 0
    (row,) = list(csv.DictReader((tmp_path / "curves.csv").open()))
    m = json.loads((tmp_path / "eval.json").read_text())
    for key in ("", "_low", "_high"):
        assert (
            float(row[f"retention_balanced_accuracy{key}"])
            == m[f"retention_balanced_accuracy{key}"]
        )
    assert (tmp_path / "curves/retention_vs_bits.png").read_bytes()[:4] == b"\x89PNG"


def test_predictions_of_a_knn_run_at_another_metric_are_refused(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The predictions file of a cosine knn run beside the metrics of a Euclidean one (the
    params' knn.metric): the interval was the bootstrap of hashed / cosine-float while the
    retention beside it divided by the Euclidean float score (0.907 with an interval around
    0.951). The scores of the predictions must be the float metrics' own."""
    import dataclasses

    e = synthetic_embeddings(n=(200, 50, 80), dim=8, n_classes=4)
    g = np.random.default_rng(1)  # noisy, off-centre clusters: cosine and Euclidean KNN differ
    x = {s: (v + 3 * g.normal(size=v.shape) + 5).astype(np.float32) for s, v in e.x.items()}
    emb_path = tmp_path / "emb.safetensors"
    save_embeddings(emb_path, dataclasses.replace(e, x=x))
    preds, cos = tmp_path / "knn/predictions.json", tmp_path / "cosine"
    cos_argv = knn_argv(FAST, emb_path, cos, "--set", "knn.metric=cosine")
    assert knn.main([*cos_argv, "--predictions", str(preds)]) == 0
    assert knn.main(knn_argv(FAST, emb_path, tmp_path)) == 0  # Euclidean: the params' metric
    assert train.main(train_argv(FAST, emb_path, tmp_path, method="lsh", bits=12)) == 0
    cos_score = json.loads((cos / "knn.json").read_text())["balanced_accuracy"]
    euc_score = json.loads((tmp_path / "knn.json").read_text())["balanced_accuracy"]
    assert cos_score != euc_score  # the premise: the two runs' predictions differ
    ident = ["--dataset", "syn", "--method", "lsh", "--bits", "12"]
    argv = eval_argv(FAST, emb_path, tmp_path, *ident, "--float-predictions", str(preds))
    assert evaluate.main(argv) == 2
    assert f"{preds}: these float predictions score balanced_accuracy {cos_score:.6g}" in (
        caplog.text
    )
    assert not (tmp_path / "eval.json").exists()
