"""How sure is a retention figure? A paired, class-stratified bootstrap over the query images.

The retention of a release is ``score(codes) / score(float)`` on the same queries. On MedMNIST's
small test splits one image of the smallest class moves balanced accuracy by about 0.01, so a
retention of 0.97 may say more about which 156 or 400 images are in the test split than about the
codes. :func:`retention_bootstrap` resamples the queries (with replacement, within each true class,
so every class keeps its size, as balanced accuracy assumes) and scores the float predictions and
the code predictions on the *same* resample each time: the two are paired, so the noise they share
cancels in the ratio. Several code predictions (one per head seed) are averaged on each resample,
as the point estimate averages them.

What it measures is the sampling noise of the *query set* only: seed-to-seed noise is averaged
out, and the training set (the KNN database) is held fixed. Single-label predictions only. Time
and memory grow as ``n_boot × n_queries × rows`` (every resample is drawn at once).

:func:`retention_draws` returns the resampled ratios themselves. Draws of several releases on the
same queries are joint, and :func:`clearing_retentions` turns them (plus an optional
training-noise term) into what a per-release bar can certify: the common true retention every
release would need for all of them to clear it with a given probability. The training-noise term
must be the seed noise that the bootstrap does not already hold: :func:`seed_variances` splits a
seed variance into the shift of every query (that term) and the query x seed interaction (which
resampling the seed mean of every query already carries).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# metrics that are functions of the per-class recalls (and the fixed class sizes)
BOOTSTRAP_METRICS = ("balanced_accuracy", "accuracy")


@dataclass(frozen=True)
class RetentionInterval:
    """Retention point estimate and its bootstrap distribution's summary."""

    point: float  # retention on the queries as given
    low: float  # lower end of the two-sided interval at ``level``
    high: float  # upper end
    level: float
    share_below: float  # share of resamples whose retention is under ``threshold``
    threshold: float
    n_boot: int

    def verdict(self) -> str:
        """``meets`` (point ≥ threshold), ``short`` (the whole interval is under it) or ``noise``."""
        if self.point >= self.threshold:
            return "meets"
        return "short" if self.high < self.threshold else "noise"


def _per_class_recalls(
    correct: np.ndarray, by_class: list[np.ndarray], draws: list[np.ndarray]
) -> np.ndarray:
    """``correct [..., n]`` -> recalls ``[..., n_boot, C]`` on each resample."""
    cols = [correct[..., idx[d]].mean(axis=-1) for idx, d in zip(by_class, draws, strict=True)]
    return np.stack(cols, axis=-1)


def retention_bootstrap(
    y_true: np.ndarray,
    float_pred: np.ndarray,
    code_preds: np.ndarray,
    *,
    metric: str = "balanced_accuracy",
    n_boot: int = 2000,
    level: float = 0.95,
    threshold: float = 0.98,
    seed: int = 0,
) -> RetentionInterval:
    """Paired, class-stratified bootstrap of ``metric(codes) / metric(float)`` over the queries
    (one metric of :func:`bootstrap_retentions`; the same resamples for any ``metric``)."""
    return bootstrap_retentions(
        y_true,
        float_pred,
        code_preds,
        metrics=(metric,),
        n_boot=n_boot,
        level=level,
        threshold=threshold,
        seed=seed,
    )[metric]


