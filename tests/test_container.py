"""The one checked container format: round trips, refusal of damaged or foreign files, and files written by
sparsecore 0.1.0 (``tests/data/legacy``, made by ``tests/legacy_recipes.py``) that still load."""

from __future__ import annotations

import shutil
import zlib
from pathlib import Path
from typing import Any

import legacy_recipes as recipes
import numpy as np
import pytest
import sparsecore as sc
from hypothesis import given
from hypothesis import strategies as st
from sparsecore._container import MAGIC, pack_strings, read_container, sniff, unpack_strings, write_container
from sparsecore.encoders import BM25Encoder
from sparsecore.exceptions import IndexFormatError
from sparsecore.lsse import OnlineRidge
from sparsecore.sdr import CodingField, SDRNetwork
from sparsecore.store import load_vectors, save_vectors

LEGACY = Path(__file__).parent / "data" / "legacy"

DTYPES: list[Any] = [np.uint8, np.int8, np.uint16, np.int16, np.uint32, np.int32, np.uint64, np.int64]
DTYPES += [np.float16, np.float32, np.float64, np.bool_]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(), (0,), (5,), (2, 3), (1, 2, 0, 3), (2, 1, 2, 2)])
def test_arrays_round_trip_bit_for_bit(tmp_path: Path, dtype: Any, shape: tuple[int, ...]) -> None:
    rng = np.random.default_rng(len(shape))
    a = (rng.standard_normal(shape) * 50).astype(dtype)
    meta = {"name": "é", "nested": {"x": [1, 2.5, None, True]}}
    write_container(tmp_path / "c", "test.kind", 3, meta, {"a": a, "big-endian": a.astype(a.dtype.newbyteorder(">"))})
    c = read_container(tmp_path / "c", "test.kind", {3})
    assert c.kind_version == 3
    assert c.meta == meta
    for name in ("a", "big-endian"):
        got = c.arrays[name]
        assert got.shape == a.shape
        assert got.dtype == a.dtype.newbyteorder("<")
        assert got.tobytes() == a.astype(a.dtype.newbyteorder("<")).tobytes()
        assert not got.flags.writeable


def test_foreign_kind_version_and_dtypes_are_refused(tmp_path: Path) -> None:
    p = tmp_path / "c"
    write_container(p, "bm25", 2, {}, {})
    with pytest.raises(IndexFormatError, match=r'"bm25" file, not a "lsse\.ridge" file'):
        read_container(p, "lsse.ridge", {1})
    with pytest.raises(IndexFormatError, match=r"version 2 is not supported.*upgrade sparsecore"):
        read_container(p, "bm25", {1})
    with pytest.raises(IndexFormatError, match=r"version 2 is not supported.*save it again"):
        read_container(p, "bm25", {3})
    with pytest.raises(TypeError, match="x: arrays of dtype object"):
        write_container(p, "bm25", 1, {}, {"x": np.array([object()])})
    with pytest.raises(ValueError, match="Out of range float values are not JSON compliant"):
        write_container(p, "bm25", 1, {"x": float("nan")}, {})
    with pytest.raises(ValueError, match="kind"):
        write_container(p, "a kind with spaces", 1, {}, {})
    with pytest.raises(ValueError, match="at most 4 dimensions"):
        write_container(p, "k", 1, {}, {"x": np.zeros((1, 1, 1, 1, 1))})
    assert read_container(p, "bm25", {2}).kind_version == 2  # the failed writes left the file alone


def test_metadata_must_be_a_json_object(tmp_path: Path) -> None:
    p = tmp_path / "c"
    sc._core.container_write(str(p), "k", 1, "[1, 2]", [])
    with pytest.raises(IndexFormatError, match="not a JSON object"):
        read_container(p, "k", {1})
    sc._core.container_write(str(p), "k", 1, "{not json", [])
    with pytest.raises(IndexFormatError, match="not JSON"):
        read_container(p, "k", {1})


