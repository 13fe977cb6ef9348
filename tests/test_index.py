"""InvertedIndex: exact mode against brute force, approximate recall, filters, updates, persistence, threads."""

from __future__ import annotations

import pickle
import threading
import zlib
from pathlib import Path

import numpy as np
import pytest
import sparsecore as sc
from hypothesis import given, settings
from hypothesis import strategies as st
from sparsecore.exceptions import (
    DTypeError,
    IndexFormatError,
    IndexOutOfRangeError,
    InvalidArgumentError,
    NonFiniteError,
    ShapeMismatchError,
    SparseFormatError,
    UnknownIdError,
)
from sparsecore.testing.strategies import sparse_batches

DIM = 40


def brute_force(
    docs: sc.SparseBatch, ids: np.ndarray, q: sc.SparseBatch, k: int, keep: np.ndarray | None = None
) -> list[list[tuple[int, float]]]:
    """Oracle: visible documents with a positive dot product, by (score desc, id asc), in float64."""
    dense_d = docs.to_dense().astype(np.float64)
    dense_q = q.to_dense().astype(np.float64)
    out = []
    for row in dense_q @ dense_d.T:
        hits = [(int(ids[j]), float(row[j])) for j in range(len(ids)) if row[j] > 0 and (keep is None or keep[j])]
        hits.sort(key=lambda h: (-h[1], h[0]))
        out.append(hits[:k])
    return out


def as_hits(ids: np.ndarray, scores: np.ndarray) -> list[list[tuple[int, float]]]:
    rows = zip(ids, scores, strict=True)
    return [[(int(i), float(s)) for i, s in zip(ri, rs, strict=True) if i >= 0] for ri, rs in rows]


def assert_same(got: list[list[tuple[int, float]]], want: list[list[tuple[int, float]]]) -> None:
    assert len(got) == len(want)
    for g, w in zip(got, want, strict=True):
        assert [i for i, _ in g] == [i for i, _ in w]
        np.testing.assert_allclose([s for _, s in g], [s for _, s in w], rtol=1e-6, atol=1e-9)


# Non-negative multiples of 0.25 make every score exact in float32, so ids (with ties by id) must match.
exact_docs = sparse_batches(max_rows=60, dim=DIM, nonneg=True, max_row_nnz=8).map(
    lambda b: sc.SparseBatch(b.indptr, b.indices, np.round(b.data * 4) / 4, b.dim)
)
exact_queries = sparse_batches(max_rows=5, dim=DIM, nonneg=True, max_row_nnz=6).map(
    lambda b: sc.SparseBatch(b.indptr, b.indices, np.round(b.data * 4) / 4, b.dim)
)


