"""Lexicon rescoring: pick, among the decoder's n best readings of a crop, the one that is both
likely under the model and a likely word.

    score(reading) = log P_model(reading) + weight * ln(10) * sum over its words of (Zipf frequency - 9)

Zipf frequency is log10 of a word's occurrences per billion words (about 1 for rare words, 7 for
"the"), so Zipf - 9 is log10 of the word's probability: the prior is a unigram model's log-probability,
and each word a reading holds costs it something (a sum of Zipf frequencies themselves, as until
2026-12-05, paid a reading for every word it added: "As" read again sheared became "As. As As").
Words are looked up in lower case without surrounding punctuation; a word made of letters
that the lexicon lacks counts as `oov_zipf`, anything with digits or symbols as `neutral_zipf`, so
numbers, codes and names are left to the model. The rescoring never invents a reading: it only
chooses among readings the model itself scores, so an unknown word still comes out when the model is
sure.

The readings are the decoder's n best (beam search) and, for each of them that is not a word the
lexicon knows, the lexicon words within a small edit distance of it (`near`: 1 edit for words of up
to 4 letters, 2 for longer ones), in the reading's case and with its punctuation; the recognizer
scores those by teacher forcing, so "tke" can become "the" only if the image supports it. Near words
of every reading, not only the best, matter: "ooffevare" is three edits from "software", but the
third-best reading "ooftware" is one. When the best reading's confidence is at least `sure` (0.99),
only its own near words are added: on development crops that kept the same CER with 40% fewer
candidates to score.

The lexicon is a `lexicon.tsv` file (word TAB zipf) next to the model, made by
`python -m training.make_lexicon`; without one the recognizer decodes as before.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from rapidfuzz import process
from rapidfuzz.distance import Levenshtein

LEXICON_FILE = "lexicon.tsv"
# a Zipf frequency is log10 of a word's occurrences per billion words: log10 of its probability + 9
ZIPF_PER_BILLION = 9.0
DEFAULT_WEIGHT = 1.0  # tuned on a development set of held-out hands, see models/recognizer/README.md
_CORE = re.compile(r"^[^\w]*(.*?)[^\w]*$")
_TOKEN = re.compile(r"^([^\w\s]*)(\w+)([^\w\s]*)$")


def _same_case(word: str, like: str) -> str:
    if len(like) > 1 and like.isupper():
        return word.upper()
    return word[:1].upper() + word[1:] if like[:1].isupper() else word


@dataclass(frozen=True)
class Lexicon:
    zipf: dict[str, float]
    weight: float = DEFAULT_WEIGHT
    oov_zipf: float = 1.0
    neutral_zipf: float = 3.0
    max_near: int = 8
    sure: float = 0.99  # a crop whose best reading is this confident gets the near words of that reading alone
    _words: list[str] = field(init=False, repr=False, compare=False)
    _zipfs: np.ndarray = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_words", list(self.zipf))
        object.__setattr__(self, "_zipfs", np.array(list(self.zipf.values()), dtype=np.float32))

    @classmethod
    def load(cls, path: str | Path, **options: float) -> Lexicon:
        zipf = {}
        with open(path, encoding="utf-8") as lines:
            for number, line in enumerate(lines, 1):
                word, _, value = line.rstrip("\n").partition("\t")
                try:
                    zipf[word] = float(value)
                except ValueError:
                    raise ValueError(f"{path}:{number}: expected 'word<TAB>zipf', got {line!r}") from None
        return cls(zipf, **options)

    def prior(self, text: str) -> float:
        """The natural log of the probability of the words of `text` (a unigram model: Zipf - 9 each)."""
        total = 0.0
        for token in text.split():
            core = _CORE.match(token).group(1).lower()
            if not core:
                continue
            if core.isalpha():
                total += self.zipf.get(core, self.oov_zipf) - ZIPF_PER_BILLION
            else:
                total += self.zipf.get(core, self.neutral_zipf) - ZIPF_PER_BILLION
        return math.log(10) * total

    def near(self, text: str) -> list[str]:
        """Lexicon words close to a one-word reading the lexicon lacks, most frequent first, spelled in
        the reading's case and with its punctuation; [] for words it knows, numbers and phrases."""
        return self.near_many([text])[0]

    def near_many(self, texts: list[str]) -> list[list[str]]:
        """`near` of each text, from one edit-distance matrix for all of them: rapidfuzz's `cdist` took
        0.3 ms a reading against the 49,882 shipped words, one `process.extract` call 49 ms (beside a
        training run)."""
        tokens = [_TOKEN.match(text) for text in texts]
        queries = {}  # lower-case core -> row of the distance matrix
        for match in tokens:
            lower = match.group(2).lower() if match else ""
            if lower.isalpha() and lower not in self.zipf:
                queries.setdefault(lower, len(queries))
        if not queries or not self._words or self.max_near <= 0:
            return [[] for _ in texts]
        distances = process.cdist(
            list(queries), self._words, scorer=Levenshtein.distance, score_cutoff=2, dtype=np.uint8
        )
        found = {}
        for lower, row in queries.items():
            edits = 1 if len(lower) <= 4 else 2
            hits = np.flatnonzero(distances[row] <= edits)
            order = np.lexsort((-self._zipfs[hits], distances[row, hits]))[: self.max_near]
            found[lower] = [self._words[i] for i in hits[order]]
        results = []
        for match in tokens:
            if match is None or match.group(2).lower() not in found:
                results.append([])
                continue
            before, core, after = match.groups()
            results.append([before + _same_case(word, core) + after for word in found[core.lower()]])
        return results

    def choose(self, readings: list[tuple[str, float]]) -> int:
        """Index of the best of `readings`, each (text, summed log-probability under the model)."""
        scores = [log_prob + self.weight * self.prior(text) for text, log_prob in readings]
        return max(range(len(readings)), key=scores.__getitem__)


def find_lexicon(model_dir: str | Path, choice: str = "auto", weight: float = DEFAULT_WEIGHT) -> Lexicon | None:
    """The lexicon a recognizer uses. `choice`: "auto" (the model directory's lexicon.tsv when it has
    one), "off", or the path of a lexicon file (which must exist)."""
    if choice.lower() in ("off", "none", ""):
        return None
    if choice.lower() == "auto":
        path = Path(model_dir) / LEXICON_FILE
        return Lexicon.load(path, weight=weight) if path.exists() else None
    return Lexicon.load(choice, weight=weight)
