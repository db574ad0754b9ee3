"""Multi-label sets through knn -> train -> evaluate: every output DVC declares is written."""

from __future__ import annotations

import json
from pathlib import Path

from pipeline import evaluate, knn, train
from pipeline.artifacts import save_embeddings
from pipeline.knn import MULTILABEL_NO_CONFUSION
from pipeline.synthetic import synthetic_embeddings
from tests.stage_cli import FAST, IDENT, eval_argv, knn_argv, train_argv


def test_multilabel_stages_write_their_declared_confusion_folders(tmp_path: Path) -> None:
    """dvc.yaml declares each evaluate stage's confusion folder as an output; a multi-label set
    has no confusion matrix, and the folder used to be missing, so ``dvc repro`` failed."""
    emb = tmp_path / "emb.safetensors"
    save_embeddings(emb, synthetic_embeddings(multilabel=True))
    assert knn.main(knn_argv(FAST, emb, tmp_path)) == 0
    assert train.main(train_argv(FAST, emb, tmp_path)) == 0
    assert evaluate.main(eval_argv(FAST, emb, tmp_path, *IDENT)) == 0
    for stage in ("knn", "eval"):
        record = json.loads((tmp_path / stage / "confusion.json").read_text())
        assert record["matrix"] is None and record["why"] == MULTILABEL_NO_CONFUSION
        assert len(record["labels"]) == 3
        assert not (tmp_path / stage / "confusion.png").exists()
    # a constant predictor's per-label balanced accuracy: the report's chance line
    assert json.loads((tmp_path / "knn.json").read_text())["chance_balanced_accuracy"] == 0.5
