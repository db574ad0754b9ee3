"""A head trained with another label withheld than ``attack.withhold_label`` is refused with one
line naming both columns, also where the embeddings file's ``class_names`` metadata cannot be
read (a file given straight to a stage): the message then names the columns by index. It raised
a JSONDecodeError traceback (exit 1) while composing the message."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from pipeline import attack
from pipeline.artifacts import ArtifactError, save_embeddings
from pipeline.synthetic import synthetic_embeddings
from tests.pipeline.test_attack_stage import _no_output, head_args, train_head


def _unreadable_names(class_names: str):
    emb = synthetic_embeddings(n=(160, 60, 60), dim=16, multilabel=True)
    return dataclasses.replace(emb, meta={**emb.meta, "class_names": class_names})


@pytest.mark.parametrize("class_names", ["c0,c1,c2", '["c0", "c1"]', '{"a": 1}'])
def test_check_withheld_names_columns_by_index_when_names_are_unreadable(class_names) -> None:
    emb = _unreadable_names(class_names)
    config = {"embeddings": {"withheld_label": 1}}
    with pytest.raises(ArtifactError) as err:
        attack.check_withheld(config, emb, None, None, head_dir=Path("head"))
    want = "trained with label column 1 withheld, but attack.withhold_label=None means no label"
    assert want in str(err.value)
    with pytest.raises(ArtifactError, match=r"label column 1 withheld.*label column 2 withheld"):
        attack.check_withheld(config, emb, 2, 2, head_dir=Path("head"))


def test_readable_names_still_name_the_finding() -> None:
    emb = synthetic_embeddings(n=(160, 60, 60), dim=16, multilabel=True)
    with pytest.raises(ArtifactError, match=r"label column 1 \('c1'\) withheld"):
        attack.check_withheld(
            {"embeddings": {"withheld_label": 1}}, emb, None, None, head_dir=Path("head")
        )


def test_attack_of_a_head_withholding_another_column_exits_2(
    tmp_path: Path, one_thread, caplog
) -> None:
    save_embeddings(tmp_path / "syn.safetensors", _unreadable_names("c0,c1,c2"))
    assert train_head(tmp_path, sets=("attack.withhold_label=1",)) == 0
    cfg = json.loads((tmp_path / "head/config.json").read_text())
    assert cfg["embeddings"]["withheld_label"] == 1
    caplog.clear()
    assert attack.main(head_args(tmp_path)) == 2  # attack.withhold_label: null (params.yaml)
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 1 and "\n" not in errors[0], errors
    assert "trained with label column 1 withheld" in errors[0]
    assert "attack.withhold_label=None means no label withheld" in errors[0]
    assert _no_output(tmp_path, "dpsh")
