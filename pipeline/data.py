"""What every data source shares: containers, seeded splitting and limiting, label handling.

The sources themselves (MedMNIST files, Hugging Face datasets, image folders, bring-your-own
embeddings) live in :mod:`pipeline.sources`, one module per kind. Every source ends in
:func:`complete_splits`: missing test/val splits are carved from train, in that order (seeded,
stratified; each takes ``data.val_fraction`` of the train rows left at that point) and
``data.limit`` caps every split the same way, keeping every class present (for multi-label splits
see :func:`apply_limit`). The task (single- or multi-label) is decided once, by :func:`infer_task`,
from the label layout: ``[N]`` class ids are single-label, a ``[N, C]`` 0/1 matrix is multi-label.

Every problem raises :class:`DataError` with a message naming the bad value and how to fix it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import stat
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TypeVar

import numpy as np

from pipeline.artifacts import SPLITS, TASKS, sparse_class_ids
from pipeline.config import DataConfig

log = logging.getLogger(__name__)


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


#: embeddings metadata key of the per-split image digests (JSON ``{split: hex}``; image sources)
IMAGES_DIGEST_KEY = "images_sha256"


class ImagesDigest:
    """SHA-256 over images in row order: each image's dtype, shape and bytes. The same images give
    the same digest whether they come in one array or a list, in any batching. The extract records
    it per split (``images_sha256``) so that a stage reloading the images (attack) can tell that
    the source still holds the images the embeddings were made from: counts and labels alone do
    not (an image file replaced under the same name and class)."""

    def __init__(self) -> None:
        self._h = hashlib.sha256()
        #: per image, in row order: a 16-byte BLAKE2b of its dtype, shape and bytes
        #: (:func:`cross_split_duplicates` compares them between splits)
        self.items: list[bytes] = []

    def update(self, images: Sequence[np.ndarray] | np.ndarray) -> None:
        for im in images:
            a = np.ascontiguousarray(im)
            head = f"{a.dtype.str}:{list(a.shape)};".encode()
            self._h.update(head)
            self._h.update(a.tobytes())
            one = hashlib.blake2b(head, digest_size=16)
            one.update(a.tobytes())
            self.items.append(one.digest())

    def hexdigest(self) -> str:
        return self._h.hexdigest()


#: embeddings metadata key of the rows whose image also appears in another split
#: (JSON ``{split: {other split: [rows]}}``; image sources, :func:`cross_split_duplicates`)
DUPLICATES_KEY = "duplicate_rows"


def cross_split_duplicates(digests: Mapping[str, ImagesDigest]) -> dict[str, dict[str, list[int]]]:
    """``{split: {other: rows}}``: the rows of ``split`` (ascending) whose image is byte-identical
    (same dtype, shape and pixels) to an image of split ``other``; only non-empty entries. Real
    datasets hold such pairs (the official BreastMNIST file: train row 115 = test row 76), and
    membership inference must not count a test copy of a training image as a non-member
    (:mod:`privacy.membership`). Repeats inside one split are not listed."""
    where: dict[bytes, set[str]] = {}
    for split, d in digests.items():
        for item in d.items:
            where.setdefault(item, set()).add(split)
    out: dict[str, dict[str, list[int]]] = {}
    for split, d in digests.items():
        for other in digests:
            if other != split:
                rows = [i for i, item in enumerate(d.items) if other in where[item]]
                if rows:
                    out.setdefault(split, {})[other] = rows
    return out


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
# seeded, stratified sampling
# --------------------------------------------------------------------------------------------


def strata_of(labels: np.ndarray) -> np.ndarray:
    """One stratum per sample: the class id, or for multi-hot rows the first positive label (-1: none)."""
    if labels.ndim == 1:
        return labels.astype(np.int64)
    pos = labels.astype(bool)
    return np.where(pos.any(axis=1), pos.argmax(axis=1), -1).astype(np.int64)


def _allocate(
    counts: np.ndarray, n: int, *, at_least_one: bool, limit: np.ndarray | None = None
) -> np.ndarray:
    """Split ``n`` draws over strata proportionally to ``counts`` (largest remainder method),
    at most ``limit`` per stratum (default: its count; ``n`` must fit under the limits)."""
    limit = counts if limit is None else limit
    total = int(counts.sum())
    exact = counts * (n / total)
    quota = np.floor(exact).astype(np.int64)
    if at_least_one:
        quota = np.maximum(quota, 1)
    quota = np.minimum(quota, limit)
    remainder = exact - np.floor(exact)
    while quota.sum() < n:  # hand out the rest to the largest remainders with room left
        room = quota < limit
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
    return _sample_strata(strata_of(labels), n, rng=rng, at_least_one=at_least_one)


def _sample_strata(
    strata: np.ndarray,
    n: int,
    *,
    rng: np.random.Generator,
    at_least_one: bool,
    leave_one: bool = False,
) -> np.ndarray:
    """:func:`stratified_sample` over given per-sample strata. ``leave_one``: draw at most all
    but one row of each stratum (where ``n`` allows it), so every stratum keeps a row behind."""
    if n >= len(strata):
        return np.arange(len(strata))
    classes, inverse, counts = np.unique(strata, return_inverse=True, return_counts=True)
    limit = counts - 1 if leave_one and n <= int((counts - 1).sum()) else counts
    quota = _allocate(counts, n, at_least_one=at_least_one and n >= len(classes), limit=limit)
    picked = [
        rng.choice(np.flatnonzero(inverse == c), size=int(q), replace=False)
        for c, q in enumerate(quota)
        if q
    ]
    return np.sort(np.concatenate(picked)) if picked else np.zeros(0, dtype=np.int64)


def carve(
    labels: np.ndarray, fraction: float, *, seed: int, what: str = "val"
) -> tuple[np.ndarray, np.ndarray]:
    """Split positions into (kept, carved) with ``round(fraction * N)`` carved, seeded and
    stratified; each stratum keeps at least one row unless that many cannot be carved.

    Single-label rows are stratified by class. Multi-hot rows: the kept rows are drawn as
    :func:`_limit_multilabel` draws a limited split (strata of each row's rarest positive label,
    then a top-up), so every label with a positive keeps one in train whenever the kept rows are
    at least as many as such labels; by the first positive label, a rare label that only
    co-occurs with a commoner one (a finding seen once) went to val or test whole."""
    n = len(labels)
    n_carved = round(fraction * n)
    if n_carved < 1 or n_carved >= n:
        raise DataError(
            f"cannot carve a {what} split of fraction {fraction} from {n} training samples; "
            f"provide a {what} split or more training data, or change data.val_fraction"
        )
    rng = np.random.default_rng([seed, _stable_id(what)])
    if labels.ndim == 2:  # every label keeps a positive in train (see the docstring)
        kept = _limit_multilabel(labels, n - n_carved, rng=rng, split=None)
        return kept, np.setdiff1d(np.arange(n), kept, assume_unique=True)
    # every stratum keeps a row in train where the sizes allow it: a class carved away whole
    # would be one the database and the heads never see
    strata = strata_of(labels)
    carved = _sample_strata(strata, n_carved, rng=rng, at_least_one=False, leave_one=True)
    kept = np.setdiff1d(np.arange(n), carved, assume_unique=True)
    return kept, carved


def apply_limit(
    labels: Mapping[str, np.ndarray], limit: int | None, *, seed: int
) -> dict[str, np.ndarray]:
    """Positions kept in each split under ``data.limit`` (seeded, stratified, every class kept).

    Single-label splits are stratified by class; a limit below the number of classes present is a
    :class:`DataError`. Multi-hot splits are stratified by each row's rarest positive label and then
    topped up (:func:`_limit_multilabel`), so every label with a positive in the full split keeps
    one in the limited split whenever ``limit`` is at least the number of such labels. Below that
    it cannot be guaranteed: the labels left without a positive are logged as a warning.
    """
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
        if y.ndim == 1:
            out[split] = stratified_sample(y, limit, rng=rng, at_least_one=True)
        else:
            out[split] = _limit_multilabel(y, limit, rng=rng, split=split)
    return out


def _limit_multilabel(
    y: np.ndarray, limit: int, *, rng: np.random.Generator, split: str | None
) -> np.ndarray:
    """Sorted positions of ``limit`` multi-hot rows that keep a positive of every label present.

    Rows are stratified by their rarest positive label (fewest positives in the split, lowest id on
    ties; rows without positives form one stratum), so a label that only co-occurs with commoner
    ones still has a stratum of its own. A label still without a positive is then topped up: one of
    its rows (seeded choice) replaces a picked row whose labels all stay covered without it, taken
    from the stratum with the most picked rows. Such a row always exists while ``limit`` is at
    least the number of labels present (rarest first, each swap keeps every covered label).
    ``split`` names the limited split in the warning about labels left without a positive; None
    (:func:`carve`, whose caller refuses such a split, naming the labels) warns nothing.
    """
    pos = y.astype(bool)
    counts = pos.sum(axis=0)
    rarity = np.where(pos, counts[None, :], np.iinfo(np.int64).max)
    strata = np.where(pos.any(axis=1), rarity.argmin(axis=1), -1).astype(np.int64)
    picked = _sample_strata(strata, limit, rng=rng, at_least_one=True)
    in_pick = np.zeros(len(y), dtype=bool)
    in_pick[picked] = True
    cover = pos[picked].sum(axis=0)
    present = np.flatnonzero(counts)
    for label in present[np.argsort(counts[present], kind="stable")]:
        if cover[label]:
            continue
        add = int(rng.choice(np.flatnonzero(pos[:, label])))
        rows = np.flatnonzero(in_pick)
        with_add = cover + pos[add]
        removable = rows[~(pos[rows] & (with_add < 2)).any(axis=1)]
        if removable.size == 0:
            continue
        sizes = np.bincount(strata[rows] + 1, minlength=y.shape[1] + 1)
        fullest = removable[sizes[strata[removable] + 1] == sizes[strata[removable] + 1].max()]
        drop = int(rng.choice(fullest))
        in_pick[drop], in_pick[add] = False, True
        cover = with_add - pos[drop]
    missing = present[cover[present] == 0]
    if missing.size and split is not None:
        log.warning(
            "data.limit: the %d rows kept of the %r split hold no positive of labels %s (%d "
            "labels have positives in the full split); set data.limit to at least %d to keep "
            "every label",
            limit,
            split,
            missing.tolist(),
            len(present),
            len(present),
        )
    return np.flatnonzero(in_pick)


def _stable_id(text: str) -> int:
    """A run-independent integer for ``text`` (Python's hash() is salted per process)."""
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:4], "little")


