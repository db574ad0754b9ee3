"""Stage ``train``: fit one hashing method at one code length on one dataset's embeddings.

Writes into ``--out`` (a directory): ``head.safetensors`` + ``config.json`` (fully resolved config,
incl. the embeddings' backbone so later stages can refuse mismatched inputs) and
``codes.safetensors`` (packed codes of every split). Metrics JSON and a per-epoch history CSV go to
their own paths (DVC metrics / plots); the same numbers go to MLflow.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from hashers import registry
from hashers.base import EmbeddingSet, HashingMethod, HeadSpec
from hashers.trainer import FitConfig, FitResult, fit
from pipeline import tracking
from pipeline.artifacts import (
    SPLITS,
    EmbeddingsFile,
    atomic_outputs,
    check_writable,
    load_embeddings,
    recorded_fingerprint,
    save_codes,
    save_head,
    write_csv,
)
from pipeline.common import base_parser, load, run_main
from pipeline.config import MAX_BITS, MIN_BITS, Params, ParamsError, to_dict
from retrieval.codes import pack_bits

log = logging.getLogger(__name__)


def head_spec(emb: EmbeddingsFile, params: Params, bits: int) -> HeadSpec:
    return HeadSpec(
        in_dim=emb.dim,
        n_bits=bits,
        n_classes=emb.n_classes,
        hidden_dims=params.train.hidden_dims,
        dropout=params.train.dropout,
        multilabel=emb.multilabel,
        standardize=params.train.standardize,
    )


def fit_config(params: Params, *, progress: bool = True) -> FitConfig:
    t = params.train
    return FitConfig(
        epochs=t.epochs,
        max_steps=t.max_steps,
        batch_size=t.batch_size,
        lr=t.lr,
        weight_decay=t.weight_decay,
        patience=t.patience,
        val_queries=t.val_queries,
        val_database=t.val_database,
        selection=t.selection,
        selection_window=t.selection_window,
        class_balance=t.class_balance,
        ema_epochs=t.ema_epochs,
        geometry=t.geometry,
        k=params.knn.k,
        seed=params.seed,
        device=t.device,
        progress=progress,
    )


def recorded_class_names(meta: Mapping[str, str], n_classes: int) -> tuple[list[Any], str]:
    """The ``class_names`` metadata as a list of ``n_classes`` names (``[]`` when absent), and
    what is wrong with it (``""`` when readable): a value that is no JSON list, or a list of
    another length, names no column (a file given straight to a stage keeps its metadata as
    written; the ``embeddings`` source replaces such names by ``0..C-1``)."""
    raw = meta.get("class_names")
    if raw is None:
        return [], ""
    try:
        names = json.loads(raw)
    except (json.JSONDecodeError, TypeError):
        return [], f"{raw[:80]!r} is not JSON"
    if not isinstance(names, list) or len(names) != n_classes:
        count = f"{len(names)} names" if isinstance(names, list) else type(names).__name__
        return [], f"holds {count}, not a list of {n_classes} (one per label column)"
    return names, ""


def withhold_label(
    emb: EmbeddingsFile, label: str | int | None
) -> tuple[EmbeddingsFile, int | None]:
    """``emb`` without the multi-label column ``label`` (a class name or column index), and that
    column's index; unchanged with ``None`` when nothing is withheld (``attack.withhold_label``).

    The withheld finding is hidden from head training so the attribute attack can test what codes
    leak beyond their task.
    """
    if label is None:
        return emb, None
    if not emb.multilabel:
        raise ParamsError(
            f"attack.withhold_label: {label!r} given but {emb.meta.get('dataset', 'this dataset')} is not "
            "multi-label; withholding applies to multi-label sources (e.g. chestmnist) — set it to null"
        )
    n = emb.n_classes
    names, unreadable = recorded_class_names(emb.meta, n)
    if isinstance(label, int) and 0 <= label < n:
        col = label
    elif isinstance(label, str) and label in names:
        col = names.index(label)
    elif isinstance(label, str) and unreadable:
        where = emb.where or emb.meta.get("dataset", "the embeddings file")
        raise ParamsError(
            f"attack.withhold_label: {label!r} cannot be looked up: {where}'s class_names metadata "
            f"{unreadable}; give the column index (0..{n - 1}) instead, or re-save the file with "
            "class_names a JSON list of one name per label column"
        )
    else:
        raise ParamsError(
            f"attack.withhold_label: {label!r} is not a label of this dataset; use a column 0..{n - 1} "
            f"or one of {', '.join(map(str, names)) or '(no class names recorded)'}"
        )
    keep = [c for c in range(n) if c != col]
    meta = dict(emb.meta)
    meta["n_classes"] = str(n - 1)
    if names:
        meta["class_names"] = json.dumps([names[c] for c in keep])
    else:  # unreadable names (the column was given by index) describe no column of the rest
        meta.pop("class_names", None)
    y = {s: v[:, keep] for s, v in emb.y.items()}
    return EmbeddingsFile(x=emb.x, y=y, meta=meta), col


def embedding_set(emb: EmbeddingsFile, split: str) -> EmbeddingSet:
    return EmbeddingSet.from_numpy(emb.x[split], emb.multihot(split))


def resolved_config(
    *,
    dataset: str,
    method: HashingMethod,
    params: Params,
    emb: EmbeddingsFile,
    fit_cfg: FitConfig,
    source: EmbeddingsFile,
    withheld: int | None,
) -> dict[str, Any]:
    """Everything needed to rebuild the head and to check later inputs against it.

    ``source``: the embeddings file as read, where ``emb`` is it with the ``withheld`` label column
    removed (:func:`withhold_label`): the head records the file's fingerprint (what evaluate and
    attack are given and check) and the withheld column (so they can apply the same withholding).
    """
    return {
        "format": "hashaudit.head/1",
        "dataset": dataset,
        "method": method.name,
        "method_config": dataclasses.asdict(method.config),
        "head_spec": dataclasses.asdict(method.spec),
        "fit": dataclasses.asdict(fit_cfg),
        "seed": params.seed,
        "embeddings": {
            **{
                k: emb.meta.get(k)
                for k in ("backbone", "revision", "pooling", "image_size", "resize", "dataset")
            },
            "dim": emb.dim,
            "fingerprint": source.fingerprint,  # later stages refuse other embeddings
            "withheld_label": withheld,  # label column hidden from training (attack.withhold_label)
        },
    }


def check_selection_k(params: Params, n_train: int) -> None:
    """Model selection runs a KNN with ``knn.k`` over a database of
    ``min(train.val_database, n_train)`` training rows: refuse a k larger than that (the rule of
    :meth:`pipeline.config.KnnConfig.check_database`), instead of lowering it silently."""
    params.knn.check_database(n_train, sweep=False)
    if params.knn.k > params.train.val_database:
        raise ParamsError(
            f"train.val_database: the model-selection database of {params.train.val_database} "
            f"rows is smaller than knn.k={params.knn.k}; raise train.val_database or lower knn.k"
        )


def train_one(
    params: Params,
    *,
    dataset: str,
    method_name: str,
    bits: int,
    emb: EmbeddingsFile,
    progress: bool = True,
) -> tuple[HashingMethod, FitResult, FitConfig]:
    if not MIN_BITS <= bits <= MAX_BITS:
        raise ParamsError(f"--bits {bits}: use a code length from {MIN_BITS} to {MAX_BITS}")
    spec = head_spec(emb, params, bits)
    method = registry.build(method_name, spec, params.method_config(method_name), seed=params.seed)
    cfg = fit_config(params, progress=progress)
    result = fit(method, embedding_set(emb, "train"), embedding_set(emb, "val"), config=cfg)
    return method, result, cfg


def encode_splits(method: HashingMethod, emb: EmbeddingsFile) -> dict[str, Any]:
    with torch.no_grad():
        return {
            s: pack_bits(method.encode(torch.as_tensor(emb.x[s], dtype=torch.float32)))
            for s in SPLITS
        }


def _written_path(path: Path) -> Path:
    """The path a write to ``path`` replaces: absolute, its folder's symbolic links resolved but
    not a link at the end (a write replaces the link; two links into DVC's cache may share one
    target without being one output)."""
    absolute = Path(os.path.abspath(path))
    return absolute.parent.resolve() / absolute.name


#: the files :meth:`HeadJob.write_outputs` writes into ``--out``
HEAD_FILES = ("head.safetensors", "config.json", "codes.safetensors")


@dataclasses.dataclass(frozen=True)
class HeadJob:
    """One head to train (train, train_dp): what it is and where its files go."""

    dataset: str
    method_name: str
    bits: int
    embeddings: Path
    out: Path
    metrics: Path
    history: Path

    def check_writable(self) -> None:
        """Refuse, before any work, outputs that cannot be written, and an output on the path of
        another or of ``--embeddings``: the last write replaced the other file (the history CSV
        in place of the metrics, the metrics in place of the head's ``config.json``, the input
        embeddings overwritten) and the stage exited 0."""
        check_writable(self.metrics, self.history, dirs=[self.out])
        out = _written_path(self.out)
        taken = {_written_path(self.embeddings): "--embeddings (the input: it would be lost)"}
        outputs = [(f"--out {self.out}: its {name}", out / name) for name in HEAD_FILES]
        outputs += [("--metrics", Path(self.metrics)), ("--history", Path(self.history))]
        for flag, path in outputs:
            resolved = _written_path(path)
            if resolved == out:
                raise ParamsError(
                    f"{flag} {path}: this is the --out folder, where the head's files go; give "
                    "the file its own path"
                )
            if resolved in taken:
                what = flag if flag.startswith("--out") else f"{flag} {path}"
                raise ParamsError(
                    f"{what}: the same file as {taken[resolved]}; give each output its own path"
                )
            taken[resolved] = (
                f"the head's {path.name} in --out {self.out}" if flag.startswith("--out") else flag
            )

    def run_params(
        self, params: Params, *, train: dict[str, Any] | None = None, **extra: Any
    ) -> dict[str, Any]:
        """The MLflow params of a head run: train block (``train``: the settings the fit actually
        used where they differ, a DP head's schedule), method block, seed, bits, knn.k (+ extra)."""
        return {
            "train": {**to_dict(params.train), **(train or {})},
            "method": to_dict(params.method_config(self.method_name)),
            **extra,
            "seed": params.seed,
            "bits": self.bits,
            "knn.k": params.knn.k,
        }

    def write_outputs(
        self,
        *,
        method: HashingMethod,
        params: Params,
        fit_cfg: FitConfig,
        emb: EmbeddingsFile,
        history: list[dict[str, float]],
        summary: dict[str, Any],
        run: tracking.StageRun,
        source: EmbeddingsFile,
        withheld: int | None,
        extra_config: dict[str, Any] | None = None,
        logged_as_history: tuple[str, ...] = (),
        public_provenance: bool = False,
    ) -> None:
        """Head + resolved config (plus ``extra_config``), codes of every split (with the
        embeddings' fingerprint), history CSV and metrics of a trained head: they land together,
        only after training succeeded, or none does. The per-epoch history also goes to MLflow,
        one step per epoch. ``emb``: what the head trained on; ``source``: the embeddings file it
        came from, ``withheld``: the label column removed from it (:func:`training_embeddings`).
        ``public_provenance`` (DP heads): ``config.json`` records the embeddings'
        :func:`pipeline.artifacts.public_fingerprint` instead of their content fingerprint; the
        codes file, outside the head's guarantee, keeps the full one."""
        for row in history:
            run.log_metrics({k: v for k, v in row.items() if k != "epoch"}, step=int(row["epoch"]))
        config = resolved_config(
            dataset=self.dataset,
            method=method,
            params=params,
            emb=emb,
            fit_cfg=fit_cfg,
            source=source,
            withheld=withheld,
        )
        config.update(extra_config or {})
        if public_provenance:  # a DP head: no digest of the training records' content
            config["embeddings"] = {
                **{k: v for k, v in config["embeddings"].items() if k != "fingerprint"},
                "public_fingerprint": source.public_fingerprint,
            }
        codes = encode_splits(method, emb)
        meta = {
            "dataset": self.dataset,
            "method": method.name,
            "backbone": emb.backbone,
            "fingerprint": source.fingerprint,
        }
        if withheld is not None:
            meta["withheld_label"] = withheld
        with atomic_outputs():
            meta["head_sha256"] = save_head(self.out, method.state_dict(), config)
            save_codes(self.out / "codes.safetensors", codes, n_bits=method.spec.n_bits, meta=meta)
            write_csv(self.history, history)
            # the digest config.json records (public for a DP head): the report matches it
            digest = {"embeddings_fingerprint": recorded_fingerprint(config)}
            tracking.record_metrics(
                self.metrics, {**summary, **digest}, run, logged_as_history=logged_as_history
            )
        run.log_artifact(self.out / "config.json")


def training_embeddings(
    params: Params, path: Path, *, dataset: str
) -> tuple[EmbeddingsFile, EmbeddingsFile, int | None]:
    """(the embeddings a head trains on, the file as read, the withheld label column or None):
    ``attack.withhold_label`` applied (:func:`withhold_label`), for train and train_dp alike."""
    source = load_embeddings(path, dataset=dataset)
    emb, withheld = withhold_label(source, params.attack.withhold_label)
    return emb, source, withheld


def run_train(params: Params, job: HeadJob) -> dict[str, Any]:
    job.check_writable()
    emb, source, withheld = training_embeddings(params, job.embeddings, dataset=job.dataset)
    check_selection_k(params, len(emb.y["train"]))
    name = f"train@{job.dataset}-{job.method_name}-{job.bits}"
    tags = {**tracking.head_tags(job.dataset, job.method_name, job.bits, source), "defence": "none"}
    with tracking.stage_run(params.tracking, name=name, tags=tags) as run:
        run.log_params(job.run_params(params))
        method, result, cfg = train_one(
            params, dataset=job.dataset, method_name=job.method_name, bits=job.bits, emb=emb
        )
        summary = {**result.summary(), "bits": job.bits}
        last = result.history[-1] if result.history else {}
        losses = tuple(k for k in last if k.startswith("loss"))
        summary.update({k: last[k] for k in losses})
        job.write_outputs(
            method=method,
            params=params,
            fit_cfg=cfg,
            emb=emb,
            source=source,
            withheld=withheld,
            history=result.history,
            summary=summary,
            run=run,
            logged_as_history=losses,
        )
    log.info(  # best_* keys are the selected epoch's, picked by train.selection, not by accuracy
        "%s: epoch %d selected by val %s; its val accuracy %.4f, balanced accuracy %.4f (%.1fs)",
        name,
        result.best_epoch,
        cfg.selection,
        result.best_val_accuracy,
        summary["best_val_balanced_accuracy"],
        result.wall_time_s,
    )
    return summary


def head_parser(description: str) -> argparse.ArgumentParser:
    """Arguments of the stages that train one head (train, train_dp)."""
    parser = base_parser(description)
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--method", required=True)
    parser.add_argument("--bits", type=int, required=True)
    parser.add_argument("--embeddings", type=Path, required=True)
    parser.add_argument(
        "--out", type=Path, required=True, help="output directory (head, config, codes)"
    )
    parser.add_argument("--metrics", type=Path, required=True)
    parser.add_argument("--history", type=Path, required=True, help="per-epoch CSV (DVC plot)")
    return parser


def parse_head_args(
    parser: argparse.ArgumentParser, argv: list[str] | None
) -> tuple[argparse.Namespace, Params]:
    """Parse, load the params, refuse an unknown method (listing the registered ones)."""
    args = parser.parse_args(argv)
    params = load(args)
    registry.get(args.method)
    return args, params


def head_job(args: argparse.Namespace) -> HeadJob:
    """The :class:`HeadJob` of :func:`head_parser`'s args."""
    keys = ("dataset", "bits", "embeddings", "out", "metrics", "history")
    return HeadJob(method_name=args.method, **{k: getattr(args, k) for k in keys})


def _body(argv: list[str] | None) -> None:
    args, params = parse_head_args(
        head_parser("Train one hashing head on frozen embeddings."), argv
    )
    run_train(params, head_job(args))


def main(argv: list[str] | None = None) -> int:
    return run_main(_body, argv)


if __name__ == "__main__":
    raise SystemExit(main())
