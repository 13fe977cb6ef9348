"""scikit-learn style estimators over ``sparsecore.pursuit``: ``SparseCoder`` and ``DictionaryLearner``.

``SparseCoder`` is checked against the pursuit functions it wraps (bit for bit) and against scikit-learn's own
``SparseCoder``; both estimators against scikit-learn's estimator contract (``clone``, nested ``set_params``,
pipelines, grid search, tags). ``DictionaryLearner`` is checked against numpy oracles of one MOD / K-SVD
update written here from the definitions, and on synthetic data drawn from a known dictionary, where it must
find most of the true atoms.
"""

from __future__ import annotations

import pickle
from typing import Any

import numpy as np
import pytest
from numpy.typing import NDArray
from sklearn.base import clone
from sklearn.decomposition import SparseCoder as SkSparseCoder
from sklearn.exceptions import NotFittedError as SkNotFittedError
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import make_pipeline
from sklearn.utils import get_tags
from sklearn.utils.validation import check_is_fitted
from sparsecore._estimators import DictionaryLearner, NotFittedError, SparseCoder
from sparsecore.exceptions import DTypeError, InvalidArgumentError, ShapeMismatchError
from sparsecore.pursuit import gradient_pursuit, lasso, mp, omp, threshold

F64 = NDArray[np.float64]
ALGORITHMS = ("omp", "mp", "gp", "lasso_fista", "lasso_ista", "lasso_cd", "threshold")

# ---------------------------------------------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------------------------------------------


def unit_dict(rng: np.random.Generator, n_atoms: int, n_features: int) -> F64:
    d = rng.standard_normal((n_atoms, n_features))
    return np.asarray(d / np.linalg.norm(d, axis=1, keepdims=True), dtype=np.float64)


@pytest.fixture
def problem() -> tuple[F64, F64]:
    """A unit-norm dictionary (30 atoms, 20 features) and 40 Gaussian signals."""
    rng = np.random.default_rng(7)
    return unit_dict(rng, 30, 20), rng.standard_normal((40, 20))


def synthetic(
    seed: int, n_signals: int = 2000, n_atoms: int = 30, n_features: int = 20, sparsity: int = 3, noise: float = 0.01
) -> tuple[F64, F64]:
    """Signals ``Z @ D + noise`` with exactly ``sparsity`` atoms of a random unit dictionary ``D`` each."""
    rng = np.random.default_rng(seed)
    d = unit_dict(rng, n_atoms, n_features)
    z = np.zeros((n_signals, n_atoms))
    for i in range(n_signals):
        support = rng.choice(n_atoms, sparsity, replace=False)
        z[i, support] = rng.standard_normal(sparsity) + np.sign(rng.standard_normal(sparsity))
    return z @ d + noise * rng.standard_normal((n_signals, n_features)), d


def recovered(learned: F64, true: F64, threshold: float = 0.95) -> float:
    """Fraction of true atoms with a learned atom at ``|cosine| > threshold``."""
    cos = np.abs(true @ learned.T) / np.linalg.norm(learned, axis=1)
    return float(np.mean(cos.max(axis=1) > threshold))


def classification(seed: int = 0) -> tuple[F64, NDArray[np.int64], F64]:
    """Two classes built from disjoint halves of a dictionary, plus that dictionary."""
    rng = np.random.default_rng(seed)
    d = unit_dict(rng, 16, 12)
    y = rng.integers(0, 2, size=120)
    z = np.zeros((120, 16))
    for i, label in enumerate(y):
        z[i, rng.choice(8, 2, replace=False) + 8 * label] = rng.uniform(0.5, 2.0, 2)
    return z @ d + 0.05 * rng.standard_normal((120, 12)), y, d


# ---------------------------------------------------------------------------------------------------------------
# The scikit-learn estimator contract
# ---------------------------------------------------------------------------------------------------------------


