"""Source ``imagefolder``: flat and split-folder layouts, missing class folders, corrupt images."""

from __future__ import annotations

import logging
import unicodedata
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pipeline.config import DataConfig, SourceConfig
from pipeline.data import DataError
from tests.pipeline.sources.source_helpers import data_config, hf_cache, load  # noqa: F401

pytestmark = pytest.mark.usefixtures("hf_cache")  # keep the datasets cache in tmp_path


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


def test_imagefolder_flat_layout_carves_val_and_test(tmp_path: Path) -> None:
    ds = load("mine", folder_config(image_folder(tmp_path / "imgs")))
    assert ds.class_names == ["benign", "malignant"] and ds.task == "binary-class"
    assert [len(ds.splits[s]) for s in ("train", "val", "test")] == [16, 2, 2]
    for s in ("val", "test"):
        assert sorted(ds.splits[s].labels.tolist()) == [0, 1]
    assert ds.splits["train"].as_array() is None
    img = ds.splits["train"].get_batch([0])[0]
    assert img.shape == (10, 12, 3) and img.dtype == np.uint8


def test_imagefolder_split_folders(tmp_path: Path) -> None:
    root = tmp_path / "imgs"
    image_folder(root / "train", per_class=6)
    image_folder(root / "val", per_class=2)
    image_folder(root / "test", per_class=3)
    write_png(root / "test" / "benign" / "gray.png", 7, mode="L")
    ds = load("mine", folder_config(root))
    assert [len(ds.splits[s]) for s in ("train", "val", "test")] == [12, 4, 7]
    shapes = {im.shape for im in ds.splits["test"].get_batch(range(7))}
    assert shapes == {(10, 12, 3), (10, 12)}  # grayscale stays 2-D


def test_images_beside_split_folders_are_refused_not_skipped(tmp_path: Path) -> None:
    root = tmp_path / "imgs"
    image_folder(root / "train", per_class=6)
    image_folder(root / "test", per_class=3)
    write_png(root / "stray.png", 5)  # belongs to no split: it was left out without a word
    with pytest.raises(DataError, match=r"images beside the split folders \(e.g. stray.png\)"):
        load("mine", folder_config(root))


@pytest.mark.parametrize("link", ["class_folder", "file_in_other_split"])
def test_a_file_reached_twice_through_a_link_is_refused(tmp_path: Path, link: str) -> None:
    root = tmp_path / "imgs"
    if link == "class_folder":  # class 'copy' is class 'benign' again: 10 images in two classes
        image_folder(root)
        (root / "copy").symlink_to(root / "benign", target_is_directory=True)
        match = r"'benign'\) and .*'copy'\) are one file"
    else:  # one train image linked into test: the same record on both sides of the split
        image_folder(root / "train", per_class=6)
        image_folder(root / "test", per_class=3)
        (root / "test" / "benign" / "leak.png").symlink_to(root / "train" / "benign" / "5.png")
        match = r"leak.png \(split 'test', class 'benign'\) and .*5.png \(split 'train'.* one file"
    with pytest.raises(DataError, match=match):
        load("mine", folder_config(root))


def test_imagefolder_without_class_folders(tmp_path: Path) -> None:
    root = tmp_path / "flat"
    for i in range(4):
        write_png(root / f"{i}.png", i)
    with pytest.raises(DataError, match=r"flat.*not in class sub-folders.*<path>/<class>/<image>"):
        load("mine", folder_config(root))
    with pytest.raises(DataError, match="does not exist"):
        load("mine", folder_config(tmp_path / "missing"))


def test_imagefolder_corrupt_image_names_the_file(tmp_path: Path) -> None:
    root = image_folder(tmp_path / "imgs")
    bad = root / "malignant" / "broken.png"
    bad.write_bytes((root / "malignant" / "0.png").read_bytes()[:30])
    ds = load("mine", folder_config(root))
    with pytest.raises(DataError, match=r"cannot read image .*broken\.png.*replace or remove"):
        for s in ("train", "val", "test"):
            ds.splits[s].get_batch(range(len(ds.splits[s])))


def test_imagefolder_applies_the_exif_orientation(tmp_path: Path) -> None:
    root = image_folder(tmp_path / "imgs", per_class=4)
    exif = Image.Exif()
    exif[0x0112] = 8  # rotate 90 degrees counter-clockwise to view
    arr = np.zeros((10, 12), np.uint8)
    arr[:, 0] = 200  # a bright first column: the bottom row once viewed
    for cls in ("benign", "malignant"):
        for i in range(4):
            Image.fromarray(arr).save(root / cls / f"{i}.png", exif=exif.tobytes())
    ds = load("mine", folder_config(root))
    for s in ("train", "val", "test"):
        for img in ds.splits[s].get_batch(range(len(ds.splits[s]))):
            assert img.shape == (12, 10)
            assert img[-1].tolist() == [200] * 10 and img[:-1].max() == 0


