"""Source ``huggingface``: an ``image_column`` that holds no images is refused, naming it; images
stored as pixel arrays keep their pixel values."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pipeline.config import SourceConfig
from pipeline.data import DataError
from tests.pipeline.sources.source_helpers import data_config, load


def _saved(tmp_path: Path) -> Path:
    """train 12 / test 6 rows; ``pixels`` 2x3 images as [H, W] lists, ``flat`` the same pixels as
    one list of 6 values, ``patient`` an integer id, ``score`` a float."""
    import datasets

    g = np.random.default_rng(0)

    def split(n: int) -> datasets.Dataset:
        pixels = g.integers(0, 256, (n, 2, 3), dtype=np.uint8)
        features = datasets.Features(
            {
                "pixels": datasets.Array2D(shape=(2, 3), dtype="uint8"),
                "nested": datasets.List(datasets.List(datasets.Value("uint8"))),
                "flat": datasets.List(datasets.Value("uint8")),
                "patient": datasets.Value("int64"),
                "score": datasets.Value("float32"),
                "label": datasets.ClassLabel(names=["a", "b"]),
            }
        )
        return datasets.Dataset.from_dict(
            {
                "pixels": pixels.tolist(),
                "nested": pixels.tolist(),
                "flat": pixels.reshape(n, 6).tolist(),
                "patient": list(range(n)),
                "score": [0.5] * n,
                "label": [i % 2 for i in range(n)],
            },
            features=features,
        )

    path = tmp_path / "hf"
    datasets.DatasetDict({"train": split(12), "test": split(6)}).save_to_disk(str(path))
    return path


def _load(tmp_path: Path, path: Path, column: str):
    src = SourceConfig(kind="huggingface", id=str(path), image_column=column, label_column="label")
    return load("toy", data_config(tmp_path, toy=src))


@pytest.mark.parametrize(
    ("column", "message"),
    [
        # datasets cast the 6 values to a 6 x 1 image: the backbone saw a one-pixel-wide strip
        (
            "flat",
            r"image column 'flat' of split 'train' holds flat lists of numbers.*one pixel wide",
        ),
        # an ArrowNotImplementedError traceback (Unsupported cast from int64 to struct)
        ("patient", r"image column 'patient' of split 'train' holds int64 values, not images"),
        ("score", r"image column 'score' of split 'train' holds float32 values, not images"),
        ("label", r"image column 'label' of split 'train' has type ClassLabel.*, not images"),
    ],
)
def test_a_column_without_images_is_refused_naming_it(
    tmp_path: Path, column: str, message: str
) -> None:
    path = _saved(tmp_path)
    with pytest.raises(DataError, match=message) as err:
        _load(tmp_path, path, column)
    assert "set image_column to the column of images" in str(err.value)
    assert "'pixels'" in str(err.value)  # the columns are listed


def _pixel_set(tmp_path: Path, feature, rows: list) -> Path:
    """A saved dataset whose ``img`` column holds ``rows``, each 3 times (labels 0, 1, 2), in
    every split (train, validation, test: nothing carved)."""
    import datasets

    n = 3 * len(rows)
    features = datasets.Features(
        {"img": feature, "label": datasets.ClassLabel(names=["a", "b", "c"])}
    )
    part = datasets.Dataset.from_dict(
        {"img": [r for r in rows for _ in range(3)], "label": [i % 3 for i in range(n)]},
        features=features,
    )
    path = tmp_path / "px"
    datasets.DatasetDict({"train": part, "validation": part, "test": part}).save_to_disk(str(path))
    return path


def _test_images(tmp_path: Path, path: Path) -> list[np.ndarray]:
    src = SourceConfig(kind="huggingface", id=str(path), image_column="img", label_column="label")
    ds = load("toy", data_config(tmp_path, toy=src))
    return ds.splits["test"].get_batch(np.arange(len(ds.splits["test"])))


# 8-bit pixels between 100 and 150: datasets' cast stored them as a 32-bit PNG, which came out
# stretched over the image's own range (100 -> 0, 150 -> 255)
PIXELS = [[100, 110, 120], [130, 140, 150]]


@pytest.mark.parametrize(
    "feature",
    [
        "Array2D-uint8",
        "List-List-uint8",
        "List-List-int64",  # what datasets infers from Python lists
    ],
)
def test_8_bit_pixel_arrays_keep_their_values(tmp_path: Path, feature: str) -> None:
    import datasets

    kind = {
        "Array2D-uint8": datasets.Array2D(shape=(2, 3), dtype="uint8"),
        "List-List-uint8": datasets.List(datasets.List(datasets.Value("uint8"))),
        "List-List-int64": datasets.List(datasets.List(datasets.Value("int64"))),
    }[feature]
    images = _test_images(tmp_path, _pixel_set(tmp_path, kind, [PIXELS]))
    assert len(images) == 3
    for im in images:
        assert im.dtype == np.uint8 and im.tolist() == PIXELS


def test_a_one_channel_pixel_array_is_a_gray_image(tmp_path: Path) -> None:
    import datasets

    kind = datasets.Array3D(shape=(2, 3, 1), dtype="uint8")  # a TypeError traceback before
    rows = [[[v] for v in line] for line in PIXELS]
    for im in _test_images(tmp_path, _pixel_set(tmp_path, kind, [rows])):
        assert im.shape == (2, 3) and im.tolist() == PIXELS


def test_rgba_pixel_arrays_are_composited_onto_white(tmp_path: Path) -> None:
    import datasets

    kind = datasets.Array3D(shape=(1, 2, 4), dtype="uint8")
    rows = [[[0, 255, 0, 0], [10, 20, 30, 255]]]  # hidden green under alpha 0; an opaque pixel
    for im in _test_images(tmp_path, _pixel_set(tmp_path, kind, [rows])):
        assert im.tolist() == [[[255, 255, 255], [10, 20, 30]]]


def test_16_bit_gray_arrays_are_stretched_and_float_colour_arrays_refused(tmp_path: Path) -> None:
    import datasets

    kind = datasets.Array2D(shape=(1, 3), dtype="uint16")
    images = _test_images(tmp_path, _pixel_set(tmp_path, kind, [[[1000, 1500, 3000]]]))
    # the min-max rule of 16-bit files: (v - 1000) / 2000 * 255 -> 0, 63.75 -> 64, 255
    assert images[0].tolist() == [[0, 64, 255]]
    kind = datasets.Array3D(shape=(1, 1, 3), dtype="float32")
    path = _pixel_set(tmp_path / "f", kind, [[[[0.5, 0.25, 1.0]]]])
    with pytest.raises(DataError, match=r"colour pixel array of float.*integers 0\.\.255"):
        _test_images(tmp_path, path)
