"""DPSH: Deep Pairwise-Supervised Hashing (see :class:`DPSH`)."""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from hashers import functional
from hashers.bank import MemoryBankMixin, MemoryBankOptions
from hashers.base import HashingMethod, check_config_types


@dataclass(frozen=True, kw_only=True)
class DPSHConfig(MemoryBankOptions):
    eta: float = 0.1  # weight of the quantisation term
    balance_pairs: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        # library use (params.yaml refuses these already): NaN / inf gave a non-finite loss
        # blamed on train.lr, and balance_pairs="false" was truthy
        check_config_types(self, finite=("eta",), flags=("balance_pairs",))
        if self.eta < 0:
            raise ValueError(f"eta: {self.eta} must be >= 0")


class DPSH(MemoryBankMixin, HashingMethod):
    """DPSH: Deep Pairwise-Supervised Hashing.

    Li, Wang & Kang, "Feature Learning based Deep Supervised Hashing with Pairwise Labels", IJCAI 2016.

    Loss (paper eq. 3, relaxed): ``L = Σ_ij [softplus(Θ_ij) - S_ij Θ_ij] + η Σ_i ‖b_i - u_i‖²`` with
    ``Θ_ij = ½ u_iᵀ u_j`` and ``b_i = sign(u_i)``.

    Deviations for frozen embeddings, stated as the brief asks:
    - the CNN-F image network is replaced by an MLP head over the frozen embedding (``hashers.heads``);
    - by default pairs are formed inside each mini-batch; ``memory_bank: true`` is the paper's
      online setting instead: a :class:`hashers.bank.CodeBank` holds ``U`` (the latest output of
      every training row), each batch is paired with all of it (or ``bank_rows`` sampled rows;
      the bank side carries no gradient) and its rows are refreshed every step;
    - both terms are means (over pairs, and over samples × bits) rather than the paper's sums, so
      ``eta`` is a per-element weight: with ``B`` rows paired with ``P`` partners and ``K`` bits,
      the paper's sum form with constant ``η`` equals this mean form with ``eta = η K / P`` (up to
      the overall scale). The default ``eta = 0.1`` is therefore *not* the paper's constant: it
      is the per-element value of a popular reimplementation (github.com/swuxyj/DeepHash-pytorch,
      ``DPSH.py``: ``alpha = 0.1`` times the mean of ``(u - sign u)²``, next to a mean
      likelihood), kept because it trains stably here; change it with ``methods.dpsh.eta``;
    - optional ``balance_pairs`` (off by default, i.e. the paper's loss) weights similar and dissimilar
      pairs equally (HashNet's weights), for heavily imbalanced label sets;
    - class imbalance is otherwise handled by the trainer's class-balanced batch sampling
      (``train.class_balance``), which leaves the loss in its paper form.
    """

    name = "dpsh"
    Config = DPSHConfig
    per_sample_loss = False  # the likelihood couples every pair in the batch

    def compute_loss(self, u: Tensor, y: Tensor, idx: Tensor) -> dict[str, Tensor]:
        p = self.partners(u, y, idx)
        S = functional.label_similarity(y, p.y)
        theta = functional.inner_product_logits(u, p.u)
        weights = functional.balanced_pair_weights(S) if self.config.balance_pairs else None
        likelihood = functional.pairwise_likelihood_loss(theta, S, weights)
        quantization = functional.quantization_l2(u)
        return {
            "loss": likelihood + self.config.eta * quantization,
            "likelihood": likelihood,
            "quantization": quantization,
        }
