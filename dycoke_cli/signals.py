"""Ctrl-C and SIGTERM: exit status 130 and 143 whenever they land and however many arrive.

Python turns SIGINT into KeyboardInterrupt wherever the main thread is; a second one arriving while
the first unwinds (a lock released, a file closed, an error printed) raises again inside that cleanup,
so the process may end with a traceback or by the signal itself (status -2) instead of 130, and a
SIGTERM ends it without any cleanup at all. So the entry point installs one handler for both:

- the first signal raises at once: KeyboardInterrupt for SIGINT (code that stops on Ctrl-C, such as
  a chat answer, stops), `Terminated` for SIGTERM (a BaseException, so nothing that catches Ctrl-C or
  Exception swallows it);
- later signals are only noted while that stop is being handled, so cleanup runs to its end; a chat
  that handles Ctrl-C and goes on calls `handled()` to take the next one;
- `exit_status(code)` is the status the process ends with: the first signal's (128 + its number)
  when one arrived, else `code`.
`held()` defers both signals around a write that must not be cut (a line of an answers file): a
signal that arrives meanwhile is raised right after the write.

A signal that lands before the entry point has installed the handlers (the interpreter starting, a few
tens of milliseconds) ends the process the default way; one that lands after the command is over and
its status taken (`close()`) is ignored.
"""

from __future__ import annotations

import signal
import threading
from contextlib import contextmanager

SIGINT_STATUS = 128 + signal.SIGINT  # 130
SIGTERM_STATUS = 128 + signal.SIGTERM  # 143
_HANDLED = (signal.SIGINT, signal.SIGTERM)


class Terminated(BaseException):
    """SIGTERM arrived: stop, clean up, exit 143."""


class _State:
    installed = False
    closed = False  # the exit status is being taken: no signal raises any more
    first: int | None = None  # the signal that is stopping the process, None while running
    holding = 0  # depth of held() blocks
    deferred: int | None = None  # a signal that arrived inside held()


def install() -> None:
    """Route SIGINT and SIGTERM through this module (main thread only; idempotent)."""
    if _State.installed or threading.current_thread() is not threading.main_thread():
        return
    for number in _HANDLED:
        signal.signal(number, _on_signal)
    _State.installed = True


def _on_signal(number: int, frame) -> None:
    if _State.closed:
        return
    if _State.first is not None:
        return  # already stopping: let the cleanup finish
    if _State.holding:
        _State.deferred = _State.deferred or number
        return
    _raise(number)


def _raise(number: int) -> None:
    _State.first = number
    if number == signal.SIGTERM:
        raise Terminated()
    raise KeyboardInterrupt()


def handled() -> None:
    """The Ctrl-C just raised was dealt with and the program goes on (a chat answer was stopped)."""
    _State.first = None


def close() -> None:
    """The command is over and its status is about to be taken: signals from now on are ignored (the
    interpreter's own shutdown would otherwise restore the default action and die by the signal)."""
    _State.closed = True
    if _State.installed:
        for number in _HANDLED:
            signal.signal(number, signal.SIG_IGN)


def stopping() -> bool:
    return _State.first is not None


def status_of(exc: BaseException) -> int:
    """The exit status for an exception that stopped a command: 143 for SIGTERM, else 130 (Ctrl-C)."""
    return SIGTERM_STATUS if isinstance(exc, Terminated) else SIGINT_STATUS


def exit_status(code: int) -> int:
    """The status to exit with: the stopping signal's when one arrived, else `code`."""
    if _State.first is None and _State.deferred is not None:
        _State.first = _State.deferred
    if _State.first is None:
        return code
    return 128 + _State.first


@contextmanager
def held():
    """Defer SIGINT and SIGTERM for the block; one that arrived meanwhile is raised at its end. Without
    install() (the library used from Python), SIGINT is blocked in the main thread instead."""
    if not _State.installed:
        with _blocked():
            yield
        return
    _State.holding += 1
    try:
        yield
    finally:
        _State.holding -= 1
    if not _State.holding and _State.deferred is not None and _State.first is None:
        number, _State.deferred = _State.deferred, None
        _raise(number)


@contextmanager
def _blocked():
    if not hasattr(signal, "pthread_sigmask") or threading.current_thread() is not threading.main_thread():
        yield
        return
    signal.pthread_sigmask(signal.SIG_BLOCK, set(_HANDLED))
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, set(_HANDLED))