# --------------------------------------------------------------------------------------------
# labels and task
# --------------------------------------------------------------------------------------------


def infer_task(
    labels: np.ndarray, n_classes: int, declared: str | None = None, *, where: str = "the dataset"
) -> str:
    """The task of a dataset: the one place that decides single- vs multi-label.

    ``[N, C]`` labels are ``multi-label``; ``[N]`` labels keep a ``declared`` single-label task
    (e.g. MedMNIST's ``ordinal-regression``) and are otherwise ``binary-class`` or ``multi-class`` by
    ``n_classes``.

    A declared task that the labels contradict is refused with a :class:`DataError` naming
    ``where``: a single-label task (``binary-class``, ``multi-class``, ``ordinal-regression``) with
    ``[N, C]`` multi-hot labels, and ``binary-class`` with more than 2 classes. A declared
    ``multi-label`` task with ``[N]`` labels is not believed (a one-column multi-hot matrix reads as
    ``[N]`` class ids), and a declaration that is not one of :data:`TASKS` (MedMNIST's
    ``"multi-label, binary-class"``) is ignored: the task is then inferred.
    """
    inferred = (
        "multi-label" if labels.ndim == 2 else ("binary-class" if n_classes == 2 else "multi-class")
    )
    if declared not in TASKS or declared == "multi-label":
        return inferred
    if labels.ndim == 2:
        raise DataError(
            f"{where}: declares task {declared!r} (one label per sample) but its labels are a "
            f"multi-hot matrix {list(labels.shape)}; store class ids [N] for a single-label task, "
            "or declare task 'multi-label' (or drop the task to have it inferred)"
        )
    if declared == "binary-class" and n_classes > 2:
        raise DataError(
            f"{where}: declares task 'binary-class' but has {n_classes} classes (class ids up to "
            f"{n_classes - 1}, or the n_classes it declares); binary-class needs exactly 2: fix the "
            f"labels, or declare task {inferred!r} (or drop the task to have it inferred)"
        )
    return declared


