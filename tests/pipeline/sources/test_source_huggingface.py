"""Source ``huggingface``: a local ``save_to_disk`` dataset, wrong columns, an uncached hub id."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pipeline.config import SourceConfig
from pipeline.data import DataError
from tests.pipeline.sources.source_helpers import data_config, hf_cache, load  # noqa: F401


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


@pytest.mark.parametrize("integer_column", [True, False])
def test_huggingface_rows_without_a_label_are_refused(tmp_path: Path, integer_column: bool) -> None:
    import datasets

    label = (
        datasets.Value("int64") if integer_column else datasets.ClassLabel(names=["a", "b", "c"])
    )
    features = datasets.Features({"img": datasets.Image(), "label": label})

    def split(labels: list) -> datasets.Dataset:
        imgs = [Image.new("L", (8, 8), i) for i in range(len(labels))]
        return datasets.Dataset.from_dict({"img": imgs, "label": labels}, features=features)

    labels = [i % 3 for i in range(12)]
    labels[4] = labels[9] = None
    parts = {"train": split([i % 3 for i in range(30)]), "validation": split(labels)}
    datasets.DatasetDict(parts).save_to_disk(str(tmp_path / "hf"))
    src = SourceConfig(kind="huggingface", id=str(tmp_path / "hf"), image_column="img")
    with pytest.raises(
        DataError,
        match=r"hf \[val\]: 2 of 12 rows have no label in column 'label' \(first: row 4\); "
        r"unlabelled rows are not supported: drop them",
    ):
        load("toy", data_config(tmp_path, toy=src))


def _with_orientation(arr: np.ndarray, orientation: int, fmt: str) -> bytes:
    import io

    exif = Image.Exif()
    exif[0x0112] = orientation  # EXIF Orientation
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, fmt, exif=exif.tobytes())
    return buf.getvalue()


def test_a_malformed_unrelated_exif_tag_does_not_stop_the_rotation() -> None:
    """Orientation 6 beside an ImageWidth tag stored as text: Pillow decodes such camera files,
    but its exif_transpose fails rewriting the EXIF block (struct.error); only the tag is read."""
    import io
    import struct

    from PIL import Image

    from pipeline.sources.huggingface import decode_image

    entries = [
        struct.pack("<HHII", 256, 2, 4, int.from_bytes(b"Cam\x00", "little")),  # ASCII width
        struct.pack("<HHIHH", 274, 3, 1, 6, 0),  # orientation 6
    ]
    ifd = struct.pack("<H", len(entries)) + b"".join(entries) + struct.pack("<I", 0)
    exif = b"Exif\x00\x00II*\x00" + struct.pack("<I", 8) + ifd
    buf = io.BytesIO()
    Image.fromarray(np.zeros((4, 6, 3), np.uint8)).save(buf, "JPEG", exif=exif)
    assert decode_image(buf.getvalue(), None, where="x").shape == (6, 4, 3)


def test_decode_image_applies_the_exif_orientation() -> None:
    from pipeline.sources.huggingface import decode_image

    arr = np.zeros((2, 3), np.uint8)
    arr[0] = [10, 20, 30]
    arr[1] = [40, 50, 60]
    # 6: rotate 90 degrees clockwise to view; 3: rotate 180 degrees; 1: as stored
    rotated = decode_image(_with_orientation(arr, 6, "PNG"), None, where="x")
    assert rotated.tolist() == [[40, 10], [50, 20], [60, 30]]
    upside_down = decode_image(_with_orientation(arr, 3, "PNG"), None, where="x")
    assert upside_down.tolist() == [[60, 50, 40], [30, 20, 10]]
    assert decode_image(_with_orientation(arr, 1, "PNG"), None, where="x").tolist() == arr.tolist()
    rgb = np.zeros((20, 40, 3), np.uint8)
    rgb[:, :10] = 255  # a white band on the left, stored 20 x 40
    jpeg = decode_image(_with_orientation(rgb, 6, "JPEG"), None, where="x")
    assert jpeg.shape == (40, 20, 3) and jpeg[:10].mean() > 240 and jpeg[12:].mean() < 15


def test_a_hub_dataset_is_loaded_at_its_pinned_revision(tmp_path: Path, monkeypatch) -> None:
    """``revision`` (a commit, tag or branch) reaches ``datasets.load_dataset`` and the metadata;
    a local folder has no revisions, and a kind that does not read it refuses it."""
    import datasets

    from pipeline.config import ParamsError

    seen: list[dict] = []

    def fake_load_dataset(ds_id, **kwargs):
        seen.append({"id": ds_id, **kwargs})
        raise ConnectionError("offline")

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    commit = "0123456789abcdef0123456789abcdef01234567"
    src = SourceConfig(
        kind="huggingface", id="uoft-cs/cifar10", revision=commit, image_column="img"
    )
    with pytest.raises(DataError, match="is not available"):
        load("toy", data_config(tmp_path, toy=src))
    assert seen == [{"id": "uoft-cs/cifar10", "revision": commit}]
    path = hf_dataset_dir(tmp_path, validation=False)
    with pytest.raises(ParamsError, match=r"revision: 'v1': id .* is a local folder"):
        SourceConfig(kind="huggingface", id=str(path), revision="v1", image_column="img")
    with pytest.raises(ParamsError, match="the medmnist source does not read revision"):
        SourceConfig(kind="medmnist", revision="v1")


@pytest.mark.usefixtures("hf_cache")  # keep the datasets cache in tmp_path
def test_a_local_data_dir_given_with_tilde_is_loaded_from_home(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``id: ~/imgs`` (a folder of class sub-folders, not a ``save_to_disk`` dir) is the folder in
    the user's home: it is loaded from there, not looked up as ``~/imgs`` relative to the cwd."""
    home, cwd = tmp_path / "home", tmp_path / "cwd"
    cwd.mkdir()
    for c, cls in enumerate(("cat", "dog")):
        (home / "imgs" / cls).mkdir(parents=True)
        for i in range(10):
            Image.fromarray(np.full((8, 8), 10 * c + i, np.uint8)).save(
                home / "imgs" / cls / f"{i}.png"
            )
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(cwd)
    src = SourceConfig(kind="huggingface", id="~/imgs")
    ds = load("toy", data_config(tmp_path, toy=src))
    assert ds.class_names == ["cat", "dog"] and ds.task == "binary-class"
    assert sum(len(ds.splits[s]) for s in ("train", "val", "test")) == 20
    labels = np.concatenate([ds.splits[s].labels for s in ("train", "val", "test")])
    assert np.bincount(labels).tolist() == [10, 10]
    assert list(cwd.iterdir()) == []


