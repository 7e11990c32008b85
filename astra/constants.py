"""Facts every layer of astra shares, in one torch-free module (the CLI imports it to build
its parsers without loading torch).

- Special token ids, fixed by the tokenizer (:mod:`astra.data.tokenizer`) and read by the
  model, its losses and every search: ``<blank>`` 0, ``<unk>`` 1, ``<sos>`` 2, ``<eos>`` 3.
- Audio: 16 kHz mono; features (:mod:`astra.features`): 10 ms frame shift, 100 frames/s.
- The decoding methods of ``AstraModel.decode`` (docs/evaluation.md).
"""

from __future__ import annotations

from typing import Literal, get_args

BLANK_ID, UNK_ID, SOS_ID, EOS_ID = 0, 1, 2, 3

SAMPLE_RATE = 16_000  # Hz
FRAME_SHIFT_MS = 10.0
FRAMES_PER_SECOND = 100  # = 1000 / FRAME_SHIFT_MS

DecodeMethod = Literal[
    "aligner_greedy", "aligner_beam", "aligner_ctc_beam", "rnnt_greedy", "rnnt_beam", "ctc_greedy", "ctc_beam",
    "ctc_beam_rescore",
]
DECODE_METHODS: tuple[str, ...] = get_args(DecodeMethod)
# the ones LM fusion applies to
BEAM_METHODS = ("aligner_beam", "aligner_ctc_beam", "rnnt_beam", "ctc_beam", "ctc_beam_rescore")
# the searches whose LM scores the model's C most likely pieces (LmFusion.candidates); the
# other two take the CTC head's candidates
LM_PRE_BEAM_METHODS = ("aligner_beam", "rnnt_beam")
CTC_WEIGHT_METHODS = ("aligner_ctc_beam", "ctc_beam_rescore")  # the ones --ctc-weight applies to
