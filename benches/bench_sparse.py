"""Side-by-side benchmark of ``sparsecore.SparseBatch`` against numpy/scipy anchors (DESIGN.md section 5).

Cases, each with 1 and 2 threads, ours and the anchor alternating in one process on the same data:

1. ``queries.scores_top_k(docs, k=10)`` vs scipy, two ways: the straightforward ``(Q @ D.T).toarray()`` and a
   per-row ``argpartition``; and scipy's best effort, ``Q @ DT`` with ``DT = D.T.tocsr()`` built once beforehand
   (untimed, like an index) and an ``argpartition`` over each CSR row's stored scores (a Python loop over queries,
   no densifying). Also vs the dense route ``Q_dense @ D_dense.T`` (BLAS sgemm, dense matrices built untimed) +
   ``argpartition`` where memory allows (skipped in ``--quick``). Quality: recall@10 against the anchor's ids,
   tie-aware recall (an id counts when its exact score reaches the anchor's 10th score), the largest score
   difference, and recall@10 against the exact top-100 shipped with the real data.
2. ``docs.top_k(32)`` vs a vectorised numpy segment top-k (padded rows, ``np.partition`` for the 32nd value, exact
   tie rule). Quality: identical output.
3. ``docs.prune_mass(0.9)`` vs a vectorised numpy version (padded rows, argsort of exact int keys, float64
   cumsum) and ``docs.dot(docs[perm])`` vs scipy ``A.multiply(B).sum(axis=1)``.

Data: the real SPLADE vectors in ``../shared/data/lsr-dev`` (skipped with a message when absent) and synthetic
SPLADE-like vectors from ``_synthetic.py`` (1k queries x 100k docs; ``--quick``: 200 x 20k).

Run: ``.venv/bin/python benches/bench_sparse.py [--quick] [--repeats N] [--out PATH]`` (``make bench`` runs
``--quick``). Writes ``benches/results/sparse.json`` and regenerates ``benches/RESULTS.md``.
"""

from __future__ import annotations

import argparse
import functools
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (
    RESULTS_DIR,
    CaseResult,
    available_memory_bytes,
    blas_threads,
    keep_freed_memory,
    log,
    machine_info,
    recall_at_k,
    regenerate_results_md,
    time_pair,
    top_k_rows,
    write_results,
)
from _synthetic import generate
from sparsecore import SparseBatch, _core

LSR_DEV = Path(__file__).resolve().parents[2] / "shared" / "data" / "lsr-dev"
SEARCH_K = 10
ROW_K = 32
MASS = 0.9
# The dense route needs Q, D, the score matrix and argpartition's int64 copy of it at once; only run it when
# that fits in this fraction of the available memory.
DENSE_MEMORY_FRACTION = 0.5

F32 = NDArray[np.float32]
I64 = NDArray[np.int64]


@dataclass
class Dataset:
    name: str
    description: str
    docs: SparseBatch
    queries: SparseBatch
    gt_ids: NDArray[np.int64] | None  # exact top-100 doc ids per query, when shipped with the data

    def summary(self) -> dict[str, Any]:
        return {
            "description": self.description,
            "n_docs": self.docs.n_rows,
            "n_queries": self.queries.n_rows,
            "dim": self.docs.dim,
            "nnz_per_doc": round(self.docs.nnz / max(self.docs.n_rows, 1), 1),
            "nnz_per_query": round(self.queries.nnz / max(self.queries.n_rows, 1), 1),
        }


# ---------------------------------------------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------------------------------------------


def _load_csr(path: Path) -> SparseBatch:
    z = np.load(path)
    return SparseBatch.from_arrays(z["indptr"], z["indices"], z["data"], dim=int(z["shape"][1]))