def test_get_params_returns_constructor_arguments_unmodified(problem: tuple[F64, F64]) -> None:
    d, _ = problem
    coder = SparseCoder(d, algorithm="threshold", alpha=0.3, nonneg=True)
    params = coder.get_params()
    assert params["dictionary"] is d
    assert params == {**params, "algorithm": "threshold", "alpha": 0.3, "nonneg": True, "max_iter": 1000}
    assert set(params) == {
        "dictionary",
        "algorithm",
        "n_nonzero_coefs",
        "alpha",
        "tol",
        "max_iter",
        "nonneg",
        "normalize",
        "num_threads",
    }
    learner = DictionaryLearner(12, update="ksvd", random_state=3)
    assert learner.get_params(deep=False) == {
        "n_atoms": 12,
        "coding": "omp",
        "n_nonzero_coefs": None,
        "alpha": None,
        "update": "ksvd",
        "batch_size": 256,
        "n_iter": 10,
        "random_state": 3,
        "num_threads": None,
        "forgetting": 16.0,
    }


def test_constructor_does_not_validate() -> None:
    """scikit-learn requires checks at fit time: bad values are stored, and only fit/transform complain."""
    coder = SparseCoder("not an array", algorithm="nope", n_nonzero_coefs=-1)  # type: ignore[arg-type]
    assert coder.get_params()["algorithm"] == "nope"
    learner = DictionaryLearner(-3, coding="nope")  # type: ignore[arg-type]
    assert learner.n_atoms == -3
    with pytest.raises(InvalidArgumentError, match="n_atoms"):
        learner.fit(np.ones((4, 3)))


def test_set_params_round_trip(problem: tuple[F64, F64]) -> None:
    d, x = problem
    coder = SparseCoder(d, n_nonzero_coefs=2)
    assert coder.set_params(**coder.get_params()) is coder
    assert coder.get_params()["dictionary"] is d
    assert coder.set_params() is coder
    coder.set_params(algorithm="threshold", n_nonzero_coefs=None, alpha=0.5)
    np.testing.assert_array_equal(coder.transform(x), threshold(x, d, alpha=0.5))
    learner = DictionaryLearner(5).set_params(n_atoms=7, update="ksvd", random_state=1)
    assert (learner.n_atoms, learner.update, learner.random_state) == (7, "ksvd", 1)
    with pytest.raises(InvalidArgumentError, match="n_components: not a parameter of SparseCoder"):
        coder.set_params(n_components=3)
    with pytest.raises(ValueError, match="valid parameters"):  # InvalidArgumentError is a ValueError
        learner.set_params(max_iter=3)


def test_clone(problem: tuple[F64, F64]) -> None:
    d, x = problem
    coder = SparseCoder(d, algorithm="gp", n_nonzero_coefs=4, num_threads=2).fit(x)
    twin = clone(coder)
    assert type(twin) is SparseCoder
    assert not hasattr(twin, "components_")
    assert twin.dictionary is not d  # deep-copied, as scikit-learn does for non-estimator parameters
    np.testing.assert_array_equal(twin.dictionary, d)
    assert {k: v for k, v in twin.get_params().items() if k != "dictionary"} == {
        k: v for k, v in coder.get_params().items() if k != "dictionary"
    }
    np.testing.assert_array_equal(twin.transform(x), coder.transform(x))

    gen_learner = DictionaryLearner(6, update="ksvd", random_state=np.random.default_rng(4), n_iter=2)
    learner = DictionaryLearner(6, update="ksvd", random_state=4, n_iter=2).fit(x)
    for est in (learner, gen_learner):
        fresh = clone(est)
        assert not hasattr(fresh, "components_")
        assert fresh.get_params().keys() == est.get_params().keys()
    np.testing.assert_array_equal(clone(learner).fit(x).components_, learner.components_)


def test_repr_and_feature_names(problem: tuple[F64, F64]) -> None:
    d, x = problem
    assert repr(SparseCoder(d)) == "SparseCoder(dictionary=<array 30x20 float64>)"
    assert repr(SparseCoder(d, algorithm="lasso_cd", alpha=0.5)) == (
        "SparseCoder(dictionary=<array 30x20 float64>, algorithm='lasso_cd', alpha=0.5)"
    )
    assert repr(DictionaryLearner(8, update="ksvd")) == "DictionaryLearner(n_atoms=8, update='ksvd')"
    names = SparseCoder(d).get_feature_names_out()
    assert names.tolist() == [f"sparsecoder{i}" for i in range(30)]
    with pytest.raises(NotFittedError):
        DictionaryLearner(3).get_feature_names_out()
    learned = DictionaryLearner(3, n_iter=1, random_state=0).fit(x)
    assert learned.get_feature_names_out().tolist() == [
        "dictionarylearner0",
        "dictionarylearner1",
        "dictionarylearner2",
    ]


