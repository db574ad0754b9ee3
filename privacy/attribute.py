"""Attribute inference: predict a victim's attribute from its released code.

A multinomial logistic regression (scikit-learn, L2, features standardised on aux) is trained on
the attacker's (released item -> attribute) pairs and applied to the victims' released codes. The
attribute is the class label by default; for multi-label sources it is one finding — ideally one
*withheld* from head training (``attack.withhold_label``), the honest test of what a code leaks
beyond its task (Song & Shmatikov, ICLR 2020, "Overlearning reveals sensitive attributes").

Reported per victim group: accuracy, balanced accuracy and AUC (binary AUC, or the macro mean of
one-vs-rest AUCs over the classes the attack model knows from aux that are present, with both
positives and negatives, among the victims; a victim class absent from aux has no score column and
is not scored), beside the prior-only baseline: the
aux majority class for accuracy, ``1 / classes present`` for balanced accuracy, 0.5 for AUC. Where
no class can be scored (every victim of one attribute value) the AUC is undefined: it and its
baseline are left out, with a warning.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np

from privacy.base import Attack, Records
from privacy.errors import PrivacyError

log = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class AttributeConfig:
    c: float = 1.0  # inverse L2 strength of the logistic regression
    max_iter: int = 2000


def macro_auc(y: np.ndarray, proba: np.ndarray, classes: np.ndarray) -> float:
    """Binary AUC, or the mean one-vs-rest AUC over ``classes`` (the attack model's, from aux)
    with both positives and negatives in ``y``. Victims of a class the aux records lack (not in
    ``classes``: the model cannot score it) count as negatives in every AUC, and their class
    gets none of its own. NaN when no class has both (every victim of one class, or of classes
    the model does not know): the AUC is undefined there, not chance."""
    from sklearn.metrics import roc_auc_score

    # one scored column decides a binary task only when every victim is of one of its two
    # classes; with a third class among them the two columns' AUCs differ and both count
    binary = len(classes) == 2 and bool(np.isin(y, classes).all())
    aucs = []
    for j, c in enumerate(classes):
        pos = y == c
        if 0 < pos.sum() < len(y):
            aucs.append(roc_auc_score(pos, proba[:, j]))
        if binary and aucs:
            break  # (the first column may have no victims)
    return float(np.mean(aucs)) if aucs else math.nan


class AttributeInference(Attack):
    name = "attribute"
    Config = AttributeConfig
    min_aux = 10

    def _fit(self, aux: Records) -> None:
        from sklearn.linear_model import LogisticRegression
        from sklearn.preprocessing import StandardScaler

        classes = np.unique(aux.y)
        if len(classes) < 2:
            raise PrivacyError(
                f"attribute: the auxiliary records hold a single attribute value ({int(classes[0])}); "
                "the attack needs at least two (raise attack.aux_size)"
            )
        feats = self.release.features(self.release.attacker_codes(aux.x))
        self.scaler = StandardScaler().fit(feats)
        self.model = LogisticRegression(C=self.config.c, max_iter=self.config.max_iter)
        self.model.fit(self.scaler.transform(feats), aux.y)
        values, counts = np.unique(aux.y, return_counts=True)
        self.majority = int(values[np.argmax(counts)])

    def run_group(self, victims: Records) -> dict[str, float]:
        from sklearn.metrics import balanced_accuracy_score

        feats = self.scaler.transform(self.release.features(self.release.published(victims)))
        proba = self.model.predict_proba(feats)
        pred = self.model.classes_[proba.argmax(axis=1)]
        y = victims.y
        present = len(np.unique(y))
        out = {
            "accuracy": float(np.mean(pred == y)),
            "accuracy_baseline": float(np.mean(y == self.majority)),
            "balanced_accuracy": float(balanced_accuracy_score(y, pred)),
            "balanced_accuracy_baseline": 1.0 / present,
        }
        auc = macro_auc(y, proba, self.model.classes_)
        if math.isnan(auc):
            log.warning(
                "attribute: the %s victims' attribute values %s leave no class the attack "
                "model knows (aux: %s) with both positives and negatives; AUC left out",
                victims.split,
                np.unique(y).tolist(),
                self.model.classes_.tolist(),
            )
        else:
            out.update({"auc": auc, "auc_baseline": 0.5})
        return out
