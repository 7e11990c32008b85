"""k2's RNN-T lattice API (same function names and tensor conventions) on three backends.

Legend: B batch, T frames, S symbols (= U tokens), C vocabulary size (= V, blank included).

Lattice: ``px [B, S, T+1]`` emit log-probs (column T = -inf; ``[B, S, T]`` for the modified
RNN-T), ``py [B, S+1, T]`` blank log-probs, ``boundary [B, 4]`` int64
``(s_begin, t_begin, s_end, t_end)``.

Functions::

    mutual_information_recursion(px, py, boundary=None, return_grad=False)
    get_rnnt_logprobs(lm, am, symbols, termination_symbol, boundary=None)
    rnnt_loss(logits, symbols, termination_symbol, boundary=None, reduction="mean")
    rnnt_loss_simple(lm, am, symbols, termination_symbol, boundary=None, ...,
                     return_grad=False, lm_only_scale=0.0, am_only_scale=0.0)
    get_rnnt_prune_ranges(px_grad, py_grad, boundary, s_range)
    do_rnnt_pruning(am, lm, ranges)
    rnnt_loss_pruned(logits, symbols, ranges, termination_symbol, boundary=None, ...)
    rnnt_boundary(symbol_lens, frame_lens)  # -> boundary [B, 4] = (0, 0, S_b, T_b)

Backends (``available_backends()``): ``k2`` (if ``import k2`` works and runs), ``fast_rnnt``
and ``torch`` (pure PyTorch, always there). The best available is used unless
``ASTRA_LATTICE_BACKEND`` or :func:`set_backend` picks one. The lattice construction and
pruning code in ``astra.lattice.rnnt`` is shared; only the recursion differs.
"""

from astra.lattice.backends import (
    BACKEND_NAMES,
    BackendUnavailableError,
    available_backends,
    backend_name,
    set_backend,
)
from astra.lattice.rnnt import (
    do_rnnt_pruning,
    get_rnnt_logprobs,
    get_rnnt_logprobs_joint,
    get_rnnt_logprobs_pruned,
    get_rnnt_logprobs_smoothed,
    get_rnnt_prune_ranges,
    mutual_information_recursion,
    rnnt_boundary,
    rnnt_loss,
    rnnt_loss_pruned,
    rnnt_loss_simple,
    rnnt_loss_smoothed,
)

__all__ = [
    "BACKEND_NAMES",
    "BackendUnavailableError",
    "available_backends",
    "backend_name",
    "set_backend",
    "mutual_information_recursion",
    "get_rnnt_logprobs",
    "get_rnnt_logprobs_joint",
    "get_rnnt_logprobs_smoothed",
    "get_rnnt_logprobs_pruned",
    "rnnt_loss",
    "rnnt_loss_simple",
    "rnnt_loss_smoothed",
    "get_rnnt_prune_ranges",
    "do_rnnt_pruning",
    "rnnt_loss_pruned",
    "rnnt_boundary",
]
