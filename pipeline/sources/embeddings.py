"""Source ``embeddings``: bring your own embeddings, no backbone.

A ``.safetensors`` or ``.npz`` file with ``train_x``, ``train_y``, ``test_x``, ``test_y`` and
optionally ``val_x``, ``val_y`` (carved from train, seeded and stratified, when missing; both or
neither). ``*_y`` are class ids ``[N]`` (or a MedMNIST-style ``[N, 1]`` column) or a 0/1 multi-hot
matrix ``[N, C]``. The file is validated (shapes, finiteness, label layout), ``data.limit`` is applied
as for image sources, and its metadata is kept and completed (``backbone`` defaults to
``user-supplied``); the extract stage rewrites it in the standard layout.

The number of classes is the largest class id + 1, or the ``n_classes`` (or length of
``class_names``) the metadata declares when that is larger; ids that leave more than half of
``0..max`` unused beyond what the metadata declares (e.g. ``{1000, 2000, 3000}``) are refused
(:func:`~pipeline.data.check_class_ids`): remap them to ``0..C-1`` and keep the original ids as
``class_names``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.artifacts import (
    SPLITS,
    ArtifactError,
    EmbeddingsFile,
    content_fingerprint,
    read_embeddings_raw,
    validate_embeddings,
)
from pipeline.config import DataConfig, SourceConfig, check
from pipeline.data import (
    check_class_ids,
    class_names_from_meta,
    complete_splits,
    infer_task,
    normalize_labels,
)

YIELDS = "embeddings"
USER_SUPPLIED = "user-supplied"


KEYS = ("path",)  # the params keys this kind reads (pipeline.sources.check_config)


def check_config(source: SourceConfig) -> None:
    check(bool(source.path), "path", "an embeddings source needs path: <.safetensors or .npz file>")


@dataclass(frozen=True)
class _Rows:
    """The embeddings and labels of one split (what :func:`complete_splits` subsets)."""

    x: np.ndarray
    labels: np.ndarray

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, indices: np.ndarray) -> _Rows:
        return _Rows(x=self.x[indices], labels=self.labels[indices])


def _check_keys(x: dict, y: dict, where: str) -> None:
    missing = [f"{s}_{k}" for s in ("train", "test") for k, d in (("x", x), ("y", y)) if s not in d]
    if missing or ("val" in x) != ("val" in y):
        missing += [
            f"val_{k}"
            for k, d in (("x", x), ("y", y))
            if "val" not in d and ("val" in x or "val" in y)
        ]
        raise ArtifactError(
            f"{where}: missing {', '.join(missing)}; a user embeddings file needs train_x, train_y, "
            "test_x, test_y (val_x and val_y together, or neither: val is then carved from train)"
        )


def _check_float32_range(v: np.ndarray, what: str) -> None:
    """Refuse finite values beyond float32's range in a wider float array: the cast to float32
    would turn them into inf, and the file would be blamed for NaN/inf it does not hold."""
    if not np.issubdtype(v.dtype, np.floating) or v.dtype.itemsize <= 4 or v.size == 0:
        return
    f32_max = float(np.finfo(np.float32).max)
    big = np.isfinite(v) & (np.abs(v) > f32_max)
    if big.any():
        first = np.argwhere(big)[0]
        peak = float(np.max(np.abs(v[big])))
        row = f" (first in row {int(first[0])})" if v.ndim > 1 else ""
        raise ArtifactError(
            f"{what} holds {int(big.sum())} finite {v.dtype} value(s) up to {peak:.3g} in magnitude"
            f"{row}, beyond float32's range (about {f32_max:.3g}) in which hashaudit computes; "
            "rescale the embeddings (e.g. standardise each feature)"
        )


def _check_recorded_fingerprint(
    x: dict[str, np.ndarray], y: dict[str, np.ndarray], meta: dict[str, str], where: str
) -> None:
    """Refuse a hashaudit embeddings file whose content no longer matches the ``fingerprint`` its
    metadata records, as :func:`~pipeline.artifacts.load_embeddings` does: its provenance
    (backbone, revision, dataset) would otherwise be carried over to content it does not describe.
    Checked only when the file records a fingerprint and holds all three splits (what one covers).
    """
    recorded = meta.get("fingerprint")
    if recorded is None or not all(s in x and s in y for s in SPLITS):
        return
    actual = content_fingerprint(x, y)  # casts as load_embeddings' EmbeddingsFile.fingerprint does
    if recorded != actual:
        raise ArtifactError(
            f"{where}: its content does not match the fingerprint recorded in its metadata "
            f"(fingerprint {recorded[:26]}..., content {actual[:26]}...): the arrays or labels "
            "were changed after the file was written, or it is corrupt. Re-create it (dvc repro "
            "extract); if the edit was deliberate, remove the 'fingerprint' entry from its "
            "metadata (or re-save the file without it), so that it is read as new embeddings"
        )


def _declared_names(meta: dict[str, str]) -> list[str] | None:
    """The ``class_names`` JSON list of the metadata (id -> name), or None (missing, malformed)."""
    try:
        names = json.loads(meta.get("class_names", "null"))
    except json.JSONDecodeError:
        return None
    return [str(n) for n in names] if isinstance(names, list) else None


def inputs(name: str, source: SourceConfig, data: DataConfig) -> list[Path]:
    """The user's embeddings file (digested by the ``source`` stage)."""
    return [Path(str(source.path)).expanduser()]


