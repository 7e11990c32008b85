"""``astra export``: a checkpoint as a folder in the Hugging Face Hub's model layout.

The folder (upload it with ``huggingface-cli upload`` or ``HfApi.upload_folder``) holds

* ``config.json`` - ``model_type: "astra"``, the model config, the inference part of the data
  config (language tags, normalisation, batching; no local paths), vocabulary and languages,
  and a ``training`` record (data sources by name, steps);
* ``model.safetensors`` - the weights (with CMVN statistics);
* ``tokenizer.model`` - the SentencePiece model;
* ``README.md`` - a model card: Hub metadata (languages, ``model-index`` with the WER/CER of
  every evaluation given), training data, the per-language table from ``astra evaluate``'s
  ``results.json`` (or a statement that there is none) and the commands behind it.

``astra.inference.load_model`` (``--checkpoint`` / ``--init``) reads it back, from disk or
from the Hub.
"""

from __future__ import annotations

import json
import shlex
import shutil
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from astra.inference import (
    EXPORT_CONFIG,
    EXPORT_FORMAT,
    EXPORT_FORMAT_VERSION,
    MODEL_CARD,
    MODEL_FILE,
    TOKENIZER_FILE,
    ModelFiles,
    read_weights,
)

# data-config fields that name local files or sources: meaningless (and private) elsewhere
_DATA_SOURCE_FIELDS = (
    "corpora", "fleurs", "fleurs_dir", "hf_cache_dir", "languages", "train_splits", "dedup_splits",
    "unpaired_text", "tokenizer", "feature_cache", "num_workers",
)
RESULTS_FILE = "results.json"


