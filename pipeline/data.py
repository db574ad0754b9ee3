"""Dataset sources: official MedMNIST ``.npz`` files, Hugging Face datasets and local image folders.

One entry point, :func:`load_dataset_images`, turns a ``data.sources`` entry into an
:class:`ImageDataset` with ``train``/``val``/``test`` splits. Images stay uint8 and grayscale images
stay 2-D; the backbone's preprocessing converts them to 3-channel float tensors. Splits are either
the source's official ones or carved from train (seeded, stratified; a missing test split and a
missing val split each take ``data.val_fraction`` of train); ``data.limit`` caps every split the
same way, keeping every class present. ``kind: embeddings`` (bring your own embeddings) is not an image source: the
extract stage reads such files itself.

Every problem raises :class:`DataError` with a message naming the bad value and how to fix it.
"""

from __future__ import annotations

import functools
import hashlib
import http.client
import importlib.util
import io
import logging
import urllib.error
import urllib.request
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from pipeline.artifacts import SPLITS, atomic_path
from pipeline.config import MEDMNIST_2D_FLAGS, MEDMNIST_SIZES, DataConfig, SourceConfig

log = logging.getLogger(__name__)

TASKS = ("multi-class", "binary-class", "multi-label", "ordinal-regression")
DOWNLOAD_TIMEOUT_S = 60.0
_CHUNK = 1 << 20


class DataError(ValueError):
    """A dataset source is missing, unreachable, corrupt or inconsistent with the parameters."""


# --------------------------------------------------------------------------------------------
# containers
# --------------------------------------------------------------------------------------------


class ImageReader(Protocol):
    """Lazily decodes the images of one split (e.g. from a Hugging Face dataset or a folder)."""

    def __len__(self) -> int: ...

    def read(self, indices: Sequence[int]) -> list[np.ndarray]:
        """uint8 images ``HxW`` or ``HxWxC`` for the given positions."""
        ...


class _SubsetReader:
    """``reader`` restricted to the positions ``rows`` (used by ``limit`` and carved splits)."""

    def __init__(self, reader: ImageReader, rows: np.ndarray) -> None:
        self.reader = reader
        self.rows = np.asarray(rows, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.rows)

    def read(self, indices: Sequence[int]) -> list[np.ndarray]:
        return self.reader.read([int(r) for r in self.rows[np.asarray(indices, dtype=np.int64)]])


@dataclass(frozen=True, eq=False)
class ImageSplit:
    """The images and labels of one split.

    ``labels`` are int64 ``[N]`` (single-label) or uint8 multi-hot ``[N, C]`` (multi-label).
    Images live either in ``images`` (uint8 ``[N, H, W]`` or ``[N, H, W, C]``, all one shape) or
    behind a lazy ``reader``; use :meth:`get_batch` for either, :meth:`as_array` for the fast path.
    """

    labels: np.ndarray
    images: np.ndarray | None = None
    reader: ImageReader | None = None

    def __post_init__(self) -> None:
        if (self.images is None) == (self.reader is None):
            raise ValueError("ImageSplit needs exactly one of images= or reader=")
        n = len(self.images) if self.images is not None else len(self.reader)
        if len(self.labels) != n:
            raise ValueError(f"ImageSplit: {len(self.labels)} labels for {n} images")
        if self.images is not None and self.images.dtype != np.uint8:
            raise ValueError(f"ImageSplit: images must be uint8, got {self.images.dtype}")

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def multilabel(self) -> bool:
        return self.labels.ndim == 2

    def as_array(self) -> np.ndarray | None:
        """All images as one uint8 array ``[N, H, W(, C)]``, or None when they are read lazily."""
        return self.images

    def get_batch(self, indices: Sequence[int] | np.ndarray) -> list[np.ndarray]:
        """The images at ``indices`` as a list of uint8 ``HxW`` / ``HxWxC`` arrays."""
        if self.images is not None:
            return list(self.images[np.asarray(indices, dtype=np.int64)])
        return self.reader.read([int(i) for i in indices])

    def subset(self, indices: Sequence[int] | np.ndarray) -> ImageSplit:
        """A new split holding the rows ``indices`` (in that order)."""
        idx = np.asarray(indices, dtype=np.int64)
        if self.images is not None:
            return ImageSplit(labels=self.labels[idx], images=self.images[idx])
        return ImageSplit(labels=self.labels[idx], reader=_SubsetReader(self.reader, idx))


