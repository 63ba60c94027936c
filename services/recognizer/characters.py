"""The characters the recognizer's CTC heads read (no torch here: the torch-free serving path needs them)."""

from __future__ import annotations

import string

CHARACTERS = string.digits + string.ascii_letters + string.punctuation + " "
CTC_INDEX = {char: index + 1 for index, char in enumerate(CHARACTERS)}  # a CTC head's classes; 0 is the blank
