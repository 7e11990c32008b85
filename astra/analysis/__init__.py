"""Alignment analysis: attention statistics (:mod:`.attention_stats`), gradient alignment
(:mod:`.gradient_alignment`) and plots (:mod:`.plots`)."""
