#!/usr/bin/env python
"""How close a model comes to the text-only words: teacher-forced Aligner scores.

    python recipes/tiny/text_only_scores.py --corpus exp/tiny/corpus \
        --model "paired-only=exp/tiny/paired_only/finetune" --model "text+ASTRA=exp/tiny/finetune" \
        [--split test] [--out exp/tiny/text_only_scores]

Greedy decoding says only whether a text-only word (``CORPUS/text_only_words.json``: in the
unpaired text, in no paired training transcript) wins; this says how far from winning it is.
Every test utterance is encoded from its audio and the Aligner decoder is fed the reference
(teacher forcing, as in training). For the tokens that spell text-only words, and for all
other tokens, it reports the **token accuracy** (the reference token is the arg-max given the
correct history) and the **mean log-probability** (nats), and the accuracy on the **first
piece** of each text-only word — the decision greedy decoding gets wrong first (after it the
history is no longer the reference). Text injection that reaches speech should raise these
on the text-only words relative to a paired-only model.

The last column is a probe of the encoder: the accuracy on the other tokens when the decoder
reads the frames of *another* utterance (the previous one of the batch; same reference
history; tokens beyond that utterance's frames are not counted). Its gap to the column
before it is what the encoder's frames add to the decoder's own language model: a gap near
zero means that the frame u the Aligner reads does not yet hold token u (self-transduction
has not formed).

Writes ``OUT.md`` and ``OUT.json``.
"""

from __future__ import annotations

import argparse
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the recipe's report.py

from report import emit_tables, read_text_only_words, split_named  # noqa: E402


@dataclass
class TokenScores:
    """Teacher-forced scores of a set of reference tokens (Aligner frame u scores token u)."""

    tokens: int = 0
    correct: int = 0
    log_prob: float = 0.0

    def add(self, other: TokenScores) -> None:
        self.tokens += other.tokens
        self.correct += other.correct
        self.log_prob += other.log_prob

    @property
    def accuracy(self) -> float:
        return self.correct / self.tokens if self.tokens else math.nan

    @property
    def mean_log_prob(self) -> float:
        return self.log_prob / self.tokens if self.tokens else math.nan


GROUPS = ("word_start", "text_only", "other", "other_foreign")


@dataclass
class ModelScores:
    """Per language: scores of text-only-word tokens (all, first pieces) and of every other token."""

    name: str
    text_only: dict[str, TokenScores] = field(default_factory=dict)
    word_start: dict[str, TokenScores] = field(default_factory=dict)  # first pieces of text-only words
    other: dict[str, TokenScores] = field(default_factory=dict)
    other_foreign: dict[str, TokenScores] = field(default_factory=dict)  # other tokens, another utterance's frames
    skipped_too_long: int = 0  # utterances with U+1 > T' (the Aligner cannot score them)
    skipped_spelling: int = 0  # utterances whose word-by-word spelling differs from the sentence's tokens

    def pooled(self, which: dict[str, TokenScores]) -> TokenScores:
        total = TokenScores()
        for s in which.values():
            total.add(s)
        return total


def text_only_mask(words: list[str], text_only: set[str], tokenizer) -> tuple[list[int], list[int]]:
    """The pieces of ``words`` (spelled word by word) and, per piece, 0 (not in a text-only
    word), 1 (first piece of a text-only word) or 2 (a later piece of one)."""
    pieces: list[int] = []
    mask: list[int] = []
    for word in words:
        ids = tokenizer.encode(word)
        pieces += ids
        if word in text_only:
            mask += [1] + [2] * (len(ids) - 1)
        else:
            mask += [0] * len(ids)
    return pieces, mask


def score_model(name: str, checkpoint: Path, corpus: Path, split: str,
                text_only_words: dict[str, list[str]]) -> ModelScores:
    import torch

    from astra.data import build_eval_batches
    from astra.data.targets import normalize_target
    from astra.inference import load_model
    from astra.model.astra_model import append_eos

    loaded = load_model(checkpoint)
    model, tokenizer, cfg = loaded.model, loaded.tokenizer, loaded.config
    data_cfg = cfg.data
    data_cfg.corpora, data_cfg.fleurs, data_cfg.languages, data_cfg.num_workers = [str(corpus)], [], [], 0
    batches = build_eval_batches(data_cfg, tokenizer, split)
    scores = ModelScores(name)
    tag = int(data_cfg.language_tags)
    for batch in batches:
        with torch.no_grad():
            # teacher forcing: a CTC-compressing model merges the frames along the reference's
            # forced alignment (as in training), so every utterance gets its U + 1 frames
            references = (batch["tokens"], batch["token_lens"])
            top, lens, _ = model.forward_encoder(batch["features"], batch["feature_lens"], references=references)
            targets = append_eos(batch["tokens"], batch["token_lens"])
            width = min(targets.size(1), top.size(1))
            log_probs = torch.log_softmax(model.aligner(top[:, :width], targets[:, :width]).float(), dim=-1)
            # the probe (module doc): the previous utterance's frames, the same references
            foreign = torch.log_softmax(model.aligner(top.roll(1, 0)[:, :width], targets[:, :width]).float(), dim=-1)
            foreign_lens = lens.roll(1, 0) if top.size(0) > 1 else torch.zeros_like(lens)
        for b, (language, text) in enumerate(zip(batch["languages"], batch["texts"], strict=True)):
            n = int(batch["token_lens"][b])
            reference = batch["tokens"][b, :n].tolist()
            normalized = normalize_target(text, data_cfg)
            pieces, mask = text_only_mask(normalized.split(), set(text_only_words.get(language, [])), tokenizer)
            if n + 1 > int(lens[b]):
                scores.skipped_too_long += 1
                continue
            if pieces != reference[tag:]:
                scores.skipped_spelling += 1
                continue
            mask = [0] * tag + mask + [0]  # language tag and <eos> count as other tokens
            for u, kind in enumerate(mask):
                target = int(targets[b, u])
                token = TokenScores(1, int(int(log_probs[b, u].argmax()) == target), float(log_probs[b, u, target]))
                groups = {0: [scores.other], 1: [scores.text_only, scores.word_start], 2: [scores.text_only]}[kind]
                for group in groups:
                    group.setdefault(language, TokenScores()).add(token)
                if kind == 0 and u < int(foreign_lens[b]):
                    hit = int(int(foreign[b, u].argmax()) == target)
                    scores.other_foreign.setdefault(language, TokenScores()).add(
                        TokenScores(1, hit, float(foreign[b, u, target])))
    return scores


