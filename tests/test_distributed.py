"""sparsecore.distributed on the local backend (threads, no Ray): exactness against one InvertedIndex, updates,
checked files, atomic builds, typed errors, and the HTTP endpoint over a real socket."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import sparsecore as sc
from _clustered import clustered as _clustered
from _endpoint import bad_requests, check_endpoint, post, query_json
from hypothesis import given, settings
from hypothesis import strategies as st
from sparsecore.distributed import MANIFEST_NAME, ShardedIndex, ShardUnavailableError, merge_top_k, read_manifest
from sparsecore.distributed.serve import MAX_BODY_BYTES, asgi_app, make_server, serve_in_thread
from sparsecore.exceptions import (
    DTypeError,
    IndexFormatError,
    InvalidArgumentError,
    ShapeMismatchError,
    UnknownIdError,
)
from sparsecore.testing.strategies import sparse_batches

DIM = 40
REPO = Path(__file__).resolve().parents[1]

# Non-negative multiples of 0.25 give many tied scores, which must be broken by global id as the single index does.
tied_docs = sparse_batches(max_rows=60, dim=DIM, nonneg=True, max_row_nnz=8).map(
    lambda b: sc.SparseBatch(b.indptr, b.indices, np.round(b.data * 4) / 4, b.dim)
)
float_docs = sparse_batches(max_rows=60, dim=DIM, nonneg=True, max_row_nnz=8)
queries_st = sparse_batches(max_rows=6, dim=DIM, nonneg=True, max_row_nnz=6)


def clustered(n_docs: int, n_queries: int, seed: int, dim: int = 3000) -> tuple[sc.SparseBatch, sc.SparseBatch]:
    """Topic-structured documents and queries (tests/_clustered.py) at this file's sizes."""
    return _clustered(n_docs, n_queries, seed, dim=dim, n_topics=25, topic_size=150, doc_nnz=40, query_nnz=12)


@pytest.fixture(scope="module")
def corpus() -> tuple[sc.SparseBatch, sc.SparseBatch]:
    return clustered(3000, 60, seed=1)


def exact_single(docs: sc.SparseBatch, ids: np.ndarray | None = None) -> sc.InvertedIndex:
    return sc.InvertedIndex.build(docs, ids, mode="exact")


def assert_same_result(got: tuple[np.ndarray, np.ndarray], want: tuple[np.ndarray, np.ndarray]) -> None:
    assert got[0].dtype == want[0].dtype == np.int64
    assert got[1].dtype == want[1].dtype == np.float32
    assert got[0].shape == want[0].shape
    np.testing.assert_array_equal(got[0], want[0])
    np.testing.assert_array_equal(got[1], want[1])


@settings(max_examples=40, deadline=None)
@given(
    docs=st.one_of(tied_docs, float_docs),
    queries=queries_st,
    n_shards=st.integers(1, 5),
    k=st.integers(1, 30),
    partition=st.sampled_from(["round_robin", "range"]),
    seed=st.integers(0, 2**16),
)
def test_exact_search_equals_one_inverted_index(
    docs: sc.SparseBatch, queries: sc.SparseBatch, n_shards: int, k: int, partition: str, seed: int
) -> None:
    # Range partitioning needs a document per shard; round robin leaves shards empty when there are too few.
    if partition == "range" and docs.n_rows < n_shards:
        n_shards = max(1, docs.n_rows)
    ids = np.random.default_rng(seed).permutation(10 * docs.n_rows + 1)[: docs.n_rows].astype(np.int64)
    want = exact_single(docs, ids).search(queries, k)
    with tempfile.TemporaryDirectory() as d:
        idx = ShardedIndex.build(
            docs,
            d,
            n_shards,
            ids=ids,
            backend="local",
            mode="exact",
            partition=partition,  # type: ignore[arg-type]
        )
        with idx:
            got = idx.search(queries, k)
            assert got.complete
            assert got.missing_shards == ()
            assert_same_result(got, want)
            assert len(idx) == docs.n_rows
            # k_per_shard >= k changes nothing in exact mode.
            assert_same_result(idx.search(queries, k, k_per_shard=k + 3), want)
            # Filters by global id pass through to every shard.
            keep = ids[::2]
            assert_same_result(
                idx.search(queries, k, filter=keep), exact_single(docs, ids).search(queries, k, filter=keep)
            )
        man = read_manifest(d)
        assert man.n_shards == n_shards
        assert sum(e.n_docs for e in man.shards) == docs.n_rows
        for s, e in enumerate(man.shards):
            routed = ids[man.route(ids) == s]
            assert e.n_docs == len(routed)
            if len(routed):
                assert (e.id_lo, e.id_hi) == (int(routed.min()), int(routed.max()))


