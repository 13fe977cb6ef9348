"""Type stubs of the Rust extension ``sparsecore._core`` (private API; use :mod:`sparsecore`)."""

from typing import Any, Literal, TypeAlias, final

import numpy as np
from numpy.typing import NDArray

_Csr: TypeAlias = tuple[NDArray[np.int64], NDArray[np.uint32], NDArray[np.float32], int]
_CsrArrays: TypeAlias = tuple[NDArray[np.int64], NDArray[np.uint32], NDArray[np.float32]]

__all__ = [
    "BuildProgress",
    "DenseBuffer",
    "FieldCore",
    "IndexCore",
    "KnnCore",
    "NetworkCore",
    "OnlineRidgeCore",
    "SaeEncoderCore",
    "__version__",
    "canonicalize",
    "check",
    "concat",
    "container_read",
    "container_write",
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
    "recycle_kept_bytes",
    "recycle_release",
    "row_dot",
    "sae_gather_dot",
    "sae_gather_sum",
    "sae_scatter_outer",
    "sae_topk_rows",
    "scores_dense",
    "scores_top_k",
    "sdr_add_noise",
    "sdr_category_encode",
    "sdr_grid_encode",
    "sdr_overlap",
    "sdr_random",
    "sdr_scalar_encode",
    "sdr_setop",
    "simd_level",
    "take_rows",
    "threshold",
    "to_dense",
    "top_k",
]

__version__: str

def default_num_threads() -> int: ...
def simd_level() -> Literal["avx512", "avx2+fma", "avx2", "scalar"]: ...
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
def sae_gather_sum(
    indices: NDArray[np.int64], values: NDArray[np.float32], table: NDArray[np.float32], num_threads: int | None = None
) -> NDArray[np.float32]: ...
def sae_gather_dot(
    indices: NDArray[np.int64], g: NDArray[np.float32], table: NDArray[np.float32], num_threads: int | None = None
) -> NDArray[np.float32]: ...
def sae_scatter_outer(
    indices: NDArray[np.int64],
    coef: NDArray[np.float32],
    src: NDArray[np.float32],
    n_out: int,
    num_threads: int | None = None,
) -> NDArray[np.float32]: ...
def sae_topk_rows(
    pre: NDArray[np.float32], k: int, num_threads: int | None = None
) -> tuple[NDArray[np.int64], NDArray[np.float32]]: ...
def container_write(
    path: str, kind: str, kind_version: int, meta: str, sections: list[tuple[str, int, list[int], bytes]]
) -> None: ...
def container_read(path: str, kind: str) -> tuple[int, str, list[tuple[str, int, list[int], NDArray[np.uint8]]]]: ...
def recycle_release() -> int: ...
def recycle_kept_bytes() -> int: ...

