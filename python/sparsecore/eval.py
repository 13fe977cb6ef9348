"""IR evaluation on top of ir-measures: nDCG@k, MRR@k, Recall@k, MAP from qrels and runs.

The metrics themselves are computed by ir-measures (``pip install 'sparsecore[text]'``, which uses trec_eval
through pytrec_eval); this module converts between the shapes sparsecore produces (id and score arrays from
:meth:`~sparsecore.InvertedIndex.search`) and the shapes ir-measures reads (``{query: {doc: score}}`` dicts and
TREC files), and writes TREC run files atomically.

Qrels are ``{query_id: {doc_id: relevance}}``; a run is ``{query_id: {doc_id: score}}``. Ids are strings.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from sparsecore._io import atomic_write_bytes, read_regular_file
from sparsecore._optional import require
from sparsecore.exceptions import InvalidArgumentError, ShapeMismatchError, SparseFormatError

__all__ = [
    "DEFAULT_METRICS",
    "Qrels",
    "Run",
    "evaluate",
    "evaluate_per_query",
    "read_qrels",
    "read_run",
    "run_from_search",
    "write_run",
]

Qrels = Mapping[str, Mapping[str, int]]
Run = Mapping[str, Mapping[str, float]]

DEFAULT_METRICS: tuple[str, ...] = ("nDCG@10", "RR@10", "R@10", "AP")


def _measures(metrics: Sequence[str]) -> list[Any]:
    irm = require("ir_measures")
    if isinstance(metrics, str):
        metrics = [metrics]
    out = []
    for m in metrics:
        try:
            out.append(irm.parse_measure(m))
        except (ValueError, NameError, SyntaxError, AttributeError, TypeError) as exc:
            raise InvalidArgumentError(f"metrics: {m!r} is not an ir-measures measure ({exc})") from None
    if not out:
        raise InvalidArgumentError("metrics: is empty")
    return out


def _check_run(run: Run, name: str = "run") -> dict[str, dict[str, float]]:
    if not isinstance(run, Mapping):
        raise InvalidArgumentError(f"{name}: expected {{query_id: {{doc_id: score}}}}, got {type(run).__name__}")
    out: dict[str, dict[str, float]] = {}
    for q, docs in run.items():
        if not isinstance(docs, Mapping):
            raise InvalidArgumentError(f"{name}[{q!r}]: expected {{doc_id: score}}, got {type(docs).__name__}")
        row: dict[str, float] = {}
        for d, s in docs.items():
            v = float(s)
            if math.isnan(v):
                raise InvalidArgumentError(f"{name}[{q!r}][{d!r}]: score is NaN")
            row[str(d)] = v
        out[str(q)] = row
    return out


def _check_qrels(qrels: Qrels) -> dict[str, dict[str, int]]:
    if not isinstance(qrels, Mapping):
        raise InvalidArgumentError(f"qrels: expected {{query_id: {{doc_id: relevance}}}}, got {type(qrels).__name__}")
    out: dict[str, dict[str, int]] = {}
    for q, docs in qrels.items():
        if not isinstance(docs, Mapping):
            raise InvalidArgumentError(f"qrels[{q!r}]: expected {{doc_id: relevance}}, got {type(docs).__name__}")
        out[str(q)] = {str(d): int(r) for d, r in docs.items()}
    if not out:
        raise InvalidArgumentError("qrels: has no judged query")
    return out


def evaluate(qrels: Qrels, run: Run, metrics: Sequence[str] = DEFAULT_METRICS) -> dict[str, float]:
    """Mean of each metric over the judged queries.

    Parameters
    ----------
    qrels
        ``{query_id: {doc_id: relevance}}`` (relevance > 0 is relevant; graded values are nDCG gains).
    run
        ``{query_id: {doc_id: score}}``. A judged query missing from the run scores 0 (trec_eval ``-c``
        convention), so dropping hard queries cannot raise the mean.
    metrics
        ir-measures names, e.g. ``"nDCG@10"``, ``"RR@10"`` (MRR@10), ``"R@10"``, ``"AP"``, ``"P@5"``.

    Returns
    -------
    dict[str, float]
        ``{metric name: mean}`` in the order of ``metrics``.

    Raises
    ------
    InvalidArgumentError
        Unknown metric, malformed qrels/run, NaN scores.
    MissingExtraError
        ir-measures is not installed.

    Examples
    --------
    >>> evaluate({"q1": {"d1": 1}}, {"q1": {"d2": 2.0, "d1": 1.0}}, ["RR@10"])
    {'RR@10': 0.5}
    """
    per_q = evaluate_per_query(qrels, run, metrics)
    judged = list(_check_qrels(qrels))
    return {m: sum(per_q[q][m] for q in judged) / len(judged) for m in (str(x) for x in _measures(metrics))}


def evaluate_per_query(qrels: Qrels, run: Run, metrics: Sequence[str] = DEFAULT_METRICS) -> dict[str, dict[str, float]]:
    """Each metric for each judged query: ``{query_id: {metric: value}}`` (0 for a query missing from the run)."""
    measures = _measures(metrics)
    qr = _check_qrels(qrels)
    rn = _check_run(run)
    irm = require("ir_measures")
    out: dict[str, dict[str, float]] = {q: {str(m): 0.0 for m in measures} for q in qr}
    for metric in irm.iter_calc(measures, qr, rn):
        if metric.query_id in out:
            out[metric.query_id][str(metric.measure)] = float(metric.value)
    return out


def run_from_search(
    query_ids: Sequence[str],
    ids: ArrayLike,
    scores: ArrayLike,
    doc_ids: Sequence[str] | None = None,
) -> dict[str, dict[str, float]]:
    """A run dict from the ``(ids, scores)`` arrays of :meth:`~sparsecore.InvertedIndex.search`.

    Parameters
    ----------
    query_ids
        Id of each query row.
    ids, scores
        ``(n_queries, k)`` arrays; padding (id -1) is skipped.
    doc_ids
        Maps an index id (an int) to a document id string; default ``str(id)``.

    Raises
    ------
    ShapeMismatchError
        The arrays and ``query_ids`` disagree in shape.
    """
    ia = np.asarray(ids)
    sa = np.asarray(scores)
    if ia.ndim != 2 or ia.shape != sa.shape or ia.shape[0] != len(query_ids):
        raise ShapeMismatchError(
            f"ids {ia.shape} and scores {sa.shape} must be (len(query_ids)={len(query_ids)}, k) arrays"
        )
    out: dict[str, dict[str, float]] = {}
    for q, row_ids, row_scores in zip(query_ids, ia.tolist(), sa.tolist(), strict=True):
        out[str(q)] = {
            (doc_ids[i] if doc_ids is not None else str(i)): float(s)
            for i, s in zip(row_ids, row_scores, strict=True)
            if i >= 0
        }
    return out


def write_run(path: str | os.PathLike[str], run: Run, *, tag: str = "sparsecore") -> None:
    """Write a TREC run file (``qid Q0 docid rank score tag``, best first), atomically.

    Raises
    ------
    InvalidArgumentError
        Ids containing whitespace (they would corrupt the format), or a malformed run.
    """
    lines: list[str] = []
    for q, docs in _check_run(run).items():
        ranked = sorted(docs.items(), key=lambda kv: (-kv[1], kv[0]))
        for rank, (d, s) in enumerate(ranked, start=1):
            if any(c.isspace() for c in q + d + tag) or not q or not d:
                raise InvalidArgumentError(f"run: query {q!r} / document {d!r} / tag {tag!r} is empty or has spaces")
            lines.append(f"{q} Q0 {d} {rank} {s!r} {tag}\n")  # repr: shortest text that reads back exactly
    atomic_write_bytes(path, "".join(lines).encode("utf-8"))


def _read_lines(path: str | os.PathLike[str], n_fields: int, what: str) -> list[tuple[int, list[str]]]:
    rows = []
    for lineno, line in enumerate(read_regular_file(path).decode("utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) < n_fields:
            raise SparseFormatError(f"{path}:{lineno}: a {what} line needs {n_fields} fields, got {line!r}")
        rows.append((lineno, parts))
    return rows


def read_run(path: str | os.PathLike[str]) -> dict[str, dict[str, float]]:
    """Read a TREC run file (``qid Q0 docid rank score tag``).

    Raises
    ------
    FileNotFoundError
        No such file.
    SparseFormatError
        A line with fewer than 6 fields or a score that is not a number (the message gives the line number).
    """
    out: dict[str, dict[str, float]] = {}
    for lineno, parts in _read_lines(path, 6, "run"):
        try:
            out.setdefault(parts[0], {})[parts[2]] = float(parts[4])
        except ValueError:
            raise SparseFormatError(
                f"{path}:{lineno}: score {parts[4]!r} of query {parts[0]} is not a number"
            ) from None
    return out


def read_qrels(path: str | os.PathLike[str]) -> dict[str, dict[str, int]]:
    """Read a TREC qrels file (``qid iteration docid relevance``).

    Raises
    ------
    FileNotFoundError
        No such file.
    SparseFormatError
        A line with fewer than 4 fields or a relevance that is not an integer.
    """
    out: dict[str, dict[str, int]] = {}
    for lineno, parts in _read_lines(path, 4, "qrels"):
        try:
            out.setdefault(parts[0], {})[parts[2]] = int(parts[3])
        except ValueError:
            raise SparseFormatError(
                f"{path}:{lineno}: relevance {parts[3]!r} of query {parts[0]} is not an integer"
            ) from None
    return out