@dataclass(frozen=True, eq=False)
class ImageDataset:
    """A labelled image dataset with ``train``, ``val`` and ``test`` splits."""

    name: str
    splits: Mapping[str, ImageSplit]
    task: str
    class_names: list[str]
    source_info: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if set(self.splits) != set(SPLITS):
            raise ValueError(
                f"ImageDataset {self.name!r}: splits must be {SPLITS}, got {sorted(self.splits)}"
            )
        if self.task not in TASKS:
            raise ValueError(
                f"ImageDataset {self.name!r}: task {self.task!r} is not one of {TASKS}"
            )

    @property
    def n_classes(self) -> int:
        return len(self.class_names)


# --------------------------------------------------------------------------------------------
# seeded, stratified sampling (shared with the extract stage's bring-your-own embeddings)
# --------------------------------------------------------------------------------------------


def strata_of(labels: np.ndarray) -> np.ndarray:
    """One stratum per sample: the class id, or for multi-hot rows the first positive label (-1: none)."""
    if labels.ndim == 1:
        return labels.astype(np.int64)
    pos = labels.astype(bool)
    return np.where(pos.any(axis=1), pos.argmax(axis=1), -1).astype(np.int64)


def _allocate(counts: np.ndarray, n: int, *, at_least_one: bool) -> np.ndarray:
    """Split ``n`` draws over strata proportionally to ``counts`` (largest remainder method)."""
    total = int(counts.sum())
    exact = counts * (n / total)
    quota = np.floor(exact).astype(np.int64)
    if at_least_one:
        quota = np.maximum(quota, 1)
    quota = np.minimum(quota, counts)
    remainder = exact - np.floor(exact)
    while quota.sum() < n:  # hand out the rest to the largest remainders with room left
        room = quota < counts
        pick = np.flatnonzero(room)[np.argmax(np.where(room, remainder, -1.0)[room])]
        quota[pick] += 1
        remainder[pick] = -0.5
    while quota.sum() > n:  # too many after the at-least-one bump: take from the biggest quotas
        floor = 1 if at_least_one else 0
        pick = int(np.argmax(np.where(quota > floor, quota, -1)))
        quota[pick] -= 1
    return quota


def stratified_sample(
    labels: np.ndarray, n: int, *, rng: np.random.Generator, at_least_one: bool = True
) -> np.ndarray:
    """Sorted positions of ``n`` samples drawn per stratum, proportionally to the stratum sizes.

    With ``at_least_one`` every stratum present keeps at least one sample (needs ``n`` >= strata).
    """
    strata = strata_of(labels)
    if n >= len(strata):
        return np.arange(len(strata))
    classes, inverse, counts = np.unique(strata, return_inverse=True, return_counts=True)
    quota = _allocate(counts, n, at_least_one=at_least_one and n >= len(classes))
    picked = [
        rng.choice(np.flatnonzero(inverse == c), size=int(q), replace=False)
        for c, q in enumerate(quota)
        if q
    ]
    return np.sort(np.concatenate(picked)) if picked else np.zeros(0, dtype=np.int64)


def carve(
    labels: np.ndarray, fraction: float, *, seed: int, what: str = "val"
) -> tuple[np.ndarray, np.ndarray]:
    """Split positions into (kept, carved) with ``round(fraction * N)`` carved, seeded and stratified."""
    n = len(labels)
    n_carved = round(fraction * n)
    if n_carved < 1 or n_carved >= n:
        raise DataError(
            f"cannot carve a {what} split of fraction {fraction} from {n} training samples; "
            f"provide a {what} split or more training data, or change data.val_fraction"
        )
    rng = np.random.default_rng([seed, _stable_id(what)])
    carved = stratified_sample(labels, n_carved, rng=rng, at_least_one=False)
    kept = np.setdiff1d(np.arange(n), carved, assume_unique=True)
    return kept, carved


