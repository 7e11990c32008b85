"""Training with Hugging Face Accelerate (docs/training.md, "The parts of a run").

:mod:`.trainer` the loop over steps; :mod:`.setup` Accelerate, ``--init``, freezing, CMVN,
optimizer; :mod:`.batches` this process's batches, epoch after epoch; :mod:`.objective` loss
weights, ramps, which losses run; :mod:`.step` one optimizer step; :mod:`.report` logging;
:mod:`.hooks` validation, attention plots, alignment statistics every N steps
(:mod:`.validation`, :mod:`.attention_plot`); :mod:`.state` the saved counters and the run's
checkpoints; :mod:`.checkpoint` the checkpoint folders, retention and averaging (inference
loading: :mod:`astra.inference`); :mod:`.schedules` learning rate / ramps; :mod:`.signals`
graceful stop; :mod:`.config` / :mod:`.sections` ``TrainConfig``; :mod:`.build` the real
model and data; :mod:`.vocabulary` fine-tuning on a new tokenizer.
"""
