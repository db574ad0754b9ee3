"""The one interface every privacy attack implements, and what it is given.

Threat model (``privacy/THREAT_MODEL.md``): the release holds the codes of the database (train split)
and of the queries (test split) and the hashing head as a black box that returns codes. The attacker
holds auxiliary records of the same distribution (by default the val split) that are never victims.

* :class:`Records` — one group of records: the true embeddings, labels, optional images, and the
  *released* representation (codes or, for the leaky control, the float embeddings themselves).
  Victim records also carry their *re-acquired* embeddings (the linkage gallery).
* :class:`Release` — what a record becomes when released: :class:`CodeRelease` (a hashing head
  queried as a black box: embeddings in, bits out; Hamming distance) or :class:`FloatRelease` (the
  embedding itself; cosine distance). An attack is written once against this interface, so the same
  code measures the hashed release and its float control.
* :class:`Attack` — ``fit(aux)`` on the attacker's records, then ``run(victims)`` on the victim groups
  (``{"train": Records, "test": Records}``) returning ``{"<group>/<number>": value}``; every number
  has its code-blind baseline beside it as ``<number>_baseline``.

Aux/victim disjointness is enforced by construction: :func:`check_disjoint` refuses any record key
``(split, row)`` present on both sides, and :meth:`Attack.run` calls it before looking at a victim.
"""

from __future__ import annotations

import abc
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import torch

from privacy.errors import PrivacyError
from retrieval.codes import hamming_distances, pack_bits
from retrieval.knn import float_distance_chunks

log = logging.getLogger(__name__)

VICTIM_SPLITS = ("train", "test")


@dataclass(frozen=True, eq=False)
class Records:
    """One group of records of one split.

    ``index``: row positions in ``split`` (the record keys, with the split name); ``x``: true float32
    embeddings ``[N, D]``; ``y``: int class / attribute ids ``[N]``; ``y_multihot``: float32 ``[N, C]``
    labels as a hashing head is trained on them (a withheld finding already removed); ``images``:
    uint8 ``[N, H, W(, C)]`` or None for embeddings-only sources; ``reacquired``: for victims, the
    linkage gallery per perturbation strength (embeddings of the same records re-acquired, ``[N, D]``);
    ``released``: for victims of a code release (:mod:`privacy.release`), the codes as published
    (bool ``[N, K]``, randomised or k-anonymised), or None when the release is the head's own output;
    ``train_copy``: bool ``[N]``, True where the record (of a split other than train) has an image
    byte-identical to a training image (the extract stage's ``duplicate_rows``), or None when
    unknown (embeddings-only sources): membership inference does not count such a test record as a
    non-member.
    """

    split: str
    index: np.ndarray
    x: np.ndarray
    y: np.ndarray
    y_multihot: np.ndarray | None = None
    images: np.ndarray | None = None
    reacquired: Mapping[float, np.ndarray] = field(default_factory=dict)
    released: np.ndarray | None = None
    train_copy: np.ndarray | None = None

    def __post_init__(self) -> None:
        n = len(self.index)
        for name in ("x", "y", "y_multihot", "images", "released", "train_copy"):
            arr = getattr(self, name)
            if arr is not None and len(arr) != n:
                raise PrivacyError(
                    f"records of {self.split!r}: {name} has {len(arr)} rows for {n} records"
                )
        for s, g in self.reacquired.items():
            if g.shape != self.x.shape:
                raise PrivacyError(
                    f"records of {self.split!r}: re-acquired gallery at strength {s} has shape "
                    f"{g.shape}, the embeddings {self.x.shape}"
                )
        if len(np.unique(self.index)) != n:
            raise PrivacyError(f"records of {self.split!r}: a row appears twice")
        if self.released is not None and (
            self.released.dtype != np.bool_ or self.released.ndim != 2
        ):
            raise PrivacyError(  # int 0/1 codes failed later inside pack_bits with a TypeError
                f"records of {self.split!r}: released codes must be bool [N, K] (as the release "
                f"mechanism publishes them), got {self.released.dtype} {self.released.shape}; "
                "convert 0/1 codes with codes.astype(bool)"
            )

    def __len__(self) -> int:
        return len(self.index)

    @property
    def keys(self) -> set[tuple[str, int]]:
        return {(self.split, int(i)) for i in self.index}

    def subset(self, rows: np.ndarray) -> Records:
        rows = np.asarray(rows, dtype=np.int64)
        return Records(
            split=self.split,
            index=self.index[rows],
            x=self.x[rows],
            y=self.y[rows],
            y_multihot=None if self.y_multihot is None else self.y_multihot[rows],
            images=None if self.images is None else self.images[rows],
            reacquired={s: g[rows] for s, g in self.reacquired.items()},
            released=None if self.released is None else self.released[rows],
            train_copy=None if self.train_copy is None else self.train_copy[rows],
        )


