"""Stage ``release_curve``: utility and linkage against ε_code for one head (a DVC plot).

Issue 10 asks for the utility/ε_code curve and the linkage rate against ε_code on one plot. For one
(dataset, method, bits) this stage reads the ``evaluate_rr`` and ``attack_rr`` metrics of every
ε_code in ``release.epsilons`` (files ``<name>-rr<ε>.json``, the DVC matrix's names, ε as DVC
writes it: ``4`` or ``4.0``) and, for
ε = ∞, the unreleased head's ``evaluate`` and ``attack`` metrics, and writes one CSV row per ε_code:
Hamming-KNN balanced accuracy and its retention of the float figure, and linkage top-1 of the train
(database) and test (query) victims beside chance (empty where the study runs no linkage attack).
The ∞ row is written last with ``epsilon_code``
``inf``. Aggregates only; nothing goes to MLflow (the numbers are already tracked by their stages).
Every file must come from the embeddings of the float baseline ``--float-metrics`` (the knn
stage's JSON records their content and public fingerprints): a release's file left from an
older extract is refused, not drawn on the same curve, and so is an evaluate file whose retention
divides by another float KNN run (its ``k`` and ``float_accuracy`` are not the float metrics').
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

from pipeline.artifacts import (
    check_float_knn,
    check_metrics_fingerprint,
    files_by_epsilon,
    read_json,
    require_keys,
    write_csv,
)
from pipeline.common import base_parser, load, run_main
from pipeline.config import Params

log = logging.getLogger(__name__)

UTILITY = ("balanced_accuracy", "retention_balanced_accuracy")
LINKAGE = tuple(
    f"linkage/{group}/top1{tag}" for group in ("train", "test") for tag in ("", "_baseline")
)


def curve_row(
    epsilon: float, evaluate: Path, attack: Path, *, reference: dict[str, Any], float_metrics: Path
) -> dict[str, Any]:
    """One row: ε_code, the utility of ``evaluate``'s metrics and the linkage of ``attack``'s,
    both checked to come from the embeddings of the float metrics ``reference``.

    A study that does not run the linkage attack (``attack.attacks`` without ``linkage``, or
    linkage skipped: its attack files hold no ``linkage/`` number) gets empty linkage columns;
    a file with some linkage numbers but not all is an error."""
    util = read_json(evaluate, require=UTILITY)
    link = read_json(attack)
    for path, record in ((evaluate, util), (attack, link)):
        check_metrics_fingerprint(
            record.get("embeddings_fingerprint"),
            reference,
            recorded_in=path,
            reference_path=float_metrics,
        )
    check_float_knn(util, evaluate, reference, float_metrics)
    ran = any(str(key).startswith("linkage/") for key in link)
    if ran:
        require_keys(link, LINKAGE, path=attack)
    row: dict[str, Any] = {"epsilon_code": "inf" if math.isinf(epsilon) else epsilon}
    row.update({key: util[key] for key in UTILITY})
    row.update({key.replace("/", "_"): link[key] if ran else None for key in LINKAGE})
    return row


def rr_files(directory: Path, name: str, epsilons: tuple[float, ...]) -> dict[float, Path]:
    """``{ε: <directory>/<name>-rr<ε>.json}`` for every ε of ``epsilons``, whichever way DVC wrote ε
    into the file name (``4`` or ``4.0``); a missing one is an error naming the file and the fix."""
    return files_by_epsilon(directory, f"{name}-rr", epsilons, what="ε_code")


def run_release_curve(
    params: Params,
    *,
    name: str,
    evaluate: Path,
    attack: Path,
    evaluate_rr_dir: Path,
    attack_rr_dir: Path,
    float_metrics: Path,
    csv: Path,
) -> list[dict[str, Any]]:
    epsilons = tuple(sorted(params.release.epsilons))
    evaluated = rr_files(evaluate_rr_dir, name, epsilons)
    attacked = rr_files(attack_rr_dir, name, epsilons)
    ref = {"reference": read_json(float_metrics), "float_metrics": float_metrics}
    rows = [curve_row(eps, evaluated[eps], attacked[eps], **ref) for eps in epsilons]
    rows.append(curve_row(math.inf, evaluate, attack, **ref))
    write_csv(csv, rows)
    log.info("%s: utility and linkage at %d ε_code values -> %s", name, len(rows), csv)
    return rows


def _body(argv: list[str] | None) -> None:
    parser = base_parser("Utility and linkage against ε_code for one head (randomised response).")
    parser.add_argument("--name", required=True, help="<method>-<bits>, the metrics files' stem")
    parser.add_argument("--evaluate", type=Path, required=True, help="the unreleased evaluate JSON")
    parser.add_argument("--attack", type=Path, required=True, help="the unreleased attack JSON")
    parser.add_argument("--evaluate-rr-dir", type=Path, required=True)
    parser.add_argument("--attack-rr-dir", type=Path, required=True)
    parser.add_argument(
        "--float-metrics", type=Path, required=True, help="the knn stage's JSON (provenance)"
    )
    parser.add_argument("--csv", type=Path, required=True, help="plot data (DVC plot)")
    args = parser.parse_args(argv)
    run_release_curve(
        load(args),
        name=args.name,
        evaluate=args.evaluate,
        attack=args.attack,
        evaluate_rr_dir=args.evaluate_rr_dir,
        attack_rr_dir=args.attack_rr_dir,
        float_metrics=args.float_metrics,
        csv=args.csv,
    )


def main(argv: list[str] | None = None) -> int:
    return run_main(_body, argv)


if __name__ == "__main__":
    raise SystemExit(main())
