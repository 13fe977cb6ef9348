"""Torch-free SAE inference (``sparsecore.sae_cpu``) against numpy oracles, SAELens folders and torch.

Oracles: the dense pre-activation matrix by a float64 GEMM, then per row a stable sort (value descending, latent
ascending) for TopK, or the JumpReLU rule ``pre > threshold and pre > 0``. On integer-valued data every sum is
exact in float32, so codes must agree bit for bit, ties included; on float data values agree within a rounding
tolerance and indices up to near-ties.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from numpy.typing import NDArray
from sparsecore import SparseBatch
from sparsecore.exceptions import (
    DTypeError,
    IndexFormatError,
    InvalidArgumentError,
    NonFiniteError,
    ShapeMismatchError,
)
from sparsecore.sae_cpu import CFG_FILENAME, WEIGHTS_FILENAME, CpuSAE

F32 = NDArray[np.float32]

# ---------------------------------------------------------------------------------------------------------------
# Oracles and data
# ---------------------------------------------------------------------------------------------------------------


def make_weights(d_in: int, d_sae: int, seed: int, *, integer: bool = False) -> tuple[F32, F32, F32, F32, F32]:
    """W_enc, b_enc, W_dec, b_dec, threshold; small integers when ``integer`` (exact sums)."""
    rng = np.random.default_rng(seed)
    if integer:

        def draw(*shape: int, s: int) -> F32:
            return rng.integers(-s, s + 1, size=shape).astype(np.float32)

        return draw(d_in, d_sae, s=4), draw(d_sae, s=6), draw(d_sae, d_in, s=4), draw(d_in, s=3), draw(d_sae, s=6)
    w = (rng.standard_normal((d_in, d_sae)) / np.sqrt(d_in)).astype(np.float32)
    return (
        w,
        (0.1 * rng.standard_normal(d_sae)).astype(np.float32),
        np.ascontiguousarray(w.T),
        (0.2 * rng.standard_normal(d_in)).astype(np.float32),
        (0.3 * rng.random(d_sae)).astype(np.float32),
    )


def ref_pre(
    x: F32, w_enc: F32, b_enc: F32, b_dec: F32, s: float = 1.0, apply_b_dec: bool = True
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Pre-activations in float64 from the float32 centred input, and the error scale ``|a| @ |W| + |b|``."""
    a = x.astype(np.float32) * np.float32(s)
    if apply_b_dec:
        a = a - b_dec
    a64, w64 = a.astype(np.float64), w_enc.astype(np.float64)
    return a64 @ w64 + b_enc, np.abs(a64) @ np.abs(w64) + np.abs(b_enc.astype(np.float64))


def ref_topk(pre: NDArray[np.float64], k: int) -> SparseBatch:
    """ReLU, then the k best per row (value descending, ties to the lower latent), zeros dropped."""
    relu = np.maximum(pre, 0.0)
    order = np.argsort(-relu, axis=1, kind="stable")[:, :k]
    rows = []
    for r in range(pre.shape[0]):
        keep = np.sort(order[r][relu[r, order[r]] > 0])
        rows.append((keep, pre[r, keep]))
    return SparseBatch.from_pairs(rows, dim=pre.shape[1])


def ref_jumprelu(pre: NDArray[np.float64], threshold: F32) -> SparseBatch:
    keep = (pre > threshold) & (pre > 0)
    return SparseBatch.from_dense(np.where(keep, pre, 0.0).astype(np.float32))


def assert_same(a: SparseBatch, b: SparseBatch) -> None:
    assert a.shape == b.shape
    np.testing.assert_array_equal(a.indptr, b.indptr)
    np.testing.assert_array_equal(a.indices, b.indices)
    np.testing.assert_array_equal(a.data, b.data)


