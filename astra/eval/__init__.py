"""Evaluation: WER/CER metrics (:mod:`.metrics`), reports (:mod:`.report`), decoding loops
(:mod:`.evaluate`) and file transcription (:mod:`.transcribe`)."""
