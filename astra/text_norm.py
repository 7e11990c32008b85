"""Text normalisation shared by scoring, unpaired text and deduplication.

Rules, in order (documented in docs/evaluation.md, "Scoring rules"):
1. Unicode NFKC;
2. lower-case (``str.lower``);
3. every character of Unicode category P* (punctuation) or S* (symbols) becomes a space;
   combining marks (M*: matras, viramas, Thai vowel signs) are kept;
4. runs of whitespace collapse to one space; leading/trailing space is removed.
"""

from __future__ import annotations

import re
import unicodedata

_SPACES = re.compile(r"\s+")


def normalize_text(text: str) -> str:
    """Normalise ``text`` for scoring and for comparing transcripts (see module doc)."""
    text = unicodedata.normalize("NFKC", text).lower()
    text = "".join(" " if unicodedata.category(ch)[0] in "PS" else ch for ch in text)
    return _SPACES.sub(" ", text).strip()
