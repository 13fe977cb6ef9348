"""Atomic, checked files for the Python-side state (encoder vocabularies, IDF tables, CLI metadata).

A JSON document is written as ``{"format": ..., "version": ..., "sha256": ..., "payload": {...}}`` through a
temporary file in the same folder, fsync, then rename, so a reader sees the old file or the new one, never half.
Reading checks the format name, the version and the checksum of the payload.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

from sparsecore.exceptions import IndexFormatError

__all__ = ["atomic_write_bytes", "read_checked_json", "write_checked_json"]


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (temporary file, fsync, rename, fsync of the folder)."""
    target = Path(path)
    folder = target.parent if str(target.parent) else Path(".")
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=folder)
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600 files; give the usual permissions
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    with contextlib.suppress(OSError):  # not every platform can fsync a directory
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


def read_checked_json(path: str | os.PathLike[str], fmt: str, max_version: int) -> tuple[int, dict[str, Any]]:
    """Read a file written by :func:`write_checked_json`; returns ``(version, payload)``.

    Raises
    ------
    FileNotFoundError
        ``path`` does not exist.
    IndexFormatError
        Not JSON, another format, a newer version than this sparsecore reads, or a checksum mismatch.
    """
    raw = Path(path).read_bytes()
    try:
        doc = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise IndexFormatError(f"{path}: not a sparsecore {fmt} file (not JSON: {exc})") from None
    if not isinstance(doc, dict) or doc.get("format") != fmt:
        found = doc.get("format") if isinstance(doc, dict) else type(doc).__name__
        raise IndexFormatError(f"{path}: not a sparsecore {fmt} file (format is {found!r})")
    version = doc.get("version")
    if not isinstance(version, int) or not 1 <= version <= max_version:
        raise IndexFormatError(
            f"{path}: {fmt} version {version!r} is not supported (this sparsecore reads 1..{max_version})"
        )
    payload = doc.get("payload")
    if not isinstance(payload, dict) or doc.get("sha256") != _digest(payload):
        raise IndexFormatError(f"{path}: checksum mismatch, the file is corrupted")
    return version, payload
