"""Shared helpers for the side-by-side benchmarks (DESIGN.md section 5).

Every benchmark runs ours and an anchor in one process on the same data, alternating the two call by call,
single-threaded and with 2 threads, several repeats; it reports medians and ``ratio = ours / anchor`` (below 1
means we are faster) plus a quality number, writes one JSON file under ``benches/results/`` and regenerates
``benches/RESULTS.md`` from all of them.

Nothing here imports sparsecore, so later benchmarks can reuse it for any pair of callables.
"""

from __future__ import annotations

import contextlib
import ctypes
import datetime as _dt
import importlib
import importlib.metadata
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

BENCH_DIR = Path(__file__).resolve().parent
RESULTS_DIR = BENCH_DIR / "results"
RESULTS_MD = BENCH_DIR / "RESULTS.md"
#: Hand-kept figures of earlier runs, appended to RESULTS.md by regenerate_results_md (the rest is generated).
HISTORY_MD = BENCH_DIR / "history.md"
REPO_ROOT = BENCH_DIR.parent

_T0 = time.perf_counter()


# ---------------------------------------------------------------------------------------------------------------
# Progress
# ---------------------------------------------------------------------------------------------------------------


def log(msg: str) -> None:
    """Print a progress line with the seconds elapsed since import (flushed, so pipes show it live)."""
    print(f"[{time.perf_counter() - _T0:7.1f}s] {msg}", flush=True)


# ---------------------------------------------------------------------------------------------------------------
# Timing: alternating ours / anchor, medians
# ---------------------------------------------------------------------------------------------------------------


@dataclass
class PairTiming:
    """Per-call times (ms) of ours and the anchor, measured alternately in one process."""

    ours_ms: list[float]
    anchor_ms: list[float]
    ours_number: int  # calls per sample (samples shorter than min_sample_s repeat the call)
    anchor_number: int

    @property
    def ours_median_ms(self) -> float:
        return statistics.median(self.ours_ms)

    @property
    def anchor_median_ms(self) -> float:
        return statistics.median(self.anchor_ms)

    @property
    def ratio(self) -> float:
        """``ours / anchor`` of the medians: below 1 means ours is faster."""
        return self.ours_median_ms / self.anchor_median_ms


def _time_once(fn: Callable[[], object], number: int) -> float:
    t0 = time.perf_counter()
    for _ in range(number):
        fn()
    return (time.perf_counter() - t0) / number * 1e3


def _calibrate(fn: Callable[[], object], min_sample_s: float) -> tuple[int, float]:
    """Warm ``fn`` up once and pick how many calls make one sample last at least ``min_sample_s``."""
    first = _time_once(fn, 1)  # warm-up: caches, lazy imports, page faults of fresh allocations
    if first / 1e3 >= min_sample_s:
        return 1, first
    second = max(_time_once(fn, 1), 1e-6)
    return max(1, min(10_000, int(np.ceil(min_sample_s * 1e3 / second)))), second


