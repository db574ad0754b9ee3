"""params.yaml and --set problems as one line naming the file, line, column or key (issue 8)."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline import knn
from pipeline.common import parse_overrides
from pipeline.config import ParamsError, load_params, set_dotted
from tests.conftest import REPO

PARAMS = REPO / "params.yaml"


def knn_main(tmp: Path, *extra: str) -> int:
    return knn.main(
        [
            *extra,
            "--dataset",
            "syn",
            "--embeddings",
            str(tmp / "missing.safetensors"),
            "--metrics",
            str(tmp / "m.json"),
            "--sweep",
            str(tmp / "s.csv"),
            "--confusion",
            str(tmp / "c.png"),
        ]
    )


@pytest.mark.parametrize(
    ("item", "message"),
    [
        (
            "train.bits=[12",
            "--set 'train.bits=[12': the value:1:4: not valid YAML: expected ',' or ']'",
        ),
        ("seed.x=1", "--set seed.x: seed is a value (0), not a section with keys"),
        ("train.bits.x=1", "--set train.bits.x: train.bits is a value ([12, 24, 36, 48])"),
        ("train..lr=1", "--set 'train..lr': empty key part"),
        ("=3", "--set '=3': use KEY=VALUE"),
    ],
)
def test_bad_set_is_one_line_exit_2(tmp_path: Path, caplog, item: str, message: str) -> None:
    assert knn_main(tmp_path, "--params", str(PARAMS), "--set", item) == 2
    assert message in caplog.text and "Traceback" not in caplog.text
    assert len([r for r in caplog.records if r.levelname == "ERROR"]) == 1


def test_set_into_an_empty_section(tmp_path: Path) -> None:
    tree = {"train": None}
    set_dotted(tree, "train.epochs", 3)
    assert tree == {"train": {"epochs": 3}}


def test_yaml_error_names_file_line_and_column(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("seed: 0\ntrain:\n  bits: [12, 24\n  epochs: 3\n")
    with pytest.raises(ParamsError) as err:
        load_params(bad)
    text = str(err.value)
    # the flow sequence opened on line 3 is broken where `epochs:` starts (line 4, column 9)
    assert text.startswith(f"{bad}:4:9: not valid YAML: ") and "\n" not in text


def test_non_utf8_params_file_is_named(tmp_path: Path, caplog) -> None:
    bad = tmp_path / "latin1.yaml"
    bad.write_bytes("seed: 0\n# r\xe9sum\xe9\n".encode("latin-1"))
    with pytest.raises(
        ParamsError, match=r"latin1\.yaml: not UTF-8 text \(byte 0xe9 at offset 11\)"
    ):
        load_params(bad)
    assert knn_main(tmp_path, "--params", str(bad)) == 2 and "save the params file as UTF-8" in (
        caplog.text
    )


def test_params_file_that_is_not_a_mapping(tmp_path: Path) -> None:
    bad = tmp_path / "list.yaml"
    bad.write_text("- 1\n- 2\n")
    with pytest.raises(ParamsError, match=r"list\.yaml: expected a mapping of sections"):
        load_params(bad)


@pytest.mark.parametrize(
    ("dotted", "value", "message"),
    [
        ("train.bits", "x", "train.bits: expected a list of integers, got 'x'"),
        ("train.hidden_dims", 5, "train.hidden_dims: expected a list of integers, got 5"),
        ("data.limit", "ten", "data.limit: expected an integer or null, got 'ten'"),
        ("train.lr", "fast", "train.lr: expected a number, got 'fast'"),
        ("train.lr", float("inf"), "train.lr: expected a finite number, got inf"),
        ("train.lr", ".nan", "train.lr: expected a number, got '.nan'"),
    ],
)
def test_type_messages_are_readable(dotted: str, value: object, message: str) -> None:
    with pytest.raises(ParamsError) as err:
        load_params(PARAMS, {dotted: value})
    assert str(err.value) == message
    assert "Ellipsis" not in str(err.value) and "tuple[" not in str(err.value)


def test_exponent_without_dot_is_a_number(tmp_path: Path) -> None:
    """YAML 1.1 (PyYAML) reads `1e-4` as the string '1e-4'; float fields accept it."""
    import yaml

    assert yaml.safe_load("lr: 1e-4") == {"lr": "1e-4"}  # the PyYAML behaviour this works around
    text = (
        PARAMS.read_text()
        .replace("lr: 0.001", "lr: 1e-4")
        .replace("weight_decay: 0.0001", "weight_decay: 5E+2")
    )
    path = tmp_path / "p.yaml"
    path.write_text(text)
    p = load_params(path)
    assert p.train.lr == 1e-4 and isinstance(p.train.lr, float) and p.train.weight_decay == 500.0
    assert load_params(PARAMS, parse_overrides(["train.lr=3e-4"])).train.lr == 3e-4
    with pytest.raises(ParamsError, match=r"train.epochs: expected an integer, got '1e3'"):
        load_params(PARAMS, {"train.epochs": "1e3"})  # only float fields take numeric strings
