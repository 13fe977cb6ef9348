"""Checks of the Triton kernels against their torch references, run in a child process under the interpreter.

``tests/test_gpu_kernels.py`` runs ``python tests/_gpu_checks.py <group>`` with ``TRITON_INTERPRET=1`` (set before
triton is first imported) and toggles ``SPARSECORE_FORCE_TRITON`` here to pick the Triton launcher (``"1"``) or the
torch reference (``"0"``) on the same CPU tensors. Each check raises AssertionError on a mismatch; the child prints
``ok <group> <n checks>`` at the end. Shapes are tiny: the interpreter is ~10^4x slower than torch.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
from sparsecore import gpu
from sparsecore.gpu._common import FORCE_TRITON_ENV
from torch import Tensor

DTYPES = (torch.float32, torch.float16, torch.bfloat16)
TOL = {torch.float32: 1e-5, torch.float16: 1e-2, torch.bfloat16: 1e-2}
_CHECKS = 0


@contextmanager
def triton_path(on: bool) -> Iterator[None]:
    """Run the Triton launcher (``on``) or the torch reference on CPU tensors."""
    old = os.environ.get(FORCE_TRITON_ENV)
    os.environ[FORCE_TRITON_ENV] = "1" if on else "0"
    try:
        yield
    finally:
        if old is None:
            del os.environ[FORCE_TRITON_ENV]
        else:
            os.environ[FORCE_TRITON_ENV] = old


def close(got: Tensor | None, want: Tensor | None, dtype: torch.dtype, what: str) -> None:
    """Max abs error within ``TOL[dtype]`` times (1 + the largest |want|) (relative for large entries)."""
    global _CHECKS
    assert got is not None, what
    assert want is not None, what
    assert got.shape == want.shape, f"{what}: shape {tuple(got.shape)} != {tuple(want.shape)}"
    err = (got.double() - want.double()).abs().max().item() if got.numel() else 0.0
    scale = 1.0 + (want.double().abs().max().item() if want.numel() else 0.0)
    assert err <= TOL[dtype] * scale, f"{what} [{dtype}]: max error {err:.3g} > {TOL[dtype]:.0e} x {scale:.3g}"
    _CHECKS += 1


def leaves(*ts: Tensor) -> list[Tensor]:
    return [t.detach().clone().requires_grad_(True) for t in ts]


def run_both(fn: Callable[[bool], list[Tensor]]) -> tuple[list[Tensor], list[Tensor]]:
    with triton_path(True):
        tri = fn(True)
    with triton_path(False):
        ref = fn(False)
    return tri, ref


# ---------------------------------------------------------------------------------------------------------------
# topk_decode
# ---------------------------------------------------------------------------------------------------------------


def decode_case(lead: tuple[int, ...], k: int, d_sae: int, d: int, dtype: torch.dtype, bias: bool, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    idx = torch.randint(0, d_sae, (*lead, k), generator=g)
    if seed % 2:
        idx = idx.to(torch.int32)
    v0 = torch.randn(*lead, k, generator=g).to(dtype)
    w0 = torch.randn(d_sae, d, generator=g).to(dtype)
    b0 = torch.randn(d, generator=g).to(dtype)
    dout = torch.randn(*lead, d, generator=g).to(dtype)

    def fn(_on: bool) -> list[Tensor]:
        v, w, b = leaves(v0, w0, b0)
        out = gpu.topk_decode(idx, v, w, b if bias else None)
        out.backward(dout)  # type: ignore[no-untyped-call]
        assert out.dtype == dtype
        return [out.detach(), v.grad, w.grad, b.grad if bias else torch.zeros(())]  # type: ignore[list-item]

    tri, ref = run_both(fn)
    for name, a, c in zip(("out", "d values", "d W_dec", "d bias"), tri, ref, strict=True):
        close(a, c, dtype, f"decode {name} lead={lead} k={k} d={d}")
    # The reference's own autograd (embedding_bag in float32) agrees with the custom backward.
    if k == 0 or 0 in lead:
        return
    v, w, b = leaves(v0, w0, b0)
    out = torch.nn.functional.embedding_bag(
        idx.reshape(-1, k), w.float(), per_sample_weights=v.reshape(-1, k).float(), mode="sum"
    )
    out = (out + b.float() if bias else out).reshape(*lead, d)
    if out.numel():
        out.backward(dout.float())  # type: ignore[no-untyped-call]
        close(tri[1], v.grad, dtype, "decode d values vs autograd")
        close(tri[2], w.grad, dtype, "decode d W_dec vs autograd")


def check_decode() -> None:
    for dtype in DTYPES:
        decode_case((3, 2), 5, 96, 50, dtype, True, 0)
        decode_case((7,), 3, 40, 64, dtype, False, 1)
        decode_case((2, 1, 3), 7, 13, 19, dtype, True, 2)
        decode_case((0,), 3, 20, 10, dtype, True, 3)  # no rows
        decode_case((4,), 0, 20, 10, dtype, True, 4)  # k = 0: bias only
    # d W_dec is bitwise reproducible (sorted segments, no atomics) and takes duplicates within a row.
    idx = torch.tensor([[1, 1, 4], [4, 0, 1], [3, 3, 3]])
    v0, w0 = torch.randn(3, 3), torch.randn(6, 33)
    grads = []
    with triton_path(True):
        for _ in range(2):
            v, w = leaves(v0, w0)
            gpu.topk_decode(idx, v, w).square().sum().backward()  # type: ignore[no-untyped-call]
            grads.append(w.grad)
    assert grads[0] is not None
    assert grads[1] is not None
    assert torch.equal(grads[0], grads[1])
    assert torch.equal(grads[0][2], torch.zeros(33))
    assert torch.equal(grads[0][5], torch.zeros(33))


# ---------------------------------------------------------------------------------------------------------------
# topk_encode
# ---------------------------------------------------------------------------------------------------------------


def encode_case(
    lead: tuple[int, ...], d: int, d_sae: int, k: int, dtype: torch.dtype, jump: bool, seed: int, shift: float = 0.0
) -> None:
    g = torch.Generator().manual_seed(seed)
    x0 = torch.randn(*lead, d, generator=g).to(dtype)
    w0 = (torch.randn(d, d_sae, generator=g) / d**0.5).to(dtype)
    be0 = (torch.randn(d_sae, generator=g) * 0.1 + shift).to(dtype)
    bd0 = (torch.randn(d, generator=g) * 0.1).to(dtype)
    thr = torch.rand(d_sae, generator=g) * 0.5 if jump else None
    gv = torch.randn(*lead, k, generator=g).to(dtype)
    act = "jumprelu" if jump else "relu"

    def fn(_on: bool) -> list[Tensor]:
        x, w, be, bd = leaves(x0, w0, be0, bd0)
        idx, val = gpu.topk_encode(x, w, be, k, activation=act, threshold=thr, b_dec=bd)
        assert idx.dtype == torch.int64
        assert val.dtype == dtype
        assert idx.shape == (*lead, k)
        val.backward(gv)  # type: ignore[no-untyped-call]
        return [idx, val.detach(), x.grad, w.grad, be.grad, bd.grad]  # type: ignore[list-item]

    tri, ref = run_both(fn)
    what = f"encode {act} lead={lead} d_sae={d_sae} k={k}"
    assert torch.equal(tri[0], ref[0]), f"{what} [{dtype}]: indices differ\n{tri[0]}\n{ref[0]}"
    for name, a, c in zip(("values", "d x", "d W_enc", "d b_enc", "d b_dec"), tri[1:], ref[1:], strict=True):
        close(a, c, dtype, f"{what} {name}")
    # Against plain torch autograd: dense activations, gathered at the selected ids.
    x, w, be, bd = leaves(x0, w0, be0, bd0)
    pre = (x.float() - bd.float()) @ w.float() + be.float()
    z = torch.relu(pre) if thr is None else torch.where(pre > thr, pre, torch.zeros_like(pre))
    picked = z.gather(-1, tri[0]) if k else z[..., :0]
    if picked.numel():
        picked.backward(gv.float())  # type: ignore[no-untyped-call]
        for name, a, t in zip(("d x", "d W_enc", "d b_enc", "d b_dec"), tri[2:], (x, w, be, bd), strict=True):
            close(a, t.grad, dtype, f"{what} {name} vs autograd")


def check_encode() -> None:
    for dtype in DTYPES:
        for jump in (False, True):
            encode_case((7,), 40, 90, 5, dtype, jump, 0)  # two latent tiles, ragged; rows < one row block
            encode_case((3, 6), 24, 33, 7, dtype, jump, 1)  # 18 rows: two row blocks
        encode_case((2,), 16, 20, 20, dtype, False, 2)  # k = d_sae
    encode_case((5,), 8, 70, 6, torch.float32, False, 3, shift=-10.0)  # every pre < 0: zeros at ids 0..5
    with triton_path(True):
        idx, val = gpu.topk_encode(torch.zeros(2, 8), torch.randn(8, 70), torch.full((70,), -1.0), 6)
    assert torch.equal(idx, torch.arange(6).expand(2, 6))
    assert torch.equal(val, torch.zeros(2, 6))
    # Ties go to the lower latent id, across tiles too (ids 3, 64, 65 tie at the top).
    b = torch.zeros(90)
    b[[65, 64, 3]] = 2.0
    b[80] = 1.0
    with triton_path(True):
        idx, val = gpu.topk_encode(torch.zeros(3, 4), torch.zeros(4, 90), b, 5)
    assert idx[0].tolist() == [3, 64, 65, 80, 0], idx
    with triton_path(True):
        idx0, _ = gpu.topk_encode(torch.zeros(1, 4), torch.zeros(4, 90), b, 0)
    assert idx0.shape == (1, 0)


# ---------------------------------------------------------------------------------------------------------------
# sparse_gemv
# ---------------------------------------------------------------------------------------------------------------


def gemv_case(shape: tuple[int, ...], d_out: int, dtype: torch.dtype, mode: str, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    d_in = shape[-1]
    x = torch.randn(*shape, generator=g).to(dtype)
    w = torch.randn(d_out, d_in, generator=g).to(dtype)
    r = 3
    lowrank = (torch.randn(d_out, r, generator=g), torch.rand(r, generator=g), torch.randn(d_in, r, generator=g))
    m = torch.rand(*shape, generator=g) < 0.5
    kwargs: dict[str, object] = {"threshold": 0.7}
    if mode == "active":
        kwargs = {"active": m}
    elif mode == "none-active":
        kwargs = {"active": torch.zeros(shape, dtype=torch.bool)}
    elif mode == "lowrank":
        kwargs = {"threshold": 0.7, "lowrank": tuple(t.to(dtype) for t in lowrank)}

    def fn(_on: bool) -> list[Tensor]:
        return [gpu.sparse_gemv(x, w, **kwargs)]  # type: ignore[arg-type]

    (tri,), (ref,) = run_both(fn)
    mask = kwargs["active"] if "active" in kwargs else x.abs() > 0.7
    assert isinstance(mask, Tensor)
    dense = torch.where(mask, x.float(), 0.0) @ w.float().t()
    if mode == "lowrank":
        u, s, v = (t.to(dtype).float() for t in lowrank)
        dense = dense + (torch.where(mask, 0.0, x.float()) @ v * s) @ u.t()
    close(tri, ref, dtype, f"gemv {mode} {shape}")
    close(tri, dense.to(dtype), dtype, f"gemv {mode} {shape} vs dense")
    if mode == "none-active":
        assert torch.equal(tri, torch.zeros_like(tri))


def check_gemv() -> None:
    for dtype in DTYPES:
        gemv_case((70,), 45, dtype, "threshold", 0)  # batch 1, ragged d_in and d_out
        gemv_case((3, 130), 70, dtype, "active", 1)  # small batch, > 2 column blocks of active ids
        gemv_case((2, 20), 9, dtype, "none-active", 2)
        gemv_case((50,), 20, dtype, "lowrank", 3)


# ---------------------------------------------------------------------------------------------------------------
# block_sparse_attention
# ---------------------------------------------------------------------------------------------------------------


def attention_case(b: int, h: int, t: int, dh: int, dtype: torch.dtype, causal: bool, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    q0, k0, v0 = (torch.randn(b, h, t, dh, generator=g).to(dtype) for _ in range(3))
    nb = -(-t // 16)
    mask = torch.rand(b, h, nb, nb, generator=g) < 0.6
    mask[0, 0, nb - 1] = False  # a query block that sees nothing: zero output
    dout = torch.randn(b, h, t, dh, generator=g).to(dtype)

    def fn(_on: bool) -> list[Tensor]:
        q, k, v = leaves(q0, k0, v0)
        out = gpu.block_sparse_attention(q, k, v, mask, block_size=16, causal=causal)
        out.backward(dout)  # type: ignore[no-untyped-call]
        return [out.detach(), q.grad, k.grad, v.grad]  # type: ignore[list-item]

    tri, ref = run_both(fn)
    for name, a, c in zip(("out", "d q", "d k", "d v"), tri, ref, strict=True):
        close(a, c, dtype, f"attention {name} T={t} causal={causal}")
    assert torch.equal(tri[0][0, 0, (nb - 1) * 16 :], torch.zeros_like(tri[0][0, 0, (nb - 1) * 16 :]))
    # Against dense torch attention with the expanded element mask (all blocks kept: plain SDPA).
    full = torch.ones(b, h, nb, nb, dtype=torch.bool)
    with triton_path(True):
        got = gpu.block_sparse_attention(q0, k0, v0, full, block_size=16, causal=causal)
    want = torch.nn.functional.scaled_dot_product_attention(q0.float(), k0.float(), v0.float(), is_causal=causal)
    close(got, want.to(dtype), dtype, f"attention T={t} causal={causal} vs SDPA")


def gqa_case(dtype: torch.dtype, causal: bool, seed: int) -> None:
    """4 query heads on 2 kv heads: equal to the same call with each kv head repeated, values and gradients."""
    g = torch.Generator().manual_seed(seed)
    q0 = torch.randn(2, 4, 21, 8, generator=g).to(dtype)
    k0, v0 = (torch.randn(2, 2, 21, 8, generator=g).to(dtype) for _ in range(2))
    mask = torch.rand(2, 4, 2, 2, generator=g) < 0.7
    dout = torch.randn(2, 4, 21, 8, generator=g).to(dtype)

    def grouped(_on: bool) -> list[Tensor]:
        q, k, v = leaves(q0, k0, v0)
        out = gpu.block_sparse_attention(q, k, v, mask, block_size=16, causal=causal)
        out.backward(dout)  # type: ignore[no-untyped-call]
        return [out.detach(), q.grad, k.grad, v.grad]  # type: ignore[list-item]

    def repeated(_on: bool) -> list[Tensor]:
        q, k, v = leaves(q0, k0, v0)
        out = gpu.block_sparse_attention(
            q, k.repeat_interleave(2, 1), v.repeat_interleave(2, 1), mask, block_size=16, causal=causal
        )
        out.backward(dout)  # type: ignore[no-untyped-call]
        return [out.detach(), q.grad, k.grad, v.grad]  # type: ignore[list-item]

    tri, ref = run_both(grouped)
    for name, a, c in zip(("out", "d q", "d k", "d v"), tri, ref, strict=True):
        close(a, c, dtype, f"attention GQA {name} causal={causal}")
    with triton_path(True):
        rep = repeated(True)
    for name, a, c in zip(("out", "d q", "d k", "d v"), tri, rep, strict=True):
        close(a, c, dtype, f"attention GQA vs repeated kv {name} causal={causal}")


def padded_case(dtype: torch.dtype, causal: bool, seed: int) -> None:
    """A key padding mask (left padding in row 0, right padding in row 1), GQA: Triton against the reference."""
    g = torch.Generator().manual_seed(seed)
    t = 40
    q0 = torch.randn(2, 4, t, 8, generator=g).to(dtype)
    k0, v0 = (torch.randn(2, 2, t, 8, generator=g).to(dtype) for _ in range(2))
    mask = torch.rand(2, 4, 3, 3, generator=g) < 0.7
    mask |= torch.eye(3, dtype=torch.bool)
    real = torch.ones(2, t, dtype=torch.bool)
    real[0, :19] = False  # left padding, across a block edge
    real[1, 33:] = False  # right padding
    dout = torch.randn(2, 4, t, 8, generator=g).to(dtype)

    def fn(_on: bool) -> list[Tensor]:
        q, k, v = leaves(q0, k0, v0)
        out = gpu.block_sparse_attention(q, k, v, mask, block_size=16, causal=causal, key_padding_mask=real)
        out.backward(dout)  # type: ignore[no-untyped-call]
        return [out.detach(), q.grad, k.grad, v.grad]  # type: ignore[list-item]

    tri, ref = run_both(fn)
    for name, a, c in zip(("out", "d q", "d k", "d v"), tri, ref, strict=True):
        close(a, c, dtype, f"attention padded {name} causal={causal}")
    # Padding keys get no gradient and do not change the output of a real query.
    assert torch.equal(tri[2][0, :, :19], torch.zeros_like(tri[2][0, :, :19]))
    assert torch.equal(tri[3][1, :, 33:], torch.zeros_like(tri[3][1, :, 33:]))
    k1 = k0.clone()
    k1[0, :, :19] = 100.0
    with triton_path(True):
        again = gpu.block_sparse_attention(q0, k1, v0, mask, block_size=16, causal=causal, key_padding_mask=real)
    close(again[0, :, 19:], tri[0][0, :, 19:], dtype, "attention padded: padding keys ignored")
    # Against SDPA with the element mask (block tiles, causality, real keys) on the rows that see a key.
    keep = mask.repeat_interleave(16, -1).repeat_interleave(16, -2)[..., :t, :t] & real[:, None, None, :]
    if causal:
        keep &= torch.ones(t, t, dtype=torch.bool).tril()
    rows = keep.any(-1)
    kf, vf = (x.float().repeat_interleave(2, 1) for x in (k0, v0))
    want = torch.nn.functional.scaled_dot_product_attention(q0.float(), kf, vf, attn_mask=keep | ~rows[..., None])
    close(tri[0][rows], want[rows].to(dtype), dtype, f"attention padded vs SDPA causal={causal}")
    assert torch.equal(tri[0][~rows], torch.zeros_like(tri[0][~rows]))  # rows that see no key: zeros


def check_attention() -> None:
    for dtype in DTYPES:
        for causal in (False, True):
            attention_case(2, 2, 37, 24, dtype, causal, 0)  # ragged T and d_head
            gqa_case(dtype, causal, 2)
            padded_case(dtype, causal, 3)
        attention_case(1, 3, 16, 16, dtype, False, 1)  # one block


# ---------------------------------------------------------------------------------------------------------------
# splade_head
# ---------------------------------------------------------------------------------------------------------------


def splade_case(
    b: int, length: int, d: int, v: int, dtype: torch.dtype, bias: bool, masked: bool, seed: int, wt: bool = False
) -> None:
    g = torch.Generator().manual_seed(seed)
    h0 = torch.randn(b, length, d, generator=g).to(dtype)
    w0 = (torch.randn(v, d, generator=g) / d**0.5).to(dtype)
    b0 = (torch.randn(v, generator=g) * 0.5).to(dtype)
    mask = torch.rand(b, length, generator=g) < 0.7 if masked else None
    if mask is not None and b > 1:
        mask[-1] = False  # a row of padding only: zeros, no gradient
    gout = torch.randn(b, v, generator=g).to(dtype)

    def fn(_on: bool) -> list[Tensor]:
        h, w, bb = leaves(h0, w0, b0)
        wv = w.t().contiguous().t() if wt else w  # a strided (column-major) W_vocab
        out = gpu.splade_head(h, wv, bb if bias else None, mask)
        assert out.dtype == dtype
        out.backward(gout)  # type: ignore[no-untyped-call]
        return [out.detach(), h.grad, w.grad, bb.grad if bias else torch.zeros(())]  # type: ignore[list-item]

    tri, ref = run_both(fn)
    what = f"splade B={b} L={length} d={d} V={v} bias={bias} mask={masked}"
    for name, a, c in zip(("out", "d hidden", "d W", "d b"), tri, ref, strict=True):
        close(a, c, dtype, f"{what} {name}")
    if mask is not None and b > 1:
        assert torch.equal(tri[0][-1], torch.zeros_like(tri[0][-1])), what
    # Against the naive dense head (all B x L x V logits) and its autograd.
    h, w, bb = leaves(h0, w0, b0)
    logits = h.float() @ w.float().t() + (bb.float() if bias else 0.0)
    if mask is not None:
        logits = logits.masked_fill(~mask[:, :, None], float("-inf"))
    dense = torch.log1p(torch.relu(logits.amax(1))) if length else torch.zeros(b, v)
    close(tri[0], dense.to(dtype), dtype, f"{what} vs dense")
    if length:
        dense.backward(gout.float())  # type: ignore[no-untyped-call]
        close(tri[1], h.grad, dtype, f"{what} d hidden vs autograd")
        close(tri[2], w.grad, dtype, f"{what} d W vs autograd")
        if bias:
            close(tri[3], bb.grad, dtype, f"{what} d b vs autograd")


def check_splade() -> None:
    for dtype in DTYPES:
        splade_case(3, 21, 24, 70, dtype, True, True, 0)  # ragged tokens, width and vocabulary tiles
        splade_case(2, 5, 16, 33, dtype, False, False, 1)
    splade_case(2, 9, 8, 40, torch.float32, True, True, 2, wt=True)
    splade_case(2, 0, 8, 10, torch.float32, True, False, 3)  # no tokens: zeros
    # The argmax (and so the gradient's token) is the first token reaching the maximum, on both paths.
    h = torch.zeros(1, 20, 4)
    h[0, [3, 18], 0] = 1.0
    w = torch.zeros(5, 4)
    w[:, 0] = 1.0
    for on in (True, False):
        with triton_path(on):
            hh = h.clone().requires_grad_(True)
            gpu.splade_head(hh, w, None, None).sum().backward()  # type: ignore[no-untyped-call]
        assert hh.grad is not None
        assert hh.grad[0].nonzero().tolist() == [[3, 0]], hh.grad
    # Deterministic: the same gradients bitwise.
    grads = []
    g = torch.Generator().manual_seed(4)
    h0, w0 = torch.randn(4, 12, 16, generator=g), torch.randn(50, 16, generator=g)
    with triton_path(True):
        for _ in range(2):
            hh, ww = leaves(h0, w0)
            gpu.splade_head(hh, ww, None, None).square().sum().backward()  # type: ignore[no-untyped-call]
            grads.append((hh.grad, ww.grad))
    assert torch.equal(grads[0][0], grads[1][0])  # type: ignore[arg-type]
    assert torch.equal(grads[0][1], grads[1][1])  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------------------------
# Every kernel compiles for a real GPU (sm_90 PTX), which the interpreter does not check; no GPU needed
# ---------------------------------------------------------------------------------------------------------------


def check_compile_sm90() -> None:
    import warnings

    import triton
    from sparsecore.gpu import _attention_kernels, _decode_kernels, _encode_kernels, _gemv_kernels, _splade_kernels
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    global _CHECKS
    warnings.filterwarnings("ignore", message="TRITON_DEFAULT_FP_FUSION")
    i32, bf16, f32, i64, c = "i32", "*bf16", "*fp32", "*i64", "constexpr"
    kernels: list[tuple[Any, dict[str, str], dict[str, Any]]] = [
        (
            _decode_kernels._gather_rows_kernel,
            dict(idx_ptr=i64, val_ptr=bf16, w_ptr=bf16, bias_ptr=bf16, out_ptr=bf16, K=i32, D=i32),
            {"HAS_BIAS": True, "BLOCK_D": 128},
        ),
        (
            _decode_kernels._row_dots_kernel,
            dict(idx_ptr=i64, g_ptr=bf16, w_ptr=bf16, out_ptr=f32, K=i32, D=i32),
            {"BLOCK_D": 128},
        ),
        (
            _decode_kernels._segment_kernel,
            dict(order_ptr=i64, starts_ptr=i64, val_ptr=bf16, g_ptr=bf16, out_ptr=f32, sum_ptr=f32, K=i32, D=i32),
            {"WITH_SUM": True, "BLOCK_D": 128},
        ),
        (
            _encode_kernels._topk_encode_kernel,
            dict(x_ptr=bf16, w_ptr=bf16, benc_ptr=bf16, bdec_ptr=bf16, thr_ptr=f32, idx_ptr=i64, val_ptr=bf16),
            {"K": 64, "K_PAD": 64, "HAS_BDEC": False, "JUMP": True, "NATIVE_DOT": True}
            | {"BLOCK_B": 16, "BLOCK_N": 64, "BLOCK_D": 32},
        ),
        (
            _encode_kernels._topk_encode_kernel,
            dict(x_ptr=f32, w_ptr=f32, benc_ptr=f32, bdec_ptr=f32, thr_ptr=f32, idx_ptr=i64, val_ptr=f32),
            {"K": 5, "K_PAD": 8, "HAS_BDEC": True, "JUMP": False, "NATIVE_DOT": False}
            | {"BLOCK_B": 16, "BLOCK_N": 64, "BLOCK_D": 32},
        ),
        (
            _gemv_kernels._sparse_gemv_kernel,
            dict(x_ptr=bf16, w_ptr=bf16, act_ptr=i64, y_ptr=bf16),
            {"BLOCK_O": 64, "BLOCK_A": 64},
        ),
        (
            _attention_kernels._block_sparse_attention_kernel,
            dict(q_ptr=bf16, k_ptr=bf16, v_ptr=bf16, lut_ptr="*i32", count_ptr="*i32", out_ptr=bf16, lse_ptr=f32)
            | {"kpm_ptr": "*i8", "scale": "fp32"},
            {"CAUSAL": True, "HAS_KPM": True, "BLOCK": 64, "BLOCK_DH": 128},
        ),
        (
            _attention_kernels._attention_dq_kernel,
            dict(q_ptr=bf16, k_ptr=bf16, v_ptr=bf16, do_ptr=bf16, lse_ptr=f32, delta_ptr=f32, lut_ptr="*i32")
            | {"count_ptr": "*i32", "dq_ptr": bf16, "kpm_ptr": "*i8", "scale": "fp32"},
            {"CAUSAL": True, "HAS_KPM": False, "BLOCK": 64, "BLOCK_DH": 128},
        ),
        (
            _attention_kernels._attention_dkv_kernel,
            dict(q_ptr=bf16, k_ptr=bf16, v_ptr=bf16, do_ptr=bf16, lse_ptr=f32, delta_ptr=f32, lut_t_ptr="*i32")
            | {"count_t_ptr": "*i32", "dk_ptr": f32, "dv_ptr": f32, "kpm_ptr": "*i8", "scale": "fp32"},
            {"CAUSAL": False, "HAS_KPM": True, "BLOCK": 64, "BLOCK_DH": 64},
        ),
        (
            _splade_kernels._splade_head_kernel,
            dict(h_ptr=bf16, w_ptr=bf16, b_ptr=bf16, m_ptr="*i8", out_ptr=f32, arg_ptr="*i32"),
            {"HAS_BIAS": True, "NATIVE_DOT": True, "BLOCK_L": 32, "BLOCK_V": 128, "BLOCK_D": 64},
        ),
        (
            _splade_kernels._splade_head_kernel,
            dict(h_ptr=f32, w_ptr=f32, b_ptr=f32, m_ptr="*i8", out_ptr=f32, arg_ptr="*i32"),
            {"HAS_BIAS": False, "NATIVE_DOT": False, "BLOCK_L": 32, "BLOCK_V": 128, "BLOCK_D": 64},
        ),
    ]
    for fn, pointers, constexprs in kernels:
        # Arguments not named above are int32 sizes and strides.
        signature = {name: pointers.get(name, c if name in constexprs else i32) for name in fn.arg_names}
        src = ASTSource(fn=fn, signature=signature, constexprs=constexprs)
        compiled = triton.compile(src, target=GPUTarget("cuda", 90, 32))
        assert ".entry" in compiled.asm["ptx"], fn.__name__
        _CHECKS += 1


if __name__ == "__main__":
    group = sys.argv[1]
    {
        "decode": check_decode,
        "encode": check_encode,
        "gemv": check_gemv,
        "attention": check_attention,
        "splade": check_splade,
        "compile_sm90": check_compile_sm90,
    }[group]()
    print(f"ok {group} {_CHECKS}")