def time_pair(
    ours: Callable[[], object],
    anchor: Callable[[], object],
    repeats: int,
    *,
    min_sample_s: float = 0.02,
    slow_call_s: float = 5.0,
    slow_repeats: int = 3,
    settle_s: float = 0.0,
) -> PairTiming:
    """Time ``ours`` and ``anchor`` alternately, ``repeats`` samples each, after one warm-up call each.

    The order flips every repeat (ours first, then anchor first, ...) so a slow phase of the machine, e.g. another
    job starting, lands on both sides. A sample is the mean of ``number`` back-to-back calls, with ``number`` chosen
    so a sample lasts at least ``min_sample_s``; medians over samples are what the reports use. When a warm-up call
    of either side takes longer than ``slow_call_s``, only ``min(repeats, slow_repeats)`` samples are taken.
    ``settle_s``: idle time before every sample, so that worker threads the other side left spinning do not take
    cores from this one (OpenBLAS keeps its threads busy-waiting for ~0.1 s after a call: a 2-thread Lasso of ours
    measured 27 ms right after scikit-learn's BLAS call and 14 ms alone).
    """
    if repeats < 1:
        raise ValueError(f"repeats: must be >= 1, got {repeats}")
    n_ours, t_ours = _calibrate(ours, min_sample_s)
    n_anchor, t_anchor = _calibrate(anchor, min_sample_s)
    if max(t_ours, t_anchor) > slow_call_s * 1e3:
        repeats = min(repeats, slow_repeats)
    ours_ms: list[float] = []
    anchor_ms: list[float] = []

    def sample(fn: Callable[[], object], number: int) -> float:
        if settle_s > 0:
            time.sleep(settle_s)
        return _time_once(fn, number)

    for r in range(repeats):
        if r % 2 == 0:
            ours_ms.append(sample(ours, n_ours))
            anchor_ms.append(sample(anchor, n_anchor))
        else:
            anchor_ms.append(sample(anchor, n_anchor))
            ours_ms.append(sample(ours, n_ours))
    return PairTiming(ours_ms, anchor_ms, n_ours, n_anchor)


# ---------------------------------------------------------------------------------------------------------------
# Thread control for numpy / scipy anchors
# ---------------------------------------------------------------------------------------------------------------


def _openblas_controls() -> list[tuple[Callable[[], int], Callable[[int], None]]]:
    """(get, set) thread-count functions of every OpenBLAS already loaded in this process (Linux only).

    A small stand-in for threadpoolctl: it finds the loaded libraries in ``/proc/self/maps`` and calls their
    ``*openblas_{get,set}_num_threads*`` entry points (numpy's wheel bundles ``scipy_openblas64_``).
    """
    try:
        maps = Path("/proc/self/maps").read_text()
    except OSError:
        return []
    paths = sorted({line.split()[-1] for line in maps.splitlines() if "openblas" in line and ".so" in line})
    controls: list[tuple[Callable[[], int], Callable[[int], None]]] = []
    for path in paths:
        try:
            lib = ctypes.CDLL(path, mode=os.RTLD_NOLOAD | ctypes.RTLD_GLOBAL)
        except OSError:
            continue
        for prefix in ("scipy_", ""):
            for suffix in ("64_", ""):
                get = getattr(lib, f"{prefix}openblas_get_num_threads{suffix}", None)
                set_ = getattr(lib, f"{prefix}openblas_set_num_threads{suffix}", None)
                if get is not None and set_ is not None:
                    get.restype = ctypes.c_int
                    set_.argtypes = [ctypes.c_int]
                    set_.restype = None
                    controls.append((get, set_))
                    break
            else:
                continue
            break
    return controls


@contextlib.contextmanager
def blas_threads(n: int) -> Iterator[str]:
    """Limit BLAS/OpenMP threads of numpy/scipy to ``n`` inside the block; yields how it was done.

    Uses threadpoolctl when installed, else the OpenBLAS entry points directly (``"openblas-ctypes"``), else
    nothing (``"none"``: the anchors then run with whatever the environment set). Only call it after numpy has
    loaded its BLAS (importing numpy does).
    """
    try:
        tpc: Any = importlib.import_module("threadpoolctl")
    except ImportError:
        tpc = None
    if tpc is not None:
        with tpc.threadpool_limits(limits=n):
            yield "threadpoolctl"
        return
    controls = _openblas_controls()
    if not controls:
        yield "none"
        return
    old = [get() for get, _ in controls]
    for _, set_ in controls:
        set_(n)
    try:
        yield "openblas-ctypes"
    finally:
        for (_, set_), o in zip(controls, old, strict=True):
            set_(o)


# ---------------------------------------------------------------------------------------------------------------
# Allocator: keep freed memory in the process
# ---------------------------------------------------------------------------------------------------------------

_M_TRIM_THRESHOLD = -1  # glibc mallopt parameters (malloc.h)
_M_MMAP_MAX = -4


