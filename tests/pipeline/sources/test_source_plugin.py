"""The source table: every registered kind loads, the params check reads the table, and a new
source (tests/pipeline/sources/toy_source.py) needs only its module and one table line."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from pipeline import sources
from pipeline.artifacts import load_embeddings
from pipeline.config import ParamsError, SourceConfig, load_params
from pipeline.extract import main
from tests.conftest import REPO

TOY = "tests.pipeline.sources.toy_source"


@pytest.mark.parametrize("kind", sources.kinds())
def test_every_registered_source_meets_the_interface(kind: str) -> None:
    module = sources.get(kind)
    assert module.YIELDS in ("images", "embeddings") and callable(module.load)
    assert module.__name__ == f"pipeline.sources.{kind}"  # one module per kind, named after it


def test_kind_check_reads_the_table(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(
        ParamsError, match=r"kind: 'toy' is not a data source kind; use one of medmnist"
    ):
        SourceConfig(kind="toy")
    monkeypatch.setitem(sources.SOURCES, "toy", TOY)
    assert SourceConfig(kind="toy", size=12).kind == "toy"
    with pytest.raises(ParamsError, match="size: 3: a toy source needs at least 10"):
        SourceConfig(kind="toy", size=3)  # the module's own check_config hook


def test_a_fixture_source_runs_through_extract(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sources.SOURCES, "toy", TOY)  # the one table line
    out = tmp_path / "emb.safetensors"
    argv = [
        "--params", str(REPO / "params.yaml"),
        "--set", "backbone.name=tiny-random", "--set", "backbone.image_size=28",
        "--set", "tracking.enabled=false", "--set", "data.sources.shapes={kind: toy, size: 20}",
        "--dataset", "shapes", "--out", str(out), "--metrics", str(tmp_path / "m.json"), "--no-progress",
    ]  # fmt: skip
    assert main(argv) == 0
    emb = load_embeddings(out)
    # 60 images: test = round(0.1 * 60) = 6 carved first, val = round(0.1 * 54) = 5, train 49
    assert [len(emb.y[s]) for s in ("train", "val", "test")] == [49, 5, 6]
    assert np.bincount(emb.y["test"]).tolist() == [2, 2, 2]
    assert json.loads(emb.meta["class_names"]) == ["dark", "mid", "bright"]
    assert emb.meta["source"] == "toy" and emb.meta["task"] == "multi-class"
    assert emb.meta["backbone"] == "tiny-random"
    metrics = json.loads((tmp_path / "m.json").read_text())
    assert metrics["n_train"] == 49 and metrics["n_classes"] == 3


def test_unknown_kind_is_a_params_error_naming_the_key(tmp_path: Path) -> None:
    with pytest.raises(ParamsError, match=r"data.sources.x.kind: 'nope' is not a data source kind"):
        load_params(REPO / "params.yaml", {"data.sources.x": {"kind": "nope"}})
