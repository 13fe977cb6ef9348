"""Adversarial files (issue 23): racing and killed savers, non-regular files, crafted statistics, hostile index dirs.

Every saver and loader written in Python is attacked the same way:

* temporaries: the exact naming scheme shared with the Rust saver, a planted symlink on the next name, threads and
  processes saving one path at once (the file always loads as one of the written versions, no temporary is left);
* stale temporaries: a temporary of a dead process is removed by the next save, those of live processes are kept,
  and a saver killed with SIGKILL in the middle of its saves leaves a loadable file;
* non-regular files: ``/dev/zero``, a FIFO nobody writes to, a directory, a socket and a link to ``/dev/zero`` are
  refused before anything is read (each loader runs in a child process with a timeout and a memory limit, so the
  unfixed behaviour fails the test instead of hanging it), and sizes declared in headers are checked first;
* BM25 statistics with a recomputed checksum;
* index directories whose manifest names paths outside the directory, or a model that ships code.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import pickle
import re
import shutil
import signal
import socket
import stat
import struct
import subprocess
import sys
import tempfile
import threading
import time
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np
import pytest
from _legacy import legacy_bm25_payload
from sparsecore import sdr
from sparsecore._io import (
    _digest,
    atomic_write_bytes,
    clean_stale_temporaries,
    read_checked_json,
    read_json_file,
    read_regular_file,
    write_checked_json,
)
from sparsecore.cli import load_index_dir, load_vectors, main, read_texts
from sparsecore.datasets import cranfield
from sparsecore.encoders import BM25Encoder
from sparsecore.encoders.splade import InferenceFreeEncoder
from sparsecore.eval import read_qrels, read_run
from sparsecore.exceptions import IndexFormatError, InvalidArgumentError, SparsecoreError
from sparsecore.lsse import OnlineRidge
from sparsecore.sparse import SparseBatch

pytestmark = pytest.mark.skipif(os.name != "posix", reason="FIFOs, /dev/zero, SIGKILL and pid probes are POSIX")

HERE = Path(__file__).resolve().parent
CHILD_TIMEOUT_S = 120
SPECIAL_FILE_TIMEOUT_S = 60  # a loader that blocks on a FIFO is killed after this long

DOCS = [
    ("d1", "Heat conduction in composite slabs of different materials"),
    ("d2", "Supersonic flow over a flat plate with heat transfer"),
    ("d3", "Flutter of wings at high subsonic speed"),
    ("d4", "Boundary layer transition on a cone in supersonic flow"),
]


# ---------------------------------------------------------------------------------------------------------------
# Every Python saver, as (build version v, save, fingerprint of what a load returns)
# ---------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Saver:
    make: Callable[[int], Any]
    save: Callable[[Any, Path], None]
    fingerprint: Callable[[Path], bytes]


def _bm25(v: int) -> BM25Encoder:
    return BM25Encoder().fit([f"heat flow slab number{v}", "supersonic flow", "wing flutter"] + ["extra"] * v)


def _bm25_fingerprint(p: Path) -> bytes:
    enc = BM25Encoder.load(p)
    return json.dumps([enc.id_to_token, enc.doc_freq.tolist(), enc.n_docs, enc.avg_doc_len]).encode()


def _ridge(v: int, dim: int = 40, n: int = 30) -> OnlineRidge:
    rng = np.random.default_rng(v)
    phi = SparseBatch.from_dense(rng.random((n, dim)).astype(np.float32))
    return OnlineRidge(dim).partial_fit(phi, rng.standard_normal(n))


def _ridge_fingerprint(p: Path) -> bytes:
    st = OnlineRidge.load(p).state_dict()
    return b"".join(k.encode() + np.ascontiguousarray(np.asarray(st[k])).tobytes() for k in sorted(st))


_FIELD_PROBE = sdr.SDRBatch.random(30, 100, 10, seed=99)


def _field(v: int) -> sdr.CodingField:
    f = sdr.CodingField(100, n_modules=5, cells_per_module=7, seed=11)
    f.learn(sdr.SDRBatch.random(10 + v, 100, 10, seed=v))
    return f


def _field_fingerprint(p: Path) -> bytes:
    f = sdr.CodingField.load(p)
    return str(f.n_learned).encode() + f.recognize(_FIELD_PROBE).tobytes()


_IMAGES = (np.random.default_rng(0).random((40, 64)) > 0.5).astype(np.uint8)


def _network(v: int) -> sdr.SDRNetwork:
    net = sdr.SDRNetwork((8, 8), [sdr.Level(patch=4, stride=2), sdr.Level(patch=2, stride=1)], seed=v)
    net.learn(_IMAGES[: 10 + 5 * v])
    return net


def _network_fingerprint(p: Path) -> bytes:
    return b"".join(c.tobytes() for c in sdr.SDRNetwork.load(p).recognize(_IMAGES))


def _doc(v: int) -> dict[str, Any]:
    return {"version": v, "blob": [v] * 2000}


def _json_fingerprint(p: Path) -> bytes:
    return json.dumps(read_checked_json(p, "test.doc", 1)[1], sort_keys=True).encode()


SAVERS: dict[str, Saver] = {
    "bm25": Saver(_bm25, lambda o, p: o.save(p), _bm25_fingerprint),
    "ridge": Saver(_ridge, lambda o, p: o.save(p), _ridge_fingerprint),
    "field": Saver(_field, lambda o, p: o.save(p), _field_fingerprint),
    "network": Saver(_network, lambda o, p: o.save(p), _network_fingerprint),
    "checked_json": Saver(_doc, lambda o, p: write_checked_json(p, "test.doc", 1, o), _json_fingerprint),
}


def _big_ridge_file(v: int) -> bytes:
    with tempfile.TemporaryDirectory() as work:
        _ridge(v, dim=700, n=50).save(Path(work) / "model.bin")
        return (Path(work) / "model.bin").read_bytes()


# The SIGKILL test saves a ~6 MB model file already serialised, so that the saver spends nearly all its time with
# a temporary on disk (writing, fsync) and a kill usually lands inside a save.
ALL_SAVERS = {**SAVERS, "ridge-big": Saver(_big_ridge_file, lambda o, p: atomic_write_bytes(p, o), _ridge_fingerprint)}


def _reference_prints(tmp_path: Path, saver: Saver, versions: range) -> set[bytes]:
    prints = set()
    for v in versions:
        ref = tmp_path / f"reference-{v}"
        saver.save(saver.make(v), ref)
        prints.add(saver.fingerprint(ref))
    assert len(prints) == len(versions), "the versions must be told apart, or the test proves nothing"
    return prints


def _temporaries(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if ".tmp" in p.name)


def _child(code: str, *args: str, **kw: Any) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", code, str(HERE), *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw
    )


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()  # reaped: no zombie left, os.kill(pid, 0) raises ProcessLookupError
    return proc.pid


@pytest.fixture
def sleeper() -> Iterator[int]:
    """The pid of a live child process (not this one)."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    try:
        yield proc.pid
    finally:
        proc.kill()
        proc.wait()


