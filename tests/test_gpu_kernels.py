"""sparsecore.gpu: the Triton kernels under the interpreter against their torch references, and the CPU path.

The Triton checks live in ``tests/_gpu_checks.py`` and run in a child process with ``TRITON_INTERPRET=1`` set
before triton is imported (the interpreter runs the kernels on CPU tensors; ``SPARSECORE_FORCE_TRITON=1`` makes
the dispatch take the Triton launcher there). The rest runs in this process on the torch reference path:
gradcheck in float64, torch.compile of the custom ops, typed errors.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")

from sparsecore import gpu  # noqa: E402
from sparsecore.exceptions import (  # noqa: E402
    DTypeError,
    IndexOutOfRangeError,
    InvalidArgumentError,
    ShapeMismatchError,
)
from torch import Tensor  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def _child_env(interpret: bool = True) -> dict[str, str]:
    env = dict(os.environ)
    env.pop("TRITON_INTERPRET", None)
    if interpret:
        env["TRITON_INTERPRET"] = "1"
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "python"), env.get("PYTHONPATH", "")])
    return env


@pytest.mark.gpu
@pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="needs triton (the gpu extra)")
@pytest.mark.parametrize("group", ["decode", "encode", "gemv", "attention", "splade", "compile_sm90"])
def test_triton_kernels_in_a_child_process(group: str) -> None:
    # compile_sm90 lowers every kernel to PTX for an H100 (no GPU needed): what the interpreter cannot check.
    res = subprocess.run(
        [sys.executable, str(ROOT / "tests" / "_gpu_checks.py"), group],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env=_child_env(interpret=group != "compile_sm90"),
    )
    assert res.returncode == 0, res.stderr[-4000:]
    assert res.stdout.split()[:2] == ["ok", group], res.stdout
    assert int(res.stdout.split()[2]) >= (11 if group == "compile_sm90" else 20)


def test_importing_sparsecore_gpu_loads_neither_torch_nor_triton() -> None:
    code = textwrap.dedent(
        """
        import sys
        import sparsecore.gpu as g
        assert all(callable(f) for f in (g.topk_decode, g.topk_encode, g.sparse_gemv, g.block_sparse_attention))
        assert all(callable(f) for f in (g.splade_head, g.minference_blocks, g.register_attention))
        assert "torch" not in sys.modules and "triton" not in sys.modules, sorted(sys.modules)
        print("ok")
        """
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "ok"


def test_cpu_path_loads_no_triton_kernel_module() -> None:
    # torch itself may import triton (torch._dynamo checks for it); our kernel modules stay unloaded.
    code = textwrap.dedent(
        """
        import sys, torch
        from sparsecore import gpu
        idx, val = gpu.topk_encode(torch.randn(3, 8), torch.randn(8, 20), torch.zeros(20), 4)
        out = gpu.topk_decode(idx, val, torch.randn(20, 8))
        y = gpu.sparse_gemv(torch.randn(8), torch.randn(5, 8), threshold=0.5)
        s = gpu.splade_head(torch.randn(2, 4, 8), torch.randn(30, 8), None, torch.ones(2, 4, dtype=torch.bool))
        assert out.shape == (3, 8) and y.shape == (5,) and s.shape == (2, 30)
        assert not [m for m in sys.modules if m.startswith("sparsecore.gpu.") and m.endswith("_kernels")]
        print("ok")
        """
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "ok"


# ---------------------------------------------------------------------------------------------------------------
# Reference path: values, gradcheck, torch.compile
# ---------------------------------------------------------------------------------------------------------------


def test_topk_decode_is_embedding_bag_with_leading_dims_and_bias() -> None:
    g = torch.Generator().manual_seed(0)
    idx = torch.randint(0, 30, (2, 3, 4), generator=g)
    v, w, b = torch.randn(2, 3, 4, generator=g), torch.randn(30, 6, generator=g), torch.randn(6, generator=g)
    out = gpu.topk_decode(idx, v, w, b)
    want = torch.nn.functional.embedding_bag(idx.reshape(-1, 4), w, per_sample_weights=v.reshape(-1, 4), mode="sum")
    torch.testing.assert_close(out, (want + b).reshape(2, 3, 6))
    half = gpu.topk_decode(idx, v.bfloat16(), w.bfloat16())
    assert half.dtype == torch.bfloat16


def test_topk_decode_gradcheck_float64() -> None:
    g = torch.Generator().manual_seed(1)
    idx = torch.tensor([[0, 3, 3], [5, 1, 2]])
    v = torch.randn(2, 3, generator=g, dtype=torch.float64, requires_grad=True)
    w = torch.randn(6, 4, generator=g, dtype=torch.float64, requires_grad=True)
    b = torch.randn(4, generator=g, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda v, w, b: gpu.topk_decode(idx, v, w, b), (v, w, b))


@pytest.mark.parametrize("activation", ["relu", "jumprelu"])
def test_topk_encode_gradcheck_float64(activation: str) -> None:
    g = torch.Generator().manual_seed(2)
    x = torch.randn(3, 5, generator=g, dtype=torch.float64, requires_grad=True)
    w = torch.randn(5, 11, generator=g, dtype=torch.float64, requires_grad=True)
    be = torch.randn(11, generator=g, dtype=torch.float64, requires_grad=True)
    bd = torch.randn(5, generator=g, dtype=torch.float64, requires_grad=True)
    thr = torch.rand(11, generator=g, dtype=torch.float64) * 0.3 if activation == "jumprelu" else None

    def values(x: Tensor, w: Tensor, be: Tensor, bd: Tensor) -> Tensor:
        return gpu.topk_encode(x, w, be, 4, activation=activation, threshold=thr, b_dec=bd)[1]

    assert torch.autograd.gradcheck(values, (x, w, be, bd))


def test_sparse_gemv_gradcheck_float64_and_lowrank() -> None:
    g = torch.Generator().manual_seed(3)
    x = torch.randn(2, 7, generator=g, dtype=torch.float64, requires_grad=True)
    w = torch.randn(4, 7, generator=g, dtype=torch.float64, requires_grad=True)
    m = torch.rand(2, 7, generator=g) < 0.5
    assert torch.autograd.gradcheck(lambda x, w: gpu.sparse_gemv(x, w, active=m), (x, w))
    u, s, v = torch.randn(4, 2, dtype=torch.float64), torch.rand(2, dtype=torch.float64), torch.randn(7, 2).double()
    y = gpu.sparse_gemv(x[0], w, active=m[0], lowrank=(u, s, v))
    xd = x[0].detach()
    want = w.detach() @ torch.where(m[0], xd, 0.0) + u @ (s * (v.t() @ torch.where(m[0], 0.0, xd)))
    torch.testing.assert_close(y.detach(), want)


@pytest.mark.parametrize("causal", [False, True])
def test_block_sparse_attention_gradcheck_float64_and_empty_rows(causal: bool) -> None:
    g = torch.Generator().manual_seed(4)
    q, k, v = (torch.randn(1, 2, 18, 2, generator=g, dtype=torch.float64, requires_grad=True) for _ in range(3))
    mask = torch.tensor([[[True, False], [True, True]], [[False, False], [False, True]]]).unsqueeze(0)

    def attend(q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        return gpu.block_sparse_attention(q, k, v, mask, block_size=16, causal=causal)

    assert torch.autograd.gradcheck(attend, (q, k, v), fast_mode=True)  # full mode: ~20 s here
    out = attend(q, k, v)
    assert torch.equal(out[0, 1, :16], torch.zeros(16, 2, dtype=torch.float64))  # head 1, block 0 sees nothing


def test_block_sparse_attention_grouped_kv_heads_equal_repeated_ones_and_gradcheck() -> None:
    """GQA on the CPU path: 6 query heads on 2 kv heads read kv head h // 3; gradients sum over the group."""
    g = torch.Generator().manual_seed(5)
    q = torch.randn(2, 6, 20, 3, generator=g, dtype=torch.float64, requires_grad=True)
    k, v = (torch.randn(2, 2, 20, 3, generator=g, dtype=torch.float64, requires_grad=True) for _ in range(2))
    mask = torch.rand(2, 6, 2, 2, generator=g) < 0.7

    def attend(q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        return gpu.block_sparse_attention(q, k, v, mask, block_size=16, causal=True)

    rep = gpu.block_sparse_attention(
        q, k.repeat_interleave(3, 1), v.repeat_interleave(3, 1), mask, block_size=16, causal=True
    )
    torch.testing.assert_close(attend(q, k, v), rep, rtol=0, atol=0)
    assert torch.autograd.gradcheck(attend, (q, k, v), fast_mode=True)
    with pytest.raises(ShapeMismatchError, match="H_kv dividing"):
        gpu.block_sparse_attention(q, k[:, :1].expand(2, 4, 20, 3), v, mask, block_size=16)
    with pytest.raises(ShapeMismatchError, match="v: must have the shape of k"):
        gpu.block_sparse_attention(q, k, q, mask, block_size=16)


def test_topk_encode_ties_and_short_rows_take_the_lowest_ids() -> None:
    b = torch.zeros(10)
    b[[7, 2]] = 1.0
    idx, val = gpu.topk_encode(torch.zeros(1, 3), torch.zeros(3, 10), b, 4)
    assert idx.tolist() == [[2, 7, 0, 1]]
    assert val.tolist() == [[1.0, 1.0, 0.0, 0.0]]


def naive_splade(hidden: Tensor, w: Tensor, b: Tensor | None, mask: Tensor | None) -> Tensor:
    """The dense head: all B x L x V logits, then log1p(relu), padded tokens zeroed, max over tokens."""
    act = torch.log1p(torch.relu(hidden @ w.t() + (0.0 if b is None else b)))
    if mask is not None:
        act = act * mask[:, :, None].to(act.dtype)
    out: Tensor = act.amax(1) if hidden.shape[1] else torch.zeros(hidden.shape[0], w.shape[0], dtype=hidden.dtype)
    return out


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_splade_head_reference_is_the_dense_head(dtype: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    g = torch.Generator().manual_seed(5)
    h = torch.randn(4, 9, 12, generator=g, dtype=dtype)
    w = torch.randn(101, 12, generator=g, dtype=dtype)
    b = torch.randn(101, generator=g, dtype=dtype)
    mask = torch.rand(4, 9, generator=g) < 0.6
    mask[1] = False  # all padding: zeros
    got = gpu.splade_head(h, w, b, mask.int())
    torch.testing.assert_close(got, naive_splade(h, w, b, mask))
    assert torch.equal(got[1], torch.zeros(101, dtype=dtype))
    torch.testing.assert_close(gpu.splade_head(h, w, None, None), naive_splade(h, w, None, None))
    assert gpu.splade_head(h[:, :0], w, b, mask[:, :0]).abs().sum() == 0
    # Chunked over the vocabulary (here 3 terms at a time): the same values and gradients.
    import sparsecore.gpu._splade as splade_module

    hg = h.clone().requires_grad_(True)
    gpu.splade_head(hg, w, b, mask).square().sum().backward()  # type: ignore[no-untyped-call]
    monkeypatch.setattr(splade_module, "CHUNK_BYTES", 4 * 9 * 3 * 8)
    hc = h.clone().requires_grad_(True)
    chunked = gpu.splade_head(hc, w, b, mask)
    chunked.square().sum().backward()  # type: ignore[no-untyped-call]
    torch.testing.assert_close(chunked, got)
    torch.testing.assert_close(hc.grad, hg.grad)


def test_splade_head_gradcheck_float64() -> None:
    g = torch.Generator().manual_seed(6)
    h = torch.randn(3, 5, 4, generator=g, dtype=torch.float64, requires_grad=True)
    w = torch.randn(17, 4, generator=g, dtype=torch.float64, requires_grad=True)
    b = torch.randn(17, generator=g, dtype=torch.float64, requires_grad=True)
    mask = torch.tensor([[1, 1, 0, 1, 1], [0, 0, 0, 0, 0], [1, 0, 1, 1, 0]])
    assert torch.autograd.gradcheck(lambda h, w, b: gpu.splade_head(h, w, b, mask), (h, w, b))


def test_splade_head_rejects_bad_inputs() -> None:
    h, w, b, m = torch.ones(2, 3, 4), torch.ones(7, 4), torch.ones(7), torch.ones(2, 3, dtype=torch.bool)
    with pytest.raises(ShapeMismatchError, match="hidden"):
        gpu.splade_head(h[0], w, b, m)
    with pytest.raises(DTypeError, match="hidden"):
        gpu.splade_head(h.long(), w, b, m)
    with pytest.raises(ShapeMismatchError, match="W_vocab"):
        gpu.splade_head(h, w.t(), b, m)
    with pytest.raises(DTypeError, match="W_vocab"):
        gpu.splade_head(h, "w", b, m)  # type: ignore[arg-type]
    with pytest.raises(ShapeMismatchError, match="b_vocab"):
        gpu.splade_head(h, w, torch.ones(6), m)
    with pytest.raises(ShapeMismatchError, match="attention_mask"):
        gpu.splade_head(h, w, b, m[:, :2])
    with pytest.raises(DTypeError, match="attention_mask"):
        gpu.splade_head(h, w, b, m.float())


@pytest.mark.parametrize("op", ["decode", "encode", "gemv", "attention", "splade"])
def test_custom_ops_compile_fullgraph_on_cpu(op: str) -> None:
    if not hasattr(torch, "compile"):
        pytest.skip("torch.compile is not available")
    # Importing the modules registers the ops.
    import sparsecore.gpu._attention
    import sparsecore.gpu._decode
    import sparsecore.gpu._encode
    import sparsecore.gpu._gemv
    import sparsecore.gpu._splade  # noqa: F401

    ops = torch.ops.sparsecore
    idx = torch.randint(0, 12, (3, 4))
    x = torch.randn(3, 5, requires_grad=True)
    w = torch.randn(12, 5, requires_grad=True)
    w_enc = torch.randn(5, 12, requires_grad=True)
    m = torch.rand(3, 5) < 0.5

    def run(x: Tensor, w: Tensor, w_enc: Tensor) -> Tensor:
        if op == "decode":
            out: Tensor = ops.topk_decode(idx, x[:, :4], w, None)
        elif op == "encode":
            out = ops.topk_encode(x, w_enc, torch.zeros(12), 3, None, None)[1]
        elif op == "attention":
            qkv = x.reshape(1, 3, 5).expand(2, 3, 5)
            keys = torch.tensor([[True, True, True], [False, True, True]])  # a padding key in row 1
            out = ops.block_sparse_attention(
                qkv, qkv * 2, qkv, torch.ones(2, 1, 1, dtype=torch.bool), 16, True, 0.5, 1, keys
            )[0]
        elif op == "splade":
            out = ops.splade_head(x.reshape(1, 3, 5), w, None, torch.ones(1, 3, dtype=torch.bool))[0]
        else:
            out = ops.sparse_gemv(x, w, m)
        return out.square().sum()

    # aot_eager traces through register_fake and register_autograd without needing a C++ compiler.
    compiled = torch.compile(run, backend="aot_eager", fullgraph=True)
    got = compiled(x, w, w_enc)
    got.backward()
    grads = [t.grad.clone() for t in (x, w, w_enc) if t.grad is not None]
    for t in (x, w, w_enc):
        t.grad = None
    want = run(x, w, w_enc)
    want.backward()  # type: ignore[no-untyped-call]
    torch.testing.assert_close(got, want)
    for a, t in zip(grads, [t for t in (x, w, w_enc) if t.grad is not None], strict=True):
        torch.testing.assert_close(a, t.grad)


# ---------------------------------------------------------------------------------------------------------------
# Typed errors
# ---------------------------------------------------------------------------------------------------------------


def test_topk_decode_rejects_bad_inputs() -> None:
    idx, v, w = torch.zeros(2, 3, dtype=torch.long), torch.ones(2, 3), torch.ones(5, 4)
    with pytest.raises(DTypeError, match="indices"):
        gpu.topk_decode(idx.float(), v, w)
    with pytest.raises(DTypeError, match="values"):
        gpu.topk_decode(idx, v.int(), w)
    with pytest.raises(DTypeError, match="W_dec"):
        gpu.topk_decode(idx, v, [[1.0]])  # type: ignore[arg-type]
    with pytest.raises(ShapeMismatchError, match="values"):
        gpu.topk_decode(idx, torch.ones(2, 4), w)
    with pytest.raises(ShapeMismatchError, match="W_dec"):
        gpu.topk_decode(idx, v, torch.ones(5))
    with pytest.raises(ShapeMismatchError, match="bias"):
        gpu.topk_decode(idx, v, w, torch.ones(5))
    with pytest.raises(IndexOutOfRangeError, match="indices"):
        gpu.topk_decode(idx + 5, v, w)
    with pytest.raises(IndexOutOfRangeError, match="indices"):
        gpu.topk_decode(idx - 1, v, w)


def test_topk_encode_rejects_bad_inputs() -> None:
    x, w, b = torch.ones(2, 4), torch.ones(4, 6), torch.zeros(6)
    with pytest.raises(ShapeMismatchError, match="x"):
        gpu.topk_encode(torch.ones(2, 5), w, b, 2)
    with pytest.raises(ShapeMismatchError, match="b_enc"):
        gpu.topk_encode(x, w, torch.zeros(5), 2)
    with pytest.raises(ShapeMismatchError, match="b_dec"):
        gpu.topk_encode(x, w, b, 2, b_dec=torch.zeros(6))
    with pytest.raises(DTypeError, match="W_enc"):
        gpu.topk_encode(x, w.long(), b, 2)
    with pytest.raises(InvalidArgumentError, match="k"):
        gpu.topk_encode(x, w, b, 7)
    with pytest.raises(InvalidArgumentError, match="k"):
        gpu.topk_encode(x, w, b, -1)
    with pytest.raises(InvalidArgumentError, match="activation"):
        gpu.topk_encode(x, w, b, 2, activation="gelu")
    with pytest.raises(InvalidArgumentError, match="threshold"):
        gpu.topk_encode(x, w, b, 2, activation="jumprelu")
    with pytest.raises(InvalidArgumentError, match="threshold"):
        gpu.topk_encode(x, w, b, 2, threshold=torch.zeros(6))
    with pytest.raises(ShapeMismatchError, match="threshold"):
        gpu.topk_encode(x, w, b, 2, activation="jumprelu", threshold=torch.zeros(5))


def test_sparse_gemv_rejects_bad_inputs() -> None:
    x, w = torch.ones(4), torch.ones(3, 4)
    with pytest.raises(InvalidArgumentError, match="threshold, active"):
        gpu.sparse_gemv(x, w)
    with pytest.raises(InvalidArgumentError, match="threshold, active"):
        gpu.sparse_gemv(x, w, threshold=0.1, active=x > 0)
    with pytest.raises(InvalidArgumentError, match="threshold"):
        gpu.sparse_gemv(x, w, threshold=-1.0)
    with pytest.raises(DTypeError, match="active"):
        gpu.sparse_gemv(x, w, active=x)
    with pytest.raises(ShapeMismatchError, match="active"):
        gpu.sparse_gemv(x, w, active=torch.ones(5, dtype=torch.bool))
    with pytest.raises(ShapeMismatchError, match="x"):
        gpu.sparse_gemv(torch.ones(5), w, threshold=0.1)
    with pytest.raises(ShapeMismatchError, match="x"):
        gpu.sparse_gemv(torch.ones(1, 2, 4), w, threshold=0.1)
    with pytest.raises(ShapeMismatchError, match="lowrank"):
        gpu.sparse_gemv(x, w, threshold=0.1, lowrank=(torch.ones(3, 2), torch.ones(2), torch.ones(5, 2)))
    with pytest.raises(InvalidArgumentError, match="lowrank"):
        gpu.sparse_gemv(x, w, threshold=0.1, lowrank=(torch.ones(3, 2),))  # type: ignore[arg-type]


def test_block_sparse_attention_rejects_bad_inputs() -> None:
    q = torch.ones(1, 2, 20, 4)
    mask = torch.ones(1, 2, 2, 2, dtype=torch.bool)
    with pytest.raises(ShapeMismatchError, match="k"):
        gpu.block_sparse_attention(q, torch.ones(1, 2, 19, 4), q, mask, block_size=16)
    with pytest.raises(ShapeMismatchError, match="q"):
        gpu.block_sparse_attention(q[0], q[0], q[0], mask, block_size=16)
    with pytest.raises(ShapeMismatchError, match="block_mask"):
        gpu.block_sparse_attention(q, q, q, mask, block_size=32)
    with pytest.raises(DTypeError, match="block_mask"):
        gpu.block_sparse_attention(q, q, q, mask.int(), block_size=16)
    with pytest.raises(InvalidArgumentError, match="block_size"):
        gpu.block_sparse_attention(q, q, q, mask, block_size=24)
    with pytest.raises(InvalidArgumentError, match="block_size"):
        gpu.block_sparse_attention(q, q, q, mask, block_size=8)
    with pytest.raises(InvalidArgumentError, match="causal"):
        gpu.block_sparse_attention(q, q, q, mask, block_size=16, causal=1)  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentError, match="scale"):
        gpu.block_sparse_attention(q, q, q, mask, block_size=16, scale=0.0)
    with pytest.raises(DTypeError, match="key_padding_mask"):
        gpu.block_sparse_attention(q, q, q, mask, block_size=16, key_padding_mask=torch.ones(1, 20))
    with pytest.raises(ShapeMismatchError, match="key_padding_mask"):
        gpu.block_sparse_attention(q, q, q, mask, block_size=16, key_padding_mask=torch.ones(1, 19, dtype=torch.bool))
    with pytest.raises(DTypeError, match="key_padding_mask"):
        gpu.block_sparse_attention(q, q, q, mask, block_size=16, key_padding_mask=[True] * 20)  # type: ignore[arg-type]


def test_non_contiguous_inputs_are_accepted() -> None:
    w = torch.randn(6, 10).t()  # (10, 6), not contiguous
    idx = torch.tensor([[1, 9], [0, 0]])
    v = torch.randn(2, 4)[:, ::2]
    torch.testing.assert_close(gpu.topk_decode(idx, v, w), gpu.topk_decode(idx, v.contiguous(), w.contiguous()))


@pytest.mark.bench
def test_bench_gpu_exits_cleanly_without_cuda_and_its_smoke_run_works() -> None:
    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present: run benches/bench_gpu.py itself")
    env = {**os.environ, "PYTHONPATH": str(ROOT / "python")}
    script = str(ROOT / "benches" / "bench_gpu.py")
    res = subprocess.run([sys.executable, script], capture_output=True, text=True, timeout=120, check=False, env=env)
    assert res.returncode == 0, res.stderr
    assert "no CUDA device" in res.stdout
    res = subprocess.run(
        [sys.executable, script, "--smoke-cpu"], capture_output=True, text=True, timeout=120, check=False, env=env
    )
    assert res.returncode == 0, res.stderr
    assert res.stdout.count("| topk_") == 4
    assert "| sparse_gemv" in res.stdout
    assert "| block_sparse_attention" in res.stdout
    assert "| splade_head" in res.stdout