def test_tags_and_fitted_state(problem: tuple[F64, F64]) -> None:
    d, x = problem
    coder = SparseCoder(d)
    tags = get_tags(coder)
    assert tags.requires_fit is False
    assert tags.target_tags.required is False
    assert tags.transformer_tags is not None
    check_is_fitted(coder)  # stateless: usable without fit
    learner = DictionaryLearner(4, n_iter=1, random_state=0)
    assert get_tags(learner).requires_fit is True
    with pytest.raises(SkNotFittedError):
        check_is_fitted(learner)
    check_is_fitted(learner.fit(x))


def test_pipeline_equals_manual_transform_then_fit() -> None:
    x, y, d = classification()
    x_train, y_train, x_test = x[:80], y[:80], x[80:]
    pipe = make_pipeline(SparseCoder(d, n_nonzero_coefs=2), LogisticRegression(max_iter=1000))
    pipe.fit(x_train, y_train)

    coder = SparseCoder(d, n_nonzero_coefs=2)
    clf = LogisticRegression(max_iter=1000).fit(coder.fit_transform(x_train), y_train)
    np.testing.assert_array_equal(pipe.predict(x_test), clf.predict(coder.transform(x_test)))
    np.testing.assert_allclose(pipe.predict_proba(x_test), clf.predict_proba(coder.transform(x_test)))
    assert pipe.score(x_test, y[80:]) > 0.9
    assert get_tags(pipe).estimator_type == "classifier"


def test_grid_search_sets_nested_params() -> None:
    """GridSearchCV clones the pipeline and sets ``sparsecoder__*`` parameters on every candidate."""
    x, y, d = classification(1)
    pipe = make_pipeline(SparseCoder(d), LogisticRegression(max_iter=1000))
    grid = [
        {"sparsecoder__algorithm": ["omp", "mp"], "sparsecoder__n_nonzero_coefs": [1, 2]},
        {"sparsecoder__algorithm": ["threshold"], "sparsecoder__alpha": [0.1]},
    ]
    search = GridSearchCV(pipe, grid, cv=3).fit(x, y)
    assert len(search.cv_results_["params"]) == 5
    best = search.best_estimator_.named_steps["sparsecoder"]
    assert best.algorithm in ("omp", "mp", "threshold")
    assert search.best_score_ > 0.8


# ---------------------------------------------------------------------------------------------------------------
# SparseCoder: same codes as the functions and as scikit-learn
# ---------------------------------------------------------------------------------------------------------------


