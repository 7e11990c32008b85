"""Training with Hugging Face Accelerate (docs/training.md).

:mod:`.config` ``TrainConfig`` (sections in :mod:`.sections`), :mod:`.trainer` the loop,
:mod:`.schedules` learning rate / loss-weight ramps, :mod:`.checkpoint` atomic checkpoints,
``load_inference_model`` and averaging, :mod:`.signals` graceful stop, :mod:`.validation`
and :mod:`.attention_plot` for watching a run, :mod:`.build` the real model and data.
"""
