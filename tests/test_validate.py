"""The shared argument checks (``sparsecore._validate``) and the estimator protocol (``sparsecore._base``)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import warnings
from typing import Any

import numpy as np
import pytest
from sparsecore import _validate as v
from sparsecore._base import BaseEstimator
from sparsecore.exceptions import ConvergenceWarning, DTypeError, InvalidArgumentError, ShapeMismatchError


def test_ints_accept_python_and_numpy_integers_only() -> None:
    assert v.positive_int(np.int64(3), "k") == 3
    assert type(v.positive_int(np.uint8(3), "k")) is int
    assert v.nonnegative_int(0, "n") == 0
    assert v.check_int(-5, "x") == -5
    for bad in (0, -1, True, 2.0, "3", None):
        with pytest.raises(InvalidArgumentError, match=rf"^k: must be a positive integer, got {bad!r}$"):
            v.positive_int(bad, "k")
    with pytest.raises(InvalidArgumentError, match=r"^n: must be a non-negative integer, got -1$"):
        v.nonnegative_int(-1, "n")
    with pytest.raises(InvalidArgumentError, match=r"^k: must be a positive integer <= 4, got 5$"):
        v.positive_int(5, "k", high=4)
    with pytest.raises(InvalidArgumentError, match=r"^side: must be an integer in \[1, 65536\], got 70000$"):
        v.check_int(70000, "side", low=1, high=65536)
    with pytest.raises(InvalidArgumentError, match=r"^dim: must be an integer in \[1, 2\*\*32 - 1\], got 0$"):
        v.check_int(0, "dim", low=1, high=2**32 - 1)
    assert v.optional_positive_int(None, "top") is None
    with pytest.raises(InvalidArgumentError, match=r"^top: must be a positive integer or None, got 0$"):
        v.optional_positive_int(0, "top")


def test_floats_check_interval_ends_and_finiteness() -> None:
    assert v.check_float(np.float32(0.5), "a", low=0.0, high=1.0) == 0.5
    assert v.check_float(1, "a", low=0.0, high=1.0) == 1.0
    assert v.check_float(float("inf"), "t", low=0.0, finite=False) == float("inf")
    with pytest.raises(InvalidArgumentError, match=r"^a: must be a finite number in \(0, 1\], got 0.0$"):
        v.check_float(0.0, "a", low=0.0, high=1.0, low_open=True)
    with pytest.raises(InvalidArgumentError, match=r"^g: must be a finite number in \[0, 1\), got 1.0$"):
        v.check_float(1.0, "g", low=0.0, high=1.0, high_open=True)
    for bad in (float("nan"), float("inf"), True, "1", None, 10**400):
        with pytest.raises(InvalidArgumentError, match=r"^tol: must be a finite number > 0, got "):
            v.positive_float(bad, "tol")
    with pytest.raises(InvalidArgumentError, match=r"^x: must be a number, got nan$"):
        v.check_float(float("nan"), "x", finite=False)
    assert v.nonnegative_float(0, "k") == 0.0


def test_choices_bools_threads_and_none() -> None:
    assert v.check_choice("mod", "update", ("mod", "ksvd")) == "mod"
    with pytest.raises(InvalidArgumentError, match=r"^update: must be one of 'mod', 'ksvd', got 'MOD'$"):
        v.check_choice("MOD", "update", ("mod", "ksvd"))
    assert v.check_bool(np.bool_(True), "nonneg") is True
    with pytest.raises(InvalidArgumentError, match=r"^nonneg: must be True or False, got 1$"):
        v.check_bool(1, "nonneg")
    assert v.check_num_threads(None) is None
    assert v.check_num_threads(np.int32(2)) == 2
    for bad in (0, 4097, True, 1.0):
        with pytest.raises(InvalidArgumentError, match=r"^num_threads: must be None or an integer in \[1, 4096\]"):
            v.check_num_threads(bad)
    v.require_none(None, "alpha", "with omp")
    with pytest.raises(InvalidArgumentError, match=r"^alpha: must be None with omp, got 0.5$"):
        v.require_none(0.5, "alpha", "with omp")


def test_seeds_and_random_states() -> None:
    assert v.check_seed(2**64 - 1) == 2**64 - 1
    with pytest.raises(InvalidArgumentError, match=r"^seed: must be an integer in \[0, 2\*\*64 - 1\], got -1$"):
        v.check_seed(-1)
    gen = np.random.default_rng(1)
    assert v.check_random_state(gen) is gen
    assert v.check_random_state(7).integers(1000) == np.random.default_rng(7).integers(1000)
    assert isinstance(v.check_random_state(None), np.random.Generator)
    for bad in (-1, True, np.random.RandomState(0), 1.5):
        with pytest.raises(InvalidArgumentError, match=r"^random_state: must be None, an integer >= 0 or a numpy"):
            v.check_random_state(bad)


def test_arrays_and_texts() -> None:
    assert v.float_array([1, 2], "X").dtype == np.float64
    f32 = np.ones(3, np.float32)
    assert v.float_array(f32, "X") is f32
    with pytest.raises(DTypeError, match=r"^X: must be float32 or float64 \(or integers\), got dtype complex128$"):
        v.float_array(np.ones(2, complex), "X")
    with pytest.raises(ShapeMismatchError, match=r"^D: must be 2-D \(n_atoms, n_features\), got shape \(3,\)$"):
        v.check_ndim(np.ones(3), "D", 2, "(n_atoms, n_features)")
    assert v.check_texts(("a", "b")) == ["a", "b"]
    with pytest.raises(DTypeError, match="single str"):
        v.check_texts("abc")
    with pytest.raises(DTypeError, match=r"^corpus\[1\]: expected str, got int$"):
        v.check_texts(["a", 1], "corpus")  # type: ignore[list-item]


def test_modules_share_the_checks_and_their_messages() -> None:
    from sparsecore import fusion, pursuit, sdr
    from sparsecore.index import InvertedIndex
    from sparsecore.sparse import SparseBatch

    x, d = np.ones((1, 2)), np.eye(2)
    batch = SparseBatch.from_dicts([{0: 1.0}], dim=2)
    calls: list[Any] = [
        lambda: pursuit.omp(x, d, k=2, num_threads=0),
        lambda: sdr.SDRBatch.from_dense(np.ones((1, 2), bool)).union(
            sdr.SDRBatch.from_dense(np.ones((1, 2), bool)), num_threads=0
        ),
        lambda: InvertedIndex.build(batch, num_threads=0),
        lambda: batch.top_k(1, num_threads=0),
    ]
    for call in calls:
        with pytest.raises(
            InvalidArgumentError, match=r"^num_threads: must be None or an integer in \[1, 4096\], got 0$"
        ):
            call()
    with pytest.raises(InvalidArgumentError, match=r"^k: must be a positive integer or None, got 0$"):
        fusion.convex_combination({"a": 1.0}, {"a": 1.0}, alpha=0.5, k=0)


def test_convergence_warning_is_one_class() -> None:
    from sparsecore import lsse, pursuit

    assert lsse.ConvergenceWarning is ConvergenceWarning
    assert pursuit.lasso.__module__ == "sparsecore.pursuit"


class _Toy(BaseEstimator):
    def __init__(self, a: int = 1, *, b: Any = None, arr: Any = 0.0) -> None:
        self.a = a
        self.b = b
        self.arr = arr


def test_base_reads_parameters_from_the_signature() -> None:
    inner = _Toy(a=5)
    outer = _Toy(b=inner)
    assert _Toy._get_param_names() == ["a", "b", "arr"]
    assert outer.get_params(deep=False) == {"a": 1, "b": inner, "arr": 0.0}
    assert outer.get_params()["b__a"] == 5
    assert outer.set_params(a=2, b__a=9) is outer
    assert (outer.a, inner.a) == (2, 9)
    with pytest.raises(InvalidArgumentError, match=r"^c: not a parameter of _Toy; valid parameters: a, b, arr$"):
        outer.set_params(c=1)
    assert repr(_Toy()) == "_Toy()"
    assert repr(_Toy(a=3, arr=np.zeros((2, 3)))) == "_Toy(a=3, arr=<array 2x3 float64>)"


def test_estimators_import_and_clone_protocol_without_sklearn() -> None:
    code = textwrap.dedent(
        """
        import sys
        sys.modules["sklearn"] = None  # any import of scikit-learn fails
        import numpy as np
        from sparsecore.pursuit import DictionaryLearner, SparseCoder
        from sparsecore.lsse import LsseRegressor
        from sparsecore.sdr import SDRClassifier
        dl = DictionaryLearner(4, n_iter=1, random_state=0)
        assert dl.get_params()["n_atoms"] == 4 and "random_state" in dl.get_params()
        clone = type(dl)(**dl.get_params(deep=False))
        assert repr(clone) == "DictionaryLearner(n_atoms=4, n_iter=1, random_state=0)", repr(clone)
        assert SDRClassifier().set_params(n_neighbors=3).n_neighbors == 3
        assert LsseRegressor(random_state=2).get_params()["random_state"] == 2
        codes = SparseCoder(np.eye(3), n_nonzero_coefs=1).transform(np.array([[0.0, 2.0, 1.0]]))
        assert codes.tolist() == [[0.0, 2.0, 0.0]]
        print("ok")
        """
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "ok"


def test_lsse_regressor_seed_is_a_deprecated_alias_of_random_state() -> None:
    from sparsecore.lsse import LsseRegressor

    rng = np.random.default_rng(0)
    x, y = rng.uniform(-1, 1, (50, 2)), rng.standard_normal(50)
    new = LsseRegressor(num_groups=4, num_bins=4, random_state=5).fit(x, y)
    with pytest.warns(FutureWarning, match="seed=.* is deprecated; use random_state"):
        old = LsseRegressor(num_groups=4, num_bins=4, seed=5).fit(x, y)
    np.testing.assert_array_equal(old.predict(x), new.predict(x))
    other = LsseRegressor(num_groups=4, num_bins=4, random_state=6).fit(x, y)
    assert not np.array_equal(other.predict(x), new.predict(x))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        a = LsseRegressor(num_groups=4, num_bins=4, random_state=np.random.default_rng(3)).fit(x, y)
        b = LsseRegressor(num_groups=4, num_bins=4, random_state=np.random.default_rng(3)).fit(x, y)
    np.testing.assert_array_equal(a.predict(x), b.predict(x))
    with pytest.raises(InvalidArgumentError, match=r"^random_state: must be "):
        LsseRegressor(random_state=-1).fit(x, y)


def test_sparse_matrices_are_refused_by_name_where_dense_input_is_needed() -> None:
    scipy_sparse = pytest.importorskip("scipy.sparse")
    from sparsecore.lsse import LsseRegressor
    from sparsecore.pursuit import SparseCoder
    from sparsecore.sdr import SDRClassifier

    x = scipy_sparse.csr_matrix(np.eye(3))
    with pytest.raises(DTypeError, match=r"^X: sparse input is not supported"):
        v.float_array(x, "X")
    with pytest.raises(DTypeError, match=r"^X: sparse input is not supported"):
        LsseRegressor(num_groups=4, num_bins=4).fit(x, np.ones(3))
    with pytest.raises(DTypeError, match=r"^codes: sparse input is not supported"):
        SDRClassifier().fit(scipy_sparse.csr_array(np.eye(3, dtype=np.int32)), [0, 1, 2])
    with pytest.raises(DTypeError, match="sparse input is not supported"):
        SparseCoder(np.eye(3)).transform(x)
    v.refuse_sparse(np.eye(3), "X")  # dense input passes
