"""Source ``medmnist``: the official MedMNIST 2D ``.npz`` files, with their official splits.

Files are looked up in ``data.root`` (``~`` expanded; ``{flag}.npz`` at 28 px, ``{flag}_{size}.npz``
otherwise), downloaded when missing and ``data.download`` is true (atomically, MD5-checked against
``medmnist.info.INFO``), and always MD5-verified before use. Yang et al., "MedMNIST v2", Scientific
Data 2023.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import http.client
import importlib.util
import logging
import urllib.error
import urllib.request
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.artifacts import SPLITS, atomic_path
from pipeline.config import DataConfig, ParamsError, SourceConfig, check
from pipeline.data import DataError, ImageDataset, ImageSplit, image_dataset, normalize_labels

log = logging.getLogger(__name__)

YIELDS = "images"
MEDMNIST_2D_FLAGS = (
    "pathmnist",
    "chestmnist",
    "dermamnist",
    "octmnist",
    "pneumoniamnist",
    "retinamnist",
    "breastmnist",
    "bloodmnist",
    "tissuemnist",
    "organamnist",
    "organcmnist",
    "organsmnist",
)
MEDMNIST_SIZES = (28, 64, 128, 224)
DOWNLOAD_TIMEOUT_S = 60.0
_CHUNK = 1 << 20


KEYS = ("flag", "size")  # the params keys this kind reads (pipeline.sources.check_config)


def check_config(source: SourceConfig) -> None:
    """``size`` is a MedMNIST size; ``flag``, when given, a MedMNIST 2D flag."""
    check(
        source.size in MEDMNIST_SIZES,
        "size",
        f"{source.size} is not a MedMNIST size; use one of {MEDMNIST_SIZES}",
    )
    if source.flag is not None:
        check(
            source.flag in MEDMNIST_2D_FLAGS,
            "flag",
            f"{source.flag!r} is not a MedMNIST 2D dataset; use one of {', '.join(MEDMNIST_2D_FLAGS)}",
        )


def resolve(name: str, source: SourceConfig) -> SourceConfig:
    """The flag defaults to the dataset's name, which must then be a MedMNIST flag."""
    if source.flag is not None:
        return source
    if name not in MEDMNIST_2D_FLAGS:
        raise ParamsError(
            f"data.sources.{name}.flag: {name!r} is not a MedMNIST flag; set flag to one of "
            f"{', '.join(MEDMNIST_2D_FLAGS)}"
        )
    return dataclasses.replace(source, flag=name)


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
    """url, md5, task (as medmnist declares it), whether multi-label, class names and split sizes of one
    MedMNIST file, from ``medmnist.info.INFO``."""
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
    labels = info["label"]
    class_names = [labels[str(i)] for i in range(len(labels))]
    return {
        "url": url,
        "md5": md5,
        "task": info["task"],
        "multilabel": "multi-label" in info["task"],
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
    """Download ``url`` to ``dest`` atomically: a temporary file, an MD5 check, then a rename.

    The file is a cached input, not a stage output: it lands at once even inside an
    :func:`~pipeline.artifacts.atomic_outputs` block (the extract stage's), which reads it next.
    """
    log.info("downloading %s -> %s", url, dest)
    try:
        with atomic_path(dest, stage=False) as tmp:
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
    path = Path(root).expanduser() / medmnist_filename(flag, size)  # data.root may be ~/...
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


def load(name: str, source: SourceConfig, data: DataConfig, *, seed: int) -> ImageDataset:
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
                labels = normalize_labels(
                    z[f"{s}_labels"],
                    multilabel=info["multilabel"],
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
    return image_dataset(
        name,
        splits,
        class_names=info["class_names"],
        source_info=source_info,
        data=data,
        seed=seed,
        declared_task=info["task"],
    )