def check_nonempty(attack: str, victims: Mapping[str, Records]) -> None:
    """Refuse an empty victim group: every attack's numbers are means or shares over its records
    (an empty one gave NaN, a division by zero or a numpy error, depending on the attack)."""
    for group, rec in victims.items():
        if len(rec) == 0:
            raise PrivacyError(
                f"{attack}: the {group} victim group holds no records; "
                "pass only non-empty victim groups"
            )


def check_disjoint(aux: Records, victims: Mapping[str, Records]) -> None:
    """Refuse any record held by the attacker that is also a victim (same split and row)."""
    if aux.split in VICTIM_SPLITS:
        raise PrivacyError(
            f"attack.aux_split: {aux.split!r} is a released split (a victim group); the attacker's "
            "auxiliary records must come from another split, e.g. val"
        )
    for group, rec in victims.items():
        both = aux.keys & rec.keys
        if both:
            raise PrivacyError(
                f"{len(both)} auxiliary records are also {group} victims (e.g. {sorted(both)[0]}); "
                "aux and victims must be disjoint"
            )


# --------------------------------------------------------------------------------------------
# releases
# --------------------------------------------------------------------------------------------


class Release(abc.ABC):
    """What a record becomes when released, and how the attacker compares released items."""

    kind: ClassVar[str]

    @abc.abstractmethod
    def encode(self, x: np.ndarray) -> np.ndarray:
        """The released form of embeddings ``x`` ``[N, D]`` (a black-box query)."""

    @abc.abstractmethod
    def features(self, released: np.ndarray) -> np.ndarray:
        """float32 ``[N, F]`` learner input from released items (codes as ±1)."""

    @abc.abstractmethod
    def distances(self, q: np.ndarray, db: np.ndarray) -> np.ndarray:
        """float ``[Nq, Ndb]`` distances between released items."""

    @property
    def is_code(self) -> bool:
        return self.kind == "codes"

    def published(self, records: Records) -> np.ndarray:
        """What the release holds for these (victim) records: their published codes where a code
        release mechanism produced them (``records.released``), else the head's output."""
        return self.encode(records.x) if records.released is None else records.released

    def attacker_codes(self, x: np.ndarray) -> np.ndarray:
        """The released form of the attacker's own records, as the learned attacks train on it:
        the head's output, passed through the public release mechanism where there is one."""
        return self.encode(x)


