"""Ctrl-C and SIGTERM: finish the work in hand, then stop, and say how to go on.

A person stops a command with Ctrl-C (SIGINT); a scheduler (Slurm, Kubernetes, systemd, a
``timeout``) stops it with SIGTERM and, some seconds later, SIGKILL. Both mean "stop", so both
are handled alike. Inside :class:`Interrupts` (a batch, an eval, the videos of ``describe`` or
``run``) the first one asks the loop to stop after the current video, or after the current window
of a long one (:func:`stop_requested`, which the window driver checks); a second one stops at
once (:class:`Interrupted`). Either way what was committed is whole, since records, outputs and
progress files are written whole or not at all, and the same command resumes. Outside (decoding
``frames``, scoring ``find``'s windows: nothing there to keep) SIGTERM stops at once, as Ctrl-C
does (:func:`sigterm_stops_at_once`).

The exit code says which signal it was: 128 + its number, as a shell reports a process killed by
it (130 for Ctrl-C, 143 for SIGTERM), so a scheduler's wrapper sees why the job ended.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Callable, Iterator
from typing import Any

STOP_SIGNALS: tuple[signal.Signals, ...] = (signal.SIGINT, signal.SIGTERM)


def exit_code(signum: int) -> int:
    """The exit code of a command stopped by ``signum``: 128 + its number (130, 143)."""
    return 128 + int(signum)


def signal_name(signum: int) -> str:
    return "Ctrl-C" if signum == signal.SIGINT else signal.Signals(signum).name


class Interrupted(KeyboardInterrupt):
    """A stop by a signal that cannot wait: a second one, or one where there is nothing to
    finish. A ``KeyboardInterrupt``, so whatever already stops cleanly on Ctrl-C (``finally``
    blocks, temp files removed) does so on SIGTERM too; ``signum`` gives the exit code."""

    def __init__(self, signum: int = signal.SIGINT) -> None:
        super().__init__(signal_name(signum))
        self.signum = int(signum)


def signum_of(exc: BaseException | None) -> int:
    """The signal behind a ``KeyboardInterrupt`` (Python's own for Ctrl-C carries none)."""
    return getattr(exc, "signum", signal.SIGINT)


def _raise_interrupted(signum: int, frame: object) -> None:
    raise Interrupted(signum)


@contextlib.contextmanager
def sigterm_stops_at_once() -> Iterator[None]:
    """SIGTERM raises :class:`Interrupted` where Ctrl-C raises ``KeyboardInterrupt``, for the
    whole command: Python's default for SIGTERM ends the process on the spot, without the
    ``finally`` blocks that remove temp files and release a batch's lock."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _raise_interrupted)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


_active: list[Interrupts] = []  # innermost last; signals are the process's, so is this


def stop_requested() -> Interrupts | None:
    """The :class:`Interrupts` that was asked to stop, if any: what a loop deep inside a run
    (the windows of a long video) checks after each unit of work it has kept."""
    return _active[-1] if _active and _active[-1].stop else None


class Interrupts:
    """First Ctrl-C or SIGTERM: finish the current video (or window), then stop. Second: abandon
    it now. A signal that arrives while a record is being committed only asks to stop, so no
    record is half-made. ``signum`` is the first signal's, for the exit code."""

    def __init__(self, say: Callable[[str], None], what: str = "video") -> None:
        self.stop = False
        self.committing = False
        self.signum: int = signal.SIGINT
        self._say = say
        self._what = what
        self._previous: dict[int, Any] = {}

    @property
    def exit_code(self) -> int:
        return exit_code(self.signum)

    def __enter__(self) -> Interrupts:
        if threading.current_thread() is threading.main_thread():
            for sig in STOP_SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        _active.append(self)
        return self

    def __exit__(self, *exc: object) -> None:
        _active.remove(self)
        for sig, previous in self._previous.items():
            signal.signal(sig, previous)
        self._previous.clear()

    def _handle(self, signum: int, frame: object) -> None:
        if self.committing or not self.stop:
            if not self.stop:
                self.signum = signum
                again = ("Ctrl-C again" if signum == signal.SIGINT
                         else "a second SIGTERM or Ctrl-C")
                self._say(f"{'interrupt' if signum == signal.SIGINT else 'SIGTERM'}: "
                          f"finishing the current {self._what}, then stopping ({again} to "
                          "abandon it)")
            self.stop = True
            return
        raise Interrupted(signum)

    @contextlib.contextmanager
    def commit(self) -> Iterator[None]:
        self.committing = True
        try:
            yield
        finally:
            self.committing = False
