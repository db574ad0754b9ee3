"""Stage ``extract``: frozen-backbone embeddings of one dataset, written as one safetensors file.

Three layers (ARCHITECTURE.md §4):

* :func:`embed_images` — the maths: a batched forward pass over one split, under ``inference_mode``,
  with a progress bar in images/s;
* :func:`extract_dataset` — the I/O: loads the dataset through its source (:mod:`pipeline.sources`)
  and, for image sources, the backbone; writes the standard embeddings file atomically, only once
  every split has succeeded;
* :func:`main` — argument parsing; :func:`run_extract` adds the MLflow run and the metrics JSON.

A source that yields ready embeddings (``kind: embeddings``, :mod:`pipeline.sources.embeddings`) is
rewritten in the standard layout; no backbone is loaded. Only parameters and aggregate numbers are
logged, never images or embeddings.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from pipeline import sources, tracking
from pipeline.artifacts import (
    SPLITS,
    ArtifactError,
    EmbeddingsFile,
    atomic_outputs,
    check_writable,
    save_embeddings,
)
from pipeline.backbones import Backbone, load_backbone
from pipeline.common import base_parser, load, run_main
from pipeline.config import Params, to_dict
from pipeline.data import (
    DUPLICATES_KEY,
    IMAGES_DIGEST_KEY,
    ImageDataset,
    ImagesDigest,
    ImageSplit,
    cross_split_duplicates,
)
from pipeline.sources.embeddings import USER_SUPPLIED

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------------------------
# maths: one split through the backbone
# --------------------------------------------------------------------------------------------


def _one_ahead(fn: Callable[[Any], Any], items: Iterable[Any], *, name: str) -> Iterator[Any]:
    """``fn(item)`` for every item, in order, each computed in a thread while the caller uses the
    previous result (one item ahead)."""
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix=name) as pool:
        ahead: Future | None = None
        for item in items:
            current, ahead = ahead, pool.submit(fn, item)
            if current is not None:
                yield current.result()
        if ahead is not None:
            yield ahead.result()


def _batches(split: ImageSplit, batch_size: int) -> Iterator[tuple[int, Any]]:
    """(start, images) per batch; lazily decoded images are read one batch ahead in a thread."""
    n = len(split)
    starts = range(0, n, batch_size)
    arr = split.as_array()
    if arr is not None:
        for s in starts:
            yield s, arr[s : s + batch_size]
        return

    def read(start: int) -> tuple[int, Any]:
        stop = min(n, start + batch_size)
        images = split.get_batch(np.arange(start, stop))
        if len(images) != stop - start:  # the rows it left out would stay unset (np.empty)
            reader = split.reader
            while hasattr(reader, "rows") and hasattr(reader, "reader"):  # limit / carve subsets
                reader = reader.reader
            raise RuntimeError(
                f"{type(reader).__name__}.read returned {len(images)} images for the "
                f"{stop - start} positions {start}..{stop - 1} of a split; an ImageReader must "
                "return one image per position asked, in order (raise DataError for a bad image)"
            )
        return start, images

    yield from _one_ahead(read, starts, name="decode")


def _digested(
    batches: Iterator[tuple[int, Any]], digest: ImagesDigest
) -> Iterator[tuple[int, Any]]:
    """``batches`` unchanged, each batch's images fed to ``digest`` in order as it passes."""
    for start, images in batches:
        digest.update(images)
        yield start, images


