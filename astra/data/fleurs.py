"""FLEURS (``google/fleurs``): the repository's own tsv + tar.gz layout, or its parquet conversion.

Two layouts, on the Hub or in a local copy (``data_dir`` / ``--fleurs-dir`` accepts either):

1. **The repository's files** (primary; what the Hub certainly serves): ``data/{config}/{split}.tsv``
   (tab separated, no header: id, file name, raw transcription, transcription, phonemes, number
   of samples, gender) and ``data/{config}/audio/{split}.tar.gz`` (the wav files), splits
   ``train``, ``dev``, ``test`` (``dev`` is astra's ``validation``). On the Hub both files are
   fetched with ``huggingface_hub.hf_hub_download``; the archive is extracted once into a
   cache folder (:func:`audio_cache_root`) and utterances point at the wav files.
2. **The Hub's parquet conversion** (``revision="refs/convert/parquet"``, files
   ``{config}/{split}/*.parquet``, splits ``train``, ``validation``, ``test``), read with
   ``datasets``; used when the repository's files cannot be fetched and the branch exists.
   Columns: ``id`` (sentence id; repeats across speakers), ``num_samples`` (at 16 kHz),
   ``path``, ``audio`` ({bytes, path}), ``transcription``, ``raw_transcription``, ``gender``,
   ``lang_id``, ``language``, ``lang_group_id``. The ``audio`` column is cast to
   ``Audio(decode=False)`` (``datasets`` would decode with torchcodec, which needs FFmpeg)
   and decoded by :mod:`astra.data.audio`.

Utterances are keyed ``{config}/{split}/{file name}`` in both layouts (same keys, same split
names ``train``/``validation``/``test``).
"""

from __future__ import annotations

import csv
import glob
import hashlib
import logging
import os
import shutil
import tarfile
from pathlib import Path

from astra.constants import SAMPLE_RATE
from astra.data import skips
from astra.data.manifest import Utterance
from astra.data.skips import SkipCounter

log = logging.getLogger(__name__)

FLEURS_REPO = "google/fleurs"
PARQUET_REVISION = "refs/convert/parquet"
SPLITS = ("train", "validation", "test")
TARGET_COLUMNS = ("transcription", "raw_transcription")
_META_COLUMNS = ("num_samples", "path", "transcription", "raw_transcription", "language", "gender")
# the repository's own layout: split file names and tsv columns (no header)
TSV_SPLIT_FILES = {"train": "train", "validation": "dev", "test": "test"}
TSV_COLUMNS = ("id", "file_name", "raw_transcription", "transcription", "phonemes", "num_samples", "gender")
AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".mp3")


def parse_configs(configs: str | list[str]) -> list[str]:
    """``"en_us,fr_fr"`` or a list -> ``["en_us", "fr_fr"]`` (empty items dropped)."""
    items = configs.split(",") if isinstance(configs, str) else list(configs)
    return [c.strip() for c in items if c.strip()]


def fleurs_data_files(config: str, split: str, data_dir: str | Path | None = None) -> str:
    """The parquet glob of one config and split: relative on the Hub, absolute under ``data_dir``."""
    pattern = f"{config}/{split}/*.parquet"
    return pattern if data_dir is None else str(Path(data_dir) / pattern)


def tsv_layout_root(data_dir: str | Path) -> Path | None:
    """The folder holding ``{config}/{split}.tsv`` in a local copy of the repository's layout:
    ``data_dir/data`` (a copy of the whole repository) or ``data_dir``; ``None`` if neither."""
    root = Path(data_dir)
    for candidate in (root / "data", root):
        if candidate.is_dir() and any(candidate.glob("*/*.tsv")):
            return candidate
    return None


def fleurs_layout(data_dir: str | Path) -> str:
    """``"tsv"`` (the repository's files) or ``"parquet"`` (the parquet conversion).

    Raises:
        ValueError: ``data_dir`` holds neither layout.
    """
    if tsv_layout_root(data_dir) is not None:
        return "tsv"
    if any(Path(data_dir).glob("*/*/*.parquet")):
        return "parquet"
    raise ValueError(
        f"{data_dir} is not a copy of FLEURS: expected data/{{config}}/{{split}}.tsv with "
        "data/{config}/audio/{split}.tar.gz (the repository's layout) or "
        "{config}/{split}/*.parquet (its parquet conversion)"
    )


def local_splits(config: str, data_dir: str | Path) -> list[str]:
    """The splits (``train``, ``validation``, ``test``) that a local copy holds for ``config``."""
    if fleurs_layout(data_dir) == "tsv":
        root = tsv_layout_root(data_dir)
        return [s for s, name in TSV_SPLIT_FILES.items() if (root / config / f"{name}.tsv").is_file()]
    return [s for s in SPLITS if glob.glob(fleurs_data_files(config, s, data_dir))]


