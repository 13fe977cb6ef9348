"""Torch-free TopK SAE encoding (sparsecore.sae_cpu.CpuSAE) against torch on the CPU: time, codes, peak memory.

The workload is an SAE over a small LM's residual stream: B = 4096 tokens, d_in = 576, d_sae = 4608 and 9216
(8x and 16x), k = 32, with 1 and 2 threads. Ours is ``CpuSAE.encode`` (tiled sgemm fused with a per-row top-k,
never holding the B x d_sae pre-activations); the anchor is torch on the CPU,
``torch.topk(torch.relu((x - b_dec) @ W_enc + b_enc), k)`` under ``torch.set_num_threads``. Both compute the
same formula on the same float32 arrays (torch's tensors share numpy's memory).

- **Time**: ours and torch alternate call by call in one process (``_common.time_pair``), medians of the
  repeats after a warm-up call each; ratio = ours / torch.
- **Codes**: per row, the sorted latent ids of both must be equal; values are compared relatively.
- **Peak memory**: measured in a fresh subprocess per (variant, d_sae, threads): after the weights, the input and
  a small warm-up call (thread pools, lazy code pages), the kernel's peak-RSS counter is reset
  (``/proc/self/clear_refs``), one full-size call runs, and extra = VmHWM after - VmRSS before. It is also
  computed analytically: ours = per-thread scratch (input tile, gemm tile, matrixmultiply's packing buffers,
  top-k buffers) + the CSR output; torch = the B x d_sae product plus the B x d_sae ReLU output alive at once, plus
  the top-k output.

Writes ``benches/results/sae_cpu.json`` and prints a markdown table (RESULTS.md is not regenerated).
Run: ``PYTHONPATH=python .venv/bin/python benches/bench_sae_cpu.py [--quick] [--repeats N]``.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import RESULTS_DIR, CaseResult, keep_freed_memory, log, machine_info, time_pair, write_results

B, D_IN, K = 4096, 576, 32
D_SAES = (4608, 9216)
THREADS = (1, 2)
SEED = 0
# The core's default tiles (rust/sparsecore-core/src/sae/mod.rs) and matrixmultiply's f32 blocking (KC, MC, NC).
TILE_ROWS, TILE_COLS = 256, 1024
MM_KC, MM_MC, MM_NC = 256, 64, 1024


def make_data(n: int, d_in: int, d_sae: int) -> dict[str, NDArray[np.float32]]:
    """Synthetic SAE weights (encoder columns ~ N(0, 1/d_in), decoder its transpose) and activations."""
    rng = np.random.default_rng(SEED)
    w_enc = rng.standard_normal((d_in, d_sae), dtype=np.float32)
    w_enc /= np.float32(np.sqrt(d_in))
    return {
        "W_enc": w_enc,
        "b_enc": (-0.05 * rng.standard_normal(d_sae, dtype=np.float32)).astype(np.float32),
        "W_dec": np.ascontiguousarray(w_enc.T),
        "b_dec": (0.1 * rng.standard_normal(d_in, dtype=np.float32)).astype(np.float32),
        "x": rng.standard_normal((n, d_in), dtype=np.float32),
    }


def ours_extra_bytes(n: int, d_in: int, d_sae: int, k: int, threads: int) -> int:
    """Analytical peak extra bytes of CpuSAE.encode: per-thread scratch plus the CSR output."""
    rows = min(TILE_ROWS, -(-n // threads))
    cols = min(TILE_COLS, d_sae)
    packing = (min(d_in, MM_KC) * MM_MC + min(d_in, MM_KC) * min(cols, MM_NC)) * 4
    per_thread = (rows * d_in + rows * cols) * 4 + packing + rows * 2 * k * 8
    output = (n + 1) * 8 + n * 8 + n * k * (4 + 4)  # indptr, row counts, k slots per row
    return threads * per_thread + output


def torch_extra_bytes(n: int, d_sae: int, k: int) -> int:
    """Analytical peak extra bytes of the torch anchor: x @ W_enc + b_enc and its ReLU alive together."""
    return 2 * n * d_sae * 4 + n * k * (4 + 8)


# ---------------------------------------------------------------------------------------------------------------
# Memory: one fresh process per measurement
# ---------------------------------------------------------------------------------------------------------------


def _status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def memory_worker(variant: str, n: int, d_sae: int, threads: int) -> dict[str, Any]:
    """Peak extra RSS (bytes) of one full-size call, in this (fresh) process."""
    data = make_data(n, D_IN, d_sae)
    x = data["x"]
    if variant == "ours":
        from sparsecore.sae_cpu import CpuSAE

        sae = CpuSAE.from_arrays(data["W_enc"], data["b_enc"], data["W_dec"], data["b_dec"], k=K)

        def call(xs: NDArray[np.float32]) -> object:
            return sae.encode(xs, num_threads=threads)

    else:
        import torch

        torch.set_num_threads(threads)
        w, be, bd = (torch.from_numpy(data[n_]) for n_ in ("W_enc", "b_enc", "b_dec"))

        def call(xs: NDArray[np.float32]) -> object:
            with torch.no_grad():
                return torch.topk(torch.relu((torch.from_numpy(xs) - bd) @ w + be), K)

    call(x[:8])  # thread pools and lazily loaded code, at a negligible size
    Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS
    before = _status_kb("VmRSS")
    out = call(x)
    peak = _status_kb("VmHWM")
    del out
    return {"rss_before_kb": before, "hwm_kb": peak, "extra_bytes": (peak - before) * 1024}


def measure_memory(variant: str, n: int, d_sae: int, threads: int) -> dict[str, Any] | None:
    cmd = [sys.executable, __file__, "--memory-worker", variant, str(n), str(d_sae), str(threads)]
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=False, env=env)
    if res.returncode != 0:
        log(f"memory worker {variant} failed: {res.stderr.strip()[-500:]}")
        return None
    out: dict[str, Any] = json.loads(res.stdout.strip().splitlines()[-1])
    return out


# ---------------------------------------------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------------------------------------------


def compare_codes(ours: Any, vals: NDArray[np.float32], ids: NDArray[np.int64]) -> dict[str, float | int | bool]:
    """Rows whose id sets differ, and the largest relative value difference on rows that agree."""
    n = ids.shape[0]
    order = np.argsort(ids, axis=1)
    ids_s = np.take_along_axis(ids, order, axis=1)
    vals_s = np.take_along_axis(vals, order, axis=1)
    counts = np.diff(ours.indptr)
    full = counts == ids.shape[1]
    ours_ids = np.zeros_like(ids_s)
    ours_vals = np.zeros_like(vals_s)
    if full.all():
        ours_ids = ours.indices.reshape(n, -1).astype(np.int64)
        ours_vals = ours.data.reshape(n, -1)
    mismatched = int(np.sum(np.any(ours_ids != ids_s, axis=1))) if full.all() else n
    rel = np.abs(ours_vals - vals_s) / np.maximum(np.abs(vals_s), 1e-30)
    return {
        "rows_with_different_ids": mismatched,
        "rows": n,
        "max_rel_value_diff": float(rel.max()) if rel.size else 0.0,
        "same_codes": mismatched == 0 and float(rel.max()) <= 1e-5,
    }


def torch_topk(torch: Any, xt: Any, w: Any, be: Any, bd: Any) -> tuple[Any, Any]:
    """The anchor: ``torch.topk(torch.relu((x - b_dec) @ W_enc + b_enc), k)`` without autograd."""
    with torch.no_grad():
        return tuple(torch.topk(torch.relu((xt - bd) @ w + be), K))


def main() -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="B = 512 and d_sae = 4608 only (a few seconds)")
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--out", type=Path, default=RESULTS_DIR / "sae_cpu.json")
    ap.add_argument("--memory-worker", nargs=4, metavar=("VARIANT", "B", "D_SAE", "THREADS"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.memory_worker:
        variant, n, d_sae, threads = args.memory_worker
        print(json.dumps(memory_worker(variant, int(n), int(d_sae), int(threads))))
        return 0

    import torch
    from sparsecore.sae_cpu import CpuSAE

    n = 512 if args.quick else B
    d_saes = D_SAES[:1] if args.quick else D_SAES
    machine = machine_info(["torch", "sparsecore"])
    kept = keep_freed_memory()
    cases: list[CaseResult] = []
    rows_md: list[str] = []
    for d_sae in d_saes:
        data = make_data(n, D_IN, d_sae)
        x = data["x"]
        sae = CpuSAE.from_arrays(data["W_enc"], data["b_enc"], data["W_dec"], data["b_dec"], k=K)
        w, be, bd, xt = (torch.from_numpy(data[n_]) for n_ in ("W_enc", "b_enc", "b_dec", "x"))
        for threads in THREADS:
            torch.set_num_threads(threads)

            ours = functools.partial(sae.encode, x, num_threads=threads)
            anchor = functools.partial(torch_topk, torch, xt, w, be, bd)

            log(f"d_sae={d_sae} threads={threads}: timing")
            timing = time_pair(ours, anchor, args.repeats, min_sample_s=0.0)
            vals, ids = anchor()
            same = compare_codes(ours(), vals.numpy(), ids.numpy())
            log(f"d_sae={d_sae} threads={threads}: memory")
            mem_ours = measure_memory("ours", n, d_sae, threads)
            mem_torch = measure_memory("torch", n, d_sae, threads)
            an_ours = ours_extra_bytes(n, D_IN, d_sae, K, threads)
            an_torch = torch_extra_bytes(n, d_sae, K)
            meas_ours = None if mem_ours is None else mem_ours["extra_bytes"]
            meas_torch = None if mem_torch is None else mem_torch["extra_bytes"]
            mem_ratio = None if not meas_ours or not meas_torch else meas_ours / meas_torch
            metrics: dict[str, float | int | bool | str] = {
                **same,
                "ours_extra_mib_measured": -1.0 if meas_ours is None else round(meas_ours / 2**20, 2),
                "torch_extra_mib_measured": -1.0 if meas_torch is None else round(meas_torch / 2**20, 2),
                "ours_extra_mib_analytical": round(an_ours / 2**20, 2),
                "torch_extra_mib_analytical": round(an_torch / 2**20, 2),
                "memory_ratio_measured": -1.0 if mem_ratio is None else round(mem_ratio, 4),
                "memory_ratio_analytical": round(an_ours / an_torch, 4),
            }
            quality = (
                f"ids differ on {same['rows_with_different_ids']}/{n} rows, max rel value diff "
                f"{same['max_rel_value_diff']:.1e}; extra memory ours/torch {metrics['memory_ratio_measured']} "
                f"(RSS) / {metrics['memory_ratio_analytical']} (analytical)"
            )
            cases.append(
                CaseResult.from_timing(
                    f"TopK encode k={K} vs torch topk(relu(x @ W_enc + b_enc))",
                    f"B={n} d_in={D_IN} d_sae={d_sae}",
                    threads,
                    timing,
                    quality,
                    metrics,
                    "torch.set_num_threads",
                )
            )
            rows_md.append(
                f"| {d_sae} | {threads} | {timing.ours_median_ms:.0f} | {timing.anchor_median_ms:.0f} | "
                f"{timing.ratio:.2f} | {'yes' if same['same_codes'] else 'NO'} "
                f"({same['rows_with_different_ids']} rows differ) | "
                f"{metrics['ours_extra_mib_measured']} / {metrics['ours_extra_mib_analytical']} | "
                f"{metrics['torch_extra_mib_measured']} / {metrics['torch_extra_mib_analytical']} | "
                f"{metrics['memory_ratio_measured']} |"
            )
            log(rows_md[-1])
    notes = [
        f"Machine: {machine['cpu']}, {machine['cpus_usable']} usable cores (shared with other jobs: medians, "
        "alternating calls). glibc told to keep freed memory (keep_freed_memory) in the timing process: "
        f"{kept}, so neither side pays page faults of fresh mappings on every call.",
        "Peak memory: extra RSS of one full-size call in a fresh process, after the weights, the input and an "
        "8-row warm-up call; VmHWM reset through /proc/self/clear_refs. Analytical: ours = threads x (input tile "
        f"{TILE_ROWS} x d_in + gemm tile {TILE_ROWS} x {TILE_COLS} + matrixmultiply packing + top-k buffers) + "
        "the CSR output (k slots per row, compacted in place); torch = two B x d_sae float32 matrices (the "
        "product plus bias, and its ReLU) + the top-k output.",
        "Codes: same ids per row after sorting, values within 1e-5 relative (different summation orders).",
    ]
    write_results(
        args.out,
        benchmark="sae_cpu",
        script="benches/bench_sae_cpu.py",
        mode="quick" if args.quick else "full",
        machine=machine,
        config={"B": n, "d_in": D_IN, "d_sae": list(d_saes), "k": K, "repeats": args.repeats, "seed": SEED},
        datasets={
            f"B={n} d_in={D_IN} d_sae={d}": {
                "description": "synthetic: x ~ N(0, 1), W_enc ~ N(0, 1/d_in), b_enc ~ N(0, 0.05^2), "
                "b_dec ~ N(0, 0.1^2), W_dec = W_enc^T"
            }
            for d in d_saes
        },
        cases=cases,
        notes=notes,
    )
    print()
    print(f"Machine: {machine['cpu']}, {machine['cpus_usable']} cores; torch {machine['versions'].get('torch')}")
    print()
    print(
        "| d_sae | threads | ours ms | torch ms | ours/torch time | same codes | ours extra MiB (RSS / analytical) "
        "| torch extra MiB (RSS / analytical) | memory ours/torch (RSS) |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for row in rows_md:
        print(row)
    log(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