def apply_limit(
    labels: Mapping[str, np.ndarray], limit: int | None, *, seed: int
) -> dict[str, np.ndarray]:
    """Positions kept in each split under ``data.limit`` (seeded, stratified, every class kept)."""
    out: dict[str, np.ndarray] = {}
    for split, y in labels.items():
        if limit is None or limit >= len(y):
            out[split] = np.arange(len(y))
            continue
        if y.ndim == 1:
            n_present = len(np.unique(y))
            if limit < n_present:
                raise DataError(
                    f"data.limit: {limit} is smaller than the {n_present} classes present in the "
                    f"{split!r} split, so a stratified subset cannot keep every class; "
                    f"set data.limit to at least {n_present} (or null for all samples)"
                )
        rng = np.random.default_rng([seed, _stable_id(f"limit:{split}")])
        out[split] = stratified_sample(y, limit, rng=rng, at_least_one=True)
    return out


def _stable_id(text: str) -> int:
    """A run-independent integer for ``text`` (Python's hash() is salted per process)."""
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:4], "little")


def _finish(
    name: str,
    splits: dict[str, ImageSplit],
    *,
    task: str,
    class_names: list[str],
    source_info: dict[str, str],
    data: DataConfig,
    seed: int,
) -> ImageDataset:
    """Carve missing val/test splits from train, apply ``data.limit`` and build the dataset."""
    if "train" not in splits:
        raise DataError(
            f"dataset {name!r}: the source has no train split ({sorted(splits)}); provide one"
        )
    for missing in ("test", "val"):
        if missing not in splits:
            kept, carved = carve(splits["train"].labels, data.val_fraction, seed=seed, what=missing)
            log.info(
                "%s: no %s split in the source; carved %d of %d train samples (seed %d, stratified)",
                name,
                missing,
                len(carved),
                len(kept) + len(carved),
                seed,
            )
            splits[missing] = splits["train"].subset(carved)
            splits["train"] = splits["train"].subset(kept)
    keep = apply_limit({s: splits[s].labels for s in SPLITS}, data.limit, seed=seed)
    if data.limit is not None:
        splits = {
            s: splits[s].subset(keep[s]) if len(keep[s]) < len(splits[s]) else splits[s]
            for s in SPLITS
        }
    for s in SPLITS:
        if len(splits[s]) == 0:
            raise DataError(f"dataset {name!r}: split {s!r} is empty; check the source")
    return ImageDataset(
        name=name,
        splits={s: splits[s] for s in SPLITS},
        task=task,
        class_names=class_names,
        source_info=source_info,
    )


# --------------------------------------------------------------------------------------------
# MedMNIST
# --------------------------------------------------------------------------------------------

_MD5_CACHE: dict[tuple[str, int, int], str] = {}


def medmnist_filename(flag: str, size: int) -> str:
    """medmnist's file name convention: ``{flag}.npz`` at 28 px, ``{flag}_{size}.npz`` otherwise."""
    return f"{flag}.npz" if size == 28 else f"{flag}_{size}.npz"


@functools.lru_cache(maxsize=1)
def _medmnist_info_table() -> dict[str, Any]:
    """``medmnist.info.INFO`` without executing ``medmnist/__init__`` (which imports pandas,
    scikit-learn and its torch datasets: ~6 s per process); falls back to the normal import."""
    spec = importlib.util.find_spec("medmnist")
    locations = list(spec.submodule_search_locations or []) if spec else []
    info_py = Path(locations[0]) / "info.py" if locations else None
    if info_py is not None and info_py.is_file():
        mod_spec = importlib.util.spec_from_file_location("_hashaudit_medmnist_info", info_py)
        if mod_spec is not None and mod_spec.loader is not None:
            module = importlib.util.module_from_spec(mod_spec)
            mod_spec.loader.exec_module(module)
            return module.INFO
    from medmnist.info import INFO

    return INFO


def medmnist_info(flag: str, size: int) -> dict[str, Any]:
    """url, md5, task, class names and split sizes of one MedMNIST file, from ``medmnist.info.INFO``."""
    INFO = _medmnist_info_table()

    if flag not in MEDMNIST_2D_FLAGS or flag not in INFO:
        raise DataError(
            f"{flag!r} is not a MedMNIST 2D dataset; use one of {', '.join(MEDMNIST_2D_FLAGS)}"
        )
    if size not in MEDMNIST_SIZES:
        raise DataError(f"MedMNIST size {size} does not exist; use one of {MEDMNIST_SIZES}")
    info = INFO[flag]
    suffix = "" if size == 28 else f"_{size}"
    url, md5 = info.get(f"url{suffix}"), info.get(f"MD5{suffix}")
    if not url or not md5:
        raise DataError(
            f"medmnist.info.INFO has no url/MD5 for {flag} at {size} px; upgrade medmnist"
        )
    task = "multi-label" if "multi-label" in info["task"] else info["task"]
    labels = info["label"]
    class_names = [labels[str(i)] for i in range(len(labels))]
    return {
        "url": url,
        "md5": md5,
        "task": task,
        "class_names": class_names,
        "n_samples": dict(info["n_samples"]),
    }


