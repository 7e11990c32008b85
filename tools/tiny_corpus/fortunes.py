"""Real sentences from the Debian ``fortunes`` collections (read where apt installed them).

A fortune file is a list of entries separated by lines holding only ``%``; an entry may end
in attribution lines (``-- Author``). :func:`read_sentences` turns the collections of one
language into deduplicated, usable sentences:

1. the files are those its packages installed (``/var/lib/dpkg/info/PACKAGE.list``) under
   ``/usr/share/games/fortunes``, except the offensive collections (``off/``), the ``.dat``
   indexes and links; a package that is not installed is an error naming the apt-get line;
2. each file is decoded as UTF-8; an entry that does not decode is skipped and counted;
3. an entry loses its attribution lines and is split into sentences after ``.``, ``!``,
   ``?`` or ``…`` followed by white space;
4. a sentence is kept if it has 4-14 words (after :func:`astra.text_norm.normalize_text`),
   every word is written in the language's letters, and its raw text has no digit and no
   character other than letters, spaces and ordinary punctuation;
5. sentences are deduplicated by their normalised text (the first one read is kept).
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path

from astra.text_norm import normalize_text

from .languages import Language

DPKG_INFO = Path("/var/lib/dpkg/info")
FORTUNES_DIR = Path("/usr/share/games/fortunes")
MIN_WORDS = 4
MAX_WORDS = 14
# ordinary punctuation a sentence's raw text may contain (besides letters and spaces)
PUNCTUATION = set(".,;:!?'\"-()«»„“”‚‘’–—…")
_ATTRIBUTION = re.compile(r"^\s*(--|—|―|–)\s*\S")
_SENTENCE_END = re.compile(r"(?:(?<=[.!?…])|(?<=[.!?…][\"'»”’)]))\s+")
_SPACES = re.compile(r"\s+")


def install_hint(packages) -> str:
    return f"apt-get install -y {' '.join(packages)}"


class FortunesMissing(ValueError):
    """A fortunes package is not installed; the message names the apt-get command."""


@dataclass(frozen=True)
class Sentence:
    """A sentence: ``raw`` as written (spoken by espeak-ng), ``text`` normalised (transcript)."""

    raw: str
    text: str


@dataclass
class ReadStats:
    """What :func:`read_sentences` read and why it dropped what it dropped."""

    files: int = 0
    entries: int = 0
    undecodable_entries: int = 0
    sentences: int = 0
    dropped: dict[str, int] = field(default_factory=dict)

    def drop(self, reason: str) -> None:
        self.dropped[reason] = self.dropped.get(reason, 0) + 1


def fortune_files(packages, dpkg_info: Path = DPKG_INFO, fortunes_dir: Path = FORTUNES_DIR) -> list[Path]:
    """The fortune collections the Debian ``packages`` installed (sorted; no ``off/``).

    Raises:
        FortunesMissing: a package is not installed (no dpkg file list).
    """
    missing = [p for p in packages if not (dpkg_info / f"{p}.list").is_file()]
    if missing:
        raise FortunesMissing(
            f"Debian package(s) {', '.join(missing)} not installed: the tiny corpus reads its text "
            f"from them; run `{install_hint(missing)}` (tools/setup_env.sh does this)"
        )
    files = set()
    for package in packages:
        for line in (dpkg_info / f"{package}.list").read_text(encoding="utf-8").splitlines():
            path = Path(line.strip())
            try:
                inside = path.relative_to(fortunes_dir).parts
            except ValueError:
                continue
            if not inside or "off" in inside[:-1]:
                continue
            if path.suffix in (".dat", ".u8") or path.is_symlink() or not path.is_file():
                continue
            files.add(path)
    return sorted(files)


def split_entries(data: bytes) -> list[bytes]:
    """The entries of a fortune file (separated by lines holding only ``%``)."""
    entries, current = [], []
    for line in data.replace(b"\r\n", b"\n").split(b"\n"):
        if line.strip() == b"%":
            entries.append(b"\n".join(current))
            current = []
        else:
            current.append(line)
    entries.append(b"\n".join(current))
    return [e for e in entries if e.strip()]


def entry_sentences(entry: str) -> list[str]:
    """The sentences of one decoded entry, attribution lines removed, white space collapsed."""
    lines = []
    for line in entry.split("\n"):
        if _ATTRIBUTION.match(line):
            break  # the attribution and whatever follows it
        lines.append(line)
    text = _SPACES.sub(" ", " ".join(lines)).strip()
    return [s.strip() for s in _SENTENCE_END.split(text) if s.strip()]


def usable(raw: str, lang: Language) -> tuple[Sentence | None, str]:
    """``(Sentence, "")`` if ``raw`` is usable in ``lang`` (module doc, rule 4), else ``(None, reason)``."""
    for ch in raw:
        if ch.isdigit():
            return None, "digit"
        if not (ch.isalpha() or ch.isspace() or ch in PUNCTUATION or unicodedata.category(ch)[0] == "M"):
            return None, "symbol"
    text = normalize_text(raw)
    words = text.split()
    if not MIN_WORDS <= len(words) <= MAX_WORDS:
        return None, "length"
    letters = set(lang.letters)
    if any(ch not in letters for w in words for ch in w):
        return None, "other letters"
    return Sentence(raw, text), ""


def read_sentences(
    lang: Language, dpkg_info: Path = DPKG_INFO, fortunes_dir: Path = FORTUNES_DIR
) -> tuple[list[Sentence], ReadStats]:
    """Every usable sentence of ``lang``'s fortunes, deduplicated, in file order."""
    stats = ReadStats()
    seen: set[str] = set()
    out: list[Sentence] = []
    for path in fortune_files(lang.packages, dpkg_info, fortunes_dir):
        stats.files += 1
        for entry in split_entries(path.read_bytes()):
            stats.entries += 1
            try:
                decoded = entry.decode("utf-8")
            except UnicodeDecodeError:
                stats.undecodable_entries += 1
                continue
            for raw in entry_sentences(unicodedata.normalize("NFC", decoded)):
                sentence, reason = usable(raw, lang)
                if sentence is None:
                    stats.drop(reason)
                elif sentence.text in seen:
                    stats.drop("duplicate")
                else:
                    seen.add(sentence.text)
                    out.append(sentence)
    stats.sentences = len(out)
    return out, stats
