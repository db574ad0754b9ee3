"""Source ``huggingface``: a Hugging Face dataset (a hub id, cached or online, or a ``save_to_disk``
directory) with an image column and an integer (or ``ClassLabel``) label column.

Images are decoded lazily, one batch at a time (:class:`_HFImageReader`); its splits map
``train``/``validation``|``val``|``valid``/``test`` onto ours, missing ones are carved from train.
"""

from __future__ import annotations

import io
import re
import struct
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.config import DataConfig, SourceConfig, check
from pipeline.data import (
    DataError,
    ImageDataset,
    ImageSplit,
    check_class_ids,
    image_dataset,
    normalize_labels,
)

YIELDS = "images"


KEYS = (
    "id",
    "revision",
    "image_column",
    "label_column",
)  # the params keys this kind reads (pipeline.sources.check_config)


def check_config(source: SourceConfig) -> None:
    check(
        bool(source.id),
        "id",
        "a huggingface source needs the dataset id, e.g. id: uoft-cs/cifar10",
    )
    local = Path(str(source.id)).expanduser().is_dir()
    check(
        source.revision is None or not local,
        "revision",
        f"{source.revision!r}: id {source.id!r} is a local folder, which has no revisions; remove revision",
    )


#: EXIF orientation (tag 0x0112) -> the transpose that makes the image upright (EXIF 2.3, as
#: Pillow's ``ImageOps.exif_transpose`` maps it); 1 and unknown values: as stored
_ORIENTATION = {2: "FLIP_LEFT_RIGHT", 3: "ROTATE_180", 4: "FLIP_TOP_BOTTOM", 5: "TRANSPOSE",
                6: "ROTATE_270", 7: "TRANSVERSE", 8: "ROTATE_90"}  # fmt: skip


def _upright(img: Any) -> Any:
    """``img`` turned as its EXIF orientation says. Only the tag is read: Pillow's
    ``exif_transpose`` also rewrites the whole EXIF block, which fails on camera files with a
    malformed unrelated tag; an unreadable EXIF block leaves the image as stored."""
    from PIL import Image

    try:
        orientation = img.getexif().get(0x0112)
    except (OSError, ValueError, TypeError, SyntaxError, struct.error, ZeroDivisionError):
        return img
    method = _ORIENTATION.get(orientation) if isinstance(orientation, int) else None
    return img if method is None else img.transpose(getattr(Image.Transpose, method))


def decode_image(data: bytes | None, path: str | None, *, where: str) -> np.ndarray:
    """Decode one image file to uint8 ``HxW`` (grayscale) or ``HxWx3`` (everything else).

    The EXIF orientation is applied first, so images come out the way a viewer shows them.
    High-bit-depth images (modes ``I``, ``I;16*``, ``F``: 16-bit PNG/TIFF, float TIFF) are mapped to
    8 bit by a min-max stretch over each image's own range (its minimum becomes 0, its maximum 255).
    There is no fixed scale (such files differ in bit depth and value range), so absolute
    intensity is not comparable across images: two scans of different brightness can come out
    alike, and a constant image becomes all 0. Images with transparency (``RGBA``, ``LA``, ``P``
    with a transparent colour) are composited onto white first, as the Hugging Face image
    processors do (``convert_to_rgb``): the colour hidden under alpha 0 never reaches the model.
    Other modes are converted: ``1`` and ``LA`` to ``L``, the rest (``P``, ``RGBA``, ``CMYK``, ...)
    to ``RGB``. An image beyond Pillow's decompression-bomb limit (more than twice
    ``PIL.Image.MAX_IMAGE_PIXELS`` pixels) is a :class:`DataError` naming it and its size.
    """
    from PIL import Image, UnidentifiedImageError

    label = path or where
    try:
        with Image.open(io.BytesIO(data) if data is not None else path) as img:
            img.load()
            img = _upright(img)  # as viewers (and datasets) show it
            if img.mode in ("I", "I;16", "I;16B", "I;16L", "F"):  # high bit depth: min-max to 8 bit
                arr = np.asarray(img, dtype=np.float64)
                lo, hi = float(arr.min()), float(arr.max())
                return np.round((arr - lo) / (hi - lo or 1.0) * 255).astype(np.uint8)
            if "A" in img.getbands() or "transparency" in img.info:
                img = _on_white(img)  # as the checkpoints' image processors (convert_to_rgb)
            if img.mode not in ("L", "RGB"):
                img = img.convert("L" if img.mode in ("1", "LA") else "RGB")
            return np.asarray(img, dtype=np.uint8).copy()
    except Image.DecompressionBombError as err:  # not an OSError: Pillow's guard, not corruption
        raise _too_large(label, err) from err
    except (OSError, UnidentifiedImageError, ValueError, SyntaxError) as err:
        raise DataError(
            f"cannot read image {label}: {err}; replace or remove the corrupt file"
        ) from err


