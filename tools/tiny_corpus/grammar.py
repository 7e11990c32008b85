"""Sentence generation from the closed lexicons of :mod:`tiny_corpus.lexicon`.

A :class:`SentenceGrammar` draws one sentence at a time from four templates (transitive,
intransitive, number, location) with agreement handled by the lexicon's explicit forms.
Some concepts can be *held out*: paired speech sentences never use them, so the words that
only they produce (the **text-only words**) occur only in unpaired text and in test
sentences — the vocabulary split of the text-injection experiment. With a
:class:`~tiny_corpus.pseudowords.PseudoWords` source, a share of the names and object nouns
are made-up words (spelling practice; see that module).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from functools import cached_property

from num2words import num2words

from astra.text_norm import normalize_text

from .lexicon import Adjective, Language, Noun, Verb
from .pseudowords import PseudoWords

TEMPLATE_WEIGHTS = {"transitive": 0.4, "intransitive": 0.2, "number": 0.15, "location": 0.25}


@dataclass(frozen=True)
class Sentence:
    """One generated sentence.

    Attributes:
        raw: cased, punctuated text (the manifests' ``raw_transcription``).
        text: ``normalize_text(raw)`` (the ``transcription``; what is scored).
        concepts: ids of the nouns, adjectives and verbs it uses.
        template: which template made it.
        pseudo_words: its made-up words (normalised), if any.
    """

    raw: str
    text: str
    concepts: frozenset[str]
    template: str
    pseudo_words: tuple[str, ...] = ()


def _join(*parts: str) -> str:
    return " ".join(p for p in parts if p)


class SentenceGrammar:
    """Draws sentences of one language, optionally without the held-out concepts.

    Args:
        language: the lexicon.
        held_out: concept ids (noun, adjective or verb ids) that paired sentences avoid.
        number_max: numbers 1..number_max are spelled in the number template.
    Raises:
        ValueError: a held-out id is not in the lexicon, or every word it produces also
            comes from the rest of the lexicon (it would have no text-only word).
    """

    def __init__(self, language: Language, held_out: list[str] | tuple[str, ...] = (), number_max: int = 199):
        if number_max < 1:
            raise ValueError(f"number_max must be >= 1, got {number_max}")
        self.language = language
        self.number_max = number_max
        self.held_out = frozenset(held_out)
        known = self._concept_ids(include_held_out=True)
        unknown = sorted(self.held_out - known)
        if unknown:
            raise ValueError(
                f"held-out concept(s) {unknown} not in the {language.code} lexicon; "
                f"known: {sorted(known)}"
            )
        for concept in sorted(self.held_out):
            if not self._words_of_concept(concept) - self.paired_vocabulary:
                raise ValueError(
                    f"held-out concept {concept!r} of {language.code} has no word of its own "
                    "(all its forms also occur in the paired vocabulary)"
                )

    # ---- vocabulary --------------------------------------------------------------------
    def _concept_ids(self, include_held_out: bool) -> set[str]:
        lang = self.language
        ids = {x.id for x in (*lang.nouns, *lang.adjectives, *lang.transitive, *lang.intransitive)}
        return ids if include_held_out else ids - self.held_out

    def _pool(self, items: tuple, include_held_out: bool) -> list:
        pool = [x for x in items if include_held_out or x.id not in self.held_out]
        if not pool:
            raise ValueError(f"{self.language.code}: every entry of a word class is held out")
        return pool

    def _words_of_concept(self, concept: str) -> set[str]:
        lang = self.language
        forms: list[str] = []
        for noun in lang.nouns:
            if noun.id == concept:
                forms += [noun.nom, noun.form("acc")]
        for adj in lang.adjectives:
            if adj.id == concept:
                forms += list(adj.forms)
        for verb in (*lang.transitive, *lang.intransitive):
            if verb.id == concept:
                forms += list(verb.forms)
        return {w for f in forms for w in normalize_text(f).split()}

    @cached_property
    def paired_vocabulary(self) -> frozenset[str]:
        """Every word a sentence without held-out concepts can contain (normalised)."""
        lang = self.language
        texts: list[str] = [n.text for n in lang.names]
        texts += [*lang.times, *lang.places, *lang.frames, *lang.copula.values(), *lang.determiner.values()]
        for concept in self._concept_ids(include_held_out=False):
            texts += sorted(self._words_of_concept(concept))
        texts += [num2words(n, lang=lang.num2words_lang) for n in range(1, self.number_max + 1)]
        return frozenset(w for t in texts for w in normalize_text(t).split())

    @cached_property
    def text_only_words(self) -> frozenset[str]:
        """Words produced only by held-out concepts (never in paired speech)."""
        words: set[str] = set()
        for concept in self.held_out:
            words |= self._words_of_concept(concept)
        return frozenset(words - self.paired_vocabulary)

    @cached_property
    def lexicon_words(self) -> frozenset[str]:
        """Every word of the lexicon (normalised): the paired vocabulary and the text-only words."""
        return self.paired_vocabulary | self.text_only_words

    def pseudo_words(self) -> PseudoWords:
        """A source of made-up words that are none of :attr:`lexicon_words`."""
        return PseudoWords(self.language, self.lexicon_words)

    # ---- sampling ----------------------------------------------------------------------
    def _noun_phrase(self, case: str, noun: Noun, adjective: Adjective) -> str:
        lang = self.language
        det = lang.determiner[(case, noun.gender)]
        adj = adjective.forms[lang.adjective_form[(case, noun.gender)]]
        body = _join(noun.form(case), adj) if lang.adjective_after_noun else _join(adj, noun.form(case))
        return _join(det, body)

    def sample(
        self,
        rng: random.Random,
        include_held_out: bool = False,
        pseudo_words: PseudoWords | None = None,
        pseudo_fraction: float = 0.0,
    ) -> Sentence:
        """Draw one sentence; held-out concepts only if ``include_held_out``.

        With ``pseudo_words``, the name and the object noun are each replaced by a made-up
        word with probability ``pseudo_fraction``.
        """
        lang = self.language
        kinds = list(TEMPLATE_WEIGHTS)
        kind = rng.choices(kinds, weights=[TEMPLATE_WEIGHTS[k] for k in kinds])[0]
        made_up: list[str] = []

        def made_up_instead() -> bool:  # no draw without a source: old corpora stay the same
            return pseudo_words is not None and rng.random() < pseudo_fraction

        name = rng.choice(lang.names)
        if "{name}" in lang.templates[kind] and made_up_instead():
            name = pseudo_words.name(rng)
            made_up.append(normalize_text(name.text))
        slots = {"name": name.text, "time": rng.choice(lang.times), "place": rng.choice(lang.places)}
        concepts: set[str] = set()
        if kind in ("transitive", "location"):
            noun: Noun = rng.choice(self._pool(lang.nouns, include_held_out))
            adj: Adjective = rng.choice(self._pool(lang.adjectives, include_held_out))
            concepts |= {noun.id, adj.id}
            if made_up_instead():
                concepts.discard(noun.id)  # the lexicon noun is not used after all
                noun = pseudo_words.noun(rng)
                made_up.append(normalize_text(noun.nom))
            slots["np_acc"] = self._noun_phrase("acc", noun, adj)
            slots["np_nom"] = self._noun_phrase("nom", noun, adj)
            slots["cop"] = lang.copula[noun.gender]
            if kind == "transitive":
                verb: Verb = rng.choice(self._pool(lang.transitive, include_held_out))
                concepts.add(verb.id)
                slots["vt"] = verb.form(name.gender)
        elif kind == "intransitive":
            verb = rng.choice(self._pool(lang.intransitive, include_held_out))
            concepts.add(verb.id)
            slots["vi"] = verb.form(name.gender)
        else:
            slots["frame"] = rng.choice(lang.frames)
            slots["number"] = num2words(rng.randint(1, self.number_max), lang=lang.num2words_lang)
        body = lang.templates[kind].format(**slots)
        raw = body[0].upper() + body[1:] + "."
        return Sentence(
            raw=raw, text=normalize_text(raw), concepts=frozenset(concepts), template=kind, pseudo_words=tuple(made_up)
        )

    def uses_held_out(self, sentence: Sentence) -> bool:
        return bool(sentence.concepts & self.held_out)
