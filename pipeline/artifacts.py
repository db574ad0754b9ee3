"""The one place that reads and writes every on-disk format of hashaudit.

Every write is atomic (a temporary file in the destination folder, flushed to disk with
``fsync``, then ``os.replace``, then the folder flushed), so a crash, a power loss or a bad input
never leaves a half-written result where a later stage would trust it. A stage that
writes several files wraps them in :func:`atomic_outputs` (they land together or not at all) and
calls :func:`check_writable` on every output path before it starts working. Safetensors headers
are rewritten with sorted metadata (:func:`canonical_safetensors`), so identical content gives
byte-identical files and DVC does not re-run downstream stages for nothing.

Formats
-------
Embeddings (``<dataset>.safetensors``)
    tensors ``{split}_x`` float32 ``[N, D]`` and ``{split}_y`` for split in train/val/test; labels are
    int64 ``[N]`` for single-label tasks and uint8 multi-hot ``[N, C]`` for multi-label ones.
    String metadata: ``format``, ``dataset``, ``task``, ``n_classes``, ``class_names`` (JSON list),
    ``backbone``, ``revision``, ``image_size``, ``resize``, ``pooling``, ``dtype``, ``dim``, and
    ``fingerprint`` (:func:`content_fingerprint`: SHA-256 of every split's arrays and labels).
    Users may bring their own file in this layout, or an ``.npz`` with the same keys. Every
    artifact made from an embeddings file records its fingerprint (a head's ``config.json``,
    the codes' metadata, the float-KNN metrics); :func:`check_same_embeddings` refuses to pair
    it with another file.
Head (``<dir>/head.safetensors`` + ``<dir>/config.json``)
    the method's state dict and the fully resolved configuration. No pickle anywhere.
Codes (``codes.safetensors``)
    packed uint8 bits per split (``train``, ``val``, ``test``; little bit order, padded to whole
    bytes) with the true ``n_bits`` in the metadata.
Metrics: flat JSON; plot data: CSV.
"""

from __future__ import annotations

import contextlib
import contextvars
import csv
import errno
import hashlib
import io
import json
import logging
import math
import os
import signal
import tempfile
import threading
import zipfile
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
from safetensors import SafetensorError
from safetensors.numpy import load_file as np_load_file
from safetensors.numpy import save as np_save_bytes

log = logging.getLogger(__name__)

EMBEDDINGS_FORMAT = "hashaudit.embeddings/1"
CODES_FORMAT = "hashaudit.codes/1"
SPLITS = ("train", "val", "test")
#: keys every head ``config.json`` holds (later stages read them)
HEAD_CONFIG_KEYS = ("dataset", "method", "head_spec", "embeddings")
TASKS = ("multi-class", "binary-class", "multi-label", "ordinal-regression")
_UMASK = os.umask(0)
os.umask(_UMASK)


class ArtifactError(ValueError):
    """An input file is missing, malformed, or does not match what the stage expects."""


# --------------------------------------------------------------------------------------------
# atomic writes
# --------------------------------------------------------------------------------------------


class _Staged:
    """The files of one :func:`atomic_outputs` block: staged beside their targets, then moved in."""

    def __init__(self) -> None:
        self.files: dict[Path, Path] = {}  # target -> staged temporary file
        self.created: list[Path] = []  # folders made for the outputs (removed again if empty)

    def add(self, target: Path, tmp: Path) -> None:
        old = self.files.pop(target, None)
        if old is not None:
            old.unlink(missing_ok=True)
        self.files[target] = tmp

    def commit(self) -> None:
        """Move every staged file onto its target; on any failure put the old files back.

        SIGINT and SIGTERM are held back while the files move (they take effect right after), so
        Ctrl-C or ``kill`` cannot leave a mix of new and old files; anything else that stops the
        loop (an OSError, an interrupt outside the main thread) rolls the moved files back
        before it propagates.
        """
        done: list[list[Any]] = []  # [target, backup of the file it replaces, moved in yet]
        target = None
        with _signals_held():
            try:
                for target, tmp in self.files.items():
                    entry: list[Any] = [target, None, False]
                    done.append(entry)
                    if target.exists() and not target.is_dir():
                        entry[1] = _temp_beside(target, suffix=".bak")
                        os.replace(target, entry[1])
                    os.replace(tmp, target)
                    entry[2] = True
            except BaseException as err:
                stuck = _roll_back(done)
                self.discard()
                if stuck:  # the old files could not all be put back: say where they are
                    raise ArtifactError(
                        f"{target}: writing the outputs failed ({err!r}) and putting the previous "
                        f"files back failed too; they are kept as {', '.join(map(str, stuck))}: "
                        "rename them back by hand, or re-run the stage"
                    ) from err
                if isinstance(err, OSError):
                    raise ArtifactError(_write_error(target, err)) from err
                raise
            for _, backup, _ in done:
                if backup is not None:
                    backup.unlink(missing_ok=True)
            _fsync_dirs(self.files)
            _COMMITTED.extend(self.files)
            self.files.clear()

    def discard(self) -> None:
        for tmp in self.files.values():
            tmp.unlink(missing_ok=True)
        self.files.clear()
        for folder in reversed(self.created):
            with contextlib.suppress(OSError):
                folder.rmdir()  # only if still empty


def _roll_back(done: list[list[Any]]) -> list[Path]:
    """Undo a partial commit (``[target, backup, moved in]`` entries, last first), each entry on
    its own so one failure does not stop the others; return the backups left unrestored."""
    stuck: list[Path] = []
    for target, backup, moved in reversed(done):
        try:
            if moved:
                target.unlink(missing_ok=True)
            if backup is None:
                continue
            if target.exists():  # stopped before the old file moved aside
                backup.unlink(missing_ok=True)
            else:
                os.replace(backup, target)
        except OSError:
            if backup is not None and backup.exists():
                stuck.append(backup)
    return stuck


_STAGED: contextvars.ContextVar[_Staged | None] = contextvars.ContextVar("staged", default=None)
#: outputs that landed in this process since :func:`reset_committed` (for the interrupt message)
_COMMITTED: list[Path] = []


def reset_committed() -> None:
    """Forget the outputs written so far (a stage calls it when it starts)."""
    _COMMITTED.clear()