def _fmt(value: float, percent: bool) -> str:
    if math.isnan(value):
        return "n/a"
    return f"{100.0 * value:.1f}" if percent else f"{value:.2f}"


def markdown(models: list[ModelScores]) -> str:
    languages = sorted(set().union(*(getattr(m, group) for m in models for group in GROUPS)))
    head = ["language", "text-only words", "text-only tokens"]
    head += [f"first-piece acc. (%) {m.name}" for m in models]
    head += [f"text-only token acc. (%) {m.name}" for m in models]
    head += [f"text-only log-prob {m.name}" for m in models]
    head += [f"other token acc. (%) {m.name}" for m in models]
    head += [f"other token acc., another utterance's frames (%) {m.name}" for m in models]
    lines = ["| " + " | ".join(head) + " |", "|---" + "|---:" * (len(head) - 1) + "|"]

    def row(label: str, starts: list[TokenScores], text_only: list[TokenScores], other: list[TokenScores],
            other_foreign: list[TokenScores]) -> str:
        cells = [label, str(starts[0].tokens), str(text_only[0].tokens)]
        cells += [_fmt(s.accuracy, True) for s in starts]
        cells += [_fmt(s.accuracy, True) for s in text_only] + [_fmt(s.mean_log_prob, False) for s in text_only]
        cells += [_fmt(s.accuracy, True) for s in other] + [_fmt(s.accuracy, True) for s in other_foreign]
        return "| " + " | ".join(cells) + " |"

    for lang in languages:
        lines.append(row(lang, *([getattr(m, group).get(lang, TokenScores()) for m in models] for group in GROUPS)))
    lines.append(row("**pooled**", *([m.pooled(getattr(m, group)) for m in models] for group in GROUPS)))
    return "\n".join(lines) + "\n"


def _num(value: float) -> float | None:
    return None if math.isnan(value) else value


def to_json(models: list[ModelScores]) -> dict:
    def scores(s: TokenScores) -> dict:
        return {"tokens": s.tokens, "accuracy": _num(s.accuracy), "mean_log_prob": _num(s.mean_log_prob)}

    return {
        m.name: {
            "skipped_too_long": m.skipped_too_long,
            "skipped_spelling": m.skipped_spelling,
            **{group: {lang: scores(s) for lang, s in sorted(getattr(m, group).items())} for group in GROUPS},
            **{f"{group}_pooled": scores(m.pooled(getattr(m, group))) for group in GROUPS},
        }
        for m in models
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--corpus", required=True, help="the tiny corpus folder (text_only_words.json)")
    parser.add_argument("--model", dest="models", action="append", required=True, metavar="NAME=CHECKPOINT",
                        help="a trained run or checkpoint folder; repeat to compare (baseline first)")
    parser.add_argument("--split", default="test")
    parser.add_argument("--out", help="write OUT.md and OUT.json")
    args = parser.parse_args(argv)
    corpus = Path(args.corpus)
    try:
        text_only_words = read_text_only_words(corpus)
        models = []
        for spec in args.models:
            name, folder = split_named(spec, "--model", "CHECKPOINT")
            if not folder.exists():
                raise ValueError(f"--model {spec}: {folder} not found")
            models.append(score_model(name, folder, corpus, args.split, text_only_words))
    except ValueError as e:
        print(f"text_only_scores: error: {e}", file=sys.stderr)
        return 2
    for m in models:
        if m.skipped_too_long or m.skipped_spelling:
            print(f"text_only_scores: {m.name}: skipped {m.skipped_too_long} utterance(s) with more tokens than "
                  f"encoder frames, {m.skipped_spelling} whose word-by-word spelling differs from the sentence's "
                  "tokens", file=sys.stderr)
    emit_tables(args.out, markdown(models), to_json(models))
    return 0


if __name__ == "__main__":
    sys.exit(main())
