"""The ``source`` stage's folder digest leaves out the hidden files and folders that no reader of
the folder reads (``.DS_Store``, ``.ipynb_checkpoints/``), so they re-run nothing."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from pipeline import source_stamp
from pipeline.config import SourceConfig
from tests.pipeline.sources.source_helpers import data_config, load


def _folder(root: Path) -> Path:
    for c, v in [("a", v) for v in range(0, 100, 10)] + [("b", v) for v in range(150, 250, 10)]:
        (root / c).mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((4, 4), v, dtype=np.uint8)).save(root / c / f"{v}.png")
    return root


def test_hidden_files_change_neither_the_images_read_nor_the_digest(tmp_path: Path) -> None:
    root = _folder(tmp_path / "imgs")
    before = source_stamp.digest_path(root)
    assert before["files"] == 20 and before["bytes"] == sum(
        p.stat().st_size for p in root.rglob("*.png")
    )
    # what macOS Finder and Jupyter write into a folder that is only looked at
    (root / ".DS_Store").write_bytes(b"\0" * 6148)
    (root / "a" / ".DS_Store").write_bytes(b"\1" * 10)
    (root / "a" / ".ipynb_checkpoints").mkdir()
    Image.fromarray(np.zeros((4, 4), dtype=np.uint8)).save(
        root / "a" / ".ipynb_checkpoints" / "x.png"
    )
    Image.fromarray(np.zeros((4, 4), dtype=np.uint8)).save(root / "b" / "._0.png")  # AppleDouble
    # the imagefolder source reads the same 20 images (val and test carved from them)
    ds = load("mine", data_config(tmp_path, mine=SourceConfig(kind="imagefolder", path=str(root))))
    assert sum(len(ds.splits[s]) for s in ("train", "val", "test")) == 20
    after = source_stamp.digest_path(root)
    assert after == before  # was a new listing_sha256 and files 24: extract re-ran for nothing
    Image.fromarray(np.full((5, 4), 7, dtype=np.uint8)).save(root / "a" / "0.png")
    assert source_stamp.digest_path(root)["listing_sha256"] != before["listing_sha256"]