def normalize_labels(
    raw: np.ndarray, *, multilabel: bool, n_classes: int | None, where: str
) -> np.ndarray:
    """Checked labels: uint8 multi-hot ``[N, C]`` or int64 class ids ``[N]`` in ``[0, n_classes)``.

    Single-label ``[N, 1]`` columns (MedMNIST style) are flattened. ``n_classes=None`` skips the
    upper bound (it is then inferred from the labels).
    """
    if multilabel:
        if raw.ndim != 2 or (n_classes is not None and raw.shape[1] != n_classes):
            raise DataError(
                f"{where}: expected multi-hot labels [N, {n_classes or 'C'}], got {raw.shape}"
            )
        if not np.isin(raw, (0, 1)).all():
            raise DataError(
                f"{where}: labels are a [N, C] matrix but hold values other than 0/1; use multi-hot labels"
            )
        return raw.astype(np.uint8)
    y = raw.reshape(len(raw), -1)
    if y.shape[1] != 1:
        raise DataError(f"{where}: expected one label per sample, got shape {raw.shape}")
    y = y[:, 0].astype(np.int64)
    top = n_classes if n_classes is not None else np.iinfo(np.int64).max
    if y.size and (y.min() < 0 or y.max() >= top):
        raise DataError(
            f"{where}: labels outside [0, {n_classes or 'C'}) (min {y.min()}, max {y.max()}); "
            "unlabelled rows (-1) are not supported: use labelled samples"
        )
    return y


