"""The tiny recipe: recipes/tiny/report.py (fast) and `run.sh --quick --compare` end to end (slow)."""

from __future__ import annotations

import csv
import importlib.util
import json
import math
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
RUN_SH = REPO / "recipes" / "tiny" / "run.sh"
LANGUAGES = ["de_de", "en_us", "es_419", "it_it", "ru_ru"]


def load_recipe_script(name: str):
    """Import ``recipes/tiny/NAME.py`` (a script, not a package module) as ``tiny_NAME``."""
    spec = importlib.util.spec_from_file_location(f"tiny_{name}", REPO / "recipes" / "tiny" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


report = load_recipe_script("report")
scores = load_recipe_script("text_only_scores")
seeds = load_recipe_script("seed_table")


def write_eval(folder: Path, rows: list[tuple[str, str, str]]) -> None:
    """A minimal `astra evaluate` folder: results.json + hyps.tsv for (language, ref, hyp) rows."""
    import jiwer

    folder.mkdir(parents=True)
    per_lang: dict[str, list[int]] = {}
    with open(folder / "hyps.tsv", "w", encoding="utf-8", newline="") as f:
        f.write("key\tlanguage\treference\thypothesis\terrors\tref_units\terror_rate\n")
        for i, (lang, ref, hyp) in enumerate(rows):
            out = jiwer.process_words(ref, hyp)
            errors = out.substitutions + out.deletions + out.insertions
            n = len(ref.split())
            f.write(f"u{i}\t{lang}\t{ref}\t{hyp}\t{errors}\t{n}\t{errors / n}\n")
            acc = per_lang.setdefault(lang, [0, 0])
            acc[0] += errors
            acc[1] += n
    languages = [{"language": k, "error_rate": e / n, "errors": e, "ref_units": n}
                 for k, (e, n) in sorted(per_lang.items())]
    total_e = sum(v[0] for v in per_lang.values())
    total_n = sum(v[1] for v in per_lang.values())
    results = {
        "languages": languages,
        "pooled": {"metric": "WER", "error_rate": total_e / total_n},
        "macro": {"metric": "WER", "error_rate": sum(x["error_rate"] for x in languages) / len(languages)},
    }
    (folder / "results.json").write_text(json.dumps(results), encoding="utf-8")


def test_recognised_words_follow_the_word_alignment():
    assert report.recognised_words("anna sold the basket", "anna sold the basket") == [True] * 4
    assert report.recognised_words("anna sold the basket", "anna sold the bask it") == [True, True, True, False]
    assert report.recognised_words("anna sold the basket", "anna the basket") == [True, False, True, True]
    assert report.recognised_words("anna sold", "") == [False, False]


def test_report_counts_text_only_words_and_compares(tmp_path, capsys):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "text_only_words.json").write_text(json.dumps({"en_us": ["basket", "yellow"], "ru_ru": ["ваза"]}))
    (corpus / "unseen_words.json").write_text(json.dumps({"en_us": ["car"], "ru_ru": []}))
    rows_base = [
        ("en_us", "anna sold the yellow basket", "anna sold the blue bask"),   # 0 of 2
        ("en_us", "tom saw the red car", "tom saw the red car"),
        ("ru_ru", "ваза была дома", "вас а была дома"),                           # 0 of 1
    ]
    rows_text = [
        ("en_us", "anna sold the yellow basket", "anna sold the yellow basket"),  # 2 of 2
        ("en_us", "tom saw the red car", "tom saw a red car"),
        ("ru_ru", "ваза была дома", "ваз была дома"),                             # 0 of 1
    ]
    write_eval(tmp_path / "base", rows_base)
    write_eval(tmp_path / "text", rows_text)
    out = tmp_path / "results" / "compare"
    status = report.main([
        "--corpus", str(corpus), "--eval", f"paired-only={tmp_path / 'base'}",
        "--eval", f"text+ASTRA={tmp_path / 'text'}", "--out", str(out),
    ])
    assert status == 0
    table = capsys.readouterr().out
    assert "| en_us |" in table and "paired-only" in table and "text+ASTRA" in table
    data = json.loads(out.with_suffix(".json").read_text())
    assert data["paired-only"]["text_only"]["en_us"] == {"occurrences": 2, "recognised": 0, "error_rate": 1.0}
    assert data["text+ASTRA"]["text_only"]["en_us"] == {"occurrences": 2, "recognised": 2, "error_rate": 0.0}
    assert data["text+ASTRA"]["text_only_pooled"]["error_rate"] == pytest.approx(1 / 3)
    assert data["text_only_pooled_relative_reduction"] == pytest.approx(2 / 3)
    assert data["paired-only"]["unseen_pooled"] == {"occurrences": 1, "recognised": 1, "error_rate": 0.0}
    # the other words (of the paired transcripts): en 7 (anna sold the; tom saw the red), ru 2
    assert data["paired-only"]["paired_pooled"] == {"occurrences": 9, "recognised": 9, "error_rate": 0.0}
    assert data["text+ASTRA"]["paired"]["en_us"]["recognised"] == 6  # "the" -> "a"
    assert data["text+ASTRA"]["paired_pooled"]["error_rate"] == pytest.approx(1 / 9)
    # WER of the sentences holding a text-only word: en "yellow basket" (2 of 5 wrong) and ru (2 of 3)
    assert data["paired-only"]["text_only_sentences_wer"]["en_us"] == pytest.approx(2 / 5)
    assert data["paired-only"]["text_only_sentences_wer_pooled"] == pytest.approx(4 / 8)
    assert data["text+ASTRA"]["text_only_sentences_wer"]["en_us"] == 0.0
    # CER, spaces included: "tom saw a red car" vs "tom saw the red car" -> 3 edits of 19 chars
    assert data["text+ASTRA"]["cer"]["en_us"] == pytest.approx(3 / (27 + 19))
    assert out.with_suffix(".md").read_text() == table


