"""Atomic, checked files for the Python-side state (encoder vocabularies, IDF tables, CLI metadata).

Writing
    A file is written to a temporary file in the same folder, fsynced, then renamed over the target and the folder
    fsynced, so a reader sees the old file or the new one, never half of one; when several threads or processes save
    the same path at once, the last rename wins. The temporary is named ``.{name}.tmp-{pid}-{thread}-{16 hex}``
    (process id, native thread id, 64 random bits), created with ``O_CREAT | O_EXCL`` and mode ``0o666`` less the
    umask. The Rust index saver uses the same scheme, so either side can clean up after the other: before each
    write, temporaries of the same target left behind by processes that no longer exist (killed mid-save) are
    removed by :func:`clean_stale_temporaries`.

Reading
    Every loader opens user-given paths through :func:`open_regular_file` / :func:`read_regular_file`, which refuse
    anything but a regular file (a directory, a FIFO, ``/dev/zero``, a socket) *before* reading from it, so a wrong
    path fails at once instead of blocking or reading forever. JSON documents are read whole and parsed in memory,
    so they are bounded: :data:`MAX_JSON_BYTES` (512 MiB, about 20 million BM25 vocabulary entries) unless a
    caller passes a smaller limit. Binary formats read exactly the lengths their headers declare, after checking
    them against the file's size, and ``.npz`` payloads are read by :func:`read_npz`, which checks every array's
    declared size against the bytes actually stored before allocating it.

A JSON document is ``{"format": ..., "version": ..., "sha256": ..., "payload": {...}}``; reading checks the format
name, the version and the checksum of the payload. The checksum catches corruption, not tampering (anyone can
recompute it), so loaders also check that the content makes sense.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import secrets
import stat
import threading
import zipfile
from collections.abc import Collection
from pathlib import Path
from typing import IO, Any

import numpy as np
from numpy.typing import NDArray

from sparsecore.exceptions import IndexFormatError

__all__ = [
    "MAX_JSON_BYTES",
    "atomic_write_bytes",
    "clean_stale_temporaries",
    "fsync_dir",
    "open_regular_file",
    "read_checked_json",
    "read_json_file",
    "read_npz",
    "read_regular_file",
    "regular_file_size",
    "temporary_name",
    "write_checked_json",
]

#: Largest JSON document a loader reads (bytes); a document is parsed in memory, at roughly ten times its size.
MAX_JSON_BYTES = 512 * 2**20

_O_BINARY = getattr(os, "O_BINARY", 0)
_O_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_O_NOCTTY = getattr(os, "O_NOCTTY", 0)
_O_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_O_NONBLOCK = getattr(os, "O_NONBLOCK", 0)
_TMP_TAG = ".tmp-"


# -- writing -----------------------------------------------------------------------------------------------------


def temporary_name(name: str) -> str:
    """``.{name}.tmp-{pid}-{native thread id}-{16 random hex digits}`` (the Rust saver uses the same scheme)."""
    return f".{name}{_TMP_TAG}{os.getpid()}-{threading.get_native_id()}-{secrets.token_hex(8)}"


def _pid_is_alive(pid: int) -> bool:
    """Whether a process ``pid`` may exist; ``True`` whenever that cannot be told for sure."""
    if os.name == "nt":  # os.kill(pid, 0) sends CTRL_C_EVENT on Windows: never probe there
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (OSError, OverflowError):  # PermissionError: alive, owned by another user; OverflowError: not a pid
        return True
    return True


def clean_stale_temporaries(target: str | os.PathLike[str]) -> int:
    """Remove the temporaries of ``target`` left behind by processes that no longer exist.

    A temporary of ``target`` is an entry of its folder named ``.{name}.tmp-{pid}`` or ``.{name}.tmp-{pid}-{rest}``
    (``rest`` without a ``.``, so the temporaries of a target called ``{name}.tmp-1-x`` are not mistaken for ours).
    It is removed when ``pid`` is not this process and no process ``pid`` exists. Only regular files are removed;
    symbolic links are never followed nor removed. Errors (a folder that cannot be listed, an entry removed
    meanwhile) are ignored: cleaning is best effort and never makes a save fail.

    Writers whose process ids are not visible from here (another PID namespace sharing the folder) look dead; their
    temporaries may be removed mid-save, and their save then fails with ``FileNotFoundError`` (no file is torn).

    Parameters
    ----------
    target
        The file whose temporaries are cleaned.

    Returns
    -------
    int
        How many temporaries were removed.
    """
    path = Path(target)
    folder = path.parent if str(path.parent) else Path(".")
    pattern = re.compile(re.escape(f".{path.name}{_TMP_TAG}") + r"([0-9]{1,10})(?:-[^.]*)?", re.DOTALL)
    me = os.getpid()
    removed = 0
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return 0
    for entry in entries:
        m = pattern.fullmatch(entry.name)
        if m is None:
            continue
        pid = int(m.group(1))
        if pid <= 0 or pid == me or _pid_is_alive(pid):
            continue
        try:
            if not entry.is_file(follow_symlinks=False):
                continue
            os.unlink(entry.path)
        except OSError:
            continue
        removed += 1
    return removed


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (unique temporary file, fsync, rename, fsync of the folder).

    Concurrent writers of the same path never see each other's temporaries; the last rename wins. Temporaries of
    ``path`` left by dead processes are removed first (:func:`clean_stale_temporaries`).
    """
    target = Path(path)
    folder = target.parent if str(target.parent) else Path(".")
    clean_stale_temporaries(target)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | _O_NOFOLLOW | _O_CLOEXEC | _O_BINARY
    for attempt in range(8):
        tmp = folder / temporary_name(target.name)
        try:
            fd = os.open(tmp, flags, 0o666)  # the kernel applies the umask: 0o666 & ~umask
            break
        except FileExistsError:  # 64 random bits collided (or someone planted the name): draw again
            if attempt == 7:
                raise
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    fsync_dir(folder)


