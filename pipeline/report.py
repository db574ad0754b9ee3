"""Stage ``report``: the privacy/utility trade-off of one dataset — tables, Pareto plots, MLflow parent.

One row per *release* of the study, the float embeddings included, read from the metrics files the
other stages wrote (which files is decided by ``params.yaml``, never by globbing, so a stale file
of a removed method or ε is never reported; a missing one is an error naming its stage):

========  ==========================================  =======================================
release   utility (Hamming or float KNN)              privacy
========  ==========================================  =======================================
float     ``metrics/knn/<ds>.json``                   ``metrics/attack/<ds>/float.json``
codes     ``metrics/evaluate/<ds>/<m>-<b>.json``      ``metrics/attack/<ds>/<m>-<b>.json``
dp        ``metrics/evaluate_dp/…-eps<ε>.json``       ``metrics/attack_dp/…-eps<ε>.json`` and
                                                      the guarantee (ε, δ) of ``metrics/train_dp``
rr        ``metrics/evaluate_rr/…-rr<ε>.json``        ``metrics/attack_rr/…-rr<ε>.json``
kanon     ``metrics/evaluate_kanon/<m>-<b>.json``     ``metrics/attack_kanon/<m>-<b>.json``
========  ==========================================  =======================================

Each attack's headline number becomes a leakage share (0 = its code-blind baseline, 1 = the same
attack on the float embeddings; :mod:`privacy.tradeoff`), utility the retention of the float KNN's
balanced accuracy. Writes (``--out`` folder): ``tradeoff.csv`` (every row and raw number: value,
baseline, float value, share, per victim group), ``report.md`` (the tables a reader needs), one
``pareto-<attack>.png`` per attack (retention against leakage, the front marked); and ``--metrics``
(headline numbers: releases per kind, the best retention of each kind, and per attack and group the
least leakage share among releases that keep ``report.min_retention`` of the float utility).

MLflow: the stage's run ``report@<ds>`` logs those metrics, the Markdown and the plots (aggregates
only), and becomes the **parent run** of the study: with ``report.link_runs`` it nests the newest
finished run of every stage behind the reported rows whose tagged SHA-256 is that of the file it
reports (:func:`pipeline.tracking.adopt_runs`): a later hand run of the same stage name that wrote
other numbers is never nested in its place.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pipeline import tracking
from pipeline.artifacts import (
    ArtifactError,
    atomic_outputs,
    atomic_path,
    check_float_knn,
    check_metrics_fingerprint,
    check_writable,
    files_by_epsilon,
    read_json,
    remove_stale,
    write_csv,
    write_text,
)
from pipeline.common import base_parser, load, run_main
from pipeline.config import Params
from privacy.tradeoff import (
    LEAKAGE_NUMBERS,
    LeakageNumber,
    attack_triplet,
    leakage_share,
    least_leakage_at,
    pareto_mask,
)

log = logging.getLogger(__name__)

KINDS = ("float", "codes", "dp", "rr", "kanon")
UTILITY = (
    "balanced_accuracy",
    "retention_balanced_accuracy",
    "retention_balanced_accuracy_low",  # bootstrap interval over the test queries (evaluate)
    "retention_balanced_accuracy_high",
    "accuracy",
    "retention_accuracy",
    "macro_f1",
    "map_all",
    "degenerate_release",  # evaluate: fewer distinct codes than classes, or one predicted class
    "chance_balanced_accuracy",  # knn: the best input-blind score on the test queries
)
#: utility keys every evaluate/knn file must hold
REQUIRED_UTILITY = ("balanced_accuracy", "accuracy", "macro_f1")
GROUPS = ("train", "test")
TITLES = {
    "float": "float embeddings",
    "codes": "hash codes",
    "dp": "DP-SGD head",
    "rr": "randomised response",
    "kanon": "k-anonymous",
}


@dataclass(frozen=True)
class ReleaseFiles:
    """Where one release's numbers live; ``runs``: each MLflow run that made them, with the
    metrics file that run wrote (by which the report's parent run finds it)."""

    kind: str
    method: str
    bits: int | None
    epsilon: float | None
    utility: Path
    attack: Path | None
    extra: Path | None
    runs: tuple[tuple[str, Path], ...]


def plan_releases(params: Params, dataset: str, metrics_dir: Path) -> list[ReleaseFiles]:
    """Every release the study's params ask for, in report order: float, codes, DP heads,
    randomised response (ε_code ascending), k-anonymous."""
    m = metrics_dir
    out = [
        ReleaseFiles(
            "float",
            "float",
            None,
            None,
            m / "knn" / f"{dataset}.json",
            m / "attack" / dataset / "float.json",
            None,
            (
                (f"extract@{dataset}", m / "extract" / f"{dataset}.json"),
                (f"knn@{dataset}", m / "knn" / f"{dataset}.json"),
                (f"attack@{dataset}-float", m / "attack" / dataset / "float.json"),
            ),
        )
    ]

    def add(kind: str, meth: str, b: int, eps: float | None, files: tuple, config: dict) -> None:
        """One head's release: its (utility, attack, extra) files and the runs that wrote them
        (the head's or release's own run wrote ``extra``; a plain head's, its train metrics)."""
        first = "release" if kind in ("rr", "kanon") else "train"
        utility, attack, extra = files
        own = m / "train" / dataset / f"{meth}-{b}.json" if extra is None else extra
        written = (own, utility, attack)
        runs = tuple(
            (tracking.head_run_name(s, config, dataset, meth, b), path)
            for s, path in zip((first, "evaluate", "attack"), written, strict=True)
        )
        out.append(ReleaseFiles(kind, meth, b, eps, *files, runs))

    bits = sorted(params.train.bits)
    heads = [(meth, b) for meth in params.train.methods for b in bits]
    for meth, b in heads:
        stem = f"{meth}-{b}.json"
        files = (m / "evaluate" / dataset / stem, m / "attack" / dataset / stem, None)
        add("codes", meth, b, None, files, {})
    dp_eps = tuple(sorted(params.dp.epsilons))
    for meth, b in [(meth, b) for meth in params.dp.methods for b in bits]:
        found = [
            files_by_epsilon(m / stage / dataset, f"{meth}-{b}-eps", dp_eps, what="DP ε")
            for stage in ("evaluate_dp", "attack_dp", "train_dp")
        ]
        for eps in dp_eps:
            files = tuple(f[eps] for f in found)
            add("dp", meth, b, eps, files, {"dp": {"dp_target_epsilon": eps}})
    rr_eps = tuple(sorted(params.release.epsilons))
    for meth, b in heads:
        found = [
            files_by_epsilon(m / stage / dataset, f"{meth}-{b}-rr", rr_eps, what="ε_code")
            for stage in ("evaluate_rr", "attack_rr", "release")
        ]
        for eps in rr_eps:
            files = tuple(f[eps] for f in found)
            add("rr", meth, b, eps, files, {"release": {"mechanism": "rr", "epsilon_code": eps}})
    for meth, b in heads:
        stem = f"{meth}-{b}"
        files = (
            m / "evaluate_kanon" / dataset / f"{stem}.json",
            m / "attack_kanon" / dataset / f"{stem}.json",
            m / "release" / dataset / f"{stem}-kanon.json",
        )
        add("kanon", meth, b, None, files, {"release": {"mechanism": "kanon"}})
    return out


def _num(value: Any) -> float:
    return (
        float(value)
        if isinstance(value, (int, float)) and not isinstance(value, bool)
        else math.nan
    )


def release_row(
    files: ReleaseFiles, reference: Mapping[str, Any], reference_path: Path
) -> dict[str, Any]:
    """One flat row: identity, utility, then for every attack number and victim group its value,
    code-blind baseline, float value and leakage share (NaN where not measured). Its utility,
    attack and guarantee (train_dp / release metrics: ε, δ, k) files must come from the embeddings
    of the float KNN metrics ``reference`` (read from ``reference_path``;
    :func:`~pipeline.artifacts.check_metrics_fingerprint`: content or public fingerprint), and its
    utility file's retentions divide by that float KNN (:func:`~pipeline.artifacts.check_float_knn`)."""
    util = read_json(files.utility, require=REQUIRED_UTILITY)
    attack = read_json(files.attack) if files.attack is not None else {}
    extra = read_json(files.extra) if files.extra is not None else {}
    for path, record in ((files.utility, util), (files.attack, attack), (files.extra, extra)):
        if path is not None and path != reference_path:
            check_metrics_fingerprint(
                record.get("embeddings_fingerprint"),
                reference,
                recorded_in=path,
                reference_path=reference_path,
            )
    if files.utility != reference_path:
        check_float_knn(util, files.utility, reference, reference_path)
    row: dict[str, Any] = {
        "release": files.kind,
        "method": files.method,
        "bits": files.bits,
        "epsilon": files.epsilon,
    }
    for key in UTILITY:
        row[key] = _num(util.get(key))
    if files.kind == "float":  # the reference retains all of itself
        for key in ("", "_low", "_high"):
            row[f"retention_balanced_accuracy{key}"] = 1.0
        row["retention_accuracy"] = 1.0
    row["dp_epsilon"] = _num(extra.get("dp_epsilon"))
    row["dp_delta"] = _num(extra.get("dp_delta"))
    row["release_k"] = _num(extra.get("train/k", extra.get("test/k")))  # per release.apply_to
    for number in LEAKAGE_NUMBERS:
        for group in number.groups:
            value, base, flt = attack_triplet(
                attack, number, group, float_control=files.kind == "float"
            )
            col = column(number, group)
            row[f"{col}"] = value
            row[f"{col}_baseline"] = base
            row[f"{col}_float"] = flt
            row[f"{col}_share"] = leakage_share(value, base, flt)
    row["membership_tpr_at_fpr_1pct"] = _num(attack.get("membership/tpr_at_fpr_1pct"))
    return row


def check_float_control(
    row: Mapping[str, Any], attack_path: Path, float_row: Mapping[str, Any], float_path: Path
) -> None:
    """Refuse a release's attack file whose float control (each ``<key>_float`` the attack stage
    copied from the float attack's metrics when it ran) is not the float row's number now: its
    shares would be computed against another run of the float attack (another attack seed, aux
    set or strength, on the same embeddings) than the float row it is tabled and plotted beside.
    Only numbers the release measured are compared; membership has no float counterpart."""
    for number in LEAKAGE_NUMBERS:
        for group in number.groups:
            col = column(number, group)
            if group is None or math.isnan(row[col]):
                continue
            theirs, ours = row[f"{col}_float"], float_row[col]
            if theirs == ours or (math.isnan(theirs) and math.isnan(ours)):
                continue
            key = number.name(group)
            shown = ["absent" if math.isnan(v) else f"{v:g}" for v in (theirs, ours)]
            raise ArtifactError(
                f"{attack_path}: its float control {key}_float = {shown[0]}, but {float_path} "
                f"now reads {key} = {shown[1]}: the attack ran against another run of the float "
                "attack (attack-float re-run since, with other attack settings or seed); re-run "
                "the stage that writes it (dvc repro)"
            )


def column(number: LeakageNumber, group: str | None) -> str:
    """CSV column stem of an attack number: ``linkage_test``, ``membership``."""
    return number.attack if group is None else f"{number.attack}_{group}"


def leakage_axis(number: LeakageNumber, group: str | None) -> tuple[str, str]:
    """(CSV column, axis label) of an attack's leakage: the share where the attack has a float
    counterpart, the raw number otherwise (membership: AUC; float embeddings are not trained)."""
    col = column(number, group)
    if number.groups == (None,):
        return col, f"{number.key} (0.5 = chance)"
    return f"{col}_share", f"{number.attack} leakage share (0 = code-blind, 1 = float)"


def leakage_values(rows: list[dict[str, Any]], col: str) -> np.ndarray:
    """The leakage axis of ``col`` over ``rows``, floored at the code-blind baseline: an attack
    that does worse than its baseline (by chance) shows no measurable leakage, and releases tied
    there are ranked by utility. Shares are floored at 0; a raw number (membership AUC) at its
    row's ``<col>_baseline`` (0.5), where one is recorded, so an AUC of 0.46 is not read as less
    leakage than one of 0.49. ``tradeoff.csv`` keeps the unfloored values."""
    leak = np.array([r[col] for r in rows], dtype=np.float64)
    if col.endswith("_share"):
        return np.maximum(leak, 0.0)
    base = np.array([r.get(f"{col}_baseline", math.nan) for r in rows], dtype=np.float64)
    return np.where(np.isnan(base), leak, np.fmax(leak, base))


@dataclass(frozen=True)
class Tradeoff:
    """One attack number (and victim group) across the releases: its leakage axis, the Pareto
    front (indices, by leakage) and the least leakage among releases at the utility bar."""

    number: LeakageNumber
    group: str | None
    leak: np.ndarray
    front: np.ndarray
    least: float
    least_at: int  # -1: no release with this number reaches the bar


def tradeoffs(rows: list[dict[str, Any]], min_retention: float) -> list[Tradeoff]:
    """Every measured attack number's trade-off (an attack no release has is left out).
    Degenerate releases (:func:`degenerate`) are on no front and never the least leakage."""
    utility = ranked_utility(rows)
    out = []
    for number in LEAKAGE_NUMBERS:
        for group in number.groups:
            leak = leakage_values(rows, leakage_axis(number, group)[0])
            if np.isnan(leak).all():
                continue
            front = np.flatnonzero(pareto_mask(utility, leak))
            front = front[np.argsort(leak[front], kind="stable")]
            least, at = least_leakage_at(utility, leak, min_utility=min_retention)
            out.append(Tradeoff(number, group, leak, front, least, at))
    return out


def retention(rows: list[dict[str, Any]]) -> np.ndarray:
    return np.array([r["retention_balanced_accuracy"] for r in rows], dtype=np.float64)


def degenerate(row: dict[str, Any]) -> bool:
    """A release evaluate flagged ``degenerate_release``: fewer distinct test codes than classes
    or a single predicted class. It leaks little because it says little; its retention can still
    look fine when the float KNN is near chance, so it must not win the least-leakage headline."""
    return row.get("degenerate_release") == 1


def ranked_utility(rows: list[dict[str, Any]]) -> np.ndarray:
    """The retention the fronts and least leakage rank by: NaN (not ranked) for degenerate rows."""
    utility = retention(rows)
    utility[[i for i, r in enumerate(rows) if degenerate(r)]] = math.nan
    return utility


#: the float KNN counts as near chance below this share of the way from chance to perfect
NEAR_CHANCE = 0.1


def near_chance(flt: dict[str, Any]) -> bool:
    """Whether the float KNN's balanced accuracy is within :data:`NEAR_CHANCE` of the way from
    chance (knn.json ``chance_balanced_accuracy``) to 1: then retention ratios compare noise."""
    chance, bal = flt.get("chance_balanced_accuracy", math.nan), flt["balanced_accuracy"]
    return not math.isnan(chance) and bal - chance < NEAR_CHANCE * (1.0 - chance)


def summary_metrics(rows: list[dict[str, Any]], axes: list[Tradeoff]) -> dict[str, float]:
    """The headline numbers of ``--metrics`` (and the MLflow parent run)."""
    out: dict[str, float] = {
        "releases": float(len(rows)),
        "releases_degenerate": float(sum(degenerate(r) for r in rows)),
        "float_near_chance": float(near_chance(rows[0])),
    }
    for kind in KINDS:
        kind_rows = [r for r in rows if r["release"] == kind]
        out[f"releases/{kind}"] = float(len(kind_rows))
        ret = [r["retention_balanced_accuracy"] for r in kind_rows if not degenerate(r)]
        ret = [v for v in ret if not math.isnan(v)]
        if ret and kind != "float":
            out[f"best_retention/{kind}"] = max(ret)
    for t in axes:
        name = t.number.attack if t.group is None else f"{t.number.attack}/{t.group}"
        if not math.isnan(t.least):
            out[f"least_leakage/{name}"] = t.least
        out[f"pareto_size/{name}"] = float(t.front.size)
    return out


def _label(row: dict[str, Any]) -> str:
    if row["release"] == "float":
        return "float"
    text = f"{row['method']}-{row['bits']}"
    if row["release"] in ("dp", "rr"):
        text += f" ε={tracking.epsilon_text(row['epsilon'])}"
    return text if row["release"] in ("codes", "dp") else f"{text} ({row['release']})"


def _fmt(value: float, digits: int = 3) -> str:
    return "–" if value is None or math.isnan(value) else f"{value:.{digits}f}"


def _retention_cell(row: dict[str, Any]) -> str:
    """``0.973 (0.91–1.04)``: the retention and, where evaluate wrote one, its interval."""
    low, high = row["retention_balanced_accuracy_low"], row["retention_balanced_accuracy_high"]
    cell = _fmt(row["retention_balanced_accuracy"])
    if row["release"] == "float" or math.isnan(low) or math.isnan(high):
        return cell
    return f"{cell} ({low:.2f}–{high:.2f})"


def markdown(
    dataset: str,
    rows: list[dict[str, Any]],
    axes: list[Tradeoff],
    summary: dict[str, float],
    params: Params,
) -> str:
    """The report a reader opens first: one table of every release, the headline, the fronts."""
    flt = rows[0]
    attacks = [n for n in LEAKAGE_NUMBERS if n.groups != (None,)]
    present = [  # a column where either victim group has a defined share ("–" for the other)
        n
        for n in attacks
        if any(not math.isnan(r[f"{column(n, g)}_share"]) for r in rows for g in n.groups)
    ]
    chance = flt.get("chance_balanced_accuracy", math.nan)
    chance_note = "" if math.isnan(chance) else f" (chance: {_fmt(chance)})"
    lines = [f"# Privacy/utility report: {dataset}", ""]
    if near_chance(flt):
        lines += [
            f"> **Warning:** the float KNN's balanced accuracy {_fmt(flt['balanced_accuracy'])} "
            f"is near chance ({_fmt(chance)}): the features barely separate the classes, so "
            "every retention below compares noise with noise. Check the backbone and the data "
            "before reading the trade-off.",
            "",
        ]
    flagged = sum(degenerate(r) for r in rows)
    lines += [
        f"Float KNN (k = {params.knn.k}): balanced accuracy {_fmt(flt['balanced_accuracy'])}"
        f"{chance_note}, accuracy {_fmt(flt['accuracy'])}. **Retention** is a release's Hamming-KNN balanced "
        "accuracy over the float KNN's; in brackets its bootstrap interval over the test queries "
        "(`knn.ci_level`; paired with the float KNN, class-stratified: how much of a shortfall "
        "the size of the test split can resolve). **Leakage share** per attack: 0 = the attack's code-blind "
        "baseline, 1 = the same attack on the float embeddings (privacy/tradeoff.py; a share "
        "below 0, an attack doing worse than its baseline by chance, is shown as 0; a membership "
        "AUC below chance counts as 0.5 in the fronts and least leakage); each cell "
        "is train (database, the head's training records) / test (queries) victims; – = not "
        "measured (membership is not run on released codes: a release mechanism does not change "
        "the head). DP-SGD heads bound membership by their (ε, δ) (`tradeoff.csv`: `dp_epsilon`, "
        "`dp_delta`), not linkage: a code stays a deterministic function of its record. Raw "
        "numbers, baselines and float values: `tradeoff.csv`.",
        "",
    ]
    head = ["release", "method", "bits", "ε", "bal. acc", "retention", "mAP@all"]
    head += [n.attack for n in present] + ["membership AUC"]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * 3 + "---:|" * (len(head) - 3)]
    for r in rows:
        eps = "" if r["epsilon"] is None else tracking.epsilon_text(r["epsilon"])
        cells = [
            TITLES[r["release"]],
            "" if r["release"] == "float" else r["method"],
            "" if r["bits"] is None else str(r["bits"]),
            eps,
            _fmt(r["balanced_accuracy"]),
            _retention_cell(r) + (" ‡" if degenerate(r) else ""),
            _fmt(r["map_all"]),
        ]
        for n in present:
            pair = [max(r[f"{column(n, g)}_share"], 0.0) for g in GROUPS]
            cells.append(
                "–" if all(math.isnan(v) for v in pair) else " / ".join(_fmt(v, 2) for v in pair)
            )
        cells.append(_fmt(r["membership"]))
        lines.append("| " + " | ".join(cells) + " |")
    silent = []  # measured, but no share: the float control did not beat the code-blind baseline
    for n in attacks:
        if n in present:
            continue
        seen = [
            f"{g}: float {_fmt(flt[f'{column(n, g)}_float'])} vs baseline "
            f"{_fmt(flt[f'{column(n, g)}_baseline'])}"
            for g in n.groups
            if not math.isnan(flt[f"{column(n, g)}_float"])
            and not math.isnan(flt[f"{column(n, g)}_baseline"])
        ]
        if seen:
            silent.append(f"{n.attack} ({'; '.join(seen)})")
    if silent:
        lines += [
            "",
            "**Not shown** (measured, no leakage share defined: the attack on the float "
            "embeddings did no better than its code-blind baseline, so 0 and 1 of the share "
            f"coincide): {', '.join(silent)}. Raw numbers of every release: `tradeoff.csv`.",
        ]
    if flagged:
        lines += [
            "",
            f"**Degenerate** (marked ‡; {flagged} release(s): fewer distinct test codes "
            "than classes, or a single predicted class): such a release leaks little because it "
            "carries almost nothing; it is kept in the table and `tradeoff.csv` "
            "(`degenerate_release`) but is on no Pareto front and never the least leakage.",
        ]
    lines += [
        "",
        f"## Least leakage among releases keeping ≥ {params.report.min_retention:g} of float "
        "balanced accuracy",
        "",
        "The release in each row is picked on the same test numbers the row reports, so the "
        "least leakage is optimistic (the smallest of many noisy estimates): it describes the "
        "study, it does not certify the release. To choose one to deploy, pick on val and confirm "
        "on test.",
        "",
        "| attack | victims | least leakage | release |",
        "|---|---|---:|---|",
    ]
    for t in axes:
        release = _label(rows[t.least_at]) if t.least_at >= 0 else "none reaches the bar"
        what = "AUC" if t.group is None else "share"
        lines.append(
            f"| {t.number.attack} | {t.group or 'train'} | {_fmt(t.least)} ({what}) | {release} |"
        )
    lines += [
        "",
        "## Pareto-optimal releases (test victims; membership: train)",
        "",
        "No other release keeps more utility with less leakage. Plots: `pareto-<attack>.png`.",
        "",
    ]
    utility = retention(rows)
    for t in axes:
        if t.group not in ("test", None):
            continue
        items = ", ".join(
            f"{_label(rows[i])} ({_fmt(t.leak[i], 2)}, {_fmt(utility[i], 2)})" for i in t.front
        )
        lines.append(f"- **{t.number.attack}** (leakage, retention): {items}")
    lines += ["", "## Headline numbers (`--metrics`, MLflow parent run)", ""]
    lines += [f"- `{k}`: {v:.4g}" for k, v in summary.items()]
    return "\n".join(lines) + "\n"