@pytest.mark.parametrize("mode", ["RGBA", "LA", "P"])
def test_transparent_pixels_are_composited_onto_white(tmp_path: Path, mode: str) -> None:
    """A disc on a transparent background whose hidden colour is green: the checkpoints' image
    processors composite onto white (convert_to_rgb); the alpha was dropped, so the hidden green
    reached the model."""
    from pipeline.sources.huggingface import decode_image

    rgba = Image.new("RGBA", (8, 8), (0, 160, 0, 0))  # fully transparent green
    rgba.putpixel((4, 4), (200, 10, 10, 255))  # one opaque red pixel
    img = rgba if mode == "RGBA" else rgba.convert("LA") if mode == "LA" else rgba
    if mode == "P":
        img = Image.new("P", (8, 8), 0)
        img.putpalette([0, 160, 0, 200, 10, 10] + [0, 0, 0] * 254)
        img.putpixel((4, 4), 1)
        img.info["transparency"] = 0
    path = tmp_path / "x.png"
    img.save(path)
    arr = decode_image(None, str(path), where="test")
    background = arr[0, 0]
    assert np.all(background == 255), background
    assert np.any(arr[4, 4] != 255)  # the opaque pixel is kept


def _int_label_dataset(path: Path, train: list[int], test: list[int]) -> Path:
    import datasets

    features = datasets.Features({"img": datasets.Image(), "label": datasets.Value("int64")})

    def split(labels: list[int]) -> datasets.Dataset:
        imgs = [Image.new("L", (8, 8), i % 256) for i in range(len(labels))]
        return datasets.Dataset.from_dict({"img": imgs, "label": labels}, features=features)

    datasets.DatasetDict({"train": split(train), "test": split(test)}).save_to_disk(str(path))
    return path


