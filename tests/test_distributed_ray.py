"""sparsecore.distributed on a local Ray cluster: tasks build, actors serve, and faults are injected for real
(killed and stopped actors, corrupted files, a build task killed mid-write). Skipped without Ray."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import sparsecore as sc
from _clustered import clustered as _clustered
from _endpoint import check_endpoint, get, post
from sparsecore.distributed import (
    MANIFEST_NAME,
    PartialResultWarning,
    ShardedIndex,
    ShardTimeoutError,
    ShardUnavailableError,
    _backends,
    read_manifest,
)
from sparsecore.distributed._backends import RayBackend
from sparsecore.distributed._shard import build_shard
from sparsecore.distributed.serve import free_port, ray_serve_app
from sparsecore.exceptions import IndexFormatError, IndexOutOfRangeError, InvalidArgumentError

ray: Any = pytest.importorskip("ray")
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def ray_cluster() -> Iterator[None]:
    ray.init(num_cpus=2, object_store_memory=200_000_000, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def clustered(n_docs: int, n_queries: int, seed: int, dim: int = 2000) -> tuple[sc.SparseBatch, sc.SparseBatch]:
    """Topic-structured documents and queries (tests/_clustered.py) at this file's sizes."""
    return _clustered(n_docs, n_queries, seed, dim=dim, n_topics=20, topic_size=120, doc_nnz=30, query_nnz=10)


@pytest.fixture(scope="module")
def corpus() -> tuple[sc.SparseBatch, sc.SparseBatch, sc.InvertedIndex]:
    docs, queries = clustered(2000, 40, seed=3)
    return docs, queries, sc.InvertedIndex.build(docs, mode="exact")


def same(got: tuple[np.ndarray, np.ndarray], want: tuple[np.ndarray, np.ndarray]) -> bool:
    return bool(np.array_equal(got[0], want[0]) and np.array_equal(got[1], want[1]))


def actor(idx: ShardedIndex, shard: int, replica: int = 0) -> Any:
    be = idx.backend
    assert isinstance(be, RayBackend)
    return be.actor(shard, replica)


def kill_for_good(a: Any) -> None:
    """Kill an actor without restart and wait until it is dead (``ray.kill`` is asynchronous)."""
    ray.kill(a, no_restart=True)
    deadline = time.monotonic() + 60
    while True:
        try:
            ray.get(a.ping.remote())
        except ray.exceptions.RayActorError:
            return
        assert time.monotonic() < deadline
        time.sleep(0.05)


def test_ray_build_and_search_equal_one_index(ray_cluster: None, corpus: Any, tmp_path: Path) -> None:
    docs, queries, single = corpus
    want = single.search(queries, 10)
    with ShardedIndex.build(docs, tmp_path, 3, backend="ray", mode="exact", max_retries=2) as idx:
        assert same(idx.search(queries, 10), want)
        pids = {r["pid"] for s in idx.stats()["shards"] for r in s["replicas"]}
        assert len(pids) == 3  # one actor process per shard
        assert os.getpid() not in pids
        idx.add(docs[:5])
        idx.delete([0, 1])
        single2 = sc.InvertedIndex.build(docs, mode="exact")
        single2.add(docs[:5])
        single2.delete([0, 1])
        be = idx.backend
        assert isinstance(be, RayBackend)
        assert not be.compiled  # compiled graphs are opt-in
        assert be.compiled_searches == 0
        assert same(idx.search(queries, 10), single2.search(queries, 10))
    # A big query batch travels through the object store once; results are the same.
    with ShardedIndex.open(tmp_path, backend="ray", compiled_graphs=True) as again:
        assert same(again.search(queries, 10), single2.search(queries, 10))
        be = again.backend
        assert isinstance(be, RayBackend)
        assert be.compiled_searches == 1  # through the compiled graph ...
        again.add(docs[5:7])
        assert not be._graphs  # ... which an update tears down
        single2.add(docs[5:7])
        assert same(again.search(queries, 10), single2.search(queries, 10))
        assert be.compiled_searches == 2  # compiled again, over the updated shards
        many = sc.SparseBatch.concat([queries] * 60)
        assert same(again.search(many, 10), single2.search(many, 10))
        assert be.compiled_searches == 2  # too big for the graph's channels: classic calls


