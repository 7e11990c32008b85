"""FLEURS (``google/fleurs``) through ``datasets``, read from the Hub's parquet conversion.

``datasets`` >= 4 refuses the dataset's loading script, so we read the parquet files the Hub
converted (``revision="refs/convert/parquet"``, files ``{config}/{split}/*.parquet``). A local
copy in the same layout (``data_dir``) goes through the same call: only the address differs.

Columns: ``id`` (sentence id; repeats across speakers), ``num_samples`` (at 16 kHz), ``path``,
``audio`` ({bytes, path}), ``transcription``, ``raw_transcription``, ``gender``, ``lang_id``,
``language``, ``lang_group_id``. The ``audio`` column is cast to ``Audio(decode=False)``
(``datasets`` would decode with torchcodec, which needs FFmpeg) and decoded by
:mod:`astra.data.audio`. Utterances are keyed ``{config}/{split}/{basename(path)}``.
"""

from __future__ import annotations

import glob
import logging
from pathlib import Path

from astra.data import skips
from astra.data.manifest import Utterance
from astra.data.skips import SkipCounter

log = logging.getLogger(__name__)

FLEURS_REPO = "google/fleurs"
PARQUET_REVISION = "refs/convert/parquet"
SPLITS = ("train", "validation", "test")
FLEURS_SAMPLE_RATE = 16_000
TARGET_COLUMNS = ("transcription", "raw_transcription")
_META_COLUMNS = ("num_samples", "path", "transcription", "raw_transcription", "language", "gender")


def parse_configs(configs: str | list[str]) -> list[str]:
    """``"en_us,fr_fr"`` or a list -> ``["en_us", "fr_fr"]`` (empty items dropped)."""
    items = configs.split(",") if isinstance(configs, str) else list(configs)
    return [c.strip() for c in items if c.strip()]


def fleurs_data_files(config: str, split: str, data_dir: str | Path | None = None) -> str:
    """The parquet glob of one config and split: relative on the Hub, absolute under ``data_dir``."""
    pattern = f"{config}/{split}/*.parquet"
    return pattern if data_dir is None else str(Path(data_dir) / pattern)


def load_fleurs_split(
    config: str,
    split: str,
    data_dir: str | Path | None = None,
    data_files: str | list[str] | None = None,
    streaming: bool = False,
    cache_dir: str | None = None,
    repo: str = FLEURS_REPO,
    revision: str = PARQUET_REVISION,
):
    """One config/split as a ``datasets`` (Iterable)Dataset with an undecoded ``audio`` column.

    Args:
        config: FLEURS config, e.g. ``en_us``.
        split: ``train``, ``validation`` or ``test``.
        data_dir: local copy of the parquet conversion (``{config}/{split}/*.parquet``);
            ``None`` reads ``repo`` at ``revision`` on the Hub.
        data_files: explicit parquet file(s), overriding the layout.
        streaming: return an ``IterableDataset`` (nothing downloaded/converted up front).
        cache_dir: ``datasets`` cache folder.
    Raises:
        ValueError: no parquet files for that config/split under ``data_dir``.
    """
    import datasets

    files = data_files if data_files is not None else fleurs_data_files(config, split, data_dir)
    if data_dir is not None or data_files is not None:
        if isinstance(files, str) and not glob.glob(files):
            raise ValueError(f"no FLEURS parquet files for {config}/{split}: nothing matches {files}")
        ds = datasets.load_dataset(
            "parquet", data_files={split: files}, split=split, streaming=streaming, cache_dir=cache_dir
        )
    else:
        try:
            ds = datasets.load_dataset(
                repo, revision=revision, data_files={split: files}, split=split, streaming=streaming, cache_dir=cache_dir
            )
        except (ConnectionError, OSError) as e:
            raise ValueError(
                f"cannot read {repo} ({config}/{split}) at {revision} from the Hub: {e}; "
                "give a local copy of the parquet conversion (fleurs_dir / --fleurs-dir)"
            ) from e
    missing = {"audio", "path", "transcription"} - set(ds.column_names or [])
    if missing:
        raise ValueError(f"FLEURS {config}/{split} ({files}) lacks columns {sorted(missing)}")
    return ds.cast_column("audio", datasets.Audio(decode=False))


def _utterance(config: str, split: str, meta: dict, target: str, **audio_ref) -> Utterance:
    num_samples = meta.get("num_samples")
    return Utterance(
        key=f"{config}/{split}/{Path(meta['path']).name}",
        language=config,
        split=split,
        transcription=(meta.get(target) or "").strip(),
        duration=num_samples / FLEURS_SAMPLE_RATE if num_samples else None,
        speaker=None,
        raw_transcription=meta.get("raw_transcription"),
        language_name=meta.get("language"),
        **audio_ref,
    )