def test_sparse_integer_label_ids_are_refused_with_the_remap(tmp_path: Path) -> None:
    """An integer label column of ids {1000, 2000, 3000} was read as 3001 classes (names
    '0'..'3000'); ids with one gap ({0, 2}) still load as before."""
    ids = [1000, 2000, 3000]
    path = _int_label_dataset(tmp_path / "sparse", [ids[i % 3] for i in range(30)], ids * 2)
    src = SourceConfig(kind="huggingface", id=str(path), image_column="img")
    with pytest.raises(DataError) as err:
        load("toy", data_config(tmp_path, toy=src))
    msg = str(err.value)
    assert msg.startswith(f"dataset {path}: label column 'label': class ids {{1000, 2000, 3000}} ")
    assert "leave 2998 of the 3001 ids 0..3000 unused" in msg
    assert "dsd.class_encode_column('label')" in msg
    gap = _int_label_dataset(tmp_path / "gap", [(i % 2) * 2 for i in range(30)], [0, 2, 0, 2])
    src = SourceConfig(kind="huggingface", id=str(gap), image_column="img")
    assert load("toy", data_config(tmp_path, toy=src)).class_names == ["0", "1", "2"]


def test_an_image_beyond_the_decompression_bomb_limit_is_a_data_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Pillow's DecompressionBombError (not an OSError) escaped as a traceback (exit 1)."""
    import io

    from pipeline.sources.huggingface import decode_image

    buf = io.BytesIO()
    Image.new("RGB", (30, 20)).save(buf, "PNG")  # 600 pixels
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # refused above 200
    with pytest.raises(DataError) as err:
        decode_image(buf.getvalue(), "scans/big.png", where="dataset d [train] row 3")
    msg = str(err.value)
    assert msg.startswith(
        "cannot read image scans/big.png: 600 pixels, above Pillow's decompression-bomb limit "
        "of 200 pixels, twice PIL.Image.MAX_IMAGE_PIXELS"
    )
    assert "downscale it" in msg
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 400)  # above the limit, below twice it: read
    with pytest.warns(Image.DecompressionBombWarning):
        assert decode_image(buf.getvalue(), None, where="x").shape == (20, 30, 3)


def test_a_float_image_with_nan_or_inf_pixels_is_a_data_error(tmp_path: Path) -> None:
    """A float TIFF with one NaN (or inf) pixel: min and max became NaN, and the min-max stretch
    returned an all-0 image (a RuntimeWarning only). The same image with finite values keeps
    its stretch: 0, 0.5, 1, 2 -> 0, 64, 128, 255 (round(v / 2 * 255))."""
    from pipeline.sources.huggingface import decode_image

    arr = np.array([[0.0, 0.5], [1.0, 2.0]], dtype=np.float32)
    Image.fromarray(arr).save(tmp_path / "ok.tif")
    assert decode_image(None, str(tmp_path / "ok.tif"), where="x").tolist() == [[0, 64], [128, 255]]
    for bad in (np.nan, np.inf):
        arr[0, 0] = bad
        path = tmp_path / f"scan_{bad}.tif"
        Image.fromarray(arr).save(path)
        with pytest.raises(DataError) as err:
            decode_image(None, str(path), where="dataset d [train] row 0")
        msg = str(err.value)
        assert msg.startswith(f"cannot read image {path}: 1 of its 4 pixels are NaN or infinite")
        assert "replace them with finite values" in msg


def test_splits_with_different_classlabel_names_are_refused(tmp_path: Path) -> None:
    """Test encoded on its own (it lacks 'dog'): its ClassLabel is [cat, frog], so its frogs
    are id 1, which train's names [cat, dog, frog] read as 'dog'. The 5 frogs of test were
    silently loaded as 5 dogs (test labels [5, 5] = 5 cats, 5 'dogs')."""
    import datasets

    g = np.random.default_rng(0)

    def split(names: list[str], labels: list[int]) -> datasets.Dataset:
        imgs = [Image.fromarray(g.integers(0, 256, (8, 8), dtype=np.uint8)) for _ in labels]
        features = datasets.Features(
            {"img": datasets.Image(), "label": datasets.ClassLabel(names=names)}
        )
        return datasets.Dataset.from_dict({"img": imgs, "label": labels}, features=features)

    parts = {
        "train": split(["cat", "dog", "frog"], [i % 3 for i in range(30)]),
        "test": split(["cat", "frog"], [i % 2 for i in range(10)]),
    }
    datasets.DatasetDict(parts).save_to_disk(str(tmp_path / "hf"))
    cfg = data_config(
        tmp_path, mine=SourceConfig(kind="huggingface", id=str(tmp_path / "hf"), image_column="img")
    )
    with pytest.raises(DataError) as err:
        load("mine", cfg)
    msg = str(err.value)
    assert "['cat', 'dog', 'frog'] in split 'train' but ['cat', 'frog'] in split 'test'" in msg
    assert "encode every split with one ClassLabel" in msg
    # one ClassLabel for both splits (test's frogs as id 2) loads, frogs as frogs
    parts["test"] = split(["cat", "dog", "frog"], [2 * (i % 2) for i in range(10)])
    datasets.DatasetDict(parts).save_to_disk(str(tmp_path / "hf2"))
    cfg = data_config(
        tmp_path,
        mine=SourceConfig(kind="huggingface", id=str(tmp_path / "hf2"), image_column="img"),
    )
    ds = load("mine", cfg)
    assert np.bincount(ds.splits["test"].labels, minlength=3).tolist() == [5, 0, 5]