def fsync_dir(folder: str | os.PathLike[str]) -> None:
    """Flush ``folder``'s entries (a rename into it) to disk; a no-op where a directory cannot be fsynced."""
    with contextlib.suppress(OSError):
        dfd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)


def _digest(payload: Any) -> str:
    canon = json.dumps(payload, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(canon.encode("utf-8")).hexdigest()


def write_checked_json(path: str | os.PathLike[str], fmt: str, version: int, payload: dict[str, Any]) -> None:
    """Write ``payload`` with its format name, version and SHA-256, atomically."""
    doc = {"format": fmt, "version": version, "sha256": _digest(payload), "payload": payload}
    atomic_write_bytes(path, json.dumps(doc, ensure_ascii=False).encode("utf-8"))


# -- reading -----------------------------------------------------------------------------------------------------


def _file_kind(mode: int) -> str:
    for test, kind in (
        (stat.S_ISDIR, "a directory"),
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISSOCK, "a socket"),
    ):
        if test(mode):
            return kind
    return "not a regular file"


def _require_regular(path: str | os.PathLike[str], mode: int) -> None:
    if not stat.S_ISREG(mode):
        raise IndexFormatError(f"{os.fspath(path)}: is {_file_kind(mode)}; sparsecore reads only regular files")


def open_regular_file(path: str | os.PathLike[str]) -> IO[bytes]:
    """Open ``path`` for binary reading if it is a regular file (symbolic links to one are followed).

    The type is checked before opening (opening a device can have effects of its own) and again on the open
    descriptor, which is opened non-blocking so that a FIFO swapped in meanwhile cannot block.

    Raises
    ------
    FileNotFoundError
        ``path`` does not exist.
    IndexFormatError
        ``path`` is a directory, a FIFO, a device or a socket.
    """
    _require_regular(path, os.stat(path).st_mode)
    fd = os.open(path, os.O_RDONLY | _O_NONBLOCK | _O_NOCTTY | _O_CLOEXEC | _O_BINARY)
    try:
        _require_regular(path, os.fstat(fd).st_mode)
        if _O_NONBLOCK:
            os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def regular_file_size(fh: IO[bytes]) -> int:
    """Size in bytes of a file opened by :func:`open_regular_file`."""
    return os.fstat(fh.fileno()).st_size


def _too_large(path: str | os.PathLike[str], size: int | str, max_bytes: int) -> IndexFormatError:
    return IndexFormatError(
        f"{os.fspath(path)}: {size} bytes, more than the {max_bytes:,}-byte limit for this kind of file"
    )


def read_regular_file(path: str | os.PathLike[str], max_bytes: int | None = None) -> bytes:
    """The content of the regular file ``path``, at most ``max_bytes`` bytes.

    Parameters
    ----------
    path
        The file.
    max_bytes
        Refuse a larger file (``None``: no limit beyond the file's own size).

    Raises
    ------
    FileNotFoundError
        ``path`` does not exist.
    IndexFormatError
        ``path`` is not a regular file, or holds more than ``max_bytes`` bytes.
    """
    with open_regular_file(path) as fh:
        size = regular_file_size(fh)
        if max_bytes is not None and size > max_bytes:
            raise _too_large(path, f"{size:,}", max_bytes)
        parts = [fh.read(size + 1)]  # one read of the whole file; a file still growing is read on below
        total = len(parts[0])
        while parts[-1]:
            if max_bytes is not None and total > max_bytes:
                raise _too_large(path, f"over {max_bytes:,}", max_bytes)
            parts.append(fh.read(1 << 20))
            total += len(parts[-1])
        return b"".join(parts)


