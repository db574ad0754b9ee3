"""Source ``huggingface``: a Hugging Face dataset (a hub id, cached or online, or a ``save_to_disk``
directory) with an image column and an integer (or ``ClassLabel``) label column.

The image column holds image files (an ``Image`` feature, paths or bytes) or pixel arrays
(``Array2D``/``Array3D``, nested lists; read as stored, :func:`decode_pixels`); a column of
anything else is refused. Images are decoded lazily, one batch at a time
(:class:`_HFImageReader`); its splits map ``train``/``validation``|``val``|``valid``/``test`` onto
ours, missing ones are carved from train.
"""

from __future__ import annotations

import io
import logging
import os
import re
import struct
import unicodedata
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

log = logging.getLogger(__name__)


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
    alike, and a constant image becomes all 0; a float image holding NaN or infinite pixels is a
    :class:`DataError` (they have no place on that scale). Images with transparency (``RGBA``,
    ``LA``, ``P`` with a transparent colour) are composited onto white first, as the Hugging Face image
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
                return _stretch_to_8bit(np.asarray(img), label, f"a {img.mode} image")
            if "A" in img.getbands() or "transparency" in img.info:
                img = _on_white(img)  # as the checkpoints' image processors (convert_to_rgb)
            if img.mode not in ("L", "RGB"):
                img = img.convert("L" if img.mode in ("1", "LA") else "RGB")
            return np.asarray(img, dtype=np.uint8).copy()
    except DataError:  # a ValueError, but already the message to show
        raise
    except Image.DecompressionBombError as err:  # not an OSError: Pillow's guard, not corruption
        raise _too_large(label, err) from err
    except (OSError, UnidentifiedImageError, ValueError, SyntaxError) as err:
        raise DataError(
            f"cannot read image {label}: {err}; replace or remove the corrupt file"
        ) from err


def _stretch_to_8bit(pixels: np.ndarray, label: str, what: str) -> np.ndarray:
    """A high-bit-depth gray image mapped to uint8 by a min-max stretch over its own range (see
    :func:`decode_image`); NaN or infinite pixels are a :class:`DataError`."""
    arr = pixels.astype(np.float64)
    bad = int(np.count_nonzero(~np.isfinite(arr)))
    if bad:  # one NaN made min and max NaN: the whole image came out 0
        raise DataError(
            f"cannot read image {label}: {bad} of its {arr.size} pixels are NaN or infinite "
            f"({what}); replace them with finite values (e.g. the image's minimum) or save it as "
            "an 8- or 16-bit image, or remove it"
        )
    lo, hi = float(arr.min()), float(arr.max())
    return np.round((arr - lo) / (hi - lo or 1.0) * 255).astype(np.uint8)


def decode_pixels(value: Any, *, where: str) -> np.ndarray:
    """One image stored as a pixel array (an ``Array2D``/``Array3D`` column or nested lists:
    ``[H, W]``, or ``[H, W, C]`` with C = 1, 2 (gray + alpha), 3 or 4) as uint8 ``HxW`` or
    ``HxWx3``, as :func:`decode_image` gives an image file. Integer pixels within 0..255 are kept
    exactly, whatever the column's integer type; a gray image of other values (16-bit, float) is
    mapped to 8 bit by the min-max stretch that :func:`decode_image` applies to high-bit-depth
    files; colour pixels must be integers within 0..255; an alpha channel is composited onto
    white. (datasets' own cast of such a column to images stored every array as a 32-bit PNG, so
    8-bit pixels were stretched over each image's own range, and ``[H, W, 1]`` arrays failed.)
    """
    from PIL import Image

    try:
        arr = np.asarray(value)
    except ValueError as err:  # ragged nested lists
        raise DataError(f"cannot read image {where}: not a pixel array ({err})") from err
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[..., 0]
    numeric = np.issubdtype(arr.dtype, np.number) or arr.dtype == np.bool_
    if (
        not numeric
        or arr.ndim not in (2, 3)
        or (arr.ndim == 3 and arr.shape[2] not in (2, 3, 4))
        or 0 in arr.shape
    ):
        raise DataError(
            f"cannot read image {where}: a pixel array of {arr.dtype} {list(arr.shape)}; images "
            "are [H, W] or [H, W, C] arrays of numbers with C = 1 (gray), 2 (gray + alpha), 3 "
            "(RGB) or 4 (RGBA): fix the row, or remove it"
        )
    if arr.dtype == np.bool_:
        arr = arr.astype(np.uint8) * 255
    if not (np.issubdtype(arr.dtype, np.integer) and arr.min() >= 0 and arr.max() <= 255):
        if arr.ndim == 2:
            return _stretch_to_8bit(arr, where, f"a {arr.dtype} pixel array")
        raise DataError(
            f"cannot read image {where}: a colour pixel array of {arr.dtype} values from "
            f"{arr.min():g} to {arr.max():g}; colour pixels must be integers 0..255: scale them "
            "(e.g. np.round(x * 255) for values in [0, 1]) and store them as uint8"
        )
    arr = arr.astype(np.uint8)
    if arr.ndim == 3 and arr.shape[2] in (2, 4):  # as decode_image: alpha composited onto white
        img = Image.fromarray(arr, "LA" if arr.shape[2] == 2 else "RGBA")
        return np.asarray(_on_white(img), dtype=np.uint8).copy()
    return np.ascontiguousarray(arr)


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
    """Decodes the images of one Hugging Face split: image files (the column cast to
    ``decode=False``) by :func:`decode_image`, pixel arrays (read as stored) by
    :func:`decode_pixels`."""

    def __init__(self, dataset: Any, column: str, *, where: str) -> None:
        from datasets import Image

        self.pixels = _pixel_arrays(dataset.features[column])
        ds = dataset.select_columns([column])
        self.dataset = ds if self.pixels else ds.cast_column(column, Image(decode=False))
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
            where = f"{self.where} row {i}"
            out.append(
                decode_pixels(item, where=where)
                if self.pixels
                else decode_image(item.get("bytes"), item.get("path"), where=where)
            )
        return out


