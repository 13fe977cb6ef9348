"""Training losses of ``sparsecore.torch``: values against naive loops, gradients, warm-up schedule, typed errors."""

from __future__ import annotations

import math
import subprocess
import sys
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from numpy.typing import NDArray
from sparsecore.exceptions import DTypeError, InvalidArgumentError, NonFiniteError, ShapeMismatchError
from sparsecore.torch import (
    RegularizationWarmup,
    contrastive_loss,
    flops_loss,
    idf_weighted_scores,
    l1_loss,
)

# torch warns (once per process) that sparse CSR support is in beta when the test code builds such tensors.
pytestmark = pytest.mark.filterwarnings("ignore:Sparse CSR tensor support is in beta state:UserWarning")

TOL = 1e-10
F64 = torch.float64


def _rand(seed: int, *shape: int, zero_frac: float = 0.0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    t = torch.randn(*shape, generator=g, dtype=F64)
    if zero_frac > 0:
        t[torch.rand(*shape, generator=g, dtype=F64) < zero_frac] = 0.0
    return t


def _away_from_zero(seed: int, *shape: int) -> torch.Tensor:
    """Random entries with |w| in [0.5, 1.5] and random signs, so |.| is differentiable with a margin."""
    g = torch.Generator().manual_seed(seed)
    mag = 0.5 + torch.rand(*shape, generator=g, dtype=F64)
    sign = torch.where(torch.rand(*shape, generator=g, dtype=F64) < 0.5, -1.0, 1.0).to(F64)
    return mag * sign


def _naive_flops(w: NDArray[Any]) -> float:
    n, v = w.shape
    total = 0.0
    for j in range(v):
        s = 0.0
        for i in range(n):
            s += abs(float(w[i, j]))
        total += (s / n) ** 2
    return total


def _naive_l1(w: NDArray[Any]) -> float:
    n, v = w.shape
    return float(sum(abs(float(w[i, j])) for i in range(n) for j in range(v)) / n)


# values


@pytest.mark.parametrize(("seed", "n", "v"), [(0, 1, 1), (1, 3, 7), (2, 16, 50), (3, 5, 200)])
def test_flops_loss_matches_naive_loop(seed: int, n: int, v: int) -> None:
    w = _rand(seed, n, v, zero_frac=0.3)
    got = flops_loss(w)
    assert got.dim() == 0
    assert got.dtype == F64
    assert abs(float(got) - _naive_flops(w.numpy())) <= TOL * max(1.0, abs(float(got)))


@pytest.mark.parametrize(("seed", "n", "v"), [(0, 1, 1), (1, 3, 7), (2, 16, 50), (3, 5, 200)])
def test_l1_loss_matches_naive_loop(seed: int, n: int, v: int) -> None:
    w = _rand(seed, n, v, zero_frac=0.3)
    got = l1_loss(w)
    assert got.dim() == 0
    assert abs(float(got) - _naive_l1(w.numpy())) <= TOL * max(1.0, abs(float(got)))


def test_flops_differs_from_l1_squared_and_prefers_spread_activations() -> None:
    # Same total mass, concentrated on one term vs spread over two: FLOPS penalises concentration, L1 does not.
    concentrated = torch.tensor([[1.0, 0.0], [1.0, 0.0]], dtype=F64)
    spread = torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=F64)
    assert float(l1_loss(concentrated)) == float(l1_loss(spread)) == 1.0
    assert float(flops_loss(concentrated)) == 1.0
    assert float(flops_loss(spread)) == 0.5


@pytest.mark.parametrize("layout", ["coo", "csr"])
@pytest.mark.parametrize("loss", [flops_loss, l1_loss])
def test_sparse_inputs_match_dense_values_and_gradients(layout: str, loss: Any) -> None:
    w = _rand(5, 6, 9, zero_frac=0.6)
    dense = w.clone().requires_grad_()
    sparse = (w.to_sparse() if layout == "coo" else w.to_sparse_csr()).requires_grad_()
    expected = loss(dense)
    got = loss(sparse)
    assert abs(float(got.detach()) - float(expected.detach())) <= TOL
    (dense_grad,) = torch.autograd.grad(expected, dense)
    (sparse_grad,) = torch.autograd.grad(got, sparse)
    assert sparse_grad.layout == sparse.layout
    # The sparse gradient lives on the stored pattern; there it equals the dense gradient.
    mask = w != 0
    torch.testing.assert_close(sparse_grad.to_dense()[mask], dense_grad[mask], rtol=0, atol=TOL)


# gradients