class CodeRelease(Release):
    """Binary codes from a hashing head queried as a black box (``encoder``: embeddings -> bool bits)."""

    kind = "codes"

    def __init__(
        self,
        encoder: Callable[[np.ndarray], np.ndarray],
        n_bits: int,
        relaxed: Callable[[np.ndarray], np.ndarray] | None = None,
    ) -> None:
        self.encoder = encoder
        self.n_bits = int(n_bits)
        self.relaxed = relaxed  # real-valued head outputs (bit = u > 0); membership inference only

    @classmethod
    def from_head(cls, method: Any) -> CodeRelease:
        """Wrap a :class:`hashers.base.HashingMethod`. Attacks call its binary ``encode``; only
        membership inference's default score reads the real-valued outputs (``relaxed``)."""

        def encoder(x: np.ndarray) -> np.ndarray:
            with torch.no_grad():
                return method.encode(torch.as_tensor(x, dtype=torch.float32)).numpy()

        def relaxed(x: np.ndarray) -> np.ndarray:
            was = method.training
            method.eval()
            try:
                with torch.no_grad():
                    return method(torch.as_tensor(x, dtype=torch.float32)).numpy()
            finally:
                method.train(was)

        return cls(encoder, method.spec.n_bits, relaxed)

    def encode(self, x: np.ndarray) -> np.ndarray:
        bits = np.asarray(self.encoder(x))
        if bits.dtype != np.bool_:  # a cast would make every ±1 or real-valued entry True
            raise PrivacyError(
                f"the encoder returned {bits.dtype} codes; it must return bool codes (e.g. u > 0)"
            )
        if bits.ndim != 2 or bits.shape[1] != self.n_bits:
            raise PrivacyError(
                f"the head returned codes of shape {bits.shape}, expected [N, {self.n_bits}]"
            )
        return bits

    def published(self, records: Records) -> np.ndarray:
        """As :meth:`Release.published`; published codes of another length than the head's are
        refused (the learned attacks failed with a shape error deep inside torch)."""
        codes = super().published(records)
        if codes.shape[1] != self.n_bits:
            raise PrivacyError(
                f"records of {records.split!r}: the published codes have {codes.shape[1]} bits, "
                f"the head {self.n_bits}; pass the codes this head's release published"
            )
        return codes

    def features(self, released: np.ndarray) -> np.ndarray:
        return released.astype(np.float32) * 2.0 - 1.0

    def distances(self, q: np.ndarray, db: np.ndarray) -> np.ndarray:
        return hamming_distances(pack_bits(q), pack_bits(db), self.n_bits).astype(np.float32)