def test_compiled_graph_searches_are_exact_and_survive_a_killed_actor(
    ray_cluster: None, corpus: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_backends, "GRAPH_RETRY_S", 0.0)
    # No idle teardown here (a slow, loaded machine can leave 2 s between searches; that path has its own test).
    monkeypatch.setattr(_backends, "GRAPH_IDLE_S", 600.0)
    docs, queries, single = corpus
    ShardedIndex.build(docs, tmp_path, 2, backend="local", mode="exact").close()
    with ShardedIndex.open(tmp_path, backend="ray", replicas=2, compiled_graphs=True) as idx:
        be = idx.backend
        assert isinstance(be, RayBackend)
        for i in range(6):  # one query at a time, alternating replica rows (one graph per row)
            assert same(idx.search(queries[i : i + 1], 10), single.search(queries[i : i + 1], 10))
        assert same(idx.search(queries, 1500), single.search(queries, 1500))  # a 720 kB answer per shard
        assert be.compiled_searches == 7
        assert sorted(be._graphs) == [0, 1]
        pid = ray.get(actor(idx, 1, 0).ping.remote())["pid"]
        os.kill(pid, signal.SIGKILL)
        while Path(f"/proc/{pid}").exists():  # gone (the raylet reaps it), not yet restarted
            time.sleep(0.01)
        want = single.search(queries, 10)
        for _ in range(2):  # each replica row once: row 0's graph fails and the search takes classic calls
            assert same(idx.search(queries, 10), want)
        assert be.compiled_searches == 8
        for _ in range(4):  # the restarted actor joins a recompiled graph
            assert same(idx.search(queries, 10), want)
        assert be.compiled_searches == 12
        assert ray.get(actor(idx, 1, 0).ping.remote())["pid"] != pid


