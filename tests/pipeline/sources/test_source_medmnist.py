"""Source ``medmnist``: the real MedMNIST files, MD5 checks, downloads, multi-label files."""

from __future__ import annotations

import dataclasses
import hashlib
import shutil
from pathlib import Path

import numpy as np
import pytest

from pipeline.config import SourceConfig
from pipeline.data import DataError
from pipeline.sources.medmnist import _medmnist_info_table
from tests.pipeline.sources.source_helpers import data_config, load

BREAST_MD5 = "750601b1f35ba3300ea97c75c52ff8f6"


def test_breastmnist_official_splits(shared_medmnist: Path) -> None:
    ds = load("breastmnist", data_config(shared_medmnist))
    assert {s: len(ds.splits[s]) for s in ("train", "val", "test")} == {
        "train": 546,
        "val": 78,
        "test": 156,
    }
    assert ds.task == "binary-class" and ds.n_classes == 2
    assert ds.class_names == ["malignant", "normal, benign"]
    assert ds.source_info["md5"] == BREAST_MD5 and ds.source_info["medmnist_flag"] == "breastmnist"
    train = ds.splits["train"]
    assert train.labels.dtype == np.int64 and train.labels.shape == (546,)
    assert set(np.unique(train.labels)) == {0, 1}
    images = train.as_array()
    assert images is not None and images.shape == (546, 28, 28) and images.dtype == np.uint8
    batch = train.get_batch([0, 5])
    assert len(batch) == 2 and batch[0].shape == (28, 28) and np.array_equal(batch[1], images[5])


def test_retinamnist_rgb_ordinal(shared_medmnist: Path) -> None:
    ds = load("retinamnist", data_config(shared_medmnist))
    assert [len(ds.splits[s]) for s in ("train", "val", "test")] == [1080, 120, 400]
    assert ds.task == "ordinal-regression" and ds.n_classes == 5
    assert ds.splits["test"].as_array().shape == (400, 28, 28, 3)
    assert ds.splits["val"].labels.max() <= 4


def test_md5_mismatch_is_reported(shared_medmnist: Path, tmp_path: Path) -> None:
    raw = bytearray((shared_medmnist / "breastmnist.npz").read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    (tmp_path / "breastmnist.npz").write_bytes(bytes(raw))
    with pytest.raises(DataError) as err:
        load("breastmnist", data_config(tmp_path))
    msg = str(err.value)
    assert "breastmnist.npz" in msg and BREAST_MD5 in msg and hashlib.md5(raw).hexdigest() in msg
    assert "delete it and re-download" in msg


def test_truncated_file_is_reported(shared_medmnist: Path, tmp_path: Path) -> None:
    raw = (shared_medmnist / "breastmnist.npz").read_bytes()
    (tmp_path / "breastmnist.npz").write_bytes(raw[: len(raw) // 3])
    with pytest.raises(DataError, match=r"truncated or corrupt.*delete it and re-download"):
        load("breastmnist", data_config(tmp_path))


def test_missing_file_without_download_names_path_and_fix(tmp_path: Path) -> None:
    with pytest.raises(DataError) as err:
        load("breastmnist", data_config(tmp_path / "nowhere"))
    msg = str(err.value)
    assert str(tmp_path / "nowhere" / "breastmnist.npz") in msg
    assert "data.download: true" in msg and "place the official file there" in msg


def test_download_failure_is_clear_and_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    INFO = _medmnist_info_table()

    url = "http://127.0.0.1:9/x.npz"
    monkeypatch.setitem(INFO["breastmnist"], "url", url)
    data = dataclasses.replace(data_config(tmp_path), download=True)
    with pytest.raises(DataError) as err:
        load("breastmnist", data)
    assert url in str(err.value) and "manually" in str(err.value)
    assert list(tmp_path.iterdir()) == []


def test_download_verifies_md5_then_renames(
    shared_medmnist: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    INFO = _medmnist_info_table()

    monkeypatch.setitem(INFO["breastmnist"], "url", (shared_medmnist / "breastmnist.npz").as_uri())
    root = tmp_path / "root"
    ds = load("breastmnist", dataclasses.replace(data_config(root), download=True))
    assert len(ds.splits["train"]) == 546
    assert [p.name for p in root.iterdir()] == ["breastmnist.npz"]

    monkeypatch.setitem(INFO["breastmnist"], "MD5", "0" * 32)  # upstream file changed
    (root / "breastmnist.npz").unlink()
    with pytest.raises(DataError, match="expected 0000"):
        load("breastmnist", dataclasses.replace(data_config(root), download=True))
    assert list(root.iterdir()) == []


def test_multilabel_labels_become_multi_hot(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    INFO = _medmnist_info_table()

    g = np.random.default_rng(0)
    arrays = {}
    for s, n in (("train", 30), ("val", 10), ("test", 10)):
        arrays[f"{s}_images"] = g.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        arrays[f"{s}_labels"] = g.integers(0, 2, (n, 14), dtype=np.uint8)
    np.savez(tmp_path / "chestmnist.npz", **arrays)
    monkeypatch.setitem(
        INFO["chestmnist"],
        "MD5",
        hashlib.md5((tmp_path / "chestmnist.npz").read_bytes()).hexdigest(),
    )
    ds = load("chestmnist", data_config(tmp_path, chestmnist=SourceConfig(kind="medmnist")))
    assert ds.task == "multi-label" and ds.n_classes == 14
    assert ds.splits["train"].labels.dtype == np.uint8 and ds.splits["train"].labels.shape == (
        30,
        14,
    )
    assert np.array_equal(ds.splits["test"].labels, arrays["test_labels"])


def test_tilde_root_is_expanded_for_reading_and_downloading(
    shared_medmnist: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``data.root: ~/...`` is the user's home, not a folder named ``~`` under the working
    directory: an existing file there is read, and a download lands there."""
    INFO = _medmnist_info_table()

    home, cwd = tmp_path / "home", tmp_path / "cwd"
    (home / "mm").mkdir(parents=True)
    cwd.mkdir()
    shutil.copyfile(shared_medmnist / "breastmnist.npz", home / "mm" / "breastmnist.npz")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(cwd)
    ds = load("breastmnist", data_config("~/mm"))
    assert [len(ds.splits[s]) for s in ("train", "val", "test")] == [546, 78, 156]
    assert ds.source_info["md5"] == BREAST_MD5

    monkeypatch.setitem(INFO["breastmnist"], "url", (shared_medmnist / "breastmnist.npz").as_uri())
    ds = load("breastmnist", dataclasses.replace(data_config("~/dl"), download=True))
    assert len(ds.splits["train"]) == 546
    assert [p.name for p in (home / "dl").iterdir()] == ["breastmnist.npz"]
    assert list(cwd.iterdir()) == []  # no ./~/dl/breastmnist.npz
