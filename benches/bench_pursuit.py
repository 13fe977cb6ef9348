"""Sparse coding: sparsecore.pursuit against scikit-learn and SPAMS on the same data, in one process.

Data (DESIGN.md section 3.4): a 256 x 1024 unit-norm Gaussian dictionary, 10,000 signals that are k-sparse
combinations of its atoms plus 0.01 Gaussian noise, k = 16 and 32; float64 and float32; 1 and 2 threads.

Cases (ratio = ours / anchor, medians of alternating calls):
- OMP vs ``sklearn.linear_model.orthogonal_mp_gram`` (Gram and correlations precomputed for it, untimed), vs
  ``sklearn.linear_model.orthogonal_mp`` (its default, a QR update per signal from X and D; float64 only; one call
  takes 10-20 s, so ``time_pair`` takes 3 samples), vs
  ``sklearn.decomposition.sparse_encode(algorithm="omp", n_jobs=threads)`` and vs SPAMS ``spams.omp``
  (``pip install spams-bin``; skipped when absent; its ``numThreads`` follows ours), the latter with our default
  dense output and with ``output="csr"`` (a sparse matrix, as SPAMS returns). Quality: support agreement
  with scikit-learn (the reference solution) and with the true support, relative residual of both.
- Lasso (FISTA and CD) vs ``sklearn.linear_model.Lasso(fit_intercept=False)`` on the same alpha, on 500 signals
  (scikit-learn fits one signal per call): time and objective values (ours must not be worse).

Writes ``benches/results/pursuit.json`` and regenerates ``benches/RESULTS.md``.
"""

from __future__ import annotations

import argparse
import functools
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

sys.path.insert(0, str(Path(__file__).resolve().parent))

import sparsecore.pursuit as sp
from _common import (
    RESULTS_DIR,
    CaseResult,
    blas_threads,
    log,
    machine_info,
    regenerate_results_md,
    time_pair,
    write_results,
)

N_FEATURES, N_ATOMS, NOISE = 256, 1024, 0.01
#: Idle seconds before every timed sample (``time_pair(settle_s=...)``): OpenBLAS, under scikit-learn, leaves its
#: threads spinning ~0.1 s after a call, which took the second core from our 2-thread runs that followed.
SETTLE_S = 0.15


def make_problem(n: int, k: int, seed: int) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.bool_]]:
    rng = np.random.default_rng(seed)
    d = rng.standard_normal((N_ATOMS, N_FEATURES))
    d /= np.linalg.norm(d, axis=1, keepdims=True)
    z = np.zeros((n, N_ATOMS))
    for i in range(n):
        idx = rng.choice(N_ATOMS, k, replace=False)
        z[i, idx] = rng.standard_normal(k) + np.sign(rng.standard_normal(k))
    x = z @ d + NOISE * rng.standard_normal((n, N_FEATURES))
    return x, d, z != 0


def rel_residual(x: NDArray[Any], z: NDArray[Any], d: NDArray[Any]) -> float:
    r = x - z @ d
    return float(np.linalg.norm(r) / np.linalg.norm(x))


def support_agreement(a: NDArray[Any], b: NDArray[Any]) -> float:
    return float(np.mean(np.all((a != 0) == (b != 0), axis=1)))


def lasso_objective(x: NDArray[Any], z: NDArray[Any], d: NDArray[Any], alpha: float) -> float:
    r = x - z @ d
    return float(np.mean(0.5 * np.sum(r * r, axis=1) / x.shape[1] + alpha * np.abs(z).sum(axis=1)))


