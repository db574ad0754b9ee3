"""Source ``imagefolder``: local images in class sub-folders (``<path>/<class>/<image>``, or
``<path>/train|val|test/<class>/<image>``).

hashaudit reads the layout itself: split folders are recognised by name at the top level only
(``train``/``training``, ``val``/``valid``/``validation``, ``test``/``testing``, any case); the
class of an image is the first folder below its split root, whatever lies deeper
(``<class>/<patient>/<image>`` keeps the class); file names never matter. Images are the files
with an image extension; other files (``metadata.csv``, ``.DS_Store``) are ignored. ``datasets``'
own imagefolder builder guessed splits from words in any folder or file name (``train 3.png``)
and took the folder just above each image as its class, which silently dropped or merged images.

Symbolic links to folders are followed (each real folder read once, see
:func:`pipeline.data.walk_files`); a broken link to an image, a class folder or a split folder is
refused, and so is an image file reached twice (one record in two classes or on both sides of a
split). Class names are the folder names in Unicode NFC, so ``dög`` written precomposed (NFC,
as Linux tools write it) and decomposed (NFD, as macOS wrote it) is one class. A class folder
without a single image file is left out with a warning naming the extensions it holds.
"""

from __future__ import annotations

import logging
import os
import unicodedata
from collections import Counter
from collections.abc import Mapping
from pathlib import Path

from pipeline.config import DataConfig, SourceConfig, check
from pipeline.data import DataError, ImageDataset, broken_link_error, walk_files
from pipeline.sources.huggingface import from_dataset_dict

log = logging.getLogger(__name__)

YIELDS = "images"


KEYS = ("path",)  # the params keys this kind reads (pipeline.sources.check_config)


def check_config(source: SourceConfig) -> None:
    check(bool(source.path), "path", "an imagefolder source needs path: <folder>")


_LAYOUT = (
    "expected <path>/<class>/<image> (splits carved from it) or <path>/train/<class>/<image> with "
    "optional val/ and test/ folders of the same form"
)


def inputs(name: str, source: SourceConfig, data: DataConfig) -> list[Path]:
    """The image folder (its listing is digested by the ``source`` stage)."""
    return [Path(str(source.path)).expanduser()]


IMAGE_SUFFIXES = frozenset(
    {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}
)
SPLIT_FOLDERS = {
    "train": "train",
    "training": "train",
    "val": "val",
    "valid": "val",
    "validation": "val",
    "test": "test",
    "testing": "test",
}


def _suffixes(counts: Counter[str]) -> str:
    """``.dcm (12), .jfif (3)``: the extensions seen, commonest first."""
    return ", ".join(f"{suffix} ({n})" for suffix, n in counts.most_common())


_ACCEPTED = ", ".join(sorted(IMAGE_SUFFIXES))


def _images(folder: Path) -> tuple[list[Path], Counter[str]]:
    """The image files below one class folder (hidden files and folders left out; a broken link
    to an image refused), and the extensions of its other files with their counts."""
    images: list[Path] = []
    others: Counter[str] = Counter()
    for p in walk_files(folder, skip_hidden=True):
        suffix = p.suffix.lower()
        if suffix not in IMAGE_SUFFIXES:
            others[suffix or "(no extension)"] += 1
        elif not p.exists():
            raise broken_link_error(p, "an image")
        else:
            images.append(p)
    return images, others


def _entries(folder: Path) -> list[Path]:
    """The entries of ``folder`` not hidden, sorted; a broken symbolic link among them is refused
    (it would hide a whole split or class folder)."""
    out = sorted(p for p in folder.iterdir() if not p.name.startswith("."))
    for p in out:
        if p.is_symlink() and not p.exists():
            raise broken_link_error(p, "a split folder, a class folder or an image")
    return out