def class_names_from_meta(meta: Mapping[str, str], n_classes: int) -> list[str]:
    """The ``class_names`` JSON list of an embeddings file's metadata, or ``0..C-1`` when it is
    missing, malformed or of the wrong length."""
    try:
        names = json.loads(meta.get("class_names", "null"))
    except json.JSONDecodeError:
        names = None
    if isinstance(names, list) and len(names) == n_classes:
        return [str(n) for n in names]
    return [str(i) for i in range(n_classes)]


# --------------------------------------------------------------------------------------------
# completing the splits (every source)
# --------------------------------------------------------------------------------------------


class Rows(Protocol):
    """What :func:`complete_splits` needs of a split: its labels and a row subset."""

    labels: np.ndarray

    def __len__(self) -> int: ...

    def subset(self, indices: Sequence[int] | np.ndarray) -> Any: ...


R = TypeVar("R", bound=Rows)


def complete_splits(
    name: str,
    splits: dict[str, R],
    *,
    data: DataConfig,
    seed: int,
    where: str = "the source",
    class_names: Sequence[str] | None = None,
) -> dict[str, R]:
    """Carve missing test/val splits from train, refuse empty splits, single-label data of one
    class (:func:`check_two_classes`) and val/test classes that train lacks
    (:func:`check_classes_in_train`), apply ``data.limit``.

    A missing test split is carved first: ``round(data.val_fraction * N)`` of the ``N`` train rows.
    A missing val split is carved next from what train holds then: ``round(data.val_fraction * M)``
    rows, where ``M`` is ``N`` minus the rows just carved for test (``N`` when test was given). Both
    are seeded and stratified (see :func:`carve`); e.g. 100 rows, fraction 0.1 and neither split
    given: test 10, val round(0.1 * 90) = 9, train 81. The classes are checked on the full splits;
    ``data.limit`` then caps each split (:func:`apply_limit`, which keeps every class, and warns
    where a small limit leaves a multi-label label without a positive). ``class_names`` (id ->
    name) lets the messages name classes.
    """
    splits = dict(splits)
    if "train" not in splits:
        raise DataError(
            f"dataset {name!r}: {where} has no train split ({sorted(splits)}); provide one"
        )
    carved_splits: set[str] = set()
    for s in SPLITS:
        if s in splits and len(splits[s]) == 0:
            raise DataError(f"dataset {name!r}: split {s!r} is empty; {_EMPTY_FIX[s]}")
    check_two_classes({s: np.asarray(v.labels) for s, v in splits.items()}, where, class_names)
    for missing in ("test", "val"):
        if missing not in splits:
            kept, carved = carve(splits["train"].labels, data.val_fraction, seed=seed, what=missing)
            log.info(
                "%s: no %s split in %s; carved %d of %d train samples (seed %d, stratified)",
                name,
                missing,
                where,
                len(carved),
                len(kept) + len(carved),
                seed,
            )
            splits[missing] = splits["train"].subset(carved)
            splits["train"] = splits["train"].subset(kept)
            carved_splits.add(missing)
    check_classes_in_train(
        {s: np.asarray(splits[s].labels) for s in SPLITS},
        where=where,
        class_names=class_names,
        carved=carved_splits,
    )
    keep = apply_limit({s: splits[s].labels for s in SPLITS}, data.limit, seed=seed)
    return {
        s: splits[s].subset(keep[s]) if len(keep[s]) < len(splits[s]) else splits[s] for s in SPLITS
    }