def iter_fleurs(
    configs: str | list[str],
    splits: list[str] | tuple[str, ...] = SPLITS,
    data_dir: str | Path | None = None,
    target: str = "transcription",
    streaming: bool = False,
    cache_dir: str | None = None,
    skip_counter: SkipCounter | None = None,
):
    """Yield :class:`Utterance` records of the chosen configs and splits (in file order).

    Non-streaming records point into the memory-mapped table (``table``/``row``); streaming
    records carry their encoded ``audio_bytes``.
    """
    if target not in TARGET_COLUMNS:
        raise ValueError(f"FLEURS target must be one of {TARGET_COLUMNS}, got {target!r}")
    seen: set[str] = set()
    for config in parse_configs(configs):
        for split in splits:
            ds = load_fleurs_split(config, split, data_dir=data_dir, streaming=streaming, cache_dir=cache_dir)
            if streaming:
                rows = ((row, {"audio_bytes": (row["audio"] or {}).get("bytes") or b""}) for row in ds)
            else:
                cols = [c for c in _META_COLUMNS if c in ds.column_names]
                meta = ds.select_columns(cols).to_dict()
                audio_table = ds.select_columns(["audio"])
                rows = (
                    ({c: meta[c][i] for c in cols}, {"table": audio_table, "row": i})
                    for i in range(len(ds))
                )
            for row, ref in rows:
                if not row.get("path"):
                    if skip_counter is not None:
                        skip_counter.add(skips.BAD_MANIFEST_ROW, f"{config}/{split}", config, "no path")
                    continue
                utt = _utterance(config, split, row, target, **ref)
                if utt.key in seen:
                    if skip_counter is not None:
                        skip_counter.add(skips.DUPLICATE_KEY, utt.key, config)
                    continue
                seen.add(utt.key)
                yield utt


def load_fleurs(configs: str | list[str], splits=SPLITS, **kwargs) -> list[Utterance]:
    """:func:`iter_fleurs` as a list (same arguments)."""
    return list(iter_fleurs(configs, splits, **kwargs))


def fleurs_features(audio_as_struct: bool = False):
    """``datasets.Features`` of FLEURS' parquet conversion (class labels stored as ints).

    ``audio_as_struct`` gives the ``audio`` column as its storage struct {bytes, path}
    (building rows through ``Audio`` would need torchcodec).
    """
    import datasets

    audio = datasets.Audio(sampling_rate=FLEURS_SAMPLE_RATE, decode=False)
    if audio_as_struct:
        audio = {"bytes": datasets.Value("binary"), "path": datasets.Value("string")}

    return datasets.Features(
        {
            "id": datasets.Value("int32"),
            "num_samples": datasets.Value("int32"),
            "path": datasets.Value("string"),
            "audio": audio,
            "transcription": datasets.Value("string"),
            "raw_transcription": datasets.Value("string"),
            "gender": datasets.Value("int64"),
            "lang_id": datasets.Value("int64"),
            "language": datasets.Value("string"),
            "lang_group_id": datasets.Value("int64"),
        }
    )


def write_fleurs_split(rows: list[dict], root: str | Path, config: str, split: str) -> Path:
    """Write ``rows`` (FLEURS columns; ``audio`` = {bytes, path}) as ``root/config/split/0000.parquet``.

    For building corpora in FLEURS' layout (tests, the tiny recipe). Missing optional columns
    get defaults (``id`` = row number, ``gender``/``lang_id``/``lang_group_id`` = 0,
    ``raw_transcription`` = ``transcription``, ``language`` = ``config``).
    """
    import datasets

    names = list(fleurs_features())
    filled = []
    for i, r in enumerate(rows):
        filled.append(
            {
                "id": r.get("id", i),
                "num_samples": r["num_samples"],
                "path": r["path"],
                "audio": r["audio"],
                "transcription": r["transcription"],
                "raw_transcription": r.get("raw_transcription", r["transcription"]),
                "gender": r.get("gender", 0),
                "lang_id": r.get("lang_id", 0),
                "language": r.get("language", config),
                "lang_group_id": r.get("lang_group_id", 0),
            }
        )
    out = Path(root) / config / split
    out.mkdir(parents=True, exist_ok=True)
    ds = datasets.Dataset.from_list(filled, features=fleurs_features(audio_as_struct=True))
    ds = ds.cast_column("audio", datasets.Audio(sampling_rate=FLEURS_SAMPLE_RATE, decode=False))
    target = out / "0000.parquet"
    ds.select_columns(names).to_parquet(str(target))
    return target