def embed_images(
    backbone: Backbone,
    split: ImageSplit,
    *,
    batch_size: int,
    progress: bool = True,
    desc: str = "extract",
    digest: ImagesDigest | None = None,
) -> np.ndarray:
    """Embeddings ``float32 [N, backbone.dim]`` of every image of ``split``, in order, batched;
    ``digest``, if given, is fed every image in row order (:class:`pipeline.data.ImagesDigest`).

    On a GPU the next batch is preprocessed (CPU resize, pinned copy) in a thread while the
    current one runs through the backbone, so a fast bf16 forward is not held up by the resize.
    On the CPU both compete for the same cores, so batches are processed in turn.
    """
    n = len(split)
    out = np.empty((n, backbone.dim), dtype=np.float32)

    def prepare(item: tuple[int, Any]) -> tuple[int, Any]:
        return item[0], backbone.preprocess(item[1])

    batches = _batches(split, batch_size)
    if digest is not None:
        batches = _digested(batches, digest)
    if backbone.device.type == "cuda":
        prepared = _one_ahead(prepare, batches, name="preprocess")
    else:
        prepared = map(prepare, batches)
    with tqdm(total=n, unit="img", desc=desc, disable=not progress, dynamic_ncols=True) as bar:
        for start, pixels in prepared:
            emb = backbone.embed(pixels)
            out[start : start + len(emb)] = emb.cpu().numpy()
            bar.update(len(emb))
    return out


# --------------------------------------------------------------------------------------------
# image sources
# --------------------------------------------------------------------------------------------


def image_metadata(
    name: str, ds: ImageDataset, backbone: Backbone, *, seed: int, limit: int | None
) -> dict[str, str]:
    """The provenance metadata written into the embeddings file."""
    meta = {
        "dataset": name,
        "task": ds.task,
        "class_names": json.dumps(ds.class_names),
        "n_classes": str(ds.n_classes),
        "backbone": backbone.name,
        "revision": backbone.revision,
        "image_size": str(backbone.image_size),
        "resize": backbone.resize,
        "pooling": backbone.pooling,
        "dtype": backbone.dtype,
        "dim": str(backbone.dim),
        "image_mean": json.dumps(list(backbone.image_mean)),  # the normalisation actually used
        "image_std": json.dumps(list(backbone.image_std)),
        "normalisation": backbone.normalisation,  # imagenet or preprocessor_config.json
        "seed": str(seed),
        "limit": "null" if limit is None else str(limit),
    }
    meta.update({k: str(v) for k, v in ds.source_info.items()})
    return meta


def extract_images(
    params: Params, name: str, ds: ImageDataset, *, progress: bool = True
) -> tuple[EmbeddingsFile, dict[str, Any]]:
    """Load the backbone and embed every split of ``ds``; returns embeddings and metrics."""
    backbone = load_backbone(params.backbone, seed=params.seed)
    x: dict[str, np.ndarray] = {}
    digests = {s: ImagesDigest() for s in SPLITS}
    seconds = 0.0
    for s in SPLITS:
        t0 = time.perf_counter()
        x[s] = embed_images(
            backbone,
            ds.splits[s],
            batch_size=params.backbone.batch_size,
            progress=progress,
            desc=f"{name}/{s}",
            digest=digests[s],
        )
        seconds += time.perf_counter() - t0
    n_total = sum(len(ds.splits[s]) for s in SPLITS)
    duplicates = cross_split_duplicates(digests)
    warn_duplicates(name, duplicates)
    emb = EmbeddingsFile(
        x=x,
        y={s: ds.splits[s].labels for s in SPLITS},
        meta=image_metadata(name, ds, backbone, seed=params.seed, limit=params.data.limit)
        | {
            IMAGES_DIGEST_KEY: json.dumps({s: d.hexdigest() for s, d in digests.items()}),
            DUPLICATES_KEY: json.dumps(duplicates),
        },
    )
    metrics = {
        "images_per_s": n_total / seconds if seconds > 0 else 0.0,
        "embed_seconds": seconds,
        **{f"duplicates_{s}": len(set().union(*duplicates.get(s, {}).values())) for s in SPLITS},
    }
    return emb, metrics


def warn_duplicates(name: str, duplicates: Mapping[str, Mapping[str, Sequence[int]]]) -> None:
    """One warning per pair of splits sharing byte-identical images (the count and a few rows;
    the embeddings file records every row under ``duplicate_rows``)."""
    for split, others in duplicates.items():
        for other, rows in others.items():
            if split < other:  # each pair once: the rows on both sides
                mine, theirs = (
                    ", ".join(map(str, r[:5])) + (", ..." if len(r) > 5 else "")
                    for r in (rows, duplicates[other][split])
                )
                log.warning(
                    "%s: %d %s image(s) (rows %s) are byte-identical to %d %s image(s) (rows %s); "
                    "membership inference leaves a test copy of a training image out of its "
                    "non-members, and retrieval scores such a query against its own copy",
                    name,
                    len(rows),
                    split,
                    mine,
                    len(duplicates[other][split]),
                    other,
                    theirs,
                )