def test_a_test_class_that_train_lacks_is_refused(tmp_path: Path) -> None:
    """train {benign, malignant}, test also {normal}: every normal query could only be missed
    (it was accepted; only bring-your-own embeddings were checked)."""
    root = tmp_path / "imgs"
    image_folder(root / "train", per_class=6)
    image_folder(root / "val", per_class=2)
    image_folder(root / "test", per_class=3)
    for i in range(2):
        write_png(root / "test" / "normal" / f"{i}.png", 200 + i)
    with pytest.raises(
        DataError,
        match=r"dataset 'mine': test_y holds class 'normal' \(id 2, 2 rows\) that no train row "
        r"holds \(train holds 'benign', 'malignant'\)",
    ):
        load("mine", folder_config(root))


def test_the_layout_is_read_by_folder_position_not_guessed_from_names(tmp_path: Path) -> None:
    """``datasets``' builder guessed splits from words anywhere in paths and took the folder
    just above each image as its class: Kaggle's Training/Testing folders were merged into one
    train split, <class>/<patient>/ folders became classes, files named "train 3.png" were the
    only ones kept, and a metadata.csv was refused as "not in class sub-folders"."""
    cased = tmp_path / "cased"
    image_folder(cased / "Training", per_class=6)
    image_folder(cased / "Testing", per_class=3)
    ds = load("mine", folder_config(cased))
    assert ds.class_names == ["benign", "malignant"]
    assert [len(ds.splits[s]) for s in ("train", "test")] == [12 - 1, 6]  # val carved from train
    (cased / "extra").mkdir()
    write_png(cased / "extra" / "a" / "0.png", 1)
    with pytest.raises(DataError, match=r"split folders \['Testing', 'Training'\] beside other"):
        load("mine", folder_config(cased))
    upper = tmp_path / "upper"
    image_folder(upper / "TRAIN", per_class=6)
    image_folder(upper / "Test", per_class=3)
    ds = load("mine", folder_config(upper))
    assert [len(ds.splits[s]) for s in ("train", "test")] == [12 - 1, 6]  # val carved from train
    nested = tmp_path / "nested"
    for c, cls in enumerate(("benign", "malignant")):
        for patient in range(3):
            for i in range(3):
                write_png(nested / cls / f"patient{patient}" / f"train {i}.png", 10 * c + i)
    (nested / "metadata.csv").write_text("file,note\n")
    ds = load("mine", folder_config(nested))
    assert ds.class_names == ["benign", "malignant"]
    assert sum(len(ds.splits[s]) for s in ("train", "val", "test")) == 18  # every image kept


def test_a_test_class_folder_is_named_with_its_spelling(tmp_path: Path) -> None:
    """The error named a number ('class 2'); it names the folder, a non-ASCII name also spelt
    out with escapes (NFC and NFD spellings print alike)."""
    root = tmp_path / "imgs"
    image_folder(root / "train", per_class=6)
    image_folder(root / "test", per_class=3)
    nfd = unicodedata.normalize("NFD", "n\u00f6rmal")
    for i in range(2):
        write_png(root / "test" / nfd / f"{i}.png", 200 + i)
    with pytest.raises(
        DataError,
        match=r"test_y holds class 'n\xf6rmal' = 'n\\xf6rmal' \(id 2, 2 rows\) that no train",
    ):
        load("mine", folder_config(root))  # the name is read in NFC


def test_nfc_and_nfd_spellings_of_a_class_folder_are_one_class(tmp_path: Path) -> None:
    """train/dög written in NFC and test/dög in NFD (as macOS writes it) were two classes, and
    the test one was refused as a class that train lacks."""
    root = tmp_path / "imgs"
    nfc, nfd = "d\u00f6g", unicodedata.normalize("NFD", "d\u00f6g")
    assert nfc != nfd
    for i in range(6):
        write_png(root / "train" / nfc / f"{i}.png", i)
        write_png(root / "train" / "cat" / f"{i}.png", 100 + i)
    for i in range(3):
        write_png(root / "test" / nfd / f"{i}.png", 50 + i)
        write_png(root / "test" / "cat" / f"{i}.png", 150 + i)
    ds = load("mine", folder_config(root))
    assert ds.class_names == ["cat", nfc]
    assert sorted(ds.splits["test"].labels.tolist()) == [0, 0, 0, 1, 1, 1]


