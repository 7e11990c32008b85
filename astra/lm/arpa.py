"""ARPA n-gram files: write an :class:`~astra.lm.kneser_ney.NgramModel`, read any backoff ARPA.

Format (log10 probabilities and backoff weights)::

    \\data\\
    ngram 1=N1
    ...
    \\1-grams:
    -1.2345  word  -0.3010
    ...
    \\end\\
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from astra.lm.kneser_ney import NgramModel


@dataclass
class Arpa:
    """A read ARPA model: ``probs[n - 1] = {ngram: log10 p}``, ``backoffs = {ngram: log10 b}``."""

    order: int
    probs: list[dict[tuple[str, ...], float]]
    backoffs: dict[tuple[str, ...], float]

    @property
    def counts(self) -> list[int]:
        return [len(p) for p in self.probs]


def write_arpa(model: NgramModel, path: str | Path) -> None:
    """Write ``model`` as ARPA text (n-grams sorted within each order)."""
    lines = ["\\data\\"]
    lines += [f"ngram {n + 1}={len(p)}" for n, p in enumerate(model.probs)]
    for n, probs in enumerate(model.probs):
        lines += ["", f"\\{n + 1}-grams:"]
        for gram in sorted(probs):
            words = " ".join(gram)
            if gram in model.backoffs and n + 1 < model.order:
                lines.append(f"{probs[gram]:.7g}\t{words}\t{model.backoffs[gram]:.7g}")
            else:
                lines.append(f"{probs[gram]:.7g}\t{words}")
    lines += ["", "\\end\\", ""]
    Path(path).write_text("\n".join(lines), encoding="utf-8")


def read_arpa(path: str | Path) -> Arpa:
    """Parse an ARPA file. Raises ``ValueError`` naming the file and line of a malformed entry."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"ARPA file not found: {path}")
    declared: dict[int, int] = {}
    probs: list[dict[tuple[str, ...], float]] = []
    backoffs: dict[tuple[str, ...], float] = {}
    section = None  # None: before \data\, 0: in \data\, n: in \n-grams:, -1: after \end\
    with path.open(encoding="utf-8") as f:
        for number, raw in enumerate(f, 1):
            line = raw.strip()
            where = f"{path}:{number}"
            if not line or section == -1:
                continue
            if line == "\\data\\":
                section = 0
                continue
            if section is None:
                continue  # header text before \data\ is allowed
            if line == "\\end\\":
                section = -1
                continue
            if line.startswith("\\") and line.endswith("-grams:"):
                try:
                    n = int(line[1 : -len("-grams:")])
                except ValueError as e:
                    raise ValueError(f"{where}: bad section header {line!r}") from e
                if n != len(probs) + 1 or n not in declared:
                    raise ValueError(f"{where}: section {line!r} out of order or not declared in \\data\\")
                probs.append({})
                section = n
                continue
            if section == 0:
                key, sep, value = line.partition("=")
                if not sep or not key.startswith("ngram "):
                    raise ValueError(f"{where}: expected 'ngram N=COUNT' in \\data\\, got {line!r}")
                try:
                    declared[int(key.split()[1])] = int(value)
                except (ValueError, IndexError) as e:
                    raise ValueError(f"{where}: expected 'ngram N=COUNT' in \\data\\, got {line!r}") from e
                continue
            fields = line.split()
            if len(fields) not in (section + 1, section + 2):
                raise ValueError(f"{where}: a {section}-gram line needs log10 prob, {section} word(s) "
                                 f"and an optional backoff, got {line!r}")
            try:
                prob = float(fields[0])
                backoff = float(fields[section + 1]) if len(fields) == section + 2 else None
            except ValueError as e:
                raise ValueError(f"{where}: not a number in {line!r}") from e
            gram = tuple(fields[1 : section + 1])
            probs[-1][gram] = prob
            if backoff is not None:
                backoffs[gram] = backoff
    if section != -1:
        raise ValueError(f"{path}: not a complete ARPA file (no \\data\\ section or no \\end\\)")
    if not probs:
        raise ValueError(f"{path}: ARPA file without n-grams")
    for n, p in enumerate(probs, 1):
        if declared.get(n) != len(p):
            raise ValueError(f"{path}: \\data\\ declares {declared.get(n)} {n}-grams, the file has {len(p)}")
    return Arpa(order=len(probs), probs=probs, backoffs=backoffs)
