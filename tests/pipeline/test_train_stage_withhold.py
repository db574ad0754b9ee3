"""attack.withhold_label on a multi-label file whose class_names metadata is not a JSON list of one
name per column (a file given straight to a stage keeps its metadata as written): a name is
refused in one line naming the file, a column index still works. It was a JSONDecodeError or
IndexError traceback (exit 1), even for a column index."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from pipeline import train
from pipeline.artifacts import EmbeddingsFile, load_head, save_embeddings
from pipeline.common import stage_argv
from pipeline.synthetic import synthetic_embeddings
from pipeline.train import withhold_label
from tests.stage_cli import FAST


def _multilabel(class_names: str | None) -> EmbeddingsFile:
    e = synthetic_embeddings(multilabel=True)
    meta = {k: v for k, v in e.meta.items() if k not in ("fingerprint", "class_names")}
    if class_names is not None:
        meta["class_names"] = class_names
    return EmbeddingsFile(x=e.x, y=e.y, meta=meta)


def _train(tmp_path: Path, emb: EmbeddingsFile, label: str | int) -> int:
    path = tmp_path / "ml.safetensors"
    save_embeddings(path, emb)
    argv = stage_argv(
        *FAST, "--set", f"attack.withhold_label={label}", dataset="syn", method="dpsh", bits=12,
        embeddings=path, out=tmp_path / "head", metrics=tmp_path / "t.json",
        history=tmp_path / "t.csv",
    )  # fmt: skip
    return train.main(argv)


@pytest.mark.parametrize(
    ("class_names", "problem"),
    [
        ("c0,c1,c2", "class_names metadata 'c0,c1,c2' is not JSON"),
        ('["c0", "c1"]', "class_names metadata holds 2 names, not a list of 3"),
        ('{"c1": 1}', "class_names metadata holds dict, not a list of 3"),
    ],
)
def test_a_name_with_unreadable_class_names_is_one_line_exit_2(
    tmp_path: Path, caplog, class_names: str, problem: str
) -> None:
    assert _train(tmp_path, _multilabel(class_names), "c1") == 2
    line = next(r.getMessage() for r in caplog.records if r.levelname == "ERROR")
    assert line.startswith("attack.withhold_label: 'c1' cannot be looked up: ")
    assert f"{tmp_path / 'ml.safetensors'}'s {problem}" in line
    assert "give the column index (0..2) instead" in line
    assert "Traceback" not in caplog.text
    assert not (tmp_path / "head").exists() and not (tmp_path / "t.json").exists()


def test_a_column_index_with_unreadable_class_names_withholds_that_column(
    tmp_path: Path,
) -> None:
    assert _train(tmp_path, _multilabel("c0,c1,c2"), 2) == 0
    _, cfg = load_head(tmp_path / "head")
    assert cfg["embeddings"]["withheld_label"] == 2 and cfg["head_spec"]["n_classes"] == 2


def test_the_reduced_file_keeps_the_other_columns_and_their_names() -> None:
    src = _multilabel(json.dumps(["c0", "c1", "c2"]))
    out, col = withhold_label(src, "c1")
    assert col == 1 and json.loads(out.meta["class_names"]) == ["c0", "c2"]
    for s in ("train", "val", "test"):
        np.testing.assert_array_equal(out.y[s], src.y[s][:, [0, 2]])
    # unreadable names: the index still applies, and no stale names describe the 2 columns left
    bad, col = withhold_label(_multilabel("c0,c1,c2"), 0)
    assert col == 0 and "class_names" not in bad.meta and bad.meta["n_classes"] == "2"
    np.testing.assert_array_equal(bad.y["train"], src.y["train"][:, [1, 2]])
