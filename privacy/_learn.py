"""Plumbing: the one small training loop of the learned attacks (inversion, reconstruction).

Mini-batch AdamW on the attacker's auxiliary records only. A seeded share of aux is
held out and the epoch with the lowest held-out loss is kept (the attacker selects on its own data;
victims are never seen while training).

The attack models are small and trained on a few hundred records, so they run on one torch thread
(:func:`one_thread`): measured on the shared 2-core machine under load, an inversion MLP on 78 records
took 270 s with torch's 2 OpenMP threads (each tiny op waits for a descheduled spinning thread) and
about a second with one.
"""

from __future__ import annotations

import contextlib
import copy
import math
from collections.abc import Callable, Iterator
from typing import Protocol

import numpy as np
import torch
from torch import Tensor, nn

from hashers.base import is_integer
from privacy.errors import PrivacyError


@contextlib.contextmanager
def one_thread() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def mlp(in_dim: int, out_dim: int, hidden: tuple[int, ...], dropout: float = 0.0) -> nn.Sequential:
    for i, width in enumerate(hidden):
        if (
            not is_integer(width) or width < 1
        ):  # a width of 0 left a constant model: code-blind numbers
            raise PrivacyError(
                f"hidden[{i}]={width!r}: every hidden width of the attack model must be an "
                "integer >= 1 (e.g. (1024,)); hidden=() is a linear model"
            )
    if not 0.0 <= dropout < 1.0:  # dropout 1 zeroes every hidden unit in training
        raise PrivacyError(f"dropout={dropout}: the attack model's dropout must be in [0, 1)")
    layers: list[nn.Module] = []
    prev = in_dim
    for width in hidden:
        layers += [nn.Linear(prev, width), nn.GELU(), nn.Dropout(dropout)]
        prev = width
    layers.append(nn.Linear(prev, out_dim))
    return nn.Sequential(*layers)


class FitSettings(Protocol):
    """The training settings an attack's config carries (inversion, reconstruction)."""

    epochs: int
    lr: float
    weight_decay: float
    batch_size: int
    holdout: float


@one_thread()
def train_regressor(
    model: nn.Module,
    inputs: np.ndarray,
    targets: np.ndarray,
    *,
    loss_fn: Callable[[Tensor, Tensor], Tensor],
    settings: FitSettings,
    seed: int,
    patience: int = 20,
) -> nn.Module:
    """Fit ``model(inputs) ~ targets`` on one torch thread; keep the epoch with the lowest loss on a
    held-out share (``settings.holdout``) and stop after ``patience`` epochs without improvement."""
    epochs, lr, weight_decay = settings.epochs, settings.lr, settings.weight_decay
    batch_size, holdout = settings.batch_size, settings.holdout
    if not 0.0 <= holdout < 1.0:  # a negative share held out all but |share| and trained on that
        raise PrivacyError(
            f"holdout={holdout}: the held-out share of aux must be in [0, 1) (e.g. 0.2); "
            "the rest is what the attack model trains on"
        )
    if not is_integer(epochs) or epochs < 1:
        raise PrivacyError(
            f"epochs={epochs!r}: the attack model needs a whole number of epochs >= 1"
        )
    if not is_integer(batch_size) or batch_size < 1:  # 0 or less trained on batches of one
        raise PrivacyError(
            f"batch_size={batch_size!r}: the attack model's mini-batch size must be an integer "
            ">= 1 (e.g. 128)"
        )
    if not (math.isfinite(lr) and lr > 0):  # inf made every weight NaN; <= 0 a torch ValueError
        raise PrivacyError(
            f"lr={lr}: the attack model's learning rate must be a finite number > 0 (e.g. 1e-3)"
        )
    if not (math.isfinite(weight_decay) and weight_decay >= 0):
        raise PrivacyError(
            f"weight_decay={weight_decay}: the attack model's weight decay must be a finite "
            "number >= 0 (e.g. 1e-4)"
        )
    gen = torch.Generator().manual_seed(seed)
    # the CPU generator only (the model is on the CPU): torch.manual_seed would also reseed every
    # CUDA and MPS generator (lazily, even before CUDA starts), which fork_rng(devices=[]) does
    # not restore, so training an attack model reset a caller's GPU random streams
    with torch.random.fork_rng(devices=[]):
        torch.default_generator.manual_seed(int(seed))
        for m in model.modules():
            if hasattr(m, "reset_parameters"):
                m.reset_parameters()
    x = torch.as_tensor(inputs, dtype=torch.float32)
    t = torch.as_tensor(targets, dtype=torch.float32)
    n = len(x)
    perm = torch.randperm(n, generator=gen)
    n_hold = round(holdout * n) if n >= 10 else 0
    hold, fit_rows = perm[:n_hold], perm[n_hold:]
    if len(fit_rows) == 0:
        raise PrivacyError(
            f"holdout={holdout} of {n} aux records leaves none to train on; lower the holdout"
        )
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    best, best_state, best_epoch = float("inf"), None, 0
    bs = max(1, min(batch_size, len(fit_rows)))
    for epoch in range(epochs):
        model.train()
        order = fit_rows[torch.randperm(len(fit_rows), generator=gen)]
        for i in range(0, len(order), bs):
            idx = order[i : i + bs]
            loss = loss_fn(model(x[idx]), t[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        if n_hold:
            model.eval()
            with torch.no_grad():
                score = float(loss_fn(model(x[hold]), t[hold]))
            if score < best:
                best, best_state, best_epoch = score, copy.deepcopy(model.state_dict()), epoch
            elif epoch - best_epoch >= patience:
                break
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    return model


def predict(model: nn.Module, inputs: np.ndarray, *, batch_size: int = 4096) -> np.ndarray:
    x = torch.as_tensor(inputs, dtype=torch.float32)
    with torch.no_grad(), one_thread():
        parts = [model(x[i : i + batch_size]) for i in range(0, len(x), batch_size)]
    return torch.cat(parts).numpy() if parts else np.zeros((0,), dtype=np.float32)