def retention_draws(
    y_true: np.ndarray,
    float_pred: np.ndarray,
    code_preds: np.ndarray,
    *,
    metrics: tuple[str, ...] = BOOTSTRAP_METRICS,
    n_boot: int = 2000,
    seed: int = 0,
) -> dict[str, tuple[float, np.ndarray]]:
    """``{metric: (point, ratios [n_boot])}``: the retention on the queries as given and on each
    paired, class-stratified resample of them (NaN where the resample's float score is 0).

    ``y_true`` and ``float_pred`` are ``[n]`` class ids; ``code_preds`` is ``[n]`` or ``[s, n]``
    (one row per head seed; the code score is the mean over rows, on every resample). The
    resamples depend only on the class sizes of ``y_true``, ``n_boot`` and ``seed``: calls for
    several releases scored on the same queries share them, so their draws are joint.
    """
    for metric in metrics:
        if metric not in BOOTSTRAP_METRICS:
            raise ValueError(f"metric {metric!r}: the bootstrap supports {list(BOOTSTRAP_METRICS)}")
    y_true = np.asarray(y_true)
    if y_true.ndim != 1:
        raise ValueError(
            f"y_true has shape {y_true.shape}: the bootstrap takes single-label class ids [n]"
        )
    codes = np.atleast_2d(np.asarray(code_preds))
    float_pred = np.asarray(float_pred)
    if float_pred.shape != y_true.shape or codes.shape[1:] != y_true.shape:
        raise ValueError(
            f"predictions {float_pred.shape} and {codes.shape} do not match y_true {y_true.shape}"
        )
    if n_boot < 1:
        raise ValueError(f"n_boot={n_boot} must be >= 1")
    classes, sizes = np.unique(y_true, return_counts=True)
    by_class = [np.flatnonzero(y_true == c) for c in classes]
    weights = sizes / sizes.sum()  # accuracy = class-size-weighted mean of the recalls
    float_ok = (float_pred == y_true).astype(np.float64)
    code_ok = (codes == y_true).astype(np.float64)
    identity = [np.arange(len(idx))[None, :] for idx in by_class]
    rng = np.random.default_rng(seed)
    draws = [rng.integers(0, len(idx), size=(n_boot, len(idx))) for idx in by_class]
    # per-class recalls, once: [1, C] and [s, 1, C] as given, [n_boot, C] and [s, n_boot, C] resampled
    point_rf = _per_class_recalls(float_ok, by_class, identity)
    point_rc = _per_class_recalls(code_ok, by_class, identity)
    boot_rf = _per_class_recalls(float_ok, by_class, draws)
    boot_rc = _per_class_recalls(code_ok, by_class, draws)
    out: dict[str, tuple[float, np.ndarray]] = {}
    for metric in metrics:

        def score(recalls: np.ndarray, metric: str = metric) -> np.ndarray:
            return recalls.mean(axis=-1) if metric == "balanced_accuracy" else recalls @ weights

        point_f = score(point_rf)[0]
        point_c = score(point_rc)[:, 0].mean()
        f = score(boot_rf)  # [n_boot]
        c = score(boot_rc).mean(axis=0)  # [n_boot]
        with np.errstate(divide="ignore", invalid="ignore"):
            ratios = np.where(f > 0, c / np.where(f > 0, f, 1.0), np.nan)
        out[metric] = (float(point_c / point_f) if point_f > 0 else float("nan"), ratios)
    return out


def bootstrap_retentions(
    y_true: np.ndarray,
    float_pred: np.ndarray,
    code_preds: np.ndarray,
    *,
    metrics: tuple[str, ...] = BOOTSTRAP_METRICS,
    n_boot: int = 2000,
    level: float = 0.95,
    threshold: float = 0.98,
    seed: int = 0,
) -> dict[str, RetentionInterval]:
    """Paired, class-stratified bootstrap of ``metric(codes) / metric(float)`` over the queries,
    for every metric of ``metrics`` from one set of resamples (:func:`retention_draws`).

    The interval is the percentile interval of the resampled ratios at ``level``. Resamples whose
    float score is 0 have no ratio and are dropped (counted out of ``n_boot``).
    """
    if not 0 < level < 1:
        raise ValueError(f"level={level} must be in (0, 1)")
    alpha = (1.0 - level) / 2.0
    out: dict[str, RetentionInterval] = {}
    drawn = retention_draws(
        y_true, float_pred, code_preds, metrics=metrics, n_boot=n_boot, seed=seed
    )
    for metric, (point, all_ratios) in drawn.items():
        ratios = all_ratios[~np.isnan(all_ratios)]
        low, high = np.quantile(ratios, [alpha, 1.0 - alpha]) if ratios.size else (np.nan, np.nan)
        out[metric] = RetentionInterval(
            point=point,
            low=float(low),
            high=float(high),
            level=level,
            share_below=float((ratios < threshold).mean()) if ratios.size else float("nan"),
            threshold=threshold,
            n_boot=int(ratios.size),
        )
    return out


