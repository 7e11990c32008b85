#!/usr/bin/env python
"""Compare the RNN-T head's simple and pruned lattices as ASTRA alignments on a trained model.

    python tools/compare_alignment_lattices.py --checkpoint exp/tiny/pretrain --data exp/tiny/corpus
        [--split validation] [--per-language 20]

For each utterance (one at a time, eval mode) the emit-arc occupancy ``gamma [U, T']`` of the
simple (``lm + am``) and of the pruned full-joiner lattice (``model.consistency_alignment``); per
token its argmax frame. Prints a markdown table per language and pooled: tokens, how often the
two argmax frames agree (exactly / within one encoder frame), their mean distance, the mean
peak occupancy of each lattice (1 = the lattice is sure of the frame), and the transcript's
negative log-likelihood per token under each (how well that lattice models the utterance).
"""

from __future__ import annotations

import argparse
import sys
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

LATTICES = ("simple", "pruned")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", required=True, help="checkpoint folder (astra pretrain/finetune output)")
    p.add_argument("--data", required=True, help="local corpus folder")
    p.add_argument("--split", default="validation")
    p.add_argument("--per-language", type=int, default=20, help="utterances per language")
    return p.parse_args(argv)


def main(argv=None) -> int:
    import torch

    import astra.lattice as lattice
    from astra.data.audio import load_audio
    from astra.data.local_corpus import load_local_corpus
    from astra.features import fbank
    from astra.inference import load_model
    from astra.model.rnnt_head import emit_occupancy

    args = parse_args(argv)
    torch.set_num_threads(1)
    loaded = load_model(args.checkpoint)
    model, tokenizer = loaded.model, loaded.tokenizer
    utts = load_local_corpus(args.data, splits=[args.split])
    by_lang = defaultdict(list)
    for u in utts:
        if len(by_lang[u.language]) < args.per_language:
            by_lang[u.language].append(u)
    rows = {}
    pooled = defaultdict(float)
    for lang, items in sorted(by_lang.items()):
        acc = defaultdict(float)
        for u in items:
            ids = tokenizer.encode(u.transcription)
            features = fbank(load_audio(u.path))
            batch = {"features": features[None], "feature_lens": torch.tensor([features.size(0)]),
                     "tokens": torch.tensor([ids]), "token_lens": torch.tensor([len(ids)])}
            with torch.no_grad():
                _, _, layers = model.forward_encoder(batch["features"], batch["feature_lens"],
                                                     (model.cfg.rnnt_layer,))
                frame_lens = model.frame_lengths(batch["feature_lens"])
                enc = layers[model.cfg.rnnt_layer]
                argmax, peak = {}, {}
                for which in LATTICES:
                    px, py, boundary = model.rnnt.lattice(enc, frame_lens, batch["tokens"], batch["token_lens"], which)
                    gamma = emit_occupancy(px, py, boundary)[0]  # [U, T']
                    argmax[which], peak[which] = gamma.argmax(dim=1), gamma.max(dim=1).values
                    nll = -lattice.mutual_information_recursion(px.float(), py.float(), boundary)
                    acc[f"nll/{which}"] += float(nll.sum())
                    acc[f"peak/{which}"] += float(peak[which].sum())
            distance = (argmax["simple"] - argmax["pruned"]).abs()
            acc["tokens"] += len(ids)
            acc["same"] += float((distance == 0).sum())
            acc["within1"] += float((distance <= 1).sum())
            acc["distance"] += float(distance.float().sum())
        rows[lang] = acc
        for k, v in acc.items():
            pooled[k] += v
    rows["pooled"] = pooled
    print(f"checkpoint {args.checkpoint}, split {args.split}, {args.per_language} utterances per language "
          "(distances in encoder frames)")
    print("| language | tokens | same argmax frame | within 1 frame | mean distance | peak simple | peak pruned "
          "| NLL/token simple | NLL/token pruned |")
    print("|---" * 9 + "|")
    for lang, a in rows.items():
        n = max(a["tokens"], 1.0)
        print(f"| {lang} | {int(a['tokens'])} | {a['same'] / n:.1%} | {a['within1'] / n:.1%} | {a['distance'] / n:.2f} "
              f"| {a['peak/simple'] / n:.2f} | {a['peak/pruned'] / n:.2f} | {a['nll/simple'] / n:.2f} "
              f"| {a['nll/pruned'] / n:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