def file_md5(path: Path) -> str:
    """MD5 of ``path``, cached in memory by (path, size, mtime)."""
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _MD5_CACHE:
        h = hashlib.md5()
        with path.open("rb") as f:
            while chunk := f.read(_CHUNK):
                h.update(chunk)
        _MD5_CACHE[key] = h.hexdigest()
    return _MD5_CACHE[key]


def download_file(url: str, dest: Path, *, md5: str, timeout: float = DOWNLOAD_TIMEOUT_S) -> None:
    """Download ``url`` to ``dest`` atomically: a temporary file, an MD5 check, then a rename."""
    log.info("downloading %s -> %s", url, dest)
    try:
        with atomic_path(dest) as tmp:
            h = hashlib.md5()
            with urllib.request.urlopen(url, timeout=timeout) as resp, tmp.open("wb") as f:
                while chunk := resp.read(_CHUNK):
                    f.write(chunk)
                    h.update(chunk)
            if h.hexdigest() != md5:
                raise DataError(
                    f"download of {url} has MD5 {h.hexdigest()}, expected {md5}; the transfer was "
                    f"corrupted or the file changed upstream: retry, or download it manually into {dest.parent}"
                )
    except (urllib.error.URLError, http.client.HTTPException, OSError) as err:
        raise DataError(
            f"could not download {url} ({err}); check the network, or download the file manually "
            f"and place it at {dest} (data.root), then rerun"
        ) from err
    log.info("downloaded %s (%d bytes, md5 ok)", dest, dest.stat().st_size)


def ensure_medmnist_file(flag: str, size: int, *, root: str | Path, download: bool) -> Path:
    """Path of the verified official ``.npz`` (downloaded when missing and ``download`` is true)."""
    info = medmnist_info(flag, size)
    path = Path(root) / medmnist_filename(flag, size)
    if not path.is_file():
        if not download:
            raise DataError(
                f"MedMNIST file {path} not found (looked in data.root={root!s}); set data.download: true "
                f"to fetch it, or place the official file there (from {info['url']})"
            )
        download_file(info["url"], path, md5=info["md5"])
    actual = file_md5(path)
    if actual != info["md5"]:
        kind = (
            ""
            if zipfile.is_zipfile(path)
            else " (it is not a valid .npz archive: truncated or corrupt)"
        )
        raise DataError(
            f"MedMNIST file {path} has MD5 {actual}, expected {info['md5']}{kind}; delete it and "
            f"re-download it (data.download: true) or copy the official file from {info['url']}"
        )
    return path


def _medmnist_labels(raw: np.ndarray, *, task: str, n_classes: int, where: str) -> np.ndarray:
    if task == "multi-label":
        if raw.ndim != 2 or raw.shape[1] != n_classes:
            raise DataError(f"{where}: expected multi-hot labels [N, {n_classes}], got {raw.shape}")
        return (raw != 0).astype(np.uint8)
    y = raw.reshape(len(raw), -1)
    if y.shape[1] != 1:
        raise DataError(f"{where}: expected one label per image, got shape {raw.shape}")
    y = y[:, 0].astype(np.int64)
    if y.size and (y.min() < 0 or y.max() >= n_classes):
        raise DataError(f"{where}: labels outside [0, {n_classes}) (min {y.min()}, max {y.max()})")
    return y