def assert_topk_close(got: SparseBatch, pre: NDArray[np.float64], scale: NDArray[np.float64], k: int) -> None:
    """Values within rounding of the exact pre-activations; anything left out is no better (beyond rounding)."""
    tol = 1e-5 * scale + 1e-30
    for r in range(pre.shape[0]):
        idx, val = got.row(r)
        assert len(idx) <= k
        assert np.all(np.diff(idx.astype(np.int64)) > 0)
        assert np.all(val > 0)
        np.testing.assert_array_less(np.abs(val - pre[r, idx]), tol[r, idx] + 1e-12)
        out = np.setdiff1d(np.arange(pre.shape[1]), idx)
        bar = 0.0 if len(idx) < k else max(0.0, float(np.min(pre[r, idx] - tol[r, idx])))
        assert np.all(pre[r, out] - tol[r, out] <= bar + 1e-30), f"row {r}: a better latent was left out"


# ---------------------------------------------------------------------------------------------------------------
# Against the numpy oracle
# ---------------------------------------------------------------------------------------------------------------

shapes = st.tuples(
    st.integers(0, 40),  # B
    st.integers(1, 24),  # d_in
    st.integers(1, 300),  # d_sae
    st.floats(0.0, 1.0),  # k as a fraction of d_sae
    st.integers(0, 2**32 - 1),  # seed
)
tiles = st.tuples(st.integers(1, 48), st.integers(1, 320))


@settings(max_examples=60, deadline=None)
@given(shapes, tiles, st.sampled_from([1, 2]), st.sampled_from([1.0, 2.0, 0.5]))
def test_integer_data_matches_reference_bit_for_bit(
    shape: tuple[int, int, int, float, int], tile: tuple[int, int], threads: int, s: float
) -> None:
    n, d_in, d_sae, kf, seed = shape
    k = 1 + int((d_sae - 1) * kf)
    w_enc, b_enc, w_dec, b_dec, thr = make_weights(d_in, d_sae, seed, integer=True)
    x = np.random.default_rng(seed + 1).integers(-5, 6, size=(n, d_in)).astype(np.float32)
    pre, _ = ref_pre(x, w_enc, b_enc, b_dec, s)
    topk = CpuSAE.from_arrays(w_enc, b_enc, w_dec, b_dec, k=k, act_scale=s)
    assert_same(topk.encode(x, num_threads=threads), ref_topk(pre, k))
    # Tile sizes are a core option: small tiles hit row and latent tile edges.
    ip, ix, dv = topk._core.encode_topk(x, k, num_threads=threads, tile_rows=tile[0], tile_cols=tile[1])
    assert_same(SparseBatch(ip, ix, dv, d_sae), ref_topk(pre, k))
    jump = CpuSAE.from_arrays(w_enc, b_enc, w_dec, b_dec, threshold=thr, act_scale=s)
    assert_same(jump.encode(x, num_threads=threads), ref_jumprelu(pre, thr))
    ip, ix, dv = jump._core.encode_jumprelu(x, num_threads=threads, tile_rows=tile[0], tile_cols=tile[1])
    assert_same(SparseBatch(ip, ix, dv, d_sae), ref_jumprelu(pre, thr))


@settings(max_examples=60, deadline=None)
@given(shapes, tiles)
def test_float_data_close_to_reference_and_independent_of_threads_and_tiles(
    shape: tuple[int, int, int, float, int], tile: tuple[int, int]
) -> None:
    n, d_in, d_sae, kf, seed = shape
    k = 1 + int((d_sae - 1) * kf)
    w_enc, b_enc, w_dec, b_dec, thr = make_weights(d_in, d_sae, seed)
    x = np.random.default_rng(seed + 1).standard_normal((n, d_in)).astype(np.float32)
    pre, scale = ref_pre(x, w_enc, b_enc, b_dec, 1.5)
    sae = CpuSAE.from_arrays(w_enc, b_enc, w_dec, b_dec, k=k, act_scale=1.5)
    one = sae.encode(x, num_threads=1)
    assert_topk_close(one, pre, scale, k)
    assert_same(sae.encode(x, num_threads=2), one)
    ip, ix, dv = sae._core.encode_topk(x, k, num_threads=2, tile_rows=tile[0], tile_cols=tile[1])
    assert_same(SparseBatch(ip, ix, dv, d_sae), one)
    jump = CpuSAE.from_arrays(w_enc, b_enc, w_dec, b_dec, threshold=thr, act_scale=1.5)
    j1 = jump.encode(x, num_threads=1)
    assert_same(jump.encode(x, num_threads=2), j1)
    # JumpReLU: every kept value is close to its pre-activation; decisions may differ only at the threshold.
    dense = j1.to_dense()
    margin = np.abs(pre - np.maximum(thr, 0)) > 1e-5 * scale
    want = (pre > thr) & (pre > 0)
    np.testing.assert_array_equal((dense != 0)[margin], want[margin])
    nz = dense != 0
    assert np.all(np.abs(dense[nz] - pre[nz]) <= 1e-5 * scale[nz] + 1e-30)