def test_flops_loss_gradcheck() -> None:
    w = _away_from_zero(10, 4, 6).requires_grad_()
    assert torch.autograd.gradcheck(flops_loss, (w,), eps=1e-6, atol=1e-8)


def test_l1_loss_gradcheck() -> None:
    w = _away_from_zero(11, 4, 6).requires_grad_()
    assert torch.autograd.gradcheck(l1_loss, (w,), eps=1e-6, atol=1e-8)


def test_idf_weighted_scores_gradcheck() -> None:
    g = torch.Generator().manual_seed(12)
    q = (torch.rand(3, 8, generator=g) < 0.5).to(F64)
    d = _rand(13, 5, 8).requires_grad_()
    idf = (torch.rand(8, generator=g, dtype=F64) * 3).requires_grad_()
    assert torch.autograd.gradcheck(lambda d_, idf_: idf_weighted_scores(q, d_, idf_), (d, idf), eps=1e-6, atol=1e-8)


def test_contrastive_loss_gradcheck() -> None:
    q = _rand(14, 3, 6).requires_grad_()
    d = _rand(15, 5, 6).requires_grad_()
    assert torch.autograd.gradcheck(
        lambda q_, d_: contrastive_loss(q_, d_, temperature=0.7), (q, d), eps=1e-6, atol=1e-8
    )


@pytest.mark.parametrize(("seed", "n", "v"), [(20, 1, 5), (21, 4, 9), (22, 32, 100)])
def test_flops_gradient_matches_analytic_formula(seed: int, n: int, v: int) -> None:
    w = _rand(seed, n, v, zero_frac=0.3).requires_grad_()
    (grad,) = torch.autograd.grad(flops_loss(w), w)
    wd = w.detach()
    mean_abs = wd.abs().mean(dim=0)  # (v,)
    analytic = 2.0 * mean_abs.unsqueeze(0) * torch.sign(wd) / n
    torch.testing.assert_close(grad, analytic, rtol=0, atol=TOL)


def test_l1_gradient_is_sign_over_n() -> None:
    w = _rand(23, 7, 11, zero_frac=0.3).requires_grad_()
    (grad,) = torch.autograd.grad(l1_loss(w), w)
    torch.testing.assert_close(grad, torch.sign(w.detach()) / 7, rtol=0, atol=TOL)


# idf-weighted scores


@pytest.mark.parametrize(("seed", "bq", "bd", "v"), [(30, 1, 1, 1), (31, 3, 4, 10), (32, 8, 5, 64)])
def test_idf_weighted_scores_match_naive_loop(seed: int, bq: int, bd: int, v: int) -> None:
    g = torch.Generator().manual_seed(seed)
    q = torch.rand(bq, v, generator=g) < 0.4
    d = torch.rand(bd, v, generator=g, dtype=F64)
    idf = torch.rand(v, generator=g, dtype=F64) * 5
    got = idf_weighted_scores(q, d, idf)
    assert got.shape == (bq, bd)
    assert got.dtype == F64
    qn, dn, idfn = q.numpy(), d.numpy(), idf.numpy()
    for a in range(bq):
        for b in range(bd):
            expected = sum(float(idfn[j]) * float(dn[b, j]) for j in range(v) if qn[a, j])
            assert abs(float(got[a, b]) - expected) <= TOL * max(1.0, abs(expected))


@pytest.mark.parametrize("qform", ["bool", "float", "int", "coo", "csr"])
def test_idf_weighted_scores_query_forms_agree(qform: str) -> None:
    g = torch.Generator().manual_seed(33)
    mask = torch.rand(4, 12, generator=g) < 0.3
    d = torch.rand(6, 12, generator=g, dtype=F64)
    idf = torch.rand(12, generator=g, dtype=F64)
    expected = (mask.to(F64) * idf) @ d.T
    q: torch.Tensor = {
        "bool": mask,
        "float": mask.to(torch.float32),
        "int": mask.to(torch.int64),
        "coo": mask.to(F64).to_sparse(),
        "csr": mask.to(F64).to_sparse_csr(),
    }[qform]
    torch.testing.assert_close(idf_weighted_scores(q, d, idf), expected, rtol=0, atol=TOL)


def test_idf_weighted_scores_ignores_tokens_absent_from_the_query() -> None:
    q = torch.tensor([[1, 0, 0], [0, 1, 1]])
    d = torch.tensor([[1.0, 100.0, 0.0], [0.0, 0.0, 2.0]], dtype=F64)
    idf = torch.tensor([2.0, 0.5, 3.0], dtype=F64)
    got = idf_weighted_scores(q, d, idf)
    torch.testing.assert_close(got, torch.tensor([[2.0, 0.0], [50.0, 6.0]], dtype=F64), rtol=0, atol=0)