def check_two_classes(
    labels: Mapping[str, np.ndarray], where: str, class_names: Sequence[str] | None = None
) -> None:
    """Refuse single-label splits that all hold one class only: every neighbour then shares the
    query's class, so KNN accuracy and mAP are 1.0 whatever the embeddings or codes (e.g. an
    image folder's path one level above its class folders reads as one class)."""
    if any(y.ndim != 1 for y in labels.values()):
        return
    present = np.unique(np.concatenate([y.reshape(-1) for y in labels.values()]))
    if present.size >= 2:
        return
    rows = sum(len(y) for y in labels.values())  # > 0: empty splits are refused before this
    shown = _class_rows(int(present[0]), rows, class_names, kind="class")
    raise DataError(
        f"{where}: every row of {', '.join(labels)} is {shown}; with one class every retrieval "
        "and KNN metric is trivially perfect. Provide at least 2 classes: for an image folder, "
        "set path to the folder whose sub-folders are the classes (one level too high reads as "
        "one class); for other sources check the label column or the labels"
    )


#: what to do about an empty split (a source's own split that holds no rows)
_EMPTY_FIX = {
    "train": "add rows to it: train is the KNN database and the heads' training set",
    "val": "add rows to it, or remove it to have val carved from train (data.val_fraction)",
    "test": "add rows to it, or remove it to have test carved from train (data.val_fraction)",
}


def _class_rows(c: int, rows: int, class_names: Sequence[str] | None, *, kind: str) -> str:
    """``class 'name' (id c, n rows)`` for a named class (a non-ASCII name also spelt out with
    escapes, so that e.g. Unicode NFC and NFD spellings, which print alike, can be told apart),
    else ``class c (n rows)``; ``kind`` is the word for a class (``class``, ``label``)."""
    count = f"{rows} row{'s' * (rows != 1)}"
    if class_names is None or not 0 <= c < len(class_names):
        return f"{kind} {c} ({count})"
    name = str(class_names[c])
    spelt = "" if name.isascii() else f" = {name!a}"
    return f"{kind} {name!r}{spelt} (id {c}, {count})"