def seed_variances(
    y_true: np.ndarray,
    float_pred: np.ndarray,
    code_preds: np.ndarray,
    *,
    metrics: tuple[str, ...] = BOOTSTRAP_METRICS,
) -> dict[str, tuple[float, float]]:
    """``{metric: (total, shift)}``: the variance over head seeds (ddof 1) of one seed's retention
    on these queries, and the part of it that moves every query alike (the seed's main effect).

    ``code_preds [s, n]`` holds one row per head seed (s >= 2). A seed's retention is a weighted
    mean over the queries, ``sum_q w_q ok_sq / F`` (``w_q = 1 / (C n_c)`` for balanced accuracy,
    ``1 / n`` for accuracy). Its seed variance is the shift's plus the query x seed interaction
    (seeds that get *different* queries right), ``sum_q w_q² var_s(ok_sq) / F²``. The bootstrap
    over the queries of :func:`retention_draws` already resamples that interaction (it resamples
    the seed mean of every query), so a training-noise term added to it
    (:func:`clearing_retentions`' ``seed_se``) must be the shift alone, or the interaction counts
    twice. ``shift`` is its unbiased estimate ``(total - interaction) / (1 - sum_q w_q²)``: it may
    be negative (clip after pooling). NaN where the float score is 0.
    """
    y_true = np.asarray(y_true)
    codes = np.asarray(code_preds)
    float_pred = np.asarray(float_pred)
    if y_true.ndim != 1 or codes.ndim != 2 or codes.shape[1:] != y_true.shape:
        raise ValueError(
            f"y_true {y_true.shape} and code_preds {codes.shape}: need class ids [n] and one row "
            "of predictions per head seed [s, n]"
        )
    if codes.shape[0] < 2:
        raise ValueError(f"{codes.shape[0]} head seed(s): a seed variance needs at least 2")
    if float_pred.shape != y_true.shape:
        raise ValueError(f"float predictions {float_pred.shape} do not match y_true {y_true.shape}")
    classes, inverse, sizes = np.unique(y_true, return_inverse=True, return_counts=True)
    ok = (codes == y_true).astype(np.float64)
    float_ok = (float_pred == y_true).astype(np.float64)
    out: dict[str, tuple[float, float]] = {}
    for metric in metrics:
        if metric not in BOOTSTRAP_METRICS:
            raise ValueError(f"metric {metric!r}: use one of {list(BOOTSTRAP_METRICS)}")
        if metric == "balanced_accuracy":
            w = 1.0 / (len(classes) * sizes[inverse])
        else:
            w = np.full(y_true.shape, 1.0 / y_true.size)
        f = float(float_ok @ w)
        if f <= 0:
            out[metric] = (float("nan"), float("nan"))
            continue
        total = float(np.var(ok @ w / f, ddof=1))
        interaction = float((w**2 * np.var(ok, axis=0, ddof=1)).sum() / f**2)
        out[metric] = (total, (total - interaction) / (1.0 - float((w**2).sum())))
    return out


def clearing_retentions(
    points: np.ndarray,
    ratios: np.ndarray,
    *,
    threshold: float = 0.98,
    seed_se: float | np.ndarray = 0.0,
    seed: int = 0,
) -> np.ndarray:
    """What a per-release bar can certify on these queries: for each joint resample, the common
    true retention every release would need for all their point estimates to clear ``threshold``.

    ``points [m]`` are the releases' retentions and ``ratios [m, n_boot]`` their joint resampled
    retentions (:func:`retention_draws` on the same queries and seed). By the basic bootstrap, a
    release whose true retention is ``r`` is estimated as ``r + (ratio_b - point)`` plus, where
    its figure is a mean over head seeds, a training-noise term ``N(0, seed_se²)`` (drawn here,
    independently per release and resample, from ``seed``). ``seed_se`` is the standard error of
    the seed mean's *shift* alone (``sqrt(shift / seeds)``, :func:`seed_variances`): the rest of
    the seed noise, seeds getting different queries right, is resampled with the queries already,
    and counting it again makes every estimate too pessimistic. Every estimate clears the bar iff
    ``r >= threshold + max_m (point_m - ratio_mb - noise_mb)``, the value returned per resample
    (resamples where any ratio is NaN are dropped). So ``np.mean(out <= r)`` is the probability
    that releases all at true retention ``r`` pass a per-release bar, and ``np.quantile(out, p)``
    the common true retention needed to pass it with probability ``p``. Approximations: the
    bootstrap's spread stands for the query set's, and the noise terms are Gaussian and
    independent of it.
    """
    points = np.asarray(points, dtype=np.float64)
    ratios = np.asarray(ratios, dtype=np.float64)
    if points.ndim != 1 or ratios.ndim != 2 or ratios.shape[0] != points.shape[0]:
        raise ValueError(
            f"points {points.shape} and ratios {ratios.shape}: need points [m] and ratios "
            "[m, n_boot] from retention_draws of the same m releases"
        )
    se = np.broadcast_to(np.asarray(seed_se, dtype=np.float64), points.shape)
    if (se < 0).any() or not np.isfinite(se).all():
        raise ValueError(f"seed_se={seed_se}: use standard errors >= 0 (0 = no training noise)")
    keep = ~np.isnan(ratios).any(axis=0)
    noise = np.random.default_rng(seed).standard_normal(ratios.shape) * se[:, None]
    needed = threshold + (points[:, None] - ratios - noise).max(axis=0)
    return needed[keep]