def _too_large(label: str, err: Exception) -> DataError:
    """The error for an image that Pillow refuses as a possible decompression bomb."""
    from PIL import Image

    found = re.search(r"\((\d+) pixels\)", str(err))
    size = f"{int(found.group(1)):,} pixels" if found else "too many pixels"
    limit = Image.MAX_IMAGE_PIXELS
    cap = f"{2 * limit:,} pixels, twice PIL.Image.MAX_IMAGE_PIXELS" if limit else "its limit"
    return DataError(
        f"cannot read image {label}: {size}, above Pillow's decompression-bomb limit of {cap} "
        "(a guard against files that expand to gigabytes); downscale it (the backbone sees every "
        "image at its input size, a few hundred pixels a side, anyway), e.g. to at most 4096 "
        "pixels a side, or remove it"
    )


def _on_white(img: Any) -> Any:
    """``img`` (with an alpha channel or a transparent palette colour) over a white background:
    ``L`` for ``LA``, else ``RGB``."""
    from PIL import Image

    gray = img.mode == "LA"
    rgba = img.convert("RGBA")
    white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    out = Image.alpha_composite(white, rgba).convert("RGB")
    return out.convert("L") if gray else out


class _HFImageReader:
    """Decodes the images of one Hugging Face split (image column cast to ``decode=False``)."""

    def __init__(self, dataset: Any, column: str, *, where: str) -> None:
        from datasets import Image

        self.dataset = dataset.select_columns([column]).cast_column(column, Image(decode=False))
        self.column = column
        self.where = where

    def __len__(self) -> int:
        return len(self.dataset)

    def read(self, indices: Sequence[int]) -> list[np.ndarray]:
        rows = self.dataset[list(indices)][self.column]
        out = []
        for i, item in zip(indices, rows, strict=True):
            if item is None:
                raise DataError(
                    f"{self.where} row {i}: no image; remove the row or fix the dataset"
                )
            out.append(
                decode_image(item.get("bytes"), item.get("path"), where=f"{self.where} row {i}")
            )
        return out


def _label_column(ds: Any, label_column: str, *, where: str) -> np.ndarray:
    """The label column of one split as int64, refusing rows without a label (None)."""
    values = list(ds[label_column])
    missing = [i for i, v in enumerate(values) if v is None]
    if missing:
        raise DataError(
            f"{where}: {len(missing)} of {len(values)} rows have no label in column "
            f"{label_column!r} (first: row {missing[0]}); unlabelled rows are not supported: drop "
            f"them (e.g. ds.filter(lambda r: r[{label_column!r}] is not None)) or set label_column "
            "to a fully labelled column"
        )
    return np.asarray(values, dtype=np.int64)


def _label_names(
    dsd: Mapping[str, Any], label_column: str, *, where: str
) -> tuple[list[str], dict[str, np.ndarray]]:
    """Class names from the label column's ClassLabel feature (else ``0..C-1``, integer ids that
    leave most of ``0..max`` unused refused by :func:`~pipeline.data.check_class_ids`), and the
    int64 labels of every split (read once, rows without a label refused)."""
    from datasets import ClassLabel, Value

    feature = next(iter(dsd.values())).features.get(label_column)
    if not isinstance(feature, ClassLabel) and not (
        isinstance(feature, Value) and feature.dtype.startswith(("int", "uint"))
    ):
        raise DataError(
            f"{where}: label column {label_column!r} has type {feature}; hashaudit needs integer "
            "class ids (a ClassLabel or an integer column); set label_column to such a column"
        )
    labels = {s: _label_column(d, label_column, where=f"{where} [{s}]") for s, d in dsd.items()}
    if isinstance(feature, ClassLabel):
        return list(feature.names), labels
    if all(int(y.min(initial=0)) >= 0 for y in labels.values()):  # else refused next, by split
        check_class_ids(
            list(labels.values()),
            declared=None,
            where=f"{where}: label column {label_column!r}",
            fix=f"cast the column to a ClassLabel of the ids present (dsd = "
            f"dsd.class_encode_column({label_column!r}), which keeps the ids as class names) "
            "and save it again (save_to_disk), or remap the ids to 0..C-1",
        )
    top = max(int(y.max(initial=-1)) for y in labels.values())
    return [str(i) for i in range(top + 1)], labels


