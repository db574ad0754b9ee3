"""Stage ``train_dp``: train one hashing head with DP-SGD at a target ε (:mod:`privacy.dp`).

Writes the same files as ``train`` (head + config + codes, metrics JSON, per-epoch history CSV with
the ε spent so far in ``dp_epsilon``), so ``evaluate`` and ``attack`` read a DP head like any other.
The history holds no training loss (only ``dp_epsilon`` and the val-only ``val_*`` scores: nothing
un-noised from the training records). The metrics hold the final ``dp_epsilon`` / ``dp_delta`` and
the mechanism's parameters; MLflow gets the same numbers. ``dp.seed: null`` (default) draws the
Poisson sampling, noise and dropout from OS entropy and records no seed (``config.json``'s ``dp``
block: ``"dp_randomness": "secret"``); an integer is recorded (``"seeded"``, with ``dp_seed``) and
the ε then holds only against someone without it. Only ``per_sample_loss`` methods are accepted (others exit 2 with the reason).
The finding ``attack.withhold_label`` names is withheld from training as in ``train``.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from typing import Any

from hashers import registry
from hashers.base import HashingMethod, HeadSpec
from hashers.trainer import FitConfig
from pipeline import tracking
from pipeline.artifacts import EmbeddingsFile
from pipeline.common import run_main
from pipeline.config import MAX_BITS, MIN_BITS, Params, ParamsError, to_dict
from pipeline.train import (
    HeadJob,
    embedding_set,
    fit_config,
    head_job,
    head_parser,
    head_spec,
    parse_head_args,
    resolved_config,
    training_embeddings,
)
from privacy.dp import DPConfig, check_dp_capable, dp_fit

log = logging.getLogger(__name__)


def dp_config(params: Params, epsilon: float) -> DPConfig:
    d = params.dp
    return DPConfig(
        epsilon=epsilon,
        delta=d.delta,
        max_grad_norm=d.max_grad_norm,
        accountant=d.accountant,
        seed=d.seed,
    )


def dp_record(dp: DPConfig) -> dict[str, Any]:
    """The DP settings as MLflow params: the seed only when one was set (``"randomness":
    "seeded"``); a secret run records ``"randomness": "secret"`` and no seed."""
    out = {k: v for k, v in to_dict(dp).items() if k != "seed"}
    out["randomness"] = dp.randomness
    if dp.seed is not None:
        out["seed"] = dp.seed
    return out


def randomness_record(dp: DPConfig) -> dict[str, Any]:
    """``{"dp_randomness": "secret"}``, or ``"seeded"`` with ``dp_seed`` (config.json's dp block)."""
    out: dict[str, Any] = {"dp_randomness": dp.randomness}
    if dp.seed is not None:
        out["dp_seed"] = dp.seed
    return out


#: the train-block settings a DP head's fit takes from ``dp.*`` or forces (:func:`dp_fit_config`):
#: its MLflow run logs these as used, not the train block's values
DP_SCHEDULE_KEYS = (
    "lr",
    "batch_size",
    "epochs",
    "selection",
    "ema_epochs",
    "geometry",
    "class_balance",
    "selection_window",
)


def dp_fit_config(params: Params, *, progress: bool = True) -> FitConfig:
    """The train block's fit settings with DP-SGD's own schedule (``dp.lr``, ``dp.batch_size``,
    ``dp.epochs``, ``dp.selection``) where set: a DP head is tuned apart from the
    non-private one (bench/RESULTS-dp-val.md). ``train.patience`` passes through but has no
    effect: :func:`privacy.dp.dp_fit` trains every planned epoch (no early stopping).

    Forced, whatever the train block says (so ``config.json``'s ``fit`` block records what the DP
    fit did): ``ema_epochs=0`` and ``geometry=0`` (below), ``class_balance=0`` (DP-SGD's Poisson
    batches include every record with the same probability; class-balanced draws are not the
    sampling the accountant analyses) and ``selection_window=1`` (the DP plugin picks the best
    single epoch on val, :class:`privacy.dp.DPSGD`)."""
    d = params.dp
    cfg = fit_config(params, progress=progress)
    changes = {
        "lr": d.lr,
        "batch_size": d.batch_size,
        "epochs": d.epochs,
        "selection": d.selection,
    }
    cfg = dataclasses.replace(cfg, **{k: v for k, v in changes.items() if v is not None})
    # the DP schedule was chosen without weight averaging (it would be post-processing of the
    # private iterates, so the guarantee would hold, but it is untested for DP here); the
    # neighbourhood term couples the records of a batch, so DP-SGD's clipping forbids it; the
    # Poisson batches and the plugin's per-epoch selection apply neither class_balance nor a window
    return dataclasses.replace(
        cfg, ema_epochs=0.0, geometry=0.0, class_balance=0.0, selection_window=1
    )


def dp_head_spec(emb: EmbeddingsFile, params: Params, bits: int) -> HeadSpec:
    """The train stage's head shape, with ``dp.standardize`` where set (statistics of val)."""
    spec = head_spec(emb, params, bits)
    if params.dp.standardize is None:
        return spec
    return dataclasses.replace(spec, standardize=params.dp.standardize)


def stream_context(
    dataset: str,
    *,
    method: HashingMethod,
    params: Params,
    fit_cfg: FitConfig,
    emb: EmbeddingsFile,
    source: EmbeddingsFile,
    withheld: int | None,
) -> dict[str, Any]:
    """What a seeded DP run's streams are derived from besides the settings ``dp_fit`` adds: the
    dataset and the ``embeddings`` block of the head's ``config.json`` (backbone, revision,
    pooling, image size, resize, dim, content fingerprint, withheld label), so two DP heads trained
    on different embeddings of one dataset never share sampling, noise or dropout."""
    head = resolved_config(
        dataset=dataset,
        method=method,
        params=params,
        emb=emb,
        fit_cfg=fit_cfg,
        source=source,
        withheld=withheld,
    )
    return {"dataset": dataset, "embeddings": head["embeddings"]}


def run_train_dp(params: Params, job: HeadJob, *, epsilon: float) -> dict[str, Any]:
    if not MIN_BITS <= job.bits <= MAX_BITS:
        raise ParamsError(f"--bits {job.bits}: use a code length from {MIN_BITS} to {MAX_BITS}")
    if math.isinf(epsilon):
        raise ParamsError("--epsilon inf: the non-private head is the train stage's output")
    dp = dp_config(params, epsilon)  # bad ε -> PrivacyError before any file is read
    job.check_writable()
    # the finding withheld from train's heads is withheld here too: the attribute attack compares
    # heads that never saw it
    emb, source, withheld = training_embeddings(params, job.embeddings, dataset=job.dataset)
    spec = dp_head_spec(emb, params, job.bits)
    method = registry.build(
        job.method_name, spec, params.method_config(job.method_name), seed=params.seed
    )
    check_dp_capable(method)
    name = (
        f"train_dp@{job.dataset}-{job.method_name}-{job.bits}-eps{tracking.epsilon_text(epsilon)}"
    )
    tags = tracking.head_tags(
        job.dataset, job.method_name, job.bits, source, fingerprint=source.public_fingerprint
    )
    tags.update(defence="dp", dp_target_epsilon=tracking.epsilon_text(epsilon))
    with tracking.stage_run(params.tracking, name=name, tags=tags) as run:
        cfg = dp_fit_config(params)
        # the schedule DP-SGD trains with (dp.* where set, the forced settings), not train's
        used = {k: getattr(cfg, k) for k in DP_SCHEDULE_KEYS}
        run.log_params(
            job.run_params(
                params, train={**used, "standardize": spec.standardize}, dp=dp_record(dp)
            )
        )
        result, report = dp_fit(
            method,
            embedding_set(emb, "train"),
            embedding_set(emb, "val"),
            config=cfg,
            dp=dp,
            context=stream_context(
                job.dataset,
                method=method,
                params=params,
                fit_cfg=cfg,
                emb=emb,
                source=source,
                withheld=withheld,
            ),
        )
        summary = {**result.summary(), "bits": job.bits, **report.summary()}
        job.write_outputs(
            method=method,
            params=params,
            fit_cfg=cfg,
            extra_config={"dp": {**report.summary(), **randomness_record(dp)}},
            emb=emb,
            source=source,
            withheld=withheld,
            history=result.history,
            summary=summary,
            run=run,
            # dp_epsilon went to MLflow once per epoch (the ε spent so far, the last one the final
            # ε): not again at step 0
            logged_as_history=("dp_epsilon",),
            public_provenance=True,  # no digest of the training records in what the head ships
        )
    log.info(
        "%s: ε=%.3f (δ=%.2g, σ=%.3f), epoch %d selected by val %s; its val accuracy %.4f",
        name,
        report.epsilon,
        report.delta,
        report.noise_multiplier,
        result.best_epoch,
        cfg.selection,
        result.best_val_accuracy,
    )
    return summary


def _body(argv: list[str] | None) -> None:
    parser = head_parser("Train one hashing head with DP-SGD (Opacus) at a target ε.")
    parser.add_argument("--epsilon", type=float, required=True, help="target ε of DP-SGD")
    args, params = parse_head_args(parser, argv)
    run_train_dp(params, head_job(args), epsilon=args.epsilon)


def main(argv: list[str] | None = None) -> int:
    return run_main(_body, argv)


if __name__ == "__main__":
    raise SystemExit(main())
