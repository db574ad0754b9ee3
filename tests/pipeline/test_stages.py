"""Stage mains (knn -> train -> evaluate) on tiny synthetic embeddings, with MLflow in tmp_path."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipeline import evaluate, knn, train
from pipeline.artifacts import load_codes, load_head, save_embeddings
from pipeline.synthetic import synthetic_embeddings
from tests.conftest import REPO
from tests.stage_cli import IDENT, eval_argv, knn_argv, train_argv

BASE = ["--params", str(REPO / "params.yaml"), "--set", "train.epochs=4"]
BASE += ["--set", "train.val_queries=60"]


def run_all(
    tmp: Path,
    emb_path: Path,
    *,
    bits: int = 12,
    method: str = "dpsh",
    tracking_uri: str | None = None,
) -> list[int]:
    """knn -> train -> evaluate under ``tmp`` (file names of :mod:`tests.stage_cli`)."""
    base = [*BASE, *(["--set", f"tracking.uri={tracking_uri}"] if tracking_uri else [])]
    ident = ["--dataset", "syn", "--method", method, "--bits", str(bits)]
    return [
        knn.main(knn_argv(base, emb_path, tmp)),
        train.main(train_argv(base, emb_path, tmp, method=method, bits=bits)),
        evaluate.main(eval_argv(base, emb_path, tmp, *ident)),
    ]


def test_stages_write_metrics_and_track_in_mlflow(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HASHAUDIT_TRACKING", "1")
    monkeypatch.chdir(tmp_path)
    emb_path = tmp_path / "emb.safetensors"
    save_embeddings(emb_path, synthetic_embeddings())
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert run_all(tmp_path, emb_path, bits=12, tracking_uri=uri) == [0, 0, 0]

    float_m = json.loads((tmp_path / "knn.json").read_text())
    eval_m = json.loads((tmp_path / "eval.json").read_text())
    train_m = json.loads((tmp_path / "train.json").read_text())
    assert float_m["k"] == 7 and 0.9 <= float_m["accuracy"] <= 1.0
    assert 0.0 <= eval_m["accuracy"] <= 1.0 and eval_m["retention_accuracy"] >= 0.95
    for metric in ("accuracy", "balanced_accuracy", "macro_f1"):  # each retention's divisor
        assert eval_m[f"float_{metric}"] == float_m[metric]
    assert eval_m["degenerate_release"] == 0 and eval_m["predicted_classes"] == 3
    assert train_m["epochs_run"] >= 1 and train_m["bits"] == 12
    assert (tmp_path / "knn/confusion.png").read_bytes()[:4] == b"\x89PNG"
    assert json.loads((tmp_path / "knn/confusion.json").read_text())["labels"] == [
        "c0",
        "c1",
        "c2",
    ]
    sweep = (tmp_path / "knn.csv").read_text().splitlines()
    assert sweep[0] == "k,balanced_accuracy,accuracy,macro_f1" and len(sweep) == 1 + 5

    codes, n_bits, _ = load_codes(tmp_path / "head/codes.safetensors")
    assert n_bits == 12 and codes["test"].shape == (90, 2)
    _, cfg = load_head(tmp_path / "head")
    assert (
        cfg["method"] == "dpsh"
        and cfg["embeddings"]["backbone"] == "tiny-random"
        and cfg["embeddings"]["dim"] == 32
    )
    # the train metrics record the digest config.json does (the report matches it)
    assert train_m["embeddings_fingerprint"] == cfg["embeddings"]["fingerprint"]

    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name("hashaudit")
    runs = {r.info.run_name: r for r in client.search_runs([exp.experiment_id])}
    assert set(runs) == {"knn@syn", "train@syn-dpsh-12", "evaluate@syn-dpsh-12"}
    ev = runs["evaluate@syn-dpsh-12"]
    assert ev.data.metrics["accuracy"] == pytest.approx(
        eval_m["accuracy"]
    )  # same numbers as the JSON
    assert (
        ev.data.tags["method"] == "dpsh"
        and ev.data.tags["bits"] == "12"
        and ev.info.status == "FINISHED"
    )
    assert runs["train@syn-dpsh-12"].data.params["train.epochs"] == "4"
    assert "embeddings_fingerprint" not in runs["train@syn-dpsh-12"].data.metrics  # JSON only
    # the per-epoch loss history has one value per epoch; the summary adds none at step 0
    loss = client.get_metric_history(runs["train@syn-dpsh-12"].info.run_id, "loss")
    assert sorted(m.step for m in loss) == list(range(train_m["epochs_run"]))
    assert train_m["loss"] == pytest.approx(max(loss, key=lambda m: m.step).value)


def test_backbone_mismatch_is_refused(tmp_path: Path) -> None:
    emb_path = tmp_path / "emb.safetensors"
    save_embeddings(emb_path, synthetic_embeddings())
    assert run_all(tmp_path, emb_path) == [0, 0, 0]
    other = tmp_path / "other.safetensors"
    save_embeddings(other, synthetic_embeddings(backbone="facebook/dinov2-base"))
    code = evaluate.main(eval_argv(BASE, other, tmp_path / "o", *IDENT, head=tmp_path / "head"))
    assert code == 2
    assert not (tmp_path / "o/eval.json").exists()


@pytest.mark.parametrize(
    ("method", "bits", "expected"),
    [
        ("nope", 12, "unknown hashing method 'nope'"),
        ("dpsh", 4, "--bits 4: use a code length from 8 to 1024"),
    ],
)
def test_train_rejects_bad_method_or_bits(
    tmp_path: Path, caplog, method: str, bits: int, expected: str
) -> None:
    emb_path = tmp_path / "emb.safetensors"
    save_embeddings(emb_path, synthetic_embeddings())
    code = train.main(train_argv(BASE, emb_path, tmp_path, method=method, bits=bits))
    assert code == 2 and expected in caplog.text
    assert not (tmp_path / "head").exists() and not (tmp_path / "train.json").exists()


def test_multilabel_pipeline(tmp_path: Path) -> None:
    emb_path = tmp_path / "emb.safetensors"
    save_embeddings(emb_path, synthetic_embeddings(multilabel=True))
    assert run_all(tmp_path, emb_path, bits=16) == [0, 0, 0]
    m = json.loads((tmp_path / "eval.json").read_text())
    assert 0.0 <= m["accuracy"] <= 1.0 and "macro_f1" in m
    assert not (tmp_path / "knn/confusion.png").exists()  # no confusion matrix for multi-label


def test_train_checks_knn_k_alone_not_the_sweep_it_does_not_read(tmp_path: Path, caplog) -> None:
    """Model selection votes with knn.k; knn.k_sweep is the knn stage's (and not among train's DVC
    params): a sweep k above the training rows failed train with a k_sweep error."""
    emb_path = tmp_path / "emb.safetensors"
    save_embeddings(emb_path, synthetic_embeddings())
    n_train = len(synthetic_embeddings().y["train"])
    base = [*BASE, "--set", f"knn.k_sweep=[3,{n_train + 1}]", "--set", "tracking.enabled=false"]
    assert train.main(train_argv(base, emb_path, tmp_path, method="dpsh", bits=12)) == 0
    base[-3] = f"knn.k={n_train + 1}"  # knn.k itself is still checked
    assert train.main(train_argv(base, emb_path, tmp_path, method="dpsh", bits=12)) == 2
    assert f"knn.k: k={n_train + 1} exceeds the {n_train} rows" in caplog.text