def _tsv_name(config: str, split: str) -> str:
    if split not in TSV_SPLIT_FILES:
        raise ValueError(f"FLEURS {config}: unknown split {split!r} (train, validation, test)")
    return TSV_SPLIT_FILES[split]


def hub_tsv_files(
    config: str, split: str, repo: str = FLEURS_REPO, revision: str | None = None, cache_dir: str | None = None
) -> tuple[Path, Path]:
    """``(tsv, audio archive)`` of one config/split fetched with ``huggingface_hub.hf_hub_download``
    (``data/{config}/{split}.tsv`` and ``data/{config}/audio/{split}.tar.gz``; ``validation`` is
    the repository's ``dev``). Raises whatever ``hf_hub_download`` raises."""
    import huggingface_hub

    name = _tsv_name(config, split)
    files = (f"data/{config}/{name}.tsv", f"data/{config}/audio/{name}.tar.gz")
    tsv, archive = (
        Path(huggingface_hub.hf_hub_download(repo_id=repo, filename=f, repo_type="dataset",
                                             revision=revision, cache_dir=cache_dir))
        for f in files
    )
    return tsv, archive


def audio_cache_root(cache_dir: str | None = None) -> Path:
    """Where audio archives are extracted: ``cache_dir/astra_fleurs_audio`` or
    ``$ASTRA_CACHE_DIR/fleurs_audio`` (default ``~/.cache/astra/fleurs_audio``)."""
    if cache_dir:
        return Path(cache_dir) / "astra_fleurs_audio"
    return Path(os.environ.get("ASTRA_CACHE_DIR") or Path.home() / ".cache" / "astra") / "fleurs_audio"


def extract_audio(archive: str | Path, dest_root: str | Path) -> Path:
    """Extract the audio files of a ``.tar.gz`` once, read as a stream, into a flat folder
    ``dest_root/{split}-{digest}`` (by base name; digest of the archive's path, size and
    time), and return it. A finished folder (``.complete``) is reused; concurrent processes
    each extract into a temporary folder and the first rename wins.

    Raises:
        ValueError: the archive cannot be read.
    """
    name = Path(archive).name.split(".")[0]  # before resolving: the Hub cache links to blobs
    archive = Path(archive).resolve()
    st = archive.stat()
    digest = hashlib.sha1(f"{archive}|{st.st_size}|{st.st_mtime_ns}".encode()).hexdigest()[:12]
    out = Path(dest_root) / f"{name}-{digest}"
    if (out / ".complete").exists():
        return out
    tmp = out.with_name(f"{out.name}.tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    n = 0
    try:
        with tarfile.open(archive, "r|*") as tar:
            for member in tar:
                if not member.isfile() or not member.name.lower().endswith(AUDIO_SUFFIXES):
                    continue
                with tar.extractfile(member) as src, open(tmp / Path(member.name).name, "wb") as dst:
                    shutil.copyfileobj(src, dst)
                n += 1
    except (tarfile.TarError, OSError, EOFError) as e:
        shutil.rmtree(tmp, ignore_errors=True)
        raise ValueError(f"cannot read FLEURS audio archive {archive}: {e}") from e
    (tmp / ".complete").write_text(f"{n} files from {archive}\n", encoding="utf-8")
    try:
        os.replace(tmp, out)
    except OSError:  # another process finished first
        shutil.rmtree(tmp, ignore_errors=True)
    log.info("extracted %d audio files of %s into %s", n, archive, out)
    return out


def read_fleurs_tsv(
    tsv: str | Path,
    config: str,
    split: str,
    audio_dir: str | Path,
    target: str = "transcription",
    skip_counter: SkipCounter | None = None,
) -> list[Utterance]:
    """Rows of a FLEURS ``{split}.tsv`` (no header, :data:`TSV_COLUMNS`) as :class:`Utterance`
    records whose audio is ``audio_dir/{file name}``. Rows without 7 columns or a file name are
    counted as ``bad_manifest_row``."""
    out = []
    audio_dir = Path(audio_dir)
    with open(tsv, encoding="utf-8", newline="") as f:
        for i, cols in enumerate(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE), 1):
            why = f"{len(cols)} columns, expected {len(TSV_COLUMNS)}" if len(cols) != len(TSV_COLUMNS) else ""
            row = dict(zip(TSV_COLUMNS, cols, strict=False))
            if not why and not row["file_name"].strip():
                why = "no file name"
            if why:
                if skip_counter is not None:
                    skip_counter.add(skips.BAD_MANIFEST_ROW, f"{tsv}:{i}", config, why)
                continue
            samples = row["num_samples"].strip()
            meta = {
                "path": row["file_name"].strip(),
                "num_samples": int(samples) if samples.isdigit() else None,
                "transcription": row["transcription"],
                "raw_transcription": row["raw_transcription"],
            }
            out.append(_utterance(config, split, meta, target, path=str(audio_dir / Path(meta["path"]).name)))
    return out


