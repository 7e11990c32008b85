"""Named model sizes, from a CPU-test toy to the papers' settings.

``preset(name, **overrides) -> ModelConfig``. Parameter counts (vocabulary 1024) are in
``docs/model.md``; ``AstraModel.num_parameters()`` reports them per module.
"""

from __future__ import annotations

from dataclasses import replace

from astra.model.config import ModelConfig

PRESETS: dict[str, dict] = {
    # a few hundred thousand parameters: CPU unit tests and the embedded tiny recipe
    "tiny": dict(
        d_model=64, num_heads=2, ff_mult=2, conv_kernel=7, speech_layers=1, text_layers=1, shared_layers=3,
        subsampling_channels=16, pred_dim=64, joint_dim=64, inter_ctc_layer=1,
        rnnt_pred_dim=32, rnnt_joint_dim=64, freq_mask_width=10, time_masks=2, time_mask_width=20,
    ),
    # the ModelConfig defaults (about 10M parameters at V=1024): CPU smoke runs, small FLEURS subsets
    "small": dict(),
    # Aligner-Encoder, LibriSpeech setting of Aligner-Encoders, arXiv:2502.05232: 17 Conformer layers x 512 (~100M);
    # InterCTC at layer 12 of 17 as in Progressive Alignment Objectives, arXiv:2606.24147 (4 speech + 8 shared)
    "aligner_librispeech": dict(
        d_model=512, num_heads=8, ff_mult=4, conv_kernel=31, speech_layers=4, text_layers=2, shared_layers=13,
        subsampling_channels=256, pred_dim=640, joint_dim=640, inter_ctc_layer=8,
        rnnt_pred_dim=512, rnnt_joint_dim=512,
    ),
    # the same with InterAligner ("Progressive Alignment Objectives for Aligner-Encoder based ASR",
    # arXiv:2606.24147) at layer 15 of 17 (shared layer 11)
    "inter_aligner_librispeech": dict(
        d_model=512, num_heads=8, ff_mult=4, conv_kernel=31, speech_layers=4, text_layers=2, shared_layers=13,
        subsampling_channels=256, pred_dim=640, joint_dim=640, inter_ctc_layer=8, inter_aligner_layer=11,
        rnnt_pred_dim=512, rnnt_joint_dim=512,
    ),
    # ASTRA / Maestro-style (ASTRA, arXiv:2406.06664): 6-layer speech encoder, 4-layer text encoder, 18 shared,
    # 2-layer LSTM decoder
    "astra_maestro": dict(
        d_model=512, num_heads=8, ff_mult=4, conv_kernel=31, speech_layers=6, text_layers=4, shared_layers=18,
        subsampling_channels=256, pred_dim=640, pred_layers=2, joint_dim=640, inter_ctc_layer=9,
        rnnt_pred_dim=512, rnnt_joint_dim=512,
    ),
}


def preset(name: str, **overrides) -> ModelConfig:
    """The named :class:`ModelConfig`, with field ``overrides`` applied and validated."""
    if name not in PRESETS:
        raise ValueError(f"unknown model preset {name!r}: use one of {sorted(PRESETS)}")
    cfg = replace(ModelConfig(**PRESETS[name]), **overrides)
    cfg.validate()
    return cfg