def pareto_png(
    path: Path, rows: list[dict[str, Any]], panels: list[Tradeoff], min_retention: float
) -> None:
    """Retention against leakage for every release, one panel per victim group of one attack,
    the Pareto front ringed and drawn as a step line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    utility = retention(rows)
    fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 4.2), squeeze=False)
    markers = {"float": "*", "codes": "o", "dp": "s", "rr": "^", "kanon": "D"}
    for ax, t in zip(axes[0], panels, strict=True):
        group, leak, front = t.group, t.leak, t.front
        xlabel = leakage_axis(t.number, group)[1]
        for kind in KINDS:
            idx = [
                i for i, r in enumerate(rows) if r["release"] == kind and not math.isnan(leak[i])
            ]
            if idx:
                ax.scatter(
                    leak[idx], utility[idx], marker=markers[kind], label=TITLES[kind], alpha=0.75
                )
        bad = [i for i, r in enumerate(rows) if degenerate(r) and not math.isnan(leak[i])]
        if bad:
            ax.scatter(leak[bad], utility[bad], marker="x", color="grey", label="degenerate")
        if front.size:
            ax.scatter(leak[front], utility[front], s=110, facecolors="none", edgecolors="k")
            ax.step(
                leak[front],
                utility[front],
                where="post",
                color="k",
                linewidth=1,
                label="Pareto front",
            )
        ax.axhline(min_retention, color="grey", linestyle=":", linewidth=1)
        if group is not None:
            for x in (0.0, 1.0):
                ax.axvline(x, color="grey", linestyle="--", linewidth=0.8)
        ax.set(xlabel=xlabel, ylabel="retention of float balanced accuracy")
        ax.set_title(f"{t.number.attack}: {group or 'members vs non-members'}", fontsize=10)
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)


def _csv_value(value: Any) -> Any:
    return "" if value is None or (isinstance(value, float) and math.isnan(value)) else value


def run_report(
    params: Params, *, dataset: str, metrics_dir: Path, out_dir: Path, metrics: Path
) -> dict[str, float]:
    check_writable(metrics, dirs=(out_dir,))
    plan = plan_releases(params, dataset, metrics_dir)
    float_path = plan[0].utility  # the float KNN's metrics: the provenance every row must share
    reference = read_json(float_path)
    if reference.get("k", params.knn.k) != params.knn.k:
        raise ArtifactError(
            f"{float_path}: the float KNN ran with k = {reference['k']}, params say knn.k = "
            f"{params.knn.k}; re-run the knn stage and its evaluate stages (dvc repro), or report "
            "with the knn.k they used"
        )
    rows = [release_row(f, reference, float_path) for f in plan]
    for f, row in zip(plan[1:], rows[1:], strict=True):
        if f.attack is not None:
            check_float_control(row, f.attack, rows[0], plan[0].attack or float_path)
    axes = tradeoffs(rows, params.report.min_retention)
    summary = summary_metrics(rows, axes)
    name = f"report@{dataset}"
    tags = {"dataset": dataset}
    with tracking.stage_run(params.tracking, name=name, tags=tags) as run:
        run.log_params({"report": params.report, "knn.k": params.knn.k})
        with atomic_outputs():
            write_csv(
                out_dir / "tradeoff.csv", [{k: _csv_value(v) for k, v in r.items()} for r in rows]
            )
            write_text(out_dir / "report.md", markdown(dataset, rows, axes, summary, params))
            plots = []
            for number in LEAKAGE_NUMBERS:  # one PNG per measured attack, a panel per group
                panels = [t for t in axes if t.number == number]
                if panels:
                    plots.append(out_dir / f"pareto-{number.attack}.png")
                    pareto_png(plots[-1], rows, panels, params.report.min_retention)
            tracking.record_metrics(metrics, summary, run)
        remove_stale(out_dir, "pareto-*.png", plots)  # of an attack no longer measured
        run.log_artifact(out_dir / "report.md")
        for png in plots:
            run.log_artifact(png, "pareto")
        if params.report.link_runs:
            runs = {name: path for f in plan for name, path in f.runs}
            missing = tracking.adopt_runs(run, runs, dataset=dataset)
            if missing:
                log.info(
                    "%d stage runs that wrote the reported files not found in MLflow (tracking off, or "
                    "a file rewritten without it?): %s",
                    len(missing),
                    ", ".join(missing[:5]),
                )
    log.info("%s: %d releases reported -> %s", dataset, len(rows), out_dir)
    return summary


def _body(argv: list[str] | None) -> None:
    parser = base_parser(
        "Privacy/utility report of one dataset: tables, Pareto plots, MLflow parent run."
    )
    parser.add_argument("--dataset", required=True)
    parser.add_argument(
        "--metrics-dir", type=Path, default=Path("metrics"), help="the stages' metrics root"
    )
    parser.add_argument(
        "--out", type=Path, required=True, help="folder for report.md, tradeoff.csv, PNGs"
    )
    parser.add_argument(
        "--metrics", type=Path, required=True, help="headline numbers (DVC metrics)"
    )
    args = parser.parse_args(argv)
    run_report(
        load(args),
        dataset=args.dataset,
        metrics_dir=args.metrics_dir,
        out_dir=args.out,
        metrics=args.metrics,
    )


def main(argv: list[str] | None = None) -> int:
    return run_main(_body, argv)


if __name__ == "__main__":
    raise SystemExit(main())
