"""Hybrid fusion of ranked result lists: score normalisation, convex combination and reciprocal rank fusion.

A *run* for one query maps document ids (any hashable: ``int``, ``str``, ...) to scores, higher is better; a
batch of runs uses the run format of ir-measures, ``{query_id: {doc_id: score}}``. Two families of fusion are
offered:

* :func:`convex_combination` — ``alpha * norm(first)[d] + (1 - alpha) * norm(second)[d]`` over the union of the
  documents, after min-max or z-score normalisation of each run (:func:`normalize`) and with an explicit policy
  for a document missing from one of the runs. Bruch, Gai & Ingber (2023), "An Analysis of Fusion Functions for
  Hybrid Retrieval" (ACM TOIS 42(1)), show that a tuned convex combination of normalised scores beats RRF, and
  that it needs few labelled queries to tune ``alpha``.
* :func:`rrf` — reciprocal rank fusion, ``sum over runs of 1 / (k + rank)``, which ignores score values and so
  needs no normalisation. Cormack, Clarke & Büttcher (2009), "Reciprocal Rank Fusion outperforms Condorcet and
  individual Rank Learning Methods" (SIGIR '09) use ``k = 60``.

:func:`fuse_runs` applies either to every query of two batches of runs.

Ranks within a run come from a stable sort by score, descending: documents with equal scores keep the order in
which the run yields them. Fused lists are sorted by fused score, descending, with documented deterministic
tie-breaking, so equal inputs always give equal outputs. Scores must be finite: NaN or infinite scores raise
:class:`~sparsecore.exceptions.NonFiniteError` naming the argument and the document.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping, Sequence
from typing import Literal, TypeVar

import numpy as np
from numpy.typing import NDArray

from sparsecore._validate import check_choice, check_float, nonnegative_float, optional_positive_int
from sparsecore.exceptions import DTypeError, InvalidArgumentError, NonFiniteError

__all__ = ["Missing", "Normalization", "convex_combination", "fuse_runs", "normalize", "rrf"]

K = TypeVar("K", bound=Hashable)
Q = TypeVar("Q", bound=Hashable)

Normalization = Literal["minmax", "zscore", "none"]
Missing = Literal["zero", "min"]

_NORMALIZATIONS: tuple[str, ...] = ("minmax", "zscore", "none")
_MISSING: tuple[str, ...] = ("zero", "min")
_METHODS: tuple[str, ...] = ("convex", "rrf")


# ---------------------------------------------------------------------------------------------------------------
# Argument checks
# ---------------------------------------------------------------------------------------------------------------


def _scores(run: object, name: str) -> tuple[list[K], NDArray[np.float64]]:
    """Split a run into (doc ids, float64 scores) in iteration order, checking that every score is finite."""
    if not isinstance(run, Mapping):
        raise DTypeError(f"{name}: must be a mapping doc_id -> score, got {type(run).__name__}")
    docs: list[K] = list(run.keys())
    out = np.empty(len(docs), dtype=np.float64)
    for i, (d, v) in enumerate(run.items()):
        try:
            f = float(v)
        except OverflowError:
            raise NonFiniteError(f"{name}: score of doc {d!r} overflows float64") from None
        except (TypeError, ValueError):
            raise DTypeError(f"{name}: score of doc {d!r} is not a real number: {v!r}") from None
        if not math.isfinite(f):
            raise NonFiniteError(f"{name}: score of doc {d!r} is {f!r}; scores must be finite")
        out[i] = f
    return docs, out


def _ranked_docs(run: object, name: str) -> list[K]:
    """Doc ids of a run in rank order: a mapping sorted by score (stable, descending) or a sequence as given."""
    if isinstance(run, Mapping):
        docs: list[K]
        docs, x = _scores(run, name)
        return [docs[i] for i in _rank_order(x)]
    if isinstance(run, (str, bytes)) or not isinstance(run, (Sequence, np.ndarray)):
        raise DTypeError(
            f"{name}: must be a mapping doc_id -> score or a sequence of doc ids in rank order, "
            f"got {type(run).__name__}"
        )
    if isinstance(run, np.ndarray):
        if run.ndim != 1:
            raise InvalidArgumentError(f"{name}: an array of doc ids must be 1-D, got shape {run.shape}")
        ids: list[K] = run.tolist()
    else:
        ids = list(run)
    seen: set[K] = set()
    for d in ids:
        if d in seen:
            raise InvalidArgumentError(f"{name}: doc id {d!r} appears more than once")
        seen.add(d)
    return ids


def _rank_order(x: NDArray[np.float64]) -> list[int]:
    """Positions sorted by score descending; equal scores keep their order (stable)."""
    return [int(i) for i in np.argsort(-x, kind="stable")]


# ---------------------------------------------------------------------------------------------------------------
# Normalisation
# ---------------------------------------------------------------------------------------------------------------


def _normalize_array(x: NDArray[np.float64], method: str) -> NDArray[np.float64]:
    """Normalise finite scores (see :func:`normalize`); monotone non-decreasing in every case."""
    if method == "none" or x.size == 0:
        return np.array(x, dtype=np.float64)
    lo, hi = float(x.min()), float(x.max())
    if method == "minmax":
        if lo == hi:
            return np.ones_like(x)
        rng = hi - lo
        if math.isfinite(rng):
            return (x - lo) / rng
        # the range overflows float64: halve everything first (min still maps to 0, max to 1)
        halved: NDArray[np.float64] = (x / 2 - lo / 2) / (hi / 2 - lo / 2)
        return halved
    # zscore
    if lo == hi:
        return np.zeros_like(x)
    # Scale by a power of two (exact) so nothing overflows, then shift by a data point before the mean so that
    # nearly equal scores keep their differences (the subtraction is exact for close values).
    _, e = math.frexp(max(abs(lo), abs(hi)))
    y = np.ldexp(x, -e)
    y = y - np.partition(y, y.size // 2)[y.size // 2]
    dev = y - y.mean()
    std = float(np.sqrt(np.mean(dev * dev)))
    z: NDArray[np.float64] = dev / std
    return z


def normalize(scores: Mapping[K, float], method: Normalization) -> dict[K, float]:
    """Normalise the scores of one run.

    Parameters
    ----------
    scores : Mapping[K, float]
        One run: doc id -> score. Scores must be finite.
    method : {"minmax", "zscore", "none"}
        ``"minmax"`` maps ``[min, max]`` linearly onto ``[0, 1]`` (the best doc gets exactly 1.0, the worst
        exactly 0.0). When all scores are equal there is no range to map, and every doc gets **1.0**: the docs
        were all retrieved and are indistinguishable, so they are treated as all being at the top of the run
        rather than all being as bad as a missing doc. ``"zscore"`` gives ``(s - mean) / std`` with the
        population standard deviation (``ddof=0``); when all scores are equal (``std == 0``) every doc gets
        0.0. ``"none"`` returns a copy.

    Returns
    -------
    dict[K, float]
        The normalised scores, in the iteration order of ``scores``. An empty run gives an empty dict.

    Raises
    ------
    InvalidArgumentError
        ``method`` is not one of the three names.
    NonFiniteError
        A score is NaN or infinite.
    DTypeError
        ``scores`` is not a mapping, or a score is not a real number.

    Examples
    --------
    >>> normalize({"a": 3.0, "b": 1.0, "c": 2.0}, "minmax")
    {'a': 1.0, 'b': 0.0, 'c': 0.5}
    >>> normalize({"a": 2.0, "b": 2.0}, "minmax")
    {'a': 1.0, 'b': 1.0}
    >>> normalize({"a": 3.0, "b": 1.0}, "zscore")
    {'a': 1.0, 'b': -1.0}
    """
    m = check_choice(method, "method", _NORMALIZATIONS)
    docs: list[K]
    docs, x = _scores(scores, "scores")
    z = _normalize_array(x, m)
    return {d: float(v) for d, v in zip(docs, z.tolist(), strict=True)}


# ---------------------------------------------------------------------------------------------------------------
# Convex combination
# ---------------------------------------------------------------------------------------------------------------


def _convex(
    first: Mapping[K, float],
    second: Mapping[K, float],
    alpha: float,
    normalization: str,
    missing: str,
    k: int | None,
    names: tuple[str, str],
) -> list[tuple[K, float]]:
    """Convex combination with checked arguments; ``names`` name the two runs in error messages."""
    docs1: list[K]
    docs2: list[K]
    docs1, x1 = _scores(first, names[0])
    docs2, x2 = _scores(second, names[1])
    n1 = _normalize_array(x1, normalization)
    n2 = _normalize_array(x2, normalization)
    if missing == "min":
        fill1 = float(n1.min()) if n1.size else 0.0
        fill2 = float(n2.min()) if n2.size else 0.0
    else:
        fill1 = fill2 = 0.0
    norm1 = dict(zip(docs1, n1.tolist(), strict=True))
    norm2 = dict(zip(docs2, n2.tolist(), strict=True))
    rank1 = {docs1[i]: r for r, i in enumerate(_rank_order(x1))}
    rank2 = {docs2[i]: r for r, i in enumerate(_rank_order(x2))}
    union = list(dict.fromkeys([*docs1, *docs2]))
    beta = 1.0 - alpha
    inf = len(union)  # worse than any rank
    fused: list[tuple[float, int, int, K]] = []
    for d in union:
        s = alpha * norm1.get(d, fill1) + beta * norm2.get(d, fill2)
        r1, r2 = rank1.get(d, inf), rank2.get(d, inf)
        # ties: better rank in the run with the larger weight first, then in the other run
        fused.append((-s, r1, r2, d) if alpha >= 0.5 else (-s, r2, r1, d))
    fused.sort(key=lambda t: t[:3])
    if k is not None:
        fused = fused[:k]
    return [(d, -neg + 0.0) for neg, _, _, d in fused]


def convex_combination(
    first: Mapping[K, float],
    second: Mapping[K, float],
    *,
    alpha: float,
    normalization: Normalization = "minmax",
    missing: Missing = "zero",
    k: int | None = None,
) -> list[tuple[K, float]]:
    """Fuse two runs by a convex combination of their normalised scores (Bruch, Gai & Ingber 2023).

    The fused score of every doc in the union of the two runs is
    ``alpha * norm(first)[d] + (1 - alpha) * norm(second)[d]``, each run normalised on its own by
    :func:`normalize`.

    Parameters
    ----------
    first, second : Mapping[K, float]
        The two runs (doc id -> score, higher is better), e.g. dense and sparse, or BM25 and SPLADE.
    alpha : float
        Weight of ``first``, in ``[0, 1]``; ``second`` gets ``1 - alpha``.
    normalization : {"minmax", "zscore", "none"}, default "minmax"
        Applied to each run before combining; see :func:`normalize`.
    missing : {"zero", "min"}, default "zero"
        What a doc missing from one run gets from that run: ``"zero"`` gives 0.0, ``"min"`` gives that run's
        minimum normalised score (0.0 if the run is empty). With min-max normalisation the two agree unless all
        scores of a run are equal (then ``"min"`` gives 1.0); they differ for ``"zscore"`` and ``"none"``.
    k : int or None, default None
        Keep only the ``k`` best docs (``k >= 1``); ``None`` keeps all.

    Returns
    -------
    list[tuple[K, float]]
        ``(doc id, fused score)`` sorted by fused score, descending. Ties are broken by rank (stable sort of
        the raw scores, descending) in the run with the larger weight — ``first`` when ``alpha >= 0.5``, else
        ``second`` — then by rank in the other run; a doc absent from a run ranks after all of its docs. Every doc
        is in at least one run, so this order is total and deterministic. In particular, with ``alpha = 1`` the
        docs of ``first`` come out in ``first``'s rank order, and with ``alpha = 0`` those of ``second`` in
        ``second``'s.

    Raises
    ------
    InvalidArgumentError
        ``alpha`` is not in ``[0, 1]``, ``k < 1``, or ``normalization`` / ``missing`` is not a known name.
    NonFiniteError
        A score in ``first`` or ``second`` is NaN or infinite (the message names the run and the doc).
    DTypeError
        A run is not a mapping, or a score is not a real number.

    Examples
    --------
    >>> bm25 = {"d1": 12.0, "d2": 8.0, "d3": 4.0}
    >>> splade = {"d2": 30.0, "d4": 20.0}
    >>> convex_combination(bm25, splade, alpha=0.5)
    [('d2', 0.75), ('d1', 0.5), ('d3', 0.0), ('d4', 0.0)]
    """
    a = check_float(alpha, "alpha", low=0.0, high=1.0)
    norm = check_choice(normalization, "normalization", _NORMALIZATIONS)
    miss = check_choice(missing, "missing", _MISSING)
    top = optional_positive_int(k, "k")
    return _convex(first, second, a, norm, miss, top, ("first", "second"))


# ---------------------------------------------------------------------------------------------------------------
# Reciprocal rank fusion
# ---------------------------------------------------------------------------------------------------------------


def _rrf(runs: Sequence[object], k: float, top: int | None, names: Sequence[str]) -> list[tuple[K, float]]:
    scores: dict[K, float] = {}
    for run, name in zip(runs, names, strict=True):
        ranked: list[K] = _ranked_docs(run, name)
        for r, d in enumerate(ranked, start=1):
            scores[d] = scores.get(d, 0.0) + 1.0 / (k + r)
    # ties keep the order of first appearance (runs in the order given, each in rank order): dicts keep
    # insertion order and sorted() is stable
    out = sorted(scores.items(), key=lambda item: -item[1])
    return out if top is None else out[:top]


def rrf(*runs: Mapping[K, float] | Sequence[K], k: float = 60, top: int | None = None) -> list[tuple[K, float]]:
    """Reciprocal rank fusion (Cormack, Clarke & Büttcher 2009).

    ``score(d) = sum over the runs containing d of 1 / (k + rank_run(d))``, ranks starting at 1.

    Parameters
    ----------
    *runs : Mapping[K, float] or Sequence[K]
        Any number of runs. A mapping doc id -> score is ranked by a stable sort of its scores, descending
        (equal scores keep the mapping's iteration order); a sequence (list, tuple, 1-D array) of doc ids is
        taken as already in rank order, best first, and must not repeat an id. Only ranks matter, so any
        strictly increasing transform of a run's scores leaves the result unchanged.
    k : float, default 60
        The smoothing constant, finite and ``>= 0`` (ranks start at 1, so ``k = 0`` is defined). 60 is the value
        of Cormack et al.
    top : int or None, default None
        Keep only the ``top`` best docs (``top >= 1``); ``None`` keeps all.

    Returns
    -------
    list[tuple[K, float]]
        ``(doc id, fused score)`` sorted by fused score, descending; ties keep the order of first appearance
        (the runs in the order given, each in rank order). No runs give an empty list.

    Raises
    ------
    InvalidArgumentError
        ``k`` is negative or not finite, ``top < 1``, or a sequence run repeats a doc id.
    NonFiniteError
        A score of a mapping run is NaN or infinite (the message names ``runs[i]``).
    DTypeError
        A run is neither a mapping nor a sequence (strings are rejected), or a score is not a real number.

    Examples
    --------
    >>> rrf({"a": 0.9, "b": 0.5}, ["b", "c"], k=1)
    [('b', 0.8333333333333333), ('a', 0.5), ('c', 0.3333333333333333)]
    """
    kk = nonnegative_float(k, "k")
    t = optional_positive_int(top, "top")
    return _rrf(runs, kk, t, [f"runs[{i}]" for i in range(len(runs))])


# ---------------------------------------------------------------------------------------------------------------
# Batches of queries
# ---------------------------------------------------------------------------------------------------------------


def fuse_runs(
    first: Mapping[Q, Mapping[K, float]],
    second: Mapping[Q, Mapping[K, float]],
    *,
    method: Literal["convex", "rrf"] = "convex",
    alpha: float = 0.5,
    normalization: Normalization = "minmax",
    missing: Missing = "zero",
    k: int | None = None,
    rrf_k: float = 60,
) -> dict[Q, dict[K, float]]:
    """Fuse two batches of runs query by query (the ir-measures run format ``{query_id: {doc_id: score}}``).

    Parameters
    ----------
    first, second : Mapping[Q, Mapping[K, float]]
        Runs per query. A query missing from one batch is fused with an empty run from that batch.
    method : {"convex", "rrf"}, default "convex"
        :func:`convex_combination` (uses ``alpha``, ``normalization``, ``missing``) or :func:`rrf` (uses
        ``rrf_k``; ``alpha``, ``normalization`` and ``missing`` are ignored).
    alpha, normalization, missing
        As in :func:`convex_combination`.
    k : int or None, default None
        Keep only the ``k`` best docs of every query (``k >= 1``; ``top`` of :func:`rrf`).
    rrf_k : float, default 60
        The constant ``k`` of :func:`rrf`.

    Returns
    -------
    dict[Q, dict[K, float]]
        ``{query_id: {doc_id: fused score}}`` over the union of the queries (those of ``first`` first, in its
        order, then the new ones of ``second``); each inner dict iterates in fused rank order.

    Raises
    ------
    InvalidArgumentError
        ``method`` is unknown, or an argument of the chosen method is out of its domain (checked even when
        there are no queries).
    NonFiniteError
        A score is NaN or infinite; the message names the run, e.g. ``first['q1']``.
    DTypeError
        A batch is not a mapping, or one of its runs is not a mapping.

    Examples
    --------
    >>> fuse_runs({"q1": {"d1": 2.0, "d2": 1.0}}, {"q1": {"d2": 5.0}, "q2": {"d3": 1.0}}, alpha=0.5)
    {'q1': {'d1': 0.5, 'd2': 0.5}, 'q2': {'d3': 0.5}}
    """
    m = check_choice(method, "method", _METHODS)
    for name, batch in (("first", first), ("second", second)):
        if not isinstance(batch, Mapping):
            raise DTypeError(f"{name}: must be a mapping query_id -> run, got {type(batch).__name__}")
    top = optional_positive_int(k, "k")
    empty: dict[K, float] = {}
    out: dict[Q, dict[K, float]] = {}
    if m == "convex":
        a = check_float(alpha, "alpha", low=0.0, high=1.0)
        norm = check_choice(normalization, "normalization", _NORMALIZATIONS)
        miss = check_choice(missing, "missing", _MISSING)
        for q in dict.fromkeys([*first, *second]):
            names = (f"first[{q!r}]", f"second[{q!r}]")
            fused = _convex(first.get(q, empty), second.get(q, empty), a, norm, miss, top, names)
            out[q] = dict(fused)
    else:
        kk = nonnegative_float(rrf_k, "rrf_k")
        for q in dict.fromkeys([*first, *second]):
            run_names = [f"first[{q!r}]", f"second[{q!r}]"]
            res: list[tuple[K, float]] = _rrf([first.get(q, empty), second.get(q, empty)], kk, top, run_names)
            out[q] = dict(res)
    return out
