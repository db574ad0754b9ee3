"""Linkage / re-identification: link each released code to a re-acquired record.

Deterministic hashing is not anonymisation: whoever holds a record can hash it and look it up. The
attacker holds a *gallery* that contains the victims, re-acquired — the same images with a seeded
perturbation, re-embedded by the backbone, or for embeddings-only sources the embeddings with seeded
noise at a stated SNR (:mod:`privacy.perturb`). They hash the gallery with the released head (black
box) and rank the gallery by Hamming distance to each released code (cosine distance for the float
control). Reported per victim group: top-1 and top-10 re-identification rates, tie-aware
(:func:`privacy.base.tie_aware_topk`), beside chance ``k / gallery size``.

The default strength gives the headline numbers; every strength in the gallery gives a sweep row
(:attr:`Linkage.sweep_rows`, the stage's plots CSV). Nothing is trained: the attack needs no aux.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from hashers.base import is_integer
from privacy.base import Attack, Records, tie_aware_topk
from privacy.errors import PrivacyError


@dataclass(frozen=True, kw_only=True)
class LinkageConfig:
    strength: float = 0.5  # the gallery perturbation whose numbers are the headline ones
    ks: tuple[int, ...] = (1, 10)


class Linkage(Attack):
    name = "linkage"
    Config = LinkageConfig

    def run(self, victims: Mapping[str, Records]) -> dict[str, float]:
        ks = self.config.ks
        whole = all(is_integer(k) for k in ks)
        if not ks or not whole or any(not k >= 1 for k in ks):  # k < 1: a negative chance k / n
            raise PrivacyError(
                f"linkage: ks={ks}: give the top-k ranks to report, each >= 1 and a whole number "
                "(e.g. (1, 10))"
            )
        self.sweep_rows: list[dict[str, float | str]] = []
        return super().run(victims)

    def link(self, victims: Records, strength: float) -> dict[int, float]:
        """Top-k re-identification rates of ``victims`` against their gallery at ``strength``."""
        if strength not in victims.reacquired:
            raise PrivacyError(
                f"linkage: no gallery at strength {strength} for the {victims.split} victims "
                f"(have {sorted(victims.reacquired)}); add it to attack.linkage strengths"
            )
        released = self.release.published(victims)  # what the release holds for these records
        gallery = self.release.encode(victims.reacquired[strength])
        dist = self.release.distances(released, gallery)
        ks = tuple(min(k, len(victims)) for k in self.config.ks)
        return tie_aware_topk(dist, np.arange(len(victims)), ks)

    def run_group(self, victims: Records) -> dict[str, float]:
        n = len(victims)
        out: dict[str, float] = {"gallery_size": float(n)}
        for s in sorted(victims.reacquired):
            rates = self.link(victims, s)
            row: dict[str, float | str] = {"group": victims.split, "strength": s}
            for k_req in self.config.ks:  # a k beyond the gallery is read at the gallery's size
                k = min(k_req, n)
                row[f"top{k_req}"] = rates[k]
                row[f"top{k_req}_baseline"] = k / n
                if s == self.config.strength:
                    out[f"top{k_req}"] = rates[k]
                    out[f"top{k_req}_baseline"] = k / n
            self.sweep_rows.append(row)
        if f"top{self.config.ks[0]}" not in out:
            raise PrivacyError(
                f"linkage: the default strength {self.config.strength} is not among the gallery's "
                f"strengths {sorted(victims.reacquired)}"
            )
        return out