def load_real() -> Dataset | None:
    files = [LSR_DEV / f for f in ("docs.npz", "queries.npz", "gt_top100.npz")]
    missing = [f.name for f in files if not f.is_file()]
    if missing:
        log(f"real data: {LSR_DEV} lacks {', '.join(missing)}; skipping the real-data cases (synthetic still runs)")
        return None
    docs, queries = _load_csr(files[0]), _load_csr(files[1])
    gt = np.load(files[2])["ids"].astype(np.int64)
    desc = (
        f"real SPLADE vectors (`../shared/data/lsr-dev`): {queries.n_rows} queries x {docs.n_rows} docs, "
        f"vocab {docs.dim}, {docs.nnz / docs.n_rows:.0f} nnz/doc, {queries.nnz / queries.n_rows:.0f} nnz/query"
    )
    return Dataset("lsr-dev", desc, docs, queries, gt)


def make_synthetic(n_docs: int, n_queries: int, seed: int) -> Dataset:
    s = generate(n_docs, n_queries, seed=seed)
    docs = SparseBatch.from_arrays(s.docs.indptr, s.docs.indices, s.docs.data, dim=s.docs.dim)
    queries = SparseBatch.from_arrays(s.queries.indptr, s.queries.indices, s.queries.data, dim=s.queries.dim)
    nq = f"{n_queries // 1000}k" if n_queries >= 1000 and n_queries % 1000 == 0 else str(n_queries)
    name = f"synthetic {nq} x {n_docs // 1000}k"
    return Dataset(name, s.describe() + " (`benches/_synthetic.py`)", docs, queries, None)


# ---------------------------------------------------------------------------------------------------------------
# Anchors (numpy / scipy), each the fastest plain way we could write
# ---------------------------------------------------------------------------------------------------------------


def scipy_scores_top_k(q: Any, d: Any, k: int) -> tuple[I64, F32]:
    """The straightforward scipy way: ``(Q @ D.T).toarray()`` and a per-row argpartition.

    ``D.T`` of a CSR array is a CSC view; the product converts it to CSR inside the call (a transpose of the
    documents, as ``scores_top_k`` builds its postings inside the call).
    """
    return top_k_rows((q @ d.T).toarray(), k)


def scipy_scores_top_k_rows(q: Any, dt: Any, k: int) -> tuple[I64, F32]:
    """scipy's best effort: ``Q @ DT`` with ``DT = D.T.tocsr()`` built beforehand (untimed, like an index), then
    an argpartition over each row's stored scores (no densifying).

    A Python loop over query rows, each handling thousands of scores: faster than the dense route when most
    pairs share no term. Rows with fewer than ``k`` stored scores fall back to the dense row, so zero-score docs
    fill up as they would there.
    """
    s = q @ dt
    ip, ix, dv = s.indptr, s.indices, s.data
    n_rows, n_cols = s.shape
    kk = min(k, n_cols)
    ids = np.empty((n_rows, kk), dtype=np.int64)
    scores = np.empty((n_rows, kk), dtype=np.float32)
    for r in range(n_rows):
        a, b = ip[r], ip[r + 1]
        v, c = dv[a:b], ix[a:b]
        if b - a < kk:
            row = np.zeros((1, n_cols), dtype=np.float32)
            row[0, c] = v
            ids[r], scores[r] = (x[0] for x in top_k_rows(row, kk))
            continue
        p = np.argpartition(-v, kk - 1)[:kk]
        o = np.lexsort((c[p], -v[p]))
        ids[r], scores[r] = c[p][o], v[p][o]
    return ids, scores


def dense_scores_top_k(qd: F32, dd: F32, k: int) -> tuple[I64, F32]:
    """Dense BLAS product ``Q @ D.T`` and a per-row argpartition."""
    return top_k_rows(qd @ dd.T, k)


def _segments(indptr: I64) -> tuple[I64, I64, int]:
    """Row id and position within the row of every stored entry, and the longest row."""
    lengths = np.diff(indptr)
    rows = np.repeat(np.arange(len(lengths), dtype=np.int64), lengths)
    pos = np.arange(len(rows), dtype=np.int64) - indptr[:-1][rows]
    return rows, pos, int(lengths.max(initial=0))


