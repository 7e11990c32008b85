"""tqdm progress bars that stay readable when stderr is a log file, not a terminal.

On a terminal a bar redraws itself in place ~10 times a second. Written to a file (CI logs,
``nohup``, ``> run.log 2>&1``) every redraw is kept, so a 30-minute run would leave tens of
thousands of carriage-return updates on one line; there the bar redraws at most every
``LOG_INTERVAL_SECONDS`` and with a fixed width instead.
"""

from __future__ import annotations

import sys
from typing import Any

LOG_INTERVAL_SECONDS = 30.0
LOG_COLUMNS = 100


def is_terminal(stream: Any) -> bool:
    """True if ``stream`` is an interactive terminal."""
    isatty = getattr(stream, "isatty", None)
    try:
        return bool(isatty()) if callable(isatty) else False
    except ValueError:  # closed stream
        return False


def progress_bar(**kwargs: Any):
    """``tqdm(**kwargs)``, redrawn every ``LOG_INTERVAL_SECONDS`` at most when the output
    stream (``file``, default stderr) is not a terminal; explicit arguments win."""
    from tqdm import tqdm

    stream = kwargs.get("file") or sys.stderr
    if not is_terminal(stream):
        kwargs.setdefault("mininterval", LOG_INTERVAL_SECONDS)
        kwargs.setdefault("maxinterval", max(LOG_INTERVAL_SECONDS, kwargs["mininterval"]))
        kwargs["dynamic_ncols"] = False
        kwargs.setdefault("ncols", LOG_COLUMNS)
    return tqdm(**kwargs)