def load_medmnist(name: str, source: SourceConfig, data: DataConfig, *, seed: int) -> ImageDataset:
    """An official MedMNIST 2D dataset, with its official splits.

    The arrays are read into memory: the 224 px files of the large flags (e.g. pathmnist_224) need
    tens of GB of RAM (``data.limit`` subsets after loading, so it does not lower the peak).
    """
    flag = source.flag or name
    info = medmnist_info(flag, source.size)
    path = ensure_medmnist_file(flag, source.size, root=data.root, download=data.download)
    splits: dict[str, ImageSplit] = {}
    try:
        with np.load(path, allow_pickle=False) as z:
            missing = [
                f"{s}_{k}"
                for s in SPLITS
                for k in ("images", "labels")
                if f"{s}_{k}" not in z.files
            ]
            if missing:
                raise DataError(
                    f"{path}: missing arrays {missing}; delete the file and re-download it"
                )
            for s in SPLITS:
                images = z[f"{s}_images"]
                where = f"{path} [{s}]"
                if images.dtype != np.uint8 or images.ndim not in (3, 4):
                    raise DataError(
                        f"{where}: expected uint8 images [N, H, W(, C)], got {images.dtype} {images.shape}"
                    )
                labels = _medmnist_labels(
                    z[f"{s}_labels"],
                    task=info["task"],
                    n_classes=len(info["class_names"]),
                    where=where,
                )
                if len(labels) != len(images):
                    raise DataError(
                        f"{where}: {len(labels)} labels for {len(images)} images; re-download the file"
                    )
                splits[s] = ImageSplit(labels=labels, images=images)
    except DataError:
        raise
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as err:
        raise DataError(
            f"{path}: not a readable .npz file ({err}); delete it and re-download it"
        ) from err
    source_info = {
        "source": "medmnist",
        "medmnist_flag": flag,
        "medmnist_size": str(source.size),
        "md5": info["md5"],
        "url": info["url"],
    }
    return _finish(
        name,
        splits,
        task=info["task"],
        class_names=info["class_names"],
        source_info=source_info,
        data=data,
        seed=seed,
    )


# --------------------------------------------------------------------------------------------
# Hugging Face datasets and image folders
# --------------------------------------------------------------------------------------------


def decode_image(data: bytes | None, path: str | None, *, where: str) -> np.ndarray:
    """Decode one image file to uint8 ``HxW`` (grayscale) or ``HxWx3`` (everything else)."""
    from PIL import Image, UnidentifiedImageError

    label = path or where
    try:
        with Image.open(io.BytesIO(data) if data is not None else path) as img:
            img.load()
            if img.mode in ("I", "I;16", "I;16B", "I;16L", "F"):  # high bit depth: min-max to 8 bit
                arr = np.asarray(img, dtype=np.float64)
                lo, hi = float(arr.min()), float(arr.max())
                return np.round((arr - lo) / (hi - lo or 1.0) * 255).astype(np.uint8)
            if img.mode not in ("L", "RGB"):
                img = img.convert("L" if img.mode in ("1", "LA") else "RGB")
            return np.asarray(img, dtype=np.uint8).copy()
    except (OSError, UnidentifiedImageError, ValueError, SyntaxError) as err:
        raise DataError(
            f"cannot read image {label}: {err}; replace or remove the corrupt file"
        ) from err


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


def _class_names(
    dsd: Mapping[str, Any], label_column: str, *, where: str
) -> tuple[list[str], bool]:
    """Class names from the label column's ClassLabel feature (else ``0..C-1``), and whether named."""
    from datasets import ClassLabel, Value

    feature = next(iter(dsd.values())).features.get(label_column)
    if isinstance(feature, ClassLabel):
        return list(feature.names), True
    if isinstance(feature, Value) and feature.dtype.startswith(("int", "uint")):
        top = max(int(max(d[label_column], default=-1)) for d in dsd.values())
        return [str(i) for i in range(top + 1)], False
    raise DataError(
        f"{where}: label column {label_column!r} has type {feature}; hashaudit needs integer class ids "
        f"(a ClassLabel or an integer column); set label_column to such a column"
    )