def _csr_from_mask(
    rows: I64, n_rows: int, keep: NDArray[np.bool_], indices: NDArray[Any], data: F32
) -> tuple[I64, NDArray[Any], F32]:
    indptr = np.zeros(n_rows + 1, dtype=np.int64)
    np.cumsum(np.bincount(rows[keep], minlength=n_rows), out=indptr[1:])
    return indptr, indices[keep], data[keep]


def numpy_top_k(indptr: I64, indices: NDArray[Any], data: F32, k: int) -> tuple[I64, NDArray[Any], F32]:
    """Per-row top-``k`` of a CSR batch, ties to the smaller column, output in column order (like ``top_k``).

    Rows are padded to the longest row with -inf and ``np.partition`` finds each row's k-th largest value ``t``;
    an entry stays when ``v > t``, or ``v == t`` and it is among the first ``k - #(v > t)`` such entries of its row
    (rows are sorted by column, so "first" is "smallest column").
    """
    n_rows = len(indptr) - 1
    rows, pos, width = _segments(indptr)
    if width <= k:
        return indptr.copy(), indices.copy(), data.copy()
    padded = np.full(n_rows * width, -np.inf, dtype=np.float32)
    padded[rows * width + pos] = data
    kth = np.partition(padded.reshape(n_rows, width), width - k, axis=1)[:, width - k]
    t = kth[rows]
    gt = data > t
    eq = data == t
    need = k - np.bincount(rows[gt], minlength=n_rows)
    ceq = np.cumsum(eq)
    before = np.concatenate([[0], ceq])[indptr[:-1]]  # eq entries before each row starts
    keep = gt | (eq & (ceq - before[rows] <= need[rows]))
    return _csr_from_mask(rows, n_rows, keep, indices, data)


def numpy_prune_mass(indptr: I64, indices: NDArray[Any], data: F32, fraction: float) -> tuple[I64, NDArray[Any], F32]:
    """Per row, the fewest largest-|value| entries (ties: smaller column) whose float64 sum reaches ``fraction``.

    Rows are padded to the longest row; each entry gets a unique int64 key (inverted |value| bits, then its
    position, i.e. its column rank) so numpy's default (SIMD) argsort orders every row exactly as the tie rule
    says; a float64 cumsum along the sorted rows finds how many entries to keep. About 20 % faster here than a
    stable argsort of the float magnitudes.
    """
    n_rows = len(indptr) - 1
    rows, pos, width = _segments(indptr)
    lengths = np.diff(indptr)
    flat = rows * width + pos
    mag = np.abs(data)
    keys = np.full(n_rows * width, np.iinfo(np.int64).max, dtype=np.int64)  # padding sorts last
    keys[flat] = ((0x7FFFFFFF - mag.view(np.int32)).astype(np.int64) << 32) | pos  # |v| >= 0: bits are monotone
    order = np.argsort(keys.reshape(n_rows, width), axis=1)
    padded = np.zeros(n_rows * width, dtype=np.float64)
    padded[flat] = mag
    cum = np.cumsum(np.take_along_axis(padded.reshape(n_rows, width), order, axis=1), axis=1)
    total = cum[:, -1] if width else np.zeros(n_rows)
    need = np.minimum((cum < (fraction * total)[:, None]).sum(axis=1) + 1, lengths)
    need[total <= 0] = 0
    rank = np.empty_like(order)
    np.put_along_axis(rank, order, np.arange(width, dtype=order.dtype)[None, :], axis=1)
    keep = rank.reshape(-1)[flat] < need[rows]
    return _csr_from_mask(rows, n_rows, keep, indices, data)


def scipy_row_dot(a: Any, b: Any) -> NDArray[Any]:
    return np.asarray(a.multiply(b).sum(axis=1)).reshape(-1)


# ---------------------------------------------------------------------------------------------------------------
# Quality
# ---------------------------------------------------------------------------------------------------------------