def test_merge_breaks_ties_by_global_id() -> None:
    a = (np.array([[7, 2, -1]]), np.array([[1.0, 0.5, -np.inf]], np.float32))
    b = (np.array([[3, 9, 1]]), np.array([[1.0, 0.5, 0.5]], np.float32))
    ids, scores = merge_top_k([a, b], 1, 4)
    assert ids.tolist() == [[3, 7, 1, 2]]
    assert scores.tolist() == [[1.0, 1.0, 0.5, 0.5]]
    ids, scores = merge_top_k([a], 1, 4)  # fewer candidates than columns: padded
    assert ids.tolist() == [[7, 2, -1, -1]]
    assert scores[0, 2:].tolist() == [-np.inf, -np.inf]


@pytest.mark.parametrize("n_shards", [2, 4])
def test_approximate_search_keeps_recall(
    corpus: tuple[sc.SparseBatch, sc.SparseBatch], tmp_path: Path, n_shards: int
) -> None:
    docs, queries = corpus
    k = 10
    truth = exact_single(docs).search(queries, k)[0]
    single = sc.InvertedIndex.build(docs).search(queries, k, recall_target=0.9)[0]

    def recall(found: np.ndarray) -> float:
        return float(np.mean([len(set(f) & set(t)) / k for f, t in zip(found.tolist(), truth.tolist(), strict=True)]))

    with ShardedIndex.build(docs, tmp_path, n_shards, backend="local") as idx:
        r1 = recall(idx.search(queries, k, recall_target=0.9).ids)
        r2 = recall(idx.search(queries, k, k_per_shard=2 * k, recall_target=0.9).ids)
    # Each shard is a smaller index searched to the same target, so merging keeps the single index's recall.
    assert r1 >= min(0.9, recall(single)) - 0.02
    assert r2 >= r1 - 0.02
    assert r2 >= 0.88


def test_add_and_delete_route_by_id_and_persist(corpus: tuple[sc.SparseBatch, sc.SparseBatch], tmp_path: Path) -> None:
    docs, queries = corpus
    base, extra = docs[:2000], docs[2000:2500]
    single = exact_single(base)
    with ShardedIndex.build(base, tmp_path, 3, backend="local", mode="exact") as idx:
        new = idx.add(extra)
        assert new.tolist() == list(range(2000, 2500))
        assert single.add(extra).tolist() == new.tolist()
        explicit = np.array([10_000, 10_003, 10_007], np.int64)
        idx.add(docs[2500:2503], explicit)
        single.add(docs[2500:2503], explicit)
        assert idx.delete([5, 2001, 10_003]) == 3
        single.delete([5, 2001, 10_003])
        assert_same_result(idx.search(queries, 10), single.search(queries, 10))
        man = idx.manifest
        # The files on disk are exactly the shards' bases and deltas; replaced ones are removed.
        assert sorted(p.name for p in tmp_path.glob("shard_*")) == sorted(f for e in man.shards for f in e.files)
        # Ids route by id mod n_shards.
        for s, e in enumerate(man.shards):
            assert e.id_lo % 3 == s
            assert e.id_hi % 3 == s
        with pytest.raises(InvalidArgumentError, match="ids: already in the index"):
            idx.add(docs[:1], [2002])
        with pytest.raises(UnknownIdError, match="5"):
            idx.delete([5])
        assert idx.delete([5], ignore_missing=True) == 0
        assert idx.add(docs[:1]).tolist() == [10_008]  # after the largest id ever used
        single.add(docs[:1], [10_008])
        n = len(idx)
        assert n == len(single)
    # Reopened from disk, the updates are there.
    with ShardedIndex.open(tmp_path, backend="local") as again:
        assert len(again) == n
        assert_same_result(again.search(queries, 10), single.search(queries, 10))


