"""Typed errors: library code raises these, only cli.py turns them into one line and an exit code.

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