# contrastive loss


def test_contrastive_loss_matches_naive_log_softmax() -> None:
    q = _rand(40, 4, 10)
    d = _rand(41, 7, 10)
    tau = 0.5
    s = (q.numpy() @ d.numpy().T) / tau
    expected = 0.0
    for i in range(4):
        row = s[i]
        m = float(row.max())
        lse = m + math.log(sum(math.exp(float(x) - m) for x in row))
        expected += lse - float(row[i])
    expected /= 4
    got = float(contrastive_loss(q, d, temperature=tau))
    assert abs(got - expected) <= TOL * max(1.0, abs(expected))


# warm-up schedule


def test_warmup_endpoints() -> None:
    sched = RegularizationWarmup(lambda_max=3e-4, warmup_steps=1000)
    assert sched(0) == 0.0
    assert sched(1000) == pytest.approx(3e-4, rel=1e-15)
    assert sched(500) == pytest.approx(3e-4 / 4, rel=1e-15)
    assert sched(250) == pytest.approx(3e-4 / 16, rel=1e-15)
    assert sched(1001) == sched(10**9) == 3e-4


def test_warmup_zero_steps_means_no_warmup() -> None:
    sched = RegularizationWarmup(lambda_max=2.0, warmup_steps=0)
    assert sched(0) == sched(1) == sched(10**6) == 2.0


def test_warmup_accepts_numpy_ints() -> None:
    sched = RegularizationWarmup(lambda_max=1.0, warmup_steps=np.int64(4))
    assert sched.warmup_steps == 4
    assert type(sched.warmup_steps) is int
    assert sched(np.int32(2)) == 0.25


@given(
    lam=st.floats(min_value=0.0, max_value=1e3, allow_nan=False),
    t_max=st.integers(min_value=1, max_value=10**6),
    a=st.integers(min_value=0, max_value=2 * 10**6),
    b=st.integers(min_value=0, max_value=2 * 10**6),
)
def test_warmup_monotone_bounded_and_constant_after_t(lam: float, t_max: int, a: int, b: int) -> None:
    sched = RegularizationWarmup(lambda_max=lam, warmup_steps=t_max)
    lo, hi = min(a, b), max(a, b)
    assert 0.0 <= sched(lo) <= sched(hi) <= lam
    if lo >= t_max:
        assert sched(lo) == sched(hi) == lam
    else:
        # Subnormal lambdas (hypothesis finds them) lose relative precision: allow a few units of the smallest
        # subnormal on top of the relative tolerance.
        tiny = float(np.nextafter(0.0, 1.0))
        assert sched(lo) == pytest.approx(lam * (lo / t_max) ** 2, rel=1e-12, abs=4 * tiny)


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"lambda_max": -1e-4, "warmup_steps": 10}, "lambda_max"),
        ({"lambda_max": math.nan, "warmup_steps": 10}, "lambda_max"),
        ({"lambda_max": math.inf, "warmup_steps": 10}, "lambda_max"),
        ({"lambda_max": "1", "warmup_steps": 10}, "lambda_max"),
        ({"lambda_max": 1.0, "warmup_steps": -1}, "warmup_steps"),
        ({"lambda_max": 1.0, "warmup_steps": 2.5}, "warmup_steps"),
        ({"lambda_max": 1.0, "warmup_steps": True}, "warmup_steps"),
    ],
)
def test_warmup_rejects_bad_arguments(kwargs: dict[str, Any], name: str) -> None:
    with pytest.raises(InvalidArgumentError, match=f"^{name}:"):
        RegularizationWarmup(**kwargs)


@pytest.mark.parametrize("step", [-1, 1.5, None])
def test_warmup_rejects_bad_step(step: Any) -> None:
    sched = RegularizationWarmup(lambda_max=1.0, warmup_steps=10)
    with pytest.raises(InvalidArgumentError, match=r"^step:"):
        sched(step)


# typed errors


@pytest.mark.parametrize("loss", [flops_loss, l1_loss])
@pytest.mark.parametrize("shape", [(5,), (2, 3, 4), ()])
def test_losses_reject_non_2d(loss: Any, shape: tuple[int, ...]) -> None:
    with pytest.raises(ShapeMismatchError, match=r"^weights: must be 2-D"):
        loss(torch.zeros(shape, dtype=F64))


