"""TCL: Triplet-Center loss with a softmax classifier, for hashing (see :class:`TCL`)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from hashers import functional
from hashers.base import HashingMethod, HeadSpec


@dataclass(frozen=True, kw_only=True)
class TCLConfig:
    margin: float = 5.0  # m of the triplet-center loss (He et al. 2018)
    lambda_tc: float = 0.01  # weight of the triplet-center loss next to the softmax loss
    eta: float = 0.01  # weight of the quantisation term ‖u - sign(u)‖² (ours, see Deviations)

    def __post_init__(self) -> None:
        if self.margin < 0:
            raise ValueError(f"margin: {self.margin} must be >= 0")
        if self.lambda_tc < 0:
            raise ValueError(f"lambda_tc: {self.lambda_tc} must be >= 0")
        if self.eta < 0:
            raise ValueError(f"eta: {self.eta} must be >= 0")


def triplet_center_loss(u: Tensor, centers: Tensor, y: Tensor, margin: float) -> Tensor:
    """Per-sample triplet-center loss ``[B]`` with squared Euclidean distances.

    ``ℓ_i = mean_{p ∈ P_i} max(0, D(u_i, c_p) + m - min_{j ∉ P_i} D(u_i, c_j))`` where ``P_i`` is
    the set of labels of sample i (one label: the paper's formula). A sample holding every label
    (no negative center) or none contributes 0.
    """
    d = (u.unsqueeze(1) - centers.unsqueeze(0)).pow(2).sum(dim=2)  # [B, C]
    pos = y > 0
    has_neg = (~pos).any(dim=1, keepdim=True)
    d_neg = d.masked_fill(pos, float("inf")).amin(dim=1, keepdim=True)
    d_neg = torch.where(has_neg, d_neg, torch.zeros_like(d_neg))  # no inf enters the graph
    hinge = torch.where(pos & has_neg, F.relu(d + margin - d_neg), torch.zeros_like(d))
    return hinge.sum(dim=1) / pos.sum(dim=1).clamp_min(1)


class TCL(HashingMethod):
    """TCL + softmax: Triplet-Center loss and a softmax classifier on the relaxed codes.

    He, Zhou, Zhou, Bai & Bai, "Triplet-Center Loss for Multi-View 3D Object Retrieval", CVPR 2018;
    used for hashing as in the thesis (§3.2.2-3.2.3).

    Loss per sample, mean over the batch::

        L_i = CE(W u_i + b, y_i) + λ · max(0, D(u_i, c_{y_i}) + m - min_{j ≠ y_i} D(u_i, c_j))
              + η · ‖u_i - sign(u_i)‖² / K

    with learned class centers ``c`` (an ``nn.Parameter [C, K]``), ``D`` the squared Euclidean
    distance ``‖u_i - c‖²``, ``m = 5`` and ``λ = 0.01`` (taken as the paper's defaults when this
    method was written). The scale of ``D`` is not checked against the paper (no copy offline):
    the center-loss family (Wen et al., ECCV 2016) writes ``D = ½‖·‖²``, and a public TCL
    implementation does too; if the paper does, our hinge at ``m = 5`` is twice the paper's at
    ``m = 2.5``, i.e. the paper's loss with ``λ = 0.02``. Sample i's loss depends on sample i
    and the parameters (head, classifier, centers) alone, so ``per_sample_loss = True``: Opacus'
    per-sample clipping then bounds one record's influence, and DP-SGD may train it.

    Deviations for frozen embeddings and hashing, stated as the brief asks:
    - the paper's multi-view CNN is replaced by an MLP head over the frozen embedding, and the loss
      acts on the relaxed codes ``u`` (the head's output) instead of a feature layer;
    - centers are ordinary parameters updated by the trainer's optimiser together with the head
      (the paper updates them by SGD with their own step); they are initialised from the seed
      (``N(0, 1)``), not from class means of the data, which would leak data outside DP-SGD's
      accounting;
    - multi-label samples average the hinge over their positive labels, the negative distance is
      the nearest center of a label they do not hold, and the softmax loss uses the target
      distribution ``y / Σy`` (:func:`hashers.functional.soft_label_cross_entropy`); a sample
      without any label has no center and no softmax target, so only the quantisation term
      reaches it (unlike the pairwise methods, where unlabelled samples are similar to each other,
      :func:`hashers.functional.label_similarity`; TCL has no center for the empty label set);
    - a mild quantisation term ``η‖u - sign(u)‖²`` (``η = 0.01``, per element; 0 gives the paper's
      loss) keeps the relaxed codes near ``±1`` so their signs preserve the learned geometry.

    Class imbalance: class-balanced batch sampling from the one trainer
    (``hashers.trainer.ClassBalancedBatches``, on when ``train.class_balance > 0``); the
    loss itself is not re-weighted, so it keeps its paper form.
    """

    name = "tcl"
    Config = TCLConfig
    per_sample_loss = True  # CE, triplet-center and quantisation terms are all per sample

    def __init__(self, spec: HeadSpec, config: TCLConfig | None = None) -> None:
        super().__init__(spec, config)
        self.centers = nn.Parameter(torch.randn(spec.n_classes, spec.n_bits))
        self.classifier = nn.Linear(spec.n_bits, spec.n_classes)

    def compute_loss(self, u: Tensor, y: Tensor, idx: Tensor) -> dict[str, Tensor]:
        softmax = functional.soft_label_cross_entropy(self.classifier(u), y)
        center = triplet_center_loss(u, self.centers, y, self.config.margin).mean()
        quantization = functional.quantization_l2(u)
        loss = softmax + self.config.lambda_tc * center + self.config.eta * quantization
        return {
            "loss": loss,
            "softmax": softmax,
            "triplet_center": center,
            "quantization": quantization,
        }
