"""Pronounceable made-up words ("pseudo-words") for the tiny corpus's spelling sentences.

A closed lexicon lets a small model learn each of its few hundred words as a whole; it then
cannot spell a word it has never heard — exactly what a text-only word asks of it. Some
``pretrain`` sentences therefore take a made-up first name or object noun instead of a lexicon
entry: thousands of distinct spellings, each heard once or twice, which can only be
recognised by mapping sounds to letters. espeak-ng reads them with its letter-to-sound rules.

Words are built from syllables (onset + vowel) over letters each language spells regularly
(e.g. no Spanish/Italian ``c``/``g``, whose sound depends on the next vowel), 2–3 syllables
and an optional final consonant. Russian made-up nouns end in a vowel and are neuter and
indeclinable, like loanwords (``кафе``, ``пальто``).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from .lexicon import Language, Name, Noun


@dataclass(frozen=True)
class Spelling:
    """Letters of one language's made-up words; ``""`` in ``codas`` = an open last syllable."""

    onsets: tuple[str, ...]
    vowels: tuple[str, ...]
    codas: tuple[str, ...]
    noun_finals: tuple[str, ...] = ()  # if set: nouns end in one of these vowels ...
    noun_gender: str = ""  # ... and take this gender (else the gender of a random lexicon noun)


def _split(text: str) -> tuple[str, ...]:
    return tuple(text.split(" "))


SPELLINGS: dict[str, Spelling] = {
    "en_us": Spelling(
        onsets=_split("b d f g h j k l m n p r s t v w z sh ch br dr gr pl st tr"),
        vowels=_split("a e i o u ee oo ai oa"),
        codas=_split("   n m t k s l r nd st"),
    ),
    "de_de": Spelling(
        onsets=_split("b d f g h j k l m n p r s t w z sch br gr kl st tr pf"),
        vowels=_split("a e i o u ä ö ü ei au ie"),
        codas=_split("   n m t k s l r ch ng"),
    ),
    "es_419": Spelling(
        onsets=_split("b d f l m n p r s t v ch ll ñ j br tr pl"),
        vowels=_split("a e i o u ia ue"),
        codas=_split("    n s l r"),
    ),
    "it_it": Spelling(
        onsets=_split("b d f l m n p r s t v z br tr st pr gn"),
        vowels=_split("a e i o u ia"),
        codas=_split("      n l r"),
    ),
    "ru_ru": Spelling(
        onsets=_split("б в г д ж з к л м н п р с т ф х ц ч ш"),
        vowels=_split("а е и о у ы я ю"),
        codas=_split("   н м т к с л р"),
        noun_finals=_split("о е и у"),
        noun_gender="n",
    ),
}


class PseudoWords:
    """Draws made-up names and nouns of one language, never a word in ``exclude``.

    Args:
        language: the lexicon (its nouns give the genders of made-up nouns).
        exclude: normalised words that must never be produced (the whole lexicon, text-only
            words included: a made-up word must not put a text-only word into paired speech).
    Raises:
        ValueError: no spelling inventory for the language.
    """

    def __init__(self, language: Language, exclude: frozenset[str] | set[str]):
        if language.code not in SPELLINGS:
            raise ValueError(f"no made-up word spelling for {language.code}; known: {sorted(SPELLINGS)}")
        self.language = language
        self.spelling = SPELLINGS[language.code]
        self.exclude = frozenset(exclude)

    def word(self, rng: random.Random, open_end: tuple[str, ...] = ()) -> str:
        """A lower-case made-up word; ``open_end``: it ends in one of these vowels instead."""
        sp = self.spelling
        for _ in range(1000):
            syllables = [rng.choice(sp.onsets) + rng.choice(sp.vowels) for _ in range(rng.randint(2, 3))]
            if open_end:
                word = "".join(syllables)[:-1] + rng.choice(open_end)
            else:
                word = "".join(syllables) + rng.choice(sp.codas)
            if word not in self.exclude:
                return word
        raise RuntimeError(f"{self.language.code}: no made-up word outside the lexicon in 1000 draws")

    def name(self, rng: random.Random) -> Name:
        """A made-up first name (capitalised) of a random gender."""
        return Name(self.word(rng).capitalize(), rng.choice(("m", "f")))

    def noun(self, rng: random.Random) -> Noun:
        """A made-up object noun, the same in every case (capitalised where nouns are: German)."""
        sp = self.spelling
        gender = sp.noun_gender or rng.choice(self.language.nouns).gender
        word = self.word(rng, open_end=sp.noun_finals)
        return Noun("pseudo", gender, word.capitalize() if self.language.nouns[0].nom[0].isupper() else word)