def test_symlinked_folders_are_followed_and_broken_links_refused(tmp_path: Path) -> None:
    """Images under a symlinked sub-folder (a patient folder kept elsewhere) were silently
    dropped, and a broken link to an image silently skipped while a corrupt file is refused."""
    root = image_folder(tmp_path / "imgs", per_class=4)
    store = tmp_path / "store"
    for i in range(3):
        write_png(store / "patient7" / f"{i}.png", 60 + i)
    (root / "malignant" / "patient7").symlink_to(store / "patient7")
    (root / "malignant" / "loop").symlink_to(root)  # a loop: read once, no endless walk
    for i in range(3):  # a linked class folder (other images: one image is one record)
        write_png(tmp_path / "store2" / "patient8" / f"{i}.png", 90 + i)
    (root / "benign_link").symlink_to(tmp_path / "store2")
    ds = load("mine", folder_config(root))
    assert ds.class_names == ["benign", "benign_link", "malignant"]
    counts = np.bincount(np.concatenate([ds.splits[s].labels for s in ("train", "val", "test")]))
    assert counts.tolist() == [4, 3, 4 + 3]
    gone = root / "benign" / "9.png"
    gone.symlink_to(tmp_path / "moved" / "9.png")
    with pytest.raises(DataError) as err:
        load("mine", folder_config(root))
    msg = str(err.value)
    assert msg.startswith(f"{gone} is a broken symbolic link to '{tmp_path / 'moved' / '9.png'}'")
    assert "fix the link, or remove it" in msg
    gone.unlink()
    (root / "normal").symlink_to(tmp_path / "unmounted")  # a whole class behind a broken link
    with pytest.raises(DataError, match=r"imgs/normal is a broken symbolic link .*a class folder"):
        load("mine", folder_config(root))


def test_a_class_folder_without_image_files_is_named(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A class folder of .dcm/.jfif files vanished silently, and when no folder held an image the
    error named neither the accepted extensions nor the ones found."""
    root = image_folder(tmp_path / "imgs", per_class=4)
    (root / "ct").mkdir()
    for i in range(3):
        (root / "ct" / f"{i}.dcm").write_bytes(b"DICM")
    (root / "ct" / "a.JFIF").write_bytes(b"x")
    with caplog.at_level(logging.WARNING, logger="pipeline.sources.imagefolder"):
        ds = load("mine", folder_config(root))
    assert ds.class_names == ["benign", "malignant"]
    warned = [r.getMessage() for r in caplog.records if "'ct'" in r.getMessage()]
    assert len(warned) == 1 and "holds no image file, so the class is left out" in warned[0]
    assert "its files: .dcm (3), .jfif (1)" in warned[0] and ".png" in warned[0]
    only = tmp_path / "dicom"
    for cls in ("a", "b"):
        (only / cls).mkdir(parents=True)
        (only / cls / "1.dcm").write_bytes(b"DICM")
    with pytest.raises(
        DataError,
        match=r"dicom: no images in class sub-folders \(the files found end in \.dcm \(2\)\); "
        r"images are files ending in \.bmp, \.gif, \.jpeg, \.jpg, \.pgm, \.png, \.ppm, \.tif, "
        r"\.tiff, \.webp \(any case\)",
    ):
        load("mine", folder_config(only))


def test_an_image_beyond_the_decompression_bomb_limit_is_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Pillow's DecompressionBombError is not an OSError: it ended extract with a traceback."""
    from PIL import Image as PILImage

    root = image_folder(tmp_path / "imgs", per_class=4)  # 12 x 10 = 120 pixels each
    monkeypatch.setattr(PILImage, "MAX_IMAGE_PIXELS", 50)  # refused above 2 * 50
    ds = load("mine", folder_config(root))
    with pytest.raises(DataError) as err:
        ds.splits["test"].get_batch([0])
    msg = str(err.value)
    assert (
        msg.startswith("cannot read image ")
        and str(root) in msg
        and msg.split(":")[0][-4:] == ".png"
    )
    assert "120 pixels, above Pillow's decompression-bomb limit of 100 pixels" in msg
    assert "downscale it" in msg


def test_a_path_one_level_above_the_class_folders_is_refused(tmp_path: Path) -> None:
    """path: data/ holding flowers/<class>/<image>: the class is the first folder below the
    path, so all 20 images were class 'flowers' and the dataset loaded with 1 class (KNN
    accuracy and mAP then 1.0 whatever the embeddings); now a DataError naming it."""
    image_folder(tmp_path / "data" / "flowers")
    with pytest.raises(DataError) as err:
        load("mine", folder_config(tmp_path / "data"))
    msg = str(err.value)
    assert "every row of train is class 'flowers' (id 0, 20 rows)" in msg
    assert "set path to the folder whose sub-folders are the classes" in msg
    # one level down, the same images load as the 2 classes they are
    assert load("mine", folder_config(tmp_path / "data" / "flowers")).class_names == [
        "benign",
        "malignant",
    ]
