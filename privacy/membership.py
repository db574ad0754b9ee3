"""Membership inference on the hashing head, LiRA-style (Carlini et al., IEEE S&P 2022,
"Membership Inference Attacks From First Principles").

Question: was a given record (the attacker holds it) in the head's training set? Candidates are
``candidates`` members (train split) and as many non-members (test split), drawn with a seed. The
attacker trains ``shadow_heads`` heads of the same method and training configuration
(:func:`hashers.trainer.fit`, cheap on frozen embeddings) on seeded random halves of a pool = aux ∪
candidates. Halves come in complementary pairs, so every candidate is IN for half of the shadow
heads and OUT for the other half (the online attack; an odd last head draws one more random half).

Per-record score, ``score`` in the config:
* ``relaxed_margin`` (default): ``φ = mean_k |tanh(u_k)|`` over the head's real-valued outputs ``u``
  (bit k = ``u_k > 0``): how far the record sits from the bits' decision boundaries, the code analogue
  of a classifier's confidence. It needs the head's outputs before the sign — the head's weights,
  which ship with any deployment that hashes new records — a stronger assumption than the codes-only
  black box of the other attacks (stated in THREAT_MODEL.md). Measured on an overfit DPSH head
  (40 records, 60% random labels, 8 shadow heads; ``tests/privacy/test_membership.py``): AUC 0.93.
* ``code_stability`` (codes only, the black box that returns nothing but codes): the label-only
  attack of Choquette-Choo et al. (ICML 2021, "Label-Only Membership Inference Attacks"), which
  replaces a model's confidence by its output's robustness to input noise. ``φ = 1 − mean_q
  d(b(x), b(x + n_q)) / K`` over ``stability_queries`` seeded Gaussian perturbations ``n_q`` of the
  candidate's embedding at ``stability_snr_db`` (measured against the aux embeddings' variation,
  :func:`privacy.perturb.noise_std_for_snr`); the same draws are used for the target and every shadow
  head. Records a head fitted sit far from its bit boundaries, so their codes flip less. Measured on
  the overfit DPSH head below (8 shadow heads, one draw of the noise; ``python
  bench/bench_mi_snr.py``): AUC 0.85 / 0.86 / 0.84 / 0.67 at 30 / 20 / 10 / 3 dB; 20 dB (the
  linkage default's re-acquisition noise) is the default, fixed on that synthetic case, never on a
  data set's test split.
* ``code_margin`` (codes only): ``φ = (min_{c≠y} d(b, p_c) − d(b, p_y)) / K`` — how much closer the
  record's code ``b`` lies to the prototype code of its own class than to any other class's, with
  prototypes ``p_c`` the bitwise majority code of the aux records of class c under the same head.
  Measured far weaker (AUC 0.50 on the same case, where ``code_stability`` reaches 0.84–0.86 at
  10–30 dB).
Per record, Gaussians are
fitted to its IN and OUT shadow scores and the target head's score gets the log likelihood ratio
``Λ = log N(φ; μ_in, σ_in) − log N(φ; μ_out, σ_out)``. Following the paper's advice for few shadow
models, the variances are global — the standard deviation of all IN scores for the IN Gaussian and
of all OUT scores for the OUT one — unless every record has at least 32 IN and 32 OUT scores. (The
authors' reference code's fixed-variance option uses the IN scores' standard deviation for both;
deviation (4) in privacy/THREAT_MODEL.md, not measured against it on our data.)

Shadow heads are trained the way the target was: ``train_shadow(head, train, val, config)``
defaults to :func:`hashers.trainer.fit`; for a DP-SGD target the attack stage passes DP-SGD at the
target's (ε, δ, clipping norm, accountant) and schedule (:func:`privacy.dp.dp_fit`), since LiRA's
IN/OUT score distributions are those of the training procedure — non-private shadows would model a
head that memorises more than the target does.

Reported: AUC and TPR at 1% and 0.1% FPR (members vs non-members by Λ), beside the blind baseline:
AUC 0.5, and the TPR a membership-blind score reaches in expectation under the same rule,
``(j + 1) / (n_nonmembers + 1)`` with ``j`` the false positives the FPR admits
(:func:`blind_tpr_at_fpr`; TPR = FPR only as the non-members grow). An FPR below
``1 / n_nonmembers`` cannot be resolved: its flag ``..._resolvable`` is 0 and the TPR is left
out. Deviations from Carlini et al.: the target head was
trained on the whole train split, not on a random half of the pool, so shadow training sets are
smaller than the target's (heads on frozen embeddings see every record each epoch either way); the
centre of each record's IN / OUT Gaussian is the mean of its shadow scores (:func:`lira_scores`),
where the authors' reference code takes the median (``np.median`` in its scoring script); and the
Gaussians are fitted to the scores above as they are (``relaxed_margin``'s mean ``|tanh(u)|`` lies
in [0, 1)), without the logit scaling the paper applies to a classifier's confidence. None of these
was measured against the original choice.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import multiprocessing
import os
import signal
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from hashers.base import is_integer
from privacy._learn import one_thread
from privacy.base import (
    Attack,
    CodeRelease,
    MechanismRelease,
    Records,
    check_disjoint,
    check_nonempty,
)
from privacy.errors import PrivacyError
from privacy.perturb import noise_std_for_snr
from retrieval.codes import hamming_distances, pack_bits

log = logging.getLogger(__name__)

FIXED_VARIANCE_BELOW = 32
FPRS = ((0.01, "1pct"), (0.001, "0_1pct"))
SCORES = ("relaxed_margin", "code_stability", "code_margin")


@dataclass(frozen=True, kw_only=True)
class MembershipConfig:
    shadow_heads: int = 16
    candidates: int = 500  # members and, as many, non-members (capped by the split sizes)
    # data a shadow head selects its epoch on: "out" = the other half (as the target head selected on
    # records it did not train on), "in" = its own half (mirrors a target selected on its train set).
    # Not a perfect mirror: under "out" a shadow's OUT half holds the candidates it scores as
    # non-members, so its epoch is picked on them (the target's val holds no candidate); their OUT
    # scores lean towards IN, which narrows the IN/OUT gap: the attack errs on the weak side
    shadow_selection: str = "out"
    # "relaxed_margin" (the head's real-valued outputs), or codes only: "code_stability", "code_margin"
    score: str = "relaxed_margin"
    stability_queries: int = 16  # code_stability: noisy queries per candidate and head
    stability_snr_db: float = 20.0  # code_stability: their noise level
    # processes that train shadow heads at once (each on one thread); None = the CPUs this process
    # may use. Every shadow is seeded on its own, so the scores do not depend on this
    workers: int | None = None

    def __post_init__(self) -> None:
        counts = {"shadow_heads": 16, "candidates": 500, "stability_queries": 16, "workers": 4}
        for key, example in counts.items():  # 2.5 failed as a TypeError once the attack ran
            value = getattr(self, key)
            if key == "workers" and value is None:
                continue
            if not is_integer(value):
                raise PrivacyError(
                    f"membership: {key}={value!r} must be a whole number (e.g. {example})"
                )
        if self.shadow_heads < 2:
            raise PrivacyError(
                f"membership: shadow_heads={self.shadow_heads}; LiRA needs at least 2 shadow heads "
                "(an IN and an OUT score per record)"
            )
        if self.shadow_selection not in ("out", "in"):
            raise PrivacyError(
                f"membership: shadow_selection={self.shadow_selection!r}; use 'out' or 'in'"
            )
        if self.score not in SCORES:
            raise PrivacyError(f"membership: score={self.score!r}; use one of {', '.join(SCORES)}")
        if self.stability_queries < 1:
            raise PrivacyError(
                f"membership: stability_queries={self.stability_queries} must be >= 1"
            )
        if self.candidates < 1:
            raise PrivacyError(f"membership: candidates={self.candidates} must be >= 1")
        if self.workers is not None and self.workers < 1:
            raise PrivacyError(f"membership: workers={self.workers} must be >= 1 (or None)")


#: the shadow job a forked worker runs (set by the parent just before forking, read by the child)
_SHADOW_JOB: dict[str, Callable[[int], np.ndarray]] = {}


def _run_shadow(i: int) -> np.ndarray:
    return _SHADOW_JOB["fn"](i)


def map_shadows(fn: Callable[[int], np.ndarray], heads: int, workers: int | None) -> list:
    """``[fn(0), ..., fn(heads - 1)]``, in forked processes when more than one worker is wanted
    and allowed (not inside a daemonic pool worker, and only where ``fork`` exists): ``fn`` reaches
    the children through the fork, so it may be a closure over unpicklable state."""
    if workers is None:
        try:
            workers = len(os.sched_getaffinity(0))
        except AttributeError:  # pragma: no cover - not Linux
            workers = os.cpu_count() or 1
    workers = min(workers, heads)
    bar = functools.partial(tqdm, total=heads, desc="shadow heads", leave=False)
    can_fork = "fork" in multiprocessing.get_all_start_methods()
    if workers <= 1 or not can_fork or multiprocessing.current_process().daemon:
        return [fn(i) for i in bar(range(heads))]
    _SHADOW_JOB["fn"] = fn
    pool = multiprocessing.get_context("fork").Pool(workers, initializer=_shadow_worker_init)
    try:
        out = list(bar(pool.imap(_run_shadow, range(heads))))
        pool.close()  # workers leave on their own; no signal needed on success
        pool.join()
        return out
    finally:
        pool.terminate()  # on an error or Ctrl-C: SIGTERM, at its default action in the workers
        _SHADOW_JOB.clear()


def _shadow_worker_init() -> None:
    """Restore the default signal actions in a forked shadow worker. It inherits the stage's
    handlers (``pipeline.common`` turns SIGTERM into an exception so a stage unwinds cleanly);
    in a pool worker that exception path could leave the worker blocked on a lock, and the
    parent's ``Pool.terminate`` waiting for it forever (seen once in a 189-stage study: the
    attack_dp stage hung after its last shadow head). Ctrl-C is the parent's to handle."""
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def prototypes(codes: np.ndarray, y: np.ndarray, n_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """Bitwise-majority code per class ``[C, K]`` and which classes have any record."""
    proto = np.zeros((n_classes, codes.shape[1]), dtype=bool)
    present = np.zeros(n_classes, dtype=bool)
    for c in range(n_classes):
        rows = codes[y == c]
        if len(rows):
            proto[c] = rows.mean(axis=0) > 0.5
            present[c] = True
    return proto, present


def code_margin(
    codes: np.ndarray, y: np.ndarray, proto: np.ndarray, present: np.ndarray
) -> np.ndarray:
    """``(min_{c≠y} d(b, p_c) − d(b, p_y)) / K`` per record (absent classes count as distance K/2)."""
    k = codes.shape[1]
    d = hamming_distances(pack_bits(codes), pack_bits(proto), k).astype(np.float64)
    d[:, ~present] = k / 2
    rows = np.arange(len(codes))
    own = d[rows, y].copy()
    d[rows, y] = np.inf
    other = d.min(axis=1) if d.shape[1] > 1 else np.full(len(codes), k / 2)
    other = np.where(np.isfinite(other), other, k / 2)
    return (other - own) / k


def check_trained_classes(*groups: Records) -> None:
    """``code_margin`` compares a code with the prototype of the class the head trained on, read
    from ``y``: that holds when every record has one training label (``y_multihot`` one-hot) and
    ``y`` is it. On a multi-label source ``y`` is a finding, possibly withheld from training, so
    the margin would measure nothing the head memorised."""
    for g in groups:
        yh = np.asarray(g.y_multihot)
        if not ((yh.sum(axis=1) == 1).all() and np.array_equal(yh.argmax(axis=1), g.y)):
            raise PrivacyError(
                f"membership score 'code_margin' needs single-label training classes, but the "
                f"{g.split} records' training labels are multi-label or not the attacked "
                "attribute; use attack.mi_score relaxed_margin or code_stability"
            )


def code_stability(
    encode: Callable[[np.ndarray], np.ndarray], x: np.ndarray, noise: np.ndarray
) -> np.ndarray:
    """``1 − mean_q d(b(x), b(x + noise[q])) / K`` per record: the share of bits that survive the
    perturbations ``noise`` ``[Q, N, D]`` (1 = the code never moves)."""
    code = encode(x)
    flipped = np.zeros(len(x))
    for n in noise:
        flipped += (encode(x + n) != code).mean(axis=1)
    return 1.0 - flipped / len(noise)


def _log_normal(x: np.ndarray, mu: np.ndarray, sigma: np.ndarray) -> np.ndarray:
    return -0.5 * ((x - mu) / sigma) ** 2 - np.log(sigma) - 0.5 * np.log(2 * np.pi)


def lira_scores(
    target: np.ndarray, shadow: np.ndarray, in_mask: np.ndarray, *, min_sigma: float = 1e-3
) -> np.ndarray:
    """Per-record log likelihood ratio (online LiRA, see the module docstring).

    ``target``: ``[N]`` scores under the target model; ``shadow``: ``[N, M]`` scores under the shadow
    models; ``in_mask``: ``[N, M]`` True where the record was in that shadow model's training set
    (bool, or 0/1).
    """
    target, shadow, in_mask = np.asarray(target), np.asarray(shadow), np.asarray(in_mask)
    if in_mask.dtype != np.bool_:  # ``~`` on 0/1 ints is -1/-2: every score counted as OUT
        if not np.isin(in_mask, (0, 1)).all():
            raise PrivacyError(
                f"LiRA: in_mask holds {np.unique(in_mask)[:5].tolist()}; "
                "pass bool or 0/1 (1 = the record was in that shadow's training set)"
            )
        in_mask = in_mask.astype(bool)
    if shadow.ndim != 2 or in_mask.shape != shadow.shape or target.shape != shadow.shape[:1]:
        raise PrivacyError(
            f"LiRA: target {target.shape}, shadow {shadow.shape} and in_mask {in_mask.shape} "
            "must be [N], [N, M] and [N, M] (N records, M shadow heads)"
        )
    n_in, n_out = in_mask.sum(axis=1), (~in_mask).sum(axis=1)
    if (n_in == 0).any() or (n_out == 0).any():
        raise PrivacyError("LiRA: every record needs at least one IN and one OUT shadow score")
    mu_in = np.where(in_mask, shadow, 0.0).sum(axis=1) / n_in
    mu_out = np.where(~in_mask, shadow, 0.0).sum(axis=1) / n_out
    if min(n_in.min(), n_out.min()) < FIXED_VARIANCE_BELOW:
        s_in = np.full(len(target), shadow[in_mask].std())
        s_out = np.full(len(target), shadow[~in_mask].std())
    else:
        s_in = np.sqrt(np.where(in_mask, (shadow - mu_in[:, None]) ** 2, 0.0).sum(axis=1) / n_in)
        s_out = np.sqrt(
            np.where(~in_mask, (shadow - mu_out[:, None]) ** 2, 0.0).sum(axis=1) / n_out
        )
    s_in, s_out = np.maximum(s_in, min_sigma), np.maximum(s_out, min_sigma)
    return _log_normal(target, mu_in, s_in) - _log_normal(target, mu_out, s_out)


def shadow_seeds(first: int, heads: int, *, avoid: int | None) -> list[int]:
    """``heads`` consecutive seeds from ``first``, skipping ``avoid`` (the target head's own seed):
    a shadow initialised and trained with the target's seed would repeat the target's draw instead
    of being an independent one (with ``seed: 1`` and ``attack.seed: 0``, shadow 0 did)."""
    out, seed = [], first
    while len(out) < heads:
        if seed != avoid:
            out.append(seed)
        seed += 1
    return out


def shadow_splits(n: int, heads: int, *, seed: int) -> np.ndarray:
    """``[n, heads]`` IN mask: complementary random halves in pairs (an odd last head: one half)."""
    rng = np.random.default_rng(seed)
    mask = np.zeros((n, heads), dtype=bool)
    for j in range(0, heads, 2):
        half = np.zeros(n, dtype=bool)
        half[rng.permutation(n)[: n // 2]] = True
        mask[:, j] = half
        if j + 1 < heads:
            mask[:, j + 1] = ~half
    return mask


def blind_tpr_at_fpr(n_neg: int, alpha: float) -> float:
    """Expected TPR of a code-blind attacker (scores independent of membership, untied) under the
    rule of :func:`roc_numbers`: the highest TPR at a threshold that admits at most ``j`` of the
    ``n_neg`` non-members, ``j`` the largest with ``j / n_neg <= alpha``. That threshold admits
    every member scored above the (j+1)-th highest non-member, so by exchangeability the expected
    TPR is ``(j + 1) / (n_neg + 1)`` — not ``alpha``: 2/101 at 1% FPR over 100 non-members."""
    j = int(np.floor(alpha * n_neg))
    while (j + 1) / n_neg <= alpha:  # the same float comparison as ``fpr <= alpha`` below
        j += 1
    while j > 0 and j / n_neg > alpha:
        j -= 1
    return (j + 1) / (n_neg + 1)


def drop_training_copies(others: Records) -> tuple[Records, int]:
    """The non-member candidates without the records whose image is byte-identical to a training
    image (``Records.train_copy``): the head was trained on that very image, so scoring it as a
    non-member would count the attack's correct "member" call as a false positive. Returns the
    records kept and how many were dropped."""
    if others.train_copy is None or not others.train_copy.any():
        return others, 0
    keep = np.flatnonzero(~others.train_copy)
    return others.subset(keep), len(others) - len(keep)


def roc_numbers(is_member: np.ndarray, score: np.ndarray) -> dict[str, float]:
    """AUC and TPR at the fixed FPRs (with resolvability flags) of ``score`` ranking members first.

    ``is_member``: bool, or 0/1 labels. Each TPR's baseline is :func:`blind_tpr_at_fpr`."""
    from sklearn.metrics import roc_auc_score, roc_curve

    is_member = np.asarray(is_member)
    if is_member.dtype != np.bool_:
        if not np.isin(is_member, (0, 1)).all():
            raise PrivacyError(
                f"membership: is_member holds {np.unique(is_member)[:5].tolist()}; "
                "pass bool or 0/1 labels (1 = member)"
            )
        is_member = is_member.astype(bool)
    n_neg = int((~is_member).sum())
    out = {"auc": float(roc_auc_score(is_member, score)), "auc_baseline": 0.5}
    fpr, tpr, _ = roc_curve(is_member, score, drop_intermediate=False)
    for alpha, tag in FPRS:
        ok = n_neg * alpha >= 1.0
        out[f"tpr_at_fpr_{tag}_resolvable"] = float(ok)
        if ok:
            out[f"tpr_at_fpr_{tag}"] = float(tpr[fpr <= alpha].max())
            out[f"tpr_at_fpr_{tag}_baseline"] = blind_tpr_at_fpr(n_neg, alpha)
        else:
            log.info(  # a property of the test split's size, nothing to fix: not a warning
                "membership: %d non-members cannot resolve an FPR of %g (needs >= %d); that TPR "
                "is left out (its _resolvable flag is 0)",
                n_neg,
                alpha,
                int(np.ceil(1 / alpha)),
            )
    return out


class MembershipInference(Attack):
    name = "membership"
    Config = MembershipConfig
    min_aux = 10

    def __init__(
        self,
        release: Any,
        config: MembershipConfig | None = None,
        *,
        seed: int = 0,
        make_head: Callable[[int], Any] | None = None,
        fit_config: Any | None = None,
        n_classes: int | None = None,
        train_shadow: Callable[..., Any] | None = None,
    ) -> None:
        super().__init__(release, config, seed=seed)
        self.make_head = make_head
        self.fit_config = fit_config
        self.n_classes = n_classes
        self.train_shadow = train_shadow  # None: hashers.trainer.fit (the target's trainer)

    def skip_reason(self, aux: Records, victims: Mapping[str, Records]) -> str | None:
        if not isinstance(self.release, CodeRelease):
            return "the float release has no trained component (the frozen backbone never saw these records)"
        if isinstance(self.release, MechanismRelease):
            return (
                "a code release mechanism does not change the head: membership inference on the "
                "head is the unreleased attack stage's number (THREAT_MODEL.md)"
            )
        if self.make_head is None or self.fit_config is None:
            return "no way to train shadow heads was given (make_head, fit_config)"
        if "train" not in victims or "test" not in victims:
            return "needs train (members) and test (non-members) victims"
        return None

    def check_inputs(self, aux: Records, victims: Mapping[str, Records]) -> None:
        groups = (aux, victims["train"], victims["test"])
        if any(g.y_multihot is None for g in groups):
            raise PrivacyError(
                "membership: shadow heads need multi-hot training labels (y_multihot)"
            )
        if self.config.score == "code_margin":
            check_trained_classes(*groups)
        # the non-members are the test records left once training copies are dropped (run)
        others, copies = drop_training_copies(victims["test"])
        if len(others) == 0:
            raise PrivacyError(
                f"membership: all {copies} test records hold an image byte-identical to a training "
                "image (the extract's duplicate_rows), so no non-member is left to score; drop "
                "'membership' from attack.attacks or use a test split with images of its own"
            )
        k = getattr(self.fit_config, "k", None)
        if isinstance(k, int):  # a shadow's KNN model selection votes over its training half
            m = min(self.config.candidates, len(victims["train"]), len(others))
            half = (len(aux) + 2 * m) // 2
            if half < k:
                raise PrivacyError(
                    f"membership: each shadow head trains on half of the {len(aux)} aux records "
                    f"and {2 * m} candidates ({half} rows), fewer than the k={k} neighbours its "
                    f"KNN model selection votes over; raise attack.aux_size (to at least "
                    f"{2 * k - 2 * m}) or attack.mi_candidates"
                )

    def _score(self, release: CodeRelease, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        assert self.aux is not None
        if self.config.score == "relaxed_margin":
            if release.relaxed is None:
                raise PrivacyError(
                    "membership: score 'relaxed_margin' needs the head's real-valued outputs; "
                    "use score 'code_margin' for a codes-only release"
                )
            return np.abs(np.tanh(release.relaxed(x))).mean(axis=1)
        if self.config.score == "code_stability":
            return code_stability(release.encode, x, self._noise)
        proto, present = prototypes(release.encode(self.aux.x), self.aux.y, self._classes)
        return code_margin(release.encode(x), y, proto, present)

    def run(self, victims: Mapping[str, Records]) -> dict[str, float]:
        from hashers.base import EmbeddingSet
        from hashers.devices import resolve_device
        from hashers.trainer import fit

        if self.aux is None:
            raise PrivacyError("membership: call fit(aux) before run(victims)")
        check_disjoint(self.aux, victims)
        check_nonempty(self.name, victims)
        self.check_inputs(self.aux, victims)
        aux, members, others = self.aux, victims["train"], victims["test"]
        others, copies = drop_training_copies(others)
        rng = np.random.default_rng(self.seed)
        m = min(self.config.candidates, len(members), len(others))
        mem = members.subset(np.sort(rng.choice(len(members), m, replace=False)))
        non = others.subset(np.sort(rng.choice(len(others), m, replace=False)))
        cand_x = np.concatenate([mem.x, non.x])
        cand_y = np.concatenate([mem.y, non.y])
        is_member = np.r_[np.ones(m, dtype=bool), np.zeros(m, dtype=bool)]
        pool_x = np.concatenate([aux.x, cand_x])
        pool_yh = np.concatenate([aux.y_multihot, mem.y_multihot, non.y_multihot])
        self._classes = int(max(self.n_classes or 0, cand_y.max() + 1, aux.y.max() + 1))
        if self.config.score == "code_stability":  # one set of draws for the target and shadows
            std = noise_std_for_snr(aux.x, self.config.stability_snr_db)
            shape = (self.config.stability_queries, *cand_x.shape)
            rng_noise = np.random.default_rng((self.seed, 1))
            self._noise = rng_noise.normal(0.0, std, shape).astype(np.float32)
        heads = self.config.shadow_heads
        in_mask = shadow_splits(len(pool_x), heads, seed=self.seed)
        target_seed = getattr(self.fit_config, "seed", None)
        seeds = shadow_seeds(self.seed + 1, heads, avoid=target_seed)

        def shadow_scores(i: int) -> np.ndarray:
            rows = np.flatnonzero(in_mask[:, i])
            out_rows = np.flatnonzero(
                ~in_mask[:, i] if self.config.shadow_selection == "out" else in_mask[:, i]
            )
            head = self.make_head(seeds[i])
            cfg = dataclasses.replace(self.fit_config, seed=seeds[i], progress=False)
            (self.train_shadow or fit)(
                head,
                EmbeddingSet.from_numpy(pool_x[rows], pool_yh[rows]),
                EmbeddingSet.from_numpy(pool_x[out_rows], pool_yh[out_rows]),
                config=cfg,
            )
            return self._score(CodeRelease.from_head(head), cand_x, cand_y)

        # tiny heads: a second OpenMP thread only spins on a busy machine (privacy/_learn.py), so
        # each shadow trains on one thread, several shadows at once in forked processes
        # CUDA cannot be used again in a forked child: shadows on a GPU train one after the other
        on_cpu = resolve_device(self.fit_config.device).type == "cpu"
        workers = self.config.workers if on_cpu else 1
        with one_thread():
            shadow = np.stack(map_shadows(shadow_scores, heads, workers), axis=1)
        assert isinstance(self.release, CodeRelease)
        target = self._score(self.release, cand_x, cand_y)
        cand_in = in_mask[len(aux.x) :]
        lam = lira_scores(target, shadow, cand_in)
        out = roc_numbers(is_member, lam)
        out.update({"n_members": float(m), "n_nonmembers": float(m), "shadow_heads": float(heads)})
        out["n_nonmembers_dropped_duplicates"] = float(copies)
        return out