def keep_freed_memory() -> bool:
    """Make glibc malloc serve large blocks from its heap and keep freed memory instead of unmapping it.

    Without this every array above glibc's mmap threshold (at most 32 MiB) is a fresh mapping that is page-faulted
    in on each call. On the VMs these benchmarks run on, touching guest memory for the first time costs about
    6 ms/MB (vs ~0.3 ms/MB for recycled pages), which made allocation-heavy numpy anchors several times slower at
    100k docs and noisy. With this, repeated calls (ours and the anchor alike) reuse warm pages, so the timings
    compare computation. Returns whether glibc accepted it (False elsewhere: nothing changes).
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return bool(mallopt(_M_MMAP_MAX, 0)) and bool(mallopt(_M_TRIM_THRESHOLD, 2**31 - 1))


# ---------------------------------------------------------------------------------------------------------------
# Small shared computations
# ---------------------------------------------------------------------------------------------------------------


def top_k_rows(scores: NDArray[np.floating[Any]], k: int) -> tuple[NDArray[np.int64], NDArray[np.float32]]:
    """Per-row top-``k`` of a dense score matrix, best first (the plain numpy way: argpartition + sort of k).

    Ties inside the top k are ordered by column id; which of several tied candidates at the k-th place gets in is
    up to ``argpartition``. It partitions ``-scores`` at ``k - 1``: partitioning ``scores`` at ``n - k`` is
    equivalent but degenerates on rows full of equal values (measured: 6.3 s instead of 1.2 s on a 1000 x 100k
    score matrix that is 62 % zeros).
    """
    n_rows, n_cols = scores.shape
    kk = min(k, n_cols)
    part = np.argpartition(-scores, kk - 1, axis=1)[:, :kk]
    vals = np.take_along_axis(scores, part, axis=1)
    order = np.lexsort((part, -vals), axis=1) if kk > 1 else np.zeros((n_rows, kk), dtype=np.intp)
    ids = np.take_along_axis(part, order, axis=1).astype(np.int64)
    return ids, np.take_along_axis(vals, order, axis=1).astype(np.float32)


def recall_at_k(found: NDArray[np.integer[Any]], truth: NDArray[np.integer[Any]], k: int) -> float:
    """Mean over rows of ``|found[:, :k] & truth[:, :k]| / k`` (ids < 0 never match)."""
    f = np.asarray(found)[:, :k].astype(np.int64)
    t = np.asarray(truth)[:, :k].astype(np.int64)
    f = np.where(f < 0, -1, f)
    t = np.where(t < 0, -2, t)
    hits = (f[:, :, None] == t[:, None, :]).any(axis=2).sum(axis=1)
    return float(np.mean(hits / k))


def available_memory_bytes() -> int | None:
    """``MemAvailable`` from /proc/meminfo, or None where there is none."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


# ---------------------------------------------------------------------------------------------------------------
# Machine description
# ---------------------------------------------------------------------------------------------------------------


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=5
        )
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=5,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode != 0:
        return None
    return out.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")


def machine_info(extra_versions: Sequence[str] = ()) -> dict[str, Any]:
    """CPU, cores, memory, OS, Python and library versions, git commit, load average and thread env vars."""
    versions: dict[str, str | None] = {"python": platform.python_version(), "numpy": np.__version__}
    for name in extra_versions:
        try:
            mod: Any = importlib.import_module(name)
            version = getattr(mod, "__version__", None)
            if version is None:  # e.g. spams: the version of the distribution that installed the module
                dists = importlib.metadata.packages_distributions().get(name, [])
                version = importlib.metadata.version(dists[0]) if dists else "?"
            versions[name] = str(version)
        except ImportError:
            versions[name] = None
    mem = available_memory_bytes()
    env_keys = (
        "OMP_NUM_THREADS",
        "OPENBLAS_NUM_THREADS",
        "OPENBLAS_CORETYPE",
        "MKL_NUM_THREADS",
        "SPARSECORE_NUM_THREADS",
        "RAYON_NUM_THREADS",
    )
    try:
        total_mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        total_mem = None
    return {
        "cpu": _cpu_model(),
        "arch": platform.machine(),
        "logical_cpus": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "memory_total_gb": None if total_mem is None else round(total_mem / 2**30, 1),
        "memory_available_gb": None if mem is None else round(mem / 2**30, 1),
        "os": platform.platform(),
        "versions": versions,
        "git_commit": _git_commit(),
        "loadavg_start": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "env": {k: os.environ[k] for k in env_keys if k in os.environ},
        "date_utc": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }


