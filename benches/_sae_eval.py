"""The one evaluation of the SAE benchmark, applied to every trainer's exported weights in the same way.

Exported weights follow one convention (``_sae_worker.py`` folds each trainer's input centring and scaling in):

    pre = x @ w_enc + b_enc                     w_enc (d_in, d_sae), b_enc (d_sae,)
    z   = ReLU of the k largest entries of pre, 0 elsewhere
    x̂   = z @ w_dec + b_dec                     w_dec (d_sae, d_in), b_dec (d_in,)

Metrics over a held-out set ``x (n, d_in)``:

- FVU = ``Σ ||x - x̂||² / Σ ||x - mean(x)||²`` (sums over every token of the set, mean over the set);
- L0 = mean number of nonzero codes per token;
- dead fraction = share of latents that are nonzero on no token of the set.

:func:`evaluate` takes any ``reconstruct`` callable (so the matching-pursuit model, whose encoding is not a top-k
of ``x @ w_enc``, is measured by the same sums); :func:`topk_reconstruct` is the top-k one used for every trainer.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray
from torch import Tensor

Reconstruct = Callable[[Tensor], tuple[Tensor, Tensor]]
"""``x (b, d_in) -> (x̂ (b, d_in), active (b, d_sae) bool)``."""


def topk_reconstruct(weights: dict[str, NDArray[Any]], k: int) -> Reconstruct:
    """The top-``k`` SAE of ``weights`` (``w_enc``, ``b_enc``, ``w_dec``, ``b_dec``) as a ``reconstruct`` callable."""
    w_enc = torch.from_numpy(np.asarray(weights["w_enc"], dtype=np.float32))
    b_enc = torch.from_numpy(np.asarray(weights["b_enc"], dtype=np.float32))
    w_dec = torch.from_numpy(np.asarray(weights["w_dec"], dtype=np.float32))
    b_dec = torch.from_numpy(np.asarray(weights["b_dec"], dtype=np.float32))

    def reconstruct(x: Tensor) -> tuple[Tensor, Tensor]:
        values, indices = torch.topk(torch.addmm(b_enc, x, w_enc), k, dim=1)
        values = values.relu()
        recon = torch.nn.functional.embedding_bag(indices, w_dec, per_sample_weights=values, mode="sum") + b_dec
        active = torch.zeros(x.shape[0], w_enc.shape[1], dtype=torch.bool).scatter_(1, indices, values > 0)
        return recon, active

    return reconstruct


@torch.no_grad()
def evaluate(x: NDArray[np.float32], reconstruct: Reconstruct, d_sae: int, batch: int = 4096) -> dict[str, float]:
    """FVU, L0 and dead-latent fraction of ``reconstruct`` on the rows of ``x`` (see the module docstring)."""
    n = x.shape[0]
    if n == 0:
        raise ValueError("x: no rows")
    mean = x.mean(axis=0, dtype=np.float64)
    total_var = 0.0
    sq_err = 0.0
    nnz = 0
    fired = torch.zeros(d_sae, dtype=torch.bool)
    for start in range(0, n, batch):
        xb_np = np.array(x[start : start + batch], dtype=np.float32)  # a writable copy (x may be a read-only map)
        total_var += float(((xb_np.astype(np.float64) - mean) ** 2).sum())
        xb = torch.from_numpy(xb_np)
        recon, active = reconstruct(xb)
        sq_err += float((xb.double() - recon.double()).pow(2).sum())
        nnz += int(active.sum())
        fired |= active.any(dim=0)
    return {
        "fvu": sq_err / total_var,
        "mse_per_token": sq_err / n,
        "l0": nnz / n,
        "dead_fraction": 1.0 - float(fired.float().mean()),
        "n_dead": int((~fired).sum()),
        "n_tokens": n,
    }
