"""Word tokenisation for lexical encoders: a regex, an English stop list and optional Snowball stemming."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from typing import Literal

from sparsecore._optional import require
from sparsecore.exceptions import InvalidArgumentError

__all__ = ["ENGLISH_STOPWORDS", "WordTokenizer", "english_stemmer_if_available"]

# A compact English stop list (articles, pronouns, auxiliaries, prepositions, conjunctions); written for this
# package. Content words such as "high" or "flow" are never in it.
ENGLISH_STOPWORDS: frozenset[str] = frozenset(
    """
    a about above after again against all am an and any are as at be because been before being below between both
    but by can could did do does doing down during each few for from further had has have having he her here hers
    herself him himself his how i if in into is it its itself just me more most my myself no nor not now of off on
    once only or other our ours ourselves out over own same she should so some such than that the their theirs them
    themselves then there these they this those through to too under until up very was we were what when where which
    while who whom why will with would you your yours yourself yourselves also may might must shall upon
    """.split()  # noqa: SIM905 (a word list reads better as text)
)

# Words of two or more letters or digits, the usual choice of Lucene's classic analyzers and bm25s.
DEFAULT_PATTERN = r"(?u)\b\w\w+\b"


def english_stemmer_if_available() -> Literal["english"] | None:
    """``"english"`` when PyStemmer is installed (extra ``text``), else ``None`` (no stemming)."""
    import importlib.util

    return "english" if importlib.util.find_spec("Stemmer") is not None else None


class WordTokenizer:
    """Lower-cases, splits on a regex, drops stop words and optionally stems.

    Parameters
    ----------
    pattern
        Regular expression whose matches are the tokens.
    stopwords
        ``"english"`` for :data:`ENGLISH_STOPWORDS`, ``None`` for none, or your own collection of words.
    stemmer
        ``None``, ``"english"`` (Snowball English stemmer from the ``PyStemmer`` package, extra ``text``) or any
        callable mapping a word to its stem.
    lowercase
        Lower-case the text first.

    Examples
    --------
    >>> WordTokenizer()("The flows of heated air")
    ['flows', 'heated', 'air']
    """

    def __init__(
        self,
        pattern: str = DEFAULT_PATTERN,
        *,
        stopwords: Literal["english"] | Iterable[str] | None = "english",
        stemmer: Literal["english"] | Callable[[str], str] | None = None,
        lowercase: bool = True,
    ) -> None:
        try:
            self._regex = re.compile(pattern)
        except re.error as exc:
            raise InvalidArgumentError(f"pattern: not a valid regular expression ({exc})") from exc
        self.pattern = pattern
        self.lowercase = lowercase
        if stopwords == "english":
            self.stopwords: frozenset[str] = ENGLISH_STOPWORDS
        elif stopwords is None:
            self.stopwords = frozenset()
        elif isinstance(stopwords, str):
            raise InvalidArgumentError(
                f"stopwords: expected 'english', None or a collection of words, got {stopwords!r}"
            )
        else:
            self.stopwords = frozenset(stopwords)
        self.stemmer_name: str | None
        if stemmer is None:
            self._stem: Callable[[str], str] | None = None
            self.stemmer_name = None
        elif stemmer == "english":
            stem_mod = require("Stemmer")
            self._stem = stem_mod.Stemmer("english").stemWord
            self.stemmer_name = "english"
        elif callable(stemmer):
            self._stem = stemmer
            self.stemmer_name = getattr(stemmer, "__name__", "custom")
        else:
            raise InvalidArgumentError(f"stemmer: expected None, 'english' or a callable, got {stemmer!r}")
        self._cache: dict[str, str] = {}

    def __call__(self, text: str) -> list[str]:
        """Tokens of one text, in order, repeats kept."""
        if not isinstance(text, str):
            raise InvalidArgumentError(f"text: expected str, got {type(text).__name__}")
        if self.lowercase:
            text = text.lower()
        words = [w for w in self._regex.findall(text) if w not in self.stopwords]
        if self._stem is None:
            return words
        cache = self._cache
        out = []
        for w in words:
            s = cache.get(w)
            if s is None:
                s = cache[w] = self._stem(w)
            out.append(s)
        return out

    def config(self) -> dict[str, object]:
        """JSON-serialisable settings (a custom stemmer or stop list is recorded by name/content)."""
        return {
            "pattern": self.pattern,
            "stopwords": sorted(self.stopwords),
            "stemmer": self.stemmer_name,
            "lowercase": self.lowercase,
        }

    @classmethod
    def from_config(cls, cfg: dict[str, object]) -> WordTokenizer:
        """Rebuild a tokenizer from :meth:`config` (only ``None`` or ``"english"`` stemmers can be rebuilt)."""
        stemmer = cfg.get("stemmer")
        if stemmer not in (None, "english"):
            raise InvalidArgumentError(f"stemmer: a custom stemmer ({stemmer!r}) cannot be restored from a file")
        pattern = cfg.get("pattern", DEFAULT_PATTERN)
        if not isinstance(pattern, str):
            raise InvalidArgumentError(f"pattern: expected a string in the saved configuration, got {pattern!r}")
        stop = cfg.get("stopwords", [])
        if not isinstance(stop, list) or not set(map(type, stop)) <= {str}:
            raise InvalidArgumentError("stopwords: expected a list of strings in the saved configuration")
        lowercase = cfg.get("lowercase", True)
        if not isinstance(lowercase, bool):
            raise InvalidArgumentError(
                f"lowercase: expected true or false in the saved configuration, got {lowercase!r}"
            )
        return cls(pattern, stopwords=stop, stemmer="english" if stemmer == "english" else None, lowercase=lowercase)

    def __repr__(self) -> str:
        return (
            f"WordTokenizer(pattern={self.pattern!r}, stopwords={len(self.stopwords)}, stemmer={self.stemmer_name!r})"
        )
