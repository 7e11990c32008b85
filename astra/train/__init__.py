"""Training with Hugging Face Accelerate (docs/training.md).

:mod:`.config` ``TrainConfig`` (sections in :mod:`.sections`), :mod:`.trainer` the loop,
:mod:`.schedules` learning rate / loss-weight ramps, :mod:`.checkpoint` atomic checkpoints
and averaging (inference loading: :mod:`astra.inference`), :mod:`.signals` graceful stop, :mod:`.validation`
and :mod:`.attention_plot` for watching a run, :mod:`.build` the real model and data.
"""
