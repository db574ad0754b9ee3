"""Source ``imagefolder``: local images in class sub-folders (``<path>/<class>/<image>``, or
``<path>/train|val|test/<class>/<image>``), read through ``datasets``' imagefolder builder."""

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


def load(name: str, source: SourceConfig, data: DataConfig, *, seed: int) -> ImageDataset:
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
