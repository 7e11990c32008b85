"""One SentencePiece tokenizer for every language, with astra's fixed special ids.

Ids (CONTRIBUTING.md "Tokens"): 0 ``<blank>`` (RNN-T/CTC blank and padding), 1 ``<unk>``,
2 ``<sos>``, 3 ``<eos>``, then the optional ``<lang:xx>`` tags, then ordinary pieces. They are
SentencePiece's pad/unk/bos/eos ids and user-defined symbols, so the ``.model`` file alone
fixes them.

Training (:func:`train_tokenizer`) balances languages: each language's share of the training
sentences is proportional to ``n_lang ** alpha`` (``alpha`` = 1 keeps natural proportions,
0 gives every language the same share), so no language drowns the others.
"""

from __future__ import annotations

import logging
import random
import re
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

BLANK_ID, UNK_ID, SOS_ID, EOS_ID = 0, 1, 2, 3
SPECIAL_PIECES = ("<blank>", "<unk>", "<sos>", "<eos>")
NUM_SPECIAL = 4


def language_tag(language: str) -> str:
    """The piece of a language tag, e.g. ``<lang:en_us>``."""
    return f"<lang:{language}>"


class Tokenizer:
    """A trained SentencePiece model with astra's special ids.

    Args:
        model_path: a ``.model`` file written by :func:`train_tokenizer`.
    Raises:
        ValueError: the file is missing or its special ids are not 0-3 as above.
    """

    def __init__(self, model_path: str | Path):
        import sentencepiece as spm

        model_path = Path(model_path)
        if not model_path.is_file():
            raise ValueError(f"tokenizer model not found: {model_path}")
        self.model_path = model_path
        self.sp = spm.SentencePieceProcessor(model_file=str(model_path))
        got = (self.sp.pad_id(), self.sp.unk_id(), self.sp.bos_id(), self.sp.eos_id())
        if got != (BLANK_ID, UNK_ID, SOS_ID, EOS_ID):
            raise ValueError(f"{model_path}: special ids (pad, unk, bos, eos) are {got}, astra needs (0, 1, 2, 3)")
        self.blank_id, self.unk_id, self.sos_id, self.eos_id = BLANK_ID, UNK_ID, SOS_ID, EOS_ID
        self.language_ids: dict[str, int] = {}
        for i in range(NUM_SPECIAL, self.sp.get_piece_size()):
            piece = self.sp.id_to_piece(i)
            if not (piece.startswith("<lang:") and piece.endswith(">")):
                break
            self.language_ids[piece[len("<lang:") : -1]] = i
        self._first_piece = NUM_SPECIAL + len(self.language_ids)

    @property
    def vocab_size(self) -> int:
        """V: number of ids, specials and language tags included."""
        return self.sp.get_piece_size()

    @property
    def languages(self) -> list[str]:
        return list(self.language_ids)

    def language_id(self, language: str) -> int:
        """Id of ``<lang:language>``; raises ``ValueError`` if the model has no such tag."""
        if language not in self.language_ids:
            raise ValueError(f"tokenizer {self.model_path} has no tag for language {language!r}")
        return self.language_ids[language]

    def encode(self, text: str) -> list[int]:
        """Text -> piece ids (no ``<sos>``/``<eos>``; characters it cannot encode -> ``<unk>``)."""
        return self.sp.encode(text, out_type=int)

    def decode(self, ids: Iterable[int]) -> str:
        """Ids -> text, skipping specials (ids < 4) and language tags."""
        return self.sp.decode([int(i) for i in ids if int(i) >= self._first_piece])

    def id_to_piece(self, i: int) -> str:
        return self.sp.id_to_piece(int(i))


@dataclass
class TokenizerTrainConfig:
    """Options of :func:`train_tokenizer` (and ``astra tokenizer train``)."""

    vocab_size: int = 500
    model_type: str = "unigram"  # unigram | bpe
    character_coverage: float = 0.9995
    language_tags: bool = False  # add <lang:xx> pieces (ids 4..) for every language
    alpha: float = 0.5  # language sampling exponent: share ~ n_lang ** alpha
    max_sentences: int = 2_000_000  # cap on the balanced training set
    byte_fallback: bool = False  # map unknown characters to byte pieces instead of <unk>
    seed: int = 0


