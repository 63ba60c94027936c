"""Handwriting fonts for synthetic data, installed from the npm registry (@fontsource, OFL-1.1).

The training families come from ../shared/data/training-fonts.txt (copied to
training/fonts.txt); the families that list reserves are used only to render evaluation data.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

FONTS_LIST = Path(__file__).resolve().parent.parent / "fonts.txt"
DEFAULT_CACHE = Path(__file__).resolve().parents[2] / ".cache" / "fonts"

EVAL_FAMILIES = (
    "cedarville-cursive",
    "homemade-apple",
    "nothing-you-could-do",
    "reenie-beanie",
    "the-girl-next-door",
    "zeyada",
    "waiting-for-the-sunrise",
    "schoolbell",
    "gochi-hand",
    "short-stack",
)


def training_families() -> list[str]:
    families = []
    for line in FONTS_LIST.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            families.append(line)
    overlap = set(families) & set(EVAL_FAMILIES)
    if overlap:
        raise ValueError(f"training font list contains families reserved for evaluation: {sorted(overlap)}")
    return families


def font_file(family: str, cache: Path = DEFAULT_CACHE) -> Path:
    return cache / "node_modules" / "@fontsource" / family / "files" / f"{family}-latin-400-normal.woff2"


def ensure_fonts(families: list[str], cache: Path = DEFAULT_CACHE) -> list[Path]:
    """Install the families that are missing with npm and return their font files."""
    missing = [family for family in families if not font_file(family, cache).exists()]
    if missing:
        cache.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            ["npm", "install", "--silent", "--no-audit", "--no-fund", "--prefix", str(cache)]
            + [f"@fontsource/{family}" for family in missing],
            check=True,
        )
    paths = [font_file(family, cache) for family in families]
    absent = [str(path) for path in paths if not path.exists()]
    if absent:
        raise FileNotFoundError(f"font files missing after npm install: {absent}")
    return paths
