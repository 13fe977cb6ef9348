"""``SPARSECORE_SIMD=off``: the portable loops give the SIMD paths' results.

The level is read once per process, so each path runs in its own subprocess on the same inputs and the outputs
are compared here. Bit for bit where both paths add in the same order (sparse ops, SDR memory, the index's ids and
approximate-search bounds); within a stated tolerance where the SIMD path fuses multiply-adds or sums in other
lanes (the index's document scores: AVX-512 sums in 16 lanes, the portable loop in 4; the pursuits and Losse's
ridge regression use FMA and matrixmultiply's kernels).
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import sparsecore
from sparsecore import _core
from sparsecore.exceptions import InvalidArgumentError

LEVELS = {"avx512", "avx2+fma", "avx2", "scalar"}

# Relative tolerances of the outputs whose order of operations differs between the paths (float32 scores of
# ~100-term dot products: a few ulps; float64 pursuits and ridge solves: rounding of well-conditioned solves).
RTOL_F32 = 1e-5
RTOL_F64 = 1e-9

WORKER = textwrap.dedent(
    """
    import sys

    import numpy as np

    import sparsecore as sc
    from sparsecore import lsse, pursuit, sdr

    out = {"level": np.array(sc.simd_level())}
    rng = np.random.default_rng(7)

    # sparse: SPLADE-like documents and queries
    dim = 3000
    def batch(n, nnz):
        rows = []
        for _ in range(n):
            cols = np.unique(rng.integers(0, dim, nnz))
            rows.append((cols, rng.lognormal(0.0, 0.7, cols.size)))
        return sc.SparseBatch.from_pairs(rows, dim)
    docs, queries = batch(3000, 60), batch(40, 12)
    ids, scores = queries.scores_top_k(docs, 10)
    out["sparse_ids"], out["sparse_scores"] = ids, scores
    out["sparse_dot"] = docs.dot(docs)

    # index: exact and approximate search, one-query path
    index = sc.InvertedIndex.build(docs)
    for name, kw in (("exact", {"recall_target": 1.0}), ("approx", {})):
        i, s = index.search(queries, k=10, **kw)
        out[f"index_{name}_ids"], out[f"index_{name}_scores"] = i, s
    i1, s1 = index.search_one(*queries.row(0), k=10)
    out["index_one_ids"], out["index_one_scores"] = i1, s1

    # pursuit, float64 and float32
    d = rng.standard_normal((96, 40))
    d /= np.linalg.norm(d, axis=1, keepdims=True)
    x = rng.standard_normal((60, 40))
    for dt in (np.float64, np.float32):
        tag = np.dtype(dt).name
        out[f"omp_{tag}"] = pursuit.omp(x.astype(dt), d.astype(dt), k=8)
        out[f"mp_{tag}"] = pursuit.mp(x.astype(dt), d.astype(dt), k=8)
        out[f"lasso_{tag}"] = pursuit.lasso(x.astype(dt), d.astype(dt), alpha=0.05)

    # lsse: encoder and online ridge regression
    xs = rng.standard_normal((400, 6))
    y = np.sin(xs).sum(axis=1)
    enc = lsse.LsseEncoder(6, num_groups=8, num_bins=3, bin_dim=2, seed=1)
    phi = enc.encode(xs)
    out["lsse_indices"], out["lsse_data"] = phi.indices, phi.data
    ridge = lsse.OnlineRidge(phi.dim, ridge=1.0)
    ridge.partial_fit(phi, y)
    out["ridge_pred"] = ridge.predict(phi)

    # sdr: a coding field learns and recognises
    inputs = sdr.SDRBatch.random(50, 400, 20, seed=3)
    field = sdr.CodingField(400, n_modules=12, cells_per_module=8, seed=5)
    out["sdr_learn"] = field.learn(inputs)
    out["sdr_recognize"] = field.recognize(sdr.add_noise(inputs, 0.1, seed=4))

    np.savez(sys.argv[1], **out)
    """
)


def run_worker(tmp_path: Path, simd: str) -> dict[str, np.ndarray]:
    env = {**os.environ, "SPARSECORE_SIMD": simd, "SPARSECORE_NUM_THREADS": "2"}
    path = tmp_path / f"{simd}.npz"
    proc = subprocess.run(
        [sys.executable, "-c", WORKER, str(path)], env=env, capture_output=True, text=True, timeout=600, check=False
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    with np.load(path) as z:
        return {k: z[k] for k in z.files}


@pytest.fixture(scope="module")
def both(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    tmp = tmp_path_factory.mktemp("simd")
    return run_worker(tmp, "auto"), run_worker(tmp, "off")


def test_level_in_this_process() -> None:
    level = _core.simd_level()
    assert level in LEVELS
    assert sparsecore.simd_level() == level
    if os.environ.get("SPARSECORE_SIMD", "").strip().lower() == "off":
        assert level == "scalar"


def test_off_reports_scalar_and_a_bad_value_is_named(tmp_path: Path) -> None:
    code = "import sparsecore; print(sparsecore.simd_level())"
    for value in ("off", "OFF", " scalar ", "0"):
        env = {**os.environ, "SPARSECORE_SIMD": value}
        proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
        assert proc.stdout.strip() == "scalar", value
    env = {**os.environ, "SPARSECORE_SIMD": "avx9"}
    code = (
        "import sparsecore\n"
        "from sparsecore.exceptions import InvalidArgumentError\n"
        "try:\n    sparsecore.simd_level()\n"
        "except InvalidArgumentError as e:\n    print('ERR', e)\n"
        # the kernels still run (the portable loops) when the value is unknown
        "b = sparsecore.SparseBatch.from_dicts([{1: 2.0}], dim=4)\nprint(b.dot(b)[0])\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert "ERR SPARSECORE_SIMD" in proc.stdout, proc.stdout
    assert "avx9" in proc.stdout, proc.stdout
    assert proc.stdout.strip().endswith("4.0")
    assert issubclass(InvalidArgumentError, ValueError)


def test_off_path_is_scalar_and_auto_is_detected(both: tuple[dict[str, np.ndarray], dict[str, np.ndarray]]) -> None:
    auto, off = both
    assert str(off["level"]) == "scalar"
    assert str(auto["level"]) in LEVELS


@pytest.mark.parametrize(
    "key",
    ["sparse_ids", "sparse_scores", "sparse_dot", "lsse_indices", "lsse_data", "sdr_learn", "sdr_recognize"],
)
def test_bit_identical(both: tuple[dict[str, np.ndarray], dict[str, np.ndarray]], key: str) -> None:
    auto, off = both
    np.testing.assert_array_equal(off[key], auto[key])


@pytest.mark.parametrize("name", ["exact", "approx", "one"])
def test_index_same_ids_scores_within_rounding(
    both: tuple[dict[str, np.ndarray], dict[str, np.ndarray]], name: str
) -> None:
    auto, off = both
    ids_a, ids_o = auto[f"index_{name}_ids"], off[f"index_{name}_ids"]
    s_a, s_o = auto[f"index_{name}_scores"], off[f"index_{name}_scores"]
    np.testing.assert_allclose(s_o, s_a, rtol=RTOL_F32)
    # the same documents, in the same order except among scores equal to within rounding
    same = ids_a == ids_o
    near_tie = np.isclose(s_a, np.roll(s_a, 1, axis=-1), rtol=RTOL_F32) | np.isclose(
        s_a, np.roll(s_a, -1, axis=-1), rtol=RTOL_F32
    )
    assert np.all(same | near_tie), np.argwhere(~(same | near_tie))
    assert np.array_equal(np.sort(ids_a, axis=-1), np.sort(ids_o, axis=-1))


@pytest.mark.parametrize("key", ["omp", "mp", "lasso"])
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_pursuit_within_rounding(
    both: tuple[dict[str, np.ndarray], dict[str, np.ndarray]], key: str, dtype: str
) -> None:
    auto, off = both
    a, o = auto[f"{key}_{dtype}"], off[f"{key}_{dtype}"]
    assert a.dtype == o.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(a != 0, o != 0)  # the same supports
    rtol = RTOL_F64 if dtype == "float64" else RTOL_F32 * 10
    np.testing.assert_allclose(o, a, rtol=rtol, atol=rtol * np.abs(a).max())


def test_ridge_within_rounding(both: tuple[dict[str, np.ndarray], dict[str, np.ndarray]]) -> None:
    auto, off = both
    np.testing.assert_allclose(off["ridge_pred"], auto["ridge_pred"], rtol=RTOL_F64, atol=RTOL_F64)