class MechanismRelease(CodeRelease):
    """A head's codes published through a code release mechanism (``privacy/release.py``).

    ``encode`` still queries the head as a black box (clean codes: the linkage gallery, membership);
    ``attacker_codes`` passes the attacker's own codes through ``mechanism`` — randomised response
    with the public ε_code and the attacker's own seed, or the snap to the released k-anonymous
    codes — so that the learned attacks train on the distribution they are applied to
    (THREAT_MODEL.md, "Attacks on released codes").
    """

    def __init__(
        self, head: CodeRelease, mechanism: Callable[[np.ndarray], np.ndarray], *, name: str
    ) -> None:
        super().__init__(head.encoder, head.n_bits, head.relaxed)
        self.mechanism = mechanism
        self.mechanism_name = name

    def published(self, records: Records) -> np.ndarray:
        """The codes the mechanism published for these records (``records.released``). Refused
        when absent: the head's clean codes are not what was published, and attacking them
        would report the leakage of the undefended head under the defence's name."""
        if records.released is None:
            raise PrivacyError(
                f"release {self.mechanism_name!r}: the victim records carry no released codes "
                "(Records.released is None); pass the codes the mechanism published for them "
                "(pipeline.attack.load_release reads them from the release folder)"
            )
        return super().published(records)

    def attacker_codes(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(self.mechanism(self.encode(x)), dtype=bool)


class FloatRelease(Release):
    """The leaky control: the float embedding itself is released (cosine distance)."""

    kind = "float"

    def encode(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(x, dtype=np.float32)

    def features(self, released: np.ndarray) -> np.ndarray:
        return np.asarray(released, dtype=np.float32)

    def distances(self, q: np.ndarray, db: np.ndarray) -> np.ndarray:
        return cosine_distances(q, db)


def cosine_distances(q: np.ndarray, db: np.ndarray) -> np.ndarray:
    """``1 - cos`` ``[Nq, Ndb]`` (the retrieval library's float distances, concatenated)."""
    parts = [d for _, d in float_distance_chunks(q, db, metric="cosine")]
    return np.concatenate(parts) if parts else np.zeros((0, len(db)), dtype=np.float32)


# --------------------------------------------------------------------------------------------
# shared maths
# --------------------------------------------------------------------------------------------


def tie_aware_topk(dist: np.ndarray, true_col: np.ndarray, ks: tuple[int, ...]) -> dict[int, float]:
    """Mean probability that the true item ranks in the top k, ties broken uniformly at random.

    ``dist``: ``[Q, N]``; ``true_col``: ``[Q]`` column of each query's true match. With ``c`` items
    strictly closer than the true one and ``t`` items at its distance (itself included), the true one
    lands in the top k with probability ``clip((k - c) / t, 0, 1)`` — the expectation over tie orders,
    so Hamming ties never let the gallery order decide (the same convention as
    :func:`retrieval.knn.tie_aware_votes`).
    """
    q = np.arange(len(true_col))
    d_true = dist[q, true_col][:, None]
    closer = (dist < d_true).sum(axis=1)
    tied = (dist == d_true).sum(axis=1)
    return {k: float(np.clip((k - closer) / tied, 0.0, 1.0).mean()) for k in ks}


# --------------------------------------------------------------------------------------------
# the attack interface
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class NoConfig:
    """An attack without hyper-parameters."""


class Attack(abc.ABC):
    """Base class of every attack: ``fit(aux)`` then ``run(victims)``.

    Class attributes: ``name`` (registry key, the prefix of its metric names), ``Config`` (frozen
    keyword-only dataclass of hyper-parameters), ``min_aux`` (auxiliary records it needs; 0 = none).
    Subclasses implement :meth:`_fit` (optional) and :meth:`run_group` (numbers of one victim group)
    or override :meth:`run` when the groups must be seen together.
    """

    name: ClassVar[str]
    Config: ClassVar[type] = NoConfig
    min_aux: ClassVar[int] = 0

    def __init__(self, release: Release, config: Any | None = None, *, seed: int = 0) -> None:
        self.release = release
        self.config = self.Config() if config is None else config
        if not isinstance(self.config, self.Config):
            raise PrivacyError(
                f"{self.name}: config must be a {self.Config.__name__}, got {type(self.config).__name__}"
            )
        self.seed = int(seed)
        self.aux: Records | None = None

    def skip_reason(self, aux: Records, victims: Mapping[str, Records]) -> str | None:
        """Why this attack cannot run on these inputs (logged and recorded), or None."""
        return None

    def check_inputs(self, aux: Records, victims: Mapping[str, Records]) -> None:  # noqa: B027
        """Raise :class:`PrivacyError` for inputs this attack cannot use (a setting that does not
        fit the labels, say). A stage calls it for every attack before it trains any, so that a
        wrong setting fails fast instead of after the other attacks' minutes."""

    def required_aux(self, aux: Records) -> int:
        """Auxiliary records this attack needs (may depend on the labels)."""
        return self.min_aux

    def fit(self, aux: Records) -> Attack:
        need = self.required_aux(aux)
        if len(aux) < need:
            raise PrivacyError(
                f"{self.name}: the auxiliary split {aux.split!r} holds {len(aux)} records but this "
                f"attack needs at least {need}; raise attack.aux_size, use a larger attack.aux_split "
                f"or drop {self.name!r} from attack.attacks"
            )
        self.aux = aux
        self._fit(aux)
        return self

    def _fit(self, aux: Records) -> None:  # noqa: B027 - optional hook, no-op by default
        """Train on the attacker's records (default: nothing to train)."""

    def run(self, victims: Mapping[str, Records]) -> dict[str, float]:
        """Numbers per victim group, named ``<group>/<number>`` (``<number>_baseline`` beside)."""
        if self.aux is None:
            raise PrivacyError(f"{self.name}: call fit(aux) before run(victims)")
        check_disjoint(self.aux, victims)
        check_nonempty(self.name, victims)
        out: dict[str, float] = {}
        for group, rec in victims.items():
            for key, value in self.run_group(rec).items():
                out[f"{group}/{key}"] = float(value)
        return out

    def run_group(self, victims: Records) -> dict[str, float]:  # pragma: no cover - overridden
        raise NotImplementedError
