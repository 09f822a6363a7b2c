"""The answers file: crash-safe appends, reading back with repair, and merging shard files.

Why it is built this way: a run over a large set may be killed at any moment (OOM killer, a preempted
Slurm job, Ctrl-C) and must lose at most the record in flight. So:

- each answer is one line, written with a single `os.write` on an O_APPEND descriptor, then fsynced
  before the next record starts; Ctrl-C and SIGTERM are held back while a line is written, so an
  interrupt never leaves half a line;
- a kill during the write can still leave a torn last line (a power cut, a short write): on opening
  for append the file is checked, and a tail without its newline, or any line that is not a JSON
  object, is dropped by rewriting the file atomically (temporary file, fsync, rename). Readers that do
  not own a file (resume peeking at a shard, `dycoke merge`) skip such lines without touching it;
- whole-file rewrites (repair, dropping failures for --retry-failed, merging) go through the same
  temporary-file-and-rename, so a file on disk is always either the old or the new version. The
  temporary file is made by `tempfile` (a fresh name, O_EXCL: a planted file or link of a guessable
  name is never followed) and removed when the rewrite fails; one left by a killed process is removed
  by the next writer's repair;
- a write that fails (a full disk, a file size limit, an I/O error) is cut back to the last whole line
  and stops the run with OutputError: the answers already written stay, and a rerun resumes.

Ids are compared through `id_key` (their JSON text), so the id 3 and the id "3" stay different.
"""

from __future__ import annotations

import json
import os
import re
import stat
import tempfile
from pathlib import Path
from typing import Callable, Iterable

from dycoke_cli.errors import OutputError
from dycoke_cli import signals


def id_key(record_id) -> str:
    return json.dumps(record_id, sort_keys=True)


def is_failure(line: dict) -> bool:
    return "error" in line


# A failure line's "failure": "input" when the record cannot run as written (bad JSON, a missing field, a
# missing or unreadable video, a setting out of range): a rerun reads its line again, so fixing the line
# (or the video) is enough; "runtime" when running it failed (out of memory, a crash): --retry-failed
# runs it again. Lines written before the field existed count as runtime failures.
INPUT, RUNTIME = "input", "runtime"


def failure_kind(line: dict) -> str | None:
    return (line.get("failure") or RUNTIME) if is_failure(line) else None


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


_TEMPORARY = re.compile(r"\.(?P<name>.+)\.[A-Za-z0-9_]{8}\.tmp")  # tempfile's names for a rewrite of `name`


def rewrite(path: Path, lines: Iterable[dict]) -> None:
    """Replace `path` by exactly `lines`, atomically; on failure `path` is untouched and no temporary
    file is left."""
    try:
        fd, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise write_failed(path, exc) from None
    try:
        with open(fd, "wb") as f:
            os.fchmod(f.fileno(), _mode_of(path))
            f.write(b"".join(_encode(line) for line in lines))
            f.flush()
            os.fsync(f.fileno())
        os.replace(temporary, path)
    except BaseException as exc:
        Path(temporary).unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise write_failed(path, exc) from None
        raise
    _fsync_folder(path.parent)


def _mode_of(path: Path) -> int:
    """The permissions a rewrite keeps (tempfile makes its files private)."""
    try:
        return stat.S_IMODE(os.stat(path).st_mode)
    except FileNotFoundError:
        return 0o644


def write_failed(path: Path, exc: OSError) -> OutputError:
    return OutputError(f"cannot write {path}: {exc.strerror or exc}; what it held before is kept: rerun the same "
                       "command once the problem is fixed")


def _remove_stale_temporaries(path: Path) -> None:
    """Temporary files of rewrites of `path` that a killed process left (regular files only)."""
    for entry in os.scandir(path.parent):
        match = _TEMPORARY.fullmatch(entry.name)
        if match and match["name"] == path.name and entry.is_file(follow_symlinks=False):
            Path(entry.path).unlink(missing_ok=True)


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
    if path.parent.is_dir():
        _remove_stale_temporaries(path)  # a rewrite killed before its rename
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
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0)
        try:
            self._fd = os.open(path, flags, 0o644)
        except OSError as exc:
            raise write_failed(path, exc) from None

    def write(self, line: dict) -> None:
        """Append one line durably, or raise OutputError with the file cut back to its last whole line."""
        data = _encode(line)
        with signals.held():
            start = os.lseek(self._fd, 0, os.SEEK_END)
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(self._fd, view):]
                os.fsync(self._fd)
            except OSError as exc:
                try:
                    os.ftruncate(self._fd, start)
                except OSError:
                    pass  # the next run's repair drops the torn line
                raise write_failed(self.path, exc) from None

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> "AnswerFile":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def merge_lines(groups: Iterable[list[dict]]) -> list[dict]:
    """Each id once, in first-seen order: an answer beats a failure, otherwise the first line wins."""
    merged: dict[str, dict] = {}
    for lines in groups:
        for line in lines:
            key = id_key(line["id"])
            if key not in merged or (is_failure(merged[key]) and not is_failure(line)):
                merged[key] = line
    return list(merged.values())


_SHARD = re.compile(r"^(?P<stem>.*)\.shard-(?P<index>[0-9]+)-of-(?P<count>[0-9]+)\.jsonl$")


def missing_shards(files: list[Path]) -> str | None:
    """What is missing from the shard sets among `files` (names `<stem>.shard-i-of-N.jsonl`, as `run
    --shard i/N` writes them), as one phrase, or None when every set named is whole."""
    sets: dict[tuple[Path, str, int], set[int]] = {}
    for path in files:
        match = _SHARD.match(Path(path).name)
        if match:
            key = (Path(path).parent, match["stem"], int(match["count"]))
            sets.setdefault(key, set()).add(int(match["index"]))
    for (folder, stem, count), given in sets.items():
        absent = [i for i in range(count) if i not in given]
        if absent:
            names = ", ".join(f"{stem}.shard-{i}-of-{count}.jsonl" for i in absent[:3]) + (
                ", ..." if len(absent) > 3 else "")
            return f"{len(given)} of {count} shards of {folder / stem} given (missing: {names})"
    return None