def check_classes_in_train(
    labels: Mapping[str, np.ndarray],
    *,
    where: str,
    class_names: Sequence[str] | None = None,
    carved: set[str] | frozenset[str] = frozenset(),
) -> None:
    """Refuse val/test classes that no training row holds: a single-label class id, or a
    multi-label column with positives in val/test but none in train. The KNN database and the heads
    never see such a class, so its queries can only be missed, which reads as a weak method rather
    than a split that cannot be learnt (a class's recall of 0 weighs 1/C of the balanced accuracy).
    ``class_names`` (id -> name) names the classes; ``carved`` are the splits carved from train."""
    multilabel = labels["train"].ndim == 2
    kind = "label column" if multilabel else "class"
    if multilabel:
        seen = set(np.flatnonzero(labels["train"].astype(bool).any(axis=0)).tolist())
    else:
        seen = set(np.unique(labels["train"]).tolist())
    for split in ("val", "test"):
        if multilabel:
            positives = labels[split].astype(bool).sum(axis=0)
            ids = np.flatnonzero(positives)
            counts = positives[ids]
        else:
            ids, counts = np.unique(labels[split], return_counts=True)
        unseen = [(int(c), int(n)) for c, n in zip(ids, counts, strict=True) if int(c) not in seen]
        if not unseen:
            continue
        listed = ", ".join(_class_rows(c, n, class_names, kind=kind) for c, n in unseen[:5])
        more = f" and {len(unseen) - 5} more" if len(unseen) > 5 else ""
        train_names = ""
        if class_names is not None and not multilabel:
            shown = [repr(str(class_names[c])) for c in sorted(seen) if c < len(class_names)]
            train_names = f" (train holds {', '.join(shown[:10])}{', ...' * (len(shown) > 10)})"
        carved_note = (
            f" ({split} was carved from train by data.val_fraction: give such a {kind} more "
            f"train rows, or provide a {split} split)"
            if split in carved
            else ""
        )
        if multilabel:
            raise DataError(
                f"{where}: {split}_y has positives in {listed}{more} that no train row has; the "
                "KNN database and the hashing heads never see such a label, so its queries can "
                "only be missed. Re-split so that "
                "train holds a positive of every label, or drop those label columns from every "
                f"split{carved_note}"
            )
        raise DataError(
            f"{where}: {split}_y holds {listed}{more} that no train row holds{train_names}; the "
            "KNN database and the hashing heads never see such a class, so its queries can only "
            f"be missed. Re-split so that train holds every class, or drop those {split} rows"
            f"{carved_note}"
        )


def check_class_ids(
    labels: Sequence[np.ndarray], *, declared: int | None, where: str, fix: str
) -> None:
    """Refuse single-label class ids that leave most of ``0..max`` unused
    (:func:`pipeline.artifacts.sparse_class_ids`: the rule and why); ``fix`` is the source's own
    way to remap the ids."""
    problem = sparse_class_ids(labels, declared=declared)
    if problem is not None:
        raise DataError(f"{where}: {problem}. Class ids must be 0..C-1: {fix}")


def image_dataset(
    name: str,
    splits: dict[str, ImageSplit],
    *,
    class_names: list[str],
    source_info: dict[str, str],
    data: DataConfig,
    seed: int,
    declared_task: str | None = None,
) -> ImageDataset:
    """The :class:`ImageDataset` of an image source: splits completed, task inferred, logged."""
    splits = complete_splits(
        name, splits, data=data, seed=seed, where=f"dataset {name!r}", class_names=class_names
    )
    ds = ImageDataset(
        name=name,
        splits=splits,
        task=infer_task(
            splits["train"].labels, len(class_names), declared_task, where=f"dataset {name!r}"
        ),
        class_names=class_names,
        source_info=source_info,
    )
    log.info(
        "%s: %s, %d classes, train/val/test = %s",
        name,
        ds.task,
        ds.n_classes,
        "/".join(str(len(ds.splits[s])) for s in SPLITS),
    )
    return ds