@pytest.fixture
def corpus(tmp_path):
    """A corpus folder with no text-only words (enough for the scripts' argument checks)."""
    folder = tmp_path / "corpus"
    folder.mkdir()
    (folder / "text_only_words.json").write_text("{}")
    return folder


def test_report_names_a_missing_evaluation(tmp_path, corpus, capsys):
    assert report.main(["--corpus", str(corpus), "--eval", f"x={tmp_path / 'nothing'}"]) == 2
    assert "results.json not found" in capsys.readouterr().err


def _compare_json(work: Path, wer: dict[str, float], text_only: dict[str, float]) -> None:
    """results_compare{suffix}.json of every decoder: the given pooled WER and text-only error per
    model, CER = WER / 2, two languages at WER -/+ 0.1."""
    work.mkdir(parents=True, exist_ok=True)
    for suffix, _ in seeds.DECODERS + seeds.OPTIONAL:
        data = {m: {"pooled": wer[m], "cer_pooled": wer[m] / 2, "text_only_pooled": {"error_rate": text_only[m]},
                    "error_rate": {"en_us": wer[m] - 0.1, "de_de": wer[m] + 0.1}} for m in wer}
        (work / f"results_compare{suffix}.json").write_text(json.dumps(data))


def test_seed_table_means_and_relative_changes(tmp_path, capsys):
    _compare_json(tmp_path / "a", {"paired-only": 0.40, "text+ASTRA": 0.38}, {"paired-only": 0.50, "text+ASTRA": 0.40})
    _compare_json(tmp_path / "b", {"paired-only": 0.60, "text+ASTRA": 0.62}, {"paired-only": 0.70, "text+ASTRA": 0.70})
    out = tmp_path / "seeds"
    assert seeds.main(["--run", f"1={tmp_path / 'a'}", "--run", f"2={tmp_path / 'b'}", "--out", str(out)]) == 0
    table = capsys.readouterr().out
    assert "| mean of 2 | paired-only | 50.0 / 25.0 |" in table
    assert "| CTC beam + LM | +0.0 | -5.0 / +3.3 | -8.3 | -20.0 / +0.0 |" in table
    data = json.loads(out.with_suffix(".json").read_text())
    assert data["mean"]["text+ASTRA"]["_ctc_lm"]["languages"] == {"de_de": pytest.approx(0.6),
                                                                   "en_us": pytest.approx(0.4)}
    assert data["relative_change"]["_ctc_lm"]["of_means"]["text_only"] == pytest.approx(-1 / 12)
    assert out.with_suffix(".md").read_text() == table


