"""Type stubs of the Rust extension ``sparsecore._core`` (private API; use :mod:`sparsecore`)."""

from typing import Any, TypeAlias, final

import numpy as np
from numpy.typing import NDArray

_Csr: TypeAlias = tuple[NDArray[np.int64], NDArray[np.uint32], NDArray[np.float32], int]
_CsrArrays: TypeAlias = tuple[NDArray[np.int64], NDArray[np.uint32], NDArray[np.float32]]

__all__ = [
    "BuildProgress",
    "IndexCore",
    "OnlineRidgeCore",
    "__version__",
    "canonicalize",
    "check",
    "concat",
    "default_num_threads",
    "dequantize",
    "from_dense",
    "is_canonical",
    "lsse_encode",
    "matmul_dense",
    "prune_mass",
    "pursuit_greedy",
    "pursuit_lasso",
    "pursuit_threshold",
    "quantize",
    "row_dot",
    "scores_dense",
    "scores_top_k",
    "take_rows",
    "threshold",
    "to_dense",
    "top_k",
]

__version__: str

def default_num_threads() -> int: ...
def check(a: _Csr, sorted: bool = True, content: bool = True, num_threads: int | None = None) -> None: ...
def is_canonical(a: _Csr, num_threads: int | None = None) -> bool: ...
def canonicalize(
    a: _Csr, duplicates: str = "sum", drop_zeros: bool = False, num_threads: int | None = None
) -> _CsrArrays: ...
def top_k(a: _Csr, k: int, by_magnitude: bool = False, num_threads: int | None = None) -> _CsrArrays: ...
def threshold(a: _Csr, t: float, by_magnitude: bool = False, num_threads: int | None = None) -> _CsrArrays: ...
def prune_mass(a: _Csr, fraction: float, num_threads: int | None = None) -> _CsrArrays: ...
def row_dot(a: _Csr, b: _Csr, num_threads: int | None = None) -> NDArray[np.float32]: ...
def scores_dense(a: _Csr, b: _Csr, num_threads: int | None = None) -> NDArray[np.float32]: ...
def scores_top_k(
    a: _Csr, b: _Csr, k: int, num_threads: int | None = None
) -> tuple[NDArray[np.int64], NDArray[np.float32]]: ...
def matmul_dense(a: _Csr, m: NDArray[np.float32], num_threads: int | None = None) -> NDArray[np.float32]: ...
def to_dense(a: _Csr, num_threads: int | None = None) -> NDArray[np.float32]: ...
def from_dense(x: NDArray[np.float32], num_threads: int | None = None) -> _CsrArrays: ...
def quantize(
    a: _Csr, bits: int, num_threads: int | None = None
) -> tuple[NDArray[np.uint8] | NDArray[np.uint16], float, float]: ...
def dequantize(
    codes: NDArray[np.uint8] | NDArray[np.uint16], scale: float, offset: float, num_threads: int | None = None
) -> NDArray[np.float32]: ...
def take_rows(a: _Csr, rows: NDArray[np.uint64], num_threads: int | None = None) -> _CsrArrays: ...
def concat(parts: list[_Csr]) -> _CsrArrays: ...

# Sparse coding: codes come back dense (n_signals, n_atoms) or as CSR (indptr, indices, data, n_atoms).
def pursuit_greedy(
    method: str,
    x: NDArray[np.floating],
    d: NDArray[np.floating],
    k: int,
    tol: float | None = None,
    gram: NDArray[np.floating] | None = None,
    nonneg: bool = False,
    dense: bool = False,
    *,
    num_threads: int | None = None,
) -> Any: ...
def pursuit_lasso(
    x: NDArray[np.floating],
    d: NDArray[np.floating],
    alpha: float,
    method: str,
    max_iter: int,
    tol: float,
    gram: NDArray[np.floating] | None = None,
    nonneg: bool = False,
    dense: bool = False,
    *,
    num_threads: int | None = None,
) -> tuple[Any, int, int]: ...
def pursuit_threshold(
    x: NDArray[np.floating],
    d: NDArray[np.floating],
    alpha: float,
    nonneg: bool = False,
    dense: bool = False,
    *,
    num_threads: int | None = None,
) -> Any: ...

