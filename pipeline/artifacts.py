"""The one place that reads and writes every on-disk format of hashaudit.

Every write is atomic (a temporary file in the destination folder, then ``os.replace``), so a crash
or a bad input never leaves a half-written result where a later stage would trust it.

Formats
-------
Embeddings (``<dataset>.safetensors``)
    tensors ``{split}_x`` float32 ``[N, D]`` and ``{split}_y`` for split in train/val/test; labels are
    int64 ``[N]`` for single-label tasks and uint8 multi-hot ``[N, C]`` for multi-label ones.
    String metadata: ``format``, ``dataset``, ``task``, ``n_classes``, ``class_names`` (JSON list),
    ``backbone``, ``revision``, ``image_size``, ``resize``, ``pooling``, ``dtype``, ``dim``.
    Users may bring their own file in this layout, or an ``.npz`` with the same keys.
Head (``<dir>/head.safetensors`` + ``<dir>/config.json``)
    the method's state dict and the fully resolved configuration. No pickle anywhere.
Codes (``codes.safetensors``)
    packed uint8 bits per split (``train``, ``val``, ``test``; little bit order, padded to whole
    bytes) with the true ``n_bits`` in the metadata.
Metrics: flat JSON; plot data: CSV.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import math
import os
import tempfile
import zipfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from safetensors import SafetensorError
from safetensors.numpy import load_file as np_load_file
from safetensors.numpy import save as np_save_bytes
from safetensors.torch import load_file as torch_load_file
from safetensors.torch import save as torch_save_bytes

EMBEDDINGS_FORMAT = "hashaudit.embeddings/1"
CODES_FORMAT = "hashaudit.codes/1"
SPLITS = ("train", "val", "test")
TASKS = ("multi-class", "binary-class", "multi-label", "ordinal-regression")
_UMASK = os.umask(0)
os.umask(_UMASK)


class ArtifactError(ValueError):
    """An input file is missing, malformed, or does not match what the stage expects."""


# --------------------------------------------------------------------------------------------
# atomic writes
# --------------------------------------------------------------------------------------------


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it replaces ``path`` in one step."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.chmod(tmp_path, 0o666 & ~_UMASK)  # mkstemp creates 0600; give the usual permissions
        os.replace(tmp_path, path)
    finally:
        tmp_path.unlink(missing_ok=True)


def write_bytes(path: str | Path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_text(path: str | Path, text: str) -> None:
    write_bytes(path, text.encode("utf-8"))


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def write_json(path: str | Path, obj: Any) -> None:
    """Atomically write ``obj`` as pretty JSON; NaN/inf are refused (they are not valid JSON)."""
    write_text(
        path,
        json.dumps(obj, indent=2, sort_keys=True, default=_json_default, allow_nan=False) + "\n",
    )


def read_json(path: str | Path) -> Any:
    path = Path(path)
    if not path.is_file():
        raise ArtifactError(
            f"{path}: file not found; run the stage that writes it first (dvc repro)"
        )
    return json.loads(path.read_text())


def write_csv(path: str | Path, rows: Sequence[Mapping[str, Any]]) -> None:
    """Atomically write ``rows`` (dicts with the same keys) as CSV with a header."""
    if not rows:
        raise ValueError(f"{path}: refusing to write an empty CSV")
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    write_text(path, buf.getvalue())


# --------------------------------------------------------------------------------------------
# embeddings
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Embeddings:
    """Per-split embeddings and labels of one dataset, with provenance metadata."""

    x: Mapping[str, np.ndarray]
    y: Mapping[str, np.ndarray]
    meta: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        validate_embeddings(self.x, self.y, where=self.meta.get("dataset", "embeddings"))

    @property
    def dim(self) -> int:
        return int(self.x["train"].shape[1])

    @property
    def multilabel(self) -> bool:
        return self.y["train"].ndim == 2

    @property
    def n_classes(self) -> int:
        if "n_classes" in self.meta:
            return int(self.meta["n_classes"])
        if self.multilabel:
            return int(self.y["train"].shape[1])
        return int(max(int(v.max()) for v in self.y.values() if v.size) + 1)

    @property
    def backbone(self) -> str:
        return self.meta.get("backbone", "unknown")

    def multihot(self, split: str) -> np.ndarray:
        """Labels of ``split`` as float32 multi-hot ``[N, C]`` (one path for single/multi-label)."""
        y = self.y[split]
        if self.multilabel:
            return y.astype(np.float32)
        out = np.zeros((len(y), self.n_classes), dtype=np.float32)
        out[np.arange(len(y)), y] = 1.0
        return out


def validate_embeddings(
    x: Mapping[str, np.ndarray], y: Mapping[str, np.ndarray], *, where: str
) -> None:
    """Check shapes, label layout and finiteness; raise ArtifactError naming the bad split."""
    missing = [f"{s}_{k}" for s in SPLITS for k, d in (("x", x), ("y", y)) if s not in d]
    if missing:
        raise ArtifactError(
            f"{where}: missing {', '.join(missing)}; an embeddings file needs "
            f"{', '.join(f'{s}_x, {s}_y' for s in SPLITS)} (val may be omitted in a user file)"
        )
    dim = None
    for s in SPLITS:
        xs, ys = x[s], y[s]
        if xs.ndim != 2:
            raise ArtifactError(f"{where}: {s}_x must be a 2-D [N, D] matrix, got shape {xs.shape}")
        if not np.issubdtype(xs.dtype, np.floating):
            raise ArtifactError(f"{where}: {s}_x must hold floats, got {xs.dtype}")
        if dim is None:
            dim = xs.shape[1]
        elif xs.shape[1] != dim:
            raise ArtifactError(f"{where}: {s}_x has dimension {xs.shape[1]} but train_x has {dim}")
        if ys.shape[0] != xs.shape[0]:
            raise ArtifactError(
                f"{where}: {s}_y has {ys.shape[0]} labels for {xs.shape[0]} embeddings"
            )
        if ys.ndim not in (1, 2) or (
            not np.issubdtype(ys.dtype, np.integer) and ys.dtype != np.bool_
        ):
            raise ArtifactError(
                f"{where}: {s}_y must be integer class ids [N] or a 0/1 multi-hot matrix [N, C], "
                f"got {ys.dtype} {ys.shape}"
            )
        if ys.ndim == 1 and ys.size and ys.min() < 0:
            raise ArtifactError(f"{where}: {s}_y has negative class id {int(ys.min())}")
        if xs.shape[0] == 0:
            raise ArtifactError(f"{where}: split {s!r} is empty")
        bad = ~np.isfinite(xs)
        if bad.any():
            row = int(np.argwhere(bad)[0][0])
            raise ArtifactError(
                f"{where}: {s}_x holds {int(bad.sum())} NaN/inf values (first in row {row}); "
                "re-extract the embeddings or drop those rows"
            )
    if len({y[s].ndim for s in SPLITS}) != 1:
        raise ArtifactError(f"{where}: label layout differs between splits (mix of [N] and [N, C])")


def save_embeddings(path: str | Path, emb: Embeddings) -> None:
    tensors: dict[str, np.ndarray] = {}
    for s in SPLITS:
        tensors[f"{s}_x"] = np.ascontiguousarray(emb.x[s], dtype=np.float32)
        y = emb.y[s]
        tensors[f"{s}_y"] = np.ascontiguousarray(y.astype(np.uint8 if y.ndim == 2 else np.int64))
    meta = {"format": EMBEDDINGS_FORMAT, "dim": str(emb.dim), "n_classes": str(emb.n_classes)}
    meta.update({k: str(v) for k, v in emb.meta.items()})
    meta["format"] = EMBEDDINGS_FORMAT
    write_bytes(path, np_save_bytes(tensors, metadata=meta))


def _read_safetensors_numpy(path: Path) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    from safetensors import safe_open

    try:
        tensors = np_load_file(str(path))
        with safe_open(str(path), framework="numpy") as f:
            meta = dict(f.metadata() or {})
    except (SafetensorError, OSError, ValueError) as err:
        raise ArtifactError(
            f"{path}: not a readable safetensors file ({err}); re-create it"
        ) from err
    return tensors, meta


def _read_npz(path: Path) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    try:
        with np.load(path, allow_pickle=False) as z:
            tensors = {k: z[k] for k in z.files}
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as err:
        raise ArtifactError(
            f"{path}: not a readable .npz file ({err}); it may be truncated, re-create it"
        ) from err
    meta = {}
    if "meta" in tensors:  # optional JSON string array
        meta = json.loads(str(tensors.pop("meta")))
    return tensors, {k: str(v) for k, v in meta.items()}


def read_embeddings_raw(
    path: str | Path,
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], dict[str, str]]:
    """Read an embeddings file (.safetensors or .npz) without requiring all splits."""
    path = Path(path)
    if not path.is_file():
        raise ArtifactError(
            f"{path}: embeddings file not found; run `dvc repro extract` or fix the path"
        )
    if path.suffix == ".npz":
        tensors, meta = _read_npz(path)
    elif path.suffix == ".safetensors":
        tensors, meta = _read_safetensors_numpy(path)
    else:
        raise ArtifactError(
            f"{path}: unsupported embeddings format {path.suffix!r}; use .safetensors or .npz"
        )
    unknown = [k for k in tensors if not (k[:-2] in SPLITS and k[-2:] in ("_x", "_y"))]
    if unknown:
        raise ArtifactError(
            f"{path}: unexpected keys {unknown}; use train_x, train_y, val_x, val_y, test_x, test_y"
        )
    x = {k[:-2]: tensors[k] for k in tensors if k.endswith("_x")}
    y = {k[:-2]: tensors[k] for k in tensors if k.endswith("_y")}
    for s, ys in y.items():
        if ys.ndim == 2 and ys.shape[1] == 1:  # MedMNIST-style [N, 1] column
            y[s] = ys[:, 0]
    return x, y, meta


def load_embeddings(path: str | Path) -> Embeddings:
    """Read a complete embeddings file (all of train/val/test)."""
    x, y, meta = read_embeddings_raw(path)
    as_ids = {
        s: v.astype(np.int64)
        if v.ndim == 1 and (np.issubdtype(v.dtype, np.integer) or v.dtype == np.bool_)
        else v
        for s, v in y.items()
    }
    return Embeddings(x=x, y=as_ids, meta=meta)


# --------------------------------------------------------------------------------------------
# trained heads
# --------------------------------------------------------------------------------------------


def save_head(directory: str | Path, state: Mapping[str, Any], config: Mapping[str, Any]) -> None:
    """Write ``head.safetensors`` (the state dict) and ``config.json`` (the resolved config)."""
    directory = Path(directory)
    tensors = {k: v.detach().cpu().contiguous() for k, v in state.items()}
    write_bytes(
        directory / "head.safetensors",
        torch_save_bytes(tensors, metadata={"format": "hashaudit.head/1"}),
    )
    write_json(directory / "config.json", dict(config))


def load_head(directory: str | Path) -> tuple[dict[str, Any], dict[str, Any]]:
    directory = Path(directory)
    weights, cfg = directory / "head.safetensors", directory / "config.json"
    if not weights.is_file() or not cfg.is_file():
        raise ArtifactError(
            f"{directory}: no trained head (head.safetensors + config.json); run the train stage"
        )
    try:
        state = torch_load_file(str(weights))
    except (SafetensorError, OSError) as err:
        raise ArtifactError(f"{weights}: unreadable ({err}); re-run the train stage") from err
    return state, read_json(cfg)


# --------------------------------------------------------------------------------------------
# codes
# --------------------------------------------------------------------------------------------


def save_codes(
    path: str | Path, packed: Mapping[str, np.ndarray], *, n_bits: int, meta: Mapping[str, Any]
) -> None:
    n_bytes = math.ceil(n_bits / 8)
    for s, arr in packed.items():
        if arr.dtype != np.uint8 or arr.ndim != 2 or arr.shape[1] != n_bytes:
            raise ValueError(
                f"codes for {s!r}: expected uint8 [N, {n_bytes}], got {arr.dtype} {arr.shape}"
            )
    md = {str(k): str(v) for k, v in meta.items()}
    md.update({"format": CODES_FORMAT, "n_bits": str(n_bits), "bitorder": "little"})
    write_bytes(
        path, np_save_bytes({s: np.ascontiguousarray(a) for s, a in packed.items()}, metadata=md)
    )


def load_codes(path: str | Path) -> tuple[dict[str, np.ndarray], int, dict[str, str]]:
    path = Path(path)
    if not path.is_file():
        raise ArtifactError(f"{path}: codes file not found; run the train stage first")
    tensors, meta = _read_safetensors_numpy(path)
    if meta.get("format") != CODES_FORMAT:
        raise ArtifactError(f"{path}: not a hashaudit codes file (format={meta.get('format')!r})")
    return tensors, int(meta["n_bits"]), meta