def balance_languages(sentences: dict[str, list[str]], alpha: float, max_sentences: int, seed: int = 0) -> dict[str, list[str]]:
    """Resample each language to a share proportional to ``n ** alpha`` of the total.

    The total is ``min(sum n, max_sentences)``; a language above its share is subsampled,
    one below it is repeated (whole copies, then a random remainder).
    """
    counts = {lang: len(s) for lang, s in sentences.items() if s}
    if not counts:
        return {}
    total = min(sum(counts.values()), max_sentences)
    weights = {lang: n**alpha for lang, n in counts.items()}
    norm = sum(weights.values())
    rng = random.Random(seed)
    out = {}
    for lang in sorted(counts):
        want = max(1, round(total * weights[lang] / norm))
        pool = sentences[lang]
        if want <= len(pool):
            out[lang] = rng.sample(pool, want)
        else:
            reps, rest = divmod(want, len(pool))
            out[lang] = pool * reps + rng.sample(pool, rest)
    return out


def _training_error(error: RuntimeError, cfg: TokenizerTrainConfig) -> str:
    """One line for a failed SentencePiece training run, naming the setting to change."""
    pattern = r"Vocabulary size is smaller than required_chars\. (\d+) vs (\d+)"
    match = re.search(pattern, str(error))
    if match:
        return (
            f"tokenizer vocabulary size {match.group(1)} is too small: the text's characters "
            f"(at character coverage {cfg.character_coverage}) plus the special pieces need "
            f"at least {match.group(2)}; raise the vocabulary size or lower the character coverage"
        )
    first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    return f"SentencePiece training failed (vocabulary size {cfg.vocab_size}): {first}"


def train_tokenizer(
    sentences: dict[str, list[str]],
    out_path: str | Path,
    cfg: TokenizerTrainConfig | None = None,
) -> Tokenizer:
    """Train one SentencePiece model on ``{language: [sentence, ...]}`` (already normalised).

    Args:
        sentences: training text per language (transcripts plus unpaired text).
        out_path: the ``.model`` file to write (a ``.vocab`` file is written next to it).
    Returns:
        the loaded :class:`Tokenizer`.
    Raises:
        ValueError: no text, a bad model type, or a vocabulary too small for the special
            pieces, language tags and characters of the text.
    """
    import sentencepiece as spm

    cfg = cfg or TokenizerTrainConfig()
    if cfg.model_type not in ("unigram", "bpe"):
        raise ValueError(f"tokenizer model_type must be 'unigram' or 'bpe', got {cfg.model_type!r}")
    tags = [language_tag(lang) for lang in sorted(sentences)] if cfg.language_tags else []
    if cfg.vocab_size <= NUM_SPECIAL + len(tags):
        raise ValueError(
            f"tokenizer vocabulary size {cfg.vocab_size} leaves no room for text pieces after "
            f"the {NUM_SPECIAL} special pieces and {len(tags)} language tags"
        )
    balanced = balance_languages(sentences, cfg.alpha, cfg.max_sentences, cfg.seed)
    if not balanced:
        raise ValueError("no text to train the tokenizer on")
    for lang, lines in balanced.items():
        log.info("tokenizer: %s: %d of %d sentences after balancing", lang, len(lines), len(sentences[lang]))
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    prefix = out_path.with_suffix("")
    with tempfile.TemporaryDirectory() as tmp:
        text_file = Path(tmp) / "train.txt"
        lines = [line for lang in sorted(balanced) for line in balanced[lang]]
        random.Random(cfg.seed).shuffle(lines)
        text_file.write_text("".join(line.replace("\n", " ") + "\n" for line in lines), encoding="utf-8")
        try:
            spm.SentencePieceTrainer.train(
                input=str(text_file),
                model_prefix=str(prefix),
                vocab_size=cfg.vocab_size,
                model_type=cfg.model_type,
                character_coverage=cfg.character_coverage,
                pad_id=BLANK_ID,
                pad_piece=SPECIAL_PIECES[BLANK_ID],
                unk_id=UNK_ID,
                unk_piece=SPECIAL_PIECES[UNK_ID],
                bos_id=SOS_ID,
                bos_piece=SPECIAL_PIECES[SOS_ID],
                eos_id=EOS_ID,
                eos_piece=SPECIAL_PIECES[EOS_ID],
                user_defined_symbols=tags,
                hard_vocab_limit=False,
                byte_fallback=cfg.byte_fallback,
                normalization_rule_name="identity",
                input_sentence_size=0,
                shuffle_input_sentence=False,
                num_threads=1,
                minloglevel=2,
            )
        except RuntimeError as e:  # sentencepiece reports bad settings this way
            raise ValueError(_training_error(e, cfg)) from None
    model_file = prefix.with_suffix(".model")
    if model_file != out_path:
        model_file.replace(out_path)
    return Tokenizer(out_path)
