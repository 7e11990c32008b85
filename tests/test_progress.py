"""Progress bars: redrawn in place on a terminal, rarely when written to a log file."""

import io
import time

from astra.progress import LOG_COLUMNS, LOG_INTERVAL_SECONDS, is_terminal, progress_bar


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def run_bar(stream, steps: int = 200) -> str:
    with progress_bar(total=steps, file=stream, desc="train", dynamic_ncols=True) as bar:
        for _ in range(steps):
            time.sleep(0.001)
            bar.update(1)
    return stream.getvalue()


def test_log_file_gets_few_redraws_of_fixed_width():
    out = run_bar(io.StringIO())
    # the first draw and the final one; no redraw in between (the loop is far shorter
    # than LOG_INTERVAL_SECONDS)
    assert out.count("\r") <= 3, out
    assert "200/200" in out
    lines = [line for line in out.replace("\r", "\n").splitlines() if line.strip()]
    assert all(len(line) <= LOG_COLUMNS for line in lines), lines


def test_terminal_keeps_frequent_redraws():
    out = run_bar(FakeTerminal(), steps=500)
    assert out.count("\r") > 3  # redrawn about every 0.1 s over the >= 0.5 s loop


def test_explicit_interval_wins():
    bar = progress_bar(total=1, file=io.StringIO(), mininterval=1.0)
    assert bar.mininterval == 1.0 and bar.maxinterval >= 1.0
    bar.close()
    bar = progress_bar(total=1, file=io.StringIO())
    assert bar.mininterval == LOG_INTERVAL_SECONDS
    bar.close()


def test_is_terminal_on_odd_streams():
    assert not is_terminal(object())
    closed = io.StringIO()
    closed.close()
    assert not is_terminal(closed)
    assert is_terminal(FakeTerminal())
