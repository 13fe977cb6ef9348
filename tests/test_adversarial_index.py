"""Adversarial tests of the inverted index: concurrent searches and updates, concurrent and killed saves, files
changed after loading, crafted files, absurd arguments.

Everything that could hang or crash the interpreter runs in a child process with a timeout, so a regression
fails the test instead of stalling or killing the suite.
"""

from __future__ import annotations

import ast
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import sparsecore as sc
from sparsecore.exceptions import IndexFormatError, ShapeMismatchError

DIM = 300


def corpus(n: int, seed: int, dim: int = DIM) -> sc.SparseBatch:
    """Documents with weights that are multiples of 0.25: every score is exact in float32."""
    rng = np.random.default_rng(seed)
    dense = (rng.random((n, dim)) < 0.03) * (rng.integers(1, 9, (n, dim)) / 4)
    return sc.SparseBatch.from_dense(dense.astype(np.float32))


def run_child(code: str, timeout: float, *args: str) -> subprocess.CompletedProcess[str]:
    """Run ``code`` in a fresh interpreter; a hang past ``timeout`` fails the calling test."""
    try:
        return subprocess.run(
            [sys.executable, "-c", textwrap.dedent(code), *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"the child process did not finish within {timeout} s (deadlock or endless read)")


# -- concurrency ----------------------------------------------------------------------------------------------

STRESS = """
import sys, threading, time
import numpy as np
import sparsecore as sc

seconds = float(sys.argv[1])
path = sys.argv[2]
rng = np.random.default_rng(7)
dim, n_base, n_pool, k = 300, 3000, 400, 10
dense = ((rng.random((n_base + n_pool, dim)) < 0.03) * (rng.integers(1, 9, (n_base + n_pool, dim)) / 4)).astype(
    np.float32
)
all_docs = sc.SparseBatch.from_dense(dense)
pool_ids = np.arange(10**6, 10**6 + n_pool)
all_ids = np.concatenate([np.arange(n_base), pool_ids])
queries = all_docs[rng.choice(n_base + n_pool, 24, replace=False)]
qscores = queries.to_dense().astype(np.float64) @ dense.T.astype(np.float64)

ix = sc.InvertedIndex.build(all_docs[:n_base], mode="exact")
# The serial model: live[j] for every document of all_docs; versions[v] is the live set after change v.
model_lock = threading.Lock()
live = np.zeros(n_base + n_pool, bool)
live[:n_base] = True
versions = [live.copy()]
errors = []
stop = threading.Event()
counts = {"searches": 0, "adds": 0, "deletes": 0, "compacts": 0, "saves": 0}


def expected(v, rows):
    out = []
    for r in rows:
        s = np.where(versions[v], qscores[r], 0.0)
        order = np.lexsort((all_ids, -s))
        hits = [(int(all_ids[j]), float(s[j])) for j in order[:k] if s[j] > 0]
        out.append(hits)
    return out


def got(ids, scores):
    return [[(int(i), float(x)) for i, x in zip(ri, rs) if i >= 0] for ri, rs in zip(ids, scores)]


def searcher(seed):
    r = np.random.default_rng(seed)
    while not stop.is_set():
        rows = r.choice(len(queries), 4, replace=False)
        with model_lock:
            v0 = len(versions) - 1
        if r.random() < 0.5:
            res = got(*ix.search(queries[rows], k=k, num_threads=int(r.integers(1, 3))))
        else:
            res = [got(*(a[None] for a in ix.search_one(*queries.row(int(q)), k=k))) [0] for q in rows]
        with model_lock:
            v1 = len(versions) - 1
        # Linearizable: the answer equals the serial model at some version the search overlapped.
        if not any(res == expected(v, rows) for v in range(v1, v0 - 1, -1)):
            errors.append(f"search saw no version in {v0}..{v1}: {res[:1]} vs {expected(v1, rows)[:1]}")
            stop.set()
        counts["searches"] += 1


def adder():
    r = np.random.default_rng(1)
    while not stop.is_set():
        with model_lock:
            free = np.flatnonzero(~live[n_base:])
            if free.size:
                j = n_base + int(r.choice(free))
                ix.add(all_docs[j : j + 1], [int(all_ids[j])])
                live[j] = True
                versions.append(live.copy())
                counts["adds"] += 1
        time.sleep(0.001)


def deleter():
    r = np.random.default_rng(2)
    while not stop.is_set():
        with model_lock:
            used = np.flatnonzero(live[n_base:])
            if used.size:
                j = n_base + int(r.choice(used))
                assert ix.delete([int(all_ids[j])]) == 1
                live[j] = False
                versions.append(live.copy())
                counts["deletes"] += 1
        time.sleep(0.001)


def compactor():
    while not stop.is_set():
        ix.compact()
        counts["compacts"] += 1
        time.sleep(0.01)


def saver():
    while not stop.is_set():
        ix.save(path)
        counts["saves"] += 1
        time.sleep(0.01)


def guard(f, *a):
    def run():
        try:
            f(*a)
        except BaseException as e:
            errors.append(f"{f.__name__}: {type(e).__name__}: {e}")
            stop.set()
    return run


threads = [threading.Thread(target=guard(searcher, s)) for s in range(3)]
threads += [threading.Thread(target=guard(f)) for f in (adder, deleter, compactor, saver)]
for t in threads:
    t.start()
time.sleep(seconds)
stop.set()
for t in threads:
    t.join()
final = got(*ix.search(queries, k=k))
if final != expected(len(versions) - 1, range(len(queries))):
    errors.append("final state differs from the serial model")
loaded = sc.InvertedIndex.load(path)
if len(loaded) < n_base:
    errors.append("saved index lost documents")
print(counts)
print("ERRORS", errors)
sys.exit(1 if errors else 0)
"""


@pytest.mark.slow
def test_searches_during_updates_never_deadlock_and_stay_linearizable(tmp_path: Path) -> None:
    """Searchers (batch and single), add, delete, compact and save threads at once, for a few seconds.

    Each search must equal the serial model at a version it overlapped; the run must end (the old lock design
    hung on the first add while a search ran).
    """
    res = run_child(STRESS, 180, "4", str(tmp_path / "ix.bin"))
    assert res.returncode == 0, res.stdout + res.stderr
    counts = ast.literal_eval(res.stdout.splitlines()[0])
    assert counts["searches"] > 20
    assert min(counts["adds"], counts["deletes"], counts["compacts"], counts["saves"]) > 0


def test_the_reported_deadlock_repro_finishes() -> None:
    """The issue's reproduction, verbatim in spirit: one searching thread, 300 single-document adds."""
    code = """
    import numpy as np, sparsecore as sc, threading
    rng = np.random.default_rng(0)
    docs = sc.SparseBatch.from_dense(((rng.random((5000, 1000)) < 0.02) * rng.random((5000, 1000))).astype(np.float32))
    ix = sc.InvertedIndex.build(docs, mode="exact")
    threading.Thread(target=lambda: [ix.search(docs[:50], k=10) for _ in iter(int, 1)], daemon=True).start()
    for i in range(300):
        ix.add(docs[i:i + 1], [10**6 + i])
    ix.compact()
    print(len(ix))
    """
    res = run_child(code, 120)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "5300"


def test_a_search_keeps_its_snapshot_while_the_index_changes() -> None:
    """Searches running while documents come and go return hits with true scores of documents that existed."""
    docs = corpus(2000, 1)
    ix = sc.InvertedIndex.build(docs, mode="exact")
    extra = corpus(200, 2)
    dense = np.vstack([docs.to_dense(), extra.to_dense()]).astype(np.float64)
    ids_all = np.concatenate([np.arange(2000), np.arange(5000, 5200)])
    row_of = {int(i): r for r, i in enumerate(ids_all)}
    q = docs[:30]
    qd = q.to_dense().astype(np.float64)
    bad: list[str] = []
    stop = threading.Event()

    def search() -> None:
        while not stop.is_set():
            ids, scores = ix.search(q, k=5)
            for r in range(ids.shape[0]):
                for i, s in zip(ids[r], scores[r], strict=True):
                    if i >= 0 and float(s) != qd[r] @ dense[row_of[int(i)]]:
                        bad.append(f"id {i}: score {s}")

    t = threading.Thread(target=search)
    t.start()
    for j in range(200):
        ix.add(extra[j : j + 1], [5000 + j])
        if j % 3 == 0:
            ix.delete([5000 + j])
    stop.set()
    t.join()
    assert not bad, bad[:5]
    assert len(ix) == 2000 + 200 - 67


# -- saving ---------------------------------------------------------------------------------------------------


def test_threads_saving_to_one_path_never_tear_the_file(tmp_path: Path) -> None:
    path = tmp_path / "ix.bin"
    versions = [sc.InvertedIndex.build(corpus(300, s)) for s in range(4)]
    signatures = [v.search(corpus(5, 99), k=3)[0].tolist() for v in versions]
    failures: list[BaseException] = []

    def save(v: sc.InvertedIndex) -> None:
        try:
            for _ in range(15):
                v.save(path)
        except BaseException as e:
            failures.append(e)

    for _ in range(3):
        threads = [threading.Thread(target=save, args=(v,)) for v in versions]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not failures, failures
        loaded = sc.InvertedIndex.load(path)
        assert loaded.search(corpus(5, 99), k=3)[0].tolist() in signatures
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ix.bin"]


SAVE_LOOP = """
import sys
import numpy as np
import sparsecore as sc
rng = np.random.default_rng(int(sys.argv[2]))
dense = (rng.random((int(sys.argv[3]), 2000)) < 0.05) * rng.random((int(sys.argv[3]), 2000))
ix = sc.InvertedIndex.build(sc.SparseBatch.from_dense(dense.astype(np.float32)), reorder=False)
print("ready", flush=True)
for _ in range(int(sys.argv[4])):
    ix.save(sys.argv[1])
"""


def test_processes_saving_to_one_path_never_tear_the_file(tmp_path: Path) -> None:
    path = tmp_path / "ix.bin"
    procs = [
        subprocess.Popen([sys.executable, "-c", SAVE_LOOP, str(path), str(s), "400", "20"], stdout=subprocess.DEVNULL)
        for s in range(3)
    ]
    for p in procs:
        assert p.wait(timeout=120) == 0
    assert len(sc.InvertedIndex.load(path)) == 400
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ix.bin"]


@pytest.mark.slow
def test_kill_during_save_keeps_the_previous_file_and_the_next_save_cleans_up(tmp_path: Path) -> None:
    """kill -9 a process in the middle of saving a ~15 MB index, several times: the file on disk always loads,
    and the next save removes the temporaries the killed processes left."""
    path = tmp_path / "ix.bin"
    small = sc.InvertedIndex.build(corpus(50, 3))
    small.save(path)
    rng = np.random.default_rng(0)
    killed_mid_save = 0
    for trial in range(6):
        with subprocess.Popen(
            [sys.executable, "-c", SAVE_LOOP, str(path), str(trial), "15000", "1000"],
            stdout=subprocess.PIPE,
        ) as p:
            assert p.stdout is not None
            assert p.stdout.readline().strip() == b"ready"
            time.sleep(float(rng.uniform(0.05, 0.6)))
            p.send_signal(signal.SIGKILL)
            p.wait(timeout=30)
        killed_mid_save += any(".tmp-" in q.name for q in tmp_path.iterdir())
        n = len(sc.InvertedIndex.load(path))
        assert n in (50, 15000)
    assert killed_mid_save >= 1, "no kill landed during a save; the test did not test anything"
    small.save(path)
    assert sorted(q.name for q in tmp_path.iterdir()) == ["ix.bin"]
    assert len(sc.InvertedIndex.load(path)) == 50


# -- files changed after loading, crafted files -------------------------------------------------------------

CHANGED = """
import os, sys, time
import numpy as np
import sparsecore as sc
from sparsecore.exceptions import IndexFormatError
path, how = sys.argv[1], sys.argv[2]
rng = np.random.default_rng(0)
docs = sc.SparseBatch.from_dense(((rng.random((3000, 500)) < 0.03) * rng.random((3000, 500))).astype(np.float32))
sc.InvertedIndex.build(docs).save(path)
ix = sc.InvertedIndex.load(path, mmap=True)
ix.search(docs[:5], k=5)
time.sleep(0.02)
size = os.path.getsize(path)
with open(path, "r+b") as f:
    if how == "truncate":
        f.truncate(size // 3)
    elif how == "zero":
        f.write(b"\\0" * size)
    else:
        f.seek(size // 2)
        f.write(bytes(rng.integers(0, 256, size // 2, dtype=np.uint8)))
for call in (lambda: ix.search(docs[:5], k=5), lambda: ix.search_one(*docs.row(0), k=5), lambda: ix.compact()):
    try:
        call()
    except IndexFormatError as e:
        assert "memory-mapped" in str(e), e
    else:
        sys.exit("no error")
print("ok")
"""


@pytest.mark.parametrize("how", ["truncate", "zero", "scramble"])
def test_a_mapped_file_changed_after_loading_gives_an_error_not_a_crash(tmp_path: Path, how: str) -> None:
    res = run_child(CHANGED, 120, str(tmp_path / "ix.bin"), how)
    assert res.returncode == 0, f"rc={res.returncode} (-7 is SIGBUS)\n{res.stdout}{res.stderr}"
    assert res.stdout.strip() == "ok"


@pytest.mark.parametrize("mmap", [False, True])
@pytest.mark.parametrize("target", ["/dev/zero", "/dev/urandom", "dir", "fifo"])
def test_non_regular_files_are_refused_without_reading(tmp_path: Path, target: str, mmap: bool) -> None:
    if target.startswith("/dev/") and not Path(target).exists():
        pytest.skip(f"{target} does not exist on this system")
    if target == "dir":
        target = str(tmp_path)
    elif target == "fifo":
        if not hasattr(os, "mkfifo"):
            pytest.skip("no FIFOs on this system")
        os.mkfifo(tmp_path / "pipe")
        target = str(tmp_path / "pipe")
    code = f"""
    import sparsecore as sc
    from sparsecore.exceptions import IndexFormatError
    try:
        sc.InvertedIndex.load({target!r}, mmap={mmap})
    except (IndexFormatError, IsADirectoryError) as e:
        print("refused:", e)
    """
    # A FIFO with no writer blocks open(); the loader must not even open one, so no writer is started here.
    res = run_child(code, 60)
    assert res.returncode == 0, res.stderr
    assert res.stdout.startswith("refused:")


CRAFTED = """
import sys
import numpy as np
import sparsecore as sc
from sparsecore.exceptions import IndexFormatError
good = open(sys.argv[1], "rb").read()
path = sys.argv[2]
rng = np.random.default_rng(int(sys.argv[3]))
verify = sys.argv[4] == "verify"
cases = refused = loaded = 0
q = sc.SparseBatch.from_dicts([{1: 1.0, 7: 0.5}], dim=300)
qs = sc.SparseBatch.from_dicts([{t: 1.0 for t in range(0, 300, 3)}, {5: 2.0}], dim=300)
def attempt(data):
    global cases, refused, loaded
    open(path, "wb").write(data)
    for mmap in (False, True):
        cases += 1
        try:
            ix = sc.InvertedIndex.load(path, mmap=mmap, verify=verify)
            loaded += 1
            ix.search(q, k=5)
            if not verify:  # unchecked arrays: every search path reads them without a crash
                ix.search(qs, k=5, recall_target=1.0)
                ix.search(qs, k=5, num_threads=2)
                ix.search_one(np.array([1, 7], dtype=np.uint32), np.array([1.0, 0.5], dtype=np.float32), k=3)
        except IndexFormatError:
            refused += 1
for cut in sorted(set(rng.integers(0, len(good), 40).tolist()) | {0, 1, 63, 64, len(good) - 1}):
    attempt(good[:cut])
for pos in rng.integers(0, len(good), 150):
    b = bytearray(good)
    b[pos] ^= 1 << int(rng.integers(0, 8))
    attempt(bytes(b))
for pos in rng.integers(0, 64, 20):
    b = bytearray(good)
    b[pos : pos + 8] = rng.integers(0, 256, 8, dtype=np.uint8).tobytes()
    attempt(bytes(b))
attempt(good + b"\\0" * 64)
print(cases, refused, loaded)
"""


def test_crafted_index_files_are_refused_or_harmless(tmp_path: Path) -> None:
    """Truncations, bit flips, scrambled header fields, appended bytes: each gives IndexFormatError, or (a flip in
    padding, which no checksum covers) an index that still searches; never a crash."""
    good = tmp_path / "good.bin"
    sc.InvertedIndex.build(corpus(500, 5)).save(good)
    res = run_child(CRAFTED, 300, str(good), str(tmp_path / "bad.bin"), "0", "verify")
    assert res.returncode == 0, res.stderr
    cases, refused, loaded = map(int, res.stdout.split())
    assert cases >= 400
    assert refused >= 0.8 * cases
    assert loaded == cases - refused  # nothing that loaded failed a search


@pytest.mark.parametrize("docs", [500, 70_000])
def test_unverified_loads_of_crafted_files_give_errors_or_answers_never_crashes(tmp_path: Path, docs: int) -> None:
    """``verify=False`` skips the checksums and per-element checks: flipped bits in the arrays then load, and a
    search either answers or raises IndexFormatError (a failed internal check), never a crash or a panic. 70,000
    documents make a segment too large for the term-major postings built at load time (the other search path)."""
    good = tmp_path / "good.bin"
    sc.InvertedIndex.build(corpus(docs, 5), block_size=8).save(good)
    res = run_child(CRAFTED, 300, str(good), str(tmp_path / "bad.bin"), "1", "trust")
    assert res.returncode == 0, res.stderr
    cases, refused, loaded = map(int, res.stdout.split())
    assert cases >= 400
    assert loaded > 0.5 * cases  # most array flips are not seen at load time any more ...
    assert refused > 0  # ... but truncations and header damage still are


def test_unverified_load_answers_like_a_verified_one(tmp_path: Path) -> None:
    docs = corpus(3000, 8)
    path = tmp_path / "ix.bin"
    built = sc.InvertedIndex.build(docs, ids=np.arange(3000) * 7 + 3)
    built.delete([10, 17])
    built.save(path)
    queries = corpus(40, 9)
    want = sc.InvertedIndex.load(path).search(queries, 10, recall_target=1.0)
    for mmap in (True, False):
        got = sc.InvertedIndex.load(path, mmap=mmap, verify=False).search(queries, 10, recall_target=1.0)
        assert np.array_equal(got[0], want[0])
        assert np.array_equal(got[1], want[1])
    with pytest.raises(sc.exceptions.InvalidArgumentError, match="verify"):
        sc.InvertedIndex.load(path, verify="no")  # type: ignore[arg-type]


# -- absurd arguments -----------------------------------------------------------------------------------------


def test_a_huge_k_is_capped_at_the_number_of_documents() -> None:
    docs = corpus(2000, 4)
    ix = sc.InvertedIndex.build(docs, mode="exact")
    ids, scores = ix.search(docs[:2], k=10**9)
    assert ids.shape == scores.shape == (2, 2000)
    assert ids[0, 0] == 0
    one_ids, _ = ix.search_one(*docs.row(0), k=10**9)
    assert one_ids.size == int((ids[0] >= 0).sum())
    ix.delete(np.arange(1000))
    assert ix.search(docs[:1], k=10**12)[0].shape == (1, 1000)


def test_a_boolean_mask_must_cover_every_live_id() -> None:
    docs = corpus(100, 6)
    ix = sc.InvertedIndex.build(docs, mode="exact")
    with pytest.raises(ShapeMismatchError, match="filter"):
        ix.search(docs[:1], k=3, filter=np.ones(99, bool))
    with pytest.raises(ShapeMismatchError, match="filter"):
        ix.search_one(*docs.row(0), k=3, filter=np.ones(10, bool))
    # Longer masks are fine; ids past the index are simply absent.
    ids, _ = ix.search(docs[:1], k=3, filter=np.ones(500, bool))
    assert ids[0, 0] == 0
    ix.delete([99])
    ids, _ = ix.search(docs[:1], k=3, filter=np.ones(99, bool))
    assert ids[0, 0] == 0
    ix.add(docs[:1], [-5])
    with pytest.raises(ShapeMismatchError, match="negative id"):
        ix.search(docs[:1], k=3, filter=np.ones(200, bool))


def test_loading_a_file_whose_header_lies_about_its_length_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "ix.bin"
    sc.InvertedIndex.build(corpus(50, 8)).save(path)
    raw = bytearray(path.read_bytes())
    raw[16:24] = (10**15).to_bytes(8, "little")
    path.write_bytes(bytes(raw))
    with pytest.raises(IndexFormatError, match="header says"):
        sc.InvertedIndex.load(path, mmap=False)
