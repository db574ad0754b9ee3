"""A fixture data source (kind ``toy``): the whole plug-in is this module plus one table line.

Images are 8x8 grayscale squares whose brightness encodes the class (``source.size`` images per
class, train only: val and test are carved by the shared code).
"""

from __future__ import annotations

import numpy as np

from pipeline.config import DataConfig, SourceConfig, check
from pipeline.data import ImageDataset, ImageSplit, image_dataset

YIELDS = "images"
CLASSES = ("dark", "mid", "bright")


def check_config(source: SourceConfig) -> None:
    check(
        source.size >= 10, "size", f"{source.size}: a toy source needs at least 10 images per class"
    )


def load(name: str, source: SourceConfig, data: DataConfig, *, seed: int) -> ImageDataset:
    labels = np.repeat(np.arange(len(CLASSES)), source.size)
    images = (labels * 100 + 10).astype(np.uint8)[:, None, None] * np.ones((1, 8, 8), np.uint8)
    return image_dataset(
        name,
        {"train": ImageSplit(labels=labels, images=images)},
        class_names=list(CLASSES),
        source_info={"source": "toy"},
        data=data,
        seed=seed,
    )
