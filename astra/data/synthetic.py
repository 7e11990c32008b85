"""Small synthetic corpora (tones + noise, made-up sentences) for tests and benchmarks.

Not speech: only the formats, sample rates, channel counts and durations are realistic.
"""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np

WORDS = {
    "en_us": "the quick brown fox jumps over a lazy dog while seven birds sing".split(),
    "ru_ru": "быстрая коричневая лиса прыгает через ленивую собаку пока птицы поют".split(),
    "hi_in": "तेज़ भूरी लोमड़ी आलसी कुत्ते के ऊपर कूदती है और पक्षी गाते".split(),
    "cmn_hans_cn": list("敏捷的棕色狐狸跳过了懒狗鸟儿在唱歌"),
}


def tone(seconds: float, sample_rate: int, channels: int = 1, seed: int = 0) -> np.ndarray:
    """``[N, C]`` float32 chirp-plus-noise signal in [-0.5, 0.5]."""
    rng = np.random.default_rng(seed)
    n = int(round(seconds * sample_rate))
    t = np.arange(n) / sample_rate
    f0 = rng.uniform(150, 400)
    sig = 0.3 * np.sin(2 * np.pi * (f0 + 200 * t) * t) + 0.05 * rng.standard_normal(n)
    out = np.stack([sig * (1.0 - 0.2 * c) for c in range(channels)], axis=1)
    return out.astype(np.float32)


def sentence(language: str, rng: random.Random, num_words: int) -> str:
    words = WORDS.get(language, WORDS["en_us"])
    sep = "" if language.startswith("cmn") else " "
    return sep.join(rng.choice(words) for _ in range(num_words))


def write_local_corpus(
    root: str | Path,
    languages: tuple[str, ...] = ("en_us", "ru_ru"),
    splits: dict[str, int] | None = None,
    seconds: tuple[float, float] = (1.0, 3.0),
    formats: tuple[str, ...] = ("wav", "flac", "ogg"),
    sample_rates: tuple[int, ...] = (16000, 8000, 22050, 44100),
    seed: int = 0,
) -> Path:
    """Write ``root/{lang}/{split}.tsv`` + ``root/{lang}/audio/*`` and return ``root``.

    Files cycle through ``formats`` and ``sample_rates``; every third one is stereo.
    """
    import soundfile as sf

    splits = splits or {"train": 6, "validation": 2, "test": 2}
    rng = random.Random(seed)
    root = Path(root)
    k = 0
    for lang in languages:
        (root / lang / "audio").mkdir(parents=True, exist_ok=True)
        for split, count in splits.items():
            rows = ["path\ttranscription\tlanguage\tspeaker\tduration"]
            for i in range(count):
                fmt = formats[k % len(formats)]
                sr = sample_rates[k % len(sample_rates)]
                channels = 2 if k % 3 == 2 else 1
                dur = round(rng.uniform(*seconds), 2)
                rel = f"audio/{split}_{i:04d}.{fmt}"
                sf.write(str(root / lang / rel), tone(dur, sr, channels, seed=k), sr, format=fmt.upper())
                text = sentence(lang, rng, max(1, int(dur * 2)))
                rows.append(f"{rel}\t{text}\t{lang}\tspk{i % 3}\t{dur}")
                k += 1
            (root / lang / f"{split}.tsv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    return root