def layout(root: Path) -> dict[str, dict[str, list[Path]]]:
    """``{split: {class: [image paths]}}`` of an image folder (see the module docstring)."""
    tops = [p for p in _entries(root) if p.is_dir()]
    split_dirs = [p for p in tops if p.name.lower() in SPLIT_FOLDERS]
    if not split_dirs:
        split_roots = {"train": root}
    else:
        others = [p.name for p in tops if p.name.lower() not in SPLIT_FOLDERS]
        if others:
            raise DataError(
                f"image folder {root}: split folders {[p.name for p in split_dirs]} beside other "
                f"folders {others}; put every class inside the split folders ({_LAYOUT})"
            )
        split_roots = {}
        for p in split_dirs:
            ours = SPLIT_FOLDERS[p.name.lower()]
            if ours in split_roots:
                raise DataError(
                    f"image folder {root}: {split_roots[ours].name}/ and {p.name}/ are both the "
                    f"{ours} split; keep one"
                )
            split_roots[ours] = p
        if "train" not in split_roots:
            raise DataError(f"image folder {root}: no train/ folder beside {sorted(split_roots)}")
        loose = [
            p.name for p in _entries(root) if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
        ]
        if loose:  # beside split folders they belong to no split: they were skipped silently
            raise DataError(
                f"image folder {root}: images beside the split folders (e.g. {loose[0]}) belong to "
                f"no split; move them into a class folder of a split ({_LAYOUT})"
            )
    out: dict[str, dict[str, list[Path]]] = {}
    for split, folder in split_roots.items():
        entries = _entries(folder)
        loose = [p.name for p in entries if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES]
        if loose:
            raise DataError(
                f"image folder {folder}: images not in class sub-folders (e.g. {loose[0]}); {_LAYOUT}"
            )
        by_class: dict[str, list[Path]] = {}
        spelt: dict[str, str] = {}
        seen: Counter[str] = Counter()
        for c in (p for p in entries if p.is_dir()):
            images, others = _images(c)
            seen.update(others)
            if not images:
                log.warning(
                    "image folder %s: class folder %r holds no image file, so the class is left "
                    "out (%s); images are files ending in %s (any case)%s",
                    folder,
                    c.name,
                    f"its files: {_suffixes(others)}" if others else "it holds no files",
                    _ACCEPTED,
                    ": convert the files (e.g. to PNG) to keep the class" if others else "",
                )
                continue
            if others:
                log.warning(
                    "image folder %s: class folder %r: %d file(s) that are not images are "
                    "ignored (%s); images are files ending in %s",
                    folder,
                    c.name,
                    sum(others.values()),
                    _suffixes(others),
                    _ACCEPTED,
                )
            name = unicodedata.normalize("NFC", c.name)
            if name in by_class:
                log.warning(
                    "image folder %s: class folders %s and %s differ only in their Unicode "
                    "normalisation (NFC/NFD); read as one class %r",
                    folder,
                    ascii(spelt[name]),
                    ascii(c.name),
                    name,
                )
                by_class[name] = sorted(by_class[name] + images)
            else:
                by_class[name], spelt[name] = images, c.name
        if not by_class:
            found = f"the files found end in {_suffixes(seen)}" if seen else "no files found"
            fix = "convert the files to one of these formats" if seen else "add images"
            raise DataError(
                f"image folder {folder}: no images in class sub-folders ({found}); images are "
                f"files ending in {_ACCEPTED} (any case): {fix}; {_LAYOUT}"
            )
        out[split] = {c: by_class[c] for c in sorted(by_class)}
    _check_each_file_once(root, out)
    return out


def _check_each_file_once(root: Path, found: Mapping[str, Mapping[str, list[Path]]]) -> None:
    """Refuse a real file read twice (through a symbolic link to a file, or to another class or
    split folder): one image would be two records, in two classes or on both sides of a split."""
    first: dict[str, tuple[str, str, Path]] = {}
    for split, by_class in found.items():
        for c, paths in by_class.items():
            for p in paths:
                real = os.path.realpath(p)
                if real in first:
                    s0, c0, p0 = first[real]
                    raise DataError(
                        f"image folder {root}: {p0} (split {s0!r}, class {c0!r}) and {p} (split "
                        f"{split!r}, class {c!r}) are one file, {real}; each image must be read "
                        "once: remove the symbolic link that reaches it a second time"
                    )
                first[real] = (split, c, p)


def load(name: str, source: SourceConfig, data: DataConfig, *, seed: int) -> ImageDataset:
    """Images in class sub-folders, the layout read by :func:`layout`."""
    import datasets

    root = Path(str(source.path)).expanduser()
    if not root.is_dir():
        raise DataError(f"image folder {root} does not exist; set path to a folder ({_LAYOUT})")
    found = layout(root)
    classes = sorted({c for by_class in found.values() for c in by_class})
    features = datasets.Features(
        {"image": datasets.Image(decode=False), "label": datasets.ClassLabel(names=classes)}
    )
    dsd = {}
    for split, by_class in found.items():
        rows = [(str(path), classes.index(c)) for c, paths in by_class.items() for path in paths]
        dsd[split] = datasets.Dataset.from_dict(
            {"image": [r[0] for r in rows], "label": [r[1] for r in rows]}, features=features
        )
    return from_dataset_dict(
        name,
        dsd,
        image_column="image",
        label_column="label",
        where=f"image folder {root}",
        source_info={"source": "imagefolder", "imagefolder_path": str(root.resolve())},
        data=data,
        seed=seed,
    )