def test_replicas_answer_alike_and_stats(corpus: tuple[sc.SparseBatch, sc.SparseBatch], tmp_path: Path) -> None:
    docs, queries = corpus
    want = exact_single(docs).search(queries, 5)
    with ShardedIndex.build(docs, tmp_path, 2, backend="local", mode="exact", replicas=2) as idx:
        for _ in range(3):  # searches rotate over the replicas
            assert_same_result(idx.search(queries, 5), want)
        st_ = idx.stats()
        assert st_["n_docs"] == docs.n_rows
        assert st_["n_shards"] == 2
        assert st_["replicas"] == 2
        assert [sum(r["n_docs"] for r in s["replicas"]) for s in st_["shards"]] == [2 * 1500, 2 * 1500]
        assert st_["file_bytes"] == sum(os.path.getsize(tmp_path / s["file"]) for s in st_["shards"])


def batches_of(docs: sc.SparseBatch, size: int) -> Iterator[sc.SparseBatch]:
    for i in range(0, docs.n_rows, size):
        yield docs[i : i + size]


def test_build_from_an_iterator_of_batches(corpus: tuple[sc.SparseBatch, sc.SparseBatch], tmp_path: Path) -> None:
    docs, queries = corpus
    want = exact_single(docs).search(queries, 10)
    with ShardedIndex.build(batches_of(docs, 700), tmp_path / "a", 3, backend="local", mode="exact") as idx:
        assert_same_result(idx.search(queries, 10), want)
    ids = np.arange(docs.n_rows, dtype=np.int64) * 3 + 1
    pairs = ((docs[i : i + 500], ids[i : i + 500]) for i in range(0, docs.n_rows, 500))
    with ShardedIndex.build(
        pairs, tmp_path / "b", 2, backend="local", mode="exact", partition="range", boundaries=[4000]
    ) as idx:
        assert_same_result(idx.search(queries, 10), exact_single(docs, ids).search(queries, 10))
        assert [e.id_hi < 4000 for e in idx.manifest.shards] == [True, False]
    assert not list((tmp_path / "b").glob(".spool-*"))  # the spool is removed
    with pytest.raises(InvalidArgumentError, match="boundaries: required"):
        ShardedIndex.build(batches_of(docs, 700), tmp_path / "c", 2, backend="local", partition="range")
    mixed = iter([docs[:5], (docs[5:10], np.arange(5, 10))])
    with pytest.raises(InvalidArgumentError, match="docs: batch 1 has ids"):
        ShardedIndex.build(mixed, tmp_path / "d", 2, backend="local")
    with pytest.raises(DTypeError, match="docs: batch 0 must be a SparseBatch"):
        ShardedIndex.build(iter([np.zeros(3)]), tmp_path / "e", 2, backend="local")


def flip_byte(path: Path, offset: int) -> None:
    with open(path, "r+b") as fh:
        fh.seek(offset)
        b = fh.read(1)
        fh.seek(offset)
        fh.write(bytes([b[0] ^ 0xFF]))


