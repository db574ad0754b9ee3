"""Plumbing: the one small training loop of the learned attacks (inversion, reconstruction).

Mini-batch AdamW on the attacker's auxiliary records only. A seeded share of aux is
held out and the epoch with the lowest held-out loss is kept (the attacker selects on its own data;
victims are never seen while training).
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import numpy as np
import torch
from torch import Tensor, nn


def mlp(in_dim: int, out_dim: int, hidden: tuple[int, ...], dropout: float = 0.0) -> nn.Sequential:
    layers: list[nn.Module] = []
    prev = in_dim
    for width in hidden:
        layers += [nn.Linear(prev, width), nn.GELU(), nn.Dropout(dropout)]
        prev = width
    layers.append(nn.Linear(prev, out_dim))
    return nn.Sequential(*layers)


def train_regressor(
    model: nn.Module,
    inputs: np.ndarray,
    targets: np.ndarray,
    *,
    loss_fn: Callable[[Tensor, Tensor], Tensor],
    epochs: int,
    lr: float,
    weight_decay: float,
    batch_size: int,
    holdout: float,
    seed: int,
    patience: int = 20,
) -> nn.Module:
    """Fit ``model(inputs) ~ targets``; keep the epoch with the lowest loss on a held-out share and
    stop after ``patience`` epochs without improvement."""
    gen = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for m in model.modules():
            if hasattr(m, "reset_parameters"):
                m.reset_parameters()
    x = torch.as_tensor(inputs, dtype=torch.float32)
    t = torch.as_tensor(targets, dtype=torch.float32)
    n = len(x)
    perm = torch.randperm(n, generator=gen)
    n_hold = round(holdout * n) if n >= 10 else 0
    hold, fit_rows = perm[:n_hold], perm[n_hold:]
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
    with torch.no_grad():
        parts = [model(x[i : i + batch_size]) for i in range(0, len(x), batch_size)]
    return torch.cat(parts).numpy() if parts else np.zeros((0,), dtype=np.float32)