def from_dataset_dict(
    name: str,
    dsd: Mapping[str, Any],
    *,
    image_column: str,
    label_column: str,
    where: str,
    source_info: dict[str, str],
    data: DataConfig,
    seed: int,
) -> ImageDataset:
    """Shared with the ``imagefolder`` source: map splits, check columns, wrap lazy readers."""
    split_map = {
        "train": "train",
        "validation": "val",
        "val": "val",
        "valid": "val",
        "test": "test",
    }
    chosen: dict[str, Any] = {}
    for hf_split, ours in split_map.items():
        if hf_split in dsd and ours not in chosen:
            chosen[ours] = dsd[hf_split]
    if "train" not in chosen:
        raise DataError(f"{where}: no 'train' split (found {sorted(dsd)}); provide a train split")
    for s, ds in chosen.items():
        for col, key in ((image_column, "image_column"), (label_column, "label_column")):
            if col not in ds.column_names:
                raise DataError(
                    f"{where}: split {s!r} has no column {col!r} (columns: {ds.column_names}); set {key} "
                    "in the source to the right column"
                )
    class_names, raw = _label_names(chosen, label_column, where=where)
    splits: dict[str, ImageSplit] = {}
    for s, ds in chosen.items():
        labels = normalize_labels(
            raw[s], multilabel=False, n_classes=len(class_names), where=f"{where} [{s}]"
        )
        splits[s] = ImageSplit(
            labels=labels, reader=_HFImageReader(ds, image_column, where=f"{where} [{s}]")
        )
    return image_dataset(
        name,
        splits,
        class_names=class_names,
        source_info=source_info,
        data=data,
        seed=seed,
    )


def _is_saved_dataset(path: Path) -> bool:
    return (path / "dataset_dict.json").is_file() or (path / "state.json").is_file()


def inputs(name: str, source: SourceConfig, data: DataConfig) -> list[Path]:
    """A local folder given as ``id`` (``save_to_disk`` or a data dir); a hub id has none (it is
    pinned by its id in params; the local cache is not digested)."""
    local = Path(str(source.id)).expanduser()
    return [local] if local.is_dir() else []


def load(name: str, source: SourceConfig, data: DataConfig, *, seed: int) -> ImageDataset:
    """A Hugging Face dataset: a hub id (cached or online), a ``save_to_disk`` dir or a local data dir."""
    import datasets

    ds_id = str(source.id)
    local = Path(ds_id).expanduser()
    try:
        if local.is_dir() and _is_saved_dataset(local):
            dsd = datasets.load_from_disk(str(local))
            info = {"source": "huggingface", "hf_path": str(local.resolve())}
        else:  # a pinned revision (a commit) keeps a cached or re-downloaded dataset the same
            # a local data dir is loaded by its expanded path (datasets does not expand ~/...)
            dsd = datasets.load_dataset(
                str(local) if local.is_dir() else ds_id, revision=source.revision
            )
            info = {
                "source": "huggingface",
                "hf_id": ds_id,
                "hf_revision": source.revision or "default",
            }
    except (OSError, ConnectionError, ValueError) as err:
        raise DataError(
            f"Hugging Face dataset {ds_id!r} is not available ({type(err).__name__}: {err}); run once with "
            "network access to cache it (HF_DATASETS_OFFLINE=1 then reuses the cache), or point id at a "
            "local directory written by DatasetDict.save_to_disk, or use kind: imagefolder for local images"
        ) from err
    if isinstance(dsd, datasets.Dataset):
        dsd = datasets.DatasetDict({"train": dsd})
    return from_dataset_dict(
        name,
        dsd,
        image_column=source.image_column,
        label_column=source.label_column,
        where=f"dataset {ds_id}",
        source_info=info,
        data=data,
        seed=seed,
    )
