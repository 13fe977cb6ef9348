"""sparsecore.gpu's Triton kernels against their torch anchors on one CUDA GPU: time (fwd, fwd+bwd) and memory.

Cases (full size; ``--quick`` shrinks them for a smoke run):

- **topk_decode** fwd+bwd, B = 4096, d = 2304, d_sae = 65,536, k = 64, bfloat16: ours
  (``sparsecore.gpu.topk_decode``: gather kernel; sorted-segment backward without atomics) against
  ``F.embedding_bag(..., per_sample_weights=..., mode="sum")`` and against the dense decoder
  ``codes @ W_dec`` on the scattered ``(B, d_sae)`` codes.
- **topk_encode** forward, same sizes: ours (fused matmul + running top-k, no ``B x d_sae`` buffer) against
  ``torch.topk(relu(F.linear(x - b_dec, W_enc.T, b_enc)), k)``; peak memory of each via
  ``torch.cuda.max_memory_allocated`` above what was allocated before the call.
- **sparse_gemv** batch 1, W 4096 x 14336, 50 % of the inputs active (threshold = median |x|), bfloat16: ours
  against the dense ``F.linear(x, W)``.
- **block_sparse_attention** forward, and forward + backward, H = 32, T = 8192, d_head = 128, 64 x 64 blocks,
  about 10 % of the causal blocks kept per head (random, plus the diagonal), causal, bfloat16: ours against dense
  causal ``F.scaled_dot_product_attention`` (a flash kernel).
- **splade_head** forward, B = 32, L = 256 (ragged lengths), d = 768, V = 30,522, bfloat16: ours (never writes
  the ``B x L x V`` logits) against the naive dense head ``amax(log1p(relu(F.linear(h, W, b))) * mask)``; time and
  peak memory of each.

Timing: ``torch.cuda.Event`` pairs around each call, ours and the anchor alternating call by call after warm-up
calls, medians of the repeats; ratio = ours / anchor (below 1: we are faster). Quality: the largest error of ours
against the float32 torch reference, relative to its largest entry (and for the encoder the fraction of equal
codes). Writes ``benches/results/gpu.json`` (with ``torch.cuda.get_device_name()``) and prints a markdown table.

Run where CUDA is available: ``PYTHONPATH=python .venv/bin/python benches/bench_gpu.py [--quick] [--repeats N]``.
Elsewhere it prints why and exits with status 0 without measuring.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import RESULTS_DIR, CaseResult, PairTiming, log, machine_info, write_results

#: "cpu" only for ``--smoke-cpu`` (a check of this script's logic on tiny sizes, nothing to report).
DEVICE = "cuda"


def _cuda_ms(torch: Any, fn: Callable[[], object]) -> float:
    if not torch.cuda.is_available():  # --smoke-cpu: wall time of the CPU call
        t0 = time.perf_counter()
        fn()
        return (time.perf_counter() - t0) * 1e3
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    fn()
    end.record()
    end.synchronize()
    return float(start.elapsed_time(end))


def time_cuda_pair(
    torch: Any, ours: Callable[[], object], anchor: Callable[[], object], repeats: int, warmup: int = 3
) -> PairTiming:
    """Alternate ``ours`` and ``anchor``, each timed with CUDA events; ``warmup`` untimed calls each first."""
    for _ in range(warmup):
        ours()
        anchor()
    _sync(torch)
    ours_ms, anchor_ms = [], []
    for _ in range(repeats):
        ours_ms.append(_cuda_ms(torch, ours))
        anchor_ms.append(_cuda_ms(torch, anchor))
    return PairTiming(ours_ms=ours_ms, anchor_ms=anchor_ms, ours_number=1, anchor_number=1)


def peak_extra_bytes(torch: Any, fn: Callable[[], object]) -> int:
    """Peak bytes allocated during ``fn`` above what was allocated when it started (its outputs included)."""
    if not torch.cuda.is_available():
        return 0
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    before = torch.cuda.memory_allocated()
    out = fn()
    torch.cuda.synchronize()
    peak = int(torch.cuda.max_memory_allocated() - before)
    del out
    return peak


def _sync(torch: Any) -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def rel_err(torch: Any, got: Any, want: Any) -> float:
    return float((got.float() - want.float()).abs().max() / want.float().abs().max().clamp_min(1e-30))


def bench_decode(torch: Any, gpu: Any, b: int, d: int, n: int, k: int, repeats: int) -> list[CaseResult]:
    F = torch.nn.functional
    g = torch.Generator(device=DEVICE).manual_seed(0)
    dt = torch.bfloat16
    idx = torch.stack([torch.randperm(n, device=DEVICE, generator=g)[:k] for _ in range(b)])
    vals = torch.rand(b, k, device=DEVICE, generator=g).to(dt).requires_grad_(True)
    w = (torch.randn(n, d, device=DEVICE, generator=g) / d**0.5).to(dt).requires_grad_(True)
    grad_out = torch.randn(b, d, device=DEVICE, generator=g).to(dt)

    def ours() -> None:
        gpu.topk_decode(idx, vals, w).backward(grad_out)

    def bag() -> None:
        F.embedding_bag(idx, w, per_sample_weights=vals, mode="sum").backward(grad_out)

    def dense() -> None:
        codes = torch.zeros(b, n, device=DEVICE, dtype=dt).scatter(1, idx, vals)
        (codes @ w).backward(grad_out)

    want = F.embedding_bag(idx, w.detach().float(), per_sample_weights=vals.detach().float(), mode="sum")
    err = rel_err(torch, gpu.topk_decode(idx, vals.detach(), w.detach()), want)
    size = f"B={b} d={d} d_sae={n} k={k} bf16"
    cases = []
    for name, anchor in (("F.embedding_bag", bag), ("dense codes @ W_dec", dense)):
        log(f"topk_decode fwd+bwd vs {name}")
        timing = time_cuda_pair(torch, ours, anchor, repeats)
        cases.append(
            CaseResult.from_timing(
                f"topk_decode fwd+bwd vs {name}",
                size,
                1,
                timing,
                f"max rel err {err:.1e} (fwd, vs fp32 embedding_bag)",
                {"fwd_max_rel_err": err},
                "GPU",
            )
        )
    # Forward alone against embedding_bag.
    with torch.no_grad():
        timing = time_cuda_pair(
            torch,
            lambda: gpu.topk_decode(idx, vals, w),
            lambda: F.embedding_bag(idx, w, per_sample_weights=vals, mode="sum"),
            repeats,
        )
    cases.append(
        CaseResult.from_timing(
            "topk_decode fwd vs F.embedding_bag", size, 1, timing, f"max rel err {err:.1e}", {}, "GPU"
        )
    )
    return cases


def bench_encode(torch: Any, gpu: Any, b: int, d: int, n: int, k: int, repeats: int) -> list[CaseResult]:
    F = torch.nn.functional
    g = torch.Generator(device=DEVICE).manual_seed(1)
    dt = torch.bfloat16
    x = torch.randn(b, d, device=DEVICE, generator=g).to(dt)
    w_enc = (torch.randn(d, n, device=DEVICE, generator=g) / d**0.5).to(dt)
    b_enc = (torch.randn(n, device=DEVICE, generator=g) * 0.1).to(dt)
    b_dec = (torch.randn(d, device=DEVICE, generator=g) * 0.1).to(dt)

    def ours() -> Any:
        return gpu.topk_encode(x, w_enc, b_enc, k, b_dec=b_dec)

    def anchor() -> Any:
        return torch.topk(torch.relu(F.linear(x - b_dec, w_enc.t(), b_enc)), k, dim=-1)

    with torch.no_grad():
        idx, val = ours()
        _, ref_idx = anchor()
        pre = (x.float() - b_dec.float()) @ w_enc.float() + b_enc.float()
        want = torch.relu(pre).gather(1, idx)
        err = rel_err(torch, val, want)
        same = float(
            (torch.sort(idx, dim=1).values == torch.sort(ref_idx, dim=1).values).float().mean()
        )  # ties and bf16 rounding in the anchor can swap near-equal codes
        mem_ours = peak_extra_bytes(torch, ours)
        mem_anchor = peak_extra_bytes(torch, anchor)
        log("topk_encode fwd")
        timing = time_cuda_pair(torch, ours, anchor, repeats)
    quality = (
        f"rel err {err:.1e}; {same:.1%} same ids; peak extra {mem_ours / 2**20:.0f} MiB vs {mem_anchor / 2**20:.0f} MiB"
    )
    metrics: dict[str, float | int | bool | str] = {
        "max_rel_err": err,
        "same_ids_fraction": same,
        "peak_extra_bytes_ours": mem_ours,
        "peak_extra_bytes_anchor": mem_anchor,
    }
    return [
        CaseResult.from_timing(
            "topk_encode fwd vs F.linear + relu + torch.topk",
            f"B={b} d={d} d_sae={n} k={k} bf16",
            1,
            timing,
            quality,
            metrics,
            "GPU",
        )
    ]


def bench_gemv(torch: Any, gpu: Any, d_out: int, d_in: int, repeats: int) -> list[CaseResult]:
    F = torch.nn.functional
    g = torch.Generator(device=DEVICE).manual_seed(2)
    dt = torch.bfloat16
    x = torch.randn(d_in, device=DEVICE, generator=g).to(dt)
    w = (torch.randn(d_out, d_in, device=DEVICE, generator=g) / d_in**0.5).to(dt)
    thr = float(x.float().abs().median())
    with torch.no_grad():
        got = gpu.sparse_gemv(x, w, threshold=thr)
        want = w.float() @ torch.where(x.float().abs() > thr, x.float(), 0.0)
        err = rel_err(torch, got, want)
        active = float((x.float().abs() > thr).float().mean())
        log("sparse_gemv batch 1")
        timing = time_cuda_pair(torch, lambda: gpu.sparse_gemv(x, w, threshold=thr), lambda: F.linear(x, w), repeats)
    return [
        CaseResult.from_timing(
            "sparse_gemv vs dense F.linear",
            f"W {d_out}x{d_in}, batch 1, {active:.0%} active, bf16",
            1,
            timing,
            f"max rel err {err:.1e} vs masked dense fp32",
            {"max_rel_err": err, "active_fraction": active},
            "GPU",
        )
    ]


def bench_attention(torch: Any, gpu: Any, h: int, t: int, dh: int, block: int, repeats: int) -> list[CaseResult]:
    F = torch.nn.functional
    g = torch.Generator(device=DEVICE).manual_seed(3)
    dt = torch.bfloat16
    q, k, v = (torch.randn(1, h, t, dh, device=DEVICE, generator=g).to(dt) for _ in range(3))
    nb = -(-t // block)
    # About 10 % of the causal blocks per head at random, plus the diagonal (every query sees itself).
    keep = torch.rand(1, h, nb, nb, device=DEVICE, generator=g) < 0.1
    keep |= torch.eye(nb, dtype=torch.bool, device=DEVICE)
    keep &= torch.ones(nb, nb, dtype=torch.bool, device=DEVICE).tril()
    kept = float(keep.sum() / (h * nb * (nb + 1) / 2))
    with torch.no_grad():
        got = gpu.block_sparse_attention(q, k, v, keep, block_size=block, causal=True)
        from sparsecore.gpu._attention import block_sparse_attention_reference

        want = block_sparse_attention_reference(q[0, :1], k[0, :1], v[0, :1], keep[0, :1], block, True, dh**-0.5)
        err = rel_err(torch, got[0, :1], want)
        log("block_sparse_attention fwd")
        timing = time_cuda_pair(
            torch,
            lambda: gpu.block_sparse_attention(q, k, v, keep, block_size=block, causal=True),
            lambda: F.scaled_dot_product_attention(q, k, v, is_causal=True),
            repeats,
        )
    qg, kg, vg = (x.detach().requires_grad_(True) for x in (q, k, v))
    dout = torch.randn(1, h, t, dh, device=DEVICE, generator=g).to(dt)

    def fwd_bwd(fn: Callable[[], Any]) -> Callable[[], Any]:
        def run() -> Any:
            for x in (qg, kg, vg):
                x.grad = None
            fn().backward(dout)
            return qg.grad

        return run

    # Gradient check on one head against autograd of the fp32 masked dense reference.
    q1, k1, v1 = (x[:, :1].detach().float().requires_grad_(True) for x in (q, k, v))
    block_sparse_attention_reference(q1[0], k1[0], v1[0], keep[0, :1], block, True, dh**-0.5).backward(  # type: ignore[no-untyped-call]
        dout[0, :1].float()
    )
    fwd_bwd(lambda: gpu.block_sparse_attention(qg, kg, vg, keep, block_size=block, causal=True))()
    grad_err = max(rel_err(torch, a.grad[:, :1], b.grad) for a, b in ((qg, q1), (kg, k1), (vg, v1)))
    log("block_sparse_attention fwd+bwd")
    timing_bwd = time_cuda_pair(
        torch,
        fwd_bwd(lambda: gpu.block_sparse_attention(qg, kg, vg, keep, block_size=block, causal=True)),
        fwd_bwd(lambda: F.scaled_dot_product_attention(qg, kg, vg, is_causal=True)),
        repeats,
    )
    data = f"H={h} T={t} d_head={dh} block={block}, {kept:.0%} of causal blocks, bf16"
    return [
        CaseResult.from_timing(
            "block_sparse_attention fwd vs dense causal SDPA",
            data,
            1,
            timing,
            f"max rel err {err:.1e} (head 0, vs fp32 masked dense)",
            {"max_rel_err": err, "kept_block_fraction": kept},
            "GPU",
        ),
        CaseResult.from_timing(
            "block_sparse_attention fwd+bwd vs dense causal SDPA",
            data,
            1,
            timing_bwd,
            f"max rel err of dq, dk, dv {grad_err:.1e} (head 0, vs autograd of fp32 masked dense)",
            {"max_rel_err_grad": grad_err, "kept_block_fraction": kept},
            "GPU",
        ),
    ]


def bench_splade(torch: Any, gpu: Any, b: int, length: int, d: int, v: int, repeats: int) -> list[CaseResult]:
    F = torch.nn.functional
    g = torch.Generator(device=DEVICE).manual_seed(4)
    dt = torch.bfloat16
    h = torch.randn(b, length, d, device=DEVICE, generator=g).to(dt)
    w = (torch.randn(v, d, device=DEVICE, generator=g) / d**0.5).to(dt)
    bias = (torch.randn(v, device=DEVICE, generator=g) * 0.1).to(dt)
    lengths = torch.randint(length // 4, length + 1, (b,), device=DEVICE, generator=g)
    mask = torch.arange(length, device=DEVICE)[None, :] < lengths[:, None]

    def ours() -> Any:
        return gpu.splade_head(h, w, bias, mask)

    def naive() -> Any:  # the dense head: B x L x V logits
        return (torch.log1p(torch.relu(F.linear(h, w, bias))) * mask[:, :, None]).amax(1)

    with torch.no_grad():
        want = (torch.log1p(torch.relu(F.linear(h.float(), w.float(), bias.float()))) * mask[:, :, None]).amax(1)
        err = rel_err(torch, ours(), want)
        mem_ours = peak_extra_bytes(torch, ours)
        mem_anchor = peak_extra_bytes(torch, naive)
        log("splade_head fwd")
        timing = time_cuda_pair(torch, ours, naive, repeats)
    quality = f"rel err {err:.1e} vs fp32 dense; peak extra {mem_ours / 2**20:.0f} MiB vs {mem_anchor / 2**20:.0f} MiB"
    metrics: dict[str, float | int | bool | str] = {
        "max_rel_err": err,
        "peak_extra_bytes_ours": mem_ours,
        "peak_extra_bytes_anchor": mem_anchor,
    }
    return [
        CaseResult.from_timing(
            "splade_head fwd vs naive dense head",
            f"B={b} L={length} d={d} V={v}, ragged lengths, bf16",
            1,
            timing,
            quality,
            metrics,
            "GPU",
        )
    ]


def markdown(cases: list[CaseResult], device: str) -> str:
    lines = [
        f"GPU: {device}",
        "",
        "| case | size | ours ms | anchor ms | ratio | quality |",
        "|---|---|---:|---:|---:|---|",
    ]
    for c in cases:
        lines.append(f"| {c.case} | {c.dataset} | {c.ours_ms:.3f} | {c.anchor_ms:.3f} | {c.ratio:.2f} | {c.quality} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="small sizes, a smoke run")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--out", type=Path, default=RESULTS_DIR / "gpu.json")
    parser.add_argument(
        "--smoke-cpu",
        action="store_true",
        help="check this script on CPU tensors at tiny sizes (no timing worth reporting; not written by default)",
    )
    args = parser.parse_args(argv)
    try:
        import torch
    except ImportError:
        print("bench_gpu: torch is not installed; nothing measured (needs sparsecore[gpu] and a CUDA GPU)")
        return 0
    from sparsecore import gpu

    global DEVICE
    if args.smoke_cpu:
        DEVICE = "cpu"
        cases = bench_decode(torch, gpu, 6, 24, 80, 5, 2)
        cases += bench_encode(torch, gpu, 6, 24, 80, 5, 2)
        cases += bench_gemv(torch, gpu, 20, 48, 2)
        cases += bench_attention(torch, gpu, 2, 40, 16, 16, 2)
        cases += bench_splade(torch, gpu, 3, 10, 16, 50, 2)
        print(markdown(cases, "cpu (smoke run)"))
        return 0
    if not torch.cuda.is_available():
        print("bench_gpu: no CUDA device here (torch.cuda.is_available() is False); nothing measured")
        return 0
    if not gpu.triton_available():
        print("bench_gpu: triton is not installed; nothing measured (pip install 'sparsecore[gpu]')")
        return 0
    device = torch.cuda.get_device_name()
    b, d, n, k = (256, 512, 8192, 64) if args.quick else (4096, 2304, 65536, 64)
    d_out, d_in = (1024, 4096) if args.quick else (4096, 14336)
    log(f"{device}: decode/encode B={b} d={d} d_sae={n} k={k}; gemv {d_out}x{d_in}")
    cases = bench_decode(torch, gpu, b, d, n, k, args.repeats)
    cases += bench_encode(torch, gpu, b, d, n, k, args.repeats)
    cases += bench_gemv(torch, gpu, d_out, d_in, args.repeats)
    h, t_att = (4, 1024) if args.quick else (32, 8192)
    cases += bench_attention(torch, gpu, h, t_att, 128, 64, args.repeats)
    sb, sl, sd, sv = (8, 128, 256, 8192) if args.quick else (32, 256, 768, 30522)
    cases += bench_splade(torch, gpu, sb, sl, sd, sv, args.repeats)
    machine = machine_info(["torch", "triton"])
    machine["gpu"] = device
    write_results(
        args.out,
        benchmark="gpu",
        script="benches/bench_gpu.py",
        mode="quick" if args.quick else "full",
        machine=machine,
        config={
            "repeats": args.repeats,
            "B": b,
            "d": d,
            "d_sae": n,
            "k": k,
            "gemv": [d_out, d_in],
            "attention": {"H": h, "T": t_att, "d_head": 128, "block": 64},
            "splade": {"B": sb, "L": sl, "d": sd, "V": sv},
        },
        datasets={"synthetic": "Gaussian inputs and weights, uniform codes, random block masks; seeds 0 to 4"},
        cases=cases,
        notes=[
            "CUDA-event timing, ours and anchor alternating, medians of the repeats",
            "topk_encode's Triton matmul: bf16 tensor cores, float32 accumulator, b_dec folded into the bias",
            f"median ratio over the cases: {statistics.median(c.ratio for c in cases):.2f}",
        ],
    )
    print(markdown(cases, device))
    log(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
