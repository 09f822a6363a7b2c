"""What users hand the tool to read (a questions file, standard input, a chat line, a model's small
files), read with a cap on each piece.

An input that never ends (/dev/zero, `yes | dycoke run -`), a named pipe nobody writes to, or a
10 MB "question" must not grow the process without bound or hang it: files named on the command line
are read only when they are regular files (a pipe or a device is refused before it is opened for
good, so an unconnected FIFO cannot block), and every read stops one byte past its limit. The limits
are far above any real use and documented in README ("Bad input") and the man page:

- one question or chat line: MAX_QUESTION_BYTES (1 MiB of UTF-8, past the context of every supported
  model: Qwen3-VL's 262,144 positions hold about 1 MB of English text);
- one line of a questions file: MAX_LINE_BYTES (4 MiB: a question plus its options and fields);
- a whole questions file, or standard input for `run -`: MAX_QUESTIONS_BYTES (256 MiB);
- a model's configuration and chat template: MAX_CONFIG_BYTES and MAX_TEMPLATE_BYTES; its other
  small files (tokenizer, processor settings): MAX_MODEL_FILE_BYTES.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from typing import BinaryIO, Iterator

from dycoke_cli.errors import BadInputError

MiB = 1 << 20
MAX_QUESTION_BYTES = 1 * MiB
MAX_LINE_BYTES = 4 * MiB
MAX_QUESTIONS_BYTES = 256 * MiB
MAX_CONFIG_BYTES = 16 * MiB
MAX_TEMPLATE_BYTES = 1 * MiB
MAX_MODEL_FILE_BYTES = 512 * MiB
_CHUNK = 64 * 1024


def size_text(limit: int) -> str:
    return f"{limit // MiB} MiB" if limit % MiB == 0 else f"{limit:,} bytes"


def open_regular(path: str | os.PathLike, what: str) -> BinaryIO:
    """`path` opened for reading in binary, refused (BadInputError) unless it is a regular file. Opened
    non-blocking first, so a FIFO without a writer is refused instead of waiting for one."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        raise BadInputError(f"cannot read {what} '{path}': {exc.strerror or exc}") from None
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        kind = "a directory" if stat.S_ISDIR(mode) else "not a regular file (a pipe or a device)"
        hint = "; pipe it in with - instead" if not stat.S_ISDIR(mode) else ""
        raise BadInputError(f"{what} '{path}' is {kind}{hint}")
    os.set_blocking(fd, True)
    return os.fdopen(fd, "rb")


def check_regular(path: str | os.PathLike, limit: int, what: str) -> None:
    """Refuse a file that is not a regular file or is larger than `limit` (links are followed)."""
    try:
        st = os.stat(path)
    except OSError as exc:
        raise BadInputError(f"cannot read {what} '{path}': {exc.strerror or exc}") from None
    if not stat.S_ISREG(st.st_mode):
        raise BadInputError(f"{what} '{path}' is not a regular file")
    if st.st_size > limit:
        raise BadInputError(f"{what} '{path}' is {st.st_size:,} bytes, more than the {size_text(limit)} a "
                            f"{what} may hold")


def read_capped(stream: BinaryIO, limit: int, what: str) -> bytes:
    """All of `stream`, refused once it passes `limit` bytes (at most limit + 1 bytes are read)."""
    data = stream.read(limit + 1)
    if len(data) > limit:
        raise BadInputError(f"{what} is longer than {size_text(limit)}, the limit")
    return data


@dataclass(frozen=True)
class TooLong:
    """A line past the limit, dropped without being held: its length as far as it was read."""

    length: int


def lines(stream: BinaryIO, max_line: int, max_total: int, what: str) -> Iterator[bytes | TooLong]:
    """The lines of `stream` without their line breaks; a line longer than `max_line` comes as TooLong
    (and is not kept), and more than `max_total` bytes in all is BadInputError."""
    total = 0
    while True:
        line = stream.readline(max_line + 1)
        if not line:
            return
        total += len(line)
        if len(line) > max_line and not line.endswith(b"\n"):
            length, total = _skip_line(stream, len(line), total, max_total, what)
            yield TooLong(length)
            continue
        if total > max_total:
            raise BadInputError(f"{what} is longer than {size_text(max_total)}, the limit; split it")
        yield line[:-1] if line.endswith(b"\n") else line


def _skip_line(stream: BinaryIO, length: int, total: int, max_total: int, what: str) -> tuple[int, int]:
    """Read past the rest of an over-long line, in chunks, never holding it."""
    while True:
        if total > max_total:
            raise BadInputError(f"{what} is longer than {size_text(max_total)}, the limit; split it")
        chunk = stream.readline(_CHUNK)
        total += len(chunk)
        length += len(chunk)
        if not chunk or chunk.endswith(b"\n"):
            return length - chunk.endswith(b"\n"), total


def read_line(stream: BinaryIO, limit: int, what: str) -> bytes | TooLong | None:
    """One line of `stream` without its line break; TooLong past `limit`; None at the end of input. The
    rest of an over-long line is skipped, up to MAX_QUESTIONS_BYTES (then BadInputError)."""
    for line in lines(stream, limit, MAX_QUESTIONS_BYTES, what):
        return line
    return None