def _tsv_utterances(config, split, tsv, archive, target, cache_dir, skip_counter) -> list[Utterance]:
    audio_dir = extract_audio(archive, audio_cache_root(cache_dir) / config)
    return read_fleurs_tsv(tsv, config, split, audio_dir, target, skip_counter)


def _local_tsv_files(config: str, split: str, data_dir: str | Path) -> tuple[Path, Path]:
    root = tsv_layout_root(data_dir)
    name = _tsv_name(config, split)
    tsv, archive = root / config / f"{name}.tsv", root / config / "audio" / f"{name}.tar.gz"
    for f in (tsv, archive):
        if not f.is_file():
            raise ValueError(f"no FLEURS files for {config}/{split}: {f} not found")
    return tsv, archive


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
                repo, revision=revision, data_files={split: files}, split=split, streaming=streaming,
                cache_dir=cache_dir,
            )
        except (ConnectionError, OSError) as e:
            raise ValueError(
                f"cannot read {repo} ({config}/{split}) at {revision} from the Hub: {e}; "
                "give a local copy (fleurs_dir / --fleurs-dir; either layout)"
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
        duration=num_samples / SAMPLE_RATE if num_samples else None,
        speaker=None,
        raw_transcription=meta.get("raw_transcription"),
        language_name=meta.get("language"),
        **audio_ref,
    )


def _parquet_utterances(config, split, ds, target, streaming, skip_counter):
    """Utterances of one parquet split (``ds`` from :func:`load_fleurs_split`)."""
    if streaming:
        rows = ((row, {"audio_bytes": (row["audio"] or {}).get("bytes") or b""}) for row in ds)
    else:
        cols = [c for c in _META_COLUMNS if c in ds.column_names]
        meta = ds.select_columns(cols).to_dict()
        audio_table = ds.select_columns(["audio"])
        rows = (({c: meta[c][i] for c in cols}, {"table": audio_table, "row": i}) for i in range(len(ds)))
    for row, ref in rows:
        if not row.get("path"):
            if skip_counter is not None:
                skip_counter.add(skips.BAD_MANIFEST_ROW, f"{config}/{split}", config, "no path")
            continue
        yield _utterance(config, split, row, target, **ref)


def _hub_utterances(config, split, target, streaming, cache_dir, skip_counter):
    """The repository's tsv + archive first; the parquet conversion if those cannot be fetched."""
    try:
        tsv, archive = hub_tsv_files(config, split, cache_dir=cache_dir)
    except Exception as tsv_error:  # any Hub failure (missing file, offline, HTTP): try the parquet branch
        log.info("FLEURS %s/%s: repository files not fetched (%s); trying %s", config, split, tsv_error,
                 PARQUET_REVISION)
        try:
            ds = load_fleurs_split(config, split, streaming=streaming, cache_dir=cache_dir)
        except ValueError as parquet_error:
            name = TSV_SPLIT_FILES.get(split, split)
            raise ValueError(
                f"cannot read {FLEURS_REPO} {config}/{split} from the Hub: data/{config}/{name}.tsv: "
                f"{tsv_error}; {PARQUET_REVISION}: {parquet_error}"
            ) from parquet_error
        return _parquet_utterances(config, split, ds, target, streaming, skip_counter)
    return iter(_tsv_utterances(config, split, tsv, archive, target, cache_dir, skip_counter))


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

    ``data_dir``: a local copy in either layout (module doc); ``None``: the Hub. Records of the
    tsv layout point at extracted wav files (``path``); non-streaming parquet records point into
    the memory-mapped table (``table``/``row``); streaming parquet records carry ``audio_bytes``.

    Raises:
        ValueError: a split is missing from ``data_dir``, or the Hub cannot be read.
    """
    if target not in TARGET_COLUMNS:
        raise ValueError(f"FLEURS target must be one of {TARGET_COLUMNS}, got {target!r}")
    seen: set[str] = set()
    for config in parse_configs(configs):
        for split in splits:
            if data_dir is None:
                utts = _hub_utterances(config, split, target, streaming, cache_dir, skip_counter)
            elif fleurs_layout(data_dir) == "tsv":
                tsv, archive = _local_tsv_files(config, split, data_dir)
                utts = _tsv_utterances(config, split, tsv, archive, target, cache_dir, skip_counter)
            else:
                ds = load_fleurs_split(config, split, data_dir=data_dir, streaming=streaming, cache_dir=cache_dir)
                utts = _parquet_utterances(config, split, ds, target, streaming, skip_counter)
            for utt in utts:
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

    audio = datasets.Audio(sampling_rate=SAMPLE_RATE, decode=False)
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
    ds = ds.cast_column("audio", datasets.Audio(sampling_rate=SAMPLE_RATE, decode=False))
    target = out / "0000.parquet"
    ds.select_columns(names).to_parquet(str(target))
    return target
