"""Source ``imagefolder``: local images in class sub-folders (``<path>/<class>/<image>``, or
``<path>/train|val|test/<class>/<image>``).

hashaudit reads the layout itself: split folders are recognised by name at the top level only
(``train``/``training``, ``val``/``valid``/``validation``, ``test``/``testing``, any case); the
class of an image is the first folder below its split root, whatever lies deeper
(``<class>/<patient>/<image>`` keeps the class); file names never matter. Images are the files
with an image extension; other files (``metadata.csv``, ``.DS_Store``) are ignored. ``datasets``'
own imagefolder builder guessed splits from words in any folder or file name (``train 3.png``)
and took the folder just above each image as its class, which silently dropped or merged images.
"""

from __future__ import annotations

from pathlib import Path

from pipeline.config import DataConfig, SourceConfig, check
from pipeline.data import DataError, ImageDataset
from pipeline.sources.huggingface import from_dataset_dict

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


def _images(folder: Path) -> list[Path]:
    return sorted(
        p
        for p in folder.rglob("*")
        if p.is_file()
        and p.suffix.lower() in IMAGE_SUFFIXES
        and not any(part.startswith(".") for part in p.relative_to(folder).parts)
    )


def layout(root: Path) -> dict[str, dict[str, list[Path]]]:
    """``{split: {class: [image paths]}}`` of an image folder (see the module docstring)."""
    tops = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
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
    out: dict[str, dict[str, list[Path]]] = {}
    for split, folder in split_roots.items():
        loose = [
            p.name for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
        ]
        if loose:
            raise DataError(
                f"image folder {folder}: images not in class sub-folders (e.g. {loose[0]}); {_LAYOUT}"
            )
        classes = sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
        out[split] = {c.name: found for c in classes if (found := _images(c))}
        if not out[split]:
            raise DataError(f"image folder {folder}: no images in class sub-folders; {_LAYOUT}")
    return out


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