def test_seed_table_names_a_missing_run(tmp_path, capsys):
    assert seeds.main(["--run", f"1={tmp_path}"]) == 2
    assert "results_compare.json not found" in capsys.readouterr().err
    _compare_json(tmp_path, {"paired-only": 0.4}, {"paired-only": 0.5})
    assert seeds.main(["--run", f"1={tmp_path}"]) == 2
    assert "has no text+ASTRA" in capsys.readouterr().err
    assert seeds.main(["--run", "no-equals-sign"]) == 2


class CharTokenizer:
    """One id per character, '_' before every word (SentencePiece-like word boundaries)."""

    def encode(self, text: str) -> list[int]:
        return [ord(c) for w in text.split() for c in "_" + w]


def test_text_only_mask_marks_the_pieces_of_text_only_words():
    pieces, mask = scores.text_only_mask(["tom", "saw", "a", "vase"], {"vase"}, CharTokenizer())
    assert pieces == CharTokenizer().encode("tom saw a vase")
    assert mask == [0] * 10 + [1, 2, 2, 2, 2]


def test_text_only_scores_tables_pool_languages(tmp_path):
    base = scores.ModelScores("paired-only", text_only={"en_us": scores.TokenScores(4, 1, -8.0)},
                              word_start={"en_us": scores.TokenScores(2, 0, -6.0)},
                              other={"en_us": scores.TokenScores(10, 9, -1.0)},
                              other_foreign={"en_us": scores.TokenScores(8, 2, -3.0)})
    text = scores.ModelScores("text+ASTRA", text_only={"en_us": scores.TokenScores(4, 3, -2.0),
                                                        "ru_ru": scores.TokenScores(2, 0, -6.0)},
                              word_start={"en_us": scores.TokenScores(2, 1, -1.5),
                                          "ru_ru": scores.TokenScores(1, 0, -4.0)},
                              other={"en_us": scores.TokenScores(10, 8, -2.0)})
    table = scores.markdown([base, text])
    assert "| en_us | 2 | 4 | 0.0 | 50.0 | 25.0 | 75.0 | -2.00 | -0.50 | 90.0 | 80.0 | 25.0 | n/a |" in table
    assert "| ru_ru | 0 | 0 | n/a | 0.0 | n/a | 0.0 | n/a | -3.00 | n/a | n/a | n/a | n/a |" in table
    assert "| **pooled** | 2 | 4 | 0.0 | 33.3 | 25.0 | 50.0 |" in table
    data = scores.to_json([base, text])
    assert data["text+ASTRA"]["text_only_pooled"] == {"tokens": 6, "accuracy": pytest.approx(0.5),
                                                      "mean_log_prob": pytest.approx(-8.0 / 6)}
    assert data["paired-only"]["other_pooled"]["accuracy"] == pytest.approx(0.9)
    assert data["paired-only"]["other_foreign_pooled"] == {"tokens": 8, "accuracy": pytest.approx(0.25),
                                                           "mean_log_prob": pytest.approx(-3.0 / 8)}


def test_text_only_scores_names_a_missing_checkpoint(tmp_path, corpus, capsys):
    assert scores.main(["--corpus", str(corpus), "--model", f"x={tmp_path / 'nothing'}"]) == 2
    assert "not found" in capsys.readouterr().err
    assert scores.main(["--corpus", str(corpus), "--model", "no-equals-sign"]) == 2


# ---- end to end ----------------------------------------------------------------------------
def _finite(x) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x)


def _read_tsv(path: Path) -> list[dict]:
    with open(path, encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE))