def test_argpartition_reference_on_a_larger_batch() -> None:
    """The plain numpy way (dense GEMM + argpartition) selects the same latents on tie-free data."""
    w_enc, b_enc, w_dec, b_dec, _ = make_weights(24, 2100, 7)
    x = np.random.default_rng(8).standard_normal((300, 24)).astype(np.float32)
    k = 16
    pre = (x - b_dec) @ w_enc + b_enc
    part = np.argpartition(-np.maximum(pre, 0), k - 1, axis=1)[:, :k]
    got = CpuSAE.from_arrays(w_enc, b_enc, w_dec, b_dec, k=k).encode(x, num_threads=2)
    for r in range(x.shape[0]):
        idx, val = got.row(r)
        np.testing.assert_array_equal(idx, np.sort(part[r]))
        np.testing.assert_allclose(val, pre[r, idx], rtol=1e-5, atol=1e-6)


def test_decode_matches_dense_product() -> None:
    w_enc, b_enc, w_dec, b_dec, _ = make_weights(20, 260, 3)
    x = np.random.default_rng(4).standard_normal((33, 20)).astype(np.float32)
    sae = CpuSAE.from_arrays(w_enc, b_enc, w_dec, b_dec, k=12, act_scale=0.75)
    codes = sae.encode(x)
    want = (codes.to_dense().astype(np.float64) @ w_dec + b_dec) / 0.75
    got = sae.decode(codes, num_threads=2)
    assert got.dtype == np.float32
    assert got.shape == (33, 20)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(sae.decode(codes, num_threads=1), got)


def test_apply_b_dec_to_input_false_and_one_row_input() -> None:
    w_enc, b_enc, w_dec, b_dec, _ = make_weights(6, 50, 5)
    x = np.random.default_rng(6).standard_normal(6)
    sae = CpuSAE.from_arrays(w_enc, b_enc, w_dec, b_dec, k=5, apply_b_dec_to_input=False)
    pre, scale = ref_pre(x[None, :].astype(np.float32), w_enc, b_enc, b_dec, apply_b_dec=False)
    assert_topk_close(sae.encode(x), pre, scale, 5)


def test_properties_and_repr() -> None:
    w_enc, b_enc, w_dec, b_dec, thr = make_weights(6, 50, 5)
    sae = CpuSAE.from_arrays(w_enc, b_enc, w_dec, b_dec, k=5, act_scale=2.0)
    assert (sae.d_in, sae.d_sae, sae.k, sae.architecture, sae.act_scale) == (6, 50, 5, "topk", 2.0)
    assert sae.nbytes == 4 * (2 * 6 * 50 + 50 + 6)
    assert repr(sae) == "CpuSAE(architecture='topk', d_in=6, d_sae=50, k=5, act_scale=2.0)"
    jump = CpuSAE.from_arrays(w_enc, b_enc, w_dec, b_dec, threshold=thr)
    assert (jump.k, jump.architecture) == (None, "jumprelu")
    assert jump.encode(np.zeros((0, 6))).shape == (0, 50)


# ---------------------------------------------------------------------------------------------------------------
# Typed errors
# ---------------------------------------------------------------------------------------------------------------


