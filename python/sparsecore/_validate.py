"""Argument checks shared by every sparsecore module.

Each helper checks one argument, returns it normalised (a Python ``int`` / ``float`` / ``bool``, a numpy
Generator, a contiguous array) and raises one of :mod:`sparsecore.exceptions`' typed errors otherwise. Messages
have one form, ``"<name>: must be <requirement>, got <value>"``, e.g. ``"k: must be a positive integer, got 0"``.

Scalar type checks: integers are Python or numpy integers (``bool`` is rejected everywhere), numbers are
``numbers.Real`` (Python / numpy ints and floats, not ``bool``). Cheap O(1) checks live here; O(n) validation of
array contents happens in Rust.
"""

from __future__ import annotations

import math
import numbers
import operator
from collections.abc import Collection, Iterable
from typing import Any, TypeVar

import numpy as np
from numpy.typing import ArrayLike, NDArray

from sparsecore.exceptions import DTypeError, InvalidArgumentError, ShapeMismatchError

__all__ = [
    "MAX_SEED",
    "MAX_THREADS",
    "check_bool",
    "check_choice",
    "check_float",
    "check_int",
    "check_ndim",
    "check_num_threads",
    "check_random_state",
    "check_seed",
    "check_texts",
    "float_array",
    "is_int",
    "nonnegative_float",
    "nonnegative_int",
    "optional_positive_int",
    "positive_float",
    "positive_int",
    "refuse_sparse",
    "require_none",
]

MAX_THREADS = 4096  # the Rust core's limit (parallel.rs)
MAX_SEED = 2**64 - 1  # seeds are u64 in the Rust core

_S = TypeVar("_S", bound=str)


def _fail(name: str, requirement: str, value: object) -> InvalidArgumentError:
    return InvalidArgumentError(f"{name}: must be {requirement}, got {value!r}")


def is_int(value: object) -> bool:
    """Whether ``value`` is a Python or numpy integer (``bool`` excluded).

    Parameters
    ----------
    value
        Anything.

    Returns
    -------
    bool
    """
    return isinstance(value, (numbers.Integral, np.integer)) and not isinstance(value, (bool, np.bool_))


def _as_int(value: object) -> int | None:
    """``value`` as a Python int when :func:`is_int`, else None."""
    return operator.index(value) if is_int(value) else None  # type: ignore[arg-type]


def _is_real(value: object) -> bool:
    return isinstance(value, (numbers.Real, np.integer, np.floating)) and not isinstance(value, (bool, np.bool_))


def _bound(v: float) -> str:
    if v == 2**32 - 1:
        return "2**32 - 1"
    if v == 2**63 - 1:
        return "2**63 - 1"
    if v == MAX_SEED:
        return "2**64 - 1"
    return repr(v)


def check_int(value: object, name: str, *, low: int | None = None, high: int | None = None) -> int:
    """An integer in ``[low, high]`` (either bound may be omitted).

    Parameters
    ----------
    value
        The argument.
    name
        Its name, for the message.
    low, high
        Inclusive bounds; None for none.

    Returns
    -------
    int

    Raises
    ------
    InvalidArgumentError
        ``value`` is not an integer (``bool`` included) or lies outside the bounds.
    """
    if low is not None and high is not None:
        requirement = f"an integer in [{_bound(low)}, {_bound(high)}]"
    elif low is not None:
        requirement = f"an integer >= {_bound(low)}"
    elif high is not None:
        requirement = f"an integer <= {_bound(high)}"
    else:
        requirement = "an integer"
    i = _as_int(value)
    if i is None or (low is not None and i < low) or (high is not None and i > high):
        raise _fail(name, requirement, value)
    return i


def positive_int(value: object, name: str, *, high: int | None = None) -> int:
    """An integer ``>= 1`` (and ``<= high`` when given).

    Parameters
    ----------
    value
        The argument.
    name
        Its name, for the message.
    high
        Optional inclusive upper bound.

    Returns
    -------
    int

    Raises
    ------
    InvalidArgumentError
        ``value`` is not a positive integer, or exceeds ``high``.
    """
    i = _as_int(value)
    if i is not None and i >= 1 and (high is None or i <= high):
        return i
    if high is None or i is None or i < 1:
        raise _fail(name, "a positive integer", value)
    raise _fail(name, f"a positive integer <= {_bound(high)}", value)


