"""Text to write on synthetic pages: a real word-frequency corpus plus numbers, dates and punctuation.

Training text comes from wordfreq's English list (installed from PyPI). Evaluation text
comes from the GPL-3 licence text, which is reserved for evaluation and never trained on.
"""

from __future__ import annotations

import os
import random
import re
from pathlib import Path

GPL3 = Path("/usr/share/common-licenses/GPL-3")
MONTHS = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
]
PUNCTUATION_AFTER = [",", ".", ";", ":", "!", "?"]


def training_vocabulary(size: int = 30000) -> list[str]:
    # these words written one a line, for a machine without wordfreq (scripts/gpu_data.sh writes them for a GPU's)
    listed = os.environ.get("HW_TRAINING_VOCABULARY")
    if listed:
        return Path(listed).read_text().split()[:size]
    from wordfreq import top_n_list

    words = [w for w in top_n_list("en", size) if re.fullmatch(r"[A-Za-z][A-Za-z'\-]*", w)]
    return words


def evaluation_vocabulary() -> list[str]:
    if GPL3.exists():
        text = GPL3.read_text()
    else:  # a fallback that is still not in the training corpus
        text = "the quick brown fox jumps over the lazy dog while five boxing wizards jump quickly"
    return re.findall(r"[A-Za-z][A-Za-z'\-]*[A-Za-z]|[A-Za-z]", text)


class TextSampler:
    """Draws words shaped like real notes: mostly common words, some capitals, numbers, dates, punctuation."""

    def __init__(self, vocabulary: list[str], rng: random.Random):
        self.vocabulary = vocabulary
        self.rng = rng
        # Zipf-like weights keep common words common without drowning rare ones.
        self.weights = [1.0 / (rank + 10) ** 0.6 for rank in range(len(vocabulary))]

    def _number(self) -> str:
        rng = self.rng
        kind = rng.random()
        if kind < 0.35:
            return str(rng.randint(0, 999))
        if kind < 0.55:
            return f"{rng.randint(1, 99)}.{rng.randint(0, 99):02d}"
        if kind < 0.7:
            return f"{rng.randint(1, 28)}/{rng.randint(1, 12)}/{rng.randint(1950, 2030)}"
        if kind < 0.8:
            return f"{rng.randint(1, 12)}:{rng.randint(0, 59):02d}"
        if kind < 0.9:
            return f"{rng.randint(1, 100)}%"
        return f"${rng.randint(1, 999)}"

    def word(self) -> str:
        rng = self.rng
        if rng.random() < 0.08:
            return self._number()
        if rng.random() < 0.02:
            return rng.choice(MONTHS)
        word = rng.choices(self.vocabulary, weights=self.weights)[0]
        shape = rng.random()
        if shape < 0.12:
            word = word.capitalize()
        elif shape < 0.14:
            word = word.upper()
        if rng.random() < 0.1:
            word += rng.choice(PUNCTUATION_AFTER)
        elif rng.random() < 0.02:
            word = f'"{word}"' if rng.random() < 0.5 else f"({word})"
        return word

    def words(self, count: int) -> list[str]:
        return [self.word() for _ in range(count)]
