"""The scikit-learn estimator protocol for sparsecore's estimators, with numpy only.

:class:`BaseEstimator` reads the parameter names from ``__init__``'s signature, as scikit-learn does, and gives
``get_params`` / ``set_params`` (nested ``component__param`` names included), a ``repr`` listing the
parameters that differ from their defaults, and ``__sklearn_tags__`` for scikit-learn >= 1.6.

It does not subclass ``sklearn.base.BaseEstimator``, even when scikit-learn is installed: sparsecore's core
imports with numpy only, and importing scikit-learn (which imports scipy) on ``import sparsecore.pursuit`` would
cost every user its start-up time. Everything scikit-learn needs from an estimator (``clone``, pipelines, grid
searches, ``check_estimator``) goes through the methods here; scikit-learn itself is imported only when it asks
for tags, i.e. when it is already in use.

Subclasses follow scikit-learn's rules: ``__init__`` stores each argument unchanged under its own name and
checks nothing; checks happen in ``fit`` / ``transform`` / ``predict``; fitted state lives in attributes ending
in ``_``.
"""

from __future__ import annotations

import importlib
import inspect
from typing import Any, ClassVar, TypeVar

import numpy as np

from sparsecore.exceptions import InvalidArgumentError

__all__ = ["BaseEstimator"]

_E = TypeVar("_E", bound="BaseEstimator")


def _same(value: object, default: object) -> bool:
    """Whether a parameter still has its default (arrays never compare equal to a scalar default)."""
    if value is default:
        return True
    if isinstance(value, np.ndarray) or isinstance(default, np.ndarray):
        return False
    try:
        return bool(value == default)
    except (TypeError, ValueError):
        return False


def _show(value: object) -> str:
    if isinstance(value, np.ndarray):
        return f"<array {'x'.join(map(str, value.shape))} {value.dtype}>"
    return repr(value)


class BaseEstimator:
    """Parameters from ``__init__``'s signature: ``get_params``, ``set_params``, ``repr`` and tags.

    Attributes
    ----------
    _estimator_type : str or None
        ``"regressor"``, ``"classifier"`` or None (a transformer); sets scikit-learn's ``estimator_type`` tag.
    """

    _estimator_type: ClassVar[str | None] = None

    @classmethod
    def _param_signature(cls) -> list[inspect.Parameter]:
        init = cls.__init__
        if init is object.__init__:
            return []
        params = [p for name, p in inspect.signature(init).parameters.items() if name != "self"]
        for p in params:
            if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
                raise TypeError(f"{cls.__name__}.__init__ must name its parameters (no *args / **kwargs)")
        return params

    @classmethod
    def _get_param_names(cls) -> list[str]:
        """Constructor parameter names, in signature order."""
        return [p.name for p in cls._param_signature()]

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        """Constructor parameters by name, exactly as passed (scikit-learn's estimator API).

        Parameters
        ----------
        deep
            Also list the parameters of parameters that are themselves estimators, as ``name__param``.

        Returns
        -------
        dict
            ``{name: value}`` for every constructor parameter.
        """
        out: dict[str, Any] = {}
        for name in self._get_param_names():
            value = getattr(self, name)
            if deep and hasattr(value, "get_params") and not isinstance(value, type):
                out.update((f"{name}__{k}", v) for k, v in value.get_params(deep=True).items())
            out[name] = value
        return out

    def set_params(self: _E, **params: Any) -> _E:
        """Set constructor parameters by name (checked on the next ``fit`` / ``transform`` / ``predict``).

        Parameters
        ----------
        **params
            ``name=value``, or ``name__param=value`` for a parameter of a parameter that is an estimator.

        Returns
        -------
        self

        Raises
        ------
        InvalidArgumentError
            A name that is not a constructor parameter.
        """
        valid = self._get_param_names()
        nested: dict[str, dict[str, Any]] = {}
        for key, value in params.items():
            name, sep, sub = key.partition("__")
            if name not in valid:
                raise InvalidArgumentError(
                    f"{name}: not a parameter of {type(self).__name__}; valid parameters: {', '.join(valid)}"
                )
            if sep:
                nested.setdefault(name, {})[sub] = value
            else:
                setattr(self, name, value)
        for name, sub_params in nested.items():
            getattr(self, name).set_params(**sub_params)
        return self

    def __repr__(self) -> str:
        shown = [
            f"{p.name}={_show(getattr(self, p.name))}"
            for p in self._param_signature()
            if p.default is p.empty or not _same(getattr(self, p.name), p.default)
        ]
        return f"{type(self).__name__}({', '.join(shown)})"

    def _more_sklearn_tags(self, tags: Any, utils: Any) -> Any:
        """Adjust the default tags (subclasses override); ``utils`` is ``sklearn.utils``."""
        return tags

    def __sklearn_tags__(self) -> Any:
        """Tags for scikit-learn >= 1.6 (scikit-learn is imported only here, when it asks).

        Returns
        -------
        sklearn.utils.Tags
        """
        utils = importlib.import_module("sklearn.utils")
        kind = self._estimator_type
        tags = utils.Tags(
            estimator_type=kind,
            target_tags=utils.TargetTags(required=kind is not None),
            transformer_tags=None if kind is not None else utils.TransformerTags(),
            classifier_tags=utils.ClassifierTags() if kind == "classifier" else None,
            regressor_tags=utils.RegressorTags() if kind == "regressor" else None,
            input_tags=utils.InputTags(),
        )
        return self._more_sklearn_tags(tags, utils)