def load(name: str, source: SourceConfig, data: DataConfig, *, seed: int) -> EmbeddingsFile:
    """Read, validate and complete a user's embeddings file (val carved from train when missing)."""
    path = Path(str(source.path)).expanduser()
    if not path.is_file():
        what = "is a folder, not a file" if path.is_dir() else f"not found (from {Path.cwd()})"
        raise ArtifactError(
            f"data.sources.{name}.path: {path} {what}; point it at your .safetensors or .npz "
            "embeddings file (keys train_x, train_y, test_x, test_y, optionally val_x, val_y)"
        )
    x, y, meta = read_embeddings_raw(path)
    where = str(path)
    _check_keys(x, y, where)
    for s, v in x.items():
        _check_float32_range(v, f"{where}: {s}_x")
    x = {
        s: v.astype(np.float32) if np.issubdtype(v.dtype, np.floating) else v for s, v in x.items()
    }
    validate_embeddings(
        {**x, "val": x.get("val", x["train"])}, {**y, "val": y.get("val", y["train"])}, where=where
    )
    _check_recorded_fingerprint(x, y, meta, where)
    multilabel = y["train"].ndim == 2
    y = {
        s: normalize_labels(v, multilabel=multilabel, n_classes=None, where=f"{where} [{s}_y]")
        for s, v in y.items()
    }
    names = _declared_names(meta)
    declared = meta.get("n_classes", "")
    declared_n = int(declared) if declared.isdigit() else None
    if not multilabel:
        check_class_ids(
            list(y.values()),
            declared=max(declared_n or 0, len(names or ())) or None,
            where=f"{where} [train_y, val_y, test_y]",
            fix="remap them over all splits together (e.g. ids, y_all = "
            "np.unique(y_all, return_inverse=True)) and store the original ids as class_names "
            "(a JSON list) in the file's metadata; or, if the unused ids are real classes, "
            "declare them with n_classes (or class_names) in the metadata",
        )
    rows = complete_splits(
        name,
        {s: _Rows(x=x[s], labels=y[s]) for s in x},
        data=data,
        seed=seed,
        where=where,
        class_names=names,
    )
    x = {s: rows[s].x for s in SPLITS}
    y = {s: rows[s].labels for s in SPLITS}
    if multilabel:
        n_classes = int(y["train"].shape[1])
    else:
        n_classes = max(int(v.max()) for v in y.values()) + 1
        # a file may declare classes that its splits do not all hold: by n_classes or by the
        # length of class_names (else names longer than max id + 1 were dropped for 0..C-1)
        n_classes = max(n_classes, declared_n or 0, len(names or ()))
    out = {k: str(v) for k, v in meta.items() if k != "format"}
    out.update(
        {
            "dataset": name,
            "task": infer_task(y["train"], n_classes, meta.get("task"), where=where),
            "class_names": json.dumps(class_names_from_meta(meta, n_classes)),
            "n_classes": str(n_classes),
            "backbone": meta.get("backbone", USER_SUPPLIED),
            "revision": meta.get("revision", "unknown"),
            "dim": str(x["train"].shape[1]),
            "source": "embeddings",
            "source_path": str(path.resolve()),
            "seed": str(seed),
            "limit": "null" if data.limit is None else str(data.limit),
        }
    )
    return EmbeddingsFile(x=x, y=y, meta=out)
