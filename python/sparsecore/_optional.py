"""Lazy imports of optional dependencies with an error that names the extra to install."""

from __future__ import annotations

import importlib
from types import ModuleType

from sparsecore.exceptions import MissingExtraError

_EXTRA_OF = {
    "scipy": "scipy",
    "torch": "torch",
    "transformers": "torch",
    "safetensors": "torch",
    "triton": "gpu",
    "hypothesis": "testing",
    "Stemmer": "text",
    "ir_measures": "text",
}


def require(module: str) -> ModuleType:
    """Import ``module`` or raise :class:`MissingExtraError` naming the pip extra that provides it.

    Parameters
    ----------
    module
        Top-level module name, e.g. ``"scipy"`` or ``"torch"``.

    Returns
    -------
    ModuleType
        The imported module.
    """
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        extra = _EXTRA_OF.get(module.split(".")[0], module)
        raise MissingExtraError(
            f"{module} is required for this feature but is not installed; "
            f"install it with: pip install 'sparsecore[{extra}]'"
        ) from exc