def read_checked_json(
    path: str | os.PathLike[str], fmt: str, max_version: int, *, max_bytes: int = MAX_JSON_BYTES
) -> tuple[int, dict[str, Any]]:
    """Read a file written by :func:`write_checked_json`; returns ``(version, payload)``.

    Parameters
    ----------
    path
        The file (a regular file of at most ``max_bytes`` bytes).
    fmt
        The expected format name.
    max_version
        The newest version this caller reads.
    max_bytes
        Size limit (default :data:`MAX_JSON_BYTES`).

    Raises
    ------
    FileNotFoundError
        ``path`` does not exist.
    IndexFormatError
        Not a regular file, too large, not JSON, another format, a newer version than this sparsecore reads, or a
        checksum mismatch.
    """
    raw = read_regular_file(path, max_bytes)
    try:
        doc = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise IndexFormatError(f"{path}: not a sparsecore {fmt} file (not JSON: {exc})") from None
    if not isinstance(doc, dict) or doc.get("format") != fmt:
        found = doc.get("format") if isinstance(doc, dict) else type(doc).__name__
        raise IndexFormatError(f"{path}: not a sparsecore {fmt} file (format is {found!r})")
    version = doc.get("version")
    if isinstance(version, bool) or not isinstance(version, int) or not 1 <= version <= max_version:
        raise IndexFormatError(
            f"{path}: {fmt} version {version!r} is not supported (this sparsecore reads 1..{max_version})"
        )
    payload = doc.get("payload")
    if not isinstance(payload, dict) or doc.get("sha256") != _digest(payload):
        raise IndexFormatError(f"{path}: checksum mismatch, the file is corrupted")
    return version, payload


def read_npz(
    source: IO[bytes], where: str | os.PathLike[str], names: Collection[str] | None = None
) -> dict[str, NDArray[Any]]:
    """Arrays of an uncompressed ``.npz`` (as :func:`numpy.savez` writes), each checked before it is allocated.

    Every member must be stored uncompressed (so it is no larger than the archive) and its ``.npy`` header must
    declare exactly as many bytes as the member holds, so a crafted header cannot make numpy allocate more memory
    than the file's size. Object arrays (pickles) are refused.

    Parameters
    ----------
    source
        The archive, seekable (a file from :func:`open_regular_file`, or an ``io.BytesIO``).
    where
        Named in error messages (the file's path).
    names
        Read only these arrays, all of which must be present (``None``: every array).

    Raises
    ------
    IndexFormatError
        Not a zip archive, a compressed or malformed member, a missing array, or an array whose header does not
        match its stored size.
    """
    out: dict[str, NDArray[Any]] = {}
    try:
        with zipfile.ZipFile(source) as zf:
            members = {info.filename.removesuffix(".npy"): info for info in zf.infolist()}
            wanted = list(members) if names is None else list(names)
            for name in wanted:
                info = members.get(name)
                if info is None or not info.filename.endswith(".npy"):
                    raise IndexFormatError(f"{where}: array {name!r} is missing (or not a .npy member)")
                if info.compress_type != zipfile.ZIP_STORED or info.compress_size != info.file_size:
                    raise IndexFormatError(f"{where}: array {name!r} is compressed; sparsecore writes stored arrays")
                with zf.open(info) as fp:
                    version = np.lib.format.read_magic(fp)
                    if version == (1, 0):
                        shape, _, dtype = np.lib.format.read_array_header_1_0(fp)
                    elif version == (2, 0):
                        shape, _, dtype = np.lib.format.read_array_header_2_0(fp)
                    else:
                        raise IndexFormatError(f"{where}: array {name!r} has .npy version {version}")
                    declared = int(np.prod(shape, dtype=object)) * dtype.itemsize
                    if dtype.hasobject or declared != info.file_size - fp.tell():
                        raise IndexFormatError(
                            f"{where}: array {name!r} declares {declared} bytes of {dtype} but holds "
                            f"{info.file_size - fp.tell()}"
                        )
                with zf.open(info) as fp:
                    out[name] = np.lib.format.read_array(fp, allow_pickle=False)
    except IndexFormatError:
        raise
    except (zipfile.BadZipFile, ValueError, OSError, KeyError, EOFError, TypeError, OverflowError) as exc:
        raise IndexFormatError(f"{where}: unreadable arrays ({type(exc).__name__}: {exc})") from None
    return out


def read_json_file(path: str | os.PathLike[str], what: str, max_bytes: int = MAX_JSON_BYTES) -> Any:
    """Parse the regular file ``path`` as JSON (at most ``max_bytes`` bytes); ``what`` names it in errors.

    Raises
    ------
    FileNotFoundError
        ``path`` does not exist.
    IndexFormatError
        Not a regular file, too large, or not JSON.
    """
    raw = read_regular_file(path, max_bytes)
    try:
        return json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise IndexFormatError(f"{os.fspath(path)}: not {what} (not JSON: {exc})") from None