def test_checked_files(corpus: tuple[sc.SparseBatch, sc.SparseBatch], tmp_path: Path) -> None:
    docs, _ = corpus
    ShardedIndex.build(docs, tmp_path, 2, backend="local").close()
    shard1 = tmp_path / read_manifest(tmp_path).shards[1].file
    original = shard1.read_bytes()
    # A corrupted shard: caught by the manifest's SHA-256, and with verify=False by the index file's own CRCs.
    flip_byte(shard1, len(original) // 2)
    with pytest.raises(IndexFormatError, match=r"shard 1: .*SHA-256"):
        ShardedIndex.open(tmp_path, backend="local")
    with pytest.raises(IndexFormatError, match=r"shard 1: .*(checksum|CRC)"):
        ShardedIndex.open(tmp_path, backend="local", verify=False)
    # A shard file swapped for another valid one (shard 0's) is not the file the manifest names.
    shard1.write_bytes((tmp_path / read_manifest(tmp_path).shards[0].file).read_bytes())
    with pytest.raises(IndexFormatError, match=r"shard 1: .*bytes, the manifest says|shard 1: .*SHA-256"):
        ShardedIndex.open(tmp_path, backend="local")
    shard1.write_bytes(original)
    ShardedIndex.open(tmp_path, backend="local").close()
    # A missing shard file, a corrupted or missing manifest.
    shard1.rename(tmp_path / "moved")
    with pytest.raises(OSError, match="shard_1"):
        ShardedIndex.open(tmp_path, backend="local")
    (tmp_path / "moved").rename(shard1)
    manifest = tmp_path / MANIFEST_NAME
    good = manifest.read_bytes()
    flip_byte(manifest, len(good) - 10)
    with pytest.raises(IndexFormatError):
        ShardedIndex.open(tmp_path, backend="local")
    manifest.unlink()
    with pytest.raises(FileNotFoundError, match=r"no manifest.spc"):
        ShardedIndex.open(tmp_path, backend="local")


_KILLED_BUILD = textwrap.dedent(
    """
    import sys
    import numpy as np
    import sparsecore as sc
    from sparsecore.distributed import ShardedIndex
    rng = np.random.default_rng(0)
    n, dim, nnz = 60_000, 30_000, 100
    step = rng.integers(1, 4, n)
    start = rng.integers(0, dim - 3 * nnz, n)
    indices = (start[:, None] + np.arange(nnz)[None, :] * step[:, None]).astype(np.uint32).reshape(-1)
    indptr = np.arange(0, (n + 1) * nnz, nnz, dtype=np.int64)
    docs = sc.SparseBatch.from_arrays(indptr, indices, rng.random(n * nnz, dtype=np.float32), dim)
    ShardedIndex.build(docs, sys.argv[1], 1, backend="local", reorder=False).close()
    """
)


@pytest.mark.slow
def test_a_build_killed_mid_write_leaves_no_shard_that_loads(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO / "python") + os.pathsep + os.environ.get("PYTHONPATH", "")}
    killed_mid_write = False
    for _ in range(4):
        out = tmp_path / "idx"
        proc = subprocess.Popen([sys.executable, "-c", _KILLED_BUILD, str(out)], env=env)
        try:
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline and proc.poll() is None:
                if out.exists() and list(out.glob(".shard_0.spc.tmp-*")):
                    os.kill(proc.pid, signal.SIGKILL)
                    break
                time.sleep(0.0005)
        finally:
            proc.kill()
            proc.wait()
        temps = list(out.glob(".shard_0.spc.tmp-*")) if out.exists() else []
        assert not (out / MANIFEST_NAME).exists()
        if temps:
            killed_mid_write = True
            assert not (out / "shard_0.spc").exists()  # the final name only ever holds a whole file
            for t in temps:  # the half-written temporary is refused by the checked format
                with pytest.raises(IndexFormatError):
                    sc.InvertedIndex.load(t)
            with pytest.raises(FileNotFoundError, match="did not finish"):
                ShardedIndex.open(out, backend="local")
            break
    assert killed_mid_write, "the build finished writing before it could be killed in four tries"