def test_bad_inputs_raise_typed_errors() -> None:
    w_enc, b_enc, w_dec, b_dec, thr = make_weights(6, 50, 5)
    sae = CpuSAE.from_arrays(w_enc, b_enc, w_dec, b_dec, k=5)
    with pytest.raises(ShapeMismatchError, match=r"^x: .*d_in"):
        sae.encode(np.zeros((3, 7)))
    with pytest.raises(ShapeMismatchError, match=r"^x: "):
        sae.encode(np.zeros((2, 3, 6)))
    bad = np.zeros((3, 6))
    bad[2, 4] = np.nan
    with pytest.raises(NonFiniteError, match=r"^x\[2, 4\] is not finite"):
        sae.encode(bad)
    bad[2, 4] = 1e300  # beyond float32
    with pytest.raises(NonFiniteError, match=r"^x\[2, 4\]"):
        sae.encode(bad)
    with pytest.raises(DTypeError, match=r"^x: "):
        sae.encode(np.array([["a"] * 6]))
    with pytest.raises(InvalidArgumentError, match=r"^k: "):
        CpuSAE.from_arrays(w_enc, b_enc, w_dec, b_dec, k=51)
    with pytest.raises(InvalidArgumentError, match=r"^k: "):
        CpuSAE.from_arrays(w_enc, b_enc, w_dec, b_dec, k=0)
    with pytest.raises(InvalidArgumentError, match=r"^k: "):
        CpuSAE.from_arrays(w_enc, b_enc, w_dec, b_dec, k=True)
    with pytest.raises(InvalidArgumentError, match="exactly one"):
        CpuSAE.from_arrays(w_enc, b_enc, w_dec, b_dec, k=5, threshold=thr)
    with pytest.raises(InvalidArgumentError, match="exactly one"):
        CpuSAE.from_arrays(w_enc, b_enc, w_dec, b_dec)
    with pytest.raises(ShapeMismatchError, match=r"^W_dec: "):
        CpuSAE.from_arrays(w_enc, b_enc, w_enc, b_dec, k=5)
    with pytest.raises(ShapeMismatchError, match=r"^b_enc: "):
        CpuSAE.from_arrays(w_enc, b_dec, w_dec, b_dec, k=5)
    with pytest.raises(ShapeMismatchError, match=r"^threshold: "):
        CpuSAE.from_arrays(w_enc, b_enc, w_dec, b_dec, threshold=thr[:3])
    w_bad = w_enc.copy()
    w_bad[1, 7] = np.inf
    with pytest.raises(NonFiniteError, match=r"^W_enc\[1, 7\] is not finite"):
        CpuSAE.from_arrays(w_bad, b_enc, w_dec, b_dec, k=5)
    with pytest.raises(NonFiniteError, match=r"^threshold\[0\]"):
        CpuSAE.from_arrays(w_enc, b_enc, w_dec, b_dec, threshold=np.r_[np.nan, thr[1:]])
    with pytest.raises(InvalidArgumentError, match=r"^act_scale: "):
        CpuSAE.from_arrays(w_enc, b_enc, w_dec, b_dec, k=5, act_scale=0.0)
    with pytest.raises(InvalidArgumentError, match=r"^num_threads: "):
        sae.encode(np.zeros((1, 6)), num_threads=0)
    with pytest.raises(ShapeMismatchError, match=r"^codes: "):
        sae.decode(SparseBatch.empty(2, 49))
    with pytest.raises(InvalidArgumentError, match=r"^codes: "):
        sae.decode(np.zeros((2, 50)))  # type: ignore[arg-type]
    # Finite input whose pre-activation overflows float32.
    huge = CpuSAE.from_arrays(np.full((2, 1), 3e38), np.zeros(1), np.zeros((1, 2)), np.zeros(2), k=1)
    with pytest.raises(NonFiniteError, match="overflow"):
        huge.encode(np.full((1, 2), 2.0))


# ---------------------------------------------------------------------------------------------------------------
# SAELens folders
# ---------------------------------------------------------------------------------------------------------------


def write_saelens(path: Path, cfg: dict[str, Any], tensors: dict[str, NDArray[Any]]) -> Path:
    safetensors_numpy = pytest.importorskip("safetensors.numpy")
    path.mkdir(parents=True, exist_ok=True)
    (path / CFG_FILENAME).write_text(json.dumps(cfg))
    safetensors_numpy.save_file({k: np.ascontiguousarray(v) for k, v in tensors.items()}, str(path / WEIGHTS_FILENAME))
    return path


