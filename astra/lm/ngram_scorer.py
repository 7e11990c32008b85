"""Batched n-gram scoring on tensors (the design of NeMo's ``ngram_lm_batched``).

Every context of an ARPA model (an n-gram of order < N, the empty one included) is a
*state*; a state has arcs (one per word that follows it in the model: label, natural-log
probability, destination state) and a backoff (weight, the state of the context without
its first word). ``P(w | state)`` is the arc ``w`` of the state if it has one, else the
backoff weight plus ``P(w | backoff state)`` - the ARPA backoff rule. The models of several
languages are concatenated into one set of states, so one batch mixes languages: each row
starts in its language's ``<s>`` state and stays in that language's states.

Labels are the model's token ids (LM words are SentencePiece pieces, mapped by piece
string); ``</s>`` is stored at label ``eos_id``, ``<unk>`` at ``unk_id``. Legend: N rows
(hypotheses), K candidates per row, V vocabulary, S states (n-gram contexts), A arcs.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch
from torch import Tensor

from astra.lm.arpa import Arpa
from astra.lm.kneser_ney import BOS, EOS, UNK

LN10 = math.log(10.0)


class NgramScorer:
    """Backoff n-gram models of one or more languages as state/arc tensors.

    Args:
        models: ``{language: Arpa}``.
        word_ids: ``{piece string: token id}`` of the tokenizer; every ARPA word except
            ``<s>``, ``</s>``, ``<unk>`` must be one of them.
        vocab_size: V, the width of :meth:`score_all`'s table.
        eos_id / unk_id: the labels of ``</s>`` and ``<unk>``.
    Raises:
        ValueError: a word that is not a piece, or a model without ``<s>``.
    """

    def __init__(self, models: Mapping[str, Arpa], word_ids: Mapping[str, int], vocab_size: int,
                 eos_id: int, unk_id: int):
        self.vocab_size = vocab_size
        self.languages = list(models)
        self.order = max(m.order for m in models.values())
        state_of: dict[tuple[str, tuple[str, ...]], int] = {}
        contexts: list[tuple[str, tuple[str, ...]]] = []
        for lang, arpa in models.items():
            if (BOS,) not in arpa.probs[0]:
                raise ValueError(f"LM of {lang}: no <s> unigram")
            for n in range(arpa.order):  # states: the empty context and every n-gram of order < N
                grams = [()] if n == 0 else sorted(arpa.probs[n - 1])
                for gram in grams:
                    state_of[(lang, gram)] = len(contexts)
                    contexts.append((lang, gram))
        labels = dict(word_ids)
        labels.update({EOS: eos_id, UNK: unk_id})

        def longest_state(lang: str, gram: tuple[str, ...]) -> int:
            while (lang, gram) not in state_of:
                gram = gram[1:]
            return state_of[(lang, gram)]

        backoff = [-1] * len(contexts)
        backoff_weight = [0.0] * len(contexts)
        arcs: list[tuple[int, int, float, int]] = []  # (from, label, ln p, to)
        for lang, arpa in models.items():
            for n, probs in enumerate(arpa.probs, 1):
                for gram, log10p in probs.items():
                    word = gram[-1]
                    if word == BOS:
                        continue
                    if word not in labels:
                        raise ValueError(f"LM of {lang}: word {word!r} is not a piece of the tokenizer")
                    source = state_of[(lang, gram[:-1])] if (lang, gram[:-1]) in state_of else None
                    if source is None:
                        raise ValueError(f"LM of {lang}: {' '.join(gram)!r} has no {n - 1}-gram context")
                    arcs.append((source, labels[word], log10p * LN10, longest_state(lang, gram)))
            for (lg, gram), s in state_of.items():
                if lg == lang and gram:
                    backoff[s] = longest_state(lang, gram[1:])
                    backoff_weight[s] = arpa.backoffs.get(gram, 0.0) * LN10
        # the dead state D = S (no n-gram context): an arc for every label, ln p = -inf, back to D; a
        # token no context of the LM knows leads there, so a lookup always finds an arc (no masking)
        dead = len(contexts)
        counts = torch.bincount(torch.tensor([a[0] for a in arcs], dtype=torch.long), minlength=dead)
        arcs.sort()
        arcs += [(dead, label, float("-inf"), dead) for label in range(vocab_size)]
        self.arc_keys = torch.tensor([a[0] * vocab_size + a[1] for a in arcs], dtype=torch.long)  # [A] sorted
        self.arc_weights = torch.tensor([a[2] for a in arcs], dtype=torch.float32)  # [A]
        self.arc_targets = torch.tensor([a[3] for a in arcs], dtype=torch.long)  # [A]
        counts = torch.cat([counts, torch.tensor([vocab_size])])
        self.arc_start = torch.cat([torch.zeros(1, dtype=torch.long), counts.cumsum(0)])  # [S + 2]
        self.backoff = torch.tensor(backoff + [-1], dtype=torch.long)  # [S + 1], -1: the empty context, D
        self.backoff_weight = torch.tensor(backoff_weight + [0.0], dtype=torch.float32)  # [S + 1]
        self.start_states = {lang: longest_state(lang, (BOS,)) for lang in models}
        self.arc_labels = self.arc_keys % vocab_size
        self.num_states = len(contexts)
        self.dead_state = dead
        self.chain_keys, self.chain_weights = self._backoff_chains()

    TENSORS = ("arc_keys", "arc_weights", "arc_targets", "arc_start", "backoff", "backoff_weight", "arc_labels",
               "chain_keys", "chain_weights")
    VALUES = ("vocab_size", "languages", "order", "start_states", "num_states", "dead_state")

    def to(self, device) -> NgramScorer:
        """Move the tensors to ``device`` (in place); returns self."""
        for name in self.TENSORS:
            setattr(self, name, getattr(self, name).to(device))
        return self

    def state(self) -> dict:
        """The scorer as tensors and plain values, for ``torch.save`` (:meth:`from_state`)."""
        return {name: getattr(self, name) for name in self.VALUES + self.TENSORS}

    @classmethod
    def from_state(cls, state: Mapping) -> NgramScorer:
        """The scorer :meth:`state` returned; ``ValueError`` if a field is missing."""
        missing = [name for name in cls.VALUES + cls.TENSORS if name not in state]
        if missing:
            raise ValueError(f"not an n-gram scorer state (missing {', '.join(missing)})")
        scorer = cls.__new__(cls)
        for name in cls.VALUES + cls.TENSORS:
            setattr(scorer, name, state[name])
        return scorer

    @property
    def device(self) -> torch.device:
        return self.arc_keys.device

    def start(self, languages: Sequence[str]) -> Tensor:
        """``[N]`` ``<s>`` states of ``languages``; ``ValueError`` for a language without an LM."""
        missing = sorted({lang for lang in languages if lang not in self.start_states})
        if missing:
            raise ValueError(f"no LM for language(s) {', '.join(missing)} (the LM has {', '.join(self.languages)})")
        return torch.tensor([self.start_states[lang] for lang in languages], dtype=torch.long, device=self.device)

    def _backoff_chains(self) -> tuple[Tensor, Tensor]:
        """``(chain_keys [S + 1, L], chain_weights [S + 1, L])``, L = the order + 1: the chain of
        state ``s`` is ``s``, its backoff, that one's backoff, ..., past the empty context the dead
        state D (so every chain ends at D; D's own chain is all D); ``chain_keys`` holds each
        chain state times V (the arc key of label 0: int32 where S * V fits, else int64) and
        ``chain_weights[s, l]`` the summed backoff weights from ``s`` to its l-th chain state
        (summed in chain order, as the ARPA rule reads them)."""
        dead = torch.tensor(self.dead_state)
        step = torch.where(self.backoff < 0, dead, self.backoff)  # [S + 1]
        chain = [torch.arange(self.num_states + 1)]
        sums = [torch.zeros(self.num_states + 1)]
        for _ in range(self.order):
            sums.append(sums[-1] + self.backoff_weight[chain[-1]])
            chain.append(step[chain[-1]])
        fits = (self.dead_state + 1) * self.vocab_size <= torch.iinfo(torch.int32).max
        keys = torch.stack(chain, dim=1) * self.vocab_size
        return keys.to(torch.int32 if fits else torch.int64), torch.stack(sums, dim=1)

    def score_tokens(self, states: Tensor, tokens: Tensor) -> tuple[Tensor, Tensor]:
        """``(ln P(token | state) [N, K], next state [N, K])`` for ``states [N]``, ``tokens [N, K]``.

        One lookup of every (context on the state's backoff chain, token) pair, no loop: the
        longest context with an arc for the token gives its score (the backoff weights to it
        plus the arc's). A token the LM does not know (not a label) gets ``-inf`` and leads to
        the dead state. (Few ops: the searches call this once per step; ``max`` over a bool
        dimension finds the first context with the arc, cheaper than ``argmax``.)"""
        query = self.chain_keys.index_select(0, states)[:, :, None] + tokens[:, None, :]  # [N, L, K] int64
        arc = torch.searchsorted(self.arc_keys, query)  # every query's key exists (D has every label)
        level = (torch.take(self.arc_keys, arc) == query).max(dim=1)[1]  # [N, K]: the first (longest) found
        arc = arc.gather(1, level[:, None])[:, 0]
        scores = self.chain_weights.index_select(0, states).gather(1, level) + torch.take(self.arc_weights, arc)
        return scores, torch.take(self.arc_targets, arc)

    def score_all(self, states: Tensor) -> Tensor:
        """``[N, V]`` table ``ln P(v | state)`` for ``states [N]`` (``-inf``: not a label):
        the arcs of each state along its backoff chain, the longest context first."""
        n = states.numel()
        out = torch.full((n, self.vocab_size), float("-inf"), device=states.device)
        filled = torch.zeros(n, self.vocab_size, dtype=torch.bool, device=states.device)
        acc = torch.zeros(n, device=states.device)
        cur = states.clone()
        active = torch.ones(n, dtype=torch.bool, device=states.device)
        for _ in range(self.order):
            rows = torch.nonzero(active).flatten()
            s = cur[rows]
            first, counts = self.arc_start[s], self.arc_start[s + 1] - self.arc_start[s]
            row_of = rows.repeat_interleave(counts)
            run_starts = (counts.cumsum(0) - counts).repeat_interleave(counts)
            offset = torch.arange(row_of.numel(), device=states.device) - run_starts
            arc = first.repeat_interleave(counts) + offset
            labels = self.arc_labels[arc]
            new = ~filled[row_of, labels]
            out[row_of[new], labels[new]] = acc[row_of[new]] + self.arc_weights[arc[new]]
            filled[row_of, labels] = True
            acc = acc + self.backoff_weight[cur]
            back = self.backoff[cur]
            active = active & (back >= 0)
            if not bool(active.any()):
                break
            cur = back.clamp(min=0)
        return out
