"""The Rust kernels of the sparse TopK training step against dense numpy, and the step against autograd."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from sparsecore import _core
from sparsecore import sae as S  # noqa: N812
from sparsecore.exceptions import InvalidArgumentError, ShapeMismatchError
from sparsecore.sae import _train as T  # noqa: N812


@st.composite
def _case(draw: st.DrawFn) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    n, k = draw(st.integers(0, 12)), draw(st.integers(1, 5))
    n_table, d = draw(st.integers(1, 20)), draw(st.integers(0, 40))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    idx = rng.integers(0, n_table, (n, k)).astype(np.int64)
    # small integers: every sum is exact in float32, whatever the order
    val = rng.integers(-8, 9, (n, k)).astype(np.float32)
    table = rng.integers(-4, 5, (n_table, d)).astype(np.float32)
    g = rng.integers(-3, 4, (n, d)).astype(np.float32)
    return idx, val, table, g


def _dense_codes(idx: np.ndarray, val: np.ndarray, n_cols: int) -> np.ndarray:
    codes = np.zeros((idx.shape[0], n_cols), np.float64)
    np.add.at(codes, (np.arange(idx.shape[0])[:, None].repeat(idx.shape[1], 1), idx), val)
    return codes


@settings(max_examples=60, deadline=None)
@given(_case(), st.sampled_from([1, 2]))
def test_gather_and_scatter_kernels_equal_dense_products(
    case: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray], threads: int
) -> None:
    idx, val, table, g = case
    codes = _dense_codes(idx, val, table.shape[0])  # duplicate indices in a row add up
    np.testing.assert_array_equal(_core.sae_gather_sum(idx, val, table, num_threads=threads), codes @ table)
    dots = (g.astype(np.float64) @ table.T.astype(np.float64))[np.arange(idx.shape[0])[:, None], idx]
    np.testing.assert_array_equal(_core.sae_gather_dot(idx, g, table, num_threads=threads), dots.reshape(idx.shape))
    np.testing.assert_array_equal(
        _core.sae_scatter_outer(idx, val, g, table.shape[0], num_threads=threads), codes.T @ g.astype(np.float64)
    )


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 10), st.integers(1, 400), st.integers(1, 40), st.integers(0, 2**32 - 1))
def test_topk_rows_equals_a_stable_sort(n: int, d: int, k: int, seed: int) -> None:
    k = min(k, d)
    pre = np.random.default_rng(seed).integers(-5, 6, (n, d)).astype(np.float32)  # many ties
    idx, val = _core.sae_topk_rows(pre, k)
    for r in range(n):
        order = sorted((j for j in range(d) if pre[r, j] > 0), key=lambda j: (-pre[r, j], j))[:k]
        order.sort()
        want_i = np.array(order + [0] * (k - len(order)), np.int64)
        np.testing.assert_array_equal(idx[r], want_i)
        np.testing.assert_array_equal(val[r], np.where(np.arange(k) < len(order), pre[r, want_i], 0))


def test_kernels_reject_bad_input_with_typed_errors() -> None:
    table = np.zeros((3, 2), np.float32)
    ones = np.ones((1, 2), np.float32)
    with pytest.raises(InvalidArgumentError, match=r"indices.*\[0, 1\] = 3"):
        _core.sae_gather_sum(np.array([[0, 3]]), ones, table)
    with pytest.raises(InvalidArgumentError, match="indices"):
        _core.sae_scatter_outer(np.array([[0, -1]]), ones, ones, 3)
    with pytest.raises(ShapeMismatchError, match="values"):
        _core.sae_gather_sum(np.array([[0, 1]]), np.ones((2, 2), np.float32), table)
    with pytest.raises(ShapeMismatchError, match="g"):
        _core.sae_gather_dot(np.array([[0, 1]]), np.ones((1, 3), np.float32), table)
    with pytest.raises(InvalidArgumentError, match="k"):
        _core.sae_topk_rows(np.ones((2, 4), np.float32), 5)


@pytest.mark.parametrize("k_dead", [0, 7])
def test_sparse_step_gradients_equal_autograd(k_dead: int) -> None:
    torch.manual_seed(0)
    sae = S.TopKSAE(24, 96, 5, seed=1)
    with torch.no_grad():
        sae.b_dec.normal_()
        sae.b_enc.normal_(std=0.3)  # some rows get fewer than k positive pre-activations
        sae.b_enc[:84] -= 30.0
    xs = torch.randn(50, 24) * 3
    dead = torch.zeros(96, dtype=torch.bool)
    dead[::3] = True
    dense, sparse = copy.deepcopy(sae), copy.deepcopy(sae)
    loss_d, fvu_d, fired_d, l0_d = T._dense_step(dense, xs, dead, k_dead, 1 / 32)
    loss_s, fvu_s, fired_s, l0_s = T._sparse_topk_step(sparse, xs, dead, k_dead, 1 / 32)
    assert loss_s == pytest.approx(loss_d, rel=1e-6)
    assert fvu_s == pytest.approx(fvu_d, rel=1e-6)
    assert l0_s == l0_d < 5  # the ReLU left some rows short of k
    assert torch.equal(fired_s, fired_d)
    for (name, p), q in zip(dense.named_parameters(), sparse.parameters(), strict=True):
        assert p.grad is not None
        assert q.grad is not None
        scale = float(p.grad.abs().max())
        assert scale > 0, name
        assert float((p.grad - q.grad).abs().max()) <= 1e-5 * scale, name


def test_sparse_and_dense_training_agree_and_the_switch_is_checked() -> None:
    torch.set_num_threads(1)
    x = torch.randn(2048, 24) @ torch.randn(24, 24)
    runs = []
    for sparse in (True, False):
        sae = S.TopKSAE(24, 64, 4, seed=3)
        hist = S.train(
            sae,
            [x[i : i + 256] for i in range(0, 2048, 256)],
            2048,
            batch_size=256,
            lr=3e-3,
            dead_tokens_threshold=512,
            _sparse=sparse,
        )
        runs.append((sae, hist))
    (a, ha), (b, hb) = runs
    for (name, p), q in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        torch.testing.assert_close(p, q, rtol=1e-3, atol=1e-4, msg=name)
    assert ha[-1]["fvu"] == pytest.approx(hb[-1]["fvu"], rel=1e-3)
    with pytest.raises(InvalidArgumentError, match="_sparse"):
        S.train(S.BatchTopKSAE(24, 64, 4), [x[:256]], 256, _sparse=True)