def _from_dataset_dict(
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
    """Shared by ``huggingface`` and ``imagefolder`` sources: map splits, check columns, wrap readers."""
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
    class_names, _ = _class_names(chosen, label_column, where=where)
    splits: dict[str, ImageSplit] = {}
    for s, ds in chosen.items():
        labels = np.asarray(ds[label_column], dtype=np.int64)
        if labels.size and (labels.min() < 0 or labels.max() >= len(class_names)):
            raise DataError(
                f"{where}: split {s!r} has labels outside [0, {len(class_names)}) (min {labels.min()}); "
                "unlabelled rows (-1) are not supported: use a labelled split"
            )
        splits[s] = ImageSplit(
            labels=labels, reader=_HFImageReader(ds, image_column, where=f"{where} [{s}]")
        )
    task = "binary-class" if len(class_names) == 2 else "multi-class"
    return _finish(
        name,
        splits,
        task=task,
        class_names=class_names,
        source_info=source_info,
        data=data,
        seed=seed,
    )


def _is_saved_dataset(path: Path) -> bool:
    return (path / "dataset_dict.json").is_file() or (path / "state.json").is_file()


def load_huggingface(
    name: str, source: SourceConfig, data: DataConfig, *, seed: int
) -> ImageDataset:
    """A Hugging Face dataset: a hub id (cached or online), a ``save_to_disk`` dir or a local data dir."""
    import datasets

    ds_id = str(source.id)
    local = Path(ds_id).expanduser()
    try:
        if local.is_dir() and _is_saved_dataset(local):
            dsd = datasets.load_from_disk(str(local))
            info = {"source": "huggingface", "hf_path": str(local.resolve())}
        else:
            dsd = datasets.load_dataset(ds_id)
            info = {"source": "huggingface", "hf_id": ds_id}
    except (OSError, ConnectionError, ValueError) as err:
        raise DataError(
            f"Hugging Face dataset {ds_id!r} is not available ({type(err).__name__}: {err}); run once with "
            "network access to cache it (HF_DATASETS_OFFLINE=1 then reuses the cache), or point id at a "
            "local directory written by DatasetDict.save_to_disk, or use kind: imagefolder for local images"
        ) from err
    if isinstance(dsd, datasets.Dataset):
        dsd = datasets.DatasetDict({"train": dsd})
    return _from_dataset_dict(
        name,
        dsd,
        image_column=source.image_column,
        label_column=source.label_column,
        where=f"dataset {ds_id}",
        source_info=info,
        data=data,
        seed=seed,
    )


_LAYOUT = (
    "expected <path>/<class>/<image> (splits carved from it) or <path>/train/<class>/<image> with "
    "optional val/ and test/ folders of the same form"
)


def load_imagefolder(
    name: str, source: SourceConfig, data: DataConfig, *, seed: int
) -> ImageDataset:
    """Images in class sub-folders, read through ``datasets``' imagefolder builder."""
    import datasets

    root = Path(str(source.path)).expanduser()
    if not root.is_dir():
        raise DataError(f"image folder {root} does not exist; set path to a folder ({_LAYOUT})")
    try:
        dsd = datasets.load_dataset("imagefolder", data_dir=str(root))
    except (OSError, ValueError) as err:
        raise DataError(
            f"image folder {root}: no images found or unreadable layout ({err}); {_LAYOUT}"
        ) from err
    first = next(iter(dsd.values()))
    if "label" not in first.column_names:
        raise DataError(f"image folder {root}: images are not in class sub-folders; {_LAYOUT}")
    return _from_dataset_dict(
        name,
        dsd,
        image_column="image",
        label_column="label",
        where=f"image folder {root}",
        source_info={"source": "imagefolder", "imagefolder_path": str(root.resolve())},
        data=data,
        seed=seed,
    )


# --------------------------------------------------------------------------------------------
# entry point
# --------------------------------------------------------------------------------------------


def load_dataset_images(
    name: str, source: SourceConfig, data: DataConfig, *, seed: int
) -> ImageDataset:
    """Load dataset ``name`` from ``source`` with train/val/test splits, ``data.limit`` applied."""
    if source.kind == "medmnist":
        ds = load_medmnist(name, source, data, seed=seed)
    elif source.kind == "huggingface":
        ds = load_huggingface(name, source, data, seed=seed)
    elif source.kind == "imagefolder":
        ds = load_imagefolder(name, source, data, seed=seed)
    elif source.kind == "embeddings":
        raise DataError(
            f"dataset {name!r} is a bring-your-own embeddings source (kind: embeddings); it has no images"
        )
    else:  # pragma: no cover - config.py restricts kind
        raise DataError(f"dataset {name!r}: unknown source kind {source.kind!r}")
    log.info(
        "%s: %s, %d classes, train/val/test = %s",
        name,
        ds.task,
        ds.n_classes,
        "/".join(str(len(ds.splits[s])) for s in SPLITS),
    )
    return ds
