"""Dataset sources: the real MedMNIST files, downloads, limits, image folders and HF datasets."""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pipeline.config import DataConfig, SourceConfig
from pipeline.data import (
    DataError,
    ImageSplit,
    apply_limit,
    carve,
    load_dataset_images,
    stratified_sample,
)

BREAST_MD5 = "750601b1f35ba3300ea97c75c52ff8f6"


def data_config(root: Path | str, **sources: SourceConfig) -> DataConfig:
    sources = sources or {
        "breastmnist": SourceConfig(kind="medmnist"),
        "retinamnist": SourceConfig(kind="medmnist"),
    }
    return DataConfig(
        root=str(root), download=False, datasets=(next(iter(sources)),), sources=sources
    )


def load(name: str, data: DataConfig, *, seed: int = 0):
    return load_dataset_images(name, data.source(name), data, seed=seed)


@pytest.fixture
def hf_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Keep the datasets cache (imagefolder builds) out of the user's home."""
    import datasets

    cache = tmp_path / "hf-datasets-cache"
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", cache)
    return cache


# --------------------------------------------------------------------------------------------
# MedMNIST
# --------------------------------------------------------------------------------------------


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
    from pipeline.data import _medmnist_info_table

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
    from pipeline.data import _medmnist_info_table

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
    from pipeline.data import _medmnist_info_table

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


# --------------------------------------------------------------------------------------------
# limit and carving
# --------------------------------------------------------------------------------------------


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


def test_image_split_subset_keeps_order() -> None:
    images = np.arange(5 * 2 * 2, dtype=np.uint8).reshape(5, 2, 2)
    split = ImageSplit(labels=np.arange(5), images=images).subset([3, 1])
    assert split.labels.tolist() == [3, 1] and np.array_equal(split.get_batch([1])[0], images[1])


# --------------------------------------------------------------------------------------------
# image folders and Hugging Face datasets
# --------------------------------------------------------------------------------------------


def write_png(
    path: Path, value: int, *, mode: str = "RGB", size: tuple[int, int] = (12, 10)
) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    channels = 3 if mode == "RGB" else 1
    arr = np.full((size[1], size[0], channels), value, dtype=np.uint8).squeeze()
    Image.fromarray(arr, mode=mode if mode != "RGB" else None).save(path)


def image_folder(root: Path, *, per_class: int = 10) -> Path:
    for c, cls in enumerate(("benign", "malignant")):
        for i in range(per_class):
            write_png(root / cls / f"{i}.png", 10 * c + i)
    return root


def folder_config(path: Path) -> DataConfig:
    return data_config(path, mine=SourceConfig(kind="imagefolder", path=str(path)))


def test_imagefolder_flat_layout_carves_val_and_test(tmp_path: Path, hf_cache: Path) -> None:
    ds = load("mine", folder_config(image_folder(tmp_path / "imgs")))
    assert ds.class_names == ["benign", "malignant"] and ds.task == "binary-class"
    assert [len(ds.splits[s]) for s in ("train", "val", "test")] == [16, 2, 2]
    for s in ("val", "test"):
        assert sorted(ds.splits[s].labels.tolist()) == [0, 1]
    assert ds.splits["train"].as_array() is None
    img = ds.splits["train"].get_batch([0])[0]
    assert img.shape == (10, 12, 3) and img.dtype == np.uint8


def test_imagefolder_split_folders(tmp_path: Path, hf_cache: Path) -> None:
    root = tmp_path / "imgs"
    image_folder(root / "train", per_class=6)
    image_folder(root / "val", per_class=2)
    image_folder(root / "test", per_class=3)
    write_png(root / "test" / "benign" / "gray.png", 7, mode="L")
    ds = load("mine", folder_config(root))
    assert [len(ds.splits[s]) for s in ("train", "val", "test")] == [12, 4, 7]
    shapes = {im.shape for im in ds.splits["test"].get_batch(range(7))}
    assert shapes == {(10, 12, 3), (10, 12)}  # grayscale stays 2-D