def _check_eval(folder: Path, corpus: Path) -> dict:
    results = json.loads((folder / "results.json").read_text(encoding="utf-8"))
    langs = results["languages"]
    assert sorted(x["language"] for x in langs) == LANGUAGES
    for x in langs:
        assert _finite(x["error_rate"]) and x["error_rate"] >= 0
        assert x["errors"] == x["substitutions"] + x["deletions"] + x["insertions"]
        assert x["error_rate"] == pytest.approx(x["errors"] / max(x["ref_units"], 1))
        test_rows = _read_tsv(corpus / x["language"] / "test.tsv")
        assert x["utterances"] == len(test_rows)
        assert x["ref_units"] == sum(len(r["transcription"].split()) for r in test_rows)
    pooled = results["pooled"]
    assert pooled["errors"] == sum(x["errors"] for x in langs)
    assert pooled["ref_units"] == sum(x["ref_units"] for x in langs)
    assert pooled["error_rate"] == pytest.approx(pooled["errors"] / pooled["ref_units"])
    assert results["macro"]["error_rate"] == pytest.approx(sum(x["error_rate"] for x in langs) / len(langs))
    hyps = _read_tsv(folder / "hyps.tsv")
    assert len(hyps) == sum(x["utterances"] for x in langs)
    return results


def _check_text_only(summary: dict, name: str, corpus_summary: dict) -> None:
    entry = summary[name]
    for lang in LANGUAGES:
        counts = entry["text_only"][lang]
        assert counts["occurrences"] == corpus_summary["languages"][lang]["test_text_only_word_occurrences"]
        assert 0 <= counts["recognised"] <= counts["occurrences"]
        assert _finite(counts["error_rate"]) and 0.0 <= counts["error_rate"] <= 1.0
        assert _finite(entry["error_rate"][lang])


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("espeak-ng") is None and os.environ.get("CI") != "true",
                    reason="espeak-ng not installed (required in CI)")
