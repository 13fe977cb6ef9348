"""Tests of sparsecore.fusion against naive oracles written here (plain Python loops and the textbook formulas).

The oracles never call sparsecore.fusion: normalisation, convex combination and RRF are recomputed from the
definitions, and rank orders come from Python's stable ``sorted``.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Mapping, Sequence

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from sparsecore.exceptions import DTypeError, InvalidArgumentError, NonFiniteError, SparsecoreError
from sparsecore.fusion import convex_combination, fuse_runs, normalize, rrf

Doc = int | str
Run = dict[Doc, float]

# a small pool of ids (ints and strings mixed) so that two runs overlap often
DOC_IDS = st.one_of(st.integers(0, 15), st.sampled_from([f"d{i}" for i in range(15)]))
ANY_FLOATS = st.floats(allow_nan=False, allow_infinity=False)
# integer-valued scores: the naive formulas are accurate on them, so they can be compared with a tight tolerance
INT_SCORES = st.integers(-1000, 1000).map(float)
NORMALIZATIONS = st.sampled_from(["minmax", "zscore", "none"])
MISSINGS = st.sampled_from(["zero", "min"])
ALPHAS = st.floats(0.0, 1.0)


@st.composite
def runs(
    draw: st.DrawFn,
    scores: st.SearchStrategy[float] = ANY_FLOATS,
    *,
    min_size: int = 0,
    max_size: int = 12,
    distinct: bool = True,
) -> Run:
    """A run doc id -> score; with ``distinct`` all scores differ."""
    ids = draw(st.lists(DOC_IDS, min_size=min_size, max_size=max_size, unique=True))
    vals = draw(st.lists(scores, min_size=len(ids), max_size=len(ids), unique=distinct))
    return dict(zip(ids, vals, strict=True))


# ---------------------------------------------------------------------------------------------------------------
# Oracles
# ---------------------------------------------------------------------------------------------------------------


def ranked(run: Mapping[Doc, float] | Sequence[Doc]) -> list[Doc]:
    """Doc ids best first: stable sort by score descending, or a sequence as given."""
    if isinstance(run, Mapping):
        return sorted(run, key=lambda d: -run[d])
    return list(run)


def naive_normalize(run: Mapping[Doc, float], method: str) -> dict[Doc, float]:
    vals = list(run.values())
    if method == "none" or not vals:
        return dict(run)
    lo, hi = min(vals), max(vals)
    if method == "minmax":
        return {d: 1.0 if hi == lo else (s - lo) / (hi - lo) for d, s in run.items()}
    mean = sum(vals) / len(vals)
    std = math.sqrt(sum((s - mean) ** 2 for s in vals) / len(vals))
    return {d: 0.0 if std == 0 else (s - mean) / std for d, s in run.items()}


def naive_convex(first: Run, second: Run, alpha: float, normalization: str, missing: str) -> dict[Doc, float]:
    n1, n2 = naive_normalize(first, normalization), naive_normalize(second, normalization)
    fill1 = min(n1.values()) if missing == "min" and n1 else 0.0
    fill2 = min(n2.values()) if missing == "min" and n2 else 0.0
    union = list(first) + [d for d in second if d not in first]
    return {d: alpha * n1.get(d, fill1) + (1 - alpha) * n2.get(d, fill2) for d in union}


def naive_rrf(all_runs: Sequence[Mapping[Doc, float] | Sequence[Doc]], k: float) -> list[tuple[Doc, float]]:
    scores: dict[Doc, float] = {}
    for run in all_runs:
        for pos, d in enumerate(ranked(run)):
            scores[d] = scores.get(d, 0.0) + 1.0 / (k + (pos + 1))
    appearance = {d: i for i, d in enumerate(scores)}
    return sorted(scores.items(), key=lambda item: (-item[1], appearance[item[0]]))


def assert_sorted_desc(result: Sequence[tuple[Doc, float]]) -> None:
    scores = [s for _, s in result]
    assert all(a >= b for a, b in itertools.pairwise(scores))


# ---------------------------------------------------------------------------------------------------------------
# normalize
# ---------------------------------------------------------------------------------------------------------------


@given(runs(min_size=2))
def test_minmax_spans_unit_interval(run: Run) -> None:
    out = normalize(run, "minmax")
    assert list(out) == list(run)
    vals = list(out.values())
    assert all(0.0 <= v <= 1.0 for v in vals)
    assert min(vals) == 0.0
    assert max(vals) == 1.0
    # best and worst docs map to exactly 1 and 0; order is kept (non-decreasing)
    assert out[max(run, key=lambda d: run[d])] == 1.0
    assert out[min(run, key=lambda d: run[d])] == 0.0
    for a in run:
        for b in run:
            if run[a] < run[b]:
                assert out[a] <= out[b]


@given(runs(st.floats(-1e6, 1e6), min_size=1), NORMALIZATIONS)
def test_normalize_matches_formula(run: Run, method: str) -> None:
    out = normalize(run, method)  # type: ignore[arg-type]
    expected = naive_normalize(run, method)
    assert list(out) == list(run)
    if method == "zscore" and max(run.values()) - min(run.values()) < 1e-3:
        return  # the naive formula loses the differences of nearly equal scores; moments are tested below
    assert out == pytest.approx(expected, rel=1e-9, abs=1e-9)


@given(runs(min_size=2))
def test_zscore_has_zero_mean_unit_std(run: Run) -> None:
    out = normalize(run, "zscore")
    z = np.array(list(out.values()))
    assert abs(float(z.mean())) <= 1e-9
    assert float(z.std()) == pytest.approx(1.0, rel=1e-9)
    for a in run:
        for b in run:
            if run[a] < run[b]:
                assert out[a] <= out[b]  # (distinct scores may round to one z-score)


def test_zscore_nearly_equal_scores() -> None:
    x = 1.0
    y = math.nextafter(1.0, 2.0)
    assert normalize({"a": x, "b": y}, "zscore") == {"a": -1.0, "b": 1.0}
    assert normalize({"a": x, "b": y}, "minmax") == {"a": 0.0, "b": 1.0}


def test_normalize_huge_range() -> None:
    big = np.finfo(np.float64).max
    assert normalize({"a": -big, "b": 0.0, "c": big}, "minmax") == {"a": 0.0, "b": 0.5, "c": 1.0}
    z = normalize({"a": -big, "b": big}, "zscore")
    assert z == {"a": -1.0, "b": 1.0}


@given(st.floats(allow_nan=False, allow_infinity=False), st.integers(1, 6))
def test_normalize_all_equal(value: float, n: int) -> None:
    run: Run = {i: value for i in range(n)}
    assert normalize(run, "minmax") == dict.fromkeys(range(n), 1.0)
    assert normalize(run, "zscore") == dict.fromkeys(range(n), 0.0)
    assert normalize(run, "none") == run


def test_normalize_empty_and_copy() -> None:
    for method in ("minmax", "zscore", "none"):
        assert normalize({}, method) == {}
    run: Run = {"a": 2.0, 3: 1.0}
    out = normalize(run, "none")
    assert out == run
    assert out is not run


def test_normalize_accepts_numpy_and_int_scores() -> None:
    run = {"a": np.float32(2.0), "b": np.int64(4), "c": 0}
    assert normalize(run, "minmax") == {"a": 0.5, "b": 1.0, "c": 0.0}


# ---------------------------------------------------------------------------------------------------------------
# convex_combination
# ---------------------------------------------------------------------------------------------------------------


@given(runs(INT_SCORES), runs(INT_SCORES), ALPHAS, NORMALIZATIONS, MISSINGS)
def test_convex_matches_naive_formula(first: Run, second: Run, alpha: float, norm: str, missing: str) -> None:
    got = convex_combination(first, second, alpha=alpha, normalization=norm, missing=missing)  # type: ignore[arg-type]
    expected = naive_convex(first, second, alpha, norm, missing)
    assert len(got) == len(expected)
    assert dict(got) == pytest.approx(expected, rel=1e-9, abs=1e-9)
    assert_sorted_desc(got)


@given(runs(), runs(), NORMALIZATIONS, MISSINGS)
def test_alpha_one_reproduces_first(first: Run, second: Run, norm: str, missing: str) -> None:
    got = convex_combination(first, second, alpha=1.0, normalization=norm, missing=missing)  # type: ignore[arg-type]
    assert [d for d, _ in got if d in first] == ranked(first)
    assert {d for d, _ in got} == set(first) | set(second)


@given(runs(), runs(), NORMALIZATIONS, MISSINGS)
def test_alpha_zero_reproduces_second(first: Run, second: Run, norm: str, missing: str) -> None:
    got = convex_combination(first, second, alpha=0.0, normalization=norm, missing=missing)  # type: ignore[arg-type]
    assert [d for d, _ in got if d in second] == ranked(second)
    assert {d for d, _ in got} == set(first) | set(second)


def test_missing_policy_fixed_case() -> None:
    first: Run = {"a": 2.0, "b": 1.0}
    second: Run = {"b": 4.0, "c": 3.0}
    zero = convex_combination(first, second, alpha=0.5, normalization="none", missing="zero")
    # a: 0.5*2 + 0.5*0, b: 0.5*1 + 0.5*4, c: 0.5*0 + 0.5*3
    assert zero == [("b", 2.5), ("c", 1.5), ("a", 1.0)]
    low = convex_combination(first, second, alpha=0.5, normalization="none", missing="min")
    # a: 0.5*2 + 0.5*3 (min of second), b: 2.5, c: 0.5*1 (min of first) + 0.5*3; a and b tie: a ranks
    # better in first (the run with the larger weight at alpha = 0.5)
    assert low == [("a", 2.5), ("b", 2.5), ("c", 2.0)]
    # z-score: both runs normalise to {+1, -1}
    zmin = convex_combination(first, second, alpha=0.25, normalization="zscore", missing="min")
    assert dict(zmin) == pytest.approx({"a": 0.25 - 0.75, "b": -0.25 + 0.75, "c": -0.25 - 0.75})
    zzero = convex_combination(first, second, alpha=0.25, normalization="zscore", missing="zero")
    assert dict(zzero) == pytest.approx({"a": 0.25, "b": 0.5, "c": -0.75})
    assert [d for d, _ in zzero] == ["b", "a", "c"]


def test_missing_min_with_all_equal_minmax_and_empty_run() -> None:
    first: Run = {"a": 5.0, "b": 5.0}  # all equal -> 1.0 each
    second: Run = {"c": 1.0, "d": 0.0}
    assert convex_combination(first, second, alpha=0.5, missing="zero") == [
        ("a", 0.5),
        ("b", 0.5),
        ("c", 0.5),
        ("d", 0.0),
    ]
    # "min" fills from first with 1.0 (its minimum) and from second with 0.0
    assert convex_combination(first, second, alpha=0.5, missing="min") == [
        ("c", 1.0),
        ("a", 0.5),
        ("b", 0.5),
        ("d", 0.5),
    ]
    # an empty run contributes 0.0 under both policies
    for missing in ("zero", "min"):
        got = convex_combination({}, second, alpha=0.5, missing=missing)
        assert got == [("c", 0.5), ("d", 0.0)]
    assert convex_combination({}, {}, alpha=0.3) == []


def test_convex_ties_follow_heavier_run() -> None:
    first: Run = {"x": 1.0, "y": 0.0}
    second: Run = {"y": 1.0, "x": 0.0}
    assert [d for d, _ in convex_combination(first, second, alpha=0.5)] == ["x", "y"]
    got = convex_combination(first, second, alpha=0.4)
    assert [d for d, _ in got] == ["y", "x"]


@given(runs(), runs(), ALPHAS, st.integers(1, 30))
def test_convex_k_truncates(first: Run, second: Run, alpha: float, k: int) -> None:
    full = convex_combination(first, second, alpha=alpha)
    assert convex_combination(first, second, alpha=alpha, k=k) == full[:k]


# ---------------------------------------------------------------------------------------------------------------
# rrf
# ---------------------------------------------------------------------------------------------------------------

# runs with ties (scores from a small set) or sequences of ids in rank order
RRF_RUNS = st.one_of(
    runs(st.integers(0, 4).map(float), distinct=False),
    st.lists(DOC_IDS, max_size=12, unique=True),
)


@given(st.lists(RRF_RUNS, max_size=4), st.one_of(st.integers(0, 100), st.floats(0.0, 100.0)))
def test_rrf_matches_naive(all_runs: list[Run | list[Doc]], k: float) -> None:
    got = rrf(*all_runs, k=k)
    assert got == naive_rrf(all_runs, k)


@given(st.lists(runs(st.integers(-1000, 1000).map(float), distinct=False), min_size=1, max_size=4))
def test_rrf_invariant_to_monotone_transforms(all_runs: list[Run]) -> None:
    base = rrf(*all_runs)
    transforms: list[Callable[[float], float]] = [
        lambda s: 3.0 * s + 7.0,
        lambda s: s**3,
        lambda s: math.exp(s / 1000.0),
        lambda s: math.atan(s / 100.0),
    ]
    for f in transforms:
        moved = [{d: f(s) for d, s in run.items()} for run in all_runs]
        assert rrf(*moved) == base


@given(runs(distinct=False), st.integers(0, 100))
def test_rrf_single_run_keeps_order(run: Run, k: int) -> None:
    got = rrf(run, k=k)
    assert [d for d, _ in got] == ranked(run)
    assert [s for _, s in got] == [1.0 / (k + r) for r in range(1, len(run) + 1)]
    ids = list(run)
    assert [d for d, _ in rrf(ids, k=k)] == ids


@given(st.lists(RRF_RUNS, max_size=4), st.integers(1, 30))
def test_rrf_top_truncates(all_runs: list[Run | list[Doc]], top: int) -> None:
    assert rrf(*all_runs, top=top) == rrf(*all_runs)[:top]


def test_rrf_fixed_case_and_inputs() -> None:
    # Cormack et al.'s k = 60: a doc ranked 1st in one run and 3rd in another
    got = rrf({"a": 0.9, "b": 0.5, "c": 0.1}, ("c", "d", "a"))
    assert got[0] == ("a", 1 / 61 + 1 / 63)
    assert dict(got) == pytest.approx({"a": 1 / 61 + 1 / 63, "b": 1 / 62, "c": 1 / 63 + 1 / 61, "d": 1 / 62})
    # a numpy array of ids is a run in rank order
    assert rrf(np.array([3, 1, 2]), k=0) == [(3, 1.0), (1, 0.5), (2, 1 / 3)]  # type: ignore[arg-type]
    assert rrf() == []


# ---------------------------------------------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("alpha", [1.5, -0.1, float("nan"), float("inf"), True, "0.5"])
def test_bad_alpha(alpha: object) -> None:
    with pytest.raises(InvalidArgumentError, match=r"^alpha: "):
        convex_combination({"a": 1.0}, {"b": 1.0}, alpha=alpha)  # type: ignore[arg-type]


@pytest.mark.parametrize("k", [0, -3, 1.5, True])
def test_bad_convex_k(k: object) -> None:
    with pytest.raises(InvalidArgumentError, match=r"^k: "):
        convex_combination({"a": 1.0}, {"b": 1.0}, alpha=0.5, k=k)  # type: ignore[arg-type]


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_scores_name_the_run(bad: float) -> None:
    with pytest.raises(NonFiniteError, match=r"^first: score of doc 'b'"):
        convex_combination({"a": 1.0, "b": bad}, {"c": 1.0}, alpha=0.5)
    with pytest.raises(NonFiniteError, match=r"^second: "):
        convex_combination({"a": 1.0}, {"c": bad}, alpha=0.5, normalization="none")
    with pytest.raises(NonFiniteError, match=r"^scores: "):
        normalize({"a": bad}, "none")
    with pytest.raises(NonFiniteError, match=r"^runs\[1\]: "):
        rrf({"a": 1.0}, {"a": bad})
    with pytest.raises(NonFiniteError, match=r"^first: score of doc 'a' overflows"):
        convex_combination({"a": 10**400}, {}, alpha=0.5)


def test_errors_are_value_errors_and_sparsecore_errors() -> None:
    with pytest.raises(ValueError, match="alpha"):
        convex_combination({}, {}, alpha=2.0)
    with pytest.raises(SparsecoreError):
        normalize({"a": float("nan")}, "minmax")


def test_bad_choices() -> None:
    with pytest.raises(InvalidArgumentError, match=r"^method: "):
        normalize({"a": 1.0}, "l2")  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentError, match=r"^normalization: "):
        convex_combination({}, {}, alpha=0.5, normalization="l2")  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentError, match=r"^missing: "):
        convex_combination({}, {}, alpha=0.5, missing="max")  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentError, match=r"^method: "):
        fuse_runs({}, {}, method="combsum")  # type: ignore[arg-type]


def test_bad_rrf_arguments() -> None:
    for k in (-1, -0.5, float("nan"), float("inf"), True):
        with pytest.raises(InvalidArgumentError, match=r"^k: "):
            rrf(["a"], k=k)
    for top in (0, -1, 2.0):
        with pytest.raises(InvalidArgumentError, match=r"^top: "):
            rrf(["a"], top=top)  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentError, match=r"^runs\[1\]: doc id 'a' appears more than once"):
        rrf(["a"], ["b", "a", "a"])
    with pytest.raises(DTypeError, match=r"^runs\[0\]: "):
        rrf("abc")
    with pytest.raises(DTypeError, match=r"^runs\[0\]: "):
        rrf({"a", "b"})  # type: ignore[arg-type]
    with pytest.raises(DTypeError, match=r"^runs\[0\]: score of doc 'a'"):
        rrf({"a": "high"})  # type: ignore[dict-item]
    with pytest.raises(InvalidArgumentError, match=r"^rrf_k: "):
        fuse_runs({}, {}, method="rrf", rrf_k=-1)


def test_fuse_runs_errors_name_the_query() -> None:
    with pytest.raises(NonFiniteError, match=r"^second\['q2'\]: score of doc 'x'"):
        fuse_runs({"q1": {"a": 1.0}}, {"q2": {"x": float("nan")}})
    with pytest.raises(NonFiniteError, match=r"^first\[7\]: "):
        fuse_runs({7: {"a": float("inf")}}, {}, method="rrf")
    with pytest.raises(InvalidArgumentError, match=r"^alpha: "):
        fuse_runs({}, {}, alpha=1.5)
    with pytest.raises(InvalidArgumentError, match=r"^k: "):
        fuse_runs({}, {}, method="rrf", k=0)


# ---------------------------------------------------------------------------------------------------------------
# fuse_runs
# ---------------------------------------------------------------------------------------------------------------

BATCHES = st.dictionaries(st.sampled_from(["q1", "q2", "q3", "q4"]), runs(), max_size=4)


@given(BATCHES, BATCHES, ALPHAS, NORMALIZATIONS, MISSINGS, st.one_of(st.none(), st.integers(1, 10)))
def test_fuse_runs_convex_matches_per_query(
    first: dict[str, Run], second: dict[str, Run], alpha: float, norm: str, missing: str, k: int | None
) -> None:
    got = fuse_runs(first, second, alpha=alpha, normalization=norm, missing=missing, k=k)  # type: ignore[arg-type]
    queries = list(first) + [q for q in second if q not in first]
    assert list(got) == queries
    for q in queries:
        expected = convex_combination(
            first.get(q, {}),
            second.get(q, {}),
            alpha=alpha,
            normalization=norm,  # type: ignore[arg-type]
            missing=missing,  # type: ignore[arg-type]
            k=k,
        )
        assert list(got[q].items()) == expected


@given(BATCHES, BATCHES, st.integers(0, 100), st.one_of(st.none(), st.integers(1, 10)))
def test_fuse_runs_rrf_matches_per_query(
    first: dict[str, Run], second: dict[str, Run], rrf_k: int, k: int | None
) -> None:
    got = fuse_runs(first, second, method="rrf", rrf_k=rrf_k, k=k)
    queries = list(first) + [q for q in second if q not in first]
    assert list(got) == queries
    for q in queries:
        expected = naive_rrf([first.get(q, {}), second.get(q, {})], rrf_k)
        assert list(got[q].items()) == (expected if k is None else expected[:k])