def function_codes(algorithm: str, x: Any, d: Any, **kw: Any) -> Any:
    """The pursuit function call a SparseCoder with ``algorithm`` and ``kw`` stands for."""
    if algorithm in ("omp", "mp", "gp"):
        fn = {"omp": omp, "mp": mp, "gp": gradient_pursuit}[algorithm]
        return fn(x, d, k=kw.pop("n_nonzero_coefs", None), **kw)
    if algorithm == "threshold":
        return threshold(x, d, alpha=kw.pop("alpha", 1.0), **kw)
    alpha = kw.pop("alpha", 1.0) / d.shape[1]  # SparseCoder's alpha is scikit-learn's: unscaled squared error
    method = {"lasso_fista": "fista", "lasso_ista": "ista", "lasso_cd": "cd"}[algorithm]
    return lasso(x, d, alpha=alpha, method=method, **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("nonneg", [False, True])
def test_sparse_coder_equals_function(
    problem: tuple[F64, F64], algorithm: str, dtype: type[np.floating[Any]], nonneg: bool
) -> None:
    d, x = (a.astype(dtype) for a in problem)
    kw: dict[str, Any] = {"nonneg": nonneg}
    if algorithm in ("omp", "mp", "gp"):
        kw["n_nonzero_coefs"] = 4
    elif algorithm == "threshold":
        kw["alpha"] = 0.4
    else:
        kw["alpha"] = 0.5
    got = SparseCoder(d, algorithm=algorithm, **kw).fit_transform(x)  # type: ignore[arg-type]
    want = function_codes(algorithm, x, d, **kw)
    assert got.dtype == dtype
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.filterwarnings("ignore::sparsecore.exceptions.ConvergenceWarning")  # max_iter=50 is a pass-through check
def test_sparse_coder_defaults_and_options_equal_function(problem: tuple[F64, F64], algorithm: str) -> None:
    """Default arguments, ``tol``, ``max_iter``, ``normalize`` and ``num_threads`` are passed through."""
    d, x = problem
    scaled = d * np.linspace(0.5, 2.0, d.shape[0])[:, None]
    np.testing.assert_array_equal(SparseCoder(d, algorithm=algorithm).transform(x), function_codes(algorithm, x, d))  # type: ignore[arg-type]
    kw: dict[str, Any] = {"normalize": True, "num_threads": 2}
    if algorithm in ("omp", "mp", "gp"):
        kw["tol"] = 2.0
    elif algorithm != "threshold":
        kw.update(tol=1e-6, max_iter=50)
    np.testing.assert_array_equal(
        SparseCoder(scaled, algorithm=algorithm, **kw).transform(x),  # type: ignore[arg-type]
        function_codes(algorithm, x, scaled, **kw),
    )


@pytest.mark.parametrize("k", [None, 1, 3, 7])
def test_omp_matches_sklearn_sparse_coder(problem: tuple[F64, F64], k: int | None) -> None:
    d, x = problem
    sk = SkSparseCoder(d, transform_algorithm="omp", transform_n_nonzero_coefs=k).transform(x)
    np.testing.assert_allclose(SparseCoder(d, algorithm="omp", n_nonzero_coefs=k).transform(x), sk, atol=1e-12)


@pytest.mark.parametrize("alpha", [None, 0.0, 0.3, 1.5])
@pytest.mark.parametrize("nonneg", [False, True])
def test_threshold_matches_sklearn_sparse_coder(problem: tuple[F64, F64], alpha: float | None, nonneg: bool) -> None:
    d, x = problem
    sk = SkSparseCoder(d, transform_algorithm="threshold", transform_alpha=alpha, positive_code=nonneg).transform(x)
    got = SparseCoder(d, algorithm="threshold", alpha=alpha, nonneg=nonneg).transform(x)
    np.testing.assert_allclose(got, sk, atol=1e-12)


@pytest.mark.parametrize("alpha", [0.1, 1.0])
@pytest.mark.parametrize("nonneg", [False, True])
def test_lasso_cd_matches_sklearn_sparse_coder_scaling(problem: tuple[F64, F64], alpha: float, nonneg: bool) -> None:
    """Same ``alpha`` as scikit-learn (which divides it by ``n_features`` internally); scikit-learn's tol is 1e-8."""
    d, x = problem
    sk = SkSparseCoder(
        d, transform_algorithm="lasso_cd", transform_alpha=alpha, positive_code=nonneg, transform_max_iter=5000
    ).transform(x)
    got = SparseCoder(d, algorithm="lasso_cd", alpha=alpha, nonneg=nonneg, tol=1e-8, max_iter=100_000).transform(x)
    assert np.count_nonzero(sk) > 0
    np.testing.assert_allclose(got, sk, atol=1e-5)


def test_sparse_coder_fit_attributes_and_inverse_transform(problem: tuple[F64, F64]) -> None:
    d, x = problem
    coder = SparseCoder(d, n_nonzero_coefs=5)
    codes = coder.transform(x)  # stateless: no fit needed
    assert coder.fit(x, np.zeros(len(x))) is coder
    assert coder.components_ is d
    assert (coder.n_components_, coder.n_features_in_) == (30, 20)
    np.testing.assert_array_equal(coder.fit_transform(x), codes)
    np.testing.assert_allclose(coder.inverse_transform(codes), codes @ d)
    scaled = d * 3.0
    norm_coder = SparseCoder(scaled, n_nonzero_coefs=5, normalize=True)
    np.testing.assert_allclose(norm_coder.inverse_transform(norm_coder.transform(x)), codes @ d, atol=1e-12)
    with pytest.raises(ShapeMismatchError, match="codes"):
        coder.inverse_transform(codes[:, :5])


@pytest.mark.parametrize(
    ("kwargs", "exc", "match"),
    [
        ({"algorithm": "lars"}, InvalidArgumentError, "algorithm"),
        ({"n_nonzero_coefs": 0}, InvalidArgumentError, "n_nonzero_coefs"),
        ({"n_nonzero_coefs": 2.0}, InvalidArgumentError, "n_nonzero_coefs"),
        ({"n_nonzero_coefs": 31}, InvalidArgumentError, "k"),
        ({"alpha": 0.1}, InvalidArgumentError, "alpha: must be None"),
        ({"tol": -1.0}, InvalidArgumentError, "tol"),
        ({"algorithm": "lasso_cd", "n_nonzero_coefs": 3}, InvalidArgumentError, "n_nonzero_coefs: must be None"),
        ({"algorithm": "lasso_fista", "alpha": 0.0}, InvalidArgumentError, "alpha"),
        ({"algorithm": "lasso_ista", "alpha": float("nan")}, InvalidArgumentError, "alpha"),
        ({"algorithm": "lasso_cd", "tol": 0.0}, InvalidArgumentError, "tol"),
        ({"algorithm": "threshold", "alpha": -0.1}, InvalidArgumentError, "alpha"),
        ({"algorithm": "threshold", "tol": 0.1}, InvalidArgumentError, "tol: must be None"),
        ({"max_iter": 0}, InvalidArgumentError, "max_iter"),
        ({"max_iter": True}, InvalidArgumentError, "max_iter"),
        ({"nonneg": "yes"}, InvalidArgumentError, "nonneg"),
        ({"normalize": 1}, InvalidArgumentError, "normalize"),
        ({"num_threads": 0}, InvalidArgumentError, "num_threads"),
    ],
)
def test_sparse_coder_bad_arguments(
    problem: tuple[F64, F64], kwargs: dict[str, Any], exc: type[Exception], match: str
) -> None:
    d, x = problem
    coder = SparseCoder(d, **kwargs)
    with pytest.raises(exc, match=match):
        coder.fit(x)
    with pytest.raises(exc, match=match):
        coder.transform(x)


def test_sparse_coder_bad_data(problem: tuple[F64, F64]) -> None:
    d, x = problem
    with pytest.raises(ShapeMismatchError, match="dictionary"):
        SparseCoder(d[0]).fit(x)
    with pytest.raises(ShapeMismatchError, match="features"):
        SparseCoder(d).fit(x[:, :5])
    with pytest.raises(ShapeMismatchError, match="X"):
        SparseCoder(d).transform(x[0])
    with pytest.raises(DTypeError, match="float32"):
        SparseCoder(d.astype(np.float32)).fit(x)
    with pytest.raises(DTypeError, match="dictionary"):
        SparseCoder(d.astype(np.complex128)).transform(x)
    with pytest.raises(InvalidArgumentError, match="not finite"):
        SparseCoder(d).transform(np.full_like(x, np.nan))


# ---------------------------------------------------------------------------------------------------------------
# DictionaryLearner: one update against numpy oracles
# ---------------------------------------------------------------------------------------------------------------


def mod_oracle(batches: list[F64], dicts: list[F64], k: int, rho: float) -> F64:
    """MOD from the definition: weighted ``Σ ZᵀZ``, ``Σ ZᵀX`` with each batch coded by the dictionary before it."""
    t_all = len(batches)
    a = np.zeros((dicts[0].shape[0],) * 2)
    b = np.zeros(dicts[0].shape)
    for t, (xb, d) in enumerate(zip(batches, dicts, strict=True), start=1):
        z = omp(xb, d, k=k)
        weight = (t / t_all) ** rho
        a += weight * z.T @ z
        b += weight * z.T @ xb
    ridge = 1e-6 * np.trace(a) / a.shape[0]
    new = np.linalg.solve(a + ridge * np.eye(a.shape[0]), b)
    return np.asarray(new / np.linalg.norm(new, axis=1, keepdims=True), dtype=np.float64)


def ksvd_oracle(xb: F64, d: F64, k: int) -> F64:
    """One K-SVD sweep from the definition, recomputing each restricted residual from scratch."""
    d = d.copy()
    z = omp(xb, d, k=k)
    for j in range(d.shape[0]):
        users = np.flatnonzero(z[:, j])
        if users.size == 0:
            continue
        others = np.delete(np.arange(d.shape[0]), j)
        e = xb[users] - z[np.ix_(users, others)] @ d[others]
        u, s, vt = np.linalg.svd(e)
        sign = 1.0 if vt[0] @ d[j] >= 0 else -1.0
        d[j] = sign * vt[0]
        z[users, j] = sign * s[0] * u[:, 0]
    return d


def initial_dictionary(xb: F64, n_atoms: int, seed: int) -> F64:
    """The learner's first dictionary: distinct random signals of the first batch, normalised."""
    picked = np.random.default_rng(seed).choice(len(xb), size=n_atoms, replace=False)
    return np.asarray(xb[picked] / np.linalg.norm(xb[picked], axis=1, keepdims=True), dtype=np.float64)


@pytest.mark.parametrize("rho", [0.0, 1.0, 16.0])
def test_mod_updates_match_oracle(rho: float) -> None:
    x, _ = synthetic(1, n_signals=800)
    batches = [x[:200], x[200:400], x[400:600], x[600:]]
    learner = DictionaryLearner(30, n_nonzero_coefs=3, forgetting=rho, random_state=0)
    dicts = [initial_dictionary(batches[0], 30, 0)]
    for t, xb in enumerate(batches, start=1):
        learner.partial_fit(xb)
        # no atom is dead or duplicated on this data, so every dictionary is the plain (weighted) MOD solution
        np.testing.assert_allclose(learner.components_, mod_oracle(batches[:t], dicts, 3, rho), atol=1e-9)
        dicts.append(learner.components_.copy())
    assert (learner.n_steps_, learner.n_iter_) == (4, 0)


def test_ksvd_update_matches_oracle() -> None:
    x, _ = synthetic(2, n_signals=512)
    learner = DictionaryLearner(30, n_nonzero_coefs=3, update="ksvd", random_state=5).partial_fit(x[:256])
    before = learner.components_.copy()
    learner.partial_fit(x[256:])
    np.testing.assert_allclose(learner.components_, ksvd_oracle(x[256:], before, 3), atol=1e-9)
    np.testing.assert_allclose(np.linalg.norm(learner.components_, axis=1), 1.0)


def test_error_history_is_relative_error_before_each_update() -> None:
    x, _ = synthetic(3, n_signals=300)
    learner = DictionaryLearner(30, n_nonzero_coefs=3, random_state=1)
    want = []
    for xb in (x[:100], x[100:200], x[200:]):
        if hasattr(learner, "components_"):
            z = omp(xb, learner.components_, k=3)
            want.append(np.linalg.norm(xb - z @ learner.components_) / np.linalg.norm(xb))
        learner.partial_fit(xb)
    assert learner.error_.shape == (3,)
    np.testing.assert_allclose(learner.error_[1:], want, rtol=1e-12)


# ---------------------------------------------------------------------------------------------------------------
# DictionaryLearner: learning on synthetic data
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("update", ["mod", "ksvd"])
def test_recovers_known_dictionary(update: str) -> None:
    x, true = synthetic(0)
    learner = DictionaryLearner(30, n_nonzero_coefs=3, update=update, n_iter=10, random_state=0)  # type: ignore[arg-type]
    assert learner.fit(x) is learner
    err = learner.error_
    assert learner.n_iter_ == 10
    assert learner.n_steps_ == len(err) == 10 * 8  # 2,000 signals in batches of 256
    assert err[-1] < err[0] / 2
    assert err[-8:].mean() < err[:8].mean() / 2  # "monotone-ish": the last pass beats the first one
    assert recovered(learner.components_, true) >= 0.8
    np.testing.assert_allclose(np.linalg.norm(learner.components_, axis=1), 1.0)
    codes = learner.transform(x)
    assert codes.shape == (2000, 30)
    assert np.count_nonzero(codes, axis=1).max() <= 3
    assert np.linalg.norm(x - codes @ learner.components_) / np.linalg.norm(x) < 0.2


def test_lasso_coding_learns_and_transform_equals_sparse_coder() -> None:
    x, true = synthetic(4, n_signals=1000)
    learner = DictionaryLearner(30, coding="lasso", alpha=0.1, n_iter=5, random_state=0).fit(x)
    assert learner.error_[-1] < learner.error_[0]
    assert recovered(learner.components_, true, 0.9) >= 0.5
    coder = SparseCoder(learner.components_, algorithm="lasso_fista", alpha=0.1)
    np.testing.assert_array_equal(learner.transform(x[:50]), coder.transform(x[:50]))
    cd = SparseCoder(learner.components_, algorithm="lasso_cd", alpha=0.1, tol=1e-10).transform(x[:50])
    np.testing.assert_allclose(learner.transform(x[:50]), cd, atol=2e-3)
    omp_learner = DictionaryLearner(30, n_nonzero_coefs=3, n_iter=1, random_state=0).fit(x)
    np.testing.assert_array_equal(
        omp_learner.transform(x[:50]), SparseCoder(omp_learner.components_, n_nonzero_coefs=3).transform(x[:50])
    )


# ---------------------------------------------------------------------------------------------------------------
# DictionaryLearner: partial_fit, reproducibility, state
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("update", ["mod", "ksvd"])
def test_fit_with_one_batch_equals_repeated_partial_fit(update: str) -> None:
    x, _ = synthetic(5, n_signals=300)
    kw: dict[str, Any] = {"n_nonzero_coefs": 3, "update": update, "random_state": 11}
    fitted = DictionaryLearner(30, batch_size=300, n_iter=4, **kw).fit(x)
    stepped = DictionaryLearner(30, **kw)
    for _ in range(4):
        stepped.partial_fit(x)
    np.testing.assert_array_equal(fitted.components_, stepped.components_)
    np.testing.assert_array_equal(fitted.error_, stepped.error_)
    assert (fitted.n_steps_, stepped.n_steps_, fitted.n_iter_, stepped.n_iter_) == (4, 4, 4, 0)


def test_partial_fit_continues_and_fit_restarts() -> None:
    x, _ = synthetic(6, n_signals=600)
    learner = DictionaryLearner(30, n_nonzero_coefs=3, batch_size=200, n_iter=2, random_state=2).fit(x)
    first = learner.components_.copy()
    learner.partial_fit(x[:100])
    assert learner.n_steps_ == 7
    assert len(learner.error_) == 7
    assert not np.array_equal(learner.components_, first)
    learner.fit(x)  # starts over: same result as the first fit
    np.testing.assert_array_equal(learner.components_, first)
    assert learner.n_steps_ == 6


def test_reproducible_with_random_state() -> None:
    x, _ = synthetic(7, n_signals=700)
    runs = [
        DictionaryLearner(30, n_nonzero_coefs=3, batch_size=128, n_iter=2, random_state=s).fit(x) for s in (3, 3, 4)
    ]
    np.testing.assert_array_equal(runs[0].components_, runs[1].components_)
    np.testing.assert_array_equal(runs[0].error_, runs[1].error_)
    assert not np.array_equal(runs[0].components_, runs[2].components_)
    from_gen = DictionaryLearner(30, n_nonzero_coefs=3, batch_size=128, n_iter=2, random_state=np.random.default_rng(3))
    np.testing.assert_array_equal(from_gen.fit(x).components_, runs[0].components_)
    threads = DictionaryLearner(30, n_nonzero_coefs=3, batch_size=128, n_iter=2, random_state=3, num_threads=1)
    np.testing.assert_array_equal(threads.fit(x).components_, runs[0].components_)


def test_float32_training_and_pickle() -> None:
    x, _ = synthetic(8, n_signals=400)
    x32 = x.astype(np.float32)
    learner = DictionaryLearner(30, n_nonzero_coefs=3, n_iter=2, random_state=0).fit(x32)
    assert learner.components_.dtype == np.float32
    assert learner.transform(x32).dtype == np.float32
    with pytest.raises(DTypeError, match="float32"):
        learner.partial_fit(x)
    with pytest.raises(DTypeError):
        learner.transform(x)
    again = pickle.loads(pickle.dumps(learner))
    np.testing.assert_array_equal(again.transform(x32), learner.transform(x32))
    again.partial_fit(x32[:100])
    learner.partial_fit(x32[:100])
    np.testing.assert_array_equal(again.components_, learner.components_)


def test_small_first_batch_and_zero_signals_are_completed_with_random_atoms() -> None:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((10, 6))
    x[:4] = 0.0
    learner = DictionaryLearner(12, n_nonzero_coefs=2, random_state=0).partial_fit(x)
    d = learner.components_
    assert d.shape == (12, 6)
    assert np.all(np.isfinite(d))
    np.testing.assert_allclose(np.linalg.norm(d, axis=1), 1.0)
    learner.partial_fit(np.zeros((5, 6)))  # an all-zero batch: nothing to learn, nothing breaks
    assert np.all(np.isfinite(learner.components_))
    assert learner.error_[-1] == 0.0


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"n_atoms": 0}, "n_atoms"),
        ({"n_atoms": 2.5}, "n_atoms"),
        ({"coding": "lars"}, "coding"),
        ({"update": "svd"}, "update"),
        ({"batch_size": 0}, "batch_size"),
        ({"n_iter": -1}, "n_iter"),
        ({"n_nonzero_coefs": 0}, "n_nonzero_coefs"),
        ({"n_nonzero_coefs": 9}, "n_nonzero_coefs: is 9 but"),
        ({"alpha": 0.1}, "alpha: must be None"),
        ({"coding": "lasso", "n_nonzero_coefs": 2}, "n_nonzero_coefs: must be None"),
        ({"coding": "lasso", "alpha": 0.0}, "alpha"),
        ({"random_state": -1}, "random_state"),
        ({"random_state": "seed"}, "random_state"),
        ({"random_state": np.random.RandomState(0)}, "random_state"),
        ({"forgetting": -1.0}, "forgetting"),
        ({"num_threads": 0}, "num_threads"),
    ],
)
def test_learner_bad_arguments(kwargs: dict[str, Any], match: str) -> None:
    params: dict[str, Any] = {"n_atoms": 8, **kwargs}
    x = np.random.default_rng(0).standard_normal((50, 10))
    learner = DictionaryLearner(**params)
    for method in (learner.fit, learner.partial_fit):
        with pytest.raises(InvalidArgumentError, match=match):
            method(x)