def test_every_byte_flip_and_truncation_is_refused(tmp_path: Path) -> None:
    p = tmp_path / "c"
    write_container(p, "k", 1, {"a": 1}, {"x": np.arange(5, dtype=np.int32), "y": np.ones((2, 2))})
    raw = p.read_bytes()
    assert raw[:8] == MAGIC
    assert len(raw) % 64 == 0
    bad = tmp_path / "bad"
    for i in range(len(raw)):
        b = bytearray(raw)
        b[i] ^= 0x01
        bad.write_bytes(bytes(b))
        with pytest.raises(IndexFormatError):
            read_container(bad, "k", {1})
    for n in range(0, len(raw), 7):
        bad.write_bytes(raw[:n])
        with pytest.raises(IndexFormatError):
            read_container(bad, "k", {1})
    # A header pointing beyond the file, with its checksum recomputed, is refused before anything is read.
    b = bytearray(raw)
    b[48:56] = (2**40).to_bytes(8, "little")
    b[60:64] = zlib.crc32(bytes(b[:60])).to_bytes(4, "little")
    bad.write_bytes(bytes(b))
    with pytest.raises(IndexFormatError, match=r"implausible|truncated"):
        read_container(bad, "k", {1})
    with pytest.raises(IndexFormatError, match="not a regular file"):
        read_container(tmp_path, "k", {1})
    with pytest.raises(FileNotFoundError):
        read_container(tmp_path / "missing", "k", {1})


@given(st.lists(st.text(max_size=12), max_size=20))
def test_string_tables_round_trip(strings: list[str]) -> None:
    packed = pack_strings(strings)
    assert unpack_strings(packed["offsets"], packed["utf8"], "p", "t") == strings


def test_malformed_string_tables_are_refused() -> None:
    packed = pack_strings(["ab", "cd"])
    offsets, utf8 = packed["offsets"], packed["utf8"]
    for bad_offsets in ([0, 3, 2], [1, 2, 4], [0, 2, 5], []):
        with pytest.raises(IndexFormatError, match="t:"):
            unpack_strings(np.array(bad_offsets, dtype=np.int64), utf8, "p", "t")
    with pytest.raises(IndexFormatError, match="not UTF-8"):
        unpack_strings(offsets, np.array([0xFF, 0xFE, 0x61, 0x62], dtype=np.uint8), "p", "t")


# -- every saver writes the container, and reads the files of sparsecore 0.1.0 ------------------------------------


def _copy(tmp_path: Path, name: str) -> Path:
    dst = tmp_path / name
    shutil.copyfile(LEGACY / name, dst)
    return dst


def test_index_of_release_0_1_0_loads_and_saves_as_a_container(tmp_path: Path) -> None:
    new = recipes.make_index()
    q = recipes.index_batch()[:5]
    for mmap in (False, True):
        old = sc.InvertedIndex.load(_copy(tmp_path, "index_v3.bin"), mmap=mmap)
        assert len(old) == len(new) == 38
        for a, b in zip(old.search(q, 10), new.search(q, 10), strict=True):
            np.testing.assert_array_equal(a, b)
    old.save(tmp_path / "re.bin")
    assert sniff(tmp_path / "re.bin") == MAGIC
    back = sc.InvertedIndex.load(tmp_path / "re.bin")
    np.testing.assert_array_equal(back.search(q, 10)[0], new.search(q, 10)[0])
    with pytest.raises(IndexFormatError, match='"index" file, not a "bm25" file'):
        BM25Encoder.load(tmp_path / "re.bin")


def _same_state(a: dict[str, Any], b: dict[str, Any]) -> None:
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(np.asarray(a[k]), np.asarray(b[k]), err_msg=k)


def test_ridge_of_release_0_1_0_loads_and_saves_as_a_container(tmp_path: Path) -> None:
    new = recipes.make_ridge()
    old = OnlineRidge.load(_copy(tmp_path, "ridge_v1.bin"))
    _same_state(old.state_dict(), new.state_dict())
    new.save(tmp_path / "r.bin")
    assert sniff(tmp_path / "r.bin") == MAGIC
    _same_state(OnlineRidge.load(tmp_path / "r.bin").state_dict(), new.state_dict())
    phi, _ = recipes.ridge_data()
    np.testing.assert_array_equal(OnlineRidge.load(tmp_path / "r.bin").predict(phi), new.predict(phi))


def test_sdr_field_and_network_of_release_0_1_0_load_and_save_as_containers(tmp_path: Path) -> None:
    x = recipes.sdr_inputs()
    field = CodingField.load(_copy(tmp_path, "field_v1.bin"))
    np.testing.assert_array_equal(field.learn(x), recipes.make_field().learn(x))
    field.save(tmp_path / "f.bin")
    assert sniff(tmp_path / "f.bin") == MAGIC
    np.testing.assert_array_equal(CodingField.load(tmp_path / "f.bin").learn(x), field.learn(x))
    images = recipes.network_images()
    net = SDRNetwork.load(_copy(tmp_path, "network_v1.bin"))
    fresh = recipes.make_network()
    for a, b in zip(net.learn(images), fresh.learn(images), strict=True):
        np.testing.assert_array_equal(a, b)
    net.save(tmp_path / "n.bin")
    back = SDRNetwork.load(tmp_path / "n.bin")
    assert back.grids == net.grids
    assert back.code_lengths == net.code_lengths
    for a, b in zip(back.learn(images), net.learn(images), strict=True):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(IndexFormatError, match=r'"sdr\.field" file, not a "sdr\.network" file'):
        SDRNetwork.load(tmp_path / "f.bin")


