"""Progress of long stages: a tqdm bar on a terminal, a few plain lines in a log.

:func:`progress_bar` is the one helper every long loop of noiseforge uses:

- stderr is a terminal: a tqdm bar (removed when the stage ends);
- stderr is a file or a pipe (a log, CI): one line when the stage starts, at most
  one status line every ``$NOISEFORGE_PROGRESS_INTERVAL`` seconds (default 10; 0
  reports every update) and one line when it ends -- never the carriage-return
  frames a bar redraws, which would fill a log with thousands of them;
- ``$NOISEFORGE_PROGRESS=0`` (or ``enabled=False``): nothing at all.
"""

from __future__ import annotations

import math
import os
import sys
import time
from collections.abc import Iterable, Iterator
from typing import Any, TextIO

ENV_ENABLED = "NOISEFORGE_PROGRESS"
ENV_INTERVAL = "NOISEFORGE_PROGRESS_INTERVAL"
DEFAULT_INTERVAL = 10.0
_OFF = ("0", "false", "no", "off")
_ON = ("", "1", "true", "yes", "on")


def enabled_by_environment() -> bool:
    """False when ``$NOISEFORGE_PROGRESS`` turns progress reports off (0, false, no, off)."""
    value = os.environ.get(ENV_ENABLED, "").strip().lower()
    if value not in _OFF + _ON:
        raise ValueError(
            f"{ENV_ENABLED}={os.environ[ENV_ENABLED]!r}: set it to 0 (no progress reports) "
            "or 1, or unset it"
        )
    return value not in _OFF


def interval() -> float:
    """Seconds between two status lines in a log (``$NOISEFORGE_PROGRESS_INTERVAL``)."""
    text = os.environ.get(ENV_INTERVAL, "").strip()
    if not text:
        return DEFAULT_INTERVAL
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value >= 0):
        raise ValueError(
            f"{ENV_INTERVAL}={os.environ[ENV_INTERVAL]!r}: set it to a number of seconds >= 0 "
            f"(default {DEFAULT_INTERVAL:g}), or unset it"
        )
    return value


def check_environment() -> None:
    """Raise ValueError (one line naming the fix) for a bad progress setting."""
    enabled_by_environment()
    interval()


def _is_terminal(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError, OSError):  # no isatty, or a closed stream
        return False


def progress_bar(
    iterable: Iterable | None = None,
    *,
    total: int | None = None,
    desc: str = "working",
    enabled: bool = True,
    unit: str = "",
    initial: int = 0,
):
    """A progress report for one stage.

    Iterate over the result (when ``iterable`` is given) or call ``update(n)``, then
    ``close()`` (iterating to the end closes it; it is a context manager too).
    ``set_postfix_str(text)`` adds a note such as ``"epoch 2/4"``. ``total`` defaults
    to ``len(iterable)`` when it has one; ``initial`` is work already done (a resumed
    stage).
    """
    if total is None and iterable is not None:
        try:
            total = len(iterable)  # type: ignore[arg-type]
        except TypeError:
            total = None
    if not enabled or not enabled_by_environment():
        return _Silent(iterable, initial)
    stream = sys.stderr
    if _is_terminal(stream):
        try:
            from tqdm.auto import tqdm
        except ImportError:
            pass
        else:
            return tqdm(
                iterable,
                total=total,
                desc=desc,
                unit=unit or "it",
                initial=initial,
                leave=False,
                file=stream,
                dynamic_ncols=True,
            )
    return _Lines(iterable, total, desc, unit, initial, stream, interval())


class _Silent:
    """What a disabled report is: it counts and iterates, and prints nothing."""

    def __init__(self, iterable: Iterable | None, initial: int = 0) -> None:
        self.iterable = iterable
        self.n = initial

    def __iter__(self) -> Iterator:
        if self.iterable is None:
            raise TypeError("this progress report was made without an iterable")
        for item in self.iterable:
            yield item
            self.n += 1

    def update(self, n: int = 1) -> None:
        self.n += n

    def set_postfix_str(self, text: str = "", refresh: bool = True) -> None:
        pass

    def set_description(self, desc: str | None = None, refresh: bool = True) -> None:
        pass

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _duration(seconds: float) -> str:
    seconds = max(0.0, seconds)
    if seconds < 60:
        return f"{seconds:.0f} s" if seconds >= 10 else f"{seconds:.1f} s"
    minutes, s = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {s:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


class _Lines(_Silent):
    """A report for a log: a start line, a status line at most every ``every`` seconds,
    an end line; each a whole line, flushed."""

    def __init__(
        self,
        iterable: Iterable | None,
        total: int | None,
        desc: str,
        unit: str,
        initial: int,
        stream: TextIO,
        every: float,
        clock=time.monotonic,
    ) -> None:
        super().__init__(iterable, initial)
        self.total, self.desc, self.unit = total, desc, unit
        self.stream, self.every, self.clock = stream, every, clock
        self.postfix = ""
        self.closed = False
        self.start = self.last = clock()
        self.initial = initial
        if total is None:
            what = "started"
        elif initial:
            what = f"started at {self._count()}"
        else:
            what = f"started, {total} {unit}".rstrip()
        self._line(what)

    def _count(self) -> str:
        unit = f" {self.unit}" if self.unit else ""
        if self.total is None:
            return f"{self.n}{unit}"
        pct = f" ({100 * self.n / self.total:.0f} %)" if self.total else ""
        return f"{self.n}/{self.total}{unit}{pct}"

    def _line(self, text: str) -> None:
        note = f", {self.postfix}" if self.postfix and not self.closed else ""
        try:
            print(f"{self.desc}: {text}{note}", file=self.stream, flush=True)
        except (OSError, ValueError):  # a closed or broken stream: progress is not worth a crash
            pass

    def __iter__(self) -> Iterator:
        try:
            for item in super().__iter__():
                yield item
                self._maybe_report()
        finally:
            self.close()

    def update(self, n: int = 1) -> None:
        self.n += n
        self._maybe_report()

    def _maybe_report(self) -> None:
        now = self.clock()
        if self.closed or now - self.last < self.every:
            return
        self.last = now
        elapsed = now - self.start
        text = f"{self._count()} after {_duration(elapsed)}"
        done = self.n - self.initial
        if self.total and 0 < done and self.n < self.total:
            text += f", about {_duration(elapsed / done * (self.total - self.n))} left"
        self._line(text)

    def set_postfix_str(self, text: str = "", refresh: bool = True) -> None:
        self.postfix = text

    def set_description(self, desc: str | None = None, refresh: bool = True) -> None:
        if desc:
            self.desc = desc

    def close(self) -> None:
        if self.closed:
            return
        elapsed = _duration(self.clock() - self.start)
        finished = self.total is None or self.n >= self.total
        self.closed = True
        if finished:
            unit = f" {self.unit}" if self.unit else ""
            self._line(f"done, {self.n}{unit} in {elapsed}")
        else:
            self._line(f"stopped at {self._count()} after {elapsed}")