def search_quality(
    ours: tuple[I64, F32],
    anchor: tuple[I64, F32],
    exact_scores: NDArray[np.floating[Any]],
    gt_ids: I64 | None,
    k: int,
) -> tuple[str, dict[str, float | int | bool | str]]:
    """Recall of our ids against the anchor's (plain and tie-aware) and against shipped exact ids."""
    ids, scores = ours
    a_ids, a_scores = anchor
    rec = recall_at_k(ids, a_ids, k)
    # Tie-aware: an id is right when its exact score reaches the anchor's k-th score (up to float32 rounding).
    kth = a_scores[:, k - 1].astype(np.float64)
    ours_exact = np.take_along_axis(exact_scores, np.maximum(ids, 0), axis=1).astype(np.float64)
    tol = 1e-5 * np.maximum(1.0, np.abs(kth))
    tie_rec = float(np.mean((ours_exact >= (kth - tol)[:, None]) & (ids >= 0)))
    max_diff = float(np.max(np.abs(scores.astype(np.float64) - a_scores.astype(np.float64))))
    metrics: dict[str, float | int | bool | str] = {
        f"recall@{k}_vs_anchor": round(rec, 6),
        f"tie_aware_recall@{k}_vs_anchor": round(tie_rec, 6),
        "max_abs_score_diff_vs_anchor": max_diff,
        "ids_identical_to_anchor": bool(np.array_equal(ids, a_ids)),
    }
    text = f"R@{k} vs anchor {rec:.4f} (ties {tie_rec:.4f}), max score diff {max_diff:.1e}"
    if gt_ids is not None:
        g = recall_at_k(ids, gt_ids, k)
        ga = recall_at_k(a_ids, gt_ids, k)
        metrics[f"recall@{k}_vs_exact_file"] = round(g, 6)
        metrics[f"anchor_recall@{k}_vs_exact_file"] = round(ga, 6)
        text += f"; R@{k} vs exact top-100 file {g:.4f} (anchor {ga:.4f})"
    return text, metrics


def csr_quality(
    ours: SparseBatch, anchor: tuple[I64, NDArray[Any], F32]
) -> tuple[str, dict[str, float | int | bool | str]]:
    """Whether our batch equals the anchor's arrays; else how many rows differ."""
    ip, idx, val = anchor
    same = (
        np.array_equal(ours.indptr, ip)
        and np.array_equal(ours.indices, idx.astype(np.uint32))
        and np.array_equal(ours.data, val)
    )
    if same:
        return "identical to anchor", {"identical": True, "rows_differing": 0, "nnz_out": int(ours.nnz)}
    other = SparseBatch.from_arrays(ip, idx, val, dim=ours.dim)
    n_diff = sum(
        1
        for r in range(ours.n_rows)
        if not (np.array_equal(ours.row(r)[0], other.row(r)[0]) and np.array_equal(ours.row(r)[1], other.row(r)[1]))
    )
    return (
        f"{n_diff} of {ours.n_rows} rows differ from anchor",
        {"identical": False, "rows_differing": n_diff, "nnz_out": int(ours.nnz), "nnz_anchor": len(idx)},
    )


# ---------------------------------------------------------------------------------------------------------------
# Cases
# ---------------------------------------------------------------------------------------------------------------


@dataclass
class Ctx:
    repeats: int
    threads: list[int]
    cases: list[CaseResult]
    notes: list[str]


def run_pair(
    ctx: Ctx,
    case: str,
    ds: Dataset,
    ours: Callable[[int], object],
    anchor: Callable[[], object],
    quality: tuple[str, dict[str, float | int | bool | str]],
    *,
    anchor_uses_blas: bool = False,
) -> None:
    text, metrics = quality
    if metrics.get("thread_invariant") is False:
        text += "; ours DIFFERS between thread counts"
    for nt in ctx.threads:
        with blas_threads(nt if anchor_uses_blas else 1) as how:
            timing = time_pair(functools.partial(ours, nt), anchor, ctx.repeats)
        anchor_threads = f"{nt if anchor_uses_blas else 1} ({how})"
        res = CaseResult.from_timing(case, ds.name, nt, timing, text, metrics, anchor_threads)
        ctx.cases.append(res)
        log(
            f"  {case} [{ds.name}] threads={nt}: ours {res.ours_ms:.2f} ms, anchor {res.anchor_ms:.2f} ms, "
            f"ratio {res.ratio:.3f}"
        )


