"""One SentencePiece tokenizer for every language, with astra's fixed special ids.

Ids (CONTRIBUTING.md "Tokens"): 0 ``<blank>`` (RNN-T/CTC blank and padding), 1 ``<unk>``,
2 ``<sos>``, 3 ``<eos>``, then the optional ``<lang:xx>`` tags, then ordinary pieces. They are
SentencePiece's pad/unk/bos/eos ids and user-defined symbols, so the ``.model`` file alone
fixes them. :func:`extend_tokenizer` appends a new language's pieces (and tag) after all of
them, so every old id keeps its piece.

Training (:func:`train_tokenizer`) balances languages: each language's share of the training
sentences is proportional to ``n_lang ** alpha`` (``alpha`` = 1 keeps natural proportions,
0 gives every language the same share), so no language drowns the others.
"""

from __future__ import annotations

import logging
import random
import re
import shutil
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from astra.config import check_choices
from astra.constants import BLANK_ID, EOS_ID, SOS_ID, UNK_ID

log = logging.getLogger(__name__)

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
        ValueError: the file is missing, not a SentencePiece model, or its special ids are
            not 0-3 as above.
    """

    def __init__(self, model_path: str | Path):
        import sentencepiece as spm

        model_path = Path(model_path)
        if not model_path.is_file():
            raise ValueError(f"tokenizer model not found: {model_path}")
        self.model_path = model_path
        try:
            self.sp = spm.SentencePieceProcessor(model_file=str(model_path))
        except RuntimeError:  # sentencepiece's "could not parse ModelProto"
            raise ValueError(f"{model_path}: not a SentencePiece model") from None
        got = (self.sp.pad_id(), self.sp.unk_id(), self.sp.bos_id(), self.sp.eos_id())
        if got != (BLANK_ID, UNK_ID, SOS_ID, EOS_ID):
            raise ValueError(f"{model_path}: special ids (pad, unk, bos, eos) are {got}, astra needs (0, 1, 2, 3)")
        self.blank_id, self.unk_id, self.sos_id, self.eos_id = BLANK_ID, UNK_ID, SOS_ID, EOS_ID
        # tags sit at ids 4.. in a trained model; an extended one appends new tags at the end
        self.language_ids: dict[str, int] = {}
        for i in range(NUM_SPECIAL, self.sp.get_piece_size()):
            piece = self.sp.id_to_piece(i)
            if piece.startswith("<lang:") and piece.endswith(">"):
                self.language_ids[piece[len("<lang:") : -1]] = i
        self._skipped_ids = set(range(NUM_SPECIAL)) | set(self.language_ids.values())

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
        return self.sp.decode([int(i) for i in ids if int(i) not in self._skipped_ids])

    def id_to_piece(self, i: int) -> str:
        return self.sp.id_to_piece(int(i))


@dataclass
class TokenizerTrainConfig:
    """Options of :func:`train_tokenizer` (and ``astra tokenizer train``)."""

    vocab_size: int = 500
    model_type: Literal["unigram", "bpe"] = "unigram"
    character_coverage: float = 0.9995
    language_tags: bool = False  # add <lang:xx> pieces (ids 4..) for every language
    alpha: float = 0.5  # language sampling exponent: share ~ n_lang ** alpha
    max_sentences: int = 2_000_000  # cap on the balanced training set
    byte_fallback: bool = False  # map unknown characters to byte pieces instead of <unk>
    seed: int = 0


def balance_languages(
    sentences: dict[str, list[str]], alpha: float, max_sentences: int, seed: int = 0
) -> dict[str, list[str]]:
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
        out_path: the ``.model`` file to write, any name (``x.v2.model`` too); the ``.vocab``
            file is written next to it, named ``x.v2.vocab`` (``.model`` replaced or appended).
    Returns:
        the loaded :class:`Tokenizer`.
    Raises:
        ValueError: no text, a bad model type, or a vocabulary too small for the special
            pieces, language tags and characters of the text.
    """
    import sentencepiece as spm

    cfg = cfg or TokenizerTrainConfig()
    check_choices(cfg, "tokenizer ")
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
    with tempfile.TemporaryDirectory() as tmp:
        text_file = Path(tmp) / "train.txt"
        lines = [line for lang in sorted(balanced) for line in balanced[lang]]
        random.Random(cfg.seed).shuffle(lines)
        text_file.write_text("".join(line.replace("\n", " ") + "\n" for line in lines), encoding="utf-8")
        try:
            spm.SentencePieceTrainer.train(
                input=str(text_file),
                model_prefix=str(Path(tmp) / "spm"),
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
        # sentencepiece names its outputs PREFIX.model / PREFIX.vocab: written in the temporary
        # folder and moved, so a name with dots (x.v2.model) stays as given
        shutil.move(Path(tmp) / "spm.model", out_path)
        shutil.move(Path(tmp) / "spm.vocab", vocab_path(out_path))
    return Tokenizer(out_path)


def vocab_path(model_path: str | Path) -> Path:
    """The ``.vocab`` file written next to a trained ``.model``: ``x.v2.model`` ->
    ``x.v2.vocab``, ``x`` -> ``x.vocab``."""
    model_path = Path(model_path)
    return model_path.with_name(model_path.name.removesuffix(".model") + ".vocab")


@dataclass
class ExtendReport:
    """What :func:`extend_tokenizer` did (printed by ``astra tokenizer extend``)."""

    base_size: int
    new_size: int
    added_pieces: int
    added_tags: list[str]
    unencodable_before: dict[str, int]  # sentences with <unk> per language, base tokenizer
    unencodable_after: dict[str, int]  # ... extended tokenizer
    sentences: dict[str, int]

    def table(self) -> str:
        lines = [
            f"vocabulary {self.base_size} -> {self.new_size}: {self.added_pieces} pieces and "
            f"{len(self.added_tags)} language tags appended (ids {self.base_size}..{self.new_size - 1}); "
            f"ids 0..{self.base_size - 1} unchanged",
            "",
            "| language | sentences | with <unk>, base | with <unk>, extended |",
            "|---|---:|---:|---:|",
        ]
        for lang in sorted(self.sentences):
            lines.append(
                f"| {lang} | {self.sentences[lang]} | {self.unencodable_before[lang]} | "
                f"{self.unencodable_after[lang]} |"
            )
        return "\n".join(lines) + "\n"


def _unencodable(tokenizer: Tokenizer, sentences: dict[str, list[str]]) -> dict[str, int]:
    return {
        lang: sum(1 for s in lines if tokenizer.unk_id in tokenizer.encode(s))
        for lang, lines in sentences.items()
    }


def extend_tokenizer(
    base_path: str | Path,
    sentences: dict[str, list[str]],
    out_path: str | Path,
    new_pieces: int = 200,
    character_coverage: float = 1.0,
    language_tags: bool | None = None,
    seed: int = 0,
) -> tuple[Tokenizer, ExtendReport]:
    """Append the pieces of new text (a new language) to the trained model ``base_path``.

    A SentencePiece model of ``new_pieces`` pieces is trained on ``sentences`` with the base
    model's type; its pieces missing from the base are appended (unigram: their log
    probabilities as scores; BPE: after every base merge), and ``<lang:xx>`` tags for new
    languages when the base has tags (or ``language_tags``). The result is written by editing
    SentencePiece's ``ModelProto``, so every base id keeps its piece (CONTRIBUTING.md token
    ids), which is what lets a fine-tuned model keep its trained rows.

    Raises:
        ValueError: no text, an unreadable base model, or a base type other than unigram/BPE.
    """
    from sentencepiece import sentencepiece_model_pb2 as pb

    base = Tokenizer(base_path)
    proto = pb.ModelProto()
    try:
        proto.ParseFromString(Path(base_path).read_bytes())
    except Exception as e:  # protobuf's DecodeError
        raise ValueError(f"{base_path}: not a SentencePiece model ({e})") from None
    kinds = {pb.TrainerSpec.UNIGRAM: "unigram", pb.TrainerSpec.BPE: "bpe"}
    model_type = kinds.get(proto.trainer_spec.model_type)
    if model_type is None:
        raise ValueError(f"{base_path}: only unigram and BPE models can be extended")
    sentences = {lang: [s for s in lines if s.strip()] for lang, lines in sentences.items()}
    sentences = {lang: lines for lang, lines in sentences.items() if lines}
    if not sentences:
        raise ValueError("no text to extend the tokenizer with")
    before = _unencodable(base, sentences)
    if language_tags is None:
        language_tags = bool(base.languages)
    cfg = TokenizerTrainConfig(
        vocab_size=new_pieces + NUM_SPECIAL, model_type=model_type,
        character_coverage=character_coverage, alpha=1.0, seed=seed,
    )
    with tempfile.TemporaryDirectory() as tmp:
        learned_path = Path(tmp) / "new.model"
        train_tokenizer(sentences, learned_path, cfg)
        learned = pb.ModelProto()
        learned.ParseFromString(learned_path.read_bytes())
    known = {p.piece for p in proto.pieces}
    lowest = min((p.score for p in proto.pieces if p.type == pb.ModelProto.SentencePiece.NORMAL), default=0.0)
    added = 0
    for piece in learned.pieces:
        if piece.type != pb.ModelProto.SentencePiece.NORMAL or piece.piece in known:
            continue
        score = piece.score if model_type == "unigram" else lowest - 1.0 + piece.score
        proto.pieces.add(piece=piece.piece, score=score, type=pb.ModelProto.SentencePiece.NORMAL)
        known.add(piece.piece)
        added += 1
    tags = []
    if language_tags:
        for lang in sorted(sentences):
            tag = language_tag(lang)
            if tag not in known:
                proto.pieces.add(piece=tag, score=0.0, type=pb.ModelProto.SentencePiece.USER_DEFINED)
                known.add(tag)
                tags.append(tag)
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_bytes(proto.SerializeToString())
    extended = Tokenizer(out_path)
    changed = [i for i in range(base.vocab_size) if extended.id_to_piece(i) != base.id_to_piece(i)]
    if changed:  # cannot happen with appends only; guards the token-id contract
        raise ValueError(f"extending {base_path} moved base ids {changed[:5]}")
    report = ExtendReport(
        base_size=base.vocab_size, new_size=extended.vocab_size, added_pieces=added, added_tags=tags,
        unencodable_before=before, unencodable_after=_unencodable(extended, sentences),
        sentences={lang: len(lines) for lang, lines in sentences.items()},
    )
    return extended, report