@final
class BuildProgress:
    def __new__(cls) -> BuildProgress: ...
    def get(self) -> tuple[int, int]: ...

@final
class IndexCore:
    @staticmethod
    def build(
        docs: _Csr,
        ids: NDArray[np.int64] | None = None,
        block_size: int = 32,
        reorder: bool = True,
        num_threads: int | None = None,
        progress: BuildProgress | None = None,
    ) -> IndexCore: ...
    def search(
        self,
        queries: _Csr,
        k: int,
        alpha: float = 1.0,
        beta: float = 1.0,
        allow_ids: NDArray[np.int64] | None = None,
        allow_mask: NDArray[np.bool_] | None = None,
        num_threads: int | None = None,
    ) -> tuple[NDArray[np.int64], NDArray[np.float32]]: ...
    def search_one(
        self,
        indices: NDArray[np.uint32],
        values: NDArray[np.float32],
        k: int,
        alpha: float = 1.0,
        beta: float = 1.0,
        allow_ids: NDArray[np.int64] | None = None,
        allow_mask: NDArray[np.bool_] | None = None,
    ) -> tuple[NDArray[np.int64], NDArray[np.float32]]: ...
    def explain_one(
        self, indices: NDArray[np.uint32], values: NDArray[np.float32], k: int, alpha: float = 1.0, beta: float = 1.0
    ) -> dict[str, int]: ...
    def add(
        self, docs: _Csr, ids: NDArray[np.int64] | None = None, num_threads: int | None = None
    ) -> NDArray[np.int64]: ...
    def delete(self, ids: NDArray[np.int64], ignore_missing: bool = False) -> int: ...
    def compact(self, num_threads: int | None = None) -> None: ...
    def memory_usage(self) -> dict[str, int]: ...
    def ids(self) -> NDArray[np.int64]: ...
    def contains(self, id: int) -> bool: ...
    def __len__(self) -> int: ...
    def save(self, path: str) -> None: ...
    @staticmethod
    def load(path: str, mmap: bool = True, num_threads: int | None = None) -> IndexCore: ...
    @property
    def is_file_backed(self) -> bool: ...
    @property
    def dim(self) -> int: ...
    @property
    def n_segments(self) -> int: ...
    @property
    def block_size(self) -> int: ...

def lsse_encode(
    x: NDArray[np.float32] | NDArray[np.float64],
    proj: NDArray[np.float64],
    num_groups: int,
    bin_dim: int,
    num_bins: int,
    *,
    num_threads: int | None = None,
) -> _CsrArrays: ...
@final
class OnlineRidgeCore:
    def __new__(cls, dim: int, n_outputs: int, ridge: float, update: str = "block") -> OnlineRidgeCore: ...
    def partial_fit(self, phi: _Csr, y: NDArray[np.float64], num_threads: int | None = None) -> None: ...
    def predict(self, phi: _Csr, num_threads: int | None = None) -> NDArray[np.float64]: ...
    def solve_exact(
        self, tol: float = 1e-10, max_iter: int = 10_000, num_threads: int | None = None
    ) -> tuple[int, float]: ...
    def set_ridge(self, ridge: float) -> None: ...
    def copy(self) -> OnlineRidgeCore: ...
    def state(self) -> dict[str, Any]: ...
    @staticmethod
    def from_state(
        dim: int,
        n_outputs: int,
        ridge: float,
        update: str,
        n_seen: int,
        features: NDArray[np.uint32],
        a_indptr: NDArray[np.int64],
        a_indices: NDArray[np.uint32],
        a_data: NDArray[np.float64],
        b: NDArray[np.float64],
        w: NDArray[np.float64],
    ) -> OnlineRidgeCore: ...
    def memory_usage(self) -> list[tuple[str, int]]: ...
    @property
    def dim(self) -> int: ...
    @property
    def n_outputs(self) -> int: ...
    @property
    def ridge(self) -> float: ...
    @property
    def update(self) -> str: ...
    @property
    def n_seen(self) -> int: ...
    @property
    def n_active_features(self) -> int: ...
    @property
    def nnz(self) -> int: ...
