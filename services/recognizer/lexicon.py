"""Lexicon rescoring: pick, among the decoder's n best readings of a crop, the one that is both
likely under the model and a likely word.

    score(reading) = log P_model(reading) + weight * ln(10) * sum of each word's Zipf frequency

Zipf frequency is log10 of a word's occurrences per billion words (about 1 for rare words, 7 for
"the"). Words are looked up in lower case without surrounding punctuation; a word made of letters
that the lexicon lacks counts as `oov_zipf`, anything with digits or symbols as `neutral_zipf`, so
numbers, codes and names are left to the model. The rescoring never invents a reading: it only
chooses among what the decoder proposed, so an unknown word still comes out when the model is sure.

The lexicon is a `lexicon.tsv` file (word TAB zipf) next to the model, made by
`python -m training.make_lexicon`; without one the recognizer decodes as before.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path

LEXICON_FILE = "lexicon.tsv"
_CORE = re.compile(r"^[^\w]*(.*?)[^\w]*$")


@dataclass(frozen=True)
class Lexicon:
    zipf: dict[str, float]
    weight: float = 1.0
    oov_zipf: float = 1.0
    neutral_zipf: float = 3.0

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
        """ln(10) x the summed Zipf frequency of the words of `text`."""
        total = 0.0
        for token in text.split():
            core = _CORE.match(token).group(1).lower()
            if not core:
                continue
            if core.isalpha():
                total += self.zipf.get(core, self.oov_zipf)
            else:
                total += self.zipf.get(core, self.neutral_zipf)
        return math.log(10) * total

    def choose(self, readings: list[tuple[str, float]]) -> int:
        """Index of the best of `readings`, each (text, summed log-probability under the model)."""
        scores = [log_prob + self.weight * self.prior(text) for text, log_prob in readings]
        return max(range(len(readings)), key=scores.__getitem__)


def find_lexicon(model_dir: str | Path, choice: str = "auto", weight: float = 1.0) -> Lexicon | None:
    """The lexicon a recognizer uses. `choice`: "auto" (the model directory's lexicon.tsv when it has
    one), "off", or the path of a lexicon file (which must exist)."""
    if choice.lower() in ("off", "none", ""):
        return None
    if choice.lower() == "auto":
        path = Path(model_dir) / LEXICON_FILE
        return Lexicon.load(path, weight=weight) if path.exists() else None
    return Lexicon.load(choice, weight=weight)