def saelens_cfg(arch: str, d_in: int, d_sae: int, **extra: Any) -> dict[str, Any]:
    """A cfg.json as SAELens 6 writes it (``SAEConfig.to_dict``)."""
    return {
        "d_in": d_in,
        "d_sae": d_sae,
        "dtype": "float32",
        "device": "cpu",
        "apply_b_dec_to_input": True,
        "normalize_activations": "none",
        "reshape_activations": "none",
        "metadata": {"model_name": "gpt2", "hook_name": "blocks.0.hook_resid_pre"},
        "architecture": arch,
        **extra,
    }


def test_saelens_folder_loads_and_encodes_the_same(tmp_path: Path) -> None:
    w_enc, b_enc, w_dec, b_dec, thr = make_weights(12, 260, 9)
    x = np.random.default_rng(10).standard_normal((40, 12)).astype(np.float32)
    tensors = {"W_enc": w_enc, "b_enc": b_enc, "W_dec": w_dec, "b_dec": b_dec}
    topk_dir = write_saelens(tmp_path / "topk", saelens_cfg("topk", 12, 260, k=7), tensors)
    loaded = CpuSAE.load(topk_dir)
    assert (loaded.k, loaded.d_in, loaded.d_sae, loaded.architecture) == (7, 12, 260, "topk")
    assert_same(loaded.encode(x), CpuSAE.from_arrays(w_enc, b_enc, w_dec, b_dec, k=7).encode(x))
    jump_dir = write_saelens(tmp_path / "jump", saelens_cfg("jumprelu", 12, 260), {**tensors, "threshold": thr})
    jump = CpuSAE.from_arrays(w_enc, b_enc, w_dec, b_dec, threshold=thr)
    assert_same(CpuSAE.load(jump_dir).encode(x), jump.encode(x))
    # Older JumpReLU checkpoints store log_threshold; float16 weights are converted.
    log_dir = write_saelens(
        tmp_path / "log", saelens_cfg("jumprelu", 12, 260), {**tensors, "log_threshold": np.log(thr + 1e-3)}
    )
    assert CpuSAE.load(log_dir).encode(x).nnz > 0
    half = {k: v.astype(np.float16) for k, v in tensors.items()}
    half_dir = write_saelens(tmp_path / "half", saelens_cfg("topk", 12, 260, k=7), half)
    ref = CpuSAE.from_arrays(*(half[n].astype(np.float32) for n in ("W_enc", "b_enc", "W_dec", "b_dec")), k=7)
    assert_same(CpuSAE.load(half_dir).encode(x), ref.encode(x))
    no_center = write_saelens(tmp_path / "nc", saelens_cfg("topk", 12, 260, k=7, apply_b_dec_to_input=False), tensors)
    want = CpuSAE.from_arrays(w_enc, b_enc, w_dec, b_dec, k=7, apply_b_dec_to_input=False).encode(x)
    assert_same(CpuSAE.load(no_center, act_scale=1.0).encode(x), want)


