"""Griffe extensions for the docs build: run-time docstrings for a few functions, Sphinx roles as code.

Griffe reads the sources without importing them, so a docstring completed at import time is seen only in part:
``sparsecore.pursuit`` appends the parameters that ``omp``, ``mp`` and ``gradient_pursuit`` share to their
``__doc__`` after defining them. For the functions listed in ``mkdocs.yml`` this extension imports the module and
uses the docstring Python sees. Importing needs the built extension (``make build``); without it the source
docstring stays and the build says so at INFO level.

The docstrings also name objects with Sphinx roles (``:class:`~sparsecore.SparseBatch```), which Markdown would
show verbatim; :class:`SphinxRolesAsCode` shows them as inline code.
"""

from __future__ import annotations

import importlib
import inspect
import logging
import re
from typing import Any

import griffe

_log = logging.getLogger("mkdocs.plugins.sparsecore_docs")


_ROLE = re.compile(r":(?:py:)?(?:class|func|meth|attr|mod|data|exc|obj|const|math):`(~?)([^`]+)`")


def _role_as_code(match: re.Match[str]) -> str:
    tilde, target = match.groups()
    return f"`{target.rsplit('.', 1)[-1] if tilde else target}`"


class RuntimeDocstrings(griffe.Extension):
    """Replace the docstrings of the named functions by their ``__doc__`` at run time."""

    def __init__(self, paths: list[str]) -> None:
        super().__init__()
        self.paths = set(paths)

    def on_function(self, *, func: griffe.Function, **kwargs: Any) -> None:
        """Swap in the run-time docstring of a listed function."""
        if func.path not in self.paths:
            return
        module_name, _, name = func.path.rpartition(".")
        try:
            doc = getattr(importlib.import_module(module_name), name).__doc__
        except ImportError as exc:
            _log.info("%s: keeping the source docstring (%s)", func.path, exc)
            return
        if doc:
            lineno = func.docstring.lineno if func.docstring else func.lineno
            text = _ROLE.sub(_role_as_code, inspect.cleandoc(doc))
            func.docstring = griffe.Docstring(text, lineno=lineno, parent=func)


class SphinxRolesAsCode(griffe.Extension):
    """Show ``:role:`target``` as inline code (``~`` keeps the last component, as in Sphinx)."""

    def on_object(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        """Rewrite the roles in one object's docstring."""
        if obj.docstring is not None:
            obj.docstring.value = _ROLE.sub(_role_as_code, obj.docstring.value)