# --------------------------------------------------------------------------------------------
# I/O and entry point
# --------------------------------------------------------------------------------------------


def extract_dataset(
    params: Params, name: str, out_path: str | Path, *, progress: bool = True
) -> dict[str, Any]:
    """Write the embeddings file of dataset ``name`` to ``out_path``; returns the stage's metrics."""
    t0 = time.perf_counter()
    loaded = sources.load(name, params.data.source(name), params.data, seed=params.seed)
    if isinstance(loaded, EmbeddingsFile):  # a source of ready embeddings: no backbone
        emb, metrics = loaded, {}
    else:
        emb, metrics = extract_images(params, name, loaded, progress=progress)
    save_embeddings(out_path, emb)  # atomic: nothing is written unless every split succeeded
    metrics = {
        **{f"n_{s}": len(emb.y[s]) for s in SPLITS},
        "dim": emb.dim,
        "n_classes": emb.n_classes,
        **metrics,
        "seconds": time.perf_counter() - t0,
    }
    log.info(
        "%s: wrote %s (train/val/test = %d/%d/%d, dim %d, backbone %s)",
        name,
        out_path,
        metrics["n_train"],
        metrics["n_val"],
        metrics["n_test"],
        emb.dim,
        emb.backbone,
    )
    return metrics


def stage_params(params: Params, name: str) -> dict[str, Any]:
    """The parameters this stage reads for dataset ``name`` (logged to MLflow)."""
    source = params.data.source(name)
    data = {
        "root": params.data.root,
        "download": params.data.download,
        "limit": params.data.limit,
        "val_fraction": params.data.val_fraction,
        "source": to_dict(source),
    }
    out: dict[str, Any] = {"seed": params.seed, "data": data}
    if sources.yields_images(source.kind):
        out["backbone"] = to_dict(params.backbone)
    return out


def run_extract(
    params: Params, *, dataset: str, out: Path, metrics: Path, progress: bool = True
) -> dict[str, Any]:
    """:func:`extract_dataset` inside an MLflow run; writes the metrics JSON (DVC) and logs it."""
    source = params.data.source(dataset)
    backbone = params.backbone.name if sources.yields_images(source.kind) else USER_SUPPLIED
    tags = {"dataset": dataset, "backbone": backbone}
    check_writable(out, metrics)
    with tracking.stage_run(params.tracking, name=f"extract@{dataset}", tags=tags) as run:
        run.log_params(stage_params(params, dataset))
        with atomic_outputs():  # the embeddings and their metrics land together or not at all
            result = extract_dataset(params, dataset, out, progress=progress)
            tracking.record_metrics(metrics, result, run)
    return result


def _body(argv: list[str] | None) -> None:
    parser = base_parser(
        "Extract frozen-backbone embeddings of one dataset into a safetensors file."
    )
    parser.add_argument(
        "--dataset", required=True, help="a dataset name defined under data.sources"
    )
    parser.add_argument(
        "--out", type=Path, required=True, help="embeddings file to write (.safetensors)"
    )
    parser.add_argument(
        "--metrics",
        type=Path,
        default=None,
        help="metrics JSON (default: metrics/extract/<dataset>.json)",
    )
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    args = parser.parse_args(argv)
    if args.out.suffix != ".safetensors":
        raise ArtifactError(f"--out {args.out}: the embeddings file must end in .safetensors")
    metrics = args.metrics or Path("metrics") / "extract" / f"{args.dataset}.json"
    run_extract(
        load(args),
        dataset=args.dataset,
        out=args.out,
        metrics=metrics,
        progress=not args.no_progress,
    )


def main(argv: list[str] | None = None) -> int:
    """Entry point: ``python -m pipeline.extract --dataset NAME --out PATH``; exit code 2 on bad input."""
    return run_main(_body, argv)


if __name__ == "__main__":
    raise SystemExit(main())
