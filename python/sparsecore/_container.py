"""The one checked file format of sparsecore, for the Python-side savers.

Every file the package saves (index, BM25 encoder, online ridge, SDR field and network, encoded vectors, sparse
autoencoders) is a *container*: a 64-byte header (magic ``SPCOREFF``, container version, byte-order mark, file
length, kind, kind version, counts, two CRC-32s), a table of named arrays (dtype, shape, offset, CRC-32), a JSON
object of metadata, and the arrays at 64-byte-aligned offsets. The layout is written and checked by the Rust core
(``rust/sparsecore-core/src/container.rs``, which the index uses directly); this module maps numpy arrays and
Python metadata to it. Writes are atomic (unique temporary, fsync, rename, fsync of the folder); reads check
magic, versions, kind, lengths, every checksum and every table entry before anything is returned, and raise
:class:`~sparsecore.exceptions.IndexFormatError` naming the file and the problem. No pickle anywhere.

Lists of strings are stored as two arrays, UTF-8 bytes and int64 offsets (:func:`pack_strings`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from sparsecore import _core
from sparsecore._io import open_regular_file
from sparsecore.exceptions import IndexFormatError

__all__ = ["MAGIC", "Contents", "pack_strings", "read_container", "sniff", "unpack_strings", "write_container"]

#: First eight bytes of every container file.
MAGIC = b"SPCOREFF"

_CODES: dict[np.dtype[Any], int] = {
    np.dtype(np.uint8): 1,
    np.dtype(np.int8): 2,
    np.dtype(np.uint16): 3,
    np.dtype(np.int16): 4,
    np.dtype(np.uint32): 5,
    np.dtype(np.int32): 6,
    np.dtype(np.uint64): 7,
    np.dtype(np.int64): 8,
    np.dtype(np.float16): 9,
    np.dtype(np.float32): 10,
    np.dtype(np.float64): 11,
    np.dtype(np.bool_): 12,
}
#: Code 13 (bfloat16) is read back as its raw ``uint16`` bits.
_DTYPES: dict[int, np.dtype[Any]] = {c: d for d, c in _CODES.items()} | {13: np.dtype(np.uint16)}


@dataclass(frozen=True)
class Contents:
    """What :func:`read_container` found.

    Attributes
    ----------
    kind_version
        The version of the kind's layout the saver wrote.
    meta
        The JSON metadata object.
    arrays
        The arrays by name (little-endian, C order, read-only).
    """

    kind_version: int
    meta: dict[str, Any]
    arrays: dict[str, NDArray[Any]]

    def array(
        self, name: str, dtype: type[Any] | np.dtype[Any], ndim: int, path: str | os.PathLike[str]
    ) -> NDArray[Any]:
        """The array ``name``, which must exist with this dtype and number of dimensions.

        Raises
        ------
        IndexFormatError
            It is missing or has another dtype or ndim.
        """
        a = self.arrays.get(name)
        if a is None:
            raise IndexFormatError(f"{path}: the file has no array {name!r}")
        if a.dtype != np.dtype(dtype) or a.ndim != ndim:
            raise IndexFormatError(
                f"{path}: array {name!r} is {a.dtype} with {a.ndim} dims, expected {np.dtype(dtype)} with {ndim}"
            )
        return a


def write_container(
    path: str | os.PathLike[str],
    kind: str,
    version: int,
    meta: Mapping[str, Any],
    arrays: Mapping[str, NDArray[Any]],
) -> None:
    """Write ``arrays`` and ``meta`` as a container of ``kind`` (layout ``version``) to ``path``, atomically.

    Parameters
    ----------
    path
        Destination; replaced atomically.
    kind
        What the file holds (1 to 16 printable ASCII characters, e.g. ``"bm25"``).
    version
        Version of the kind's layout.
    meta
        A JSON-serialisable mapping (no NaN or infinity).
    arrays
        Arrays of the dtypes numpy and the format share (bool, (u)int8-64, float16/32/64), at most 4 dims.

    Raises
    ------
    TypeError
        An array has another dtype (object, strings, complex...).
    """
    text = json.dumps(dict(meta), sort_keys=True, allow_nan=False, ensure_ascii=False)
    sections: list[tuple[str, int, list[int], bytes]] = []
    for name, a in arrays.items():
        arr = np.asarray(a)
        code = _CODES.get(arr.dtype.newbyteorder("="))
        if code is None:
            raise TypeError(f"{name}: arrays of dtype {arr.dtype} cannot be saved")
        le = np.ascontiguousarray(arr, dtype=arr.dtype.newbyteorder("<"))
        sections.append((name, code, list(arr.shape), le.tobytes()))
    _core.container_write(os.fspath(path), kind, version, text, sections)


def read_container(path: str | os.PathLike[str], kind: str, versions: Collection[int]) -> Contents:
    """Read a container of ``kind`` whose layout version is one of ``versions``, checking everything.

    Parameters
    ----------
    path
        The file.
    kind
        The kind expected (a file of another kind is refused, naming both).
    versions
        Layout versions this build reads.

    Returns
    -------
    Contents

    Raises
    ------
    FileNotFoundError
        ``path`` does not exist.
    IndexFormatError
        Not a regular file, not a container, another kind or version, truncated, corrupted, or metadata that is
        not a JSON object.
    """
    version, text, parts = _core.container_read(os.fspath(path), kind)
    if version not in versions:
        newest = max(versions)
        hint = "upgrade sparsecore" if version > newest else "save it again with the release that wrote it"
        raise IndexFormatError(
            f"{path}: {kind} layout version {version} is not supported (this sparsecore reads "
            f"{', '.join(map(str, sorted(versions)))}); {hint}"
        )
    try:
        meta = json.loads(text)
    except (json.JSONDecodeError, RecursionError) as exc:
        raise IndexFormatError(f"{path}: the metadata is not JSON ({exc})") from None
    if not isinstance(meta, dict):
        raise IndexFormatError(f"{path}: the metadata is not a JSON object")
    arrays: dict[str, NDArray[Any]] = {}
    for name, code, shape, raw in parts:
        a = raw.view(_DTYPES[code].newbyteorder("<")).reshape(shape)
        a.flags.writeable = False
        arrays[name] = a
    return Contents(version, meta, arrays)


def sniff(path: str | os.PathLike[str]) -> bytes:
    """The first eight bytes of ``path`` (fewer for a shorter file), to tell a container from an older format.

    Raises
    ------
    FileNotFoundError
        ``path`` does not exist.
    IndexFormatError
        Not a regular file.
    """
    with open_regular_file(path) as fh:
        return fh.read(len(MAGIC))


def pack_strings(strings: Sequence[str]) -> dict[str, NDArray[Any]]:
    """``strings`` as ``{"offsets": int64 (n + 1,), "utf8": uint8}`` arrays."""
    encoded = [s.encode("utf-8") for s in strings]
    offsets = np.zeros(len(encoded) + 1, dtype=np.int64)
    np.cumsum([len(e) for e in encoded], out=offsets[1:])
    return {"offsets": offsets, "utf8": np.frombuffer(b"".join(encoded), dtype=np.uint8)}


def unpack_strings(offsets: NDArray[Any], utf8: NDArray[Any], path: str | os.PathLike[str], what: str) -> list[str]:
    """The strings :func:`pack_strings` packed, checking the offsets and the encoding.

    Raises
    ------
    IndexFormatError
        Offsets that do not start at 0, decrease or end elsewhere than the byte count; invalid UTF-8.
    """
    if offsets.dtype != np.int64 or utf8.dtype != np.uint8 or offsets.ndim != 1 or len(offsets) == 0:
        raise IndexFormatError(f"{path}: {what}: malformed string table")
    if offsets[0] != 0 or offsets[-1] != len(utf8) or np.any(np.diff(offsets) < 0):
        raise IndexFormatError(f"{path}: {what}: string offsets out of order or out of range")
    raw = utf8.tobytes()
    try:
        return [raw[a:b].decode("utf-8") for a, b in zip(offsets[:-1].tolist(), offsets[1:].tolist(), strict=True)]
    except UnicodeDecodeError as exc:
        raise IndexFormatError(f"{path}: {what}: not UTF-8 ({exc})") from None