@pytest.mark.parametrize("loss", [flops_loss, l1_loss])
def test_losses_reject_empty_batch_int_dtype_and_non_tensors(loss: Any) -> None:
    with pytest.raises(ShapeMismatchError, match=r"^weights: must have at least one row"):
        loss(torch.zeros((0, 4), dtype=F64))
    with pytest.raises(DTypeError, match=r"^weights: must have a floating-point dtype"):
        loss(torch.zeros((2, 4), dtype=torch.int64))
    with pytest.raises(DTypeError, match=r"^weights: must be a torch.Tensor"):
        loss(np.zeros((2, 4)))


def _scores_args() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return torch.ones(2, 5), torch.ones(3, 5, dtype=F64), torch.ones(5, dtype=F64)


@pytest.mark.parametrize(
    ("which", "bad", "exc", "pattern"),
    [
        ("query", torch.ones(5), ShapeMismatchError, "^query: must be 2-D"),
        ("doc_weights", torch.ones(3, 5, 1, dtype=F64), ShapeMismatchError, "^doc_weights: must be 2-D"),
        ("idf", torch.ones(1, 5, dtype=F64), ShapeMismatchError, "^idf: must be 1-D"),
        ("query", torch.ones(2, 4), ShapeMismatchError, "vocabulary sizes differ: query has 4"),
        ("idf", torch.ones(6, dtype=F64), ShapeMismatchError, "idf has 6 entries"),
        ("doc_weights", torch.ones(3, 5, dtype=torch.int32), DTypeError, "^doc_weights: must have a floating"),
        ("idf", torch.ones(5, dtype=torch.int32), DTypeError, "^idf: must have a floating"),
        ("idf", torch.tensor([1.0, 2.0, math.nan, 1.0, 1.0]), NonFiniteError, r"^idf\[2\] = nan"),
        ("idf", torch.tensor([1.0, 2.0, 1.0, -math.inf, 1.0]), NonFiniteError, r"^idf\[3\] = -inf"),
        ("query", torch.tensor([[1.0, 0, 0, 0, 0], [0, 0, 0.5, 0, 0]]), InvalidArgumentError, r"^query\[1, 2\]"),
        ("query", torch.tensor([[1, 0, 0, 2, 0], [0, 0, 1, 0, 0]]), InvalidArgumentError, r"^query\[0, 3\] = 2"),
        ("doc_weights", [[1.0] * 5], DTypeError, "^doc_weights: must be a torch.Tensor"),
    ],
)
def test_idf_weighted_scores_typed_errors(which: str, bad: Any, exc: type[Exception], pattern: str) -> None:
    q, d, idf = _scores_args()
    args = {"query": q, "doc_weights": d, "idf": idf}
    args[which] = bad
    with pytest.raises(exc, match=pattern):
        idf_weighted_scores(args["query"], args["doc_weights"], args["idf"])


def test_idf_weighted_scores_rejects_sparse_doc_weights() -> None:
    q, d, idf = _scores_args()
    with pytest.raises(DTypeError, match=r"^doc_weights: unsupported layout"):
        idf_weighted_scores(q, d.to_sparse(), idf)


def test_contrastive_loss_typed_errors() -> None:
    q, d = torch.ones(3, 4, dtype=F64), torch.ones(5, 4, dtype=F64)
    with pytest.raises(ShapeMismatchError, match="vocabulary sizes differ"):
        contrastive_loss(q, torch.ones(5, 3, dtype=F64))
    with pytest.raises(ShapeMismatchError, match=r"^doc_weights: needs at least one row per query"):
        contrastive_loss(q, torch.ones(2, 4, dtype=F64))
    with pytest.raises(ShapeMismatchError, match=r"^query_weights: must be 2-D"):
        contrastive_loss(torch.ones(4, dtype=F64), d)
    for bad in (0.0, -1.0, math.nan, math.inf):
        with pytest.raises(InvalidArgumentError, match=r"^temperature:"):
            contrastive_loss(q, d, temperature=bad)


def test_errors_are_also_builtin_value_errors() -> None:
    with pytest.raises(ValueError, match="weights"):
        flops_loss(torch.zeros(3, dtype=F64))
    with pytest.raises(ValueError, match="lambda_max"):
        RegularizationWarmup(lambda_max=-1.0, warmup_steps=0)


# import hygiene


def test_import_sparsecore_does_not_import_torch() -> None:
    code = "import sparsecore, sys; assert 'torch' not in sys.modules, 'torch was imported'"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr


def test_sparsecore_torch_resolves_real_torch() -> None:
    code = (
        "import sys, sparsecore.torch, sparsecore.torch.losses as L, torch; "
        "assert L.torch is torch and hasattr(torch, 'autograd'); "
        "assert sys.modules['sparsecore.torch'] is not torch"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