def committed() -> list[Path]:
    """The output files that have landed since :func:`reset_committed`, in order."""
    return list(_COMMITTED)


@contextlib.contextmanager
def _signals_held() -> Iterator[None]:
    """Defer SIGINT and SIGTERM: their Python handlers are swapped for one that only records the
    signal, and the original handler runs for it on exit. (Python runs signal handlers in the
    main thread only, so this holds whatever other threads torch or MLflow started; blocking the
    signal with ``pthread_sigmask`` would not: the kernel hands it to a thread that does not
    block it.) Outside the main thread, a no-op: :meth:`_Staged.commit` rolls back instead."""
    held = [
        signum
        for signum in (signal.SIGINT, signal.SIGTERM)
        if signal.getsignal(signum) is not None  # None: a handler set outside Python, left alone
    ]
    if threading.current_thread() is not threading.main_thread() or not held:
        yield
        return
    pending: list[int] = []
    previous: dict[int, Any] = {}
    try:
        for signum in held:
            previous[signum] = signal.signal(signum, lambda n, _f: pending.append(n))
    except BaseException:  # a signal that was pending when the swap began: nothing to hold yet
        _restore_handlers(previous)
        raise
    try:
        yield
    finally:
        interrupted = _restore_handlers(previous)
        for signum in pending:
            handler = previous[signum]
            if callable(handler):
                handler(signum, None)
            elif handler == signal.SIG_DFL:
                signal.raise_signal(signum)
        if interrupted is not None:
            raise interrupted


def _restore_handlers(previous: Mapping[int, Any]) -> BaseException | None:
    """Put every handler back, even when a restored one fires meanwhile (``signal.signal`` runs
    pending handlers before it swaps, so a Ctrl-C after SIGINT's restore would otherwise skip
    SIGTERM's); return what such a handler raised, for the caller to raise once all are back."""
    raised: BaseException | None = None
    for signum, handler in previous.items():
        while True:
            try:
                signal.signal(signum, handler)
                break
            except KeyboardInterrupt as err:  # a handler that fired (SIGINT, SIGTERM): retry
                raised = raised or err
    return raised


def _write_error(path: Path, err: OSError) -> str:
    reason = err.strerror or str(err)
    return (
        f"{path}: cannot write this output ({reason}); check that the path is a file in a "
        "writable folder with free space, or choose another output path"
    )


def _about_writing(err: OSError, tmp: Path) -> bool:
    """Whether an OSError raised while filling ``tmp`` is about writing it (so the message should
    name the target instead of the temp file)."""
    names = {str(getattr(err, "filename", None)), str(getattr(err, "filename2", None))}
    full = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.EACCES, errno.EIO)
    return str(tmp) in names or err.errno in full


def _fsync_file(path: Path) -> None:
    """Flush ``path``'s data to disk before it is renamed onto a target: without it a crash or
    power loss soon after the rename can leave the target empty or truncated on file systems
    that commit the rename before the data (a rename is atomic for the name, not the bytes)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dirs(paths: Iterable[Path]) -> None:
    """Make the renames into the folders of ``paths`` durable (fsync each folder once). Best
    effort: a file system that cannot fsync a folder (some network mounts) is left as it is."""
    for folder in dict.fromkeys(p.parent for p in paths):
        try:
            fd = os.open(folder, os.O_RDONLY)
        except OSError:
            continue
        try:
            with contextlib.suppress(OSError):
                os.fsync(fd)
        finally:
            os.close(fd)


def _temp_beside(path: Path, *, suffix: str = ".tmp") -> Path:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    os.close(fd)
    return Path(tmp)


def _make_parent(path: Path, staged: _Staged | None) -> None:
    missing = [p for p in reversed(path.parents) if not p.exists()]
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ArtifactError(_write_error(path, err)) from err
    if staged is not None:
        staged.created.extend(missing)


@contextlib.contextmanager
def atomic_path(path: str | Path, *, stage: bool = True) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it replaces ``path`` in one step.

    Inside an :func:`atomic_outputs` block the file is only staged: it lands together with the
    block's other outputs when the block succeeds. ``stage=False`` opts out for a file that is not
    one of the block's outputs (a downloaded input that the block reads back at once): it lands
    as soon as its own write succeeds. A failure names ``path``, never the temp file.
    """
    path = Path(path)
    staged = _STAGED.get() if stage else None
    _make_parent(path, staged)
    try:
        tmp_path = _temp_beside(path)
    except OSError as err:
        raise ArtifactError(_write_error(path, err)) from err
    try:
        try:
            yield tmp_path
        except OSError as err:
            if not _about_writing(err, tmp_path):
                raise  # e.g. a failed download inside the block: not a write error
            raise ArtifactError(_write_error(path, err)) from err
        try:
            os.chmod(tmp_path, 0o666 & ~_UMASK)  # mkstemp creates 0600: the usual permissions
            _fsync_file(tmp_path)
            if staged is not None:
                staged.add(path, tmp_path)
                return
            os.replace(tmp_path, path)
            _fsync_dirs([path])
            if stage:  # an output (stage=False: an input the block reads, e.g. a download)
                _COMMITTED.append(path)
        except OSError as err:
            raise ArtifactError(_write_error(path, err)) from err
    finally:
        if staged is None or staged.files.get(path) != tmp_path:
            tmp_path.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_outputs() -> Iterator[None]:
    """All-or-nothing commit of several files: every write inside the block (``write_json``,
    ``save_head``, ``atomic_path``, ...) is staged and the files land together when the block ends
    without error. If anything fails (a later write, a metric, Ctrl-C), no output of the block is
    left and the files it would have replaced are kept. Blocks do not nest."""
    if _STAGED.get() is not None:
        raise RuntimeError("atomic_outputs() blocks do not nest")
    staged = _Staged()
    token = _STAGED.set(staged)
    try:
        yield
        _STAGED.reset(token)
        token = None
        staged.commit()
    except BaseException:
        staged.discard()
        raise
    finally:
        if token is not None:
            _STAGED.reset(token)


