"""Write the recognizer's lexicon (services.recognizer.lexicon): the most frequent words of a language
with their Zipf frequency, from wordfreq (installed from PyPI, no download at run time).

    python -m training.make_lexicon --out models/recognizer/lexicon.tsv [--language en --words 50000]
"""

from __future__ import annotations

import argparse
from pathlib import Path


def make_lexicon(out: Path, language: str = "en", words: int = 50000) -> int:
    from wordfreq import top_n_list, zipf_frequency

    rows = []
    for word in top_n_list(language, words):
        word = word.lower()
        if any(ch.isalpha() for ch in word):
            rows.append(f"{word}\t{zipf_frequency(word, language):.2f}\n")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("".join(rows), encoding="utf-8")
    return len(rows)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("models/recognizer/lexicon.tsv"))
    parser.add_argument("--language", default="en")
    parser.add_argument("--words", type=int, default=50000)
    args = parser.parse_args(argv)
    count = make_lexicon(args.out, args.language, args.words)
    print(f"{count} words -> {args.out} ({args.out.stat().st_size / 1e6:.2f} MB)")


if __name__ == "__main__":
    main()
