"""Standard output that went away: a reader that stopped reading (`dycoke methods --json | head -1`),
a full device (`> /dev/full`), an I/O error.

Python ignores SIGPIPE, so a closed pipe surfaces as BrokenPipeError on the next write, and again when
the interpreter flushes stdout on its way out ("Exception ignored ... BrokenPipeError"). What the
reader wanted it already has, so the command ends quietly with the status a shell shows for a
program ended by SIGPIPE, 141 (128 + 13): what `yes | head -1` gives `yes`, so `set -o pipefail`
scripts see the usual value. Any other failure to write stdout lost output the user asked for: one
line on stderr and exit status 1. Either way stdout is then pointed at /dev/null, so nothing is
written (or fails) again.
"""

from __future__ import annotations

import errno
import os
import sys

PIPE_CLOSED_STATUS = 128 + 13  # 141, as for a program ended by SIGPIPE


class StdoutError(Exception):
    """Writing standard output failed; `errno` says why. Passed up to the entry point untouched."""

    def __init__(self, cause: OSError):
        super().__init__(cause.strerror or str(cause))
        self.errno = cause.errno


class _Guarded:
    """sys.stdout whose write and flush failures are StdoutError: click handles an OSError from its own
    output (--help into a closed pipe) by exiting 1 on its own, which would hide what happened."""

    def __init__(self, stream):
        self._stream = stream

    def write(self, text):
        try:
            return self._stream.write(text)
        except OSError as exc:
            raise StdoutError(exc) from None

    def flush(self):
        try:
            return self._stream.flush()
        except OSError as exc:
            raise StdoutError(exc) from None

    def __getattr__(self, name):
        return getattr(self._stream, name)


def guard() -> None:
    """Route every write to sys.stdout through _Guarded (the entry point calls this once)."""
    if not isinstance(sys.stdout, _Guarded) and sys.stdout is not None:
        sys.stdout = _Guarded(sys.stdout)


def write(text: str) -> None:
    """Write and flush `text` to stdout, StdoutError when stdout cannot take it."""
    try:
        sys.stdout.write(text)
        sys.stdout.flush()
    except OSError as exc:
        raise StdoutError(exc) from None  # (under guard() the stream raises StdoutError itself)


def failed(exc: OSError | StdoutError) -> int:
    """Silence stdout for good and return the exit status for this failure (one line for all but EPIPE)."""
    _silence()
    if exc.errno == errno.EPIPE:
        return PIPE_CLOSED_STATUS
    from dycoke_cli import render

    reason = exc.strerror if isinstance(exc, OSError) else str(exc)
    render.error(f"cannot write to standard output: {reason or 'I/O error'}")
    return 1


def settle() -> int | None:
    """Flush what stdout still holds; the failure's status if that fails, else None."""
    try:
        sys.stdout.flush()
    except (OSError, StdoutError) as exc:
        return failed(exc)
    except ValueError:  # stdout already closed by the program
        return None
    return None


def _silence() -> None:
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError, AttributeError):
        pass  # no real descriptor behind stdout (a test's capture): nothing to silence