def _thread_invariant(ctx: Ctx, fn: Callable[[int], Any]) -> bool:
    """Whether our result is the same for every thread count benchmarked."""
    outs = [fn(nt) for nt in ctx.threads]
    first = outs[0]
    for o in outs[1:]:
        if isinstance(first, SparseBatch):
            if not first.equals(o):
                return False
        elif isinstance(first, tuple):
            if not all(np.array_equal(x, y) for x, y in zip(first, o, strict=True)):
                return False
        elif not np.array_equal(first, o):
            return False
    return True


def bench_search(ctx: Ctx, ds: Dataset, *, dense: bool) -> None:
    q, d, k = ds.queries, ds.docs, SEARCH_K
    log(f"[{ds.name}] scores_top_k(k={k}): preparing scipy operands and quality reference")
    qs, ds_ = q.to_scipy(), d.to_scipy()
    dt = ds_.T.tocsr()

    def ours(nt: int) -> tuple[I64, F32]:
        return q.scores_top_k(d, k, num_threads=nt)

    def anchor() -> tuple[I64, F32]:
        return scipy_scores_top_k(qs, ds_, k)

    exact = (qs @ dt).toarray()
    ours_res = ours(ctx.threads[0])
    anchor_res = top_k_rows(exact, k)
    invariant = _thread_invariant(ctx, ours)
    text, metrics = search_quality(ours_res, anchor_res, exact, ds.gt_ids, k)
    metrics["thread_invariant"] = invariant
    log(f"  quality: {text}")
    case = f"scores_top_k k={k} vs scipy `(Q @ D.T).toarray()` + argpartition"
    run_pair(ctx, case, ds, ours, anchor, (text, metrics))

    def anchor_rows() -> tuple[I64, F32]:
        return scipy_scores_top_k_rows(qs, dt, k)

    text, metrics = search_quality(ours_res, anchor_rows(), exact, ds.gt_ids, k)
    metrics["thread_invariant"] = invariant
    log(f"  quality vs per-row CSR anchor: {text}")
    case = f"scores_top_k k={k} vs scipy `Q @ DT` (DT prebuilt) + argpartition per CSR row"
    run_pair(ctx, case, ds, ours, anchor_rows, (text, metrics))

    if not dense:
        return
    need = 4 * (q.n_rows * q.dim + d.n_rows * d.dim) + 12 * q.n_rows * d.n_rows
    avail = available_memory_bytes()
    if avail is None or need > DENSE_MEMORY_FRACTION * avail:
        msg = (
            f"[{ds.name}] dense route skipped: needs {need / 2**30:.1f} GiB, available "
            f"{'?' if avail is None else f'{avail / 2**30:.1f}'} GiB (limit {DENSE_MEMORY_FRACTION:.0%} of it)"
        )
        log(msg)
        ctx.notes.append(msg)
        return
    log(f"[{ds.name}] dense route: densifying Q and D ({need / 2**30:.1f} GiB in all)")
    qd, dd = q.to_dense(), d.to_dense()

    def dense_anchor() -> tuple[I64, F32]:
        return dense_scores_top_k(qd, dd, k)

    with blas_threads(ctx.threads[0]):
        dres = dense_anchor()
    text, metrics = search_quality(ours_res, dres, exact, ds.gt_ids, k)
    metrics["thread_invariant"] = invariant
    log(f"  quality vs dense: {text}")
    run_pair(
        ctx,
        f"scores_top_k k={k} vs dense BLAS `Q @ D.T` + argpartition",
        ds,
        ours,
        dense_anchor,
        (text, metrics),
        anchor_uses_blas=True,
    )