def test_idle_compiled_graphs_are_torn_down(
    ray_cluster: None, corpus: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A live graph keeps its actors polling (a busy core each); after GRAPH_IDLE_S without use it is torn down."""
    monkeypatch.setattr(_backends, "GRAPH_IDLE_S", 0.4)
    docs, queries, single = corpus
    ShardedIndex.build(docs, tmp_path, 2, backend="local", mode="exact").close()
    with ShardedIndex.open(tmp_path, backend="ray", compiled_graphs=True) as idx:
        be = idx.backend
        assert isinstance(be, RayBackend)
        for _ in range(3):
            assert same(idx.search(queries, 10), single.search(queries, 10))
            assert be._graphs
        deadline = time.monotonic() + 30
        while be._graphs or (be._reaper is not None and be._reaper.is_alive()):  # torn down, the reaper done
            assert time.monotonic() < deadline
            time.sleep(0.1)
        assert same(idx.search(queries, 10), single.search(queries, 10))  # compiled again
        assert be.compiled_searches == 4
        with pytest.raises(sc.exceptions.InvalidArgumentError, match="compiled_graphs"):
            ShardedIndex.open(tmp_path, backend="ray", compiled_graphs="yes")  # type: ignore[arg-type]


def test_killing_a_shard_actor_during_searches_keeps_every_answer_exact(
    ray_cluster: None, corpus: Any, tmp_path: Path
) -> None:
    docs, queries, single = corpus
    want = single.search(queries, 10)
    with ShardedIndex.build(docs, tmp_path, 2, backend="ray", mode="exact") as idx:
        victim = actor(idx, 1)
        pid_before = ray.get(victim.ping.remote())["pid"]
        results: list[bool] = []
        started = threading.Event()

        def searches() -> None:
            for i in range(40):
                if i == 5:
                    started.set()
                results.append(same(idx.search(queries, 10), want))

        t = threading.Thread(target=searches)
        t.start()
        started.wait(60)
        ray.kill(victim, no_restart=False)  # Ray restarts it; calls in flight are retried after the restart
        t.join(300)
        assert not t.is_alive()
        assert results == [True] * 40
        assert ray.get(victim.ping.remote())["pid"] != pid_before  # it really was a new process


def test_a_stopped_shard_times_out_and_is_named(ray_cluster: None, corpus: Any, tmp_path: Path) -> None:
    docs, queries, single = corpus
    with ShardedIndex.build(docs, tmp_path, 3, backend="ray", mode="exact") as idx:
        pid = ray.get(actor(idx, 1).ping.remote())["pid"]
        os.kill(pid, signal.SIGSTOP)  # the process stays alive but answers nothing
        try:
            with pytest.raises(ShardTimeoutError, match=r"\[1\]") as info:
                idx.search(queries, 10, timeout=1.0)
            assert info.value.shards == (1,)
            with pytest.warns(PartialResultWarning, match=r"shards \[1\]"):
                res = idx.search(queries, 10, timeout=1.0, allow_partial=True)
            assert res.missing_shards == (1,)
            assert not res.complete
            assert "timed out" in res.errors[1]
            # The merge of the shards that answered is exact over their documents.
            others = np.flatnonzero(np.arange(docs.n_rows) % 3 != 1)
            assert same(res, single.search(queries, 10, filter=others))
            reports = [s["replicas"][0] for s in idx.stats(timeout=1.0)["shards"]]
            assert ["error" in r for r in reports] == [False, True, False]
        finally:
            os.kill(pid, signal.SIGCONT)
        assert same(idx.search(queries, 10, timeout=60), single.search(queries, 10))


def test_a_dead_replica_is_skipped_and_a_dead_shard_is_named(ray_cluster: None, corpus: Any, tmp_path: Path) -> None:
    docs, queries, single = corpus
    want = single.search(queries, 10)
    with ShardedIndex.build(docs, tmp_path, 2, backend="ray", mode="exact", replicas=2) as idx:
        kill_for_good(actor(idx, 0, 0))
        for _ in range(4):  # whichever replica a search starts with, it answers exactly
            assert same(idx.search(queries, 10), want)
        kill_for_good(actor(idx, 0, 1))
        with pytest.raises(ShardUnavailableError, match="shard 0"):
            idx.search(queries, 10)
        with pytest.warns(PartialResultWarning, match=r"shards \[0\]"):
            res = idx.search(queries, 10, allow_partial=True)
        assert res.missing_shards == (0,)
        assert same(res, single.search(queries, 10, filter=np.arange(1, docs.n_rows, 2)))


def test_a_corrupted_file_surfaces_the_format_error_after_a_restart(
    ray_cluster: None, corpus: Any, tmp_path: Path
) -> None:
    docs, queries, single = corpus
    with ShardedIndex.build(docs, tmp_path, 2, backend="ray", mode="exact") as idx:
        path = tmp_path / read_manifest(tmp_path).shards[1].file
        original = path.read_bytes()
        # Replace the file (as a careless copy would): the running actor keeps its old mapping...
        damaged = bytearray(original)
        damaged[len(damaged) // 2] ^= 0xFF
        tmp = tmp_path / "damaged"
        tmp.write_bytes(bytes(damaged))
        tmp.replace(path)
        assert same(idx.search(queries, 10), single.search(queries, 10))
        # ...and its restart checks the new file and reports why it cannot serve, naming the shard.
        victim = actor(idx, 1)
        ray.kill(victim, no_restart=False)
        deadline = time.monotonic() + 120
        while True:  # the kill is asynchronous: wait until the restarted actor answers
            try:
                ray.get(victim.ping.remote())
            except IndexFormatError:
                break
            assert time.monotonic() < deadline
            time.sleep(0.05)
        with pytest.raises(IndexFormatError, match=r"shard 1: .*SHA-256"):
            idx.search(queries, 10, timeout=120)
        with pytest.warns(PartialResultWarning, match="SHA-256"):
            res = idx.search(queries, 10, allow_partial=True)
        assert res.missing_shards == (1,)
        # With the file repaired, the next restart serves again.
        path.write_bytes(original)
        ray.kill(victim, no_restart=False)
        deadline = time.monotonic() + 120
        while True:
            try:
                assert same(idx.search(queries, 10), single.search(queries, 10))
                break
            except IndexFormatError:
                assert time.monotonic() < deadline
                time.sleep(0.2)


def test_a_build_task_killed_mid_write_leaves_no_shard_that_loads(ray_cluster: None, tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    n, dim, nnz = 60_000, 30_000, 100
    step = rng.integers(1, 4, n)
    start = rng.integers(0, dim - 3 * nnz, n)
    indices = (start[:, None] + np.arange(nnz)[None, :] * step[:, None]).astype(np.uint32).reshape(-1)
    indptr = np.arange(0, (n + 1) * nnz, nnz, dtype=np.int64)
    data = rng.random(n * nnz, dtype=np.float32)
    arrays = ray.put((indptr, indices, data, dim))
    task = ray.remote(max_retries=0)(build_shard)
    killed_mid_write = False
    for attempt in range(4):
        out = tmp_path / f"try{attempt}"
        out.mkdir()
        ref = task.remote(str(out), 0, arrays, np.arange(n, dtype=np.int64), {"reorder": False, "num_threads": 1})
        deadline = time.monotonic() + 120
        finished = False
        while time.monotonic() < deadline and not list(out.glob(".shard_0.spc.tmp-*")):
            if ray.wait([ref], timeout=0)[0]:
                finished = True
                break
            time.sleep(0.0005)
        if finished:
            continue
        ray.cancel(ref, force=True)  # kills the worker process running the task
        try:
            ray.get(ref, timeout=60)
        except (ray.exceptions.TaskCancelledError, ray.exceptions.WorkerCrashedError):
            pass
        else:
            continue  # it finished before the kill landed
        temps = list(out.glob(".shard_0.spc.tmp-*"))
        if temps:
            killed_mid_write = True
            assert not (out / "shard_0.spc").exists()
            for t in temps:
                with pytest.raises(IndexFormatError):
                    sc.InvertedIndex.load(t)
            break
    assert killed_mid_write, "the task finished writing before it could be killed in four tries"


def dataset_rows(docs: sc.SparseBatch, ids: np.ndarray) -> list[dict[str, Any]]:
    return [
        {"id": int(i), "indices": docs.row(r)[0].astype(np.int64), "values": docs.row(r)[1]} for r, i in enumerate(ids)
    ]


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # ray.data's own configuration warnings
def test_build_from_a_ray_dataset(ray_cluster: None, corpus: Any, tmp_path: Path) -> None:
    pytest.importorskip("pandas")
    pytest.importorskip("pyarrow")
    docs, queries, _single = corpus
    ds = ray.data.from_items(dataset_rows(docs, np.arange(docs.n_rows) * 2))
    with ShardedIndex.build(ds, tmp_path, 2, backend="ray", mode="exact", dim=docs.dim) as idx:
        want = sc.InvertedIndex.build(docs, np.arange(docs.n_rows) * 2, mode="exact").search(queries, 10)
        assert same(idx.search(queries, 10), want)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_a_ray_dataset_is_spooled_by_parallel_tasks_into_the_same_shards(
    ray_cluster: None, corpus: Any, tmp_path: Path
) -> None:
    pytest.importorskip("pandas")
    pytest.importorskip("pyarrow")
    docs, queries, _single = corpus
    ids = np.random.default_rng(5).permutation(10 * docs.n_rows)[: docs.n_rows].astype(np.int64)
    # Eight blocks: Ray Data spools them in separate tasks, in whatever order they finish.
    ds = ray.data.from_items(dataset_rows(docs, ids)).repartition(8)
    bounds = [int(np.sort(ids)[docs.n_rows // 3]), int(np.sort(ids)[2 * docs.n_rows // 3])]
    built = ShardedIndex.build(
        ds, tmp_path / "ds", 3, backend="local", partition="range", boundaries=bounds, mode="exact", dim=docs.dim
    )
    one = ShardedIndex.build(
        docs, tmp_path / "one", 3, ids=ids, backend="local", partition="range", boundaries=bounds, mode="exact"
    )
    with built, one:
        want = sc.InvertedIndex.build(docs, ids, mode="exact").search(queries, 10)
        assert same(built.search(queries, 10), want)
        assert [e.n_docs for e in built.manifest.shards] == [e.n_docs for e in one.manifest.shards]
        assert len(built) == docs.n_rows
        assert built.manifest.next_id == int(ids.max()) + 1
    assert not list((tmp_path / "ds").glob(".spool-*"))  # the spool is removed


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_bad_rows_of_a_ray_dataset_raise_typed_errors(ray_cluster: None, corpus: Any, tmp_path: Path) -> None:
    pytest.importorskip("pandas")
    pytest.importorskip("pyarrow")
    docs, _queries, _single = corpus
    rows = dataset_rows(docs[:20], np.arange(20))
    no_values = ray.data.from_items([{"id": r["id"], "indices": r["indices"]} for r in rows])
    with pytest.raises(InvalidArgumentError, match="no column 'values'"):
        ShardedIndex.build(no_values, tmp_path / "a", 2, backend="local", dim=docs.dim)
    bad = {**rows[-1], "indices": np.array([docs.dim + 5]), "values": np.array([1.0], np.float32)}
    out_of_range = ray.data.from_items([*rows[:-1], bad])
    with pytest.raises(IndexOutOfRangeError):
        ShardedIndex.build(out_of_range, tmp_path / "b", 2, backend="local", dim=docs.dim)
    with pytest.raises(InvalidArgumentError, match="no rows"):
        ShardedIndex.build(ray.data.from_items(rows).limit(0), tmp_path / "c", 2, backend="local", dim=docs.dim)
    with pytest.raises(InvalidArgumentError, match="dim"):
        ShardedIndex.build(ray.data.from_items(rows), tmp_path / "d", 2, backend="local")
    for d in ("a", "b", "c", "d"):
        assert not list((tmp_path / d).glob(".spool-*"))
        assert not (tmp_path / d / MANIFEST_NAME).exists()


# -- Ray Serve ------------------------------------------------------------------------------------------------------


def test_ray_serve_endpoint_answers_like_one_index(ray_cluster: None, corpus: Any, tmp_path: Path) -> None:
    serve = pytest.importorskip("ray.serve")
    docs, queries, _single = corpus
    ShardedIndex.build(docs, tmp_path, 2, backend="local", mode="exact").close()
    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    try:
        serve.run(ray_serve_app(tmp_path, replicas=2), name="sparsecore", route_prefix="/")
        check_endpoint(f"http://127.0.0.1:{port}", docs, queries, 2)
        _, stats = get(f"http://127.0.0.1:{port}/stats")
        assert stats["backend"] == "ray"
        assert stats["replicas"] == 2
    finally:
        serve.shutdown()


def test_ray_serve_app_checks_its_arguments_before_deploying(tmp_path: Path) -> None:
    pytest.importorskip("ray.serve")
    with pytest.raises(FileNotFoundError, match="manifest"):
        ray_serve_app(tmp_path)
    ShardedIndex.build(clustered(50, 1, seed=1)[0], tmp_path, 1, backend="local").close()
    for kw in ({"replicas": 0}, {"http_replicas": 1.5}):
        with pytest.raises(InvalidArgumentError):
            ray_serve_app(tmp_path, **kw)


def test_cli_serve_through_ray_serve_joins_a_cluster(ray_cluster: None, corpus: Any, tmp_path: Path) -> None:
    pytest.importorskip("ray.serve")
    docs, queries, _single = corpus
    ShardedIndex.build(docs[:300], tmp_path, 2, backend="local", mode="exact").close()
    address = ray.get_runtime_context().gcs_address
    env = {**os.environ, "PYTHONPATH": str(REPO / "python") + os.pathsep + os.environ.get("PYTHONPATH", "")}
    cmd = [sys.executable, "-m", "sparsecore.cli", "serve", str(tmp_path), "--backend", "ray", "--port", "0"]
    proc = subprocess.Popen([*cmd, "--address", address], env=env, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert "through Ray Serve on http://127.0.0.1:" in line, line
        url = line.split(" on ")[1].split()[0]
        idx, val = queries.row(0)
        status, body = post(url + "/search", {"query": {"indices": idx.tolist(), "values": val.tolist()}, "k": 4})
        assert status == 200
        want = sc.InvertedIndex.build(docs[:300], mode="exact").search(queries[:1], 4)[0][0]
        assert body["results"][0]["ids"] == [i for i in want.tolist() if i >= 0]
    finally:
        proc.terminate()  # SIGTERM: the command shuts Serve down before it exits
        assert proc.wait(timeout=120) == 0
        if proc.stdout is not None:
            proc.stdout.close()
    from ray import serve

    assert not serve.status().applications  # nothing left deployed on the cluster
