"""scikit-learn compatible estimators over :mod:`sparsecore.pursuit`: a sparse coder and a dictionary learner.

Both classes follow scikit-learn's estimator contract without importing scikit-learn (``sparsecore`` needs numpy
only): the constructor stores its arguments unmodified as attributes, :meth:`get_params` / :meth:`set_params`
read and write them, every check happens in ``fit`` / ``transform``, and fitted state lives in attributes ending
in ``_``. ``sklearn.base.clone``, pipelines and grid searches therefore work with them. Tags for scikit-learn's
``get_tags`` are built lazily, only when scikit-learn asks for them.

Layout as in :mod:`sparsecore.pursuit` and scikit-learn: signals ``X`` are rows ``(n_signals, n_features)``,
the dictionary holds one atom per row ``(n_atoms, n_features)``, codes are ``(n_signals, n_atoms)`` and
``X ≈ codes @ dictionary``.

References
----------
K. Engan, S. O. Aase and J. H. Husøy, "Method of optimal directions for frame design", ICASSP 1999 (MOD).
M. Aharon, M. Elad and A. Bruckstein, "K-SVD: An algorithm for designing overcomplete dictionaries for sparse
representation", IEEE Trans. Signal Processing 54(11), 2006.
J. Mairal, F. Bach, J. Ponce and G. Sapiro, "Online dictionary learning for sparse coding", ICML 2009.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar, Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray

from sparsecore._base import BaseEstimator
from sparsecore._pursuit import gradient_pursuit, lasso, mp, omp, threshold
from sparsecore._validate import (
    check_bool,
    check_choice,
    check_ndim,
    check_num_threads,
    check_random_state,
    float_array,
    nonnegative_float,
    positive_float,
    positive_int,
    require_none,
)
from sparsecore.exceptions import DTypeError, InvalidArgumentError, NotFittedError, ShapeMismatchError

__all__ = ["DictionaryLearner", "NotFittedError", "SparseCoder"]

Algorithm = Literal["omp", "mp", "gp", "lasso_fista", "lasso_ista", "lasso_cd", "threshold"]
_ALGORITHMS: tuple[str, ...] = ("omp", "mp", "gp", "lasso_fista", "lasso_ista", "lasso_cd", "threshold")
_GREEDY = ("omp", "mp", "gp")
_LASSO_METHODS: dict[str, Literal["fista", "ista", "cd"]] = {
    "lasso_fista": "fista",
    "lasso_ista": "ista",
    "lasso_cd": "cd",
}
_LASSO_TOL = 1e-4  # sparsecore.pursuit.lasso's default
_DUPLICATE_COS = 0.99  # an atom this close to another one is replaced


# ---------------------------------------------------------------------------------------------------------------
# Argument checks
# ---------------------------------------------------------------------------------------------------------------


def _signals(x: ArrayLike, name: str = "X") -> NDArray[Any]:
    """2-D float32/float64 signals (integers become float64, as in :mod:`sparsecore.pursuit`)."""
    return check_ndim(float_array(x, name), name, 2, "(n_signals, n_features)")


# ---------------------------------------------------------------------------------------------------------------
# The scikit-learn estimator contract, without scikit-learn
# ---------------------------------------------------------------------------------------------------------------


class _Estimator(BaseEstimator, ABC):
    """Transformers of this module: :class:`~sparsecore._base.BaseEstimator` plus output feature names."""

    _REQUIRES_FIT: ClassVar[bool] = True

    def _more_sklearn_tags(self, tags: Any, utils: Any) -> Any:
        tags.requires_fit = self._REQUIRES_FIT
        tags.transformer_tags.preserves_dtype = ["float64", "float32"]
        return tags

    def get_feature_names_out(self, input_features: object = None) -> NDArray[np.object_]:
        """Output feature names ``"<classname><atom>"``, as scikit-learn's decomposition transformers name them.

        Returns
        -------
        numpy.ndarray
            ``n_atoms`` strings (object dtype).
        """
        n = self._n_outputs()
        prefix = type(self).__name__.lower()
        return np.asarray([f"{prefix}{i}" for i in range(n)], dtype=object)

    @abstractmethod
    def _n_outputs(self) -> int:
        """Number of output features (atoms)."""


# ---------------------------------------------------------------------------------------------------------------
# SparseCoder
# ---------------------------------------------------------------------------------------------------------------


class SparseCoder(_Estimator):
    """Sparse codes over a fixed dictionary, as a scikit-learn transformer.

    A thin estimator over :func:`~sparsecore.pursuit.omp`, :func:`~sparsecore.pursuit.mp`,
    :func:`~sparsecore.pursuit.gradient_pursuit`, :func:`~sparsecore.pursuit.lasso` and
    :func:`~sparsecore.pursuit.threshold`. Where it overlaps with scikit-learn's
    ``sklearn.decomposition.SparseCoder`` it gives the same codes: ``algorithm="omp"`` with ``n_nonzero_coefs=k``
    is ``transform_algorithm="omp", transform_n_nonzero_coefs=k``; ``"threshold"`` and ``"lasso_cd"`` with
    ``alpha=a`` are ``transform_alpha=a``; ``nonneg`` is ``positive_code``.

    Parameters
    ----------
    dictionary
        Atoms ``(n_atoms, n_features)``, float32 or float64; signals must have the same dtype (nothing is
        converted between float32 and float64).
    algorithm
        ``"omp"``, ``"mp"`` (matching pursuit), ``"gp"`` (gradient pursuit), ``"lasso_fista"``, ``"lasso_ista"``,
        ``"lasso_cd"`` or ``"threshold"``.
    n_nonzero_coefs
        Greedy algorithms only: atoms (OMP) or steps (MP, GP) per signal. Default: 10% of ``n_features`` (at
        least 1, at most ``n_atoms``), or every atom when ``tol`` is given.
    alpha
        Lasso and threshold only; default 1.0, as scikit-learn. Lasso: the penalty of
        ``1/2 ||x - zD||² + alpha ||z||₁`` (scikit-learn's ``SparseCoder`` scaling; the function
        :func:`~sparsecore.pursuit.lasso` takes ``alpha / n_features`` for the same problem, as its objective is
        divided by ``n_features``). Threshold: codes ``sign(Dx) max(|Dx| - alpha, 0)``. Must be None for the
        greedy algorithms (scikit-learn reuses ``transform_alpha`` as OMP's tolerance; here that is ``tol``).
    tol
        Greedy algorithms: stop once the squared residual norm ``||x - zD||²`` is at most ``tol``. Lasso:
        duality-gap tolerance of :func:`~sparsecore.pursuit.lasso` (default ``1e-4``; scikit-learn's
        ``SparseCoder`` uses ``1e-8`` with ``"lasso_cd"``). Must be None for ``"threshold"``.
    max_iter
        Lasso only: iteration cap per signal.
    nonneg
        Non-negative codes.
    normalize
        Scale the atoms to unit norm before coding; codes then refer to the scaled atoms (see
        :meth:`inverse_transform`), and zero atoms get zero codes.
    num_threads
        Worker threads (results do not depend on it); default ``SPARSECORE_NUM_THREADS`` or all cores.

    Attributes
    ----------
    components_ : numpy.ndarray
        The dictionary, ``(n_atoms, n_features)`` (set by :meth:`fit`).
    n_components_ : int
        ``n_atoms`` (set by :meth:`fit`).
    n_features_in_ : int
        ``n_features`` (set by :meth:`fit`).

    Notes
    -----
    The coder is stateless: :meth:`transform` works without :meth:`fit`, which only checks the arguments and
    sets the attributes above. Arguments are checked when used, not in the constructor, as scikit-learn's
    ``clone`` and ``set_params`` require; an argument that does not apply to ``algorithm`` (e.g. ``alpha`` with
    OMP) raises rather than being silently ignored.

    Examples
    --------
    >>> import numpy as np
    >>> from sparsecore.pursuit import SparseCoder
    >>> D = np.eye(4)
    >>> SparseCoder(D, algorithm="omp", n_nonzero_coefs=1).transform(np.array([[0.0, 3.0, 1.0, 0.0]]))
    array([[0., 3., 0., 0.]])
    >>> SparseCoder(D, algorithm="threshold", alpha=0.5).transform(np.array([[0.0, 3.0, -1.0, 0.2]]))
    array([[ 0. ,  2.5, -0.5,  0. ]])

    In a pipeline (scikit-learn installed):

    >>> from sklearn.linear_model import LogisticRegression
    >>> from sklearn.pipeline import make_pipeline
    >>> X, y = np.random.default_rng(0).standard_normal((20, 4)), np.arange(20) % 2
    >>> model = make_pipeline(SparseCoder(D, n_nonzero_coefs=2), LogisticRegression()).fit(X, y)
    >>> model.predict(X).shape
    (20,)
    """

    _REQUIRES_FIT: ClassVar[bool] = False

    def __init__(
        self,
        dictionary: ArrayLike,
        *,
        algorithm: Algorithm = "omp",
        n_nonzero_coefs: int | None = None,
        alpha: float | None = None,
        tol: float | None = None,
        max_iter: int = 1000,
        nonneg: bool = False,
        normalize: bool = False,
        num_threads: int | None = None,
    ) -> None:
        self.dictionary = dictionary
        self.algorithm = algorithm
        self.n_nonzero_coefs = n_nonzero_coefs
        self.alpha = alpha
        self.tol = tol
        self.max_iter = max_iter
        self.nonneg = nonneg
        self.normalize = normalize
        self.num_threads = num_threads

    # -- helpers -----------------------------------------------------------------------------------------------

    def _dict(self) -> NDArray[Any]:
        return _signals(self.dictionary, "dictionary")

    def _n_outputs(self) -> int:
        return int(self._dict().shape[0])

    def _encode(self, x: NDArray[Any]) -> NDArray[Any]:
        """Check every argument and code ``X`` (2-D)."""
        d = self._dict()
        algo = check_choice(self.algorithm, "algorithm", _ALGORITHMS)
        positive_int(self.max_iter, "max_iter")
        common: dict[str, Any] = {
            "nonneg": check_bool(self.nonneg, "nonneg"),
            "normalize": check_bool(self.normalize, "normalize"),
            "num_threads": check_num_threads(self.num_threads),
        }
        if algo in _GREEDY:
            require_none(self.alpha, "alpha", f'with algorithm="{algo}" (the tolerance of a greedy algorithm is tol)')
            k = None if self.n_nonzero_coefs is None else positive_int(self.n_nonzero_coefs, "n_nonzero_coefs")
            tol = None if self.tol is None else nonnegative_float(self.tol, "tol")
            fn = {"omp": omp, "mp": mp, "gp": gradient_pursuit}[algo]
            out = fn(x, d, k=k, tol=tol, **common)
        else:
            require_none(self.n_nonzero_coefs, "n_nonzero_coefs", f'with algorithm="{algo}"')
            if algo == "threshold":
                require_none(self.tol, "tol", 'with algorithm="threshold"')
                alpha = 1.0 if self.alpha is None else nonnegative_float(self.alpha, "alpha")
                out = threshold(x, d, alpha=alpha, **common)
            else:
                alpha = 1.0 if self.alpha is None else positive_float(self.alpha, "alpha")
                tol = _LASSO_TOL if self.tol is None else positive_float(self.tol, "tol")
                out = lasso(
                    x,
                    d,
                    alpha=alpha / d.shape[1],
                    method=_LASSO_METHODS[algo],
                    max_iter=int(self.max_iter),
                    tol=tol,
                    **common,
                )
        return np.asarray(out)

    # -- estimator API -----------------------------------------------------------------------------------------

    def fit(self, X: ArrayLike, y: object = None) -> SparseCoder:
        """Check the arguments against ``X`` and record the dictionary; nothing is learned.

        Parameters
        ----------
        X
            Signals ``(n_signals, n_features)`` with the dictionary's dtype.
        y
            Ignored (for pipelines).

        Returns
        -------
        self

        Raises
        ------
        InvalidArgumentError
            An argument is out of its domain or does not apply to ``algorithm``.
        ShapeMismatchError, DTypeError
            ``X`` and the dictionary disagree in ``n_features`` or dtype.
        """
        x = _signals(X)
        self._encode(x[:0])  # every check of transform, on no signals
        d = np.asarray(self.dictionary)
        self.components_ = d
        self.n_components_ = int(d.shape[0])
        self.n_features_in_ = int(d.shape[1])
        return self

    def transform(self, X: ArrayLike) -> NDArray[Any]:
        """Sparse codes of ``X``.

        Parameters
        ----------
        X
            Signals ``(n_signals, n_features)``, same dtype as the dictionary (integers are read as float64).

        Returns
        -------
        numpy.ndarray
            Dense codes ``(n_signals, n_atoms)`` of ``X``'s dtype.

        Raises
        ------
        InvalidArgumentError, ShapeMismatchError, DTypeError
            As for :meth:`fit`.
        """
        return self._encode(_signals(X))

    def fit_transform(self, X: ArrayLike, y: object = None) -> NDArray[Any]:
        """:meth:`fit` then :meth:`transform`.

        Returns
        -------
        numpy.ndarray
            Codes ``(n_signals, n_atoms)``.
        """
        return self.fit(X, y).transform(X)

    def inverse_transform(self, codes: ArrayLike) -> NDArray[Any]:
        """Reconstruct signals ``codes @ D`` (``D`` with unit-norm atoms when ``normalize``).

        Parameters
        ----------
        codes
            ``(n_signals, n_atoms)``.

        Returns
        -------
        numpy.ndarray
            ``(n_signals, n_features)``.
        """
        d = self._dict()
        if check_bool(self.normalize, "normalize"):
            norms = np.linalg.norm(d, axis=1, keepdims=True)
            d = np.divide(d, norms, out=np.zeros_like(d), where=norms > 0)
        z = _signals(codes, "codes")
        if z.shape[1] != d.shape[0]:
            raise ShapeMismatchError(f"codes: has {z.shape[1]} columns but the dictionary has {d.shape[0]} atoms")
        return np.asarray(z @ d)

    def __sklearn_is_fitted__(self) -> bool:
        """Stateless: always usable."""
        return True


# ---------------------------------------------------------------------------------------------------------------
# DictionaryLearner
# ---------------------------------------------------------------------------------------------------------------


class _Config:
    """Checked arguments of one DictionaryLearner call."""

    __slots__ = ("alpha", "batch_size", "coding", "forgetting", "k", "n_atoms", "n_iter", "num_threads", "update")

    def __init__(self, est: DictionaryLearner, n_features: int) -> None:
        self.n_atoms = positive_int(est.n_atoms, "n_atoms")
        self.coding = check_choice(est.coding, "coding", ("omp", "lasso"))
        self.update = check_choice(est.update, "update", ("mod", "ksvd"))
        self.batch_size = positive_int(est.batch_size, "batch_size")
        self.n_iter = positive_int(est.n_iter, "n_iter")
        self.forgetting = nonnegative_float(est.forgetting, "forgetting")
        self.num_threads = check_num_threads(est.num_threads)
        self.k = 0
        self.alpha = 0.0
        if self.coding == "omp":
            require_none(est.alpha, "alpha", 'with coding="omp" (use n_nonzero_coefs)')
            if est.n_nonzero_coefs is None:
                self.k = min(self.n_atoms, max(int(0.1 * n_features), 1))
            else:
                self.k = positive_int(est.n_nonzero_coefs, "n_nonzero_coefs")
                if self.k > self.n_atoms:
                    raise InvalidArgumentError(
                        f"n_nonzero_coefs: is {self.k} but the dictionary has only n_atoms={self.n_atoms} atoms"
                    )
        else:
            require_none(est.n_nonzero_coefs, "n_nonzero_coefs", 'with coding="lasso" (use alpha)')
            self.alpha = 1.0 if est.alpha is None else positive_float(est.alpha, "alpha")


class DictionaryLearner(_Estimator):
    """Learn a dictionary for sparse coding from mini-batches: MOD or K-SVD updates, OMP or Lasso codes.

    Every update codes one mini-batch with the current dictionary, then changes the dictionary:

    * ``update="mod"`` (method of optimal directions, Engan et al. 1999, in the online form of Mairal et al.
      2009): accumulate ``A = Σ zᵀz`` and ``B = Σ zᵀx`` over the batches seen so far and set the dictionary to
      the least-squares solution ``D = (A + λI)⁻¹ B`` (``λ`` a tiny ridge, ``1e-6`` of the mean diagonal of
      ``A``), atoms rescaled to unit norm. Past batches are down-weighted as in Mairal et al. 2010: at update
      ``t`` the statistics are multiplied by ``((t - 1) / t) ** forgetting`` before the batch's are added, so
      batch ``i`` of ``t`` weighs ``(i / t) ** forgetting``; ``forgetting=0`` gives the plain sums.
    * ``update="ksvd"`` (Aharon, Elad & Bruckstein 2006): for each atom in turn, the best rank-1 approximation
      (SVD) of the batch residual restricted to the batch signals that use the atom, with the atom's own
      contribution added back, replaces the atom (unit norm; sign kept close to the old atom) and its
      coefficients on those signals. An atom no signal of the batch uses is left as it is. K-SVD sees only
      the current batch: it needs batches well above ``n_atoms`` signals.

    Dead atoms are re-initialised from distinct random signals of the batch (normalised; their MOD
    statistics are cleared): atoms used by fewer than one signal in the usage counts (accumulated with the
    same down-weighting as MOD's statistics, and cleared on re-initialisation), atoms that came out zero, and
    the less used atom of any pair with ``|cosine| > 0.99`` (a duplicate; purging them as Mairal et al. 2010
    and K-SVD implementations do gets learning out of many local minima). The first dictionary is made of
    distinct random signals of the first batch, normalised (random unit Gaussian vectors complete it when the
    batch has fewer non-zero signals than ``n_atoms``).

    Parameters
    ----------
    n_atoms
        Number of atoms to learn (may exceed ``n_features``: overcomplete dictionaries).
    coding
        ``"omp"`` (at most ``n_nonzero_coefs`` atoms per signal) or ``"lasso"`` (working-set FISTA on
        ``1/2 ||x - zD||² + alpha ||z||₁``, scikit-learn's scaling, as :class:`SparseCoder` with ``"lasso_fista"``).
    n_nonzero_coefs
        OMP only; default 10% of ``n_features`` (at least 1, at most ``n_atoms``).
    alpha
        Lasso only; default 1.0.
    update
        ``"mod"`` or ``"ksvd"``.
    batch_size
        Signals per update. Keep it well above ``n_atoms / n_nonzero_coefs`` so that every useful atom is
        used in most batches (unused atoms are replaced).
    n_iter
        Passes over ``X`` made by :meth:`fit` (each pass shuffles ``X`` when it spans several batches).
    random_state
        None, a seed ``>= 0`` or a ``numpy.random.Generator``: drives the initial atoms, the re-initialised
        atoms and the shuffling. With a seed, results are reproducible.
    num_threads
        Worker threads for the sparse coding (results do not depend on it).
    forgetting
        Down-weighting exponent ``rho >= 0`` of past statistics (see above). The default, 16, forgets the
        codes of early, poor dictionaries quickly; 0 keeps every batch with the same weight, which converges
        much more slowly (the statistics keep codes computed with long-gone dictionaries).

    Attributes
    ----------
    components_ : numpy.ndarray
        The dictionary ``(n_atoms, n_features)``, unit-norm atoms, in the dtype of the training signals.
    n_features_in_ : int
        ``n_features``.
    n_iter_ : int
        Passes over the data made by the last :meth:`fit` (0 after :meth:`partial_fit` only).
    n_steps_ : int
        Dictionary updates (mini-batches) made since the dictionary was initialised.
    error_ : numpy.ndarray
        Relative reconstruction error of every update, ``||X_b - Z_b D||_F / ||X_b||_F`` for the batch ``X_b``
        coded (``Z_b``) with the dictionary ``D`` *before* that update; float64, length ``n_steps_``.

    Notes
    -----
    With ``batch_size >= n_samples``, ``fit(X)`` is exactly ``n_iter`` calls of ``partial_fit(X)`` on a fresh
    learner with the same arguments. Arguments are checked by ``fit`` / ``partial_fit`` / ``transform``, not
    by the constructor (scikit-learn's convention); errors name the argument.

    References
    ----------
    K. Engan, S. O. Aase and J. H. Husøy, "Method of optimal directions for frame design", ICASSP 1999.
    M. Aharon, M. Elad and A. Bruckstein, "K-SVD: An algorithm for designing overcomplete dictionaries for
    sparse representation", IEEE Trans. Signal Processing 54(11), 2006.
    J. Mairal, F. Bach, J. Ponce and G. Sapiro, "Online dictionary learning for sparse coding", ICML 2009.
    J. Mairal, F. Bach, J. Ponce and G. Sapiro, "Online learning for matrix factorization and sparse coding",
    JMLR 11, 2010.

    Examples
    --------
    >>> import numpy as np
    >>> from sparsecore.pursuit import DictionaryLearner
    >>> rng = np.random.default_rng(0)
    >>> true = rng.standard_normal((8, 6))
    >>> codes = rng.standard_normal((500, 8)) * (rng.random((500, 8)) < 0.25)
    >>> X = codes @ true
    >>> dl = DictionaryLearner(8, n_nonzero_coefs=2, update="ksvd", n_iter=5, random_state=0).fit(X)
    >>> dl.components_.shape, dl.n_steps_
    ((8, 6), 10)
    >>> bool(dl.error_[-1] < dl.error_[0])
    True
    >>> dl.transform(X[:3]).shape
    (3, 8)
    """

    def __init__(
        self,
        n_atoms: int,
        *,
        coding: Literal["omp", "lasso"] = "omp",
        n_nonzero_coefs: int | None = None,
        alpha: float | None = None,
        update: Literal["mod", "ksvd"] = "mod",
        batch_size: int = 256,
        n_iter: int = 10,
        random_state: int | np.random.Generator | None = None,
        num_threads: int | None = None,
        forgetting: float = 16.0,
    ) -> None:
        self.n_atoms = n_atoms
        self.coding = coding
        self.n_nonzero_coefs = n_nonzero_coefs
        self.alpha = alpha
        self.update = update
        self.batch_size = batch_size
        self.n_iter = n_iter
        self.random_state = random_state
        self.num_threads = num_threads
        self.forgetting = forgetting

    # -- state -------------------------------------------------------------------------------------------------

    def _n_outputs(self) -> int:
        self._check_fitted()
        return int(self.components_.shape[0])

    def _check_fitted(self) -> None:
        if not hasattr(self, "components_"):
            raise NotFittedError(
                f"This {type(self).__name__} has no dictionary yet; call fit or partial_fit before using it"
            )

    def __sklearn_is_fitted__(self) -> bool:
        """Whether a dictionary exists (after ``fit`` or ``partial_fit``)."""
        return hasattr(self, "components_")

    def _reset(self) -> None:
        for name in ("components_", "n_features_in_", "n_iter_", "n_steps_", "error_", "_A", "_B", "_usage", "_gen"):
            self.__dict__.pop(name, None)

    def _check_x(self, data: ArrayLike) -> NDArray[Any]:
        x = _signals(data)
        if x.shape[0] == 0:
            raise ShapeMismatchError("X: has no signals")
        if x.shape[1] == 0:
            raise ShapeMismatchError("X: has no features")
        if not np.all(np.isfinite(x)):
            raise InvalidArgumentError("X: holds NaN or infinite values")
        if hasattr(self, "components_"):
            if x.shape[1] != self.n_features_in_:
                raise ShapeMismatchError(
                    f"X: has {x.shape[1]} features but the dictionary was learned with {self.n_features_in_}"
                )
            if x.dtype != self.components_.dtype:
                raise DTypeError(
                    f"X: is {x.dtype} but the dictionary was learned in {self.components_.dtype}; convert X "
                    "explicitly (sparsecore never changes the precision of your data)"
                )
        return x

    def _draw_atoms(self, x: NDArray[np.float64], count: int) -> NDArray[np.float64]:
        """``count`` distinct random signals of ``x`` scaled to unit norm, completed by Gaussian unit vectors."""
        norms = np.linalg.norm(x, axis=1)
        usable = np.flatnonzero(norms > 0)
        take = min(count, usable.size)
        picked = self._gen.choice(usable, size=take, replace=False) if take else np.empty(0, np.intp)
        atoms = x[picked] / norms[picked, None]
        if take < count:
            extra = self._gen.standard_normal((count - take, x.shape[1]))
            atoms = np.vstack([atoms, extra / np.linalg.norm(extra, axis=1, keepdims=True)])
        return np.asarray(atoms, dtype=np.float64)

    def _init(self, x: NDArray[Any], cfg: _Config) -> None:
        if not hasattr(self, "_gen"):
            self._gen = check_random_state(self.random_state)
        x64 = x.astype(np.float64)
        self.components_ = self._draw_atoms(x64, cfg.n_atoms).astype(x.dtype)
        self.n_features_in_ = int(x.shape[1])
        self.n_iter_ = 0
        self.n_steps_ = 0
        self.error_ = np.empty(0, dtype=np.float64)
        self._A = np.zeros((cfg.n_atoms, cfg.n_atoms))
        self._B = np.zeros((cfg.n_atoms, x.shape[1]))
        self._usage = np.zeros(cfg.n_atoms)

    def _code(self, x: NDArray[Any], cfg: _Config) -> NDArray[Any]:
        d = self.components_
        if cfg.coding == "omp":
            return np.asarray(omp(x, d, k=cfg.k, num_threads=cfg.num_threads))
        return np.asarray(lasso(x, d, alpha=cfg.alpha / d.shape[1], num_threads=cfg.num_threads))

    # -- one update --------------------------------------------------------------------------------------------

    def _step(self, x: NDArray[Any], cfg: _Config) -> None:
        if not hasattr(self, "components_"):
            self._init(x, cfg)
        elif self.components_.shape[0] != cfg.n_atoms:
            raise InvalidArgumentError(
                f"n_atoms: is {cfg.n_atoms} but the dictionary being learned has {self.components_.shape[0]} atoms; "
                "call fit to start over"
            )
        z = self._code(x, cfg).astype(np.float64)
        x64 = x.astype(np.float64)
        d = self.components_.astype(np.float64)
        residual = x64 - z @ d
        total = float(np.linalg.norm(x64))
        err = float(np.linalg.norm(residual)) / total if total > 0 else 0.0
        t = self.n_steps_ + 1
        beta = ((t - 1) / t) ** cfg.forgetting if cfg.forgetting else 1.0
        self._usage *= beta
        self._usage += np.count_nonzero(z, axis=0)
        if cfg.update == "mod":
            self._A *= beta
            self._B *= beta
            self._A += z.T @ z
            self._B += z.T @ x64
            d, degenerate = self._mod(self._A, self._B)
        else:
            degenerate = self._ksvd(z, d, residual)
        dead = np.flatnonzero(self._dead(d, (self._usage < 1.0) | degenerate))
        if dead.size:
            d[dead] = self._draw_atoms(x64, dead.size)
            self._A[dead, :] = 0.0
            self._A[:, dead] = 0.0
            self._B[dead] = 0.0
            self._usage[dead] = 0.0
        self.components_ = d.astype(x.dtype)
        self.n_steps_ += 1
        self.error_ = np.append(self.error_, err)

    def _dead(self, d: NDArray[np.float64], dead: NDArray[np.bool_]) -> NDArray[np.bool_]:
        """``dead`` plus the less used atom of every pair with ``|cos| > _DUPLICATE_COS`` (greedy, worst first)."""
        g = np.abs(d @ d.T)
        np.fill_diagonal(g, 0.0)
        g[dead, :] = 0.0
        g[:, dead] = 0.0
        while True:
            flat = int(np.argmax(g))
            i, j = divmod(flat, g.shape[1])
            if not g[i, j] > _DUPLICATE_COS:
                return dead
            victim = j if self._usage[j] < self._usage[i] else i
            dead[victim] = True
            g[victim, :] = 0.0
            g[:, victim] = 0.0

    @staticmethod
    def _mod(a: NDArray[np.float64], b: NDArray[np.float64]) -> tuple[NDArray[np.float64], NDArray[np.bool_]]:
        """``(A + λI)⁻¹ B`` with unit-norm rows, and which rows came out (numerically) zero."""
        n_atoms = a.shape[0]
        ridge = 1e-6 * max(float(np.trace(a)) / n_atoms, 1e-300)
        d = np.linalg.solve(a + ridge * np.eye(n_atoms), b)
        norms = np.linalg.norm(d, axis=1)
        degenerate = norms <= 1e-12 * max(float(norms.max()), 1e-300)
        d[~degenerate] /= norms[~degenerate, None]
        return d, degenerate

    @staticmethod
    def _ksvd(z: NDArray[np.float64], d: NDArray[np.float64], residual: NDArray[np.float64]) -> NDArray[np.bool_]:
        """K-SVD sweep over the atoms, in place on ``d``, ``z`` and ``residual``; returns degenerate atoms."""
        degenerate = np.zeros(d.shape[0], dtype=bool)
        for j in range(d.shape[0]):
            users = np.flatnonzero(z[:, j])
            if users.size == 0:
                continue  # no information on this atom in the batch: keep it
            e = residual[users] + np.outer(z[users, j], d[j])
            u, s, vt = np.linalg.svd(e, full_matrices=False)
            if not s[0] > 0:
                degenerate[j] = True
                continue
            atom, coef = vt[0], s[0] * u[:, 0]
            if atom @ d[j] < 0:
                atom, coef = -atom, -coef
            d[j] = atom
            z[users, j] = coef
            residual[users] = e - np.outer(coef, atom)
        return degenerate

    # -- estimator API -----------------------------------------------------------------------------------------

    def fit(self, X: ArrayLike, y: object = None) -> DictionaryLearner:
        """Learn a dictionary from scratch: ``n_iter`` passes over ``X`` in mini-batches of ``batch_size``.

        Parameters
        ----------
        X
            Training signals ``(n_samples, n_features)``, float32 or float64 (integers are read as float64).
        y
            Ignored (for pipelines).

        Returns
        -------
        self

        Raises
        ------
        InvalidArgumentError
            An argument outside its domain (the message names it), or non-finite ``X``.
        ShapeMismatchError, DTypeError
            ``X`` is not a non-empty 2-D float array.
        """
        self._reset()
        x = self._check_x(X)
        cfg = _Config(self, x.shape[1])
        n = x.shape[0]
        self._gen = check_random_state(self.random_state)
        for _ in range(cfg.n_iter):
            if n <= cfg.batch_size:
                self._step(x, cfg)
            else:
                order = self._gen.permutation(n)
                for start in range(0, n, cfg.batch_size):
                    self._step(x[order[start : start + cfg.batch_size]], cfg)
            self.n_iter_ += 1
        return self

    def partial_fit(self, X: ArrayLike, y: object = None) -> DictionaryLearner:
        """One update on the mini-batch ``X`` (initialising the dictionary from it on the first call).

        Parameters
        ----------
        X
            One mini-batch ``(n_signals, n_features)``; all of it is used, whatever ``batch_size``.
        y
            Ignored.

        Returns
        -------
        self

        Raises
        ------
        InvalidArgumentError, ShapeMismatchError, DTypeError
            As for :meth:`fit`; also ``X`` with other features or dtype than earlier batches.
        """
        x = self._check_x(X)
        cfg = _Config(self, x.shape[1])
        self._step(x, cfg)
        return self

    def transform(self, X: ArrayLike) -> NDArray[Any]:
        """Codes of ``X`` over the learned dictionary, with the learner's ``coding`` settings.

        Parameters
        ----------
        X
            Signals ``(n_signals, n_features)`` in the training dtype.

        Returns
        -------
        numpy.ndarray
            Dense codes ``(n_signals, n_atoms)``.

        Raises
        ------
        NotFittedError
            Before :meth:`fit` / :meth:`partial_fit`.
        """
        self._check_fitted()
        x = _signals(X)
        return self._code(x, _Config(self, x.shape[1]))

    def fit_transform(self, X: ArrayLike, y: object = None) -> NDArray[Any]:
        """:meth:`fit` then :meth:`transform` of the same signals.

        Returns
        -------
        numpy.ndarray
            Codes ``(n_samples, n_atoms)``.
        """
        return self.fit(X, y).transform(X)