def bench_rows(ctx: Ctx, ds: Dataset) -> None:
    d = ds.docs
    ip, idx, val = d.indptr, d.indices, d.data

    log(f"[{ds.name}] top_k({ROW_K}) on {d.n_rows} docs")

    def ours_topk(nt: int) -> SparseBatch:
        return d.top_k(ROW_K, num_threads=nt)

    def anchor_topk() -> tuple[I64, NDArray[Any], F32]:
        return numpy_top_k(ip, idx, val, ROW_K)

    text, metrics = csr_quality(ours_topk(ctx.threads[0]), anchor_topk())
    metrics["thread_invariant"] = _thread_invariant(ctx, ours_topk)
    log(f"  quality: {text}")
    run_pair(ctx, f"top_k k={ROW_K} per row vs numpy padded partition", ds, ours_topk, anchor_topk, (text, metrics))

    log(f"[{ds.name}] prune_mass({MASS}) on {d.n_rows} docs")

    def ours_prune(nt: int) -> SparseBatch:
        return d.prune_mass(MASS, num_threads=nt)

    def anchor_prune() -> tuple[I64, NDArray[Any], F32]:
        return numpy_prune_mass(ip, idx, val, MASS)

    text, metrics = csr_quality(ours_prune(ctx.threads[0]), anchor_prune())
    metrics["thread_invariant"] = _thread_invariant(ctx, ours_prune)
    log(f"  quality: {text}")
    case = f"prune_mass {MASS} vs numpy padded argsort + float64 cumsum"
    run_pair(ctx, case, ds, ours_prune, anchor_prune, (text, metrics))

    log(f"[{ds.name}] dot(docs, shuffled docs) on {d.n_rows} rows")
    perm = np.random.default_rng(1).permutation(d.n_rows)
    other = d[perm]
    a_sp, b_sp = d.to_scipy(), other.to_scipy()

    def ours_dot(nt: int) -> F32:
        return d.dot(other, num_threads=nt)

    def anchor_dot() -> NDArray[Any]:
        return scipy_row_dot(a_sp, b_sp)

    mine, ref = ours_dot(ctx.threads[0]).astype(np.float64), anchor_dot().astype(np.float64)
    rel = float(np.max(np.abs(mine - ref)) / max(float(np.max(np.abs(ref))), 1e-30))
    dot_metrics: dict[str, float | int | bool | str] = {
        "max_abs_diff_over_max_abs": rel,
        "thread_invariant": _thread_invariant(ctx, ours_dot),
    }
    text = f"max |diff| / max |dot| = {rel:.1e} (ours sums in float64)"
    log(f"  quality: {text}")
    run_pair(ctx, "dot (row-wise) vs scipy `A.multiply(B).sum(1)`", ds, ours_dot, anchor_dot, (text, dot_metrics))