@final
class DenseBuffer: ...

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
        patience: float = 0.0,
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
        patience: float = 0.0,
        allow_ids: NDArray[np.int64] | None = None,
        allow_mask: NDArray[np.bool_] | None = None,
    ) -> tuple[NDArray[np.int64], NDArray[np.float32]]: ...
    def explain_one(
        self,
        indices: NDArray[np.uint32],
        values: NDArray[np.float32],
        k: int,
        alpha: float = 1.0,
        beta: float = 1.0,
        patience: float = 0.0,
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
    def load(path: str, mmap: bool = True, num_threads: int | None = None, verify: bool = True) -> IndexCore: ...
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
class SaeEncoderCore:
    def __new__(
        cls,
        w_enc: NDArray[np.float32],
        b_enc: NDArray[np.float32],
        w_dec: NDArray[np.float32],
        b_dec: NDArray[np.float32],
        threshold: NDArray[np.float32] | None = None,
        act_scale: float = 1.0,
        apply_b_dec_to_input: bool = True,
    ) -> SaeEncoderCore: ...
    def encode_topk(
        self,
        x: NDArray[np.float32],
        k: int,
        num_threads: int | None = None,
        tile_rows: int | None = None,
        tile_cols: int | None = None,
    ) -> _CsrArrays: ...
    def encode_jumprelu(
        self,
        x: NDArray[np.float32],
        num_threads: int | None = None,
        tile_rows: int | None = None,
        tile_cols: int | None = None,
    ) -> _CsrArrays: ...
    def decode(self, codes: _Csr, num_threads: int | None = None) -> NDArray[np.float32]: ...
    @property
    def d_in(self) -> int: ...
    @property
    def d_sae(self) -> int: ...
    @property
    def act_scale(self) -> float: ...
    @property
    def apply_b_dec_to_input(self) -> bool: ...
    @property
    def has_threshold(self) -> bool: ...
    @property
    def nbytes(self) -> int: ...

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
    def n_unconverged(self) -> int: ...
    @property
    def nnz(self) -> int: ...

# SDR memory: SDR batches travel as (indptr int64, indices uint32) + dim; codes as (n, Q) int32 winners (-1 silent).
_Sdr: TypeAlias = tuple[NDArray[np.int64], NDArray[np.uint32]]
_FieldParams: TypeAlias = tuple[int, int, float, float, float, float, float, int, float]

def sdr_overlap(
    a_indptr: NDArray[np.int64],
    a_indices: NDArray[np.uint32],
    b_indptr: NDArray[np.int64],
    b_indices: NDArray[np.uint32],
    dim: int,
    num_threads: int | None = None,
) -> NDArray[np.uint32]: ...
def sdr_setop(
    op: str,
    a_indptr: NDArray[np.int64],
    a_indices: NDArray[np.uint32],
    b_indptr: NDArray[np.int64],
    b_indices: NDArray[np.uint32],
    dim: int,
    num_threads: int | None = None,
) -> _Sdr: ...
def sdr_add_noise(
    indptr: NDArray[np.int64],
    indices: NDArray[np.uint32],
    dim: int,
    fraction: float,
    seed: int,
    num_threads: int | None = None,
) -> _Sdr: ...
def sdr_random(n: int, dim: int, n_active: int, seed: int, num_threads: int | None = None) -> _Sdr: ...
def sdr_scalar_encode(
    values: NDArray[np.float64],
    minimum: float,
    maximum: float,
    size: int,
    n_active: int,
    periodic: bool,
    clip: bool,
    num_threads: int | None = None,
) -> _Sdr: ...
def sdr_category_encode(
    labels: NDArray[np.int64], n_categories: int, n_active: int, num_threads: int | None = None
) -> _Sdr: ...
def sdr_grid_encode(
    positions: NDArray[np.float64], periods: NDArray[np.float64], side: int, seed: int, num_threads: int | None = None
) -> _Sdr: ...

@final
class FieldCore:
    def __new__(cls, input_dim: int, params: _FieldParams, sequence: bool, seed: int) -> FieldCore: ...
    def learn(
        self, indptr: NDArray[np.int64], indices: NDArray[np.uint32], num_threads: int | None = None
    ) -> NDArray[np.int32]: ...
    def recognize(
        self, indptr: NDArray[np.int64], indices: NDArray[np.uint32], num_threads: int | None = None
    ) -> NDArray[np.int32]: ...
    def familiarity(
        self, indptr: NDArray[np.int64], indices: NDArray[np.uint32], num_threads: int | None = None
    ) -> NDArray[np.float64]: ...
    def support(self, x: NDArray[np.uint32]) -> NDArray[np.float64]: ...
    def learn_sequence(self, indptr: NDArray[np.int64], indices: NDArray[np.uint32]) -> NDArray[np.int32]: ...
    def recall_sequence(self, first: NDArray[np.uint32], n_steps: int) -> NDArray[np.int32]: ...
    def eta(self, g: float) -> float: ...
    def mu(self, v: float, g: float) -> float: ...
    def set_frozen(self, frozen: bool) -> None: ...
    def info(self) -> tuple[int, _FieldParams, bool, int, bool, float]: ...
    def to_bytes(self) -> bytes: ...
    @staticmethod
    def from_bytes(data: bytes) -> FieldCore: ...

@final
class NetworkCore:
    def __new__(
        cls, input_dim: int, levels: list[tuple[_FieldParams, list[list[int]]]], sequence: bool, seed: int
    ) -> NetworkCore: ...
    def learn(
        self, indptr: NDArray[np.int64], indices: NDArray[np.uint32], num_threads: int | None = None
    ) -> list[NDArray[np.int32]]: ...
    def recognize(
        self, indptr: NDArray[np.int64], indices: NDArray[np.uint32], num_threads: int | None = None
    ) -> list[NDArray[np.int32]]: ...
    def familiarity(
        self, indptr: NDArray[np.int64], indices: NDArray[np.uint32], num_threads: int | None = None
    ) -> NDArray[np.float64]: ...
    def learn_sequence(
        self, indptr: NDArray[np.int64], indices: NDArray[np.uint32], num_threads: int | None = None
    ) -> list[NDArray[np.int32]]: ...
    def recall_sequence(self, first: NDArray[np.uint32], n_steps: int) -> list[NDArray[np.int32]]: ...
    def set_frozen(self, frozen: bool) -> None: ...
    def info(self) -> tuple[int, list[int], int, list[float], list[bool]]: ...
    def to_bytes(self) -> bytes: ...
    @staticmethod
    def from_bytes(data: bytes) -> NetworkCore: ...

@final
class KnnCore:
    def __new__(cls, codes: NDArray[np.int32], labels: NDArray[np.uint32], n_classes: int) -> KnnCore: ...
    def predict_scores(
        self, codes: NDArray[np.int32], k: int, cosine: bool, power: float, num_threads: int | None = None
    ) -> NDArray[np.float64]: ...
    def __len__(self) -> int: ...