# ---------------------------------------------------------------------------------------------------------------
# 1. Temporary names and concurrent savers
# ---------------------------------------------------------------------------------------------------------------


def test_temporary_name_scheme_and_mode(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    renamed: list[tuple[str, int]] = []
    real_replace = os.replace

    def spy(src: Any, dst: Any) -> None:
        renamed.append((Path(src).name, os.stat(src).st_mode))
        real_replace(src, dst)

    monkeypatch.setattr("sparsecore._io.os.replace", spy)
    old = os.umask(0o027)
    try:
        atomic_write_bytes(tmp_path / "state.bin", b"payload")
    finally:
        os.umask(old)
    [(name, mode)] = renamed
    pattern = rf"\.state\.bin\.tmp-{os.getpid()}-{threading.get_native_id()}-[0-9a-f]{{16}}"
    assert re.fullmatch(pattern, name), name
    assert stat.S_IMODE(mode) == 0o640  # 0o666 & ~umask
    assert stat.S_IMODE((tmp_path / "state.bin").stat().st_mode) == 0o640
    assert (tmp_path / "state.bin").read_bytes() == b"payload"
    assert _temporaries(tmp_path) == []


def test_planted_link_on_the_next_temporary_name_is_not_followed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    draws = iter(["0123456789abcdef", "fedcba9876543210"])
    monkeypatch.setattr("sparsecore._io.secrets.token_hex", lambda n: next(draws))
    victim = tmp_path / "victim"
    victim.write_bytes(b"precious")
    planted = tmp_path / f".out.tmp-{os.getpid()}-{threading.get_native_id()}-0123456789abcdef"
    planted.symlink_to(victim)
    atomic_write_bytes(tmp_path / "out", b"new content")
    assert victim.read_bytes() == b"precious"  # O_EXCL: the link was neither followed nor replaced
    assert planted.is_symlink()
    assert (tmp_path / "out").read_bytes() == b"new content"


@pytest.mark.parametrize("kind", sorted(SAVERS))
def test_threads_saving_one_path_never_tear_it(tmp_path: Path, kind: str) -> None:
    saver = SAVERS[kind]
    prints = _reference_prints(tmp_path, saver, range(1, 3))
    objs = [saver.make(v) for v in (1, 2)]
    folder = tmp_path / "shared"
    folder.mkdir()
    target = folder / "state"
    errors: list[BaseException] = []
    seen: set[bytes] = set()
    modes: set[int] = set()
    start = threading.Barrier(3)
    done = threading.Event()

    def writer(obj: Any) -> None:
        try:
            start.wait()
            for _ in range(40):
                saver.save(obj, target)
        except BaseException as exc:
            errors.append(exc)

    def reader() -> None:
        try:
            start.wait()
            while not done.is_set():
                if target.exists():
                    modes.add(stat.S_IMODE(target.stat().st_mode))
                    seen.add(saver.fingerprint(target))
        except BaseException as exc:
            errors.append(exc)

    old = os.umask(0o077)
    try:
        writers = [threading.Thread(target=writer, args=(o,)) for o in objs]
        watcher = threading.Thread(target=reader)
        for t in (*writers, watcher):
            t.start()
        for t in writers:
            t.join()
        done.set()
        watcher.join()
    finally:
        os.umask(old)
    assert errors == []
    assert saver.fingerprint(target) in prints
    assert seen <= prints  # every read in between saw a whole version
    assert modes <= {0o600}  # no thread changed the umask under another one
    assert sorted(p.name for p in folder.iterdir()) == ["state"]


_SAVE_LOOP = """
import sys
sys.path.insert(0, sys.argv[1])
import test_adversarial_files as t
kind, version, target, n = sys.argv[2], int(sys.argv[3]), sys.argv[4], int(sys.argv[5])
saver = t.ALL_SAVERS[kind]
obj = saver.make(version)
print("ready", flush=True)
i = 0
while n < 0 or i < n:
    saver.save(obj, t.Path(target))
    i += 1
    if i == 1:
        print("saved", flush=True)
"""


@pytest.mark.parametrize("kind", sorted(SAVERS))
def test_processes_saving_one_path_never_tear_it(tmp_path: Path, kind: str) -> None:
    saver = SAVERS[kind]
    prints = _reference_prints(tmp_path, saver, range(1, 4))
    folder = tmp_path / "shared"
    folder.mkdir()
    target = folder / "state"
    procs = [_child(_SAVE_LOOP, kind, str(v), str(target), "30") for v in (1, 2, 3)]
    for proc in procs:
        out, err = proc.communicate(timeout=CHILD_TIMEOUT_S)
        assert proc.returncode == 0, err
        assert out.split() == ["ready", "saved"]
    assert saver.fingerprint(target) in prints
    assert sorted(p.name for p in folder.iterdir()) == ["state"]


# ---------------------------------------------------------------------------------------------------------------
# 2a. Stale temporaries and SIGKILL in the middle of saves
# ---------------------------------------------------------------------------------------------------------------


def test_stale_temporaries_of_dead_processes_are_removed_live_ones_kept(tmp_path: Path, sleeper: int) -> None:
    dead = _dead_pid()
    me = os.getpid()
    victim = tmp_path / "victim"
    victim.write_bytes(b"precious")
    stale = [f".state.tmp-{dead}-7-0123456789abcdef", f".state.tmp-{dead}", f".state.tmp-{dead}-1"]
    kept_files = [
        f".state.tmp-{me}-5-0123456789abcdef",  # this process (another thread may be mid-save)
        f".state.tmp-{sleeper}-5-0123456789abcdef",  # a live process
        ".state.tmp-1-5-0123456789abcdef",  # init: alive (or PermissionError, which means alive too)
        f".other.tmp-{dead}-7-0123456789abcdef",  # the temporary of another target
        f".state.tmp-{dead}-x.tmp-{dead}-1-0123456789abcdef",  # target "state.tmp-<pid>-x" in the same folder
        f".state.tmp-{dead}x",  # not a pid
        f".state.tmp--{dead}",
    ]
    for name in stale + kept_files:
        (tmp_path / name).write_bytes(b"partial")
    (tmp_path / f".state.tmp-{dead}-9-link").symlink_to(victim)  # a link is never removed nor followed
    (tmp_path / f".state.tmp-{dead}-9-folder").mkdir()  # nor a folder
    assert clean_stale_temporaries(tmp_path / "state") == len(stale)
    left = set(_temporaries(tmp_path))
    assert left == {*kept_files, f".state.tmp-{dead}-9-link", f".state.tmp-{dead}-9-folder"}
    assert victim.read_bytes() == b"precious"
    # the next save cleans by itself
    (tmp_path / stale[0]).write_bytes(b"partial")
    write_checked_json(tmp_path / "state", "test.doc", 1, {"v": 1})
    assert set(_temporaries(tmp_path)) == left
    assert read_checked_json(tmp_path / "state", "test.doc", 1)[1] == {"v": 1}


@pytest.mark.parametrize("kind", sorted(SAVERS))
def test_every_saver_cleans_stale_temporaries(tmp_path: Path, kind: str) -> None:
    saver = SAVERS[kind]
    dead = _dead_pid()
    stale = tmp_path / f".state.tmp-{dead}-3-00000000000000ff"
    stale.write_bytes(b"half a file")
    saver.save(saver.make(1), tmp_path / "state")
    assert not stale.exists()
    assert _temporaries(tmp_path) == []


def test_sigkill_during_saves_leaves_a_loadable_file_and_the_next_save_cleans_up(tmp_path: Path) -> None:
    saver = ALL_SAVERS["ridge-big"]
    prints = _reference_prints(tmp_path, saver, range(1, 3))
    folder = tmp_path / "shared"
    folder.mkdir()
    target = folder / "model.bin"
    saver.save(saver.make(1), target)
    interrupted = 0
    rng = np.random.default_rng(7)
    for attempt in range(12):
        proc = _child(_SAVE_LOOP, "ridge-big", str(1 + attempt % 2), str(target), "-1")
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "ready"
        assert proc.stdout.readline().strip() == "saved"
        time.sleep(float(rng.uniform(0.02, 0.3)))
        os.kill(proc.pid, signal.SIGKILL)
        proc.communicate(timeout=CHILD_TIMEOUT_S)
        assert proc.returncode == -signal.SIGKILL
        assert saver.fingerprint(target) in prints  # the previous file, whole
        interrupted += bool(_temporaries(folder))
        saver.save(saver.make(2), target)
        assert sorted(p.name for p in folder.iterdir()) == ["model.bin"]
        if interrupted >= 3:
            break
    assert interrupted >= 1, "no kill landed inside a save; the cleanup was not exercised"


# ---------------------------------------------------------------------------------------------------------------
# 2b. Non-regular files and declared sizes
# ---------------------------------------------------------------------------------------------------------------


def _index_dir(work: Path) -> Path:
    docs = work / "docs.jsonl"
    docs.write_text("".join(json.dumps({"id": i, "text": t}) + "\n" for i, t in DOCS), encoding="utf-8")
    out = work / "idx"
    assert main(["index", "--input", str(docs), "--output", str(out), "--mode", "exact"]) == 0
    return out


def _load_index_with(target: Path, work: Path, name: str) -> None:
    root = _index_dir(work)
    (root / name).unlink()
    if target.is_fifo():
        os.mkfifo(root / name)  # inside the directory: refused as a FIFO, not for its location
    elif target.is_dir():
        (root / name).mkdir()
    else:
        (root / name).symlink_to(target)
    load_index_dir(root)


def _cranfield_with(target: Path, work: Path) -> None:
    folder = work / "cran"
    folder.mkdir()
    (folder / "cran.all.1400").symlink_to(target)
    (folder / "cran.qry").write_text(".I 1\n.W\nflow\n", encoding="utf-8")
    (folder / "cranqrel").write_text("1 1 2\n", encoding="utf-8")
    cranfield(folder)


def _alone(load: Callable[[Path], Any]) -> Callable[[Path, Path], None]:
    def run(target: Path, work: Path) -> None:
        load(target)

    return run


def _load_idf(path: Path) -> None:
    # The file is read before the encoder is used, so no model is needed to attack the reading.
    InferenceFreeEncoder.load_idf(cast(InferenceFreeEncoder, None), path)


# name -> (load the target, the name its error must mention; None: the target's own path)
LOADERS: dict[str, tuple[Callable[[Path, Path], None], str | None]] = {
    "read_regular_file": (_alone(read_regular_file), None),
    "read_json_file": (_alone(lambda p: read_json_file(p, "a JSON file")), None),
    "read_checked_json": (_alone(lambda p: read_checked_json(p, "test.doc", 1)), None),
    "BM25Encoder.load": (_alone(BM25Encoder.load), None),
    "OnlineRidge.load": (_alone(OnlineRidge.load), None),
    "CodingField.load": (_alone(sdr.CodingField.load), None),
    "SDRNetwork.load": (_alone(sdr.SDRNetwork.load), None),
    "InferenceFreeEncoder.load_idf": (_alone(_load_idf), None),
    "cli.load_vectors": (_alone(load_vectors), None),
    "cli.read_texts": (_alone(read_texts), None),
    "eval.read_run": (_alone(read_run), None),
    "eval.read_qrels": (_alone(read_qrels), None),
    "datasets.cranfield": (_cranfield_with, "cran.all.1400"),
    "cli.load_index_dir[docs.jsonl]": (lambda t, w: _load_index_with(t, w, "docs.jsonl"), "docs.jsonl"),
    "cli.load_index_dir[encoder.json]": (lambda t, w: _load_index_with(t, w, "encoder.json"), "encoder.json"),
    "cli.load_index_dir[index.bin]": (lambda t, w: _load_index_with(t, w, "index.bin"), "index.bin"),
}

_NONREGULAR_CHILD = """
import json, resource, sys, tempfile
resource.setrlimit(resource.RLIMIT_AS, (4 << 30, 4 << 30))  # reading /dev/zero whole fails fast, not the machine
sys.path.insert(0, sys.argv[1])
import test_adversarial_files as t
load = t.LOADERS[sys.argv[2]][0]
for target in sys.argv[3:]:
    with tempfile.TemporaryDirectory() as work:
        try:
            load(t.Path(target), t.Path(work))
            row = {"target": target, "error": None}
        except BaseException as exc:
            row = {"target": target, "error": type(exc).__name__, "typed": isinstance(exc, t.IndexFormatError),
                   "message": str(exc)}
    print(json.dumps(row), flush=True)
"""


@pytest.fixture(scope="module")
def special_files() -> Iterator[dict[str, Path]]:
    """/dev/zero, a FIFO nobody writes to, a directory, a UNIX socket, and a link to /dev/zero."""
    work = Path(tempfile.mkdtemp(prefix="sc-", dir="/tmp"))  # short: a socket path has ~100 bytes at most
    os.mkfifo(work / "fifo")
    (work / "folder").mkdir()
    (work / "zero-link").symlink_to("/dev/zero")
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(work / "sock"))
    sock.close()
    yield {
        "/dev/zero": Path("/dev/zero"),
        "fifo": work / "fifo",
        "directory": work / "folder",
        "socket": work / "sock",
        "link to /dev/zero": work / "zero-link",
    }
    shutil.rmtree(work)