# ---------------------------------------------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument("--quick", action="store_true", help="small synthetic sizes, no dense route (about a minute)")
    ap.add_argument("--repeats", type=int, default=5, help="timed samples per side (default 5)")
    ap.add_argument("--out", type=Path, default=RESULTS_DIR / "sparse.json", help="JSON output path")
    ap.add_argument("--threads", type=str, default="1,2", help="comma-separated thread counts (default 1,2)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the synthetic data")
    ap.add_argument(
        "--no-malloc-tuning",
        action="store_true",
        help="leave glibc malloc as it is (by default freed memory is kept so repeated calls reuse warm pages)",
    )
    args = ap.parse_args(argv)
    malloc_tuned = False if args.no_malloc_tuning else keep_freed_memory()
    repeats: int = args.repeats
    if repeats < 1:
        ap.error("--repeats must be >= 1")
    threads = [int(t) for t in args.threads.split(",") if t.strip()]
    if not threads or min(threads) < 1:
        ap.error("--threads must list positive ints")
    n_docs, n_queries = (20_000, 200) if args.quick else (100_000, 1_000)

    machine = machine_info(["scipy", "sparsecore"])
    with blas_threads(1) as how:
        blas_control = how
    log(
        f"bench_sparse: {'quick' if args.quick else 'full'} mode, {repeats} repeats, threads {threads}; "
        f"{machine['cpu']}, {machine['cpus_usable']} usable cores, load {machine['loadavg_start']}; "
        f"anchor BLAS threads via {blas_control}; glibc keeps freed memory: {malloc_tuned}"
    )
    ctx = Ctx(repeats=repeats, threads=threads, cases=[], notes=[])

    datasets: list[Dataset] = []
    real = load_real()
    if real is not None:
        log(f"loaded {real.description}")
        datasets.append(real)
    else:
        ctx.notes.append(f"real data skipped: {LSR_DEV} not found")
    log(f"generating synthetic data: {n_queries} queries x {n_docs} docs")
    synth = make_synthetic(n_docs, n_queries, args.seed)
    log(f"generated {synth.description}")
    datasets.append(synth)

    for ds in datasets:
        bench_search(ctx, ds, dense=not args.quick)
        bench_rows(ctx, ds)

    ctx.notes.extend(
        [
            "Ratio = ours / anchor of the median times; below 1 means sparsecore is faster.",
            "The scipy sparse product, numpy partition/sort and scipy `multiply` are single-threaded: their "
            "2-thread rows repeat the 1-thread measurement. The dense route's BLAS runs with the row's thread count "
            f"(set via {blas_control}).",
            "Untimed preparation given to the anchors: the `DT prebuilt` case converts `D.T` to CSR once beforehand "
            "(ours rebuilds its postings of the docs inside every `scores_top_k` call, as the straightforward scipy "
            "case does inside `Q @ D.T`); the dense route's Q and D are densified once beforehand.",
            "glibc malloc keeps freed memory in the process"
            + (
                " (mallopt M_MMAP_MAX=0, M_TRIM_THRESHOLD=2 GiB), so repeated calls reuse warm pages: on this VM "
                "first-touch page faults cost ~6 ms/MB and otherwise dominated the allocation-heavy numpy anchors "
                "at 100k docs (`--no-malloc-tuning` measures without it)."
                if malloc_tuned
                else ": no (`--no-malloc-tuning` or not glibc); large arrays are page-faulted in on every call."
            ),
            "A warm-up call of each side precedes the timed samples; cases whose warm-up call exceeds 5 s take "
            "at most 3 samples.",
            "Search quality: `R@10 vs anchor` is plain id overlap; `ties` counts an id as right when its exact "
            "score reaches the anchor's 10th score (tied candidates at the cut may be chosen differently).",
        ]
    )
    load = machine.get("loadavg_start")
    cores = machine.get("cpus_usable") or 1
    if isinstance(load, list) and load and load[0] > 0.5 * cores:
        ctx.notes.append(
            f"Other jobs were running (load average {load[0]:.1f} at the start on {cores} cores): timings are "
            "noisier than on an idle machine and 2-thread rows may show little or no parallel speed-up; the "
            "alternating order spreads the load over both sides, and `ratio_of_minima` in the JSON is a "
            "load-robust cross-check."
        )
    mode = "quick" if args.quick else "full"
    config = {
        "repeats": repeats,
        "threads": threads,
        "search_k": SEARCH_K,
        "row_k": ROW_K,
        "mass_fraction": MASS,
        "synthetic": {"n_docs": n_docs, "n_queries": n_queries, "seed": args.seed},
        "anchor_blas_control": blas_control,
        "malloc_keep_freed_memory": malloc_tuned,
        "sparsecore_default_threads": int(_core.default_num_threads()),
    }
    out: Path = args.out
    write_results(
        out,
        benchmark="sparse",
        script="benches/bench_sparse.py",
        mode=mode,
        machine=machine,
        config=config,
        datasets={ds.name: ds.summary() for ds in datasets},
        cases=ctx.cases,
        notes=ctx.notes,
    )
    log(f"wrote {out}")
    if out.resolve().parent == RESULTS_DIR.resolve():
        md = regenerate_results_md()
        log(f"regenerated {md}")
    else:
        log(f"{out} is outside {RESULTS_DIR}: RESULTS.md not regenerated")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