def test_imagefolder_without_class_folders(tmp_path: Path, hf_cache: Path) -> None:
    root = tmp_path / "flat"
    for i in range(4):
        write_png(root / f"{i}.png", i)
    with pytest.raises(DataError, match=r"flat.*not in class sub-folders.*<path>/<class>/<image>"):
        load("mine", folder_config(root))
    with pytest.raises(DataError, match="does not exist"):
        load("mine", folder_config(tmp_path / "missing"))


def test_imagefolder_corrupt_image_names_the_file(tmp_path: Path, hf_cache: Path) -> None:
    root = image_folder(tmp_path / "imgs")
    bad = root / "malignant" / "broken.png"
    bad.write_bytes((root / "malignant" / "0.png").read_bytes()[:30])
    ds = load("mine", folder_config(root))
    with pytest.raises(DataError, match=r"cannot read image .*broken\.png.*replace or remove"):
        for s in ("train", "val", "test"):
            ds.splits[s].get_batch(range(len(ds.splits[s])))


def hf_dataset_dir(tmp_path: Path, *, validation: bool) -> Path:
    import datasets

    g = np.random.default_rng(0)

    def split(n: int) -> datasets.Dataset:
        imgs = [Image.fromarray(g.integers(0, 256, (8, 8), dtype=np.uint8)) for _ in range(n)]
        features = datasets.Features(
            {"img": datasets.Image(), "label": datasets.ClassLabel(names=["cat", "dog", "frog"])}
        )
        return datasets.Dataset.from_dict(
            {"img": imgs, "label": [i % 3 for i in range(n)]}, features=features
        )

    parts = {"train": split(30), "test": split(9)}
    if validation:
        parts["validation"] = split(6)
    path = tmp_path / ("hf-val" if validation else "hf")
    datasets.DatasetDict(parts).save_to_disk(str(path))
    return path


@pytest.mark.parametrize("validation", [False, True])
def test_huggingface_local_saved_dataset(tmp_path: Path, validation: bool) -> None:
    path = hf_dataset_dir(tmp_path, validation=validation)
    src = SourceConfig(kind="huggingface", id=str(path), image_column="img", label_column="label")
    ds = load("toy", data_config(tmp_path, toy=src))
    assert ds.class_names == ["cat", "dog", "frog"] and ds.task == "multi-class"
    sizes = [len(ds.splits[s]) for s in ("train", "val", "test")]
    assert sizes == ([30, 6, 9] if validation else [27, 3, 9])
    assert sorted(ds.splits["val"].labels.tolist()) == (
        [0, 0, 1, 1, 2, 2] if validation else [0, 1, 2]
    )
    batch = ds.splits["train"].get_batch([0, 1])
    assert batch[0].shape == (8, 8) and batch[0].dtype == np.uint8
    assert ds.source_info["hf_path"] == str(path.resolve())


def test_huggingface_wrong_column_and_offline_hub(tmp_path: Path) -> None:
    path = hf_dataset_dir(tmp_path, validation=False)
    src = SourceConfig(kind="huggingface", id=str(path), image_column="image")
    with pytest.raises(DataError, match=r"no column 'image'.*set image_column"):
        load("toy", data_config(tmp_path, toy=src))
    src = SourceConfig(kind="huggingface", id="hashaudit-test/not-cached", image_column="img")
    with pytest.raises(
        DataError, match=r"'hashaudit-test/not-cached' is not available.*save_to_disk"
    ):
        load("toy", data_config(tmp_path, toy=src))


def test_embeddings_kind_is_not_an_image_source(tmp_path: Path) -> None:
    src = SourceConfig(kind="embeddings", path=str(tmp_path / "e.npz"))
    with pytest.raises(DataError, match="no images"):
        load("mine", data_config(tmp_path, mine=src))
