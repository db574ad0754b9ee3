"""Source ``embeddings`` (bring your own): carving, limit, labels, metadata, refusals.

The extract stage on such files (exit codes, atomic output) is covered in tests/pipeline/test_extract.py.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from safetensors import safe_open
from safetensors.numpy import load_file, save_file

from pipeline import sources
from pipeline.artifacts import ArtifactError, EmbeddingsFile, load_embeddings, save_embeddings
from pipeline.config import DataConfig, ParamsError, SourceConfig
from pipeline.data import DataError


def config(path: Path, **data: object) -> DataConfig:
    return DataConfig(
        datasets=("mine",),
        sources={"mine": SourceConfig(kind="embeddings", path=str(path))},
        **data,
    )


def write_npz(path: Path, *, val: bool, n: int = 30, multi: bool = False) -> dict[str, np.ndarray]:
    g = np.random.default_rng(0)
    arrays = {}
    for s in ("train", "val", "test") if val else ("train", "test"):
        arrays[f"{s}_x"] = g.normal(size=(n, 4)).astype(np.float64)
        arrays[f"{s}_y"] = g.integers(0, 2, (n, 3)).astype(np.uint8) if multi else np.arange(n) % 3
    np.savez(path, **arrays)
    return arrays


def load(data: DataConfig, seed: int = 0) -> EmbeddingsFile:
    return sources.load("mine", data.source("mine"), data, seed=seed)


def test_embeddings_source_is_registered_and_yields_embeddings(tmp_path: Path) -> None:
    assert not sources.yields_images("embeddings")
    write_npz(tmp_path / "e.npz", val=True)
    emb = load(config(tmp_path / "e.npz"))
    assert isinstance(emb, EmbeddingsFile)
    assert emb.x["train"].dtype == np.float32 and emb.meta["backbone"] == "user-supplied"
    assert emb.meta["task"] == "multi-class" and json.loads(emb.meta["class_names"]) == [
        "0",
        "1",
        "2",
    ]


def test_missing_val_is_carved_from_train_seeded_and_stratified(tmp_path: Path) -> None:
    arrays = write_npz(tmp_path / "e.npz", val=False)
    a, b = load(config(tmp_path / "e.npz")), load(config(tmp_path / "e.npz"))
    assert [len(a.y[s]) for s in ("train", "val", "test")] == [27, 3, 30]  # round(0.1 * 30) = 3
    assert np.bincount(a.y["val"]).tolist() == [1, 1, 1]
    assert np.array_equal(a.x["val"], b.x["val"])
    both = np.concatenate([a.x["train"], a.x["val"]]).astype(np.float64)
    assert sorted(map(tuple, both.round(5).tolist())) == sorted(
        map(tuple, arrays["train_x"].astype(np.float32).astype(np.float64).round(5).tolist())
    )


def test_multilabel_with_limit(tmp_path: Path) -> None:
    write_npz(tmp_path / "e.npz", val=True, multi=True)
    emb = load(config(tmp_path / "e.npz", limit=10))
    assert emb.multilabel and emb.meta["task"] == "multi-label" and emb.n_classes == 3
    assert all(emb.y[s].shape == (10, 3) and emb.y[s].dtype == np.uint8 for s in emb.y)


def test_metadata_is_kept_and_completed(tmp_path: Path) -> None:
    g = np.random.default_rng(1)
    arrays = {f"{s}_{k}": None for s in ("train", "test") for k in "xy"}
    for s in ("train", "test"):
        arrays[f"{s}_x"] = g.normal(size=(12, 3)).astype(np.float32)
        arrays[f"{s}_y"] = np.arange(12) % 2
    meta = {"backbone": "my-vit", "n_classes": "4", "class_names": '["a", "b", "c", "d"]'}
    save_file(arrays, str(tmp_path / "m.safetensors"), metadata=meta)
    emb = load(config(tmp_path / "m.safetensors"))
    # the file declares 4 classes although its splits hold only 2: the declaration wins
    assert emb.n_classes == 4 and json.loads(emb.meta["class_names"]) == ["a", "b", "c", "d"]
    assert emb.meta["backbone"] == "my-vit" and emb.meta["task"] == "multi-class"


def test_refusals_name_the_file_and_the_fix(tmp_path: Path) -> None:
    arrays = write_npz(tmp_path / "e.npz", val=False)
    np.savez(tmp_path / "noval_y.npz", **arrays, val_x=arrays["train_x"])
    with pytest.raises(ArtifactError, match=r"missing val_y.*together, or neither"):
        load(config(tmp_path / "noval_y.npz"))
    bad = write_npz(tmp_path / "m.npz", val=False, multi=True)
    bad["train_y"][0, 0] = 2
    np.savez(tmp_path / "m.npz", **bad)
    with pytest.raises(ArtifactError, match=r"m\.npz: train_y .*other than 0/1"):
        load(config(tmp_path / "m.npz"))
    with pytest.raises(
        ParamsError, match=r"^path: an embeddings source needs path: <\.safetensors"
    ):
        SourceConfig(kind="embeddings")


def test_a_missing_file_names_the_params_key_not_the_extract_stage(tmp_path: Path) -> None:
    with pytest.raises(ArtifactError) as err:
        load(config(tmp_path / "nope.npz"))
    msg = str(err.value)
    assert msg.startswith(f"data.sources.mine.path: {tmp_path / 'nope.npz'} not found (from ")
    assert "point it at your .safetensors or .npz embeddings file" in msg
    with pytest.raises(ArtifactError, match=r"mine.path: .* is a folder, not a file"):
        load(config(tmp_path))


def test_a_val_or_test_class_that_train_lacks_is_refused(tmp_path: Path) -> None:
    """Class 3 only in test (2 rows): every such query is a certain miss, so it is refused,
    naming the split, the class and its row count."""
    arrays = write_npz(tmp_path / "e.npz", val=True)
    arrays["test_y"] = arrays["test_y"].copy()
    arrays["test_y"][[4, 7]] = 3
    np.savez(tmp_path / "e.npz", **arrays)
    with pytest.raises(DataError) as err:
        load(config(tmp_path / "e.npz"))
    msg = str(err.value)
    assert "e.npz: test_y holds class 3 (2 rows) that no train row holds" in msg
    assert "Re-split so that train holds every class, or drop those test rows" in msg
    arrays["val_y"] = arrays["val_y"].copy()
    arrays["val_y"][0] = 5
    np.savez(tmp_path / "e.npz", **arrays)
    with pytest.raises(DataError, match=r"val_y holds class 5 \(1 row\)"):
        load(config(tmp_path / "e.npz"))  # val is checked first


@pytest.mark.parametrize(
    ("meta", "message"),
    [
        ("task=multi-class", r"'meta' entry is not JSON .*'task=multi-class'"),
        ('["a"]', r"'meta' entry is JSON list .*not an object"),
        ("3", r"'meta' entry is JSON int .*not an object"),
    ],
)
def test_npz_meta_that_is_not_a_json_object_is_refused(
    tmp_path: Path, meta: str, message: str
) -> None:
    arrays = write_npz(tmp_path / "e.npz", val=False)
    np.savez(tmp_path / "e.npz", **arrays, meta=np.array(meta))
    with pytest.raises(ArtifactError, match=rf"e\.npz: its {message}.*store a JSON object"):
        load(config(tmp_path / "e.npz"))


def test_npz_meta_values_that_are_not_strings_are_kept_as_json(tmp_path: Path) -> None:
    arrays = write_npz(tmp_path / "e.npz", val=False)
    meta = json.dumps({"class_names": ["a", "b", "c"], "n_classes": 3, "backbone": "mine"})
    np.savez(tmp_path / "e.npz", **arrays, meta=np.array(meta))
    emb = load(config(tmp_path / "e.npz"))
    assert json.loads(emb.meta["class_names"]) == ["a", "b", "c"]
    assert emb.meta["n_classes"] == "3" and emb.meta["backbone"] == "mine"


def test_zero_dimension_embeddings_are_refused(tmp_path: Path) -> None:
    labels = np.arange(30) % 3
    np.savez(
        tmp_path / "e.npz",
        train_x=np.zeros((30, 0), np.float32),
        train_y=labels,
        test_x=np.zeros((30, 0), np.float32),
        test_y=labels,
    )
    with pytest.raises(
        ArtifactError, match=r"e\.npz: train_x has shape \(30, 0\): embeddings of dimension 0"
    ):
        load(config(tmp_path / "e.npz"))


def test_a_declared_task_the_labels_contradict_is_refused(tmp_path: Path) -> None:
    arrays = write_npz(tmp_path / "e.npz", val=False)  # class ids 0, 1, 2
    np.savez(tmp_path / "bin.npz", **arrays, meta=np.array(json.dumps({"task": "binary-class"})))
    with pytest.raises(
        DataError,
        match=r"bin\.npz: declares task 'binary-class' but has 3 classes.*declare task "
        r"'multi-class'",
    ):
        load(config(tmp_path / "bin.npz"))
    multi = write_npz(tmp_path / "m.npz", val=False, multi=True)
    np.savez(tmp_path / "m.npz", **multi, meta=np.array(json.dumps({"task": "multi-class"})))
    with pytest.raises(
        DataError, match=r"m\.npz: declares task 'multi-class' .*multi-hot matrix \[27, 3\]"
    ):
        load(config(tmp_path / "m.npz"))
    np.savez(
        tmp_path / "ord.npz", **arrays, meta=np.array(json.dumps({"task": "ordinal-regression"}))
    )
    assert load(config(tmp_path / "ord.npz")).meta["task"] == "ordinal-regression"


@pytest.mark.parametrize("split", ["train", "val", "test"])
def test_float64_values_beyond_float32_range_are_named_not_called_nan(
    tmp_path: Path, split: str
) -> None:
    """A finite 1e39 in a float64 file became inf in the cast to float32 and was reported as
    'NaN/inf values', which the file does not hold."""
    arrays = write_npz(tmp_path / "e.npz", val=True)
    arrays[f"{split}_x"][3, 1] = -1e39
    arrays[f"{split}_x"][5, 0] = 2e39
    np.savez(tmp_path / "e.npz", **arrays)
    with pytest.raises(
        ArtifactError,
        match=rf"e\.npz: {split}_x holds 2 finite float64 value\(s\) up to 2e\+39 in magnitude "
        r"\(first in row 3\), beyond float32's range .*rescale the embeddings",
    ) as err:
        load(config(tmp_path / "e.npz"))
    assert "NaN" not in str(err.value)
    # values within float32's range, and real NaN, are judged as before (after the cast)
    arrays[f"{split}_x"][3, 1] = arrays[f"{split}_x"][5, 0] = 3e38
    np.savez(tmp_path / "big.npz", **arrays)
    with pytest.raises(ArtifactError, match=rf"{split}_x holds values up to 3e\+38 .*rescale"):
        load(config(tmp_path / "big.npz"))
    arrays[f"{split}_x"][3, 1] = np.nan
    np.savez(tmp_path / "nan.npz", **arrays)
    with pytest.raises(
        ArtifactError, match=rf"{split}_x holds 1 NaN/inf values \(first in row 3\)"
    ):
        load(config(tmp_path / "nan.npz"))


def test_a_hashaudit_file_edited_after_it_was_written_is_refused(tmp_path: Path) -> None:
    """A file whose content no longer matches the ``fingerprint`` in its metadata is refused, as
    ``load_embeddings`` refuses it: its backbone and revision would be carried over to content
    they do not describe. Without the entry (a deliberate edit) it is read as new embeddings."""
    g = np.random.default_rng(0)
    x = {s: g.normal(size=(30, 4)).astype(np.float32) for s in ("train", "val", "test")}
    y = {s: np.arange(30) % 3 for s in x}
    meta = {"dataset": "d", "backbone": "facebook/dinov2-base", "revision": "abc123"}
    save_embeddings(tmp_path / "orig.safetensors", EmbeddingsFile(x=x, y=y, meta=meta))
    same = load(config(tmp_path / "orig.safetensors"))  # untouched: accepted, provenance kept
    assert same.meta["backbone"] == "facebook/dinov2-base" and same.meta["revision"] == "abc123"
    assert np.array_equal(same.y["train"], y["train"])

    tensors = load_file(str(tmp_path / "orig.safetensors"))
    with safe_open(str(tmp_path / "orig.safetensors"), framework="numpy") as f:
        written = dict(f.metadata())
    tensors["train_y"] = (tensors["train_y"] + 1) % 3  # labels changed, fingerprint kept
    save_file(tensors, str(tmp_path / "edited.safetensors"), metadata=written)
    with pytest.raises(ArtifactError) as err:
        load(config(tmp_path / "edited.safetensors"))
    msg = str(err.value)
    assert str(tmp_path / "edited.safetensors") in msg and written["fingerprint"][:26] in msg
    assert "changed after the file was written" in msg and "remove the 'fingerprint'" in msg
    with pytest.raises(ArtifactError, match="does not match the fingerprint"):
        load_embeddings(tmp_path / "edited.safetensors")  # the same verdict as the loader

    unpinned = {k: v for k, v in written.items() if k != "fingerprint"}
    save_file(tensors, str(tmp_path / "deliberate.safetensors"), metadata=unpinned)
    edited = load(config(tmp_path / "deliberate.safetensors"))
    assert np.array_equal(edited.y["train"], (np.arange(30) + 1) % 3)

    del tensors["val_x"], tensors["val_y"]  # without val, the recorded digest covers no content
    save_file(tensors, str(tmp_path / "noval.safetensors"), metadata=written)
    assert len(load(config(tmp_path / "noval.safetensors")).y["test"]) == 30


@pytest.mark.parametrize(
    ("ids", "shown"),
    [
        ([1000, 2000, 3000], r"\{1000, 2000, 3000\} leave 2998 of the 3001 ids 0\.\.3000"),
        ([0, 1, 20_000_000], r"\{0, 1, 20000000\} leave 19999998 of the 20000001 ids"),
        ([10**10, 10**10 + 1, 10**10 + 2], r"\{10000000000, 10000000001, 10000000002\} leave"),
    ],
    ids=["thousands", "2e7", "1e10"],
)
def test_sparse_class_ids_are_refused_with_the_remap(
    tmp_path: Path, ids: list[int], shown: str
) -> None:
    """Ids {1000, 2000, 3000} made 3001 classes (a 3001-row confusion plot, 3001 CSQ centers);
    {0, 1, 2e7} and ~1e10 ended in a SafetensorError or MemoryError traceback."""
    arrays = write_npz(tmp_path / "e.npz", val=True)
    for s in ("train", "val", "test"):
        arrays[f"{s}_y"] = np.asarray(ids, dtype=np.int64)[np.arange(30) % 3]
    np.savez(tmp_path / "e.npz", **arrays)
    with pytest.raises(DataError) as err:
        load(config(tmp_path / "e.npz"))
    msg = str(err.value)
    assert msg.startswith(f"{tmp_path / 'e.npz'} [train_y, val_y, test_y]: class ids ")
    assert re.search(shown, msg), msg
    assert "np.unique(y_all, return_inverse=True)" in msg and "class_names" in msg


def test_ids_with_a_gap_or_declared_classes_still_load(tmp_path: Path) -> None:
    """A subset lacking one class in the middle ({0, 2}) loads as 3 classes; sparse ids load
    when the metadata declares the classes (n_classes or class_names)."""
    arrays = write_npz(tmp_path / "e.npz", val=True)
    for s in ("train", "val", "test"):
        arrays[f"{s}_y"] = np.array([0, 2])[np.arange(30) % 2]
    np.savez(tmp_path / "gap.npz", **arrays)
    assert load(config(tmp_path / "gap.npz")).n_classes == 3
    for s in ("train", "val", "test"):
        arrays[f"{s}_y"] = np.array([0, 9])[np.arange(30) % 2]
    np.savez(tmp_path / "n.npz", **arrays, meta=np.array(json.dumps({"n_classes": 10})))
    assert load(config(tmp_path / "n.npz")).n_classes == 10
    names = json.dumps([f"c{i}" for i in range(10)])
    np.savez(tmp_path / "names.npz", **arrays, meta=np.array(json.dumps({"class_names": names})))
    emb = load(config(tmp_path / "names.npz"))
    assert emb.n_classes == 10 and json.loads(emb.meta["class_names"])[9] == "c9"


def test_a_multilabel_label_without_train_positives_is_refused(tmp_path: Path) -> None:
    """Column 2 has no positive in train but 3 in test: it was accepted (the check returned
    early for multi-hot labels), although no head or database row ever sees that label."""
    arrays = write_npz(tmp_path / "e.npz", val=True, multi=True)
    arrays["train_y"][:, 2] = 0
    arrays["val_y"][:, 2] = 0
    arrays["test_y"][:, 2] = 0
    arrays["test_y"][[1, 4, 9], 2] = 1
    meta = json.dumps({"class_names": ["effusion", "mass", "hernia"]})
    np.savez(tmp_path / "e.npz", **arrays, meta=np.array(meta))
    with pytest.raises(DataError) as err:
        load(config(tmp_path / "e.npz"))
    msg = str(err.value)
    assert msg.startswith(
        f"{tmp_path / 'e.npz'}: test_y has positives in label column 'hernia' (id 2, 3 rows) "
        "that no train row has"
    )
    assert "Re-split so that train holds a positive of every label" in msg


def test_class_names_longer_than_the_ids_present_declare_the_classes(tmp_path: Path) -> None:
    """Labels {0, 1, 2} with class_names of 4 entries (the 4th class has no rows): the module
    docstring counts the length of class_names as a declaration of 4 classes. The names were
    dropped for ["0", "1", "2"] and n_classes was 3 (only a numeric n_classes counted)."""
    g = np.random.default_rng(3)
    arrays = {}
    for s in ("train", "val", "test"):
        arrays[f"{s}_x"] = g.normal(size=(12, 3)).astype(np.float32)
        arrays[f"{s}_y"] = np.arange(12) % 3
    names = ["cat", "dog", "eel", "fox"]
    save_file(arrays, str(tmp_path / "m.safetensors"), metadata={"class_names": json.dumps(names)})
    emb = load(config(tmp_path / "m.safetensors"))
    assert json.loads(emb.meta["class_names"]) == names
    assert emb.n_classes == 4 and emb.meta["n_classes"] == "4"
    assert emb.meta["task"] == "multi-class"
    # binary ids with three names: three classes declared, so not binary-class
    for s in ("train", "val", "test"):
        arrays[f"{s}_y"] = np.arange(12) % 2
    meta = {"class_names": json.dumps(["neg", "pos", "unsure"])}
    save_file(arrays, str(tmp_path / "b.safetensors"), metadata=meta)
    emb = load(config(tmp_path / "b.safetensors"))
    assert json.loads(emb.meta["class_names"]) == ["neg", "pos", "unsure"]
    assert emb.n_classes == 3 and emb.meta["task"] == "multi-class"


def test_labels_of_one_class_only_are_refused(tmp_path: Path) -> None:
    """Every row class 0: the file loaded (task multi-class, n_classes 1) and the float KNN
    reported accuracy 1.0 at every k, whatever the embeddings."""
    arrays = write_npz(tmp_path / "e.npz", val=False)
    for s in ("train", "test"):
        arrays[f"{s}_y"] = np.zeros(30, dtype=np.int64)
    np.savez(tmp_path / "one.npz", **arrays)
    with pytest.raises(DataError, match=r"every row of train, test is class 0 \(60 rows\)"):
        load(config(tmp_path / "one.npz"))