def test_bm25_of_release_0_1_0_loads_and_saves_as_a_container(tmp_path: Path) -> None:
    new = recipes.make_bm25()
    old = BM25Encoder.load(_copy(tmp_path, "bm25_v1.json"))
    assert old.id_to_token == new.id_to_token
    assert old.n_docs == new.n_docs
    q = ["fast sparse index"]
    scores = new.encode_queries(q).scores(new.encode_documents(recipes.CORPUS))
    np.testing.assert_array_equal(old.encode_queries(q).scores(old.encode_documents(recipes.CORPUS)), scores)
    new.save(tmp_path / "b.bin")
    assert sniff(tmp_path / "b.bin") == MAGIC
    back = BM25Encoder.load(tmp_path / "b.bin")
    np.testing.assert_array_equal(back.encode_queries(q).scores(back.encode_documents(recipes.CORPUS)), scores)


@pytest.mark.parametrize(
    ("field", "value"),
    [("avg_doc_len", -1.0), ("n_docs", 0), ("k1", -1), ("n_docs", 2.5), ("tokenizer", [1]), ("b", None)],
)
def test_bm25_container_content_is_checked_like_the_constructor(tmp_path: Path, field: str, value: Any) -> None:
    p = tmp_path / "b.bin"
    recipes.make_bm25().save(p)
    c = read_container(p, "bm25", {1})
    write_container(p, "bm25", 1, {**c.meta, field: value}, c.arrays)
    with pytest.raises(IndexFormatError, match=field):
        BM25Encoder.load(p)
    arrays = dict(c.arrays)
    arrays["doc_freq"] = np.full_like(arrays["doc_freq"], 99)
    write_container(p, "bm25", 1, c.meta, arrays)
    with pytest.raises(IndexFormatError, match="doc_freq"):
        BM25Encoder.load(p)
    arrays["doc_freq"] = c.arrays["doc_freq"].astype(np.float64)
    write_container(p, "bm25", 1, c.meta, arrays)
    with pytest.raises(IndexFormatError, match="doc_freq"):
        BM25Encoder.load(p)


def test_vectors_of_release_0_1_0_load_and_save_as_a_container(tmp_path: Path) -> None:
    enc = recipes.make_bm25()
    batch = enc.encode_document(recipes.CORPUS)
    ids = [f"d{i}" for i in range(len(recipes.CORPUS))]
    old, old_ids, old_info = load_vectors(_copy(tmp_path, "vectors_v1.npz"))
    assert old_ids == ids
    assert old_info == {"encoder": "bm25"}
    np.testing.assert_array_equal(old.to_dense(), batch.to_dense())
    save_vectors(tmp_path / "v.vec", batch, ["é", "", "x y", "d3"], {"encoder": "bm25", "n": [1, 2]})
    assert sniff(tmp_path / "v.vec") == MAGIC
    back, back_ids, info = load_vectors(tmp_path / "v.vec")
    assert back_ids == ["é", "", "x y", "d3"]
    assert info == {"encoder": "bm25", "n": [1, 2]}
    np.testing.assert_array_equal(back.to_dense(), batch.to_dense())
    c = read_container(tmp_path / "v.vec", "vectors", {1})
    arrays = dict(c.arrays)
    arrays["indices"] = np.full_like(arrays["indices"], 10**6)  # out of range for dim: refused, not misread
    write_container(tmp_path / "v.vec", "vectors", 1, c.meta, arrays)
    with pytest.raises(IndexFormatError, match="malformed vectors"):
        load_vectors(tmp_path / "v.vec")
    arrays = dict(c.arrays)
    arrays["id_offsets"] = arrays["id_offsets"][:-1]
    write_container(tmp_path / "v.vec", "vectors", 1, c.meta, arrays)
    with pytest.raises(IndexFormatError, match="ids"):
        load_vectors(tmp_path / "v.vec")
