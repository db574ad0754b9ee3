"""DSDH: Deep Supervised Discrete Hashing (see :class:`DSDH`)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from hashers import functional
from hashers.bank import MemoryBankMixin, MemoryBankOptions
from hashers.base import EmbeddingSet, HashingError, HashingMethod, HeadSpec


@dataclass(frozen=True, kw_only=True)
class DSDHConfig(MemoryBankOptions):
    mu: float = 1.0  # μ: weight of the label regression Σ_i ‖y_i - Wᵀ b_i‖² (paper: 1)
    nu: float = 0.1  # ν: ridge penalty ‖W‖²_F (paper: 0.1)
    eta: float = 55.0  # η: weight of the coupling Σ_i ‖b_i - u_i‖² (paper: 55)
    dcc_iters: int = (
        3  # alternations of the closed-form W step and one DCC sweep over all bits, per epoch
    )
    chunk: int = 8192  # rows per forward pass when computing U over the training set

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.mu <= 0:
            raise ValueError(f"mu: {self.mu} must be > 0")
        if self.nu <= 0:
            raise ValueError(f"nu: {self.nu} must be > 0")
        if self.eta < 0:
            raise ValueError(f"eta: {self.eta} must be >= 0")
        if self.dcc_iters < 1:
            raise ValueError(f"dcc_iters: {self.dcc_iters} must be >= 1")
        if self.chunk < 1:
            raise ValueError(f"chunk: {self.chunk} must be >= 1")


def ridge_classifier(B: Tensor, Y: Tensor, *, mu: float, nu: float) -> Tensor:
    """``W = argmin μ‖Y - B W‖² + ν‖W‖² = (BᵀB + (ν/μ) I)⁻¹ BᵀY`` (``B [n, K]``, ``Y [n, C]``)."""
    K = B.shape[1]
    gram = B.T @ B + (nu / mu) * torch.eye(K, dtype=B.dtype, device=B.device)
    return torch.linalg.solve(gram, B.T @ Y)


def dcc_sweep(B: Tensor, U: Tensor, Y: Tensor, W: Tensor, *, mu: float, eta: float) -> Tensor:
    """One discrete cyclic coordinate descent sweep over the bits of ``B [n, K]``.

    Minimises ``μ‖Y - B W‖² + η‖B - U‖²`` over ``B ∈ {-1, 1}^{n×K}`` one bit (column) at a time.
    With ``G = W Wᵀ`` and ``P = μ Y Wᵀ + η U`` the objective is
    ``μ tr(B G Bᵀ) - 2 tr(Bᵀ P) + const``, whose exact minimiser over column ``k`` with the other
    columns fixed is ``b_k = sign(p_k - μ Σ_{l≠k} G_lk b_l)`` (paper eq. 13; ``sign(0) = +1``).
    Each update cannot increase the objective.
    """
    B = B.clone()
    G = W @ W.T
    P = mu * (Y @ W.T) + eta * U
    for k in range(B.shape[1]):
        others = B @ G[:, k] - G[k, k] * B[:, k]
        B[:, k] = functional.sign_with_ties(P[:, k] - mu * others)
    return B


def discrete_objective(
    B: Tensor, U: Tensor, Y: Tensor, W: Tensor, *, mu: float, nu: float, eta: float
) -> float:
    """``μ‖Y - B W‖² + ν‖W‖² + η‖B - U‖²`` — the part of the DSDH objective the B/W steps minimise."""
    return float(mu * (Y - B @ W).pow(2).sum() + nu * W.pow(2).sum() + eta * (B - U).pow(2).sum())


class DSDH(MemoryBankMixin, HashingMethod):
    """DSDH: Deep Supervised Discrete Hashing.

    Li, Sun, He & Tan, "Deep Supervised Discrete Hashing", NeurIPS 2017.

    Objective (paper eq. 6): ``J = -Σ_ij (S_ij Ψ_ij - log(1 + e^Ψ_ij)) + μ Σ_i ‖y_i - Wᵀ b_i‖²
    + ν ‖W‖²_F + η Σ_i ‖b_i - u_i‖²`` with ``Ψ_ij = ½ u_iᵀ u_j``, binary codes ``b_i ∈ {-1, 1}^K``
    kept as variables and a linear classifier ``W`` from codes to labels, so the labels shape the
    codes directly (not only through pairs). Alternating optimisation:

    - ``W`` step (closed form, ridge regression): ``W = (BᵀB + ν/μ I)⁻¹ BᵀY``;
    - ``B`` step: discrete cyclic coordinate descent (DCC), exact bit-by-bit updates
      ``b_k = sign(p_k - μ Σ_{l≠k} (WWᵀ)_lk b_l)`` with ``P = μ Y Wᵀ + η U``, no relaxation;
    - network step: the likelihood on ``U`` plus the coupling ``η ‖B_idx - u‖²``.

    The ``W``/``B`` steps run in ``on_epoch_start`` over the whole training set, with ``U``
    computed by the head in eval mode without gradients (chunked, ``[n, K]`` floats: 17 MB for
    90 000 × 48); ``B`` starts as ``sign(U)`` at the first epoch. ``dcc_iters`` alternations of
    (``W`` step, one DCC sweep over all bits) are run per epoch; each alternation cannot increase
    the objective.

    Normalisation: our loss is ``J / n²`` (``n`` training samples), so the paper's values of
    ``μ, ν, η`` carry over unchanged: the B/W steps are invariant to this scaling, the likelihood
    sum over all ``n²`` pairs becomes a mean (estimated by the mean over the ordered pairs of the
    mini-batch, diagonal included, as in DPSH), and the coupling becomes
    ``(η / n) · mean_i ‖b_i - u_i‖²`` (sum over bits, mean over the batch). The label-regression
    and ridge terms do not depend on the network and are not part of its loss. Under
    ``memory_bank: true`` the pair term's gradient is half the in-batch one (the bank side
    carries none: :mod:`hashers.bank`), so there ``η`` weighs twice as much.

    Deviations for frozen embeddings:
    - the paper's CNN-F network is replaced by an MLP head over the frozen embedding
      (``hashers.heads.MLPHead``);
    - by default pairs are formed inside each mini-batch; ``memory_bank: true`` pairs the batch with
      the stored ``U`` of every training row instead, as the paper does (a
      :class:`hashers.bank.CodeBank`, refreshed every step, no gradient on the bank side; or
      ``bank_rows`` sampled rows per step); the ``W``/``B`` steps use ``U`` recomputed once per epoch by the current head rather than
      columns updated batch by batch;
    - naming follows the paper (``μ`` label regression, ``ν`` ridge, ``η`` coupling);
    - ``B`` and ``W`` are *non-persistent* buffers: they are rebuilt by training and are not written
      to the saved head, because ``B`` is the binary code of every training row and ``W`` a label
      classifier on them (the head never needs either to encode).

    Class imbalance: class-balanced batch sampling from the one trainer
    (``hashers.trainer.ClassBalancedBatches``, on when ``train.class_balance > 0``); the
    loss itself is not re-weighted, so it keeps its paper form.
    """

    name = "dsdh"
    Config = DSDHConfig
    per_sample_loss = False  # the likelihood couples every pair in the batch

    def __init__(self, spec: HeadSpec, config: DSDHConfig | None = None) -> None:
        super().__init__(spec, config)
        self.register_buffer("B", torch.zeros(0, spec.n_bits), persistent=False)
        self.register_buffer("W", torch.zeros(spec.n_bits, spec.n_classes), persistent=False)
        self._train: EmbeddingSet | None = None

    def on_fit_start(self, train: EmbeddingSet) -> None:
        super().on_fit_start(train)
        self._train = train
        self.B = torch.zeros(0, self.spec.n_bits, device=self.B.device)

    @torch.no_grad()
    def relaxed_codes(self, x: Tensor) -> Tensor:
        """``U = head(x)`` for every row, in eval mode (no dropout), chunked; on the head's device."""
        device = self.B.device
        was_training = self.training
        self.eval()
        try:
            parts = [
                self(x[i : i + self.config.chunk].to(device))
                for i in range(0, x.shape[0], self.config.chunk)
            ]
        finally:
            self.train(was_training)
        return torch.cat(parts)

    @torch.no_grad()
    def on_epoch_start(self, epoch: int, n_epochs: int) -> None:
        if self._train is None:
            raise HashingError("dsdh: on_fit_start(train) must run before the discrete step")
        c = self.config
        U = self.relaxed_codes(self._train.x)
        Y = self._train.y.to(U)
        B = functional.sign_with_ties(U) if self.B.shape[0] != U.shape[0] else self.B
        W = self.W
        for _ in range(c.dcc_iters):
            W = ridge_classifier(B, Y, mu=c.mu, nu=c.nu)
            B = dcc_sweep(B, U, Y, W, mu=c.mu, eta=c.eta)
        self.B, self.W = B, W

    def compute_loss(self, u: Tensor, y: Tensor, idx: Tensor) -> dict[str, Tensor]:
        if self.B.shape[0] == 0:
            raise HashingError(
                "dsdh: no binary codes B; on_epoch_start runs the discrete step first"
            )
        p = self.partners(u, y, idx)
        S = functional.label_similarity(y, p.y)
        likelihood = functional.pairwise_likelihood_loss(functional.inner_product_logits(u, p.u), S)
        coupling = (self.B[idx] - u).pow(2).sum(dim=1).mean()
        weight = self.config.eta / self.B.shape[0]
        return {
            "loss": likelihood + weight * coupling,
            "likelihood": likelihood,
            "coupling": coupling,
        }
