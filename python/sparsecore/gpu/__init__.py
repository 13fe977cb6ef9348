"""GPU kernels of sparsecore (Triton), importable as ``sparsecore.gpu``.

The sources live in ``python/sparsecore/gpu/`` so that maturin ships them in the wheel as ``sparsecore.gpu``
(maturin does not follow links); the top-level ``gpu/`` of the repository is a link to this folder. Importing
it needs nothing beyond numpy; the kernels import torch and triton lazily (``pip install 'sparsecore[gpu]'``)
and fall back to torch reference paths on tensors that are not on a CUDA device.
"""

from __future__ import annotations

import importlib.util

__all__ = ["triton_available"]


def triton_available() -> bool:
    """Whether Triton kernels can run here: triton and torch are installed and torch sees a CUDA device.

    Returns
    -------
    bool
        ``False`` on CPU-only machines; kernels then use their torch reference paths.
    """
    if importlib.util.find_spec("triton") is None or importlib.util.find_spec("torch") is None:
        return False
    import torch

    return bool(torch.cuda.is_available())