def test_learner_bad_data_and_state() -> None:
    x = np.random.default_rng(0).standard_normal((50, 10))
    learner = DictionaryLearner(8, n_iter=1)
    with pytest.raises(NotFittedError, match="fit"):
        learner.transform(x)
    with pytest.raises(ValueError, match="fit"):  # NotFittedError is a ValueError, as in scikit-learn
        learner.transform(x)
    with pytest.raises(ShapeMismatchError, match="X"):
        learner.fit(x[0])
    with pytest.raises(ShapeMismatchError, match="no signals"):
        learner.fit(x[:0])
    with pytest.raises(InvalidArgumentError, match="NaN"):
        learner.fit(np.full_like(x, np.nan))
    with pytest.raises(DTypeError, match="X"):
        learner.fit(x.astype(np.complex64))
    learner.fit(x)
    with pytest.raises(ShapeMismatchError, match="10"):
        learner.partial_fit(x[:, :5])
    learner.set_params(n_atoms=9)
    with pytest.raises(InvalidArgumentError, match="n_atoms"):
        learner.partial_fit(x)
    learner.fit(x)  # fit starts over with the new size
    assert learner.components_.shape == (9, 10)
    assert learner.fit(np.arange(60).reshape(6, 10)).components_.dtype == np.float64  # integers read as float64