@pytest.mark.parametrize("loader", sorted(LOADERS))
def test_non_regular_files_are_refused_without_blocking(loader: str, special_files: dict[str, Path]) -> None:
    targets = [str(p) for p in special_files.values()]
    proc = _child(_NONREGULAR_CHILD, loader, *targets)
    try:
        out, err = proc.communicate(timeout=SPECIAL_FILE_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        pytest.fail(f"{loader} blocked on a special file; it answered only: {out}")
    rows = [json.loads(line) for line in out.splitlines()]
    assert [r["target"] for r in rows] == targets, err
    named = LOADERS[loader][1]
    for row in rows:
        assert row["error"] == "IndexFormatError", row
        assert row["typed"], row
        assert "regular file" in row["message"] or "outside the index directory" in row["message"], row
        assert (named or row["target"]) in row["message"], row


def test_json_documents_are_bounded(tmp_path: Path) -> None:
    path = tmp_path / "doc.json"
    write_checked_json(path, "test.doc", 1, {"blob": "x" * 5000})
    with pytest.raises(IndexFormatError, match="4,096-byte limit"):
        read_checked_json(path, "test.doc", 1, max_bytes=4096)
    assert read_checked_json(path, "test.doc", 1, max_bytes=10_000)[1]["blob"] == "x" * 5000
    root = _index_dir(tmp_path)
    _, info = read_checked_json(root / "manifest.json", "sparsecore.index-dir", 1)
    write_checked_json(root / "manifest.json", "sparsecore.index-dir", 1, {**info, "padding": "x" * 2**20})
    with pytest.raises(IndexFormatError, match="limit"):
        load_index_dir(root)


def _npy_member(zf: zipfile.ZipFile, name: str, shape: tuple[int, ...], payload: bytes) -> None:
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": "<f8", "fortran_order": False, "shape": shape})
    zf.writestr(f"{name}.npy", buf.getvalue() + payload)


def test_npz_headers_cannot_declare_more_than_the_file_holds(tmp_path: Path) -> None:
    # vectors file of sparsecore 0.1.0 (a checked .npz, still read): a valid one, then "data" replaced by a member
    # whose header claims 2**40 float64
    batch = SparseBatch.from_dicts([{0: 1.0, 3: 2.0}, {1: 0.5}], 5)
    good = tmp_path / "v.npz"
    shutil.copyfile(Path(__file__).parent / "data" / "legacy" / "vectors_v1.npz", good)
    bad = tmp_path / "bad.npz"
    with zipfile.ZipFile(good) as src, zipfile.ZipFile(bad, "w") as dst:
        for info in src.infolist():
            if info.filename == "data.npy":
                _npy_member(dst, "data", (2**40,), b"\x00" * 24)
            else:
                dst.writestr(info, src.read(info))
    with pytest.raises(IndexFormatError, match="declares"):
        load_vectors(bad)
    # a compressed member (a zip bomb's shape) with a correct checksum
    arrays = {"indptr": batch.indptr, "indices": batch.indices, "data": batch.data, "ids": np.asarray(["a", "b"])}
    z = np.load(good)
    meta = str(z["meta"])
    z.close()
    squeezed = tmp_path / "compressed.npz"
    np.savez_compressed(squeezed, meta=np.asarray(meta), **arrays)  # type: ignore[arg-type]
    with pytest.raises(IndexFormatError, match="compressed"):
        load_vectors(squeezed)
    assert load_vectors(good)[1] == ["d0", "d1", "d2", "d3"]
    # OnlineRidge: the payload is an .npz; a crafted one with its SHA-256 recomputed
    ridge = tmp_path / "r.bin"
    _ridge(1).save(ridge)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        _npy_member(zf, "w", (2**40, 1), b"\x00" * 8)
    payload = buf.getvalue()
    header = struct.pack("<8sIQ32s", b"SCRIDGE\x00", 1, len(payload), hashlib.sha256(payload).digest())
    ridge.write_bytes(header + payload)
    with pytest.raises(IndexFormatError, match="declares"):
        OnlineRidge.load(ridge)


def test_binary_headers_cannot_declare_more_than_the_file_holds(tmp_path: Path) -> None:
    ridge = tmp_path / "r.bin"
    _ridge(1).save(ridge)
    raw = ridge.read_bytes()
    huge = raw[:16] + struct.pack("<Q", 2**62) + raw[24:]
    ridge.write_bytes(huge)
    with pytest.raises(IndexFormatError, match="header says 4611686018427387904"):
        OnlineRidge.load(ridge)
    net = tmp_path / "n.sdr"
    _network(1).save(net)
    raw = net.read_bytes()
    net.write_bytes(raw[:16] + struct.pack("<Q", 2**63) + raw[24:])
    with pytest.raises(IndexFormatError, match="truncated"):
        sdr.SDRNetwork.load(net)
    # The formats of sparsecore 0.1.0 (still read) check their declared lengths as well.
    legacy = Path(__file__).parent / "data" / "legacy"
    raw = (legacy / "ridge_v1.bin").read_bytes()
    ridge.write_bytes(raw[:12] + struct.pack("<Q", 2**62) + raw[20:])
    with pytest.raises(IndexFormatError, match="the header says 4611686018427387904"):
        OnlineRidge.load(ridge)
    raw = (legacy / "network_v1.bin").read_bytes()
    net.write_bytes(raw[:8] + struct.pack("<Q", 2**63) + raw[16:])
    with pytest.raises(IndexFormatError, match="truncated"):
        sdr.SDRNetwork.load(net)


# ---------------------------------------------------------------------------------------------------------------
# 3. BM25 statistics with a recomputed checksum
# ---------------------------------------------------------------------------------------------------------------

BAD_BM25 = [
    ("avg_doc_len", 0),
    ("avg_doc_len", -3),
    ("avg_doc_len", float("nan")),
    ("avg_doc_len", float("inf")),
    ("avg_doc_len", float("-inf")),
    ("avg_doc_len", True),
    ("avg_doc_len", "4"),
    ("avg_doc_len", 1e-9),  # too short to hold the (document, term) pairs
    ("n_docs", 2.5),
    ("n_docs", 4.0),
    ("n_docs", 0),
    ("n_docs", -4),
    ("n_docs", True),
    ("n_docs", "4"),
    ("n_docs", 2**60),
    ("n_docs", None),
    ("doc_freq", "df>n"),
    ("doc_freq", "negative"),
    ("doc_freq", "fractional"),
    ("doc_freq", "bool"),
    ("doc_freq", "string"),
    ("doc_freq", "short"),
    ("doc_freq", {"heat": 1}),
    ("k1", -1),
    ("k1", float("nan")),
    ("k1", float("inf")),
    ("k1", True),
    ("k1", "1.2"),
    ("k1", None),
    ("b", -0.1),
    ("b", 1.5),
    ("b", float("nan")),
    ("b", float("inf")),
    ("b", True),
    ("b", "0.75"),
    ("query_weights", True),
    ("query_weights", None),
    ("query_weights", 1),
    ("query_weights", ["count"]),
    ("query_weights", "COUNT"),
    ("tokens", "duplicate"),
    ("tokens", "number"),
    ("tokens", "heat flow"),
    ("lowercase", "false"),
    ("pattern", 5),
    ("stopwords", "english"),
    ("stopwords", [1, 2]),
    ("stemmer", "porter"),
    ("tokenizer", [1]),
]


def _bm25_payload(tmp_path: Path) -> dict[str, Any]:
    return legacy_bm25_payload(BM25Encoder().fit([d[1] for d in DOCS]))


_DOC_FREQ_EDITS: dict[str, Callable[[list[Any], int], None]] = {
    "df>n": lambda df, n: df.__setitem__(0, n + 1),
    "negative": lambda df, n: df.__setitem__(0, -1),
    "fractional": lambda df, n: df.__setitem__(0, 1.5),
    "bool": lambda df, n: df.__setitem__(0, True),
    "string": lambda df, n: df.__setitem__(0, "1"),
    "short": lambda df, n: df.pop(),
}


def _tamper(payload: dict[str, Any], field: str, value: Any) -> dict[str, Any]:
    p: dict[str, Any] = json.loads(json.dumps(payload))
    if field == "doc_freq" and isinstance(value, str):
        _DOC_FREQ_EDITS[value](p["doc_freq"], p["n_docs"])
    elif field == "tokens" and value in ("duplicate", "number"):
        p["tokens"][1] = p["tokens"][0] if value == "duplicate" else 7
    elif field in ("lowercase", "pattern", "stopwords", "stemmer"):
        p["tokenizer"][field] = value
    else:
        p[field] = value
    return p


@pytest.mark.parametrize(("field", "value"), BAD_BM25, ids=[f"{f}={v!r}" for f, v in BAD_BM25])
def test_bm25_statistics_that_no_corpus_gives_are_refused(tmp_path: Path, field: str, value: Any) -> None:
    payload = _bm25_payload(tmp_path)
    bad = tmp_path / "bad.json"
    doc = {"format": "sparsecore.bm25", "version": 1, "payload": _tamper(payload, field, value)}
    doc["sha256"] = _digest(doc["payload"])  # a consistent checksum: only the content is wrong
    bad.write_text(json.dumps(doc), encoding="utf-8")
    with pytest.raises(IndexFormatError, match=re.escape(field)):
        BM25Encoder.load(bad)


def test_bm25_untampered_payload_loads_and_scores_the_same(tmp_path: Path) -> None:
    texts = [d[1] for d in DOCS]
    enc = BM25Encoder().fit(texts)
    path = tmp_path / "enc.json"
    write_checked_json(path, "sparsecore.bm25", 1, _bm25_payload(tmp_path))
    back = BM25Encoder.load(path)
    q = ["supersonic heat flow"]
    np.testing.assert_array_equal(
        back.encode_queries(q).scores(back.encode_documents(texts)),
        enc.encode_queries(q).scores(enc.encode_documents(texts)),
    )


@pytest.mark.parametrize(("name", "value"), [("k1", True), ("b", float("nan")), ("k1", 10**400), ("b", False)])
def test_bm25_constructor_shares_the_checks(name: str, value: Any) -> None:
    with pytest.raises(InvalidArgumentError, match=name):
        BM25Encoder(**{name: value})


# ---------------------------------------------------------------------------------------------------------------
# 4. Index directories: paths named by the manifest, models that ship code
# ---------------------------------------------------------------------------------------------------------------


def _rewrite_manifest(root: Path, **changes: Any) -> None:
    _, info = read_checked_json(root / "manifest.json", "sparsecore.index-dir", 1)
    write_checked_json(root / "manifest.json", "sparsecore.index-dir", 1, {**info, **changes})


def _files(**changes: Any) -> dict[str, Any]:
    return {"files": {"index": "index.bin", "docs": "docs.jsonl", "encoder_state": "encoder.json", **changes}}


@pytest.fixture
def index_dir(tmp_path: Path) -> Path:
    root = _index_dir(tmp_path)
    assert len(load_index_dir(root).corpus.ids) == len(DOCS)  # untouched, it loads
    return root


def _outside_copy(root: Path, name: str) -> Path:
    outside = root.parent / "elsewhere"
    outside.mkdir(exist_ok=True)
    shutil.copy(root / name, outside / name)
    return outside / name


MANIFEST_ATTACKS: list[tuple[str, Callable[[Path], dict[str, Any]], str]] = [
    ("dotdot to /etc/passwd", lambda r: _files(encoder_state="../../../../../../../../etc/passwd"), "outside"),
    (
        "dotdot to a valid copy",
        lambda r: _files(docs=f"../{_outside_copy(r, 'docs.jsonl').parent.name}/docs.jsonl"),
        "outside",
    ),
    ("absolute /etc/passwd", lambda r: _files(encoder_state="/etc/passwd"), "absolute"),
    ("absolute valid copy", lambda r: _files(index=str(_outside_copy(r, "index.bin"))), "absolute"),
    ("the directory itself", lambda r: _files(docs="."), "outside"),
    ("empty name", lambda r: _files(docs=""), "relative"),
    ("not a string", lambda r: _files(index=5), "relative"),
    ("NUL byte", lambda r: _files(docs="docs.jsonl\x00.txt"), "relative"),
    ("files not an object", lambda r: {"files": ["index.bin"]}, "files"),
    ("model dotdot", lambda r: {"encoder": "splade", "model": "../model"}, "outside"),
    ("model absolute", lambda r: {"encoder": "splade", "model": str(r.parent)}, "absolute"),
    ("model hub name", lambda r: {"encoder": "splade", "model": "naver/splade-v3"}, "not a folder inside"),
    ("model home", lambda r: {"encoder": "splade", "model": "~/model"}, "not a folder inside"),
    ("model not a string", lambda r: {"encoder": "splade", "model": ["x"]}, "relative"),
    ("max_length not an int", lambda r: {"encoder": "splade", "max_length": "256"}, "max_length"),
]


@pytest.mark.parametrize(("make", "message"), [a[1:] for a in MANIFEST_ATTACKS], ids=[a[0] for a in MANIFEST_ATTACKS])
def test_manifest_paths_must_stay_inside_the_directory(
    index_dir: Path, make: Callable[[Path], dict[str, Any]], message: str
) -> None:
    _rewrite_manifest(index_dir, **make(index_dir))
    with pytest.raises(IndexFormatError, match=message):
        load_index_dir(index_dir)


@pytest.mark.parametrize("name", ["encoder.json", "docs.jsonl", "index.bin", "manifest.json"])
def test_symlinks_escaping_the_directory_are_refused(index_dir: Path, name: str) -> None:
    copy = _outside_copy(index_dir, name)  # valid content: only the location is wrong
    (index_dir / name).unlink()
    (index_dir / name).symlink_to(copy)
    with pytest.raises(IndexFormatError, match="outside the index directory"):
        load_index_dir(index_dir)


def test_symlinked_folder_escaping_the_directory_is_refused(index_dir: Path) -> None:
    copy = _outside_copy(index_dir, "docs.jsonl")
    (index_dir / "sub").symlink_to(copy.parent, target_is_directory=True)
    _rewrite_manifest(index_dir, **_files(docs="sub/docs.jsonl"))
    with pytest.raises(IndexFormatError, match="outside the index directory"):
        load_index_dir(index_dir)


def test_links_inside_the_directory_are_fine(index_dir: Path) -> None:
    (index_dir / "texts").mkdir()
    (index_dir / "docs.jsonl").rename(index_dir / "texts" / "docs.jsonl")
    (index_dir / "docs.jsonl").symlink_to(index_dir / "texts" / "docs.jsonl")
    assert load_index_dir(index_dir).corpus.ids == [d[0] for d in DOCS]


def test_model_folder_with_a_link_outside_is_refused(index_dir: Path) -> None:
    model = index_dir / "model"
    model.mkdir()
    (model / "config.json").symlink_to("/etc/passwd")
    _rewrite_manifest(index_dir, encoder="splade", model="model")
    with pytest.raises(IndexFormatError, match="outside the index directory"):
        load_index_dir(index_dir)
    (model / "config.json").unlink()
    os.mkfifo(model / "config.json")
    with pytest.raises(IndexFormatError, match="not a regular file"):
        load_index_dir(index_dir)


class _OpensOnLoad:
    """Unpickling it creates ``marker`` (the shape of a malicious pickled checkpoint, harmless here)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (open, (str(self.marker), "w"))


_EVIL_MODULE = """
from pathlib import Path
Path({marker!r}).write_text("remote code ran")
"""


def _tiny_bert(folder: Path) -> None:
    transformers = pytest.importorskip("transformers", reason="transformers is not installed")
    torch = pytest.importorskip("torch", reason="torch is not installed")
    words = sorted({w for _, t in DOCS for w in t.lower().split()})
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words]
    folder.mkdir()
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    tok = transformers.BertTokenizerFast.from_pretrained(str(folder))
    torch.manual_seed(0)
    cfg = transformers.BertConfig(
        vocab_size=len(vocab), hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64
    )
    transformers.BertForMaskedLM(cfg).save_pretrained(folder)
    tok.save_pretrained(folder)


def _plant_remote_code(model: Path, marker: Path, *, model_type: str | None = None) -> None:
    (model / "evil_model.py").write_text(_EVIL_MODULE.format(marker=str(marker)), encoding="utf-8")
    config = json.loads((model / "config.json").read_text(encoding="utf-8"))
    config["auto_map"] = {
        "AutoConfig": "evil_model.EvilConfig",
        "AutoModelForMaskedLM": "evil_model.EvilModel",
        "AutoModel": "evil_model.EvilModel",
    }
    if model_type is not None:
        config["model_type"] = model_type
    (model / "config.json").write_text(json.dumps(config), encoding="utf-8")
    tok_config = json.loads((model / "tokenizer_config.json").read_text(encoding="utf-8"))
    tok_config["auto_map"] = {"AutoTokenizer": ["evil_model.EvilTokenizer", "evil_model.EvilTokenizer"]}
    (model / "tokenizer_config.json").write_text(json.dumps(tok_config), encoding="utf-8")


@pytest.mark.slow
def test_a_model_that_ships_code_never_runs_it(tmp_path: Path) -> None:
    from sparsecore.cli import Corpus, build_index_dir

    source = tmp_path / "source-model"
    _tiny_bert(source)
    root = tmp_path / "idx"
    corpus = Corpus([d[0] for d in DOCS], [d[1] for d in DOCS], [""] * len(DOCS))
    build_index_dir(root, corpus, "splade", model=str(source), mode="exact", max_length=32)
    _, info = read_checked_json(root / "manifest.json", "sparsecore.index-dir", 1)
    assert info["model"] == "model"  # the directory carries its own copy of the model
    assert (root / "model" / "model.safetensors").is_file()
    shutil.rmtree(source)  # loading must not need anything outside the directory

    marker = tmp_path / "remote-code-ran"
    _plant_remote_code(root / "model", marker)
    _rewrite_manifest(root, trust_remote_code=True)  # a manifest cannot switch it on
    loaded = load_index_dir(root)
    assert loaded.index.search(loaded.encoder.encode_query(["supersonic flow"]), k=2)[0].shape == (1, 2)
    assert not marker.exists()

    # an architecture that only the shipped code provides: refused, still without running it
    _plant_remote_code(root / "model", marker, model_type="evil-arch")
    with pytest.raises((ValueError, OSError, KeyError)):
        load_index_dir(root)
    assert not marker.exists()

    # pickled weights instead of safetensors: never unpickled
    (root / "model" / "model.safetensors").unlink()
    (root / "model" / "pytorch_model.bin").write_bytes(pickle.dumps(_OpensOnLoad(marker)))
    _plant_remote_code(root / "model", marker, model_type="bert")
    with pytest.raises((ValueError, OSError)):
        load_index_dir(root)
    assert not marker.exists()

    # control: the planted code is live, transformers runs it when asked to trust it
    env = {**os.environ, "HF_MODULES_CACHE": str(tmp_path / "hf-modules"), "HF_HUB_OFFLINE": "1"}
    code = "import sys, transformers; transformers.AutoConfig.from_pretrained(sys.argv[2], trust_remote_code=True)"
    proc = _child(code, str(root / "model"), env=env)
    proc.communicate(timeout=CHILD_TIMEOUT_S)
    assert marker.exists()


def test_every_transformers_from_pretrained_call_refuses_remote_code() -> None:
    """Source check: each ``transformers.*.from_pretrained(...)`` in the package passes ``trust_remote_code=False``."""
    import ast

    package = HERE.parent / "python" / "sparsecore"
    calls = []
    for path in sorted(package.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
                continue
            receiver = node.func.value
            if node.func.attr != "from_pretrained" or not isinstance(receiver, ast.Attribute):
                continue
            if not (isinstance(receiver.value, ast.Name) and receiver.value.id == "transformers"):
                continue
            flags = [k.value for k in node.keywords if k.arg == "trust_remote_code"]
            calls.append((f"{path.name}:{node.lineno}", flags))
    assert len(calls) >= 4  # SPLADE model + tokenizer, PromptReps model + tokenizer
    for where, flags in calls:
        assert len(flags) == 1, where
        assert isinstance(flags[0], ast.Constant), where
        assert flags[0].value is False, where


def test_encoders_ask_transformers_for_no_remote_code(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    transformers = pytest.importorskip("transformers", reason="transformers is not installed")
    from sparsecore.encoders.promptreps import PromptRepsEncoder
    from sparsecore.encoders.splade import SpladeEncoder

    seen: list[tuple[str, dict[str, Any]]] = []

    def recorder(auto: str) -> Callable[..., object]:
        def record(*args: Any, **kwargs: Any) -> object:
            seen.append((auto, kwargs))
            return object()  # not a model: the encoder's constructor refuses it afterwards

        return record

    for auto in ("AutoModelForMaskedLM", "AutoModelForCausalLM", "AutoTokenizer"):
        monkeypatch.setattr(getattr(transformers, auto), "from_pretrained", recorder(auto))
    with pytest.raises(SparsecoreError):
        SpladeEncoder.from_pretrained(tmp_path)
    with pytest.raises(SparsecoreError):
        PromptRepsEncoder.from_pretrained(tmp_path)
    called = sorted(a for a, _ in seen)
    assert called == ["AutoModelForCausalLM", "AutoModelForMaskedLM", "AutoTokenizer", "AutoTokenizer"]
    assert all(kw.get("trust_remote_code") is False for _, kw in seen)