def check_writable(*files: str | Path, dirs: Sequence[str | Path] = ()) -> None:
    """Refuse, before any work starts, output paths that cannot be written: a file path that is a
    folder, a folder path that is a file, a parent that is a file, or a read-only folder."""
    for raw, want_dir in [(f, False) for f in files] + [(d, True) for d in dirs]:
        path = Path(raw)
        kind = "folder" if want_dir else "file"
        if path.exists():
            if want_dir and not path.is_dir():
                raise ArtifactError(
                    f"{path}: an output folder is expected here but a file exists; remove it or "
                    "choose another output path"
                )
            if not want_dir and path.is_dir():
                raise ArtifactError(
                    f"{path}: an output file is expected here but a folder exists; remove it or "
                    "choose another output path"
                )
            folder = path if want_dir else path.parent
        else:
            folder = path.parent
            while not folder.exists() and folder != folder.parent:
                folder = folder.parent
            if not folder.is_dir():
                raise ArtifactError(
                    f"{path}: cannot create this output {kind}: {folder} is a file, not a folder; "
                    "choose another output path"
                )
        if not os.access(folder, os.W_OK | os.X_OK):
            raise ArtifactError(
                f"{path}: cannot write this output {kind}: folder {folder} is not writable; "
                "fix its permissions or choose another output path"
            )


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


def _non_finite_key(obj: Any, where: str = "") -> str | None:
    """The key path (``a.b[2]``) of the first NaN/inf float in ``obj``, or None."""
    if isinstance(obj, float | np.floating):
        return None if math.isfinite(obj) else where or "(the value itself)"
    if isinstance(obj, np.ndarray):
        if obj.dtype.kind in "fc" and not np.isfinite(obj).all():
            first = tuple(int(i) for i in np.argwhere(~np.isfinite(obj))[0])
            return f"{where}[{', '.join(map(str, first))}]"
        return None
    if isinstance(obj, Mapping):
        for key in sorted(obj, key=str):
            found = _non_finite_key(obj[key], f"{where}.{key}" if where else str(key))
            if found is not None:
                return found
    elif isinstance(obj, list | tuple):
        for i, item in enumerate(obj):
            found = _non_finite_key(item, f"{where}[{i}]")
            if found is not None:
                return found
    return None


def json_text(obj: Any, *, path: str | Path | None = None) -> str:
    """``obj`` as the pretty JSON text the stages write. NaN/inf are not valid JSON: they raise a
    ``ValueError`` naming the key that holds one (and ``path``, the file it was meant for). A
    non-finite number reaching an output is a bug in the code that computed it, not bad input,
    so it keeps its traceback."""
    try:
        return (
            json.dumps(obj, indent=2, sort_keys=True, default=_json_default, allow_nan=False) + "\n"
        )
    except ValueError as err:
        key = _non_finite_key(obj)
        if key is None:
            raise
        target = f"{path}: " if path is not None else ""
        raise ValueError(
            f"{target}{key} is not a finite number ({err}); JSON has no NaN/inf, so nothing was "
            "written"
        ) from err


def write_json(path: str | Path, obj: Any) -> None:
    """Atomically write ``obj`` as pretty JSON (:func:`json_text`)."""
    write_text(path, json_text(obj, path=path))


def read_json(path: str | Path, *, require: Sequence[str] = ()) -> Any:
    """Read a JSON object written by a stage; a missing, unreadable or malformed file, or one that
    lacks a key of ``require``, is an :class:`ArtifactError` naming the file."""
    path = Path(path)
    if not path.is_file():
        raise ArtifactError(
            f"{path}: file not found; run the stage that writes it first (dvc repro)"
        )
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ArtifactError(
            f"{path}: not valid JSON ({err}); re-run the stage that writes it (dvc repro)"
        ) from err
    if not isinstance(obj, dict):
        raise ArtifactError(
            f"{path}: expected a JSON object, got {type(obj).__name__}; re-run the stage that "
            "writes it (dvc repro)"
        )
    require_keys(obj, require, path=path)
    return obj


def require_keys(obj: Mapping[str, Any], keys: Sequence[str], *, path: str | Path) -> None:
    """Refuse a stage's JSON object ``obj`` (read from ``path``) that lacks a key of ``keys``."""
    missing = [k for k in keys if k not in obj]
    if missing:
        raise ArtifactError(
            f"{path}: missing {', '.join(map(repr, missing))}; re-run the stage that writes it "
            "(dvc repro)"
        )


def write_csv(path: str | Path, rows: Sequence[Mapping[str, Any]]) -> None:
    """Atomically write ``rows`` (dicts with the same keys) as CSV with a header."""
    if not rows:
        raise ValueError(f"{path}: refusing to write an empty CSV")
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    write_text(path, buf.getvalue())


def files_by_epsilon(
    directory: Path, prefix: str, epsilons: Sequence[float], *, what: str = "ε"
) -> dict[float, Path]:
    """``{ε: <directory>/<prefix><ε>.json}`` for every ε of ``epsilons``, whichever way DVC wrote ε
    into the file name (a DVC matrix writes ``4`` or ``4.0`` as params.yaml spells it); a missing
    one is an error naming the file and the fix. Two files of one ε (``eps8.json`` and
    ``eps8.0.json``: one left by a stage of an earlier spelling, which DVC never removes) are an
    error naming both, never a silent pick of either."""
    found: dict[float, list[Path]] = {}
    for path in sorted(directory.glob(f"{prefix}*.json")):
        try:
            found.setdefault(float(path.stem[len(prefix) :]), []).append(path)
        except ValueError:
            continue
    for eps in epsilons:
        if eps not in found:
            raise ArtifactError(
                f"{directory / f'{prefix}{eps:g}.json'}: file not found; run the stages of "
                f"{what} = {eps:g} first (dvc repro)"
            )
        if len(found[eps]) > 1:
            names = " and ".join(str(p) for p in found[eps])
            raise ArtifactError(
                f"{names} both hold {what} = {eps:g}: one was left by a stage of an earlier "
                "spelling of it in params.yaml (4 vs 4.0), which DVC does not remove; delete the "
                "stale file(s) (those dvc.yaml no longer names) and re-run (dvc repro)"
            )
    return {eps: found[eps][0] for eps in epsilons}


def remove_stale(directory: Path, pattern: str, keep: Iterable[Path]) -> list[Path]:
    """Delete the files of ``directory`` matching ``pattern`` that are not in ``keep`` (plots of
    a run that no longer makes them: a re-run outside DVC, which clears declared outputs itself,
    must not leave them beside the new ones); returns what was removed."""
    wanted = {Path(p).resolve() for p in keep}
    gone = [p for p in sorted(directory.glob(pattern)) if p.resolve() not in wanted]
    for p in gone:
        p.unlink()
        log.info("%s: removed, no longer produced by this run", p)
    return gone