def optional_positive_int(value: object, name: str, *, high: int | None = None) -> int | None:
    """None, or a positive integer (see :func:`positive_int`).

    Returns
    -------
    int or None

    Raises
    ------
    InvalidArgumentError
        ``value`` is neither None nor a positive integer.
    """
    if value is None:
        return None
    i = _as_int(value)
    if i is not None and i >= 1 and (high is None or i <= high):
        return i
    bound = "" if high is None else f" <= {_bound(high)}"
    raise _fail(name, f"a positive integer{bound} or None", value)


def nonnegative_int(value: object, name: str, *, high: int | None = None) -> int:
    """An integer ``>= 0`` (and ``<= high`` when given).

    Returns
    -------
    int

    Raises
    ------
    InvalidArgumentError
        ``value`` is not a non-negative integer, or exceeds ``high``.
    """
    i = _as_int(value)
    if i is not None and i >= 0 and (high is None or i <= high):
        return i
    bound = "" if high is None else f" <= {_bound(high)}"
    raise _fail(name, f"a non-negative integer{bound}", value)


def check_float(
    value: object,
    name: str,
    *,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
    finite: bool = True,
) -> float:
    """A real number in an interval; NaN is always rejected, infinities unless ``finite=False``.

    Parameters
    ----------
    value
        The argument (Python or numpy int or float; not ``bool``).
    name
        Its name, for the message.
    low, high
        Bounds; None for none.
    low_open, high_open
        Exclude the bound itself (``> low`` rather than ``>= low``).
    finite
        Reject ``inf`` and ``-inf``.

    Returns
    -------
    float

    Raises
    ------
    InvalidArgumentError
        ``value`` is not a real number or lies outside the interval.
    """
    parts = ["a finite number" if finite else "a number"]
    if low is not None and high is not None:
        parts.append(f"in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}")
    elif low is not None:
        parts.append(f"{'>' if low_open else '>='} {low:g}")
    elif high is not None:
        parts.append(f"{'<' if high_open else '<='} {high:g}")
    requirement = " ".join(parts)
    if not _is_real(value):
        raise _fail(name, requirement, value)
    try:
        f = float(value)  # type: ignore[arg-type]
    except OverflowError:  # an int beyond the float range
        raise _fail(name, requirement, value) from None
    ok = not math.isnan(f) and (math.isfinite(f) or not finite)
    if ok and low is not None:
        ok = f > low if low_open else f >= low
    if ok and high is not None:
        ok = f < high if high_open else f <= high
    if not ok:
        raise _fail(name, requirement, value)
    return f


def positive_float(value: object, name: str) -> float:
    """A finite number ``> 0``.

    Returns
    -------
    float

    Raises
    ------
    InvalidArgumentError
        Otherwise.
    """
    return check_float(value, name, low=0.0, low_open=True)


def nonnegative_float(value: object, name: str) -> float:
    """A finite number ``>= 0``.

    Returns
    -------
    float

    Raises
    ------
    InvalidArgumentError
        Otherwise.
    """
    return check_float(value, name, low=0.0)


def check_choice(value: object, name: str, options: Collection[_S]) -> _S:
    """One of the strings ``options``.

    Returns
    -------
    str
        ``value``.

    Raises
    ------
    InvalidArgumentError
        ``value`` is not one of ``options``.
    """
    if isinstance(value, str) and value in options:
        return value  # type: ignore[return-value]
    raise _fail(name, f"one of {', '.join(map(repr, options))}", value)


def check_bool(value: object, name: str) -> bool:
    """``True`` or ``False`` (Python or numpy bool; not 0 / 1).

    Returns
    -------
    bool

    Raises
    ------
    InvalidArgumentError
        Otherwise.
    """
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    raise _fail(name, "True or False", value)


def require_none(value: object, name: str, why: str) -> None:
    """Reject an argument that does not apply in this configuration.

    Parameters
    ----------
    value
        The argument; must be None.
    name
        Its name.
    why
        When it must be None, e.g. ``'with algorithm="omp"'``.

    Raises
    ------
    InvalidArgumentError
        ``value`` is not None.
    """
    if value is not None:
        raise _fail(name, f"None {why}", value)