def test_bad_arguments_raise_typed_errors(corpus: tuple[sc.SparseBatch, sc.SparseBatch], tmp_path: Path) -> None:
    docs, queries = corpus
    small = docs[:50]
    bad_build: list[tuple[dict[str, Any], type[Exception], str]] = [
        ({"n_shards": 0}, InvalidArgumentError, "n_shards"),
        ({"backend": "spark"}, InvalidArgumentError, "backend"),
        ({"partition": "hash"}, InvalidArgumentError, "partition"),
        ({"partition": "range", "boundaries": [10]}, ShapeMismatchError, "boundaries"),
        ({"partition": "range", "boundaries": [10, 5]}, InvalidArgumentError, "boundaries"),
        ({"boundaries": [10, 20]}, InvalidArgumentError, "boundaries"),
        ({"alpha": 0.5}, InvalidArgumentError, "alpha"),
        ({"mode": "fast"}, InvalidArgumentError, "mode"),
        ({"block_size": 0}, InvalidArgumentError, "block_size"),
        ({"max_retries": -1}, InvalidArgumentError, "max_retries"),
        ({"ids": np.zeros(50, np.int64)}, InvalidArgumentError, "ids: .* are both 0"),
        ({"ids": np.arange(3)}, ShapeMismatchError, "ids"),
    ]
    for i, (kw, exc, name) in enumerate(bad_build):
        args: dict[str, Any] = {"n_shards": 3, "backend": "local", **kw}
        n = args.pop("n_shards")
        with pytest.raises(exc, match=name):
            ShardedIndex.build(small, tmp_path / f"bad{i}", n, **args)
    with pytest.raises(DTypeError, match="docs"):
        ShardedIndex.build(42, tmp_path / "x", 2, backend="local")
    ShardedIndex.build(small, tmp_path / "ok", 3, backend="local").close()
    with pytest.raises(InvalidArgumentError, match=r"out_dir: .*overwrite=True"):
        ShardedIndex.build(small, tmp_path / "ok", 3, backend="local")
    ShardedIndex.build(small, tmp_path / "ok", 2, backend="local", overwrite=True).close()
    assert read_manifest(tmp_path / "ok").n_shards == 2
    assert sorted(p.name for p in (tmp_path / "ok").glob("shard_*")) == ["shard_0.spc", "shard_1.spc"]
    with ShardedIndex.open(tmp_path / "ok", backend="local") as idx:
        q = queries[:2]
        bad_search: list[tuple[dict[str, Any], type[Exception], str]] = [
            ({"k": 0}, InvalidArgumentError, "k"),
            ({"k_per_shard": 0}, InvalidArgumentError, "k_per_shard"),
            ({"timeout": -1.0}, InvalidArgumentError, "timeout"),
            ({"allow_partial": 1}, InvalidArgumentError, "allow_partial"),
            ({"nprobe": 3}, InvalidArgumentError, "nprobe"),
            ({"recall_target": 2.0}, InvalidArgumentError, "recall_target"),
        ]
        for kw, exc, name in bad_search:
            with pytest.raises(exc, match=name):
                idx.search(q, **{"k": 5, **kw})
        with pytest.raises(ShapeMismatchError, match="queries: dim"):
            idx.search(sc.SparseBatch.from_dicts([{1: 1.0}], dim=7), 3)
        with pytest.raises(DTypeError, match="queries"):
            idx.search(np.zeros((1, 3)), 3)  # type: ignore[arg-type]
        with pytest.raises(ShapeMismatchError, match="docs: dim"):
            idx.add(sc.SparseBatch.from_dicts([{1: 1.0}], dim=7))
        with pytest.raises(InvalidArgumentError, match="ids: repeated"):
            idx.add(small[:2], [900, 900])
        with pytest.raises(DTypeError, match="ids"):
            idx.delete([1.5])
    with pytest.raises(InvalidArgumentError, match="replicas"):
        ShardedIndex.open(tmp_path / "ok", backend="local", replicas=0)


def test_ray_backend_without_ray_names_the_extra(tmp_path: Path) -> None:
    # A fresh interpreter where `import ray` fails (as without the extra), whether or not Ray is installed here.
    code = textwrap.dedent(
        """
        import sys
        sys.modules["ray"] = None  # makes `import ray` raise ImportError
        import sparsecore as sc
        from sparsecore.distributed import ShardedIndex
        from sparsecore.exceptions import MissingExtraError
        docs = sc.SparseBatch.from_dicts([{1: 1.0}, {2: 1.0}], dim=4)
        for call in (lambda: ShardedIndex.build(docs, sys.argv[1], 2, backend="ray"),
                     lambda: ShardedIndex.open(sys.argv[2], backend="ray")):
            try:
                call()
            except MissingExtraError as exc:
                print(str(exc))
        ShardedIndex.build(docs, sys.argv[3], 2, backend="local").close()
        """
    )
    ShardedIndex.build(sc.SparseBatch.from_dicts([{1: 1.0}], dim=4), tmp_path / "b", 1, backend="local").close()
    env = {**os.environ, "PYTHONPATH": str(REPO / "python") + os.pathsep + os.environ.get("PYTHONPATH", "")}
    out = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path / "a"), str(tmp_path / "b"), str(tmp_path / "c")],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    lines = out.stdout.strip().splitlines()
    assert len(lines) == 2
    assert all("pip install 'sparsecore[distributed]'" in line for line in lines)


def test_importing_sparsecore_never_imports_ray() -> None:
    code = (
        "import sys, sparsecore; assert 'sparsecore.distributed' not in sys.modules; "
        "assert sparsecore.distributed.ShardedIndex.__name__ == 'ShardedIndex'; "
        "import sparsecore.distributed.serve; print('ray' in sys.modules)"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO / "python") + os.pathsep + os.environ.get("PYTHONPATH", "")}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# -- the HTTP endpoint ----------------------------------------------------------------------------------------------


