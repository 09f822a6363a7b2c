"""Typed errors: library code raises these; only the command layer (commands/common.py) turns them
into one line and an exit code.

Each class carries the exit code its kind of failure maps to, so the mapping lives in one place
and a new error cannot be reported with the wrong code by accident.
"""

from __future__ import annotations


class DycokeError(Exception):
    """Base of every error the tool reports to a user; the message is the whole explanation."""

    exit_code = 1


class BadInputError(DycokeError):
    """The user's input cannot be used (bad flag value, unreadable file, malformed record)."""

    exit_code = 2


class VideoError(BadInputError):
    """A video cannot be opened or decoded into the frames asked for."""


class ModelError(BadInputError):
    """A model cannot be resolved or loaded: unknown id, unsupported family, not cached offline."""


class SettingsError(BadInputError):
    """A compression or profiling setting does not parse or is out of range."""


class RuntimeFailure(DycokeError):
    """Something failed while running valid input (out of memory, a crashed worker)."""

    exit_code = 1


class OutputError(RuntimeFailure):
    """A file the tool writes could not be written (a full disk, a size limit, an I/O error)."""


class NetworkError(RuntimeFailure):
    """The network (the Hugging Face Hub) did not answer in time."""


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message, or its type's name when it has none."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def is_out_of_memory(exc: BaseException) -> bool:
    return "out of memory" in str(exc).lower()


def describe(exc: BaseException) -> str:
    """One line for any failure: a DycokeError's own message, an out-of-memory with what to change,
    anything else with its type (the one formatter every command, batch record and benchmark uses)."""
    if isinstance(exc, DycokeError):
        return str(exc)
    if is_out_of_memory(exc):
        return f"out of memory: {first_line(exc)} (try fewer --frames, a --budget, or --quant 4bit)"
    return f"{type(exc).__name__}: {first_line(exc) if str(exc).strip() else 'unexpected failure'}"
