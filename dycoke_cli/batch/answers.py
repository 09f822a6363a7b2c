"""The answers file: crash-safe appends, reading back with repair, and merging shard files.

Why it is built this way: a run over a large set may be killed at any moment (OOM killer, a preempted
Slurm job, Ctrl-C) and must lose at most the record in flight. So:

- each answer is one line, written with a single `os.write` on an O_APPEND descriptor, then fsynced
  before the next record starts; Ctrl-C is held back (SIGINT blocked) while a line is written, so an
  interrupt never leaves half a line;
- a kill during the write can still leave a torn last line (a power cut, a short write): on opening
  for append the file is checked, and a tail without its newline, or any line that is not a JSON
  object, is dropped by rewriting the file atomically (temporary file, fsync, rename). Readers that do
  not own a file (resume peeking at a shard, `dycoke merge`) skip such lines without touching it;
- whole-file rewrites (repair, dropping failures for --retry-failed, merging) go through the same
  temporary-file-and-rename, so a file on disk is always either the old or the new version.

Ids are compared through `id_key` (their JSON text), so the id 3 and the id "3" stay different.
"""

from __future__ import annotations

import json
import os
import signal
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterable


def id_key(record_id) -> str:
    return json.dumps(record_id, sort_keys=True)


def is_failure(line: dict) -> bool:
    return "error" in line


def tagged(path: Path, tag: str) -> Path:
    """answers.jsonl + "shard-0-of-4" -> answers.shard-0-of-4.jsonl (a sibling, same suffix)."""
    return path.with_name(f"{path.stem}.{tag}{path.suffix}") if path.suffix else path.with_name(f"{path.name}.{tag}")


def read_lines(path: Path) -> tuple[list[dict], int]:
    """The complete JSON-object lines of `path` ([] if it does not exist) and how many were unusable."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return [], 0
    lines, bad = [], 0
    complete, _, tail = data.rpartition(b"\n")
    for raw in complete.split(b"\n") if complete else []:
        obj = _parse(raw)
        if obj is None:
            bad += 1
        else:
            lines.append(obj)
    return lines, bad + (1 if tail.strip() else 0)


def _parse(raw: bytes) -> dict | None:
    try:
        obj = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None
    return obj if isinstance(obj, dict) and "id" in obj else None


def _temporary(path: Path) -> Path:
    return path.with_name(f".{path.name}.tmp")


def rewrite(path: Path, lines: Iterable[dict]) -> None:
    """Replace `path` by exactly `lines`, atomically."""
    temporary = _temporary(path)
    with open(temporary, "wb") as f:
        f.write(b"".join(_encode(line) for line in lines))
        f.flush()
        os.fsync(f.fileno())
    os.replace(temporary, path)
    _fsync_folder(path.parent)


def _encode(line: dict) -> bytes:
    return (json.dumps(line, ensure_ascii=False) + "\n").encode("utf-8")


def _fsync_folder(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # not possible on every platform; the rename itself is still atomic
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def repair(path: Path, keep: Callable[[dict], bool] = lambda line: True) -> tuple[list[dict], int]:
    """Make `path` hold only complete lines that pass `keep`; returns them and the count of torn or
    corrupt lines dropped. Only the writer of a file may call this."""
    _temporary(path).unlink(missing_ok=True)  # a rewrite killed before its rename
    lines, bad = read_lines(path)
    kept = [line for line in lines if keep(line)]
    if bad or len(kept) != len(lines):
        rewrite(path, kept)
    return kept, bad


class AnswerFile:
    """Appends one durable line per finished record."""

    def __init__(self, path: Path):
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def write(self, line: dict) -> None:
        data = _encode(line)
        with _sigint_held():
            view = memoryview(data)
            while view:
                view = view[os.write(self._fd, view):]
            os.fsync(self._fd)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> "AnswerFile":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


@contextmanager
def _sigint_held():
    """Block SIGINT for the block: a Ctrl-C arriving meanwhile is raised right after it."""
    if not hasattr(signal, "pthread_sigmask") or threading.current_thread() is not threading.main_thread():
        yield
        return
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})


def merge_lines(groups: Iterable[list[dict]]) -> list[dict]:
    """Each id once, in first-seen order: an answer beats a failure, otherwise the first line wins."""
    merged: dict[str, dict] = {}
    for lines in groups:
        for line in lines:
            key = id_key(line["id"])
            if key not in merged or (is_failure(merged[key]) and not is_failure(line)):
                merged[key] = line
    return list(merged.values())
