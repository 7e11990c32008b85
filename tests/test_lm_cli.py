"""``astra lm train`` end to end, and the ``--lm`` flags of ``astra evaluate`` / ``astra
transcribe`` on a tiny checkpoint (sweep, results.json, bad input as one-line errors)."""

from __future__ import annotations

import json
import math

import pytest

from astra.cli import main

TEXT = {
    "en_us": ["the cat sat on the mat", "the dog sat on the log", "a cat and a dog", "the mat is red"],
    "fr_fr": ["le chat est sur le tapis", "le chien est sur le tapis", "un chat et un chien"],
}


@pytest.fixture(scope="module")
def tokenizer_and_text(tmp_path_factory):
    from astra.data.tokenizer import TokenizerTrainConfig, train_tokenizer

    root = tmp_path_factory.mktemp("lm")
    sentences = {lang: lines * 3 for lang, lines in TEXT.items()}
    train_tokenizer(sentences, root / "tok.model", TokenizerTrainConfig(vocab_size=40, alpha=1.0))
    files = []
    for lang, lines in TEXT.items():
        (root / f"{lang}.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
        files.append(f"{lang}={root / f'{lang}.txt'}")
    return root, root / "tok.model", files


def test_lm_train_end_to_end(tokenizer_and_text, capsys):
    from astra.data.tokenizer import Tokenizer
    from astra.lm import build_fusion
    from astra.lm.arpa import read_arpa
    from astra.lm.lm_dir import file_sha256

    root, tok, files = tokenizer_and_text
    out = root / "lm"
    args = ["lm", "train", "--tokenizer", str(tok), "--order", "4", "--out", str(out)]
    for f in files:
        args += ["--text", f]
    assert main(args) == 0
    assert "wrote" in capsys.readouterr().out
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["order"] == 4 and manifest["tokenizer_sha256"] == file_sha256(tok)
    assert set(manifest["languages"]) == set(TEXT)
    tokenizer = Tokenizer(tok)
    for lang, info in manifest["languages"].items():
        arpa = read_arpa(out / info["arpa"])
        assert arpa.order == 4 and arpa.counts == info["ngrams"] and info["sentences"] == len(TEXT[lang])
        assert info["pieces"] == sum(len(tokenizer.encode(s)) for s in TEXT[lang])
    # the LM prefers its own language's sentences (per-language models)
    fusion = build_fusion(out, tokenizer, weight=1.0)
    assert fusion.pre_beam(4) == 8 and build_fusion(out, tokenizer, weight=1.0, candidates=5).pre_beam(4) == 5
    scorer = fusion.scorer

    def logp(lang: str, text: str) -> float:
        import torch

        state, total = scorer.start([lang]), 0.0
        for token in [*tokenizer.encode(text), tokenizer.eos_id]:
            lp, nxt = scorer.score_tokens(state, torch.tensor([[token]]))
            total += float(lp[0, 0])
            state = nxt[:, 0]
        return total

    assert logp("en_us", "the cat sat on the log") > logp("fr_fr", "the cat sat on the log")
    assert logp("fr_fr", "le chat est sur le tapis") > logp("en_us", "le chat est sur le tapis")
    assert math.isfinite(logp("en_us", "zzz unseen words"))


def test_lm_train_bad_input_is_one_line_errors(tokenizer_and_text, tmp_path, capsys):
    root, tok, files = tokenizer_and_text
    assert main(["lm", "train", "--tokenizer", str(tok), "--out", str(tmp_path / "x")]) == 2
    assert "give the text" in capsys.readouterr().err
    assert main(["lm", "train", "--tokenizer", str(tmp_path / "none.model"), "--text", files[0],
                 "--out", str(tmp_path / "x")]) == 2
    assert "tokenizer model not found" in capsys.readouterr().err
    assert main(["lm", "train", "--tokenizer", str(tok), "--text", files[0], "--order", "0",
                 "--out", str(tmp_path / "x")]) == 2
    assert "--order must be >= 1" in capsys.readouterr().err


def test_loading_checks_tokenizer_manifest_and_languages(tokenizer_and_text, tmp_path):
    from astra.data.tokenizer import Tokenizer, TokenizerTrainConfig, train_tokenizer
    from astra.lm import build_fusion

    root, tok, files = tokenizer_and_text
    out = root / "lm_checks"
    assert main(["lm", "train", "--tokenizer", str(tok), "--text", files[0], "--order", "3", "--out", str(out)]) == 0
    other = train_tokenizer({"en_us": TEXT["en_us"] * 3}, tmp_path / "other.model",
                            TokenizerTrainConfig(vocab_size=30, alpha=1.0))
    with pytest.raises(ValueError, match="built with another tokenizer"):
        build_fusion(out, other, 0.3)
    with pytest.raises(ValueError, match="no model for language"):
        build_fusion(out, Tokenizer(tok), 0.3, languages=["fr_fr"])
    (out / "en_us.arpa").write_text("\\data\\\nngram 1=3\n", encoding="utf-8")
    with pytest.raises(ValueError, match="not a complete ARPA"):
        build_fusion(out, Tokenizer(tok), 0.3)
    (out / "manifest.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(ValueError, match="not valid JSON"):
        build_fusion(out, Tokenizer(tok), 0.3)
    with pytest.raises(ValueError, match="LM folder not found"):
        build_fusion(tmp_path / "missing", Tokenizer(tok), 0.3)


def test_built_scorer_is_cached_and_rebuilt_when_an_arpa_changes(tokenizer_and_text, tmp_path, monkeypatch, caplog):
    import torch

    from astra.data.tokenizer import Tokenizer
    from astra.lm import lm_dir, ngram_scorer

    root, tok, files = tokenizer_and_text
    out, tokenizer = tmp_path / "lm", Tokenizer(tok)
    assert main(["lm", "train", "--tokenizer", str(tok), "--text", files[0], "--order", "3", "--out", str(out)]) == 0
    built = lm_dir.load_lm(out, tokenizer)
    (cache,) = out.glob("scorer-*.pt")
    states, tokens = built.start(["en_us"] * 2), torch.tensor([tokenizer.encode("the cat")[:2]] * 2)

    def no_build(*args, **kwargs):
        raise AssertionError("built from the ARPA files, not read from the cache")

    with monkeypatch.context() as m:
        m.setattr(ngram_scorer.NgramScorer, "__init__", no_build)
        cached = lm_dir.load_lm(out, tokenizer)
    for got, want in zip(cached.score_tokens(states, tokens), built.score_tokens(states, tokens), strict=True):
        assert torch.equal(got, want)
    cache.write_bytes(b"not a torch file")
    with caplog.at_level("WARNING"):
        assert torch.equal(lm_dir.load_lm(out, tokenizer).arc_keys, built.arc_keys)
    assert "unreadable" in caplog.text and torch.load(cache, weights_only=True)["order"] == 3
    # a changed ARPA file has another key, so a stale cache is never read; `lm train` removes them
    (out / "en_us.arpa").write_text((out / "en_us.arpa").read_text() + "\n", encoding="utf-8")
    assert lm_dir.load_lm(out, tokenizer).order == 3 and len(list(out.glob("scorer-*.pt"))) == 2
    assert main(["lm", "train", "--tokenizer", str(tok), "--text", files[0], "--order", "2", "--out", str(out)]) == 0
    assert not list(out.glob("scorer-*.pt")) and lm_dir.load_lm(out, tokenizer).order == 2
    # a folder that cannot be written: the LM still loads, with a warning
    for path in out.glob("scorer-*.pt"):
        path.unlink()
    caplog.clear()

    def read_only(*args, **kwargs):
        raise OSError("read-only file system")

    monkeypatch.setattr(torch, "save", read_only)
    with caplog.at_level("WARNING"):
        assert lm_dir.load_lm(out, tokenizer).order == 2
    assert "not cached" in caplog.text and not list(out.glob("scorer-*"))


# --- on a tiny checkpoint --------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_lm(tmp_path_factory):
    from tiny_eval_checkpoint import LANGUAGES, one_thread, tiny_setup

    tiny = tiny_setup(tmp_path_factory)
    root = tmp_path_factory.mktemp("tiny_lm")
    args = ["lm", "train", "--tokenizer", str(tiny.checkpoint / "tokenizer.model"), "--corpus", str(tiny.corpus),
            "--order", "3", "--out", str(root / "lm")]
    with one_thread():
        assert main(args) == 0
        only_en = ["lm", "train", "--tokenizer", str(tiny.checkpoint / "tokenizer.model"), "--corpus",
                   str(tiny.corpus), "--languages", LANGUAGES[0], "--out", str(root / "lm_en")]
        assert main(only_en) == 0
    return tiny, root


def _evaluate(tiny, out, *extra):
    return main(["evaluate", "--checkpoint", str(tiny.checkpoint), "--data", str(tiny.corpus),
                 "--output-dir", str(out), "--no-progress", *extra])


@pytest.mark.slow
def test_evaluate_with_lm_sweep_and_weight_zero(tiny_lm, tmp_path, capsys):
    from tiny_eval_checkpoint import one_thread

    from astra.eval.report import read_hyps_tsv

    tiny, root = tiny_lm
    lm = str(root / "lm")
    with one_thread():
        assert _evaluate(tiny, tmp_path / "plain", "--method", "aligner_beam", "--split", "train") == 0
        assert _evaluate(tiny, tmp_path / "zero", "--method", "aligner_beam", "--split", "train",
                         "--lm", lm, "--lm-weight", "0", "--lm-candidates", "3") == 0
        capsys.readouterr()
        assert _evaluate(tiny, tmp_path / "sweep", "--method", "aligner_ctc_beam", "--split", "train",
                         "--lm", lm, "--lm-weight", "0.1,2", "--length-bonus", "0,0.2", "--ilm-weight", "0.1") == 0
    plain = {h["key"]: h["hypothesis"] for h in read_hyps_tsv(tmp_path / "plain" / "hyps.tsv")}
    zero = {h["key"]: h["hypothesis"] for h in read_hyps_tsv(tmp_path / "zero" / "hyps.tsv")}
    assert zero == plain
    meta = json.loads((tmp_path / "zero" / "results.json").read_text())["meta"]
    assert meta["lm"] == lm and meta["lm_weight"] == 0.0 and meta["lm_sweep"] is None and meta["lm_candidates"] == 3
    last = capsys.readouterr().out.strip().splitlines()[-1]
    best = json.loads(last)
    data = json.loads((tmp_path / "sweep" / "results.json").read_text())
    sweep = data["meta"]["lm_sweep"]
    pairs = [(row["lm_weight"], row["length_bonus"]) for row in sweep]
    assert pairs == [(0.1, 0.0), (0.1, 0.2), (2.0, 0.0), (2.0, 0.2)]
    assert best["best_lm_weight"] == data["meta"]["lm_weight"]
    assert best["best_length_bonus"] == data["meta"]["length_bonus"]
    assert best["pooled_error_rate"] == min(row["pooled_error_rate"] for row in sweep)
    assert data["pooled"]["error_rate"] == pytest.approx(best["pooled_error_rate"])
    assert data["meta"]["ilm_weight"] == 0.1
    assert data["meta"]["lm_candidates"] is None  # the joint search takes CTC's candidates


@pytest.mark.slow
@pytest.mark.parametrize("extra, message", [
    (["--method", "aligner_beam", "--lm", "{lm_en}"], "no model for language(s) cmn_hans_cn"),
    (["--method", "aligner_beam", "--lm", "{lm}", "--lm-weight", "-0.5"], "--lm-weight must be >= 0"),
    (["--method", "aligner_beam", "--lm", "{lm}", "--lm-weight", "x"], "--lm-weight must be numbers"),
    (["--method", "aligner_greedy", "--lm", "{lm}"], "--lm needs a beam search"),
    (["--method", "rnnt_beam", "--lm", "{lm}", "--ilm-weight", "0.2"], "--ilm-weight is for the Aligner"),
    (["--method", "aligner_beam", "--lm", "{lm}", "--lm-weight", "0.1,0.2"], "run it on a validation split"),
    (["--method", "aligner_beam", "--lm", "{lm}", "--length-bonus", "0,0.5"], "run it on a validation split"),
    (["--method", "aligner_beam", "--lm", "{lm}", "--length-bonus", "x"], "--length-bonus must be numbers"),
    (["--method", "aligner_beam", "--lm", "{lm}", "--length-bonus", "nan"], "--length-bonus must be finite"),
    (["--method", "aligner_beam", "--lm", "{missing}"], "LM folder not found"),
    (["--method", "aligner_beam", "--lm", "{lm}", "--lm-candidates", "0"], "--lm-candidates must be >= 1"),
    (["--method", "ctc_beam", "--lm", "{lm}", "--lm-candidates", "4"], "takes the CTC head's candidates"),
    (["--method", "aligner_beam", "--lm-candidates", "4"], "need --lm DIR"),
    (["--method", "aligner_beam", "--length-bonus", "0.5"], "need --lm DIR"),
    (["--method", "aligner_beam", "--ctc-weight", "0.3,0.5"], "several --ctc-weight values sweep"),
    (["--method", "ctc_beam_rescore", "--ctc-weight", "0.3,0.5"], "run it on a validation split"),
    (["--method", "ctc_beam_rescore", "--ctc-weight", "2"], "--ctc-weight must be in [0, 1]"),
])
def test_evaluate_lm_bad_input(tiny_lm, tmp_path, capsys, extra, message):
    tiny, root = tiny_lm
    paths = {"lm": root / "lm", "lm_en": root / "lm_en", "missing": tmp_path / "missing"}
    extra = [e.format(**paths) for e in extra]
    assert _evaluate(tiny, tmp_path / "out", *extra) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1


@pytest.mark.slow
def test_evaluate_sweeps_the_rescoring_ctc_weight_with_the_lm_weights(tiny_lm, tmp_path, capsys):
    from tiny_eval_checkpoint import one_thread

    tiny, root = tiny_lm
    with one_thread():
        capsys.readouterr()
        assert _evaluate(tiny, tmp_path / "s", "--method", "ctc_beam_rescore", "--beam", "3", "--split", "train",
                         "--lm", str(root / "lm"), "--lm-weight", "0.1,0.5", "--ctc-weight", "0.5,1") == 0
    best = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    meta = json.loads((tmp_path / "s" / "results.json").read_text())["meta"]
    points = [(row["lm_weight"], row["ctc_weight"]) for row in meta["lm_sweep"]]
    assert points == [(0.1, 0.5), (0.1, 1.0), (0.5, 0.5), (0.5, 1.0)]
    chosen = min(meta["lm_sweep"], key=lambda row: row["pooled_error_rate"])
    assert (best["best_lm_weight"], best["best_ctc_weight"]) == (chosen["lm_weight"], chosen["ctc_weight"])
    assert meta["ctc_weight"] == best["best_ctc_weight"] and meta["method"] == "ctc_beam_rescore"


@pytest.mark.slow
def test_evaluate_rnnt_beam_with_lm(tiny_lm, tmp_path):
    from tiny_eval_checkpoint import one_thread

    tiny, root = tiny_lm
    with one_thread():
        assert _evaluate(tiny, tmp_path / "r", "--method", "rnnt_beam", "--lm", str(root / "lm"),
                         "--lm-weight", "0.3") == 0
    meta = json.loads((tmp_path / "r" / "results.json").read_text())["meta"]
    assert meta["method"] == "rnnt_beam" and meta["lm_weight"] == 0.3


@pytest.mark.slow
def test_transcribe_with_lm(tiny_lm, capsys):
    from tiny_eval_checkpoint import one_thread

    tiny, root = tiny_lm
    with one_thread():
        assert main(["transcribe", str(tiny.audio), "--checkpoint", str(tiny.checkpoint), "--method", "aligner_beam",
                     "--lm", str(root / "lm"), "--lm-weight", "0.3", "--lm-language", "en_us", "--json"]) == 0
        items = json.loads(capsys.readouterr().out)
        assert items[0]["method"] == "aligner_beam + LM en_us (weight 0.3)"
        assert main(["transcribe", str(tiny.audio), "--checkpoint", str(tiny.checkpoint), "--method", "aligner_beam",
                     "--lm", str(root / "lm")]) == 2
        assert "choose one with --lm-language" in capsys.readouterr().err
        assert main(["transcribe", str(tiny.audio), "--checkpoint", str(tiny.checkpoint), "--method", "aligner_beam",
                     "--lm", str(root / "lm"), "--lm-language", "en_us", "--length-bonus", "0,1"]) == 2
    assert "one --lm-weight and one --length-bonus" in capsys.readouterr().err
    assert main(["transcribe", str(tiny.audio), "--checkpoint", str(tiny.checkpoint), "--method", "ctc_beam_rescore",
                 "--ctc-weight", "0.3,0.5"]) == 2
    assert "--ctc-weight takes one weight here" in capsys.readouterr().err
