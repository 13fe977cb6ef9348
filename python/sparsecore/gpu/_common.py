"""Shared pieces of the GPU kernels' torch layer: argument checks, dtype rules and the Triton/reference dispatch.

Imports torch at module level; :mod:`sparsecore.gpu` imports this module only when a kernel is first called.
"""

from __future__ import annotations

import functools
import importlib.util
import os

import torch
from torch import Tensor

from sparsecore.exceptions import DTypeError, IndexOutOfRangeError, ShapeMismatchError

__all__ = [
    "FORCE_TRITON_ENV",
    "KERNEL_DTYPES",
    "acc_dtype",
    "check_float_tensor",
    "check_index_tensor",
    "check_indices_in_range",
    "check_tensor",
    "use_triton",
]

#: Set to ``1`` to run the Triton launchers on CPU tensors (tests only: with ``TRITON_INTERPRET=1`` set before
#: triton is first imported, the interpreter runs the kernels on the CPU).
FORCE_TRITON_ENV = "SPARSECORE_FORCE_TRITON"

#: Dtypes the Triton kernels read; float64 always takes the torch reference path.
KERNEL_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
_FLOAT_DTYPES = (*KERNEL_DTYPES, torch.float64)
_INDEX_DTYPES = (torch.int32, torch.int64)


@functools.cache
def _triton_installed() -> bool:
    return importlib.util.find_spec("triton") is not None


def use_triton(*tensors: Tensor) -> bool:
    """Whether to run the Triton launcher: every tensor is on CUDA (or tests force it) and in a kernel dtype.

    CUDA tensors take the torch reference path (which runs on CUDA too) when triton is not installed.
    """
    forced = os.environ.get(FORCE_TRITON_ENV, "") == "1"
    if not forced and not (all(t.is_cuda for t in tensors) and _triton_installed()):
        return False
    return all(t.dtype in KERNEL_DTYPES for t in tensors if t.is_floating_point())


def acc_dtype(*tensors: Tensor) -> torch.dtype:
    """The accumulation dtype: float64 when any input is float64, else float32."""
    return torch.float64 if any(t.dtype == torch.float64 for t in tensors) else torch.float32


def check_tensor(value: object, name: str) -> Tensor:
    """``value`` as a contiguous tensor, or :class:`DTypeError` when it is not a tensor."""
    if not isinstance(value, Tensor):
        raise DTypeError(f"{name}: must be a torch.Tensor, got {type(value).__name__}")
    return value.contiguous()


def check_float_tensor(value: object, name: str, *, ndim: int | None = None, min_ndim: int | None = None) -> Tensor:
    """A contiguous float32/float16/bfloat16/float64 tensor, with ``ndim`` (or at least ``min_ndim``) dimensions."""
    t = check_tensor(value, name)
    if t.dtype not in _FLOAT_DTYPES:
        raise DTypeError(f"{name}: must be float32, float16, bfloat16 or float64, got {t.dtype}")
    _check_ndim(t, name, ndim, min_ndim)
    return t


def check_index_tensor(value: object, name: str, *, min_ndim: int = 1) -> Tensor:
    """A contiguous int32/int64 tensor with at least ``min_ndim`` dimensions."""
    t = check_tensor(value, name)
    if t.dtype not in _INDEX_DTYPES:
        raise DTypeError(f"{name}: must be int32 or int64, got {t.dtype}")
    _check_ndim(t, name, None, min_ndim)
    return t


def check_key_padding(value: object, b: int, t: int, device: torch.device) -> Tensor | None:
    """A ``(B, T)`` bool key padding mask (True at real tokens) on ``device``, or None; typed errors otherwise."""
    if value is None:
        return None
    mask = check_tensor(value, "key_padding_mask")
    if mask.dtype != torch.bool:
        raise DTypeError(f"key_padding_mask: must be a bool tensor (True at real tokens), got {mask.dtype}")
    if mask.shape != (b, t):
        raise ShapeMismatchError(f"key_padding_mask: must be (B, T) = ({b}, {t}), got {tuple(mask.shape)}")
    return mask.to(device)


def _check_ndim(t: Tensor, name: str, ndim: int | None, min_ndim: int | None) -> None:
    if ndim is not None and t.ndim != ndim:
        raise ShapeMismatchError(f"{name}: must have {ndim} dimension(s), got shape {tuple(t.shape)}")
    if min_ndim is not None and t.ndim < min_ndim:
        raise ShapeMismatchError(f"{name}: must have at least {min_ndim} dimension(s), got shape {tuple(t.shape)}")


def check_indices_in_range(indices: Tensor, high: int, name: str) -> None:
    """Raise :class:`IndexOutOfRangeError` unless ``0 <= indices < high``; a no-op on CUDA (indices are trusted)."""
    if indices.is_cuda or indices.numel() == 0:
        return
    lo, hi = int(indices.min()), int(indices.max())
    if lo < 0 or hi >= high:
        bad = lo if lo < 0 else hi
        raise IndexOutOfRangeError(f"{name}: must be in [0, {high}), got {bad}")
