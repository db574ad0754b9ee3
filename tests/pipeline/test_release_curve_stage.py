"""Stage ``release_curve`` when the study runs no linkage attack."""

from __future__ import annotations

import csv
import logging
from pathlib import Path

import pytest

from pipeline import release_curve
from pipeline.artifacts import write_json
from tests.conftest import REPO

LINK = [f"linkage/{g}/top1{t}" for g in ("train", "test") for t in ("", "_baseline")]
CONTENT = "sha256:" + "a" * 64  # the unreleased head's files
PUBLIC = "sha256-public:" + "b" * 64  # a database release's files (train private)
REFERENCE = {"embeddings_fingerprint": CONTENT, "embeddings_public_fingerprint_train": PUBLIC}


def _cli(tmp: Path) -> list[str]:
    return [
        *("--params", str(REPO / "params.yaml"), "--set", "release.epsilons=[1]"),
        *("--name", "lsh-16", "--evaluate", str(tmp / "ev/lsh-16.json")),
        *("--attack", str(tmp / "at/lsh-16.json"), "--evaluate-rr-dir", str(tmp / "ev")),
        *("--attack-rr-dir", str(tmp / "at"), "--csv", str(tmp / "curve.csv")),
        *("--float-metrics", str(tmp / "knn.json")),
    ]


def _write(tmp: Path, attack_numbers: dict[str, float]) -> None:
    write_json(tmp / "knn.json", REFERENCE)
    for stem, acc, fp in (("lsh-16-rr1", 0.5, PUBLIC), ("lsh-16", 0.8, CONTENT)):
        util = {"balanced_accuracy": acc, "retention_balanced_accuracy": acc}
        write_json(tmp / f"ev/{stem}.json", {**util, "embeddings_fingerprint": fp})
        numbers = {"anonymity/all/unique": 0.1, **attack_numbers, "embeddings_fingerprint": fp}
        write_json(tmp / f"at/{stem}.json", numbers)


def test_no_linkage_attack_gives_empty_linkage_columns(tmp_path: Path) -> None:
    """attack.attacks without linkage: the curve keeps its utility, linkage left empty (it used
    to fail with an error asking to re-run the attack stage, which wrote the same file)."""
    _write(tmp_path, {})
    assert release_curve.main(_cli(tmp_path)) == 0
    rows = list(csv.DictReader((tmp_path / "curve.csv").open()))
    assert [(r["epsilon_code"], r["balanced_accuracy"]) for r in rows] == [
        ("1.0", "0.5"),
        ("inf", "0.8"),
    ]
    assert all(
        r["linkage_train_top1"] == "" and r["linkage_test_top1_baseline"] == "" for r in rows
    )


def test_some_linkage_numbers_but_not_all_is_an_error(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    _write(tmp_path, {LINK[0]: 0.3})
    caplog.set_level(logging.ERROR)
    assert release_curve.main(_cli(tmp_path)) == 2
    assert "missing 'linkage/train/top1_baseline'" in caplog.text
    assert not (tmp_path / "curve.csv").exists()


def test_a_release_file_of_other_embeddings_is_refused(tmp_path: Path, caplog) -> None:
    """One curve, one data set: an ε_code file left from an older extract (its public
    fingerprint is not the float baseline's) is named, and no CSV is written."""
    _write(tmp_path, {})
    write_json(
        tmp_path / "at/lsh-16-rr1.json",
        {"anonymity/all/unique": 0.1, "embeddings_fingerprint": "sha256-public:" + "c" * 64},
    )
    assert release_curve.main(_cli(tmp_path)) == 2
    assert f"{tmp_path / 'at/lsh-16-rr1.json'} was made from other embeddings" in caplog.text
    assert not (tmp_path / "curve.csv").exists()


def test_an_evaluate_file_of_another_float_knn_run_is_refused(tmp_path: Path, caplog) -> None:
    """The ε_code = 1 file was evaluated against a k=5 float KNN (float accuracy 0.8), the
    unreleased head against the k=7 one the float metrics hold (0.75): the curve's retentions
    would divide by different float numbers. Refused, naming the file, and no CSV is written."""
    _write(tmp_path, {})
    write_json(tmp_path / "knn.json", {**REFERENCE, "k": 7, "accuracy": 0.75})
    stale = {"balanced_accuracy": 0.5, "retention_balanced_accuracy": 0.625, "k": 5}
    stale |= {"float_accuracy": 0.8, "embeddings_fingerprint": PUBLIC}
    write_json(tmp_path / "ev/lsh-16-rr1.json", stale)
    fresh = {"balanced_accuracy": 0.6, "retention_balanced_accuracy": 0.8, "k": 7}
    fresh |= {"float_accuracy": 0.75, "embeddings_fingerprint": CONTENT}
    write_json(tmp_path / "ev/lsh-16.json", fresh)
    assert release_curve.main(_cli(tmp_path)) == 2
    assert f"{tmp_path / 'ev/lsh-16-rr1.json'}: k = 5, but the float KNN" in caplog.text
    assert not (tmp_path / "curve.csv").exists()
    # the same file at the float metrics' k and accuracy: one curve, accepted
    write_json(tmp_path / "ev/lsh-16-rr1.json", {**stale, "k": 7, "float_accuracy": 0.75})
    assert release_curve.main(_cli(tmp_path)) == 0
    rows = list(csv.DictReader((tmp_path / "curve.csv").open()))
    assert [r["epsilon_code"] for r in rows] == ["1.0", "inf"]