def bench_omp(
    n: int, ks: list[int], threads: list[int], repeats: int, cases: list[CaseResult], notes: list[str]
) -> None:
    from sklearn.decomposition import sparse_encode
    from sklearn.linear_model import orthogonal_mp, orthogonal_mp_gram

    try:
        import spams
    except ImportError:
        spams = None
        notes.append("SPAMS not installed (pip install spams-bin): its rows are missing.")
    for k in ks:
        x64, d64, truth = make_problem(n, k, seed=k)
        gram64 = d64 @ d64.T
        xy64 = (x64 @ d64.T).T.copy()
        ref = orthogonal_mp_gram(gram64, xy64, n_nonzero_coefs=k).T  # scikit-learn's solution, the reference
        for dtype in (np.float64, np.float32):
            x, d = x64.astype(dtype), d64.astype(dtype)
            ds = f"k={k} {np.dtype(dtype).name}"
            for th in threads:
                ours = sp.omp(x, d, k=k, num_threads=th)
                q = (
                    f"support = sklearn on {support_agreement(ours, ref):.4f}, = truth on "
                    f"{support_agreement(ours, truth):.4f}; rel. residual {rel_residual(x, ours, d):.4f} "
                    f"(sklearn {rel_residual(x64, ref, d64):.4f})"
                )
                qm: dict[str, float | int | bool | str] = {
                    "support_vs_sklearn": support_agreement(ours, ref),
                    "support_vs_truth": support_agreement(ours, truth),
                    "rel_residual": rel_residual(x, ours, d),
                }
                ours_fn = functools.partial(sp.omp, x, d, k=k, num_threads=th)
                if dtype == np.float64:
                    with blas_threads(th):
                        t = time_pair(
                            ours_fn,
                            functools.partial(orthogonal_mp_gram, gram64, xy64, n_nonzero_coefs=k),
                            repeats,
                            settle_s=SETTLE_S,
                        )
                    cases.append(
                        CaseResult.from_timing("OMP vs sklearn orthogonal_mp_gram", ds, th, t, q, qm, f"BLAS {th}")
                    )
                    with blas_threads(th):
                        t = time_pair(
                            ours_fn,
                            functools.partial(orthogonal_mp, d64.T, x64.T, n_nonzero_coefs=k),
                            repeats,
                            settle_s=SETTLE_S,
                        )
                    cases.append(CaseResult.from_timing("OMP vs sklearn orthogonal_mp", ds, th, t, q, qm, f"BLAS {th}"))
                    encode = functools.partial(sparse_encode, x64, d64, algorithm="omp", n_nonzero_coefs=k, n_jobs=th)
                    with blas_threads(1):
                        t = time_pair(ours_fn, encode, repeats, settle_s=SETTLE_S)
                    cases.append(
                        CaseResult.from_timing("OMP vs sklearn sparse_encode(omp)", ds, th, t, q, qm, f"n_jobs={th}")
                    )
                if spams is not None:
                    xf = np.asfortranarray(x.T)
                    df = np.asfortranarray(d.T)
                    theirs = np.asarray(spams.omp(xf, df, L=k, eps=0.0, numThreads=th).todense()).T
                    qs = (
                        f"{q}; SPAMS support = sklearn on {support_agreement(theirs, ref):.4f}, "
                        f"residual {rel_residual(x, theirs, d):.4f}"
                    )
                    qms = {**qm, "spams_support_vs_sklearn": support_agreement(theirs, ref)}
                    if rel_residual(x, theirs, d) > 0.5:
                        notes.append(
                            f"OMP {ds} threads={th}: SPAMS returned (near-)empty codes (relative residual "
                            f"{rel_residual(x, theirs, d):.3f}), so its time in that row is not a comparable OMP run."
                        )
                    spams_fn = functools.partial(spams.omp, xf, df, L=k, eps=0.0, numThreads=th)
                    t = time_pair(ours_fn, spams_fn, repeats, settle_s=SETTLE_S)
                    cases.append(
                        CaseResult.from_timing("OMP vs SPAMS spams.omp", ds, th, t, qs, qms, f"numThreads={th}")
                    )
                    # SPAMS returns a scipy sparse matrix: the same form of output on our side.
                    ours_csr = functools.partial(sp.omp, x, d, k=k, num_threads=th, output="csr")
                    t = time_pair(ours_csr, spams_fn, repeats, settle_s=SETTLE_S)
                    cases.append(
                        CaseResult.from_timing(
                            'OMP (output="csr") vs SPAMS spams.omp', ds, th, t, qs, qms, f"numThreads={th}"
                        )
                    )
                log(f"OMP {ds} threads={th} done")


