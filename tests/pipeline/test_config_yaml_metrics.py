"""Params that were accepted and then silently ignored or overwritten: retrieval metrics the
configured cut-offs never compute, and a key written twice in the params file or a --set value."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from pipeline.common import parse_overrides
from pipeline.config import ParamsError, load_params
from tests.conftest import REPO
from tests.pipeline.test_config_errors import knn_main
from tests.pipeline.test_config_overrides import error_of, loaded

PARAMS = REPO / "params.yaml"


# --- retrieval.metrics naming a cut-off or radius that is not computed ----------------------


@pytest.mark.parametrize(
    ("items", "message"),
    [
        (
            # params.yaml lists map_at_1000 and map_at_10: with map_at [5] neither was computed
            # and both vanished from the metrics JSON, map_at_5 with them
            ("retrieval.map_at=[5]",),
            "retrieval.metrics[1]: 'map_at_1000' is not computed: retrieval.map_at is [5]; add "
            "1000 to retrieval.map_at or drop 'map_at_1000' from retrieval.metrics",
        ),
        (
            ("retrieval.precision_at=[10]",),
            "retrieval.metrics[4]: 'precision_at_100' is not computed: retrieval.precision_at is "
            "[10]; add 100 to retrieval.precision_at or drop 'precision_at_100' from "
            "retrieval.metrics",
        ),
        (
            ("retrieval.radius=3",),
            "retrieval.metrics[5]: 'precision_radius_2' is not computed: retrieval.radius is 3; "
            "set retrieval.radius to 2 or list 'precision_radius_3' instead",
        ),
        (
            ("retrieval.radius=3", "retrieval.metrics=[map_all, radius_2_empty]"),
            "retrieval.metrics[1]: 'radius_2_empty' is not computed: retrieval.radius is 3; "
            "set retrieval.radius to 2 or list 'radius_3_empty' instead",
        ),
    ],
)
def test_a_listed_metric_the_cut_offs_do_not_compute_is_refused(
    items: tuple[str, ...], message: str
) -> None:
    assert error_of(*items) == message


def test_a_listed_metric_that_is_not_computed_is_exit_2_before_work(tmp_path: Path, caplog) -> None:
    message = (
        "retrieval.metrics[5]: 'precision_radius_2' is not computed: retrieval.radius is 3; "
        "set retrieval.radius to 2 or list 'precision_radius_3' instead"
    )
    assert knn_main(tmp_path, "--params", str(PARAMS), "--set", "retrieval.radius=3") == 2
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert errors == [message] and "Traceback" not in caplog.text
    assert not (tmp_path / "m.json").exists()


def test_metrics_that_follow_the_cut_offs_are_accepted_and_reported() -> None:
    """The fix the messages give works, and every listed name then lands in the JSON."""
    from pipeline.artifacts import EmbeddingsFile
    from pipeline.retrieval_metrics import code_retrieval
    from retrieval.codes import pack_bits

    # 4 database rows, 1 query, 8-bit codes; labels 0, 0, 1, 1 and the query of class 0
    train = np.array([[0] * 8, [1] + [0] * 7, [1] * 8, [1] * 7 + [0]], dtype=bool)
    query = np.array([[0] * 8], dtype=bool)
    emb = EmbeddingsFile(
        x={s: np.zeros((n, 4), np.float32) for s, n in (("train", 4), ("val", 4), ("test", 1))},
        y={"train": np.array([0, 0, 1, 1]), "val": np.array([0, 0, 1, 1]), "test": np.array([0])},
        meta={"n_classes": "2"},
    )
    codes = {"train": pack_bits(train), "test": pack_bits(query)}
    p = load_params(
        PARAMS,
        {
            **parse_overrides(
                [
                    "retrieval.map_at=[2]",
                    "retrieval.precision_at=[3]",
                    "retrieval.radius=1",
                    "retrieval.metrics=[map_all, map_at_2, precision_at_3, precision_radius_1, "
                    "radius_1_empty, bytes_per_item]",
                ]
            ),
            "knn.k": 1,
            "retrieval.shortlist": 4,
        },
    )
    out = code_retrieval(p, emb, codes, 8).scalars
    # distances 0, 1, 8, 7: ranks relevant, relevant, irrelevant, irrelevant (no ties)
    assert set(out) == {
        "map_all",
        "map_at_2",
        "precision_at_3",
        "precision_radius_1",
        "radius_1_empty",
        "bytes_per_item",
    }
    assert out["map_all"] == pytest.approx(1.0) and out["map_at_2"] == pytest.approx(1.0)
    assert out["precision_at_3"] == pytest.approx(2 / 3)
    assert out["precision_radius_1"] == pytest.approx(1.0)  # rows at distance 0 and 1, both 0
    assert out["radius_1_empty"] == pytest.approx(0.0) and out["bytes_per_item"] == 1


# --- a key written twice: YAML 1.1 (PyYAML) kept the last silently, DVC refuses the file -------


def test_a_key_written_twice_in_the_params_file_is_refused(tmp_path: Path, caplog) -> None:
    """``epochs: 5`` added below the section's ``epochs: 60`` trained 5 epochs by hand and under
    ``--params``, while DVC (ruamel) refuses the same file; a second ``train:`` section dropped
    every key of the first (lr, bits, ...) to its default."""
    text = PARAMS.read_text()
    line = text[: text.index("  epochs: 60")].count("\n") + 1
    path = tmp_path / "p.yaml"
    path.write_text(text.replace("  epochs: 60", "  epochs: 60\n  epochs: 5", 1))
    message = (
        f"{path}:{line + 1}:3: not valid YAML: duplicate key 'epochs' (first on line {line}); "
        "PyYAML keeps only the last one and DVC refuses it: write each key once"
    )
    with pytest.raises(ParamsError) as err:
        load_params(path)
    assert str(err.value) == message
    assert knn_main(tmp_path, "--params", str(path)) == 2
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert errors == [message] and "Traceback" not in caplog.text
    path.write_text(text + "train:\n  epochs: 5\n")  # a second section at the end
    with pytest.raises(ParamsError, match=r":\d+:1: not valid YAML: duplicate key 'train' \("):
        load_params(path)


def test_a_key_written_twice_in_a_set_value_is_refused() -> None:
    assert error_of("data.sources.x={kind: medmnist, kind: embeddings, path: x.npz}") == (
        "--set 'data.sources.x={kind: medmnist, kind: embeddings, path: x.npz}': the value:1:18: "
        "not valid YAML: duplicate key 'kind' (first on line 1); PyYAML keeps only the last "
        "one and DVC refuses it: write each key once"
    )


def test_merge_keys_and_distinct_keys_still_load(tmp_path: Path) -> None:
    """A YAML merge (``<<: *base``) overriding a merged key is not a duplicate."""
    path = tmp_path / "p.yaml"
    path.write_text(
        PARAMS.read_text().replace(
            "  breastmnist: {kind: medmnist, size: 28}",
            "  breastmnist: &mm {kind: medmnist, size: 28}\n    retinamnist: {<<: *mm, size: 64}",
            1,
        )
    )
    text = path.read_text().replace("    retinamnist: {kind: medmnist, size: 28}\n", "", 1)
    path.write_text(text)
    p = load_params(path)
    assert p.data.sources["retinamnist"].size == 64 and p.data.sources["breastmnist"].size == 28
    assert p.train.epochs == 60


@pytest.mark.parametrize(
    ("key", "value"),
    [("name", ""), ("name", "facebook/dinov2-base "), ("name", " models/x"), ("revision", "")],
)
def test_an_empty_or_padded_backbone_name_or_revision_is_refused(key: str, value: str) -> None:
    # backbone.name "" was read as the folder "." (the working directory) as the model
    with pytest.raises(ParamsError, match=rf"^backbone.{key}: {re.escape(repr(value))} is empty"):
        load_params(PARAMS, {f"backbone.{key}": value})


def test_a_gpu_index_is_a_device_and_other_names_are_refused() -> None:
    # backbone.device / train.device: cuda:1 was refused by the config although every stage
    # honours it (hashers.devices.resolve_device checks that the GPU exists)
    params = loaded("backbone.device=cuda:1", "train.device=cuda:0")
    assert (params.backbone.device, params.train.device) == ("cuda:1", "cuda:0")
    for value in ("gpu", "cuda:x", "cuda:01", "CUDA"):
        assert error_of(f"train.device={value}").startswith(
            f"train.device: '{value}' is not a device; use auto, cpu, cuda, cuda:<index>"
        )
