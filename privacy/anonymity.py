"""Anonymity sets of the released codes (k-anonymity of the release).

For every released record (train database and test queries together: both are published), ``k_r``
is the number of released records whose code lies within Hamming radius ``r`` of its own (itself
included; ``r = 0`` is the exact-code set). Reported per victim group and radius: the minimum (the
release's k-anonymity, Sweeney 2002), the median, the share of records that are unique (``k = 1``)
and the shares below ``k = 5`` and ``k = 20`` (``k >= 20``, a re-identification risk of at most
0.05, is a threshold commonly accepted for clinical data, e.g. El Emam & Dankar, JAMIA 2008).

Code-blind baseline: a release that carries no information about a record (one constant code)
puts every record in one set, ``k = N``. Float control: only exact duplicate embeddings share a
set (radii in bits do not apply to floats, so the control reports ``r = 0`` only).

Counting works on the distinct codes with their multiplicities, so a 12-bit release with a few
dozen distinct codes costs a few dozen squared distances, not ``N²``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from hashers.base import is_integer
from privacy.base import Attack, Records, check_disjoint, check_nonempty
from privacy.errors import PrivacyError
from retrieval.codes import iter_hamming_chunks, pack_bits


@dataclass(frozen=True, kw_only=True)
class AnonymityConfig:
    radii: tuple[int, ...] = (0, 1, 2)


def check_radii(radii: tuple[int, ...]) -> None:
    """Hamming radii are whole numbers of bits >= 0, at least one of them."""
    if len(radii) == 0:  # no radius reported no set size at all, r0's uniqueness included
        raise PrivacyError(
            "anonymity: radii=() is empty; give at least one Hamming radius (e.g. (0, 1, 2))"
        )
    for r in radii:
        if not is_integer(r):  # 1.5 named a key r1.5
            raise PrivacyError(
                f"anonymity: radius {r!r} is not a whole number of bits; use Hamming radii "
                ">= 0 (e.g. (0, 1, 2))"
            )
        if r < 0:  # a negative radius holds no code, not even the record's own: k = 0
            raise PrivacyError(
                f"anonymity: radius {r} is negative; use Hamming radii >= 0 (e.g. (0, 1, 2))"
            )


def set_sizes(codes: np.ndarray, radii: tuple[int, ...]) -> dict[int, np.ndarray]:
    """``{r: k_r [N]}``: records of ``codes`` (bool ``[N, K]``) within Hamming radius r of each one."""
    check_radii(radii)
    uniq, inverse, counts = np.unique(codes, axis=0, return_inverse=True, return_counts=True)
    inverse = inverse.reshape(-1)
    packed = pack_bits(uniq)
    per_unique = {r: np.zeros(len(uniq), dtype=np.int64) for r in radii}
    for sl, dist in iter_hamming_chunks(packed, packed, codes.shape[1]):
        for r in radii:
            per_unique[r][sl] = (dist <= r).astype(np.int64) @ counts
    return {r: v[inverse] for r, v in per_unique.items()}


def summarise(k: np.ndarray) -> dict[str, float]:
    return {
        "k_min": float(k.min()),
        "k_median": float(np.median(k)),
        "share_unique": float(np.mean(k == 1)),
        "share_k_lt5": float(np.mean(k < 5)),
        "share_k_lt20": float(np.mean(k < 20)),
    }


class Anonymity(Attack):
    name = "anonymity"
    Config = AnonymityConfig

    def run(self, victims: Mapping[str, Records]) -> dict[str, float]:
        if self.aux is not None:
            check_disjoint(self.aux, victims)
        if not victims:
            raise PrivacyError("anonymity: no released records")
        check_radii(self.config.radii)  # the float control reports r = 0 only, but one rule
        groups = list(victims)
        check_nonempty(self.name, victims)  # summarise() of an empty group: a numpy error
        released = [self.release.published(victims[g]) for g in groups]
        allr = np.concatenate(released)
        n = len(allr)
        if self.release.is_code:
            radii = self.config.radii
            sizes = set_sizes(allr, radii)
        else:  # float control: exact duplicates only
            radii = (0,)
            _, inv, cnt = np.unique(allr, axis=0, return_inverse=True, return_counts=True)
            sizes = {0: cnt[inv.reshape(-1)]}
        out: dict[str, float] = {"all/distinct": float(len(np.unique(allr, axis=0)))}
        bounds = np.cumsum([0] + [len(r) for r in released])
        parts = {"all": slice(0, n)} | {
            g: slice(bounds[i], bounds[i + 1]) for i, g in enumerate(groups)
        }
        for part, sl in parts.items():
            for r in radii:
                for key, value in summarise(sizes[r][sl]).items():
                    out[f"{part}/r{r}/{key}"] = value
            m = sl.stop - sl.start
            # a constant, code-blind release: one set of all N records
            out[f"{part}/k_min_baseline"] = float(n)
            out[f"{part}/share_unique_baseline"] = 0.0 if n > 1 else 1.0
            out[f"{part}/n"] = float(m)
        return out