# --------------------------------------------------------------------------------------------
# files on disk (the imagefolder source and the source stamp)
# --------------------------------------------------------------------------------------------


def walk_files(root: Path, *, skip_hidden: bool = False) -> list[Path]:
    """Every file below the folder ``root`` (as paths under ``root``), sorted.

    Symbolic links to folders are followed (``Path.rglob`` does not follow them before Python
    3.13, which silently dropped the images of a linked folder), and every real folder is read
    once: a link to a folder already read (a second link to one folder) or to a folder that holds
    the link (a link loop, e.g. ``ln -s .. up``, which would also pull in ``root``'s siblings) is
    skipped with a warning, so a walk ends. The walk is top-down with names sorted, and the path
    that reaches a folder first is the one kept. Every file path is listed, also two paths of one
    file (a symlink or hard link to it: DVC's and git-annex's stores keep identical images as one
    object, and each path is a row of the data set). A broken link (its target
    missing, or a loop of links) is listed too, as the link: ``path.exists()`` is False for it;
    the caller decides (the imagefolder source refuses one to an image, the source stamp records
    it). ``skip_hidden`` leaves out files and folders whose name starts with ``.``. A folder that
    cannot be listed is a :class:`DataError` naming it.
    """

    def refuse(err: OSError) -> None:
        raise DataError(
            f"cannot list folder {err.filename}: {err.strerror}; make it readable, or move it "
            f"out of {root}"
        ) from err

    top = os.stat(root)
    read: dict[tuple[int, int], str] = {(top.st_dev, top.st_ino): str(root)}
    found: list[tuple[Path, tuple[int, int] | None]] = []
    for folder, dirs, files in os.walk(root, onerror=refuse, followlinks=True):
        dirs.sort()  # a deterministic walk: the first path reaching a folder is the one kept
        here = os.path.realpath(folder)
        keep = []
        for d in dirs:
            if skip_hidden and d.startswith("."):
                continue
            path = os.path.join(folder, d)
            st = os.stat(path)
            key = (st.st_dev, st.st_ino)
            real = os.path.realpath(path)
            if key in read or here == real or here.startswith(real.rstrip(os.sep) + os.sep):
                log.warning(
                    "%s leads to %s, a folder already read or one that holds the link; skipped "
                    "(a link loop, or a second link to one folder)",
                    path,
                    read.get(key, real),
                )
                continue
            read[key] = path
            keep.append(d)
        dirs[:] = keep
        for name in files:
            if skip_hidden and name.startswith("."):
                continue
            path = Path(folder, name)
            try:
                st = path.stat()
            except OSError:  # a broken link (or a file gone meanwhile): the link is listed
                if path.is_symlink():
                    found.append((path, None))
                continue
            if stat.S_ISREG(st.st_mode):  # not a socket, fifo, device
                found.append((path, (st.st_dev, st.st_ino)))
    # every file path is listed, also two paths of one file (hard links, or symlinks into one
    # store: DVC's cache.type hardlink/symlink and git-annex store identical images once): each
    # is a row of the data set; only folders are read once, which is all a walk needs to end
    out = [path for path, _ in sorted(found)]
    return out


def broken_link_error(path: Path, what: str) -> DataError:
    """The error for a broken symbolic link ``path`` where ``what`` (e.g. an image) was expected."""
    try:
        target = os.readlink(path)
    except OSError:
        target = "?"
    return DataError(
        f"{path} is a broken symbolic link to {target!r}, which does not exist (or is a loop of "
        f"links); it should be {what}: fix the link, or remove it"
    )
