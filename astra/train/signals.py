"""Graceful stop: SIGTERM / SIGINT ask the trainer to save a checkpoint and exit.

The first signal only sets a flag that the training loop reads between optimizer steps (so
the checkpoint holds a consistent step); a second SIGINT raises ``KeyboardInterrupt`` at
once for a user who does not want to wait.
"""

from __future__ import annotations

import logging
import signal
import threading

log = logging.getLogger(__name__)


class StopRequest:
    """Install handlers with ``with StopRequest() as stop:``; ``stop.requested`` is the flag."""

    def __init__(self, signals: tuple[int, ...] = (signal.SIGINT, signal.SIGTERM)):
        self.signals = signals
        self.requested: str | None = None  # name of the signal that asked to stop
        self._previous: dict[int, object] = {}

    def _handle(self, signum, frame) -> None:
        name = signal.Signals(signum).name
        if self.requested is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.requested = name
        log.warning("%s received: saving a checkpoint after this step, then stopping", name)

    def request(self, reason: str) -> None:
        """Ask to stop from code (same effect as a signal)."""
        self.requested = reason

    def __enter__(self) -> StopRequest:
        if threading.current_thread() is threading.main_thread():
            for sig in self.signals:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()