def test_serve_answers_json_searches_over_http(corpus: tuple[sc.SparseBatch, sc.SparseBatch], tmp_path: Path) -> None:
    docs, queries = corpus
    idx = ShardedIndex.build(docs, tmp_path, 3, backend="local", mode="exact")
    server = make_server(idx, "127.0.0.1", 0)
    serve_in_thread(server)
    try:
        check_endpoint(f"http://127.0.0.1:{server.server_address[1]}", docs, queries, 3)
    finally:
        server.shutdown()
        server.server_close()
        idx.close()


def asgi_call(
    app: Any, method: str, path: str, chunks: list[bytes] | None = None, root_path: str = ""
) -> tuple[int, dict[str, str], Any]:
    """Drive an ASGI app through one HTTP request; the status, the headers and the decoded JSON body."""
    import asyncio

    parts = chunks or [b""]
    incoming = [{"type": "http.request", "body": c, "more_body": i + 1 < len(parts)} for i, c in enumerate(parts)]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return incoming.pop(0) if incoming else {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "method": method, "path": root_path + path, "root_path": root_path, "headers": []}
    asyncio.run(app(scope, receive, send))
    assert [m["type"] for m in sent] == ["http.response.start", "http.response.body"]
    headers = {k.decode(): v.decode() for k, v in sent[0]["headers"]}
    body = sent[1]["body"]
    assert int(headers["content-length"]) == len(body)
    return sent[0]["status"], headers, json.loads(body)