def test_quick_recipe_end_to_end(tmp_path):
    work = tmp_path / "tiny"
    env = {**os.environ, "ASTRA_TINY_SET": ""}
    start = time.monotonic()
    proc = subprocess.run(["bash", str(RUN_SH), "--quick", "--compare", "--rescore", "--work", str(work)],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=1800)
    first_seconds = time.monotonic() - start
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]

    corpus = work / "corpus"
    corpus_summary = json.loads((corpus / "corpus.json").read_text(encoding="utf-8"))
    assert corpus_summary["status"] == "complete"
    assert sorted(corpus_summary["languages"]) == LANGUAGES
    assert (work / "tokenizer.model").is_file()
    assert any((work / "features").rglob("*.pt"))  # the training runs' fbank cache
    for run in ("pretrain", "finetune", "paired_only/pretrain", "paired_only/finetune"):
        assert (work / run / "DONE").is_file(), run
        ckpts = sorted((work / run / "checkpoints").glob("step-*"))
        assert ckpts, run
        for name in ("config.yaml", "model.safetensors", "tokenizer.model", "trainer_state.json"):
            assert (ckpts[-1] / name).is_file(), (run, name)
    results_main = json.loads((work / "results_main.json").read_text(encoding="utf-8"))
    lm_manifest = json.loads((work / "lm" / "manifest.json").read_text(encoding="utf-8"))
    assert sorted(lm_manifest["languages"]) == LANGUAGES and lm_manifest["order"] == 3
    decoders = (("", "Aligner greedy"), ("_ctc_beam", "Aligner + CTC beam"),
                ("_ctc_beam_lm", "Aligner + CTC beam + LM"),
                ("_ctc", "CTC greedy"), ("_ctc_lm", "CTC beam + LM"), ("_rescore", "CTC beam + LM, Aligner rescoring"))
    methods = {}
    for suffix, decoder in decoders:
        main = _check_eval(work / "eval" / f"main{suffix}", corpus)
        paired = _check_eval(work / "eval" / f"paired_only{suffix}", corpus)
        assert main["utterances"] == paired["utterances"]
        assert main["meta"]["method"] == paired["meta"]["method"]
        methods[suffix] = main["meta"]
        _check_text_only(results_main, decoder, corpus_summary)
        compare = json.loads((work / f"results_compare{suffix}.json").read_text(encoding="utf-8"))
        _check_text_only(compare, "text+ASTRA", corpus_summary)
        _check_text_only(compare, "paired-only", corpus_summary)
        for lang in LANGUAGES:
            by_lang = {x["language"]: x["error_rate"] for x in main["languages"]}
            assert compare["text+ASTRA"]["error_rate"][lang] == pytest.approx(by_lang[lang])
            assert results_main[decoder]["error_rate"][lang] == pytest.approx(by_lang[lang])
    assert methods["_ctc_beam"]["method"] == "aligner_ctc_beam" and methods["_ctc_beam"]["ctc_weight"] == 0.7
    assert methods["_ctc"]["method"] == "ctc_greedy" and methods["_ctc_lm"]["method"] == "ctc_beam"
    assert methods["_rescore"]["method"] == "ctc_beam_rescore"
    for run in ("main", "paired_only"):  # each model's LM weight and bonus: the best of its validation sweep
        for suffix in ("_ctc_beam_lm", "_ctc_lm", "_rescore"):
            sweep = work / "eval" / f"{run}{suffix}_sweep_validation" / "best.json"
            best = json.loads(sweep.read_text(encoding="utf-8"))
            assert best["split"] == "validation"
            used = json.loads((work / "eval" / f"{run}{suffix}" / "results.json").read_text(encoding="utf-8"))
            assert used["meta"]["lm_weight"] == best["best_lm_weight"]
            assert used["meta"]["length_bonus"] == best["best_length_bonus"]
            if suffix == "_rescore":
                assert used["meta"]["ctc_weight"] == best["best_ctc_weight"]
        # the rescoring keeps CTC beam + LM's LM weight and bonus
        ctc_lm = json.loads((work / "eval" / f"{run}_ctc_lm" / "results.json").read_text(encoding="utf-8"))["meta"]
        rescore = json.loads((work / "eval" / f"{run}_rescore" / "results.json").read_text(encoding="utf-8"))["meta"]
        assert (rescore["lm_weight"], rescore["length_bonus"]) == (ctc_lm["lm_weight"], ctc_lm["length_bonus"])
    for _, decoder in decoders:
        assert f"Paired-only vs text-injected, {decoder}:" in proc.stdout
    assert "| **pooled** |" in proc.stdout
    token_scores = json.loads((work / "text_only_scores.json").read_text(encoding="utf-8"))
    assert sorted(token_scores) == ["paired-only", "text+ASTRA"]
    for entry in token_scores.values():
        assert entry["skipped_spelling"] == 0
        assert entry["skipped_too_long"] == token_scores["paired-only"]["skipped_too_long"] < 10
        assert entry["text_only_pooled"]["tokens"] == token_scores["paired-only"]["text_only_pooled"]["tokens"] > 0
        assert 0 < entry["word_start_pooled"]["tokens"] <= entry["text_only_pooled"]["tokens"]
        for key in ("word_start_pooled", "text_only_pooled", "other_pooled", "other_foreign_pooled"):
            assert 0.0 <= entry[key]["accuracy"] <= 1.0 and _finite(entry[key]["mean_log_prob"])
            assert entry[key]["mean_log_prob"] <= 0.0
        # the probe scores the other tokens that fit the previous utterance's frames
        assert 0 < entry["other_foreign_pooled"]["tokens"] <= entry["other_pooled"]["tokens"]
    assert "Teacher-forced Aligner scores" in proc.stdout

    for png in ("attention.png", "lattice_occupancy.png"):
        data = (work / "plots" / png).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 1000
    json.loads((work / "plots" / "alignment.json").read_text(encoding="utf-8"))

    stages = [line.split("\t")[0] for line in (work / "timings.tsv").read_text().splitlines()]
    assert stages == ["corpus", "tokenizer", "lm", "pretrain", "finetune", "evaluate", "plot", "compare"]

    # a second run skips every stage's work: nothing is retrained or re-evaluated
    stamp = (work / "eval" / "main" / "results.json").stat().st_mtime_ns
    start = time.monotonic()
    again = subprocess.run(["bash", str(RUN_SH), "--quick", "--compare", "--rescore", "--work", str(work)],
                           cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    assert (work / "eval" / "main" / "results.json").stat().st_mtime_ns == stamp
    assert "(skipped)" in again.stderr
    assert time.monotonic() - start < first_seconds / 2
