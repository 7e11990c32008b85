"""An n-gram LM folder: ``manifest.json`` plus one ARPA file per language.

``manifest.json``::

    {"format": "astra-ngram-lm/1", "tokenizer_sha256": "...", "order": 6, "words": "pieces",
     "languages": {"en_us": {"arpa": "en_us.arpa", "sentences": 1200, "pieces": 30000,
                             "ngrams": [480, 9000, ...], "discounts": [[...], ...]}}}

LM words are the tokenizer's piece strings (``▁the``), so an ARPA file reads like the
pieces it scores and other ARPA tools (kaldilm, KenLM's query) can use it; at load time
pieces map to ids through the tokenizer whose hash the manifest holds.

Reading the ARPA files and building the scorer's tensors takes seconds per million n-grams,
so the first load writes the built scorer to ``scorer-<key>.pt`` in the folder (as icefall
caches its compiled ``G.pt`` next to the ARPA file); ``<key>`` hashes the tokenizer, the
languages and the ARPA files' bytes, so a changed file is never read from a stale cache. A
folder that cannot be written only loses the cache (a warning).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path

MANIFEST = "manifest.json"
FORMAT = "astra-ngram-lm/1"
SCORER_FORMAT = "astra-ngram-scorer/2"  # bump when NgramScorer's tensors change meaning

log = logging.getLogger(__name__)


def file_sha256(path: str | Path) -> str:
    """Hex SHA-256 of a file's bytes (the tokenizer's identity in the manifest)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_manifest(lm_dir: str | Path) -> dict:
    """The manifest of ``lm_dir``; ``ValueError`` naming what is missing or malformed."""
    path = Path(lm_dir) / MANIFEST
    if not Path(lm_dir).is_dir():
        raise ValueError(f"LM folder not found: {lm_dir}")
    if not path.is_file():
        raise ValueError(f"{path}: missing (an LM folder is written by 'astra lm train')")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{path}: not valid JSON ({e})") from e
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise ValueError(f"{path}: not an astra LM manifest (format must be {FORMAT!r})")
    langs = manifest.get("languages")
    if not isinstance(langs, dict) or not langs or not all(
        isinstance(v, dict) and isinstance(v.get("arpa"), str) for v in langs.values()
    ):
        raise ValueError(f"{path}: 'languages' must map each language to {{\"arpa\": FILE, ...}}")
    if not isinstance(manifest.get("tokenizer_sha256"), str):
        raise ValueError(f"{path}: no 'tokenizer_sha256'")
    return manifest


def load_lm(lm_dir: str | Path, tokenizer, languages=None):
    """``NgramScorer`` of ``lm_dir`` for ``tokenizer`` (all its languages, or ``languages``).

    Raises ``ValueError`` for a missing/malformed manifest or ARPA file, a tokenizer whose
    hash differs from the manifest's, or a requested language the folder has no LM for."""
    from astra.lm.arpa import read_arpa
    from astra.lm.ngram_scorer import NgramScorer

    manifest = read_manifest(lm_dir)
    got = file_sha256(tokenizer.model_path)
    if manifest["tokenizer_sha256"] != got:
        raise ValueError(
            f"LM {lm_dir} was built with another tokenizer (sha256 {manifest['tokenizer_sha256'][:12]}..., "
            f"the model's {tokenizer.model_path} is {got[:12]}...): rebuild it with 'astra lm train --tokenizer'"
        )
    available = manifest["languages"]
    wanted = list(available) if languages is None else list(languages)
    missing = [lang for lang in wanted if lang not in available]
    if missing:
        raise ValueError(f"LM {lm_dir} has no model for language(s) {', '.join(missing)} "
                         f"(it has {', '.join(available)})")
    arpas = {lang: Path(lm_dir) / available[lang]["arpa"] for lang in wanted}
    cache = _scorer_cache(lm_dir, got, tokenizer.vocab_size, arpas)
    if cache is not None and cache.is_file():
        try:
            import torch

            return NgramScorer.from_state(torch.load(cache, weights_only=True))
        except Exception as e:  # a truncated or foreign file: rebuild it
            log.warning("LM scorer cache %s unreadable (%s): rebuilding it from the ARPA files", cache, e)
    models = {lang: read_arpa(path) for lang, path in arpas.items()}
    word_ids = {p: i for i, p in piece_ids(tokenizer).items()}
    try:
        scorer = NgramScorer(models, word_ids, tokenizer.vocab_size, tokenizer.eos_id, tokenizer.unk_id)
    except ValueError as e:
        raise ValueError(f"LM {lm_dir}: {e}") from e
    if cache is not None:
        _write_cache(scorer, cache)
    return scorer


def _scorer_cache(lm_dir, tokenizer_sha256: str, vocab_size: int, arpas: dict[str, Path]) -> Path | None:
    """``lm_dir/scorer-<key>.pt`` of these inputs, or ``None`` if an ARPA file is missing (its
    reader then names it)."""
    if not all(path.is_file() for path in arpas.values()):
        return None
    key = json.dumps({"format": SCORER_FORMAT, "tokenizer": tokenizer_sha256, "vocab_size": vocab_size,
                      "arpa": {lang: file_sha256(path) for lang, path in arpas.items()}})
    return Path(lm_dir) / f"scorer-{hashlib.sha256(key.encode()).hexdigest()[:16]}.pt"


def _write_cache(scorer, cache: Path) -> None:
    import torch

    tmp = cache.with_name(f"{cache.name}.{os.getpid()}.tmp")
    try:
        torch.save(scorer.state(), tmp)
        os.replace(tmp, cache)  # atomic: a concurrent reader sees the old state or the whole new one
        log.info("LM scorer cached in %s", cache)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        log.warning("LM scorer not cached (%s): the next load rebuilds it", e)


def piece_ids(tokenizer) -> dict[int, str]:
    """``{id: piece}`` of the ordinary pieces (no specials, no language tags): the LM's words."""
    tags = set(tokenizer.language_ids.values())
    return {i: tokenizer.id_to_piece(i) for i in range(4, tokenizer.vocab_size) if i not in tags}
