"""Tests of sparsecore.eval against hand-computed values and naive oracles written here.

ir-measures computes nDCG through trec_eval (pytrec_eval), whose gain is the relevance grade itself (linear gain,
``rel / log2(rank + 1)``), not ``2**rel - 1``; the oracles below follow trec_eval. RR and Recall count a document
as relevant when its grade is >= 1; AP is averaged over every relevant judged document.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from sparsecore.eval import (
    DEFAULT_METRICS,
    evaluate,
    evaluate_per_query,
    read_qrels,
    read_run,
    run_from_search,
    write_run,
)
from sparsecore.exceptions import InvalidArgumentError, ShapeMismatchError, SparseFormatError

pytest.importorskip("ir_measures", reason="ir-measures (extra 'text') is not installed")

QrelsD = dict[str, dict[str, int]]
RunD = dict[str, dict[str, float]]

# ---------------------------------------------------------------------------------------------------------------
# Oracles (trec_eval definitions)
# ---------------------------------------------------------------------------------------------------------------


def ranking(scores: Mapping[str, float]) -> list[str]:
    """Doc ids best first (the tests only use distinct scores, so the tie rule never matters)."""
    return sorted(scores, key=lambda d: -scores[d])


def ndcg_at(qrels: Mapping[str, int], scores: Mapping[str, float], k: int) -> float:
    dcg = sum(qrels.get(d, 0) / math.log2(i + 2) for i, d in enumerate(ranking(scores)[:k]) if qrels.get(d, 0) > 0)
    ideal = sorted((g for g in qrels.values() if g > 0), reverse=True)[:k]
    idcg = sum(g / math.log2(i + 2) for i, g in enumerate(ideal))
    return dcg / idcg if idcg > 0 else 0.0


def rr_at(qrels: Mapping[str, int], scores: Mapping[str, float], k: int) -> float:
    for i, d in enumerate(ranking(scores)[:k]):
        if qrels.get(d, 0) >= 1:
            return 1.0 / (i + 1)
    return 0.0


def recall_at(qrels: Mapping[str, int], scores: Mapping[str, float], k: int) -> float:
    relevant = {d for d, g in qrels.items() if g >= 1}
    if not relevant:
        return 0.0
    return len(relevant & set(ranking(scores)[:k])) / len(relevant)


def average_precision(qrels: Mapping[str, int], scores: Mapping[str, float]) -> float:
    relevant = {d for d, g in qrels.items() if g >= 1}
    if not relevant:
        return 0.0
    hits = 0
    total = 0.0
    for i, d in enumerate(ranking(scores)):
        if d in relevant:
            hits += 1
            total += hits / (i + 1)
    return total / len(relevant)


# ---------------------------------------------------------------------------------------------------------------
# Hand-computed cases
# ---------------------------------------------------------------------------------------------------------------

# d1 (grade 3), d2 (grade 1) and d5 (grade 2) are relevant, d9 is judged non-relevant, d3/d4 are unjudged.
QRELS_1: QrelsD = {"q1": {"d1": 3, "d2": 1, "d5": 2, "d9": 0}}
RUN_1: RunD = {"q1": {"d2": 0.9, "d3": 0.8, "d1": 0.7, "d9": 0.6, "d4": 0.5}}


def test_hand_computed_values() -> None:
    got = evaluate(QRELS_1, RUN_1)
    assert list(got) == list(DEFAULT_METRICS)
    # ranking d2 d3 d1 d9 d4: relevant at ranks 1 (grade 1) and 3 (grade 3); d5 never retrieved
    dcg = 1 / math.log2(2) + 3 / math.log2(4)
    idcg = 3 / math.log2(2) + 2 / math.log2(3) + 1 / math.log2(4)
    assert got["nDCG@10"] == pytest.approx(dcg / idcg, abs=1e-12)
    assert got["nDCG@10"] == pytest.approx(0.5250049893849101, abs=1e-12)
    # the exponential gain 2**rel - 1 would give another number: make sure the oracle is the one trec_eval uses
    exp_dcg = 1 / math.log2(2) + 7 / math.log2(4)
    exp_idcg = 7 + 3 / math.log2(3) + 1 / math.log2(4)
    assert abs(got["nDCG@10"] - exp_dcg / exp_idcg) > 0.01
    assert got["RR@10"] == 1.0
    assert got["R@10"] == pytest.approx(2 / 3)
    assert got["AP"] == pytest.approx((1 / 1 + 2 / 3) / 3)


def test_first_relevant_at_rank_three_and_cutoff() -> None:
    qrels = {"q": {"rel": 1}}
    run = {"q": {"a": 3.0, "b": 2.0, "rel": 1.0}}
    got = evaluate(qrels, run, ["RR@10", "R@10", "nDCG@10", "P@5"])
    assert got["RR@10"] == pytest.approx(1 / 3)
    assert got["R@10"] == 1.0
    assert got["nDCG@10"] == pytest.approx(1 / math.log2(4))
    assert got["P@5"] == pytest.approx(1 / 5)
    # the relevant document at rank 11 is outside every @10 cut-off but still counts for AP
    deep = {"q": {**{f"x{i}": float(100 - i) for i in range(10)}, "rel": 1.0}}
    got = evaluate(qrels, deep, ["RR@10", "R@10", "nDCG@10", "AP"])
    assert got == {"RR@10": 0.0, "R@10": 0.0, "nDCG@10": 0.0, "AP": pytest.approx(1 / 11)}


def test_judged_query_missing_from_the_run_counts_as_zero() -> None:
    qrels = {"q1": {"d1": 1}, "q2": {"d2": 1}}
    perfect = {"q1": {"d1": 1.0}}
    got = evaluate(qrels, perfect, ["RR@10", "nDCG@10"])
    assert got == {"RR@10": 0.5, "nDCG@10": 0.5}
    per_q = evaluate_per_query(qrels, perfect, ["RR@10"])
    assert per_q == {"q1": {"RR@10": 1.0}, "q2": {"RR@10": 0.0}}
    # an empty entry and an entirely empty run are zeros too
    assert evaluate(qrels, {"q1": {"d1": 1.0}, "q2": {}}, ["RR@10"]) == {"RR@10": 0.5}
    assert evaluate(qrels, {}, ["RR@10"]) == {"RR@10": 0.0}
    # an unjudged query in the run does not enter the mean
    assert evaluate(qrels, {**perfect, "q3": {"d3": 1.0}, "q2": {"d2": 1.0}}, ["RR@10"]) == {"RR@10": 1.0}


def test_single_metric_string_and_errors() -> None:
    assert evaluate({"q": {"d": 1}}, {"q": {"d": 1.0}}, "nDCG@10") == {"nDCG@10": 1.0}
    with pytest.raises(InvalidArgumentError, match="no_such_metric"):
        evaluate({"q": {"d": 1}}, {"q": {"d": 1.0}}, ["no_such_metric@10"])
    with pytest.raises(InvalidArgumentError, match="metrics"):
        evaluate({"q": {"d": 1}}, {"q": {"d": 1.0}}, [])
    with pytest.raises(InvalidArgumentError, match="NaN"):
        evaluate({"q": {"d": 1}}, {"q": {"d": float("nan")}})
    with pytest.raises(InvalidArgumentError, match="qrels"):
        evaluate({}, {"q": {"d": 1.0}})
    with pytest.raises(InvalidArgumentError, match="run"):
        evaluate({"q": {"d": 1}}, [("q", "d", 1.0)])  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentError, match="qrels"):
        evaluate({"q": [("d", 1)]}, {"q": {"d": 1.0}})  # type: ignore[dict-item]


# ---------------------------------------------------------------------------------------------------------------
# Property test against the oracles
# ---------------------------------------------------------------------------------------------------------------

POOL = [f"d{i}" for i in range(16)]


@st.composite
def qrels_and_run(draw: st.DrawFn) -> tuple[QrelsD, RunD]:
    n_q = draw(st.integers(1, 4))
    qrels: QrelsD = {}
    run: RunD = {}
    for q in range(n_q):
        judged = draw(st.lists(st.sampled_from(POOL), min_size=1, max_size=8, unique=True))
        grades = draw(st.lists(st.integers(0, 3), min_size=len(judged), max_size=len(judged)))
        grades[0] = max(grades[0], 1)  # at least one relevant document per query
        qrels[f"q{q}"] = dict(zip(judged, grades, strict=True))
        if draw(st.booleans()) or q == 0:
            retrieved = draw(st.lists(st.sampled_from(POOL), max_size=14, unique=True))
            # distinct scores, some of them negative and fractional
            values = draw(st.permutations(range(len(retrieved))))
            run[f"q{q}"] = {d: v * 0.37 - 1.5 for d, v in zip(retrieved, values, strict=True)}
    return qrels, run


@given(qrels_and_run())
def test_evaluate_matches_the_naive_oracles(data: tuple[QrelsD, RunD]) -> None:
    qrels, run = data
    got = evaluate(qrels, run, ["nDCG@10", "RR@10", "R@10", "AP", "nDCG@3"])
    empty: dict[str, float] = {}
    want = {
        "nDCG@10": np.mean([ndcg_at(qrels[q], run.get(q, empty), 10) for q in qrels]),
        "RR@10": np.mean([rr_at(qrels[q], run.get(q, empty), 10) for q in qrels]),
        "R@10": np.mean([recall_at(qrels[q], run.get(q, empty), 10) for q in qrels]),
        "AP": np.mean([average_precision(qrels[q], run.get(q, empty)) for q in qrels]),
        "nDCG@3": np.mean([ndcg_at(qrels[q], run.get(q, empty), 3) for q in qrels]),
    }
    assert got == pytest.approx(want, abs=1e-9)


# ---------------------------------------------------------------------------------------------------------------
# TREC files
# ---------------------------------------------------------------------------------------------------------------


def test_write_run_is_rank_ordered_and_reads_back(tmp_path: Path) -> None:
    run = {"q2": {"b": 1.5, "a": 2.5, "c": -0.25}, "q1": {"x": 10.0, "y": 10.0, "z": 11.0}}
    path = tmp_path / "run.trec"
    write_run(path, run, tag="mytag")
    lines = [line.split() for line in path.read_text(encoding="utf-8").splitlines()]
    assert [ln[1] for ln in lines] == ["Q0"] * 6
    assert {ln[5] for ln in lines} == {"mytag"}
    by_q: dict[str, list[list[str]]] = {}
    for ln in lines:
        by_q.setdefault(ln[0], []).append(ln)
    assert [ln[2] for ln in by_q["q2"]] == ["a", "b", "c"]  # best first
    assert [ln[3] for ln in by_q["q2"]] == ["1", "2", "3"]
    assert [ln[2] for ln in by_q["q1"]] == ["z", "x", "y"]  # tie: smaller id first
    assert read_run(path) == run
    # the file is what ir-measures reads too: same metrics from the dict and from the file
    qrels = {"q1": {"y": 1}, "q2": {"c": 2, "a": 1}}
    assert evaluate(qrels, read_run(path)) == evaluate(qrels, run)


float32_scores = st.floats(-1e6, 1e6, allow_nan=False, width=32)


@given(st.dictionaries(st.sampled_from(POOL), float32_scores, min_size=1, max_size=16))
def test_run_file_round_trip_keeps_every_score(scores: dict[str, float]) -> None:
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "run.trec"
        write_run(path, {"q": scores})
        back = read_run(path)
        ranks = [line.split()[2] for line in path.read_text(encoding="utf-8").splitlines()]
    # exact round trip: a search's float32 scores that differ keep differing (and keep their order) in the file
    assert back == {"q": scores}
    assert ranks == sorted(scores, key=lambda d: (-scores[d], d))


def test_read_qrels_and_blank_lines(tmp_path: Path) -> None:
    path = tmp_path / "qrels.txt"
    path.write_text("q1 0 d1 2\n\nq1 0 d2 0\nq2 Q0 d1 1 extra\n", encoding="utf-8")
    assert read_qrels(path) == {"q1": {"d1": 2, "d2": 0}, "q2": {"d1": 1}}


@pytest.mark.parametrize(
    ("reader", "content", "line"),
    [
        (read_run, "q1 Q0 d1 1 2.5 t\nq1 Q0 d2 2\n", 2),
        (read_run, "q1 Q0 d1 1 2.5 t\n\nq1 Q0 d2 2 abc t\n", 3),
        (read_qrels, "q1 0 d1\n", 1),
        (read_qrels, "q1 0 d1 1\nq1 0 d2 1\nq1 0 d3 high\n", 3),
        (read_qrels, "q1 0 d1 1\nq1 0 d2 0.5\n", 2),
    ],
)
def test_malformed_lines_name_the_line(reader: object, content: str, line: int, tmp_path: Path) -> None:
    path = tmp_path / "bad.txt"
    path.write_text(content, encoding="utf-8")
    assert callable(reader)
    with pytest.raises(SparseFormatError, match=rf"bad\.txt:{line}\b"):
        reader(path)


def test_missing_files(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        read_run(tmp_path / "nope")
    with pytest.raises(FileNotFoundError):
        read_qrels(tmp_path / "nope")


@pytest.mark.parametrize(
    ("run", "tag"),
    [
        ({"q 1": {"d": 1.0}}, "t"),
        ({"q": {"d 1": 1.0}}, "t"),
        ({"q": {"d\t1": 1.0}}, "t"),
        ({"q": {"d": 1.0}}, "my tag"),
        ({"q": {"": 1.0}}, "t"),
        ({"": {"d": 1.0}}, "t"),
    ],
)
def test_write_run_rejects_ids_with_spaces(run: RunD, tag: str, tmp_path: Path) -> None:
    path = tmp_path / "run.trec"
    with pytest.raises(InvalidArgumentError, match="space"):
        write_run(path, run, tag=tag)
    assert not path.exists()  # nothing half-written


# ---------------------------------------------------------------------------------------------------------------
# run_from_search
# ---------------------------------------------------------------------------------------------------------------


def test_run_from_search_skips_padding_and_maps_ids() -> None:
    ids = np.array([[2, 0, -1], [-1, -1, -1], [1, 2, 0]], dtype=np.int64)
    scores = np.array([[3.0, 1.0, -np.inf], [-np.inf] * 3, [5.0, 4.0, 0.5]], dtype=np.float32)
    run = run_from_search(["qa", "qb", "qc"], ids, scores)
    assert run == {"qa": {"2": 3.0, "0": 1.0}, "qb": {}, "qc": {"1": 5.0, "2": 4.0, "0": 0.5}}
    named = run_from_search(["qa", "qb", "qc"], ids, scores, doc_ids=["zero", "one", "two"])
    assert named == {"qa": {"two": 3.0, "zero": 1.0}, "qb": {}, "qc": {"one": 5.0, "two": 4.0, "zero": 0.5}}
    assert evaluate({"qa": {"two": 1}, "qc": {"zero": 1}}, named, ["RR@10"]) == {"RR@10": pytest.approx(2 / 3)}


@pytest.mark.parametrize(
    ("n_queries", "ids_shape", "scores_shape"),
    [(2, (2, 3), (2, 2)), (3, (2, 3), (2, 3)), (3, (3,), (3,)), (2, (2, 3, 1), (2, 3, 1))],
)
def test_run_from_search_shape_mismatch(
    n_queries: int, ids_shape: tuple[int, ...], scores_shape: tuple[int, ...]
) -> None:
    with pytest.raises(ShapeMismatchError):
        run_from_search([f"q{i}" for i in range(n_queries)], np.zeros(ids_shape, np.int64), np.zeros(scores_shape))
