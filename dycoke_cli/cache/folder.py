"""The cache folder on disk: its entries with their size and last use, least-recently-used eviction,
and removal for `dycoke cache`. Torch-free, so `dycoke cache` answers at once.

Last use is an entry's modification time: writing sets it and every hit sets it again (`touch`).
Access times are no use for this (relatime and noatime mounts). Several processes may share the
folder: an entry that disappears while it is listed or removed (another process evicted it) is
simply gone, never an error.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

from dycoke_cli.cache.store import SUFFIX, TEMP_SUFFIX, Unusable, read_info

FOLDER = "encodings"
STALE_TEMP_S = 3600.0  # a temporary file this old belongs to a writer that died


def cache_folder() -> Path:
    """$DYCOKE_CACHE/encodings (else ~/.cache/dycoke/encodings)."""
    from dycoke_cli.paths import cache_root

    return cache_root() / FOLDER


def make_private(folder: Path) -> None:
    """Create the folder readable by its owner only (0700); an existing one keeps its mode."""
    if not folder.is_dir():
        folder.parent.mkdir(parents=True, exist_ok=True)
        try:
            folder.mkdir(mode=0o700)
        except FileExistsError:  # another process made it first
            return
        os.chmod(folder, 0o700)  # whatever the umask


@dataclass
class Entry:
    """One entry: `info` is its JSON part (None, with `problem` saying why, when unreadable)."""

    path: Path
    bytes: int
    last_used: float  # seconds since the epoch
    info: dict | None = None
    problem: str | None = None

    @property
    def key(self) -> str:
        return self.path.name[: -len(SUFFIX)]


def entries(folder: Path, read: bool = False) -> list[Entry]:
    """Every entry, most recently used first; with `read`, each one's JSON part too."""
    found = []
    try:
        names = os.listdir(folder)
    except (FileNotFoundError, NotADirectoryError):
        return []
    for name in names:
        if not name.endswith(SUFFIX) or name.startswith("."):
            continue
        path = folder / name
        try:
            status = path.stat()
        except FileNotFoundError:
            continue
        entry = Entry(path=path, bytes=status.st_size, last_used=status.st_mtime)
        if read:
            try:
                entry.info = read_info(path)
            except (Unusable, OSError) as exc:
                entry.problem = str(exc) if isinstance(exc, Unusable) else (exc.strerror or type(exc).__name__)
        found.append(entry)
    return sorted(found, key=lambda e: e.last_used, reverse=True)


def touch(path: Path) -> None:
    """Mark an entry used now; a read-only folder simply keeps the old time."""
    try:
        os.utime(path)
    except OSError:
        pass


def remove(chosen: list[Entry]) -> tuple[int, int, list[str]]:
    """Delete these entries (an empty directory standing in an entry's place too); returns the count and
    bytes removed, and one line per entry that could not be (gone already is not a failure)."""
    count, size, failed = 0, 0, []
    for entry in chosen:
        try:
            if entry.path.is_dir():
                entry.path.rmdir()
            else:
                entry.path.unlink()
        except FileNotFoundError:
            continue
        except OSError as exc:
            failed.append(f"{entry.path}: {exc.strerror or type(exc).__name__}")
            continue
        count, size = count + 1, size + entry.bytes
    return count, size, failed


def sweep(folder: Path, now: float | None = None) -> None:
    """Remove temporary files left by writers that died (older than STALE_TEMP_S)."""
    now = time.time() if now is None else now
    try:
        names = os.listdir(folder)
    except OSError:
        return
    for name in names:
        if name.startswith(".") and name.endswith(TEMP_SUFFIX):
            path = folder / name
            try:
                if now - path.stat().st_mtime > STALE_TEMP_S:
                    path.unlink()
            except OSError:
                continue


def evict(folder: Path, max_bytes: int, keep: Path | None = None) -> list[Entry]:
    """Remove the least recently used entries until the folder holds at most `max_bytes` (`keep`, the
    entry just written, stays); returns what was removed."""
    sweep(folder)
    listed = entries(folder)
    total = sum(e.bytes for e in listed)
    removed = []
    for entry in reversed(listed):  # oldest first
        if total <= max_bytes:
            break
        if entry.path == keep:
            continue
        if remove([entry])[0]:
            removed.append(entry)
        total -= entry.bytes
    return removed