def check_num_threads(num_threads: object, name: str = "num_threads") -> int | None:
    """A worker thread count: None (``SPARSECORE_NUM_THREADS``, else all cores) or an int in ``[1, 4096]``.

    Returns
    -------
    int or None

    Raises
    ------
    InvalidArgumentError
        Otherwise.
    """
    if num_threads is None:
        return None
    i = _as_int(num_threads)
    if i is not None and 1 <= i <= MAX_THREADS:
        return i
    raise _fail(name, f"None or an integer in [1, {MAX_THREADS}]", num_threads)


def check_seed(seed: object, name: str = "seed") -> int:
    """A seed of the Rust core's generators: an integer in ``[0, 2**64 - 1]``.

    Returns
    -------
    int

    Raises
    ------
    InvalidArgumentError
        Otherwise.
    """
    return check_int(seed, name, low=0, high=MAX_SEED)


def check_random_state(random_state: object, name: str = "random_state") -> np.random.Generator:
    """A numpy Generator from None (fresh entropy), a seed ``>= 0`` or a Generator (used as is).

    Returns
    -------
    numpy.random.Generator

    Raises
    ------
    InvalidArgumentError
        Anything else (``bool``, negative ints, ``RandomState``, ...).
    """
    if random_state is None:
        return np.random.default_rng()
    if isinstance(random_state, np.random.Generator):
        return random_state
    seed = _as_int(random_state)
    if seed is not None and seed >= 0:
        return np.random.default_rng(seed)
    raise _fail(name, "None, an integer >= 0 or a numpy Generator", random_state)


def refuse_sparse(a: object, name: str) -> None:
    """Refuse a scipy.sparse matrix or array (or a torch sparse tensor) where a dense array is needed.

    Without this check ``np.asarray`` would wrap the matrix in a 0-d object array and the error would be about
    its dtype; the message says what to do instead.

    Raises
    ------
    DTypeError
        ``a`` is sparse.
    """
    module = type(a).__module__ or ""
    if module.startswith("scipy.sparse") or getattr(a, "is_sparse", False) is True:
        raise DTypeError(
            f"{name}: sparse input is not supported here; pass a dense array (e.g. X.toarray()), or a "
            "sparsecore.SparseBatch where a function takes one"
        )


def float_array(a: ArrayLike, name: str) -> NDArray[Any]:
    """``a`` as a float32 or float64 array; integers and bools become float64, float32/float64 are kept.

    Returns
    -------
    numpy.ndarray

    Raises
    ------
    DTypeError
        Any other dtype (float16, complex, object, ...), or a sparse matrix.
    """
    refuse_sparse(a, name)
    arr = np.asarray(a)
    if arr.dtype.kind in "iub":
        return arr.astype(np.float64)  # integers have no precision to lose; float32/float64 are never converted
    if arr.dtype not in (np.float32, np.float64):
        raise DTypeError(f"{name}: must be float32 or float64 (or integers), got dtype {arr.dtype}")
    return arr


def check_ndim(arr: NDArray[Any], name: str, ndim: int, layout: str = "") -> NDArray[Any]:
    """Check the number of dimensions of an array.

    Parameters
    ----------
    arr
        The array.
    name
        Its name.
    ndim
        Required number of dimensions.
    layout
        What the axes are, e.g. ``"(n_signals, n_features)"``, for the message.

    Returns
    -------
    numpy.ndarray
        ``arr``.

    Raises
    ------
    ShapeMismatchError
        ``arr.ndim != ndim``.
    """
    if arr.ndim != ndim:
        what = f"{ndim}-D {layout}".rstrip()
        raise ShapeMismatchError(f"{name}: must be {what}, got shape {arr.shape}")
    return arr


def check_texts(texts: Iterable[str], name: str = "texts") -> list[str]:
    """A sequence of strings as a list (a single ``str`` is refused rather than split into characters).

    Parameters
    ----------
    texts
        The texts.
    name
        The argument's name.

    Returns
    -------
    list of str

    Raises
    ------
    DTypeError
        ``texts`` is a single string or holds something else than strings.
    """
    if isinstance(texts, str):
        raise DTypeError(f"{name}: expected a sequence of texts, got a single str (wrap it in a list)")
    out = list(texts)
    for i, t in enumerate(out):
        if not isinstance(t, str):
            raise DTypeError(f"{name}[{i}]: expected str, got {type(t).__name__}")
    return out