def test_saelens_folder_errors(tmp_path: Path) -> None:
    w_enc, b_enc, w_dec, b_dec, _ = make_weights(4, 30, 1)
    tensors = {"W_enc": w_enc, "b_enc": b_enc, "W_dec": w_dec, "b_dec": b_dec}
    with pytest.raises(FileNotFoundError):
        CpuSAE.load(tmp_path / "nothing")
    d = write_saelens(tmp_path / "std", saelens_cfg("standard", 4, 30), tensors)
    with pytest.raises(InvalidArgumentError, match=r"^architecture: "):
        CpuSAE.load(d)
    d = write_saelens(tmp_path / "nok", saelens_cfg("topk", 4, 30), tensors)
    with pytest.raises(IndexFormatError, match="k"):
        CpuSAE.load(d)
    d = write_saelens(tmp_path / "bigk", saelens_cfg("topk", 4, 30, k=31), tensors)
    with pytest.raises(InvalidArgumentError, match=r"^k: "):
        CpuSAE.load(d)
    d = write_saelens(tmp_path / "shape", saelens_cfg("topk", 5, 30, k=3), tensors)
    with pytest.raises(ShapeMismatchError, match=r"^W_enc: "):
        CpuSAE.load(d)
    d = write_saelens(tmp_path / "nothr", saelens_cfg("jumprelu", 4, 30), tensors)
    with pytest.raises(IndexFormatError, match="threshold"):
        CpuSAE.load(d)
    d = write_saelens(tmp_path / "ln", saelens_cfg("topk", 4, 30, k=3, normalize_activations="layer_norm"), tensors)
    with pytest.raises(InvalidArgumentError, match=r"^normalize_activations: "):
        CpuSAE.load(d)
    (d / CFG_FILENAME).write_text("{not json")
    with pytest.raises(IndexFormatError, match="JSON"):
        CpuSAE.load(d)
    (d / CFG_FILENAME).write_text(json.dumps(saelens_cfg("topk", 4, 30, k=3)))
    (d / WEIGHTS_FILENAME).write_bytes(b"garbage")
    with pytest.raises(IndexFormatError, match="safetensors"):
        CpuSAE.load(d)


def test_missing_safetensors_names_the_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    w_enc, b_enc, w_dec, b_dec, _ = make_weights(4, 30, 1)
    d = write_saelens(
        tmp_path / "s",
        saelens_cfg("topk", 4, 30, k=3),
        {"W_enc": w_enc, "b_enc": b_enc, "W_dec": w_dec, "b_dec": b_dec},
    )
    monkeypatch.setitem(sys.modules, "safetensors.numpy", None)
    with pytest.raises(ImportError, match="pip install safetensors"):
        CpuSAE.load(d)


def test_imports_and_runs_without_torch() -> None:
    code = textwrap.dedent(
        """
        import sys
        sys.modules["torch"] = None  # any import of torch now fails
        import numpy as np
        from sparsecore.sae_cpu import CpuSAE
        w = np.eye(3, 5, dtype=np.float32)
        sae = CpuSAE.from_arrays(w, np.zeros(5), w.T, np.zeros(3), k=2)
        print(sae.encode(np.array([[3.0, 1.0, 2.0]])).to_dicts())
        """
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "[{0: 3.0, 2: 2.0}]"


# ---------------------------------------------------------------------------------------------------------------
# Against torch (skipped without it)
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("d_sae", [300, 2500])
def test_matches_torch_relu_linear_topk(d_sae: int) -> None:
    torch = pytest.importorskip("torch")
    w_enc, b_enc, w_dec, b_dec, thr = make_weights(24, d_sae, 11)
    x = np.random.default_rng(12).standard_normal((200, 24)).astype(np.float32)
    k = 16
    with torch.no_grad():
        sae_in = torch.from_numpy(x) * 1.5 - torch.from_numpy(b_dec)
        pre = torch.nn.functional.linear(sae_in, torch.from_numpy(w_enc).T, torch.from_numpy(b_enc))
        vals, ids = torch.topk(torch.relu(pre), k, dim=-1)
        jump = torch.relu(pre) * (pre > torch.from_numpy(thr))
    got = CpuSAE.from_arrays(w_enc, b_enc, w_dec, b_dec, k=k, act_scale=1.5).encode(x, num_threads=2)
    ids_np, vals_np, pre_np = ids.numpy(), vals.numpy(), pre.numpy()
    for r in range(x.shape[0]):
        order = np.argsort(ids_np[r])
        idx, val = got.row(r)
        np.testing.assert_array_equal(idx, ids_np[r][order])
        np.testing.assert_allclose(val, vals_np[r][order], rtol=1e-5, atol=1e-6)
    dense = CpuSAE.from_arrays(w_enc, b_enc, w_dec, b_dec, threshold=thr, act_scale=1.5).encode(x).to_dense()
    margin = np.abs(pre_np - np.maximum(thr, 0)) > 1e-5
    np.testing.assert_array_equal((dense != 0)[margin], (jump.numpy() != 0)[margin])
    np.testing.assert_allclose(dense, jump.numpy() * (dense != 0), rtol=1e-5, atol=1e-6)