def bench_lasso(n: int, threads: list[int], repeats: int, cases: list[CaseResult], notes: list[str]) -> None:
    from sklearn.linear_model import Lasso

    x, d, _ = make_problem(n, 16, seed=7)
    alpha = 0.002
    tol = 1e-6

    def sklearn_fit() -> NDArray[np.float64]:
        m = Lasso(alpha=alpha, fit_intercept=False, tol=tol, max_iter=10_000, precompute=True)
        m.fit(d.T, x.T)
        return np.asarray(m.coef_)

    ref = sklearn_fit()
    obj_ref = lasso_objective(x, ref, d, alpha)
    for method in ("fista", "cd"):
        for th in threads:
            ours = sp.lasso(x, d, alpha=alpha, method=method, tol=tol, max_iter=10_000, num_threads=th)
            obj = lasso_objective(x, ours, d, alpha)
            q = (
                f"objective {obj:.6g} vs sklearn {obj_ref:.6g} (ratio {obj / obj_ref:.6f}); "
                f"nnz {np.count_nonzero(ours) / n:.1f} vs {np.count_nonzero(ref) / n:.1f}"
            )
            ours_fn = functools.partial(
                sp.lasso, x, d, alpha=alpha, method=method, tol=tol, max_iter=10_000, num_threads=th
            )
            with blas_threads(th):
                t = time_pair(ours_fn, sklearn_fit, repeats, settle_s=SETTLE_S)
            cases.append(
                CaseResult.from_timing(
                    f"Lasso ({method}) vs sklearn Lasso(precompute=True), alpha={alpha}",
                    f"{n} signals k=16 float64",
                    th,
                    t,
                    q,
                    {"objective": obj, "objective_sklearn": obj_ref},
                    f"BLAS {th}",
                )
            )
            log(f"Lasso {method} threads={th} done")
    notes.append(
        "Lasso: same objective 1/(2 n_features)||x - D^T z||^2 + alpha ||z||_1 on both sides, tol 1e-6 (ours: relative "
        "duality gap, sklearn: its dual-gap criterion); sklearn fits all signals as one multi-target Lasso."
    )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="1,000 signals, k=16 only, 3 repeats")
    ap.add_argument("--repeats", type=int, default=None)
    ap.add_argument("--out", type=Path, default=RESULTS_DIR / "pursuit.json")
    args = ap.parse_args()
    repeats = args.repeats or (3 if args.quick else 5)
    n = 1000 if args.quick else 10_000
    ks = [16] if args.quick else [16, 32]
    threads = [1, 2]
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    machine = machine_info(["sklearn", "spams", "scipy"])
    cases: list[CaseResult] = []
    notes = [
        f"Each timed sample starts after {SETTLE_S} s idle, so threads the previous call left spinning (OpenBLAS "
        "busy-waits ~0.1 s after a call) do not take the second core from the next one.",
        "Support agreement: fraction of signals whose set of non-zero atoms is identical. scikit-learn's "
        "orthogonal_mp_gram is the reference OMP solution; 'truth' is the generating support (noise 0.01).",
        "SPAMS (spams-bin, GPL) is only a benchmark anchor, never a dependency. It is called with eps=0.0 (stop on "
        "k atoms only, as ours): with its default eps, float32 calls returned empty codes on this data.",
        "SPAMS returns a scipy sparse (CSC) matrix. Its rows time ours twice: with our default output (a dense "
        "n_signals x n_atoms array, 80 MB in float64; once freed, its memory is reused by the next dense output, "
        "so only the warm-up call pays the fresh pages' faults) and with "
        'output="csr" (a scipy CSR matrix, the same kind of result as SPAMS\'s).',
    ]
    bench_omp(n, ks, threads, repeats, cases, notes)
    bench_lasso(200 if args.quick else 500, threads, repeats, cases, notes)
    write_results(
        args.out,
        benchmark="pursuit",
        script="benches/bench_pursuit.py",
        mode="quick" if args.quick else "full",
        machine=machine,
        config={"n_signals": n, "ks": ks, "threads": threads, "repeats": repeats, "noise": NOISE},
        datasets={
            "synthetic": {
                "description": f"{N_ATOMS} unit-norm Gaussian atoms in {N_FEATURES} dims, "
                f"{n} k-sparse signals + {NOISE} noise"
            }
        },
        cases=cases,
        notes=notes,
    )
    log(f"wrote {args.out}")
    if args.out.resolve().parent == RESULTS_DIR.resolve():
        log(f"regenerated {regenerate_results_md()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