def test_asgi_app_answers_like_the_http_server(corpus: tuple[sc.SparseBatch, sc.SparseBatch], tmp_path: Path) -> None:
    import asyncio

    docs, queries = corpus
    idx = ShardedIndex.build(docs, tmp_path, 2, backend="local", mode="exact")
    app = asgi_app(idx, close_on_shutdown=True)
    qs = query_json(queries, 3)
    raw = json.dumps({"queries": qs, "k": 5}).encode()
    want_ids, want_scores = exact_single(docs).search(queries[:3], 5)
    # the body in three chunks, the app mounted under a prefix
    status, headers, body = asgi_call(app, "POST", "/search", [raw[:7], raw[7:20], raw[20:]], root_path="/sc")
    assert (status, headers["content-type"]) == (200, "application/json")
    assert [r["ids"] for r in body["results"]] == [[i for i in row if i >= 0] for row in want_ids.tolist()]
    np.testing.assert_array_equal(np.asarray([r["scores"] for r in body["results"]], np.float32), want_scores)
    for req, field in bad_requests(qs)[:6]:
        data = req if isinstance(req, bytes) else json.dumps(req).encode()
        status, _, body = asgi_call(app, "POST", "/search", [data])
        assert (status, body["error"]["field"]) == (400, field)
    status, _, body = asgi_call(app, "GET", "/health")
    assert (status, body["n_docs"], body["n_shards"]) == (200, docs.n_rows, 2)
    assert asgi_call(app, "GET", "/nothing")[0] == 404
    assert asgi_call(app, "DELETE", "/search")[0] == 405
    big = b" " * (MAX_BODY_BYTES // 2 + 1)
    status, _, body = asgi_call(app, "POST", "/search", [big, big, b"never read"])
    assert (status, body["error"]["type"], body["error"]["field"]) == (413, "RequestTooLarge", "body")
    # a client that disconnects mid-body gets no answer
    sent: list[Any] = []

    async def gone() -> dict[str, Any]:
        return {"type": "http.disconnect"}

    async def keep(message: Any) -> None:
        sent.append(message)

    asyncio.run(app({"type": "http", "method": "POST", "path": "/search"}, gone, keep))
    assert sent == []
    with pytest.raises(InvalidArgumentError, match="scope"):
        asyncio.run(app({"type": "websocket", "path": "/"}, gone, keep))
    # lifespan: startup completes; shutdown closes the index
    events = [{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}]

    async def life() -> dict[str, Any]:
        return events.pop(0)

    asyncio.run(app({"type": "lifespan"}, life, keep))
    assert [m["type"] for m in sent] == ["lifespan.startup.complete", "lifespan.shutdown.complete"]
    with pytest.raises(ShardUnavailableError, match="closed"):
        idx.search(queries[:1], 3)
    status, _, body = asgi_call(app, "GET", "/stats")  # after the shutdown: 503, not a dropped connection
    assert (status, body["error"]["type"]) == (503, "ShardUnavailableError")
    status, _, body = asgi_call(app, "POST", "/search", [raw])
    assert (status, body["error"]["type"]) == (503, "ShardUnavailableError")


def test_cli_serve_starts_and_answers(corpus: tuple[sc.SparseBatch, sc.SparseBatch], tmp_path: Path) -> None:
    docs, queries = corpus
    ShardedIndex.build(docs[:500], tmp_path, 2, backend="local", mode="exact").close()
    env = {**os.environ, "PYTHONPATH": str(REPO / "python") + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "sparsecore.cli", "serve", str(tmp_path), "--port", "0", "--quiet"],
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert "serving ShardedIndex(n_docs=500" in line
        url = line.split(" on ")[1].split()[0]
        idx, val = queries.row(0)
        status, body = post(url + "/search", {"query": {"indices": idx.tolist(), "values": val.tolist()}, "k": 4})
        assert status == 200
        assert body["results"][0]["ids"] == [i for i in exact_single(docs[:500]).search(queries[:1], 4)[0][0] if i >= 0]
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        if proc.stdout is not None:
            proc.stdout.close()


@settings(max_examples=30, deadline=None)
@given(batch=sparse_batches(max_rows=8, max_dim=100, include_huge_dims=True), width=st.integers(0, 5))
def test_packed_transfer_round_trips(batch: sc.SparseBatch, width: int) -> None:
    from sparsecore.distributed._shard import pack_queries, pack_result, unpack_queries, unpack_result

    ip, idx, val, dim = unpack_queries(pack_queries((batch.indptr, batch.indices, batch.data, batch.dim)))
    assert dim == batch.dim
    np.testing.assert_array_equal(ip, batch.indptr)
    np.testing.assert_array_equal(idx, batch.indices)
    np.testing.assert_array_equal(val, batch.data)
    ids = np.arange(batch.n_rows * width, dtype=np.int64).reshape(batch.n_rows, width) - 1
    scores = np.linspace(0, 1, ids.size, dtype=np.float32).reshape(ids.shape)
    got_ids, got_scores, count = unpack_result(pack_result(ids, scores, 17))
    assert count == 17
    assert got_ids.shape == ids.shape
    np.testing.assert_array_equal(got_ids, ids)
    np.testing.assert_array_equal(got_scores, scores)


def test_a_closed_index_refuses_every_call(corpus: tuple[sc.SparseBatch, sc.SparseBatch], tmp_path: Path) -> None:
    docs, queries = corpus
    idx = ShardedIndex.build(docs[:200], tmp_path, 2, backend="local", mode="exact")
    idx.close()
    idx.close()  # idempotent
    for call in (
        lambda: idx.search(queries[:2], 3),
        lambda: idx.add(docs[:1]),
        lambda: idx.delete([0]),
        lambda: idx.stats(),
    ):
        with pytest.raises(ShardUnavailableError, match="closed"):
            call()


def test_updates_write_deltas_and_compact_into_a_new_base(
    corpus: tuple[sc.SparseBatch, sc.SparseBatch], tmp_path: Path
) -> None:
    docs, queries = corpus
    single = exact_single(docs[:2000])
    with ShardedIndex.build(docs[:2000], tmp_path, 2, backend="local", mode="exact", replicas=2) as idx:
        base = [(e.file, e.sha256, (tmp_path / e.file).stat().st_mtime_ns) for e in idx.manifest.shards]
        for lo in range(2000, 2040, 10):  # small adds: one delta file per shard each, the bases untouched
            idx.add(docs[lo : lo + 10])
            single.add(docs[lo : lo + 10])
        idx.delete([3, 4, 2001])
        single.delete([3, 4, 2001])
        man = idx.manifest
        assert [(e.file, e.sha256, (tmp_path / e.file).stat().st_mtime_ns) for e in man.shards] == base
        assert [[d.op for d in e.deltas] for e in man.shards] == [["add"] * 4 + ["delete"]] * 2
        assert all(d.size < e.size / 20 for e in man.shards for d in e.deltas)  # an update costs its own size
        for _ in range(4):  # both replicas (searches rotate) answer with the deltas applied
            assert_same_result(idx.search(queries, 10), single.search(queries, 10))
        stats = idx.stats()
        assert [r["n_deltas"] for s in stats["shards"] for r in s["replicas"]] == [5, 5, 5, 5]
        assert stats["file_bytes"] == sum(p.stat().st_size for p in tmp_path.glob("shard_*"))
        # Enough updates to pass COMPACT_FRACTION of a base: a new base generation, the deltas and old base gone.
        idx.add(docs[2040:2600])
        single.add(docs[2040:2600])
        man = idx.manifest
        assert all(e.generation == 1 and not e.deltas and e.base_docs == e.n_docs for e in man.shards)
        assert sorted(p.name for p in tmp_path.glob("shard_*")) == ["shard_0.g1.spc", "shard_1.g1.spc"]
        assert_same_result(idx.search(queries, 10), single.search(queries, 10))
        idx.delete([7])
        single.delete([7])
    with ShardedIndex.open(tmp_path, backend="local") as again:  # reopened: base mapped, deltas replayed
        assert [len(e.deltas) for e in again.manifest.shards] == [0, 1] or [
            len(e.deltas) for e in again.manifest.shards
        ] == [1, 0]
        assert_same_result(again.search(queries, 10), single.search(queries, 10))


def test_a_corrupted_delta_fails_its_shard_with_a_typed_error(
    corpus: tuple[sc.SparseBatch, sc.SparseBatch], tmp_path: Path
) -> None:
    docs, queries = corpus
    ShardedIndex.build(docs[:600], tmp_path, 2, backend="local", mode="exact").close()
    with ShardedIndex.open(tmp_path, backend="local") as idx:
        idx.add(docs[600:604], [1000, 1002, 1004, 1006])  # all to shard 0
        delta = idx.manifest.shards[0].deltas[0].file
    raw = bytearray((tmp_path / delta).read_bytes())
    (tmp_path / f"{delta}.orig").write_bytes(bytes(raw))
    raw[len(raw) // 2] ^= 0xFF
    (tmp_path / delta).write_bytes(bytes(raw))

    def search(verify: bool) -> None:
        with ShardedIndex.open(tmp_path, backend="local", verify=verify) as idx:
            idx.search(queries[:2], 5)

    with pytest.raises(IndexFormatError, match=r"shard 0.*SHA-256"):
        search(True)
    with pytest.raises(IndexFormatError, match="shard 0"):
        search(False)  # unverified: the container's own checks still catch it
    # A well-formed delta whose contents do not apply (it re-adds a live id): unverified, its shard fails typed.
    from sparsecore._container import read_container, write_container

    good = read_container(tmp_path / f"{delta}.orig", "shard-delta", (1,))
    arrays = {k: good.array(k, t, 1, delta) for k, t in (("indptr", np.int64), ("indices", np.uint32))}
    arrays |= {"data": good.array("data", np.float32, 1, delta), "ids": np.array([0, 2, 4, 6], np.int64)}
    write_container(tmp_path / delta, "shard-delta", 1, good.meta, arrays)
    with pytest.raises(IndexFormatError, match=r"shard 0: .*d1\.spc: ids: .* already in the index"):
        search(False)
    (tmp_path / delta).unlink()
    with pytest.raises(FileNotFoundError, match="d1"):
        search(False)


def test_version_1_manifests_without_deltas_still_open(
    corpus: tuple[sc.SparseBatch, sc.SparseBatch], tmp_path: Path
) -> None:
    from sparsecore._container import read_container, write_container

    docs, queries = corpus
    ShardedIndex.build(docs[:500], tmp_path, 2, backend="local", mode="exact").close()
    meta = dict(read_container(tmp_path / MANIFEST_NAME, "shards", (2,)).meta)
    meta["shards"] = [{k: v for k, v in e.items() if k not in ("deltas", "base_docs")} for e in meta["shards"]]
    write_container(tmp_path / MANIFEST_NAME, "shards", 1, meta, {})
    man = read_manifest(tmp_path)
    assert all(e.deltas == () and e.base_docs == e.n_docs for e in man.shards)
    with ShardedIndex.open(tmp_path, backend="local") as idx:
        assert_same_result(idx.search(queries, 10), exact_single(docs[:500]).search(queries, 10))
        idx.add(docs[500:505])  # the next manifest is written as version 2
    assert read_container(tmp_path / MANIFEST_NAME, "shards", (1, 2)).kind_version == 2