def canonical_safetensors(data: bytes) -> bytes:
    """The same safetensors file with its ``__metadata__`` keys sorted.

    The safetensors library keeps metadata in a hash map, so the header's key order (and the file's
    bytes) change from run to run; DVC would then see a new md5 for identical content and re-run
    every downstream stage. Tensor offsets are relative to the end of the header, so rewriting
    the header (padded with spaces to 8 bytes, as the format requires) leaves the data intact.
    """
    n = int.from_bytes(data[:8], "little")
    header = json.loads(data[8 : 8 + n])
    meta = header.pop("__metadata__", None)
    ordered = {"__metadata__": dict(sorted(meta.items()))} if meta else {}
    ordered.update(header)
    text = json.dumps(ordered, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    text += b" " * (-len(text) % 8)
    return len(text).to_bytes(8, "little") + text + data[8 + n :]


# --------------------------------------------------------------------------------------------
# embeddings
# --------------------------------------------------------------------------------------------


def content_fingerprint(x: Mapping[str, np.ndarray], y: Mapping[str, np.ndarray]) -> str:
    """SHA-256 over every split's embeddings and labels (embeddings as float32, labels as int64 or
    uint8 multi-hot, with names and shapes: the dtypes every stage computes in), so two files with
    the same fingerprint hold the same rows, as hashaudit reads them, in the same order with the
    same labels, whatever their metadata says (float64 files that differ only below float32
    precision share one)."""
    return "sha256:" + _split_digest(x, y, hidden=frozenset())


def _split_digest(
    x: Mapping[str, np.ndarray], y: Mapping[str, np.ndarray], *, hidden: frozenset[str]
) -> str:
    """Hex SHA-256 over every split's names, dtypes and shapes, and the content of the splits not
    in ``hidden`` (embeddings as float32, labels as uint8 multi-hot or int64)."""
    h = hashlib.sha256()
    for s in SPLITS:
        ys = y[s]
        for name, arr in (
            (f"{s}_x", np.ascontiguousarray(x[s], dtype=np.float32)),
            (f"{s}_y", np.ascontiguousarray(ys, dtype=np.uint8 if ys.ndim == 2 else np.int64)),
        ):
            h.update(f"{name}:{arr.dtype.str}:{list(arr.shape)};".encode())
            if s not in hidden:
                h.update(memoryview(arr).cast("B"))
    return h.hexdigest()


PUBLIC_PREFIX = "sha256-public"


def public_fingerprint(
    x: Mapping[str, np.ndarray], y: Mapping[str, np.ndarray], *, private: Iterable[str] = ("train",)
) -> str:
    """SHA-256 over the embeddings and labels of the splits not in ``private``, with every split's
    names, dtypes and shapes but not the private splits' content.

    What an artifact under a privacy guarantee records instead of the full
    :func:`content_fingerprint`, a deterministic function of every record, which an adversary
    knowing all records but one could recompute for each candidate (ε = ∞ for that field): a
    DP-SGD head's ``config.json`` (private: train) and a randomised-response or k-anonymous code
    release (private: the released splits, and train for a DP head's release). The split sizes
    are public anyway (privacy/DEFENCES.md). The digest names its private splits, so a check
    recomputes it from the same splits: ``sha256-public:<hex>`` (train private, as DP heads record
    it) or ``sha256-public(test,train):<hex>``."""
    hidden = set(private)
    unknown = hidden - set(SPLITS)
    if unknown:
        raise ValueError(f"private splits {sorted(unknown)}: use some of {', '.join(SPLITS)}")
    label = "" if hidden == {"train"} else "(" + ",".join(sorted(hidden)) + ")"
    return f"{PUBLIC_PREFIX}{label}:{_split_digest(x, y, hidden=frozenset(hidden))}"


def private_splits(digest: str) -> tuple[str, ...] | None:
    """The splits whose content a :func:`public_fingerprint` leaves out, read from its prefix;
    ``None`` for a full content fingerprint."""
    head = digest.partition(":")[0]
    if not head.startswith(PUBLIC_PREFIX):
        return None
    label = head[len(PUBLIC_PREFIX) :]
    if label == "":
        return ("train",)
    hidden = tuple(label[1:-1].split(",")) if label != "()" else ()
    if not (label.startswith("(") and label.endswith(")")) or set(hidden) - set(SPLITS):
        raise ArtifactError(
            f"unreadable embeddings fingerprint {digest[:40]!r}: a public fingerprint names its "
            f"private splits as sha256-public(<some of {','.join(SPLITS)}>):<hex>; re-run the "
            "stage that wrote it"
        )
    return hidden


@dataclass(frozen=True)
class EmbeddingsFile:
    """The contents of one embeddings file: per-split embeddings and labels of one dataset, with
    provenance metadata (the per-split tensors a head trains on are ``hashers.base.EmbeddingSet``)."""

    x: Mapping[str, np.ndarray]
    y: Mapping[str, np.ndarray]
    meta: Mapping[str, str] = field(default_factory=dict)
    #: what a validation error names: the file read (``load_embeddings``), else the dataset
    where: str | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        where = self.where or self.meta.get("dataset", "embeddings")
        validate_embeddings(self.x, self.y, where=where)

    @property
    def dim(self) -> int:
        return int(self.x["train"].shape[1])

    @cached_property
    def fingerprint(self) -> str:
        """Content digest of every split (see :func:`content_fingerprint`)."""
        return content_fingerprint(self.x, self.y)

    @cached_property
    def public_fingerprint(self) -> str:
        """Digest of val and test and of the train split's shape (:func:`public_fingerprint`)."""
        return public_fingerprint(self.x, self.y)

    def digest_like(self, recorded: str) -> str:
        """This file's digest of the kind ``recorded`` is: the full content fingerprint, or the
        :func:`public_fingerprint` over the same private splits."""
        hidden = private_splits(recorded)
        if hidden is None:
            return self.fingerprint
        return public_fingerprint(self.x, self.y, private=hidden)

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
        if xs.shape[1] == 0:
            raise ArtifactError(
                f"{where}: {s}_x has shape {xs.shape}: embeddings of dimension 0; every row needs "
                "at least one value, re-extract the embeddings or fix how the file is written"
            )
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
        if ys.ndim == 2 and ys.size and not np.isin(ys, (0, 1)).all():
            raise ArtifactError(
                f"{where}: {s}_y is a [N, C] matrix but holds values other than 0/1; use "
                "multi-hot labels"
            )
        if xs.shape[0] == 0:
            fix = (
                "add rows to val_x and val_y, or (in your own embeddings file) drop both to have "
                "val carved from train by data.val_fraction"
                if s == "val"
                else f"add rows to {s}_x and {s}_y (every split needs at least one row)"
            )
            raise ArtifactError(f"{where}: split {s!r} is empty ({s}_x has 0 rows); {fix}")
        bad = ~np.isfinite(xs)
        if bad.any():
            row = int(np.argwhere(bad)[0][0])
            raise ArtifactError(
                f"{where}: {s}_x holds {int(bad.sum())} NaN/inf values (first in row {row}); "
                "re-extract the embeddings or drop those rows"
            )
        # squared distances (float KNN, pairwise losses, LayerNorm variances) reach
        # 4 * dim * max|x|^2; beyond float32's range they overflow to inf and every
        # distance ties, so such a file would give silently wrong neighbours
        peak = max(float(xs.max()), -float(xs.min()))  # no |x| copy of a large matrix
        limit = math.sqrt(float(np.finfo(np.float32).max) / (4.0 * dim))
        if peak > limit:
            raise ArtifactError(
                f"{where}: {s}_x holds values up to {peak:.3g} in magnitude; squared distances "
                f"between such rows overflow float32 (limit about {limit:.3g} at dimension "
                f"{dim}); rescale the embeddings (e.g. standardise each feature)"
            )
    if len({y[s].ndim for s in SPLITS}) != 1:
        raise ArtifactError(f"{where}: label layout differs between splits (mix of [N] and [N, C])")
    widths = {s: y[s].shape[1] for s in SPLITS if y[s].ndim == 2}
    if len(set(widths.values())) > 1:
        shown = ", ".join(f"{s}_y has {c}" for s, c in widths.items())
        raise ArtifactError(
            f"{where}: multi-hot label matrices differ in their number of classes ({shown} "
            "columns); every split needs the same class columns"
        )


def save_embeddings(path: str | Path, emb: EmbeddingsFile) -> None:
    tensors: dict[str, np.ndarray] = {}
    for s in SPLITS:
        tensors[f"{s}_x"] = np.ascontiguousarray(emb.x[s], dtype=np.float32)
        y = emb.y[s]
        tensors[f"{s}_y"] = np.ascontiguousarray(y.astype(np.uint8 if y.ndim == 2 else np.int64))
    meta = {"format": EMBEDDINGS_FORMAT, "dim": str(emb.dim), "n_classes": str(emb.n_classes)}
    meta.update({k: str(v) for k, v in emb.meta.items()})
    meta["format"] = EMBEDDINGS_FORMAT
    meta["fingerprint"] = content_fingerprint(
        {s: tensors[f"{s}_x"] for s in SPLITS}, {s: tensors[f"{s}_y"] for s in SPLITS}
    )
    write_bytes(path, canonical_safetensors(np_save_bytes(tensors, metadata=meta)))


#: the safetensors dtypes NumPy holds (``safetensors.numpy``); others are read through torch
_NUMPY_DTYPES = frozenset(
    {"F64", "F32", "F16", "I64", "U64", "I32", "U32", "I16", "U16", "I8", "U8", "BOOL", "C64"}
)


def _read_safetensors_numpy(path: Path) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """Tensors and metadata of a safetensors file. NumPy has no bfloat16 or float8: such tensors
    (torch's ``save_file`` of half- or quarter-precision embeddings) are read through torch and
    widened to float32, which holds every bf16 and float8 value exactly; a dtype torch cannot
    widen either (packed float4) is refused, naming the tensor."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="numpy") as f:
            meta = dict(f.metadata() or {})
            names = list(f.keys())  # a safe_open handle is not iterable
            dtypes = {k: f.get_slice(k).get_dtype() for k in names}
        narrow = [k for k in names if dtypes[k] not in _NUMPY_DTYPES]
        if narrow:
            wide: dict[str, np.ndarray] = {}
            with safe_open(str(path), framework="pt") as f:
                for k in narrow:
                    try:
                        wide[k] = f.get_tensor(k).float().numpy()
                    except (RuntimeError, TypeError) as err:  # NotImplementedError: a RuntimeError
                        raise ArtifactError(
                            f"{path}: tensor {k!r} has dtype {dtypes[k]}, which cannot be read "
                            "as float32; save it as float32 (embeddings) or int64 (labels)"
                        ) from err
            with safe_open(str(path), framework="numpy") as f:
                tensors = {k: wide[k] if k in wide else f.get_tensor(k) for k in names}
        else:
            tensors = np_load_file(str(path))
    except ArtifactError:
        raise
    except (SafetensorError, OSError, ValueError) as err:
        raise ArtifactError(
            f"{path}: not a readable safetensors file ({err}); re-create it"
        ) from err
    return tensors, meta


def _read_npz(path: Path) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    try:
        loaded = np.load(path, allow_pickle=False)
        if not isinstance(loaded, np.lib.npyio.NpzFile):  # .npy content: one unnamed array
            raise ArtifactError(
                f"{path}: holds one {loaded.dtype} {loaded.shape} array (the .npy format), not "
                "an .npz archive of named arrays; save it with np.savez(path, train_x=..., "
                "train_y=..., test_x=..., test_y=...)"
            )
        with loaded as z:
            tensors = {k: z[k] for k in z.files}
    except ArtifactError:
        raise
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as err:
        raise ArtifactError(
            f"{path}: not a readable .npz file ({err}); it may be truncated, re-create it"
        ) from err
    meta = {}
    if "meta" in tensors:  # optional JSON object, stored as a string array
        text = str(tensors.pop("meta"))
        try:
            meta = json.loads(text)
        except json.JSONDecodeError as err:
            raise ArtifactError(
                f"{path}: its 'meta' entry is not JSON ({err}: {text[:80]!r}); store a JSON "
                "object of strings, e.g. meta=np.array(json.dumps({'task': 'multi-class'})), "
                "or leave meta out"
            ) from err
        if not isinstance(meta, dict):
            raise ArtifactError(
                f"{path}: its 'meta' entry is JSON {type(meta).__name__} {text[:80]!r}, not an "
                "object; store a JSON object of strings, e.g. "
                "meta=np.array(json.dumps({'task': 'multi-class'})), or leave meta out"
            )
    # metadata values are strings (as in safetensors); a JSON list or number is kept as JSON text
    return tensors, {k: v if isinstance(v, str) else json.dumps(v) for k, v in meta.items()}


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
    _check_declared_classes(path, y, meta)
    return x, y, meta


def _check_declared_classes(
    path: Path, y: Mapping[str, np.ndarray], meta: Mapping[str, str]
) -> None:
    """Labels must fit the class count the file's metadata declares (if it declares one)."""
    declared = str(meta.get("n_classes", "")).strip()
    if not declared:
        return
    if not declared.isdigit() or int(declared) < 1:
        raise ArtifactError(
            f"{path}: metadata n_classes={declared!r} is not a positive integer; fix or drop it"
        )
    n = int(declared)
    for s, ys in y.items():
        if ys.ndim == 2 and ys.shape[1] != n:
            raise ArtifactError(
                f"{path}: {s}_y has {ys.shape[1]} label columns but the metadata declares "
                f"n_classes={n}; fix the labels or the metadata"
            )
        if ys.ndim == 1 and ys.size and np.issubdtype(ys.dtype, np.integer) and ys.max() >= n:
            raise ArtifactError(
                f"{path}: {s}_y holds class id {int(ys.max())} but the metadata declares "
                f"n_classes={n} (ids 0..{n - 1}); fix the labels or the metadata"
            )


def sparse_class_ids(labels: Sequence[np.ndarray], *, declared: int | None) -> str | None:
    """What is wrong with single-label class ids that leave most of ``0..max`` unused, or None.

    hashaudit takes the largest class id + 1 as the number of classes (one KNN class, one
    confusion row, one CSQ center per id), so ids like ``{1000, 2000, 3000}`` would make 3001
    classes, and ids near ``1e10`` exhaust memory. The rule: with ``C = max id + 1`` and ``U`` the
    ids of ``0..C-1`` that no row holds (all splits together), ids are refused when ``2 U > C``
    (more than half of ``0..max`` unused) and ``C`` exceeds ``declared`` (the number of classes the
    source declares, e.g. an embeddings file's ``n_classes`` or ``class_names`` metadata; None: no
    declaration). One gap (a subset lacking one class) or 1-based ids stay accepted."""
    present = np.unique(np.concatenate([np.asarray(y).reshape(-1) for y in labels]))
    if present.size == 0:
        return None
    span = int(present[-1]) + 1
    unused = span - int(present.size)
    if (declared is not None and span <= declared) or 2 * unused <= span:
        return None
    shown = ", ".join(str(int(i)) for i in present[:8])
    if present.size > 8:
        shown += f", ... ({present.size} distinct ids)"
    return (
        f"class ids {{{shown}}} leave {unused} of the {span} ids 0..{span - 1} unused; hashaudit "
        f"takes the largest id + 1 as the number of classes, so these labels would make {span} "
        f"classes for {present.size} that occur"
    )


def load_embeddings(path: str | Path, *, dataset: str | None = None) -> EmbeddingsFile:
    """Read a complete embeddings file (all of train/val/test). ``dataset``: the stage's
    ``--dataset``, refused when the file's metadata names another data set (its outputs would be
    filed, tagged and reported under the wrong name)."""
    x, y, meta = read_embeddings_raw(path)
    recorded_dataset = meta.get("dataset")
    if dataset is not None and recorded_dataset and recorded_dataset != dataset:
        raise ArtifactError(
            f"--dataset {dataset}: {path} holds embeddings of dataset {recorded_dataset!r} (its "
            f"metadata); pass --dataset {recorded_dataset}, or the embeddings of {dataset} "
            f"(artifacts/embeddings/{dataset}.safetensors)"
        )
    as_ids = {
        s: v.astype(np.int64)
        if v.ndim == 1 and (np.issubdtype(v.dtype, np.integer) or v.dtype == np.bool_)
        else v
        for s, v in y.items()
    }
    if all(  # a user file given straight to a stage; float labels are refused elsewhere
        v.ndim == 1 and (np.issubdtype(v.dtype, np.integer) or v.dtype == np.bool_)
        for v in as_ids.values()
    ):
        try:
            n_names = len(json.loads(meta.get("class_names") or "[]"))
        except (ValueError, TypeError):
            n_names = 0  # unreadable names declare nothing
        declared = max(
            int(meta["n_classes"]) if str(meta.get("n_classes", "")).isdigit() else 0, n_names
        )
        problem = sparse_class_ids(list(as_ids.values()), declared=declared or None)
        if problem is not None:
            raise ArtifactError(
                f"{path}: {problem}. Class ids must be 0..C-1: remap them over all splits "
                "together (e.g. ids, y_all = np.unique(y_all, return_inverse=True)) and store the "
                "original ids as class_names (a JSON list) in the file's metadata"
            )
    emb = EmbeddingsFile(x=x, y=as_ids, meta=meta, where=str(path))
    recorded = meta.get("fingerprint")
    if recorded is not None and recorded != emb.fingerprint:
        raise ArtifactError(
            f"{path}: its content does not match the fingerprint recorded in its metadata (the "
            "arrays or labels were changed after it was written, or the file is corrupt); "
            "re-create it (dvc repro extract), or drop the fingerprint entry if you edited it "
            "on purpose"
        )
    return emb


def check_same_embeddings(
    expected: str | None,
    emb: EmbeddingsFile,
    *,
    embeddings_path: Path,
    recorded_in: Path,
) -> None:
    """Refuse an embeddings file whose fingerprint differs from the one recorded in another
    artifact (a head's ``config.json``, a float-metrics JSON, ...): pairing codes or metrics with
    other rows or labels gives silently wrong numbers. Every stage that combines an artifact with
    an embeddings file calls this (evaluate, and the attack stage). A recorded
    :func:`public_fingerprint` (a DP head, a code release) is compared with this file's digest over
    the same private splits, which cannot see a change of their rows that keeps their number."""
    if expected is None:
        raise ArtifactError(
            f"{recorded_in}: records no embeddings fingerprint (written by an older hashaudit); "
            f"re-run the stage that writes it (dvc repro) before combining it with {embeddings_path}"
        )
    if not isinstance(expected, str):  # a hand-edited file: an AttributeError deep inside
        raise ArtifactError(
            f"{recorded_in}: its embeddings fingerprint is {expected!r}, not a 'sha256:...' text; "
            "re-run the stage that writes it (dvc repro)"
        )
    got = emb.digest_like(expected)
    if expected != got:
        hidden = private_splits(expected)
        if hidden is None:
            what = "other rows, labels or order"
        else:
            shown = [s for s in SPLITS if s not in hidden]
            what = "/".join(shown) + " rows or labels, or " if shown else ""
            what += f"the {'/'.join(s for s in SPLITS if s in hidden)} split's size"
        raise ArtifactError(
            f"{recorded_in} was made from embeddings with fingerprint {expected[:26]}..., but "
            f"{embeddings_path} has fingerprint {got[:26]}... ({what}); pass the embeddings file "
            "it was made from, or re-run its stage on this file (dvc repro)"
        )


#: the private splits of every public fingerprint a stage records: a DP head (train), a code
#: release of the database (train), of the queries (test) or of both, and a DP head's release
PUBLIC_VARIANTS: tuple[tuple[str, ...], ...] = (("train",), ("test",), ("test", "train"))


def public_fingerprint_key(private: Iterable[str]) -> str:
    """The float metrics' key of the public fingerprint over ``private`` hidden:
    ``embeddings_public_fingerprint_test_train``."""
    return "embeddings_public_fingerprint_" + "_".join(sorted(private))


def fingerprint_record(emb: EmbeddingsFile) -> dict[str, str]:
    """What the float KNN metrics record about their embeddings: the content fingerprint and the
    public fingerprint of every :data:`PUBLIC_VARIANTS`, so that a stage reading metrics only
    (curves, report) can tell whether a head's, DP head's or release's numbers come from the
    same embeddings (:func:`check_metrics_fingerprint`) without the embeddings file."""
    out = {"embeddings_fingerprint": emb.fingerprint}
    for private in PUBLIC_VARIANTS:
        out[public_fingerprint_key(private)] = public_fingerprint(emb.x, emb.y, private=private)
    return out


def check_float_knn(
    record: Mapping[str, Any], path: Path, reference: Mapping[str, Any], reference_path: Path
) -> None:
    """Refuse an evaluate file whose retentions divide by another float KNN run than the float
    metrics ``reference`` (read from ``reference_path``) that a report, curve or table shows
    beside them: its ``k`` and every ``float_<metric>`` it records (``float_accuracy``,
    ``float_balanced_accuracy``, ``float_macro_f1``) must be their ``k`` and ``<metric>`` (the
    same embeddings, but knn re-run since at another ``knn.k`` or ``knn.metric``; accuracy alone
    can agree while balanced accuracy, the headline retention's divisor, does not). Keys a file
    does not record are not compared."""
    floats = [
        (key, key.removeprefix("float_")) for key in sorted(record) if key.startswith("float_")
    ]
    for ours, theirs in (("k", "k"), *floats):
        value, expected = record.get(ours), reference.get(theirs)
        if value is not None and expected is not None and value != expected:
            raise ArtifactError(
                f"{path}: {ours} = {value}, but the float KNN {reference_path} records "
                f"{theirs} = {expected}: its retentions divide by another float KNN run (knn "
                "re-run since, at another knn.k or knn.metric); re-run its evaluate stage "
                "(dvc repro)"
            )


def check_metrics_fingerprint(
    recorded: Any, reference: Mapping[str, Any], *, recorded_in: Path, reference_path: Path
) -> None:
    """Refuse a metrics file whose ``embeddings_fingerprint`` (content, or public over some
    private splits) is not the one the float KNN metrics ``reference`` record for that kind:
    putting it in one table or plot with the float baseline would compare numbers of two data
    sets. Missing records (files of an older hashaudit) are refused too, naming what to re-run."""
    if not isinstance(recorded, str) or not recorded:
        raise ArtifactError(
            f"{recorded_in}: records no embeddings_fingerprint (written by an older hashaudit); "
            "re-run the stage that writes it (dvc repro)"
        )
    hidden = private_splits(recorded)
    key = "embeddings_fingerprint" if hidden is None else public_fingerprint_key(hidden)
    expected = reference.get(key)
    if expected is None:
        raise ArtifactError(
            f"{reference_path}: records no {key} (written by an older hashaudit); re-run the knn "
            "stage (dvc repro knn@<dataset>)"
        )
    if recorded != expected:
        raise ArtifactError(
            f"{recorded_in} was made from other embeddings than the float baseline "
            f"{reference_path} ({key} {recorded[:26]}... vs {str(expected)[:26]}...); its stage "
            "ran on an older or another embeddings file: re-run it on the current one (dvc repro)"
        )


def recorded_fingerprint(config: Mapping[str, Any]) -> str | None:
    """The embeddings fingerprint a head's or release's ``config.json`` records: its content
    ``fingerprint``, or the ``public_fingerprint`` of a DP head or a code release."""
    block = config.get("embeddings") or {}
    if not isinstance(block, Mapping):  # a hand-edited config.json: checked by its readers
        return block  # type: ignore[return-value]
    return block.get("fingerprint", block.get("public_fingerprint"))


def reported_fingerprint(emb: EmbeddingsFile, config: Mapping[str, Any] | None) -> str:
    """The embeddings digest an output about a head or release (its metrics file) records: of the
    kind its ``config.json`` records (:func:`recorded_fingerprint`), so a file about a DP head or
    a code release carries no digest of the records its guarantee covers; the full content
    fingerprint for a plain head, or without a ``config``."""
    recorded = None if config is None else recorded_fingerprint(config)
    return emb.fingerprint if recorded is None else emb.digest_like(recorded)


def check_head_embeddings(
    head_config: Mapping[str, Any], emb: EmbeddingsFile, *, head_dir: Path, embeddings_path: Path
) -> None:
    """A trained head (its ``config.json``) must have been trained on exactly ``emb``: same
    backbone, pooling and dimension, and the same content fingerprint (a DP head: the same
    :func:`public_fingerprint`)."""
    trained = head_config.get("embeddings") or {}
    if not isinstance(trained, Mapping):
        raise ArtifactError(
            f"{head_dir / 'config.json'}: its 'embeddings' is {trained!r}, not the block the train "
            "stage writes (backbone, pooling, dim, fingerprint); re-run the train stage (dvc repro)"
        )
    for key in ("backbone", "pooling", "dim"):
        want = str(trained.get(key))
        got = str(emb.dim if key == "dim" else emb.meta.get(key))
        if want != got:
            raise ArtifactError(
                f"{head_dir / 'config.json'}: the head was trained on embeddings with {key}={want!r} "
                f"but {embeddings_path} has {key}={got!r}; re-run the train stage on these "
                "embeddings (dvc repro) or pass the file the head was trained on"
            )
    check_same_embeddings(
        recorded_fingerprint(head_config),
        emb,
        embeddings_path=embeddings_path,
        recorded_in=head_dir / "config.json",
    )


# --------------------------------------------------------------------------------------------
# trained heads
# --------------------------------------------------------------------------------------------


def save_head(directory: str | Path, state: Mapping[str, Any], config: Mapping[str, Any]) -> str:
    """Write ``head.safetensors`` (the state dict) and ``config.json`` (the resolved config);
    return the weights file's SHA-256 (its codes record it as ``head_sha256``, see
    :func:`load_head_codes`)."""
    from safetensors.torch import save as torch_save_bytes  # torch only where heads are

    directory = Path(directory)
    tensors = {k: v.detach().cpu().contiguous() for k, v in state.items()}
    data = canonical_safetensors(torch_save_bytes(tensors, metadata={"format": "hashaudit.head/1"}))
    write_bytes(directory / "head.safetensors", data)
    write_json(directory / "config.json", dict(config))
    return hashlib.sha256(data).hexdigest()


def load_head(directory: str | Path) -> tuple[dict[str, Any], dict[str, Any]]:
    from safetensors.torch import load_file as torch_load_file

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
    tensors = {s: np.ascontiguousarray(a) for s, a in packed.items()}
    write_bytes(path, canonical_safetensors(np_save_bytes(tensors, metadata=md)))


def load_codes(
    path: str | Path, *, require: Sequence[str] = ("train", "test")
) -> tuple[dict[str, np.ndarray], int, dict[str, str]]:
    """Packed codes per split, their bit count and the file's metadata. Refused unless the file
    holds every split in ``require`` and each array is ``uint8 [N, ceil(n_bits / 8)]`` with
    ``n_bits >= 1`` (a hand-made or foreign file otherwise failed later with a KeyError, or
    searched a wrong width)."""
    path = Path(path)
    if not path.is_file():
        raise ArtifactError(f"{path}: codes file not found; run the train stage first")
    tensors, meta = _read_safetensors_numpy(path)
    if (
        meta.get("format") != CODES_FORMAT
        or not str(meta.get("n_bits", "")).isdigit()
        or int(meta["n_bits"]) < 1
    ):
        raise ArtifactError(
            f"{path}: not a hashaudit codes file (format={meta.get('format')!r}, "
            f"n_bits={meta.get('n_bits')!r}); re-run the train stage"
        )
    n_bits = int(meta["n_bits"])
    n_bytes = math.ceil(n_bits / 8)
    if meta.get("bitorder", "little") != "little":  # every codes file written records "little"
        raise ArtifactError(
            f"{path}: codes packed in bitorder={meta['bitorder']!r}, but hashaudit reads "
            "little-endian packed bits (numpy.packbits(..., bitorder='little'), "
            "retrieval.codes.pack_bits); re-pack them little-endian and record bitorder='little', "
            "or re-run the train stage"
        )
    missing = [s for s in dict.fromkeys(require) if s not in tensors]
    if missing:
        raise ArtifactError(
            f"{path}: no {' or '.join(repr(s) for s in missing)} codes (the file holds "
            f"{', '.join(repr(s) for s in sorted(tensors)) or 'no arrays'}); a codes file needs "
            f"uint8 [N, {n_bytes}] arrays named {', '.join(repr(s) for s in require)} "
            "(artifacts.save_codes); re-run the train stage or re-save the codes with those splits"
        )
    for split, arr in tensors.items():
        if arr.dtype != np.uint8 or arr.ndim != 2 or arr.shape[1] != n_bytes:
            raise ArtifactError(
                f"{path}: {split!r} codes are {arr.dtype} {tuple(arr.shape)}, but {n_bits}-bit "
                f"codes are packed uint8 [N, {n_bytes}] (retrieval.codes.pack_bits); re-run the "
                "train stage or re-pack the codes"
            )
    return tensors, n_bits, meta


def load_head_codes(
    head_dir: str | Path, *, require: Sequence[str] = ("train", "test")
) -> tuple[dict[str, np.ndarray], int, dict[str, str]]:
    """:func:`load_codes` of ``<head_dir>/codes.safetensors``, refused when they were encoded by
    another head than ``<head_dir>/head.safetensors`` (the SHA-256 the train stage records as
    ``head_sha256``): a folder mixing two runs' files (restored by hand, copied over, left by a
    crash of an older version) would otherwise be evaluated and attacked as one head. Release
    folders hold no weights and codes made before the digest was recorded have none: both load
    unchecked."""
    head_dir = Path(head_dir)
    codes_path, weights = head_dir / "codes.safetensors", head_dir / "head.safetensors"
    codes, n_bits, meta = load_codes(codes_path, require=require)
    recorded = meta.get("head_sha256")
    if recorded and weights.is_file():
        actual = file_sha256(weights)
        if actual != recorded:
            raise ArtifactError(
                f"{codes_path}: encoded by another head (recorded head_sha256 {recorded[:12]}..., "
                f"{weights.name} has {actual[:12]}...); the folder mixes files of two "
                "train runs: re-run its train stage (dvc repro --force train@<dataset>-<method>)"
            )
    return codes, n_bits, meta


def file_sha256(path: str | Path, *, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file's bytes, read ``chunk`` bytes at a time."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()