#: ``Value`` dtypes that datasets casts to images: file paths (strings) and encoded file bytes
_PATH_OR_BYTES = frozenset({"string", "large_string", "binary", "large_binary"})


def _list_depth(feature: Any) -> tuple[int, Any]:
    """How many list levels ``feature`` nests, and the feature inside them."""
    import datasets

    lists = tuple(  # datasets 4+: List and LargeList; datasets 3: Sequence (a class there)
        t
        for t in (getattr(datasets, n, None) for n in ("List", "LargeList", "Sequence"))
        if isinstance(t, type)
    )
    depth, inner = 0, feature
    while isinstance(inner, lists):
        depth, inner = depth + 1, inner.feature
    return depth, inner


def _pixel_arrays(feature: Any) -> bool:
    """Whether a column of type ``feature`` holds images as pixel arrays: ``Array2D``,
    ``Array3D``, or lists of lists (of lists) of numbers (``[H, W]`` or ``[H, W, C]``)."""
    import datasets

    if isinstance(feature, (datasets.Array2D, datasets.Array3D)):
        return True
    depth, inner = _list_depth(feature)
    return (
        depth in (2, 3) and isinstance(inner, datasets.Value) and inner.dtype not in _PATH_OR_BYTES
    )


def _image_column_problem(feature: Any) -> str | None:
    """Why a column of type ``feature`` holds no images, or None when it does: an ``Image``
    feature, file paths or encoded file bytes (string or binary values, or a dict of ``bytes`` and
    ``path``), or pixel arrays of an ``[H, W]`` or ``[H, W, C]`` image (``Array2D``, ``Array3D``,
    lists of lists of numbers). datasets casts a flat list of numbers to an image one pixel wide
    (784 pixel values read as a 784 x 1 strip) and fails with an Arrow error on a number column."""
    import datasets

    if isinstance(feature, datasets.Image) or _pixel_arrays(feature):
        return None
    if isinstance(feature, datasets.Value):
        return (
            None if feature.dtype in _PATH_OR_BYTES else f"holds {feature.dtype} values, not images"
        )
    if isinstance(feature, dict) and {"bytes", "path"} & set(feature):
        return None
    depth, inner = _list_depth(feature)
    if depth == 1 and isinstance(inner, datasets.Value) and inner.dtype not in _PATH_OR_BYTES:
        return (
            "holds flat lists of numbers, one value per pixel without the image's height and "
            "width (datasets would read each as an image one pixel wide; store each image as an "
            "[H, W] or [H, W, C] array instead, e.g. reshaped into an Array2D column)"
        )
    return f"has type {feature}, not images"


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
    if isinstance(feature, ClassLabel):  # ids mean the names of their own split's ClassLabel
        first = next(iter(dsd))
        for s, d in dsd.items():
            other = d.features.get(label_column)
            if isinstance(other, ClassLabel) and list(other.names) != list(feature.names):
                raise DataError(
                    f"{where}: label column {label_column!r} is a ClassLabel with names "
                    f"{list(feature.names)} in split {first!r} but {list(other.names)} in split "
                    f"{s!r}, so one id would mean two classes; encode every split with one "
                    "ClassLabel (the same names in the same order), e.g. map each split's ids to "
                    "names (its feature's int2str) and back with the train split's str2int"
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
    chosen: dict[str, Any] = {}
    shadowed = []
    for hf_split, ours in _SPLIT_MAP.items():
        if hf_split in dsd and ours not in chosen:
            chosen[ours] = dsd[hf_split]
        elif hf_split in dsd:  # 'val' beside 'validation': the first in _SPLIT_MAP order is read
            shadowed.append(hf_split)
    unused = sorted(set(dsd) - set(_SPLIT_MAP)) + shadowed
    if unused:  # e.g. 'dev': read as nothing, while val/test are carved from train
        log.warning(
            "%s: split(s) %s are not read (hashaudit reads train, validation|val|valid and test, "
            "the first of validation, val, valid present; a missing val or test is carved from "
            "train); rename a split to use it",
            where,
            unused,
        )
    if "train" not in chosen:
        raise DataError(f"{where}: no 'train' split (found {sorted(dsd)}); provide a train split")
    for s, ds in chosen.items():
        for col, key in ((image_column, "image_column"), (label_column, "label_column")):
            if col not in ds.column_names:
                raise DataError(
                    f"{where}: split {s!r} has no column {col!r} (columns: {ds.column_names}); set {key} "
                    "in the source to the right column"
                )
        problem = _image_column_problem(ds.features[image_column])
        if problem is not None:
            raise DataError(
                f"{where}: image column {image_column!r} of split {s!r} {problem}; set "
                f"image_column to the column of images (columns: {ds.column_names}): an Image "
                "feature, file paths, encoded file bytes or [H, W(, C)] pixel arrays"
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


#: how :func:`from_dataset_dict` maps a Hugging Face split name onto ours
_SPLIT_MAP = {"train": "train", "validation": "val", "val": "val", "valid": "val", "test": "test"}


def _check_folder_labels(
    local: Path, dsd: Mapping[str, Any], image_column: str, label_column: str
) -> None:
    """Refuse a local image folder that ``datasets``' imagefolder builder reads otherwise than
    the ``imagefolder`` source's layout (:func:`pipeline.sources.imagefolder.layout`): the builder
    takes the folder just above each image as its class (``<class>/<patient>/<image>`` gave one
    class per patient) and guesses splits from words in file names, silently. Datasets with
    labels not from folder names (no ClassLabel, or another builder) are not checked."""
    from datasets import ClassLabel
    from datasets import Image as ImageFeature

    from pipeline.sources import imagefolder

    theirs: dict[str, tuple[str, str]] = {}
    for hf_split, d in dsd.items():
        feature = d.features.get(label_column)
        if d.info.builder_name != "imagefolder" or not isinstance(feature, ClassLabel):
            return
        if image_column not in d.column_names:
            return  # refused next, naming the column
        items = d.cast_column(image_column, ImageFeature(decode=False))[image_column]
        for item, y in zip(items, d[label_column], strict=True):
            if item is not None and item.get("path") and y is not None:
                key = os.path.realpath(item["path"])
                name = unicodedata.normalize("NFC", feature.names[y])  # as the layout spells it
                theirs[key] = (_SPLIT_MAP.get(hf_split, hf_split), name)
    try:
        found = imagefolder.layout(local)
    except DataError as err:
        found, why = {}, str(err)
    else:
        why = ""
    ours = {
        os.path.realpath(p): (split, c)
        for split, by_class in found.items()
        for c, paths in by_class.items()
        for p in paths
    }
    if theirs == ours:
        return
    diff = sorted(
        set(theirs) ^ set(ours) | {k for k in theirs.keys() & ours.keys() if theirs[k] != ours[k]}
    )
    path = diff[0]
    got = "left out" if path not in theirs else "split {!r}, class {!r}".format(*theirs[path])
    want = "left out" if path not in ours else "split {!r}, class {!r}".format(*ours[path])
    raise DataError(
        f"image folder {local} (id of a huggingface source): datasets' imagefolder builder reads "
        f"{len(diff)} image(s) otherwise than the folder layout, e.g. {path}: {got}, by the layout "
        f"{want}{f' ({why})' if why else ''}; the builder takes the folder just above each image "
        "as its class and guesses splits from words in file names. Use kind: imagefolder with "
        f"path: {local} (class = the first folder below the path or its train/val/test folders)"
    )


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
    if local.is_dir() and not _is_saved_dataset(local):
        _check_folder_labels(local, dsd, source.image_column, source.label_column)
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
