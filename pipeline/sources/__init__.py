"""Data sources: one module per kind behind one small interface, and the ``{kind: module}`` table.

A source module (see :class:`Source`) defines

* ``YIELDS``: ``"images"`` (``load`` returns a :class:`pipeline.data.ImageDataset`, which the extract
  stage embeds with the backbone) or ``"embeddings"`` (``load`` returns ready
  :class:`pipeline.artifacts.EmbeddingsFile`, written as they are);
* ``load(name, source, data, *, seed)``: the dataset ``name`` from its ``data.sources`` entry
  ``source`` and the shared ``data`` block, with train/val/test splits (finish with
  :func:`pipeline.data.complete_splits` so carving and ``data.limit`` behave as everywhere else);

and optionally

* ``KEYS``: the entry's keys the kind reads besides ``kind``; a key outside it set to anything but
  its default is refused when ``params.yaml`` is parsed (it would be silently ignored; a key set
  to its default value cannot be told from an absent one and is accepted);
* ``check_config(source)``: kind-specific checks of the params entry, run when ``params.yaml`` is
  parsed (raise :class:`pipeline.config.ParamsError`, e.g. through ``pipeline.config.check``);
* ``resolve(name, source)``: the entry completed with defaults that depend on the dataset name;
* ``inputs(name, source, data)``: the local files or folders ``load`` reads that params cannot
  pin (a user's own data), digested by the ``source`` stage so that DVC re-runs extract when
  they change (:mod:`pipeline.source_stamp`); none when absent.

Adding a source = one module here + one line in :data:`SOURCES` + tests. Modules are imported lazily,
so the params check (``SourceConfig.kind`` reads this table) stays cheap.
"""

from __future__ import annotations

import dataclasses
import importlib
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any, Literal, Protocol

if TYPE_CHECKING:  # pragma: no cover
    from pipeline.config import DataConfig, SourceConfig

SOURCES: dict[str, str] = {
    "medmnist": "pipeline.sources.medmnist",
    "huggingface": "pipeline.sources.huggingface",
    "imagefolder": "pipeline.sources.imagefolder",
    "embeddings": "pipeline.sources.embeddings",
}


class Source(Protocol):
    """The interface of a source module."""

    YIELDS: Literal["images", "embeddings"]

    def load(self, name: str, source: SourceConfig, data: DataConfig, *, seed: int) -> Any: ...


def kinds() -> tuple[str, ...]:
    """The registered source kinds, in table order."""
    return tuple(SOURCES)


def get(kind: str) -> Source | ModuleType:
    """The module of source ``kind`` (imported on first use)."""
    if kind not in SOURCES:
        raise KeyError(f"unknown source kind {kind!r}; registered: {', '.join(SOURCES)}")
    module = importlib.import_module(SOURCES[kind])
    if getattr(module, "YIELDS", None) not in ("images", "embeddings") or not callable(
        getattr(module, "load", None)
    ):  # pragma: no cover - guards the table above
        raise TypeError(f"source module {SOURCES[kind]} lacks YIELDS or load()")
    return module


def yields_images(kind: str) -> bool:
    """Whether source ``kind`` gives images (embedded by the backbone) rather than embeddings."""
    return get(kind).YIELDS == "images"


def check_config(source: SourceConfig) -> None:
    """Refuse keys the kind does not read (its ``KEYS``), then run its ``check_config`` hook."""
    from pipeline.config import ParamsError

    module = get(source.kind)
    keys = getattr(module, "KEYS", None)
    if keys is not None:
        for f in dataclasses.fields(source):
            if f.name == "kind" or f.name in keys or getattr(source, f.name) == f.default:
                continue
            reads = ", ".join(keys) if keys else "nothing else"
            raise ParamsError(
                f"{f.name}: the {source.kind} source does not read {f.name} (it reads kind, {reads}); "
                f"remove {f.name}: {getattr(source, f.name)!r}"
            )
    hook = getattr(module, "check_config", None)
    if hook is not None:
        hook(source)


def resolve(name: str, source: SourceConfig) -> SourceConfig:
    """The entry of dataset ``name`` completed by the module's optional ``resolve`` hook."""
    hook = getattr(get(source.kind), "resolve", None)
    return source if hook is None else hook(name, source)


def inputs(name: str, source: SourceConfig, data: DataConfig) -> list[Path]:
    """The local inputs of dataset ``name`` (its module's optional ``inputs`` hook; else none)."""
    hook = getattr(get(source.kind), "inputs", None)
    return [] if hook is None else [Path(p) for p in hook(name, source, data)]


def load(name: str, source: SourceConfig, data: DataConfig, *, seed: int) -> Any:
    """Load dataset ``name``: an ``ImageDataset`` or ``EmbeddingsFile``, as the kind's ``YIELDS`` says."""
    return get(source.kind).load(name, source, data, seed=seed)
