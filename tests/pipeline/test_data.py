"""Shared data handling: stratified sampling, carving, data.limit, labels and task, split completion."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from pipeline.config import DataConfig
from pipeline.data import (
    DataError,
    ImageSplit,
    apply_limit,
    carve,
    class_names_from_meta,
    complete_splits,
    infer_task,
    normalize_labels,
    stratified_sample,
)
from tests.pipeline.sources.source_helpers import data_config, load


def test_limit_is_stratified_and_seeded(shared_medmnist: Path) -> None:
    data = dataclasses.replace(data_config(shared_medmnist), limit=40)
    full = load("retinamnist", data_config(shared_medmnist))
    a, b = load("retinamnist", data, seed=0), load("retinamnist", data, seed=0)
    c = load("retinamnist", data, seed=1)
    for s in ("train", "val", "test"):
        assert len(a.splits[s]) == 40
        assert np.array_equal(a.splits[s].as_array(), b.splits[s].as_array())
        assert set(np.unique(a.splits[s].labels)) == set(np.unique(full.splits[s].labels))
    assert not np.array_equal(a.splits["train"].as_array(), c.splits["train"].as_array())
    # proportions follow the full split (largest remainders): within one sample per class
    full_counts = np.bincount(full.splits["train"].labels, minlength=5)
    expected = full_counts * 40 / full_counts.sum()
    assert np.all(np.abs(np.bincount(a.splits["train"].labels, minlength=5) - expected) <= 1.0)


def test_limit_below_class_count_is_an_error(shared_medmnist: Path) -> None:
    data = dataclasses.replace(data_config(shared_medmnist), limit=3)
    with pytest.raises(DataError, match=r"data.limit: 3 is smaller than the 5 classes"):
        load("retinamnist", data)


def test_stratified_sample_and_carve() -> None:
    labels = np.repeat([0, 1, 2], [50, 30, 20])
    rng = np.random.default_rng(0)
    picked = stratified_sample(labels, 10, rng=rng)
    assert np.bincount(labels[picked]).tolist() == [5, 3, 2]
    assert np.all(np.diff(picked) > 0)
    rare = np.array([0] * 97 + [1, 2, 3])
    assert set(rare[stratified_sample(rare, 5, rng=rng)]) == {0, 1, 2, 3}
    kept, carved = carve(labels, 0.1, seed=0)
    assert len(carved) == 10 and len(kept) == 90 and not set(kept) & set(carved)
    assert np.bincount(labels[carved]).tolist() == [5, 3, 2]
    _, carved2 = carve(labels, 0.1, seed=0)
    assert np.array_equal(carved, carved2)
    assert apply_limit({"train": labels}, None, seed=0)["train"].tolist() == list(range(100))


def test_limit_keeps_every_multilabel_class() -> None:
    # classes 0-2 are primary findings; class 3 only co-occurs with class 0, in two rows
    y = np.zeros((300, 4), np.uint8)
    y[np.arange(300), np.arange(300) % 3] = 1
    y[[0, 3], 3] = 1
    kept = [apply_limit({"train": y}, 30, seed=seed)["train"] for seed in range(20)]
    for keep in kept:
        assert len(keep) == 30 and np.all(np.diff(keep) > 0)
        assert y[keep].any(axis=0).tolist() == [True] * 4
        assert np.all(np.abs(y[keep, :3].sum(axis=0) - 10) <= 1)  # proportions still followed
    again = apply_limit({"train": y}, 30, seed=7)["train"]
    assert np.array_equal(again, kept[7]) and not np.array_equal(kept[0], kept[1])


def test_limit_keeps_every_multilabel_class_of_random_splits() -> None:
    g = np.random.default_rng(0)
    for trial in range(200):
        n, c = int(g.integers(5, 120)), int(g.integers(1, 12))
        y = (g.random((n, c)) < g.random(c) ** 3 * 0.5).astype(np.uint8)
        present = y.any(axis=0)
        limit = int(g.integers(max(int(present.sum()), 1), n + 1))
        keep = apply_limit({"test": y}, limit, seed=trial)["test"]
        assert len(keep) == limit and len(np.unique(keep)) == limit
        assert np.array_equal(y[keep].any(axis=0), present), trial


def test_limit_below_multilabel_class_count_warns(caplog: pytest.LogCaptureFixture) -> None:
    y = np.eye(5, dtype=np.uint8).repeat(4, axis=0)  # 20 rows, one positive each
    with caplog.at_level("WARNING", logger="pipeline.data"):
        keep = apply_limit({"train": y}, 3, seed=0)["train"]
    assert len(keep) == 3 and int(y[keep].any(axis=0).sum()) == 3
    missing = np.flatnonzero(~y[keep].any(axis=0)).tolist()
    assert f"hold no positive of labels {missing}" in caplog.text
    assert "set data.limit to at least 5" in caplog.text


def test_image_split_subset_keeps_order() -> None:
    images = np.arange(5 * 2 * 2, dtype=np.uint8).reshape(5, 2, 2)
    split = ImageSplit(labels=np.arange(5), images=images).subset([3, 1])
    assert split.labels.tolist() == [3, 1] and np.array_equal(split.get_batch([1])[0], images[1])


def test_infer_task_decides_multilabel_from_the_label_layout() -> None:
    assert infer_task(np.zeros((4, 3), dtype=np.uint8), 3, "multi-label") == "multi-label"
    assert infer_task(np.zeros((4, 3), dtype=np.uint8), 3, "multi-label, binary-class") == (
        "multi-label"
    )
    assert infer_task(np.zeros(4, dtype=np.int64), 2) == "binary-class"
    assert infer_task(np.zeros(4, dtype=np.int64), 5) == "multi-class"
    assert infer_task(np.zeros(4, dtype=np.int64), 5, "ordinal-regression") == "ordinal-regression"
    # a declared multi-label task with [N] labels is not believed
    assert infer_task(np.zeros(4, dtype=np.int64), 5, "multi-label") == "multi-class"


def test_infer_task_refuses_a_declared_task_the_labels_contradict() -> None:
    three = np.array([0, 1, 2, 1])
    with pytest.raises(
        DataError, match=r"f\.npz: declares task 'binary-class' but has 3 classes.*'multi-class'"
    ):
        infer_task(three, 3, "binary-class", where="f.npz")
    hot = np.array([[1, 0, 0], [0, 1, 1]], dtype=np.uint8)
    for single in ("multi-class", "binary-class", "ordinal-regression"):
        with pytest.raises(
            DataError, match=rf"w: declares task '{single}' .*multi-hot matrix \[2, 3\].*class ids"
        ):
            infer_task(hot, 3, single, where="w")
    # what the labels allow is kept
    assert infer_task(np.array([0, 1, 1]), 2, "binary-class") == "binary-class"
    assert infer_task(three, 3, "ordinal-regression") == "ordinal-regression"
    assert infer_task(np.array([0, 1, 1]), 2, "multi-class") == "multi-class"


def test_normalize_labels_layouts_and_errors() -> None:
    col = np.array([[2], [0], [1]])
    y = normalize_labels(col, multilabel=False, n_classes=3, where="w")
    assert y.dtype == np.int64 and y.tolist() == [2, 0, 1]
    hot = normalize_labels(np.array([[1, 0], [1, 1]]), multilabel=True, n_classes=2, where="w")
    assert hot.dtype == np.uint8 and hot.tolist() == [[1, 0], [1, 1]]
    with pytest.raises(DataError, match=r"w: labels outside \[0, 3\).*unlabelled"):
        normalize_labels(np.array([0, 3]), multilabel=False, n_classes=3, where="w")
    with pytest.raises(DataError, match="other than 0/1"):
        normalize_labels(np.array([[2, 0]]), multilabel=True, n_classes=None, where="w")
    with pytest.raises(DataError, match=r"expected multi-hot labels \[N, 4\]"):
        normalize_labels(np.array([[1, 0]]), multilabel=True, n_classes=4, where="w")


def test_class_names_from_meta_falls_back_to_numbers() -> None:
    assert class_names_from_meta({"class_names": json.dumps(["a", "b"])}, 2) == ["a", "b"]
    assert class_names_from_meta({"class_names": json.dumps(["a"])}, 2) == ["0", "1"]
    assert class_names_from_meta({"class_names": "not json"}, 3) == ["0", "1", "2"]
    assert class_names_from_meta({}, 1) == ["0"]


def test_complete_splits_carves_test_then_val_and_keeps_every_row() -> None:
    labels = np.arange(100) % 2
    train = ImageSplit(labels=labels, images=np.arange(100, dtype=np.uint8).reshape(100, 1, 1))
    data = DataConfig(datasets=("d",), sources={"d": _medmnist_entry()}, val_fraction=0.1)
    out = complete_splits("d", {"train": train}, data=data, seed=3)
    # test takes round(0.1 * 100) = 10 rows, val then round(0.1 * 90) = 9 rows of what is left
    assert [len(out[s]) for s in ("train", "val", "test")] == [81, 9, 10]
    rows = np.concatenate([out[s].images[:, 0, 0] for s in ("train", "val", "test")])
    assert sorted(rows.tolist()) == list(range(100))
    assert np.bincount(out["test"].labels).tolist() == [5, 5]
    with pytest.raises(DataError, match="has no train split"):
        complete_splits("d", {"test": train}, data=data, seed=3)


def _medmnist_entry():
    from pipeline.config import SourceConfig

    return SourceConfig(kind="medmnist", flag="breastmnist")


def test_carving_never_takes_a_class_out_of_train() -> None:
    """20 rows of class 0 and one of each of classes 1-10, 3 rows carved: the largest remainder
    gave the third draw to a single-row class, carving it away whole (a val class that train
    lacks, refused next by the embeddings source). Now every class keeps its row in train."""
    labels = np.r_[np.zeros(20, dtype=np.int64), np.arange(1, 11)]
    for seed in range(5):
        kept, carved = carve(labels, 0.1, seed=seed)
        assert len(carved) == 3 and set(labels[kept]) == set(range(11))
        assert set(labels[carved]) == {0}
    # where carving must take more rows than the classes can spare, it still carves them
    kept, carved = carve(np.arange(4), 0.5, seed=0)
    assert len(carved) == 2 and len(kept) == 2


def test_class_ids_that_leave_most_of_0_to_max_unused_are_refused() -> None:
    """C = max id + 1 is the number of classes; ids are refused when more than half of 0..C-1
    is unused (2 U > C) and C exceeds what the source declares."""
    from pipeline.data import check_class_ids

    def check(ids: list[int], declared: int | None = None) -> None:
        check_class_ids([np.array(ids)], declared=declared, where="f.npz", fix="remap them")

    check([0, 2])  # C = 3, U = 1: a subset lacking one class in the middle
    check([1, 2, 3])  # 1-based ids: C = 4, U = 1
    check([0, 3])  # C = 4, U = 2: exactly half unused, not more
    with pytest.raises(
        DataError,
        match=r"^f\.npz: class ids \{0, 4\} leave 3 of the 5 ids 0\.\.4 unused; .*would make 5 "
        r"classes for 2 that occur\. Class ids must be 0\.\.C-1: remap them$",
    ):
        check([0, 4])  # C = 5, U = 3
    check([0, 4], declared=5)  # the source declares 5 classes: kept
    with pytest.raises(DataError, match=r"class ids \{1000, 2000, 3000\} leave 2998 of the 3001"):
        check([1000, 2000, 3000, 1000], declared=3)
    with pytest.raises(DataError, match=r"\{0, 1, 2, 3, 4, 5, 6, 7, \.\.\. \(10 distinct ids\)\}"):
        check([*range(9), 10**10])
    # split by split: ids are judged over all splits together
    check_class_ids([np.array([0, 1]), np.array([2, 3])], declared=None, where="f", fix="remap")


def test_check_classes_in_train_names_classes_and_multilabel_columns() -> None:
    """A val/test class that train lacks is named by its class name (NFC and NFD spellings told
    apart by escapes); a multi-label column with positives in test but none in train is refused
    too (it was returned early: every multi-label file passed)."""
    from pipeline.data import check_classes_in_train

    y = {"train": np.array([0, 0, 1]), "val": np.array([0, 1]), "test": np.array([2, 2, 0])}
    with pytest.raises(
        DataError,
        match=r"^ds: test_y holds class 'do\u0308g' = 'do\\u0308g' \(id 2, 2 rows\) that no "
        r"train row holds \(train holds 'cat', 'd\xf6g'\);",
    ):
        check_classes_in_train(y, where="ds", class_names=["cat", "d\u00f6g", "do\u0308g"])
    with pytest.raises(DataError, match=r"^ds: test_y holds class 2 \(2 rows\) that no train"):
        check_classes_in_train(y, where="ds")
    multi = {
        "train": np.array([[1, 0, 0], [0, 1, 0]], np.uint8),
        "val": np.array([[1, 1, 0]], np.uint8),
        "test": np.array([[0, 0, 1], [1, 0, 1], [0, 1, 1]], np.uint8),
    }
    with pytest.raises(DataError) as err:
        check_classes_in_train(multi, where="m.npz", class_names=["a", "b", "Hernia"])
    msg = str(err.value)
    assert msg.startswith("m.npz: test_y has positives in label column 'Hernia' (id 2, 3 rows)")
    assert "that no train row has" in msg
    assert "Re-split so that train holds a positive of every label" in msg
    with pytest.raises(
        DataError, match=r"val_y has positives in label column 2 \(1 row\) .* was carved"
    ):
        check_classes_in_train(
            {**multi, "val": multi["test"][:1], "test": multi["val"]}, where="m", carved={"val"}
        )
    multi["train"][1, 2] = 1  # one train positive is enough
    check_classes_in_train(multi, where="m.npz")


@pytest.mark.parametrize(
    ("split", "fix"),
    [
        ("train", "add rows to it: train is the KNN database"),
        (
            "val",
            r"add rows to it, or remove it to have val carved from train \(data.val_fraction\)",
        ),
        ("test", r"add rows to it, or remove it to have test carved from train"),
    ],
    ids=["train", "val", "test"],
)
def test_an_empty_split_is_refused_with_the_fix(split: str, fix: str) -> None:
    labels = np.arange(20) % 2
    rows = ImageSplit(labels=labels, images=np.zeros((20, 1, 1), np.uint8))
    splits = {"train": rows, "val": rows.subset([0, 1]), "test": rows.subset([2, 3])}
    splits[split] = rows.subset([])
    data = DataConfig(datasets=("d",), sources={"d": _medmnist_entry()})
    with pytest.raises(DataError, match=rf"^dataset 'd': split '{split}' is empty; {fix}"):
        complete_splits("d", splits, data=data, seed=0)


def test_walk_files_follows_linked_folders_once_and_lists_broken_links(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """rglob (Python 3.11) did not enter a symlinked folder, so its files were silently left
    out; the walk follows links, reads each real folder once (a loop ends) and keeps broken
    links in the list for the caller to judge."""
    from pipeline.data import walk_files

    elsewhere = tmp_path / "elsewhere"
    (elsewhere / "p1").mkdir(parents=True)
    (elsewhere / "p1" / "a.png").write_bytes(b"a")
    root = tmp_path / "root"
    (root / "cls").mkdir(parents=True)
    (root / "cls" / "b.png").write_bytes(b"b")
    (root / "cls" / "linked").symlink_to(elsewhere)  # a linked folder
    (root / "cls" / "loop").symlink_to(root)  # a link loop back to the top
    (root / "cls" / ".hidden").mkdir()
    (root / "cls" / ".hidden" / "c.png").write_bytes(b"c")
    (root / "cls" / "gone.png").symlink_to(tmp_path / "missing.png")  # a broken link
    (root / "cls" / "z.png").symlink_to(root / "cls" / "b.png")  # one file, two rows (DVC's cache)
    (root / "cls" / "zz").symlink_to(elsewhere / "p1")  # one folder twice: read once
    found = walk_files(root)
    assert found == [
        root / "cls" / ".hidden" / "c.png",
        root / "cls" / "b.png",
        root / "cls" / "gone.png",
        root / "cls" / "z.png",
        root / "cls" / "zz" / "a.png",  # reached at depth 2, before linked/p1 at depth 3
    ]
    assert [p.exists() for p in found] == [True, True, False, True, True]
    assert "cls/loop leads to" in caplog.text and "a folder already read" in caplog.text
    assert "cls/linked/p1 leads to" in caplog.text
    assert walk_files(root, skip_hidden=True) == found[1:]


def test_cross_split_duplicates_lists_rows_with_a_byte_identical_image_elsewhere() -> None:
    from pipeline.data import ImagesDigest, cross_split_duplicates

    a, b, c = (np.full((2, 2), v, dtype=np.uint8) for v in (1, 2, 3))
    digests = {s: ImagesDigest() for s in ("train", "val", "test")}
    digests["train"].update([a, b, b, c])  # b twice inside train: not a cross-split pair
    digests["val"].update([np.full((2, 2), 9, dtype=np.uint8), c])
    # same bytes as `a` but another shape or dtype: another image
    digests["test"].update([a.reshape(1, 4), b, a, a.astype(np.int8), c])
    assert cross_split_duplicates(digests) == {
        "train": {"val": [3], "test": [0, 1, 2, 3]},
        "val": {"train": [1], "test": [1]},
        "test": {"train": [1, 2, 4], "val": [4]},
    }
    fresh = {s: ImagesDigest() for s in ("train", "test")}
    fresh["train"].update([a])
    fresh["test"].update([b])
    assert cross_split_duplicates(fresh) == {}