# ---------------------------------------------------------------------------------------------------------------
# Results: one JSON per benchmark file, RESULTS.md regenerated from all of them
# ---------------------------------------------------------------------------------------------------------------


@dataclass
class CaseResult:
    """One row of the results table: one operation on one data set at one thread count."""

    case: str  # e.g. "scores_top_k k=10 vs scipy CSR product + argpartition"
    dataset: str
    threads: int
    ours_ms: float
    anchor_ms: float
    ratio: float  # of the medians
    quality: str  # one short human-readable line for the table
    quality_metrics: dict[str, float | int | bool | str] = field(default_factory=dict)
    ours_samples_ms: list[float] = field(default_factory=list)
    anchor_samples_ms: list[float] = field(default_factory=list)
    anchor_threads: str = ""  # how the anchor's threads were set
    ratio_of_minima: float = float("nan")  # best sample vs best sample: less sensitive to other jobs' load

    @classmethod
    def from_timing(
        cls,
        case: str,
        dataset: str,
        threads: int,
        timing: PairTiming,
        quality: str,
        quality_metrics: dict[str, float | int | bool | str],
        anchor_threads: str,
    ) -> CaseResult:
        return cls(
            case=case,
            dataset=dataset,
            threads=threads,
            ours_ms=round(timing.ours_median_ms, 4),
            anchor_ms=round(timing.anchor_median_ms, 4),
            ratio=round(timing.ratio, 4),
            quality=quality,
            quality_metrics=quality_metrics,
            ours_samples_ms=[round(t, 4) for t in timing.ours_ms],
            anchor_samples_ms=[round(t, 4) for t in timing.anchor_ms],
            anchor_threads=anchor_threads,
            ratio_of_minima=round(min(timing.ours_ms) / min(timing.anchor_ms), 4),
        )


def _command_line() -> str:
    """How this process was started, with the script path relative to the repository when it is inside it."""
    argv = list(sys.argv)
    if argv and argv[0]:
        script = Path(argv[0]).resolve()
        with contextlib.suppress(ValueError):
            argv[0] = str(script.relative_to(REPO_ROOT))
    return " ".join(["python", *argv])


def write_results(
    path: Path,
    *,
    benchmark: str,
    script: str,
    mode: str,
    machine: dict[str, Any],
    config: dict[str, Any],
    datasets: dict[str, Any],
    cases: Sequence[CaseResult],
    notes: Sequence[str],
) -> dict[str, Any]:
    """Write one benchmark's results as JSON (atomically: a ``.tmp`` file renamed over the target)."""
    machine = dict(machine)
    if hasattr(os, "getloadavg"):
        machine["loadavg_end"] = list(os.getloadavg())
    payload: dict[str, Any] = {
        "benchmark": benchmark,
        "script": script,
        "mode": mode,
        "command": _command_line(),
        "machine": machine,
        "config": config,
        "datasets": datasets,
        "cases": [asdict(c) for c in cases],
        "notes": list(notes),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(payload, indent=2, sort_keys=False) + "\n")
    tmp.replace(path)
    return payload