@settings(max_examples=40, deadline=None)
@given(
    docs=exact_docs,
    queries=exact_queries,
    k=st.integers(1, 70),
    block_size=st.sampled_from([1, 3, 8, 32]),
    reorder=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_exact_mode_equals_brute_force(
    docs: sc.SparseBatch, queries: sc.SparseBatch, k: int, block_size: int, reorder: bool, seed: int
) -> None:
    rng = np.random.default_rng(seed)
    ids = rng.permutation(10 * docs.n_rows + 1)[: docs.n_rows].astype(np.int64)
    idx = sc.InvertedIndex.build(docs, ids, mode="exact", block_size=block_size, reorder=reorder)
    got_ids, got_scores = idx.search(queries, k)
    # No more columns than documents: a k beyond the index never sizes the output.
    assert got_ids.shape == (queries.n_rows, min(k, docs.n_rows))
    assert got_scores.shape == got_ids.shape
    assert np.all(got_scores[got_ids < 0] == -np.inf)
    assert_same(as_hits(got_ids, got_scores), brute_force(docs, ids, queries, k))
    for r in range(queries.n_rows):
        one_ids, one_scores = idx.search_one(*queries.row(r), k=k)
        n = int((got_ids[r] >= 0).sum())
        assert np.array_equal(one_ids, got_ids[r, :n])
        assert np.array_equal(one_scores, got_scores[r, :n])

    # Filters: an id allow-list and a boolean mask over external ids give the exact top-k among the allowed.
    keep = rng.random(docs.n_rows) < 0.3
    want = brute_force(docs, ids, queries, k, keep)
    assert_same(as_hits(*idx.search(queries, k, filter=ids[keep])), want)
    mask = np.zeros(int(ids.max()) + 1 if ids.size else 1, dtype=bool)
    mask[ids[keep]] = True
    assert_same(as_hits(*idx.search(queries, k, filter=mask)), want)

    # Deletes never come back; compaction keeps the results.
    dead = rng.random(docs.n_rows) < 0.4
    assert idx.delete(ids[dead]) == int(dead.sum())
    want = brute_force(docs, ids, queries, k, ~dead)
    assert_same(as_hits(*idx.search(queries, k)), want)
    idx.compact()
    assert idx.n_segments == (1 if (~dead).any() else 0)
    assert len(idx) == int((~dead).sum())
    assert_same(as_hits(*idx.search(queries, k)), want)


@settings(max_examples=25, deadline=None)
@given(docs=exact_docs, extra=exact_docs, queries=exact_queries, k=st.integers(1, 20))
def test_add_makes_documents_searchable(
    docs: sc.SparseBatch, extra: sc.SparseBatch, queries: sc.SparseBatch, k: int
) -> None:
    idx = sc.InvertedIndex.build(docs, mode="exact", block_size=4)
    new_ids = idx.add(extra)
    assert np.array_equal(new_ids, np.arange(docs.n_rows, docs.n_rows + extra.n_rows))
    both = sc.SparseBatch.concat([docs, extra])
    assert_same(as_hits(*idx.search(queries, k)), brute_force(both, np.arange(both.n_rows), queries, k))
    assert len(idx) == both.n_rows
    assert all(i in idx for i in range(both.n_rows))


def clustered(n_docs: int, n_queries: int, seed: int) -> tuple[sc.SparseBatch, sc.SparseBatch]:
    """Topic-structured non-negative data: documents and queries draw most terms from one topic."""
    rng = np.random.default_rng(seed)
    dim, n_topics = 2000, 20
    topics = [rng.choice(dim, size=120, replace=False) for _ in range(n_topics)]

    def sample(n: int, nnz: int) -> sc.SparseBatch:
        rows = []
        for _ in range(n):
            t = topics[int(rng.integers(n_topics))]
            cols = np.unique(np.concatenate([rng.choice(t, nnz), rng.integers(0, dim, nnz // 4)]))
            rows.append((cols, rng.lognormal(0, 0.7, cols.size)))
        return sc.SparseBatch.from_pairs(rows, dim)

    return sample(n_docs, 40), sample(n_queries, 12)


def recall_at(got: np.ndarray, want: np.ndarray) -> float:
    per_query = [len(set(g[g >= 0]) & set(w[w >= 0])) / max(1, (w >= 0).sum()) for g, w in zip(got, want, strict=True)]
    return float(np.mean(per_query))


def test_approximate_presets_meet_a_recall_floor_and_exact_is_exact() -> None:
    docs, queries = clustered(3000, 100, seed=1)
    idx = sc.InvertedIndex.build(docs)
    want, _ = queries.scores_top_k(docs, 10)
    exact_ids, _ = idx.search(queries, 10, recall_target=1.0)
    assert recall_at(exact_ids, want) == 1.0
    for target in (0.9, 0.95, 0.99):
        got, _ = idx.search(queries, 10, recall_target=target)
        # Presets are tuned on real SPLADE vectors; on this small synthetic set allow some slack below target.
        assert recall_at(got, want) >= target - 0.1


def test_approximate_results_carry_true_scores() -> None:
    docs, queries = clustered(1000, 30, seed=2)
    idx = sc.InvertedIndex.build(docs)
    ids, scores = idx.search(queries, 10, alpha=0.3, beta=0.5)
    dense = queries.scores(docs)
    for r in range(queries.n_rows):
        ok = ids[r] >= 0
        np.testing.assert_allclose(scores[r, ok], dense[r, ids[r, ok]], rtol=1e-5)
        assert np.all(np.diff(scores[r, ok]) <= 0)


def test_one_query_search_runs_inline_and_equals_the_batch_path() -> None:
    # A one-row search takes the calling-thread path (search_one); it must give what the pooled batch path gives.
    docs, queries = clustered(1500, 12, seed=3)
    idx = sc.InvertedIndex.build(docs, ids=np.arange(1500, dtype=np.int64) * 3 + 7)
    allowed = np.arange(1500, dtype=np.int64)[::2] * 3 + 7
    settings_list: list[dict[str, object]] = [
        {"recall_target": 1.0},
        {},
        {"alpha": 0.4, "beta": 0.6},
        {"recall_target": 1.0, "filter": allowed},
    ]
    for kw in settings_list:
        batch_ids, batch_scores = idx.search(queries, 10, **kw)  # type: ignore[arg-type]
        for r in range(queries.n_rows):
            ids, scores = idx.search(queries[r : r + 1], 10, num_threads=2, **kw)  # type: ignore[arg-type]
            assert ids.shape == scores.shape == (1, 10)
            np.testing.assert_array_equal(ids[0], batch_ids[r])
            np.testing.assert_array_equal(scores[0], batch_scores[r])
    # fewer hits than k: padded like the batch path; more columns than documents are never returned
    small = sc.InvertedIndex.build(docs[:5])
    q = queries[:1]
    ids, scores = small.search(q, 50)
    pair_ids, pair_scores = small.search(queries[:2], 50)
    assert ids.shape == (1, 5)
    np.testing.assert_array_equal(ids[0], pair_ids[0])
    np.testing.assert_array_equal(scores[0], pair_scores[0])
    # a query of another dim still raises the batch path's error
    with pytest.raises(ShapeMismatchError):
        idx.search(sc.SparseBatch.from_dicts([{1: 1.0}], dim=docs.dim + 1), 10)
    with pytest.raises(InvalidArgumentError):
        idx.search(q, 10, num_threads=0)


def test_save_load_roundtrip_mmap_and_heap(tmp_path: Path) -> None:
    docs, queries = clustered(800, 20, seed=3)
    idx = sc.InvertedIndex.build(docs, np.arange(800) * 7 + 3, mode="exact", block_size=16)
    idx.add(clustered(50, 1, seed=4)[0], np.arange(50) + 10_000)
    idx.delete([3, 10, 10_001])
    want = idx.search(queries, 10)
    path = tmp_path / "idx.spc"
    idx.save(path)
    for mmap in (True, False):
        loaded = sc.InvertedIndex.load(path, mmap=mmap, mode="exact")
        assert loaded.is_file_backed
        assert len(loaded) == len(idx)
        assert loaded.n_segments == 2
        got = loaded.search(queries, 10)
        assert np.array_equal(got[0], want[0])
        assert np.array_equal(got[1], want[1])
        assert 3 not in loaded
        assert 10_000 in loaded
        # A loaded index keeps accepting updates.
        loaded.add(docs[:2], [-1, -2])
        loaded.compact()
        assert -1 in loaded
        assert not loaded.is_file_backed
    # Saving over a mapped file replaces it without disturbing the open mapping.
    mapped = sc.InvertedIndex.load(path, mode="exact")
    sc.InvertedIndex.build(docs[:5]).save(path)
    got = mapped.search(queries, 10)
    assert np.array_equal(got[0], want[0])
    assert len(sc.InvertedIndex.load(path)) == 5


def test_default_ids_need_no_id_map_and_behave_like_explicit_ones(tmp_path: Path) -> None:
    docs, queries = clustered(600, 15, seed=8)
    plain = sc.InvertedIndex.build(docs, mode="exact", block_size=16)
    shifted = sc.InvertedIndex.build(docs, np.arange(600) + 1_000, mode="exact", block_size=16)
    assert plain.memory_usage()["id_map"] == 0
    assert shifted.memory_usage()["id_map"] > 0
    for idx, off in ((plain, 0), (shifted, 1_000)):
        idx.delete([off + 5, off + 77])
        idx.add(clustered(10, 1, seed=9)[0])  # default ids continue after the largest id
        assert len(idx) == 608
        assert off + 5 not in idx
        assert off + 6 in idx
        assert off + 609 in idx
        ids, scores = idx.search(queries, 10, filter=np.arange(off, off + 300))
        ids0, scores0 = (plain if idx is shifted else idx).search(queries, 10, filter=np.arange(300))
        assert np.array_equal(np.where(ids >= 0, ids - off, -1), ids0)
        assert np.array_equal(scores, scores0)
    assert plain.memory_usage()["id_map"] == 0
    plain.save(tmp_path / "plain.spc")
    loaded = sc.InvertedIndex.load(tmp_path / "plain.spc", mode="exact")
    assert loaded.memory_usage()["id_map"] == 0
    assert len(loaded) == 608
    assert 5 not in loaded
    # The first ids off the default numbering switch to an explicit map; lookups stay right.
    loaded.add(docs[:1], [-3])
    assert loaded.memory_usage()["id_map"] > 0
    assert -3 in loaded
    assert 6 in loaded
    assert 5 not in loaded
    assert len(loaded) == 609
    assert loaded.delete([-3, 6]) == 2
    assert -3 not in loaded
    assert 6 not in loaded


def test_truncated_flipped_and_foreign_files_raise(tmp_path: Path) -> None:
    docs, _ = clustered(40, 1, seed=5)
    path = tmp_path / "small.spc"
    sc.InvertedIndex.build(docs, block_size=8).save(path)
    blob = path.read_bytes()
    bad = tmp_path / "bad.spc"
    for cut in range(len(blob)):
        bad.write_bytes(blob[:cut])
        for mmap in (True, False):
            with pytest.raises(IndexFormatError):
                sc.InvertedIndex.load(bad, mmap=mmap)
    rng = np.random.default_rng(0)
    # Every byte is checked (checksums, and zero padding): every flip is caught.
    for pos in rng.choice(len(blob), size=300, replace=False):
        flipped = bytearray(blob)
        flipped[pos] ^= 1 << int(rng.integers(8))
        bad.write_bytes(bytes(flipped))
        with pytest.raises(IndexFormatError):
            sc.InvertedIndex.load(bad, mmap=False)
    # An index layout other than this build's is refused by name, not misread (header checksum recomputed).
    other = bytearray(blob)
    other[40:44] = (3).to_bytes(4, "little")
    other[60:64] = zlib.crc32(bytes(other[:60])).to_bytes(4, "little")
    bad.write_bytes(bytes(other))
    with pytest.raises(IndexFormatError, match=r"index version 3 is not supported.*build the index again"):
        sc.InvertedIndex.load(bad)
    # A file of the format before the container, of a version that no longer loads, is refused by name too.
    legacy = bytearray((Path(__file__).parent / "data" / "legacy" / "index_v3.bin").read_bytes())
    legacy[8:12] = (1).to_bytes(4, "little")
    bad.write_bytes(bytes(legacy))
    with pytest.raises(IndexFormatError, match="format version 1 is not supported"):
        sc.InvertedIndex.load(bad)
    bad.write_bytes(b"PK\x03\x04" + bytes(200))
    with pytest.raises(IndexFormatError, match="bad magic"):
        sc.InvertedIndex.load(bad)
    with pytest.raises(FileNotFoundError):
        sc.InvertedIndex.load(tmp_path / "missing.spc")


def test_concurrent_searches_equal_serial() -> None:
    docs, queries = clustered(2000, 64, seed=6)
    idx = sc.InvertedIndex.build(docs)
    want = idx.search(queries, 10, num_threads=1)
    results: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    errors: list[BaseException] = []

    def worker(t: int) -> None:
        try:
            if t % 2:
                results[t] = idx.search(queries, 10, num_threads=2)
            else:
                rows = [idx.search_one(*queries.row(r), k=10) for r in range(queries.n_rows)]
                ids = np.full((queries.n_rows, 10), -1)
                for r, (i, _) in enumerate(rows):
                    ids[r, : len(i)] = i
                results[t] = (ids, want[1])
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(8)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert not errors
    for got in results.values():
        assert np.array_equal(got[0], want[0])


def test_bad_input_raises_typed_errors() -> None:
    docs = sc.SparseBatch.from_dicts([{1: 1.0}, {2: 2.0}], dim=10)
    idx = sc.InvertedIndex.build(docs)
    with pytest.raises(InvalidArgumentError, match="negative"):
        sc.InvertedIndex.build(sc.SparseBatch.from_dicts([{1: -1.0}], dim=10))
    with pytest.raises(InvalidArgumentError, match="ids"):
        sc.InvertedIndex.build(docs, [5, 5])
    with pytest.raises(ShapeMismatchError, match="ids"):
        sc.InvertedIndex.build(docs, [1, 2, 3])
    with pytest.raises(ShapeMismatchError, match="dim"):
        idx.search(sc.SparseBatch.from_dicts([{1: 1.0}], dim=11))
    with pytest.raises(InvalidArgumentError, match="k"):
        idx.search_one([1], [1.0], k=0)
    with pytest.raises(InvalidArgumentError, match="alpha"):
        idx.search_one([1], [1.0], alpha=1.5)
    with pytest.raises(InvalidArgumentError, match="recall_target"):
        idx.search_one([1], [1.0], recall_target=0.9, alpha=0.5)
    with pytest.raises(InvalidArgumentError, match="recall_target"):
        idx.search_one([1], [1.0], recall_target=0.9, patience=0.01)
    for bad in (-0.1, 1.5, float("nan")):
        with pytest.raises(InvalidArgumentError, match="patience"):
            idx.search_one([1], [1.0], patience=bad)
        with pytest.raises(InvalidArgumentError, match="patience"):
            idx.search(sc.SparseBatch.from_dicts([{1: 1.0}], dim=10), patience=bad)
    with pytest.raises(IndexOutOfRangeError, match="out of range"):
        idx.search_one([10], [1.0])
    with pytest.raises(NonFiniteError):
        idx.search_one([1], [np.nan])
    with pytest.raises(SparseFormatError, match="not sorted"):
        idx.search_one([3, 1], [1.0, 1.0])
    with pytest.raises(InvalidArgumentError, match="negative"):
        idx.search_one([1], [-1.0])
    with pytest.raises(IndexOutOfRangeError, match="negative"):
        idx.search_one([-1], [1.0])
    with pytest.raises(DTypeError):
        idx.search_one([1.5], [1.0])
    with pytest.raises(DTypeError, match="filter"):
        idx.search_one([1], [1.0], filter=[0.5])
    with pytest.raises(UnknownIdError, match="7"):
        idx.delete([7])
    assert idx.delete([7], ignore_missing=True) == 0
    with pytest.raises(InvalidArgumentError, match="already"):
        idx.add(docs[:1], [0])
    with pytest.raises(InvalidArgumentError, match="mode"):
        sc.InvertedIndex.build(docs, mode="fast")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="save"):
        pickle.dumps(idx)


def test_edge_cases() -> None:
    empty = sc.SparseBatch.empty(0, 10)
    idx = sc.InvertedIndex.build(empty)
    ids, scores = idx.search(sc.SparseBatch.from_dicts([{1: 1.0}, {}], dim=10), k=3)
    assert np.all(ids == -1)
    assert np.all(scores == -np.inf)
    assert len(idx) == 0
    assert idx.search_one([], [])[0].size == 0
    idx.add(sc.SparseBatch.from_dicts([{}, {1: 0.0}, {1: 2.0}], dim=10))
    got_ids, got_scores = idx.search_one([1], [1.0], k=5)
    assert got_ids.tolist() == [2]
    assert got_scores.tolist() == [2.0]
    mem = idx.memory_usage()
    assert set(mem) >= {"forward_index", "block_max"}
    assert all(v >= 0 for v in mem.values())
    assert "InvertedIndex(n_docs=3" in repr(idx)


def test_progress_line_reaches_100_percent_and_changes_nothing(capsys: pytest.CaptureFixture[str]) -> None:
    docs, queries = clustered(2000, 10, seed=7)
    quiet = sc.InvertedIndex.build(docs, progress=False)
    loud = sc.InvertedIndex.build(docs, progress=True)
    err = capsys.readouterr().err
    assert "building index over 2,000 documents" in err
    assert "100.0%" in err
    got, want = loud.search(queries, 10), quiet.search(queries, 10)
    assert np.array_equal(got[0], want[0])
    assert np.array_equal(got[1], want[1])


def test_explain_counts_the_work_and_approximation_does_less() -> None:
    # Above 65,536 documents segments keep no postings, so both searches use block bounds.
    docs, queries = clustered(70_000, 12, seed=8)
    idx = sc.InvertedIndex.build(docs, block_size=16)
    assert idx.memory_usage()["postings"] == 0
    exact_docs = approx_docs = patient_docs = 0
    for r in range(queries.n_rows):
        e = idx.explain(*queries.row(r), k=10, recall_target=1.0)
        a = idx.explain(*queries.row(r), k=10, alpha=0.3, beta=0.6)
        assert set(e) == {"n_hits", "blocks_bounded", "blocks_visited", "docs_scored", "docs_rescored"}
        assert e["n_hits"] == len(idx.search_one(*queries.row(r), k=10, recall_target=1.0)[0])
        assert e["blocks_visited"] <= e["blocks_bounded"]
        assert e["docs_scored"] <= 16 * e["blocks_visited"]
        assert e["docs_scored"] >= e["n_hits"]
        assert e["n_hits"] <= e["docs_rescored"] <= e["docs_scored"]
        exact_docs += e["docs_scored"]
        approx_docs += a["docs_scored"]
        # Patience only ever stops a search earlier; it needs at least 16 visited blocks without a new entry.
        p = idx.explain(*queries.row(r), k=10, alpha=1.0, beta=1.0, patience=1e-4)
        assert p["blocks_visited"] <= e["blocks_visited"]
        if e["blocks_visited"] <= 16:
            assert p == e
        patient_docs += p["docs_scored"]
    assert approx_docs < exact_docs
    assert patient_docs < exact_docs
    # Patience stops early but does not change scores: the hits found carry their exact scores, best first,
    # and much of the exact top 10 is found (stopping after only 16 idle blocks on these small clusters).
    # A patience of every block never stops early: exact results.
    exact_ids, _ = idx.search(queries, 10, recall_target=1.0)
    assert np.array_equal(idx.search(queries, 10, alpha=1.0, beta=1.0, patience=1.0)[0], exact_ids)
    ids, scores = idx.search(queries, 10, alpha=1.0, beta=1.0, patience=1e-4)
    dense = queries.scores(docs)
    for r in range(queries.n_rows):
        ok = ids[r] >= 0
        np.testing.assert_allclose(scores[r, ok], dense[r, ids[r, ok]], rtol=1e-5)
        assert np.all(np.diff(scores[r, ok]) <= 0)
    assert recall_at(ids, exact_ids) >= 0.5


def test_small_segments_search_term_at_a_time_exactly(tmp_path: Path) -> None:
    docs, queries = clustered(3000, 20, seed=8)
    idx = sc.InvertedIndex.build(docs, block_size=16)
    assert idx.memory_usage()["postings"] > 0
    exact = idx.search(queries, k=10, recall_target=1.0)
    for r in range(queries.n_rows):
        e = idx.explain(*queries.row(r), k=10, recall_target=1.0)
        a = idx.explain(*queries.row(r), k=10, alpha=0.3, beta=0.6)
        # Few postings: the approximate search takes the exact term-at-a-time path too (same work, same hits).
        assert a == e
        assert e["blocks_visited"] == e["blocks_bounded"] == -(-3000 // 16)
    approx = idx.search(queries, k=10, alpha=0.3, beta=0.6)
    assert np.array_equal(approx[0], exact[0])
    # Results equal brute force, also after save/load (postings are rebuilt on load, memory-mapped or not).
    want = brute_force(docs, np.arange(docs.n_rows), queries, 10)
    assert_same(as_hits(*exact), want)
    idx.save(tmp_path / "small.spc")
    for mmap in (True, False):
        loaded = sc.InvertedIndex.load(tmp_path / "small.spc", mmap=mmap)
        assert loaded.memory_usage()["postings"] == idx.memory_usage()["postings"]
        assert_same(as_hits(*loaded.search(queries, k=10, recall_target=1.0)), want)
