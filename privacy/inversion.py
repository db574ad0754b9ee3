"""Embedding inversion: reconstruct a victim's embedding from its released code.

An MLP is trained on the attacker's (released item -> embedding) pairs, built by querying the head
with the auxiliary embeddings, and applied to the victims' released codes — the learning-based
inversion of Song & Raghunathan (ACM CCS 2020, "Information leakage in embedding models"), here from
binary codes to the frozen backbone's embedding. Targets are standardised per dimension with the
aux statistics; the epoch is chosen on a held-out share of aux.

Reported per victim group: mean cosine similarity and MSE to the true embeddings, the cosine after
centring on the aux mean (``cosine_centered``: raw cosine is inflated by the offset every embedding
shares), and re-identification of the true embedding among all the group's embeddings from the
reconstruction (tie-aware top-1/top-10 by cosine). Code-blind baseline: the aux mean embedding for
every victim (its centred cosine is 0 and it re-identifies at chance ``k / N``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from privacy._learn import mlp, predict, train_regressor
from privacy.base import Attack, Records, cosine_distances, tie_aware_topk
from privacy.errors import PrivacyError


@dataclass(frozen=True, kw_only=True)
class InversionConfig:
    hidden: tuple[int, ...] = (1024,)
    epochs: int = 200
    lr: float = 1e-3
    weight_decay: float = 1e-4
    batch_size: int = 128
    holdout: float = 0.2


def _rowwise_cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    num = (a * b).sum(axis=1)
    den = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    return np.where(den > 0, num / np.maximum(den, 1e-12), 0.0)


class Inversion(Attack):
    name = "inversion"
    Config = InversionConfig
    min_aux = 20

    def _fit(self, aux: Records) -> None:
        feats = self.release.features(self.release.attacker_codes(aux.x))
        self.n_features = feats.shape[1]
        self.mean = aux.x.mean(axis=0)
        self.std = aux.x.std(axis=0) + 1e-6
        target = (aux.x - self.mean) / self.std
        c = self.config
        self.model = train_regressor(
            mlp(feats.shape[1], aux.x.shape[1], c.hidden),
            feats,
            target,
            loss_fn=torch.nn.functional.mse_loss,
            settings=c,
            seed=self.seed,
        )

    def reconstruct(self, released: np.ndarray) -> np.ndarray:
        feats = self.release.features(released)
        if feats.shape[1] != self.n_features:  # was a torch RuntimeError in the first layer
            raise PrivacyError(
                f"inversion: the released items give {feats.shape[1]} features, the model was "
                f"trained on {self.n_features} (the aux records' released form); pass codes of "
                "the same head and bit count, or embeddings of the same backbone"
            )
        return predict(self.model, feats) * self.std + self.mean

    def run_group(self, victims: Records) -> dict[str, float]:
        if victims.x.shape[1] != len(self.mean):  # was a broadcast ValueError or RuntimeError
            raise PrivacyError(
                f"inversion: the {victims.split} victims' embeddings have {victims.x.shape[1]} "
                f"dimensions, the aux embeddings {len(self.mean)}; aux and victims must come "
                "from the same backbone"
            )
        true = victims.x.astype(np.float32)
        rec = self.reconstruct(self.release.published(victims)).astype(np.float32)
        base = np.broadcast_to(self.mean, true.shape).astype(np.float32)
        n = len(true)
        ks = (1, min(10, n))
        out: dict[str, float] = {}
        for tag, guess in (("", rec), ("_baseline", base)):
            out[f"cosine{tag}"] = float(_rowwise_cosine(guess, true).mean())
            out[f"cosine_centered{tag}"] = float(
                _rowwise_cosine(guess - self.mean, true - self.mean).mean()
            )
            out[f"mse{tag}"] = float(np.mean((guess - true) ** 2))
        top = tie_aware_topk(cosine_distances(rec, true), np.arange(n), ks)
        out["reid_top1"], out["reid_top10"] = top[ks[0]], top[ks[1]]
        out["reid_top1_baseline"], out["reid_top10_baseline"] = 1.0 / n, ks[1] / n
        return out
