"""Memory bank of relaxed codes: the online pairing of DPSH / DSDH (and an option for DSH).

DPSH (Li et al. 2016, Alg. 1) and DSDH (Li et al. 2017) keep a matrix ``U`` holding the latest
network output of *every* training sample and pair each mini-batch with all of it, updating the
batch's rows after each step; the partner side carries no gradient. :class:`CodeBank` is that
matrix as module buffers, so it moves with the method between devices and round-trips through
``state_dict`` (and the saved head). :class:`MemoryBankOptions` is the config block every
bank-capable method inherits, and :func:`pair_partners` gives a loss the partners of a batch:
the batch itself (in-batch pairs, the default) or rows of the bank.

Gradient scale with a bank: bank rows carry no gradient, so a row receives only its own side of
each pair term, half of the full-objective derivative (which counts the pair (i, j) and (j, i)).
With the whole training set in one batch and the bank holding the current codes, the loss values
of the two modes are equal and the pair term's gradient is exactly twice as large in-batch, so
under ``memory_bank: true`` the per-sample terms (DPSH's and DSDH's ``eta``, DSH's ``alpha``)
weigh twice as much against the pair term as in-batch. The bank mode is an option (off by
default) and its numbers in ``bench/RESULTS-utility-bank.md`` were measured with this scale.

Privacy note: a bank stores one relaxed code per training row, so a head saved with a bank holds
record-level data of the training set; treat such a head file like the embeddings themselves.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from hashers.base import is_integer
from hashers.errors import HashingError


@dataclass(frozen=True, kw_only=True)
class MemoryBankOptions:
    """Config fields shared by the methods that support a memory bank."""

    memory_bank: bool = False  # pair each batch with the stored codes of all train rows (paper's U)
    bank_rows: int | None = None  # bank rows sampled per step (None = all, as in the papers)

    def __post_init__(self) -> None:
        # library use (params.yaml refuses these already): "false" is truthy, 2.5 rows a TypeError
        if not isinstance(self.memory_bank, bool):
            raise ValueError(f"memory_bank: {self.memory_bank!r} must be True or False")
        if self.bank_rows is not None and not is_integer(self.bank_rows):
            raise ValueError(f"bank_rows: {self.bank_rows!r} must be an integer >= 1 or null")
        if self.bank_rows is not None and self.bank_rows < 1:
            raise ValueError(f"bank_rows: {self.bank_rows} must be >= 1 or null (all rows)")


class CodeBank(nn.Module):
    """The latest relaxed code ``[N, K]`` of every training row, plus which rows were written.

    ``codes`` and ``filled`` are persistent buffers; ``labels`` (the multi-hot train labels) is a
    non-persistent buffer set by :meth:`reset`, since the training set provides it again. The
    buffers start empty; :meth:`reset` sizes them, and loading a state dict resizes them to the
    stored shape, so a freshly built method loads a trained one's state.
    """

    def __init__(self, n_bits: int, n_classes: int) -> None:
        super().__init__()
        self.register_buffer("codes", torch.zeros(0, n_bits))
        self.register_buffer("filled", torch.zeros(0, dtype=torch.bool))
        self.register_buffer("labels", torch.zeros(0, n_classes), persistent=False)

    def __len__(self) -> int:
        return int(self.codes.shape[0])

    def reset(self, labels: Tensor) -> None:
        """Size the bank for a training set with multi-hot ``labels [N, C]``; nothing is filled."""
        device = self.codes.device
        self.codes = torch.zeros(labels.shape[0], self.codes.shape[1], device=device)
        self.filled = torch.zeros(labels.shape[0], dtype=torch.bool, device=device)
        self.labels = labels.detach().to(device=device, dtype=torch.float32)

    @torch.no_grad()
    def update(self, idx: Tensor, u: Tensor) -> None:
        """Store ``u`` (detached) as the codes of train rows ``idx``."""
        if len(self) == 0:
            raise ValueError("memory bank is empty: call reset(train labels) before update")
        self.codes[idx] = u.detach().to(self.codes.dtype)
        self.filled[idx] = True

    def rows(self, n_rows: int | None = None) -> Tensor:
        """Indices of filled rows: all of them, or ``n_rows`` drawn without replacement (torch RNG)."""
        filled = torch.nonzero(self.filled, as_tuple=False).squeeze(1)
        if n_rows is None or n_rows >= filled.numel():
            return filled
        pick = torch.randperm(filled.numel())[:n_rows].to(filled.device)
        return filled[pick]

    def _load_from_state_dict(
        self, state_dict: dict[str, Any], prefix: str, *args: Any, **kwargs: Any
    ) -> None:
        for name in ("codes", "filled"):
            stored = state_dict.get(prefix + name)
            if stored is not None and stored.shape != getattr(self, name).shape:
                setattr(self, name, torch.zeros_like(stored, device=getattr(self, name).device))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


@dataclass(frozen=True)
class Partners:
    """The other side of a batch's pairs: relaxed codes ``u``, labels ``y``, train row ``idx``.

    ``in_batch`` is True when the partners are the batch itself (gradients flow on both sides and
    the self pairs are the diagonal); False for bank rows (fixed, no gradient).
    """

    u: Tensor
    y: Tensor
    idx: Tensor
    in_batch: bool

    def self_pairs(self, batch_idx: Tensor) -> Tensor:
        """Bool ``[B, P]``: where a batch row meets its own train row among the partners."""
        return batch_idx.unsqueeze(1) == self.idx.unsqueeze(0)


def pair_partners(
    bank: CodeBank | None, u: Tensor, y: Tensor, idx: Tensor, *, rows: int | None, update: bool
) -> Partners:
    """Partners of the batch ``(u, y, idx)``: the batch itself without a bank; else the bank.

    With a bank and ``update`` (training), the batch's rows are written first (detached), so the
    very first step already has partners and a batch also meets its own current codes. A bank
    with no filled row (a loss evaluated before any training step) falls back to in-batch pairs.
    """
    if bank is None:
        return Partners(u, y, idx, in_batch=True)
    if update:
        bank.update(idx, u)
    sel = bank.rows(rows)
    if sel.numel() == 0:  # nothing stored yet (a loss evaluated before training): in-batch pairs
        return Partners(u, y, idx, in_batch=True)
    return Partners(bank.codes[sel], bank.labels[sel], sel, in_batch=False)


class MemoryBankMixin:
    """Adds an optional :class:`CodeBank` (``config.memory_bank``) to a :class:`HashingMethod`.

    List it before :class:`HashingMethod` in the bases; it builds the bank after the head,
    :meth:`on_fit_start` sizes it and :meth:`partners` is what a loss pairs its batch with.
    """

    bank: CodeBank | None

    def __init__(self, spec: Any, config: Any | None = None) -> None:
        super().__init__(spec, config)  # type: ignore[call-arg]
        spec, config = self.spec, self.config  # type: ignore[attr-defined]
        self.bank = CodeBank(spec.n_bits, spec.n_classes) if config.memory_bank else None

    def on_fit_start(self, train: Any) -> None:
        if self.bank is not None:
            self.bank.reset(train.y)

    def partners(self, u: Tensor, y: Tensor, idx: Tensor) -> Partners:
        if self.bank is not None and len(self.bank) == 0:
            raise ValueError(
                f"{self.name}: memory bank is empty; on_fit_start(train) sizes it"  # type: ignore[attr-defined]
            )
        # a loaded head's bank holds its codes but no labels (never saved): indexing them failed
        # with "IndexError: index is out of bounds for dimension with size 0"
        if self.bank is not None and self.bank.labels.shape[0] != len(self.bank):
            raise HashingError(
                f"{self.name}: the memory bank holds {len(self.bank)} stored codes but "  # type: ignore[attr-defined]
                f"{self.bank.labels.shape[0]} training labels (a loaded head: the labels are not "
                "saved with it); call on_fit_start(train) with its training set before a loss"
            )
        return pair_partners(
            self.bank,
            u,
            y,
            idx,
            rows=self.config.bank_rows,  # type: ignore[attr-defined]
            update=self.training,  # type: ignore[attr-defined]
        )