_MD_HEADER = """# Benchmark results

Generated from the JSON files in `benches/results/` by `benches/_common.py` (each benchmark script rewrites this
file when it finishes; the closing measurement history comes from `benches/history.md`); do not edit by hand.
Reproduce with `make bench` (the quick sizes, about a minute) or run a benchmark at full size, e.g.
`.venv/bin/python benches/bench_sparse.py` (options `--quick`, `--repeats N`, `--out PATH`). Protocol (DESIGN.md
section 5): ours and the anchor run in one process on the same data, alternating call by call, with 1 and 2
threads; times are medians over the repeats; **ratio = ours / anchor** (below 1: we are faster); the quality
column shows that a speed-up hides no quality loss. Each section says how it was produced and
on which machine; its notes say which anchors cannot use a second thread.
"""


def _fmt_ms(ms: float) -> str:
    if ms >= 100:
        return f"{ms:.0f}"
    if ms >= 10:
        return f"{ms:.1f}"
    if ms >= 1:
        return f"{ms:.2f}"
    return f"{ms:.3f}"


def render_markdown(payloads: Sequence[dict[str, Any]]) -> str:
    """The RESULTS.md text for the given result payloads (one section per benchmark file)."""
    parts = [_MD_HEADER]
    for p in sorted(payloads, key=lambda x: str(x.get("benchmark", ""))):
        m = p.get("machine", {})
        v = m.get("versions", {})
        vers = ", ".join(f"{k} {val}" for k, val in v.items() if val)
        parts.append(f"\n## {p.get('benchmark')} (`{p.get('script')}`, {p.get('mode')} mode)\n\n")
        parts.append(f"Command: `{p.get('command', '?')}`. ")
        parts.append(
            f"{m.get('date_utc', '?')}, commit {m.get('git_commit') or '?'}; {m.get('cpu', '?')}, "
            f"{m.get('cpus_usable') or m.get('logical_cpus')} usable cores, {m.get('memory_total_gb', '?')} GB; "
            f"{vers}; load average at start {_fmt_load(m.get('loadavg_start'))}, "
            f"at end {_fmt_load(m.get('loadavg_end'))}.\n"
        )
        ds = p.get("datasets", {})
        if ds:
            parts.append("\nData:\n")
            for name, d in ds.items():
                parts.append(f"- **{name}**: {d.get('description', '')}\n")
        parts.append("\n| case | data | threads | ours ms | anchor ms | ratio | quality |\n")
        parts.append("|---|---|---:|---:|---:|---:|---|\n")
        for c in p.get("cases", []):
            parts.append(
                f"| {_cell(c['case'])} | {_cell(c['dataset'])} | {c['threads']} | {_fmt_ms(c['ours_ms'])} | "
                f"{_fmt_ms(c['anchor_ms'])} | {c['ratio']:.2f} | {_cell(c['quality'])} |\n"
            )
        notes = p.get("notes", [])
        if notes:
            parts.append("\nNotes:\n")
            for n in notes:
                parts.append(f"- {n}\n")
    return "".join(parts)


def _cell(text: object) -> str:
    """Table-cell text: pipes escaped, no line breaks."""
    return str(text).replace("|", "\\|").replace("\n", " ")


def _fmt_load(load: object) -> str:
    if isinstance(load, list) and load:
        return "/".join(f"{x:.1f}" for x in load)
    return "?"


def regenerate_results_md(
    results_dir: Path = RESULTS_DIR, md_path: Path = RESULTS_MD, history_path: Path = HISTORY_MD
) -> Path:
    """Rewrite ``md_path`` from every ``*.json`` under ``results_dir`` (unreadable files are skipped with a note),
    followed by the hand-kept measurement history in ``history_path`` when it exists."""
    payloads: list[dict[str, Any]] = []
    for f in sorted(results_dir.glob("*.json")):
        try:
            data = json.loads(f.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            log(f"RESULTS.md: skipping {f.name}: {exc}")
            continue
        if isinstance(data, dict) and "cases" in data:
            payloads.append(data)
    text = render_markdown(payloads)
    if history_path.is_file():
        text = text.rstrip("\n") + "\n\n" + history_path.read_text()
    md_path.write_text(text)
    return md_path