@pytest.mark.usefixtures("hf_cache")  # keep the datasets cache in tmp_path
def test_a_local_image_folder_that_datasets_reads_otherwise_is_refused(tmp_path: Path) -> None:
    """id: a local folder <class>/<patient>/<image> (2 classes, 3 patients each): datasets'
    imagefolder builder took the folder above each image as its class, so it loaded 6 classes
    ('patient0_cat', ...) instead of cat and dog, silently. A flat <class>/<image> folder, which
    the builder reads like the imagefolder source, still loads."""
    root = tmp_path / "imgs"
    for c, cls in enumerate(("cat", "dog")):
        for p in range(3):
            for i in range(4):
                path = root / cls / f"patient{p}_{cls}" / f"{i}.png"
                path.parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(np.full((8, 8), 10 * c + i, np.uint8)).save(path)
    src = SourceConfig(kind="huggingface", id=str(root))
    with pytest.raises(DataError) as err:
        load("toy", data_config(tmp_path, toy=src))
    msg = str(err.value)
    assert "datasets' imagefolder builder reads 24 image(s) otherwise than the folder" in msg
    assert f"{root / 'cat' / 'patient0_cat' / '0.png'}: split 'train', class 'patient0_cat'" in msg
    assert "by the layout split 'train', class 'cat'" in msg
    assert f"Use kind: imagefolder with path: {root}" in msg
    flat = tmp_path / "flat"
    for c, cls in enumerate(("cat", "dog")):
        (flat / cls).mkdir(parents=True)
        for i in range(10):
            Image.fromarray(np.full((8, 8), 10 * c + i, np.uint8)).save(flat / cls / f"{i}.png")
    ds = load("toy", data_config(tmp_path, toy=SourceConfig(kind="huggingface", id=str(flat))))
    assert ds.class_names == ["cat", "dog"]


def test_a_split_hashaudit_does_not_read_is_named_in_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    import datasets

    path = hf_dataset_dir(tmp_path, validation=False)
    dsd = datasets.load_from_disk(str(path))
    parts = {"train": dsd["train"], "dev": dsd["test"], "test": dsd["test"]}
    datasets.DatasetDict(parts).save_to_disk(str(tmp_path / "with-dev"))
    src = SourceConfig(kind="huggingface", id=str(tmp_path / "with-dev"), image_column="img")
    with caplog.at_level("WARNING", logger="pipeline.sources.huggingface"):
        ds = load("toy", data_config(tmp_path, toy=src))
    # 'dev' is not read: val is carved from train (27 + 3), as the warning says
    assert [len(ds.splits[s]) for s in ("train", "val", "test")] == [27, 3, 9]
    assert "split(s) ['dev'] are not read" in caplog.text


def test_a_second_val_split_is_named_not_dropped_silently(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # 'validation' and 'val' both present: 'validation' is read, 'val' was dropped without a word
    import datasets

    path = hf_dataset_dir(tmp_path, validation=False)
    dsd = datasets.load_from_disk(str(path))
    parts = {
        "train": dsd["train"],
        "validation": dsd["test"],
        "val": dsd["test"],
        "test": dsd["test"],
    }
    datasets.DatasetDict(parts).save_to_disk(str(tmp_path / "two-vals"))
    src = SourceConfig(kind="huggingface", id=str(tmp_path / "two-vals"), image_column="img")
    with caplog.at_level("WARNING", logger="pipeline.sources.huggingface"):
        ds = load("toy", data_config(tmp_path, toy=src))
    assert [len(ds.splits[s]) for s in ("train", "val", "test")] == [30, 9, 9]
    assert "split(s) ['val'] are not read" in caplog.text