@dataclass
class EvalRecord:
    """One ``astra evaluate`` results.json: its path, meta and per-language rows."""

    path: Path
    meta: dict[str, Any]
    languages: list[dict[str, Any]]
    pooled: dict[str, Any]
    macro: dict[str, Any]

    @classmethod
    def read(cls, path: str | Path) -> EvalRecord:
        path = Path(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            return cls(path, data["meta"], data["languages"], data["pooled"], data["macro"])
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise ValueError(f"{path}: not an astra evaluate results.json ({e})") from None

    def command(self) -> str:
        """The ``astra evaluate`` command that wrote it (from its meta)."""
        m = self.meta
        parts = ["astra", "evaluate", "--checkpoint", str(m.get("checkpoint", "CHECKPOINT"))]
        if m.get("fleurs"):
            parts += ["--fleurs", *m["fleurs"]]
        if m.get("corpora"):
            parts += ["--data", *m["corpora"]]
        parts += ["--split", str(m.get("split", "test")), "--method", str(m.get("method", "aligner_greedy"))]
        if str(m.get("method", "")).endswith("beam"):
            parts += ["--beam", str(m.get("beam"))]
        if m.get("ctc_weight") is not None:
            parts += ["--ctc-weight", str(m["ctc_weight"])]
        if m.get("force_language"):
            parts.append("--force-language")
        if m.get("normalize") is False:
            parts.append("--no-normalize")
        return shlex.join(parts)


def find_results(checkpoint: Path, roots: list[Path]) -> list[EvalRecord]:
    """Every ``*/results.json`` under ``roots`` whose ``meta.checkpoint`` is ``checkpoint``."""
    found = []
    target = checkpoint.resolve()
    for root in roots:
        for path in sorted(Path(root).glob(f"*/{RESULTS_FILE}")):
            try:
                record = EvalRecord.read(path)
            except ValueError:
                continue
            if Path(str(record.meta.get("checkpoint", ""))).resolve() == target:
                found.append(record)
    return found


def _iso(language: str) -> str:
    """``en_us`` -> ``en``, ``cmn_hans_cn`` -> ``cmn`` (the card's ``language`` metadata)."""
    return language.split("_")[0]


def _training_record(raw: dict[str, Any], trainer_state: dict[str, Any]) -> dict[str, Any]:
    data = raw.get("data") or {}
    return {
        "corpora": [Path(c).name for c in data.get("corpora") or []],
        "fleurs": list(data.get("fleurs") or []),
        "unpaired_text": [
            f"{s.split('=', 1)[0]}={Path(s.split('=', 1)[-1]).name}" for s in data.get("unpaired_text") or []
        ],
        "languages": list(data.get("languages") or []),
        "train_splits": list(data.get("train_splits") or []),
        "steps": trainer_state.get("step"),
        "validation": trainer_state.get("valid") or {},
    }


def export_config(files: ModelFiles, vocab_size: int, languages: list[str]) -> dict[str, Any]:
    """The ``config.json`` of the model in ``files`` (see the module docstring)."""
    from astra import __version__
    from astra.data.config import DataConfig

    raw = files.raw_config()
    state_file = files.folder / "trainer_state.json"
    state = json.loads(state_file.read_text(encoding="utf-8")) if state_file.is_file() else {}
    defaults = DataConfig()
    data = {
        f.name: value
        for f in fields(DataConfig)
        if (value := (raw.get("data") or {}).get(f.name, getattr(defaults, f.name))) is not None
    }
    for name in _DATA_SOURCE_FIELDS:
        data.pop(name, None)
    return {
        "model_type": EXPORT_FORMAT,
        "format_version": EXPORT_FORMAT_VERSION,
        "architectures": ["AstraModel"],
        "astra_version": __version__,
        "vocab_size": vocab_size,
        "languages": languages,
        "model": raw.get("model") or {},
        "data": data,
        "training": _training_record(raw, state),
    }


def _results_section(records: list[EvalRecord], validation: dict[str, Any]) -> list[str]:
    if not records:
        lines = [
            "No `astra evaluate` results were given or found for this checkpoint, so this card",
            "reports no test error rates. Run `astra evaluate --checkpoint THIS_FOLDER ...` and",
            "export again with `--results exp/eval/.../results.json`.",
        ]
        wers = {k: v for k, v in sorted(validation.items()) if k.startswith(("wer/", "cer/"))}
        if wers:
            lines += ["", "Error rates on the validation split recorded during training (not a test result):", "",
                      "| language | metric | error rate (%) |", "|---|---|---:|"]
            for key, value in wers.items():
                metric, _, lang = key.partition("/")
                lines.append(f"| {lang} | {metric.upper()} | {100 * float(value):.2f} |")
        return lines
    lines = []
    for r in records:
        m = r.meta
        parts = [f"FLEURS {' '.join(m['fleurs'])}"] if m.get("fleurs") else []
        what = ", ".join(parts + [f"corpus {Path(c).name}" for c in m.get("corpora") or []])
        lines += [
            f"**{what or m.get('data', '?')}**, split `{m.get('split')}`, decoding `{m.get('method')}`"
            f"{' (beam ' + str(m.get('beam')) + ')' if str(m.get('method', '')).endswith('beam') else ''}, "
            f"{m.get('utterances')} utterances, real-time factor {m.get('rtf', float('nan')):.4f}:",
            "",
            "| language | metric | utterances | error rate (%) |",
            "|---|---|---:|---:|",
        ]
        for lang in r.languages:
            lines.append(f"| {lang['language']} | {lang['metric']} | {lang['utterances']} | "
                         f"{100 * float(lang['error_rate']):.2f} |")
        lines += [
            f"| **pooled** | | | {100 * float(r.pooled['error_rate']):.2f} |",
            f"| **macro** | | | {100 * float(r.macro['error_rate']):.2f} |",
            "",
            "Produced by:",
            "",
            "```bash",
            r.command(),
            "```",
            "",
        ]
    return lines


def model_card(config: dict[str, Any], records: list[EvalRecord], name: str, command: str) -> str:
    """The ``README.md`` text: Hub metadata block, then the card (see the module docstring)."""
    from huggingface_hub import EvalResult, ModelCardData

    training = config["training"]
    languages = sorted({_iso(lang) for lang in config["languages"] + training["languages"]
                        + training["fleurs"] + [lang["language"] for r in records for lang in r.languages]})
    results = []
    for r in records:
        fleurs = bool(r.meta.get("fleurs"))
        for lang in r.languages:
            results.append(EvalResult(
                task_type="automatic-speech-recognition", task_name="Speech recognition",
                dataset_type="google/fleurs" if fleurs else "local",
                dataset_name="FLEURS" if fleurs else str(r.meta.get("data", "local corpus")),
                dataset_config=lang["language"], dataset_split=str(r.meta.get("split")),
                metric_type=str(lang["metric"]).lower(), metric_name=str(lang["metric"]),
                metric_value=round(100 * float(lang["error_rate"]), 2),
            ))
    card = ModelCardData(
        language=languages or None, library_name="astra", pipeline_tag="automatic-speech-recognition",
        tags=["speech-recognition", "aligner-encoder", "text-injection", "astra"],
        datasets=["google/fleurs"] if training["fleurs"] or any(r.meta.get("fleurs") for r in records) else None,
        model_name=name, eval_results=results or None,
    )
    sources = (
        ([f"FLEURS configs {', '.join(training['fleurs'])}"] if training["fleurs"] else [])
        + [f"local corpus `{c}`" for c in training["corpora"]]
        + [f"unpaired text {t}" for t in training["unpaired_text"]]
    )
    model = config["model"]
    body = [
        f"# {name}",
        "",
        "A speech recognition model trained with astra (Aligner-Encoder decoder,",
        "ASTRA text injection): \"Aligner-Encoders: Self-Attention Transformers Can Be Self-Transducers",
        "(arXiv:2502.05232)\", \"ASTRA: Aligning Speech and Text Representations for ASR without Sampling",
        "(arXiv:2406.06664)\".",
        "",
        f"Model: d_model {model.get('d_model')}, vocabulary {config['vocab_size']} SentencePiece pieces, "
        f"languages {', '.join(config['languages']) or 'untagged'}.",
        "",
        "## Usage",
        "",
        "```bash",
        f"astra transcribe audio.wav --checkpoint {name}",
        f"astra evaluate --checkpoint {name} --fleurs hi_in --split test",
        f"astra finetune --config finetune.yaml --init {name}",
        "```",
        "",
        "```python",
        "from astra.inference import load_model",
        f"loaded = load_model({name!r})  # .model, .tokenizer, .config",
        "```",
        "",
        "## Training data",
        "",
        *([f"- {s}" for s in sources] or ["- (not recorded in the run config)"]),
        *([f"- languages kept: {', '.join(training['languages'])}"] if training["languages"] else []),
        f"- splits: {', '.join(training['train_splits']) or '-'}; training steps: {training['steps']}",
        "",
        "## Evaluation",
        "",
        *_results_section(records, training["validation"]),
        "",
        "## Export",
        "",
        "```bash",
        command,
        "```",
        "",
    ]
    return "---\n" + card.to_yaml() + "\n---\n\n" + "\n".join(body)


def export_model(
    checkpoint: str | Path,
    out: str | Path,
    results: list[str | Path] | None = None,
    eval_roots: list[str | Path] | None = None,
    name: str | None = None,
    command: str = "astra export",
) -> tuple[Path, list[EvalRecord]]:
    """Write the export folder ``out`` of ``checkpoint`` (a checkpoint or run folder).

    ``results``: ``astra evaluate`` results.json files for the card; without them, those
    under ``eval_roots`` naming this checkpoint. Returns the folder and the records used.
    Raises ``ValueError`` for a missing checkpoint, unsafe weights or unreadable results.
    """
    from safetensors.torch import save_file

    from astra.data.tokenizer import Tokenizer
    from astra.inference import load_model, locate_model

    files = locate_model(checkpoint)
    if files.kind != "checkpoint":
        raise ValueError(f"{checkpoint} is already an exported model ({EXPORT_CONFIG}), not a checkpoint")
    load_model(files.folder)  # the weights fit the config: refuse to export a broken checkpoint
    records = [EvalRecord.read(p) for p in results or []]
    if not records:
        records = find_results(files.folder, [Path(r) for r in eval_roots or []])
    tokenizer = Tokenizer(files.tokenizer)
    config = export_config(files, tokenizer.vocab_size, tokenizer.languages)
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise ValueError(f"{out} exists and is not empty")
    out.mkdir(parents=True, exist_ok=True)
    state = read_weights(files)
    save_file({k: v.contiguous() for k, v in state.items()}, str(out / MODEL_FILE), metadata={"format": "pt"})
    shutil.copyfile(files.tokenizer, out / TOKENIZER_FILE)
    (out / EXPORT_CONFIG).write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    card = model_card(config, records, name or out.name, command)
    (out / MODEL_CARD).write_text(card, encoding="utf-8")
    return out, records
